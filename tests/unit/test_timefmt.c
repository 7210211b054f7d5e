/*
 * test_timefmt.c - calendar arithmetic, YYYY-MM-DD dates and RFC 3339 times (src/timefmt.h). The writer
 * and time_year over the whole int64 range: INT64_MIN was negated (signed overflow, UBSan; a damaged stored
 * time; found with fuzz/fuzz_files.c).
 */
#include "unit.h"

static bool parse_date(const char *s, int *y, int *m, int *d) { return date_parse(s, strlen(s), y, m, d); }

static bool parse_time(const char *s, int64_t *us) { return time_parse_rfc3339(s, strlen(s), us); }

static void test_leap_years(void **state)
{
    (void)state;
    assert_true(date_is_real(2000, 2, 29));  /* divisible by 400 */
    assert_false(date_is_real(1900, 2, 29)); /* divisible by 100 */
    assert_false(date_is_real(2100, 2, 29));
    assert_true(date_is_real(2400, 2, 29));
    assert_true(date_is_real(2024, 2, 29));
    assert_false(date_is_real(2023, 2, 29));
    assert_true(date_is_real(2023, 2, 28));
    assert_false(date_is_real(2024, 2, 30));
    int y, m, d;
    assert_true(parse_date("2024-02-29", &y, &m, &d));
    assert_int_equal(y, 2024);
    assert_int_equal(m, 2);
    assert_int_equal(d, 29);
    assert_true(parse_date("2000-02-29", &y, &m, &d));
    assert_false(parse_date("1900-02-29", &y, &m, &d));
    assert_false(parse_date("2023-02-29", &y, &m, &d));
}

static void test_month_lengths(void **state)
{
    (void)state;
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int m = 1; m <= 12; m++) {
        assert_true(date_is_real(2023, m, days[m - 1]));
        assert_false(date_is_real(2023, m, days[m - 1] + 1));
        assert_false(date_is_real(2023, m, 0));
    }
    assert_false(date_is_real(2023, 0, 1));
    assert_false(date_is_real(2023, 13, 1));
    assert_false(date_is_real(0, 1, 1));
    assert_true(date_is_real(1, 1, 1));
    assert_true(date_is_real(9999, 12, 31));
    assert_false(date_is_real(10000, 1, 1));
}

static void test_date_parse_rejections(void **state)
{
    (void)state;
    const char *bad[] = {
        "",           "2024-2-29",  "2024-02-3",   "2024/02/03", "24-02-2024", "2024-02-03 ", " 2024-02-03",
        "2024-02-30", "2024-13-01", "2024-00-10",  "2024-01-00", "0000-01-01", "abcd-ef-gh",  "2024-0a-01",
        "+024-01-01", "-024-01-01", "2024-01-01T", "20240101",   "2024-01-1a", "2024--1-01",  "2024-01-32",
        "2024-04-31", "1999-11-31", "2024 01 01"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int y = -7, m = -7, d = -7;
        if (parse_date(bad[i], &y, &m, &d)) fail_msg("accepted \"%s\"", bad[i]);
    }
    /* a valid date followed by more bytes is not "exactly YYYY-MM-DD" */
    int y, m, d;
    assert_false(date_parse("2024-01-015", 11, &y, &m, &d));
    assert_true(date_parse("2024-01-015", 10, &y, &m, &d)); /* the length decides */
    assert_true(parse_date("0001-01-01", &y, &m, &d));
    assert_true(parse_date("9999-12-31", &y, &m, &d));
    assert_int_equal(y, 9999);
}

static void test_days_from_civil(void **state)
{
    (void)state;
    assert_int_equal(days_from_civil(1970, 1, 1), 0);
    assert_int_equal(days_from_civil(1970, 1, 2), 1);
    assert_true(days_from_civil(1969, 12, 31) == -1);
    assert_int_equal(days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(days_from_civil(2026, 11, 22), 20779);
    assert_true(days_from_civil(1, 1, 1) == -719162);
    /* civil_from_days inverts it over a wide range, and consecutive days are consecutive dates */
    int64_t prev_y = 0;
    unsigned prev_m = 0, prev_d = 0;
    for (int64_t z = -719162; z <= 2932896; z += 1) {
        int64_t y;
        unsigned m, d;
        civil_from_days(z, &y, &m, &d);
        if (!date_is_real((int)y, (int)m, (int)d))
            fail_msg("day %lld -> %lld-%u-%u not a date", (long long)z, (long long)y, m, d);
        if (days_from_civil(y, m, d) != z) fail_msg("day %lld does not round trip", (long long)z);
        if (z > -719162) {
            bool next = (y == prev_y && m == prev_m && d == prev_d + 1) || (y == prev_y && m == prev_m + 1 && d == 1) ||
                        (y == prev_y + 1 && m == 1 && d == 1 && prev_m == 12 && prev_d == 31);
            if (!next) fail_msg("day %lld is not the day after the previous one", (long long)z);
        }
        prev_y = y, prev_m = m, prev_d = d;
    }
}

static void test_rfc3339_basic(void **state)
{
    (void)state;
    int64_t us = -1;
    assert_true(parse_time("1970-01-01T00:00:00Z", &us));
    assert_true(us == 0);
    assert_true(parse_time("2026-11-22T15:31:54Z", &us));
    assert_true(us == unit_time(2026, 11, 22, 15, 31, 54));
    /* lowercase t and z */
    int64_t lower;
    assert_true(parse_time("2026-11-22t15:31:54z", &lower));
    assert_true(lower == us);
    /* fractions */
    assert_true(parse_time("2026-11-22T15:31:54.123456Z", &us));
    assert_true(us == unit_time(2026, 11, 22, 15, 31, 54) + 123456);
    assert_true(parse_time("2026-11-22T15:31:54.1Z", &us));
    assert_true(us == unit_time(2026, 11, 22, 15, 31, 54) + 100000);
    assert_true(parse_time("2026-11-22T15:31:54.000001Z", &us));
    assert_true(us == unit_time(2026, 11, 22, 15, 31, 54) + 1);
    assert_true(parse_time("2026-11-22T15:31:54.123456789Z", &us)); /* beyond microseconds: truncated */
    assert_true(us == unit_time(2026, 11, 22, 15, 31, 54) + 123456);
    assert_true(parse_time("2026-11-22T15:31:54.9999999Z", &us));
    assert_true(us == unit_time(2026, 11, 22, 15, 31, 54) + 999999);
    /* leap second folds into :59 */
    assert_true(parse_time("2016-12-31T23:59:60Z", &us));
    assert_true(us == unit_time(2016, 12, 31, 23, 59, 59));
}

static void test_rfc3339_offsets(void **state)
{
    (void)state;
    int64_t us;
    int64_t base = unit_time(2026, 11, 22, 15, 31, 54);
    assert_true(parse_time("2026-11-22T15:31:54+00:00", &us));
    assert_true(us == base);
    assert_true(parse_time("2026-11-22T15:31:54-00:00", &us));
    assert_true(us == base);
    assert_true(parse_time("2026-11-22T16:31:54+01:00", &us)); /* 16:31 at +01:00 is 15:31 UTC */
    assert_true(us == base);
    assert_true(parse_time("2026-11-22T10:01:54-05:30", &us)); /* 10:01 at -05:30 is 15:31 UTC */
    assert_true(us == base);
    assert_true(parse_time("2026-11-23T05:31:54.5+14:00", &us)); /* across midnight */
    assert_true(us == base + 500000);
    assert_true(parse_time("2026-01-01T00:30:00+01:00", &us)); /* across a year boundary */
    assert_true(us == unit_time(2025, 12, 31, 23, 30, 0));
    assert_int_equal(time_year(us), 2025);
}

static void test_rfc3339_rejections(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "2026-11-22",
        "2026-11-22T15:31:54", /* no zone */
        "2026-11-22T15:31Z",   /* no seconds */
        "2026-11-22T24:00:00Z",
        "2026-11-22T15:60:00Z",
        "2026-11-22T15:31:61Z",
        "2026-11-22T15:31:54.Z",
        "2026-11-22T15:31:54,5Z",
        "2026-11-22T15:31:54+1:00",
        "2026-11-22T15:31:54+01:60",
        "2026-11-22T15:31:54+24:00",
        "2026-11-22T15:31:54+0100",
        "2026-11-22T15:31:54+01",
        "2026-11-22T15:31:54+01:00Z",
        "2026-11-22T15:31:54ZZ",
        "2026-11-22T15:31:54Z ",
        " 2026-11-22T15:31:54Z",
        "2026-11-22X15:31:54Z",
        "2026-11-22T15-31-54Z",
        "2026-02-30T15:31:54Z",
        "2026-13-22T15:31:54Z",
        "0000-01-01T00:00:00Z",
        "2026-11-22T1a:31:54Z",
        "2026-11-22T15:31:54UTC",
        "2026-11-22T15:31:54.12a4Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us;
        if (parse_time(bad[i], &us)) fail_msg("accepted \"%s\"", bad[i]);
    }
    /* length decides: a valid prefix of a longer text is not accepted */
    int64_t us;
    assert_false(time_parse_rfc3339("2026-11-22T15:31:54Zjunk", 24, &us));
    assert_true(time_parse_rfc3339("2026-11-22T15:31:54Zjunk", 20, &us));
}

static void test_format(void **state)
{
    (void)state;
    char out[40];
    time_format_rfc3339(0, out, sizeof out);
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");
    time_format_rfc3339(unit_time(2026, 11, 22, 15, 31, 54) + 123456, out, sizeof out);
    assert_string_equal(out, "2026-11-22T15:31:54.123456Z");
    assert_int_equal(strlen(out), 27);
    time_format_rfc3339(unit_time(2024, 2, 29, 23, 59, 59) + 999999, out, sizeof out);
    assert_string_equal(out, "2024-02-29T23:59:59.999999Z");
    time_format_rfc3339(unit_time(9999, 12, 31, 23, 59, 59), out, sizeof out);
    assert_string_equal(out, "9999-12-31T23:59:59.000000Z");
    /* a small buffer is truncated, never overrun */
    char small[11];
    time_format_rfc3339(0, small, sizeof small);
    assert_string_equal(small, "1970-01-01");
}

/* The extremes of int64: no negation of INT64_MIN (it has none), the same floor division as elsewhere. */
static void test_extreme_times(void **state)
{
    (void)state;
    char out[48];
    time_format_rfc3339(INT64_MAX, out, sizeof out);
    assert_string_equal(out, "294247-01-10T04:00:54.775807Z");
    assert_int_equal(time_year(INT64_MAX), 294247);
    time_format_rfc3339(INT64_MIN, out, sizeof out);
    assert_string_equal(out, "-290308-12-21T19:59:05.224192Z");
    assert_int_equal(time_year(INT64_MIN), -290308);
    time_format_rfc3339(INT64_MIN + 999999, out, sizeof out);
    assert_string_equal(out, "-290308-12-21T19:59:06.224191Z");
}

static void test_negative_times(void **state)
{
    (void)state;
    char out[40];
    time_format_rfc3339(-1, out, sizeof out);
    assert_string_equal(out, "1969-12-31T23:59:59.999999Z");
    time_format_rfc3339(-1000000, out, sizeof out);
    assert_string_equal(out, "1969-12-31T23:59:59.000000Z");
    time_format_rfc3339(-1000001, out, sizeof out);
    assert_string_equal(out, "1969-12-31T23:59:58.999999Z");
    time_format_rfc3339(-86400LL * 1000000, out, sizeof out);
    assert_string_equal(out, "1969-12-31T00:00:00.000000Z");
    time_format_rfc3339(-86400LL * 1000000 - 1, out, sizeof out);
    assert_string_equal(out, "1969-12-30T23:59:59.999999Z");
    time_format_rfc3339(unit_time(1, 1, 1, 0, 0, 0), out, sizeof out);
    assert_string_equal(out, "0001-01-01T00:00:00.000000Z");
    int64_t us;
    assert_true(parse_time("1969-12-31T23:59:59.5Z", &us));
    assert_true(us == -500000);
    assert_true(parse_time("1850-03-01T12:00:00Z", &us));
    assert_true(us == unit_time(1850, 3, 1, 12, 0, 0));
    assert_true(us < 0);
    assert_int_equal(time_year(-1), 1969);
    assert_int_equal(time_year(0), 1970);
    assert_int_equal(time_year(us), 1850);
    assert_int_equal(time_year(unit_time(1, 1, 1, 0, 0, 0)), 1);
    assert_int_equal(time_year(unit_time(2024, 12, 31, 23, 59, 59) + 999999), 2024);
    assert_int_equal(time_year(unit_time(2025, 1, 1, 0, 0, 0)), 2025);
    assert_int_equal(time_year(unit_time(1969, 1, 1, 0, 0, 0)), 1969);
    assert_int_equal(time_year(unit_time(1969, 1, 1, 0, 0, 0) - 1), 1968);
}

/* format then parse gives the same instant, for random instants from year 1 to 9999 */
static void test_round_trip(void **state)
{
    (void)state;
    unit_rng rng = {2026};
    int64_t lo = unit_time(1, 1, 1, 0, 0, 0), hi = unit_time(9999, 12, 31, 23, 59, 59) + 999999;
    uint64_t span = (uint64_t)(hi - lo);
    for (int i = 0; i < 20000; i++) {
        int64_t us = lo + (int64_t)(unit_rand(&rng) % span);
        if (i < 8) us = (int64_t[]){lo, hi, -1, 0, 1, -86400000000LL, 951782400000000LL, 4102444800000000LL}[i];
        char out[40];
        time_format_rfc3339(us, out, sizeof out);
        int64_t back;
        if (!parse_time(out, &back)) fail_msg("cannot parse own output %s", out);
        if (back != us) fail_msg("%s: %lld != %lld", out, (long long)back, (long long)us);
        char year[5];
        memcpy(year, out, 4);
        year[4] = 0;
        if (time_year(us) != atoi(year))
            fail_msg("time_year(%lld) = %d, text says %s", (long long)us, time_year(us), out);
    }
}

/* Date formats (a schema's dob_format): the directives, greedy 1-2 digit months and days, exact literals. */
static void test_date_formats(void **state)
{
    (void)state;
    const char *ok[][3] = {
        {"%m/%d/%Y", "01/31/1990", "1990-01-31"}, {"%m/%d/%Y", "1/5/1990", "1990-01-05"},
        {"%d.%m.%Y", "29.02.2000", "2000-02-29"}, {"%Y-%m-%d", "0001-01-01", "0001-01-01"},
        {"%d %b %Y", "5 mAr 2001", "2001-03-05"}, {"%b %d, %Y", "Dec 31, 1999", "1999-12-31"},
        {"%Y%m%d", "19900105", "1990-01-05"},     {"%%%Y", "%2001", NULL},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        if (!ok[i][2]) {
            assert_non_null(date_format_check(ok[i][0])); /* no month nor day */
            continue;
        }
        assert_null(date_format_check(ok[i][0]));
        int y, m, d;
        const char *why = date_parse_format(ok[i][0], ok[i][1], strlen(ok[i][1]), &y, &m, &d);
        if (why) fail_msg("%s with %s: %s", ok[i][1], ok[i][0], why);
        char got[16];
        snprintf(got, sizeof got, "%04d-%02d-%02d", y, m, d);
        assert_string_equal(got, ok[i][2]);
    }
    const char *bad[][3] = {
        {"%m/%d/%Y", "01/31/90", "does not match"},    {"%m/%d/%Y", "01/31/1990 ", "does not match"},
        {"%m/%d/%Y", " 01/31/1990", "does not match"}, {"%m/%d/%Y", "001/31/1990", "does not match"},
        {"%m/%d/%Y", "01-31-1990", "does not match"},  {"%m/%d/%Y", "02/30/1990", "not a real date"},
        {"%m/%d/%Y", "13/01/1990", "not a real date"}, {"%m/%d/%Y", "00/10/1990", "not a real date"},
        {"%d.%m.%Y", "29.02.1900", "not a real date"}, {"%d %b %Y", "5 Mrz 2001", "does not match"},
        {"%Y-%m-%d", "0000-01-01", "not a real date"}, {"%m/%d/%Y", "", "does not match"},
        {"%m/%d/%Y", "1/2/", "does not match"},        {"%Y%m%d", "199001", "does not match"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int y, m, d;
        const char *why = date_parse_format(bad[i][0], bad[i][1], strlen(bad[i][1]), &y, &m, &d);
        if (!why || !strstr(why, bad[i][2]))
            fail_msg("\"%s\" with %s: %s (wanted %s)", bad[i][1], bad[i][0], why ? why : "accepted", bad[i][2]);
    }
    /* the length decides: a valid date followed by more bytes is no match */
    int y, m, d;
    assert_null(date_parse_format("%Y-%m-%d", "1990-01-0512", 10, &y, &m, &d));
    assert_non_null(date_parse_format("%Y-%m-%d", "1990-01-0512", 12, &y, &m, &d));
    const char *refused[] = {"%m/%d/%y", "%m/%d", "%Y-%m-%d %H", "%Y-%m-%d%", "%Y%Y%m%d", "%b%m%d%Y", ""};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (!date_format_check(refused[i])) fail_msg("format accepted: %s", refused[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leap_years),
        cmocka_unit_test(test_month_lengths),
        cmocka_unit_test(test_date_parse_rejections),
        cmocka_unit_test(test_days_from_civil),
        cmocka_unit_test(test_rfc3339_basic),
        cmocka_unit_test(test_rfc3339_offsets),
        cmocka_unit_test(test_rfc3339_rejections),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_negative_times),
        cmocka_unit_test(test_extreme_times),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_date_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

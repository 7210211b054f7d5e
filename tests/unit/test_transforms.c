/*
 * test_transforms.c - the public transforms (src/pipeline/transforms.h) against hand-checked cases,
 * their schema syntax and refusals (schema.c), the nested/array projection (deidentify.c), and the
 * composed identity (identity.c).
 *
 * Every expected value here was worked out by hand (dates on a calendar, the HMAC with `openssl dgst
 * -sha256 -mac HMAC`), not computed by the code under test. The property test over random records is
 * test_public_property.c.
 */
#include "unit.h"

#include "pipeline/deidentify.h"
#include "pipeline/identity.h"
#include "pipeline/transforms.h"

/* ---- zip3 ---- */

static void expect_zip3(const char *in, const char *want)
{
    char out[4];
    bool ok = tf_zip3(in, strlen(in), out);
    if (!want) {
        if (ok) fail_msg("zip3(\"%s\") = \"%s\", expected it left out", in, out);
        return;
    }
    if (!ok) fail_msg("zip3(\"%s\") left out, expected \"%s\"", in, want);
    assert_string_equal(out, want);
}

static void test_zip3(void **state)
{
    (void)state;
    expect_zip3("02139", "021");
    expect_zip3("02139-4307", "021");
    expect_zip3("021394307", "021");
    expect_zip3("10001", "100");
    /* the restricted areas of the 2000 Census: 000 */
    expect_zip3("03601", "000");
    expect_zip3("05901", "000");
    expect_zip3("06390", "000");
    expect_zip3("10200", "000");
    expect_zip3("89301", "000");
    expect_zip3("89012-1234", "000");
    /* neighbours of restricted areas are not restricted */
    expect_zip3("03501", "035");
    expect_zip3("03701", "037");
    expect_zip3("89401", "894");
    /* not a ZIP: left out */
    expect_zip3("0213", NULL);
    expect_zip3("2139", NULL);
    expect_zip3("", NULL);
    expect_zip3("02l39", NULL);
    expect_zip3("021390", NULL);
    expect_zip3("02139-43", NULL);
    expect_zip3("02139 4307", NULL);
    expect_zip3("abcde", NULL);
}

/* The compiled table is exactly data/zip3_restricted.txt (the data file is the truth). */
static void test_zip3_table_is_the_data_file(void **state)
{
    (void)state;
    FILE *f = fopen("data/zip3_restricted.txt", "r");
    if (!f) fail_msg("data/zip3_restricted.txt: %s (run from the repository root)", strerror(errno));
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\r\n")] = 0;
        const char *at = tf_zip3_restricted_at(n);
        if (!at) fail_msg("the data file has more entries than the table (%s)", line);
        assert_string_equal(at, line);
        assert_true(tf_zip3_restricted(line));
        n++;
    }
    fclose(f);
    assert_int_equal(n, tf_zip3_restricted_count());
    assert_int_equal(n, 17); /* HHS guidance: 17 three-digit areas of 20,000 or fewer people */
    assert_false(tf_zip3_restricted("021"));
    assert_false(tf_zip3_restricted("000"));
}

/* ---- age, age_band ---- */

static void expect_age(const char *dob, int64_t event, const char *want)
{
    char out[8];
    bool ok = tf_age(dob, strlen(dob), event, out);
    if (!want) {
        if (ok) fail_msg("age(%s) = %s, expected it left out", dob, out);
        return;
    }
    if (!ok) fail_msg("age(%s) left out, expected %s", dob, want);
    assert_string_equal(out, want);
}

static void test_age(void **state)
{
    (void)state;
    /* the 89/90 boundary: the day before, of and after the 90th birthday */
    expect_age("1936-06-15", unit_time(2026, 6, 14, 23, 59, 59), "89");
    expect_age("1936-06-15", unit_time(2026, 6, 15, 0, 0, 0), "90+");
    expect_age("1936-06-15", unit_time(2026, 6, 16, 12, 0, 0), "90+");
    expect_age("1900-01-01", unit_time(2026, 6, 16, 12, 0, 0), "90+");
    /* whole years */
    expect_age("1980-03-10", unit_time(2026, 3, 9, 12, 0, 0), "45");
    expect_age("1980-03-10", unit_time(2026, 3, 10, 0, 0, 0), "46");
    expect_age("2026-06-15", unit_time(2026, 6, 15, 8, 0, 0), "0");
    /* a 29 February birthday is reached on 1 March in a common year */
    expect_age("2000-02-29", unit_time(2025, 2, 28, 12, 0, 0), "24");
    expect_age("2000-02-29", unit_time(2025, 3, 1, 0, 0, 0), "25");
    expect_age("2000-02-29", unit_time(2024, 2, 29, 0, 0, 0), "24");
    /* an RFC 3339 birth time counts by its written date */
    expect_age("1980-03-10T23:00:00-05:00", unit_time(2026, 3, 10, 1, 0, 0), "46");
    /* not a date, born after the event, no event time: left out */
    expect_age("1980-13-10", unit_time(2026, 3, 10, 0, 0, 0), NULL);
    expect_age("yesterday", unit_time(2026, 3, 10, 0, 0, 0), NULL);
    expect_age("2026-03-11", unit_time(2026, 3, 10, 0, 0, 0), NULL);
    expect_age("1980-03-10", INT64_MIN, NULL);
    assert_int_equal(tf_age_years(1936, 6, 15, unit_time(2026, 6, 14, 0, 0, 0)), 89);
}

static void expect_band(const char *dob, int64_t event, int width, const char *want)
{
    char out[16];
    bool ok = tf_age_band(dob, strlen(dob), event, width, out);
    if (!want) {
        if (ok) fail_msg("age_band(%s, %d) = %s, expected it left out", dob, width, out);
        return;
    }
    if (!ok) fail_msg("age_band(%s, %d) left out, expected %s", dob, width, want);
    assert_string_equal(out, want);
}

static void test_age_band(void **state)
{
    (void)state;
    int64_t ev = unit_time(2026, 6, 15, 12, 0, 0);
    expect_band("1986-06-15", ev, 10, "40-49"); /* 40 */
    expect_band("1976-06-16", ev, 10, "40-49"); /* 49 */
    expect_band("1976-06-15", ev, 10, "50-59"); /* 50 */
    expect_band("2020-01-01", ev, 10, "0-9");   /* 6 */
    expect_band("1936-06-16", ev, 10, "80-89"); /* 89 */
    expect_band("1936-06-15", ev, 10, "90+");   /* 90 */
    expect_band("1920-01-01", ev, 10, "90+");   /* 106 */
    expect_band("1982-06-15", ev, 5, "40-44");  /* 44 */
    expect_band("1981-06-15", ev, 5, "45-49");  /* 45 */
    expect_band("1936-06-16", ev, 5, "85-89");  /* 89 */
    expect_band("1942-06-15", ev, 7, "84-89");  /* 84: the band 84-90 stops at 89 */
    expect_band("1936-06-16", ev, 7, "84-89");  /* 89 */
    expect_band("1936-06-15", ev, 7, "90+");    /* 90 */
    expect_band("1979-06-15", ev, 1, "47");     /* a width of one year: the age */
    expect_band("1979-06-15", ev, 90, "0-89");  /* one band below 90 */
    expect_band("1979-06-15", ev, 0, NULL);     /* no such width */
    expect_band("1979-06-15", ev, 91, NULL);
    expect_band("2027-01-01", ev, 10, NULL); /* born after the event */
}

/* ---- year ---- */

static void test_year(void **state)
{
    (void)state;
    char y[5];
    assert_true(tf_year("2026-11-22", 10, y));
    assert_string_equal(y, "2026");
    assert_true(tf_year("2026-01-01T00:30:00+01:00", 25, y)); /* the UTC year, as before issue 15 */
    assert_string_equal(y, "2025");
    assert_false(tf_year("2026", 4, y));
    assert_false(tf_year("2026-02-30", 10, y));
}

/* ---- date_shift ---- */

static void expect_shift(const char *in, int days, const char *want)
{
    buf out = {0};
    bool ok = tf_date_shift(in, strlen(in), days, &out);
    if (!want) {
        if (ok) fail_msg("date_shift(%s, %d) = %s, expected it left out", in, days, out.data);
        buf_free(&out);
        return;
    }
    if (!ok) fail_msg("date_shift(%s, %d) left out, expected %s", in, days, want);
    assert_span_equal(out.data, out.len, want);
    buf_free(&out);
}

static void test_date_shift_leap_days(void **state)
{
    (void)state;
    expect_shift("2024-02-28", 1, "2024-02-29");
    expect_shift("2024-02-29", 1, "2024-03-01");
    expect_shift("2024-03-01", -1, "2024-02-29");
    expect_shift("2024-02-29", -1, "2024-02-28");
    expect_shift("2023-02-28", 1, "2023-03-01"); /* a common year has no 29th */
    expect_shift("2024-02-29", 365, "2025-02-28");
    expect_shift("2024-02-29", -366, "2023-02-28");
    expect_shift("2023-12-31", 1, "2024-01-01");
    /* RFC 3339 times: the date moves, the time of day, fraction and offset stay as written */
    expect_shift("2024-02-28T23:30:00.5+05:30", 1, "2024-02-29T23:30:00.5+05:30");
    expect_shift("2024-03-01T00:00:00Z", -1, "2024-02-29T00:00:00Z");
    expect_shift("2024-02-29t08:15:00z", 2, "2024-03-02t08:15:00z");
    expect_shift("2024-02-30", 1, NULL);
    expect_shift("2024-02-28T25:00:00Z", 1, NULL);
    expect_shift("28.02.2024", 1, NULL);
}

static int64_t day_of(const char *s)
{
    int y, m, d;
    if (!tf_date_of(s, strlen(s), &y, &m, &d)) fail_msg("not a date: %s", s);
    return days_from_civil(y, (unsigned)m, (unsigned)d);
}

/* One patient's dates keep their intervals; offsets stay in range and are never 0; patients differ. */
static void test_date_shift_per_patient(void **state)
{
    (void)state;
    const char *dates[] = {"2024-02-28", "2024-02-29", "2024-03-01", "2019-07-04T10:00:00Z", "1999-12-31"};
    int offsets[200];
    int distinct = 0;
    for (int p = 0; p < 200; p++) {
        char ikey[64];
        int n = snprintf(ikey, sizeof ikey, "patient %d", p);
        ikey[n] = 0; /* an identity key: name NUL date */
        memcpy(ikey + n + 1, "1970-01-01", 10);
        tf_keys k, again;
        tf_patient_keys(unit_deid_key(), ikey, (size_t)n + 11, &k);
        tf_patient_keys(unit_deid_key(), ikey, (size_t)n + 11, &again);
        assert_true(k.have_patient);
        assert_int_equal(k.shift_seed, again.shift_seed); /* stable */
        int days = tf_shift_days(k.shift_seed, 365);
        assert_true((days >= -365 && days <= -1) || (days >= 1 && days <= 365));
        int64_t shifted[5];
        for (int i = 0; i < 5; i++) {
            buf out = {0};
            assert_true(tf_date_shift(dates[i], strlen(dates[i]), days, &out));
            shifted[i] = day_of(out.data);
            assert_int_equal(shifted[i] - day_of(dates[i]), days);
            buf_free(&out);
        }
        for (int i = 1; i < 5; i++) /* intervals survive */
            assert_int_equal(shifted[i] - shifted[0], day_of(dates[i]) - day_of(dates[0]));
        bool seen = false;
        for (int q = 0; q < p && !seen; q++)
            seen = offsets[q] == days;
        distinct += !seen;
        offsets[p] = days;
    }
    /* 200 draws from 730 offsets: about 154 distinct expected; far fewer means the offset ignores the patient */
    if (distinct < 120) fail_msg("only %d distinct offsets among 200 patients", distinct);
    /* the range's edges: seeds map onto [-max, -1] and [1, max] */
    assert_int_equal(tf_shift_days(0, 365), -1);
    assert_int_equal(tf_shift_days(364, 365), -365);
    assert_int_equal(tf_shift_days(365, 365), 1);
    assert_int_equal(tf_shift_days(729, 365), 365);
    assert_int_equal(tf_shift_days(730, 365), -1);
    assert_int_equal(tf_shift_days(UINT64_MAX, 1) * tf_shift_days(UINT64_MAX, 1), 1);
}

/* ---- pseudonym and the key derivation ---- */

static void test_pseudonym(void **state)
{
    (void)state;
    char a[TF_PSEUDONYM_HEX + 1], b[TF_PSEUDONYM_HEX + 1];
    /* known answer: printf Lovelace | openssl dgst -sha256 -mac HMAC -macopt hexkey:0102...1f20 */
    tf_pseudonym(unit_id_key(), "Lovelace", 8, a);
    assert_string_equal(a, "31ead0b908f8f8eabeff");
    tf_pseudonym(unit_id_key(), "Lovelace", 8, b);
    assert_string_equal(a, b); /* stable */
    tf_pseudonym(unit_deid_key(), "Lovelace", 8, b);
    assert_string_not_equal(a, b); /* keyed */
    tf_pseudonym(unit_id_key(), "Lovelacf", 8, b);
    assert_string_not_equal(a, b);
    assert_int_equal(strlen(a), TF_PSEUDONYM_HEX);

    tf_keys k1, k2, none;
    tf_patient_keys(unit_deid_key(),
                    "ada\0"
                    "1915-12-10",
                    14, &k1);
    tf_patient_keys(unit_deid_key(),
                    "ada\0"
                    "1915-12-11",
                    14, &k2);
    tf_patient_keys(unit_deid_key(), NULL, 0, &none);
    assert_false(none.have_patient);
    assert_memory_equal(k1.store_pseudonym, none.store_pseudonym, 32); /* one store key for everybody */
    assert_memory_not_equal(k1.patient_pseudonym, k2.patient_pseudonym, 32);
    assert_true(k1.shift_seed != k2.shift_seed);
    assert_memory_not_equal(k1.patient_pseudonym, k1.store_pseudonym, 32);
}

/* ---- the schema syntax and its refusals ---- */

static void expect_refused(const char *text, const char *needle)
{
    schema s;
    ms_err e = {0};
    if (schema_parse(&s, text, strlen(text), &e) == MS_OK) {
        schema_free(&s);
        fail_msg("accepted: %s", text);
    }
    if (!strstr(e.msg, needle)) fail_msg("message \"%s\" lacks \"%s\" (schema %s)", e.msg, needle, text);
}

static void parse_ok(schema *s, const char *text)
{
    ms_err e = {0};
    if (schema_parse(s, text, strlen(text), &e) != MS_OK) fail_msg("refused: %s (%s)", e.msg, text);
}

static void test_schema_transforms(void **state)
{
    (void)state;
    schema s;
    parse_ok(&s, "{\"identity\":{\"name\":[\"given\",\"family\"],\"dob\":\"dob\"},\"public\":{"
                 "\"zip\":\"zip3\",\"dob\":{\"transform\":\"age_band\",\"width\":5},\"admitted\":{\"transform\":"
                 "\"date_shift\",\"max_days\":30},\"family\":\"pseudonym\",\"given\":{\"transform\":\"pseudonym\","
                 "\"scope\":\"patient\"},\"address.city\":\"copy\",\"codes[]\":\"copy\",\"labs[].code\":\"copy\","
                 "\"notes\":\"drop\",\"ts\":\"age\"}}");
    assert_int_equal(s.nname_parts, 2);
    assert_string_equal(s.name_parts[0], "given");
    assert_string_equal(s.name_parts[1], "family");
    assert_int_equal(s.npub, 10);
    assert_int_equal(s.pub[0].transform, PUBLISH_ZIP3);
    assert_int_equal(s.pub[1].transform, PUBLISH_AGE_BAND);
    assert_int_equal(s.pub[1].width, 5);
    assert_int_equal(s.pub[2].transform, PUBLISH_DATE_SHIFT);
    assert_int_equal(s.pub[2].max_days, 30);
    assert_false(s.pub[3].patient_scope);
    assert_true(s.pub[4].patient_scope);
    assert_int_equal(s.pub[5].nseg, 2);
    assert_string_equal(s.pub[5].seg[0].name, "address");
    assert_string_equal(s.pub[5].seg[1].name, "city");
    assert_true(s.pub[6].seg[0].each);
    assert_string_equal(s.pub[6].seg[0].name, "codes");
    assert_true(s.pub[7].seg[0].each && !s.pub[7].seg[1].each);
    assert_int_equal(s.pub[8].transform, PUBLISH_DROP);
    /* lookups: drop entries are not public; filters name paths without [] */
    assert_null(schema_public(&s, "notes", 5));
    assert_false(schema_public_top(&s, "notes", 5));
    assert_true(schema_public_top(&s, "address", 7));
    assert_ptr_equal(schema_public_filter(&s, "codes", 5), &s.pub[6]);
    assert_ptr_equal(schema_public_filter(&s, "labs.code", 9), &s.pub[7]);
    assert_ptr_equal(schema_public_filter(&s, "address.city", 12), &s.pub[5]);
    assert_null(schema_public_filter(&s, "address", 7));
    assert_null(schema_public_filter(&s, "codes[]", 7));
    assert_null(schema_public_filter(&s, "address.cit", 11));
    assert_true(schema_is_identity_field(&s, "given", 5));
    assert_true(schema_is_identity_field(&s, "dob", 3));
    assert_false(schema_is_identity_field(&s, "name", 4));
    assert_true(schema_public_time_dependent(&s));
    schema_free(&s);
    /* the default widths and ranges */
    parse_ok(&s, "{\"public\":{\"dob\":\"age_band\",\"seen\":\"date_shift\"}}");
    assert_int_equal(s.pub[0].width, 10);
    assert_int_equal(s.pub[1].max_days, 365);
    schema_free(&s);
    /* a drop inside a copy is the one overlap allowed */
    parse_ok(&s, "{\"public\":{\"address\":\"copy\",\"address.street\":\"drop\",\"labs\":\"copy\","
                 "\"labs[].note\":\"drop\"}}");
    schema_free(&s);
}

static void test_schema_refusals(void **state)
{
    (void)state;
    /* an unknown transform, named with its field */
    expect_refused("{\"public\":{\"zip\":\"zip5\"}}", "public field \"zip\": unknown transform");
    expect_refused("{\"public\":{\"zip\":{\"transform\":\"hash\"}}}", "public field \"zip\": \"transform\" must be");
    expect_refused("{\"public\":{\"zip\":{\"width\":5}}}", "public field \"zip\": \"transform\" must be");
    /* bad parameters */
    expect_refused("{\"public\":{\"dob\":{\"transform\":\"age_band\",\"width\":0}}}",
                   "public field \"dob\": \"width\" must be a whole number of years 1-90");
    expect_refused("{\"public\":{\"dob\":{\"transform\":\"age_band\",\"width\":91}}}",
                   "public field \"dob\": \"width\"");
    expect_refused("{\"public\":{\"dob\":{\"transform\":\"age_band\",\"width\":\"10\"}}}", "\"width\"");
    expect_refused("{\"public\":{\"dob\":{\"transform\":\"age_band\",\"width\":2.5}}}", "\"width\"");
    expect_refused("{\"public\":{\"seen\":{\"transform\":\"date_shift\",\"max_days\":0}}}",
                   "public field \"seen\": \"max_days\"");
    expect_refused("{\"public\":{\"seen\":{\"transform\":\"date_shift\",\"max_days\":3651}}}", "\"max_days\"");
    expect_refused("{\"public\":{\"zip\":{\"transform\":\"zip3\",\"width\":5}}}",
                   "public field \"zip\": transform zip3 takes no parameter \"width\"");
    expect_refused("{\"public\":{\"mrn\":{\"transform\":\"pseudonym\",\"scope\":\"world\"}}}",
                   "public field \"mrn\": \"scope\"");
    expect_refused("{\"public\":{\"a\":\"date_shift\",\"b\":{\"transform\":\"date_shift\",\"max_days\":30}}}",
                   "public field \"b\": every date_shift must use the same max_days");
    /* identity fields: only through their transforms */
    expect_refused("{\"public\":{\"dob\":\"copy\"}}", "public field \"dob\" is an identity field");
    expect_refused("{\"public\":{\"dob\":\"date_shift\"}}", "public field \"dob\" is an identity field");
    expect_refused("{\"public\":{\"dob\":\"pseudonym\"}}", "public field \"dob\" is an identity field");
    expect_refused("{\"public\":{\"name\":\"copy\"}}", "public field \"name\" is an identity field");
    expect_refused("{\"public\":{\"name\":\"age\"}}", "public field \"name\" is an identity field");
    expect_refused("{\"identity\":{\"name\":[\"given\",\"family\"]},\"public\":{\"family\":\"copy\"}}",
                   "public field \"family\" is an identity field");
    expect_refused("{\"public\":{\"given\":\"copy\"},\"identity\":{\"name\":[\"given\",\"family\"]}}",
                   "public field \"given\" is an identity field");
    expect_refused("{\"public\":{\"dob.year\":\"copy\"}}", "identity field \"dob\"");
    /* paths */
    expect_refused("{\"public\":{\"a..b\":\"copy\"}}", "public field \"a..b\": not a path");
    expect_refused("{\"public\":{\"a[]b\":\"copy\"}}", "not a path");
    expect_refused("{\"public\":{\"[]\":\"copy\"}}", "not a path");
    expect_refused("{\"public\":{\"a.\":\"copy\"}}", "not a path");
    expect_refused("{\"public\":{\"a.b.c.d.e.f.g.h.i\":\"copy\"}}", "not a path");
    expect_refused("{\"public\":{\"address\":\"copy\",\"address.zip\":\"zip3\"}}",
                   "public field \"address.zip\" overlaps \"address\"");
    expect_refused("{\"public\":{\"codes[]\":\"zip3\",\"codes\":\"copy\"}}", "overlaps");
    expect_refused("{\"public\":{\"codes[].a\":\"copy\",\"codes.b\":\"copy\"}}", "treat \"codes\" differently");
    expect_refused("{\"public\":{\"address\":\"drop\",\"address.zip\":\"zip3\"}}", "overlaps");
    /* composed names */
    expect_refused("{\"identity\":{\"name\":[]}}", "identity.name");
    expect_refused("{\"identity\":{\"name\":[\"given\",\"given\"]}}", "identity.name");
    expect_refused("{\"identity\":{\"name\":[\"given\",5]}}", "identity.name");
    expect_refused("{\"identity\":{\"name\":{\"a\":\"b\"}}}", "identity.name");
    expect_refused("{\"identity\":{\"name\":[\"given\",\"family\"]},\"types\":{\"family\":\"number\"}}",
                   "field \"family\" is the name (identity)");
    /* the allowed identity transforms */
    schema s;
    parse_ok(&s, "{\"public\":{\"dob\":\"year\",\"name\":\"pseudonym\"}}");
    schema_free(&s);
    parse_ok(&s, "{\"public\":{\"dob\":\"age\"}}");
    schema_free(&s);
    parse_ok(&s, "{\"public\":{\"dob\":\"drop\",\"name\":\"drop\"}}");
    schema_free(&s);
}

/* ---- the projection: shapes of nested paths and arrays ---- */

typedef struct {
    schema sc;
    scan_config cfg;
    arena mem;
} proj_fixture;

static void expect_public(const char *schema_text, const char *record, const char *want)
{
    proj_fixture f = {0};
    parse_ok(&f.sc, schema_text);
    f.cfg = unit_scan_config(&f.sc);
    parsed_record r = unit_scan_ok(&f.cfg, &f.mem, record);
    if (r.public_fields_len != strlen(want) || memcmp(r.public_fields, want, r.public_fields_len) != 0)
        fail_msg("public copy %.*s, expected %s (schema %s)", (int)r.public_fields_len, r.public_fields, want,
                 schema_text);
    arena_free(&f.mem);
    schema_free(&f.sc);
}

#define ID "\"name\":\"Ana Diaz\",\"dob\":\"1936-06-15\",\"ts\":\"2026-06-15T10:00:00Z\""

static void test_projection_shapes(void **state)
{
    (void)state;
    /* nested members: one object per prefix, members in allow-list order */
    expect_public("{\"public\":{\"address.zip\":\"zip3\",\"address.state\":\"copy\"}}",
                  "{" ID ",\"address\":{\"street\":\"1 Main St\",\"state\":\"MA\",\"zip\":\"02139\"}}",
                  "{\"address\":{\"zip\":\"021\",\"state\":\"MA\"}}");
    /* a nested value that cannot be transformed, or an address that is no object: left out */
    expect_public("{\"public\":{\"address.zip\":\"zip3\"}}", "{" ID ",\"address\":{\"zip\":\"21\"}}", "{}");
    expect_public("{\"public\":{\"address.zip\":\"zip3\"}}", "{" ID ",\"address\":\"02139\"}", "{}");
    expect_public("{\"public\":{\"address.zip\":\"zip3\",\"x\":\"copy\"}}", "{" ID ",\"x\":1}", "{\"x\":1}");
    /* arrays: each element through the transform; elements that cannot be are left out */
    expect_public("{\"public\":{\"codes[]\":\"copy\"}}", "{" ID ",\"codes\":[\"A41.9\",\"I10\"]}",
                  "{\"codes\":[\"A41.9\",\"I10\"]}");
    expect_public("{\"public\":{\"zips[]\":\"zip3\"}}", "{" ID ",\"zips\":[\"03601\",\"bad\",\"02139\",7]}",
                  "{\"zips\":[\"000\",\"021\"]}");
    expect_public("{\"public\":{\"codes[]\":\"copy\"}}", "{" ID ",\"codes\":\"A41.9\"}", "{}");
    /* arrays of objects */
    expect_public("{\"public\":{\"labs[].code\":\"copy\",\"labs[].at\":\"year\"}}",
                  "{" ID ",\"labs\":[{\"code\":\"K\",\"at\":\"2026-01-02\",\"by\":\"Dr X\"},{\"by\":\"Dr Y\"},"
                  "{\"code\":\"Na\"}]}",
                  "{\"labs\":[{\"code\":\"K\",\"at\":\"2026\"},{\"code\":\"Na\"}]}");
    /* a drop inside a copy leaves that member out of the copy, in every element of arrays */
    expect_public("{\"public\":{\"address\":\"copy\",\"address.street\":\"drop\"}}",
                  "{" ID ",\"address\":{\"street\":\"1 Main St\",\"zip\":\"02139\"}}",
                  "{\"address\":{\"zip\":\"02139\"}}");
    expect_public("{\"public\":{\"labs\":\"copy\",\"labs[].by\":\"drop\"}}",
                  "{" ID ",\"labs\":[{\"code\":\"K\",\"by\":\"Dr X\"},{\"by\":\"Dr Y\"}]}",
                  "{\"labs\":[{\"code\":\"K\"},{}]}");
    /* drop alone publishes nothing */
    expect_public("{\"public\":{\"notes\":\"drop\",\"x\":\"copy\"}}", "{" ID ",\"notes\":\"n\",\"x\":2}", "{\"x\":2}");
    /* identity fields through their transforms, at the record's event time: 90 on the day */
    expect_public("{\"public\":{\"dob\":\"age\"}}", "{" ID "}", "{\"dob\":\"90+\"}");
    expect_public("{\"public\":{\"dob\":\"year\"}}", "{" ID "}", "{\"dob\":\"90+\"}");
    expect_public("{\"public\":{\"dob\":\"year\"}}",
                  "{\"name\":\"Ana Diaz\",\"dob\":\"1936-06-16\",\"ts\":\"2026-06-15T10:00:00Z\"}",
                  "{\"dob\":\"1936\"}");
    expect_public("{\"public\":{\"dob\":{\"transform\":\"age_band\",\"width\":5}}}",
                  "{\"name\":\"Ana Diaz\",\"dob\":\"1936-06-16\",\"ts\":\"2026-06-15T10:00:00Z\"}",
                  "{\"dob\":\"85-89\"}");
    /* a record without ts: its event time is the ingest time (unit_now: 2026-06-15T12:00:00Z) */
    expect_public("{\"public\":{\"dob\":\"age\"}}", "{\"name\":\"Ana Diaz\",\"dob\":\"1980-06-16\"}",
                  "{\"dob\":\"45\"}");
    /* the name through a pseudonym: the HMAC of the value under the store's pseudonym key */
    tf_keys k;
    tf_patient_keys(unit_deid_key(), NULL, 0, &k);
    char h[TF_PSEUDONYM_HEX + 1], want[128];
    tf_pseudonym(k.store_pseudonym, "Ana Diaz", 8, h);
    snprintf(want, sizeof want, "{\"name\":\"%s\"}", h);
    expect_public("{\"public\":{\"name\":\"pseudonym\"}}", "{" ID "}", want);
}

/* date_shift and a patient-scoped pseudonym use the identity's keys; without a deid key they are left out. */
static void test_projection_keyed(void **state)
{
    (void)state;
    proj_fixture f = {0};
    parse_ok(&f.sc,
             "{\"public\":{\"seen\":\"date_shift\",\"mrn\":{\"transform\":\"pseudonym\",\"scope\":\"patient\"}}}");
    f.cfg = unit_scan_config(&f.sc);
    parsed_record r = unit_scan_ok(&f.cfg, &f.mem,
                                   "{\"name\":\"Ana\",\"dob\":\"1990-01-01\",\"seen\":\"2024-02-29\","
                                   "\"mrn\":12345}");
    tf_keys k;
    tf_patient_keys(unit_deid_key(), r.identity_key, r.identity_key_len, &k);
    buf want = {0}, d = {0};
    assert_true(tf_date_shift("2024-02-29", 10, tf_shift_days(k.shift_seed, 365), &d));
    char h[TF_PSEUDONYM_HEX + 1];
    tf_pseudonym(k.patient_pseudonym, "12345", 5, h);
    buf_printf(&want, "{\"seen\":\"%s\",\"mrn\":\"%s\"}", d.data, h);
    assert_span_equal(r.public_fields, r.public_fields_len, want.data);
    /* the same values for another patient: another offset and pseudonym (generally) */
    parsed_record r2 = unit_scan_ok(&f.cfg, &f.mem,
                                    "{\"name\":\"Bea\",\"dob\":\"1990-01-01\",\"seen\":\"2024-02-29\","
                                    "\"mrn\":12345}");
    assert_false(r2.public_fields_len == r.public_fields_len &&
                 memcmp(r2.public_fields, r.public_fields, r.public_fields_len) == 0);
    /* no deid key: keyed fields left out, never copied */
    f.cfg.deid_key = NULL;
    parsed_record r3 = unit_scan_ok(&f.cfg, &f.mem,
                                    "{\"name\":\"Ana\",\"dob\":\"1990-01-01\",\"seen\":\"2024-02-29\","
                                    "\"mrn\":12345}");
    assert_span_equal(r3.public_fields, r3.public_fields_len, "{}");
    buf_free(&want);
    buf_free(&d);
    arena_free(&f.mem);
    schema_free(&f.sc);
}

/* A patient's projection: nested paths from the top-level field's merged value; ages at the latest event. */
static void test_patient_projection(void **state)
{
    (void)state;
    schema sc;
    parse_ok(&sc, "{\"public\":{\"address.zip\":\"zip3\",\"dob\":\"age\",\"codes[]\":\"copy\",\"ts\":\"year\"}}");
    const char *addr = "{\"zip\":\"02139\",\"street\":\"1 Main\"}", *dob = "\"1980-06-16\"", *codes = "[\"A41.9\"]",
               *name = "\"Ana\"";
    state_field st[4] = {
        {.key = "address", .key_len = 7, .len = (uint32_t)strlen(addr), .ts = unit_time(2020, 1, 1, 0, 0, 0)},
        {.key = "codes", .key_len = 5, .len = (uint32_t)strlen(codes), .ts = unit_time(2026, 6, 16, 0, 0, 0)},
        {.key = "dob", .key_len = 3, .len = (uint32_t)strlen(dob), .ts = unit_time(2019, 1, 1, 0, 0, 0)},
        {.key = "name", .key_len = 4, .len = (uint32_t)strlen(name), .ts = unit_time(2019, 1, 1, 0, 0, 0)},
    };
    const char *vals[4] = {addr, codes, dob, name};
    assert_int_equal(deid_patient_event_time(st, 4), unit_time(2026, 6, 16, 0, 0, 0));
    deid_ctx cx = {.event_us = deid_patient_event_time(st, 4)};
    buf out = {0};
    deid_patient_fields(&sc, &cx, st, 4, vals, &out);
    /* age 46 on 2026-06-16 (the latest event), not 38 at the dob's own record */
    assert_span_equal(out.data, out.len, "{\"address\":{\"zip\":\"021\"},\"dob\":\"46\",\"codes\":[\"A41.9\"]}");
    assert_true(deid_patient_field_public(&sc, &st[0]));
    assert_false(deid_patient_field_public(&sc, &st[3]));
    buf_free(&out);
    schema_free(&sc);
}

/* ---- composed identity ---- */

static parsed_record scan_with(const schema *sc, arena *mem, const char *text)
{
    scan_config cfg = unit_scan_config(sc);
    parsed_record r;
    record_prepare_one(&cfg, text, strlen(text), 1, mem, &r);
    return r;
}

static void test_composed_identity(void **state)
{
    (void)state;
    schema one, two;
    schema_default(&one);
    parse_ok(&two, "{\"identity\":{\"name\":[\"given\",\"family\"],\"dob\":\"dob\"}}");
    arena mem = {0};
    parsed_record a = scan_with(&one, &mem, "{\"name\":\"Ada Lovelace\",\"dob\":\"1915-12-10\"}");
    parsed_record b = scan_with(&two, &mem, "{\"given\":\"Ada\",\"family\":\"Lovelace\",\"dob\":\"1915-12-10\"}");
    parsed_record c = scan_with(&two, &mem, "{\"given\":\" ADA \",\"family\":\"lovelace\",\"dob\":\"1915-12-10\"}");
    assert_false(a.rejected || b.rejected || c.rejected);
    /* the single-field form's key is unchanged: normalized name NUL date */
    assert_int_equal(a.identity_key_len, 23);
    assert_memory_equal(a.identity_key,
                        "ada lovelace\0"
                        "1915-12-10",
                        23);
    assert_int_equal(b.identity_key_len, a.identity_key_len);
    assert_memory_equal(b.identity_key, a.identity_key, a.identity_key_len);
    assert_memory_equal(c.identity_key, a.identity_key, a.identity_key_len);
    /* an empty part is allowed (a mononym); the name as a whole must not be empty */
    parsed_record d = scan_with(&two, &mem, "{\"given\":\"\",\"family\":\"Lovelace\",\"dob\":\"1915-12-10\"}");
    assert_false(d.rejected);
    assert_memory_equal(d.identity_key, "lovelace\0", 9);
    /* a missing or non-string part is rejected naming the field, never a value */
    parsed_record e = scan_with(&two, &mem, "{\"given\":\"Ada\",\"dob\":\"1915-12-10\"}");
    assert_true(e.rejected);
    assert_non_null(strstr(e.error, "missing identity field \"family\""));
    assert_null(strstr(e.error, "Ada"));
    parsed_record g = scan_with(&two, &mem, "{\"given\":[\"Ada\"],\"family\":\"Lovelace\",\"dob\":\"1915-12-10\"}");
    assert_true(g.rejected);
    assert_non_null(strstr(g.error, "field \"given\" must be a string"));
    assert_null(strstr(g.error, "Lovelace"));
    parsed_record h = scan_with(&two, &mem, "{\"given\":\" \",\"family\":\"\",\"dob\":\"1915-12-10\"}");
    assert_true(h.rejected);
    assert_non_null(strstr(h.error, "given+family"));
    arena_free(&mem);
    schema_free(&one);
    schema_free(&two);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zip3),
        cmocka_unit_test(test_zip3_table_is_the_data_file),
        cmocka_unit_test(test_age),
        cmocka_unit_test(test_age_band),
        cmocka_unit_test(test_year),
        cmocka_unit_test(test_date_shift_leap_days),
        cmocka_unit_test(test_date_shift_per_patient),
        cmocka_unit_test(test_pseudonym),
        cmocka_unit_test(test_schema_transforms),
        cmocka_unit_test(test_schema_refusals),
        cmocka_unit_test(test_projection_shapes),
        cmocka_unit_test(test_projection_keyed),
        cmocka_unit_test(test_patient_projection),
        cmocka_unit_test(test_composed_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

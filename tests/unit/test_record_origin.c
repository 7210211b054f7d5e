/*
 * test_record_origin.c - the file-and-line headers of `medstream import --kafka` (record_origin.h): the
 * pair parses only when the origin is 32 bytes and the line plain decimal in 1..2^62; the replay header
 * is exactly "1"; a line's text
 * parses back to it; a record without an id named through the headers at any place in a Kafka batch gets
 * the id the offline importer gives the same row (its file line from body line 1), also when the batch
 * index is past the file line; another line or file is another id; a record with an id keeps it.
 */
#include "unit.h"

#include "pipeline/record_origin.h"

#include <string.h>

static const unsigned char ORIGIN[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                         17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static bool parse(size_t origin_len, const char *line, uint64_t *out)
{
    unsigned char o[40] = {0};
    return record_origin_parse(o, origin_len, line, strlen(line), out);
}

static void test_parse_accepts_only_a_well_formed_pair(void **state)
{
    (void)state;
    uint64_t n = 0;
    assert_true(parse(32, "42", &n));
    assert_int_equal(n, 42);
    assert_true(parse(32, "4611686018427387904", &n)); /* 2^62 */
    assert_true(n == RECORD_LINE_MAX);
    const char *bad[] = {"",
                         "0",
                         "00",
                         "12a",
                         "-1",
                         "+1",
                         " 1",
                         "1 ",
                         "4611686018427387905",
                         "9999999999999999999",
                         "12345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 7;
        assert_false(parse(32, bad[i], &n));
        assert_int_equal(n, 7); /* untouched */
    }
    assert_false(parse(31, "5", &n));
    assert_false(parse(33, "5", &n));
    assert_false(record_origin_parse(NULL, 32, "5", 1, &n));
    assert_false(record_origin_parse(ORIGIN, 32, NULL, 0, &n));
}

static void test_replay_is_exactly_one(void **state)
{
    (void)state;
    assert_true(record_origin_replay("1", 1));
    assert_false(record_origin_replay("0", 1));
    assert_false(record_origin_replay("11", 2));
    assert_false(record_origin_replay("1", 0));
    assert_false(record_origin_replay(NULL, 1));
}

static void test_format_parses_back(void **state)
{
    (void)state;
    const uint64_t lines[] = {1, 9, 10, 1234567, RECORD_LINE_MAX};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char text[RECORD_LINE_TEXT];
        int len = record_origin_line_format(lines[i], text);
        assert_int_equal(len, (int)strlen(text));
        uint64_t back = 0;
        assert_true(record_origin_parse(ORIGIN, 32, text, (size_t)len, &back));
        assert_true(back == lines[i]);
    }
}

/* The id of text scanned as body line body_line of a Kafka batch, named by ORIGIN and file_line. */
static void id_via_headers(const char *text, const unsigned char *origin, uint64_t file_line, uint32_t body_line,
                           arena *mem, char out[257])
{
    schema s;
    schema_default(&s);
    scan_config cfg = unit_scan_config(&s);
    record_origin_apply(&cfg, origin, file_line, body_line);
    parsed_record r;
    record_prepare_one(&cfg, text, strlen(text), body_line, mem, &r);
    if (r.rejected) fail_msg("rejected: %s", r.error);
    snprintf(out, 257, "%.*s", (int)r.record_id_len, r.record_id);
    schema_free(&s);
}

static void test_headers_give_the_offline_importers_id(void **state)
{
    (void)state;
    arena mem = {0};
    schema s;
    schema_default(&s);
    const char *row = "{\"name\":\"Ana Lopez\",\"dob\":\"1990-01-02\",\"type\":\"visit\"}";
    /* the offline importer: a batch whose first row is file line 3, this row at its body line 1 */
    scan_config off = unit_scan_config(&s);
    off.origin = ORIGIN;
    off.origin_line = 3;
    parsed_record r = unit_scan_ok(&off, &mem, row);
    assert_true(r.record_id_derived);
    char want[257], got[257];
    snprintf(want, sizeof want, "%.*s", (int)r.record_id_len, r.record_id);
    const uint32_t places[] = {1, 2, 3, 4, 999}; /* its place in a Kafka batch: also past its file line */
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        id_via_headers(row, ORIGIN, 3, places[i], &mem, got);
        assert_string_equal(got, want);
    }
    id_via_headers(row, ORIGIN, 4, 1, &mem, got); /* another line: another record */
    assert_string_not_equal(got, want);
    unsigned char other[32];
    memcpy(other, ORIGIN, 32);
    other[31] ^= 1;
    id_via_headers(row, other, 3, 1, &mem, got); /* another file: another record */
    assert_string_not_equal(got, want);
    id_via_headers("{\"record_id\":\"r-1\",\"name\":\"Ana Lopez\",\"dob\":\"1990-01-02\"}", ORIGIN, 3, 5, &mem, got);
    assert_string_equal(got, "r-1"); /* a record id of its own is kept */
    schema_free(&s);
    arena_free(&mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts_only_a_well_formed_pair),
        cmocka_unit_test(test_replay_is_exactly_one),
        cmocka_unit_test(test_format_parses_back),
        cmocka_unit_test(test_headers_give_the_offline_importers_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

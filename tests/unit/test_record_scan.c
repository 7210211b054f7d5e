/*
 * test_record_scan.c - the pure stages 1-3 as sources call them (src/pipeline/prepare.h): records parsed
 * and validated into parsed_record (stage 1, record_scan.h), their identity (stage 2) and public copy
 * (stage 3), and request bodies (NDJSON, a JSON array, one object) split into numbered records.
 *
 * Every rejection names the field and the line, and never contains a value: all records here carry the
 * same distinctive name so that a leak of it into an error text is caught.
 *
 * Found by fuzz/fuzz_wire.c (a Kafka message with its headers): the event time given beside a record (the
 * medstream-ts header) was taken as is, so a message of year 116191 or of INT64_MIN was stored with a time
 * no RFC 3339 text shows (and INT64_MIN overflows time_year in the writer): test_header_event_time.
 */
#include "unit.h"

#include "pipeline/prepare.h"

#include "pipeline/identity.h"

#include <xxhash.h>

#define NAME "Zebulon Quixote"
#define DOB "1990-05-07"

typedef struct {
    schema sc;
    scan_config cfg;
    arena mem;
    record_batch batch;
    buf text;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    schema_default(&f->sc);
    f->cfg = unit_scan_config(&f->sc);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    arena_free(&f->mem);
    record_batch_free(&f->batch);
    buf_free(&f->text);
    schema_free(&f->sc);
    free(f);
    return 0;
}

/* Scan one record's text as line 7; the text is copied into the fixture's arena (records point into it). */
static parsed_record scan_n(fixture *f, const char *text, size_t n)
{
    char *copy = arena_alloc(&f->mem, n + 1);
    memcpy(copy, text, n);
    copy[n] = 0;
    parsed_record r;
    record_prepare_one(&f->cfg, copy, n, 7, &f->mem, &r);
    return r;
}

static parsed_record scan(fixture *f, const char *text) { return scan_n(f, text, strlen(text)); }

static void expect_valid(const parsed_record *r, const char *what)
{
    if (r->rejected) fail_msg("%s: rejected: %s", what, r->error);
    assert_non_null(r->identity_key);
    assert_non_null(r->record_id);
    assert_non_null(r->public_fields);
}

/* The record must be rejected at line 7 with a message that contains every part (field names, reasons)
 * and none of the PHI values. */
static void expect_reject_n(fixture *f, const char *text, size_t n, const char *part1, const char *part2,
                            const char *value)
{
    parsed_record r = scan_n(f, text, n);
    if (!r.rejected) fail_msg("accepted: %.*s", (int)(n > 200 ? 200 : n), text);
    assert_non_null(r.error);
    if (strncmp(r.error, "line 7: ", 8) != 0) fail_msg("error does not start with the line: \"%s\"", r.error);
    if (part1 && !strstr(r.error, part1)) fail_msg("error \"%s\" lacks \"%s\"", r.error, part1);
    if (part2 && !strstr(r.error, part2)) fail_msg("error \"%s\" lacks \"%s\"", r.error, part2);
    const char *phi[] = {"Zebulon", "zebulon", "Quixote", "quixote", "ZEBULON", value};
    for (size_t i = 0; i < sizeof phi / sizeof phi[0]; i++)
        if (phi[i] && phi[i][0] && strstr(r.error, phi[i]))
            fail_msg("error \"%s\" contains the value \"%s\"", r.error, phi[i]);
}

static void expect_reject(fixture *f, const char *text, const char *part1, const char *part2, const char *value)
{
    expect_reject_n(f, text, strlen(text), part1, part2, value);
}

/* ---- one record ---- */

static void test_valid_record_roles(void **state)
{
    fixture *f = *state;
    parsed_record r =
        scan(f, "  {\"type\":\"lab\",\"name\":\"  Zebulon   QUIXOTE \",\"dob\":\"" DOB "\",\"record_id\":\"r\\u002d1\","
                "\"ts\":\"2026-01-02T03:04:05.5+01:00\",\"favorite_color\":\"blue\",\"ssn\":\"123-45-6789\"}\r\n");
    expect_valid(&r, "full record");
    assert_int_equal(r.line, 7);
    assert_span_equal(r.record_id, r.record_id_len, "r-1"); /* decoded */
    assert_false(r.record_id_derived);
    assert_span_equal(r.type, r.type_len, "lab");
    assert_true(r.ts_us == unit_time(2026, 1, 2, 2, 4, 5) + 500000);
    assert_memory_equal(r.identity_key, "zebulon quixote\0" DOB, r.identity_key_len);
    assert_int_equal(r.identity_key_len, 15 + 1 + 10);
    /* body: the trimmed object text */
    assert_int_equal(r.body[0], '{');
    assert_int_equal(r.body[r.body_len - 1], '}');
    assert_span_equal(r.public_fields, r.public_fields_len,
                      "{\"favorite_color\":\"blue\",\"type\":\"lab\",\"ts\":\"2026\"}");
    assert_int_equal(r.nfields, 7);
}

static void test_defaults(void **state)
{
    fixture *f = *state;
    parsed_record r = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\"}");
    expect_valid(&r, "minimal record");
    assert_span_equal(r.type, r.type_len, "record");
    assert_true(r.ts_us == f->cfg.now_us);
    assert_true(r.record_id_derived);
    assert_span_equal(r.public_fields, r.public_fields_len, "{}");
    /* dob of today is not in the future; 1850-01-01 is the earliest */
    r = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"2026-06-15\"}");
    expect_valid(&r, "dob today");
    r = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"1850-01-01\"}");
    expect_valid(&r, "dob 1850");
}

static void test_fields_sorted(void **state)
{
    fixture *f = *state;
    parsed_record r = scan(f, "{\"zeta\":[1, 2],\"alpha\":{\"x\": 1},\"name\":\"" NAME "\",\"Mid\":null,\"dob\":\"" DOB
                              "\",\"k\\u0065y\":true,\"\":0}");
    expect_valid(&r, "sorted");
    const char *order[] = {"", "Mid", "alpha", "dob", "key", "name", "zeta"};
    assert_int_equal(r.nfields, 7);
    for (uint32_t i = 0; i < r.nfields; i++)
        assert_span_equal(r.fields[i].key, r.fields[i].key_len, order[i]);
    for (uint32_t i = 1; i < r.nfields; i++)
        assert_true(record_key_cmp(r.fields[i - 1].key, r.fields[i - 1].key_len, r.fields[i].key, r.fields[i].key_len) <
                    0);
    const record_field *a = record_field_get(&r, "alpha", 5);
    assert_non_null(a);
    assert_span_equal(a->val, a->val_len, "{\"x\": 1}");
    assert_int_equal(a->type, JSON_OBJECT);
    assert_true(a->hash == XXH3_64bits("{\"x\": 1}", 8));
    const record_field *z = record_field_get(&r, "zeta", 4);
    assert_span_equal(z->val, z->val_len, "[1, 2]");
    assert_int_equal(z->type, JSON_ARRAY);
    assert_non_null(record_field_get(&r, "key", 3)); /* escaped key, decoded */
    assert_non_null(record_field_get(&r, "", 0));
    assert_non_null(record_field_get(&r, "Mid", 3));
    assert_null(record_field_get(&r, "mid", 3));
    assert_null(record_field_get(&r, "alph", 4));
    assert_null(record_field_get(&r, "zetas", 5));
    assert_int_equal(record_field_get(&r, "name", 4)->type, JSON_STRING);
    /* record_key_cmp: bytewise, shorter prefix first */
    assert_true(record_key_cmp("ab", 2, "abc", 3) < 0);
    assert_true(record_key_cmp("abc", 3, "ab", 2) > 0);
    assert_true(record_key_cmp("b", 1, "abc", 3) > 0);
    assert_int_equal(record_key_cmp("x", 1, "x", 1), 0);
    assert_true(record_key_cmp("\xC3\xA9", 2, "z", 1) > 0); /* bytes are unsigned */
}

static void test_name_rejections(void **state)
{
    fixture *f = *state;
    expect_reject(f, "{\"dob\":\"" DOB "\"}", "missing identity field \"name\"", NULL, NULL);
    expect_reject(f, "{\"name\":42,\"dob\":\"" DOB "\"}", "\"name\"", "must be a string, not number", NULL);
    expect_reject(f, "{\"name\":null,\"dob\":\"" DOB "\"}", "\"name\"", "not null", NULL);
    expect_reject(f, "{\"name\":{\"first\":\"Zebulon\"},\"dob\":\"" DOB "\"}", "\"name\"", "not object", NULL);
    expect_reject(f, "{\"name\":[\"Zebulon\"],\"dob\":\"" DOB "\"}", "\"name\"", "not array", NULL);
    expect_reject(f, "{\"name\":\"\",\"dob\":\"" DOB "\"}", "field \"name\"", "is empty", NULL);
    expect_reject(f, "{\"name\":\"  \\t \",\"dob\":\"" DOB "\"}", "field \"name\"", "is empty", NULL);
    expect_reject(f, "{\"name\":\"Zebulon\\u0001Quixote\",\"dob\":\"" DOB "\"}", "field \"name\"", "control character",
                  NULL);
    expect_reject(f, "{\"name\":\"Zebulon\\u007fQuixote\",\"dob\":\"" DOB "\"}", "field \"name\"", "control character",
                  NULL);
    /* refused by the JSON scan, for every string (PostgreSQL cannot hold a NUL): names the byte */
    expect_reject(f, "{\"name\":\"Zebulon\\u0000Quixote\",\"dob\":\"" DOB "\"}", "at byte 16", "NUL", NULL);
    buf b = {0};
    buf_puts(&b, "{\"name\":\"");
    for (int i = 0; i < 20; i++)
        buf_puts(&b, NAME);
    buf_puts(&b, "\",\"dob\":\"" DOB "\"}");
    expect_reject_n(f, b.data, b.len, "field \"name\"", "too long", NULL);
    buf_free(&b);
}

static void test_dob_rejections(void **state)
{
    fixture *f = *state;
    expect_reject(f, "{\"name\":\"" NAME "\"}", "missing identity field \"dob\"", NULL, NULL);
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":19900507}", "\"dob\"", "must be a string, not number", "19900507");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"\"}", "field \"dob\"", "is empty", NULL);
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"2023-02-30\"}", "field \"dob\"", "not a real date",
                  "2023-02-30");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"2023-02-29\"}", "field \"dob\"", "not a real date",
                  "2023-02-29");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"1990-5-07\"}", "field \"dob\"", "YYYY-MM-DD", "1990-5-07");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"07/05/1990\"}", "field \"dob\"", "YYYY-MM-DD", "07/05/1990");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"1990-05-07T00:00:00Z\"}", "field \"dob\"", "YYYY-MM-DD",
                  "1990-05-07");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"2026-06-16\"}", "field \"dob\"", "in the future", "2026-06-16");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"2999-01-01\"}", "field \"dob\"", "in the future", "2999");
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"1849-12-31\"}", "field \"dob\"", "before 1850", "1849-12-31");
}

static void test_record_id_type_ts_rejections(void **state)
{
    fixture *f = *state;
    const char *id = "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",";
    char t[1024];
    snprintf(t, sizeof t, "%s\"record_id\":5}", id);
    expect_reject(f, t, "\"record_id\"", "must be a string, not number", NULL);
    snprintf(t, sizeof t, "%s\"record_id\":\"\"}", id);
    expect_reject(f, t, "\"record_id\"", "1-256", NULL);
    snprintf(t, sizeof t, "%s\"record_id\":\"a\\u0001b\"}", id);
    expect_reject(f, t, "\"record_id\"", "control", NULL);
    snprintf(t, sizeof t, "%s\"record_id\":\"a\\nb\"}", id);
    expect_reject(f, t, "\"record_id\"", "control", NULL);
    snprintf(t, sizeof t, "%s\"record_id\":\"a\\u0000b\"}", id);
    expect_reject(f, t, "NUL", NULL, NULL);
    char rid[300];
    memset(rid, 'r', 257);
    rid[257] = 0;
    snprintf(t, sizeof t, "%s\"record_id\":\"%s\"}", id, rid);
    expect_reject(f, t, "\"record_id\"", "1-256", NULL);
    rid[256] = 0; /* 256 is fine */
    snprintf(t, sizeof t, "%s\"record_id\":\"%s\"}", id, rid);
    parsed_record r = scan(f, t);
    expect_valid(&r, "256-byte record id");
    assert_int_equal(r.record_id_len, 256);

    snprintf(t, sizeof t, "%s\"type\":1}", id);
    expect_reject(f, t, "\"type\"", "must be a string, not number", NULL);
    snprintf(t, sizeof t, "%s\"type\":\"\"}", id);
    expect_reject(f, t, "\"type\"", "1-64", NULL);
    snprintf(t, sizeof t, "%s\"type\":\"la\\tb\"}", id);
    expect_reject(f, t, "\"type\"", "control", NULL);
    char ty[80];
    memset(ty, 't', 65);
    ty[65] = 0;
    snprintf(t, sizeof t, "%s\"type\":\"%s\"}", id, ty);
    expect_reject(f, t, "\"type\"", "1-64", NULL);
    ty[64] = 0;
    snprintf(t, sizeof t, "%s\"type\":\"%s\"}", id, ty);
    r = scan(f, t);
    expect_valid(&r, "64-byte type");

    snprintf(t, sizeof t, "%s\"ts\":1700000000}", id);
    expect_reject(f, t, "\"ts\"", "RFC 3339", "1700000000");
    snprintf(t, sizeof t, "%s\"ts\":\"yesterday\"}", id);
    expect_reject(f, t, "\"ts\"", "RFC 3339", "yesterday");
    snprintf(t, sizeof t, "%s\"ts\":\"2026-06-15\"}", id);
    expect_reject(f, t, "\"ts\"", "RFC 3339", "2026-06-15");
    snprintf(t, sizeof t, "%s\"ts\":\"2026-02-30T00:00:00Z\"}", id);
    expect_reject(f, t, "\"ts\"", "RFC 3339", "2026-02-30");
    /* before the year 1 (PostgreSQL has no year 0): refused, also when the offset takes it there */
    snprintf(t, sizeof t, "%s\"ts\":\"0000-06-15T00:00:00Z\"}", id);
    expect_reject(f, t, "\"ts\"", "RFC 3339", "0000-06-15"); /* the parser knows no year 0 */
    snprintf(t, sizeof t, "%s\"ts\":\"0001-01-01T00:30:00+01:00\"}", id);
    expect_reject(f, t, "\"ts\"", "before the year 1", "0001-01-01");
    snprintf(t, sizeof t, "%s\"ts\":\"0001-01-01T00:00:00Z\"}", id);
    r = scan(f, t);
    expect_valid(&r, "the first instant of the year 1");
    snprintf(t, sizeof t, "%s\"ts\":\"9999-12-31T23:59:59.999999Z\"}", id);
    r = scan(f, t);
    expect_valid(&r, "the last instant of the year 9999");
    /* nor after 9999 once the offset is applied (year 10000 UTC fits no RFC 3339 answer) */
    snprintf(t, sizeof t, "%s\"ts\":\"9999-12-31T23:30:00-05:00\"}", id);
    expect_reject(f, t, "field \"ts\" is after the year 9999", NULL, "23:30:00");
    snprintf(t, sizeof t, "%s\"ts\":\"9999-12-31T18:59:59.999999-05:00\"}", id);
    r = scan(f, t);
    expect_valid(&r, "the last instant of 9999 UTC, written with an offset");
}

static void test_structure_rejections(void **state)
{
    fixture *f = *state;
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\"", "malformed JSON at byte", NULL, NULL);
    expect_reject(f, "{\"name\":\"" NAME "\" \"dob\":\"" DOB "\"}", "malformed JSON at byte 26", NULL, NULL);
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\"} trailing", "malformed JSON", "trailing text", NULL);
    expect_reject(f, "[\"" NAME "\"]", "not an object (a JSON array)", NULL, NULL);
    expect_reject(f, "\"" NAME "\"", "not an object (a JSON string)", NULL, NULL);
    expect_reject(f, "{\"name\":\"Zebulon\xff Quixote\",\"dob\":\"" DOB "\"}", "invalid UTF-8 at byte 16", NULL, NULL);
    expect_reject(f, "{\"name\":\"Zebulon\xED\xA0\x80\",\"dob\":\"" DOB "\"}", "invalid UTF-8 at byte 16", NULL, NULL);
    expect_reject(f, "{\"name\":\"Zebulon\\ud800\",\"dob\":\"" DOB "\"}", "malformed JSON", "surrogate", NULL);
    /* duplicate keys, also when they differ only in escaping */
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"name\":\"Zebulon Other\"}",
                  "duplicate field \"name\"", NULL, NULL);
    expect_reject(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"n\\u0061me\":\"Zebulon Other\"}",
                  "duplicate field \"name\"", NULL, NULL);
    expect_reject(f, "{\"x\":1,\"name\":\"" NAME "\",\"x\":1,\"dob\":\"" DOB "\"}", "duplicate field \"x\"", NULL,
                  NULL);
}

static void test_field_limit(void **state)
{
    fixture *f = *state;
    buf *b = &f->text;
    buf_puts(b, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\"");
    for (int i = 2; i < RECORD_MAX_FIELDS; i++)
        buf_printf(b, ",\"f%04d\":%d", i, i);
    buf_puts(b, "}");
    parsed_record r = scan_n(f, b->data, b->len);
    expect_valid(&r, "1024 fields");
    assert_int_equal(r.nfields, RECORD_MAX_FIELDS);
    b->len--;
    buf_puts(b, ",\"one_more\":1}");
    expect_reject_n(f, b->data, b->len, "more than 1024 fields", NULL, NULL);
}

static void test_max_record(void **state)
{
    fixture *f = *state;
    f->cfg.max_record = 100;
    char t[200];
    /* {"name":"Zebulon Quixote","dob":"1990-05-07","pad":"..."} padded to exactly 100 bytes */
    int base = snprintf(t, sizeof t, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"pad\":\"");
    int pad = 100 - base - 2;
    memset(t + base, 'p', (size_t)pad);
    memcpy(t + base + pad, "\"}", 3);
    assert_int_equal(strlen(t), 100);
    parsed_record r = scan(f, t);
    expect_valid(&r, "record of exactly max_record bytes");
    /* surrounding whitespace is not part of the record */
    char ws[220];
    snprintf(ws, sizeof ws, "  \t%s \r\n", t);
    r = scan(f, ws);
    expect_valid(&r, "record of max_record bytes with whitespace around");
    assert_int_equal(r.body_len, 100);
    /* one more byte */
    memmove(t + base + 1, t + base, strlen(t + base) + 1);
    assert_int_equal(strlen(t), 101);
    expect_reject(f, t, "record too large", "101 bytes; the limit is 100", NULL);
}

/* ---- derived record ids ---- */

static void test_derived_record_id(void **state)
{
    fixture *f = *state;
    parsed_record a = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"x\":1,\"note\":\"hello\"}");
    parsed_record b =
        scan(f, " {\n \"note\" : \"hello\" ,\t\"x\":1 ,\r\n\"dob\":\"" DOB "\",   \"name\" :\"" NAME "\" } ");
    parsed_record c = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"x\":2,\"note\":\"hello\"}");
    parsed_record d = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"x\":1,\"note\":\"hello\",\"y\":null}");
    parsed_record e = scan(f, "{\"n\\u0061me\":\"" NAME "\",\"dob\":\"" DOB "\",\"x\":1,\"note\":\"hello\"}");
    expect_valid(&a, "a");
    expect_valid(&b, "b");
    expect_valid(&c, "c");
    expect_valid(&d, "d");
    expect_valid(&e, "e");
    assert_true(a.record_id_derived);
    assert_int_equal(a.record_id_len, 32);
    for (int i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", a.record_id[i]));
    /* same content, other key order and whitespace: same id and content hash */
    assert_span_equal(b.record_id, b.record_id_len, a.record_id);
    assert_memory_equal(a.content_hash, b.content_hash, 16);
    assert_span_equal(e.record_id, e.record_id_len, a.record_id);
    /* other content: other id */
    assert_string_not_equal(c.record_id, a.record_id);
    assert_string_not_equal(d.record_id, a.record_id);
    assert_string_not_equal(c.record_id, d.record_id);
    assert_memory_not_equal(a.content_hash, c.content_hash, 16);
    /* keyed: another store's secret gives another id for the same content */
    unsigned char other_key[32];
    memset(other_key, 0x77, sizeof other_key);
    f->cfg.id_key = other_key;
    parsed_record a2 = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"x\":1,\"note\":\"hello\"}");
    expect_valid(&a2, "a2");
    assert_memory_equal(a2.content_hash, a.content_hash, 16);
    assert_string_not_equal(a2.record_id, a.record_id);
}

/* Shifting bytes between a key and its value, or between neighbouring fields, changes the content. */
static void test_content_hash_boundaries(void **state)
{
    fixture *f = *state;
    const char *pairs[][2] = {
        {"\"ab\":\"c\"", "\"a\":\"bc\""},
        {"\"a\":\"b\",\"c\":\"d\"", "\"a\":\"b\\\",\\\"c\\\":\\\"d\""},
        {"\"a\":1,\"b\":2", "\"a\":12"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char t1[256], t2[256];
        snprintf(t1, sizeof t1, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",%s}", pairs[i][0]);
        snprintf(t2, sizeof t2, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",%s}", pairs[i][1]);
        parsed_record r1 = scan(f, t1), r2 = scan(f, t2);
        expect_valid(&r1, t1);
        expect_valid(&r2, t2);
        if (memcmp(r1.content_hash, r2.content_hash, 16) == 0) fail_msg("same content hash for %s and %s", t1, t2);
        assert_string_not_equal(r1.record_id, r2.record_id);
    }
}

/* ---- bodies ---- */

static ms_code scan_body(fixture *f, const char *body)
{
    record_batch_free(&f->batch);
    char *copy = arena_strndup(&f->mem, body, strlen(body));
    ms_err e = {0};
    return record_prepare_body(&f->cfg, copy, strlen(body), &f->batch, &e);
}

#define REC(x) "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"x\":" #x "}"

static void test_body_ndjson(void **state)
{
    fixture *f = *state;
    assert_int_equal(scan_body(f, REC(1) "\r\n\r\n" REC(2) "\r\n  \t\r\n{\"name\":\"" NAME "\"}\n\n" REC(4)), MS_OK);
    record_batch *b = &f->batch;
    assert_int_equal(b->n, 4);
    assert_int_equal(b->rejected, 1);
    uint32_t lines[] = {1, 3, 5, 7};
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(b->records[i].line, lines[i]);
    assert_false(b->records[0].rejected);
    assert_false(b->records[1].rejected);
    assert_true(b->records[2].rejected);
    assert_string_equal(b->records[2].error, "line 5: missing identity field \"dob\"");
    assert_false(b->records[3].rejected);
    /* bodies are trimmed of the CR */
    assert_span_equal(b->records[0].body, b->records[0].body_len, REC(1));
    assert_span_equal(b->records[1].body, b->records[1].body_len, REC(2));
    assert_span_equal(b->records[3].body, b->records[3].body_len, REC(4));
    /* the same record twice in one body: same derived id */
    assert_int_equal(scan_body(f, REC(1) "\n" REC(1) "\n"), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_string_equal(f->batch.records[0].record_id, f->batch.records[1].record_id);
    /* a malformed line does not stop the others */
    assert_int_equal(scan_body(f, "{\"name\":\n" REC(2) "\nnot json\n" REC(3)), MS_OK);
    assert_int_equal(f->batch.n, 4);
    assert_int_equal(f->batch.rejected, 2);
    assert_true(f->batch.records[0].rejected);
    assert_non_null(strstr(f->batch.records[0].error, "line 1: malformed JSON"));
    assert_true(f->batch.records[2].rejected);
    assert_non_null(strstr(f->batch.records[2].error, "line 3: "));
    assert_false(f->batch.records[3].rejected);
    assert_int_equal(f->batch.records[3].line, 4);
}

/* A UTF-8 byte-order mark at the start of a body is skipped (NDJSON, an array, one object); one
 * anywhere else is not whitespace. */
static void test_body_byte_order_mark(void **state)
{
    fixture *f = *state;
    const char *bodies[] = {"\xEF\xBB\xBF" REC(1) "\n" REC(2) "\n", "\xEF\xBB\xBF[" REC(1) "," REC(2) "]",
                            "\xEF\xBB\xBF" REC(1), "\xEF\xBB\xBF  " REC(1) "\n" REC(2)};
    uint32_t want[] = {2, 2, 1, 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(scan_body(f, bodies[i]), MS_OK);
        if (f->batch.n != want[i] || f->batch.rejected)
            fail_msg("body %d with a BOM: %zu records, %zu rejected (%s)", i, f->batch.n, f->batch.rejected,
                     f->batch.rejected ? f->batch.records[0].error : "");
        assert_span_equal(f->batch.records[0].body, f->batch.records[0].body_len, REC(1));
    }
    /* only at the very start */
    assert_int_equal(scan_body(f, REC(1) "\n\xEF\xBB\xBF" REC(2)), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_false(f->batch.records[0].rejected);
    assert_true(f->batch.records[1].rejected);
}

static void test_body_array(void **state)
{
    fixture *f = *state;
    assert_int_equal(scan_body(f, " [" REC(1) ",\n 5 ,\r\n" REC(3) "\n,\"" NAME "\"] \n"), MS_OK);
    record_batch *b = &f->batch;
    assert_int_equal(b->n, 4);
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(b->records[i].line, i + 1);
    assert_false(b->records[0].rejected);
    assert_true(b->records[1].rejected);
    assert_string_equal(b->records[1].error, "line 2: not an object (a JSON number)");
    assert_false(b->records[2].rejected);
    assert_span_equal(b->records[2].body, b->records[2].body_len, REC(3));
    assert_true(b->records[3].rejected);
    assert_null(strstr(b->records[3].error, "Zebulon"));
    assert_int_equal(b->rejected, 2);

    /* a structural error ends the array there */
    assert_int_equal(scan_body(f, "[" REC(1) ", {\"name\": }, " REC(3) "]"), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_false(f->batch.records[0].rejected);
    assert_true(f->batch.records[1].rejected);
    assert_int_equal(f->batch.records[1].line, 2);
    assert_non_null(strstr(f->batch.records[1].error, "item 2: malformed JSON"));
    assert_non_null(strstr(f->batch.records[1].error, "rest of the array was not read"));
    /* a missing comma */
    assert_int_equal(scan_body(f, "[" REC(1) " " REC(2) "]"), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_false(f->batch.records[0].rejected);
    assert_true(f->batch.records[1].rejected);
    assert_non_null(strstr(f->batch.records[1].error, "item 2"));
    /* trailing comma */
    assert_int_equal(scan_body(f, "[" REC(1) ",]"), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_true(f->batch.records[1].rejected);
    /* empty array: no records, not an error */
    assert_int_equal(scan_body(f, " [ ] "), MS_OK);
    assert_int_equal(f->batch.n, 0);
    /* text after the array */
    assert_int_equal(scan_body(f, "[" REC(1) "] x"), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_false(f->batch.records[0].rejected);
    assert_true(f->batch.records[1].rejected);
    assert_non_null(strstr(f->batch.records[1].error, "trailing text"));
}

static void test_body_single_object(void **state)
{
    fixture *f = *state;
    const char *pretty =
        "\n{\n  \"name\": \"" NAME "\",\n  \"dob\": \"" DOB "\",\n  \"note\": {\n    \"a\": [\n      1,\n"
        "      2\n    ]\n  }\n}\n\n";
    assert_int_equal(scan_body(f, pretty), MS_OK);
    assert_int_equal(f->batch.n, 1);
    parsed_record *r = &f->batch.records[0];
    expect_valid(r, "pretty-printed object");
    assert_int_equal(r->line, 2); /* its first line, after a blank one */
    assert_int_equal(r->body[0], '{');
    assert_int_equal(r->body[r->body_len - 1], '}');
    assert_span_equal(record_field_get(r, "note", 4)->val, record_field_get(r, "note", 4)->val_len,
                      "{\n    \"a\": [\n      1,\n      2\n    ]\n  }");
    /* one object on one line */
    assert_int_equal(scan_body(f, REC(1)), MS_OK);
    assert_int_equal(f->batch.n, 1);
    assert_false(f->batch.records[0].rejected);
}

/* An imported row without an id is named by (origin, physical line): the same row of the same file is the
 * same record on every run, equal rows on two lines are two records, and a body's line L stands for the
 * file's line origin_line + L - 1, so a row sent alone or inside a longer body gets one id. */
static void test_origin_record_id(void **state)
{
    fixture *f = *state;
    unsigned char origin[32], other[32];
    memset(origin, 0x11, sizeof origin);
    memset(other, 0x22, sizeof other);
    parsed_record by_content = scan(f, REC(1)); /* line 7, no origin */
    f->cfg.origin = origin;
    f->cfg.origin_line = 1;
    parsed_record a = scan(f, REC(1)); /* file line 7 */
    parsed_record a_again = scan(f, REC(1));
    parsed_record a_other_content = scan(f, REC(2)); /* same place, other content: same name (an edit) */
    expect_valid(&a, "a");
    assert_true(a.record_id_derived);
    assert_int_equal(a.record_id_len, 32);
    assert_span_equal(a_again.record_id, a_again.record_id_len, a.record_id);
    assert_span_equal(a_other_content.record_id, a_other_content.record_id_len, a.record_id);
    assert_string_not_equal(a.record_id, by_content.record_id);
    /* the same content on another line: another record */
    f->cfg.origin_line = 2; /* line 7 of the body is now the file's line 8 */
    parsed_record b = scan(f, REC(1));
    assert_string_not_equal(b.record_id, a.record_id);
    /* another file: another record */
    f->cfg.origin = other;
    f->cfg.origin_line = 1;
    parsed_record c = scan(f, REC(1));
    assert_string_not_equal(c.record_id, a.record_id);
    /* a body whose line 1 is the file's line 5: its line 3 is the file's line 7, which is a's */
    f->cfg.origin = origin;
    f->cfg.origin_line = 5;
    assert_int_equal(scan_body(f, REC(9) "\n\n" REC(1) "\n"), MS_OK);
    assert_int_equal(f->batch.n, 2);
    assert_int_equal(f->batch.records[1].line, 3);
    assert_span_equal(f->batch.records[1].record_id, f->batch.records[1].record_id_len, a.record_id);
    assert_string_not_equal(f->batch.records[0].record_id, a.record_id);
    /* the same when the row is the body's only one, after blank lines (an import blanks the rows it refused):
     * line 3, not 1 (it was 1, and the row got line 1's id and answer) */
    assert_int_equal(scan_body(f, "\n\n" REC(1) "\n"), MS_OK);
    assert_int_equal(f->batch.n, 1);
    assert_int_equal(f->batch.records[0].line, 3);
    assert_span_equal(f->batch.records[0].record_id, f->batch.records[0].record_id_len, a.record_id);
    /* a record with its own id keeps it */
    parsed_record own = scan(f, "{\"record_id\":\"r-1\",\"name\":\"" NAME "\",\"dob\":\"" DOB "\"}");
    expect_valid(&own, "own id");
    assert_false(own.record_id_derived);
    assert_span_equal(own.record_id, own.record_id_len, "r-1");
}

/* The event time given beside a record without one (a cluster seed's header, record_origin.h): as a body's,
 * in the years 1 to 9999, else the record is rejected. */
static void test_header_event_time(void **state)
{
    fixture *f = *state;
    const char *rec = "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\"}";
    const int64_t ok[] = {1600000000123456LL, -62135596800000000LL /* 0001-01-01T00:00:00Z */,
                          253402300799999999LL /* 9999-12-31T23:59:59.999999Z */, -1};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        f->cfg.default_ts_us = ok[i];
        parsed_record r = scan(f, rec);
        expect_valid(&r, "a header's event time");
        assert_true(r.ts_us == ok[i]);
    }
    const int64_t bad[] = {(int64_t)0x3205af3107a5e240ull /* the fuzzer's: year 116191 */, 253402300800000000LL,
                           -62135596800000001LL, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f->cfg.default_ts_us = bad[i];
        expect_reject(f, rec, "the event time given beside it (a message header)", "years 1 to 9999", NULL);
    }
    /* a body's own time is the record's, whatever the header says */
    parsed_record r = scan(f, "{\"name\":\"" NAME "\",\"dob\":\"" DOB "\",\"ts\":\"2024-05-06T07:08:09Z\"}");
    expect_valid(&r, "a body's event time");
    assert_true(r.ts_us == 1714979289000000LL);
}

static void test_body_empty(void **state)
{
    fixture *f = *state;
    assert_int_equal(scan_body(f, ""), MS_EINVAL);
    assert_int_equal(f->batch.n, 0);
    assert_int_equal(scan_body(f, " \r\n\t\n "), MS_EINVAL);
    assert_int_equal(f->batch.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_record_roles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fields_sorted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dob_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_id_type_ts_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_structure_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_field_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_derived_record_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_hash_boundaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_ndjson, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_byte_order_mark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_array, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_single_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_origin_record_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_event_time, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

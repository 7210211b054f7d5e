/*
 * test_json_scan.c - the validating JSON scanner (src/json_scan.h): valid documents and member spans,
 * every error class with its offset, the nesting limit, UTF-8 validation (also around the 8-byte fast
 * path of the string loop, exhaustively for every byte value at every offset), and string decoding.
 * An empty text given as (NULL, 0), as an empty file's buf is (buf_read_file): refused as empty input, without
 * the pointer arithmetic on NULL that UBSan reported (fuzz/fuzz_files.c, an empty import checkpoint file).
 *
 * Inputs are copied into exactly-sized heap buffers so that ASan catches any read past `end`.
 */
#include "unit.h"

#include "base/json_scan.h"

/* An exact-size heap copy of n bytes (no NUL after them): reading past the end is an ASan error. */
static char *exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* json_scan_object over an exact-size copy of s[0..n). The copy lives until the next call (members
 * point into it). */
static char *last_copy;
static int scan_n(const char *s, size_t n, json_member *m, int max, json_error *err)
{
    free(last_copy);
    last_copy = exact(s, n);
    return json_scan_object(last_copy, n, m, max, err);
}

static int scan(const char *s, json_error *err)
{
    json_member m[64];
    return scan_n(s, strlen(s), m, 64, err);
}

/* The input must be rejected with a message containing msg at byte offset off (off < 0: any offset). */
static void expect_error_n(const char *s, size_t n, const char *msg, long off)
{
    json_member m[64];
    json_error err;
    memset(&err, 0, sizeof err);
    int rc = scan_n(s, n, m, 64, &err);
    if (rc != -1) fail_msg("accepted (%d members): %.*s", rc, (int)n, s);
    if (!strstr(err.msg, msg)) fail_msg("message \"%s\" does not contain \"%s\" for: %.*s", err.msg, msg, (int)n, s);
    if (off >= 0 && err.offset != (size_t)off)
        fail_msg("offset %zu, expected %ld (\"%s\") for: %.*s", err.offset, off, err.msg, (int)n, s);
}

static void expect_error(const char *s, const char *msg, long off) { expect_error_n(s, strlen(s), msg, off); }

static void expect_ok(const char *s, int members)
{
    json_error err = {0};
    int rc = scan(s, &err);
    if (rc != members) fail_msg("expected %d members, got %d (%s at %zu) for: %s", members, rc, err.msg, err.offset, s);
}

/* ---- valid documents ---- */

static void test_valid_objects_and_spans(void **state)
{
    (void)state;
    expect_ok("{}", 0);
    expect_ok(" \t\r\n{ \t\r\n} \t\r\n", 0);

    const char *text =
        " { \"a\" : 1 ,\"bb\":\"x y\",\n\"o\":{\"p\":[1,2,{\"q\":null}]},\"t\":true,\"f\":false,\"n\":null,"
        "\"arr\":[ ],\"e\":\"\\u00e9\\n\"} ";
    size_t n = strlen(text);
    char *p = exact(text, n);
    json_member m[16];
    json_error err;
    int rc = json_scan_object(p, n, m, 16, &err);
    assert_int_equal(rc, 8);
    assert_span_equal(m[0].key, m[0].key_len, "a");
    assert_span_equal(m[0].val, m[0].val_len, "1");
    assert_int_equal(m[0].type, JSON_NUMBER);
    assert_false(m[0].key_escaped);
    assert_ptr_equal(m[0].key, p + 4); /* spans point into the scanned text */
    assert_span_equal(m[1].key, m[1].key_len, "bb");
    assert_span_equal(m[1].val, m[1].val_len, "\"x y\""); /* a string value includes its quotes */
    assert_int_equal(m[1].type, JSON_STRING);
    assert_span_equal(m[2].key, m[2].key_len, "o");
    assert_span_equal(m[2].val, m[2].val_len, "{\"p\":[1,2,{\"q\":null}]}");
    assert_int_equal(m[2].type, JSON_OBJECT);
    assert_int_equal(m[3].type, JSON_TRUE);
    assert_span_equal(m[3].val, m[3].val_len, "true");
    assert_int_equal(m[4].type, JSON_FALSE);
    assert_int_equal(m[5].type, JSON_NULL);
    assert_int_equal(m[6].type, JSON_ARRAY);
    assert_span_equal(m[6].val, m[6].val_len, "[ ]");
    assert_span_equal(m[7].val, m[7].val_len, "\"\\u00e9\\n\"");
    free(p);
}

static void test_key_escaped_flag(void **state)
{
    (void)state;
    json_member m[4];
    json_error err;
    const char *t1 = "{\"a\\\"b\":1,\"ab\":2,\"c\\u0064\":3}";
    char *p = exact(t1, strlen(t1));
    assert_int_equal(json_scan_object(p, strlen(t1), m, 4, &err), 3);
    assert_true(m[0].key_escaped);
    assert_span_equal(m[0].key, m[0].key_len, "a\\\"b"); /* raw, not decoded */
    assert_false(m[1].key_escaped);
    assert_true(m[2].key_escaped);
    free(p);
}

static void test_valid_numbers(void **state)
{
    (void)state;
    const char *ok[] = {"0",
                        "-0",
                        "1",
                        "-1",
                        "10",
                        "1.5",
                        "-1.5e10",
                        "1E+2",
                        "1e-2",
                        "0.0001",
                        "0e0",
                        "-0.0E-0",
                        "123456789012345678901234567890",
                        "1.7976931348623157e308"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char doc[128];
        snprintf(doc, sizeof doc, "{\"n\":%s}", ok[i]);
        json_member m[2];
        json_error err;
        int rc = scan_n(doc, strlen(doc), m, 2, &err);
        if (rc != 1) fail_msg("number %s rejected: %s", ok[i], err.msg);
        assert_int_equal(m[0].type, JSON_NUMBER);
        assert_span_equal(m[0].val, m[0].val_len, ok[i]);
    }
}

static void test_json_scan_value(void **state)
{
    (void)state;
    const char *t = "[1, \"two\", {\"three\": 3}] tail";
    char *p = exact(t, strlen(t));
    json_type type = JSON_NONE;
    json_error err;
    const char *q = json_scan_value(p, p, p + strlen(t), &type, &err);
    assert_non_null(q);
    assert_int_equal(type, JSON_ARRAY);
    assert_int_equal(q - p, 24);
    q = json_scan_value(p, p + 25, p + strlen(t), &type, &err); /* "tail" is not a value */
    assert_null(q);
    assert_int_equal(err.offset, 25);
    free(p);

    const char *s = "\"str\"";
    p = exact(s, 5);
    q = json_scan_value(p, p, p + 5, &type, &err);
    assert_ptr_equal(q, p + 5);
    assert_int_equal(type, JSON_STRING);
    free(p);
    assert_string_equal(json_type_name(JSON_OBJECT), "object");
    assert_string_equal(json_type_name(JSON_TRUE), "boolean");
    assert_string_equal(json_type_name(JSON_NULL), "null");
}

/* The string scanner's fast path (16 and 32 bytes a step) against what each string must give, for every
 * length up to 80 and every place of one byte that needs the slow path: the closing quote found where it
 * is, an escape or a UTF-8 sequence passed over, a control character or a bad UTF-8 byte reported at its
 * own offset, whatever block of the fast path it falls in. */
static void test_string_scan_at_every_offset(void **state)
{
    (void)state;
    char t[128];
    for (size_t len = 0; len <= 80; len++) {
        for (size_t k = 0; k <= len; k++) {
            for (int kind = 0; kind < 5; kind++) {
                size_t n = 0;
                t[n++] = '"';
                for (size_t i = 0; i < len; i++)
                    t[n++] = (char)('a' + i % 26);
                size_t at = 1 + k; /* where the special byte goes */
                size_t want_err = 0, extra = 0;
                const char *ins = NULL;
                switch (kind) {
                case 0:
                    ins = "\\n";
                    extra = 2;
                    break; /* an escape */
                case 1:
                    ins = "\xc3\xa9";
                    extra = 2;
                    break; /* é */
                case 2:
                    ins = "\x01";
                    want_err = at;
                    break; /* a control character */
                case 3:
                    ins = "\xff";
                    want_err = at;
                    break; /* not UTF-8 */
                case 4:
                    ins = "\\\"";
                    extra = 2;
                    break; /* an escaped quote */
                }
                size_t il = strlen(ins);
                memmove(t + at + il, t + at, n - at);
                memcpy(t + at, ins, il);
                n += il;
                t[n++] = '"';
                json_type type;
                json_error err = {0};
                const char *q = json_scan_value(t, t, t + n, &type, &err);
                if (want_err) {
                    assert_null(q);
                    assert_int_equal(err.offset, want_err);
                } else {
                    assert_non_null(q);
                    assert_int_equal(type, JSON_STRING);
                    assert_int_equal(q - t, (ptrdiff_t)(len + extra + 2));
                }
                /* and cut before its closing quote: unterminated, wherever the cut falls */
                if (!want_err) assert_null(json_scan_value(t, t, t + n - 1, &type, &err));
            }
        }
    }
}

static void test_skip_ws(void **state)
{
    (void)state;
    const char *t = " \t\r\n x";
    assert_ptr_equal(json_skip_ws(t, t + 6), t + 5);
    assert_ptr_equal(json_skip_ws(t, t + 3), t + 3);
    const char *v = "\v\f"; /* not JSON whitespace */
    assert_ptr_equal(json_skip_ws(v, v + 2), v);
}

/* ---- error classes ---- */

static void test_string_errors(void **state)
{
    (void)state;
    expect_error("{\"a\":\"abc", "unterminated string", 9);
    expect_error("{\"a\":\"abc\\", "unterminated escape", 9);
    expect_error("{\"abc", "unterminated string", 5);
    expect_error("{\"a\":\"ab\\x\"}", "bad escape", 8);
    expect_error("{\"a\":\"\\a\"}", "bad escape", 6);
    expect_error("{\"a\":\"\\U0041\"}", "bad escape", 6);
    expect_error("{\"a\":\"\\'\"}", "bad escape", 6);
    expect_error_n("{\"a\":\"\\\0\"}", 10, "bad escape", 6);
    expect_error("{\"a\":\"\\u12\"}", "\\u escape", 6);
    expect_error("{\"a\":\"\\u12G4\"}", "bad \\u escape", 6);
    expect_error("{\"a\":\"\\u12", "\\u escape", 6);
    /* lone surrogates */
    expect_error("{\"a\":\"\\ud800\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"\\uDBFF\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"\\udc00\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"x\\uDFFF\"}", "lone surrogate", 7);
    expect_error("{\"a\":\"\\ud800\\u0041\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"\\ud800\\ud800\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"\\ud800x\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"\\ud800\\n\"}", "lone surrogate", 6);
    expect_error("{\"a\":\"\\udc00\\ud800\"}", "lone surrogate", 6); /* reversed pair */
    /* control characters, raw */
    expect_error("{\"a\":\"a\x01"
                 "b\"}",
                 "control character", 7);
    expect_error("{\"a\":\"a\tb\"}", "control character", 7);
    expect_error("{\"a\":\"a\nb\"}", "control character", 7);
    expect_error("{\"a\":\"\x1f\"}", "control character", 6);
    expect_error_n("{\"a\":\"\0\"}", 9, "control character", 6);
    expect_error("{\"a\x02\":1}", "control character", 3);
    /* valid escapes all together, and DEL (0x7f) is not a control character in JSON */
    expect_ok("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\uD83D\\uDE00\x7f\"}", 1);
    expect_error("{\"a\":\"x\\u0000\"}", "NUL", 7); /* PostgreSQL cannot hold it: refused everywhere */
}

/* Numbers PostgreSQL's numeric cannot hold (jsonb: 131072 digits before the point, 16383 after) are
 * refused, so that every stored record can also be shipped there; the limits themselves are accepted. */
static void test_number_range(void **state)
{
    (void)state;
    expect_ok("{\"n\":1e131071}", 1);
    expect_ok("{\"n\":1e-16383}", 1);
    expect_ok("{\"n\":-12.5e99999}", 1);
    expect_ok("{\"n\":1E+300}", 1);
    expect_error("{\"n\":1e131072}", "out of range", 5);
    expect_error("{\"n\":12e131071}", "out of range", 5);
    expect_error("{\"n\":1e-16384}", "out of range", 5);
    expect_error("{\"n\":0.5e-16383}", "out of range", 5);
    expect_error("{\"n\":-1e99999999999999999999}", "out of range", 5); /* the exponent itself overflows */
    buf b = {0};
    buf_puts(&b, "{\"n\":0.");
    for (int i = 0; i < 16384; i++)
        buf_putc(&b, '1');
    buf_putc(&b, '}');
    expect_error_n(b.data, b.len, "out of range", 5);
    b.len -= 2; /* 16383 digits after the point: fine */
    buf_putc(&b, '}');
    json_member m[4];
    json_error err = {0};
    assert_int_equal(scan_n(b.data, b.len, m, 4, &err), 1);
    buf_free(&b);
}

static void test_number_errors(void **state)
{
    (void)state;
    expect_error("{\"a\":01}", "expected ',' or '}'", 6);
    expect_error("{\"a\":-01}", "expected ',' or '}'", 7);
    expect_error("{\"a\":00}", "expected ',' or '}'", 6);
    expect_error("{\"a\":1.}", "bad number", 5);
    expect_error("{\"a\":1.e5}", "bad number", 5);
    expect_error("{\"a\":-}", "bad number", 5);
    expect_error("{\"a\":-", "bad number", 5);
    expect_error("{\"a\":1e}", "bad number", 5);
    expect_error("{\"a\":1e+}", "bad number", 5);
    expect_error("{\"a\":1E-}", "bad number", 5);
    expect_error("{\"a\":1e", "bad number", 5);
    expect_error("{\"a\":-a}", "bad number", 5);
    expect_error("{\"a\":+1}", "unexpected character", 5);
    expect_error("{\"a\":.5}", "unexpected character", 5);
    expect_error("{\"a\":0x10}", "expected ',' or '}'", 6);
    expect_error("{\"a\":NaN}", "unexpected character", 5);
    expect_error("{\"a\":Infinity}", "unexpected character", 5);
    expect_error("{\"a\":-Infinity}", "bad number", 5);
    expect_error("{\"a\":1.5.5}", "expected ',' or '}'", 8);
}

/* An empty file's buf has no bytes at all (data NULL): json_scan_object(NULL, 0) is empty input, with no
 * arithmetic on the NULL pointer (found by fuzz/fuzz_files.c through checkpoint_file_load). */
static void test_empty_null_text(void **state)
{
    (void)state;
    json_member m[4];
    json_error err;
    assert_int_equal(json_scan_object(NULL, 0, m, 4, &err), -1);
    assert_string_equal(err.msg, "empty input");
    assert_int_equal(err.offset, 0);
}

static void test_structure_errors(void **state)
{
    (void)state;
    expect_error("", "empty input", 0);
    expect_error(" \n\t ", "empty input", 4);
    expect_error("{} x", "trailing text", 3);
    expect_error("{}{}", "trailing text", 2);
    expect_error("{\"a\":1} ,", "trailing text", 8);
    expect_error("{\"a\":1", "unexpected end of input", 6);
    expect_error("{\"a\":", "unexpected end of input", 5);
    expect_error("{\"a\"", "expected ':'", 4);
    expect_error("{\"a\" 1}", "expected ':'", 5);
    expect_error("{", "unexpected end of input", 1);
    expect_error("{,}", "expected a string key", 1);
    expect_error("{\"a\":1,}", "expected a string key", 7);
    expect_error("{'a':1}", "expected a string key", 1);
    expect_error("{a:1}", "expected a string key", 1);
    expect_error("{\"a\":1 \"b\":2}", "expected ',' or '}'", 7);
    expect_error("{\"a\":tru}", "unexpected character", 5);
    expect_error("{\"a\":nul", "unexpected character", 5);
    expect_error("{\"a\":True}", "unexpected character", 5);
    expect_error("{\"a\":[1,]}", "unexpected character", 8);
    expect_error("{\"a\":[1 2]}", "expected ',' or ']'", 8);
    expect_error("{\"a\":[1}", "expected ',' or ']'", 7);
    expect_error("{\"a\":{\"b\":1]}", "expected ',' or '}'", 11);
    expect_error("{\"a\":{1:2}}", "expected a string key", 6);
    expect_error("x", "expected '{'", 0);
    expect_error("[1,", "expected '{'", 0);
}

static void test_not_an_object(void **state)
{
    (void)state;
    expect_error("[1,2]", "not an object (a JSON array)", 0);
    expect_error("  \"s\" ", "not an object (a JSON string)", 2);
    expect_error("42", "not an object (a JSON number)", 0);
    expect_error("true", "not an object (a JSON boolean)", 0);
    expect_error("null", "not an object (a JSON null)", 0);
}

static void test_too_many_members(void **state)
{
    (void)state;
    json_member m[2];
    json_error err;
    const char *t = "{\"a\":1,\"b\":2,\"c\":3}";
    assert_int_equal(scan_n(t, strlen(t), m, 2, &err), -1);
    assert_non_null(strstr(err.msg, "too many fields"));
    json_member m3[3];
    assert_int_equal(scan_n(t, strlen(t), m3, 3, &err), 3);
}

/* Nesting: the outermost container is level 1. JSON_MAX_DEPTH levels are accepted, one more is not. */
static char *nested(int levels, bool arrays_inside_object)
{
    size_t cap = (size_t)levels * 8 + 32;
    char *s = malloc(cap);
    size_t o = 0;
    if (arrays_inside_object) {
        o += (size_t)sprintf(s + o, "{\"a\":");
        for (int i = 1; i < levels; i++)
            s[o++] = '[';
        for (int i = 1; i < levels; i++)
            s[o++] = ']';
        s[o++] = '}';
    } else {
        for (int i = 0; i < levels; i++)
            o += (size_t)sprintf(s + o, "{\"k\":");
        s[o++] = '1';
        for (int i = 0; i < levels; i++)
            s[o++] = '}';
    }
    s[o] = 0;
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    json_error err;
    for (int pass = 0; pass < 2; pass++) {
        char *ok = nested(JSON_MAX_DEPTH, pass == 0);
        int rc = scan_n(ok, strlen(ok), (json_member[1]){0}, 1, &err);
        if (rc != 1) fail_msg("%d levels rejected (%s)", JSON_MAX_DEPTH, err.msg);
        free(ok);
        char *deep = nested(JSON_MAX_DEPTH + 1, pass == 0);
        rc = scan_n(deep, strlen(deep), (json_member[1]){0}, 1, &err);
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err.msg, "nesting too deep"));
        free(deep);
    }
    /* hostile depth does not exhaust the stack */
    size_t n = 1000000;
    char *h = malloc(n + 8);
    memcpy(h, "{\"a\":", 5);
    memset(h + 5, '[', n);
    assert_int_equal(scan_n(h, n + 5, (json_member[1]){0}, 1, &err), -1);
    assert_non_null(strstr(err.msg, "nesting too deep"));
    /* json_scan_value: a bare array of JSON_MAX_DEPTH levels is fine, one more is not */
    memset(h, '[', JSON_MAX_DEPTH + 1);
    memset(h + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    json_type t;
    assert_non_null(json_scan_value(h + 1, h + 1, h + 1 + 2 * JSON_MAX_DEPTH, &t, &err));
    assert_null(json_scan_value(h, h, h + 2 * JSON_MAX_DEPTH + 2, &t, &err));
    assert_non_null(strstr(err.msg, "nesting too deep"));
    free(h);
}

/* ---- UTF-8 ---- */

typedef struct {
    const char *bytes;
    size_t n;
} seq;
#define SEQ(s)                                                                                                         \
    {                                                                                                                  \
        s, sizeof(s) - 1                                                                                               \
    }

static const seq bad_utf8[] = {
    SEQ("\xC0\x80"),         /* overlong NUL */
    SEQ("\xC1\xBF"),         /* overlong */
    SEQ("\xE0\x80\x80"),     /* overlong 3-byte */
    SEQ("\xE0\x9F\xBF"),     /* overlong 3-byte (U+07FF) */
    SEQ("\xF0\x80\x80\x80"), /* overlong 4-byte */
    SEQ("\xF0\x8F\xBF\xBF"), /* overlong 4-byte (U+FFFF) */
    SEQ("\xED\xA0\x80"),     /* surrogate U+D800 */
    SEQ("\xED\xBF\xBF"),     /* surrogate U+DFFF */
    SEQ("\xF4\x90\x80\x80"), /* U+110000 */
    SEQ("\xF5\x80\x80\x80"), /* F5+ never valid */
    SEQ("\xF8\x88\x80\x80\x80"),
    SEQ("\xFE"),
    SEQ("\xFF"),
    SEQ("\x80"), /* lone continuation */
    SEQ("\xBF"),
    SEQ("\xC3"),         /* truncated 2-byte */
    SEQ("\xE2\x82"),     /* truncated 3-byte */
    SEQ("\xF0\x9F\x98"), /* truncated 4-byte */
    SEQ("\xC3\x28"),     /* bad continuation */
    SEQ("\xE2\x28\xA1"),
    SEQ("\xF0\x9F\x28\x80"),
};

static const seq good_utf8[] = {
    SEQ("\xC2\x80"),         SEQ("\xC3\xA9"),         SEQ("\xDF\xBF"),         SEQ("\xE0\xA0\x80"),
    SEQ("\xE2\x82\xAC"),     SEQ("\xED\x9F\xBF"),     SEQ("\xEE\x80\x80"),     SEQ("\xEF\xBF\xBF"),
    SEQ("\xF0\x90\x80\x80"), SEQ("\xF0\x9F\x98\x80"), SEQ("\xF4\x8F\xBF\xBF"),
};

static void test_utf8_check(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        char buf[32];
        memcpy(buf, "ab", 2);
        memcpy(buf + 2, bad_utf8[i].bytes, bad_utf8[i].n);
        char *p = exact(buf, 2 + bad_utf8[i].n); /* the bad sequence ends the buffer */
        size_t off = utf8_check(p, 2 + bad_utf8[i].n);
        free(p);
        if (off != 2) fail_msg("bad sequence %zu: utf8_check returned %zu, expected 2", i, off);
    }
    for (size_t i = 0; i < sizeof good_utf8 / sizeof good_utf8[0]; i++) {
        char *p = exact(good_utf8[i].bytes, good_utf8[i].n);
        size_t off = utf8_check(p, good_utf8[i].n);
        free(p);
        if (off != good_utf8[i].n) fail_msg("good sequence %zu rejected at %zu", i, off);
    }
    assert_int_equal(utf8_check("", 0), 0);
    assert_int_equal(utf8_check("plain", 5), 5);
}

/* Invalid UTF-8 in a string value, at every offset 0..16 of a long string and at the very end of the
 * buffer; in a key as well. */
static void test_invalid_utf8_in_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        for (size_t off = 0; off <= 16; off++) {
            char doc[128];
            size_t o = 0;
            memcpy(doc, "{\"k\":\"", 6);
            o = 6;
            memset(doc + o, 'x', off);
            o += off;
            size_t bad_at = o;
            memcpy(doc + o, bad_utf8[i].bytes, bad_utf8[i].n);
            o += bad_utf8[i].n;
            memset(doc + o, 'y', 20);
            o += 20;
            memcpy(doc + o, "\"}", 2);
            o += 2;
            expect_error_n(doc, o, "invalid UTF-8", (long)bad_at);
            /* the same bytes in a key */
            memcpy(doc, "{\"", 2);
            memset(doc + 2, 'x', off);
            memcpy(doc + 2 + off, bad_utf8[i].bytes, bad_utf8[i].n);
            size_t ko = 2 + off + bad_utf8[i].n;
            memcpy(doc + ko, "\":1}", 4);
            expect_error_n(doc, ko + 4, "invalid UTF-8", (long)(2 + off));
        }
        /* truncated right at the end of the input */
        char doc[64];
        memcpy(doc, "{\"k\":\"abcdefghij", 16);
        memcpy(doc + 16, bad_utf8[i].bytes, bad_utf8[i].n);
        json_error err;
        assert_int_equal(scan_n(doc, 16 + bad_utf8[i].n, (json_member[1]){0}, 1, &err), -1);
    }
    for (size_t i = 0; i < sizeof good_utf8 / sizeof good_utf8[0]; i++) {
        for (size_t off = 0; off <= 16; off++) {
            char doc[128];
            memcpy(doc, "{\"k\":\"", 6);
            memset(doc + 6, 'x', off);
            memcpy(doc + 6 + off, good_utf8[i].bytes, good_utf8[i].n);
            size_t o = 6 + off + good_utf8[i].n;
            memset(doc + o, 'y', 20);
            memcpy(doc + o + 20, "\"}", 2);
            json_error err;
            int rc = scan_n(doc, o + 22, (json_member[1]){0}, 1, &err);
            if (rc != 1) fail_msg("valid sequence %zu at offset %zu rejected: %s at %zu", i, off, err.msg, err.offset);
        }
    }
}

/* The fast path of the string loop checks 8 bytes at a time. Put each kind of special byte at every
 * offset 0..16 of a long string and check the scanner sees it. */
static void test_fast_path_offsets(void **state)
{
    (void)state;
    struct {
        const char *ins;
        size_t n;
        int valid;       /* 1: the document is valid */
        const char *msg; /* else: the expected error */
    } cases[] = {
        {"\\\"", 2, 1, NULL},
        {"\\\\", 2, 1, NULL},
        {"\\/", 2, 1, NULL},
        {"\\n", 2, 1, NULL},
        {"\\u00e9", 6, 1, NULL},
        {"\\ud83d\\ude00", 12, 1, NULL},
        {"\xC3\xA9", 2, 1, NULL},
        {"\xE2\x82\xAC", 3, 1, NULL},
        {"\xF0\x9F\x98\x80", 4, 1, NULL},
        {"\x7f", 1, 1, NULL},
        {" ", 1, 1, NULL},
        {"\x01", 1, 0, "control character"},
        {"\x1f", 1, 0, "control character"},
        {"\t", 1, 0, "control character"},
        {"\x80", 1, 0, "invalid UTF-8"},
        {"\xFF", 1, 0, "invalid UTF-8"},
        {"\\x", 2, 0, "bad escape"},
        {"\"", 1, 0, "expected ',' or '}'"}, /* the string ends early; the filler that follows is garbage */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t off = 0; off <= 16; off++) {
            for (size_t tail = 0; tail <= 9; tail += 3) {
                char doc[128];
                memcpy(doc, "{\"k\":\"", 6);
                memset(doc + 6, 'a', off);
                size_t at = 6 + off;
                memcpy(doc + at, cases[c].ins, cases[c].n);
                size_t o = at + cases[c].n;
                memset(doc + o, 'b', tail + 17);
                o += tail + 17;
                memcpy(doc + o, "\"}", 2);
                o += 2;
                json_member m[1];
                json_error err = {0};
                int rc = scan_n(doc, o, m, 1, &err);
                if (cases[c].valid) {
                    if (rc != 1)
                        fail_msg("case %zu at offset %zu (tail %zu) rejected: %s at %zu", c, off, tail, err.msg,
                                 err.offset);
                    assert_int_equal(m[0].val_len, o - 1 - 5);
                } else {
                    if (rc != -1) fail_msg("case %zu at offset %zu (tail %zu) accepted", c, off, tail);
                    if (!strstr(err.msg, cases[c].msg))
                        fail_msg("case %zu at offset %zu: \"%s\", expected \"%s\"", c, off, err.msg, cases[c].msg);
                    if (cases[c].msg[0] != 'e' && err.offset != at)
                        fail_msg("case %zu at offset %zu: error offset %zu, expected %zu", c, off, err.offset, at);
                }
            }
        }
    }
    /* the closing quote at every offset: strings of length 0..40 */
    for (size_t len = 0; len <= 40; len++) {
        char doc[64];
        memcpy(doc, "{\"k\":\"", 6);
        memset(doc + 6, 'z', len);
        memcpy(doc + 6 + len, "\"}", 2);
        json_member m[1];
        json_error err;
        assert_int_equal(scan_n(doc, 8 + len, m, 1, &err), 1);
        assert_int_equal(m[0].val_len, len + 2);
        /* and unterminated at every length: no read past the end */
        assert_int_equal(scan_n(doc, 6 + len, m, 1, &err), -1);
        assert_non_null(strstr(err.msg, "unterminated string"));
        assert_int_equal(err.offset, 6 + len);
    }
}

/* Every byte value at every offset 0..15 of a 32-byte string body, with neighbours of both extremes:
 * the 8-byte test must agree with a byte-at-a-time reference. */
static void test_fast_path_every_byte(void **state)
{
    (void)state;
    const unsigned char fillers[] = {'a', 0x7e, 0x20, 0x21, 0x7f, '0'};
    for (size_t fi = 0; fi < sizeof fillers; fi++) {
        for (unsigned b = 0; b < 256; b++) {
            for (size_t off = 0; off < 16; off++) {
                char doc[64];
                memcpy(doc, "{\"k\":\"", 6);
                memset(doc + 6, fillers[fi], 32);
                doc[6 + off] = (char)b;
                memcpy(doc + 38, "\"}", 2);
                json_member m[1];
                json_error err = {0};
                int rc = scan_n(doc, 40, m, 1, &err);
                bool want_ok = b >= 0x20 && b < 0x80 && b != '"' && b != '\\';
                if (want_ok != (rc == 1))
                    fail_msg("byte 0x%02x at offset %zu among 0x%02x: rc %d (%s)", b, off, fillers[fi], rc, err.msg);
                if (!want_ok && b != '"' && err.offset != 6 + off)
                    fail_msg("byte 0x%02x at offset %zu: error at %zu", b, off, err.offset);
            }
        }
    }
}

/* Independent UTF-8 reference: the length of the valid sequence at s (lead byte >= 0x80), or 0. */
static size_t ref_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp;
    size_t len;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* A byte-at-a-time reference for a string body (text between the quotes, no quote inside): valid? */
static bool ref_string_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x20 || c == '"') return false;
        if (c == '\\') {
            if (i + 1 >= n || !strchr("\"\\/bfnrt", s[i + 1]) || s[i + 1] == 0) return false;
            i += 2;
            continue;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = ref_utf8_len(s + i, n - i);
        if (len == 0) return false;
        i += len;
    }
    return true;
}

/* Random strings over an alphabet rich in special bytes, compared with the reference. */
static void test_fast_path_random_differential(void **state)
{
    (void)state;
    const unsigned char alphabet[] = {'a',  'b',  ' ',  '~',  0x7f, 0x1f, 0x01, '\\', 'n',  't',  0xC3, 0xA9, 0xE2,
                                      0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xA0, 0xC0, 0xFF, '/',  'u'};
    unit_rng rng = {12345};
    for (int it = 0; it < 20000; it++) {
        unsigned char body[48];
        size_t n = unit_below(&rng, 40);
        for (size_t i = 0; i < n; i++) {
            body[i] = alphabet[unit_below(&rng, sizeof alphabet)];
            if (body[i] == '\\' && i + 1 < n) body[++i] = (unsigned char)"\\\"/bfnrtx"[unit_below(&rng, 9)];
        }
        char doc[64];
        memcpy(doc, "{\"k\":\"", 6);
        memcpy(doc + 6, body, n);
        memcpy(doc + 6 + n, "\"}", 2);
        /* the reference cannot judge an escaped quote at the end; only bodies without a bare '"' */
        bool ref = ref_string_ok(body, n);
        json_member m[1];
        json_error err;
        int rc = scan_n(doc, n + 8, m, 1, &err);
        if (ref != (rc == 1)) {
            char hexs[200];
            size_t o = 0;
            for (size_t i = 0; i < n; i++)
                o += (size_t)snprintf(hexs + o, sizeof hexs - o, "%02x", body[i]);
            fail_msg("iteration %d: reference %d, scanner %d (%s) for body %s", it, ref, rc, err.msg, hexs);
        }
    }
}

/* json_split_object finds the same members as json_scan_object in text that passed it (random objects of
 * strings with escapes, numbers, literals, nested containers), and on any bytes never reads outside them
 * (ASan would say). */
static void test_split_agrees_with_scan(void **state)
{
    (void)state;
    static const char *const values[] = {"\"plain\"",
                                         "\"q\\\"uote\\\\\"",
                                         "\"\\\\\"",
                                         "12",
                                         "-3.5e7",
                                         "true",
                                         "false",
                                         "null",
                                         "{}",
                                         "[]",
                                         "{\"a\":[1,{\"b\":\"}\"}],\"c\":\"]\"}",
                                         "[\"x\\\"]\",[]]",
                                         "\""
                                         "\xc3\xa9"
                                         "\""};
    unit_rng rng = {777};
    for (int it = 0; it < 5000; it++) {
        char doc[2048];
        size_t n = 0;
        int want = (int)unit_below(&rng, 8);
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s{", unit_below(&rng, 2) ? " " : "");
        for (int i = 0; i < want; i++)
            n += (size_t)snprintf(doc + n, sizeof doc - n, "%s\"k%d%s\"%s:%s%s", i ? "," : "", i,
                                  unit_below(&rng, 4) ? "" : "\\n", unit_below(&rng, 2) ? " " : "",
                                  unit_below(&rng, 2) ? " " : "",
                                  values[unit_below(&rng, sizeof values / sizeof values[0])]);
        n += (size_t)snprintf(doc + n, sizeof doc - n, "}\n");
        json_member a[8], b[8];
        json_error err;
        int na = json_scan_object(doc, n, a, 8, &err);
        if (na != want) fail_msg("iteration %d: the scanner refused %s: %s", it, doc, err.msg);
        char *copy = exact(doc, n);
        int nb = json_split_object(copy, n, b, 8);
        assert_int_equal(nb, na);
        for (int i = 0; i < na; i++) {
            assert_int_equal(b[i].key_len, a[i].key_len);
            assert_int_equal(b[i].key - copy, a[i].key - doc);
            assert_int_equal(b[i].key_escaped, a[i].key_escaped);
            assert_int_equal(b[i].val - copy, a[i].val - doc);
            assert_int_equal(b[i].val_len, a[i].val_len);
            assert_int_equal(b[i].type, a[i].type);
        }
        free(copy);
        /* any prefix of it: no read outside */
        size_t cut = unit_below(&rng, (uint32_t)n + 1);
        copy = exact(doc, cut);
        json_split_object(copy, cut, b, 8);
        free(copy);
    }
    const char *bad[] = {"", "[1]", "{\"", "{\"a", "{\"a\"", "{\"a\":", "{\"a\":\"x", "{\"a\":[1,2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *copy = exact(bad[i], strlen(bad[i]));
        json_member m[4];
        assert_true(json_split_object(copy, strlen(bad[i]), m, 4) < 0);
        free(copy);
    }
}

/* ---- decoding ---- */

static void check_decode(const char *raw, const char *want, size_t want_len)
{
    size_t n = strlen(raw);
    char *in = exact(raw, n);
    char out[128];
    size_t got = json_string_decode(in, n, out);
    free(in);
    if (got != want_len || memcmp(out, want, want_len) != 0) fail_msg("decoding %s: got %zu bytes", raw, got);
}

static void test_string_decode(void **state)
{
    (void)state;
    check_decode("plain text", "plain text", 10);
    check_decode("", "", 0);
    check_decode("a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti", "a\"b\\c/d\be\ff\ng\rh\ti", 17);
    check_decode("\\u0041\\u00e9\\u00C9", "A\xC3\xA9\xC3\x89", 5);
    check_decode("\\u20AC", "\xE2\x82\xAC", 3);
    check_decode("\\uffff", "\xEF\xBF\xBF", 3);
    check_decode("\\u07ff\\u0800", "\xDF\xBF\xE0\xA0\x80", 5);
    check_decode("\\ud83d\\ude00", "\xF0\x9F\x98\x80", 4);
    check_decode("x\\uD800\\uDC00y", "x\xF0\x90\x80\x80y", 6);
    check_decode("\\uDBFF\\uDFFF", "\xF4\x8F\xBF\xBF", 4);
    check_decode("a\\u0000b", "a\0b", 3);
    check_decode("\xC3\xA9\\n", "\xC3\xA9\n", 3);
    /* decoding never grows: the worst case is \u0800 (6 bytes -> 3) and plain text (same size) */
    const char *raw = "\\u0800\\u0800";
    char out[12];
    assert_int_equal(json_string_decode(raw, 12, out), 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_objects_and_spans),
        cmocka_unit_test(test_split_agrees_with_scan),
        cmocka_unit_test(test_key_escaped_flag),
        cmocka_unit_test(test_valid_numbers),
        cmocka_unit_test(test_json_scan_value),
        cmocka_unit_test(test_string_scan_at_every_offset),
        cmocka_unit_test(test_skip_ws),
        cmocka_unit_test(test_string_errors),
        cmocka_unit_test(test_number_errors),
        cmocka_unit_test(test_number_range),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_too_many_members),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_utf8_check),
        cmocka_unit_test(test_invalid_utf8_in_strings),
        cmocka_unit_test(test_fast_path_offsets),
        cmocka_unit_test(test_fast_path_every_byte),
        cmocka_unit_test(test_fast_path_random_differential),
        cmocka_unit_test(test_string_decode),
        cmocka_unit_test(test_empty_null_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

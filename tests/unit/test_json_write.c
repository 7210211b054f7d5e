/*
 * test_json_write.c - jw_string (src/base/json_write.c), the one way text becomes a JSON string in every
 * answer, export and event: escapes, valid UTF-8 copied as it is, each byte of invalid UTF-8 replaced by
 * U+FFFD; known answers, then random texts of ASCII, valid and broken sequences against a byte-at-a-time
 * model written here from RFC 3629. The model is the check of the run-by-run form that replaced a check of
 * the whole rest of the string at every non-ASCII run (quadratic: 300 KB of "éa" took 35 s).
 */
#include "unit.h"

#include "base/json_write.h"

static void expect(const char *in, size_t n, const char *want)
{
    char *copy = malloc(n ? n : 1); /* exact size: ASan sees a read past it */
    memcpy(copy, in, n);
    buf b = {0};
    jw_string(&b, copy, n);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
    free(copy);
}

static void test_known_answers(void **state)
{
    (void)state;
    expect("", 0, "\"\"");
    expect("a\"b\\c\n\r\t\x01\x1f", 10, "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001f\"");
    expect("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""); /* 2 and 4 bytes */
    expect("\x80z", 2, "\"\xef\xbf\xbdz\"");                                        /* lone continuation */
    expect("\xc3z", 2, "\"\xef\xbf\xbdz\"");                                        /* cut short by ASCII */
    expect("z\xc3", 2, "\"z\xef\xbf\xbd\"");                                        /* cut short by the end */
    expect("\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");                          /* overlong */
    expect("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");          /* a surrogate */
    expect("\xc3\xa9\xff\xc3\xa9", 5, "\"\xc3\xa9\xef\xbf\xbd\xc3\xa9\"");          /* good, bad, good */
}

/* The length of the valid UTF-8 sequence at s (RFC 3629: no overlong form, no surrogate, <= U+10FFFF), 0 if
 * there is none; n bytes are left. */
static size_t model_seq(const unsigned char *s, size_t n)
{
    size_t need = s[0] >= 0xF0 && s[0] <= 0xF4   ? 4
                  : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
                  : s[0] >= 0xC2 && s[0] <= 0xDF ? 2
                                                 : 0;
    if (!need || n < need) return 0;
    uint32_t cp = s[0] & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need;
}

static void model(buf *out, const unsigned char *s, size_t n)
{
    buf_putc(out, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t k = model_seq(s + i, n - i);
            if (k)
                buf_put(out, s + i, k);
            else
                buf_puts(out, "\xef\xbf\xbd");
            i += k ? k : 1;
            continue;
        }
        i++;
        if (c == '"' || c == '\\') {
            buf_putc(out, '\\');
            buf_putc(out, (char)c);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            buf_putc(out, '\\');
            buf_putc(out, c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        } else if (c < 0x20) {
            buf_printf(out, "\\u%04x", c);
        } else {
            buf_putc(out, (char)c);
        }
    }
    buf_putc(out, '"');
}

static void test_random_texts_against_the_model(void **state)
{
    (void)state;
    static const char *const pieces[] = {
        "a",    "\"",   "\\",       "\n",           "\x02",     "\xc3\xa9",     "\xe2\x82\xac",     "\xf0\x9f\x98\x80",
        "\x80", "\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xc0\x80", "\xed\xb0\x80", "\xf4\x90\x80\x80", "\xff",
        "\xfe"};
    unit_rng r = {23};
    buf in = {0}, got = {0}, want = {0};
    for (int t = 0; t < 20000; t++) {
        in.len = got.len = want.len = 0;
        uint32_t k = unit_below(&r, 40);
        for (uint32_t i = 0; i < k; i++)
            buf_puts(&in, pieces[unit_below(&r, sizeof pieces / sizeof pieces[0])]);
        char *copy = malloc(in.len ? in.len : 1);
        memcpy(copy, in.data, in.len);
        jw_string(&got, copy, in.len);
        model(&want, (const unsigned char *)copy, in.len);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, got.len);
        free(copy);
    }
    buf_free(&in);
    buf_free(&got);
    buf_free(&want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_random_texts_against_the_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_sink_postgres.c - the pure part of the PostgreSQL sink: COPY text escaping (src/sink_postgres.h).
 * The sink itself runs against a real PostgreSQL in tests/e2e/test_postgres.py.
 */
#include "unit.h"

#include "sinks/sink_postgres.h"

static void expect_escaped(const char *in, size_t n, const char *want)
{
    buf b = {0};
    pg_copy_escape(&b, in, n);
    if (b.len != strlen(want) || memcmp(b.data, want, b.len) != 0)
        fail_msg("escape of %zu bytes gave \"%.*s\", want \"%s\"", n, (int)b.len, b.data ? b.data : "", want);
    buf_free(&b);
}

static void test_copy_escape_specials(void **state)
{
    (void)state;
    expect_escaped("", 0, "");
    expect_escaped("plain {\"a\":1}", 13, "plain {\"a\":1}");
    expect_escaped("a\\b", 3, "a\\\\b");         /* a JSON escape's backslash doubles */
    expect_escaped("\t\n\r", 3, "\\t\\n\\r");    /* column and row separators never appear raw */
    expect_escaped("\\\\\\", 3, "\\\\\\\\\\\\"); /* runs of backslashes */
    expect_escaped("x\ty", 3, "x\\ty");
    expect_escaped("\\N", 2, "\\\\N"); /* data that looks like COPY's NULL marker stays data */
}

/* Decoding the escaped text the way COPY does gives back the input, for random bytes. */
static void test_copy_escape_round_trip(void **state)
{
    (void)state;
    unit_rng rng = {20261122};
    for (int round = 0; round < 2000; round++) {
        char in[64];
        size_t n = unit_below(&rng, sizeof in);
        static const char alphabet[] = "ab\\\t\n\r\"{}N";
        for (size_t i = 0; i < n; i++)
            in[i] = alphabet[unit_below(&rng, sizeof alphabet - 1)];
        buf b = {0};
        pg_copy_escape(&b, in, n);
        char out[64];
        size_t m = 0;
        for (size_t i = 0; i < b.len; i++) {
            assert_true(b.data[i] != '\t' && b.data[i] != '\n' && b.data[i] != '\r');
            char c = b.data[i];
            if (c == '\\') {
                assert_true(i + 1 < b.len);
                char d = b.data[++i];
                c = d == 't' ? '\t' : d == 'n' ? '\n' : d == 'r' ? '\r' : d;
                assert_true(d == 't' || d == 'n' || d == 'r' || d == '\\');
            }
            assert_true(m < sizeof out);
            out[m++] = c;
        }
        assert_int_equal(m, n);
        assert_memory_equal(out, in, n);
        buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_escape_specials),
        cmocka_unit_test(test_copy_escape_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

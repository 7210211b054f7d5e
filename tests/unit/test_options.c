/*
 * test_options.c - the table-driven command line parser (src/options.h): defaults, both value forms,
 * repeatable options, and errors that name the flag.
 */
#include "unit.h"

#include "base/options.h"

typedef struct {
    const char *data;
    uint64_t size;
    long n;
    bool flag;
    opt_list cfg;
} parsed;

static int parse(parsed *p, char **argv, int argc, const char **pos, int maxpos, char *err)
{
    memset(p, 0, sizeof *p);
    const option opts[] = {
        {"--data", OPT_STRING, NULL, true, "dir", &p->data},
        {"--size", OPT_BYTES, "1MiB", false, "bytes", &p->size},
        {"--n", OPT_INT, "7", false, "count", &p->n},
        {"--flag", OPT_FLAG, NULL, false, "on", &p->flag},
        {"--config", OPT_LIST, NULL, false, "k=v", &p->cfg},
        {0},
    };
    return options_parse(opts, argc, argv, 1, pos, maxpos, err, 256);
}

static void test_defaults_and_forms(void **state)
{
    (void)state;
    parsed p;
    char err[256];
    const char *pos[2];
    char *a1[] = {"cmd", "--data", "/d", "x", "--n=12"};
    assert_int_equal(parse(&p, a1, 5, pos, 2, err), 1);
    assert_string_equal(p.data, "/d");
    assert_string_equal(pos[0], "x");
    assert_int_equal(p.n, 12);
    assert_int_equal(p.size, 1024 * 1024); /* the default */
    assert_false(p.flag);
    assert_int_equal(p.cfg.n, 0);
    assert_null(p.cfg.v[0]);
    char *a2[] = {"cmd", "--data=/e", "--size", "64K", "--flag"};
    assert_int_equal(parse(&p, a2, 5, pos, 0, err), 0);
    assert_string_equal(p.data, "/e");
    assert_int_equal(p.size, 65536);
    assert_true(p.flag);
}

static void test_repeatable_list(void **state)
{
    (void)state;
    parsed p;
    char err[256];
    char *a[] = {"cmd", "--data", "/d", "--config", "security.protocol=SASL_SSL", "--config=sasl.mechanism=PLAIN",
                 "--config", "a=b;c=d"};
    assert_int_equal(parse(&p, a, 8, NULL, 0, err), 0);
    assert_int_equal(p.cfg.n, 3);
    assert_string_equal(p.cfg.v[0], "security.protocol=SASL_SSL");
    assert_string_equal(p.cfg.v[1], "sasl.mechanism=PLAIN"); /* only the first '=' ends the flag name */
    assert_string_equal(p.cfg.v[2], "a=b;c=d");              /* taken whole, never split */
    assert_null(p.cfg.v[3]);
    /* one more than the limit is refused, naming the flag */
    char *many[2 + 2 * OPT_LIST_MAX + 4];
    int n = 0;
    many[n++] = "cmd", many[n++] = "--data", many[n++] = "/d";
    for (int i = 0; i <= OPT_LIST_MAX; i++)
        many[n++] = "--config", many[n++] = "k=v";
    assert_int_equal(parse(&p, many, n, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--config"));
}

static void test_errors_name_the_flag(void **state)
{
    (void)state;
    parsed p;
    char err[256];
    char *missing[] = {"cmd", "--n", "3"};
    assert_int_equal(parse(&p, missing, 3, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--data is required"));
    char *bad_int[] = {"cmd", "--data", "/d", "--n", "3x"};
    assert_int_equal(parse(&p, bad_int, 5, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--n"));
    char *bad_size[] = {"cmd", "--data", "/d", "--size", "12Q"};
    assert_int_equal(parse(&p, bad_size, 5, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--size"));
    char *no_value[] = {"cmd", "--data", "/d", "--config"};
    assert_int_equal(parse(&p, no_value, 4, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--config needs a value"));
    char *unknown[] = {"cmd", "--data", "/d", "--nope=1"};
    assert_int_equal(parse(&p, unknown, 4, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--nope"));
    char *flag_value[] = {"cmd", "--data", "/d", "--flag=yes"};
    assert_int_equal(parse(&p, flag_value, 4, NULL, 0, err), -1);
    assert_non_null(strstr(err, "--flag takes no value"));
    char *extra[] = {"cmd", "--data", "/d", "stray"};
    assert_int_equal(parse(&p, extra, 4, NULL, 0, err), -1);
    assert_non_null(strstr(err, "stray"));
    char *help[] = {"cmd", "--help"};
    assert_int_equal(parse(&p, help, 2, NULL, 0, err), -2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_forms),
        cmocka_unit_test(test_repeatable_list),
        cmocka_unit_test(test_errors_name_the_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

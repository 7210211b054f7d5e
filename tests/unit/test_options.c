/*
 * test_options.c - the option model (src/base/options.h): defaults, both value forms, repeatable options,
 * every type with its range and the messages that name the option and what it accepts; tables checked
 * by their own defaults; the config file (comments, blanks, CRLF, repeated keys, the command line over
 * it) and its refusals naming the file, the line and the key; --help and the Markdown reference.
 */
#include "unit.h"

#include "base/options.h"

typedef struct {
    const char *data;
    uint64_t size, n, ttl, linger;
    double share;
    int mode;
    bool flag;
    opt_list cfg;
} parsed;

static const char *const modes[] = {"periods", "trigger", "auto", NULL};

/* A table of every type; with_config adds `--config FILE`. */
static void table(parsed *p, option *opts, bool with_config)
{
    /* clang-format off */
    const option all[] = {
        {.name = "--data", .type = OPT_STRING, .target = &p->data, .required = true, .metavar = "DIR", .help = "dir"},
        {.name = "--size", .type = OPT_BYTES, .target = &p->size, .def = "1MiB", .min = 64, .max = 1 << 30,
         .help = "bytes"},
        {.name = "--n", .type = OPT_UINT, .target = &p->n, .def = "7", .min = 1, .max = 100, .help = "count"},
        {.name = "--ttl", .type = OPT_SECONDS, .target = &p->ttl, .def = "3600", .min = 1, .max = 86400,
         .help = "seconds"},
        {.name = "--linger", .type = OPT_MILLIS, .target = &p->linger, .def = "50", .max = 60000, .help = "ms"},
        {.name = "--share", .type = OPT_SHARE, .target = &p->share, .def = "0.5", .help = "share"},
        {.name = "--mode", .type = OPT_ENUM, .target = &p->mode, .def = "auto", .choices = modes, .help = "mode"},
        {.name = "--flag", .type = OPT_FLAG, .target = &p->flag, .help = "on"},
        {.name = "--kafka-config", .type = OPT_LIST, .target = &p->cfg, .metavar = "K=V", .help = "k=v"},
        {.name = "--config", .type = OPT_CONFIG, .help = "file"},
        {0},
    };
    /* clang-format on */
    size_t n = sizeof all / sizeof all[0];
    memcpy(opts, all, sizeof all);
    if (!with_config) opts[n - 2] = (option){0};
}

static options_status parse(parsed *p, char **argv, int argc, int maxpos, options_args *a)
{
    option opts[11];
    memset(p, 0x5a, sizeof *p); /* every target is set by the parse, whatever it held */
    table(p, opts, true);
    options_status st = options_parse(opts, argc, argv, 1, maxpos, a);
    return st;
}

/* The usage error of argv (freed), as a static string for asserts. */
static const char *refusal(char **argv, int argc)
{
    static char msg[512];
    parsed p;
    options_args a;
    options_status st = parse(&p, argv, argc, 0, &a);
    snprintf(msg, sizeof msg, "%s", st == OPTIONS_USAGE ? a.err : "(accepted)");
    options_args_free(&a);
    return msg;
}

static void test_defaults_and_forms(void **state)
{
    (void)state;
    parsed p;
    options_args a;
    char *a1[] = {"cmd", "--data", "/d", "x", "--n=12"};
    assert_int_equal(parse(&p, a1, 5, 2, &a), OPTIONS_OK);
    assert_int_equal(a.npos, 1);
    assert_string_equal(a.pos[0], "x");
    assert_string_equal(p.data, "/d");
    assert_int_equal(p.n, 12);
    assert_int_equal(p.size, 1024 * 1024); /* the defaults */
    assert_int_equal(p.ttl, 3600);
    assert_int_equal(p.linger, 50);
    assert_true(p.share == 0.5);
    assert_int_equal(p.mode, 2);
    assert_false(p.flag);
    assert_int_equal(p.cfg.n, 0);
    assert_null(p.cfg.v[0]);
    options_args_free(&a);
    char *a2[] = {"cmd", "--data=/e", "--size", "64K", "--flag", "--", "--n"};
    assert_int_equal(parse(&p, a2, 7, 1, &a), OPTIONS_OK);
    assert_string_equal(p.data, "/e");
    assert_int_equal(p.size, 65536);
    assert_true(p.flag);
    assert_string_equal(a.pos[0], "--n"); /* after --, an argument is positional */
    options_args_free(&a);
}

static void test_repeatable_list(void **state)
{
    (void)state;
    parsed p;
    options_args a;
    char *argv[] = {"cmd",
                    "--data",
                    "/d",
                    "--kafka-config",
                    "security.protocol=SASL_SSL",
                    "--kafka-config=sasl.mechanism=PLAIN",
                    "--kafka-config",
                    "a=b;c=d"};
    assert_int_equal(parse(&p, argv, 8, 0, &a), OPTIONS_OK);
    assert_int_equal(p.cfg.n, 3);
    assert_string_equal(p.cfg.v[0], "security.protocol=SASL_SSL");
    assert_string_equal(p.cfg.v[1], "sasl.mechanism=PLAIN"); /* only the first '=' ends the flag name */
    assert_string_equal(p.cfg.v[2], "a=b;c=d");              /* taken whole, never split */
    assert_null(p.cfg.v[3]);
    options_args_free(&a);
    /* one more than the limit is refused, naming the option */
    char *many[3 + 2 * (OPT_LIST_MAX + 1)];
    int n = 0;
    many[n++] = "cmd", many[n++] = "--data", many[n++] = "/d";
    for (int i = 0; i <= OPT_LIST_MAX; i++)
        many[n++] = "--kafka-config", many[n++] = "k=v";
    assert_non_null(strstr(refusal(many, n), "--kafka-config: given more than 32 times"));
}

static void test_errors_name_the_option(void **state)
{
    (void)state;
    char *missing[] = {"cmd", "--n", "3"};
    assert_non_null(strstr(refusal(missing, 3), "--data is required (or the key 'data' in a --config file)"));
    char *bad_int[] = {"cmd", "--data", "/d", "--n", "3x"};
    assert_string_equal(refusal(bad_int, 5), "--n: expected a whole number in 1..100, got '3x'");
    char *bad_size[] = {"cmd", "--data", "/d", "--size", "12Q"};
    assert_string_equal(refusal(bad_size, 5),
                        "--size: expected a size in bytes (like 1048576, 64KiB, 512MiB, 1GiB) in 64..1GiB, got '12Q'");
    char *no_value[] = {"cmd", "--data", "/d", "--kafka-config"};
    assert_string_equal(refusal(no_value, 4), "--kafka-config needs a value");
    char *unknown[] = {"cmd", "--data", "/d", "--nope=1"};
    assert_string_equal(refusal(unknown, 4), "unknown option '--nope'");
    char *flag_value[] = {"cmd", "--data", "/d", "--flag=yes"};
    assert_string_equal(refusal(flag_value, 4), "--flag takes no value");
    char *extra[] = {"cmd", "--data", "/d", "stray"};
    assert_string_equal(refusal(extra, 4), "unexpected argument 'stray'");
    char *empty[] = {"cmd", "--data="};
    assert_string_equal(refusal(empty, 2), "--data: empty value");
    char *line_break[] = {"cmd", "--data", "/d\nx"};
    assert_string_equal(refusal(line_break, 3), "--data: line breaks are not allowed in a value");
    parsed p;
    options_args a;
    char *help[] = {"cmd", "--n", "0", "--help"};
    assert_int_equal(parse(&p, help, 4, 0, &a), OPTIONS_HELP); /* help is shown whatever the values */
    char *help2[] = {"cmd", "--nope", "--help"};
    assert_int_equal(parse(&p, help2, 3, 0, &a), OPTIONS_USAGE); /* an unknown option before it is refused */
    char *help3[] = {"cmd", "--kafka-config", "--help"};
    assert_int_equal(parse(&p, help3, 3, 0, &a), OPTIONS_USAGE); /* "--help" is the value of --kafka-config */
    assert_non_null(strstr(a.err, "--data is required"));
    char *md[] = {"cmd", "-h"};
    assert_int_equal(parse(&p, md, 2, 0, &a), OPTIONS_HELP);
    char *md2[] = {"cmd", "--help-markdown"};
    assert_int_equal(parse(&p, md2, 2, 0, &a), OPTIONS_REFERENCE);
}

/* Each type with its range: what is accepted, and the message of what is not. */
static void test_types_and_ranges(void **state)
{
    (void)state;
    static const struct {
        const char *flag, *value;
        uint64_t want; /* for accepted numbers */
        const char *refused;
    } cases[] = {
        {"--n", "1", 1, NULL},
        {"--n", "100", 100, NULL},
        {"--n", "0", 0, "--n: expected a whole number in 1..100, got '0'"},
        {"--n", "101", 0, "--n: expected a whole number in 1..100, got '101'"},
        {"--n", "-1", 0, "--n: expected a whole number in 1..100, got '-1'"},
        {"--n", "+5", 0, "--n: expected a whole number in 1..100, got '+5'"},
        {"--n", " 5", 0, "--n: expected a whole number in 1..100, got ' 5'"},
        {"--n", "0x10", 0, "--n: expected a whole number in 1..100, got '0x10'"},
        {"--n", "99999999999999999999", 0, "--n: expected a whole number in 1..100, got '99999999999999999999'"},
        {"--size", "64", 64, NULL},
        {"--size", "2KiB", 2048, NULL},
        {"--size", "2kB", 2000, NULL},
        {"--size", "1MB", 1000000, NULL},
        {"--size", "3M", 3 << 20, NULL},
        {"--size", "1G", 1 << 30, NULL},
        {"--size", "63", 0, "--size: expected a size in bytes in 64..1GiB, got '63'"},
        {"--size", "2G", 0, "--size: expected a size in bytes in 64..1GiB, got '2G'"},
        {"--size", "20000000T", 0,
         "--size: expected a size in bytes (like 1048576, 64KiB, 512MiB, 1GiB) in 64..1GiB, got '20000000T'"},
        {"--ttl", "90", 90, NULL},
        {"--ttl", "90s", 90, NULL},
        {"--ttl", "15m", 900, NULL},
        {"--ttl", "1h", 3600, NULL},
        {"--ttl", "1d", 86400, NULL},
        {"--ttl", "2000ms", 2, NULL},
        {"--ttl", "1500ms", 0, "--ttl: expected a whole number of seconds, got '1500ms'"},
        {"--ttl", "0", 0, "--ttl: expected seconds in 1s..1d, got '0'"},
        {"--ttl", "2d", 0, "--ttl: expected seconds in 1s..1d, got '2d'"},
        {"--ttl", "1w", 0, "--ttl: expected seconds (like 90, or 90s, 15m, 1h, 2d) in 1s..1d, got '1w'"},
        {"--linger", "0", 0, NULL},
        {"--linger", "2s", 2000, NULL},
        {"--linger", "1m", 60000, NULL},
        {"--linger", "61s", 0, "--linger: expected milliseconds in 0..1m, got '61s'"},
        {"--mode", "periods", 0, NULL},
        {"--mode", "trigger", 1, NULL},
        {"--mode", "Periods", 0, "--mode: expected one of periods, trigger, auto, got 'Periods'"},
        {"--share", "1.5", 0, "--share: expected a number in 0..1, got '1.5'"},
        {"--share", "-0.1", 0, "--share: expected a number in 0..1, got '-0.1'"},
        {"--share", "nan", 0, "--share: expected a number in 0..1, got 'nan'"},
        {"--share", "0.5x", 0, "--share: expected a number in 0..1, got '0.5x'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[] = {"cmd", "--data", "/d", (char *)cases[i].flag, (char *)cases[i].value};
        parsed p;
        options_args a;
        options_status st = parse(&p, argv, 5, 0, &a);
        if (cases[i].refused) {
            assert_int_equal(st, OPTIONS_USAGE);
            assert_string_equal(a.err, cases[i].refused);
            continue;
        }
        assert_int_equal(st, OPTIONS_OK);
        uint64_t got = !strcmp(cases[i].flag, "--n")      ? p.n
                       : !strcmp(cases[i].flag, "--size") ? p.size
                       : !strcmp(cases[i].flag, "--ttl")  ? p.ttl
                       : !strcmp(cases[i].flag, "--mode") ? (uint64_t)p.mode
                                                          : p.linger;
        assert_int_equal(got, cases[i].want);
    }
    parsed p;
    options_args a;
    char *share[] = {"cmd", "--data", "/d", "--share", "0.25"};
    assert_int_equal(parse(&p, share, 5, 0, &a), OPTIONS_OK);
    assert_true(p.share == 0.25);
}

/* A table is checked each time it is used: a default outside its own range is an error naming it. */
static void test_table_checked_by_its_defaults(void **state)
{
    (void)state;
    uint64_t n;
    int mode;
    const char *s;
    char *argv[] = {"cmd"};
    options_args a;
    const option bad_default[] = {{.name = "--n", .type = OPT_UINT, .target = &n, .def = "0", .min = 1}, {0}};
    assert_int_equal(options_parse(bad_default, 1, argv, 1, 0, &a), OPTIONS_USAGE);
    assert_string_equal(a.err, "option table: the default of --n: expected a whole number of at least 1, got '0'");
    const option no_choices[] = {{.name = "--m", .type = OPT_ENUM, .target = &mode}, {0}};
    assert_int_equal(options_parse(no_choices, 1, argv, 1, 0, &a), OPTIONS_USAGE);
    assert_non_null(strstr(a.err, "--m: an enum without choices"));
    const option no_dashes[] = {{.name = "data", .type = OPT_STRING, .target = &s}, {0}};
    assert_int_equal(options_parse(no_dashes, 1, argv, 1, 0, &a), OPTIONS_USAGE);
    const option no_target[] = {{.name = "--data", .type = OPT_STRING}, {0}};
    assert_int_equal(options_parse(no_target, 1, argv, 1, 0, &a), OPTIONS_USAGE);
    const option unset_enum[] = {{.name = "--m", .type = OPT_ENUM, .target = &mode, .choices = modes}, {0}};
    assert_int_equal(options_parse(unset_enum, 1, argv, 1, 0, &a), OPTIONS_OK);
    assert_int_equal(mode, -1); /* not given, no default */
}

/* ---- the config file ---- */

typedef struct {
    char dir[64], path[128];
} tmpfile_t;

static void write_file(tmpfile_t *t, const char *text)
{
    unit_tmpdir(t->dir);
    snprintf(t->path, sizeof t->path, "%s/medstream.conf", t->dir);
    FILE *f = fopen(t->path, "wb");
    assert_non_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

/* Parse `cmd --config FILE extra...`, FILE holding text. */
static options_status parse_with_file(parsed *p, tmpfile_t *t, const char *text, char **extra, int nextra,
                                      options_args *a)
{
    write_file(t, text);
    char *argv[16] = {"cmd", "--config", t->path};
    for (int i = 0; i < nextra; i++)
        argv[3 + i] = extra[i];
    return parse(p, argv, 3 + nextra, 0, a);
}

static void test_config_file_sets_options(void **state)
{
    (void)state;
    parsed p;
    options_args a;
    tmpfile_t t;
    const char *text = "# medstream.conf\n"
                       "\n"
                       "data = /var/lib/medstream\n"
                       "   size=2MiB   \r\n"
                       "\tttl = 1h\n"
                       "  # indented comment\n"
                       "mode = trigger\n"
                       "flag = true\n"
                       "share = 0.25\n"
                       "kafka-config = sasl.password=p#ss=word\n"
                       "kafka-config = security.protocol=SASL_SSL\n"
                       "n = 9"; /* no final line end */
    assert_int_equal(parse_with_file(&p, &t, text, NULL, 0, &a), OPTIONS_OK);
    assert_string_equal(p.data, "/var/lib/medstream"); /* required, given by the file */
    assert_int_equal(p.size, 2 << 20);
    assert_int_equal(p.ttl, 3600);
    assert_int_equal(p.mode, 1);
    assert_true(p.flag);
    assert_true(p.share == 0.25);
    assert_int_equal(p.n, 9);
    assert_int_equal(p.cfg.n, 2);
    assert_string_equal(p.cfg.v[0], "sasl.password=p#ss=word"); /* '#' inside a value is the value's */
    assert_string_equal(p.cfg.v[1], "security.protocol=SASL_SSL");
    assert_int_equal(p.linger, 50); /* not in the file: the default */
    options_args_free(&a);
    unit_rmtree(t.dir);
    /* flag = false is accepted too */
    assert_int_equal(parse_with_file(&p, &t, "data = /d\nflag = false\n", NULL, 0, &a), OPTIONS_OK);
    assert_false(p.flag);
    options_args_free(&a);
    unit_rmtree(t.dir);
}

static void test_command_line_overrides_file(void **state)
{
    (void)state;
    parsed p;
    options_args a;
    tmpfile_t t;
    /* the command line wins wherever it stands, even before --config */
    char *extra[] = {"--n", "3", "--kafka-config", "client.id=cli", "--data=/cli"};
    assert_int_equal(
        parse_with_file(&p, &t, "data = /file\nn = 9\nkafka-config = client.id=file\nttl = 2h\n", extra, 5, &a),
        OPTIONS_OK);
    assert_string_equal(p.data, "/cli");
    assert_int_equal(p.n, 3);
    assert_int_equal(p.ttl, 7200);
    assert_int_equal(p.cfg.n, 2); /* a repeatable option: the file's values, then the command line's */
    assert_string_equal(p.cfg.v[0], "client.id=file");
    assert_string_equal(p.cfg.v[1], "client.id=cli");
    options_args_free(&a);
    unit_rmtree(t.dir);
    char *before[] = {"cmd", "--n", "4", "--config", NULL};
    write_file(&t, "data = /file\nn = 9\n");
    before[4] = t.path;
    assert_int_equal(parse(&p, before, 5, 0, &a), OPTIONS_OK);
    assert_int_equal(p.n, 4);
    options_args_free(&a);
    unit_rmtree(t.dir);
}

/* Every refusal of a file names the file, the line and the key. */
static void test_config_errors_name_file_line_key(void **state)
{
    (void)state;
    static const struct {
        const char *text, *refused; /* "%s" stands for the file's path */
    } cases[] = {
        {"data = /d\n\nlisten = 1.2.3.4:80\n", "%s:3: unknown key 'listen'"},
        {"# c\nn = 0\n", "%s:2: key 'n': expected a whole number in 1..100, got '0'"},
        {"ttl = 1500ms\n", "%s:1: key 'ttl': expected a whole number of seconds, got '1500ms'"},
        {"mode = fast\n", "%s:1: key 'mode': expected one of periods, trigger, auto, got 'fast'"},
        {"flag = yes\n", "%s:1: key 'flag': expected true or false, got 'yes'"},
        {"data = /a\nn = 2\ndata = /b\n", "%s:3: key 'data' is already set on line 1"},
        {"data /d\n", "%s:1: expected 'key = value' (a key is an option without its --)"},
        {"--data = /d\n", "%s:1: unknown key '--data' (write a key without its --)"},
        {"= /d\n", "%s:1: unknown key ''"},
        {"data =\n", "%s:1: key 'data': empty value"},
        {"config = /etc/other.conf\n", "%s:1: key 'config': a config file cannot name another"},
        {"data = /d\nsize = 12Q\r\n",
         "%s:2: key 'size': expected a size in bytes (like 1048576, 64KiB, 512MiB, 1GiB) in 64..1GiB, got '12Q'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parsed p;
        options_args a;
        tmpfile_t t;
        assert_int_equal(parse_with_file(&p, &t, cases[i].text, NULL, 0, &a), OPTIONS_USAGE);
        char want[512];
        snprintf(want, sizeof want, cases[i].refused, t.path);
        assert_string_equal(a.err, want);
        options_args_free(&a);
        unit_rmtree(t.dir);
    }
    /* a bad value on the command line is still named as the option */
    parsed p;
    options_args a;
    tmpfile_t t;
    char *extra[] = {"--n", "500"};
    assert_int_equal(parse_with_file(&p, &t, "data = /d\n", extra, 2, &a), OPTIONS_USAGE);
    assert_string_equal(a.err, "--n: expected a whole number in 1..100, got '500'");
    options_args_free(&a);
    /* a NUL byte: not a text file */
    FILE *f = fopen(t.path, "wb");
    fwrite("data = /d\0x\n", 1, 12, f);
    fclose(f);
    char *argv[] = {"cmd", "--config", t.path};
    assert_int_equal(parse(&p, argv, 3, 0, &a), OPTIONS_USAGE);
    assert_non_null(strstr(a.err, "not a text file"));
    options_args_free(&a);
    /* a file that cannot be read is named */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.conf", t.dir);
    char *argv2[] = {"cmd", "--config", missing};
    assert_int_equal(parse(&p, argv2, 3, 0, &a), OPTIONS_USAGE);
    assert_non_null(strstr(a.err, missing));
    options_args_free(&a);
    char *twice[] = {"cmd", "--config", t.path, "--config", t.path};
    assert_int_equal(parse(&p, twice, 5, 0, &a), OPTIONS_USAGE);
    assert_string_equal(a.err, "--config given twice");
    options_args_free(&a);
    unit_rmtree(t.dir);
}

/* ---- help and the reference ---- */

static char *capture(void (*print)(FILE *, const options_command *), const options_command *cmd)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    print(f, cmd);
    fclose(f);
    return text;
}

/* A numeric option with a word for "no limit" (.unlimited): the word sets UINT64_MAX, numbers their value
 * (0 included), and help, refusals and the reference say the word is accepted. */
static void test_unlimited_word(void **state)
{
    (void)state;
    uint64_t max = 5;
    const option opts[] = {
        {.name = "--max", .type = OPT_UINT, .target = &max, .def = "none", .unlimited = "none", .help = "at most"},
        {0},
    };
    options_args a;
    char *none[] = {"cmd"};
    assert_int_equal(options_parse(opts, 1, none, 1, 0, &a), OPTIONS_OK);
    assert_true(max == UINT64_MAX); /* the default, the word */
    options_args_free(&a);
    char *zero[] = {"cmd", "--max", "0"};
    assert_int_equal(options_parse(opts, 3, zero, 1, 0, &a), OPTIONS_OK);
    assert_int_equal(max, 0);
    options_args_free(&a);
    char *word[] = {"cmd", "--max=none"};
    assert_int_equal(options_parse(opts, 2, word, 1, 0, &a), OPTIONS_OK);
    assert_true(max == UINT64_MAX);
    options_args_free(&a);
    char *bad[] = {"cmd", "--max", "lots"};
    assert_int_equal(options_parse(opts, 3, bad, 1, 0, &a), OPTIONS_USAGE);
    if (!strstr(a.err, "--max") || !strstr(a.err, "a whole number") || !strstr(a.err, "or none"))
        fail_msg("refusal: %s", a.err);
    options_args_free(&a);
    char text[2048];
    FILE *f = fmemopen(text, sizeof text, "w");
    options_command cmd = {"demo", "medstream demo", "Demo.", opts};
    options_help(f, &cmd);
    fclose(f);
    if (!strstr(text, "or none, default none")) fail_msg("help: %s", text);
}

static void test_help_and_reference(void **state)
{
    (void)state;
    parsed p;
    option opts[11];
    table(&p, opts, true);
    const options_command cmd = {"demo", "medstream demo [options]", "A demo.", opts};
    char *help = capture(options_help, &cmd);
    assert_non_null(strstr(help, "usage: medstream demo [options]"));
    assert_non_null(strstr(help, "--data DIR"));
    assert_non_null(strstr(help, "(required)"));
    assert_non_null(strstr(help, "(1..100, default 7)"));
    assert_non_null(strstr(help, "(1s..1d, default 3600)"));
    assert_non_null(strstr(help, "(64..1GiB, default 1MiB)"));
    assert_non_null(strstr(help, "--mode periods|trigger|auto"));
    assert_non_null(strstr(help, "(repeatable)"));
    assert_non_null(strstr(help, "--help"));
    for (const char *line = help; *line;) { /* wrapped within 100 columns */
        const char *nl = strchr(line, '\n');
        assert_true(nl - line <= 100);
        line = nl + 1;
    }
    free(help);
    char *md = capture(options_reference, &cmd);
    assert_non_null(strstr(md, "## demo\n"));
    assert_non_null(strstr(md, "| `--n N` | whole number | `7` | 1..100 | count |\n"));
    assert_non_null(strstr(md, "| `--data DIR` | text | required |  | dir |\n"));
    assert_non_null(
        strstr(md, "| `--mode periods\\|trigger\\|auto` | one of | `auto` | `periods`, `trigger`, `auto` |"));
    assert_non_null(strstr(md, "| `--linger MS` | milliseconds | `50` | 0..1m | ms |"));
    free(md);
}

/* options_parse_command: help on out with exit 0, a usage error on err with exit 2. */
static void test_parse_command_exit_codes(void **state)
{
    (void)state;
    parsed p;
    option opts[11];
    table(&p, opts, false);
    const options_command cmd = {"demo", "medstream demo", "A demo.", opts};
    char *out_text = NULL, *err_text = NULL;
    size_t out_len = 0, err_len = 0;
    FILE *out = open_memstream(&out_text, &out_len), *err = open_memstream(&err_text, &err_len);
    options_args a;
    int code = -1;
    char *help[] = {"medstream", "demo", "--help"};
    assert_false(options_parse_command(&cmd, 3, help, 2, 0, &a, out, err, &code));
    assert_int_equal(code, 0);
    char *bad[] = {"medstream", "demo", "--data", "/d", "--n", "1000"};
    assert_false(options_parse_command(&cmd, 6, bad, 2, 0, &a, out, err, &code));
    assert_int_equal(code, 2);
    char *ok[] = {"medstream", "demo", "--data", "/d"};
    assert_true(options_parse_command(&cmd, 4, ok, 2, 0, &a, out, err, &code));
    char *config[] = {"medstream", "demo", "--config", "x"}; /* a table without --config has none */
    assert_false(options_parse_command(&cmd, 4, config, 2, 0, &a, out, err, &code));
    fclose(out);
    fclose(err);
    assert_non_null(strstr(out_text, "usage: medstream demo"));
    assert_non_null(strstr(err_text, "medstream demo: --n: expected a whole number in 1..100, got '1000' "
                                     "(see medstream demo --help)\n"));
    assert_non_null(strstr(err_text, "medstream demo: unknown option '--config'"));
    free(out_text);
    free(err_text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_forms),
        cmocka_unit_test(test_repeatable_list),
        cmocka_unit_test(test_errors_name_the_option),
        cmocka_unit_test(test_types_and_ranges),
        cmocka_unit_test(test_table_checked_by_its_defaults),
        cmocka_unit_test(test_config_file_sets_options),
        cmocka_unit_test(test_command_line_overrides_file),
        cmocka_unit_test(test_config_errors_name_file_line_key),
        cmocka_unit_test(test_help_and_reference),
        cmocka_unit_test(test_unlimited_word),
        cmocka_unit_test(test_parse_command_exit_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * options.c - the option model (contract in options.h): parsing a command line and a config file
 * against one table, checking every value against its option's type and range, and printing --help and
 * the Markdown reference from the same table.
 *
 * DESIGN
 *   One value parser per type, shared by the command line, the config file and the defaults, so that a
 *   value means the same wherever it is written and every refusal reads the same ("expected ..., got
 *   '...'"); the caller adds where it was ("--max-body: " or "FILE:LINE: key 'max-body': ").
 *   Parsing is two passes over argv: the first finds the options, the positionals, --help and --config
 *   without setting anything; then every target gets its default, the config file's values, and the
 *   command line's values, in that order, so that the command line wins whatever its position.
 *
 *   The config file format is `key = value` lines rather than JSON (or TOML, YAML), because:
 *   - every option is flat, so a key is simply its flag without `--` (`max-body = 64MiB`); a value is
 *     the text the command line would take, read by the same parser (units, ranges and messages alike);
 *   - a repeatable option is a repeated key (`kafka-config = security.protocol=SASL_SSL` on two lines),
 *     and the value is the rest of the line after the first `=`, with no quoting rules to learn, so a
 *     libpq URL or a librdkafka setting goes in exactly as it would on the command line;
 *   - a service's file wants comments (why a limit was raised, by whom), which JSON has not;
 *   - it is the form of the files operators already keep beside medstream (librdkafka and Kafka
 *     .properties, postgresql.conf), and it needs no parser library.
 *   `#` starts a comment only as a line's first non-blank character, so values may hold `#` (passwords,
 *   URLs); a key set twice is refused unless it is repeatable (a second `listen` is a mistake, not an
 *   override); blank lines, CRLF line ends and a leading UTF-8 byte-order mark are accepted.
 *
 * What it must never do: exit, print to stdout or stderr on its own, allocate beyond what
 * options_args_free releases, or accept a value its option's help would not describe.
 */
#include "base/options.h"

#include "base/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define OPTIONS_MAX 128 /* options in one table */

/* ---- values ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* A whole number without sign, blanks or base prefix; false on anything else or overflow. */
static bool parse_whole(const char *s, const char **end, uint64_t *out)
{
    if (!is_digit(*s)) return false;
    uint64_t v = 0;
    for (; is_digit(*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *end = s;
    *out = v;
    return true;
}

bool parse_bytes(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (!parse_whole(s, &end, &v)) return false;
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"K", 1ULL << 10},
        {"k", 1ULL << 10},
        {"KiB", 1ULL << 10},
        {"M", 1ULL << 20},
        {"MiB", 1ULL << 20},
        {"G", 1ULL << 30},
        {"GiB", 1ULL << 30},
        {"T", 1ULL << 40},
        {"TiB", 1ULL << 40},
        /* SI, as disks are sold and `du --si` counts: powers of 1000 */
        {"kB", 1000ULL},
        {"KB", 1000ULL},
        {"MB", 1000000ULL},
        {"GB", 1000000000ULL},
        {"TB", 1000000000000ULL},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) != 0) continue;
        if (v > UINT64_MAX / units[i].mult) return false;
        *out = v * units[i].mult;
        return true;
    }
    return false;
}

bool parse_duration_ms(const char *s, uint64_t bare_ms, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (!parse_whole(s, &end, &v)) return false;
    uint64_t mult = !*end                ? bare_ms
                    : !strcmp(end, "ms") ? 1
                    : !strcmp(end, "s")  ? 1000
                    : !strcmp(end, "m")  ? 60 * 1000
                    : !strcmp(end, "h")  ? 3600 * 1000
                    : !strcmp(end, "d")  ? 86400 * 1000
                                         : 0;
    if (!mult || v > UINT64_MAX / mult) return false;
    *out = v * mult;
    return true;
}

void format_bytes(char *out, size_t cap, uint64_t v)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 4; i++) {
        uint64_t m = 1ULL << (10 * (4 - i));
        if (v && v % m == 0) {
            snprintf(out, cap, "%" PRIu64 "%s", v / m, units[i]);
            return;
        }
    }
    snprintf(out, cap, "%" PRIu64, v);
}

void format_duration_ms(char *out, size_t cap, uint64_t ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    if (ms == 0) {
        snprintf(out, cap, "0");
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].ms == 0) {
            snprintf(out, cap, "%" PRIu64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(out, cap, "%" PRIu64 "ms", ms);
}

static bool is_numeric(opt_type t) { return t == OPT_UINT || t == OPT_BYTES || t == OPT_SECONDS || t == OPT_MILLIS; }

/* One bound of a numeric option, written in its type's units. */
static void format_bound(char *out, size_t cap, const option *o, uint64_t v)
{
    switch (o->type) {
    case OPT_BYTES: format_bytes(out, cap, v); break;
    case OPT_SECONDS: format_duration_ms(out, cap, v * 1000); break;
    case OPT_MILLIS: format_duration_ms(out, cap, v); break;
    default: snprintf(out, cap, "%" PRIu64, v); break;
    }
}

/* The accepted range as help shows it: "1..65536", "at least 1MiB", "0..1", "or none" (a word for no limit);
 * "" when any value goes. */
static void range_text(char *out, size_t cap, const option *o)
{
    out[0] = 0;
    if (o->type == OPT_SHARE) {
        snprintf(out, cap, "0..1");
        return;
    }
    if (!is_numeric(o->type)) return;
    char lo[32], hi[32];
    format_bound(lo, sizeof lo, o, o->min);
    format_bound(hi, sizeof hi, o, o->max);
    size_t len = 0;
    if (o->max)
        len = (size_t)snprintf(out, cap, "%s..%s", lo, hi);
    else if (o->min)
        len = (size_t)snprintf(out, cap, "at least %s", lo);
    if (o->unlimited && len < cap) snprintf(out + len, cap - len, "%sor %s", len ? " " : "", o->unlimited);
}

/* The allowed values of an OPT_ENUM joined by sep: "periods|trigger|auto". */
static void choices_text(char *out, size_t cap, const option *o, const char *sep)
{
    size_t len = 0;
    out[0] = 0;
    for (const char *const *c = o->choices; c && *c && len < cap; c++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", c == o->choices ? "" : sep, *c);
}

static const char *type_metavar(const option *o)
{
    switch (o->type) {
    case OPT_UINT: return "N";
    case OPT_BYTES: return "BYTES";
    case OPT_SECONDS: return "SECONDS";
    case OPT_MILLIS: return "MS";
    case OPT_SHARE: return "F";
    case OPT_CONFIG: return "FILE";
    case OPT_FLAG: return "";
    default: return "VALUE";
    }
}

/* What a value of this option looks like, for "expected ..." messages: its kind, then (when the text was
 * not of that kind at all) examples, then its range. */
static void expectation(char *out, size_t cap, const option *o, bool examples)
{
    char range[96], tail[112] = "";
    range_text(range, sizeof range, o);
    if (range[0])
        snprintf(tail, sizeof tail, "%s%s", range[0] == 'a' ? " of " : range[0] == 'o' ? ", " : " in ", range);
    const char *kind = "a value", *like = "";
    switch (o->type) {
    case OPT_UINT: kind = "a whole number"; break;
    case OPT_BYTES: kind = "a size in bytes", like = " (like 1048576, 64KiB, 512MiB, 1GiB)"; break;
    case OPT_SECONDS: kind = "seconds", like = " (like 90, or 90s, 15m, 1h, 2d)"; break;
    case OPT_MILLIS: kind = "milliseconds", like = " (like 50, or 50ms, 2s, 1m)"; break;
    case OPT_SHARE: kind = "a number"; break;
    case OPT_FLAG: kind = "true or false"; break;
    case OPT_ENUM: {
        char c[200];
        choices_text(c, sizeof c, o, ", ");
        snprintf(out, cap, "one of %s", c);
        return;
    }
    default: break;
    }
    snprintf(out, cap, "%s%s%s", kind, examples ? like : "", tail);
}

/* Set o's target from text v. On a refusal, the problem (without the option's name) goes to why. */
static bool set_value(const option *o, const char *v, char *why, size_t cap)
{
    char expected[240];
    switch (o->type) {
    case OPT_STRING:
    case OPT_CONFIG:
    case OPT_LIST:
        if (!*v) {
            snprintf(why, cap, "empty value");
            return false;
        }
        if (strpbrk(v, "\r\n")) {
            snprintf(why, cap, "line breaks are not allowed in a value");
            return false;
        }
        if (o->type == OPT_LIST) {
            opt_list *l = o->target;
            if (l->n >= OPT_LIST_MAX) {
                snprintf(why, cap, "given more than %d times", OPT_LIST_MAX);
                return false;
            }
            l->v[l->n++] = v;
            l->v[l->n] = NULL;
        } else if (o->target) {
            *(const char **)o->target = v;
        }
        return true;
    case OPT_UINT:
    case OPT_BYTES:
    case OPT_SECONDS:
    case OPT_MILLIS: {
        uint64_t x = 0, ms = 0;
        const char *end = NULL;
        if (o->unlimited && !strcmp(v, o->unlimited)) { /* no limit */
            *(uint64_t *)o->target = UINT64_MAX;
            return true;
        }
        bool ok = o->type == OPT_UINT     ? parse_whole(v, &end, &x) && !*end
                  : o->type == OPT_BYTES  ? parse_bytes(v, &x)
                  : o->type == OPT_MILLIS ? parse_duration_ms(v, 1, &x)
                                          : parse_duration_ms(v, 1000, &ms);
        if (ok && o->type == OPT_SECONDS) {
            if (ms % 1000) {
                snprintf(why, cap, "expected a whole number of seconds, got '%s'", v);
                return false;
            }
            x = ms / 1000;
        }
        if (!ok || x < o->min || (o->max && x > o->max)) {
            expectation(expected, sizeof expected, o, !ok);
            snprintf(why, cap, "expected %s, got '%s'", expected, v);
            return false;
        }
        *(uint64_t *)o->target = x;
        return true;
    }
    case OPT_SHARE: {
        char *end;
        errno = 0;
        double x = -1;
        if (is_digit(*v) || *v == '.') {
            x = strtod(v, &end);
            if (*end || errno) x = -1;
        }
        if (!(x >= 0.0 && x <= 1.0)) {
            expectation(expected, sizeof expected, o, false);
            snprintf(why, cap, "expected %s, got '%s'", expected, v);
            return false;
        }
        *(double *)o->target = x;
        return true;
    }
    case OPT_ENUM:
        for (int i = 0; o->choices[i]; i++) {
            if (!strcmp(o->choices[i], v)) {
                *(int *)o->target = i;
                return true;
            }
        }
        expectation(expected, sizeof expected, o, false);
        snprintf(why, cap, "expected %s, got '%s'", expected, v);
        return false;
    case OPT_FLAG:
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
            expectation(expected, sizeof expected, o, false);
            snprintf(why, cap, "expected %s, got '%s'", expected, v);
            return false;
        }
        *(bool *)o->target = !strcmp(v, "true");
        return true;
    }
    snprintf(why, cap, "an option of an unknown type");
    return false;
}

/* Every target to its default (or zero); false if the table itself is wrong. */
static bool reset_targets(const option *opts, size_t n, char *err, size_t cap)
{
    int configs = 0;
    for (size_t i = 0; i < n; i++) {
        const option *o = &opts[i];
        configs += o->type == OPT_CONFIG;
        const char *bad = strncmp(o->name, "--", 2) != 0                          ? "a name must start with --"
                          : !o->target && o->type != OPT_CONFIG                   ? "no target"
                          : o->type == OPT_ENUM && !(o->choices && o->choices[0]) ? "an enum without choices"
                          : o->max && o->min > o->max                             ? "min above max"
                          : o->type == OPT_CONFIG && configs > 1                  ? "a second config option"
                                                                                  : NULL;
        if (bad) {
            snprintf(err, cap, "option table: %s: %s", o->name, bad);
            return false;
        }
        switch (o->type) {
        case OPT_STRING:
        case OPT_CONFIG:
            if (o->target) *(const char **)o->target = NULL;
            break;
        case OPT_UINT:
        case OPT_BYTES:
        case OPT_SECONDS:
        case OPT_MILLIS: *(uint64_t *)o->target = 0; break;
        case OPT_SHARE: *(double *)o->target = 0; break;
        case OPT_ENUM: *(int *)o->target = -1; break;
        case OPT_FLAG: *(bool *)o->target = false; break;
        case OPT_LIST: memset(o->target, 0, sizeof(opt_list)); break;
        }
        char why[300];
        if (o->def && !set_value(o, o->def, why, sizeof why)) {
            snprintf(err, cap, "option table: the default of %s: %s", o->name, why);
            return false;
        }
    }
    return true;
}

/* ---- the config file ---- */

static char *trim(char *s, char *end)
{
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    *end = 0;
    return s;
}

/* Apply the `key = value` lines of text (NUL-terminated, modified in place: values point into it) to
 * opts; line_of[k] is set to the line that set option k. */
static bool apply_config_text(const option *opts, size_t n, char *text, size_t len, const char *path, unsigned *line_of,
                              char *err, size_t cap)
{
    if (strlen(text) != len) {
        snprintf(err, cap, "%s: not a text file (it holds a NUL byte)", path);
        return false;
    }
    unsigned line = 0;
    if (!strncmp(text, "\xef\xbb\xbf", 3)) text += 3; /* a UTF-8 byte-order mark, as some editors write */
    for (char *p = text; p && *p;) {
        line++;
        char *nl = strchr(p, '\n');
        char *end = nl ? nl : p + strlen(p);
        char *next = nl ? nl + 1 : NULL;
        char *s = trim(p, end);
        p = next;
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, cap, "%s:%u: expected 'key = value' (a key is an option without its --)", path, line);
            return false;
        }
        char *key = trim(s, eq);
        char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
        size_t k = 0;
        while (k < n && strcmp(opts[k].name + 2, key) != 0)
            k++;
        if (k == n || !*key) {
            snprintf(err, cap, "%s:%u: unknown key '%.64s'%s", path, line, key,
                     !strncmp(key, "--", 2) ? " (write a key without its --)" : "");
            return false;
        }
        const option *o = &opts[k];
        if (o->type == OPT_CONFIG) {
            snprintf(err, cap, "%s:%u: key '%s': a config file cannot name another", path, line, key);
            return false;
        }
        if (line_of[k] && o->type != OPT_LIST) {
            snprintf(err, cap, "%s:%u: key '%s' is already set on line %u", path, line, key, line_of[k]);
            return false;
        }
        char why[300];
        if (!set_value(o, value, why, sizeof why)) {
            snprintf(err, cap, "%s:%u: key '%s': %s", path, line, key, why);
            return false;
        }
        line_of[k] = line;
    }
    return true;
}

/* ---- the command line ---- */

typedef struct {
    int opt;           /* index in the table */
    const char *value; /* NULL for a flag */
} given_value;

options_status options_parse(const option *opts, int argc, char **argv, int first, int maxpos, options_args *args)
{
    memset(args, 0, sizeof *args);
    char *err = args->err;
    size_t cap = sizeof args->err;
    size_t n = 0;
    while (opts[n].name)
        n++;
    if (n > OPTIONS_MAX) {
        snprintf(err, cap, "option table: more than %d options", OPTIONS_MAX);
        return OPTIONS_USAGE;
    }
    if (!reset_targets(opts, n, err, cap)) return OPTIONS_USAGE;
    if (maxpos > OPTIONS_POS_MAX) maxpos = OPTIONS_POS_MAX;

    /* Pass 1: what was given, without setting anything. */
    given_value *given = ms_calloc((size_t)(argc > first ? argc - first : 1), sizeof *given);
    size_t ngiven = 0;
    const char *config_path = NULL;
    bool only_positionals = false;
    options_status st = OPTIONS_OK;
    for (int i = first; i < argc && st == OPTIONS_OK; i++) {
        const char *a = argv[i];
        if (!only_positionals && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            st = OPTIONS_HELP;
            break;
        }
        if (!only_positionals && !strcmp(a, "--help-markdown")) {
            st = OPTIONS_REFERENCE;
            break;
        }
        if (!only_positionals && !strcmp(a, "--")) {
            only_positionals = true;
            continue;
        }
        if (only_positionals || strncmp(a, "--", 2) != 0) {
            if (args->npos >= maxpos) {
                snprintf(err, cap, "unexpected argument '%s'", a);
                st = OPTIONS_USAGE;
            } else {
                args->pos[args->npos++] = a;
            }
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        size_t k = 0;
        while (k < n && !(strlen(opts[k].name) == nl && !strncmp(opts[k].name, a, nl)))
            k++;
        if (k == n) {
            snprintf(err, cap, "unknown option '%.*s'", (int)(nl < 100 ? nl : 100), a);
            st = OPTIONS_USAGE;
            break;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (opts[k].type == OPT_FLAG && v) {
            snprintf(err, cap, "%s takes no value", opts[k].name);
            st = OPTIONS_USAGE;
        } else if (opts[k].type != OPT_FLAG && !v) {
            if (i + 1 >= argc) {
                snprintf(err, cap, "%s needs a value", opts[k].name);
                st = OPTIONS_USAGE;
            } else {
                v = argv[++i];
            }
        }
        if (st != OPTIONS_OK) break;
        if (opts[k].type == OPT_CONFIG) {
            if (config_path) {
                snprintf(err, cap, "%s given twice", opts[k].name);
                st = OPTIONS_USAGE;
                break;
            }
            config_path = v;
        }
        given[ngiven++] = (given_value){(int)k, v};
    }

    /* Pass 2: the config file, then the command line over it. */
    unsigned line_of[OPTIONS_MAX] = {0};
    bool on_command_line[OPTIONS_MAX] = {false};
    if (st == OPTIONS_OK && config_path) {
        buf text = {0};
        ms_err e = {0};
        if (!*config_path) {
            snprintf(err, cap, "--config: empty value");
            st = OPTIONS_USAGE;
        } else if (buf_read_settings_file(&text, config_path, &e) != MS_OK) {
            snprintf(err, cap, "%s", e.msg);
            st = OPTIONS_USAGE;
        }
        size_t len = text.len;
        args->config_text = buf_take(&text);
        if (st == OPTIONS_OK && !apply_config_text(opts, n, args->config_text, len, config_path, line_of, err, cap))
            st = OPTIONS_USAGE;
    }
    for (size_t g = 0; g < ngiven && st == OPTIONS_OK; g++) {
        const option *o = &opts[given[g].opt];
        char why[300];
        if (!set_value(o, given[g].value ? given[g].value : "true", why, sizeof why)) {
            snprintf(err, cap, "%s: %s", o->name, why);
            st = OPTIONS_USAGE;
        }
        on_command_line[given[g].opt] = true;
    }
    free(given);
    if (st != OPTIONS_OK) return st;
    bool has_config = false;
    for (size_t i = 0; i < n; i++)
        has_config |= opts[i].type == OPT_CONFIG;
    for (size_t i = 0; i < n; i++) {
        if (opts[i].required && !on_command_line[i] && !line_of[i]) {
            snprintf(err, cap, "%s is required%s%s%s", opts[i].name, has_config ? " (or the key '" : "",
                     has_config ? opts[i].name + 2 : "", has_config ? "' in a --config file)" : "");
            return OPTIONS_USAGE;
        }
    }
    return OPTIONS_OK;
}

void options_args_free(options_args *args)
{
    free(args->config_text);
    args->config_text = NULL;
}

bool options_parse_command(const options_command *cmd, int argc, char **argv, int first, int maxpos, options_args *args,
                           FILE *out, FILE *err, int *exit_code)
{
    switch (options_parse(cmd->opts, argc, argv, first, maxpos, args)) {
    case OPTIONS_OK: return true;
    case OPTIONS_HELP:
        options_help(out, cmd);
        *exit_code = 0;
        return false;
    case OPTIONS_REFERENCE:
        options_reference(out, cmd);
        *exit_code = 0;
        return false;
    case OPTIONS_USAGE: break;
    }
    fprintf(err, "medstream %s: %s (see medstream %s --help)\n", cmd->name, args->err, cmd->name);
    *exit_code = 2;
    return false;
}

/* ---- help and reference ---- */

/* "--max-body BYTES", "--postgres-history periods|trigger|auto", "--json". */
static void option_left(char *out, size_t cap, const option *o)
{
    char choices[128];
    const char *mv = o->metavar ? o->metavar : type_metavar(o);
    if (o->type == OPT_ENUM && !o->metavar) {
        choices_text(choices, sizeof choices, o, "|");
        mv = choices;
    }
    snprintf(out, cap, "%s%s%s", o->name, *mv ? " " : "", mv);
}

/* The notes after an option's help: "1..65536, default 512", "required", "repeatable". */
static void option_notes(char *out, size_t cap, const option *o)
{
    char range[96];
    range_text(range, sizeof range, o);
    size_t len = 0;
    out[0] = 0;
#define NOTE(...) (len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, __VA_ARGS__))
    if (range[0]) NOTE("%s", range);
    if (o->type == OPT_LIST) NOTE("%srepeatable", len ? ", " : "");
    if (o->required) NOTE("%srequired", len ? ", " : "");
    if (o->def && o->type != OPT_FLAG) NOTE("%sdefault %s", len ? ", " : "", o->def);
#undef NOTE
}

#define HELP_COLUMNS 100 /* --help wraps its descriptions within this */

/* text's words from column col on, wrapped within HELP_COLUMNS with continuation lines at indent. */
static void print_wrapped(FILE *f, const char *text, int col, int indent)
{
    bool first = true;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        const char *end = p;
        while (*end && *end != ' ')
            end++;
        int len = (int)(end - p);
        if (!len) break;
        if (!first && col + 1 + len > HELP_COLUMNS) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, (size_t)len, f);
        col += len;
        first = false;
        p = end;
    }
    fputc('\n', f);
}

void options_help(FILE *f, const options_command *cmd)
{
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", cmd->usage, cmd->about);
    int width = 6; /* "--help" */
    for (const option *o = cmd->opts; o->name; o++) {
        char left[256];
        option_left(left, sizeof left, o);
        int w = (int)strlen(left);
        if (w > width && w <= 32) width = w;
    }
    for (const option *o = cmd->opts; o->name; o++) {
        char left[256], notes[200], text[600];
        option_left(left, sizeof left, o);
        option_notes(notes, sizeof notes, o);
        snprintf(text, sizeof text, "%s%s%s%s", o->help, notes[0] ? " (" : "", notes, notes[0] ? ")" : "");
        int w = (int)strlen(left);
        fprintf(f, "  %-*s  ", width, left);
        print_wrapped(f, text, 2 + (w > width ? w : width) + 2, 2 + width + 2);
    }
    fprintf(f, "  %-*s  %s\n", width, "--help", "show this help");
}

/* Text in a Markdown table cell: '|' escaped, line breaks as spaces. */
static void md_cell(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", f);
        else if (*s == '\n')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

static const char *type_name(const option *o)
{
    switch (o->type) {
    case OPT_STRING: return "text";
    case OPT_UINT: return "whole number";
    case OPT_BYTES: return "bytes";
    case OPT_SECONDS: return "seconds";
    case OPT_MILLIS: return "milliseconds";
    case OPT_SHARE: return "share";
    case OPT_ENUM: return "one of";
    case OPT_FLAG: return "flag";
    case OPT_LIST: return "text, repeatable";
    case OPT_CONFIG: return "config file";
    }
    return "?";
}

void options_reference(FILE *f, const options_command *cmd)
{
    fprintf(f, "## %s\n\n```\n%s\n```\n\n", cmd->name, cmd->usage);
    for (const char *p = cmd->about; *p; p++)
        fputc(*p == '\n' ? ' ' : *p, f);
    fputs("\n\n", f);
    if (!cmd->opts[0].name) {
        fputs("No options but `--help`.\n\n", f);
        return;
    }
    fputs("| option | type | default | accepted | description |\n|---|---|---|---|---|\n", f);
    for (const option *o = cmd->opts; o->name; o++) {
        char left[256], range[96], choices[256];
        option_left(left, sizeof left, o);
        fputs("| `", f);
        md_cell(f, left);
        fprintf(f, "` | %s | ", type_name(o));
        if (o->required)
            fputs("required", f);
        else if (o->def && o->type != OPT_FLAG)
            fprintf(f, "`%s`", o->def);
        fputs(" | ", f);
        range_text(range, sizeof range, o);
        if (o->type == OPT_ENUM) {
            choices_text(choices, sizeof choices, o, "`, `");
            fprintf(f, "`%s`", choices);
        } else if (range[0]) {
            md_cell(f, range);
        }
        fputs(" | ", f);
        md_cell(f, o->help);
        fputs(" |\n", f);
    }
    fputc('\n', f);
}

void options_reference_formats(FILE *f)
{
    fputs("## Values\n"
          "\n"
          "A **whole number** is written in decimal; **bytes** may take a unit K, M, G, T (or KiB, MiB, GiB, TiB:\n"
          "powers of 1024) or kB, MB, GB, TB (powers of 1000: `256MB` is 256,000,000); **seconds** and\n"
          "**milliseconds** are a number in that unit, or take a unit `ms`, `s`, `m` (minutes), `h`, `d`\n"
          "(`--token-ttl 1h` is `--token-ttl 3600`); a **share** is a number from 0 to 1;\n"
          "a **flag** takes no value; **one of** takes one of the values listed; **text** is any non-empty value\n"
          "without line breaks; a **repeatable** option may be given many times, each adding one value. A range\n"
          "`a..b` includes both ends; a number option whose accepted values end `or none` also takes `none`: no\n"
          "limit. A value outside its option's range, an unknown option or a missing required\n"
          "one is refused with a message naming the option and what it accepts (exit 2).\n"
          "\n"
          "## The config file (`--config FILE`)\n"
          "\n"
          "A command with a `--config FILE` option reads its options from that file too. One `key = value` per\n"
          "line, the key being the option's name without its `--`; the value is the rest of the line after the\n"
          "first `=` (blanks around it removed), written as on the command line. A line whose first non-blank\n"
          "character is `#` is a comment (a `#` later in a line belongs to the value); blank lines are ignored; a\n"
          "flag is `true` or `false`; a repeatable key may be given on several lines, any other key once. An\n"
          "unknown key or a bad value is refused naming the file, the line and the key (exit 2). Options on the\n"
          "command line override the file: a single value replaces the file's, and a repeatable option's values\n"
          "come after the file's.\n"
          "\n",
          f);
}

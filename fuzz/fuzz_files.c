/*
 * fuzz_files.c - libFuzzer target for the pure parsers of the files and texts the server reads from disk or
 * from its configuration, at start-up and while running: a damaged or tampered file must be refused with a
 * message, never crash the server or read past its buffer. The LMDB values (fuzz_codec.c), the records, CSV
 * and counter definitions (fuzz_record.c, fuzz_csv.c, fuzz_counter.c) have targets of their own.
 *
 * Input: the first byte picks the parser (its low six bits modulo the number of parsers, in the order of the
 * enum below) and a variant (its top two bits); the rest is the file or text, copied into a buffer of its
 * exact size (a C string, with a NUL after it, only where the parser's contract takes one).
 *
 * Beyond "no crash, no sanitizer report", on every input:
 *   - config (base/options.c): options_parse over a table of every option type, the argv NUL-separated
 *     after a 2-byte length of a --config file's text (variant 1: given, through a memfd, so that the real
 *     file path is read); accepted: every target within its type and range, every string non-empty, without
 *     line breaks, inside argv or the file's text; refused: a message, and a line that failed to split is
 *     never echoed. parse_duration_ms: format_duration_ms writes a text that parses back to the same value;
 *   - schema (pipeline/schema.c, schema_canon.c): refusals start "schema: " and leave the schema empty; an
 *     accepted schema keeps every bound of schema.h (name parts, paths, transforms and their parameters,
 *     identity fields only through their transforms, columns, types, dob_format); its canonical text is
 *     accepted, is a fixed point, and parses back to the same schema but for the order of "public",
 *     "columns" and "types" members (manifest_schema_hash equal once that order is set aside);
 *   - counters.state (views/counter_state.c; variant 1: the checksum made right first, to go past it):
 *     entries inside the file's bytes, counter_state_encode of what was read gives the file back (a file of the
 *     first format: one of the second that decodes to as many entries); each
 *     entry's definition and state loaded as a restart does (counter_def_parse, counter_load);
 *   - a counter's saved state (views/counter.c, counter_load; resolution and window from its own header):
 *     refused, the counter is left empty; accepted, counter_save's bytes load again with the same counts,
 *     and one save-load round later the bytes are a fixed point;
 *   - the lake's commits log (sinks/lake_log.c; variant 1: every crc32 made right first; variant 2: one
 *     line): an entry's positions are a range, its rows the sum of its files', its paths relative lake
 *     paths; lake_log_encode then lake_log_parse_line gives the same entry and the same line; a log's valid
 *     length ends a line, only its last line is torn, positions increase; lake_recovery_plan never removes
 *     the pending copy of a file of the last entry that is not in place, and renames every such file;
 *   - an import's checkpoint file (import/checkpoint.c, through a memfd path): found, its position saved
 *     (checkpoint_file_save) and its store form (import_position_offsets) read back the same; not found,
 *     a reason naming the file and the start position;
 *   - signal rules (notify/rules.c; variant 1: a rules file, an array): bounds of rules.h; rule_def_json
 *     parses back to the same rule and text; a rule of phrases only compiles, and each phrase matches a
 *     field whose text is the phrase itself;
 *   - times (base/timefmt.c): date_parse and time_parse_rfc3339 against time_format_rfc3339 and the civil
 *     date conversions (round trips); variant 1: a date format (up to the first NUL) and a date, a format
 *     date_format_check accepts parses what it writes; variant 2: time_format_rfc3339 of any int64;
 *   - query parameters (api/params.c, with a request built in memory): accepted values within bounds, a
 *     cursor and a patient id written back the same; a refusal answers 400 with a text that does not depend
 *     on the value (never echoed);
 *   - JSON (base/json_scan.c, json_write.c): json_scan_value, then json_iter over arrays and objects (the
 *     same members as json_scan_object), json_string_decode (valid UTF-8, never longer), and jw_string of
 *     any bytes without NUL is a string the scanner takes back, decoding to them when they are UTF-8;
 *   - the cluster key file (base/cluster_key.c): accepted, 64 hex digits and one line end at most, the key
 *     they write; refused, the key zeroed and a message that does not depend on the text's characters;
 *   - the roles file (access/access.c): accepted, the roles in force are the file's, and the table written
 *     back as a role file loads to the same permissions; refused, "role file: " and the table unchanged;
 *   - an export's spool rows (export/rows.c; variant: the record or patient columns, PHI or public, of a
 *     schema with typed fields): strings inside the entry, rows_encode of the row reads back the same row.
 * UBSan's reports stop the run as ASan's do (the fuzz build has -fno-sanitize-recover=undefined).
 * Not reached here, their parsing being inside a function that needs a store or reads a fixed path: the keys
 * file's header and slots (store/keys.c: st_keys_open, st_key_get), the --counters file's array (counters.c,
 * load_definitions; its elements are fuzz_counter.c's), an export's manifest read back by the client
 * (export/from_server.c, check_manifest), the lake's store marker (sink_lake.c), /proc and /sys counters
 * (base/metrics.c), a spool file's framing (export/spool.c, spool_read; its rows are here).
 * Build and run: make -j2 build/fuzz/fuzz_files, then
 *   build/fuzz/fuzz_files -max_total_time=240 -max_len=4096 -timeout=5 -rss_limit_mb=2048 build/fuzz/corpus_files
 * with fuzz/corpus_files/ copied into build/fuzz/corpus_files first (seeds: fuzz/corpus_files/).
 */
#include "fuzz_check.h"
#include "access/access.h"
#include "api/params.h"
#include "base/cluster_key.h"
#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/options.h"
#include "base/timefmt.h"
#include "export/manifest.h"
#include "export/rows.h"
#include "import/checkpoint.h"
#include "notify/rules.h"
#include "pipeline/identity.h"
#include "pipeline/schema.h"
#include "pipeline/schema_canon.h"
#include "pipeline/transforms.h"
#include "read/query.h"
#include "sinks/lake_log.h"
#include "views/counter.h"
#include "views/counter_def.h"
#include "views/counter_state.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>

enum {
    K_CONFIG,
    K_SCHEMA,
    K_COUNTER_STATE,
    K_COUNTER_SAVE,
    K_LAKE_LOG,
    K_CHECKPOINT,
    K_RULES,
    K_TIME,
    K_PARAMS,
    K_JSON,
    K_CLUSTER_KEY,
    K_ROLES,
    K_SPOOL_ROW,
    K_KINDS
};

/* A realistic clock for the parsers that take "now" (2025-06-15): the server passes its own. */
#define FUZZ_NOW_US ((int64_t)1750000000 * 1000000)

static int g_memfd = -1;         /* a file the parsers that take a path read the input from */
static char g_memfd_path[64];    /* /proc/self/fd/N */
static char g_tmpdir[64];        /* for the files a writer makes (checkpoint_file_save) */
static char g_ckpt_path[128];    /* g_tmpdir/checkpoint */
static schema g_typed;           /* a schema with typed and public fields: the spool rows' columns */
static export_columns g_cols[4]; /* records PHI, records public, patients PHI, patients public */

/* The bytes as a C string (for the parsers whose contract takes one): cut at the first NUL. */
static char *cstr_of(const uint8_t *p, size_t n)
{
    char *c = malloc(n + 1);
    CHECK(c != NULL);
    if (n) memcpy(c, p, n);
    c[n] = 0;
    return c;
}

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The memfd's content becomes [p, p + n). */
static void memfd_set(const void *p, size_t n)
{
    CHECK(ftruncate(g_memfd, 0) == 0);
    for (size_t at = 0; at < n;) {
        ssize_t w = pwrite(g_memfd, (const char *)p + at, n - at, (off_t)at);
        CHECK(w > 0);
        at += (size_t)w;
    }
}

/* ==== the config file and the command line (base/options.c) ==== */

/* serve's options of each type (src/cmd_serve.c: the same names, so that dist/medstream.conf is a seed) */
static const char *const g_formats[] = {"text", "json", NULL}, *const g_on_off[] = {"on", "off", NULL};
static const char *const g_history[] = {"periods", "trigger", "auto", NULL};
static const char *o_data, *o_listen, *o_metrics, *o_config;
static uint64_t o_body, o_header, o_ttl, o_conns, o_linger, o_limit;
static double o_share;
static int o_format, o_access, o_history;
static bool o_any;
static opt_list o_kafka;

#define TTL_MAX (86400ULL * 365)
#define FUZZ_OPTIONS(DATA_REQUIRED)                                                                                    \
    {.name = "--data",                                                                                                 \
     .type = OPT_STRING,                                                                                               \
     .target = &o_data,                                                                                                \
     .required = DATA_REQUIRED,                                                                                        \
     .metavar = "DIR",                                                                                                 \
     .help = "data directory"},                                                                                        \
        {.name = "--listen", .type = OPT_STRING, .target = &o_listen, .def = "127.0.0.1:8080", .help = "HTTP"},        \
        {.name = "--metrics-listen", .type = OPT_STRING, .target = &o_metrics, .help = "metrics"},                     \
        {.name = "--max-body",                                                                                         \
         .type = OPT_BYTES,                                                                                            \
         .target = &o_body,                                                                                            \
         .def = "64MiB",                                                                                               \
         .min = 64,                                                                                                    \
         .max = (uint64_t)1 << 40,                                                                                     \
         .help = "largest body"},                                                                                      \
        {.name = "--header-timeout",                                                                                   \
         .type = OPT_SECONDS,                                                                                          \
         .target = &o_header,                                                                                          \
         .def = "10",                                                                                                  \
         .min = 1,                                                                                                     \
         .max = 3600,                                                                                                  \
         .help = "header timeout"},                                                                                    \
        {.name = "--token-ttl",                                                                                        \
         .type = OPT_SECONDS,                                                                                          \
         .target = &o_ttl,                                                                                             \
         .def = "3600",                                                                                                \
         .min = 1,                                                                                                     \
         .max = TTL_MAX,                                                                                               \
         .unlimited = "none",                                                                                          \
         .help = "token lifetime"},                                                                                    \
        {.name = "--max-connections",                                                                                  \
         .type = OPT_UINT,                                                                                             \
         .target = &o_conns,                                                                                           \
         .def = "512",                                                                                                 \
         .min = 1,                                                                                                     \
         .max = 65536,                                                                                                 \
         .help = "connections"},                                                                                       \
        {.name = "--linger", .type = OPT_MILLIS, .target = &o_linger, .def = "50ms", .max = 60000, .help = "linger"},  \
        {.name = "--sample", .type = OPT_SHARE, .target = &o_share, .def = "0.5", .help = "share sampled"},            \
        {.name = "--log-format",                                                                                       \
         .type = OPT_ENUM,                                                                                             \
         .target = &o_format,                                                                                          \
         .choices = g_formats,                                                                                         \
         .def = "text",                                                                                                \
         .help = "log lines"},                                                                                         \
        {.name = "--access-log",                                                                                       \
         .type = OPT_ENUM,                                                                                             \
         .target = &o_access,                                                                                          \
         .choices = g_on_off,                                                                                          \
         .def = "on",                                                                                                  \
         .help = "access log"},                                                                                        \
        {.name = "--postgres-history",                                                                                 \
         .type = OPT_ENUM,                                                                                             \
         .target = &o_history,                                                                                         \
         .choices = g_history,                                                                                         \
         .def = "auto",                                                                                                \
         .help = "history"},                                                                                           \
        {.name = "--metrics-listen-any", .type = OPT_FLAG, .target = &o_any, .help = "any address"},                   \
        {.name = "--kafka-config", .type = OPT_LIST, .target = &o_kafka, .help = "a librdkafka setting"},              \
        {.name = "--limit", .type = OPT_UINT, .target = &o_limit, .unlimited = "none", .help = "a limit"},             \
        {.name = "--config", .type = OPT_CONFIG, .target = &o_config, .help = "read options from FILE"},               \
    {                                                                                                                  \
        0                                                                                                              \
    }

static const option g_opts[] = {FUZZ_OPTIONS(false)};
static const option g_opts_required[] = {FUZZ_OPTIONS(true)};

/* A string target: non-empty, without line breaks, inside argv's bytes or the config file's text. */
static bool option_string_ok(const char *s, const char *args, size_t args_len, const char *cfg, size_t cfg_len)
{
    size_t n = strlen(s);
    return n > 0 && !strpbrk(s, "\r\n") &&
           (fuzz_inside(s, n + 1, args, args_len + 1) || (cfg && fuzz_inside(s, n + 1, cfg, cfg_len + 1)));
}

static void fuzz_config(const uint8_t *d, size_t n, unsigned variant)
{
    if (n < 2) return;
    size_t cfg_len = (size_t)d[0] << 8 | d[1];
    d += 2, n -= 2;
    if (cfg_len > n) cfg_len = n;
    bool with_config = variant & 1;
    if (with_config) memfd_set(d, cfg_len);
    size_t args_len = n - cfg_len;
    char *args = cstr_of(d + cfg_len, args_len); /* NUL-separated arguments, a NUL after the last */
    char *argv[80];
    char config_flag[] = "--config";
    int argc = 0;
    if (with_config) argv[argc++] = config_flag, argv[argc++] = g_memfd_path;
    for (char *a = args; argc < 80 && a <= args + args_len; a += strlen(a) + 1) {
        if (!strcmp(a, "--config") || starts_with(a, "--config=")) { /* a path of the input's: not its text */
            free(args);
            return;
        }
        argv[argc++] = a;
    }
    const option *opts = variant & 2 ? g_opts_required : g_opts;
    options_args oa;
    options_status st = options_parse(opts, argc, argv, 0, 2, &oa);
    const char *cfg = oa.config_text;
    if (st == OPTIONS_OK) {
        CHECK(oa.npos >= 0 && oa.npos <= 2);
        for (int i = 0; i < oa.npos; i++)
            CHECK(fuzz_inside(oa.pos[i], strlen(oa.pos[i]) + 1, args, args_len + 1));
        CHECK(o_body >= 64 && o_body <= (uint64_t)1 << 40 && o_header >= 1 && o_header <= 3600);
        CHECK(o_ttl == UINT64_MAX || (o_ttl >= 1 && o_ttl <= TTL_MAX));
        CHECK(o_conns >= 1 && o_conns <= 65536 && o_linger <= 60000 && o_share >= 0.0 && o_share <= 1.0);
        CHECK(o_format >= 0 && o_format < 2 && o_access >= 0 && o_access < 2 && o_history >= 0 && o_history < 3);
        CHECK(option_string_ok(o_listen, args, args_len, cfg, cfg_len) || !strcmp(o_listen, "127.0.0.1:8080"));
        CHECK(!o_metrics || option_string_ok(o_metrics, args, args_len, cfg, cfg_len));
        CHECK(o_kafka.n >= 0 && o_kafka.n <= OPT_LIST_MAX && o_kafka.v[o_kafka.n] == NULL);
        for (int i = 0; i < o_kafka.n; i++)
            CHECK(option_string_ok(o_kafka.v[i], args, args_len, cfg, cfg_len));
        CHECK(o_data ? option_string_ok(o_data, args, args_len, cfg, cfg_len) : !(variant & 2));
        CHECK(!o_config || !strcmp(o_config, g_memfd_path) || fuzz_inside(o_config, 1, args, args_len + 1));
    } else if (st == OPTIONS_USAGE) {
        size_t el = strnlen(oa.err, sizeof oa.err);
        CHECK(el > 0 && el < sizeof oa.err);
        /* a line that did not split may hold a secret: only its place is named */
        if (starts_with(oa.err, g_memfd_path) && oa.err[strlen(g_memfd_path)] == ':') {
            const char *p = oa.err + strlen(g_memfd_path) + 1;
            while (isdigit((unsigned char)*p))
                p++;
            if (starts_with(p, ": expected 'key = value'"))
                CHECK(!strcmp(p, ": expected 'key = value' (a key is an option without its --)"));
        }
    }
    options_args_free(&oa);
    /* the value parsers alone, on every argument; format_duration_ms writes what parse_duration_ms reads */
    for (int i = 0; i < argc; i++) {
        uint64_t v, again;
        char t[48];
        if (parse_duration_ms(argv[i], 1000, &v)) {
            format_duration_ms(t, sizeof t, v);
            CHECK(parse_duration_ms(t, 1, &again) && again == v);
        }
        (void)parse_bytes(argv[i], &v);
    }
    if (args_len >= 8) {
        uint64_t v = (uint64_t)d[cfg_len] << 56 | (uint64_t)d[cfg_len + 1] << 48 | (uint64_t)d[cfg_len + 2] << 40 |
                     (uint64_t)d[cfg_len + 3] << 32 | (uint64_t)d[cfg_len + 4] << 24 | (uint64_t)d[cfg_len + 5] << 16 |
                     (uint64_t)d[cfg_len + 6] << 8 | d[cfg_len + 7],
                 again;
        char t[48];
        format_duration_ms(t, sizeof t, v);
        CHECK(parse_duration_ms(t, 1, &again) && again == v);
    }
    free(args);
}

/* ==== the schema file and its canonical text (pipeline/schema.c, schema_canon.c) ==== */

static bool nonempty(const char *s) { return s && *s; }

static bool is_name_part(const schema *s, const char *f)
{
    for (int i = 0; i < s->nname_parts; i++)
        if (!strcmp(s->name_parts[i], f)) return true;
    return false;
}

/* What schema.h promises of an accepted schema. */
static void check_schema(const schema *s)
{
    CHECK(s->nname_parts >= 1 && s->nname_parts <= SCHEMA_NAME_PARTS_MAX);
    buf joined = {0};
    for (int i = 0; i < s->nname_parts; i++) {
        CHECK(nonempty(s->name_parts[i]));
        CHECK(s->nname_parts == 1 || !strpbrk(s->name_parts[i], ".["));
        if (i) buf_putc(&joined, '+');
        buf_puts(&joined, s->name_parts[i]);
    }
    CHECK(nonempty(s->name_field) && !strcmp(joined.data, s->name_field));
    buf_free(&joined);
    CHECK(nonempty(s->dob_field) && nonempty(s->record_id_field) && nonempty(s->type_field));
    CHECK(nonempty(s->ts_field) && nonempty(s->parent_field) && nonempty(s->default_type));
    CHECK(!schema_is_identity_field(s, s->parent_field, strlen(s->parent_field)));
    CHECK(strcmp(s->parent_field, s->record_id_field) && strcmp(s->parent_field, s->type_field));
    CHECK(strcmp(s->parent_field, s->ts_field));
    CHECK(s->npub >= 0 && s->npub <= SCHEMA_MAX_PUBLIC);
    for (int i = 0; i < s->npub; i++) {
        const schema_public_field *p = &s->pub[i];
        CHECK(nonempty(p->field) && strlen(p->field) <= SCHEMA_FIELD_MAX);
        CHECK(p->nseg >= 1 && p->nseg <= SCHEMA_PATH_MAX);
        buf path = {0};
        for (int k = 0; k < p->nseg; k++) {
            CHECK(nonempty(p->seg[k].name) && !strpbrk(p->seg[k].name, ".[]"));
            if (k) buf_putc(&path, '.');
            buf_puts(&path, p->seg[k].name);
            if (p->seg[k].each) buf_puts(&path, "[]");
        }
        CHECK(!strcmp(path.data, p->field)); /* the segments are the path */
        buf_free(&path);
        CHECK(p->transform >= PUBLISH_COPY && p->transform <= PUBLISH_DROP);
        CHECK(p->width >= 1 && p->width <= TF_AGE_TOP && p->max_days >= 1 && p->max_days <= TF_DATE_SHIFT_MAX);
        CHECK(!p->patient_scope || p->transform == PUBLISH_PSEUDONYM);
        const char *top = p->seg[0].name;
        if (p->transform != PUBLISH_DROP && is_name_part(s, top))
            CHECK(p->transform == PUBLISH_PSEUDONYM && p->nseg == 1);
        if (p->transform != PUBLISH_DROP && !strcmp(top, s->dob_field))
            CHECK(p->nseg == 1 &&
                  (p->transform == PUBLISH_YEAR || p->transform == PUBLISH_AGE || p->transform == PUBLISH_AGE_BAND));
        for (int j = 0; j < i; j++) /* one max_days for every date_shift */
            if (p->transform == PUBLISH_DATE_SHIFT && s->pub[j].transform == PUBLISH_DATE_SHIFT)
                CHECK(p->max_days == s->pub[j].max_days);
    }
    CHECK(s->ncolumns >= 0 && s->ncolumns <= SCHEMA_MAX_COLUMNS);
    for (int i = 0; i < s->ncolumns; i++) {
        size_t cl = strlen(s->columns[i].column), fl = strlen(s->columns[i].field);
        CHECK(cl >= 1 && cl <= SCHEMA_FIELD_MAX && fl >= 1 && fl <= SCHEMA_FIELD_MAX);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(s->columns[i].column, s->columns[j].column));
    }
    CHECK(s->ntypes >= 0 && s->ntypes <= SCHEMA_MAX_COLUMNS);
    for (int i = 0; i < s->ntypes; i++) {
        const char *f = s->types[i].field;
        size_t fl = strlen(f);
        CHECK(fl >= 1 && fl <= SCHEMA_FIELD_MAX);
        CHECK(s->types[i].type >= FIELD_STRING && s->types[i].type <= FIELD_BOOLEAN);
        if (s->types[i].type != FIELD_STRING)
            CHECK(!schema_is_identity_field(s, f, fl) && !schema_is_record_field(s, f, fl) &&
                  strcmp(f, s->parent_field));
        for (int j = 0; j < i; j++)
            CHECK(strcmp(f, s->types[j].field));
    }
    CHECK(!s->dob_format || date_format_check(s->dob_format) == NULL);
}

static const schema_public_field *find_public(const schema *s, const char *field)
{
    for (int i = 0; i < s->npub; i++)
        if (!strcmp(s->pub[i].field, field)) return &s->pub[i];
    return NULL;
}

static bool same_str(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

/* The same schema, but for the order of "public", "columns" and "types" (members of objects). */
static bool same_schema(const schema *a, const schema *b)
{
    if (!same_str(a->name_field, b->name_field) || a->nname_parts != b->nname_parts ||
        !same_str(a->dob_field, b->dob_field) || !same_str(a->record_id_field, b->record_id_field) ||
        !same_str(a->type_field, b->type_field) || !same_str(a->ts_field, b->ts_field) ||
        !same_str(a->parent_field, b->parent_field) || !same_str(a->default_type, b->default_type) ||
        !same_str(a->dob_format, b->dob_format) || a->npub != b->npub || a->ncolumns != b->ncolumns ||
        a->ntypes != b->ntypes)
        return false;
    for (int i = 0; i < a->nname_parts; i++)
        if (strcmp(a->name_parts[i], b->name_parts[i])) return false;
    for (int i = 0; i < a->npub; i++) {
        const schema_public_field *p = &a->pub[i], *q = find_public(b, p->field);
        if (!q || p->transform != q->transform || p->width != q->width || p->max_days != q->max_days ||
            p->patient_scope != q->patient_scope || p->nseg != q->nseg)
            return false;
    }
    for (int i = 0; i < a->ncolumns; i++) {
        const char *f = schema_column_field(b, a->columns[i].column, strlen(a->columns[i].column));
        if (!f || strcmp(f, a->columns[i].field)) return false;
    }
    for (int i = 0; i < a->ntypes; i++) {
        bool found = false;
        for (int j = 0; j < b->ntypes && !found; j++)
            found = !strcmp(a->types[i].field, b->types[j].field) && a->types[i].type == b->types[j].type;
        if (!found) return false;
    }
    return true;
}

static int cmp_public(const void *x, const void *y)
{
    return strcmp(((const schema_public_field *)x)->field, ((const schema_public_field *)y)->field);
}

static int cmp_type(const void *x, const void *y)
{
    return strcmp(((const schema_field_type *)x)->field, ((const schema_field_type *)y)->field);
}

/* manifest_schema_hash with the allow-list and the types in the order of their names (a shallow copy). */
static void sorted_hash(const schema *s, char hex[65])
{
    schema t = *s;
    qsort(t.pub, (size_t)t.npub, sizeof *t.pub, cmp_public);
    t.types = malloc(sizeof *t.types * (size_t)(t.ntypes ? t.ntypes : 1));
    CHECK(t.types != NULL);
    if (t.ntypes) memcpy(t.types, s->types, sizeof *t.types * (size_t)t.ntypes);
    qsort(t.types, (size_t)t.ntypes, sizeof *t.types, cmp_type);
    manifest_schema_hash(&t, hex);
    free(t.types);
}

static void fuzz_schema(const uint8_t *d, size_t n)
{
    char *text = (char *)fuzz_copy(d, n);
    schema s;
    ms_err e = {0};
    ms_code rc = schema_parse(&s, text, n, &e);
    if (rc == MS_OK) {
        check_schema(&s);
    } else {
        CHECK(starts_with(e.msg, "schema: "));
        CHECK(!s.name_field && !s.npub && !s.ncolumns && !s.ntypes && !s.columns && !s.types && !s.dob_format);
    }
    buf c1 = {0}, c2 = {0};
    ms_err ce = {0};
    ms_code crc = schema_canonical(text, n, &c1, &ce);
    CHECK(rc != MS_OK || crc == MS_OK); /* a schema the server takes has a canonical text */
    if (crc == MS_OK) {
        char *c = (char *)fuzz_copy((const uint8_t *)c1.data, c1.len);
        CHECK(schema_canonical(c, c1.len, &c2, &ce) == MS_OK && c2.len == c1.len && !memcmp(c2.data, c, c1.len));
        json_type t;
        json_error je;
        CHECK(c1.len && json_scan_value(c, c, c + c1.len, &t, &je) == c + c1.len && t == JSON_OBJECT);
        if (rc == MS_OK) { /* the canonical text is the same schema, but for the order of object members */
            schema s2;
            CHECK(schema_parse(&s2, c, c1.len, &ce) == MS_OK);
            check_schema(&s2);
            CHECK(same_schema(&s, &s2) && same_schema(&s2, &s));
            char h1[65], h2[65];
            sorted_hash(&s, h1);
            sorted_hash(&s2, h2);
            CHECK(!strcmp(h1, h2));
            schema_free(&s2);
        }
        free(c);
    } else {
        CHECK(starts_with(ce.msg, "schema: "));
    }
    buf_free(&c1);
    buf_free(&c2);
    schema_free(&s);
    free(text);
}

/* ==== counters.state and a counter's saved state (views/counter_state.c, counter.c) ==== */

static void stats_of(const counter *c, counter_stats *st)
{
    counter_stats_get(c, st);
    st->memory = 0;
}

static bool same_stats(const counter_stats *a, const counter_stats *b)
{
    return a->late == b->late && a->future_buckets == b->future_buckets && a->parents == b->parents &&
           a->parent_buckets == b->parent_buckets && a->parent_dropped == b->parent_dropped;
}

/* Both counters answer the same over every window they can be asked (from one, at now). */
static void same_counts(counter *a, counter *b, int64_t res, int64_t w, int64_t now)
{
    const int64_t windows[] = {res, w * res, (w / 2 + 1) * res};
    for (int i = 0; i < 3; i++) {
        counter_answer x, y;
        ms_err e;
        ms_code ra = counter_count(a, windows[i], now, now, NULL, 0, &x, &e);
        ms_code rb = counter_count(b, windows[i], now, now, NULL, 0, &y, &e);
        CHECK(ra == rb);
        if (ra == MS_OK) CHECK(x.count == y.count && x.from == y.from && x.to == y.to && !x.incomplete);
    }
}

/* A fresh counter, and the bytes loaded into it from an exact-size copy; the status. */
static ms_code load_copy(counter **c, int64_t res, int64_t w, uint32_t pairs, const void *p, size_t n, int64_t now,
                         ms_err *e)
{
    unsigned char *copy = fuzz_copy(p, n);
    *c = counter_new(res, w * res, pairs);
    ms_code rc = counter_load(*c, copy, n, now, e);
    free(copy);
    return rc;
}

static void fuzz_counter_save(const uint8_t *d, size_t n, unsigned variant)
{
    /* the resolution and the window of the state's own header ("MSC2", be64 resolution, be64 W, started, be64
     * m), when small enough to allocate: a counter of another one refuses it at once */
    int64_t res = 1000000, w = 60, m = 0, now;
    if (n >= 20) {
        uint64_t r = ms_get_be64(d + 4), ww = ms_get_be64(d + 12);
        if (r >= 1 && r <= (uint64_t)1 << 40) res = (int64_t)r;
        if (ww >= 1 && ww <= 4096) w = (int64_t)ww;
    }
    if (n >= 29) m = (int64_t)ms_get_be64(d + 21);
    /* now: the saved position (the restart's usual case), three buckets after it, or the real clock */
    if (variant == 2 || __builtin_mul_overflow(m, res, &now) ||
        __builtin_add_overflow(now, variant ? 3 * res : 0, &now))
        now = FUZZ_NOW_US;
    counter *c1, *c2, *c3;
    ms_err e = {0};
    ms_code rc = load_copy(&c1, res, w, 16, d, n, now, &e);
    counter_stats st1, st2, st3;
    stats_of(c1, &st1);
    if (rc != MS_OK) {
        CHECK(starts_with(e.msg, "counter state: "));
        CHECK(!st1.late && !st1.future_buckets && !st1.parents && !st1.parent_buckets && !st1.parent_dropped);
        counter_free(c1);
        return;
    }
    buf s1 = {0}, s2 = {0}, s3 = {0};
    counter_save(c1, &s1);
    CHECK(load_copy(&c2, res, w, 16, s1.data, s1.len, now, &e) == MS_OK); /* what it writes, it reads */
    stats_of(c2, &st2);
    CHECK(st2.late == st1.late && st2.parent_dropped == st1.parent_dropped);
    CHECK(st2.future_buckets == st1.future_buckets && st2.parent_buckets <= st1.parent_buckets);
    same_counts(c1, c2, res, w, now);
    /* one round later (pairs that had aged are gone): a fixed point */
    counter_save(c2, &s2);
    CHECK(load_copy(&c3, res, w, 16, s2.data, s2.len, now, &e) == MS_OK);
    stats_of(c3, &st3);
    CHECK(same_stats(&st2, &st3));
    same_counts(c2, c3, res, w, now);
    counter_save(c3, &s3);
    CHECK(s3.len == s2.len && (st2.parents > 1 || !memcmp(s2.data, s3.data, s2.len)));
    buf_free(&s1);
    buf_free(&s2);
    buf_free(&s3);
    counter_free(c1);
    counter_free(c2);
    counter_free(c3);
}

static void fuzz_counter_state(const uint8_t *d, size_t n, unsigned variant)
{
    unsigned char *val = n ? fuzz_copy(d, n) : NULL; /* an empty file's buf has no bytes (buf_read_file) */
    if ((variant & 1) && n >= 8) ms_set_be64(val + n - 8, XXH3_64bits(val, n - 8)); /* past the checksum */
    buf b = {.data = (char *)val, .len = n, .cap = n};
    counter_state st;
    ms_err e = {0};
    if (counter_state_decode(&st, &b, &e) == MS_OK) {
        const unsigned char *raw = (const unsigned char *)st.raw.data;
        CHECK(b.data == NULL && raw == val && st.raw.len == n && st.n <= 100000);
        for (uint32_t i = 0; i < st.n; i++)
            CHECK(fuzz_inside(st.entries[i].def, st.entries[i].def_len, raw, n) &&
                  fuzz_inside(st.entries[i].state, st.entries[i].state_len, raw, n));
        buf out = {0};
        counter_state_encode(&out, st.position, st.commit_time, st.saved_at, st.schema_version, st.entries, st.n);
        if (n >= 6 && !memcmp(raw, "MSCS1\n", 6)) { /* the first format is read, never written: the second's */
            counter_state again;
            ms_err ae;
            CHECK(counter_state_decode(&again, &out, &ae) == MS_OK && again.n == st.n && again.schema_version == 0);
            counter_state_free(&again);
        } else {
            CHECK(fuzz_same_bytes(&out, raw, n));
        }
        buf_free(&out);
        /* as a restart uses them (counters.c, load_state): each definition, and its state in a counter of it */
        for (uint32_t i = 0; i < st.n && i < 4; i++) {
            counter_def def;
            ms_err de;
            if (counter_def_parse(&def, st.entries[i].def, st.entries[i].def_len, &de) != MS_OK) continue;
            if (def.max_window_us / def.resolution_us <= 4096) {
                counter *c =
                    counter_new(def.resolution_us, def.max_window_us, def.per_parent ? def.max_parent_buckets : 0);
                unsigned char *copy = fuzz_copy(st.entries[i].state, st.entries[i].state_len);
                if (counter_load(c, copy, st.entries[i].state_len, FUZZ_NOW_US, &de) != MS_OK)
                    CHECK(starts_with(de.msg, "counter state: "));
                free(copy);
                counter_free(c);
            }
            counter_def_free(&def);
        }
    } else {
        CHECK(starts_with(e.msg, "counters state: "));
        CHECK(!st.entries && !st.n && !st.raw.data);
    }
    counter_state_free(&st);
}

/* ==== the lake's commits log (sinks/lake_log.c) ==== */

#define CRC_TAIL ",\"crc32\":\""
#define CRC_TAIL_LEN (sizeof CRC_TAIL - 1 + 8 + 2)

/* A line shaped like a whole one gets the crc32 its bytes have, so that the fuzzer goes past the check. */
static void repair_crc(unsigned char *line, size_t len)
{
    if (len < CRC_TAIL_LEN || memcmp(line + len - CRC_TAIL_LEN, CRC_TAIL, sizeof CRC_TAIL - 1) ||
        line[len - 1] != '}' || line[len - 2] != '"')
        return;
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), line, (uInt)(len - CRC_TAIL_LEN));
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++)
        line[len - 10 + i] = (unsigned char)hex[(crc >> (28 - 4 * i)) & 15];
}

static bool lake_path_ok(const char *p)
{
    if (!starts_with(p, "records/") && !starts_with(p, "deletions/")) return false;
    for (const char *c = p;;) {
        const char *s = strchr(c, '/');
        size_t l = s ? (size_t)(s - c) : strlen(c);
        if (l == 0 || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) return false;
        if (!s) return true;
        c = s + 1;
    }
}

static bool same_files(const lake_file *a, const lake_file *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].path, b[i].path) || a[i].rows != b[i].rows || a[i].bytes != b[i].bytes ||
            memcmp(a[i].sha256, b[i].sha256, 32))
            return false;
    return true;
}

static bool same_entry(const lake_entry *a, const lake_entry *b)
{
    return a->from == b->from && a->to == b->to && a->commit_time_us == b->commit_time_us && a->rows == b->rows &&
           a->nfiles == b->nfiles && a->nrewritten == b->nrewritten && same_files(a->files, b->files, a->nfiles) &&
           same_files(a->rewritten, b->rewritten, a->nrewritten);
}

/* An accepted line's entry: its promises, and lake_log_encode writes a line that reads back the same. */
static void check_entry(const lake_entry *en)
{
    CHECK(en->from >= 1 && en->from <= en->to);
    uint64_t rows = 0;
    for (size_t i = 0; i < en->nfiles; i++) {
        CHECK(lake_path_ok(en->files[i].path));
        rows += en->files[i].rows;
    }
    CHECK(rows == en->rows);
    for (size_t i = 0; i < en->nrewritten; i++)
        CHECK(lake_path_ok(en->rewritten[i].path));
    buf l1 = {0}, l2 = {0};
    lake_log_encode(en, &l1);
    CHECK(l1.len > 1 && l1.data[l1.len - 1] == '\n' && !memchr(l1.data, '\n', l1.len - 1));
    char *c = (char *)fuzz_copy((const uint8_t *)l1.data, l1.len - 1);
    lake_entry again;
    ms_err e;
    CHECK(lake_log_parse_line(c, l1.len - 1, &again, &e) == MS_OK);
    CHECK(same_entry(en, &again));
    lake_log_encode(&again, &l2);
    CHECK(l2.len == l1.len && !memcmp(l1.data, l2.data, l1.len));
    lake_entry_free(&again);
    free(c);
    buf_free(&l1);
    buf_free(&l2);
}

static bool plan_visible(void *ctx, const char *path)
{
    unsigned seed = *(const unsigned *)ctx;
    return (XXH3_64bits(path, strlen(path)) ^ seed) & 1;
}

/* The start's plan for tmp, given the last entry: tmp holds the pending copies of some of its files (picked
 * by seed), a pending file of a roll that never reached the log and a partial file. */
static void check_plan(const lake_entry *last, unsigned seed)
{
    const char **names = malloc(sizeof *names * (last->nfiles + 2));
    buf *pend = calloc(last->nfiles + 1, sizeof *pend);
    CHECK(names && pend);
    size_t ntmp = 0;
    const char *others[2] = {"part-00000000000000000001-00000.parquet" LAKE_PENDING_SUFFIX, ".part.tmp"};
    for (size_t i = 0; i < last->nfiles + 2; i++) { /* a directory's names: each once */
        const char *name = others[i % 2];
        if (i < last->nfiles) {
            lake_pending_name(last->files[i].path, &pend[i]);
            if (!((seed >> (i % 16)) & 1)) continue;
            name = pend[i].data;
        }
        bool dup = false;
        for (size_t k = 0; k < ntmp; k++)
            dup = dup || !strcmp(names[k], name);
        if (!dup) names[ntmp++] = name;
    }
    lake_plan plan;
    ms_err e = {0};
    if (lake_recovery_plan(last, names, ntmp, plan_visible, &seed, &plan, &e) == MS_OK) {
        CHECK(plan.nrename <= last->nfiles && plan.nremove <= ntmp);
        for (size_t i = 0; i < last->nfiles; i++) {
            bool visible = plan_visible(&seed, last->files[i].path), renamed = false;
            for (size_t k = 0; k < plan.nrename; k++)
                if (plan.rename_to[k] == last->files[i].path) {
                    CHECK(!visible && !strcmp(plan.rename_from[k], pend[i].data));
                    renamed = true;
                }
            CHECK(visible || renamed); /* every file of the last entry ends up in place */
            for (size_t k = 0; k < plan.nremove && !visible; k++)
                CHECK(strcmp(plan.remove[k], pend[i].data)); /* never its only copy */
        }
        for (size_t t = 0; t < ntmp; t++) { /* every name in tmp is renamed or removed */
            bool handled = false;
            for (size_t k = 0; k < plan.nrename; k++)
                handled = handled || !strcmp(plan.rename_from[k], names[t]);
            for (size_t k = 0; k < plan.nremove; k++)
                handled = handled || plan.remove[k] == names[t];
            CHECK(handled);
        }
        lake_plan_free(&plan);
    } else {
        CHECK(strstr(e.msg, "neither in place nor pending") != NULL);
        bool lost = false;
        for (size_t i = 0; i < last->nfiles && !lost; i++) {
            bool pending = false;
            for (size_t t = 0; t < ntmp; t++)
                pending = pending || !strcmp(names[t], pend[i].data);
            lost = !plan_visible(&seed, last->files[i].path) && !pending;
        }
        CHECK(lost);
    }
    for (size_t i = 0; i < last->nfiles; i++)
        buf_free(&pend[i]);
    free(pend);
    free(names);
}

static void fuzz_lake_log(const uint8_t *d, size_t n, unsigned variant)
{
    unsigned char *text = fuzz_copy(d, n);
    if (variant & 1)
        for (size_t at = 0; at < n;) {
            unsigned char *nl = memchr(text + at, '\n', n - at);
            size_t len = nl ? (size_t)(nl - (text + at)) : n - at;
            repair_crc(text + at, len);
            at += len + 1;
        }
    unsigned seed = (unsigned)n * 2654435761u;
    ms_err e = {0};
    if (variant & 2) { /* one line */
        lake_entry en;
        if (lake_log_parse_line((const char *)text, n, &en, &e) == MS_OK) {
            check_entry(&en);
            check_plan(&en, seed);
            lake_entry_free(&en);
        } else {
            CHECK(e.msg[0] && !en.files && !en.rewritten && !en.nfiles);
        }
        free(text);
        return;
    }
    lake_log_state st;
    if (lake_log_read((const char *)text, n, &st, &e) == MS_OK) {
        CHECK(st.valid_len <= n && (!st.valid_len || text[st.valid_len - 1] == '\n'));
        CHECK(st.torn == (st.valid_len < n));
        uint64_t lines = 0;
        lake_entry prev = {0};
        for (size_t at = 0; at < st.valid_len; lines++) { /* every whole line is valid, positions increase */
            const unsigned char *nl = memchr(text + at, '\n', st.valid_len - at);
            CHECK(nl != NULL);
            lake_entry en;
            ms_err le;
            CHECK(lake_log_parse_line((const char *)text + at, (size_t)(nl - (text + at)), &en, &le) == MS_OK);
            CHECK(!lines || en.from > prev.to);
            lake_entry_free(&prev);
            prev = en;
            at = (size_t)(nl - text) + 1;
        }
        CHECK(lines == st.entries);
        if (st.entries) {
            CHECK(same_entry(&prev, &st.last));
            check_entry(&st.last);
            check_plan(&st.last, seed);
        }
        lake_entry_free(&prev);
        if (st.torn) { /* only the last line: one that does not end, or that fails its checks */
            const unsigned char *rest = text + st.valid_len, *nl = memchr(rest, '\n', n - st.valid_len);
            if (nl) {
                CHECK(!memchr(nl + 1, '\n', n - (size_t)(nl + 1 - text)));
                lake_entry en;
                ms_err le;
                CHECK(lake_log_parse_line((const char *)rest, (size_t)(nl - rest), &en, &le) != MS_OK);
            }
        }
        lake_log_state_free(&st);
    } else {
        CHECK(starts_with(e.msg, "line ") && !st.entries && !st.last.files);
    }
    free(text);
}

/* ==== an import's checkpoint file (import/checkpoint.c) ==== */

static unsigned char g_ident[32];
static const char g_url[] = "http://127.0.0.1:8080";

static bool same_position(const import_position *a, const import_position *b)
{
    return a->offset == b->offset && a->line == b->line && a->rows == b->rows && a->rejected == b->rejected &&
           a->rejects_bytes == b->rejects_bytes && a->done == b->done && a->replay_until == b->replay_until;
}

static uint64_t clamp(uint64_t v) { return v > IMPORT_REPLAY_ALL ? IMPORT_REPLAY_ALL : v; }

static void fuzz_checkpoint(const uint8_t *d, size_t n)
{
    memfd_set(d, n);
    import_position p, q;
    bool found;
    char why[512];
    ms_err e = {0};
    CHECK(checkpoint_file_load(g_memfd_path, g_ident, g_url, &p, &found, why, sizeof why, &e) == MS_OK);
    if (!found) {
        import_position start = IMPORT_POSITION_START;
        CHECK(starts_with(why, g_memfd_path) && same_position(&p, &start));
        return;
    }
    CHECK(!why[0] && p.line >= 1);
    /* the file's form: saved, then loaded again (replay_until is written at most IMPORT_REPLAY_ALL) */
    import_position want = p;
    want.replay_until = clamp(p.replay_until);
    CHECK(checkpoint_file_save(g_ckpt_path, g_ident, g_url, &p, &e) == MS_OK);
    CHECK(checkpoint_file_load(g_ckpt_path, g_ident, g_url, &q, &found, why, sizeof why, &e) == MS_OK && found);
    CHECK(same_position(&q, &want));
    unlink(g_ckpt_path);
    /* the store's form: the source positions of a batch, and back (each value at most IMPORT_REPLAY_ALL) */
    source_offset so[IMPORT_POSITION_PARTS];
    import_position_offsets(&p, "import:fuzz", so);
    int64_t parts[IMPORT_POSITION_PARTS];
    bool have[IMPORT_POSITION_PARTS];
    for (int i = 0; i < IMPORT_POSITION_PARTS; i++) {
        CHECK(so[i].partition == i && so[i].next >= 0);
        parts[i] = so[i].next;
        have[i] = true;
    }
    want = (import_position){clamp(p.offset),        clamp(p.line), clamp(p.rows),        clamp(p.rejected),
                             clamp(p.rejects_bytes), p.done,        clamp(p.replay_until)};
    CHECK(import_position_from_parts(parts, have, &q) && same_position(&q, &want));
}

/* ==== signal rules (notify/rules.c) ==== */

static bool same_list(char *const *a, char *const *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(a[i], b[i])) return false;
    return true;
}

static bool same_rule(const rule_def *a, const rule_def *b)
{
    return !strcmp(a->name, b->name) && a->nfields == b->nfields && a->nany == b->nany && a->nregex == b->nregex &&
           a->ntypes == b->ntypes && a->whole_words == b->whole_words && same_list(a->fields, b->fields, a->nfields) &&
           same_list(a->any, b->any, a->nany) && same_list(a->regex, b->regex, a->nregex) &&
           same_list(a->types, b->types, a->ntypes);
}

static bool blank(const char *s)
{
    for (; *s; s++)
        if (!strchr(" \t\n\r\f\v", *s)) return false;
    return true;
}

static void check_list(char *const *v, uint32_t n, uint32_t max_items, size_t max_len)
{
    CHECK(n <= max_items);
    for (uint32_t i = 0; i < n; i++)
        CHECK(v[i] && strlen(v[i]) >= 1 && strlen(v[i]) <= max_len);
}

/* rules.h's bounds; rule_def_json reads back the same rule and writes the same text; a copy is the same. */
static void check_rule(const rule_def *r)
{
    CHECK(rule_name_valid(r->name, strlen(r->name)));
    CHECK(r->nfields >= 1 && r->nany + r->nregex >= 1);
    check_list(r->fields, r->nfields, RULE_FIELDS_MAX, 1024);
    check_list(r->any, r->nany, RULE_PHRASES_MAX, RULE_PHRASE_MAX);
    check_list(r->regex, r->nregex, RULE_REGEXES_MAX, RULE_REGEX_MAX);
    check_list(r->types, r->ntypes, RULE_TYPES_MAX, 64);
    for (uint32_t i = 0; i < r->nany; i++)
        CHECK(!blank(r->any[i]));
    buf j1 = {0}, j2 = {0};
    rule_def_json(r, &j1);
    char *c = (char *)fuzz_copy((const uint8_t *)j1.data, j1.len);
    rule_def again, copy;
    ms_err e;
    CHECK(rule_parse(c, j1.len, &again, &e) == MS_OK && same_rule(r, &again));
    rule_def_json(&again, &j2);
    CHECK(j2.len == j1.len && !memcmp(j1.data, j2.data, j1.len));
    rule_def_copy(&copy, r);
    CHECK(same_rule(r, &copy));
    rule_def_free(&copy);
    rule_def_free(&again);
    free(c);
    buf_free(&j1);
    buf_free(&j2);
}

/* Rules of phrases only (few: compiling costs) compile, and each phrase matches a text that is itself, in a
 * field its rule searches, of a type its rule takes. */
static void check_compile(const rule_def *rules, size_t n)
{
    uint32_t phrases = 0;
    for (size_t i = 0; i < n; i++) {
        if (rules[i].nregex) return;
        phrases += rules[i].nany;
    }
    if (n == 0 || n > 8 || phrases > 16) return;
    const rule_def **v = malloc(sizeof *v * n);
    CHECK(v != NULL);
    for (size_t i = 0; i < n; i++)
        v[i] = &rules[i];
    rule_set *rs;
    ms_err e = {0};
    CHECK(rule_set_compile(v, n, &rs, &e) == MS_OK); /* a rule rule_parse took compiles */
    rule_scratch *sc = rule_scratch_new();
    CHECK(rule_scratch_fit(sc, rs, &e) == MS_OK);
    for (size_t i = 0; i < n; i++) {
        const rule_def *r = rule_set_rule(rs, i);
        const char *field = r->fields[0], *type = r->ntypes ? r->types[0] : "note";
        long f = -1;
        for (size_t k = 0; k < rule_set_field_count(rs); k++)
            if (!strcmp(rule_set_field(rs, k), field)) f = (long)k;
        CHECK(f >= 0);
        for (uint32_t j = 0; j < r->nany; j++) {
            rule_text t = {field, strlen(field), r->any[j], strlen(r->any[j])};
            const rule_hit *hits;
            size_t nh = rule_set_match_texts(rs, sc, type, strlen(type), &t, 1, &hits);
            bool hit = false;
            for (size_t k = 0; k < nh; k++)
                hit = hit || (hits[k].rule == i && hits[k].field == (uint32_t)f);
            CHECK(hit);
        }
    }
    rule_scratch_free(sc);
    rule_set_free(rs);
    free(v);
}

static void fuzz_rules(const uint8_t *d, size_t n, unsigned variant)
{
    char *text = n ? (char *)fuzz_copy(d, n) : NULL; /* an empty rules file's buf has no bytes (notifier.c) */
    ms_err e = {0};
    if (variant & 1) { /* a rules file */
        rule_def *v = NULL;
        size_t k = 0;
        if (rules_parse_list(text, n, &v, &k, &e) == MS_OK) {
            buf arr = {0};
            buf_putc(&arr, '[');
            for (size_t i = 0; i < k; i++) {
                check_rule(&v[i]);
                for (size_t j = 0; j < i; j++)
                    CHECK(strcmp(v[i].name, v[j].name));
                if (i) buf_putc(&arr, ',');
                rule_def_json(&v[i], &arr);
            }
            buf_putc(&arr, ']');
            char *c = (char *)fuzz_copy((const uint8_t *)arr.data, arr.len);
            rule_def *w = NULL;
            size_t kw = 0;
            CHECK(rules_parse_list(c, arr.len, &w, &kw, &e) == MS_OK && kw == k);
            for (size_t i = 0; i < k; i++) {
                CHECK(same_rule(&v[i], &w[i]));
                rule_def_free(&w[i]);
            }
            free(w);
            free(c);
            buf_free(&arr);
            check_compile(v, k);
            for (size_t i = 0; i < k; i++)
                rule_def_free(&v[i]);
            free(v);
        } else {
            CHECK(e.msg[0]);
        }
    } else {
        rule_def r;
        if (rule_parse(text, n, &r, &e) == MS_OK) {
            check_rule(&r);
            check_compile(&r, 1);
            rule_def_free(&r);
        } else {
            CHECK(starts_with(e.msg, "rule"));
        }
    }
    free(text);
}

/* ==== times and dates (base/timefmt.c) ==== */

static void check_time_format(int64_t us)
{
    char t[64];
    time_format_rfc3339(us, t, sizeof t);
    int year = time_year(us);
    if (year >= 1 && year <= 9999) { /* what it writes in the years RFC 3339 has, it reads */
        int64_t again;
        CHECK(strlen(t) == 27 && time_parse_rfc3339(t, 27, &again) && again == us);
    }
}

/* A date written with a format (%Y, %m, %d two digits, %b, %%). */
static void write_date(const char *fmt, int y, int m, int d, buf *out)
{
    static const char *const mon[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            buf_putc(out, *f);
            continue;
        }
        switch (*++f) {
        case 'Y': buf_printf(out, "%04d", y); break;
        case 'm': buf_printf(out, "%02d", m); break;
        case 'd': buf_printf(out, "%02d", d); break;
        case 'b': buf_puts(out, mon[m - 1]); break;
        default: buf_putc(out, '%'); break;
        }
    }
}

static void fuzz_time(const uint8_t *d, size_t n, unsigned variant)
{
    if (variant == 2) { /* the writer over every int64 */
        if (n < 8) return;
        check_time_format((int64_t)ms_get_be64(d));
        return;
    }
    if (variant == 1) { /* a date format (up to the first NUL, a C string), then a date */
        const uint8_t *nul = memchr(d, 0, n);
        if (!nul) return;
        char *fmt = cstr_of(d, (size_t)(nul - d));
        size_t tn = n - (size_t)(nul + 1 - d);
        char *text = (char *)fuzz_copy(nul + 1, tn);
        const char *why = date_format_check(fmt);
        if (!why) {
            int y = 0, m = 0, dd = 0, y2 = 0, m2 = 0, d2 = 0;
            const char *r = date_parse_format(fmt, text, tn, &y, &m, &dd);
            if (!r) {
                CHECK(date_is_real(y, m, dd));
                buf w = {0};
                write_date(fmt, y, m, dd, &w);
                char *c = (char *)fuzz_copy((const uint8_t *)w.data, w.len);
                CHECK(date_parse_format(fmt, c, w.len, &y2, &m2, &d2) == NULL && y2 == y && m2 == m && d2 == dd);
                free(c);
                buf_free(&w);
            } else {
                CHECK(!strcmp(r, "does not match the date format") || !strcmp(r, "is not a real date"));
            }
        } else {
            CHECK(why[0]);
        }
        free(fmt);
        free(text);
        return;
    }
    char *s = (char *)fuzz_copy(d, n);
    int y, m, dd;
    if (date_parse(s, n, &y, &m, &dd)) {
        CHECK(n == 10 && date_is_real(y, m, dd));
        char t[32];
        snprintf(t, sizeof t, "%04d-%02d-%02d", y, m, dd);
        CHECK(!memcmp(t, s, 10));
        int64_t yy;
        unsigned mm, ddd;
        civil_from_days(days_from_civil(y, (unsigned)m, (unsigned)dd), &yy, &mm, &ddd);
        CHECK(yy == y && mm == (unsigned)m && ddd == (unsigned)dd);
    }
    int64_t us;
    if (time_parse_rfc3339(s, n, &us)) {
        CHECK(n >= 20 && date_parse(s, 10, &y, &m, &dd));
        int year = time_year(us);
        CHECK(year >= y - 1 && year <= y + 1);
        check_time_format(us);
    }
    free(s);
}

/* ==== query parameters (api/params.c) ==== */

enum { P_LIMIT, P_YEAR, P_TIME, P_AS_OF, P_CURSOR, P_PID, P_KINDS };

typedef struct {
    uint32_t limit;
    int year;
    int64_t time;
    cursor_buf cursor;
    patient_id pid;
} param_out;

static bool get_param(int which, const char *value, http_response *res, param_out *o)
{
    static http_request req;
    static const char *const names[P_KINDS] = {"limit", "since", "until", "as_of", "cursor", "id"};
    memset(&req, 0, sizeof req);
    req.args[0] = (http_arg){names[which], value};
    req.nargs = 1;
    switch (which) {
    case P_LIMIT: return get_limit(&req, res, &o->limit);
    case P_YEAR: return get_year(&req, res, names[which], &o->year);
    case P_TIME: return get_time(&req, res, names[which], &o->time);
    case P_AS_OF: return get_as_of(&req, res, NULL, false, &o->time);
    case P_CURSOR: return get_cursor(&req, res, &o->cursor);
    default: return get_pid(value, res, &o->pid);
    }
}

static void fuzz_params(const uint8_t *d, size_t n)
{
    if (n < 1) return;
    int which = d[0] % P_KINDS;
    char *v = cstr_of(d + 1, n - 1);                             /* a query value is a C string */
    if (which == P_AS_OF && !strncmp(v, "snap_", 5)) v[0] = 'S'; /* a snapshot id is looked up in a store */
    http_response res, other;
    memset(&res, 0, sizeof res);
    memset(&other, 0, sizeof other);
    param_out o;
    memset(&o, 0, sizeof o);
    size_t vl = strlen(v);
    if (get_param(which, v, &res, &o)) {
        int64_t us;
        switch (which) {
        case P_LIMIT: CHECK(o.limit >= 1 && o.limit <= 1000); break;
        case P_YEAR: CHECK(o.year >= 0 && o.year <= 10000); break;
        case P_TIME:
        case P_AS_OF: CHECK(time_parse_rfc3339(v, vl, &us) && us == o.time); break;
        case P_CURSOR: {
            CHECK(o.cursor.len == vl / 2 && o.cursor.len <= sizeof o.cursor.key);
            buf c = {0};
            cursor_encode(o.cursor.key, o.cursor.len, &c);
            CHECK(c.len == vl + 2 && c.data[0] == '"' && !memcmp(c.data + 1, v, vl) && c.data[vl + 1] == '"');
            buf_free(&c);
            break;
        }
        default: {
            char t[PATIENT_ID_TEXT];
            patient_id_format(&o.pid, t);
            CHECK(strlen(t) == vl);
            for (size_t i = 0; i < vl; i++)
                CHECK(t[i] == tolower((unsigned char)v[i]));
        }
        }
    } else { /* 400, and a message that does not depend on the value: it is never echoed */
        CHECK(res.status == 400 && res.body.len > 0);
        CHECK(!get_param(which, "\x01", &other, &o));
        CHECK(other.status == 400 && fuzz_same_bytes(&other.body, res.body.data, res.body.len));
    }
    buf_free(&res.body);
    buf_free(&other.body);
    free(v);
}

/* ==== JSON (base/json_scan.c, json_write.c) ==== */

static void check_string(const char *v, size_t vl)
{
    size_t rl = vl - 2;
    char *dec = malloc(rl ? rl : 1);
    CHECK(dec != NULL);
    size_t dl = json_string_decode(v + 1, rl, dec);
    CHECK(dl <= rl && utf8_check(dec, dl) == dl && !memchr(dec, 0, dl));
    buf w = {0};
    jw_string(&w, dec, dl);
    char *c = (char *)fuzz_copy((const uint8_t *)w.data, w.len);
    json_type t;
    json_error je;
    CHECK(json_scan_value(c, c, c + w.len, &t, &je) == c + w.len && t == JSON_STRING);
    char *dec2 = malloc(w.len);
    CHECK(dec2 != NULL);
    size_t dl2 = json_string_decode(c + 1, w.len - 2, dec2);
    CHECK(dl2 == dl && !memcmp(dec, dec2, dl));
    free(dec2);
    free(c);
    buf_free(&w);
    free(dec);
}

/* The elements of an array or the members of an object, walked with json_iter: inside the value, each one
 * a whole value, the walk ending at the closing bracket; an object's members are json_scan_object's. */
static void check_container(const char *v, size_t vl, json_type type)
{
    json_iter it = json_iter_begin(v, vl);
    json_member m[64];
    json_error je;
    int nm = type == JSON_OBJECT ? json_scan_object(v, vl, m, 64, &je) : -1;
    CHECK(type != JSON_OBJECT || nm >= 0 || strstr(je.msg, "too many"));
    const char *ev, *key;
    size_t el, kl;
    json_type t, t2;
    int k = 0;
    json_error err;
    if (type == JSON_ARRAY) {
        while (json_iter_element(&it, &ev, &el, &t)) {
            CHECK(fuzz_inside(ev, el, v, vl) && json_scan_value(v, ev, ev + el, &t2, &err) == ev + el && t2 == t);
            k++;
        }
    } else {
        while (json_iter_member(&it, &key, &kl, &ev, &el, &t)) {
            CHECK(fuzz_inside(key - 1, kl + 2, v, vl) && key[-1] == '"' && key[kl] == '"' &&
                  fuzz_inside(ev, el, v, vl));
            CHECK(json_scan_value(v, ev, ev + el, &t2, &err) == ev + el && t2 == t);
            if (k < nm)
                CHECK(m[k].key == key && m[k].key_len == kl && m[k].val == ev && m[k].val_len == el && m[k].type == t);
            k++;
        }
        CHECK(nm < 0 || k == nm);
    }
    CHECK(it.p == v + vl - 1 && *it.p == (type == JSON_ARRAY ? ']' : '}'));
}

static void fuzz_json(const uint8_t *d, size_t n)
{
    char *text = (char *)fuzz_copy(d, n);
    const char *end = text + n, *p = json_skip_ws(text, end);
    json_type t;
    json_error je;
    const char *vend = json_scan_value(text, p, end, &t, &je);
    if (vend) {
        CHECK(vend > p && vend <= end);
        size_t vl = (size_t)(vend - p);
        if (t == JSON_STRING)
            check_string(p, vl);
        else if (t == JSON_ARRAY || t == JSON_OBJECT)
            check_container(p, vl, t);
    } else {
        CHECK(je.offset <= n && je.msg[0]);
    }
    /* jw_string of any bytes without NUL: a string the scanner takes, the same bytes when they are UTF-8 */
    if (!memchr(text, 0, n)) {
        buf w = {0};
        jw_string(&w, text, n);
        char *c = (char *)fuzz_copy((const uint8_t *)w.data, w.len);
        CHECK(json_scan_value(c, c, c + w.len, &t, &je) == c + w.len && t == JSON_STRING);
        char *dec = malloc(w.len);
        CHECK(dec != NULL);
        size_t dl = json_string_decode(c + 1, w.len - 2, dec);
        CHECK(utf8_check(text, n) != n || (dl == n && !memcmp(dec, text, n)));
        free(dec);
        free(c);
        buf_free(&w);
    }
    free(text);
}

/* ==== the cluster key file (base/cluster_key.c) ==== */

static int hex_of(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void fuzz_cluster_key(const uint8_t *d, size_t n)
{
    char *text = (char *)fuzz_copy(d, n);
    unsigned char key[CLUSTER_KEY_BYTES];
    ms_err e = {0};
    if (cluster_key_parse(text, n, key, &e) == MS_OK) {
        CHECK(n == 64 || (n == 65 && text[64] == '\n') || (n == 66 && !memcmp(text + 64, "\r\n", 2)));
        unsigned char any = 0;
        for (int i = 0; i < CLUSTER_KEY_BYTES; i++) {
            CHECK(hex_of(text[2 * i]) >= 0 && hex_of(text[2 * i + 1]) >= 0);
            CHECK(key[i] == (hex_of(text[2 * i]) << 4 | hex_of(text[2 * i + 1])));
            any |= key[i];
        }
        CHECK(any);
    } else {
        for (int i = 0; i < CLUSTER_KEY_BYTES; i++)
            CHECK(key[i] == 0);
        /* the same text with every hex digit another and every other character '#' (line ends, spaces and
         * tabs kept, which the messages name): the same message, so none quotes the file */
        char *shadow = (char *)fuzz_copy(d, n);
        for (size_t i = 0; i < n; i++) {
            int h = hex_of(text[i]);
            if (h >= 0)
                shadow[i] = "0123456789abcdef"[(h + 1) % 16];
            else if (!strchr("\r\n \t", text[i]) || !text[i])
                shadow[i] = '#';
        }
        ms_err e2 = {0};
        unsigned char key2[CLUSTER_KEY_BYTES];
        if (cluster_key_parse(shadow, n, key2, &e2) != MS_OK) CHECK(!strcmp(e.msg, e2.msg));
        free(shadow);
    }
    free(text);
}

/* ==== the roles file (access/access.c) ==== */

#define ROLES_MAX 32

static void fuzz_roles(const uint8_t *d, size_t n)
{
    char *text = (char *)fuzz_copy(d, n);
    ms_err e = {0};
    access_reset();
    size_t np = access_permission_count();
    if (access_load(text, n, &e) == MS_OK) {
        size_t nr = access_role_count();
        CHECK(nr >= 1 && nr <= ROLES_MAX);
        bool *allows = calloc(nr * np, sizeof *allows);
        CHECK(allows != NULL);
        /* the table in force written back as a role file: each role's letters of crud per resource */
        buf w = {0};
        buf_putc(&w, '{');
        for (size_t r = 0; r < nr; r++) {
            const char *role = access_role_name(r);
            CHECK(role && *role && strlen(role) < 32 && access_role_valid(role));
            for (size_t k = 0; k < r; k++)
                CHECK(strcmp(role, access_role_name(k)));
            if (r) buf_putc(&w, ',');
            jw_cstr(&w, role);
            buf_puts(&w, ":{");
            char perm[64], res[64] = "";
            for (size_t i = 0; i < np; i++) {
                CHECK(access_permission_name(i, perm, sizeof perm));
                allows[r * np + i] = access_allows(role, perm);
                char *colon = strchr(perm, ':');
                CHECK(colon != NULL);
                *colon = 0;
                if (strcmp(res, perm)) { /* a resource's first permission */
                    buf_puts(&w, res[0] ? "\",\"" : "\"");
                    buf_puts(&w, perm);
                    buf_puts(&w, "\":\"");
                    snprintf(res, sizeof res, "%s", perm);
                }
                if (allows[r * np + i]) buf_putc(&w, colon[1]);
            }
            buf_puts(&w, res[0] ? "\"}" : "}");
        }
        buf_putc(&w, '}');
        char *c = (char *)fuzz_copy((const uint8_t *)w.data, w.len);
        CHECK(access_load(c, w.len, &e) == MS_OK && access_role_count() == nr);
        for (size_t r = 0; r < nr; r++) {
            char perm[64];
            for (size_t i = 0; i < np; i++) {
                CHECK(access_permission_name(i, perm, sizeof perm));
                CHECK(access_allows(access_role_name(r), perm) == allows[r * np + i]);
            }
        }
        free(c);
        buf_free(&w);
        free(allows);
    } else { /* refused: the default table still in force */
        CHECK(starts_with(e.msg, "role file: "));
        CHECK(access_role_count() == 5 && !strcmp(access_role_name(0), "admin"));
    }
    access_reset();
    free(text);
}

/* ==== an export's spool rows (export/rows.c) ==== */

static bool same_row(const export_columns *c, const export_row *a, const export_row *b)
{
    for (int k = 0; k < c->n; k++) {
        const export_value *x = &a->v[k], *y = &b->v[k];
        if (x->present != y->present) return false;
        if (!x->present) continue;
        switch (c->col[k].type) {
        case PQ_STRING:
        case PQ_JSON:
            if (x->len != y->len || (x->len && memcmp(x->str, y->str, x->len))) return false;
            break;
        case PQ_INT64:
        case PQ_TIMESTAMP:
            if (x->i64 != y->i64) return false;
            break;
        case PQ_DOUBLE:
            if (memcmp(&x->f64, &y->f64, sizeof x->f64)) return false;
            break;
        case PQ_BOOLEAN:
            if (x->b != y->b) return false;
            break;
        }
    }
    return true;
}

static void fuzz_spool_row(const uint8_t *d, size_t n, unsigned variant)
{
    const export_columns *c = &g_cols[variant & 3];
    char *p = (char *)fuzz_copy(d, n);
    export_row row, again;
    size_t used = 0, used2 = 0;
    if (rows_decode(c, p, n, &row, &used)) {
        CHECK(used >= 4 && used <= n && used == 4 + (size_t)ms_get_be32(p));
        for (int k = 0; k < c->n; k++)
            if (row.v[k].present && (c->col[k].type == PQ_STRING || c->col[k].type == PQ_JSON))
                CHECK(fuzz_inside(row.v[k].str, row.v[k].len, p + 4, used - 4));
        buf a = {0}, b = {0}, text = {0};
        rows_encode(c, &row, &a);
        CHECK(a.len == used);
        char *q = (char *)fuzz_copy((const uint8_t *)a.data, a.len);
        CHECK(rows_decode(c, q, a.len, &again, &used2) && used2 == a.len && same_row(c, &row, &again));
        rows_encode(c, &again, &b);
        CHECK(b.len == a.len && !memcmp(a.data, b.data, a.len));
        rows_ndjson(c, &row, &text); /* the text formats phase 2 writes from it */
        rows_csv(c, &row, &text);
        free(q);
        buf_free(&a);
        buf_free(&b);
        buf_free(&text);
    }
    free(p);
}

/* ==== setup ==== */

/* A report of UBSan (recoverable in the fuzz build) stops the run like ASan's, so that libFuzzer keeps the input. */
static void cleanup(void)
{
    unlink(g_ckpt_path);
    rmdir(g_tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    g_memfd = memfd_create("fuzz_files", MFD_CLOEXEC);
    CHECK(g_memfd >= 0);
    snprintf(g_memfd_path, sizeof g_memfd_path, "/proc/self/fd/%d", g_memfd);
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_files.XXXXXX" : "/tmp/fuzz_files.XXXXXX");
    CHECK(mkdtemp(g_tmpdir) != NULL);
    snprintf(g_ckpt_path, sizeof g_ckpt_path, "%s/checkpoint", g_tmpdir);
    atexit(cleanup);
    memset(g_ident, 0xab, sizeof g_ident);
    static const char typed[] =
        "{\"public\":{\"ts\":\"copy\",\"weight\":\"copy\",\"smoker\":\"copy\",\"favorite_color\":\"copy\"},"
        "\"types\":{\"weight\":\"number\",\"smoker\":\"boolean\",\"height\":\"number\"}}";
    ms_err e;
    CHECK(schema_parse(&g_typed, typed, sizeof typed - 1, &e) == MS_OK);
    rows_record_columns(&g_typed, EXPORT_PHI, &g_cols[0]);
    rows_record_columns(&g_typed, EXPORT_PUBLIC, &g_cols[1]);
    rows_patient_columns(&g_typed, EXPORT_PHI, &g_cols[2]);
    rows_patient_columns(&g_typed, EXPORT_PUBLIC, &g_cols[3]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    unsigned variant = data[0] >> 6;
    switch ((data[0] & 0x3F) % K_KINDS) {
    case K_CONFIG: fuzz_config(p, n, variant); break;
    case K_SCHEMA: fuzz_schema(p, n); break;
    case K_COUNTER_STATE: fuzz_counter_state(p, n, variant); break;
    case K_COUNTER_SAVE: fuzz_counter_save(p, n, variant); break;
    case K_LAKE_LOG: fuzz_lake_log(p, n, variant); break;
    case K_CHECKPOINT: fuzz_checkpoint(p, n); break;
    case K_RULES: fuzz_rules(p, n, variant); break;
    case K_TIME: fuzz_time(p, n, variant); break;
    case K_PARAMS: fuzz_params(p, n); break;
    case K_JSON: fuzz_json(p, n); break;
    case K_CLUSTER_KEY: fuzz_cluster_key(p, n); break;
    case K_ROLES: fuzz_roles(p, n); break;
    default: fuzz_spool_row(p, n, variant); break;
    }
    return 0;
}

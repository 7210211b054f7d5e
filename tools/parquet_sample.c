/*
 * parquet_sample.c - writes a Parquet file with the project's writer (src/parquet/parquet.h) from rows
 * given as NDJSON, or from a built-in generator, so that tests/e2e/test_parquet.py can read it back with
 * independent readers (pyarrow, DuckDB) and compare every value with what it asked for.
 *
 *   parquet_sample --out FILE --column NAME:TYPE[:optional][:dict] ... (--rows FILE.ndjson | --generate N)
 *                  [--seed S] [--codec snappy|zstd|none] [--zstd-level N] [--row-group-bytes N]
 *                  [--page-bytes N] [--batch N] [--created-by TEXT] [--kv KEY=VALUE ...]
 *
 * TYPE is string, json, timestamp (microseconds since the epoch, UTC), int64, double or boolean. A row
 * of --rows is a JSON object by column name; a missing member or null is a null. Values: strings and
 * json as JSON strings (the json column's text is the string's contents), int64 and timestamp as JSON
 * integers, double as a JSON number or a string strtod reads exactly (Python's float.hex(), "nan",
 * "inf", "-inf"), boolean as true/false. Rows go to the writer in batches of --batch (1000).
 *
 * --generate N writes N rows of a fixed schema whose values are functions of the row number i and the
 * seed S (test_parquet.py computes the same values): record_id string "r-S-i"; patient_id string,
 * dictionary, "p-" (i * 7919 mod 65536); version int64 i mod 7 + 1; type string, dictionary,
 * {lab, visit, patient, note}[(i / 3) mod 4]; ts timestamp 1700000000000000 + i * 1000003 + S; score
 * optional double, null when i mod 7 = 3, else i * 0.25 - 1000; flag optional boolean, null when
 * i mod 11 = 5, else i mod 3 = 0; doc optional json, null when i mod 13 = 0, else
 * {"i":i,"note":"row i of S","u":"é中"}.
 *
 * Prints {"rows":N,"bytes":B} on success. Exit 0 ok, 1 the writer refused or failed (its message on
 * stderr), 2 usage or unreadable input. A test tool: it holds every row in memory.
 */
#include "base/json_scan.h"
#include "parquet/parquet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLUMNS 64
#define MAX_KV 32

typedef struct {
    FILE *f;
} file_sink;

static ms_code file_write(void *ctx, const void *data, size_t len, ms_err *e)
{
    file_sink *s = ctx;
    if (fwrite(data, 1, len, s->f) != len) return ms_fail(e, MS_EIO, "write: %s", strerror(errno));
    return MS_OK;
}

static int usage(const char *why)
{
    fprintf(stderr, "parquet_sample: %s\n", why);
    fprintf(stderr, "usage: parquet_sample --out FILE --column NAME:TYPE[:optional][:dict] ... "
                    "(--rows FILE.ndjson | --generate N) [--seed S] [--codec snappy|zstd|none] [--zstd-level N] "
                    "[--row-group-bytes N] [--page-bytes N] [--batch N] [--created-by TEXT] [--kv KEY=VALUE]\n");
    return 2;
}

static bool parse_type(const char *s, pq_type *t)
{
    static const struct {
        const char *name;
        pq_type type;
    } types[] = {{"string", PQ_STRING}, {"json", PQ_JSON},     {"timestamp", PQ_TIMESTAMP},
                 {"int64", PQ_INT64},   {"double", PQ_DOUBLE}, {"boolean", PQ_BOOLEAN}};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strcmp(s, types[i].name) == 0) {
            *t = types[i].type;
            return true;
        }
    return false;
}

/* NAME:TYPE[:optional][:dict]; the string is modified (names point into it). */
static bool parse_column(char *spec, pq_column *c)
{
    memset(c, 0, sizeof *c);
    char *save = NULL;
    char *name = strtok_r(spec, ":", &save);
    char *type = strtok_r(NULL, ":", &save);
    if (!name || !type || !parse_type(type, &c->type)) return false;
    c->name = name;
    for (char *flag; (flag = strtok_r(NULL, ":", &save));) {
        if (strcmp(flag, "optional") == 0)
            c->optional = true;
        else if (strcmp(flag, "dict") == 0)
            c->dictionary = true;
        else
            return false;
    }
    return true;
}

/* One batch of rows, column by column; strings live in `mem` until the batch is appended. */
typedef struct {
    size_t n, cap;
    bool *present[MAX_COLUMNS];
    int64_t *i64[MAX_COLUMNS];
    double *f64[MAX_COLUMNS];
    bool *b[MAX_COLUMNS];
    const char **str[MAX_COLUMNS];
    uint32_t *len[MAX_COLUMNS];
    arena mem;
} batch;

static void batch_init(batch *bt, size_t ncols, size_t cap)
{
    memset(bt, 0, sizeof *bt);
    bt->cap = cap;
    for (size_t c = 0; c < ncols; c++) {
        bt->present[c] = ms_calloc(cap, sizeof(bool));
        bt->i64[c] = ms_calloc(cap, sizeof(int64_t));
        bt->f64[c] = ms_calloc(cap, sizeof(double));
        bt->b[c] = ms_calloc(cap, sizeof(bool));
        bt->str[c] = ms_calloc(cap, sizeof(char *));
        bt->len[c] = ms_calloc(cap, sizeof(uint32_t));
    }
}

static void batch_free(batch *bt, size_t ncols)
{
    for (size_t c = 0; c < ncols; c++) {
        free(bt->present[c]);
        free(bt->i64[c]);
        free(bt->f64[c]);
        free(bt->b[c]);
        free((void *)bt->str[c]);
        free(bt->len[c]);
    }
    arena_free(&bt->mem);
}

static ms_code batch_flush(pq_writer *w, batch *bt, size_t ncols, ms_err *e)
{
    pq_values v[MAX_COLUMNS];
    for (size_t c = 0; c < ncols; c++) {
        v[c] = (pq_values){.present = bt->present[c],
                           .i64 = bt->i64[c],
                           .f64 = bt->f64[c],
                           .b = bt->b[c],
                           .str = (const char *const *)bt->str[c],
                           .len = bt->len[c]};
    }
    ms_code rc = pq_writer_append(w, bt->n, v, e);
    bt->n = 0;
    arena_free(&bt->mem);
    return rc;
}

/* Set row r of column c from a JSON value (text val[0..n), already validated by the scanner). */
static bool set_value(batch *bt, size_t c, size_t r, const pq_column *col, json_type jt, const char *val, size_t n,
                      char *why, size_t why_len)
{
    if (jt == JSON_NULL) return true; /* present stays false */
    switch (col->type) {
    case PQ_STRING:
    case PQ_JSON: {
        if (jt != JSON_STRING) break;
        char *out = arena_alloc(&bt->mem, n + 1);
        size_t m = json_string_decode(val + 1, n - 2, out);
        bt->str[c][r] = out;
        bt->len[c][r] = (uint32_t)m;
        bt->present[c][r] = true;
        return true;
    }
    case PQ_TIMESTAMP:
    case PQ_INT64: {
        if (jt != JSON_NUMBER) break;
        char tmp[64];
        if (n >= sizeof tmp) break;
        memcpy(tmp, val, n);
        tmp[n] = 0;
        char *end = NULL;
        errno = 0;
        long long x = strtoll(tmp, &end, 10);
        if (errno || *end) break;
        bt->i64[c][r] = x;
        bt->present[c][r] = true;
        return true;
    }
    case PQ_DOUBLE: {
        char tmp[128];
        const char *p = val;
        size_t m = n;
        if (jt == JSON_STRING)
            p++, m -= 2;
        else if (jt != JSON_NUMBER)
            break;
        if (m >= sizeof tmp) break;
        memcpy(tmp, p, m);
        tmp[m] = 0;
        char *end = NULL;
        double x = strtod(tmp, &end);
        if (*end || end == tmp) break;
        bt->f64[c][r] = x;
        bt->present[c][r] = true;
        return true;
    }
    case PQ_BOOLEAN:
        if (jt != JSON_TRUE && jt != JSON_FALSE) break;
        bt->b[c][r] = jt == JSON_TRUE;
        bt->present[c][r] = true;
        return true;
    }
    snprintf(why, why_len, "column %s: a %s value does not fit", col->name, json_type_name(jt));
    return false;
}

static int from_ndjson(pq_writer *w, const pq_column *cols, size_t ncols, const char *path, size_t batch_rows,
                       ms_err *e)
{
    buf in = {0};
    if (buf_read_file(&in, path, e) != MS_OK) {
        fprintf(stderr, "parquet_sample: %s\n", e->msg);
        return 2;
    }
    batch bt;
    batch_init(&bt, ncols, batch_rows);
    json_member *members = ms_calloc(MAX_COLUMNS * 2, sizeof *members);
    int rc = 0;
    size_t line = 0;
    const char *p = in.data ? in.data : "", *end = p + in.len;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        line++;
        if (eol > p) {
            json_error je;
            int nm = json_scan_object(p, (size_t)(eol - p), members, MAX_COLUMNS * 2, &je);
            if (nm < 0) {
                fprintf(stderr, "parquet_sample: line %zu: %s at byte %zu\n", line, je.msg, je.offset);
                rc = 2;
                break;
            }
            size_t r = bt.n;
            for (size_t c = 0; c < ncols; c++)
                bt.present[c][r] = false;
            for (int m = 0; m < nm && rc == 0; m++) {
                size_t c = 0;
                while (c < ncols && (strlen(cols[c].name) != members[m].key_len ||
                                     memcmp(cols[c].name, members[m].key, members[m].key_len) != 0))
                    c++;
                if (c == ncols) {
                    fprintf(stderr, "parquet_sample: line %zu: member %.*s is no column\n", line,
                            (int)members[m].key_len, members[m].key);
                    rc = 2;
                    break;
                }
                char why[200];
                if (!set_value(&bt, c, r, &cols[c], members[m].type, members[m].val, members[m].val_len, why,
                               sizeof why)) {
                    fprintf(stderr, "parquet_sample: line %zu: %s\n", line, why);
                    rc = 2;
                }
            }
            if (rc) break;
            bt.n++;
            if (bt.n == bt.cap && batch_flush(w, &bt, ncols, e) != MS_OK) rc = 1;
        }
        p = nl ? nl + 1 : end;
    }
    if (rc == 0 && bt.n && batch_flush(w, &bt, ncols, e) != MS_OK) rc = 1;
    if (rc == 1) fprintf(stderr, "parquet_sample: %s\n", e->msg);
    free(members);
    batch_free(&bt, ncols);
    buf_free(&in);
    return rc;
}

static const char *const gen_types[4] = {"lab", "visit", "patient", "note"};

static int generate(pq_writer *w, uint64_t n, int64_t seed, size_t batch_rows, ms_err *e)
{
    enum { NCOL = 8 };
    batch bt;
    batch_init(&bt, NCOL, batch_rows);
    for (uint64_t i = 0; i < n; i++) {
        size_t r = bt.n;
        arena *m = &bt.mem;
        char *s = arena_printf(m, "r-%lld-%llu", (long long)seed, (unsigned long long)i);
        bt.str[0][r] = s, bt.len[0][r] = (uint32_t)strlen(s), bt.present[0][r] = true;
        s = arena_printf(m, "p-%llu", (unsigned long long)(i * 7919 % 65536));
        bt.str[1][r] = s, bt.len[1][r] = (uint32_t)strlen(s), bt.present[1][r] = true;
        bt.i64[2][r] = (int64_t)(i % 7 + 1), bt.present[2][r] = true;
        bt.str[3][r] = gen_types[(i / 3) % 4], bt.len[3][r] = (uint32_t)strlen(gen_types[(i / 3) % 4]);
        bt.present[3][r] = true;
        bt.i64[4][r] = 1700000000000000LL + (int64_t)i * 1000003 + seed, bt.present[4][r] = true;
        bt.present[5][r] = i % 7 != 3, bt.f64[5][r] = (double)i * 0.25 - 1000;
        bt.present[6][r] = i % 11 != 5, bt.b[6][r] = i % 3 == 0;
        bt.present[7][r] = i % 13 != 0;
        s = arena_printf(m, "{\"i\":%llu,\"note\":\"row %llu of %lld\",\"u\":\"\xc3\xa9\xe4\xb8\xad\"}",
                         (unsigned long long)i, (unsigned long long)i, (long long)seed);
        bt.str[7][r] = s, bt.len[7][r] = (uint32_t)strlen(s);
        bt.n++;
        if (bt.n == bt.cap && batch_flush(w, &bt, NCOL, e) != MS_OK) {
            batch_free(&bt, NCOL);
            fprintf(stderr, "parquet_sample: %s\n", e->msg);
            return 1;
        }
    }
    int rc = 0;
    if (bt.n && batch_flush(w, &bt, NCOL, e) != MS_OK) {
        fprintf(stderr, "parquet_sample: %s\n", e->msg);
        rc = 1;
    }
    batch_free(&bt, NCOL);
    return rc;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *rows_path = NULL, *created_by = "medstream version test (build parquet_sample)";
    pq_column cols[MAX_COLUMNS];
    size_t ncols = 0;
    const char *kv[MAX_KV * 2 + 1];
    size_t nkv = 0;
    pq_options opt = {.codec = PQ_SNAPPY};
    long long generate_n = -1, seed = 0;
    size_t batch_rows = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) return usage("every option takes a value");
        char *v = argv[++i];
        if (strcmp(a, "--out") == 0) {
            out = v;
        } else if (strcmp(a, "--column") == 0) {
            if (ncols == MAX_COLUMNS) return usage("too many columns");
            if (!parse_column(v, &cols[ncols++])) return usage("bad --column");
        } else if (strcmp(a, "--rows") == 0) {
            rows_path = v;
        } else if (strcmp(a, "--generate") == 0) {
            generate_n = atoll(v);
        } else if (strcmp(a, "--seed") == 0) {
            seed = atoll(v);
        } else if (strcmp(a, "--codec") == 0) {
            if (strcmp(v, "snappy") == 0)
                opt.codec = PQ_SNAPPY;
            else if (strcmp(v, "zstd") == 0)
                opt.codec = PQ_ZSTD;
            else if (strcmp(v, "none") == 0)
                opt.codec = PQ_UNCOMPRESSED;
            else
                return usage("bad --codec");
        } else if (strcmp(a, "--zstd-level") == 0) {
            opt.zstd_level = atoi(v);
        } else if (strcmp(a, "--row-group-bytes") == 0) {
            opt.row_group_bytes = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--page-bytes") == 0) {
            opt.page_bytes = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--batch") == 0) {
            batch_rows = (size_t)strtoull(v, NULL, 10);
            if (batch_rows == 0) return usage("bad --batch");
        } else if (strcmp(a, "--created-by") == 0) {
            created_by = v;
        } else if (strcmp(a, "--kv") == 0) {
            char *eq = strchr(v, '=');
            if (!eq || nkv == MAX_KV) return usage("bad --kv");
            *eq = 0;
            kv[2 * nkv] = v;
            kv[2 * nkv + 1] = eq + 1;
            nkv++;
        } else {
            return usage("unknown option");
        }
    }
    if (!out || (!rows_path && generate_n < 0) || (rows_path && generate_n >= 0))
        return usage("--out and one of --rows, --generate are required");
    if (generate_n >= 0) {
        if (ncols) return usage("--generate has its own columns");
        static char names[][16] = {"record_id", "patient_id", "version", "type", "ts", "score", "flag", "doc"};
        pq_column gen[8] = {{names[0], PQ_STRING, false, false},    {names[1], PQ_STRING, false, true},
                            {names[2], PQ_INT64, false, false},     {names[3], PQ_STRING, false, true},
                            {names[4], PQ_TIMESTAMP, false, false}, {names[5], PQ_DOUBLE, true, false},
                            {names[6], PQ_BOOLEAN, true, false},    {names[7], PQ_JSON, true, false}};
        memcpy(cols, gen, sizeof gen);
        ncols = 8;
    }
    kv[2 * nkv] = NULL;
    opt.key_values = nkv ? kv : NULL;
    opt.created_by = created_by;

    file_sink fs = {fopen(out, "wb")};
    if (!fs.f) {
        fprintf(stderr, "parquet_sample: %s: %s\n", out, strerror(errno));
        return 2;
    }
    ms_err e = {0};
    pq_writer *w = NULL;
    int rc = 0;
    if (pq_writer_open(&w, cols, ncols, &opt, file_write, &fs, &e) != MS_OK) {
        fprintf(stderr, "parquet_sample: %s\n", e.msg);
        fclose(fs.f);
        return 1;
    }
    rc = generate_n >= 0 ? generate(w, (uint64_t)generate_n, seed, batch_rows, &e)
                         : from_ndjson(w, cols, ncols, rows_path, batch_rows, &e);
    uint64_t rows = 0;
    if (rc == 0 && pq_writer_close(w, &rows, &e) != MS_OK) {
        fprintf(stderr, "parquet_sample: %s\n", e.msg);
        rc = 1;
    }
    uint64_t bytes = pq_writer_bytes(w);
    pq_writer_free(w);
    if (fclose(fs.f) != 0 && rc == 0) {
        fprintf(stderr, "parquet_sample: %s: %s\n", out, strerror(errno));
        rc = 1;
    }
    if (rc == 0) printf("{\"rows\":%llu,\"bytes\":%llu}\n", (unsigned long long)rows, (unsigned long long)bytes);
    return rc;
}

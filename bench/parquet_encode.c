/*
 * parquet_encode.c - how fast the Parquet writer (src/parquet/parquet.h) turns records into a file on
 * one core, the way an export writes one: ~20 KB reference records (record_id, name, dob, ssn, phone,
 * address, favorite_color, type, ts and a clinical note of ~19.5 KB) generated in memory, split into the
 * export's columns (record_id string, patient_id string, version int64, type string with a dictionary,
 * ts timestamp, and a JSON column of the rest of the record), appended in batches of 1000 rows to a
 * writer whose write function only counts bytes (no disk). For SNAPPY, ZSTD (level 3) and no
 * compression it prints the median of 5 rounds in MB/s of the records' JSON text and rows/min, and the
 * file size against the JSON size. The generation and splitting are outside the timing: this measures
 * the writer (encoding, statistics, dictionary, compression, footer).
 * Nothing is timed by a test; this is a program with printed figures (STYLE.md).
 * Build and run: make bench-parquet [PARQUET_MB=256]
 */
#include "bench_words.h"
#include "parquet/parquet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROUNDS = 5, RECORD_SIZE = 20000, BATCH = 1000 };

/* The columns of the records, as the export would hand them to the writer. */
typedef struct {
    size_t n;
    const char **record_id, **patient_id, **type, **rest;
    uint32_t *record_id_len, *patient_id_len, *type_len, *rest_len;
    int64_t *version, *ts;
    buf text;            /* every string's bytes */
    uint64_t json_bytes; /* the records as JSON objects */
} columns;

static void make_records(columns *c, size_t target_bytes)
{
    static const char *const first[] = {"Ann", "Bob", "Carla", "Dmitri", "Eve", "Farid", "Grace", "Hiro"};
    static const char *const last[] = {"Smith", "Okafor", "Nguyen", "Garcia", "Muller", "Rossi", "Kim", "Haddad"};
    static const char *const types[] = {"patient", "visit", "lab", "note"};
    size_t cap = target_bytes / RECORD_SIZE + 1;
    memset(c, 0, sizeof *c);
    c->record_id = ms_calloc(cap, sizeof(char *));
    c->patient_id = ms_calloc(cap, sizeof(char *));
    c->type = ms_calloc(cap, sizeof(char *));
    c->rest = ms_calloc(cap, sizeof(char *));
    c->record_id_len = ms_calloc(cap, sizeof(uint32_t));
    c->patient_id_len = ms_calloc(cap, sizeof(uint32_t));
    c->type_len = ms_calloc(cap, sizeof(uint32_t));
    c->rest_len = ms_calloc(cap, sizeof(uint32_t));
    c->version = ms_calloc(cap, sizeof(int64_t));
    c->ts = ms_calloc(cap, sizeof(int64_t));
    buf_reserve(&c->text, cap * (RECORD_SIZE + 200));
    size_t *off = ms_calloc(cap * 4, sizeof(size_t));
    while (c->n < cap) {
        size_t i = c->n;
        uint64_t who = next() % 100000;
        size_t start = c->text.len;
        off[4 * i] = c->text.len;
        buf_printf(&c->text, "r-%010llu", (unsigned long long)i);
        c->record_id_len[i] = (uint32_t)(c->text.len - off[4 * i]);
        off[4 * i + 1] = c->text.len;
        buf_printf(&c->text, "%08llx-%04llx-4%03llx-8%03llx-%012llx", (unsigned long long)(who * 2654435761u),
                   (unsigned long long)(who % 65536), (unsigned long long)(who % 4096),
                   (unsigned long long)(who * 7 % 4096),
                   (unsigned long long)(who * 0x9E3779B9ull % 0x1000000000000ull));
        c->patient_id_len[i] = (uint32_t)(c->text.len - off[4 * i + 1]);
        const char *type = types[next() % 4];
        c->type[i] = type;
        c->type_len[i] = (uint32_t)strlen(type);
        c->version[i] = 1 + (int64_t)(next() % 3);
        c->ts[i] = 1795000000000000LL + (int64_t)(next() % 2592000) * 1000000;
        off[4 * i + 2] = c->text.len;
        buf_printf(&c->text,
                   "{\"name\":\"%s %s %llu\",\"dob\":\"%04d-%02d-%02d\",\"ssn\":\"%03d-%02d-%04d\","
                   "\"phone\":\"+1-555-%03d-%04d\",\"address\":\"%d Main St, Springfield, IL\","
                   "\"favorite_color\":\"%s\",\"notes\":\"",
                   first[who % 8], last[who / 8 % 8], (unsigned long long)who, 1930 + (int)(who % 90),
                   1 + (int)(who % 12), 1 + (int)(who % 28), (int)(next() % 899) + 1, (int)(next() % 99) + 1,
                   (int)(next() % 9999) + 1, (int)(next() % 1000), (int)(next() % 10000), (int)(next() % 9000) + 1,
                   who % 3 ? "green" : "blue");
        while (c->text.len - start < RECORD_SIZE - 120) {
            int len = 6 + (int)(next() % 14);
            for (int k = 0; k < len; k++) {
                buf_puts(&c->text, words[next() % (sizeof words / sizeof *words)]);
                buf_puts(&c->text, k + 1 < len ? (next() % 7 == 0 ? ", " : " ") : ". ");
            }
        }
        buf_puts(&c->text, "\"}");
        c->rest_len[i] = (uint32_t)(c->text.len - off[4 * i + 2]);
        /* the whole record as JSON: the five columns as members, then the rest's members */
        int head = snprintf(NULL, 0,
                            "{\"record_id\":\"%.*s\",\"patient_id\":\"%.*s\",\"version\":%lld,\"type\":\"%s\","
                            "\"ts\":\"2026-11-29T18:00:00Z\",",
                            (int)c->record_id_len[i], c->text.data + off[4 * i], (int)c->patient_id_len[i],
                            c->text.data + off[4 * i + 1], (long long)c->version[i], type);
        c->json_bytes += (uint64_t)head + c->rest_len[i] - 1;
        c->n++;
    }
    for (size_t i = 0; i < c->n; i++) { /* the text no longer moves */
        c->record_id[i] = c->text.data + off[4 * i];
        c->patient_id[i] = c->text.data + off[4 * i + 1];
        c->rest[i] = c->text.data + off[4 * i + 2];
    }
    free(off);
}

static void columns_free(columns *c)
{
    free(c->record_id), free(c->patient_id), free(c->type), free(c->rest);
    free(c->record_id_len), free(c->patient_id_len), free(c->type_len), free(c->rest_len);
    free(c->version), free(c->ts);
    buf_free(&c->text);
}

static ms_code count_write(void *ctx, const void *data, size_t len, ms_err *e)
{
    (void)data, (void)e;
    *(uint64_t *)ctx += len;
    return MS_OK;
}

static double encode(const columns *c, pq_codec codec, uint64_t *file_bytes)
{
    static const pq_column cols[] = {{"record_id", PQ_STRING, false, false}, {"patient_id", PQ_STRING, false, false},
                                     {"version", PQ_INT64, false, false},    {"type", PQ_STRING, false, true},
                                     {"ts", PQ_TIMESTAMP, false, false},     {"record", PQ_JSON, true, false}};
    pq_options opt = {.codec = codec, .created_by = "medstream version bench (build parquet_encode)"};
    uint64_t bytes = 0;
    ms_err e = {0};
    pq_writer *w = NULL;
    double t0 = ms_mono_s();
    if (pq_writer_open(&w, cols, 6, &opt, count_write, &bytes, &e) != MS_OK) {
        fprintf(stderr, "open: %s\n", e.msg);
        exit(1);
    }
    for (size_t from = 0; from < c->n; from += BATCH) {
        size_t n = c->n - from < BATCH ? c->n - from : BATCH;
        pq_values v[6] = {{.str = c->record_id + from, .len = c->record_id_len + from},
                          {.str = c->patient_id + from, .len = c->patient_id_len + from},
                          {.i64 = c->version + from},
                          {.str = c->type + from, .len = c->type_len + from},
                          {.i64 = c->ts + from},
                          {.str = c->rest + from, .len = c->rest_len + from}};
        if (pq_writer_append(w, n, v, &e) != MS_OK) {
            fprintf(stderr, "append: %s\n", e.msg);
            exit(1);
        }
    }
    if (pq_writer_close(w, NULL, &e) != MS_OK) {
        fprintf(stderr, "close: %s\n", e.msg);
        exit(1);
    }
    double s = ms_mono_s() - t0;
    pq_writer_free(w);
    *file_bytes = bytes;
    return s;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 256;
    columns c;
    make_records(&c, mb << 20);
    printf("%zu records of ~%.0f bytes of JSON (%.1f MB), batches of %d rows, median of %d rounds, one core\n", c.n,
           (double)c.json_bytes / (double)c.n, c.json_bytes / 1e6, BATCH, ROUNDS);
    static const struct {
        pq_codec codec;
        const char *name;
    } codecs[] = {{PQ_SNAPPY, "SNAPPY"}, {PQ_ZSTD, "ZSTD (level 3)"}, {PQ_UNCOMPRESSED, "UNCOMPRESSED"}};
    for (size_t k = 0; k < sizeof codecs / sizeof *codecs; k++) {
        double t[ROUNDS];
        uint64_t bytes = 0;
        for (int r = 0; r < ROUNDS; r++)
            t[r] = encode(&c, codecs[k].codec, &bytes);
        qsort(t, ROUNDS, sizeof *t, cmp);
        double s = t[ROUNDS / 2];
        printf("  %-16s %7.0f MB/s of JSON  %11.0f rows/min  file %.1f MB = %.3f x the JSON  (%.2f-%.2f s)\n",
               codecs[k].name, c.json_bytes / s / 1e6, c.n / s * 60, bytes / 1e6, (double)bytes / (double)c.json_bytes,
               t[0], t[ROUNDS - 1]);
    }
    columns_free(&c);
    return 0;
}

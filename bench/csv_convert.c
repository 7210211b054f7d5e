/*
 * csv_convert.c - how fast the CSV reader (src/pipeline/csv.h) turns CSV into record JSON on one core,
 * the way `medstream import` feeds it: a CSV of about 1 GiB of ~20 KB rows (the reference record:
 * record_id, name, dob, ssn, phone, address, favorite_color, type, ts and a quoted clinical note with
 * commas, doubled quotes and now and then a line break), generated in memory, converted in chunks of
 * 16 MiB (the unconsumed tail carried to the next chunk); and the same size of "wide" ~20 KB rows (100
 * unquoted text columns of ~200 bytes: the tokenizer's 8-byte path, a key per cell) and of "narrow" rows
 * of ~90 bytes (the cost per row). Prints, for the median of 5 rounds, MB/s of
 * CSV and rows/min for csv_convert alone, and for csv_convert followed by record_prepare_csv (stages
 * 1-3: scan, identity, public copy), which is what a source does before handing a batch to the writer.
 * Nothing is timed by a test; this is a program with printed figures (STYLE.md).
 * Build and run: make bench-csv [CSV_MB=1024]
 */
#include "bench_words.h"
#include "pipeline/csv.h"
#include "pipeline/prepare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK = 16 << 20, ROUNDS = 5, ROW_SIZE = 20000 };

/* A clinical note of about n bytes: sentences with commas; one in 40 quotes a phrase ("" in CSV); one in
 * 200 has a line break. Written as a quoted CSV cell. */
static void note(buf *b, size_t n)
{
    size_t start = b->len;
    buf_putc(b, '"');
    while (b->len - start < n) {
        int len = 6 + (int)(next() % 14);
        for (int i = 0; i < len; i++) {
            const char *w = words[next() % (sizeof words / sizeof *words)];
            if (i == 0) {
                buf_putc(b, (char)(w[0] - 32));
                buf_puts(b, w + 1);
            } else {
                buf_puts(b, w);
            }
            buf_puts(b, i + 1 < len ? (next() % 7 == 0 ? ", " : " ") : "");
        }
        uint64_t r = next() % 200;
        if (r < 5)
            buf_puts(b, ". Said \"\"it hurts\"\". ");
        else if (r == 5)
            buf_puts(b, ".\r\n");
        else
            buf_puts(b, ". ");
    }
    buf_putc(b, '"');
}

static void row(buf *b, uint64_t i)
{
    static const char *const first[] = {"Ann", "Bob", "Carla", "Dmitri", "Eve", "Farid", "Grace", "Hiro"};
    static const char *const last[] = {"Smith", "Okafor", "Nguyen", "Garcia", "Muller", "Rossi", "Kim", "Haddad"};
    static const char *const types[] = {"patient", "visit", "lab", "note"};
    size_t start = b->len;
    uint64_t who = next() % 100000;
    buf_printf(
        b, "r-%010llu,%s %s %llu,%04d-%02d-%02d,%03d-%02d-%04d,+1-555-%03d-%04d,\"%d Main St, Springfield, IL\",",
        (unsigned long long)i, first[who % 8], last[who / 8 % 8], (unsigned long long)who, 1930 + (int)(who % 90),
        1 + (int)(who % 12), 1 + (int)(who % 28), (int)(next() % 899) + 1, (int)(next() % 99) + 1,
        (int)(next() % 9999) + 1, (int)(next() % 1000), (int)(next() % 10000), (int)(next() % 9000) + 1);
    buf_printf(b, "%s,%s,2026-11-%02dT%02d:%02d:00Z,", who % 3 ? "green" : "blue", types[next() % 4],
               1 + (int)(next() % 28), (int)(next() % 24), (int)(next() % 60));
    note(b, ROW_SIZE - (b->len - start));
    buf_puts(b, "\r\n");
}

/* A wide row: the identity, then 100 unquoted text columns of about 200 bytes. */
static void wide_row(buf *b, uint64_t i)
{
    uint64_t who = next() % 100000;
    buf_printf(b, "r-%010llu,Pat %llu,%04d-%02d-%02d", (unsigned long long)i, (unsigned long long)who,
               1930 + (int)(who % 90), 1 + (int)(who % 12), 1 + (int)(who % 28));
    for (int c = 0; c < 100; c++) {
        buf_putc(b, ',');
        size_t start = b->len;
        while (b->len - start < 190) {
            buf_puts(b, words[next() % (sizeof words / sizeof *words)]);
            buf_putc(b, ' ');
        }
    }
    buf_puts(b, "\n");
}

/* A narrow row: an id, the identity, a colour, a type and a short note. */
static void narrow_row(buf *b, uint64_t i)
{
    uint64_t who = next() % 100000;
    buf_printf(b, "r-%010llu,Pat %llu,%04d-%02d-%02d,%s,visit,%s %s %s\n", (unsigned long long)i,
               (unsigned long long)who, 1930 + (int)(who % 90), 1 + (int)(who % 12), 1 + (int)(who % 28),
               who % 3 ? "green" : "blue", words[next() % 40], words[next() % 40], words[next() % 40]);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One pass over the input in CHUNK pieces; prepare: run stages 1-3 on each batch. Returns seconds. */
static double pass(const schema *sc, const char *in, size_t n, bool prepare, uint64_t *rows, uint64_t *rejected)
{
    double t0 = ms_mono_s();
    csv_header h;
    size_t used;
    ms_err e;
    if (csv_header_parse(sc, in, n, true, (size_t)1 << 20, &h, &used, &e) != MS_OK) {
        fprintf(stderr, "header: %s\n", e.msg);
        exit(1);
    }
    csv_reader r;
    csv_reader_init(&r, &h, (size_t)1 << 20);
    csv_batch b = {0};
    scan_config cfg = {.schema = sc,
                       .max_record = (size_t)1 << 20,
                       .now_us = ms_now_us(),
                       .id_key = (const unsigned char *)"csv bench id key 0123456789abcde"};
    size_t pos = used;
    *rows = *rejected = 0;
    while (pos < n) {
        size_t len = n - pos < CHUNK ? n - pos : CHUNK;
        bool final = pos + len == n;
        csv_batch_reset(&b);
        pos += csv_convert(&r, in + pos, len, final, &b);
        *rows += b.n;
        if (prepare) {
            record_batch rb = {0};
            record_prepare_csv(&cfg, &h, &b, &rb);
            *rejected += rb.rejected;
            record_batch_free(&rb);
        } else {
            *rejected += b.rejected;
        }
    }
    csv_batch_free(&b);
    csv_reader_free(&r);
    csv_header_free(&h);
    return ms_mono_s() - t0;
}

static void measure(const char *what, const buf *in, uint64_t generated)
{
    printf("%s: %.1f MiB, %llu rows of ~%.0f bytes; chunks of %d MiB, median of %d rounds, one core\n", what,
           in->len / 1048576.0, (unsigned long long)generated, (double)in->len / (double)generated, CHUNK >> 20,
           ROUNDS);
    schema sc;
    schema_default(&sc);
    for (int prepare = 0; prepare <= 1; prepare++) {
        double t[ROUNDS];
        uint64_t rows = 0, rejected = 0;
        for (int k = 0; k < ROUNDS; k++)
            t[k] = pass(&sc, in->data, in->len, prepare, &rows, &rejected);
        qsort(t, ROUNDS, sizeof *t, cmp);
        double s = t[ROUNDS / 2];
        printf("  %-40s %7.0f MB/s  %11.0f rows/min  (%llu rows, %llu rejected; %.2f-%.2f s)\n",
               prepare ? "csv_convert + record_prepare_csv (1-3):" : "csv_convert:", in->len / s / 1e6, rows / s * 60,
               (unsigned long long)rows, (unsigned long long)rejected, t[0], t[ROUNDS - 1]);
    }
    schema_free(&sc);
}

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1024;
    size_t target = mb << 20;
    buf in = {0};
    buf_reserve(&in, target + 2 * ROW_SIZE);
    buf_puts(&in, "record_id,name,dob,ssn,phone,address,favorite_color,type,ts,notes\r\n");
    uint64_t generated = 0;
    while (in.len < target)
        row(&in, generated++);
    measure("reference rows (a quoted 19.7 KB note)", &in, generated);
    in.len = 0;
    buf_puts(&in, "record_id,name,dob");
    for (int c = 0; c < 100; c++)
        buf_printf(&in, ",text_%d", c);
    buf_puts(&in, "\n");
    generated = 0;
    while (in.len < target)
        wide_row(&in, generated++);
    measure("wide rows (100 unquoted columns)", &in, generated);
    in.len = 0;
    buf_puts(&in, "record_id,name,dob,favorite_color,type,note\n");
    generated = 0;
    while (in.len < target)
        narrow_row(&in, generated++);
    measure("narrow rows", &in, generated);
    buf_free(&in);
    return 0;
}

/*
 * fuzz_csv.c - libFuzzer target for the CSV reader (src/pipeline/csv.h) and record_prepare_csv: arbitrary
 * bytes as a CSV file, read with a schema that types columns n (number) and b (boolean) and converts dob
 * from %m/%d/%Y, at a record limit of 64-4159 bytes (the first byte picks it; the rest is the input).
 *
 * Beyond "no crash, no sanitizer report", it checks the reader's contract on every input:
 *   - the header is refused (MS_EINVAL, a message starting "CSV", no columns) or read (columns whose
 *     names are unique, non-empty UTF-8; h.bytes within the input);
 *   - the same input fed in pieces (cut where the input's own bytes say) gives exactly the rows of one
 *     call: lines, offsets, statuses, columns and JSON;
 *   - rows cover the input: in offset order, never overlapping, and every byte between two rows (and
 *     after the last) belongs to an empty line;
 *   - a row's lines and offsets agree with the line feeds before it; its JSON is one object of at most
 *     as many members as columns, each key a column's field, no longer than the limit; a rejected row has
 *     a column within the header (a span's may be past it) and a message that starts "line N" or
 *     "lines N-M";
 *   - record_prepare_csv gives one record per row, each rejected one with an error.
 * Build and run: make fuzz-csv FUZZ_SECONDS=20 (seeds in fuzz/corpus_csv/); `make fuzz` runs it after
 * fuzz_record.
 */
#include "fuzz_check.h"
#include "base/json_scan.h"
#include "pipeline/csv.h"
#include "pipeline/prepare.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static schema g_schema;
static const unsigned char g_id_key[32] = "medstream fuzz id key 0123456789";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *text = "{\"types\":{\"n\":\"number\",\"b\":\"boolean\"},\"dob_format\":\"%m/%d/%Y\"}";
    ms_err e;
    if (schema_parse(&g_schema, text, strlen(text), &e) != MS_OK) abort();
    return 0;
}

/* Convert everything after the header in pieces: a piece ends after the next byte whose value is below
 * cut_below (0: one piece). */
static void convert(const csv_header *h, size_t max_record, const char *in, size_t n, unsigned cut_below,
                    csv_batch *out)
{
    csv_reader r;
    csv_reader_init(&r, h, max_record);
    size_t start = (size_t)h->bytes, end = start; /* [start, end) is what the reader has been given */
    while (end < n) {
        size_t next = end;
        while (next < n && (cut_below == 0 || (unsigned char)in[next] >= cut_below))
            next++;
        end = next < n ? next + 1 : n;
        size_t used = csv_convert(&r, in + start, end - start, end == n, out);
        CHECK(used <= end - start);
        start += used;
        CHECK(r.offset == start);
    }
    if (start < n || n == (size_t)h->bytes) start += csv_convert(&r, in + start, n - start, true, out);
    CHECK(start == n);
    CHECK(csv_reader_idle(&r));
    csv_reader_free(&r);
}

static bool same_rows(const csv_batch *a, const csv_batch *b)
{
    if (a->n != b->n || a->rejected != b->rejected) return false;
    for (uint32_t i = 0; i < a->n; i++) {
        const csv_row *x = &a->rows[i], *y = &b->rows[i];
        if (x->line != y->line || x->nlines != y->nlines || x->offset != y->offset || x->bytes != y->bytes ||
            x->status != y->status || x->column != y->column || x->cells != y->cells || x->json_len != y->json_len)
            return false;
        if (x->status == CSV_ROW_OK && memcmp(a->json + x->json, b->json + y->json, x->json_len) != 0) return false;
    }
    return true;
}

/* Bytes [from, to) are empty lines only. */
static bool empty_lines(const char *in, size_t from, size_t to)
{
    while (from < to) {
        if (in[from] == '\n')
            from++;
        else if (in[from] == '\r' && (from + 1 == to || in[from + 1] == '\n'))
            from += from + 1 == to ? 1 : 2;
        else
            return false;
    }
    return true;
}

static uint64_t lines_before(const char *in, size_t at)
{
    uint64_t lines = 1;
    for (size_t i = 0; i < at; i++)
        lines += in[i] == '\n';
    return lines;
}

static void check_rows(const csv_header *h, size_t max_record, const char *in, size_t n, const csv_batch *b)
{
    uint64_t at = h->bytes;
    uint32_t rejected = 0;
    json_member *m = malloc(sizeof(json_member) * (h->ncolumns + 1));
    for (uint32_t i = 0; i < b->n; i++) {
        const csv_row *r = &b->rows[i];
        CHECK(r->offset >= at && r->offset + r->bytes <= n && r->bytes > 0);
        CHECK(empty_lines(in, (size_t)at, (size_t)r->offset));
        CHECK(r->line == lines_before(in, (size_t)r->offset));
        CHECK(r->nlines >= 1);
        uint64_t feeds = 0;
        for (uint64_t k = r->offset; k < r->offset + r->bytes; k++)
            feeds += in[k] == '\n';
        CHECK(r->nlines == feeds + (in[r->offset + r->bytes - 1] != '\n'));
        at = r->offset + r->bytes;
        char msg[512];
        size_t len = csv_row_message(h, r, msg, sizeof msg);
        CHECK(len == strlen(msg));
        if (r->status == CSV_ROW_OK) {
            CHECK(r->json_len <= max_record);
            CHECK(b->json[r->json + r->json_len] == '\n');
            json_error je;
            int k = json_scan_object(b->json + r->json, r->json_len, m, (int)h->ncolumns + 1, &je);
            CHECK(k >= 0 && (uint32_t)k <= h->ncolumns);
            for (int j = 0; j < k; j++) {
                bool known = false;
                char *key = malloc(m[j].key_len + 1);
                size_t kl = json_string_decode(m[j].key, m[j].key_len, key);
                for (uint32_t c = 0; c < h->ncolumns && !known; c++)
                    known = strlen(h->columns[c].field) == kl && memcmp(h->columns[c].field, key, kl) == 0;
                free(key);
                CHECK(known);
            }
        } else {
            rejected++;
            CHECK(r->column <= h->ncolumns || csv_status_is_span(r->status));
            CHECK(r->status != CSV_BAD_CELLS || r->cells != h->ncolumns);
            CHECK(strncmp(msg, r->nlines > 1 ? "lines " : "line ", r->nlines > 1 ? 6 : 5) == 0);
        }
    }
    CHECK(empty_lines(in, (size_t)at, n));
    CHECK(rejected == b->rejected);
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    size_t max_record = 64 + (size_t)data[0] * 16;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    csv_header h;
    size_t used;
    ms_err e = {0};
    if (csv_header_parse(&g_schema, in, n, true, max_record, &h, &used, &e) != MS_OK) {
        CHECK(e.code == MS_EINVAL && strncmp(e.msg, "CSV", 3) == 0);
        CHECK(h.columns == NULL && h.ncolumns == 0);
        csv_header_free(&h);
        return 0;
    }
    CHECK(used == h.bytes && used <= n && h.ncolumns >= 1 && h.ncolumns <= CSV_MAX_COLUMNS);
    for (uint32_t i = 0; i < h.ncolumns; i++) {
        size_t len = strlen(h.columns[i].name);
        CHECK(len >= 1 && utf8_check(h.columns[i].name, len) == len);
        for (uint32_t j = 0; j < i; j++) {
            CHECK(strcmp(h.columns[i].name, h.columns[j].name) != 0);
            CHECK(strcmp(h.columns[i].field, h.columns[j].field) != 0);
        }
    }
    /* the header fed in pieces is read the same */
    csv_header h2;
    size_t used2 = 0;
    for (size_t k = 0; used2 == 0; k += 7) {
        size_t len = k < n ? k : n;
        CHECK(csv_header_parse(&g_schema, in, len, len == n, max_record, &h2, &used2, &e) == MS_OK);
        if (used2 == 0) csv_header_free(&h2);
        CHECK(used2 > 0 || len < n);
    }
    CHECK(used2 == used && h2.ncolumns == h.ncolumns && h2.lines == h.lines);
    csv_header_free(&h2);

    csv_batch whole = {0}, pieces = {0};
    convert(&h, max_record, in, n, 0, &whole);
    check_rows(&h, max_record, in, n, &whole);
    convert(&h, max_record, in, n, 0x30, &pieces); /* a piece after every byte below '0': , " \n \r digits... */
    CHECK(same_rows(&whole, &pieces));
    csv_batch_free(&pieces);

    scan_config cfg = {.schema = &g_schema, .max_record = max_record, .now_us = 1781524800000000LL, .id_key = g_id_key};
    record_batch rb = {0};
    record_prepare_csv(&cfg, &h, &whole, &rb);
    CHECK(rb.n == whole.n);
    uint32_t rejected = 0;
    for (uint32_t i = 0; i < rb.n; i++) {
        CHECK(rb.records[i].line == (whole.rows[i].line > UINT32_MAX ? UINT32_MAX : whole.rows[i].line));
        if (rb.records[i].rejected) {
            rejected++;
            CHECK(rb.records[i].error && strncmp(rb.records[i].error, "line", 4) == 0);
        } else {
            CHECK(whole.rows[i].status == CSV_ROW_OK);
        }
    }
    CHECK(rejected == rb.rejected && rb.rejected >= whole.rejected);
    record_batch_free(&rb);
    csv_batch_free(&whole);
    csv_header_free(&h);
    return 0;
}

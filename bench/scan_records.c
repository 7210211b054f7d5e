/*
 * scan_records.c - what stages 1-3 cost a request thread per record on one core (`make bench-scan`): an
 * NDJSON body of 1,000 records like the load generator's (record_id, name, dob, ssn, phone, address,
 * favorite_color, type, ts and a clinical note that makes the record ~20 KB, or ~200 B with a short
 * one), generated in memory, then record_prepare_body over a copy of it made just before (scan, identity,
 * public copy: what POST /v1/records does before the body is sealed, over the body it has just copied), and json_scan_object alone over each record (the
 * structure and UTF-8 pass), and XXH3-64 over each record two ways: libxxhash's plain function (built for
 * SSE2) and its x86 dispatcher (the CPU's widest vectors: what record_scan.c calls). Prints, for the median
 * of ROUNDS rounds, MB/s of record JSON and microseconds per record. Last, the price of a batch's first
 * pass: finding the line ends (memchr) over a copy of the whole body made just before, as a request's body
 * is when its last byte arrives (~20 MB at 20 KB a record: past the core's 2 MiB L2), against the same over
 * one record already in the cache. Then jw_string, the JSON string writer, over long texts. A benchmark prints
 * figures; it asserts nothing.
 * Build and run: make bench-scan
 */
#include "bench_words.h"
#include "base/json_scan.h"
#include "base/json_write.h"
#include "pipeline/prepare.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <xxh_x86dispatch.h>
#undef XXH3_64bits /* the dispatcher's header renames it: both are timed here */
XXH64_hash_t XXH3_64bits(const void *data, size_t len);

enum { ROUNDS = 7, RECORDS = 1000 };
static volatile uint64_t g_sink; /* the hashes go here, so that no call is left out as unused */

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One record of about size bytes as an NDJSON line. */
static void record(buf *b, uint64_t i, size_t size)
{
    size_t start = b->len;
    buf_printf(b,
               "{\"record_id\":\"scan-%010" PRIu64 "\",\"name\":\"Maria Garcia %" PRIu64 "\",\"dob\":\"1961-04-%02d\","
               "\"ssn\":\"123-45-%04d\",\"phone\":\"+1-555-010-%04d\",\"address\":\"%d Oak Street, Springfield, IL "
               "62701\",\"favorite_color\":\"teal\",\"type\":\"lab\",\"ts\":\"2026-11-%02dT08:15:00Z\",\"notes\":\"",
               i, i % 5000, (int)(i % 28) + 1, (int)(i % 10000), (int)(i % 10000), (int)(i % 9000) + 1,
               (int)(i % 28) + 1);
    while (b->len - start + 16 < size) {
        buf_puts(b, words[next() % (sizeof words / sizeof words[0])]);
        buf_putc(b, next() % 12 ? ' ' : ',');
    }
    buf_puts(b, "\"}\n");
}

static void measure(const char *what, size_t size)
{
    buf body = {0};
    for (uint64_t i = 0; i < RECORDS; i++)
        record(&body, i, size);
    schema sc;
    schema_default(&sc);
    scan_config cfg = {.schema = &sc,
                       .max_record = (size_t)1 << 20,
                       .now_us = ms_now_us(),
                       .id_key = (const unsigned char *)"scan bench id key 0123456789abcd",
                       .deid_key = (const unsigned char *)"scan bench deid key 0123456789ab"};
    double prep[ROUNDS], scan[ROUNDS], plain[ROUNDS], wide[ROUNDS], fresh[ROUNDS], cached[ROUNDS];
    char *copy = malloc(body.len);
    if (!copy) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uint64_t sum = 0;
    uint32_t stored = 0;
    static json_member members[64];
    for (int k = 0; k < ROUNDS; k++) {
        record_batch rb = {0};
        ms_err e;
        memcpy(copy, body.data, body.len); /* as a request's body is: copied just before, past L2 at 20 KB */
        double t0 = ms_mono_s();
        if (record_prepare_body(&cfg, copy, body.len, &rb, &e) != MS_OK) {
            fprintf(stderr, "prepare: %s\n", e.msg);
            exit(1);
        }
        prep[k] = ms_mono_s() - t0;
        stored = rb.n - rb.rejected;
        record_batch_free(&rb);
        t0 = ms_mono_s();
        for (const char *p = body.data, *end = body.data + body.len; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            json_error je;
            if (json_scan_object(p, (size_t)(nl - p), members, 64, &je) < 0) {
                fprintf(stderr, "scan: %s\n", je.msg);
                exit(1);
            }
            p = nl + 1;
        }
        scan[k] = ms_mono_s() - t0;
        for (int way = 0; way < 2; way++) {
            t0 = ms_mono_s();
            for (const char *p = body.data, *end = body.data + body.len; p < end;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                sum += way ? XXH3_64bits_dispatch(p, (size_t)(nl - p)) : XXH3_64bits(p, (size_t)(nl - p));
                p = nl + 1;
            }
            (way ? wide : plain)[k] = ms_mono_s() - t0;
        }
        memcpy(copy, body.data, body.len);
        t0 = ms_mono_s();
        for (const char *p = copy, *end = copy + body.len; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            sum += (uint64_t)(nl - p);
            p = nl + 1;
        }
        fresh[k] = ms_mono_s() - t0;
        t0 = ms_mono_s();
        for (int i = 0; i < RECORDS; i++) {
            const char *volatile first = copy; /* read again each time: memchr is pure, the call would be hoisted */
            sum += (uint64_t)((const char *)memchr(first, '\n', body.len) - first);
        }
        cached[k] = ms_mono_s() - t0;
    }
    g_sink = sum;
    qsort(prep, ROUNDS, sizeof *prep, cmp);
    qsort(scan, ROUNDS, sizeof *scan, cmp);
    qsort(plain, ROUNDS, sizeof *plain, cmp);
    qsort(wide, ROUNDS, sizeof *wide, cmp);
    qsort(fresh, ROUNDS, sizeof *fresh, cmp);
    qsort(cached, ROUNDS, sizeof *cached, cmp);
    printf("%s: %u records, %.1f MB, median of %d rounds, one core\n", what, stored, body.len / 1e6, ROUNDS);
    printf("  record_prepare_body (stages 1-3) %8.0f MB/s %8.2f us/record\n", body.len / prep[ROUNDS / 2] / 1e6,
           prep[ROUNDS / 2] / RECORDS * 1e6);
    printf("  json_scan_object alone           %8.0f MB/s %8.2f us/record\n", body.len / scan[ROUNDS / 2] / 1e6,
           scan[ROUNDS / 2] / RECORDS * 1e6);
    printf("  XXH3-64 (memchr, then hash), plain    %8.0f MB/s %8.2f us/record\n", body.len / plain[ROUNDS / 2] / 1e6,
           plain[ROUNDS / 2] / RECORDS * 1e6);
    printf("  XXH3-64 (memchr, then hash), dispatch %8.0f MB/s %8.2f us/record\n", body.len / wide[ROUNDS / 2] / 1e6,
           wide[ROUNDS / 2] / RECORDS * 1e6);
    printf("  line ends (memchr), body just copied  %8.0f MB/s %8.2f us/record\n", body.len / fresh[ROUNDS / 2] / 1e6,
           fresh[ROUNDS / 2] / RECORDS * 1e6);
    printf("  line ends (memchr), record in cache   %8.0f MB/s %8.2f us/record\n", body.len / cached[ROUNDS / 2] / 1e6,
           cached[ROUNDS / 2] / RECORDS * 1e6);
    free(copy);
    schema_free(&sc);
    buf_free(&body);
}

/* jw_string (every answer's, export's and event's strings) over texts of n bytes, ASCII and "éa" repeated (a
 * non-ASCII run every 3 bytes): MB/s that stay level as n grows say it is linear (it was quadratic in the
 * second: a check of the whole rest of the string at every run; 300 KB took 35 s). */
static void measure_write(void)
{
    printf("jw_string, median of %d rounds, one core\n", ROUNDS);
    for (size_t n = 30000; n <= 3000000; n *= 10) {
        char *text = malloc(n);
        for (int kind = 0; kind < 2 && text; kind++) {
            for (size_t i = 0; i < n; i++)
                text[i] = kind ? "\xc3\xa9"
                                 "a"[i % 3]
                               : (char)('a' + i % 26);
            double t[ROUNDS];
            buf out = {0};
            for (int r = 0; r < ROUNDS; r++) {
                out.len = 0;
                double t0 = ms_mono_s();
                jw_string(&out, text, n - n % 3);
                t[r] = ms_mono_s() - t0;
                g_sink += out.len;
            }
            qsort(t, ROUNDS, sizeof t[0], cmp);
            printf("  %-10s %8zu bytes %8.0f MB/s\n",
                   kind ? "\"\xc3\xa9"
                          "a\"..."
                        : "ASCII",
                   n, n / t[ROUNDS / 2] / 1e6);
            buf_free(&out);
        }
        free(text);
    }
}

int main(void)
{
    measure("~20 KB records", 20480);
    measure("~200 B records", 200);
    measure_write();
    return 0;
}

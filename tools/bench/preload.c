/*
 * preload.c - `medstream preload DIR --patients N`: fill an empty store with N synthetic patients
 * (name, date of birth, favourite colour; identities from bench_identity) so that benchmarks can run
 * against a store that already knows millions of patients (DESIGN.md: memory <= 2 GB with 10 million).
 *
 * DESIGN: everything a patient has is keyed by its number, so writing the patients in number order
 * makes every LMDB write an append (MDB_APPEND); identities are assigned to numbers by a random
 * permutation. Each patient gets one version and one public copy; there are no records.
 * Contract: refuses a store that already has patients or commits. Offline: no server may run on DIR
 * (store_open's lock refuses it while one does).
 */
#include "preload.h"

#include "bench.h"
#include "base/json_write.h"
#include "base/options.h"
#include "pipeline/prepare.h"
#include "pipeline/record_scan.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDENTITY_BASE ((uint64_t)1 << 40) /* disjoint from the identities of bench runs */

static int preload_run(const char *dir, uint64_t patients, uint64_t seed, uint64_t chunk);

int preload_main(int argc, char **argv)
{
    uint64_t patients = 0, seed = 0, chunk = 0;
    /* clang-format off */
    const option opts[] = {
        {.name = "--patients", .type = OPT_UINT, .target = &patients, .required = true, .min = 1,
         .max = UINT32_MAX, /* patients are numbered in 32 bits (the permutation below) */
         .help = "number of synthetic patients"},
        {.name = "--seed", .type = OPT_UINT, .target = &seed, .def = "1",
         .help = "generator seed (identities as `medstream bench --seed`)"},
        {.name = "--chunk", .type = OPT_UINT, .target = &chunk, .def = "200000", .min = 1,
         .help = "patients per LMDB transaction"},
        {0},
    };
    /* clang-format on */
    const options_command cmd = {"preload", "medstream preload DIR --patients N [options]",
                                 "Fill an empty data directory with N synthetic patients, for benchmarks.", opts};
    options_args a;
    int code;
    if (options_parse_command(&cmd, argc, argv, 2, 1, &a, stdout, stderr, &code)) {
        if (a.npos == 1) {
            code = preload_run(a.pos[0], patients, seed, chunk);
        } else {
            fprintf(stderr, "medstream preload: expected the data directory (see medstream preload --help)\n");
            code = 2;
        }
    }
    options_args_free(&a);
    return code;
}

static int preload_run(const char *dir, uint64_t patients, uint64_t seed, uint64_t chunk)
{
    store *s;
    ms_err e = {0};
    store_options so = {.owner = "preload"};
    if (store_open(&s, dir, &so, &e) != MS_OK) {
        fprintf(stderr, "medstream preload: %s\n", e.msg);
        return 1;
    }
    int rc = 1;
    store_read *rd;
    if (store_read_begin(s, &rd, &e) != MS_OK) goto out;
    bool empty = store_patient_count(rd) == 0 && store_commit_pos(rd) == 0;
    store_read_end(rd);
    if (!empty) {
        ms_fail(&e, MS_ECONFLICT, "the store already has patients or records; preload needs a fresh one");
        goto out;
    }
    size_t np = (size_t)patients;
    uint32_t *perm = ms_malloc(sizeof *perm * np);
    for (size_t i = 0; i < np; i++)
        perm[i] = (uint32_t)i;
    uint64_t st = seed;
    for (size_t i = np - 1; i > 0; i--) {
        size_t j = (size_t)(ms_splitmix64(&st) % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    bulk_ident *ids = ms_malloc(sizeof *ids * np);
    arena keys = {0};
    schema sc;
    schema_default(&sc);
    static const char *const colors[] = {"red", "blue", "green", "yellow", "purple", "orange", "black", "white"};
    double t0 = ms_mono_s();
    for (size_t start = 0; start < np && rc; start += (size_t)chunk) {
        size_t cn = np - start < (size_t)chunk ? np - start : (size_t)chunk;
        buf body = {0};
        for (size_t k = start; k < start + cn; k++) {
            char name[160];
            int y, m, d;
            bench_identity(seed, IDENTITY_BASE + perm[k], name, sizeof name, &y, &m, &d);
            buf_puts(&body, "{\"name\":");
            jw_cstr(&body, name);
            buf_printf(&body, ",\"dob\":\"%04d-%02d-%02d\",\"favorite_color\":\"%s\"}\n", y, m, d, colors[perm[k] % 8]);
        }
        record_batch batch = {0};
        scan_config cfg = {.schema = &sc,
                           .max_record = 4096,
                           .now_us = ms_now_us(),
                           .id_key = store_id_key(s),
                           .deid_key = store_deid_key(s)};
        uint64_t body_pos;
        if (record_prepare_body(&cfg, body.data, body.len, &batch, &e) != MS_OK || batch.n != cn || batch.rejected ||
            store_append_body(s, body.data, body.len, &body_pos, &e) != MS_OK) {
            if (!e.msg[0]) ms_fail(&e, MS_EINVAL, "generated records did not scan");
            record_batch_free(&batch);
            buf_free(&body);
            break;
        }
        bulk_patient *bp = ms_malloc(sizeof *bp * cn);
        uint64_t *bpos = ms_malloc(sizeof *bpos * cn);
        for (size_t k = 0; k < cn; k++) {
            const parsed_record *r = &batch.records[k];
            bp[k] = (bulk_patient){start + k, r};
            bpos[k] = body_pos + (uint64_t)(r->body - body.data);
            ids[start + k] = (bulk_ident){arena_strndup(&keys, r->identity_key, r->identity_key_len),
                                          r->identity_key_len, start + k};
        }
        ms_code c = store_bulk_patients(s, bp, bpos, cn, &e);
        free(bp);
        free(bpos);
        record_batch_free(&batch);
        buf_free(&body);
        if (c != MS_OK) break;
        if (start + cn == np) rc = 0;
        fprintf(stderr, "\rpatients %zu / %zu (%.0f s)", start + cn, np, ms_mono_s() - t0);
    }
    fputc('\n', stderr);
    if (rc == 0) {
        rc = 1;
        size_t start = 0;
        for (; start < np; start += (size_t)chunk) {
            size_t cn = np - start < (size_t)chunk ? np - start : (size_t)chunk;
            if (store_bulk_idents(s, ids + start, cn, &e) != MS_OK) break;
        }
        if (start >= np) {
            rc = 0;
            printf("preloaded %zu patients into %s in %.1f s\n", np, dir, ms_mono_s() - t0);
        }
    }
    arena_free(&keys);
    free(ids);
    free(perm);
    schema_free(&sc);
out:
    if (rc) fprintf(stderr, "medstream preload: %s\n", e.msg);
    store_close(s);
    return rc;
}

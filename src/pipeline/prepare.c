/*
 * prepare.c - the pure stages in order (see prepare.h).
 */
#include "pipeline/prepare.h"

#include "pipeline/deidentify.h"
#include "pipeline/identity.h"

#include <stdlib.h>
#include <string.h>

/* Stages 2 and 3 on a record that stage 1 produced. */
static void stages_2_3(const scan_config *cfg, parsed_record *r, arena *mem)
{
    identity_of_record(cfg->schema, cfg->now_us, r, mem);
    deid_record(cfg->schema, cfg->deid_key, r, mem);
}

ms_code record_prepare_body(const scan_config *cfg, const char *body, size_t len, record_batch *out, ms_err *e)
{
    ms_code rc = record_scan_body(cfg, body, len, out, e);
    if (rc != MS_OK) return rc;
    out->rejected = 0;
    for (uint32_t i = 0; i < out->n; i++) {
        stages_2_3(cfg, &out->records[i], &out->mem);
        if (out->records[i].rejected) out->rejected++;
    }
    return MS_OK;
}

void record_prepare_one(const scan_config *cfg, const char *text, size_t len, uint32_t line, arena *mem,
                        parsed_record *out)
{
    record_scan_one(cfg, text, len, line, mem, out);
    stages_2_3(cfg, out, mem);
}

void record_prepare_csv(const scan_config *cfg, const csv_header *h, const csv_batch *rows, record_batch *out)
{
    if (out->cap - out->n < rows->n) {
        out->cap = out->n + rows->n;
        out->records = ms_realloc(out->records, sizeof(parsed_record) * (out->cap ? out->cap : 1));
    }
    for (uint32_t i = 0; i < rows->n; i++) {
        const csv_row *row = &rows->rows[i];
        parsed_record *r = &out->records[out->n++];
        uint32_t line = row->line > UINT32_MAX ? UINT32_MAX : (uint32_t)row->line;
        if (row->status == CSV_ROW_OK) {
            record_prepare_one(cfg, rows->json + row->json, row->json_len, line, &out->mem, r);
        } else {
            char msg[512];
            size_t n = csv_row_message(h, row, msg, sizeof msg);
            memset(r, 0, sizeof *r);
            r->line = line;
            r->rejected = true;
            r->error = arena_strndup(&out->mem, msg, n);
        }
        if (r->rejected) out->rejected++;
    }
}

/*
 * prepare.c - the pure stages in order (see prepare.h).
 */
#include "pipeline/prepare.h"

#include "pipeline/deidentify.h"
#include "pipeline/identity.h"

/* Stages 2 and 3 on a record that stage 1 produced. */
static void stages_2_3(const scan_config *cfg, parsed_record *r, arena *mem)
{
    identity_of_record(cfg->schema, cfg->now_us, r, mem);
    deid_record(cfg->schema, r, mem);
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

/*
 * record_sources.c - stored records read back as merge sources (see record_sources.h).
 */
#include "store/record_sources.h"

#include <string.h>

void record_sources_push(record_sources *g, const merge_source *m)
{
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 16;
        merge_source *bigger = arena_alloc(g->mem, sizeof *bigger * cap);
        if (g->n) memcpy(bigger, g->src, sizeof *bigger * g->n);
        g->src = bigger;
        g->cap = cap;
    }
    g->src[g->n++] = *m;
}

bool record_sources_add(void *ctx, const record_version *rv)
{
    record_sources *g = ctx;
    if (g->skip && rv->record_id_len == g->skip_len && memcmp(rv->record_id, g->skip, g->skip_len) == 0) return true;
    if (rv->ts_us > g->ts_max) return true;
    g->body.len = 0;
    if ((g->rc = store_record_body(g->store, rv, &g->body, g->e)) != MS_OK) return false;
    char *text = arena_strndup(g->mem, g->body.data, g->body.len);
    record_field *fields;
    uint32_t nfields;
    if (record_scan_fields(text, rv->body_len, g->mem, &fields, &nfields) != NULL) {
        g->rc = ms_fail(g->e, MS_ECORRUPT, "store: a stored record body is not a JSON object");
        return false;
    }
    merge_source m = {.fields = fields,
                      .nfields = nfields,
                      .body = text,
                      .body_len = rv->body_len,
                      .body_pos = rv->body_pos,
                      .ts = rv->ts_us,
                      .valid_from = rv->valid_from,
                      .sealer = rv->sealed ? rv->patient_number + 1 : 0};
    record_sources_push(g, &m);
    return true;
}

void record_sources_free(record_sources *g) { buf_free(&g->body); }

/*
 * record_sources.c - stored records read back as merge sources (see record_sources.h).
 */
#include "store/record_sources.h"

#include <string.h>

/* Mark the fields of decide that fields[0..n) (sorted by key) hold. */
static void see(record_sources *g, const record_field *fields, uint32_t n)
{
    for (uint32_t i = 0, j = 0; i < g->ndecide && j < n;) {
        int c = record_key_cmp(g->decide[i].key, g->decide[i].key_len, fields[j].key, fields[j].key_len);
        if (c == 0 && !g->seen[i]) {
            g->seen[i] = true;
            g->unseen--;
        }
        if (c <= 0) i++;
        if (c >= 0) j++;
    }
}

/* Can the walk (newest event time first) stop before a record of event time ts: is every field of decide held
 * by a record read, or by the added source where ts is older than it? */
static bool decided(record_sources *g, int64_t ts)
{
    if (!g->seen) { /* the walk's first record */
        g->seen = arena_alloc(g->mem, g->ndecide ? g->ndecide : 1);
        memset(g->seen, 0, g->ndecide ? g->ndecide : 1);
        g->unseen = g->ndecide;
        g->group_ts = INT64_MAX;
    }
    if (ts >= g->group_ts) return false; /* the same event time as the last record read: it may still win */
    if (g->npushed && ts < g->pushed_ts) {
        see(g, g->pushed_fields, g->npushed);
        g->npushed = 0;
    }
    g->group_ts = ts;
    return g->unseen == 0;
}

void record_sources_push(record_sources *g, const merge_source *m)
{
    if (g->decide && !g->seen) { /* the added source, before the walk */
        g->pushed_fields = m->fields;
        g->npushed = m->nfields;
        g->pushed_ts = m->ts;
    }
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
    if (g->decide && decided(g, rv->ts_us)) return false;
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
    if (g->decide) see(g, fields, nfields);
    return true;
}

void record_sources_free(record_sources *g) { buf_free(&g->body); }

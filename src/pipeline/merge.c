/*
 * merge.c - patient state merge in event-time order (see merge.h): a sorted merge of the state's fields
 * and the record's fields, where each field keeps the value that comes last in (ts, commit time,
 * segment position) order.
 */
#include "pipeline/merge.h"

#include <stdlib.h>
#include <string.h>

/* Is (ts, vf, pos) of a value after that of state field f? Values of different records never share a
 * position (bodies do not overlap), so this is a total order over the values of distinct records. */
static bool after(int64_t ts, int64_t vf, uint64_t pos, const state_field *f)
{
    if (ts != f->ts) return ts > f->ts;
    if (vf != f->vf) return vf > f->vf;
    return pos > f->pos;
}

static bool same_value(const state_field *a, const state_field *b) { return a->len == b->len && a->hash == b->hash; }

void merge_apply(const schema *s, const state_field *prev, uint32_t nprev, const merge_source *r, arena *mem,
                 merge_result *out)
{
    out->fields = arena_alloc(mem, sizeof(state_field) * (nprev + r->nfields + 1));
    out->nfields = 0;
    out->changed = 0;
    out->moved = 0;
    out->public_changed = false;
    uint32_t i = 0, j = 0;
    while (i < nprev || j < r->nfields) {
        const record_field *f = j < r->nfields ? &r->fields[j] : NULL;
        if (f && schema_is_record_field(s, f->key, f->key_len)) {
            j++;
            continue;
        }
        int c = !f ? -1 : i >= nprev ? 1 : record_key_cmp(prev[i].key, prev[i].key_len, f->key, f->key_len);
        if (c < 0) {
            out->fields[out->nfields++] = prev[i++];
            continue;
        }
        state_field nf = {.key = f->key,
                          .key_len = f->key_len,
                          .pos = r->body_pos + (uint64_t)(f->val - r->body),
                          .len = f->val_len,
                          .hash = f->hash,
                          .ts = r->ts,
                          .vf = r->valid_from,
                          .off = r->sealer ? (uint32_t)(f->val - r->body) : 0,
                          .sealer = r->sealer,
                          .value = f->val};
        j++;
        if (c == 0) {
            const state_field *old = &prev[i++];
            if (!after(nf.ts, nf.vf, nf.pos, old)) { /* the state's value is later in event time: it stays */
                out->fields[out->nfields++] = *old;
                continue;
            }
            out->fields[out->nfields++] = nf; /* the later record holds the field, even with an equal value */
            if (same_value(old, &nf)) {
                out->moved++;
                continue;
            }
        } else {
            out->fields[out->nfields++] = nf;
        }
        out->changed++;
        if (schema_public_top(s, f->key, f->key_len)) out->public_changed = true;
    }
}

static int source_order(const void *a, const void *b)
{
    const merge_source *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->valid_from != y->valid_from) return x->valid_from < y->valid_from ? -1 : 1;
    return x->body_pos < y->body_pos ? -1 : x->body_pos > y->body_pos;
}

void merge_records(const schema *s, merge_source *src, uint32_t n, const state_field *prev, uint32_t nprev, arena *mem,
                   merge_result *out)
{
    if (n) qsort(src, n, sizeof *src, source_order);
    merge_result acc = {0};
    acc.fields = arena_alloc(mem, sizeof(state_field));
    for (uint32_t i = 0; i < n; i++) {
        merge_result next;
        merge_apply(s, acc.fields, acc.nfields, &src[i], mem, &next);
        acc = next;
    }
    /* what changed against the state it replaces: keys added or removed, values changed */
    acc.changed = 0;
    acc.moved = 0;
    acc.public_changed = false;
    uint32_t i = 0, j = 0;
    while (i < nprev || j < acc.nfields) {
        int c = i >= nprev ? 1
                : j >= acc.nfields
                    ? -1
                    : record_key_cmp(prev[i].key, prev[i].key_len, acc.fields[j].key, acc.fields[j].key_len);
        const state_field *f = c < 0 ? &prev[i] : &acc.fields[j];
        bool differs = c != 0 || !same_value(&prev[i], &acc.fields[j]);
        bool moved = !differs && prev[i].pos != acc.fields[j].pos;
        if (c <= 0) i++;
        if (c >= 0) j++;
        if (moved) acc.moved++;
        if (!differs) continue;
        acc.changed++;
        if (schema_public_top(s, f->key, f->key_len)) acc.public_changed = true;
    }
    *out = acc;
}

bool merge_contributes(const state_field *state, uint32_t n, uint64_t pos, uint32_t len)
{
    for (uint32_t i = 0; i < n; i++)
        if (state[i].pos >= pos && state[i].pos < pos + len) return true;
    return false;
}

bool merge_replacing_recomputes(const state_field *state, uint32_t n, uint64_t pos, uint32_t len, const merge_source *r)
{
    return merge_contributes(state, n, pos, len) && !merge_supersedes(state, n, pos, len, r);
}

bool merge_supersedes(const state_field *state, uint32_t n, uint64_t pos, uint32_t len, const merge_source *r)
{
    for (uint32_t i = 0; i < n; i++) {
        const state_field *f = &state[i];
        if (f->pos < pos || f->pos >= pos + len) continue;
        const record_field *rf = record_field_get(
            &(parsed_record){.fields = (record_field *)r->fields, .nfields = r->nfields}, f->key, f->key_len);
        if (!rf || !after(r->ts, r->valid_from, r->body_pos + (uint64_t)(rf->val - r->body), f)) return false;
    }
    return true;
}

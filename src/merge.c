/*
 * merge.c - patient state merge (see merge.h): a sorted merge of the previous state's fields and the
 * record's fields.
 */
#include "merge.h"

void merge_patient_state(const schema *s, const state_field *prev, uint32_t nprev, const parsed_record *r,
                         uint64_t body_pos, arena *mem, merge_result *out)
{
    out->fields = arena_alloc(mem, sizeof(state_field) * (nprev + r->nfields + 1));
    out->nfields = 0;
    out->changed = 0;
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
                          .pos = body_pos + (uint64_t)(f->val - r->body),
                          .len = f->val_len,
                          .hash = f->hash};
        bool same = c == 0 && prev[i].len == f->val_len && prev[i].hash == f->hash;
        if (c == 0) i++;
        j++;
        if (same) {
            out->fields[out->nfields++] = prev[i - 1]; /* unchanged: keep the older reference */
            continue;
        }
        out->fields[out->nfields++] = nf;
        out->changed++;
        if (schema_public(s, f->key, f->key_len)) out->public_changed = true;
    }
}

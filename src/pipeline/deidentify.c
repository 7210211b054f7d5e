/*
 * deidentify.c - allow-list projection of paths with transforms (see deidentify.h).
 *
 * DESIGN: the allow-list entries that start at one top-level field form a group; a group is projected
 * down the value one path segment at a time (project_member / project_object), so that entries sharing
 * a prefix ("address.zip", "address.state") write one nested object. A copy with drop entries inside
 * it copies member by member, leaving the dropped ones out (arrays are transparent to drops: a drop
 * removes the member from every element, whichever way its path marks the array). Values were
 * validated by the scanner before they get here; the walkers below never read outside them.
 */
#include "pipeline/deidentify.h"

#include "base/json_write.h"
#include "base/timefmt.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const schema *s;
    const deid_ctx *cx;
} proj;

/* ---- walking validated JSON values (json_scan.h json_iter) ---- */

/* Is the raw key text (escapes not decoded) the name? */
static bool raw_key_is(const char *k, size_t kl, const char *name)
{
    size_t n = strlen(name);
    if (!memchr(k, '\\', kl)) return kl == n && memcmp(k, name, n) == 0;
    char *dec = malloc(kl ? kl : 1);
    size_t dl = json_string_decode(k, kl, dec);
    bool eq = dl == n && memcmp(dec, name, n) == 0;
    free(dec);
    return eq;
}

/* The first member named name of the object text v. */
static bool obj_find(const char *v, size_t vl, const char *name, const char **mv, size_t *ml, json_type *mt)
{
    json_iter it = json_iter_begin(v, vl);
    const char *k;
    size_t kl;
    while (json_iter_member(&it, &k, &kl, mv, ml, mt))
        if (raw_key_is(k, kl, name)) return true;
    return false;
}

static json_type type_of_text(const char *v)
{
    switch (v[0]) {
    case '"': return JSON_STRING;
    case '{': return JSON_OBJECT;
    case '[': return JSON_ARRAY;
    case 't': return JSON_TRUE;
    case 'f': return JSON_FALSE;
    case 'n': return JSON_NULL;
    default: return JSON_NUMBER;
    }
}

/* ---- one value through its transform ---- */

static bool is_dob(const proj *P, const schema_public_field *pf)
{
    return pf->nseg == 1 && strcmp(pf->seg[0].name, P->s->dob_field) == 0;
}

/* Write the transformed value; false if it cannot be published (the caller takes back what was written). */
static bool apply(const proj *P, const schema_public_field *pf, const char *v, size_t vl, json_type t, buf *out)
{
    const tf_keys *keys = P->cx ? P->cx->keys : NULL;
    int64_t event = P->cx ? P->cx->event_us : INT64_MIN;
    if (pf->transform == PUBLISH_COPY) {
        buf_put(out, v, vl);
        return true;
    }
    if (pf->transform == PUBLISH_DROP) return false;
    if (pf->transform == PUBLISH_PSEUDONYM && t == JSON_NUMBER) {
        if (!keys || (pf->patient_scope && !keys->have_patient)) return false;
        char h[TF_PSEUDONYM_HEX + 1];
        tf_pseudonym(pf->patient_scope ? keys->patient_pseudonym : keys->store_pseudonym, v, vl, h);
        jw_cstr(out, h);
        return true;
    }
    if (t != JSON_STRING || vl < 2) return false;
    char *s = malloc(vl);
    size_t n = json_string_decode(v + 1, vl - 2, s);
    bool ok = false;
    char small[24];
    switch (pf->transform) {
    case PUBLISH_YEAR:
        ok = tf_year(s, n, small);
        if (ok && is_dob(P, pf)) { /* Safe Harbor: no year that tells an age of 90 or more */
            char age[8];
            ok = tf_age(s, n, event, age);
            if (ok && strcmp(age, "90+") == 0) memcpy(small, "90+", 4);
        }
        break;
    case PUBLISH_ZIP3: ok = tf_zip3(s, n, small); break;
    case PUBLISH_AGE: ok = tf_age(s, n, event, small); break;
    case PUBLISH_AGE_BAND: ok = tf_age_band(s, n, event, pf->width, small); break;
    case PUBLISH_PSEUDONYM:
        ok = keys && (!pf->patient_scope || keys->have_patient);
        if (ok) tf_pseudonym(pf->patient_scope ? keys->patient_pseudonym : keys->store_pseudonym, s, n, small);
        break;
    case PUBLISH_DATE_SHIFT:
        if (keys && keys->have_patient) {
            buf shifted = {0};
            ok = tf_date_shift(s, n, tf_shift_days(keys->shift_seed, pf->max_days), &shifted);
            if (ok) jw_string(out, shifted.data, shifted.len);
            buf_free(&shifted);
        }
        free(s);
        return ok;
    default: break;
    }
    if (ok) jw_cstr(out, small);
    free(s);
    return ok;
}

/* ---- copies with drops inside ---- */

/* Copy v, leaving out the members that the drop entries idx[0..n) name from segment d on. */
static void copy_except(const proj *P, const int *idx, int n, int d, const char *v, size_t vl, json_type t, buf *out)
{
    if (n == 0 || (t != JSON_OBJECT && t != JSON_ARRAY)) {
        buf_put(out, v, vl);
        return;
    }
    json_iter it = json_iter_begin(v, vl);
    const char *k, *mv;
    size_t kl, ml;
    json_type mt;
    bool first = true;
    if (t == JSON_ARRAY) { /* transparent: each element as the array */
        buf_putc(out, '[');
        while (json_iter_element(&it, &mv, &ml, &mt)) {
            if (!first) buf_putc(out, ',');
            first = false;
            copy_except(P, idx, n, d, mv, ml, mt, out);
        }
        buf_putc(out, ']');
        return;
    }
    int *sub = malloc(sizeof(int) * (size_t)n);
    buf_putc(out, '{');
    while (json_iter_member(&it, &k, &kl, &mv, &ml, &mt)) {
        bool gone = false;
        int nsub = 0;
        for (int i = 0; i < n && !gone; i++) {
            const schema_public_field *q = &P->s->pub[idx[i]];
            if (!raw_key_is(k, kl, q->seg[d].name)) continue;
            if (q->nseg == d + 1)
                gone = true;
            else
                sub[nsub++] = idx[i];
        }
        if (gone) continue;
        if (!first) buf_putc(out, ',');
        first = false;
        buf_putc(out, '"');
        buf_put(out, k, kl);
        buf_puts(out, "\":");
        copy_except(P, sub, nsub, d + 1, mv, ml, mt, out);
    }
    buf_putc(out, '}');
    free(sub);
}

/* ---- the projection ---- */

static bool project_object(const proj *P, const int *idx, int n, int d, const char *v, size_t vl, json_type t,
                           buf *out);

/* The value v of the member that entries idx[0..n) all name at segment d: written as published, or
 * false (nothing of it is published). */
static bool project_member(const proj *P, const int *idx, int n, int d, const char *v, size_t vl, json_type t, buf *out)
{
    const schema_public_field *leaf = NULL;
    bool any = false;
    for (int i = 0; i < n; i++) {
        const schema_public_field *p = &P->s->pub[idx[i]];
        if (p->nseg == d + 1) leaf = p;
        if (p->transform != PUBLISH_DROP) any = true;
    }
    if (!any || (leaf && leaf->transform == PUBLISH_DROP)) return false;
    if (leaf && leaf->transform == PUBLISH_COPY) {
        if (leaf->seg[d].each && t != JSON_ARRAY) return false; /* "codes[]": only an array */
        int *drops = malloc(sizeof(int) * (size_t)n);
        int nd = 0;
        for (int i = 0; i < n; i++)
            if (P->s->pub[idx[i]].nseg > d + 1) drops[nd++] = idx[i];
        copy_except(P, drops, nd, d + 1, v, vl, t, out);
        free(drops);
        return true;
    }
    bool each = leaf ? leaf->seg[d].each : P->s->pub[idx[0]].seg[d].each;
    if (!each) return leaf ? apply(P, leaf, v, vl, t, out) : project_object(P, idx, n, d + 1, v, vl, t, out);
    if (t != JSON_ARRAY) return false;
    json_iter it = json_iter_begin(v, vl);
    const char *ev;
    size_t el;
    json_type et;
    bool first = true;
    buf_putc(out, '[');
    while (json_iter_element(&it, &ev, &el, &et)) {
        size_t mark = out->len;
        if (!first) buf_putc(out, ',');
        bool ok = leaf ? apply(P, leaf, ev, el, et, out) : project_object(P, idx, n, d + 1, ev, el, et, out);
        if (ok) {
            first = false;
        } else {
            out->len = mark;
            out->data[mark] = 0;
        }
    }
    buf_putc(out, ']');
    return true;
}

/* The object v as the entries idx[0..n) publish it from segment d on; false if it publishes nothing. */
static bool project_object(const proj *P, const int *idx, int n, int d, const char *v, size_t vl, json_type t, buf *out)
{
    if (t != JSON_OBJECT) return false;
    int *sub = malloc(sizeof(int) * (size_t)n);
    bool first = true;
    buf_putc(out, '{');
    for (int i = 0; i < n; i++) {
        const char *name = P->s->pub[idx[i]].seg[d].name;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(P->s->pub[idx[j]].seg[d].name, name) == 0;
        if (seen) continue;
        int nsub = 0;
        for (int j = i; j < n; j++)
            if (strcmp(P->s->pub[idx[j]].seg[d].name, name) == 0) sub[nsub++] = idx[j];
        const char *mv;
        size_t ml;
        json_type mt;
        if (!obj_find(v, vl, name, &mv, &ml, &mt)) continue;
        size_t mark = out->len;
        bool was_first = first;
        jw_key(out, &first, name);
        if (!project_member(P, sub, nsub, d, mv, ml, mt, out)) {
            out->len = mark;
            out->data[mark] = 0;
            first = was_first;
        }
    }
    buf_putc(out, '}');
    free(sub);
    return !first;
}

/* The entries whose path starts at top-level field i's name (i: the group's first entry), into idx. */
static int group_of(const schema *s, int i, int *idx)
{
    int n = 0;
    for (int j = i; j < s->npub; j++)
        if (strcmp(s->pub[j].seg[0].name, s->pub[i].seg[0].name) == 0) idx[n++] = j;
    return n;
}

static bool group_seen(const schema *s, int i)
{
    for (int j = 0; j < i; j++)
        if (strcmp(s->pub[j].seg[0].name, s->pub[i].seg[0].name) == 0) return true;
    return false;
}

/* One top-level field through its group: key and value, or nothing. */
static void put_top(const proj *P, const int *idx, int n, const char *v, size_t vl, json_type t, bool *first, buf *out)
{
    size_t mark = out->len;
    bool was_first = *first;
    jw_key(out, first, P->s->pub[idx[0]].seg[0].name);
    if (!project_member(P, idx, n, 0, v, vl, t, out)) {
        out->len = mark; /* unpublishable: leave the field out, never copy it raw */
        out->data[mark] = 0;
        *first = was_first;
    }
}

void deid_record_fields(const schema *s, const deid_ctx *cx, const record_field *fields, uint32_t n, buf *out)
{
    proj P = {s, cx};
    int idx[SCHEMA_MAX_PUBLIC];
    bool first = true;
    buf_putc(out, '{');
    for (int i = 0; i < s->npub; i++) {
        if (group_seen(s, i)) continue;
        const char *top = s->pub[i].seg[0].name;
        size_t kl = strlen(top);
        for (uint32_t j = 0; j < n; j++) {
            if (fields[j].key_len != kl || memcmp(fields[j].key, top, kl) != 0) continue;
            int k = group_of(s, i, idx);
            put_top(&P, idx, k, fields[j].val, fields[j].val_len, fields[j].type, &first, out);
            break;
        }
    }
    buf_putc(out, '}');
}

bool deid_needs_keys(const schema *s)
{
    for (int i = 0; i < s->npub; i++)
        if (s->pub[i].transform == PUBLISH_DATE_SHIFT || s->pub[i].transform == PUBLISH_PSEUDONYM) return true;
    return false;
}

void deid_record(const schema *s, const unsigned char *deid_key, parsed_record *r, arena *mem)
{
    if (r->rejected) return;
    tf_keys keys;
    bool keyed = deid_key && deid_needs_keys(s);
    if (keyed) tf_patient_keys(deid_key, r->identity_key, r->identity_key_len, &keys);
    deid_ctx cx = {.event_us = r->ts_us, .keys = keyed ? &keys : NULL};
    buf pub = {0};
    deid_record_fields(s, &cx, r->fields, r->nfields, &pub);
    r->public_fields = arena_strndup(mem, pub.data, pub.len);
    r->public_fields_len = (uint32_t)pub.len;
    buf_free(&pub);
}

bool deid_patient_field_public(const schema *s, const state_field *f)
{
    return schema_public_top(s, f->key, f->key_len) && !schema_is_record_field(s, f->key, f->key_len);
}

int64_t deid_patient_event_time(const state_field *state, uint32_t n)
{
    int64_t t = INT64_MIN;
    for (uint32_t i = 0; i < n; i++)
        if (state[i].ts > t) t = state[i].ts;
    return t;
}

void deid_patient_fields(const schema *s, const deid_ctx *cx, const state_field *state, uint32_t n,
                         const char *const *vals, buf *out)
{
    proj P = {s, cx};
    int idx[SCHEMA_MAX_PUBLIC];
    bool first = true;
    buf_putc(out, '{');
    for (int i = 0; i < s->npub; i++) {
        if (group_seen(s, i)) continue;
        const char *top = s->pub[i].seg[0].name;
        size_t kl = strlen(top);
        if (schema_is_record_field(s, top, kl)) continue;
        for (uint32_t j = 0; j < n; j++) {
            if (state[j].key_len != kl || memcmp(state[j].key, top, kl) != 0 || !vals[j] || !state[j].len) continue;
            int k = group_of(s, i, idx);
            put_top(&P, idx, k, vals[j], state[j].len, type_of_text(vals[j]), &first, out);
            break;
        }
    }
    buf_putc(out, '}');
}

/*
 * codec.c - the store's key codecs and value encodings: the byte layouts of README.md's "LMDB layout"
 * table are written and read here, except three kept beside their only user: the commit log entry
 * (commit_log.c), the audit entry (audit_chain.c: its text is what the hash chain covers) and meta's
 * be64 values (env.c).
 *
 * DESIGN: keys sort the way reads walk them. Versioned keys end in ~valid_from ~version (big-endian
 * complements), so the newest version of a thing comes first and an as-of read is one cursor seek;
 * event times in keys have their sign bit flipped so that byte order is numeric order. Public copies'
 * keys begin with their schema version's prefix (none for version 1, the keys from before versions;
 * 'V' be32(version) after), so that a version's copies are one key range. Values are
 * fixed big-endian headers followed by length-prefixed strings. Formats that changed keep reading their
 * older entries: a record version without its flags byte (written before tombstones) reads as live, a
 * patient version without the PV_FORMAT_2 byte (written before event-time order) reads with its fields
 * older than any record, a user entry without the ACCOUNT_FORMAT byte (written before issue 9) reads as
 * enabled with unknown times.
 *
 * Contract: pure functions over buffers (no LMDB call, no I/O); a decode checks every length against
 * the value and returns false on a malformed entry (the caller says MS_ECORRUPT), never reads past it.
 * Must never: change an existing format in place (add a format byte and keep decoding the old one).
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- keys ---- */

void st_key_versioned(buf *k, const void *prefix, size_t n, int64_t vf, uint32_t version)
{
    k->len = 0;
    buf_put(k, prefix, n);
    buf_put_be64(k, ~(uint64_t)vf);
    buf_put_be32(k, ~version);
}

void st_key_version_read(const void *key, size_t len, int64_t *vf, uint32_t *version)
{
    const char *tail = (const char *)key + len - 12;
    *vf = (int64_t)~ms_get_be64(tail);
    *version = ~ms_get_be32(tail + 8);
}

void st_key_record(buf *k, const char *rid, size_t n, int64_t vf, uint32_t version)
{
    k->len = 0;
    buf_put(k, rid, n);
    buf_putc(k, 0);
    buf_put_be64(k, ~(uint64_t)vf);
    buf_put_be32(k, ~version);
}

size_t st_public_version_prefix(unsigned char out[5], uint32_t sv)
{
    if (sv <= 1) return 0; /* version 1: the keys from before schema versions, unprefixed */
    out[0] = 'V';
    ms_set_be32(out + 1, sv);
    return 5;
}

void st_key_public_record(buf *k, uint32_t sv, const char *rid, size_t n, int64_t vf, uint32_t version)
{
    unsigned char vp[5];
    k->len = 0;
    buf_put(k, vp, st_public_version_prefix(vp, sv));
    buf_putc(k, 'R');
    buf_put(k, rid, n);
    buf_putc(k, 0);
    buf_put_be64(k, ~(uint64_t)vf);
    buf_put_be32(k, ~version);
}

void st_patient_prefix(unsigned char out[9], uint64_t number, char tag)
{
    ms_set_be64(out, number);
    out[8] = (unsigned char)tag;
}

size_t st_public_patient_prefix(unsigned char out[14], uint32_t sv, uint64_t number)
{
    size_t n = st_public_version_prefix(out, sv);
    out[n] = 'P';
    ms_set_be64(out + n + 1, number);
    return n + 9;
}

/* ---- record versions ----
 * Format 1 (stores from before issue 17's record format): be32 version, be64 valid_from, pid (16), be64
 * patient number, be64 event ts, be64 body position, be32 body length, be64 body hash, content hash (16),
 * type length (1), type, flags (1; absent before tombstones), and when flags has RV_PARENT: be16 parent id
 * length, parent id (absent before issue 13).
 * Format 2: RV_FORMAT_2, varint patient number, zigzag event ts, varint body position, varint body
 * length, varint body hash (0 for a sealed body), content hash (16), flags (1), type length (1), type,
 * and with RV_PARENT varint parent id length, parent id. The version and valid_from are the key's, the
 * patient id its number's (patient_id_from_number): ~45 bytes fewer than format 1. A format 1 entry's first
 * byte is its version's high byte, never RV_FORMAT_2 below 0xF2000000 versions of one record. */
enum { RV_HDR = 4 + 8 + 16 + 8 + 8 + 8 + 4 + 8 + 16 + 1, RV_DELETED = 1, RV_PARENT = 2, RV_SEALED = 4 };
#define RV_FORMAT_2 0xF2

void st_record_encode(buf *b, const record_version *rv)
{
    b->len = 0;
    buf_putc(b, (char)RV_FORMAT_2);
    buf_put_varint(b, rv->patient_number);
    buf_put_zigzag(b, rv->ts_us);
    buf_put_varint(b, rv->body_pos);
    buf_put_varint(b, rv->body_len);
    buf_put_varint(b, rv->body_hash);
    buf_put(b, rv->content_hash, 16);
    buf_putc(
        b, (char)((rv->deleted ? RV_DELETED : 0) | (rv->parent_id_len ? RV_PARENT : 0) | (rv->sealed ? RV_SEALED : 0)));
    buf_putc(b, (char)rv->type_len);
    buf_put(b, rv->type, rv->type_len);
    if (rv->parent_id_len) {
        buf_put_varint(b, rv->parent_id_len);
        buf_put(b, rv->parent_id, rv->parent_id_len);
    }
}

static bool record_decode_v2(const patient_id_key *pk, const unsigned char *p, const unsigned char *end,
                             record_version *rv)
{
    uint64_t body_len, parent_len;
    if (!ms_get_varint(&p, end, &rv->patient_number) || !ms_get_zigzag(&p, end, &rv->ts_us) ||
        !ms_get_varint(&p, end, &rv->body_pos) || !ms_get_varint(&p, end, &body_len) || body_len > UINT32_MAX ||
        !ms_get_varint(&p, end, &rv->body_hash) || end - p < 16 + 2)
        return false;
    rv->body_len = (uint32_t)body_len;
    memcpy(rv->content_hash, p, 16);
    unsigned flags = p[16];
    rv->type_len = p[17];
    p += 18;
    if (rv->type_len > 64 || (size_t)(end - p) < rv->type_len) return false;
    memcpy(rv->type, p, rv->type_len);
    rv->type[rv->type_len] = 0;
    p += rv->type_len;
    rv->deleted = (flags & RV_DELETED) != 0;
    rv->sealed = (flags & RV_SEALED) != 0;
    rv->parent_id_len = 0;
    rv->parent_id[0] = 0;
    if (flags & RV_PARENT) {
        if (!ms_get_varint(&p, end, &parent_len) || parent_len == 0 || parent_len > RECORD_ID_MAX ||
            (uint64_t)(end - p) < parent_len)
            return false;
        rv->parent_id_len = (uint32_t)parent_len;
        memcpy(rv->parent_id, p, parent_len);
        rv->parent_id[parent_len] = 0;
        p += parent_len;
    }
    patient_id_from_number(pk, rv->patient_number, &rv->pid);
    return p == end;
}

static bool record_decode_v1(const MDB_val *v, record_version *rv)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < RV_HDR) return false;
    rv->version = ms_get_be32(p);
    rv->valid_from = (int64_t)ms_get_be64(p + 4);
    memcpy(rv->pid.b, p + 12, 16);
    rv->patient_number = ms_get_be64(p + 28);
    rv->ts_us = (int64_t)ms_get_be64(p + 36);
    rv->body_pos = ms_get_be64(p + 44);
    rv->body_len = ms_get_be32(p + 52);
    rv->body_hash = ms_get_be64(p + 56);
    memcpy(rv->content_hash, p + 64, 16);
    rv->type_len = p[80];
    if (rv->type_len > 64) return false;
    rv->deleted = false;
    rv->sealed = false;
    rv->parent_id_len = 0;
    rv->parent_id[0] = 0;
    size_t at = RV_HDR + rv->type_len; /* the flags byte, if any */
    if (v->mv_size > at) {
        unsigned flags = p[at];
        rv->deleted = (flags & RV_DELETED) != 0;
        rv->sealed = (flags & RV_SEALED) != 0;
        at++;
        if (flags & RV_PARENT) {
            if (v->mv_size < at + 2) return false;
            rv->parent_id_len = ms_get_be16(p + at);
            at += 2;
            if (rv->parent_id_len == 0 || rv->parent_id_len > RECORD_ID_MAX || v->mv_size - at < rv->parent_id_len)
                return false;
            memcpy(rv->parent_id, p + at, rv->parent_id_len);
            rv->parent_id[rv->parent_id_len] = 0;
            at += rv->parent_id_len;
        }
    }
    if (v->mv_size != at) return false;
    memcpy(rv->type, p + RV_HDR, rv->type_len);
    rv->type[rv->type_len] = 0;
    return true;
}

bool st_record_decode(const patient_id_key *pk, const MDB_val *k, const MDB_val *v, record_version *rv)
{
    /* the key: record_id NUL ~valid_from ~version */
    const unsigned char *key = k->mv_data, *p = v->mv_data;
    if (k->mv_size < 14 || k->mv_size - 13 > RECORD_ID_MAX || key[k->mv_size - 13] != 0 || v->mv_size < 1) return false;
    size_t rid_len = k->mv_size - 13;
    if (p[0] == RV_FORMAT_2) {
        st_key_version_read(key, k->mv_size, &rv->valid_from, &rv->version);
        if (!record_decode_v2(pk, p + 1, p + v->mv_size, rv)) return false;
    } else if (!record_decode_v1(v, rv)) {
        return false;
    }
    memcpy(rv->record_id, key, rid_len);
    rv->record_id[rid_len] = 0;
    rv->record_id_len = (uint32_t)rid_len;
    rv->valid_to = -1;
    return true;
}

/* ---- patient versions ----
 * PV_FORMAT_4 (written since issue 17's bytes-per-record work): varint version, zigzag valid_from, varint
 * + cause record id, varint + source, varint n fields, varint n origins, then per origin (a record version
 * the fields' values come from): varint base position, zigzag ts, zigzag vf, a flags byte (1: sealed);
 * then per field: varint + key, varint origin, varint delta, varint len, be64 hash. A field's position is
 * its origin's base + delta, its ts and vf its origin's, and its off (seal.h) the delta when the origin is
 * sealed, else 0: the fields of one record version share one origin, so a field costs ~13 bytes + its key
 * where format 3 spent 42. A version whose fields do not fit that shape (a sealed field whose offset is
 * larger than its position) is written in format 3.
 * PV_FORMAT_5 (written since issue 17's item 2, short values inline) is format 4 with, per field, the varint
 * origin * 2 + 1 when the field's value takes the place of its hash (len bytes, the raw JSON text as stored in
 * its record; the hash is the value's XXH3-64, computed when read), origin * 2 when the hash is there and the
 * value only in its record: the encoder inlines a value it holds (state_field.value, whose hash is that of
 * its bytes) of at most ST_PV_INLINE_MAX bytes, so that a read of the patient's short fields touches no record
 * body. An inline value costs its length where its hash cost 8 bytes. The version's AES-GCM tag covers it (a
 * patient without a data key, bulk_load's, keeps it as LMDB keeps any value). Format 4 reads as format 5
 * without values.
 * Older formats, still read: PV_FORMAT_2, be32 version, be64 valid_from, be16 + cause record id, be16 +
 * source, be32 n, then per field: be16 + key, be64 pos, be32 len, be64 hash, be64 ts, be64 vf. Entries
 * written before the event-time order was kept have no format byte (they start with the version's high
 * byte, 0) and no ts/vf per field: they read as INT64_MIN, older than any record. PV_FORMAT_3 adds be32
 * off per field after vf: the value's offset in its record when the record is sealed under the patient's
 * data key (seal.h; 0: a plain body), written when any field is sealed. */
#define PV_FORMAT_2 0xF2
#define PV_FORMAT_3 0xF3
#define PV_FORMAT_4 0xF4
#define PV_FORMAT_5 0xF6 /* not 0xF5: versions.c's PV_SEALED marks a sealed version's first byte */
#define PV_ORIGIN_SEALED 1

typedef struct {
    uint64_t base;
    int64_t ts, vf;
    bool sealed;
} pv_origin;

/* A field on its way to its origin: sorted by (sealed, ts, vf, base), a plain group's first is its
 * smallest position. */
typedef struct {
    pv_origin o;
    uint32_t field;
} pv_slot;

static int pv_slot_cmp(const void *a, const void *b)
{
    const pv_origin *x = &((const pv_slot *)a)->o, *y = &((const pv_slot *)b)->o;
    if (x->sealed != y->sealed) return x->sealed ? 1 : -1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->vf != y->vf) return x->vf < y->vf ? -1 : 1;
    return x->base < y->base ? -1 : x->base > y->base;
}

void st_patient_encode_v3(buf *b, const patient_version *pv)
{
    b->len = 0;
    bool sealed = false;
    for (uint32_t i = 0; i < pv->nfields && !sealed; i++)
        sealed = pv->fields[i].off != 0;
    buf_putc(b, (char)(sealed ? PV_FORMAT_3 : PV_FORMAT_2));
    buf_put_be32(b, pv->version);
    buf_put_be64(b, (uint64_t)pv->valid_from);
    buf_put_be16(b, (uint16_t)pv->cause_record_len);
    buf_put(b, pv->cause_record, pv->cause_record_len);
    buf_put_be16(b, (uint16_t)pv->source_len);
    buf_put(b, pv->source, pv->source_len);
    buf_put_be32(b, pv->nfields);
    for (uint32_t i = 0; i < pv->nfields; i++) {
        const state_field *f = &pv->fields[i];
        buf_put_be16(b, (uint16_t)f->key_len);
        buf_put(b, f->key, f->key_len);
        buf_put_be64(b, f->pos);
        buf_put_be32(b, f->len);
        buf_put_be64(b, f->hash);
        buf_put_be64(b, (uint64_t)f->ts);
        buf_put_be64(b, (uint64_t)f->vf);
        if (sealed) buf_put_be32(b, f->off);
    }
}

void st_patient_encode(buf *b, const patient_version *pv)
{
    b->len = 0;
    uint32_t n = pv->nfields, norigins = 0;
    for (uint32_t i = 0; i < n; i++)
        if (pv->fields[i].off > pv->fields[i].pos) {
            st_patient_encode_v3(b, pv);
            return;
        }
    /* origins: a sealed field's is its record's (pos - off); plain fields of one ts and vf share the
     * smallest of their positions. Sorted, so that many fields cost O(n log n), never O(n^2). */
    pv_slot *sl = ms_malloc(sizeof *sl * (n ? n : 1));
    pv_origin *o = ms_malloc(sizeof *o * (n ? n : 1));
    uint32_t *of = ms_malloc(sizeof *of * (n ? n : 1));
    for (uint32_t i = 0; i < n; i++) {
        const state_field *f = &pv->fields[i];
        sl[i] = (pv_slot){{f->off ? f->pos - f->off : f->pos, f->ts, f->vf, f->off != 0}, i};
    }
    qsort(sl, n, sizeof *sl, pv_slot_cmp);
    for (uint32_t i = 0; i < n; i++) {
        const pv_origin *c = &sl[i].o, *last = norigins ? &o[norigins - 1] : NULL;
        bool same = last && last->sealed == c->sealed && last->ts == c->ts && last->vf == c->vf &&
                    (!c->sealed || last->base == c->base);
        if (!same) o[norigins++] = *c;
        of[sl[i].field] = norigins - 1;
    }
    buf_putc(b, (char)PV_FORMAT_5);
    buf_put_varint(b, pv->version);
    buf_put_zigzag(b, pv->valid_from);
    buf_put_varint(b, pv->cause_record_len);
    buf_put(b, pv->cause_record, pv->cause_record_len);
    buf_put_varint(b, pv->source_len);
    buf_put(b, pv->source, pv->source_len);
    buf_put_varint(b, n);
    buf_put_varint(b, norigins);
    for (uint32_t i = 0; i < norigins; i++) {
        buf_put_varint(b, o[i].base);
        buf_put_zigzag(b, o[i].ts);
        buf_put_zigzag(b, o[i].vf);
        buf_putc(b, (char)(o[i].sealed ? PV_ORIGIN_SEALED : 0));
    }
    for (uint32_t i = 0; i < n; i++) {
        const state_field *f = &pv->fields[i];
        bool in = f->value && f->len <= ST_PV_INLINE_MAX;
        buf_put_varint(b, f->key_len);
        buf_put(b, f->key, f->key_len);
        buf_put_varint(b, (uint64_t)of[i] * 2 + in);
        buf_put_varint(b, f->pos - o[of[i]].base);
        buf_put_varint(b, f->len);
        if (in)
            buf_put(b, f->value, f->len);
        else
            buf_put_be64(b, f->hash);
    }
    free(sl);
    free(o);
    free(of);
}

/* A varint no larger than max, into *v. */
static bool get_uint(const unsigned char **p, const unsigned char *end, uint64_t max, uint64_t *v)
{
    return ms_get_varint(p, end, v) && *v <= max;
}

/* Format 4 or 5 (values: some fields' values inline) after its format byte (p .. end), into pv (its fields
 * allocated as st_patient_decode says). */
static bool patient_decode_v4(const unsigned char *p, const unsigned char *end, bool values, const patient_ref *who,
                              patient_version *pv, arena *mem)
{
    uint64_t version, len, n, norigins;
    if (!get_uint(&p, end, UINT32_MAX, &version) || !ms_get_zigzag(&p, end, &pv->valid_from)) return false;
    pv->version = (uint32_t)version;
    if (!get_uint(&p, end, UINT16_MAX, &len) || (uint64_t)(end - p) < len) return false;
    pv->cause_record = (const char *)p;
    pv->cause_record_len = (uint32_t)len;
    p += len;
    if (!get_uint(&p, end, UINT16_MAX, &len) || (uint64_t)(end - p) < len) return false;
    pv->source = (const char *)p;
    pv->source_len = (uint32_t)len;
    p += len;
    /* every origin takes at least 4 bytes and every field at least 11 (4 with an empty value inline): counts
     * the bytes cannot hold are refused before anything is allocated for them */
    if (!get_uint(&p, end, PATIENT_STATE_MAX_FIELDS, &n) || !get_uint(&p, end, n, &norigins) ||
        (uint64_t)(end - p) < norigins * 4 + n * (values ? 4 : 11))
        return false;
    pv_origin *o = ms_malloc(sizeof *o * (norigins ? norigins : 1));
    bool ok = true;
    for (uint64_t i = 0; ok && i < norigins; i++) {
        ok = ms_get_varint(&p, end, &o[i].base) && ms_get_zigzag(&p, end, &o[i].ts) &&
             ms_get_zigzag(&p, end, &o[i].vf) && p < end && (*p == 0 || *p == PV_ORIGIN_SEALED);
        if (ok) o[i].sealed = *p++ == PV_ORIGIN_SEALED;
    }
    pv->nfields = (uint32_t)n;
    pv->fields =
        mem ? arena_alloc(mem, sizeof(state_field) * (n ? n : 1)) : ms_malloc(sizeof(state_field) * (n ? n : 1));
    for (uint64_t i = 0; ok && i < n; i++) {
        state_field *f = &pv->fields[i];
        uint64_t klen, origin, delta, vlen;
        ok = get_uint(&p, end, UINT16_MAX, &klen) && (uint64_t)(end - p) >= klen;
        if (!ok) break;
        f->key = (const char *)p;
        f->key_len = (uint32_t)klen;
        p += klen;
        ok = ms_get_varint(&p, end, &origin);
        bool in = values && (origin & 1); /* format 5: origin * 2 + inline */
        if (values) origin >>= 1;
        ok = ok && origin < norigins && ms_get_varint(&p, end, &delta) && get_uint(&p, end, UINT32_MAX, &vlen) &&
             (in ? vlen <= ST_PV_INLINE_MAX && (uint64_t)(end - p) >= vlen : end - p >= 8);
        if (!ok || (o[origin].sealed && (delta == 0 || delta > UINT32_MAX)) || delta > UINT64_MAX - o[origin].base) {
            ok = false;
            break;
        }
        f->pos = o[origin].base + delta;
        f->len = (uint32_t)vlen;
        f->value = in ? (const char *)p : NULL;
        f->hash = in ? XXH3_64bits(p, vlen) : ms_get_be64(p);
        p += in ? vlen : 8;
        f->ts = o[origin].ts;
        f->vf = o[origin].vf;
        f->off = o[origin].sealed ? (uint32_t)delta : 0;
        f->sealer = f->off ? who->number + 1 : 0;
    }
    free(o);
    if (ok && p == end) return true;
    if (!mem) free(pv->fields);
    pv->fields = NULL;
    pv->nfields = 0;
    return false;
}

bool st_patient_decode(const MDB_val *v, const patient_ref *who, patient_version *pv, arena *mem)
{
    const unsigned char *p = v->mv_data, *end = p + v->mv_size;
    if (mem) {
        unsigned char *copy = arena_alloc(mem, v->mv_size);
        memcpy(copy, p, v->mv_size);
        p = copy;
        end = copy + v->mv_size;
    }
    memset(pv, 0, sizeof *pv);
    pv->pid = who->id;
    pv->number = who->number;
    pv->valid_to = -1;
    if (end > p && (*p == PV_FORMAT_4 || *p == PV_FORMAT_5))
        return patient_decode_v4(p + 1, end, *p == PV_FORMAT_5, who, pv, mem);
    bool v3 = end > p && *p == PV_FORMAT_3, v2 = v3 || (end > p && *p == PV_FORMAT_2);
    if (v2) p++;
    size_t per_field = v3 ? 40u : v2 ? 36u : 20u; /* after the key */
    if (end - p < 14) return false;
    pv->version = ms_get_be32(p);
    pv->valid_from = (int64_t)ms_get_be64(p + 4);
    p += 12;
    pv->cause_record_len = ms_get_be16(p);
    p += 2;
    if ((size_t)(end - p) < pv->cause_record_len + 2u) return false;
    pv->cause_record = (const char *)p;
    p += pv->cause_record_len;
    pv->source_len = ms_get_be16(p);
    p += 2;
    if ((size_t)(end - p) < pv->source_len + 4u) return false;
    pv->source = (const char *)p;
    p += pv->source_len;
    pv->nfields = ms_get_be32(p);
    p += 4;
    if (pv->nfields > PATIENT_STATE_MAX_FIELDS) return false;
    pv->fields = mem ? arena_alloc(mem, sizeof(state_field) * (pv->nfields ? pv->nfields : 1))
                     : ms_malloc(sizeof(state_field) * (pv->nfields ? pv->nfields : 1));
    for (uint32_t i = 0; i < pv->nfields; i++) {
        state_field *f = &pv->fields[i];
        if (end - p < 2) goto bad;
        f->key_len = ms_get_be16(p);
        p += 2;
        if ((size_t)(end - p) < f->key_len + per_field) goto bad;
        f->key = (const char *)p;
        p += f->key_len;
        f->pos = ms_get_be64(p);
        f->len = ms_get_be32(p + 8);
        f->hash = ms_get_be64(p + 12);
        f->ts = v2 ? (int64_t)ms_get_be64(p + 20) : INT64_MIN;
        f->vf = v2 ? (int64_t)ms_get_be64(p + 28) : INT64_MIN;
        f->off = v3 ? ms_get_be32(p + 36) : 0;
        f->sealer = f->off ? who->number + 1 : 0;
        f->value = NULL;
        p += per_field;
    }
    if (p != end) goto bad;
    return true;
bad:
    if (!mem) free(pv->fields);
    pv->fields = NULL;
    pv->nfields = 0;
    return false;
}

/* ---- identities: patient number -> patient id (16 bytes) + identity key ---- */

void st_ident_encode_plain(buf *b, const patient_id *pid, const char *key, size_t len)
{
    b->len = 0;
    buf_put(b, pid->b, 16);
    buf_put(b, key, len);
}

bool st_ident_decode(const MDB_val *v, ident_entry *out)
{
    const unsigned char *p = v->mv_data;
    memset(out, 0, sizeof *out);
    if (v->mv_size < 16 + 12) return false;
    memcpy(out->pid.b, p, 16);
    if (p[16] != IDENT_FORMAT_2) {
        out->legacy = true;
        out->key = (const char *)p + 16;
        out->key_len = v->mv_size - 16;
        return true;
    }
    if (v->mv_size < 16 + 2 + 32 + 8) return false;
    out->mac = p + 18;
    if (p[17] & IDENT_ERASED) {
        if (v->mv_size != 66) return false;
        out->erased = true;
        out->erased_at = (int64_t)ms_get_be64(p + 50);
        out->erased_pos = ms_get_be64(p + 58);
        return true;
    }
    if (v->mv_size < 50 + 12 + 16 + 12) return false;
    out->sealed = p + 50;
    out->key_len = v->mv_size - 50 - 12 - 16;
    return true;
}

/* ---- public record copies: pid (16), year (be16), type length (1), type, public fields (JSON) ---- */

void st_public_record_encode(buf *b, const record_version *rv, int year, const char *fields, size_t len)
{
    b->len = 0;
    buf_put(b, rv->pid.b, 16);
    buf_put_be16(b, (uint16_t)year);
    buf_putc(b, (char)rv->type_len);
    buf_put(b, rv->type, rv->type_len);
    if (fields) buf_put(b, fields, len); /* none: a tombstone's copy */
}

bool st_public_record_decode(const MDB_val *v, public_record *pr)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < 19 || p[18] > sizeof pr->type - 1 || v->mv_size < 19u + p[18]) return false;
    memcpy(pr->pid.b, p, 16);
    pr->year = ms_get_be16(p + 16);
    size_t tl = p[18];
    memcpy(pr->type, p + 19, tl);
    pr->type[tl] = 0;
    pr->fields = (const char *)p + 19 + tl;
    pr->fields_len = v->mv_size - 19 - tl;
    pr->deleted = pr->fields_len == 0; /* a live copy is at least "{}" */
    return true;
}

/* ---- users: name -> ACCOUNT_FORMAT flags be64(created) be64(changed) role NUL hash ---- */

#define ACCOUNT_FORMAT 0x01 /* first byte of an account entry; older entries begin with the role */
#define ACCOUNT_DISABLED 0x01
#define ACCOUNT_HEAD 18 /* format, flags, be64 created, be64 changed */

void st_account_encode(buf *b, const store_account *a)
{
    size_t rl = strnlen(a->role, STORE_ROLE_MAX), hl = strnlen(a->hash, STORE_HASH_MAX);
    unsigned char head[ACCOUNT_HEAD] = {ACCOUNT_FORMAT, a->disabled ? ACCOUNT_DISABLED : 0};
    ms_set_be64(head + 2, (uint64_t)a->created);
    ms_set_be64(head + 10, (uint64_t)a->changed);
    b->len = 0;
    buf_put(b, head, sizeof head);
    buf_put(b, a->role, rl);
    buf_putc(b, 0);
    buf_put(b, a->hash, hl);
}

bool st_account_decode(const MDB_val *k, const MDB_val *v, store_account *a)
{
    const char *p = v->mv_data;
    size_t n = v->mv_size;
    if (k->mv_size == 0 || k->mv_size >= STORE_USER_MAX) return false;
    memcpy(a->name, k->mv_data, k->mv_size);
    a->name[k->mv_size] = 0;
    a->disabled = false;
    a->created = a->changed = 0;
    if (n >= ACCOUNT_HEAD && (unsigned char)p[0] == ACCOUNT_FORMAT) {
        a->disabled = (p[1] & ACCOUNT_DISABLED) != 0;
        a->created = (int64_t)ms_get_be64(p + 2);
        a->changed = (int64_t)ms_get_be64(p + 10);
        p += ACCOUNT_HEAD;
        n -= ACCOUNT_HEAD;
    }
    const char *nul = memchr(p, 0, n);
    size_t rl = nul ? (size_t)(nul - p) : 0, hl = nul ? n - rl - 1 : 0;
    if (!nul || rl == 0 || rl >= STORE_ROLE_MAX || hl >= STORE_HASH_MAX || memchr(nul + 1, 0, hl)) return false;
    memcpy(a->role, p, rl);
    a->role[rl] = 0;
    memcpy(a->hash, nul + 1, hl);
    a->hash[hl] = 0;
    return true;
}

/* ---- tokens: SHA-256 -> be64(expires) role NUL user ---- */

void st_token_encode(buf *b, int64_t expires, const char *user, const char *role)
{
    b->len = 0;
    buf_put_be64(b, (uint64_t)expires);
    buf_puts(b, role);
    buf_putc(b, 0);
    buf_puts(b, user);
}

bool st_token_decode(const MDB_val *v, int64_t *expires, char user[STORE_USER_MAX], char role[STORE_ROLE_MAX])
{
    const char *p = v->mv_data, *end = p + v->mv_size;
    const char *nul = v->mv_size > 8 ? memchr(p + 8, 0, v->mv_size - 8) : NULL;
    if (!nul || (size_t)(nul - p - 8) >= STORE_ROLE_MAX || (size_t)(end - nul - 1) >= STORE_USER_MAX) return false;
    *expires = (int64_t)ms_get_be64(p);
    memcpy(role, p + 8, (size_t)(nul - p - 8));
    role[nul - p - 8] = 0;
    memcpy(user, nul + 1, (size_t)(end - nul - 1));
    user[end - nul - 1] = 0;
    return true;
}

bool st_token_user(const MDB_val *v, int64_t *expires, const char **user, size_t *user_len)
{
    const char *p = v->mv_data;
    const char *nul = v->mv_size > 8 ? memchr(p + 8, 0, v->mv_size - 8) : NULL;
    if (!nul) return false;
    *expires = (int64_t)ms_get_be64(p);
    *user = nul + 1;
    *user_len = v->mv_size - (size_t)(nul + 1 - p);
    return true;
}

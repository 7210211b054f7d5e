/*
 * bodies.c - record bodies in the segment log: appending a request body (any thread, before the batch is
 * submitted), and reading back what versions reference: a record's body, and the values of a patient's
 * state fields (positions into bodies), each checked against the hash stored with its reference.
 *
 * DESIGN: a patient's fields usually come from a few record bodies, so store_field_values sorts the
 * references by position and reads runs of nearby values with one read (gaps up to COALESCE_GAP, at most
 * COALESCE_MAX at once) instead of one read per field; a sealed value's run starts at its record's IV, so
 * the IV and the cipher block's head come with it. The segment log keeps recent bytes in memory
 * (segment_log.h), so reads of what was just written do not wait for the disk.
 *
 * Contract: store.h ("Bodies"). An append becomes durable with the commit that references it (README.md,
 * durability order, steps 1-3). Must never: return bytes that failed their hash (MS_ECORRUPT), append to
 * a read-only store.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"
#include "store/seal.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <xxh_x86dispatch.h> /* field values' checksums with the CPU's widest vectors (record_scan.c) */

ms_code store_append_body(store *s, const void *data, size_t len, uint64_t *pos, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    return seglog_append(s->log, data, len, pos, e);
}

struct store_sealing {
    seglog_fill fill;
    unsigned char prefix[8]; /* of the records' IVs */
};

ms_code store_seal_begin(store *s, seal_item *items, uint32_t n, store_sealing **out, uint64_t *pos, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    size_t total = 0;
    ms_code rc = MS_OK;
    for (uint32_t i = 0; i < n && rc == MS_OK; i++) {
        seal_item *it = &items[i];
        if (!it->body) continue; /* (a rejected line: nothing stored) */
        store_identity_mac(s, it->identity_key, it->identity_key_len, it->mac);
        rc = st_data_key_of(s, it->mac, it->key, e);
        it->offset = total + SEAL_IV;
        total += it->len + SEAL_OVERHEAD;
    }
    if (rc != MS_OK) return rc;
    store_sealing *sg = ms_malloc(sizeof *sg);
    if (RAND_bytes(sg->prefix, 8) != 1)
        rc = ms_fail(e, MS_EIO, "store: random number generator failed");
    else
        rc = seglog_fill_begin(s->log, total, &sg->fill, e);
    if (rc != MS_OK) {
        free(sg);
        return rc;
    }
    *pos = sg->fill.pos;
    *out = sg;
    return MS_OK;
}

ms_code store_seal_end(store *s, store_sealing *sg, seal_item *items, uint32_t n, ms_err *e)
{
    (void)s;
    seglog_fill *f = &sg->fill;
    ms_code rc = MS_OK;
    size_t sealed = 0; /* the end of what is sealed; each record goes where store_seal_begin placed it */
    for (uint32_t i = 0; i < n; i++) {
        const seal_item *it = &items[i];
        unsigned char iv[SEAL_IV];
        if (!it->body) continue;
        seal_iv(sg->prefix, i, iv);
        size_t at = it->offset - SEAL_IV;
        if (!seal_record(it->key, iv, it->body, it->len, f->dst + at)) {
            rc = ms_fail(e, MS_EIO, "store: sealing a record failed");
            break;
        }
        sealed = at + it->len + SEAL_OVERHEAD;
        seglog_fill_ready(f, sealed); /* the disk writes, and the writer reads, what is sealed while the rest is */
    }
    if (rc == MS_OK) memset(f->dst + sealed, 0, f->len - sealed);
    ms_code wrc = seglog_fill_end(f, rc == MS_OK, e);
    free(sg);
    return rc == MS_OK ? wrc : rc;
}

ms_code store_append_sealed(store *s, seal_item *items, uint32_t n, uint64_t *pos, ms_err *e)
{
    store_sealing *sg;
    uint64_t at;
    ms_code rc = store_seal_begin(s, items, n, &sg, &at, e);
    if (rc == MS_OK && (rc = store_seal_end(s, sg, items, n, e)) == MS_OK) *pos = at;
    return rc;
}

/* The data key that sealed a body: the key of patient number sealer - 1 (erased: MS_ENOTFOUND). */
static ms_code sealer_key(store *s, uint64_t sealer, unsigned char key[SEAL_KEY], ms_err *e)
{
    bool found;
    ms_code rc = st_key_get(s, sealer - 1, key, &found, e);
    if (rc == MS_OK && !found) rc = ms_fail(e, MS_ENOTFOUND, "store: the patient's data key is gone (erased)");
    return rc;
}

#define COALESCE_GAP ((uint64_t)64 << 10) /* read across gaps up to this size rather than seek again */
#define COALESCE_MAX ((uint64_t)4 << 20)  /* but never read more than this at once */

/* Where a field's read starts: its value, and for a sealed value the head of its 16-byte block (the cipher
 * runs from there) and, when the value lies within COALESCE_GAP of its record's start, the record's IV
 * before that start: then one read gives a sealed value everything it needs, not three reads (value, IV,
 * head), two of them at other places of the log (a disk read each when the body is older than the cache). */
static uint64_t read_from(const state_field *f)
{
    if (!f->sealer || !f->len) return f->pos;
    if (f->off + SEAL_IV <= COALESCE_GAP) return f->pos - f->off - SEAL_IV;
    return f->pos - f->off % 16;
}

static int read_order_cmp(const void *a, const void *b)
{
    uint64_t x = read_from(*(const state_field *const *)a), y = read_from(*(const state_field *const *)b);
    return x < y ? -1 : x > y;
}

/* Does this field's value need a read of the log? Not when the patient version holds it inline (codec.c). */
static bool read_needed(const state_field *f) { return !f->value && f->len; }

ms_code store_field_values(store *s, const state_field *fields, uint32_t n, const char **vals, buf *scratch, ms_err *e)
{
    const state_field **order = ms_malloc(sizeof *order * (n ? n : 1));
    size_t *offset = ms_malloc(sizeof *offset * (n ? n : 1)); /* of each value's bytes in scratch */
    uint32_t nread = 0;
    for (uint32_t i = 0; i < n; i++)
        if (read_needed(&fields[i])) order[nread++] = &fields[i];
    qsort(order, nread, sizeof *order, read_order_cmp);
    ms_code rc = MS_OK;
    scratch->len = 0;
    for (uint32_t i = 0; i < nread && rc == MS_OK;) {
        /* a run of fields close together: one read from the first start to the last end */
        uint64_t start = read_from(order[i]), end = order[i]->pos + order[i]->len;
        uint32_t j = i + 1;
        while (j < nread && read_from(order[j]) <= end + COALESCE_GAP &&
               order[j]->pos + order[j]->len - start <= COALESCE_MAX) {
            if (order[j]->pos + order[j]->len > end) end = order[j]->pos + order[j]->len;
            j++;
        }
        size_t at = scratch->len;
        buf_reserve(scratch, (size_t)(end - start));
        rc = seglog_read(s->log, start, scratch->data + at, (size_t)(end - start), e);
        if (rc != MS_OK) break;
        scratch->len += (size_t)(end - start);
        for (uint32_t k = i; k < j; k++)
            offset[order[k] - fields] = at + (size_t)(order[k]->pos - start);
        i = j;
    }
    /* sealed values: opened in place (CTR at the value's offset: seal.h), with their record's IV. The block
     * head before a value only runs the counter (its bytes may be another value's, opened already). */
    unsigned char key[SEAL_KEY];
    uint64_t have_key = 0; /* the sealer whose key is in key (a patient's fields share one) */
    for (uint32_t i = 0; i < n && rc == MS_OK; i++) {
        const state_field *f = &fields[i];
        if (!f->sealer || !read_needed(f)) continue;
        if (f->sealer != have_key && (rc = sealer_key(s, f->sealer, key, e)) != MS_OK) break;
        have_key = f->sealer;
        unsigned char iv[SEAL_IV], *value = (unsigned char *)scratch->data + offset[i];
        if (f->off + SEAL_IV <= COALESCE_GAP)
            memcpy(iv, value - f->off - SEAL_IV, SEAL_IV); /* read with the value (read_from) */
        else if ((rc = seglog_read(s->log, f->pos - f->off - SEAL_IV, iv, SEAL_IV, e)) != MS_OK)
            break;
        if (!seal_open_range(key, iv, f->off, value - f->off % 16, f->len, value))
            rc = ms_fail(e, MS_EIO, "store: opening a sealed value failed");
    }
    OPENSSL_cleanse(key, sizeof key);
    for (uint32_t i = 0; i < n && rc == MS_OK; i++) {
        vals[i] = fields[i].value ? fields[i].value : read_needed(&fields[i]) ? scratch->data + offset[i] : "";
        if (XXH3_64bits(vals[i], fields[i].len) != fields[i].hash)
            rc = ms_fail(e, MS_ECORRUPT, "store: a stored field value failed its checksum");
    }
    free(order);
    free(offset);
    return rc;
}

void store_field_prefetch(store *s, const state_field *fields, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (read_needed(&fields[i])) seglog_prefetch(s->log, fields[i].pos, fields[i].len);
}

ms_code store_field_value(store *s, const state_field *f, buf *out, ms_err *e)
{
    const char *v;
    buf scratch = {0};
    ms_code rc = store_field_values(s, f, 1, &v, &scratch, e);
    if (rc == MS_OK) buf_put(out, v, f->len);
    buf_free(&scratch);
    return rc;
}

void store_record_prefetch(store *s, const record_version *rv)
{
    if (!rv->deleted && rv->body_len && rv->sealed)
        seglog_prefetch(s->log, rv->body_pos - SEAL_IV, rv->body_len + SEAL_OVERHEAD);
    else if (!rv->deleted && rv->body_len)
        seglog_prefetch(s->log, rv->body_pos, rv->body_len);
}

ms_code store_record_body(store *s, const record_version *rv, buf *out, ms_err *e)
{
    buf_reserve(out, rv->body_len);
    ms_code rc;
    if (rv->sealed) { /* [IV][ciphertext][tag] around body_pos (seal.h) */
        unsigned char key[SEAL_KEY], *in = ms_malloc(rv->body_len + SEAL_OVERHEAD);
        rc = sealer_key(s, rv->patient_number + 1, key, e);
        if (rc == MS_OK) rc = seglog_read(s->log, rv->body_pos - SEAL_IV, in, rv->body_len + SEAL_OVERHEAD, e);
        if (rc == MS_OK && !seal_open_record(key, in, rv->body_len, (unsigned char *)out->data + out->len))
            rc = ms_fail(e, MS_ECORRUPT, "store: a sealed record body failed its authentication tag");
        OPENSSL_cleanse(key, sizeof key);
        free(in);
    } else {
        rc = seglog_read(s->log, rv->body_pos, out->data + out->len, rv->body_len, e);
    }
    if (rc != MS_OK) return rc;
    if (!rv->sealed && XXH3_64bits(out->data + out->len, rv->body_len) != rv->body_hash)
        return ms_fail(e, MS_ECORRUPT, "store: a stored record body failed its checksum");
    out->len += rv->body_len;
    out->data[out->len] = 0;
    return MS_OK;
}

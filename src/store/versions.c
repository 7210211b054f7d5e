/*
 * versions.c - record versions, patient versions and their public copies: writing them (the writer's
 * transaction), reading them as of an instant, a patient's history, the three indexes reads walk (a
 * patient's records by event time, the public records by type and year, a parent's children by event
 * time; the public records' listing is public_index.c), the live records a patient's state is merged
 * from, and the exact versions one commit wrote and the version each replaced (for the sinks and the
 * counters).
 *
 * DESIGN: every versioned key ends in ~valid_from ~version (codec.c), so "as of T" seeks to (key, ~T)
 * and takes the first entry with the same prefix: the newest version whose valid_from <= T; valid_to is
 * the next newer entry's valid_from, read with one MDB_PREV, so an old version is never rewritten. A
 * record version is written with its patient's records-index entry, its public copy, its type's
 * public-index entry and (with a parent) its parent's children-index entry in the same transaction, and named in the
 * commit log (commit_log.c); a patient version is named there too, except a restatement (same values, references
 * moved), which nothing downstream sees. Public copies are keyed by schema version (README.md, "Schema
 * versions"; schemas.c): reads take the version in force of their read transaction, store_record_put writes
 * under the writer transaction's version in force, and the writer names the target's explicitly.
 *
 * Contract: store.h ("Versions"). Must never: rewrite an older version, write a version the encoding
 * cannot read back (store_patient_put refuses it), return a decoded entry without its length checks.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"
#include "store/seal.h"

#include <openssl/crypto.h>
#include <string.h>

/* ---- records ---- */

int st_seek_first_version(MDB_cursor *c, const buf *prefix_key, size_t prefix_len, MDB_val *k, MDB_val *v)
{
    *k = st_val(prefix_key->data, prefix_key->len);
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc) return rc;
    if (k->mv_size < prefix_len || memcmp(k->mv_data, prefix_key->data, prefix_len) != 0) return MDB_NOTFOUND;
    return 0;
}

ms_code st_record_at(store *s, MDB_txn *txn, buf *kb, const char *rid, size_t len, int64_t as_of, record_version *rv,
                     bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len) || as_of < 0) return MS_OK; /* nothing before 1970 */
    st_key_record(kb, rid, len, as_of, UINT32_MAX);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->dbi[DB_RECORD], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    rc = st_seek_first_version(c, kb, len + 1, &k, &v);
    if (rc == 0 && k.mv_size == len + 13) {
        if (!st_record_decode(&s->pid_key, &k, &v, rv)) {
            mdb_cursor_close(c);
            return ms_fail(e, MS_ECORRUPT, "store: bad record entry");
        }
        *found = true;
        /* valid_to: the next newer version's valid_from (its key's) */
        MDB_val pk, pvv;
        uint32_t newer;
        if (mdb_cursor_get(c, &pk, &pvv, MDB_PREV) == 0 && pk.mv_size == len + 13 &&
            memcmp(pk.mv_data, rid, len) == 0 && ((char *)pk.mv_data)[len] == 0)
            st_key_version_read(pk.mv_data, pk.mv_size, &rv->valid_to, &newer);
        rc = 0;
    } else if (rc == MDB_NOTFOUND || rc == 0) {
        rc = 0;
    }
    mdb_cursor_close(c);
    return rc ? st_mdb_fail(e, rc, "record lookup") : MS_OK;
}

ms_code store_record_latest(store_write *w, const char *rid, size_t len, record_version *rv, bool *found, ms_err *e)
{
    return st_record_at(w->s, w->txn, &w->key, rid, len, INT64_MAX, rv, found, e);
}

ms_code store_record_with_content(store_write *w, const char *rid, size_t len, const unsigned char content_hash[16],
                                  record_version *rv, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len)) return MS_OK;
    st_key_record(&w->key, rid, len, INT64_MAX, UINT32_MAX);
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, w->s->dbi[DB_RECORD], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    ms_code out = MS_OK;
    /* the record's versions, newest first: keys record_id NUL ~valid_from ~version */
    for (rc = st_seek_first_version(c, &w->key, len + 1, &k, &v); rc == 0 && !*found;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != len + 13 || memcmp(k.mv_data, rid, len) != 0 || ((char *)k.mv_data)[len] != 0) break;
        if (!st_record_decode(&w->s->pid_key, &k, &v, rv)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad record entry");
            break;
        }
        *found = !rv->deleted && memcmp(rv->content_hash, content_hash, 16) == 0;
    }
    mdb_cursor_close(c);
    if (out == MS_OK && rc && rc != MDB_NOTFOUND) out = st_mdb_fail(e, rc, "record versions");
    return out;
}

ms_code store_record_put(store_write *w, const record_version *rv, int year, const char *public_fields, size_t pf_len,
                         ms_err *e)
{
    store *s = w->s;
    buf v = {0};
    int rc;
    st_record_encode(&v, rv);
    st_key_record(&w->key, rv->record_id, rv->record_id_len, rv->valid_from, rv->version);
    MDB_val k = st_val(w->key.data, w->key.len), mv = st_val(v.data, v.len);
    rc = mdb_put(w->txn, s->dbi[DB_RECORD], &k, &mv, 0);
    if (rc) goto out;
    /* the patient's records index: an entry of the patient log */
    plog_entry ri = {
        .number = rv->patient_number, .tag = 'r', .ts = rv->ts_us, .data = rv->record_id, .len = rv->record_id_len};
    rc = st_plog_append(w, &ri);
    if (rc) goto out;
    /* the public copy */
    st_public_record_encode(&v, rv, year, public_fields, pf_len);
    st_key_public_record(&w->key, st_write_sv(w)->in_force, rv->record_id, rv->record_id_len, rv->valid_from,
                         rv->version);
    k = st_val(w->key.data, w->key.len);
    mv = st_val(v.data, v.len);
    rc = mdb_put(w->txn, s->dbi[DB_PUBLIC], &k, &mv, 0);
    if (rc) goto out;
    /* its type's public-index entry (a listing of all types merges the types' ranges: store_public_index) */
    w->key.len = 0;
    buf_putc(&w->key, 'T');
    buf_put(&w->key, rv->type, rv->type_len);
    buf_putc(&w->key, 0);
    buf_put_be16(&w->key, (uint16_t)year);
    buf_put(&w->key, rv->record_id, rv->record_id_len);
    k = st_val(w->key.data, w->key.len);
    mv = st_val("", 0);
    rc = mdb_put(w->txn, s->dbi[DB_PUBLIC], &k, &mv, 0);
    if (rc) goto out;
    /* the children index of its parent (a tombstone needs none: readers check the version) */
    if (rv->parent_id_len && !rv->deleted) {
        w->key.len = 0;
        buf_put(&w->key, rv->parent_id, rv->parent_id_len);
        buf_putc(&w->key, 0);
        buf_put_be64(&w->key, st_ts_key(rv->ts_us));
        buf_put(&w->key, rv->record_id, rv->record_id_len);
        k = st_val(w->key.data, w->key.len);
        mv = st_val("", 0);
        rc = mdb_put(w->txn, s->dbi[DB_CHILDREN], &k, &mv, 0);
        if (rc) goto out;
    }
    st_log_add(w, 'r', rv->record_id, rv->record_id_len, rv->version);
out:
    buf_free(&v);
    return rc ? st_mdb_fail(e, rc, "record insert") : MS_OK;
}

ms_code store_public_record_put(store_write *w, uint32_t sv, const record_version *rv, int year,
                                const char *public_fields, size_t pf_len, ms_err *e)
{
    buf v = {0};
    st_public_record_encode(&v, rv, year, public_fields, pf_len);
    st_key_public_record(&w->key, sv, rv->record_id, rv->record_id_len, rv->valid_from, rv->version);
    MDB_val k = st_val(w->key.data, w->key.len), mv = st_val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_PUBLIC], &k, &mv, 0);
    buf_free(&v);
    return rc ? st_mdb_fail(e, rc, "public record insert") : MS_OK;
}

/* ---- a patient's entries: the patient log's, then the keyed ones of stores from before it ---- */

/* Where a patient's entries are read from: a transaction, the last log entry it holds, the patient's head. */
typedef struct {
    store *s;
    MDB_txn *txn;
    uint64_t end, head, number;
} pat_src;

static pat_src src_w(store_write *w, uint64_t number)
{
    return (pat_src){w->s, w->txn, UINT64_MAX, st_plog_head_w(w, number), number};
}

static pat_src src_r(store_read *r, uint64_t number)
{
    uint64_t end = st_plog_end(r); /* first: a read-only store's heads are brought up to the snapshot */
    return (pat_src){r->s, r->txn, end, st_plog_head(r->s, number), number};
}

typedef struct {
    uint32_t sv;
    st_plog_fn fn;
    void *ctx;
    bool stopped;
    bool any; /* a version passed: vf, version its key */
    int64_t vf;
    uint32_t version;
} entry_filter;

/* Passes the entries on: public copies of the schema version asked for only, and of several entries with
 * one key only the newest. A restatement (store_patient_restate) is a later entry with the key (valid_from,
 * version) of the patient's latest version; a re-projection's target copies are keyed, the log's are not. */
static bool filter_entry(void *ctx, const plog_entry *en)
{
    entry_filter *f = ctx;
    if (en->tag == 'P' && en->sv != f->sv) return true;
    if (en->tag != 'r') {
        if (f->any && en->valid_from == f->vf && en->version == f->version) return true;
        f->any = true, f->vf = en->valid_from, f->version = en->version;
    }
    if (!f->fn(f->ctx, en)) f->stopped = true;
    return !f->stopped;
}

/* Every entry of one kind (tag 'v', 'r', or 'P' under schema version sv) of the patient, newest first: the
 * log's (newer), then the keyed ones a store written before the log holds (README.md, "The patient log");
 * fn returns false to stop. An erasure mark ends the walk. */
static ms_code patient_entries(const pat_src *src, char tag, uint32_t sv, st_plog_fn fn, void *ctx, ms_err *e)
{
    entry_filter f = {.sv = sv, .fn = fn, .ctx = ctx};
    bool erased;
    ms_code out = st_plog_walk(src->s, src->txn, src->end, src->head, tag, filter_entry, &f, &erased, e);
    if (out != MS_OK || f.stopped || erased) return out;
    unsigned char prefix[14];
    size_t pl;
    int db = DB_PATIENT;
    if (tag == 'P') {
        db = DB_PUBLIC;
        pl = st_public_patient_prefix(prefix, sv, src->number);
    } else {
        st_patient_prefix(prefix, src->number, tag);
        pl = 9;
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(src->txn, src->s->dbi[db], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    MDB_val k = st_val(prefix, pl), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < pl || memcmp(k.mv_data, prefix, pl) != 0) break;
        const char *kd = k.mv_data;
        plog_entry en = {.number = src->number, .tag = tag, .sv = sv, .data = v.mv_data, .len = v.mv_size};
        if (tag == 'r') {
            if (k.mv_size < pl + 8) continue;
            en.ts = (int64_t)(ms_get_be64(kd + pl) ^ ST_TS_SIGN);
            en.data = kd + pl + 8;
            en.len = k.mv_size - pl - 8;
        } else {
            if (k.mv_size != pl + 12) continue;
            st_key_version_read(kd, k.mv_size, &en.valid_from, &en.version);
        }
        if (!filter_entry(&f, &en)) break;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, "patient entries") : MS_OK;
}

/* ---- patients ---- */

/* A patient version as stored: PV_SEALED, then seal.h's [IV][ciphertext][tag] of st_patient_encode's bytes
 * under the patient's data key (its references and value hashes are the patient's: a hash of a short value
 * such as a date of birth could be found by trying them all). A patient without a key (preload, a store
 * from before keys) keeps st_patient_encode's bytes. */
#define PV_SEALED 0xF5

static ms_code patient_value(store *s, uint64_t number, const buf *plain, buf *out, ms_err *e)
{
    unsigned char key[SEAL_KEY], iv[SEAL_IV];
    bool found;
    out->len = 0;
    ms_code rc = st_key_get(s, number, key, &found, e);
    if (rc != MS_OK) return rc;
    if (!found) {
        buf_put(out, plain->data, plain->len);
        return MS_OK;
    }
    if (!seal_iv_fresh(iv)) rc = ms_fail(e, MS_EIO, "store: random number generator failed");
    buf_reserve(out, 1 + plain->len + SEAL_OVERHEAD);
    out->data[0] = (char)PV_SEALED;
    if (rc == MS_OK && !seal_record(key, iv, plain->data, plain->len, (unsigned char *)out->data + 1))
        rc = ms_fail(e, MS_EIO, "store: sealing a patient version failed");
    out->len = 1 + plain->len + SEAL_OVERHEAD;
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

/* A stored patient version's st_patient_encode bytes: v itself, or opened into mem when sealed. */
static ms_code patient_plain(store *s, MDB_val *v, const patient_ref *who, arena *mem, ms_err *e)
{
    if (v->mv_size && *(const unsigned char *)v->mv_data == PV_SEALED) {
        unsigned char key[SEAL_KEY];
        bool found;
        if (v->mv_size < 1 + SEAL_OVERHEAD) return ms_fail(e, MS_ECORRUPT, "store: bad patient entry");
        size_t n = v->mv_size - 1 - SEAL_OVERHEAD;
        ms_code rc = st_key_get(s, who->number, key, &found, e);
        if (rc == MS_OK && !found) rc = ms_fail(e, MS_ENOTFOUND, "store: the patient's data key is gone (erased)");
        unsigned char *plain = arena_alloc(mem, n ? n : 1);
        if (rc == MS_OK && !seal_open_record(key, (const unsigned char *)v->mv_data + 1, n, plain))
            rc = ms_fail(e, MS_ECORRUPT, "store: a sealed patient version failed its authentication tag");
        OPENSSL_cleanse(key, sizeof key);
        if (rc != MS_OK) return rc;
        *v = st_val(plain, n);
    }
    return MS_OK;
}

static ms_code patient_decode(MDB_val v, const patient_ref *who, patient_version *pv, arena *mem, ms_err *e)
{
    return st_patient_decode(&v, who, pv, mem) ? MS_OK : ms_fail(e, MS_ECORRUPT, "store: bad patient entry");
}

ms_code st_patient_read(store *s, MDB_val v, const patient_ref *who, patient_version *pv, arena *mem, ms_err *e)
{
    ms_code rc = patient_plain(s, &v, who, mem, e);
    return rc == MS_OK ? patient_decode(v, who, pv, mem, e) : rc;
}

/* What a walk newest first does with a versioned entry ('v' or 'P') when it asks for the newest at `at`
 * (valid_from <= at), or exactly the key (at, version): take it, pass it, or stop (older than the key asked
 * for: that key is not there). */
typedef enum { ENTRY_PASS, ENTRY_TAKE, ENTRY_STOP } entry_verdict;

static entry_verdict versioned_verdict(const plog_entry *en, int64_t at, bool exact, uint32_t version)
{
    if (!exact) return en->valid_from <= at ? ENTRY_TAKE : ENTRY_PASS;
    if (en->valid_from == at && en->version == version) return ENTRY_TAKE;
    if (en->valid_from < at || (en->valid_from == at && en->version < version)) return ENTRY_STOP;
    return ENTRY_PASS;
}

/* The newest version at as_of (valid_from <= as_of), or exactly (valid_from, version) when exact; with the
 * next newer version's valid_from as valid_to (-1: none, or exact). */
typedef struct {
    const pat_src *src;
    const patient_ref *who;
    int64_t as_of;
    bool exact;
    uint32_t version;
    patient_version *pv;
    arena *mem;
    int64_t newer; /* valid_from of the last version passed (-1: none) */
    MDB_val plain; /* the version taken: st_patient_encode's bytes */
    bool found;
    ms_code rc;
    ms_err *e;
} version_at;

static bool take_version(void *ctx, const plog_entry *en)
{
    version_at *a = ctx;
    entry_verdict vd = versioned_verdict(en, a->as_of, a->exact, a->version);
    if (vd == ENTRY_STOP) return false;
    if (vd == ENTRY_PASS) {
        a->newer = en->valid_from;
        return true;
    }
    a->plain = st_val(en->data, en->len);
    a->rc = patient_plain(a->src->s, &a->plain, a->who, a->mem, a->e);
    if (a->rc == MS_OK) a->rc = patient_decode(a->plain, a->who, a->pv, a->mem, a->e);
    a->found = a->rc == MS_OK;
    if (a->found) a->pv->valid_to = a->exact ? -1 : a->newer;
    return false;
}

/* *plain (may be NULL): the version's st_patient_encode bytes (in mem or the transaction's pages). */
static ms_code patient_version_at(const pat_src *src, const patient_ref *who, int64_t as_of, bool exact,
                                  uint32_t version, patient_version *pv, arena *mem, bool *found, MDB_val *plain,
                                  ms_err *e)
{
    version_at a = {src, who, as_of, exact, version, pv, mem, -1, {0}, false, MS_OK, e};
    *found = false;
    ms_code rc = patient_entries(src, 'v', 0, take_version, &a, e);
    if (rc == MS_OK) rc = a.rc;
    *found = rc == MS_OK && a.found;
    if (plain) *plain = a.plain;
    return rc;
}

/* The entry of w->states at offset at (patient_write's layout: be64 number, be32 length, the plaintext):
 * its plaintext, length (*len) and patient number (*number). */
static const char *states_entry(const store_write *w, size_t at, uint64_t *number, uint32_t *len)
{
    const char *p = w->states.data + at;
    *number = ms_get_be64(p);
    *len = ms_get_be32(p + 8);
    return p + 12;
}

/* The state cache (state_cache.h) answers for a patient this transaction has not written to, under the
 * patient's committed head; what the log answers for one goes into it under that head. For a patient whose
 * newest version this transaction wrote (a second record of it in one group commit), the plaintext kept for
 * the cache answers (st_plog_state_get), so that neither walks the log and opens the sealed version again. */
ms_code store_patient_latest(store_write *w, const patient_ref *p, patient_version *pv, arena *mem, bool *found,
                             ms_err *e)
{
    pat_src src = src_w(w, p->number);
    uint64_t committed = st_plog_head(w->s, p->number);
    bool cacheable = w->s->states && committed && src.head == committed;
    const unsigned char *state;
    size_t len, at;
    bool have = false;
    if (cacheable) {
        have = state_cache_get(w->s->states, p->number, committed, mem, &state, &len);
    } else if (st_plog_state_get(w, p->number, &at)) { /* w wrote its newest version: its plaintext is there */
        uint64_t number;
        uint32_t n;
        const char *plain = states_entry(w, at, &number, &n);
        unsigned char *copy = arena_alloc(mem, n ? n : 1); /* w->states grows: pv must not point into it */
        memcpy(copy, plain, n);
        state = copy;
        len = n;
        have = true;
    }
    if (have) {
        ms_code rc = patient_decode(st_val(state, len), p, pv, mem, e);
        pv->valid_to = -1;
        *found = rc == MS_OK;
        return rc;
    }
    MDB_val plain;
    ms_code rc = patient_version_at(&src, p, INT64_MAX, false, 0, pv, mem, found, &plain, e);
    if (rc == MS_OK && *found && cacheable)
        state_cache_put(w->s->states, p->number, committed, plain.mv_data, plain.mv_size);
    return rc;
}

/* A patient w appended to: with no new version (only a record's index entry, a public copy), its cached
 * state holds at the new head; with one, the state put at the new head gets its newest entries too; an
 * erased patient's goes (after the puts: whatever w wrote of it before its erasure goes with it). */
static void state_moved(void *ctx, uint64_t number, uint64_t before, uint64_t after, const uint64_t newest[3],
                        bool version)
{
    store_write *w = ctx;
    if (st_write_erased(w, number))
        state_cache_drop(w->s->states, number);
    else
        state_cache_rehead(w->s->states, number, version ? after : before, after, newest);
}

void st_states_committed(store_write *w)
{
    if (!w->s->states) return;
    for (size_t at = 0; at + 12 <= w->states.len;) { /* in order: a patient's last version wins */
        uint64_t number;
        uint32_t len;
        const char *plain = states_entry(w, at, &number, &len);
        state_cache_put(w->s->states, number, st_plog_head_w(w, number), plain, len);
        at += 12 + len;
    }
    st_plog_each_moved(w, state_moved, w);
}

static ms_code patient_write(store_write *w, const patient_version *pv, bool logged, ms_err *e);

ms_code store_patient_put(store_write *w, const patient_version *pv, ms_err *e)
{
    return patient_write(w, pv, true, e);
}

ms_code store_patient_restate(store_write *w, const patient_version *pv, ms_err *e)
{
    return patient_write(w, pv, false, e);
}

static ms_code patient_write(store_write *w, const patient_version *pv, bool logged, ms_err *e)
{
    /* refuse what the encoding cannot carry, rather than write a version that never reads back */
    if (pv->nfields > PATIENT_STATE_MAX_FIELDS)
        return ms_fail(e, MS_EINVAL, "store: a patient version of %u fields (at most %u)", pv->nfields,
                       PATIENT_STATE_MAX_FIELDS);
    for (uint32_t i = 0; i < pv->nfields; i++)
        if (pv->fields[i].key_len > RECORD_KEY_MAX)
            return ms_fail(e, MS_EINVAL, "store: a field name of %u bytes (at most %d)", pv->fields[i].key_len,
                           RECORD_KEY_MAX);
    buf plain = {0}, v = {0};
    st_patient_encode(&plain, pv);
    ms_code code = patient_value(w->s, pv->number, &plain, &v, e);
    size_t state_at = w->states.len;
    if (code == MS_OK && w->s->states) { /* for the state cache, once this commits */
        buf_put_be64(&w->states, pv->number);
        buf_put_be32(&w->states, (uint32_t)plain.len);
        buf_put(&w->states, plain.data, plain.len);
    }
    buf_free(&plain);
    if (code != MS_OK) {
        buf_free(&v);
        return code;
    }
    plog_entry en = {.number = pv->number,
                     .tag = 'v',
                     .valid_from = pv->valid_from,
                     .version = pv->version,
                     .data = v.data,
                     .len = v.len};
    int rc = st_plog_append(w, &en);
    buf_free(&v);
    if (rc) return st_mdb_fail(e, rc, "patient insert");
    if (w->s->states) st_plog_state_note(w, pv->number, state_at); /* the next record of it in w reads it there */
    if (logged) st_log_add(w, 'p', pv->pid.b, 16, pv->version);
    return MS_OK;
}

/* ---- public copies ---- */

/* The copy under schema version sv at as_of, or exactly (valid_from, version) when exact. */
typedef struct {
    int64_t as_of;
    bool exact;
    uint32_t version;
    buf *out;
    bool found;
} copy_at;

static bool take_copy(void *ctx, const plog_entry *en)
{
    copy_at *a = ctx;
    entry_verdict vd = versioned_verdict(en, a->as_of, a->exact, a->version);
    if (vd != ENTRY_TAKE) return vd == ENTRY_PASS;
    a->out->len = 0;
    buf_put(a->out, en->data, en->len);
    a->found = true;
    return false;
}

static ms_code public_patient_at(const pat_src *src, uint32_t sv, int64_t as_of, bool exact, uint32_t version, buf *out,
                                 bool *found, ms_err *e)
{
    copy_at a = {as_of, exact, version, out, false};
    *found = false;
    if (as_of < 0) return MS_OK;
    ms_code rc = patient_entries(src, 'P', sv, take_copy, &a, e);
    *found = rc == MS_OK && a.found;
    return rc;
}

ms_code store_public_patient_latest(store_write *w, uint32_t sv, const patient_ref *p, buf *out, bool *found, ms_err *e)
{
    pat_src src = src_w(w, p->number);
    return public_patient_at(&src, sv, INT64_MAX, false, 0, out, found, e);
}

ms_code store_public_patient_put(store_write *w, uint32_t sv, const patient_ref *p, uint32_t version,
                                 const char *fields, size_t len, ms_err *e)
{
    int rc;
    if (sv == st_write_sv(w)->in_force) { /* the log; a re-projection's target copies stay keyed (schemas.c) */
        plog_entry en = {.number = p->number,
                         .tag = 'P',
                         .sv = sv,
                         .valid_from = w->now,
                         .version = version,
                         .data = fields,
                         .len = len};
        rc = st_plog_append(w, &en);
    } else {
        unsigned char prefix[14];
        size_t pl = st_public_patient_prefix(prefix, sv, p->number);
        st_key_versioned(&w->key, prefix, pl, w->now, version);
        MDB_val k = st_val(w->key.data, w->key.len), v = st_val(fields, len);
        rc = mdb_put(w->txn, w->s->dbi[DB_PUBLIC], &k, &v, 0);
    }
    return rc ? st_mdb_fail(e, rc, "public patient insert") : MS_OK;
}

/* ---- reads as of an instant ---- */

ms_code store_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, record_version *rv, bool *found,
                        ms_err *e)
{
    buf kb = {0};
    ms_code rc = st_record_at(r->s, r->txn, &kb, rid, len, as_of, rv, found, e);
    buf_free(&kb);
    return rc;
}

ms_code store_patient_at(store_read *r, const patient_id *pid, int64_t as_of, patient_version *pv, arena *mem,
                         bool *found, ms_err *e)
{
    patient_ref who = {*pid, 0};
    *found = false;
    if (as_of < 0 || !store_patient_number(r->s, pid, &who.number)) return MS_OK;
    pat_src src = src_r(r, who.number);
    return patient_version_at(&src, &who, as_of, false, 0, pv, mem, found, NULL, e);
}

typedef struct {
    const pat_src *src;
    const patient_ref *who;
    patient_version *list;
    uint32_t count, cap;
    arena *mem;
    ms_code rc;
    ms_err *e;
} history_walk;

static bool take_history(void *ctx, const plog_entry *en)
{
    history_walk *h = ctx;
    if (h->count == h->cap) {
        patient_version *bigger = arena_alloc(h->mem, sizeof *bigger * h->cap * 2);
        memcpy(bigger, h->list, sizeof *bigger * h->cap);
        h->list = bigger;
        h->cap *= 2;
    }
    h->rc = st_patient_read(h->src->s, st_val(en->data, en->len), h->who, &h->list[h->count], h->mem, h->e);
    if (h->rc != MS_OK) return false;
    h->list[h->count].valid_to = h->count ? h->list[h->count - 1].valid_from : -1;
    h->count++;
    return true;
}

ms_code store_patient_history(store_read *r, const patient_id *pid, patient_version **out, uint32_t *n, arena *mem,
                              ms_err *e)
{
    patient_ref who = {*pid, 0};
    *n = 0;
    *out = NULL;
    if (!store_patient_number(r->s, pid, &who.number)) return MS_OK;
    pat_src src = src_r(r, who.number);
    history_walk h = {&src, &who, arena_alloc(mem, sizeof(patient_version) * 16), 0, 16, mem, MS_OK, e};
    ms_code code = patient_entries(&src, 'v', 0, take_history, &h, e); /* newest first: collect, then reverse */
    if (code == MS_OK) code = h.rc;
    if (code != MS_OK) return code;
    for (uint32_t i = 0; i < h.count / 2; i++) {
        patient_version t = h.list[i];
        h.list[i] = h.list[h.count - 1 - i];
        h.list[h.count - 1 - i] = t;
    }
    *out = h.list;
    *n = h.count;
    return MS_OK;
}

/* ---- indexes and live records ---- */

/* A patient's records index: its keys (be64(number) 'r' be64(event ts, sign flipped) record id, the keyed
 * layout's, which cursors hold) from the log's entries and the keyed ones, sorted and without repeats (the
 * log has an entry per record version). */
typedef struct {
    buf keys; /* be32(length) key, ... */
    size_t n;
    uint64_t number;
} records_index;

static bool take_record(void *ctx, const plog_entry *en)
{
    records_index *ix = ctx;
    if (en->len == 0 || en->len > RECORD_ID_MAX) return true;
    buf_put_be32(&ix->keys, (uint32_t)(17 + en->len));
    unsigned char k[17];
    st_patient_prefix(k, ix->number, 'r');
    ms_set_be64(k + 9, st_ts_key(en->ts));
    buf_put(&ix->keys, k, 17);
    buf_put(&ix->keys, en->data, en->len);
    ix->n++;
    return true;
}

static int key_order(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return record_key_cmp(x + 4, ms_get_be32(x), y + 4, ms_get_be32(y));
}

/* The sorted keys of patient src->number's records index (free *keys and ix->keys). */
static ms_code records_index_of(const pat_src *src, records_index *ix, const char ***keys, size_t *n, ms_err *e)
{
    *keys = NULL;
    *n = 0;
    ix->number = src->number;
    ms_code rc = patient_entries(src, 'r', 0, take_record, ix, e);
    if (rc != MS_OK || !ix->n) return rc;
    const char **list = ms_calloc(ix->n, sizeof *list);
    size_t at = 0;
    for (size_t i = 0; i < ix->n; i++) {
        list[i] = ix->keys.data + at;
        at += 4 + ms_get_be32(ix->keys.data + at);
    }
    qsort(list, ix->n, sizeof *list, key_order);
    size_t m = 0;
    for (size_t i = 0; i < ix->n; i++)
        if (!m || key_order(&list[m - 1], &list[i]) != 0) list[m++] = list[i];
    *keys = list;
    *n = m;
    return MS_OK;
}

ms_code st_patient_records_w(store_write *w, uint64_t number, st_plog_fn fn, void *ctx, ms_err *e)
{
    pat_src src = src_w(w, number);
    return patient_entries(&src, 'r', 0, fn, ctx, e);
}

ms_code store_patient_records(store_read *r, const patient_id *pid, int64_t since, int64_t until, const void *after_key,
                              size_t after_len, store_patient_record_fn fn, void *ctx, ms_err *e)
{
    unsigned char start[17];
    uint64_t number;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK; /* no such patient: no records */
    st_patient_prefix(start, number, 'r');
    ms_set_be64(start + 9, st_ts_key(since));
    if (after_key && (after_len < 17 || memcmp(after_key, start, 9) != 0))
        return ms_fail(e, MS_EINVAL, "cursor: not a cursor of this patient's records");
    pat_src src = src_r(r, number);
    records_index ix = {0};
    const char **keys;
    size_t n;
    ms_code rc = records_index_of(&src, &ix, &keys, &n, e);
    for (size_t i = 0; rc == MS_OK && i < n; i++) {
        const char *k = keys[i] + 4;
        size_t kl = ms_get_be32(keys[i]);
        if (record_key_cmp(k, kl, (const char *)start, 17) < 0) continue;
        if (after_key && record_key_cmp(k, kl, after_key, after_len) <= 0) continue;
        int64_t ts = (int64_t)(ms_get_be64(k + 9) ^ ST_TS_SIGN);
        if (ts >= until) break;
        if (!fn(ctx, ts, k + 17, kl - 17, k, kl)) break;
    }
    free(keys);
    buf_free(&ix.keys);
    return rc;
}

ms_code store_children(store_read *r, const char *parent, size_t parent_len, int64_t since, int64_t until,
                       const void *after_key, size_t after_len, store_patient_record_fn fn, void *ctx, ms_err *e)
{
    if (r->s->absent[DB_CHILDREN] || parent_len == 0 || parent_len > RECORD_ID_MAX || memchr(parent, 0, parent_len))
        return MS_OK;
    buf start = {0};
    buf_put(&start, parent, parent_len);
    buf_putc(&start, 0);
    size_t plen = start.len;
    buf_put_be64(&start, st_ts_key(since));
    if (after_key && (after_len < plen + 8 || memcmp(after_key, start.data, plen) != 0)) {
        buf_free(&start);
        return ms_fail(e, MS_EINVAL, "cursor: not a cursor of this record's children");
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_CHILDREN], &c);
    if (rc) {
        buf_free(&start);
        return st_mdb_fail(e, rc, "cursor");
    }
    MDB_val k = st_val(start.data, start.len), v;
    bool skip_equal = false;
    if (after_key && record_key_cmp(after_key, after_len, start.data, start.len) > 0) {
        k = st_val(after_key, after_len);
        skip_equal = true;
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= plen + 8 || memcmp(k.mv_data, start.data, plen) != 0) break;
        if (skip_equal) {
            skip_equal = false;
            if (k.mv_size == after_len && memcmp(k.mv_data, after_key, after_len) == 0) continue;
        }
        int64_t ts = (int64_t)(ms_get_be64((char *)k.mv_data + plen) ^ ST_TS_SIGN);
        if (ts >= until) break;
        if (!fn(ctx, ts, (char *)k.mv_data + plen + 8, k.mv_size - plen - 8, k.mv_data, k.mv_size)) break;
    }
    mdb_cursor_close(c);
    buf_free(&start);
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, "children index") : MS_OK;
}

/* Walk patient src->number's records index, newest event time first, from the entries with event time <= ts_max,
 * and report each record whose version current at as_of still belongs to the patient with the entry's event
 * time and is not a tombstone. */
static ms_code live_records(const pat_src *src, int64_t as_of, int64_t ts_max, store_record_fn fn, void *ctx, ms_err *e)
{
    records_index ix = {0};
    const char **keys;
    size_t n;
    ms_code out = records_index_of(src, &ix, &keys, &n, e);
    buf kb = {0};
    for (size_t i = n; out == MS_OK && i-- > 0;) {
        const char *k = keys[i] + 4;
        size_t kl = ms_get_be32(keys[i]);
        int64_t ts = (int64_t)(ms_get_be64(k + 9) ^ ST_TS_SIGN);
        if (ts > ts_max) continue;
        record_version rv;
        bool found;
        if ((out = st_record_at(src->s, src->txn, &kb, k + 17, kl - 17, as_of, &rv, &found, e)) != MS_OK) break;
        if (!found || rv.deleted || rv.patient_number != src->number || rv.ts_us != ts) continue;
        if (!fn(ctx, &rv)) break;
    }
    free(keys);
    buf_free(&ix.keys);
    buf_free(&kb);
    return out;
}

ms_code store_live_records(store_read *r, const patient_id *pid, int64_t as_of, int64_t ts_max, store_record_fn fn,
                           void *ctx, ms_err *e)
{
    uint64_t number;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    pat_src src = src_r(r, number);
    return live_records(&src, as_of, ts_max, fn, ctx, e);
}

ms_code store_write_live_records(store_write *w, uint64_t number, store_record_fn fn, void *ctx, ms_err *e)
{
    pat_src src = src_w(w, number);
    return live_records(&src, INT64_MAX, INT64_MAX, fn, ctx, e);
}

ms_code store_public_patient_at(store_read *r, const patient_id *pid, int64_t as_of, buf *fields, bool *found,
                                ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    pat_src src = src_r(r, number);
    return public_patient_at(&src, st_read_sv(r), as_of, false, 0, fields, found, e);
}

ms_code store_public_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, public_record *pr,
                               bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len) || as_of < 0) return MS_OK;
    buf kb = {0};
    unsigned char vp[5];
    size_t vl = st_public_version_prefix(vp, st_read_sv(r));
    st_key_public_record(&kb, st_read_sv(r), rid, len, as_of, UINT32_MAX); /* ~UINT32_MAX: the newest at as_of */
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PUBLIC], &c);
    if (rc) {
        buf_free(&kb);
        return st_mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    ms_code out = MS_OK;
    rc = st_seek_first_version(c, &kb, vl + len + 2, &k, &v);
    if (rc == 0 && k.mv_size == vl + len + 14) {
        if (!st_public_record_decode(&v, pr))
            out = ms_fail(e, MS_ECORRUPT, "store: bad public record entry");
        else
            *found = true;
    } else if (rc && rc != MDB_NOTFOUND) {
        out = st_mdb_fail(e, rc, "public record lookup");
    }
    mdb_cursor_close(c);
    buf_free(&kb);
    return out;
}

/* ---- exact versions, for the sinks: what one commit (valid_from = its commit time) wrote ---- */

static ms_code exact_get(store_read *r, int db, const buf *kb, MDB_val *v, bool *found, const char *what, ms_err *e)
{
    MDB_val k = st_val(kb->data, kb->len);
    int rc = mdb_get(r->txn, r->s->dbi[db], &k, v);
    *found = rc == 0;
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, what) : MS_OK;
}

ms_code store_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                             record_version *rv, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len)) return MS_OK;
    buf kb = {0};
    st_key_record(&kb, rid, len, valid_from, version);
    MDB_val k = st_val(kb.data, kb.len), v;
    ms_code rc = exact_get(r, DB_RECORD, &kb, &v, found, "record lookup", e);
    if (rc == MS_OK && *found && !st_record_decode(&r->s->pid_key, &k, &v, rv))
        rc = ms_fail(e, MS_ECORRUPT, "store: bad record entry");
    buf_free(&kb);
    if (rc == MS_OK && *found) rv->valid_to = -1; /* not looked up: the sinks derive it from the next version */
    return rc;
}

ms_code store_record_before(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                            record_version *rv, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len)) return MS_OK;
    buf kb = {0};
    st_key_record(&kb, rid, len, valid_from, version);
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_RECORD], &c);
    if (rc) {
        buf_free(&kb);
        return st_mdb_fail(e, rc, "cursor");
    }
    MDB_val k = st_val(kb.data, kb.len), v;
    ms_code out = MS_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); /* that version, or the first older one */
    if (rc == 0 && k.mv_size == kb.len && memcmp(k.mv_data, kb.data, kb.len) == 0)
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT); /* older versions sort after it */
    if (rc == 0 && k.mv_size == len + 13 && memcmp(k.mv_data, rid, len) == 0 && ((char *)k.mv_data)[len] == 0) {
        if (!st_record_decode(&r->s->pid_key, &k, &v, rv))
            out = ms_fail(e, MS_ECORRUPT, "store: bad record entry");
        else {
            *found = true;
            rv->valid_to = valid_from;
        }
    } else if (rc && rc != MDB_NOTFOUND) {
        out = st_mdb_fail(e, rc, "record lookup");
    }
    mdb_cursor_close(c);
    buf_free(&kb);
    return out;
}

ms_code store_public_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                                    public_record *pr, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len)) return MS_OK;
    buf kb = {0};
    st_key_public_record(&kb, st_read_sv(r), rid, len, valid_from, version);
    MDB_val v;
    ms_code rc = exact_get(r, DB_PUBLIC, &kb, &v, found, "public record lookup", e);
    buf_free(&kb);
    if (rc || !*found) return rc;
    return st_public_record_decode(&v, pr) ? MS_OK : ms_fail(e, MS_ECORRUPT, "store: bad public record entry");
}

ms_code store_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                              patient_version *pv, arena *mem, bool *found, ms_err *e)
{
    patient_ref who = {*pid, 0};
    *found = false;
    if (!store_patient_number(r->s, pid, &who.number)) return MS_OK;
    pat_src src = src_r(r, who.number);
    return patient_version_at(&src, &who, valid_from, true, version, pv, mem, found, NULL, e);
}

ms_code store_public_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                                     buf *fields, bool *found, ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    pat_src src = src_r(r, number);
    return public_patient_at(&src, st_read_sv(r), valid_from, true, version, fields, found, e);
}

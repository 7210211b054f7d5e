/*
 * schemas.c - schema versions of the public copies: the canonical text of every schema the store has
 * projected under, numbered 1, 2, ...; the version reads answer under ("in force") and the one being
 * re-projected to ("target"); the steps of a re-projection (recompute every stored record version's and
 * patient version's public copy under the target) and of the clean-up that deletes the copies of versions
 * no longer in force.
 *
 * DESIGN (README.md, "Schema versions"): public copies are keyed by their schema version (version 1: the
 * unprefixed keys written before versions existed, so an older store is version 1 with its copies as they
 * are; later versions: 'V' be32(version) before the same key). A re-projection walks the `record` then the
 * `patient` sub-database from a cursor kept in meta, each step one short read transaction (the caller's
 * callbacks compute the copies: the store never interprets a schema) and one short write transaction
 * (the copies, the cursor, the count), so the ingest writer waits at most one step for LMDB's writer lock,
 * a restart resumes from the last step, and a step done twice writes the same bytes (copies of immutable
 * versions). The last step switches the version in force in the same transaction as it writes its
 * copies: a read transaction sees the old version's copies or the new one's, never a mix. Meanwhile the
 * ingest writer writes every new version's copy under both versions (store_write_schema), so neither has
 * a hole. The public-records index ('T' keys) does not depend on the schema and is shared.
 *
 * Contract: store.h ("Schema versions"). Must never: hold a write transaction across a callback (copies
 * are computed under the read transaction, written afterwards), delete a copy of the version in force or
 * of the target, put a schema text or a record value in an error message.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include "base/timefmt.h"

#include <stdio.h>
#include <string.h>

#define META_VERSION "schema_version" /* be64: the version in force (absent: 1, a store from before versions) */
#define META_LAST "schema_last"       /* be64: the highest version number ever given */
#define META_AT "reproject_at"        /* phase ('R' records, 'P' patients) then the last key done */
#define META_DONE "reproject_done"    /* be64: entries walked so far */

static void text_key(char out[32], uint32_t version) { snprintf(out, 32, "schema:%010u", version); }

uint32_t st_meta_sv(MDB_txn *txn, MDB_dbi meta)
{
    uint64_t v = 0;
    st_meta_get_u64(txn, meta, META_VERSION, &v);
    return v ? (uint32_t)v : 1;
}

uint32_t st_read_sv(store_read *r)
{
    if (!r->sv) r->sv = st_meta_sv(r->txn, r->s->dbi[DB_META]);
    return r->sv;
}

const st_schema_versions *st_write_sv(store_write *w)
{
    if (!w->sv.loaded) {
        uint64_t t = 0;
        w->sv.in_force = st_meta_sv(w->txn, w->s->dbi[DB_META]);
        st_meta_get_u64(w->txn, w->s->dbi[DB_META], ST_META_TARGET, &t);
        w->sv.target = (uint32_t)t;
        w->sv.loaded = true;
    }
    return &w->sv;
}

uint32_t store_read_schema_version(store_read *r) { return st_read_sv(r); }

void store_write_schema(store_write *w, uint32_t *in_force, uint32_t *target)
{
    const st_schema_versions *v = st_write_sv(w);
    *in_force = v->in_force;
    *target = v->target;
}

static uint64_t entries(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat st;
    return mdb_stat(txn, dbi, &st) == 0 ? st.ms_entries : 0;
}

static void status_of(MDB_txn *txn, const store *s, store_schema_status *st)
{
    uint64_t t = 0, d = 0, last = 0;
    st->in_force = st_meta_sv(txn, s->dbi[DB_META]);
    st_meta_get_u64(txn, s->dbi[DB_META], ST_META_TARGET, &t);
    st->target = (uint32_t)t;
    st_meta_get_u64(txn, s->dbi[DB_META], META_LAST, &last);
    if (last < st->in_force) last = st->in_force;
    st->last = (uint32_t)(last < t ? t : last);
    st->done = st->total = 0;
    if (st->target) {
        st_meta_get_u64(txn, s->dbi[DB_META], META_DONE, &d);
        st->done = d;
        st->total = entries(txn, s->dbi[DB_RECORD]) + entries(txn, s->dbi[DB_PATIENT]) +
                    (s->absent[DB_PLOG] ? 0 : entries(txn, s->dbi[DB_PLOG])) +
                    (s->absent[DB_PLOGC] ? 0 : entries(txn, s->dbi[DB_PLOGC]));
        if (st->total < st->done) st->total = st->done;
    }
}

ms_code store_schema_status_get(store_read *r, store_schema_status *st, ms_err *e)
{
    (void)e;
    status_of(r->txn, r->s, st);
    return MS_OK;
}

static int text_get(MDB_txn *txn, MDB_dbi meta, uint32_t version, MDB_val *v)
{
    char name[32];
    text_key(name, version);
    MDB_val k = st_val(name, strlen(name));
    return mdb_get(txn, meta, &k, v);
}

ms_code store_schema_text(store_read *r, uint32_t version, buf *out, bool *found, ms_err *e)
{
    MDB_val v;
    int rc = text_get(r->txn, r->s->dbi[DB_META], version, &v);
    *found = rc == 0;
    if (rc && rc != MDB_NOTFOUND) return st_mdb_fail(e, rc, "schema text");
    out->len = 0;
    if (*found) buf_put(out, v.mv_data, v.mv_size);
    return MS_OK;
}

static bool text_is(MDB_txn *txn, MDB_dbi meta, uint32_t version, const char *canon, size_t len)
{
    MDB_val v;
    return text_get(txn, meta, version, &v) == 0 && v.mv_size == len && memcmp(v.mv_data, canon, len) == 0;
}

static int reset_cursor(MDB_txn *txn, MDB_dbi meta)
{
    MDB_val k = st_val(META_AT, strlen(META_AT));
    int rc = mdb_del(txn, meta, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) return rc;
    return st_meta_put_u64(txn, meta, META_DONE, 0);
}

ms_code store_schema_register(store *s, const char *canon, size_t len, store_schema_status *st, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: schema version: the store is open read-only");
    if (len == 0) return ms_fail(e, MS_EINVAL, "store: schema version: an empty schema text");
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "schema version");
    MDB_dbi meta = s->dbi[DB_META];
    uint64_t cur = 0, tgt = 0, last = 0;
    if (!rc) rc = st_meta_get_u64(txn, meta, META_VERSION, &cur);
    if (!rc) rc = st_meta_get_u64(txn, meta, ST_META_TARGET, &tgt);
    if (!rc) rc = st_meta_get_u64(txn, meta, META_LAST, &last);
    uint64_t fresh = 0; /* the number of a new version to record */
    if (rc) {
    } else if (cur == 0) {
        /* no version stored: this schema is version 1, and the copies already there (a store from before
         * versions) are taken as made under it */
        fresh = 1;
        rc = st_meta_put_u64(txn, meta, META_VERSION, 1);
    } else if (tgt && text_is(txn, meta, (uint32_t)tgt, canon, len)) {
        /* the re-projection under way is to this schema: it resumes */
    } else if (text_is(txn, meta, (uint32_t)cur, canon, len)) {
        if (tgt) { /* back to the schema in force: the re-projection under way is abandoned */
            rc = st_meta_put_u64(txn, meta, ST_META_TARGET, 0);
            if (!rc) rc = reset_cursor(txn, meta);
        }
    } else {
        fresh = (last > cur ? last : cur) + 1;
        if (tgt >= fresh) fresh = tgt + 1;
        rc = st_meta_put_u64(txn, meta, ST_META_TARGET, fresh);
        if (!rc) rc = reset_cursor(txn, meta);
    }
    if (!rc && fresh) {
        char name[32];
        text_key(name, (uint32_t)fresh);
        MDB_val k = st_val(name, strlen(name)), v = st_val(canon, len);
        rc = mdb_put(txn, meta, &k, &v, 0);
        if (!rc) rc = st_meta_put_u64(txn, meta, META_LAST, fresh);
    }
    if (!rc && st) status_of(txn, s, st);
    if (rc) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "schema version");
    }
    rc = mdb_txn_commit(txn);
    return rc ? st_write_fail(s, e, rc, "schema version") : MS_OK;
}

/* ---- re-projection ---- */

typedef struct {
    buf keys, vals;    /* the copies to write: be32 length then bytes, one after another */
    uint32_t n;        /* copies computed */
    uint64_t walked;   /* entries walked */
    buf at;            /* the cursor after this step: phase then last key */
    bool end;          /* walked past the last entry of the patient sub-database */
    uint64_t erasures; /* the store's erasure count when the batch was read (ST_META_ERASURES) */
} step_batch;

static void put_lv(buf *b, const void *p, size_t n)
{
    buf_put_be32(b, (uint32_t)n);
    buf_put(b, p, n);
}

/* The identity key of patient number (what per-patient transforms derive their secrets from), into key;
 * empty if the entry is missing, erased or does not open (the callbacks then have none). */
static void ident_of(store *s, MDB_txn *txn, uint64_t number, buf *key)
{
    bool found = false;
    ms_err ignored;
    key->len = 0;
    if (st_identity_key_of(s, txn, number, key, &found, &ignored) != MS_OK || !found) key->len = 0;
}

/* Position c after the cursor key (or at the first entry); returns an LMDB code. */
static int seek_after(MDB_cursor *c, const char *last, size_t last_len, MDB_val *k, MDB_val *v)
{
    if (!last_len) return mdb_cursor_get(c, k, v, MDB_FIRST);
    *k = st_val(last, last_len);
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == 0 && k->mv_size == last_len && memcmp(k->mv_data, last, last_len) == 0)
        rc = mdb_cursor_get(c, k, v, MDB_NEXT);
    return rc;
}

static ms_code walk_records(store *s, MDB_txn *txn, uint32_t target, const store_reproject_fns *fns, uint32_t max,
                            const char *last, size_t last_len, step_batch *b, bool *phase_done, ms_err *e)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->dbi[DB_RECORD], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    buf kb = {0}, vb = {0}, fields = {0}, ik = {0};
    ms_code out = MS_OK;
    *phase_done = false;
    for (rc = seek_after(c, last, last_len, &k, &v); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (b->n >= max || b->walked >= (uint64_t)max * 8) break;
        b->walked++;
        const char *nul = memchr(k.mv_data, 0, k.mv_size);
        size_t rl = nul ? (size_t)(nul - (const char *)k.mv_data) : 0;
        record_version rv;
        if (!nul || rl == 0 || rl > RECORD_ID_MAX || k.mv_size != rl + 13 ||
            !st_record_decode(&s->pid_key, &k, &v, &rv)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad record entry");
            break;
        }
        fields.len = 0;
        ident_of(s, txn, rv.patient_number, &ik);
        if (!rv.deleted && (out = fns->record(fns->ctx, &rv, ik.data, ik.len, &fields, e)) != MS_OK) break;
        st_public_record_encode(&vb, &rv, time_year(rv.ts_us), rv.deleted ? NULL : fields.data, fields.len);
        st_key_public_record(&kb, target, rv.record_id, rv.record_id_len, rv.valid_from, rv.version);
        put_lv(&b->keys, kb.data, kb.len);
        put_lv(&b->vals, vb.data, vb.len);
        b->n++;
        b->at.len = 0;
        buf_putc(&b->at, 'R');
        buf_put(&b->at, k.mv_data, k.mv_size);
    }
    if (out == MS_OK && rc == MDB_NOTFOUND)
        *phase_done = true;
    else if (out == MS_OK && rc)
        out = st_mdb_fail(e, rc, "re-projection: records");
    mdb_cursor_close(c);
    buf_free(&kb);
    buf_free(&vb);
    buf_free(&fields);
    buf_free(&ik);
    return out;
}

/* The patient versions of phase 'P' (the keyed ones of the patient sub-database, from stores before the
 * patient log and preload), 'C' (the compacted part of the patient log, plog_compact.c) or 'L' (the patient
 * log's, plog.c), in key (sequence) order after the cursor key `last` (none: from the first): their copies
 * under the target are keyed, as the writer's are meanwhile. (No compaction moves entries while a
 * re-projection runs: the same thread runs it after the switch.) */
static ms_code walk_patients(store *s, MDB_txn *txn, char phase, uint32_t target, const store_reproject_fns *fns,
                             uint32_t max, const char *last, size_t last_len, step_batch *b, bool *phase_done,
                             ms_err *e)
{
    *phase_done = false;
    int db = phase == 'P' ? DB_PATIENT : phase == 'C' ? DB_PLOGC : DB_PLOG;
    if (s->absent[db]) {
        *phase_done = true;
        return MS_OK;
    }
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->dbi[db], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    buf kb = {0}, fields = {0}, ik = {0};
    ms_code out = MS_OK;
    for (rc = seek_after(c, last, last_len, &k, &v); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (b->n >= max || b->walked >= (uint64_t)max * 8) break;
        b->walked++;
        b->at.len = 0;
        buf_putc(&b->at, phase);
        buf_put(&b->at, k.mv_data, k.mv_size);
        patient_ref who = {0};
        MDB_val value = v;
        if (phase == 'P') {
            if (k.mv_size != 21 || ((char *)k.mv_data)[8] != 'v') continue; /* a records-index entry */
            who.number = ms_get_be64(k.mv_data);
        } else {
            plog_entry en;
            if (k.mv_size != 8 || !st_plog_decode(ms_get_be64(k.mv_data), &v, &en)) {
                out = ms_fail(e, MS_ECORRUPT, "store: bad patient log entry");
                break;
            }
            if (en.tag != 'v') continue; /* records-index entries, public copies, erasure marks */
            who.number = en.number;
            value = st_val(en.data, en.len);
        }
        patient_id_from_number(&s->pid_key, who.number, &who.id);
        patient_version pv;
        arena mem = {0};
        if ((out = st_patient_read(s, value, &who, &pv, &mem, e)) != MS_OK) {
            arena_free(&mem);
            break;
        }
        fields.len = 0;
        ident_of(s, txn, who.number, &ik);
        out = fns->patient(fns->ctx, &pv, ik.data, ik.len, &fields, e);
        arena_free(&mem);
        if (out != MS_OK) break;
        unsigned char prefix[14];
        size_t pl = st_public_patient_prefix(prefix, target, who.number);
        st_key_versioned(&kb, prefix, pl, pv.valid_from, pv.version);
        put_lv(&b->keys, kb.data, kb.len);
        put_lv(&b->vals, fields.data, fields.len);
        b->n++;
    }
    if (out == MS_OK && rc == MDB_NOTFOUND)
        *phase_done = true;
    else if (out == MS_OK && rc)
        out = st_mdb_fail(e, rc, "re-projection: patients");
    mdb_cursor_close(c);
    buf_free(&kb);
    buf_free(&fields);
    buf_free(&ik);
    return out;
}

/* Compute one step's copies from a read transaction. *stale: the target is no longer target. */
static ms_code step_read(store *s, uint32_t target, const store_reproject_fns *fns, uint32_t max, step_batch *b,
                         bool *stale, ms_err *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    uint64_t tgt = 0;
    st_meta_get_u64(txn, s->dbi[DB_META], ST_META_TARGET, &tgt);
    st_meta_get_u64(txn, s->dbi[DB_META], ST_META_ERASURES, &b->erasures);
    *stale = tgt != target;
    ms_code out = MS_OK;
    if (!*stale) {
        MDB_val ak = st_val(META_AT, strlen(META_AT)), av = {0};
        buf at = {0};
        if (mdb_get(txn, s->dbi[DB_META], &ak, &av) == 0) buf_put(&at, av.mv_data, av.mv_size);
        char phase = at.len ? at.data[0] : 'R';
        const char *last = at.len ? at.data + 1 : NULL;
        size_t last_len = at.len ? at.len - 1 : 0;
        if (phase == 'R') {
            bool records_done = false;
            out = walk_records(s, txn, target, fns, max, last, last_len, b, &records_done, e);
            if (out == MS_OK && records_done) {
                phase = 'P';
                last = NULL;
                last_len = 0;
                if (!b->at.len)
                    buf_putc(&b->at, 'P');
                else
                    b->at.data[0] = 'P', b->at.len = 1; /* the patients from their first entry */
            }
        }
        if (out == MS_OK && phase == 'P' && b->n < max && b->walked < (uint64_t)max * 8) {
            bool patients_done = false;
            out = walk_patients(s, txn, 'P', target, fns, max, last, last_len, b, &patients_done, e);
            if (out == MS_OK && patients_done) {
                phase = 'C';
                last = NULL;
                last_len = 0;
                b->at.len = 0;
                buf_putc(&b->at, 'C'); /* the patient log's compacted part from its first entry */
            }
        }
        if (out == MS_OK && phase == 'C' && b->n < max && b->walked < (uint64_t)max * 8) {
            bool moved_done = false;
            out = walk_patients(s, txn, 'C', target, fns, max, last, last_len, b, &moved_done, e);
            if (out == MS_OK && moved_done) {
                phase = 'L';
                last = NULL;
                last_len = 0;
                b->at.len = 0;
                buf_putc(&b->at, 'L'); /* then the patient log from its first entry */
            }
        }
        if (out == MS_OK && phase == 'L' && b->n < max && b->walked < (uint64_t)max * 8) {
            bool log_done = false;
            out = walk_patients(s, txn, 'L', target, fns, max, last, last_len, b, &log_done, e);
            b->end = out == MS_OK && log_done;
        }
        if (out == MS_OK && !b->at.len) buf_put(&b->at, at.data, at.len); /* nothing walked */
        buf_free(&at);
    }
    mdb_txn_abort(txn);
    return out;
}

ms_code store_reproject_step(store *s, uint32_t target, const store_reproject_fns *fns, uint32_t max, bool *finished,
                             store_schema_status *st, ms_err *e)
{
    *finished = false;
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: re-projection: the store is open read-only");
    if (target < 2) return ms_fail(e, MS_EINVAL, "store: re-projection: no such target version");
    if (max == 0) max = 1;
    step_batch b = {0};
    bool stale = false;
    ms_code out = step_read(s, target, fns, max, &b, &stale, e);
    if (out != MS_OK || stale) {
        *finished = out == MS_OK; /* another target, or none: nothing more to do for this one */
        goto done;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) {
        out = st_mdb_fail(e, rc, "re-projection");
        goto done;
    }
    MDB_dbi meta = s->dbi[DB_META];
    uint64_t tgt = 0, done = 0;
    rc = st_meta_get_u64(txn, meta, ST_META_TARGET, &tgt);
    if (!rc && tgt != target) { /* changed since the read: write nothing */
        mdb_txn_abort(txn);
        *finished = true;
        goto done;
    }
    uint64_t erasures = 0;
    if (!rc) rc = st_meta_get_u64(txn, meta, ST_META_ERASURES, &erasures);
    if (!rc && erasures != b.erasures) { /* a patient erased since the read: its copies must not come back */
        mdb_txn_abort(txn);
        goto done; /* (not finished: the next step reads again) */
    }
    if (!rc) rc = st_meta_get_u64(txn, meta, META_DONE, &done);
    size_t ko = 0, vo = 0;
    for (uint32_t i = 0; i < b.n && !rc; i++) {
        uint32_t kl = ms_get_be32(b.keys.data + ko), vl = ms_get_be32(b.vals.data + vo);
        MDB_val k = st_val(b.keys.data + ko + 4, kl), v = st_val(b.vals.data + vo + 4, vl);
        rc = mdb_put(txn, s->dbi[DB_PUBLIC], &k, &v, 0);
        ko += 4 + kl;
        vo += 4 + vl;
    }
    if (!rc && b.end) {
        /* every stored version has its copy: the switch, in the same transaction as the last copies */
        rc = st_meta_put_u64(txn, meta, META_VERSION, target);
        if (!rc) rc = st_meta_put_u64(txn, meta, ST_META_TARGET, 0);
        if (!rc) rc = reset_cursor(txn, meta);
        /* the version it ends is retired: its copies in the patient log are garbage (a target's copies are
         * keyed, so an abandoned one leaves none there) */
        if (!rc) rc = st_plog_compact_from_start(s, txn);
    } else if (!rc) {
        MDB_val k = st_val(META_AT, strlen(META_AT)), v = st_val(b.at.data, b.at.len);
        rc = mdb_put(txn, meta, &k, &v, 0);
        if (!rc) rc = st_meta_put_u64(txn, meta, META_DONE, done + b.walked);
    }
    if (!rc && st) {
        status_of(txn, s, st);
        if (b.end) st->done = st->total = done + b.walked;
    }
    if (rc) {
        mdb_txn_abort(txn);
        out = st_write_fail(s, e, rc, "re-projection");
        goto done;
    }
    rc = mdb_txn_commit(txn);
    if (rc)
        out = st_write_fail(s, e, rc, "re-projection");
    else
        *finished = b.end;
done:
    buf_free(&b.keys);
    buf_free(&b.vals);
    buf_free(&b.at);
    return out;
}

/* ---- clean-up of the copies of versions neither in force nor the target ---- */

ms_code store_schema_drop_step(store *s, uint32_t max, bool *finished, uint64_t *deleted, ms_err *e)
{
    *finished = false;
    *deleted = 0;
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: schema clean-up: the store is open read-only");
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "schema clean-up");
    MDB_dbi meta = s->dbi[DB_META];
    uint32_t in_force = st_meta_sv(txn, meta);
    uint64_t tgt = 0;
    rc = st_meta_get_u64(txn, meta, ST_META_TARGET, &tgt);
    MDB_cursor *c = NULL;
    if (!rc) rc = mdb_cursor_open(txn, s->dbi[DB_PUBLIC], &c);
    MDB_val k, v;
    /* version 1's copies, unprefixed 'P' and 'R' keys (never the shared 'T' index), once it is not in force */
    for (int pass = 0; !rc && in_force != 1 && pass < 2; pass++) {
        const char tag = pass ? 'R' : 'P';
        k = st_val(&tag, 1);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && *deleted < max;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (((char *)k.mv_data)[0] != tag) break;
            if ((rc = mdb_cursor_del(c, 0))) break;
            ++*deleted;
        }
        if (rc == MDB_NOTFOUND) rc = 0;
    }
    /* later versions: 'V' be32(version) ... */
    unsigned char seek[5] = {'V', 0, 0, 0, 0};
    k = st_val(seek, 1);
    for (rc = rc ? rc : mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && *deleted < max;) {
        if (k.mv_size < 5 || ((char *)k.mv_data)[0] != 'V') break;
        uint32_t ver = ms_get_be32((char *)k.mv_data + 1);
        if (ver == in_force || ver == tgt) {
            if (ver == UINT32_MAX) break;
            ms_set_be32(seek + 1, ver + 1);
            k = st_val(seek, 5);
            rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            continue;
        }
        if ((rc = mdb_cursor_del(c, 0))) break;
        ++*deleted;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT); /* after a delete: the entry that followed it */
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    if (c) mdb_cursor_close(c);
    if (rc) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "schema clean-up");
    }
    rc = mdb_txn_commit(txn);
    if (rc) return st_write_fail(s, e, rc, "schema clean-up");
    *finished = *deleted < max;
    return MS_OK;
}

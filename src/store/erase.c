/*
 * erase.c - erasure of a patient (DESIGN.md "Erasure", the right to be forgotten): inside one store_write,
 * every trace of the patient's PHI leaves the store, and after its commit the patient's data key is
 * overwritten in place (keys.c), which leaves every body sealed under it (seal.h) unreadable wherever its
 * bytes still lie: the segment log, pages LMDB has freed, the body cache, a backup taken after.
 *
 * What one erasure writes:
 *   - every record version of the patient (found through the patient's records index) becomes an erased
 *     tombstone in place: same key (record id, valid_from, version), no body, no hashes, no event time, no
 *     parent, so that as-of reads of a record that was someone else's before or after still answer
 *     exactly (the erased versions read as deleted); its public copy becomes a tombstone's copy; the
 *     children index entries those versions made are deleted;
 *   - the patient's versions, its records index and its public patient copies (the patient log's entries,
 *     plog.c, then an 'X' entry that ends the chain; and the keyed ones of a store from before the log, under
 *     the schema version in force and a re-projection's target, schemas.c) are deleted; the store's erasure count goes
 * up, so a re-projection step that read the patient before writes nothing;
 *   - its identity entry becomes an erased marker (patient id and the erasure time: nothing of the name or
 *     date of birth; reads answer 410), and after the commit the identity leaves the in-memory index, so
 *     the same identity ingested later is a new patient;
 *   - the commit log gets 'x' (record id, version) for each erased record version and one 'e' (patient
 *     id), so that the sinks and views that follow the log remove what they hold downstream.
 * The caller writes the audit entry in the same transaction.
 *
 * What stays, by design: record ids and patient ids (not PHI here: the public store publishes both),
 * field names, commit times (the keys' valid_from), a tombstone's type and its public copy's year; and in
 * pages LMDB has freed (until it reuses them) what those held before: the identity MAC (a keyed hash:
 * a guess of name and date of birth can be confirmed only with the store's key), sealed bytes without
 * their key, the public copies (de-identified), and record ids with event times in the index keys,
 * no longer tied to anyone (the patient number maps to no identity any more).
 *
 * Contract: store.h ("Erasure"). Must never: leave a decryptable byte of the patient after the commit and
 * the key's overwrite, touch a version of the same record that belongs to another patient.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Rewrite one record version of the patient as an erased tombstone, and its public copy. */
static int erase_version(store_write *w, MDB_cursor *rc_cur, const MDB_val *k, record_version *rv, erase_report *out)
{
    store *s = w->s;
    record_version t = *rv;
    t.deleted = true;
    t.sealed = false;
    t.body_pos = 0;
    t.body_len = 0;
    t.body_hash = 0;
    t.ts_us = 0; /* an event time is a date of service: not kept */
    t.parent_id_len = 0;
    t.parent_id[0] = 0;
    memset(t.content_hash, 0, sizeof t.content_hash);
    buf v = {0};
    st_record_encode(&v, &t);
    MDB_val mv = st_val(v.data, v.len);
    /* the key as a copy: k points into the page, and a value of another size moves the node */
    buf key = {0};
    buf_put(&key, k->mv_data, k->mv_size);
    MDB_val kc = st_val(key.data, key.len);
    int rc = mdb_cursor_put(rc_cur, &kc, &mv, MDB_CURRENT);
    buf_free(&key);
    /* its public copies (under the schema version in force and a re-projection's target): a tombstone's,
     * with the same year and type */
    const st_schema_versions *sv = st_write_sv(w);
    uint32_t versions[2] = {sv->in_force, sv->target};
    for (int i = 0; i < 2 && !rc; i++) {
        if (!versions[i]) continue;
        st_key_public_record(&w->key, versions[i], rv->record_id, rv->record_id_len, rv->valid_from, rv->version);
        MDB_val pk = st_val(w->key.data, w->key.len), pv;
        public_record pr;
        if (mdb_get(w->txn, s->dbi[DB_PUBLIC], &pk, &pv) || !st_public_record_decode(&pv, &pr)) continue;
        st_public_record_encode(&v, &t, pr.year, NULL, 0);
        pv = st_val(v.data, v.len);
        rc = mdb_put(w->txn, s->dbi[DB_PUBLIC], &pk, &pv, 0);
    }
    buf_free(&v);
    if (!rc) {
        st_log_add(w, 'x', rv->record_id, rv->record_id_len, rv->version);
        out->record_versions++;
    }
    return rc;
}

/* A children index key: parent NUL be64(event time) child (versions.c writes them). */
static void children_key(buf *k, const record_version *rv)
{
    k->len = 0;
    buf_put(k, rv->parent_id, rv->parent_id_len);
    buf_putc(k, 0);
    buf_put_be64(k, st_ts_key(rv->ts_us));
    buf_put(k, rv->record_id, rv->record_id_len);
}

/* Every version of record rid that belongs to patient number: erased; and the children index entries
 * those versions made, unless a version of another patient made the same one. */
static int erase_record(store_write *w, const char *rid, size_t rl, uint64_t number, erase_report *out)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, w->s->dbi[DB_RECORD], &c);
    if (rc) return rc;
    buf prefix = {0}, ck = {0}, gone = {0}, kept = {0}; /* gone, kept: children keys, each be32 length + key */
    buf_put(&prefix, rid, rl);
    buf_putc(&prefix, 0);
    MDB_val k = st_val(prefix.data, prefix.len), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < prefix.len || memcmp(k.mv_data, prefix.data, prefix.len) != 0) break;
        record_version rv;
        if (!st_record_decode(&w->s->pid_key, &k, &v, &rv)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (rv.parent_id_len && !rv.deleted) {
            children_key(&ck, &rv);
            buf *list = rv.patient_number == number ? &gone : &kept;
            buf_put_be32(list, (uint32_t)ck.len);
            buf_put(list, ck.data, ck.len);
        }
        if (rv.patient_number != number) continue; /* the record's versions of another patient stay */
        if ((rc = erase_version(w, c, &k, &rv, out))) break;
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    mdb_cursor_close(c);
    for (size_t at = 0; !rc && at < gone.len;) {
        uint32_t n = ms_get_be32(gone.data + at);
        const char *key = gone.data + at + 4;
        at += 4 + n;
        bool shared = false;
        for (size_t j = 0; j < kept.len && !shared;) {
            uint32_t m = ms_get_be32(kept.data + j);
            shared = m == n && memcmp(kept.data + j + 4, key, n) == 0;
            j += 4 + m;
        }
        MDB_val dk = st_val(key, n);
        if (!shared && (rc = mdb_del(w->txn, w->s->dbi[DB_CHILDREN], &dk, NULL)) == MDB_NOTFOUND) rc = 0;
    }
    buf_free(&prefix);
    buf_free(&ck);
    buf_free(&gone);
    buf_free(&kept);
    return rc;
}

/* Delete every key of db that begins with prefix; *n counts them. */
static int delete_prefix(store_write *w, int db, const void *prefix, size_t len, uint64_t *n)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, w->s->dbi[db], &c);
    if (rc) return rc;
    MDB_val k = st_val(prefix, len), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT)) {
        if (k.mv_size < len || memcmp(k.mv_data, prefix, len) != 0) break;
        if ((rc = mdb_cursor_del(c, 0))) break;
        if (n) (*n)++;
    }
    if (rc == MDB_NOTFOUND || rc == EINVAL) rc = 0; /* (GET_CURRENT past the last key after a delete) */
    mdb_cursor_close(c);
    return rc;
}

/* The distinct record ids of a patient's records index. */
typedef struct {
    char **rids;
    size_t *lens, n, cap;
} record_ids;

static bool take_record_id(void *ctx, const plog_entry *en)
{
    record_ids *ids = ctx;
    for (size_t i = 0; i < ids->n; i++)
        if (ids->lens[i] == en->len && memcmp(ids->rids[i], en->data, en->len) == 0) return true;
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 16;
        ids->rids = ms_realloc(ids->rids, sizeof *ids->rids * ids->cap);
        ids->lens = ms_realloc(ids->lens, sizeof *ids->lens * ids->cap);
    }
    ids->rids[ids->n] = ms_strndup(en->data, en->len);
    ids->lens[ids->n++] = en->len;
    return true;
}

static void record_ids_free(record_ids *ids)
{
    for (size_t i = 0; i < ids->n; i++)
        free(ids->rids[i]);
    free(ids->rids);
    free(ids->lens);
}

ms_code store_patient_erase(store_write *w, const patient_id *pid, erase_report *out, ms_err *e)
{
    memset(out, 0, sizeof *out);
    uint64_t number;
    if (!store_patient_number(w->s, pid, &number)) return ms_fail(e, MS_ENOTFOUND, "patient not found");
    bool live;
    ms_code code = st_ident_erase(w, number, pid, &live, e);
    if (code != MS_OK) return code;
    if (!live) {
        /* already erased (idempotent), or never there */
        store_read rd = {.s = w->s, .txn = w->txn};
        bool erased;
        if ((code = store_patient_erased(&rd, pid, &out->mark, &erased, e)) != MS_OK) return code;
        if (!erased) return ms_fail(e, MS_ENOTFOUND, "patient not found");
        out->already = true;
        return MS_OK;
    }
    out->mark = (erase_mark){w->now, w->s->commit_pos + 1};
    /* the records: every version of every record the patient ever had */
    record_ids ids = {0};
    if ((code = st_patient_records_w(w, number, take_record_id, &ids, e)) != MS_OK) {
        record_ids_free(&ids);
        return code;
    }
    int rc = 0;
    for (size_t i = 0; i < ids.n && !rc; i++)
        rc = erase_record(w, ids.rids[i], ids.lens[i], number, out);
    out->records = ids.n;
    record_ids_free(&ids);
    /* the patient's versions, records index and public copies: the keyed ones of a store from before the
     * patient log, then the log's */
    unsigned char rp[9], vp[9], pp[14];
    st_patient_prefix(rp, number, 'r');
    st_patient_prefix(vp, number, 'v');
    if (!rc) rc = delete_prefix(w, DB_PATIENT, rp, 9, NULL);
    if (!rc) rc = delete_prefix(w, DB_PATIENT, vp, 9, &out->patient_versions);
    uint64_t logged = 0; /* the patient log's entries (versions, records index, public copies), then its mark */
    if (!rc) rc = st_plog_erase(w, number, &logged);
    out->patient_versions += logged;
    const st_schema_versions *sv = st_write_sv(w);
    uint32_t versions[2] = {sv->in_force, sv->target};
    for (int i = 0; i < 2 && !rc; i++)
        if (versions[i]) rc = delete_prefix(w, DB_PUBLIC, pp, st_public_patient_prefix(pp, versions[i], number), NULL);
    uint64_t erasures = 0; /* a re-projection step read before this commit must not write copies of it back */
    if (!rc) rc = st_meta_get_u64(w->txn, w->s->dbi[DB_META], ST_META_ERASURES, &erasures);
    if (!rc) rc = st_meta_put_u64(w->txn, w->s->dbi[DB_META], ST_META_ERASURES, erasures + 1);
    if (rc) return st_mdb_fail(e, rc, "erase");
    st_log_add(w, 'e', pid->b, 16, 0);
    return MS_OK;
}

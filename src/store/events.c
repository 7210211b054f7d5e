/*
 * events.c - the event log of the notifications and the named definitions (rules, webhook subscriptions)
 * that drive them: two sub-databases the store keeps without giving their bytes a meaning.
 *
 * DESIGN: the event log is keyed be64(seq), appended with MDB_APPEND by one follower of the commit log; the
 * follower's position in the commit log ("sink:" name in meta, as every sink's) is written in the same LMDB
 * transaction as the entries it produced, so a crash leaves both or neither: the follower resumes after
 * the position saved with its last entries and never writes an entry twice or skips one. The next seq is
 * checked against the log's last key inside that transaction (a second appender, or a caller that lost
 * count, gets MS_ECONFLICT and writes nothing). Definitions are keyed kind NUL name and written inside a
 * store_write, so that a rule or a subscription and the audit entry of its change commit together.
 *
 * Contract: store.h ("The event log and named definitions"). Must never: renumber or rewrite an entry,
 * write entries without the position that produced them, put a stored value in an error message.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <stdio.h>
#include <string.h>

#define NAME_MAX_BYTES 255
#define EVENTS_HIGH "events:high"  /* meta: the highest seq ever appended, once entries were deleted */
#define EVENTS_OWED "events:owed:" /* meta: + a patient id's 16 bytes: a tombstone owed to the events topic */
#define OWED_PREFIX (sizeof EVENTS_OWED - 1)

static MDB_val owed_key(unsigned char kb[OWED_PREFIX + 16], const patient_id *pid)
{
    memcpy(kb, EVENTS_OWED, OWED_PREFIX);
    memcpy(kb + OWED_PREFIX, pid->b, 16);
    return st_val(kb, OWED_PREFIX + 16);
}

/* ---- the event log ---- */

static int last_seq(MDB_txn *txn, MDB_dbi dbi, uint64_t *seq)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return rc;
    MDB_val k, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    *seq = 0;
    if (rc == 0 && k.mv_size == 8) *seq = ms_get_be64(k.mv_data);
    if (rc == 0 && k.mv_size != 8) rc = MDB_CORRUPTED;
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

ms_code store_events_append(store *s, uint64_t first_seq, const store_bytes *entries, size_t n, const char *sink,
                            uint64_t pos, ms_err *e)
{
    uint64_t none;
    return store_events_delete(s, first_seq, entries, n, NULL, NULL, NULL, 0, sink, pos, &none, e);
}

ms_code store_events_last(store_read *r, uint64_t *seq, ms_err *e)
{
    *seq = 0;
    if (r->s->absent[DB_EVENTS]) return MS_OK;
    int rc = last_seq(r->txn, r->s->dbi[DB_EVENTS], seq);
    uint64_t high = 0;
    if (!rc) rc = st_meta_get_u64(r->txn, r->s->dbi[DB_META], EVENTS_HIGH, &high);
    if (high > *seq) *seq = high;
    return rc ? st_mdb_fail(e, rc, "event log") : MS_OK;
}

ms_code store_events_delete(store *s, uint64_t first_seq, const store_bytes *entries, size_t n, store_event_fn drop,
                            void *ctx, const patient_id *owed, size_t nowed, const char *sink, uint64_t pos,
                            uint64_t *deleted, ms_err *e)
{
    *deleted = 0;
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: event log: the store is open read-only");
    for (size_t i = 0; i < n; i++)
        if (!entries[i].len) return ms_fail(e, MS_EINVAL, "store: event log: an empty entry");
    char key[128];
    snprintf(key, sizeof key, "sink:%s", sink);
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "event log begin");
    uint64_t last = 0, high = 0;
    MDB_cursor *c = NULL;
    if (!(rc = last_seq(txn, s->dbi[DB_EVENTS], &last)) &&
        !(rc = st_meta_get_u64(txn, s->dbi[DB_META], EVENTS_HIGH, &high))) {
        uint64_t next = (high > last ? high : last) + 1;
        if (n && first_seq != next) {
            mdb_txn_abort(txn);
            return ms_fail(e, MS_ECONFLICT, "store: event log: next entry is %llu, not %llu", (unsigned long long)next,
                           (unsigned long long)first_seq);
        }
        for (size_t i = 0; i < n && !rc; i++) {
            unsigned char kb[8];
            ms_set_be64(kb, first_seq + i);
            MDB_val k = st_val(kb, 8), v = st_val(entries[i].data, entries[i].len);
            rc = mdb_put(txn, s->dbi[DB_EVENTS], &k, &v, MDB_APPEND);
        }
        if (n) last = first_seq + n - 1;
        if (high > last) last = high;
        if (!rc && drop) rc = mdb_cursor_open(txn, s->dbi[DB_EVENTS], &c);
    }
    if (c) {
        MDB_val k, v;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size != 8) {
                rc = MDB_CORRUPTED;
                break;
            }
            if (!drop(ctx, ms_get_be64(k.mv_data), v.mv_data, v.mv_size)) continue;
            if ((rc = mdb_cursor_del(c, 0))) break;
            (*deleted)++;
        }
        if (rc == MDB_NOTFOUND) rc = 0;
        mdb_cursor_close(c);
    }
    /* the seqs deleted from the end stay taken: the next entry is still the highest + 1 */
    if (!rc && drop && last > high) rc = st_meta_put_u64(txn, s->dbi[DB_META], EVENTS_HIGH, last);
    for (size_t i = 0; i < nowed && !rc; i++) {
        unsigned char kb[OWED_PREFIX + 16];
        MDB_val k = owed_key(kb, &owed[i]), v = st_val("", 0);
        rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0);
    }
    if (!rc) rc = st_meta_put_u64(txn, s->dbi[DB_META], key, pos);
    if (rc) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "event log delete");
    }
    rc = mdb_txn_commit(txn);
    return rc ? st_write_fail(s, e, rc, "event log commit") : MS_OK;
}

ms_code store_events_owed(store_read *r, store_owed_fn fn, void *ctx, ms_err *e)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_META], &c);
    if (rc) return st_mdb_fail(e, rc, "events topic tombstones");
    MDB_val k = st_val(EVENTS_OWED, OWED_PREFIX), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != OWED_PREFIX + 16 || memcmp(k.mv_data, EVENTS_OWED, OWED_PREFIX) != 0) break;
        patient_id pid;
        memcpy(pid.b, (const char *)k.mv_data + OWED_PREFIX, 16);
        if (!fn(ctx, &pid)) break;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, "events topic tombstones") : MS_OK;
}

ms_code store_events_owed_done(store *s, const patient_id *pid, ms_err *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "events topic tombstone begin");
    unsigned char kb[OWED_PREFIX + 16];
    MDB_val k = owed_key(kb, pid);
    rc = mdb_del(txn, s->dbi[DB_META], &k, NULL);
    if (rc && rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "events topic tombstone");
    }
    rc = mdb_txn_commit(txn);
    return rc ? st_write_fail(s, e, rc, "events topic tombstone commit") : MS_OK;
}

ms_code store_events_scan(store_read *r, uint64_t after, store_event_fn fn, void *ctx, ms_err *e)
{
    if (r->s->absent[DB_EVENTS]) return MS_OK;
    int rc = st_seq_scan(r->txn, r->s->dbi[DB_EVENTS], after, fn, ctx);
    return rc ? st_mdb_fail(e, rc, "event log") : MS_OK;
}

/* ---- definitions: kind NUL name -> bytes ---- */

static bool definition_key(buf *k, const char *kind, const char *name, ms_err *e)
{
    size_t kl = strlen(kind), nl = name ? strlen(name) : 0;
    if (!kl || kl > NAME_MAX_BYTES || (name && (!nl || nl > NAME_MAX_BYTES))) {
        ms_fail(e, MS_EINVAL, "store: a definition's kind and name are 1-%d bytes", NAME_MAX_BYTES);
        return false;
    }
    k->len = 0;
    buf_put(k, kind, kl + 1); /* with its NUL */
    if (name) buf_put(k, name, nl);
    return true;
}

ms_code store_definition_put(store_write *w, const char *kind, const char *name, const void *v, size_t n, ms_err *e)
{
    if (!definition_key(&w->key, kind, name, e)) return MS_EINVAL;
    MDB_val k = st_val(w->key.data, w->key.len), mv = st_val(v, n);
    int rc = mdb_put(w->txn, w->s->dbi[DB_DEFINITIONS], &k, &mv, 0);
    return rc ? st_write_fail(w->s, e, rc, "definition") : MS_OK;
}

ms_code store_definition_delete(store_write *w, const char *kind, const char *name, bool *found, ms_err *e)
{
    if (found) *found = false;
    if (!definition_key(&w->key, kind, name, e)) return MS_EINVAL;
    MDB_val k = st_val(w->key.data, w->key.len);
    int rc = mdb_del(w->txn, w->s->dbi[DB_DEFINITIONS], &k, NULL);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_write_fail(w->s, e, rc, "definition");
    if (found) *found = true;
    return MS_OK;
}

ms_code store_definitions_list(store_read *r, const char *kind, store_definition_fn fn, void *ctx, ms_err *e)
{
    if (r->s->absent[DB_DEFINITIONS]) return MS_OK;
    buf prefix = {0};
    if (!definition_key(&prefix, kind, NULL, e)) return MS_EINVAL;
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_DEFINITIONS], &c);
    if (rc) {
        buf_free(&prefix);
        return st_mdb_fail(e, rc, "definitions");
    }
    MDB_val k = st_val(prefix.data, prefix.len), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= prefix.len || memcmp(k.mv_data, prefix.data, prefix.len) != 0) break;
        if (!fn(ctx, (const char *)k.mv_data + prefix.len, k.mv_size - prefix.len, v.mv_data, v.mv_size)) break;
    }
    mdb_cursor_close(c);
    buf_free(&prefix);
    return rc == 0 || rc == MDB_NOTFOUND ? MS_OK : st_mdb_fail(e, rc, "definitions");
}

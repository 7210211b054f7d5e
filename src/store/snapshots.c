/*
 * snapshots.c - named instants: POST /v1/snapshots gives a name to "now", and any read then accepts the
 * name as its as_of.
 *
 * DESIGN: the instant is taken inside LMDB's writer lock (a write transaction of its own) as the later of
 * the clock and the last instant handed out plus one, and recorded as meta "last_commit", so it falls
 * strictly between two commits: every commit before it has an earlier valid_from, every later one a
 * later valid_from. A read as of it therefore sees exactly the commits before it, forever.
 *
 * Contract: store.h ("Snapshots"). Any thread (a request thread): LMDB's writer lock serializes it with
 * the writer's commits. Must never: reuse a name (MDB_NOOVERWRITE: MS_ECONFLICT), hand out an instant
 * that is not after every commit so far.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <string.h>

ms_code store_snapshot_create(store *s, const char *id, int64_t *as_of_out, ms_err *e)
{
    /* Inside LMDB's writer lock, so the instant falls strictly between two commits: every commit before
     * it has an earlier valid_from, every later one a later valid_from. */
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin");
    int64_t now = ms_now_us();
    int64_t as_of = now > s->last_commit ? now : s->last_commit + 1;
    unsigned char b[8];
    ms_set_be64(b, (uint64_t)as_of);
    MDB_val k = st_val(id, strlen(id)), v = st_val(b, 8);
    rc = mdb_put(txn, s->dbi[DB_SNAPSHOT], &k, &v, MDB_NOOVERWRITE);
    if (rc) {
        mdb_txn_abort(txn);
        return st_mdb_fail(e, rc, "snapshot insert");
    }
    if ((rc = st_meta_put_u64(txn, s->dbi[DB_META], "last_commit", (uint64_t)as_of))) {
        mdb_txn_abort(txn);
        return st_mdb_fail(e, rc, "snapshot insert");
    }
    s->last_commit = as_of; /* still under the writer lock (invariant 4); a failed commit only wastes it */
    rc = mdb_txn_commit(txn);
    if (rc) return st_write_fail(s, e, rc, "snapshot commit");
    *as_of_out = as_of;
    return MS_OK;
}

ms_code store_snapshot_get(store_read *r, const char *id, int64_t *as_of, bool *found, ms_err *e)
{
    MDB_val k = st_val(id, strlen(id)), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_SNAPSHOT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_mdb_fail(e, rc, "snapshot lookup");
    if (v.mv_size != 8) return ms_fail(e, MS_ECORRUPT, "store: bad snapshot entry");
    *as_of = (int64_t)ms_get_be64(v.mv_data);
    *found = true;
    return MS_OK;
}

/*
 * plog_compact.c - compaction of the patient log (issue 17, item 4; README.md, "The patient log").
 *
 * What there is to compact: the log only ever takes new entries, and everything in it is history (patient
 * versions, the records index) except one kind: the public copies ('P') made under a schema version that
 * is no longer in force (a re-projection's target copies are keyed, not in the log). They stop being read
 * the moment the switch to the next version commits, and they are the only entries that can go. A compaction step
 * rewrites such an entry in place as its stub: the same sequence number, patient number, back-pointers, schema version,
 * valid_from and version, with no fields. The chains therefore stay whole (a walk still steps through the
 * stub, and skips it as it skipped the copy: its schema version is not the one asked for), and LMDB reuses
 * the bytes freed on its pages for later appends.
 *
 * When: meta "plog_compact_at" (be64: the next sequence number to look at) exists while there is work.
 * schemas.c sets it to 1 in the transaction of a switch, so a compaction under way starts over whenever
 * another version is retired; the step that reaches the log's end deletes it.
 *
 * Contract: store.h (store_plog_compact_step). Each step is one short write transaction of its own (at most
 * max entries looked at), so the ingest writer waits at most one step for LMDB's writer lock, and a step
 * moves the cursor in the same transaction as its rewrites: a crash resumes from the last step; a step
 * done again finds stubs and rewrites nothing.
 *
 * Must never: touch an entry of another kind, a copy under the version in force or the target, an entry's
 * sequence number or back-pointers (the chains are history), or hold the writer lock past one step.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <string.h>

#define META_COMPACT "plog_compact_at"

int st_plog_compact_from_start(MDB_txn *txn, MDB_dbi meta) { return st_meta_put_u64(txn, meta, META_COMPACT, 1); }

/* The rewrites of one step: be64 seq, be32 len, the stub's bytes; gathered under the cursor, put after it. */
static int rewrite(MDB_txn *txn, MDB_dbi plog, const buf *stubs)
{
    for (size_t at = 0; at < stubs->len;) {
        uint32_t len = ms_get_be32(stubs->data + at + 8);
        MDB_val k = st_val(stubs->data + at, 8), v = st_val(stubs->data + at + 12, len);
        int rc = mdb_put(txn, plog, &k, &v, 0);
        if (rc) return rc;
        at += 12 + len;
    }
    return 0;
}

ms_code store_plog_compact_step(store *s, uint32_t max, bool *finished, store_compact_stats *st, ms_err *e)
{
    *finished = false;
    memset(st, 0, sizeof *st);
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: log compaction: the store is open read-only");
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "log compaction");
    MDB_dbi meta = s->dbi[DB_META];
    uint64_t at = 0, tgt = 0;
    rc = st_meta_get_u64(txn, meta, META_COMPACT, &at);
    if (!rc && at == 0) { /* nothing to do */
        mdb_txn_abort(txn);
        *finished = true;
        return MS_OK;
    }
    uint32_t in_force = st_meta_sv(txn, meta);
    if (!rc) rc = st_meta_get_u64(txn, meta, ST_META_TARGET, &tgt);
    MDB_cursor *c = NULL;
    if (!rc) rc = mdb_cursor_open(txn, s->dbi[DB_PLOG], &c);
    buf stubs = {0}, one = {0};
    unsigned char kb[8];
    ms_set_be64(kb, at);
    MDB_val k = st_val(kb, 8), v;
    uint64_t next = at;
    st->from = at;
    bool end = false;
    uint32_t looked = 0;
    for (rc = rc ? rc : mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && looked < max;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT), looked++) {
        if (k.mv_size != 8) {
            rc = MDB_CORRUPTED;
            break;
        }
        uint64_t seq = ms_get_be64(k.mv_data);
        plog_entry en;
        if (!st_plog_decode(seq, &v, &en)) {
            rc = MDB_CORRUPTED;
            break;
        }
        next = seq + 1;
        if (en.tag != 'P' || en.len == 0 || en.sv == in_force || en.sv == tgt) continue;
        en.data = NULL, en.len = 0;
        st_plog_encode(&one, &en);
        buf_put(&stubs, k.mv_data, 8);
        buf_put_be32(&stubs, (uint32_t)one.len);
        buf_put(&stubs, one.data, one.len);
        st->stubbed++;
        st->bytes += v.mv_size - one.len;
    }
    st->looked = looked;
    if (rc == MDB_NOTFOUND) rc = 0, end = true;
    if (c) mdb_cursor_close(c);
    if (!rc) rc = rewrite(txn, s->dbi[DB_PLOG], &stubs);
    if (!rc && end) {
        MDB_val mk = st_val(META_COMPACT, strlen(META_COMPACT));
        rc = mdb_del(txn, meta, &mk, NULL);
    } else if (!rc) {
        rc = st_meta_put_u64(txn, meta, META_COMPACT, next);
    }
    buf_free(&stubs);
    buf_free(&one);
    if (rc) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "log compaction");
    }
    rc = mdb_txn_commit(txn);
    if (rc) return st_write_fail(s, e, rc, "log compaction");
    *finished = end;
    return MS_OK;
}

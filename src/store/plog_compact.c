/*
 * plog_compact.c - compaction of the patient log (issue 17, item 4; README.md, "The patient log").
 *
 * What there is to compact: the log only ever takes new entries, and everything in it is history (patient
 * versions, the records index, erasure marks) except one kind: the public copies ('P') made under a
 * schema version that is no longer in force (a re-projection's target copies are keyed, not in the log).
 * They stop being read the moment the switch to the next version commits. Dropping them from pages they
 * share with live entries would free no page, though (LMDB frees a page only once it is nearly empty, and
 * appends only ever fill the last one), so the compaction moves: it rewrites the log's old part densely.
 *
 * How: a step takes a window of sequence numbers from the stored cursor and
 *   - moves every entry of plog before the checkpoint floor (meta "plog_floor") into the sub-database
 *     plogc under the same sequence number (appends, so its pages are full), leaving out the retired
 *     copies, and deletes them from plog (whole pages go back to LMDB's free list for plog's appends);
 *   - in plogc (a compaction after an earlier one), deletes the retired copies where they are;
 *   - at or past the floor, makes the retired copies stubs where they are (the entries there are what a
 *     restart replays to rebuild the heads, so they stay in plog; a later compaction moves them).
 * A retired copy that is its patient's newest entry (its head: reads start there, and the next write reads
 * its pointers) is kept as its stub (no fields; the same sequence number, patient, back-pointers, schema
 * version, valid_from and version) instead of being dropped; so is every retired copy once the pass has
 * met the floor (meta "plog_compact_keep"): with ingest going on, the floor moves up behind the cursor,
 * and a copy dropped after an older one was kept would cut the chain above the kept one (an erasure walks
 * the chain to delete it). So along every chain the dropped copies are the oldest.
 *
 * Why reads stay whole: the same sequence number, so every pointer still names its entry; st_plog_get
 * looks in plog, then plogc. A walk of public copies that meets a dropped one stops there, and that is
 * right: copies go to the log only under the version in force, and versions in force only grow, so along
 * one patient's chain (newest first) the versions never grow, and every copy past a retired one is retired
 * too. Versions, records-index entries and marks are never dropped. Recovery replays from the floor, and
 * nothing at or after the floor moves, so it reads plog alone; a read-only store catching up reads both.
 *
 * When: meta "plog_compact_at" (be64: the next sequence number to look at) and "plog_compact_to" (the log's
 * end at the switch: entries after it were made under the new version) exist while there is work.
 * schemas.c sets them in the switch's transaction, so a compaction under way starts over whenever
 * another version is retired; the step that reaches the end deletes them.
 *
 * Contract: store.h (store_plog_compact_step). Each step is one short write transaction of its own (a
 * window of at most max sequence numbers), so the ingest writer waits at most one step for LMDB's writer
 * lock; the step moves the cursor in the same transaction as its changes, so a crash resumes from the last
 * step, and a step done again finds its work done.
 *
 * Must never: drop or change an entry other than a retired public copy, drop a patient's head, change a
 * sequence number or a pointer, move an entry at or past the floor, or hold the writer lock past one step.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <string.h>

#define META_AT "plog_compact_at"
#define META_TO "plog_compact_to"
#define META_KEEP "plog_compact_keep" /* be64 1: this pass has reached the floor; it drops nothing more */

int st_plog_compact_from_start(store *s, MDB_txn *txn)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t end = 0;
    int rc = mdb_cursor_open(txn, s->dbi[DB_PLOG], &c);
    if (rc) return rc;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) end = ms_get_be64(k.mv_data);
    mdb_cursor_close(c);
    rc = st_meta_put_u64(txn, s->dbi[DB_META], META_AT, 1);
    if (!rc) rc = st_meta_put_u64(txn, s->dbi[DB_META], META_KEEP, 0);
    return rc ? rc : st_meta_put_u64(txn, s->dbi[DB_META], META_TO, end + 1);
}

ms_code store_plog_compact_begin(store *s, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: log compaction: the store is open read-only");
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "log compaction");
    rc = st_plog_compact_from_start(s, txn);
    if (rc) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "log compaction");
    }
    rc = mdb_txn_commit(txn);
    return rc ? st_write_fail(s, e, rc, "log compaction") : MS_OK;
}

/* What a step does, gathered under its cursors and done after them: puts into a sub-database and deletes. */
typedef struct {
    buf puts; /* per entry: be64 seq, be32 len, the value */
    buf dels; /* be64 seqs */
} step_ops;

static void op_put(step_ops *o, const void *key, const void *val, size_t len)
{
    buf_put(&o->puts, key, 8);
    buf_put_be32(&o->puts, (uint32_t)len);
    buf_put(&o->puts, val, len);
}

static int apply(MDB_txn *txn, MDB_dbi put_db, unsigned flags, MDB_dbi del_db, const step_ops *o)
{
    int rc = 0;
    for (size_t at = 0; at < o->dels.len && !rc; at += 8) {
        MDB_val k = st_val(o->dels.data + at, 8);
        rc = mdb_del(txn, del_db, &k, NULL);
    }
    for (size_t at = 0; at < o->puts.len && !rc;) {
        uint32_t len = ms_get_be32(o->puts.data + at + 8);
        MDB_val k = st_val(o->puts.data + at, 8), v = st_val(o->puts.data + at + 12, len);
        rc = mdb_put(txn, put_db, &k, &v, flags);
        /* an entry that stayed behind the floor in an earlier compaction sorts before plogc's last key */
        if (rc == MDB_KEYEXIST && (flags & MDB_APPEND)) rc = mdb_put(txn, put_db, &k, &v, 0);
        at += 12 + len;
    }
    return rc;
}

typedef struct {
    store *s;
    uint32_t in_force, target;
    uint64_t floor, hi;
    bool keep; /* drop nothing: make stubs (the pass reached the floor in an earlier window) */
    store_compact_stats *st;
    buf stub;
    step_ops moves; /* plog -> plogc */
    step_ops here;  /* stubs in place in plog */
    step_ops old;   /* in plogc: deletes and stubs */
} step_ctx;

/* Walk db's entries of [from, x->hi); fn decides each. */
static int walk(step_ctx *x, MDB_txn *txn, int db, uint64_t from,
                void (*fn)(step_ctx *x, const MDB_val *k, const MDB_val *v, const plog_entry *en))
{
    if (x->s->absent[db]) return 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, x->s->dbi[db], &c);
    if (rc) return rc;
    unsigned char kb[8];
    ms_set_be64(kb, from);
    MDB_val k = st_val(kb, 8), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        plog_entry en;
        if (k.mv_size != 8 || !st_plog_decode(ms_get_be64(k.mv_data), &v, &en)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (en.seq >= x->hi) break;
        x->st->looked++;
        fn(x, &k, &v, &en);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static bool retired(const step_ctx *x, const plog_entry *en)
{
    return en->tag == 'P' && en->sv != x->in_force && en->sv != x->target;
}

/* The stub of a copy (into x->stub): the same entry without its fields. */
static const buf *stub_of(step_ctx *x, const plog_entry *en)
{
    plog_entry stub = *en;
    stub.data = NULL, stub.len = 0;
    st_plog_encode(&x->stub, &stub);
    return &x->stub;
}

/* The stub of a retired copy when it is its patient's head or the pass drops nothing more, else NULL: drop
 * it. Heads only move forward, and only after a commit; this transaction holds the writer lock, so a head
 * read here names this entry or a newer one, never an older. */
static const buf *keep_as(step_ctx *x, const plog_entry *en)
{
    if (!x->keep && st_plog_head(x->s, en->number) != en->seq) return NULL;
    return stub_of(x, en);
}

/* plog: before the floor, move (a retired copy: dropped, or its stub if a head); after it, stub in place. */
static void in_plog(step_ctx *x, const MDB_val *k, const MDB_val *v, const plog_entry *en)
{
    step_ops *o = &x->moves;
    bool gone = retired(x, en);
    if (en->seq < x->floor) {
        const buf *stub = gone ? keep_as(x, en) : NULL;
        buf_put(&o->dels, k->mv_data, 8);
        if (!gone)
            op_put(o, k->mv_data, v->mv_data, v->mv_size), x->st->moved++;
        else if (stub)
            op_put(o, k->mv_data, stub->data, stub->len), x->st->moved++, x->st->stubbed++;
        else
            x->st->dropped++;
        if (gone) x->st->bytes += v->mv_size - (stub ? stub->len : 0);
    } else if (gone && en->len) {
        const buf *stub = stub_of(x, en);
        op_put(&x->here, k->mv_data, stub->data, stub->len);
        x->st->stubbed++;
        x->st->bytes += v->mv_size - stub->len;
    }
}

/* plogc (entries an earlier compaction moved): a retired copy goes where it is, or becomes a stub if a head. */
static void in_plogc(step_ctx *x, const MDB_val *k, const MDB_val *v, const plog_entry *en)
{
    step_ops *o = &x->old;
    if (!retired(x, en)) return;
    const buf *stub = keep_as(x, en);
    if (!stub) {
        buf_put(&o->dels, k->mv_data, 8);
        x->st->dropped++;
        x->st->bytes += v->mv_size;
    } else if (en->len) {
        op_put(o, k->mv_data, stub->data, stub->len);
        x->st->stubbed++;
        x->st->bytes += v->mv_size - stub->len;
    }
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
    uint64_t at = 0, to = 0, tgt = 0;
    step_ctx x = {.s = s, .st = st};
    rc = st_meta_get_u64(txn, meta, META_AT, &at);
    if (!rc && at == 0) { /* nothing to do */
        mdb_txn_abort(txn);
        *finished = true;
        return MS_OK;
    }
    if (!rc) rc = st_meta_get_u64(txn, meta, META_TO, &to);
    if (!rc) rc = st_meta_get_u64(txn, meta, ST_META_TARGET, &tgt);
    if (!rc) rc = st_meta_get_u64(txn, meta, ST_META_PLOG_FLOOR, &x.floor);
    uint64_t keep = 0;
    if (!rc) rc = st_meta_get_u64(txn, meta, META_KEEP, &keep);
    x.keep = keep != 0;
    x.in_force = st_meta_sv(txn, meta);
    x.target = (uint32_t)tgt;
    x.hi = to > at && to - at > max ? at + (max ? max : 1) : to;
    st->from = at;
    /* gather first (cursors see the pages as they are), then change */
    if (!rc) rc = walk(&x, txn, DB_PLOGC, at, in_plogc);
    if (!rc) rc = walk(&x, txn, DB_PLOG, at, in_plog);
    if (!rc) rc = apply(txn, s->dbi[DB_PLOGC], 0, s->dbi[DB_PLOGC], &x.old);
    if (!rc) rc = apply(txn, s->dbi[DB_PLOG], 0, s->dbi[DB_PLOG], &x.here);
    if (!rc) rc = apply(txn, s->dbi[DB_PLOGC], MDB_APPEND, s->dbi[DB_PLOG], &x.moves);
    bool end = x.hi >= to;
    if (!rc && end) {
        const char *keys[] = {META_AT, META_TO, META_KEEP};
        for (int i = 0; i < 3 && !rc; i++) {
            MDB_val k = st_val(keys[i], strlen(keys[i]));
            rc = mdb_del(txn, meta, &k, NULL);
            if (rc == MDB_NOTFOUND) rc = 0;
        }
    } else if (!rc) {
        rc = st_meta_put_u64(txn, meta, META_AT, x.hi);
        /* past the floor, copies stay (stubs): from here on none is dropped, so that along every chain the
         * dropped copies stay the oldest ones (a walk that meets one stops) */
        if (!rc && !x.keep && x.hi > x.floor) rc = st_meta_put_u64(txn, meta, META_KEEP, 1);
    }
    step_ops *all[3] = {&x.moves, &x.here, &x.old};
    for (int i = 0; i < 3; i++)
        buf_free(&all[i]->puts), buf_free(&all[i]->dels);
    buf_free(&x.stub);
    if (rc) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "log compaction");
    }
    rc = mdb_txn_commit(txn);
    if (rc) return st_write_fail(s, e, rc, "log compaction");
    *finished = end;
    return MS_OK;
}

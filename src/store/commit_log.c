/*
 * commit_log.c - the commit log and the positions kept against it: one entry per commit naming every
 * record version and patient version it wrote (what the sinks follow), each sink's position in that log,
 * and each source's position in its own input (the next offset to read, per partition).
 *
 * DESIGN: positions are 1, 2, ... one per committed store_write, keyed be64 so the log is appended. The
 * entry is built on the store_write as versions are put (st_log_add) and written at commit, in the same
 * LMDB transaction as the versions it names, so a sink that reads entry N finds every version of it. A
 * source position is written inside the store_write of the batch that consumed up to it (exactly once:
 * the batch and its position commit together); a sink position is a small write of its own, after the
 * sink has delivered (at least once downstream; the sinks make delivery idempotent).
 *
 * Contract: store.h ("The commit log and positions"). Must never: write a log entry outside its commit,
 * give a source name a meaning (they are opaque; README.md on the key's historical prefix).
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- the commit log: one entry per commit, be64(position) -> be64 commit time, be32 n, then n items of
 * kind (1), be16 id length, id, be32 version ---- */

void st_log_begin(store_write *w)
{
    w->log.len = 0;
    w->nlog = 0;
    buf_put_be64(&w->log, (uint64_t)w->now);
    buf_put_be32(&w->log, 0); /* item count, patched by st_log_put */
}

void st_log_add(store_write *w, char kind, const void *id, size_t id_len, uint32_t version)
{
    buf_putc(&w->log, kind);
    buf_put_be16(&w->log, (uint16_t)id_len);
    buf_put(&w->log, id, id_len);
    buf_put_be32(&w->log, version);
    w->nlog++;
}

int st_log_put(store_write *w, uint64_t pos)
{
    ms_set_be32(w->log.data + 8, w->nlog);
    unsigned char kb[8];
    ms_set_be64(kb, pos);
    MDB_val k = st_val(kb, 8), v = st_val(w->log.data, w->log.len);
    return mdb_put(w->txn, w->s->dbi[DB_LOG], &k, &v, 0);
}

ms_code store_log_entry(store_read *r, uint64_t pos, int64_t *commit_time, store_log_fn fn, void *ctx, bool *found,
                        ms_err *e)
{
    unsigned char kb[8];
    ms_set_be64(kb, pos);
    MDB_val k = st_val(kb, 8), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_LOG], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_mdb_fail(e, rc, "commit log");
    const unsigned char *p = v.mv_data, *end = p + v.mv_size;
    if (v.mv_size < 12) return ms_fail(e, MS_ECORRUPT, "store: bad commit log entry");
    *commit_time = (int64_t)ms_get_be64(p);
    *found = true;
    if (!fn) return MS_OK; /* the commit time only */
    uint32_t n = ms_get_be32(p + 8);
    p += 12;
    for (uint32_t i = 0; i < n; i++) {
        if (end - p < 3) return ms_fail(e, MS_ECORRUPT, "store: bad commit log entry");
        log_item it = {.kind = (char)p[0], .id_len = ms_get_be16(p + 1)};
        p += 3;
        if ((size_t)(end - p) < it.id_len + 4u) return ms_fail(e, MS_ECORRUPT, "store: bad commit log entry");
        it.id = (const char *)p;
        it.version = ms_get_be32(p + it.id_len);
        p += it.id_len + 4;
        if (!fn(ctx, &it)) break;
    }
    return MS_OK;
}

/* ---- source positions ----
 * meta key SOURCE_KEY_PREFIX source ":" partition -> be64(next). The prefix is the format's, from when
 * Kafka was the only source with positions: kept so that stores written before keep theirs. The store
 * gives it no meaning; the source names are the callers' (opaque). */
#define SOURCE_KEY_PREFIX "kafka:"

static bool source_key(char *key, size_t cap, const char *source, int32_t partition)
{
    int n = snprintf(key, cap, SOURCE_KEY_PREFIX "%s:%d", source, (int)partition);
    return n > 0 && (size_t)n < cap;
}

ms_code store_source_offset_put(store_write *w, const char *source, int32_t partition, int64_t next, ms_err *e)
{
    char key[320];
    if (!source_key(key, sizeof key, source, partition))
        return ms_fail(e, MS_EINVAL, "store: a source name of %zu bytes is too long", strlen(source));
    int rc = st_meta_put_u64(w->txn, w->s->dbi[DB_META], key, (uint64_t)next);
    return rc ? st_mdb_fail(e, rc, "source position") : MS_OK;
}

ms_code store_source_offset_get(store_read *r, const char *source, int32_t partition, int64_t *next, bool *found,
                                ms_err *e)
{
    char key[320];
    *found = false;
    if (!source_key(key, sizeof key, source, partition)) return MS_OK; /* none can have been stored */
    MDB_val k = st_val(key, strlen(key)), v;
    int rc = mdb_get(r->txn, r->s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc || v.mv_size != 8)
        return rc ? st_mdb_fail(e, rc, "source position") : ms_fail(e, MS_ECORRUPT, "store: bad source position");
    *next = (int64_t)ms_get_be64(v.mv_data);
    *found = true;
    return MS_OK;
}

/* ---- sink positions: meta key "sink:" sink -> be64(the last commit position shipped) ---- */

ms_code store_sink_position(store_read *r, const char *sink, uint64_t *pos, ms_err *e)
{
    char key[128];
    snprintf(key, sizeof key, "sink:%s", sink);
    int rc = st_meta_get_u64(r->txn, r->s->dbi[DB_META], key, pos);
    return rc ? st_mdb_fail(e, rc, "sink position") : MS_OK;
}

ms_code store_sink_position_set(store *s, const char *sink, uint64_t pos, ms_err *e)
{
    char key[128];
    unsigned char v[8];
    snprintf(key, sizeof key, "sink:%s", sink);
    ms_set_be64(v, pos);
    return st_small_write(s, DB_META, key, strlen(key), v, 8, 0, false, "sink position", e);
}

ms_code store_sink_positions(store_read *r, store_sink_fn fn, void *ctx, ms_err *e)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_META], &c);
    if (rc) return st_mdb_fail(e, rc, "sink positions");
    MDB_val k = st_val("sink:", 5), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 5 || memcmp(k.mv_data, "sink:", 5) != 0) break;
        char name[128];
        size_t n = k.mv_size - 5 < sizeof name - 1 ? k.mv_size - 5 : sizeof name - 1;
        memcpy(name, (char *)k.mv_data + 5, n);
        name[n] = 0;
        if (v.mv_size == 8 && !fn(ctx, name, ms_get_be64(v.mv_data))) break;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? st_mdb_fail(e, rc, "sink positions") : MS_OK;
}

/*
 * record_walk.c - every record, a step at a time (store_records_scan): the exports' walk over the `record`
 * sub-database in record id order, at most max_ids ids a call, each record's version current at an
 * instant handed to the caller, resumed after the last id it saw.
 *
 * DESIGN: a record's keys are record_id NUL ~valid_from ~version (codec.c), so the next record is the first
 * key at or after record_id 0x01 (ids hold no NUL), and the version current at T is the first key at or
 * after (record_id, ~T) with the id's prefix (st_seek_first_version), as in versions.c's as-of reads.
 *
 * Contract: store.h (store_records_scan). Reads only, in the caller's read transaction. Must never: skip or
 * repeat an id across calls resumed from `last`, hand over a tombstone, or decode an entry without its
 * length checks.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <string.h>

ms_code store_records_scan(store_read *r, const char *after, size_t after_len, int64_t as_of, uint32_t max_ids,
                           store_record_fn fn, void *ctx, buf *last, bool *more, ms_err *e)
{
    *more = false;
    last->len = 0;
    if (after_len > RECORD_ID_MAX) return ms_fail(e, MS_EINVAL, "record scan: a position longer than a record id");
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_RECORD], &c);
    if (rc) return st_mdb_fail(e, rc, "cursor");
    buf kb = {0};
    char rid[RECORD_ID_MAX + 1];
    size_t rl = after_len;
    if (after_len) memcpy(rid, after, after_len);
    ms_code out = MS_OK;
    uint32_t visited = 0;
    bool first = after_len == 0;
    for (;;) {
        MDB_val k, v;
        if (first) {
            rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
            first = false;
        } else {
            /* past every key of rid: rid NUL ... < rid 0x01 <= the next id (ids hold no NUL) */
            kb.len = 0;
            buf_put(&kb, rid, rl);
            buf_putc(&kb, 1);
            k = st_val(kb.data, kb.len);
            rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        }
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc) break;
        const char *nul = memchr(k.mv_data, 0, k.mv_size);
        size_t len = nul ? (size_t)(nul - (const char *)k.mv_data) : 0;
        if (!nul || len == 0 || len > RECORD_ID_MAX || k.mv_size != len + 13) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad record key");
            break;
        }
        if (visited == max_ids) {
            *more = true;
            break;
        }
        visited++;
        memcpy(rid, k.mv_data, len);
        rl = len;
        last->len = 0;
        buf_put(last, rid, rl);
        /* the version current at as_of: the first key at or after (rid, ~as_of) with rid's prefix */
        if (as_of < 0) continue;
        st_key_record(&kb, rid, rl, as_of, UINT32_MAX);
        rc = st_seek_first_version(c, &kb, rl + 1, &k, &v);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc) break;
        if (k.mv_size != rl + 13) continue;
        record_version rv;
        if (!st_record_decode(&r->s->pid_key, &k, &v, &rv)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad record entry");
            break;
        }
        rv.valid_to = -1;
        if (rv.deleted) continue;
        if (!fn(ctx, &rv)) {
            *more = true;
            break;
        }
    }
    mdb_cursor_close(c);
    buf_free(&kb);
    if (out == MS_OK && rc) out = st_mdb_fail(e, rc, "record scan");
    return out;
}

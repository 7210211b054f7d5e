/*
 * txn.c - the store's transactions and their errors, under every other file of the store: read
 * transactions, small writes outside the writer (tokens, sink positions), meta values, and LMDB's error
 * codes as ms_code values with messages (a full disk says "disk full").
 *
 * Contract: what store.h says of store_read_begin/end and the meta getters; st_* are for the store's own
 * files (store_internal.h). Never logs; never puts a stored value in a message.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

/* An EIO from an LMDB write on a file system with less than this free (or 1 % of it) is a full disk:
 * LMDB turns a short page write, which is what a full disk gives, into EIO. */
#define LOW_SPACE_BYTES ((uint64_t)64 << 20)

/* ---- errors ---- */

ms_code st_mdb_fail(ms_err *e, int rc, const char *what)
{
    if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG)
        return ms_fail(e, MS_EFULL, "store: %s: disk full (%s)", what, mdb_strerror(rc));
    ms_code code = rc == MDB_MAP_FULL                                                    ? MS_EFULL
                   : rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ? MS_ECORRUPT
                                                                                         : MS_EIO;
    return ms_fail(e, code, "store: %s: %s", what, mdb_strerror(rc));
}

ms_code st_write_fail(store *s, ms_err *e, int rc, const char *what)
{
    if (rc != EIO) return st_mdb_fail(e, rc, what);
    struct statvfs fs;
    uint64_t avail, size;
    if (s->free_bytes >= 0) {
        avail = (uint64_t)s->free_bytes;
        size = avail;
    } else if (statvfs(s->dir, &fs) == 0) {
        avail = (uint64_t)fs.f_bavail * fs.f_frsize;
        size = (uint64_t)fs.f_blocks * fs.f_frsize;
    } else {
        return st_mdb_fail(e, rc, what);
    }
    uint64_t low = size / 100 > LOW_SPACE_BYTES ? size / 100 : LOW_SPACE_BYTES;
    if (avail >= low) return st_mdb_fail(e, rc, what);
    return ms_fail(e, MS_EFULL, "store: %s: disk full (%s with %llu MiB left on the file system)", what,
                   mdb_strerror(rc), (unsigned long long)(avail >> 20));
}

/* ---- meta ---- */

int st_meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
    MDB_val k = st_val(name, strlen(name)), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        *out = ms_get_be64(v.mv_data);
    else
        *out = 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int st_meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t x)
{
    unsigned char b[8];
    ms_set_be64(b, x);
    MDB_val k = st_val(name, strlen(name)), v = st_val(b, 8);
    return mdb_put(txn, dbi, &k, &v, 0);
}

int st_seq_scan(MDB_txn *txn, MDB_dbi dbi, uint64_t after, bool (*fn)(void *ctx, uint64_t seq, const char *v, size_t n),
                void *ctx)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return rc;
    unsigned char kb[8];
    ms_set_be64(kb, after + 1);
    MDB_val k = st_val(kb, 8), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (!fn(ctx, ms_get_be64(k.mv_data), v.mv_data, v.mv_size)) {
            rc = MDB_NOTFOUND;
            break;
        }
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

ms_code st_small_write(store *s, int db, const void *key, size_t kl, const void *v, size_t vl, unsigned flags, bool del,
                       const char *what, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: %s: the store is open read-only", what);
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, what);
    MDB_val k = st_val(key, kl), mv = st_val(v, vl);
    rc = del ? mdb_del(txn, s->dbi[db], &k, NULL) : mdb_put(txn, s->dbi[db], &k, &mv, flags);
    if (rc)
        mdb_txn_abort(txn);
    else
        rc = mdb_txn_commit(txn);
    if (rc == MDB_KEYEXIST) return ms_fail(e, MS_ECONFLICT, "%s: already exists", what);
    if (rc == MDB_NOTFOUND) return ms_fail(e, MS_ENOTFOUND, "%s: not found", what);
    return rc ? st_write_fail(s, e, rc, what) : MS_OK;
}

/* ---- read transactions ---- */

ms_code store_read_begin(store *s, store_read **out, ms_err *e)
{
    store_read *r = ms_calloc(1, sizeof *r);
    r->s = s;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
    if (rc) {
        free(r);
        return st_mdb_fail(e, rc, "begin read");
    }
    st_plog_catch_up(r); /* a read-only store: a live writer's entries since the open */
    *out = r;
    return MS_OK;
}

/* How long a read waits for the write in flight to end (store_read_settle): a group commit takes milliseconds,
 * one of a full batch on a slow disk a second or two. */
#define SETTLE_WAIT_S 10

ms_code store_read_settle(store_read *r, int64_t as_of, ms_err *e)
{
    store *s = r->s;
    /* an instant still to come may yet get commits: wait until the clock has passed it (every commit from then
     * on has a later valid_from), or refuse it when it is further ahead than a clock's drift */
    int64_t ahead = as_of - ms_now_us();
    if (ahead > STORE_AS_OF_AHEAD_US)
        return ms_fail(e, MS_EINVAL,
                       "as_of is %.1f s ahead of the server's clock: an answer as of an instant still to come could "
                       "change (at most %.1f s ahead is waited for)",
                       (double)ahead / 1e6, STORE_AS_OF_AHEAD_US / 1e6);
    while (ahead >= 0) {
        int64_t us = ahead + 1;
        struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        ahead = as_of - ms_now_us();
    }
    double until = ms_mono_s() + SETTLE_WAIT_S;
    while (atomic_load(&s->writing_from) <= as_of) {
        if (ms_mono_s() > until)
            return ms_fail(e, MS_EIO, "store: a commit of that instant has been in flight for over %d s: try again",
                           SETTLE_WAIT_S);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    /* a snapshot that holds it, and every commit that ended since r began */
    mdb_txn_reset(r->txn);
    int rc = mdb_txn_renew(r->txn);
    if (rc) return st_mdb_fail(e, rc, "renew read");
    r->sv = 0;
    r->plog_end = 0;
    st_plog_catch_up(r);
    return MS_OK;
}

void store_read_end(store_read *r)
{
    if (!r) return;
    mdb_txn_abort(r->txn);
    free(r);
}

static uint64_t read_meta(store_read *r, const char *name)
{
    uint64_t x = 0;
    st_meta_get_u64(r->txn, r->s->dbi[DB_META], name, &x);
    return x;
}

int64_t store_last_commit(store_read *r) { return (int64_t)read_meta(r, "last_commit"); }
uint64_t store_patient_count(store_read *r)
{
    uint64_t created = read_meta(r, "patients_created");
    return created ? created : read_meta(r, "patients");
}
uint64_t store_commit_pos(store_read *r) { return read_meta(r, "commit_pos"); }

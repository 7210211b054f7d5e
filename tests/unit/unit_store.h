/*
 * unit_store.h - what the store-backed tests share: a store in a temporary directory (unit_store), and
 * read helpers that each open a read transaction, read one thing, close it, and fail the test on any
 * error other than "not found". And one writer
 * behind the store's back: a user entry in the format of versions before issue 9.
 */
#ifndef MS_TEST_UNIT_STORE_H
#define MS_TEST_UNIT_STORE_H

#include "unit.h"

#include "store/store.h"

#include <lmdb.h>

/* A store in a fresh temporary directory: the fixture most store-backed tests share. */
typedef struct {
    char dir[128];
    store *s;
} unit_store;

/* Open (opt NULL: defaults); false with the reason on stderr if the store does not open. */
static inline bool unit_store_open(unit_store *u, const store_options *opt)
{
    ms_err e = {0};
    unit_tmpdir(u->dir);
    if (store_open(&u->s, u->dir, opt, &e) == MS_OK) return true;
    fprintf(stderr, "unit_store_open: %s\n", e.msg);
    unit_rmtree(u->dir);
    return false;
}

/* Close and remove the directory. */
static inline void unit_store_close(unit_store *u)
{
    if (u->s) store_close(u->s);
    u->s = NULL;
    unit_rmtree(u->dir);
}

static inline store_read *unit_rbegin(store *s)
{
    store_read *r;
    ms_err e;
    if (store_read_begin(s, &r, &e) != MS_OK) fail_msg("read begin: %s", e.msg);
    return r;
}

static inline bool unit_record_at(store *s, const char *rid, int64_t as_of, record_version *rv)
{
    store_read *r = unit_rbegin(s);
    bool found = false;
    ms_err e;
    ms_code rc = store_record_at(r, rid, strlen(rid), as_of, rv, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_record_at: %s", e.msg);
    return found;
}

static inline bool unit_patient_at(store *s, arena *mem, const patient_id *pid, int64_t as_of, patient_version *pv)
{
    store_read *r = unit_rbegin(s);
    bool found = false;
    ms_err e;
    ms_code rc = store_patient_at(r, pid, as_of, pv, mem, &found, &e);
    store_read_end(r);
    if (rc != MS_OK) fail_msg("store_patient_at: %s", e.msg);
    return found;
}

/* A write transaction on sub-database db of dir's LMDB file, behind the store's back (the store must be
 * closed); unit_raw_commit commits it and closes the environment. */
static inline MDB_txn *unit_raw_begin(const char *dir, const char *db, MDB_dbi *dbi)
{
    char path[256];
    snprintf(path, sizeof path, "%s/lmdb", dir);
    MDB_env *env;
    MDB_txn *txn;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 32);
    mdb_env_set_mapsize(env, (size_t)1 << 30);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, dbi), 0);
    return txn;
}

static inline void unit_raw_commit(MDB_txn *txn)
{
    MDB_env *env = mdb_txn_env(txn);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Put one entry straight into sub-database db of dir's LMDB file, as an older version of the store wrote
 * it; the store must be closed. */
static inline void unit_write_raw_entry(const char *dir, const char *db, const void *key, size_t klen, const void *val,
                                        size_t vlen)
{
    MDB_dbi dbi;
    MDB_txn *txn = unit_raw_begin(dir, db, &dbi);
    MDB_val k = {klen, (void *)key}, mv = {vlen, (void *)val};
    assert_int_equal(mdb_put(txn, dbi, &k, &mv, 0), 0);
    unit_raw_commit(txn);
}

/* Write a user entry the way versions before issue 9 did ("role NUL hash"). */
static inline void unit_write_old_user_entry(const char *dir, const char *name, const char *role, const char *hash)
{
    char v[256];
    size_t rl = strlen(role), hl = strlen(hash);
    memcpy(v, role, rl + 1);
    memcpy(v + rl + 1, hash, hl);
    unit_write_raw_entry(dir, "users", name, strlen(name), v, rl + 1 + hl);
}

#endif

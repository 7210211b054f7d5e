/*
 * env.c - the store's environment: the data directory and its lock, opening and closing LMDB and the
 * segment log, write transactions and the durable commit, and the probe (txn.c, beneath it, has read
 * transactions, small writes, meta values and error mapping; README.md has the layout and invariants).
 *
 * DESIGN: the data directory's lock is DIR/medstream.lock, flock(LOCK_EX | LOCK_NB) taken by every open
 * for writing before LMDB is touched and held through the open file until store_close or the process's
 * end (the kernel drops it with the last descriptor, so a restart after kill -9 is never refused). The
 * holder writes "pid N\ncommand CMD\nsince T\n" into it for the refusal message. A read-only open takes
 * no lock: it only tests, with a shared lock it drops at once, whether a writer is running.
 * A commit is README.md's durability order, steps 2 and 3: fdatasync of the segment log, then the LMDB
 * commit (synced: the environment is opened without MDB_NOSYNC) that records the log's end with the
 * batch, so LMDB never points at bytes that are not on disk.
 *
 * Contract: store.h ("Environment", "Transactions"). Must never: write a read-only store, open LMDB for
 * writing without holding the lock, leave a failed commit's identities in the in-memory index.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/timefmt.h"

#define LOCK_FILE "medstream.lock"

static const char *const db_names[DB_COUNT] = {"identity", "patient", "record", "public", "log",    "snapshot",
                                               "meta",     "users",   "tokens", "audit",  "events", "definitions",
                                               "children", "cluster", "plog",   "phead",  "plogc"};
/* Sub-databases added after stores were first written (issue 13): a read-only open of an older store finds
 * them absent and reads nothing from them; a writing open creates them. */
#define DB_FIRST_LATER DB_EVENTS

/* LMDB maps data.mdb and reads every page up to the last one its committed meta page names: a file cut
 * short below that (a copy or restore that did not finish) is a SIGBUS at the first read of a missing page,
 * so it is refused here, by name, before anything reads a page. The meta pages are read with read(2) by
 * mdb_env_open, and LMDB writes and syncs a commit's pages before its meta page, so an intact store (after
 * a crash too) always reaches that page. */
static ms_code check_data_file(MDB_env *env, const char *lmdb_dir, ms_err *e)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fs;
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", lmdb_dir);
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 || stat(path, &fs) != 0)
        return ms_fail(e, MS_EIO, "store: cannot read the size of %s", path);
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fs.st_size < need)
        return ms_fail(e, MS_ECORRUPT,
                       "store: %s is truncated: %llu bytes, but its last commit uses %llu (a copy or restore that "
                       "did not finish?); refusing to open it",
                       path, (unsigned long long)fs.st_size, (unsigned long long)need);
    return MS_OK;
}

/* ---- the data directory's lock ---- */

/* The holder named in a lock file: "pid N (CMD, since T)"; false when the text is not (yet) there or
 * names a process that is gone (the holder may be between its flock and its write). */
static bool lock_holder(int fd, long *pid, char *out, size_t cap)
{
    char text[256], cmd[33], since[33];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0) return false;
    text[n] = 0;
    if (sscanf(text, "pid %ld command %32s since %32s", pid, cmd, since) != 3 || *pid <= 0) return false;
    if (kill((pid_t)*pid, 0) != 0 && errno == ESRCH) return false;
    snprintf(out, cap, "pid %ld (%s, since %s)", *pid, cmd, since);
    return true;
}

/* Who holds the lock file fd (locked by another open file): tries for a short while, since the holder
 * writes its name just after taking the lock. */
static void describe_holder(int fd, char *out, size_t cap)
{
    long pid;
    for (int i = 0; i < 20; i++) {
        if (lock_holder(fd, &pid, out, cap)) return;
        usleep(5000);
    }
    snprintf(out, cap, "another process");
}

/* Take DIR's lock for the life of the store (exclusive, never waiting for a running holder). */
static ms_code take_lock(store *s, const char *dir, const char *owner, ms_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" LOCK_FILE, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return ms_fail(e, MS_EIO, "store: cannot open %s: %s", path, strerror(errno));
    int rc, tries = 0;
    /* a read-only open tests the lock with a shared lock for an instant: wait that out (50 ms) */
    while ((rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 && (errno == EWOULDBLOCK || errno == EINTR) && ++tries < 10)
        usleep(5000);
    if (rc != 0) {
        int err = errno;
        if (err == EWOULDBLOCK) {
            char who[128];
            describe_holder(fd, who, sizeof who);
            close(fd);
            if (strncmp(who, "pid ", 4) == 0) return ms_fail(e, MS_ECONFLICT, "%s is in use by medstream %s", dir, who);
            return ms_fail(e, MS_ECONFLICT, "%s is in use by another process (it holds %s)", dir, path);
        }
        close(fd);
        return ms_fail(e, MS_EIO, "store: cannot lock %s: %s", path, strerror(err));
    }
    char cmd[33];
    size_t n = 0;
    for (const char *c = owner && *owner ? owner : "medstream"; *c && n < sizeof cmd - 1; c++)
        cmd[n++] = (*c > ' ' && *c < 0x7f) ? *c : '_'; /* one word: the holder's text is parsed back */
    cmd[n] = 0;
    char since[32], text[160];
    time_format_rfc3339(ms_now_us(), since, sizeof since);
    snprintf(since + 19, sizeof since - 19, "Z"); /* whole seconds */
    int len = snprintf(text, sizeof text, "pid %ld\ncommand %s\nsince %s\n", (long)getpid(), cmd, since);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) {
        int err = errno;
        close(fd);
        return ms_fail(e, MS_EIO, "store: cannot write %s: %s", path, strerror(err));
    }
    s->lock_fd = fd;
    return MS_OK;
}

/* Read-only: is a writer running on dir? (A shared lock tried and dropped at once.) */
static void note_live_writer(store *s, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" LOCK_FILE, dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
    } else if (errno == EWOULDBLOCK) {
        char who[128];
        describe_holder(fd, who, sizeof who);
        s->live_writer = ms_strndup(who, strlen(who));
    }
    close(fd);
}

/* ---- open and close ---- */

/* The node id (meta "node_id"): read, or made at the first open for writing (a store from before node ids
 * gets one then); a read-only open of such a store sees zeros. An LMDB return code. */
static int node_id_load(store *s, MDB_txn *txn, bool ro)
{
    MDB_val k = st_val("node_id", 7), v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == 0) {
        if (v.mv_size != STORE_NODE_ID) return MDB_CORRUPTED;
        memcpy(s->node_id, v.mv_data, STORE_NODE_ID);
        return 0;
    }
    if (rc != MDB_NOTFOUND || ro) return rc == MDB_NOTFOUND ? 0 : rc;
    if (RAND_bytes(s->node_id, STORE_NODE_ID) != 1) return EIO;
    v = st_val(s->node_id, STORE_NODE_ID);
    return mdb_put(txn, s->dbi[DB_META], &k, &v, 0);
}

/* The store's format (meta "store_format"): one newer than this build's is refused before anything is written (a
 * newer medstream's layout would be misread, and written over); absent (a new store, or one from before the format
 * was kept: format 1), this build's is recorded by an open for writing. An LMDB return code; -1 with e set for a
 * refusal. */
static int format_check(store *s, MDB_txn *txn, bool ro, const char *dir, ms_err *e)
{
    MDB_val k = st_val("store_format", 12), v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) return ro ? 0 : st_meta_put_u64(txn, s->dbi[DB_META], "store_format", STORE_FORMAT);
    if (rc) return rc;
    if (v.mv_size != 8) return MDB_CORRUPTED;
    uint64_t format = ms_get_be64(v.mv_data);
    if (format <= STORE_FORMAT) return 0;
    ms_fail(e, MS_ECONFLICT,
            "store: %s was written by a newer medstream (store format %llu; this medstream reads formats up to %d): "
            "open it with that medstream or a newer one (nothing was written)",
            dir, (unsigned long long)format, STORE_FORMAT);
    return -1;
}

ms_code store_open(store **out, const char *dir, const store_options *opt, ms_err *e)
{
    double t0 = ms_mono_s();
    store_options defaults = {.map_size = STORE_DEFAULT_MAP_SIZE,
                              .segment_size = STORE_DEFAULT_SEGMENT_SIZE,
                              .body_cache = STORE_DEFAULT_BODY_CACHE};
    if (!opt) opt = &defaults;
    bool ro = opt->read_only;
    if (!ro && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ms_fail(e, MS_EIO, "store: cannot create %s: %s", dir, strerror(errno));
    store *s = ms_calloc(1, sizeof *s);
    s->dir = ms_strndup(dir, strlen(dir));
    s->read_only = ro;
    s->lock_fd = -1;
    s->free_bytes = -1;
    atomic_init(&s->writing_from, INT64_MAX);
    s->segment_size = opt->segment_size ? opt->segment_size : STORE_DEFAULT_SEGMENT_SIZE;
    if (ro)
        note_live_writer(s, dir);
    else if (take_lock(s, dir, opt->owner, e) != MS_OK)
        goto fail;
    char path[4096];
    snprintf(path, sizeof path, "%s/lmdb", dir);
    if (!ro && mkdir(path, 0700) != 0 && errno != EEXIST) {
        ms_fail(e, MS_EIO, "store: cannot create %s: %s", path, strerror(errno));
        goto fail;
    }
    int rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        st_mdb_fail(e, rc, "create environment");
        goto fail;
    }
    mdb_env_set_maxdbs(s->env, DB_COUNT + 2);
    mdb_env_set_maxreaders(s->env, 1024);
    mdb_env_set_mapsize(s->env, opt->map_size ? opt->map_size : STORE_DEFAULT_MAP_SIZE);
    rc = mdb_env_open(s->env, path, MDB_NOTLS | MDB_NORDAHEAD | (ro ? MDB_RDONLY : 0), 0600);
    if (rc) {
        st_mdb_fail(e, rc, "open");
        goto fail;
    }
    if (check_data_file(s->env, path, e) != MS_OK) goto fail;
    int dead = 0;
    mdb_reader_check(s->env, &dead); /* free reader slots of crashed processes */
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, ro ? MDB_RDONLY : 0, &txn))) {
        st_mdb_fail(e, rc, "begin");
        goto fail;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], ro ? 0 : MDB_CREATE, &s->dbi[i]);
        if (rc == MDB_NOTFOUND && ro && i >= DB_FIRST_LATER) {
            s->absent[i] = true;
            rc = 0;
        }
        if (rc) {
            mdb_txn_abort(txn);
            st_mdb_fail(e, rc, "open sub-database");
            goto fail;
        }
    }
    if ((rc = format_check(s, txn, ro, dir, e))) {
        mdb_txn_abort(txn);
        if (rc != -1) st_write_fail(s, e, rc, "record the store format");
        goto fail;
    }
    MDB_val k = st_val("id_key", 6), v;
    rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND && !ro) { /* a new store: the cluster's secret, or a random one of its own */
        if (opt->cluster_key) {
            memcpy(s->id_key, opt->cluster_key, 32);
        } else if (RAND_bytes(s->id_key, 32) != 1) {
            mdb_txn_abort(txn);
            ms_fail(e, MS_EIO, "store: random number generator failed");
            goto fail;
        }
        v = st_val(s->id_key, 32);
        rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0);
    } else if (rc == 0 && v.mv_size == 32) {
        memcpy(s->id_key, v.mv_data, 32);
        /* never silently: a node of another cluster (or a store made without a cluster key) would mint
         * other patient ids for the same identities */
        if (opt->cluster_key && CRYPTO_memcmp(s->id_key, opt->cluster_key, 32) != 0) {
            mdb_txn_abort(txn);
            ms_fail(e, MS_ECONFLICT,
                    "store: %s was created with another key than the cluster key given (--cluster-key-file): "
                    "it would give other patient ids than the cluster's other nodes; refusing to open it",
                    dir);
            goto fail;
        }
    } else if (rc == 0) {
        rc = MDB_CORRUPTED;
    }
    if (!rc) rc = node_id_load(s, txn, ro);
    if (!rc) {
        unsigned int n = 0;
        unsigned char raw[PATIENT_ID_KEY];
        HMAC(EVP_sha256(), s->id_key, 32, (const unsigned char *)"patient-id", 10, raw, &n);
        patient_id_key_init(&s->pid_key, raw);
        HMAC(EVP_sha256(), s->id_key, 32, (const unsigned char *)"identity", 8, raw, &n);
        patient_id_key_init(&s->mac_key, raw);
        OPENSSL_cleanse(raw, sizeof raw);
        n = 0;
        HMAC(EVP_sha256(), s->id_key, 32, (const unsigned char *)"deid", 4, s->deid_key, &n);
    }
    uint64_t log_end = 0, last = 0;
    if (!rc) rc = st_meta_get_u64(txn, s->dbi[DB_META], "log_end", &log_end);
    if (!rc) rc = st_meta_get_u64(txn, s->dbi[DB_META], "commit_pos", &s->commit_pos);
    if (!rc) rc = st_meta_get_u64(txn, s->dbi[DB_META], "last_commit", &last);
    if (!rc) rc = st_meta_get_u64(txn, s->dbi[DB_META], "patients", &s->patients);
    if (!rc) rc = st_meta_get_u64(txn, s->dbi[DB_META], "patients_created", &s->created);
    if (!s->created) s->created = s->patients; /* absent: numbers are dense, one per patient */
    s->last_commit = (int64_t)last;
    if (rc) {
        mdb_txn_abort(txn);
        st_mdb_fail(e, rc, "read metadata");
        goto fail;
    }
    /* The segment size that body positions are relative to. An opener that sets none (import, user,
     * preload) takes the recorded one. Bodies written with one size read as garbage with another, so a
     * store holding bodies keeps its size: a different one is refused (a read-only open simply takes the
     * recorded one). A store that recorded none (written before the size was kept) is taken at its word. */
    uint64_t recorded = 0;
    if (!(rc = st_meta_get_u64(txn, s->dbi[DB_META], "segment_size", &recorded)) && recorded &&
        recorded != s->segment_size) {
        if (ro || !opt->segment_size) {
            s->segment_size = recorded;
        } else if (log_end > 0) {
            mdb_txn_abort(txn);
            ms_fail(e, MS_EINVAL,
                    "store: %s holds bodies written in segments of %llu bytes; --segment-size asks %llu (the bodies "
                    "would be misread): use --segment-size %llu",
                    dir, (unsigned long long)recorded, (unsigned long long)s->segment_size,
                    (unsigned long long)recorded);
            goto fail;
        }
    }
    if (!rc && !ro && recorded != s->segment_size)
        rc = st_meta_put_u64(txn, s->dbi[DB_META], "segment_size", s->segment_size);
    if (rc) {
        mdb_txn_abort(txn);
        st_write_fail(s, e, rc, "record the segment size");
        goto fail;
    }
    if ((rc = mdb_txn_commit(txn))) { /* read-only too: keeps the sub-database handles */
        st_write_fail(s, e, rc, "commit");
        goto fail;
    }
    /* read-only: no writes, so neither the identity index nor the audit chain's head is needed */
    if (st_plog_open(s, opt->plog_checkpoint_lag, opt->plog_checkpoint_chunks, e) != MS_OK) goto fail;
    if (!ro) s->states = state_cache_new(opt->state_cache);
    double t = ms_mono_s();
    if (st_keys_open(s, e) != MS_OK) goto fail;
    s->opened.keys_s = ms_mono_s() - t;
    t = ms_mono_s();
    if (!ro && st_identities_load(s, e) != MS_OK) goto fail; /* (and the sweep of the key file) */
    s->opened.identities_s = ms_mono_s() - t;
    if (!ro && st_audit_head_load(s, e) != MS_OK) goto fail;
    snprintf(path, sizeof path, "%s/segments", dir);
    if (seglog_open(&s->log, path, s->segment_size, opt->body_cache, log_end, e) != MS_OK) goto fail;
    s->opened.total_s = ms_mono_s() - t0;
    *out = s;
    return MS_OK;
fail:
    st_plog_close(s);
    state_cache_free(s->states);
    st_keys_close(s);
    identity_index_free(s->identities);
    if (s->env) mdb_env_close(s->env);
    if (s->lock_fd >= 0) close(s->lock_fd);
    free(s->live_writer);
    free(s->dir);
    free(s);
    return e ? e->code : MS_EIO;
}

void store_close(store *s)
{
    if (!s) return;
    identity_index_free(s->identities);
    st_keys_close(s);
    st_plog_close(s);
    state_cache_free(s->states);
    seglog_close(s->log);
    mdb_env_close(s->env);
    if (s->lock_fd >= 0) close(s->lock_fd); /* the lock goes with it */
    free(s->live_writer);
    free(s->dir);
    free(s);
}

bool store_read_only(const store *s) { return s->read_only; }

const unsigned char *store_node_id(const store *s) { return s->node_id; }

const char *store_live_writer(const store *s) { return s->live_writer; }

uint64_t store_segment_size(const store *s) { return s->segment_size; }

void store_inject_free_space(store *s, int64_t bytes) { s->free_bytes = bytes; }

store_open_times store_open_time(const store *s) { return s->opened; }

void store_inject_fault(store *s, int err) { seglog_inject_fault(s->log, err); }
void store_inject_short_write(store *s, uint64_t bytes) { seglog_inject_short_write(s->log, bytes); }

/* ---- the probe ---- */

ms_code st_reserve(int fd, uint64_t len, const char *what, ms_err *e)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return ms_fail(e, MS_EIO, "store: %s: %s", what, strerror(errno));
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, st.st_size, (off_t)len) == 0 || errno == EOPNOTSUPP) return MS_OK;
    return ms_fail(e, errno == ENOSPC ? MS_EFULL : MS_EIO, "store: %s: %s", what,
                   errno == ENOSPC ? "disk full" : strerror(errno));
}

/* What a probe reserves in LMDB's file past its end: the pages a batch of `bytes` bodies may need (its
 * entries are a fraction of the bodies at 20 KB, several times them at 200 B), at least PROBE_LMDB_MIN. */
#define PROBE_LMDB_MIN ((uint64_t)1 << 20)

ms_code store_probe(store *s, size_t bytes, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    ms_code code = seglog_preallocate(s->log, bytes > SEGLOG_ALIGN ? bytes : SEGLOG_ALIGN, e);
    if (code != MS_OK) return code;
    /* the other two files a commit may grow: room for them too, or the next batch fails as the last one did */
    if ((code = st_keys_reserve(s, e)) != MS_OK) return code;
    int fd;
    if (mdb_env_get_fd(s->env, &fd) == 0 && (code = st_reserve(fd, PROBE_LMDB_MIN + 4 * (uint64_t)bytes, "LMDB", e)))
        return code;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_write_fail(s, e, rc, "probe");
    if ((rc = st_meta_put_u64(txn, s->dbi[DB_META], "probe", (uint64_t)ms_now_us()))) {
        mdb_txn_abort(txn);
        return st_write_fail(s, e, rc, "probe");
    }
    rc = mdb_txn_commit(txn);
    return rc ? st_write_fail(s, e, rc, "probe commit") : MS_OK;
}

/* ---- write transactions ---- */

ms_code store_write_begin(store *s, store_write **out, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    store_write *w = ms_calloc(1, sizeof *w);
    w->s = s;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc) {
        free(w);
        return st_mdb_fail(e, rc, "begin write");
    }
    /* first a bound below the valid_from the clock gives next, so that a read settling an instant
     * (store_read_settle) never misses this transaction between the clock and the store */
    atomic_store(&s->writing_from, s->last_commit + 1);
    int64_t now = ms_now_us();
    w->now = now > s->last_commit ? now : s->last_commit + 1;
    atomic_store(&s->writing_from, w->now);
    w->patients = s->patients;
    w->created = s->created;
    w->audit_seq = s->audit_seq;
    memcpy(w->audit_head, s->audit_head, 32);
    st_log_begin(w);
    *out = w;
    return MS_OK;
}

int64_t store_write_time(const store_write *w) { return w->now; }

/* Every end of a write transaction (committed, failed or abandoned) comes here, after its commit's heads. */
static void write_free(store_write *w)
{
    atomic_store(&w->s->writing_from, INT64_MAX);
    free(w->inserted);
    free(w->bound);
    free(w->erased);
    st_plog_write_free(w);
    buf_free(&w->states);
    buf_free(&w->log);
    buf_free(&w->key);
    free(w);
}

store_commit_times store_last_commit_times(const store *s) { return s->commit_times; }

state_cache_stats store_state_cache_stats(store *s) { return state_cache_stats_of(s->states); }

void store_write_abort(store_write *w)
{
    if (!w) return;
    mdb_txn_abort(w->txn);
    st_identities_undo(w);
    write_free(w);
}

ms_code store_write_commit(store_write *w, uint64_t *commit_pos, ms_err *e)
{
    store *s = w->s;
    int rc = 0;
    double t0 = ms_mono_s(), t1;
    ms_code code = seglog_sync(s->log, e);        /* the bodies first: LMDB must never point at bytes not on disk */
    if (code == MS_OK) code = st_keys_sync(s, e); /* and the keys that open them */
    if (code != MS_OK) {
        store_write_abort(w);
        return code;
    }
    t1 = ms_mono_s();
    uint64_t pos = s->commit_pos + 1, *marks;
    size_t nmarks = st_keys_erase_done_take(s, &marks);
    if (!(rc = st_erase_marks_delete(w, marks, nmarks)) && !(rc = st_plog_checkpoint(w)) && !(rc = st_audit_end_put(w)) &&
        !(rc = st_log_put(w, pos)) && !(rc = st_meta_put_u64(w->txn, s->dbi[DB_META], "log_end", seglog_end(s->log))) &&
        !(rc = st_meta_put_u64(w->txn, s->dbi[DB_META], "commit_pos", pos)) &&
        !(rc = st_meta_put_u64(w->txn, s->dbi[DB_META], "last_commit", (uint64_t)w->now)) &&
        !(rc = st_meta_put_u64(w->txn, s->dbi[DB_META], "patients", w->patients)) &&
        (w->created == w->patients ||
         !(rc = st_meta_put_u64(w->txn, s->dbi[DB_META], "patients_created", w->created)))) {
        s->last_commit = w->now; /* still under the writer lock (invariant 4); a failed commit only wastes it */
        rc = mdb_txn_commit(w->txn);
        w->txn = NULL;
    }
    double t2 = ms_mono_s();
    for (size_t i = 0; rc && i < nmarks; i++) /* still to delete */
        st_keys_erase_done(s, marks[i]);
    free(marks);
    if (rc) {
        if (w->txn) mdb_txn_abort(w->txn);
        st_identities_undo(w);
        write_free(w);
        return st_write_fail(s, e, rc, "commit");
    }
    st_states_committed(w);
    st_plog_committed(w); /* the heads name committed entries only */
    s->commit_times = (store_commit_times){.sync_s = t1 - t0, .lmdb_s = t2 - t1};
    s->commit_pos = pos;
    s->audit_seq = w->audit_seq;
    memcpy(s->audit_head, w->audit_head, 32);
    s->patients = w->patients;
    s->created = w->created;
    if (commit_pos) *commit_pos = pos;
    for (size_t i = 0; i < w->nbound; i++) /* their keys are in their slots now */
        st_key_pending_drop(s, w->bound[i]);
    for (size_t i = 0; i < w->nerased; i++) { /* every erasure of the commit (the writer groups several) */
        const struct st_erased *x = &w->erased[i];
        uint64_t now_of;
        if (identity_index_get(s->identities, x->hash, &now_of) && now_of == x->number) /* not a patient made anew */
            identity_index_remove(s->identities, x->hash);
        ms_err ke;
        if (st_key_destroy(s, x->number, &ke) != MS_OK) /* committed: its mark makes the next open retry */
            ms_log(LOG_ERROR, "store", "%s (the next start overwrites it)", ke.msg);
        else
            st_keys_erase_done(s, x->number);
    }
    write_free(w);
    return MS_OK;
}

/*
 * store.c - LMDB + segment log (see store.h for the layout and the contract).
 *
 * The data directory's lock: DIR/medstream.lock, flock(LOCK_EX | LOCK_NB) taken by every open for
 * writing before LMDB is touched and held through the open file until store_close or the process's
 * end (the kernel drops it with the last descriptor, so a restart after kill -9 is never refused). The
 * holder writes "pid N\ncommand CMD\nsince T\n" into it for the refusal message. A read-only open
 * takes no lock: it only tests, with a shared lock it drops at once, whether a writer is running.
 */
#include "store/store.h"

#include "store/identity_index.h"
#include "store/segment_log.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/timefmt.h"

#define LOCK_FILE "medstream.lock"
/* An EIO from an LMDB write or commit is a full disk when the data directory's file system has less
 * than this much left (or less than 1 % of its size, whichever is larger): LMDB turns a short page
 * write, which is what a full disk gives, into EIO. */
#define LOW_SPACE_BYTES ((uint64_t)64 << 20)

enum {
    DB_IDENT,
    DB_PATIENT,
    DB_RECORD,
    DB_PUBLIC,
    DB_LOG,
    DB_SNAPSHOT,
    DB_META,
    DB_USERS,
    DB_TOKENS,
    DB_AUDIT,
    DB_COUNT
};
static const char *const db_names[DB_COUNT] = {"identity", "patient", "record", "public", "log",
                                               "snapshot", "meta",    "users",  "tokens", "audit"};

struct store {
    char *dir;
    bool read_only;
    int lock_fd;        /* DIR/medstream.lock, locked exclusively (-1: read-only) */
    char *live_writer;  /* read-only: "pid N (CMD, since T)" of the writer running at open, or NULL */
    int64_t free_bytes; /* test hook: the file system's free bytes as the EIO check sees them (-1: statvfs) */
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    segment_log *log;
    unsigned char id_key[32];
    unsigned char pid_key[PATIENT_ID_KEY]; /* HMAC(id_key, "patient-id"): the patient id permutation */
    identity_index *identities;            /* identity key hash -> patient number (identity.c's keys) */
    uint64_t audit_seq;                    /* last audit entry */
    unsigned char audit_head[32];          /* SHA-256 of the last audit entry (zeros before the first) */
    int64_t last_commit;                   /* writer's view */
    uint64_t commit_pos;
    uint64_t patients;
};

struct store_write {
    store *s;
    MDB_txn *txn;
    int64_t now;
    uint64_t patients;
    identity_hash *inserted; /* identities added to s->identities by this transaction (undone on abort) */
    uint64_t audit_seq;      /* the audit chain as this transaction extends it */
    unsigned char audit_head[32];
    size_t ninserted, capinserted;
    buf log; /* the commit log entry being built */
    uint32_t nlog;
    buf key; /* scratch */
};

struct store_read {
    store *s;
    MDB_txn *txn;
};

static ms_code mdb_fail(ms_err *e, int rc, const char *what)
{
    if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG)
        return ms_fail(e, MS_EFULL, "store: %s: disk full (%s)", what, mdb_strerror(rc));
    ms_code code = rc == MDB_MAP_FULL                                                    ? MS_EFULL
                   : rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ? MS_ECORRUPT
                                                                                         : MS_EIO;
    return ms_fail(e, code, "store: %s: %s", what, mdb_strerror(rc));
}

/* A failed LMDB write or commit: an EIO on a file system with little space left is a full disk
 * (LOW_SPACE_BYTES). */
static ms_code write_fail(store *s, ms_err *e, int rc, const char *what)
{
    if (rc != EIO) return mdb_fail(e, rc, what);
    struct statvfs fs;
    uint64_t avail, size;
    if (s->free_bytes >= 0) {
        avail = (uint64_t)s->free_bytes;
        size = avail;
    } else if (statvfs(s->dir, &fs) == 0) {
        avail = (uint64_t)fs.f_bavail * fs.f_frsize;
        size = (uint64_t)fs.f_blocks * fs.f_frsize;
    } else {
        return mdb_fail(e, rc, what);
    }
    uint64_t low = size / 100 > LOW_SPACE_BYTES ? size / 100 : LOW_SPACE_BYTES;
    if (avail >= low) return mdb_fail(e, rc, what);
    return ms_fail(e, MS_EFULL, "store: %s: disk full (%s with %llu MiB left on the file system)", what,
                   mdb_strerror(rc), (unsigned long long)(avail >> 20));
}

static MDB_val val(const void *p, size_t n) { return (MDB_val){.mv_size = n, .mv_data = (void *)p}; }

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
    MDB_val k = val(name, strlen(name)), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        *out = ms_get_be64(v.mv_data);
    else
        *out = 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t x)
{
    unsigned char b[8];
    ms_set_be64(b, x);
    MDB_val k = val(name, strlen(name)), v = val(b, 8);
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* The identity sub-database maps patient number -> patient id (16 bytes) + identity key. */
static bool decode_ident(const MDB_val *v, patient_ref *p, const char **key, size_t *key_len)
{
    if (v->mv_size < 16 + 12) return false;
    memcpy(p->id.b, v->mv_data, 16);
    *key = (const char *)v->mv_data + 16;
    *key_len = v->mv_size - 16;
    return true;
}

/* Rebuild the in-memory identity index from the identity sub-database (sequential scan). */
static ms_code load_identities(store *s, ms_err *e)
{
    s->identities = identity_index_new(s->patients);
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(e, rc, "begin read");
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_IDENT], &c))) {
        mdb_txn_abort(txn);
        return mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    ms_code out = MS_OK;
    enum { BATCH = 256 };
    identity_hash hashes[BATCH];
    uint64_t numbers[BATCH];
    size_t n = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        patient_ref p;
        const char *key;
        size_t key_len;
        if (k.mv_size != 8 || !decode_ident(&v, &p, &key, &key_len)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
            break;
        }
        hashes[n] = identity_hash_of(key, key_len);
        numbers[n++] = ms_get_be64(k.mv_data);
        if (n == BATCH) {
            identity_index_put_many(s->identities, hashes, numbers, n);
            n = 0;
        }
    }
    identity_index_put_many(s->identities, hashes, numbers, n);
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (out == MS_OK && rc != MDB_NOTFOUND) out = mdb_fail(e, rc, "identity scan");
    return out;
}

/* The audit chain's end: the last entry's number and the SHA-256 of its bytes. */
static ms_code load_audit_head(store *s, ms_err *e)
{
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(e, rc, "begin read");
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_AUDIT], &c))) {
        mdb_txn_abort(txn);
        return mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8) {
        s->audit_seq = ms_get_be64(k.mv_data);
        SHA256(v.mv_data, v.mv_size, s->audit_head);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, "audit head") : MS_OK;
}

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

ms_code store_open(store **out, const char *dir, const store_options *opt, ms_err *e)
{
    store_options defaults = {STORE_DEFAULT_MAP_SIZE, STORE_DEFAULT_SEGMENT_SIZE, STORE_DEFAULT_BODY_CACHE, NULL,
                              false};
    if (!opt) opt = &defaults;
    bool ro = opt->read_only;
    if (!ro && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ms_fail(e, MS_EIO, "store: cannot create %s: %s", dir, strerror(errno));
    store *s = ms_calloc(1, sizeof *s);
    s->dir = ms_strndup(dir, strlen(dir));
    s->read_only = ro;
    s->lock_fd = -1;
    s->free_bytes = -1;
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
        mdb_fail(e, rc, "create environment");
        goto fail;
    }
    mdb_env_set_maxdbs(s->env, DB_COUNT + 2);
    mdb_env_set_maxreaders(s->env, 1024);
    mdb_env_set_mapsize(s->env, opt->map_size ? opt->map_size : STORE_DEFAULT_MAP_SIZE);
    rc = mdb_env_open(s->env, path, MDB_NOTLS | MDB_NORDAHEAD | (ro ? MDB_RDONLY : 0), 0600);
    if (rc) {
        mdb_fail(e, rc, "open");
        goto fail;
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead); /* free reader slots of crashed processes */
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, ro ? MDB_RDONLY : 0, &txn))) {
        mdb_fail(e, rc, "begin");
        goto fail;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        if ((rc = mdb_dbi_open(txn, db_names[i], ro ? 0 : MDB_CREATE, &s->dbi[i]))) {
            mdb_txn_abort(txn);
            mdb_fail(e, rc, "open sub-database");
            goto fail;
        }
    }
    MDB_val k = val("id_key", 6), v;
    rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND && !ro) {
        if (RAND_bytes(s->id_key, 32) != 1) {
            mdb_txn_abort(txn);
            ms_fail(e, MS_EIO, "store: random number generator failed");
            goto fail;
        }
        v = val(s->id_key, 32);
        rc = mdb_put(txn, s->dbi[DB_META], &k, &v, 0);
    } else if (rc == 0 && v.mv_size == 32) {
        memcpy(s->id_key, v.mv_data, 32);
    } else if (rc == 0) {
        rc = MDB_CORRUPTED;
    }
    if (!rc) {
        unsigned int n = 0;
        HMAC(EVP_sha256(), s->id_key, 32, (const unsigned char *)"patient-id", 10, s->pid_key, &n);
    }
    uint64_t log_end = 0, last = 0;
    if (!rc) rc = meta_get_u64(txn, s->dbi[DB_META], "log_end", &log_end);
    if (!rc) rc = meta_get_u64(txn, s->dbi[DB_META], "commit_pos", &s->commit_pos);
    if (!rc) rc = meta_get_u64(txn, s->dbi[DB_META], "last_commit", &last);
    if (!rc) rc = meta_get_u64(txn, s->dbi[DB_META], "patients", &s->patients);
    s->last_commit = (int64_t)last;
    if (rc) {
        mdb_txn_abort(txn);
        mdb_fail(e, rc, "read metadata");
        goto fail;
    }
    if ((rc = mdb_txn_commit(txn))) { /* read-only too: keeps the sub-database handles */
        write_fail(s, e, rc, "commit");
        goto fail;
    }
    /* read-only: no writes, so neither the identity index nor the audit chain's head is needed */
    if (!ro && load_identities(s, e) != MS_OK) goto fail;
    if (!ro && load_audit_head(s, e) != MS_OK) goto fail;
    snprintf(path, sizeof path, "%s/segments", dir);
    if (seglog_open(&s->log, path, opt->segment_size ? opt->segment_size : STORE_DEFAULT_SEGMENT_SIZE, opt->body_cache,
                    log_end, e) != MS_OK)
        goto fail;
    *out = s;
    return MS_OK;
fail:
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
    seglog_close(s->log);
    mdb_env_close(s->env);
    if (s->lock_fd >= 0) close(s->lock_fd); /* the lock goes with it */
    free(s->live_writer);
    free(s->dir);
    free(s);
}

bool store_read_only(const store *s) { return s->read_only; }

const char *store_live_writer(const store *s) { return s->live_writer; }

void store_inject_free_space(store *s, int64_t bytes) { s->free_bytes = bytes; }

const unsigned char *store_id_key(const store *s) { return s->id_key; }

void store_patient_id(const store *s, uint64_t n, patient_id *id) { patient_id_from_number(s->pid_key, n, id); }

/* The key prefix of a patient's entries: be64(number) then a tag ('v' versions, 'r' records). */
static void patient_prefix(unsigned char out[9], uint64_t number, char tag)
{
    ms_set_be64(out, number);
    out[8] = (unsigned char)tag;
}

bool store_patient_number(const store *s, const patient_id *id, uint64_t *n)
{
    return patient_id_to_number(s->pid_key, id, n);
}

void store_inject_fault(store *s, int err) { seglog_inject_fault(s->log, err); }

/* ---- key builders ---- */

/* Event times in keys: sign bit flipped so that big-endian byte order is numeric order. */
#define TS_SIGN ((uint64_t)1 << 63)
static uint64_t ts_key(int64_t ts) { return (uint64_t)ts ^ TS_SIGN; }

static void key_versioned(buf *k, const void *prefix, size_t n, int64_t vf, uint32_t version)
{
    k->len = 0;
    buf_put(k, prefix, n);
    buf_put_be64(k, ~(uint64_t)vf);
    buf_put_be32(k, ~version);
}

static void key_record(buf *k, const char *rid, size_t n, int64_t vf, uint32_t version)
{
    k->len = 0;
    buf_put(k, rid, n);
    buf_putc(k, 0);
    buf_put_be64(k, ~(uint64_t)vf);
    buf_put_be32(k, ~version);
}

/* ---- record version encoding ---- */
enum { RV_HDR = 4 + 8 + 16 + 8 + 8 + 8 + 4 + 8 + 16 + 1, RV_DELETED = 1 };

static void encode_record(buf *b, const record_version *rv)
{
    b->len = 0;
    buf_put_be32(b, rv->version);
    buf_put_be64(b, (uint64_t)rv->valid_from);
    buf_put(b, rv->pid.b, 16);
    buf_put_be64(b, rv->patient_number);
    buf_put_be64(b, (uint64_t)rv->ts_us);
    buf_put_be64(b, rv->body_pos);
    buf_put_be32(b, rv->body_len);
    buf_put_be64(b, rv->body_hash);
    buf_put(b, rv->content_hash, 16);
    buf_putc(b, (char)rv->type_len);
    buf_put(b, rv->type, rv->type_len);
    buf_putc(b, rv->deleted ? RV_DELETED : 0); /* flags (absent in entries written before tombstones) */
}

static bool decode_record(const MDB_val *v, const char *rid, size_t rid_len, record_version *rv)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < RV_HDR || rid_len > RECORD_ID_MAX) return false;
    rv->version = ms_get_be32(p);
    rv->valid_from = (int64_t)ms_get_be64(p + 4);
    memcpy(rv->pid.b, p + 12, 16);
    rv->patient_number = ms_get_be64(p + 28);
    rv->ts_us = (int64_t)ms_get_be64(p + 36);
    rv->body_pos = ms_get_be64(p + 44);
    rv->body_len = ms_get_be32(p + 52);
    rv->body_hash = ms_get_be64(p + 56);
    memcpy(rv->content_hash, p + 64, 16);
    rv->type_len = p[80];
    if (rv->type_len > 64) return false;
    if (v->mv_size == RV_HDR + rv->type_len)
        rv->deleted = false;
    else if (v->mv_size == RV_HDR + rv->type_len + 1u)
        rv->deleted = (p[RV_HDR + rv->type_len] & RV_DELETED) != 0;
    else
        return false;
    memcpy(rv->type, p + RV_HDR, rv->type_len);
    rv->type[rv->type_len] = 0;
    memcpy(rv->record_id, rid, rid_len);
    rv->record_id[rid_len] = 0;
    rv->record_id_len = (uint32_t)rid_len;
    rv->valid_to = -1;
    return true;
}

/* ---- patient version encoding ----
 * PV_FORMAT_2, be32 version, be64 valid_from, be16 + cause record id, be16 + source, be32 n, then per
 * field: be16 + key, be64 pos, be32 len, be64 hash, be64 ts, be64 vf. Entries written before the
 * event-time order was kept have no format byte (they start with the version's high byte, 0) and no
 * ts/vf per field: they read as INT64_MIN, older than any record. */
#define PV_FORMAT_2 0xF2

static void encode_patient(buf *b, const patient_version *pv)
{
    b->len = 0;
    buf_putc(b, (char)PV_FORMAT_2);
    buf_put_be32(b, pv->version);
    buf_put_be64(b, (uint64_t)pv->valid_from);
    buf_put_be16(b, (uint16_t)pv->cause_record_len);
    buf_put(b, pv->cause_record, pv->cause_record_len);
    buf_put_be16(b, (uint16_t)pv->source_len);
    buf_put(b, pv->source, pv->source_len);
    buf_put_be32(b, pv->nfields);
    for (uint32_t i = 0; i < pv->nfields; i++) {
        const state_field *f = &pv->fields[i];
        buf_put_be16(b, (uint16_t)f->key_len);
        buf_put(b, f->key, f->key_len);
        buf_put_be64(b, f->pos);
        buf_put_be32(b, f->len);
        buf_put_be64(b, f->hash);
        buf_put_be64(b, (uint64_t)f->ts);
        buf_put_be64(b, (uint64_t)f->vf);
    }
}

/* Decode; strings point into the value (copied into mem when mem is given). */
static bool decode_patient(const MDB_val *v, const patient_ref *who, patient_version *pv, arena *mem)
{
    const unsigned char *p = v->mv_data, *end = p + v->mv_size;
    if (mem) {
        unsigned char *copy = arena_alloc(mem, v->mv_size);
        memcpy(copy, p, v->mv_size);
        p = copy;
        end = copy + v->mv_size;
    }
    memset(pv, 0, sizeof *pv);
    pv->pid = who->id;
    pv->number = who->number;
    pv->valid_to = -1;
    bool v2 = end > p && *p == PV_FORMAT_2;
    if (v2) p++;
    size_t per_field = v2 ? 36u : 20u; /* after the key */
    if (end - p < 14) return false;
    pv->version = ms_get_be32(p);
    pv->valid_from = (int64_t)ms_get_be64(p + 4);
    p += 12;
    pv->cause_record_len = ms_get_be16(p);
    p += 2;
    if ((size_t)(end - p) < pv->cause_record_len + 2u) return false;
    pv->cause_record = (const char *)p;
    p += pv->cause_record_len;
    pv->source_len = ms_get_be16(p);
    p += 2;
    if ((size_t)(end - p) < pv->source_len + 4u) return false;
    pv->source = (const char *)p;
    p += pv->source_len;
    pv->nfields = ms_get_be32(p);
    p += 4;
    if (pv->nfields > PATIENT_STATE_MAX_FIELDS) return false;
    pv->fields = mem ? arena_alloc(mem, sizeof(state_field) * (pv->nfields ? pv->nfields : 1))
                     : ms_malloc(sizeof(state_field) * (pv->nfields ? pv->nfields : 1));
    for (uint32_t i = 0; i < pv->nfields; i++) {
        state_field *f = &pv->fields[i];
        if (end - p < 2) goto bad;
        f->key_len = ms_get_be16(p);
        p += 2;
        if ((size_t)(end - p) < f->key_len + per_field) goto bad;
        f->key = (const char *)p;
        p += f->key_len;
        f->pos = ms_get_be64(p);
        f->len = ms_get_be32(p + 8);
        f->hash = ms_get_be64(p + 12);
        f->ts = v2 ? (int64_t)ms_get_be64(p + 20) : INT64_MIN;
        f->vf = v2 ? (int64_t)ms_get_be64(p + 28) : INT64_MIN;
        p += per_field;
    }
    if (p != end) goto bad;
    return true;
bad:
    if (!mem) free(pv->fields);
    pv->fields = NULL;
    pv->nfields = 0;
    return false;
}

/* ---- write side ---- */

ms_code store_write_begin(store *s, store_write **out, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    store_write *w = ms_calloc(1, sizeof *w);
    w->s = s;
    int rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
    if (rc) {
        free(w);
        return mdb_fail(e, rc, "begin write");
    }
    int64_t now = ms_now_us();
    w->now = now > s->last_commit ? now : s->last_commit + 1;
    w->patients = s->patients;
    w->audit_seq = s->audit_seq;
    memcpy(w->audit_head, s->audit_head, 32);
    buf_put_be64(&w->log, (uint64_t)w->now);
    buf_put_be32(&w->log, 0); /* entry count, patched at commit */
    *out = w;
    return MS_OK;
}

int64_t store_write_time(const store_write *w) { return w->now; }

ms_code store_append_body(store *s, const void *data, size_t len, uint64_t *pos, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    return seglog_append(s->log, data, len, pos, e);
}

ms_code store_probe(store *s, size_t bytes, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: the store is open read-only");
    ms_code code = seglog_preallocate(s->log, bytes > SEGLOG_ALIGN ? bytes : SEGLOG_ALIGN, e);
    if (code != MS_OK) return code;
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return write_fail(s, e, rc, "probe");
    if ((rc = meta_put_u64(txn, s->dbi[DB_META], "probe", (uint64_t)ms_now_us()))) {
        mdb_txn_abort(txn);
        return write_fail(s, e, rc, "probe");
    }
    rc = mdb_txn_commit(txn);
    return rc ? write_fail(s, e, rc, "probe commit") : MS_OK;
}

/* The patient with this identity key as seen by txn: the index proposes a number, the identity
 * sub-database confirms that the number's key is this key (and that txn can see it). */
static ms_code ident_find(store *st, MDB_txn *txn, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e)
{
    *found = false;
    if (!identity_index_get(st->identities, identity_hash_of(key, len), &p->number)) return MS_OK;
    unsigned char kb[8];
    ms_set_be64(kb, p->number);
    MDB_val k = val(kb, 8), v;
    int rc = mdb_get(txn, st->dbi[DB_IDENT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK; /* not committed yet, as far as txn can see */
    if (rc) return mdb_fail(e, rc, "identity lookup");
    const char *stored;
    size_t stored_len;
    if (!decode_ident(&v, p, &stored, &stored_len)) return ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
    if (stored_len != len || memcmp(stored, key, len) != 0)
        return ms_fail(e, MS_ECONFLICT, "store: identity hash collision (two identities share an XXH3-128 hash)");
    *found = true;
    return MS_OK;
}

ms_code store_ident_get(store_write *w, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e)
{
    return ident_find(w->s, w->txn, key, len, p, found, e);
}

ms_code store_patient_create(store_write *w, const char *key, size_t len, patient_ref *p, ms_err *e)
{
    p->number = w->patients; /* numbers are 0 .. count-1 */
    patient_id_from_number(w->s->pid_key, p->number, &p->id);
    return store_ident_put(w, key, len, p, e);
}

ms_code store_ident_put(store_write *w, const char *key, size_t len, const patient_ref *p, ms_err *e)
{
    unsigned char kb[8];
    ms_set_be64(kb, p->number);
    buf v = {0};
    buf_put(&v, p->id.b, 16);
    buf_put(&v, key, len);
    MDB_val k = val(kb, 8), mv = val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_IDENT], &k, &mv, MDB_NOOVERWRITE); /* numbers grow: an append */
    buf_free(&v);
    if (rc) return mdb_fail(e, rc, "identity insert");
    identity_hash h = identity_hash_of(key, len);
    identity_index_put(w->s->identities, h, p->number);
    if (w->ninserted == w->capinserted) {
        w->capinserted = w->capinserted ? w->capinserted * 2 : 256;
        w->inserted = ms_realloc(w->inserted, sizeof *w->inserted * w->capinserted);
    }
    w->inserted[w->ninserted++] = h;
    w->patients++;
    return MS_OK;
}

static int seek_first_version(MDB_cursor *c, const buf *prefix_key, size_t prefix_len, MDB_val *k, MDB_val *v)
{
    *k = val(prefix_key->data, prefix_key->len);
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc) return rc;
    if (k->mv_size < prefix_len || memcmp(k->mv_data, prefix_key->data, prefix_len) != 0) return MDB_NOTFOUND;
    return 0;
}

static ms_code record_at(MDB_txn *txn, MDB_dbi dbi, buf *kb, const char *rid, size_t len, int64_t as_of,
                         record_version *rv, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len) || as_of < 0) return MS_OK; /* nothing before 1970 */
    key_record(kb, rid, len, as_of, UINT32_MAX);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    rc = seek_first_version(c, kb, len + 1, &k, &v);
    if (rc == 0 && k.mv_size == len + 13) {
        if (!decode_record(&v, rid, len, rv)) {
            mdb_cursor_close(c);
            return ms_fail(e, MS_ECORRUPT, "store: bad record entry");
        }
        *found = true;
        /* valid_to: the next newer version's valid_from */
        MDB_val pk, pvv;
        if (mdb_cursor_get(c, &pk, &pvv, MDB_PREV) == 0 && pk.mv_size == len + 13 &&
            memcmp(pk.mv_data, rid, len) == 0 && ((char *)pk.mv_data)[len] == 0 && pvv.mv_size >= 12)
            rv->valid_to = (int64_t)ms_get_be64((char *)pvv.mv_data + 4);
        rc = 0;
    } else if (rc == MDB_NOTFOUND || rc == 0) {
        rc = 0;
    }
    mdb_cursor_close(c);
    return rc ? mdb_fail(e, rc, "record lookup") : MS_OK;
}

ms_code store_record_latest(store_write *w, const char *rid, size_t len, record_version *rv, bool *found, ms_err *e)
{
    return record_at(w->txn, w->s->dbi[DB_RECORD], &w->key, rid, len, INT64_MAX, rv, found, e);
}

static void log_add(store_write *w, char kind, const void *id, size_t id_len, uint32_t version)
{
    buf_putc(&w->log, kind);
    buf_put_be16(&w->log, (uint16_t)id_len);
    buf_put(&w->log, id, id_len);
    buf_put_be32(&w->log, version);
    w->nlog++;
}

ms_code store_record_put(store_write *w, const record_version *rv, int year, const char *public_fields, size_t pf_len,
                         ms_err *e)
{
    store *s = w->s;
    buf v = {0};
    int rc;
    encode_record(&v, rv);
    key_record(&w->key, rv->record_id, rv->record_id_len, rv->valid_from, rv->version);
    MDB_val k = val(w->key.data, w->key.len), mv = val(v.data, v.len);
    rc = mdb_put(w->txn, s->dbi[DB_RECORD], &k, &mv, 0);
    if (rc) goto out;
    /* the patient's records index */
    unsigned char pp[9];
    patient_prefix(pp, rv->patient_number, 'r');
    w->key.len = 0;
    buf_put(&w->key, pp, 9);
    buf_put_be64(&w->key, ts_key(rv->ts_us));
    buf_put(&w->key, rv->record_id, rv->record_id_len);
    k = val(w->key.data, w->key.len);
    mv = val("", 0);
    rc = mdb_put(w->txn, s->dbi[DB_PATIENT], &k, &mv, 0);
    if (rc) goto out;
    /* the public copy */
    v.len = 0;
    buf_put(&v, rv->pid.b, 16);
    buf_put_be16(&v, (uint16_t)year);
    buf_putc(&v, (char)rv->type_len);
    buf_put(&v, rv->type, rv->type_len);
    if (public_fields) buf_put(&v, public_fields, pf_len); /* none: a tombstone's copy */
    key_record(&w->key, rv->record_id, rv->record_id_len, rv->valid_from, rv->version);
    {
        buf pk = {0};
        buf_putc(&pk, 'R');
        buf_put(&pk, w->key.data, w->key.len);
        k = val(pk.data, pk.len);
        mv = val(v.data, v.len);
        rc = mdb_put(w->txn, s->dbi[DB_PUBLIC], &k, &mv, 0);
        buf_free(&pk);
    }
    if (rc) goto out;
    for (int pass = 0; pass < 2; pass++) {
        w->key.len = 0;
        buf_putc(&w->key, 'T');
        if (pass == 0)
            buf_put(&w->key, rv->type, rv->type_len);
        else
            buf_putc(&w->key, '*');
        buf_putc(&w->key, 0);
        buf_put_be16(&w->key, (uint16_t)year);
        buf_put(&w->key, rv->record_id, rv->record_id_len);
        k = val(w->key.data, w->key.len);
        mv = val("", 0);
        rc = mdb_put(w->txn, s->dbi[DB_PUBLIC], &k, &mv, 0);
        if (rc) goto out;
    }
    log_add(w, 'r', rv->record_id, rv->record_id_len, rv->version);
out:
    buf_free(&v);
    return rc ? mdb_fail(e, rc, "record insert") : MS_OK;
}

ms_code store_patient_latest(store_write *w, const patient_ref *p, patient_version *pv, arena *mem, bool *found,
                             ms_err *e)
{
    unsigned char prefix[9];
    patient_prefix(prefix, p->number, 'v');
    key_versioned(&w->key, prefix, 9, INT64_MAX, UINT32_MAX);
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, w->s->dbi[DB_PATIENT], &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    *found = false;
    rc = seek_first_version(c, &w->key, 9, &k, &v);
    ms_code out = MS_OK;
    if (rc == 0) {
        if (!decode_patient(&v, p, pv, mem))
            out = ms_fail(e, MS_ECORRUPT, "store: bad patient entry");
        else
            *found = true;
    } else if (rc != MDB_NOTFOUND) {
        out = mdb_fail(e, rc, "patient lookup");
    }
    mdb_cursor_close(c);
    return out;
}

static ms_code patient_write(store_write *w, const patient_version *pv, bool logged, ms_err *e);

ms_code store_patient_put(store_write *w, const patient_version *pv, ms_err *e) { return patient_write(w, pv, true, e); }

ms_code store_patient_restate(store_write *w, const patient_version *pv, ms_err *e)
{
    return patient_write(w, pv, false, e);
}

static ms_code patient_write(store_write *w, const patient_version *pv, bool logged, ms_err *e)
{
    /* refuse what the encoding cannot carry, rather than write a version that never reads back */
    if (pv->nfields > PATIENT_STATE_MAX_FIELDS)
        return ms_fail(e, MS_EINVAL, "store: a patient version of %u fields (at most %u)", pv->nfields,
                       PATIENT_STATE_MAX_FIELDS);
    for (uint32_t i = 0; i < pv->nfields; i++)
        if (pv->fields[i].key_len > RECORD_KEY_MAX)
            return ms_fail(e, MS_EINVAL, "store: a field name of %u bytes (at most %d)", pv->fields[i].key_len,
                           RECORD_KEY_MAX);
    unsigned char prefix[9];
    patient_prefix(prefix, pv->number, 'v');
    buf v = {0};
    encode_patient(&v, pv);
    key_versioned(&w->key, prefix, 9, pv->valid_from, pv->version);
    MDB_val k = val(w->key.data, w->key.len), mv = val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_PATIENT], &k, &mv, 0);
    buf_free(&v);
    if (rc) return mdb_fail(e, rc, "patient insert");
    if (logged) log_add(w, 'p', pv->pid.b, 16, pv->version);
    return MS_OK;
}

static void public_patient_prefix(unsigned char out[9], uint64_t number)
{
    out[0] = 'P';
    ms_set_be64(out + 1, number);
}

static ms_code public_patient_at(MDB_txn *txn, MDB_dbi dbi, buf *kb, uint64_t number, int64_t as_of, buf *out,
                                 bool *found, ms_err *e)
{
    unsigned char prefix[9];
    *found = false;
    if (as_of < 0) return MS_OK;
    public_patient_prefix(prefix, number);
    key_versioned(kb, prefix, 9, as_of, UINT32_MAX);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    *found = false;
    rc = seek_first_version(c, kb, 9, &k, &v);
    if (rc == 0) {
        out->len = 0;
        buf_put(out, v.mv_data, v.mv_size);
        *found = true;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, "public patient lookup") : MS_OK;
}

ms_code store_public_patient_latest(store_write *w, const patient_ref *p, buf *out, bool *found, ms_err *e)
{
    return public_patient_at(w->txn, w->s->dbi[DB_PUBLIC], &w->key, p->number, INT64_MAX, out, found, e);
}

ms_code store_public_patient_put(store_write *w, const patient_ref *p, uint32_t version, const char *fields, size_t len,
                                 ms_err *e)
{
    unsigned char prefix[9];
    public_patient_prefix(prefix, p->number);
    key_versioned(&w->key, prefix, 9, w->now, version);
    MDB_val k = val(w->key.data, w->key.len), v = val(fields, len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_PUBLIC], &k, &v, 0);
    return rc ? mdb_fail(e, rc, "public patient insert") : MS_OK;
}

static void write_free(store_write *w)
{
    free(w->inserted);
    buf_free(&w->log);
    buf_free(&w->key);
    free(w);
}

/* The transaction did not commit: its identities must not resolve to numbers that do not exist. */
static void undo_identities(store_write *w)
{
    for (size_t i = 0; i < w->ninserted; i++)
        identity_index_remove(w->s->identities, w->inserted[i]);
}

void store_write_abort(store_write *w)
{
    if (!w) return;
    mdb_txn_abort(w->txn);
    undo_identities(w);
    write_free(w);
}

static void hex32(const unsigned char h[32], char out[65])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++)
        out[2 * i] = d[h[i] >> 4], out[2 * i + 1] = d[h[i] & 15];
    out[64] = 0;
}

ms_code store_audit_append(store_write *w, const char *members, size_t len, ms_err *e)
{
    char prev[65];
    hex32(w->audit_head, prev);
    uint64_t seq = w->audit_seq + 1;
    buf v = {0};
    buf_printf(&v, "{\"seq\":%llu,\"prev\":\"%s\",", (unsigned long long)seq, prev);
    buf_put(&v, members, len);
    buf_putc(&v, '}');
    unsigned char kb[8];
    ms_set_be64(kb, seq);
    MDB_val k = val(kb, 8), mv = val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_AUDIT], &k, &mv, MDB_APPEND);
    if (!rc) {
        SHA256((const unsigned char *)v.data, v.len, w->audit_head);
        w->audit_seq = seq;
    }
    buf_free(&v);
    return rc ? mdb_fail(e, rc, "audit append") : MS_OK;
}

ms_code store_audit_scan(store_read *r, uint64_t after, store_audit_fn fn, void *ctx, ms_err *e)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_AUDIT], &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    unsigned char kb[8];
    ms_set_be64(kb, after + 1);
    MDB_val k = val(kb, 8), v;
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
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, "audit scan") : MS_OK;
}

typedef struct {
    uint64_t expect;
    unsigned char prev[32];
    uint64_t bad;
    char *why;
    size_t why_cap;
} verify_state;

static bool verify_entry(void *ctx, uint64_t seq, const char *v, size_t len)
{
    verify_state *st = ctx;
    char head[96], prev[65];
    hex32(st->prev, prev);
    int n = snprintf(head, sizeof head, "{\"seq\":%llu,\"prev\":\"%s\",", (unsigned long long)seq, prev);
    if (seq != st->expect) {
        st->bad = st->expect;
        snprintf(st->why, st->why_cap, "entry %llu is missing (the next entry is %llu): deleted or reordered",
                 (unsigned long long)st->expect, (unsigned long long)seq);
        return false;
    }
    if (len < (size_t)n + 1 || memcmp(v, head, (size_t)n) != 0 || v[len - 1] != '}') {
        st->bad = seq;
        snprintf(st->why, st->why_cap,
                 "entry %llu does not carry the hash of entry %llu (it, or an earlier entry, was edited, "
                 "removed or moved)",
                 (unsigned long long)seq, (unsigned long long)seq - 1);
        return false;
    }
    SHA256((const unsigned char *)v, len, st->prev);
    st->expect++;
    return true;
}

ms_code store_audit_verify(store *s, uint64_t *entries, unsigned char head[32], uint64_t *bad, char *why,
                           size_t why_cap, ms_err *e)
{
    store_read *r;
    ms_code rc = store_read_begin(s, &r, e);
    if (rc != MS_OK) return rc;
    verify_state st = {.expect = 1, .why = why, .why_cap = why_cap};
    why[0] = 0;
    rc = store_audit_scan(r, 0, verify_entry, &st, e);
    store_read_end(r);
    *bad = st.bad;
    *entries = st.expect - 1;
    memcpy(head, st.prev, 32);
    return rc;
}

ms_code store_write_commit(store_write *w, uint64_t *commit_pos, ms_err *e)
{
    store *s = w->s;
    int rc = 0;
    ms_code code = seglog_sync(s->log, e); /* the bodies first: LMDB must never point at bytes not on disk */
    if (code != MS_OK) {
        store_write_abort(w);
        return code;
    }
    uint64_t pos = s->commit_pos + 1;
    ms_set_be32(w->log.data + 8, w->nlog);
    unsigned char kb[8];
    ms_set_be64(kb, pos);
    MDB_val k = val(kb, 8), v = val(w->log.data, w->log.len);
    if (!(rc = mdb_put(w->txn, s->dbi[DB_LOG], &k, &v, 0)) &&
        !(rc = meta_put_u64(w->txn, s->dbi[DB_META], "log_end", seglog_end(s->log))) &&
        !(rc = meta_put_u64(w->txn, s->dbi[DB_META], "commit_pos", pos)) &&
        !(rc = meta_put_u64(w->txn, s->dbi[DB_META], "last_commit", (uint64_t)w->now)) &&
        !(rc = meta_put_u64(w->txn, s->dbi[DB_META], "patients", w->patients))) {
        rc = mdb_txn_commit(w->txn);
        w->txn = NULL;
    }
    if (rc) {
        if (w->txn) mdb_txn_abort(w->txn);
        undo_identities(w);
        write_free(w);
        return write_fail(s, e, rc, "commit");
    }
    s->commit_pos = pos;
    s->audit_seq = w->audit_seq;
    memcpy(s->audit_head, w->audit_head, 32);
    s->last_commit = w->now;
    s->patients = w->patients;
    if (commit_pos) *commit_pos = pos;
    write_free(w);
    return MS_OK;
}

/* ---- read side ---- */

ms_code store_read_begin(store *s, store_read **out, ms_err *e)
{
    store_read *r = ms_calloc(1, sizeof *r);
    r->s = s;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
    if (rc) {
        free(r);
        return mdb_fail(e, rc, "begin read");
    }
    *out = r;
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
    meta_get_u64(r->txn, r->s->dbi[DB_META], name, &x);
    return x;
}

int64_t store_last_commit(store_read *r) { return (int64_t)read_meta(r, "last_commit"); }
uint64_t store_patient_count(store_read *r) { return read_meta(r, "patients"); }
uint64_t store_commit_pos(store_read *r) { return read_meta(r, "commit_pos"); }

ms_code store_ident_lookup(store_read *r, const char *key, size_t len, patient_id *pid, bool *found, ms_err *e)
{
    patient_ref p;
    ms_code rc = ident_find(r->s, r->txn, key, len, &p, found, e);
    if (rc == MS_OK && *found) *pid = p.id;
    return rc;
}

ms_code store_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, record_version *rv, bool *found,
                        ms_err *e)
{
    buf kb = {0};
    ms_code rc = record_at(r->txn, r->s->dbi[DB_RECORD], &kb, rid, len, as_of, rv, found, e);
    buf_free(&kb);
    return rc;
}

ms_code store_patient_at(store_read *r, const patient_id *pid, int64_t as_of, patient_version *pv, arena *mem,
                         bool *found, ms_err *e)
{
    unsigned char prefix[9];
    patient_ref who = {*pid, 0};
    *found = false;
    if (as_of < 0 || !store_patient_number(r->s, pid, &who.number)) return MS_OK;
    patient_prefix(prefix, who.number, 'v');
    buf kb = {0};
    key_versioned(&kb, prefix, 9, as_of, UINT32_MAX);
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PATIENT], &c);
    if (rc) {
        buf_free(&kb);
        return mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    *found = false;
    ms_code out = MS_OK;
    rc = seek_first_version(c, &kb, 9, &k, &v);
    if (rc == 0) {
        if (!decode_patient(&v, &who, pv, mem)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad patient entry");
        } else {
            *found = true;
            MDB_val nk, nv;
            if (mdb_cursor_get(c, &nk, &nv, MDB_PREV) == 0 && nk.mv_size == 21 && memcmp(nk.mv_data, prefix, 9) == 0)
                pv->valid_to = (int64_t)~ms_get_be64((char *)nk.mv_data + 9); /* the key holds ~valid_from */
        }
    } else if (rc != MDB_NOTFOUND) {
        out = mdb_fail(e, rc, "patient lookup");
    }
    mdb_cursor_close(c);
    buf_free(&kb);
    return out;
}

ms_code store_patient_history(store_read *r, const patient_id *pid, patient_version **out, uint32_t *n, arena *mem,
                              ms_err *e)
{
    unsigned char prefix[9];
    patient_ref who = {*pid, 0};
    *n = 0;
    *out = NULL;
    if (!store_patient_number(r->s, pid, &who.number)) return MS_OK;
    patient_prefix(prefix, who.number, 'v');
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PATIENT], &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    uint32_t count = 0, cap = 16;
    patient_version *list = arena_alloc(mem, sizeof *list * cap);
    MDB_val k = val(prefix, 9), v;
    ms_code code = MS_OK;
    /* newest first in key order: collect, then reverse */
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 21 || memcmp(k.mv_data, prefix, 9) != 0) break;
        if (count == cap) {
            patient_version *bigger = arena_alloc(mem, sizeof *list * cap * 2);
            memcpy(bigger, list, sizeof *list * cap);
            list = bigger;
            cap *= 2;
        }
        if (!decode_patient(&v, &who, &list[count], mem)) {
            code = ms_fail(e, MS_ECORRUPT, "store: bad patient entry");
            break;
        }
        list[count].valid_to = count ? list[count - 1].valid_from : -1;
        count++;
    }
    mdb_cursor_close(c);
    if (code != MS_OK) return code;
    if (rc && rc != MDB_NOTFOUND) return mdb_fail(e, rc, "patient history");
    for (uint32_t i = 0; i < count / 2; i++) {
        patient_version t = list[i];
        list[i] = list[count - 1 - i];
        list[count - 1 - i] = t;
    }
    *out = list;
    *n = count;
    return MS_OK;
}

#define COALESCE_GAP ((uint64_t)64 << 10) /* read across gaps up to this size rather than seek again */
#define COALESCE_MAX ((uint64_t)4 << 20)  /* but never read more than this at once */

static int pos_order_cmp(const void *a, const void *b)
{
    const state_field *x = *(const state_field *const *)a, *y = *(const state_field *const *)b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

ms_code store_field_values(store *s, const state_field *fields, uint32_t n, const char **vals, buf *scratch, ms_err *e)
{
    const state_field **order = ms_malloc(sizeof *order * (n ? n : 1));
    size_t *offset = ms_malloc(sizeof *offset * (n ? n : 1)); /* of each run's bytes in scratch */
    for (uint32_t i = 0; i < n; i++)
        order[i] = &fields[i];
    qsort(order, n, sizeof *order, pos_order_cmp);
    ms_code rc = MS_OK;
    scratch->len = 0;
    for (uint32_t i = 0; i < n && rc == MS_OK;) {
        /* a run of fields close together: one read from the first start to the last end */
        uint64_t start = order[i]->pos, end = start + order[i]->len;
        uint32_t j = i + 1;
        while (j < n && order[j]->pos <= end + COALESCE_GAP && order[j]->pos + order[j]->len - start <= COALESCE_MAX) {
            if (order[j]->pos + order[j]->len > end) end = order[j]->pos + order[j]->len;
            j++;
        }
        size_t at = scratch->len;
        buf_reserve(scratch, (size_t)(end - start));
        rc = seglog_read(s->log, start, scratch->data + at, (size_t)(end - start), e);
        if (rc != MS_OK) break;
        scratch->len += (size_t)(end - start);
        for (uint32_t k = i; k < j; k++)
            offset[order[k] - fields] = at + (size_t)(order[k]->pos - start);
        i = j;
    }
    for (uint32_t i = 0; i < n && rc == MS_OK; i++) {
        vals[i] = scratch->data + offset[i];
        if (XXH3_64bits(vals[i], fields[i].len) != fields[i].hash)
            rc = ms_fail(e, MS_ECORRUPT, "store: a stored field value failed its checksum");
    }
    free(order);
    free(offset);
    return rc;
}

ms_code store_field_value(store *s, const state_field *f, buf *out, ms_err *e)
{
    const char *v;
    buf scratch = {0};
    ms_code rc = store_field_values(s, f, 1, &v, &scratch, e);
    if (rc == MS_OK) buf_put(out, v, f->len);
    buf_free(&scratch);
    return rc;
}

ms_code store_record_body(store *s, const record_version *rv, buf *out, ms_err *e)
{
    buf_reserve(out, rv->body_len);
    ms_code rc = seglog_read(s->log, rv->body_pos, out->data + out->len, rv->body_len, e);
    if (rc != MS_OK) return rc;
    if (XXH3_64bits(out->data + out->len, rv->body_len) != rv->body_hash)
        return ms_fail(e, MS_ECORRUPT, "store: a stored record body failed its checksum");
    out->len += rv->body_len;
    out->data[out->len] = 0;
    return MS_OK;
}

ms_code store_patient_records(store_read *r, const patient_id *pid, int64_t since, int64_t until, const void *after_key,
                              size_t after_len, store_patient_record_fn fn, void *ctx, ms_err *e)
{
    unsigned char start[17];
    uint64_t number;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK; /* no such patient: no records */
    patient_prefix(start, number, 'r');
    ms_set_be64(start + 9, ts_key(since));
    if (after_key && (after_len < 17 || memcmp(after_key, start, 9) != 0))
        return ms_fail(e, MS_EINVAL, "cursor: not a cursor of this patient's records");
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PATIENT], &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    MDB_val k = val(start, 17), v;
    bool skip_equal = false;
    if (after_key && memcmp(after_key, start, 17) > 0) {
        k = val(after_key, after_len);
        skip_equal = true;
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 17 || memcmp(k.mv_data, start, 9) != 0) break;
        if (skip_equal) {
            skip_equal = false;
            if (k.mv_size == after_len && memcmp(k.mv_data, after_key, after_len) == 0) continue;
        }
        int64_t ts = (int64_t)(ms_get_be64((char *)k.mv_data + 9) ^ TS_SIGN);
        if (ts >= until) break;
        if (!fn(ctx, ts, (char *)k.mv_data + 17, k.mv_size - 17, k.mv_data, k.mv_size)) break;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, "patient records") : MS_OK;
}

/* Walk patient `number`'s records index in txn and report each record whose version current at as_of
 * still belongs to the patient with the entry's event time and is not a tombstone. */
static ms_code live_records(MDB_txn *txn, const store *s, uint64_t number, int64_t as_of, store_record_fn fn, void *ctx,
                            ms_err *e)
{
    unsigned char prefix[9];
    patient_prefix(prefix, number, 'r');
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->dbi[DB_PATIENT], &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    buf kb = {0};
    ms_code out = MS_OK;
    MDB_val k = val(prefix, 9), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 17 || memcmp(k.mv_data, prefix, 9) != 0) break;
        int64_t ts = (int64_t)(ms_get_be64((char *)k.mv_data + 9) ^ TS_SIGN);
        record_version rv;
        bool found;
        /* k points into the cursor's page: copy the id before another lookup moves nothing, but be safe */
        char rid[RECORD_ID_MAX + 1];
        size_t rl = k.mv_size - 17;
        if (rl > RECORD_ID_MAX) continue;
        memcpy(rid, (char *)k.mv_data + 17, rl);
        if ((out = record_at(txn, s->dbi[DB_RECORD], &kb, rid, rl, as_of, &rv, &found, e)) != MS_OK) break;
        if (!found || rv.deleted || rv.patient_number != number || rv.ts_us != ts) continue;
        if (!fn(ctx, &rv)) break;
    }
    mdb_cursor_close(c);
    buf_free(&kb);
    if (out == MS_OK && rc && rc != MDB_NOTFOUND) out = mdb_fail(e, rc, "patient records");
    return out;
}

ms_code store_live_records(store_read *r, const patient_id *pid, int64_t as_of, store_record_fn fn, void *ctx,
                           ms_err *e)
{
    uint64_t number;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    return live_records(r->txn, r->s, number, as_of, fn, ctx, e);
}

ms_code store_write_live_records(store_write *w, uint64_t number, store_record_fn fn, void *ctx, ms_err *e)
{
    return live_records(w->txn, w->s, number, INT64_MAX, fn, ctx, e);
}

ms_code store_public_patient_at(store_read *r, const patient_id *pid, int64_t as_of, buf *fields, bool *found,
                                ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    buf kb = {0};
    ms_code rc = public_patient_at(r->txn, r->s->dbi[DB_PUBLIC], &kb, number, as_of, fields, found, e);
    buf_free(&kb);
    return rc;
}

/* A public record entry: pid (16), year (be16), type length (1), type, public fields (JSON). */
static bool decode_public_record(const MDB_val *v, public_record *pr)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < 19 || v->mv_size < 19u + p[18]) return false;
    memcpy(pr->pid.b, p, 16);
    pr->year = ms_get_be16(p + 16);
    size_t tl = p[18];
    memcpy(pr->type, p + 19, tl);
    pr->type[tl] = 0;
    pr->fields = (const char *)p + 19 + tl;
    pr->fields_len = v->mv_size - 19 - tl;
    pr->deleted = pr->fields_len == 0; /* a live copy is at least "{}" */
    return true;
}

ms_code store_public_record_at(store_read *r, const char *rid, size_t len, int64_t as_of, public_record *pr,
                               bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len) || as_of < 0) return MS_OK;
    buf kb = {0};
    buf_putc(&kb, 'R');
    buf_put(&kb, rid, len);
    buf_putc(&kb, 0);
    buf_put_be64(&kb, ~(uint64_t)as_of);
    buf_put_be32(&kb, 0);
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PUBLIC], &c);
    if (rc) {
        buf_free(&kb);
        return mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    ms_code out = MS_OK;
    rc = seek_first_version(c, &kb, len + 2, &k, &v);
    if (rc == 0 && k.mv_size == len + 14) {
        if (!decode_public_record(&v, pr))
            out = ms_fail(e, MS_ECORRUPT, "store: bad public record entry");
        else
            *found = true;
    } else if (rc && rc != MDB_NOTFOUND) {
        out = mdb_fail(e, rc, "public record lookup");
    }
    mdb_cursor_close(c);
    buf_free(&kb);
    return out;
}

ms_code store_public_index(store_read *r, const char *type, int year_from, int year_to, const void *after_key,
                           size_t after_len, store_public_index_fn fn, void *ctx, ms_err *e)
{
    buf start = {0};
    buf_putc(&start, 'T');
    buf_puts(&start, type);
    buf_putc(&start, 0);
    size_t plen = start.len;
    buf_put_be16(&start, (uint16_t)(year_from < 0 ? 0 : year_from));
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PUBLIC], &c);
    if (rc) {
        buf_free(&start);
        return mdb_fail(e, rc, "cursor");
    }
    MDB_val k = val(start.data, start.len), v;
    bool skip_equal = false;
    if (after_key && after_len > plen + 2 && memcmp(after_key, start.data, plen) == 0 &&
        record_key_cmp(after_key, after_len, start.data, start.len) > 0) {
        k = val(after_key, after_len);
        skip_equal = true;
    }
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen + 2 || memcmp(k.mv_data, start.data, plen) != 0) break;
        if (skip_equal) {
            skip_equal = false;
            if (k.mv_size == after_len && memcmp(k.mv_data, after_key, after_len) == 0) continue;
        }
        int year = ms_get_be16((char *)k.mv_data + plen);
        if (year > year_to) break;
        if (!fn(ctx, year, (char *)k.mv_data + plen + 2, k.mv_size - plen - 2, k.mv_data, k.mv_size)) break;
    }
    mdb_cursor_close(c);
    buf_free(&start);
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, "public index") : MS_OK;
}

ms_code store_bulk_patients(store *s, const bulk_patient *pts, const uint64_t *body_pos, size_t n, ms_err *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return mdb_fail(e, rc, "begin");
    int64_t now = ms_now_us();
    if (now <= s->last_commit) now = s->last_commit + 1;
    buf k = {0}, v = {0};
    state_field fields[RECORD_MAX_FIELDS];
    for (size_t i = 0; i < n && !rc; i++) {
        const parsed_record *r = pts[i].record;
        uint32_t nf = 0;
        for (uint32_t j = 0; j < r->nfields; j++) {
            const record_field *f = &r->fields[j];
            if (f->key_len == 9 && memcmp(f->key, "record_id", 9) == 0) continue;
            fields[nf++] = (state_field){f->key,    f->key_len, body_pos[i] + (uint64_t)(f->val - r->body),
                                         f->val_len, f->hash,    r->ts_us,
                                         now};
        }
        patient_version pv = {.number = pts[i].number,
                              .version = 1,
                              .valid_from = now,
                              .valid_to = -1,
                              .cause_record = "",
                              .cause_record_len = 0,
                              .source = "preload",
                              .source_len = 7,
                              .fields = fields,
                              .nfields = nf};
        patient_id_from_number(s->pid_key, pv.number, &pv.pid);
        unsigned char prefix[9];
        patient_prefix(prefix, pv.number, 'v');
        key_versioned(&k, prefix, 9, now, 1);
        encode_patient(&v, &pv);
        MDB_val mk = val(k.data, k.len), mv = val(v.data, v.len);
        rc = mdb_put(txn, s->dbi[DB_PATIENT], &mk, &mv, MDB_APPEND);
        if (rc) break;
        unsigned char pp[9];
        public_patient_prefix(pp, pv.number);
        key_versioned(&k, pp, 9, now, 1);
        mk = val(k.data, k.len);
        mv = val("{}", 2);
        rc = mdb_put(txn, s->dbi[DB_PUBLIC], &mk, &mv, MDB_APPEND);
    }
    buf_free(&k);
    buf_free(&v);
    if (!rc) {
        ms_code c = seglog_sync(s->log, e); /* the bodies before the references to them */
        if (c != MS_OK) {
            mdb_txn_abort(txn);
            return c;
        }
    }
    if (!rc) rc = meta_put_u64(txn, s->dbi[DB_META], "log_end", seglog_end(s->log));
    if (!rc) rc = meta_put_u64(txn, s->dbi[DB_META], "last_commit", (uint64_t)now);
    if (!rc)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) return mdb_fail(e, rc, "bulk patients (the store must have no patients)");
    s->last_commit = now;
    return MS_OK;
}

ms_code store_bulk_idents(store *s, const bulk_ident *ids, size_t n, ms_err *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return mdb_fail(e, rc, "begin");
    buf v = {0};
    for (size_t i = 0; i < n && !rc; i++) {
        patient_id pid;
        patient_id_from_number(s->pid_key, ids[i].number, &pid);
        unsigned char kb[8];
        ms_set_be64(kb, ids[i].number);
        v.len = 0;
        buf_put(&v, pid.b, 16);
        buf_put(&v, ids[i].key, ids[i].key_len);
        MDB_val k = val(kb, 8), mv = val(v.data, v.len);
        rc = mdb_put(txn, s->dbi[DB_IDENT], &k, &mv, MDB_APPEND);
        if (!rc) identity_index_put(s->identities, identity_hash_of(ids[i].key, ids[i].key_len), ids[i].number);
    }
    buf_free(&v);
    uint64_t patients = 0;
    if (!rc) rc = meta_get_u64(txn, s->dbi[DB_META], "patients", &patients);
    if (!rc) rc = meta_put_u64(txn, s->dbi[DB_META], "patients", patients + n);
    if (!rc)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) return mdb_fail(e, rc, "bulk identities (numbers must be new and in order)");
    s->patients = patients + n;
    return MS_OK;
}

ms_code store_log_entry(store_read *r, uint64_t pos, int64_t *commit_time, store_log_fn fn, void *ctx, bool *found,
                        ms_err *e)
{
    unsigned char kb[8];
    ms_set_be64(kb, pos);
    MDB_val k = val(kb, 8), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_LOG], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return mdb_fail(e, rc, "commit log");
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

/* ---- exact versions, for the sinks: what one commit (valid_from = its commit time) wrote ---- */

static ms_code exact_get(store_read *r, int db, const buf *kb, MDB_val *v, bool *found, const char *what, ms_err *e)
{
    MDB_val k = val(kb->data, kb->len);
    int rc = mdb_get(r->txn, r->s->dbi[db], &k, v);
    *found = rc == 0;
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, what) : MS_OK;
}

ms_code store_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                             record_version *rv, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len)) return MS_OK;
    buf kb = {0};
    key_record(&kb, rid, len, valid_from, version);
    MDB_val v;
    ms_code rc = exact_get(r, DB_RECORD, &kb, &v, found, "record lookup", e);
    buf_free(&kb);
    if (rc || !*found) return rc;
    if (!decode_record(&v, rid, len, rv)) return ms_fail(e, MS_ECORRUPT, "store: bad record entry");
    rv->valid_to = -1; /* not looked up: the sinks derive it from the next version */
    return MS_OK;
}

ms_code store_public_record_version(store_read *r, const char *rid, size_t len, int64_t valid_from, uint32_t version,
                                    public_record *pr, bool *found, ms_err *e)
{
    *found = false;
    if (len == 0 || len > RECORD_ID_MAX || memchr(rid, 0, len)) return MS_OK;
    buf kb = {0};
    buf_putc(&kb, 'R');
    buf_put(&kb, rid, len);
    buf_putc(&kb, 0);
    buf_put_be64(&kb, ~(uint64_t)valid_from);
    buf_put_be32(&kb, ~version);
    MDB_val v;
    ms_code rc = exact_get(r, DB_PUBLIC, &kb, &v, found, "public record lookup", e);
    buf_free(&kb);
    if (rc || !*found) return rc;
    return decode_public_record(&v, pr) ? MS_OK : ms_fail(e, MS_ECORRUPT, "store: bad public record entry");
}

ms_code store_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                              patient_version *pv, arena *mem, bool *found, ms_err *e)
{
    patient_ref who = {*pid, 0};
    *found = false;
    if (!store_patient_number(r->s, pid, &who.number)) return MS_OK;
    unsigned char prefix[9];
    patient_prefix(prefix, who.number, 'v');
    buf kb = {0};
    key_versioned(&kb, prefix, 9, valid_from, version);
    MDB_val v;
    ms_code rc = exact_get(r, DB_PATIENT, &kb, &v, found, "patient lookup", e);
    buf_free(&kb);
    if (rc || !*found) return rc;
    if (!decode_patient(&v, &who, pv, mem)) return ms_fail(e, MS_ECORRUPT, "store: bad patient entry");
    pv->valid_to = -1; /* not looked up: the sinks derive it from the next version */
    return MS_OK;
}

ms_code store_public_patient_version(store_read *r, const patient_id *pid, int64_t valid_from, uint32_t version,
                                     buf *fields, bool *found, ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    unsigned char prefix[9];
    public_patient_prefix(prefix, number);
    buf kb = {0};
    key_versioned(&kb, prefix, 9, valid_from, version);
    MDB_val v;
    ms_code rc = exact_get(r, DB_PUBLIC, &kb, &v, found, "public patient lookup", e);
    buf_free(&kb);
    if (rc || !*found) return rc;
    fields->len = 0;
    buf_put(fields, v.mv_data, v.mv_size);
    return MS_OK;
}

ms_code store_identity_key(store_read *r, const patient_id *pid, buf *key, bool *found, ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    unsigned char kb[8];
    ms_set_be64(kb, number);
    MDB_val k = val(kb, 8), v;
    int rc = mdb_get(r->txn, r->s->dbi[DB_IDENT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return mdb_fail(e, rc, "identity lookup");
    patient_ref p;
    const char *ik;
    size_t il;
    if (!decode_ident(&v, &p, &ik, &il)) return ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
    key->len = 0;
    buf_put(key, ik, il);
    *found = true;
    return MS_OK;
}

static ms_code small_write(store *s, int db, const void *key, size_t kl, const void *v, size_t vl, unsigned flags,
                           bool del, const char *what, ms_err *e);

#define ACCOUNT_FORMAT 0x01 /* first byte of an account entry; older entries begin with the role */
#define ACCOUNT_DISABLED 0x01
#define ACCOUNT_HEAD 18 /* format, flags, be64 created, be64 changed */

/* A user entry of either format (store.h LAYOUT); false if it is malformed. */
static bool decode_account(const MDB_val *k, const MDB_val *v, store_account *a)
{
    const char *p = v->mv_data;
    size_t n = v->mv_size;
    if (k->mv_size == 0 || k->mv_size >= STORE_USER_MAX) return false;
    memcpy(a->name, k->mv_data, k->mv_size);
    a->name[k->mv_size] = 0;
    a->disabled = false;
    a->created = a->changed = 0;
    if (n >= ACCOUNT_HEAD && (unsigned char)p[0] == ACCOUNT_FORMAT) {
        a->disabled = (p[1] & ACCOUNT_DISABLED) != 0;
        a->created = (int64_t)ms_get_be64(p + 2);
        a->changed = (int64_t)ms_get_be64(p + 10);
        p += ACCOUNT_HEAD;
        n -= ACCOUNT_HEAD;
    }
    const char *nul = memchr(p, 0, n);
    size_t rl = nul ? (size_t)(nul - p) : 0, hl = nul ? n - rl - 1 : 0;
    if (!nul || rl == 0 || rl >= STORE_ROLE_MAX || hl >= STORE_HASH_MAX || memchr(nul + 1, 0, hl)) return false;
    memcpy(a->role, p, rl);
    a->role[rl] = 0;
    memcpy(a->hash, nul + 1, hl);
    a->hash[hl] = 0;
    return true;
}

static ms_code account_get(MDB_txn *txn, MDB_dbi dbi, const char *name, store_account *a, bool *found, ms_err *e)
{
    *found = false;
    size_t n = strlen(name);
    if (n == 0 || n >= STORE_USER_MAX) return MS_OK; /* no such name can be stored */
    MDB_val k = val(name, n), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return mdb_fail(e, rc, "user lookup");
    if (!decode_account(&k, &v, a)) return ms_fail(e, MS_ECORRUPT, "store: bad user entry");
    *found = true;
    return MS_OK;
}

static ms_code account_list(MDB_txn *txn, MDB_dbi dbi, store_account_fn fn, void *ctx, ms_err *e)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    MDB_val k, v;
    store_account a;
    ms_code code = MS_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (!decode_account(&k, &v, &a)) {
            code = ms_fail(e, MS_ECORRUPT, "store: bad user entry");
            break;
        }
        if (!fn(ctx, &a)) break;
    }
    mdb_cursor_close(c);
    if (code == MS_OK && rc && rc != MDB_NOTFOUND) code = mdb_fail(e, rc, "user list");
    return code;
}

ms_code store_user_get(store_read *r, const char *name, char role[STORE_ROLE_MAX], char hash[STORE_HASH_MAX],
                       bool *found, ms_err *e)
{
    store_account a;
    ms_code rc = account_get(r->txn, r->s->dbi[DB_USERS], name, &a, found, e);
    if (rc == MS_OK && *found) {
        memcpy(role, a.role, STORE_ROLE_MAX);
        memcpy(hash, a.hash, STORE_HASH_MAX);
    }
    return rc;
}

/* A small write outside the ingest writer (token revocation, sink positions): its own transaction. */
static ms_code small_write(store *s, int db, const void *key, size_t kl, const void *v, size_t vl, unsigned flags,
                           bool del, const char *what, ms_err *e)
{
    if (s->read_only) return ms_fail(e, MS_EINVAL, "store: %s: the store is open read-only", what);
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return mdb_fail(e, rc, what);
    MDB_val k = val(key, kl), mv = val(v, vl);
    rc = del ? mdb_del(txn, s->dbi[db], &k, NULL) : mdb_put(txn, s->dbi[db], &k, &mv, flags);
    if (rc)
        mdb_txn_abort(txn);
    else
        rc = mdb_txn_commit(txn);
    if (rc == MDB_KEYEXIST) return ms_fail(e, MS_ECONFLICT, "%s: already exists", what);
    if (rc == MDB_NOTFOUND) return ms_fail(e, MS_ENOTFOUND, "%s: not found", what);
    return rc ? write_fail(s, e, rc, what) : MS_OK;
}

ms_code store_token_put(store *s, const unsigned char hash[32], int64_t expires, const char *user, const char *role,
                        ms_err *e)
{
    buf v = {0};
    buf_put_be64(&v, (uint64_t)expires);
    buf_puts(&v, role);
    buf_putc(&v, 0);
    buf_puts(&v, user);
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) {
        buf_free(&v);
        return mdb_fail(e, rc, "token");
    }
    store_account a;
    bool found = false;
    ms_code code = account_get(txn, s->dbi[DB_USERS], user, &a, &found, e);
    if (code == MS_OK && (!found || a.disabled))
        code = ms_fail(e, MS_ENOTFOUND, "token: the account is %s", found ? "disabled" : "gone");
    if (code == MS_OK) {
        MDB_val k = val(hash, 32), mv = val(v.data, v.len);
        rc = mdb_put(txn, s->dbi[DB_TOKENS], &k, &mv, MDB_NOOVERWRITE);
        if (!rc) {
            rc = mdb_txn_commit(txn);
            txn = NULL;
        }
        if (rc)
            code = rc == MDB_KEYEXIST ? ms_fail(e, MS_ECONFLICT, "token: already exists") : mdb_fail(e, rc, "token");
    }
    if (txn) mdb_txn_abort(txn);
    buf_free(&v);
    return code;
}

ms_code store_token_delete(store *s, const unsigned char hash[32], ms_err *e)
{
    return small_write(s, DB_TOKENS, hash, 32, NULL, 0, 0, true, "token", e);
}

ms_code store_token_get(store_read *r, const unsigned char hash[32], int64_t *expires, char user[STORE_USER_MAX],
                        char role[STORE_ROLE_MAX], bool *found, ms_err *e)
{
    MDB_val k = val(hash, 32), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_TOKENS], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return mdb_fail(e, rc, "token lookup");
    const char *p = v.mv_data, *end = p + v.mv_size;
    const char *nul = v.mv_size > 8 ? memchr(p + 8, 0, v.mv_size - 8) : NULL;
    if (!nul || (size_t)(nul - p - 8) >= STORE_ROLE_MAX || (size_t)(end - nul - 1) >= STORE_USER_MAX)
        return ms_fail(e, MS_ECORRUPT, "store: bad token entry");
    *expires = (int64_t)ms_get_be64(p);
    memcpy(role, p + 8, (size_t)(nul - p - 8));
    role[nul - p - 8] = 0;
    memcpy(user, nul + 1, (size_t)(end - nul - 1));
    user[end - nul - 1] = 0;
    *found = true;
    return MS_OK;
}

ms_code store_account_get(store_read *r, const char *name, store_account *a, bool *found, ms_err *e)
{
    return account_get(r->txn, r->s->dbi[DB_USERS], name, a, found, e);
}

ms_code store_account_list(store_read *r, store_account_fn fn, void *ctx, ms_err *e)
{
    return account_list(r->txn, r->s->dbi[DB_USERS], fn, ctx, e);
}

ms_code store_write_account_get(store_write *w, const char *name, store_account *a, bool *found, ms_err *e)
{
    return account_get(w->txn, w->s->dbi[DB_USERS], name, a, found, e);
}

ms_code store_write_account_list(store_write *w, store_account_fn fn, void *ctx, ms_err *e)
{
    return account_list(w->txn, w->s->dbi[DB_USERS], fn, ctx, e);
}

ms_code store_account_put(store_write *w, const store_account *a, ms_err *e)
{
    size_t nl = strnlen(a->name, STORE_USER_MAX), rl = strnlen(a->role, STORE_ROLE_MAX);
    size_t hl = strnlen(a->hash, STORE_HASH_MAX);
    if (nl == 0 || nl == STORE_USER_MAX || rl == 0 || rl == STORE_ROLE_MAX || hl == STORE_HASH_MAX)
        return ms_fail(e, MS_EINVAL, "store: account name, role or hash missing or too long");
    unsigned char head[ACCOUNT_HEAD] = {ACCOUNT_FORMAT, a->disabled ? ACCOUNT_DISABLED : 0};
    ms_set_be64(head + 2, (uint64_t)a->created);
    ms_set_be64(head + 10, (uint64_t)a->changed);
    buf v = {0};
    buf_put(&v, head, sizeof head);
    buf_put(&v, a->role, rl);
    buf_putc(&v, 0);
    buf_put(&v, a->hash, hl);
    MDB_val k = val(a->name, nl), mv = val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_USERS], &k, &mv, 0);
    buf_free(&v);
    return rc ? mdb_fail(e, rc, "user write") : MS_OK;
}

ms_code store_account_delete(store_write *w, const char *name, ms_err *e)
{
    MDB_val k = val(name, strlen(name));
    int rc = k.mv_size ? mdb_del(w->txn, w->s->dbi[DB_USERS], &k, NULL) : MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return ms_fail(e, MS_ENOTFOUND, "no such user");
    return rc ? mdb_fail(e, rc, "user delete") : MS_OK;
}

ms_code store_tokens_revoke_user(store_write *w, const char *user, const unsigned char *keep, uint64_t *revoked,
                                 ms_err *e)
{
    *revoked = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(w->txn, w->s->dbi[DB_TOKENS], &c);
    if (rc) return mdb_fail(e, rc, "cursor");
    int64_t now = ms_now_us();
    size_t ul = strlen(user);
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char *p = v.mv_data;
        const char *nul = v.mv_size > 8 ? memchr(p + 8, 0, v.mv_size - 8) : NULL;
        if (!nul) {
            rc = MDB_CORRUPTED;
            break;
        }
        bool expired = (int64_t)ms_get_be64(p) <= now;
        size_t tl = v.mv_size - (size_t)(nul + 1 - p);
        bool theirs = tl == ul && memcmp(nul + 1, user, ul) == 0 &&
                      !(keep && k.mv_size == 32 && memcmp(k.mv_data, keep, 32) == 0);
        if (!expired && !theirs) continue;
        if ((rc = mdb_cursor_del(c, 0))) break;
        if (theirs && !expired) ++*revoked;
    }
    mdb_cursor_close(c);
    return rc && rc != MDB_NOTFOUND ? mdb_fail(e, rc, "token revocation") : MS_OK;
}

ms_code store_kafka_offset_put(store_write *w, const char *topic, int32_t partition, int64_t next, ms_err *e)
{
    char key[320];
    snprintf(key, sizeof key, "kafka:%s:%d", topic, (int)partition);
    int rc = meta_put_u64(w->txn, w->s->dbi[DB_META], key, (uint64_t)next);
    return rc ? mdb_fail(e, rc, "kafka offset") : MS_OK;
}

ms_code store_kafka_offset_get(store_read *r, const char *topic, int32_t partition, int64_t *next, bool *found,
                               ms_err *e)
{
    char key[320];
    snprintf(key, sizeof key, "kafka:%s:%d", topic, (int)partition);
    MDB_val k = val(key, strlen(key)), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc || v.mv_size != 8)
        return rc ? mdb_fail(e, rc, "kafka offset") : ms_fail(e, MS_ECORRUPT, "store: bad kafka offset");
    *next = (int64_t)ms_get_be64(v.mv_data);
    *found = true;
    return MS_OK;
}

ms_code store_sink_position(store_read *r, const char *sink, uint64_t *pos, ms_err *e)
{
    char key[128];
    snprintf(key, sizeof key, "sink:%s", sink);
    int rc = meta_get_u64(r->txn, r->s->dbi[DB_META], key, pos);
    return rc ? mdb_fail(e, rc, "sink position") : MS_OK;
}

ms_code store_sink_position_set(store *s, const char *sink, uint64_t pos, ms_err *e)
{
    char key[128];
    unsigned char v[8];
    snprintf(key, sizeof key, "sink:%s", sink);
    ms_set_be64(v, pos);
    return small_write(s, DB_META, key, strlen(key), v, 8, 0, false, "sink position", e);
}

ms_code store_snapshot_create(store *s, const char *id, int64_t *as_of_out, ms_err *e)
{
    /* Inside LMDB's writer lock, so the instant falls strictly between two commits: every commit before
     * it has an earlier valid_from, every later one a later valid_from. */
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return mdb_fail(e, rc, "begin");
    int64_t now = ms_now_us();
    int64_t as_of = now > s->last_commit ? now : s->last_commit + 1;
    unsigned char b[8];
    ms_set_be64(b, (uint64_t)as_of);
    MDB_val k = val(id, strlen(id)), v = val(b, 8);
    rc = mdb_put(txn, s->dbi[DB_SNAPSHOT], &k, &v, MDB_NOOVERWRITE);
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_fail(e, rc, "snapshot insert");
    }
    if ((rc = meta_put_u64(txn, s->dbi[DB_META], "last_commit", (uint64_t)as_of))) {
        mdb_txn_abort(txn);
        return mdb_fail(e, rc, "snapshot insert");
    }
    rc = mdb_txn_commit(txn);
    if (rc) return write_fail(s, e, rc, "snapshot commit");
    s->last_commit = as_of;
    *as_of_out = as_of;
    return MS_OK;
}

ms_code store_snapshot_get(store_read *r, const char *id, int64_t *as_of, bool *found, ms_err *e)
{
    MDB_val k = val(id, strlen(id)), v;
    *found = false;
    int rc = mdb_get(r->txn, r->s->dbi[DB_SNAPSHOT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return mdb_fail(e, rc, "snapshot lookup");
    if (v.mv_size != 8) return ms_fail(e, MS_ECORRUPT, "store: bad snapshot entry");
    *as_of = (int64_t)ms_get_be64(v.mv_data);
    *found = true;
    return MS_OK;
}

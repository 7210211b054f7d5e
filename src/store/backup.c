/*
 * backup.c - an online, consistent copy of a store into a new data directory that `medstream serve` can
 * open: LMDB's compacting copy of the environment, then the segment log up to the end recorded in that
 * copy (README.md, invariant 7).
 *
 * DESIGN: mdb_env_copyfd2 with MDB_CP_COMPACT walks the B-trees from one read transaction and writes
 * them, free pages left out, to OUT/lmdb/data.mdb: a reader, so it never takes LMDB's writer lock nor
 * blocks the writer (mdb_env_copy2 is the same copy on a path; the descriptor is ours here so that the
 * copy is fsynced before we say it is done). The copy is then opened to learn what it holds and to drop its
 * bearer tokens (a restored copy must not bring back a token revoked since: finish_copy):
 * its "log_end" (every body it references lies below it, invariants 2-3), its commit position, and the
 * segment size its writer recorded. The segment files are copied up to that end and no further
 * (seglog_copy_files); bytes below a log's end are never rewritten, so copying them after LMDB, while the
 * server appends past it, is safe; then the data keys (copy_keys). Only the store is copied: not DIR/medstream.lock,
 * not DIR/admin.password, nor anything else in DIR.
 *
 * Contract: store.h ("Backup"). Any store, read-only or not, any thread; takes no lock. Must never: write
 * into a directory that is not new or empty, or that lies inside the store's own (OUT is made 0700 either
 * way), leave a partial copy that looks complete (on failure what this call created is removed), copy a
 * segment byte past the copy's recorded end.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static ms_code refuse_inside(const char *out_dir, const char *data_dir, ms_err *e)
{
    return ms_fail(e, MS_ECONFLICT,
                   "%s is inside the data directory %s: a backup goes outside it (a copy there would keep PHI in the "
                   "data directory that erasures do not reach)",
                   out_dir, data_dir);
}

/* out_dir: created (mode 0700) when absent, accepted (and made 0700) when an empty directory; never inside data_dir
 * (the data directory would hold a second copy of its PHI and data keys, which an erasure does not reach). */
static ms_code prepare_out(const char *out_dir, const char *data_dir, bool *created, ms_err *e)
{
    *created = false;
    if (mkdir(out_dir, 0700) == 0) {
        if (ms_path_inside(out_dir, data_dir)) {
            rmdir(out_dir);
            return refuse_inside(out_dir, data_dir, e);
        }
        *created = true;
        return MS_OK;
    }
    if (errno != EEXIST) return ms_fail(e, MS_EIO, "store: cannot create %s: %s", out_dir, strerror(errno));
    DIR *d = opendir(out_dir);
    if (!d) {
        if (errno == ENOTDIR) return ms_fail(e, MS_ECONFLICT, "%s exists and is not a directory", out_dir);
        return ms_fail(e, MS_EIO, "store: cannot read %s: %s", out_dir, strerror(errno));
    }
    bool empty = true;
    for (struct dirent *de; empty && (de = readdir(d));)
        empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    closedir(d);
    if (!empty)
        return ms_fail(e, MS_ECONFLICT, "%s exists and is not empty (a backup goes into a new or empty directory)",
                       out_dir);
    if (ms_path_inside(out_dir, data_dir)) return refuse_inside(out_dir, data_dir, e);
    if (chmod(out_dir, 0700) != 0) /* owner only, as one it creates, whatever mode it was made with */
        return ms_fail(e, MS_EIO, "store: cannot make %s mode 0700: %s", out_dir, strerror(errno));
    return MS_OK;
}

static ms_code sync_dir(const char *path, ms_err *e)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int err = errno;
        if (fd >= 0) close(fd);
        return ms_fail(e, err == ENOSPC ? MS_EFULL : MS_EIO, "store: fsync of %s: %s", path, strerror(err));
    }
    close(fd);
    return MS_OK;
}

/* LMDB's compacting copy of s into path (a new file), fsynced; *bytes: its size. */
static ms_code copy_lmdb(store *s, const char *path, uint64_t *bytes, ms_err *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ms_fail(e, MS_EIO, "store: cannot create %s: %s", path, strerror(errno));
    int rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    ms_code code = rc ? st_mdb_fail(e, rc, "backup copy") : MS_OK;
    struct stat st;
    if (code == MS_OK && (fsync(fd) != 0 || fstat(fd, &st) != 0)) code = st_mdb_fail(e, errno, "backup copy: fsync");
    if (close(fd) != 0 && code == MS_OK) code = st_mdb_fail(e, errno, "backup copy: close");
    if (code == MS_OK) *bytes = (uint64_t)st.st_size;
    return code;
}

/* What the copy at lmdb_dir holds: its meta values (opened read-only and without a lock file, so nothing
 * is written into the copy). */
/* What the copy holds (its metadata, into info), and its bearer tokens dropped: a copy restored later must not
 * bring back a token revoked after the backup (a stolen one, an account's disabled since); everyone signs in
 * again on a restored store. One write transaction of the copy's own (no one else has it open), synced. */
static ms_code finish_copy(const char *lmdb_dir, uint64_t file_bytes, store_backup_info *info, ms_err *e)
{
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc) return st_mdb_fail(e, rc, "backup: open the copy");
    mdb_env_set_maxdbs(env, DB_COUNT + 2);
    size_t map = (size_t)file_bytes + ((size_t)64 << 20); /* room for the pages the drop rewrites */
    mdb_env_set_mapsize(env, map > STORE_DEFAULT_MAP_SIZE ? map : STORE_DEFAULT_MAP_SIZE);
    MDB_txn *txn = NULL;
    MDB_dbi meta, tokens;
    MDB_stat st;
    uint64_t last = 0;
    if (!(rc = mdb_env_open(env, lmdb_dir, MDB_NOLOCK, 0600)) && !(rc = mdb_txn_begin(env, NULL, 0, &txn)) &&
        !(rc = mdb_dbi_open(txn, "meta", 0, &meta)) && !(rc = st_meta_get_u64(txn, meta, "log_end", &info->log_end)) &&
        !(rc = st_meta_get_u64(txn, meta, "commit_pos", &info->commit_pos)) &&
        !(rc = st_meta_get_u64(txn, meta, "last_commit", &last)) &&
        !(rc = st_meta_get_u64(txn, meta, "segment_size", &info->segment_size))) {
        rc = mdb_dbi_open(txn, "tokens", 0, &tokens);
        if (rc == MDB_NOTFOUND) {
            rc = 0; /* a store that never issued one */
        } else if (!rc && !(rc = mdb_stat(txn, tokens, &st)) && !(rc = mdb_drop(txn, tokens, 0))) {
            info->tokens_dropped = st.ms_entries;
        }
    }
    if (!rc) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    info->last_commit = (int64_t)last;
    if (txn) mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc ? st_mdb_fail(e, rc, "backup: finish the copy") : MS_OK;
}

/* Remove every file of dir, a directory this call made (a partial copy must not look like a store). */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        char path[4400];
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

/* DIR/keys (keys.c), whole, synced; none in a store from before data keys. Copied after LMDB: every
 * patient of the copy had its key written before its commit; a patient erased since has lost its key
 * here too (a backup never revives an erasure), and slots the copy does not know are cut when it opens.
 * Its header's mark that the slots account for every patient is cleared: a patient erased after the LMDB
 * copy is live in the copy but marked erased in its slot, so the copy's first open scans the identities. */
static ms_code copy_keys(const char *from_dir, const char *out_dir, bool *made, ms_err *e)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/keys", from_dir);
    snprintf(to, sizeof to, "%s/keys", out_dir);
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0 && errno == ENOENT) return MS_OK;
    if (in < 0) return ms_fail(e, MS_EIO, "store: cannot open %s: %s", from, strerror(errno));
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ms_code rc = out < 0 ? ms_fail(e, MS_EIO, "store: cannot create %s: %s", to, strerror(errno)) : MS_OK;
    *made = out >= 0;
    char b[65536];
    ssize_t n;
    bool head = true;
    while (rc == MS_OK && (n = read(in, b, sizeof b)) != 0) {
        if (head && n > ST_KEYS_HEAD_VERIFIED) b[ST_KEYS_HEAD_VERIFIED] = 0;
        head = false;
        if (n < 0 || write(out, b, (size_t)n) != n)
            rc = ms_fail(e, MS_EIO, "store: copying %s: %s", from, strerror(errno));
    }
    if (rc == MS_OK && fdatasync(out) != 0) rc = ms_fail(e, MS_EIO, "store: syncing %s: %s", to, strerror(errno));
    close(in);
    if (out >= 0) close(out);
    return rc;
}

ms_code store_backup(store *s, const char *out_dir, store_backup_info *info_out, ms_err *e)
{
    store_backup_info info = {0};
    char lmdb_dir[4096], data_file[4200], seg_dir[4096], from_segs[4096], parent[4096];
    snprintf(lmdb_dir, sizeof lmdb_dir, "%s/lmdb", out_dir);
    snprintf(data_file, sizeof data_file, "%s/data.mdb", lmdb_dir);
    snprintf(seg_dir, sizeof seg_dir, "%s/segments", out_dir);
    snprintf(from_segs, sizeof from_segs, "%s/segments", s->dir);
    bool created_out = false, made_lmdb = false, made_segs = false, made_keys = false;
    ms_code rc = prepare_out(out_dir, s->dir, &created_out, e);
    if (rc != MS_OK) return rc;
    if (mkdir(lmdb_dir, 0700) != 0) {
        rc = ms_fail(e, MS_EIO, "store: cannot create %s: %s", lmdb_dir, strerror(errno));
        goto fail;
    }
    made_lmdb = true;
    if (mkdir(seg_dir, 0700) != 0) {
        rc = ms_fail(e, MS_EIO, "store: cannot create %s: %s", seg_dir, strerror(errno));
        goto fail;
    }
    made_segs = true;
    if ((rc = copy_lmdb(s, data_file, &info.lmdb_bytes, e)) != MS_OK) goto fail;
    if ((rc = finish_copy(lmdb_dir, info.lmdb_bytes, &info, e)) != MS_OK) goto fail;
    if (!info.segment_size) info.segment_size = s->segment_size; /* a store last written before it was recorded */
    if ((rc = seglog_copy_files(from_segs, info.segment_size, info.log_end, seg_dir, &info.segments, e)) != MS_OK)
        goto fail;
    if ((rc = copy_keys(s->dir, out_dir, &made_keys, e)) != MS_OK) goto fail;
    ms_path_parent(out_dir, parent, sizeof parent);
    if ((rc = sync_dir(lmdb_dir, e)) != MS_OK || (rc = sync_dir(out_dir, e)) != MS_OK ||
        (created_out && (rc = sync_dir(parent, e)) != MS_OK))
        goto fail;
    if (info_out) *info_out = info;
    return MS_OK;
fail:
    /* take back what this call made: these directories are new, so everything in them is ours */
    if (made_keys) {
        char keys[4200];
        snprintf(keys, sizeof keys, "%s/keys", out_dir);
        unlink(keys);
    }
    if (made_segs) {
        empty_dir(seg_dir);
        rmdir(seg_dir);
    }
    if (made_lmdb) {
        empty_dir(lmdb_dir);
        rmdir(lmdb_dir);
    }
    if (created_out) rmdir(out_dir);
    return rc;
}

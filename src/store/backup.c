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
 * The copy is made in a partial directory beside OUT, `.NAME.partial-PID` in OUT's parent (mode 0700), and
 * renamed to OUT only once every file, and the directories, are fsynced (then the parent is): a backup killed
 * partway, or failing on a full disk, leaves no OUT, nothing any command takes for a data directory. An empty
 * OUT is replaced by that rename; one the rename cannot replace (a mount point, a symlink, "." or "..") gets its
 * partial copy inside it, `OUT/.backup.partial-PID`, whose keys, segments and lmdb (the one data_dir_ready
 * looks for, last) are renamed up into OUT. A partial copy left by a backup that was killed (its PID no longer
 * runs) is removed by the next backup to the same OUT, which says so (a live backup's is left alone).
 *
 * Contract: store.h ("Backup"). Any store, read-only or not, any thread; takes no lock. Must never: write
 * into a directory that is not new or empty, or that lies inside the store's own (OUT is 0700 either
 * way), leave a partial copy that looks complete or under OUT's name (on failure what this call created is
 * removed; a kill leaves only the partial directory), copy a segment byte past the copy's recorded end.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

/* Where the copy is made before it is OUT (see the top of this file). */
typedef struct {
    char stage[4400];     /* the partial copy */
    char sweep_dir[4096]; /* where partial copies of OUT are (OUT's parent, or OUT) */
    char prefix[240];     /* their names: prefix then a PID */
    bool inside;          /* stage inside OUT, its entries renamed up into it */
    bool existed;         /* OUT was there (an empty directory) */
} backup_place;

static ms_code plan_out(const char *out_dir, backup_place *pl, ms_err *e)
{
    memset(pl, 0, sizeof *pl);
    char parent[4096], name[4096];
    ms_path_parent(out_dir, parent, sizeof parent);
    snprintf(name, sizeof name, "%s", out_dir);
    size_t n = strlen(name);
    while (n > 1 && name[n - 1] == '/')
        name[--n] = 0;
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    struct stat lst, st, pst;
    if (lstat(out_dir, &lst) == 0) {
        if (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return ms_fail(e, MS_ECONFLICT, "%s exists and is not a directory", out_dir);
        if (stat(parent, &pst) != 0) return ms_fail(e, MS_EIO, "store: cannot read %s: %s", parent, strerror(errno));
        pl->existed = true;
        pl->inside = S_ISLNK(lst.st_mode) || st.st_dev != pst.st_dev || !strcmp(base, ".") || !strcmp(base, "..") ||
                     !strcmp(base, "/");
    } else if (errno != ENOENT) {
        return ms_fail(e, MS_EIO, "store: cannot read %s: %s", out_dir, strerror(errno));
    }
    snprintf(pl->sweep_dir, sizeof pl->sweep_dir, "%s", pl->inside ? out_dir : parent);
    if (pl->inside)
        snprintf(pl->prefix, sizeof pl->prefix, ".backup.partial-");
    else
        snprintf(pl->prefix, sizeof pl->prefix, ".%.200s.partial-", base);
    snprintf(pl->stage, sizeof pl->stage, "%s/%s%ld", pl->sweep_dir, pl->prefix, (long)getpid());
    return MS_OK;
}

/* Remove every file of dir, a directory this call made (a partial copy must not look like a store). */
static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        char path[4900];
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

/* Remove a partial copy: its keys, the files of its lmdb and segments, those, itself (nothing else: a directory
 * holding anything more is left, and 0 is not returned). 0 or an errno; ENOENT when there is none. */
static int remove_partial(const char *dir)
{
    char path[4600];
    snprintf(path, sizeof path, "%s/keys", dir);
    unlink(path);
    static const char *const subs[] = {"lmdb", "segments"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        empty_dir(path);
        rmdir(path);
    }
    return rmdir(dir) == 0 ? 0 : errno;
}

/* Remove the partial copies in pl->sweep_dir left by backups to the same OUT that were killed (their PID runs no
 * more, or is this process's); *removed: how many. One that cannot be removed is named in the error. */
static ms_code sweep_partials(const backup_place *pl, uint32_t *removed, ms_err *e)
{
    DIR *d = opendir(pl->sweep_dir);
    if (!d) return MS_OK; /* OUT's parent missing: the mkdir below says so */
    size_t plen = strlen(pl->prefix);
    ms_code rc = MS_OK;
    for (struct dirent *de; rc == MS_OK && (de = readdir(d));) {
        if (strncmp(de->d_name, pl->prefix, plen) || !de->d_name[plen]) continue;
        char *end;
        long pid = strtol(de->d_name + plen, &end, 10);
        if (*end || pid <= 0 || (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))) continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", pl->sweep_dir, de->d_name);
        int err = remove_partial(path);
        if (err == 0)
            ++*removed;
        else if (err != ENOENT)
            rc = ms_fail(e, MS_ECONFLICT,
                         "cannot remove %s, a partial copy left by an interrupted backup: %s (remove it by hand)", path,
                         strerror(err));
    }
    closedir(d);
    return rc;
}

/* An OUT that exists: an empty directory (anything else is refused and left as it was). */
static ms_code check_empty(const char *out_dir, ms_err *e)
{
    DIR *d = opendir(out_dir);
    if (!d) return ms_fail(e, MS_EIO, "store: cannot read %s: %s", out_dir, strerror(errno));
    bool empty = true;
    for (struct dirent *de; empty && (de = readdir(d));)
        empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
    closedir(d);
    if (!empty)
        return ms_fail(e, MS_ECONFLICT, "%s exists and is not empty (a backup goes into a new or empty directory)",
                       out_dir);
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

/* Test hook (tests/e2e/test_backup.py): MEDSTREAM_TEST_BACKUP_CRASH=lmdb|segments|keys|synced kills this process
 * (SIGKILL, as kill -9 would) once that step of the copy is done, to check that an interrupted backup leaves no
 * OUT behind. */
static void crash_after(const char *step)
{
    const char *at = getenv("MEDSTREAM_TEST_BACKUP_CRASH");
    if (at && !strcmp(at, step)) raise(SIGKILL);
}

/* DIR/keys (keys.c), whole, synced; none in a store from before data keys. Copied after LMDB: every
 * patient of the copy had its key written before its commit; a patient erased since has lost its key
 * here too (a backup never revives an erasure), and slots the copy does not know are cut when it opens.
 * Its header's mark that the slots account for every patient is cleared: a patient erased after the LMDB
 * copy is live in the copy but marked erased in its slot, so the copy's first open scans the identities. */
static ms_code copy_keys(const char *from_dir, const char *out_dir, bool *made, ms_err *e)
{
    char from[4200], to[4500];
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

/* The synced partial copy becomes OUT: one rename replacing OUT (absent or an empty directory), or, inside OUT,
 * its entries renamed up (lmdb, what makes a data directory, last); then the directory that changed is synced. */
static ms_code commit_copy(const backup_place *pl, const char *out_dir, bool have_keys, ms_err *e)
{
    if (!pl->inside) { /* the partial copy is in OUT's parent, pl->sweep_dir */
        if (rename(pl->stage, out_dir) != 0)
            return errno == ENOTEMPTY || errno == EEXIST || errno == ENOTDIR
                       ? ms_fail(e, MS_ECONFLICT, "%s was made while the backup ran and is not empty", out_dir)
                       : ms_fail(e, MS_EIO, "store: cannot rename %s to %s: %s", pl->stage, out_dir, strerror(errno));
        return sync_dir(pl->sweep_dir, e);
    }
    static const char *const names[] = {"keys", "segments", "lmdb"};
    for (size_t i = have_keys ? 0 : 1; i < 3; i++) {
        char from[4600], to[4200];
        snprintf(from, sizeof from, "%s/%s", pl->stage, names[i]);
        snprintf(to, sizeof to, "%s/%s", out_dir, names[i]);
        if (rename(from, to) != 0) {
            ms_code rc = ms_fail(e, MS_EIO, "store: cannot rename %s to %s: %s", from, to, strerror(errno));
            for (size_t j = have_keys ? 0 : 1; j < i; j++) { /* back into the partial copy, removed with it */
                snprintf(from, sizeof from, "%s/%s", pl->stage, names[j]);
                snprintf(to, sizeof to, "%s/%s", out_dir, names[j]);
                rename(to, from);
            }
            return rc;
        }
    }
    rmdir(pl->stage);
    if (chmod(out_dir, 0700) != 0) /* owner only, as one it creates, whatever mode it was made with */
        return ms_fail(e, MS_EIO, "store: cannot make %s mode 0700: %s", out_dir, strerror(errno));
    return sync_dir(out_dir, e);
}

ms_code store_backup(store *s, const char *out_dir, store_backup_info *info_out, ms_err *e)
{
    store_backup_info info = {0};
    backup_place pl;
    ms_code rc = plan_out(out_dir, &pl, e);
    if (rc != MS_OK) return rc;
    if ((rc = sweep_partials(&pl, &info.partials_removed, e)) != MS_OK) return rc;
    if (pl.existed) {
        if ((rc = check_empty(out_dir, e)) != MS_OK) return rc;
        if (ms_path_inside(out_dir, s->dir)) return refuse_inside(out_dir, s->dir, e);
    }
    char lmdb_dir[4500], data_file[4600], seg_dir[4500], from_segs[4096];
    snprintf(lmdb_dir, sizeof lmdb_dir, "%s/lmdb", pl.stage);
    snprintf(data_file, sizeof data_file, "%s/data.mdb", lmdb_dir);
    snprintf(seg_dir, sizeof seg_dir, "%s/segments", pl.stage);
    snprintf(from_segs, sizeof from_segs, "%s/segments", s->dir);
    bool made_keys = false;
    if (mkdir(pl.stage, 0700) != 0) return ms_fail(e, MS_EIO, "store: cannot create %s: %s", pl.stage, strerror(errno));
    if (chmod(pl.stage, 0700) != 0) { /* whatever the umask */
        rc = ms_fail(e, MS_EIO, "store: cannot make %s mode 0700: %s", pl.stage, strerror(errno));
        goto fail;
    }
    if (!pl.existed && ms_path_inside(pl.stage, s->dir)) { /* OUT would be beside it */
        rc = refuse_inside(out_dir, s->dir, e);
        goto fail;
    }
    if (mkdir(lmdb_dir, 0700) != 0) {
        rc = ms_fail(e, MS_EIO, "store: cannot create %s: %s", lmdb_dir, strerror(errno));
        goto fail;
    }
    if (mkdir(seg_dir, 0700) != 0) {
        rc = ms_fail(e, MS_EIO, "store: cannot create %s: %s", seg_dir, strerror(errno));
        goto fail;
    }
    if ((rc = copy_lmdb(s, data_file, &info.lmdb_bytes, e)) != MS_OK) goto fail;
    if ((rc = finish_copy(lmdb_dir, info.lmdb_bytes, &info, e)) != MS_OK) goto fail;
    crash_after("lmdb");
    if (!info.segment_size) info.segment_size = s->segment_size; /* a store last written before it was recorded */
    if ((rc = seglog_copy_files(from_segs, info.segment_size, info.log_end, seg_dir, &info.segments, e)) != MS_OK)
        goto fail;
    crash_after("segments");
    if ((rc = copy_keys(s->dir, pl.stage, &made_keys, e)) != MS_OK) goto fail;
    crash_after("keys");
    if ((rc = sync_dir(lmdb_dir, e)) != MS_OK || (rc = sync_dir(pl.stage, e)) != MS_OK) goto fail;
    crash_after("synced");
    if ((rc = commit_copy(&pl, out_dir, made_keys, e)) != MS_OK) goto fail;
    if (info_out) *info_out = info;
    return MS_OK;
fail:
    remove_partial(pl.stage); /* new, so everything in it is ours */
    return rc;
}

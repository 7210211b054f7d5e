/*
 * segment_log.c - append-only segment files with O_DIRECT writes (see segment_log.h).
 */
#include "segment_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SEGMENTS 65536

struct segment_log {
    char *dir;
    uint64_t segment_size;
    uint64_t end;             /* next free position */
    int write_fd;             /* segment being appended to, or -1 */
    uint64_t write_seg;
    bool direct;              /* write_fd has O_DIRECT */
    int dirty_fds[8];         /* segments written since the last sync (older ones stay open until then) */
    int ndirty;
    void *bounce;             /* aligned staging for unaligned writes */
    size_t bounce_cap;
    int fault;
    pthread_mutex_t read_lock;
    int *read_fds;            /* lazily opened, indexed by segment number */
    uint64_t nread_fds;
};

static void seg_path(const segment_log *l, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%012" PRIu64 ".seg", l->dir, seg);
}

static ms_code io_fail(ms_err *e, int err, const char *what)
{
    ms_code code = (err == ENOSPC || err == EDQUOT || err == EFBIG) ? MS_EFULL : MS_EIO;
    return ms_fail(e, code, "segment log: %s: %s", what, strerror(err));
}

static ms_code open_for_write(segment_log *l, uint64_t seg, ms_err *e)
{
    char path[4096];
    seg_path(l, seg, path, sizeof path);
    bool created = access(path, F_OK) != 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_DIRECT, 0600);
    l->direct = fd >= 0;
    if (fd < 0 && errno == EINVAL) fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600); /* no O_DIRECT here */
    if (fd < 0) return io_fail(e, errno, "open");
    if (created) {
        int rc = posix_fallocate(fd, 0, (off_t)l->segment_size);
        if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
            close(fd);
            unlink(path);
            return io_fail(e, rc, "preallocate");
        }
        /* make the new file's directory entry durable */
        int dfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    if (l->write_fd >= 0) {
        if (l->ndirty == (int)(sizeof l->dirty_fds / sizeof l->dirty_fds[0])) {
            /* too many segments since the last sync: sync the oldest now */
            if (fdatasync(l->dirty_fds[0]) != 0) {
                int err = errno;
                close(fd);
                return io_fail(e, err, "fdatasync");
            }
            close(l->dirty_fds[0]);
            memmove(l->dirty_fds, l->dirty_fds + 1, sizeof(int) * (size_t)(--l->ndirty));
        }
        l->dirty_fds[l->ndirty++] = l->write_fd;
    }
    l->write_fd = fd;
    l->write_seg = seg;
    return MS_OK;
}

ms_code seglog_open(segment_log **out, const char *dir, uint64_t segment_size, uint64_t end_pos, ms_err *e)
{
    if (segment_size < 16 * SEGLOG_ALIGN || segment_size % SEGLOG_ALIGN)
        return ms_fail(e, MS_EINVAL, "segment size must be a multiple of 4096 and at least 64 KiB");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return io_fail(e, errno, dir);
    segment_log *l = ms_calloc(1, sizeof *l);
    l->dir = ms_strndup(dir, strlen(dir));
    l->segment_size = segment_size;
    l->end = end_pos;
    l->write_fd = -1;
    pthread_mutex_init(&l->read_lock, NULL);
    ms_code rc = open_for_write(l, end_pos / segment_size, e);
    if (rc != MS_OK) {
        seglog_close(l);
        return rc;
    }
    *out = l;
    return MS_OK;
}

void seglog_close(segment_log *l)
{
    if (!l) return;
    if (l->write_fd >= 0) close(l->write_fd);
    for (int i = 0; i < l->ndirty; i++) close(l->dirty_fds[i]);
    for (uint64_t i = 0; i < l->nread_fds; i++)
        if (l->read_fds[i] > 0) close(l->read_fds[i]);
    free(l->read_fds);
    free(l->bounce);
    free(l->dir);
    pthread_mutex_destroy(&l->read_lock);
    free(l);
}

static uint64_t round_up(uint64_t n) { return (n + SEGLOG_ALIGN - 1) & ~(uint64_t)(SEGLOG_ALIGN - 1); }

ms_code seglog_reserve(segment_log *l, size_t len, uint64_t *pos, ms_err *e)
{
    uint64_t need = round_up(len);
    if (need > l->segment_size) return ms_fail(e, MS_EINVAL, "segment log: %zu bytes exceed the segment size", len);
    uint64_t off = l->end % l->segment_size;
    if (off + need > l->segment_size) l->end += l->segment_size - off; /* start the next segment */
    *pos = l->end;
    l->end += need;
    return MS_OK;
}

ms_code seglog_write(segment_log *l, uint64_t pos, const void *data, size_t len, ms_err *e)
{
    if (l->fault) return io_fail(e, l->fault, "write");
    uint64_t seg = pos / l->segment_size;
    if (seg != l->write_seg) {
        ms_code rc = open_for_write(l, seg, e);
        if (rc != MS_OK) return rc;
    }
    size_t padded = (size_t)round_up(len);
    const char *src = data;
    if (((uintptr_t)data % SEGLOG_ALIGN) != 0 || padded != len) {
        if (l->bounce_cap < padded) {
            free(l->bounce);
            if (posix_memalign(&l->bounce, SEGLOG_ALIGN, padded) != 0) ms_oom();
            l->bounce_cap = padded;
        }
        memcpy(l->bounce, data, len);
        memset((char *)l->bounce + len, 0, padded - len);
        src = l->bounce;
    }
    off_t off = (off_t)(pos % l->segment_size);
    size_t done = 0;
    while (done < padded) {
        ssize_t w = pwrite(l->write_fd, src + done, padded - done, off + (off_t)done);
        if (w < 0) {
            if (errno == EINTR) continue;
            return io_fail(e, errno, "write");
        }
        done += (size_t)w;
    }
    return MS_OK;
}

ms_code seglog_sync(segment_log *l, ms_err *e)
{
    if (l->fault) return io_fail(e, l->fault, "fdatasync");
    while (l->ndirty > 0) {
        if (fdatasync(l->dirty_fds[0]) != 0) return io_fail(e, errno, "fdatasync");
        close(l->dirty_fds[0]);
        memmove(l->dirty_fds, l->dirty_fds + 1, sizeof(int) * (size_t)(--l->ndirty));
    }
    if (l->write_fd >= 0 && fdatasync(l->write_fd) != 0) return io_fail(e, errno, "fdatasync");
    return MS_OK;
}

void seglog_rewind(segment_log *l, uint64_t pos) { l->end = pos; }

uint64_t seglog_end(const segment_log *l) { return l->end; }

void seglog_inject_fault(segment_log *l, int err) { l->fault = err; }

static int read_fd(segment_log *l, uint64_t seg)
{
    pthread_mutex_lock(&l->read_lock);
    if (seg >= l->nread_fds) {
        uint64_t n = seg + 16;
        l->read_fds = ms_realloc(l->read_fds, sizeof(int) * n);
        for (uint64_t i = l->nread_fds; i < n; i++) l->read_fds[i] = -1;
        l->nread_fds = n;
    }
    int fd = l->read_fds[seg];
    if (fd < 0) {
        char path[4096];
        seg_path(l, seg, path, sizeof path);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) l->read_fds[seg] = fd;
    }
    pthread_mutex_unlock(&l->read_lock);
    return fd;
}

ms_code seglog_read(segment_log *l, uint64_t pos, void *out, size_t len, ms_err *e)
{
    uint64_t seg = pos / l->segment_size;
    if (seg >= MAX_SEGMENTS) return ms_fail(e, MS_ECORRUPT, "segment log: position out of range");
    int fd = read_fd(l, seg);
    if (fd < 0) return io_fail(e, errno, "open for reading");
    off_t off = (off_t)(pos % l->segment_size);
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)out + done, len - done, off + (off_t)done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return io_fail(e, errno, "read");
        }
        if (r == 0) return ms_fail(e, MS_ECORRUPT, "segment log: short read");
        done += (size_t)r;
    }
    return MS_OK;
}

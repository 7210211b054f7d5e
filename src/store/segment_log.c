/*
 * segment_log.c - append-only segment files with O_DIRECT writes (see segment_log.h).
 *
 * DESIGN: a mutex guards the reservation of positions, the table of open segment files and the set of
 * segments written since the last sync; the writes themselves (pwrite) and the fdatasyncs run outside
 * it, so request threads write bodies in parallel. A segment is marked dirty only after its pwrite has
 * returned, so a sync can never miss a write whose append had returned before the sync began.
 *
 * Preallocation: a reservation is made only once the segment file is allocated past its end (grow(),
 * under the mutex, so every pwrite lands in allocated space and a write of a reserved range cannot run
 * out of disk). The file grows with fallocate (mode 0: size and blocks), one SEGLOG_PREALLOC_STEP past
 * the reservation, or exactly to its end when the disk cannot give the step; a reservation that cannot
 * be allocated at all fails without moving the log's end. This happens once per 64 MiB of appends.
 *
 * Recent bytes are also kept in memory (a ring of cache_size bytes): O_DIRECT writes leave nothing in
 * the page cache, and a read of a record just written would otherwise wait for the disk behind the
 * next 20 MB batch. The ring works like a seqlock: an append first raises ring_low past the bytes it
 * will overwrite (under the lock), then writes them; a reader copies without the lock, then checks that
 * ring_low did not pass its position meanwhile, and falls back to the file if it did. The ring is one
 * memfd mapped twice, back to back, so the bytes of any append up to the ring's size are contiguous in
 * memory even where they wrap: a fill (seglog_fill_begin) hands the caller its place in the ring, the
 * caller (store_append_sealed) seals records straight into it, and the disk writes are made from there
 * (O_DIRECT: no copy at all). An append that would overwrite ring bytes of a fill still in flight (one
 * ring's worth of appends while it fills) is not cached, and fills into a spare buffer of the log's.
 * The writer applies a batch while its records are sealed (ingest.h, step 2), so a read of bytes of a
 * fill in flight waits (l->filled) until they are final: the part a cached fill said is ready, an
 * uncached fill's once it ended. Reads below the lowest fill in flight (fills_low) never take the lock.
 *
 * A fill of more than one WRITE_CHUNK writes its chunks with Linux native AIO (io_submit) as the caller
 * reports them ready, so the device writes chunk k while the caller seals chunk k + 1 (measured here: a
 * 20 MB batch's seal-and-write went from ~29-46 ms to ~18-23 ms); one chunk at a time (SEGLOG_AIO_DEPTH),
 * as the synchronous writes were, so that reads do not queue behind more of it. AIO contexts are kept in a pool for the
 * log's life: io_destroy waits for an RCU grace period (~30 ms here). Without AIO (io_setup refused) the
 * fill writes synchronously at its end, as a plain append does.
 */
#include "store/segment_log.h"

#include "base/fd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <linux/aio_abi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_SEGMENTS (1u << 20)
#define WRITE_CHUNK ((size_t)1 << 20)
#define COPY_CHUNK ((size_t)1 << 20)
#define MAX_FILLING 64 /* fills in flight at once; one more waits for a slot */
#define AIO_POOL 16    /* AIO contexts kept */
#define AIO_DEPTH SEGLOG_AIO_DEPTH
#define SPARES 4 /* spare fill buffers kept */

typedef struct {
    int write_fd;   /* O_DIRECT when the file system allows it; -1 until first written */
    int read_fd;    /* page-cache reads; -1 until first read */
    bool dirty;     /* written since the last sync */
    uint64_t alloc; /* bytes of the file preallocated (its size); valid once write_fd is open */
} segment;

struct segment_log {
    char *dir;
    /* the recent-bytes cache: position p lives at ring[p % ring_size] while p >= ring_low; the ring is
     * mapped twice, back to back (2 x ring_size bytes of address space) */
    char *ring;
    uint64_t ring_size;
    _Atomic uint64_t ring_low;
    struct {
        uint64_t start, end; /* its bytes */
        uint64_t ready;      /* bytes from start final in the ring (a cached fill's; an uncached one's are
                                readable once it ended) */
        bool cached;
    } fills[MAX_FILLING]; /* the fills begun and not ended */
    unsigned nfills;
    _Atomic uint64_t fills_low;  /* the lowest start among them (UINT64_MAX: none): a read below never waits */
    pthread_cond_t filled;       /* a fill was made readable further, or ended */
    unsigned waiters;            /* reads waiting on it */
    aio_context_t aio[AIO_POOL]; /* idle AIO contexts */
    unsigned naio;
    struct {
        unsigned char *p;
        size_t cap;
    } spare[SPARES]; /* buffers of uncached fills, kept between them (a fresh 20 MB one costs its page faults) */
    uint64_t segment_size;
    pthread_mutex_t lock;
    uint64_t end;  /* next free position */
    segment *segs; /* indexed by segment number */
    uint64_t nsegs;
    int fault;        /* injected errno, 0: none */
    bool short_armed; /* injected: the next append writes short_bytes, then fails with ENOSPC */
    uint64_t short_bytes;
};

static void seg_file(const char *dir, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%012" PRIu64 ".seg", dir, seg);
}

static void seg_path(const segment_log *l, uint64_t seg, char *out, size_t cap) { seg_file(l->dir, seg, out, cap); }

static ms_code io_fail(ms_err *e, int err, const char *what)
{
    if (err == ENOSPC || err == EDQUOT || err == EFBIG)
        return ms_fail(e, MS_EFULL, "segment log: %s: disk full (%s)", what, strerror(err));
    return ms_fail(e, MS_EIO, "segment log: %s: %s", what, strerror(err));
}

/* The segment's slot (growing the table); caller holds the lock. */
static segment *slot(segment_log *l, uint64_t seg)
{
    if (seg >= l->nsegs) {
        uint64_t n = seg + 16;
        l->segs = ms_realloc(l->segs, sizeof(segment) * n);
        for (uint64_t i = l->nsegs; i < n; i++)
            l->segs[i] = (segment){-1, -1, false, 0};
        l->nsegs = n;
    }
    return &l->segs[seg];
}

/* Open (creating if new) a segment for writing; caller holds the lock. */
static ms_code open_for_write(segment_log *l, uint64_t seg, int *fd_out, ms_err *e)
{
    segment *s = slot(l, seg);
    if (s->write_fd >= 0) {
        *fd_out = s->write_fd;
        return MS_OK;
    }
    char path[4096];
    seg_path(l, seg, path, sizeof path);
    bool created = access(path, F_OK) != 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_DIRECT, 0600);
    if (fd < 0 && errno == EINVAL) fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600); /* no O_DIRECT here */
    if (fd < 0) return io_fail(e, errno, "open");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return io_fail(e, err, "stat");
    }
    if (created) {
        int dfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* make the new name durable */
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    s->write_fd = fd;
    s->alloc = (uint64_t)st.st_size; /* a segment of an older store may be preallocated whole */
    *fd_out = fd;
    return MS_OK;
}

static int allocate(int fd, uint64_t from, uint64_t to)
{
    while (fallocate(fd, 0, (off_t)from, (off_t)(to - from)) != 0) {
        if (errno != EINTR) return errno;
    }
    return 0;
}

/* Make the segment's file allocated at least up to need_end (an offset in the segment), preferably up
 * to want_end: the step, or exactly need_end when the disk cannot give the step. Caller holds the lock
 * and has opened the segment for writing. */
static ms_code grow(segment_log *l, uint64_t seg, uint64_t need_end, uint64_t want_end, ms_err *e)
{
    segment *s = &l->segs[seg];
    if (want_end > l->segment_size) want_end = l->segment_size;
    if (want_end <= s->alloc) return MS_OK;
    int rc = allocate(s->write_fd, s->alloc, want_end);
    if (rc == 0) {
        s->alloc = want_end;
        return MS_OK;
    }
    if (rc == EOPNOTSUPP) { /* a file system without fallocate: writes allocate as they go */
        s->alloc = l->segment_size;
        return MS_OK;
    }
    if (need_end <= s->alloc) return MS_OK; /* the step did not fit, but what is needed is there */
    if (need_end < want_end && (rc = allocate(s->write_fd, s->alloc, need_end)) == 0) {
        s->alloc = need_end;
        return MS_OK;
    }
    return io_fail(e, rc, "preallocate");
}

/* ring_size bytes of memory mapped twice, back to back; NULL if the system will not (then: no cache). */
static char *ring_map(uint64_t size)
{
    int fd = memfd_create("medstream-body-cache", MFD_CLOEXEC);
    if (fd < 0) return NULL;
    char *base = NULL;
    if (ftruncate(fd, (off_t)size) == 0) {
        void *m = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED) {
            base = m;
            if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
                mmap(base + size, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
                munmap(base, 2 * size);
                base = NULL;
            }
        }
    }
    close(fd);
    return base;
}

ms_code seglog_open(segment_log **out, const char *dir, uint64_t segment_size, uint64_t cache_size, uint64_t end_pos,
                    ms_err *e)
{
    if (segment_size < 16 * SEGLOG_ALIGN || segment_size % SEGLOG_ALIGN)
        return ms_fail(e, MS_EINVAL, "segment size must be a multiple of 4096 and at least 64 KiB");
    /* Every segment below the end holds bodies the store references (a new segment's name is made durable
     * before any position in it is handed out): one that is missing was lost or not restored with the store,
     * and is refused by name rather than read as short reads or made afresh. */
    for (uint64_t seg = 0; end_pos && seg <= (end_pos - 1) / segment_size; seg++) {
        char path[4096];
        seg_file(dir, seg, path, sizeof path);
        if (access(path, F_OK) != 0 && errno == ENOENT)
            return ms_fail(e, MS_ECORRUPT,
                           "segment log: %s is missing below the log's end (%" PRIu64
                           "): the store's record bodies were lost or not restored with it; nothing was changed",
                           path, end_pos);
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return io_fail(e, errno, dir);
    segment_log *l = ms_calloc(1, sizeof *l);
    l->dir = ms_strndup(dir, strlen(dir));
    l->segment_size = segment_size;
    l->end = end_pos;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    l->ring_size = cache_size / page * page;
    if (l->ring_size && !(l->ring = ring_map(l->ring_size))) l->ring_size = 0;
    atomic_store(&l->ring_low, UINT64_MAX); /* nothing cached yet */
    atomic_store(&l->fills_low, UINT64_MAX);
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->filled, NULL);
    *out = l;
    return MS_OK;
}

void seglog_close(segment_log *l)
{
    if (!l) return;
    for (uint64_t i = 0; i < l->nsegs; i++) {
        if (l->segs[i].write_fd >= 0) close(l->segs[i].write_fd);
        if (l->segs[i].read_fd >= 0) close(l->segs[i].read_fd);
    }
    for (unsigned i = 0; i < l->naio; i++)
        syscall(SYS_io_destroy, l->aio[i]);
    for (int i = 0; i < SPARES; i++)
        free(l->spare[i].p);
    free(l->segs);
    if (l->ring) munmap(l->ring, 2 * l->ring_size);
    free(l->dir);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->filled);
    free(l);
}

static void ring_copy_in(segment_log *l, uint64_t pos, const void *data, size_t len)
{
    memcpy(l->ring + pos % l->ring_size, data, len); /* the mirror takes what runs past the end */
}

/* Copy from the ring if [pos, pos+len) is there and stays there while copying. */
static bool ring_copy_out(segment_log *l, uint64_t pos, void *out, size_t len)
{
    if (!l->ring || len > l->ring_size) return false;
    uint64_t low = atomic_load(&l->ring_low);
    if (low == UINT64_MAX || pos < low) return false;
    memcpy(out, l->ring + pos % l->ring_size, len);
    atomic_thread_fence(memory_order_seq_cst);
    return pos >= atomic_load(&l->ring_low);
}

static uint64_t round_up(uint64_t n) { return (n + SEGLOG_ALIGN - 1) & ~(uint64_t)(SEGLOG_ALIGN - 1); }

/* Reserve need bytes at the log's end (caller holds the lock): their position and segment's fd, and
 * whether they go to the ring (*cached). A fill is registered in l->fills (waiting for a slot when
 * MAX_FILLING are in flight). Not cached: bytes larger than the ring, or that would overwrite ring bytes
 * of a cached fill still in flight. Raises ring_low past the ring bytes the reservation overwrites, or to
 * its end when it is not cached (nothing before it is then known to be in the ring). */
static ms_code reserve(segment_log *l, uint64_t need, bool fill, uint64_t *pos, int *fd, bool *cached, ms_err *e)
{
    *cached = false;
    while (fill && l->nfills == MAX_FILLING && !l->fault)
        pthread_cond_wait(&l->filled, &l->lock);
    if (l->fault) return io_fail(e, l->fault, "write");
    uint64_t off = l->end % l->segment_size;
    uint64_t start = off + need > l->segment_size ? l->end + (l->segment_size - off) : l->end;
    uint64_t seg = start / l->segment_size, seg_end = start % l->segment_size + need;
    ms_code rc = open_for_write(l, seg, fd, e);
    if (rc == MS_OK && seg_end > l->segs[seg].alloc) rc = grow(l, seg, seg_end, seg_end + SEGLOG_PREALLOC_STEP, e);
    if (rc != MS_OK) return rc;
    *pos = start;
    l->end = start + need;
    bool ok = false;
    if (l->ring) {
        uint64_t low = l->end > l->ring_size ? l->end - l->ring_size : 0;
        ok = need <= l->ring_size;
        for (unsigned i = 0; i < l->nfills && ok; i++)
            ok = !l->fills[i].cached || low <= l->fills[i].start;
        uint64_t cur = atomic_load(&l->ring_low);
        if (!ok)
            low = l->end;
        else if (cur == UINT64_MAX && start > low)
            low = start; /* first append since open */
        if (cur == UINT64_MAX || low > cur) atomic_store(&l->ring_low, low);
        atomic_thread_fence(memory_order_seq_cst);
    }
    if (fill) {
        unsigned i = l->nfills++;
        l->fills[i].start = start;
        l->fills[i].end = start + need;
        l->fills[i].ready = 0;
        l->fills[i].cached = ok;
        if (start < atomic_load(&l->fills_low)) atomic_store(&l->fills_low, start);
    }
    *cached = ok;
    return MS_OK;
}

/* Wait until [pos, pos + len) is readable: no fill in flight holds a byte of it that is not final yet. A
 * cached fill's sealed part is final in the ring, unless an append that could not be cached has raised
 * ring_low past the fill's start since (reserve): then a read of it goes to the file, which has it only once
 * the fill has ended. */
static void wait_filled(segment_log *l, uint64_t pos, size_t len)
{
    pthread_mutex_lock(&l->lock);
    for (;;) {
        bool wait = false;
        uint64_t low = atomic_load(&l->ring_low);
        for (unsigned i = 0; i < l->nfills && !wait; i++) {
            uint64_t s = l->fills[i].start;
            bool in_ring = l->fills[i].cached && s >= low && s + l->fills[i].ready >= pos + len;
            wait = s < pos + len && pos < l->fills[i].end && !in_ring;
        }
        if (!wait) break;
        l->waiters++;
        pthread_cond_wait(&l->filled, &l->lock);
        l->waiters--;
    }
    pthread_mutex_unlock(&l->lock);
}

/* Write src[0, len) at offset foff of fd now; short_at: where the disk fills (test hook, UINT64_MAX: no). */
static int write_now(int fd, const char *src, size_t len, off_t foff, uint64_t short_at)
{
    size_t done = 0;
    while (done < len) {
        /* 1 MiB at a time: a read queued behind our writes then waits for at most 1 MiB, not a whole
         * 20 MB batch (measured here: 1 MiB O_DIRECT writes also stream faster than 20 MB ones) */
        size_t chunk = len - done < WRITE_CHUNK ? len - done : WRITE_CHUNK;
        /* test hook: the disk takes only up to short_at, as pwrite does when it fills mid-write (a short
         * count), and then nothing (ENOSPC) */
        size_t take = done + chunk > short_at ? (size_t)(short_at - done) : chunk;
        ssize_t w = take ? pwrite(fd, src + done, take, foff + (off_t)done) : (errno = ENOSPC, -1);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        done += (size_t)w;
    }
    return 0;
}

static void mark_dirty(segment_log *l, uint64_t pos)
{
    pthread_mutex_lock(&l->lock);
    l->segs[pos / l->segment_size].dirty = true;
    pthread_mutex_unlock(&l->lock);
}

ms_code seglog_append(segment_log *l, const void *data, size_t len, uint64_t *pos_out, ms_err *e)
{
    uint64_t need = round_up(len);
    if (need > l->segment_size) return ms_fail(e, MS_EINVAL, "segment log: %zu bytes exceed the segment size", len);
    int fd = -1;
    uint64_t pos = 0;
    bool cached;
    pthread_mutex_lock(&l->lock);
    uint64_t short_at = l->short_armed ? l->short_bytes : UINT64_MAX; /* test hook: where the disk fills */
    l->short_armed = false;
    ms_code rc = reserve(l, need, false, &pos, &fd, &cached, e);
    /* copied under the lock: two appends racing to copy into the same ring bytes would leave the older
     * bytes in place of the newer ones */
    if (rc == MS_OK && cached) ring_copy_in(l, pos, data, len);
    pthread_mutex_unlock(&l->lock);
    if (rc != MS_OK) return rc;

    const char *src = data;
    void *bounce = NULL;
    if (((uintptr_t)data % SEGLOG_ALIGN) != 0 || need != len) {
        if (posix_memalign(&bounce, SEGLOG_ALIGN, need) != 0) ms_oom();
        memcpy(bounce, data, len);
        memset((char *)bounce + len, 0, need - len);
        src = bounce;
    }
    int err = write_now(fd, src, need, (off_t)(pos % l->segment_size), short_at);
    free(bounce);
    if (err) return io_fail(e, err, "write"); /* leaves a hole that nothing references */
    mark_dirty(l, pos);
    *pos_out = pos;
    return MS_OK;
}

/* ---- fills ---- */

static unsigned char *spare_take(segment_log *l, size_t need, size_t *cap)
{
    unsigned char *p = NULL;
    pthread_mutex_lock(&l->lock);
    for (int i = 0; i < SPARES && !p; i++)
        if (l->spare[i].p && l->spare[i].cap >= need) {
            p = l->spare[i].p;
            *cap = l->spare[i].cap;
            l->spare[i].p = NULL;
        }
    pthread_mutex_unlock(&l->lock);
    if (p) return p;
    *cap = need + need / 4; /* room for the next, slightly larger batch */
    if (posix_memalign((void **)&p, SEGLOG_ALIGN, *cap ? *cap : SEGLOG_ALIGN) != 0) ms_oom();
    return p;
}

/* Keep the larger buffers, free the rest. Caller holds the lock. */
static void spare_give(segment_log *l, unsigned char *p, size_t cap)
{
    for (int i = 0; i < SPARES && p; i++) {
        if (!l->spare[i].p || l->spare[i].cap < cap) {
            unsigned char *q = l->spare[i].p;
            size_t qc = l->spare[i].cap;
            l->spare[i].p = p;
            l->spare[i].cap = cap;
            p = q;
            cap = qc;
        }
    }
    free(p);
}

ms_code seglog_fill_begin(segment_log *l, size_t len, seglog_fill *f, ms_err *e)
{
    memset(f, 0, sizeof *f);
    uint64_t need = round_up(len);
    if (need > l->segment_size) return ms_fail(e, MS_EINVAL, "segment log: %zu bytes exceed the segment size", len);
    bool cached;
    pthread_mutex_lock(&l->lock);
    f->short_at = l->short_armed ? l->short_bytes : UINT64_MAX;
    l->short_armed = false;
    ms_code rc = reserve(l, need, true, &f->pos, &f->fd, &cached, e);
    if (rc == MS_OK && need > WRITE_CHUNK && l->naio) f->aio = l->aio[--l->naio];
    pthread_mutex_unlock(&l->lock);
    if (rc != MS_OK) return rc;
    f->log = l;
    f->len = (size_t)need;
    f->cached = cached;
    f->dst = cached ? (unsigned char *)l->ring + f->pos % l->ring_size : spare_take(l, f->len, &f->own_cap);
    if (need > WRITE_CHUNK && !f->aio && syscall(SYS_io_setup, AIO_DEPTH, &f->aio) != 0) f->aio = 0;
    return MS_OK;
}

/* Reap at least min finished chunk writes (their slots free again); a failure or a short count is kept
 * in f->err (a short count is finished with write_now). */
static void fill_reap(seglog_fill *f, unsigned min)
{
    while (min > 0) {
        struct io_event ev[AIO_DEPTH];
        long n = syscall(SYS_io_getevents, f->aio, (long)min, (long)AIO_DEPTH, ev, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            /* cannot happen with a valid context; the writes' fate is unknown, so the fill fails */
            if (!f->err) f->err = errno;
            f->inflight = 0;
            return;
        }
        for (long i = 0; i < n; i++) {
            unsigned slot = (unsigned)ev[i].data;
            size_t off = f->slot_off[slot], want = f->slot_len[slot];
            long long res = (long long)ev[i].res;
            f->busy &= ~(1u << slot);
            f->inflight--;
            if (res < 0) {
                if (!f->err) f->err = (int)-res;
            } else if ((size_t)res < want && !f->err) {
                f->err = write_now(f->fd, (const char *)f->dst + off + res, want - (size_t)res,
                                   (off_t)((f->pos + off + (size_t)res) % f->log->segment_size), UINT64_MAX);
            }
        }
        min = (unsigned)n >= min ? 0 : min - (unsigned)n;
    }
}

/* Start writing dst[f->sent, to): asynchronously in chunks with AIO, else now. */
static void fill_write(seglog_fill *f, size_t to)
{
    if (f->err || to <= f->sent) return;
    off_t base = (off_t)(f->pos % f->log->segment_size);
    if (to > f->short_at) { /* test hook: the disk takes up to short_at, then nothing */
        if (f->sent < f->short_at) fill_write(f, (size_t)f->short_at);
        f->sent = to;
        if (!f->err) f->err = ENOSPC;
        return;
    }
    if (!f->aio) {
        f->err = write_now(f->fd, (const char *)f->dst + f->sent, to - f->sent, base + (off_t)f->sent, UINT64_MAX);
        f->sent = to;
        return;
    }
    while (f->sent < to && !f->err) {
        if (f->inflight == AIO_DEPTH) fill_reap(f, 1);
        if (f->err) break;
        unsigned slot = (unsigned)__builtin_ctz(~f->busy);
        size_t n = to - f->sent < WRITE_CHUNK ? to - f->sent : WRITE_CHUNK;
        struct iocb *cb = &f->iocb[slot];
        memset(cb, 0, sizeof *cb);
        cb->aio_data = slot;
        cb->aio_fildes = (uint32_t)f->fd;
        cb->aio_lio_opcode = IOCB_CMD_PWRITE;
        cb->aio_buf = (uint64_t)(uintptr_t)(f->dst + f->sent);
        cb->aio_nbytes = n;
        cb->aio_offset = (int64_t)(base + (off_t)f->sent);
        struct iocb *one = cb;
        long r = syscall(SYS_io_submit, f->aio, 1L, &one);
        if (r == 1) {
            f->busy |= 1u << slot;
            f->slot_off[slot] = f->sent;
            f->slot_len[slot] = n;
            f->inflight++;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else { /* refused (EAGAIN: the kernel's limit): write it now */
            f->err = write_now(f->fd, (const char *)f->dst + f->sent, n, base + (off_t)f->sent, UINT64_MAX);
        }
        f->sent += n;
    }
}

void seglog_fill_ready(seglog_fill *f, size_t upto)
{
    segment_log *l = f->log;
    if (f->cached) { /* readable from the ring up to here */
        pthread_mutex_lock(&l->lock);
        for (unsigned i = 0; i < l->nfills; i++)
            if (l->fills[i].start == f->pos) l->fills[i].ready = upto;
        if (l->waiters) pthread_cond_broadcast(&l->filled);
        pthread_mutex_unlock(&l->lock);
    }
    if (f->aio) fill_write(f, upto / WRITE_CHUNK * WRITE_CHUNK); /* without AIO: written at the end */
}

ms_code seglog_fill_end(seglog_fill *f, bool write, ms_err *e)
{
    segment_log *l = f->log;
    if (write) fill_write(f, f->len);
    if (f->aio && f->inflight) fill_reap(f, f->inflight); /* the disk reads dst until then */
    pthread_mutex_lock(&l->lock);
    uint64_t low = UINT64_MAX;
    for (unsigned i = 0; i < l->nfills;) {
        if (l->fills[i].start == f->pos) {
            l->fills[i] = l->fills[--l->nfills];
            continue;
        }
        if (l->fills[i].start < low) low = l->fills[i].start;
        i++;
    }
    atomic_store(&l->fills_low, low);
    pthread_cond_broadcast(&l->filled); /* reads waiting for it, and fills waiting for a slot */
    if (!f->cached) spare_give(l, f->dst, f->own_cap);
    if (f->aio) {
        if (l->naio < AIO_POOL)
            l->aio[l->naio++] = f->aio;
        else
            syscall(SYS_io_destroy, f->aio);
    }
    if (write && !f->err && f->len) l->segs[f->pos / l->segment_size].dirty = true;
    pthread_mutex_unlock(&l->lock);
    f->dst = NULL;
    if (write && f->err) return io_fail(e, f->err, "write"); /* leaves a hole that nothing references */
    return MS_OK;
}

ms_code seglog_preallocate(segment_log *l, size_t min_len, ms_err *e)
{
    uint64_t need = round_up(min_len ? min_len : 1);
    if (need > l->segment_size) return ms_fail(e, MS_EINVAL, "segment log: %zu bytes exceed the segment size", min_len);
    pthread_mutex_lock(&l->lock);
    ms_code rc = MS_OK;
    if (l->fault) {
        rc = io_fail(e, l->fault, "preallocate");
    } else {
        uint64_t off = l->end % l->segment_size;
        uint64_t start = off + need > l->segment_size ? l->end + (l->segment_size - off) : l->end;
        uint64_t seg = start / l->segment_size, seg_end = start % l->segment_size + need;
        int fd;
        rc = open_for_write(l, seg, &fd, e);
        if (rc == MS_OK) rc = grow(l, seg, seg_end, seg_end + SEGLOG_PREALLOC_STEP, e);
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

ms_code seglog_sync(segment_log *l, ms_err *e)
{
    for (;;) {
        int fds[64];
        uint64_t which[64];
        int n = 0;
        bool more = false;
        pthread_mutex_lock(&l->lock);
        if (l->fault) {
            int err = l->fault;
            pthread_mutex_unlock(&l->lock);
            return io_fail(e, err, "fdatasync");
        }
        for (uint64_t i = 0; i < l->nsegs; i++) {
            if (!l->segs[i].dirty) continue;
            if (n == 64) {
                more = true;
                break;
            }
            l->segs[i].dirty = false;
            fds[n] = l->segs[i].write_fd;
            which[n++] = i;
        }
        pthread_mutex_unlock(&l->lock);
        for (int i = 0; i < n; i++) {
            if (fdatasync(fds[i]) != 0) {
                int err = errno;
                pthread_mutex_lock(&l->lock); /* still not durable: keep them for the next sync */
                for (int j = i; j < n; j++)
                    l->segs[which[j]].dirty = true;
                pthread_mutex_unlock(&l->lock);
                return io_fail(e, err, "fdatasync");
            }
        }
        if (!more) return MS_OK;
    }
}

uint64_t seglog_end(const segment_log *l)
{
    segment_log *m = (segment_log *)l;
    pthread_mutex_lock(&m->lock);
    uint64_t end = m->end;
    pthread_mutex_unlock(&m->lock);
    return end;
}

void seglog_inject_fault(segment_log *l, int err)
{
    pthread_mutex_lock(&l->lock);
    l->fault = err;
    pthread_mutex_unlock(&l->lock);
}

void seglog_inject_short_write(segment_log *l, uint64_t bytes)
{
    pthread_mutex_lock(&l->lock);
    l->short_armed = true;
    l->short_bytes = bytes & ~(uint64_t)(SEGLOG_ALIGN - 1); /* O_DIRECT writes land in whole blocks */
    pthread_mutex_unlock(&l->lock);
}

static int read_fd(segment_log *l, uint64_t seg)
{
    pthread_mutex_lock(&l->lock);
    segment *s = slot(l, seg);
    if (s->read_fd < 0) {
        char path[4096];
        seg_path(l, seg, path, sizeof path);
        s->read_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    int fd = s->read_fd;
    pthread_mutex_unlock(&l->lock);
    return fd;
}

ms_code seglog_read(segment_log *l, uint64_t pos, void *out, size_t len, ms_err *e)
{
    uint64_t seg = pos / l->segment_size;
    if (seg >= MAX_SEGMENTS) return ms_fail(e, MS_ECORRUPT, "segment log: position out of range");
    if (pos + len > atomic_load(&l->fills_low)) wait_filled(l, pos, len); /* the writer, reading a batch it holds */
    if (ring_copy_out(l, pos, out, len)) return MS_OK;
    int fd = read_fd(l, seg);
    if (fd < 0) return io_fail(e, errno, "open for reading");
    off_t off = (off_t)(pos % l->segment_size);
    size_t got;
    int err = ms_read_full(fd, out, len, off, &got);
    if (err) return io_fail(e, err, "read");
    if (got < len) return ms_fail(e, MS_ECORRUPT, "segment log: short read");
    return MS_OK;
}

void seglog_prefetch(segment_log *l, uint64_t pos, size_t len)
{
    uint64_t seg = pos / l->segment_size;
    if (seg >= MAX_SEGMENTS || pos >= atomic_load(&l->ring_low)) return; /* in memory already */
    int fd = read_fd(l, seg);
    if (fd >= 0) (void)posix_fadvise(fd, (off_t)(pos % l->segment_size), (off_t)len, POSIX_FADV_WILLNEED);
}

/* ---- copies (store_backup) ---- */

/* Copy len bytes of in (from its start) into the new file out; fdatasync it. */
static ms_code copy_bytes(int in, const char *in_path, int out, uint64_t len, char *chunk, ms_err *e)
{
    uint64_t done = 0;
    while (done < len) {
        size_t want = len - done < COPY_CHUNK ? (size_t)(len - done) : COPY_CHUNK;
        size_t got;
        int err = ms_read_full(in, chunk, want, (off_t)done, &got);
        if (err) return io_fail(e, err, "backup: read");
        if (got < want) return ms_fail(e, MS_ECORRUPT, "segment log: backup: %s ends early", in_path);
        if ((err = ms_write_full(out, chunk, got, -1, NULL))) return io_fail(e, err, "backup: write");
        done += got;
    }
    if (fdatasync(out) != 0) return io_fail(e, errno, "backup: fdatasync");
    (void)posix_fadvise(out, 0, 0, POSIX_FADV_DONTNEED); /* the copy's pages are of no use in the cache */
    return MS_OK;
}

ms_code seglog_copy_files(const char *dir, uint64_t segment_size, uint64_t end, const char *out_dir, uint32_t *files,
                          ms_err *e)
{
    *files = 0;
    if (segment_size < 16 * SEGLOG_ALIGN || segment_size % SEGLOG_ALIGN)
        return ms_fail(e, MS_EINVAL, "segment size must be a multiple of 4096 and at least 64 KiB");
    uint64_t nseg = (end + segment_size - 1) / segment_size;
    char *chunk = ms_malloc(COPY_CHUNK);
    ms_code rc = MS_OK;
    uint64_t created = 0; /* files 0 .. created-1 exist in out_dir */
    for (uint64_t seg = 0; seg < nseg && rc == MS_OK; seg++) {
        char from[4096], to[4096];
        seg_file(dir, seg, from, sizeof from);
        seg_file(out_dir, seg, to, sizeof to);
        int in = open(from, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            rc = errno == ENOENT
                     ? ms_fail(e, MS_ECORRUPT, "segment log: backup: %s is missing below the log's end", from)
                     : io_fail(e, errno, "backup: open");
            break;
        }
        struct stat st;
        int out = -1;
        if (fstat(in, &st) != 0) {
            rc = io_fail(e, errno, "backup: stat");
        } else if ((out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
            rc = io_fail(e, errno, "backup: create");
        } else {
            created++;
            /* below the last segment, the whole file (positions past its last append were skipped, never
             * written); in the last one, exactly up to end, or less where a reservation below end was
             * still being written (bytes nothing committed references) */
            uint64_t want = seg + 1 < nseg ? segment_size : end - seg * segment_size;
            uint64_t have = (uint64_t)st.st_size < want ? (uint64_t)st.st_size : want;
            (void)posix_fadvise(in, 0, (off_t)have, POSIX_FADV_SEQUENTIAL);
            rc = copy_bytes(in, from, out, have, chunk, e);
            ++*files;
        }
        close(in);
        if (out >= 0 && close(out) != 0 && rc == MS_OK) rc = io_fail(e, errno, "backup: close");
    }
    free(chunk);
    if (rc != MS_OK) { /* take back what this call created: a partial copy must not look like a log */
        for (uint64_t i = 0; i < created; i++) {
            char to[4096];
            seg_file(out_dir, i, to, sizeof to);
            unlink(to);
        }
        *files = 0;
        return rc;
    }
    int dfd = open(out_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* the new names, durable */
    if (dfd < 0 || fsync(dfd) != 0) rc = io_fail(e, errno, "backup: fsync of the directory");
    if (dfd >= 0) close(dfd);
    return rc;
}

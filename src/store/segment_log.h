/*
 * segment_log.h - the append-only log that holds record bodies (PHI), beside LMDB which holds keys,
 * indexes and the log positions (DESIGN.md: bodies in an append-only segment log, fdatasync per batch).
 *
 * DESIGN: segment files of at most segment_size bytes (default 1 GiB), written with O_DIRECT from
 * 4 KiB-aligned buffers: measured on this machine, 20 MB O_DIRECT pwrite + fdatasync takes ~10 ms
 * against ~70 ms through the page cache. A position is a global byte offset: segment number * segment
 * size + offset. Every append starts on a 4 KiB boundary; an append that does not fit in the current
 * segment starts the next one.
 * A segment file is preallocated (fallocate) in steps as appends reach its end: SEGLOG_PREALLOC_STEP
 * past the end of the append that needs more room, never past segment_size; when the disk cannot give
 * that much, exactly what the append needs. So most appends change neither the file's size nor its
 * block map (fdatasync then flushes data only), a nearly full disk still takes small appends, and
 * taking appends again needs no restart once space is freed. A new log takes one step of disk, not a
 * whole segment.
 *
 * Contract: any thread may append (the request threads write their own bodies, in parallel, while the
 * single writer only syncs) and read. seglog_sync makes every append that returned before it was called
 * durable. The log's durable end is whatever the caller recorded in LMDB after a sync: bytes past it are
 * garbage and are overwritten after a restart (recovery needs no scan); a failed append leaves a hole
 * that nothing references. The log never interprets the bytes. A full disk (ENOSPC, EDQUOT, EFBIG) is
 * MS_EFULL with "disk full" in the message; other I/O errors are MS_EIO.
 */
#ifndef MS_SEGMENT_LOG_H
#define MS_SEGMENT_LOG_H

#include "base/util.h"

#include <linux/aio_abi.h>

#define SEGLOG_ALIGN 4096
/* How far past an append's end a segment file is preallocated when it must grow. */
#define SEGLOG_PREALLOC_STEP ((uint64_t)64 << 20)
/* Chunk writes of one fill in flight at once: one, so that a read that misses every cache waits behind at
 * most one chunk of each fill, while the next chunk is sealed. Measured at 1,000,000/min of 20 KB
 * (README "A batch's path overlapped"): point read p99 2.1-2.7 ms with 1, 2.2-3.9 with 2, 4.0-5.3 with
 * 16; freshness no worse. */
#define SEGLOG_AIO_DEPTH 1

typedef struct segment_log segment_log;

/* Open the log in dir (created if missing) and continue writing at end_pos. cache_size bytes of the
 * most recent appends are kept in memory for reads (0: none). */
ms_code seglog_open(segment_log **out, const char *dir, uint64_t segment_size, uint64_t cache_size, uint64_t end_pos,
                    ms_err *e);
void seglog_close(segment_log *l);

/* Write len bytes at the end of the log and return their position. Thread-safe. A 4 KiB-aligned data
 * pointer whose buffer is zero-padded up to a multiple of 4 KiB (pass the padded length) goes to the
 * disk without a copy. MS_EFULL when the disk is full. */
ms_code seglog_append(segment_log *l, const void *data, size_t len, uint64_t *pos, ms_err *e);
/* An append the caller fills in place (store_append_sealed seals records straight into it): begin
 * reserves len bytes (rounded up to 4 KiB) at the end of the log and gives dst, where the caller writes
 * them, in order: in the recent-bytes cache when it can (no copy at all), else a buffer of the log's.
 * ready(upto) says dst[0, upto) is final, so its whole chunks may go to the disk now, while the caller
 * goes on, and another thread may read them (seglog_read waits for that); end(write = true) writes the rest (zero the
 * padding first), waits for every write and makes the append what a returned seglog_append is (seglog_sync then makes
 * it durable); end(write = false) gives up (waits for the writes begun, leaves a hole) and returns MS_OK. dst is valid
 * from begin to end. MS_EFULL when the disk is full (at begin when the space cannot be allocated, at end when a write
 * fails with ENOSPC). Thread-safe; one fill belongs to one thread. */
typedef struct {
    unsigned char *dst; /* len bytes, 4 KiB-aligned */
    uint64_t pos;       /* where they go in the log */
    size_t len;
    /* the log's own */
    struct segment_log *log;
    int fd, err;
    bool cached;
    size_t own_cap, sent;
    uint64_t short_at;
    aio_context_t aio;
    unsigned inflight, busy;
    struct iocb iocb[SEGLOG_AIO_DEPTH];
    size_t slot_off[SEGLOG_AIO_DEPTH], slot_len[SEGLOG_AIO_DEPTH];
} seglog_fill;
ms_code seglog_fill_begin(segment_log *l, size_t len, seglog_fill *f, ms_err *e);
void seglog_fill_ready(seglog_fill *f, size_t upto);
ms_code seglog_fill_end(seglog_fill *f, bool write, ms_err *e);

/* Can an append of min_len bytes be placed now? Preallocates the next step where the next append of
 * min_len bytes would go (or at least min_len bytes when the disk cannot give the step), as an append
 * would, without writing or reserving anything. MS_EFULL when the disk is full. Thread-safe. */
ms_code seglog_preallocate(segment_log *l, size_t min_len, ms_err *e);
/* Make every append that returned before this call durable. Thread-safe. */
ms_code seglog_sync(segment_log *l, ms_err *e);
/* The end of everything appended so far. */
uint64_t seglog_end(const segment_log *l);

/* Read len bytes at pos (thread-safe). Bytes of a fill still in flight (another thread's) are read once
 * they are final: up to what its seglog_fill_ready said when it is cached, else once it ended; the read
 * waits until then. */
ms_code seglog_read(segment_log *l, uint64_t pos, void *out, size_t len, ms_err *e);
/* A hint that [pos, pos + len) will be read soon: the kernel starts reading it into the page cache and
 * this returns at once (posix_fadvise WILLNEED). Errors are ignored: the read that follows reports them. */
void seglog_prefetch(segment_log *l, uint64_t pos, size_t len);

/* Copy the log whose files are in dir (segment_size bytes each) up to position end into out_dir (which
 * exists): the whole files of the segments below end's segment, end's segment up to end, nothing past
 * it. Each copy is fdatasynced, then out_dir. Reads the files only, so the log that owns them may go on
 * appending past end meanwhile (appends never rewrite a byte below the log's end). *files: the files
 * copied. MS_ECORRUPT if a segment below end is missing; on failure the files this call created are
 * removed. */
ms_code seglog_copy_files(const char *dir, uint64_t segment_size, uint64_t end, const char *out_dir, uint32_t *files,
                          ms_err *e);

/* Test hook: make the next write or sync fail with this errno (0: off). */
void seglog_inject_fault(segment_log *l, int err);
/* Test hook: the next append writes only its first bytes (rounded down to 4 KiB) to the file, as a disk
 * that fills up in the middle of a write does, and then fails with ENOSPC (MS_EFULL). Once. */
void seglog_inject_short_write(segment_log *l, uint64_t bytes);

#endif

/*
 * fd_io.h - whole reads and writes on a file descriptor: the loop every file reader and writer needs around
 * read(2)/write(2) (EINTR, short counts), written once.
 *
 * Contract: each call goes on after EINTR and after a short count until all n bytes are done, the file ends
 * (a read), or a call fails; it returns 0 or the errno of the failure, and reports how many bytes it did
 * either way. A write that takes 0 bytes is ENOSPC (a full disk writes what fits, then nothing, and may set
 * no errno). off >= 0 reads or writes at that offset (pread/pwrite: the file offset is not moved); off < 0
 * at the file's offset (read/write: pipes, sockets, O_APPEND files).
 * What it must never do: sync (the caller decides when to fdatasync), allocate, log, or close the fd.
 */
#ifndef MS_FD_IO_H
#define MS_FD_IO_H

#include <stddef.h>
#include <sys/types.h>

/* Write n bytes of p; *done (may be NULL) receives the bytes written, also on failure. */
int ms_write_full(int fd, const void *p, size_t n, off_t off, size_t *done);
/* Read n bytes into p, or fewer when the file ends first; *got (may be NULL) receives the bytes read. */
int ms_read_full(int fd, void *p, size_t n, off_t off, size_t *got);

#endif

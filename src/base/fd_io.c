/*
 * fd_io.c - whole reads and writes on a file descriptor (see fd_io.h).
 */
#include "base/fd_io.h"

#include <errno.h>
#include <unistd.h>

int ms_write_full(int fd, const void *p, size_t n, off_t off, size_t *done)
{
    size_t at = 0;
    int err = 0;
    while (at < n) {
        const char *from = (const char *)p + at;
        ssize_t w = off >= 0 ? pwrite(fd, from, n - at, off + (off_t)at) : write(fd, from, n - at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            err = w < 0 ? errno : ENOSPC;
            break;
        }
        at += (size_t)w;
    }
    if (done) *done = at;
    return err;
}

int ms_read_full(int fd, void *p, size_t n, off_t off, size_t *got)
{
    size_t at = 0;
    int err = 0;
    while (at < n) {
        char *to = (char *)p + at;
        ssize_t r = off >= 0 ? pread(fd, to, n - at, off + (off_t)at) : read(fd, to, n - at);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            err = errno;
            break;
        }
        if (r == 0) break;
        at += (size_t)r;
    }
    if (got) *got = at;
    return err;
}

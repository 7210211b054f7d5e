/*
 * ld_fault.c - fault injection under a real server, SQLite style, for the writes medstream does not make
 * itself: LMDB's page and meta-page writes and its syncs of data.mdb (the segment log and the key file
 * have hooks of their own: store_inject_fault). Built as build/libmsfault.so and loaded with LD_PRELOAD by
 * tests/e2e/test_lmdb_faults.py.
 *
 * MS_FAULT="CALL:N:HOW" makes the N-th call (1-based, counted over the process) of CALL on a file whose name
 * ends in "data.mdb" fail, once:
 *   CALL  pwrite (LMDB writes pages and its meta page with pwrite; pwritev is counted as pwrite too) or
 *         fdatasync (fsync counted as fdatasync);
 *   HOW   eio: nothing written, -1/EIO; short (pwrite only): half the bytes written, that count returned,
 *         as a disk that fills in the middle of a write does.
 * Every later call goes through. MS_FAULT_ARM=path: calls are counted only once that file exists (the
 * test creates it after the server is up and logged in). MS_FAULT_LOG=path: on the fault, a line "fault CALL N HOW" appended there
 * (the test's proof that the fault did happen).
 *
 * Must never: change a call it does not count, or fail more than once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static _Atomic long counts[2];
static _Atomic int fired;

enum { PWRITE, SYNC };

/* The fault this call gets: 0 none, 1 eio, 2 short. */
static int fault_for(int call, int fd)
{
    const char *spec = getenv("MS_FAULT");
    if (!spec || atomic_load(&fired)) return 0;
    const char *arm = getenv("MS_FAULT_ARM"); /* counting starts once this file exists */
    if (arm && access(arm, F_OK) != 0) return 0;
    char name[16];
    long n;
    char how[16];
    if (sscanf(spec, "%15[^:]:%ld:%15s", name, &n, how) != 3) return 0;
    if ((call == PWRITE) != (strcmp(name, "pwrite") == 0)) return 0;
    char link[64], path[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, path, sizeof path - 1);
    if (len < 8) return 0;
    path[len] = 0;
    if (strcmp(path + len - 8, "data.mdb") != 0) return 0;
    if (atomic_fetch_add(&counts[call], 1) + 1 != n) return 0;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&fired, &expected, 1)) return 0;
    const char *log = getenv("MS_FAULT_LOG");
    if (log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "fault %s %ld %s\n", name, n, how);
            fclose(f);
        }
    }
    return strcmp(how, "short") == 0 && call == PWRITE ? 2 : 1;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    int f = fault_for(PWRITE, fd);
    if (f == 1) return errno = EIO, -1;
    if (f == 2) return real(fd, buf, count / 2, off);
    return real(fd, buf, count, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) { return pwrite(fd, buf, count, off); }

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    static ssize_t (*real)(int, const struct iovec *, int, off_t);
    if (!real) real = (ssize_t (*)(int, const struct iovec *, int, off_t))dlsym(RTLD_NEXT, "pwritev");
    int f = fault_for(PWRITE, fd);
    if (f == 1) return errno = EIO, -1;
    if (f == 2 && n > 1) return real(fd, iov, n / 2, off);
    return real(fd, iov, n, off);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (fault_for(SYNC, fd)) return errno = EIO, -1;
    return real(fd);
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (fault_for(SYNC, fd)) return errno = EIO, -1;
    return real(fd);
}

/*
 * out_file.c - durable output files and directory chores for exports (see out_file.h).
 *
 * DESIGN: a file is written with O_DIRECT where the file system takes it: whole 1 MiB blocks from an
 * aligned buffer go to the disk without a copy into the page cache (a buffered write of an export's
 * gigabytes costs a core about as much as compressing them), and the file is not left in the cache to
 * push out what the server reads. The last, partial block is written after O_DIRECT is turned off
 * (fcntl), then fdatasync as before. A file system that refuses O_DIRECT (tmpfs before Linux 6.6) gets
 * buffered writes.
 */
#include "export/out_file.h"

#include "base/fd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_BUF (1u << 20)
#define OUT_ALIGN 4096 /* O_DIRECT: buffer address, file offset and length multiples of the block size */

struct out_file {
    int fd;
    char *dir, *name, *tmp;
    char *pending;
    size_t npending;
    uint64_t bytes;
    EVP_MD_CTX *sha;
};

ms_code out_errno(ms_err *e, int err, const char *what, const char *path)
{
    if (err == ENOSPC || err == EDQUOT || err == EFBIG)
        return ms_fail(e, MS_EFULL, "disk full %s %s: %s", what, path, strerror(err));
    return ms_fail(e, MS_EIO, "%s %s: %s", what, path, strerror(err));
}

ms_code out_open(out_file **out, const char *dir, const char *name, int mode, ms_err *e)
{
    out_file *f = ms_calloc(1, sizeof *f);
    f->dir = ms_strndup(dir, strlen(dir));
    f->name = ms_strndup(name, strlen(name));
    buf t = {0};
    buf_printf(&t, "%s/.%s.tmp", dir, name);
    f->tmp = buf_take(&t);
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, mode);
    if (f->fd < 0 && errno == EINVAL) f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (f->fd < 0) {
        ms_code rc = out_errno(e, errno, "creating", f->tmp);
        free(f->dir);
        free(f->name);
        free(f->tmp);
        free(f);
        return rc;
    }
    if (posix_memalign((void **)&f->pending, OUT_ALIGN, OUT_BUF) != 0) ms_oom();
    f->sha = EVP_MD_CTX_new();
    if (!f->sha || EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL) != 1) ms_oom();
    *out = f;
    return MS_OK;
}

/* The buffer to the file: whole blocks go straight to the disk while O_DIRECT is on; a partial one (the
 * file's end) is written after it is turned off. */
static ms_code flush(out_file *f, ms_err *e)
{
    if (f->npending % OUT_ALIGN) {
        int fl = fcntl(f->fd, F_GETFL);
        if (fl >= 0 && (fl & O_DIRECT) && fcntl(f->fd, F_SETFL, fl & ~O_DIRECT) != 0)
            return out_errno(e, errno, "writing", f->tmp);
    }
    int err = ms_write_full(f->fd, f->pending, f->npending, -1, NULL);
    if (err) return out_errno(e, err, "writing", f->tmp);
    f->npending = 0;
    return MS_OK;
}

ms_code out_write(out_file *f, const void *data, size_t len, ms_err *e)
{
    EVP_DigestUpdate(f->sha, data, len);
    f->bytes += len;
    const char *p = data;
    while (len) {
        size_t room = OUT_BUF - f->npending, n = len < room ? len : room;
        memcpy(f->pending + f->npending, p, n);
        f->npending += n;
        p += n;
        len -= n;
        if (f->npending == OUT_BUF) {
            ms_code rc = flush(f, e);
            if (rc) return rc;
        }
    }
    return MS_OK;
}

uint64_t out_bytes(const out_file *f) { return f->bytes; }

static void out_free(out_file *f)
{
    if (f->fd >= 0) close(f->fd);
    EVP_MD_CTX_free(f->sha);
    free(f->pending);
    free(f->dir);
    free(f->name);
    free(f->tmp);
    free(f);
}

ms_code out_finish(out_file *f, unsigned char sha256[32], ms_err *e)
{
    ms_code rc = flush(f, e);
    if (rc == MS_OK && fdatasync(f->fd) != 0) rc = out_errno(e, errno, "syncing", f->tmp);
    if (rc == MS_OK) {
        int fd = f->fd;
        f->fd = -1;
        if (close(fd) != 0) rc = out_errno(e, errno, "closing", f->tmp);
    }
    buf final = {0};
    buf_printf(&final, "%s/%s", f->dir, f->name);
    if (rc == MS_OK && rename(f->tmp, final.data) != 0) rc = out_errno(e, errno, "renaming", f->tmp);
    if (rc == MS_OK) rc = out_fsync_dir(f->dir, e);
    if (rc == MS_OK && sha256) {
        unsigned int n = 32;
        EVP_DigestFinal_ex(f->sha, sha256, &n);
    }
    if (rc != MS_OK) unlink(f->tmp);
    buf_free(&final);
    out_free(f);
    return rc;
}

void out_abort(out_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    unlink(f->tmp);
    out_free(f);
}

ms_code out_mkdirs(const char *path, ms_err *e)
{
    char *p = ms_strndup(path, strlen(path));
    ms_code rc = MS_OK;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                rc = out_errno(e, errno, "making directory", p);
                break;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return rc;
}

ms_code out_fsync_dir(const char *path, ms_err *e)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return out_errno(e, errno, "opening directory", path);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    return rc == 0 ? MS_OK : out_errno(e, err, "syncing directory", path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

ms_code out_remove_tree(const char *path, ms_err *e)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? MS_OK : out_errno(e, errno, "reading", path);
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) return out_errno(e, errno, "removing", path);
    return MS_OK;
}

ms_code out_sha256_file(const char *path, unsigned char sha256[32], uint64_t *size, ms_err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out_errno(e, errno, "opening", path);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) ms_oom();
    char *b = ms_malloc(OUT_BUF);
    uint64_t total = 0;
    ms_code rc = MS_OK;
    for (;;) {
        size_t n;
        int err = ms_read_full(fd, b, OUT_BUF, -1, &n);
        if (err) {
            rc = out_errno(e, err, "reading", path);
            break;
        }
        if (n == 0) break;
        EVP_DigestUpdate(c, b, n);
        total += n;
    }
    unsigned int dl = 32;
    if (rc == MS_OK) EVP_DigestFinal_ex(c, sha256, &dl);
    if (size) *size = total;
    EVP_MD_CTX_free(c);
    free(b);
    close(fd);
    return rc;
}

void out_hex(const unsigned char *b, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = 0;
}

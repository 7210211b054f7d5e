/*
 * rejects.c - the reject file (see rejects.h).
 */
#include "import/rejects.h"

#include "base/fd_io.h"
#include "base/json_scan.h"
#include "base/json_write.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct rejects {
    char *path;
    int fd;          /* -1 until there is something to write */
    uint64_t length; /* bytes in the file */
    bool dirty;      /* written since the last sync */
    buf pending;     /* entries not written yet */
};

static ms_code fail_io(ms_err *e, const char *path, const char *what)
{
    int err = errno;
    return ms_fail(e, err == ENOSPC || err == EDQUOT ? MS_EFULL : MS_EIO, "reject file %s: %s: %s", path, what,
                   strerror(err));
}

/* Open (creating) the file, mode 0600 whoever made it. */
static ms_code open_file(rejects *r, ms_err *e)
{
    r->fd = open(r->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (r->fd < 0) return fail_io(e, r->path, "cannot open it");
    struct stat st;
    if (fstat(r->fd, &st) != 0) return fail_io(e, r->path, "stat");
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        return fail_io(e, r->path, "not a regular file");
    }
    if (fchmod(r->fd, 0600) != 0) return fail_io(e, r->path, "chmod 0600");
    return MS_OK;
}

/* The row line of the entry at p (a line the writer below made: {"line":N,...}), or 0 if it is not one. */
static uint64_t entry_line(const char *p, size_t n)
{
    static const char head[] = "{\"line\":";
    if (n < sizeof head || memcmp(p, head, sizeof head - 1) != 0) return 0;
    uint64_t v = 0;
    for (size_t i = sizeof head - 1; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(p[i] - '0');
    return v;
}

/* Where to cut the file (of size bytes): the start of its first entry at or after cut_line, looking from
 * `from` (an entry's start), or of a torn last entry. */
static ms_code find_cut(rejects *r, uint64_t from, uint64_t size, uint64_t cut_line, uint64_t *cut, ms_err *e)
{
    enum { CHUNK = 1 << 20 };
    char *chunk = ms_malloc(CHUNK);
    uint64_t at = from; /* the entry being looked at starts here */
    ms_code rc = MS_OK;
    *cut = size;
    while (at < size) {
        size_t want = size - at < CHUNK ? (size_t)(size - at) : CHUNK;
        ssize_t got = pread(r->fd, chunk, want, (off_t)at);
        if (got <= 0) {
            if (got == 0) errno = EIO;
            rc = fail_io(e, r->path, "read");
            break;
        }
        const char *nl = memchr(chunk, '\n', (size_t)got);
        uint64_t line = entry_line(chunk, (size_t)got);
        if (!nl && (size_t)got == CHUNK && line && line < cut_line) { /* a long entry: find its end */
            uint64_t end = at + CHUNK;
            bool whole = false;
            while (!whole && end < size) {
                ssize_t more = pread(r->fd, chunk, CHUNK, (off_t)end);
                if (more <= 0) break;
                const char *q = memchr(chunk, '\n', (size_t)more);
                whole = q != NULL;
                end += q ? (uint64_t)(q - chunk) + 1 : (uint64_t)more;
            }
            if (!whole) { /* torn */
                *cut = at;
                break;
            }
            at = end;
            continue;
        }
        if (!nl || line == 0 || line >= cut_line) { /* torn, foreign, or a row to be read again */
            *cut = at;
            break;
        }
        at += (uint64_t)(nl - chunk) + 1;
    }
    free(chunk);
    return rc;
}

ms_code rejects_open(rejects **out, const char *path, uint64_t known, uint64_t cut_line, bool *short_file, ms_err *e)
{
    rejects *r = ms_calloc(1, sizeof *r);
    r->path = ms_strndup(path, strlen(path));
    r->fd = -1;
    *short_file = false;
    struct stat st;
    ms_code rc = MS_OK;
    if (lstat(path, &st) == 0) { /* there is one: cut it */
        uint64_t size = (uint64_t)st.st_size, cut = 0;
        *short_file = size < known;
        if ((rc = open_file(r, e)) == MS_OK && cut_line > 1)
            rc = find_cut(r, known <= size ? known : 0, size, cut_line, &cut, e);
        if (rc == MS_OK) {
            r->length = cut;
            if (ftruncate(r->fd, (off_t)cut) != 0 || lseek(r->fd, (off_t)cut, SEEK_SET) < 0)
                rc = fail_io(e, path, "cut back");
            else if (fdatasync(r->fd) != 0)
                rc = fail_io(e, path, "fdatasync");
        }
    } else if (errno != ENOENT) {
        rc = fail_io(e, path, "stat");
    } else {
        *short_file = known > 0;
    }
    if (rc != MS_OK) {
        rejects_close(r);
        return rc;
    }
    *out = r;
    return MS_OK;
}

void rejects_close(rejects *r)
{
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    buf_free(&r->pending);
    free(r->path);
    free(r);
}

const char *rejects_path(const rejects *r) { return r->path; }
uint64_t rejects_bytes(const rejects *r) { return r->length + r->pending.len; }

void rejects_add(rejects *r, uint64_t line, uint64_t offset, const char *column, const char *reason, const char *raw,
                 size_t raw_len, bool raw_cut)
{
    buf *b = &r->pending;
    buf_printf(b, "{\"line\":%llu,\"offset\":%llu,\"column\":", (unsigned long long)line, (unsigned long long)offset);
    if (column)
        jw_cstr(b, column);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"reason\":");
    jw_cstr(b, reason);
    if (utf8_check(raw, raw_len) == raw_len) {
        buf_puts(b, ",\"raw\":");
        jw_string(b, raw, raw_len);
    } else { /* not text: its bytes, so that nothing of the row is lost or altered */
        buf_puts(b, ",\"raw_base64\":\"");
        size_t need = 4 * ((raw_len + 2) / 3) + 1;
        buf_reserve(b, need);
        int n = EVP_EncodeBlock((unsigned char *)b->data + b->len, (const unsigned char *)raw, (int)raw_len);
        b->len += (size_t)n;
        b->data[b->len] = 0;
        buf_putc(b, '"');
    }
    if (raw_cut) buf_puts(b, ",\"raw_truncated\":true");
    buf_puts(b, "}\n");
}

ms_code rejects_flush(rejects *r, bool sync, ms_err *e)
{
    ms_code rc;
    if (r->pending.len && r->fd < 0 && (rc = open_file(r, e)) != MS_OK) return rc;
    size_t at;
    int err = ms_write_full(r->fd, r->pending.data, r->pending.len, -1, &at);
    if (at) r->dirty = true;
    if (err) { /* what was written stays counted; the rest is kept for the next flush */
        r->length += at;
        memmove(r->pending.data, r->pending.data + at, r->pending.len - at);
        r->pending.len -= at;
        errno = err;
        return fail_io(e, r->path, "write");
    }
    r->length += at;
    r->pending.len = 0;
    if (sync && r->dirty) {
        if (fdatasync(r->fd) != 0) return fail_io(e, r->path, "fdatasync");
        r->dirty = false;
    }
    return MS_OK;
}

/*
 * input.c - an import's input file as a stream (see input.h).
 *
 * DESIGN: the compression is told by magic bytes (gzip 1f 8b, zstd 28 b5 2f fd), so a misnamed file is
 * still read right. Compressed files go through a 1 MiB buffer of file bytes into zlib's inflate
 * (gzip, several members in a row as gzip(1) writes them) or libzstd's streaming decompressor (several
 * frames in a row); the caller's buffer receives the decompressed bytes. A stream that ends inside a
 * member or frame is an error: a truncated upload must not look like a shorter, complete file.
 */
#include "import/input.h"

#include "base/fd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define COMPRESSED_CHUNK ((size_t)1 << 20)
#define DROP_BEHIND ((uint64_t)64 << 20) /* plain files: drop cached pages in steps of this */

struct import_input {
    int fd;
    char path[PATH_MAX];
    input_compression compression;
    unsigned char identity[32];
    uint64_t file_size;
    uint64_t file_read;  /* bytes read from the file */
    uint64_t stream_pos; /* bytes of the stream handed out */
    uint64_t dropped;    /* plain: page cache dropped below this */
    /* compressed */
    unsigned char *zbuf; /* file bytes not yet decompressed: [zpos, zlen) */
    size_t zpos, zlen;
    bool file_eof;
    bool frame_open; /* inside a gzip member or zstd frame */
    z_stream z;
    bool z_ready;
    ZSTD_DStream *zs;
};

const char *input_compression_name(input_compression c)
{
    switch (c) {
    case INPUT_PLAIN: return "plain";
    case INPUT_GZIP: return "gzip";
    case INPUT_ZSTD: return "zstd";
    }
    return "?";
}

static ms_code io_fail(ms_err *e, const char *what)
{
    return ms_fail(e, MS_EIO, "%s: %s", what, strerror(errno));
}

/* The identity (input.h): size, SHA-256 of the first MiB, absolute path. */
static ms_code compute_identity(import_input *in, ms_err *e)
{
    unsigned char *head = ms_malloc(IMPORT_IDENTITY_PREFIX);
    size_t want = in->file_size < IMPORT_IDENTITY_PREFIX ? (size_t)in->file_size : IMPORT_IDENTITY_PREFIX, got;
    int err = ms_read_full(in->fd, head, want, 0, &got);
    if (err || got < want) {
        free(head);
        errno = err ? err : EIO; /* the file shrank since its size was read */
        return io_fail(e, "read");
    }
    unsigned char head_hash[SHA256_DIGEST_LENGTH];
    SHA256(head, got, head_hash);
    free(head);
    char absolute[PATH_MAX];
    if (!realpath(in->path, absolute)) return io_fail(e, "realpath");
    size_t alen = strlen(absolute);
    unsigned char *msg = ms_malloc(8 + sizeof head_hash + alen);
    ms_set_be64(msg, in->file_size);
    memcpy(msg + 8, head_hash, sizeof head_hash);
    memcpy(msg + 8 + sizeof head_hash, absolute, alen);
    SHA256(msg, 8 + sizeof head_hash + alen, in->identity);
    free(msg);
    return MS_OK;
}

ms_code import_input_open(import_input **out, const char *path, ms_err *e)
{
    import_input *in = ms_calloc(1, sizeof *in);
    in->fd = -1;
    snprintf(in->path, sizeof in->path, "%s", path);
    struct stat st;
    ms_code rc = MS_OK;
    in->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (in->fd < 0 || fstat(in->fd, &st) != 0) {
        rc = io_fail(e, "cannot open it");
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ms_fail(e, MS_EIO, "%s: not a regular file", path);
        goto fail;
    }
    in->file_size = (uint64_t)st.st_size;
    if ((rc = compute_identity(in, e)) != MS_OK) goto fail;
    unsigned char magic[4] = {0};
    ssize_t m;
    do
        m = pread(in->fd, magic, sizeof magic, 0);
    while (m < 0 && errno == EINTR);
    if (m < 0) {
        rc = io_fail(e, "read");
        goto fail;
    }
    if (m >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        in->compression = INPUT_GZIP;
        if (inflateInit2(&in->z, 15 + 32) != Z_OK) { /* 32: a gzip (or zlib) header, told by itself */
            rc = ms_fail(e, MS_EIO, "%s: zlib: cannot start inflate", path);
            goto fail;
        }
        in->z_ready = true;
    } else if (m == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) {
        in->compression = INPUT_ZSTD;
        in->zs = ZSTD_createDStream();
        if (!in->zs || ZSTD_isError(ZSTD_initDStream(in->zs))) {
            rc = ms_fail(e, MS_EIO, "%s: zstd: cannot start the decompressor", path);
            goto fail;
        }
    } else {
        in->compression = INPUT_PLAIN;
        (void)posix_fadvise(in->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    if (in->compression != INPUT_PLAIN) in->zbuf = ms_malloc(COMPRESSED_CHUNK);
    *out = in;
    return MS_OK;
fail:
    import_input_close(in);
    return rc;
}

void import_input_close(import_input *in)
{
    if (!in) return;
    if (in->fd >= 0) close(in->fd);
    if (in->z_ready) inflateEnd(&in->z);
    if (in->zs) ZSTD_freeDStream(in->zs);
    free(in->zbuf);
    free(in);
}

input_compression import_input_compression(const import_input *in) { return in->compression; }
const unsigned char *import_input_identity(const import_input *in) { return in->identity; }
uint64_t import_input_file_size(const import_input *in) { return in->file_size; }
uint64_t import_input_stream_pos(const import_input *in) { return in->stream_pos; }

uint64_t import_input_file_pos(const import_input *in)
{
    return in->compression == INPUT_PLAIN ? in->file_read : in->file_read - (in->zlen - in->zpos);
}

/* More file bytes for the decompressor (when it has used all it had). */
static ms_code refill(import_input *in, ms_err *e)
{
    if (in->zpos < in->zlen || in->file_eof) return MS_OK;
    ssize_t n;
    do
        n = read(in->fd, in->zbuf, COMPRESSED_CHUNK);
    while (n < 0 && errno == EINTR);
    if (n < 0) return io_fail(e, "read");
    in->zpos = 0;
    in->zlen = (size_t)n;
    in->file_read += (uint64_t)n;
    if (n == 0) in->file_eof = true;
    return MS_OK;
}

static ms_code corrupt(import_input *in, ms_err *e, const char *kind, const char *why)
{
    return ms_fail(e, MS_EINVAL, "%s stream %s near byte %llu of the file", kind, why,
                   (unsigned long long)import_input_file_pos(in));
}

static ms_code read_gzip(import_input *in, char *dst, size_t cap, size_t *got, ms_err *e)
{
    *got = 0;
    while (*got == 0) {
        ms_code rc = refill(in, e);
        if (rc != MS_OK) return rc;
        if (in->zpos == in->zlen) /* the end of the file */
            return in->frame_open ? corrupt(in, e, "gzip", "ends inside a member (truncated?)") : MS_OK;
        in->z.next_in = in->zbuf + in->zpos;
        in->z.avail_in = (uInt)(in->zlen - in->zpos);
        in->z.next_out = (Bytef *)dst;
        in->z.avail_out = (uInt)(cap > UINT_MAX ? UINT_MAX : cap);
        in->frame_open = true;
        int zr = inflate(&in->z, Z_NO_FLUSH);
        in->zpos = in->zlen - in->z.avail_in;
        *got = (size_t)((char *)in->z.next_out - dst);
        if (zr == Z_STREAM_END) { /* a member ends; another may follow */
            in->frame_open = false;
            if (inflateReset(&in->z) != Z_OK) return corrupt(in, e, "gzip", "cannot be reset");
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            return corrupt(in, e, "gzip", in->z.msg ? in->z.msg : "is corrupt");
        }
    }
    return MS_OK;
}

static ms_code read_zstd(import_input *in, char *dst, size_t cap, size_t *got, ms_err *e)
{
    *got = 0;
    while (*got == 0) {
        ms_code rc = refill(in, e);
        if (rc != MS_OK) return rc;
        if (in->zpos == in->zlen)
            return in->frame_open ? corrupt(in, e, "zstd", "ends inside a frame (truncated?)") : MS_OK;
        ZSTD_inBuffer zin = {in->zbuf, in->zlen, in->zpos};
        ZSTD_outBuffer zout = {dst, cap, 0};
        size_t zr = ZSTD_decompressStream(in->zs, &zout, &zin);
        if (ZSTD_isError(zr)) return corrupt(in, e, "zstd", ZSTD_getErrorName(zr));
        in->zpos = zin.pos;
        in->frame_open = zr != 0; /* 0: a frame is complete and flushed */
        *got = zout.pos;
    }
    return MS_OK;
}

ms_code import_input_read(import_input *in, char *dst, size_t cap, size_t *got, ms_err *e)
{
    ms_code rc = MS_OK;
    *got = 0;
    if (cap == 0) return MS_OK;
    if (in->compression == INPUT_GZIP) {
        rc = read_gzip(in, dst, cap, got, e);
    } else if (in->compression == INPUT_ZSTD) {
        rc = read_zstd(in, dst, cap, got, e);
    } else {
        ssize_t n;
        do
            n = read(in->fd, dst, cap);
        while (n < 0 && errno == EINTR);
        if (n < 0) return io_fail(e, "read");
        *got = (size_t)n;
        in->file_read += (uint64_t)n;
        if (in->file_read >= in->dropped + DROP_BEHIND) { /* what was read will not be read again */
            (void)posix_fadvise(in->fd, (off_t)in->dropped, (off_t)(in->file_read - in->dropped), POSIX_FADV_DONTNEED);
            in->dropped = in->file_read;
        }
    }
    in->stream_pos += *got;
    return rc;
}

ms_code import_input_skip(import_input *in, uint64_t to, ms_err *e)
{
    if (to < in->stream_pos) return ms_fail(e, MS_EINVAL, "cannot go back in the stream");
    if (in->compression == INPUT_PLAIN) {
        if (to > in->file_size)
            return ms_fail(e, MS_EINVAL, "position %llu is past the end of the file (%llu bytes)",
                           (unsigned long long)to, (unsigned long long)in->file_size);
        if (lseek(in->fd, (off_t)to, SEEK_SET) < 0) return io_fail(e, "seek");
        in->file_read = in->stream_pos = in->dropped = to;
        return MS_OK;
    }
    char *scratch = ms_malloc(COMPRESSED_CHUNK);
    ms_code rc = MS_OK;
    while (rc == MS_OK && in->stream_pos < to) {
        uint64_t left = to - in->stream_pos;
        size_t got;
        rc = import_input_read(in, scratch, left < COMPRESSED_CHUNK ? (size_t)left : COMPRESSED_CHUNK, &got, e);
        if (rc == MS_OK && got == 0)
            rc = ms_fail(e, MS_EINVAL, "position %llu is past the end of the stream (%llu bytes)",
                         (unsigned long long)to, (unsigned long long)in->stream_pos);
    }
    free(scratch);
    return rc;
}

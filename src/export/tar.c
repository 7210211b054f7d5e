/*
 * tar.c - ustar archives of export directories, pax extended headers for paths ustar cannot hold, and their
 * checked extraction (see tar.h).
 *
 * DESIGN: the writer walks the directory in name order; a member whose path does not fit ustar's 155-byte
 * prefix and 100-byte name (a partition value escaped to 3 bytes a byte: a type of 64 characters is 197
 * bytes of "type=...") is preceded by a POSIX.1-2001 pax extended header (typeflag 'x') holding one
 * "LEN path=PATH\n" record, then gets its own ustar header with what of the path fits. The reader takes its
 * bytes in order from a buffer or a file descriptor (a download streamed to disk: never the whole archive
 * in memory), a header block at a time and a member in 1 MiB chunks, and applies a pax path record to the
 * member after it; the name finally used (pax or ustar) is the one checked.
 *
 * Every header's size field is read as ustar's octal number or refused, never as the digits before what is
 * not one (a base-256 size was read as 0, and the member's own bytes then as members). A refusal ends its
 * message with the offset of the header at fault in the archive (the name is not echoed: it is export data).
 *
 * Must never: write a member outside dir (absolute names, "..", "." or empty components are refused, in a
 * pax path as in a ustar name), follow or make links, read more than TAR_PAX_MAX bytes of one extended header
 * into memory, report success for a tree that is not the archive's (a directory over a file, a member named
 * like another's temporary file: refused), or write an archive in which a pax-reading tar sees another name
 * than the file's. fuzz/fuzz_tar.c checks the reader against a model of this contract.
 */
#include "export/tar.h"

#include "base/fd_io.h"
#include "export/out_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define TAR_CHUNK (1u << 20) /* a member is copied a chunk at a time */

/* width - 1 octal digits, zero-padded, then NUL (the caller's v fits) */
static void octal(char *field, size_t width, uint64_t v)
{
    field[width - 1] = 0;
    for (size_t i = width - 1; i-- > 0; v >>= 3)
        field[i] = (char)('0' + (v & 7));
}

/* The ustar header block of one member; name must fit its fields (a prefix up to 155 bytes, a '/', a name up to
 * 100 bytes, or a name of 100 bytes at most). */
static void ustar_block(char h[BLOCK], const char *name, size_t prefix_len, char type, uint64_t size, int64_t mtime)
{
    memset(h, 0, BLOCK);
    size_t n = strlen(name);
    if (prefix_len) {
        memcpy(h + 345, name, prefix_len);
        memcpy(h, name + prefix_len + 1, n - prefix_len - 1);
    } else {
        memcpy(h, name, n < 100 ? n : 100);
    }
    octal(h + 100, 8, type == '5' ? 0755 : 0644);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, size);
    octal(h + 136, 12, mtime > 0 ? (uint64_t)mtime : 0);
    h[156] = type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

/* Whether name fits ustar's fields: -1 if not, else the length of the prefix it goes into (0: none). */
static long ustar_split(const char *name)
{
    size_t n = strlen(name);
    if (n <= 100) return 0;
    for (const char *p = name; (p = strchr(p, '/')); p++)
        if (p > name && (size_t)(p - name) <= 155 && n - (size_t)(p - name) - 1 <= 100) return p - name;
    return -1;
}

static size_t decimal_digits(size_t v)
{
    size_t d = 1;
    for (; v >= 10; v /= 10)
        d++;
    return d;
}

void tar_pax_record(const char *key, const char *value, buf *out)
{
    size_t body = strlen(key) + strlen(value) + 3; /* ' ', '=' and '\n' */
    size_t digits = 1;
    while (decimal_digits(body + digits) != digits) /* the length counts its own digits */
        digits++;
    buf_printf(out, "%zu %s=%s\n", body + digits, key, value);
}

static ms_code pad_to_block(out_file *f, uint64_t written, ms_err *e)
{
    static const char zeros[BLOCK];
    size_t pad = (size_t)((BLOCK - written % BLOCK) % BLOCK);
    return pad ? out_write(f, zeros, pad, e) : MS_OK;
}

/* One member's header: ustar alone when its name fits, else a pax extended header ('x') whose path record
 * holds the whole name, then the member's ustar header with as much of the name as fits (readers that know
 * pax take the path record; others get a cut name, never a wrong archive). */
static ms_code header(out_file *f, const char *name, char type, uint64_t size, int64_t mtime, ms_err *e)
{
    if (size > TAR_SIZE_MAX) return ms_fail(e, MS_EINVAL, "archive: a file over 8 GiB");
    if (strlen(name) > TAR_PATH_MAX)
        return ms_fail(e, MS_EINVAL, "archive: a path of %zu bytes (at most %d)", strlen(name), TAR_PATH_MAX);
    char h[BLOCK];
    long prefix = ustar_split(name);
    if (prefix < 0) {
        buf rec = {0}, xname = {0};
        tar_pax_record("path", name, &rec);
        const char *base = name + strlen(name); /* the last component, without a directory's '/' */
        while (base > name && base[-1] == '/')
            base--;
        const char *end = base;
        while (base > name && base[-1] != '/')
            base--;
        buf_printf(&xname, "PaxHeaders/%.*s", (int)((end - base) < 89 ? (end - base) : 89), base);
        ustar_block(h, xname.data, 0, 'x', rec.len, mtime);
        ms_code rc = out_write(f, h, BLOCK, e);
        if (rc == MS_OK) rc = out_write(f, rec.data, rec.len, e);
        if (rc == MS_OK) rc = pad_to_block(f, rec.len, e);
        buf_free(&rec);
        buf_free(&xname);
        if (rc) return rc;
        prefix = 0;
    }
    ustar_block(h, name, (size_t)prefix, type, size, mtime);
    return out_write(f, h, BLOCK, e);
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
static int not_dots(const struct dirent *d) { return strcmp(d->d_name, ".") && strcmp(d->d_name, ".."); }

static ms_code add_tree(out_file *f, const char *root, const char *rel, ms_err *e)
{
    buf path = {0};
    buf_printf(&path, "%s%s%s", root, *rel ? "/" : "", rel);
    struct dirent **list;
    int n = scandir(path.data, &list, not_dots, by_name);
    if (n < 0) {
        ms_code rc = out_errno(e, errno, "reading", path.data);
        buf_free(&path);
        return rc;
    }
    ms_code rc = MS_OK;
    char *chunk = ms_malloc(1 << 20);
    for (int i = 0; i < n; i++) {
        if (rc == MS_OK) {
            buf child = {0}, full = {0};
            buf_printf(&child, "%s%s%s", rel, *rel ? "/" : "", list[i]->d_name);
            buf_printf(&full, "%s/%s", root, child.data);
            struct stat st;
            if (lstat(full.data, &st) != 0) {
                rc = out_errno(e, errno, "reading", full.data);
            } else if (S_ISDIR(st.st_mode)) {
                buf d = {0};
                buf_printf(&d, "%s/", child.data);
                rc = header(f, d.data, '5', 0, st.st_mtime, e);
                buf_free(&d);
                if (rc == MS_OK) rc = add_tree(f, root, child.data, e);
            } else if (S_ISREG(st.st_mode)) {
                rc = header(f, child.data, '0', (uint64_t)st.st_size, st.st_mtime, e);
                int fd = rc == MS_OK ? open(full.data, O_RDONLY | O_CLOEXEC) : -1;
                if (rc == MS_OK && fd < 0) rc = out_errno(e, errno, "reading", full.data);
                uint64_t left = (uint64_t)st.st_size;
                while (rc == MS_OK && left) {
                    size_t got;
                    int err = ms_read_full(fd, chunk, left < (1u << 20) ? (size_t)left : (1u << 20), -1, &got);
                    if (err || got == 0) {
                        rc = err ? out_errno(e, err, "reading", full.data)
                                 : ms_fail(e, MS_EIO, "archive: %s shrank while archived", full.data);
                        break;
                    }
                    rc = out_write(f, chunk, got, e);
                    left -= (uint64_t)got;
                }
                if (fd >= 0) close(fd);
                if (rc == MS_OK) rc = pad_to_block(f, (uint64_t)st.st_size, e);
            }
            buf_free(&child);
            buf_free(&full);
        }
        free(list[i]);
    }
    free(list);
    free(chunk);
    buf_free(&path);
    return rc;
}

ms_code tar_write_dir(const char *dir, const char *tar_dir, const char *tar_name, ms_err *e)
{
    out_file *f;
    ms_code rc = out_open(&f, tar_dir, tar_name, 0600, e);
    if (rc) return rc;
    rc = add_tree(f, dir, "", e);
    static const char end[2 * BLOCK];
    if (rc == MS_OK) rc = out_write(f, end, sizeof end, e);
    if (rc == MS_OK) return out_finish(f, NULL, e);
    out_abort(f);
    return rc;
}

/* A name extract may write under its directory: not absolute, no empty, "." or ".." component; a directory's
 * one trailing '/' is no component ("a//" has an empty one). */
static bool safe_name(const char *name)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '/') n--;
    if (n == 0 || name[0] == '/') return false;
    for (size_t at = 0; at <= n;) {
        const char *c = name + at, *slash = memchr(c, '/', n - at);
        size_t len = slash ? (size_t)(slash - c) : n - at;
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return false;
        at += len + 1;
    }
    return true;
}

/* Whether a component of name has the form of out_file's temporary files (".NAME.tmp"): extracting NAME
 * beside it would write over it (a file), or fail (a directory). */
static bool temporary_name(const char *name)
{
    for (const char *c = name; *c;) {
        size_t len = strcspn(c, "/");
        if (len >= 6 && c[0] == '.' && memcmp(c + len - 4, ".tmp", 4) == 0) return true;
        c += len;
        if (*c) c++;
    }
    return false;
}

/* ustar's 12-byte size field: octal digits after any spaces, then a NUL, a space or the field's end (what
 * follows is not read; no digit at all is 0). Anything else, GNU's base-256 form of a member over 8 GiB
 * included, is no size: false (never a number made of the digits before the junk). */
static bool parse_size(const char *f, uint64_t *size)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < 12 && f[i] == ' ')
        i++;
    for (; i < 12 && f[i] >= '0' && f[i] <= '7'; i++)
        v = v * 8 + (uint64_t)(f[i] - '0');
    if (i < 12 && f[i] != 0 && f[i] != ' ') return false;
    *size = v;
    return true;
}

/* Where the archive's bytes come from: a buffer (data) or a file descriptor (data NULL), read in order. */
typedef struct {
    const char *data;
    size_t len, at;
    int fd;
    bool release;            /* punch out of the file what was read */
    uint64_t read, released; /* file offsets: read so far, freed so far */
    uint64_t taken;          /* the archive's bytes read so far, from either source: where an error is */
} source;

/* The file's bytes read so far, freed from its disk a TAR_CHUNK at a time, where the file system can (an
 * error is no failure: the bytes stay until the file is closed). */
static void src_release(source *s)
{
    uint64_t upto = s->read / TAR_CHUNK * TAR_CHUNK;
    if (!s->release || upto <= s->released) return;
    off_t from = (off_t)s->released, len = (off_t)(upto - s->released);
    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, len) != 0) s->release = false;
    s->released = upto;
}

/* Up to n bytes into b (in order); *got < n only at the archive's end. */
static ms_code src_read(source *s, char *b, size_t n, size_t *got, ms_err *e)
{
    if (s->data) {
        size_t k = s->len - s->at < n ? s->len - s->at : n;
        memcpy(b, s->data + s->at, k);
        s->at += k;
        s->taken += k;
        *got = k;
        return MS_OK;
    }
    size_t have;
    int err = ms_read_full(s->fd, b, n, -1, &have);
    if (err) return out_errno(e, err, "reading", "the downloaded archive");
    *got = have;
    s->read += have;
    s->taken += have;
    src_release(s);
    return MS_OK;
}

/* Exactly n bytes into b (NULL: skipped, through the scratch chunk), else "cut short". */
static ms_code src_exact(source *s, char *b, uint64_t n, char *chunk, ms_err *e)
{
    while (n) {
        size_t want = n < TAR_CHUNK ? (size_t)n : TAR_CHUNK, got;
        ms_code rc = src_read(s, b ? b : chunk, want, &got, e);
        if (rc) return rc;
        if (got < want) return ms_fail(e, MS_EINVAL, "archive: cut short");
        if (b) b += got;
        n -= got;
    }
    return MS_OK;
}

static uint64_t padding(uint64_t size) { return (BLOCK - size % BLOCK) % BLOCK; }

/* The records of a pax extended header ("LEN key=value\n" each, LEN counting the whole record): the path
 * record's value into path ("" if none). Other keys are ignored but for size, which this reader does not
 * take (our writer never makes one: members over 8 GiB are refused). */
static ms_code parse_pax(const char *p, size_t n, buf *path, ms_err *e)
{
    path->len = 0;
    while (n) {
        size_t len = 0, i = 0;
        while (i < n && i < 10 && p[i] >= '0' && p[i] <= '9') /* n <= TAR_PAX_MAX: a longer number is bad */
            len = len * 10 + (size_t)(p[i++] - '0');
        if (i == 0 || i == n || p[i] != ' ' || len <= i + 1 || len > n || p[len - 1] != '\n')
            return ms_fail(e, MS_EINVAL, "archive: a bad pax extended header");
        const char *kv = p + i + 1, *end = p + len - 1;
        const char *eq = memchr(kv, '=', (size_t)(end - kv));
        if (!eq) return ms_fail(e, MS_EINVAL, "archive: a bad pax extended header");
        size_t kl = (size_t)(eq - kv), vl = (size_t)(end - eq - 1);
        if (kl == 4 && memcmp(kv, "path", 4) == 0) {
            if (vl == 0 || vl > TAR_PATH_MAX || memchr(eq + 1, 0, vl))
                return ms_fail(e, MS_EINVAL, "archive: a bad pax path");
            path->len = 0;
            buf_put(path, eq + 1, vl);
        } else if (kl == 4 && memcmp(kv, "size", 4) == 0) {
            return ms_fail(e, MS_EINVAL, "archive: a pax size record (not supported)");
        }
        p += len;
        n -= len;
    }
    return MS_OK;
}

static ms_code extract(source *s, const char *dir, ms_err *e)
{
    static const char zero[BLOCK];
    char h[BLOCK];
    char *chunk = ms_malloc(TAR_CHUNK);
    buf name = {0}, pax_path = {0}, path = {0};
    bool have_pax = false;
    ms_code rc = MS_OK;
    uint64_t header_at = 0; /* the offset in the archive of the header being read */
    for (;;) {
        size_t got;
        header_at = s->taken;
        if ((rc = src_read(s, h, BLOCK, &got, e))) break;
        if (got < BLOCK) {
            rc = ms_fail(e, MS_EINVAL, "archive: no end marker");
            break;
        }
        if (memcmp(h, zero, BLOCK) == 0) {
            if (have_pax) rc = ms_fail(e, MS_EINVAL, "archive: a pax extended header with no member after it");
            break;
        }
        uint64_t size;
        if (!parse_size(h + 124, &size)) {
            rc = ms_fail(e, MS_EINVAL, "archive: a size field that is not an octal number");
            break;
        }
        if (size > TAR_SIZE_MAX) {
            rc = ms_fail(e, MS_EINVAL, "archive: a member over 8 GiB");
            break;
        }
        char type = h[156];
        if (type == 'x') { /* the next member's extended header */
            if (have_pax) {
                rc = ms_fail(e, MS_EINVAL, "archive: two pax extended headers in a row");
                break;
            }
            if (size > TAR_PAX_MAX) {
                rc = ms_fail(e, MS_EINVAL, "archive: a pax extended header over %d bytes", TAR_PAX_MAX);
                break;
            }
            if ((rc = src_exact(s, chunk, size + padding(size), chunk, e)) ||
                (rc = parse_pax(chunk, (size_t)size, &pax_path, e)))
                break;
            have_pax = true;
            continue;
        }
        name.len = 0;
        if (have_pax && pax_path.len) {
            buf_put(&name, pax_path.data, pax_path.len);
        } else {
            size_t pl = strnlen(h + 345, 155), nl = strnlen(h, 100);
            if (pl) buf_printf(&name, "%.*s/", (int)pl, h + 345);
            buf_put(&name, h, nl);
        }
        have_pax = false;
        if (!safe_name(name.data)) {
            rc = ms_fail(e, MS_EINVAL, "archive: member name refused (absolute or with ..)");
            break;
        }
        if (temporary_name(name.data)) {
            rc = ms_fail(e, MS_EINVAL, "archive: a member named like a temporary file (.NAME.tmp)");
            break;
        }
        if ((type != '0' && type != 0 && type != '5') || (type != '5' && name.data[name.len - 1] == '/')) {
            rc = ms_fail(e, MS_EINVAL, "archive: a member is not a file");
            break;
        }
        /* a directory's size is no data (GNU tar and Python's tarfile read it so; tar_extract_fd too) */
        if (type != '5' && s->data && size > s->len - s->at) {
            rc = ms_fail(e, MS_EINVAL, "archive: cut short");
            break;
        }
        path.len = 0;
        buf_printf(&path, "%s/%s", dir, name.data);
        if (type == '5') {
            struct stat st; /* mkdir -p takes a file of that name as done: it is not */
            if ((rc = out_mkdirs(path.data, e)) == MS_OK && (lstat(path.data, &st) != 0 || !S_ISDIR(st.st_mode)))
                rc = ms_fail(e, MS_EINVAL, "archive: a directory member over a file of the same name");
        } else {
            char *slash = strrchr(path.data, '/');
            *slash = 0;
            rc = out_mkdirs(path.data, e);
            out_file *f = NULL;
            if (rc == MS_OK) rc = out_open(&f, path.data, slash + 1, 0600, e);
            for (uint64_t left = size; rc == MS_OK && left;) {
                size_t want = left < TAR_CHUNK ? (size_t)left : TAR_CHUNK;
                if ((rc = src_read(s, chunk, want, &got, e)) == MS_OK && got < want)
                    rc = ms_fail(e, MS_EINVAL, "archive: cut short");
                if (rc == MS_OK) rc = out_write(f, chunk, want, e);
                left -= want;
            }
            if (rc == MS_OK)
                rc = out_finish(f, NULL, e);
            else
                out_abort(f);
            if (rc == MS_OK) rc = src_exact(s, NULL, padding(size), chunk, e);
        }
        if (rc) break;
    }
    if (rc == MS_EINVAL && e) { /* the archive's fault: say where (never the name: a value of the export) */
        size_t used = strlen(e->msg);
        snprintf(e->msg + used, sizeof e->msg - used, " (the header at byte %" PRIu64 ")", header_at);
    }
    free(chunk);
    buf_free(&name);
    buf_free(&pax_path);
    buf_free(&path);
    return rc;
}

ms_code tar_extract(const char *data, size_t len, const char *dir, ms_err *e)
{
    source s = {.data = data, .len = len, .fd = -1};
    return extract(&s, dir, e);
}

ms_code tar_extract_fd(int fd, bool release, const char *dir, ms_err *e)
{
    off_t at = lseek(fd, 0, SEEK_CUR);
    source s = {.fd = fd, .release = release, .read = at > 0 ? (uint64_t)at : 0};
    s.released = (s.read + TAR_CHUNK - 1) / TAR_CHUNK * TAR_CHUNK; /* never what lies before the archive */
    return extract(&s, dir, e);
}

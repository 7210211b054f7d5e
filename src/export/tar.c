/*
 * tar.c - ustar archives of export directories (see tar.h).
 */
#include "export/tar.h"

#include "export/out_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define TAR_SIZE_MAX ((uint64_t)077777777777)

/* width - 1 octal digits, zero-padded, then NUL (the caller's v fits) */
static void octal(char *field, size_t width, uint64_t v)
{
    field[width - 1] = 0;
    for (size_t i = width - 1; i-- > 0; v >>= 3)
        field[i] = (char)('0' + (v & 7));
}

static ms_code header(out_file *f, const char *name, char type, uint64_t size, int64_t mtime, ms_err *e)
{
    char h[BLOCK] = {0};
    size_t n = strlen(name);
    if (n <= 100) {
        memcpy(h, name, n);
    } else {
        const char *cut = NULL;
        for (const char *p = name; (p = strchr(p, '/')); p++)
            if ((size_t)(p - name) <= 155 && n - (size_t)(p - name) - 1 <= 100) {
                cut = p;
                break;
            }
        if (!cut) return ms_fail(e, MS_EINVAL, "archive: a path of %zu bytes does not fit ustar", n);
        memcpy(h + 345, name, (size_t)(cut - name));
        memcpy(h, cut + 1, n - (size_t)(cut - name) - 1);
    }
    if (size > TAR_SIZE_MAX) return ms_fail(e, MS_EINVAL, "archive: a file over 8 GiB");
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
                    ssize_t got = read(fd, chunk, left < (1u << 20) ? (size_t)left : (1u << 20));
                    if (got < 0 && errno == EINTR) continue;
                    if (got <= 0) {
                        rc = got < 0 ? out_errno(e, errno, "reading", full.data)
                                     : ms_fail(e, MS_EIO, "archive: %s shrank while archived", full.data);
                        break;
                    }
                    rc = out_write(f, chunk, (size_t)got, e);
                    left -= (uint64_t)got;
                }
                if (fd >= 0) close(fd);
                static const char zeros[BLOCK];
                size_t pad = (size_t)((BLOCK - st.st_size % BLOCK) % BLOCK);
                if (rc == MS_OK && pad) rc = out_write(f, zeros, pad, e);
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

static bool safe_name(const char *name)
{
    if (!*name || name[0] == '/') return false;
    const char *p = name;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 && slash && !slash[1]) break; /* a directory's trailing '/' */
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return false;
        if (!slash) break;
        p = slash + 1;
    }
    return true;
}

static uint64_t parse_octal(const char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '7'; i++)
        v = v * 8 + (uint64_t)(p[i] - '0');
    return v;
}

ms_code tar_extract(const char *data, size_t len, const char *dir, ms_err *e)
{
    size_t at = 0;
    static const char zero[BLOCK];
    while (at + BLOCK <= len) {
        const char *h = data + at;
        if (memcmp(h, zero, BLOCK) == 0) return MS_OK;
        char name[300];
        size_t pl = strnlen(h + 345, 155), nl = strnlen(h, 100);
        if (pl)
            snprintf(name, sizeof name, "%.*s/%.*s", (int)pl, h + 345, (int)nl, h);
        else
            snprintf(name, sizeof name, "%.*s", (int)nl, h);
        uint64_t size = parse_octal(h + 124, 12);
        char type = h[156];
        at += BLOCK;
        if (!safe_name(name)) return ms_fail(e, MS_EINVAL, "archive: member name refused (absolute or with ..)");
        if (type != '0' && type != 0 && type != '5') return ms_fail(e, MS_EINVAL, "archive: a member is not a file");
        if (size > len - at) return ms_fail(e, MS_EINVAL, "archive: cut short");
        buf path = {0};
        buf_printf(&path, "%s/%s", dir, name);
        ms_code rc;
        if (type == '5') {
            rc = out_mkdirs(path.data, e);
        } else {
            char *slash = strrchr(path.data, '/');
            *slash = 0;
            rc = out_mkdirs(path.data, e);
            out_file *f = NULL;
            if (rc == MS_OK) rc = out_open(&f, path.data, slash + 1, 0600, e);
            if (rc == MS_OK) rc = out_write(f, data + at, (size_t)size, e);
            if (rc == MS_OK)
                rc = out_finish(f, NULL, e);
            else
                out_abort(f);
        }
        buf_free(&path);
        if (rc) return rc;
        at += (size_t)((size + BLOCK - 1) / BLOCK * BLOCK);
    }
    return ms_fail(e, MS_EINVAL, "archive: no end marker");
}

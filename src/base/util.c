/*
 * util.c - error values, buffers, arenas and clocks (see util.h for the contract).
 */
#include "base/util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

ms_code ms_fail(ms_err *e, ms_code code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

const char *ms_code_name(ms_code code)
{
    switch (code) {
    case MS_OK: return "ok";
    case MS_EINVAL: return "invalid input";
    case MS_ENOTFOUND: return "not found";
    case MS_EFULL: return "storage full";
    case MS_EIO: return "I/O error";
    case MS_ECORRUPT: return "corrupt data";
    case MS_ECONFLICT: return "conflict";
    case MS_ESTOPPED: return "stopping";
    case MS_EGONE: return "gone";
    }
    return "unknown";
}

void ms_oom(void)
{
    fputs("medstream: out of memory\n", stderr);
    abort();
}

void *ms_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) ms_oom();
    return p;
}

void *ms_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ms_oom();
    return p;
}

void *ms_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) ms_oom();
    return q;
}

char *ms_strndup(const char *s, size_t n)
{
    char *p = ms_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void buf_reserve(buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    b->data = ms_realloc(b->data, cap);
    b->cap = cap;
}

void buf_put(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

void buf_putc(buf *b, char c)
{
    buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = 0;
}

void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        buf_put(b, small, (size_t)n);
        return;
    }
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_put_be64(buf *b, uint64_t v)
{
    unsigned char t[8];
    ms_set_be64(t, v);
    buf_put(b, t, 8);
}

void buf_put_varint(buf *b, uint64_t v)
{
    unsigned char t[10];
    size_t n = 0;
    while (v >= 0x80) {
        t[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (unsigned char)v;
    buf_put(b, t, n);
}

void buf_put_zigzag(buf *b, int64_t v) { buf_put_varint(b, ms_zigzag64(v)); }

bool ms_get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    uint64_t out = 0;
    const unsigned char *q = *p;
    for (int shift = 0; shift < 70 && q < end; shift += 7) {
        unsigned char c = *q++;
        if (shift == 63 && c > 1) return false; /* past 64 bits */
        out |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *v = out;
            *p = q;
            return true;
        }
    }
    return false;
}

bool ms_get_zigzag(const unsigned char **p, const unsigned char *end, int64_t *v)
{
    uint64_t u;
    if (!ms_get_varint(p, end, &u)) return false;
    *v = ms_unzigzag64(u);
    return true;
}

void buf_put_be32(buf *b, uint32_t v)
{
    unsigned char t[4];
    ms_set_be32(t, v);
    buf_put(b, t, 4);
}

void buf_put_be16(buf *b, uint16_t v)
{
    unsigned char t[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    buf_put(b, t, 2);
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *buf_take(buf *b)
{
    if (!b->data) {
        b->data = ms_malloc(1);
        b->data[0] = 0;
    }
    char *p = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* Append path's bytes to out, refusing a file of more than max bytes. */
static ms_code read_file_max(buf *out, const char *path, size_t max, ms_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ms_fail(e, MS_EIO, "cannot open %s: %s", path, strerror(errno));
    char chunk[4096];
    size_t n, total = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        total += n;
        if (total > max) {
            fclose(f);
            return ms_fail(e, MS_EINVAL, "cannot read %s: larger than %zu MiB (not a settings file?)", path, max >> 20);
        }
        buf_put(out, chunk, n);
    }
    bool failed = ferror(f);
    int err = errno;
    fclose(f);
    return failed ? ms_fail(e, MS_EIO, "cannot read %s: %s", path, strerror(err)) : MS_OK;
}

ms_code buf_read_file(buf *out, const char *path, ms_err *e) { return read_file_max(out, path, SIZE_MAX, e); }

ms_code buf_read_settings_file(buf *out, const char *path, ms_err *e)
{
    return read_file_max(out, path, MS_SETTINGS_FILE_MAX, e);
}

void ms_path_parent(const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = 0;
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = 0;
    else
        *slash = 0;
}

bool ms_path_inside(const char *path, const char *dir)
{
    char p[PATH_MAX], d[PATH_MAX];
    if (!realpath(path, p) || !realpath(dir, d)) return false;
    size_t n = strlen(d);
    return !strncmp(p, d, n) && (p[n] == '/' || p[n] == 0 || n == 1);
}

struct arena_chunk {
    arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

void *arena_alloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = ms_malloc(sizeof *c + cap);
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *arena_printf(arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void arena_free(arena *a)
{
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

int64_t ms_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double ms_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timespec ms_deadline(clockid_t clock, long ms)
{
    struct timespec t;
    clock_gettime(clock, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

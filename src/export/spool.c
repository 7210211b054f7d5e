/*
 * spool.c - per-partition spool files (see spool.h).
 *
 * DESIGN: a partition is found by an open-addressing hash table of its path; its spool file is
 * DIR/N.spool. Open files are tracked by a use counter; past SPOOL_OPEN_MAX the least recently used is
 * closed (its buffer flushed) and reopened in append mode when its partition gets a row again.
 */
#include "export/spool.h"

#include "export/out_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct {
    char *path;
    char *file;
    FILE *f;
    char *fbuf;
    uint64_t used;
    bool created;
} partition;

struct spool_set {
    char *dir;
    partition *p;
    size_t n, cap;
    size_t *slots; /* index + 1, 0: empty */
    size_t nslots;
    size_t open;
    uint64_t clock;
    const char **sorted;
};

void spool_open(spool_set **out, const char *dir)
{
    spool_set *s = ms_calloc(1, sizeof *s);
    s->dir = ms_strndup(dir, strlen(dir));
    s->nslots = 256;
    s->slots = ms_calloc(s->nslots, sizeof *s->slots);
    *out = s;
}

static size_t find(spool_set *s, const char *path, size_t len, bool *found)
{
    size_t h = (size_t)XXH3_64bits(path, len) & (s->nslots - 1);
    for (;; h = (h + 1) & (s->nslots - 1)) {
        size_t v = s->slots[h];
        if (!v) {
            *found = false;
            return h;
        }
        const partition *p = &s->p[v - 1];
        if (strlen(p->path) == len && memcmp(p->path, path, len) == 0) {
            *found = true;
            return h;
        }
    }
}

static void rehash(spool_set *s)
{
    free(s->slots);
    s->nslots *= 2;
    s->slots = ms_calloc(s->nslots, sizeof *s->slots);
    for (size_t i = 0; i < s->n; i++) {
        bool found;
        size_t h = find(s, s->p[i].path, strlen(s->p[i].path), &found);
        s->slots[h] = i + 1;
    }
}

static ms_code close_file(partition *p, ms_err *e)
{
    int rc = fclose(p->f);
    p->f = NULL;
    free(p->fbuf);
    p->fbuf = NULL;
    return rc == 0 ? MS_OK : out_errno(e, errno, "writing", p->file);
}

ms_code spool_append(spool_set *s, const char *path, size_t path_len, const void *row, size_t len, ms_err *e)
{
    bool found;
    size_t h = find(s, path, path_len, &found);
    if (!found) {
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->p = ms_realloc(s->p, s->cap * sizeof *s->p);
        }
        partition *p = &s->p[s->n];
        *p = (partition){.path = ms_strndup(path, path_len)};
        buf f = {0};
        buf_printf(&f, "%s/%zu.spool", s->dir, s->n);
        p->file = buf_take(&f);
        s->slots[h] = ++s->n;
        if (s->n * 2 > s->nslots) rehash(s);
        free(s->sorted);
        s->sorted = NULL;
        h = find(s, path, path_len, &found);
    }
    partition *p = &s->p[s->slots[h] - 1];
    if (!p->f) {
        if (s->open == SPOOL_OPEN_MAX) { /* close the least recently used */
            partition *lru = NULL;
            for (size_t i = 0; i < s->n; i++)
                if (s->p[i].f && (!lru || s->p[i].used < lru->used)) lru = &s->p[i];
            ms_code rc = close_file(lru, e);
            s->open--;
            if (rc) return rc;
        }
        p->f = fopen(p->file, p->created ? "ab" : "wb");
        if (!p->f) return out_errno(e, errno, "creating", p->file);
        p->fbuf = ms_malloc(64 << 10);
        setvbuf(p->f, p->fbuf, _IOFBF, 64 << 10);
        p->created = true;
        s->open++;
    }
    p->used = ++s->clock;
    if (fwrite(row, 1, len, p->f) != len) return out_errno(e, errno, "writing", p->file);
    return MS_OK;
}

size_t spool_count(const spool_set *s) { return s->n; }

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

const char *const *spool_sorted(spool_set *s)
{
    if (!s->sorted) {
        s->sorted = ms_malloc((s->n + 1) * sizeof *s->sorted);
        for (size_t i = 0; i < s->n; i++)
            s->sorted[i] = s->p[i].path;
        qsort(s->sorted, s->n, sizeof *s->sorted, cmp_str);
        s->sorted[s->n] = NULL;
    }
    return s->sorted;
}

ms_code spool_read(spool_set *s, const char *path, spool_row_fn fn, void *ctx, ms_err *e)
{
    bool found;
    size_t h = find(s, path, strlen(path), &found);
    if (!found) return MS_OK;
    partition *p = &s->p[s->slots[h] - 1];
    if (p->f) {
        ms_code rc = close_file(p, e);
        s->open--;
        if (rc) return rc;
    }
    FILE *f = fopen(p->file, "rb");
    if (!f) return out_errno(e, errno, "reading", p->file);
    buf row = {0};
    ms_code rc = MS_OK;
    for (;;) {
        unsigned char hdr[4];
        size_t got = fread(hdr, 1, 4, f);
        if (got == 0 && feof(f)) break;
        if (got != 4) {
            rc = ms_fail(e, MS_ECORRUPT, "export: spool %s is cut short", p->file);
            break;
        }
        uint32_t len = ms_get_be32(hdr);
        row.len = 0;
        buf_reserve(&row, 4 + (size_t)len);
        memcpy(row.data, hdr, 4);
        if (fread(row.data + 4, 1, len, f) != len) {
            rc = ms_fail(e, MS_ECORRUPT, "export: spool %s is cut short", p->file);
            break;
        }
        row.len = 4 + (size_t)len;
        if ((rc = fn(ctx, row.data, row.len, e)) != MS_OK) break;
    }
    if (rc == MS_OK && ferror(f)) rc = out_errno(e, errno, "reading", p->file);
    fclose(f);
    buf_free(&row);
    remove(p->file); /* read once: its space goes back at once */
    return rc;
}

void spool_free(spool_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        if (s->p[i].f) fclose(s->p[i].f);
        free(s->p[i].fbuf);
        remove(s->p[i].file);
        free(s->p[i].path);
        free(s->p[i].file);
    }
    free(s->p);
    free(s->slots);
    free(s->sorted);
    free(s->dir);
    free(s);
}

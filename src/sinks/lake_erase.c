/*
 * lake_erase.c - the lake after an erasure (issue 15): the published Parquet files that hold an erased
 * patient's rows, found through the commits log and the versions' commit times, written again from the
 * store without them, each beside the published one, synced and renamed over it (sink_lake_internal.h).
 *
 * Must never: leave a published file half written (a rename replaces it whole), or write a row the store's
 * public copy does not hold now.
 */
#include "sinks/sink_lake_internal.h"

#include "base/log.h"
#include "export/out_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- erasure: the published files that hold an erased patient's rows, written again without them ---- */

typedef struct {
    char *id;
    uint32_t len, version;
} erased_version;

typedef struct {
    erased_version *v;
    size_t n, cap;
    bool erasure;
} erased_list;

static bool collect_erased(void *ctx, const log_item *it)
{
    erased_list *el = ctx;
    if (it->kind != 'x') return true;
    if (el->n == el->cap) {
        el->cap = el->cap ? 2 * el->cap : 64;
        el->v = ms_realloc(el->v, el->cap * sizeof *el->v);
    }
    el->v[el->n++] = (erased_version){ms_strndup(it->id, it->id_len), it->id_len, it->version};
    return true;
}

/* Every entry of the commits log (the whole file: an erasure is rare, and the rolls that held the patient
 * may be old). */
static ms_code read_log_all(sink_lake *l, lake_entry **out, size_t *n, ms_err *e)
{
    buf text = {0};
    buf_reserve(&text, l->log_size + 1);
    size_t got = 0;
    ms_code rc = MS_OK;
    while (got < l->log_size) {
        ssize_t r = pread(l->log_fd, text.data + got, l->log_size - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = r < 0 ? out_errno(e, errno, "reading", l->log_path)
                       : ms_fail(e, MS_EIO, "lake: %s is short", l->log_path);
            break;
        }
        got += (size_t)r;
    }
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    for (size_t at = 0; rc == MS_OK && at < got;) {
        const char *nl = memchr(text.data + at, '\n', got - at);
        size_t len = nl ? (size_t)(nl - text.data) - at : got - at;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            *out = ms_realloc(*out, cap * sizeof **out);
        }
        rc = lake_log_parse_line(text.data + at, len, &(*out)[*n], e);
        if (rc == MS_OK) (*n)++;
        at += len + 1;
    }
    buf_free(&text);
    return rc;
}

/* The rows the log says a file holds now: its roll's line, or a later line that rewrote it. */
static uint64_t file_rows_now(const lake_entry *ents, size_t n, size_t idx, const lake_file *f)
{
    uint64_t rows = f->rows;
    for (size_t i = idx + 1; i < n; i++)
        for (size_t k = 0; k < ents[i].nrewritten; k++)
            if (!strcmp(ents[i].rewritten[k].path, f->path)) rows = ents[i].rewritten[k].rows;
    return rows;
}

typedef struct {
    sink_lake *l;
    store_read *r;
    const lake_entry *en;
    int64_t commit_time;
    uint64_t *counts;
    part_writer **w; /* NULL: counting */
    buf dir;
    ms_code rc;
    ms_err *e;
} regen;

/* A roll's rows again, from the store (the public copies it was written from), without the erased
 * patients': counted per file of the roll, or written to the files being rewritten. */
static bool regen_item(void *ctx, const log_item *it)
{
    regen *g = ctx;
    if (it->kind != 'r') return true;
    bool skip;
    const export_columns *cols;
    g->rc = row_of(g->l, g->r, g->commit_time, it, &skip, &cols, &g->dir, g->e);
    if (g->rc) return false;
    if (skip) return true;
    for (size_t k = 0; k < g->en->nfiles; k++) {
        const char *path = g->en->files[k].path, *slash = strrchr(path, '/');
        if (!slash || (size_t)(slash - path) != g->dir.len || memcmp(path, g->dir.data, g->dir.len) != 0) continue;
        if (!g->w)
            g->counts[k]++;
        else if (g->w[k] && (g->rc = part_row(g->w[k], &g->l->row, g->e)) != MS_OK)
            return false;
        return true;
    }
    return true; /* a row of no file of the roll (the schema changed since): the file keeps what it has */
}

static ms_code regen_pass(regen *g, ms_err *e)
{
    for (uint64_t pos = g->en->from; pos <= g->en->to; pos++) {
        bool found = false;
        ms_code rc = store_log_entry(g->r, pos, &g->commit_time, regen_item, g, &found, e);
        if (rc == MS_OK && g->rc) rc = g->rc;
        if (rc) return rc;
    }
    return MS_OK;
}

/* Write the files of one roll that held erased rows again without them: beside (tmp/NAME.erasing), synced,
 * renamed over the published file, its directory synced; each noted in l->rewritten. */
static ms_code rewrite_roll(sink_lake *l, store_read *r, const lake_entry *ents, size_t nents, size_t idx, ms_err *e)
{
    const lake_entry *en = &ents[idx];
    regen g = {.l = l, .r = r, .en = en, .e = e};
    g.counts = ms_calloc(en->nfiles ? en->nfiles : 1, sizeof *g.counts);
    part_writer **w = ms_calloc(en->nfiles ? en->nfiles : 1, sizeof *w);
    ms_code rc = regen_pass(&g, e);
    bool any = false;
    buf name = {0};
    char from[24];
    snprintf(from, sizeof from, "%llu", (unsigned long long)en->from);
    const char *kv[] = {"medstream.scope", "public", "medstream.lake_from", from, NULL};
    for (size_t k = 0; rc == MS_OK && k < en->nfiles; k++) {
        if (g.counts[k] == file_rows_now(ents, nents, idx, &en->files[k])) continue;
        const char *path = en->files[k].path, *slash = strrchr(path, '/');
        name.len = 0;
        buf_printf(&name, "%s.erasing", slash + 1);
        uint64_t rg = l->o.roll_bytes < ROW_GROUP_MAX ? l->o.roll_bytes : ROW_GROUP_MAX;
        part_options po = {.format = EXPORT_PARQUET,
                           .columns = strncmp(path, "deletions/", 10) ? &l->rcols : &l->dcols,
                           .row_group_bytes = rg,
                           .created_by = l->o.created_by,
                           .key_values = kv,
                           .mode = 0644};
        rc = part_open(&w[k], &po, l->tmp, name.data, e);
        any = true;
    }
    if (rc == MS_OK && any) {
        g.w = w;
        rc = regen_pass(&g, e);
    }
    for (size_t k = 0; k < en->nfiles; k++) {
        if (!w[k]) continue;
        if (rc) {
            part_abort(w[k]);
            continue;
        }
        uint64_t rows, bytes;
        unsigned char sha[32];
        rc = part_close(w[k], &rows, &bytes, sha, e);
        if (rc) continue;
        const char *path = en->files[k].path, *slash = strrchr(path, '/');
        name.len = 0;
        buf_printf(&name, "%s.erasing", slash + 1);
        char *tmp = path_join(l->tmp, name.data), *to = path_join(l->dir, path);
        if (rename(tmp, to) != 0) {
            rc = out_errno(e, errno, "replacing", to);
            unlink(tmp);
        }
        free(tmp);
        free(to);
        if (rc == MS_OK) {
            buf d = {0};
            buf_printf(&d, "%s/%.*s", l->dir, (int)(slash - path), path);
            rc = out_fsync_dir(d.data, e);
            buf_free(&d);
        }
        if (rc == MS_OK) crash_if(l, CRASH_ERASE);
        if (rc == MS_OK) lake_entry_add_rewritten(&l->rewritten, path, rows, bytes, sha);
    }
    buf_free(&name);
    buf_free(&g.dir);
    free(g.counts);
    free(w);
    return rc;
}

/* The erasure at entry `at`: every published roll that held a version it erased ('x' items) is written
 * again without the erased patients' rows. The rolls are found through the commit times of the versions
 * (a roll's line holds the commit time of its last entry; lines follow each other in commit order). */
ms_code lake_rewrite(sink_lake *l, uint64_t at, ms_err *e)
{
    double t0 = ms_mono_s();
    store_read *r;
    ms_code rc = store_read_begin(l->o.store, &r, e);
    if (rc) return rc;
    erased_list el = {0};
    int64_t erased_at = 0;
    bool found = false;
    lake_entry *ents = NULL;
    size_t nents = 0;
    bool *hit = NULL;
    rc = store_log_entry(r, at, &erased_at, collect_erased, &el, &found, e);
    if (rc == MS_OK) rc = read_log_all(l, &ents, &nents, e);
    if (rc == MS_OK) hit = ms_calloc(nents ? nents : 1, sizeof *hit);
    for (size_t i = 0; rc == MS_OK && i < el.n; i++) {
        /* the commit time of the erased version: walk back from the erasure */
        record_version rv;
        bool have = false;
        rc = store_record_at(r, el.v[i].id, el.v[i].len, erased_at, &rv, &have, e);
        while (rc == MS_OK && have && rv.version > el.v[i].version)
            rc = store_record_before(r, el.v[i].id, el.v[i].len, rv.valid_from, rv.version, &rv, &have, e);
        if (rc || !have || rv.version != el.v[i].version) continue;
        size_t lo = 0, hi = nents; /* the first line whose last commit is not older than the version */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (ents[mid].commit_time_us < rv.valid_from)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < nents) hit[lo] = true;
    }
    size_t rolls = 0;
    for (size_t i = 0; rc == MS_OK && i < nents; i++)
        if (hit[i]) {
            rc = rewrite_roll(l, r, ents, nents, i, e);
            rolls++;
        }
    store_read_end(r);
    if (rc) lake_entry_free(&l->rewritten);
    if (rc == MS_OK)
        ms_log_fields(LOG_INFO, "lake.erasure",
                      (log_field[]){LOG_UINT("position", at), LOG_UINT("versions", el.n), LOG_UINT("rolls", rolls),
                                    LOG_UINT("files", l->rewritten.nrewritten),
                                    LOG_MS("ms", (ms_mono_s() - t0) * 1000)},
                      5, "lake: files holding an erased patient's rows written again without them");
    for (size_t i = 0; i < el.n; i++)
        free(el.v[i].id);
    free(el.v);
    for (size_t i = 0; i < nents; i++)
        lake_entry_free(&ents[i]);
    free(ents);
    free(hit);
    return rc;
}

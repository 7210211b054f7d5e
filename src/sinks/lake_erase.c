/*
 * lake_erase.c - the lake after an erasure (issue 15): the published Parquet files that hold an erased
 * patient's rows, found through the commits log and the versions' commit times, written again from the
 * store without them, each beside the published one, synced and renamed over it (sink_lake_internal.h).
 * Once the schema has ever changed, a roll's rows may belong to other partitions now than when it was
 * published: every file of such a roll is written again, its rows laid out under the schema in force (a
 * partition none of its files is in gets a new file of the roll); never while a re-projection is under way.
 *
 * Must never: leave a published file half written (a rename replaces it whole), write a row the store's
 * public copy does not hold now, or leave out (or write twice) a row of a patient not erased.
 */
#include "sinks/sink_lake_internal.h"

#include "base/fd_io.h"
#include "base/log.h"
#include "export/out_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    size_t got;
    ms_code rc = MS_OK;
    int err = ms_read_full(l->log_fd, text.data, l->log_size, 0, &got);
    if (err)
        rc = out_errno(e, err, "reading", l->log_path);
    else if (got < l->log_size)
        rc = ms_fail(e, MS_EIO, "lake: %s is short", l->log_path);
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

/* The rows the log says a file holds now: the last line that lists it (its roll's, or a later one that
 * wrote it again). */
static uint64_t file_rows_now(const lake_entry *ents, size_t n, size_t idx, const char *path)
{
    uint64_t rows = 0;
    for (size_t k = 0; k < ents[idx].nfiles; k++)
        if (!strcmp(ents[idx].files[k].path, path)) rows = ents[idx].files[k].rows;
    for (size_t i = idx + 1; i < n; i++)
        for (size_t k = 0; k < ents[i].nrewritten; k++)
            if (!strcmp(ents[i].rewritten[k].path, path)) rows = ents[i].rewritten[k].rows;
    return rows;
}

/* A file of the roll being written again: one its line lists, one an earlier rewrite added, or one this
 * rewrite adds (a partition the roll's rows belong to now, none of its files is in: the schema changed). */
typedef struct {
    char *path;     /* relative to the lake */
    uint64_t now;   /* rows the log says it holds (0: not in the log) */
    uint64_t count; /* rows of the roll it holds written again */
    bool added;     /* not in the log: its directory may not exist */
    part_writer *w; /* open while a pass writes it */
} roll_file;

typedef struct {
    sink_lake *l;
    store_read *r;
    const lake_entry *en;
    int64_t commit_time;
    roll_file *f;
    size_t n, cap;
    uint32_t next; /* the number of the next file the roll gets: part-<from>-<next> */
    bool writing;  /* false: counting */
    buf dir, name;
    ms_code rc;
    ms_err *e;
} regen;

static void add_file(regen *g, const char *path, uint64_t now, bool added)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 16;
        g->f = ms_realloc(g->f, g->cap * sizeof *g->f);
    }
    g->f[g->n++] = (roll_file){.path = ms_strndup(path, strlen(path)), .now = now, .added = added};
    const char *dash = strrchr(path, '-');
    uint32_t num = dash ? (uint32_t)strtoul(dash + 1, NULL, 10) : 0;
    if (num >= g->next) g->next = num + 1;
}

/* A roll's rows again, from the store (the public copies it was written from), without the erased
 * patients': each counted in the file of its partition as laid out now, or written to it. A row whose
 * partition has no file of the roll (the schema changed since: it moved) gets a file of the roll there. */
static bool regen_item(void *ctx, const log_item *it)
{
    regen *g = ctx;
    if (it->kind != 'r') return true;
    bool skip;
    const export_columns *cols;
    g->rc = row_of(g->l, g->r, g->commit_time, it, &skip, &cols, &g->dir, g->e);
    if (g->rc) return false;
    if (skip) return true;
    for (size_t k = 0; k < g->n; k++) {
        const char *path = g->f[k].path, *slash = strrchr(path, '/');
        if (!slash || (size_t)(slash - path) != g->dir.len || memcmp(path, g->dir.data, g->dir.len) != 0) continue;
        if (!g->writing)
            g->f[k].count++;
        else if (g->f[k].w && (g->rc = part_row(g->f[k].w, &g->l->row, g->e)) != MS_OK)
            return false;
        return true;
    }
    if (g->writing) { /* the same read transaction as the count: cannot be */
        g->rc = ms_fail(g->e, MS_ECORRUPT, "lake: a row of the roll from %llu in no file of it",
                        (unsigned long long)g->en->from);
        return false;
    }
    lake_part_name(g->en->from, g->next, &g->name);
    buf_putc(&g->dir, '/');
    buf_put(&g->dir, g->name.data, g->name.len);
    add_file(g, g->dir.data, 0, true);
    g->f[g->n - 1].count = 1;
    return true;
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

/* Is f written again? Every file of the roll that holds or gets a row when the schema ever changed (a row
 * may have moved between files of the roll, which no count shows); else the files whose count changed. */
static bool to_write(const roll_file *f, bool relayout) { return relayout ? f->count || f->now : f->count != f->now; }

/* ---- the files a rewrite adds, journaled until a line names them ----
 *
 * A file the rewrite adds (a partition the roll's rows moved to) is named by no line until the next roll's
 * line lists it. Before it is renamed into place its path is appended to _medstream/added (synced); the line
 * that lists it empties the journal. A start finding paths there that no line names removes those files:
 * a crash between the rename and the line left them, and the rewrite done again may lay the roll out under
 * another schema (a start with yet another one), where they would hold rows twice. */

static char *added_path(const sink_lake *l) { return path_join(l->meta, "added"); }

static ms_code added_note(sink_lake *l, const char *rel, ms_err *e)
{
    char *p = added_path(l);
    ms_code rc = MS_OK;
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) rc = out_errno(e, errno, "opening", p);
    buf line = {0};
    buf_printf(&line, "%s\n", rel);
    if (rc == MS_OK) rc = write_synced(fd, &line, (uint64_t)st.st_size, p, e); /* appended */
    if (fd >= 0) close(fd);
    if (rc == MS_OK) rc = out_fsync_dir(l->meta, e); /* its name, the first time */
    buf_free(&line);
    free(p);
    return rc;
}

void lake_added_clear(sink_lake *l)
{
    char *p = added_path(l);
    if (truncate(p, 0) != 0 && errno != ENOENT) /* harmless: the names it keeps are a line's now */
        ms_log(LOG_WARN, "lake.added_journal", "lake: cannot empty %s: %s", p, strerror(errno));
    free(p);
}

ms_code lake_added_recover(sink_lake *l, ms_err *e)
{
    char *p = added_path(l);
    buf text = {0};
    struct stat st;
    ms_code rc = stat(p, &st) != 0 || st.st_size == 0 ? MS_OK : buf_read_file(&text, p, e);
    lake_entry *ents = NULL;
    size_t nents = 0, removed = 0;
    if (rc == MS_OK && text.len) rc = read_log_all(l, &ents, &nents, e);
    for (size_t at = 0; rc == MS_OK && at < text.len;) {
        const char *nl = memchr(text.data + at, '\n', text.len - at);
        size_t len = nl ? (size_t)(nl - text.data) - at : text.len - at; /* a torn last path: never renamed */
        char *rel = ms_strndup(text.data + at, len);
        at += len + 1;
        bool keep = !nl || !*rel || strstr(rel, "..") || rel[0] == '/'; /* torn, or not a path below the lake */
        for (size_t i = 0; i < nents && !keep; i++) { /* named by a line */
            for (size_t k = 0; k < ents[i].nfiles && !keep; k++)
                keep = !strcmp(ents[i].files[k].path, rel);
            for (size_t k = 0; k < ents[i].nrewritten && !keep; k++)
                keep = !strcmp(ents[i].rewritten[k].path, rel);
        }
        if (!keep) {
            char *full = path_join(l->dir, rel), *slash = strrchr(full, '/');
            if (unlink(full) == 0) {
                removed++;
                *slash = 0;
                rc = out_fsync_dir(full, e);
            } else if (errno != ENOENT) {
                rc = out_errno(e, errno, "removing", full);
            }
            free(full);
        }
        free(rel);
    }
    if (removed)
        ms_log_fields(LOG_WARN, "lake.added_removed", (log_field[]){LOG_UINT("files", removed)}, 1,
                      "lake: removed %zu files an interrupted erasure's rewrite added that no line names (it is done "
                      "again)",
                      removed);
    if (rc == MS_OK && text.len && (truncate(p, 0) != 0 || (rc = out_fsync_dir(l->meta, e)) != MS_OK))
        rc = rc ? rc : out_errno(e, errno, "emptying", p);
    for (size_t i = 0; i < nents; i++)
        lake_entry_free(&ents[i]);
    free(ents);
    buf_free(&text);
    free(p);
    return rc;
}

/* Close a file written again and rename it over the published one (tmp/NAME.erasing: synced; its directory
 * made and synced when the rewrite adds it); noted in l->rewritten. */
static ms_code replace_file(sink_lake *l, roll_file *f, buf *name, ms_err *e)
{
    uint64_t rows, bytes;
    unsigned char sha[32];
    ms_code rc = part_close(f->w, &rows, &bytes, sha, e);
    f->w = NULL;
    if (rc) return rc;
    const char *slash = strrchr(f->path, '/');
    buf d = {0};
    buf_put(&d, f->path, (size_t)(slash - f->path));
    name->len = 0;
    buf_printf(name, "%s.erasing", slash + 1);
    char *tmp = path_join(l->tmp, name->data), *to = path_join(l->dir, f->path);
    if (f->added) rc = mkdirs_synced(l->dir, d.data, e);
    if (rc == MS_OK && f->added) rc = added_note(l, f->path, e);
    if (rc == MS_OK && rename(tmp, to) != 0) rc = out_errno(e, errno, "replacing", to);
    if (rc) unlink(tmp);
    free(tmp);
    free(to);
    if (rc == MS_OK) {
        char *full = path_join(l->dir, d.data);
        rc = out_fsync_dir(full, e);
        free(full);
    }
    buf_free(&d);
    if (rc == MS_OK) crash_if(l, CRASH_ERASE);
    if (rc == MS_OK && f->added) crash_if(l, CRASH_ERASE_ADDED);
    if (rc == MS_OK) lake_entry_add_rewritten(&l->rewritten, f->path, rows, bytes, sha);
    return rc;
}

/* Write the files of one roll that held erased rows again without them, at most MAX_OPEN_PARTS at a time
 * (a pass over the roll's commits each): beside (tmp/NAME.erasing), synced, renamed over the published
 * file, its directory synced; each noted in l->rewritten. relayout: the schema changed at some time, so
 * every file of the roll is written again and the rows go to their partitions as laid out now (a file
 * whose partition no row has any more is left with 0 rows). */
static ms_code rewrite_roll(sink_lake *l, store_read *r, const lake_entry *ents, size_t nents, size_t idx,
                            bool relayout, ms_err *e)
{
    const lake_entry *en = &ents[idx];
    regen g = {.l = l, .r = r, .en = en, .e = e};
    for (size_t k = 0; k < en->nfiles; k++)
        add_file(&g, en->files[k].path, file_rows_now(ents, nents, idx, en->files[k].path), false);
    char prefix[48]; /* files an earlier rewrite added to the roll: named as its own */
    snprintf(prefix, sizeof prefix, "part-%020llu-", (unsigned long long)en->from);
    for (size_t i = idx + 1; i < nents; i++)
        for (size_t k = 0; k < ents[i].nrewritten; k++) {
            const char *path = ents[i].rewritten[k].path, *slash = strrchr(path, '/');
            bool known = false;
            for (size_t j = 0; j < g.n && !known; j++)
                known = !strcmp(g.f[j].path, path);
            if (!known && slash && !strncmp(slash + 1, prefix, strlen(prefix)))
                add_file(&g, path, file_rows_now(ents, nents, idx, path), false);
        }
    ms_code rc = regen_pass(&g, e);
    char from[24];
    snprintf(from, sizeof from, "%llu", (unsigned long long)en->from);
    const char *kv[] = {"medstream.scope", "public", "medstream.lake_from", from, NULL};
    uint64_t rg = l->o.roll_bytes < ROW_GROUP_MAX ? l->o.roll_bytes : ROW_GROUP_MAX;
    for (size_t k0 = 0, k1; rc == MS_OK && k0 < g.n; k0 = k1) {
        size_t open = 0;
        for (k1 = k0; rc == MS_OK && k1 < g.n && open < MAX_OPEN_PARTS; k1++) {
            if (!to_write(&g.f[k1], relayout)) continue;
            const char *path = g.f[k1].path, *slash = strrchr(path, '/');
            g.name.len = 0;
            buf_printf(&g.name, "%s.erasing", slash + 1);
            part_options po = {.format = EXPORT_PARQUET,
                               .columns = strncmp(path, "deletions/", 10) ? &l->rcols : &l->dcols,
                               .row_group_bytes = rg,
                               .created_by = l->o.created_by,
                               .key_values = kv,
                               .mode = 0644};
            rc = part_open(&g.f[k1].w, &po, l->tmp, g.name.data, e);
            open++;
        }
        if (rc == MS_OK && open) {
            g.writing = true;
            rc = regen_pass(&g, e);
        }
        for (size_t k = k0; k < k1; k++) {
            if (!g.f[k].w) continue;
            if (rc) {
                part_abort(g.f[k].w);
                g.f[k].w = NULL;
            } else {
                rc = replace_file(l, &g.f[k], &g.name, e);
            }
        }
    }
    for (size_t k = 0; k < g.n; k++) {
        if (g.f[k].w) part_abort(g.f[k].w);
        free(g.f[k].path);
    }
    free(g.f);
    buf_free(&g.name);
    buf_free(&g.dir);
    return rc;
}

/* The erasure at entry `at`: every published roll that held a version it erased ('x' items) is written
 * again without the erased patients' rows. The rolls are found through the commit times of the versions
 * (a roll's line holds the commit time of its last entry; lines follow each other in commit order). */
ms_code lake_rewrite(sink_lake *l, uint64_t at, bool *wait, ms_err *e)
{
    double t0 = ms_mono_s();
    store_read *r;
    ms_code rc = store_read_begin(l->o.store, &r, e);
    if (rc) return rc;
    /* the rows are laid out under the schema in force, from its copies: not while they are being made */
    store_schema_status sv;
    rc = store_schema_status_get(r, &sv, e);
    *wait = rc == MS_OK && sv.target != 0;
    if (rc || *wait) {
        store_read_end(r);
        if (*wait && !l->erasure_waits)
            ms_log_fields(LOG_INFO, "lake.erasure_waits", (log_field[]){LOG_UINT("position", at)}, 1,
                          "lake: an erasure waits for the re-projection under way before files are written again");
        l->erasure_waits = *wait;
        return rc;
    }
    l->erasure_waits = false;
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
            rc = rewrite_roll(l, r, ents, nents, i, sv.last > 1, e);
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

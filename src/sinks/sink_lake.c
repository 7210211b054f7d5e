/*
 * sink_lake.c - commit log -> Parquet lake of the public copy (see sink_lake.h; the commits log format and
 * the recovery decisions are lake_log.c's, the rewrite after an erasure lake_erase.c's, the rows, partitions and
 * part files export/'s; sink_lake_internal.h is what the two sink files share).
 */
#include "sinks/sink_lake.h"

#include "base/fd_io.h"
#include "base/json_write.h"
#include "base/log.h"
#include "base/metrics.h"
#include "export/layout.h"
#include "export/out_file.h"
#include "export/part.h"
#include "export/rows.h"
#include "ingest/reproject.h"
#include "sinks/lake_log.h"
#include "sinks/sink_lake_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small file system helpers ---- */

char *path_join(const char *a, const char *b)
{
    buf p = {0};
    buf_printf(&p, "%s/%s", a, b);
    return buf_take(&p);
}

/* mkdir -p of rel below the lake's directory, fsyncing the parent of every directory it makes (so that a
 * file renamed into it is durable with it). */
ms_code mkdirs_synced(const char *base, const char *rel, ms_err *e)
{
    buf p = {0};
    buf_puts(&p, base);
    ms_code rc = MS_OK;
    const char *c = rel;
    while (*c && rc == MS_OK) {
        const char *s = strchr(c, '/');
        size_t n = s ? (size_t)(s - c) : strlen(c);
        buf_putc(&p, '/');
        buf_put(&p, c, n);
        if (mkdir(p.data, 0755) == 0) {
            p.data[p.len - n - 1] = 0; /* the parent */
            rc = out_fsync_dir(p.data, e);
            p.data[p.len - n - 1] = '/';
        } else if (errno != EEXIST) {
            rc = out_errno(e, errno, "making directory", p.data);
        }
        c = s ? s + 1 : c + n;
    }
    buf_free(&p);
    return rc;
}

static bool file_exists(void *ctx, const char *rel)
{
    sink_lake *l = ctx;
    char *p = path_join(l->dir, rel);
    struct stat st;
    bool yes = stat(p, &st) == 0;
    free(p);
    return yes;
}

/* The names in the tmp directory (NULL-ended, malloc'd). */
static ms_code list_tmp(sink_lake *l, char ***out, size_t *n, ms_err *e)
{
    DIR *d = opendir(l->tmp);
    if (!d) return out_errno(e, errno, "reading", l->tmp);
    size_t cap = 16;
    char **names = ms_malloc(cap * sizeof *names);
    *n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (*n + 1 >= cap) names = ms_realloc(names, (cap *= 2) * sizeof *names);
        names[(*n)++] = ms_strndup(de->d_name, strlen(de->d_name));
    }
    closedir(d);
    names[*n] = NULL;
    *out = names;
    return MS_OK;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- state for /metrics and /healthz ---- */

static void set_failing(sink_lake *l, const ms_err *e)
{
    pthread_mutex_lock(&l->err_lock);
    bool same = strcmp(l->error, e->msg) == 0 && atomic_load(&l->state) == LAKE_FAILING;
    snprintf(l->error, sizeof l->error, "%s", e->msg);
    pthread_mutex_unlock(&l->err_lock);
    atomic_store(&l->state, LAKE_FAILING);
    atomic_fetch_add(&l->failures_total, 1);
    if (!same) ms_log(LOG_ERROR, "lake.failing", "%s; retrying every second", e->msg);
}

static void set_ok(sink_lake *l)
{
    if (atomic_load(&l->state) == LAKE_OK) return;
    atomic_store(&l->state, LAKE_OK);
    ms_log(LOG_INFO, "lake.recovered", "lake: writing again");
}

/* Lag: commits after the published position, and the age of the oldest of them. */
static void note_lag(sink_lake *l, store_read *r)
{
    atomic_store(&l->position, l->published);
    uint64_t end = store_commit_pos(r);
    uint64_t behind = end > l->published ? end - l->published : 0;
    atomic_store(&l->lag_commits, behind);
    int64_t t = 0;
    bool found = false;
    ms_err e;
    if (behind && store_log_entry(r, l->published + 1, &t, NULL, NULL, &found, &e) == MS_OK && found) {
        int64_t age = ms_now_us() - t;
        atomic_store(&l->lag_us, age > 0 ? (uint64_t)age : 0);
    } else {
        atomic_store(&l->lag_us, 0);
    }
}

/* ---- the roll ---- */

static void roll_reset(sink_lake *l)
{
    for (size_t i = 0; i < l->nparts; i++) {
        free(l->parts[i].path);
        free(l->parts[i].name);
    }
    l->nparts = 0;
    l->roll_rows = l->roll_bytes = 0;
    l->roll_from = 0;
    l->roll_first_time = l->roll_last_time = 0;
}

/* Drop the roll in hand: its temporary files removed, reading resumes at the published position. */
static void roll_abort(sink_lake *l)
{
    buf pend = {0};
    for (size_t i = 0; i < l->nparts; i++) {
        if (l->parts[i].w) {
            part_abort(l->parts[i].w);
        } else if (l->parts[i].name[0]) { /* finished into tmp already: remove it */
            lake_pending_name(l->parts[i].name, &pend);
            char *p = path_join(l->tmp, pend.data);
            unlink(p);
            free(p);
        }
        l->parts[i].w = NULL;
    }
    buf_free(&pend);
    roll_reset(l);
    l->read_pos = l->published;
}

static ms_code part_for(sink_lake *l, const char *path, size_t path_len, const export_columns *cols, lake_part **out,
                        ms_err *e)
{
    for (size_t i = 0; i < l->nparts; i++) {
        if (l->parts[i].cols == cols && strlen(l->parts[i].path) == path_len &&
            memcmp(l->parts[i].path, path, path_len) == 0) {
            *out = &l->parts[i];
            return MS_OK;
        }
    }
    if (l->nparts == l->cap_parts) {
        l->cap_parts = l->cap_parts ? l->cap_parts * 2 : 16;
        l->parts = ms_realloc(l->parts, l->cap_parts * sizeof *l->parts);
    }
    lake_part *p = &l->parts[l->nparts];
    *p = (lake_part){.path = ms_strndup(path, path_len), .cols = cols};
    buf name = {0}, pend = {0};
    lake_part_name(l->roll_from, (uint32_t)l->nparts, &name);
    p->name = buf_take(&name);
    lake_pending_name(p->name, &pend);
    char from[24];
    snprintf(from, sizeof from, "%llu", (unsigned long long)l->roll_from);
    const char *kv[] = {"medstream.scope", "public", "medstream.lake_from", from, NULL};
    uint64_t rg = l->o.roll_bytes < ROW_GROUP_MAX ? l->o.roll_bytes : ROW_GROUP_MAX;
    part_options po = {.format = EXPORT_PARQUET,
                       .columns = cols,
                       .row_group_bytes = rg,
                       .created_by = l->o.created_by,
                       .key_values = kv,
                       .mode = 0644};
    ms_code rc = part_open(&p->w, &po, l->tmp, pend.data, e);
    buf_free(&pend);
    if (rc) {
        free(p->path);
        free(p->name);
        return rc;
    }
    l->nparts++;
    *out = p;
    return MS_OK;
}

static uint64_t row_bytes(const export_columns *c, const export_row *row)
{
    uint64_t n = 0;
    for (int k = 0; k < c->n; k++)
        n += c->col[k].type == PQ_STRING || c->col[k].type == PQ_JSON ? row->v[k].len + 4u : 8u;
    return n;
}

/* The row of a record version's public copy in l->row, the directory of its part file in *dir and its
 * columns in *cols; *skip when it has no row: no public copy (nothing allow-listed), or a patient erased
 * since (store/erase.c: its versions read as tombstones now; nothing of it goes to the lake). */
ms_code row_of(sink_lake *l, store_read *r, int64_t commit_time, const log_item *it, bool *skip,
               const export_columns **cols, buf *dir, ms_err *e)
{
    public_record pr;
    bool found;
    *skip = false;
    ms_code rc = store_public_record_version(r, it->id, it->id_len, commit_time, it->version, &pr, &found, e);
    if (rc) return rc;
    if (!found) return *skip = true, MS_OK;
    if (it->id_len > RECORD_ID_MAX) return ms_fail(e, MS_ECORRUPT, "lake: a record id too long");
    if (pr.deleted) {
        bool erased = false;
        if ((rc = store_patient_erased(r, &pr.pid, NULL, &erased, e))) return rc;
        if (erased) return *skip = true, MS_OK;
    }
    record_version *rv = &l->rv;
    memcpy(rv->record_id, it->id, it->id_len);
    rv->record_id[it->id_len] = 0;
    rv->record_id_len = it->id_len;
    rv->version = it->version;
    rv->pid = pr.pid;
    /* the copy is under r's schema version: its rows are laid out under that version's schema */
    bool old = l->have_old && store_read_schema_version(r) == l->old_sv;
    const schema *sc = old ? &l->old_schema : l->o.schema;
    *cols = pr.deleted ? &l->dcols : old ? &l->old_rcols : &l->rcols;
    dir->len = 0;
    if (pr.deleted) {
        patient_id_format(&pr.pid, l->rb.pid);
        l->row.v[0] = (export_value){.present = true, .str = l->rb.pid, .len = PATIENT_ID_TEXT - 1};
        l->row.v[1] = (export_value){.present = true, .str = rv->record_id, .len = rv->record_id_len};
        l->row.v[2] = (export_value){.present = true, .i64 = rv->version};
        buf_puts(dir, "deletions");
        return MS_OK;
    }
    rc = rows_public_record(&l->rb, *cols, sc, rv, &pr, &l->row, e);
    if (rc == MS_OK) layout_public_partition(sc, pr.fields, pr.fields_len, dir);
    return rc;
}

static bool add_item(void *ctx, const log_item *it)
{
    sink_lake *l = ctx;
    if (it->kind != 'r') return true; /* patient versions: not in the lake */
    ms_err *e = &l->step_err;
    bool skip;
    const export_columns *cols = NULL;
    lake_part *p = NULL;
    ms_code rc = row_of(l, l->r, l->commit_time, it, &skip, &cols, &l->part_path, e);
    if (rc == MS_OK && skip) return true;
    if (rc == MS_OK) rc = part_for(l, l->part_path.data, l->part_path.len, cols, &p, e);
    if (rc == MS_OK) rc = part_row(p->w, &l->row, e);
    if (rc) {
        l->step_rc = rc;
        return false;
    }
    l->roll_rows++;
    l->roll_bytes += row_bytes(cols, &l->row);
    return true;
}

/* ---- publishing ---- */

ms_code write_synced(int fd, const buf *b, uint64_t at, const char *path, ms_err *e)
{
    int err = ms_write_full(fd, b->data, b->len, (off_t)at, NULL);
    if (err) return out_errno(e, err, "appending to", path);
    return fdatasync(fd) == 0 ? MS_OK : out_errno(e, errno, "syncing", path);
}

/* The commits log: append one line at log_size and sync it. On failure the log is cut back. */
static ms_code log_append(sink_lake *l, const lake_entry *en, ms_err *e)
{
    if (l->log_dirty) {
        if (ftruncate(l->log_fd, (off_t)l->log_size) != 0 || fdatasync(l->log_fd) != 0)
            return out_errno(e, errno, "cutting back", l->log_path);
        l->log_dirty = false;
    }
    buf line = {0};
    lake_log_encode(en, &line);
    ms_code rc = write_synced(l->log_fd, &line, l->log_size, l->log_path, e);
    if (rc == MS_OK) {
        l->log_size += line.len;
    } else {
        l->log_dirty = true;
        if (ftruncate(l->log_fd, (off_t)l->log_size) == 0 && fdatasync(l->log_fd) == 0) l->log_dirty = false;
    }
    buf_free(&line);
    return rc;
}

void crash_if(const sink_lake *l, crash_point at)
{
    if (l->crash_at != at) return;
    ms_log(LOG_WARN, "lake.test_crash", "lake: MEDSTREAM_TEST_LAKE_CRASH: killing this process now");
    raise(SIGKILL);
}

/* Rename the entry's pending files into place (those not there yet), then sync the directories. */
static ms_code finish_entry(sink_lake *l, const lake_entry *en, ms_err *e)
{
    buf pend = {0}, dir = {0};
    ms_code rc = MS_OK;
    for (size_t i = 0; i < en->nfiles && rc == MS_OK; i++) {
        const char *rel = en->files[i].path;
        if (file_exists(l, rel)) continue;
        const char *slash = strrchr(rel, '/');
        dir.len = 0;
        buf_put(&dir, rel, slash ? (size_t)(slash - rel) : 0);
        rc = mkdirs_synced(l->dir, dir.data, e);
        if (rc) break;
        lake_pending_name(rel, &pend);
        char *from = path_join(l->tmp, pend.data), *to = path_join(l->dir, rel);
        if (rename(from, to) != 0) rc = out_errno(e, errno, "publishing", to);
        free(from);
        free(to);
        if (rc == MS_OK) crash_if(l, CRASH_RENAME);
        if (rc == MS_OK) {
            char *d = path_join(l->dir, dir.data);
            rc = out_fsync_dir(d, e);
            free(d);
        }
    }
    if (rc == MS_OK) rc = out_fsync_dir(l->tmp, e);
    buf_free(&pend);
    buf_free(&dir);
    return rc;
}

static void save_position(sink_lake *l)
{
    ms_err e;
    if (store_sink_position_set(l->o.store, SINK_NAME, l->published, &e) != MS_OK)
        ms_log(LOG_WARN, "lake.position", "lake: %s (the commits log holds the position)", e.msg);
}

/* Publish the roll in hand (above: finish, log, rename, position). */
static ms_code publish(sink_lake *l, ms_err *e)
{
    double t0 = ms_mono_s();
    lake_entry en = {.from = l->roll_from, .to = l->read_pos, .commit_time_us = l->roll_last_time};
    ms_code rc = MS_OK;
    buf rel = {0};
    for (size_t i = 0; i < l->nparts; i++) {
        lake_part *p = &l->parts[i];
        uint64_t rows, bytes;
        unsigned char sha[32];
        if (rc) { /* an earlier file failed: drop the rest */
            part_abort(p->w);
            p->w = NULL;
            continue;
        }
        rc = part_close(p->w, &rows, &bytes, sha, e);
        p->w = NULL;
        if (rc) {
            /* part_close removed its own temporary file; mark it as gone */
            free(p->name);
            p->name = ms_strndup("", 0);
            continue;
        }
        rel.len = 0;
        buf_printf(&rel, "%s/%s", p->path, p->name);
        lake_entry_add(&en, rel.data, rows, bytes, sha);
    }
    buf_free(&rel);
    for (size_t i = 0; rc == MS_OK && i < l->rewritten.nrewritten; i++) {
        const lake_file *f = &l->rewritten.rewritten[i];
        lake_entry_add_rewritten(&en, f->path, f->rows, f->bytes, f->sha256);
    }
    if (rc == MS_OK && (en.nfiles || en.nrewritten)) {
        crash_if(l, CRASH_FILES);
        rc = log_append(l, &en, e);
        if (rc == MS_OK) crash_if(l, CRASH_LOG);
        if (rc == MS_OK && en.nrewritten) lake_added_clear(l);
    }
    if (rc) {
        lake_entry_free(&en);
        roll_abort(l);
        return rc;
    }
    /* published: from here on the roll is the log's, whatever happens */
    l->published = l->read_pos;
    lake_entry_free(&l->rewritten);
    uint64_t nfiles = en.nfiles, rows = en.rows;
    roll_reset(l);
    if (nfiles) {
        rc = finish_entry(l, &en, e);
        if (rc) {
            l->unfinished = en; /* finished before anything else */
            l->has_unfinished = true;
        } else {
            lake_entry_free(&en);
        }
    } else {
        lake_entry_free(&en); /* a line of rewritten files only */
    }
    save_position(l);
    double took = ms_mono_s() - t0;
    l->publish_est_s = l->publish_est_s * 0.7 + took * 0.3;
    if (nfiles) {
        histogram_observe(&l->publish_seconds, took);
        atomic_fetch_add(&l->files_total, nfiles);
        atomic_fetch_add(&l->rows_total, rows);
        atomic_fetch_add(&l->rolls_total, 1);
    }
    return rc;
}

static bool roll_due(const sink_lake *l, bool stopping)
{
    if (l->read_pos <= l->published) return false;
    if (stopping || l->roll_bytes >= l->o.roll_bytes || l->nparts >= MAX_OPEN_PARTS) return true;
    double est = l->publish_est_s < (double)l->o.roll_seconds / 2 ? l->publish_est_s : (double)l->o.roll_seconds / 2;
    double age = (double)(ms_now_us() - l->roll_first_time) / 1e6;
    /* catching up on a backlog: fill files to roll_bytes rather than one small file a step */
    if (!l->caught_up && age < 2.0 * (double)l->o.roll_seconds) return false;
    return age + est + ROLL_MARGIN_S >= (double)l->o.roll_seconds;
}

/* ---- erasure (lake_erase.c rewrites the files; here: when) ---- */

static bool find_erasure(void *ctx, const log_item *it)
{
    if (it->kind == 'e') *(bool *)ctx = true;
    return true;
}

/* The step met an erasure: publish the roll in hand (it may hold rows of the patient read before the
 * erasure), then rewrite; the erasure's entry is read next, and the roll that holds it logs the rewritten
 * files. A crash before that line: the start reads the erasure's entry again and rewrites again (the
 * same bytes). While a re-projection is under way the rewrite waits (the step meets the entry again). */
static ms_code erase_from_lake(sink_lake *l, ms_err *e)
{
    ms_code rc = MS_OK;
    bool wait = false;
    if (l->read_pos > l->published) rc = publish(l, e);
    if (rc == MS_OK && l->has_unfinished) rc = ms_fail(e, MS_EIO, "lake: a roll's files are not all in place");
    if (rc == MS_OK) rc = lake_rewrite(l, l->erasure_at, &wait, e);
    if (rc == MS_OK && !wait) l->erasure_done = l->erasure_at;
    l->erasure_at = 0;
    return rc;
}

/* Read the next commits into the roll, in one read transaction; *read receives how many. */
static ms_code step(sink_lake *l, uint64_t *read, ms_err *e)
{
    *read = 0;
    ms_code rc = store_read_begin(l->o.store, &l->r, e);
    if (rc) return rc;
    note_lag(l, l->r);
    uint64_t end = store_commit_pos(l->r), rows0 = l->roll_rows;
    while (l->read_pos < end && *read < STEP_MAX_COMMITS && l->roll_rows - rows0 < STEP_MAX_ROWS &&
           l->roll_bytes < l->o.roll_bytes && l->nparts < MAX_OPEN_PARTS) {
        bool found = false;
        if (l->read_pos + 1 != l->erasure_done) { /* an erasure: the lake is rewritten before it is read */
            bool erasure = false;
            int64_t t;
            rc = store_log_entry(l->r, l->read_pos + 1, &t, find_erasure, &erasure, &found, e);
            if (rc || !found) break;
            if (erasure) {
                l->erasure_at = l->read_pos + 1;
                break;
            }
        }
        if (l->read_pos == l->published) l->roll_from = l->published + 1; /* a new roll */
        l->step_rc = MS_OK;
        rc = store_log_entry(l->r, l->read_pos + 1, &l->commit_time, add_item, l, &found, e);
        if (rc == MS_OK && l->step_rc) {
            rc = l->step_rc;
            *e = l->step_err;
        }
        if (rc || !found) break;
        if (l->read_pos == l->published) l->roll_first_time = l->commit_time;
        l->roll_last_time = l->commit_time;
        l->read_pos++;
        (*read)++;
    }
    l->caught_up = l->read_pos >= end;
    store_read_end(l->r);
    l->r = NULL;
    return rc;
}

/* Is the log's last entry a commit of this store (same position, same commit time)? */
static bool history_check(sink_lake *l, const lake_entry *last, ms_err *e)
{
    store_read *r;
    if (store_read_begin(l->o.store, &r, e) != MS_OK) return false;
    int64_t t = 0;
    bool found = false;
    ms_code rc = store_log_entry(r, last->to, &t, NULL, NULL, &found, e);
    store_read_end(r);
    if (rc) return false;
    if (found && t == last->commit_time_us) return true;
    ms_fail(e, MS_ECONFLICT,
            "lake: %s holds commit %llu of another history than this store's (%s); a store restored from an older "
            "copy? not writing over it",
            l->dir, (unsigned long long)last->to, found ? "its commit time differs" : "the store ends before it");
    return false;
}

static void nap(sink_lake *l, double seconds)
{
    for (double t = 0; t < seconds && !atomic_load(&l->stop); t += 0.05)
        usleep(50000);
}

static void *lake_main(void *arg)
{
    sink_lake *l = arg;
    pthread_setname_np(pthread_self(), "ms-sink-lake");
    while (!atomic_load(&l->stop)) {
        ms_err e = {0};
        if (l->check_history) { /* nothing is written over a lake of another history */
            if (!history_check(l, &l->last_logged, &e)) {
                set_failing(l, &e);
                nap(l, HISTORY_RETRY_S);
                continue;
            }
            lake_entry_free(&l->last_logged);
            l->check_history = false;
        }
        if (l->has_unfinished) { /* a roll in the log whose files are not all in place */
            if (finish_entry(l, &l->unfinished, &e) != MS_OK) {
                set_failing(l, &e);
                nap(l, RETRY_S);
                continue;
            }
            lake_entry_free(&l->unfinished);
            l->has_unfinished = false;
        }
        uint64_t read = 0;
        ms_code rc = step(l, &read, &e);
        if (rc == MS_OK && l->erasure_at)
            rc = erase_from_lake(l, &e);
        else if (rc == MS_OK && roll_due(l, false))
            rc = publish(l, &e);
        if (rc) {
            l->erasure_at = 0;
            if (!l->has_unfinished) roll_abort(l);
            set_failing(l, &e);
            nap(l, RETRY_S);
            continue;
        }
        set_ok(l);
        if (!read) usleep(IDLE_US);
    }
    /* stopping: publish what is in hand, so that a clean stop leaves no lag */
    ms_err e = {0};
    if (!l->check_history && !l->has_unfinished && roll_due(l, true) && publish(l, &e) != MS_OK)
        ms_log(LOG_WARN, "lake.stop", "lake: the last roll was not published (%s); the next start writes it", e.msg);
    roll_abort(l);
    return NULL;
}

/* ---- /metrics and /healthz ---- */

static void lake_metrics(void *ctx, buf *out)
{
    sink_lake *l = ctx;
    metrics_gauge(out, "medstream_lake_up", "1 while the lake sink writes (0: failing, see /healthz).",
                  atomic_load(&l->state) == LAKE_OK);
    buf_printf(out,
               "# HELP medstream_lake_lag_seconds Age of the oldest commit not yet in a published lake file.\n"
               "# TYPE medstream_lake_lag_seconds gauge\nmedstream_lake_lag_seconds %.3f\n",
               (double)atomic_load(&l->lag_us) / 1e6);
    metrics_gauge(out, "medstream_lake_position", "The commit-log position the lake's published files hold up to.",
                  atomic_load(&l->position));
    metrics_gauge(out, "medstream_lake_lag_commits", "Commits in the store not yet in a published lake file.",
                  atomic_load(&l->lag_commits));
    metrics_counter(out, "medstream_lake_files_total", "Parquet files published to the lake.",
                    atomic_load(&l->files_total));
    metrics_counter(out, "medstream_lake_rows_total", "Rows (record versions and tombstones) published to the lake.",
                    atomic_load(&l->rows_total));
    metrics_counter(out, "medstream_lake_rolls_total", "Rolls published (one commits-log line each).",
                    atomic_load(&l->rolls_total));
    metrics_counter(out, "medstream_lake_failures_total", "Steps or rolls that failed and were retried.",
                    atomic_load(&l->failures_total));
    metrics_histogram(out, "medstream_lake_publish_seconds",
                      "Publishing one roll: finish and sync its files, log line, renames.", &l->publish_seconds);
}

/* Degraded while failing, or while the oldest unpublished commit is older than twice the roll interval and
 * 10 s (behind: rolls cannot keep up). */
static bool lake_health(void *ctx, buf *out)
{
    sink_lake *l = ctx;
    int st = atomic_load(&l->state);
    uint64_t lag_us = atomic_load(&l->lag_us);
    bool behind = st == LAKE_OK && lag_us > (l->o.roll_seconds * 2 + 10) * 1000000u;
    buf_printf(out, ",\"lake\":\"%s\",\"lake_lag_commits\":%llu,\"lake_lag_seconds\":%.3f",
               st == LAKE_FAILING ? "failing"
               : behind           ? "behind"
                                  : "ok",
               (unsigned long long)atomic_load(&l->lag_commits), (double)lag_us / 1e6);
    if (st == LAKE_FAILING) {
        pthread_mutex_lock(&l->err_lock);
        buf_puts(out, ",\"lake_error\":");
        jw_cstr(out, l->error);
        pthread_mutex_unlock(&l->err_lock);
    }
    return st == LAKE_OK && !behind;
}

/* ---- start: open, lock, check the store, recover ---- */

/* The store the lake belongs to: a hash of its secret id key and its node id, in _medstream/store (written
 * once). The nodes of one cluster share the id key (the cluster key), and the lake's commits log is one
 * store's positions, so the node id is part of it; a file from before node ids ("store HASH") is the one
 * store of that id key's, kept as it is. */
static ms_code check_store(sink_lake *l, ms_err *e)
{
    unsigned char h[32];
    unsigned int hl = 32;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) ms_oom();
    EVP_DigestUpdate(c, "medstream lake\0", 15);
    EVP_DigestUpdate(c, store_id_key(l->o.store), 32);
    EVP_DigestFinal_ex(c, h, &hl);
    EVP_MD_CTX_free(c);
    char hex[65], node[2 * STORE_NODE_ID + 1], want[120], legacy[80];
    out_hex(h, 16, hex);
    out_hex(store_node_id(l->o.store), STORE_NODE_ID, node);
    snprintf(want, sizeof want, "store %s node %s\n", hex, node);
    snprintf(legacy, sizeof legacy, "store %s\n", hex);
    char *path = path_join(l->meta, "store");
    buf have = {0};
    ms_err ignored;
    ms_code rc = MS_OK;
    if (buf_read_file(&have, path, &ignored) == MS_OK) {
        const char *text = have.data ? have.data : "";
        if (strcmp(text, want) != 0 && strcmp(text, legacy) != 0)
            rc = ms_fail(e, MS_ECONFLICT,
                         "lake: %s belongs to another store (or another node of its cluster: %s differs); give --lake "
                         "another directory",
                         l->dir, path);
    } else {
        out_file *f;
        rc = out_open(&f, l->meta, "store", 0644, e);
        if (rc == MS_OK) rc = out_write(f, want, strlen(want), e);
        if (rc == MS_OK)
            rc = out_finish(f, NULL, e);
        else
            out_abort(f);
    }
    buf_free(&have);
    free(path);
    return rc;
}

/* The end of the commits log: its last LOG_TAIL bytes from a line start (the log grows a line per roll
 * forever; only its last entry matters to a start). *base: the offset of text in the file. */
static ms_code read_log_tail(sink_lake *l, buf *text, size_t *base, ms_err *e)
{
    struct stat st;
    if (fstat(l->log_fd, &st) != 0) return out_errno(e, errno, "reading", l->log_path);
    size_t size = (size_t)st.st_size, from = size > LOG_TAIL ? size - LOG_TAIL : 0;
    buf_reserve(text, size - from);
    size_t got;
    int err = ms_read_full(l->log_fd, text->data, size - from, (off_t)from, &got);
    if (err) return out_errno(e, err, "reading", l->log_path);
    text->len = got;
    *base = from;
    if (from > 0) { /* skip the partial line the tail starts in */
        const char *nl = memchr(text->data, '\n', text->len);
        size_t skip = nl ? (size_t)(nl - text->data) + 1 : text->len;
        memmove(text->data, text->data + skip, text->len - skip);
        text->len -= skip;
        *base += skip;
    }
    return MS_OK;
}

static ms_code recover(sink_lake *l, uint64_t *log_to, ms_err *e)
{
    buf text = {0};
    size_t base = 0;
    ms_code rc = MS_OK;
    l->log_fd = open(l->log_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (l->log_fd < 0) return out_errno(e, errno, "opening", l->log_path);
    /* the lake's own directories and the log's name durable before a line is trusted to it */
    if ((rc = out_fsync_dir(l->dir, e)) || (rc = out_fsync_dir(l->meta, e))) return rc;
    if ((rc = read_log_tail(l, &text, &base, e))) {
        buf_free(&text);
        return rc;
    }
    lake_log_state ls;
    rc = lake_log_read(text.data ? text.data : "", text.len, &ls, e);
    ls.valid_len += base;
    buf_free(&text);
    if (rc) {
        char why[sizeof e->msg];
        snprintf(why, sizeof why, "%s", e->msg);
        return ms_fail(e, rc, "lake: %s: %s", l->log_path, why);
    }
    if (ls.torn) {
        ms_log(LOG_WARN, "lake.torn_line", "lake: cutting a torn last line off %s (a roll that was never published)",
               l->log_path);
        if (ftruncate(l->log_fd, (off_t)ls.valid_len) != 0 || fdatasync(l->log_fd) != 0) {
            lake_log_state_free(&ls);
            return out_errno(e, errno, "cutting back", l->log_path);
        }
    }
    l->log_size = ls.valid_len;
    char **names = NULL;
    size_t nnames = 0;
    rc = list_tmp(l, &names, &nnames, e);
    lake_plan plan = {0};
    if (rc == MS_OK)
        rc = lake_recovery_plan(ls.entries ? &ls.last : NULL, (const char *const *)names, nnames, file_exists, l, &plan,
                                e);
    for (size_t i = 0; rc == MS_OK && i < plan.nremove; i++) {
        char *p = path_join(l->tmp, plan.remove[i]);
        if (unlink(p) != 0 && errno != ENOENT) rc = out_errno(e, errno, "removing", p);
        free(p);
    }
    if (rc == MS_OK && plan.nrename) {
        ms_log(LOG_INFO, "lake.recovery", "lake: finishing the last roll of %s (%zu files)", l->log_path, plan.nrename);
        rc = finish_entry(l, &ls.last, e);
    }
    if (rc == MS_OK && plan.nremove) rc = out_fsync_dir(l->tmp, e);
    lake_plan_free(&plan);
    free_names(names, nnames);
    *log_to = ls.entries ? ls.last.to : 0;
    if (rc == MS_OK && ls.entries) { /* checked against the store by the thread, before it writes */
        l->last_logged = ls.last;
        l->check_history = true;
        ls.last = (lake_entry){0};
    }
    lake_log_state_free(&ls);
    return rc;
}

static void lake_free(sink_lake *l)
{
    roll_abort(l);
    free(l->parts);
    lake_entry_free(&l->unfinished);
    lake_entry_free(&l->last_logged);
    lake_entry_free(&l->rewritten);
    row_builder_free(&l->rb);
    buf_free(&l->part_path);
    buf_free(&l->scratch);
    if (l->log_fd >= 0) close(l->log_fd);
    if (l->lock_fd >= 0) close(l->lock_fd); /* releases the lock */
    pthread_mutex_destroy(&l->err_lock);
    free(l->dir);
    free(l->meta);
    free(l->tmp);
    free(l->log_path);
    if (l->have_old) schema_free(&l->old_schema);
    free(l);
}

ms_code sink_lake_start(sink_lake **out, const sink_lake_options *o, ms_err *e)
{
    sink_lake *l = ms_calloc(1, sizeof *l);
    l->o = *o;
    l->lock_fd = l->log_fd = -1;
    pthread_mutex_init(&l->err_lock, NULL);
    size_t n = strlen(o->dir);
    while (n > 1 && o->dir[n - 1] == '/')
        n--;
    l->dir = ms_strndup(o->dir, n);
    l->o.dir = l->dir;
    l->meta = path_join(l->dir, "_medstream");
    l->tmp = path_join(l->meta, "tmp");
    l->log_path = path_join(l->meta, "commits");
    rows_record_columns(o->schema, EXPORT_PUBLIC, &l->rcols);
    ms_code rc = reproject_schema_in_force(o->store, &l->old_schema, &l->old_sv, &l->have_old, e);
    if (rc == MS_OK && l->have_old) rows_record_columns(&l->old_schema, EXPORT_PUBLIC, &l->old_rcols);
    l->dcols.n = 3;
    l->dcols.col[0] = (export_column){"patient_id", PQ_STRING, false, true, COL_PATIENT_ID, NULL};
    l->dcols.col[1] = (export_column){"record_id", PQ_STRING, false, false, COL_RECORD_ID, NULL};
    l->dcols.col[2] = (export_column){"version", PQ_INT64, false, false, COL_VERSION, NULL};

    if (rc == MS_OK) rc = out_mkdirs(l->tmp, e);
    char *lock = path_join(l->meta, "lock");
    if (rc == MS_OK) {
        l->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (l->lock_fd < 0)
            rc = out_errno(e, errno, "opening", lock);
        else if (flock(l->lock_fd, LOCK_EX | LOCK_NB) != 0)
            rc = errno == EWOULDBLOCK ? ms_fail(e, MS_ECONFLICT, "lake: %s is in use by another medstream", l->dir)
                                      : out_errno(e, errno, "locking", lock);
    }
    free(lock);
    if (rc == MS_OK) rc = check_store(l, e);
    uint64_t log_to = 0, store_pos = 0;
    if (rc == MS_OK) rc = recover(l, &log_to, e);
    if (rc == MS_OK) rc = lake_added_recover(l, e);
    if (rc == MS_OK) {
        store_read *r;
        rc = store_read_begin(o->store, &r, e);
        if (rc == MS_OK) {
            rc = store_sink_position(r, SINK_NAME, &store_pos, e);
            l->published = l->read_pos = log_to > store_pos ? log_to : store_pos;
            note_lag(l, r);
            store_read_end(r);
        }
    }
    if (rc) {
        lake_free(l);
        return rc;
    }
    l->published = l->read_pos = log_to > store_pos ? log_to : store_pos;
    atomic_store(&l->state, LAKE_OK);
    const char *crash = getenv("MEDSTREAM_TEST_LAKE_CRASH"); /* after the recovery: it never crashes that */
    l->crash_at = !crash                     ? CRASH_NONE
                  : !strcmp(crash, "files")  ? CRASH_FILES
                  : !strcmp(crash, "log")    ? CRASH_LOG
                  : !strcmp(crash, "rename") ? CRASH_RENAME
                  : !strcmp(crash, "erase")  ? CRASH_ERASE
                  : !strcmp(crash, "erase_added") ? CRASH_ERASE_ADDED
                                                  : CRASH_NONE;
    if (pthread_create(&l->thread, NULL, lake_main, l) != 0) {
        lake_free(l);
        return ms_fail(e, MS_EIO, "lake: cannot start the sink thread");
    }
    subsystem_register(&(subsystem){"lake", lake_metrics, lake_health, l});
    ms_log(LOG_INFO, "lake.started", "lake: writing %s from commit %llu", l->dir, (unsigned long long)l->published + 1);
    *out = l;
    return MS_OK;
}

void sink_lake_stop(sink_lake *l)
{
    if (!l) return;
    subsystem_unregister(l);
    atomic_store(&l->stop, true);
    pthread_join(l->thread, NULL);
    lake_free(l);
}

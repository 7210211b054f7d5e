/*
 * import.c - one file's import: the reader, the workers, the committer and the progress loop (see
 * import.h for the guarantees and the order; to_store.c and to_server.c are the destinations).
 *
 * DESIGN: a ring of nslots batches (the workers' plus IMPORT_SLOTS_EXTRA), each slot going FREE ->
 * FILLED (reader) -> WORKING -> WORKED or FAILED (a worker) -> FREE (the committer, in file order), all
 * under one mutex and condition variable; a slot's buffers are kept from one batch to the next, so a
 * long import allocates its bodies once. Rows are placed in a batch's body at the body line that keeps
 * their distance from the batch's first row (blank lines, rows rejected before scanning and the extra
 * lines of a CSV record become empty lines), so that body line L is file line first_line + L - 1 for
 * the scanner and for a server alike (record_scan.h, scan_config.origin_line). A row that would sit more
 * than GAP_LINES_MAX lines past the body's last line (a stretch of blank lines before it) starts the next
 * batch instead, on its body line 1 with first_line its own line: the empty lines of a body stay few
 * whatever the file (70 Mi blank lines in a 70 KB .gz made a body of 70 MiB: a server's 413 on every
 * rerun, and 70 MiB held offline, where up to 2^30 lines a slot could be), and a row's line, so the
 * record id derived from it, is the same in whatever batch it lands. (A blank line of spaces, however
 * long, is one newline in the body: the gap is counted in lines and needs no limit in bytes.)
 *
 * The thread that calls import_file draws the progress and turns *stop into a stop at the next batch
 * boundary: the reader stops cutting, the workers stop taking batches, the committer commits no more
 * (a server's acknowledged batches are still counted) and records the exact position last.
 *
 * What it must never do: count or checkpoint a batch before the ones before it, or fill a batch's body
 * with the file's blank lines (at most GAP_LINES_MAX empty lines between two rows).
 */
#include "import/import.h"

#include "import/import_internal.h"

#include "ingest/ingest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BODY_LINES_MAX ((uint64_t)1 << 30) /* a batch's rows lie within this many lines (body_line is 32-bit) */
#define GAP_LINES_MAX 4096 /* a row that would sit more lines than this past the body's last starts a new batch */

#define BAR_EVERY_S 0.2 /* a terminal's bar is redrawn this often */

/* ---- formats ---- */

const char *import_format_name(import_format f) { return f == IMPORT_CSV ? "csv" : "ndjson"; }

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

bool import_format_of(const char *path, import_format *out)
{
    size_t n = strlen(path);
    if (ends_with(path, n, ".gz"))
        n -= 3;
    else if (ends_with(path, n, ".zst"))
        n -= 4;
    if (ends_with(path, n, ".ndjson") || ends_with(path, n, ".jsonl") || ends_with(path, n, ".json")) {
        *out = IMPORT_NDJSON;
        return true;
    }
    if (ends_with(path, n, ".csv")) {
        *out = IMPORT_CSV;
        return true;
    }
    return false;
}

/* ---- batches ---- */

static void batch_reset(import_run *run, import_batch *b)
{
    if (run->target->reset) run->target->reset(b);
    arena_free(&b->mem);
    b->nrows = 0;
    b->body_len = 0;
    b->body_lines = 1;
    b->first_line = 0;
    b->stream_bytes = 0;
    memset(&b->err, 0, sizeof b->err);
}

static void batch_free(import_run *run, import_batch *b)
{
    batch_reset(run, b);
    free(b->body);
    free(b->rows);
}

/* Room for extra more bytes in the body, and its zero padding to 4 KiB (ingest.h, step 2). */
static void body_reserve(import_batch *b, size_t extra)
{
    size_t need = ingest_padded_len(b->body_len + extra);
    if (need <= b->body_cap) return;
    size_t cap = b->body_cap ? b->body_cap * 2 : (size_t)1 << 20;
    while (cap < need)
        cap *= 2;
    char *body;
    if (posix_memalign((void **)&body, STORE_BODY_ALIGN, cap) != 0) ms_oom();
    if (b->body_len) memcpy(body, b->body, b->body_len);
    free(b->body);
    b->body = body;
    b->body_cap = cap;
}

#define RAW_KEEP ((size_t)64 << 10) /* of a row, the bytes the reject file shows at most */

/* The row's bytes for the reject file, kept in the batch's arena. */
static void keep_raw(import_batch *b, batch_row *r, const char *text, size_t len, bool cut)
{
    size_t n = len < RAW_KEEP ? len : RAW_KEEP;
    r->raw = arena_strndup(&b->mem, text, n);
    r->raw_len = (uint32_t)n;
    r->raw_cut = cut || n < len;
}

/* Place a row in the batch at its body line: its text (NDJSON), the record object it makes (CSV) or its
 * CSV text after the header (--url); a row too long to hold, or refused by the CSV reader, is rejected
 * already and takes no line. */
static void batch_add_row(import_run *run, import_batch *b, const import_row *row)
{
    if (b->nrows == b->rows_cap) {
        b->rows_cap = b->rows_cap ? b->rows_cap * 2 : 1024;
        b->rows = ms_realloc(b->rows, sizeof *b->rows * b->rows_cap);
    }
    batch_row *r = &b->rows[b->nrows++];
    memset(r, 0, sizeof *r);
    if (b->nrows == 1) {
        b->first_line = row->line;
        b->body_lines = 1;
        if (run->csv_raw) { /* the header first: the server reads the rows after it */
            size_t hl;
            const char *header = row_reader_csv_header_text(run->reader, &hl);
            uint64_t header_lines = row_reader_csv_header(run->reader)->lines;
            body_reserve(b, hl);
            memcpy(b->body, header, hl);
            b->body_len = hl;
            b->first_line = row->line - header_lines;
            b->body_lines = header_lines + 1;
        }
    }
    uint64_t at_line = row->line - b->first_line + 1;
    r->body_line = (uint32_t)at_line;
    r->line = row->line;
    r->offset = row->offset;
    r->full_len = row->full_len;
    r->csv_column = row->column;
    b->stream_bytes += row->full_len;
    b->end_offset = row->end;
    b->end_line = row->line + row->lines;
    if (row->error || row->cut) { /* refused by the CSV reader, or too long to hold: never scanned or sent */
        r->outcome = ROW_REJECTED;
        r->error = row->error ? arena_strndup(&b->mem, row->error, strlen(row->error))
                              : arena_printf(&b->mem, "record too large (%zu bytes; the limit is %zu)", row->full_len,
                                             run->opt->max_record);
        keep_raw(b, r, row->text, row->len, row->cut);
        return;
    }
    const char *text = row->text;
    size_t len = row->len, lines = 1;
    if (run->format == IMPORT_CSV) {
        keep_raw(b, r, row->text, row->len, false); /* the body holds the object, or the server's copy */
        if (!run->csv_raw) {
            text = row->json;
            len = row->json_len;
        } else {
            lines = row->lines;
        }
    }
    size_t gap = (size_t)(at_line - b->body_lines);
    body_reserve(b, gap + len + 1);
    memset(b->body + b->body_len, '\n', gap);
    b->body_len += gap;
    r->body_off = (uint32_t)b->body_len;
    r->body_len = (uint32_t)len;
    memcpy(b->body + b->body_len, text, len);
    b->body_len += len;
    b->body[b->body_len++] = '\n';
    b->body_lines = at_line + lines;
}

/* ---- the pipeline ---- */

static void fail_run(import_run *run, const ms_err *e)
{
    pthread_mutex_lock(&run->mu);
    if (!run->failed) {
        run->failed = true;
        run->error = *e;
    }
    run->stopping = true;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
}

static bool stop_asked(const import_run *run) { return run->opt->stop && atomic_load(run->opt->stop); }

/* The reader: cuts the stream into batches, in order, into free slots. */
static void *reader_main(void *arg)
{
    import_run *run = arg;
    const import_options *o = run->opt;
    import_row row;
    bool have = false, eof = false;
    ms_err e = {0};
    for (uint64_t seq = 0; !eof; seq++) {
        import_batch *b = &run->slots[seq % run->nslots];
        pthread_mutex_lock(&run->mu);
        while (b->state != SLOT_FREE && !run->stopping)
            pthread_cond_wait(&run->cv, &run->mu);
        bool stop = run->stopping;
        pthread_mutex_unlock(&run->mu);
        if (stop) break;
        batch_reset(run, b);
        for (;;) {
            if (!have) {
                if (row_reader_next(run->reader, &row, &eof, &e) != MS_OK) {
                    fail_run(run, &e);
                    goto out;
                }
                if (eof) break;
                have = true;
            }
            /* a row far from the one before it (blank lines between: their newlines would fill the body)
             * starts the next batch, where it sits on body line 1 and first_line names its file line */
            if (b->nrows && (row.line - b->first_line >= BODY_LINES_MAX ||
                             row.line - b->first_line + 1 - b->body_lines > GAP_LINES_MAX))
                break;
            batch_add_row(run, b, &row);
            have = false;
            if (b->nrows >= o->batch_rows || b->body_len >= o->batch_bytes || stop_asked(run)) break;
        }
        if (b->nrows == 0) break;
        b->replay = b->rows[0].offset < run->replay_until;
        memset(b->body + b->body_len, 0, ingest_padded_len(b->body_len) - b->body_len);
        b->file_pos = import_input_file_pos(run->in);
        pthread_mutex_lock(&run->mu);
        b->seq = seq;
        b->state = SLOT_FILLED;
        run->batches_read = seq + 1;
        pthread_cond_broadcast(&run->cv);
        pthread_mutex_unlock(&run->mu);
    }
out:
    pthread_mutex_lock(&run->mu);
    run->reader_done = true;
    if (eof) {
        run->reader_eof = true;
        run->final_offset = row_reader_offset(run->reader);
        run->final_line = row_reader_line(run->reader);
    }
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
    return NULL;
}

typedef struct {
    import_run *run;
    unsigned index;
} worker_arg;

/* A worker: the lowest filled batch, through the target's work. */
static void *worker_main(void *arg)
{
    worker_arg *w = arg;
    import_run *run = w->run;
    pthread_mutex_lock(&run->mu);
    for (;;) {
        import_batch *pick = NULL;
        for (;;) {
            for (unsigned i = 0; i < run->nslots && !run->stopping; i++)
                if (run->slots[i].state == SLOT_FILLED && (!pick || run->slots[i].seq < pick->seq))
                    pick = &run->slots[i];
            if (pick) break;
            if (run->stopping || run->reader_done) {
                pthread_mutex_unlock(&run->mu);
                return NULL;
            }
            pthread_cond_wait(&run->cv, &run->mu);
        }
        pick->state = SLOT_WORKING;
        pthread_mutex_unlock(&run->mu);
        ms_err e = {0};
        ms_code rc = run->target->work(run, w->index, pick, &e);
        pthread_mutex_lock(&run->mu);
        pick->err = e;
        if (rc == MS_ESTOPPED && run->stopping)
            pick->state = SLOT_FILLED; /* left undone: nobody takes it again, the committer ends before it */
        else
            pick->state = rc == MS_OK ? SLOT_WORKED : SLOT_FAILED;
        pthread_cond_broadcast(&run->cv);
    }
}

/* Write the batch's rows rejected so far that are not in the reject file yet, synced; *n: how many. */
static ms_code report_rejects(import_run *run, import_batch *b, uint64_t *n, ms_err *e)
{
    char column[128];
    *n = 0;
    for (uint32_t i = 0; i < b->nrows; i++) {
        batch_row *r = &b->rows[i];
        if (r->outcome != ROW_REJECTED || r->reported) continue;
        const char *why = r->error ? r->error : "rejected";
        const char *text = reason_text(why);
        size_t len;
        const char *raw = import_row_text(b, r, &len);
        bool named = reason_column(text, column, sizeof column);
        if (run->format == IMPORT_CSV) { /* the column as the header names it */
            const csv_header *h = row_reader_csv_header(run->reader);
            const char *name =
                r->csv_column >= 1 && r->csv_column <= h->ncolumns ? h->columns[r->csv_column - 1].name : NULL;
            for (uint32_t k = 0; !name && named && k < h->ncolumns; k++) /* a field the scanner named */
                if (!strcmp(h->columns[k].field, column)) name = h->columns[k].name;
            if (name) {
                snprintf(column, sizeof column, "%s", name);
                named = true;
            }
        }
        rejects_add(run->rejects, r->line, r->offset, named ? column : NULL, text, raw, len, r->raw_cut);
        reason_table_add(&run->reasons, why, 1);
        r->reported = true;
        ++*n;
    }
    return rejects_flush(run->rejects, true, e);
}

/* One batch, in file order: its rejects known so far written and synced, then its commit carrying the
 * position after it (offline), then the rejects only the commit knew (the writer's refusals), then its
 * rows counted and the position moved past it (--url: the checkpoint file). */
static ms_code commit_batch(import_run *run, import_batch *b, ms_err *e)
{
    uint64_t before = 0, after = 0;
    ms_code rc = report_rejects(run, b, &before, e);
    if (rc != MS_OK) return rc;
    import_position next = run->pos;
    next.rows += b->nrows;
    next.rejected += before;
    next.offset = b->end_offset;
    next.line = b->end_line;
    next.rejects_bytes = rejects_bytes(run->rejects);
    next.done = false;
    next.replay_until = run->replay_until;
    if (run->target->commit && (rc = run->target->commit(run, b, &next, e)) != MS_OK) return rc;
    if ((rc = report_rejects(run, b, &after, e)) != MS_OK) return rc;
    next.rejected += after;
    next.rejects_bytes = rejects_bytes(run->rejects);
    import_counts *c = &run->counts;
    for (uint32_t i = 0; i < b->nrows; i++) {
        switch (b->rows[i].outcome) {
        case ROW_CREATED: c->created++; break;
        case ROW_UPDATED: c->updated++; break;
        case ROW_DUPLICATE: c->duplicate++; break;
        case ROW_VALID: c->valid++; break;
        case ROW_REJECTED: c->rejected++; break;
        }
    }
    c->rows += b->nrows;
    run->pos = next;
    return run->target->save ? run->target->save(run, &next, false, e) : MS_OK;
}

/* The committer: batches in file order through the target's commit, then counted (complete). */
static void *committer_main(void *arg)
{
    import_run *run = arg;
    const import_target *t = run->target;
    ms_err e = {0};
    uint64_t next = 0;
    pthread_mutex_lock(&run->mu);
    for (;; next++) {
        import_batch *b = &run->slots[next % run->nslots]; /* not FREE: it is batch `next` */
        for (;;) {
            if (b->state == SLOT_WORKED || b->state == SLOT_FAILED) break;
            if (run->reader_done && next == run->batches_read) goto finish;
            /* stopping: a store commits no more; a server's batch in flight is counted once answered */
            if (run->stopping && (t->commit || b->state != SLOT_WORKING)) goto finish;
            pthread_cond_wait(&run->cv, &run->mu);
        }
        if (b->state == SLOT_FAILED) {
            e = b->err;
            pthread_mutex_unlock(&run->mu);
            fail_run(run, &e);
            pthread_mutex_lock(&run->mu);
            goto finish;
        }
        if (run->stopping && t->commit) goto finish;
        pthread_mutex_unlock(&run->mu);
        ms_code rc = commit_batch(run, b, &e);
        pthread_mutex_lock(&run->mu);
        if (rc != MS_OK) {
            pthread_mutex_unlock(&run->mu);
            fail_run(run, &e);
            pthread_mutex_lock(&run->mu);
            goto finish;
        }
        run->file_done = b->file_pos;
        run->stream_bytes += b->stream_bytes;
        b->state = SLOT_FREE;
        if (run->pos.rejected > run->opt->max_rejects && !run->stopping) {
            run->outcome = IMPORT_TOO_MANY;
            run->stopping = true;
        }
        pthread_cond_broadcast(&run->cv);
    }
finish:;
    bool done = !run->failed && run->reader_eof && next == run->batches_read;
    if (done && run->outcome == IMPORT_INTERRUPTED) run->outcome = IMPORT_DONE; /* nothing was left to stop */
    run->stopping = true;                                                       /* the reader and the workers end */
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
    if (done) {
        run->pos.offset = run->final_offset;
        run->pos.line = run->final_line;
        run->pos.done = true;
        run->file_done = import_input_file_size(run->in);
    }
    if (t->save && t->save(run, &run->pos, true, &e) != MS_OK) fail_run(run, &e);
    pthread_mutex_lock(&run->mu);
    run->committer_done = true;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
    return NULL;
}

/* ---- progress ---- */

static int terminal_columns(FILE *f)
{
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
    return 100;
}

static void draw(import_run *run, progress_mode mode, const progress_view *v, bool last)
{
    buf line = {0};
    if (mode == PROGRESS_BAR) {
        buf_puts(&line, "\r");
        progress_bar(&line, v, terminal_columns(run->opt->err));
        buf_puts(&line, "\033[K");
        if (last) buf_putc(&line, '\n');
    } else {
        progress_line(&line, v);
    }
    fputs(line.data, run->opt->err);
    fflush(run->opt->err);
    buf_free(&line);
}

/* ---- the summary ---- */

static void print_summary(import_run *run, const import_position *start, double elapsed)
{
    const import_options *o = run->opt;
    const import_counts *c = &run->counts;
    buf s = {0};
    char a[32], b2[32], c2[32], d[32], f[32];
    buf_printf(&s, "import %s (%s, %s, import id %s): ", run->path, import_format_name(run->format),
               input_compression_name(import_input_compression(run->in)), run->short_id);
    format_count(a, sizeof a, run->pos.line);
    switch (run->outcome) {
    case IMPORT_DONE: buf_puts(&s, o->dry_run ? "checked\n" : "done\n"); break;
    case IMPORT_INTERRUPTED: buf_printf(&s, "interrupted before line %s; run it again to continue\n", a); break;
    case IMPORT_TOO_MANY:
        format_count(b2, sizeof b2, run->pos.rejected);
        buf_printf(&s, "stopped before line %s: %s rows rejected, more than --max-rejects allows\n", a, b2);
        break;
    case IMPORT_FAILED:
        buf_printf(&s, "stopped before line %s: %s\n  (run it again to continue from there)\n", a, run->error.msg);
        break;
    }
    format_count(a, sizeof a, c->rows);
    buf_printf(&s, "  rows read      %s", a);
    if (start->offset > 0) {
        format_count(b2, sizeof b2, start->line);
        format_count(c2, sizeof c2, start->rows);
        buf_printf(&s, " (resumed at line %s; %s rows read before it)", b2, c2);
    }
    buf_putc(&s, '\n');
    format_count(d, sizeof d, c->rejected);
    if (o->dry_run) {
        format_count(a, sizeof a, c->valid);
        buf_printf(&s, "  dry run        valid %s, rejected %s; nothing stored\n", a, d);
    } else if (o->kafka_brokers) {
        format_count(a, sizeof a, c->valid);
        buf_printf(&s, "  sent %s to Kafka topic %s (acknowledged), rejected %s\n", a, o->kafka_topic, d);
    } else {
        format_count(a, sizeof a, c->created);
        format_count(b2, sizeof b2, c->updated);
        format_count(c2, sizeof c2, c->duplicate);
        buf_printf(&s, "  created %s, updated %s, duplicate %s, rejected %s\n", a, b2, c2, d);
    }
    double t = elapsed > 0.001 ? elapsed : 0.001;
    format_duration(a, sizeof a, elapsed);
    format_count(b2, sizeof b2, (uint64_t)((double)c->rows * 60.0 / t));
    format_size(c2, sizeof c2, (uint64_t)((double)run->stream_bytes / t));
    format_size(f, sizeof f, run->stream_bytes);
    buf_printf(&s, "  elapsed %s, %s rows/min, %s/s (%s of rows)\n", a, b2, c2, f);
    if (c->rejected) {
        buf_puts(&s, "  rejected rows by reason:\n");
        reason_table_print(&s, &run->reasons, 10);
    }
    if (rejects_bytes(run->rejects))
        buf_printf(&s, "  rejected rows are in %s (it holds PHI: mode 0600)\n", rejects_path(run->rejects));
    fputs(s.data, o->out);
    fflush(o->out);
    buf_free(&s);
}

/* ---- one file ---- */

static void hex16(const unsigned char *id, char out[17])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++)
        out[2 * i] = digits[id[i] >> 4], out[2 * i + 1] = digits[id[i] & 15];
    out[16] = 0;
}

/* Where the reader starts: after the header (CSV), then at the checkpoint. */
static ms_code start_reading(import_run *run, const import_position *p, ms_err *e)
{
    if (run->format == IMPORT_CSV) {
        run->reader = row_reader_new_csv(run->in, run->opt->schema, run->opt->max_record);
        run->csv_raw = run->opt->url && !run->opt->dry_run;
        ms_code rc = row_reader_csv_start(run->reader, e); /* the caller names the file */
        if (rc != MS_OK) return rc;
        if (p->offset > row_reader_offset(run->reader)) return row_reader_seek(run->reader, p->offset, p->line, e);
        return MS_OK;
    }
    /* a record at the limit with whitespace around it is still the scanner's to refuse, by its length */
    run->reader = row_reader_new(run->in, NULL, run->opt->max_record + 4096);
    if (p->offset > 0) return row_reader_seek(run->reader, p->offset, p->line, e);
    return MS_OK;
}

ms_code import_file(const import_options *o, const char *path, import_format format, import_result *res, ms_err *e)
{
    memset(res, 0, sizeof *res);
    import_run *run = ms_calloc(1, sizeof *run);
    run->opt = o;
    run->path = path;
    run->format = format;
    run->target = o->dry_run         ? &import_dry_run
                  : o->url           ? &import_to_server
                  : o->kafka_brokers ? &import_to_kafka
                                     : &import_to_store;
    run->outcome = IMPORT_DONE;
    pthread_mutex_init(&run->mu, NULL);
    pthread_cond_init(&run->cv, NULL);
    ms_code rc = import_input_open(&run->in, path, e);
    if (rc != MS_OK) goto early;
    import_source_name(import_input_identity(run->in), run->source);
    hex16(import_input_identity(run->in), run->short_id);
    snprintf(run->checkpoint_path, sizeof run->checkpoint_path, "%s", o->checkpoint_path ? o->checkpoint_path : path);
    if (!o->checkpoint_path) strncat(run->checkpoint_path, ".import-checkpoint", 64);

    /* where to start */
    import_position start = IMPORT_POSITION_START;
    bool found = false;
    if ((rc = run->target->load(run, &start, &found, e)) != MS_OK) goto early;
    if (found && o->restart) {
        fprintf(o->err, "import: %s: --restart: reading it from the start (rows stored before are duplicates)\n", path);
        start = IMPORT_POSITION_START;
        run->replay_until = IMPORT_REPLAY_ALL;
    } else if (found && start.done) {
        fprintf(o->err,
                "import: %s was imported completely before: reading it again from the start (every row "
                "should be a duplicate)\n",
                path);
        start = IMPORT_POSITION_START;
        run->replay_until = IMPORT_REPLAY_ALL;
    } else if (found && start.offset > 0) {
        char l[32], r[32];
        format_count(l, sizeof l, start.line);
        format_count(r, sizeof r, start.rows);
        fprintf(o->err, "import: %s: resuming at line %s (%s rows read before)\n", path, l, r);
        run->replay_until = start.replay_until; /* the rest of a file read again, or --url batches in flight */
    } else if (o->restart) {
        run->replay_until =
            IMPORT_REPLAY_ALL; /* no checkpoint (a --url one removed?): what was stored is a duplicate */
    }
    run->pos = start;
    run->pos.replay_until = run->replay_until;
    char rejects_file[4200];
    snprintf(rejects_file, sizeof rejects_file, "%s%s", o->rejects_path ? o->rejects_path : path,
             o->rejects_path ? "" : ".rejects.ndjson");
    bool short_file = false;
    if ((rc = rejects_open(&run->rejects, rejects_file, start.rejects_bytes, start.line, &short_file, e)) != MS_OK)
        goto early;
    if (short_file)
        fprintf(o->err,
                "import: %s is shorter than the checkpoint says: rejects of rows before line %llu are "
                "missing from it\n",
                rejects_file, (unsigned long long)start.line);
    run->pos.rejects_bytes = rejects_bytes(run->rejects);
    if ((rc = start_reading(run, &start, e)) != MS_OK) goto early;

    if (run->target->begin) run->target->begin(run);

    /* the threads */
    unsigned workers = o->parallel ? o->parallel : 1;
    run->nslots = workers + IMPORT_SLOTS_EXTRA;
    run->slots = ms_calloc(run->nslots, sizeof *run->slots);
    worker_arg *wargs = ms_calloc(workers, sizeof *wargs);
    pthread_t reader, committer, *worker_threads = ms_calloc(workers, sizeof *worker_threads);
    progress_mode mode = o->progress;
    if (mode == PROGRESS_AUTO) mode = isatty(fileno(o->err)) ? PROGRESS_BAR : PROGRESS_PLAIN;
    /* the file's bytes done before this run: none on a first run (the file position is past a CSV header's read
     * chunk by now), the checkpoint's offset in a plain file; in a compressed one, the file read to resume */
    uint64_t at_start = start.offset == 0                                  ? 0
                        : import_input_compression(run->in) == INPUT_PLAIN ? start.offset
                                                                           : import_input_file_pos(run->in);
    progress_view view = {.name = path, .file_total = import_input_file_size(run->in), .file_at_start = at_start};
    view.file_done = run->file_done = view.file_at_start;
    double t0 = ms_mono_s();
    unsigned started = 0;
    bool reader_ok = pthread_create(&reader, NULL, reader_main, run) == 0;
    for (; reader_ok && started < workers; started++) {
        wargs[started] = (worker_arg){run, started};
        if (pthread_create(&worker_threads[started], NULL, worker_main, &wargs[started]) != 0) break;
    }
    bool committer_ok = reader_ok && started == workers && pthread_create(&committer, NULL, committer_main, run) == 0;
    if (!committer_ok) {
        ms_err te;
        ms_fail(&te, MS_EIO, "import: cannot start its threads");
        fail_run(run, &te);
        pthread_mutex_lock(&run->mu);
        run->committer_done = true;
        pthread_mutex_unlock(&run->mu);
    }
    double every = mode == PROGRESS_BAR ? BAR_EVERY_S : o->progress_every_s, next_draw = t0 + every;
    pthread_mutex_lock(&run->mu);
    while (!run->committer_done) {
        struct timespec until = ms_deadline(CLOCK_REALTIME, 100);
        pthread_cond_timedwait(&run->cv, &run->mu, &until);
        if (stop_asked(run) && !run->stopping) {
            run->stopping = true;
            if (run->outcome == IMPORT_DONE) run->outcome = IMPORT_INTERRUPTED;
            pthread_cond_broadcast(&run->cv);
        }
        double now = ms_mono_s();
        if (mode != PROGRESS_NONE && now >= next_draw && !run->committer_done) {
            view.counts = run->counts;
            view.file_done = run->file_done;
            view.stream_bytes = run->stream_bytes;
            view.elapsed = now - t0;
            pthread_mutex_unlock(&run->mu);
            draw(run, mode, &view, false);
            pthread_mutex_lock(&run->mu);
            next_draw = now + every;
        }
    }
    pthread_mutex_unlock(&run->mu);
    if (reader_ok) pthread_join(reader, NULL);
    for (unsigned i = 0; i < started; i++)
        pthread_join(worker_threads[i], NULL);
    if (committer_ok) pthread_join(committer, NULL);
    double elapsed = ms_mono_s() - t0;
    if (run->failed) run->outcome = IMPORT_FAILED;
    if (run->outcome == IMPORT_DONE && stop_asked(run) && !run->pos.done) run->outcome = IMPORT_INTERRUPTED;
    if (mode != PROGRESS_NONE) {
        view.counts = run->counts;
        view.file_done = run->file_done;
        view.stream_bytes = run->stream_bytes;
        view.elapsed = elapsed;
        draw(run, mode, &view, true);
    }
    print_summary(run, &start, elapsed);
    res->outcome = run->outcome;
    res->counts = run->counts;
    res->elapsed = elapsed;
    rc = MS_OK;
    if (run->failed) {
        *e = run->error;
        rc = run->error.code ? run->error.code : MS_EIO;
    }
    for (unsigned i = 0; i < run->nslots; i++)
        batch_free(run, &run->slots[i]);
    free(run->slots);
    free(wargs);
    free(worker_threads);
    goto out;
early:
    res->outcome = IMPORT_FAILED;
out:
    if (run->target->close) run->target->close(run);
    row_reader_free(run->reader);
    rejects_close(run->rejects);
    import_input_close(run->in);
    pthread_mutex_destroy(&run->mu);
    pthread_cond_destroy(&run->cv);
    free(run);
    return rc;
}

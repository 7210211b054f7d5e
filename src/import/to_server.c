/*
 * to_server.c - the importer's destination over HTTP (--url URL --token T): batches POSTed to a running
 * server's /v1/records, the position kept in a checkpoint file beside the input. See import.h.
 *
 * DESIGN: one keep-alive connection per worker (--parallel of them); a worker first checks each NDJSON
 * row's structure as the server's scanner would (the record limit, one JSON object: record_scan_fields),
 * and blanks out the rows that fail, so that each line of the body the server sees is one complete object
 * and its line numbers are the file's (import_line); it then POSTs the body with the file's identity
 * (import_origin), so that the server names rows without a record id by file and line exactly as the
 * offline importer does. A CSV batch is sent as text/csv: the header row, then the batch's rows as they
 * are in the file at their lines (rows the local CSV reader refused, whose extent it had to guess, are
 * left out as empty lines and reported here), so that the server converts them with its own schema. The
 * committer counts batches in file order and rewrites the checkpoint file after each, so the file only
 * ever names a position every row before which the server has acknowledged. A batch sent again after a
 * crash finds its rows there: duplicates.
 *
 * FILE ORDER (README invariant 3): the server commits a batch once it has read and scanned its request,
 * so batches in flight together are stored in whichever order they get there, and a record's versions
 * with them (with --parallel 8 and one row a batch, 120 versions of one record were stored shuffled and
 * its current version was not the file's last). So the checks run in parallel, but a batch is sent only
 * once the one before it has been answered 200: `turn`, under the run's mutex and waited for on its
 * condition variable, so that a stop wakes a worker waiting for its turn. The turn passes as soon as the
 * 200 arrives (the batch is durable there), before its answer is read; a batch with nothing to send
 * passes it on; after a batch that failed none is sent (the committer, reaching the failure, stops the
 * run). A batch still waiting when the run stops is not sent and is left undone (MS_ESTOPPED: not
 * counted; the rerun sends it).
 *
 * The cost, measured (2026-12-03; 2 cores shared with other work, client and server on them): 200,000 CSV
 * rows of ~1 KiB (`medstream gen-import rows.csv --records 200000 --format csv --size 1024`) by
 * `medstream import rows.csv --url URL --token T --progress none` (--batch 1000, --parallel 2) into a
 * fresh server, the builds in turn, 5 rounds: medians 5.3 s before, 6.8 s now (2,282,000 -> 1,786,000
 * rows/min, 22% fewer); 5 rounds under heavier load: 7.1 s before, 10.3 s now (31% fewer). The server's
 * commits (medstream_commit_seconds: ~29 ms of each batch's ~37 ms in one run) already ran one after
 * another before; what is lost is the overlap of a batch's upload, scan and answer with the commit of the
 * one before. Pipelining would not win that back: HTTP/1.1 pipelining on one connection keeps the order,
 * but the server (libmicrohttpd, a thread per connection) reads a connection's next request only after
 * answering the one before, so it would save the round trip and the upload (0.4-1 ms for a 1 MB batch
 * over loopback here; more to a distant server), not the overlap: not built. Winning the overlap back
 * needs the server to order one import's batches itself (a sequence number per run, a batch's commit held
 * until the one before it is committed, and a rule for one that never comes), not built either: the
 * offline import (--data) is the bulk path. To keep the waits short, the checkpoint file's "may be
 * stored" (below, an fdatasync) is written before a batch waits for its turn, not once it has it.
 *
 * Before a batch goes out past what the checkpoint file says may be stored already (replay_until), the
 * file is rewritten to say it may be: if the importer dies with batches sent and not counted, the rerun
 * sends them again as a replay (import_replay=1), so rows holding older versions of a record that the
 * server stored already are duplicates, not new versions. (It is written before the batch waits for its
 * turn: a batch that is then not sent, the run stopping, is sent by the rerun as a replay too.)
 *
 * A request that fails on the way (the server restarting, a connection reset) or is answered 502, 503
 * or 504 is sent again, for up to a minute with growing pauses, as a replay (the first send may have been
 * committed, its answer lost); any other answer but 200 ends the import with the server's message (which
 * names no value: docs/API.md).
 *
 * The server decides what the schema, the record limit and the permissions are: rows its scan rejects
 * come back rejected with its reason, and without records:update an existing record's new version is
 * rejected (the token's role). The audit entries are the server's: one per batch, naming the token's user.
 *
 * What it must never do: send a body before the checks that keep its lines the file's, send a batch before
 * the one before it has been answered, send a batch again but as a replay, or write the checkpoint file past a
 * batch the server has not acknowledged.
 */
#include "import/import.h"

#include "import/import_internal.h"

#include "base/http_client.h"
#include "base/http_client_url.h"
#include "base/json_scan.h"
#include "pipeline/record_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RETRY_FOR_S 60.0  /* a batch the server cannot take is sent again for this long */
#define TIMEOUT_MS 300000 /* a batch of 32 MiB on a busy server: minutes, not seconds */

typedef struct {
    http_client_url url;
    http_client_conn **conns; /* one per worker */
    unsigned nconns;
    char auth[600];
    char path[512]; /* /v1/records?import_origin=HEX&import_line= */
    /* the checkpoint file, under mu: written by the committer after each batch and by a worker before it
     * sends a batch past what the file says may have been stored */
    pthread_mutex_t mu;
    import_position committed; /* the last position counted */
    uint64_t sent_end;         /* the end of the furthest batch sent */
    /* under run->mu, waited for on run->cv: the seq of the batch that may be sent next (every batch before
     * it answered) */
    uint64_t turn;
} server_target;

static void server_close(import_run *run)
{
    server_target *t = run->target_state;
    if (!t) return;
    for (unsigned i = 0; i < t->nconns; i++)
        http_client_conn_free(t->conns[i]);
    free(t->conns);
    pthread_mutex_destroy(&t->mu);
    free(t);
    run->target_state = NULL;
}

static ms_code server_load(import_run *run, import_position *p, bool *found, ms_err *e)
{
    const import_options *o = run->opt;
    server_target *t = ms_calloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    run->target_state = t;
    char why[300];
    if (http_client_url_parse(o->url, &t->url, why, sizeof why) != HTTP_CLIENT_OK)
        return ms_fail(e, MS_EINVAL, "--url: %s", why);
    t->nconns = o->parallel ? o->parallel : 1;
    t->conns = ms_calloc(t->nconns, sizeof *t->conns);
    for (unsigned i = 0; i < t->nconns; i++)
        if (!(t->conns[i] = http_client_conn_new(t->url.host, t->url.port, TIMEOUT_MS, 0)))
            return ms_fail(e, MS_EINVAL, "--url: bad host or port");
    snprintf(t->auth, sizeof t->auth, "Bearer %s", o->token);
    char hex[65];
    const unsigned char *id = import_input_identity(run->in);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
    snprintf(t->path, sizeof t->path, "%s/v1/records?import_origin=%s&import_line=", t->url.base_path, hex);
    ms_code rc = checkpoint_file_load(run->checkpoint_path, id, o->url, p, found, why, sizeof why, e);
    if (rc == MS_OK && !*found && why[0]) fprintf(o->err, "import: %s; starting from the beginning\n", why);
    return rc;
}

static void server_begin(import_run *run)
{
    server_target *t = run->target_state;
    t->committed = run->pos;
    t->sent_end = 0;
    t->turn = 0;
}

/* Wait until every batch before b has been answered; false if the import is stopping (a signal, a limit, an
 * earlier batch that failed) first: b must then not go out. The wait is on the run's mutex and condition
 * variable, so that a stop wakes it. */
static bool wait_turn(import_run *run, const server_target *t, const import_batch *b)
{
    pthread_mutex_lock(&run->mu);
    while (t->turn != b->seq && !run->stopping)
        pthread_cond_wait(&run->cv, &run->mu);
    bool go = !run->stopping;
    pthread_mutex_unlock(&run->mu);
    return go;
}

/* b was answered (or had nothing to send): the next batch may go. Not called for a batch that failed: the
 * batches after it wait until the committer, reaching the failure, stops the import. */
static void end_turn(import_run *run, server_target *t, const import_batch *b)
{
    pthread_mutex_lock(&run->mu);
    if (t->turn == b->seq) t->turn = b->seq + 1;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
}

/* The checkpoint file: the position counted, and how far rows may have been stored (under t->mu). */
static ms_code save_locked(import_run *run, server_target *t, ms_err *e)
{
    import_position p = t->committed;
    if (t->sent_end > p.replay_until) p.replay_until = t->sent_end;
    return checkpoint_file_save(run->checkpoint_path, import_input_identity(run->in), run->opt->url, &p, e);
}

/* A row the server would not take as one line: rejected here, its bytes kept, its line blanked. */
static void reject_here(import_batch *b, batch_row *row, const char *why)
{
    row->outcome = ROW_REJECTED;
    row->error = arena_strndup(&b->mem, why, strlen(why));
    row->raw = arena_strndup(&b->mem, b->body + row->body_off, row->body_len);
    row->raw_len = row->body_len;
    memset(b->body + row->body_off, ' ', row->body_len);
}

static bool member_is(const json_member *m, const char *key)
{
    return !m->key_escaped && m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0;
}

static batch_row *row_at_body_line(import_batch *b, uint64_t line)
{
    uint32_t lo = 0, hi = b->nrows;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (b->rows[mid].body_line == line) return &b->rows[mid];
        if (b->rows[mid].body_line < line)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The bulk answer {"errors","items":[{"line","status","error"?...}]}: each sent row's outcome. */
static ms_code read_answer(import_batch *b, unsigned char *sent, const char *text, size_t len, ms_err *e)
{
    json_member top[8], m[16];
    json_error je;
    int n = json_scan_object(text, len, top, 8, &je);
    const json_member *items = NULL;
    for (int i = 0; i < n; i++)
        if (member_is(&top[i], "items") && top[i].type == JSON_ARRAY) items = &top[i];
    if (!items) return ms_fail(e, MS_EIO, "the server's answer has no items");
    const char *end = items->val + items->val_len - 1, *p = json_skip_ws(items->val + 1, end);
    while (p < end) {
        json_type type;
        const char *q = json_scan_value(text, p, end, &type, &je);
        int k = q && type == JSON_OBJECT ? json_scan_object(p, (size_t)(q - p), m, 16, &je) : -1;
        if (k < 0) return ms_fail(e, MS_EIO, "the server's answer has an item that is not an object");
        uint64_t line = 0;
        const json_member *status = NULL, *error = NULL;
        for (int i = 0; i < k; i++) {
            if (member_is(&m[i], "line") && m[i].type == JSON_NUMBER) line = strtoull(m[i].val, NULL, 10);
            if (member_is(&m[i], "status") && m[i].type == JSON_STRING) status = &m[i];
            if (member_is(&m[i], "error") && m[i].type == JSON_STRING) error = &m[i];
        }
        batch_row *row = row_at_body_line(b, line);
        if (!row || !status || sent[row - b->rows] != 1)
            return ms_fail(e, MS_EIO, "the server's answer names a line %llu it was not sent",
                           (unsigned long long)line);
        static const struct {
            const char *name;
            row_outcome outcome;
        } statuses[] = {{"\"created\"", ROW_CREATED},
                        {"\"updated\"", ROW_UPDATED},
                        {"\"duplicate\"", ROW_DUPLICATE},
                        {"\"rejected\"", ROW_REJECTED}};
        bool known = false;
        for (size_t s = 0; s < sizeof statuses / sizeof statuses[0]; s++)
            if (status->val_len == strlen(statuses[s].name) &&
                !memcmp(status->val, statuses[s].name, status->val_len)) {
                row->outcome = statuses[s].outcome;
                known = true;
            }
        if (!known)
            return ms_fail(e, MS_EIO, "the server's answer has an unknown status for line %llu",
                           (unsigned long long)line);
        if (row->outcome == ROW_REJECTED) {
            char *why = "rejected";
            if (error) {
                why = arena_alloc(&b->mem, error->val_len);
                why[json_string_decode(error->val + 1, error->val_len - 2, why)] = 0;
            }
            row->error = why;
        }
        sent[row - b->rows] = 2; /* answered */
        p = json_skip_ws(q, end);
        if (p < end && *p == ',') p = json_skip_ws(p + 1, end);
    }
    return MS_OK;
}

static void pause_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static ms_code server_work(import_run *run, unsigned worker, import_batch *b, ms_err *e)
{
    server_target *t = run->target_state;
    const import_options *o = run->opt;
    unsigned char *sent = ms_calloc(b->nrows ? b->nrows : 1, 1); /* 1 sent, 2 answered */
    uint32_t nsent = 0;
    bool csv = run->format == IMPORT_CSV; /* sent as it is: the server's CSV reader, with its schema */
    for (uint32_t i = 0; i < b->nrows; i++) {
        batch_row *row = &b->rows[i];
        if (!row->body_len) continue; /* cut by the reader, or refused by the CSV reader: rejected already */
        if (csv) {
            sent[i] = 1;
            nsent++;
            continue;
        }
        const char *text = b->body + row->body_off;
        char why[200];
        record_field *fields;
        uint32_t nfields;
        const char *bad = NULL;
        if (row->body_len > o->max_record) {
            snprintf(why, sizeof why, "record too large (%u bytes; the limit is %zu)", row->body_len, o->max_record);
            bad = why;
        } else {
            bad = record_scan_fields(text, row->body_len, &b->mem, &fields, &nfields);
        }
        if (bad) {
            reject_here(b, row, bad);
            continue;
        }
        sent[i] = 1;
        nsent++;
    }
    ms_code rc = MS_OK;
    if (nsent) { /* first the checkpoint says these rows may be stored: a crash after the send replays them
                  * (written before the wait, so that its fdatasync is not on the path of the sends in turn) */
        pthread_mutex_lock(&t->mu);
        if (b->end_offset > t->sent_end && b->end_offset > run->replay_until) {
            t->sent_end = b->end_offset;
            rc = save_locked(run, t, e);
        }
        pthread_mutex_unlock(&t->mu);
    }
    /* the server commits batches in the order they reach it: b goes once the one before it is answered */
    if (rc == MS_OK && !wait_turn(run, t, b)) {
        free(sent);
        return ms_fail(e, MS_ESTOPPED, "stopped before the batch from line %llu was sent",
                       (unsigned long long)b->rows[0].line);
    }
    if (nsent && rc == MS_OK) {
        char path[600];
        snprintf(path, sizeof path, "%s%llu%s", t->path, (unsigned long long)b->first_line,
                 b->replay ? "&import_replay=1" : "");
        http_client_header headers[] = {{"Authorization", t->auth},
                                        {"Content-Type", csv ? "text/csv; charset=utf-8" : "application/x-ndjson"},
                                        {NULL, NULL}};
        http_client_response resp;
        http_client_response_init(&resp);
        http_client_conn *conn = t->conns[worker % t->nconns];
        double t0 = ms_mono_s(), wait = 0.2;
        for (bool replay = b->replay, resent = false;; resent = true) {
            /* a batch sent again after a failure on the way (or a 502-504 from a proxy) may have been committed
             * by the first send: again it goes as a replay, so that its rows holding a record's older versions
             * are duplicates of what was stored, not new versions (as a rerun's replays) */
            if (resent && !replay) {
                strncat(path, "&import_replay=1", sizeof path - strlen(path) - 1);
                replay = true;
            }
            http_client_err err = http_client_request(conn, "POST", path, headers, b->body, b->body_len, &resp);
            if (err == HTTP_CLIENT_OK && resp.status == 200) {
                end_turn(run, t, b); /* the server has committed it: the next batch may go while this one is read */
                rc = read_answer(b, sent, resp.body, resp.body_len, e);
                break;
            }
            bool again = err != HTTP_CLIENT_OK || resp.status == 502 || resp.status == 503 || resp.status == 504;
            if (!again || ms_mono_s() - t0 > RETRY_FOR_S || (o->stop && atomic_load(o->stop))) {
                if (err != HTTP_CLIENT_OK)
                    rc = ms_fail(e, MS_EIO, "%s", http_client_conn_error(conn));
                else
                    rc = ms_fail(e, resp.status == 401 || resp.status == 403 ? MS_EINVAL : MS_EIO,
                                 "the server answered HTTP %d: %.180s", resp.status, resp.body ? resp.body : "");
                break;
            }
            pause_s(wait);
            if (wait < 5) wait *= 2;
        }
        http_client_response_free(&resp);
        for (uint32_t i = 0; rc == MS_OK && i < b->nrows; i++)
            if (sent[i] == 1)
                rc = ms_fail(e, MS_EIO, "the server's answer does not account for line %llu",
                             (unsigned long long)b->rows[i].line);
    }
    if (!nsent && rc == MS_OK) end_turn(run, t, b); /* nothing to send: the next batch may go */
    free(sent);
    return rc;
}

static ms_code server_save(import_run *run, const import_position *p, bool final, ms_err *e)
{
    (void) final;
    server_target *t = run->target_state;
    pthread_mutex_lock(&t->mu);
    t->committed = *p;
    ms_code rc = save_locked(run, t, e);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

const import_target import_to_server = {.name = "server",
                                        .load = server_load,
                                        .begin = server_begin,
                                        .work = server_work,
                                        .save = server_save,
                                        .close = server_close};

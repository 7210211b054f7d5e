/*
 * sink_postgres.c - commit log -> PostgreSQL (see sink_postgres.h): shipping, staging, the sink's thread,
 * /metrics and /healthz; the schema, its migrations and the connection are pg_schema.c's.
 */
#include "sinks/sink_postgres.h"

#include "sinks/sink_postgres_internal.h"

#include "base/log.h"
#include "base/metrics.h"
#include "read/query.h"
#include "base/timefmt.h"

#include <libpq-fe.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- shipping ---- */

void pg_copy_escape(buf *out, const char *s, size_t n)
{
    buf_reserve(out, n + n / 16 + 8);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i], rep;
        switch (c) {
        case '\\': rep = '\\'; break;
        case '\t': rep = 't'; break;
        case '\n': rep = 'n'; break;
        case '\r': rep = 'r'; break;
        default: continue;
        }
        buf_put(out, s + run, i - run);
        buf_putc(out, '\\');
        buf_putc(out, rep);
        run = i + 1;
    }
    buf_put(out, s + run, n - run);
}

typedef struct {
    sink_postgres *p;
    store_read *r;
    int64_t commit_time;
    buf records, public_records, versions, public_patients, index, latest; /* COPY text per table */
    buf erased; /* patient ids erased ('e' items), as a PostgreSQL uuid[] literal's elements */
    buf body, fields, key;
    arena mem;
    uint64_t rows;
    bool failed;
    ms_err err;
} ship;

static void put_time(buf *b, int64_t us)
{
    char t[40];
    time_format_rfc3339(us, t, sizeof t);
    buf_puts(b, t);
}

void pg_copy_pid(buf *b, const patient_id *pid)
{
    char t[PATIENT_ID_TEXT];
    patient_id_format(pid, t);
    buf_puts(b, t);
}

/* A patient erased since (store/erase.c): the versions an older entry names are gone; its rows, shipped
 * or not, are deleted when the erasure's own entry is shipped. */
static bool patient_erased(ship *sh, const patient_id *pid, bool *erased)
{
    return store_patient_erased(sh->r, pid, NULL, erased, &sh->err) == MS_OK;
}

static bool ship_record(ship *sh, const log_item *it)
{
    record_version rv;
    public_record pr;
    bool found;
    if (store_record_version(sh->r, it->id, it->id_len, sh->commit_time, it->version, &rv, &found, &sh->err))
        return false;
    if (!found) return ms_fail(&sh->err, MS_ECORRUPT, "record version in the commit log not found"), false;
    if (rv.deleted) { /* erased since (a bodiless tombstone in place): nothing of it goes out */
        bool erased;
        if (!patient_erased(sh, &rv.pid, &erased)) return false;
        if (erased) return true;
    }
    if (!rv.deleted && store_record_body(sh->p->opt.store, &rv, &sh->body, &sh->err)) return false;
    buf *b = &sh->records;
    pg_copy_escape(b, rv.record_id, rv.record_id_len);
    buf_printf(b, "\t%u\t", rv.version);
    pg_copy_pid(b, &rv.pid);
    buf_putc(b, '\t');
    pg_copy_escape(b, rv.type, rv.type_len);
    buf_putc(b, '\t');
    put_time(b, rv.ts_us);
    buf_putc(b, '\t');
    put_time(b, rv.valid_from);
    buf_putc(b, '\t');
    if (rv.deleted)
        buf_puts(b, "\\N\tt\n"); /* a tombstone: no body */
    else
        pg_copy_escape(b, sh->body.data, sh->body.len), buf_puts(b, "\tf\n");
    sh->body.len = 0;
    sh->rows++;
    if (store_public_record_version(sh->r, it->id, it->id_len, sh->commit_time, it->version, &pr, &found, &sh->err))
        return false;
    if (found) {
        b = &sh->public_records;
        pg_copy_escape(b, rv.record_id, rv.record_id_len);
        buf_printf(b, "\t%u\t", rv.version);
        pg_copy_pid(b, &pr.pid);
        buf_putc(b, '\t');
        pg_copy_escape(b, pr.type, strlen(pr.type));
        buf_printf(b, "\t%d\t", pr.year);
        if (pr.deleted)
            buf_puts(b, "\\N");
        else
            pg_copy_escape(b, pr.fields, pr.fields_len);
        buf_putc(b, '\t');
        put_time(b, rv.valid_from);
        buf_puts(b, pr.deleted ? "\tt\n" : "\tf\n");
        sh->rows++;
    }
    return true;
}

static bool ship_patient(ship *sh, const log_item *it)
{
    if (it->id_len != 16) return ms_fail(&sh->err, MS_ECORRUPT, "bad patient id in the commit log"), false;
    patient_id pid;
    memcpy(pid.b, it->id, 16);
    patient_version pv;
    bool found, erased;
    arena_free(&sh->mem);
    if (store_patient_version(sh->r, &pid, sh->commit_time, it->version, &pv, &sh->mem, &found, &sh->err)) return false;
    if (!found && !patient_erased(sh, &pid, &erased)) return false;
    if (!found && erased) return true; /* erased since: its versions are gone */
    if (!found) return ms_fail(&sh->err, MS_ECORRUPT, "patient version in the commit log not found"), false;
    sh->fields.len = 0;
    if (query_patient_fields(sh->p->opt.store, &pv, &sh->fields, &sh->err)) return false;
    buf *b = &sh->versions;
    pg_copy_pid(b, &pid);
    buf_printf(b, "\t%u\t", pv.version);
    pg_copy_escape(b, sh->fields.data, sh->fields.len);
    buf_putc(b, '\t');
    put_time(b, pv.valid_from);
    buf_putc(b, '\t');
    pg_copy_escape(b, pv.cause_record, pv.cause_record_len);
    buf_putc(b, '\n');
    pg_copy_pid(&sh->latest, &pid);
    buf_printf(&sh->latest, "\t%u\n", pv.version);
    sh->rows++;
    if (store_public_patient_version(sh->r, &pid, sh->commit_time, it->version, &sh->fields, &found, &sh->err))
        return false;
    if (found) {
        b = &sh->public_patients;
        pg_copy_pid(b, &pid);
        buf_printf(b, "\t%u\t", pv.version);
        pg_copy_escape(b, sh->fields.data, sh->fields.len);
        buf_putc(b, '\t');
        put_time(b, pv.valid_from);
        buf_putc(b, '\n');
        sh->rows++;
    }
    if (pv.version == 1) { /* a new patient: its identity (normalized name NUL YYYY-MM-DD) */
        if (store_identity_key(sh->r, &pid, &sh->key, &found, &sh->err)) return false;
        const char *nul = found ? memchr(sh->key.data, 0, sh->key.len) : NULL;
        if (!nul || sh->key.len - (size_t)(nul - sh->key.data) != 11)
            return ms_fail(&sh->err, MS_ECORRUPT, "patient without an identity entry"), false;
        b = &sh->index;
        pg_copy_pid(b, &pid);
        buf_putc(b, '\t');
        pg_copy_escape(b, sh->key.data, (size_t)(nul - sh->key.data));
        buf_putc(b, '\t');
        buf_put(b, nul + 1, 10);
        buf_putc(b, '\n');
        sh->rows++;
    }
    return true;
}

static bool ship_item(void *ctx, const log_item *it)
{
    ship *sh = ctx;
    bool ok = it->kind == 'r' ? ship_record(sh, it) : it->kind == 'p' ? ship_patient(sh, it) : true;
    if (it->kind == 'e' && it->id_len == 16) { /* an erasure: every row of the patient goes */
        patient_id pid;
        memcpy(pid.b, it->id, 16);
        if (sh->erased.len) buf_putc(&sh->erased, ',');
        pg_copy_pid(&sh->erased, &pid);
    }
    if (!ok) sh->failed = true;
    return ok;
}

/* COPY data in with sql; state (may be NULL) receives the SQLSTATE of a server error ("" otherwise). */
static bool copy_in_state(sink_postgres *p, const char *sql, const buf *data, const char *what, char state[6],
                          ms_err *e)
{
    if (state) state[0] = 0;
    if (data->len == 0) return true;
    PGresult *res = PQexec(p->conn, sql);
    bool ok = res && PQresultStatus(res) == PGRES_COPY_IN;
    if (!ok) {
        char why[300];
        pg_error_text(res, p->conn, why, sizeof why);
        ms_fail(e, MS_EIO, "postgres: COPY %s: %s", what, why);
    }
    PQclear(res);
    if (!ok) return false;
    const size_t chunk = 1 << 20;
    for (size_t at = 0; ok && at < data->len; at += chunk) {
        size_t n = data->len - at < chunk ? data->len - at : chunk;
        ok = PQputCopyData(p->conn, data->data + at, (int)n) == 1;
    }
    ok = PQputCopyEnd(p->conn, ok ? NULL : "medstream: send failed") == 1 && ok;
    while ((res = PQgetResult(p->conn))) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char why[300];
            pg_error_text(res, p->conn, why, sizeof why);
            ms_fail(e, MS_EIO, "postgres: COPY %s: %s", what, why);
            const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (state && st) snprintf(state, 6, "%s", st);
            ok = false;
        }
        PQclear(res);
    }
    if (!ok && e->msg[0] == 0) ms_fail(e, MS_EIO, "postgres: COPY %s: connection lost", what);
    return ok;
}

bool pg_copy_in(sink_postgres *p, const char *sql, const buf *data, const char *what, ms_err *e)
{
    return copy_in_state(p, sql, data, what, NULL, e);
}

/* A table that the nodes of one cluster may each ship the same row into (the same patient's index row, the
 * same record version): its unique key, and what makes two rows under that key the same row. */
typedef struct {
    const char *table;   /* in schema medstream */
    const char *columns; /* in the COPY text's order */
    const char *same;    /* staged row s equals stored row t (valid_from is left out: it is the commit time of
                            the node that made the version, and the first node's stays) */
    const char *detail;  /* a query over the staged rows (s) giving text for the conflict message, or NULL */
} pg_table;

/* The key's equalities come first and alone: the content is compared as one row value (IS NOT DISTINCT FROM,
 * which no index serves), so that the planner probes the primary key, never another index of the table
 * (public_records (type, year) would be a scan of the whole table per staged row). */
static const pg_table t_phi_records = {
    "phi_records", "record_id, version, patient_id, type, ts, valid_from, body, deleted",
    "t.record_id = s.record_id AND t.version = s.version AND (t.patient_id, t.type, t.ts, t.body, t.deleted) IS NOT"
    " DISTINCT FROM (s.patient_id, s.type, s.ts, s.body, s.deleted)",
    NULL};
static const pg_table t_public_records = {
    "public_records", "record_id, version, patient_id, type, year, fields, valid_from, deleted",
    "t.record_id = s.record_id AND t.version = s.version AND (t.patient_id, t.type, t.year, t.fields, t.deleted) IS"
    " NOT DISTINCT FROM (s.patient_id, s.type, s.year, s.fields, s.deleted)",
    NULL};
static const pg_table t_patient_index = {
    "patient_index", "patient_id, name_norm, dob",
    "t.patient_id = s.patient_id AND (t.name_norm, t.dob) IS NOT DISTINCT FROM (s.name_norm, s.dob)",
    "SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM medstream.patient_index t WHERE t.patient_id ="
    " s.patient_id AND (t.name_norm, t.dob) <> (s.name_norm, s.dob))) || ' patient id(s) already held by another"
    " identity, ' || count(*) FILTER (WHERE EXISTS (SELECT 1 FROM medstream.patient_index t WHERE (t.name_norm,"
    " t.dob) = (s.name_norm, s.dob) AND t.patient_id <> s.patient_id)) || ' identity(ies) already holding another"
    " patient id' FROM ms_stage_patient_index s"};
static const pg_table t_phi_patient_versions = {
    "phi_patient_versions", "patient_id, version, fields, valid_from, changed_by",
    "t.patient_id = s.patient_id AND t.version = s.version AND (t.fields, t.changed_by) IS NOT DISTINCT FROM"
    " (s.fields, s.changed_by)",
    NULL};
static const pg_table t_public_patients = {
    "public_patients", "patient_id, version, fields, valid_from",
    "t.patient_id = s.patient_id AND t.version = s.version AND t.fields IS NOT DISTINCT FROM s.fields", NULL};

/* COPY data into t inside the open transaction. Not staged: a plain COPY; a unique key already taken
 * (SQLSTATE 23505: another node of the cluster shipped a row under that key) sets p->duplicate, and the
 * caller ships the transaction again staged. Staged: the rows go through a staging table: every row
 * equal to the stored one is a no-op, and any row that differs from the stored one under a unique key
 * fails the whole transaction LOUDLY (MS_ECONFLICT, counts and table names only, never values): nothing is
 * overwritten and the position does not move. */
static bool copy_rows(sink_postgres *p, const pg_table *t, const buf *data, bool staged, ms_err *e)
{
    if (data->len == 0) return true;
    char sql[1200], state[6];
    if (!staged) {
        snprintf(sql, sizeof sql, "COPY medstream.%s (%s) FROM STDIN", t->table, t->columns);
        if (copy_in_state(p, sql, data, t->table, state, e)) return true;
        if (strcmp(state, "23505") == 0) p->duplicate = true;
        return false;
    }
    snprintf(sql, sizeof sql,
             "CREATE TEMP TABLE IF NOT EXISTS ms_stage_%s (LIKE medstream.%s) ON COMMIT DELETE ROWS;"
             " TRUNCATE ms_stage_%s",
             t->table, t->table, t->table);
    if (!pg_exec(p, sql, "staging table", e)) return false;
    snprintf(sql, sizeof sql, "COPY ms_stage_%s (%s) FROM STDIN", t->table, t->columns);
    if (!pg_copy_in(p, sql, data, t->table, e)) return false;
    snprintf(sql, sizeof sql,
             "INSERT INTO medstream.%s (%s) SELECT %s FROM ms_stage_%s ON CONFLICT DO NOTHING;"
             " SELECT count(*) FROM ms_stage_%s s WHERE NOT EXISTS (SELECT 1 FROM medstream.%s t WHERE %s)",
             t->table, t->columns, t->columns, t->table, t->table, t->table, t->same);
    bool ok;
    char *differ = pg_value(p, sql, t->table, &ok, e);
    if (!ok) return false;
    long long n = differ ? strtoll(differ, NULL, 10) : 0;
    free(differ);
    if (n == 0) return true;
    char *detail = t->detail ? pg_value(p, t->detail, t->table, &ok, e) : NULL;
    atomic_fetch_add(&p->conflicts, 1);
    p->row_conflict = true;
    ms_fail(e, MS_ECONFLICT,
            "postgres: conflict in %s: %s%s%lld row(s) differ from rows already there under the same key (another "
            "node numbering patients otherwise?); nothing overwritten",
            t->table, detail ? detail : "", detail ? "; " : "", n);
    free(detail);
    return false;
}

/* Every row of the erased patients (ids: "uuid,uuid,...") in the tables named, one DELETE each. */
static bool delete_rows_of(sink_postgres *p, const buf *ids, const char *const *tables, size_t n, ms_err *e)
{
    if (!ids->len) return true;
    buf sql = {0};
    for (size_t i = 0; i < n; i++)
        buf_printf(&sql, "DELETE FROM medstream.%s WHERE patient_id = ANY('{%.*s}'::uuid[]);", tables[i], (int)ids->len,
                   ids->data);
    bool ok = pg_exec(p, sql.data, "deleting an erased patient's rows", e);
    buf_free(&sql);
    return ok;
}

/* Erased patients: every row of theirs, in every table the sink writes, deleted in the transaction that
 * stores the position past the erasure (after the COPYs: an older entry shipped in the same transaction may
 * have added a row of theirs). The current state first, then its history (the periods extension moves a
 * deleted row into the history table). */
static bool erase_rows(sink_postgres *p, const buf *ids, ms_err *e)
{
    static const char *const tables[] = {"phi_patients", "phi_patients_history", "phi_patient_versions",
                                         "phi_records",  "public_records",       "public_patients",
                                         "patient_index"};
    return delete_rows_of(p, ids, tables, sizeof tables / sizeof tables[0], e);
}

/* Their patient_index rows alone, before the index COPY (ship_txn): an identity erased and sent again in one
 * commit gives its new patient an index row with the name and date of birth the erased one's holds. */
static bool erase_index_rows(sink_postgres *p, const buf *ids, ms_err *e)
{
    static const char *const tables[] = {"patient_index"};
    return delete_rows_of(p, ids, tables, 1, e);
}

/* How long the oldest commit not yet in PostgreSQL has waited (0 when caught up). */
static void note_lag(sink_postgres *p, store_read *r, uint64_t end)
{
    int64_t t = 0;
    bool found = false;
    ms_err e;
    uint64_t behind = end > p->shipped ? end - p->shipped : 0;
    atomic_store(&p->lag, behind);
    if (behind && store_log_entry(r, p->shipped + 1, &t, NULL, NULL, &found, &e) == MS_OK && found) {
        int64_t age = ms_now_us() - t;
        atomic_store(&p->lag_ms, age > 0 ? (uint64_t)age / 1000 : 0);
    } else {
        atomic_store(&p->lag_ms, 0);
    }
}

/* One PostgreSQL transaction: the COPYs of sh, the current state, the erasures and the position (the SQL
 * pos); staged: every table through copy_rows' staging path (rows another node shipped are no-ops when
 * equal, conflicts when not). False: failed (the caller rolls back). */
static bool ship_txn(sink_postgres *p, ship *sh, const char *pos, bool staged, ms_err *e)
{
    return pg_exec(p,
                   "BEGIN; CREATE TEMP TABLE IF NOT EXISTS ms_latest (patient_id uuid, version integer)"
                   " ON COMMIT DELETE ROWS",
                   "begin", e) &&
           /* staged: the checks probe the primary keys row by row (a hash join would read the whole table,
            * however large, for each group of commits; a temp table has no statistics to say otherwise) */
           (!staged || pg_exec(p, "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off", "set", e)) &&
           copy_rows(p, &t_phi_records, &sh->records, staged, e) &&
           copy_rows(p, &t_public_records, &sh->public_records, staged, e) && erase_index_rows(p, &sh->erased, e) &&
           copy_rows(p, &t_patient_index, &sh->index, staged, e) &&
           copy_rows(p, &t_phi_patient_versions, &sh->versions, staged, e) &&
           copy_rows(p, &t_public_patients, &sh->public_patients, staged, e) &&
           pg_copy_in(p, "COPY ms_latest FROM STDIN", &sh->latest, "ms_latest", e) &&
           /* the current state: each patient's last version of this transaction (one history row per
            * shipped transaction: PostgreSQL's system time is when it learned the state) */
           pg_exec(p,
                   "INSERT INTO medstream.phi_patients (patient_id, version, fields, valid_from)"
                   " SELECT DISTINCT ON (v.patient_id) v.patient_id, v.version, v.fields, v.valid_from"
                   " FROM ms_latest l JOIN medstream.phi_patient_versions v USING (patient_id, version)"
                   " ORDER BY v.patient_id, v.version DESC"
                   " ON CONFLICT (patient_id) DO UPDATE SET version = EXCLUDED.version, fields = EXCLUDED.fields,"
                   " valid_from = EXCLUDED.valid_from WHERE medstream.phi_patients.version < EXCLUDED.version",
                   "phi_patients", e) &&
           erase_rows(p, &sh->erased, e) && pg_exec(p, pos, "sink_position", e) && pg_exec(p, "COMMIT", "commit", e);
}

/* Ship entries shipped+1.. in one transaction; returns the number of commits shipped (0: caught up),
 * or -1 on failure (the transaction rolled back; nothing moved). */
static int ship_some(sink_postgres *p, ms_err *e)
{
    store_read *r;
    p->row_conflict = false;
    if (store_read_begin(p->opt.store, &r, e) != MS_OK) return -1;
    uint64_t end = store_commit_pos(r);
    if (!p->checked && p->shipped > 0) { /* is the entry PostgreSQL shipped last this store's? */
        int64_t t = -1;
        bool found = false;
        if (store_log_entry(r, p->shipped, &t, NULL, NULL, &found, e) != MS_OK) {
            store_read_end(r);
            return -1;
        }
        if (!found || (p->shipped_time >= 0 && t != p->shipped_time)) {
            store_read_end(r);
            ms_fail(e, MS_ECONFLICT,
                    "postgres: the database has commit %llu of another history than this store's (%s); a store "
                    "restored from an older copy? not shipping over it",
                    (unsigned long long)p->shipped, found ? "its commit time differs" : "the store ends before it");
            return -1;
        }
        p->checked = true;
    }
    /* the public tables follow the version this read is under: a rewrite begins before anything read under a
     * newer version ships (pg_rewrite.c) */
    if (!pg_rewrite_check(p, r, e)) {
        store_read_end(r);
        return -1;
    }
    note_lag(p, r, end);
    ship sh = {.p = p, .r = r};
    int n = 0;
    int64_t oldest = 0, newest = 0;
    size_t bytes = 0;
    while (n < SHIP_MAX_COMMITS && bytes < SHIP_MAX_BYTES && p->shipped + (uint64_t)n < end) {
        bool found;
        if (store_log_entry(r, p->shipped + (uint64_t)n + 1, &sh.commit_time, ship_item, &sh, &found, &sh.err) ||
            sh.failed) {
            *e = sh.err;
            n = -1;
            break;
        }
        if (!found) break;
        if (!n) oldest = sh.commit_time;
        newest = sh.commit_time;
        n++;
        bytes = sh.records.len + sh.versions.len + sh.public_records.len + sh.public_patients.len;
        /* an erasure ends its group: a later commit may bring the identity back as a new patient, whose index
         * row would meet the erased one's (UNIQUE name, dob) before the erasure's deletes, at the group's end,
         * and fail the group for good (the sink stalled, the erased PHI left in PostgreSQL) */
        if (sh.erased.len) break;
    }
    store_read_end(r);
    if (n > 0) {
        char pos[300];
        snprintf(pos, sizeof pos,
                 "INSERT INTO medstream.sink_position (sink, node, commit_pos, commit_time_us) VALUES ('" SINK_NAME
                 "', '%s', %llu, %lld) ON CONFLICT (sink, node) DO UPDATE SET commit_pos = EXCLUDED.commit_pos,"
                 " commit_time_us = EXCLUDED.commit_time_us, shipped_at = now()",
                 p->node, (unsigned long long)(p->shipped + (uint64_t)n), (long long)newest);
        /* plain COPYs first; a unique key already taken (another node shipped the row) rolls the transaction
         * back, and it is shipped again through the staging tables, which tell equal rows from conflicts */
        p->duplicate = false;
        bool ok = ship_txn(p, &sh, pos, false, e);
        if (!ok && p->duplicate) {
            pg_exec(p, "ROLLBACK", "rollback", &(ms_err){0});
            *e = (ms_err){0};
            atomic_fetch_add(&p->staged, 1);
            ok = ship_txn(p, &sh, pos, true, e);
        }
        if (!ok) {
            pg_exec(p, "ROLLBACK", "rollback", &(ms_err){0});
            n = -1;
        } else {
            p->shipped += (uint64_t)n;
            p->shipped_time = newest;
            atomic_fetch_add(&p->rows, sh.rows); /* the lag: noted by the next call */
            histogram_observe(&p->freshness_seconds, (double)(ms_now_us() - oldest) / 1e6);
        }
    }
    buf_free(&sh.records);
    buf_free(&sh.public_records);
    buf_free(&sh.versions);
    buf_free(&sh.public_patients);
    buf_free(&sh.index);
    buf_free(&sh.latest);
    buf_free(&sh.erased);
    buf_free(&sh.body);
    buf_free(&sh.fields);
    buf_free(&sh.key);
    arena_free(&sh.mem);
    return n;
}

/* A step failed: say so once (not every second), show the state and the lag (it keeps growing while
 * PostgreSQL is away: /metrics and /healthz stay true), and wait a second unless stopped. */
static void back_off(sink_postgres *p, char *last, size_t cap, const ms_err *e, pg_state state)
{
    if (strcmp(last, e->msg) != 0) ms_log(LOG_ERROR, "postgres.retrying", "%s; retrying every second", e->msg);
    snprintf(last, cap, "%s", e->msg);
    atomic_store(&p->state, state);
    store_read *r;
    ms_err ignored;
    if (store_read_begin(p->opt.store, &r, &ignored) == MS_OK) {
        note_lag(p, r, store_commit_pos(r));
        store_read_end(r);
    }
    for (double t = 0; t < RECONNECT_S && !atomic_load(&p->stop); t += 0.05)
        usleep(50000);
}

/* Caught up, nothing to ship: is PostgreSQL still there? A SELECT 1 round trip that waits at most
 * ALIVE_TIMEOUT_MS, so a host that vanished cannot hold the sink (nor its stop). */
static bool pg_alive(sink_postgres *p, ms_err *e)
{
    if (PQstatus(p->conn) != CONNECTION_OK || !PQsendQuery(p->conn, "SELECT 1"))
        return ms_fail(e, MS_EIO, "postgres: connection lost"), false;
    double deadline = ms_mono_s() + ALIVE_TIMEOUT_MS / 1000.0;
    for (;;) {
        if (!PQconsumeInput(p->conn)) return ms_fail(e, MS_EIO, "postgres: connection lost"), false;
        if (!PQisBusy(p->conn)) break;
        double left = deadline - ms_mono_s();
        if (left <= 0) return ms_fail(e, MS_EIO, "postgres: no answer within %d ms", ALIVE_TIMEOUT_MS), false;
        struct pollfd pfd = {.fd = PQsocket(p->conn), .events = POLLIN};
        poll(&pfd, 1, (int)(left * 1000) + 1);
    }
    bool ok = true;
    PGresult *res;
    while ((res = PQgetResult(p->conn))) {
        ok = ok && PQresultStatus(res) == PGRES_TUPLES_OK;
        PQclear(res);
    }
    if (!ok || PQstatus(p->conn) != CONNECTION_OK) return ms_fail(e, MS_EIO, "postgres: connection lost"), false;
    return true;
}

/* The shipped position, noted in the store too (PostgreSQL's own is the truth; this one tells the
 * store's readers, the erasure certificate among them, how far PostgreSQL is): a small write at most every
 * RECORD_EVERY_S while shipping, and at once when caught up. */
#define RECORD_EVERY_S 0.5
static void record_position(sink_postgres *p, bool caught_up)
{
    if (p->shipped <= p->recorded || ms_mono_s() - p->recorded_at < (caught_up ? 0.05 : RECORD_EVERY_S)) return;
    ms_err e;
    if (store_sink_position_set(p->opt.store, SINK_NAME, p->shipped, &e) != MS_OK) {
        ms_log(LOG_WARN, "postgres.position", "postgres: %s (PostgreSQL holds the position)", e.msg);
    } else {
        p->recorded = p->shipped;
    }
    p->recorded_at = ms_mono_s();
}

static void *sink_main(void *arg)
{
    sink_postgres *p = arg;
    pthread_setname_np(pthread_self(), "ms-sink-pg");
    char last[sizeof(((ms_err *)0)->msg)] = "";
    double alive_at = ms_mono_s(); /* when the connection last showed it works */
    while (!atomic_load(&p->stop)) {
        ms_err e = {0};
        bool reached;
        if (!p->conn && pg_connect(p, &reached, &e) != MS_OK) {
            back_off(p, last, sizeof last, &e, reached ? PG_STATE_FAILING : PG_STATE_UNREACHABLE);
            continue;
        }
        int n = ship_some(p, &e);
        if (n < 0) {
            bool down = PQstatus(p->conn) != CONNECTION_OK;
            PQfinish(p->conn); /* reconnect: re-reads the position PostgreSQL has */
            p->conn = NULL;
            back_off(p, last, sizeof last, &e,
                     down              ? PG_STATE_UNREACHABLE
                     : p->row_conflict ? PG_STATE_CONFLICT
                                       : PG_STATE_FAILING);
            continue;
        }
        /* the public tables' rewrite after a schema change, one step between two groups shipped */
        int rw = pg_rewrite_step(p, &e);
        if (rw < 0) {
            bool down = PQstatus(p->conn) != CONNECTION_OK;
            PQfinish(p->conn);
            p->conn = NULL;
            back_off(p, last, sizeof last, &e, down ? PG_STATE_UNREACHABLE : PG_STATE_FAILING);
            continue;
        }
        last[0] = 0;
        atomic_store(&p->state, PG_STATE_OK);
        record_position(p, n == 0);
        if (n > 0 || rw > 0) {
            alive_at = ms_mono_s();
        } else if (ms_mono_s() - alive_at >= ALIVE_CHECK_S) { /* caught up: check the connection anyway */
            if (!pg_alive(p, &e)) {
                PQfinish(p->conn);
                p->conn = NULL;
                back_off(p, last, sizeof last, &e, PG_STATE_UNREACHABLE);
                continue;
            }
            alive_at = ms_mono_s();
        } else {
            usleep(5000); /* caught up */
        }
    }
    if (p->conn) PQfinish(p->conn);
    p->conn = NULL;
    return NULL;
}

static void pg_metrics(void *ctx, buf *out)
{
    sink_postgres *p = ctx;
    metrics_gauge(out, "medstream_postgres_up", "1 while the PostgreSQL sink is connected and shipping.",
                  atomic_load(&p->state) == PG_STATE_OK);
    metrics_gauge(out, "medstream_postgres_lag_commits", "Commits in the store not yet shipped to PostgreSQL.",
                  atomic_load(&p->lag));
    metrics_gauge(out, "medstream_postgres_lag_milliseconds", "Age of the oldest commit not yet in PostgreSQL.",
                  atomic_load(&p->lag_ms));
    metrics_counter(out, "medstream_postgres_rows_total", "Rows shipped to PostgreSQL.", atomic_load(&p->rows));
    metrics_counter(out, "medstream_postgres_conflicts_total",
                    "Attempts to ship refused because a row differs from one already in PostgreSQL under the same key "
                    "(a patient id or identity held otherwise): the sink retries and never skips it.",
                    atomic_load(&p->conflicts));
    metrics_counter(out, "medstream_postgres_staged_total",
                    "Transactions shipped again through staging tables because a row was already in PostgreSQL "
                    "(shipped by another node of the cluster): equal rows are kept as they are.",
                    atomic_load(&p->staged));
    metrics_gauge(out, "medstream_postgres_public_schema_version",
                  "The store's schema version the public tables' rows are under (0: not known yet; during a "
                  "rewrite, the version before it).",
                  atomic_load(&p->m_public_sv));
    metrics_gauge(out, "medstream_postgres_rewrite_to",
                  "The schema version the public tables are being rewritten to (0: none).",
                  atomic_load(&p->m_rewrite_to));
    metrics_gauge(out, "medstream_postgres_rewrite_done", "Commits whose public rows the rewrite under way has done.",
                  atomic_load(&p->m_rewrite_done));
    metrics_gauge(out, "medstream_postgres_rewrite_total", "Commits whose public rows the rewrite under way does.",
                  atomic_load(&p->m_rewrite_end));
    metrics_counter(out, "medstream_postgres_rewritten_rows_total",
                    "Public rows rewritten in PostgreSQL after a schema change (those whose columns changed).",
                    atomic_load(&p->rewritten));
    metrics_histogram(out, "medstream_postgres_freshness_seconds",
                      "From the oldest commit of a shipped transaction to its commit in PostgreSQL.",
                      &p->freshness_seconds);
}

/* The sink's part of /healthz, and its policy: degraded while PostgreSQL cannot be reached, refuses the
 * work (failing), or a commit older than 10 s is not yet shipped (behind; the requirement is 2 s, so
 * that is worth a look). */
#define PG_BEHIND_MS 10000

static bool pg_health(void *ctx, buf *out)
{
    sink_postgres *p = ctx;
    int st = atomic_load(&p->state);
    uint64_t lag = atomic_load(&p->lag), lag_ms = atomic_load(&p->lag_ms);
    bool behind = st == PG_STATE_OK && lag_ms > PG_BEHIND_MS;
    buf_printf(out, ",\"postgres\":\"%s\",\"postgres_lag_commits\":%llu,\"postgres_lag_ms\":%llu",
               st == PG_STATE_UNREACHABLE ? "unreachable"
               : st == PG_STATE_FAILING   ? "failing"
               : st == PG_STATE_CONFLICT  ? "conflict"
               : behind                   ? "behind"
                                          : "ok",
               (unsigned long long)lag, (unsigned long long)lag_ms);
    /* the public tables' schema version, and a rewrite under way (not a degradation: the rows are readable) */
    uint32_t to = atomic_load(&p->m_rewrite_to);
    buf_printf(out, ",\"postgres_public_schema\":%u,\"postgres_rewriting\":", atomic_load(&p->m_public_sv));
    if (to)
        buf_printf(out, "{\"to\":%u,\"done\":%llu,\"total\":%llu}", to,
                   (unsigned long long)atomic_load(&p->m_rewrite_done),
                   (unsigned long long)atomic_load(&p->m_rewrite_end));
    else
        buf_puts(out, "null");
    return st == PG_STATE_OK && !behind;
}

/* Where the password is in a connection string (URI: postgres[ql]://user:PASSWORD@host...; key/value:
 * password=PASSWORD or password='PASSWORD'); *len 0 when it names none. */
static const char *conninfo_password(const char *ci, size_t *len)
{
    *len = 0;
    const char *rest = !strncmp(ci, "postgresql://", 13) ? ci + 13 : !strncmp(ci, "postgres://", 11) ? ci + 11 : NULL;
    if (rest) {
        size_t authority = strcspn(rest, "/?");
        const char *at = NULL;
        for (const char *c = rest; c < rest + authority; c++)
            if (*c == '@') at = c;
        const char *colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
        if (!colon) return NULL;
        *len = (size_t)(at - colon - 1);
        return colon + 1;
    }
    for (const char *c = strstr(ci, "password"); c; c = strstr(c + 1, "password")) {
        if (c > ci && c[-1] != ' ' && c[-1] != '\t') continue;
        const char *v = c + 8;
        v += strspn(v, " \t");
        if (*v != '=') continue;
        v++;
        v += strspn(v, " \t");
        if (*v == '\'') v++;
        *len = strcspn(v, *(v - 1) == '\'' ? "'" : " \t");
        return v;
    }
    return NULL;
}

/* libpq's refusal of a connection string, which may quote the string or a piece of it, with every
 * occurrence of the string's password written ***: the message goes to the log. */
static void refuse_conninfo(const char *ci, const char *why, ms_err *e)
{
    size_t plen;
    const char *pw = conninfo_password(ci, &plen);
    buf out = {0};
    for (const char *w = why; *w;) {
        if (plen && !strncmp(w, pw, plen)) {
            buf_put(&out, "***", 3);
            w += plen;
        } else {
            buf_put(&out, w++, 1);
        }
    }
    ms_fail(e, MS_EINVAL, "--postgres: %s", out.len ? out.data : "cannot parse the connection string");
    buf_free(&out);
}

ms_code sink_postgres_check_conninfo(const char *conninfo, ms_err *e)
{
    char *why = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &why);
    if (parsed) {
        PQconninfoFree(parsed);
        return MS_OK;
    }
    refuse_conninfo(conninfo, why ? why : "", e);
    PQfreemem(why);
    return MS_EINVAL;
}

ms_code sink_postgres_start(sink_postgres **out, const sink_postgres_options *opt, ms_err *e)
{
    sink_postgres *p = ms_calloc(1, sizeof *p);
    p->opt = *opt;
    p->conninfo = ms_strndup(opt->conninfo, strlen(opt->conninfo));
    p->opt.conninfo = NULL;
    for (int i = 0; i < STORE_NODE_ID; i++)
        snprintf(p->node + 2 * i, 3, "%02x", store_node_id(opt->store)[i]);
    if (sink_postgres_check_conninfo(p->conninfo, e) != MS_OK) {
        free(p->conninfo);
        free(p);
        return MS_EINVAL;
    }
    atomic_store(&p->state, PG_STATE_UNREACHABLE);
    const char *rows = getenv("MEDSTREAM_TEST_PG_REWRITE_ROWS"), *crash = getenv("MEDSTREAM_TEST_PG_REWRITE_CRASH");
    p->rewrite_rows = rows && atoi(rows) > 0 ? (uint32_t)atoi(rows) : PG_REWRITE_ROWS; /* tests: small steps */
    p->rewrite_crash = crash ? atoi(crash) : 0;
    if (pthread_create(&p->thread, NULL, sink_main, p) != 0) {
        free(p->conninfo);
        free(p);
        return ms_fail(e, MS_EIO, "postgres: cannot start the sink thread");
    }
    subsystem_register(&(subsystem){"postgres", pg_metrics, pg_health, p});
    *out = p;
    return MS_OK;
}

void sink_postgres_stop(sink_postgres *p)
{
    if (!p) return;
    subsystem_unregister(p);
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    free(p->conninfo);
    free(p);
}

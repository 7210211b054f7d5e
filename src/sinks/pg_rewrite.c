/*
 * pg_rewrite.c - the public tables brought to the store's schema version in force (sink_postgres_internal.h;
 * README.md, "Changing the schema"): once the store switches versions (the end of a re-projection, while
 * the sink ran, was down, or before it ever ran on that store), every row of public_records and
 * public_patients this node shipped under an older version gets the store's copy under the version in force.
 *
 * DESIGN: the shipping step that first reads the store under a version other than the one the tables are
 * under (pg_rewrite_check) records in PostgreSQL, before it ships anything, a rewrite to that version of the
 * commits 1..E it had shipped (E: its position then; every commit after E is shipped under the new version
 * already, since a shipping step reads one read transaction, under one version). Then each turn of the sink's
 * loop ships one group and runs one step here: the commit log from the rewrite's cursor, up to
 * PG_REWRITE_ROWS public rows (or REWRITE_MAX_COMMITS commits), each row read exactly as shipping reads it
 * (store_public_record_version, store_public_patient_version: the copy under the read transaction's version,
 * the one public reads answer under), then in ONE PostgreSQL transaction: the rows' public columns (type,
 * year, fields; a patient's fields) UPDATEd where they differ, and the cursor (sink_position.rewrite_done);
 * the step that reaches E records the version (sink_position.public_schema) and ends the rewrite. So a kill
 * of either side leaves the cursor with the rows it covers: the next start resumes there, and a step done
 * twice writes the same values. Only UPDATE: a row is never added (nor doubled); a row of a patient erased since
 * is left to the erasure's deletes. A switch to yet another version meanwhile begins a new rewrite (from
 * commit 1, to the new version's end).
 *
 * Must never: write a public row from anything but the store's public copy (no PHI), move the cursor past a
 * row not rewritten, log a row value.
 */
#include "sinks/sink_postgres_internal.h"

#include "base/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REWRITE_MAX_COMMITS 20000 /* commits walked per step (most entries of a busy store may have none) */
#define REWRITE_MAX_BYTES (8u << 20)

typedef struct {
    store_read *r;
    int64_t commit_time;
    buf records, patients, fields; /* COPY text of ms_rw_records, ms_rw_patients */
    uint64_t rows;
    bool failed;
    ms_err err;
} rewrite;

static bool rewrite_record(rewrite *rw, const log_item *it)
{
    public_record pr;
    bool found, erased;
    if (store_public_record_version(rw->r, it->id, it->id_len, rw->commit_time, it->version, &pr, &found, &rw->err))
        return false;
    if (!found) return true; /* no public copy: shipping sent no public row either */
    if (pr.deleted) {        /* erased since: its rows go with the erasure's entry */
        if (store_patient_erased(rw->r, &pr.pid, NULL, &erased, &rw->err)) return false;
        if (erased) return true;
    }
    buf *b = &rw->records;
    pg_copy_escape(b, it->id, it->id_len);
    buf_printf(b, "\t%u\t", it->version);
    pg_copy_escape(b, pr.type, strlen(pr.type));
    buf_printf(b, "\t%d\t", pr.year);
    if (pr.deleted)
        buf_puts(b, "\\N\n");
    else
        pg_copy_escape(b, pr.fields, pr.fields_len), buf_putc(b, '\n');
    rw->rows++;
    return true;
}

static bool rewrite_patient(rewrite *rw, const log_item *it)
{
    if (it->id_len != 16) return ms_fail(&rw->err, MS_ECORRUPT, "bad patient id in the commit log"), false;
    patient_id pid;
    memcpy(pid.b, it->id, 16);
    bool found;
    rw->fields.len = 0;
    if (store_public_patient_version(rw->r, &pid, rw->commit_time, it->version, &rw->fields, &found, &rw->err))
        return false;
    if (!found) return true; /* erased since (its copies are gone, its rows too once the erasure ships) */
    pg_copy_pid(&rw->patients, &pid);
    buf_printf(&rw->patients, "\t%u\t", it->version);
    pg_copy_escape(&rw->patients, rw->fields.data, rw->fields.len);
    buf_putc(&rw->patients, '\n');
    rw->rows++;
    return true;
}

static bool rewrite_item(void *ctx, const log_item *it)
{
    rewrite *rw = ctx;
    bool ok = it->kind == 'r' ? rewrite_record(rw, it) : it->kind == 'p' ? rewrite_patient(rw, it) : true;
    if (!ok) rw->failed = true;
    return ok;
}

/* Statements whose last one changes rows; their count, or -1 (then *e says what failed). */
static long long pg_changed(sink_postgres *p, const char *sql, const char *what, ms_err *e)
{
    PGresult *res = PQexec(p->conn, sql);
    long long n = -1;
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        n = strtoll(PQcmdTuples(res), NULL, 10);
    } else {
        char why[300];
        pg_error_text(res, p->conn, why, sizeof why);
        ms_fail(e, MS_EIO, "postgres: %s: %s", what, why);
    }
    PQclear(res);
    return n;
}

void pg_rewrite_note(sink_postgres *p)
{
    atomic_store(&p->m_public_sv, p->public_sv);
    atomic_store(&p->m_rewrite_to, p->rewrite_to);
    atomic_store(&p->m_rewrite_end, p->rewrite_end);
    atomic_store(&p->m_rewrite_done, p->rewrite_done);
}

/* The state in p into this node's sink_position row (made when missing, at the shipped position). */
static bool save_state(sink_postgres *p, ms_err *e)
{
    char sql[900], t[24], sv[16], to[16], end[24], done[24];
    snprintf(t, sizeof t, p->shipped_time >= 0 ? "%lld" : "NULL", (long long)p->shipped_time);
    snprintf(sv, sizeof sv, p->public_sv ? "%u" : "NULL", p->public_sv);
    snprintf(to, sizeof to, p->rewrite_to ? "%u" : "NULL", p->rewrite_to);
    snprintf(end, sizeof end, p->rewrite_to ? "%llu" : "NULL", (unsigned long long)p->rewrite_end);
    snprintf(done, sizeof done, p->rewrite_to ? "%llu" : "NULL", (unsigned long long)p->rewrite_done);
    snprintf(sql, sizeof sql,
             "INSERT INTO medstream.sink_position (sink, node, commit_pos, commit_time_us, public_schema, rewrite_to,"
             " rewrite_end, rewrite_done) VALUES ('" SINK_NAME "', '%s', %llu, %s, %s, %s, %s, %s)"
             " ON CONFLICT (sink, node) DO UPDATE SET public_schema = EXCLUDED.public_schema,"
             " rewrite_to = EXCLUDED.rewrite_to, rewrite_end = EXCLUDED.rewrite_end,"
             " rewrite_done = EXCLUDED.rewrite_done",
             p->node, (unsigned long long)p->shipped, t, sv, to, end, done);
    return pg_exec(p, sql, "sink_position", e);
}

bool pg_rewrite_check(sink_postgres *p, store_read *r, ms_err *e)
{
    uint32_t v = store_read_schema_version(r);
    if (v == (p->rewrite_to ? p->rewrite_to : p->public_sv)) return true;
    uint32_t was_sv = p->public_sv, was_to = p->rewrite_to;
    uint64_t was_end = p->rewrite_end, was_done = p->rewrite_done;
    bool rewrite = p->shipped > 0; /* nothing of this node's there yet: every row ships under v */
    if (rewrite && !p->public_sv && !p->rewrite_to) {
        /* shipped before the version was kept: laid out under 1 unless the store's schema ever changed */
        store_schema_status st;
        if (store_schema_status_get(r, &st, e) != MS_OK) return false;
        rewrite = st.last > 1;
    }
    if (rewrite) {
        p->rewrite_to = v, p->rewrite_end = p->shipped, p->rewrite_done = 0;
    } else {
        p->public_sv = v, p->rewrite_to = 0, p->rewrite_end = p->rewrite_done = 0;
    }
    if (!save_state(p, e)) { /* as it was: the next step tries again */
        p->public_sv = was_sv, p->rewrite_to = was_to, p->rewrite_end = was_end, p->rewrite_done = was_done;
        return false;
    }
    char under[64];
    if (was_to)
        snprintf(under, sizeof under, "part rewritten to version %u", was_to);
    else if (was_sv)
        snprintf(under, sizeof under, "under version %u", was_sv);
    else
        snprintf(under, sizeof under, "shipped before their version was kept");
    if (rewrite)
        ms_log(LOG_INFO, "postgres.rewrite_begins",
               "postgres: the store's public copies are under schema version %u; rewriting the public tables' rows "
               "of commits 1..%llu (%s)",
               v, (unsigned long long)p->shipped, under);
    pg_rewrite_note(p);
    return true;
}

/* The test hook (MEDSTREAM_TEST_PG_REWRITE_CRASH=N): the process killed in its Nth step, its rows updated and
 * its transaction not yet committed. */
static void crash_if(sink_postgres *p)
{
    if (!p->rewrite_crash || p->rewrite_steps != p->rewrite_crash) return;
    ms_log(LOG_WARN, "postgres.test_crash", "postgres: MEDSTREAM_TEST_PG_REWRITE_CRASH: killing this process now");
    raise(SIGKILL);
}

int pg_rewrite_step(sink_postgres *p, ms_err *e)
{
    if (!p->rewrite_to) return 0;
    store_read *r;
    if (store_read_begin(p->opt.store, &r, e) != MS_OK) return -1;
    if (store_read_schema_version(r) != p->rewrite_to) { /* switched again: the next shipping step begins anew */
        store_read_end(r);
        return 0;
    }
    rewrite rw = {.r = r};
    uint64_t at = p->rewrite_done;
    int n = 0;
    while (at < p->rewrite_end && rw.rows < p->rewrite_rows && n < REWRITE_MAX_COMMITS &&
           rw.records.len + rw.patients.len < REWRITE_MAX_BYTES) {
        bool found;
        if (store_log_entry(r, at + 1, &rw.commit_time, rewrite_item, &rw, &found, &rw.err) || rw.failed) {
            *e = rw.err;
            n = -1;
            break;
        }
        if (!found) {
            ms_fail(e, MS_ECORRUPT, "postgres: commit %llu, shipped, is not in the store's commit log",
                    (unsigned long long)(at + 1));
            n = -1;
            break;
        }
        at++, n++;
    }
    store_read_end(r);
    bool last = at >= p->rewrite_end;
    long long changed_r = 0, changed_p = 0;
    char sql[700];
    if (n >= 0) {
        p->rewrite_steps++;
        if (last)
            snprintf(sql, sizeof sql,
                     "UPDATE medstream.sink_position SET public_schema = %u, rewrite_to = NULL, rewrite_end = NULL,"
                     " rewrite_done = NULL WHERE sink = '" SINK_NAME "' AND node = '%s'",
                     p->rewrite_to, p->node);
        else
            snprintf(sql, sizeof sql,
                     "UPDATE medstream.sink_position SET rewrite_done = %llu WHERE sink = '" SINK_NAME
                     "' AND node = '%s' AND rewrite_to = %u",
                     (unsigned long long)at, p->node, p->rewrite_to);
        /* the key's equalities first, the nested loop forced: each row of the step probes the primary key (a
         * temp table has no statistics; a hash join would read the whole table for each step) */
        bool ok =
            pg_exec(p,
                    "BEGIN; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
                    " CREATE TEMP TABLE IF NOT EXISTS ms_rw_records (record_id text, version integer, type text,"
                    " year integer, fields jsonb) ON COMMIT DELETE ROWS;"
                    " CREATE TEMP TABLE IF NOT EXISTS ms_rw_patients (patient_id uuid, version integer, fields jsonb)"
                    " ON COMMIT DELETE ROWS",
                    "begin", e) &&
            pg_copy_in(p, "COPY ms_rw_records FROM STDIN", &rw.records, "ms_rw_records", e) &&
            pg_copy_in(p, "COPY ms_rw_patients FROM STDIN", &rw.patients, "ms_rw_patients", e) &&
            (!rw.records.len ||
             (changed_r = pg_changed(p,
                                     "UPDATE medstream.public_records t SET type = s.type, year = s.year, fields ="
                                     " s.fields FROM ms_rw_records s WHERE t.record_id = s.record_id AND t.version ="
                                     " s.version AND (t.type, t.year, t.fields) IS DISTINCT FROM (s.type, s.year,"
                                     " s.fields)",
                                     "rewriting public_records", e)) >= 0) &&
            (!rw.patients.len ||
             (changed_p = pg_changed(p,
                                     "UPDATE medstream.public_patients t SET fields = s.fields FROM ms_rw_patients s"
                                     " WHERE t.patient_id = s.patient_id AND t.version = s.version AND t.fields IS"
                                     " DISTINCT FROM s.fields",
                                     "rewriting public_patients", e)) >= 0);
        if (ok) crash_if(p);
        long long moved = ok ? pg_changed(p, sql, "sink_position", e) : -1;
        if (moved == 0) ms_fail(e, MS_ECONFLICT, "postgres: the rewrite's state in sink_position changed meanwhile");
        ok = moved == 1 && pg_exec(p, "COMMIT", "commit", e);
        if (!ok) {
            pg_exec(p, "ROLLBACK", "rollback", &(ms_err){0});
            n = -1;
        }
    }
    if (n >= 0) {
        atomic_fetch_add(&p->rewritten, (uint64_t)(changed_r + changed_p));
        p->rewrite_done = at;
        if (last) {
            ms_log(LOG_INFO, "postgres.rewrite_done",
                   "postgres: the public tables are under schema version %u (rows of commits 1..%llu rewritten)",
                   p->rewrite_to, (unsigned long long)p->rewrite_end);
            p->public_sv = p->rewrite_to;
            p->rewrite_to = 0, p->rewrite_end = p->rewrite_done = 0;
        }
        pg_rewrite_note(p);
    }
    buf_free(&rw.records);
    buf_free(&rw.patients);
    buf_free(&rw.fields);
    return n;
}

/*
 * sink_postgres.c - commit log -> PostgreSQL (see sink_postgres.h).
 */
#include "sinks/sink_postgres.h"

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

#define SINK_NAME "postgres"
#define SHIP_MAX_COMMITS 256       /* commit-log entries per PostgreSQL transaction, at most */
#define SHIP_MAX_BYTES (16u << 20) /* COPY text per transaction, about: bounds its latency */
#define RECONNECT_S 1.0
#define ALIVE_CHECK_S 1.0           /* caught up: how often the connection is checked (for /healthz) */
#define ALIVE_TIMEOUT_MS 2000       /* the longest wait for that check's answer */
#define MIGRATION_LOCK "7245800453" /* pg_advisory_xact_lock key: "medstream migrations" */

typedef enum { PG_STATE_OK, PG_STATE_UNREACHABLE, PG_STATE_FAILING, PG_STATE_CONFLICT } pg_state;

struct sink_postgres {
    sink_postgres_options opt;
    /* the sink's own state, for /metrics and /healthz (registered while it runs) */
    _Atomic int state;           /* pg_state */
    _Atomic uint64_t lag;        /* commits not yet shipped to PostgreSQL */
    _Atomic uint64_t lag_ms;     /* age of the oldest of them */
    _Atomic uint64_t rows;       /* rows shipped */
    _Atomic uint64_t conflicts;  /* attempts refused: a row differs from one another node shipped */
    _Atomic uint64_t staged;     /* transactions shipped again staged: a row was already there */
    histogram freshness_seconds; /* commit in the store -> committed in PostgreSQL */
    char *conninfo;
    char node[2 * STORE_NODE_ID + 1]; /* the store's node id, hex: its row of medstream.sink_position */
    pthread_t thread;
    atomic_bool stop;
    PGconn *conn;
    uint64_t shipped;     /* the position PostgreSQL holds (valid while connected) */
    int64_t shipped_time; /* the commit time of that entry, as PostgreSQL recorded it (-1: unknown) */
    bool checked;         /* the store's entry at `shipped` was found to be the one PostgreSQL has */
    bool row_conflict;    /* the last attempt met a row that differs from PostgreSQL's under a unique key */
    bool duplicate;       /* the last plain COPY met a unique key already taken (ship it again, staged) */
    uint64_t recorded;    /* the position last noted in the store (meta "sink:postgres"), for the record */
    double recorded_at;
};

/* ---- schema: versioned migrations, each applied once, in its own transaction ---- */

static const char *const migration_1 =
    "DO $$ BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'medstream_phi') THEN\n"
    "    CREATE ROLE medstream_phi NOLOGIN; END IF;\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'medstream_public') THEN\n"
    "    CREATE ROLE medstream_public NOLOGIN; END IF;\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'medstream_analyst') THEN\n"
    "    CREATE ROLE medstream_analyst NOLOGIN; END IF;\n"
    "END $$;\n"
    /* the sink writes as the owners (a CREATEROLE role is not a member of the roles it made, in 15) */
    "GRANT medstream_phi, medstream_public TO CURRENT_USER;\n"
    "GRANT USAGE, CREATE ON SCHEMA medstream TO medstream_phi, medstream_public;\n" /* owners need CREATE */
    "GRANT USAGE ON SCHEMA medstream TO medstream_analyst;\n"
    "CREATE TABLE medstream.info (key text PRIMARY KEY, value text NOT NULL);\n"
    "CREATE TABLE medstream.sink_position (sink text PRIMARY KEY, commit_pos bigint NOT NULL,\n"
    "  shipped_at timestamptz NOT NULL DEFAULT now());\n"
    /* PHI: owned by medstream_phi */
    "CREATE TABLE medstream.patient_index (patient_id uuid PRIMARY KEY, name_norm text NOT NULL,\n"
    "  dob date NOT NULL, UNIQUE (name_norm, dob));\n"
    "CREATE TABLE medstream.phi_patient_versions (patient_id uuid NOT NULL, version integer NOT NULL,\n"
    "  fields jsonb NOT NULL, valid_from timestamptz NOT NULL, changed_by text NOT NULL,\n"
    "  PRIMARY KEY (patient_id, version));\n"
    "ALTER TABLE medstream.phi_patient_versions ALTER COLUMN fields SET COMPRESSION lz4;\n"
    "CREATE TABLE medstream.phi_patients (patient_id uuid PRIMARY KEY, version integer NOT NULL,\n"
    "  fields jsonb NOT NULL, valid_from timestamptz NOT NULL);\n"
    "ALTER TABLE medstream.phi_patients ALTER COLUMN fields SET COMPRESSION lz4;\n"
    "CREATE TABLE medstream.phi_records (record_id text NOT NULL, version integer NOT NULL,\n"
    "  patient_id uuid NOT NULL, type text NOT NULL, ts timestamptz NOT NULL,\n"
    "  valid_from timestamptz NOT NULL, body jsonb NOT NULL, PRIMARY KEY (record_id, version));\n"
    "ALTER TABLE medstream.phi_records ALTER COLUMN body SET COMPRESSION lz4;\n"
    "CREATE INDEX phi_records_patient ON medstream.phi_records (patient_id, ts);\n"
    /* the versions with their end: the next version's start (several versions in one commit: only the
     * last is ever visible, exactly as over HTTP) */
    "CREATE VIEW medstream.phi_patient_versions_t AS\n"
    "  SELECT patient_id, version, fields, valid_from, changed_by,\n"
    "         lead(valid_from) OVER (PARTITION BY patient_id ORDER BY version) AS valid_to\n"
    "  FROM medstream.phi_patient_versions;\n"
    "CREATE FUNCTION medstream.phi_patient_as_of(pid uuid, t timestamptz)\n"
    "  RETURNS TABLE (patient_id uuid, version integer, fields jsonb, valid_from timestamptz,\n"
    "                 valid_to timestamptz)\n"
    "  LANGUAGE sql STABLE AS $f$\n"
    "    SELECT v.patient_id, v.version, v.fields, v.valid_from,\n"
    "           (SELECT min(n.valid_from) FROM medstream.phi_patient_versions n\n"
    "             WHERE n.patient_id = v.patient_id AND n.version > v.version)\n"
    "    FROM medstream.phi_patient_versions v\n"
    "    WHERE v.patient_id = pid AND v.valid_from <= t\n"
    "    ORDER BY v.valid_from DESC, v.version DESC LIMIT 1 $f$;\n"
    "REVOKE ALL ON FUNCTION medstream.phi_patient_as_of(uuid, timestamptz) FROM PUBLIC;\n"
    /* public: owned by medstream_public */
    "CREATE TABLE medstream.public_patients (patient_id uuid NOT NULL, version integer NOT NULL,\n"
    "  fields jsonb NOT NULL, valid_from timestamptz NOT NULL, PRIMARY KEY (patient_id, version));\n"
    "CREATE TABLE medstream.public_records (record_id text NOT NULL, version integer NOT NULL,\n"
    "  patient_id uuid NOT NULL, type text NOT NULL, year integer NOT NULL, fields jsonb NOT NULL,\n"
    "  valid_from timestamptz NOT NULL, PRIMARY KEY (record_id, version));\n"
    "CREATE INDEX public_records_type_year ON medstream.public_records (type, year);\n"
    "CREATE INDEX public_records_patient ON medstream.public_records (patient_id);\n"
    "ALTER TABLE medstream.patient_index OWNER TO medstream_phi;\n"
    "ALTER TABLE medstream.phi_patient_versions OWNER TO medstream_phi;\n"
    "ALTER TABLE medstream.phi_patients OWNER TO medstream_phi;\n"
    "ALTER TABLE medstream.phi_records OWNER TO medstream_phi;\n"
    "ALTER VIEW medstream.phi_patient_versions_t OWNER TO medstream_phi;\n"
    "ALTER FUNCTION medstream.phi_patient_as_of(uuid, timestamptz) OWNER TO medstream_phi;\n"
    "ALTER TABLE medstream.public_patients OWNER TO medstream_public;\n"
    "ALTER TABLE medstream.public_records OWNER TO medstream_public;\n"
    "GRANT SELECT ON medstream.public_patients, medstream.public_records TO medstream_analyst;\n";

/* The shipped position also names its commit (by the store's commit time), so that a store that is not
 * the one PostgreSQL followed (restored from an older copy) is noticed, never shipped over. */
static const char *const migration_3 = "ALTER TABLE medstream.sink_position ADD COLUMN commit_time_us bigint;\n";

/* Deleted records (DELETE /v1/records/{id}): a tombstone version, a row with deleted = true and no body
 * (no public fields), as in the store. */
static const char *const migration_4 =
    "ALTER TABLE medstream.phi_records ADD COLUMN deleted boolean NOT NULL DEFAULT false;\n"
    "ALTER TABLE medstream.phi_records ALTER COLUMN body DROP NOT NULL;\n"
    "ALTER TABLE medstream.public_records ADD COLUMN deleted boolean NOT NULL DEFAULT false;\n"
    "ALTER TABLE medstream.public_records ALTER COLUMN fields DROP NOT NULL;\n";

/* One position per node (store_node_id): the nodes of one cluster (stores sharing a cluster key, so one
 * fingerprint) ship into one database, each from its own commit log. The row of a store from before (node
 * '') is taken over by that store at its next connect (pg_connect). */
static const char *const migration_5 = "ALTER TABLE medstream.sink_position ADD COLUMN node text NOT NULL DEFAULT '';\n"
                                       "ALTER TABLE medstream.sink_position DROP CONSTRAINT sink_position_pkey;\n"
                                       "ALTER TABLE medstream.sink_position ADD PRIMARY KEY (sink, node);\n";

/* phi_patients' history, SQL:2011 style with the periods extension: system time = the PostgreSQL
 * transaction that shipped the version. */
static const char *const history_periods =
    "CREATE EXTENSION IF NOT EXISTS periods CASCADE;\n"
    "SELECT periods.add_system_time_period('medstream.phi_patients', 'system_time_start', 'system_time_end');\n"
    "SELECT periods.add_system_versioning('medstream.phi_patients');\n"
    "CREATE INDEX phi_patients_history_id ON medstream.phi_patients_history (patient_id, system_time_end);\n"
    "ALTER TABLE medstream.phi_patients_history OWNER TO medstream_phi;\n"
    "INSERT INTO medstream.info VALUES ('history', 'periods');\n";

/* The same shape without the extension: a trigger moves the old row to the history table. */
static const char *const history_trigger =
    "ALTER TABLE medstream.phi_patients ADD COLUMN system_time_start timestamptz NOT NULL\n"
    "  DEFAULT transaction_timestamp();\n"
    "CREATE TABLE medstream.phi_patients_history (LIKE medstream.phi_patients,\n"
    "  system_time_end timestamptz NOT NULL);\n"
    "CREATE INDEX phi_patients_history_id ON medstream.phi_patients_history (patient_id, system_time_end);\n"
    "CREATE FUNCTION medstream.phi_patients_versioning() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  IF OLD.system_time_start < transaction_timestamp() THEN\n"
    "    INSERT INTO medstream.phi_patients_history\n"
    "      VALUES (OLD.patient_id, OLD.version, OLD.fields, OLD.valid_from, OLD.system_time_start,\n"
    "              transaction_timestamp());\n"
    "  END IF;\n"
    "  NEW.system_time_start := transaction_timestamp();\n"
    "  RETURN NEW;\n"
    "END $f$;\n"
    "CREATE TRIGGER phi_patients_versioning BEFORE UPDATE ON medstream.phi_patients\n"
    "  FOR EACH ROW EXECUTE FUNCTION medstream.phi_patients_versioning();\n"
    "ALTER TABLE medstream.phi_patients_history OWNER TO medstream_phi;\n"
    "ALTER FUNCTION medstream.phi_patients_versioning() OWNER TO medstream_phi;\n"
    "INSERT INTO medstream.info VALUES ('history', 'trigger');\n";

/* A PostgreSQL error without row values: SQLSTATE and the names of what it is about. */
static void pg_error_text(const PGresult *res, PGconn *c, char *out, size_t cap)
{
    if (!res) {
        /* no result: a connection-level message (host, port, auth), never row data */
        snprintf(out, cap, "%s", c ? PQerrorMessage(c) : "no connection");
        size_t n = strlen(out);
        while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
            out[--n] = 0;
        return;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state) { /* made by libpq, not the server: the connection broke */
        pg_error_text(NULL, c, out, cap);
        return;
    }
    const char *table = PQresultErrorField(res, PG_DIAG_TABLE_NAME);
    const char *column = PQresultErrorField(res, PG_DIAG_COLUMN_NAME);
    const char *cons = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    snprintf(out, cap, "SQLSTATE %s%s%s%s%s%s%s", state ? state : "?", table ? " table " : "", table ? table : "",
             column ? " column " : "", column ? column : "", cons ? " constraint " : "", cons ? cons : "");
}

/* Run statements; true when they succeeded. */
static bool pg_exec(sink_postgres *p, const char *sql, const char *what, ms_err *e)
{
    PGresult *res = PQexec(p->conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        char why[300];
        pg_error_text(res, p->conn, why, sizeof why);
        ms_fail(e, MS_EIO, "postgres: %s: %s", what, why);
    }
    PQclear(res);
    return ok;
}

/* One text value of a one-row query, or NULL. */
static char *pg_value(sink_postgres *p, const char *sql, const char *what, bool *ok, ms_err *e)
{
    PGresult *res = PQexec(p->conn, sql);
    char *v = NULL;
    *ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!*ok) {
        char why[300];
        pg_error_text(res, p->conn, why, sizeof why);
        ms_fail(e, MS_EIO, "postgres: %s: %s", what, why);
    } else if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0)) {
        v = ms_strndup(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    }
    PQclear(res);
    return v;
}

static ms_code migrate(sink_postgres *p, ms_err *e)
{
    static const struct {
        int version;
        const char *description;
    } migrations[] = {{1, "schema, roles, PHI and public tables"},
                      {2, "phi_patients system-time history"},
                      {3, "commit time of the shipped position"},
                      {4, "deleted records (tombstone rows)"},
                      {5, "sink position per node"}};
    if (!pg_exec(p,
                 "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ");"
                 "CREATE SCHEMA IF NOT EXISTS medstream;"
                 "CREATE TABLE IF NOT EXISTS medstream.migrations (version integer PRIMARY KEY,"
                 " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); COMMIT;",
                 "migrations table", e)) {
        pg_exec(p, "ROLLBACK", "rollback", &(ms_err){0});
        return MS_EIO;
    }
    for (size_t i = 0; i < sizeof migrations / sizeof migrations[0]; i++) {
        char sql[160];
        bool ok;
        if (!pg_exec(p, "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")", "migration lock", e)) goto fail;
        snprintf(sql, sizeof sql, "SELECT 1 FROM medstream.migrations WHERE version = %d", migrations[i].version);
        char *have = pg_value(p, sql, "migrations", &ok, e);
        if (!ok) goto fail;
        if (have) { /* applied before: nothing twice */
            free(have);
            pg_exec(p, "COMMIT", "commit", e);
            continue;
        }
        const char *body = migrations[i].version == 5   ? migration_5
                           : migrations[i].version == 4 ? migration_4
                           : migrations[i].version == 3 ? migration_3
                                                        : migration_1;
        if (migrations[i].version == 2) {
            bool periods = false;
            if (p->opt.history != PG_HISTORY_TRIGGER) {
                char *avail =
                    pg_value(p, "SELECT 1 FROM pg_available_extensions WHERE name = 'periods'", "extensions", &ok, e);
                if (!ok) goto fail;
                periods = avail != NULL;
                free(avail);
                if (!periods && p->opt.history == PG_HISTORY_PERIODS) {
                    ms_fail(e, MS_EINVAL, "postgres: the periods extension is not installed (postgresql-15-periods)");
                    goto fail;
                }
            }
            body = periods ? history_periods : history_trigger;
            /* auto: periods is installed but this role may not create it (not trusted: superuser only) */
            if (periods && p->opt.history == PG_HISTORY_AUTO) {
                ms_err why = {0};
                if (!pg_exec(p, "SAVEPOINT periods", "savepoint", e)) goto fail;
                if (pg_exec(p, history_periods, migrations[i].description, &why)) {
                    body = NULL;
                } else {
                    ms_log(LOG_WARN, "postgres.history_trigger", "postgres: %s; keeping history with a trigger instead",
                           why.msg);
                    if (!pg_exec(p, "ROLLBACK TO SAVEPOINT periods", "rollback", e)) goto fail;
                    body = history_trigger;
                }
            }
        }
        if (body && !pg_exec(p, body, migrations[i].description, e)) goto fail;
        char *esc = PQescapeLiteral(p->conn, migrations[i].description, strlen(migrations[i].description));
        snprintf(sql, sizeof sql, "INSERT INTO medstream.migrations (version, description) VALUES (%d, %s)",
                 migrations[i].version, esc ? esc : "''");
        PQfreemem(esc);
        if (!pg_exec(p, sql, "migrations", e) || !pg_exec(p, "COMMIT", "commit", e)) goto fail;
        ms_log(LOG_INFO, "postgres.migration", "postgres: applied migration %d (%s)", migrations[i].version,
               migrations[i].description);
    }
    return MS_OK;
fail:
    pg_exec(p, "ROLLBACK", "rollback", &(ms_err){0});
    return MS_EIO;
}

/* Server notices ("already exists, skipping") are not logged: their text is the server's to choose. */
static void ignore_notice(void *arg, const char *message) { (void)arg, (void)message; }

/* One cluster per database: the first store to ship writes its fingerprint (a hash of its secret id key,
 * which reveals nothing of it) into medstream.info; a store with another id key is refused, since it numbers
 * patients otherwise. The nodes of one cluster share the id key (the cluster key: store_options), so they
 * share the fingerprint and each ships from its own commit log at its own position (per node id). */
static bool claim_database(sink_postgres *p, ms_err *e)
{
    unsigned char msg[27 + 32], md[SHA256_DIGEST_LENGTH];
    memcpy(msg, "medstream store fingerprint", 27);
    memcpy(msg + 27, store_id_key(p->opt.store), 32);
    SHA256(msg, sizeof msg, md);
    char fp[33], sql[200];
    for (int i = 0; i < 16; i++)
        snprintf(fp + 2 * i, 3, "%02x", md[i]);
    snprintf(sql, sizeof sql,
             "INSERT INTO medstream.info VALUES ('store', '%s') ON CONFLICT (key) DO NOTHING;"
             " SELECT value FROM medstream.info WHERE key = 'store'",
             fp);
    bool ok;
    char *have = pg_value(p, sql, "info", &ok, e);
    bool mine = ok && have && strcmp(have, fp) == 0;
    if (ok && !mine)
        ms_fail(e, MS_ECONFLICT,
                "postgres: this database is fed by another medstream store (medstream.info 'store' is %.32s, this "
                "store is %s): one store, or the nodes of one cluster (one --cluster-key-file), per database",
                have ? have : "?", fp);
    free(have);
    return mine;
}

/* Connect, migrate, read the shipped position; *reached tells a refused set-up from no connection. */
static ms_code pg_connect(sink_postgres *p, bool *reached, ms_err *e)
{
    *reached = false;
    p->conn = PQconnectdb(p->conninfo);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        char why[300];
        pg_error_text(NULL, p->conn, why, sizeof why);
        ms_fail(e, MS_EIO, "postgres: cannot connect: %s", why);
        PQfinish(p->conn);
        p->conn = NULL;
        return MS_EIO;
    }
    PQsetNoticeProcessor(p->conn, ignore_notice, NULL);
    *reached = true;
    bool ok;
    char *history = NULL, *pos = NULL;
    if (migrate(p, e) != MS_OK) goto fail;
    history = pg_value(p, "SELECT value FROM medstream.info WHERE key = 'history'", "info", &ok, e);
    if (!ok || !claim_database(p, e)) goto fail;
    char sql[400];
    /* the position of a store from before positions per node (node ''): only that store has the fingerprint */
    snprintf(sql, sizeof sql,
             "UPDATE medstream.sink_position SET node = '%s' WHERE sink = '" SINK_NAME "' AND node = '' AND NOT EXISTS"
             " (SELECT 1 FROM medstream.sink_position WHERE sink = '" SINK_NAME "' AND node = '%s')",
             p->node, p->node);
    if (!pg_exec(p, sql, "sink_position", e)) goto fail;
    snprintf(sql, sizeof sql,
             "SELECT commit_pos::text || ' ' || coalesce(commit_time_us, -1)::text FROM medstream.sink_position"
             " WHERE sink = '" SINK_NAME "' AND node = '%s'",
             p->node);
    pos = pg_value(p, sql, "position", &ok, e);
    if (!ok) goto fail;
    p->shipped = 0, p->shipped_time = -1, p->checked = false;
    if (pos) {
        char *sp;
        p->shipped = strtoull(pos, &sp, 10);
        p->shipped_time = strtoll(sp, NULL, 10);
    }
    ms_log(LOG_INFO, "postgres.connected",
           "postgres: connected; phi_patients history by %s; node %s shipped through commit %llu",
           history ? history : "?", p->node, (unsigned long long)p->shipped);
    free(history);
    free(pos);
    return MS_OK;
fail:
    free(history);
    free(pos);
    PQfinish(p->conn);
    p->conn = NULL;
    return MS_EIO;
}

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

static void put_pid(buf *b, const patient_id *pid)
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
    put_pid(b, &rv.pid);
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
        put_pid(b, &pr.pid);
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
    put_pid(b, &pid);
    buf_printf(b, "\t%u\t", pv.version);
    pg_copy_escape(b, sh->fields.data, sh->fields.len);
    buf_putc(b, '\t');
    put_time(b, pv.valid_from);
    buf_putc(b, '\t');
    pg_copy_escape(b, pv.cause_record, pv.cause_record_len);
    buf_putc(b, '\n');
    put_pid(&sh->latest, &pid);
    buf_printf(&sh->latest, "\t%u\n", pv.version);
    sh->rows++;
    if (store_public_patient_version(sh->r, &pid, sh->commit_time, it->version, &sh->fields, &found, &sh->err))
        return false;
    if (found) {
        b = &sh->public_patients;
        put_pid(b, &pid);
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
        put_pid(b, &pid);
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
        put_pid(&sh->erased, &pid);
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

static bool copy_in(sink_postgres *p, const char *sql, const buf *data, const char *what, ms_err *e)
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
    if (!copy_in(p, sql, data, t->table, e)) return false;
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

/* Erased patients (ids: "uuid,uuid,..."): every row of theirs, in every table the sink writes, deleted in
 * the transaction that stores the position past the erasure (after the COPYs: an older entry shipped in
 * the same transaction may have added a row of theirs). The current state first, then its history (the
 * periods extension moves a deleted row into the history table). */
static bool erase_rows(sink_postgres *p, const buf *ids, ms_err *e)
{
    if (!ids->len) return true;
    static const char *const tables[] = {"phi_patients", "phi_patients_history", "phi_patient_versions",
                                         "phi_records",  "public_records",       "public_patients",
                                         "patient_index"};
    buf sql = {0};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        buf_printf(&sql, "DELETE FROM medstream.%s WHERE patient_id = ANY('{%.*s}'::uuid[]);", tables[i], (int)ids->len,
                   ids->data);
    bool ok = pg_exec(p, sql.data, "deleting an erased patient's rows", e);
    buf_free(&sql);
    return ok;
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
           copy_rows(p, &t_public_records, &sh->public_records, staged, e) &&
           copy_rows(p, &t_patient_index, &sh->index, staged, e) &&
           copy_rows(p, &t_phi_patient_versions, &sh->versions, staged, e) &&
           copy_rows(p, &t_public_patients, &sh->public_patients, staged, e) &&
           copy_in(p, "COPY ms_latest FROM STDIN", &sh->latest, "ms_latest", e) &&
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
        last[0] = 0;
        atomic_store(&p->state, PG_STATE_OK);
        record_position(p, n == 0);
        if (n > 0) {
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
    return st == PG_STATE_OK && !behind;
}

ms_code sink_postgres_start(sink_postgres **out, const sink_postgres_options *opt, ms_err *e)
{
    sink_postgres *p = ms_calloc(1, sizeof *p);
    p->opt = *opt;
    p->conninfo = ms_strndup(opt->conninfo, strlen(opt->conninfo));
    p->opt.conninfo = NULL;
    for (int i = 0; i < STORE_NODE_ID; i++)
        snprintf(p->node + 2 * i, 3, "%02x", store_node_id(opt->store)[i]);
    char *why = NULL;
    PQconninfoOption *parsed = PQconninfoParse(p->conninfo, &why);
    if (!parsed) {
        ms_fail(e, MS_EINVAL, "--postgres: %s", why ? why : "cannot parse the connection string");
        PQfreemem(why);
        free(p->conninfo);
        free(p);
        return MS_EINVAL;
    }
    PQconninfoFree(parsed);
    atomic_store(&p->state, PG_STATE_UNREACHABLE);
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

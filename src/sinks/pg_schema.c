/*
 * pg_schema.c - the PostgreSQL sink's schema and connection (sink_postgres_internal.h): versioned
 * migrations, each applied once in its own transaction under an advisory lock (several nodes may start at
 * once); the claim of a database by one store's cluster (a fingerprint of the id key); the connection and
 * this node's shipped position.
 *
 * Must never: put a row's value in an error (pg_error_text gives SQLSTATE and names only), or apply a
 * migration twice.
 */
#include "sinks/sink_postgres_internal.h"

#include "base/log.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The analyst reads the public tables without valid_from: a commit time is finer than the year the public
 * copies carry (a feed in real time makes it close to the date of service), and the public API withholds
 * it too. The role writing them (the sink, medstream_public's owner) keeps every column. */
static const char *const migration_6 =
    "REVOKE SELECT ON medstream.public_patients, medstream.public_records FROM medstream_analyst;\n"
    "GRANT SELECT (patient_id, version, fields) ON medstream.public_patients TO medstream_analyst;\n"
    "GRANT SELECT (record_id, version, patient_id, type, year, fields, deleted) ON medstream.public_records\n"
    "  TO medstream_analyst;\n";

/* The public tables follow the store's schema version in force (sink_postgres.h, "Schema changes"): the version
 * the rows this node shipped are laid out under (NULL: shipped before this was kept, unknown), and the rewrite
 * under way to another: to that version, the commits 1..rewrite_end (shipped under an older one), those through
 * rewrite_done rewritten. Kept with the position, each step in the transaction of the rows it rewrites. */
static const char *const migration_7 = "ALTER TABLE medstream.sink_position ADD COLUMN public_schema integer,\n"
                                       "  ADD COLUMN rewrite_to integer, ADD COLUMN rewrite_end bigint,\n"
                                       "  ADD COLUMN rewrite_done bigint;\n";

/* phi_patient_as_of(pid, t) answers what GET /v1/patients/{id}?as_of=t answers: the version in force at t with
 * the valid_to a read at t gave (null: a newer version committed after t was not there yet). It gave the next
 * version's start, as the HTTP read did until 2026-12-03. CREATE OR REPLACE keeps its owner and grants. */
static const char *const migration_8 =
    "CREATE OR REPLACE FUNCTION medstream.phi_patient_as_of(pid uuid, t timestamptz)\n"
    "  RETURNS TABLE (patient_id uuid, version integer, fields jsonb, valid_from timestamptz,\n"
    "                 valid_to timestamptz)\n"
    "  LANGUAGE sql STABLE AS $f$\n"
    "    SELECT v.patient_id, v.version, v.fields, v.valid_from,\n"
    "           (SELECT min(n.valid_from) FROM medstream.phi_patient_versions n\n"
    "             WHERE n.patient_id = v.patient_id AND n.version > v.version AND n.valid_from <= t)\n"
    "    FROM medstream.phi_patient_versions v\n"
    "    WHERE v.patient_id = pid AND v.valid_from <= t\n"
    "    ORDER BY v.valid_from DESC, v.version DESC LIMIT 1 $f$;\n";

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
void pg_error_text(const PGresult *res, PGconn *c, char *out, size_t cap)
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
bool pg_exec(sink_postgres *p, const char *sql, const char *what, ms_err *e)
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
char *pg_value(sink_postgres *p, const char *sql, const char *what, bool *ok, ms_err *e)
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
                      {5, "sink position per node"},
                      {6, "the analyst reads public tables without commit times"},
                      {7, "the public tables' schema version and their rewrite"},
                      {8, "phi_patient_as_of answers valid_to as a read at its instant did"}};
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
        const char *body = migrations[i].version == 8   ? migration_8
                           : migrations[i].version == 7 ? migration_7
                           : migrations[i].version == 6 ? migration_6
                           : migrations[i].version == 5 ? migration_5
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
ms_code pg_connect(sink_postgres *p, bool *reached, ms_err *e)
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
    char sql[600];
    /* the position of a store from before positions per node (node ''): only that store has the fingerprint */
    snprintf(sql, sizeof sql,
             "UPDATE medstream.sink_position SET node = '%s' WHERE sink = '" SINK_NAME "' AND node = '' AND NOT EXISTS"
             " (SELECT 1 FROM medstream.sink_position WHERE sink = '" SINK_NAME "' AND node = '%s')",
             p->node, p->node);
    if (!pg_exec(p, sql, "sink_position", e)) goto fail;
    snprintf(sql, sizeof sql,
             "SELECT concat_ws(' ', commit_pos, coalesce(commit_time_us, -1), coalesce(public_schema, 0),"
             " coalesce(rewrite_to, 0), coalesce(rewrite_end, 0), coalesce(rewrite_done, 0))"
             " FROM medstream.sink_position"
             " WHERE sink = '" SINK_NAME "' AND node = '%s'",
             p->node);
    pos = pg_value(p, sql, "position", &ok, e);
    if (!ok) goto fail;
    p->shipped = 0, p->shipped_time = -1, p->checked = false;
    p->public_sv = p->rewrite_to = 0, p->rewrite_end = p->rewrite_done = 0;
    if (pos) {
        char *sp;
        p->shipped = strtoull(pos, &sp, 10);
        p->shipped_time = strtoll(sp, &sp, 10);
        p->public_sv = (uint32_t)strtoul(sp, &sp, 10);
        p->rewrite_to = (uint32_t)strtoul(sp, &sp, 10);
        p->rewrite_end = strtoull(sp, &sp, 10);
        p->rewrite_done = strtoull(sp, NULL, 10);
    }
    pg_rewrite_note(p);
    ms_log(LOG_INFO, "postgres.connected",
           "postgres: connected; phi_patients history by %s; node %s shipped through commit %llu; public tables under "
           "schema version %u (0: not known yet)",
           history ? history : "?", p->node, (unsigned long long)p->shipped, p->public_sv);
    if (p->rewrite_to)
        ms_log(LOG_INFO, "postgres.rewrite_resumed",
               "postgres: resuming the rewrite of the public tables to schema version %u at commit %llu of %llu",
               p->rewrite_to, (unsigned long long)p->rewrite_done, (unsigned long long)p->rewrite_end);
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

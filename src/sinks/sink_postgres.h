/*
 * sink_postgres.h - PostgreSQL as the system of record for SQL users: a sink that follows the store's
 * commit log and keeps schema `medstream` an exact, fresh copy of what medstream acknowledged.
 *
 * DESIGN: one thread, one libpq connection. On connect it applies the schema migrations it has not yet
 * applied (table medstream.migrations; an advisory lock keeps two processes from migrating at once).
 * Then it reads the position it shipped (medstream.sink_position) from PostgreSQL itself, and ships
 * groups of commit-log entries, each group in ONE PostgreSQL transaction: COPY of the record versions,
 * patient versions, public copies and new patient-index rows, the current-state upsert, and the new
 * position. So a crash of either side never loses or doubles a row: the transaction commits with its
 * position or not at all, and the next start resumes after the position PostgreSQL has.
 * While PostgreSQL is down or slow, ingest goes on into the embedded store; /healthz says degraded and
 * /metrics shows the lag (commits not yet shipped); the sink reconnects every second and catches up.
 * While caught up it checks the connection every second (SELECT 1, answered within 2 s or the
 * connection is dropped), so /healthz says unreachable promptly even when there is nothing to ship.
 *
 * Tables (see sink_postgres.c for the DDL): patient_index, phi_patient_versions (every patient version,
 * with medstream's commit time: the as-of source, function phi_patient_as_of), phi_patients (current
 * state, SQL:2011 system-versioned by the `periods` extension with phi_patients_history, or by a
 * trigger where periods is missing: medstream.info key 'history'), phi_records (bodies as jsonb, lz4),
 * public_patients, public_records. Roles: medstream_phi owns the PHI tables, medstream_public the public
 * ones, medstream_analyst may read only the public ones.
 *
 * Schema changes (pg_rewrite.c): every row a shipping step writes is under the schema version its read
 * transaction is under; when that version changes, the public rows of every commit shipped before are rewritten
 * with the store's copies under the new one, in steps between groups of commits, each step in one transaction
 * with its cursor (sink_position.rewrite_done), and sink_position.public_schema records the version they are under.
 * The position carries the commit time of its entry; a store whose entry there differs (restored from
 * an older copy) is refused, never shipped over what PostgreSQL has.
 * One cluster per database: the first store to ship writes its fingerprint (of its id key) into
 * medstream.info; a store of another id key is refused (state failing). The nodes of one cluster share the
 * id key (store_options.cluster_key) and each ships at its own position (sink_position per node id). Rows two
 * nodes both ship are no-ops when equal; a row that differs under a unique key (patient_index's patient id
 * or identity, a record or patient version) rolls the transaction back as a conflict (state conflict, a
 * metric, a log line with counts only), retried every second, never overwritten nor skipped.
 * Must never: write PHI into a log line (PostgreSQL error texts can quote row values, so only the
 * SQLSTATE and the table/column/constraint names are logged), or advance the position past a commit
 * that is not in PostgreSQL.
 */
#ifndef MS_SINK_POSTGRES_H
#define MS_SINK_POSTGRES_H

#include "store/store.h"

typedef enum { PG_HISTORY_AUTO, PG_HISTORY_PERIODS, PG_HISTORY_TRIGGER } pg_history_mode;

typedef struct {
    const char *conninfo;    /* libpq URL or key=value string */
    pg_history_mode history; /* how phi_patients keeps its history (auto: periods if available) */
    store *store;
} sink_postgres_options;

typedef struct sink_postgres sink_postgres;

ms_code sink_postgres_start(sink_postgres **out, const sink_postgres_options *opt, ms_err *e);
/* Does libpq take conninfo (a URI or key/value string)? MS_EINVAL "--postgres: <libpq's reason>" if not,
 * the string's password written *** wherever the reason quotes it. serve checks it with its options. */
ms_code sink_postgres_check_conninfo(const char *conninfo, ms_err *e);
/* Finish the transaction in hand, then stop. */
void sink_postgres_stop(sink_postgres *p);

/* COPY text format: append s with backslash, tab, newline and carriage return escaped. */
void pg_copy_escape(buf *out, const char *s, size_t n);

#endif

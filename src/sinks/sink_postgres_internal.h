/*
 * sink_postgres_internal.h - what the PostgreSQL sink's two files share (sink_postgres.c: shipping, its
 * thread, /metrics and /healthz; pg_schema.c: the schema's migrations, the database's claim, the
 * connection). Private to src/sinks: nothing else includes it.
 */
#ifndef MS_SINK_POSTGRES_INTERNAL_H
#define MS_SINK_POSTGRES_INTERNAL_H

#include "sinks/sink_postgres.h"

#include "base/metrics.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>

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

/* A PostgreSQL error without row values: SQLSTATE and the names of what it is about. */
void pg_error_text(const PGresult *res, PGconn *c, char *out, size_t cap);
/* Run statements on p's connection; true when they succeeded (else *e says what, naming `what`). */
bool pg_exec(sink_postgres *p, const char *sql, const char *what, ms_err *e);
/* One text value of a one-row query (malloc'd), or NULL; *ok false when the query failed. */
char *pg_value(sink_postgres *p, const char *sql, const char *what, bool *ok, ms_err *e);
/* Connect, migrate, claim the database for this store's cluster, read this node's shipped position;
 * *reached tells a refused set-up from no connection. */
ms_code pg_connect(sink_postgres *p, bool *reached, ms_err *e);

#endif

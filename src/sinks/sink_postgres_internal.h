/*
 * sink_postgres_internal.h - what the PostgreSQL sink's three files share (sink_postgres.c: shipping, its
 * thread, /metrics and /healthz; pg_schema.c: the schema's migrations, the database's claim, the
 * connection; pg_rewrite.c: the public tables brought to a new schema version). Private to src/sinks: nothing
 * else includes it.
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
#define PG_REWRITE_ROWS 5000        /* public rows per transaction of a rewrite after a schema change */
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
    /* the public tables' schema version (pg_rewrite.c; PostgreSQL's sink_position row holds the truth, read at
     * connect): the version this node's rows are under (0: unknown, shipped before it was kept), and the
     * rewrite under way (rewrite_to 0: none) of commits 1..rewrite_end, done through rewrite_done */
    uint32_t public_sv, rewrite_to;
    uint64_t rewrite_end, rewrite_done;
    _Atomic uint32_t m_public_sv, m_rewrite_to; /* the same, for /metrics and /healthz */
    _Atomic uint64_t m_rewrite_end, m_rewrite_done;
    _Atomic uint64_t rewritten; /* public rows rewritten (changed) */
    uint32_t rewrite_rows;      /* public rows per rewrite transaction, at most */
    int rewrite_crash;          /* test hook (MEDSTREAM_TEST_PG_REWRITE_CRASH=N): SIGKILL in the Nth step, 0: never */
    int rewrite_steps;          /* steps run by this process */
};

/* A PostgreSQL error without row values: SQLSTATE and the names of what it is about. */
void pg_error_text(const PGresult *res, PGconn *c, char *out, size_t cap);
/* Run statements on p's connection; true when they succeeded (else *e says what, naming `what`). */
bool pg_exec(sink_postgres *p, const char *sql, const char *what, ms_err *e);
/* One text value of a one-row query (malloc'd), or NULL; *ok false when the query failed. */
char *pg_value(sink_postgres *p, const char *sql, const char *what, bool *ok, ms_err *e);
/* A patient id as COPY text (its canonical form: nothing to escape). */
void pg_copy_pid(buf *b, const patient_id *pid);
/* COPY data in with sql inside the open transaction; true when it succeeded. */
bool pg_copy_in(sink_postgres *p, const char *sql, const buf *data, const char *what, ms_err *e);

/* The public tables and the store's schema version in force (pg_rewrite.c). Called by each shipping step with
 * its read transaction r, before it ships anything read under it: when r's version is not the one the public
 * tables are under (nor the one a rewrite under way goes to), a rewrite to it of every commit shipped so far
 * begins (kept in PostgreSQL first). False: failed (*e says why). */
bool pg_rewrite_check(sink_postgres *p, store_read *r, ms_err *e);
/* One step of the rewrite under way (none: 0): at most rewrite_rows public rows, in one PostgreSQL transaction
 * with the rewrite's progress; the last step records the version. The number of commits walked, or -1 on
 * failure (rolled back: nothing moved). */
int pg_rewrite_step(sink_postgres *p, ms_err *e);
/* p's rewrite state into the atomics /metrics and /healthz read. */
void pg_rewrite_note(sink_postgres *p);

/* Connect, migrate, claim the database for this store's cluster, read this node's shipped position;
 * *reached tells a refused set-up from no connection. */
ms_code pg_connect(sink_postgres *p, bool *reached, ms_err *e);

#endif

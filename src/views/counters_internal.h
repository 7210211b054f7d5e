/*
 * counters_internal.h - what counters.c (the set of counters, definitions, queries, metrics, start and
 * stop) and counter_follow.c (the follower and the builder threads, the saved state) share, private to
 * src/views: the structs behind counters.h's handle, the locks' rules (counters.c's header comment), and
 * the few calls one file makes of the other (cs_ prefix).
 *
 * Must never: be included from outside src/views.
 */
#ifndef MS_COUNTERS_INTERNAL_H
#define MS_COUNTERS_INTERNAL_H

#ifndef MS_VIEWS_INTERNAL
#error "views/counters_internal.h is private to src/views: include views/counters.h"
#endif

#include "base/json_scan.h"
#include "base/metrics.h"
#include "views/counters.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define SCAN_STEP_IDS 10000    /* record ids a building step visits in one read transaction */
#define ENTRIES_PER_TXN 64     /* commit-log entries the follower applies in one read transaction */
#define QUERY_WAIT_S 1.0       /* how long a query waits for the follower to catch up */
#define BUILD_WAIT_S 2.0       /* how long a query waits for a counter being built */
#define INDEX_SCAN_MAX 100000  /* children a per-parent count reads from the index at most */
#define COUNTER_KIND "counter" /* store definitions (store.h): a counter defined over HTTP, its canonical JSON */
#define BEHIND_S 10.0          /* /healthz: counters are "behind" past this lag */

typedef enum { LIVE_BUILDING, LIVE_READY } live_state;

typedef struct {
    counter_def def;
    bool is_public; /* every field it reads is public under the schema of the counters' sv (counters.sv): computed
                       from the public copy; changed only with sv, under reg (write) */
    bool from_file;
    uint64_t serial;
    pthread_mutex_t lock;
    counter *ring;    /* under lock */
    uint64_t changes; /* +1s and -1s applied (under lock) */
    live_state state; /* set to READY under pos_lock and reg (read) */
    bool rebuild;     /* being built again after an erasure or a schema switch (under pos_lock) */
} live;

struct counters {
    store *store;
    writer *writer;       /* definitions made over HTTP are written through it */
    const schema *schema; /* the server's: the schema of the re-projection's target at start if one was under
                             way, else of the version in force then */
    schema old_schema;    /* while a re-projection was under way at start: the schema of old_sv, the version in
                             force then (have_old); fixed after counters_start, like schema */
    uint32_t old_sv;
    bool have_old;
    uint32_t sv; /* the schema version every ready counter is counted under (the public copies it reads): the one in
                    force, as the follower last saw it; changed only by the follower, under reg (write) and
                    pos_lock (cs_schema_of has each version's schema) */
    char *dir;
    double save_interval;
    pthread_rwlock_t reg;
    live **v;
    size_t n, cap;
    uint64_t next_serial;
    pthread_mutex_t defs_lock; /* one definition or removal at a time */
    pthread_mutex_t pos_lock;
    pthread_cond_t pos_cond, build_cond;
    uint64_t pos;           /* the last entry applied to every ready counter */
    bool inflight;          /* the follower is applying entries after pos */
    uint64_t start_known;   /* the store's last commit when we started: queries wait for it */
    bool dirty;             /* under pos_lock: something changed since the last save */
    uint64_t rebuild_floor; /* under pos_lock: while a counter is rebuilt after an erasure or a schema switch,
                               the position before the (first such) erasure, or the follower's at the switch:
                               the counts are exact up to there */
    pthread_t follower, builder;
    bool threads;
    atomic_bool stop;
    atomic_bool look; /* a query saw a schema version in force the counters are not under: the follower looks now */
    /* figures */
    _Atomic uint64_t m_latest, m_commits, m_versions, m_saves, m_save_failures, m_failures;
    _Atomic int64_t m_lag_us;
    _Atomic bool m_failing;
    histogram query_seconds, apply_seconds;
};

/* ---- small things ---- */

static inline void cs_timed_wait(pthread_cond_t *cv, pthread_mutex_t *m, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(cv, m, &ts);
}

/* The schema of schema version sv: the one in force at start while a re-projection was under way then, else
 * the server's (a version neither: the server's, the best there is). Lock-free: both are fixed at start. */
static inline const schema *cs_schema_of(const counters *c, uint32_t sv)
{
    return c->have_old && sv == c->old_sv ? &c->old_schema : c->schema;
}

/* Is l (with this serial) still one of the counters? Under reg. */
static inline bool cs_still_there(counters *c, const live *l, uint64_t serial)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i] == l && c->v[i]->serial == serial) return true;
    return false;
}

/* ---- a record version as the counters see it (counter_follow.c): its fields read once, from the public
 * copy or the body ---- */

typedef struct {
    record_version rv;
    bool have;                 /* a version (not absent) */
    int pub_state, body_state; /* 0 not read, 1 read, -1 failed */
    public_record pr;
    json_member pm[SCHEMA_MAX_PUBLIC];
    int npm;
    buf body;
    json_member *bm; /* RECORD_MAX_FIELDS */
    int nbm;
} version_view;

void cs_view_reset(version_view *v);
void cs_view_free(version_view *v);
/* Does the version count in l? from_public: its fields are read from the public copy (under r's schema
 * version), else from the body. -1 when the store could not be read (e set). */
int cs_view_matches(store *s, store_read *r, const live *l, bool from_public, version_view *v, ms_err *e);

/* ---- the threads and the saved state (counter_follow.c) ---- */

/* Save the ready counters at the follower's position (the follower's thread, or the stopping one). */
void cs_save_state(counters *c);
void *cs_follower_main(void *arg);
void *cs_builder_main(void *arg);

#endif

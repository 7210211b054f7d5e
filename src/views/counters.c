/*
 * counters.c - the live counters: registry, follower of the commit log, builder of new counters, saved
 * state, queries, metrics (see counters.h for the contract, src/views/README.md for the design).
 *
 * THREADS AND LOCKS. `reg` (a writer-preferring rwlock) guards the set of counters: the follower and the
 * builder hold it for reading while they apply, queries while they count, definitions and removals take
 * it for writing. `pos_lock` guards the follower's position and `inflight` (the follower is applying the
 * entries after pos); pos_cond is signalled each time pos moves. Each counter's `lock` guards its
 * counting structure (queries advance the ring too). Order: reg, then pos_lock, then a counter's lock;
 * nobody waits on pos_cond while holding reg (a definition waiting for reg would stop the follower).
 *
 * JOINING. A counter being built catches up entry by entry to the follower's position and becomes ready
 * only under pos_lock, when it has applied exactly the entries up to pos and no entry is in flight: the
 * follower takes the set of ready counters under the same lock before it applies the next entries, so
 * each entry is applied to each counter exactly once.
 */
#include "views/counters.h"

#include "base/json_write.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/timefmt.h"
#include "views/counter_state.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SCAN_STEP_IDS 10000     /* record ids a building step visits in one read transaction */
#define ENTRIES_PER_TXN 64      /* commit-log entries the follower applies in one read transaction */
#define QUERY_WAIT_S 1.0        /* how long a query waits for the follower to catch up */
#define BUILD_WAIT_S 2.0        /* how long a query waits for a counter being built */
#define INDEX_SCAN_MAX 100000   /* children a per-parent count reads from the index at most */
#define DEFS_SETTING "counters" /* store view setting: the definitions made over HTTP */
#define BEHIND_S 10.0           /* /healthz: counters are "behind" past this lag */

typedef enum { LIVE_BUILDING, LIVE_READY } live_state;

typedef struct {
    counter_def def;
    bool is_public; /* every field it reads is public: computed from the public copy */
    bool from_file;
    uint64_t serial;
    pthread_mutex_t lock;
    counter *ring;    /* under lock */
    uint64_t changes; /* +1s and -1s applied (under lock) */
    live_state state; /* set to READY under pos_lock and reg (read) */
} live;

struct counters {
    store *store;
    const schema *schema;
    char *dir;
    double save_interval;
    pthread_rwlock_t reg;
    live **v;
    size_t n, cap;
    uint64_t next_serial;
    pthread_mutex_t defs_lock; /* one definition or removal at a time (the stored list) */
    pthread_mutex_t pos_lock;
    pthread_cond_t pos_cond, build_cond;
    uint64_t pos;         /* the last entry applied to every ready counter */
    bool inflight;        /* the follower is applying entries after pos */
    uint64_t start_known; /* the store's last commit when we started: queries wait for it */
    bool dirty;           /* under pos_lock: something changed since the last save */
    pthread_t follower, builder;
    bool threads;
    atomic_bool stop;
    /* figures */
    _Atomic uint64_t m_latest, m_commits, m_versions, m_saves, m_save_failures, m_failures;
    _Atomic int64_t m_lag_us;
    _Atomic bool m_failing;
    histogram query_seconds, apply_seconds;
};

/* ---- small things ---- */

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *m, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(cv, m, &ts);
}

static live *find(counters *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i]->def.name, name) == 0) return c->v[i];
    return NULL;
}

/* Is l (with this serial) still one of the counters? Under reg. */
static bool still_there(counters *c, const live *l, uint64_t serial)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i] == l && c->v[i]->serial == serial) return true;
    return false;
}

static live *live_new(counters *c, counter_def *def, bool from_file)
{
    live *l = ms_calloc(1, sizeof *l);
    l->def = *def;
    memset(def, 0, sizeof *def);
    l->is_public = counter_def_public(&l->def, c->schema);
    l->from_file = from_file;
    l->serial = ++c->next_serial;
    pthread_mutex_init(&l->lock, NULL);
    l->ring =
        counter_new(l->def.resolution_us, l->def.max_window_us, l->def.per_parent ? l->def.max_parent_buckets : 0);
    l->state = LIVE_BUILDING;
    return l;
}

static void live_free(live *l)
{
    if (!l) return;
    counter_free(l->ring);
    counter_def_free(&l->def);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static void add_live(counters *c, live *l)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = ms_realloc(c->v, sizeof *c->v * c->cap);
    }
    c->v[c->n++] = l;
}

/* ---- a record version as the counters see it: its fields read once, from the public copy or the body ---- */

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

static void view_reset(version_view *v)
{
    v->have = false;
    v->pub_state = v->body_state = 0;
    v->npm = v->nbm = 0;
    v->body.len = 0;
}

static void view_free(version_view *v)
{
    buf_free(&v->body);
    free(v->bm);
}

static bool key_equals(const json_member *m, const char *k, size_t kl)
{
    if (!m->key_escaped) return m->key_len == kl && memcmp(m->key, k, kl) == 0;
    char stack[256];
    if (m->key_len > sizeof stack) return false;
    size_t n = json_string_decode(m->key, m->key_len, stack);
    return n == kl && memcmp(stack, k, kl) == 0;
}

/* The field's raw value in the version (public copy or body), *val NULL when absent; false when the
 * store could not be read (e set). */
static bool view_field(store *s, store_read *r, version_view *v, bool from_public, const char *field, size_t flen,
                       const char **val, size_t *len, json_type *t, ms_err *e)
{
    json_member *m;
    int n;
    *val = NULL;
    if (from_public) {
        if (v->pub_state == 0) {
            bool found;
            if (store_public_record_version(r, v->rv.record_id, v->rv.record_id_len, v->rv.valid_from, v->rv.version,
                                            &v->pr, &found, e) != MS_OK)
                return false;
            json_error je;
            v->npm = found && !v->pr.deleted
                         ? json_scan_object(v->pr.fields, v->pr.fields_len, v->pm, SCHEMA_MAX_PUBLIC, &je)
                         : 0;
            if (v->npm < 0) v->npm = 0;
            v->pub_state = 1;
        }
        m = v->pm;
        n = v->npm;
    } else {
        if (v->body_state == 0) {
            v->body.len = 0;
            if (store_record_body(s, &v->rv, &v->body, e) != MS_OK) return false;
            if (!v->bm) v->bm = ms_malloc(sizeof *v->bm * RECORD_MAX_FIELDS);
            v->nbm = json_split_object(v->body.data, v->body.len, v->bm, RECORD_MAX_FIELDS); /* validated at ingest */
            if (v->nbm < 0) v->nbm = 0;
            v->body_state = 1;
        }
        m = v->bm;
        n = v->nbm;
    }
    for (int i = 0; i < n; i++)
        if (key_equals(&m[i], field, flen)) {
            *val = m[i].val;
            *len = m[i].val_len;
            *t = m[i].type;
            return true;
        }
    return true;
}

/* Does the version count in l? -1 when the store could not be read. */
static int view_matches(store *s, store_read *r, const live *l, version_view *v, ms_err *e)
{
    if (!v->have || v->rv.deleted || !counter_type_matches(&l->def, v->rv.type, v->rv.type_len)) return 0;
    if (l->def.op == WHERE_NONE) return 1;
    const char *val;
    size_t len = 0;
    json_type t = JSON_NONE;
    if (!view_field(s, r, v, l->is_public, l->def.field, l->def.field_len, &val, &len, &t, e)) return -1;
    return counter_where_holds(&l->def, val, len, t) ? 1 : 0;
}

/* ---- applying commit-log entries ---- */

typedef struct {
    size_t li; /* index in the set */
    int64_t ts;
    int delta;
    const char *parent; /* into the item's version */
    size_t parent_len;
} change;

typedef struct {
    char id[RECORD_ID_MAX + 1];
    uint32_t id_len, version;
} item_ref;

typedef struct {
    item_ref *items;
    size_t n, cap;
} item_list;

static bool collect_item(void *ctx, const log_item *it)
{
    item_list *l = ctx;
    if (it->kind != 'r' || it->id_len == 0 || it->id_len > RECORD_ID_MAX) return true;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->items = ms_realloc(l->items, sizeof *l->items * l->cap);
    }
    item_ref *x = &l->items[l->n++];
    memcpy(x->id, it->id, it->id_len);
    x->id[it->id_len] = 0;
    x->id_len = it->id_len;
    x->version = it->version;
    return true;
}

/* What an applier keeps between entries (the follower's, the builder's). */
typedef struct {
    item_list items;
    version_view prev, cur;
    change *changes;
    size_t nchanges, capchanges;
    record_version *kept; /* the versions the changes' parents point into: 2 per item */
    size_t capkept;
    change *sorted; /* the changes by counter */
    size_t *start, capsorted, capstart;
} applier;

static void applier_free(applier *a)
{
    free(a->items.items);
    view_free(&a->prev);
    view_free(&a->cur);
    free(a->changes);
    free(a->kept);
    free(a->sorted);
    free(a->start);
    memset(a, 0, sizeof *a);
}

static void push_change(applier *a, size_t li, int64_t ts, int delta, const record_version *rv)
{
    if (a->nchanges == a->capchanges) {
        a->capchanges = a->capchanges ? a->capchanges * 2 : 256;
        a->changes = ms_realloc(a->changes, sizeof *a->changes * a->capchanges);
    }
    a->changes[a->nchanges++] = (change){li, ts, delta, rv->parent_id, rv->parent_id_len};
}

/* Apply entry pos to the counters of set: first every change is worked out (nothing applied if the store
 * cannot be read: the entry is retried whole), then each counter takes its changes under its lock. */
static ms_code apply_entry(counters *c, applier *a, store_read *r, uint64_t pos, live *const *set, size_t nset,
                           bool *found, ms_err *e)
{
    int64_t ct;
    a->items.n = 0;
    ms_code rc = store_log_entry(r, pos, &ct, collect_item, &a->items, found, e);
    if (rc != MS_OK || !*found) return rc;
    a->nchanges = 0;
    if (a->capkept < 2 * a->items.n) {
        a->capkept = 2 * a->items.n;
        a->kept = ms_realloc(a->kept, sizeof *a->kept * a->capkept);
    }
    for (size_t i = 0; i < a->items.n && nset; i++) {
        const item_ref *it = &a->items.items[i];
        view_reset(&a->cur);
        view_reset(&a->prev);
        bool have;
        if ((rc = store_record_version(r, it->id, it->id_len, ct, it->version, &a->cur.rv, &have, e)) != MS_OK)
            return rc;
        if (!have)
            return ms_fail(e, MS_ECORRUPT, "counters: commit %llu names a record version the store lacks",
                           (unsigned long long)pos);
        a->cur.have = true;
        if (it->version > 1 &&
            (rc = store_record_before(r, it->id, it->id_len, ct, it->version, &a->prev.rv, &a->prev.have, e)) != MS_OK)
            return rc;
        a->kept[2 * i] = a->prev.rv;
        a->kept[2 * i + 1] = a->cur.rv;
        for (size_t li = 0; li < nset; li++) {
            int was = view_matches(c->store, r, set[li], &a->prev, e);
            int is = was < 0 ? 0 : view_matches(c->store, r, set[li], &a->cur, e);
            if (was < 0 || is < 0) return e->code ? e->code : MS_EIO;
            const record_version *p = &a->kept[2 * i], *n = &a->kept[2 * i + 1];
            if (was && is && p->ts_us == n->ts_us && p->parent_id_len == n->parent_id_len &&
                memcmp(p->parent_id, n->parent_id, p->parent_id_len) == 0)
                continue; /* counted the same way before and after */
            if (was) push_change(a, li, p->ts_us, -1, p);
            if (is) push_change(a, li, n->ts_us, +1, n);
        }
    }
    atomic_fetch_add(&c->m_versions, a->items.n);
    /* the changes by counter (a counting sort, stable: each counter takes its own in commit order) */
    if (a->capsorted < a->nchanges || a->capstart < nset + 1) {
        a->capsorted = a->nchanges > a->capsorted ? a->nchanges : a->capsorted;
        a->capstart = nset + 1 > a->capstart ? nset + 1 : a->capstart;
        a->sorted = ms_realloc(a->sorted, sizeof *a->sorted * (a->capsorted ? a->capsorted : 1));
        a->start = ms_realloc(a->start, sizeof *a->start * a->capstart);
    }
    memset(a->start, 0, sizeof *a->start * (nset + 1));
    for (size_t k = 0; k < a->nchanges; k++)
        a->start[a->changes[k].li + 1]++;
    for (size_t li = 0; li < nset; li++)
        a->start[li + 1] += a->start[li];
    for (size_t k = 0; k < a->nchanges; k++)
        a->sorted[a->start[a->changes[k].li]++] = a->changes[k];
    int64_t now = ms_now_us();
    size_t k = 0;
    for (size_t li = 0; li < nset; li++) { /* start[li] is now where counter li's changes end */
        if (k == a->start[li]) continue;
        live *l = set[li];
        pthread_mutex_lock(&l->lock);
        for (; k < a->start[li]; k++) {
            const change *x = &a->sorted[k];
            counter_add(l->ring, x->ts, x->delta, x->parent, x->parent_len, ct, now);
            l->changes++;
        }
        pthread_mutex_unlock(&l->lock);
    }
    return MS_OK;
}

/* ---- the saved state ---- */

/* Save the ready counters at the follower's position (the follower's thread, or the stopping one). */
static void save_state(counters *c)
{
    pthread_rwlock_rdlock(&c->reg);
    pthread_mutex_lock(&c->pos_lock);
    uint64_t pos = c->pos;
    c->dirty = false;
    pthread_mutex_unlock(&c->pos_lock);
    int64_t ct = 0;
    ms_err e = {0};
    store_read *r;
    bool ok = true;
    if (pos && store_read_begin(c->store, &r, &e) == MS_OK) {
        bool found = false;
        ok = store_log_entry(r, pos, &ct, NULL, NULL, &found, &e) == MS_OK && found;
        store_read_end(r);
    } else if (pos) {
        ok = false;
    }
    counter_state_entry *ent = ms_calloc(c->n ? c->n : 1, sizeof *ent);
    buf *defs = ms_calloc(c->n ? c->n : 1, sizeof *defs), *states = ms_calloc(c->n ? c->n : 1, sizeof *states);
    uint32_t n = 0;
    for (size_t i = 0; i < c->n && ok; i++) {
        live *l = c->v[i];
        if (l->state != LIVE_READY) continue;
        counter_def_json(&l->def, &defs[n]);
        pthread_mutex_lock(&l->lock);
        counter_save(l->ring, &states[n]);
        ent[n] = (counter_state_entry){defs[n].data, defs[n].len, states[n].data, states[n].len, l->changes};
        pthread_mutex_unlock(&l->lock);
        n++;
    }
    size_t total = c->n;
    pthread_rwlock_unlock(&c->reg);
    buf bytes = {0};
    if (ok) {
        counter_state_encode(&bytes, pos, ct, ms_now_us(), ent, n);
        ok = counter_state_write(c->dir, &bytes, &e) == MS_OK;
    }
    if (ok) {
        atomic_fetch_add(&c->m_saves, 1);
    } else {
        atomic_fetch_add(&c->m_save_failures, 1);
        ms_log(LOG_WARN, "counters.save_failed", "counters: state not saved (a restart rebuilds or replays more): %s",
               e.msg);
        pthread_mutex_lock(&c->pos_lock);
        c->dirty = true;
        pthread_mutex_unlock(&c->pos_lock);
    }
    for (size_t i = 0; i < total; i++) {
        buf_free(&defs[i]);
        buf_free(&states[i]);
    }
    free(defs);
    free(states);
    free(ent);
    buf_free(&bytes);
}

/* ---- the follower ---- */

static uint64_t store_last_pos(counters *c)
{
    store_read *r;
    ms_err e;
    uint64_t pos = 0;
    if (store_read_begin(c->store, &r, &e) == MS_OK) {
        pos = store_commit_pos(r);
        store_read_end(r);
    }
    return pos;
}

static void *follower_main(void *arg)
{
    counters *c = arg;
    pthread_setname_np(pthread_self(), "ms-counters");
    applier a = {0};
    live **set = NULL;
    size_t capset = 0;
    double last_save = ms_mono_s(), last_look = 0;
    uint64_t latest = c->start_known;
    bool logged = false;
    while (!atomic_load(&c->stop)) {
        uint64_t told = atomic_load(&g_metrics.commit_position);
        if (told > latest) latest = told;
        pthread_mutex_lock(&c->pos_lock);
        uint64_t pos = c->pos;
        bool dirty = c->dirty;
        pthread_mutex_unlock(&c->pos_lock);
        if (pos >= latest && ms_mono_s() - last_look > 0.1) { /* commits the writer did not announce (tests) */
            uint64_t stored = store_last_pos(c);
            if (stored > latest) latest = stored;
            last_look = ms_mono_s();
        }
        atomic_store(&c->m_latest, latest);
        if (pos >= latest) {
            atomic_store(&c->m_lag_us, 0);
            if (dirty && ms_mono_s() - last_save >= c->save_interval) {
                save_state(c);
                last_save = ms_mono_s();
            }
            usleep(1000);
            continue;
        }
        /* apply the next entries to the ready counters */
        pthread_rwlock_rdlock(&c->reg);
        pthread_mutex_lock(&c->pos_lock);
        c->inflight = true;
        size_t nset = 0;
        if (capset < c->n) {
            capset = c->n;
            set = ms_realloc(set, sizeof *set * capset);
        }
        for (size_t i = 0; i < c->n; i++)
            if (c->v[i]->state == LIVE_READY) set[nset++] = c->v[i];
        pthread_mutex_unlock(&c->pos_lock);
        ms_err e = {0};
        store_read *r = NULL;
        ms_code rc = store_read_begin(c->store, &r, &e);
        uint64_t done = pos;
        for (int k = 0; rc == MS_OK && k < ENTRIES_PER_TXN && done < latest; k++) {
            bool found = false;
            double t0 = ms_mono_s();
            rc = apply_entry(c, &a, r, done + 1, set, nset, &found, &e);
            if (rc != MS_OK || !found) break;
            histogram_observe(&c->apply_seconds, ms_mono_s() - t0);
            done++;
            atomic_fetch_add(&c->m_commits, 1);
        }
        int64_t lag = 0;
        if (rc == MS_OK && done < latest) {
            int64_t t;
            bool found = false;
            if (store_log_entry(r, done + 1, &t, NULL, NULL, &found, &e) == MS_OK && found) lag = ms_now_us() - t;
        }
        if (r) store_read_end(r);
        pthread_mutex_lock(&c->pos_lock);
        c->pos = done;
        c->inflight = false;
        if (done > pos) c->dirty = true;
        pthread_cond_broadcast(&c->pos_cond);
        pthread_mutex_unlock(&c->pos_lock);
        pthread_rwlock_unlock(&c->reg);
        atomic_store(&c->m_lag_us, lag > 0 ? lag : 0);
        if (rc != MS_OK) {
            atomic_fetch_add(&c->m_failures, 1);
            atomic_store(&c->m_failing, true);
            if (!logged)
                ms_log(LOG_ERROR, "counters.retry", "counters: commit %llu not applied; retrying every 0.2 s: %s",
                       (unsigned long long)done + 1, e.msg);
            logged = true;
            usleep(200000);
            continue;
        }
        if (logged) ms_log(LOG_INFO, "counters.recovered", "counters: applying commits again");
        logged = false;
        atomic_store(&c->m_failing, false);
        if (ms_mono_s() - last_save >= c->save_interval) {
            save_state(c);
            last_save = ms_mono_s();
        }
    }
    free(set);
    applier_free(&a);
    return NULL;
}

/* ---- the builder ---- */

typedef struct {
    counters *c;
    live *l;
    store_read *r;
    version_view v;
    int64_t now;
    ms_code rc;
    ms_err *e;
    uint64_t counted;
} build_scan;

static bool build_record(void *ctx, const record_version *rv)
{
    build_scan *b = ctx;
    view_reset(&b->v);
    b->v.rv = *rv;
    b->v.have = true;
    int m = view_matches(b->c->store, b->r, b->l, &b->v, b->e);
    if (m < 0) {
        b->rc = b->e->code ? b->e->code : MS_EIO;
        return false;
    }
    if (m) {
        pthread_mutex_lock(&b->l->lock);
        /* INT64_MIN as the commit time: a stored record is never "late" */
        counter_add(b->l->ring, rv->ts_us, 1, rv->parent_id, rv->parent_id_len, INT64_MIN, b->now);
        b->l->changes++;
        pthread_mutex_unlock(&b->l->lock);
        b->counted++;
    }
    return true;
}

/* Build l: the records live at the follower's position, then the entries after it, then join. false if
 * it went away or the store failed (retried later). */
static bool build(counters *c, live *l, uint64_t serial, const char *name, ms_err *e)
{
    double t0 = ms_mono_s();
    pthread_mutex_lock(&c->pos_lock);
    uint64_t from = c->pos;
    pthread_mutex_unlock(&c->pos_lock);
    ms_code rc = MS_OK;
    int64_t as_of = -1;
    store_read *r;
    if (from) {
        if ((rc = store_read_begin(c->store, &r, e)) != MS_OK) return false;
        bool found = false;
        rc = store_log_entry(r, from, &as_of, NULL, NULL, &found, e);
        store_read_end(r);
        if (rc != MS_OK || !found) return false;
    }
    build_scan b = {.c = c, .l = l, .e = e};
    buf after = {0}, last = {0};
    bool more = as_of >= 0, ok = true;
    while (more && ok && !atomic_load(&c->stop)) {
        pthread_rwlock_rdlock(&c->reg);
        ok = still_there(c, l, serial) && store_read_begin(c->store, &r, e) == MS_OK;
        if (ok) {
            b.r = r;
            b.now = ms_now_us();
            b.rc = MS_OK;
            rc = store_records_scan(r, after.data, after.len, as_of, SCAN_STEP_IDS, build_record, &b, &last, &more, e);
            store_read_end(r);
            ok = rc == MS_OK && b.rc == MS_OK;
            after.len = 0;
            buf_put(&after, last.data, last.len);
        }
        pthread_rwlock_unlock(&c->reg);
    }
    buf_free(&after);
    buf_free(&last);
    view_free(&b.v);
    if (!ok || atomic_load(&c->stop)) return false;
    /* catch up with the follower, then join it */
    applier a = {0};
    uint64_t at = from;
    for (;;) {
        if (atomic_load(&c->stop)) {
            ok = false;
            break;
        }
        pthread_rwlock_rdlock(&c->reg);
        if (!still_there(c, l, serial)) {
            pthread_rwlock_unlock(&c->reg);
            ok = false;
            break;
        }
        pthread_mutex_lock(&c->pos_lock);
        uint64_t target = c->pos;
        bool joined = false, wait = false;
        if (at == target && !c->inflight) {
            l->state = LIVE_READY;
            c->dirty = true;
            joined = true;
        } else if (at == target) {
            wait = true;
        }
        pthread_mutex_unlock(&c->pos_lock);
        if (joined || wait) {
            pthread_rwlock_unlock(&c->reg);
            if (joined) break;
            pthread_mutex_lock(&c->pos_lock); /* the follower is applying the next entries: wait for them */
            if (c->pos == at) timed_wait(&c->pos_cond, &c->pos_lock, 0.05);
            pthread_mutex_unlock(&c->pos_lock);
            continue;
        }
        r = NULL;
        rc = store_read_begin(c->store, &r, e);
        for (; rc == MS_OK && at < target;) {
            bool found = false;
            live *set[1] = {l};
            rc = apply_entry(c, &a, r, at + 1, set, 1, &found, e);
            if (rc != MS_OK || !found) break;
            at++;
        }
        if (r) store_read_end(r);
        pthread_rwlock_unlock(&c->reg);
        if (rc != MS_OK) {
            ok = false;
            break;
        }
    }
    applier_free(&a);
    if (ok)
        ms_log_fields(LOG_INFO, "counters.built",
                      (log_field[]){LOG_STR("counter", name), LOG_UINT("records", b.counted),
                                    LOG_UINT("position", at), LOG_MS("ms", (ms_mono_s() - t0) * 1000)},
                      4, "counters: counter %s built from the stored records", name); /* l may be gone */
    return ok;
}

static void *builder_main(void *arg)
{
    counters *c = arg;
    pthread_setname_np(pthread_self(), "ms-counters-b");
    while (!atomic_load(&c->stop)) {
        pthread_rwlock_rdlock(&c->reg);
        live *l = NULL;
        uint64_t serial = 0;
        char name[COUNTER_NAME_MAX + 1];
        for (size_t i = 0; i < c->n && !l; i++)
            if (c->v[i]->state == LIVE_BUILDING) l = c->v[i], serial = c->v[i]->serial;
        if (l) memcpy(name, l->def.name, sizeof name);
        pthread_rwlock_unlock(&c->reg);
        if (!l) {
            pthread_mutex_lock(&c->pos_lock);
            timed_wait(&c->build_cond, &c->pos_lock, 0.2);
            pthread_mutex_unlock(&c->pos_lock);
            continue;
        }
        ms_err e = {0};
        if (!build(c, l, serial, name, &e) && !atomic_load(&c->stop)) {
            pthread_rwlock_rdlock(&c->reg);
            bool there = still_there(c, l, serial);
            if (there) { /* start it again from scratch */
                pthread_mutex_lock(&l->lock);
                counter_free(l->ring);
                l->ring = counter_new(l->def.resolution_us, l->def.max_window_us,
                                      l->def.per_parent ? l->def.max_parent_buckets : 0);
                l->changes = 0;
                pthread_mutex_unlock(&l->lock);
            }
            pthread_rwlock_unlock(&c->reg);
            if (there) {
                ms_log(LOG_WARN, "counters.build_retry", "counters: building a counter failed; retrying: %s", e.msg);
                usleep(500000);
            }
        }
    }
    return NULL;
}

/* ---- definitions ---- */

/* The definitions made over HTTP, as the stored JSON array. Under reg. */
static void api_defs_json(counters *c, const live *skip, const counter_def *extra, buf *out)
{
    buf_putc(out, '[');
    bool first = true;
    for (size_t i = 0; i < c->n; i++) {
        if (c->v[i]->from_file || c->v[i] == skip) continue;
        if (!first) buf_putc(out, ',');
        counter_def_json(&c->v[i]->def, out);
        first = false;
    }
    if (extra) {
        if (!first) buf_putc(out, ',');
        counter_def_json(extra, out);
    }
    buf_putc(out, ']');
}

/* Each definition of a JSON array; fn gets the n-th (1-based) parsed, or fails with its error. */
static ms_code parse_array(const char *text, size_t len, const char *what, counter_def **out, size_t *n, ms_err *e)
{
    const char *p = json_skip_ws(text, text + len), *end = text + len;
    *out = NULL;
    *n = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p = json_skip_ws(text + 3, end);
    if (p == end || *p != '[') return ms_fail(e, MS_EINVAL, "%s: expected a JSON array of counter definitions", what);
    json_type t;
    json_error je;
    const char *q = json_scan_value(text, p, end, &t, &je);
    if (!q || json_skip_ws(q, end) != end)
        return ms_fail(e, MS_EINVAL, "%s: not valid JSON (%s at byte %zu)", what, q ? "trailing text" : je.msg,
                       q ? (size_t)(q - text) : je.offset);
    end = q - 1; /* the closing bracket */
    p = json_skip_ws(p + 1, end);
    size_t cap = 0;
    while (p < end) {
        q = json_scan_value(text, p, end, &t, &je);
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = ms_realloc(*out, sizeof **out * cap);
        }
        ms_err one;
        if (!q || counter_def_parse(&(*out)[*n], p, (size_t)(q - p), &one) != MS_OK) {
            for (size_t i = 0; i < *n; i++)
                counter_def_free(&(*out)[i]);
            free(*out);
            *out = NULL;
            size_t entry = *n + 1;
            *n = 0;
            return ms_fail(e, MS_EINVAL, "%s: entry %zu: %s", what, entry, q ? one.msg : "not valid JSON");
        }
        (*n)++;
        p = json_skip_ws(q, end);
        if (p < end && *p == ',') p = json_skip_ws(p + 1, end);
    }
    return MS_OK;
}

ms_code counters_define(counters *c, const char *json, size_t len, buf *out, ms_err *e)
{
    counter_def d;
    ms_code rc = counter_def_parse(&d, json, len, e);
    if (rc != MS_OK) return rc;
    pthread_mutex_lock(&c->defs_lock);
    pthread_rwlock_rdlock(&c->reg);
    bool taken = find(c, d.name) != NULL;
    buf list = {0};
    if (!taken) api_defs_json(c, NULL, &d, &list);
    pthread_rwlock_unlock(&c->reg);
    if (taken)
        rc = ms_fail(e, MS_ECONFLICT, "counter \"%s\" exists (DELETE /v1/counters/%s first)", d.name, d.name);
    else
        rc = store_view_setting_set(c->store, DEFS_SETTING, list.data, list.len, e);
    buf_free(&list);
    if (rc == MS_OK) {
        counter_def_json(&d, out);
        ms_log_fields(LOG_INFO, "counters.defined", (log_field[]){LOG_STR("counter", d.name)}, 1,
                      "counters: counter %s defined; building it from the stored records", d.name);
        live *l = live_new(c, &d, false);
        pthread_rwlock_wrlock(&c->reg);
        add_live(c, l);
        pthread_rwlock_unlock(&c->reg);
        pthread_mutex_lock(&c->pos_lock);
        pthread_cond_broadcast(&c->build_cond);
        pthread_mutex_unlock(&c->pos_lock);
    }
    counter_def_free(&d);
    pthread_mutex_unlock(&c->defs_lock);
    return rc;
}

ms_code counters_remove(counters *c, const char *name, ms_err *e)
{
    pthread_mutex_lock(&c->defs_lock);
    pthread_rwlock_rdlock(&c->reg);
    live *l = find(c, name);
    ms_code rc = MS_OK;
    buf list = {0};
    if (!l)
        rc = ms_fail(e, MS_ENOTFOUND, "no counter of that name");
    else if (l->from_file)
        rc = ms_fail(e, MS_ECONFLICT, "counter \"%s\" is defined by serve --counters FILE: remove it there", name);
    else
        api_defs_json(c, l, NULL, &list);
    pthread_rwlock_unlock(&c->reg);
    if (rc == MS_OK) rc = store_view_setting_set(c->store, DEFS_SETTING, list.data, list.len, e);
    buf_free(&list);
    if (rc == MS_OK) {
        pthread_rwlock_wrlock(&c->reg);
        for (size_t i = 0; i < c->n; i++)
            if (c->v[i] == l) {
                memmove(&c->v[i], &c->v[i + 1], sizeof *c->v * (c->n - i - 1));
                c->n--;
                break;
            }
        pthread_rwlock_unlock(&c->reg);
        ms_log_fields(LOG_INFO, "counters.removed", (log_field[]){LOG_STR("counter", l->def.name)}, 1,
                      "counters: counter %s removed", l->def.name);
        live_free(l);
        pthread_mutex_lock(&c->pos_lock);
        c->dirty = true;
        pthread_mutex_unlock(&c->pos_lock);
    }
    pthread_mutex_unlock(&c->defs_lock);
    return rc;
}

bool counters_lookup(counters *c, const char *name, bool *is_public, bool *per_parent)
{
    pthread_rwlock_rdlock(&c->reg);
    live *l = find(c, name);
    if (l) {
        *is_public = l->is_public;
        *per_parent = l->def.per_parent;
    }
    pthread_rwlock_unlock(&c->reg);
    return l != NULL;
}

/* The canonical definition with the live figures after it. Under reg. */
static void live_json(live *l, buf *out)
{
    counter_def_json(&l->def, out);
    out->len--; /* the closing brace */
    counter_stats st;
    pthread_mutex_lock(&l->lock);
    counter_stats_get(l->ring, &st);
    pthread_mutex_unlock(&l->lock);
    buf_printf(out,
               ",\"origin\":\"%s\",\"access\":\"%s\",\"state\":\"%s\",\"memory_bytes\":%zu,\"late\":%llu,"
               "\"future_buckets\":%llu",
               l->from_file ? "file" : "api", l->is_public ? "public" : "phi",
               l->state == LIVE_READY ? "ready" : "building", st.memory, (unsigned long long)st.late,
               (unsigned long long)st.future_buckets);
    if (l->def.per_parent)
        buf_printf(out, ",\"parent_buckets\":%llu,\"parent_dropped\":%llu", (unsigned long long)st.parent_buckets,
                   (unsigned long long)st.parent_dropped);
    buf_putc(out, '}');
}

void counters_list(counters *c, bool with_phi, buf *out)
{
    buf_puts(out, "{\"counters\":[");
    pthread_rwlock_rdlock(&c->reg);
    bool first = true;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->v[i]->is_public && !with_phi) continue;
        if (!first) buf_putc(out, ',');
        live_json(c->v[i], out);
        first = false;
    }
    pthread_rwlock_unlock(&c->reg);
    buf_puts(out, "]}");
}

/* ---- queries ---- */

typedef struct {
    counters *c;
    live *l;
    store_read *r;
    version_view v;
    const char *parent;
    size_t parent_len;
    int64_t count;
    uint64_t visited;
    ms_code rc;
    ms_err *e;
} index_count;

static bool on_child(void *ctx, int64_t ts, const char *rid, size_t len, const void *key, size_t key_len)
{
    (void)key, (void)key_len;
    index_count *x = ctx;
    if (++x->visited > INDEX_SCAN_MAX) {
        x->rc = ms_fail(x->e, MS_ESTOPPED, "parent: more than %d children to count from the index", INDEX_SCAN_MAX);
        return false;
    }
    bool found;
    view_reset(&x->v);
    if ((x->rc = store_record_at(x->r, rid, len, INT64_MAX, &x->v.rv, &found, x->e)) != MS_OK) return false;
    if (!found || x->v.rv.deleted || x->v.rv.ts_us != ts || x->v.rv.parent_id_len != x->parent_len ||
        memcmp(x->v.rv.parent_id, x->parent, x->parent_len) != 0)
        return true; /* an entry of an older version: it moved, or is deleted */
    x->v.have = true;
    int m = view_matches(x->c->store, x->r, x->l, &x->v, x->e);
    if (m < 0) {
        x->rc = x->e->code ? x->e->code : MS_EIO;
        return false;
    }
    x->count += m;
    return true;
}

/* A parent's count read from the children index: exact at the store's last commit, O(its children in the
 * window). For windows the counter's per-parent memory could not keep (counter.h, PER PARENT). */
static ms_code count_from_index(counters *c, live *l, const char *parent, size_t plen, int64_t from, int64_t to,
                                int64_t *count, ms_err *e)
{
    index_count x = {.c = c, .l = l, .parent = parent, .parent_len = plen, .e = e};
    ms_code rc = store_read_begin(c->store, &x.r, e);
    if (rc != MS_OK) return rc;
    rc = store_children(x.r, parent, plen, from + 1, to + 1, NULL, 0, on_child, &x, e);
    store_read_end(x.r);
    view_free(&x.v);
    if (rc == MS_OK) rc = x.rc;
    *count = x.count;
    return rc;
}

ms_code counters_query(counters *c, const char *name, const counter_query *q, buf *out, ms_err *e)
{
    double t0 = ms_mono_s();
    uint64_t target = atomic_load(&g_metrics.commit_position);
    if (c->start_known > target) target = c->start_known;
    /* read your writes: every commit acknowledged before this query is in the counts */
    pthread_mutex_lock(&c->pos_lock);
    if (q->at_once) target = c->pos;
    while (c->pos < target && ms_mono_s() - t0 < QUERY_WAIT_S && !atomic_load(&c->stop))
        timed_wait(&c->pos_cond, &c->pos_lock, 0.01);
    uint64_t pos = c->pos;
    pthread_mutex_unlock(&c->pos_lock);
    if (pos < target)
        return ms_fail(e, MS_ESTOPPED, "counters are %llu commits behind the store (catching up); retry",
                       (unsigned long long)(target - pos));
    pthread_rwlock_rdlock(&c->reg);
    live *l = find(c, name);
    while (l && l->state == LIVE_BUILDING && ms_mono_s() - t0 < BUILD_WAIT_S) {
        pthread_rwlock_unlock(&c->reg);
        pthread_mutex_lock(&c->pos_lock);
        timed_wait(&c->pos_cond, &c->pos_lock, 0.01);
        pthread_mutex_unlock(&c->pos_lock);
        pthread_rwlock_rdlock(&c->reg);
        l = find(c, name);
    }
    ms_code rc = MS_OK;
    if (!l)
        rc = ms_fail(e, MS_ENOTFOUND, "no counter of that name");
    else if (l->state == LIVE_BUILDING)
        rc = ms_fail(e, MS_ESTOPPED, "counter \"%s\" is being built from the stored records; retry", name);
    counter_answer ans = {0};
    int64_t now = ms_now_us(), at = q->at == INT64_MAX ? now : q->at;
    int64_t window = q->window_us ? q->window_us : (l ? l->def.max_window_us : 0);
    const char *source = "memory";
    if (rc == MS_OK) {
        pthread_mutex_lock(&l->lock);
        rc = counter_count(l->ring, window, at, now, q->parent, q->parent_len, &ans, e);
        pthread_mutex_unlock(&l->lock);
    }
    if (rc == MS_OK && q->parent && ans.incomplete) {
        source = "index";
        rc = count_from_index(c, l, q->parent, q->parent_len, ans.from, ans.to, &ans.count, e);
    }
    if (rc == MS_OK) {
        char w[32], res[32];
        counter_duration_format(window, w, sizeof w);
        counter_duration_format(l->def.resolution_us, res, sizeof res);
        buf_puts(out, "{\"name\":");
        jw_cstr(out, l->def.name);
        buf_printf(out, ",\"window\":\"%s\",\"at\":", w);
        jw_time(out, at);
        buf_puts(out, ",\"from\":");
        jw_time(out, ans.from);
        buf_puts(out, ",\"to\":");
        jw_time(out, ans.to);
        buf_printf(out, ",\"count\":%lld,\"resolution\":\"%s\",\"position\":%llu,\"source\":\"%s\"}",
                   (long long)ans.count, res, (unsigned long long)pos, source);
    }
    pthread_rwlock_unlock(&c->reg);
    histogram_observe(&c->query_seconds, ms_mono_s() - t0);
    return rc;
}

/* ---- metrics and health ---- */

static void counters_metrics(void *ctx, buf *out)
{
    counters *c = ctx;
    pthread_mutex_lock(&c->pos_lock);
    uint64_t pos = c->pos;
    pthread_mutex_unlock(&c->pos_lock);
    uint64_t latest = atomic_load(&c->m_latest);
    metrics_gauge(out, "medstream_counter_position", "The last commit-log entry the counters reflect.", pos);
    metrics_gauge(out, "medstream_counter_lag_commits", "Commits not yet applied to the counters.",
                  latest > pos ? latest - pos : 0);
    buf_printf(out,
               "# HELP medstream_counter_lag_seconds Age of the oldest commit not yet applied to the counters.\n"
               "# TYPE medstream_counter_lag_seconds gauge\nmedstream_counter_lag_seconds %.3f\n",
               (double)atomic_load(&c->m_lag_us) / 1e6);
    metrics_counter(out, "medstream_counter_commits_total", "Commit-log entries applied to the counters.",
                    atomic_load(&c->m_commits));
    metrics_counter(out, "medstream_counter_versions_total", "Record versions the counters' follower examined.",
                    atomic_load(&c->m_versions));
    metrics_counter(out, "medstream_counter_saves_total", "Counter states saved (DATA/counters.state).",
                    atomic_load(&c->m_saves));
    metrics_counter(out, "medstream_counter_save_failures_total", "Counter states that could not be saved.",
                    atomic_load(&c->m_save_failures));
    metrics_histogram(out, "medstream_counter_query_seconds", "Time to answer a counter query (waits included).",
                      &c->query_seconds);
    metrics_histogram(out, "medstream_counter_apply_seconds",
                      "Time the follower took to apply one commit to every counter.", &c->apply_seconds);
    static const struct {
        const char *name, *type, *help;
    } per[] = {
        {"medstream_counter_late_total", "counter",
         "Records whose event time had left the counter's max_window when they were committed (not counted)."},
        {"medstream_counter_changes_total", "counter", "Counts added or taken away (+1/-1) by the follower."},
        {"medstream_counter_memory_bytes", "gauge", "Memory held by the counter's buckets."},
        {"medstream_counter_future_buckets", "gauge", "Distinct buckets of event times still to come."},
        {"medstream_counter_parent_dropped_total", "counter",
         "Per-parent counts not kept (the counter's max_parent_buckets): such windows are counted from the index."},
        {"medstream_counter_building", "gauge", "1 while the counter is being built from the stored records."},
    };
    pthread_rwlock_rdlock(&c->reg);
    for (size_t k = 0; k < sizeof per / sizeof per[0]; k++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", per[k].name, per[k].help, per[k].name, per[k].type);
        for (size_t i = 0; i < c->n; i++) {
            live *l = c->v[i];
            counter_stats st;
            pthread_mutex_lock(&l->lock);
            counter_stats_get(l->ring, &st);
            uint64_t changes = l->changes;
            pthread_mutex_unlock(&l->lock);
            uint64_t v = k == 0   ? st.late
                         : k == 1 ? changes
                         : k == 2 ? st.memory
                         : k == 3 ? st.future_buckets
                         : k == 4 ? st.parent_dropped
                                  : l->state == LIVE_BUILDING;
            /* the name is A-Z a-z 0-9 _ . - (counter_def.h): nothing to escape, never a record's value */
            buf_printf(out, "%s{counter=\"%s\"} %llu\n", per[k].name, l->def.name, (unsigned long long)v);
        }
    }
    pthread_rwlock_unlock(&c->reg);
}

static bool counters_health(void *ctx, buf *out)
{
    counters *c = ctx;
    bool failing = atomic_load(&c->m_failing);
    double lag = (double)atomic_load(&c->m_lag_us) / 1e6;
    if (!failing && lag <= BEHIND_S) return true;
    buf_printf(out, ",\"counters\":\"%s\",\"counters_lag_seconds\":%.1f", failing ? "failing" : "behind", lag);
    return false;
}

/* ---- start and stop ---- */

static ms_code load_definitions(counters *c, const counters_options *o, ms_err *e)
{
    counter_def *defs = NULL;
    size_t n = 0;
    ms_code rc = MS_OK;
    if (o->file) {
        buf text = {0};
        char what[4200];
        snprintf(what, sizeof what, "--counters %s", o->file);
        rc = buf_read_file(&text, o->file, e);
        if (rc == MS_OK) rc = parse_array(text.data ? text.data : "", text.len, what, &defs, &n, e);
        buf_free(&text);
        for (size_t i = 0; i < n && rc == MS_OK; i++) {
            if (find(c, defs[i].name))
                rc = ms_fail(e, MS_EINVAL, "%s: counter \"%s\" is defined twice", what, defs[i].name);
            else
                add_live(c, live_new(c, &defs[i], true));
        }
        for (size_t i = 0; i < n; i++)
            counter_def_free(&defs[i]);
        free(defs);
        if (rc != MS_OK) return rc;
    }
    store_read *r;
    if ((rc = store_read_begin(c->store, &r, e)) != MS_OK) return rc;
    buf stored = {0};
    bool found = false;
    rc = store_view_setting(r, DEFS_SETTING, &stored, &found, e);
    c->start_known = store_commit_pos(r);
    store_read_end(r);
    if (rc == MS_OK && found) {
        ms_err bad;
        if (parse_array(stored.data ? stored.data : "[]", stored.len, "stored counters", &defs, &n, &bad) != MS_OK) {
            ms_log(LOG_ERROR, "counters.stored_invalid", "counters: the stored definitions are not valid: %s", bad.msg);
            n = 0;
        }
        bool replaced = false;
        for (size_t i = 0; i < n; i++) {
            if (find(c, defs[i].name)) {
                ms_log_fields(LOG_WARN, "counters.replaced", (log_field[]){LOG_STR("counter", defs[i].name)}, 1,
                              "counters: counter %s of --counters replaces the one defined over HTTP", defs[i].name);
                replaced = true;
            } else {
                add_live(c, live_new(c, &defs[i], false));
            }
        }
        for (size_t i = 0; i < n; i++)
            counter_def_free(&defs[i]);
        free(defs);
        if (replaced) {
            buf list = {0};
            api_defs_json(c, NULL, NULL, &list);
            rc = store_view_setting_set(c->store, DEFS_SETTING, list.data, list.len, e);
            buf_free(&list);
        }
    }
    buf_free(&stored);
    return rc;
}

/* Load the saved state into the counters whose definition it holds unchanged; the follower starts at its
 * position. Without a usable one: at the store's last commit, every counter to build. */
static void load_state(counters *c)
{
    counter_state st;
    bool found = false;
    ms_err e = {0};
    c->pos = c->start_known;
    if (counter_state_read(c->dir, &st, &found, &e) != MS_OK) {
        ms_log(LOG_WARN, "counters.state_ignored", "counters: %s; every counter is rebuilt", e.msg);
        return;
    }
    if (!found) return;
    const char *why = NULL;
    if (st.position > c->start_known) why = "the store ends before its position (a store restored from a copy?)";
    if (!why && st.position) {
        store_read *r;
        int64_t t = 0;
        bool have = false;
        if (store_read_begin(c->store, &r, &e) == MS_OK) {
            store_log_entry(r, st.position, &t, NULL, NULL, &have, &e);
            store_read_end(r);
        }
        if (!have || t != st.commit_time)
            why = "its position is another history's commit (a store restored from a copy?)";
    }
    if (why) {
        ms_log(LOG_WARN, "counters.state_ignored",
               "counters: the saved state is not used: %s; every counter is rebuilt", why);
        counter_state_free(&st);
        return;
    }
    c->pos = st.position;
    uint32_t loaded = 0;
    int64_t now = ms_now_us();
    for (uint32_t i = 0; i < st.n; i++) {
        counter_def d;
        ms_err de;
        if (counter_def_parse(&d, st.entries[i].def, st.entries[i].def_len, &de) != MS_OK) continue;
        live *l = find(c, d.name);
        if (l && counter_def_same(&l->def, &d) &&
            counter_load(l->ring, st.entries[i].state, st.entries[i].state_len, now, &de) == MS_OK) {
            l->state = LIVE_READY;
            l->changes = st.entries[i].changes;
            loaded++;
        }
        counter_def_free(&d);
    }
    ms_log_fields(LOG_INFO, "counters.state_loaded",
                  (log_field[]){LOG_UINT("counters", loaded), LOG_UINT("position", st.position),
                                LOG_UINT("replay_commits", c->start_known - st.position)},
                  3, "counters: %u counters loaded at commit %llu; replaying %llu commits", loaded,
                  (unsigned long long)st.position, (unsigned long long)(c->start_known - st.position));
    counter_state_free(&st);
}

ms_code counters_start(counters **out, const counters_options *o, ms_err *e)
{
    counters *c = ms_calloc(1, sizeof *c);
    c->store = o->store;
    c->schema = o->schema;
    c->dir = ms_strndup(o->data_dir, strlen(o->data_dir));
    c->save_interval = o->save_interval_s > 0 ? o->save_interval_s : 5.0;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->reg, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&c->defs_lock, NULL);
    pthread_mutex_init(&c->pos_lock, NULL);
    pthread_cond_init(&c->pos_cond, NULL);
    pthread_cond_init(&c->build_cond, NULL);
    ms_code rc = load_definitions(c, o, e);
    if (rc == MS_OK) {
        load_state(c);
        if (pthread_create(&c->follower, NULL, follower_main, c) != 0) {
            rc = ms_fail(e, MS_EIO, "counters: cannot start the follower thread");
        } else if (pthread_create(&c->builder, NULL, builder_main, c) != 0) {
            atomic_store(&c->stop, true);
            pthread_join(c->follower, NULL);
            rc = ms_fail(e, MS_EIO, "counters: cannot start the builder thread");
        } else {
            c->threads = true;
        }
    }
    if (rc != MS_OK) {
        counters_stop(c);
        return rc;
    }
    subsystem_register(&(subsystem){"counters", counters_metrics, counters_health, c});
    *out = c;
    return MS_OK;
}

void counters_stop(counters *c)
{
    if (!c) return;
    if (c->threads) {
        subsystem_unregister(c);
        atomic_store(&c->stop, true);
        pthread_join(c->builder, NULL);
        pthread_join(c->follower, NULL);
        save_state(c); /* a clean stop: the restart replays nothing */
    }
    for (size_t i = 0; i < c->n; i++)
        live_free(c->v[i]);
    free(c->v);
    free(c->dir);
    pthread_rwlock_destroy(&c->reg);
    pthread_mutex_destroy(&c->defs_lock);
    pthread_mutex_destroy(&c->pos_lock);
    pthread_cond_destroy(&c->pos_cond);
    pthread_cond_destroy(&c->build_cond);
    free(c);
}

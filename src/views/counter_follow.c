/*
 * counter_follow.c - the counters' threads (see counters.h, src/views/README.md): the follower, which
 * applies each commit-log entry to every ready counter (-1 for the version a new one replaced, +1 for
 * the new one), the builder, which fills a new counter from the records stored as of the follower's
 * position, catches it up and makes it join the follower, and the saved state they leave for a restart.
 * The locks' rules are counters.c's header comment.
 *
 * SCHEMA VERSIONS (counters.c's header). Each read transaction the follower applies entries in must see the
 * version the counters are counted under (c->sv); one that sees another (the re-projector's switch) applies
 * nothing and the follower switches (schema_switch): the counters on public copies are built again under
 * the new version, like after an erasure. Every transaction of a build must see the version the counters
 * were under when it began (same_schema), else the build starts again once the follower has switched.
 *
 * Must never: apply an entry read under another schema version than c->sv, work out a -1 from another
 * version's copy than its +1's, let a counter join counted under another version than c->sv.
 */
#define MS_VIEWS_INTERNAL
#include "views/counters_internal.h"

#include "base/log.h"
#include "views/counter_state.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a record version as the counters see it: its fields read once, from the public copy or the body ---- */

void cs_view_reset(version_view *v)
{
    v->have = false;
    v->pub_state = v->body_state = 0;
    v->npm = v->nbm = 0;
    v->body.len = 0;
}

void cs_view_free(version_view *v)
{
    buf_free(&v->body);
    free(v->bm);
}

/* Is the raw key (between its quotes, escapes not decoded) k? */
static bool raw_key_is(const char *raw, size_t raw_len, bool escaped, const char *k, size_t kl)
{
    if (!escaped) return raw_len == kl && memcmp(raw, k, kl) == 0;
    char stack[256];
    if (raw_len > sizeof stack) return false;
    size_t n = json_string_decode(raw, raw_len, stack);
    return n == kl && memcmp(stack, k, kl) == 0;
}

static bool key_equals(const json_member *m, const char *k, size_t kl)
{
    return raw_key_is(m->key, m->key_len, m->key_escaped, k, kl);
}

/* The value at a dotted path ("address.zip", as the schema's public paths name nested fields) from the members
 * of an object: a member named by the first segment, then into objects one segment at a time. NULL (*val)
 * when any segment is absent or a value on the way is not an object (an array holds no named member). */
static void path_value(const json_member *m, int n, const char *path, size_t plen, const char **val, size_t *len,
                       json_type *t)
{
    *val = NULL;
    const char *dot = memchr(path, '.', plen);
    size_t sl = (size_t)(dot - path);
    const char *v = NULL;
    size_t vl = 0;
    json_type vt = JSON_NONE;
    for (int i = 0; i < n && !v; i++)
        if (key_equals(&m[i], path, sl)) v = m[i].val, vl = m[i].val_len, vt = m[i].type;
    while (v && sl < plen) {
        path += sl + 1; /* past the dot */
        plen -= sl + 1;
        dot = memchr(path, '.', plen);
        sl = dot ? (size_t)(dot - path) : plen;
        if (vt != JSON_OBJECT) return;
        json_iter it = json_iter_begin(v, vl);
        const char *k, *ev, *found = NULL;
        size_t kl, el, fl = 0;
        json_type et, ft = JSON_NONE;
        while (!found && json_iter_member(&it, &k, &kl, &ev, &el, &et))
            if (raw_key_is(k, kl, memchr(k, '\\', kl) != NULL, path, sl)) found = ev, fl = el, ft = et;
        v = found, vl = fl, vt = ft;
    }
    if (!v) return;
    *val = v;
    *len = vl;
    *t = vt;
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
    /* no member of that very name: a nested field of a dotted path (the public copy nests "address.zip" as the
     * schema's paths say, and so does a record) */
    if (memchr(field, '.', flen)) path_value(m, n, field, flen, val, len, t);
    return true;
}

int cs_view_matches(store *s, store_read *r, const live *l, bool from_public, version_view *v, ms_err *e)
{
    if (!v->have || v->rv.deleted || !counter_type_matches(&l->def, v->rv.type, v->rv.type_len)) return 0;
    if (l->def.op == WHERE_NONE) return 1;
    const char *val;
    size_t len = 0;
    json_type t = JSON_NONE;
    if (!view_field(s, r, v, from_public, l->def.field, l->def.field_len, &val, &len, &t, e)) return -1;
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
    bool erasure; /* the entry erased a patient ('e'): its versions left the counts without a -1 each */
} item_list;

static bool collect_item(void *ctx, const log_item *it)
{
    item_list *l = ctx;
    if (it->kind == 'e') l->erasure = true;
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
    cs_view_free(&a->prev);
    cs_view_free(&a->cur);
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
    a->items.erasure = false;
    ms_code rc = store_log_entry(r, pos, &ct, collect_item, &a->items, found, e);
    if (rc != MS_OK || !*found) return rc;
    a->nchanges = 0;
    if (a->capkept < 2 * a->items.n) {
        a->capkept = 2 * a->items.n;
        a->kept = ms_realloc(a->kept, sizeof *a->kept * a->capkept);
    }
    for (size_t i = 0; i < a->items.n && nset; i++) {
        const item_ref *it = &a->items.items[i];
        cs_view_reset(&a->cur);
        cs_view_reset(&a->prev);
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
            bool pub = set[li]->is_public;
            int was = cs_view_matches(c->store, r, set[li], pub, &a->prev, e);
            int is = was < 0 ? 0 : cs_view_matches(c->store, r, set[li], pub, &a->cur, e);
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

void cs_save_state(counters *c)
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
        ent[n] = (counter_state_entry){defs[n].data,  defs[n].len, states[n].data,
                                       states[n].len, l->changes,  l->is_public ? COUNTER_STATE_PUBLIC : 0};
        pthread_mutex_unlock(&l->lock);
        n++;
    }
    size_t total = c->n;
    uint32_t sv = c->sv; /* what every ready counter is counted under (changed only under reg, written) */
    pthread_rwlock_unlock(&c->reg);
    buf bytes = {0};
    if (ok) {
        counter_state_encode(&bytes, pos, ct, ms_now_us(), sv, ent, n);
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

/* The store's last commit and the schema version in force (*sv unchanged if the store cannot be read). */
static uint64_t store_last_pos(counters *c, uint32_t *sv)
{
    store_read *r;
    ms_err e;
    uint64_t pos = 0;
    if (store_read_begin(c->store, &r, &e) == MS_OK) {
        pos = store_commit_pos(r);
        *sv = store_read_schema_version(r);
        store_read_end(r);
    }
    return pos;
}

/* A ready counter starts over from an empty ring, to be built again from the stored records (answering 503
 * meanwhile, as at a start): after an erasure, or a schema switch for one on public copies. */
static void build_again(live *l)
{
    pthread_mutex_lock(&l->lock);
    counter_free(l->ring);
    l->ring =
        counter_new(l->def.resolution_us, l->def.max_window_us, l->def.per_parent ? l->def.max_parent_buckets : 0);
    l->changes = 0;
    pthread_mutex_unlock(&l->lock);
    l->state = LIVE_BUILDING;
    l->rebuild = true;
}

/* The store's schema version in force is sv, not the one the counters are counted under (the
 * re-projector's switch, seen by the follower between two of its read transactions, with no entry in
 * flight): the public copies the counts came from are no longer those the store answers with, and the
 * -1 of a version counted under the old one would be worked out from its copy under the new one (a
 * re-projected value: it would never match, and the count stay wrong for ever). So every counter that read
 * the public copies, or reads them under sv, is built again from the stored records under sv, as after an
 * erasure (answering 503 "being built" meanwhile); a counter on the bodies under both keeps its counts (a
 * body does not depend on the schema). Public or PHI is decided again under sv's schema. A counter being
 * built starts again by itself (build: its transactions must all see the counters' sv). Takes reg (write)
 * and pos_lock; holds nothing when called. */
static void schema_switch(counters *c, uint32_t sv)
{
    pthread_rwlock_wrlock(&c->reg);
    pthread_mutex_lock(&c->pos_lock);
    uint32_t was = c->sv;
    bool pending = false;
    for (size_t i = 0; i < c->n; i++)
        pending = pending || (c->v[i]->state == LIVE_BUILDING && c->v[i]->rebuild);
    if (!pending) c->rebuild_floor = c->pos;
    c->sv = sv;
    uint32_t again = 0;
    for (size_t i = 0; i < c->n; i++) {
        live *l = c->v[i];
        bool pub = counter_def_public(&l->def, cs_schema_of(c, sv)), redo = l->is_public || pub;
        l->is_public = pub;
        if (l->state != LIVE_READY || !redo) continue;
        build_again(l);
        again++;
    }
    c->dirty = true; /* the state's schema version */
    pthread_cond_broadcast(&c->pos_cond);
    pthread_cond_broadcast(&c->build_cond);
    pthread_mutex_unlock(&c->pos_lock);
    pthread_rwlock_unlock(&c->reg);
    ms_log_fields(LOG_INFO, "counters.schema_switched",
                  (log_field[]){LOG_UINT("from", was), LOG_UINT("to", sv), LOG_UINT("counters", again)}, 3,
                  "counters: schema version %u in force (was %u); building %u counters on public copies again", sv, was,
                  again);
}

/* An erasure at position `at` has been applied: the erased versions read as bodiless tombstones now, so
 * what they added to a count cannot be taken away version by version (a condition on a field has no
 * value to test any more). Every ready counter is built again from the stored records (the erased ones
 * read as deleted), answering 503 meanwhile as at a start; its state is saved once it has joined. Under
 * reg (read) and pos_lock, with no entry in flight. */
static void rebuild_after_erasure(counters *c, live *const *set, size_t nset, uint64_t at)
{
    bool pending = false;
    for (size_t i = 0; i < c->n; i++)
        pending = pending || (c->v[i]->state == LIVE_BUILDING && c->v[i]->rebuild);
    if (!pending) c->rebuild_floor = at - 1;
    for (size_t i = 0; i < nset; i++) {
        live *l = set[i];
        if (l->state != LIVE_READY) continue;
        build_again(l);
    }
    ms_log_fields(LOG_INFO, "counters.erasure", (log_field[]){LOG_UINT("position", at), LOG_UINT("counters", nset)}, 2,
                  "counters: a patient was erased; building the counters again from the stored records");
}

void *cs_follower_main(void *arg)
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
        /* commits the writer did not announce (tests), and a schema switch when no commit comes */
        if (pos >= latest && (ms_mono_s() - last_look > 0.1 || atomic_exchange(&c->look, false))) {
            uint32_t sv = c->sv; /* the follower alone changes it */
            uint64_t stored = store_last_pos(c, &sv);
            if (stored > latest) latest = stored;
            last_look = ms_mono_s();
            if (sv != c->sv) { /* the re-projector switched while no commit came */
                schema_switch(c, sv);
                continue;
            }
        }
        atomic_store(&c->m_latest, latest);
        if (pos >= latest) {
            atomic_store(&c->m_lag_us, 0);
            if (dirty && ms_mono_s() - last_save >= c->save_interval) {
                cs_save_state(c);
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
        uint32_t switched = rc == MS_OK && store_read_schema_version(r) != c->sv ? store_read_schema_version(r) : 0;
        uint64_t done = pos;
        bool erased = false;
        for (int k = 0; rc == MS_OK && !switched && k < ENTRIES_PER_TXN && done < latest; k++) {
            bool found = false;
            double t0 = ms_mono_s();
            rc = apply_entry(c, &a, r, done + 1, set, nset, &found, &e);
            if (rc != MS_OK || !found) break;
            histogram_observe(&c->apply_seconds, ms_mono_s() - t0);
            done++;
            atomic_fetch_add(&c->m_commits, 1);
            if (a.items.erasure) {
                erased = true;
                break;
            }
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
        if (erased && nset) rebuild_after_erasure(c, set, nset, done);
        pthread_cond_broadcast(&c->pos_cond);
        pthread_mutex_unlock(&c->pos_lock);
        pthread_rwlock_unlock(&c->reg);
        if (erased && nset) {
            pthread_mutex_lock(&c->pos_lock);
            pthread_cond_broadcast(&c->build_cond);
            pthread_mutex_unlock(&c->pos_lock);
        }
        if (switched) { /* nothing applied from this transaction: its copies are under another version */
            schema_switch(c, switched);
            continue;
        }
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
            cs_save_state(c);
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
    bool pub; /* l->is_public under the step's reg (read): the counters' sv is the step's */
    int64_t now;
    ms_code rc;
    ms_err *e;
    uint64_t counted;
} build_scan;

static bool build_record(void *ctx, const record_version *rv)
{
    build_scan *b = ctx;
    cs_view_reset(&b->v);
    b->v.rv = *rv;
    b->v.have = true;
    int m = cs_view_matches(b->c->store, b->r, b->l, b->pub, &b->v, b->e);
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

typedef enum {
    AGAIN_NO,     /* a failure: retried after a pause */
    AGAIN_NOW,    /* an erasure during the build: again at once, from a scan after it */
    AGAIN_SCHEMA, /* the store's schema version is not (or no longer) the counters' sv: again once the follower
                     has switched (schema_switch) */
} again_kind;

/* Every copy a build reads must be under the schema version the counters are counted under, and the one
 * they were when it began (bsv): the store's in force in r, and the counters' sv. Under reg (read). */
static bool same_schema(counters *c, store_read *r, uint32_t bsv, again_kind *again, ms_err *e)
{
    if (c->sv == bsv && (!r || store_read_schema_version(r) == bsv)) return true;
    *again = AGAIN_SCHEMA;
    ms_fail(e, MS_ECONFLICT, "a schema switch during the build");
    return false;
}

/* Build l: the records live at the follower's position, then the entries after it, then join, all under
 * the counters' schema version when it began (same_schema). false if it went away, the store failed
 * (retried later), or *again says why it starts again. */
static bool build(counters *c, live *l, uint64_t serial, const char *name, again_kind *again, ms_err *e)
{
    double t0 = ms_mono_s();
    pthread_mutex_lock(&c->pos_lock);
    uint64_t from = c->pos;
    uint32_t bsv = c->sv;
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
        ok = cs_still_there(c, l, serial) && store_read_begin(c->store, &r, e) == MS_OK;
        if (ok && !same_schema(c, r, bsv, again, e)) {
            store_read_end(r);
            ok = false;
        }
        if (ok) {
            b.r = r;
            b.pub = l->is_public;
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
    cs_view_free(&b.v);
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
        if (!cs_still_there(c, l, serial) || !same_schema(c, NULL, bsv, again, e)) {
            pthread_rwlock_unlock(&c->reg);
            ok = false;
            break;
        }
        pthread_mutex_lock(&c->pos_lock);
        uint64_t target = c->pos;
        bool joined = false, wait = false;
        if (at == target && !c->inflight) {
            l->state = LIVE_READY;
            l->rebuild = false;
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
            if (c->pos == at) cs_timed_wait(&c->pos_cond, &c->pos_lock, 0.05);
            pthread_mutex_unlock(&c->pos_lock);
            continue;
        }
        r = NULL;
        rc = store_read_begin(c->store, &r, e);
        if (rc == MS_OK && !same_schema(c, r, bsv, again, e)) rc = MS_ECONFLICT;
        for (; rc == MS_OK && at < target;) {
            bool found = false;
            live *set[1] = {l};
            rc = apply_entry(c, &a, r, at + 1, set, 1, &found, e);
            if (rc != MS_OK || !found) break;
            at++;
            if (a.items.erasure) { /* the scan may have counted what it erased: again, from after it */
                rc = ms_fail(e, MS_ECONFLICT, "an erasure during the build");
                *again = AGAIN_NOW;
                break;
            }
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
                      (log_field[]){LOG_STR("counter", name), LOG_UINT("records", b.counted), LOG_UINT("position", at),
                                    LOG_MS("ms", (ms_mono_s() - t0) * 1000)},
                      4, "counters: counter %s built from the stored records", name); /* l may be gone */
    return ok;
}

void *cs_builder_main(void *arg)
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
            cs_timed_wait(&c->build_cond, &c->pos_lock, 0.2);
            pthread_mutex_unlock(&c->pos_lock);
            continue;
        }
        ms_err e = {0};
        again_kind again = AGAIN_NO;
        if (!build(c, l, serial, name, &again, &e) && !atomic_load(&c->stop)) {
            pthread_rwlock_rdlock(&c->reg);
            bool there = cs_still_there(c, l, serial);
            if (there) { /* start it again from scratch */
                pthread_mutex_lock(&l->lock);
                counter_free(l->ring);
                l->ring = counter_new(l->def.resolution_us, l->def.max_window_us,
                                      l->def.per_parent ? l->def.max_parent_buckets : 0);
                l->changes = 0;
                pthread_mutex_unlock(&l->lock);
            }
            pthread_rwlock_unlock(&c->reg);
            if (there && again == AGAIN_NO) {
                ms_log(LOG_WARN, "counters.build_retry", "counters: building a counter failed; retrying: %s", e.msg);
                usleep(500000);
            } else if (there && again == AGAIN_SCHEMA) { /* until the follower switches (it signals build_cond) */
                pthread_mutex_lock(&c->pos_lock);
                cs_timed_wait(&c->build_cond, &c->pos_lock, 0.05);
                pthread_mutex_unlock(&c->pos_lock);
            }
        }
    }
    return NULL;
}

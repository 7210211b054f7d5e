/*
 * counters.c - the live counters: the set of them and their definitions, queries, metrics, start and stop
 * (the follower and builder threads and the saved state are counter_follow.c's; counters.h has the
 * contract, src/views/README.md the design).
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
 *
 * SCHEMA VERSIONS. Every ready counter is counted under one schema version, `sv`: a public counter from
 * that version's public copies, public or PHI decided by that version's schema. It is the version in force
 * (store_read_schema_version), which while a re-projection runs is the old one: the counters answer under
 * it, as public reads do, until the switch (a record ingested meanwhile has a copy under both). The follower
 * sees the switch between two of its read transactions and builds again every counter that read or will
 * read public copies (counter_follow.c, schema_switch; 503 "being built" meanwhile, as after an erasure); a
 * query waits until the follower is under the version in force when it began. The saved state carries sv
 * and each counter's public flag: a start keeps a public counter only if it was counted under the version
 * in force now. sv changes only under reg (write) and pos_lock, with each counter's is_public.
 *
 * Must never: answer a count of one version's copies as another's, or a PHI count to a caller that found
 * the counter public (public_only), put a where value in a log line, a metric or an error.
 */
#define MS_VIEWS_INTERNAL
#include "views/counters_internal.h"

#include "base/json_write.h"
#include "base/log.h"
#include "base/timefmt.h"
#include "ingest/reproject.h"
#include "views/counter_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small things ---- */

static live *find(counters *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i]->def.name, name) == 0) return c->v[i];
    return NULL;
}

static live *live_new(counters *c, counter_def *def, bool from_file)
{
    live *l = ms_calloc(1, sizeof *l);
    l->def = *def;
    memset(def, 0, sizeof *def);
    l->from_file = from_file; /* is_public: add_live */
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

/* Add l to the set, public or PHI under the schema of the version the counters are counted under. Before
 * the threads start, or under reg (write). */
static void add_live(counters *c, live *l)
{
    l->is_public = counter_def_public(&l->def, cs_schema_of(c, c->sv));
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->v = ms_realloc(c->v, sizeof *c->v * c->cap);
    }
    c->v[c->n++] = l;
}

/* ---- definitions ---- */

/* A counter defined over HTTP is a named definition of the store (kind "counter", its canonical JSON),
 * written through the writer with its audit entry, like the notifications' rules and subscriptions; d
 * NULL removes it. */
static ms_code def_store(counters *c, const char *name, const counter_def *d, const audit_event *ev, ms_err *e)
{
    buf j = {0};
    if (d) counter_def_json(d, &j);
    ms_code rc = writer_definition(c->writer, COUNTER_KIND, name, d ? j.data : NULL, j.len, ev, e);
    buf_free(&j);
    return rc;
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

ms_code counters_define(counters *c, const char *json, size_t len, const audit_event *ev, buf *out, ms_err *e)
{
    counter_def d;
    ms_code rc = counter_def_parse(&d, json, len, e);
    if (rc != MS_OK) return rc;
    pthread_mutex_lock(&c->defs_lock);
    pthread_rwlock_rdlock(&c->reg);
    bool taken = find(c, d.name) != NULL;
    pthread_rwlock_unlock(&c->reg);
    if (taken)
        rc = ms_fail(e, MS_ECONFLICT, "counter \"%s\" exists (DELETE /v1/counters/%s first)", d.name, d.name);
    else
        rc = def_store(c, d.name, &d, ev, e);
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

ms_code counters_remove(counters *c, const char *name, const audit_event *ev, ms_err *e)
{
    pthread_mutex_lock(&c->defs_lock);
    pthread_rwlock_rdlock(&c->reg);
    live *l = find(c, name);
    ms_code rc = MS_OK;
    if (!l)
        rc = ms_fail(e, MS_ENOTFOUND, "no counter of that name");
    else if (l->from_file)
        rc = ms_fail(e, MS_ECONFLICT, "counter \"%s\" is defined by serve --counters FILE: remove it there", name);
    pthread_rwlock_unlock(&c->reg);
    if (rc == MS_OK) rc = def_store(c, name, NULL, ev, e);
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

uint32_t counters_list(counters *c, bool with_phi, buf *out)
{
    buf_puts(out, "{\"counters\":[");
    pthread_rwlock_rdlock(&c->reg);
    bool first = true;
    uint32_t phi = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->v[i]->is_public && !with_phi) continue;
        if (!first) buf_putc(out, ',');
        live_json(c->v[i], out);
        first = false;
        phi += !c->v[i]->is_public;
    }
    pthread_rwlock_unlock(&c->reg);
    buf_puts(out, "]}");
    return phi;
}

/* ---- queries ---- */

typedef struct {
    counters *c;
    live *l;
    store_read *r;
    bool pub; /* the counter's fields are public under r's schema version: read from its public copies */
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
    cs_view_reset(&x->v);
    if ((x->rc = store_record_at(x->r, rid, len, INT64_MAX, &x->v.rv, &found, x->e)) != MS_OK) return false;
    if (!found || x->v.rv.deleted || x->v.rv.ts_us != ts || x->v.rv.parent_id_len != x->parent_len ||
        memcmp(x->v.rv.parent_id, x->parent, x->parent_len) != 0)
        return true; /* an entry of an older version: it moved, or is deleted */
    x->v.have = true;
    int m = cs_view_matches(x->c->store, x->r, x->l, x->pub, &x->v, x->e);
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
    /* the store's version, which may be ahead of the counters' sv until the follower sees a switch */
    x.pub = counter_def_public(&l->def, cs_schema_of(c, store_read_schema_version(x.r)));
    rc = store_children(x.r, parent, plen, from + 1, to + 1, NULL, 0, on_child, &x, e);
    store_read_end(x.r);
    cs_view_free(&x.v);
    if (rc == MS_OK) rc = x.rc;
    *count = x.count;
    return rc;
}

uint64_t counters_settled(counters *c)
{
    pthread_rwlock_rdlock(&c->reg);
    pthread_mutex_lock(&c->pos_lock);
    uint64_t pos = c->pos;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i]->state == LIVE_BUILDING && c->v[i]->rebuild && c->rebuild_floor < pos) pos = c->rebuild_floor;
    pthread_mutex_unlock(&c->pos_lock);
    pthread_rwlock_unlock(&c->reg);
    return pos;
}

ms_code counters_query(counters *c, const char *name, const counter_query *q, buf *out, ms_err *e)
{
    double t0 = ms_mono_s();
    uint64_t target = atomic_load(&g_metrics.commit_position);
    if (c->start_known > target) target = c->start_known;
    /* and under the schema version in force now: a switch the follower has not seen yet is waited for (it is
     * told to look at once), so that no answer after a switch comes from the old version's copies */
    uint32_t want = 0;
    store_read *r;
    ms_err ignored;
    if (!q->at_once && store_read_begin(c->store, &r, &ignored) == MS_OK) {
        want = store_read_schema_version(r);
        store_read_end(r);
    }
    /* read your writes: every commit acknowledged before this query is in the counts */
    pthread_mutex_lock(&c->pos_lock);
    if (q->at_once) target = c->pos;
    while ((c->pos < target || c->sv < want) && ms_mono_s() - t0 < QUERY_WAIT_S && !atomic_load(&c->stop)) {
        if (c->sv < want) atomic_store(&c->look, true);
        cs_timed_wait(&c->pos_cond, &c->pos_lock, 0.01);
    }
    uint64_t pos = c->pos;
    bool behind_sv = c->sv < want;
    pthread_mutex_unlock(&c->pos_lock);
    if (pos < target)
        return ms_fail(e, MS_ESTOPPED, "counters are %llu commits behind the store (catching up); retry",
                       (unsigned long long)(target - pos));
    if (behind_sv) return ms_fail(e, MS_ESTOPPED, "counters are switching to schema version %u; retry", want);
    pthread_rwlock_rdlock(&c->reg);
    live *l = find(c, name);
    while (l && l->state == LIVE_BUILDING && ms_mono_s() - t0 < BUILD_WAIT_S) {
        pthread_rwlock_unlock(&c->reg);
        pthread_mutex_lock(&c->pos_lock);
        cs_timed_wait(&c->pos_cond, &c->pos_lock, 0.01);
        pthread_mutex_unlock(&c->pos_lock);
        pthread_rwlock_rdlock(&c->reg);
        l = find(c, name);
    }
    ms_code rc = MS_OK;
    if (!l)
        rc = ms_fail(e, MS_ENOTFOUND, "no counter of that name");
    else if (l->state == LIVE_BUILDING)
        rc = ms_fail(e, MS_ESTOPPED, "counter \"%s\" is being built from the stored records; retry", name);
    else if (q->public_only && !l->is_public)
        rc = ms_fail(e, MS_ESTOPPED, "counter \"%s\" is no longer public (another schema version is in force); retry",
                     name);
    counter_answer ans = {0};
    int64_t now = ms_now_us(), at = q->at == INT64_MAX ? now : q->at;
    int64_t window = q->window_us ? q->window_us : (l ? l->def.max_window_us : 0);
    const char *source = "memory";
    if (rc == MS_OK) {
        pthread_mutex_lock(&l->lock);
        rc = counter_count(l->ring, window, at, now, q->parent, q->parent_len, &ans, e);
        pthread_mutex_unlock(&l->lock);
    }
    /* times are RFC 3339 in the years 1 to 9999 (no event time is earlier): a long max_window's window could
     * begin before the year 1, which no answer can write */
    if (rc == MS_OK && time_year(ans.from) < 1)
        rc = ms_fail(e, MS_EINVAL,
                     "window: it would begin before the year 1 (no event time is earlier): ask a "
                     "shorter window");
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
    /* counters on public fields only: a PHI counter's name and figures are for patients:read, audited (its
     * changes are the matching records': with a condition on one patient's fields, that patient's), and
     * /metrics needs metrics:read, or nothing at all on --metrics-listen */
    pthread_rwlock_rdlock(&c->reg);
    for (size_t k = 0; k < sizeof per / sizeof per[0]; k++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", per[k].name, per[k].help, per[k].name, per[k].type);
        for (size_t i = 0; i < c->n; i++) {
            live *l = c->v[i];
            if (!l->is_public) continue;
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

typedef struct {
    counters *c;
    char **replaced; /* names of stored definitions a file's definition replaced */
    size_t nreplaced;
} stored_defs;

/* One stored definition (store_definitions_list): a counter, unless the file defines its name. */
static bool load_stored(void *ctx, const char *name, size_t name_len, const char *v, size_t n)
{
    stored_defs *st = ctx;
    counter_def d;
    ms_err bad;
    if (counter_def_parse(&d, v, n, &bad) != MS_OK) {
        ms_log(LOG_ERROR, "counters.stored_invalid", "counters: a stored definition is not valid: %s", bad.msg);
        return true;
    }
    if (find(st->c, d.name)) {
        ms_log_fields(LOG_WARN, "counters.replaced", (log_field[]){LOG_STR("counter", d.name)}, 1,
                      "counters: counter %s of --counters replaces the one defined over HTTP", d.name);
        st->replaced = ms_realloc(st->replaced, sizeof *st->replaced * (st->nreplaced + 1));
        st->replaced[st->nreplaced++] = ms_strndup(name, name_len);
    } else {
        add_live(st->c, live_new(st->c, &d, false));
    }
    counter_def_free(&d);
    return true;
}

static ms_code load_definitions(counters *c, const counters_options *o, ms_err *e)
{
    counter_def *defs = NULL;
    size_t n = 0;
    ms_code rc = MS_OK;
    if (o->file) {
        buf text = {0};
        char what[4200];
        snprintf(what, sizeof what, "--counters %s", o->file);
        rc = buf_read_settings_file(&text, o->file, e);
        if (rc != MS_OK) {
            char why[sizeof e->msg];
            snprintf(why, sizeof why, "%s", e->msg);
            rc = ms_fail(e, rc, "%s: %s", what, why);
        }
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
    stored_defs st = {.c = c};
    rc = store_definitions_list(r, COUNTER_KIND, load_stored, &st, e);
    c->start_known = store_commit_pos(r);
    store_read_end(r);
    /* a file's definition replaced a stored one of its name: that one goes (logged by load_stored) */
    audit_event ev = {.user = "medstream",
                      .role = "",
                      .action = "counters:delete",
                      .resource = "serve --counters FILE",
                      .outcome = "ok",
                      .client = "local"};
    for (size_t i = 0; i < st.nreplaced && rc == MS_OK; i++)
        rc = def_store(c, st.replaced[i], NULL, &ev, e);
    for (size_t i = 0; i < st.nreplaced; i++)
        free(st.replaced[i]);
    free(st.replaced);
    return rc;
}

/* Load the saved state into the counters whose definition it holds unchanged, and which were counted as
 * they are now: from the bodies, or from the public copies of the schema version in force now (c->sv; the
 * copies of another version hold other values, and a -1 worked out from the new one's copy of a version
 * the old one's counted would never match); the follower starts at its position. Without a usable state:
 * at the store's last commit, every counter to build. */
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
    if (!why && st.schema_version == 0) why = "it was saved without its schema version (by an older medstream)";
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
    uint32_t loaded = 0, other_version = 0;
    int64_t now = ms_now_us();
    for (uint32_t i = 0; i < st.n; i++) {
        counter_def d;
        ms_err de;
        if (counter_def_parse(&d, st.entries[i].def, st.entries[i].def_len, &de) != MS_OK) continue;
        live *l = find(c, d.name);
        bool was_public = (st.entries[i].flags & COUNTER_STATE_PUBLIC) != 0;
        bool same = l && counter_def_same(&l->def, &d);
        if (same && (was_public != l->is_public || (l->is_public && st.schema_version != c->sv))) {
            other_version++; /* counted from other copies than it reads now: built again */
        } else if (same && counter_load(l->ring, st.entries[i].state, st.entries[i].state_len, now, &de) == MS_OK) {
            l->state = LIVE_READY;
            l->changes = st.entries[i].changes;
            loaded++;
        }
        counter_def_free(&d);
    }
    if (other_version)
        ms_log_fields(LOG_INFO, "counters.state_schema",
                      (log_field[]){LOG_UINT("counters", other_version), LOG_UINT("saved_under", st.schema_version),
                                    LOG_UINT("in_force", c->sv)},
                      3,
                      "counters: %u counters were saved under schema version %u's public copies (or as PHI), not "
                      "those of version %u in force: built again",
                      other_version, st.schema_version, c->sv);
    ms_log_fields(LOG_INFO, "counters.state_loaded",
                  (log_field[]){LOG_UINT("counters", loaded), LOG_UINT("position", st.position),
                                LOG_UINT("replay_commits", c->start_known - st.position)},
                  3, "counters: %u counters loaded at commit %llu; replaying %llu commits", loaded,
                  (unsigned long long)st.position, (unsigned long long)(c->start_known - st.position));
    counter_state_free(&st);
}

/* The schema versions (store.h, "Schema versions"; reproject_start has registered the server's schema):
 * the counters start counted under the version in force; while a re-projection is under way, that is not
 * the server's schema but the one the store keeps the text of, parsed here, until the switch. */
static ms_code load_schemas(counters *c, ms_err *e)
{
    ms_code rc = reproject_schema_in_force(c->store, &c->old_schema, &c->sv, &c->have_old, e);
    c->old_sv = c->sv;
    return rc;
}

ms_code counters_start(counters **out, const counters_options *o, ms_err *e)
{
    counters *c = ms_calloc(1, sizeof *c);
    c->store = o->store;
    c->writer = o->writer;
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
    ms_code rc = load_schemas(c, e);
    if (rc == MS_OK) rc = load_definitions(c, o, e);
    if (rc == MS_OK) {
        load_state(c);
        if (pthread_create(&c->follower, NULL, cs_follower_main, c) != 0) {
            rc = ms_fail(e, MS_EIO, "counters: cannot start the follower thread");
        } else if (pthread_create(&c->builder, NULL, cs_builder_main, c) != 0) {
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
        cs_save_state(c); /* a clean stop: the restart replays nothing */
    }
    for (size_t i = 0; i < c->n; i++)
        live_free(c->v[i]);
    free(c->v);
    free(c->dir);
    if (c->have_old) schema_free(&c->old_schema);
    pthread_rwlock_destroy(&c->reg);
    pthread_mutex_destroy(&c->defs_lock);
    pthread_mutex_destroy(&c->pos_lock);
    pthread_cond_destroy(&c->pos_cond);
    pthread_cond_destroy(&c->build_cond);
    free(c);
}

/*
 * notifier.c - the notifier's rules, its follower of the commit log, its event reads and its metrics
 * (see notifier.h; README.md beside this file has the design).
 *
 * DESIGN: the rules in force are the rules file's and those defined over the API (kept in the store as
 * definitions of kind "rule", written by the writer with their audit entry), compiled together into one
 * rule set (rules.h). A change compiles the whole new set first (a bad rule changes nothing), persists it,
 * then swaps the set pointer under a short lock; readers hold a reference count, so the old set is freed
 * by whoever lets go of it last (the follower at the end of its step, if it was matching with it).
 *
 * What a compile may cost is bounded before it runs: a new or changed rule's regexes are compiled, each
 * alone, in a helper process under a CPU and memory limit (rule_check.h: over 2 s, 400 naming the rule and
 * the regex), before change_lock is taken; the set's regexes together may take at most
 * RULE_CHECK_SET_CPU_S of that measured CPU (a change that adds to a set over it is refused), and its
 * phrases and regexes number at most RULE_SET_EXPRS_MAX (rules.h). So the set's compile, which still runs in
 * the request's thread under change_lock, waits only for other rule changes and takes seconds, not minutes.
 * Reads (GET /v1/rules, /v1/rules/{name}) take no change_lock: they answer from the set in force (live_set,
 * with a reference), which holds a copy of every rule in force. At start the same check runs over every
 * rule, in one helper: a rule of the file over the bound stops the start naming the file, the rule and the
 * regex (as a bad rule of the file does); a stored rule over it (defined before this check, or under another
 * bound), or past RULE_SET_EXPRS_MAX, is not put in force, logged as an error at every start, and stays in
 * the store until an admin replaces it (POST) or deletes it (DELETE works on it): refusing the start would
 * leave no API to remove it with.
 *
 * The follower is one thread. It wakes when the writer's commit position (g_metrics.commit_position, an
 * atomic the writer sets after each commit) passes its own, checking every 2 ms (and the store itself
 * every 100 ms, for a store written by another writer); it reads up to STEP_COMMITS commit log entries in
 * one short read transaction, reads the body of each record version they name (skipping tombstones and
 * types no rule takes), matches it, and formats an event per (rule, field) hit. Then one small write
 * appends the step's events and its new position together; only after that are the events published
 * (hub) and counted. A step with no events moves the position in memory only, saved at most once a
 * second (position only): a crash then re-matches a second of commits that produced nothing, which can
 * produce events only under rules defined meanwhile, never a second copy of a stored event. A failed
 * read or write keeps the position where it was and retries after a second (the health check says
 * "failing" meanwhile); commits wait, nothing is skipped.
 *
 * What it must never do: log or count a record's values (log lines name positions and rules, metric
 * labels rule names, which are the administrator's), publish an event before it is durable, hold the
 * rule set's lock while compiling or matching, or compile a regex in this process that the bounded check
 * (rule_check.h) has not passed.
 */
#include "notify/notify_internal.h"

#include "access/audit.h"
#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/log.h"
#include "notify/event.h"
#include "notify/rule_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STEP_COMMITS 256
#define STEP_BYTES ((size_t)64 << 20) /* record bytes read per step */
#define STEP_EVENTS 10000
#define SAVE_EVERY_S 1.0
#define POLL_MS 2
#define STORE_CHECK_S 0.1
#define PAGE_SCAN_MAX 100000 /* events looked at for one page of a filtered read */

/* ---- the rule set in force ---- */

live_set *live_acquire(notifier *n)
{
    pthread_mutex_lock(&n->set_lock);
    live_set *ls = n->live;
    atomic_fetch_add(&ls->refs, 1);
    pthread_mutex_unlock(&n->set_lock);
    return ls;
}

void live_release(live_set *ls)
{
    if (ls && atomic_fetch_sub(&ls->refs, 1) == 1) {
        rule_set_free(ls->rs);
        free(ls);
    }
}

static void live_swap(notifier *n, rule_set *rs)
{
    live_set *ls = ms_calloc(1, sizeof *ls);
    ls->rs = rs;
    ls->nfile = n->nfile;
    atomic_init(&ls->refs, 1);
    pthread_mutex_lock(&n->set_lock);
    live_set *old = n->live;
    n->live = ls;
    pthread_mutex_unlock(&n->set_lock);
    live_release(old);
}

/* The set of the file's rules and the API's (api of napi, in place of n->api_rules). */
static ms_code compile_with(notifier *n, const rule_def *api, size_t napi, rule_set **out, ms_err *e)
{
    size_t total = n->nfile + napi;
    const rule_def **all = ms_malloc((total ? total : 1) * sizeof *all);
    for (size_t i = 0; i < n->nfile; i++)
        all[i] = &n->file_rules[i];
    for (size_t i = 0; i < napi; i++)
        all[n->nfile + i] = &api[i];
    ms_code rc = rule_set_compile(all, total, out, e);
    free(all);
    return rc;
}

static long find_rule(const rule_def *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, name)) return (long)i;
    return -1;
}

static long find_skipped(const notifier *n, const char *name)
{
    for (size_t i = 0; i < n->nskipped; i++)
        if (!strcmp(n->skipped[i], name)) return (long)i;
    return -1;
}

/* name (len bytes, at most RULE_NAME_MAX, no NUL) onto the list of stored rules not in force */
static void add_skipped(notifier *n, const char *name, size_t len)
{
    n->skipped = ms_realloc(n->skipped, (n->nskipped + 1) * sizeof *n->skipped);
    memcpy(n->skipped[n->nskipped], name, len);
    n->skipped[n->nskipped++][len] = 0;
}

static void forget_skipped(notifier *n, const char *name)
{
    long at = find_skipped(n, name);
    if (at >= 0) memcpy(n->skipped[at], n->skipped[--n->nskipped], sizeof *n->skipped);
}

/* The checked CPU seconds of the regexes of the file's rules and of api[0..napi): what the set's compile costs
 * (rule_check.h). */
static double regex_cpu(const notifier *n, const rule_def *api, size_t napi)
{
    double s = 0;
    for (size_t i = 0; i < n->nfile; i++)
        s += n->file_rules[i].check_cpu_s;
    for (size_t i = 0; i < napi; i++)
        s += api[i].check_cpu_s;
    return s;
}

/* ---- definitions through the writer, with their audit entry (writer_definition) ---- */

ms_code notify_definition_change(notifier *n, const char *kind, const char *name, const char *value, size_t len,
                                 bool del, const char *action, const char *resource, const notify_actor *who, ms_err *e)
{
    audit_event ev = {.user = who && who->user ? who->user : "",
                      .role = who && who->role ? who->role : "",
                      .action = action,
                      .resource = resource,
                      .outcome = "ok",
                      .client = who && who->client ? who->client : ""};
    return writer_definition(n->writer, kind, name, del ? NULL : value, len, &ev, e);
}

/* ---- rules over the API ---- */

ms_code notifier_rule_put(notifier *n, const char *json, size_t len, const notify_actor *who, bool *created,
                          buf *answer, ms_err *e)
{
    rule_def r;
    ms_code rc = rule_parse(json, len, &r, e);
    if (rc != MS_OK) return rc;
    /* its regexes, each alone, bounded, in a helper process: before any lock (rule_check.h) */
    const rule_def *one = &r;
    rule_check_result chk;
    rc = rule_check(NULL, &one, 1, &chk, e);
    if (rc == MS_OK && !chk.ok) rc = ms_fail(e, MS_EINVAL, "%s", chk.why);
    if (rc != MS_OK) {
        rule_def_free(&r);
        return rc;
    }
    r.check_cpu_s = chk.cpu_s;
    pthread_mutex_lock(&n->change_lock);
    if (find_rule(n->file_rules, n->nfile, r.name) >= 0) {
        rc = ms_fail(e, MS_ECONFLICT, "rule \"%s\" is defined in the rules file (serve --rules); change it there",
                     r.name);
        goto out;
    }
    long at = find_rule(n->api_rules, n->napi, r.name);
    /* a stored rule not in force (over a bound, or not parsing, at the start) is replaced too: its definition is
     * stored, DELETE removes it, so this is an update, not a creation */
    bool replaces = at >= 0 || find_skipped(n, r.name) >= 0;
    double before = at >= 0 ? n->api_rules[at].check_cpu_s : 0,
           total = regex_cpu(n, n->api_rules, n->napi) - before + r.check_cpu_s;
    if (total > RULE_CHECK_SET_CPU_S && r.check_cpu_s > before) {
        rc = ms_fail(e, MS_EINVAL,
                     "rule \"%s\": the regexes of the rules in force would take %.1f s to compile (over %.0f s, each "
                     "measured alone)",
                     r.name, total, RULE_CHECK_SET_CPU_S);
        goto out;
    }
    rule_def *next = ms_malloc((n->napi + 1) * sizeof *next);
    if (n->napi) memcpy(next, n->api_rules, n->napi * sizeof *next);
    size_t nnext = n->napi;
    if (at >= 0)
        next[at] = r;
    else
        next[nnext++] = r;
    rule_set *rs = NULL;
    rc = compile_with(n, next, nnext, &rs, e);
    if (rc == MS_OK) {
        buf canon = {0};
        rule_def_json(&r, &canon);
        char resource[RULE_NAME_MAX + 16];
        snprintf(resource, sizeof resource, "/v1/rules/%s", r.name);
        rc = notify_definition_change(n, NOTIFY_KIND_RULE, r.name, canon.data, canon.len, false,
                                      replaces ? "rules:update" : "rules:create", resource, who, e);
        if (rc == MS_OK) {
            live_swap(n, rs);
            rs = NULL;
            if (at >= 0) rule_def_free(&n->api_rules[at]);
            free(n->api_rules);
            n->api_rules = next;
            n->napi = nnext;
            next = NULL;
            forget_skipped(n, r.name); /* its stored definition is this one now */
            *created = !replaces;
            buf_put(answer, canon.data, canon.len);
            const char *how = at >= 0 ? "replaced" : replaces ? "replaced (the stored one was not in force)" : "added";
            ms_log(LOG_INFO, "notify.rule", "rule %s %s (%zu rules in force)", r.name, how, n->nfile + n->napi);
        }
        buf_free(&canon);
    }
    rule_set_free(rs);
    if (next) { /* not taken: r is still the caller's to free */
        free(next);
        goto out;
    }
    pthread_mutex_unlock(&n->change_lock);
    return MS_OK;
out:
    pthread_mutex_unlock(&n->change_lock);
    rule_def_free(&r);
    return rc;
}

ms_code notifier_rule_delete(notifier *n, const char *name, const notify_actor *who, ms_err *e)
{
    ms_code rc;
    pthread_mutex_lock(&n->change_lock);
    long at = find_rule(n->api_rules, n->napi, name);
    if (at < 0 && find_skipped(n, name) >= 0) { /* stored, not in force: only its definition goes */
        char resource[RULE_NAME_MAX + 16];
        snprintf(resource, sizeof resource, "/v1/rules/%s", name);
        rc = notify_definition_change(n, NOTIFY_KIND_RULE, name, NULL, 0, true, "rules:delete", resource, who, e);
        if (rc == MS_OK) {
            forget_skipped(n, name);
            ms_log(LOG_INFO, "notify.rule", "rule %s deleted (it was not in force)", name);
        }
        pthread_mutex_unlock(&n->change_lock);
        return rc;
    }
    if (at < 0) {
        rc = find_rule(n->file_rules, n->nfile, name) >= 0
                 ? ms_fail(e, MS_ECONFLICT, "rule \"%s\" is defined in the rules file (serve --rules); remove it there",
                           name)
                 : ms_fail(e, MS_ENOTFOUND, "no rule of that name");
        pthread_mutex_unlock(&n->change_lock);
        return rc;
    }
    rule_def *next = ms_malloc((n->napi ? n->napi : 1) * sizeof *next);
    size_t nnext = 0;
    for (size_t i = 0; i < n->napi; i++)
        if ((long)i != at) next[nnext++] = n->api_rules[i];
    rule_set *rs = NULL;
    rc = compile_with(n, next, nnext, &rs, e);
    if (rc == MS_OK) {
        char resource[RULE_NAME_MAX + 16];
        snprintf(resource, sizeof resource, "/v1/rules/%s", name);
        rc = notify_definition_change(n, NOTIFY_KIND_RULE, name, NULL, 0, true, "rules:delete", resource, who, e);
    }
    if (rc == MS_OK) {
        live_swap(n, rs);
        ms_log(LOG_INFO, "notify.rule", "rule %s deleted (%zu rules in force)", name, n->nfile + nnext);
        rule_def_free(&n->api_rules[at]);
        free(n->api_rules);
        n->api_rules = next;
        n->napi = nnext;
    } else {
        rule_set_free(rs);
        free(next);
    }
    pthread_mutex_unlock(&n->change_lock);
    return rc;
}

static int cmp_rule_ptr(const void *a, const void *b)
{
    return strcmp((*(const rule_def *const *)a)->name, (*(const rule_def *const *)b)->name);
}

static void rule_with_source(const rule_def *r, bool file, buf *out)
{
    rule_def_json(r, out);
    out->len--; /* the closing brace */
    buf_printf(out, ",\"source\":\"%s\"}", file ? "file" : "api");
}

/* Reads answer from the set in force (it holds every rule in force, the file's first), never under
 * change_lock: a change's compile does not hold them up. */
void notifier_rules_json(notifier *n, buf *out)
{
    live_set *ls = live_acquire(n);
    size_t total = rule_set_count(ls->rs);
    const rule_def **all = ms_malloc((total ? total : 1) * sizeof *all);
    for (size_t i = 0; i < total; i++)
        all[i] = rule_set_rule(ls->rs, i);
    qsort(all, total, sizeof *all, cmp_rule_ptr);
    buf_puts(out, "{\"rules\":[");
    for (size_t i = 0; i < total; i++) {
        if (i) buf_putc(out, ',');
        rule_with_source(all[i], (size_t)(all[i] - rule_set_rule(ls->rs, 0)) < ls->nfile, out);
    }
    buf_puts(out, "]}");
    free(all);
    live_release(ls);
}

bool notifier_has_events_topic(const notifier *n) { return n->opt.events_topic != NULL; }

bool notifier_rule_json(notifier *n, const char *name, buf *out)
{
    live_set *ls = live_acquire(n);
    long at = rule_set_find(ls->rs, name);
    if (at >= 0) rule_with_source(rule_set_rule(ls->rs, (size_t)at), (size_t)at < ls->nfile, out);
    live_release(ls);
    return at >= 0;
}

/* ---- events ---- */

typedef struct {
    buf *out;
    const char *rule;
    unsigned limit, n;
    uint64_t last_scanned, last_sent;
    unsigned scanned;
    bool more;
} page_state;

static bool page_event(void *ctx, uint64_t seq, const char *ev, size_t len)
{
    page_state *p = ctx;
    if (p->n == p->limit || p->scanned == PAGE_SCAN_MAX) {
        p->more = true;
        return false;
    }
    p->scanned++;
    p->last_scanned = seq;
    if (p->rule) {
        const char *r;
        size_t rl;
        if (!notify_event_rule(ev, len, &r, &rl) || rl != strlen(p->rule) || memcmp(r, p->rule, rl) != 0) return true;
    }
    if (p->n++) buf_putc(p->out, ',');
    buf_put(p->out, ev, len);
    p->last_sent = seq;
    return true;
}

ms_code notifier_events_page(notifier *n, uint64_t after, unsigned limit, const char *rule, buf *out, ms_err *e)
{
    store_read *r;
    ms_code rc = store_read_begin(n->store, &r, e);
    if (rc != MS_OK) return rc;
    uint64_t last = 0;
    page_state p = {.out = out, .rule = rule, .limit = limit};
    buf_puts(out, "{\"events\":[");
    rc = store_events_last(r, &last, e);
    if (rc == MS_OK) rc = store_events_scan(r, after, page_event, &p, e);
    store_read_end(r);
    if (rc != MS_OK) return rc;
    buf_printf(out, "],\"last_seq\":%llu,\"next_cursor\":", (unsigned long long)last);
    if (p.more)
        buf_printf(out, "\"%llu\"}", (unsigned long long)p.last_scanned);
    else
        buf_puts(out, "null}");
    return MS_OK;
}

/* ---- the follower ---- */

static void count_event(notifier *n, const char *rule)
{
    for (size_t i = 0; i < n->ncounts; i++)
        if (!strcmp(n->counts[i].name, rule)) {
            n->counts[i].events++;
            return;
        }
    if (n->ncounts == n->capcounts) {
        n->capcounts = n->capcounts ? 2 * n->capcounts : 16;
        n->counts = ms_realloc(n->counts, n->capcounts * sizeof *n->counts);
    }
    rule_count *c = &n->counts[n->ncounts++];
    snprintf(c->name, sizeof c->name, "%s", rule);
    c->events = 1;
}

static void set_failing(notifier *n, const char *what, const ms_err *e)
{
    pthread_mutex_lock(&n->info_lock);
    snprintf(n->error, sizeof n->error, "%s: %.200s", what, e->msg);
    pthread_mutex_unlock(&n->info_lock);
    if (!atomic_exchange(&n->failing, true))
        ms_log(LOG_ERROR, "notify.failing",
               "notifications: %s: %s (retrying every second; commits wait, none is "
               "skipped)",
               what, e->msg);
    atomic_fetch_add(&n->store_failures, 1);
}

typedef struct {
    notifier *n;
    store_read *r;
    const rule_set *rs;
    rule_scratch *sc;
    int64_t commit_time;
    uint64_t seq;        /* of the last event formatted */
    buf *events;         /* their JSON, one after another */
    size_t **offs;       /* each event's end in events */
    int64_t **committed; /* each event's commit time */
    size_t *nevents, *capoffs;
    buf body;
    size_t bytes;
    uint32_t records;
    patient_id *erased; /* the patients an entry erased ('e' items): their events are deleted */
    size_t nerased, caperased;
    bool failed;
    ms_err err;
} step_state;

/* An entry's 'e' items (erase.c): the patients whose events go. */
static bool note_erasure(step_state *st, const log_item *it)
{
    if (it->id_len != 16) return true;
    if (st->nerased == st->caperased) {
        st->caperased = st->caperased ? 2 * st->caperased : 4;
        st->erased = ms_realloc(st->erased, st->caperased * sizeof *st->erased);
    }
    memcpy(st->erased[st->nerased++].b, it->id, 16);
    return true;
}

static bool erased_event(void *ctx, uint64_t seq, const char *entry, size_t len)
{
    (void)seq;
    const step_state *st = ctx;
    patient_id pid;
    if (!notify_event_patient(entry, len, &pid)) return false;
    for (size_t i = 0; i < st->nerased; i++)
        if (!memcmp(pid.b, st->erased[i].b, 16)) return true;
    return false;
}

static bool erasure_item(void *ctx, const log_item *it) { return it->kind == 'e' ? note_erasure(ctx, it) : true; }

static void add_event(step_state *st, const notify_event *ev)
{
    notify_event_json(ev, st->events);
    if (*st->nevents == *st->capoffs) {
        *st->capoffs = *st->capoffs ? 2 * *st->capoffs : 64;
        *st->offs = ms_realloc(*st->offs, *st->capoffs * sizeof **st->offs);
        *st->committed = ms_realloc(*st->committed, *st->capoffs * sizeof **st->committed);
    }
    (*st->committed)[*st->nevents] = ev->committed_us;
    (*st->offs)[(*st->nevents)++] = st->events->len;
}

static bool type_wanted(const rule_set *rs, const char *type)
{
    for (size_t i = 0; i < rule_set_count(rs); i++) {
        const rule_def *r = rule_set_rule(rs, i);
        if (!r->ntypes) return true;
        for (uint32_t j = 0; j < r->ntypes; j++)
            if (!strcmp(r->types[j], type)) return true;
    }
    return false;
}

static bool match_item(void *ctx, const log_item *it)
{
    step_state *st = ctx;
    if (it->kind == 'e') return note_erasure(st, it);
    if (it->kind != 'r') return true;
    record_version rv;
    bool found = false;
    if (store_record_version(st->r, it->id, it->id_len, st->commit_time, it->version, &rv, &found, &st->err) != MS_OK) {
        st->failed = true;
        return false;
    }
    if (!found || rv.deleted || !type_wanted(st->rs, rv.type)) return true;
    st->body.len = 0;
    ms_code rc = store_record_body(st->n->store, &rv, &st->body, &st->err);
    /* its patient erased after this step's snapshot was taken (the data key goes at once): the erasure's commit
     * comes later in the log and deletes the patient's events, so none is made of it (a failure here held every
     * event back and degraded /healthz) */
    if (rc != MS_OK && store_patient_key_gone(st->n->store, &rv.pid)) return true;
    if (rc != MS_OK) {
        st->failed = true;
        return false;
    }
    st->bytes += rv.body_len;
    st->records++;
    const rule_hit *hits;
    size_t nh = rule_set_match_record(st->rs, st->sc, rv.type, rv.type_len, st->body.data, st->body.len, &hits);
    for (size_t i = 0; i < nh; i++) {
        notify_event ev = {.seq = ++st->seq,
                           .rule = rule_set_rule(st->rs, hits[i].rule)->name,
                           .record_id = rv.record_id,
                           .record_id_len = rv.record_id_len,
                           .pid = rv.pid,
                           .field = rule_set_field(st->rs, hits[i].field),
                           .type = rv.type,
                           .type_len = rv.type_len,
                           .version = rv.version,
                           .ts_us = rv.ts_us,
                           .committed_us = st->commit_time};
        add_event(st, &ev);
    }
    return true;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Save the position alone (no events). */
static void save_position(notifier *n, uint64_t seq, uint64_t pos)
{
    ms_err e;
    if (store_events_append(n->store, seq + 1, NULL, 0, NOTIFY_SINK, pos, &e) == MS_OK)
        atomic_store(&n->saved_position, pos);
    else
        set_failing(n, "saving the position", &e);
}

static void *follower_main(void *arg)
{
    notifier *n = arg;
    pthread_setname_np(pthread_self(), "ms-notify");
    rule_scratch *sc = rule_scratch_new();
    buf events = {0};
    size_t *offs = NULL, nevents = 0, capoffs = 0;
    int64_t *committed = NULL;
    step_state st = {.n = n,
                     .sc = sc,
                     .events = &events,
                     .offs = &offs,
                     .committed = &committed,
                     .nevents = &nevents,
                     .capoffs = &capoffs};
    uint64_t pos = atomic_load(&n->position), seq = hub_last(n->hub);
    double last_save = ms_mono_s(), last_check = 0;
    while (!atomic_load(&n->stop)) {
        double now = ms_mono_s();
        if (atomic_load(&g_metrics.commit_position) <= pos && now - last_check < STORE_CHECK_S) {
            if (atomic_load(&n->saved_position) < pos && now - last_save >= SAVE_EVERY_S) {
                save_position(n, seq, pos);
                last_save = now;
            }
            atomic_store(&n->lag_us, 0);
            sleep_ms(POLL_MS);
            continue;
        }
        last_check = now;
        store_read *r;
        ms_err e;
        if (store_read_begin(n->store, &r, &e) != MS_OK) {
            set_failing(n, "reading the commit log", &e);
            sleep_ms(1000);
            continue;
        }
        live_set *ls = live_acquire(n);
        if (rule_scratch_fit(sc, ls->rs, &e) != MS_OK) {
            live_release(ls);
            store_read_end(r);
            set_failing(n, "matching", &e);
            sleep_ms(1000);
            continue;
        }
        st.r = r;
        st.rs = ls->rs;
        st.seq = seq;
        st.bytes = 0;
        st.records = 0;
        st.nerased = 0; /* a failed step's erasures are read again */
        st.failed = false;
        events.len = 0;
        nevents = 0;
        uint64_t p = pos;
        bool any_rules = rule_set_count(ls->rs) > 0, more = false;
        for (int k = 0; k < STEP_COMMITS; k++) {
            if (st.bytes >= STEP_BYTES || nevents >= STEP_EVENTS) {
                more = true;
                break;
            }
            bool found = false;
            ms_code rc =
                store_log_entry(r, p + 1, &st.commit_time, any_rules ? match_item : erasure_item, &st, &found, &e);
            if (rc != MS_OK || st.failed) {
                if (rc == MS_OK) e = st.err;
                st.failed = true;
                break;
            }
            if (!found) break;
            if (st.nerased) { /* an erasure: the step ends with it (the deletion and the position past it are one write)
                               */
                p++;
                break;
            }
            p++;
            if (k == STEP_COMMITS - 1) more = true;
        }
        int64_t next_commit = 0;
        bool next_found = false;
        if (more && !st.failed) store_log_entry(r, p + 1, &next_commit, NULL, NULL, &next_found, &e);
        store_read_end(r);
        live_release(ls);
        if (st.failed) {
            set_failing(n, "matching committed records", &e);
            sleep_ms(1000);
            continue;
        }
        bool erasure = st.nerased > 0;
        atomic_fetch_add(&n->records_matched, st.records);
        atomic_fetch_add(&n->bytes_scanned, st.bytes);
        atomic_fetch_add(&n->steps, 1);
        if (nevents || erasure) {
            store_bytes *v = ms_malloc((nevents ? nevents : 1) * sizeof *v);
            for (size_t i = 0; i < nevents; i++) {
                size_t from = i ? offs[i - 1] : 0;
                v[i] = (store_bytes){events.data + from, offs[i] - from};
            }
            uint64_t gone = 0;
            /* an erasure's entry: the events of its other records, the patient's events deleted and, with an
             * events topic, its tombstone owed there (events_kafka.c), with the position past it, in one write */
            ms_code rc = erasure ? store_events_delete(n->store, seq + 1, v, nevents, erased_event, &st, st.erased,
                                                       n->opt.events_topic ? st.nerased : 0, NOTIFY_SINK, p, &gone, &e)
                                 : store_events_append(n->store, seq + 1, v, nevents, NOTIFY_SINK, p, &e);
            free(v);
            st.nerased = 0;
            if (rc != MS_OK) {
                set_failing(n, erasure ? "deleting an erased patient's events" : "appending events", &e);
                sleep_ms(1000);
                continue;
            }
            if (erasure)
                ms_log_fields(LOG_INFO, "notify.erased",
                              (log_field[]){LOG_UINT("events", gone), LOG_UINT("position", p)}, 2,
                              "notifications: an erased patient's events deleted");
            int64_t at = ms_now_us();
            pthread_mutex_lock(&n->info_lock);
            for (size_t i = 0; i < nevents; i++) {
                size_t from = i ? offs[i - 1] : 0;
                const char *rule;
                size_t rl;
                if (notify_event_rule(events.data + from, offs[i] - from, &rule, &rl)) {
                    char name[RULE_NAME_MAX + 1];
                    snprintf(name, sizeof name, "%.*s", (int)rl, rule);
                    count_event(n, name);
                }
            }
            pthread_mutex_unlock(&n->info_lock);
            for (size_t i = 0; i < nevents; i++) /* commit -> event durable, for each event */
                histogram_observe(&n->delay, (double)(at - committed[i]) / 1e6);
            seq += nevents;
            atomic_store(&n->saved_position, p);
            last_save = ms_mono_s();
            hub_publish(n->hub, seq);
        }
        pos = p;
        atomic_store(&n->position, pos);
        atomic_store(&n->lag_us, next_found && next_commit > 0 ? (uint64_t)(ms_now_us() - next_commit) : 0);
        if (atomic_exchange(&n->failing, false)) ms_log(LOG_INFO, "notify.recovered", "notifications: matching again");
    }
    if (atomic_load(&n->saved_position) < pos) save_position(n, seq, pos);
    rule_scratch_free(sc);
    free(st.erased);
    buf_free(&st.body);
    buf_free(&events);
    free(offs);
    free(committed);
    return NULL;
}

/* ---- metrics and health ---- */

static void notify_metrics(void *ctx, buf *out)
{
    notifier *n = ctx;
    uint64_t commit = atomic_load(&g_metrics.commit_position), pos = atomic_load(&n->position);
    buf_puts(out, "# HELP medstream_events_total Events (rule matches) stored since the start, by rule.\n"
                  "# TYPE medstream_events_total counter\n");
    pthread_mutex_lock(&n->info_lock);
    for (size_t i = 0; i < n->ncounts; i++)
        buf_printf(out, "medstream_events_total{rule=\"%s\"} %llu\n", n->counts[i].name,
                   (unsigned long long)n->counts[i].events);
    pthread_mutex_unlock(&n->info_lock);
    metrics_gauge(out, "medstream_notify_event_seq", "The last event's seq in the event log.", hub_last(n->hub));
    metrics_gauge(out, "medstream_notify_position", "The last commit log position matched against the rules.", pos);
    metrics_gauge(out, "medstream_notify_lag_commits", "Commits not yet matched against the rules.",
                  commit > pos ? commit - pos : 0);
    buf_printf(out,
               "# HELP medstream_notify_lag_seconds Age of the oldest commit not yet matched (0: caught up).\n"
               "# TYPE medstream_notify_lag_seconds gauge\nmedstream_notify_lag_seconds %.6f\n",
               (double)atomic_load(&n->lag_us) / 1e6);
    live_set *ls = live_acquire(n);
    metrics_gauge(out, "medstream_notify_rules", "Rules in force.", rule_set_count(ls->rs));
    metrics_gauge(out, "medstream_notify_rules_bytes", "Memory of the compiled rule set (Hyperscan database).",
                  rule_set_bytes(ls->rs));
    live_release(ls);
    metrics_counter(out, "medstream_notify_records_total", "Record versions matched against the rules.",
                    atomic_load(&n->records_matched));
    metrics_counter(out, "medstream_notify_bytes_total", "Bytes of record bodies read for matching.",
                    atomic_load(&n->bytes_scanned));
    metrics_counter(out, "medstream_notify_failures_total", "Failed steps of the follower (store errors; retried).",
                    atomic_load(&n->store_failures));
    metrics_histogram(out, "medstream_notify_delay_seconds", "Commit to its events durable in the event log.",
                      &n->delay);
    metrics_gauge(out, "medstream_sse_clients", "Server-Sent Events streams open.", hub_streams(n->hub));
    metrics_counter(out, "medstream_sse_streams_total", "Server-Sent Events streams opened.",
                    atomic_load(&n->sse_opened));
    metrics_counter(out, "medstream_sse_refused_total", "Server-Sent Events streams refused (too many open).",
                    atomic_load(&n->sse_refused));
    metrics_counter(out, "medstream_sse_events_total", "Events sent on Server-Sent Events streams.",
                    atomic_load(&n->sse_events_sent));
    webhooks_metrics(n->hooks, out);
    events_kafka_metrics(n->kafka, out);
}

/* Says nothing while all is well (like the store); "failing" while the follower cannot read or write,
 * "behind" once the oldest unmatched commit is over BEHIND_S old: either is degraded. */
#define BEHIND_S 60
static bool notify_health(void *ctx, buf *out)
{
    notifier *n = ctx;
    uint64_t commit = atomic_load(&g_metrics.commit_position), pos = atomic_load(&n->position);
    bool failing = atomic_load(&n->failing), behind = atomic_load(&n->lag_us) > (uint64_t)BEHIND_S * 1000000;
    if (!failing && !behind) return true;
    buf_printf(out, ",\"notify\":\"%s\",\"notify_lag_commits\":%llu", failing ? "failing" : "behind",
               (unsigned long long)(commit > pos ? commit - pos : 0));
    if (failing) {
        pthread_mutex_lock(&n->info_lock);
        buf_puts(out, ",\"notify_error\":");
        jw_cstr(out, n->error);
        pthread_mutex_unlock(&n->info_lock);
    }
    return false;
}

/* ---- start and stop ---- */

typedef struct {
    notifier *owner; /* its skipped list takes the stored rules that do not parse */
    rule_def *v;
    size_t n;
    bool bad;
    ms_err e;
} stored_rules;

static bool load_rule(void *ctx, const char *name, size_t name_len, const char *v, size_t len)
{
    stored_rules *s = ctx;
    rule_def r;
    if (rule_parse(v, len, &r, &s->e) != MS_OK) { /* stored when it parsed, under older checks (a name "..") */
        ms_log(LOG_ERROR, "notify.rule_skipped",
               "stored rule %.*s does not parse (%s): skipped (DELETE /v1/rules/NAME removes it)", (int)name_len, name,
               s->e.msg);
        if (name_len <= RULE_NAME_MAX && !memchr(name, 0, name_len)) /* not in force: DELETE still works */
            add_skipped(s->owner, name, name_len);
        return true;
    }
    s->v = ms_realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = r;
    return true;
}

static void skip_stored(notifier *n, rule_def *r, const char *why)
{
    ms_log(LOG_ERROR, "notify.rule_skipped",
           "stored rule %s is not in force: %s (replace it with POST /v1/rules, or DELETE /v1/rules/%s)", r->name, why,
           r->name);
    add_skipped(n, r->name, strlen(r->name));
    rule_def_free(r);
}

/* At start, the bound of a change on every rule loaded (rule_check.h, one helper for all): a rule of the file
 * over it stops the start; a stored one over it, or past RULE_SET_EXPRS_MAX, is skipped (logged). */
static ms_code check_loaded(notifier *n, ms_err *e)
{
    size_t total = n->nfile + n->napi;
    const rule_def **all = ms_malloc((total ? total : 1) * sizeof *all);
    rule_check_result *res = ms_calloc(total ? total : 1, sizeof *res);
    for (size_t i = 0; i < n->nfile; i++)
        all[i] = &n->file_rules[i];
    for (size_t i = 0; i < n->napi; i++)
        all[n->nfile + i] = &n->api_rules[i];
    ms_code rc = rule_check(NULL, all, total, res, e);
    size_t exprs = 0;
    for (size_t i = 0; i < n->nfile && rc == MS_OK; i++) {
        if (!res[i].ok) rc = ms_fail(e, MS_EINVAL, "--rules %s: %s", n->opt.rules_file, res[i].why);
        n->file_rules[i].check_cpu_s = res[i].cpu_s;
        exprs += n->file_rules[i].nany + n->file_rules[i].nregex;
    }
    size_t kept = 0;
    for (size_t i = 0; i < n->napi && rc == MS_OK; i++) {
        rule_def *r = &n->api_rules[i];
        const rule_check_result *c = &res[n->nfile + i];
        size_t x = r->nany + r->nregex;
        if (!c->ok) {
            skip_stored(n, r, c->why);
        } else if (exprs <= RULE_SET_EXPRS_MAX && exprs + x > RULE_SET_EXPRS_MAX) {
            char why[96];
            snprintf(why, sizeof why, "past %d phrases and regexes in all the rules in force", RULE_SET_EXPRS_MAX);
            skip_stored(n, r, why);
        } else {
            r->check_cpu_s = c->cpu_s;
            exprs += x;
            n->api_rules[kept++] = *r;
        }
    }
    if (rc == MS_OK) n->napi = kept;
    free(all);
    free(res);
    double cpu = regex_cpu(n, n->api_rules, n->napi);
    if (rc == MS_OK && cpu > RULE_CHECK_SET_CPU_S)
        ms_log(LOG_WARN, "notify.rules_costly",
               "the regexes of the rules in force took %.1f s to compile, each alone (changes that add to them are "
               "refused over %.0f s)",
               cpu, RULE_CHECK_SET_CPU_S);
    return rc;
}

static ms_code load_rules(notifier *n, ms_err *e)
{
    if (n->opt.rules_file) {
        buf text = {0};
        ms_code rc = buf_read_settings_file(&text, n->opt.rules_file, e);
        if (rc == MS_OK) rc = rules_parse_list(text.data, text.len, &n->file_rules, &n->nfile, e);
        buf_free(&text);
        if (rc != MS_OK) {
            ms_err why = *e;
            return ms_fail(e, MS_EINVAL, "--rules %s: %s", n->opt.rules_file, why.msg);
        }
    }
    store_read *r;
    ms_code rc = store_read_begin(n->store, &r, e);
    if (rc != MS_OK) return rc;
    stored_rules s = {.owner = n};
    uint64_t pos = 0, last = 0;
    rc = store_definitions_list(r, NOTIFY_KIND_RULE, load_rule, &s, e);
    if (rc == MS_OK) rc = store_sink_position(r, NOTIFY_SINK, &pos, e);
    if (rc == MS_OK) rc = store_events_last(r, &last, e);
    store_read_end(r);
    n->api_rules = s.v;
    n->napi = s.n;
    if (rc != MS_OK) return rc;
    /* a rule of the file shadows an API rule of the same name (defined before the file named it) */
    for (size_t i = 0; i < n->napi;) {
        if (find_rule(n->file_rules, n->nfile, n->api_rules[i].name) >= 0) {
            ms_log(LOG_WARN, "notify.rule_shadowed", "rule %s of the rules file replaces the one defined over the API",
                   n->api_rules[i].name);
            rule_def_free(&n->api_rules[i]);
            n->api_rules[i] = n->api_rules[--n->napi];
        } else {
            i++;
        }
    }
    if ((rc = check_loaded(n, e)) != MS_OK) return rc;
    atomic_store(&n->position, pos);
    atomic_store(&n->saved_position, pos);
    n->hub = hub_new(last, n->opt.max_streams);
    rule_set *rs = NULL;
    if ((rc = compile_with(n, n->api_rules, n->napi, &rs, e)) != MS_OK) return rc;
    live_swap(n, rs);
    return MS_OK;
}

ms_code notifier_start(notifier **out, const notifier_options *o, ms_err *e)
{
    notifier *n = ms_calloc(1, sizeof *n);
    n->opt = *o;
    n->store = o->store;
    n->writer = o->writer;
    pthread_mutex_init(&n->change_lock, NULL);
    pthread_mutex_init(&n->set_lock, NULL);
    pthread_mutex_init(&n->info_lock, NULL);
    ms_code rc = load_rules(n, e);
    if (rc == MS_OK) rc = webhooks_start(n, &n->hooks, e);
    if (rc == MS_OK && o->events_topic) rc = events_kafka_start(n, &n->kafka, e);
    if (rc == MS_OK && pthread_create(&n->follower, NULL, follower_main, n) != 0)
        rc = ms_fail(e, MS_EIO, "notifications: cannot start the follower thread");
    if (rc != MS_OK) {
        notifier_stop(n);
        return rc;
    }
    n->follower_started = true;
    subsystem_register(&(subsystem){.name = "notify", .metrics = notify_metrics, .health = notify_health, .ctx = n});
    ms_log(LOG_INFO, "notify.started",
           "notifications: %zu rules (%zu from the rules file), events up to %llu, "
           "commit log position %llu",
           n->nfile + n->napi, n->nfile, (unsigned long long)hub_last(n->hub),
           (unsigned long long)atomic_load(&n->position));
    *out = n;
    return MS_OK;
}

void notifier_close_streams(notifier *n)
{
    if (n && n->hub) hub_close(n->hub);
}

void notifier_stop(notifier *n)
{
    if (!n) return;
    if (n->follower_started) subsystem_unregister(n);
    if (n->hub) hub_close(n->hub);
    atomic_store(&n->stop, true);
    if (n->follower_started) pthread_join(n->follower, NULL);
    events_kafka_stop(n->kafka);
    webhooks_stop(n->hooks);
    live_release(n->live);
    for (size_t i = 0; i < n->nfile; i++)
        rule_def_free(&n->file_rules[i]);
    for (size_t i = 0; i < n->napi; i++)
        rule_def_free(&n->api_rules[i]);
    free(n->file_rules);
    free(n->api_rules);
    free(n->skipped);
    free(n->counts);
    hub_free(n->hub);
    pthread_mutex_destroy(&n->change_lock);
    pthread_mutex_destroy(&n->set_lock);
    pthread_mutex_destroy(&n->info_lock);
    free(n);
}

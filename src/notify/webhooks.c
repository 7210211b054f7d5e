/*
 * webhooks.c - webhook subscriptions: each posts the events of one rule (or all) to a URL, in seq order,
 * at least once (see notifier.h; delivery.h has what a delivery looks like).
 *
 * DESIGN: a subscription is a definition in the store (kind "subscription", by its id: its rule, URL,
 * secret, creator and the seq it starts after), written by the writer with its audit entry, and a worker
 * thread of its own with its own HTTP connection (keep-alive), so a target that hangs or fails holds up
 * only its own subscription: never another one, the follower or ingest. The worker reads the first event
 * after its position that its rule selects (its own short read transaction), posts it and waits for the
 * answer (each step bounded by --webhook-timeout); a 2xx moves its position past the event, anything else
 * (a status, a timeout, a refused connection, a failed certificate check) counts a failure and waits
 * webhook_backoff_ms(failures in a row) before posting the same event again, forever: events are never
 * skipped. Caught up, it sleeps on the hub until the follower publishes more. Its position is kept in the
 * store as a sink position ("webhook:" id), written at most once a second while it delivers and when it
 * catches up or stops: a crash re-posts at most a second's worth of events (receivers drop seqs they have
 * seen). Stopping or deleting interrupts an attempt in flight (http_client_conn_interrupt) and joins the
 * worker. A webhook delivers what its creator may read: before each post the worker looks up the creator's
 * account, and while it is gone, disabled or its role lacks notifications:read, the subscription holds (its
 * position stays; last_error says why), as an event stream ends once its token no longer reads them.
 *
 * State for GET /v1/subscriptions/{id} (deliveries, failures, the last status and error, the next retry)
 * is kept in memory and starts again at a restart; the position does not.
 *
 * What it must never do: return or log the secret (it is stored because every delivery is signed with
 * it), skip an event, post events of one subscription out of order, log an event's content, or post for a
 * creator who may no longer read events.
 */
#include "notify/notify_internal.h"

#include "access/access.h"

#include "base/http_client.h"
#include "base/http_client_url.h"
#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/log.h"
#include "base/timefmt.h"
#include "notify/delivery.h"
#include "notify/event.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET_MIN 16
#define SECRET_MAX 1024
#define LOOK_MAX 10000 /* events looked at per search for the next one of the subscription's rule */
#define SAVE_EVERY_S 1.0
#define MAX_ANSWER ((size_t)64 << 10)

typedef struct subscription {
    webhooks *w;
    char id[33];
    char rule[RULE_NAME_MAX + 1]; /* "": every event */
    char *url, *secret;
    size_t secret_len;
    http_client_url u;
    int64_t created_us;
    char created_by[STORE_USER_MAX];
    uint64_t start; /* deliver the events after this seq */
    char position_name[48];
    /* worker */
    pthread_t thread;
    bool started;
    atomic_bool stop, deleted;
    pthread_mutex_t lock; /* the state below, and the worker's sleeps */
    pthread_cond_t cond;
    http_client_conn *conn;
    /* state */
    uint64_t delivered, deliveries, failures_total;
    uint32_t failures;
    int last_status;
    char last_error[200];
    int64_t last_attempt_us, next_retry_us;
    bool delivering;
} subscription;

struct webhooks {
    notifier *n;
    pthread_mutex_t lock; /* the list */
    subscription **subs;
    size_t nsubs;
};

/* ---- the worker ---- */

typedef struct {
    const char *rule;
    buf *body;
    uint64_t seq, looked_to;
    unsigned looked;
} next_state;

static bool find_next(void *ctx, uint64_t seq, const char *ev, size_t len)
{
    next_state *st = ctx;
    st->looked_to = seq;
    if (st->rule[0]) {
        const char *r;
        size_t rl;
        if (!notify_event_rule(ev, len, &r, &rl) || rl != strlen(st->rule) || memcmp(r, st->rule, rl) != 0)
            return ++st->looked < LOOK_MAX;
    }
    st->seq = seq;
    buf_put(st->body, ev, len);
    return false;
}

static void save_position(subscription *s, uint64_t pos, uint64_t *saved, double *at)
{
    if (pos <= *saved || atomic_load(&s->deleted)) return;
    ms_err e;
    if (store_sink_position_set(s->w->n->store, s->position_name, pos, &e) == MS_OK) {
        *saved = pos;
        *at = ms_mono_s();
    } else {
        ms_log(LOG_WARN, "notify.webhook_position", "subscription %s: position not saved: %s", s->id, e.msg);
    }
}

/* Sleep until the monotonic deadline or a stop, whichever comes first. */
static void sleep_until(subscription *s, double deadline)
{
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->stop)) {
        double now = ms_mono_s();
        if (now >= deadline) break;
        struct timespec ts = ms_deadline(CLOCK_MONOTONIC, (long)((deadline - now) * 1000) + 1);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
}

/* One attempt to post body (event seq): true on a 2xx. */
static bool post_event(subscription *s, uint64_t seq, const buf *body, int *status, char *err, size_t cap)
{
    char sig[WEBHOOK_SIGNATURE_LEN + 1], seqs[24];
    webhook_signature(s->secret, s->secret_len, body->data, body->len, sig);
    snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)seq);
    http_client_header h[] = {{"Content-Type", "application/json"}, {"User-Agent", "medstream-webhook"},
                              {"X-Medstream-Signature", sig},       {"X-Medstream-Event-Seq", seqs},
                              {"X-Medstream-Subscription", s->id},  {NULL, NULL}};
    *status = 0;
    if (!s->conn) {
        snprintf(err, cap, "cannot set up %s (CA certificates?)", s->u.https ? "TLS" : "the connection");
        return false;
    }
    http_client_response resp;
    http_client_response_init(&resp);
    const char *path = s->u.base_path[0] ? s->u.base_path : "/";
    http_client_err rc = http_client_request(s->conn, "POST", path, h, body->data, body->len, &resp);
    bool ok = false;
    if (rc != HTTP_CLIENT_OK) {
        snprintf(err, cap, "%s", http_client_conn_error(s->conn));
    } else {
        *status = resp.status;
        ok = resp.status >= 200 && resp.status < 300;
        if (!ok) snprintf(err, cap, "HTTP %d", resp.status);
    }
    http_client_response_free(&resp);
    return ok;
}

/* http_client's address check of every connect (unless serve --webhook-allow-private): delivery.h. */
static bool public_address(void *ctx, const struct sockaddr *sa, char *why, size_t cap)
{
    (void)ctx;
    return webhook_address_allowed(sa, why, cap);
}

/* A webhook delivers what its creator may read: while the creator's account is gone, disabled, or its role
 * lacks notifications:read, it delivers nothing (its position stays, so nothing is skipped if the account is
 * enabled again) and says why in last_error. A subscription without a creator (written before creators were
 * kept) is not held. False with why: held. */
static bool creator_may_read(const subscription *s, char *why, size_t cap)
{
    if (!s->created_by[0]) return true;
    store_read *r;
    ms_err e;
    store_account acc;
    bool found = false;
    ms_code rc = store_read_begin(s->w->n->store, &r, &e);
    if (rc == MS_OK) {
        rc = store_account_get(r, s->created_by, &acc, &found, &e);
        store_read_end(r);
    }
    if (rc != MS_OK)
        snprintf(why, cap, "held: its creator's account cannot be read: %.120s", e.msg);
    else if (!found)
        snprintf(why, cap, "held: its creator's account no longer exists");
    else if (acc.disabled)
        snprintf(why, cap, "held: its creator's account is disabled");
    else if (!access_allows(acc.role, "notifications:read"))
        snprintf(why, cap, "held: its creator's role %.64s lacks notifications:read", acc.role);
    else
        return true;
    return false;
}

static void *sub_main(void *arg)
{
    subscription *s = arg;
    notifier *n = s->w->n;
    pthread_setname_np(pthread_self(), "ms-webhook");
    uint64_t pos = s->start, stored = 0;
    store_read *r;
    ms_err e;
    if (store_read_begin(n->store, &r, &e) == MS_OK) {
        store_sink_position(r, s->position_name, &stored, &e);
        store_read_end(r);
    }
    if (stored > pos) pos = stored;
    uint64_t saved = pos;
    double saved_at = ms_mono_s();
    pthread_mutex_lock(&s->lock);
    s->delivered = pos;
    pthread_mutex_unlock(&s->lock);
    buf body = {0};
    while (!atomic_load(&s->stop)) {
        body.len = 0;
        next_state st = {.rule = s->rule, .body = &body, .looked_to = pos};
        ms_code rc = store_read_begin(n->store, &r, &e);
        if (rc == MS_OK) {
            rc = store_events_scan(r, pos, find_next, &st, &e);
            store_read_end(r);
        }
        if (rc != MS_OK) {
            pthread_mutex_lock(&s->lock);
            snprintf(s->last_error, sizeof s->last_error, "reading the event log: %.170s", e.msg);
            pthread_mutex_unlock(&s->lock);
            sleep_until(s, ms_mono_s() + 1.0);
            continue;
        }
        if (!st.seq) { /* nothing for this subscription up to looked_to */
            pos = st.looked_to;
            pthread_mutex_lock(&s->lock);
            s->delivered = pos;
            s->delivering = false;
            pthread_mutex_unlock(&s->lock);
            if (st.looked < LOOK_MAX) {
                save_position(s, pos, &saved, &saved_at);
                if (hub_closed(n->hub)) /* stopping: hub_wait no longer waits */
                    sleep_until(s, ms_mono_s() + 1.0);
                else
                    hub_wait(n->hub, pos, 1000);
            }
            continue;
        }
        char err[sizeof s->last_error];
        if (!creator_may_read(s, err, sizeof err)) {
            pthread_mutex_lock(&s->lock);
            s->delivering = false;
            snprintf(s->last_error, sizeof s->last_error, "%s", err);
            pthread_mutex_unlock(&s->lock);
            sleep_until(s, ms_mono_s() + 1.0);
            continue;
        }
        pthread_mutex_lock(&s->lock);
        s->delivering = true;
        pthread_mutex_unlock(&s->lock);
        int status = 0;
        bool ok = post_event(s, st.seq, &body, &status, err, sizeof err);
        if (atomic_load(&s->stop)) break; /* interrupted: the event is posted again by the next start */
        pthread_mutex_lock(&s->lock);
        s->last_attempt_us = ms_now_us();
        s->last_status = status;
        if (ok) {
            pos = st.seq;
            s->delivered = pos;
            s->deliveries++;
            s->failures = 0;
            s->next_retry_us = 0;
            s->last_error[0] = 0;
        } else {
            s->failures++;
            s->failures_total++;
            snprintf(s->last_error, sizeof s->last_error, "%s", err);
            uint64_t wait = webhook_backoff_ms(s->failures, n->opt.webhook_backoff_max_ms);
            s->next_retry_us = s->last_attempt_us + (int64_t)wait * 1000;
        }
        uint32_t failures = s->failures;
        pthread_mutex_unlock(&s->lock);
        if (ok) {
            if (ms_mono_s() - saved_at >= SAVE_EVERY_S) save_position(s, pos, &saved, &saved_at);
        } else {
            if (failures == 1 || failures % 10 == 0) /* not every attempt: a dead target would flood the log */
                ms_log(LOG_WARN, "notify.webhook_failed",
                       "subscription %s: delivery of event %llu failed (%s); attempt %u, retrying with back-off", s->id,
                       (unsigned long long)st.seq, err, failures);
            sleep_until(s, ms_mono_s() + (double)webhook_backoff_ms(failures, n->opt.webhook_backoff_max_ms) / 1000);
        }
    }
    save_position(s, pos, &saved, &saved_at);
    buf_free(&body);
    return NULL;
}

/* ---- subscriptions ---- */

static void sub_free(subscription *s)
{
    if (!s) return;
    http_client_conn_free(s->conn);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    if (s->secret) memset(s->secret, 0, s->secret_len);
    free(s->secret);
    free(s->url);
    free(s);
}

static void sub_stop(subscription *s)
{
    atomic_store(&s->stop, true);
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    http_client_conn_interrupt(s->conn);
    hub_poke(s->w->n->hub);
    if (s->started) pthread_join(s->thread, NULL);
    s->started = false;
}

static ms_code sub_start(webhooks *w, subscription *s, ms_err *e)
{
    notifier *n = w->n;
    s->w = w;
    s->delivered = s->start; /* until the worker has read its stored position */
    snprintf(s->position_name, sizeof s->position_name, "webhook:%s", s->id);
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    int t = (int)n->opt.webhook_timeout_ms;
    s->conn = s->u.https ? http_client_conn_new_tls(s->u.host, s->u.port, t, MAX_ANSWER, n->opt.webhook_ca_file)
                         : http_client_conn_new(s->u.host, s->u.port, t, MAX_ANSWER);
    if (s->conn && !n->opt.webhook_allow_private) http_client_conn_set_address_check(s->conn, public_address, NULL);
    if (pthread_create(&s->thread, NULL, sub_main, s) != 0)
        return ms_fail(e, MS_EIO, "subscription %s: cannot start its worker", s->id);
    s->started = true;
    return MS_OK;
}

/* The members a subscription's stored JSON and its answered state share, from '{': id, rule, url, the
 * secret only when stored, created_at and created_by. */
static void sub_head_json(const subscription *s, bool with_secret, buf *out, bool *first)
{
    buf_putc(out, '{');
    jw_key(out, first, "id");
    jw_cstr(out, s->id);
    jw_key(out, first, "rule");
    if (s->rule[0])
        jw_cstr(out, s->rule);
    else
        buf_puts(out, "null");
    jw_key(out, first, "url");
    jw_cstr(out, s->url);
    if (with_secret) {
        jw_key(out, first, "secret");
        jw_string(out, s->secret, s->secret_len);
    }
    jw_key(out, first, "created_at");
    jw_time(out, s->created_us);
    jw_key(out, first, "created_by");
    jw_cstr(out, s->created_by);
}

/* The stored JSON of a subscription (the secret included: it stays in the store). */
static void sub_stored_json(const subscription *s, buf *out)
{
    bool first = true;
    sub_head_json(s, true, out, &first);
    buf_printf(out, ",\"since\":%llu}", (unsigned long long)s->start);
}

static void opt_time(buf *out, int64_t us)
{
    if (us > 0)
        jw_time(out, us);
    else
        buf_puts(out, "null");
}

/* The state answered over the API: never the secret. */
static void sub_state_json(subscription *s, uint64_t log_seq, buf *out)
{
    bool first = true;
    sub_head_json(s, false, out, &first);
    pthread_mutex_lock(&s->lock);
    uint64_t delivered = s->delivered;
    buf_printf(out,
               ",\"since\":%llu,\"delivered_seq\":%llu,\"log_seq\":%llu,\"deliveries\":%llu,\"failures\":%u,"
               "\"failures_total\":%llu,\"last_status\":",
               (unsigned long long)s->start, (unsigned long long)delivered, (unsigned long long)log_seq,
               (unsigned long long)s->deliveries, s->failures, (unsigned long long)s->failures_total);
    if (s->last_status)
        buf_printf(out, "%d", s->last_status);
    else
        buf_puts(out, "null");
    jw_key(out, &first, "last_error");
    if (s->last_error[0])
        jw_cstr(out, s->last_error);
    else
        buf_puts(out, "null");
    jw_key(out, &first, "last_attempt_at");
    opt_time(out, s->last_attempt_us);
    jw_key(out, &first, "next_retry_at");
    opt_time(out, s->failures ? s->next_retry_us : 0);
    jw_key(out, &first, "state");
    jw_cstr(out, s->failures ? "retrying" : s->delivering ? "delivering" : "idle");
    pthread_mutex_unlock(&s->lock);
    buf_putc(out, '}');
}

static bool member_is(const json_member *m, const char *k)
{
    return !m->key_escaped && m->key_len == strlen(k) && memcmp(m->key, k, m->key_len) == 0;
}

/* A JSON string member as a new C string (NULL: not a string, or a NUL inside). */
static char *string_of(const json_member *m, size_t *len)
{
    if (m->type != JSON_STRING) return NULL;
    char *s = ms_malloc(m->val_len);
    size_t n = json_string_decode(m->val + 1, m->val_len - 2, s);
    if (memchr(s, 0, n)) {
        free(s);
        return NULL;
    }
    s[n] = 0;
    *len = n;
    return s;
}

/* A subscription from JSON: a request's (stored = false: id, creator and times are the caller's) or a
 * stored one. allow_private: a literal private address is accepted (a stored one always is: the address check
 * at every connect holds it if the server no longer allows it). */
static ms_code sub_parse(const char *json, size_t len, bool stored, bool allow_private, subscription **out, ms_err *e)
{
    json_member m[16];
    json_error je;
    int k = json_scan_object(json, len, m, 16, &je);
    if (k < 0) return ms_fail(e, MS_EINVAL, "subscription: %s at byte %zu", je.msg, je.offset);
    subscription *s = ms_calloc(1, sizeof *s);
    ms_code rc = MS_OK;
    bool have_since = false;
    for (int i = 0; i < k && rc == MS_OK; i++) {
        size_t n = 0;
        char *v = NULL;
        const json_member *x = &m[i];
        if (member_is(x, "url")) {
            if (!(v = string_of(x, &n))) {
                rc = ms_fail(e, MS_EINVAL, "url: expected a string");
                break;
            }
            char why[300];
            const char *bad = webhook_url_check(v, allow_private || stored, why, sizeof why);
            if (bad) {
                free(v);
                rc = ms_fail(e, MS_EINVAL, "url: %s", bad);
                break;
            }
            free(s->url);
            s->url = v;
        } else if (member_is(x, "secret")) {
            if (!(v = string_of(x, &n)) || n < SECRET_MIN || n > SECRET_MAX) {
                free(v);
                rc = ms_fail(e, MS_EINVAL, "secret: a string of %d to %d bytes", SECRET_MIN, SECRET_MAX);
                break;
            }
            free(s->secret);
            s->secret = v;
            s->secret_len = n;
        } else if (member_is(x, "rule")) {
            if (x->type == JSON_NULL) continue;
            if (!(v = string_of(x, &n)) || !rule_name_valid(v, n)) {
                free(v);
                rc = ms_fail(e, MS_EINVAL, "rule: expected a rule's name");
                break;
            }
            memcpy(s->rule, v, n + 1);
            free(v);
        } else if (member_is(x, "since")) {
            char num[24];
            if (x->type != JSON_NUMBER || x->val_len >= sizeof num || memchr(x->val, '.', x->val_len) ||
                memchr(x->val, '-', x->val_len) || memchr(x->val, 'e', x->val_len) || memchr(x->val, 'E', x->val_len)) {
                rc = ms_fail(e, MS_EINVAL, "since: expected an event seq (an integer, 0 or more)");
                break;
            }
            memcpy(num, x->val, x->val_len);
            num[x->val_len] = 0;
            s->start = strtoull(num, NULL, 10);
            have_since = true;
        } else if (stored && member_is(x, "id")) {
            if ((v = string_of(x, &n)) && n < sizeof s->id) memcpy(s->id, v, n + 1);
            free(v);
        } else if (stored && member_is(x, "created_by")) {
            if ((v = string_of(x, &n)) && n < sizeof s->created_by) memcpy(s->created_by, v, n + 1);
            free(v);
        } else if (stored && member_is(x, "created_at")) {
            if ((v = string_of(x, &n))) time_parse_rfc3339(v, n, &s->created_us);
            free(v);
        } else {
            rc = ms_fail(e, MS_EINVAL,
                         "subscription: unknown member \"%.*s\" (subscriptions take rule, url, secret, "
                         "since)",
                         (int)(x->key_len > 64 ? 64 : x->key_len), x->key);
        }
    }
    if (rc == MS_OK && !s->url) rc = ms_fail(e, MS_EINVAL, "url: required");
    if (rc == MS_OK && !s->secret) rc = ms_fail(e, MS_EINVAL, "secret: required");
    if (rc == MS_OK) {
        char why[300];
        http_client_url_parse_any(s->url, &s->u, why, sizeof why);
        if (!have_since) s->start = UINT64_MAX; /* the caller's default */
    }
    if (rc != MS_OK) {
        free(s->url);
        free(s->secret);
        free(s);
        return rc;
    }
    *out = s;
    return MS_OK;
}

typedef struct {
    webhooks *w;
    ms_err e;
} load_state;

static bool load_sub(void *ctx, const char *name, size_t name_len, const char *v, size_t len)
{
    load_state *st = ctx;
    subscription *s;
    if (sub_parse(v, len, true, true, &s, &st->e) != MS_OK || !s->id[0]) {
        ms_log(LOG_ERROR, "notify.subscription_skipped", "stored subscription %.*s does not parse: skipped",
               (int)(name_len > 64 ? 64 : name_len), name);
        return true;
    }
    if (s->start == UINT64_MAX) s->start = 0;
    webhooks *w = st->w;
    w->subs = ms_realloc(w->subs, (w->nsubs + 1) * sizeof *w->subs);
    w->subs[w->nsubs++] = s;
    return true;
}

ms_code webhooks_start(notifier *n, webhooks **out, ms_err *e)
{
    webhooks *w = ms_calloc(1, sizeof *w);
    w->n = n;
    pthread_mutex_init(&w->lock, NULL);
    *out = w;
    store_read *r;
    ms_code rc = store_read_begin(n->store, &r, e);
    if (rc != MS_OK) return rc;
    load_state st = {.w = w};
    rc = store_definitions_list(r, NOTIFY_KIND_SUB, load_sub, &st, e);
    store_read_end(r);
    for (size_t i = 0; rc == MS_OK && i < w->nsubs; i++)
        rc = sub_start(w, w->subs[i], e);
    return rc;
}

void webhooks_stop(webhooks *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->nsubs; i++) { /* interrupt them all first: stopping takes one wait, not n */
        atomic_store(&w->subs[i]->stop, true);
        http_client_conn_interrupt(w->subs[i]->conn);
    }
    for (size_t i = 0; i < w->nsubs; i++) {
        sub_stop(w->subs[i]);
        sub_free(w->subs[i]);
    }
    free(w->subs);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static subscription *find_sub(webhooks *w, const char *id)
{
    for (size_t i = 0; i < w->nsubs; i++)
        if (!strcmp(w->subs[i]->id, id)) return w->subs[i];
    return NULL;
}

ms_code notifier_subscription_create(notifier *n, const char *json, size_t len, const notify_actor *who, buf *answer,
                                     ms_err *e)
{
    webhooks *w = n->hooks;
    subscription *s;
    ms_code rc = sub_parse(json, len, false, n->opt.webhook_allow_private, &s, e);
    if (rc != MS_OK) return rc;
    if (s->rule[0]) {
        live_set *ls = live_acquire(n);
        bool known = rule_set_find(ls->rs, s->rule) >= 0;
        live_release(ls);
        if (!known) {
            rc = ms_fail(e, MS_EINVAL, "rule: no rule named \"%s\"", s->rule);
            sub_free(s);
            return rc;
        }
    }
    unsigned char id[16];
    if (RAND_bytes(id, sizeof id) != 1) {
        sub_free(s);
        return ms_fail(e, MS_EIO, "random number generator failed");
    }
    for (int i = 0; i < 16; i++)
        snprintf(s->id + 2 * i, 3, "%02x", id[i]);
    snprintf(s->created_by, sizeof s->created_by, "%s", who && who->user ? who->user : "");
    s->created_us = ms_now_us();
    if (s->start == UINT64_MAX) s->start = hub_last(n->hub);
    pthread_mutex_lock(&w->lock);
    if (w->nsubs >= n->opt.max_subscriptions) {
        pthread_mutex_unlock(&w->lock);
        sub_free(s);
        return ms_fail(e, MS_ECONFLICT, "at most %u subscriptions (serve --webhook-max); delete one first",
                       n->opt.max_subscriptions);
    }
    buf stored = {0};
    sub_stored_json(s, &stored);
    char resource[64];
    snprintf(resource, sizeof resource, "/v1/subscriptions/%s", s->id);
    rc = notify_definition_change(n, NOTIFY_KIND_SUB, s->id, stored.data, stored.len, false, "notifications:create",
                                  resource, who, e);
    memset(stored.data, 0, stored.len); /* the secret */
    buf_free(&stored);
    if (rc == MS_OK) rc = sub_start(w, s, e);
    if (rc != MS_OK) {
        pthread_mutex_unlock(&w->lock);
        sub_stop(s);
        sub_free(s);
        return rc;
    }
    w->subs = ms_realloc(w->subs, (w->nsubs + 1) * sizeof *w->subs);
    w->subs[w->nsubs++] = s;
    sub_state_json(s, hub_last(n->hub), answer);
    pthread_mutex_unlock(&w->lock);
    ms_log(LOG_INFO, "notify.subscription", "subscription %s created (rule %s, %s)", s->id, s->rule[0] ? s->rule : "*",
           s->u.https ? "https" : "http");
    return MS_OK;
}

ms_code notifier_subscription_delete(notifier *n, const char *id, const notify_actor *who, ms_err *e)
{
    webhooks *w = n->hooks;
    pthread_mutex_lock(&w->lock);
    subscription *s = find_sub(w, id);
    if (!s) {
        pthread_mutex_unlock(&w->lock);
        return ms_fail(e, MS_ENOTFOUND, "no subscription of that id");
    }
    char resource[64];
    snprintf(resource, sizeof resource, "/v1/subscriptions/%s", s->id);
    ms_code rc =
        notify_definition_change(n, NOTIFY_KIND_SUB, s->id, NULL, 0, true, "notifications:delete", resource, who, e);
    if (rc == MS_OK) {
        for (size_t i = 0; i < w->nsubs; i++)
            if (w->subs[i] == s) w->subs[i] = w->subs[--w->nsubs];
    }
    pthread_mutex_unlock(&w->lock);
    if (rc != MS_OK) return rc;
    atomic_store(&s->deleted, true);
    sub_stop(s);
    sub_free(s);
    ms_log(LOG_INFO, "notify.subscription", "subscription %s deleted", id);
    return MS_OK;
}

bool notifier_subscription_owner(notifier *n, const char *id, char *user, size_t cap)
{
    webhooks *w = n->hooks;
    pthread_mutex_lock(&w->lock);
    subscription *s = find_sub(w, id);
    if (s) snprintf(user, cap, "%s", s->created_by);
    pthread_mutex_unlock(&w->lock);
    return s != NULL;
}

static int cmp_sub(const void *a, const void *b)
{
    return strcmp((*(subscription *const *)a)->id, (*(subscription *const *)b)->id);
}

void notifier_subscriptions_json(notifier *n, const char *only_user, buf *out)
{
    webhooks *w = n->hooks;
    uint64_t last = hub_last(n->hub);
    pthread_mutex_lock(&w->lock);
    subscription **v = ms_malloc((w->nsubs ? w->nsubs : 1) * sizeof *v);
    if (w->nsubs) memcpy(v, w->subs, w->nsubs * sizeof *v);
    qsort(v, w->nsubs, sizeof *v, cmp_sub);
    buf_puts(out, "{\"subscriptions\":[");
    bool first = true;
    for (size_t i = 0; i < w->nsubs; i++) {
        if (only_user && strcmp(v[i]->created_by, only_user) != 0) continue;
        if (!first) buf_putc(out, ',');
        first = false;
        sub_state_json(v[i], last, out);
    }
    buf_puts(out, "]}");
    pthread_mutex_unlock(&w->lock);
    free(v);
}

bool notifier_subscription_json(notifier *n, const char *id, buf *out)
{
    webhooks *w = n->hooks;
    pthread_mutex_lock(&w->lock);
    subscription *s = find_sub(w, id);
    if (s) sub_state_json(s, hub_last(n->hub), out);
    pthread_mutex_unlock(&w->lock);
    return s != NULL;
}

void webhooks_metrics(webhooks *w, buf *out)
{
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    static const char *const names[] = {"medstream_webhook_deliveries_total", "medstream_webhook_failures_total",
                                        "medstream_webhook_delivered_seq", "medstream_webhook_retrying"};
    static const char *const help[] = {"Events delivered (2xx), by subscription id.",
                                       "Failed delivery attempts, by subscription id.",
                                       "The last event seq delivered (or skipped: not its rule), by subscription id.",
                                       "1 while the subscription's next event has failed and waits for a retry."};
    static const char *const types[] = {"counter", "counter", "gauge", "gauge"};
    for (int k = 0; k < 4; k++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", names[k], help[k], names[k], types[k]);
        for (size_t i = 0; i < w->nsubs; i++) {
            subscription *s = w->subs[i];
            pthread_mutex_lock(&s->lock);
            uint64_t v = k == 0 ? s->deliveries : k == 1 ? s->failures_total : k == 2 ? s->delivered : s->failures > 0;
            pthread_mutex_unlock(&s->lock);
            buf_printf(out, "%s{subscription=\"%s\"} %llu\n", names[k], s->id, (unsigned long long)v);
        }
    }
    pthread_mutex_unlock(&w->lock);
}

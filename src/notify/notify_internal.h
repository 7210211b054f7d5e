/*
 * notify_internal.h - what the notifier's files share (notifier.c: rules, the follower, metrics;
 * streams.c: Server-Sent Events; webhooks.c: subscriptions) and nothing outside src/notify may see.
 *
 * Rules these structs carry:
 *   - the compiled rule set in force is n->live, swapped under set_lock; a user takes a reference
 *     (live_acquire) and gives it back (live_release): the last one frees it. It is also what GET
 *     /v1/rules answers from (its rules, the file's first): a read never waits for a compile;
 *   - rule changes are serialized by change_lock (check, compile, persist, swap, in that order); the
 *     check of a new rule's regexes (rule_check.h) runs before it is taken;
 *   - the follower alone appends to the event log and owns its position; the hub tells everyone else.
 */
#ifndef MS_NOTIFY_INTERNAL_H
#define MS_NOTIFY_INTERNAL_H

#include "notify/hub.h"
#include "notify/notifier.h"
#include "notify/rules.h"
#include "base/metrics.h"

#include <pthread.h>
#include <stdatomic.h>

#define NOTIFY_SINK "notify"           /* the follower's position in the commit log (store_sink_position) */
#define NOTIFY_KIND_RULE "rule"        /* store definitions: rules defined over the API */
#define NOTIFY_KIND_SUB "subscription" /* store definitions: webhook subscriptions */

typedef struct {
    rule_set *rs;
    size_t nfile; /* its first nfile rules are the rules file's, the rest the API's */
    atomic_int refs;
} live_set;

typedef struct {
    char name[RULE_NAME_MAX + 1];
    uint64_t events;
} rule_count;

typedef struct webhooks webhooks;
typedef struct events_kafka events_kafka;

struct notifier {
    notifier_options opt;
    store *store;
    writer *writer;
    hub *hub;
    /* rules */
    pthread_mutex_t change_lock;
    rule_def *file_rules, *api_rules;
    size_t nfile, napi;
    char (*skipped)[RULE_NAME_MAX + 1]; /* stored rules not in force (over a bound, or not parsing, at the start): DELETE works */
    size_t nskipped;
    pthread_mutex_t set_lock;
    live_set *live;
    /* the follower */
    pthread_t follower;
    bool follower_started;
    atomic_bool stop;
    _Atomic uint64_t position, saved_position; /* in the commit log: matched, and saved with events */
    _Atomic uint64_t lag_us;                   /* age of the oldest commit not matched yet (0: caught up) */
    _Atomic uint64_t records_matched, bytes_scanned, steps, store_failures;
    histogram delay; /* commit -> event durable */
    atomic_bool failing;
    pthread_mutex_t info_lock; /* the per-rule counts and the last error */
    rule_count *counts;
    size_t ncounts, capcounts;
    char error[300];
    /* streams */
    _Atomic uint64_t sse_opened, sse_events_sent, sse_refused;
    /* webhooks */
    webhooks *hooks;
    /* --events-topic */
    events_kafka *kafka;
};

live_set *live_acquire(notifier *n);
/* Put (value) or delete (del) definition kind/name through the writer, with an audit entry of action on
 * resource by who: durable together, or neither. */
ms_code notify_definition_change(notifier *n, const char *kind, const char *name, const char *value, size_t len,
                                 bool del, const char *action, const char *resource, const notify_actor *who,
                                 ms_err *e);
void live_release(live_set *ls);

/* events_kafka.c */
ms_code events_kafka_start(notifier *n, events_kafka **out, ms_err *e);
void events_kafka_stop(events_kafka *k);
void events_kafka_metrics(events_kafka *k, buf *out);

/* webhooks.c */
ms_code webhooks_start(notifier *n, webhooks **out, ms_err *e);
void webhooks_stop(webhooks *w);
/* Prometheus samples of every subscription. */
void webhooks_metrics(webhooks *w, buf *out);

#endif

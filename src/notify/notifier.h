/*
 * notifier.h - real-time notifications on signals in the text of committed records (README.md beside
 * this file has the design): signal rules (rules.h) defined in a file or over the API, a follower of the
 * store's commit log that matches every committed record version against all of them, a durable event log,
 * Server-Sent Events streams, and webhook subscriptions.
 *
 * Contract:
 *   - matching runs on its own thread, after the commit, from its own position in the commit log (as the
 *     sinks do); it never slows or blocks ingest beyond LMDB's writer lock for one small write per step.
 *   - events and the follower's position are written in one LMDB transaction (store_events_append): after
 *     a crash no event is lost or written twice; each record version that matches gives one event per
 *     (rule, field) that matches, with the rules in force when the follower reached its commit.
 *   - rules change atomically: a new set is compiled (a bad rule is refused with the reason, MS_EINVAL,
 *     and the old set stays), persisted with its audit entry through the writer, then swapped in; the
 *     follower finishes its step with the set it began it with.
 *   - events are read by seq (GET /v1/events), streamed (notify_stream_*), or posted to webhooks in seq
 *     order per subscription, at least once, retried with capped exponential back-off.
 *   - thread-safe: every call may come from any request thread.
 *
 * What it must never do: put a record's text (or any value of a record) in an event, a log line, an error
 * message or a metric label; return or log a subscription's secret; let one webhook target, however slow,
 * hold up another subscription, the follower or ingest.
 */
#ifndef MS_NOTIFY_NOTIFIER_H
#define MS_NOTIFY_NOTIFIER_H

#include "ingest/writer.h"
#include "store/store.h"

#include <sys/types.h>

typedef struct notifier notifier;

typedef struct {
    store *store;
    writer *writer;                  /* rule and subscription changes commit through it, with their audit entry */
    const char *rules_file;          /* rules defined in a file (a JSON array of rules), or NULL */
    unsigned max_streams;            /* Server-Sent Events streams open at once; beyond, 503 */
    unsigned heartbeat_s;            /* a comment line on an idle stream every this many seconds */
    unsigned webhook_timeout_ms;     /* each step (connect, send, receive) of a webhook delivery */
    unsigned webhook_backoff_max_ms; /* the longest wait between two attempts of one delivery */
    unsigned max_subscriptions;
    bool webhook_allow_private;      /* webhooks may post to loopback, private, link-local... addresses */
    const char *webhook_ca_file;     /* CA certificates (PEM) that https webhook targets are checked against;
                                        NULL: the system's */
    const char *events_topic;        /* every event also to this Kafka topic (NULL: none) ... */
    const char *kafka_brokers;       /* ... on these brokers */
    const char *const *kafka_config; /* "key=value" librdkafka settings (may be NULL) */
} notifier_options;

/* Who asks for a change: named in its audit entry. */
typedef struct {
    const char *user, *role, *client;
} notify_actor;

/* Load the rules (the file's and those defined over the API, kept in the store), compile them, start the
 * follower and a worker per subscription. Errors: MS_EINVAL a bad rules file (the message names the file,
 * the rule and the problem); store errors. */
ms_code notifier_start(notifier **out, const notifier_options *o, ms_err *e);
/* End every Server-Sent Events stream now and refuse new ones (before the HTTP server stops, so that its
 * stop does not wait for them). */
void notifier_close_streams(notifier *n);
/* Stop the follower and the webhook workers (their positions saved); NULL is a no-op. */
void notifier_stop(notifier *n);

/* ---- rules (GET/POST /v1/rules, DELETE /v1/rules/{name}) ---- */

/* Define or replace a rule (the JSON of rules.h). *created: it is new, no rule of its name was stored (one
 * stored but not in force is replaced, audited "rules:update" as a rule in force is). answer: the rule's JSON.
 * Errors: MS_EINVAL the rule or the set does not compile (the reason); MS_ECONFLICT a rule of the rules
 * file has this name (it cannot be changed over the API); store errors (MS_EFULL, MS_EIO). */
ms_code notifier_rule_put(notifier *n, const char *json, size_t len, const notify_actor *who, bool *created,
                          buf *answer, ms_err *e);
/* Errors: MS_ENOTFOUND; MS_ECONFLICT a rule of the rules file; store errors. */
ms_code notifier_rule_delete(notifier *n, const char *name, const notify_actor *who, ms_err *e);
/* {"rules":[{rule...,"source":"file"|"api"}]}, in name order. */
void notifier_rules_json(notifier *n, buf *out);
/* One rule's JSON with its "source"; false if there is none of that name. */
bool notifier_rule_json(notifier *n, const char *name, buf *out);
/* Does this notifier send its events to a Kafka topic (notifier_options.events_topic)? */
bool notifier_has_events_topic(const notifier *n);

/* ---- events ---- */

/* GET /v1/events: {"events":[...],"last_seq":N,"next_cursor":"SEQ"|null}: at most limit events after seq
 * `after` (of rule `rule` only, if not NULL); next_cursor when more may follow. */
ms_code notifier_events_page(notifier *n, uint64_t after, unsigned limit, const char *rule, buf *out, ms_err *e);

/* A Server-Sent Events stream of the events after `after` (UINT64_MAX: after the last one stored now) (of
 * rule `rule` only, if not NULL), then each new one as it is stored. Errors: MS_ESTOPPED the server is stopping;
 * MS_EFULL max_streams are open. */
typedef struct notify_stream notify_stream;
ms_code notify_stream_open(notifier *n, uint64_t after, const char *rule, notify_stream **out, ms_err *e);
/* The next bytes of the stream (blocks until there are some: events, or a heartbeat comment every
 * heartbeat_s): > 0 bytes in buf, -1 the stream ended (the server is stopping), -2 the client at
 * client_fd went away (or the stream broke). client_fd is polled for a hang-up while waiting (-1: not). */
ssize_t notify_stream_read(void *stream, int client_fd, char *buf, size_t max);
/* Free a stream (opened or ended). */
void notify_stream_close(void *stream);

/* ---- webhook subscriptions (POST/GET /v1/subscriptions, GET/DELETE /v1/subscriptions/{id}) ---- */

/* {"rule"?, "url", "secret", "since"?}: url http:// or https://; secret 16-1024 bytes; rule an existing
 * rule (absent: every event); since a seq to deliver after (default: the end of the event log, so only
 * new events). answer: the subscription's state (never the secret). Errors: MS_EINVAL (the member and
 * the problem); MS_ECONFLICT max_subscriptions exist; store errors. */
ms_code notifier_subscription_create(notifier *n, const char *json, size_t len, const notify_actor *who, buf *answer,
                                     ms_err *e);
/* Stop its worker and delete it. Errors: MS_ENOTFOUND; store errors. (Who may is the caller's decision:
 * notifier_subscription_owner.) */
ms_code notifier_subscription_delete(notifier *n, const char *id, const notify_actor *who, ms_err *e);
/* Who created subscription id (into user, STORE_USER_MAX bytes); false if there is none. */
bool notifier_subscription_owner(notifier *n, const char *id, char *user, size_t cap);
/* {"subscriptions":[state...]} in id order (only_user: only that user's; NULL: every one); one subscription's
 * state (false: none). A state is
 * {"id","rule","url","created_at","created_by","delivered_seq","log_seq","deliveries","failures",
 * "failures_total","last_status","last_error","last_attempt_at","next_retry_at","state"}. */
void notifier_subscriptions_json(notifier *n, const char *only_user, buf *out);
bool notifier_subscription_json(notifier *n, const char *id, buf *out);

#endif

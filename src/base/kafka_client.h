/*
 * kafka_client.h - the one place where medstream configures librdkafka clients: "key=value" settings
 * (--kafka-config, repeatable: SASL, TLS, ...) applied to a configuration, librdkafka's own messages
 * routed into medstream's log (base/log.h, event kafka.client), and the one idempotent producer factory
 * that the dead-letter producer (ingest), the public topic (sinks) and the benchmark's senders
 * (tools/bench) all use, and the producer thread the public topic and the events topic share.
 *
 * Contract: errors come back as text naming the setting (never a value of a record); a configuration
 * that fails to become a client is destroyed here, so the caller owns nothing on failure. Knows nothing
 * of the store, HTTP or records.
 */
#ifndef MS_KAFKA_CLIENT_H
#define MS_KAFKA_CLIENT_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Apply "key=value" settings (NULL-ended, may be NULL) to conf; on a bad one, false with err naming it. */
bool kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *settings, char *err, size_t cap);
/* librdkafka's messages (warnings and worse at log_level 4: connection failures, timeouts; never a
 * message's payload) go to medstream's log instead of its own lines on standard error. */
void kafka_conf_log_to_ms(rd_kafka_conf_t *conf);

typedef struct {
    const char *brokers;
    const char *const *config; /* the operator's "key=value" settings, applied last (may be NULL) */
    /* optional: a delivery report callback and its opaque */
    void (*on_delivery)(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
    void *opaque;
} kafka_producer_options;

/* An idempotent producer (linger 5 ms) on opt->brokers; NULL with err naming what is wrong. */
rd_kafka_t *kafka_producer_new(const kafka_producer_options *opt, char *err, size_t cap);

/* A consumer that reads partitions it assigns itself, outside any group's membership (group is a group.id
 * librdkafka wants for assign: never joined or committed to): partition ends reported, no automatic commits,
 * from the earliest offset kept, read_committed or not; config (the operator's settings, may be NULL) last.
 * NULL with err naming what is wrong. */
rd_kafka_t *kafka_reader_new(const char *brokers, const char *group, bool read_committed, const char *const *config,
                             char *err, size_t cap);

/* A producer with a thread of its own that follows something and produces it to one topic: what the
 * public topic (sinks) and the events topic (notify) share. fn's loop ends when stop is set. */
typedef struct {
    rd_kafka_t *rk;
    char *topic;
    pthread_t thread;
    atomic_bool stop;
} kafka_worker;
/* Make the producer (opt) for topic and start fn(arg) on its thread; false with err on failure (nothing is
 * left to free). */
bool kafka_worker_start(kafka_worker *w, const kafka_producer_options *opt, const char *topic, void *(*fn)(void *),
                        void *arg, char *err, size_t cap);
/* Set stop, join the thread, flush what is queued (up to 5 s), destroy the producer. */
void kafka_worker_stop(kafka_worker *w);

#endif

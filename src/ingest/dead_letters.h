/*
 * dead_letters.h - the Kafka source's dead letters (ingest_kafka.c is its only user): the messages that cannot
 * be stored, produced to the dead-letter topic, and the outbox in the store that keeps the writer's refusals
 * until their dead letters are delivered.
 *
 * Contract: a dead letter is the message itself (key and value) with the reason in header medstream-error
 * (which names fields and positions, never values) and its origin in medstream-partition and
 * medstream-offset. The scan's refusals are produced in stage 1 (dead_letters_send_rejected); the caller
 * waits for dead_letters_delivered before its offsets move past them. The writer's refusals are kept in the
 * commit that stores their batch (dead_letters_keep_refusals, the batch's ingest_job.also), sent once the
 * batch is durable (dead_letters_send_refusals) and cleared once delivered; the ones a stop left are sent
 * again when the node starts (dead_letters_send_left). At least once, never none (dead_letters.c has the
 * argument).
 *
 * What it must never do: log a message's key or payload or a full reason (the log counts dead letters by a
 * fixed class word), keep a message's body in the store (the outbox holds its place and the reason only), or
 * clear an outbox entry before its dead letter is delivered.
 */
#ifndef MS_INGEST_DEAD_LETTERS_H
#define MS_INGEST_DEAD_LETTERS_H

#include "ingest/writer.h"
#include "pipeline/record_scan.h"
#include "store/store.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

typedef struct {
    const char *brokers, *group; /* the source's (an outbox reader reads as group "<group>-dead-letters") */
    const char *topic;           /* the dead-letter topic */
    const char *const *config;   /* the operator's librdkafka settings, NULL-ended */
    bool read_committed;         /* a cluster node: messages are read back as its group's consumer reads them */
    store *store;
    writer *writer;
    const atomic_bool *stop; /* the source's: once it is set, dead_letters_delivered stops waiting */
} dead_letters_options;      /* every pointer must outlive the dead_letters */

typedef struct dead_letters dead_letters;

/* At start: the outbox's entries an earlier run left are listed (so never one this run is sending); no
 * Kafka client yet. */
ms_code dead_letters_open(dead_letters **out, const dead_letters_options *o, ms_err *e);
/* The dead-letter producer: the same brokers and security settings, none of the consumer's; false with err. */
bool dead_letters_connect(dead_letters *d, char *err, size_t cap);
/* Wait at most timeout_ms for the dead letters still queued (at stop). */
void dead_letters_flush(dead_letters *d, int timeout_ms);
/* The producer and the outbox's listed entries freed; NULL is fine. */
void dead_letters_close(dead_letters *d);
/* Messages sent to the dead-letter topic so far (for /metrics). */
uint64_t dead_letters_sent(dead_letters *d);

/* Stage 1: the records the scan rejected in batch (record i from msgs[i]), each sent with its reason. */
void dead_letters_send_rejected(dead_letters *d, rd_kafka_message_t *const *msgs, const record_batch *batch);
/* Wait until every dead letter produced is in Kafka; false if stopped first. */
bool dead_letters_delivered(dead_letters *d);
/* Consumer thread, every turn: the entries an earlier run left, sent and cleared (at most every 5 s while
 * they fail). */
void dead_letters_send_left(dead_letters *d);

/* One batch's records the writer refuses against the stored patient, from the commit that stores the batch to
 * their delivery. The caller sets msgs, n, batch and results; names are this module's. */
typedef struct {
    rd_kafka_message_t *const *msgs; /* the batch's messages, n of them: record i from msgs[i] */
    int n;
    const record_batch *batch;  /* the scan's verdicts (a record it rejected was sent in stage 1) */
    const item_result *results; /* the writer's */
    char **names;               /* the outbox names of the writer's refusals, cleared once delivered */
    int nnames;
} dead_letters_refusals;

/* A writer_apply_fn (ctx: dead_letters_refusals), the batch's ingest_job.also: inside its commit (again if the
 * writer runs the commit again), one outbox entry per record the writer refused, named in names. */
ms_code dead_letters_keep_refusals(void *ctx, store_write *w, ms_err *e);
/* Once the batch is durable: the kept refusals sent, and cleared once delivered (else kept for the next start). */
void dead_letters_send_refusals(dead_letters *d, const dead_letters_refusals *r);
void dead_letters_refusals_free(dead_letters_refusals *r);

#endif

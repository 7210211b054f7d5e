/*
 * sink_kafka_public.h - the de-identified stream: every public record version, published to a Kafka
 * topic after its batch commits, keyed by patient id, so downstream consumers never touch PHI.
 *
 * DESIGN: a sink that follows the store's commit log (store_log_entry) from its own position, kept in
 * the store (meta "sink:kafka-public"); for each committed record version it publishes the public copy
 * ({"patient_id","record_id","version","fields"}: allow-listed fields only; a deleted record's tombstone
 * version is {"patient_id","record_id","version","deleted":true}) with an idempotent producer, waits for
 * delivery, then advances its position (a message the brokers did not take, after message.timeout.ms or
 * refused, sends the commit's messages again a second later: never a position past an undelivered one).
 * An erasure (store/erase.c) becomes tombstones (null values) under the patient's key: one per erased
 * record version (headers medstream.erased=record, record_id, version), then one for the patient
 * (medstream.erased=patient), so that log compaction drops its messages. The PostgreSQL sink of issue 5
 * follows the same log.
 * Contract: at-least-once across restarts (a crash between delivery and saving the position re-sends
 * that commit's messages; consumers dedupe on record_id + version); nothing but the public store is read.
 */
#ifndef MS_SINK_KAFKA_PUBLIC_H
#define MS_SINK_KAFKA_PUBLIC_H

#include "store/store.h"

typedef struct sink_kafka_public sink_kafka_public;

/* config: extra librdkafka settings "key=value", NULL-ended (read during start only). */
ms_code sink_kafka_public_start(sink_kafka_public **out, store *s, const char *brokers, const char *topic,
                                const char *const *config, ms_err *e);
void sink_kafka_public_stop(sink_kafka_public *k);

#endif

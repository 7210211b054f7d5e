/*
 * ingest_kafka.h - Kafka as a source: consume a topic in a consumer group and put its messages through
 * the same pipeline as HTTP ingest (scan, writer, store), one message = one record.
 *
 * Contract (issue 4, first part): offsets are committed to Kafka only after the batch holding their
 * messages is durable, so a crash or a rebalance re-delivers at most the batches in flight, and record
 * ids make a replay a no-op in this store (exactly-once effect). In a plain group of several nodes, each
 * with its own store: a node losing partitions commits the offsets of what it stored synchronously and
 * drops what it polled and had not stored, so the next owner stores none of it; a node killed between a
 * batch's commit and Kafka's answer to its offsets leaves that batch to the next owner too (at least once
 * across stores; a cluster, cluster.h, is exactly once). A message that is not a valid record, or that the
 * writer refuses against the stored patient once its batch is stored, never blocks its partition and is
 * never dropped: it is produced to the dead-letter topic (header medstream-error: the reason, which
 * names fields and positions, never values; plus medstream-partition and medstream-offset), and that
 * produce is acknowledged before the offsets are committed. If the store refuses a batch (disk full),
 * the consumer retries it, without committing offsets. Three stages (poll+scan, append, commit+offsets)
 * overlap, one batch apart each; batches are stored and their offsets committed strictly in order.
 */
#ifndef MS_INGEST_KAFKA_H
#define MS_INGEST_KAFKA_H

#include "pipeline/schema.h"
#include "store/store.h"
#include "ingest/writer.h"

typedef struct {
    const char *brokers, *topic, *group;
    const char *dlq_topic;     /* rejected messages go here, with the error in a header */
    const char *const *config; /* extra librdkafka settings "key=value" (SASL, TLS), NULL-ended;
                                  read during kafka_ingest_start only */
    int batch_max;             /* messages per batch */
    int linger_ms;             /* wait at most this long to fill a batch */
    store *store;
    writer *writer;
    const schema *schema;
    size_t max_record;
    bool cluster;          /* one node of a cluster (ingest/cluster.h): shards, per-shard numbers, transactions */
    const char *node;      /* with cluster: this node's stable name */
    const char *advertise; /* with cluster: the URL other nodes redirect reads of this node's shards to (its
                              Kafka client.id) */
} kafka_options;

typedef struct kafka_ingest kafka_ingest;

ms_code kafka_ingest_start(kafka_ingest **out, const kafka_options *opt, ms_err *e);
/* A cluster node's shards and membership view (ingest/cluster.h), or NULL. */
struct cluster *kafka_ingest_cluster(kafka_ingest *k);
/* Finish the batch in hand, commit its offsets, leave the group. */
void kafka_ingest_stop(kafka_ingest *k);

#endif

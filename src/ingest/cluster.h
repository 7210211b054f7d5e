/*
 * cluster.h - a medstream node as one of a cluster behind one Kafka topic (issue 16): shards that never
 * split a patient, patient numbers minted per shard, exactly once with Kafka transactions.
 *
 * The topic T's partition count P is a power of two; shard s (shard.h) belongs to partition s mod P, and
 * the node the consumer group assigns partition p to owns its shards. Beside T, two topics of the
 * cluster (made at start when missing):
 *   - T.by-shard (P partitions, co-partitioned with T: the consumer uses the range assignor, so partition
 *     p of both goes to one node): a record found on a partition that does not own its shard (a producer
 *     that keyed it differently) is forwarded to its shard's partition there;
 *   - T.changelog (compacted; Pc partitions, P a multiple of Pc): the shard state, one message per new
 *     identity, key = identity MAC (keyed hash, no PHI), value = the patient number (8 bytes, big endian),
 *     in partition shard mod Pc. Never a record body.
 *
 * Per batch (ingest_kafka.c): stage 1 routes every record (cluster_route): forwarded, or its patient
 * number (known, or minted: the shard's next number). Stage 2 commits one Kafka transaction
 * (cluster_commit): the minted entries into the changelog, the forwards, the batch's markers (per input
 * partition, its messages' runs in T and T.by-shard in the order they are stored: pipeline/batch_marker.h)
 * and the input offsets with the consumer's group metadata (KIP-447: a member fenced out of the group by
 * a rebalance, a paused zombie, cannot commit, so it writes nothing). Only then stage 3 puts the batch
 * through the writer into LMDB, with the numbers the transaction published, while stage 2 commits the
 * next batch's transaction.
 *
 * A node given a partition (cluster_restore, on assignment) reads the changelog partition of its shards to
 * its end (read_committed: only committed transactions), so it mints after everything the shard ever
 * minted. Its end is the high watermark the first read showed, not the last stable offset: a transaction
 * open then, the previous owner's last batch whose offsets went under the group's old generation, may still
 * commit, and the new owner would then start past offsets it never stored; so the restore waits for such a
 * transaction to end (at the latest transaction.timeout.ms, 10 s, after a node died in one), and
 * cluster_commit has a batch's messages delivered before it sends the offsets. Then it stores again, in
 * their order, the committed batches whose markers lie past its store's offsets: a batch committed in Kafka
 * but not in LMDB before a crash, the batches another node stored while the partition was elsewhere, a new
 * node's whole history of the partition, or (after T's partitions doubled) the batches of the partition
 * that held its shards before. The same messages in the same order give the same record and patient
 * versions on every node that owns a shard. Record bodies therefore live in the stores and in T and
 * T.by-shard, which must keep them as long as a node may take a partition over (README "Cluster").
 *
 * Contract: every function on the consumer's thread except cluster_commit (stage 2's); the two never
 * run at once on the same batch. Must never: mint for a shard whose changelog is not read to its end,
 * let a batch into LMDB whose transaction did not commit, or put PHI in a changelog message.
 */
#ifndef MS_CLUSTER_H
#define MS_CLUSTER_H

#include "ingest/writer.h"
#include "pipeline/batch_marker.h"
#include "pipeline/record_scan.h"
#include "pipeline/seed_table.h"
#include "store/store.h"

#include <librdkafka/rdkafka.h>

typedef struct {
    const char *brokers, *topic, *group;
    const char *advertise;     /* this node's URL in the membership view (NULL: none); outlives the cluster */
    const char *node;          /* this node's stable name (the same after a restart, unlike any other's): its
                                  transactional.id is medstream-GROUP-NODE */
    const char *const *config; /* the operator's librdkafka settings (SASL, TLS), NULL-ended: kept, so they must
                                  outlive the cluster (a producer made again after a fatal error reads them) */
    store *store;
    writer *writer; /* NULL for the seed (it restores nothing) */
    bool seeding;   /* opened by `medstream cluster-seed` (cluster_seed.h): a seed in progress is not refused */
} cluster_options;

typedef struct cluster cluster;

/* Check T's partition count, make the cluster's topics if missing, start the transactional producer, and
 * load the shard state this store holds. */
ms_code cluster_open(cluster **out, const cluster_options *opt, ms_err *e);
void cluster_close(cluster *c);
const char *cluster_topic(const cluster *c); /* T */
const char *cluster_byshard_topic(const cluster *c);
const char *cluster_changelog_topic(const cluster *c);
int32_t cluster_partitions(const cluster *c);           /* P */
int32_t cluster_changelog_partitions(const cluster *c); /* Pc */

/* ---- a cluster seeded by an existing store (cluster_seed.h; pipeline/seed_table.h) ----
 * T.seed (compacted, one partition) holds the seeding store's patients' shards and the seed's progress;
 * a node reads it at open and before each restore: numbers below the seeding store's patient count are
 * never minted, and a read of such a patient goes to its identity's shard. */
const char *cluster_seed_topic(const cluster *c);
ms_code cluster_seed_topic_ensure(cluster *c, ms_err *e);
/* T.seed read to its end: the seed's progress (patients 0: never seeded). */
ms_code cluster_seed_state(cluster *c, seed_progress *at, ms_err *e);
/* The shard patient number lives in (any thread): a seeded patient's identity's, else number mod SHARD_COUNT. */
uint32_t cluster_shard_of_number(cluster *c, uint64_t number);
/* The transactional producer (transactional.id medstream-GROUP-NODE), for the seed. */
rd_kafka_t *cluster_producer(cluster *c);
/* How many members the consumer group has now (0 for a group the brokers do not know). */
ms_code cluster_group_members(cluster *c, size_t *members, ms_err *e);

/* The batches another node (or this one, before a crash) committed that this store lacks: per batch, the
 * runs of messages of one input partition in T and T.by-shard, in the batch's order. Stored again in that
 * order, they give this store the same record and patient versions as the node that committed them. */
typedef marker_run cluster_run; /* topic 0: T, 1: T.by-shard (pipeline/batch_marker.h) */
typedef struct {
    int32_t *targets; /* the assigned partitions it is replayed for: records of other shards are skipped */
    int ntargets;
    int32_t source; /* the partition it was consumed from: a target, or (before the topic's partitions
                       doubled) one that held the targets' shards then */
    int64_t marker; /* its marker's offset in the changelog */
    cluster_run *runs;
    int nruns;
    bool tail; /* one of its source's last CLUSTER_UNSTORED_MAX markers: maybe never stored by anyone, so the
                  records the writer refuses in it go to the dead-letter topic (dead_letters.c) */
} cluster_replay_batch;
/* A node's batches whose Kafka transaction may have committed while its store did not yet hold them, at most:
 * one in ingest_kafka.c's stage 3, one waiting for it, one whose transaction stage 2 committed. A node killed
 * then leaves them to be stored by the replay of whoever is given their partitions next (itself or another),
 * and the dead letters of the records the writer refuses in them to be sent by that replay. */
#define CLUSTER_UNSTORED_MAX 3
typedef struct {
    cluster_replay_batch *batches;
    int n;
    int64_t *scan_end; /* per partition: where its next marker scan starts (-1: unchanged) */
} cluster_replay;
void cluster_replay_free(cluster_replay *plan);

/* On assignment: read the changelog partitions of the assigned partitions' shards to their ends (from
 * where this store left them), learn and keep every identity, and plan the replay of every committed
 * batch of the assigned partitions past this store's offsets (a node that never had a partition replays
 * its whole history: the restore time of a partition is its replay). */
ms_code cluster_restore(cluster *c, const rd_kafka_topic_partition_list_t *assigned, cluster_replay *plan, ms_err *e);
/* After the plan is stored: keep where the marker scans ended, and own the assigned partitions (reads). */
ms_code cluster_replayed(cluster *c, const rd_kafka_topic_partition_list_t *assigned, const cluster_replay *plan,
                         ms_err *e);
/* A changelog partition, a seed topic or a replay that does not reach its end in this long fails. */
#define CLUSTER_RESTORE_TIMEOUT_S 120.0
/* The node's changelog reader (read_committed, no group), which the replay reader reads with too. */
rd_kafka_t *cluster_restorer(cluster *c);
/* Reading the plan's messages (cluster_reader.c), each source partition of T and T.by-shard from the first
 * offset a run needs. */
typedef struct cluster_reader cluster_reader;
ms_code cluster_reader_open(cluster *c, const cluster_replay *plan, cluster_reader **out, ms_err *e);
/* The messages of one run of a batch of source (*msgs: the caller destroys them and frees the array). */
ms_code cluster_reader_run(cluster_reader *rd, int32_t source, const cluster_run *run, rd_kafka_message_t ***msgs,
                           int *n, ms_err *e);
void cluster_reader_close(cluster_reader *rd);

/* A batch's routing, made by cluster_route, used by cluster_commit and the writer (numbers). */
typedef struct {
    uint64_t *numbers;   /* per record: patient number, JOB_FORWARDED, or UINT64_MAX (rejected by the scan) */
    int32_t *forward_to; /* per record: the by-shard partition it goes to, or -1 */
    struct cluster_mint {
        unsigned char mac[32];
        uint64_t number;
    } * minted;
    int nminted;
} cluster_batch;

/* Route the n records of batch (msgs[i] holds record i): forwarded ones are marked rejected in the batch
 * (the writer answers ITEM_FORWARDED); the others get their numbers, new identities minted (a replay mints
 * none: an identity the changelog does not hold is rejected, loudly; it keeps the records of its targets'
 * shards). replay: NULL for a batch consumed now. */
void cluster_route(cluster *c, cluster_batch *cb, rd_kafka_message_t **msgs, record_batch *batch,
                   const cluster_replay_batch *replay);
void cluster_batch_free(cluster_batch *cb);

/* One Kafka transaction: the minted entries, the forwards, the offsets (KIP-447, consumer's group
 * metadata). Errors librdkafka calls retriable are asked again for up to 2 minutes. MS_OK: committed.
 * Anything else: the batch is not to be stored, and the node must cluster_reset and rejoin before it goes
 * on (its in-memory mints are not the cluster's). The transaction may still land (a commit the brokers
 * finish after the client gave up on it): then the next assignment replays it from its markers. */
ms_code cluster_commit(cluster *c, const cluster_batch *cb, rd_kafka_message_t **msgs, int n,
                       const source_offset *offsets, int noffsets, rd_kafka_t *consumer, ms_err *e);

/* After a failed transaction: forget every mint not in the store, and start a new producer (whose
 * init_transactions waits for the brokers to settle the old one's last transaction). The consumer must
 * rejoin the group (its positions are past the failed batches). */
ms_code cluster_reset(cluster *c, ms_err *e);

/* ---- reads on any node: the membership view ----
 * Every member's Kafka client.id is its advertised HTTP URL (kafka_options.advertise); the consumer
 * thread describes the group every couple of seconds (cluster_refresh_members), and a read about a
 * patient of a shard another node owns is redirected there (307). */
void cluster_refresh_members(cluster *c, rd_kafka_t *consumer);
/* The partitions are gone (rebalance): this node owns none until the next restore. */
void cluster_revoked(cluster *c);
typedef enum { CLUSTER_OWNER_ME, CLUSTER_OWNER_OTHER, CLUSTER_OWNER_UNKNOWN } cluster_owner;
/* Who answers for shard (any thread): this node, another (its URL into url), or nobody known now (never
 * this node's own URL while it does not own the shard: a view from before its last rebalance). */
cluster_owner cluster_owner_of(cluster *c, uint32_t shard, char *url, size_t cap);

#endif

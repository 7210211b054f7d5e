/*
 * cluster_seed.h - `medstream cluster-seed`: an existing single-node store seeds a new cluster (issue 16:
 * "existing single-node stores keep their ids"), so that every patient keeps the id it has and every
 * record comes along with its id.
 *
 * How ids survive. A store's patient id is a keyed permutation of its patient number under the store's id
 * key; a cluster's, the same under the cluster key (base/cluster_key.h). So the seeding store's id key
 * becomes the cluster key (written to a key file, mode 0600, for the nodes' `--cluster-key-file`), and its
 * patients keep their numbers 0 .. N-1. Those numbers were given in arrival order, not per shard, so:
 *   - T.seed (pipeline/seed_table.h) tells every node the shard of each of them (a read of an old id goes to
 *     its identity's shard's owner) and the floor N under which no shard ever mints (shard_ids.h);
 *   - each live identity is published into the changelog partition of its shard (key = identity MAC,
 *     value = its number: the cluster's own format, cluster.h), so the owner of the shard finds it;
 *   - then every record version the store holds goes into T, in the store's commit order, each on its
 *     shard's partition keyed by the shard (as medstream's producers send), with two headers: the record
 *     id it had (RECORD_ID_HEADER, pipeline/record_origin.h; a record whose body names no id keeps its
 *     derived one) and its event time there (RECORD_TS_HEADER: the default of a body without one). The nodes
 *     ingest them as any record: the identity is known, so the patient number, hence the id, is the old one.
 *
 * What does not come along: the transaction-time history (the cluster's versions are valid from when the
 * nodes store them; as-of reads before the seed are the seeding store's, kept as the archive), records
 * deleted (DELETE /v1/records: their latest version is a tombstone; none of their versions is sent) and
 * erased patients (nothing of them is left to send: their ids stay unused). Accounts and tokens are per node.
 *
 * THE GUARANTEES. Exactly once: every step is a Kafka transaction (transactional.id medstream-GROUP-seed-
 * NODE, so a second seed of the same store fences the first) that also writes the seed's progress to T.seed;
 * a rerun after kill -9 or Ctrl-C reads the progress and goes on from the first step not committed. A
 * seed only starts a new cluster: it refuses a changelog that holds anything or a consumer group with
 * members; nodes refuse to start while the identities are not all published (cluster.h). The store is
 * opened for writing (its lock: no server may ingest into it during the seed) and is not changed.
 *
 * Contract: one thread; logs and prints counts only. Must never: put PHI in a log line, a message key, a
 * header or T.seed (bodies go into T, which is the cluster's record stream and holds PHI by design), send
 * a record before its identity is in the changelog, or send a step twice.
 */
#ifndef MS_CLUSTER_SEED_H
#define MS_CLUSTER_SEED_H

#include "store/store.h"

#include <stdatomic.h>
#include <stdio.h>

typedef struct {
    const char *brokers, *topic, *group;
    const char *const *config; /* the operator's librdkafka settings, NULL-ended */
    store *store;              /* the seeding store, opened for writing */
    const char *key_out;       /* the cluster key file to write (mode 0600; an equal one is kept) */
    uint64_t step_records;     /* record versions per transaction (at commit-log entry boundaries) */
    uint64_t step_bytes;       /* about this many body bytes per transaction */
    FILE *progress;            /* a line per step (NULL: none) */
    const atomic_bool *stop;   /* set to stop at the next step boundary */
} cluster_seed_options;

typedef struct {
    uint64_t patients;   /* N: the store's patient count (the floor) */
    uint64_t identities; /* live identities published */
    uint64_t erased;     /* patients without an identity (erased): nothing to send */
    uint64_t records;    /* record versions sent */
    uint64_t deleted;    /* record versions not sent: their record is deleted */
    uint64_t bytes;      /* body bytes sent */
    uint64_t steps;      /* transactions committed by this run */
    bool resumed;        /* a seed of this store had begun before this run */
    bool already;        /* it had finished: nothing sent */
    bool stopped;        /* *stop: stopped at a step boundary (run again to go on) */
} cluster_seed_report;

ms_code cluster_seed_run(const cluster_seed_options *opt, cluster_seed_report *out, ms_err *e);

#endif

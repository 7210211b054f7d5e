/*
 * batch_marker.h - a cluster batch's marker (issue 16, ingest/cluster.h): which messages of one input
 * partition a committed batch stored, in the order it stored them, so that another node can store exactly
 * them again in exactly that order (the same record and patient versions).
 *
 * Layout (in the cluster's changelog topic). Key, MARKER_KEY bytes: 'B', the input partition (be32), the
 * topic (0 T, 1 T.by-shard) and offset (be64) of the batch's first message of that partition. Value: T's
 * partition count when the batch was committed (be32), then runs of MARKER_RUN bytes in the batch's order:
 * topic (1 byte), from, to (be64 each; to exclusive): consecutive messages of one topic make one run.
 *
 * Contract: pure functions over buffers. Must never: reorder messages (a run only grows by a later offset
 * of the same topic), or accept a value whose length is not the header plus whole runs.
 */
#ifndef MS_BATCH_MARKER_H
#define MS_BATCH_MARKER_H

#include "base/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MARKER_KEY 14
#define MARKER_RUN 17

typedef struct {
    uint8_t topic; /* 0: T, 1: T.by-shard */
    int64_t from, to;
} marker_run;

/* The marker of partition p's n messages of a batch (topics[i], offsets[i], in the batch's order) committed
 * while T had partitions partitions: key (MARKER_KEY bytes) and value appended to the buffers. n >= 1. */
void marker_encode(int32_t p, uint32_t partitions, const uint8_t *topics, const int64_t *offsets, size_t n,
                   unsigned char key[MARKER_KEY], buf *value);
/* Is this message key a marker's? Its partition into *p. */
bool marker_key_decode(const void *key, size_t len, int32_t *p);
/* A marker's value: the partition count and the runs (*runs malloc'd, the caller frees it); false if
 * malformed. */
bool marker_value_decode(const void *value, size_t len, uint32_t *partitions, marker_run **runs, size_t *nruns);
/* Did a batch of partition source, committed while T had partitions partitions, hold records of the
 * shards of partition p today (p itself, or the partition its shards lived in before T doubled)? */
bool marker_holds_shards_of(int32_t source, uint32_t partitions, int32_t p);

#endif

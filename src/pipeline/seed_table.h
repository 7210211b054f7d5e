/*
 * seed_table.h - the shards of a seeding store's patients (issue 16: an existing single-node store keeps
 * its patient ids in a cluster; ingest/cluster_seed.h). A store made before the cluster numbered its
 * patients 0, 1, ... N-1 in arrival order, so the shard of such a number is not number mod SHARD_COUNT
 * (shard.h) but its identity's: this table says, for every number below N (the floor), which shard the
 * patient lives in, so that any node can route a read of an old patient id to its owner and no shard ever
 * mints a number below N.
 *
 * Layout (in the cluster's topic T.seed: compacted, one partition, written once by `medstream
 * cluster-seed`). A chunk: key SEED_CHUNK_KEY bytes, 'L' then the chunk's first number (be64); value: one
 * be16 per number, its shard, or SEED_NO_SHARD for a number whose patient has no identity any more (erased).
 * The progress: key "S" (1 byte); value SEED_PROGRESS bytes: the seeding store's patient count N (be64),
 * how many of its patients' identities are published (be64; the cluster's nodes start only once all N are),
 * the next commit-log position of the store to send (be64; 0: the records not started), and whether the
 * seed is finished (1 byte).
 *
 * Contract: pure functions over buffers and one in-memory table. Must never: hold a name, a date or a MAC
 * (shards and counts only), or accept a chunk whose length is not whole entries.
 */
#ifndef MS_SEED_TABLE_H
#define MS_SEED_TABLE_H

#include "base/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEED_CHUNK_KEY 9
#define SEED_CHUNK 32768u /* numbers per chunk: 64 KiB values */
#define SEED_NO_SHARD 0xFFFFu
#define SEED_PROGRESS 25
/* The most patients a seed carries: 2^26 (67,108,864; a table of 128 MiB at most), over six times the largest
 * store measured (10 million patients, README). A chunk at or past it is malformed (seed_table_put), and
 * `medstream cluster-seed` refuses a larger store before it publishes anything. */
#define SEED_NUMBERS_MAX ((uint64_t)1 << 26)

typedef struct {
    uint64_t patients;   /* N: the floor */
    uint64_t identities; /* numbers 0 .. identities-1 published (chunks and changelog entries) */
    uint64_t next_pos;   /* the seeding store's next commit-log position to send (0: none sent yet) */
    bool done;
} seed_progress;

void seed_chunk_key(uint64_t first, unsigned char key[SEED_CHUNK_KEY]);
/* Is this key a chunk's? Its first number into *first. */
bool seed_chunk_key_decode(const void *key, size_t len, uint64_t *first);
void seed_progress_encode(const seed_progress *p, unsigned char out[SEED_PROGRESS]);
bool seed_progress_decode(const void *key, size_t key_len, const void *value, size_t len, seed_progress *p);

/* Every number's shard, as far as chunks have been put. */
typedef struct {
    uint16_t *shard; /* [cap] (SEED_NO_SHARD where no chunk said) */
    uint64_t n, cap; /* n: one past the highest number a chunk covered */
} seed_table;

/* Put a chunk's value (its first number, be16 entries); false (nothing changed) if malformed. */
bool seed_table_put(seed_table *t, uint64_t first, const void *value, size_t len);
/* The shard patient number lives in: the table's for a number it covers with a shard, else number's own
 * (shard_of_number). */
uint32_t seed_table_shard(const seed_table *t, uint64_t number);
void seed_table_free(seed_table *t);

#endif

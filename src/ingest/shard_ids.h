/*
 * shard_ids.h - a cluster node's view of patient numbers (issue 16): identity MAC -> patient number for
 * every identity the node has learned (from its own store, from the changelog, from its own mints), and
 * the next sequence of every shard, so that the owner of a shard mints the shard's next number.
 *
 * Contract: pure, in memory, one thread (the Kafka consumer's). Entries are keyed by the XXH3-128 of the
 * identity MAC (a MAC is itself a keyed 256-bit hash: two identities meeting on 128 bits of it is not a
 * case worth a branch). Learning an entry raises its shard's next sequence past it. Must never: mint a
 * number already learned, or accept a second number for an identity (shard_ids_learn says so).
 */
#ifndef MS_SHARD_IDS_H
#define MS_SHARD_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct shard_ids shard_ids;

shard_ids *shard_ids_new(void);
void shard_ids_free(shard_ids *ids);
/* Learn that the identity with this MAC has this number: false (nothing changed) if it has another, or if the
 * number is 2^63 or more (no number a node mints; from outside, malformed). */
bool shard_ids_learn(shard_ids *ids, const unsigned char mac[32], uint64_t number);
bool shard_ids_get(shard_ids *ids, const unsigned char mac[32], uint64_t *number);
/* A new identity of this shard: the shard's next number, learned at once. */
uint64_t shard_ids_mint(shard_ids *ids, const unsigned char mac[32], uint32_t shard);
uint64_t shard_ids_count(shard_ids *ids);
/* Numbers below floor belong to the store that seeded the cluster (cluster_seed.h: its patients keep the
 * numbers, hence the ids, they had): never minted, whatever their shard. Raising it only; a floor of 2^63 or
 * more (malformed) is ignored. */
void shard_ids_floor(shard_ids *ids, uint64_t floor);

#endif

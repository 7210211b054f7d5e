/*
 * shard.h - where a patient lives in a cluster: fixed key groups over the identity key (issue 16).
 *
 * A cluster splits patients into SHARD_COUNT logical shards by the identity key (identity.h: the
 * normalized name NUL YYYY-MM-DD, so every spelling of one identity has the same key). A shard never
 * splits: every record of a patient has the same shard, and a shard lives whole in one Kafka partition,
 * shard mod P, for any partition count P that is a power of two dividing SHARD_COUNT (so doubling P
 * moves whole shards: partition p's shards go to p or p + P). Patient numbers are minted per shard,
 * number = sequence * SHARD_COUNT + shard, so a number (and the id the store's keyed permutation makes of
 * it) depends only on the shard and the order of that shard's new identities, never on the node, the
 * store or P; the shard of a number is number mod SHARD_COUNT.
 *
 * The shard is XXH3-64 of the identity key, unkeyed, so producers that know no secret (medstream bench, an
 * import into Kafka) can route by it: twelve bits of a hash, which says nothing usable about a name.
 *
 * Contract: pure functions. Must never change once stores exist: a changed shard function would give an
 * identity a second patient in another shard.
 */
#ifndef MS_SHARD_H
#define MS_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARD_COUNT 4096u

/* The shard of an identity key. */
uint32_t shard_of_key(const char *key, size_t len);
/* The Kafka partition that owns a shard when the topic has partitions partitions (shard_partitions_ok). */
int32_t shard_partition(uint32_t shard, int32_t partitions);
/* Whether a partition count can hold whole shards: a power of two from 1 to SHARD_COUNT. */
bool shard_partitions_ok(int32_t partitions);
/* Patient numbers of a cluster: the seq-th new identity of a shard, and back. */
uint64_t shard_number(uint32_t shard, uint64_t seq);
uint32_t shard_of_number(uint64_t number);
uint64_t shard_seq_of_number(uint64_t number);

#endif

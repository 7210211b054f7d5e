/*
 * shard.c - identity key -> shard -> partition, and per-shard patient numbers (see shard.h).
 */
#include "pipeline/shard.h"

#include <xxhash.h>

uint32_t shard_of_key(const char *key, size_t len) { return (uint32_t)(XXH3_64bits(key, len) % SHARD_COUNT); }

bool shard_partitions_ok(int32_t partitions)
{
    return partitions >= 1 && partitions <= (int32_t)SHARD_COUNT && (partitions & (partitions - 1)) == 0;
}

int32_t shard_partition(uint32_t shard, int32_t partitions) { return (int32_t)(shard % (uint32_t)partitions); }

uint64_t shard_number(uint32_t shard, uint64_t seq) { return seq * SHARD_COUNT + shard; }

uint32_t shard_of_number(uint64_t number) { return (uint32_t)(number % SHARD_COUNT); }

uint64_t shard_seq_of_number(uint64_t number) { return number / SHARD_COUNT; }

/*
 * shard_ids.c - identity MAC -> patient number, and each shard's next sequence (see shard_ids.h).
 */
#include "ingest/shard_ids.h"

#include "base/util.h"

#include <stdlib.h>
#include "pipeline/shard.h"
#include "store/identity_index.h"

struct shard_ids {
    identity_index *ix;
    uint64_t next_seq[SHARD_COUNT];
    uint64_t floor;
};

shard_ids *shard_ids_new(void)
{
    shard_ids *ids = ms_calloc(1, sizeof *ids);
    ids->ix = identity_index_new(1024);
    return ids;
}

void shard_ids_free(shard_ids *ids)
{
    if (!ids) return;
    identity_index_free(ids->ix);
    free(ids);
}

static identity_hash mac_hash(const unsigned char mac[32]) { return identity_hash_of((const char *)mac, 32); }

bool shard_ids_learn(shard_ids *ids, const unsigned char mac[32], uint64_t number)
{
    identity_hash h = mac_hash(mac);
    uint64_t have;
    if (identity_index_get(ids->ix, h, &have)) return have == number;
    identity_index_put(ids->ix, h, number);
    uint32_t shard = shard_of_number(number);
    uint64_t seq = shard_seq_of_number(number);
    if (seq + 1 > ids->next_seq[shard]) ids->next_seq[shard] = seq + 1;
    return true;
}

bool shard_ids_get(shard_ids *ids, const unsigned char mac[32], uint64_t *number)
{
    return identity_index_get(ids->ix, mac_hash(mac), number);
}

uint64_t shard_ids_mint(shard_ids *ids, const unsigned char mac[32], uint32_t shard)
{
    uint64_t seq = ids->next_seq[shard];
    if (shard_number(shard, seq) < ids->floor) seq = (ids->floor - shard + SHARD_COUNT - 1) / SHARD_COUNT;
    uint64_t number = shard_number(shard, seq);
    shard_ids_learn(ids, mac, number);
    return number;
}

uint64_t shard_ids_count(shard_ids *ids) { return identity_index_count(ids->ix); }

void shard_ids_floor(shard_ids *ids, uint64_t floor)
{
    if (floor > ids->floor) ids->floor = floor;
}

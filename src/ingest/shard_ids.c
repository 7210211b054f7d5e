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

/* Numbers and floors from outside (a changelog entry read from Kafka, the store, T.seed's patient count) are
 * below NUMBER_END, 2^63: one at or past it is malformed, refused (learn) or ignored (floor). Past it,
 * UINT64_MAX (the index's empty slot) was learned yet forgotten, and a shard's next number ran past 64 bits
 * and wrapped to a small one, maybe another patient's, as the sequence a floor near 2^64 asked for did.
 * Below it, a shard's next number, minted one at a time, never comes near 2^64. */
#define NUMBER_END ((uint64_t)1 << 63)

static void remember(shard_ids *ids, identity_hash h, uint64_t number)
{
    identity_index_put(ids->ix, h, number);
    uint32_t shard = shard_of_number(number);
    uint64_t seq = shard_seq_of_number(number);
    if (seq + 1 > ids->next_seq[shard]) ids->next_seq[shard] = seq + 1;
}

bool shard_ids_learn(shard_ids *ids, const unsigned char mac[32], uint64_t number)
{
    identity_hash h = mac_hash(mac);
    uint64_t have;
    if (identity_index_get(ids->ix, h, &have)) return have == number;
    if (number >= NUMBER_END) return false;
    remember(ids, h, number);
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
    remember(ids, mac_hash(mac), number); /* (a mint is kept even past NUMBER_END) */
    return number;
}

uint64_t shard_ids_count(shard_ids *ids) { return identity_index_count(ids->ix); }

void shard_ids_floor(shard_ids *ids, uint64_t floor)
{
    if (floor > ids->floor && floor < NUMBER_END) ids->floor = floor;
}

/*
 * seed_table.c - the shards of a seeding store's patients (see seed_table.h).
 */
#include "pipeline/seed_table.h"

#include "pipeline/shard.h"

#include <stdlib.h>
#include <string.h>

void seed_chunk_key(uint64_t first, unsigned char key[SEED_CHUNK_KEY])
{
    key[0] = 'L';
    ms_set_be64(key + 1, first);
}

bool seed_chunk_key_decode(const void *key, size_t len, uint64_t *first)
{
    const unsigned char *k = key;
    if (len != SEED_CHUNK_KEY || k[0] != 'L') return false;
    *first = ms_get_be64(k + 1);
    return true;
}

void seed_progress_encode(const seed_progress *p, unsigned char out[SEED_PROGRESS])
{
    ms_set_be64(out, p->patients);
    ms_set_be64(out + 8, p->identities);
    ms_set_be64(out + 16, p->next_pos);
    out[24] = p->done ? 1 : 0;
}

bool seed_progress_decode(const void *key, size_t key_len, const void *value, size_t len, seed_progress *p)
{
    const unsigned char *v = value;
    if (key_len != 1 || *(const char *)key != 'S' || len != SEED_PROGRESS || v[24] > 1) return false;
    p->patients = ms_get_be64(v);
    p->identities = ms_get_be64(v + 8);
    p->next_pos = ms_get_be64(v + 16);
    p->done = v[24] == 1;
    return p->identities <= p->patients;
}

/* SEED_NUMBERS_MAX (seed_table.h) bounds a chunk's first number, which comes from Kafka: without it, one
 * 9-byte key made every node that reads T.seed allocate two bytes for each number below it (past 2^63:
 * double its capacity forever; where first + len / 2 wrapped to 0: write the chunk below the table). */
bool seed_table_put(seed_table *t, uint64_t first, const void *value, size_t len)
{
    if (len == 0 || len % 2 != 0 || len / 2 > SEED_CHUNK || first % SEED_CHUNK != 0 || first >= SEED_NUMBERS_MAX)
        return false;
    uint64_t end = first + len / 2;
    if (end > t->cap) {
        uint64_t cap = t->cap ? t->cap : SEED_CHUNK;
        while (cap < end)
            cap *= 2;
        t->shard = ms_realloc(t->shard, sizeof *t->shard * cap);
        for (uint64_t i = t->cap; i < cap; i++)
            t->shard[i] = SEED_NO_SHARD;
        t->cap = cap;
    }
    const unsigned char *v = value;
    for (uint64_t i = 0; i < len / 2; i++) {
        uint16_t s = (uint16_t)(v[2 * i] << 8 | v[2 * i + 1]);
        t->shard[first + i] = s < SHARD_COUNT ? s : SEED_NO_SHARD;
    }
    if (end > t->n) t->n = end;
    return true;
}

uint32_t seed_table_shard(const seed_table *t, uint64_t number)
{
    if (number < t->n && t->shard[number] != SEED_NO_SHARD) return t->shard[number];
    return shard_of_number(number);
}

void seed_table_free(seed_table *t)
{
    free(t->shard);
    memset(t, 0, sizeof *t);
}

/*
 * identity_index.h - the in-memory identity index: XXH3-128 (cut to 112 bits) of an identity key ->
 * patient number.
 *
 * Why in memory: in LMDB, an index keyed by name puts every new patient on a random page of a large
 * B-tree, and on this disk a commit's scattered page writes were what bounded ingest. The durable copy
 * is the store's `identity` sub-database keyed by patient number (appended, never inserted at random);
 * this index is loaded when the store opens from the hashes the key file's slots keep (keys.c), or rebuilt
 * from the sub-database when they cannot be trusted (identities.c), and verified against it on every hit,
 * so a hash collision can never merge two people.
 *
 * Contract: thread-safe (a readers-writer lock: request threads look up, the writer inserts). Inserts
 * of a transaction that fails are taken back with identity_index_remove. Memory: 24 bytes per slot,
 * at most 4/3 slots per patient (about 320 MB for 10 million patients).
 */
#ifndef MS_IDENTITY_INDEX_H
#define MS_IDENTITY_INDEX_H

#include "base/util.h"

typedef struct identity_index identity_index;

typedef struct {
    uint64_t lo, hi;
} identity_hash;

/* XXH3-128 of key, cut to 112 bits (hi's top 16 bits zero): what a slot of the key file has room for
 * beside a data key (keys.c). Two of 10 million identities share one with a chance of ~2^-66. */
#define IDENTITY_HASH_HI_MASK 0xFFFFFFFFFFFFull
identity_hash identity_hash_of(const char *key, size_t len);

identity_index *identity_index_new(uint64_t expected);
void identity_index_free(identity_index *ix);
/* The patient number of this hash, or false. */
bool identity_index_get(identity_index *ix, identity_hash h, uint64_t *number);
/* Map h to number (replacing any earlier mapping of h). */
void identity_index_put(identity_index *ix, identity_hash h, uint64_t number);
/* Many at once (loading): one lock, and the slots are prefetched before they are probed. */
void identity_index_put_many(identity_index *ix, const identity_hash *h, const uint64_t *numbers, size_t n);
void identity_index_remove(identity_index *ix, identity_hash h);
uint64_t identity_index_count(identity_index *ix);

#endif

/*
 * identity_index.c - open-addressing hash table with linear probing and backward-shift deletion
 * (see identity_index.h). A slot is empty when its number is UINT64_MAX.
 */
#include "store/identity_index.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <xxhash.h>

#define EMPTY UINT64_MAX

typedef struct {
    identity_hash h;
    uint64_t number;
} slot;

struct identity_index {
    pthread_rwlock_t lock;
    slot *slots;
    uint64_t mask; /* capacity - 1, capacity a power of two */
    uint64_t count;
};

identity_hash identity_hash_of(const char *key, size_t len)
{
    XXH128_hash_t x = XXH3_128bits(key, len);
    return (identity_hash){x.low64, x.high64 & IDENTITY_HASH_HI_MASK};
}

/* Slots in 2 MiB-aligned memory with transparent huge pages where the kernel allows: lookups are one
 * random access each, and with 4 KiB pages most of them would also miss the TLB. */
static slot *alloc_slots(uint64_t cap)
{
    size_t bytes = sizeof(slot) * cap;
    void *p;
    if (posix_memalign(&p, (size_t)2 << 20, bytes) != 0) ms_oom();
    madvise(p, bytes, MADV_HUGEPAGE);
    slot *s = p;
    for (uint64_t i = 0; i < cap; i++)
        s[i].number = EMPTY;
    return s;
}

identity_index *identity_index_new(uint64_t expected)
{
    identity_index *ix = ms_calloc(1, sizeof *ix);
    uint64_t cap = 1024;
    while (cap * 3 / 4 < expected)
        cap *= 2;
    ix->slots = alloc_slots(cap);
    ix->mask = cap - 1;
    pthread_rwlock_init(&ix->lock, NULL);
    return ix;
}

void identity_index_free(identity_index *ix)
{
    if (!ix) return;
    pthread_rwlock_destroy(&ix->lock);
    free(ix->slots);
    free(ix);
}

static bool same(identity_hash a, identity_hash b) { return a.lo == b.lo && a.hi == b.hi; }

/* The slot holding h, or the empty slot where it would go. */
static uint64_t find(const identity_index *ix, identity_hash h)
{
    uint64_t i = h.lo & ix->mask;
    while (ix->slots[i].number != EMPTY && !same(ix->slots[i].h, h))
        i = (i + 1) & ix->mask;
    return i;
}

bool identity_index_get(identity_index *ix, identity_hash h, uint64_t *number)
{
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t i = find(ix, h);
    bool found = ix->slots[i].number != EMPTY;
    if (found) *number = ix->slots[i].number;
    pthread_rwlock_unlock(&ix->lock);
    return found;
}

static void grow(identity_index *ix)
{
    uint64_t old_cap = ix->mask + 1;
    slot *old = ix->slots;
    ix->slots = alloc_slots(old_cap * 2);
    ix->mask = old_cap * 2 - 1;
    for (uint64_t i = 0; i < old_cap; i++)
        if (old[i].number != EMPTY) ix->slots[find(ix, old[i].h)] = old[i];
    free(old);
}

void identity_index_put(identity_index *ix, identity_hash h, uint64_t number)
{
    pthread_rwlock_wrlock(&ix->lock);
    if ((ix->count + 1) * 4 > (ix->mask + 1) * 3) grow(ix);
    uint64_t i = find(ix, h);
    if (ix->slots[i].number == EMPTY) ix->count++;
    ix->slots[i] = (slot){h, number};
    pthread_rwlock_unlock(&ix->lock);
}

void identity_index_put_many(identity_index *ix, const identity_hash *h, const uint64_t *numbers, size_t n)
{
    pthread_rwlock_wrlock(&ix->lock);
    while ((ix->count + n) * 4 > (ix->mask + 1) * 3)
        grow(ix);
    for (size_t i = 0; i < n; i++)
        __builtin_prefetch(&ix->slots[h[i].lo & ix->mask], 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t j = find(ix, h[i]);
        if (ix->slots[j].number == EMPTY) ix->count++;
        ix->slots[j] = (slot){h[i], numbers[i]};
    }
    pthread_rwlock_unlock(&ix->lock);
}

void identity_index_remove(identity_index *ix, identity_hash h)
{
    pthread_rwlock_wrlock(&ix->lock);
    uint64_t i = find(ix, h);
    if (ix->slots[i].number != EMPTY) {
        ix->count--;
        /* backward-shift: move later members of the probe run into the hole */
        uint64_t hole = i, j = i;
        for (;;) {
            j = (j + 1) & ix->mask;
            if (ix->slots[j].number == EMPTY) break;
            uint64_t home = ix->slots[j].h.lo & ix->mask;
            /* j may fill the hole if its home is not in (hole, j] (cyclically) */
            bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
            if (!between) {
                ix->slots[hole] = ix->slots[j];
                hole = j;
            }
        }
        ix->slots[hole].number = EMPTY;
    }
    pthread_rwlock_unlock(&ix->lock);
}

uint64_t identity_index_count(identity_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t n = ix->count;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

/*
 * state_cache.c - the patients' latest states in memory (see state_cache.h).
 *
 * DESIGN: open addressing with linear probing over a power-of-two table of slots (patient number + 1 as
 * the key, 0 empty), deletion by backward shift (no tombstones), grown at 70 % full. Eviction is CLOCK:
 * the hand walks the slots, clearing the reference bit of an entry read or written since it last passed
 * and evicting one whose bit is clear. A backward shift may move a later entry into the hand's slot; the
 * hand looks at that slot again.
 */
#include "store/state_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_OVERHEAD 72 /* the state's allocation header (16) and a slot's size (56) once more, beside the table */
#define MIN_SLOTS 1024

typedef struct {
    uint64_t key; /* number + 1; 0: empty */
    uint64_t head;
    uint64_t newest[3]; /* as of head, when has_newest */
    unsigned char *data;
    uint32_t len;
    uint8_t ref, has_newest;
} slot;

struct state_cache {
    pthread_mutex_t lock;
    slot *slots;
    size_t cap, used, hand;
    uint64_t budget, bytes; /* bytes: the states, their overhead, the table */
    state_cache_stats st;
};

static size_t home(const state_cache *c, uint64_t key) { return (size_t)(key * 0x9E3779B97F4A7C15ull) & (c->cap - 1); }

static slot *find(state_cache *c, uint64_t key)
{
    for (size_t i = home(c, key);; i = (i + 1) & (c->cap - 1)) {
        if (c->slots[i].key == key) return &c->slots[i];
        if (!c->slots[i].key) return NULL;
    }
}

/* An empty slot for key (not in the table). */
static slot *place(state_cache *c, uint64_t key)
{
    size_t i = home(c, key);
    while (c->slots[i].key)
        i = (i + 1) & (c->cap - 1);
    return &c->slots[i];
}

static void grow(state_cache *c)
{
    slot *old = c->slots;
    size_t n = c->cap;
    c->cap = n ? n * 2 : MIN_SLOTS;
    c->slots = calloc(c->cap, sizeof *c->slots);
    if (!c->slots) ms_oom();
    for (size_t i = 0; i < n; i++)
        if (old[i].key) *place(c, old[i].key) = old[i];
    c->bytes += (c->cap - n) * sizeof(slot);
    c->hand = 0;
    free(old);
}

/* Empty slot i and shift the entries after it that belong before it (linear probing's deletion). */
static void remove_at(state_cache *c, size_t i)
{
    c->bytes -= c->slots[i].len + ENTRY_OVERHEAD;
    free(c->slots[i].data);
    c->used--;
    size_t mask = c->cap - 1;
    for (size_t j = (i + 1) & mask; c->slots[j].key; j = (j + 1) & mask) {
        size_t h = home(c, c->slots[j].key);
        /* j's entry may move to i when its home is not in (i, j] (cyclically) */
        if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
            c->slots[i] = c->slots[j];
            i = j;
        }
    }
    memset(&c->slots[i], 0, sizeof c->slots[i]);
}

/* Evict by CLOCK until within the budget, sparing `keep`. */
static void evict(state_cache *c, uint64_t keep)
{
    while (c->bytes > c->budget && c->used > 1) {
        slot *s = &c->slots[c->hand];
        if (!s->key || s->key == keep) {
            c->hand = (c->hand + 1) & (c->cap - 1);
        } else if (s->ref) {
            s->ref = 0;
            c->hand = (c->hand + 1) & (c->cap - 1);
        } else {
            remove_at(c, c->hand); /* the hand's slot may now hold a shifted entry: look at it again */
            c->st.evictions++;
        }
    }
}

state_cache *state_cache_new(uint64_t budget)
{
    if (!budget) return NULL;
    state_cache *c = calloc(1, sizeof *c);
    if (!c) ms_oom();
    pthread_mutex_init(&c->lock, NULL);
    c->budget = budget;
    grow(c);
    return c;
}

void state_cache_free(state_cache *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->cap; i++)
        free(c->slots[i].data);
    free(c->slots);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool state_cache_get(state_cache *c, uint64_t number, uint64_t head, arena *mem, const unsigned char **out, size_t *len)
{
    if (!c) return false;
    pthread_mutex_lock(&c->lock);
    slot *s = find(c, number + 1);
    bool hit = s && s->head == head;
    if (hit) {
        s->ref = 1;
        unsigned char *copy = arena_alloc(mem, s->len ? s->len : 1);
        memcpy(copy, s->data, s->len);
        *out = copy;
        *len = s->len;
        c->st.hits++;
    } else {
        c->st.misses++;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void state_cache_put(state_cache *c, uint64_t number, uint64_t head, const void *state, size_t len)
{
    if (!c) return;
    if (len > c->budget / 8 || len > UINT32_MAX) {
        state_cache_drop(c, number);
        return;
    }
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) ms_oom();
    memcpy(copy, state, len);
    pthread_mutex_lock(&c->lock);
    uint64_t key = number + 1;
    slot *s = find(c, key);
    if (s) {
        c->bytes -= s->len;
        free(s->data);
    } else {
        if ((c->used + 1) * 10 > c->cap * 7) grow(c);
        s = place(c, key);
        s->key = key;
        c->used++;
        c->bytes += ENTRY_OVERHEAD;
    }
    s->head = head;
    s->has_newest = 0;
    s->data = copy;
    s->len = (uint32_t)len;
    s->ref = 1;
    c->bytes += len;
    evict(c, key);
    pthread_mutex_unlock(&c->lock);
}

bool state_cache_newest(state_cache *c, uint64_t number, uint64_t head, uint64_t newest[3])
{
    if (!c) return false;
    pthread_mutex_lock(&c->lock);
    slot *s = find(c, number + 1);
    bool known = s && s->head == head && s->has_newest;
    if (known) memcpy(newest, s->newest, sizeof s->newest);
    pthread_mutex_unlock(&c->lock);
    return known;
}

void state_cache_rehead(state_cache *c, uint64_t number, uint64_t from, uint64_t to, const uint64_t newest[3])
{
    if (!c) return;
    pthread_mutex_lock(&c->lock);
    slot *s = find(c, number + 1);
    if (s && s->head == from) {
        s->head = to;
        s->has_newest = newest != NULL;
        if (newest) memcpy(s->newest, newest, sizeof s->newest);
    } else if (s)
        remove_at(c, (size_t)(s - c->slots)); /* stale already */
    pthread_mutex_unlock(&c->lock);
}

void state_cache_drop(state_cache *c, uint64_t number)
{
    if (!c) return;
    pthread_mutex_lock(&c->lock);
    slot *s = find(c, number + 1);
    if (s) remove_at(c, (size_t)(s - c->slots));
    pthread_mutex_unlock(&c->lock);
}

state_cache_stats state_cache_stats_of(state_cache *c)
{
    state_cache_stats st = {0};
    if (!c) return st;
    pthread_mutex_lock(&c->lock);
    st = c->st;
    st.entries = c->used;
    st.bytes = c->bytes;
    pthread_mutex_unlock(&c->lock);
    return st;
}

/*
 * state_cache.c - the patients' latest states in memory (see state_cache.h).
 *
 * DESIGN: the entries live in a dense array, which is also the CLOCK ring; a power-of-two table of (key,
 * index into the array) finds them by patient number, open addressing with linear probing, deletion by
 * backward shift (no tombstones), grown at 70 % full. Eviction is CLOCK over the array: the hand walks it,
 * clearing the reference bit of an entry read or written again since it last passed and evicting one whose
 * bit is clear; the array's last entry (new entries are appended) moves into the evicted one's place, just
 * behind the hand, as a new page goes into the freed frame in CLOCK. A new entry starts with its bit clear:
 * a patient seen once goes on the hand's next pass, and a sweep over a cache whose every entry is new does
 * not clear the bits of the ones just read and then take them.
 *
 * Why the ring is not the table: with the hand walking the table's own slots (as this cache first did),
 * every eviction deleted at the hand, so the table filled densely just ahead of it and emptied behind it;
 * at ~57 % load on average the run of occupied slots ahead of the hand grew to half a million slots, each
 * eviction shifted all of it back, and at 5 M patients (slices of 2 M records of 200 B, half of them new
 * patients) the writer spent minutes a slice in that shift (test_state_cache.c's test_eviction_stays_local
 * reproduces it in small). Evictions from the array delete from the table wherever the evicted patient
 * hashes, so the table's load stays even.
 */
#include "store/state_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SLOTS 1024

typedef struct {
    uint64_t key; /* number + 1 */
    uint64_t head;
    uint64_t newest[3]; /* as of head, when has_newest */
    unsigned char *data;
    uint32_t len;
    uint8_t ref, has_newest;
} entry;

/* An entry's bytes besides its state: its allocation's header, and its place in the array (the array's
 * spare room past its last entry, at most as much again after it doubled, is not counted). */
#define ENTRY_OVERHEAD (16 + sizeof(entry))

struct state_cache {
    pthread_mutex_t lock;
    entry *e; /* e[0 .. n-1]: the entries, the CLOCK ring */
    size_t n, ecap, hand;
    struct tab_slot {
        uint64_t key;   /* number + 1; 0: empty */
        uint64_t index; /* into e */
    } * tab;
    size_t cap;
    uint64_t budget, bytes; /* bytes: the states, their overhead, the table */
    state_cache_stats st;
};

/* Mixed, not just multiplied: patient numbers come in ranges, and the low bits of a product would depend
 * only on the low bits of the number. */
static size_t home(const state_cache *c, uint64_t key) { return (size_t)ms_mix64(key) & (c->cap - 1); }

/* The table slot of key, or the empty slot where it would go. */
static size_t slot_of(state_cache *c, uint64_t key)
{
    size_t i = home(c, key);
    for (c->st.probes++; c->tab[i].key && c->tab[i].key != key; c->st.probes++)
        i = (i + 1) & (c->cap - 1);
    return i;
}

static entry *find(state_cache *c, uint64_t key)
{
    size_t i = slot_of(c, key);
    return c->tab[i].key ? &c->e[c->tab[i].index] : NULL;
}

static void grow_table(state_cache *c)
{
    size_t old = c->cap;
    c->cap = old ? old * 2 : MIN_SLOTS;
    free(c->tab);
    c->tab = calloc(c->cap, sizeof *c->tab);
    if (!c->tab) ms_oom();
    for (size_t k = 0; k < c->n; k++)
        c->tab[slot_of(c, c->e[k].key)] = (struct tab_slot){c->e[k].key, k};
    c->bytes += (c->cap - old) * sizeof *c->tab;
}

/* Empty table slot i and shift the slots after it that belong before it (linear probing's deletion). */
static void table_delete(state_cache *c, size_t i)
{
    size_t mask = c->cap - 1;
    for (size_t j = (i + 1) & mask; c->tab[j].key; j = (j + 1) & mask) {
        c->st.probes++;
        size_t h = home(c, c->tab[j].key);
        /* j's entry may move to i when its home is not in (i, j] (cyclically) */
        if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
            c->tab[i] = c->tab[j];
            i = j;
        }
    }
    c->tab[i] = (struct tab_slot){0, 0};
}

/* Remove entry k: out of the table, and the array's last entry into its place. */
static void remove_entry(state_cache *c, size_t k)
{
    entry *x = &c->e[k];
    c->bytes -= x->len + ENTRY_OVERHEAD;
    free(x->data);
    table_delete(c, slot_of(c, x->key));
    if (k != c->n - 1) {
        c->e[k] = c->e[c->n - 1];
        c->tab[slot_of(c, c->e[k].key)].index = k;
    }
    c->n--;
}

/* Evict by CLOCK until within the budget, sparing `keep`. */
static void evict(state_cache *c, uint64_t keep)
{
    while (c->bytes > c->budget && c->n > 1) {
        if (c->hand >= c->n) c->hand = 0;
        entry *x = &c->e[c->hand];
        if (x->key == keep) {
            c->hand++;
        } else if (x->ref) {
            x->ref = 0;
            c->hand++;
        } else {
            remove_entry(c, c->hand); /* the last entry (often the newest) takes the hand's place: the hand */
            c->hand++;                /* moves past it, so that it has a round before the hand comes back */
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
    grow_table(c);
    return c;
}

void state_cache_free(state_cache *c)
{
    if (!c) return;
    for (size_t k = 0; k < c->n; k++)
        free(c->e[k].data);
    free(c->e);
    free(c->tab);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool state_cache_get(state_cache *c, uint64_t number, uint64_t head, arena *mem, const unsigned char **out, size_t *len)
{
    if (!c) return false;
    pthread_mutex_lock(&c->lock);
    entry *s = find(c, number + 1);
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
    size_t i = slot_of(c, key);
    bool known = c->tab[i].key != 0;
    entry *s;
    if (known) {
        s = &c->e[c->tab[i].index];
        c->bytes -= s->len;
        free(s->data);
    } else {
        if ((c->n + 1) * 10 > c->cap * 7) {
            grow_table(c);
            i = slot_of(c, key); /* (its empty slot in the new table) */
        }
        if (c->n == c->ecap) {
            c->ecap = c->ecap ? c->ecap * 2 : MIN_SLOTS;
            c->e = realloc(c->e, c->ecap * sizeof *c->e);
            if (!c->e) ms_oom();
        }
        c->tab[i] = (struct tab_slot){key, c->n};
        s = &c->e[c->n++];
        memset(s, 0, sizeof *s);
        s->key = key;
        c->bytes += ENTRY_OVERHEAD;
    }
    s->head = head;
    s->has_newest = 0;
    s->data = copy;
    s->len = (uint32_t)len;
    s->ref = known; /* a new entry has not been asked for yet: the first sweep that finds it may take it */
    c->bytes += len;
    evict(c, key);
    pthread_mutex_unlock(&c->lock);
}

bool state_cache_newest(state_cache *c, uint64_t number, uint64_t head, uint64_t newest[3])
{
    if (!c) return false;
    pthread_mutex_lock(&c->lock);
    entry *s = find(c, number + 1);
    bool known = s && s->head == head && s->has_newest;
    if (known) memcpy(newest, s->newest, sizeof s->newest);
    pthread_mutex_unlock(&c->lock);
    return known;
}

void state_cache_rehead(state_cache *c, uint64_t number, uint64_t from, uint64_t to, const uint64_t newest[3])
{
    if (!c) return;
    pthread_mutex_lock(&c->lock);
    entry *s = find(c, number + 1);
    if (s && s->head == from) {
        s->head = to;
        s->has_newest = newest != NULL;
        if (newest) memcpy(s->newest, newest, sizeof s->newest);
    } else if (s)
        remove_entry(c, (size_t)(s - c->e)); /* stale already */
    pthread_mutex_unlock(&c->lock);
}

void state_cache_drop(state_cache *c, uint64_t number)
{
    if (!c) return;
    pthread_mutex_lock(&c->lock);
    entry *s = find(c, number + 1);
    if (s) remove_entry(c, (size_t)(s - c->e));
    pthread_mutex_unlock(&c->lock);
}

state_cache_stats state_cache_stats_of(state_cache *c)
{
    state_cache_stats st = {0};
    if (!c) return st;
    pthread_mutex_lock(&c->lock);
    st = c->st;
    st.entries = c->n;
    st.bytes = c->bytes;
    pthread_mutex_unlock(&c->lock);
    return st;
}

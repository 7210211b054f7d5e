/*
 * body_pool.c - the in-flight budget and the pool of free body buffers (see body_pool.h).
 *
 * DESIGN: the budget is one atomic counter, raised by compare-and-swap only when the result stays
 * within max_inflight, so admission never takes a lock. The pool is a short list of free buffers, oldest
 * first, under a mutex: a request takes the smallest free buffer that is big enough and at most twice
 * what it asked for (a huge buffer is not spent on a small body), and only if the budget can also take
 * the buffer's extra bytes; otherwise it allocates a fresh one. A released buffer joins the list, and the
 * oldest ones are freed until the list is within max_free and POOL_SLOTS. Buffers under POOL_MIN_CAP
 * are freed at once: malloc serves them cheaply, and they would push the large ones out.
 *
 * What it must never do: let the counter pass max_inflight, hold the mutex while copying or freeing
 * large buffers, or hand out a buffer that is not BODY_ALIGN-aligned.
 */
#include "api/body_pool.h"

#include "base/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define POOL_SLOTS 32
#define POOL_MIN_CAP ((size_t)256 << 10)

typedef struct {
    char *data;
    size_t cap;
} free_buf;

struct body_pool {
    uint64_t max_inflight, max_free;
    _Atomic uint64_t inflight;
    pthread_mutex_t mu;
    free_buf slot[POOL_SLOTS]; /* oldest first */
    int nslots;
    uint64_t free_bytes;
};

body_pool *body_pool_new(uint64_t max_inflight, uint64_t max_free)
{
    body_pool *p = ms_calloc(1, sizeof *p);
    p->max_inflight = max_inflight;
    p->max_free = max_free;
    atomic_init(&p->inflight, 0);
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void body_pool_free(body_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->nslots; i++)
        free(p->slot[i].data);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static bool budget_take(body_pool *p, uint64_t n)
{
    uint64_t cur = atomic_load(&p->inflight);
    do {
        if (n > p->max_inflight || cur > p->max_inflight - n) return false;
    } while (!atomic_compare_exchange_weak(&p->inflight, &cur, cur + n));
    return true;
}

static void budget_give(body_pool *p, uint64_t n) { atomic_fetch_sub(&p->inflight, n); }

bool body_buf_reserve(body_pool *p, body_buf *b, size_t total)
{
    if (b->reserved >= total) return true;
    if (!budget_take(p, total - b->reserved)) return false;
    b->reserved = total;
    return true;
}

/* The smallest free buffer of cap..2*cap bytes whose extra bytes the budget takes (added to *reserved);
 * NULL if none. */
static char *pool_take(body_pool *p, size_t cap, size_t *got, size_t *reserved)
{
    char *data = NULL;
    pthread_mutex_lock(&p->mu);
    int best = -1;
    for (int i = 0; i < p->nslots; i++) {
        size_t c = p->slot[i].cap;
        if (c >= cap && c - cap <= cap && (best < 0 || c < p->slot[best].cap)) best = i;
    }
    if (best >= 0 && budget_take(p, p->slot[best].cap - cap)) {
        data = p->slot[best].data;
        *got = p->slot[best].cap;
        *reserved += *got - cap;
        p->free_bytes -= *got;
        memmove(&p->slot[best], &p->slot[best + 1], (size_t)(p->nslots - best - 1) * sizeof p->slot[0]);
        p->nslots--;
    }
    pthread_mutex_unlock(&p->mu);
    return data;
}

static void pool_put(body_pool *p, char *data, size_t cap)
{
    if (!data) return;
    if (cap < POOL_MIN_CAP || cap > p->max_free) {
        free(data);
        return;
    }
    free_buf evicted[POOL_SLOTS];
    int nevicted = 0;
    pthread_mutex_lock(&p->mu);
    while (p->nslots > 0 && (p->nslots == POOL_SLOTS || p->free_bytes + cap > p->max_free)) {
        evicted[nevicted++] = p->slot[0];
        p->free_bytes -= p->slot[0].cap;
        memmove(&p->slot[0], &p->slot[1], (size_t)(p->nslots - 1) * sizeof p->slot[0]);
        p->nslots--;
    }
    p->slot[p->nslots++] = (free_buf){data, cap};
    p->free_bytes += cap;
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < nevicted; i++)
        free(evicted[i].data);
}

bool body_buf_grow(body_pool *p, body_buf *b, size_t cap, size_t keep)
{
    if (b->cap >= cap) return true;
    if (keep > b->cap) keep = b->cap;
    if (cap > SIZE_MAX - b->cap || !body_buf_reserve(p, b, b->cap + cap)) return false;
    size_t got = cap;
    char *nb = pool_take(p, cap, &got, &b->reserved);
    if (!nb) {
        void *fresh;
        if (posix_memalign(&fresh, BODY_ALIGN, cap) != 0) ms_oom();
        nb = fresh;
    }
    if (keep) memcpy(nb, b->data, keep);
    pool_put(p, b->data, b->cap);
    b->data = nb;
    b->cap = got;
    if (b->reserved > got) { /* the old buffer is gone: only the new one stays reserved */
        budget_give(p, b->reserved - got);
        b->reserved = got;
    }
    return true;
}

void body_buf_release(body_pool *p, body_buf *b)
{
    pool_put(p, b->data, b->cap);
    if (b->reserved) budget_give(p, b->reserved);
    memset(b, 0, sizeof *b);
}

uint64_t body_pool_inflight(body_pool *p) { return atomic_load(&p->inflight); }

uint64_t body_pool_free_bytes(body_pool *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->free_bytes;
    pthread_mutex_unlock(&p->mu);
    return n;
}

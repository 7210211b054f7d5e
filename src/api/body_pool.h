/*
 * body_pool.h - memory for request bodies: a budget of bytes in flight and a bounded pool of free
 * 4 KiB-aligned buffers that any thread reuses.
 *
 * Why a pool: a fresh 20 MB body buffer per request costs more in page faults and zeroing than parsing
 * its records does, so buffers are kept and reused. Why a budget: without one, N open uploads hold N
 * bodies and nothing bounds the total.
 *
 * Contract: every byte of body buffer a request holds is reserved against the budget first (a request
 * holds one body_buf). body_buf_reserve is the admission check (the declared Content-Length, before any
 * byte of the body is read); body_buf_grow reserves whatever more a growing buffer needs (chunked
 * bodies) and fails, leaving the buffer as it was, when the budget cannot take it. So at any time
 * in-flight bytes <= max_inflight and free pooled bytes <= max_free. body_buf_release gives the buffer
 * to the pool and the reservation back. All calls are thread-safe.
 *
 * What it must never do: allocate before reserving, block, or keep more than max_free bytes of free
 * buffers (a buffer that does not fit evicts older ones or is freed).
 */
#ifndef MS_BODY_POOL_H
#define MS_BODY_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BODY_ALIGN 4096

typedef struct body_pool body_pool;

/* One request's body buffer: data is BODY_ALIGN-aligned, cap bytes; reserved >= cap bytes are counted
 * against the budget for it. Zero-initialise. */
typedef struct {
    char *data;
    size_t cap;
    size_t reserved;
} body_buf;

body_pool *body_pool_new(uint64_t max_inflight, uint64_t max_free);
/* Frees the pooled buffers; every body_buf must have been released. */
void body_pool_free(body_pool *p);

/* Make sure at least total bytes are reserved for b (nothing is allocated). false: the budget cannot
 * take them now (nothing changes). */
bool body_buf_reserve(body_pool *p, body_buf *b, size_t total);
/* Make b->cap >= cap (a multiple of BODY_ALIGN), keeping its first keep bytes; the old and the new
 * buffer are both reserved while the bytes are copied. false: the budget refused; b unchanged. */
bool body_buf_grow(body_pool *p, body_buf *b, size_t cap, size_t keep);
/* Give b's buffer to the pool (or free it) and its reservation back; b is zeroed. */
void body_buf_release(body_pool *p, body_buf *b);

uint64_t body_pool_inflight(body_pool *p);   /* bytes reserved now */
uint64_t body_pool_free_bytes(body_pool *p); /* bytes of free buffers kept */

#endif

/*
 * test_body_pool.c - the in-flight budget and the pool of body buffers (src/body_pool.h): admission
 * within the budget and refusal beyond it, growth that keeps the bytes and reserves old + new while it
 * copies, refusal that leaves the buffer as it was, reuse of released buffers by another request, the
 * bound on free bytes kept, no large pooled buffer spent on a small body, and a budget that threads
 * racing for it never pass.
 */
#include "unit.h"

#include "api/body_pool.h"

#include <pthread.h>

#define MiB ((size_t)1 << 20)

static void test_admission_within_the_budget(void **state)
{
    (void)state;
    body_pool *p = body_pool_new(8 * MiB, 16 * MiB);
    body_buf a = {0}, b = {0}, c = {0};
    assert_true(body_buf_reserve(p, &a, 3 * MiB));
    assert_true(body_buf_reserve(p, &b, 3 * MiB));
    assert_false(body_buf_reserve(p, &c, 3 * MiB)); /* 9 MiB > 8 MiB */
    assert_int_equal(c.reserved, 0);
    assert_int_equal(body_pool_inflight(p), 6 * MiB);
    assert_true(body_buf_reserve(p, &c, 2 * MiB)); /* exactly full */
    assert_int_equal(body_pool_inflight(p), 8 * MiB);
    assert_true(body_buf_reserve(p, &c, 1 * MiB)); /* already holds more */
    body_buf_release(p, &a);
    assert_int_equal(body_pool_inflight(p), 5 * MiB);
    assert_true(body_buf_reserve(p, &a, 3 * MiB));
    body_buf_release(p, &a);
    body_buf_release(p, &b);
    body_buf_release(p, &c);
    assert_int_equal(body_pool_inflight(p), 0);
    body_buf x = {0};
    assert_false(body_buf_reserve(p, &x, 9 * MiB)); /* never fits */
    body_pool_free(p);
}

static void test_growth_keeps_bytes_and_reserves_while_copying(void **state)
{
    (void)state;
    body_pool *p = body_pool_new(3 * MiB, 16 * MiB);
    body_buf b = {0};
    assert_true(body_buf_grow(p, &b, 65536, 0));
    assert_non_null(b.data);
    assert_int_equal((uintptr_t)b.data % BODY_ALIGN, 0);
    assert_int_equal(b.cap, 65536);
    assert_int_equal(body_pool_inflight(p), 65536);
    for (size_t i = 0; i < 65536; i++)
        b.data[i] = (char)(i * 7);
    assert_true(body_buf_grow(p, &b, 1 * MiB, 65536));
    assert_int_equal(b.cap, 1 * MiB);
    assert_int_equal((uintptr_t)b.data % BODY_ALIGN, 0);
    for (size_t i = 0; i < 65536; i++)
        assert_int_equal(b.data[i], (char)(i * 7));
    assert_int_equal(body_pool_inflight(p), 1 * MiB); /* the old buffer's share came back */
    /* 1 MiB held + 2 MiB new = 3 MiB: fits; then 2 + 4 does not */
    assert_true(body_buf_grow(p, &b, 2 * MiB, 65536));
    char *before = b.data;
    assert_false(body_buf_grow(p, &b, 4 * MiB, 65536));
    assert_ptr_equal(b.data, before);
    assert_int_equal(b.cap, 2 * MiB);
    assert_int_equal(body_pool_inflight(p), 2 * MiB);
    for (size_t i = 0; i < 65536; i++)
        assert_int_equal(b.data[i], (char)(i * 7));
    body_buf_release(p, &b);
    assert_int_equal(body_pool_inflight(p), 0);
    assert_null(b.data);
    body_pool_free(p);
}

static void test_released_buffers_are_reused_and_bounded(void **state)
{
    (void)state;
    body_pool *p = body_pool_new(64 * MiB, 5 * MiB);
    body_buf a = {0};
    assert_true(body_buf_grow(p, &a, 2 * MiB, 0));
    char *first = a.data;
    body_buf_release(p, &a);
    assert_int_equal(body_pool_free_bytes(p), 2 * MiB);
    body_buf b = {0}; /* another request (any thread) gets the same buffer */
    assert_true(body_buf_grow(p, &b, 2 * MiB, 0));
    assert_ptr_equal(b.data, first);
    assert_int_equal(body_pool_free_bytes(p), 0);
    /* four 2 MiB buffers released: only two fit in 5 MiB of free buffers */
    body_buf m[4] = {{0}};
    for (int i = 0; i < 4; i++)
        assert_true(body_buf_grow(p, &m[i], 2 * MiB, 0));
    for (int i = 0; i < 4; i++)
        body_buf_release(p, &m[i]);
    assert_true(body_pool_free_bytes(p) <= 5 * MiB);
    assert_int_equal(body_pool_free_bytes(p), 4 * MiB);
    /* a small body does not take a pooled buffer more than twice its size */
    body_buf s = {0};
    assert_true(body_buf_grow(p, &s, 512 * 1024, 0));
    assert_int_equal(s.cap, 512 * 1024);
    assert_int_equal(body_pool_free_bytes(p), 4 * MiB);
    body_buf_release(p, &s);
    body_buf_release(p, &b);
    assert_int_equal(body_pool_inflight(p), 0);
    assert_true(body_pool_free_bytes(p) <= 5 * MiB);
    body_pool_free(p);
}

static void test_pooled_buffer_only_if_the_budget_takes_it(void **state)
{
    (void)state;
    body_pool *p = body_pool_new(4 * MiB, 16 * MiB);
    body_buf a = {0};
    assert_true(body_buf_grow(p, &a, 2 * MiB, 0));
    body_buf_release(p, &a); /* a 2 MiB buffer is free */
    body_buf hold = {0};
    assert_true(body_buf_reserve(p, &hold, 2 * MiB + MiB / 2)); /* 1.5 MiB left */
    body_buf b = {0};
    assert_true(body_buf_grow(p, &b, 1 * MiB + 4096, 0)); /* the pooled 2 MiB would need 2 MiB: fresh */
    assert_int_equal(b.cap, 1 * MiB + 4096);
    assert_true(body_pool_inflight(p) <= 4 * MiB);
    body_buf_release(p, &b);
    body_buf_release(p, &hold);
    body_buf c = {0}; /* (the 1 MiB + 4 KiB buffer just released is too small for it) */
    assert_true(body_buf_grow(p, &c, 1 * MiB + 8192, 0)); /* now the budget takes the whole 2 MiB */
    assert_int_equal(c.cap, 2 * MiB);
    assert_int_equal(body_pool_inflight(p), 2 * MiB);
    body_buf_release(p, &c);
    body_pool_free(p);
}

typedef struct {
    body_pool *p;
    int admitted, over; /* (cmocka's asserts are for the main thread: counted here, checked there) */
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < 2000; i++) {
        body_buf b = {0};
        if (body_buf_reserve(r->p, &b, 300 * 1024)) {
            r->admitted++;
            if (body_pool_inflight(r->p) > 1 * MiB) r->over++;
            body_buf_release(r->p, &b);
        }
    }
    return NULL;
}

static void test_threads_never_pass_the_budget(void **state)
{
    (void)state;
    body_pool *p = body_pool_new(1 * MiB, 4 * MiB);
    racer r[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (racer){p, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    int admitted = 0, over = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        admitted += r[i].admitted;
        over += r[i].over;
    }
    assert_true(admitted > 0);
    assert_int_equal(over, 0);
    assert_int_equal(body_pool_inflight(p), 0);
    body_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admission_within_the_budget),
        cmocka_unit_test(test_growth_keeps_bytes_and_reserves_while_copying),
        cmocka_unit_test(test_released_buffers_are_reused_and_bounded),
        cmocka_unit_test(test_pooled_buffer_only_if_the_budget_takes_it),
        cmocka_unit_test(test_threads_never_pass_the_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

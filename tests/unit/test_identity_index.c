/*
 * test_identity_index.c - the in-memory identity index (identity_index.h): lookups after inserts,
 * replacement, removal with backward shift (including runs that wrap around the table and hashes that
 * share a home slot), growth, and a randomized comparison against a plain array model.
 */
#include "unit.h"

#include "store/identity_index.h"

#include <stdlib.h>

static identity_hash h_of(uint64_t lo, uint64_t hi) { return (identity_hash){lo, hi}; }

static void test_put_get_replace(void **state)
{
    (void)state;
    identity_index *ix = identity_index_new(10);
    uint64_t n;
    assert_false(identity_index_get(ix, h_of(1, 2), &n));
    identity_index_put(ix, h_of(1, 2), 7);
    assert_true(identity_index_get(ix, h_of(1, 2), &n));
    assert_int_equal(n, 7);
    assert_false(identity_index_get(ix, h_of(1, 3), &n)); /* same low half, other high half */
    identity_index_put(ix, h_of(1, 2), 9);
    assert_true(identity_index_get(ix, h_of(1, 2), &n));
    assert_int_equal(n, 9);
    assert_int_equal(identity_index_count(ix), 1);
    identity_index_free(ix);
}

/* Keys whose low halves collide on the same home slot (and wrap past the table's end) stay findable
 * after any one of them is removed. */
static void test_remove_keeps_probe_runs(void **state)
{
    (void)state;
    identity_index *ix = identity_index_new(10); /* 1024 slots */
    const uint64_t home = 1022;                  /* run 1022, 1023, 0, 1, ... wraps */
    for (uint64_t i = 0; i < 6; i++)
        identity_index_put(ix, h_of(home + 1024 * i, i), 100 + i);
    identity_index_put(ix, h_of(0, 99), 500); /* home 0: sits inside the wrapped run */
    for (uint64_t victim = 0; victim < 6; victim++) {
        identity_index_remove(ix, h_of(home + 1024 * victim, victim));
        uint64_t n;
        for (uint64_t i = 0; i < 6; i++) {
            bool want = i != victim;
            assert_int_equal(identity_index_get(ix, h_of(home + 1024 * i, i), &n), want);
            if (want) assert_int_equal(n, 100 + i);
        }
        assert_true(identity_index_get(ix, h_of(0, 99), &n));
        assert_int_equal(n, 500);
        identity_index_put(ix, h_of(home + 1024 * victim, victim), 100 + victim);
    }
    identity_index_remove(ix, h_of(12345, 1)); /* absent: no effect */
    assert_int_equal(identity_index_count(ix), 7);
    identity_index_free(ix);
}

/* Random puts and removes against a model, through several growths. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { KEYS = 20000, OPS = 200000 };
    identity_index *ix = identity_index_new(1);
    uint64_t *model = malloc(sizeof *model * KEYS); /* UINT64_MAX: absent */
    for (int i = 0; i < KEYS; i++)
        model[i] = UINT64_MAX;
    unit_rng r = {42};
    uint64_t count = 0;
    for (int op = 0; op < OPS; op++) {
        uint32_t k = unit_below(&r, KEYS);
        identity_hash h = h_of((uint64_t)k * 0x9E3779B97F4A7C15ULL % 4096, k); /* many shared homes */
        if (unit_below(&r, 3) == 0) {
            identity_index_remove(ix, h);
            if (model[k] != UINT64_MAX) count--;
            model[k] = UINT64_MAX;
        } else {
            uint64_t v = unit_rand(&r) >> 8;
            identity_index_put(ix, h, v);
            if (model[k] == UINT64_MAX) count++;
            model[k] = v;
        }
    }
    assert_int_equal(identity_index_count(ix), count);
    for (uint32_t k = 0; k < KEYS; k++) {
        uint64_t n;
        identity_hash h = h_of((uint64_t)k * 0x9E3779B97F4A7C15ULL % 4096, k);
        bool found = identity_index_get(ix, h, &n);
        assert_int_equal(found, model[k] != UINT64_MAX);
        if (found) assert_true(n == model[k]);
    }
    free(model);
    identity_index_free(ix);
}

/* put_many (the load path) grows the table as needed and agrees with one-at-a-time puts. */
static void test_put_many(void **state)
{
    (void)state;
    enum { N = 5000 };
    identity_index *ix = identity_index_new(0);
    identity_hash h[N];
    uint64_t nums[N];
    for (uint64_t i = 0; i < N; i++)
        h[i] = h_of(i * 7919u % 1024, i), nums[i] = i * 3;
    identity_index_put_many(ix, h, nums, 100);
    identity_index_put_many(ix, h + 100, nums + 100, N - 100);
    identity_index_put_many(ix, h, nums, 0);
    assert_int_equal(identity_index_count(ix), N);
    for (uint64_t i = 0; i < N; i++) {
        uint64_t n;
        assert_true(identity_index_get(ix, h[i], &n));
        assert_true(n == i * 3);
    }
    identity_index_free(ix);
}

static void test_hash_of_identity_keys(void **state)
{
    (void)state;
    identity_hash a = identity_hash_of("ana maria\0"
                                       "1990-01-01",
                                       20);
    identity_hash b = identity_hash_of("ana maria\0"
                                       "1990-01-02",
                                       20);
    identity_hash c = identity_hash_of("ana maria\0"
                                       "1990-01-01",
                                       20);
    assert_true(a.lo == c.lo && a.hi == c.hi);
    assert_false(a.lo == b.lo && a.hi == b.hi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace),       cmocka_unit_test(test_remove_keeps_probe_runs),
        cmocka_unit_test(test_random_against_model),  cmocka_unit_test(test_put_many),
        cmocka_unit_test(test_hash_of_identity_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

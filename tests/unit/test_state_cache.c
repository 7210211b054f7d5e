/*
 * test_state_cache.c - the patients' latest states in memory (state_cache.h): an entry counts only under
 * the head it was taken at, rehead (with the newest entries of each kind) and drop, the budget and CLOCK eviction
 * (entries read between puts stay), states too large to keep, and a randomized comparison against a model that may
 * forget (a hit is always the model's state under the model's head; a stale or absent entry is always a miss).
 */
#include "unit.h"

#include "store/state_cache.h"

#include <stdlib.h>
#include <string.h>

static bool get_str(state_cache *c, uint64_t number, uint64_t head, arena *mem, char *out, size_t cap)
{
    const unsigned char *p;
    size_t n;
    if (!state_cache_get(c, number, head, mem, &p, &n)) return false;
    assert_true(n < cap);
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

static void put_str(state_cache *c, uint64_t number, uint64_t head, const char *s)
{
    state_cache_put(c, number, head, s, strlen(s));
}

static void test_head_decides(void **state)
{
    (void)state;
    arena mem = {0};
    char got[64];
    state_cache *c = state_cache_new(1 << 20);
    assert_false(get_str(c, 7, 100, &mem, got, sizeof got));
    put_str(c, 7, 100, "state at 100");
    assert_true(get_str(c, 7, 100, &mem, got, sizeof got));
    assert_string_equal(got, "state at 100");
    assert_false(get_str(c, 7, 101, &mem, got, sizeof got)); /* the head moved: stale, a miss */
    assert_false(get_str(c, 8, 100, &mem, got, sizeof got)); /* another patient */
    put_str(c, 7, 105, "state at 105");                      /* replaced */
    assert_false(get_str(c, 7, 100, &mem, got, sizeof got));
    assert_true(get_str(c, 7, 105, &mem, got, sizeof got));
    assert_string_equal(got, "state at 105");
    state_cache_stats st = state_cache_stats_of(c);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 4);
    state_cache_free(c);
    arena_free(&mem);
}

static void test_rehead_and_drop(void **state)
{
    (void)state;
    arena mem = {0};
    char got[64];
    state_cache *c = state_cache_new(1 << 20);
    put_str(c, 1, 10, "one");
    put_str(c, 2, 20, "two");
    uint64_t nw[3] = {9, 11, 0}, got_nw[3];
    assert_false(state_cache_newest(c, 1, 10, got_nw)); /* a put knows no newest entries */
    state_cache_rehead(c, 1, 10, 11, nw);               /* moved by a record's index entry: the state holds at 11 */
    assert_false(get_str(c, 1, 10, &mem, got, sizeof got));
    assert_true(get_str(c, 1, 11, &mem, got, sizeof got));
    assert_string_equal(got, "one");
    assert_true(state_cache_newest(c, 1, 11, got_nw));
    assert_memory_equal(got_nw, nw, sizeof nw);
    assert_false(state_cache_newest(c, 1, 10, got_nw)); /* only at the head they are of */
    state_cache_rehead(c, 1, 11, 12, NULL);             /* unknown at 12 */
    assert_false(state_cache_newest(c, 1, 12, got_nw));
    assert_true(get_str(c, 1, 12, &mem, got, sizeof got));
    put_str(c, 1, 13, "one'"); /* a new state: its newest entries come with the next rehead */
    assert_false(state_cache_newest(c, 1, 13, got_nw));
    state_cache_rehead(c, 2, 19, 21, NULL); /* taken at another head than the move's start: it goes */
    assert_false(get_str(c, 2, 20, &mem, got, sizeof got));
    assert_false(get_str(c, 2, 21, &mem, got, sizeof got));
    assert_int_equal(state_cache_stats_of(c).entries, 1);
    state_cache_rehead(c, 3, 1, 2, nw); /* absent: nothing */
    state_cache_drop(c, 1);
    assert_false(get_str(c, 1, 13, &mem, got, sizeof got));
    assert_int_equal(state_cache_stats_of(c).entries, 0);
    state_cache_drop(c, 1); /* absent: nothing */
    state_cache_free(c);
    arena_free(&mem);
}

/* Within the budget; entries read between every two puts survive a stream of cold ones. */
static void test_budget_and_clock(void **state)
{
    (void)state;
    enum { HOT = 10, STATE = 200 };
    arena mem = {0};
    uint64_t budget = 128 * 1024; /* ~450 states of 200 bytes (72 more each) beside the table of 1,024 slots */
    state_cache *c = state_cache_new(budget);
    char s[STATE + 1], got[STATE + 1];
    memset(s, 'x', STATE);
    s[STATE] = 0;
    for (uint64_t k = 0; k < HOT; k++)
        put_str(c, k, k + 1000, s);
    for (uint64_t k = HOT; k < 5000; k++) {
        for (uint64_t h = 0; h < HOT; h++)
            assert_true(get_str(c, h, h + 1000, &mem, got, sizeof got));
        put_str(c, k, k + 1000, s);
        assert_true(state_cache_stats_of(c).bytes <= budget);
    }
    state_cache_stats st = state_cache_stats_of(c);
    assert_true(st.evictions > 4000);
    assert_true(st.entries > 400 && st.entries <= (budget - 1024 * 16) / (STATE + 72));
    assert_true(get_str(c, 4999, 5999, &mem, got, sizeof got)); /* the newest is kept */
    state_cache_free(c);
    arena_free(&mem);
}

/* The load that stalled the writer (bench_flat.sh, slices of 2 M records of 200 B, half of them new patients, the
 * others repeats of the same slice's): patient numbers in one growing range, each slice's repeats among its own
 * patients, the cache at its budget from the third slice on. Each slice, lookups, inserts and evictions
 * together must look at a few dozen slots a put at most. When the hand walked the table's own slots, the table
 * filled densely ahead of it: here the probes a put rose from ~7 to over 1,000 by the ninth slice (at 5 M
 * patients and the default 1 GiB, to minutes a slice). */
static void test_eviction_stays_local(void **state)
{
    (void)state;
    enum { STATE = 280, SLICES = 10, SLICE = 29826 };
    arena mem = {0};
    state_cache *c = state_cache_new(32u << 20); /* ~90,000 states: at its budget from the seventh slice */
    static char s[STATE];
    static uint64_t ident[SLICE];
    uint64_t rng = 7, patients = 0, head = 1;
    for (int sl = 0; sl < SLICES; sl++) {
        state_cache_stats before = state_cache_stats_of(c);
        for (uint64_t i = 0; i < SLICE; i++) {
            uint64_t n = i && ms_splitmix64(&rng) % 2 ? ident[ms_splitmix64(&rng) % i] : patients++;
            ident[i] = n;
            const unsigned char *out;
            size_t len;
            (void)state_cache_get(c, n, head, &mem, &out, &len);
            state_cache_put(c, n, ++head, s, STATE);
            if (i % 4096 == 0) arena_free(&mem);
        }
        state_cache_stats st = state_cache_stats_of(c);
        double per_put = (double)(st.probes - before.probes) / SLICE;
        if (sl >= 7) assert_true(st.evictions > before.evictions); /* at the budget */
        if (per_put > 50) fail_msg("slice %d: %.1f slots looked at a put", sl, per_put);
    }
    state_cache_free(c);
    arena_free(&mem);
}

static void test_too_large_and_off(void **state)
{
    (void)state;
    arena mem = {0};
    char got[8];
    state_cache *c = state_cache_new(64 * 1024);
    put_str(c, 1, 1, "small");
    char *big = malloc(9000); /* more than an eighth of the budget */
    memset(big, 'b', 9000);
    state_cache_put(c, 1, 2, big, 9000); /* not kept, and the older state of the patient goes too */
    assert_false(get_str(c, 1, 1, &mem, got, sizeof got));
    assert_int_equal(state_cache_stats_of(c).entries, 0);
    free(big);
    state_cache_free(c);
    /* a budget of 0: no cache; every call takes NULL */
    assert_null(state_cache_new(0));
    state_cache_put(NULL, 1, 1, "x", 1);
    assert_false(get_str(NULL, 1, 1, &mem, got, sizeof got));
    state_cache_rehead(NULL, 1, 1, 2, NULL);
    uint64_t nw[3];
    assert_false(state_cache_newest(NULL, 1, 1, nw));
    state_cache_drop(NULL, 1);
    assert_int_equal(state_cache_stats_of(NULL).entries, 0);
    state_cache_free(NULL);
    arena_free(&mem);
}

/* Random puts, gets, reheads and drops against a model of every patient's state and head. The cache may
 * forget (its budget holds about a third of the keys); it may never answer with another state or head. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { KEYS = 3000, OPS = 300000 };
    uint64_t *head = calloc(KEYS, sizeof *head); /* 0: nothing put */
    uint32_t *val = calloc(KEYS, sizeof *val);
    state_cache *c = state_cache_new(128 * 1024); /* ~1,000 states of ~12 bytes and the table */
    arena mem = {0};
    unit_rng r = {7};
    uint64_t next_head = 1, hits = 0;
    char s[32], got[32];
    for (int op = 0; op < OPS; op++) {
        uint32_t k = unit_below(&r, KEYS);
        switch (unit_below(&r, 6)) {
        case 0:
        case 1: /* a new version */
            head[k] = next_head++;
            val[k] = (uint32_t)unit_rand(&r);
            snprintf(s, sizeof s, "%u:%u", k, val[k]);
            put_str(c, k, head[k], s);
            break;
        case 2: /* a record's index entry: the state holds at the new head */
            if (!head[k]) break;
            state_cache_rehead(c, k, head[k], next_head, NULL);
            head[k] = next_head++;
            break;
        case 3: /* erasure */
            state_cache_drop(c, k);
            head[k] = 0;
            break;
        default: { /* read under the model's head, and under an old one */
            bool hit = get_str(c, k, head[k], &mem, got, sizeof got);
            if (hit) {
                assert_true(head[k] != 0);
                snprintf(s, sizeof s, "%u:%u", k, val[k]);
                assert_string_equal(got, s);
                hits++;
            }
            if (head[k] > 1) assert_false(get_str(c, k, head[k] - 1, &mem, got, sizeof got));
        }
        }
        if (op % 10000 == 0) arena_free(&mem);
    }
    assert_true(hits > 1000); /* it does answer */
    assert_true(state_cache_stats_of(c).evictions > 0);
    assert_true(state_cache_stats_of(c).bytes <= 128 * 1024);
    state_cache_free(c);
    arena_free(&mem);
    free(head);
    free(val);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_decides),      cmocka_unit_test(test_rehead_and_drop),
        cmocka_unit_test(test_budget_and_clock),  cmocka_unit_test(test_eviction_stays_local),
        cmocka_unit_test(test_too_large_and_off), cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

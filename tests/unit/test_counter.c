/*
 * test_counter.c - the rolling-window counter (src/views/counter.h) and its definitions
 * (src/views/counter_def.h):
 *   - exactness against a brute-force count of the same random stream: records created, updated (event
 *     time, type, condition and parent move), deleted and created again, with event times late (before
 *     the window), in it and in the future, applied as a follower of the log applies them (-1 for the
 *     version replaced, +1 for the new one), the clock moving by random steps and sometimes jumping past
 *     the whole window; checked at many `at` instants and windows, over everything and per parent, and
 *     across save/load round trips; the late count against the model's;
 *   - the per-parent memory cap: beyond it answers are flagged incomplete, never silently wrong;
 *   - the query's refusals (window, at, parent) and bucket edges ((from, to] at the resolution);
 *   - definitions: what parses, the canonical form, each refusal names its key and never a value, the
 *     where operators, public or PHI by the schema;
 *   - damaged saved states (found by fuzz/fuzz_files.c): counts whose sums overflow an int64 and a bucket step
 *     that overflows are refused, not summed (UBSan: signed overflow in fw_add and rd_pair); an empty
 *     counters.state (its buf's data NULL) is refused without arithmetic on the NULL pointer;
 *   - the state's schema version and per-counter public flag round trip; a first-format (MSCS1) state
 *     decodes with schema version 0 (unknown).
 */
#include "unit.h"

#include "views/counter.h"
#include "views/counter_def.h"
#include "views/counter_state.h"

#include <xxhash.h>

#define SEC 1000000LL

/* ---- the model: records with their live version, and the brute-force count ---- */

typedef struct {
    bool live;
    int64_t ts;
    int type;   /* 0: "lab", 1: "visit" */
    int status; /* 0: "final", 1: "draft", 2: absent */
    int parent; /* -1: none, else parent p<n> */
} model_rec;

static const char *const statuses[] = {"final", "draft"};

static void parent_name(int p, char *out) { snprintf(out, 16, "p%d", p); }

/* The record as JSON fields, tested through counter_def's functions as the follower tests them. */
static bool matches(const counter_def *d, const model_rec *r)
{
    const char *type = r->type ? "visit" : "lab";
    if (!counter_type_matches(d, type, strlen(type))) return false;
    char val[32];
    if (r->status == 2) return counter_where_holds(d, NULL, 0, JSON_NONE);
    snprintf(val, sizeof val, "\"%s\"", statuses[r->status]);
    return counter_where_holds(d, val, strlen(val), JSON_STRING);
}

static int64_t brute(const counter_def *d, const model_rec *recs, int n, int64_t lo_b, int64_t hi_b, int parent)
{
    int64_t count = 0;
    for (int i = 0; i < n; i++) {
        if (!recs[i].live || !matches(d, &recs[i])) continue;
        if (parent >= 0 && recs[i].parent != parent) continue;
        int64_t k = counter_bucket(recs[i].ts, d->resolution_us);
        if (k > lo_b && k <= hi_b) count++;
    }
    return count;
}

/* The follower's step for one new version: take away what the old one counted, add what the new one does. */
static void apply(counter *c, const counter_def *d, const model_rec *old, const model_rec *cur, int64_t commit,
                  int64_t now, uint64_t *late_expected)
{
    char p[16];
    if (old && old->live && matches(d, old)) {
        parent_name(old->parent, p);
        counter_add(c, old->ts, -1, old->parent >= 0 ? p : NULL, old->parent >= 0 ? strlen(p) : 0, commit, now);
    }
    if (cur->live && matches(d, cur)) {
        parent_name(cur->parent, p);
        int64_t W = d->max_window_us / d->resolution_us;
        int64_t mc = commit / d->resolution_us - (commit < 0 && commit % d->resolution_us ? 1 : 0);
        if (counter_bucket(cur->ts, d->resolution_us) <= mc - W) (*late_expected)++;
        counter_add(c, cur->ts, +1, cur->parent >= 0 ? p : NULL, cur->parent >= 0 ? strlen(p) : 0, commit, now);
    }
}

static counter_def parse_ok(const char *json)
{
    counter_def d;
    ms_err e = {0};
    if (counter_def_parse(&d, json, strlen(json), &e) != MS_OK) fail_msg("%s: %s", json, e.msg);
    return d;
}

/* One random stream against the model; cap: the per-parent pairs (0: the definition's). */
static void run_stream(uint64_t seed, const char *def_json, uint32_t cap, int rounds, bool *saw_incomplete)
{
    unit_rng rng = {seed};
    counter_def d = parse_ok(def_json);
    int64_t res = d.resolution_us, W = d.max_window_us / res;
    counter *c = counter_new(res, d.max_window_us, d.per_parent ? (cap ? cap : d.max_parent_buckets) : 0);
    enum { NREC = 400, NPARENT = 12 };
    model_rec recs[NREC];
    memset(recs, 0, sizeof recs);
    int64_t now = unit_now() + (int64_t)unit_below(&rng, 1000000);
    uint64_t late_expected = 0;
    int checks = 0;
    for (int round = 0; round < rounds; round++) {
        /* the clock: small steps, sometimes a long one, rarely past the whole window */
        uint32_t step = unit_below(&rng, 100);
        now += step < 80   ? (int64_t)unit_below(&rng, 3 * (uint32_t)res)
               : step < 98 ? (int64_t)unit_below(&rng, 20) * res
                           : (W + 5) * res;
        /* a change: a record created, updated or deleted */
        int i = (int)unit_below(&rng, NREC);
        model_rec old = recs[i], cur = old;
        uint32_t what = unit_below(&rng, 10);
        if (!old.live || what < 6) {
            cur.live = true;
            uint32_t when = unit_below(&rng, 10);
            int64_t span = (W + 10) * res;
            if (!old.live || when < 6) /* mostly within the window, some late, some in the future */
                cur.ts =
                    now - (int64_t)(unit_rand(&rng) % (uint64_t)span) + (int64_t)unit_below(&rng, 2 * (uint32_t)res);
            if (when >= 6 && when < 8) cur.ts = now + 1 + (int64_t)(unit_rand(&rng) % (uint64_t)(3 * W * res));
            if (when == 8) cur.ts = (now / res) * res - (int64_t)unit_below(&rng, 3) * res; /* on a bucket edge */
            if (!old.live || unit_below(&rng, 3) == 0) cur.type = (int)unit_below(&rng, 2);
            if (!old.live || unit_below(&rng, 3) == 0) cur.status = (int)unit_below(&rng, 3);
            if (!old.live || unit_below(&rng, 3) == 0) cur.parent = (int)unit_below(&rng, NPARENT + 1) - 1;
        } else {
            cur.live = false; /* a tombstone */
        }
        /* applied at commit time, or a little later (the follower lags) */
        int64_t commit = now - (unit_below(&rng, 4) == 0 ? (int64_t)unit_below(&rng, 2 * (uint32_t)res) : 0);
        apply(c, &d, &old, &cur, commit, now, &late_expected);
        recs[i] = cur;
        /* a save/load round trip now and then */
        if (unit_below(&rng, 50) == 0) {
            buf saved = {0};
            counter_save(c, &saved);
            counter *back = counter_new(res, d.max_window_us, d.per_parent ? (cap ? cap : d.max_parent_buckets) : 0);
            ms_err e = {0};
            if (counter_load(back, saved.data, saved.len, now, &e) != MS_OK) fail_msg("load: %s", e.msg);
            counter_stats a, b;
            counter_stats_get(c, &a);
            counter_stats_get(back, &b);
            assert_int_equal(a.late, b.late);
            assert_true(b.parent_buckets <= a.parent_buckets); /* aged pairs are not saved */
            counter_free(c);
            c = back;
            buf_free(&saved);
        }
        /* queries at several instants and windows */
        for (int q = 0; q < 3; q++) {
            int64_t m = now / res;
            int64_t window_b = 1 + (int64_t)unit_below(&rng, (uint32_t)W);
            int64_t back_b = (int64_t)unit_below(&rng, (uint32_t)(W - window_b + 1)); /* to - window >= m - W */
            int64_t at = (m - back_b) * res + (int64_t)unit_below(&rng, (uint32_t)res);
            if (at > now) at = now;
            int parent = d.per_parent && unit_below(&rng, 2) ? (int)unit_below(&rng, NPARENT) : -1;
            char p[16];
            parent_name(parent, p);
            counter_answer ans;
            ms_err e = {0};
            ms_code rc = counter_count(c, window_b * res, at, now, parent >= 0 ? p : NULL, parent >= 0 ? strlen(p) : 0,
                                       &ans, &e);
            if (rc != MS_OK) fail_msg("round %d: count refused: %s", round, e.msg);
            int64_t hi_b = at / res; /* at > 0 */
            assert_int_equal(ans.to, hi_b * res);
            assert_int_equal(ans.from, (hi_b - window_b) * res);
            if (ans.incomplete) {
                *saw_incomplete = true;
                continue;
            }
            int64_t want = brute(&d, recs, NREC, hi_b - window_b, hi_b, parent);
            if (ans.count != want)
                fail_msg("round %d: window %lld buckets at %lld (parent %d): counted %lld, brute force %lld", round,
                         (long long)window_b, (long long)at, parent, (long long)ans.count, (long long)want);
            checks++;
        }
    }
    counter_stats st;
    counter_stats_get(c, &st);
    assert_int_equal(st.late, late_expected);
    assert_true(checks > rounds);
    assert_true(st.memory > 0);
    counter_free(c);
    counter_def_free(&d);
}

static void test_exact_against_brute_force(void **state)
{
    (void)state;
    bool incomplete = false;
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_stream(seed * 7919, "{\"name\":\"labs\",\"type\":\"lab\",\"max_window\":\"60s\",\"resolution\":\"1s\"}", 0,
                   4000, &incomplete);
    for (uint64_t seed = 1; seed <= 4; seed++)
        run_stream(seed * 104729,
                   "{\"name\":\"final\",\"where\":{\"field\":\"status\",\"equals\":\"final\"},\"max_window\":\"10m\","
                   "\"resolution\":\"1m\"}",
                   0, 4000, &incomplete);
    assert_false(incomplete); /* nothing per parent asked */
}

static void test_per_parent_exact_within_the_cap(void **state)
{
    (void)state;
    bool incomplete = false;
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_stream(seed * 31337,
                   "{\"name\":\"kids\",\"where\":{\"field\":\"status\",\"in\":[\"final\",\"draft\"]},\"max_window\":"
                   "\"90s\",\"per_parent\":true}",
                   0, 4000, &incomplete);
    assert_false(incomplete); /* 400 records never fill 65,536 pairs */
}

static void test_per_parent_beyond_the_cap_is_flagged(void **state)
{
    (void)state;
    bool incomplete = false;
    for (uint64_t seed = 1; seed <= 4; seed++)
        run_stream(seed * 7, "{\"name\":\"kids\",\"max_window\":\"90s\",\"per_parent\":true}", 24, 3000, &incomplete);
    assert_true(incomplete); /* 24 pairs for 12 parents over 90 buckets: the cap is reached */
}

static void test_bucket_edges_and_refusals(void **state)
{
    (void)state;
    int64_t res = 60 * SEC;
    counter *c = counter_new(res, 60 * res, 0);
    int64_t now = unit_time(2026, 6, 15, 12, 30, 30); /* half a minute into a bucket */
    int64_t edge = unit_time(2026, 6, 15, 12, 30, 0);
    counter_add(c, edge, 1, NULL, 0, now, now);                /* on the edge: bucket (12:29, 12:30] */
    counter_add(c, edge + 1, 1, NULL, 0, now, now);            /* the bucket now is in: not yet countable */
    counter_add(c, edge - 60 * res + 1, 1, NULL, 0, now, now); /* (11:30, 11:31]: the oldest bucket held */
    counter_add(c, edge - 60 * res, 1, NULL, 0, now, now);     /* (11:29, 11:30]: out of the window: late */
    counter_answer a;
    ms_err e;
    assert_int_equal(counter_count(c, 60 * res, now, now, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.to, edge);
    assert_int_equal(a.from, edge - 60 * res);
    assert_int_equal(a.count, 2); /* (11:30, 12:30]: the one on the edge and the oldest */
    assert_int_equal(counter_count(c, res, edge, now, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.count, 1);
    counter_stats st;
    counter_stats_get(c, &st);
    assert_int_equal(st.late, 1);
    /* the bucket now is in becomes countable a minute later */
    assert_int_equal(counter_count(c, res, edge + res, edge + res, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.count, 1);
    /* refusals name the parameter */
    assert_int_equal(counter_count(c, 90 * SEC, now, now, NULL, 0, &a, &e), MS_EINVAL);
    assert_true(strstr(e.msg, "window") != NULL);
    assert_int_equal(counter_count(c, 61 * res, now, now, NULL, 0, &a, &e), MS_EINVAL);
    assert_int_equal(counter_count(c, 0, now, now, NULL, 0, &a, &e), MS_EINVAL);
    assert_int_equal(counter_count(c, res, now + 2 * res, now, NULL, 0, &a, &e), MS_EINVAL);
    assert_true(strstr(e.msg, "at:") != NULL);
    assert_int_equal(counter_count(c, 60 * res, now - res, now, NULL, 0, &a, &e), MS_EINVAL);
    assert_true(strstr(e.msg, "oldest") != NULL);
    assert_int_equal(counter_count(c, res, now, now, "p", 1, &a, &e), MS_EINVAL);
    assert_true(strstr(e.msg, "parent") != NULL);
    counter_free(c);
}

static void test_future_counts_when_its_time_comes(void **state)
{
    (void)state;
    int64_t res = SEC;
    counter *c = counter_new(res, 10 * res, 0);
    int64_t now = unit_now();
    counter_add(c, now + 5 * res, 1, NULL, 0, now, now);
    counter_add(c, now + 400 * res, 1, NULL, 0, now, now); /* far: held in the future map */
    counter_add(c, now + 400 * res, 1, NULL, 0, now, now);
    counter_add(c, now + 400 * res, -1, NULL, 0, now, now); /* updated away before its time */
    counter_answer a;
    ms_err e;
    assert_int_equal(counter_count(c, 10 * res, now, now, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.count, 0);
    counter_stats st;
    counter_stats_get(c, &st);
    assert_int_equal(st.future_buckets, 2);
    assert_int_equal(counter_count(c, 10 * res, now + 6 * res, now + 6 * res, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.count, 1);
    assert_int_equal(counter_count(c, 10 * res, now + 401 * res, now + 401 * res, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.count, 1);
    /* a clock jump far past a future bucket drops it with the ring */
    counter_add(c, now + 2000 * res, 1, NULL, 0, now + 401 * res, now + 401 * res);
    assert_int_equal(counter_count(c, 10 * res, now + 5000 * res, now + 5000 * res, NULL, 0, &a, &e), MS_OK);
    assert_int_equal(a.count, 0);
    counter_stats_get(c, &st);
    assert_int_equal(st.future_buckets, 0);
    /* the clock stepping back keeps the later ring */
    assert_int_equal(counter_count(c, 10 * res, now, now, NULL, 0, &a, &e), MS_EINVAL);
    counter_free(c);
}

static void test_load_refuses_other_shapes(void **state)
{
    (void)state;
    counter *a = counter_new(SEC, 60 * SEC, 0), *b = counter_new(60 * SEC, 3600 * SEC, 0);
    counter_add(a, unit_now() - SEC, 1, NULL, 0, unit_now(), unit_now());
    buf saved = {0};
    counter_save(a, &saved);
    ms_err e;
    assert_int_equal(counter_load(b, saved.data, saved.len, unit_now(), &e), MS_ECORRUPT);
    assert_int_equal(counter_load(a, saved.data, saved.len - 1, unit_now(), &e), MS_ECORRUPT);
    assert_int_equal(counter_load(a, saved.data, saved.len, unit_now(), &e), MS_OK);
    counter_answer ans;
    assert_int_equal(counter_count(a, 60 * SEC, unit_now(), unit_now(), NULL, 0, &ans, &e), MS_OK);
    assert_int_equal(ans.count, 1);
    buf_free(&saved);
    counter_free(a);
    counter_free(b);
}

/* ---- damaged saved states (fuzz/fuzz_files.c) ---- */

/* The head of a saved state (counter.c's layout) of a started counter of 1 s over 60 s at bucket m. */
static void saved_head(buf *b, int64_t m)
{
    buf_put(b, "MSC2", 4);
    buf_put_be64(b, (uint64_t)SEC);
    buf_put_be64(b, 60);
    buf_putc(b, 1);
    buf_put_be64(b, (uint64_t)m);
    buf_put_be64(b, 0); /* late */
    buf_put_be64(b, 0); /* parent_dropped */
    buf_putc(b, 0);     /* no gap */
    buf_put_be64(b, 0);
    buf_put_be64(b, 0);
}

/* A ring of buckets 41, 42, ... (m 100: the first after m - W) with these counts, no future, no parents. */
static void saved_ring(buf *b, const int64_t *counts, int n)
{
    b->len = 0;
    saved_head(b, 100);
    buf_put_be32(b, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        buf_put_varint(b, 1);
        buf_put_zigzag(b, counts[i]);
    }
    buf_put_be32(b, 0);
    buf_put_be32(b, 0);
}

static void test_load_refuses_damaged_counts(void **state)
{
    (void)state;
    counter *c = counter_new(SEC, 60 * SEC, 16);
    counter_answer ans;
    ms_err e;
    buf b = {0};
    /* two buckets of INT64_MAX: their sum in the tree overflowed (signed overflow in fw_add) */
    const int64_t huge[] = {INT64_MAX, INT64_MAX}, low[] = {INT64_MIN + 1, -1}, big[] = {(int64_t)1 << 40, 5};
    saved_ring(&b, huge, 2);
    assert_int_equal(counter_load(c, b.data, b.len, 100 * SEC, &e), MS_ECORRUPT);
    saved_ring(&b, low, 2);
    assert_int_equal(counter_load(c, b.data, b.len, 100 * SEC, &e), MS_ECORRUPT);
    assert_int_equal(counter_count(c, 60 * SEC, 100 * SEC, 100 * SEC, NULL, 0, &ans, &e), MS_OK);
    assert_int_equal(ans.count, 0); /* left empty */
    /* counts as large as records could ever make load as before */
    saved_ring(&b, big, 2);
    assert_int_equal(counter_load(c, b.data, b.len, 100 * SEC, &e), MS_OK);
    assert_int_equal(counter_count(c, 60 * SEC, 100 * SEC, 100 * SEC, NULL, 0, &ans, &e), MS_OK);
    assert_int_equal(ans.count, ((int64_t)1 << 40) + 5);
    /* a future bucket 2^63 after bucket -9: the step was refused, but added (signed overflow in rd_pair) */
    b.len = 0;
    saved_head(&b, -10);
    buf_put_be32(&b, 0);
    buf_put_be32(&b, 1);
    buf_put_varint(&b, (uint64_t)1 << 63);
    buf_put_zigzag(&b, 1);
    buf_put_be32(&b, 0);
    assert_int_equal(counter_load(c, b.data, b.len, -10 * SEC, &e), MS_ECORRUPT);
    buf_free(&b);
    counter_free(c);
}

/* An empty counters.state is read into a buf without bytes (data NULL): refused, no arithmetic on NULL. */
static void test_empty_state_file(void **state)
{
    (void)state;
    buf empty = {0};
    counter_state st;
    ms_err e = {0};
    assert_int_equal(counter_state_decode(&st, &empty, &e), MS_ECORRUPT);
    assert_non_null(strstr(e.msg, "not a counters state file"));
    counter_state_free(&st);
}

/* The state keeps the schema version the counts are under and, per counter, whether it read the public
 * copies; a file of the first format (MSCS1) still decodes, with version 0 (unknown: not used). */
static void test_state_schema_version(void **state)
{
    (void)state;
    counter_state_entry in[2] = {{"{\"name\":\"a\"}", 12, "xy", 2, 7, COUNTER_STATE_PUBLIC},
                                 {"{\"name\":\"b\"}", 12, "z", 1, 9, 0}};
    buf b = {0};
    counter_state_encode(&b, 42, 1000, 2000, 3, in, 2);
    counter_state st;
    ms_err e = {0};
    assert_int_equal(counter_state_decode(&st, &b, &e), MS_OK);
    assert_int_equal(st.position, 42);
    assert_int_equal(st.schema_version, 3);
    assert_int_equal(st.n, 2);
    assert_int_equal(st.entries[0].flags, COUNTER_STATE_PUBLIC);
    assert_int_equal(st.entries[1].flags, 0);
    assert_int_equal(st.entries[1].changes, 9);
    assert_memory_equal(st.entries[1].state, "z", 1);
    counter_state_free(&st);
    /* the first format: no schema version, no flags */
    buf old = {0};
    buf_put(&old, "MSCS1\n", 6);
    buf_put_be64(&old, 42);
    buf_put_be64(&old, 1000);
    buf_put_be64(&old, 2000);
    buf_put_be32(&old, 1);
    buf_put_be32(&old, 12);
    buf_put(&old, "{\"name\":\"a\"}", 12);
    buf_put_be32(&old, 2);
    buf_put(&old, "xy", 2);
    buf_put_be64(&old, 7);
    buf_put_be64(&old, XXH3_64bits(old.data, old.len));
    assert_int_equal(counter_state_decode(&st, &old, &e), MS_OK);
    assert_int_equal(st.schema_version, 0);
    assert_int_equal(st.n, 1);
    assert_int_equal(st.entries[0].changes, 7);
    counter_state_free(&st);
}

/* ---- definitions ---- */

static void refused(const char *json, const char *names, const char *secret)
{
    counter_def d;
    ms_err e = {0};
    if (counter_def_parse(&d, json, strlen(json), &e) == MS_OK) fail_msg("accepted: %s", json);
    if (!strstr(e.msg, names)) fail_msg("%s: the message \"%s\" does not name %s", json, e.msg, names);
    if (secret && strstr(e.msg, secret)) fail_msg("%s: the message \"%s\" echoes a value", json, e.msg);
    counter_def_free(&d);
}

static void test_definitions(void **state)
{
    (void)state;
    counter_def d = parse_ok("{\"name\":\"labs.24h-x\",\"type\":\"lab\",\"max_window\":\"72h\"}");
    buf j = {0};
    counter_def_json(&d, &j);
    buf_putc(&j, 0);
    assert_string_equal(j.data, "{\"name\":\"labs.24h-x\",\"type\":\"lab\",\"max_window\":\"3d\",\"resolution\":\"1s\","
                                "\"per_parent\":false}");
    counter_def again = parse_ok(j.data);
    assert_true(counter_def_same(&d, &again));
    counter_def_free(&again);
    counter_def_free(&d);
    buf_free(&j);
    d = parse_ok("{\"name\":\"n\",\"where\":{\"in\":[\"a\",2,true,null],\"field\":\"x\"},\"max_window\":\"1h\","
                 "\"resolution\":\"1m\",\"per_parent\":true,\"max_parent_buckets\":2048}");
    assert_int_equal(d.op, WHERE_IN);
    assert_int_equal(d.nvalues, 4);
    assert_int_equal(d.max_parent_buckets, 2048);
    assert_true(counter_where_holds(&d, "\"a\"", 3, JSON_STRING));
    assert_true(counter_where_holds(&d, "2.0", 3, JSON_NUMBER));
    assert_true(counter_where_holds(&d, "true", 4, JSON_TRUE));
    assert_true(counter_where_holds(&d, "null", 4, JSON_NULL));
    assert_false(counter_where_holds(&d, "false", 5, JSON_FALSE));
    assert_false(counter_where_holds(&d, "\"b\"", 3, JSON_STRING));
    assert_false(counter_where_holds(&d, "[\"a\"]", 5, JSON_ARRAY));
    assert_false(counter_where_holds(&d, NULL, 0, JSON_NONE));
    counter_def_free(&d);
    d = parse_ok("{\"name\":\"c\",\"where\":{\"field\":\"notes\",\"contains\":\"Chest Pain\"},\"max_window\":\"1h\"}");
    const char *notes = "\"acute CHEST pain, \\u00e9\"";
    assert_true(counter_where_holds(&d, notes, strlen(notes), JSON_STRING));
    assert_false(counter_where_holds(&d, "\"chest\"", 7, JSON_STRING));
    assert_false(counter_where_holds(&d, "42", 2, JSON_NUMBER));
    counter_def_free(&d);
    d = parse_ok("{\"name\":\"e\",\"where\":{\"field\":\"x\",\"exists\":false},\"max_window\":\"1h\"}");
    assert_true(counter_where_holds(&d, NULL, 0, JSON_NONE));
    assert_true(counter_where_holds(&d, "null", 4, JSON_NULL));
    assert_false(counter_where_holds(&d, "1", 1, JSON_NUMBER));
    counter_def_free(&d);

    /* numbers compare as the numbers they write, exactly: not as doubles, which take 2^53 + 1 for 2^53, nor cut
     * at 63 characters */
    d = parse_ok("{\"name\":\"big\",\"where\":{\"field\":\"mrn\",\"in\":[9007199254740993,1,0,-2.5,1e2]},"
                 "\"max_window\":\"1h\"}");
    static const char *const same[] = {"9007199254740993",
                                       "9.007199254740993e15",
                                       "90071992547409930e-1",
                                       "1",
                                       "1.0",
                                       "10e-1",
                                       "0.1e1",
                                       "0",
                                       "-0",
                                       "-0.0",
                                       "0e5",
                                       "-2.5",
                                       "-25e-1",
                                       "100",
                                       "1E2",
                                       "1e+2",
                                       "1.00000000000000000000000000000000000000000000000000000000000000000"};
    static const char *const other[] = {"9007199254740992",
                                        "9007199254740994",
                                        "90071992547409931e-1",
                                        "-1",
                                        "1.1",
                                        "0.01",
                                        "2.5",
                                        "-2.05",
                                        "1000",
                                        "1e3",
                                        "1.00000000000000000000000000000000000"
                                        "000000000000000000000000000000001"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (counter_where_holds(&d, other[i], strlen(other[i]), JSON_NUMBER)) fail_msg("%s: matched", other[i]);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (!counter_where_holds(&d, same[i], strlen(same[i]), JSON_NUMBER)) fail_msg("%s: not matched", same[i]);
    counter_def_free(&d);

    /* a repeated key replaces the earlier one (nothing of it leaks: ASan) */
    d = parse_ok("{\"name\":\"r\",\"where\":{\"field\":\"a\",\"in\":[1,2]},\"type\":\"x\",\"type\":\"y\","
                 "\"where\":{\"field\":\"b\",\"contains\":\"z\"},\"max_window\":\"1h\"}");
    assert_int_equal(d.op, WHERE_CONTAINS);
    assert_string_equal(d.type, "y");
    counter_def_free(&d);

    /* each refusal names its key, and never echoes a value */
    refused("{\"type\":\"lab\",\"max_window\":\"1h\"}", "\"name\"", NULL);
    refused("{\"name\":\"a b\",\"max_window\":\"1h\"}", "\"name\"", NULL);
    refused("{\"name\":\"a\"}", "\"max_window\"", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"soon\"}", "\"max_window\"", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"90s\",\"resolution\":\"1m\"}", "multiple", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"30d\"}", "\"resolution\"", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"resolution\":\"500ms\"}", "\"resolution\"", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"colour\":1}", "colour", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"name\",\"equals\":\"Jane Doe\",\"in\":[]}}",
            "not two", "Jane");
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"equals\":\"Jane Doe\"}}", "where.field", "Jane");
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"x\",\"equals\":{\"Jane\":1}}}",
            "where.equals", "Jane");
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"x\",\"in\":[]}}", "where.in", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"x\",\"contains\":\"\"}}", "where.contains",
            NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"x\",\"exists\":1}}", "where.exists", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"x\"}}", "one of", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"max_parent_buckets\":5000}", "per_parent", NULL);
    refused("{\"name\":\"a\",\"max_window\":\"1h\",\"per_parent\":true,\"max_parent_buckets\":5}", "max_parent_buckets",
            NULL);
    refused("[1]", "JSON object", NULL);
    /* a URL path segment that clients resolve away: GET /v1/counters/.. is sent as GET /v1/ */
    refused("{\"name\":\".\",\"max_window\":\"1h\"}", "\"name\"", NULL);
    refused("{\"name\":\"..\",\"max_window\":\"1h\"}", "\"name\"", NULL);
    d = parse_ok("{\"name\":\"...\",\"max_window\":\"1h\"}");
    counter_def_free(&d);
}

static void test_public_or_phi_by_schema(void **state)
{
    (void)state;
    schema sc;
    schema_default(&sc); /* public: favorite_color, type, ts */
    counter_def d = parse_ok("{\"name\":\"a\",\"type\":\"lab\",\"max_window\":\"1h\"}");
    assert_true(counter_def_public(&d, &sc));
    counter_def_free(&d);
    d = parse_ok("{\"name\":\"a\",\"where\":{\"field\":\"favorite_color\",\"equals\":\"blue\"},\"max_window\":\"1h\"}");
    assert_true(counter_def_public(&d, &sc));
    counter_def_free(&d);
    d = parse_ok(
        "{\"name\":\"a\",\"type\":\"lab\",\"where\":{\"field\":\"status\",\"exists\":true},\"max_window\":\"1h\"}");
    assert_false(counter_def_public(&d, &sc));
    counter_def_free(&d);
    schema_free(&sc);
    ms_err e;
    const char *no_type = "{\"public\":{\"favorite_color\":\"copy\"}}";
    assert_int_equal(schema_parse(&sc, no_type, strlen(no_type), &e), MS_OK);
    d = parse_ok("{\"name\":\"a\",\"type\":\"lab\",\"max_window\":\"1h\"}");
    assert_false(counter_def_public(&d, &sc)); /* the type is PHI in this schema */
    counter_def_free(&d);
    schema_free(&sc);
    /* a type published transformed: "type" compares the stored one, so the counter reads PHI; a where on the
     * type compares the published value, and stays public */
    const char *pseudo = "{\"public\":{\"favorite_color\":\"copy\",\"type\":\"pseudonym\"}}";
    assert_int_equal(schema_parse(&sc, pseudo, strlen(pseudo), &e), MS_OK);
    d = parse_ok("{\"name\":\"a\",\"type\":\"hiv-test\",\"max_window\":\"1h\"}");
    assert_false(counter_def_public(&d, &sc));
    counter_def_free(&d);
    d = parse_ok("{\"name\":\"a\",\"where\":{\"field\":\"type\",\"equals\":\"0a1b\"},\"max_window\":\"1h\"}");
    assert_true(counter_def_public(&d, &sc));
    counter_def_free(&d);
    schema_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_against_brute_force),
        cmocka_unit_test(test_per_parent_exact_within_the_cap),
        cmocka_unit_test(test_per_parent_beyond_the_cap_is_flagged),
        cmocka_unit_test(test_bucket_edges_and_refusals),
        cmocka_unit_test(test_future_counts_when_its_time_comes),
        cmocka_unit_test(test_load_refuses_other_shapes),
        cmocka_unit_test(test_load_refuses_damaged_counts),
        cmocka_unit_test(test_empty_state_file),
        cmocka_unit_test(test_state_schema_version),
        cmocka_unit_test(test_definitions),
        cmocka_unit_test(test_public_or_phi_by_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

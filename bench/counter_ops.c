/*
 * counter_ops.c - what one counter operation costs in process (src/views/counter.h), the part of a
 * counter query and of the follower's work per record that does not depend on the store or HTTP:
 *   - counter_add (+1 at a random event time: 90 % in the window, 5 % late, 5 % future), per record;
 *   - counter_count over a random window up to max_window at a random `at` (p50, p99, max over the
 *     samples), everything and per parent;
 *   - counter_save (the counter's part of the restart state: its time under the counter's lock, its size);
 * for a 72h counter at 1s (259,200 buckets: the worst a 72h counter can be) and at 1m, filled with
 * EVENTS events over 20,000 parents. Every latency is kept; percentiles are nearest-rank.
 * Build and run: make bench-counter-ops [EVENTS=2000000]
 */
#include "views/counter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp);
    printf("  %-34s p50 %6.3f us  p99 %6.3f us  max %7.3f us  (%zu samples)\n", what, v[n / 2] * 1e6,
           v[(size_t)(0.99 * (double)(n - 1))] * 1e6, v[n - 1] * 1e6, n);
}

static void one(const char *label, int64_t res, int64_t window, uint64_t events)
{
    const int64_t SEC = 1000000;
    uint64_t seed = 42;
    int64_t now = (int64_t)time(NULL) * SEC;
    counter *c = counter_new(res, window, 1u << 20);
    printf("%s (%lld buckets):\n", label, (long long)(window / res));
    char parent[32];
    double t0 = now_s();
    for (uint64_t i = 0; i < events; i++) {
        uint64_t r = ms_splitmix64(&seed);
        int64_t ts = now - (int64_t)(r % (uint64_t)window);
        if (r % 20 == 0) ts -= window;                                     /* late */
        if (r % 20 == 1) ts = now + (int64_t)(r % (uint64_t)(3600 * SEC)); /* future */
        int pl = snprintf(parent, sizeof parent, "visit-%llu", (unsigned long long)(r >> 40) % 20000);
        counter_add(c, ts, 1, parent, (size_t)pl, now, now);
    }
    double add = (now_s() - t0) / (double)events;
    printf("  counter_add (with per-parent)      %6.3f us each (mean of %llu)\n", add * 1e6,
           (unsigned long long)events);
    enum { N = 200000 };
    double *lat = malloc(sizeof *lat * N);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            uint64_t r = ms_splitmix64(&seed);
            int64_t w = (1 + (int64_t)(r % (uint64_t)(window / res - 60))) * res;
            int64_t at = now - (int64_t)((r >> 20) % (uint64_t)(window - w + 1));
            int pl = snprintf(parent, sizeof parent, "visit-%llu", (unsigned long long)(r >> 40) % 20000);
            counter_answer a;
            ms_err e;
            double q0 = now_s();
            ms_code rc = counter_count(c, w, at, now, pass ? parent : NULL, pass ? (size_t)pl : 0, &a, &e);
            lat[i] = now_s() - q0;
            if (rc != MS_OK) {
                fprintf(stderr, "counter_ops: %s\n", e.msg);
                exit(1);
            }
        }
        report(pass ? "counter_count per parent" : "counter_count", lat, N);
    }
    buf saved = {0};
    double s0 = now_s();
    counter_save(c, &saved);
    printf("  counter_save                       %6.3f ms, %.1f MB (the restart state of this counter)\n",
           (now_s() - s0) * 1e3, (double)saved.len / 1e6);
    buf_free(&saved);
    counter_stats st;
    counter_stats_get(c, &st);
    printf("  memory %.1f MB (%llu parent pairs, %llu future buckets, %llu late)\n", (double)st.memory / 1e6,
           (unsigned long long)st.parent_buckets, (unsigned long long)st.future_buckets, (unsigned long long)st.late);
    free(lat);
    counter_free(c);
}

int main(int argc, char **argv)
{
    uint64_t events = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
    const int64_t SEC = 1000000;
    one("72h at 1s", SEC, 72 * 3600 * SEC, events);
    one("72h at 1m", 60 * SEC, 72 * 3600 * SEC, events);
    return 0;
}

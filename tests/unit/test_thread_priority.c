/*
 * test_thread_priority.c - what a thread asks of the scheduler (src/base/thread_priority.h), read back
 * from the kernel: nice values (getpriority) and the fair class's slice (sched_getattr: sched_runtime is
 * the thread's slice on Linux >= 6.12, where a custom slice exists; older kernels only get the nice
 * value checked). Each case runs in a fresh thread, since an unprivileged thread cannot lower its nice
 * value again.
 */
#include "unit.h"

#include "base/thread_priority.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

typedef struct {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
} attr0;

typedef struct {
    thread_kind steps[3];
    int nsteps;
    bool ok;          /* what the last call returned */
    int nice;         /* getpriority after the steps */
    uint64_t runtime; /* sched_getattr's sched_runtime after the steps */
} probe;

static void *run(void *arg)
{
    probe *p = arg;
    for (int i = 0; i < p->nsteps; i++)
        p->ok = thread_priority_set(p->steps[i]);
    errno = 0;
    p->nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    attr0 a = {0};
    if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) == 0) p->runtime = a.runtime;
    return NULL;
}

static probe in_thread(int n, thread_kind k0, thread_kind k1, thread_kind k2)
{
    probe p = {.steps = {k0, k1, k2}, .nsteps = n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run, &p), 0);
    pthread_join(t, NULL);
    return p;
}

static bool custom_slices(void) /* Linux >= 6.12 */
{
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
    return major > 6 || (major == 6 && minor >= 12);
}

static bool privileged(void) { return geteuid() == 0; }

static void test_latency_gets_a_short_slice_at_nice_0(void **state)
{
    (void)state;
    probe p = in_thread(1, THREAD_LATENCY, 0, 0);
    assert_true(p.ok);
    assert_int_equal(p.nice, 0);
    if (custom_slices()) assert_int_equal(p.runtime, (uint64_t)THREAD_LATENCY_SLICE_US * 1000);
}

static void test_bulk_is_niced_with_the_default_slice(void **state)
{
    (void)state;
    probe p = in_thread(1, THREAD_BULK, 0, 0);
    assert_true(p.ok);
    assert_int_equal(p.nice, THREAD_BULK_NICE);
    if (custom_slices()) assert_true(p.runtime > (uint64_t)THREAD_LATENCY_SLICE_US * 1000);
}

/* a connection's thread serves a read, then a bulk request, then goes back to normal */
static void test_kinds_follow_each_other(void **state)
{
    (void)state;
    probe p = in_thread(2, THREAD_LATENCY, THREAD_BULK, 0);
    assert_int_equal(p.nice, THREAD_BULK_NICE);
    if (custom_slices()) assert_true(p.runtime > (uint64_t)THREAD_LATENCY_SLICE_US * 1000);
    p = in_thread(3, THREAD_LATENCY, THREAD_BULK, THREAD_NORMAL);
    if (privileged()) {
        assert_true(p.ok);
        assert_int_equal(p.nice, 0);
    } else { /* may not lower its nice value again: says so, and keeps what it has */
        assert_false(p.ok);
        assert_int_equal(p.nice, THREAD_BULK_NICE);
    }
    if (custom_slices()) assert_true(p.runtime > (uint64_t)THREAD_LATENCY_SLICE_US * 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latency_gets_a_short_slice_at_nice_0),
        cmocka_unit_test(test_bulk_is_niced_with_the_default_slice),
        cmocka_unit_test(test_kinds_follow_each_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

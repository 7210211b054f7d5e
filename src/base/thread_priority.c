/*
 * thread_priority.c - nice values and scheduler slices of the calling thread (see thread_priority.h).
 */
#include "base/thread_priority.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* struct sched_attr (SCHED_ATTR_SIZE_VER0): glibc has no wrapper for sched_setattr. */
struct slice_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

bool thread_priority_set(thread_kind kind)
{
    /* the kind this thread was last set to (-1: none, or the last call was refused): a connection's thread
     * serving read after read makes its two system calls once, not per request */
    static _Thread_local int now = -1;
    if (now == (int)kind) return true;
    now = -1;
    pid_t tid = gettid();
    int nice = kind == THREAD_BULK ? THREAD_BULK_NICE : 0;
    bool ok = setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0;
    if (!ok) {
        errno = 0;
        nice = getpriority(PRIO_PROCESS, (id_t)tid); /* keep what we have: sched_setattr sets both */
        if (errno) return false;
    }
    struct slice_attr a = {.size = sizeof a,
                           .policy = SCHED_OTHER,
                           .nice = nice,
                           .runtime = kind == THREAD_LATENCY ? (uint64_t)THREAD_LATENCY_SLICE_US * 1000 : 0};
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0 || !ok) return false;
    now = (int)kind;
    return true;
}

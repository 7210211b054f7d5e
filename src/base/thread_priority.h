/*
 * thread_priority.h - a thread says what kind of work it does, and the CPU scheduler is told.
 *
 * DESIGN: on two cores shared by ingest and reads, a point read's tail is mostly waiting for a CPU (an
 * I/O completion or a request arriving wakes a thread that then queues behind busy ones). Two levers,
 * both per thread and both available without privileges:
 *   - bulk work (receiving and parsing megabytes, a load generator's senders) runs at nice 10, so it
 *     takes what the rest leaves;
 *   - latency work (point reads) keeps nice 0 and asks for a short scheduler slice (SCHED_OTHER with
 *     sched_attr.sched_runtime: the EEVDF "custom slice" of Linux >= 6.12). Its weight, so its share of
 *     the CPU, is unchanged; an earlier virtual deadline lets it run first when it wakes, instead of
 *     waiting for the running thread's slice to end. Older kernels ignore the slice.
 * Measured on this machine (README "Point reads"): at 1,000,000 records/min of 20 KB, point read p99
 * 3.3-3.5 ms without the short slice, 1.9-2.2 ms with it (server and load generator's reader).
 *
 * Contract: best effort. Each call sets the calling thread only; a refusal (an unprivileged thread
 * cannot lower its nice value back from 10) leaves what the kernel allowed and returns false. Only this
 * call changes these settings: a call asking for the kind the thread already has does nothing.
 * Must never: change another thread, or raise any thread above nice 0 or into a real-time class.
 */
#ifndef MS_THREAD_PRIORITY_H
#define MS_THREAD_PRIORITY_H

#include <stdbool.h>

typedef enum {
    THREAD_NORMAL,  /* nice 0, the kernel's default slice */
    THREAD_BULK,    /* nice THREAD_BULK_NICE, the default slice */
    THREAD_LATENCY, /* nice 0, a slice of THREAD_LATENCY_SLICE_US */
} thread_kind;

#define THREAD_BULK_NICE 10
#define THREAD_LATENCY_SLICE_US 100 /* the kernel's smallest custom slice */

bool thread_priority_set(thread_kind kind);

#endif

/*
 * counter.h - the counting structure of one rolling-window counter (issue 13): +1 / -1 at an event time,
 * and the exact count of event times in any window (at - window, at] up to the counter's max_window, in
 * O(log B) per change and per query for B buckets fixed at creation; optionally per parent record id, in
 * bounded memory. Pure: no I/O, no clock, no locks (the caller passes `now` and serializes calls).
 *
 * TIME. Event times are cut into buckets of the resolution r; bucket k holds the event times in
 * ((k-1)r, kr] (so that the window's closed end `at` and open start `at - window` fall on bucket edges).
 * A query rounds `at` down to the resolution: it counts the buckets of (to - window, to] where
 * to = floor(at / r) * r, and answers that exact interval (from, to). `window` must be a positive
 * multiple of r. With W = max_window / r and m = floor(now / r), the counter holds:
 *   - the ring: buckets m-W+1 .. m+1 (W+1 of them: the last max_window, and the bucket `now` is in);
 *   - the future: any bucket after m+1 (event times to come), in a hash map with a min-heap of its
 *     buckets, moved into the ring as `now` reaches them;
 *   - nothing older than m-W+1: a change there cannot be asked for any more and is dropped. A +1 whose
 *     bucket was already out of the window when it was committed (its commit time's m) counts in
 *     `late` (medstream_counter_late_total); one that aged out only while waiting to be applied does not.
 * `now` only moves forward (a clock stepping back keeps the later m). A query may end at any `at` <= now
 * whose window starts at or after (m - W) * r.
 *
 * WHY A FENWICK TREE. The issue asks O(1) per event and per query, "a ring of buckets with a running
 * total, or better". A running total answers only the one window max_window; any window up to it is a
 * range sum over the ring, and keeping both updates and arbitrary range sums O(1) is impossible in
 * general (dynamic prefix sums need Omega(log n / log log n) per operation: Fredman and Saks, 1989). The
 * ring is therefore a Fenwick (binary indexed) tree over its W+1 slots: an update or a prefix sum is at
 * most ceil(log2(W+1)) steps (19 for 72h at 1s, 13 at 1m), a window is two or three prefix sums. B is
 * fixed by the definition, so the cost per event and per query is bounded by a constant of the counter,
 * a few hundred nanoseconds; the bucket a slot held is cleared (one point read, one update) when the
 * ring moves past it, amortized one slot per tick of the resolution.
 *
 * PER PARENT (counter_def.per_parent). A hash of parent id -> a sorted array of (bucket, count), entries
 * with a non-zero count only, pruned as buckets leave the ring. At most max_parent_buckets (parent,
 * bucket) pairs are kept. A +1 that needs a new pair when that many are held (after pruning every aged
 * pair, which is done at most once per tick of the resolution: nothing more ages in between) is not kept: the counter
 * remembers the range of buckets such changes were lost in (the gap, oldest and newest), and a per-parent query whose
 * window overlaps the gap is answered `incomplete` (the caller says so, or counts another way) until the gap leaves the
 * ring. A per-parent answer is never silently wrong: it is exact or flagged.
 *
 * MEMORY (bytes, 64-bit): the ring 8 x (W+1) (72h at 1s: 2.07 MB; at 1m: 34.6 KB); the future about 40
 * per distinct future bucket; per parent about 80 + the id's length + 32 per pair held (arrays double),
 * with at most max_parent_buckets pairs (65,536 by default: ~5-8 MB with 36-byte ids). counter_memory
 * gives the figure of a live counter.
 *
 * Contract: not thread-safe (one lock per counter, in counters.c); every call is bounded by the sizes
 * above; nothing here reads or writes a record (counts and bucket numbers only; parent ids are kept as
 * given, never logged).
 */
#ifndef MS_COUNTER_H
#define MS_COUNTER_H

#include "base/util.h"

typedef struct counter counter;

/* A counter of buckets of resolution_us over max_window_us (a multiple of it); max_parent_buckets 0: no
 * per-parent counts. */
counter *counter_new(int64_t resolution_us, int64_t max_window_us, uint32_t max_parent_buckets);
void counter_free(counter *c);

/* Apply +1 (delta 1) or -1 (delta -1) at event time ts, committed at commit_time, as of now; parent
 * (may be NULL / 0) for the per-parent counts. */
void counter_add(counter *c, int64_t ts, int delta, const char *parent, size_t parent_len, int64_t commit_time,
                 int64_t now);
/* Move the ring to now (queries and adds do it themselves). */
void counter_advance(counter *c, int64_t now);

typedef struct {
    int64_t from, to; /* the interval counted: (from, to] */
    int64_t count;
    bool incomplete; /* per parent: changes in this window were not kept (memory cap): count is a floor */
} counter_answer;

/* The count of (at - window, at] rounded as TIME says, over everything or (parent) one parent's. Errors
 * (MS_EINVAL, message naming the parameter): a window that is not a positive multiple of the resolution
 * or is longer than max_window; an `at` after now; a window that starts before the oldest bucket held;
 * a parent on a counter without per-parent counts. */
ms_code counter_count(counter *c, int64_t window_us, int64_t at, int64_t now, const char *parent, size_t parent_len,
                      counter_answer *out, ms_err *e);

typedef struct {
    uint64_t late;           /* +1s whose bucket had left the window at commit */
    uint64_t future_buckets; /* distinct buckets after now */
    uint64_t parents;        /* parents with a pair held */
    uint64_t parent_buckets; /* pairs held */
    uint64_t parent_dropped; /* +1s not kept per parent (the cap) */
    size_t memory;           /* bytes held, as MEMORY says */
} counter_stats;
void counter_stats_get(const counter *c, counter_stats *out);

/* The state as bytes (the ring's non-zero buckets, the future, the per-parent pairs, late, the ring's
 * position), to be loaded into a counter of the same resolution and window. */
void counter_save(const counter *c, buf *out);
/* Replace c's state with a saved one, then advance to now. Errors: MS_ECORRUPT bytes that are not a
 * saved state of a counter of this resolution and window (c is then left empty). */
ms_code counter_load(counter *c, const void *data, size_t len, int64_t now, ms_err *e);

/* The bucket of an event time: ceil(ts / resolution), exact for negative times too. */
int64_t counter_bucket(int64_t ts, int64_t resolution_us);

#endif

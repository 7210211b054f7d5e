/*
 * metrics.h - the core's counters and histograms (ingest, commits, HTTP, reads), and a registry where
 * the optional subsystems (the Kafka source, the PostgreSQL sink) add their own sections: each keeps its
 * own state and renders it; nothing here knows them. Rendered as Prometheus text.
 *
 * Contract: updates are lock-free atomics, safe from any thread, cheap enough for the hot path.
 * Labels are fixed enumerations: no metric label ever carries a value taken from a record (PHI).
 */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include "base/util.h"

#include <stdatomic.h>

#define HIST_BUCKETS 14

typedef struct {
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
    _Atomic uint64_t bucket[HIST_BUCKETS]; /* cumulative upper bounds in hist_bounds_s */
} histogram;

typedef struct {
    _Atomic uint64_t records_created, records_updated, records_duplicate, records_rejected;
    _Atomic uint64_t batches, commits, ingest_bytes, commit_failures, requests, http_errors;
    _Atomic uint64_t state_recomputes;        /* patient states recomputed from their records (writer.h) */
    _Atomic uint64_t state_recompute_records; /* record bodies read back for them */
    _Atomic uint64_t recompute_prefetches;    /* bodies asked for ahead of a recompute (ingest.c) */
    histogram commit_seconds;                 /* one group commit (writes + fsyncs) */
    /* the group commits' time by phase, summed (µs): applying the records (CPU and the tree pages it reads),
     * waiting for their bodies' writes, the segment log's and keys file's fdatasync, LMDB's commit */
    _Atomic uint64_t commit_apply_us, commit_bodies_us, commit_sync_us, commit_lmdb_us;
    histogram freshness_seconds; /* request fully received -> visible to reads */
    histogram read_seconds;      /* PHI and public reads */
    _Atomic uint64_t commit_position;
    _Atomic uint64_t patients;
} metrics;

extern metrics g_metrics;

void histogram_observe(histogram *h, double seconds);

/* A running subsystem (the store's writer, the Kafka source, the PostgreSQL sink) that keeps its own
 * state and says it itself: its metrics after the core's, and its part of /healthz with its own policy
 * of what counts as degraded. Register at start, unregister before ctx goes; the callbacks run under the
 * registry's lock (quick, no registering) and never put a record's value in what they write. */
typedef struct {
    const char *name;
    void (*metrics)(void *ctx, buf *out); /* its samples (metrics_counter, ...); may be NULL */
    bool (*health)(void *ctx, buf *out);  /* `,"member":...` pairs; false while degraded; may be NULL */
    void *ctx;
} subsystem;
void subsystem_register(const subsystem *s);
void subsystem_unregister(const void *ctx);
/* /healthz: {"status":"ok"|"degraded", the members of every subsystem in registration order}. */
void health_render(buf *out);

/* Prometheus text for one metric (HELP, TYPE, sample), for the sections. */
void metrics_counter(buf *out, const char *name, const char *help, uint64_t v);
void metrics_gauge(buf *out, const char *name, const char *help, uint64_t v);
void metrics_histogram(buf *out, const char *name, const char *help, const histogram *h);
/* Prometheus text exposition of everything, plus process figures (/proc/self). */
void metrics_render(buf *out);
/* Name the data directory, so that /metrics can report its block device's write counter. */
void metrics_set_data_dir(const char *dir);

#endif

/*
 * metrics.h - process-wide counters and histograms, rendered as Prometheus text.
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

typedef enum { PG_STATE_OFF, PG_STATE_OK, PG_STATE_UNREACHABLE, PG_STATE_FAILING } pg_state;

typedef struct {
    _Atomic uint64_t records_created, records_updated, records_duplicate, records_rejected;
    _Atomic uint64_t batches, commits, ingest_bytes, commit_failures, requests, http_errors;
    _Atomic uint64_t state_recomputes;        /* patient states recomputed from their records (writer.h) */
    _Atomic uint64_t state_recompute_records; /* record bodies read back for them */
    histogram commit_seconds;    /* one group commit (writes + fsyncs) */
    histogram freshness_seconds; /* request fully received -> visible to reads */
    histogram read_seconds;      /* PHI and public reads */
    _Atomic uint64_t kafka_messages, kafka_dead_letters;
    _Atomic uint64_t kafka_lag;    /* messages behind the high watermarks of the assigned partitions */
    _Atomic int kafka_unreachable; /* the consumer cannot reach any broker: /healthz says degraded */
    _Atomic int postgres_state;       /* pg_state: the PostgreSQL sink, for /healthz and /metrics */
    _Atomic uint64_t postgres_lag;    /* commits not yet shipped to PostgreSQL */
    _Atomic uint64_t postgres_lag_ms; /* age of the oldest of them */
    _Atomic uint64_t postgres_rows;   /* rows shipped */
    histogram postgres_freshness_seconds; /* commit in the store -> committed in PostgreSQL */
    _Atomic uint64_t commit_position;
    _Atomic uint64_t patients;
} metrics;

extern metrics g_metrics;

void histogram_observe(histogram *h, double seconds);
/* Prometheus text exposition of everything, plus process figures (/proc/self). */
void metrics_render(buf *out);
/* Name the data directory, so that /metrics can report its block device's write counter. */
void metrics_set_data_dir(const char *dir);

#endif

/*
 * metrics.c - counters, histograms and the Prometheus exposition (see metrics.h).
 */
#include "base/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

metrics g_metrics;
static char device_stat_path[64]; /* /sys/dev/block/MAJ:MIN/stat of the data directory's device */

void metrics_set_data_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) return;
    snprintf(device_stat_path, sizeof device_stat_path, "/sys/dev/block/%u:%u/stat", major(st.st_dev),
             minor(st.st_dev));
}

/* Sectors written (field 7 of the block device's stat) in bytes; false if unavailable. */
static bool device_written(unsigned long long *bytes)
{
    if (!device_stat_path[0]) return false;
    FILE *f = fopen(device_stat_path, "r");
    if (!f) return false;
    unsigned long long v[7];
    bool ok = fscanf(f, "%llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) == 7;
    fclose(f);
    if (ok) *bytes = v[6] * 512;
    return ok;
}

static const double hist_bounds_s[HIST_BUCKETS] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                   0.1,    0.2,   0.5,   1,     2,    5,    10};

void histogram_observe(histogram *h, double seconds)
{
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(seconds * 1e6), memory_order_relaxed);
    for (int i = 0; i < HIST_BUCKETS; i++)
        if (seconds <= hist_bounds_s[i]) atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
}

void metrics_histogram(buf *out, const char *name, const char *help, const histogram *h)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < HIST_BUCKETS; i++)
        buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, hist_bounds_s[i],
                   (unsigned long long)atomic_load(&h->bucket[i]));
    uint64_t count = atomic_load(&h->count);
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)count, name,
               (double)atomic_load(&h->sum_us) / 1e6, name, (unsigned long long)count);
}

static unsigned long long proc_value(const char *file, const char *key)
{
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    char line[256];
    unsigned long long v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0) {
            sscanf(line + kl, " %llu", &v);
            break;
        }
    }
    fclose(f);
    return v;
}

void metrics_counter(buf *out, const char *name, const char *help, uint64_t v)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

void metrics_gauge(buf *out, const char *name, const char *help, uint64_t v)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

#define SUBSYSTEMS_MAX 8
static subsystem subsystems[SUBSYSTEMS_MAX];
static int nsubsystems;
static pthread_mutex_t subsystems_lock = PTHREAD_MUTEX_INITIALIZER;

void subsystem_register(const subsystem *s)
{
    pthread_mutex_lock(&subsystems_lock);
    if (nsubsystems < SUBSYSTEMS_MAX) subsystems[nsubsystems++] = *s;
    pthread_mutex_unlock(&subsystems_lock);
}

void subsystem_unregister(const void *ctx)
{
    pthread_mutex_lock(&subsystems_lock);
    for (int i = 0; i < nsubsystems; i++) {
        if (subsystems[i].ctx != ctx) continue;
        memmove(&subsystems[i], &subsystems[i + 1], sizeof subsystems[0] * (size_t)(nsubsystems - i - 1));
        nsubsystems--;
        break;
    }
    pthread_mutex_unlock(&subsystems_lock);
}

void health_render(buf *out)
{
    buf members = {0};
    bool ok = true;
    pthread_mutex_lock(&subsystems_lock);
    for (int i = 0; i < nsubsystems; i++)
        if (subsystems[i].health && !subsystems[i].health(subsystems[i].ctx, &members)) ok = false;
    pthread_mutex_unlock(&subsystems_lock);
    buf_printf(out, "{\"status\":\"%s\"", ok ? "ok" : "degraded");
    if (members.len) buf_put(out, members.data, members.len);
    buf_putc(out, '}');
    buf_free(&members);
}

void metrics_render(buf *out)
{
    metrics *m = &g_metrics;
    buf_puts(out,
             "# HELP medstream_records_total Records ingested, by outcome.\n# TYPE medstream_records_total counter\n");
    buf_printf(out, "medstream_records_total{status=\"created\"} %llu\n",
               (unsigned long long)atomic_load(&m->records_created));
    buf_printf(out, "medstream_records_total{status=\"updated\"} %llu\n",
               (unsigned long long)atomic_load(&m->records_updated));
    buf_printf(out, "medstream_records_total{status=\"duplicate\"} %llu\n",
               (unsigned long long)atomic_load(&m->records_duplicate));
    buf_printf(out, "medstream_records_total{status=\"rejected\"} %llu\n",
               (unsigned long long)atomic_load(&m->records_rejected));
    metrics_counter(out, "medstream_batches_total", "Ingest batches (requests) committed.", atomic_load(&m->batches));
    metrics_counter(out, "medstream_commits_total", "Group commits (one fsync'd LMDB transaction each).",
                    atomic_load(&m->commits));
    metrics_counter(out, "medstream_commit_failures_total", "Group commits that failed (disk full, I/O error).",
                    atomic_load(&m->commit_failures));
    metrics_counter(out, "medstream_state_recomputes_total",
                    "Patient states recomputed from their records (a record moved, deleted, or replaced by a version "
                    "that gives up a value it held).",
                    atomic_load(&m->state_recomputes));
    metrics_counter(out, "medstream_state_recompute_records_total", "Record bodies read back for those recomputations.",
                    atomic_load(&m->state_recompute_records));
    metrics_counter(out, "medstream_recompute_prefetches_total",
                    "Record bodies asked of the disk when a batch arrived, ahead of the recomputations it will cause.",
                    atomic_load(&m->recompute_prefetches));
    metrics_counter(out, "medstream_ingest_bytes_total", "Request body bytes accepted for ingest.",
                    atomic_load(&m->ingest_bytes));
    metrics_counter(out, "medstream_http_requests_total", "HTTP requests answered.", atomic_load(&m->requests));
    metrics_counter(out, "medstream_http_errors_total", "HTTP answers with status >= 400.",
                    atomic_load(&m->http_errors));
    metrics_histogram(out, "medstream_commit_seconds", "Time of one group commit (segment write+fsync, LMDB commit).",
                      &m->commit_seconds);
    buf_puts(out, "# HELP medstream_commit_phase_seconds_total Group commits' time by phase: applying the records, "
                  "waiting for their bodies' writes, the segment log's fdatasync, LMDB's commit.\n"
                  "# TYPE medstream_commit_phase_seconds_total counter\n");
    const char *phases[] = {"apply", "bodies", "sync", "lmdb"};
    const _Atomic uint64_t *phase_us[] = {&m->commit_apply_us, &m->commit_bodies_us, &m->commit_sync_us,
                                          &m->commit_lmdb_us};
    for (int i = 0; i < 4; i++)
        buf_printf(out, "medstream_commit_phase_seconds_total{phase=\"%s\"} %.6f\n", phases[i],
                   (double)atomic_load(phase_us[i]) / 1e6);
    metrics_histogram(out, "medstream_freshness_seconds", "From request received to visible in queries.",
                      &m->freshness_seconds);
    metrics_histogram(out, "medstream_read_seconds", "Time to answer a read (PHI or public).", &m->read_seconds);
    metrics_gauge(out, "medstream_commit_position", "Position of the last committed batch in the commit log.",
                  atomic_load(&m->commit_position));
    metrics_gauge(out, "medstream_patients", "Patients known.", atomic_load(&m->patients));
    metrics_gauge(out, "medstream_process_disk_write_bytes",
                  "Bytes this process caused to be written to storage (/proc/self/io).",
                  proc_value("/proc/self/io", "write_bytes:"));
    unsigned long long dev;
    if (device_written(&dev))
        metrics_counter(out, "medstream_disk_device_write_bytes",
                        "Bytes written to the data directory's block device by everyone (what reached the disk).", dev);
    metrics_gauge(out, "medstream_process_rss_bytes", "Resident set size.",
                  proc_value("/proc/self/status", "VmRSS:") * 1024);
    metrics_gauge(out, "medstream_process_peak_rss_bytes", "Peak resident set size (includes mapped LMDB pages).",
                  proc_value("/proc/self/status", "VmHWM:") * 1024);
    metrics_gauge(out, "medstream_process_anon_rss_bytes",
                  "Resident memory of the process's own (heap, stacks, the body cache; excludes mapped files).",
                  (proc_value("/proc/self/status", "RssAnon:") + proc_value("/proc/self/status", "RssShmem:")) * 1024);
    pthread_mutex_lock(&subsystems_lock); /* the running subsystems' own (Kafka, PostgreSQL) */
    for (int k = 0; k < nsubsystems; k++)
        if (subsystems[k].metrics) subsystems[k].metrics(subsystems[k].ctx, out);
    pthread_mutex_unlock(&subsystems_lock);
}

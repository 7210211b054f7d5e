/*
 * reproject.c - schema versions at start and the re-projection thread (see reproject.h).
 */
#include "ingest/reproject.h"

#include "base/log.h"
#include "base/metrics.h"
#include "pipeline/projection.h"
#include "pipeline/record_scan.h"
#include "pipeline/schema_canon.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DROP_STEP 2048    /* copies of old versions deleted per transaction */
#define COMPACT_STEP 1024 /* sequence numbers of the patient log per compaction transaction */

struct reprojector {
    reproject_options o;
    schema previous; /* the version in force's schema while re-projecting (writer_set_previous_schema) */
    bool have_previous;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool stopping, finished; /* finished: no re-projection left (done, abandoned, or none) */
    _Atomic uint32_t version, target;
    _Atomic uint64_t done, total;
    _Atomic bool compacting;    /* the patient log's compaction may have work (until the thread's end) */
    _Atomic uint64_t compacted; /* entries of the log it looked at so far */
};

/* ---- the copies, computed under the target's schema (projection.h) ---- */

static ms_code record_copy(void *ctx, const record_version *rv, const char *ident, size_t ident_len, buf *fields,
                           ms_err *e)
{
    reprojector *r = ctx;
    buf body = {0};
    arena mem = {0};
    ms_code rc = store_record_body(r->o.store, rv, &body, e);
    if (rc == MS_OK) {
        char *text = arena_strndup(&mem, body.data, body.len);
        record_field *f;
        uint32_t n;
        if (record_scan_fields(text, body.len, &mem, &f, &n) != NULL)
            rc = ms_fail(e, MS_ECORRUPT, "re-projection: a stored record body is not a JSON object");
        else {
            projection_who pw = {store_deid_key(r->o.store), ident_len ? ident : NULL, ident_len};
            projection_record(r->o.schema, &pw, rv->ts_us, f, n, fields);
        }
    }
    arena_free(&mem);
    buf_free(&body);
    return rc;
}

static ms_code patient_copy(void *ctx, const patient_version *pv, const char *ident, size_t ident_len, buf *fields,
                            ms_err *e)
{
    reprojector *r = ctx;
    uint32_t cap = pv->nfields ? pv->nfields : 1, nneed = 0;
    const char **vals = calloc(cap, sizeof *vals), **read = calloc(cap, sizeof *read);
    state_field *need = malloc(sizeof *need * cap);
    uint32_t *slot = malloc(sizeof *slot * cap);
    for (uint32_t i = 0; i < pv->nfields; i++)
        if (projection_patient_reads(r->o.schema, &pv->fields[i])) {
            need[nneed] = pv->fields[i];
            slot[nneed++] = i;
        }
    buf scratch = {0};
    ms_code rc = nneed ? store_field_values(r->o.store, need, nneed, read, &scratch, e) : MS_OK;
    if (rc == MS_OK) {
        for (uint32_t k = 0; k < nneed; k++)
            vals[slot[k]] = read[k];
        projection_who pw = {store_deid_key(r->o.store), ident_len ? ident : NULL, ident_len};
        projection_patient(r->o.schema, &pw, pv->fields, pv->nfields, vals, fields);
    }
    buf_free(&scratch);
    free(slot);
    free(need);
    free(read);
    free(vals);
    return rc;
}

/* ---- health and metrics (no PHI: numbers only) ---- */

static void rp_metrics(void *ctx, buf *out)
{
    reprojector *r = ctx;
    metrics_gauge(out, "medstream_schema_version", "The schema version public reads answer under.",
                  atomic_load(&r->version));
    metrics_gauge(out, "medstream_schema_reprojecting_to",
                  "The schema version the public copies are being re-projected to (0: none).", atomic_load(&r->target));
    metrics_gauge(out, "medstream_reprojection_done", "Stored versions walked by the re-projection under way.",
                  atomic_load(&r->done));
    metrics_gauge(out, "medstream_reprojection_total", "Stored versions the re-projection under way walks.",
                  atomic_load(&r->total));
    metrics_gauge(out, "medstream_log_compacting",
                  "1 while the patient log's compaction after a switch of schema versions may have work.",
                  atomic_load(&r->compacting));
    metrics_gauge(out, "medstream_log_compaction_entries",
                  "Patient log entries the compaction has looked at since the start.", atomic_load(&r->compacted));
}

static bool rp_health(void *ctx, buf *out)
{
    reprojector *r = ctx;
    uint32_t t = atomic_load(&r->target);
    buf_printf(out, ",\"schema\":{\"version\":%u,\"reprojecting\":", atomic_load(&r->version));
    if (t)
        buf_printf(out, "{\"to\":%u,\"done\":%llu,\"total\":%llu}}", t, (unsigned long long)atomic_load(&r->done),
                   (unsigned long long)atomic_load(&r->total));
    else
        buf_puts(out, "null}");
    return true; /* a re-projection is not a degradation: reads answer under the previous version */
}

static void publish(reprojector *r, const store_schema_status *st)
{
    atomic_store(&r->version, st->in_force);
    atomic_store(&r->target, st->target);
    atomic_store(&r->done, st->done);
    atomic_store(&r->total, st->total);
}

/* ---- the thread ---- */

static bool stopping(reprojector *r)
{
    pthread_mutex_lock(&r->lock);
    bool s = r->stopping;
    pthread_mutex_unlock(&r->lock);
    return s;
}

/* Sleep up to ms or until stopped; false when stopped. */
static bool nap(reprojector *r, long ms)
{
    struct timespec until = ms_deadline(CLOCK_REALTIME, ms);
    pthread_mutex_lock(&r->lock);
    while (!r->stopping && pthread_cond_timedwait(&r->cv, &r->lock, &until) == 0) {
    }
    bool go = !r->stopping;
    pthread_mutex_unlock(&r->lock);
    return go;
}

static void set_finished(reprojector *r)
{
    pthread_mutex_lock(&r->lock);
    r->finished = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->lock);
}

static void *rp_main(void *arg)
{
    reprojector *r = arg;
    store_reproject_fns fns = {record_copy, patient_copy, r};
    uint32_t target = atomic_load(&r->target);
    double t0 = ms_mono_s();
    uint64_t walked = 0, first_done = atomic_load(&r->done);
    while (target && !stopping(r)) {
        store_schema_status st;
        bool finished;
        ms_err e = {0};
        if (store_reproject_step(r->o.store, target, &fns, r->o.step, &finished, &st, &e) != MS_OK) {
            ms_log(LOG_ERROR, "schema.reproject_failed", "re-projection to schema version %u: %s (retrying)", target,
                   e.msg);
            if (!nap(r, 1000)) break;
            continue;
        }
        publish(r, &st);
        walked = st.done > first_done ? st.done - first_done : walked;
        if (!finished && r->o.rate) { /* --reproject-rate: sleep off what is ahead of the rate */
            double ahead = (double)walked / r->o.rate - (ms_mono_s() - t0);
            if (ahead > 0 && !nap(r, (long)(ahead * 1000))) break;
        }
        if (finished) {
            ms_log(LOG_INFO, "schema.switched",
                   "public copies re-projected: schema version %u in force (%llu entries in %.1f s)", st.in_force,
                   (unsigned long long)st.done, ms_mono_s() - t0);
            target = 0;
        }
    }
    if (!target) set_finished(r);
    /* the copies of versions no longer in force */
    uint64_t dropped = 0;
    while (!target && !stopping(r)) {
        bool finished;
        uint64_t n;
        ms_err e = {0};
        if (store_schema_drop_step(r->o.store, DROP_STEP, &finished, &n, &e) != MS_OK) {
            ms_log(LOG_ERROR, "schema.cleanup_failed", "deleting old public copies: %s (retrying)", e.msg);
            if (!nap(r, 1000)) break;
            continue;
        }
        dropped += n;
        if (finished) break;
    }
    if (dropped)
        ms_log(LOG_INFO, "schema.cleaned", "%llu public copies of old schema versions deleted",
               (unsigned long long)dropped);
    /* and their copies in the patient log: the compaction moves the log's old part, less those copies
     * (store.h, store_plog_compact_step) */
    store_compact_stats sum = {0};
    double c0 = ms_mono_s();
    uint32_t step = r->o.rate && r->o.rate < COMPACT_STEP ? r->o.rate : COMPACT_STEP;
    while (!target && !stopping(r)) {
        bool finished;
        store_compact_stats st;
        ms_err e = {0};
        double s0 = ms_mono_s();
        if (store_plog_compact_step(r->o.store, step, &finished, &st, &e) != MS_OK) {
            ms_log(LOG_ERROR, "schema.compaction_failed", "compacting the patient log: %s (retrying)", e.msg);
            if (!nap(r, 1000)) break;
            continue;
        }
        if (!sum.looked && st.looked)
            ms_log(LOG_INFO, "schema.log_compacting", "compacting the patient log from entry %llu",
                   (unsigned long long)st.from);
        sum.looked += st.looked, sum.moved += st.moved, sum.dropped += st.dropped, sum.stubbed += st.stubbed;
        sum.bytes += st.bytes;
        atomic_store(&r->compacted, sum.looked);
        if (finished) break;
        /* Leave LMDB's writer lock free at least as long as the step held it: the lock is not fair, and
         * steps back to back starved the ingest writer (measured: freshness p99 671 ms at 1 M/min while
         * the compaction ran, 36 ms after). */
        double ahead = ms_mono_s() - s0;
        double behind = r->o.rate ? (double)sum.looked / r->o.rate - (ms_mono_s() - c0) : 0;
        if (behind > ahead) ahead = behind; /* --reproject-rate paces the compaction too (entries a second) */
        if (!nap(r, 1 + (long)(ahead * 1000))) break;
    }
    atomic_store(&r->compacting, false);
    if (sum.looked)
        ms_log(LOG_INFO, "schema.log_compacted",
               "patient log compacted: %llu entries looked at, %llu moved, %llu public copies of old schema "
               "versions dropped and %llu made stubs (%llu bytes) in %.1f s",
               (unsigned long long)sum.looked, (unsigned long long)sum.moved, (unsigned long long)sum.dropped,
               (unsigned long long)sum.stubbed, (unsigned long long)sum.bytes, ms_mono_s() - c0);
    return NULL;
}

/* ---- start and stop ---- */

static ms_code canonical_text(const reproject_options *o, buf *canon, ms_err *e)
{
    if (!o->schema_file) {
        buf_puts(canon, SCHEMA_DEFAULT_CANONICAL);
        return MS_OK;
    }
    buf text = {0};
    ms_code rc = buf_read_settings_file(&text, o->schema_file, e);
    if (rc == MS_OK) rc = schema_canonical(text.data ? text.data : "", text.len, canon, e);
    buf_free(&text);
    return rc;
}

ms_code reproject_schema_in_force(store *s, schema *out, uint32_t *sv, bool *have, ms_err *e)
{
    *have = false;
    store_read *r;
    store_schema_status st;
    ms_code rc = store_read_begin(s, &r, e);
    if (rc != MS_OK) return rc;
    rc = store_schema_status_get(r, &st, e);
    buf text = {0};
    bool found = false;
    if (rc == MS_OK) {
        *sv = st.in_force;
        if (st.target && st.target != st.in_force) rc = store_schema_text(r, st.in_force, &text, &found, e);
    }
    store_read_end(r);
    if (rc == MS_OK && found) { /* (not found: never, the registration keeps each text) */
        ms_err pe;
        if (schema_parse(out, text.data, text.len, &pe) != MS_OK)
            rc = ms_fail(e, MS_EINVAL, "schema version %u (in force) no longer parses: %s", st.in_force, pe.msg);
        else
            *have = true;
    }
    buf_free(&text);
    return rc;
}

ms_code reproject_start(reprojector **out, const reproject_options *o, ms_err *e)
{
    *out = NULL;
    buf canon = {0};
    store_schema_status st;
    ms_code rc = canonical_text(o, &canon, e);
    if (rc == MS_OK) rc = store_schema_register(o->store, canon.data, canon.len, &st, e);
    buf_free(&canon);
    if (rc != MS_OK) return rc;
    reprojector *r = ms_calloc(1, sizeof *r);
    r->o = *o;
    if (!r->o.step) r->o.step = 512;
    if (r->o.rate && r->o.step > r->o.rate) r->o.step = r->o.rate;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cv, NULL);
    publish(r, &st);
    if (st.target) {
        /* the writer keeps the version in force projected with its own schema until the switch */
        uint32_t sv;
        rc = reproject_schema_in_force(o->store, &r->previous, &sv, &r->have_previous, e);
        if (rc != MS_OK) {
            reproject_stop(r);
            return rc;
        }
        if (o->writer) writer_set_previous_schema(o->writer, r->have_previous ? &r->previous : NULL);
        ms_log(LOG_INFO, "schema.reprojecting",
               "the schema differs from version %u in force: re-projecting the public copies to version %u",
               st.in_force, st.target);
    } else {
        r->finished = true;
    }
    subsystem_register(&(subsystem){"schema", rp_metrics, rp_health, r});
    if (o->run) {
        atomic_store(&r->compacting, true);
        if (pthread_create(&r->thread, NULL, rp_main, r) != 0) {
            reproject_stop(r);
            return ms_fail(e, MS_EIO, "cannot start the re-projection thread");
        }
        r->started = true;
    }
    *out = r;
    return MS_OK;
}

bool reproject_wait(reprojector *r)
{
    pthread_mutex_lock(&r->lock);
    while (!r->finished && !r->stopping)
        pthread_cond_wait(&r->cv, &r->lock);
    bool ok = r->finished;
    pthread_mutex_unlock(&r->lock);
    return ok;
}

void reproject_stop(reprojector *r)
{
    if (!r) return;
    subsystem_unregister(r);
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->lock);
    if (r->started) pthread_join(r->thread, NULL);
    if (r->have_previous) schema_free(&r->previous);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cv);
    free(r);
}

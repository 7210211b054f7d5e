/*
 * writer.c - the single writer thread and group commit (see writer.h).
 */
#include "writer.h"

#include "deidentify.h"
#include "merge.h"
#include "metrics.h"
#include "timefmt.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WRITER_GROUP_BYTES ((size_t)256 << 20)

struct writer {
    store *store;
    const schema *schema;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    ingest_job *head, *tail;
    buf audit; /* pending audit entries (the members of each, NUL-separated) */
    bool stopping;
};

const char *item_status_name(item_status s)
{
    switch (s) {
    case ITEM_CREATED: return "created";
    case ITEM_UPDATED: return "updated";
    case ITEM_DUPLICATE: return "duplicate";
    case ITEM_REJECTED: return "rejected";
    }
    return "?";
}

/* One record through resolution, versioning, merge and the public copies. */
static ms_code apply_record(writer *wr, store_write *sw, ingest_job *job, uint64_t *body_pos, const parsed_record *r,
                            item_result *res, arena *mem, ms_err *e)
{
    ms_code rc;
    record_version prev;
    bool have_prev;
    if ((rc = store_record_latest(sw, r->record_id, r->record_id_len, &prev, &have_prev, e))) return rc;
    if (have_prev && memcmp(prev.content_hash, r->content_hash, 16) == 0) {
        res->status = ITEM_DUPLICATE;
        res->pid = prev.pid;
        res->version = prev.version;
        return MS_OK;
    }
    /* resolve the patient */
    patient_ref who;
    bool known;
    if ((rc = store_ident_get(sw, r->identity_key, r->identity_key_len, &who, &known, e))) return rc;
    patient_version pv;
    bool have_pv = false;
    if (known && (rc = store_patient_latest(sw, &who, &pv, mem, &have_pv, e))) return rc;
    merge_result m;
    merge_patient_state(wr->schema, have_pv ? pv.fields : NULL, have_pv ? pv.nfields : 0, r, 0, mem, &m);
    if (m.nfields > PATIENT_MAX_FIELDS) {
        res->status = ITEM_REJECTED;
        res->error = "the patient would have more than 4096 distinct fields";
        return MS_OK;
    }
    if (!known && (rc = store_patient_create(sw, r->identity_key, r->identity_key_len, &who, e))) return rc;
    if (*body_pos == UINT64_MAX) {
        if ((rc = store_append_body(wr->store, job->body, job->body_write_len, body_pos, e))) return rc;
    }
    uint64_t rpos = *body_pos + (uint64_t)(r->body - job->body);
    int64_t now = store_write_time(sw);

    record_version rv = {0};
    memcpy(rv.record_id, r->record_id, r->record_id_len);
    rv.record_id_len = r->record_id_len;
    rv.version = have_prev ? prev.version + 1 : 1;
    rv.valid_from = now;
    rv.valid_to = -1;
    rv.pid = who.id;
    rv.patient_number = who.number;
    rv.ts_us = r->ts_us;
    memcpy(rv.type, r->type, r->type_len);
    rv.type_len = r->type_len;
    rv.body_pos = rpos;
    rv.body_len = r->body_len;
    rv.body_hash = r->body_hash;
    memcpy(rv.content_hash, r->content_hash, 16);
    if ((rc = store_record_put(sw, &rv, time_year(r->ts_us), r->public_fields, r->public_fields_len, e))) return rc;

    /* the patient's new state: the merge above, with the record's real position */
    merge_patient_state(wr->schema, have_pv ? pv.fields : NULL, have_pv ? pv.nfields : 0, r, rpos, mem, &m);
    if (!have_pv || m.changed) {
        patient_version next = {.pid = who.id,
                                .number = who.number,
                                .version = have_pv ? pv.version + 1 : 1,
                                .valid_from = now,
                                .valid_to = -1,
                                .cause_record = r->record_id,
                                .cause_record_len = r->record_id_len,
                                .source = job->source,
                                .source_len = (uint32_t)strlen(job->source),
                                .fields = m.fields,
                                .nfields = m.nfields};
        if ((rc = store_patient_put(sw, &next, e))) return rc;
        if (!have_pv || m.public_changed) {
            buf prev_pub = {0}, pub = {0};
            bool have_pub;
            rc = store_public_patient_latest(sw, &who, &prev_pub, &have_pub, e);
            if (rc == MS_OK) {
                deid_patient_fields(wr->schema, have_pub ? prev_pub.data : NULL, have_pub ? prev_pub.len : 0, r, &pub);
                if (!have_pub || pub.len != prev_pub.len || memcmp(pub.data, prev_pub.data, pub.len) != 0)
                    rc = store_public_patient_put(sw, &who, next.version, pub.data, pub.len, e);
            }
            buf_free(&prev_pub);
            buf_free(&pub);
            if (rc) return rc;
        }
    }
    res->status = have_prev ? ITEM_UPDATED : ITEM_CREATED;
    res->pid = who.id;
    res->version = rv.version;
    return MS_OK;
}

static int pid_cmp(const void *a, const void *b) { return memcmp(a, b, sizeof(patient_id)); }

/* The batch's audit entry: who ingested, the distinct patients it touched, the outcome. */
static ms_code audit_job(store_write *sw, const ingest_job *j, ms_err *e)
{
    patient_id *pids = ms_malloc(sizeof *pids * (j->batch->n ? j->batch->n : 1));
    uint32_t n = 0;
    for (uint32_t i = 0; i < j->batch->n; i++)
        if (j->results[i].status != ITEM_REJECTED) pids[n++] = j->results[i].pid;
    qsort(pids, n, sizeof *pids, pid_cmp);
    uint32_t d = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!d || memcmp(&pids[d - 1], &pids[i], sizeof *pids) != 0) pids[d++] = pids[i];
    audit_event ev = {.time_us = ms_now_us(),
                      .user = j->user,
                      .role = j->role,
                      .action = "records:create",
                      .resource = j->resource,
                      .outcome = "ok",
                      .client = j->client,
                      .patients = pids,
                      .npatients = d};
    buf m = {0};
    audit_event_json(&ev, &m);
    ms_code rc = store_audit_append(sw, m.data, m.len, e);
    buf_free(&m);
    free(pids);
    return rc;
}

static void process_group(writer *wr, ingest_job *group, const buf *audit)
{
    double t0 = ms_mono_s();
    store_write *sw = NULL;
    ms_err e = {0};
    ms_code rc = store_write_begin(wr->store, &sw, &e);
    arena mem = {0};
    for (size_t at = 0; rc == MS_OK && at < audit->len;) { /* entries of reads since the last commit */
        size_t n = strlen(audit->data + at);
        rc = store_audit_append(sw, audit->data + at, n, &e);
        at += n + 1;
    }
    for (ingest_job *j = group; j && rc == MS_OK; j = j->next) {
        uint64_t body_pos = j->body_pos;
        for (uint32_t i = 0; i < j->batch->n && rc == MS_OK; i++) {
            const parsed_record *r = &j->batch->records[i];
            item_result *res = &j->results[i];
            memset(res, 0, sizeof *res);
            if (r->rejected) {
                res->status = ITEM_REJECTED;
                continue;
            }
            rc = apply_record(wr, sw, j, &body_pos, r, res, &mem, &e);
        }
        if (rc == MS_OK) rc = audit_job(sw, j, &e);
        for (int i = 0; rc == MS_OK && i < j->noffsets; i++)
            rc = store_kafka_offset_put(sw, j->offsets[i].topic, j->offsets[i].partition, j->offsets[i].next, &e);
    }
    arena_free(&mem);
    uint64_t pos = 0;
    if (rc == MS_OK)
        rc = store_write_commit(sw, &pos, &e);
    else
        store_write_abort(sw);
    double t1 = ms_mono_s();
    if (rc == MS_OK) {
        histogram_observe(&g_metrics.commit_seconds, t1 - t0);
        atomic_fetch_add(&g_metrics.commits, 1);
        atomic_store(&g_metrics.commit_position, pos);
    } else {
        atomic_fetch_add(&g_metrics.commit_failures, 1);
    }
    for (ingest_job *j = group; j; j = j->next) {
        j->rc = rc;
        j->err = e;
        j->commit_pos = pos;
        if (rc != MS_OK) continue;
        histogram_observe(&g_metrics.freshness_seconds, t1 - j->received_at);
        atomic_fetch_add(&g_metrics.batches, 1);
        atomic_fetch_add(&g_metrics.ingest_bytes, j->body_len);
        for (uint32_t i = 0; i < j->batch->n; i++) {
            switch (j->results[i].status) {
            case ITEM_CREATED: atomic_fetch_add(&g_metrics.records_created, 1); break;
            case ITEM_UPDATED: atomic_fetch_add(&g_metrics.records_updated, 1); break;
            case ITEM_DUPLICATE: atomic_fetch_add(&g_metrics.records_duplicate, 1); break;
            case ITEM_REJECTED: atomic_fetch_add(&g_metrics.records_rejected, 1); break;
            }
        }
    }
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    pthread_setname_np(pthread_self(), "ms-writer");
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->audit.len && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        if (!w->head && !w->audit.len && w->stopping) break;
        /* take a group: every job waiting, up to the byte budget, and every pending audit entry */
        ingest_job *group = w->head, *last = group;
        if (group) {
            size_t bytes = group->body_len;
            while (last->next && bytes + last->next->body_len <= WRITER_GROUP_BYTES) {
                last = last->next;
                bytes += last->body_len;
            }
            w->head = last->next;
            if (!w->head) w->tail = NULL;
            last->next = NULL;
        }
        buf audit = w->audit;
        w->audit = (buf){0};
        pthread_mutex_unlock(&w->lock);
        process_group(w, group, &audit);
        buf_free(&audit);
        pthread_mutex_lock(&w->lock);
        for (ingest_job *j = group; j; j = j->next)
            j->done = true;
        pthread_cond_broadcast(&w->done);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

ms_code writer_start(writer **out, store *s, const schema *sc, ms_err *e)
{
    writer *w = ms_calloc(1, sizeof *w);
    w->store = s;
    w->schema = sc;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->done, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        free(w);
        return ms_fail(e, MS_EIO, "cannot start the writer thread");
    }
    *out = w;
    return MS_OK;
}

void writer_stop(writer *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    buf_free(&w->audit);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->done);
    free(w);
}

void writer_audit(writer *w, const audit_event *ev)
{
    buf m = {0};
    audit_event_json(ev, &m);
    pthread_mutex_lock(&w->lock);
    buf_put(&w->audit, m.data, m.len + 1); /* with its NUL: entries are NUL-separated */
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    buf_free(&m);
}

void writer_submit(writer *w, ingest_job *job)
{
    job->done = false;
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        job->rc = ms_fail(&job->err, MS_ESTOPPED, "server is shutting down");
        return;
    }
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->wake);
    while (!job->done)
        pthread_cond_wait(&w->done, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

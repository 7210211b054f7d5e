/*
 * ingest.c - the one ingest path (see ingest.h for the durability order).
 */
#include "ingest/ingest.h"

#include "base/metrics.h"

size_t ingest_padded_len(size_t len) { return (len + STORE_BODY_ALIGN - 1) & ~(size_t)(STORE_BODY_ALIGN - 1); }

scan_config ingest_scan_config(const ingest_ctx *c)
{
    scan_config cfg = {.schema = c->schema,
                       .max_record = c->max_record,
                       .now_us = ms_now_us(),
                       .id_key = store_id_key(c->store),
                       .deid_key = store_deid_key(c->store)};
    return cfg;
}

static bool nothing_to_store(const ingest_job *job) { return job->batch->rejected == job->batch->n; }

/* Each record's seal item (job->seals, in the batch's arena). */
static void seals_of(ingest_job *job)
{
    record_batch *b = job->batch;
    if (!job->seals) job->seals = arena_alloc(&b->mem, sizeof *job->seals * b->n);
    for (uint32_t i = 0; i < b->n; i++) {
        const parsed_record *r = &b->records[i];
        job->seals[i] = r->rejected ? (seal_item){0}
                                    : (seal_item){.body = r->body,
                                                  .len = r->body_len,
                                                  .identity_key = r->identity_key,
                                                  .identity_key_len = r->identity_key_len};
    }
}

ms_code ingest_append(const ingest_ctx *c, ingest_job *job, ms_err *e)
{
    job->body_pos = UINT64_MAX;
    if (nothing_to_store(job)) return MS_OK;
    seals_of(job);
    ms_code rc = store_append_sealed(c->store, job->seals, job->batch->n, &job->body_pos, e);
    if (rc != MS_OK) {
        job->body_pos = UINT64_MAX;
        writer_note_failure(c->writer, e, job->body_write_len);
    }
    return rc;
}

ms_code ingest_store(const ingest_ctx *c, ingest_job *job, ms_err *e)
{
    if (nothing_to_store(job) && job->noffsets == 0) { /* every line rejected: nothing to append or commit */
        for (uint32_t i = 0; i < job->batch->n; i++)
            job->results[i] = (item_result){.status = ITEM_REJECTED};
        atomic_fetch_add(&g_metrics.records_rejected, job->batch->n);
        return MS_OK;
    }
    if (job->body_pos != UINT64_MAX || nothing_to_store(job)) { /* appended already, or nothing to append */
        writer_submit(c->writer, job);
    } else { /* steps 2 and 3 side by side: the writer applies the batch while its bodies are sealed */
        seals_of(job);
        store_sealing *sg;
        ms_code rc = store_seal_begin(c->store, job->seals, job->batch->n, &sg, &job->body_pos, e);
        if (rc != MS_OK) {
            job->body_pos = UINT64_MAX;
            writer_note_failure(c->writer, e, job->body_write_len);
            return rc;
        }
        writer_enqueue(c->writer, job);
        ms_err ae = {0};
        rc = store_seal_end(c->store, sg, job->seals, job->batch->n, &ae);
        if (rc != MS_OK) writer_note_failure(c->writer, &ae, job->body_write_len);
        writer_appended(c->writer, job, rc, &ae);
        writer_wait(c->writer, job);
    }
    if (job->rc != MS_OK) *e = job->err;
    return job->rc;
}

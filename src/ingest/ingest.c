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

ms_code ingest_append(const ingest_ctx *c, ingest_job *job, ms_err *e)
{
    job->body_pos = UINT64_MAX;
    if (nothing_to_store(job)) return MS_OK;
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
    ms_code rc = store_append_sealed(c->store, job->seals, b->n, &job->body_pos, e);
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
    ms_code rc; /* (a batch of only rejected lines with positions: nothing to append, the positions to commit) */
    if (job->body_pos == UINT64_MAX && !nothing_to_store(job) && (rc = ingest_append(c, job, e)) != MS_OK) return rc;
    writer_submit(c->writer, job);
    if (job->rc != MS_OK) *e = job->err;
    return job->rc;
}

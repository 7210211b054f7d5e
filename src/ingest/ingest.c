/*
 * ingest.c - the one ingest path (see ingest.h for the durability order).
 */
#include "ingest/ingest.h"

#include "base/metrics.h"
#include "pipeline/merge.h"

#include <string.h>

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

/* How many records a recompute's prefetch asks for, newest first. The recompute reads the newest records until
 * every field of the state is decided (record_sources.h): one or two where a patient's records hold the same
 * fields, all of them where a field is held by few. This covers the common case without asking for the bodies of
 * a patient's whole history. */
#define PREFETCH_NEWEST 8

typedef struct {
    store *store;
    const char *skip; /* the record being replaced: not read by the recompute */
    size_t skip_len;
    int left; /* records still to ask for */
} prefetch_ctx;

static bool prefetch_one(void *ctx, const record_version *rv)
{
    prefetch_ctx *px = ctx;
    if (rv->record_id_len != px->skip_len || memcmp(rv->record_id, px->skip, px->skip_len) != 0) {
        store_record_prefetch(px->store, rv);
        atomic_fetch_add(&g_metrics.recompute_prefetches, 1);
        px->left--;
    }
    return px->left > 0;
}

/* A hint for the writer. A record that replaces a version holding values it does not override makes the
 * writer merge the patient again from its other live records (writer.c, recompute), reading their bodies
 * one after another on its thread. Asked for here, before the batch is handed over (an HTTP batch's while
 * its bodies are sealed; a Kafka or import batch's once they are appended, ingest_append, while it waits
 * for its stage), those reads run side by side with the writer finishing the commit before. It asks the question the
 * writer will (merge_replacing_recomputes) of the committed state; a record earlier in the batch
 * may change the answer, which costs a read or a wait, never a result. Reads only. Only for batches of
 * records of PREFETCH_MIN_RECORD bytes or more on average: small records' older bodies are mostly still in
 * the segment log's recent bytes, and there the lookups cost the request threads more than they save the
 * writer (200 B records: -3 % records/min in 2 pairs; 20 KB at 1 M/min: the writer's apply -30 %). */
#define PREFETCH_MIN_RECORD 4096

static void prefetch_recomputes(const ingest_ctx *c, const ingest_job *job)
{
    store_read *r;
    ms_err e;
    if (job->body_len < (size_t)job->batch->n * PREFETCH_MIN_RECORD || store_read_begin(c->store, &r, &e) != MS_OK)
        return;
    for (uint32_t i = 0; i < job->batch->n; i++) {
        const parsed_record *rec = &job->batch->records[i];
        record_version prev;
        bool found;
        if (rec->rejected ||
            store_record_at(r, rec->record_id, rec->record_id_len, INT64_MAX, &prev, &found, &e) != MS_OK || !found ||
            prev.deleted || memcmp(prev.content_hash, rec->content_hash, 16) == 0)
            continue;
        arena mem = {0};
        patient_version pv;
        merge_source cur = {.fields = rec->fields,
                            .nfields = rec->nfields,
                            .body = rec->body,
                            .body_len = rec->body_len,
                            .body_pos = job->body_pos + job->seals[i].offset,
                            .ts = rec->ts_us,
                            .valid_from = INT64_MAX, /* committed after everything stored */
                            .sealer = prev.patient_number + 1};
        if (store_patient_at(r, &prev.pid, INT64_MAX, &pv, &mem, &found, &e) == MS_OK && found &&
            merge_replacing_recomputes(pv.fields, pv.nfields, prev.body_pos, prev.body_len, &cur)) {
            prefetch_ctx px = {c->store, rec->record_id, rec->record_id_len, PREFETCH_NEWEST};
            (void)store_live_records(r, &prev.pid, INT64_MAX, INT64_MAX, prefetch_one, &px, &e);
        }
        arena_free(&mem);
    }
    store_read_end(r);
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
    } else {
        prefetch_recomputes(c, job); /* Kafka's and import's batches wait for the writer after this */
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
        prefetch_recomputes(c, job);
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

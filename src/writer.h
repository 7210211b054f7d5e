/*
 * writer.h - stage 4: the one writer. Request threads hand it scanned batches; it resolves patients,
 * versions records and patients, builds the public copies, and commits groups of batches durably.
 *
 * DESIGN: a queue and one thread (LMDB allows one write transaction at a time, and identity
 * resolution must be serialized so that one identity gets one id). Each loop takes every job waiting
 * (group commit: many concurrent requests share one fsync) up to WRITER_GROUP_BYTES of bodies, runs them
 * through one store transaction and commits it. A job is answered only after its commit is durable and
 * visible; if the commit fails, every job of the group fails with the same error and nothing of them is
 * stored. Sources (HTTP now; Kafka and imports later) all submit the same ingest_job.
 */
#ifndef MS_WRITER_H
#define MS_WRITER_H

#include "audit.h"
#include "identity.h"
#include "record_scan.h"
#include "schema.h"
#include "store.h"

typedef enum { ITEM_CREATED, ITEM_UPDATED, ITEM_DUPLICATE, ITEM_REJECTED } item_status;
const char *item_status_name(item_status s);

/* A patient's merged state holds at most this many distinct fields; a record that would add more is
 * rejected (the versions of such a patient would grow without bound). */
#define PATIENT_MAX_FIELDS 4096

typedef struct {
    item_status status;
    patient_id pid;
    uint32_t version;
    const char *error; /* static text when the writer rejected the record */
} item_result;

/* A source position to record with the batch (Kafka: topic, partition, next offset). */
typedef struct {
    const char *topic;
    int32_t partition;
    int64_t next;
} source_offset;

typedef struct ingest_job {
    /* in */
    const char *body; /* the request body that the parsed records point into */
    size_t body_len;
    size_t body_write_len; /* bytes to write: >= body_len; a multiple of 4096 lets O_DIRECT skip a copy */
    uint64_t body_pos;     /* where the source already appended the body (store_append_body), or
                              UINT64_MAX to let the writer append it */
    record_batch *batch;
    const char *source;                          /* who sent it, for patient versions ("http 127.0.0.1") */
    const char *user, *role, *client, *resource; /* for the batch's audit entry */
    const source_offset *offsets;                /* written in the same commit as the records (may be NULL) */
    int noffsets;
    double received_at; /* ms_mono_s() when the request was complete */
    /* out */
    item_result *results; /* batch->n entries, allocated by the caller */
    ms_code rc;
    ms_err err;
    uint64_t commit_pos;
    /* writer-private */
    bool done;
    struct ingest_job *next;
} ingest_job;

typedef struct writer writer;

ms_code writer_start(writer **out, store *s, const schema *sc, ms_err *e);
/* Finish queued jobs, then stop the thread. */
void writer_stop(writer *w);
/* Queue the job and wait until it is durable (job->rc MS_OK) or failed. Thread-safe. The job's audit
 * entry (records:create with the patient ids it touched) is committed with it. */
void writer_submit(writer *w, ingest_job *job);
/* Queue an audit entry for the next commit and return at once (reads, logins: see audit.h). */
void writer_audit(writer *w, const audit_event *ev);

#endif

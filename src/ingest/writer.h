/*
 * writer.h - stage 4: the one writer. Sources hand it scanned batches (and the few other changes that
 * must be serialized with them: record deletions, account changes); it resolves patients, versions
 * records and patients, builds the public copies, writes the audit entries, and commits groups of jobs
 * durably.
 *
 * DESIGN: a queue and one thread (LMDB allows one write transaction at a time, and identity
 * resolution must be serialized so that one identity gets one id). Each loop takes every job waiting
 * (group commit: many concurrent requests share one fsync) up to WRITER_GROUP_BYTES of bodies, runs them
 * through one store transaction and commits it. A job is answered only after its commit is durable and
 * visible; if the commit fails, every job of the group fails with the same error and nothing of them is
 * stored. Every source (HTTP, Kafka, the importer) submits the same ingest_job through ingest.h, which
 * appends the body before it submits (the writer never writes bodies; it only has them synced).
 *
 * Audit entries of reads and logins (writer_audit) ride with the next commit; with no job to ride with,
 * they wait WRITER_AUDIT_WINDOW_MS (20 ms) for one, then commit alone. One commit per point read (two
 * device cache flushes each: measured, 190 commits/s at 200 reads/s) made the reads' own tail; the window
 * cut it to the batches' commits plus <= 50 a second. They are never dropped:
 * when a commit fails they stay queued and the writer retries them (with store_probe when it has nothing
 * else) every second until the store can commit again. While it cannot, writer_audit_ok says so and the
 * API refuses PHI reads (503): a PHI read whose audit entry cannot be made durable is not served.
 * (A crash can still lose the entries of reads answered in the last window: at most 20 ms plus a commit.)
 *
 * Patient state follows event time (merge.h). A new version of a record that held winning values of
 * its patient's state, a record that moves to another patient, and a deleted record make the writer
 * recompute the state from the patient's remaining records (reading their bodies; ingest.c asks the disk
 * for them when a batch of large records arrives); otherwise a record costs O(its fields + the state's
 * fields).
 */
#ifndef MS_WRITER_H
#define MS_WRITER_H

#include "access/audit.h"
#include "pipeline/identity.h"
#include "pipeline/record_scan.h"
#include "pipeline/schema.h"
#include "store/store.h"

/* ITEM_FORWARDED: a cluster's record that belongs to another node's shard (ingest/cluster.h), sent on to
 * it instead of stored here. */
typedef enum { ITEM_CREATED, ITEM_UPDATED, ITEM_DUPLICATE, ITEM_REJECTED, ITEM_DELETED, ITEM_FORWARDED } item_status;
const char *item_status_name(item_status s);

/* A patient's merged state holds at most this many distinct fields; a record that would add more is
 * rejected (the versions of such a patient would grow without bound). */
#define PATIENT_MAX_FIELDS 4096
/* Audit entries waiting for a commit, at most (bytes): past it PHI reads are refused like while the
 * store cannot commit. */
#define WRITER_AUDIT_BACKLOG_MAX ((size_t)64 << 20)

typedef struct {
    item_status status;
    patient_id pid;    /* denied: the patient of the record it would have changed (audited, never answered) */
    uint32_t version;
    const char *error; /* when the writer rejected the record (static, or in the batch's arena) */
    bool denied;       /* rejected as a new version sent without records:update: a denied attempt */
} item_result;

/* A source position to record with the batch (Kafka: topic, partition, next offset). */
typedef struct {
    const char *topic;
    int32_t partition;
    int64_t next;
} source_offset;

/* A change run inside the writer's transaction (accounts): write through w, append its audit entry.
 * Returns a store failure (the whole group then fails and is retried by nobody: the caller answers
 * 503); refusals of the change itself (no such user, ...) go back through ctx, having written nothing. */
#define JOB_FORWARDED (UINT64_MAX - 1)
typedef ms_code (*writer_apply_fn)(void *ctx, store_write *w, ms_err *e);

typedef struct ingest_job {
    /* in: a batch of records ... */
    const char *body; /* the request body that the parsed records point into */
    size_t body_len;
    size_t body_write_len; /* bytes to write: >= body_len; a multiple of 4096 lets O_DIRECT skip a copy */
    uint64_t body_pos;     /* where the source appended the body (ingest_append; ingest.h's order) */
    seal_item *seals;      /* batch->n entries (ingest_append): each record's data key and place in the body */
    record_batch *batch;
    bool may_update;              /* the sender holds records:update: a changed record becomes a new version; without it
                                     that line is rejected (a record id that exists cannot be overwritten) */
    bool replay;                  /* rows that may have been stored before (an import reading a file again): a record
                                     whose versions include this content is a duplicate, not a new version, so that a
                                     file holding several versions of a record stores none of them twice (one record
                                     alone: parsed_record.replay) */
    const uint64_t *numbers;      /* a cluster's batch (ingest/cluster.h): each record's patient number, minted per
                                     shard before the batch came here, or JOB_FORWARDED (the record is rejected in
                                     the batch: another node stores it); NULL: this store numbers new patients */
    const source_offset *offsets; /* written in the same commit as the records (may be NULL) */
    int noffsets;
    writer_apply_fn also; /* may be NULL: run in the batch's own transaction after its records (their
                             results final) and before its offsets, for what a source must keep with them
                             (ingest_kafka.c: dead_letters.c's outbox of the writer's dead letters); a failure fails the
                             batch */
    void *also_ctx;
    /* ... or the deletion of one record (results[0] gets ITEM_DELETED, or ITEM_REJECTED: not found) ... */
    const char *delete_id;
    size_t delete_id_len;
    /* ... or any other change (see writer_apply_fn); none of the three: a barrier (writer_sync) */
    writer_apply_fn apply;
    void *apply_ctx;
    /* who, for patient versions ("user u via http 127.0.0.1") and the audit entry */
    const char *source;
    const char *user, *role, *client, *resource;
    double received_at; /* ms_mono_s() when the request was complete */
    /* out */
    item_result *results; /* batch->n entries (1 for a deletion), allocated by the caller */
    ms_code rc;
    ms_err err;
    uint64_t commit_pos;
    int64_t commit_time; /* valid_from of what the job wrote */
    /* the body's seal and write, while the writer applies the batch (writer_enqueue .. writer_appended) */
    bool appending;
    ms_code append_rc;
    ms_err append_err;
    /* writer-private */
    bool done;
    bool dropped; /* its body could not be written: its commit went on without it */
    struct ingest_job *next;
} ingest_job;

typedef struct writer writer;

ms_code writer_start(writer **out, store *s, const schema *sc, ms_err *e);
/* Finish queued jobs, then stop the thread. */
void writer_stop(writer *w);
/* During a re-projection of the public copies to the writer's schema (store.h, "Schema versions"), the
 * schema of the version still in force: the writer writes each new version's copy under both. Set before
 * ingest starts (serve's start-up), or NULL (the writer's schema for both); it must outlive the writer. */
void writer_set_previous_schema(writer *w, const schema *previous);
/* Queue the job and wait until it is durable (job->rc MS_OK) or failed. Thread-safe. A batch's audit
 * entry (records:create with the patient ids it touched) is committed with it, as is a deletion's; a
 * batch whose every line was rejected by the scan (it reaches the writer only to commit its source
 * positions, ingest.h) writes none. */
void writer_submit(writer *w, ingest_job *job);
/* writer_submit in steps, for a batch whose body is still being sealed and written (ingest.c; its
 * body_pos already reserved): enqueue it (the writer may apply it at once, reading its bodies as they are
 * sealed: store_seal_begin), say when its body is written (rc: how that went; a failure fails this batch
 * alone, the others of its commit go again without it), then wait as writer_submit does. The writer
 * commits nothing of it before writer_appended: the durability order (ingest.h) holds. */
void writer_enqueue(writer *w, ingest_job *job);
void writer_appended(writer *w, ingest_job *job, ms_code rc, const ms_err *e);
void writer_wait(writer *w, ingest_job *job);
/* Run fn inside the next commit and wait for it to be durable. */
ms_code writer_apply(writer *w, writer_apply_fn fn, void *ctx, ms_err *e);
/* A named definition (rules, subscriptions, counters defined over the API: store_definition_put, or
 * store_definition_delete when value is NULL) and its audit entry ev (its time is the commit's) in one
 * durable commit. */
ms_code writer_definition(writer *w, const char *kind, const char *name, const char *value, size_t len,
                          const audit_event *ev, ms_err *e);
/* Wait until every audit entry queued before this call is durable (GET /v1/audit reads its writes). */
ms_code writer_sync(writer *w, ms_err *e);
/* Queue an audit entry for the next commit and return at once (reads, logins: see audit.h). */
void writer_audit(writer *w, const audit_event *ev);
/* A source could not store a batch of `bytes` before handing it over (its body append failed): counted
 * as a failed commit, and the store is reported degraded until a batch is stored or a probe finds room. */
void writer_note_failure(writer *w, const ms_err *e, size_t bytes);
/* Can the store take batches? false (with the reason) after a failed commit or append, until a batch is
 * stored again or the writer's probe (every second: store_probe with the failed batch's size) succeeds:
 * /healthz says degraded meanwhile. */
bool writer_healthy(writer *w, ms_err *why);
/* Can audit entries be made durable now? false (with the reason in why) while the store cannot commit
 * or too many entries wait: PHI reads must then be refused. */
bool writer_audit_ok(writer *w, ms_err *why);

#endif

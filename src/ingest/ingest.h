/*
 * ingest.h - the one path every source takes from a body of records to an acknowledgement: HTTP
 * (POST /v1/records), Kafka (a batch of messages laid out as one body) and the importer to come all
 * call these, so that scanning, padding, appending, submitting and counting are written once.
 *
 * THE DURABILITY ORDER (the invariants the tests cite; writer.h and store.h keep their halves):
 *   1. scan: the body is parsed and validated (pipeline/record_scan.h) on the source's own thread;
 *      a bad record is a rejected line, the others go on.
 *   2. append: the source's thread seals the records and writes them, 4 KiB-aligned and zero-padded to a
 *      multiple of 4 KiB, to the segment log with O_DIRECT (store_append_sealed). ingest_store reserves
 *      the bytes first and hands the batch to the writer at once (store_seal_begin, writer_enqueue), so
 *      that the writer applies it while the records are sealed and written (its reads of them wait until
 *      each is sealed); Kafka's batches are appended whole before they are submitted.
 *   3. commit: the writer thread runs the batch through one group commit, which waits until the bodies
 *      of every batch in it are written (writer_appended), then fdatasyncs the segment log BEFORE the LMDB
 *      transaction that refers to the bodies commits (synced). A body that could not be written fails its
 *      own batch; the others of the commit go again without it.
 *   4. answer: only after 3 returned MS_OK is the batch acknowledged (HTTP answer, Kafka offset commit,
 *      import checkpoint); from then on every read sees it. A failure at 2 or 3 stores nothing of the
 *      batch (bytes appended for it stay unreferenced) and is answered as a failure (503 / retry).
 *
 * Contract: thread-safe (any number of sources at once); never answers or acknowledges anything itself.
 */
#ifndef MS_INGEST_H
#define MS_INGEST_H

#include "ingest/writer.h"
#include "pipeline/record_scan.h"
#include "pipeline/schema.h"
#include "store/store.h"

typedef struct {
    store *store;
    writer *writer;
    const schema *schema;
    size_t max_record; /* bytes; a larger record is a rejected line */
} ingest_ctx;

/* The length a body of len bytes is written with: len rounded up to 4 KiB (the buffer must hold that
 * many bytes, zero from len on, and start on a 4 KiB boundary for O_DIRECT to take it without a copy). */
size_t ingest_padded_len(size_t len);

/* Step 1's configuration for this instant (ingest time: the default event time and the "future" limit
 * for dates of birth). */
scan_config ingest_scan_config(const ingest_ctx *c);

/* Step 2 for job (body, body_write_len): append unless every line was rejected; on failure job->body_pos
 * stays UINT64_MAX, the failure is counted and the store reported degraded (writer_note_failure). */
ms_code ingest_append(const ingest_ctx *c, ingest_job *job, ms_err *e);

/* Steps 2-3: append (if job->body_pos is still UINT64_MAX: while the writer applies the batch) and submit,
 * waiting for the commit. A batch of
 * only rejected lines stores nothing and is counted as such; if it carries source positions (job->offsets),
 * those are still committed (nothing else: no body, no audit entry), so a source's position moves past
 * lines it will never store (an import's bad rows, a topic's dead letters). A batch of no lines with
 * positions commits just them. MS_OK: every line of job->results is final and the batch is durable. */
ms_code ingest_store(const ingest_ctx *c, ingest_job *job, ms_err *e);

#endif

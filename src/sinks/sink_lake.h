/*
 * sink_lake.h - a continuous data lake: `serve --lake DIR` writes the public copy of every committed record
 * version as Parquet files under DIR, in the layout and with the columns of a public export's record files
 * (export/README.md), so that one reader (Spark, DuckDB, pyarrow) reads both:
 *
 *   DIR/records/type=lab/year=2026/part-<first commit position, 20 digits>-<n, 5 digits>.parquet
 *   DIR/deletions/part-….parquet      tombstones (DELETE /v1/records/{id}): patient_id, record_id, version
 *   DIR/_medstream/commits             the commits log (lake_log.h): the truth of which files are published
 *   DIR/_medstream/tmp/                files of the roll being written, never visible to a reader
 *   DIR/_medstream/store, lock         the store the lake belongs to; one writer at a time
 *
 * DESIGN: a sink thread that follows the store's commit log (store_log_entry) from its own position, the
 * pattern of sink_kafka_public and sink_postgres, each step in its own short read transaction. A commit's
 * record versions become rows (rows_public_record, from the public copy alone) appended to one open part
 * file per partition (part.h: Parquet through out_file) under DIR/_medstream/tmp; the files of a roll are
 * published together once the oldest commit they hold is roll_seconds old (less the time publishing took
 * lately and 0.1 s, so that the lag stays within the interval) or their rows reach roll_bytes, whichever
 * comes first; while catching up on a backlog, files are filled to roll_bytes (or twice the interval). A
 * new roll starts at the next commit. Patient versions are not in the lake (the public export's
 * patients/ file is a snapshot; a stream of them is left for later).
 *
 * Exactly once across kill -9 (README.md in this folder): publishing a roll is (1) finish every file:
 * flush, fdatasync, rename to its pending name in tmp; (2) append ONE line to the commits log (the files'
 * paths, rows, bytes, SHA-256, and the positions from..to they hold) and fdatasync it: from here on the
 * roll is published; (3) rename each file into place and fsync the directories; (4) save the position in
 * the store (meta "sink:lake"). A start recovers before the thread runs: a torn last line is cut off; the
 * last entry's files not yet in place are renamed from tmp; every other name in tmp is removed; the
 * position is the larger of the store's and the log's last `to`. A crash before (2) loses only the roll
 * (written again from the same position, under the same names); after (2) the roll is finished by the
 * next start. So each record version lands in exactly one visible file.
 *
 * Failures (a full disk, an I/O error): the roll is dropped (its temporary files removed; nothing half
 * written is visible), /healthz says "lake":"failing" with the reason, and the sink retries from its
 * published position every second; a roll whose line is logged but whose renames failed is finished first.
 * A lake whose last entry names a commit this store does not have (a store restored from an older copy)
 * is not written over: "failing", the log says why.
 *
 * Test hook: MEDSTREAM_TEST_LAKE_CRASH=files|log|rename in the environment makes the process SIGKILL itself
 * at that step of its first roll with files (sink_lake.c; tests/e2e/test_lake.py).
 *
 * Must never: write a field outside the public copy (no PHI: the scope is public only), make a file visible
 * before its commits-log line is durable, log a row's value, or slow ingest (own thread, short read
 * transactions, no lock the writer takes but LMDB's for the position, once per roll).
 */
#ifndef MS_SINK_LAKE_H
#define MS_SINK_LAKE_H

#include "pipeline/schema.h"
#include "store/store.h"

typedef struct {
    store *store;
    const schema *schema;   /* the server's; outlives the sink */
    const char *dir;        /* the lake's directory (created if missing) */
    uint64_t roll_seconds;  /* publish once the oldest commit held is this old */
    uint64_t roll_bytes;    /* ... or once the roll's rows hold this many bytes (uncompressed values) */
    const char *created_by; /* Parquet footer: "medstream version X" */
} sink_lake_options;

typedef struct sink_lake sink_lake;

/* Open (and recover) the lake, then start its thread. Errors: MS_ECONFLICT the lake is in use by another
 * process or belongs to another store; MS_ECORRUPT its commits log is damaged beyond a torn last line, or a
 * published file is missing; MS_EIO, MS_EFULL the directory cannot be made or recovered. The message names the lake's
 * paths, never a value. */
ms_code sink_lake_start(sink_lake **out, const sink_lake_options *o, ms_err *e);
/* Publish the roll in hand (a clean stop leaves nothing unpublished), then stop. NULL is a no-op. */
void sink_lake_stop(sink_lake *l);

#endif

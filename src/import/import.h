/*
 * import.h - `medstream import`: a file of records (NDJSON, or CSV with a header row; plain, gzip or
 * zstd) into a store, as a source of the one ingest path. Four destinations:
 *   - offline (--data DIR): the caller has opened the store (taking the directory's lock, owner
 *     "import") and started its writer; batches go through ingest.h with the import's position written
 *     in the same commit as each batch (source positions: checkpoint.h);
 *   - a running server (--url URL --token T): batches are POSTed to /v1/records with the file's
 *     identity (import_origin, import_line), and the position is kept in a checkpoint file beside the
 *     input after each acknowledged batch (the server has no API for an importer's position yet);
 *   - a Kafka topic (--kafka BROKERS --topic T): rows checked as offline, each good one a message in the
 *     partition of its shard (shard.h), keyed by the shard, a row without a record id carrying the file's
 *     identity and its line as headers (record_origin.h); the position is kept in a checkpoint file beside
 *     the input after each batch wholly acknowledged (acks=all, idempotent producer);
 *   - nowhere (--dry-run): rows are checked (scan, identity, public copy) and nothing is stored.
 *
 * THE GUARANTEES. Resumable and idempotent: a rerun after a crash, kill -9 or Ctrl-C goes on from the
 * checkpoint and stores nothing twice (rows read again are duplicates: record ids, and for rows without
 * one the keyed hash of file and line, record_scan.h); a rerun of a finished import reads the file again
 * from the start and finds every row a duplicate. A bad row never stops the import: it goes to the reject
 * file (rejects.h, PHI, mode 0600) and is counted by reason. Memory is bounded by the batch size and the
 * batches in flight, whatever the file's size. Each committed batch is audited as one entry naming the
 * importing user and the patients it touched (offline: the OS user, "local:NAME"; --url: the token's;
 * --kafka: the nodes audit each batch they consume, as user "kafka").
 *
 * THE ORDER: a reader thread cuts the stream into batches (at most batch_rows rows, about batch_bytes
 * bytes, in 4 KiB-aligned bodies the segment log takes without a copy; a row far past the one before it,
 * blank lines between, starts a new one); `parallel` workers scan them and append their bodies (offline)
 * or POST them (--url: each once the one before it is answered, as the server commits batches in the
 * order they reach it, so that a record's versions are stored in the file's order); one committer takes
 * them in file order: writes the rejects known so far (synced), commits the batch with the position after
 * it (offline), writes the rejects only the commit knew, counts the rows and moves the checkpoint (--url:
 * the checkpoint file).
 * Offline the stored position is exact: a rerun after kill -9 reads nothing committed again. Over --url
 * the checkpoint file says, before a batch is sent, that rows up to its end may be stored already; a rerun
 * sends those again as a replay (import_replay=1), as it does every row of a finished file read again.
 *
 * Contract: import_file runs one file to its end, to a stop, or to an error, then returns with every
 * thread joined and everything freed; the summary goes to out, progress to err. It installs no signal
 * handler: the caller sets *stop (from one) to end the import at the next batch boundary.
 *
 * What it must never do: put a row's value in a progress line, the summary, a message or a log line
 * (only the reject file holds rows), acknowledge (checkpoint) a batch before it is durable, or hold the
 * whole file.
 */
#ifndef MS_IMPORT_H
#define MS_IMPORT_H

#include "import/progress.h"
#include "import/rows.h"
#include "ingest/writer.h"
#include "pipeline/schema.h"
#include "store/store.h"

#include <stdatomic.h>
#include <stdio.h>

typedef enum { PROGRESS_AUTO, PROGRESS_BAR, PROGRESS_PLAIN, PROGRESS_NONE } progress_mode;

typedef struct {
    /* the destination: store + writer (offline), url + token (a server), kafka_brokers + kafka_topic, or
     * dry_run */
    store *store;
    writer *writer;
    const char *url, *token;
    bool dry_run;
    const char *kafka_brokers, *kafka_topic; /* --kafka BROKERS --topic T: each good row one message (to_kafka.c) */
    const char *const *kafka_config;         /* --kafka-config key=value settings, NULL-ended (may be NULL) */
    const schema *schema;                    /* offline, dry run and Kafka (a server has its own) */
    size_t max_record;                       /* a larger row is rejected (a server may have a lower limit of its own) */
    const char *actor;                       /* offline: who imports, for the audit entries ("local:NAME") */
    /* files */
    const char *rejects_path;    /* NULL: FILE.rejects.ndjson beside the input */
    const char *checkpoint_path; /* --url, --kafka: NULL: FILE.import-checkpoint beside the input */
    bool restart;                /* ignore the checkpoint: read the file from its start */
    /* limits */
    uint64_t max_rejects; /* stop (checkpointed) once more rows of the file are rejected; UINT64_MAX: never */
    uint64_t batch_rows, batch_bytes;
    unsigned parallel; /* batches worked on at once (--url: connections) */
    /* output */
    progress_mode progress;
    double progress_every_s; /* --progress=plain: a line this often */
    FILE *out, *err;
    const atomic_bool *stop; /* set (by a signal) to stop at the next batch boundary */
} import_options;

typedef enum {
    IMPORT_DONE,        /* every row of the file read, stored or rejected */
    IMPORT_INTERRUPTED, /* *stop was set: stopped at a batch boundary, checkpointed */
    IMPORT_TOO_MANY,    /* --max-rejects exceeded: stopped, checkpointed */
    IMPORT_FAILED,      /* an error (the message in e): stopped, checkpointed where it could be */
} import_outcome;

typedef struct {
    import_outcome outcome;
    import_counts counts; /* this run */
    double elapsed;
} import_result;

/* The format a file's name says: .ndjson, .jsonl, .json -> NDJSON; .csv -> CSV (after a .gz or .zst);
 * false if it says neither. */
bool import_format_of(const char *path, import_format *out);
const char *import_format_name(import_format f);

/* Import one file (see the contract above). MS_OK with res->outcome; an error (MS_EIO the input or the
 * reject file cannot be opened, MS_EINVAL a CSV header that cannot be read, the store's or server's
 * errors) also sets res->outcome to IMPORT_FAILED, after printing the summary of what was done. */
ms_code import_file(const import_options *o, const char *path, import_format format, import_result *res, ms_err *e);

#endif

/*
 * import_internal.h - shared by the files of src/import/ only: a batch as it goes from the reader
 * through the workers to the committer, the state of one file's run, and the destinations (targets)
 * that import.c drives: the store (to_store.c, also the dry run), a server (to_server.c) and a Kafka
 * topic (to_kafka.c).
 */
#ifndef MS_IMPORT_INTERNAL_H
#define MS_IMPORT_INTERNAL_H

#ifndef MS_IMPORT_H
#error "import_internal.h is private to src/import"
#endif

#include "import/checkpoint.h"
#include "import/input.h"
#include "import/rejects.h"

#include <pthread.h>

typedef enum { ROW_CREATED, ROW_UPDATED, ROW_DUPLICATE, ROW_REJECTED, ROW_VALID } row_outcome;

/* One row of a batch. */
typedef struct {
    uint32_t body_off, body_len; /* its text in the body; body_len 0: not there (rejected before) */
    uint32_t body_line;          /* its line in the body, 1-based */
    uint64_t line, offset;       /* physical line, stream byte offset */
    size_t full_len;             /* its length in the file */
    const char *raw;             /* its bytes for the reject file when not the body's (cut, CSV, blanked) */
    uint32_t raw_len;
    bool raw_cut;
    uint32_t csv_column; /* CSV: the column the CSV reader's reason is about (1-based; 0: none) */
    row_outcome outcome;
    const char *error; /* when rejected: the reason (static, or in the batch's arena or record batch) */
    bool reported;     /* in the reject file already */
} batch_row;

typedef enum { SLOT_FREE, SLOT_FILLED, SLOT_WORKING, SLOT_WORKED, SLOT_FAILED } slot_state;

typedef struct import_batch {
    uint64_t seq;
    slot_state state;
    char *body; /* 4 KiB-aligned; zero from body_len to the padded length */
    size_t body_len, body_cap;
    uint64_t body_lines; /* the body line the next byte lands on */
    batch_row *rows;
    uint32_t nrows, rows_cap;
    uint64_t first_line;           /* the file's line of body line 1 */
    uint64_t end_offset, end_line; /* after its last row */
    uint64_t file_pos;             /* file bytes consumed when it was cut (progress) */
    uint64_t stream_bytes;         /* bytes of its rows */
    bool replay;                   /* its rows may have been stored before (writer.h, ingest_job.replay) */
    arena mem;
    ms_err err; /* why the worker failed */
    /* offline and dry run (to_store.c) */
    record_batch records;
    uint32_t *record_row; /* records[k] is rows[record_row[k]] */
    item_result *results;
    ingest_job job;
    source_offset offsets[IMPORT_POSITION_PARTS];
} import_batch;

typedef struct import_run import_run;

/* A destination. work runs on any worker thread, for batches in any order; commit and save on the
 * committer, in file order. */
typedef struct {
    const char *name;
    /* where to start: the stored position (found false: none) */
    ms_code (*load)(import_run *run, import_position *p, bool *found, ms_err *e);
    /* the run starts at run->pos (NULL: nothing to do) */
    void (*begin)(import_run *run);
    /* the batch's rows checked, and stored or sent as far as can be done out of order (--url: sent in
     * file order, each batch once the one before it is answered); each row's outcome set unless commit sets
     * it. MS_ESTOPPED while the run is stopping: nothing of the batch was stored or sent, and it is left
     * undone (not counted: the committer ends before it) */
    ms_code (*work)(import_run *run, unsigned worker, import_batch *b, ms_err *e);
    /* in file order (NULL: none): make the batch durable, recording `after` (the position after it, its
     * rejects so far written and synced) in the same commit; each row's outcome set */
    ms_code (*commit)(import_run *run, import_batch *b, const import_position *after, ms_err *e);
    /* the position after a batch's rows are counted and its rejects written (final: the last of the
     * run; NULL: nothing to do) */
    ms_code (*save)(import_run *run, const import_position *p, bool final, ms_err *e);
    /* a batch's resources of this target, before the slot is reused (NULL: none) */
    void (*reset)(import_batch *b);
    void (*close)(import_run *run);
} import_target;

extern const import_target import_to_store, import_dry_run, import_to_server, import_to_kafka;

/* to_store.c's, shared with to_kafka.c: the pure stages (prepare.h) over every row in the body with the
 * file's identity as the scan's origin, into b->records (b->record_row[k] the row of record k; rows
 * rejected get their outcome and reason); and those records freed (a target's reset). */
void import_scan_rows(import_run *run, import_batch *b, const scan_config *base);
void import_records_reset(import_batch *b);

#define IMPORT_SLOTS_EXTRA 2 /* batches beyond the workers': one being read, one being committed */

struct import_run {
    const import_options *opt;
    const char *path;
    import_format format;
    bool csv_raw; /* CSV rows go in the body as they are in the file, after the header (--url: the server
                     converts them with its schema); otherwise as the record objects they make */
    import_input *in;
    row_reader *reader;
    rejects *rejects;
    const import_target *target;
    void *target_state;
    char source[IMPORT_SOURCE_MAX]; /* "import:<identity hex>" */
    char short_id[17];              /* the identity's first 16 hex digits, for people and audit entries */
    char checkpoint_path[4096];
    uint64_t replay_until; /* rows that start before this stream offset may have been stored before */
    /* the pipeline, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    import_batch *slots;
    unsigned nslots;
    uint64_t batches_read; /* cut by the reader so far */
    bool reader_done;      /* it cut its last batch (or stopped) */
    bool reader_eof;       /* ... because the stream ended: final_offset, final_line are its end */
    uint64_t final_offset, final_line;
    bool stopping; /* end at the next batch boundary (a signal, a limit, an error) */
    bool committer_done;
    ms_err error; /* the first error, when failed */
    bool failed;
    /* the committer's */
    import_position pos; /* after the last batch counted */
    import_counts counts;
    reason_table reasons;
    uint64_t file_done, stream_bytes;
    import_outcome outcome;
};

/* A row's bytes as the reject file shows them: its own copy, or its text in the body. */
static inline const char *import_row_text(const import_batch *b, const batch_row *r, size_t *len)
{
    *len = r->raw ? r->raw_len : r->body_len;
    return r->raw ? r->raw : b->body + r->body_off;
}

#endif

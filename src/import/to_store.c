/*
 * to_store.c - the importer's destinations in this process: the store (offline, --data DIR) and
 * nowhere (--dry-run). See import.h.
 *
 * DESIGN: a worker runs the pure stages over the batch's rows (prepare.h, with the file's identity as
 * the scan's origin, so rows without a record id are named by file and line) and appends the body to
 * the segment log (ingest.h, step 2) while other batches commit; the committer submits it to the writer
 * with the position after it as source positions of the same commit (ingest.h, steps 3-4), the scan's
 * rejects written and synced before. The stored position is exact: a rerun after a crash reads nothing
 * that was committed. The run's last word is a commit of the position alone (import_to_store.save,
 * final), which also counts the rows the writer refused in the last batch.
 *
 * The writer's audit entry of each batch names the importing user (the OS user: "local:NAME"), the
 * client "cli" and the resource "import:<first 16 hex digits of the file's identity>", never the file's
 * path (a file's name may say whose records it holds).
 *
 * What it must never do: submit a batch out of file order, or record a position past a batch that is
 * not committed.
 */
#include "import/import.h"

#include "import/import_internal.h"

#include "ingest/ingest.h"
#include "pipeline/prepare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ingest_ctx ingest;
    char source[200];  /* patient versions' "source" */
    char resource[64]; /* the audit entries' */
    unsigned char dry_key[32];
} store_target;

static store_target *state(import_run *run)
{
    if (!run->target_state) {
        store_target *t = ms_calloc(1, sizeof *t);
        const import_options *o = run->opt;
        t->ingest = (ingest_ctx){o->store, o->writer, o->schema, o->max_record};
        snprintf(t->source, sizeof t->source, "import %s by %s", run->short_id, o->actor ? o->actor : "local");
        snprintf(t->resource, sizeof t->resource, "import:%s", run->short_id);
        run->target_state = t;
    }
    return run->target_state;
}

static void store_close_target(import_run *run)
{
    free(run->target_state);
    run->target_state = NULL;
}

static ms_code store_load(import_run *run, import_position *p, bool *found, ms_err *e)
{
    state(run);
    *found = false;
    store_read *r;
    ms_code rc = store_read_begin(run->opt->store, &r, e);
    if (rc != MS_OK) return rc;
    int64_t parts[IMPORT_POSITION_PARTS];
    bool have[IMPORT_POSITION_PARTS], any = false;
    for (int i = 0; i < IMPORT_POSITION_PARTS && rc == MS_OK; i++) {
        rc = store_source_offset_get(r, run->source, i, &parts[i], &have[i], e);
        any = any || have[i];
    }
    store_read_end(r);
    if (rc != MS_OK) return rc;
    *found = import_position_from_parts(parts, have, p);
    if (any && !*found)
        fprintf(run->opt->err, "import: %s: the stored position does not make sense; starting from the beginning\n",
                run->path);
    return MS_OK;
}

void import_records_reset(import_batch *b)
{
    record_batch_free(&b->records);
    free(b->record_row);
    free(b->results);
    b->record_row = NULL;
    b->results = NULL;
    memset(&b->job, 0, sizeof b->job);
}

/* The pure stages over every row in the body; rows rejected here get their outcome and reason (also the
 * Kafka destination's, to_kafka.c). */
void import_scan_rows(import_run *run, import_batch *b, const scan_config *base)
{
    scan_config cfg = *base;
    cfg.origin = import_input_identity(run->in);
    cfg.origin_line = b->first_line;
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->nrows; i++)
        n += b->rows[i].body_len > 0;
    b->records.records = ms_malloc(sizeof(parsed_record) * (n ? n : 1));
    b->records.n = b->records.cap = n;
    b->records.rejected = 0;
    b->record_row = ms_malloc(sizeof *b->record_row * (n ? n : 1));
    uint32_t k = 0;
    for (uint32_t i = 0; i < b->nrows; i++) {
        batch_row *row = &b->rows[i];
        if (!row->body_len) continue;
        parsed_record *r = &b->records.records[k];
        record_prepare_one(&cfg, b->body + row->body_off, row->body_len, row->body_line, &b->records.mem, r);
        b->record_row[k++] = i;
        if (r->rejected) {
            b->records.rejected++;
            row->outcome = ROW_REJECTED;
            row->error = r->error;
        }
    }
}

static ms_code store_work(import_run *run, unsigned worker, import_batch *b, ms_err *e)
{
    (void)worker;
    store_target *t = state(run);
    scan_config cfg = ingest_scan_config(&t->ingest);
    import_scan_rows(run, b, &cfg);
    b->results = ms_calloc(b->records.n ? b->records.n : 1, sizeof(item_result));
    b->job = (ingest_job){.body = b->body,
                          .body_len = b->body_len,
                          .body_write_len = ingest_padded_len(b->body_len),
                          .body_pos = UINT64_MAX,
                          .batch = &b->records,
                          .may_update = true, /* the importer runs as a service that may write new versions */
                          .replay = b->replay,
                          .source = t->source,
                          .user = run->opt->actor,
                          .role = "",
                          .client = "cli",
                          .resource = t->resource,
                          .results = b->results};
    return ingest_append(&t->ingest, &b->job, e); /* nothing appended when every row is rejected */
}

static row_outcome outcome_of(item_status s)
{
    switch (s) {
    case ITEM_CREATED: return ROW_CREATED;
    case ITEM_UPDATED: return ROW_UPDATED;
    case ITEM_DUPLICATE: return ROW_DUPLICATE;
    default: return ROW_REJECTED;
    }
}

static ms_code store_commit(import_run *run, import_batch *b, const import_position *after, ms_err *e)
{
    store_target *t = state(run);
    import_position_offsets(after, run->source, b->offsets);
    b->job.offsets = b->offsets;
    b->job.noffsets = IMPORT_POSITION_PARTS;
    b->job.received_at = ms_mono_s();
    ms_code rc = ingest_store(&t->ingest, &b->job, e);
    if (rc != MS_OK) return rc;
    for (uint32_t k = 0; k < b->records.n; k++) {
        batch_row *row = &b->rows[b->record_row[k]];
        const parsed_record *r = &b->records.records[k];
        row->outcome = r->rejected ? ROW_REJECTED : outcome_of(b->results[k].status);
        if (row->outcome == ROW_REJECTED) row->error = r->error ? r->error : b->results[k].error;
    }
    return MS_OK;
}

/* The last position of a run, committed alone (the ones before rode with the batches). */
static ms_code store_save(import_run *run, const import_position *p, bool final, ms_err *e)
{
    if (!final) return MS_OK;
    store_target *t = state(run);
    source_offset offsets[IMPORT_POSITION_PARTS];
    import_position_offsets(p, run->source, offsets);
    record_batch none = {0};
    ingest_job job = {.batch = &none,
                      .body_pos = UINT64_MAX,
                      .offsets = offsets,
                      .noffsets = IMPORT_POSITION_PARTS,
                      .source = t->source,
                      .user = run->opt->actor,
                      .role = "",
                      .client = "cli",
                      .resource = t->resource,
                      .received_at = ms_mono_s()};
    return ingest_store(&t->ingest, &job, e);
}

const import_target import_to_store = {.name = "store",
                                       .load = store_load,
                                       .work = store_work,
                                       .commit = store_commit,
                                       .save = store_save,
                                       .reset = import_records_reset,
                                       .close = store_close_target};

/* ---- --dry-run: the same checks, nothing stored, no position kept ---- */

static ms_code dry_load(import_run *run, import_position *p, bool *found, ms_err *e)
{
    (void)e;
    store_target *t = state(run);
    memset(t->dry_key, 0x5a, sizeof t->dry_key); /* ids are not shown: any key will do */
    *p = IMPORT_POSITION_START;
    *found = false;
    return MS_OK;
}

static ms_code dry_work(import_run *run, unsigned worker, import_batch *b, ms_err *e)
{
    (void)worker, (void)e;
    store_target *t = state(run);
    scan_config cfg = {
        .schema = run->opt->schema, .max_record = run->opt->max_record, .now_us = ms_now_us(), .id_key = t->dry_key};
    import_scan_rows(run, b, &cfg);
    for (uint32_t i = 0; i < b->nrows; i++)
        if (b->rows[i].outcome != ROW_REJECTED) b->rows[i].outcome = ROW_VALID;
    return MS_OK;
}

const import_target import_dry_run = {
    .name = "dry run", .load = dry_load, .work = dry_work, .reset = import_records_reset, .close = store_close_target};

/*
 * part.c - part files in NDJSON, CSV or Parquet (see part.h).
 *
 * DESIGN: text formats format each row into a buffer handed to out_file once it passes 256 KiB; Parquet
 * gathers rows into a column batch of 4096 rows or 512 KiB of values (so that 20 KB records are encoded and
 * compressed while they are still in the CPU's cache, not after a partition's worth has gone through
 * memory) and appends it to the pq_writer, whose bytes go to
 * out_file through the write callback.
 */
#include "export/part.h"

#include "export/out_file.h"

#include <stdlib.h>

#define TEXT_FLUSH (256u << 10)
#define PQ_BATCH_ROWS 4096
#define PQ_BATCH_BYTES (512u << 10) /* or fewer rows once their values pass this: encoded while in cache */

struct part_writer {
    part_options o;
    out_file *f;
    buf text;
    uint64_t rows;
    pq_writer *pq;
    rows_batch batch;
};

static ms_code pq_to_file(void *ctx, const void *data, size_t len, ms_err *e) { return out_write(ctx, data, len, e); }

ms_code part_open(part_writer **out, const part_options *o, const char *dir, const char *name, ms_err *e)
{
    part_writer *w = ms_calloc(1, sizeof *w);
    w->o = *o;
    ms_code rc = out_open(&w->f, dir, name, o->mode ? o->mode : 0600, e);
    if (rc) {
        free(w);
        return rc;
    }
    if (o->format == EXPORT_CSV) rows_csv_header(o->columns, &w->text);
    if (o->format == EXPORT_PARQUET) {
        pq_column cols[EXPORT_MAX_COLUMNS];
        for (int k = 0; k < o->columns->n; k++) {
            const export_column *c = &o->columns->col[k];
            cols[k] = (pq_column){c->name, c->type, c->optional, c->dictionary};
        }
        pq_options po = {.codec = (pq_codec)o->compression,
                         .row_group_bytes = o->row_group_bytes,
                         .created_by = o->created_by ? o->created_by : "medstream",
                         .key_values = o->key_values};
        rc = pq_writer_open(&w->pq, cols, (size_t)o->columns->n, &po, pq_to_file, w->f, e);
        if (rc) {
            out_abort(w->f);
            free(w);
            return rc;
        }
    }
    *out = w;
    return MS_OK;
}

static ms_code flush_text(part_writer *w, ms_err *e)
{
    ms_code rc = out_write(w->f, w->text.data, w->text.len, e);
    w->text.len = 0;
    return rc;
}

static ms_code flush_batch(part_writer *w, ms_err *e)
{
    if (w->batch.n == 0) return MS_OK;
    pq_values vals[EXPORT_MAX_COLUMNS];
    rows_batch_values(&w->batch, w->o.columns, vals);
    ms_code rc = pq_writer_append(w->pq, w->batch.n, vals, e);
    rows_batch_clear(&w->batch);
    return rc;
}

ms_code part_row(part_writer *w, const export_row *row, ms_err *e)
{
    w->rows++;
    switch (w->o.format) {
    case EXPORT_NDJSON: rows_ndjson(w->o.columns, row, &w->text); break;
    case EXPORT_CSV: rows_csv(w->o.columns, row, &w->text); break;
    case EXPORT_PARQUET:
        rows_batch_add(&w->batch, w->o.columns, row);
        return w->batch.n >= PQ_BATCH_ROWS || w->batch.bytes.len >= PQ_BATCH_BYTES ? flush_batch(w, e) : MS_OK;
    }
    return w->text.len >= TEXT_FLUSH ? flush_text(w, e) : MS_OK;
}

uint64_t part_bytes(const part_writer *w) { return out_bytes(w->f) + w->text.len; }
uint64_t part_rows(const part_writer *w) { return w->rows; }

static void part_free(part_writer *w)
{
    buf_free(&w->text);
    pq_writer_free(w->pq);
    rows_batch_free(&w->batch);
    free(w);
}

ms_code part_close(part_writer *w, uint64_t *rows, uint64_t *bytes, unsigned char sha256[32], ms_err *e)
{
    ms_code rc = MS_OK;
    if (w->o.format == EXPORT_PARQUET) {
        rc = flush_batch(w, e);
        if (rc == MS_OK) rc = pq_writer_close(w->pq, NULL, e);
    }
    if (rc == MS_OK && w->text.len) rc = flush_text(w, e);
    if (bytes) *bytes = out_bytes(w->f);
    if (rows) *rows = w->rows;
    if (rc == MS_OK)
        rc = out_finish(w->f, sha256, e);
    else
        out_abort(w->f);
    part_free(w);
    return rc;
}

void part_abort(part_writer *w)
{
    if (!w) return;
    out_abort(w->f);
    part_free(w);
}

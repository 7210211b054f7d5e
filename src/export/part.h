/*
 * part.h - one part file of an export in its format: NDJSON (a row an object a line), CSV (a header
 * line, then a row a line, RFC 4180, CR LF) or Parquet (parquet/parquet.h: row groups of
 * pq_options.row_group_bytes), written through out_file (temporary name, fsync, rename).
 *
 * Contract: rows are appended in order; part_close makes the file visible under its name in its
 * directory and reports its rows, bytes and SHA-256; part_abort removes it. Parquet files are compressed
 * as part_options.compression says (SNAPPY by default).
 */
#ifndef MS_EXPORT_PART_H
#define MS_EXPORT_PART_H

#include "export/rows.h"

typedef struct part_writer part_writer;

typedef struct {
    export_format format;
    int compression; /* Parquet: pq_codec (export_compression_names) */
    const export_columns *columns;
    uint64_t row_group_bytes;      /* Parquet (0: the writer's default) */
    const char *created_by;        /* Parquet footer */
    const char *const *key_values; /* Parquet footer metadata, NULL-ended pairs; may be NULL */
    int mode;                      /* file mode */
} part_options;

ms_code part_open(part_writer **out, const part_options *o, const char *dir, const char *name, ms_err *e);
ms_code part_row(part_writer *w, const export_row *row, ms_err *e);
/* Bytes written so far (Parquet: handed to the file so far; a row group in memory is not counted). */
uint64_t part_bytes(const part_writer *w);
uint64_t part_rows(const part_writer *w);
/* Finish, sync and rename; frees w either way. */
ms_code part_close(part_writer *w, uint64_t *rows, uint64_t *bytes, unsigned char sha256[32], ms_err *e);
void part_abort(part_writer *w);

#endif

/*
 * parquet.h - a Parquet file writer of the project's own (issue 12): there is no C Parquet library in
 * Debian, and the subset a record store needs is small. Columns are flat (no nesting, no repetition);
 * a record's fields outside its named columns travel as one JSON column.
 *
 * What it writes (https://parquet.apache.org/docs/file-format/): "PAR1", row groups of column chunks,
 * each chunk an optional dictionary page then data pages v1 (definition levels RLE/bit-packed hybrid
 * for optional columns, values PLAIN or RLE_DICTIONARY), compressed with SNAPPY (default), ZSTD or
 * nothing; then the FileMetaData in the Thrift compact protocol (thrift_compact.h), its length, "PAR1".
 * Every required Thrift field is written; statistics (min_value/max_value, null_count) per chunk and per
 * page header, with column_orders (TYPE_ORDER) so that readers trust them; created_by as given (the
 * caller passes "medstream version X (build Y)"). Logical types: STRING, JSON (BYTE_ARRAY), TIMESTAMP
 * (UTC, MICROS; INT64), INT64, DOUBLE, BOOLEAN.
 *
 * Row groups are cut by bytes (pq_options.row_group_bytes of encoded, uncompressed values; 128 MiB by
 * default), never empty: a file of 0 rows has no row group. A dictionary column falls back to PLAIN for
 * the rest of its chunk once its dictionary passes 1 MiB (a high-cardinality column). Data pages end
 * once their values pass page_bytes or hold 20,000 rows.
 *
 * Statistics are true bounds (encoding.h): strings and JSON by unsigned bytes, INT64/TIMESTAMP signed,
 * DOUBLE without NaN (nan_count written) and with a zero min as -0.0 and a zero max as +0.0, BOOLEAN
 * false < true; none for a chunk or page without a non-null value, nor for a string chunk or page whose
 * min or max is longer than 4 KiB (null_count is always written). Version 1 in the footer;
 * ColumnChunk.file_offset 0 (no ColumnMetaData outside the footer, as parquet.thrift asks).
 *
 * Contract: pure. The writer turns appended column batches into bytes handed to the caller's write
 * function, in file order; it opens, syncs and renames nothing (export/ does: temporary name, fsync,
 * rename). One writer is used by one thread. Memory: one row group's encoded columns plus the
 * dictionaries, whatever the file's size.
 *
 * What it must never do: write a file a reader would misread (a statistic that is not a true bound, a
 * page whose header disagrees with its bytes, an optional column without definition levels); log or
 * keep values beyond the row group being built.
 */
#ifndef MS_PARQUET_PARQUET_H
#define MS_PARQUET_PARQUET_H

#include "base/util.h"

typedef enum {
    PQ_STRING,    /* BYTE_ARRAY, logical STRING (UTF-8; the caller guarantees it) */
    PQ_JSON,      /* BYTE_ARRAY, logical JSON */
    PQ_TIMESTAMP, /* INT64, logical TIMESTAMP(isAdjustedToUTC=true, MICROS) */
    PQ_INT64,     /* INT64, logical INT(64, signed) */
    PQ_DOUBLE,    /* DOUBLE */
    PQ_BOOLEAN    /* BOOLEAN */
} pq_type;

typedef enum { PQ_SNAPPY, PQ_ZSTD, PQ_UNCOMPRESSED } pq_codec;

/* The longest string or JSON value a writer takes (a page must stay under 2 GiB). */
#define PQ_MAX_VALUE_BYTES (256u << 20)

typedef struct {
    const char *name; /* UTF-8, unique in the schema */
    pq_type type;
    bool optional;   /* may hold nulls (definition levels written); else every row has a value */
    bool dictionary; /* RLE_DICTIONARY encoding (low cardinality, e.g. type); strings and int64s only */
} pq_column;

typedef struct {
    pq_codec codec;           /* PQ_SNAPPY by default (0) */
    int zstd_level;           /* 0: 3 */
    uint64_t row_group_bytes; /* 0: 128 MiB */
    uint64_t page_bytes;      /* target data page size, 0: 1 MiB; at most 256 MiB */
    const char *created_by;   /* required: "medstream version X (build Y)" */
    /* key-value metadata written in the footer (e.g. "medstream.as_of"), NULL-ended pairs; may be NULL */
    const char *const *key_values;
} pq_options;

/* One column's values for a batch of n rows. For an optional column, present[i] false is a null (its
 * slot in the value array is ignored); present NULL means all present. Strings: ptr[i], len[i]. */
typedef struct {
    const bool *present;
    const int64_t *i64;     /* PQ_INT64, PQ_TIMESTAMP (microseconds since the Unix epoch, UTC) */
    const double *f64;      /* PQ_DOUBLE */
    const bool *b;          /* PQ_BOOLEAN */
    const char *const *str; /* PQ_STRING, PQ_JSON */
    const uint32_t *len;
} pq_values;

/* Where the bytes go: called in file order; a non-MS_OK answer (with e set) fails the writer. */
typedef ms_code (*pq_write_fn)(void *ctx, const void *data, size_t len, ms_err *e);

typedef struct pq_writer pq_writer;

/* A writer for columns[0..ncolumns) (copied, and the options' strings too). Writes the leading "PAR1"
 * at once. Errors: MS_EINVAL a bad schema (no column, a duplicate, empty or non-UTF-8 name, a dictionary
 * on a type without one) or options (no created_by, an unknown codec, a zstd level out of range,
 * page_bytes over 256 MiB, a key without a value), the write function's error (nothing is left open). */
ms_code pq_writer_open(pq_writer **out, const pq_column *columns, size_t ncolumns, const pq_options *opt,
                       pq_write_fn write, void *ctx, ms_err *e);

/* Append n rows: cols[c] holds column c's n values. A row group is written out once the buffered
 * values pass row_group_bytes. Errors: MS_EINVAL a null in a required column, a column without the
 * value array of its type, a string over PQ_MAX_VALUE_BYTES or with a NULL pointer and a length (in each
 * case nothing of the batch is kept and the writer stays usable), a writer already closed or failed; the
 * write function's error (the writer is then failed: only pq_writer_free). */
ms_code pq_writer_append(pq_writer *w, size_t n, const pq_values *cols, ms_err *e);

/* Write the last row group (if it has rows) and the footer. *rows (may be NULL): the file's row count.
 * The writer is then done: only pq_writer_free. */
ms_code pq_writer_close(pq_writer *w, uint64_t *rows, ms_err *e);

/* Bytes handed to the write function so far. */
uint64_t pq_writer_bytes(const pq_writer *w);

void pq_writer_free(pq_writer *w);

#endif

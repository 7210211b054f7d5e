/*
 * rows.h - an export's rows: the columns of each scope (README.md "Columns"), a record or a patient as a
 * row of typed values, the rows' spool encoding (phase 1 writes it per partition, phase 2 reads it
 * back), and rows gathered into column batches for the Parquet writer.
 *
 * Columns. Records: patient_id STRING, record_id STRING, version INT64, recorded_at TIMESTAMP (PHI only:
 * system time is finer than a public copy may carry), ts TIMESTAMP (PHI; public only when the schema
 * copies the event time), then one column per field the schema types ("types": number -> DOUBLE,
 * boolean -> BOOLEAN; public: only those allow-listed as copies), then fields JSON: the record's other
 * fields (public: the other fields of the public copy), without the record id, type and event time
 * fields (columns or partitions already) and without the values a typed column took. A value that does
 * not fit its typed column (a string where the schema says number) stays in fields and the column is null.
 * A typed field named as one of the scope's partition levels (type, and date or year) gets no column, its
 * values stay in fields: Hive readers would take a column of that name for the partition (DuckDB answers
 * the partition's value for it, pyarrow refuses the table).
 * Patients: patient_id, then (PHI) version, recorded_at, name STRING and dob STRING from the patient's
 * state, then fields JSON (the rest of the state; public: the public copy of the state).
 *
 * Contract: pure (no I/O); a row's strings point into its builder or its spool bytes; every function
 * takes the columns it was built with. Must never: put a member of a public copy anywhere but where the
 * copy had it (a public row is made from the public copy alone).
 */
#ifndef MS_EXPORT_ROWS_H
#define MS_EXPORT_ROWS_H

#include "export/export.h"
#include "parquet/parquet.h"

#define EXPORT_MAX_COLUMNS 72
#define EXPORT_MAX_TYPED 64

typedef enum {
    COL_PATIENT_ID,
    COL_RECORD_ID,
    COL_VERSION,
    COL_RECORDED_AT,
    COL_TS,
    COL_TYPED, /* a field's value: DOUBLE, BOOLEAN or STRING (name, dob) */
    COL_FIELDS,
} column_role;

typedef struct {
    const char *name; /* the column's name (a constant, or the schema's field name) */
    pq_type type;
    bool optional;
    bool dictionary;
    column_role role;
    const char *field; /* COL_TYPED: the field it holds */
} export_column;

typedef struct {
    export_column col[EXPORT_MAX_COLUMNS];
    int n;
} export_columns;

void rows_record_columns(const schema *s, export_scope scope, export_columns *out);
void rows_patient_columns(const schema *s, export_scope scope, export_columns *out);

typedef struct {
    bool present;
    int64_t i64; /* INT64, TIMESTAMP */
    double f64;
    bool b;
    const char *str; /* STRING, JSON */
    uint32_t len;
} export_value;

typedef struct {
    export_value v[EXPORT_MAX_COLUMNS];
} export_row;

/* Builds rows; holds the bytes their strings point to until the next build. */
typedef struct {
    char pid[PATIENT_ID_TEXT];
    buf fields;
    buf strings;   /* decoded typed string values */
    buf name;      /* a composed name (schema "identity.name" of several fields): its parts joined */
    void *members; /* json_member[] scratch */
} row_builder;

void row_builder_free(row_builder *b);

/* A PHI record row from its version and its body (the record's JSON object). Errors: MS_ECORRUPT a body
 * that is not a JSON object. */
ms_code rows_phi_record(row_builder *b, const export_columns *c, const schema *s, const record_version *rv,
                        const char *body, size_t len, export_row *row, ms_err *e);
/* A public record row from its public copy (pr->fields). */
ms_code rows_public_record(row_builder *b, const export_columns *c, const schema *s, const record_version *rv,
                           const public_record *pr, export_row *row, ms_err *e);
/* A patient row: fields is the state's JSON object (PHI, query_patient_fields) or its public copy. version
 * and valid_from are used by the PHI columns only. */
ms_code rows_patient(row_builder *b, const export_columns *c, const schema *s, const patient_id *pid, uint32_t version,
                     int64_t valid_from, const char *fields, size_t len, export_row *row, ms_err *e);

/* The spool encoding: append one row (u32 length, then each column's value) to out. */
void rows_encode(const export_columns *c, const export_row *row, buf *out);
/* Decode one row from p (n bytes available): *used receives the bytes it took; false on a short or bad
 * entry. Strings point into p. */
bool rows_decode(const export_columns *c, const char *p, size_t n, export_row *row, size_t *used);

/* One row as NDJSON (an object, columns in order, fields as a nested object) or a CSV line (RFC 4180;
 * fields as JSON text), appended to out with its line end; the CSV header line. */
void rows_ndjson(const export_columns *c, const export_row *row, buf *out);
void rows_csv(const export_columns *c, const export_row *row, buf *out);
void rows_csv_header(const export_columns *c, buf *out);

/* Rows gathered column by column for pq_writer_append. */
typedef struct {
    size_t n, cap;
    bool *present[EXPORT_MAX_COLUMNS];
    int64_t *i64[EXPORT_MAX_COLUMNS];
    double *f64[EXPORT_MAX_COLUMNS];
    bool *b[EXPORT_MAX_COLUMNS];
    const char **str[EXPORT_MAX_COLUMNS];
    uint32_t *len[EXPORT_MAX_COLUMNS];
    size_t *off[EXPORT_MAX_COLUMNS]; /* string offsets into bytes until rows_batch_values */
    buf bytes;
} rows_batch;

void rows_batch_add(rows_batch *bt, const export_columns *c, const export_row *row);
/* The batch's columns as pq_values (valid until the next add or clear). */
void rows_batch_values(rows_batch *bt, const export_columns *c, pq_values *out);
void rows_batch_clear(rows_batch *bt);
void rows_batch_free(rows_batch *bt);

#endif

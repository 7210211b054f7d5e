/*
 * export.h - `medstream export` and POST /v1/exports: the store as of one instant, written as files for
 * Spark, DuckDB and pandas (Parquet, NDJSON or CSV) in a Hive-style layout, with a manifest.
 *
 * What an export is (README.md beside this file has the layout and the columns):
 *   OUT/records/type=T/date=YYYY-MM-DD/part-00000.EXT   (public scope: year=YYYY, or what the schema keeps)
 *   OUT/patients/part-00000.EXT
 *   OUT/manifest.json                                   (as_of, scope, format, schema hash, filters, files)
 * Every record version current at the instant (tombstones left out) passing the filters is one row; every
 * patient that exists at the instant is one row of patients/.
 *
 * Contract:
 *   - ONE INSTANT. Every row is what a read at req->as_of answers (query.h), whatever is committed while
 *     the export runs. Records are read in steps of req->chunk_records record ids, one read transaction
 *     per step, resuming by record id (store_records_scan), so a long export never pins LMDB pages for its
 *     whole run.
 *   - SCOPE. PHI: every field. Public: only the schema's allow-listed fields after their transforms (the
 *     public copy the store keeps), never another; no system time (recorded_at) and no partition finer
 *     than the allow-list keeps the event time.
 *   - ATOMIC. Everything is written under OUT/.medstream-export-tmp/ (each file fsynced), then moved into
 *     OUT, manifest.json last. A failed, stopped (*req->stop) or crashed export leaves nothing new visible
 *     in OUT (a crash leaves the hidden temporary directory, removed by the next export into OUT). OUT
 *     must be absent or empty (a leftover temporary directory aside) unless req->overwrite, which replaces
 *     OUT's visible entries only once the new export is complete.
 *   - AUDITED. Before anything is made visible, req->audit is called (PHI: with every patient id in the
 *     export); its failure fails the export. Public exports are audited without patient ids.
 *   - ERRORS are values: MS_EINVAL a bad request (the message names the field), MS_ECONFLICT OUT not
 *     empty, MS_EFULL a full disk (the message names OUT), MS_EIO another I/O failure, MS_ESTOPPED
 *     stopped. Messages name paths, fields and counts, never a value of a record.
 *
 * May call: base, pipeline, store, read, parquet. Called by: main.c (offline), export_jobs (the server's
 * background exports), api/h_exports.c.
 *
 * What it must never do: write a public row holding a field outside the allow-list; leave a partial file
 * visible; log or put into a message a value of a record or a patient.
 */
#ifndef MS_EXPORT_H
#define MS_EXPORT_H

#include "pipeline/schema.h"
#include "store/store.h"

#include <stdatomic.h>

typedef enum { EXPORT_PUBLIC = 0, EXPORT_PHI } export_scope;
typedef enum { EXPORT_PARQUET = 0, EXPORT_NDJSON, EXPORT_CSV } export_format;

/* NULL-ended names in enum order ("public", "phi"; "parquet", "ndjson", "csv"), for option tables. */
extern const char *const export_scope_names[];
extern const char *const export_format_names[];
/* Parquet compression names in pq_codec order ("snappy", "zstd", "none"), NULL-ended. */
extern const char *const export_compression_names[];
/* The file name extension of a format (".parquet", ".ndjson", ".csv"). */
const char *export_format_ext(export_format f);

/* Called once the files are written and before any is made visible. pids: every patient in a PHI export
 * (sorted, no duplicates), NULL and 0 for a public one. An error fails the export (nothing visible). */
typedef ms_code (*export_audit_fn)(void *ctx, const char *export_id, export_scope scope, const patient_id *pids,
                                   size_t npids, ms_err *e);

/* Progress, readable from another thread while the export runs. */
typedef struct {
    _Atomic uint64_t records_scanned; /* record ids visited */
    _Atomic uint64_t rows;            /* record and patient rows written to the spool or the files */
    _Atomic uint64_t files;           /* part files finished */
    _Atomic uint64_t bytes;           /* their bytes */
    _Atomic int phase;                /* export_phase */
} export_progress;

typedef enum {
    EXPORT_PHASE_QUEUED = 0,
    EXPORT_PHASE_SCANNING,  /* reading records into per-partition spools */
    EXPORT_PHASE_WRITING,   /* writing the part files */
    EXPORT_PHASE_PATIENTS,  /* the patients file */
    EXPORT_PHASE_PUBLISHING /* audit, manifest, rename into place */
} export_phase;

typedef struct {
    store *store;
    const schema *schema;
    const char *out_dir;
    const char *export_id; /* names the export in the manifest and the audit entry ("exp_…") */
    export_scope scope;
    export_format format;
    int compression;          /* Parquet: an index of export_compression_names (0: snappy) */
    int64_t as_of;            /* the instant (a snapshot's, or a time); INT64_MAX: the last commit */
    const char *snapshot_id;  /* the snapshot as_of came from, or NULL (then written as given) */
    const char *type;         /* only records of this type, or NULL */
    int64_t since, until;     /* event time in [since, until); INT64_MIN / INT64_MAX: no bound */
    bool overwrite;           /* replace OUT's visible entries */
    uint32_t chunk_records;   /* record ids per read transaction (0: 10,000) */
    uint64_t file_bytes;      /* start a new part file of a partition past this many bytes (0: 1 GiB) */
    uint64_t row_group_bytes; /* Parquet row groups (0: 128 MiB) */
    const char *created_by;   /* "medstream version X" */
    export_audit_fn audit;    /* required */
    void *audit_ctx;
    const atomic_bool *stop;   /* may be NULL; when it turns true the export stops and cleans up */
    export_progress *progress; /* may be NULL */
} export_request;

typedef struct {
    int64_t as_of; /* the instant read (INT64_MAX resolved to the last commit) */
    uint64_t record_rows, patient_rows, files, bytes;
} export_result;

/* Run an export (above). Blocks; one thread. */
ms_code export_run(const export_request *req, export_result *res, ms_err *e);

/* OUT's state for an export: MS_OK absent or empty (a leftover temporary directory aside) or overwrite;
 * MS_ECONFLICT not empty ("OUT is not empty (N entries): give --overwrite to replace them"); MS_EINVAL
 * not a directory. */
ms_code export_check_out_dir(const char *out_dir, bool overwrite, ms_err *e);

/* Move a finished export from tmp (OUT/.medstream-export-tmp) into OUT: with overwrite, OUT's visible entries
 * first go aside into tmp/.replaced; then records/, patients/ and manifest.json last, OUT fsynced between.
 * The caller removes tmp afterwards. */
ms_code export_publish(const char *out_dir, const char *tmp, bool overwrite, ms_err *e);

/* The name of the hidden temporary directory inside OUT. */
#define EXPORT_TMP_DIR ".medstream-export-tmp"

#endif

/*
 * export_jobs.h - the server's exports (POST /v1/exports): each runs export_run in a background thread
 * into DATA/exports/<id>/, is archived (tar.h) as DATA/exports/<id>.tar, and is fetched through a signed
 * link that expires.
 *
 * Contract:
 *   - One export runs at a time, the others wait their turn in submission order; at most keep (default
 *     8) exports are held, running, queued or finished: a submission beyond that removes the oldest
 *     finished one (its directory and archive), or is refused (MS_ESTOPPED, 503) while all are unfinished.
 *   - RETENTION: exports live in memory and DATA/exports; a server start removes what earlier runs left
 *     there (a link never outlives the process that signed it); a finished export stays until pushed out
 *     by newer ones (keep), or the server stops.
 *   - LINKS: /v1/exports/<id>/download?exp=<unix seconds>&sig=<hex HMAC-SHA256(K, id "\n" exp)>, K =
 *     HMAC-SHA256(the store's id key, "medstream export link"): valid until exp (link_ttl_s after it was
 *     handed out), without a bearer token. A wrong signature or a past exp is refused before the export
 *     is looked at.
 *   - AUDIT: the audit callback runs before the export is made visible (export.h) with the submitter's
 *     user, role and client; PHI exports name every patient id.
 *   - ERASURE: export_jobs_withdraw removes what an erased patient may be in; an erasure offline removes
 *     what a killed server left (export_jobs_remove_left).
 *   - export_jobs_stop stops the running export (it cleans up) and waits for the thread.
 * Thread-safe: request threads call submit, status and download at any time.
 */
#ifndef MS_EXPORT_JOBS_H
#define MS_EXPORT_JOBS_H

#include "export/export.h"

typedef struct export_jobs export_jobs;

typedef ms_code (*export_jobs_audit_fn)(void *ctx, const char *user, const char *role, const char *client,
                                        const char *export_id, export_scope scope, const patient_id *pids, size_t npids,
                                        ms_err *e);

typedef struct {
    store *store;
    const schema *schema;
    const char *data_dir;
    uint32_t keep;      /* exports held (0: 8) */
    int64_t link_ttl_s; /* lifetime of a download link (0: 300) */
    const char *created_by;
    export_jobs_audit_fn audit;
    void *audit_ctx;
} export_jobs_options;

typedef struct {
    export_scope scope;
    export_format format;
    int compression;         /* export_compression_names */
    int64_t as_of;           /* resolved by the caller */
    const char *snapshot_id; /* or NULL */
    const char *type;        /* or NULL */
    int64_t since, until;
    const char *user, *role, *client;
} export_job_spec;

ms_code export_jobs_start(export_jobs **out, const export_jobs_options *o, ms_err *e);
void export_jobs_stop(export_jobs *j);
/* Queue an export; id receives "exp_" + 16 hex digits. */
ms_code export_jobs_submit(export_jobs *j, const export_job_spec *s, char id[24], ms_err *e);
/* The export's progress as JSON: {"export_id","state":"queued"|"running"|"done"|"failed","phase","scope",
 * "format","as_of","snapshot_id","records_scanned","rows","files_written","bytes","record_rows",
 * "patient_rows","error","download","download_expires_at","manifest"}; "download" (a fresh signed link) and
 * "manifest" only when full and done (a PHI export's manifest names its files by event day: what a role that
 * may not read patients must not learn). MS_ENOTFOUND: no such export (any more). *scope receives its scope. */
ms_code export_jobs_status(export_jobs *j, const char *id, bool full, buf *out, export_scope *scope, ms_err *e);
/* A link's archive: MS_EINVAL (refused: bad signature, expired; the message says which), MS_ENOTFOUND (no
 * such finished export); else an open fd on the archive, its size, and who made the export. */
ms_code export_jobs_download(export_jobs *j, const char *id, const char *exp, const char *sig, int *fd, uint64_t *size,
                             export_scope *scope, char user[72], ms_err *e);
/* A patient was erased: every finished export is withdrawn (its files removed; its status "failed" with
 * "withdrawn: ..."), and so is the running one when it ends. Exports run after the erasure's commit never
 * see the patient (its versions are erased in place), so queued ones stay. */
uint32_t export_jobs_withdraw(export_jobs *j); /* returns how many */
/* What earlier runs left in DATA/exports (a server killed or crashed before it could remove its exports: PHI
 * in the clear), removed, as a start does; *removed (may be NULL) receives how many exports that was. For
 * a process that holds the data directory's lock with no server in it (`medstream erase`). */
ms_code export_jobs_remove_left(const char *data_dir, uint32_t *removed, ms_err *e);
/* The signature of a link (hex, 64 digits). */
void export_link_sign(const unsigned char id_key[32], const char *id, int64_t exp, char hex[65]);

#endif

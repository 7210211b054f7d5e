/*
 * from_server.h - `medstream export --url URL --token T`: the server does the export (POST /v1/exports),
 * this polls its progress (GET /v1/exports/{id}), downloads the archive through the signed link the
 * finished export answers with (GET /v1/exports/{id}/download?exp=…&sig=…), checks every file against
 * the manifest's SHA-256 and row-free byte counts, and makes it visible in OUT as an offline export does
 * (OUT/.medstream-export-tmp, then renamed into place, manifest.json last).
 *
 * Contract: OUT is checked before anything is asked of the server (absent or empty, or overwrite); a
 * failed or stopped run leaves nothing visible in OUT. The archive is never held in memory: it is
 * streamed to a temporary file inside OUT/.medstream-export-tmp (unlinked from the start: gone when the
 * run ends, however it ends) and extracted from there a chunk at a time, so the client's memory is a few
 * MiB (and the manifest) whatever the export's size; OUT's file system needs room for the export plus
 * about a chunk where it can free the archive's bytes as they are extracted (punching holes), twice the
 * export where it cannot. Messages carry the server's error text (which names fields, never values) and
 * HTTP statuses. Must never: exit, or leave anything of a failed run visible in OUT.
 */
#ifndef MS_EXPORT_FROM_SERVER_H
#define MS_EXPORT_FROM_SERVER_H

#include "base/util.h"

#include <stdatomic.h>
#include <stdio.h>

typedef struct {
    const char *url, *token, *out_dir;
    bool overwrite;
    const char *scope, *format, *compression, *as_of, *type, *since,
        *until; /* as POST /v1/exports takes them (NULL: absent) */
    unsigned poll_ms;
    const atomic_bool *stop;
    FILE *progress; /* a progress line, redrawn, or NULL */
} export_client_request;

typedef struct {
    char export_id[40];
    char as_of[40];
    uint64_t record_rows, patient_rows, files, bytes;
} export_client_result;

ms_code export_from_server(const export_client_request *r, export_client_result *res, ms_err *e);

#endif

/*
 * reproject.h - schema versions at start and the background re-projection of the public copies
 * (store.h, "Schema versions"; src/store/README.md, "Schema versions").
 *
 * At start (serve, and offline commands that write public copies), the schema in force is recorded in the
 * store by its canonical text (pipeline/schema_canon.h). A schema that differs from the stored one becomes
 * a new version and the target of a re-projection: this thread recomputes every stored record version's
 * and patient version's public copy under it, in steps of their own short transactions (the ingest
 * writer waits at most one step for LMDB's writer lock and goes on meanwhile), from a cursor stored in
 * the store (a restart, even after kill -9, resumes; a step done twice writes the same bytes). Until the
 * last step, public reads answer under the previous version, whose schema the writer keeps projecting new
 * versions with (writer_set_previous_schema); the last step switches the version in force atomically;
 * then the copies of versions no longer in force are deleted, in steps too. Progress is in /healthz
 * ("schema") and /metrics (medstream_schema_version, medstream_reprojection_done/_total).
 *
 * Contract: start before ingest begins (after writer_start), stop after writer_stop and before
 * store_close. Must never: put a record's value or the schema's text in a log line, a metric or an error;
 * hold a write transaction while it computes.
 */
#ifndef MS_REPROJECT_H
#define MS_REPROJECT_H

#include "ingest/writer.h"
#include "pipeline/schema.h"
#include "store/store.h"

typedef struct {
    store *store;
    writer *writer;          /* NULL: none (an offline command whose writes take their own path) */
    const schema *schema;    /* the schema in force (from schema_file, or the default) */
    const char *schema_file; /* its file (NULL: the default schema) */
    uint32_t step;           /* versions per step (0: 512, or the rate if lower) */
    uint32_t rate;           /* at most this many entries walked a second (0: no limit) */
    bool run;                /* false: record the version only, no thread (a read-only use) */
} reproject_options;

typedef struct reprojector reprojector;

/* Record the schema's version and, when a re-projection or a clean-up is due, start the thread. Errors:
 * the schema file cannot be read or is not JSON; the stored previous version's text no longer parses
 * (its copies cannot be kept up to date: named by version, never its text); the store's. */
ms_code reproject_start(reprojector **out, const reproject_options *o, ms_err *e);
/* The schema of the version in force while a re-projection to another is under way (the one public reads
 * answer under until the switch), parsed from the text the store keeps; *sv the version in force. *have false
 * when no re-projection is under way (then the server's schema is the one in force; *out untouched), else the
 * caller frees *out (schema_free). For the followers of public copies (counters, the lake) and the writer,
 * after reproject_start registered the server's schema. Errors: the store's; that text no longer parses (named
 * by version, never its text). */
ms_code reproject_schema_in_force(store *s, schema *out, uint32_t *sv, bool *have, ms_err *e);
/* Wait until the re-projection is complete (tests, offline commands that want it done); false on stop. */
bool reproject_wait(reprojector *r);
/* Stop the thread (a step in progress finishes; the cursor is in the store) and free. NULL is fine. */
void reproject_stop(reprojector *r);

#endif

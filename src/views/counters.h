/*
 * counters.h - the live rolling-window counters of a server (issue 13): the set of counters (from
 * `serve --counters FILE` and from POST /v1/counters), a follower of the store's commit log that keeps
 * them exact, the building of a new counter from the records already stored, their state saved for a
 * fast restart, and the queries. src/views/README.md has the design; counter.h the counting structure;
 * counter_def.h the definitions.
 *
 * EXACT UNDER THE STORE'S SEMANTICS. A counter counts the live records (each record id's current version,
 * not a tombstone) whose event time is in the window and that match its type and where. The follower
 * reads each commit-log entry in order from its own position (as the sinks do, in read transactions of
 * its own, on its own thread: never on the writer's path) and, for every record version the commit wrote,
 * takes away what the version it replaced counted (store_record_before) and adds what the new one counts:
 * a duplicate writes no version and changes nothing; a new version that changes the type, the event time,
 * the parent or the condition's field moves the count; a tombstone takes it away. A counter on public
 * fields only is computed from the public copy (store_public_record_version: what public:read may see);
 * one on another field from the record's body.
 *
 * A NEW COUNTER (POST, or a definition without saved state) is built by a scan of the records live as of
 * the commit position P the follower had when building began (store_records_scan at P's commit time, in
 * steps of 10,000 record ids, each its own read transaction), then catches up on the entries after P
 * itself, and joins the follower once it has reached the follower's position (between two entries).
 * Queries to it meanwhile wait up to 2 s, then answer 503 "being built".
 *
 * SCHEMA VERSIONS. Counters are counted under the schema version in force: during a re-projection the old
 * one (its public copies, public or PHI by its schema), as public reads answer; at the switch every counter
 * on public copies (before or after) is built again from the stored records under the new one (503 "being
 * built" meanwhile); a counter on the bodies under both keeps its counts. A query waits for the counters to
 * be under the version in force when it began (up to 1 s, then 503).
 *
 * RESTART. Every 5 s (if anything changed) and at a clean stop, the follower writes DATA/counters.state
 * (temporary file, fdatasync, rename, directory fsync): the position and its commit time, the schema
 * version, and per counter its canonical definition, counter_save's bytes and whether it read the public
 * copies. A start loads it, keeps the counters whose definition is unchanged and that were counted as they
 * are now (from the bodies, or from the public copies of the version in force now: a public counter saved
 * under another version is built again), and replays the entries after the saved position (at most ~5 s of
 * commits after kill -9); counters whose definition changed or is new are built as above; a state whose
 * position this store does not have (or has with another commit time: a store restored from an older copy),
 * or saved without its schema version (MSCS1, an older medstream), is ignored.
 *
 * QUERIES are read-your-writes by default: a query first waits (up to 1 s) until the follower has applied
 * every commit acknowledged before it began, then answers in O(log B) under the counter's lock. With
 * at_once (`fresh=false`) it answers at once, exact as of the commit position it reports (under load a few
 * milliseconds behind the last commit).
 *
 * Contract: thread-safe; the follower and the builder are threads of their own; nothing here writes a
 * record value to a log line, a metric or an error (counter names only, which are not PHI; a definition's
 * where values may be PHI: they appear only in answers to callers allowed to read that counter).
 */
#ifndef MS_COUNTERS_H
#define MS_COUNTERS_H

#include "ingest/writer.h"
#include "pipeline/schema.h"
#include "store/store.h"
#include "views/counter.h"
#include "views/counter_def.h"

typedef struct counters counters;

typedef struct {
    store *store;
    writer *writer; /* definitions made over HTTP are written through it */
    const schema *schema;
    const char *data_dir;   /* the state file: DATA/counters.state */
    const char *file;       /* serve --counters FILE: a JSON array of definitions (NULL: none) */
    double save_interval_s; /* 0: 5 s */
} counters_options;

/* Load the definitions (the file's, then those defined over HTTP, kept in the store), the saved state,
 * and start the follower and the builder. Errors: MS_EINVAL the file is not a JSON array of valid
 * definitions (the message names the file, the entry and the key) or names a counter twice; MS_EIO the
 * file cannot be read. A definition of the file replaces one of the same name defined over HTTP (logged). */
ms_code counters_start(counters **out, const counters_options *o, ms_err *e);
/* Stop the threads and save the state. NULL is a no-op. */
void counters_stop(counters *c);

/* POST /v1/counters: a new counter, built from the stored records in the background; its canonical
 * definition is appended to out. The definition and its audit entry ev commit together. Errors: MS_EINVAL a bad
 * definition (names the key); MS_ECONFLICT the name is taken; a store failure keeping the definition (MS_EFULL,
 * MS_EIO). */
ms_code counters_define(counters *c, const char *json, size_t len, const audit_event *ev, buf *out, ms_err *e);
/* DELETE /v1/counters/{name}, with its audit entry ev in the same commit. Errors: MS_ENOTFOUND;
 * MS_ECONFLICT a counter of --counters FILE (remove it there); a store failure. */
ms_code counters_remove(counters *c, const char *name, const audit_event *ev, ms_err *e);

/* Is there such a counter, and is it readable with public:read (else patients:read)? */
bool counters_lookup(counters *c, const char *name, bool *is_public, bool *per_parent);
/* GET /v1/counters: {"counters":[...]}: every public counter, and the PHI ones when with_phi. Returns how
 * many PHI counters it lists (their definitions' where values may be PHI: the caller audits the read). */
uint32_t counters_list(counters *c, bool with_phi, buf *out);

typedef struct {
    int64_t window_us;  /* 0: the counter's max_window */
    int64_t at;         /* INT64_MAX: now */
    const char *parent; /* NULL: all */
    size_t parent_len;
    bool at_once;     /* answer from what the counters hold now, without waiting for the last commits */
    bool public_only; /* the caller may read public counters only (it found this one public: counters_lookup) */
} counter_query;

/* The commit-log position up to which every counter is exact: the follower's, or while counters are
 * built again after an erasure (they cannot take an erased version away one by one), the position
 * before that erasure (the erasure certificate's "counters" view is done once this reaches it). */
uint64_t counters_settled(counters *c);

/* GET /v1/counters/{name}: the answer's JSON, {"name","window","at","from","to","count","resolution",
 * "position","source"}. Errors: MS_ENOTFOUND; MS_EINVAL a bad window, at or parent (names it);
 * MS_ESTOPPED the counter is still being built, the follower is over 1 s behind (or not yet under the schema
 * version in force), or public_only and the counter is PHI under the version now in force (503: retry). */
ms_code counters_query(counters *c, const char *name, const counter_query *q, buf *out, ms_err *e);

#endif

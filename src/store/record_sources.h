/*
 * record_sources.h - a patient's stored records read back as merge sources (merge.h), for the two
 * places that recompute a state from records instead of adding one record to it: the writer, after a
 * record moved away, was deleted or replaced by a version that gives up a value it held; and the read
 * side, for `event_at` reads (the state merged from the records about the past).
 *
 * DESIGN: a store_record_fn (store.h) to pass to store_live_records / store_write_live_records: each
 * live record's body is read back from the segment log (checked against its hash) and re-scanned for its
 * top-level fields, into the caller's arena. Records can be left out (one record id; event times after
 * a bound) and one source not yet stored can be added (the record of the commit in progress).
 *
 * Contract: reads record bodies, never writes; allocates only in the caller's arena (and its own
 * scratch buffer, freed by record_sources_free). Cost: one body read and one scan per record, so it is
 * for the rare recomputations, never the per-record ingest path.
 */
#ifndef MS_RECORD_SOURCES_H
#define MS_RECORD_SOURCES_H

#include "pipeline/merge.h"
#include "store/store.h"

typedef struct {
    /* in */
    store *store;
    arena *mem;
    const char *skip; /* a record id to leave out (NULL: none) */
    size_t skip_len;
    int64_t ts_max; /* leave out records with a later event time (INT64_MAX: none) */
    ms_err *e;
    /* out */
    merge_source *src;
    uint32_t n, cap;
    ms_code rc; /* the first failure (the walk stops there) */
    /* private */
    buf body;
} record_sources;

/* The store_record_fn: read back rv and add it (ctx is a record_sources). */
bool record_sources_add(void *ctx, const record_version *rv);
/* Add a source that is not a stored record (the record of the commit in progress). */
void record_sources_push(record_sources *g, const merge_source *m);
void record_sources_free(record_sources *g);

#endif

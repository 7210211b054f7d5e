/*
 * record_sources.h - a patient's stored records read back as merge sources (merge.h), for the two
 * places that recompute a state from records instead of adding one record to it: the writer, after a
 * record moved away, was deleted or replaced by a version that gives up a value it held; and the read
 * side, for `event_at` reads (the state merged from the records about the past).
 *
 * DESIGN: a store_record_fn (store.h) to pass to store_live_records / store_write_live_records: each
 * live record's body is read back from the segment log (checked against its hash) and re-scanned for its
 * top-level fields, into the caller's arena. One record can be left out (by id; event times after a bound are
 * left out by the walk, store_live_records) and one source not yet stored can be added (the record of the
 * commit in progress).
 *
 * Reading only what can win (`decide`). The walk comes newest event time first, and a field's value is the
 * one of the record latest in event time (merge.h), so once every field the merged state can hold has been
 * seen in a record, no older record can change the merge: the walk stops at the next older event time
 * (records of one event time are all read: between them commit time and position decide). Which fields the
 * state can hold: those of a state that holds every field of the records walked (a patient's state holds
 * every patient field of its live records, so the state they are recomputed for, or the state as of the
 * instant an event_at read is made at, is one). The added source (the record of the commit in progress) counts
 * as read once the walk reaches records older than it. A field of the list that no record holds keeps the walk
 * going to the end, which is the whole walk, as without `decide`. A patient of ~193,000 records was read whole
 * for each recompute (1.4-1.6 s of the writer) and each event_at read (0.9-1.2 s); now the records of its newest
 * event times are (README.md, "A merge reads the newest records it needs").
 *
 * Contract: reads record bodies, never writes; allocates only in the caller's arena (and its own
 * scratch buffer, freed by record_sources_free). Cost: one body read and one scan per record read, so it
 * is for the rare recomputations, never the per-record ingest path.
 *
 * Must never: stop before a record that could win a field of the merge (one with the event time of the last
 * record read, or a field of `decide` no record read holds yet).
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
    const state_field *decide; /* sorted by key: every field the merge can hold (above); NULL: read every record */
    uint32_t ndecide;
    ms_err *e;
    /* out */
    merge_source *src;
    uint32_t n, cap;
    ms_code rc; /* the first failure (the walk stops there) */
    /* private */
    buf body;
    bool *seen;                        /* per field of decide: held by a record read */
    uint32_t unseen;                   /* fields of decide not seen yet */
    int64_t group_ts;                  /* the event time of the last record read */
    const record_field *pushed_fields; /* an added source's fields, seen once the walk is older than it */
    uint32_t npushed;                  /* 0: none (left) */
    int64_t pushed_ts;
} record_sources;

/* The store_record_fn: read back rv and add it (ctx is a record_sources); false once the walk can stop (g->rc
 * MS_OK) or on a failure (g->rc). */
bool record_sources_add(void *ctx, const record_version *rv);
/* Add a source that is not a stored record (the record of the commit in progress); before the walk when it
 * uses decide. */
void record_sources_push(record_sources *g, const merge_source *m);
void record_sources_free(record_sources *g);

#endif

/*
 * merge.h - stage 2b: a patient's state is the field-by-field merge of its live records in EVENT-TIME
 * order: for each field, the value of the record with the latest event time (`ts`) wins; ties go to the
 * later commit, and within one commit to the record stored later in the segment log. So a record about
 * 2019 that arrives today never overrides a value recorded for 2026, and re-sending records in any
 * arrival order yields the same state. Each change of state is a new patient version.
 *
 * State fields are references (segment position, length, hash) to value bytes already stored in record
 * bodies, each with its place in that order (the event time and commit time of the record that set it),
 * so adding a record costs O(fields of the state + fields of the record) and never reads a stored value.
 * A field also carries a pointer to its value bytes when they are at hand (the merged record's body, or
 * the previous version's, which the store holds inline when short): the merge passes them on, never reads
 * them; the store's encoder keeps the short ones inline, so that a read of them touches no body.
 * Removing a record (moved to another patient, replaced by a version that drops a field, deleted) cannot
 * be done that way: the caller recomputes the state from the patient's remaining records with
 * merge_records. Record-level fields (record id, type, event time) are not patient attributes.
 *
 * Contract: pure; compares values by (length, XXH3-64) of their raw JSON text; never reads or writes
 * anything but its arguments and the caller's arena.
 */
#ifndef MS_MERGE_H
#define MS_MERGE_H

#include "pipeline/record_scan.h"
#include "pipeline/schema.h"

/* A field of a patient's state: a reference to value bytes stored in a record body (the store keeps
 * these in patient versions; the merge only compares them). */
typedef struct {
    const char *key; /* points into a stored value, a record body or an arena */
    uint32_t key_len;
    uint64_t pos; /* value bytes in the segment log */
    uint32_t len;
    uint64_t hash;     /* XXH3-64 of the value bytes */
    int64_t ts;        /* event time of the record that set it ... */
    int64_t vf;        /* ... and that record version's commit time: with pos, the field's place in the event-time
                          order (merge.h); INT64_MIN in versions written before the order was kept */
    uint32_t off;      /* the value's offset in its record when the record is sealed (encrypted at rest), else 0 */
    uint64_t sealer;   /* 1 + the number of the patient whose data key sealed it; 0: a plain body */
    const char *value; /* its len value bytes (plaintext) when the holder of this field has them at hand (the
                          merge: its record's body; a decoded patient version: the ones it holds inline),
                          with the lifetime of key; NULL: only in the record body */
} state_field;

/* One record as the merge sees it: its fields (values inside body, which starts at body_pos in the
 * segment log) and its place in the event-time order. */
typedef struct {
    const record_field *fields; /* sorted by key */
    uint32_t nfields;
    const char *body;
    uint32_t body_len;
    uint64_t body_pos;
    int64_t ts;         /* event time */
    int64_t valid_from; /* commit time of this record version */
    uint64_t sealer;    /* 1 + the patient number whose data key sealed the body; 0: a plain body */
} merge_source;

typedef struct {
    state_field *fields; /* sorted by key, allocated in the caller's arena */
    uint32_t nfields;
    uint32_t changed;    /* fields added, removed or whose value changed */
    uint32_t moved;      /* fields whose value stayed but is now held by a record later in event time: the
                            state must record it (a late-arriving older record must still lose to it);
                            values unchanged, so the writer restates the version in place (no new one) */
    bool public_changed; /* some changed field is on the public allow-list */
} merge_result;

/* The state after adding record r to state prev. */
void merge_apply(const schema *s, const state_field *prev, uint32_t nprev, const merge_source *r, arena *mem,
                 merge_result *out);

/* The state made of these records alone (sorts src into event-time order). changed and public_changed
 * compare it with prev (the state it replaces; NULL/0 for none). */
void merge_records(const schema *s, merge_source *src, uint32_t n, const state_field *prev, uint32_t nprev, arena *mem,
                   merge_result *out);

/* Does the record whose body lies at [pos, pos + len) hold the winning value of any field of the state? */
bool merge_contributes(const state_field *state, uint32_t n, uint64_t pos, uint32_t len);

/* Would adding r win every field that the record at [pos, pos + len) holds in the state? Then replacing
 * that record by r is exactly merge_apply (no recomputation needed). */
bool merge_supersedes(const state_field *state, uint32_t n, uint64_t pos, uint32_t len, const merge_source *r);

/* Does replacing the record at [pos, pos + len) by r need the state merged again from the patient's
 * records: it holds a winning value that r does not win (merge_contributes, not merge_supersedes)? The
 * writer's question (writer.c), asked ahead of it too (ingest.c, to read those records early). */
bool merge_replacing_recomputes(const state_field *state, uint32_t n, uint64_t pos, uint32_t len,
                                const merge_source *r);

#endif

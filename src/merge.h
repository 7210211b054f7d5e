/*
 * merge.h - stage 2b: a patient's state is the field-by-field merge of its records in commit order
 * (a later value wins); each change of state is a new patient version.
 *
 * State fields are references (segment position, length, hash) to value bytes already stored in record
 * bodies, so a new version costs a few dozen bytes per field and never copies a value. Record-level
 * fields (record id, type, event time) are not patient attributes and are not merged.
 * Contract: pure; compares values by (length, XXH3-64) of their raw JSON text.
 */
#ifndef MS_MERGE_H
#define MS_MERGE_H

#include "record_scan.h"
#include "schema.h"
#include "store.h"

typedef struct {
    state_field *fields; /* sorted by key, allocated in the caller's arena */
    uint32_t nfields;
    uint32_t changed;    /* fields added or whose value changed */
    bool public_changed; /* some changed field is on the public allow-list */
} merge_result;

/* body_pos: where r->body starts in the segment log. */
void merge_patient_state(const schema *s, const state_field *prev, uint32_t nprev, const parsed_record *r,
                         uint64_t body_pos, arena *mem, merge_result *out);

#endif

/*
 * deidentify.h - stage 3: the public (de-identified) copy of a record and of a patient's state.
 *
 * Contract: an ALLOW-list, never a deny-list. Only fields the schema names as public are written, each
 * through its transform (copy, or generalize a date/time to its year); a field whose value cannot be
 * transformed is left out, never copied raw. Identity fields cannot be allow-listed (schema.c refuses).
 * Output is a JSON object text. Pure functions.
 */
#ifndef MS_DEIDENTIFY_H
#define MS_DEIDENTIFY_H

#include "pipeline/record_scan.h"
#include "pipeline/schema.h"
#include "pipeline/merge.h"
#include "base/util.h"

/* {"favorite_color":"blue","type":"lab","ts":"2026"}: the allow-listed fields of a record, in
 * allow-list order. */
void deid_record_fields(const schema *s, const record_field *fields, uint32_t n, buf *out);

/* Stage 3 on a record that passed stages 1 and 2: r->public_fields (in mem) = deid_record_fields. */
void deid_record(const schema *s, parsed_record *r, arena *mem);

/* The public projection of a patient's state: the allow-listed fields of the state, in allow-list order,
 * each through its transform. vals[i] is the value text of state[i] (only the public ones are read; the
 * others may be NULL). Record fields (id, type, event time) are not part of a patient's state. */
void deid_patient_fields(const schema *s, const state_field *state, uint32_t n, const char *const *vals, buf *out);

/* Which fields of the state deid_patient_fields reads: true for an allow-listed patient field. */
bool deid_patient_field_public(const schema *s, const state_field *f);

#endif

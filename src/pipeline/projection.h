/*
 * projection.h - the ONE place a public copy is computed from stored or incoming values: a record
 * version's public fields and a patient state's public fields, under a given schema. The ingest writer
 * (each new version, under the version in force and, during a re-projection, under the target too) and
 * the re-projection (every stored version under a new schema) both call these, never deid_* directly, so
 * that a change of what a projection needs (per-patient secrets of the transforms, derived from the
 * record's identity key) is a change here only.
 *
 * Contract: pure functions over buffers (deidentify.h's allow-list rules); identity_key (the normalized
 * identity of the record's patient, identity.h; may be NULL with length 0 where the caller does not have
 * it) is what per-patient transforms will derive their secrets from: today's transforms need none.
 * Must never: publish a field the schema does not allow-list (deidentify.h does the work).
 */
#ifndef MS_PROJECTION_H
#define MS_PROJECTION_H

#include "pipeline/deidentify.h"

/* The public fields (a JSON object text) of a record's fields under s, appended to out. */
void projection_record(const schema *s, const record_field *fields, uint32_t n, const char *identity_key,
                       size_t identity_key_len, buf *out);

/* Which fields of a patient state projection_patient reads (the others' values may be NULL). */
bool projection_patient_reads(const schema *s, const state_field *f);

/* The public fields of a patient state under s (vals[i]: the value text of state[i]), appended to out. */
void projection_patient(const schema *s, const state_field *state, uint32_t n, const char *const *vals,
                        const char *identity_key, size_t identity_key_len, buf *out);

#endif

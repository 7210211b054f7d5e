/*
 * projection.h - the ONE place a public copy is computed from stored or incoming values: a record
 * version's public fields and a patient state's public fields, under a given schema. The ingest writer
 * (each new version, under the version in force and, during a re-projection, under the target too) and
 * the re-projection (every stored version under a new schema) both call these, never deid_* directly, so
 * that what a projection needs besides the schema (the keyed transforms' secrets, derived by
 * transforms.h's tf_patient_keys from the store's deid key and the patient's identity key; the event
 * time of the age transforms) is passed in one way.
 *
 * Contract: pure functions over buffers (deidentify.h's allow-list rules). Must never: publish a field
 * the schema does not allow-list (deidentify.h does the work), derive a secret other than through
 * tf_patient_keys.
 */
#ifndef MS_PROJECTION_H
#define MS_PROJECTION_H

#include "pipeline/deidentify.h"

/* Whose copy: the store's deid key (32 bytes) and the patient's identity key (identity.h). Either NULL:
 * the keyed transforms' fields are left out. */
typedef struct {
    const unsigned char *deid_key;
    const char *identity_key;
    size_t identity_key_len;
} projection_who;

/* The public fields (a JSON object text) of a record's fields under s, at its event time, appended to out. */
void projection_record(const schema *s, const projection_who *who, int64_t event_us, const record_field *fields,
                       uint32_t n, buf *out);

/* Which fields of a patient state projection_patient reads (the others' values may be NULL). */
bool projection_patient_reads(const schema *s, const state_field *f);

/* The public fields of a patient state under s (vals[i]: the value text of state[i]), its ages counted to
 * the state's latest event time, appended to out. */
void projection_patient(const schema *s, const projection_who *who, const state_field *state, uint32_t n,
                        const char *const *vals, buf *out);

#endif

/*
 * projection.c - public copies under a schema: the one wrapper over deidentify.h (see projection.h).
 */
#include "pipeline/projection.h"

void projection_record(const schema *s, const record_field *fields, uint32_t n, const char *identity_key,
                       size_t identity_key_len, buf *out)
{
    (void)identity_key; /* per-patient transform secrets will be derived from it */
    (void)identity_key_len;
    deid_record_fields(s, fields, n, out);
}

bool projection_patient_reads(const schema *s, const state_field *f) { return deid_patient_field_public(s, f); }

void projection_patient(const schema *s, const state_field *state, uint32_t n, const char *const *vals,
                        const char *identity_key, size_t identity_key_len, buf *out)
{
    (void)identity_key;
    (void)identity_key_len;
    deid_patient_fields(s, state, n, vals, out);
}

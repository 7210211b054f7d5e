/*
 * projection.c - public copies under a schema: the one wrapper over deidentify.h (see projection.h).
 */
#include "pipeline/projection.h"

/* The keyed transforms' secrets of who under s, into k; NULL when s needs none or who cannot give them. */
static const tf_keys *keys_of(const schema *s, const projection_who *who, tf_keys *k)
{
    if (!deid_needs_keys(s) || !who || !who->deid_key) return NULL;
    tf_patient_keys(who->deid_key, who->identity_key, who->identity_key ? who->identity_key_len : 0, k);
    return k;
}

void projection_record(const schema *s, const projection_who *who, int64_t event_us, const record_field *fields,
                       uint32_t n, buf *out)
{
    tf_keys k;
    deid_ctx cx = {.event_us = event_us, .keys = keys_of(s, who, &k)};
    deid_record_fields(s, &cx, fields, n, out);
}

bool projection_patient_reads(const schema *s, const state_field *f) { return deid_patient_field_public(s, f); }

void projection_patient(const schema *s, const projection_who *who, const state_field *state, uint32_t n,
                        const char *const *vals, buf *out)
{
    tf_keys k;
    deid_ctx cx = {.event_us = deid_patient_event_time(state, n), .keys = keys_of(s, who, &k)};
    deid_patient_fields(s, &cx, state, n, vals, out);
}

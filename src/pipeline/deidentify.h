/*
 * deidentify.h - stage 3: the public (de-identified) copy of a record and of a patient's state.
 *
 * Contract: an ALLOW-list, never a deny-list. Only the paths the schema names as public are written,
 * each through its transform (transforms.h); a value that cannot be transformed is left out, never
 * copied raw. The output mirrors the input's shape: "address.zip" publishes {"address":{"zip":"021"}},
 * "codes[]" an array of the transformed elements (an element that cannot be transformed is left out),
 * "codes[].code" an array of objects holding code; an object or array element left with nothing
 * published is left out. Members are written in allow-list order. Identity fields only through their
 * transforms (schema.c refuses anything else). Output is a JSON object text. Pure functions: the keys
 * of the keyed transforms come in through deid_ctx (derived by transforms.h's tf_patient_keys).
 */
#ifndef MS_DEIDENTIFY_H
#define MS_DEIDENTIFY_H

#include "pipeline/record_scan.h"
#include "pipeline/schema.h"
#include "pipeline/merge.h"
#include "pipeline/transforms.h"
#include "base/util.h"

/* What the time- and key-dependent transforms need. */
typedef struct {
    int64_t event_us;    /* age, age_band and the dob's 90+ year: a record's event time, or a patient's latest
                            (deid_patient_event_time); INT64_MIN: unknown, those fields are left out */
    const tf_keys *keys; /* date_shift and pseudonym; NULL: those fields are left out */
} deid_ctx;

/* {"favorite_color":"blue","type":"lab","ts":"2026"}: the allow-listed paths of a record's fields. cx
 * NULL: no event time and no keys. */
void deid_record_fields(const schema *s, const deid_ctx *cx, const record_field *fields, uint32_t n, buf *out);

/* Does the schema use a keyed transform (date_shift, pseudonym)? Only then are keys derived. */
bool deid_needs_keys(const schema *s);

/* Stage 3 on a record that passed stages 1 and 2: r->public_fields (in mem) = deid_record_fields at the
 * record's event time, under the keys of its identity (tf_patient_keys with deid_key, 32 bytes; NULL:
 * keyed fields left out). */
void deid_record(const schema *s, const unsigned char *deid_key, parsed_record *r, arena *mem);

/* The public projection of a patient's state: the allow-listed paths of the state's (top-level) fields,
 * in allow-list order, each through its transform. vals[i] is the value text of state[i] (only the
 * public ones are read; the others may be NULL). Record fields (id, type, event time) are not part of a
 * patient's state. */
void deid_patient_fields(const schema *s, const deid_ctx *cx, const state_field *state, uint32_t n,
                         const char *const *vals, buf *out);

/* A patient's event time for age transforms: the latest event time of the records its state's values
 * come from (INT64_MIN if none is known). */
int64_t deid_patient_event_time(const state_field *state, uint32_t n);

/* Which fields of the state deid_patient_fields reads: true for a top-level field some public path
 * starts at, unless it is a record field. */
bool deid_patient_field_public(const schema *s, const state_field *f);

#endif

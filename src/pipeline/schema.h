/*
 * schema.h - which input fields play which role (DESIGN.md "Data model"): identity (name, dob),
 * record id, type, event time, and the ALLOW-list of public fields with their transforms.
 *
 * Contract: a schema is loaded once (default or from a JSON file) and then only read, from any thread.
 * schema_load refuses a schema that would publish an identity field: PHI must never be allow-listed.
 * Every field not on the allow-list is PHI, including fields nobody has seen yet.
 */
#ifndef MS_SCHEMA_H
#define MS_SCHEMA_H

#include "base/util.h"

typedef enum {
    PUBLISH_COPY = 0, /* value copied as is */
    PUBLISH_YEAR,     /* a date or RFC 3339 time generalized to its year, as a string ("2026") */
} publish_transform;

#define SCHEMA_MAX_PUBLIC 64

typedef struct {
    char *field;
    publish_transform transform;
} schema_public_field;

typedef struct {
    char *name_field; /* identity: name */
    char *dob_field;  /* identity: date of birth */
    char *record_id_field;
    char *type_field;
    char *ts_field; /* event time */
    char *default_type;
    schema_public_field pub[SCHEMA_MAX_PUBLIC];
    int npub;
} schema;

void schema_default(schema *s);
/* Parse a schema file's JSON text (a leading UTF-8 byte-order mark is skipped); errors name the key or
 * field (schema field names are not PHI). On error *s is left empty (schema_free is safe). Format:
 * {"identity":{"name":"name","dob":"dob"},"record_id":"record_id","type":"type","event_time":"ts",
 *  "default_type":"record","public":{"favorite_color":"copy","type":"copy","ts":"year"}} */
ms_code schema_parse(schema *s, const char *text, size_t len, ms_err *e);
ms_code schema_load_file(schema *s, const char *path, ms_err *e);
void schema_free(schema *s);

/* The allow-list entry for a field key, or NULL if the field is PHI. */
const schema_public_field *schema_public(const schema *s, const char *key, size_t key_len);
/* True for the fields that describe the record rather than the patient (record id, type, event time):
 * they are not merged into the patient's state. */
bool schema_is_record_field(const schema *s, const char *key, size_t key_len);

#endif

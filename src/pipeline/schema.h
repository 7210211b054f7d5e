/*
 * schema.h - which input fields play which role (DESIGN.md "Data model"): identity (name, dob),
 * record id, type, event time, parent (a record id: children are listed by it), and the ALLOW-list of
 * public fields with their transforms; and, for CSV input (csv.h), which column is which field, the
 * types of fields, and the date format of the dob column.
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
#define SCHEMA_MAX_COLUMNS 1024 /* entries of "columns" and of "types" (a record has at most 1024 fields) */
#define SCHEMA_FIELD_MAX 1024   /* bytes of a field or column name (a record's field names are as long) */

/* The type of a field's values in CSV input (a CSV cell is text: the schema says what else it is). */
typedef enum {
    FIELD_STRING = 0, /* the default */
    FIELD_NUMBER,     /* a JSON number, written unquoted */
    FIELD_BOOLEAN,    /* true/false (any case) or 1/0, written as true/false */
} field_type;

typedef struct {
    char *column; /* a CSV header's column name */
    char *field;  /* the record field it becomes */
} schema_column;

typedef struct {
    char *field;
    field_type type;
} schema_field_type;

typedef struct {
    char *field;
    publish_transform transform;
} schema_public_field;

typedef struct {
    char *name_field; /* identity: name */
    char *dob_field;  /* identity: date of birth */
    char *record_id_field;
    char *type_field;
    char *ts_field;     /* event time */
    char *parent_field; /* parent: the record id of this record's parent (children are listed by it) */
    char *default_type;
    schema_public_field pub[SCHEMA_MAX_PUBLIC];
    int npub;
    /* CSV input (csv.h); none of these applies to JSON input */
    schema_column *columns; /* "columns": header name -> field name; a column not listed keeps its name */
    int ncolumns;
    schema_field_type *types; /* "types": field -> number or boolean; a field not listed is a string */
    int ntypes;
    char *dob_format; /* "dob_format" (timefmt.h): the dob column's date format, converted to YYYY-MM-DD;
                         NULL: the cell is taken as it is (and must be YYYY-MM-DD) */
} schema;

void schema_default(schema *s);
/* Parse a schema file's JSON text (a leading UTF-8 byte-order mark is skipped); errors name the key or
 * field (schema field names are not PHI). On error *s is left empty (schema_free is safe). Format:
 * {"identity":{"name":"name","dob":"dob"},"record_id":"record_id","type":"type","event_time":"ts",
 *  "parent":"parent_id","default_type":"record","public":{"favorite_color":"copy","type":"copy","ts":"year"},
 *  "columns":{"Patient Name":"name","Birth Date":"dob"},"types":{"weight":"number","smoker":"boolean"},
 *  "dob_format":"%m/%d/%Y"}
 * The CSV keys: "columns" maps header names (exact, case-sensitive) to field names, each column at most
 * once; "types" gives fields (after the mapping) the type "string", "number" or "boolean" — the identity
 * fields, the record id, the type and the event time are strings and cannot be typed otherwise;
 * "dob_format" is a date format of timefmt.h (%Y %m %d %b %%). */
ms_code schema_parse(schema *s, const char *text, size_t len, ms_err *e);
ms_code schema_load_file(schema *s, const char *path, ms_err *e);
void schema_free(schema *s);

/* The allow-list entry for a field key, or NULL if the field is PHI. */
const schema_public_field *schema_public(const schema *s, const char *key, size_t key_len);
/* True for the fields that describe the record rather than the patient (record id, type, event time):
 * they are not merged into the patient's state. */
bool schema_is_record_field(const schema *s, const char *key, size_t key_len);

/* The field a CSV column becomes: the "columns" entry's field (NUL-terminated), or NULL when the column
 * is not mapped (it keeps its own name). */
const char *schema_column_field(const schema *s, const char *column, size_t column_len);
/* The type of a field's CSV values (FIELD_STRING unless "types" says otherwise). */
field_type schema_field_type_of(const schema *s, const char *field, size_t field_len);

#endif

/*
 * schema.h - which input fields play which role (DESIGN.md "Data model"): identity (name, possibly
 * composed of several fields, and dob), record id, type, event time, parent (a record id: children are
 * listed by it), and the ALLOW-list of public fields with their transforms (transforms.h); and, for CSV
 * input (csv.h), which column is which field, the types of fields, and the date format of the dob column.
 *
 * Public entries name PATHS: "address.zip" is the member zip of the object address, "codes[]" every
 * element of the array codes, "codes[].code" the member code of every element (objects) of codes. A
 * top-level field whose own name holds '.' or "[]" cannot be published.
 *
 * Contract: a schema is loaded once (default or from a JSON file) and then only read, from any thread.
 * schema_parse refuses, naming the field: an unknown transform or parameter, a bad parameter, two paths
 * that overlap (other than a drop under a copy), and an identity field published other than through the
 * transforms allowed for it (dob: year, age, age_band; a name field: pseudonym). Every field not on the
 * allow-list is PHI, including fields nobody has seen yet.
 */
#ifndef MS_SCHEMA_H
#define MS_SCHEMA_H

#include "base/util.h"

typedef enum {
    PUBLISH_COPY = 0,   /* value copied as is (an object or array whole, less the drop entries under it) */
    PUBLISH_YEAR,       /* a date or RFC 3339 time generalized to its year, as a string ("2026"); the dob of
                           a patient aged 90 or more at the event time: "90+" */
    PUBLISH_ZIP3,       /* a 5-digit ZIP (or ZIP+4) -> its first three digits, "000" for restricted areas */
    PUBLISH_AGE,        /* a date -> whole years from it to the event time, "90+" from 90 */
    PUBLISH_AGE_BAND,   /* a date -> the age's band of `width` years ("40-49"), "90+" from 90 */
    PUBLISH_DATE_SHIFT, /* a date or time moved by the patient's secret offset of whole days */
    PUBLISH_PSEUDONYM,  /* a string or number -> keyed HMAC-SHA256, hex (store- or patient-scoped) */
    PUBLISH_DROP,       /* never published: documents intent, and leaves a member out of a copied object */
} publish_transform;

#define SCHEMA_MAX_PUBLIC 64
#define SCHEMA_PATH_MAX 8       /* segments of a public path */
#define SCHEMA_NAME_PARTS_MAX 8 /* fields of a composed name */
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
    char *name; /* a member name (decoded) */
    bool each;  /* "name[]": the member is an array; the rest of the path applies to each element */
} schema_path_seg;

typedef struct {
    char *field; /* the path as written: "favorite_color", "address.zip", "codes[]" */
    publish_transform transform;
    int width;          /* PUBLISH_AGE_BAND: years per band (default 10) */
    int max_days;       /* PUBLISH_DATE_SHIFT: offsets within +-max_days (default 365) */
    bool patient_scope; /* PUBLISH_PSEUDONYM: keyed per patient (else one key for the store) */
    schema_path_seg seg[SCHEMA_PATH_MAX];
    int nseg;
} schema_public_field;

typedef struct {
    char *name_field; /* identity: name (a composed name: its parts joined by '+', for messages) */
    char *name_parts[SCHEMA_NAME_PARTS_MAX]; /* the fields of the name, joined by one space before
                                                normalization; one part: name_field itself */
    int nname_parts;
    char *dob_field; /* identity: date of birth */
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
 * {"identity":{"name":"name" | ["given","family"],"dob":"dob"},"record_id":"record_id","type":"type","event_time":"ts",
 *  "parent":"parent_id","default_type":"record","public":{"favorite_color":"copy","type":"copy","ts":"year"},
 *  "columns":{"Patient Name":"name","Birth Date":"dob"},"types":{"weight":"number","smoker":"boolean"},
 *  "dob_format":"%m/%d/%Y"}
 * The CSV keys: "columns" maps header names (exact, case-sensitive) to field names, each column at most
 * once; "types" gives fields (after the mapping) the type "string", "number" or "boolean" — the identity
 * fields, the record id, the type and the event time are strings and cannot be typed otherwise;
 * "dob_format" is a date format of timefmt.h (%Y %m %d %b %%).
 * A public entry's value is a transform name ("copy" (or null), "year", "zip3", "age", "age_band",
 * "date_shift", "pseudonym", "drop") or an object {"transform":NAME, PARAMETERS}: age_band takes
 * "width" (1-90, default 10), date_shift "max_days" (1-3650, default 365; every date_shift entry must
 * use the same, so that a patient's dates keep their intervals across fields), pseudonym "scope"
 * ("store", the default: one value one pseudonym everywhere; "patient": keyed per patient). */
ms_code schema_parse(schema *s, const char *text, size_t len, ms_err *e);
ms_code schema_load_file(schema *s, const char *path, ms_err *e);
void schema_free(schema *s);

/* The allow-list entry whose path is exactly key (a top-level field: "ts", "favorite_color"), or NULL if
 * the field is PHI (drop entries are never returned). */
const schema_public_field *schema_public(const schema *s, const char *key, size_t key_len);
/* Does some published (not drop) path start at the top-level field key? */
bool schema_public_top(const schema *s, const char *key, size_t key_len);
/* The entry a public filter names: its path without the "[]" marks ("codes" for "codes[]",
 * "address.zip", "codes.code" for "codes[].code"), or NULL. */
const schema_public_field *schema_public_filter(const schema *s, const char *key, size_t key_len);
/* Is key one of the identity fields (a name part or the dob)? */
bool schema_is_identity_field(const schema *s, const char *key, size_t key_len);
/* Does a patient's public projection depend on its event time (age, age_band, or year on the dob)? */
bool schema_public_time_dependent(const schema *s);
/* True for the fields that describe the record rather than the patient (record id, type, event time):
 * they are not merged into the patient's state. */
bool schema_is_record_field(const schema *s, const char *key, size_t key_len);

/* The field a CSV column becomes: the "columns" entry's field (NUL-terminated), or NULL when the column
 * is not mapped (it keeps its own name). */
const char *schema_column_field(const schema *s, const char *column, size_t column_len);
/* The type of a field's CSV values (FIELD_STRING unless "types" says otherwise). */
field_type schema_field_type_of(const schema *s, const char *field, size_t field_len);

#endif

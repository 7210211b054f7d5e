/*
 * manifest.h - OUT/manifest.json of an export: what it is (export id, instant, snapshot, scope, format,
 * the schema's hash, the filters), how it is laid out (partition keys, the columns of records and
 * patients), and every file with its rows, bytes and SHA-256. Written last: its presence says the
 * export is complete. Pure: the JSON text from values.
 *
 * Format (manifest_version 1):
 *   {"manifest_version":1,"export_id","created_by","as_of","snapshot_id"|null,"scope","format",
 *    "schema_sha256","filters":{"type"|null,"since"|null,"until"|null},"partitioning":["type","date"|"year"],
 *    "columns":{"records":[{"name","type"}],"patients":[...]},"rows":{"records","patients"},
 *    "files":[{"path","rows","bytes","sha256"}]}
 * Paths are relative to OUT, with '/'. Must never: hold a value of a record.
 */
#ifndef MS_EXPORT_MANIFEST_H
#define MS_EXPORT_MANIFEST_H

#include "export/rows.h"

typedef struct {
    char *path;
    uint64_t rows, bytes;
    unsigned char sha256[32];
} manifest_file;

typedef struct {
    const char *export_id, *created_by, *snapshot_id;
    int64_t as_of;
    export_scope scope;
    export_format format;
    char schema_sha256[65];
    const char *type;
    int64_t since, until; /* INT64_MIN / INT64_MAX: none */
    const char *date_key;
    const export_columns *record_columns, *patient_columns;
    uint64_t record_rows, patient_rows;
    const manifest_file *files;
    size_t nfiles;
    uint32_t schema_version; /* the schema version of the public copies (store.h); 0: a PHI export (none) */
} manifest_info;

void manifest_json(const manifest_info *m, buf *out);
/* The SHA-256 (hex) of the schema's roles, allow-list with transforms and field types, in a canonical
 * text: two schemas with the same meaning hash the same. */
void manifest_schema_hash(const schema *s, char hex[65]);
/* The Parquet/SQL-ish name of a column type ("STRING", "JSON", "TIMESTAMP", ...). */
const char *manifest_type_name(pq_type t);

#endif

/*
 * schema.c - field roles, the public allow-list, and the CSV column map, field types and dob format
 * (see schema.h). A schema is parsed once at start; messages name keys and fields (never record values).
 */
#include "pipeline/schema.h"

#include "base/json_scan.h"
#include "base/timefmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool key_is(const char *k, size_t n, const char *s) { return strlen(s) == n && memcmp(k, s, n) == 0; }

static void add_public(schema *s, const char *field, publish_transform t)
{
    s->pub[s->npub].field = ms_strndup(field, strlen(field));
    s->pub[s->npub].transform = t;
    s->npub++;
}

void schema_default(schema *s)
{
    memset(s, 0, sizeof *s);
    s->name_field = ms_strndup("name", 4);
    s->dob_field = ms_strndup("dob", 3);
    s->record_id_field = ms_strndup("record_id", 9);
    s->type_field = ms_strndup("type", 4);
    s->ts_field = ms_strndup("ts", 2);
    s->parent_field = ms_strndup("parent_id", 9);
    s->default_type = ms_strndup("record", 6);
    add_public(s, "favorite_color", PUBLISH_COPY);
    add_public(s, "type", PUBLISH_COPY);
    add_public(s, "ts", PUBLISH_YEAR);
}

static void free_columns(schema *s)
{
    for (int i = 0; i < s->ncolumns; i++) {
        free(s->columns[i].column);
        free(s->columns[i].field);
    }
    free(s->columns);
    s->columns = NULL;
    s->ncolumns = 0;
}

static void free_types(schema *s)
{
    for (int i = 0; i < s->ntypes; i++)
        free(s->types[i].field);
    free(s->types);
    s->types = NULL;
    s->ntypes = 0;
}

void schema_free(schema *s)
{
    free(s->name_field);
    free(s->dob_field);
    free(s->record_id_field);
    free(s->type_field);
    free(s->ts_field);
    free(s->parent_field);
    free(s->default_type);
    for (int i = 0; i < s->npub; i++)
        free(s->pub[i].field);
    free_columns(s);
    free_types(s);
    free(s->dob_format);
    memset(s, 0, sizeof *s);
}

/* A schema value must be a plain string; returns it decoded (malloc'd) or NULL. */
static char *string_value(const json_member *m)
{
    if (m->type != JSON_STRING || m->val_len < 3) return NULL;
    char *out = ms_malloc(m->val_len);
    size_t n = json_string_decode(m->val + 1, m->val_len - 2, out);
    out[n] = 0;
    if (strlen(out) != n) {
        free(out);
        return NULL;
    }
    return out;
}

/* A schema key for a message (schema field names are not PHI): decoded, control characters shown as
 * '?', cut at 64 bytes. out must hold 72 bytes. */
static const char *key_text(const char *key, size_t len, char *out)
{
    char *dec = ms_malloc(len + 1);
    size_t n = json_string_decode(key, len, dec);
    size_t cut = n;
    if (cut > 64) {
        cut = 64;
        while (cut > 0 && ((unsigned char)dec[cut] & 0xC0) == 0x80) /* not inside a UTF-8 sequence */
            cut--;
    }
    for (size_t i = 0; i < cut; i++)
        out[i] = (unsigned char)dec[i] < 0x20 || dec[i] == 0x7f ? '?' : dec[i];
    memcpy(out + cut, cut < n ? "..." : "", cut < n ? 4 : 1);
    free(dec);
    return out;
}

static ms_code set_string(char **dst, const json_member *m, const char *what, ms_err *e)
{
    char *v = string_value(m);
    if (!v) return ms_fail(e, MS_EINVAL, "schema: \"%s\" must be a non-empty string", what);
    free(*dst);
    *dst = v;
    return MS_OK;
}

/* A JSON key's text decoded (malloc'd), or NULL if it is empty, holds a NUL or is longer than
 * SCHEMA_FIELD_MAX bytes. */
static char *key_value(const char *key, size_t len)
{
    char *out = ms_malloc(len + 1);
    size_t n = json_string_decode(key, len, out);
    out[n] = 0;
    if (n == 0 || n > SCHEMA_FIELD_MAX || strlen(out) != n) {
        free(out);
        return NULL;
    }
    return out;
}

/* The members of m, an object of at most SCHEMA_MAX_COLUMNS members ("columns", "types"), into *sub (the
 * caller frees it, also on failure); their count, or -1 with e set ("what" must be an object of that
 * "shape") when m is no such object. */
static int scan_map(const json_member *m, const char *what, const char *shape, json_member **sub, ms_err *e)
{
    json_error je;
    *sub = ms_malloc(sizeof(json_member) * SCHEMA_MAX_COLUMNS);
    int k = m->type == JSON_OBJECT ? json_scan_object(m->val, m->val_len, *sub, SCHEMA_MAX_COLUMNS, &je) : -1;
    if (k < 0)
        ms_fail(e, MS_EINVAL, "schema: \"%s\" must be an object of at most %d %s", what, SCHEMA_MAX_COLUMNS, shape);
    return k;
}

/* "columns": {"header name": "field", ...}; a repeated "columns" replaces the earlier one. */
static ms_code parse_columns(schema *s, const json_member *m, ms_err *e)
{
    char name[72];
    json_member *sub;
    free_columns(s);
    int k = scan_map(m, "columns", "columns {\"header name\":\"field\"}", &sub, e);
    ms_code rc = k < 0 ? MS_EINVAL : MS_OK;
    if (k < 0) goto out;
    s->columns = ms_calloc((size_t)(k ? k : 1), sizeof(schema_column));
    for (int j = 0; j < k && rc == MS_OK; j++) {
        char *column = key_value(sub[j].key, sub[j].key_len);
        char *field = string_value(&sub[j]);
        if (!column)
            rc = ms_fail(e, MS_EINVAL, "schema: columns: a column name must be 1-%d bytes without NUL",
                         SCHEMA_FIELD_MAX);
        else if (!field || strlen(field) > SCHEMA_FIELD_MAX)
            rc = ms_fail(e, MS_EINVAL, "schema: columns: column \"%s\" must map to a field name of 1-%d bytes",
                         key_text(sub[j].key, sub[j].key_len, name), SCHEMA_FIELD_MAX);
        for (int i = 0; i < s->ncolumns && rc == MS_OK; i++)
            if (strcmp(s->columns[i].column, column) == 0)
                rc = ms_fail(e, MS_EINVAL, "schema: columns: column \"%s\" is mapped twice",
                             key_text(sub[j].key, sub[j].key_len, name));
        if (rc != MS_OK) {
            free(column);
            free(field);
            break;
        }
        s->columns[s->ncolumns].column = column;
        s->columns[s->ncolumns].field = field;
        s->ncolumns++;
    }
out:
    free(sub);
    return rc;
}

/* "types": {"field": "string" | "number" | "boolean", ...}; a repeated "types" replaces the earlier one. */
static ms_code parse_types(schema *s, const json_member *m, ms_err *e)
{
    char name[72];
    json_member *sub;
    free_types(s);
    int k = scan_map(m, "types", "fields {\"field\":\"number\"}", &sub, e);
    ms_code rc = k < 0 ? MS_EINVAL : MS_OK;
    if (k < 0) goto out;
    s->types = ms_calloc((size_t)(k ? k : 1), sizeof(schema_field_type));
    for (int j = 0; j < k && rc == MS_OK; j++) {
        char *field = key_value(sub[j].key, sub[j].key_len);
        char *t = string_value(&sub[j]);
        field_type ft = FIELD_STRING;
        if (!field)
            rc = ms_fail(e, MS_EINVAL, "schema: types: a field name must be 1-%d bytes without NUL", SCHEMA_FIELD_MAX);
        else if (t && strcmp(t, "string") == 0)
            ft = FIELD_STRING;
        else if (t && strcmp(t, "number") == 0)
            ft = FIELD_NUMBER;
        else if (t && strcmp(t, "boolean") == 0)
            ft = FIELD_BOOLEAN;
        else
            rc = ms_fail(e, MS_EINVAL,
                         "schema: types: field \"%s\": the type must be \"string\", \"number\" or \"boolean\"",
                         key_text(sub[j].key, sub[j].key_len, name));
        for (int i = 0; i < s->ntypes && rc == MS_OK; i++)
            if (strcmp(s->types[i].field, field) == 0)
                rc = ms_fail(e, MS_EINVAL, "schema: types: field \"%s\" is typed twice",
                             key_text(sub[j].key, sub[j].key_len, name));
        free(t);
        if (rc != MS_OK) {
            free(field);
            break;
        }
        s->types[s->ntypes].field = field;
        s->types[s->ntypes].type = ft;
        s->ntypes++;
    }
out:
    free(sub);
    return rc;
}

/* Fields that every source needs as strings cannot be typed otherwise. */
static ms_code check_types(const schema *s, ms_err *e)
{
    for (int i = 0; i < s->ntypes; i++) {
        if (s->types[i].type == FIELD_STRING) continue;
        const char *f = s->types[i].field, *role = NULL;
        if (strcmp(f, s->name_field) == 0)
            role = "the name (identity)";
        else if (strcmp(f, s->dob_field) == 0)
            role = "the date of birth (identity)";
        else if (strcmp(f, s->record_id_field) == 0)
            role = "the record id";
        else if (strcmp(f, s->type_field) == 0)
            role = "the record type";
        else if (strcmp(f, s->ts_field) == 0)
            role = "the event time";
        else if (strcmp(f, s->parent_field) == 0)
            role = "the parent (a record id)";
        if (role) return ms_fail(e, MS_EINVAL, "schema: types: field \"%.64s\" is %s: it is a string", f, role);
    }
    return MS_OK;
}

/* The parent field names a record id of its own: it cannot be another role's field. */
static ms_code check_parent(const schema *s, ms_err *e)
{
    const char *p = s->parent_field;
    if (strcmp(p, s->name_field) == 0 || strcmp(p, s->dob_field) == 0 || strcmp(p, s->record_id_field) == 0 ||
        strcmp(p, s->type_field) == 0 || strcmp(p, s->ts_field) == 0)
        return ms_fail(e, MS_EINVAL, "schema: \"parent\" field \"%.64s\" already plays another role", p);
    return MS_OK;
}

ms_code schema_parse(schema *s, const char *text, size_t len, ms_err *e)
{
    json_member top[16], sub[SCHEMA_MAX_PUBLIC + 1];
    json_error je;
    ms_code rc = MS_OK;
    char name[72];
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) { /* a UTF-8 byte-order mark: skipped */
        text += 3;
        len -= 3;
    }
    schema_default(s);
    for (int i = 0; i < s->npub; i++)
        free(s->pub[i].field);
    s->npub = 0;
    int n = json_scan_object(text, len, top, 16, &je);
    if (n < 0) {
        rc = ms_fail(e, MS_EINVAL, "schema: %s at byte %zu", je.msg, je.offset);
        goto out;
    }
    for (int i = 0; i < n && rc == MS_OK; i++) {
        const json_member *m = &top[i];
        if (key_is(m->key, m->key_len, "identity")) {
            int k = m->type == JSON_OBJECT ? json_scan_object(m->val, m->val_len, sub, 4, &je) : -1;
            if (k < 0) {
                rc = ms_fail(e, MS_EINVAL, "schema: \"identity\" must be an object {\"name\":…,\"dob\":…}");
                break;
            }
            for (int j = 0; j < k && rc == MS_OK; j++) {
                if (key_is(sub[j].key, sub[j].key_len, "name"))
                    rc = set_string(&s->name_field, &sub[j], "identity.name", e);
                else if (key_is(sub[j].key, sub[j].key_len, "dob"))
                    rc = set_string(&s->dob_field, &sub[j], "identity.dob", e);
                else
                    rc = ms_fail(e, MS_EINVAL, "schema: unknown identity role \"%s\" (only name and dob)",
                                 key_text(sub[j].key, sub[j].key_len, name));
            }
        } else if (key_is(m->key, m->key_len, "record_id")) {
            rc = set_string(&s->record_id_field, m, "record_id", e);
        } else if (key_is(m->key, m->key_len, "type")) {
            rc = set_string(&s->type_field, m, "type", e);
        } else if (key_is(m->key, m->key_len, "event_time")) {
            rc = set_string(&s->ts_field, m, "event_time", e);
        } else if (key_is(m->key, m->key_len, "parent")) {
            rc = set_string(&s->parent_field, m, "parent", e);
        } else if (key_is(m->key, m->key_len, "default_type")) {
            rc = set_string(&s->default_type, m, "default_type", e);
        } else if (key_is(m->key, m->key_len, "public")) {
            for (int j = 0; j < s->npub; j++)
                free(s->pub[j].field); /* a repeated "public" replaces */
            s->npub = 0;
            int k = m->type == JSON_OBJECT ? json_scan_object(m->val, m->val_len, sub, SCHEMA_MAX_PUBLIC, &je) : -1;
            if (k < 0) {
                rc = ms_fail(e, MS_EINVAL, "schema: \"public\" must be an object of at most %d fields",
                             SCHEMA_MAX_PUBLIC);
                break;
            }
            for (int j = 0; j < k; j++) {
                char *t = string_value(&sub[j]);
                publish_transform tr;
                if (sub[j].type == JSON_NULL || (t && strcmp(t, "copy") == 0))
                    tr = PUBLISH_COPY;
                else if (t && strcmp(t, "year") == 0)
                    tr = PUBLISH_YEAR;
                else {
                    free(t);
                    rc = ms_fail(e, MS_EINVAL, "schema: public field \"%s\": transform must be \"copy\" or \"year\"",
                                 key_text(sub[j].key, sub[j].key_len, name));
                    break;
                }
                free(t);
                char *field = ms_malloc(sub[j].key_len + 1);
                size_t fl = json_string_decode(sub[j].key, sub[j].key_len, field);
                field[fl] = 0;
                s->pub[s->npub].field = field;
                s->pub[s->npub].transform = tr;
                s->npub++;
            }
        } else if (key_is(m->key, m->key_len, "columns")) {
            rc = parse_columns(s, m, e);
        } else if (key_is(m->key, m->key_len, "types")) {
            rc = parse_types(s, m, e);
        } else if (key_is(m->key, m->key_len, "dob_format")) {
            rc = set_string(&s->dob_format, m, "dob_format", e);
            const char *why = rc == MS_OK ? date_format_check(s->dob_format) : NULL;
            if (why) rc = ms_fail(e, MS_EINVAL, "schema: \"dob_format\" %s", why);
        } else {
            rc = ms_fail(e, MS_EINVAL,
                         "schema: unknown key \"%s\" (expected identity, record_id, type, event_time, parent, "
                         "default_type, public, columns, types, dob_format)",
                         key_text(m->key, m->key_len, name));
        }
    }
    if (rc == MS_OK) rc = check_types(s, e);
    if (rc == MS_OK) rc = check_parent(s, e);
    for (int i = 0; i < s->npub && rc == MS_OK; i++) {
        const char *f = s->pub[i].field;
        if (strcmp(f, s->name_field) == 0 || strcmp(f, s->dob_field) == 0)
            rc = ms_fail(e, MS_EINVAL, "schema: identity field \"%s\" cannot be public", f);
    }
out:
    if (rc != MS_OK) schema_free(s);
    return rc;
}

ms_code schema_load_file(schema *s, const char *path, ms_err *e)
{
    buf b = {0};
    ms_code rc = buf_read_file(&b, path, e);
    if (rc == MS_OK) rc = schema_parse(s, b.data ? b.data : "", b.len, e);
    buf_free(&b);
    return rc;
}

const schema_public_field *schema_public(const schema *s, const char *key, size_t key_len)
{
    for (int i = 0; i < s->npub; i++)
        if (key_is(key, key_len, s->pub[i].field)) return &s->pub[i];
    return NULL;
}

bool schema_is_record_field(const schema *s, const char *key, size_t key_len)
{
    return key_is(key, key_len, s->record_id_field) || key_is(key, key_len, s->type_field) ||
           key_is(key, key_len, s->ts_field);
}

const char *schema_column_field(const schema *s, const char *column, size_t column_len)
{
    for (int i = 0; i < s->ncolumns; i++)
        if (key_is(column, column_len, s->columns[i].column)) return s->columns[i].field;
    return NULL;
}

field_type schema_field_type_of(const schema *s, const char *field, size_t field_len)
{
    for (int i = 0; i < s->ntypes; i++)
        if (key_is(field, field_len, s->types[i].field)) return s->types[i].type;
    return FIELD_STRING;
}

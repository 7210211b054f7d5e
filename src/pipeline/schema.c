/*
 * schema.c - field roles, the public allow-list (paths, transforms and their parameters), and the CSV
 * column map, field types and dob format (see schema.h). A schema is parsed once at start; messages name
 * keys and fields (never record values).
 */
#include "pipeline/schema.h"

#include "base/json_scan.h"
#include "base/timefmt.h"
#include "pipeline/transforms.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool key_is(const char *k, size_t n, const char *s) { return strlen(s) == n && memcmp(k, s, n) == 0; }

static void free_public(schema_public_field *p)
{
    free(p->field);
    for (int i = 0; i < p->nseg; i++)
        free(p->seg[i].name);
    memset(p, 0, sizeof *p);
}

static void clear_public(schema *s)
{
    for (int i = 0; i < s->npub; i++)
        free_public(&s->pub[i]);
    s->npub = 0;
}

/* Split a path ("address.zip", "codes[]", "codes[].code") into p's segments; false if it is not one
 * (an empty segment, '[' or ']' other than a final "[]", more than SCHEMA_PATH_MAX segments). */
static bool parse_path(const char *path, schema_public_field *p)
{
    const char *at = path;
    p->nseg = 0;
    for (;;) {
        const char *dot = strchr(at, '.');
        size_t n = dot ? (size_t)(dot - at) : strlen(at);
        bool each = n >= 2 && at[n - 2] == '[' && at[n - 1] == ']';
        size_t nl = each ? n - 2 : n;
        if (nl == 0 || p->nseg == SCHEMA_PATH_MAX || memchr(at, '[', nl) || memchr(at, ']', nl)) return false;
        p->seg[p->nseg].name = ms_strndup(at, nl);
        p->seg[p->nseg].each = each;
        p->nseg++;
        if (!dot) return true;
        at = dot + 1;
    }
}

static void add_public(schema *s, const char *field, publish_transform t)
{
    schema_public_field *p = &s->pub[s->npub++];
    memset(p, 0, sizeof *p);
    p->field = ms_strndup(field, strlen(field));
    p->transform = t;
    parse_path(field, p);
}

void schema_default(schema *s)
{
    memset(s, 0, sizeof *s);
    s->name_field = ms_strndup("name", 4);
    s->name_parts[0] = ms_strndup("name", 4);
    s->nname_parts = 1;
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
    for (int i = 0; i < s->nname_parts; i++)
        free(s->name_parts[i]);
    free(s->dob_field);
    free(s->record_id_field);
    free(s->type_field);
    free(s->ts_field);
    free(s->parent_field);
    free(s->default_type);
    clear_public(s);
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
        for (int k = 0; k < s->nname_parts && !role; k++)
            if (strcmp(f, s->name_parts[k]) == 0) role = "the name (identity)";
        if (role)
            ; /* a part of the name */
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
    if (schema_is_identity_field(s, p, strlen(p)) || strcmp(p, s->record_id_field) == 0 ||
        strcmp(p, s->type_field) == 0 || strcmp(p, s->ts_field) == 0)
        return ms_fail(e, MS_EINVAL, "schema: \"parent\" field \"%.64s\" already plays another role", p);
    return MS_OK;
}

/* "identity": {"name": "field" | ["part", ...]}: the name's fields, joined by one space in this order. */
static ms_code parse_name(schema *s, const json_member *m, ms_err *e)
{
    char *parts[SCHEMA_NAME_PARTS_MAX];
    int n = 0;
    if (m->type == JSON_STRING) {
        char *v = string_value(m);
        if (!v)
            return ms_fail(e, MS_EINVAL, "schema: \"identity.name\" must be a non-empty string or an array of them");
        parts[n++] = v;
    } else if (m->type == JSON_ARRAY) {
        const char *p = json_skip_ws(m->val + 1, m->val + m->val_len), *end = m->val + m->val_len;
        json_error je;
        while (p < end && *p != ']') {
            json_type t;
            const char *after = json_scan_value(m->val, p, end, &t, &je);
            json_member el = {.val = p, .val_len = after ? (size_t)(after - p) : 0, .type = t};
            char *v = after ? string_value(&el) : NULL;
            bool dup = false;
            for (int i = 0; v && i < n; i++)
                dup = dup || strcmp(parts[i], v) == 0;
            if (!v || dup || n == SCHEMA_NAME_PARTS_MAX || strchr(v, '.') || strchr(v, '[')) {
                free(v);
                for (int i = 0; i < n; i++)
                    free(parts[i]);
                return ms_fail(e, MS_EINVAL,
                               "schema: \"identity.name\": an array of 1-%d distinct non-empty field names "
                               "(no '.' or '[')",
                               SCHEMA_NAME_PARTS_MAX);
            }
            parts[n++] = v;
            p = json_skip_ws(after, end);
            if (p < end && *p == ',') p = json_skip_ws(p + 1, end);
        }
        if (n == 0) return ms_fail(e, MS_EINVAL, "schema: \"identity.name\": an empty array (name at least one field)");
    } else {
        return ms_fail(e, MS_EINVAL, "schema: \"identity.name\" must be a non-empty string or an array of them");
    }
    for (int i = 0; i < s->nname_parts; i++)
        free(s->name_parts[i]);
    free(s->name_field);
    buf joined = {0};
    for (int i = 0; i < n; i++) {
        if (i) buf_putc(&joined, '+');
        buf_puts(&joined, parts[i]);
        s->name_parts[i] = parts[i];
    }
    s->nname_parts = n;
    s->name_field = buf_take(&joined);
    return MS_OK;
}

static const struct {
    const char *name;
    publish_transform t;
} transforms[] = {
    {"copy", PUBLISH_COPY},           {"year", PUBLISH_YEAR},
    {"zip3", PUBLISH_ZIP3},           {"age", PUBLISH_AGE},
    {"age_band", PUBLISH_AGE_BAND},   {"date_shift", PUBLISH_DATE_SHIFT},
    {"pseudonym", PUBLISH_PSEUDONYM}, {"drop", PUBLISH_DROP},
};

static const char *transform_name(publish_transform t)
{
    for (size_t i = 0; i < sizeof transforms / sizeof transforms[0]; i++)
        if (transforms[i].t == t) return transforms[i].name;
    return "?";
}

static bool transform_of(const char *name, publish_transform *t)
{
    for (size_t i = 0; i < sizeof transforms / sizeof transforms[0]; i++)
        if (strcmp(transforms[i].name, name) == 0) {
            *t = transforms[i].t;
            return true;
        }
    return false;
}

/* A whole number parameter in [lo, hi]. */
static bool int_param(const json_member *m, int lo, int hi, int *out)
{
    if (m->type != JSON_NUMBER || m->val_len > 9) return false;
    char num[16];
    memcpy(num, m->val, m->val_len);
    num[m->val_len] = 0;
    char *end;
    long v = strtol(num, &end, 10);
    if (*end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

#define TRANSFORMS "copy, year, zip3, age, age_band, date_shift, pseudonym or drop"

/* One public entry's value: a transform name, null (copy), or {"transform":NAME, parameters}. f is the
 * field's name for messages. */
static ms_code parse_transform(schema_public_field *p, const json_member *v, const char *f, ms_err *e)
{
    p->width = 10;
    p->max_days = 365;
    if (v->type == JSON_NULL) {
        p->transform = PUBLISH_COPY;
        return MS_OK;
    }
    if (v->type == JSON_STRING) {
        char *t = string_value(v);
        bool ok = t && transform_of(t, &p->transform);
        free(t);
        if (!ok) return ms_fail(e, MS_EINVAL, "schema: public field \"%s\": unknown transform (" TRANSFORMS ")", f);
        return MS_OK;
    }
    json_member sub[8];
    json_error je;
    int k = v->type == JSON_OBJECT ? json_scan_object(v->val, v->val_len, sub, 8, &je) : -1;
    if (k < 0)
        return ms_fail(e, MS_EINVAL,
                       "schema: public field \"%s\": a transform name or {\"transform\":NAME,...} (" TRANSFORMS ")", f);
    const json_member *tm = NULL;
    for (int j = 0; j < k; j++)
        if (key_is(sub[j].key, sub[j].key_len, "transform")) tm = &sub[j];
    char *t = tm ? string_value(tm) : NULL;
    bool ok = t && transform_of(t, &p->transform);
    free(t);
    if (!ok) return ms_fail(e, MS_EINVAL, "schema: public field \"%s\": \"transform\" must be one of " TRANSFORMS, f);
    char name[72];
    for (int j = 0; j < k; j++) {
        const json_member *m = &sub[j];
        if (m == tm) continue;
        if (p->transform == PUBLISH_AGE_BAND && key_is(m->key, m->key_len, "width")) {
            if (!int_param(m, 1, TF_AGE_TOP, &p->width))
                return ms_fail(e, MS_EINVAL,
                               "schema: public field \"%s\": \"width\" must be a whole number of years 1-%d", f,
                               TF_AGE_TOP);
        } else if (p->transform == PUBLISH_DATE_SHIFT && key_is(m->key, m->key_len, "max_days")) {
            if (!int_param(m, 1, TF_DATE_SHIFT_MAX, &p->max_days))
                return ms_fail(e, MS_EINVAL, "schema: public field \"%s\": \"max_days\" must be a whole number 1-%d", f,
                               TF_DATE_SHIFT_MAX);
        } else if (p->transform == PUBLISH_PSEUDONYM && key_is(m->key, m->key_len, "scope")) {
            char *sc = string_value(m);
            bool good = sc && (strcmp(sc, "store") == 0 || strcmp(sc, "patient") == 0);
            p->patient_scope = good && strcmp(sc, "patient") == 0;
            free(sc);
            if (!good)
                return ms_fail(e, MS_EINVAL, "schema: public field \"%s\": \"scope\" must be \"store\" or \"patient\"",
                               f);
        } else {
            return ms_fail(e, MS_EINVAL, "schema: public field \"%s\": transform %s takes no parameter \"%s\"", f,
                           transform_name(p->transform), key_text(m->key, m->key_len, name));
        }
    }
    return MS_OK;
}

/* "public": {"path": transform, ...}; a repeated "public" replaces the earlier one. */
static ms_code parse_public(schema *s, const json_member *m, ms_err *e)
{
    json_member sub[SCHEMA_MAX_PUBLIC + 1];
    json_error je;
    char name[72];
    clear_public(s);
    int k = m->type == JSON_OBJECT ? json_scan_object(m->val, m->val_len, sub, SCHEMA_MAX_PUBLIC, &je) : -1;
    if (k < 0)
        return ms_fail(e, MS_EINVAL, "schema: \"public\" must be an object of at most %d fields", SCHEMA_MAX_PUBLIC);
    for (int j = 0; j < k; j++) {
        char *field = key_value(sub[j].key, sub[j].key_len);
        if (!field)
            return ms_fail(e, MS_EINVAL, "schema: public: a field name must be 1-%d bytes without NUL",
                           SCHEMA_FIELD_MAX);
        schema_public_field *p = &s->pub[s->npub++];
        memset(p, 0, sizeof *p);
        p->field = field;
        key_text(sub[j].key, sub[j].key_len, name);
        if (!parse_path(field, p))
            return ms_fail(e, MS_EINVAL,
                           "schema: public field \"%s\": not a path (names joined by '.', \"[]\" after a name for "
                           "each element of an array, at most %d names)",
                           name, SCHEMA_PATH_MAX);
        ms_code rc = parse_transform(p, &sub[j], name, e);
        if (rc != MS_OK) return rc;
    }
    return MS_OK;
}

/* The allow-list as a whole: identity fields only through their transforms, one date_shift range,
 * paths that do not overlap (a drop under a copy is the one exception: the copy leaves it out). */
static ms_code check_public(const schema *s, ms_err *e)
{
    int max_days = 0;
    for (int i = 0; i < s->npub; i++) {
        const schema_public_field *p = &s->pub[i];
        const char *f = p->field, *top = p->seg[0].name;
        publish_transform t = p->transform;
        bool is_name = false;
        for (int k = 0; k < s->nname_parts; k++)
            is_name = is_name || strcmp(top, s->name_parts[k]) == 0;
        bool is_dob = strcmp(top, s->dob_field) == 0;
        if ((is_name || is_dob) && t != PUBLISH_DROP && p->nseg != 1)
            return ms_fail(e, MS_EINVAL,
                           "schema: public field \"%.64s\": identity field \"%.64s\" is a string, not an "
                           "object or array",
                           f, top);
        if (is_name && t != PUBLISH_DROP && t != PUBLISH_PSEUDONYM)
            return ms_fail(e, MS_EINVAL,
                           "schema: public field \"%.64s\" is an identity field (name): it may be published only as a "
                           "pseudonym, not through %s",
                           f, transform_name(t));
        if (is_dob && t != PUBLISH_DROP && t != PUBLISH_YEAR && t != PUBLISH_AGE && t != PUBLISH_AGE_BAND)
            return ms_fail(e, MS_EINVAL,
                           "schema: public field \"%.64s\" is an identity field (date of birth): it may be published "
                           "only through year, age or age_band, not %s",
                           f, transform_name(t));
        if (t == PUBLISH_DATE_SHIFT) {
            if (max_days && max_days != p->max_days)
                return ms_fail(e, MS_EINVAL,
                               "schema: public field \"%.64s\": every date_shift must use the same max_days (%d here, "
                               "%d before): a patient's dates keep their intervals only under one offset",
                               f, p->max_days, max_days);
            max_days = p->max_days;
        }
        for (int j = 0; j < i; j++) {
            const schema_public_field *q = &s->pub[j];
            int n = p->nseg < q->nseg ? p->nseg : q->nseg, c = 0;
            while (c < n && strcmp(p->seg[c].name, q->seg[c].name) == 0)
                c++;
            if (c == 0) continue; /* different top-level fields */
            /* a member both go through must be an array in both or in neither */
            for (int x = 0; x < (c < n ? c : c - 1); x++)
                if (p->seg[x].each != q->seg[x].each)
                    return ms_fail(
                        e, MS_EINVAL,
                        "schema: public fields \"%.64s\" and \"%.64s\" treat \"%.64s\" differently (an array "
                        "in one, not in the other)",
                        f, q->field, p->seg[x].name);
            if (c < n) continue; /* they part ways below a common member */
            /* one path is the other or lies inside it: only a drop inside a copy (or a drop) is allowed */
            const schema_public_field *outer = p->nseg <= q->nseg ? p : q, *inner = outer == p ? q : p;
            if (outer->nseg < inner->nseg && inner->transform == PUBLISH_DROP &&
                (outer->transform == PUBLISH_COPY || outer->transform == PUBLISH_DROP))
                continue;
            return ms_fail(e, MS_EINVAL,
                           "schema: public field \"%.64s\" overlaps \"%.64s\" (only a drop may lie inside a copied "
                           "field)",
                           inner->field, outer->field);
        }
    }
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
    clear_public(s);
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
                    rc = parse_name(s, &sub[j], e);
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
            rc = parse_public(s, m, e);
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
    if (rc == MS_OK) rc = check_public(s, e);
out:
    if (rc != MS_OK) schema_free(s);
    return rc;
}

ms_code schema_load_file(schema *s, const char *path, ms_err *e)
{
    buf b = {0};
    ms_code rc = buf_read_settings_file(&b, path, e);
    if (rc == MS_OK) rc = schema_parse(s, b.data ? b.data : "", b.len, e);
    buf_free(&b);
    return rc;
}

const schema_public_field *schema_public(const schema *s, const char *key, size_t key_len)
{
    for (int i = 0; i < s->npub; i++)
        if (s->pub[i].transform != PUBLISH_DROP && key_is(key, key_len, s->pub[i].field)) return &s->pub[i];
    return NULL;
}

bool schema_public_top(const schema *s, const char *key, size_t key_len)
{
    for (int i = 0; i < s->npub; i++)
        if (s->pub[i].transform != PUBLISH_DROP && key_is(key, key_len, s->pub[i].seg[0].name)) return true;
    return false;
}

const schema_public_field *schema_public_filter(const schema *s, const char *key, size_t key_len)
{
    for (int i = 0; i < s->npub; i++) {
        const schema_public_field *p = &s->pub[i];
        if (p->transform == PUBLISH_DROP) continue;
        size_t at = 0;
        bool ok = true;
        for (int k = 0; k < p->nseg && ok; k++) {
            size_t n = strlen(p->seg[k].name);
            ok = at + n <= key_len && memcmp(key + at, p->seg[k].name, n) == 0;
            at += n;
            if (ok && k < p->nseg - 1) ok = at < key_len && key[at++] == '.';
        }
        if (ok && at == key_len) return p;
    }
    return NULL;
}

bool schema_is_identity_field(const schema *s, const char *key, size_t key_len)
{
    for (int i = 0; i < s->nname_parts; i++)
        if (key_is(key, key_len, s->name_parts[i])) return true;
    return key_is(key, key_len, s->dob_field);
}

bool schema_public_time_dependent(const schema *s)
{
    for (int i = 0; i < s->npub; i++) {
        const schema_public_field *p = &s->pub[i];
        if (schema_is_record_field(s, p->seg[0].name, strlen(p->seg[0].name))) continue;
        if (p->transform == PUBLISH_AGE || p->transform == PUBLISH_AGE_BAND ||
            (p->transform == PUBLISH_YEAR && strcmp(p->seg[0].name, s->dob_field) == 0))
            return true;
    }
    return false;
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

/*
 * rows.c - columns, rows, the spool encoding, NDJSON and CSV lines, column batches (see rows.h).
 *
 * DESIGN: a row is an array of values in column order. Records and patients are cut into columns by
 * one pass over their JSON object's top-level members (json_scan): a member that a column takes is
 * decoded into it, any other member is copied, as its raw bytes, into the fields object. Numbers keep
 * the double's shortest round-trip text when written back as JSON or CSV.
 */
#include "export/rows.h"

#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/timefmt.h"
#include "export/layout.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MEMBERS 1100 /* a record has at most 1024 fields; a patient's state is bounded the same way */

static const char *const reserved[] = {"patient_id", "record_id", "version", "recorded_at", "ts",
                                       "fields",     "name",      "dob",     NULL};

static bool is_reserved(const char *name)
{
    for (int i = 0; reserved[i]; i++)
        if (strcmp(reserved[i], name) == 0) return true;
    return false;
}

static void add(export_columns *c, const char *name, pq_type t, bool optional, bool dict, column_role role,
                const char *field)
{
    if (c->n == EXPORT_MAX_COLUMNS) return;
    c->col[c->n++] = (export_column){name, t, optional, dict, role, field};
}

void rows_record_columns(const schema *s, export_scope scope, export_columns *c)
{
    c->n = 0;
    add(c, "patient_id", PQ_STRING, false, true, COL_PATIENT_ID, NULL);
    add(c, "record_id", PQ_STRING, false, false, COL_RECORD_ID, NULL);
    add(c, "version", PQ_INT64, false, false, COL_VERSION, NULL);
    const schema_public_field *pts = schema_public(s, s->ts_field, strlen(s->ts_field));
    if (scope == EXPORT_PHI) add(c, "recorded_at", PQ_TIMESTAMP, false, false, COL_RECORDED_AT, NULL);
    if (scope == EXPORT_PHI || (pts && pts->transform == PUBLISH_COPY))
        add(c, "ts", PQ_TIMESTAMP, scope != EXPORT_PHI, false, COL_TS, NULL);
    int typed = 0;
    for (int i = 0; i < s->ntypes && typed < EXPORT_MAX_TYPED; i++) {
        const char *f = s->types[i].field;
        if (s->types[i].type == FIELD_STRING || is_reserved(f) || schema_is_record_field(s, f, strlen(f))) continue;
        /* a partition level's name (type=, date= or year=) is no column of the files: Hive readers would take
         * the partition's value for it, or refuse the table (the value stays in fields) */
        if (strcmp(f, "type") == 0 || strcmp(f, layout_date_key(s, scope)) == 0) continue;
        if (scope == EXPORT_PUBLIC) {
            const schema_public_field *p = schema_public(s, f, strlen(f));
            if (!p || p->transform != PUBLISH_COPY) continue;
        }
        add(c, f, s->types[i].type == FIELD_NUMBER ? PQ_DOUBLE : PQ_BOOLEAN, true, false, COL_TYPED, f);
        typed++;
    }
    add(c, "fields", PQ_JSON, false, false, COL_FIELDS, NULL);
}

void rows_patient_columns(const schema *s, export_scope scope, export_columns *c)
{
    c->n = 0;
    add(c, "patient_id", PQ_STRING, false, false, COL_PATIENT_ID, NULL);
    if (scope == EXPORT_PHI) {
        add(c, "version", PQ_INT64, false, false, COL_VERSION, NULL);
        add(c, "recorded_at", PQ_TIMESTAMP, false, false, COL_RECORDED_AT, NULL);
        /* a composed name has no one field: rows_patient joins its parts */
        add(c, "name", PQ_STRING, true, false, COL_TYPED, s->nname_parts == 1 ? s->name_field : NULL);
        add(c, "dob", PQ_STRING, true, false, COL_TYPED, s->dob_field);
    }
    add(c, "fields", PQ_JSON, false, false, COL_FIELDS, NULL);
}

void row_builder_free(row_builder *b)
{
    buf_free(&b->fields);
    buf_free(&b->strings);
    buf_free(&b->name);
    free(b->members);
    b->members = NULL;
}

static bool key_is(const json_member *m, const char *name, buf *tmp)
{
    size_t n = strlen(name);
    if (!m->key_escaped) return m->key_len == n && memcmp(m->key, name, n) == 0;
    tmp->len = 0;
    buf_reserve(tmp, m->key_len + 1);
    size_t dl = json_string_decode(m->key, m->key_len, tmp->data);
    return dl == n && memcmp(tmp->data, name, n) == 0;
}

/* Take member m into a typed column if it fits; false leaves it for fields. */
static bool take_typed(row_builder *b, const export_column *col, const json_member *m, export_value *v, size_t *str_off)
{
    switch (col->type) {
    case PQ_DOUBLE:
        if (m->type != JSON_NUMBER) return false;
        {
            char num[64];
            if (m->val_len >= sizeof num) return false;
            memcpy(num, m->val, m->val_len);
            num[m->val_len] = 0;
            double d = strtod(num, NULL);
            if (!isfinite(d)) return false;
            v->f64 = d;
        }
        break;
    case PQ_BOOLEAN:
        if (m->type != JSON_TRUE && m->type != JSON_FALSE) return false;
        v->b = m->type == JSON_TRUE;
        break;
    case PQ_STRING:
        if (m->type != JSON_STRING) return false;
        {
            size_t at = b->strings.len;
            buf_reserve(&b->strings, m->val_len);
            size_t n = json_string_decode(m->val + 1, m->val_len - 2, b->strings.data + at);
            b->strings.len = at + n;
            b->strings.data[b->strings.len] = 0;
            *str_off = at;
            v->len = (uint32_t)n;
        }
        break;
    default: return false;
    }
    v->present = true;
    return true;
}

/* Split a JSON object into the row's typed columns and its fields column, leaving out the members named
 * by drop (NULL-ended). */
static ms_code split_object(row_builder *b, const export_columns *c, const char *json, size_t len,
                            const char *const *drop, export_row *row, ms_err *e)
{
    if (!b->members) b->members = ms_malloc(sizeof(json_member) * MAX_MEMBERS);
    json_member *m = b->members;
    json_error je;
    int nm = json_scan_object(json, len, m, MAX_MEMBERS, &je);
    if (nm < 0) return ms_fail(e, MS_ECORRUPT, "export: a stored object is not readable JSON (offset %zu)", je.offset);
    b->fields.len = 0;
    b->strings.len = 0;
    size_t str_off[EXPORT_MAX_COLUMNS] = {0};
    buf tmp = {0};
    buf_putc(&b->fields, '{');
    bool first = true;
    for (int i = 0; i < nm; i++) {
        bool dropped = false;
        for (const char *const *d = drop; *d && !dropped; d++)
            dropped = key_is(&m[i], *d, &tmp);
        if (dropped) continue;
        bool taken = false;
        for (int k = 0; k < c->n && !taken; k++) {
            const export_column *col = &c->col[k];
            if (col->role != COL_TYPED || !col->field || row->v[k].present || !key_is(&m[i], col->field, &tmp))
                continue;
            taken = take_typed(b, col, &m[i], &row->v[k], &str_off[k]);
        }
        if (taken) continue;
        if (!first) buf_putc(&b->fields, ',');
        first = false;
        buf_putc(&b->fields, '"');
        buf_put(&b->fields, m[i].key, m[i].key_len);
        buf_puts(&b->fields, "\":");
        buf_put(&b->fields, m[i].val, m[i].val_len);
    }
    buf_putc(&b->fields, '}');
    buf_free(&tmp);
    for (int k = 0; k < c->n; k++) {
        if (c->col[k].role == COL_TYPED && c->col[k].type == PQ_STRING && row->v[k].present)
            row->v[k].str = b->strings.data + str_off[k];
        if (c->col[k].role == COL_FIELDS) {
            row->v[k].present = true;
            row->v[k].str = b->fields.data;
            row->v[k].len = (uint32_t)b->fields.len;
        }
    }
    return MS_OK;
}

static void set_common(row_builder *b, const export_columns *c, const patient_id *pid, const char *rid, size_t rid_len,
                       uint32_t version, int64_t recorded_at, bool has_ts, int64_t ts, export_row *row)
{
    patient_id_format(pid, b->pid);
    for (int k = 0; k < c->n; k++) {
        export_value *v = &row->v[k];
        *v = (export_value){0};
        switch (c->col[k].role) {
        case COL_PATIENT_ID: *v = (export_value){.present = true, .str = b->pid, .len = PATIENT_ID_TEXT - 1}; break;
        case COL_RECORD_ID: *v = (export_value){.present = true, .str = rid, .len = (uint32_t)rid_len}; break;
        case COL_VERSION: *v = (export_value){.present = true, .i64 = version}; break;
        case COL_RECORDED_AT: *v = (export_value){.present = true, .i64 = recorded_at}; break;
        case COL_TS: *v = (export_value){.present = has_ts, .i64 = ts}; break;
        default: break;
        }
    }
}

ms_code rows_phi_record(row_builder *b, const export_columns *c, const schema *s, const record_version *rv,
                        const char *body, size_t len, export_row *row, ms_err *e)
{
    set_common(b, c, &rv->pid, rv->record_id, rv->record_id_len, rv->version, rv->valid_from, true, rv->ts_us, row);
    const char *drop[] = {s->record_id_field, s->type_field, s->ts_field, NULL};
    return split_object(b, c, body, len, drop, row, e);
}

ms_code rows_public_record(row_builder *b, const export_columns *c, const schema *s, const record_version *rv,
                           const public_record *pr, export_row *row, ms_err *e)
{
    set_common(b, c, &pr->pid, rv->record_id, rv->record_id_len, rv->version, 0, false, 0, row);
    /* the event time, when the public copy keeps it whole (a copy): the ts column, from the copy */
    int ts_col = -1;
    for (int k = 0; k < c->n; k++)
        if (c->col[k].role == COL_TS) ts_col = k;
    if (ts_col >= 0) {
        if (!b->members) b->members = ms_malloc(sizeof(json_member) * MAX_MEMBERS);
        json_member *m = b->members;
        json_error je;
        int nm = json_scan_object(pr->fields, pr->fields_len, m, MAX_MEMBERS, &je);
        buf tmp = {0};
        for (int i = 0; i < nm; i++) {
            int64_t us;
            if (m[i].type == JSON_STRING && key_is(&m[i], s->ts_field, &tmp) &&
                time_parse_rfc3339(m[i].val + 1, m[i].val_len - 2, &us))
                row->v[ts_col] = (export_value){.present = true, .i64 = us};
        }
        buf_free(&tmp);
    }
    const char *drop[] = {s->record_id_field, s->type_field, s->ts_field, NULL};
    return split_object(b, c, pr->fields, pr->fields_len, drop, row, e);
}

/* The name column of a composed name: the parts (strings, all present) joined by one space, as the
 * identity joins them (identity.c); absent when a part is missing or not a string. */
static void join_name(row_builder *b, const export_columns *c, const schema *s, const char *json, size_t len,
                      export_row *row)
{
    int col = -1;
    for (int k = 0; k < c->n; k++)
        if (c->col[k].role == COL_TYPED && !c->col[k].field && strcmp(c->col[k].name, "name") == 0) col = k;
    if (col < 0) return;
    json_member *m = b->members; /* split_object has scanned json: valid, at most MAX_MEMBERS */
    json_error je;
    int nm = json_scan_object(json, len, m, MAX_MEMBERS, &je);
    buf tmp = {0};
    b->name.len = 0;
    int have = 0;
    for (int p = 0; p < s->nname_parts; p++) {
        for (int i = 0; i < nm; i++) {
            if (m[i].type != JSON_STRING || !key_is(&m[i], s->name_parts[p], &tmp)) continue;
            if (p) buf_putc(&b->name, ' ');
            buf_reserve(&b->name, m[i].val_len);
            b->name.len += json_string_decode(m[i].val + 1, m[i].val_len - 2, b->name.data + b->name.len);
            have++;
            break;
        }
    }
    buf_free(&tmp);
    if (have == s->nname_parts)
        row->v[col] =
            (export_value){.present = true, .str = b->name.data ? b->name.data : "", .len = (uint32_t)b->name.len};
}

ms_code rows_patient(row_builder *b, const export_columns *c, const schema *s, const patient_id *pid, uint32_t version,
                     int64_t valid_from, const char *fields, size_t len, export_row *row, ms_err *e)
{
    set_common(b, c, pid, "", 0, version, valid_from, false, 0, row);
    const char *drop[] = {NULL};
    ms_code rc = split_object(b, c, fields, len, drop, row, e);
    if (rc == MS_OK && s->nname_parts > 1) join_name(b, c, s, fields, len, row);
    return rc;
}

/* ---- spool encoding ---- */

void rows_encode(const export_columns *c, const export_row *row, buf *out)
{
    size_t start = out->len;
    buf_put_be32(out, 0);
    for (int k = 0; k < c->n; k++) {
        const export_value *v = &row->v[k];
        buf_putc(out, v->present ? 1 : 0);
        if (!v->present) continue;
        switch (c->col[k].type) {
        case PQ_STRING:
        case PQ_JSON:
            buf_put_be32(out, v->len);
            buf_put(out, v->str, v->len);
            break;
        case PQ_INT64:
        case PQ_TIMESTAMP: buf_put_be64(out, (uint64_t)v->i64); break;
        case PQ_DOUBLE: {
            uint64_t bits;
            memcpy(&bits, &v->f64, 8);
            buf_put_be64(out, bits);
            break;
        }
        case PQ_BOOLEAN: buf_putc(out, v->b ? 1 : 0); break;
        }
    }
    ms_set_be32(out->data + start, (uint32_t)(out->len - start - 4));
}

bool rows_decode(const export_columns *c, const char *p, size_t n, export_row *row, size_t *used)
{
    if (n < 4) return false;
    uint32_t len = ms_get_be32(p);
    if (len > n - 4) return false;
    const char *q = p + 4, *end = q + len;
    for (int k = 0; k < c->n; k++) {
        export_value *v = &row->v[k];
        *v = (export_value){0};
        if (q >= end) return false;
        v->present = *q++ != 0;
        if (!v->present) continue;
        switch (c->col[k].type) {
        case PQ_STRING:
        case PQ_JSON:
            if (end - q < 4) return false;
            v->len = ms_get_be32(q);
            q += 4;
            if ((size_t)(end - q) < v->len) return false;
            v->str = q;
            q += v->len;
            break;
        case PQ_INT64:
        case PQ_TIMESTAMP:
        case PQ_DOUBLE: {
            if (end - q < 8) return false;
            uint64_t bits = ms_get_be64(q);
            q += 8;
            if (c->col[k].type == PQ_DOUBLE)
                memcpy(&v->f64, &bits, 8);
            else
                v->i64 = (int64_t)bits;
            break;
        }
        case PQ_BOOLEAN:
            if (q >= end) return false;
            v->b = *q++ != 0;
            break;
        }
    }
    if (q != end) return false;
    *used = 4 + (size_t)len;
    return true;
}

/* ---- text formats ---- */

/* The shortest text that reads back as the same double. */
static void put_double(buf *out, double d)
{
    char t[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, d);
        if (strtod(t, NULL) == d) break;
    }
    buf_puts(out, t);
}

static void put_scalar_json(buf *out, const export_column *col, const export_value *v)
{
    if (!v->present) {
        buf_puts(out, "null");
        return;
    }
    switch (col->type) {
    case PQ_STRING: jw_string(out, v->str, v->len); break;
    case PQ_JSON: buf_put(out, v->str, v->len); break;
    case PQ_INT64: buf_printf(out, "%lld", (long long)v->i64); break;
    case PQ_TIMESTAMP: jw_time(out, v->i64); break;
    case PQ_DOUBLE: put_double(out, v->f64); break;
    case PQ_BOOLEAN: buf_puts(out, v->b ? "true" : "false"); break;
    }
}

void rows_ndjson(const export_columns *c, const export_row *row, buf *out)
{
    buf_putc(out, '{');
    for (int k = 0; k < c->n; k++) {
        if (k) buf_putc(out, ',');
        jw_cstr(out, c->col[k].name);
        buf_putc(out, ':');
        put_scalar_json(out, &c->col[k], &row->v[k]);
    }
    buf_puts(out, "}\n");
}

static void put_csv_cell(buf *out, const char *s, size_t n)
{
    bool quote = false;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!quote) {
        buf_put(out, s, n);
        return;
    }
    buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') buf_putc(out, '"');
        buf_putc(out, s[i]);
    }
    buf_putc(out, '"');
}

void rows_csv_header(const export_columns *c, buf *out)
{
    for (int k = 0; k < c->n; k++) {
        if (k) buf_putc(out, ',');
        put_csv_cell(out, c->col[k].name, strlen(c->col[k].name));
    }
    buf_puts(out, "\r\n");
}

void rows_csv(const export_columns *c, const export_row *row, buf *out)
{
    buf cell = {0};
    for (int k = 0; k < c->n; k++) {
        if (k) buf_putc(out, ',');
        const export_value *v = &row->v[k];
        if (!v->present) continue; /* an empty cell is a null */
        switch (c->col[k].type) {
        case PQ_STRING:
        case PQ_JSON: put_csv_cell(out, v->str, v->len); break;
        default:
            cell.len = 0;
            if (c->col[k].type == PQ_TIMESTAMP) {
                char t[40];
                time_format_rfc3339(v->i64, t, sizeof t);
                buf_puts(&cell, t);
            } else {
                put_scalar_json(&cell, &c->col[k], v);
            }
            buf_put(out, cell.data, cell.len);
        }
    }
    buf_puts(out, "\r\n");
    buf_free(&cell);
}

/* ---- column batches ---- */

static void grow(void **p, size_t elem, size_t cap) { *p = ms_realloc(*p, elem * cap); }

void rows_batch_add(rows_batch *bt, const export_columns *c, const export_row *row)
{
    if (bt->n == bt->cap) {
        bt->cap = bt->cap ? bt->cap * 2 : 1024;
        for (int k = 0; k < c->n; k++) {
            grow((void **)&bt->present[k], sizeof(bool), bt->cap);
            grow((void **)&bt->i64[k], sizeof(int64_t), bt->cap);
            grow((void **)&bt->f64[k], sizeof(double), bt->cap);
            grow((void **)&bt->b[k], sizeof(bool), bt->cap);
            grow((void **)&bt->str[k], sizeof(char *), bt->cap);
            grow((void **)&bt->len[k], sizeof(uint32_t), bt->cap);
            grow((void **)&bt->off[k], sizeof(size_t), bt->cap);
        }
    }
    size_t i = bt->n++;
    for (int k = 0; k < c->n; k++) {
        const export_value *v = &row->v[k];
        bt->present[k][i] = v->present;
        bt->i64[k][i] = v->i64;
        bt->f64[k][i] = v->f64;
        bt->b[k][i] = v->b;
        bt->len[k][i] = v->present ? v->len : 0;
        bt->off[k][i] = bt->bytes.len;
        if (v->present && (c->col[k].type == PQ_STRING || c->col[k].type == PQ_JSON))
            buf_put(&bt->bytes, v->str, v->len);
    }
}

void rows_batch_values(rows_batch *bt, const export_columns *c, pq_values *out)
{
    for (int k = 0; k < c->n; k++) {
        for (size_t i = 0; i < bt->n; i++)
            bt->str[k][i] = bt->bytes.data ? bt->bytes.data + bt->off[k][i] : "";
        out[k] = (pq_values){.present = c->col[k].optional ? bt->present[k] : NULL,
                             .i64 = bt->i64[k],
                             .f64 = bt->f64[k],
                             .b = bt->b[k],
                             .str = bt->str[k],
                             .len = bt->len[k]};
    }
}

void rows_batch_clear(rows_batch *bt)
{
    bt->n = 0;
    bt->bytes.len = 0;
}

void rows_batch_free(rows_batch *bt)
{
    for (int k = 0; k < EXPORT_MAX_COLUMNS; k++) {
        free(bt->present[k]);
        free(bt->i64[k]);
        free(bt->f64[k]);
        free(bt->b[k]);
        free(bt->str[k]);
        free(bt->len[k]);
        free(bt->off[k]);
    }
    buf_free(&bt->bytes);
    *bt = (rows_batch){0};
}

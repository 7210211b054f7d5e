/*
 * manifest.c - the manifest of an export (see manifest.h).
 */
#include "export/manifest.h"

#include "export/out_file.h"
#include "base/json_write.h"

#include <openssl/sha.h>
#include <string.h>

const char *manifest_type_name(pq_type t)
{
    switch (t) {
    case PQ_STRING: return "STRING";
    case PQ_JSON: return "JSON";
    case PQ_TIMESTAMP: return "TIMESTAMP";
    case PQ_INT64: return "INT64";
    case PQ_DOUBLE: return "DOUBLE";
    case PQ_BOOLEAN: return "BOOLEAN";
    }
    return "?";
}

static void put_time_or_null(buf *out, int64_t us, int64_t none)
{
    if (us == none)
        buf_puts(out, "null");
    else
        jw_time(out, us);
}

static void put_columns(buf *out, const export_columns *c)
{
    buf_putc(out, '[');
    for (int k = 0; c && k < c->n; k++) {
        if (k) buf_putc(out, ',');
        buf_puts(out, "{\"name\":");
        jw_cstr(out, c->col[k].name);
        buf_puts(out, ",\"type\":");
        jw_cstr(out, manifest_type_name(c->col[k].type));
        buf_printf(out, ",\"nullable\":%s}", c->col[k].optional ? "true" : "false");
    }
    buf_putc(out, ']');
}

void manifest_json(const manifest_info *m, buf *out)
{
    buf_puts(out, "{\"manifest_version\":1,\"export_id\":");
    jw_cstr(out, m->export_id ? m->export_id : "");
    buf_puts(out, ",\"created_by\":");
    jw_cstr(out, m->created_by ? m->created_by : "medstream");
    buf_puts(out, ",\"as_of\":");
    jw_time(out, m->as_of);
    buf_puts(out, ",\"snapshot_id\":");
    if (m->snapshot_id)
        jw_cstr(out, m->snapshot_id);
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"scope\":");
    jw_cstr(out, export_scope_names[m->scope]);
    buf_puts(out, ",\"format\":");
    jw_cstr(out, export_format_names[m->format]);
    buf_puts(out, ",\"schema_sha256\":");
    jw_cstr(out, m->schema_sha256);
    if (m->schema_version) buf_printf(out, ",\"schema_version\":%u", m->schema_version);
    buf_puts(out, ",\"filters\":{\"type\":");
    if (m->type)
        jw_cstr(out, m->type);
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"since\":");
    put_time_or_null(out, m->since, INT64_MIN);
    buf_puts(out, ",\"until\":");
    put_time_or_null(out, m->until, INT64_MAX);
    buf_puts(out, "},\"partitioning\":[\"type\",");
    jw_cstr(out, m->date_key ? m->date_key : "date");
    buf_puts(out, "],\"columns\":{\"records\":");
    put_columns(out, m->record_columns);
    buf_puts(out, ",\"patients\":");
    put_columns(out, m->patient_columns);
    buf_printf(out, "},\"rows\":{\"records\":%llu,\"patients\":%llu},\"files\":[", (unsigned long long)m->record_rows,
               (unsigned long long)m->patient_rows);
    for (size_t i = 0; i < m->nfiles; i++) {
        const manifest_file *f = &m->files[i];
        char hex[65];
        out_hex(f->sha256, 32, hex);
        if (i) buf_putc(out, ',');
        buf_puts(out, "{\"path\":");
        jw_cstr(out, f->path);
        buf_printf(out, ",\"rows\":%llu,\"bytes\":%llu,\"sha256\":\"%s\"}", (unsigned long long)f->rows,
                   (unsigned long long)f->bytes, hex);
    }
    buf_puts(out, "]}\n");
}

static void put_opt(buf *b, const char *k, const char *v)
{
    buf_puts(b, k);
    buf_putc(b, '=');
    jw_cstr(b, v ? v : "");
    buf_putc(b, '\n');
}

void manifest_schema_hash(const schema *s, char hex[65])
{
    buf b = {0};
    put_opt(&b, "name", s->name_field);
    for (int i = 1; i < s->nname_parts; i++) /* a composed name: its parts (one part: as before) */
        put_opt(&b, "name_part", s->name_parts[i]);
    put_opt(&b, "dob", s->dob_field);
    put_opt(&b, "record_id", s->record_id_field);
    put_opt(&b, "type", s->type_field);
    put_opt(&b, "event_time", s->ts_field);
    put_opt(&b, "default_type", s->default_type);
    for (int i = 0; i < s->npub; i++) {
        buf_puts(&b, "public ");
        jw_cstr(&b, s->pub[i].field);
        buf_printf(&b, " %d", (int)s->pub[i].transform);
        if (s->pub[i].transform == PUBLISH_AGE_BAND) buf_printf(&b, " width=%d", s->pub[i].width);
        if (s->pub[i].transform == PUBLISH_DATE_SHIFT) buf_printf(&b, " max_days=%d", s->pub[i].max_days);
        if (s->pub[i].transform == PUBLISH_PSEUDONYM && s->pub[i].patient_scope) buf_puts(&b, " patient");
        buf_putc(&b, '\n');
    }
    for (int i = 0; i < s->ntypes; i++) {
        buf_puts(&b, "typed ");
        jw_cstr(&b, s->types[i].field);
        buf_printf(&b, " %d\n", (int)s->types[i].type);
    }
    unsigned char d[32];
    SHA256((const unsigned char *)b.data, b.len, d);
    out_hex(d, 32, hex);
    buf_free(&b);
}

/*
 * deidentify.c - allow-list projection with transforms (see deidentify.h).
 */
#include "pipeline/deidentify.h"

#include "base/json_write.h"
#include "base/timefmt.h"

#include <string.h>

/* Write the transformed value of a field; false if it cannot be published. */
static bool publish_value(const schema_public_field *pf, const char *val, size_t val_len, json_type type, buf *out)
{
    if (pf->transform == PUBLISH_COPY) {
        buf_put(out, val, val_len);
        return true;
    }
    /* PUBLISH_YEAR: a "YYYY-MM-DD" date or an RFC 3339 time string */
    if (type != JSON_STRING || val_len < 12) return false;
    const char *s = val + 1;
    size_t n = val_len - 2;
    int y, m, d;
    int64_t us;
    if (n == 10 && date_parse(s, n, &y, &m, &d)) {
        buf_printf(out, "\"%04d\"", y);
        return true;
    }
    if (time_parse_rfc3339(s, n, &us)) {
        buf_printf(out, "\"%04d\"", time_year(us));
        return true;
    }
    return false;
}

void deid_record_fields(const schema *s, const record_field *fields, uint32_t n, buf *out)
{
    bool first = true;
    buf_putc(out, '{');
    for (int i = 0; i < s->npub; i++) {
        const schema_public_field *pf = &s->pub[i];
        size_t kl = strlen(pf->field);
        for (uint32_t j = 0; j < n; j++) {
            if (fields[j].key_len != kl || memcmp(fields[j].key, pf->field, kl) != 0) continue;
            size_t mark = out->len;
            bool was_first = first;
            jw_key(out, &first, pf->field);
            if (!publish_value(pf, fields[j].val, fields[j].val_len, fields[j].type, out)) {
                out->len = mark; /* unpublishable: leave the field out, never copy it raw */
                out->data[mark] = 0;
                first = was_first;
            }
            break;
        }
    }
    buf_putc(out, '}');
}

void deid_record(const schema *s, parsed_record *r, arena *mem)
{
    if (r->rejected) return;
    buf pub = {0};
    deid_record_fields(s, r->fields, r->nfields, &pub);
    r->public_fields = arena_strndup(mem, pub.data, pub.len);
    r->public_fields_len = (uint32_t)pub.len;
    buf_free(&pub);
}

bool deid_patient_field_public(const schema *s, const state_field *f)
{
    return schema_public(s, f->key, f->key_len) && !schema_is_record_field(s, f->key, f->key_len);
}

void deid_patient_fields(const schema *s, const state_field *state, uint32_t n, const char *const *vals, buf *out)
{
    bool first = true;
    buf_putc(out, '{');
    for (int i = 0; i < s->npub; i++) {
        const schema_public_field *pf = &s->pub[i];
        size_t kl = strlen(pf->field);
        if (schema_is_record_field(s, pf->field, kl)) continue;
        for (uint32_t j = 0; j < n; j++) {
            if (state[j].key_len != kl || memcmp(state[j].key, pf->field, kl) != 0 || !vals[j]) continue;
            size_t mark = out->len;
            bool was_first = first;
            jw_key(out, &first, pf->field);
            json_type t = vals[j][0] == '"' ? JSON_STRING : JSON_NUMBER; /* only strings are transformed */
            if (!publish_value(pf, vals[j], state[j].len, t, out)) {
                out->len = mark; /* unpublishable: leave the field out, never copy it raw */
                out->data[mark] = 0;
                first = was_first;
            }
            break;
        }
    }
    buf_putc(out, '}');
}

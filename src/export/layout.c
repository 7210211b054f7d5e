/*
 * layout.c - partition paths and part file names of an export (see layout.h).
 *
 * DESIGN: the PHI partition comes from the record version's meta (type, event time); the public one
 * from the public copy's JSON, read member by member, so that it can hold nothing the copy does not.
 */
#include "export/layout.h"

#include "base/json_scan.h"
#include "base/timefmt.h"

#include <stdlib.h>
#include <string.h>

static bool hive_escapes(unsigned char c) { return c < 0x20 || c == 0x7f || strchr("\"#%'*/:=?\\{[]^", c) != NULL; }

void layout_escape(const char *v, size_t n, buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n == 0) {
        buf_puts(out, LAYOUT_HIVE_NULL);
        return;
    }
    if ((n == 1 && v[0] == '.') || (n == 2 && v[0] == '.' && v[1] == '.')) { /* never a "." or ".." name */
        for (size_t i = 0; i < n; i++)
            buf_puts(out, "%2E");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (hive_escapes(c)) {
            buf_putc(out, '%');
            buf_putc(out, hex[c >> 4]);
            buf_putc(out, hex[c & 15]);
        } else {
            buf_putc(out, (char)c);
        }
    }
}

const char *layout_date_key(const schema *s, export_scope scope)
{
    if (scope == EXPORT_PHI) return "date";
    const schema_public_field *p = schema_public(s, s->ts_field, strlen(s->ts_field));
    return p && p->transform == PUBLISH_YEAR ? "year" : "date";
}

static void put_date(buf *out, int64_t us)
{
    int64_t days = us >= 0 ? us / 86400000000LL : -((-us + 86400000000LL - 1) / 86400000000LL);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    buf_printf(out, "%04lld-%02u-%02u", (long long)y, m, d);
}

void layout_phi_partition(const char *type, size_t type_len, int64_t ts_us, buf *out)
{
    out->len = 0;
    buf_puts(out, "records/type=");
    layout_escape(type, type_len, out);
    buf_puts(out, "/date=");
    put_date(out, ts_us);
}

/* A member's value as partition text: a string decoded (into tmp), another scalar as written; NULL for
 * an object, an array or null. */
static const char *member_text(const json_member *m, buf *tmp, size_t *n)
{
    if (m->type == JSON_STRING) {
        tmp->len = 0;
        buf_reserve(tmp, m->val_len);
        *n = json_string_decode(m->val + 1, m->val_len - 2, tmp->data);
        tmp->len = *n;
        return tmp->data;
    }
    if (m->type == JSON_NUMBER || m->type == JSON_TRUE || m->type == JSON_FALSE) {
        *n = m->val_len;
        return m->val;
    }
    return NULL;
}

static bool key_is(const json_member *m, const char *name)
{
    size_t n = strlen(name);
    if (!m->key_escaped) return m->key_len == n && memcmp(m->key, name, n) == 0;
    char *dec = ms_malloc(m->key_len + 1);
    size_t dl = json_string_decode(m->key, m->key_len, dec);
    bool same = dl == n && memcmp(dec, name, n) == 0;
    free(dec);
    return same;
}

void layout_public_partition(const schema *s, const char *fields, size_t len, buf *out)
{
    json_member m[SCHEMA_MAX_PUBLIC];
    json_error je;
    int nm = json_scan_object(fields, len, m, SCHEMA_MAX_PUBLIC, &je);
    if (nm < 0) nm = 0; /* not an object: every level is the null partition */
    buf tmp = {0};
    const char *type = NULL, *ts = NULL;
    size_t type_len = 0, ts_len = 0;
    char *type_copy = NULL;
    for (int i = 0; i < nm; i++) {
        if (!type && key_is(&m[i], s->type_field)) {
            type = member_text(&m[i], &tmp, &type_len);
            if (type) type = type_copy = ms_strndup(type, type_len);
        } else if (!ts && key_is(&m[i], s->ts_field)) {
            ts = member_text(&m[i], &tmp, &ts_len);
            if (ts) ts = ms_strndup(ts, ts_len);
        }
    }
    out->len = 0;
    buf_puts(out, "records/type=");
    layout_escape(type ? type : "", type ? type_len : 0, out);
    const schema_public_field *p = schema_public(s, s->ts_field, strlen(s->ts_field));
    int64_t us;
    if (p && p->transform == PUBLISH_YEAR) {
        buf_puts(out, "/year=");
        bool year = ts && ts_len == 4 && strspn(ts, "0123456789") >= 4;
        layout_escape(year ? ts : "", year ? 4 : 0, out);
    } else {
        buf_puts(out, "/date=");
        if (p && ts && time_parse_rfc3339(ts, ts_len, &us))
            put_date(out, us);
        else
            buf_puts(out, LAYOUT_HIVE_NULL);
    }
    free(type_copy);
    free((char *)ts);
    buf_free(&tmp);
}

void layout_part_name(uint32_t n, export_format f, buf *out)
{
    out->len = 0;
    buf_printf(out, "part-%05u%s", n, export_format_ext(f));
}

/*
 * schema_canon.c - canonical JSON text of a schema (see schema_canon.h).
 */
#include "pipeline/schema_canon.h"

#include "base/json_scan.h"
#include "base/json_write.h"

#include <stdlib.h>
#include <string.h>

const char SCHEMA_DEFAULT_CANONICAL[] =
    "{\"default_type\":\"record\",\"event_time\":\"ts\",\"identity\":{\"dob\":\"dob\",\"name\":\"name\"},"
    "\"parent\":\"parent_id\",\"public\":{\"favorite_color\":\"copy\",\"ts\":\"year\",\"type\":\"copy\"},"
    "\"record_id\":\"record_id\",\"type\":\"type\"}";

typedef struct {
    char *key; /* decoded */
    size_t key_len;
    const char *val, *val_end;
    size_t order;
} member;

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void put_string(const char *raw, const char *raw_end, buf *out)
{
    size_t n = (size_t)(raw_end - raw) - 2;
    char *dec = malloc(n ? n : 1);
    size_t dl = json_string_decode(raw + 1, n, dec);
    jw_string(out, dec, dl);
    free(dec);
}

/* Emit the canonical form of the value at p (validated text; no leading whitespace); returns its end. */
static const char *canon_value(const char *base, const char *p, const char *end, buf *out)
{
    json_type t;
    json_error err;
    const char *vend = json_scan_value(base, p, end, &t, &err);
    if (!vend) return NULL; /* cannot happen: the whole text was validated */
    if (t == JSON_STRING) {
        put_string(p, vend, out);
    } else if (t == JSON_ARRAY) {
        buf_putc(out, '[');
        const char *q = json_skip_ws(p + 1, vend);
        bool first = true;
        while (q < vend && *q != ']') {
            if (!first) buf_putc(out, ',');
            first = false;
            q = canon_value(base, q, vend, out);
            if (!q) return NULL;
            q = json_skip_ws(q, vend);
            if (q < vend && *q == ',') q = json_skip_ws(q + 1, vend);
        }
        buf_putc(out, ']');
    } else if (t == JSON_OBJECT) {
        member *m = NULL;
        size_t n = 0, cap = 0;
        const char *q = json_skip_ws(p + 1, vend);
        while (q < vend && *q != '}') {
            json_type kt;
            const char *kend = json_scan_value(base, q, vend, &kt, &err);
            if (!kend) break;
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                m = realloc(m, sizeof *m * cap);
            }
            size_t rl = (size_t)(kend - q) - 2;
            m[n].key = malloc(rl ? rl : 1);
            m[n].key_len = json_string_decode(q + 1, rl, m[n].key);
            m[n].order = n;
            q = json_skip_ws(kend, vend);
            q = json_skip_ws(q + 1, vend); /* ':' */
            json_type vt;
            m[n].val = q;
            m[n].val_end = json_scan_value(base, q, vend, &vt, &err);
            if (!m[n].val_end) {
                free(m[n].key);
                break;
            }
            q = json_skip_ws(m[n].val_end, vend);
            if (q < vend && *q == ',') q = json_skip_ws(q + 1, vend);
            n++;
        }
        if (n) qsort(m, n, sizeof *m, member_cmp); /* an empty object: m is NULL, which qsort may not take */
        buf_putc(out, '{');
        for (size_t i = 0; i < n; i++) {
            if (i) buf_putc(out, ',');
            jw_string(out, m[i].key, m[i].key_len);
            buf_putc(out, ':');
            canon_value(base, m[i].val, m[i].val_end, out);
            free(m[i].key);
        }
        buf_putc(out, '}');
        free(m);
    } else {
        buf_put(out, p, (size_t)(vend - p)); /* number, true, false, null: as written */
    }
    return vend;
}

ms_code schema_canonical(const char *text, size_t len, buf *out, ms_err *e)
{
    out->len = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    const char *end = text + len;
    const char *p = json_skip_ws(text, end);
    json_type t;
    json_error err;
    const char *vend = p < end ? json_scan_value(text, p, end, &t, &err) : NULL;
    if (!vend)
        return ms_fail(e, MS_EINVAL, "schema: not valid JSON (at byte %zu: %s)", p < end ? err.offset : len,
                       p < end ? err.msg : "empty");
    if (t != JSON_OBJECT) return ms_fail(e, MS_EINVAL, "schema: expected a JSON object");
    if (json_skip_ws(vend, end) != end)
        return ms_fail(e, MS_EINVAL, "schema: text after the object (at byte %zu)", (size_t)(vend - text));
    canon_value(text, p, end, out);
    return MS_OK;
}

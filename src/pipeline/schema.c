/*
 * schema.c - field roles and the public allow-list (see schema.h).
 */
#include "pipeline/schema.h"

#include "base/json_scan.h"

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
    s->default_type = ms_strndup("record", 6);
    add_public(s, "favorite_color", PUBLISH_COPY);
    add_public(s, "type", PUBLISH_COPY);
    add_public(s, "ts", PUBLISH_YEAR);
}

void schema_free(schema *s)
{
    free(s->name_field);
    free(s->dob_field);
    free(s->record_id_field);
    free(s->type_field);
    free(s->ts_field);
    free(s->default_type);
    for (int i = 0; i < s->npub; i++)
        free(s->pub[i].field);
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
        } else {
            rc = ms_fail(e, MS_EINVAL,
                         "schema: unknown key \"%s\" (expected identity, record_id, type, event_time, default_type, "
                         "public)",
                         key_text(m->key, m->key_len, name));
        }
    }
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

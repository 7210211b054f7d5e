/*
 * record_scan.c - parse and validate records, extract roles (see record_scan.h).
 *
 * DESIGN: one validating pass of json_scan_object over each record gives spans of the top-level
 * members; only the few role fields (name, dob, record id, type, ts, parent) are decoded. Values are hashed
 * with XXH3 (fast enough to hash every byte at memory speed) so that the writer can tell a changed
 * field or a duplicate record without comparing bodies. Derived record ids are an HMAC-SHA256 of the
 * content hash under the store's secret: deterministic (a retried record gets the same id, so it is a
 * duplicate) yet not a dictionary-attackable hash of PHI. An imported row's is the HMAC of its origin
 * (the file) and physical line instead (scan_config.origin): 40 bytes where the content's are 16, so the
 * two kinds of derived id never name the same input.
 */
#include "pipeline/record_scan.h"

#include "base/timefmt.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
/* XXH3 through libxxhash's x86 dispatcher: the widest vectors this CPU has (AVX2, AVX-512), not the SSE2 that
 * the library's plain functions are built for; the same hashes */
#include <xxh_x86dispatch.h>

int record_key_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn;
}

static int field_cmp(const void *x, const void *y)
{
    const record_field *a = x, *b = y;
    return record_key_cmp(a->key, a->key_len, b->key, b->key_len);
}

const record_field *record_field_get(const parsed_record *r, const char *key, size_t key_len)
{
    size_t lo = 0, hi = r->nfields;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = record_key_cmp(r->fields[mid].key, r->fields[mid].key_len, key, key_len);
        if (c == 0) return &r->fields[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void record_reject(parsed_record *r, arena *mem, const char *fmt, const char *a, const char *b)
{
    r->rejected = true;
    r->error = arena_printf(mem, fmt, r->line, a ? a : "", b ? b : "");
}

char *record_field_string(arena *mem, const record_field *f, uint32_t *len)
{
    char *out = arena_alloc(mem, f->val_len);
    size_t n = json_string_decode(f->val + 1, f->val_len - 2, out);
    out[n] = 0;
    if (memchr(out, 0, n)) return NULL;
    *len = (uint32_t)n;
    return out;
}

static bool has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return true;
    return false;
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++)
        out[2 * i] = digits[in[i] >> 4], out[2 * i + 1] = digits[in[i] & 15];
    out[2 * n] = 0;
}

const char *record_scan_fields(const char *text, size_t len, arena *mem, record_field **out, uint32_t *nout)
{
    static _Thread_local json_member members[RECORD_MAX_FIELDS];
    static _Thread_local char why[160];
    json_error je;
    *out = NULL;
    *nout = 0;
    int n = json_scan_object(text, len, members, RECORD_MAX_FIELDS, &je);
    if (n < 0) {
        if (strncmp(je.msg, "not an object", 13) == 0)
            snprintf(why, sizeof why, "%s", je.msg);
        else if (strcmp(je.msg, "invalid UTF-8") == 0)
            snprintf(why, sizeof why, "invalid UTF-8 at byte %zu", je.offset);
        else if (strcmp(je.msg, "too many fields") == 0)
            snprintf(why, sizeof why, "more than %d fields", RECORD_MAX_FIELDS);
        else
            snprintf(why, sizeof why, "malformed JSON at byte %zu: %s", je.offset, je.msg);
        return why;
    }
    record_field *fields = arena_alloc(mem, sizeof(record_field) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        record_field *f = &fields[i];
        const json_member *m = &members[i];
        if (m->key_escaped) {
            char *k = arena_alloc(mem, m->key_len + 1);
            size_t kl = json_string_decode(m->key, m->key_len, k);
            k[kl] = 0;
            f->key = k;
            f->key_len = (uint32_t)kl;
        } else {
            f->key = m->key;
            f->key_len = (uint32_t)m->key_len;
        }
        f->val = m->val;
        f->val_len = (uint32_t)m->val_len;
        f->type = m->type;
        f->hash = XXH3_64bits(m->val, m->val_len);
        if (f->key_len > RECORD_KEY_MAX) {
            snprintf(why, sizeof why, "field %d: name longer than %d bytes", i + 1, RECORD_KEY_MAX);
            return why;
        }
    }
    qsort(fields, (size_t)n, sizeof(record_field), field_cmp);
    for (int i = 1; i < n; i++) {
        if (record_key_cmp(fields[i - 1].key, fields[i - 1].key_len, fields[i].key, fields[i].key_len) == 0) {
            /* the field's name, cut to 64 bytes: names are not PHI, values are */
            snprintf(why, sizeof why, "duplicate field \"%.*s\"", fields[i].key_len > 64 ? 64 : (int)fields[i].key_len,
                     fields[i].key);
            return why;
        }
    }
    *out = fields;
    *nout = (uint32_t)n;
    return NULL;
}

void record_scan_one(const scan_config *cfg, const char *text, size_t len, uint32_t line, arena *mem, parsed_record *r)
{
    const schema *sc = cfg->schema;
    memset(r, 0, sizeof *r);
    r->line = line;
    /* trim */
    const char *end = text + len;
    text = json_skip_ws(text, end);
    while (end > text && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        end--;
    len = (size_t)(end - text);
    r->body = text;
    r->body_len = (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
    if (len > cfg->max_record) {
        r->rejected = true;
        r->error =
            arena_printf(mem, "line %u: record too large (%zu bytes; the limit is %zu)", line, len, cfg->max_record);
        return;
    }
    const char *why = record_scan_fields(text, len, mem, &r->fields, &r->nfields);
    if (why) {
        r->rejected = true;
        r->error = arena_printf(mem, "line %u: %s", line, why);
        return;
    }

    const record_field *f;
    /* type */
    f = record_field_get(r, sc->type_field, strlen(sc->type_field));
    if (f) {
        if (f->type != JSON_STRING)
            return record_reject(r, mem, "line %u: field \"%s\" must be a string, not %s", sc->type_field,
                                 json_type_name(f->type));
        char *t = record_field_string(mem, f, &r->type_len);
        if (!t || r->type_len == 0 || r->type_len > 64 || has_control(t, r->type_len))
            return record_reject(r, mem, "line %u: field \"%s\" must be 1-64 characters without control characters%s",
                                 sc->type_field, NULL);
        r->type = t;
    } else {
        r->type = sc->default_type;
        r->type_len = (uint32_t)strlen(sc->default_type);
    }

    /* event time */
    f = record_field_get(r, sc->ts_field, strlen(sc->ts_field));
    if (f) {
        if (f->type != JSON_STRING)
            return record_reject(r, mem, "line %u: field \"%s\" must be an RFC 3339 time string, not %s", sc->ts_field,
                                 json_type_name(f->type));
        if (!time_parse_rfc3339(f->val + 1, f->val_len - 2, &r->ts_us))
            return record_reject(r, mem, "line %u: field \"%s\" is not an RFC 3339 time%s", sc->ts_field, NULL);
        /* year 0 and before (after the offset) exists in no calendar a record uses, nor in PostgreSQL */
        if (time_year(r->ts_us) < 1)
            return record_reject(r, mem, "line %u: field \"%s\" is before the year 1%s", sc->ts_field, NULL);
        /* nor past 9999: a time that rolls into year 10000 after its offset cannot be shown as RFC 3339 */
        if (time_year(r->ts_us) > 9999)
            return record_reject(r, mem, "line %u: field \"%s\" is after the year 9999%s", sc->ts_field, NULL);
    } else if (cfg->default_ts_us) { /* the event time given beside it (a message header): as a body's */
        int year = time_year(cfg->default_ts_us);
        if (year < 1 || year > 9999)
            return record_reject(r, mem,
                                 "line %u: the event time given beside it (a message header) is not in "
                                 "the years 1 to 9999",
                                 NULL, NULL);
        r->ts_us = cfg->default_ts_us;
    } else {
        r->ts_us = cfg->now_us;
    }

    /* parent: a record id (the index of children is keyed by it), or null for none */
    f = record_field_get(r, sc->parent_field, strlen(sc->parent_field));
    if (f && f->type != JSON_NULL) {
        if (f->type != JSON_STRING)
            return record_reject(r, mem, "line %u: field \"%s\" must be a record id (a string) or null, not %s",
                                 sc->parent_field, json_type_name(f->type));
        char *id = record_field_string(mem, f, &r->parent_id_len);
        if (!id || r->parent_id_len == 0 || r->parent_id_len > RECORD_ID_MAX || has_control(id, r->parent_id_len) ||
            memchr(id, '/', r->parent_id_len))
            return record_reject(
                r, mem,
                "line %u: field \"%s\" must be a record id: 1-256 characters without control characters or '/'%s",
                sc->parent_field, NULL);
        r->parent_id = id;
    }

    /* canonical content hash: fields in key order */
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    for (uint32_t i = 0; i < r->nfields; i++) {
        const record_field *x = &r->fields[i];
        uint32_t lens[2] = {x->key_len, x->val_len};
        XXH3_128bits_update(&st, lens, sizeof lens);
        XXH3_128bits_update(&st, x->key, x->key_len);
        XXH3_128bits_update(&st, x->val, x->val_len);
    }
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    XXH128_canonicalFromHash((XXH128_canonical_t *)r->content_hash, h);

    /* record id */
    f = record_field_get(r, sc->record_id_field, strlen(sc->record_id_field));
    if (f) {
        if (f->type != JSON_STRING)
            return record_reject(r, mem, "line %u: field \"%s\" must be a string, not %s", sc->record_id_field,
                                 json_type_name(f->type));
        char *id = record_field_string(mem, f, &r->record_id_len);
        if (!id || r->record_id_len == 0 || r->record_id_len > RECORD_ID_MAX || has_control(id, r->record_id_len) ||
            memchr(id, '/', r->record_id_len))
            return record_reject(r, mem,
                                 "line %u: field \"%s\" must be 1-256 characters without control characters or '/'%s",
                                 sc->record_id_field, NULL);
        r->record_id = id;
    } else if (cfg->record_id) { /* the id it had in the store that seeded a cluster */
        if (cfg->record_id_len == 0 || cfg->record_id_len > RECORD_ID_MAX ||
            has_control(cfg->record_id, cfg->record_id_len) || memchr(cfg->record_id, '/', cfg->record_id_len))
            return record_reject(r, mem,
                                 "line %u: the record id given beside it (a message header%s) must be 1-256 "
                                 "characters without control characters or '/'%s",
                                 NULL, NULL);
        char *id = arena_alloc(mem, cfg->record_id_len + 1);
        memcpy(id, cfg->record_id, cfg->record_id_len);
        id[cfg->record_id_len] = '\0';
        r->record_id = id;
        r->record_id_len = cfg->record_id_len;
    } else {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        if (cfg->origin) { /* a row of a file: named by (file, physical line) */
            unsigned char where[40];
            memcpy(where, cfg->origin, 32);
            ms_set_be64(where + 32, cfg->origin_line + line - 1);
            HMAC(EVP_sha256(), cfg->id_key, 32, where, sizeof where, mac, &mac_len);
        } else {
            HMAC(EVP_sha256(), cfg->id_key, 32, r->content_hash, sizeof r->content_hash, mac, &mac_len);
        }
        char *id = arena_alloc(mem, 33);
        hex(mac, 16, id);
        r->record_id = id;
        r->record_id_len = 32;
        r->record_id_derived = true;
    }
}

static parsed_record *batch_add(record_batch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->records = ms_realloc(b->records, sizeof(parsed_record) * b->cap);
    }
    return &b->records[b->n++];
}

static void finish(record_batch *b, parsed_record *r)
{
    if (r->rejected) b->rejected++;
}

ms_code record_scan_body(const scan_config *cfg, const char *body, size_t len, record_batch *out, ms_err *e)
{
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) { /* a UTF-8 byte-order mark: skipped */
        body += 3;
        len -= 3;
    }
    const char *end = body + len;
    const char *p = json_skip_ws(body, end);
    if (p == end) return ms_fail(e, MS_EINVAL, "empty body: expected NDJSON, a JSON array or a JSON object");
    if (*p == '[') {
        /* a JSON array: each element is a record; a structural error ends the array there */
        uint32_t item = 0;
        p = json_skip_ws(p + 1, end);
        if (p < end && *p == ']') {
            if (json_skip_ws(p + 1, end) != end) goto trailing;
            return MS_OK;
        }
        for (;;) {
            item++;
            json_type t;
            json_error je;
            const char *q = json_scan_value(body, p, end, &t, &je);
            parsed_record *r = batch_add(out);
            if (!q) {
                memset(r, 0, sizeof *r);
                r->line = item;
                r->rejected = true;
                r->error = arena_printf(&out->mem,
                                        "item %u: malformed JSON at byte %zu of the body: %s; the rest of the array "
                                        "was not read",
                                        item, je.offset, je.msg);
                finish(out, r);
                return MS_OK;
            }
            record_scan_one(cfg, p, (size_t)(q - p), item, &out->mem, r);
            finish(out, r);
            p = json_skip_ws(q, end);
            if (p < end && *p == ',') {
                p = json_skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == ']') {
                if (json_skip_ws(p + 1, end) != end) goto trailing;
                return MS_OK;
            }
            parsed_record *bad = batch_add(out);
            memset(bad, 0, sizeof *bad);
            bad->line = item + 1;
            bad->rejected = true;
            bad->error = arena_printf(&out->mem, "item %u: malformed JSON array at byte %zu: expected ',' or ']'",
                                      item + 1, (size_t)(p - body));
            finish(out, bad);
            return MS_OK;
        }
    }
    /* one object (possibly pretty-printed) or NDJSON */
    if (*p == '{') {
        json_type t;
        const char *q = json_scan_value(body, p, end, &t, NULL);
        if (q && json_skip_ws(q, end) == end) {
            uint32_t line = 1; /* its first line: blank lines before it count, as NDJSON's (an import blanks the
                                * rows it refused, and a record's origin is its line) */
            for (const char *c = body; (c = memchr(c, '\n', (size_t)(p - c))) != NULL; c++)
                line++;
            parsed_record *r = batch_add(out);
            record_scan_one(cfg, p, (size_t)(q - p), line, &out->mem, r);
            finish(out, r);
            return MS_OK;
        }
    }
    uint32_t line = 0;
    const char *s = body;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        line++;
        if (json_skip_ws(s, le) != le) {
            parsed_record *r = batch_add(out);
            record_scan_one(cfg, s, (size_t)(le - s), line, &out->mem, r);
            finish(out, r);
        }
        s = nl ? nl + 1 : end;
    }
    return MS_OK;
trailing : {
    parsed_record *r = batch_add(out);
    memset(r, 0, sizeof *r);
    r->line = out->n;
    r->rejected = true;
    r->error = arena_printf(&out->mem, "body: trailing text after the JSON array");
    finish(out, r);
    return MS_OK;
}
}

void record_batch_free(record_batch *b)
{
    arena_free(&b->mem);
    free(b->records);
    memset(b, 0, sizeof *b);
}

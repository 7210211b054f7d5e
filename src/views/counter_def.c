/*
 * counter_def.c - counter definitions: parsing, the canonical form, and the test of a record against
 * one (see counter_def.h).
 *
 * DESIGN: one json_scan_object over the definition, then per key a small parser that either fills its
 * part or names the key in the error. Values of "equals" and "in" are kept decoded (strings) or as
 * numbers, so that matching a record costs one comparison per value with no allocation beyond a
 * decoded copy of the record's string (on the stack up to 512 bytes).
 *
 * Must never: put a value of the definition into an error (a where value may be PHI), accept a key it
 * does not know (a typo must not silently count everything).
 */
#include "views/counter_def.h"

#include "base/json_write.h"
#include "base/options.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool counter_duration_parse(const char *s, size_t n, int64_t *us)
{
    char text[32];
    if (n == 0 || n >= sizeof text) return false;
    memcpy(text, s, n);
    text[n] = 0;
    uint64_t ms;
    if (!parse_duration_ms(text, 1000, &ms) || ms > (uint64_t)INT64_MAX / 1000) return false;
    *us = (int64_t)ms * 1000;
    return true;
}

void counter_duration_format(int64_t us, char *out, size_t cap)
{
    if (us % 1000 == 0)
        format_duration_ms(out, cap, (uint64_t)(us / 1000));
    else
        snprintf(out, cap, "%lldus", (long long)us);
}

static bool key_is(const json_member *m, const char *k)
{
    return strlen(k) == m->key_len && !memcmp(m->key, k, m->key_len);
}

/* A member's string value decoded (malloc'd, *n its length), or NULL if it is not a string or holds NUL. */
static char *string_of(const json_member *m, size_t *n)
{
    if (m->type != JSON_STRING) return NULL;
    char *out = ms_malloc(m->val_len);
    *n = json_string_decode(m->val + 1, m->val_len - 2, out);
    out[*n] = 0;
    if (memchr(out, 0, *n)) {
        free(out);
        return NULL;
    }
    return out;
}

/* A key of the definition for a message: only names the schema of definitions knows are echoed. */
static ms_code unknown_key(const json_member *m, const char *where, const char *expected, ms_err *e)
{
    char name[40];
    size_t n = m->key_len < 32 ? m->key_len : 32;
    for (size_t i = 0; i < n; i++)
        name[i] = isalnum((unsigned char)m->key[i]) || m->key[i] == '_' ? m->key[i] : '?';
    name[n] = 0;
    return ms_fail(e, MS_EINVAL, "counter: unknown key \"%s%s\"%s (expected %s)", name, m->key_len > 32 ? "..." : "",
                   where, expected);
}

static bool scalar(const json_member *m, const char *val, size_t len, json_type t, counter_value *v)
{
    (void)m;
    memset(v, 0, sizeof *v);
    v->type = t;
    switch (t) {
    case JSON_STRING: {
        v->text = ms_malloc(len);
        v->len = json_string_decode(val + 1, len - 2, v->text);
        v->text[v->len] = 0;
        return true;
    }
    case JSON_NUMBER:
        v->text = ms_strndup(val, len);
        v->len = len;
        v->num = strtod(v->text, NULL);
        return isfinite(v->num);
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL: return true;
    default: return false;
    }
}

/* Forget a where parsed before (a repeated "where" replaces it). */
static void clear_where(counter_def *d)
{
    free(d->field);
    for (uint32_t i = 0; i < d->nvalues; i++)
        free(d->values[i].text);
    free(d->values);
    free(d->contains);
    d->field = d->contains = NULL;
    d->values = NULL;
    d->nvalues = 0;
    d->field_len = d->contains_len = 0;
    d->op = WHERE_NONE;
}

static ms_code parse_where(counter_def *d, const json_member *w, ms_err *e)
{
    clear_where(d);
    json_member m[4];
    json_error je;
    int n = w->type == JSON_OBJECT ? json_scan_object(w->val, w->val_len, m, 4, &je) : -1;
    if (n < 0)
        return ms_fail(e, MS_EINVAL,
                       "counter: \"where\" must be an object {\"field\", and one of \"equals\", \"in\", \"contains\", "
                       "\"exists\"}");
    const json_member *op = NULL;
    for (int i = 0; i < n; i++) {
        if (key_is(&m[i], "field")) {
            free(d->field);
            d->field = string_of(&m[i], &d->field_len);
            if (!d->field || d->field_len == 0 || d->field_len > SCHEMA_FIELD_MAX)
                return ms_fail(e, MS_EINVAL, "counter: \"where.field\" must be a field name (a non-empty string)");
        } else if (key_is(&m[i], "equals") || key_is(&m[i], "in") || key_is(&m[i], "contains") ||
                   key_is(&m[i], "exists")) {
            if (op)
                return ms_fail(e, MS_EINVAL,
                               "counter: \"where\" takes one of \"equals\", \"in\", \"contains\", \"exists\", not two");
            op = &m[i];
        } else {
            return unknown_key(&m[i], " in \"where\"", "field, equals, in, contains, exists", e);
        }
    }
    if (!d->field) return ms_fail(e, MS_EINVAL, "counter: \"where.field\" is missing");
    if (!op)
        return ms_fail(e, MS_EINVAL, "counter: \"where\" needs one of \"equals\", \"in\", \"contains\", \"exists\"");
    if (key_is(op, "equals")) {
        d->op = WHERE_EQUALS;
        d->values = ms_calloc(1, sizeof *d->values);
        d->nvalues = 1;
        if (!scalar(op, op->val, op->val_len, op->type, &d->values[0]))
            return ms_fail(e, MS_EINVAL, "counter: \"where.equals\" must be a string, a number, true, false or null");
    } else if (key_is(op, "in")) {
        d->op = WHERE_IN;
        if (op->type != JSON_ARRAY) return ms_fail(e, MS_EINVAL, "counter: \"where.in\" must be an array of values");
        d->values = ms_calloc(COUNTER_IN_MAX, sizeof *d->values);
        const char *p = op->val + 1, *end = op->val + op->val_len - 1;
        for (;;) {
            p = json_skip_ws(p, end);
            if (p >= end) break;
            json_type t;
            const char *q = json_scan_value(op->val, p, end, &t, &je);
            if (!q) return ms_fail(e, MS_EINVAL, "counter: \"where.in\" must be an array of values");
            if (d->nvalues == COUNTER_IN_MAX)
                return ms_fail(e, MS_EINVAL, "counter: \"where.in\" holds at most %d values", COUNTER_IN_MAX);
            if (!scalar(op, p, (size_t)(q - p), t, &d->values[d->nvalues++]))
                return ms_fail(e, MS_EINVAL,
                               "counter: \"where.in\" values must be strings, numbers, true, false or null");
            p = json_skip_ws(q, end);
            if (p < end && *p == ',') p++;
        }
        if (d->nvalues == 0) return ms_fail(e, MS_EINVAL, "counter: \"where.in\" must hold at least one value");
    } else if (key_is(op, "contains")) {
        d->op = WHERE_CONTAINS;
        d->contains = string_of(op, &d->contains_len);
        if (!d->contains || d->contains_len == 0)
            return ms_fail(e, MS_EINVAL, "counter: \"where.contains\" must be a non-empty string");
    } else {
        d->op = WHERE_EXISTS;
        if (op->type != JSON_TRUE && op->type != JSON_FALSE)
            return ms_fail(e, MS_EINVAL, "counter: \"where.exists\" must be true or false");
        d->exists = op->type == JSON_TRUE;
    }
    return MS_OK;
}

static ms_code parse_duration(const json_member *m, const char *what, int64_t *us, ms_err *e)
{
    int64_t v;
    if (m->type != JSON_STRING || !counter_duration_parse(m->val + 1, m->val_len - 2, &v) || v <= 0)
        return ms_fail(e, MS_EINVAL, "counter: \"%s\" must be a duration such as \"72h\", \"90m\", \"30s\" or \"7d\"",
                       what);
    *us = v;
    return MS_OK;
}

static ms_code parse_members(counter_def *d, const char *text, size_t len, ms_err *e)
{
    json_member m[16];
    json_error je;
    int n = json_scan_object(text, len, m, 16, &je);
    if (n < 0)
        return ms_fail(e, MS_EINVAL, "counter: not a JSON object of at most 16 keys: %s at byte %zu", je.msg,
                       je.offset);
    bool have_name = false, have_window = false, have_buckets = false;
    ms_code rc = MS_OK;
    for (int i = 0; i < n && rc == MS_OK; i++) {
        const json_member *k = &m[i];
        if (key_is(k, "name")) {
            size_t nl;
            char *name = string_of(k, &nl);
            bool ok = name && nl >= 1 && nl <= COUNTER_NAME_MAX;
            for (size_t j = 0; ok && j < nl; j++)
                ok = isalnum((unsigned char)name[j]) || name[j] == '_' || name[j] == '.' || name[j] == '-';
            if (ok) memcpy(d->name, name, nl + 1);
            free(name);
            if (!ok)
                rc = ms_fail(e, MS_EINVAL, "counter: \"name\" must be 1-%d characters of A-Z a-z 0-9 _ . -",
                             COUNTER_NAME_MAX);
            else if (!strcmp(d->name, ".") || !strcmp(d->name, "..")) /* a path segment clients resolve away (RFC
                                                                         3986 5.2.4): /v1/counters/.. is sent as
                                                                         /v1/ by curl, browsers, the console */
                rc = ms_fail(e, MS_EINVAL,
                             "counter: \"name\": \".\" and \"..\" are not counter names (a name is a URL path "
                             "segment)");
            have_name = true;
        } else if (key_is(k, "type")) {
            free(d->type);
            d->type = k->type == JSON_NULL ? NULL : string_of(k, &d->type_len);
            if (k->type != JSON_NULL && (!d->type || d->type_len == 0 || d->type_len > 64))
                rc = ms_fail(e, MS_EINVAL, "counter: \"type\" must be a record type (a string of 1-64 bytes)");
        } else if (key_is(k, "where")) {
            clear_where(d);
            if (k->type != JSON_NULL) rc = parse_where(d, k, e);
        } else if (key_is(k, "max_window")) {
            rc = parse_duration(k, "max_window", &d->max_window_us, e);
            have_window = true;
        } else if (key_is(k, "resolution")) {
            rc = parse_duration(k, "resolution", &d->resolution_us, e);
            if (rc == MS_OK && (d->resolution_us < 1000000 || d->resolution_us % 1000000))
                rc = ms_fail(e, MS_EINVAL,
                             "counter: \"resolution\" must be whole seconds, at least \"1s\" (\"1s\", \"1m\")");
        } else if (key_is(k, "per_parent")) {
            if (k->type != JSON_TRUE && k->type != JSON_FALSE)
                rc = ms_fail(e, MS_EINVAL, "counter: \"per_parent\" must be true or false");
            d->per_parent = k->type == JSON_TRUE;
        } else if (key_is(k, "max_parent_buckets")) {
            char num[24];
            long long v = -1;
            if (k->type == JSON_NUMBER && k->val_len < sizeof num) {
                memcpy(num, k->val, k->val_len);
                num[k->val_len] = 0;
                char *end;
                v = strtoll(num, &end, 10);
                if (*end) v = -1;
            }
            if (v < COUNTER_PARENT_BUCKETS_MIN || v > COUNTER_PARENT_BUCKETS_MAX)
                rc = ms_fail(e, MS_EINVAL, "counter: \"max_parent_buckets\" must be a whole number from %u to %u",
                             COUNTER_PARENT_BUCKETS_MIN, COUNTER_PARENT_BUCKETS_MAX);
            else
                d->max_parent_buckets = (uint32_t)v;
            have_buckets = true;
        } else {
            rc = unknown_key(k, "", "name, type, where, max_window, resolution, per_parent, max_parent_buckets", e);
        }
    }
    if (rc != MS_OK) return rc;
    if (!have_name) return ms_fail(e, MS_EINVAL, "counter: \"name\" is missing");
    if (!have_window) return ms_fail(e, MS_EINVAL, "counter: \"max_window\" is missing (e.g. \"72h\")");
    if (have_buckets && !d->per_parent)
        return ms_fail(e, MS_EINVAL, "counter: \"max_parent_buckets\" goes with \"per_parent\": true");
    char res[32], win[32];
    counter_duration_format(d->resolution_us, res, sizeof res);
    counter_duration_format(d->max_window_us, win, sizeof win);
    if (d->max_window_us % d->resolution_us)
        return ms_fail(e, MS_EINVAL, "counter: \"max_window\" (%s) must be a multiple of \"resolution\" (%s)", win,
                       res);
    if (d->max_window_us / d->resolution_us > COUNTER_BUCKETS_MAX)
        return ms_fail(e, MS_EINVAL,
                       "counter: \"max_window\" %s at \"resolution\" %s is %lld buckets, more than %u: take a coarser "
                       "resolution (\"1m\")",
                       win, res, (long long)(d->max_window_us / d->resolution_us), COUNTER_BUCKETS_MAX);
    return MS_OK;
}

ms_code counter_def_parse(counter_def *d, const char *text, size_t len, ms_err *e)
{
    memset(d, 0, sizeof *d);
    d->resolution_us = 1000000;
    d->max_parent_buckets = COUNTER_PARENT_BUCKETS_DEFAULT;
    ms_code rc = parse_members(d, text, len, e);
    if (rc != MS_OK) counter_def_free(d);
    return rc;
}

void counter_def_free(counter_def *d)
{
    free(d->type);
    free(d->field);
    for (uint32_t i = 0; i < d->nvalues; i++)
        free(d->values[i].text);
    free(d->values);
    free(d->contains);
    memset(d, 0, sizeof *d);
}

static void value_json(const counter_value *v, buf *out)
{
    switch (v->type) {
    case JSON_STRING: jw_string(out, v->text, v->len); break;
    case JSON_NUMBER: buf_put(out, v->text, v->len); break;
    case JSON_TRUE: buf_puts(out, "true"); break;
    case JSON_FALSE: buf_puts(out, "false"); break;
    default: buf_puts(out, "null"); break;
    }
}

void counter_def_json(const counter_def *d, buf *out)
{
    char t[32];
    buf_puts(out, "{\"name\":");
    jw_cstr(out, d->name);
    if (d->type) {
        buf_puts(out, ",\"type\":");
        jw_string(out, d->type, d->type_len);
    }
    if (d->op != WHERE_NONE) {
        buf_puts(out, ",\"where\":{\"field\":");
        jw_string(out, d->field, d->field_len);
        switch (d->op) {
        case WHERE_EQUALS:
            buf_puts(out, ",\"equals\":");
            value_json(&d->values[0], out);
            break;
        case WHERE_IN:
            buf_puts(out, ",\"in\":[");
            for (uint32_t i = 0; i < d->nvalues; i++) {
                if (i) buf_putc(out, ',');
                value_json(&d->values[i], out);
            }
            buf_putc(out, ']');
            break;
        case WHERE_CONTAINS:
            buf_puts(out, ",\"contains\":");
            jw_string(out, d->contains, d->contains_len);
            break;
        default: buf_printf(out, ",\"exists\":%s", d->exists ? "true" : "false"); break;
        }
        buf_putc(out, '}');
    }
    counter_duration_format(d->max_window_us, t, sizeof t);
    buf_printf(out, ",\"max_window\":\"%s\"", t);
    counter_duration_format(d->resolution_us, t, sizeof t);
    buf_printf(out, ",\"resolution\":\"%s\",\"per_parent\":%s", t, d->per_parent ? "true" : "false");
    if (d->per_parent) buf_printf(out, ",\"max_parent_buckets\":%u", d->max_parent_buckets);
    buf_putc(out, '}');
}

bool counter_def_same(const counter_def *a, const counter_def *b)
{
    buf x = {0}, y = {0};
    counter_def_json(a, &x);
    counter_def_json(b, &y);
    bool same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    buf_free(&x);
    buf_free(&y);
    return same;
}

bool counter_def_public(const counter_def *d, const schema *s)
{
    /* `type` selects by the type as stored: public only where the public copy carries that very value (a type
     * published transformed, a pseudonym, would be counted by its private value: public reads refuse type=
     * there for the same reason) */
    const schema_public_field *t = d->type ? schema_public(s, s->type_field, strlen(s->type_field)) : NULL;
    if (d->type && (!t || t->transform != PUBLISH_COPY)) return false;
    if (d->op != WHERE_NONE && !schema_public(s, d->field, d->field_len)) return false;
    return true;
}

bool counter_type_matches(const counter_def *d, const char *type, size_t len)
{
    return !d->type || (d->type_len == len && memcmp(d->type, type, len) == 0);
}

/* How rare a byte is in text (higher: rarer): English letters by frequency, blanks and vowels common,
 * anything else rare. The search below looks for the needle's rarest byte. */
static int rarity(unsigned char c)
{
    static const char by_frequency[] = " etaoinshrdlcumwfgypbvkjxqz";
    const char *at = memchr(by_frequency, tolower(c), sizeof by_frequency - 1);
    return at ? (int)(at - by_frequency) : (int)sizeof by_frequency;
}

/* ASCII case-insensitive search of needle in hay: candidates found with memchr on the needle's rarest
 * byte in either case (a 20 KB note is scanned at memory speed), then compared. */
static bool contains_nocase(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn > hn) return false;
    size_t piv = 0;
    for (size_t i = 1; i < nn; i++)
        if (rarity((unsigned char)needle[i]) > rarity((unsigned char)needle[piv])) piv = i;
    unsigned char lo = (unsigned char)tolower((unsigned char)needle[piv]), up = (unsigned char)toupper(lo);
    /* the pivot byte of a match lies in [hay + piv, hay + hn - nn + piv] */
    const char *p = hay + piv, *last = hay + (hn - nn) + piv;
    while (p <= last) {
        size_t room = (size_t)(last - p) + 1;
        const char *a = memchr(p, lo, room), *b = up != lo ? memchr(p, up, a ? (size_t)(a - p) : room) : NULL;
        const char *at = b ? b : a;
        if (!at) return false;
        const char *start = at - piv;
        size_t j = 0;
        while (j < nn && tolower((unsigned char)start[j]) == tolower((unsigned char)needle[j]))
            j++;
        if (j == nn) return true;
        p = at + 1;
    }
    return false;
}

/* A JSON number (text the scanner accepted) as an exact decimal: its significant digits are the integer
 * part's then the fraction's, less the leading and trailing zeros; value = 0.DIGITS x 10^point, negative if
 * neg. Zero has no digits. false if the exponent is beyond +-10^15 (then compared as doubles). */
typedef struct {
    bool neg;
    const char *ip, *fp; /* the integer part's digits, the fraction's */
    size_t il, fl;
    size_t first, n; /* the significant digits: n of them from index first of integer part + fraction */
    int64_t point;
} decimal;

static char dec_digit(const decimal *d, size_t i) { return i < d->il ? d->ip[i] : d->fp[i - d->il]; }

static bool decimal_of(const char *s, size_t len, decimal *d)
{
    const char *p = s, *end = s + len;
    memset(d, 0, sizeof *d);
    if (p < end && *p == '-') d->neg = true, p++;
    d->ip = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    d->il = (size_t)(p - d->ip);
    if (p < end && *p == '.') {
        d->fp = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        d->fl = (size_t)(p - d->fp);
    }
    int64_t exp = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        bool eneg = ++p < end && *p == '-';
        if (p < end && (*p == '-' || *p == '+')) p++;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            exp = exp * 10 + (*p - '0');
            if (exp > 1000000000000000LL) return false;
        }
        if (eneg) exp = -exp;
    }
    size_t total = d->il + d->fl, lead = 0, trail = 0;
    while (lead < total && dec_digit(d, lead) == '0')
        lead++;
    while (trail < total - lead && dec_digit(d, total - 1 - trail) == '0')
        trail++;
    d->first = lead;
    d->n = total - lead - trail;
    d->point = (int64_t)d->il - (int64_t)lead + exp;
    return true;
}

/* Are two JSON numbers the same number? Exactly, whatever their digits (1, 1.0, 10e-1 are; 9007199254740993
 * and 9007199254740992 are not, though they are the same double). */
static bool number_equal(const char *a, size_t al, const char *b, size_t bl, double bnum)
{
    decimal x, y;
    if (!decimal_of(a, al, &x) || !decimal_of(b, bl, &y)) { /* an exponent no record needs: as doubles */
        char num[64];
        if (al >= sizeof num) return false;
        memcpy(num, a, al);
        num[al] = 0;
        return strtod(num, NULL) == bnum;
    }
    if (x.n == 0 || y.n == 0) return x.n == y.n; /* zero (-0 too) */
    if (x.neg != y.neg || x.point != y.point || x.n != y.n) return false;
    for (size_t i = 0; i < x.n; i++)
        if (dec_digit(&x, x.first + i) != dec_digit(&y, y.first + i)) return false;
    return true;
}

/* Does the record's value (raw JSON text of type t) equal v? Strings are compared decoded (dec), numbers as
 * exact decimals. */
static bool value_equal(const counter_value *v, const char *val, size_t len, json_type t, const char *dec, size_t dl)
{
    if (v->type != t) return false;
    switch (t) {
    case JSON_STRING: return dl == v->len && memcmp(dec, v->text, dl) == 0;
    case JSON_NUMBER: return number_equal(val, len, v->text, v->len, v->num);
    default: return true; /* true, false, null: the kind is the value */
    }
}

bool counter_where_holds(const counter_def *d, const char *val, size_t len, json_type t)
{
    if (d->op == WHERE_NONE) return true;
    if (d->op == WHERE_EXISTS) return (val && t != JSON_NULL) == d->exists;
    if (!val) return false;
    if (d->op == WHERE_CONTAINS && t != JSON_STRING) return false;
    char stack[512], *dec = NULL;
    const char *text = NULL; /* a string's decoded text: its raw text when it has no escape (no copy) */
    size_t dl = 0;
    if (t == JSON_STRING) {
        if (!memchr(val + 1, '\\', len - 2)) {
            text = val + 1;
            dl = len - 2;
        } else {
            dec = len - 2 <= sizeof stack ? stack : ms_malloc(len);
            dl = json_string_decode(val + 1, len - 2, dec);
            text = dec;
        }
    }
    bool hit = false;
    if (d->op == WHERE_CONTAINS)
        hit = contains_nocase(text, dl, d->contains, d->contains_len);
    else
        for (uint32_t i = 0; i < d->nvalues && !hit; i++)
            hit = value_equal(&d->values[i], val, len, t, text, dl);
    if (dec && dec != stack) free(dec);
    return hit;
}

/*
 * rules.c - signal rules: parse, compile into one Hyperscan database, match (see rules.h).
 */
#include "notify/rules.h"

#include "base/json_scan.h"
#include "base/json_write.h"

#include <hs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define RECORD_MEMBERS_MAX 1100 /* above the scanner's 1024 fields a record can hold */
#define MEMBERS_MAX 16          /* of a rule object */
#define PHRASE_FLAGS (HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH)
#define REGEX_FLAGS (HS_FLAG_CASELESS | HS_FLAG_UTF8 | HS_FLAG_SINGLEMATCH)

/* ---- parsing ---- */

bool rule_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > RULE_NAME_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

/* The elements of a JSON array already validated by the scanner: arr_next gives each in turn. */
typedef struct {
    const char *p, *end;
} arr_iter;

static void arr_begin(arr_iter *it, const char *val, size_t len)
{
    it->p = val + 1;
    it->end = val + len - 1; /* the closing ']' */
}

static bool arr_next(arr_iter *it, const char **v, size_t *n, json_type *t)
{
    const char *p = json_skip_ws(it->p, it->end);
    if (p < it->end && *p == ',') p = json_skip_ws(p + 1, it->end);
    if (p >= it->end) return false;
    json_error je;
    const char *q = json_scan_value(p, p, it->end, t, &je);
    if (!q) return false;
    *v = p;
    *n = (size_t)(q - p);
    it->p = q;
    return true;
}

/* A JSON string value (with its quotes) decoded into a new C string; NULL if it holds a NUL. */
static char *decode_string(const char *v, size_t n, size_t *out_len)
{
    char *s = ms_malloc(n);
    size_t len = json_string_decode(v + 1, n - 2, s);
    if (memchr(s, 0, len)) {
        free(s);
        return NULL;
    }
    s[len] = 0;
    *out_len = len;
    return s;
}

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (!(*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v')) return false;
    return true;
}

static void free_list(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A list of strings (or, with one_ok, a single string) of at most max_items, each 1..max_len bytes. */
static ms_code string_list(const json_member *m, const char *rule, const char *what, uint32_t max_items, size_t max_len,
                           bool one_ok, bool not_blank, char ***out, uint32_t *nout, ms_err *e)
{
    if (m->type != JSON_ARRAY && !(one_ok && m->type == JSON_STRING))
        return ms_fail(e, MS_EINVAL, "rule \"%s\": %s: expected %s", rule, what,
                       one_ok ? "a string or an array of strings" : "an array of strings");
    char **v = NULL;
    uint32_t n = 0;
    arr_iter it = {0};
    const char *ev = m->val;
    size_t en = m->val_len;
    json_type t = m->type;
    bool single = m->type == JSON_STRING;
    if (!single) arr_begin(&it, m->val, m->val_len);
    while (single ? n == 0 : arr_next(&it, &ev, &en, &t)) {
        const char *why = NULL;
        size_t len = 0;
        char *s = NULL;
        if (n == max_items)
            why = "too many";
        else if (t != JSON_STRING)
            why = "not a string";
        else if (!(s = decode_string(ev, en, &len)))
            why = "holds a NUL character";
        else if (len == 0 || (not_blank && is_blank(s)))
            why = "empty";
        else if (len > max_len)
            why = "too long";
        if (why) {
            free(s);
            free_list(v, n);
            if (n == max_items) return ms_fail(e, MS_EINVAL, "rule \"%s\": %s: at most %u", rule, what, max_items);
            if (!strcmp(why, "too long"))
                return ms_fail(e, MS_EINVAL, "rule \"%s\": %s %u: longer than %zu bytes", rule, what, n + 1, max_len);
            return ms_fail(e, MS_EINVAL, "rule \"%s\": %s %u: %s", rule, what, n + 1, why);
        }
        v = ms_realloc(v, (n + 1) * sizeof *v);
        v[n++] = s;
        if (single) break;
    }
    *out = v;
    *nout = n;
    return MS_OK;
}

static bool key_is(const json_member *m, const char *k)
{
    return !m->key_escaped && m->key_len == strlen(k) && memcmp(m->key, k, m->key_len) == 0;
}

ms_code rule_parse(const char *json, size_t len, rule_def *out, ms_err *e)
{
    json_member m[MEMBERS_MAX];
    json_error je;
    memset(out, 0, sizeof *out);
    int k = json_scan_object(json, len, m, MEMBERS_MAX, &je);
    if (k < 0) return ms_fail(e, MS_EINVAL, "rule: %s at byte %zu", je.msg, je.offset);
    const json_member *name = NULL;
    for (int i = 0; i < k; i++)
        if (key_is(&m[i], "name")) name = &m[i];
    if (!name) return ms_fail(e, MS_EINVAL, "rule: name: required");
    size_t nl = 0;
    char *ns = name->type == JSON_STRING ? decode_string(name->val, name->val_len, &nl) : NULL;
    if (!ns || !rule_name_valid(ns, nl)) {
        free(ns);
        return ms_fail(e, MS_EINVAL, "rule: name: 1-%d characters of A-Z a-z 0-9 _ . -", RULE_NAME_MAX);
    }
    memcpy(out->name, ns, nl + 1);
    free(ns);
    if (!strcmp(out->name, ".") || !strcmp(out->name, "..")) /* a path segment that clients resolve away (RFC
                                                                3986 5.2.4): /v1/rules/.. reached the server as
                                                                /v1/ from curl or the console */
        return ms_fail(e, MS_EINVAL, "rule: name: \".\" and \"..\" are not rule names (a name is a URL path segment)");
    const char *rn = out->name;
    out->whole_words = true;
    bool seen[6] = {0};
    static const char *const known[] = {"name", "fields", "any", "regex", "types", "whole_words"};
    ms_code rc = MS_OK;
    for (int i = 0; i < k && rc == MS_OK; i++) {
        int which = -1;
        for (int j = 0; j < 6; j++)
            if (key_is(&m[i], known[j])) which = j;
        if (which < 0) {
            rc = ms_fail(e, MS_EINVAL,
                         "rule \"%s\": unknown member \"%.*s\" (rules take name, fields, any, regex, "
                         "types, whole_words)",
                         rn, (int)(m[i].key_len > 64 ? 64 : m[i].key_len), m[i].key);
            break;
        }
        if (seen[which]) {
            rc = ms_fail(e, MS_EINVAL, "rule \"%s\": %s: given twice", rn, known[which]);
            break;
        }
        seen[which] = true;
        switch (which) {
        case 1:
            rc = string_list(&m[i], rn, "fields", RULE_FIELDS_MAX, 1024, false, false, &out->fields, &out->nfields, e);
            break;
        case 2:
            rc =
                string_list(&m[i], rn, "any", RULE_PHRASES_MAX, RULE_PHRASE_MAX, false, true, &out->any, &out->nany, e);
            break;
        case 3:
            rc = string_list(&m[i], rn, "regex", RULE_REGEXES_MAX, RULE_REGEX_MAX, true, false, &out->regex,
                             &out->nregex, e);
            break;
        case 4:
            rc = string_list(&m[i], rn, "types", RULE_TYPES_MAX, 64, false, false, &out->types, &out->ntypes, e);
            break;
        case 5:
            if (m[i].type != JSON_TRUE && m[i].type != JSON_FALSE)
                rc = ms_fail(e, MS_EINVAL, "rule \"%s\": whole_words: expected true or false", rn);
            out->whole_words = m[i].type == JSON_TRUE;
            break;
        default: break;
        }
    }
    if (rc == MS_OK && out->nfields == 0) rc = ms_fail(e, MS_EINVAL, "rule \"%s\": fields: at least one field", rn);
    if (rc == MS_OK && out->nany + out->nregex == 0)
        rc = ms_fail(e, MS_EINVAL, "rule \"%s\": at least one phrase (any) or pattern (regex)", rn);
    if (rc != MS_OK) rule_def_free(out);
    return rc;
}

ms_code rules_parse_list(const char *json, size_t len, rule_def **out, size_t *n, ms_err *e)
{
    if (len == 0) return ms_fail(e, MS_EINVAL, "expected a JSON array of rules"); /* json may be NULL: an empty file */
    const char *p = json_skip_ws(json, json + len), *end = json + len;
    json_error je;
    json_type t;
    const char *q = p < end ? json_scan_value(json, p, end, &t, &je) : NULL;
    if (!q || t != JSON_ARRAY || json_skip_ws(q, end) != end) {
        if (!q && p < end) return ms_fail(e, MS_EINVAL, "%s at byte %zu", je.msg, je.offset);
        return ms_fail(e, MS_EINVAL, "expected a JSON array of rules");
    }
    rule_def *v = NULL;
    size_t k = 0;
    arr_iter it;
    arr_begin(&it, p, (size_t)(q - p));
    const char *ev;
    size_t en;
    ms_code rc = MS_OK;
    while (rc == MS_OK && arr_next(&it, &ev, &en, &t)) {
        v = ms_realloc(v, (k + 1) * sizeof *v);
        ms_err why;
        if (rule_parse(ev, en, &v[k], &why) != MS_OK) {
            rc = ms_fail(e, MS_EINVAL, "rule %zu: %s", k + 1, why.msg);
            break;
        }
        for (size_t j = 0; j < k && rc == MS_OK; j++)
            if (!strcmp(v[j].name, v[k].name))
                rc = ms_fail(e, MS_EINVAL, "rule %zu: rule \"%s\": defined twice", k + 1, v[k].name);
        k++;
        if (rc != MS_OK) break;
    }
    if (rc != MS_OK) {
        for (size_t j = 0; j < k; j++)
            rule_def_free(&v[j]);
        free(v);
        return rc;
    }
    *out = v;
    *n = k;
    return MS_OK;
}

void rule_def_free(rule_def *r)
{
    if (!r) return;
    free_list(r->fields, r->nfields);
    free_list(r->any, r->nany);
    free_list(r->regex, r->nregex);
    free_list(r->types, r->ntypes);
    memset(r, 0, sizeof *r);
}

static char **copy_list(char *const *v, uint32_t n)
{
    if (!n) return NULL;
    char **c = ms_malloc(n * sizeof *c);
    for (uint32_t i = 0; i < n; i++)
        c[i] = ms_strndup(v[i], strlen(v[i]));
    return c;
}

void rule_def_copy(rule_def *dst, const rule_def *src)
{
    *dst = *src;
    dst->fields = copy_list(src->fields, src->nfields);
    dst->any = copy_list(src->any, src->nany);
    dst->regex = copy_list(src->regex, src->nregex);
    dst->types = copy_list(src->types, src->ntypes);
}

static void json_list(buf *b, bool *first, const char *key, char *const *v, uint32_t n)
{
    jw_key(b, first, key);
    buf_putc(b, '[');
    for (uint32_t i = 0; i < n; i++) {
        if (i) buf_putc(b, ',');
        jw_cstr(b, v[i]);
    }
    buf_putc(b, ']');
}

void rule_def_json(const rule_def *r, buf *out)
{
    bool first = true;
    buf_putc(out, '{');
    jw_key(out, &first, "name");
    jw_cstr(out, r->name);
    json_list(out, &first, "fields", r->fields, r->nfields);
    json_list(out, &first, "any", r->any, r->nany);
    json_list(out, &first, "regex", r->regex, r->nregex);
    json_list(out, &first, "types", r->types, r->ntypes);
    jw_key(out, &first, "whole_words");
    buf_puts(out, r->whole_words ? "true" : "false");
    buf_putc(out, '}');
}

/* ---- compiling ---- */

typedef struct {
    uint32_t rule;
    bool is_regex;
    uint32_t index; /* in the rule's any or regex */
} expr_origin;

struct rule_set {
    rule_def *rules;
    size_t n;
    hs_database_t *db; /* NULL: no expressions */
    uint32_t *expr_rule;
    size_t nexpr;
    char **fields; /* sorted, distinct */
    size_t nfields;
    uint32_t **rule_fields; /* per rule: indexes into fields */
    uint32_t **field_rules; /* per field: the rules naming it */
    uint32_t *nfield_rules;
};

static bool ascii_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static void put_hex_bytes(buf *b, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "\\x%02x", p[i]);
}

/* A phrase as a Hyperscan expression over bytes (see rules.h for what it matches). */
static void phrase_expression(const char *s, bool whole, buf *out)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    while (p < end && ascii_space(*p))
        p++;
    while (end > p && ascii_space(end[-1]))
        end--;
    /* whole words: neither preceded nor followed by a word character (ASCII letters, digits, '_' and every byte
     * of a non-ASCII character: [\w\x80-\xff]), whatever the phrase's own edges ("c++" is not in "c++x", nor
     * "#covid" in "a#covid") */
    bool bounded = whole && p < end;
    if (bounded) buf_puts(out, "(?:^|[^\\w\\x80-\\xff])");
    while (p < end) {
        if (ascii_space(*p)) {
            while (p < end && ascii_space(*p))
                p++;
            buf_puts(out, "\\s+");
        } else if (*p < 0x80) {
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
                buf_putc(out, (char)*p);
            else
                put_hex_bytes(out, p, 1);
            p++;
        } else {
            utf8proc_int32_t cp;
            utf8proc_ssize_t n = utf8proc_iterate(p, end - p, &cp);
            if (n <= 0) { /* not UTF-8 (cannot come from JSON): the byte itself */
                put_hex_bytes(out, p, 1);
                p++;
                continue;
            }
            utf8proc_int32_t v[3] = {cp, utf8proc_tolower(cp), utf8proc_toupper(cp)};
            int nv = 1;
            for (int i = 1; i < 3; i++) {
                bool dup = false;
                for (int j = 0; j < nv; j++)
                    dup |= v[j] == v[i];
                if (!dup) v[nv++] = v[i];
            }
            if (nv > 1) buf_puts(out, "(?:");
            for (int i = 0; i < nv; i++) {
                unsigned char enc[4];
                utf8proc_ssize_t el = utf8proc_encode_char(v[i], enc);
                if (i) buf_putc(out, '|');
                put_hex_bytes(out, enc, (size_t)el);
            }
            if (nv > 1) buf_putc(out, ')');
            p += n;
        }
    }
    if (bounded) buf_puts(out, "(?:[^\\w\\x80-\\xff]|$)");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static long find_field(const rule_set *rs, const char *name, size_t len)
{
    size_t lo = 0, hi = rs->nfields;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *f = rs->fields[mid];
        size_t fl = strlen(f);
        int c = memcmp(f, name, fl < len ? fl : len);
        if (c == 0) c = fl < len ? -1 : fl > len ? 1 : 0;
        if (c == 0) return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static void index_fields(rule_set *rs)
{
    size_t total = 0;
    for (size_t i = 0; i < rs->n; i++)
        total += rs->rules[i].nfields;
    char **all = ms_malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (size_t i = 0; i < rs->n; i++)
        for (uint32_t j = 0; j < rs->rules[i].nfields; j++)
            all[k++] = rs->rules[i].fields[j];
    qsort(all, total, sizeof *all, cmp_str);
    rs->fields = ms_malloc((total ? total : 1) * sizeof *rs->fields);
    for (size_t i = 0; i < total; i++)
        if (!rs->nfields || strcmp(rs->fields[rs->nfields - 1], all[i]) != 0) rs->fields[rs->nfields++] = all[i];
    free(all);
    rs->rule_fields = ms_calloc(rs->n ? rs->n : 1, sizeof *rs->rule_fields);
    rs->field_rules = ms_calloc(rs->nfields ? rs->nfields : 1, sizeof *rs->field_rules);
    rs->nfield_rules = ms_calloc(rs->nfields ? rs->nfields : 1, sizeof *rs->nfield_rules);
    for (size_t i = 0; i < rs->n; i++) {
        rule_def *r = &rs->rules[i];
        rs->rule_fields[i] = ms_malloc(r->nfields * sizeof(uint32_t));
        for (uint32_t j = 0; j < r->nfields; j++) {
            uint32_t f = (uint32_t)find_field(rs, r->fields[j], strlen(r->fields[j]));
            rs->rule_fields[i][j] = f;
            bool dup = false; /* a rule naming a field twice is listed once */
            for (uint32_t x = 0; x < rs->nfield_rules[f]; x++)
                dup |= rs->field_rules[f][x] == i;
            if (dup) continue;
            rs->field_rules[f] = ms_realloc(rs->field_rules[f], (rs->nfield_rules[f] + 1) * sizeof(uint32_t));
            rs->field_rules[f][rs->nfield_rules[f]++] = (uint32_t)i;
        }
    }
}

void rule_set_free(rule_set *rs)
{
    if (!rs) return;
    if (rs->db) hs_free_database(rs->db);
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->rule_fields ? rs->rule_fields[i] : NULL);
        rule_def_free(&rs->rules[i]);
    }
    for (size_t f = 0; f < rs->nfields; f++)
        free(rs->field_rules[f]);
    free(rs->rules);
    free(rs->expr_rule);
    free(rs->fields);
    free(rs->rule_fields);
    free(rs->field_rules);
    free(rs->nfield_rules);
    free(rs);
}

bool rule_regex_compiles(const char *regex, char *why, size_t cap)
{
    hs_database_t *db = NULL;
    hs_compile_error_t *ce = NULL;
    bool ok = hs_compile(regex, REGEX_FLAGS, HS_MODE_BLOCK, NULL, &db, &ce) == HS_SUCCESS;
    if (!ok) snprintf(why, cap, "%s", ce && ce->message ? ce->message : "cannot compile");
    if (db) hs_free_database(db);
    if (ce) hs_free_compile_error(ce);
    return ok;
}

ms_code rule_set_compile(const rule_def *const *rules, size_t n, rule_set **out, ms_err *e)
{
    if (n > RULE_SET_MAX) return ms_fail(e, MS_EINVAL, "rules: at most %d", RULE_SET_MAX);
    size_t nexpr = 0;
    for (size_t i = 0; i < n; i++)
        nexpr += rules[i]->nany + rules[i]->nregex;
    if (nexpr > RULE_SET_EXPRS_MAX)
        return ms_fail(e, MS_EINVAL, "rules: at most %d phrases and regexes in all the rules in force (these have %zu)",
                       RULE_SET_EXPRS_MAX, nexpr);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (!strcmp(rules[i]->name, rules[j]->name))
                return ms_fail(e, MS_EINVAL, "rule \"%s\": defined twice", rules[i]->name);
    rule_set *rs = ms_calloc(1, sizeof *rs);
    rs->n = n;
    rs->rules = ms_calloc(n ? n : 1, sizeof *rs->rules);
    for (size_t i = 0; i < n; i++) {
        rule_def_copy(&rs->rules[i], rules[i]);
        rs->nexpr += rules[i]->nany + rules[i]->nregex;
    }
    index_fields(rs);
    if (rs->nexpr == 0) {
        *out = rs;
        return MS_OK;
    }
    const char **exprs = ms_malloc(rs->nexpr * sizeof *exprs);
    unsigned *flags = ms_malloc(rs->nexpr * sizeof *flags), *ids = ms_malloc(rs->nexpr * sizeof *ids);
    expr_origin *origin = ms_malloc(rs->nexpr * sizeof *origin);
    rs->expr_rule = ms_malloc(rs->nexpr * sizeof *rs->expr_rule);
    buf phrase = {0};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const rule_def *r = &rs->rules[i];
        for (uint32_t j = 0; j < r->nany; j++, k++) {
            phrase.len = 0;
            phrase_expression(r->any[j], r->whole_words, &phrase);
            exprs[k] = ms_strndup(phrase.data, phrase.len);
            flags[k] = PHRASE_FLAGS;
            origin[k] = (expr_origin){(uint32_t)i, false, j};
        }
        for (uint32_t j = 0; j < r->nregex; j++, k++) {
            exprs[k] = ms_strndup(r->regex[j], strlen(r->regex[j]));
            flags[k] = REGEX_FLAGS;
            origin[k] = (expr_origin){(uint32_t)i, true, j};
        }
    }
    for (size_t x = 0; x < k; x++) {
        ids[x] = (unsigned)x;
        rs->expr_rule[x] = origin[x].rule;
    }
    buf_free(&phrase);
    hs_compile_error_t *ce = NULL;
    hs_error_t hrc = hs_compile_multi(exprs, flags, ids, (unsigned)k, HS_MODE_BLOCK, NULL, &rs->db, &ce);
    ms_code rc = MS_OK;
    if (hrc != HS_SUCCESS) {
        rs->db = NULL;
        const char *msg = ce && ce->message ? ce->message : "cannot compile";
        if (ce && ce->expression >= 0 && (size_t)ce->expression < k) {
            expr_origin o = origin[ce->expression];
            rc = ms_fail(e, MS_EINVAL, "rule \"%s\": %s %u: %s", rs->rules[o.rule].name, o.is_regex ? "regex" : "any",
                         o.index + 1, msg);
        } else {
            rc = ms_fail(e, MS_EINVAL, "rules: Hyperscan cannot compile them: %s", msg);
        }
    }
    if (ce) hs_free_compile_error(ce);
    for (size_t x = 0; x < k; x++)
        free((char *)exprs[x]);
    free(exprs);
    free(flags);
    free(ids);
    free(origin);
    if (rc != MS_OK) {
        rule_set_free(rs);
        return rc;
    }
    *out = rs;
    return MS_OK;
}

size_t rule_set_count(const rule_set *rs) { return rs ? rs->n : 0; }
const rule_def *rule_set_rule(const rule_set *rs, size_t i) { return &rs->rules[i]; }
size_t rule_set_field_count(const rule_set *rs) { return rs ? rs->nfields : 0; }
const char *rule_set_field(const rule_set *rs, size_t i) { return rs->fields[i]; }

long rule_set_find(const rule_set *rs, const char *name)
{
    for (size_t i = 0; rs && i < rs->n; i++)
        if (!strcmp(rs->rules[i].name, name)) return (long)i;
    return -1;
}

size_t rule_set_bytes(const rule_set *rs)
{
    size_t n = 0;
    if (rs && rs->db) hs_database_size(rs->db, &n);
    return n;
}

/* ---- matching ---- */

struct rule_scratch {
    hs_scratch_t *hs;
    uint32_t *stamp; /* per rule: the scan in which it last fired */
    size_t stamp_cap;
    uint32_t gen;
    uint32_t *fired; /* rules fired in the current scan */
    size_t nfired, fired_cap;
    const uint32_t *expr_rule;
    rule_hit *hits;
    size_t nhits, hits_cap;
    buf text;
    json_member *members;
    uint64_t scanned;
};

rule_scratch *rule_scratch_new(void) { return ms_calloc(1, sizeof(rule_scratch)); }

void rule_scratch_free(rule_scratch *sc)
{
    if (!sc) return;
    if (sc->hs) hs_free_scratch(sc->hs);
    free(sc->stamp);
    free(sc->fired);
    free(sc->hits);
    free(sc->members);
    buf_free(&sc->text);
    free(sc);
}

ms_code rule_scratch_fit(rule_scratch *sc, const rule_set *rs, ms_err *e)
{
    if (rs->db && hs_alloc_scratch(rs->db, &sc->hs) != HS_SUCCESS)
        return ms_fail(e, MS_EIO, "rules: cannot allocate Hyperscan's scratch space");
    if (sc->stamp_cap < rs->n) {
        sc->stamp = ms_realloc(sc->stamp, rs->n * sizeof *sc->stamp);
        memset(sc->stamp, 0, rs->n * sizeof *sc->stamp);
        sc->stamp_cap = rs->n;
        sc->gen = 0;
    }
    if (sc->fired_cap < rs->n) {
        sc->fired = ms_realloc(sc->fired, rs->n * sizeof *sc->fired);
        sc->fired_cap = rs->n;
    }
    return MS_OK;
}

uint64_t rule_scratch_scanned(const rule_scratch *sc) { return sc->scanned; }

static int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags, void *ctx)
{
    (void)from, (void)to, (void)flags;
    rule_scratch *sc = ctx;
    uint32_t r = sc->expr_rule[id];
    if (sc->stamp[r] != sc->gen) {
        sc->stamp[r] = sc->gen;
        sc->fired[sc->nfired++] = r;
    }
    return 0;
}

static bool type_ok(const rule_def *r, const char *type, size_t len)
{
    if (!r->ntypes) return true;
    for (uint32_t i = 0; i < r->ntypes; i++)
        if (strlen(r->types[i]) == len && memcmp(r->types[i], type, len) == 0) return true;
    return false;
}

static bool names_field(const rule_set *rs, uint32_t rule, uint32_t f)
{
    for (uint32_t j = 0; j < rs->rules[rule].nfields; j++)
        if (rs->rule_fields[rule][j] == f) return true;
    return false;
}

/* Does some rule that takes this type search field f? */
static bool field_wanted(const rule_set *rs, uint32_t f, const char *type, size_t type_len)
{
    for (uint32_t i = 0; i < rs->nfield_rules[f]; i++)
        if (type_ok(&rs->rules[rs->field_rules[f][i]], type, type_len)) return true;
    return false;
}

static void scan_text(const rule_set *rs, rule_scratch *sc, uint32_t f, const char *type, size_t type_len,
                      const char *text, size_t len)
{
    if (++sc->gen == 0) { /* wrapped: every stamp is stale again */
        memset(sc->stamp, 0, sc->stamp_cap * sizeof *sc->stamp);
        sc->gen = 1;
    }
    sc->nfired = 0;
    sc->expr_rule = rs->expr_rule;
    sc->scanned += len;
    if (hs_scan(rs->db, text, (unsigned)len, 0, sc->hs, on_match, sc) != HS_SUCCESS) return;
    for (size_t i = 0; i < sc->nfired; i++) {
        uint32_t r = sc->fired[i];
        if (!names_field(rs, r, f) || !type_ok(&rs->rules[r], type, type_len)) continue;
        if (sc->nhits == sc->hits_cap) {
            sc->hits_cap = sc->hits_cap ? 2 * sc->hits_cap : 16;
            sc->hits = ms_realloc(sc->hits, sc->hits_cap * sizeof *sc->hits);
        }
        sc->hits[sc->nhits++] = (rule_hit){r, f};
    }
}

static int cmp_hit(const void *a, const void *b)
{
    const rule_hit *x = a, *y = b;
    if (x->rule != y->rule) return x->rule < y->rule ? -1 : 1;
    return x->field < y->field ? -1 : x->field > y->field;
}

static size_t finish_hits(rule_scratch *sc, const rule_hit **hits)
{
    if (sc->nhits > 1) qsort(sc->hits, sc->nhits, sizeof *sc->hits, cmp_hit);
    size_t k = 0;
    for (size_t i = 0; i < sc->nhits; i++)
        if (!k || cmp_hit(&sc->hits[k - 1], &sc->hits[i]) != 0) sc->hits[k++] = sc->hits[i];
    sc->nhits = k;
    *hits = sc->hits;
    return k;
}

size_t rule_set_match_texts(const rule_set *rs, rule_scratch *sc, const char *type, size_t type_len,
                            const rule_text *texts, size_t n, const rule_hit **hits)
{
    sc->nhits = 0;
    *hits = sc->hits;
    if (!rs->db) return 0;
    for (size_t i = 0; i < n; i++) {
        long f = find_field(rs, texts[i].name, texts[i].name_len);
        if (f < 0 || !field_wanted(rs, (uint32_t)f, type, type_len)) continue;
        scan_text(rs, sc, (uint32_t)f, type, type_len, texts[i].text, texts[i].len);
    }
    return finish_hits(sc, hits);
}

/* A JSON string value decoded into sc->text (unless it has no escape), then scanned. */
static void scan_json_string(const rule_set *rs, rule_scratch *sc, uint32_t f, const char *type, size_t type_len,
                             const char *v, size_t n)
{
    if (!memchr(v + 1, '\\', n - 2)) { /* no escapes: the raw bytes are the text */
        scan_text(rs, sc, f, type, type_len, v + 1, n - 2);
        return;
    }
    sc->text.len = 0;
    buf_reserve(&sc->text, n);
    size_t len = json_string_decode(v + 1, n - 2, sc->text.data);
    scan_text(rs, sc, f, type, type_len, sc->text.data, len);
}

size_t rule_set_match_record(const rule_set *rs, rule_scratch *sc, const char *type, size_t type_len, const char *body,
                             size_t len, const rule_hit **hits)
{
    sc->nhits = 0;
    *hits = sc->hits;
    if (!rs->db) return 0;
    if (!sc->members) sc->members = ms_malloc(RECORD_MEMBERS_MAX * sizeof *sc->members);
    json_error je;
    int k = json_scan_object(body, len, sc->members, RECORD_MEMBERS_MAX, &je);
    char key[1024];
    for (int i = 0; i < k; i++) {
        const json_member *m = &sc->members[i];
        if (m->type != JSON_STRING && m->type != JSON_ARRAY) continue;
        const char *name = m->key;
        size_t nl = m->key_len;
        if (m->key_escaped) {
            if (m->key_len > sizeof key) continue;
            nl = json_string_decode(m->key, m->key_len, key);
            name = key;
        }
        long f = find_field(rs, name, nl);
        if (f < 0 || !field_wanted(rs, (uint32_t)f, type, type_len)) continue;
        if (m->type == JSON_STRING) {
            scan_json_string(rs, sc, (uint32_t)f, type, type_len, m->val, m->val_len);
            continue;
        }
        arr_iter it;
        arr_begin(&it, m->val, m->val_len);
        const char *ev;
        size_t en;
        json_type t;
        while (arr_next(&it, &ev, &en, &t))
            if (t == JSON_STRING) scan_json_string(rs, sc, (uint32_t)f, type, type_len, ev, en);
    }
    return finish_hits(sc, hits);
}

/*
 * query.c - JSON answers for the read API (see query.h).
 */
#include "read/query.h"

#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/timefmt.h"
#include "pipeline/merge.h"
#include "pipeline/record_scan.h"
#include "store/record_sources.h"

#include <stdlib.h>
#include <string.h>

void cursor_encode(const void *key, size_t len, buf *out)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *k = key;
    buf_putc(out, '"');
    for (size_t i = 0; i < len; i++) {
        buf_putc(out, hex[k[i] >> 4]);
        buf_putc(out, hex[k[i] & 15]);
    }
    buf_putc(out, '"');
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

bool cursor_decode(const char *text, unsigned char *out, size_t cap, size_t *len)
{
    size_t n = strlen(text);
    if (n == 0 || n % 2 || n / 2 > cap) return false;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(text[i]), lo = hexval(text[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i / 2] = (unsigned char)(hi * 16 + lo);
    }
    *len = n / 2;
    return true;
}

static void put_pid(buf *out, const patient_id *pid)
{
    char t[PATIENT_ID_TEXT];
    patient_id_format(pid, t);
    jw_cstr(out, t);
}

static void put_time_or_null(buf *out, int64_t us)
{
    if (us < 0)
        buf_puts(out, "null");
    else
        jw_time(out, us);
}

ms_code query_patient_fields(store *s, const patient_version *pv, buf *out, ms_err *e)
{
    const char **vals = ms_malloc(sizeof *vals * (pv->nfields ? pv->nfields : 1));
    buf scratch = {0};
    ms_code rc = store_field_values(s, pv->fields, pv->nfields, vals, &scratch, e);
    if (rc == MS_OK) {
        buf_putc(out, '{');
        for (uint32_t i = 0; i < pv->nfields; i++) {
            if (i) buf_putc(out, ',');
            jw_string(out, pv->fields[i].key, pv->fields[i].key_len);
            buf_putc(out, ':');
            buf_put(out, vals[i], pv->fields[i].len);
        }
        buf_putc(out, '}');
    }
    buf_free(&scratch);
    free(vals);
    return rc;
}

/* A version's end as a read at as_of answers it: a newer version committed after as_of was not there yet, so the
 * version was still in force (null), as DESIGN.md has it ("exactly what a read at T would have answered"). */
static int64_t valid_to_as_of(int64_t valid_to, int64_t as_of)
{
    return valid_to > as_of ? -1 : valid_to;
}

/* event_at: INT64_MAX, or the event-time instant the fields were merged up to (then "event_at" says so) */
static ms_code put_patient_version(const query_ctx *q, const patient_version *pv, int64_t event_at, buf *out, ms_err *e)
{
    buf_puts(out, "{\"patient_id\":");
    put_pid(out, &pv->pid);
    buf_printf(out, ",\"version\":%u,\"valid_from\":", pv->version);
    jw_time(out, pv->valid_from);
    buf_puts(out, ",\"valid_to\":");
    put_time_or_null(out, pv->valid_to);
    if (event_at != INT64_MAX) {
        buf_puts(out, ",\"event_at\":");
        jw_time(out, event_at);
    }
    buf_puts(out, ",\"changed_by\":{\"record_id\":");
    jw_string(out, pv->cause_record, pv->cause_record_len);
    buf_puts(out, ",\"source\":");
    jw_string(out, pv->source, pv->source_len);
    buf_puts(out, "},\"fields\":");
    ms_code rc = query_patient_fields(q->store, pv, out, e);
    if (rc) return rc;
    buf_putc(out, '}');
    return MS_OK;
}

/* A patient read that found nothing: 410 when the patient was erased, else 404. A public read is not told when:
 * the erasure's instant is a commit time, finer than anything public (DESIGN.md, "Public store"). */
static ms_code patient_missing(store_read *r, const patient_id *pid, bool public_view, ms_err *e)
{
    bool erased;
    erase_mark at;
    ms_code rc = store_patient_erased(r, pid, &at, &erased, e);
    if (rc != MS_OK) return rc;
    if (!erased) return ms_fail(e, MS_ENOTFOUND, "patient not found");
    if (public_view) return ms_fail(e, MS_EGONE, "erased: the patient was erased");
    char when[40];
    time_format_rfc3339(at.at, when, sizeof when);
    return ms_fail(e, MS_EGONE, "erased: the patient was erased at %s", when);
}

ms_code query_patient(const query_ctx *q, store_read *r, const patient_id *pid, int64_t as_of, int64_t event_at,
                      buf *out, ms_err *e)
{
    arena mem = {0};
    patient_version pv;
    bool found;
    ms_code rc = store_patient_at(r, pid, as_of, &pv, &mem, &found, e);
    if (rc == MS_OK && !found) rc = patient_missing(r, pid, false, e);
    if (rc == MS_OK) pv.valid_to = valid_to_as_of(pv.valid_to, as_of);
    if (rc == MS_OK && event_at != INT64_MAX) {
        /* the state merged from the records known at as_of whose event time is <= event_at: the state as of
         * as_of holds every field they can (record_sources.h, decide) */
        record_sources g = {.store = q->store, .mem = &mem, .decide = pv.fields, .ndecide = pv.nfields, .e = e};
        rc = store_live_records(r, pid, as_of, event_at, record_sources_add, &g, e);
        if (rc == MS_OK) rc = g.rc;
        record_sources_free(&g);
        if (rc == MS_OK) {
            merge_result m;
            merge_records(q->schema, g.src, g.n, NULL, 0, &mem, &m);
            pv.fields = m.fields;
            pv.nfields = m.nfields;
        }
    }
    if (rc == MS_OK) rc = put_patient_version(q, &pv, event_at, out, e);
    arena_free(&mem);
    return rc;
}

ms_code query_patient_history(const query_ctx *q, store_read *r, const patient_id *pid, int64_t as_of, uint32_t after,
                              uint32_t limit, buf *out, ms_err *e)
{
    arena mem = {0};
    patient_version *list;
    uint32_t n = 0;
    ms_code rc = store_patient_history(r, pid, &list, &n, &mem, e);
    if (rc == MS_OK && n == 0) rc = patient_missing(r, pid, false, e);
    if (rc == MS_OK) {
        buf_puts(out, "{\"patient_id\":");
        put_pid(out, pid);
        buf_puts(out, ",\"versions\":[");
        uint32_t count = 0, last = 0;
        bool more = false;
        for (uint32_t i = 0; i < n && rc == MS_OK && list[i].valid_from <= as_of; i++) { /* oldest first */
            if (list[i].version <= after) continue;
            if (count == limit) {
                more = true;
                break;
            }
            if (count++) buf_putc(out, ',');
            patient_version pv = list[i];
            pv.valid_to = valid_to_as_of(pv.valid_to, as_of);
            rc = put_patient_version(q, &pv, INT64_MAX, out, e);
            last = pv.version;
        }
        buf_puts(out, "],\"next_cursor\":");
        if (more) {
            unsigned char key[5] = {HISTORY_CURSOR};
            ms_set_be32(key + 1, last);
            cursor_encode(key, sizeof key, out);
        } else {
            buf_puts(out, "null");
        }
        buf_putc(out, '}');
    }
    arena_free(&mem);
    return rc;
}

bool query_history_cursor(const unsigned char *key, size_t len, uint32_t *after)
{
    if (len != 5 || key[0] != HISTORY_CURSOR) return false;
    *after = ms_get_be32(key + 1);
    return true;
}

/* rv as a read at as_of answers it (valid_to_as_of) */
static ms_code put_record(const query_ctx *q, const record_version *rv, int64_t as_of, buf *out, ms_err *e)
{
    buf_puts(out, "{\"record_id\":");
    jw_string(out, rv->record_id, rv->record_id_len);
    buf_puts(out, ",\"patient_id\":");
    put_pid(out, &rv->pid);
    buf_puts(out, ",\"type\":");
    jw_string(out, rv->type, rv->type_len);
    buf_puts(out, ",\"ts\":");
    jw_time(out, rv->ts_us);
    buf_printf(out, ",\"version\":%u,\"valid_from\":", rv->version);
    jw_time(out, rv->valid_from);
    buf_puts(out, ",\"valid_to\":");
    put_time_or_null(out, valid_to_as_of(rv->valid_to, as_of));
    buf_puts(out, ",\"fields\":");
    ms_code rc = store_record_body(q->store, rv, out, e);
    if (rc) return rc;
    buf_putc(out, '}');
    return MS_OK;
}

ms_code query_record(const query_ctx *q, store_read *r, const char *rid, size_t rid_len, int64_t as_of, buf *out,
                     patient_id *touched, ms_err *e)
{
    record_version rv;
    bool found;
    ms_code rc = store_record_at(r, rid, rid_len, as_of, &rv, &found, e);
    if (rc) return rc;
    if (!found) return ms_fail(e, MS_ENOTFOUND, "record not found");
    if (touched) *touched = rv.pid;
    if (rv.deleted) return ms_fail(e, MS_ENOTFOUND, "record deleted");
    return put_record(q, &rv, as_of, out, e);
}

/* ---- a patient's records ---- */

typedef struct {
    const query_ctx *q;
    store_read *r;
    const list_params *p;
    const patient_id *pid;
    buf *out;
    uint32_t count;
    bool more;
    buf last_key;
    ms_code rc;
    ms_err *e;
    bool public_view;
} list_state;

static bool type_matches(const list_params *p, const char *type) { return !p->type || strcmp(p->type, type) == 0; }

/* Does the public fields object match every FIELD=VALUE filter? */
/* Does the value v hold want at path (names joined by '.', relative to v)? An array holds it when an
 * element does (so "codes=A41.9" finds an element of codes, "codes.code=A41.9" a member of one); at the
 * path's end a string compares decoded, another scalar as written. */
static bool value_matches(const char *v, size_t vl, json_type t, const char *path, size_t plen, const char *want,
                          size_t wl)
{
    json_iter it = json_iter_begin(v, vl);
    const char *ev, *k;
    size_t el, kl;
    json_type et;
    if (t == JSON_ARRAY) {
        while (json_iter_element(&it, &ev, &el, &et))
            if (value_matches(ev, el, et, path, plen, want, wl)) return true;
        return false;
    }
    if (plen == 0) {
        if (t == JSON_OBJECT) return false;
        if (t != JSON_STRING) return vl == wl && memcmp(v, want, wl) == 0;
        char *dec = ms_malloc(vl);
        size_t dl = json_string_decode(v + 1, vl - 2, dec);
        bool ok = dl == wl && memcmp(dec, want, wl) == 0;
        free(dec);
        return ok;
    }
    if (t != JSON_OBJECT) return false;
    const char *dot = memchr(path, '.', plen);
    size_t sl = dot ? (size_t)(dot - path) : plen;
    const char *rest = dot ? dot + 1 : path + plen;
    size_t rl = dot ? plen - sl - 1 : 0;
    bool found = false;
    while (!found && json_iter_member(&it, &k, &kl, &ev, &el, &et)) {
        bool named;
        if (memchr(k, '\\', kl)) {
            char *dec = ms_malloc(kl + 1);
            size_t dl = json_string_decode(k, kl, dec);
            named = dl == sl && memcmp(dec, path, sl) == 0;
            free(dec);
        } else {
            named = kl == sl && memcmp(k, path, sl) == 0;
        }
        if (named) found = value_matches(ev, el, et, rest, rl, want, wl);
    }
    return found;
}

/* Every FIELD=VALUE filter holds: FIELD is a public path (schema_public_filter: "favorite_color",
 * "address.zip", "codes" for "codes[]"), matched into arrays (value_matches). */
static bool filters_match(const list_params *p, const char *fields, size_t len)
{
    for (int f = 0; f < p->nfilters; f++) {
        const char *key = p->filter_keys[f], *want = p->filter_values[f];
        if (!value_matches(fields, len, JSON_OBJECT, key, strlen(key), want, strlen(want))) return false;
    }
    return true;
}

/* False when the page is full: one more item exists, so the cursor continues after the last one. */
static bool room_for_one(list_state *st)
{
    if (st->count < st->p->limit) return true;
    st->more = true;
    return false;
}

/* The item just written came from index entry key: count it, and remember it for the cursor. */
static void remember(list_state *st, const void *key, size_t key_len)
{
    st->last_key.len = 0;
    buf_put(&st->last_key, key, key_len);
    st->count++;
}

/* One public record item of a list. */
static bool emit_public(list_state *st, const char *rid, size_t rid_len, const public_record *pr, const void *key,
                        size_t key_len)
{
    if (!room_for_one(st)) return false;
    if (st->count) buf_putc(st->out, ',');
    buf_puts(st->out, "{\"patient_id\":");
    put_pid(st->out, &pr->pid);
    buf_puts(st->out, ",\"record_id\":");
    jw_string(st->out, rid, rid_len);
    buf_puts(st->out, ",\"fields\":");
    buf_put(st->out, pr->fields, pr->fields_len);
    buf_putc(st->out, '}');
    remember(st, key, key_len);
    return true;
}

static bool on_patient_record(void *ctx, int64_t ts, const char *rid, size_t rid_len, const void *key, size_t key_len)
{
    list_state *st = ctx;
    record_version rv;
    bool found;
    st->rc = store_record_at(st->r, rid, rid_len, st->p->as_of, &rv, &found, st->e);
    if (st->rc) return false;
    /* the index keeps every (ts, record) ever written: emit only the version current at as_of */
    if (!found || rv.deleted || memcmp(rv.pid.b, st->pid->b, 16) != 0 || rv.ts_us != ts ||
        !type_matches(st->p, rv.type))
        return true;
    if (st->public_view) {
        public_record pr;
        st->rc = store_public_record_at(st->r, rid, rid_len, st->p->as_of, &pr, &found, st->e);
        if (st->rc) return false;
        if (!found || pr.deleted || pr.year < st->p->year_from || pr.year > st->p->year_to ||
            !filters_match(st->p, pr.fields, pr.fields_len))
            return true;
        return emit_public(st, rid, rid_len, &pr, key, key_len);
    }
    if (!room_for_one(st)) return false;
    if (st->count) buf_putc(st->out, ',');
    st->rc = put_record(st->q, &rv, st->p->as_of, st->out, st->e);
    if (st->rc) return false;
    remember(st, key, key_len);
    return true;
}

static void finish_list(list_state *st)
{
    buf_puts(st->out, "],\"next_cursor\":");
    if (st->more)
        cursor_encode(st->last_key.data, st->last_key.len, st->out);
    else
        buf_puts(st->out, "null");
    if (st->public_view) /* the schema version of the copies it answers from */
        buf_printf(st->out, ",\"schema_version\":%u", store_read_schema_version(st->r));
    buf_putc(st->out, '}');
}

ms_code query_patient_records(const query_ctx *q, store_read *r, const patient_id *pid, const list_params *p, buf *out,
                              ms_err *e)
{
    arena mem = {0};
    patient_version pv;
    bool found;
    ms_code rc = store_patient_at(r, pid, p->as_of, &pv, &mem, &found, e);
    arena_free(&mem);
    if (rc) return rc;
    if (!found) return patient_missing(r, pid, false, e);
    list_state st = {.q = q, .r = r, .p = p, .pid = pid, .out = out, .e = e};
    buf_puts(out, "{\"patient_id\":");
    put_pid(out, pid);
    buf_puts(out, ",\"records\":[");
    rc = store_patient_records(r, pid, p->since, p->until, p->cursor, p->cursor_len, on_patient_record, &st, e);
    if (rc == MS_OK) rc = st.rc;
    if (rc == MS_OK) finish_list(&st);
    buf_free(&st.last_key);
    return rc;
}

/* ---- a parent's children ---- */

typedef struct {
    list_state st;
    const char *parent;
    size_t parent_len;
    patient_id *pids; /* the distinct patients of the children answered, for the audit entry */
    uint32_t npids;
} children_state;

static bool on_child_record(void *ctx, int64_t ts, const char *rid, size_t rid_len, const void *key, size_t key_len)
{
    children_state *cs = ctx;
    list_state *st = &cs->st;
    record_version rv;
    bool found;
    st->rc = store_record_at(st->r, rid, rid_len, st->p->as_of, &rv, &found, st->e);
    if (st->rc) return false;
    /* the index keeps every (ts, child) ever written: emit only a version current at as_of that is still
     * this parent's child with this event time */
    if (!found || rv.deleted || rv.ts_us != ts || rv.parent_id_len != cs->parent_len ||
        memcmp(rv.parent_id, cs->parent, cs->parent_len) != 0 || !type_matches(st->p, rv.type))
        return true;
    if (!room_for_one(st)) return false;
    if (st->count) buf_putc(st->out, ',');
    st->rc = put_record(st->q, &rv, st->p->as_of, st->out, st->e);
    if (st->rc) return false;
    remember(st, key, key_len);
    uint32_t i = 0;
    while (i < cs->npids && memcmp(&cs->pids[i], &rv.pid, sizeof rv.pid) != 0)
        i++;
    if (i == cs->npids) cs->pids[cs->npids++] = rv.pid; /* at most limit distinct */
    return true;
}

ms_code query_children(const query_ctx *q, store_read *r, const char *parent, size_t parent_len, const list_params *p,
                       buf *out, patient_id **pids, uint32_t *npids, ms_err *e)
{
    children_state cs = {.st = {.q = q, .r = r, .p = p, .out = out, .e = e},
                         .parent = parent,
                         .parent_len = parent_len,
                         .pids = ms_calloc(p->limit ? p->limit : 1, sizeof(patient_id))};
    buf_puts(out, "{\"record_id\":");
    jw_string(out, parent, parent_len);
    buf_puts(out, ",\"children\":[");
    ms_code rc =
        store_children(r, parent, parent_len, p->since, p->until, p->cursor, p->cursor_len, on_child_record, &cs, e);
    if (rc == MS_OK) rc = cs.st.rc;
    if (rc == MS_OK) finish_list(&cs.st);
    buf_free(&cs.st.last_key);
    *pids = cs.pids;
    *npids = cs.npids;
    return rc;
}

ms_code query_public_patient(const query_ctx *q, store_read *r, const patient_id *pid, int64_t as_of, buf *out,
                             ms_err *e)
{
    (void)q;
    buf fields = {0};
    bool found;
    ms_code rc = store_public_patient_at(r, pid, as_of, &fields, &found, e);
    if (rc == MS_OK && !found) rc = patient_missing(r, pid, true, e);
    if (rc == MS_OK) {
        buf_puts(out, "{\"patient_id\":");
        put_pid(out, pid);
        buf_puts(out, ",\"fields\":");
        buf_put(out, fields.data, fields.len);
        buf_printf(out, ",\"schema_version\":%u}", store_read_schema_version(r));
    }
    buf_free(&fields);
    return rc;
}

static bool on_public_entry(void *ctx, int year, const char *rid, size_t rid_len, const void *key, size_t key_len)
{
    list_state *st = ctx;
    public_record pr;
    bool found;
    st->rc = store_public_record_at(st->r, rid, rid_len, st->p->as_of, &pr, &found, st->e);
    if (st->rc) return false;
    if (!found || pr.deleted || pr.year != year || !type_matches(st->p, pr.type) ||
        !filters_match(st->p, pr.fields, pr.fields_len))
        return true;
    return emit_public(st, rid, rid_len, &pr, key, key_len);
}

/* ---- a patient's public records, in (year, record id) order ----
 * The patient's records index is kept in event-time order, and its keys carry the exact event time and the
 * patient's internal number: a cursor made of one, and the answer's order, gave an analyst the exact time the
 * public copy withholds. So this walks the index whole (store_patient_records reads it whole for every page
 * anyway), sorts its entries by (year, record id), the public index's granularity, and continues after a
 * cursor 'Y' be16(year) record id; by_id (the year is not published) by record id alone, with year 0. */
typedef struct {
    int year;
    int64_t ts;
    const char *rid;
    size_t rid_len;
} pub_entry;

typedef struct {
    pub_entry *v;
    size_t n, cap;
    arena mem;
    const unsigned char *after; /* 'Y' be16(year) record id, or NULL */
    size_t after_len;
    bool by_id; /* every entry's year 0 */
} pub_entries;

/* (year, record id) of a against 'Y' be16(year) record id */
static int pub_cmp_key(const pub_entry *a, const unsigned char *k, size_t kl)
{
    int year = (k[1] << 8) | k[2];
    if (a->year != year) return a->year < year ? -1 : 1;
    size_t n = a->rid_len < kl - 3 ? a->rid_len : kl - 3;
    int c = memcmp(a->rid, k + 3, n);
    return c ? c : (a->rid_len > kl - 3) - (a->rid_len < kl - 3);
}

static int pub_order(const void *x, const void *y)
{
    const pub_entry *a = x, *b = y;
    if (a->year != b->year) return a->year < b->year ? -1 : 1;
    size_t n = a->rid_len < b->rid_len ? a->rid_len : b->rid_len;
    int c = memcmp(a->rid, b->rid, n);
    if (c) return c;
    if (a->rid_len != b->rid_len) return a->rid_len < b->rid_len ? -1 : 1;
    return (a->ts > b->ts) - (a->ts < b->ts);
}

static bool collect_public_entry(void *ctx, int64_t ts, const char *rid, size_t rid_len, const void *key,
                                 size_t key_len)
{
    (void)key, (void)key_len;
    pub_entries *pe = ctx;
    pub_entry x = {.year = pe->by_id ? 0 : time_year(ts), .ts = ts, .rid = rid, .rid_len = rid_len};
    if (pe->after && pub_cmp_key(&x, pe->after, pe->after_len) <= 0) return true;
    if (pe->n == pe->cap) {
        pe->cap = pe->cap ? 2 * pe->cap : 64;
        pe->v = ms_realloc(pe->v, pe->cap * sizeof *pe->v);
    }
    x.rid = arena_strndup(&pe->mem, rid, rid_len);
    pe->v[pe->n++] = x;
    return true;
}

static ms_code public_patient_records(list_state *st, ms_err *e)
{
    const list_params *p = st->p;
    if (p->cursor && (p->cursor_len < 4 || p->cursor[0] != 'Y' || (p->by_id && (p->cursor[1] || p->cursor[2]))))
        return ms_fail(e, MS_EINVAL, "cursor: not a cursor of this query");
    pub_entries pe = {.after = p->cursor, .after_len = p->cursor_len, .by_id = p->by_id};
    ms_code rc = store_patient_records(st->r, st->pid, INT64_MIN, INT64_MAX, NULL, 0, collect_public_entry, &pe, e);
    if (rc == MS_OK && pe.n) qsort(pe.v, pe.n, sizeof *pe.v, pub_order);
    unsigned char key[3 + RECORD_ID_MAX];
    for (size_t i = 0; rc == MS_OK && i < pe.n; i++) {
        const pub_entry *x = &pe.v[i];
        if (x->year < p->year_from || x->year > p->year_to || x->rid_len > RECORD_ID_MAX) continue;
        key[0] = 'Y';
        key[1] = (unsigned char)(x->year >> 8);
        key[2] = (unsigned char)x->year;
        memcpy(key + 3, x->rid, x->rid_len);
        if (!on_patient_record(st, x->ts, x->rid, x->rid_len, key, 3 + x->rid_len)) break;
        rc = st->rc;
    }
    free(pe.v);
    arena_free(&pe.mem);
    return rc;
}

ms_code query_public_records(const query_ctx *q, store_read *r, const list_params *p, buf *out, ms_err *e)
{
    list_state st = {.q = q, .r = r, .p = p, .pid = p->pid, .out = out, .e = e, .public_view = true};
    ms_code rc;
    buf_puts(out, "{\"records\":[");
    if (p->pid) { /* an erased patient's records answer 410, as its public read does */
        bool erased;
        rc = store_patient_erased(r, p->pid, NULL, &erased, e);
        if (rc == MS_OK && erased) rc = patient_missing(r, p->pid, true, e);
        if (rc == MS_OK) rc = public_patient_records(&st, e);
    } else {
        rc = store_public_index(r, p->type, p->year_from, p->year_to, p->by_id, p->cursor, p->cursor_len,
                                on_public_entry, &st, e);
    }
    if (rc == MS_OK) rc = st.rc;
    if (rc == MS_OK) finish_list(&st);
    buf_free(&st.last_key);
    return rc;
}

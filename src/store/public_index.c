/*
 * public_index.c - the public records' listing (store_public_index): the 'T' keys of `public`, one per
 * record version under its type and year, walked in (year, record id) order for one type, or for all
 * types by merging the types' ranges.
 *
 * DESIGN: a record has one index entry, under its type (store_record_put writes it beside its public
 * copy). A listing of all types opens one cursor per type and merges; a record whose type changed sits
 * in two ranges and is listed once (equal keys are adjacent in the merge). Stores from before issue 17's
 * bytes-per-record work also hold a 'T' "*" entry for every record: read as one more type, repeats of
 * the others, dropped the same way. The keys handed to the caller (a listing's cursor) are the type's
 * key, and for all types the "*" form, so cursors written before still continue a listing.
 *
 * By record id (by_id: the schema does not publish the event time's year, so neither the order nor a cursor
 * may tell it): one cursor per (type, year) range, merged in (record id, year) order, so that the entries of
 * one record are adjacent and (year, record id) repeats still are; the keys handed out hold year 0.
 *
 * Contract: store.h (store_public_index). Entries are candidates: the caller checks the record's version
 * at its instant (a changed type or year leaves an entry behind). Must never: list a record twice in one
 * listing, or skip an entry after a cursor key.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One type's (by record id: one type and year's) part of the public index in a listing: a cursor over
 * 'T' type NUL [be16(year)] ..., at its current key. */
typedef struct {
    MDB_cursor *c;
    MDB_val k;
    char *prefix; /* 'T' type NUL, and be16(year) by record id */
    size_t plen;
    size_t year_at; /* where the key's be16(year) is (the record id follows it) */
} index_range;

static bool range_holds(const index_range *x, int year_to)
{
    return x->k.mv_size > x->year_at + 2 && memcmp(x->k.mv_data, x->prefix, x->plen) == 0 &&
           ms_get_be16((const char *)x->k.mv_data + x->year_at) <= year_to;
}

static int key_year(const index_range *x) { return ms_get_be16((const char *)x->k.mv_data + x->year_at); }

/* The current keys of a and b in the listing's order: (year, record id), or by_id (record id, year). */
static int range_cmp(const index_range *a, const index_range *b, bool by_id)
{
    const char *ka = a->k.mv_data, *kb = b->k.mv_data;
    if (!by_id)
        return record_key_cmp(ka + a->year_at, a->k.mv_size - a->year_at, kb + b->year_at, b->k.mv_size - b->year_at);
    int c = record_key_cmp(ka + a->year_at + 2, a->k.mv_size - a->year_at - 2, kb + b->year_at + 2,
                           b->k.mv_size - b->year_at - 2);
    return c ? c : key_year(a) - key_year(b);
}

/* Adds the range of prefix p (plen bytes) to *xs, positioned at its first key at or after prefix +
 * from (after it when skip), unless it holds nothing there. */
static int range_add(store_read *r, index_range **xs, size_t *n, const char *p, size_t plen, size_t year_at,
                     const buf *from, bool skip, int year_to)
{
    index_range *grown = realloc(*xs, (*n + 1) * sizeof **xs);
    if (!grown) return ENOMEM;
    *xs = grown;
    index_range *x = &grown[*n];
    *x = (index_range){.prefix = malloc(plen + from->len), .plen = plen, .year_at = year_at};
    if (!x->prefix) return ENOMEM;
    memcpy(x->prefix, p, plen);
    if (from->len) memcpy(x->prefix + plen, from->data, from->len); /* by_id without a cursor: none */
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PUBLIC], &x->c);
    if (rc) {
        free(x->prefix);
        return rc;
    }
    MDB_val seek = st_val(x->prefix, plen + from->len), v;
    x->k = seek;
    rc = mdb_cursor_get(x->c, &x->k, &v, MDB_SET_RANGE);
    if (rc == 0 && skip && x->k.mv_size == seek.mv_size && memcmp(x->k.mv_data, seek.mv_data, seek.mv_size) == 0)
        rc = mdb_cursor_get(x->c, &x->k, &v, MDB_NEXT);
    if (rc == 0 && range_holds(x, year_to)) {
        (*n)++;
        return 0;
    }
    mdb_cursor_close(x->c);
    free(x->prefix);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* By record id: the range of every year of the type of prefix tp ('T' type NUL, tplen bytes), each from the
 * record id from. */
static int ranges_of_years(store_read *r, index_range **xs, size_t *n, const char *tp, size_t tplen, const buf *from,
                           bool skip)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PUBLIC], &c);
    if (rc) return rc;
    buf seek = {0};
    buf_put(&seek, tp, tplen);
    buf_put_be16(&seek, 0);
    MDB_val k = st_val(seek.data, seek.len), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size > tplen + 2 && memcmp(k.mv_data, tp, tplen) == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)) {
        int year = ms_get_be16((const char *)k.mv_data + tplen);
        seek.len = tplen;
        buf_put_be16(&seek, (uint16_t)year);
        if ((rc = range_add(r, xs, n, seek.data, seek.len, tplen, from, skip, 0xffff)) || year == 0xffff) break;
        seek.len = tplen;
        buf_put_be16(&seek, (uint16_t)(year + 1));
        k = st_val(seek.data, seek.len);
    }
    mdb_cursor_close(c);
    buf_free(&seek);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Every type's range ('T' keys, one type after another: 'T' type "\1" sorts after the type's keys and
 * before the next type's, since a type holds no control character), or by_id every type's years' ranges. A
 * store from before the index lost its "*" entries has them as the range of type "*": the same records again,
 * which the merge drops. */
static int ranges_of_all_types(store_read *r, index_range **xs, size_t *n, const buf *from, bool skip, int year_to,
                               bool by_id)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(r->txn, r->s->dbi[DB_PUBLIC], &c);
    if (rc) return rc;
    buf seek = {0};
    buf_putc(&seek, 'T');
    MDB_val k = st_val(seek.data, seek.len), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && ((const char *)k.mv_data)[0] == 'T';
         rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)) {
        const char *key = k.mv_data, *nul = k.mv_size > 1 ? memchr(key + 1, 0, k.mv_size - 1) : NULL;
        if (!nul) {
            rc = MDB_CORRUPTED;
            break;
        }
        size_t plen = (size_t)(nul - key) + 1;
        rc = by_id ? ranges_of_years(r, xs, n, key, plen, from, skip)
                   : range_add(r, xs, n, key, plen, plen, from, skip, year_to);
        if (rc) break;
        seek.len = 0;
        buf_put(&seek, key, plen - 1);
        buf_putc(&seek, 1);
        k = st_val(seek.data, seek.len);
    }
    mdb_cursor_close(c);
    buf_free(&seek);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

ms_code store_public_index(store_read *r, const char *type, int year_from, int year_to, bool by_id,
                           const void *after_key, size_t after_len, store_public_index_fn fn, void *ctx, ms_err *e)
{
    /* keys handed to fn (a listing's cursor): 'T' type NUL be16(year) record_id, type "*" for all types; by_id
     * be16(0) for the year */
    buf key = {0}, from = {0};
    buf_putc(&key, 'T');
    buf_puts(&key, type ? type : "*");
    buf_putc(&key, 0);
    size_t tplen = key.len;
    const char *after = after_key;
    bool skip = false;
    if (by_id) { /* from the cursor's record id, in every year */
        if (after &&
            (after_len <= tplen + 2 || memcmp(after, key.data, tplen) != 0 || after[tplen] || after[tplen + 1])) {
            buf_free(&key);
            return ms_fail(e, MS_EINVAL, "cursor: not a cursor of this query");
        }
        if (after) buf_put(&from, after + tplen + 2, after_len - tplen - 2);
        skip = after != NULL;
    } else {
        if (after && (after_len <= tplen + 2 || memcmp(after, key.data, tplen) != 0)) { /* another listing's */
            buf_free(&key);
            return ms_fail(e, MS_EINVAL, "cursor: not a cursor of this query");
        }
        buf_put_be16(&from, (uint16_t)(year_from < 0 ? 0 : year_from));
        if (after && record_key_cmp(after + tplen, after_len - tplen, from.data, from.len) > 0) {
            from.len = 0;
            buf_put(&from, after + tplen, after_len - tplen);
            skip = true;
        }
    }
    index_range *xs = NULL;
    size_t n = 0;
    int rc = !type   ? ranges_of_all_types(r, &xs, &n, &from, skip, year_to, by_id)
             : by_id ? ranges_of_years(r, &xs, &n, key.data, tplen, &from, skip)
                     : range_add(r, &xs, &n, key.data, tplen, tplen, &from, skip, year_to);
    /* merged in (year, record id) order, or by_id (record id, year); a record listed under two types (its type
     * changed) once */
    const char *last = NULL;
    size_t last_len = 0;
    int last_year = -1;
    while (rc == 0 && n > 0) {
        size_t m = 0;
        for (size_t i = 1; i < n; i++)
            if (range_cmp(&xs[i], &xs[m], by_id) < 0) m = i;
        int year = key_year(&xs[m]);
        const char *rid = (const char *)xs[m].k.mv_data + xs[m].year_at + 2;
        size_t rl = xs[m].k.mv_size - xs[m].year_at - 2;
        if (!last || year != last_year || rl != last_len || memcmp(rid, last, rl) != 0) {
            key.len = tplen;
            buf_put_be16(&key, (uint16_t)(by_id ? 0 : year));
            buf_put(&key, rid, rl);
            if (!fn(ctx, year, rid, rl, key.data, key.len)) break;
            last = rid;
            last_len = rl;
            last_year = year;
        }
        MDB_val v;
        rc = mdb_cursor_get(xs[m].c, &xs[m].k, &v, MDB_NEXT);
        if (rc == MDB_NOTFOUND || (rc == 0 && !range_holds(&xs[m], year_to))) {
            mdb_cursor_close(xs[m].c);
            free(xs[m].prefix);
            xs[m] = xs[--n];
            rc = 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        mdb_cursor_close(xs[i].c);
        free(xs[i].prefix);
    }
    free(xs);
    buf_free(&key);
    buf_free(&from);
    return rc ? st_mdb_fail(e, rc, "public index") : MS_OK;
}

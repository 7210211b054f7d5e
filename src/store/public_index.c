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
 * Contract: store.h (store_public_index). Entries are candidates: the caller checks the record's version
 * at its instant (a changed type or year leaves an entry behind). Must never: list a record twice in one
 * listing, or skip an entry after a cursor key.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One type's part of the public index in a listing: a cursor over 'T' type NUL ..., at its current key. */
typedef struct {
    MDB_cursor *c;
    MDB_val k;
    char *prefix; /* 'T' type NUL */
    size_t plen;
} index_range;

static bool range_holds(const index_range *x, int year_to)
{
    return x->k.mv_size >= x->plen + 2 && memcmp(x->k.mv_data, x->prefix, x->plen) == 0 &&
           ms_get_be16((const char *)x->k.mv_data + x->plen) <= year_to;
}

/* Adds the range of prefix p (plen bytes) to *xs, positioned at its first key at or after prefix +
 * from (after it when skip), unless it holds nothing there. */
static int range_add(store_read *r, index_range **xs, size_t *n, const char *p, size_t plen, const buf *from, bool skip,
                     int year_to)
{
    index_range *grown = realloc(*xs, (*n + 1) * sizeof **xs);
    if (!grown) return ENOMEM;
    *xs = grown;
    index_range *x = &grown[*n];
    *x = (index_range){.prefix = malloc(plen + from->len), .plen = plen};
    if (!x->prefix) return ENOMEM;
    memcpy(x->prefix, p, plen);
    memcpy(x->prefix + plen, from->data, from->len);
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

/* Every type's range ('T' keys, one type after another: 'T' type "\1" sorts after the type's keys and
 * before the next type's, since a type holds no control character). A store from before the index lost
 * its "*" entries has them as the range of type "*": the same records again, which the merge drops. */
static int ranges_of_all_types(store_read *r, index_range **xs, size_t *n, const buf *from, bool skip, int year_to)
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
        rc = range_add(r, xs, n, key, plen, from, skip, year_to);
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

ms_code store_public_index(store_read *r, const char *type, int year_from, int year_to, const void *after_key,
                           size_t after_len, store_public_index_fn fn, void *ctx, ms_err *e)
{
    /* keys handed to fn (a listing's cursor): 'T' type NUL be16(year) record_id, type "*" for all types */
    buf key = {0}, from = {0};
    buf_putc(&key, 'T');
    buf_puts(&key, type ? type : "*");
    buf_putc(&key, 0);
    size_t tplen = key.len;
    buf_put_be16(&from, (uint16_t)(year_from < 0 ? 0 : year_from));
    bool skip = false;
    const char *after = after_key;
    if (after && after_len > tplen + 2 && memcmp(after, key.data, tplen) == 0 &&
        record_key_cmp(after + tplen, after_len - tplen, from.data, from.len) > 0) {
        from.len = 0;
        buf_put(&from, after + tplen, after_len - tplen);
        skip = true;
    }
    index_range *xs = NULL;
    size_t n = 0;
    int rc = type ? range_add(r, &xs, &n, key.data, tplen, &from, skip, year_to)
                  : ranges_of_all_types(r, &xs, &n, &from, skip, year_to);
    /* merged in (year, record id) order; a record listed under two types (its type changed) once */
    const char *last = NULL;
    size_t last_len = 0;
    while (rc == 0 && n > 0) {
        size_t m = 0;
        for (size_t i = 1; i < n; i++)
            if (record_key_cmp((const char *)xs[i].k.mv_data + xs[i].plen, xs[i].k.mv_size - xs[i].plen,
                               (const char *)xs[m].k.mv_data + xs[m].plen, xs[m].k.mv_size - xs[m].plen) < 0)
                m = i;
        const char *sfx = (const char *)xs[m].k.mv_data + xs[m].plen;
        size_t sl = xs[m].k.mv_size - xs[m].plen;
        if (!last || sl != last_len || memcmp(sfx, last, sl) != 0) {
            key.len = tplen;
            buf_put(&key, sfx, sl);
            if (!fn(ctx, ms_get_be16(sfx), sfx + 2, sl - 2, key.data, key.len)) break;
            last = sfx;
            last_len = sl;
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

/*
 * counter.c - one rolling-window counter: a Fenwick tree over a ring of buckets, the future in a hash map
 * with a min-heap, and the per-parent pairs (see counter.h for the design and the figures).
 */
#include "views/counter.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- time ---- */

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && a < 0) q--;
    return q;
}

int64_t counter_bucket(int64_t ts, int64_t resolution_us) { return floordiv(ts - 1, resolution_us) + 1; }

/* ---- the future: bucket -> count, open addressing (linear probing, backward-shift deletion), and a
 * min-heap of the buckets inserted (an entry whose bucket left the map is skipped when popped) ---- */

typedef struct {
    int64_t *key, *val;
    unsigned char *used;
    size_t cap, n; /* cap: a power of two, or 0 */
    int64_t *heap;
    size_t hn, hcap;
} future_map;

static size_t mix(int64_t k)
{
    uint64_t x = (uint64_t)k;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static size_t fut_find(const future_map *f, int64_t k)
{
    size_t i = mix(k) & (f->cap - 1);
    while (f->used[i] && f->key[i] != k)
        i = (i + 1) & (f->cap - 1);
    return i;
}

static void heap_push(future_map *f, int64_t k)
{
    if (f->hn == f->hcap) {
        f->hcap = f->hcap ? f->hcap * 2 : 16;
        f->heap = ms_realloc(f->heap, sizeof *f->heap * f->hcap);
    }
    size_t i = f->hn++;
    while (i && f->heap[(i - 1) / 2] > k) {
        f->heap[i] = f->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    f->heap[i] = k;
}

static int64_t heap_pop(future_map *f)
{
    int64_t top = f->heap[0], last = f->heap[--f->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= f->hn) break;
        if (c + 1 < f->hn && f->heap[c + 1] < f->heap[c]) c++;
        if (f->heap[c] >= last) break;
        f->heap[i] = f->heap[c];
        i = c;
    }
    if (f->hn) f->heap[i] = last;
    return top;
}

static void fut_grow(future_map *f)
{
    future_map g = {.cap = f->cap ? f->cap * 2 : 16};
    g.key = ms_malloc(sizeof *g.key * g.cap);
    g.val = ms_malloc(sizeof *g.val * g.cap);
    g.used = ms_calloc(g.cap, 1);
    for (size_t i = 0; i < f->cap; i++) {
        if (!f->used[i]) continue;
        size_t j = fut_find(&g, f->key[i]);
        g.used[j] = 1, g.key[j] = f->key[i], g.val[j] = f->val[i];
    }
    free(f->key);
    free(f->val);
    free(f->used);
    f->key = g.key, f->val = g.val, f->used = g.used, f->cap = g.cap;
}

static void fut_delete_at(future_map *f, size_t i)
{
    f->used[i] = 0;
    f->n--;
    for (size_t j = (i + 1) & (f->cap - 1); f->used[j]; j = (j + 1) & (f->cap - 1)) {
        size_t home = mix(f->key[j]) & (f->cap - 1);
        /* move j back to i when its home is not in (i, j] (cyclically) */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            f->key[i] = f->key[j], f->val[i] = f->val[j], f->used[i] = 1;
            f->used[j] = 0;
            i = j;
        }
    }
}

static void fut_add(future_map *f, int64_t k, int64_t delta)
{
    if (2 * (f->n + 1) > f->cap) fut_grow(f);
    size_t i = fut_find(f, k);
    if (!f->used[i]) {
        f->used[i] = 1, f->key[i] = k, f->val[i] = 0;
        f->n++;
        heap_push(f, k);
        /* stale heap entries (buckets that came and went) are dropped once they outnumber the live ones */
        if (f->hn > 2 * f->n + 64) {
            f->hn = 0;
            for (size_t j = 0; j < f->cap; j++)
                if (f->used[j]) heap_push(f, f->key[j]);
        }
    }
    f->val[i] += delta;
    if (f->val[i] == 0) fut_delete_at(f, i);
}

static void fut_free(future_map *f)
{
    free(f->key);
    free(f->val);
    free(f->used);
    free(f->heap);
    memset(f, 0, sizeof *f);
}

/* ---- per parent: parent id -> sorted (bucket, count) pairs ---- */

typedef struct {
    int64_t b, n;
} pair;

typedef struct {
    char *id; /* NULL: an empty slot */
    uint64_t h;
    uint32_t id_len, n, cap;
    pair *p;
} parent_entry;

typedef struct {
    parent_entry *slot;
    size_t cap, n; /* cap: a power of two, or 0 */
    uint64_t pairs;
    size_t sweep; /* the next slot the incremental prune looks at */
} parent_table;

static size_t pt_find(const parent_table *t, const char *id, size_t len, uint64_t h)
{
    size_t i = (size_t)h & (t->cap - 1);
    while (t->slot[i].id && !(t->slot[i].h == h && t->slot[i].id_len == len && !memcmp(t->slot[i].id, id, len)))
        i = (i + 1) & (t->cap - 1);
    return i;
}

static void pt_grow(parent_table *t)
{
    parent_table g = {.cap = t->cap ? t->cap * 2 : 64, .n = t->n, .pairs = t->pairs};
    g.slot = ms_calloc(g.cap, sizeof *g.slot);
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slot[i].id) continue;
        size_t j = (size_t)t->slot[i].h & (g.cap - 1);
        while (g.slot[j].id)
            j = (j + 1) & (g.cap - 1);
        g.slot[j] = t->slot[i];
    }
    free(t->slot);
    *t = g;
}

static void pt_delete_at(parent_table *t, size_t i)
{
    free(t->slot[i].id);
    free(t->slot[i].p);
    memset(&t->slot[i], 0, sizeof t->slot[i]);
    t->n--;
    for (size_t j = (i + 1) & (t->cap - 1); t->slot[j].id; j = (j + 1) & (t->cap - 1)) {
        size_t home = (size_t)t->slot[j].h & (t->cap - 1);
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            t->slot[i] = t->slot[j];
            memset(&t->slot[j], 0, sizeof t->slot[j]);
            i = j;
        }
    }
}

/* Drop the pairs of slot i whose bucket is <= oldest_gone; remove the parent when none is left (then the
 * slot may hold another parent: returns false). */
static bool pt_prune(parent_table *t, size_t i, int64_t oldest_gone)
{
    parent_entry *pe = &t->slot[i];
    uint32_t k = 0;
    while (k < pe->n && pe->p[k].b <= oldest_gone)
        k++;
    if (k) {
        memmove(pe->p, pe->p + k, sizeof *pe->p * (pe->n - k));
        pe->n -= k;
        t->pairs -= k;
    }
    if (pe->n) return true;
    pt_delete_at(t, i);
    return false;
}

static void pt_free(parent_table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->slot[i].id);
        free(t->slot[i].p);
    }
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* The index of the first pair with bucket >= b. */
static uint32_t pair_lower(const parent_entry *pe, int64_t b)
{
    uint32_t lo = 0, hi = pe->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (pe->p[mid].b < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- the counter ---- */

struct counter {
    int64_t res, W; /* resolution (us); max_window in buckets */
    uint32_t B;     /* ring slots: W + 1 */
    bool started;
    int64_t m;      /* floor(now / res): the ring holds buckets m-W+1 .. m+1 */
    int64_t *tree;  /* Fenwick tree over the B slots, 1-based */
    future_map fut; /* buckets after m+1 */
    uint64_t late;
    uint32_t max_pairs; /* 0: no per-parent counts */
    parent_table pt;
    bool pruned_all; /* the whole table was pruned at ring position pruned_at */
    int64_t pruned_at;
    bool gap; /* per-parent changes were lost in buckets gap_lo .. gap_hi */
    int64_t gap_lo, gap_hi;
    uint64_t parent_dropped;
};

static uint32_t slot_of(const counter *c, int64_t k)
{
    int64_t s = k % (int64_t)c->B;
    return (uint32_t)(s < 0 ? s + c->B : s);
}

static void fw_add(counter *c, uint32_t slot, int64_t delta)
{
    for (uint32_t j = slot + 1; j <= c->B; j += j & -j)
        c->tree[j] += delta;
}

/* The sum of slots 0 .. slot. */
static int64_t fw_prefix(const counter *c, uint32_t slot)
{
    int64_t s = 0;
    for (uint32_t j = slot + 1; j > 0; j -= j & -j)
        s += c->tree[j];
    return s;
}

static int64_t fw_point(const counter *c, uint32_t slot)
{
    return fw_prefix(c, slot) - (slot ? fw_prefix(c, slot - 1) : 0);
}

/* The sum of buckets lo+1 .. hi, all in the ring (hi - lo <= W). */
static int64_t ring_sum(const counter *c, int64_t lo, int64_t hi)
{
    if (hi <= lo) return 0;
    uint32_t a = slot_of(c, lo + 1), b = slot_of(c, hi);
    if (a <= b) return fw_prefix(c, b) - (a ? fw_prefix(c, a - 1) : 0);
    return fw_prefix(c, c->B - 1) - fw_prefix(c, a - 1) + fw_prefix(c, b);
}

counter *counter_new(int64_t resolution_us, int64_t max_window_us, uint32_t max_parent_buckets)
{
    counter *c = ms_calloc(1, sizeof *c);
    c->res = resolution_us;
    c->W = max_window_us / resolution_us;
    c->B = (uint32_t)(c->W + 1);
    c->tree = ms_calloc((size_t)c->B + 1, sizeof *c->tree);
    c->max_pairs = max_parent_buckets;
    return c;
}

void counter_free(counter *c)
{
    if (!c) return;
    free(c->tree);
    fut_free(&c->fut);
    pt_free(&c->pt);
    free(c);
}

/* Buckets <= this have left the ring. */
static int64_t oldest_gone(const counter *c) { return c->m - c->W; }

void counter_advance(counter *c, int64_t now)
{
    int64_t m = floordiv(now, c->res);
    if (c->started && m <= c->m) return;
    if (!c->started || m - c->m >= (int64_t)c->B) {
        memset(c->tree, 0, sizeof *c->tree * ((size_t)c->B + 1));
    } else {
        for (int64_t k = c->m + 2; k <= m + 1; k++) { /* slot of k held bucket k - B, now too old */
            uint32_t s = slot_of(c, k);
            int64_t v = fw_point(c, s);
            if (v) fw_add(c, s, -v);
        }
    }
    c->started = true;
    c->m = m;
    while (c->fut.hn && c->fut.heap[0] <= m + 1) { /* the future that has come */
        int64_t k = heap_pop(&c->fut);
        size_t i = c->fut.cap ? fut_find(&c->fut, k) : 0;
        if (!c->fut.cap || !c->fut.used[i]) continue; /* a stale heap entry */
        int64_t v = c->fut.val[i];
        fut_delete_at(&c->fut, i);
        if (k > oldest_gone(c)) fw_add(c, slot_of(c, k), v);
    }
    if (c->gap && c->gap_hi <= oldest_gone(c)) c->gap = false;
}

/* Look at a few parent slots each call, pruning aged pairs: the table follows the ring at O(1) a call. */
static void pt_sweep(counter *c, int slots)
{
    parent_table *t = &c->pt;
    for (int i = 0; i < slots && t->cap; i++) {
        size_t s = t->sweep++ & (t->cap - 1);
        if (t->slot[s].id) pt_prune(t, s, oldest_gone(c));
    }
}

static void note_gap(counter *c, int64_t k)
{
    if (!c->gap) {
        c->gap = true;
        c->gap_lo = c->gap_hi = k;
    }
    if (k < c->gap_lo) c->gap_lo = k;
    if (k > c->gap_hi) c->gap_hi = k;
}

/* Add delta (a +1 or -1, or a saved count) to parent id's pair of bucket k (k is in the ring or after). */
static void parent_add(counter *c, const char *id, size_t len, int64_t k, int64_t delta)
{
    parent_table *t = &c->pt;
    uint64_t h = XXH3_64bits(id, len);
    size_t i = t->cap ? pt_find(t, id, len, h) : 0;
    bool have = t->cap && t->slot[i].id;
    if (have && !pt_prune(t, i, oldest_gone(c))) have = false, i = pt_find(t, id, len, h);
    uint32_t at = have ? pair_lower(&t->slot[i], k) : 0;
    bool pair_there = have && at < t->slot[i].n && t->slot[i].p[at].b == k;
    if (delta < 0) {
        if (!pair_there) { /* its +1 was not kept (the cap): the gap covers it already */
            note_gap(c, k);
            return;
        }
        parent_entry *pe = &t->slot[i];
        pe->p[at].n += delta;
        if (pe->p[at].n <= 0) {
            memmove(pe->p + at, pe->p + at + 1, sizeof *pe->p * (pe->n - at - 1));
            pe->n--;
            t->pairs--;
            if (!pe->n) pt_delete_at(t, i);
        }
        return;
    }
    if (pair_there) {
        t->slot[i].p[at].n += delta;
        return;
    }
    if (t->pairs >= c->max_pairs) {
        /* prune every aged pair (once per tick of the ring: nothing more ages in between), then give up on
         * this one if still full */
        if (!c->pruned_all || c->pruned_at != c->m) {
            for (size_t s = 0; s < t->cap; s++)
                while (t->slot[s].id && !pt_prune(t, s, oldest_gone(c))) {
                }
            c->pruned_all = true;
            c->pruned_at = c->m;
        }
        if (t->pairs >= c->max_pairs) {
            note_gap(c, k);
            c->parent_dropped++;
            return;
        }
        i = pt_find(t, id, len, h);
        have = t->slot[i].id != NULL;
        at = have ? pair_lower(&t->slot[i], k) : 0;
    }
    if (!have) {
        if (2 * (t->n + 1) > t->cap) pt_grow(t);
        i = pt_find(t, id, len, h);
        parent_entry *pe = &t->slot[i];
        pe->id = ms_strndup(id, len);
        pe->id_len = (uint32_t)len;
        pe->h = h;
        t->n++;
        at = 0;
    }
    parent_entry *pe = &t->slot[i];
    if (pe->n == pe->cap) {
        pe->cap = pe->cap ? pe->cap * 2 : 2;
        pe->p = ms_realloc(pe->p, sizeof *pe->p * pe->cap);
    }
    memmove(pe->p + at + 1, pe->p + at, sizeof *pe->p * (pe->n - at));
    pe->p[at] = (pair){k, delta};
    pe->n++;
    t->pairs++;
}

void counter_add(counter *c, int64_t ts, int delta, const char *parent, size_t parent_len, int64_t commit_time,
                 int64_t now)
{
    counter_advance(c, now > commit_time ? now : commit_time);
    int64_t k = counter_bucket(ts, c->res);
    if (k > c->m + 1)
        fut_add(&c->fut, k, delta);
    else if (k > oldest_gone(c))
        fw_add(c, slot_of(c, k), delta);
    else if (delta > 0 && k <= floordiv(commit_time, c->res) - c->W)
        c->late++; /* out of the window when it was committed (one that only aged while queued is not late) */
    if (c->max_pairs && parent_len && k > oldest_gone(c)) {
        parent_add(c, parent, parent_len, k, delta);
        pt_sweep(c, 2);
    }
}

ms_code counter_count(counter *c, int64_t window_us, int64_t at, int64_t now, const char *parent, size_t parent_len,
                      counter_answer *out, ms_err *e)
{
    counter_advance(c, now);
    memset(out, 0, sizeof *out);
    if (window_us <= 0 || window_us % c->res || window_us / c->res > c->W)
        return ms_fail(e, MS_EINVAL,
                       "window: must be a positive multiple of the counter's resolution, at most its "
                       "max_window");
    if (at > now) return ms_fail(e, MS_EINVAL, "at: after now (future event times count when their time comes)");
    int64_t hi = floordiv(at, c->res), lo = hi - window_us / c->res;
    if (lo < oldest_gone(c))
        return ms_fail(e, MS_EINVAL,
                       "at: the window would begin before the oldest time the counter holds (now - max_window)");
    out->to = hi * c->res;
    out->from = lo * c->res;
    if (!parent) {
        out->count = ring_sum(c, lo, hi);
        return MS_OK;
    }
    if (!c->max_pairs) return ms_fail(e, MS_EINVAL, "parent: this counter does not count per parent (\"per_parent\")");
    out->incomplete = c->gap && !(hi < c->gap_lo || lo + 1 > c->gap_hi);
    parent_table *t = &c->pt;
    if (!t->cap || parent_len == 0) return MS_OK;
    uint64_t h = XXH3_64bits(parent, parent_len);
    size_t i = pt_find(t, parent, parent_len, h);
    if (!t->slot[i].id) return MS_OK;
    const parent_entry *pe = &t->slot[i];
    for (uint32_t j = pair_lower(pe, lo + 1); j < pe->n && pe->p[j].b <= hi; j++)
        out->count += pe->p[j].n;
    return MS_OK;
}

void counter_stats_get(const counter *c, counter_stats *out)
{
    memset(out, 0, sizeof *out);
    out->late = c->late;
    out->future_buckets = c->fut.n;
    out->parents = c->pt.n;
    out->parent_buckets = c->pt.pairs;
    out->parent_dropped = c->parent_dropped;
    size_t mem = sizeof *c + sizeof *c->tree * ((size_t)c->B + 1);
    mem += c->fut.cap * (2 * sizeof(int64_t) + 1) + c->fut.hcap * sizeof(int64_t);
    mem += c->pt.cap * sizeof(parent_entry);
    for (size_t i = 0; i < c->pt.cap; i++)
        if (c->pt.slot[i].id) mem += c->pt.slot[i].id_len + 1 + (size_t)c->pt.slot[i].cap * sizeof(pair);
    out->memory = mem;
}

/* ---- saved state: "MSC2", be64 resolution, be64 W, started (1), be64 m, be64 late, be64 parent_dropped,
 * gap (1), be64 gap_lo, be64 gap_hi; then the ring's non-zero buckets, the future's, and per parent its
 * pairs, each list as be32 n and n x (varint bucket - previous bucket, zigzag varint count), the first
 * bucket counted from m - W; parents as be32 n and per parent be16 id length, id, its list. Buckets held
 * are consecutive or close, so a bucket costs 2-3 bytes (72h at 1s, every bucket busy: ~750 KB). ---- */

#define SAVE_MAGIC "MSC2"

static void put_varint(buf *out, uint64_t v)
{
    unsigned char b[10];
    int n = 0;
    do {
        b[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    buf_put(out, b, (size_t)n);
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* A list of (bucket, count) in increasing bucket order, the first bucket counted from base. */
typedef struct {
    buf *out;
    size_t count_at;
    uint32_t n;
    int64_t prev;
} list_writer;

static void list_begin(list_writer *w, buf *out, int64_t base)
{
    w->out = out;
    w->count_at = out->len;
    w->n = 0;
    w->prev = base;
    buf_put_be32(out, 0);
}

static void list_put(list_writer *w, int64_t bucket, int64_t count)
{
    put_varint(w->out, (uint64_t)(bucket - w->prev));
    put_varint(w->out, zigzag(count));
    w->prev = bucket;
    w->n++;
}

static void list_end(list_writer *w) { ms_set_be32(w->out->data + w->count_at, w->n); }

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void counter_save(const counter *c, buf *out)
{
    buf_put(out, SAVE_MAGIC, 4);
    buf_put_be64(out, (uint64_t)c->res);
    buf_put_be64(out, (uint64_t)c->W);
    buf_putc(out, c->started ? 1 : 0);
    buf_put_be64(out, (uint64_t)c->m);
    buf_put_be64(out, c->late);
    buf_put_be64(out, c->parent_dropped);
    buf_putc(out, c->gap ? 1 : 0);
    buf_put_be64(out, (uint64_t)c->gap_lo);
    buf_put_be64(out, (uint64_t)c->gap_hi);
    list_writer w;
    list_begin(&w, out, oldest_gone(c));
    if (c->started) {
        /* every slot's own count in O(B): the tree built backwards (a node's children come before it, so
         * in decreasing order each node still holds the sum it gave its parent) */
        int64_t *v = ms_malloc(sizeof *v * ((size_t)c->B + 1));
        memcpy(v, c->tree, sizeof *v * ((size_t)c->B + 1));
        for (uint32_t i = c->B; i >= 1; i--)
            if (i + (i & -i) <= c->B) v[i + (i & -i)] -= v[i];
        for (int64_t k = oldest_gone(c) + 1; k <= c->m + 1; k++) {
            int64_t n = v[slot_of(c, k) + 1];
            if (n) list_put(&w, k, n);
        }
        free(v);
    }
    list_end(&w);
    int64_t *keys = ms_malloc(sizeof *keys * (c->fut.n ? c->fut.n : 1));
    size_t nk = 0;
    for (size_t i = 0; i < c->fut.cap; i++)
        if (c->fut.used[i]) keys[nk++] = c->fut.key[i];
    qsort(keys, nk, sizeof *keys, cmp_i64);
    list_begin(&w, out, c->m + 1);
    for (size_t i = 0; i < nk; i++)
        list_put(&w, keys[i], c->fut.val[fut_find(&c->fut, keys[i])]);
    list_end(&w);
    free(keys);
    buf_put_be32(out, (uint32_t)c->pt.n);
    for (size_t i = 0; i < c->pt.cap; i++) {
        const parent_entry *pe = &c->pt.slot[i];
        if (!pe->id) continue;
        buf_put_be16(out, (uint16_t)pe->id_len);
        buf_put(out, pe->id, pe->id_len);
        list_begin(&w, out, oldest_gone(c));
        for (uint32_t j = 0; j < pe->n; j++)
            if (pe->p[j].b > oldest_gone(c)) list_put(&w, pe->p[j].b, pe->p[j].n); /* aged: not pruned yet */
        list_end(&w);
    }
}

typedef struct {
    const unsigned char *p, *end;
    bool bad;
    uint64_t counts; /* the magnitudes of the counts read, summed (rd_pair) */
} reader;

/* At most this in all, so that no sum of counts (a node of the tree, a window, a bucket the future moves into
 * the ring, a parent's pairs) can overflow: a saved state's counts are numbers of records, far below. */
#define SAVED_COUNTS_MAX ((uint64_t)1 << 62)

static uint64_t rd64(reader *r)
{
    if (r->end - r->p < 8) return r->bad = true, 0;
    uint64_t v = ms_get_be64(r->p);
    r->p += 8;
    return v;
}

static uint32_t rd32(reader *r)
{
    if (r->end - r->p < 4) return r->bad = true, 0;
    uint32_t v = ms_get_be32(r->p);
    r->p += 4;
    return v;
}

static unsigned rd8(reader *r)
{
    if (r->end - r->p < 1) return r->bad = true, 0;
    return *r->p++;
}

static uint64_t rdvarint(reader *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) break;
        unsigned char b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    r->bad = true;
    return 0;
}

/* The next (bucket, count) of a list whose previous bucket is *prev. */
static void rd_pair(reader *r, int64_t *prev, int64_t *bucket, int64_t *count)
{
    uint64_t d = rdvarint(r);
    *count = unzigzag(rdvarint(r));
    r->counts += *count < 0 ? -(uint64_t)*count : (uint64_t)*count; /* at most 2^62 + 2^63 */
    if (r->counts > SAVED_COUNTS_MAX) r->bad = true;
    if (d > (uint64_t)INT64_MAX / 2 || *prev > INT64_MAX / 2) {
        r->bad = true;
        d = 0; /* the sum below would overflow */
    }
    *bucket = *prev + (int64_t)d;
    *prev = *bucket;
}

static void reset(counter *c)
{
    memset(c->tree, 0, sizeof *c->tree * ((size_t)c->B + 1));
    fut_free(&c->fut);
    pt_free(&c->pt);
    c->started = c->gap = c->pruned_all = false;
    c->m = c->late = c->parent_dropped = 0;
    c->gap_lo = c->gap_hi = 0;
}

ms_code counter_load(counter *c, const void *data, size_t len, int64_t now, ms_err *e)
{
    reader r = {data, (const unsigned char *)data + len, false, 0};
    reset(c);
    if (len < 4 || memcmp(data, SAVE_MAGIC, 4) != 0) goto bad;
    r.p += 4;
    if ((int64_t)rd64(&r) != c->res || (int64_t)rd64(&r) != c->W) goto bad;
    c->started = rd8(&r) == 1;
    c->m = (int64_t)rd64(&r);
    c->late = rd64(&r);
    c->parent_dropped = rd64(&r);
    c->gap = rd8(&r) == 1;
    c->gap_lo = (int64_t)rd64(&r);
    c->gap_hi = (int64_t)rd64(&r);
    if (r.bad || c->m < INT64_MIN / 4 || c->m > INT64_MAX / 4) goto bad;
    uint32_t n = rd32(&r);
    int64_t prev = oldest_gone(c), k, v;
    if (r.bad || (n && !c->started) || n > c->B) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        rd_pair(&r, &prev, &k, &v);
        if (r.bad || k <= oldest_gone(c) || k > c->m + 1) goto bad;
        fw_add(c, slot_of(c, k), v);
    }
    n = rd32(&r);
    prev = c->m + 1;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        rd_pair(&r, &prev, &k, &v);
        if (r.bad || k <= c->m + 1 || v == 0) goto bad;
        fut_add(&c->fut, k, v);
    }
    uint32_t parents = rd32(&r);
    if (r.bad || (parents && !c->max_pairs)) goto bad;
    for (uint32_t i = 0; i < parents; i++) {
        if (r.end - r.p < 2) goto bad;
        size_t idl = ms_get_be16(r.p);
        r.p += 2;
        if (idl == 0 || (size_t)(r.end - r.p) < idl) goto bad;
        const char *id = (const char *)r.p;
        r.p += idl;
        uint32_t np = rd32(&r);
        prev = oldest_gone(c);
        for (uint32_t j = 0; j < np; j++) {
            rd_pair(&r, &prev, &k, &v);
            if (r.bad || v <= 0 || k <= oldest_gone(c) || c->pt.pairs >= c->max_pairs) goto bad;
            parent_add(c, id, idl, k, v);
        }
    }
    if (r.bad || r.p != r.end) goto bad;
    counter_advance(c, now);
    return MS_OK;
bad:
    reset(c);
    return ms_fail(e, MS_ECORRUPT, "counter state: not a saved state of a counter of this resolution and window");
}

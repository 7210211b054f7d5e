/*
 * plog.c - the patient log: everything the store keeps per patient number that used to land on a random
 * LMDB page (patient versions, the patient's records-index entries, the public patient copies under the
 * schema in force) appended in commit order to one sub-database keyed by a sequence number, each entry
 * naming the same patient's newest entry of each kind before it; an in-memory head (the newest entry) per patient
 * number; the heads checkpointed into LMDB a few chunks per commit; the heads rebuilt at open from the
 * last checkpoint and the entries after it (issue 17, README.md "The patient log").
 *
 * Why: a commit of 1,000 records of known patients put ~2,000 keys on random pages of two B-trees (the
 * patient and public sub-databases), which is what made ingest slow down as the store grew and made reads
 * queue behind the commit's page writes. Sequence keys append (MDB_APPEND): a commit now dirties the
 * log's last pages only, whatever the number of patients.
 *
 * Contract (store_internal.h, "the patient log"):
 *   - An entry is immutable once committed; erasure deletes a patient's entries and appends an 'X' mark that
 *     ends its chain (a walk stops there, without looking at the keyed entries of older stores).
 *   - Walks go newest first along one kind's chain (from the head, the newest entry of that kind, then
 *     each entry's previous of its kind): sequence order is commit order, and every versioned entry of a
 *     commit carries that commit's valid_from, so it is also (valid_from, version) order, the order the
 *     keyed layout had. A walk of one kind never reads the entries of the others.
 *   - Heads change only after a commit, on the thread of the store_write (README.md, invariant 4), so a
 *     head names a committed entry. A reader whose snapshot ends before a head follows the pointers in a
 *     fresh read transaction (entries are immutable) to the first entry its snapshot holds.
 *   - Recovery: every chunk of heads not written since an entry of its patients was appended is at least as
 *     old as meta "plog_floor"; replaying the entries from there (head = max seq) gives the heads back.
 *
 * Must never: hand a walk's callback an entry its snapshot does not hold, write a head before its entry is
 * committed, leave the floor above an entry a checkpointed chunk does not hold.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define CHUNK_BITS 12
#define CHUNK (1u << CHUNK_BITS)              /* heads per chunk: 4,096 (32 KiB checkpointed) */
#define TOP ((size_t)1 << 20)                 /* chunks: patient numbers below 2^32 */
#define DEFAULT_LAG ((uint64_t)1 << 20)       /* entries past the floor before chunks are checkpointed */
#define CHUNKS_PER_COMMIT ST_PLOG_CKPT_CHUNKS /* at most this many chunks written by one commit */
#define META_FLOOR ST_META_PLOG_FLOOR
#define ENTRY_HEAD 33 /* format 1: tag, be64(number), be64(the newest 'v', 'r' and 'P' entry before it) */
/* Format 2 (since issue 17's bytes-per-record work): the tag with its high bit set, then varints: the
 * number, each of the three newest entries before it as the distance back from the entry's own sequence
 * number (0: none), and by tag 'v' zigzag valid_from, version; 'P' sv, zigzag valid_from, version; 'r'
 * zigzag ts. ~12 bytes where format 1 spent 33-49. Both are read. */
#define TAG_COMPACT 0x80

/* The index of a tag in plog_entry.last: 'v' 0, 'r' 1, 'P' 2; -1 for 'X'. */
static int kind_of(char tag) { return tag == 'v' ? 0 : tag == 'r' ? 1 : tag == 'P' ? 2 : -1; }

struct st_plog {
    _Atomic(_Atomic(uint64_t) *) chunk[TOP]; /* heads; NULL: no patient of that chunk has an entry */
    uint64_t *dirty;          /* per chunk: the first entry appended since it was last written (0: clean) */
    size_t nchunks;           /* chunks in use: every index below it may be non-NULL */
    uint64_t next;            /* the next sequence number to hand out */
    uint64_t lag;             /* entries past the floor before checkpointing */
    size_t per_commit;        /* chunks one commit writes at most */
    uint64_t loaded_end;      /* read-only stores: entries applied so far */
    _Atomic uint64_t applied; /* the newest entry whose commit's heads are set: a reader whose snapshot holds a newer
                                 one waits for its heads (st_plog_end), since LMDB shows a commit before
                                 st_plog_committed sets them */
    _Atomic uint64_t reads;   /* entries read by walks (store_patient_log_reads) */
    pthread_mutex_t catch_up; /* read-only stores: one catch-up at a time */
};

static uint64_t head_get(st_plog *p, uint64_t number)
{
    size_t c = (size_t)(number >> CHUNK_BITS);
    if (c >= TOP) return 0;
    _Atomic(uint64_t) *chunk = atomic_load_explicit(&p->chunk[c], memory_order_acquire);
    return chunk ? atomic_load_explicit(&chunk[number & (CHUNK - 1)], memory_order_acquire) : 0;
}

/* One thread at a time (the store_write's, or a read-only store's catch-up under its lock); readers meanwhile. */
static void head_set(st_plog *p, uint64_t number, uint64_t seq)
{
    size_t c = (size_t)(number >> CHUNK_BITS);
    _Atomic(uint64_t) *chunk = atomic_load_explicit(&p->chunk[c], memory_order_relaxed);
    if (!chunk) {
        chunk = ms_calloc(CHUNK, sizeof *chunk);
        atomic_store_explicit(&p->chunk[c], chunk, memory_order_release); /* its zeros before the pointer */
    }
    if (c + 1 > p->nchunks) p->nchunks = c + 1;
    atomic_store_explicit(&chunk[number & (CHUNK - 1)], seq, memory_order_release);
}

static void mark_dirty(st_plog *p, uint64_t number, uint64_t seq)
{
    size_t c = (size_t)(number >> CHUNK_BITS);
    if (!p->dirty[c] || p->dirty[c] > seq) p->dirty[c] = seq;
}

/* ---- entries ---- */

void st_plog_encode(buf *b, const plog_entry *en)
{
    b->len = 0;
    buf_putc(b, (char)((unsigned char)en->tag | TAG_COMPACT));
    buf_put_varint(b, en->number);
    for (int k = 0; k < 3; k++)
        buf_put_varint(b, en->last[k] ? en->seq - en->last[k] : 0);
    switch (en->tag) {
    case 'v':
        buf_put_zigzag(b, en->valid_from);
        buf_put_varint(b, en->version);
        break;
    case 'P':
        buf_put_varint(b, en->sv);
        buf_put_zigzag(b, en->valid_from);
        buf_put_varint(b, en->version);
        break;
    case 'r': buf_put_zigzag(b, en->ts); break;
    default: break;
    }
    buf_put(b, en->data, en->len);
}

/* A format 2 entry (after its tag) into en. */
static bool decode_compact(uint64_t seq, const unsigned char *p, const unsigned char *end, plog_entry *en)
{
    uint64_t back, u = 0;
    if (!ms_get_varint(&p, end, &en->number)) return false;
    for (int k = 0; k < 3; k++) {
        if (!ms_get_varint(&p, end, &back) || (back && back >= seq)) return false;
        en->last[k] = back ? seq - back : 0;
    }
    bool ok = true;
    if (en->tag == 'v') {
        ok = ms_get_zigzag(&p, end, &en->valid_from) && ms_get_varint(&p, end, &u) && u <= UINT32_MAX;
        en->version = (uint32_t)u;
    } else if (en->tag == 'P') {
        ok = ms_get_varint(&p, end, &u) && u <= UINT32_MAX;
        en->sv = (uint32_t)u;
        ok = ok && ms_get_zigzag(&p, end, &en->valid_from) && ms_get_varint(&p, end, &u) && u <= UINT32_MAX;
        en->version = (uint32_t)u;
    } else if (en->tag == 'r') {
        ok = ms_get_zigzag(&p, end, &en->ts);
    } else if (en->tag != 'X') {
        return false;
    }
    en->data = (const char *)p;
    en->len = (size_t)(end - p);
    return ok;
}

bool st_plog_decode(uint64_t seq, const MDB_val *v, plog_entry *en)
{
    const char *p = v->mv_data;
    size_t n = v->mv_size;
    memset(en, 0, sizeof *en);
    if (n < 1) return false;
    en->seq = seq;
    if ((unsigned char)p[0] & TAG_COMPACT) {
        en->tag = (char)((unsigned char)p[0] & ~TAG_COMPACT);
        return decode_compact(seq, (const unsigned char *)p + 1, (const unsigned char *)p + n, en);
    }
    if (n < ENTRY_HEAD) return false;
    en->tag = p[0];
    en->number = ms_get_be64(p + 1);
    for (int k = 0; k < 3; k++) {
        en->last[k] = ms_get_be64(p + 9 + 8 * k);
        if (en->last[k] >= seq) return false;
    }
    p += ENTRY_HEAD, n -= ENTRY_HEAD;
    size_t head;
    switch (en->tag) {
    case 'v': head = 12; break;
    case 'P': head = 16; break;
    case 'r': head = 8; break;
    case 'X': head = 0; break;
    default: return false;
    }
    if (n < head) return false;
    if (en->tag == 'v') {
        en->valid_from = (int64_t)ms_get_be64(p);
        en->version = ms_get_be32(p + 8);
    } else if (en->tag == 'P') {
        en->sv = ms_get_be32(p);
        en->valid_from = (int64_t)ms_get_be64(p + 4);
        en->version = ms_get_be32(p + 12);
    } else if (en->tag == 'r') {
        en->ts = (int64_t)ms_get_be64(p);
    }
    en->data = p + head;
    en->len = n - head;
    return true;
}

static MDB_val seq_key(unsigned char k[8], uint64_t seq)
{
    ms_set_be64(k, seq);
    return st_val(k, 8);
}

int st_plog_get(store *s, MDB_txn *txn, uint64_t seq, MDB_val *v)
{
    unsigned char kb[8];
    MDB_val k = seq_key(kb, seq);
    int rc = mdb_get(txn, s->dbi[DB_PLOG], &k, v);
    if (rc == MDB_NOTFOUND && !s->absent[DB_PLOGC]) rc = mdb_get(txn, s->dbi[DB_PLOGC], &k, v);
    return rc;
}

/* ---- the writer's side ---- */

/* A patient's heads as a transaction sees them: its newest entry, and its newest entry of each kind; and
 * (its own heads only) where in w->states the plaintext of its newest version is, when this transaction
 * wrote it (st_plog_state_*: offset + 1, 0 none; a newer version appended clears it). */
struct st_plog_heads {
    uint64_t seq, newest[3];
    size_t state_at;
};

/* The transaction's own heads: an open-addressing table number -> st_plog_heads (keys stored + 1; 0 empty). */
static uint64_t *ov_slot(store_write *w, uint64_t number)
{
    size_t mask = w->ov_cap - 1, i = (size_t)(number * 0x9E3779B97F4A7C15ull >> 20) & mask;
    while (w->ov_key[i] && w->ov_key[i] != number + 1)
        i = (i + 1) & mask;
    return &w->ov_key[i];
}

static const struct st_plog_heads *ov_get(store_write *w, uint64_t number)
{
    if (!w->ov_cap) return NULL;
    uint64_t *k = ov_slot(w, number);
    return *k ? &w->ov_val[k - w->ov_key] : NULL;
}

static void ov_put(store_write *w, uint64_t number, const struct st_plog_heads *h)
{
    if ((w->ov_n + 1) * 2 > w->ov_cap) {
        size_t oc = w->ov_cap;
        uint64_t *ok = w->ov_key;
        struct st_plog_heads *ov = w->ov_val;
        w->ov_cap = oc ? oc * 2 : 256;
        w->ov_key = ms_calloc(w->ov_cap, sizeof *w->ov_key);
        w->ov_val = ms_calloc(w->ov_cap, sizeof *w->ov_val);
        w->ov_n = 0;
        for (size_t i = 0; i < oc; i++)
            if (ok[i]) {
                uint64_t *k = ov_slot(w, ok[i] - 1);
                *k = ok[i];
                w->ov_val[k - w->ov_key] = ov[i];
                w->ov_n++;
            }
        free(ok);
        free(ov);
    }
    uint64_t *k = ov_slot(w, number);
    if (!*k) {
        *k = number + 1;
        w->ov_n++;
    }
    w->ov_val[k - w->ov_key] = *h;
}

uint64_t st_plog_head_w(store_write *w, uint64_t number)
{
    const struct st_plog_heads *h = ov_get(w, number);
    return h ? h->seq : head_get(w->s->plog, number);
}

/* Patient number's heads as w sees them: from w's table, or else from its committed head entry (which names
 * the newest of each kind before it). */
static int heads_w(store_write *w, uint64_t number, struct st_plog_heads *out)
{
    const struct st_plog_heads *own = ov_get(w, number);
    if (own) {
        *out = *own;
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->seq = head_get(w->s->plog, number);
    if (!out->seq || state_cache_newest(w->s->states, number, out->seq, out->newest)) return 0;
    MDB_val v;
    plog_entry h;
    int rc = st_plog_get(w->s, w->txn, out->seq, &v);
    if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    if (!st_plog_decode(out->seq, &v, &h)) return MDB_CORRUPTED;
    if (h.tag != 'X') {
        memcpy(out->newest, h.last, sizeof out->newest);
        out->newest[kind_of(h.tag)] = out->seq;
    }
    return 0;
}

int st_plog_append(store_write *w, plog_entry *en)
{
    st_plog *p = w->s->plog;
    if ((en->number >> CHUNK_BITS) >= TOP) return MDB_BAD_VALSIZE; /* numbers stay below 2^32 */
    if (!w->plog_next) w->plog_first = w->plog_next = p->next;
    struct st_plog_heads h = {0};
    if (en->tag != 'X') { /* an erasure mark ends the chains: it names nothing */
        int rc = heads_w(w, en->number, &h);
        if (rc) return rc;
    }
    memcpy(en->last, h.newest, sizeof en->last);
    en->seq = w->plog_next;
    st_plog_encode(&w->plog_buf, en);
    unsigned char kb[8];
    MDB_val k = seq_key(kb, en->seq), v = st_val(w->plog_buf.data, w->plog_buf.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_PLOG], &k, &v, MDB_APPEND);
    if (rc) return rc;
    w->plog_next++;
    h.seq = en->seq;
    int kind = kind_of(en->tag); /* -1: an erasure mark */
    if (kind >= 0) h.newest[kind] = en->seq;
    if (kind <= 0) h.state_at = 0; /* a new version, or none: the state noted is past */
    ov_put(w, en->number, &h);
    return 0;
}

void st_plog_state_note(store_write *w, uint64_t number, size_t at)
{
    if (!w->ov_cap) return;
    uint64_t *k = ov_slot(w, number);
    if (*k) w->ov_val[k - w->ov_key].state_at = at + 1;
}

bool st_plog_state_get(store_write *w, uint64_t number, size_t *at)
{
    const struct st_plog_heads *own = ov_get(w, number);
    if (!own || !own->state_at) return false;
    *at = own->state_at - 1;
    return true;
}

int st_plog_delete(store_write *w, uint64_t seq)
{
    unsigned char kb[8];
    MDB_val k = seq_key(kb, seq);
    int rc = mdb_del(w->txn, w->s->dbi[DB_PLOG], &k, NULL);
    if (rc == MDB_NOTFOUND && !w->s->absent[DB_PLOGC]) rc = mdb_del(w->txn, w->s->dbi[DB_PLOGC], &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

typedef struct {
    uint64_t *seqs;
    size_t n, cap;
    uint64_t versions;
} chain_list;

static bool collect_seq(void *ctx, const plog_entry *en)
{
    chain_list *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->seqs = ms_realloc(l->seqs, l->cap * sizeof *l->seqs);
    }
    l->seqs[l->n++] = en->seq;
    l->versions += en->tag == 'v';
    return true;
}

int st_plog_erase(store_write *w, uint64_t number, uint64_t *versions)
{
    chain_list l = {0};
    ms_err e;
    *versions = 0;
    uint64_t head = st_plog_head_w(w, number);
    for (const char *tag = "vrP"; *tag; tag++) {
        bool erased;
        if (st_plog_walk(w->s, w->txn, UINT64_MAX, head, *tag, collect_seq, &l, &erased, &e) != MS_OK) {
            free(l.seqs);
            return MDB_CORRUPTED;
        }
    }
    int rc = 0;
    for (size_t i = 0; i < l.n && !rc; i++)
        rc = st_plog_delete(w, l.seqs[i]);
    free(l.seqs);
    *versions = l.versions;
    if (rc) return rc;
    plog_entry x = {.number = number, .tag = 'X'};
    return st_plog_append(w, &x);
}

/* The next sequence number once w commits: every entry below it is w's or committed before. */
static uint64_t write_end(const store_write *w) { return w->plog_next ? w->plog_next : w->s->plog->next; }

/* The heads of chunk c as they will be once w commits. */
static void chunk_image(store_write *w, size_t c, buf *b)
{
    b->len = 0;
    buf_put_be64(b, write_end(w)); /* every entry before this is in the image */
    for (uint32_t i = 0; i < CHUNK; i++)
        buf_put_be64(b, st_plog_head_w(w, ((uint64_t)c << CHUNK_BITS) | i));
}

static bool picked_has(const size_t *picked, size_t npicked, size_t c)
{
    for (size_t i = 0; i < npicked; i++)
        if (picked[i] == c) return true;
    return false;
}

/* The floor once w commits with the chunks picked written: the first entry of the chunk dirty longest, where a
 * chunk w dirties that was clean is dirty from w's first entry; a written chunk is clean (its image holds w's
 * heads too). No dirty chunk: the end. */
static uint64_t floor_after(store_write *w, const size_t *picked, size_t npicked)
{
    st_plog *p = w->s->plog;
    uint64_t floor = write_end(w);
    for (size_t c = 0; c < p->nchunks; c++)
        if (p->dirty[c] && p->dirty[c] < floor && !picked_has(picked, npicked, c)) floor = p->dirty[c];
    for (size_t i = 0; i < w->ov_cap; i++)
        if (w->ov_key[i]) {
            size_t c = (size_t)((w->ov_key[i] - 1) >> CHUNK_BITS);
            if (!p->dirty[c] && w->plog_first < floor && !picked_has(picked, npicked, c)) floor = w->plog_first;
        }
    return floor;
}

int st_plog_checkpoint(store_write *w)
{
    st_plog *p = w->s->plog;
    if (write_end(w) - floor_after(w, NULL, 0) <= p->lag) return 0;
    /* the chunks dirty longest first (a chunk only this commit dirties is never older than those) */
    size_t picked[CHUNKS_PER_COMMIT], npicked = 0, most = p->per_commit;
    uint64_t since[CHUNKS_PER_COMMIT];
    for (size_t c = 0; c < p->nchunks; c++) {
        if (!p->dirty[c]) continue;
        size_t at = npicked;
        while (at > 0 && since[at - 1] > p->dirty[c])
            at--;
        if (at >= most) continue;
        size_t last = npicked < most ? npicked : most - 1;
        memmove(picked + at + 1, picked + at, (last - at) * sizeof *picked);
        memmove(since + at + 1, since + at, (last - at) * sizeof *since);
        picked[at] = c, since[at] = p->dirty[c];
        if (npicked < most) npicked++;
    }
    buf img = {0};
    unsigned char kb[8];
    int rc = 0;
    for (size_t i = 0; i < npicked && !rc; i++) {
        chunk_image(w, picked[i], &img);
        MDB_val k = seq_key(kb, picked[i]), v = st_val(img.data, img.len);
        rc = mdb_put(w->txn, w->s->dbi[DB_PHEAD], &k, &v, 0);
    }
    buf_free(&img);
    if (rc) return rc;
    memcpy(w->ckpt_chunks, picked, npicked * sizeof *picked);
    w->ckpt_n = npicked;
    return st_meta_put_u64(w->txn, w->s->dbi[DB_META], META_FLOOR, floor_after(w, picked, npicked));
}

void st_plog_each_moved(store_write *w, st_plog_moved_fn fn, void *ctx)
{
    for (size_t i = 0; i < w->ov_cap; i++)
        if (w->ov_key[i]) {
            uint64_t number = w->ov_key[i] - 1;
            const struct st_plog_heads *h = &w->ov_val[i];
            fn(ctx, number, head_get(w->s->plog, number), h->seq, h->newest, h->newest[0] >= w->plog_first);
        }
}

void st_plog_committed(store_write *w)
{
    st_plog *p = w->s->plog;
    for (size_t i = 0; i < w->ov_cap; i++)
        if (w->ov_key[i]) {
            uint64_t number = w->ov_key[i] - 1;
            head_set(p, number, w->ov_val[i].seq);
            mark_dirty(p, number, w->plog_first);
        }
    for (size_t i = 0; i < w->ckpt_n; i++)
        p->dirty[w->ckpt_chunks[i]] = 0;
    if (w->plog_next) p->next = w->plog_next;
    atomic_store_explicit(&p->applied, p->next - 1, memory_order_release); /* after the heads: st_plog_end */
}

void st_plog_write_free(store_write *w)
{
    free(w->ov_key);
    free(w->ov_val);
    buf_free(&w->plog_buf);
}

/* ---- walks ---- */

uint64_t st_plog_head(store *s, uint64_t number) { return head_get(s->plog, number); }

uint64_t store_patient_log_reads(const store *s) { return atomic_load_explicit(&s->plog->reads, memory_order_relaxed); }

/* Wait until the heads of every entry up to end are set. LMDB shows a commit to new readers at mdb_txn_commit and
 * the writer sets the commit's heads right after (st_plog_committed): a reader in between would find a new patient
 * "not found" or an old one's previous version beside the record that changed it. The wait is that gap (microseconds
 * to a millisecond); it is bounded at 1 s, after which the read goes on with the heads as they are, so that a
 * writer stopped in that gap never stops reads. */
static void await_heads(st_plog *p, uint64_t end)
{
    for (int i = 0; atomic_load_explicit(&p->applied, memory_order_acquire) < end && i < 10000; i++) {
        if (i < 100) {
            sched_yield();
        } else {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
    }
}

uint64_t st_plog_end(store_read *r)
{
    if (r->plog_end) return r->plog_end - 1;
    uint64_t end = 0;
    const int dbs[] = {DB_PLOG, DB_PLOGC}; /* the compaction may have moved the last entry */
    for (size_t i = 0; i < sizeof dbs / sizeof *dbs; i++) {
        int db = dbs[i];
        MDB_cursor *c;
        MDB_val k, v;
        if (!r->s->absent[db] && mdb_cursor_open(r->txn, r->s->dbi[db], &c) == 0) {
            if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8 && ms_get_be64(k.mv_data) > end)
                end = ms_get_be64(k.mv_data);
            mdb_cursor_close(c);
        }
    }
    r->plog_end = end + 1;
    if (!r->s->read_only) await_heads(r->s->plog, end); /* a read-only store's catch-up brings its own */
    return end;
}

ms_code st_plog_walk(store *s, MDB_txn *txn, uint64_t end, uint64_t seq, char tag, st_plog_fn fn, void *ctx,
                     bool *erased, ms_err *e)
{
    MDB_txn *fresh = NULL;
    ms_code out = MS_OK;
    int kind = kind_of(tag);
    bool first = true;
    *erased = false;
    while (seq) {
        MDB_txn *t = txn;
        if (seq > end) { /* committed after this snapshot: only its pointers are wanted */
            if (!fresh) {
                int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &fresh);
                if (rc) {
                    out = st_mdb_fail(e, rc, "begin read");
                    break;
                }
            }
            t = fresh;
        }
        MDB_val v;
        int rc = st_plog_get(s, t, seq, &v);
        atomic_fetch_add_explicit(&s->plog->reads, 1, memory_order_relaxed);
        /* erased meanwhile; or, on a chain of public copies, one of a retired schema version that the
         * compaction dropped: every copy before it is of that version or an older one (plog_compact.c) */
        if (rc == MDB_NOTFOUND) break;
        if (rc) {
            out = st_mdb_fail(e, rc, "patient log");
            break;
        }
        plog_entry en;
        if (!st_plog_decode(seq, &v, &en)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad patient log entry %llu", (unsigned long long)seq);
            break;
        }
        if (en.tag == 'X') {
            *erased = true;
            break;
        }
        if (first && en.tag != tag) { /* the head: the newest entry of the kind asked for is named in it */
            first = false;
            seq = en.last[kind];
            continue;
        }
        first = false;
        if (t == txn && !fn(ctx, &en)) break;
        seq = en.last[kind];
    }
    if (fresh) mdb_txn_abort(fresh);
    return out;
}

/* ---- open: the checkpoint, then the entries after it ---- */

/* Cold, the open's reads are page faults one 4 KiB page at a time (the map is MDB_NORDAHEAD, right for the
 * random reads of ingest): 88 M records, the page cache dropped, took ~1.3 s for the checkpointed heads
 * (2,063 values of ~33 KB) and ~1.2 s for the replay (~675,000 entries after the floor), each waiting for one
 * device read at a time. Both are asked for first, so that the device serves them side by side: the heads'
 * values with MADV_WILLNEED (the kernel reads them ahead; the cursor's walk touches only their leaf pages),
 * the replay's range by WARM_THREADS threads, each walking a slice of it in a read transaction of its own. */
#define WARM_THREADS 8

static void will_need(const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, b = (uintptr_t)p + len;
    (void)madvise((void *)a, b - a, MADV_WILLNEED);
}

typedef struct {
    store *s;
    uint64_t lo, hi; /* sequence numbers lo .. hi */
} warm_slice;

static void *warm_run(void *arg)
{
    const warm_slice *w = arg;
    MDB_txn *txn;
    MDB_cursor *c;
    if (mdb_txn_begin(w->s->env, NULL, MDB_RDONLY, &txn)) return NULL;
    if (!mdb_cursor_open(txn, w->s->dbi[DB_PLOG], &c)) {
        unsigned char kb[8];
        MDB_val k = seq_key(kb, w->lo), v;
        volatile unsigned char sink = 0;
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
             rc == 0 && k.mv_size == 8 && ms_get_be64(k.mv_data) <= w->hi; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
            if (v.mv_size) sink ^= *(const unsigned char *)v.mv_data;
        (void)sink;
        mdb_cursor_close(c);
    }
    mdb_txn_abort(txn);
    return NULL;
}

/* The pages of the entries after `after` read in by WARM_THREADS threads at once (a hint: errors are left to
 * the replay that follows). */
static void warm_replay(store *s, MDB_txn *txn, uint64_t after)
{
    MDB_cursor *c;
    MDB_val k, v;
    if (mdb_cursor_open(txn, s->dbi[DB_PLOG], &c)) return;
    int rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    mdb_cursor_close(c);
    if (rc || k.mv_size != 8 || ms_get_be64(k.mv_data) <= after) return;
    uint64_t last = ms_get_be64(k.mv_data), per = (last - after) / WARM_THREADS + 1;
    warm_slice w[WARM_THREADS];
    pthread_t t[WARM_THREADS];
    bool started[WARM_THREADS];
    for (int i = 0; i < WARM_THREADS; i++) {
        w[i] = (warm_slice){s, after + 1 + per * (uint64_t)i, after + per * (uint64_t)(i + 1)};
        started[i] = pthread_create(&t[i], NULL, warm_run, &w[i]) == 0;
    }
    for (int i = 0; i < WARM_THREADS; i++)
        if (started[i]) pthread_join(t[i], NULL);
}

/* Apply every entry of sub-database db after `after` in txn to the heads (and mark their chunks dirty). */
static int replay(store *s, MDB_txn *txn, int db, uint64_t after, uint64_t *last)
{
    st_plog *p = s->plog;
    MDB_cursor *c;
    *last = after;
    if (s->absent[db]) return 0;
    int rc = mdb_cursor_open(txn, s->dbi[db], &c);
    if (rc) return rc;
    unsigned char kb[8];
    MDB_val k = seq_key(kb, after + 1), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        plog_entry en;
        if (k.mv_size != 8 || !st_plog_decode(ms_get_be64(k.mv_data), &v, &en)) {
            rc = MDB_CORRUPTED;
            break;
        }
        uint64_t seq = en.seq, number = en.number;
        if ((number >> CHUNK_BITS) >= TOP) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (head_get(p, number) < seq) head_set(p, number, seq);
        if (!s->read_only) mark_dirty(p, number, seq);
        *last = seq;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

ms_code st_plog_open(store *s, uint64_t lag, uint32_t per_commit, ms_err *e)
{
    st_plog *p = ms_calloc(1, sizeof *p);
    p->dirty = ms_calloc(TOP, sizeof *p->dirty);
    p->lag = lag ? lag : DEFAULT_LAG;
    p->per_commit = per_commit && per_commit < CHUNKS_PER_COMMIT ? per_commit : CHUNKS_PER_COMMIT;
    pthread_mutex_init(&p->catch_up, NULL);
    s->plog = p;
    if (s->absent[DB_PLOG]) {
        p->next = 1;
        return MS_OK;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    uint64_t floor = 0;
    rc = st_meta_get_u64(txn, s->dbi[DB_META], META_FLOOR, &floor);
    double t = ms_mono_s();
    MDB_cursor *c = NULL;
    if (!rc) rc = mdb_cursor_open(txn, s->dbi[DB_PHEAD], &c);
    MDB_val k, v;
    if (!rc)
        for (int w = mdb_cursor_get(c, &k, &v, MDB_FIRST); w == 0; w = mdb_cursor_get(c, &k, &v, MDB_NEXT))
            will_need(v.mv_data, v.mv_size);
    for (rc = rc ? rc : mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint64_t ci = k.mv_size == 8 ? ms_get_be64(k.mv_data) : TOP;
        if (ci >= TOP || v.mv_size != 8 + 8 * CHUNK) {
            rc = MDB_CORRUPTED;
            break;
        }
        const char *h = (const char *)v.mv_data + 8;
        for (uint32_t i = 0; i < CHUNK; i++) {
            uint64_t seq = ms_get_be64(h + 8 * i);
            if (seq) head_set(p, (ci << CHUNK_BITS) | i, seq);
        }
        s->opened.head_chunks++;
    }
    if (c) mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) rc = 0;
    s->opened.heads_s = ms_mono_s() - t;
    t = ms_mono_s();
    uint64_t last = 0, from = floor ? floor - 1 : 0;
    /* (the entries after the floor are all in plog: the compaction moves only entries before it) */
    if (!rc) warm_replay(s, txn, from);
    if (!rc) rc = replay(s, txn, DB_PLOG, from, &last);
    s->opened.replay_s = ms_mono_s() - t;
    s->opened.replayed = last > from ? last - from : 0;
    mdb_txn_abort(txn);
    if (rc) return st_mdb_fail(e, rc, "patient log: recovery");
    p->next = last + 1 > floor ? last + 1 : floor ? floor : 1;
    p->loaded_end = last;
    atomic_store_explicit(&p->applied, p->next - 1, memory_order_release);
    return MS_OK;
}

void st_plog_catch_up(store_read *r)
{
    st_plog *p = r->s->plog;
    if (!r->s->read_only || r->s->absent[DB_PLOG]) return;
    uint64_t end = st_plog_end(r);
    pthread_mutex_lock(&p->catch_up);
    uint64_t last, moved;
    /* the compaction may have moved entries this store has not applied yet: those of the compacted part too */
    if (end > p->loaded_end && replay(r->s, r->txn, DB_PLOG, p->loaded_end, &last) == 0 &&
        replay(r->s, r->txn, DB_PLOGC, p->loaded_end, &moved) == 0)
        p->loaded_end = last > moved ? last : moved;
    pthread_mutex_unlock(&p->catch_up);
}

void st_plog_close(store *s)
{
    st_plog *p = s->plog;
    if (!p) return;
    for (size_t c = 0; c < p->nchunks; c++)
        free((void *)atomic_load_explicit(&p->chunk[c], memory_order_relaxed));
    free(p->dirty);
    pthread_mutex_destroy(&p->catch_up);
    free(p);
    s->plog = NULL;
}

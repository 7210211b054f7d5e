/*
 * identities.c - patients by identity: the identity sub-database (patient number -> patient id, identity
 * MAC, identity key sealed under the patient's data key) and the in-memory identity index over it
 * (identity_index.h), which together answer "which patient is this normalized name + date of birth?".
 *
 * DESIGN: new patients get the next number, so their identity entries are appended (never inserted at a
 * random page); lookups go through the in-memory index of hashes of identity MACs (HMAC-SHA256 under a
 * key of the store: no name or date of birth is kept in the clear, so an erased patient's entry in a
 * page LMDB has freed holds nothing readable), rebuilt from the sub-database when the store opens, and
 * every hit is confirmed against the stored MAC in the caller's transaction. An insert goes into the
 * index at once (the writer's later lookups in the same transaction must find it) and is remembered on
 * the store_write, so that a transaction that does not commit takes it back. Entries written before data
 * keys hold the identity key in plain (README.md's layout); they read the same and are replaced by the
 * sealed form when their patient gets a key (store_patient_key_bind).
 *
 * Contract: store.h ("Identities"). Must never: let a hash hit stand without comparing the stored MAC
 * (a collision must not merge two people), leave an uncommitted identity in the index, write an identity
 * key unsealed.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"
#include "base/log.h"
#include "store/seal.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The MAC an entry stands for (legacy entries: computed from the plain key). */
static void entry_mac(store *s, const ident_entry *ie, unsigned char mac[32])
{
    if (ie->legacy)
        store_identity_mac(s, ie->key, ie->key_len, mac);
    else
        memcpy(mac, ie->mac, 32);
}

static ms_code ident_entry_get(store *st, MDB_txn *txn, uint64_t number, ident_entry *ie, bool *found, ms_err *e);

/* meta "erasing:" be64(number): an erasure committed whose slot may not be overwritten yet (keys.c). The
 * erasure's transaction writes it; a commit after the overwrite deletes it (st_erase_marks_delete); an open
 * overwrites the slot of every one left (a crash or a failed write in between). */
#define ERASE_MARK "erasing:"

static MDB_val erase_mark_key(unsigned char kb[16], uint64_t number)
{
    memcpy(kb, ERASE_MARK, 8);
    ms_set_be64(kb + 8, number);
    return st_val(kb, 16);
}

int st_erase_marks_delete(store_write *w, const uint64_t *numbers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char kb[16];
        MDB_val k = erase_mark_key(kb, numbers[i]);
        int rc = mdb_del(w->txn, w->s->dbi[DB_META], &k, NULL);
        if (rc && rc != MDB_NOTFOUND) return rc;
    }
    return 0;
}

static ms_code erase_marks_read(store *s, uint64_t **out, size_t *n, ms_err *e)
{
    MDB_txn *txn;
    MDB_cursor *c;
    *out = NULL;
    *n = 0;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_META], &c))) {
        mdb_txn_abort(txn);
        return st_mdb_fail(e, rc, "cursor");
    }
    size_t cap = 0;
    MDB_val k = st_val(ERASE_MARK, 8), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || memcmp(k.mv_data, ERASE_MARK, 8) != 0) break;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = ms_realloc(*out, sizeof **out * cap);
        }
        (*out)[(*n)++] = ms_get_be64((const unsigned char *)k.mv_data + 8);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return rc == 0 || rc == MDB_NOTFOUND ? MS_OK : st_mdb_fail(e, rc, "erasure marks");
}

/* The index comes from the key file's slots when they account for every patient (keys.c, "Why the hashes
 * live here"); otherwise it is rebuilt by IDENT_LOAD_THREADS threads, each scanning its own range of
 * patient numbers in its own read transaction, which also write each entry's hash into its slot and mark
 * its number in a bitmap (the slots of numbers without an entry are cleared after). On a large store the
 * identity tree's pages lie among the other trees' and a cold scan reads them one page fault at a time
 * (the map is MDB_NORDAHEAD): several scans keep several reads in flight, and a warm scan is CPU work
 * (decode, hash, insert) that two cores share. */
#define IDENT_LOAD_THREADS 8

typedef struct {
    store *s;
    uint64_t from, last; /* the part's patient numbers, inclusive */
    uint64_t *erased;    /* numbers of erased entries found */
    size_t nerased;
    _Atomic uint64_t *listed; /* a bit per patient number: an entry was found */
    bool slots_failed;        /* a slot could not be written (slot_err; the index is still whole) */
    ms_err err, slot_err;
    ms_code rc;
} ident_part;

static void part_put(ident_part *pt, const identity_hash *hashes, const uint64_t *numbers, size_t n)
{
    identity_index_put_many(pt->s->identities, hashes, numbers, n);
    if (!pt->slots_failed) pt->slots_failed = st_slots_hash(pt->s, numbers, hashes, n, &pt->slot_err) != MS_OK;
}

static void *ident_load_part(void *arg)
{
    ident_part *pt = arg;
    store *s = pt->s;
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        pt->rc = st_mdb_fail(&pt->err, rc, "begin read");
        return NULL;
    }
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_IDENT], &c))) {
        mdb_txn_abort(txn);
        pt->rc = st_mdb_fail(&pt->err, rc, "cursor");
        return NULL;
    }
    enum { BATCH = 256 };
    identity_hash hashes[BATCH];
    uint64_t numbers[BATCH];
    size_t n = 0, cap = 0;
    unsigned char kb[8];
    ms_set_be64(kb, pt->from);
    MDB_val k = st_val(kb, 8), v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ident_entry ie;
        if (k.mv_size != 8 || !st_ident_decode(&v, &ie)) {
            pt->rc = ms_fail(&pt->err, MS_ECORRUPT, "store: bad identity entry");
            break;
        }
        uint64_t number = ms_get_be64(k.mv_data);
        if (number > pt->last) break;
        if (number < s->patients) atomic_fetch_or(&pt->listed[number / 64], (uint64_t)1 << (number % 64));
        if (ie.erased) {
            if (pt->nerased == cap) {
                cap = cap ? cap * 2 : 64;
                pt->erased = ms_realloc(pt->erased, sizeof *pt->erased * cap);
            }
            pt->erased[pt->nerased++] = number;
            continue;
        }
        unsigned char mac[32];
        entry_mac(s, &ie, mac);
        hashes[n] = identity_hash_of((const char *)mac, 32);
        numbers[n++] = number;
        if (n == BATCH) {
            part_put(pt, hashes, numbers, n);
            n = 0;
        }
    }
    part_put(pt, hashes, numbers, n);
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (pt->rc == MS_OK && rc != 0 && rc != MDB_NOTFOUND) pt->rc = st_mdb_fail(&pt->err, rc, "identity scan");
    return NULL;
}

/* A cursor over the identity tree in a read transaction of its own (close the cursor, abort the txn). */
static ms_code ident_read_cursor(store *s, MDB_txn **txn, MDB_cursor **c, ms_err *e)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    if ((rc = mdb_cursor_open(*txn, s->dbi[DB_IDENT], c))) {
        mdb_txn_abort(*txn);
        return st_mdb_fail(e, rc, "cursor");
    }
    return MS_OK;
}

/* The first and last patient numbers of the identity tree (*any false: it is empty). */
static ms_code ident_bounds(store *s, uint64_t *first, uint64_t *last, bool *any, ms_err *e)
{
    MDB_txn *txn;
    MDB_cursor *c;
    *any = false;
    ms_code opened = ident_read_cursor(s, &txn, &c, e);
    if (opened != MS_OK) return opened;
    int rc;
    MDB_val k, v;
    ms_code out = MS_OK;
    if ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0 && k.mv_size == 8) {
        *first = ms_get_be64(k.mv_data);
        if ((rc = mdb_cursor_get(c, &k, &v, MDB_LAST)) == 0 && k.mv_size == 8) {
            *last = ms_get_be64(k.mv_data);
            *any = true;
        }
    }
    if (rc == 0 && !*any) out = ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
    if (rc != 0 && rc != MDB_NOTFOUND) out = st_mdb_fail(e, rc, "identity scan");
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return out;
}

ms_code st_ident_last_keyed(store *s, uint64_t *number, bool *any, ms_err *e)
{
    MDB_txn *txn;
    MDB_cursor *c;
    *any = false;
    ms_code opened = ident_read_cursor(s, &txn, &c, e);
    if (opened != MS_OK) return opened;
    MDB_val k, v;
    ms_code out = MS_OK;
    /* from the newest entry back past erased ones (whose entries keep no key), a bounded walk */
    int rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    for (int steps = 0; rc == 0 && steps < 4096; steps++, rc = mdb_cursor_get(c, &k, &v, MDB_PREV)) {
        ident_entry ie;
        if (k.mv_size != 8 || !st_ident_decode(&v, &ie)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
            break;
        }
        if (ie.erased) continue;
        if (!ie.legacy) {
            *number = ms_get_be64(k.mv_data);
            *any = true;
        }
        break; /* a legacy entry: patients from before data keys, none of them needs a slot */
    }
    if (out == MS_OK && rc != 0 && rc != MDB_NOTFOUND) out = st_mdb_fail(e, rc, "identity scan");
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return out;
}

/* The index from LMDB's identity entries, and the key file's slots made to match them. */
static ms_code load_by_scan(store *s, ms_err *e)
{
    uint64_t first = 0, last = 0;
    bool any;
    ms_code out = ident_bounds(s, &first, &last, &any, e);
    if (out != MS_OK) return out;
    _Atomic uint64_t *listed = ms_calloc(s->patients / 64 + 1, sizeof *listed);
    /* equal ranges of numbers: numbers are dense (a count) on a single node; a cluster node's are its
     * shards' (spread, but evenly) */
    uint64_t span = last - first, nparts = any ? IDENT_LOAD_THREADS : 0;
    if (span < nparts) nparts = 1;
    ident_part parts[IDENT_LOAD_THREADS];
    pthread_t threads[IDENT_LOAD_THREADS];
    bool started[IDENT_LOAD_THREADS] = {0}, slots_failed = false;
    ms_err se = {0};
    for (uint64_t i = 0; i < nparts; i++) {
        parts[i] = (ident_part){.s = s, .listed = listed, .rc = MS_OK};
        parts[i].from = first + span / nparts * i;
        parts[i].last = i + 1 == nparts ? last : first + span / nparts * (i + 1) - 1;
    }
    for (uint64_t i = 1; i < nparts; i++) /* (one that cannot start is scanned on this thread) */
        started[i] = pthread_create(&threads[i], NULL, ident_load_part, &parts[i]) == 0;
    if (nparts) ident_load_part(&parts[0]);
    uint64_t *erased = NULL;
    size_t nerased = 0;
    for (uint64_t i = 0; i < nparts; i++) {
        if (i > 0 && started[i])
            pthread_join(threads[i], NULL);
        else if (i > 0)
            ident_load_part(&parts[i]);
        if (parts[i].rc != MS_OK && out == MS_OK) {
            *e = parts[i].err;
            out = parts[i].rc;
        }
        if (parts[i].slots_failed && !slots_failed) se = parts[i].slot_err;
        slots_failed |= parts[i].slots_failed;
        erased = ms_realloc(erased, sizeof *erased * (nerased + parts[i].nerased + 1));
        if (parts[i].nerased) memcpy(erased + nerased, parts[i].erased, sizeof *erased * parts[i].nerased);
        nerased += parts[i].nerased;
        free(parts[i].erased);
    }
    if (out == MS_OK) out = st_keys_erased(s, erased, nerased, e);
    free(erased);
    if (out == MS_OK && (slots_failed || st_slots_clear_unlisted(s, (const uint64_t *)listed, &se) != MS_OK ||
                         st_keys_set_verified(s, &se) != MS_OK))
        ms_log(LOG_WARN, "store", "the key file's identity hashes not written whole (the next start scans again): %s",
               se.msg);
    free((void *)listed);
    return out;
}

/* The index from the key file's slots, if they account for every patient created and a sample of them
 * agrees with LMDB (false: they do not, and the index is left empty). */
static ms_code load_from_slots(store *s, bool *loaded, ms_err *e)
{
    *loaded = false;
    if (!st_keys_verified(s)) return MS_OK;
    st_slot_counts c;
    ms_code rc = st_keys_index_load(s, s->identities, &c, e);
    const char *why = NULL;
    if (rc == MS_OK && c.hashed + c.erased != s->created) why = "they do not account for every patient created";
    MDB_txn *txn = NULL;
    int mrc = rc == MS_OK && !why ? mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) : 0;
    if (mrc) rc = st_mdb_fail(e, mrc, "begin read");
    for (size_t i = 0; txn && !why && i < c.nsample; i++) {
        ident_entry ie;
        bool have;
        unsigned char mac[32];
        if ((rc = ident_entry_get(s, txn, c.sample[i], &ie, &have, e)) != MS_OK) break;
        bool agrees = have && !ie.erased;
        if (agrees) {
            entry_mac(s, &ie, mac);
            identity_hash h = identity_hash_of((const char *)mac, 32);
            agrees = h.lo == c.sample_hash[i].lo && h.hi == c.sample_hash[i].hi;
        }
        if (!agrees) why = "a sampled slot disagrees with its identity entry";
    }
    if (txn) mdb_txn_abort(txn);
    *loaded = rc == MS_OK && !why;
    if (*loaded) return MS_OK;
    identity_index_free(s->identities); /* what was loaded goes: the scan starts from an empty index */
    s->identities = identity_index_new(s->patients);
    if (why)
        ms_log(LOG_WARN, "store",
               "identity index: not from the key file's slots (%s: %llu hashed, %llu erased, %llu created); "
               "scanning the identity entries",
               why, (unsigned long long)c.hashed, (unsigned long long)c.erased, (unsigned long long)s->created);
    return rc;
}

ms_code st_identities_load(store *s, ms_err *e)
{
    s->identities = identity_index_new(s->patients);
    uint64_t *marked = NULL;
    size_t nmarked = 0;
    bool loaded = false;
    ms_code rc = st_keys_cut(s, e);
    if (rc == MS_OK) rc = erase_marks_read(s, &marked, &nmarked, e);
    if (rc == MS_OK) rc = st_keys_erased(s, marked, nmarked, e); /* a crash before the overwrite */
    for (size_t i = 0; rc == MS_OK && i < nmarked; i++)
        st_keys_erase_done(s, marked[i]); /* the next commit deletes the marks */
    free(marked);
    if (rc == MS_OK) rc = load_from_slots(s, &loaded, e);
    if (rc == MS_OK && !loaded) rc = load_by_scan(s, e);
    s->opened.identities_from_slots = loaded;
    return rc;
}

void st_identities_undo(store_write *w)
{
    for (size_t i = 0; i < w->ninserted; i++)
        identity_index_remove(w->s->identities, w->inserted[i]);
}

/* The identity entry of patient number n as txn sees it (*found false: none). */
static ms_code ident_entry_get(store *st, MDB_txn *txn, uint64_t number, ident_entry *ie, bool *found, ms_err *e)
{
    unsigned char kb[8];
    ms_set_be64(kb, number);
    MDB_val k = st_val(kb, 8), v;
    *found = false;
    int rc = mdb_get(txn, st->dbi[DB_IDENT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_mdb_fail(e, rc, "identity lookup");
    if (!st_ident_decode(&v, ie)) return ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
    *found = true;
    return MS_OK;
}

/* The patient with this identity MAC as seen by txn: the index proposes a number, the identity
 * sub-database confirms that the number's MAC is this MAC (and that txn can see it). */
static ms_code ident_find(store *st, MDB_txn *txn, const unsigned char mac[32], patient_ref *p, bool *found, ms_err *e)
{
    *found = false;
    if (!identity_index_get(st->identities, identity_hash_of((const char *)mac, 32), &p->number)) return MS_OK;
    ident_entry ie;
    bool have;
    ms_code rc = ident_entry_get(st, txn, p->number, &ie, &have, e);
    if (rc != MS_OK || !have || ie.erased) return rc; /* not committed yet, as far as txn can see */
    unsigned char stored[32];
    entry_mac(st, &ie, stored);
    if (CRYPTO_memcmp(stored, mac, 32) != 0)
        return ms_fail(e, MS_ECONFLICT, "store: identity hash collision (two identities share an XXH3-128 hash)");
    p->id = ie.pid;
    *found = true;
    return MS_OK;
}

ms_code store_ident_get(store_write *w, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e)
{
    unsigned char mac[32];
    store_identity_mac(w->s, key, len, mac);
    return store_ident_find(w, mac, p, found, e);
}

ms_code store_ident_find(store_write *w, const unsigned char mac[32], patient_ref *p, bool *found, ms_err *e)
{
    return ident_find(w->s, w->txn, mac, p, found, e);
}

/* Write patient p's identity entry in the sealed form: MAC, and the identity key under data_key. */
static ms_code ident_put_sealed(store_write *w, const patient_ref *p, const unsigned char mac[32], const char *key,
                                size_t len, const unsigned char data_key[SEAL_KEY], unsigned flags, ms_err *e)
{
    unsigned char kb[8], iv[SEAL_IV];
    ms_set_be64(kb, p->number);
    if (!seal_iv_fresh(iv)) return ms_fail(e, MS_EIO, "store: random number generator failed");
    buf v = {0};
    buf_put(&v, p->id.b, 16);
    buf_putc(&v, (char)IDENT_FORMAT_2);
    buf_putc(&v, 0);
    buf_put(&v, mac, 32);
    buf_reserve(&v, len + SEAL_OVERHEAD);
    bool ok = seal_record(data_key, iv, key, len, (unsigned char *)v.data + v.len);
    v.len += len + SEAL_OVERHEAD;
    MDB_val k = st_val(kb, 8), mv = st_val(v.data, v.len);
    int rc = ok ? mdb_put(w->txn, w->s->dbi[DB_IDENT], &k, &mv, flags) : 0;
    buf_free(&v);
    if (!ok) return ms_fail(e, MS_EIO, "store: sealing an identity failed");
    return rc ? st_mdb_fail(e, rc, "identity insert") : MS_OK;
}

/* Remember that w wrote the pending key of mac into a slot: it leaves pending after the commit. */
static void bound_add(store_write *w, const unsigned char mac[32])
{
    if (w->nbound == w->capbound) {
        w->capbound = w->capbound ? w->capbound * 2 : 64;
        w->bound = ms_realloc(w->bound, sizeof *w->bound * w->capbound);
    }
    memcpy(w->bound[w->nbound++], mac, 32);
}

/* A new identity into the in-memory index at once (w's later lookups find it), taken back if w aborts;
 * the patient count grows by one. */
static void index_insert(store_write *w, identity_hash h, uint64_t number)
{
    identity_index_put(w->s->identities, h, number);
    if (w->ninserted == w->capinserted) {
        w->capinserted = w->capinserted ? w->capinserted * 2 : 256;
        w->inserted = ms_realloc(w->inserted, sizeof *w->inserted * w->capinserted);
    }
    w->inserted[w->ninserted++] = h;
    if (number >= w->patients) w->patients = number + 1;
    w->created++;
}

/* A new patient numbered number (UINT64_MAX: the next one) for this identity key. */
ms_code store_patient_create_mac(store_write *w, const char *key, size_t len, const unsigned char mac[32],
                                 const unsigned char data_key[32], uint64_t number, patient_ref *p, bool *bound,
                                 ms_err *e)
{
    *bound = st_key_pending_is(w->s, mac, data_key); /* a key that never belonged to anyone else */
    if (!*bound) return MS_OK;
    p->number = number == UINT64_MAX ? w->patients : number; /* a single store's numbers are 0 .. count-1 */
    patient_id_from_number(&w->s->pid_key, p->number, &p->id);
    ms_code rc = ident_put_sealed(w, p, mac, key, len, data_key, MDB_NOOVERWRITE, e); /* numbers grow: an append */
    if (rc == MS_OK && number != UINT64_MAX) rc = store_cluster_id_put(w, mac, number, e);
    identity_hash h = identity_hash_of((const char *)mac, 32);
    if (rc == MS_OK) rc = st_key_put(w->s, p->number, data_key, h, e);
    if (rc != MS_OK) return rc;
    bound_add(w, mac);
    index_insert(w, h, p->number);
    return MS_OK;
}

ms_code store_patient_create(store_write *w, const char *key, size_t len, const unsigned char data_key[32],
                             patient_ref *p, bool *bound, ms_err *e)
{
    unsigned char mac[32];
    store_identity_mac(w->s, key, len, mac);
    return store_patient_create_mac(w, key, len, mac, data_key, UINT64_MAX, p, bound, e);
}

/* ---- a cluster's identities (shard.h): what the changelog taught this store ---- */

ms_code store_cluster_id_put(store_write *w, const unsigned char mac[32], uint64_t number, ms_err *e)
{
    unsigned char nb[8];
    ms_set_be64(nb, number);
    MDB_val k = st_val(mac, 32), v = st_val(nb, 8), have;
    int rc = mdb_get(w->txn, w->s->dbi[DB_CLUSTER], &k, &have);
    if (rc == 0) {
        if (have.mv_size == 8 && ms_get_be64(have.mv_data) == number) return MS_OK;
        return ms_fail(e, MS_ECONFLICT, "store: an identity of the cluster has patient number %llu here, not %llu",
                       have.mv_size == 8 ? (unsigned long long)ms_get_be64(have.mv_data) : 0ULL,
                       (unsigned long long)number);
    }
    if (rc != MDB_NOTFOUND || (rc = mdb_put(w->txn, w->s->dbi[DB_CLUSTER], &k, &v, 0)))
        return st_mdb_fail(e, rc, "cluster identity");
    return MS_OK;
}

ms_code store_cluster_ids_each(store *s, store_cluster_id_fn fn, void *ctx, ms_err *e)
{
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    if (s->absent[DB_CLUSTER]) {
        mdb_txn_abort(txn);
        return MS_OK;
    }
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_CLUSTER], &c))) {
        mdb_txn_abort(txn);
        return st_mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    ms_code out = MS_OK;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 32 || v.mv_size != 8) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad cluster identity entry");
            break;
        }
        fn(ctx, k.mv_data, ms_get_be64(v.mv_data));
    }
    if (out == MS_OK && rc != MDB_NOTFOUND) out = st_mdb_fail(e, rc, "cluster identities");
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    return out;
}

ms_code store_ident_put(store_write *w, const char *key, size_t len, const patient_ref *p, ms_err *e)
{
    unsigned char kb[8], mac[32];
    ms_set_be64(kb, p->number);
    buf v = {0};
    st_ident_encode_plain(&v, &p->id, key, len);
    MDB_val k = st_val(kb, 8), mv = st_val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_IDENT], &k, &mv, MDB_NOOVERWRITE);
    buf_free(&v);
    if (rc) return st_mdb_fail(e, rc, "identity insert");
    store_identity_mac(w->s, key, len, mac);
    identity_hash h = identity_hash_of((const char *)mac, 32);
    ms_code code = st_slots_hash(w->s, &p->number, &h, 1, e); /* no key yet: the hash alone */
    if (code != MS_OK) return code;
    index_insert(w, h, p->number);
    return MS_OK;
}

ms_code store_patient_key_bind(store_write *w, const patient_ref *p, const char *key, size_t len,
                               const unsigned char data_key[32], bool *bound, ms_err *e)
{
    unsigned char have[SEAL_KEY], mac[32];
    bool live;
    *bound = false;
    ms_code rc = st_key_get(w->s, p->number, have, &live, e);
    if (rc == MS_OK && live) *bound = CRYPTO_memcmp(have, data_key, SEAL_KEY) == 0;
    OPENSSL_cleanse(have, sizeof have);
    if (rc != MS_OK || live) return rc;
    /* a patient from before data keys: it takes this one, if it is a fresh one, and its entry is sealed */
    store_identity_mac(w->s, key, len, mac);
    if (!st_key_pending_is(w->s, mac, data_key)) return MS_OK;
    if ((rc = ident_put_sealed(w, p, mac, key, len, data_key, 0, e)) != MS_OK) return rc;
    if ((rc = st_key_put(w->s, p->number, data_key, identity_hash_of((const char *)mac, 32), e)) != MS_OK) return rc;
    bound_add(w, mac);
    *bound = true;
    return MS_OK;
}

ms_code store_ident_lookup(store_read *r, const char *key, size_t len, patient_id *pid, bool *found, ms_err *e)
{
    patient_ref p;
    unsigned char mac[32];
    store_identity_mac(r->s, key, len, mac);
    ms_code rc = ident_find(r->s, r->txn, mac, &p, found, e);
    if (rc == MS_OK && *found) *pid = p.id;
    return rc;
}

/* The identity entry of the patient with this id as r sees it (*have false: no such id or entry). */
static ms_code entry_of(store_read *r, const patient_id *pid, uint64_t *number, ident_entry *ie, bool *have, ms_err *e)
{
    *have = false;
    if (!store_patient_number(r->s, pid, number)) return MS_OK;
    return ident_entry_get(r->s, r->txn, *number, ie, have, e);
}

ms_code st_identity_key_of(store *s, MDB_txn *txn, uint64_t number, buf *key, bool *found, ms_err *e)
{
    ident_entry ie;
    bool have;
    *found = false;
    ms_code rc = ident_entry_get(s, txn, number, &ie, &have, e);
    if (rc != MS_OK || !have || ie.erased) return rc;
    key->len = 0;
    if (ie.legacy) {
        buf_put(key, ie.key, ie.key_len);
        *found = true;
        return MS_OK;
    }
    unsigned char dk[SEAL_KEY];
    if ((rc = st_key_get(s, number, dk, &have, e)) != MS_OK) return rc;
    if (!have) return MS_OK; /* erased meanwhile */
    buf_reserve(key, ie.key_len);
    bool ok = seal_open_record(dk, ie.sealed, ie.key_len, (unsigned char *)key->data);
    OPENSSL_cleanse(dk, sizeof dk);
    if (!ok) return ms_fail(e, MS_ECORRUPT, "store: a sealed identity does not open");
    key->len = ie.key_len;
    key->data[key->len] = 0;
    *found = true;
    return MS_OK;
}

ms_code store_patient_erased(store_read *r, const patient_id *pid, erase_mark *mark, bool *erased, ms_err *e)
{
    uint64_t number;
    ident_entry ie;
    bool have;
    *erased = false;
    ms_code rc = entry_of(r, pid, &number, &ie, &have, e);
    if (rc == MS_OK && have && ie.erased) {
        *erased = true;
        if (mark) *mark = (erase_mark){ie.erased_at, ie.erased_pos};
    }
    return rc;
}

ms_code st_ident_erase(store_write *w, uint64_t number, const patient_id *pid, bool *was_live, ms_err *e)
{
    ident_entry ie;
    bool have;
    *was_live = false;
    ms_code rc = ident_entry_get(w->s, w->txn, number, &ie, &have, e);
    if (rc != MS_OK || !have || ie.erased) return rc;
    unsigned char mac[32];
    entry_mac(w->s, &ie, mac);
    unsigned char kb[8], v[66] = {0};
    ms_set_be64(kb, number);
    memcpy(v, pid->b, 16);
    v[16] = IDENT_FORMAT_2;
    v[17] = IDENT_ERASED;
    ms_set_be64(v + 50, (uint64_t)w->now);     /* (no MAC: nothing of the identity is left) */
    ms_set_be64(v + 58, w->s->commit_pos + 1); /* the position this commit gets (store_write_commit) */
    MDB_val k = st_val(kb, 8), mv = st_val(v, sizeof v);
    int mrc = mdb_put(w->txn, w->s->dbi[DB_IDENT], &k, &mv, 0);
    unsigned char mb[16];
    MDB_val mk = erase_mark_key(mb, number), empty = {0, NULL};
    if (!mrc) mrc = mdb_put(w->txn, w->s->dbi[DB_META], &mk, &empty, 0);
    if (mrc) return st_mdb_fail(e, mrc, "identity erase");
    if (w->nerased == w->caperased) {
        w->caperased = w->caperased ? w->caperased * 2 : 4;
        w->erased = ms_realloc(w->erased, sizeof *w->erased * w->caperased);
    }
    w->erased[w->nerased++] = (struct st_erased){number, identity_hash_of((const char *)mac, 32)};
    *was_live = true;
    return MS_OK;
}

bool st_write_erased(const store_write *w, uint64_t number)
{
    for (size_t i = 0; i < w->nerased; i++)
        if (w->erased[i].number == number) return true;
    return false;
}

ms_code store_identity_key(store_read *r, const patient_id *pid, buf *key, bool *found, ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    return st_identity_key_of(r->s, r->txn, number, key, found, e);
}

ms_code store_write_identity_key(store_write *w, const patient_ref *p, buf *key, bool *found, ms_err *e)
{
    return st_identity_key_of(w->s, w->txn, p->number, key, found, e);
}

/* ---- patient ids: a keyed permutation of patient numbers (identity.h) ---- */

const unsigned char *store_id_key(const store *s) { return s->id_key; }

const unsigned char *store_deid_key(const store *s) { return s->deid_key; }

void store_patient_id(const store *s, uint64_t n, patient_id *id) { patient_id_from_number(&s->pid_key, n, id); }

bool store_patient_number(const store *s, const patient_id *id, uint64_t *n)
{
    return patient_id_to_number(&s->pid_key, id, n);
}

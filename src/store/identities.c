/*
 * identities.c - patients by identity: the identity sub-database (patient number -> patient id +
 * identity key) and the in-memory identity index over it (identity_index.h), which together answer
 * "which patient is this normalized name + date of birth?".
 *
 * DESIGN: new patients get the next number, so their identity entries are appended (never inserted at a
 * random page); lookups go through the in-memory index of XXH3-128 hashes, rebuilt from the sub-database
 * when the store opens, and every hit is confirmed against the stored key in the caller's transaction.
 * An insert goes into the index at once (the writer's later lookups in the same transaction must find
 * it) and is remembered on the store_write, so that a transaction that does not commit takes it back.
 *
 * Contract: store.h ("Identities"). Must never: let a hash hit stand without comparing the stored key
 * (a collision must not merge two people), leave an uncommitted identity in the index.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <string.h>

ms_code st_identities_load(store *s, ms_err *e)
{
    s->identities = identity_index_new(s->patients);
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin read");
    if ((rc = mdb_cursor_open(txn, s->dbi[DB_IDENT], &c))) {
        mdb_txn_abort(txn);
        return st_mdb_fail(e, rc, "cursor");
    }
    MDB_val k, v;
    ms_code out = MS_OK;
    enum { BATCH = 256 };
    identity_hash hashes[BATCH];
    uint64_t numbers[BATCH];
    size_t n = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        patient_ref p;
        const char *key;
        size_t key_len;
        if (k.mv_size != 8 || !st_ident_decode(&v, &p, &key, &key_len)) {
            out = ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
            break;
        }
        hashes[n] = identity_hash_of(key, key_len);
        numbers[n++] = ms_get_be64(k.mv_data);
        if (n == BATCH) {
            identity_index_put_many(s->identities, hashes, numbers, n);
            n = 0;
        }
    }
    identity_index_put_many(s->identities, hashes, numbers, n);
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (out == MS_OK && rc != MDB_NOTFOUND) out = st_mdb_fail(e, rc, "identity scan");
    return out;
}

void st_identities_undo(store_write *w)
{
    for (size_t i = 0; i < w->ninserted; i++)
        identity_index_remove(w->s->identities, w->inserted[i]);
}

/* The patient with this identity key as seen by txn: the index proposes a number, the identity
 * sub-database confirms that the number's key is this key (and that txn can see it). */
static ms_code ident_find(store *st, MDB_txn *txn, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e)
{
    *found = false;
    if (!identity_index_get(st->identities, identity_hash_of(key, len), &p->number)) return MS_OK;
    unsigned char kb[8];
    ms_set_be64(kb, p->number);
    MDB_val k = st_val(kb, 8), v;
    int rc = mdb_get(txn, st->dbi[DB_IDENT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK; /* not committed yet, as far as txn can see */
    if (rc) return st_mdb_fail(e, rc, "identity lookup");
    const char *stored;
    size_t stored_len;
    if (!st_ident_decode(&v, p, &stored, &stored_len)) return ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
    if (stored_len != len || memcmp(stored, key, len) != 0)
        return ms_fail(e, MS_ECONFLICT, "store: identity hash collision (two identities share an XXH3-128 hash)");
    *found = true;
    return MS_OK;
}

ms_code store_ident_get(store_write *w, const char *key, size_t len, patient_ref *p, bool *found, ms_err *e)
{
    return ident_find(w->s, w->txn, key, len, p, found, e);
}

ms_code store_patient_create(store_write *w, const char *key, size_t len, patient_ref *p, ms_err *e)
{
    p->number = w->patients; /* numbers are 0 .. count-1 */
    patient_id_from_number(&w->s->pid_key, p->number, &p->id);
    return store_ident_put(w, key, len, p, e);
}

ms_code store_ident_put(store_write *w, const char *key, size_t len, const patient_ref *p, ms_err *e)
{
    unsigned char kb[8];
    ms_set_be64(kb, p->number);
    buf v = {0};
    st_ident_encode(&v, &p->id, key, len);
    MDB_val k = st_val(kb, 8), mv = st_val(v.data, v.len);
    int rc = mdb_put(w->txn, w->s->dbi[DB_IDENT], &k, &mv, MDB_NOOVERWRITE); /* numbers grow: an append */
    buf_free(&v);
    if (rc) return st_mdb_fail(e, rc, "identity insert");
    identity_hash h = identity_hash_of(key, len);
    identity_index_put(w->s->identities, h, p->number);
    if (w->ninserted == w->capinserted) {
        w->capinserted = w->capinserted ? w->capinserted * 2 : 256;
        w->inserted = ms_realloc(w->inserted, sizeof *w->inserted * w->capinserted);
    }
    w->inserted[w->ninserted++] = h;
    w->patients++;
    return MS_OK;
}

ms_code store_ident_lookup(store_read *r, const char *key, size_t len, patient_id *pid, bool *found, ms_err *e)
{
    patient_ref p;
    ms_code rc = ident_find(r->s, r->txn, key, len, &p, found, e);
    if (rc == MS_OK && *found) *pid = p.id;
    return rc;
}

/* The identity key stored for patient number in txn. */
static ms_code identity_key_of(store *s, MDB_txn *txn, uint64_t number, buf *key, bool *found, ms_err *e)
{
    unsigned char kb[8];
    ms_set_be64(kb, number);
    MDB_val k = st_val(kb, 8), v;
    int rc = mdb_get(txn, s->dbi[DB_IDENT], &k, &v);
    if (rc == MDB_NOTFOUND) return MS_OK;
    if (rc) return st_mdb_fail(e, rc, "identity lookup");
    patient_ref p;
    const char *ik;
    size_t il;
    if (!st_ident_decode(&v, &p, &ik, &il)) return ms_fail(e, MS_ECORRUPT, "store: bad identity entry");
    key->len = 0;
    buf_put(key, ik, il);
    *found = true;
    return MS_OK;
}

ms_code store_identity_key(store_read *r, const patient_id *pid, buf *key, bool *found, ms_err *e)
{
    uint64_t number;
    *found = false;
    if (!store_patient_number(r->s, pid, &number)) return MS_OK;
    return identity_key_of(r->s, r->txn, number, key, found, e);
}

ms_code store_write_identity_key(store_write *w, const patient_ref *p, buf *key, bool *found, ms_err *e)
{
    *found = false;
    return identity_key_of(w->s, w->txn, p->number, key, found, e);
}

/* ---- patient ids: a keyed permutation of patient numbers (identity.h) ---- */

const unsigned char *store_id_key(const store *s) { return s->id_key; }

const unsigned char *store_deid_key(const store *s) { return s->deid_key; }

void store_patient_id(const store *s, uint64_t n, patient_id *id) { patient_id_from_number(&s->pid_key, n, id); }

bool store_patient_number(const store *s, const patient_id *id, uint64_t *n)
{
    return patient_id_to_number(&s->pid_key, id, n);
}

/*
 * bulk_load.c - preload: a store with no patients filled with many new patients at once (benchmark
 * set-up, a first migration of a patient index), written with sorted appends (MDB_APPEND) instead of
 * random inserts.
 *
 * DESIGN: two calls, each one LMDB transaction. store_bulk_patients writes one version 1 per patient
 * (the synthetic record's fields as the state, source "preload") and an empty public copy, after an
 * fdatasync of the segment log that holds the bodies (README.md's durability order, steps 1-3, for the
 * whole load). store_bulk_idents writes the identity entries and the patient count, fills the in-memory
 * identity index and writes each patient's identity hash into its slot of the key file (keys.c; synced
 * before the commit, as the writer's are). Patient numbers must be consecutive and new, so every put is an
 * append.
 *
 * Contract: store.h ("Bulk load"). Only on a store no other thread uses (medstream preload holds the data
 * directory's lock and runs nothing else). Must never: run beside live ingest: it bypasses the writer,
 * the commit log (the sinks never see preloaded patients) and the audit chain. Its bodies and identity
 * entries are not sealed (keys.c): a benchmark's synthetic patients, never real ones.
 */
#define MS_STORE_INTERNAL
#include "store/store_internal.h"

#include <stdlib.h>
#include <string.h>

ms_code store_bulk_patients(store *s, const bulk_patient *pts, const uint64_t *body_pos, size_t n, ms_err *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin");
    int64_t now = ms_now_us();
    if (now <= s->last_commit) now = s->last_commit + 1;
    uint32_t sv = st_meta_sv(txn, s->dbi[DB_META]); /* the public copies' schema version in force */
    buf k = {0}, v = {0};
    state_field fields[RECORD_MAX_FIELDS];
    for (size_t i = 0; i < n && !rc; i++) {
        const parsed_record *r = pts[i].record;
        uint32_t nf = 0;
        for (uint32_t j = 0; j < r->nfields; j++) {
            const record_field *f = &r->fields[j];
            if (f->key_len == 9 && memcmp(f->key, "record_id", 9) == 0) continue;
            fields[nf++] = (state_field){.key = f->key,
                                         .key_len = f->key_len,
                                         .pos = body_pos[i] + (uint64_t)(f->val - r->body),
                                         .len = f->val_len,
                                         .hash = f->hash,
                                         .ts = r->ts_us,
                                         .vf = now,
                                         .value = f->val};
        }
        patient_version pv = {.number = pts[i].number,
                              .version = 1,
                              .valid_from = now,
                              .valid_to = -1,
                              .cause_record = "",
                              .cause_record_len = 0,
                              .source = "preload",
                              .source_len = 7,
                              .fields = fields,
                              .nfields = nf};
        patient_id_from_number(&s->pid_key, pv.number, &pv.pid);
        unsigned char prefix[9];
        st_patient_prefix(prefix, pv.number, 'v');
        st_key_versioned(&k, prefix, 9, now, 1);
        st_patient_encode(&v, &pv);
        MDB_val mk = st_val(k.data, k.len), mv = st_val(v.data, v.len);
        rc = mdb_put(txn, s->dbi[DB_PATIENT], &mk, &mv, MDB_APPEND);
        if (rc) break;
        unsigned char pp[14];
        size_t ppl = st_public_patient_prefix(pp, sv, pv.number);
        st_key_versioned(&k, pp, ppl, now, 1);
        mk = st_val(k.data, k.len);
        mv = st_val("{}", 2);
        rc = mdb_put(txn, s->dbi[DB_PUBLIC], &mk, &mv, MDB_APPEND);
    }
    buf_free(&k);
    buf_free(&v);
    if (!rc) {
        ms_code c = seglog_sync(s->log, e); /* the bodies before the references to them */
        if (c != MS_OK) {
            mdb_txn_abort(txn);
            return c;
        }
    }
    if (!rc) rc = st_meta_put_u64(txn, s->dbi[DB_META], "log_end", seglog_end(s->log));
    if (!rc) rc = st_meta_put_u64(txn, s->dbi[DB_META], "last_commit", (uint64_t)now);
    if (!rc) {
        s->last_commit = now; /* still under the writer lock (invariant 4) */
        rc = mdb_txn_commit(txn);
    } else {
        mdb_txn_abort(txn);
    }
    if (rc) return st_mdb_fail(e, rc, "bulk patients (the store must have no patients)");
    return MS_OK;
}

ms_code store_bulk_idents(store *s, const bulk_ident *ids, size_t n, ms_err *e)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return st_mdb_fail(e, rc, "begin");
    buf v = {0};
    identity_hash *hashes = ms_malloc(sizeof *hashes * (n + 1));
    uint64_t *numbers = ms_malloc(sizeof *numbers * (n + 1));
    for (size_t i = 0; i < n && !rc; i++) {
        patient_id pid;
        patient_id_from_number(&s->pid_key, ids[i].number, &pid);
        unsigned char kb[8];
        ms_set_be64(kb, ids[i].number);
        st_ident_encode_plain(&v, &pid, ids[i].key, ids[i].key_len); /* unsealed, like bodies written here */
        MDB_val k = st_val(kb, 8), mv = st_val(v.data, v.len);
        rc = mdb_put(txn, s->dbi[DB_IDENT], &k, &mv, MDB_APPEND);
        unsigned char mac[32];
        store_identity_mac(s, ids[i].key, ids[i].key_len, mac);
        hashes[i] = identity_hash_of((const char *)mac, 32);
        numbers[i] = ids[i].number;
        if (!rc) identity_index_put(s->identities, hashes[i], ids[i].number);
    }
    buf_free(&v);
    ms_code code = rc ? MS_OK : st_slots_hash(s, numbers, hashes, n, e); /* no keys: the hashes alone */
    if (code == MS_OK && !rc) code = st_keys_sync(s, e);                 /* before the commit that counts them */
    free(hashes);
    free(numbers);
    if (code != MS_OK) {
        mdb_txn_abort(txn);
        return code;
    }
    uint64_t patients = 0;
    if (!rc) rc = st_meta_get_u64(txn, s->dbi[DB_META], "patients", &patients);
    if (!rc) rc = st_meta_put_u64(txn, s->dbi[DB_META], "patients", patients + n);
    if (!rc)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) return st_mdb_fail(e, rc, "bulk identities (numbers must be new and in order)");
    s->patients = patients + n;
    return MS_OK;
}

/*
 * test_identity_slots.c - the identity index loaded from the key file's slots (keys.c, "Why the hashes
 * live here"; identities.c): after patients with keys, patients without (an older store's, preload's) and
 * erasures, a reopen takes the index from the slots and finds every live identity and no erased one; an
 * erasure left half done is finished and its mark in meta goes at the next commit; and every way the
 * slots can be wrong makes the open scan LMDB instead, with the right answers, and repair the slots so
 * that the open after it takes them again: a slot an older build wrote (no hash), a wrong hash, a hash
 * left at a number no identity has, a backup's copy (possibly an erasure after its LMDB copy).
 */
#include "unit_store.h"

#include <fcntl.h>
#include <unistd.h>

#define SLOT 64

/* The identity key of person i: a normalized name, NUL, a date of birth. */
static size_t ident(int i, char *out)
{
    int n = snprintf(out, 64, "person %d", i);
    memcpy(out + n + 1, "1970-01-01", 10);
    return (size_t)n + 11;
}

static uint64_t patient_count(store *s)
{
    store_read *r = unit_rbegin(s);
    uint64_t n = store_patient_count(r);
    store_read_end(r);
    return n;
}

/* A new patient of person i: with a data key (as ingest makes them) or without (an older store's, preload's);
 * number UINT64_MAX: the next one, else that number (as a cluster's node gets them). */
static patient_ref make_patient(store *s, int i, bool keyed, uint64_t number)
{
    char k[64];
    size_t kl = ident(i, k);
    ms_err e;
    store_write *w;
    patient_ref p;
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    if (keyed) {
        unsigned char key[32], mac[32];
        bool bound;
        assert_int_equal(store_data_key(s, k, kl, key, &e), MS_OK);
        store_identity_mac(s, k, kl, mac);
        assert_int_equal(store_patient_create_mac(w, k, kl, mac, key, number, &p, &bound, &e), MS_OK);
        assert_true(bound);
    } else {
        p.number = number == UINT64_MAX ? patient_count(s) : number;
        store_patient_id(s, p.number, &p.id);
        assert_int_equal(store_ident_put(w, k, kl, &p, &e), MS_OK);
    }
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    return p;
}

static void erase(store *s, const patient_id *pid)
{
    ms_err e;
    store_write *w;
    erase_report rep;
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    assert_int_equal(store_patient_erase(w, pid, &rep, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
}

/* Person i's patient as the store's identity index and entries answer (found false: none). */
static bool lookup(store *s, int i, patient_id *pid)
{
    char k[64];
    size_t kl = ident(i, k);
    store_read *r = unit_rbegin(s);
    bool found = false;
    ms_err e;
    assert_int_equal(store_ident_lookup(r, k, kl, pid, &found, &e), MS_OK);
    store_read_end(r);
    return found;
}

static void reopen(unit_store *u)
{
    ms_err e;
    store_close(u->s);
    u->s = NULL;
    if (store_open(&u->s, u->dir, NULL, &e) != MS_OK) fail_msg("reopen: %s", e.msg);
}

static bool from_slots(const unit_store *u) { return store_open_time(u->s).identities_from_slots; }

static int keys_fd(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/keys", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    return fd;
}

static void slot_read(const char *dir, uint64_t n, unsigned char *slot)
{
    int fd = keys_fd(dir);
    memset(slot, 0, SLOT);
    assert_true(pread(fd, slot, SLOT, (off_t)((n + 1) * SLOT)) >= 0);
    close(fd);
}

static void slot_write(const char *dir, uint64_t n, const unsigned char *slot)
{
    int fd = keys_fd(dir);
    assert_int_equal(pwrite(fd, slot, SLOT, (off_t)((n + 1) * SLOT)), SLOT);
    close(fd);
}

/* The erasure marks left in meta (the store closed). */
static int erase_marks(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/lmdb", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *c;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, path, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
    int n = 0;
    MDB_val k = {8, "erasing:"}, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size >= 8 && memcmp(k.mv_data, "erasing:", 8) == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        n++;
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

enum { KEYED = 120, KEYLESS = 30, PEOPLE = KEYED + KEYLESS };

/* Persons 0 .. PEOPLE-1, the first KEYED with keys; every 7th erased. */
static void populate(unit_store *u, patient_ref *p)
{
    for (int i = 0; i < PEOPLE; i++)
        p[i] = make_patient(u->s, i, i < KEYED, UINT64_MAX);
    for (int i = 0; i < PEOPLE; i += 7)
        erase(u->s, &p[i].id);
}

/* A store of persons 0 .. PEOPLE-1 (populate), reopened: its index from the slots. */
static void open_populated(unit_store *u, patient_ref *p)
{
    assert_true(unit_store_open(u, NULL));
    populate(u, p);
    reopen(u);
    assert_true(from_slots(u));
}

/* Every live person finds their own patient, no erased one is found. */
static void check_people(store *s, const patient_ref *p)
{
    for (int i = 0; i < PEOPLE; i++) {
        patient_id got;
        bool found = lookup(s, i, &got);
        if (i % 7 == 0) {
            assert_false(found);
        } else {
            assert_true(found);
            assert_memory_equal(got.b, p[i].id.b, 16);
        }
    }
}

static void test_index_from_the_slots(void **state)
{
    (void)state;
    unit_store u;
    patient_ref p[PEOPLE];
    open_populated(&u, p);
    check_people(u.s, p);
    /* a new person gets the next number; an erased one coming back is a new patient */
    patient_ref q = make_patient(u.s, PEOPLE, true, UINT64_MAX);
    assert_int_equal(q.number, PEOPLE);
    patient_ref back = make_patient(u.s, 7, true, UINT64_MAX);
    assert_int_equal(back.number, PEOPLE + 1);
    reopen(&u);
    assert_true(from_slots(&u));
    patient_id got;
    assert_true(lookup(u.s, 7, &got));
    assert_memory_equal(got.b, back.id.b, 16);
    assert_true(lookup(u.s, PEOPLE, &got));
    assert_memory_equal(got.b, q.id.b, 16);
    unit_store_close(&u);
}

/* An erasure whose overwrite a crash cut short: its slot (key and hash) is back on disk. The open finds it
 * by the erasure's mark, overwrites it, leaves the identity out; the mark goes at the next commit. */
static void test_an_erasure_cut_short(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    patient_ref a = make_patient(u.s, 1, true, UINT64_MAX), b = make_patient(u.s, 2, true, UINT64_MAX);
    unsigned char before[SLOT], slot[SLOT], erased[SLOT] = {0, 'E'};
    slot_read(u.dir, a.number, before);
    assert_int_equal(before[0], 1);
    assert_int_equal(before[1], 'H');
    erase(u.s, &a.id);
    store_close(u.s);
    u.s = NULL;
    assert_int_equal(erase_marks(u.dir), 1); /* no commit after the overwrite yet */
    slot_write(u.dir, a.number, before);
    assert_int_equal(store_open(&u.s, u.dir, NULL, &(ms_err){0}), MS_OK);
    assert_true(from_slots(&u));
    slot_read(u.dir, a.number, slot);
    assert_memory_equal(slot, erased, SLOT);
    patient_id got;
    assert_false(lookup(u.s, 1, &got));
    assert_true(lookup(u.s, 2, &got));
    assert_memory_equal(got.b, b.id.b, 16);
    make_patient(u.s, 3, true, UINT64_MAX); /* a commit: the mark goes */
    store_close(u.s);
    u.s = NULL;
    assert_int_equal(erase_marks(u.dir), 0);
    unit_rmtree(u.dir);
}

/* Each way the slots can be wrong: the open scans (and answers right), repairs them, and the next open
 * takes them again. */
static void test_slots_not_trusted(void **state)
{
    (void)state;
    unit_store u;
    patient_ref p[PEOPLE];
    open_populated(&u, p);
    unsigned char slot[SLOT], again[SLOT];

    /* a slot an older build wrote: the key, no hash */
    store_close(u.s);
    u.s = NULL;
    slot_read(u.dir, p[10].number, slot);
    assert_int_equal(slot[1], 'H');
    memcpy(again, slot, SLOT);
    memset(slot + 1, 0, 7);
    memset(slot + 56, 0, 8);
    slot_write(u.dir, p[10].number, slot);
    reopen(&u);
    assert_false(from_slots(&u));
    check_people(u.s, p);
    slot_read(u.dir, p[10].number, slot);
    assert_memory_equal(slot, again, SLOT); /* repaired: the same bytes as before */
    reopen(&u);
    assert_true(from_slots(&u));

    /* a wrong hash (every slot is sampled in a store this small) */
    store_close(u.s);
    u.s = NULL;
    slot_read(u.dir, p[KEYED + 3].number, slot); /* one without a key */
    assert_int_equal(slot[0], 0);
    assert_int_equal(slot[1], 'H');
    slot[60] ^= 1;
    slot_write(u.dir, p[KEYED + 3].number, slot);
    reopen(&u);
    assert_false(from_slots(&u));
    check_people(u.s, p);
    reopen(&u);
    assert_true(from_slots(&u));

    /* a hash at a number no identity has (a transaction that did not commit, below the count: numbers as a
     * cluster's node gets them leave gaps) */
    uint64_t count = patient_count(u.s);
    patient_ref far = make_patient(u.s, 500, true, count + 10);
    store_close(u.s);
    u.s = NULL;
    slot_read(u.dir, p[1].number, slot);
    slot_write(u.dir, count + 4, slot);
    reopen(&u);
    assert_false(from_slots(&u));
    check_people(u.s, p);
    patient_id got;
    assert_true(lookup(u.s, 500, &got));
    assert_memory_equal(got.b, far.id.b, 16);
    unsigned char zero[SLOT] = {0};
    slot_read(u.dir, count + 4, slot);
    assert_memory_equal(slot, zero, SLOT); /* cleared */
    reopen(&u);
    assert_true(from_slots(&u));
    check_people(u.s, p);

    /* a backup's copy: scanned on its first open */
    unit_store copy;
    unit_tmpdir(copy.dir);
    rmdir(copy.dir);
    ms_err e;
    store_backup_info info;
    assert_int_equal(store_backup(u.s, copy.dir, &info, &e), MS_OK);
    assert_int_equal(store_open(&copy.s, copy.dir, NULL, &e), MS_OK);
    assert_false(from_slots(&copy));
    check_people(copy.s, p);
    reopen(&copy);
    assert_true(from_slots(&copy));
    unit_store_close(&copy);
    unit_store_close(&u);
}

/* preload's patients (store_bulk_idents, no keys) have their hashes in their slots too. Enough of them that
 * the key file is read in three pieces (65,536 slots of 64 bytes each, the first piece holding the header
 * too) and ends inside a 4 KiB block (O_DIRECT reads whole blocks): the patients on each side of every
 * boundary are found. */
static void test_preloaded_patients(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    enum { N = 140001 };
    static char keys[N][64];
    bulk_ident ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = (bulk_ident){.key = keys[i], .key_len = (uint32_t)ident(i, keys[i]), .number = (uint64_t)i};
    ms_err e;
    assert_int_equal(store_bulk_idents(u.s, ids, N, &e), MS_OK);
    reopen(&u);
    assert_true(from_slots(&u));
    for (int i = 0; i < N; i += (i % 65536 > 3 && i % 65536 < 65530 && i < N - 4) ? 37 : 1) {
        patient_id got, want;
        assert_true(lookup(u.s, i, &got));
        store_patient_id(u.s, (uint64_t)i, &want);
        assert_memory_equal(got.b, want.b, 16);
    }
    unit_store_close(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_from_the_slots),
        cmocka_unit_test(test_an_erasure_cut_short),
        cmocka_unit_test(test_slots_not_trusted),
        cmocka_unit_test(test_preloaded_patients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

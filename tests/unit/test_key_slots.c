/*
 * test_key_slots.c - new patients' key slots gathered in memory and written at once (keys.c, "A new
 * patient's slot is not written on its own"): consecutive new slots reach the key file at the sync before
 * the commit, in one write, not one by one; a slot that does not follow the ones gathered writes those
 * first; a key whose slot is still in memory is found even when the key cache has lost it (another
 * patient's key took its cache entry); and every key, hash and count is right after a reopen (the identity
 * index taken from the slots). And a new identity asked for by several sources at once gets one key (made
 * outside the key store's lock, the first one in kept).
 */
#include "unit_store.h"

#define MS_STORE_INTERNAL /* st_key_get: the key file's internal read */
#include "store/store_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#define SLOT 64
#define CACHE_SLOTS 65536 /* keys.c's key cache: direct-mapped by number */

static size_t ident(int i, char *out)
{
    int n = snprintf(out, 64, "slot person %d", i);
    memcpy(out + n + 1, "1980-02-02", 10);
    return (size_t)n + 11;
}

/* Person i as patient number `number`, in the open write w; its data key in key. */
static patient_ref create(store *s, store_write *w, int i, uint64_t number, unsigned char key[32])
{
    char k[64];
    size_t kl = ident(i, k);
    unsigned char mac[32];
    ms_err e;
    patient_ref p;
    bool bound;
    assert_int_equal(store_data_key(s, k, kl, key, &e), MS_OK);
    store_identity_mac(s, k, kl, mac);
    assert_int_equal(store_patient_create_mac(w, k, kl, mac, key, number, &p, &bound, &e), MS_OK);
    assert_true(bound);
    assert_int_equal(p.number, number);
    return p;
}

/* Byte 0 of slot n in the key file: 1 a live key; 0 none (or past the file's end). */
static int slot_byte0(const char *dir, uint64_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/keys", dir);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    unsigned char slot[SLOT] = {0};
    ssize_t got = pread(fd, slot, SLOT, (off_t)((n + 1) * SLOT));
    close(fd);
    return got == SLOT ? slot[0] : 0;
}

/* Patient n's data key into got: found or not (a read error fails the test). */
static bool key_of(store *s, uint64_t n, unsigned char got[32])
{
    bool found;
    ms_err e;
    assert_int_equal(st_key_get(s, n, got, &found, &e), MS_OK);
    return found;
}

static void expect_key(store *s, uint64_t n, const unsigned char want[32])
{
    unsigned char got[32];
    assert_true(key_of(s, n, got));
    assert_memory_equal(got, want, 32);
}

static void test_new_slots_written_together(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    store_write *w;
    unsigned char k0[32], k1[32], ka[32], kb[32], kc[32], kd[32];
    /* patient 1 on disk, so that reading its key fills the cache entry patient 1 + CACHE_SLOTS shares */
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    create(u.s, w, 0, 0, k0);
    create(u.s, w, 1, 1, k1);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_int_equal(slot_byte0(u.dir, 1), 1);

    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    create(u.s, w, 2, CACHE_SLOTS + 1, ka);
    create(u.s, w, 3, CACHE_SLOTS + 2, kb);
    /* gathered, not written: the file has neither slot yet */
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 1), 0);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 2), 0);
    /* patient 1's key read from the file takes the cache entry of CACHE_SLOTS + 1 ... */
    expect_key(u.s, 1, k1);
    /* ... whose key is then read from the gathered slots */
    expect_key(u.s, CACHE_SLOTS + 1, ka);
    expect_key(u.s, CACHE_SLOTS + 2, kb);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 1), 0);
    /* a slot that does not follow writes the gathered ones first */
    create(u.s, w, 4, CACHE_SLOTS + 10, kc);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 1), 1);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 2), 1);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 10), 0);
    create(u.s, w, 5, CACHE_SLOTS + 11, kd);
    /* the commit writes the rest before LMDB's */
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 10), 1);
    assert_int_equal(slot_byte0(u.dir, CACHE_SLOTS + 11), 1);

    /* reopened: the keys from the file, the identities from the slots */
    store_close(u.s);
    u.s = NULL;
    assert_int_equal(store_open(&u.s, u.dir, NULL, &e), MS_OK);
    assert_true(store_open_time(u.s).identities_from_slots);
    const unsigned char *want[] = {k0, k1, ka, kb, kc, kd};
    const uint64_t numbers[] = {0, 1, CACHE_SLOTS + 1, CACHE_SLOTS + 2, CACHE_SLOTS + 10, CACHE_SLOTS + 11};
    for (int i = 0; i < 6; i++) {
        expect_key(u.s, numbers[i], want[i]);
        char k[64];
        size_t kl = ident(i, k);
        patient_id pid;
        bool found;
        store_read *r = unit_rbegin(u.s);
        assert_int_equal(store_ident_lookup(r, k, kl, &pid, &found, &e), MS_OK);
        store_read_end(r);
        assert_true(found);
        patient_id expect;
        store_patient_id(u.s, numbers[i], &expect);
        assert_memory_equal(pid.b, expect.b, 16);
    }
    unit_store_close(&u);
}

/* A commit that fails after its new slots were gathered: they are of no patient, and the numbers go to the
 * next patients, whose keys are the ones found (the old slots written first, then overwritten). */
static void test_aborted_slots_reused(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    store_write *w;
    unsigned char ka[32], kb[32], kc[32];
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    create(u.s, w, 0, 0, ka);
    create(u.s, w, 1, 1, kb);
    store_write_abort(w);
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    create(u.s, w, 2, 0, kc);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    expect_key(u.s, 0, kc);
    assert_int_equal(slot_byte0(u.dir, 0), 1);
    store_close(u.s);
    u.s = NULL;
    assert_int_equal(store_open(&u.s, u.dir, NULL, &e), MS_OK);
    expect_key(u.s, 0, kc);
    unsigned char got[32];
    assert_false(key_of(u.s, 1, got)); /* cut at the open: past the patients created */
    unit_store_close(&u);
}

/* Sources asking for the keys of the same new identities at the same time (ingest's request threads). */
#define ASKERS 4
#define NEW_IDENTITIES 200
typedef struct {
    store *s;
    pthread_barrier_t *start; /* all ask for identity i at once */
    unsigned char key[NEW_IDENTITIES][32];
} asker;

static void *ask(void *arg)
{
    asker *a = arg;
    for (int i = 0; i < NEW_IDENTITIES; i++) {
        char k[64];
        size_t kl = ident(1000 + i, k);
        ms_err e;
        pthread_barrier_wait(a->start);
        if (store_data_key(a->s, k, kl, a->key[i], &e) != MS_OK) memset(a->key[i], 0, 32);
    }
    return NULL;
}

static void test_one_new_identity_one_key(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    static asker a[ASKERS];
    pthread_t t[ASKERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, ASKERS);
    for (int i = 0; i < ASKERS; i++) {
        a[i].s = u.s;
        a[i].start = &start;
        assert_int_equal(pthread_create(&t[i], NULL, ask, &a[i]), 0);
    }
    for (int i = 0; i < ASKERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    static const unsigned char zero[32];
    for (int n = 0; n < NEW_IDENTITIES; n++) {
        assert_memory_not_equal(a[0].key[n], zero, 32);
        for (int i = 1; i < ASKERS; i++)
            assert_memory_equal(a[i].key[n], a[0].key[n], 32);
        if (n) assert_memory_not_equal(a[0].key[n], a[0].key[n - 1], 32);
    }
    /* the patient made of one takes that key */
    ms_err e;
    store_write *w;
    unsigned char got[32];
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    create(u.s, w, 1000, 0, got);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_memory_equal(got, a[0].key[0], 32);
    expect_key(u.s, 0, a[0].key[0]);
    unit_store_close(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_new_identity_one_key),
        cmocka_unit_test(test_new_slots_written_together),
        cmocka_unit_test(test_aborted_slots_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

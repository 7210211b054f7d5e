/*
 * test_audit.c - the audit log's hash chain: entries appended in write transactions read back in order
 * with each one carrying the SHA-256 of the one before; verification passes on an untouched log and
 * names the first bad entry after a flipped byte, a deleted entry, or two swapped entries (tampering
 * done directly on the LMDB file, as an intruder would), the last entry too (edited or deleted: the chain's
 * recorded end), and still after a server appended more to the tampered log; an aborted transaction
 * leaves no entry; the chain continues across a reopen. Also: entries are JSON without PHI values.
 */
#include "unit.h"

#include "access/audit.h"
#include "store/store.h"

#include <lmdb.h>
#include <string.h>

static void append(store *s, int n, const char *who)
{
    ms_err e;
    store_write *w;
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    for (int i = 0; i < n; i++) {
        patient_id pid;
        store_patient_id(s, (uint64_t)i, &pid);
        audit_event ev = {.time_us = ms_now_us(),
                          .user = who,
                          .role = "clinician",
                          .action = "patients:read",
                          .resource = "/v1/patients/x",
                          .outcome = "ok",
                          .client = "127.0.0.1",
                          .patients = &pid,
                          .npatients = 1};
        buf m = {0};
        audit_event_json(&ev, &m);
        assert_int_equal(store_audit_append(w, m.data, m.len, &e), MS_OK);
        buf_free(&m);
    }
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
}

static uint64_t verify(const char *dir, uint64_t *entries, char *why)
{
    store *s;
    ms_err e;
    assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
    uint64_t bad;
    unsigned char head[32];
    assert_int_equal(store_audit_verify(s, entries, head, &bad, why, 256, &e), MS_OK);
    store_close(s);
    return bad;
}

/* Open the LMDB file directly and run fn on the audit sub-database. */
static void tamper(const char *dir, void (*fn)(MDB_txn *, MDB_dbi))
{
    char path[256];
    snprintf(path, sizeof path, "%s/lmdb", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, (size_t)1 << 40);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "audit", 0, &dbi), 0);
    fn(txn, dbi);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static MDB_val key_of(uint64_t seq, unsigned char kb[8])
{
    ms_set_be64(kb, seq);
    return (MDB_val){8, kb};
}

static void flip_byte_of_3(MDB_txn *txn, MDB_dbi dbi)
{
    unsigned char kb[8];
    MDB_val k = key_of(3, kb), v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    char *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    char *u = strstr(copy, "\"clinician\"");
    assert_non_null(u);
    u[1] = 'C'; /* clinician -> Clinician */
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    free(copy);
}

static void delete_4(MDB_txn *txn, MDB_dbi dbi)
{
    unsigned char kb[8];
    MDB_val k = key_of(4, kb);
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
}

/* The last entry (7): no entry after it carries its hash, only the chain's recorded end. */
static void flip_byte_of_7(MDB_txn *txn, MDB_dbi dbi)
{
    unsigned char kb[8];
    MDB_val k = key_of(7, kb), v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    char *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    char *u = strstr(copy, "\"bob\"");
    assert_non_null(u);
    u[1] = 'B';
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    free(copy);
}

static void delete_6_and_7(MDB_txn *txn, MDB_dbi dbi)
{
    unsigned char kb[8];
    MDB_val k6 = key_of(6, kb);
    assert_int_equal(mdb_del(txn, dbi, &k6, NULL), 0);
    MDB_val k7 = key_of(7, kb);
    assert_int_equal(mdb_del(txn, dbi, &k7, NULL), 0);
}

static void swap_2_and_5(MDB_txn *txn, MDB_dbi dbi)
{
    unsigned char k2b[8], k5b[8];
    MDB_val k2 = key_of(2, k2b), k5 = key_of(5, k5b), v2, v5;
    assert_int_equal(mdb_get(txn, dbi, &k2, &v2), 0);
    assert_int_equal(mdb_get(txn, dbi, &k5, &v5), 0);
    char *c2 = malloc(v2.mv_size), *c5 = malloc(v5.mv_size);
    memcpy(c2, v2.mv_data, v2.mv_size);
    memcpy(c5, v5.mv_data, v5.mv_size);
    MDB_val n2 = {v5.mv_size, c5}, n5 = {v2.mv_size, c2};
    assert_int_equal(mdb_put(txn, dbi, &k2, &n2, 0), 0);
    assert_int_equal(mdb_put(txn, dbi, &k5, &n5, 0), 0);
    free(c2);
    free(c5);
}

static void test_chain(void **state)
{
    (void)state;
    void (*attacks[])(MDB_txn *, MDB_dbi) = {flip_byte_of_3, delete_4, swap_2_and_5, flip_byte_of_7, delete_6_and_7};
    uint64_t expect_bad[] = {4, 4, 2, 7, 6};
    for (int k = 0; k < 5; k++) {
        char dir[128], why[256];
        unit_tmpdir(dir);
        store *s;
        ms_err e;
        assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
        append(s, 3, "alice");
        /* an aborted transaction leaves nothing */
        store_write *w;
        assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
        assert_int_equal(store_audit_append(w, "\"x\":1", 5, &e), MS_OK);
        store_write_abort(w);
        store_close(s);
        assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
        append(s, 4, "bob"); /* the chain continues across the reopen */
        store_close(s);
        uint64_t entries;
        assert_int_equal(verify(dir, &entries, why), 0);
        assert_int_equal(entries, 7);
        tamper(dir, attacks[k]);
        uint64_t bad = verify(dir, &entries, why);
        if (bad != expect_bad[k])
            fail_msg("attack %d: first bad entry %llu, expected %llu (%s)", k, (unsigned long long)bad,
                     (unsigned long long)expect_bad[k], why);
        assert_true(strlen(why) > 0);
        /* a server opened on the tampered log goes on from the chain's end, not from the tampered entries:
         * appending more never makes an edit or a deletion at the end pass */
        assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
        append(s, 2, "carol");
        store_close(s);
        bad = verify(dir, &entries, why);
        if (bad == 0 || bad > expect_bad[k] + 1)
            fail_msg("attack %d, then 2 entries appended: first bad entry %llu, expected %llu or %llu (%s)", k,
                     (unsigned long long)bad, (unsigned long long)expect_bad[k],
                     (unsigned long long)expect_bad[k] + 1, why);
        unit_rmtree(dir);
    }
}

static void test_entry_json_has_ids_not_values(void **state)
{
    (void)state;
    patient_id pid = {{0x6f, 0x0c, 0x12, 0x34, 0xab, 0xcd, 0x4e, 0xf0, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}};
    audit_event ev = {.time_us = 0,
                      .user = "alice",
                      .role = "clinician",
                      .action = "patients:read",
                      .resource = "/v1/patients",
                      .outcome = "not_found",
                      .client = "10.0.0.1",
                      .patients = &pid,
                      .npatients = 1};
    buf m = {0};
    buf_putc(&m, '{');
    audit_event_json(&ev, &m);
    buf_putc(&m, '}');
    json_member mem[16];
    json_error je;
    assert_int_equal(json_scan_object(m.data, m.len, mem, 16, &je), 8);
    assert_non_null(strstr(m.data, "\"patient_ids\":[\"6f0c1234-abcd-4ef0-8123-456789abcdef\"]"));
    assert_non_null(strstr(m.data, "\"time\":\"1970-01-01T00:00:00.000000Z\""));
    buf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_entry_json_has_ids_not_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

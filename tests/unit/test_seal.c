/*
 * test_seal.c - encryption at rest (src/store/seal.h) and the data keys' life in a store (keys.c):
 * AES-256-GCM against the GCM specification's test case 15 (AES-256, 96-bit IV, no AAD), the layout
 * [IV][ciphertext][tag], a flipped bit or a wrong key refused (leaving no text in the output), any range opened in
 * place equal to the plaintext (the CTR position of GCM's counter), key wrapping bound to its slot; in a store: a new
 * identity's key is pending until bound, the same identity gets the same key, a sealed body reads back,
 * and after an erasure the key slot holds the erasure's mark alone and the body no longer opens; the open overwrites
 * an erased patient's key left by a crash and cuts off keys past the patient count; a patient's sealed
 * values read back together from the disk, wherever they sit in their records and blocks; a commit of an identity
 * (or a legacy patient's first bind) between another source's lookup and its new key leaves that source with the
 * patient's key (RAND_bytes interposed); two erasures in one commit both take effect; a failed key file write
 * (pwrite interposed) leaves no key in the cache for the retry to trust.
 */
#include "unit_store.h"

#include "store/seal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

static void hex(const char *h, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
}

/* "The Galois/Counter Mode of Operation (GCM)", McGrew and Viega, test case 15. */
static void test_gcm_known_answer(void **state)
{
    (void)state;
    unsigned char key[32], iv[12], pt[64], want_ct[64], want_tag[16], out[64 + SEAL_OVERHEAD], back[64];
    hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, 32);
    hex("cafebabefacedbaddecaf888", iv, 12);
    hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525"
        "b16aedf5aa0de657ba637b391aafd255",
        pt, 64);
    hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838"
        "c5f61e6393ba7a0abcc9f662898015ad",
        want_ct, 64);
    hex("b094dac5d93471bdec1a502270e3cc6c", want_tag, 16);
    assert_true(seal_record(key, iv, pt, 64, out));
    assert_memory_equal(out, iv, 12);
    assert_memory_equal(out + 12, want_ct, 64);
    assert_memory_equal(out + 76, want_tag, 16);
    assert_true(seal_open_record(key, out, 64, back));
    assert_memory_equal(back, pt, 64);
    out[40] ^= 1; /* one bit of the ciphertext */
    memset(back, 0x5A, sizeof back);
    assert_false(seal_open_record(key, out, 64, back));
    for (size_t i = 0; i < sizeof back; i++) /* nothing of a text that failed its tag is left in the output */
        if (back[i] != 0) fail_msg("byte %zu of a text that failed its tag was left", i);
    out[40] ^= 1;
    key[0] ^= 1; /* another key */
    assert_false(seal_open_record(key, out, 64, back));
}

static void test_ranges_open_in_place(void **state)
{
    (void)state;
    unsigned char key[32], iv[12], pt[300], sealed[300 + SEAL_OVERHEAD], got[300];
    for (int i = 0; i < 32; i++)
        key[i] = (unsigned char)(i * 7 + 1);
    seal_iv((const unsigned char *)"prefix!!", 42, iv);
    for (int i = 0; i < 300; i++)
        pt[i] = (unsigned char)(i * 31 + 5);
    assert_true(seal_record(key, iv, pt, sizeof pt, sealed));
    const unsigned char *ct = sealed + SEAL_IV;
    for (size_t off = 0; off < 300; off += 7) {
        for (size_t len = 1; off + len <= 300; len += 13) {
            /* the caller hands the ciphertext from the start of off's block */
            size_t start = off - off % 16;
            memset(got, 0, sizeof got);
            assert_true(seal_open_range(key, iv, off, ct + start, len, got));
            if (memcmp(got, pt + off, len) != 0) fail_msg("range at %zu, %zu bytes: not the plaintext", off, len);
        }
    }
}

/* One seal or open, as a thread runs it. */
typedef struct {
    char op; /* 's' seal_record, 'o' seal_open_record, 'r' seal_open_range, 'w' seal_wrap, 'u' seal_unwrap (key: the
                wrapping key, off: the slot) */
    const unsigned char *key, *iv, *in;
    size_t len;
    uint64_t off;
    bool ok;
    unsigned char out[300 + SEAL_OVERHEAD];
} seal_op;

static void run_op(seal_op *o)
{
    memset(o->out, 0, sizeof o->out);
    if (o->op == 's') o->ok = seal_record(o->key, o->iv, o->in, o->len, o->out);
    if (o->op == 'o') o->ok = seal_open_record(o->key, o->in, o->len, o->out);
    if (o->op == 'r') o->ok = seal_open_range(o->key, o->iv, o->off, o->in + o->off - o->off % 16, o->len, o->out);
    if (o->op == 'w') o->ok = seal_wrap(o->key, o->off, o->in, o->out);
    if (o->op == 'u') o->ok = seal_unwrap(o->key, o->off, o->in, o->out);
}

static void *op_thread(void *p)
{
    run_op(p);
    return NULL;
}

/* A thread's two contexts (data keys; the store's wrapping key) keep the key of their last call and set only
 * the IV when a call has that key (seal.c). Every call of a sequence that reuses and switches keys, directions
 * and modes, wraps and unwraps between data-key calls (with a key that is also a data key elsewhere), and fails
 * on the way, must give what the same call gives on a new thread, whose contexts set their keys. */
static void test_a_thread_keeps_its_key(void **state)
{
    (void)state;
    unsigned char k1[32], k2[32], k3[32], iv1[12], iv2[12], pt[300], s1[300 + SEAL_OVERHEAD], s2[300 + SEAL_OVERHEAD],
        s3[300 + SEAL_OVERHEAD], s4[300 + SEAL_OVERHEAD], bad[300 + SEAL_OVERHEAD], w1[SEAL_WRAPPED], w2[SEAL_WRAPPED];
    for (int i = 0; i < 32; i++)
        k1[i] = (unsigned char)(i * 5 + 3), k2[i] = (unsigned char)(i * 11 + 7), k3[i] = (unsigned char)(i * 3 + 2);
    seal_iv((const unsigned char *)"prefix01", 1, iv1);
    seal_iv((const unsigned char *)"prefix01", 2, iv2);
    for (int i = 0; i < 300; i++)
        pt[i] = (unsigned char)(i * 13 + 1);
    assert_true(seal_record(k1, iv1, pt, 300, s1));
    assert_true(seal_record(k1, iv2, pt, 300, s2));
    assert_true(seal_record(k2, iv1, pt, 300, s3));
    assert_true(seal_record(k3, iv2, pt, 300, s4));
    assert_true(seal_wrap(k3, 5, k1, w1));
    assert_true(seal_wrap(k2, 6, k1, w2));
    memcpy(bad, s3, sizeof bad);
    bad[300 + SEAL_IV] ^= 1; /* the tag */
    const unsigned char *ct1 = s1 + SEAL_IV;
    seal_op ops[] = {
        {'s', k1, iv1, pt, 300, 0, 0, {0}},
        {'s', k1, iv2, pt, 300, 0, 0, {0}},   /* the same key, another IV */
        {'o', k1, NULL, s1, 300, 0, 0, {0}},  /* the other direction */
        {'o', k2, NULL, s1, 300, 0, 0, {0}},  /* another key: refused */
        {'o', k1, NULL, s1, 300, 0, 0, {0}},  /* after a failure */
        {'r', k1, iv1, ct1, 100, 37, 0, {0}}, /* CTR, the same key */
        {'r', k1, iv1, ct1, 50, 200, 0, {0}},
        {'r', k1, iv1, ct1, 5, 3, 0, {0}},
        {'o', k1, NULL, s2, 300, 0, 0, {0}}, /* back to GCM */
        {'s', k2, iv1, pt, 300, 0, 0, {0}},
        {'o', k2, NULL, bad, 300, 0, 0, {0}}, /* a bad tag: refused */
        {'o', k2, NULL, s3, 300, 0, 0, {0}},
        {'s', k2, iv2, pt, 0, 0, 0, {0}}, /* nothing to seal */
        {'o', k1, NULL, s1, 300, 0, 0, {0}},
        /* a new patient's calls: its key, the store's (k3), its key again; then another store's (k2) */
        {'s', k1, iv2, pt, 300, 0, 0, {0}},
        {'w', k3, NULL, k1, 0, 5, 0, {0}},
        {'s', k1, iv2, pt, 300, 0, 0, {0}},
        {'u', k3, NULL, w1, 0, 5, 0, {0}},
        {'o', k3, NULL, s4, 300, 0, 0, {0}}, /* k3 as a data key: the other context */
        {'u', k3, NULL, w1, 0, 5, 0, {0}},
        {'u', k2, NULL, w2, 0, 6, 0, {0}},
        {'u', k2, NULL, w1, 0, 5, 0, {0}}, /* k3's wrapping, under k2: refused */
        {'u', k2, NULL, w2, 0, 6, 0, {0}},
        {'w', k2, NULL, k1, 0, 6, 0, {0}},
        {'r', k3, iv2, s4 + SEAL_IV, 40, 9, 0, {0}},
        {'o', k1, NULL, s2, 300, 0, 0, {0}},
        {'u', k3, NULL, w1, 0, 5, 0, {0}},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        seal_op fresh = ops[i];
        run_op(&ops[i]);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, op_thread, &fresh), 0);
        pthread_join(t, NULL);
        if (ops[i].ok != fresh.ok) fail_msg("call %zu: %d here, %d on a new thread", i, ops[i].ok, fresh.ok);
        if (memcmp(ops[i].out, fresh.out, sizeof fresh.out) != 0) fail_msg("call %zu: another result", i);
    }
    bool want[] = {true, true, true, false, true, true, true, true,  true, true, false, true, true, true,
                   true, true, true, true,  true, true, true, false, true, true, true,  true, true};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(ops[i].ok, want[i]);
    assert_memory_equal(ops[2].out, pt, 300);
    assert_memory_equal(ops[5].out, pt + 37, 100);
    assert_memory_equal(ops[6].out, pt + 200, 50);
    assert_memory_equal(ops[8].out, pt, 300);
    assert_memory_equal(ops[14].out, s2, sizeof s2); /* k1 and iv2: what seal_record gave above */
    assert_memory_equal(ops[15].out, w1, sizeof w1);
    assert_memory_equal(ops[16].out, s2, sizeof s2);
    assert_memory_equal(ops[17].out, k1, sizeof k1);
    assert_memory_equal(ops[18].out, pt, 300);
    assert_memory_equal(ops[19].out, k1, sizeof k1);
    assert_memory_equal(ops[20].out, k1, sizeof k1);
    assert_memory_equal(ops[22].out, k1, sizeof k1);
    assert_memory_equal(ops[23].out, w2, sizeof w2);
    assert_memory_equal(ops[24].out, pt + 9, 40);
    assert_memory_equal(ops[25].out, pt, 300);
    assert_memory_equal(ops[26].out, k1, sizeof k1);
}

static void test_wrap_is_bound_to_its_slot(void **state)
{
    (void)state;
    unsigned char wrap[32] = {9}, key[32], wrapped[SEAL_WRAPPED], back[32];
    for (int i = 0; i < 32; i++)
        key[i] = (unsigned char)(200 - i);
    assert_true(seal_wrap(wrap, 17, key, wrapped));
    assert_true(memcmp(wrapped, key, 32) != 0);
    assert_true(seal_unwrap(wrap, 17, wrapped, back));
    assert_memory_equal(back, key, 32);
    assert_false(seal_unwrap(wrap, 18, wrapped, back)); /* another slot's IV */
}

/* A sealed body through a store: append, bind at create, read back; erase; the slot is zeros and the
 * body's key is gone. */
static void test_keys_in_a_store(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    const char ikey[] = "ann lee\0"
                        "1970-01-01";
    size_t il = sizeof ikey - 1;
    unsigned char k1[32], k2[32];
    assert_int_equal(store_data_key(u.s, ikey, il, k1, &e), MS_OK);
    assert_int_equal(store_data_key(u.s, ikey, il, k2, &e), MS_OK);
    assert_memory_equal(k1, k2, 32); /* one pending key per identity */
    const char body[] = "{\"name\":\"Ann Lee\",\"note\":\"secret words\"}";
    seal_item it = {.body = body, .len = sizeof body - 1, .identity_key = ikey, .identity_key_len = (uint32_t)il};
    uint64_t pos;
    assert_int_equal(store_append_sealed(u.s, &it, 1, &pos, &e), MS_OK);
    assert_memory_equal(it.key, k1, 32);
    store_write *w;
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    patient_ref p;
    bool bound;
    unsigned char other[32] = {1};
    assert_int_equal(store_patient_create(w, ikey, il, other, &p, &bound, &e), MS_OK);
    assert_false(bound); /* not this identity's fresh key: refused */
    assert_int_equal(store_patient_create(w, ikey, il, it.key, &p, &bound, &e), MS_OK);
    assert_true(bound);
    record_version rv = {.record_id = "r1",
                         .record_id_len = 2,
                         .version = 1,
                         .valid_from = store_write_time(w),
                         .valid_to = -1,
                         .pid = p.id,
                         .patient_number = p.number,
                         .type = "x",
                         .type_len = 1,
                         .body_pos = pos + it.offset,
                         .body_len = it.len,
                         .sealed = true};
    rv.body_hash = XXH3_64bits(body, it.len);
    assert_int_equal(store_record_put(w, &rv, 2026, "{}", 2, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    buf got = {0};
    assert_int_equal(store_record_body(u.s, &rv, &got, &e), MS_OK);
    assert_int_equal(got.len, it.len);
    assert_memory_equal(got.data, body, it.len);
    /* the same identity now finds the committed patient's key */
    assert_int_equal(store_data_key(u.s, ikey, il, k2, &e), MS_OK);
    assert_memory_equal(k2, k1, 32);
    /* erase: the slot is overwritten, the body's key is gone */
    char path[256];
    unsigned char slot[64], erased[64] = {0, 'E'}, before[64];
    snprintf(path, sizeof path, "%s/keys", u.dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, before, 64, (off_t)(64 * (p.number + 1))), 64);
    assert_int_equal(before[0], 1);
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    erase_report rep;
    assert_int_equal(store_patient_erase(w, &p.id, &rep, &e), MS_OK);
    assert_int_equal(rep.record_versions, 1);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_true(store_patient_key_gone(u.s, &p.id));
    assert_int_equal(pread(fd, slot, 64, (off_t)(64 * (p.number + 1))), 64);
    assert_memory_equal(slot, erased, 64); /* the erasure's mark alone: no key, no identity hash */
    /* a crash between the erasure's commit and the overwrite (the slot written back here): the next open
     * overwrites it; and a key past the patient count (a commit that never completed) is cut off */
    assert_int_equal(pwrite(fd, before, 64, (off_t)(64 * (p.number + 1))), 64);
    assert_int_equal(pwrite(fd, before, 64, (off_t)(64 * (p.number + 5))), 64);
    store_close(u.s);
    assert_int_equal(store_open(&u.s, u.dir, NULL, &e), MS_OK);
    assert_int_equal(pread(fd, slot, 64, (off_t)(64 * (p.number + 1))), 64);
    assert_memory_equal(slot, erased, 64);
    assert_true(store_open_time(u.s).identities_from_slots);                /* the erasure's mark in meta found it */
    assert_int_equal(pread(fd, slot, 64, (off_t)(64 * (p.number + 5))), 0); /* cut */
    close(fd);
    got.len = 0;
    assert_int_not_equal(store_record_body(u.s, &rv, &got, &e), MS_OK);
    /* a new identity key for the same identity: a fresh one (the old patient is gone) */
    assert_int_equal(store_data_key(u.s, ikey, il, k2, &e), MS_OK);
    assert_true(memcmp(k2, k1, 32) != 0);
    buf_free(&got);
    unit_store_close(&u);
}

/* The values of a patient's state read together (store_field_values): sealed values of two records, two
 * sharing a 16-byte block (the second's block head is the first's value, opened in place before it), one
 * more than 64 KiB into its record (its IV read on its own), read from the disk (no body cache) in one call
 * and one at a time; a wrong hash is still refused. */
static void test_sealed_values_read_together(void **state)
{
    (void)state;
    unit_store u;
    store_options opt = {.map_size = (size_t)1 << 30, .segment_size = (uint64_t)1 << 20, .body_cache = 0};
    assert_true(unit_store_open(&u, &opt));
    ms_err e;
    const char ikey[] = "fay val\0"
                        "1970-01-02";
    size_t il = sizeof ikey - 1;
    size_t big = 150000;
    char *a = malloc(big + 200), *b = "{\"c\":\"from the second record\",\"d\":[1,2,3]}";
    int n = snprintf(a, 200, "{\"x\":\"1\",\"yy\":\"22\",\"big\":\"");
    memset(a + n, 'z', big);
    n += (int)big;
    n += snprintf(a + n, 200, "\",\"late\":\"after the big one\"}");
    seal_item it[2] = {{.body = a, .len = (uint32_t)n, .identity_key = ikey, .identity_key_len = (uint32_t)il},
                       {.body = b, .len = (uint32_t)strlen(b), .identity_key = ikey, .identity_key_len = (uint32_t)il}};
    uint64_t pos;
    assert_int_equal(store_append_sealed(u.s, it, 2, &pos, &e), MS_OK);
    store_write *w;
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    patient_ref p;
    bool bound;
    assert_int_equal(store_patient_create(w, ikey, il, it[0].key, &p, &bound, &e), MS_OK);
    assert_true(bound);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    /* the values: (record, value text) */
    struct {
        int rec;
        const char *text;
    } want[] = {
        {0, "\"1\""}, {0, "\"22\""}, {0, "\"after the big one\""}, {1, "\"from the second record\""}, {1, "[1,2,3]"}};
    enum { NV = sizeof want / sizeof want[0] };
    state_field f[NV];
    for (int i = 0; i < NV; i++) {
        const char *body = it[want[i].rec].body, *at = strstr(body, want[i].text);
        assert_non_null(at);
        uint32_t off = (uint32_t)(at - body), len = (uint32_t)strlen(want[i].text);
        f[i] = (state_field){.key = "k",
                             .key_len = 1,
                             .pos = pos + it[want[i].rec].offset + off,
                             .len = len,
                             .hash = XXH3_64bits(want[i].text, len),
                             .off = off,
                             .sealer = p.number + 1};
    }
    assert_true(f[2].off > (64u << 10));                               /* past the run that starts at its record's IV */
    assert_true(f[0].off / 16 == f[1].off / 16 && f[1].off % 16 != 0); /* "22" shares "1"'s block */
    const char *vals[NV];
    buf scratch = {0}, one = {0};
    assert_int_equal(store_field_values(u.s, f, NV, vals, &scratch, &e), MS_OK);
    for (int i = 0; i < NV; i++) {
        assert_memory_equal(vals[i], want[i].text, f[i].len);
        one.len = 0;
        assert_int_equal(store_field_value(u.s, &f[i], &one, &e), MS_OK);
        assert_int_equal(one.len, f[i].len);
        assert_memory_equal(one.data, want[i].text, f[i].len);
    }
    f[3].hash ^= 1;
    assert_int_equal(store_field_values(u.s, f, NV, vals, &scratch, &e), MS_ECORRUPT);
    buf_free(&scratch);
    buf_free(&one);
    free(a);
    unit_store_close(&u);
}

/* seal_iv_fresh never repeats an IV: one thread counts under its prefix, another thread and a forked child
 * each draw their own prefix. */
static void *ivs_of_a_thread(void *arg)
{
    assert_true(seal_iv_fresh(arg));
    return NULL;
}

static void test_fresh_ivs_never_repeat(void **state)
{
    (void)state;
    enum { N = 1000 };
    static unsigned char ivs[N][SEAL_IV];
    for (int i = 0; i < N; i++)
        assert_true(seal_iv_fresh(ivs[i]));
    for (int i = 1; i < N; i++) { /* one prefix, the count going up by one */
        assert_memory_equal(ivs[i], ivs[0], 8);
        assert_int_equal(ms_get_be32(ivs[i] + 8), ms_get_be32(ivs[i - 1] + 8) + 1);
    }
    unsigned char other[SEAL_IV];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, ivs_of_a_thread, other), 0);
    pthread_join(t, NULL);
    assert_memory_not_equal(other, ivs[0], 8);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* the child: this thread's state is the parent's copy, and must not be reused */
        unsigned char iv[SEAL_IV];
        _exit(seal_iv_fresh(iv) && write(fds[1], iv, sizeof iv) == (ssize_t)sizeof iv ? 0 : 1);
    }
    unsigned char child[SEAL_IV], next[SEAL_IV];
    assert_int_equal(read(fds[0], child, sizeof child), (ssize_t)sizeof child);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    assert_true(seal_iv_fresh(next));
    assert_memory_equal(next, ivs[0], 8); /* the parent goes on under its prefix */
    assert_memory_not_equal(child, ivs[0], 8);
}

/* A patient from before data keys (an unsealed identity entry, as preload writes) takes the key its first
 * sealed body came with, and its identity entry is sealed then. */
static void test_a_patient_from_before_keys_adopts_one(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    const char ikey[] = "old timer\0"
                        "1940-04-04";
    size_t il = sizeof ikey - 1;
    store_write *w;
    patient_ref p = {.number = 0};
    store_patient_id(u.s, 0, &p.id);
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    assert_int_equal(store_ident_put(w, ikey, il, &p, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_true(store_patient_key_gone(u.s, &p.id)); /* no key yet */
    unsigned char k[32], again[32];
    assert_int_equal(store_data_key(u.s, ikey, il, k, &e), MS_OK); /* a fresh one, pending */
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    bool found, bound;
    patient_ref who;
    assert_int_equal(store_ident_get(w, ikey, il, &who, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(who.number, 0);
    assert_int_equal(store_patient_key_bind(w, &who, ikey, il, k, &bound, &e), MS_OK);
    assert_true(bound);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    assert_false(store_patient_key_gone(u.s, &p.id));
    assert_int_equal(store_data_key(u.s, ikey, il, again, &e), MS_OK);
    assert_memory_equal(again, k, 32); /* its key now */
    store_read *r;
    buf key = {0};
    assert_int_equal(store_read_begin(u.s, &r, &e), MS_OK);
    assert_int_equal(store_identity_key(r, &p.id, &key, &found, &e), MS_OK);
    store_read_end(r);
    assert_true(found);
    assert_int_equal(key.len, il);
    assert_memory_equal(key.data, ikey, il); /* the sealed entry opens to the same identity */
    buf_free(&key);
    unit_store_close(&u);
}

/* ---- helpers of the race and failure tests below ---- */

/* A patient from before data keys (an unsealed identity entry, as preload writes), number 0. */
static void legacy_patient(store *s, const char *ikey, size_t il, patient_ref *p)
{
    ms_err e;
    store_write *w;
    *p = (patient_ref){.number = 0};
    store_patient_id(s, 0, &p->id);
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    assert_int_equal(store_ident_put(w, ikey, il, p, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
}

/* A record of a new identity as the writer stores it: its key from store_data_key, the patient created and
 * committed. */
static void new_patient(store *s, const char *ikey, size_t il, patient_ref *p, unsigned char key[32])
{
    ms_err e;
    store_write *w;
    bool bound;
    assert_int_equal(store_data_key(s, ikey, il, key, &e), MS_OK);
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    assert_int_equal(store_patient_create(w, ikey, il, key, p, &bound, &e), MS_OK);
    assert_true(bound);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
}

/* Does the writer bind a record of this known identity sealed under key (else: rejected, "erased while on
 * its way")? The store_write is committed with commit, else aborted; its commit's code in *rc. */
static bool binds(store *s, const char *ikey, size_t il, const unsigned char key[32], bool commit, ms_code *rc)
{
    ms_err e;
    store_write *w;
    patient_ref who;
    bool found, bound;
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    assert_int_equal(store_ident_get(w, ikey, il, &who, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(store_patient_key_bind(w, &who, ikey, il, key, &bound, &e), MS_OK);
    if (commit)
        *rc = store_write_commit(w, NULL, &e);
    else
        store_write_abort(w);
    return bound;
}

/* RAND_bytes, interposed (the store's objects are linked into this program): with race_hook set, the next
 * call runs the hook first, once, then makes its bytes as OpenSSL does. store_data_key calls it between its
 * lookup that found no key and making the new one pending: the hook is another source there. */
static void (*race_hook)(void);

int RAND_bytes(unsigned char *buf, int num)
{
    static int (*real)(unsigned char *, int);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "RAND_bytes");
    void (*hook)(void) = race_hook;
    race_hook = NULL;
    if (hook) hook();
    return real(buf, num);
}

static struct {
    store *s;
    const char *ikey;
    size_t il;
    unsigned char key[32];
} race;

/* Another source's record of a new identity: its key made pending, the patient created and committed (which
 * drops the pending key). */
static void another_source_commits_the_identity(void)
{
    patient_ref p;
    new_patient(race.s, race.ikey, race.il, &p, race.key);
}

/* Another source's record of a patient from before data keys: its first key made pending, bound, committed. */
static void another_source_binds_the_first_key(void)
{
    ms_err e;
    ms_code rc;
    assert_int_equal(store_data_key(race.s, race.ikey, race.il, race.key, &e), MS_OK);
    assert_true(binds(race.s, race.ikey, race.il, race.key, true, &rc));
    assert_int_equal(rc, MS_OK);
}

/* store_data_key of ikey with hook run between its lookup and its new key: the source must end with the key
 * the other source's commit gave the patient, which the writer binds, and leave no second key pending. */
static void race_data_key(const char *ikey, size_t il, bool legacy, void (*hook)(void))
{
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    ms_code rc;
    patient_ref p;
    if (legacy) legacy_patient(u.s, ikey, il, &p);
    race.s = u.s;
    race.ikey = ikey;
    race.il = il;
    race_hook = hook;
    unsigned char k[32], again[32];
    assert_int_equal(store_data_key(u.s, ikey, il, k, &e), MS_OK);
    assert_null(race_hook); /* the other source ran between the lookup and the new key */
    assert_memory_equal(k, race.key, 32);
    assert_true(binds(u.s, ikey, il, k, false, &rc)); /* a record sealed under it is stored, not rejected */
    assert_int_equal(store_data_key(u.s, ikey, il, again, &e), MS_OK);
    assert_memory_equal(again, race.key, 32); /* no second key left pending for the next records */
    unit_store_close(&u);
}

/* A new identity: a commit of it between the lookup that found neither a pending key nor the patient and the
 * new key becoming pending (the CI run of 2026-12-03: a record answered as rejected, "the patient was erased
 * while this record was on its way", and every later record of the patient the same). */
static void test_a_commit_between_lookup_and_new_key(void **state)
{
    (void)state;
    const char ikey[] = "cy ray\0"
                        "1970-01-03";
    race_data_key(ikey, sizeof ikey - 1, false, another_source_commits_the_identity);
}

/* A patient from before data keys, found keyless outside the lock, its first key bound meanwhile. */
static void test_a_bind_between_keyless_lookup_and_new_key(void **state)
{
    (void)state;
    const char ikey[] = "old timer\0"
                        "1940-04-04";
    race_data_key(ikey, sizeof ikey - 1, true, another_source_binds_the_first_key);
}

/* The writer groups several DELETE /v1/patients in one commit: every erased patient's key is overwritten and
 * its identity leaves the index (only the last one's did: the others' keys stayed until a restart, and every
 * new record of their identities was rejected as "erased while on its way", for good). */
static void test_two_erasures_in_one_commit(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    const char *ids[2] = {"ann lee\0"
                          "1970-01-01",
                          "bob roe\0"
                          "1980-02-02"};
    size_t il = strlen(ids[0]) + 1 + 10;
    patient_ref p[2], again;
    unsigned char old[2][32], k[32];
    for (int i = 0; i < 2; i++)
        new_patient(u.s, ids[i], il, &p[i], old[i]);
    store_write *w;
    erase_report rep;
    assert_int_equal(store_write_begin(u.s, &w, &e), MS_OK);
    for (int i = 0; i < 2; i++)
        assert_int_equal(store_patient_erase(w, &p[i].id, &rep, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
    for (int i = 0; i < 2; i++) { /* a new record of either identity: a new patient, under a new key */
        assert_true(store_patient_key_gone(u.s, &p[i].id));
        new_patient(u.s, ids[i], il, &again, k);
        assert_true(memcmp(k, old[i], 32) != 0);
        assert_true(again.number != p[i].number);
    }
    unit_store_close(&u);
}

/* pwrite, interposed: a write to fail_fd fails as a full disk does. */
static int fail_fd = -1;

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) *(void **)&real = dlsym(RTLD_NEXT, "pwrite");
    if (fd >= 0 && fd == fail_fd) {
        errno = ENOSPC;
        return -1;
    }
    return real(fd, buf, n, off);
}

/* The descriptor this process holds on path, or -1. */
static int fd_of(const char *path)
{
    char link[64], target[4096];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = 0;
        if (strcmp(target, path) == 0) return fd;
    }
    return -1;
}

/* A commit whose key file write fails drops its new slots, from the key cache too: the retried bind of a
 * patient from before data keys writes its key again (it found it in the cache and wrote nothing, so its
 * records were committed under a key that was on no disk: unreadable after a restart). */
static void test_a_failed_key_write_leaves_no_key_in_the_cache(void **state)
{
    (void)state;
    unit_store u;
    assert_true(unit_store_open(&u, NULL));
    ms_err e;
    ms_code rc;
    const char ikey[] = "old timer\0"
                        "1940-04-04";
    size_t il = sizeof ikey - 1;
    patient_ref p;
    legacy_patient(u.s, ikey, il, &p);
    unsigned char k[32], after[32];
    assert_int_equal(store_data_key(u.s, ikey, il, k, &e), MS_OK);
    char path[256], real_path[4096];
    snprintf(path, sizeof path, "%s/keys", u.dir);
    assert_non_null(realpath(path, real_path));
    fail_fd = fd_of(real_path);
    assert_true(fail_fd >= 0);
    assert_true(binds(u.s, ikey, il, k, true, &rc));
    fail_fd = -1;
    assert_int_equal(rc, MS_EFULL);
    assert_true(binds(u.s, ikey, il, k, true, &rc)); /* the source retries the batch */
    assert_int_equal(rc, MS_OK);
    store_close(u.s);
    assert_int_equal(store_open(&u.s, u.dir, NULL, &e), MS_OK);
    assert_false(store_patient_key_gone(u.s, &p.id)); /* on disk */
    assert_int_equal(store_data_key(u.s, ikey, il, after, &e), MS_OK);
    assert_memory_equal(after, k, 32);
    unit_store_close(&u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcm_known_answer),
        cmocka_unit_test(test_ranges_open_in_place),
        cmocka_unit_test(test_a_thread_keeps_its_key),
        cmocka_unit_test(test_wrap_is_bound_to_its_slot),
        cmocka_unit_test(test_keys_in_a_store),
        cmocka_unit_test(test_sealed_values_read_together),
        cmocka_unit_test(test_a_patient_from_before_keys_adopts_one),
        cmocka_unit_test(test_a_commit_between_lookup_and_new_key),
        cmocka_unit_test(test_a_bind_between_keyless_lookup_and_new_key),
        cmocka_unit_test(test_two_erasures_in_one_commit),
        cmocka_unit_test(test_a_failed_key_write_leaves_no_key_in_the_cache),
        cmocka_unit_test(test_fresh_ivs_never_repeat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

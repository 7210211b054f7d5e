/*
 * test_shard.c - shards (shard.h): every spelling of one identity lands in one shard; a shard stays whole
 * in one partition when the partition count doubles; shards spread evenly; patient numbers minted per
 * shard go back to their shard and sequence; the shard function keeps its known answers (it must never
 * change once stores exist); a node's shard ids (shard_ids.h) mint each shard's next number after every
 * number learned, never a second number for an identity; a batch marker (batch_marker.h) keeps its messages'
 * order in runs and decodes to what was encoded, refuses what is malformed, and says which batches hold a
 * partition's shards after the topic doubled.
 *
 * Found by fuzz/fuzz_wire.c (bytes a node reads from Kafka), one test each: a changelog entry of number
 * UINT64_MAX (the identity index's empty slot) was learned yet forgotten, one of sequence 2^52 - 1 sent its
 * shard's next mint around 2^64 onto another patient's number, and a floor (T.seed's patient count) near
 * 2^64 made mints fall below it (test_shard_ids_refuse_numbers_past_any_shard); a T.seed chunk far out made
 * every node allocate two bytes for each number below it (8 GiB for the fuzzer's), loop forever, or write
 * below its table (test_seed_table_refuses_far_chunks).
 */
#include "unit.h"

#include "ingest/shard_ids.h"
#include "pipeline/batch_marker.h"
#include "pipeline/identity.h"
#include "pipeline/seed_table.h"
#include "pipeline/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t shard_of_name(const char *name, int y, int m, int d)
{
    char norm[IDENTITY_NAME_MAX], key[IDENTITY_KEY_MAX];
    const char *why = NULL;
    int n = identity_normalize_name(name, strlen(name), norm, &why);
    assert_true(n > 0);
    return shard_of_key(key, identity_key(norm, (size_t)n, y, m, d, key));
}

static void test_spellings_share_a_shard(void **state)
{
    (void)state;
    uint32_t a = shard_of_name("Ana Maria Lopez", 1990, 1, 2);
    assert_int_equal(shard_of_name("  ANA   maria lopez ", 1990, 1, 2), a);
    assert_int_equal(shard_of_name("\xef\xbc\xa1na Maria Lopez", 1990, 1, 2), a); /* fullwidth A (NFKC) */
    /* another date of birth is another identity: over 64 of them, not all in a's shard */
    int same = 0;
    for (int d = 1; d <= 28; d++)
        for (int m = 1; m <= 3; m++)
            same += shard_of_name("Ana Maria Lopez", 1991, m, d) == a;
    assert_true(same < 4);
}

static void test_partitions_keep_shards_whole(void **state)
{
    (void)state;
    assert_true(shard_partitions_ok(1) && shard_partitions_ok(8) && shard_partitions_ok(4096));
    assert_false(shard_partitions_ok(0) || shard_partitions_ok(3) || shard_partitions_ok(12) ||
                 shard_partitions_ok(8192) || shard_partitions_ok(-4));
    for (uint32_t s = 0; s < SHARD_COUNT; s++)
        for (int32_t p = 1; p < (int32_t)SHARD_COUNT; p *= 2) {
            int32_t before = shard_partition(s, p), after = shard_partition(s, 2 * p);
            assert_true(after == before || after == before + p); /* partition p splits into p and p + P */
        }
}

static void test_shards_spread_evenly(void **state)
{
    (void)state;
    static unsigned count[SHARD_COUNT];
    memset(count, 0, sizeof count);
    enum { N = 409600 }; /* 100 per shard expected */
    for (int i = 0; i < N; i++) {
        char key[64];
        int len = snprintf(key, sizeof key, "patient %d", i);
        key[len] = '\0'; /* the NUL between name and date, as identity_key makes it */
        len += 1 + snprintf(key + len + 1, sizeof key - (size_t)len - 1, "19%02d-01-01", i % 100);
        count[shard_of_key(key, (size_t)len)]++;
    }
    unsigned lo = N, hi = 0;
    double chi2 = 0;
    for (uint32_t s = 0; s < SHARD_COUNT; s++) {
        lo = count[s] < lo ? count[s] : lo;
        hi = count[s] > hi ? count[s] : hi;
        chi2 += (count[s] - 100.0) * (count[s] - 100.0) / 100.0;
    }
    assert_true(lo >= 50 && hi <= 160);      /* Poisson(100): 5 sigma either side */
    assert_true(chi2 > 3600 && chi2 < 4600); /* 4095 degrees of freedom: about 4095 +- 91 */
}

static void test_numbers_per_shard(void **state)
{
    (void)state;
    assert_int_equal(shard_number(0, 0), 0);
    assert_int_equal(shard_number(7, 0), 7);
    assert_int_equal(shard_number(7, 1), 7 + SHARD_COUNT);
    for (uint64_t seq = 0; seq < 5000; seq += 7)
        for (uint32_t s = 0; s < SHARD_COUNT; s += 97) {
            uint64_t n = shard_number(s, seq);
            assert_int_equal(shard_of_number(n), s);
            assert_int_equal(shard_seq_of_number(n), seq);
        }
}

/* Pinned when the function was chosen (XXH3-64 mod 4096 of the identity key): a change here would move
 * patients of existing clusters into other shards. */
static void test_known_answers(void **state)
{
    (void)state;
    assert_int_equal(shard_of_key("ana maria lopez\0"
                                  "1990-01-02",
                                  26),
                     3780);
    assert_int_equal(shard_of_key("", 0), 1218);
}

static void mac_of(unsigned char mac[32], int i)
{
    memset(mac, 0, 32);
    memcpy(mac, &i, sizeof i);
    mac[31] = 0x5a;
}

static void test_shard_ids_mint_after_what_they_learned(void **state)
{
    (void)state;
    shard_ids *ids = shard_ids_new();
    unsigned char m[32];
    uint64_t n;
    mac_of(m, 1);
    assert_false(shard_ids_get(ids, m, &n));
    assert_int_equal(shard_ids_mint(ids, m, 5), shard_number(5, 0));
    assert_true(shard_ids_get(ids, m, &n));
    assert_int_equal(n, shard_number(5, 0));
    mac_of(m, 2);
    assert_int_equal(shard_ids_mint(ids, m, 5), shard_number(5, 1)); /* the shard's next */
    mac_of(m, 3);
    assert_int_equal(shard_ids_mint(ids, m, 6), shard_number(6, 0)); /* another shard counts on its own */
    /* learned from a changelog: sequence 41 of shard 5 (another node minted up to there) */
    mac_of(m, 4);
    assert_true(shard_ids_learn(ids, m, shard_number(5, 41)));
    mac_of(m, 5);
    assert_int_equal(shard_ids_mint(ids, m, 5), shard_number(5, 42));
    /* the same entry again is fine; a second number for an identity is refused and changes nothing */
    mac_of(m, 4);
    assert_true(shard_ids_learn(ids, m, shard_number(5, 41)));
    assert_false(shard_ids_learn(ids, m, shard_number(5, 99)));
    assert_true(shard_ids_get(ids, m, &n));
    assert_int_equal(n, shard_number(5, 41));
    mac_of(m, 6);
    assert_int_equal(shard_ids_mint(ids, m, 5), shard_number(5, 43)); /* 99 was never learned */
    assert_int_equal(shard_ids_count(ids), 6);
    /* many identities in a few shards: all distinct, each shard's sequence dense */
    for (int i = 100; i < 20100; i++) {
        mac_of(m, i);
        uint64_t x = shard_ids_mint(ids, m, (uint32_t)(i % 3));
        assert_int_equal(shard_of_number(x), i % 3);
    }
    mac_of(m, 20099);
    assert_true(shard_ids_get(ids, m, &n));
    assert_int_equal(n, shard_number(2, 6666)); /* the 6,667th of shard 2 (101, 104, ..., 20099) */
    shard_ids_free(ids);
}

/* Changelog entries and floors come from Kafka: numbers no shard could mint are refused (learn) or ignored
 * (floor), so a mint stays in its shard, past what the shard learned and at or past the floor. */
static void test_shard_ids_refuse_numbers_past_any_shard(void **state)
{
    (void)state;
    shard_ids *ids = shard_ids_new();
    unsigned char m[32];
    uint64_t n;
    /* UINT64_MAX, the identity index's empty slot: was "learned" (true) and then not found */
    mac_of(m, 1);
    assert_false(shard_ids_learn(ids, m, UINT64_MAX));
    assert_false(shard_ids_get(ids, m, &n));
    assert_int_equal(shard_ids_count(ids), 0);
    /* sequence 2^52 - 1 of shard 7: the shard's next number wrapped to 7, patient 7's */
    mac_of(m, 2);
    assert_true(shard_ids_learn(ids, m, 7));
    mac_of(m, 3);
    assert_false(shard_ids_learn(ids, m, shard_number(7, UINT64_MAX / SHARD_COUNT)));
    assert_false(shard_ids_learn(ids, m, (uint64_t)1 << 63));
    assert_true(shard_ids_learn(ids, m, ((uint64_t)1 << 63) - SHARD_COUNT + 7)); /* the last one learned */
    mac_of(m, 4);
    n = shard_ids_mint(ids, m, 7);
    assert_int_equal(shard_of_number(n), 7);
    assert_true(n > ((uint64_t)1 << 63) - SHARD_COUNT + 7); /* past it (kept, not wrapped) */
    assert_true(shard_ids_get(ids, m, &n));
    /* a floor near 2^64: mints fell to 9 (the sequence wrapped), below it; now ignored, 10000 kept */
    shard_ids_floor(ids, 10000);
    shard_ids_floor(ids, UINT64_MAX - 10);
    mac_of(m, 5);
    n = shard_ids_mint(ids, m, 9);
    assert_int_equal(shard_of_number(n), 9);
    assert_true(n >= 10000 && n < 10000 + SHARD_COUNT);
    assert_int_equal(shard_ids_count(ids), 4);
    shard_ids_free(ids);
}

static void test_marker_runs_keep_the_order(void **state)
{
    (void)state;
    /* T 100..102, by-shard 7, T 103, T 110 (a gap: still one run), by-shard 8..9 */
    const uint8_t topics[] = {0, 0, 0, 1, 0, 0, 1, 1};
    const int64_t offs[] = {100, 101, 102, 7, 103, 110, 8, 9};
    unsigned char key[MARKER_KEY];
    buf v = {0};
    marker_encode(5, 8, topics, offs, 8, key, &v);
    int32_t p = -1;
    assert_true(marker_key_decode(key, MARKER_KEY, &p));
    assert_int_equal(p, 5);
    assert_int_equal(key[5], 0);
    assert_int_equal(ms_get_be64(key + 6), 100);
    uint32_t count;
    marker_run *runs;
    size_t n;
    assert_true(marker_value_decode(v.data, v.len, &count, &runs, &n));
    assert_int_equal(count, 8);
    assert_int_equal(n, 4);
    const marker_run want[] = {{0, 100, 103}, {1, 7, 8}, {0, 103, 111}, {1, 8, 10}};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(runs[i].topic, want[i].topic);
        assert_int_equal(runs[i].from, want[i].from);
        assert_int_equal(runs[i].to, want[i].to);
    }
    free(runs);
    /* malformed: a torn run, no runs, a zero count, a run that ends before it starts, another key */
    assert_false(marker_value_decode(v.data, v.len - 1, &count, &runs, &n));
    assert_false(marker_value_decode(v.data, 4, &count, &runs, &n));
    unsigned char bad[4 + MARKER_RUN];
    memcpy(bad, v.data, sizeof bad);
    memset(bad, 0, 4);
    assert_false(marker_value_decode(bad, sizeof bad, &count, &runs, &n));
    memcpy(bad, v.data, sizeof bad);
    ms_set_be64(bad + 4 + 9, 50); /* to 50 < from 100 */
    assert_false(marker_value_decode(bad, sizeof bad, &count, &runs, &n));
    assert_false(marker_key_decode(key, MARKER_KEY - 1, &p));
    key[0] = 'X';
    assert_false(marker_key_decode(key, MARKER_KEY, &p));
    buf_free(&v);
}

static void test_marker_holds_the_shards_of_a_partition(void **state)
{
    (void)state;
    /* T had 4 partitions, now 8: partition 6's shards were in 2 */
    assert_true(marker_holds_shards_of(6, 8, 6));
    assert_true(marker_holds_shards_of(2, 4, 6));
    assert_false(marker_holds_shards_of(2, 8, 6)); /* 2's batches since the doubling: 6's records forwarded */
    assert_false(marker_holds_shards_of(3, 4, 6));
    assert_true(marker_holds_shards_of(2, 4, 2));
    assert_true(marker_holds_shards_of(0, 1, 7)); /* one partition once: it held every shard */
    /* the rule agrees with the shards themselves: a shard of p today was in p mod P' then */
    for (uint32_t s = 0; s < SHARD_COUNT; s += 13)
        for (int32_t now = 2; now <= 64; now *= 2)
            for (int32_t then = 1; then <= now; then *= 2)
                assert_true(marker_holds_shards_of(shard_partition(s, then), (uint32_t)then, shard_partition(s, now)));
}

/* A seeded cluster (pipeline/seed_table.h, ingest/cluster_seed.h): no shard mints below the seeding store's
 * patient count, whatever numbers the shard learned; the table routes old numbers by their identity's shard. */
static void test_seed_floor_and_table(void **state)
{
    (void)state;
    shard_ids *ids = shard_ids_new();
    unsigned char m[32];
    mac_of(m, 1);
    assert_true(shard_ids_learn(ids, m, 7)); /* an old patient, number 7, whose identity is in shard 3000 */
    shard_ids_floor(ids, 10000);
    shard_ids_floor(ids, 5); /* only ever raised */
    for (uint32_t shard = 0; shard < SHARD_COUNT; shard += 97) {
        mac_of(m, (int)(1000 + shard));
        uint64_t n = shard_ids_mint(ids, m, shard);
        assert_true(n >= 10000);
        assert_int_equal(shard_of_number(n), shard);
        assert_true(n < 10000 + SHARD_COUNT); /* the first number of the shard at or past the floor */
    }
    mac_of(m, 1);
    uint64_t n;
    assert_true(shard_ids_get(ids, m, &n));
    assert_int_equal(n, 7);
    shard_ids_free(ids);

    /* the table: two chunks, an erased number, numbers past it */
    seed_table t = {0};
    unsigned char v[2 * 4] = {0x0b, 0xb8, 0xff, 0xff, 0x00, 0x01, 0x0f, 0xff}; /* 3000, none, 1, 4095 */
    assert_true(seed_table_put(&t, 0, v, sizeof v));
    assert_true(seed_table_put(&t, SEED_CHUNK, v, 2));
    assert_int_equal(seed_table_shard(&t, 0), 3000);
    assert_int_equal(seed_table_shard(&t, 1), shard_of_number(1)); /* erased: its own */
    assert_int_equal(seed_table_shard(&t, 2), 1);
    assert_int_equal(seed_table_shard(&t, 3), 4095);
    assert_int_equal(seed_table_shard(&t, 4), shard_of_number(4)); /* no chunk said */
    assert_int_equal(seed_table_shard(&t, SEED_CHUNK), 3000);
    assert_int_equal(seed_table_shard(&t, 1u << 30), shard_of_number(1u << 30));
    assert_false(seed_table_put(&t, 1, v, sizeof v)); /* not a chunk's first number */
    assert_false(seed_table_put(&t, 0, v, 3));        /* half an entry */
    assert_false(seed_table_put(&t, 0, v, 0));
    seed_table_free(&t);

    unsigned char k[SEED_CHUNK_KEY];
    uint64_t first;
    seed_chunk_key(3 * SEED_CHUNK, k);
    assert_true(seed_chunk_key_decode(k, sizeof k, &first));
    assert_int_equal(first, 3 * SEED_CHUNK);
    assert_false(seed_chunk_key_decode(k, sizeof k - 1, &first));
    seed_progress p = {.patients = 120, .identities = 120, .next_pos = 57, .done = false}, q;
    unsigned char pv[SEED_PROGRESS];
    seed_progress_encode(&p, pv);
    assert_true(seed_progress_decode("S", 1, pv, sizeof pv, &q));
    assert_int_equal(q.patients, 120);
    assert_int_equal(q.identities, 120);
    assert_int_equal(q.next_pos, 57);
    assert_false(q.done);
    assert_false(seed_progress_decode("L", 1, pv, sizeof pv, &q));
    assert_false(seed_progress_decode("S", 1, pv, sizeof pv - 1, &q));
    p.identities = 121; /* more published than there are */
    seed_progress_encode(&p, pv);
    assert_false(seed_progress_decode("S", 1, pv, sizeof pv, &q));
}

/* A chunk's first number comes from Kafka (T.seed's key): past the table's limit it is refused and changes
 * nothing. */
static void test_seed_table_refuses_far_chunks(void **state)
{
    (void)state;
    seed_table t = {0};
    unsigned char v[2] = {0x0b, 0xb8}; /* 3000 */
    assert_true(seed_table_put(&t, 0, v, sizeof v));
    uint64_t n = t.n, cap = t.cap;
    assert_false(seed_table_put(&t, (uint64_t)1 << 26, v, sizeof v)); /* the first number past the limit */
    /* the fuzzer's key: "L" 00 00 00 00 fe 10 00 00 made a node allocate 8 GiB */
    assert_false(seed_table_put(&t, 0xfe100000u, v, sizeof v));
    assert_false(seed_table_put(&t, (uint64_t)1 << 63, v, sizeof v)); /* its capacity doubled forever */
    /* a whole chunk whose end wraps to 0: it was written below the table */
    unsigned char *full = calloc(2, SEED_CHUNK);
    assert_non_null(full);
    assert_false(seed_table_put(&t, 0 - (uint64_t)SEED_CHUNK, full, 2 * SEED_CHUNK));
    free(full);
    assert_true(t.n == n && t.cap == cap);
    assert_int_equal(seed_table_shard(&t, 0), 3000);
    /* the last chunk below the limit is still taken */
    assert_true(seed_table_put(&t, ((uint64_t)1 << 26) - SEED_CHUNK, v, sizeof v));
    assert_int_equal(seed_table_shard(&t, ((uint64_t)1 << 26) - SEED_CHUNK), 3000);
    seed_table_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spellings_share_a_shard),
        cmocka_unit_test(test_partitions_keep_shards_whole),
        cmocka_unit_test(test_shards_spread_evenly),
        cmocka_unit_test(test_numbers_per_shard),
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_shard_ids_mint_after_what_they_learned),
        cmocka_unit_test(test_shard_ids_refuse_numbers_past_any_shard),
        cmocka_unit_test(test_marker_runs_keep_the_order),
        cmocka_unit_test(test_marker_holds_the_shards_of_a_partition),
        cmocka_unit_test(test_seed_floor_and_table),
        cmocka_unit_test(test_seed_table_refuses_far_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

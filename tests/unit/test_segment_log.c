/*
 * test_segment_log.c - appends the caller fills in place (seglog_fill_*, src/store/segment_log.h): a fill
 * of many chunks written while it is filled (AIO) reads back the same from the cache and from the file;
 * a fill whose bytes wrap the end of the cache is whole in the cache (the mirror mapping); a fill that
 * would overwrite the cache bytes of a fill still in flight goes to a buffer of its own and leaves the
 * other's bytes alone; a short write is a full disk; a fill given up leaves a hole and the log goes on;
 * an injected fault refuses the fill; a read of bytes of a fill in flight waits until they are final
 * (ready in the cache, or the fill ended when it is not cached); and threads filling and reading at once,
 * over a small cache that wraps often, always read back what they wrote.
 */
#include "unit.h"

#include "store/segment_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>

#define MiB ((size_t)1 << 20)
#define SEGMENT ((uint64_t)64 << 20)

/* The byte at offset i of the append tagged k. */
static unsigned char pattern(unsigned k, size_t i) { return (unsigned char)(k * 131u + i * 7u + (i >> 12)); }

static segment_log *open_log(const char *dir, uint64_t cache, uint64_t end)
{
    segment_log *l = NULL;
    ms_err e = {0};
    assert_int_equal(seglog_open(&l, dir, SEGMENT, cache, end, &e), MS_OK);
    return l;
}

/* Fill len bytes tagged k in steps of step bytes, saying each step is ready; returns end's code. */
static ms_code fill(segment_log *l, unsigned k, size_t len, size_t step, uint64_t *pos, ms_err *e)
{
    seglog_fill f;
    ms_code rc = seglog_fill_begin(l, len, &f, e);
    if (rc != MS_OK) return rc;
    for (size_t at = 0; at < len;) {
        size_t n = len - at < step ? len - at : step;
        for (size_t i = 0; i < n; i++)
            f.dst[at + i] = pattern(k, at + i);
        at += n;
        seglog_fill_ready(&f, at);
    }
    memset(f.dst + len, 0, f.len - len);
    *pos = f.pos;
    return seglog_fill_end(&f, true, e);
}

/* Does the log hold the append tagged k of len bytes at pos? */
static bool holds(segment_log *l, unsigned k, uint64_t pos, size_t len)
{
    unsigned char *back = ms_malloc(len ? len : 1);
    ms_err e = {0};
    bool ok = seglog_read(l, pos, back, len, &e) == MS_OK;
    for (size_t i = 0; i < len && ok; i++)
        ok = back[i] == pattern(k, i);
    free(back);
    return ok;
}

/* Overwrite [pos, pos + len) of the segment file behind the log's back (not its cache). */
static void scribble_file(const char *dir, uint64_t pos, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%012llu.seg", dir, (unsigned long long)(pos / SEGMENT));
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    unsigned char *junk = ms_malloc(len);
    memset(junk, 0xEE, len);
    assert_int_equal(pwrite(fd, junk, len, (off_t)(pos % SEGMENT)), (ssize_t)len);
    free(junk);
    close(fd);
}

static void test_fill_in_chunks_reads_back_from_cache_and_file(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    segment_log *l = open_log(dir, 16 * MiB, 0);
    ms_err e = {0};
    uint64_t pos[3];
    size_t len[3] = {5 * MiB + 123, 4096, 3 * MiB}; /* many chunks and a tail; one block; whole chunks */
    for (unsigned k = 0; k < 3; k++)
        assert_int_equal(fill(l, k, len[k], 100000 + k, &pos[k], &e), MS_OK);
    assert_true(pos[1] > pos[0] && pos[2] > pos[1]);
    assert_int_equal(pos[1] % SEGLOG_ALIGN, 0);
    assert_int_equal(seglog_sync(l, &e), MS_OK);
    for (unsigned k = 0; k < 3; k++)
        assert_true(holds(l, k, pos[k], len[k]));
    uint64_t end = seglog_end(l);
    /* the file holds the same bytes, and the padding after the first append is zero */
    segment_log *cold = open_log(dir, 0, end);
    for (unsigned k = 0; k < 3; k++)
        assert_true(holds(cold, k, pos[k], len[k]));
    unsigned char pad[64];
    assert_int_equal(seglog_read(cold, pos[0] + len[0], pad, sizeof pad, &e), MS_OK);
    for (size_t i = 0; i < sizeof pad; i++)
        assert_int_equal(pad[i], 0);
    seglog_close(cold);
    /* and the cache answers without the file: scribbled on, the first log still reads the bytes */
    scribble_file(dir, pos[2], 4096);
    assert_true(holds(l, 2, pos[2], len[2]));
    seglog_close(l);
    unit_rmtree(dir);
}

static void test_fill_that_wraps_the_cache_is_whole(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    segment_log *l = open_log(dir, 3 * MiB, 0);
    ms_err e = {0};
    uint64_t p0, p1;
    assert_int_equal(fill(l, 1, 2 * MiB, MiB, &p0, &e), MS_OK);
    assert_int_equal(fill(l, 2, 2 * MiB + 5000, 300000, &p1, &e), MS_OK); /* [2, 4 MiB) wraps at 3 MiB */
    assert_true(p1 % (3 * MiB) + 2 * MiB > 3 * MiB);
    scribble_file(dir, p1, 2 * MiB + 8192); /* the file no longer holds it: a read must come from the cache */
    assert_true(holds(l, 2, p1, 2 * MiB + 5000));
    seglog_close(l);
    unit_rmtree(dir);
}

static void test_fill_over_a_filling_one_takes_its_own_buffer(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    segment_log *l = open_log(dir, 4 * MiB, 0);
    ms_err e = {0};
    seglog_fill a, b;
    assert_int_equal(seglog_fill_begin(l, MiB, &a, &e), MS_OK);
    assert_true(a.cached);
    assert_int_equal(seglog_fill_begin(l, 3 * MiB + MiB / 2, &b, &e), MS_OK); /* would reuse a's first half */
    assert_false(b.cached);
    for (size_t i = 0; i < b.len; i++)
        b.dst[i] = pattern(9, i);
    for (size_t i = 0; i < a.len; i++)
        a.dst[i] = pattern(8, i);
    uint64_t pa = a.pos, pb = b.pos;
    assert_int_equal(seglog_fill_end(&b, true, &e), MS_OK);
    assert_int_equal(seglog_fill_end(&a, true, &e), MS_OK);
    assert_true(holds(l, 8, pa, MiB));
    assert_true(holds(l, 9, pb, 3 * MiB + MiB / 2));
    segment_log *cold = open_log(dir, 0, seglog_end(l));
    assert_true(holds(cold, 8, pa, MiB));
    assert_true(holds(cold, 9, pb, 3 * MiB + MiB / 2));
    seglog_close(cold);
    /* with nothing in flight, the next fill is cached again */
    assert_int_equal(seglog_fill_begin(l, MiB, &a, &e), MS_OK);
    assert_true(a.cached);
    assert_int_equal(seglog_fill_end(&a, false, &e), MS_OK);
    seglog_close(l);
    unit_rmtree(dir);
}

static void test_fill_short_write_is_disk_full_and_given_up_is_a_hole(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    segment_log *l = open_log(dir, 16 * MiB, 0);
    ms_err e = {0};
    uint64_t p0, p1, p2;
    seglog_inject_short_write(l, MiB + MiB / 2);
    assert_int_equal(fill(l, 1, 4 * MiB, 200000, &p0, &e), MS_EFULL);
    assert_true(unit_has_str(e.msg, "disk full"));
    seglog_fill f;
    assert_int_equal(seglog_fill_begin(l, 2 * MiB, &f, &e), MS_OK);
    p1 = f.pos;
    memset(f.dst, 0x55, MiB + 1);
    seglog_fill_ready(&f, MiB + 1); /* one chunk on its way */
    assert_int_equal(seglog_fill_end(&f, false, &e), MS_OK);
    assert_int_equal(fill(l, 3, 3 * MiB, 70000, &p2, &e), MS_OK);
    assert_true(p2 > p1 && p1 > p0);
    assert_int_equal(seglog_sync(l, &e), MS_OK);
    assert_true(holds(l, 3, p2, 3 * MiB));
    segment_log *cold = open_log(dir, 0, seglog_end(l));
    assert_true(holds(cold, 3, p2, 3 * MiB));
    seglog_close(cold);
    seglog_inject_fault(l, EIO);
    assert_int_equal(seglog_fill_begin(l, 4096, &f, &e), MS_EIO);
    seglog_inject_fault(l, 0);
    seglog_close(l);
    unit_rmtree(dir);
}

typedef struct {
    segment_log *log;
    uint64_t pos;
    size_t len;
    unsigned char *out;
    _Atomic bool done;
} reader;

static void *read_it(void *arg)
{
    reader *r = arg;
    ms_err e = {0};
    if (seglog_read(r->log, r->pos, r->out, r->len, &e) != MS_OK) memset(r->out, 0xEE, r->len);
    atomic_store(&r->done, true);
    return NULL;
}

/* Start a reader of [pos, pos + len); after 100 ms, has it returned? */
static bool read_returns(pthread_t *th, reader *r, segment_log *l, uint64_t pos, size_t len)
{
    *r = (reader){.log = l, .pos = pos, .len = len, .out = ms_malloc(len)};
    atomic_store(&r->done, false);
    assert_int_equal(pthread_create(th, NULL, read_it, r), 0);
    usleep(100000);
    return atomic_load(&r->done);
}

static void expect_read(pthread_t th, reader *r, unsigned k, size_t from)
{
    pthread_join(th, NULL);
    for (size_t i = 0; i < r->len; i++)
        assert_int_equal(r->out[i], pattern(k, from + i));
    free(r->out);
}

static void test_read_of_a_fill_in_flight_waits_until_final(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    for (int cached = 1; cached >= 0; cached--) {
        segment_log *l = open_log(dir, cached ? 16 * MiB : 0, cached ? 0 : 64 * MiB);
        ms_err e = {0};
        seglog_fill f;
        assert_int_equal(seglog_fill_begin(l, 2 * MiB, &f, &e), MS_OK);
        assert_int_equal(f.cached, cached);
        for (size_t i = 0; i < MiB; i++)
            f.dst[i] = pattern(4, i);
        seglog_fill_ready(&f, MiB);
        pthread_t a, b;
        reader ra, rb;
        /* cached: what is ready reads at once; uncached: nothing reads before the fill ends */
        assert_int_equal(read_returns(&a, &ra, l, f.pos + MiB / 2, 4096), cached);
        assert_false(read_returns(&b, &rb, l, f.pos + MiB - 4096, 8192)); /* half of it not final */
        for (size_t i = MiB; i < 2 * MiB; i++)
            f.dst[i] = pattern(4, i);
        seglog_fill_ready(&f, 2 * MiB);
        if (cached) expect_read(b, &rb, 4, MiB - 4096);
        assert_int_equal(seglog_fill_end(&f, true, &e), MS_OK);
        if (!cached) expect_read(b, &rb, 4, MiB - 4096);
        expect_read(a, &ra, 4, MiB / 2);
        seglog_close(l);
    }
    unit_rmtree(dir);
}

/* A cached fill sealed but not ended (the writer reads a batch while it is sealed: ingest.c), then another
 * fill that cannot be cached (it would overwrite the first's ring bytes) raises ring_low past it: a read of
 * the first's sealed bytes goes to the file, so it waits for the fill's end (it read zeros before: the
 * commit then failed its checksum as "corrupt"). */
static void test_read_of_a_cached_fill_passed_by_ring_low_waits_for_its_end(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    segment_log *l = open_log(dir, 4 * MiB, 0);
    ms_err e = {0};
    seglog_fill a, b;
    size_t alen = 64 * 1024; /* under one write chunk: written at its end */
    assert_int_equal(seglog_fill_begin(l, alen, &a, &e), MS_OK);
    assert_true(a.cached);
    for (size_t i = 0; i < alen; i++)
        a.dst[i] = pattern(8, i);
    seglog_fill_ready(&a, alen);
    pthread_t ta, tb;
    reader ra, rb;
    assert_true(read_returns(&ta, &ra, l, a.pos, 4096)); /* in the ring: at once */
    expect_read(ta, &ra, 8, 0);
    assert_int_equal(seglog_fill_begin(l, 4 * MiB, &b, &e), MS_OK);
    assert_false(b.cached);
    assert_false(read_returns(&tb, &rb, l, a.pos, 4096)); /* not in the ring any more, not in the file yet */
    assert_int_equal(seglog_fill_end(&a, true, &e), MS_OK);
    expect_read(tb, &rb, 8, 0);
    assert_int_equal(seglog_fill_end(&b, false, &e), MS_OK);
    seglog_close(l);
    unit_rmtree(dir);
}

typedef struct {
    segment_log *log;
    unsigned id;
    bool ok;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    unit_rng rng = {r->id * 7919 + 1};
    r->ok = true;
    for (unsigned round = 0; round < 24 && r->ok; round++) {
        unsigned k = r->id * 100 + round;
        size_t len = 1 + unit_below(&rng, 3 * (uint32_t)MiB);
        uint64_t pos;
        ms_err e = {0};
        r->ok = fill(r->log, k, len, 1 + unit_below(&rng, 400000), &pos, &e) == MS_OK && holds(r->log, k, pos, len);
    }
    return NULL;
}

static void test_threads_fill_and_read_over_a_small_cache(void **state)
{
    (void)state;
    char dir[64];
    unit_tmpdir(dir);
    segment_log *l = open_log(dir, 8 * MiB, 0);
    enum { T = 4 };
    pthread_t th[T];
    racer r[T];
    for (unsigned i = 0; i < T; i++) {
        r[i] = (racer){l, i + 1, false};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (unsigned i = 0; i < T; i++) /* all of them first: a failed assertion must not leave threads running */
        pthread_join(th[i], NULL);
    for (unsigned i = 0; i < T; i++)
        assert_true(r[i].ok);
    seglog_close(l);
    unit_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill_in_chunks_reads_back_from_cache_and_file),
        cmocka_unit_test(test_fill_that_wraps_the_cache_is_whole),
        cmocka_unit_test(test_fill_over_a_filling_one_takes_its_own_buffer),
        cmocka_unit_test(test_fill_short_write_is_disk_full_and_given_up_is_a_hole),
        cmocka_unit_test(test_read_of_a_fill_in_flight_waits_until_final),
        cmocka_unit_test(test_read_of_a_cached_fill_passed_by_ring_low_waits_for_its_end),
        cmocka_unit_test(test_threads_fill_and_read_over_a_small_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * unit.h - helpers shared by medstream's cmocka unit tests (tests/unit/test_*.c).
 *
 * Each test binary links every module of src/ except main.c, built with ASan+UBSan (see the Makefile).
 * What lives here: the cmocka includes in the order cmocka needs, a seeded PRNG so that property tests
 * are reproducible, temporary directories that tests create and always remove, a fixed scan
 * configuration (default schema, a fixed "now" and a fixed id key), 4 KiB-aligned zero-padded request
 * bodies the way http_server.c hands them to the writer, and a fork helper that runs a check whose
 * failure may be a memory error in a child process, so that one broken case cannot take down the
 * whole binary. Everything is static inline: each test file uses what it needs.
 */
#ifndef MS_TEST_UNIT_H
#define MS_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pipeline/prepare.h"
#include "pipeline/record_scan.h"
#include "pipeline/schema.h"
#include "base/timefmt.h"
#include "base/util.h"

/* ---- reproducible randomness (splitmix64) ---- */

typedef struct {
    uint64_t s;
} unit_rng;

static inline uint64_t unit_rand(unit_rng *r) { return ms_splitmix64(&r->s); }

/* Uniform in [0, n). */
static inline uint32_t unit_below(unit_rng *r, uint32_t n) { return (uint32_t)(unit_rand(r) % n); }

/* ---- time ---- */

static inline int64_t unit_time(int y, int mo, int d, int h, int mi, int s)
{
    return (days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s) * 1000000LL;
}

/* The fixed ingest time of scan tests: 2026-06-15T12:00:00Z. */
static inline int64_t unit_now(void) { return unit_time(2026, 6, 15, 12, 0, 0); }

/* ---- scan configuration ---- */

static inline const unsigned char *unit_id_key(void)
{
    static const unsigned char key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                          17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    return key;
}

/* The fixed deid key of scan tests (the keyed public transforms, transforms.h). */
static inline const unsigned char *unit_deid_key(void)
{
    static const unsigned char key[32] = {0xde, 0x1d, 3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                          17,   18,   19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    return key;
}

static inline scan_config unit_scan_config(const schema *s)
{
    scan_config c = {.schema = s,
                     .max_record = (size_t)1 << 20,
                     .now_us = unit_now(),
                     .id_key = unit_id_key(),
                     .deid_key = unit_deid_key()};
    return c;
}

/* ---- text ---- */

static inline bool unit_has(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0) return true;
    return hay && memmem(hay, n, needle, m) != NULL;
}

static inline bool unit_has_str(const char *hay, const char *needle)
{
    return hay && unit_has(hay, strlen(hay), needle);
}

/* Exact length-and-bytes comparison of a (pointer, length) span with a C string. */
#define assert_span_equal(p, n, s)                                                                                     \
    do {                                                                                                               \
        const char *sp_ = (const char *)(p);                                                                           \
        size_t sn_ = (size_t)(n);                                                                                      \
        const char *ss_ = (s);                                                                                         \
        if (sn_ != strlen(ss_) || memcmp(sp_, ss_, sn_) != 0)                                                          \
            fail_msg("span \"%.*s\" (%zu bytes) != \"%s\" (%zu bytes)", (int)sn_, sp_, sn_, ss_, strlen(ss_));         \
    } while (0)

/* ---- request bodies as http_server.c hands them over: 4 KiB-aligned, zero-padded to 4 KiB ---- */

static inline char *unit_aligned_body(const char *text, size_t n, size_t *write_len)
{
    size_t cap = (n + 4095) & ~(size_t)4095;
    if (cap == 0) cap = 4096;
    void *p = NULL;
    if (posix_memalign(&p, 4096, cap) != 0) abort();
    memset(p, 0, cap);
    memcpy(p, text, n);
    *write_len = (n + 4095) & ~(size_t)4095;
    return p;
}

/* ---- temporary directories ---- */

static inline int unit_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Create a fresh directory under /tmp; out must hold 64 bytes. */
static inline void unit_tmpdir(char *out)
{
    snprintf(out, 64, "/tmp/medstream-unit-XXXXXX");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

static inline void unit_rmtree(const char *dir)
{
    if (dir && dir[0]) nftw(dir, unit_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- isolation ---- */

/* Run fn(arg) in a forked child. Returns true if the child returned true and exited cleanly (no
 * sanitizer report, no signal). Use for checks whose failure mode is memory corruption. */
static inline bool unit_run_isolated(bool (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) _exit(fn(arg) ? 0 : 3);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Scan one record that must be valid (the test fails with the scanner's message otherwise). */
static inline parsed_record unit_scan_ok(const scan_config *cfg, arena *mem, const char *text)
{
    parsed_record r;
    record_prepare_one(cfg, text, strlen(text), 1, mem, &r);
    if (r.rejected) fail_msg("rejected: %s", r.error);
    return r;
}

#endif

/*
 * util.h - the few helpers every medstream module shares: an error value, a growable byte
 * buffer, an arena for per-batch allocations, big-endian key encoding and the clock.
 *
 * Contract: nothing here does I/O except ms_now_us() reading the clock. Allocation failure is
 * treated as fatal (ms_oom aborts with a message): medstream cannot degrade gracefully without
 * memory, and pretending otherwise would spread unchecked NULLs through every layer.
 * Never put PHI into an ms_err message: messages name fields and positions, not values.
 */
#ifndef MS_UTIL_H
#define MS_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* An error as a value: a code for the caller's switch and a message for the human. */
typedef enum {
    MS_OK = 0,
    MS_EINVAL,    /* bad input: 400/422 */
    MS_ENOTFOUND, /* 404 */
    MS_EFULL,     /* disk or map full: 503, nothing stored */
    MS_EIO,       /* I/O failure: 503 */
    MS_ECORRUPT,  /* stored data failed a check: 500 */
    MS_ECONFLICT, /* 409 */
    MS_ESTOPPED,  /* shutting down: 503 */
    MS_EGONE,     /* existed, erased: 410 */
} ms_code;

typedef struct {
    ms_code code;
    char msg[240];
} ms_err;

/* Set *e (if not NULL) and return code. printf-style message. */
ms_code ms_fail(ms_err *e, ms_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *ms_code_name(ms_code code);

void ms_oom(void) __attribute__((noreturn));
void *ms_malloc(size_t n);
void *ms_calloc(size_t n, size_t size);
void *ms_realloc(void *p, size_t n);
char *ms_strndup(const char *s, size_t n);

/* Growable byte buffer; always NUL-terminated for convenience (len excludes the NUL). */
typedef struct {
    char *data;
    size_t len, cap;
} buf;

void buf_reserve(buf *b, size_t extra);
void buf_put(buf *b, const void *p, size_t n);
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_put_be64(buf *b, uint64_t v);
void buf_put_be32(buf *b, uint32_t v);
void buf_put_be16(buf *b, uint16_t v);
/* ULEB128 (7 bits a byte, low group first, the high bit set on every byte but the last; at most 10) and
 * its zigzag form for signed values (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...): the store's compact encodings
 * and Parquet's Thrift compact protocol. */
void buf_put_varint(buf *b, uint64_t v);
void buf_put_zigzag(buf *b, int64_t v);
/* The varint at *p (not past end) into *v, *p moved past it; false (nothing moved) when it is cut short
 * or longer than 10 bytes. */
bool ms_get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v);
bool ms_get_zigzag(const unsigned char **p, const unsigned char *end, int64_t *v);
static inline uint64_t ms_zigzag64(int64_t v)
{
    /* (v << 1) ^ (v >> 63), on unsigned values: no signed overflow, no shift of a negative number */
    uint64_t u = (uint64_t)v;
    return (u << 1) ^ ((u >> 63) ? UINT64_MAX : 0);
}
static inline int64_t ms_unzigzag64(uint64_t u) { return (int64_t)((u >> 1) ^ (0 - (u & 1))); }
void buf_free(buf *b);
/* Hand the bytes to the caller (malloc'd, NUL-terminated) and reset the buffer. */
char *buf_take(buf *b);
/* Append a whole file to out: files the program wrote itself (saved state, checkpoints). */
ms_code buf_read_file(buf *out, const char *path, ms_err *e);
/* The same for a file an operator names (config, schema, roles, rules and counters files, TLS
 * certificates): one past MS_SETTINGS_FILE_MAX bytes is refused (MS_EINVAL naming the path) as soon as that
 * much has been read, so that /dev/zero or a mistyped path to a huge file ends in an error, not in memory
 * exhaustion. */
#define MS_SETTINGS_FILE_MAX ((size_t)64 << 20)
ms_code buf_read_settings_file(buf *out, const char *path, ms_err *e);

/* The directory that holds path (trailing slashes dropped, then up to its last slash; "." when there is none). */
void ms_path_parent(const char *path, char *out, size_t cap);
/* Is path (which exists) dir or inside it, whatever links either is named through (realpath)? */
bool ms_path_inside(const char *path, const char *dir);

/* Arena: many small allocations freed at once (one per batch). */
typedef struct arena_chunk arena_chunk;
typedef struct {
    arena_chunk *head;
} arena;

void *arena_alloc(arena *a, size_t n);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void arena_free(arena *a);

static inline uint64_t ms_get_be64(const void *p)
{
    const unsigned char *b = p;
    return ((uint64_t)b[0] << 56) | ((uint64_t)b[1] << 48) | ((uint64_t)b[2] << 40) | ((uint64_t)b[3] << 32) |
           ((uint64_t)b[4] << 24) | ((uint64_t)b[5] << 16) | ((uint64_t)b[6] << 8) | (uint64_t)b[7];
}
static inline uint32_t ms_get_be32(const void *p)
{
    const unsigned char *b = p;
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | (uint32_t)b[3];
}
static inline uint16_t ms_get_be16(const void *p)
{
    const unsigned char *b = p;
    return (uint16_t)(((unsigned)b[0] << 8) | b[1]);
}
static inline void ms_set_be64(void *p, uint64_t v)
{
    unsigned char *b = p;
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
}
static inline void ms_set_be32(void *p, uint32_t v)
{
    unsigned char *b = p;
    for (int i = 3; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
}

/* splitmix64's finalizer: every bit of x moves every bit of the result. The hash of an integer key for a
 * table that takes its low bits (a multiplication alone leaves the low bits of the product depending only on
 * the low bits of the key: keys of one range then fill runs of neighbouring slots, fatal to linear probing). */
static inline uint64_t ms_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* splitmix64: the next number of the stream whose state is *s (advances it). The one PRNG step of the
 * project (benchmark generators, preload, property tests); not for anything secret (OpenSSL is). */
static inline uint64_t ms_splitmix64(uint64_t *s) { return ms_mix64(*s += UINT64_C(0x9E3779B97F4A7C15)); }

/* Wall clock, microseconds since the Unix epoch (UTC). */
int64_t ms_now_us(void);
/* Monotonic clock in seconds, for latency measurements. */
double ms_mono_s(void);
/* The instant ms milliseconds from now on clock (CLOCK_REALTIME or CLOCK_MONOTONIC, as the condition
 * variable waited on measures time): a pthread_cond_timedwait deadline. */
struct timespec ms_deadline(clockid_t clock, long ms);

#endif

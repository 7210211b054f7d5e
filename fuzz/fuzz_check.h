/*
 * fuzz_check.h - CHECK(c) for the libFuzzer targets: an invariant that must hold on every input; when it
 * does not, the target says which one (file, line, the expression) and aborts, so that libFuzzer keeps
 * the input as a crash. Never a value of the input in the message. And the few helpers every decoder target
 * needs: a copy of input bytes in an allocation of their exact size (so that ASan sees a read past them),
 * length bytes that split an input, a bounds test for what a decoder hands back.
 */
#ifndef MS_FUZZ_CHECK_H
#define MS_FUZZ_CHECK_H

#include "base/util.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);                                  \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* n bytes of the input in an allocation of their own exact size (1 byte for n = 0: malloc(0) may give NULL;
 * the code under test sees n, not the extra byte). */
static inline unsigned char *fuzz_copy(const uint8_t *p, size_t n)
{
    unsigned char *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    if (n) memcpy(c, p, n);
    return c;
}

/* A length from the length byte(s) at *p (255: 255 + the next byte), clipped to what is left after them;
 * *p and *n move past the length bytes. */
static inline size_t fuzz_take_len(const uint8_t **p, size_t *n)
{
    if (*n == 0) return 0;
    size_t len = (*p)[0];
    (*p)++, (*n)--;
    if (len == 255 && *n > 0) {
        len += (*p)[0];
        (*p)++, (*n)--;
    }
    return len < *n ? len : *n;
}

/* Does [p, p + len) lie inside [base, base + n)? */
static inline bool fuzz_inside(const void *p, size_t len, const void *base, size_t n)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return a >= b && a - b <= n && len <= n - (a - b);
}

/* Does b hold exactly the n bytes at p? */
static inline bool fuzz_same_bytes(const buf *b, const void *p, size_t n)
{
    return b->len == n && (!n || !memcmp(b->data, p, n));
}

#endif

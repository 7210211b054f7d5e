/*
 * fuzz_check.h - CHECK(c) for the libFuzzer targets: an invariant that must hold on every input; when it
 * does not, the target says which one (file, line, the expression) and aborts, so that libFuzzer keeps
 * the input as a crash. Never a value of the input in the message.
 */
#ifndef MS_FUZZ_CHECK_H
#define MS_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                                                       \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);                                  \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

#endif

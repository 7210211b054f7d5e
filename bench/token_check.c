/*
 * token_check.c - how long a bearer-token check takes (one SHA-256 and two LMDB reads in one read
 * transaction: the token, then its account), in process, against a store in DIR (a data directory made
 * by medstream init: a token of its admin account is issued there for the run and left to expire).
 * Build and run: make bench-token (on a throwaway data directory made by medstream init)
 */
#include "store/store.h"
#include "access/tokens.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: token_check DATA_DIR\n");
        return 2;
    }
    store *s;
    ms_err e;
    if (store_open(&s, argv[1], NULL, &e) != MS_OK) {
        fprintf(stderr, "token_check: %s\n", e.msg);
        return 1;
    }
    principal who = {"admin", "admin"}, got; /* tokens are issued only for existing, enabled accounts */
    char tok[TOKEN_TEXT], header[128];
    int64_t expires;
    if (token_issue(s, &who, 60, tok, &expires, &e) != MS_OK) {
        fprintf(stderr, "token_check: %s\n", e.msg);
        store_close(s);
        return 1;
    }
    snprintf(header, sizeof header, "Bearer %s", tok);
    enum { N = 200000 };
    double t0 = ms_mono_s();
    for (int i = 0; i < N; i++) {
        if (token_check(s, header, &got) != TOKEN_OK) {
            fprintf(stderr, "token_check: the token did not check\n");
            store_close(s);
            return 1;
        }
    }
    printf("token check: %.2f us each (mean of %d)\n", (ms_mono_s() - t0) / N * 1e6, N);
    store_close(s);
    return 0;
}

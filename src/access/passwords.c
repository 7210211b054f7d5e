/*
 * passwords.c - Argon2id hashing and random passwords (see passwords.h).
 *
 * Cost: t=3 passes over m=64 MiB, one lane: ~0.1-0.2 s per hash here, the right order for an
 * interactive login and far too slow for guessing.
 */
#include "access/passwords.h"

#include <argon2.h>
#include <openssl/rand.h>
#include <string.h>

#define T_COST 3
#define M_COST_KIB (64 * 1024)
#define LANES 1
#define SALT_LEN 16
#define HASH_LEN 32

ms_code password_hash(const char *password, size_t len, char out[PASSWORD_ENCODED_MAX], ms_err *e)
{
    if (len < PASSWORD_MIN || len > PASSWORD_MAX)
        return ms_fail(e, MS_EINVAL, "password must be %d to %d bytes", PASSWORD_MIN, PASSWORD_MAX);
    unsigned char salt[SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1) return ms_fail(e, MS_EIO, "random number generator failed");
    int rc = argon2id_hash_encoded(T_COST, M_COST_KIB, LANES, password, len, salt, sizeof salt, HASH_LEN, out,
                                   PASSWORD_ENCODED_MAX);
    if (rc != ARGON2_OK) return ms_fail(e, MS_EIO, "password hashing failed: %s", argon2_error_message(rc));
    return MS_OK;
}

bool password_verify(const char *encoded, const char *password, size_t len)
{
    if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0 || len > PASSWORD_MAX) return false;
    return argon2id_verify(encoded, password, len) == ARGON2_OK;
}

ms_code password_generate(char *out, size_t n, ms_err *e)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t i = 0;
    while (i < n) {
        unsigned char r[64];
        if (RAND_bytes(r, sizeof r) != 1) return ms_fail(e, MS_EIO, "random number generator failed");
        for (size_t j = 0; j < sizeof r && i < n; j++)
            if (r[j] < 248) out[i++] = alphabet[r[j] % 62]; /* 248 = 4 * 62: no modulo bias */
    }
    out[n] = 0;
    return MS_OK;
}

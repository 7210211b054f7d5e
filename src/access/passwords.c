/*
 * passwords.c - Argon2id hashing and random passwords (see passwords.h).
 *
 * Cost: t=3 passes over m=64 MiB, one lane: ~0.1-0.2 s per hash here, the right order for an
 * interactive login and far too slow for guessing; at most HASHES_AT_ONCE at a time (memory).
 */
#include "access/passwords.h"

#include <argon2.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

#define T_COST 3
#define M_COST_KIB (64 * 1024)
#define LANES 1
#define SALT_LEN 16
#define HASH_LEN 32
/* Hashes computed at once: each holds M_COST_KIB, so logins sent side by side (every name, known or not,
 * costs one: users.c's decoy) hold at most 256 MiB; the rest wait their turn (they held 64 MiB each: 12 at
 * once took a server to 782 MiB). */
#define HASHES_AT_ONCE 4

static pthread_mutex_t hashing_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hashing_done = PTHREAD_COND_INITIALIZER;
static int hashing;

static void hashing_begin(void)
{
    pthread_mutex_lock(&hashing_lock);
    while (hashing >= HASHES_AT_ONCE)
        pthread_cond_wait(&hashing_done, &hashing_lock);
    hashing++;
    pthread_mutex_unlock(&hashing_lock);
}

static void hashing_end(void)
{
    pthread_mutex_lock(&hashing_lock);
    hashing--;
    pthread_cond_signal(&hashing_done);
    pthread_mutex_unlock(&hashing_lock);
}

ms_code password_hash(const char *password, size_t len, char out[PASSWORD_ENCODED_MAX], ms_err *e)
{
    if (len < PASSWORD_MIN || len > PASSWORD_MAX)
        return ms_fail(e, MS_EINVAL, "password must be %d to %d bytes", PASSWORD_MIN, PASSWORD_MAX);
    unsigned char salt[SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1) return ms_fail(e, MS_EIO, "random number generator failed");
    hashing_begin();
    int rc = argon2id_hash_encoded(T_COST, M_COST_KIB, LANES, password, len, salt, sizeof salt, HASH_LEN, out,
                                   PASSWORD_ENCODED_MAX);
    hashing_end();
    if (rc != ARGON2_OK) return ms_fail(e, MS_EIO, "password hashing failed: %s", argon2_error_message(rc));
    return MS_OK;
}

bool password_verify(const char *encoded, const char *password, size_t len)
{
    if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0 || len > PASSWORD_MAX) return false;
    hashing_begin();
    bool ok = argon2id_verify(encoded, password, len) == ARGON2_OK;
    hashing_end();
    return ok;
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

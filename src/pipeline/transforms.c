/*
 * transforms.c - the public copy's value transforms and the derivation of their secrets (see
 * transforms.h). The restricted ZIP3 areas are data/zip3_restricted.txt, compiled by the Makefile into
 * build/gen/zip3_restricted.inc (one "NNN", a line). Keys are 32 bytes (never longer than SHA-256's
 * 64-byte block: no key hashing step).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_* (see hmac below) */
#include "pipeline/transforms.h"

#include "base/timefmt.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

static const char *const zip3_restricted[] = {
#include "zip3_restricted.inc"
};

#define NZIP3 ((int)(sizeof zip3_restricted / sizeof zip3_restricted[0]))

int tf_zip3_restricted_count(void) { return NZIP3; }
const char *tf_zip3_restricted_at(int i) { return i >= 0 && i < NZIP3 ? zip3_restricted[i] : NULL; }

bool tf_zip3_restricted(const char p[3])
{
    for (int i = 0; i < NZIP3; i++)
        if (memcmp(zip3_restricted[i], p, 3) == 0) return true;
    return false;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

bool tf_zip3(const char *s, size_t n, char out[4])
{
    bool ok = (n == 5 && all_digits(s, 5)) || (n == 9 && all_digits(s, 9)) ||
              (n == 10 && all_digits(s, 5) && s[5] == '-' && all_digits(s + 6, 4));
    if (!ok) return false;
    memcpy(out, tf_zip3_restricted(s) ? "000" : s, 3);
    out[3] = 0;
    return true;
}

/* HMAC-SHA256 (RFC 2104) of a 32-byte key over SHA256_* (as identity.c does): the one-shot HMAC()
 * fetches the algorithm under a lock on every call, five times slower for these short messages. */
static void hmac(const unsigned char *key, size_t key_len, const void *msg, size_t n, unsigned char out[32])
{
    unsigned char block[SHA256_CBLOCK], inner[SHA256_DIGEST_LENGTH];
    SHA256_CTX c;
    for (int half = 0; half < 2; half++) {
        for (size_t i = 0; i < SHA256_CBLOCK; i++)
            block[i] = (unsigned char)((i < key_len ? key[i] : 0) ^ (half ? 0x5c : 0x36));
        SHA256_Init(&c);
        SHA256_Update(&c, block, sizeof block);
        if (half == 0) {
            SHA256_Update(&c, msg, n);
            SHA256_Final(inner, &c);
        } else {
            SHA256_Update(&c, inner, sizeof inner);
            SHA256_Final(out, &c);
        }
    }
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(&c, sizeof c);
}

void tf_patient_keys(const unsigned char deid_key[32], const char *identity_key, size_t identity_key_len, tf_keys *out)
{
    memset(out, 0, sizeof *out);
    hmac(deid_key, 32, "pseudonym", 9, out->store_pseudonym);
    if (!identity_key) return;
    buf msg = {0};
    buf_put(&msg, "patient", 8); /* with its NUL: "patient" 0x00 identity key */
    buf_put(&msg, identity_key, identity_key_len);
    unsigned char p[32], seed[32];
    hmac(deid_key, 32, msg.data, msg.len, p);
    OPENSSL_cleanse(msg.data, msg.len);
    buf_free(&msg);
    hmac(p, 32, "date_shift", 10, seed);
    hmac(p, 32, "pseudonym", 9, out->patient_pseudonym);
    for (int i = 0; i < 8; i++)
        out->shift_seed = (out->shift_seed << 8) | seed[i];
    out->have_patient = true;
    OPENSSL_cleanse(p, sizeof p);
    OPENSSL_cleanse(seed, sizeof seed);
}

int tf_shift_days(uint64_t shift_seed, int max_days)
{
    if (max_days < 1) max_days = 1;
    uint64_t k = shift_seed % (uint64_t)(2 * max_days);
    return k < (uint64_t)max_days ? -(int)k - 1 : (int)(k - (uint64_t)max_days) + 1;
}

bool tf_date_of(const char *s, size_t n, int *y, int *m, int *d)
{
    if (n == 10) return date_parse(s, n, y, m, d);
    int64_t us;
    return n > 10 && time_parse_rfc3339(s, n, &us) && date_parse(s, 10, y, m, d);
}

bool tf_year(const char *s, size_t n, char out[5])
{
    int y, m, d;
    int64_t us;
    if (n == 10 && date_parse(s, n, &y, &m, &d)) {
        snprintf(out, 5, "%04d", y);
        return true;
    }
    if (n > 10 && time_parse_rfc3339(s, n, &us)) {
        int ty = time_year(us);
        if (ty < 0 || ty > 9999) return false;
        snprintf(out, 5, "%04d", ty);
        return true;
    }
    return false;
}

int tf_age_years(int y, int m, int d, int64_t event_us)
{
    int64_t days = event_us >= 0 ? event_us / 86400000000LL : -((-event_us + 86400000000LL - 1) / 86400000000LL);
    int64_t ey;
    unsigned em, ed;
    civil_from_days(days, &ey, &em, &ed);
    int64_t age = ey - y;
    if ((int)em < m || ((int)em == m && (int)ed < d)) age--;
    if (age < 0 || age > 100000) return -1;
    return (int)age;
}

static int age_of(const char *s, size_t n, int64_t event_us)
{
    int y, m, d;
    if (event_us == INT64_MIN || !tf_date_of(s, n, &y, &m, &d)) return -1;
    return tf_age_years(y, m, d, event_us);
}

bool tf_age(const char *s, size_t n, int64_t event_us, char out[8])
{
    int a = age_of(s, n, event_us);
    if (a < 0) return false;
    if (a >= TF_AGE_TOP)
        memcpy(out, "90+", 4);
    else
        snprintf(out, 8, "%d", a);
    return true;
}

bool tf_age_band(const char *s, size_t n, int64_t event_us, int width, char out[16])
{
    int a = age_of(s, n, event_us);
    if (a < 0 || width < 1 || width > TF_AGE_TOP) return false;
    if (a >= TF_AGE_TOP) {
        memcpy(out, "90+", 4);
        return true;
    }
    int lo = a / width * width, hi = lo + width - 1;
    if (hi > TF_AGE_TOP - 1) hi = TF_AGE_TOP - 1;
    if (lo == hi)
        snprintf(out, 16, "%d", lo);
    else
        snprintf(out, 16, "%d-%d", lo, hi);
    return true;
}

bool tf_date_shift(const char *s, size_t n, int days, buf *out)
{
    int y, m, d;
    if (!tf_date_of(s, n, &y, &m, &d)) return false;
    int64_t ny;
    unsigned nm, nd;
    civil_from_days(days_from_civil(y, (unsigned)m, (unsigned)d) + days, &ny, &nm, &nd);
    if (ny < 0 || ny > 9999) return false;
    buf_printf(out, "%04d-%02u-%02u", (int)ny, nm, nd);
    buf_put(out, s + 10, n - 10); /* the time of day and offset, as written */
    return true;
}

void tf_pseudonym(const unsigned char key[32], const char *s, size_t n, char out[TF_PSEUDONYM_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[32];
    hmac(key, 32, s, n, mac);
    for (int i = 0; i < TF_PSEUDONYM_HEX / 2; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[TF_PSEUDONYM_HEX] = 0;
}

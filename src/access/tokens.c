/*
 * tokens.c - bearer tokens and the login limiter (see tokens.h).
 */
#include "access/tokens.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

const char *token_status_text(token_status st)
{
    switch (st) {
    case TOKEN_OK: return "ok";
    case TOKEN_MISSING: return "missing bearer token (Authorization: Bearer <token>)";
    case TOKEN_MALFORMED: return "malformed bearer token";
    case TOKEN_UNKNOWN: return "unknown or revoked token";
    case TOKEN_EXPIRED: return "expired token";
    case TOKEN_NO_ACCOUNT: return "the token's account is disabled or deleted";
    case TOKEN_UNAVAILABLE: return "the store cannot be read to check the token (try again later)";
    }
    return "bad token";
}

static void base64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = a[(acc >> bits) & 63];
        }
    }
    if (bits) out[o++] = a[(acc << (6 - bits)) & 63];
    out[o] = 0;
}

ms_code token_issue_login(store *s, const principal *who, const char *password_hash, int64_t ttl_s,
                          char out[TOKEN_TEXT], int64_t *expires, ms_err *e)
{
    unsigned char raw[32], hash[32];
    if (RAND_bytes(raw, sizeof raw) != 1) return ms_fail(e, MS_EIO, "random number generator failed");
    memcpy(out, "ms_", 3);
    base64url(raw, sizeof raw, out + 3);
    SHA256((const unsigned char *)out, strlen(out), hash);
    *expires = ms_now_us() + ttl_s * 1000000;
    return store_token_put(s, hash, *expires, who->user, who->role, password_hash, e);
}

ms_code token_issue(store *s, const principal *who, int64_t ttl_s, char out[TOKEN_TEXT], int64_t *expires, ms_err *e)
{
    return token_issue_login(s, who, NULL, ttl_s, out, expires, e);
}

/* The token text of an Authorization value, or NULL if it is not "Bearer ms_<43 base64url>". */
static const char *bearer(const char *authorization, token_status *st)
{
    if (!authorization || !*authorization) {
        *st = TOKEN_MISSING;
        return NULL;
    }
    *st = TOKEN_MALFORMED;
    if (strncasecmp(authorization, "Bearer ", 7) != 0) return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    if (strlen(t) != TOKEN_TEXT - 1 || strncmp(t, "ms_", 3) != 0) return NULL;
    for (const char *p = t + 3; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return NULL;
    return t;
}

token_status token_check(store *s, const char *authorization, principal *who)
{
    unsigned char hash[32];
    token_status st;
    const char *t = bearer(authorization, &st);
    if (!t) return st;
    SHA256((const unsigned char *)t, strlen(t), hash);
    store_read *r;
    if (store_read_begin(s, &r, NULL) != MS_OK) return TOKEN_UNAVAILABLE;
    int64_t expires = 0;
    bool found = false, has_account = false;
    store_account a;
    ms_code rc = store_token_get(r, hash, &expires, who->user, who->role, &found, NULL);
    if (rc == MS_OK && found) rc = store_account_get(r, who->user, &a, &has_account, NULL);
    store_read_end(r);
    if (rc != MS_OK) return TOKEN_UNAVAILABLE;
    if (!found) return TOKEN_UNKNOWN;
    if (expires <= ms_now_us()) return TOKEN_EXPIRED;
    if (!has_account || a.disabled) return TOKEN_NO_ACCOUNT;
    memcpy(who->role, a.role, sizeof who->role);
    return TOKEN_OK;
}

bool token_hash(const char *authorization, unsigned char out[32])
{
    token_status st;
    const char *t = bearer(authorization, &st);
    if (t) SHA256((const unsigned char *)t, strlen(t), out);
    return t != NULL;
}

ms_code token_revoke(store *s, const char *authorization, ms_err *e)
{
    token_status st;
    const char *t = bearer(authorization, &st);
    if (!t) return ms_fail(e, MS_EINVAL, "%s", token_status_text(st));
    unsigned char hash[32];
    SHA256((const unsigned char *)t, strlen(t), hash);
    return store_token_delete(s, hash, e);
}

/* ---- login limiter: recent failures and attempts in flight per user name ----
 *
 * A name's attempt is reserved before its password is checked (login_begin) and ended after (login_end), so
 * logins sent at once for one name count together: at most LOGIN_MAX_FAILURES checks in a window, however
 * many arrive side by side (they all passed a check made before any was recorded). Names sit in buckets of
 * LIMITER_WAYS picked by a hash keyed with a random seed, so no one can pick names that share a victim's
 * bucket; a name with failures in its window or an attempt in flight is evicted only when every way of its
 * bucket holds one, the oldest window first (a direct-mapped table let any name of the same slot clear a
 * locked-out name's failures). */

#define LIMITER_WAYS 8
#define LIMITER_BUCKETS 512 /* 4,096 names at once */

typedef struct {
    char user[STORE_USER_MAX];
    int failures, in_flight;
    int64_t window_start;
} limiter_slot;

static limiter_slot limiter[LIMITER_BUCKETS][LIMITER_WAYS];
static uint64_t limiter_seed;
static bool limiter_seeded;
static pthread_mutex_t limiter_lock = PTHREAD_MUTEX_INITIALIZER;

static bool slot_live(const limiter_slot *s, int64_t now)
{
    return s->in_flight > 0 || (s->failures > 0 && now - s->window_start <= (int64_t)LOGIN_WINDOW_S * 1000000);
}

/* Under limiter_lock: the name's slot; with create, a slot taken for it (NULL: every way has an attempt in
 * flight). */
static limiter_slot *slot_for(const char *user, int64_t now, bool create)
{
    if (!limiter_seeded) {
        if (RAND_bytes((unsigned char *)&limiter_seed, sizeof limiter_seed) != 1) limiter_seed = (uint64_t)now;
        limiter_seeded = true;
    }
    limiter_slot *b = limiter[XXH3_64bits_withSeed(user, strlen(user), limiter_seed) % LIMITER_BUCKETS], *victim = NULL;
    for (int i = 0; i < LIMITER_WAYS; i++) {
        limiter_slot *s = &b[i];
        if (s->user[0] && strcmp(s->user, user) == 0) {
            if (now - s->window_start > (int64_t)LOGIN_WINDOW_S * 1000000) s->failures = 0, s->window_start = now;
            return s;
        }
        if (s->in_flight) continue;
        bool live = slot_live(s, now);
        if (!victim || (slot_live(victim, now) && (!live || s->window_start < victim->window_start))) victim = s;
    }
    if (!create || !victim) return NULL;
    snprintf(victim->user, sizeof victim->user, "%s", user);
    victim->failures = victim->in_flight = 0;
    victim->window_start = now;
    return victim;
}

/* The name as a slot holds it: cut to STORE_USER_MAX - 1 bytes, for the lookup as for the slot, so that a
 * name longer than an account's can be (never a user's) still finds its slot when its attempt ends. */
static void limiter_key(const char *user, char key[STORE_USER_MAX])
{
    snprintf(key, STORE_USER_MAX, "%s", user);
}

bool login_begin(const char *user, int64_t now_us)
{
    char key[STORE_USER_MAX];
    limiter_key(user, key);
    pthread_mutex_lock(&limiter_lock);
    limiter_slot *s = slot_for(key, now_us, true);
    bool ok = s && s->failures + s->in_flight < LOGIN_MAX_FAILURES;
    if (ok) s->in_flight++;
    pthread_mutex_unlock(&limiter_lock);
    return ok;
}

void login_end(const char *user, login_outcome outcome, int64_t now_us)
{
    char key[STORE_USER_MAX];
    limiter_key(user, key);
    pthread_mutex_lock(&limiter_lock);
    limiter_slot *s = slot_for(key, now_us, false); /* an attempt in flight keeps its slot */
    if (s) {
        if (s->in_flight) s->in_flight--;
        if (outcome == LOGIN_OK) s->failures = 0;
        if (outcome == LOGIN_FAILED) s->failures++;
    }
    pthread_mutex_unlock(&limiter_lock);
}

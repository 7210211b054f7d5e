/*
 * tokens.c - bearer tokens (see tokens.h).
 */
#include "access/tokens.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

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

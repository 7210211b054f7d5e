/*
 * login_limiter.c - failed password checks per user name, from one client and from all (see login_limiter.h).
 */
#include "access/login_limiter.h"

#include "store/store.h"

#include <arpa/inet.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#define LIMITER_WAYS 8
#define LIMITER_BUCKETS 1024 /* 8,192 tallies at once: a name's, and a name's from each client */
#define CLIENT_KEY_MAX 64
/* 'n' name | 'c' name '\n' client: a name as a slot holds it is cut to STORE_USER_MAX - 1 bytes, so that a
 * name longer than an account's can be (never a user's) still finds its tally when its attempt ends */
#define KEY_MAX (1 + STORE_USER_MAX + 1 + CLIENT_KEY_MAX)

typedef struct {
    char key[KEY_MAX];
    int failures, in_flight;
    int64_t window_start, trusted_until; /* trusted_until: a client's sign-in as the name, plus LOGIN_TRUST_S */
} tally;

static tally tallies[LIMITER_BUCKETS][LIMITER_WAYS];
static uint64_t seed;
static bool seeded;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static const int64_t window_us = (int64_t)LOGIN_WINDOW_S * 1000000;

static bool tally_live(const tally *t, int64_t now)
{
    return t->in_flight > 0 || (t->failures > 0 && now - t->window_start <= window_us) || t->trusted_until > now;
}

/* Under lock: key's tally; with create, one taken for it (NULL: every way of its bucket has an attempt in
 * flight). A tally whose window has ended starts a new one. */
static tally *tally_for(const char *key, int64_t now, bool create)
{
    if (!seeded) {
        if (RAND_bytes((unsigned char *)&seed, sizeof seed) != 1) seed = (uint64_t)now;
        seeded = true;
    }
    tally *b = tallies[XXH3_64bits_withSeed(key, strlen(key), seed) % LIMITER_BUCKETS], *victim = NULL;
    for (int i = 0; i < LIMITER_WAYS; i++) {
        tally *t = &b[i];
        if (t->key[0] && strcmp(t->key, key) == 0) {
            if (now - t->window_start > window_us) t->failures = 0, t->window_start = now;
            return t;
        }
        if (t->in_flight) continue;
        bool live = tally_live(t, now);
        if (!victim || (tally_live(victim, now) && (!live || t->window_start < victim->window_start))) victim = t;
    }
    if (!create || !victim) return NULL;
    snprintf(victim->key, sizeof victim->key, "%s", key);
    victim->failures = victim->in_flight = 0;
    victim->window_start = now;
    victim->trusted_until = 0;
    return victim;
}

/* The client as a tally counts it: an IPv6 address by its /64, an IPv4 one (mapped into IPv6 or not) whole. */
static void client_key(const char *client, char out[CLIENT_KEY_MAX])
{
    struct in6_addr a6;
    if (strchr(client, ':') && inet_pton(AF_INET6, client, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            inet_ntop(AF_INET, &a6.s6_addr[12], out, CLIENT_KEY_MAX);
            return;
        }
        memset(&a6.s6_addr[8], 0, 8);
        char text[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a6, text, sizeof text);
        snprintf(out, CLIENT_KEY_MAX, "%s/64", text);
        return;
    }
    snprintf(out, CLIENT_KEY_MAX, "%s", client);
}

static void keys(const char *user, const char *client, char name_key[KEY_MAX], char client_tally_key[KEY_MAX])
{
    char name[STORE_USER_MAX], who[CLIENT_KEY_MAX];
    snprintf(name, sizeof name, "%s", user);
    client_key(client ? client : "", who);
    snprintf(name_key, KEY_MAX, "n%s", name);
    snprintf(client_tally_key, KEY_MAX, "c%s\n%s", name, who);
}

login_verdict login_begin(const char *user, const char *client, int64_t now_us)
{
    char nk[KEY_MAX], ck[KEY_MAX];
    keys(user, client, nk, ck);
    login_verdict v = LOGIN_ALLOWED;
    pthread_mutex_lock(&lock);
    tally *n = tally_for(nk, now_us, true);
    if (n) n->in_flight++; /* held while the client's tally is found: it may share n's bucket */
    tally *c = n ? tally_for(ck, now_us, true) : NULL;
    if (n) n->in_flight--;
    if (!n || !c || c->failures + c->in_flight >= LOGIN_MAX_FAILURES)
        v = LOGIN_LIMIT_CLIENT;
    else if (c->trusted_until <= now_us && n->failures + n->in_flight >= LOGIN_NAME_MAX_FAILURES)
        v = LOGIN_LIMIT_NAME;
    if (v == LOGIN_ALLOWED) n->in_flight++, c->in_flight++;
    pthread_mutex_unlock(&lock);
    return v;
}

void login_end(const char *user, const char *client, login_outcome outcome, int64_t now_us)
{
    char nk[KEY_MAX], ck[KEY_MAX];
    keys(user, client, nk, ck);
    pthread_mutex_lock(&lock);
    tally *t[2] = {tally_for(nk, now_us, false), tally_for(ck, now_us, false)}; /* in flight: never evicted */
    for (int i = 0; i < 2; i++) {
        if (!t[i]) continue;
        if (t[i]->in_flight) t[i]->in_flight--;
        if (outcome == LOGIN_FAILED) t[i]->failures++;
    }
    if (outcome == LOGIN_OK && t[1]) {
        t[1]->failures = 0;
        t[1]->trusted_until = now_us + (int64_t)LOGIN_TRUST_S * 1000000;
    }
    pthread_mutex_unlock(&lock);
}

const char *login_verdict_text(login_verdict v)
{
    switch (v) {
    case LOGIN_ALLOWED: return "allowed";
    case LOGIN_LIMIT_CLIENT: return "too many failed logins for this user from this address";
    case LOGIN_LIMIT_NAME: return "too many failed logins for this user from several addresses";
    }
    return "too many failed logins";
}

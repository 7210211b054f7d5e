/*
 * conn_guard.c - per-client connection counts and the deadline watchdog (see conn_guard.h).
 *
 * DESIGN: a doubly linked registry under one mutex; each entry carries its deadline as an atomic
 * monotonic millisecond count (0: none), which the connection's own thread moves without the lock at
 * every step (one clock read per received piece of body). The watchdog wakes every TICK_MS, walks the
 * registry under the lock and shuts down each connection whose deadline has passed; libmicrohttpd then
 * sees end-of-stream, closes the connection and reports it closed, and only then is the entry removed.
 * Counting an address's admitted connections walks the registry (at most the global connection limit,
 * a few hundred entries) when a connection opens.
 *
 * What it must never do: shut down a descriptor whose entry was removed (removal and the watchdog's
 * walk hold the same lock), or cut a connection while its request is being handled.
 */
#include "api/conn_guard.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICK_MS 100
#define ADDR_KEY 17 /* family byte + up to 16 address bytes */

struct guard_conn {
    guard_conn *prev, *next;
    conn_guard *g;
    int fd;
    unsigned char addr[ADDR_KEY];
    bool over_cap;
    bool cut;              /* shut down already */
    int64_t body_start_ms; /* when the body being received started (the connection's own thread's) */
    _Atomic int64_t deadline_ms;
};

struct conn_guard {
    unsigned per_client;
    int64_t timeout_ms;
    uint64_t min_body_rate;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stopping;
    guard_conn *head;
    pthread_t watchdog;
    _Atomic uint64_t cuts;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watchdog_main(void *arg)
{
    conn_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        int64_t now = mono_ms();
        for (guard_conn *c = g->head; c; c = c->next) {
            int64_t due = atomic_load(&c->deadline_ms);
            if (due && now >= due && !c->cut) {
                shutdown(c->fd, SHUT_RDWR);
                c->cut = true;
                atomic_fetch_add(&g->cuts, 1);
            }
        }
        int64_t until = now + TICK_MS;
        struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (long)(until % 1000) * 1000000};
        pthread_cond_timedwait(&g->wake, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

ms_code conn_guard_start(conn_guard **out, const conn_guard_options *opt, ms_err *e)
{
    if (opt->per_client < 1) return ms_fail(e, MS_EINVAL, "the connection cap per client must be at least 1");
    if (!(opt->timeout_s > 0) || opt->timeout_s > 86400)
        return ms_fail(e, MS_EINVAL, "the header timeout must be between 1 ms and 86400 s");
    conn_guard *g = ms_calloc(1, sizeof *g);
    g->per_client = opt->per_client;
    g->timeout_ms = (int64_t)(opt->timeout_s * 1000);
    if (g->timeout_ms < 1) g->timeout_ms = 1;
    g->min_body_rate = opt->min_body_rate;
    atomic_init(&g->cuts, 0);
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&g->watchdog, NULL, watchdog_main, g) != 0) {
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return ms_fail(e, MS_EIO, "cannot start the connection watchdog thread");
    }
    *out = g;
    return MS_OK;
}

void conn_guard_stop(conn_guard *g)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->watchdog, NULL);
    while (g->head) { /* none should be left: the server reports every close before it stops */
        guard_conn *c = g->head;
        g->head = c->next;
        free(c);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static void addr_key(unsigned char key[ADDR_KEY], const struct sockaddr *sa, socklen_t len)
{
    memset(key, 0, ADDR_KEY);
    if (!sa) return;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

guard_conn *conn_guard_add(conn_guard *g, int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    guard_conn *c = ms_calloc(1, sizeof *c);
    c->g = g;
    c->fd = fd;
    addr_key(c->addr, addr, addrlen);
    atomic_init(&c->deadline_ms, mono_ms() + g->timeout_ms);
    pthread_mutex_lock(&g->mu);
    unsigned same = 0;
    for (guard_conn *o = g->head; o; o = o->next)
        if (!o->over_cap && memcmp(o->addr, c->addr, ADDR_KEY) == 0) same++;
    c->over_cap = same >= g->per_client;
    c->next = g->head;
    if (g->head) g->head->prev = c;
    g->head = c;
    pthread_mutex_unlock(&g->mu);
    return c;
}

void conn_guard_remove(conn_guard *g, guard_conn *c)
{
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        g->head = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&g->mu);
    free(c);
}

bool guard_conn_over_cap(const guard_conn *c) { return c->over_cap; }

void guard_conn_wait(guard_conn *c) { atomic_store(&c->deadline_ms, mono_ms() + c->g->timeout_ms); }

void guard_conn_body_start(guard_conn *c)
{
    c->body_start_ms = mono_ms();
    atomic_store(&c->deadline_ms, c->body_start_ms + c->g->timeout_ms);
}

void guard_conn_body_progress(guard_conn *c, uint64_t received)
{
    const conn_guard *g = c->g;
    int64_t due = mono_ms() + g->timeout_ms;
    if (g->min_body_rate) { /* the time the bytes so far buy at the floor rate, in ms, without overflow */
        uint64_t r = g->min_body_rate, bought = received / r * 1000 + received % r * 1000 / r;
        int64_t floor = c->body_start_ms + g->timeout_ms + (int64_t)(bought < INT64_MAX / 2 ? bought : INT64_MAX / 2);
        if (floor < due) due = floor;
    }
    atomic_store(&c->deadline_ms, due);
}

void guard_conn_clear(guard_conn *c) { atomic_store(&c->deadline_ms, 0); }

uint64_t conn_guard_cut_count(conn_guard *g) { return atomic_load(&g->cuts); }

/*
 * hub.c - wake-ups for the readers of the event log (see hub.h).
 *
 * DESIGN: one mutex over the last seq, the list of stream eventfds and the closed flag; one condition
 * variable (CLOCK_MONOTONIC) for threads. Publishing writes 1 to each stream's eventfd (a counter: many
 * publications before the stream drains it are one wake-up) and broadcasts the condition. Closing does
 * the same once more, so a waiting stream sees its eventfd readable and the hub closed.
 */
#include "notify/hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct hub {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t last;
    uint64_t pokes;
    bool closed;
    unsigned max_streams;
    int *fds;
    unsigned nfds;
};

hub *hub_new(uint64_t last_seq, unsigned max_streams)
{
    hub *h = ms_calloc(1, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    h->last = last_seq;
    h->max_streams = max_streams;
    h->fds = ms_calloc(max_streams ? max_streams : 1, sizeof *h->fds);
    return h;
}

void hub_free(hub *h)
{
    if (!h) return;
    for (unsigned i = 0; i < h->nfds; i++)
        close(h->fds[i]);
    free(h->fds);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static void wake_streams(hub *h)
{
    uint64_t one = 1;
    for (unsigned i = 0; i < h->nfds; i++) {
        ssize_t n = write(h->fds[i], &one, sizeof one); /* EAGAIN: the counter is full, a wake-up is due anyway */
        (void)n;
    }
}

void hub_publish(hub *h, uint64_t seq)
{
    pthread_mutex_lock(&h->lock);
    if (seq > h->last) h->last = seq;
    wake_streams(h);
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

uint64_t hub_last(hub *h)
{
    pthread_mutex_lock(&h->lock);
    uint64_t s = h->last;
    pthread_mutex_unlock(&h->lock);
    return s;
}

uint64_t hub_wait(hub *h, uint64_t after, long timeout_ms)
{
    struct timespec until = ms_deadline(CLOCK_MONOTONIC, timeout_ms);
    pthread_mutex_lock(&h->lock);
    uint64_t pokes = h->pokes;
    while (h->last <= after && !h->closed && h->pokes == pokes)
        if (pthread_cond_timedwait(&h->cond, &h->lock, &until) == ETIMEDOUT) break;
    uint64_t s = h->last;
    pthread_mutex_unlock(&h->lock);
    return s;
}

void hub_poke(hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->pokes++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

bool hub_closed(hub *h)
{
    pthread_mutex_lock(&h->lock);
    bool c = h->closed;
    pthread_mutex_unlock(&h->lock);
    return c;
}

void hub_close(hub *h)
{
    pthread_mutex_lock(&h->lock);
    h->closed = true;
    wake_streams(h);
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

int hub_stream_add(hub *h)
{
    pthread_mutex_lock(&h->lock);
    int fd = -1;
    if (!h->closed && h->nfds < h->max_streams) {
        fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd >= 0) h->fds[h->nfds++] = fd;
    }
    pthread_mutex_unlock(&h->lock);
    return fd;
}

void hub_stream_remove(hub *h, int efd)
{
    pthread_mutex_lock(&h->lock);
    for (unsigned i = 0; i < h->nfds; i++)
        if (h->fds[i] == efd) {
            h->fds[i] = h->fds[--h->nfds];
            close(efd);
            break;
        }
    pthread_mutex_unlock(&h->lock);
}

unsigned hub_streams(hub *h)
{
    pthread_mutex_lock(&h->lock);
    unsigned n = h->nfds;
    pthread_mutex_unlock(&h->lock);
    return n;
}

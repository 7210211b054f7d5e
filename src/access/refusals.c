/*
 * refusals.c - the tally of requests refused without a known user (see refusals.h).
 *
 * DESIGN: an array of open windows under a mutex, scanned linearly (at most REFUSAL_ADDRESSES entries of
 * a short address each; an address without refusals holds none), plus one window for REFUSAL_OTHERS. A
 * closed window leaves the array by swapping the last one into its place.
 *
 * What it must never do: keep a window past its REFUSAL_WINDOW_US once refusal_closed has run after it,
 * or count a refusal in a window that has closed (a refusal at or after the close opens a new one).
 */
#include "access/refusals.h"

#include "base/util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char client[64];
    uint64_t more;
    int64_t first_us, last_us;
} window;

struct refusal_tally {
    pthread_mutex_t mu;
    window open[REFUSAL_ADDRESSES];
    size_t nopen;
    window others; /* first_us 0: not open */
};

refusal_tally *refusal_tally_new(void)
{
    refusal_tally *t = ms_calloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void refusal_tally_free(refusal_tally *t)
{
    if (!t) return;
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static bool window_closed(const window *w, int64_t now_us) { return now_us - w->first_us >= REFUSAL_WINDOW_US; }

static void open_window(window *w, const char *client, int64_t now_us)
{
    snprintf(w->client, sizeof w->client, "%s", client);
    w->more = 0;
    w->first_us = w->last_us = now_us > 0 ? now_us : 1; /* 0 marks REFUSAL_OTHERS unopened */
}

static void summarize(const window *w, refusal_summary *out)
{
    memcpy(out->client, w->client, sizeof out->client);
    out->more = w->more;
    out->first_us = w->first_us;
    out->last_us = w->last_us;
}

/* A refusal in w, an open or closed window of its address: counted if w is open, else w's summary (when it
 * counted any) goes to *closed and a new window opens with this refusal as its first. */
static int note_in(window *w, const char *client, int64_t now_us, refusal_summary *closed)
{
    if (!window_closed(w, now_us)) {
        w->more++;
        if (now_us > w->last_us) w->last_us = now_us;
        return 0;
    }
    int got = 0;
    if (w->more) {
        summarize(w, closed);
        got = REFUSAL_SUMMARY;
    }
    open_window(w, client, now_us);
    return got | REFUSAL_FIRST;
}

int refusal_note(refusal_tally *t, const char *client, int64_t now_us, refusal_summary *closed)
{
    int got;
    pthread_mutex_lock(&t->mu);
    window *w = NULL;
    for (size_t i = 0; i < t->nopen && !w; i++)
        if (strcmp(t->open[i].client, client) == 0) w = &t->open[i];
    if (w) {
        got = note_in(w, client, now_us, closed);
    } else if (t->nopen < REFUSAL_ADDRESSES) {
        open_window(&t->open[t->nopen++], client, now_us);
        got = REFUSAL_FIRST;
    } else if (t->others.first_us) {
        got = note_in(&t->others, REFUSAL_OTHERS, now_us, closed);
    } else {
        open_window(&t->others, REFUSAL_OTHERS, now_us);
        got = REFUSAL_FIRST;
    }
    pthread_mutex_unlock(&t->mu);
    return got;
}

size_t refusal_closed(refusal_tally *t, int64_t now_us, refusal_summary *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->nopen && n < max;) {
        window *w = &t->open[i];
        if (!window_closed(w, now_us)) {
            i++;
            continue;
        }
        if (w->more) summarize(w, &out[n++]);
        *w = t->open[--t->nopen];
    }
    if (n < max && t->others.first_us && window_closed(&t->others, now_us)) {
        if (t->others.more) summarize(&t->others, &out[n++]);
        t->others.first_us = 0;
    }
    pthread_mutex_unlock(&t->mu);
    return n;
}

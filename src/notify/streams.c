/*
 * streams.c - Server-Sent Events streams of the event log (see notifier.h, notify_stream_*).
 *
 * DESIGN: a stream is read by the HTTP server's connection thread (libmicrohttpd runs one per
 * connection), which calls notify_stream_read whenever it can send more. The first read sends a comment
 * and a retry hint, so the client sees the headers and knows the stream is up at once. Each read then
 * sends the pending frames, or reads up to PAGE events after the last one sent from the store (its own
 * short read transaction) and frames them, or waits in poll(2) on two descriptors: the stream's eventfd
 * (hub.h: written when the follower has made events durable) and the client's socket (POLLRDHUP: the
 * client went away, or the server shut it down while stopping). A wait that reaches the heartbeat
 * interval sends a comment line, which keeps proxies and libmicrohttpd's idle timeout from closing a
 * quiet stream and lets a dead peer surface as a failed write. A stream filtered by rule skips the other
 * rules' events (its last seq still moves past them); a refill that stopped at its bound having framed none
 * looks further at once (their eventfd wake-ups were drained: waiting would hold its next event back until
 * another event or the heartbeat).
 *
 * Resuming: the client's Last-Event-ID (or ?since) is the seq it has; the stream starts after it, so a
 * client that reconnects with the id of the last frame it received misses nothing and gets nothing twice.
 *
 * What it must never do: block without watching the client's socket (a dead client would hold a thread
 * until the next event), send an event the follower has not made durable, or exceed max_streams.
 */
#include "notify/notify_internal.h"

#include "notify/event.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 256 /* events read from the store per refill */
#define RETRY_MS 1000

struct notify_stream {
    notifier *n;
    int efd;
    uint64_t last; /* the last seq the stream has passed (sent, or skipped by its filter) */
    char rule[RULE_NAME_MAX + 1];
    buf out;
    size_t out_pos;
    bool hello_sent;
    bool more; /* the last refill stopped at its bound: events after s->last remain to be looked at */
    double next_heartbeat;
};

ms_code notify_stream_open(notifier *n, uint64_t after, const char *rule, notify_stream **out, ms_err *e)
{
    if (hub_closed(n->hub)) return ms_fail(e, MS_ESTOPPED, "the server is stopping");
    int efd = hub_stream_add(n->hub);
    if (efd < 0) {
        atomic_fetch_add(&n->sse_refused, 1);
        if (hub_closed(n->hub)) return ms_fail(e, MS_ESTOPPED, "the server is stopping");
        return ms_fail(e, MS_EFULL, "too many event streams open (%u at most); retry shortly", n->opt.max_streams);
    }
    notify_stream *s = ms_calloc(1, sizeof *s);
    s->n = n;
    s->efd = efd;
    s->last = after == UINT64_MAX ? hub_last(n->hub) : after;
    if (rule) snprintf(s->rule, sizeof s->rule, "%s", rule);
    s->next_heartbeat = ms_mono_s() + n->opt.heartbeat_s;
    atomic_fetch_add(&n->sse_opened, 1);
    *out = s;
    return MS_OK;
}

void notify_stream_close(void *stream)
{
    notify_stream *s = stream;
    if (!s) return;
    hub_stream_remove(s->n->hub, s->efd);
    buf_free(&s->out);
    free(s);
}

typedef struct {
    notify_stream *s;
    unsigned n;
    uint64_t sent;
    bool bounded; /* stopped at the bound, not at the log's end */
} refill_state;

static bool frame_event(void *ctx, uint64_t seq, const char *ev, size_t len)
{
    refill_state *st = ctx;
    notify_stream *s = st->s;
    s->last = seq;
    if (s->rule[0]) {
        const char *r;
        size_t rl;
        if (!notify_event_rule(ev, len, &r, &rl) || rl != strlen(s->rule) || memcmp(r, s->rule, rl) != 0)
            return !(st->bounded = ++st->n >= PAGE * 16); /* a filtered stream looks further per refill */
    }
    sse_frame(&s->out, seq, ev, len);
    st->sent++;
    return !(st->bounded = ++st->n >= PAGE);
}

/* Frames of the events after s->last into s->out (as many as one page). */
static ms_code refill(notify_stream *s, ms_err *e)
{
    s->more = false;
    if (hub_last(s->n->hub) <= s->last) return MS_OK;
    store_read *r;
    ms_code rc = store_read_begin(s->n->store, &r, e);
    if (rc != MS_OK) return rc;
    refill_state st = {.s = s};
    rc = store_events_scan(r, s->last, frame_event, &st, e);
    store_read_end(r);
    s->more = rc == MS_OK && st.bounded;
    atomic_fetch_add(&s->n->sse_events_sent, st.sent);
    return rc;
}

static ssize_t give(notify_stream *s, char *buf, size_t max)
{
    size_t n = s->out.len - s->out_pos;
    if (n > max) n = max;
    memcpy(buf, s->out.data + s->out_pos, n);
    s->out_pos += n;
    if (s->out_pos == s->out.len) s->out.len = s->out_pos = 0;
    return (ssize_t)n;
}

ssize_t notify_stream_read(void *stream, int client_fd, char *buf, size_t max)
{
    notify_stream *s = stream;
    if (s->out.len > s->out_pos) return give(s, buf, max);
    if (!s->hello_sent) {
        s->hello_sent = true;
        buf_printf(&s->out, ": medstream events after %llu\nretry: %d\n\n", (unsigned long long)s->last, RETRY_MS);
        return give(s, buf, max);
    }
    for (;;) {
        if (hub_closed(s->n->hub)) return -1;
        uint64_t drained;
        if (read(s->efd, &drained, sizeof drained) < 0 && errno != EAGAIN) return -2;
        ms_err e;
        if (refill(s, &e) != MS_OK) return -2; /* the store failed: the client reconnects with its Last-Event-ID */
        if (s->out.len > s->out_pos) {
            s->next_heartbeat = ms_mono_s() + s->n->opt.heartbeat_s;
            return give(s, buf, max);
        }
        double now = ms_mono_s();
        if (now >= s->next_heartbeat) {
            s->next_heartbeat = now + s->n->opt.heartbeat_s;
            buf_puts(&s->out, ": keep-alive\n\n");
            return give(s, buf, max);
        }
        if (s->more) { /* a filtered refill passed only other rules' events: look further now, the client
                          watched without waiting */
            struct pollfd c = {.fd = client_fd, .events = POLLRDHUP};
            if (client_fd >= 0 && poll(&c, 1, 0) > 0 && (c.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
                return -1;
            continue;
        }
        struct pollfd p[2] = {{.fd = s->efd, .events = POLLIN}, {.fd = client_fd, .events = POLLRDHUP}};
        int wait_ms = (int)((s->next_heartbeat - now) * 1000) + 1;
        int k = poll(p, client_fd >= 0 ? 2 : 1, wait_ms);
        if (k < 0 && errno != EINTR) return -2;
        if (k > 0 && client_fd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
            return -1; /* gone (or shut down by the stopping server): end quietly, nothing more to send */
    }
}

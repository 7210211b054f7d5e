/*
 * http_server.c - libmicrohttpd plumbing and the limits of the HTTP edge (see http_server.h).
 *
 * DESIGN: the listening socket is made here (socket, SO_REUSEADDR but never SO_REUSEPORT, bind,
 * listen) and handed to libmicrohttpd, so that a port in use fails with that exact reason instead of
 * two servers sharing the port's traffic. libmicrohttpd runs a thread per connection, with poll()
 * (select() cannot watch descriptors above 1023, and the open-file limit is raised). Each connection
 * is registered with conn_guard when it opens (libmicrohttpd's connection notifications, the entry kept
 * as the socket context) and reported at each step: waiting for headers, receiving a body, being
 * handled; the guard's watchdog shuts down connections that miss a deadline. The checks run in order
 * in the first call for a request, once its headers are complete: the per-client cap, the framing
 * (libmicrohttpd 0.9.75 frames by the first Content-Length, lets Transfer-Encoding win over
 * Content-Length, reads a body of an unknown coding until the connection closes, and takes
 * "Content-Length :" for another header, so ambiguous or unknown framing is refused here, with the
 * connection closed), a %00 in the URL (note_raw_url), the size, the route (on_headers), and last the
 * in-flight budget for the declared body. Bodies go into body_pool buffers, given back as soon as the handler returns;
 * a chunked body reserves as it grows, and if the budget or the size limit refuses, the rest of it is discarded and the
 * answer (503 or 413) comes when it ends. libmicrohttpd 0.9.75 accepts a chunk size of 7fffffffffffffff and waits for
 * those bytes: the body-progress deadline cuts such a connection. A body must also keep up --body-min-rate after its
 * first --header-timeout (conn_guard.h): else a client with a token kept its declared length of the budget for as long
 * as it sent a byte a stall.
 *
 * Each request gets its id when its headers are complete (a 64-bit counter, shared by every server in
 * the process, through splitmix64's bijective mix with a random seed of the process: unique in the
 * process, unguessable across restarts); every answer carries it as X-Request-Id, and on_completed,
 * called by libmicrohttpd once the answer is sent or the exchange has failed, writes the access-log
 * line. libmicrohttpd's own messages go to the log as their format text, unexpanded: some would expand
 * a request's path.
 *
 * What it must never do: log a request's path, query, body or a method the client made up (they may carry
 * PHI); close a socket libmicrohttpd owns (the guard only shuts it down); read a body it has refused before
 * the handler ran; or let a connection hold a body buffer between requests (buffers go back to the shared
 * pool).
 */
#include "api/http_server.h"

#include "api/body_pool.h"
#include "api/conn_guard.h"
#include "base/json_write.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/thread_priority.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define POOL_MAX_FREE ((uint64_t)128 << 20) /* free body buffers kept for reuse, all threads together */
#define FD_RESERVE_MIN 256                  /* descriptors kept for LMDB, segment files, Kafka and PostgreSQL sockets */
#define RETRY_AFTER_S 1
/* libmicrohttpd's memory per connection (its read buffer, headers and the answer's header lines; a body is
 * copied out as it arrives, body_append). It zeroes what it frees of this as a request's bytes go through, so
 * a 1 MiB pool cost 1.4 % of the server's CPU at 20 KB records against 0.4 % for 256 KiB (perf, closed loop). */
#define MHD_CONN_MEMORY ((size_t)256 << 10)

struct http_server {
    struct MHD_Daemon *daemon;
    http_options opt;
    http_handler handler;
    int port;
    body_pool *bodies;
    conn_guard *guard;
    size_t body_limit; /* the largest body that can ever be taken: min(max_body, max_inflight) */
};

typedef struct {
    http_request req;
    http_response res;
    body_buf body;          /* req.body points into it */
    guard_conn *guard;      /* the connection's entry in the guard (NULL only if libmicrohttpd lost it) */
    bool answered_early;    /* answered before the body */
    bool too_large;         /* the body passed the size limit: the rest is discarded, 413 */
    bool over_budget;       /* a growing body was refused by the in-flight budget: discarded, 503 */
    uint64_t body_received; /* the body's bytes so far, kept or discarded (the guard's minimum rate) */
    size_t content_length;  /* from the header, 0 if absent */
    bool bulk_thread;       /* this thread was set to bulk priority for the request */
    double started;         /* ms_mono_s() when the headers were complete */
    size_t sent_bytes;      /* the answer's body */
    char method[16];        /* for the access log: logged_method's */
} conn_state;

/* ---- request ids ---- */

static pthread_once_t request_id_once = PTHREAD_ONCE_INIT;
static uint64_t request_id_seed;
static _Atomic uint64_t request_id_next;

static void request_id_init(void)
{
    if (getrandom(&request_id_seed, sizeof request_id_seed, 0) != (ssize_t)sizeof request_id_seed)
        request_id_seed = (uint64_t)ms_now_us() ^ ((uint64_t)getpid() << 32);
}

/* 16 hex digits; never the same twice in a process (splitmix64 mixes its state bijectively). */
static void request_id_make(char out[17])
{
    pthread_once(&request_id_once, request_id_init);
    uint64_t state = request_id_seed + atomic_fetch_add(&request_id_next, 1) * UINT64_C(0x9E3779B97F4A7C15);
    snprintf(out, 17, "%016llx", (unsigned long long)ms_splitmix64(&state));
}

const char *http_arg_get(const http_request *r, const char *key)
{
    for (int i = 0; i < r->nargs; i++)
        if (strcmp(r->args[i].key, key) == 0) return r->args[i].value;
    return NULL;
}

void http_error(http_response *res, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    res->status = status;
    res->body.len = 0;
    buf_puts(&res->body, "{\"error\":");
    jw_cstr(&res->body, msg);
    buf_puts(&res->body, "}");
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    http_request *r = cls;
    if (r->nargs >= HTTP_MAX_ARGS) {
        r->too_many_args = true;
        return MHD_NO;
    }
    r->args[r->nargs].key = key;
    r->args[r->nargs].value = value ? value : "";
    r->nargs++;
    return MHD_YES;
}

/* A %00 in a URL decodes to a NUL byte, and the path and query values libmicrohttpd hands over are C strings:
 * the NUL cut them short, so "/v1/counters/labs%00x" was answered (or DELETEd) as the counter labs,
 * "/v1/records/R%00/children" as the record R, "?parent=a%00b" as the parent a. No path segment or value may
 * hold a NUL, so such a request is refused. The raw URL is seen by the URI log callback, on the connection's
 * own thread (one per connection) just before that thread parses the request line and first calls on_request
 * for it: a flag of the thread carries the finding there. */
static _Thread_local bool t_nul_in_url;

static void *note_raw_url(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls, (void)conn;
    t_nul_in_url = false;
    for (const char *p = uri ? strchr(uri, '%') : NULL; p; p = strchr(p + 1, '%'))
        if (p[1] == '0' && p[2] == '0') t_nul_in_url = true;
    return NULL; /* on_request's first call still finds *con_cls NULL */
}

/* How an answer ends the exchange: kept alive, closed, or closed with a hint to come back. */
typedef enum { ANSWER_KEEP, ANSWER_CLOSE, ANSWER_BUSY_CLOSE, ANSWER_BUSY } answer_kind;

/* A streamed answer: the handler's reader, and the connection's socket for it to watch. */
typedef struct {
    ssize_t (*read)(void *ctx, int client_fd, char *buf, size_t max);
    void (*done)(void *ctx);
    void *ctx;
    int fd;
} stream_state;

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_state *st = cls;
    ssize_t n = st->read(st->ctx, st->fd, buf, max);
    if (n > 0) return n;
    return n == -1 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
    stream_state *st = cls;
    if (st->done) st->done(st->ctx);
    free(st);
}

static enum MHD_Result send_answer(struct MHD_Connection *conn, conn_state *cs, answer_kind kind)
{
    http_response *res = &cs->res;
    if (res->status == 0) res->status = 500;
    struct MHD_Response *r;
    bool streamed = res->stream.read != NULL;
    if (streamed) { /* libmicrohttpd calls the reader from this connection's thread, chunked (HTTP/1.1) */
        stream_state *st = ms_calloc(1, sizeof *st);
        st->read = res->stream.read;
        st->done = res->stream.done;
        st->ctx = res->stream.ctx;
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        st->fd = fd ? fd->connect_fd : -1;
        memset(&res->stream, 0, sizeof res->stream); /* the response owns it now */
        cs->sent_bytes = 0;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, st, stream_free);
        if (!r) {
            stream_free(st);
            return MHD_NO;
        }
    } else if (res->has_file) { /* libmicrohttpd sends it and closes the descriptor */
        res->has_file = false;
        cs->sent_bytes = (size_t)res->file_len;
        r = MHD_create_response_from_fd64(res->file_len, res->file_fd);
        if (!r) {
            close(res->file_fd);
            return MHD_NO;
        }
    } else {
        size_t len = res->body.len;
        cs->sent_bytes = len;
        char *data = buf_take(&res->body);
        r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(data);
            return MHD_NO;
        }
    }
    if (res->content_disposition[0]) MHD_add_response_header(r, "Content-Disposition", res->content_disposition);
    if (res->location) MHD_add_response_header(r, "Location", res->location);
    MHD_add_response_header(r, "Content-Type", res->content_type ? res->content_type : "application/json");
    MHD_add_response_header(r, "Cache-Control",
                            res->cache_control ? res->cache_control
                            : streamed         ? "no-cache"
                                               : "no-store");
    if (res->csp) MHD_add_response_header(r, "Content-Security-Policy", res->csp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff"); /* every answer is what it says it is */
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    if (streamed) MHD_add_response_header(r, "X-Accel-Buffering", "no"); /* nginx: pass each event at once */
    MHD_add_response_header(r, "X-Request-Id", cs->req.request_id);
    if (kind == ANSWER_BUSY || kind == ANSWER_BUSY_CLOSE) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", RETRY_AFTER_S);
        MHD_add_response_header(r, "Retry-After", secs);
    }
    if (kind == ANSWER_CLOSE || kind == ANSWER_BUSY_CLOSE) MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&g_metrics.requests, 1);
    if (res->status >= 400) atomic_fetch_add(&g_metrics.http_errors, 1);
    return ok;
}

static enum MHD_Result send_response(struct MHD_Connection *conn, conn_state *cs)
{
    return send_answer(conn, cs, ANSWER_KEEP);
}

/* Answer before reading the body; the guard stops timing the connection. */
static enum MHD_Result answer_early(struct MHD_Connection *conn, conn_state *cs, answer_kind kind)
{
    cs->answered_early = true;
    if (cs->guard) guard_conn_clear(cs->guard);
    return send_answer(conn, cs, kind);
}

static size_t align_up(size_t n) { return (n + BODY_ALIGN - 1) & ~(size_t)(BODY_ALIGN - 1); }

/* The body buffer a declared length needs: the body plus room to zero-pad it to the next 4 KiB. */
static size_t body_cap_for(size_t content_length) { return align_up(content_length + BODY_ALIGN); }

typedef enum { APPEND_OK, APPEND_TOO_LARGE, APPEND_OVER_BUDGET } append_result;

static append_result body_append(http_server *srv, conn_state *cs, const char *data, size_t n)
{
    http_request *r = &cs->req;
    if (n > srv->body_limit - r->body_len) return APPEND_TOO_LARGE;
    size_t need = r->body_len + n + BODY_ALIGN; /* room to zero-pad to the next 4 KiB */
    if (need > cs->body.cap) {
        size_t cap, most = body_cap_for(srv->body_limit);
        if (!cs->body.cap && cs->content_length) {
            cap = body_cap_for(cs->content_length); /* reserved when the headers came */
        } else { /* the next power of two (a pooled buffer may have any size), at most the largest body */
            cap = 65536;
            while (cap < need)
                cap *= 2;
            if (cap > most) cap = most;
        }
        if (!body_buf_grow(srv->bodies, &cs->body, cap, r->body_len)) return APPEND_OVER_BUDGET;
        r->body = cs->body.data;
        r->body_cap = cs->body.cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    return APPEND_OK;
}

/* What the request's headers say about the framing of its body. */
typedef struct {
    int content_lengths, transfer_encodings;
    bool chunked;    /* the (last) Transfer-Encoding is exactly "chunked" */
    bool name_space; /* a header name with whitespace: "Content-Length : 5" is no Content-Length to
                      * libmicrohttpd 0.9.75, but may be one to a proxy in front */
} framing;

static bool is_plain_chunked(const char *v)
{
    if (!v) return false;
    v += strspn(v, " \t");
    if (strncasecmp(v, "chunked", 7) != 0) return false;
    v += 7;
    return v[strspn(v, " \t")] == 0;
}

static enum MHD_Result note_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    framing *f = cls;
    if (strpbrk(key, " \t")) f->name_space = true;
    if (strcasecmp(key, "Content-Length") == 0) {
        f->content_lengths++;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->transfer_encodings++;
        f->chunked = is_plain_chunked(value);
    }
    return MHD_YES;
}

/* 0, or the status (400/501) for a body whose framing is ambiguous or not supported, res filled. */
static int check_framing(struct MHD_Connection *conn, http_response *res, bool *chunked)
{
    framing f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, note_framing, &f);
    *chunked = f.transfer_encodings == 1 && f.chunked;
    if (f.name_space) {
        http_error(res, 400, "whitespace in a header name");
        return 400;
    }
    if (f.content_lengths > 1) {
        http_error(res, 400, "more than one Content-Length header");
        return 400;
    }
    if (f.content_lengths && f.transfer_encodings) {
        http_error(res, 400, "Content-Length and Transfer-Encoding together");
        return 400;
    }
    if (f.transfer_encodings && !*chunked) {
        http_error(res, 501, "the only transfer coding accepted is chunked (alone)");
        return 501;
    }
    return 0;
}

static guard_conn *connection_guard(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* The first call for a request: its headers are complete. Every check that can refuse it runs here,
 * before a byte of its body is read. */
static enum MHD_Result on_headers_complete(http_server *srv, struct MHD_Connection *conn, conn_state *cs)
{
    http_request *r = &cs->req;
    if (cs->guard && guard_conn_over_cap(cs->guard)) {
        http_error(&cs->res, 503, "too many connections from this address (at most %ld at a time)",
                   srv->opt.max_connections_per_client);
        return answer_early(conn, cs, ANSWER_BUSY_CLOSE);
    }
    bool chunked = false;
    if (check_framing(conn, &cs->res, &chunked)) return answer_early(conn, cs, ANSWER_CLOSE);
    if (r->nul_in_url) {
        http_error(&cs->res, 400, "the URL holds %%00 (a NUL byte), which no path segment or query value may");
        return answer_early(conn, cs, ANSWER_KEEP);
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        /* libmicrohttpd has refused a Content-Length that is not a plain number (400) or too big for
         * 64 bits (413) before this call */
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > srv->opt.max_body) {
            http_error(&cs->res, 413, "request body of %s bytes exceeds the limit of %zu bytes", cl, srv->opt.max_body);
            return answer_early(conn, cs, ANSWER_KEEP);
        }
        if (n > srv->body_limit) {
            http_error(&cs->res, 413, "request body of %s bytes exceeds the limit of %llu bytes in flight", cl,
                       (unsigned long long)srv->opt.max_inflight);
            return answer_early(conn, cs, ANSWER_KEEP);
        }
        cs->content_length = (size_t)n;
    }
    int st = srv->handler.on_headers(srv->handler.ctx, r, &cs->res);
    if (st) {
        if (!cs->res.status) http_error(&cs->res, st, "request refused");
        return answer_early(conn, cs, ANSWER_KEEP);
    }
    /* a body no handler reads is refused before it takes a byte of the bodies' budget (a route that needs no
     * token, /healthz, held it from anyone by a trickle of bytes) */
    if (!r->takes_body && (cs->content_length || chunked)) {
        http_error(&cs->res, 413, "%s %s takes no request body", r->method, r->route_pattern ? r->route_pattern : "");
        return answer_early(conn, cs, ANSWER_CLOSE);
    }
    if (cs->content_length && !body_buf_reserve(srv->bodies, &cs->body, body_cap_for(cs->content_length))) {
        http_error(&cs->res, 503, "too many request bodies in flight (%llu bytes at most); retry shortly",
                   (unsigned long long)srv->opt.max_inflight);
        return answer_early(conn, cs, ANSWER_BUSY_CLOSE);
    }
    /* Bulk work (receiving and parsing megabytes) runs at a lower CPU priority, every other request
     * with a short scheduler slice, so that point reads stay fast under full ingest (thread_priority.h);
     * a bulk request's thread is set back when the request completes. */
    cs->bulk_thread = r->bulk;
    thread_priority_set(r->bulk ? THREAD_BULK : THREAD_LATENCY);
    if (cs->guard) {
        if (cs->content_length || chunked)
            guard_conn_body_start(cs->guard); /* the body must keep coming */
        else
            guard_conn_clear(cs->guard);
    }
    return MHD_YES;
}

/* The method as the access log names it: one of HTTP's own, else "-". A method is a token the client chooses
 * (RFC 9110 allows any), so one it made up could carry anything into the log, as an X-Request-Id could. */
static const char *logged_method(const char *method)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(method, known[i]) == 0) return known[i];
    return "-";
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = ms_calloc(1, sizeof *cs);
        *con_cls = cs;
        cs->guard = connection_guard(conn);
        cs->started = ms_mono_s();
        snprintf(cs->method, sizeof cs->method, "%s", logged_method(method));
        http_request *r = &cs->req;
        request_id_make(r->request_id);
        r->method = method;
        r->path = url;
        r->content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        r->authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        r->last_event_id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client, sizeof r->client);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client, sizeof r->client);
        }
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, r);
        r->nul_in_url = t_nul_in_url;
        t_nul_in_url = false;
        return on_headers_complete(srv, conn, cs);
    }
    if (cs->answered_early) {
        *upload_data_size = 0; /* discard */
        return MHD_YES;
    }
    if (*upload_data_size) {
        cs->body_received += *upload_data_size;
        if (cs->guard) guard_conn_body_progress(cs->guard, cs->body_received); /* the deadline moves on */
        if (!cs->too_large && !cs->over_budget) {
            append_result ar = body_append(srv, cs, upload_data, *upload_data_size);
            if (ar == APPEND_TOO_LARGE) cs->too_large = true;
            if (ar == APPEND_OVER_BUDGET) cs->over_budget = true;
            if (ar != APPEND_OK) { /* what came is discarded, and so is the rest */
                body_buf_release(srv->bodies, &cs->body);
                cs->req.body = NULL;
                cs->req.body_len = cs->req.body_cap = 0;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* the whole request is here */
    if (cs->guard) guard_conn_clear(cs->guard);
    if (cs->too_large) {
        http_error(&cs->res, 413, "request body exceeds the limit of %zu bytes", srv->body_limit);
        return send_response(conn, cs);
    }
    if (cs->over_budget) {
        http_error(&cs->res, 503, "too many request bodies in flight (%llu bytes at most); retry shortly",
                   (unsigned long long)srv->opt.max_inflight);
        return send_answer(conn, cs, ANSWER_BUSY);
    }
    http_request *r = &cs->req;
    if (r->body) {
        size_t padded = align_up(r->body_len);
        memset(r->body + r->body_len, 0, padded - r->body_len);
    }
    r->received_at = ms_mono_s();
    srv->handler.handle(srv->handler.ctx, r, &cs->res);
    /* the handler is done with the body (ingest returns once it is durable): the buffer and its share
     * of the budget are free before the client can see the answer */
    body_buf_release(srv->bodies, &cs->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
    return send_response(conn, cs);
}

/* How an exchange ended, when not with its answer sent (the access log's "end"); NULL when it was. */
static const char *termination_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return NULL;
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "client_gone";
    default: return "broken";
    }
}

/* The access-log line of one exchange: what was asked (method and route pattern, never the path or its
 * query), how it was answered, by whom; status 0 when no answer was sent. */
static void access_log(const conn_state *cs, enum MHD_RequestTerminationCode toe)
{
    const http_request *r = &cs->req;
    const char *route = r->route_pattern ? r->route_pattern : "-";
    const char *user = r->user[0] ? r->user : "-";
    const char *client = r->client[0] ? r->client : "-";
    const char *end = termination_name(toe);
    log_field f[] = {
        LOG_STR_J("method", cs->method),
        LOG_STR_J("route", route),
        LOG_INT_J("status", cs->res.status),
        LOG_UINT("bytes", cs->sent_bytes),
        LOG_MS("ms", (ms_mono_s() - cs->started) * 1000.0),
        LOG_STR("user", user),
        LOG_STR("client", client),
        LOG_STR("request_id", r->request_id),
        LOG_STR("end", end),
    };
    ms_log_fields(LOG_INFO, "http.request", f, LOG_NFIELDS(f) - (end ? 0 : 1), "%s %s %d", cs->method, route,
                  cs->res.status);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    http_server *srv = cls;
    conn_state *cs = *con_cls;
    if (!cs) return;
    if (srv->opt.access_log) access_log(cs, toe);
    if (cs->bulk_thread) thread_priority_set(THREAD_NORMAL); /* may fail unprivileged: stays lower */
    body_buf_release(srv->bodies, &cs->body);
    for (int i = 0; i < cs->req.nparams; i++)
        free(cs->req.params[i]);
    buf_free(&cs->res.body);
    free(cs->res.location);
    if (cs->res.has_file) close(cs->res.file_fd);
    if (cs->res.stream.done) cs->res.stream.done(cs->res.stream.ctx); /* a stream never handed over */
    free(cs);
    *con_cls = NULL;
    guard_conn *g = connection_guard(conn);
    if (g) guard_conn_wait(g); /* a kept-alive connection now waits for the next request's headers */
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ad ? ad->client_addr : NULL;
        socklen_t len = !sa                         ? 0
                        : sa->sa_family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
                                                    : (socklen_t)sizeof(struct sockaddr_in);
        *socket_context = fd ? conn_guard_add(srv->guard, fd->connect_fd, sa, len) : NULL;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        /* libmicrohttpd reports the close before it closes the socket: the guard lets go of it first */
        conn_guard_remove(srv->guard, *socket_context);
        *socket_context = NULL;
    }
}

static bool parse_listen(const char *listen, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof host) return false;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 0 || port > 65535) return false;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (!*host || strcmp(host, "0.0.0.0") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return false;
    return true;
}

/* A listening socket bound to sa and no other process's: SO_REUSEADDR lets a restart bind while old
 * connections linger in TIME_WAIT, and on Linux never lets a second listener share the address (that
 * is SO_REUSEPORT, which is not set). */
static ms_code listen_exclusive(const struct sockaddr_in *sa, const char *where, int *out, ms_err *e)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ms_fail(e, MS_EIO, "cannot listen on %s: %s", where, strerror(errno));
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 || listen(fd, SOMAXCONN) != 0) {
        int err = errno;
        close(fd);
        const char *why = err == EADDRINUSE      ? "address already in use"
                          : err == EACCES        ? "permission denied (ports below 1024 need privileges)"
                          : err == EADDRNOTAVAIL ? "address not available on this machine"
                                                 : strerror(err);
        return ms_fail(e, MS_EIO, "cannot listen on %s: %s", where, why);
    }
    *out = fd;
    return MS_OK;
}

/* The open-file limit raised to its hard limit, and the number of connections that leaves room for
 * (each is a descriptor) beside the store's files and the Kafka and PostgreSQL sockets. */
static unsigned connection_limit(unsigned configured, unsigned long long *nofile_out)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return configured;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl.rlim_cur = rl.rlim_max;
    }
    unsigned long long nofile = rl.rlim_cur == RLIM_INFINITY ? 1ULL << 20 : (unsigned long long)rl.rlim_cur;
    *nofile_out = nofile;
    unsigned long long reserve = nofile / 4 > FD_RESERVE_MIN ? nofile / 4 : FD_RESERVE_MIN;
    unsigned long long room = nofile > reserve + 16 ? nofile - reserve : nofile / 2;
    return room < configured ? (unsigned)room : configured;
}

/* libmicrohttpd's messages, as their format text: the arguments of some are a request's path. */
static void library_message(void *cls, const char *fmt, va_list ap)
{
    (void)cls, (void)ap;
    size_t n = strlen(fmt);
    while (n && (fmt[n - 1] == '\n' || fmt[n - 1] == ' '))
        n--;
    ms_log(LOG_WARN, "http.library", "libmicrohttpd: %.*s", (int)n, fmt);
}

ms_code http_listen_check(const char *listen, bool *loopback, ms_err *e)
{
    struct sockaddr_in sa;
    if (!parse_listen(listen, &sa)) return ms_fail(e, MS_EINVAL, "expected HOST:PORT (IPv4), got '%s'", listen);
    *loopback = (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
    return MS_OK;
}

ms_code http_server_start(http_server **out, const http_options *opt, const http_handler *h, ms_err *e)
{
    struct sockaddr_in sa;
    const char *flag = opt->listen_flag ? opt->listen_flag : "--listen";
    if (!parse_listen(opt->listen, &sa))
        return ms_fail(e, MS_EINVAL, "%s: expected HOST:PORT (IPv4), got '%s'", flag, opt->listen);
    if (opt->header_timeout_s < 1 || opt->header_timeout_s > HTTP_HEADER_TIMEOUT_MAX_S)
        return ms_fail(e, MS_EINVAL, "--header-timeout: expected 1 to %d seconds, got %ld", HTTP_HEADER_TIMEOUT_MAX_S,
                       opt->header_timeout_s);
    if (opt->max_connections < 1 || opt->max_connections > HTTP_CONNECTIONS_MAX)
        return ms_fail(e, MS_EINVAL, "--max-connections: expected 1 to %d, got %ld", HTTP_CONNECTIONS_MAX,
                       opt->max_connections);
    if (opt->max_connections_per_client < 1 || opt->max_connections_per_client > HTTP_CONNECTIONS_MAX)
        return ms_fail(e, MS_EINVAL, "--max-connections-per-client: expected 1 to %d, got %ld", HTTP_CONNECTIONS_MAX,
                       opt->max_connections_per_client);
    if (opt->max_inflight < HTTP_MAX_INFLIGHT_MIN)
        return ms_fail(e, MS_EINVAL, "--max-inflight: expected at least 1MiB, got %llu bytes",
                       (unsigned long long)opt->max_inflight);
    bool tls = opt->tls_cert_pem && opt->tls_key_pem;
    if (tls && !MHD_is_feature_supported(MHD_FEATURE_TLS))
        return ms_fail(e, MS_EINVAL, "this libmicrohttpd was built without TLS");

    char where[64], ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    snprintf(where, sizeof where, "%s:%u", ip, (unsigned)ntohs(sa.sin_port));
    if (sa.sin_addr.s_addr == htonl(INADDR_ANY))
        ms_log(LOG_WARN, "http.listen_any", "%s %s binds every interface (%s): reachable from other machines", flag,
               opt->listen, where);
    int fd = -1;
    ms_code rc = listen_exclusive(&sa, where, &fd, e);
    if (rc != MS_OK) return rc;
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    int port = getsockname(fd, (struct sockaddr *)&bound, &blen) == 0 ? ntohs(bound.sin_port) : ntohs(sa.sin_port);

    http_server *s = ms_calloc(1, sizeof *s);
    s->opt = *opt;
    s->handler = *h;
    s->port = port;
    s->body_limit = opt->max_inflight < opt->max_body ? (size_t)opt->max_inflight : opt->max_body;
    s->bodies = body_pool_new(opt->max_inflight, POOL_MAX_FREE);
    conn_guard_options go = {(unsigned)opt->max_connections_per_client, (double)opt->header_timeout_s,
                             opt->min_body_rate};
    if ((rc = conn_guard_start(&s->guard, &go, e)) != MS_OK) {
        close(fd);
        body_pool_free(s->bodies);
        free(s);
        return rc;
    }
    unsigned long long nofile = 0;
    unsigned limit = connection_limit((unsigned)opt->max_connections, &nofile);
    if (limit < (unsigned)opt->max_connections)
        ms_log(LOG_WARN, "http.connection_limit",
               "at most %u connections (open-file limit %llu); raise ulimit -n for more", limit, nofile);
    /* Beyond the cap, a client's connections are answered 503; at twice the cap they are refused when
     * accepted, so that one address can never hold every connection. */
    unsigned per_ip = (unsigned)opt->max_connections_per_client * 2;
    if (per_ip >= limit) per_ip = 0; /* no separate limit */

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (tls) flags |= MHD_USE_TLS;
    /* the TLS options come last; for plain HTTP the list ends before them */
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, library_message, NULL, /* first */
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT, MHD_CONN_MEMORY,
        MHD_OPTION_URI_LOG_CALLBACK, note_raw_url, NULL, tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END,
        opt->tls_cert_pem, MHD_OPTION_HTTPS_MEM_KEY, opt->tls_key_pem, MHD_OPTION_END);
    if (!s->daemon) {
        /* libmicrohttpd closes the socket on most of its failure paths but not all; the process is about
         * to exit, and leaving it is safer than closing a descriptor that may be another's by now. */
        conn_guard_stop(s->guard);
        body_pool_free(s->bodies);
        free(s);
        return ms_fail(e, MS_EIO, "cannot start the HTTP server on %s%s", where,
                       tls ? " (is the TLS certificate/key valid PEM?)" : "");
    }
    *out = s;
    return MS_OK;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stop(http_server *s)
{
    if (!s) return;
    MHD_stop_daemon(s->daemon); /* every connection is closed and reported before it returns */
    conn_guard_stop(s->guard);
    body_pool_free(s->bodies);
    free(s);
}

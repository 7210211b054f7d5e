/*
 * http_server.h - the HTTP edge: libmicrohttpd (one thread per connection, so a handler may block on
 * the writer), request bodies gathered into 4 KiB-aligned buffers (the writer hands them to the
 * segment log's O_DIRECT writes without a copy), and dispatch through the route table of api_routes.c.
 *
 * Contract: handlers see a parsed request (method, path parameters, query arguments, body) and fill a
 * response; they never touch MHD. Every answer is JSON except /metrics. The limits of the edge are
 * enforced here, before a handler runs (docs/API.md, "Limits"):
 *   - the listening socket is bound exclusively: a port in use is an error naming the address;
 *   - framing: two Content-Length headers, Content-Length with Transfer-Encoding, or whitespace in a
 *     header name are answered 400, a transfer coding other than plain chunked 501, each closing the
 *     connection; a body that stalls is cut (below);
 *   - size: 413 before reading an oversized body when Content-Length says so;
 *   - memory: the bytes of request bodies in flight stay within max_inflight (503 + Retry-After);
 *   - connections: at most max_connections in all (kept below the open-file limit, which is raised
 *     to its hard limit), max_connections_per_client per client address (503 beyond, and refused at
 *     twice that), request headers complete within header_timeout_s and no body stalled that long.
 * http_server_start also raises the process's open-file soft limit to its hard limit.
 * The access log (opt->access_log): once an exchange is over, one line (base/log.h, event http.request)
 * with the method, the route pattern on_headers chose (never the path: ids in it may be chosen by
 * clients; never the query string: /v1/patients?name=&dob= is PHI), status, response bytes, duration,
 * user, client address and a request id that every answer also carries as X-Request-Id (made here,
 * never taken from the client).
 *
 * What it must never do: hand a handler a request whose body was framed ambiguously, log a request's
 * path, query or body, or let a connection keep a body buffer between requests.
 */
#ifndef MS_HTTP_SERVER_H
#define MS_HTTP_SERVER_H

#include "base/util.h"

#include <sys/types.h>

#define HTTP_MAX_ARGS 32
#define HTTP_MAX_PARAMS 4

/* The accepted ranges of http_options' limits, checked by http_server_start; serve's option table takes
 * its ranges from these, so that the command line refuses what the server would. */
#define HTTP_HEADER_TIMEOUT_MAX_S 3600
#define HTTP_CONNECTIONS_MAX 65536
#define HTTP_MAX_INFLIGHT_MIN ((uint64_t)1 << 20)

typedef struct {
    const char *key, *value;
} http_arg;

typedef struct http_request {
    const char *method;
    const char *path;
    const char *content_type;  /* NULL if absent */
    const char *authorization; /* NULL if absent */
    const char *last_event_id; /* the Last-Event-ID header (Server-Sent Events resuming), NULL if absent */
    char client[64];           /* peer address */
    char *body;                /* aligned to 4096, zero-padded to body_padded */
    size_t body_len, body_cap;
    http_arg args[HTTP_MAX_ARGS];
    int nargs;
    bool too_many_args;
    bool nul_in_url; /* the URL held %00: its path or a query value would be cut short at the NUL (refused, 400) */
    char *params[HTTP_MAX_PARAMS]; /* path parameters ({} in the route pattern), NUL-terminated copies */
    int nparams;
    double received_at;        /* ms_mono_s() when the body was complete */
    int route;                 /* index into the route table, set by on_headers */
    bool bulk;                 /* set by on_headers: a bulk request (ingest), served at lower CPU priority */
    bool takes_body;           /* set by on_headers: the route reads a request body (any other refuses one) */
    char user[72], role[32];   /* who: set by on_headers from the bearer token ("" when none is needed) */
    const char *route_pattern; /* set by on_headers: the route the path matched ("/v1/records/{}"), the
                                * access log's name for the request; NULL when none did */
    char request_id[17];       /* 16 hex digits, made here; in the log line and the X-Request-Id header */
} http_request;

typedef struct {
    int status;
    buf body;
    const char *content_type; /* default application/json */
    /* an answer read from a file instead of body (an export's archive): file_fd >= 0 with has_file; the
     * server sends file_len bytes from it and closes it */
    bool has_file;
    int file_fd;
    uint64_t file_len;
    char content_disposition[128]; /* "" or the Content-Disposition header */
    char *location;                /* NULL or the Location header (a redirect: 307 to another node); freed */
    /* the console's static files (h_console.c): NULL, or the Cache-Control header instead of the default
     * (no-store; no-cache for a stream), and the Content-Security-Policy header */
    const char *cache_control;
    const char *csp;
    /* a streamed answer of unknown length (Server-Sent Events) instead of body: the server sends the headers
     * (with Cache-Control: no-cache and X-Accel-Buffering: no), then whatever read gives, from the
     * connection's own thread, until it returns < 0: read blocks until it has bytes (> 0), returns -1 at the
     * stream's end, -2 when it broke (or the client at client_fd went away; read may poll client_fd for
     * that while it waits). done(ctx) is called once the connection is finished with it (also if it was
     * never read). The request deadlines do not apply while it streams. */
    struct {
        ssize_t (*read)(void *ctx, int client_fd, char *buf, size_t max);
        void (*done)(void *ctx);
        void *ctx;
    } stream;
} http_response;

/* Query argument by name, or NULL. */
const char *http_arg_get(const http_request *r, const char *key);
/* Set an error answer: {"error": message}. */
void http_error(http_response *res, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

typedef struct http_server http_server;

typedef struct {
    const char *listen;              /* "HOST:PORT"; an empty HOST or 0.0.0.0 binds every interface */
    const char *listen_flag;         /* the flag that named it, for messages (NULL: "--listen") */
    size_t max_body;                 /* bytes */
    uint64_t max_inflight;           /* bytes of request bodies held at once */
    long header_timeout_s;           /* headers complete within this; a body never stalls this long */
    uint64_t min_body_rate;          /* bytes a second a body keeps up after its first header_timeout_s (0: any) */
    long max_connections;            /* in all (lowered to fit the open-file limit) */
    long max_connections_per_client; /* per client address */
    const char *tls_cert_pem;        /* PEM text of certificate (chain) and key: HTTPS when both are set */
    const char *tls_key_pem;
    bool access_log; /* a log line per request (http.request), after the answer */
} http_options;

/* Request handling entry points provided by api_routes.c. */
typedef struct {
    /* Decide before reading the body: 0 to continue, or an HTTP status (404/405/415/...) to answer now
     * with res filled. */
    int (*on_headers)(void *ctx, http_request *req, http_response *res);
    void (*handle)(void *ctx, http_request *req, http_response *res);
    void *ctx;
} http_handler;

/* Check a "HOST:PORT" (as opt->listen takes it) without binding; *loopback: HOST is 127.x.x.x or
 * localhost. */
ms_code http_listen_check(const char *listen, bool *loopback, ms_err *e);
ms_code http_server_start(http_server **out, const http_options *opt, const http_handler *h, ms_err *e);
/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

#endif

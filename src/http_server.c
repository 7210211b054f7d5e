/*
 * http_server.c - libmicrohttpd plumbing (see http_server.h).
 */
#include "http_server.h"

#include "json_write.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY_ALIGN 4096
#define BULK_NICE 10
#define BODY_CACHE_MAX ((size_t)96 << 20)

struct http_server {
    struct MHD_Daemon *daemon;
    http_options opt;
    http_handler handler;
    int port;
};

typedef struct {
    http_request req;
    http_response res;
    bool answered_early; /* on_headers produced the answer */
    bool too_large;
    size_t content_length; /* from the header, 0 if absent */
    bool niced;            /* this thread's priority was lowered for a bulk request */
} conn_state;

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

static enum MHD_Result send_response(struct MHD_Connection *conn, http_response *res)
{
    if (res->status == 0) res->status = 500;
    size_t len = res->body.len;
    char *data = buf_take(&res->body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", res->content_type ? res->content_type : "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    atomic_fetch_add(&g_metrics.requests, 1);
    if (res->status >= 400) atomic_fetch_add(&g_metrics.http_errors, 1);
    return ok;
}

/* Each connection thread keeps its last body buffer for the next request: a fresh 20 MB buffer per
 * request costs more in page faults and zeroing than parsing the records does. */
typedef struct {
    char *data;
    size_t cap;
} body_cache;
static pthread_key_t body_cache_key;
static pthread_once_t body_cache_once = PTHREAD_ONCE_INIT;

static void body_cache_free(void *p)
{
    body_cache *c = p;
    free(c->data);
    free(c);
}
static void body_cache_init(void) { pthread_key_create(&body_cache_key, body_cache_free); }

static body_cache *thread_body_cache(void)
{
    pthread_once(&body_cache_once, body_cache_init);
    body_cache *c = pthread_getspecific(body_cache_key);
    if (!c) {
        c = ms_calloc(1, sizeof *c);
        pthread_setspecific(body_cache_key, c);
    }
    return c;
}

/* An aligned buffer of at least cap bytes: the thread's cached one if big enough. */
static char *body_alloc(size_t cap, size_t *got)
{
    body_cache *c = thread_body_cache();
    if (c->data && c->cap >= cap) {
        char *p = c->data;
        *got = c->cap;
        c->data = NULL;
        c->cap = 0;
        return p;
    }
    void *p;
    if (posix_memalign(&p, BODY_ALIGN, cap) != 0) ms_oom();
    *got = cap;
    return p;
}

static void body_release(char *p, size_t cap)
{
    if (!p) return;
    body_cache *c = thread_body_cache();
    if (c->cap < cap && cap <= BODY_CACHE_MAX) {
        free(c->data);
        c->data = p;
        c->cap = cap;
        return;
    }
    free(p);
}

static bool body_append(conn_state *cs, const char *data, size_t n, size_t max)
{
    http_request *r = &cs->req;
    if (r->body_len + n > max) return false;
    size_t need = r->body_len + n + BODY_ALIGN; /* room to zero-pad to the next 4 KiB */
    if (need > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 65536;
        if (cs->content_length + BODY_ALIGN > cap) cap = cs->content_length + BODY_ALIGN;
        while (cap < need)
            cap *= 2;
        cap = (cap + BODY_ALIGN - 1) & ~(size_t)(BODY_ALIGN - 1);
        size_t got;
        char *nb = body_alloc(cap, &got);
        cap = got;
        if (r->body_len) memcpy(nb, r->body, r->body_len);
        body_release(r->body, r->body_cap);
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    return true;
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
        http_request *r = &cs->req;
        r->method = method;
        r->path = url;
        r->content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        r->authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client, sizeof r->client);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client, sizeof r->client);
        }
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, r);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) cs->content_length = (size_t)strtoull(cl, NULL, 10);
        if (cl && strtoull(cl, NULL, 10) > srv->opt.max_body) {
            http_error(&cs->res, 413, "request body of %s bytes exceeds the limit of %zu bytes", cl, srv->opt.max_body);
            cs->answered_early = true;
            return send_response(conn, &cs->res);
        }
        int st = srv->handler.on_headers(srv->handler.ctx, r, &cs->res);
        if (!st && r->bulk) {
            /* Bulk work (receiving and parsing megabytes) runs at a lower CPU priority so that point
             * reads stay fast under full ingest; restored when the request completes. */
            cs->niced = setpriority(PRIO_PROCESS, (id_t)gettid(), BULK_NICE) == 0;
        }
        if (st) {
            cs->answered_early = true;
            if (!cs->res.status) http_error(&cs->res, st, "request refused");
            return send_response(conn, &cs->res);
        }
        return MHD_YES;
    }
    if (cs->answered_early) {
        *upload_data_size = 0; /* discard */
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cs->too_large && !body_append(cs, upload_data, *upload_data_size, srv->opt.max_body)) cs->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* the whole request is here */
    if (cs->too_large) {
        http_error(&cs->res, 413, "request body exceeds the limit of %zu bytes", srv->opt.max_body);
        return send_response(conn, &cs->res);
    }
    http_request *r = &cs->req;
    if (r->body) {
        size_t padded = (r->body_len + BODY_ALIGN - 1) & ~(size_t)(BODY_ALIGN - 1);
        memset(r->body + r->body_len, 0, padded - r->body_len);
    }
    r->received_at = ms_mono_s();
    srv->handler.handle(srv->handler.ctx, r, &cs->res);
    return send_response(conn, &cs->res);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    conn_state *cs = *con_cls;
    if (!cs) return;
    if (cs->niced) setpriority(PRIO_PROCESS, (id_t)gettid(), 0); /* may fail unprivileged: stays lower */
    body_release(cs->req.body, cs->req.body_cap);
    for (int i = 0; i < cs->req.nparams; i++)
        free(cs->req.params[i]);
    buf_free(&cs->res.body);
    free(cs);
    *con_cls = NULL;
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
    if (*end || port < 0 || port > 65535) return false;
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

ms_code http_server_start(http_server **out, const http_options *opt, const http_handler *h, ms_err *e)
{
    struct sockaddr_in sa;
    if (!parse_listen(opt->listen, &sa))
        return ms_fail(e, MS_EINVAL, "--listen: expected HOST:PORT (IPv4), got '%s'", opt->listen);
    http_server *s = ms_calloc(1, sizeof *s);
    s->opt = *opt;
    s->handler = *h;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    bool tls = opt->tls_cert_pem && opt->tls_key_pem;
    if (tls && !MHD_is_feature_supported(MHD_FEATURE_TLS)) {
        free(s);
        return ms_fail(e, MS_EINVAL, "this libmicrohttpd was built without TLS");
    }
    if (tls) flags |= MHD_USE_TLS;
    /* the TLS options come last; for plain HTTP the list ends before them */
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned)512,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(1 << 20), MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
        tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, opt->tls_cert_pem, MHD_OPTION_HTTPS_MEM_KEY, opt->tls_key_pem,
        MHD_OPTION_END);
    if (!s->daemon) {
        free(s);
        return ms_fail(e, MS_EIO, "cannot listen on %s (address in use or not available%s)", opt->listen,
                       tls ? ", or the TLS certificate/key is not valid PEM" : "");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : ntohs(sa.sin_port);
    *out = s;
    return MS_OK;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stop(http_server *s)
{
    if (!s) return;
    MHD_stop_daemon(s->daemon);
    free(s);
}

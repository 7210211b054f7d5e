/*
 * http_client.c: a small blocking HTTP/1.1 client over plain TCP sockets (see http_client.h).
 *
 * DESIGN: an http_client_conn owns one socket, a read buffer and a scratch buffer for request
 * headers.
 * A request is the header block and the caller's body sent by sendmsg() of two iovecs (no copy of
 * the body), at most SEND_CHUNK bytes a call; the answer is read through the read buffer: status
 * line, header lines, then the body by Content-Length, by chunks, or to end of stream. Timeouts are
 * the socket's SO_SNDTIMEO / SO_RCVTIMEO (per step, not per request) plus a polled non-blocking
 * connect. A request on a reused connection that fails before any answer byte arrives is retried
 * once on a new connection (the server may have closed the idle connection between our requests).
 * TLS (webhooks over https): after the TCP connect, an OpenSSL handshake on the same blocking socket
 * (its SO_RCVTIMEO/SO_SNDTIMEO bound each step too), SNI and the host name or IP address checked by
 * OpenSSL (SSL_set1_host, X509_VERIFY_PARAM_set1_ip_asc); every read and write then goes through
 * conn_recv/conn_send, which speak plain sockets or TLS. The descriptor is opened, closed and shut down
 * under fd_lock, so that http_client_conn_interrupt (another thread) never touches a descriptor that was
 * closed and perhaps reused.
 *
 * An answer streamed to a descriptor (http_client_request_to_fd) goes through the same read buffer: its
 * body bytes are written out as they arrive, never gathered.
 *
 * What it must never do: exit, print, raise SIGPIPE (MSG_NOSIGNAL on every send), read past the
 * end of the current answer (the rest of the read buffer belongs to the next one), or accept an
 * answer it could not frame (such a connection is closed, not reused).
 */
#include "base/http_client.h"

#include "base/fd_io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    READ_BUF_SIZE = 64 * 1024,    /* read buffer; also the cap on one header or chunk-size line */
    MAX_HEADER_BYTES = 64 * 1024, /* all header lines of one answer together */
    DEFAULT_TIMEOUT_MS = 60000,
};
#define DEFAULT_MAX_RESPONSE ((size_t)256 * 1024 * 1024)

struct http_client_conn {
    char host[256];
    char port[8];
    char host_header[272]; /* "host:port", IPv6 literal in brackets */
    int fd;                /* -1 when closed */
    int timeout_ms;
    size_t max_response;
    unsigned long requests; /* answers completed on the current socket */
    char *rbuf;             /* READ_BUF_SIZE bytes; unread data is rbuf[rpos..rlen) */
    size_t rpos, rlen;
    char *hbuf; /* request header block being built */
    size_t hcap, hlen;
    char err[320];
    int err_errno;           /* the errno behind err (0: none) */
    SSL_CTX *tls;            /* NULL: plain TCP */
    SSL *ssl;                /* the TLS session of the open socket */
    pthread_mutex_t fd_lock; /* fd's opening, closing and interruption */
    bool interrupted;
    http_client_address_fn allowed; /* NULL: any address */
    void *allowed_ctx;
};

const char *http_client_err_str(http_client_err err)
{
    switch (err) {
    case HTTP_CLIENT_OK: return "ok";
    case HTTP_CLIENT_E_INVALID: return "invalid argument";
    case HTTP_CLIENT_E_NOMEM: return "out of memory";
    case HTTP_CLIENT_E_RESOLVE: return "name resolution failed";
    case HTTP_CLIENT_E_CONNECT: return "connect failed";
    case HTTP_CLIENT_E_SEND: return "send failed";
    case HTTP_CLIENT_E_RECV: return "receive failed";
    case HTTP_CLIENT_E_TIMEOUT: return "timed out";
    case HTTP_CLIENT_E_CLOSED: return "connection closed by server";
    case HTTP_CLIENT_E_PROTOCOL: return "malformed HTTP answer";
    case HTTP_CLIENT_E_TOO_LARGE: return "answer too large";
    case HTTP_CLIENT_E_WRITE: return "write failed";
    }
    return "unknown error";
}

void http_client_response_init(http_client_response *resp) { memset(resp, 0, sizeof *resp); }

void http_client_response_free(http_client_response *resp)
{
    if (!resp) return;
    free(resp->body);
    memset(resp, 0, sizeof *resp);
}

/* ---------- connection ---------- */

http_client_conn *http_client_conn_new(const char *host, const char *port, int timeout_ms, size_t max_response)
{
    if (!host || !port || !*host || !*port) return NULL;
    http_client_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (strlen(host) >= sizeof c->host || strlen(port) >= sizeof c->port) {
        free(c);
        return NULL;
    }
    strcpy(c->host, host);
    strcpy(c->port, port);
    if (strchr(host, ':'))
        snprintf(c->host_header, sizeof c->host_header, "[%s]:%s", host, port);
    else
        snprintf(c->host_header, sizeof c->host_header, "%s:%s", host, port);
    c->fd = -1;
    pthread_mutex_init(&c->fd_lock, NULL);
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    c->max_response = max_response ? max_response : DEFAULT_MAX_RESPONSE;
    c->rbuf = malloc(READ_BUF_SIZE);
    c->hcap = 1024;
    c->hbuf = malloc(c->hcap);
    if (!c->rbuf || !c->hbuf) {
        http_client_conn_free(c);
        return NULL;
    }
    return c;
}

bool http_client_ca_check(const char *ca_file, char *why, size_t cap)
{
    struct stat st;
    if (stat(ca_file, &st) != 0) {
        snprintf(why, cap, "cannot open it: %s", strerror(errno));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, cap, "not a file of PEM certificates");
        return false;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    bool ok = ctx && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) == 1;
    unsigned long err = ok ? 0 : ERR_peek_last_error();
    char reason[160] = "no certificate in it";
    if (err) ERR_error_string_n(err, reason, sizeof reason);
    ERR_clear_error();
    SSL_CTX_free(ctx);
    if (!ok) snprintf(why, cap, "cannot load CA certificates from it (%s)", reason);
    return ok;
}

http_client_conn *http_client_conn_new_tls(const char *host, const char *port, int timeout_ms, size_t max_response,
                                           const char *ca_file)
{
    http_client_conn *c = http_client_conn_new(host, port, timeout_ms, max_response);
    if (!c) return NULL;
    c->tls = SSL_CTX_new(TLS_client_method());
    if (!c->tls || SSL_CTX_set_min_proto_version(c->tls, TLS1_2_VERSION) != 1 ||
        (ca_file ? SSL_CTX_load_verify_locations(c->tls, ca_file, NULL) : SSL_CTX_set_default_verify_paths(c->tls)) !=
            1) {
        ERR_clear_error();
        http_client_conn_free(c);
        return NULL;
    }
    SSL_CTX_set_verify(c->tls, SSL_VERIFY_PEER, NULL);
    return c;
}

void http_client_conn_close(http_client_conn *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->fd_lock);
    if (c->ssl) SSL_free(c->ssl); /* no close_notify: the connection is dropped, not closed politely */
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    pthread_mutex_unlock(&c->fd_lock);
    c->rpos = c->rlen = 0;
    c->requests = 0;
}

void http_client_conn_interrupt(http_client_conn *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->fd_lock);
    c->interrupted = true;
    if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->fd_lock);
}

void http_client_conn_free(http_client_conn *c)
{
    if (!c) return;
    http_client_conn_close(c);
    if (c->tls) SSL_CTX_free(c->tls);
    pthread_mutex_destroy(&c->fd_lock);
    free(c->rbuf);
    free(c->hbuf);
    free(c);
}

static http_client_err conn_fail(http_client_conn *c, http_client_err err, int sys_errno, const char *what);

/* ---------- bytes in and out: plain or TLS ---------- */

/* recv(2)'s contract over either: > 0 bytes, 0 the peer closed, -1 with errno (EAGAIN: the timeout). */
static ssize_t conn_recv(http_client_conn *c, void *b, size_t n)
{
    if (!c->ssl) return recv(c->fd, b, n, 0);
    errno = 0;
    int r = SSL_read(c->ssl, b, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) return r;
    int err = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (err == SSL_ERROR_ZERO_RETURN) return 0;
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (err == SSL_ERROR_SYSCALL && errno == 0) return 0; /* the peer closed without close_notify */
    if (errno == 0) errno = EPROTO;
    return -1;
}

/* Write all of b; 0, or -1 with errno (EAGAIN: the timeout). */
static int conn_send_tls(http_client_conn *c, const void *b, size_t n)
{
    const char *p = b;
    while (n > 0) {
        errno = 0;
        int w = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        int err = SSL_get_error(c->ssl, w);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            errno = EAGAIN;
        else if (errno == 0)
            errno = EPIPE;
        return -1;
    }
    return 0;
}

static bool is_ip_literal(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* The TLS handshake on the connected socket c->fd, the certificate checked. */
static http_client_err tls_handshake(http_client_conn *c)
{
    SSL *ssl = SSL_new(c->tls);
    if (!ssl) return conn_fail(c, HTTP_CLIENT_E_NOMEM, 0, "TLS with");
    pthread_mutex_lock(&c->fd_lock);
    c->ssl = ssl;
    pthread_mutex_unlock(&c->fd_lock);
    SSL_set_fd(ssl, c->fd);
    if (is_ip_literal(c->host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->host);
    } else {
        SSL_set_tlsext_host_name(ssl, c->host);
        SSL_set1_host(ssl, c->host);
    }
    errno = 0;
    if (SSL_connect(ssl) == 1) return HTTP_CLIENT_OK;
    long verify = SSL_get_verify_result(ssl);
    char why[160];
    unsigned long ossl = ERR_get_error();
    if (verify != X509_V_OK)
        snprintf(why, sizeof why, "certificate: %s", X509_verify_cert_error_string(verify));
    else if (ossl)
        ERR_error_string_n(ossl, why, sizeof why);
    else
        snprintf(why, sizeof why, "%s", errno == EAGAIN ? "timed out" : errno ? strerror(errno) : "closed");
    ERR_clear_error();
    http_client_err err = conn_fail(c, HTTP_CLIENT_E_CONNECT, 0, "TLS handshake with");
    size_t l = strlen(c->err);
    snprintf(c->err + l, sizeof c->err - l, " (%s)", why);
    return err;
}

const char *http_client_conn_error(const http_client_conn *c) { return c ? c->err : "no connection"; }

int http_client_conn_errno(const http_client_conn *c) { return c ? c->err_errno : 0; }

/* Records a message for err, closes the socket, returns err. sys_errno 0: no strerror part. */
static http_client_err conn_fail(http_client_conn *c, http_client_err err, int sys_errno, const char *what)
{
    c->err_errno = sys_errno;
    if (sys_errno)
        snprintf(c->err, sizeof c->err, "%s %s: %s: %s", what, c->host_header, http_client_err_str(err),
                 strerror(sys_errno));
    else
        snprintf(c->err, sizeof c->err, "%s %s: %s", what, c->host_header, http_client_err_str(err));
    http_client_conn_close(c);
    return err;
}

static http_client_err conn_open(http_client_conn *c)
{
    pthread_mutex_lock(&c->fd_lock);
    bool stop = c->interrupted;
    pthread_mutex_unlock(&c->fd_lock);
    if (stop) {
        snprintf(c->err, sizeof c->err, "connect %s: interrupted", c->host_header);
        return HTTP_CLIENT_E_CONNECT;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(c->host, c->port, &hints, &res);
    if (gai != 0) {
        snprintf(c->err, sizeof c->err, "resolve %s: %s", c->host_header, gai_strerror(gai));
        return HTTP_CLIENT_E_RESOLVE;
    }
    int last_errno = 0;
    http_client_err last_err = HTTP_CLIENT_E_CONNECT;
    char refused[200] = "";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (c->allowed && !c->allowed(c->allowed_ctx, ai->ai_addr, refused, sizeof refused)) continue;
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int pr;
            do
                pr = poll(&pfd, 1, c->timeout_ms);
            while (pr < 0 && errno == EINTR);
            if (pr == 0) {
                last_errno = ETIMEDOUT;
                last_err = HTTP_CLIENT_E_TIMEOUT;
                close(fd);
                continue;
            }
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (pr < 0)
                soerr = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
                soerr = errno;
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc < 0) {
            last_errno = errno;
            last_err = HTTP_CLIENT_E_CONNECT;
            close(fd);
            continue;
        }
        /* Back to blocking mode with per-step timeouts. */
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
            last_errno = errno;
            close(fd);
            continue;
        }
        struct timeval tv = {.tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000};
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        freeaddrinfo(res);
        pthread_mutex_lock(&c->fd_lock);
        c->fd = fd;
        if (c->interrupted) shutdown(fd, SHUT_RDWR); /* interrupted while connecting */
        pthread_mutex_unlock(&c->fd_lock);
        c->rpos = c->rlen = 0;
        c->requests = 0;
        c->err[0] = '\0';
        return c->tls ? tls_handshake(c) : HTTP_CLIENT_OK;
    }
    freeaddrinfo(res);
    if (refused[0] && !last_errno) { /* every address refused by the check */
        snprintf(c->err, sizeof c->err, "connect %.100s: %.199s", c->host_header, refused);
        return HTTP_CLIENT_E_CONNECT;
    }
    return conn_fail(c, last_err, last_errno, "connect");
}

void http_client_conn_set_address_check(http_client_conn *conn, http_client_address_fn allowed, void *ctx)
{
    conn->allowed = allowed;
    conn->allowed_ctx = ctx;
}

/* ---------- request ---------- */

static bool has_crlf(const char *s) { return s && strpbrk(s, "\r\n") != NULL; }

static bool hbuf_append(http_client_conn *c, const char *s, size_t n)
{
    if (c->hlen + n > c->hcap) {
        size_t cap = c->hcap;
        while (cap < c->hlen + n)
            cap *= 2;
        char *p = realloc(c->hbuf, cap);
        if (!p) return false;
        c->hbuf = p;
        c->hcap = cap;
    }
    memcpy(c->hbuf + c->hlen, s, n);
    c->hlen += n;
    return true;
}

static bool hbuf_str(http_client_conn *c, const char *s) { return hbuf_append(c, s, strlen(s)); }

static http_client_err build_head(http_client_conn *c, const char *method, const char *path,
                                  const http_client_header *headers, size_t body_len, bool send_length)
{
    c->hlen = 0;
    bool ok = hbuf_str(c, method) && hbuf_str(c, " ") && hbuf_str(c, path) && hbuf_str(c, " HTTP/1.1\r\nHost: ") &&
              hbuf_str(c, c->host_header) && hbuf_str(c, "\r\n");
    for (const http_client_header *h = headers; ok && h && h->name; h++)
        ok = hbuf_str(c, h->name) && hbuf_str(c, ": ") && hbuf_str(c, h->value ? h->value : "") && hbuf_str(c, "\r\n");
    if (ok && send_length) {
        char line[64];
        int n = snprintf(line, sizeof line, "Content-Length: %zu\r\n", body_len);
        ok = hbuf_append(c, line, (size_t)n);
    }
    ok = ok && hbuf_str(c, "\r\n");
    if (!ok) {
        snprintf(c->err, sizeof c->err, "request to %s: out of memory", c->host_header);
        return HTTP_CLIENT_E_NOMEM;
    }
    return HTTP_CLIENT_OK;
}

/* At most this many bytes a sendmsg(). On a kernel that does not preempt system calls (PREEMPT_NONE,
 * this machine's), one sendmsg() of a 20 MB body over loopback holds a CPU for milliseconds, the
 * receiver's softirq work included: a load generator on the server's machine then delayed the
 * server's point reads (measured: bench read p99 2.3-3.1 ms with whole-body sends, 1.7-2.0 ms with
 * 256 KiB ones, the server's own time unchanged). */
#define SEND_CHUNK ((size_t)256 << 10)

/* At most this many iovecs a sendmsg() (Linux's UIO_MAXIOV is 1024). */
#define SEND_IOVS 1024

/* Sends the header block and the body's nbody pieces, in order. On failure returns the error with *sys_errno set
 * and the socket still open (the server may have answered early, e.g. 413, before closing). */
static http_client_err send_all(http_client_conn *c, const struct iovec *body, int nbody, int *sys_errno)
{
    *sys_errno = 0;
    if (c->ssl) {
        bool ok = conn_send_tls(c, c->hbuf, c->hlen) == 0;
        for (int i = 0; i < nbody && ok; i++)
            ok = conn_send_tls(c, body[i].iov_base, body[i].iov_len) == 0;
        if (ok) return HTTP_CLIENT_OK;
        *sys_errno = errno;
        return errno == EAGAIN ? HTTP_CLIENT_E_TIMEOUT : HTTP_CLIENT_E_SEND;
    }
    /* the header block and the pieces (v: advanced as sendmsg() takes bytes), and one sendmsg()'s share of them
     * (part: at most SEND_CHUNK bytes in at most SEND_IOVS pieces, the last one cut short) */
    size_t nall = (size_t)nbody + 1, npart = nall < SEND_IOVS ? nall : SEND_IOVS;
    struct iovec *v = malloc(sizeof *v * (nall + npart)), *part = v + nall;
    if (!v) {
        *sys_errno = ENOMEM;
        return HTTP_CLIENT_E_NOMEM;
    }
    struct iovec *all = v;
    v[0] = (struct iovec){.iov_base = c->hbuf, .iov_len = c->hlen};
    int nv = 1;
    for (int i = 0; i < nbody; i++)
        if (body[i].iov_len) v[nv++] = body[i];
    http_client_err out = HTTP_CLIENT_OK;
    while (nv > 0) {
        size_t room = SEND_CHUNK;
        int np = 0;
        for (int i = 0; i < nv && room && (size_t)np < npart; i++, np++) {
            part[np] = v[i];
            if (part[np].iov_len > room) part[np].iov_len = room;
            room -= part[np].iov_len;
        }
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = part;
        msg.msg_iovlen = (size_t)np;
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            *sys_errno = errno;
            out = errno == EAGAIN || errno == EWOULDBLOCK ? HTTP_CLIENT_E_TIMEOUT : HTTP_CLIENT_E_SEND;
            break;
        }
        size_t left = (size_t)n;
        while (nv > 0 && left >= v->iov_len) {
            left -= v->iov_len;
            v++;
            nv--;
        }
        if (nv > 0) {
            v->iov_base = (char *)v->iov_base + left;
            v->iov_len -= left;
        }
    }
    free(all);
    return out;
}

/* ---------- answer ---------- */

typedef struct {
    http_client_conn *c;
    size_t received; /* answer bytes received so far (to tell "nothing came back") */
    bool peer_gone;  /* the failure was EOF / reset before any answer byte */
    int sink_fd;     /* >= 0: a 2xx answer's body goes to this descriptor (http_client_request_to_fd) */
    uint64_t sink_max, sunk;
    bool to_sink; /* this answer's body goes to sink_fd */
} reader;

/* Reads more bytes into the read buffer. Returns HTTP_CLIENT_OK or an error (end of stream is
 * HTTP_CLIENT_E_CLOSED). */
static http_client_err fill(reader *r)
{
    http_client_conn *c = r->c;
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rlen == READ_BUF_SIZE) return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "answer line from");
    for (;;) {
        ssize_t n = conn_recv(c, c->rbuf + c->rlen, READ_BUF_SIZE - c->rlen);
        if (n > 0) {
            c->rlen += (size_t)n;
            r->received += (size_t)n;
            return HTTP_CLIENT_OK;
        }
        if (n == 0) {
            r->peer_gone = (r->received == 0);
            return conn_fail(c, HTTP_CLIENT_E_CLOSED, 0, "answer from");
        }
        if (errno == EINTR) continue;
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK) return conn_fail(c, HTTP_CLIENT_E_TIMEOUT, 0, "answer from");
        r->peer_gone = (r->received == 0 && e == ECONNRESET);
        return conn_fail(c, HTTP_CLIENT_E_RECV, e, "answer from");
    }
}

/* Reads one line (CRLF or LF); *line points into the read buffer, without the line end, valid
 * until the next read. */
static http_client_err read_line(reader *r, char **line, size_t *len)
{
    http_client_conn *c = r->c;
    size_t scanned = 0;
    for (;;) {
        char *start = c->rbuf + c->rpos;
        size_t avail = c->rlen - c->rpos;
        char *nl = memchr(start + scanned, '\n', avail - scanned);
        if (nl) {
            size_t n = (size_t)(nl - start);
            c->rpos += n + 1;
            if (n > 0 && start[n - 1] == '\r') n--;
            start[n] = '\0';
            *line = start;
            *len = n;
            return HTTP_CLIENT_OK;
        }
        scanned = avail; /* fill() moves unread data to the front: scanned stays valid */
        http_client_err e = fill(r);
        if (e) return e;
    }
}

static http_client_err body_reserve(http_client_conn *c, http_client_response *resp, size_t extra)
{
    size_t need = resp->body_len + extra + 1;
    if (resp->body_len + extra > c->max_response) return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "answer body from");
    if (need <= resp->body_cap) return HTTP_CLIENT_OK;
    size_t cap = resp->body_cap ? resp->body_cap : 4096;
    while (cap < need)
        cap *= 2;
    char *p = realloc(resp->body, cap);
    if (!p) return conn_fail(c, HTTP_CLIENT_E_NOMEM, 0, "answer body from");
    resp->body = p;
    resp->body_cap = cap;
    return HTTP_CLIENT_OK;
}

/* Writes n body bytes to the sink descriptor, within its bound. */
static http_client_err sink_write(reader *r, const char *p, size_t n)
{
    http_client_conn *c = r->c;
    if (n > r->sink_max - r->sunk) return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "answer body from");
    size_t done;
    int err = ms_write_full(r->sink_fd, p, n, -1, &done);
    r->sunk += done;
    return err ? conn_fail(c, HTTP_CLIENT_E_WRITE, err, "saving the answer body from") : HTTP_CLIENT_OK;
}

/* Exactly n answer bytes to the sink, through the read buffer (never past the answer's end). */
static http_client_err sink_exact(reader *r, uint64_t n)
{
    http_client_conn *c = r->c;
    while (n > 0) {
        if (c->rpos == c->rlen) {
            http_client_err e = fill(r);
            if (e) return e;
        }
        size_t take = c->rlen - c->rpos;
        if (take > n) take = (size_t)n;
        http_client_err e = sink_write(r, c->rbuf + c->rpos, take);
        if (e) return e;
        c->rpos += take;
        n -= take;
    }
    return HTTP_CLIENT_OK;
}

/* conn_recv failed reading an answer's body (errno set, not EINTR): a timeout or another receive error. */
static http_client_err body_recv_failed(http_client_conn *c)
{
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return conn_fail(c, HTTP_CLIENT_E_TIMEOUT, 0, "answer body from");
    return conn_fail(c, HTTP_CLIENT_E_RECV, err, "answer body from");
}

/* Appends exactly n answer bytes to the body (or the sink). */
static http_client_err read_body_exact(reader *r, http_client_response *resp, size_t n)
{
    http_client_conn *c = r->c;
    if (r->to_sink) return sink_exact(r, n);
    http_client_err e = body_reserve(c, resp, n);
    if (e) return e;
    size_t from_buf = c->rlen - c->rpos;
    if (from_buf > n) from_buf = n;
    memcpy(resp->body + resp->body_len, c->rbuf + c->rpos, from_buf);
    c->rpos += from_buf;
    resp->body_len += from_buf;
    n -= from_buf;
    while (n > 0) { /* straight into the body, bypassing the read buffer */
        ssize_t got = conn_recv(c, resp->body + resp->body_len, n);
        if (got > 0) {
            resp->body_len += (size_t)got;
            r->received += (size_t)got;
            n -= (size_t)got;
            continue;
        }
        if (got == 0) return conn_fail(c, HTTP_CLIENT_E_CLOSED, 0, "answer body from");
        if (errno == EINTR) continue;
        return body_recv_failed(c);
    }
    return HTTP_CLIENT_OK;
}

static http_client_err read_body_to_eof(reader *r, http_client_response *resp)
{
    http_client_conn *c = r->c;
    while (r->to_sink) {
        http_client_err e = sink_exact(r, c->rlen - c->rpos);
        if (e) return e;
        ssize_t got = conn_recv(c, c->rbuf, READ_BUF_SIZE); /* the read buffer is empty */
        if (got > 0) {
            c->rpos = 0;
            c->rlen = (size_t)got;
            r->received += (size_t)got;
            continue;
        }
        if (got == 0) return HTTP_CLIENT_OK;
        if (errno == EINTR) continue;
        return body_recv_failed(c);
    }
    for (;;) {
        http_client_err e = read_body_exact(r, resp, c->rlen - c->rpos);
        if (e) return e;
        /* room for what may still come, within max_response; none left: a byte more is too large */
        size_t room = c->max_response - resp->body_len;
        size_t want = room < READ_BUF_SIZE ? room : READ_BUF_SIZE;
        char probe;
        e = body_reserve(c, resp, want);
        if (e) return e;
        ssize_t got = conn_recv(c, want ? resp->body + resp->body_len : &probe, want ? want : 1);
        if (got > 0 && !want) return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "answer body from");
        if (got > 0) {
            resp->body_len += (size_t)got;
            r->received += (size_t)got;
            continue;
        }
        if (got == 0) return HTTP_CLIENT_OK;
        if (errno == EINTR) continue;
        return body_recv_failed(c);
    }
}

static http_client_err read_body_chunked(reader *r, http_client_response *resp)
{
    http_client_conn *c = r->c;
    for (;;) {
        char *line;
        size_t len;
        http_client_err e = read_line(r, &line, &len);
        if (e) return e;
        size_t size = 0;
        size_t i = 0;
        for (; i < len; i++) {
            char ch = line[i];
            int digit;
            if (ch >= '0' && ch <= '9')
                digit = ch - '0';
            else if (ch >= 'a' && ch <= 'f')
                digit = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F')
                digit = ch - 'A' + 10;
            else
                break;
            if (size > (SIZE_MAX >> 4)) return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "chunk size from");
            size = size * 16 + (size_t)digit;
        }
        if (i == 0 || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
            return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "chunk size from");
        if (size == 0) { /* last chunk: skip trailers up to the empty line */
            size_t trailer_bytes = 0;
            do {
                e = read_line(r, &line, &len);
                if (e) return e;
                trailer_bytes += len;
                if (trailer_bytes > MAX_HEADER_BYTES)
                    return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "chunk trailers from");
            } while (len > 0);
            return HTTP_CLIENT_OK;
        }
        e = read_body_exact(r, resp, size);
        if (e) return e;
        e = read_line(r, &line, &len);
        if (e) return e;
        if (len != 0) return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "chunk end from");
    }
}

static bool token_in_list(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tlen && strncasecmp(start, token, tlen) == 0) return true;
    }
    return false;
}

static http_client_err read_answer(reader *r, bool head_request, http_client_response *resp, bool *keep_alive)
{
    http_client_conn *c = r->c;
    for (;;) { /* loops over 1xx interim answers */
        char *line;
        size_t len;
        http_client_err e = read_line(r, &line, &len);
        if (e) return e;
        int minor;
        if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
            line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9' ||
            (len > 12 && line[12] != ' '))
            return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "status line from");
        minor = line[7] - '0';
        int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');

        bool chunked = false, close_conn = (minor == 0), have_length = false;
        size_t length = 0, header_bytes = 0;
        for (;;) {
            e = read_line(r, &line, &len);
            if (e) return e;
            if (len == 0) break;
            header_bytes += len;
            if (header_bytes > MAX_HEADER_BYTES) return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "answer header from");
            char *colon = memchr(line, ':', len);
            if (!colon) return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "answer header from");
            *colon = '\0';
            char *value = colon + 1;
            while (*value == ' ' || *value == '\t')
                value++;
            if (strcasecmp(line, "Content-Length") == 0) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(value, &end, 10);
                while (*end == ' ' || *end == '\t')
                    end++;
                if (errno || end == value || *end || value[0] == '-' || (have_length && v != length))
                    return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "Content-Length from");
                bool to_sink = r->sink_fd >= 0 && status >= 200 && status < 300;
                if (v > (to_sink ? r->sink_max : c->max_response) || v > SIZE_MAX)
                    return conn_fail(c, HTTP_CLIENT_E_TOO_LARGE, 0, "answer body from");
                length = (size_t)v;
                have_length = true;
            } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
                chunked = token_in_list(value, "chunked");
                if (!chunked) return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "Transfer-Encoding from");
            } else if (strcasecmp(line, "Connection") == 0) {
                if (token_in_list(value, "close"))
                    close_conn = true;
                else if (token_in_list(value, "keep-alive"))
                    close_conn = false;
            }
        }
        if (status >= 100 && status < 200) {
            if (status == 101) return conn_fail(c, HTTP_CLIENT_E_PROTOCOL, 0, "protocol switch by");
            continue;
        }
        resp->status = status;
        resp->body_len = 0;
        r->to_sink = r->sink_fd >= 0 && status >= 200 && status < 300;
        e = body_reserve(c, resp, 0);
        if (e) return e;
        if (head_request || status == 204 || status == 304) {
            /* no body */
        } else if (chunked) {
            e = read_body_chunked(r, resp);
        } else if (have_length) {
            e = read_body_exact(r, resp, length);
        } else {
            close_conn = true;
            e = read_body_to_eof(r, resp);
        }
        if (e) return e;
        resp->body[resp->body_len] = '\0';
        *keep_alive = !close_conn;
        return HTTP_CLIENT_OK;
    }
}

http_client_err http_client_request(http_client_conn *c, const char *method, const char *path,
                                    const http_client_header *headers, const void *body, size_t body_len,
                                    http_client_response *resp)
{
    struct iovec one = {.iov_base = (void *)(uintptr_t)body, .iov_len = body_len};
    return http_client_request_iov(c, method, path, headers, &one, body_len ? 1 : 0, resp);
}

static http_client_err request(http_client_conn *c, const char *method, const char *path,
                               const http_client_header *headers, const struct iovec *body, int nbody, int sink_fd,
                               uint64_t sink_max, uint64_t *sunk, http_client_response *resp);

http_client_err http_client_request_iov(http_client_conn *c, const char *method, const char *path,
                                        const http_client_header *headers, const struct iovec *body, int nbody,
                                        http_client_response *resp)
{
    return request(c, method, path, headers, body, nbody, -1, 0, NULL, resp);
}

http_client_err http_client_request_to_fd(http_client_conn *c, const char *method, const char *path,
                                          const http_client_header *headers, const void *body, size_t body_len, int fd,
                                          uint64_t max_bytes, uint64_t *written, http_client_response *resp)
{
    struct iovec one = {.iov_base = (void *)(uintptr_t)body, .iov_len = body_len};
    if (written) *written = 0;
    if (fd < 0) {
        if (c) snprintf(c->err, sizeof c->err, "request to %s: no file descriptor for the answer", c->host_header);
        return HTTP_CLIENT_E_INVALID;
    }
    return request(c, method, path, headers, &one, body_len ? 1 : 0, fd, max_bytes, written, resp);
}

static http_client_err request(http_client_conn *c, const char *method, const char *path,
                               const http_client_header *headers, const struct iovec *body, int nbody, int sink_fd,
                               uint64_t sink_max, uint64_t *sunk, http_client_response *resp)
{
    if (!c || !resp) return HTTP_CLIENT_E_INVALID;
    c->err_errno = 0;
    size_t body_len = 0;
    bool bad_body = nbody < 0 || (nbody > 0 && !body);
    for (int i = 0; i < nbody && !bad_body; i++) {
        bad_body = body[i].iov_len && !body[i].iov_base;
        body_len += body[i].iov_len;
    }
    if (!method || !*method || !path || path[0] != '/' || has_crlf(method) || has_crlf(path) || strchr(method, ' ') ||
        strchr(path, ' ') || bad_body) {
        snprintf(c->err, sizeof c->err, "request to %s: bad method, path or body", c->host_header);
        return HTTP_CLIENT_E_INVALID;
    }
    for (const http_client_header *h = headers; h && h->name; h++) {
        if (!*h->name || has_crlf(h->name) || has_crlf(h->value) || strchr(h->name, ':')) {
            snprintf(c->err, sizeof c->err, "request to %s: bad header \"%s\"", c->host_header, h->name);
            return HTTP_CLIENT_E_INVALID;
        }
    }
    bool send_length =
        body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
    http_client_err e = build_head(c, method, path, headers, body_len, send_length);
    if (e) return e;
    resp->status = 0;
    resp->body_len = 0;
    bool head_request = strcmp(method, "HEAD") == 0;

    for (int attempt = 0;; attempt++) {
        bool reused = c->fd >= 0 && c->requests > 0;
        if (c->fd < 0) {
            e = conn_open(c);
            if (e) return e;
        }
        int send_errno = 0;
        http_client_err send_err = send_all(c, body, nbody, &send_errno);
        if (send_err == HTTP_CLIENT_E_TIMEOUT) return conn_fail(c, send_err, 0, "send to");
        if (send_err && send_errno != EPIPE && send_errno != ECONNRESET)
            return conn_fail(c, send_err, send_errno, "send to");
        /* Read the answer, also after the server stopped reading: it may have answered early. */
        reader r = {.c = c, .sink_fd = sink_fd, .sink_max = sink_max};
        bool keep_alive = false;
        e = read_answer(&r, head_request, resp, &keep_alive);
        if (sunk) *sunk = r.sunk;
        if (e == HTTP_CLIENT_OK) {
            c->requests++;
            if (send_err || !keep_alive || c->rpos != c->rlen) http_client_conn_close(c);
            c->err[0] = '\0';
            return HTTP_CLIENT_OK;
        }
        bool peer_gone = r.peer_gone;
        if (send_err) {
            e = conn_fail(c, send_err, send_errno, "send to");
            peer_gone = true;
        }
        if (!(reused && peer_gone && attempt == 0)) return e;
        /* The server closed our idle keep-alive connection: once more on a fresh one. */
    }
}

/*
 * http_client.h: a small blocking HTTP/1.1 client over plain TCP sockets.
 *
 * What it is for: the command-line tools that talk to a running medstream server: `medstream
 * import --url` (src/import/), `medstream export --url` (src/export/from_server.c) and the load generator (`medstream
 * bench`, tools/bench/). It lives in base/ because both binaries use it and it knows nothing of medstream (libc sockets
 * only). One http_client_conn is one TCP connection to one host:port, used by one thread at a time. (Prefixed
 * http_client_ so that it never clashes with the server's http_request and http_response in http_server.h.)
 * The URLs such a tool is given are split into host, port and base path by http_client_url.h.
 *
 * Contract:
 *   - http_client_request() sends one request and reads the whole answer into an
 *     http_client_response. The connection is kept alive between requests (HTTP/1.1
 *     keep-alive) and reopened on demand.
 *   - Request bodies are sent with Content-Length (no copy: headers and body, or the body's pieces,
 *     go out with sendmsg of iovecs). Answers may be framed by Content-Length, chunked
 *     Transfer-Encoding, or connection close; 1xx interim answers are skipped. An answer the
 *     server sends before it has read the whole body (e.g. 413) is still returned when the
 *     kernel delivers it.
 *   - If a request on a reused keep-alive connection fails before any byte of the answer came
 *     back (the server closed an idle connection), it is retried once on a fresh connection.
 *     This holds for every method: callers must only send requests that are safe to repeat
 *     (medstream's POST /v1/records is: a repeated record id with the same content is a no-op).
 *   - Errors are values: every call returns an http_client_err; http_client_conn_error() gives
 *     a message that names the host and the cause. After any error the connection is closed
 *     (its state is unknown) and the next request reconnects.
 *   - The response body is owned by the http_client_response, always NUL-terminated, and its
 *     buffer is reused across requests until http_client_response_free().
 *   - http_client_request_to_fd streams a 2xx answer's body to a file descriptor as it arrives (a
 *     read buffer's worth at a time: memory bounded whatever the body's size), within its own bound
 *     instead of max_response; an answer of any other status is read into the response as usual (its
 *     error message).
 *
 *   - HTTPS (http_client_conn_new_tls, for the server's webhooks): TLS 1.2 or later through OpenSSL,
 *     the peer's certificate checked against the system's CA certificates (or a CA file) and the
 *     host name (or IP address) of the URL; a failed check is HTTP_CLIENT_E_CONNECT naming the reason.
 *     OpenSSL writes to the socket without MSG_NOSIGNAL: a caller of TLS ignores SIGPIPE (serve does).
 *   - http_client_conn_interrupt, from another thread, ends the request in progress at once (the
 *     socket is shut down: it fails with a connection error) and every later one.
 *
 * What it must never do: exit() or abort() on a runtime error, raise SIGPIPE on a plain connection,
 * print anything, follow redirects, skip the certificate check of a TLS connection, or share one
 * http_client_conn between threads without the caller's lock (but for http_client_conn_interrupt).
 */
#ifndef MEDSTREAM_HTTP_CLIENT_H
#define MEDSTREAM_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

typedef enum {
    HTTP_CLIENT_OK = 0,
    HTTP_CLIENT_E_INVALID,   /* bad argument: URL, method, path or header with CR/LF, ... */
    HTTP_CLIENT_E_NOMEM,     /* out of memory */
    HTTP_CLIENT_E_RESOLVE,   /* host name did not resolve */
    HTTP_CLIENT_E_CONNECT,   /* TCP connect failed (refused, unreachable, timed out) */
    HTTP_CLIENT_E_SEND,      /* sending the request failed */
    HTTP_CLIENT_E_RECV,      /* receiving the answer failed */
    HTTP_CLIENT_E_TIMEOUT,   /* no progress within the connection's timeout */
    HTTP_CLIENT_E_CLOSED,    /* the server closed the connection before a complete answer */
    HTTP_CLIENT_E_PROTOCOL,  /* the answer is not valid HTTP/1.x */
    HTTP_CLIENT_E_TOO_LARGE, /* the answer's header or body is over the connection's limit */
    HTTP_CLIENT_E_WRITE,     /* writing the answer's body to the caller's descriptor failed (..._to_fd) */
} http_client_err;

/* A short fixed name for an error value ("connect failed", ...); never NULL. */
const char *http_client_err_str(http_client_err err);

/* One request header. Arrays of them end with an entry whose name is NULL. */
typedef struct {
    const char *name;
    const char *value;
} http_client_header;

/* An answer. Zero-initialize (or http_client_response_init) before first use. */
typedef struct {
    int status; /* e.g. 200 */
    char *body; /* NUL-terminated, body_len bytes before the NUL; owned */
    size_t body_len;
    size_t body_cap; /* internal: allocated size of body */
} http_client_response;

void http_client_response_init(http_client_response *resp);
void http_client_response_free(http_client_response *resp);

typedef struct http_client_conn http_client_conn;

/* Creates a connection object; it connects lazily on the first request. timeout_ms bounds each
 * connect, send and receive step (0: 60 s). max_response bounds an answer's body (0: 256 MiB).
 * Returns NULL only when out of memory or when host/port are empty or too long. */
http_client_conn *http_client_conn_new(const char *host, const char *port, int timeout_ms, size_t max_response);

/* Can ca_file's CA certificates (PEM) be loaded, as http_client_conn_new_tls loads them? false with the
 * reason in why if not (absent, unreadable, a directory, no certificate in it). */
bool http_client_ca_check(const char *ca_file, char *why, size_t cap);

/* The same over TLS (https): the server's certificate is checked against ca_file (PEM; NULL: the system's CA
 * certificates) and host. NULL also when OpenSSL cannot make a context or load ca_file. */
http_client_conn *http_client_conn_new_tls(const char *host, const char *port, int timeout_ms, size_t max_response,
                                           const char *ca_file);

/* Only connect to addresses allowed(ctx, address) says may be (checked for every address the name resolves to,
 * at every connect: a name resolved again may point elsewhere); a refused one is skipped, and when none is left
 * the connect fails with what allowed wrote in why. NULL: any (the default). Set before the first request. */
typedef bool (*http_client_address_fn)(void *ctx, const struct sockaddr *sa, char *why, size_t cap);
void http_client_conn_set_address_check(http_client_conn *conn, http_client_address_fn allowed, void *ctx);

/* From any thread: end the request in progress now and refuse every later one (the connection is done). */
void http_client_conn_interrupt(http_client_conn *conn);

/* Closes the socket (if open) and frees everything; NULL is fine. */
void http_client_conn_free(http_client_conn *conn);

/* Closes the socket, keeping the object for a later request. */
void http_client_conn_close(http_client_conn *conn);

/* The message of the last error on this connection ("" if none). Valid until the next call. */
const char *http_client_conn_error(const http_client_conn *conn);
/* The errno behind the last error of a request (0: none, or not a system error): ENOSPC for a full disk under
 * HTTP_CLIENT_E_WRITE, ECONNRESET, ... */
int http_client_conn_errno(const http_client_conn *conn);

/* Sends METHOD PATH with the given headers (NULL-terminated array, may be NULL) and body
 * (body_len bytes; Content-Length is sent when body_len > 0 or the method is POST/PUT/PATCH), and
 * reads the answer into *resp. Host and Content-Length are added by the client; do not
 * pass them. Returns HTTP_CLIENT_OK when a complete answer arrived, whatever its status code. */
http_client_err http_client_request(http_client_conn *conn, const char *method, const char *path,
                                    const http_client_header *headers, const void *body, size_t body_len,
                                    http_client_response *resp);
/* The same, but the body of a 2xx answer is written to fd as it arrives instead of kept (resp->body is then ""),
 * max_bytes of it at most (more: HTTP_CLIENT_E_TOO_LARGE), its length in *written (may be NULL; what was written
 * so far on an error); an answer of another status is read into resp as by http_client_request (within
 * max_response). A failed write to fd is HTTP_CLIENT_E_WRITE, its message naming the cause and
 * http_client_conn_errno giving it (ENOSPC: a full disk). fd may hold part of a body after an error: the caller
 * truncates or removes it. */
http_client_err http_client_request_to_fd(http_client_conn *conn, const char *method, const char *path,
                                          const http_client_header *headers, const void *body, size_t body_len, int fd,
                                          uint64_t max_bytes, uint64_t *written, http_client_response *resp);
/* The same with the body in nbody pieces, sent in order without being copied together (the load generator's
 * records: each one's head and its text, from where they are). */
http_client_err http_client_request_iov(http_client_conn *conn, const char *method, const char *path,
                                        const http_client_header *headers, const struct iovec *body, int nbody,
                                        http_client_response *resp);

#endif

/*
 * fuzz_http_answer.c - libFuzzer target for the HTTP client's reading of a server's answer (base/http_client.h):
 * medstream talks to other servers with it (import --url to a server, export from a server, webhooks, the bench),
 * and a hostile or broken server must never crash the client, make it read or write out of bounds, or hang it.
 * The real public API over a real socket: LLVMFuzzerInitialize starts a loopback TCP listener (an ephemeral port)
 * and a thread that, for each connection, reads a request up to its blank line (and a body by its Content-Length),
 * answers with the input's bytes and then, as the input's first byte says, closes, holds the connection open
 * without writing more (timeouts) or answers each further request on it the same way (keep-alive).
 *
 * Input: the first byte: its bits 0-1 the server's mode (0 or 3: answer and close; 1: answer, then hold open;
 * 2: answer every request on the connection, the client making two requests), bit 2 the client's max_response
 * (0: 1 MiB; 1: 64 KiB, the webhooks' MAX_ANSWER); the rest is the server's answer. The client's timeout is
 * 100 ms a step; it asks GET / with no body.
 *
 * Beyond "no crash, no sanitizer report, no leak", on every input:
 *   - each request returns within 3 s (the server writes its answer at once, then closes or stops);
 *   - on success: a status 100-599, the body NUL-terminated at body_len, non-NULL when body_len > 0;
 *   - an answer this target reads as plain (a status line the client's form with a status 200-599, header lines
 *     of a token, ':', printable values, at most one Content-Length of 1-19 digits, no Transfer-Encoding):
 *       - with a Content-Length and at least that many bytes after the header block: the request succeeds with
 *         that status and exactly those bytes as its body (none for 204 and 304);
 *       - without one, when the server then closes (mode 0): the request succeeds with the status and the rest
 *         of the bytes as its body (none for 204 and 304);
 *   - on failure: an error message is set.
 * Build and run: make fuzz-http FUZZ_SECONDS=20 (seeds: fuzz/corpus_http_answer/).
 */
#include "fuzz_check.h"
#include "base/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { MODE_CLOSE, MODE_HOLD, MODE_KEEP_ALIVE, MODE_CLOSE2 };
#define CLIENT_TIMEOUT_MS 100
#define CALL_BOUND_NS 3000000000LL

static int g_listen_fd = -1;
static char g_port[8];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static const uint8_t *g_answer; /* the current answer, valid while g_active */
static size_t g_answer_len;
static int g_mode;
static bool g_active;   /* an input is being tried */
static unsigned g_busy; /* connections the server thread is serving */

/* Reads one request up to its blank line and then its body (by Content-Length); false at EOF or error. */
static bool read_request(int fd)
{
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) return false;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            size_t body = 0;
            const char *cl = strstr(buf, "Content-Length:");
            if (cl && cl < end) body = strtoul(cl + 15, NULL, 10);
            size_t have = len - (size_t)(end + 4 - buf);
            while (have < body) {
                char skip[4096];
                size_t want = body - have < sizeof skip ? body - have : sizeof skip;
                n = recv(fd, skip, want, 0);
                if (n <= 0) return false;
                have += (size_t)n;
            }
            return true;
        }
        if (len == sizeof buf - 1) return false;
    }
}

static void send_answer(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void serve(int fd)
{
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0}; /* never stuck on a client that went away */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&g_lock);
    bool active = g_active;
    int mode = g_mode;
    const uint8_t *answer = g_answer; /* valid while this connection is counted busy (the test waits) */
    size_t answer_len = g_answer_len;
    pthread_mutex_unlock(&g_lock);
    if (!active) return; /* a connection left over from an input that is done */
    do {
        if (!read_request(fd)) return;
        send_answer(fd, answer, answer_len);
    } while (mode == MODE_KEEP_ALIVE);
    if (mode == MODE_HOLD) {
        char sink[512];
        while (recv(fd, sink, sizeof sink, 0) > 0) { /* until the client closes */
        }
    }
}

static void *server_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(g_listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            abort();
        }
        pthread_mutex_lock(&g_lock);
        g_busy++;
        pthread_mutex_unlock(&g_lock);
        serve(fd);
        close(fd);
        pthread_mutex_lock(&g_lock);
        g_busy--;
        pthread_cond_broadcast(&g_cond);
        pthread_mutex_unlock(&g_lock);
    }
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    g_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(g_listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(g_listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(g_listen_fd, 16) == 0);
    socklen_t alen = sizeof a;
    CHECK(getsockname(g_listen_fd, (struct sockaddr *)&a, &alen) == 0);
    snprintf(g_port, sizeof g_port, "%u", (unsigned)ntohs(a.sin_port));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, server_main, NULL) == 0);
    pthread_detach(t);
    return 0;
}

/* ---------- the model of a plain answer ---------- */

typedef struct {
    bool plain;      /* the answer is one this model reads (see the header comment) */
    int status;      /* its status */
    bool has_length; /* a Content-Length */
    size_t length;
    size_t body_at; /* the offset of the bytes after the header block */
} model;

static bool is_tchar(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/* The next line of p[*at..n): its start and length without CRLF or LF; false without a line end. */
static bool next_line(const uint8_t *p, size_t n, size_t *at, const uint8_t **line, size_t *len)
{
    const uint8_t *nl = memchr(p + *at, '\n', n - *at);
    if (!nl) return false;
    *line = p + *at;
    *len = (size_t)(nl - *line);
    *at += *len + 1;
    if (*len > 0 && (*line)[*len - 1] == '\r') (*len)--;
    return true;
}

static bool name_is(const uint8_t *line, size_t name_len, const char *name)
{
    return strlen(name) == name_len && strncasecmp((const char *)line, name, name_len) == 0;
}

static model model_read(const uint8_t *p, size_t n)
{
    model m = {0};
    size_t at = 0;
    const uint8_t *line;
    size_t len;
    if (!next_line(p, n, &at, &line, &len)) return m;
    if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
        line[9] < '2' || line[9] > '5' || line[10] < '0' || line[10] > '9' || line[11] < '0' || line[11] > '9' ||
        (len > 12 && line[12] != ' '))
        return m;
    for (size_t i = 12; i < len; i++)
        if (line[i] < 0x20 || line[i] > 0x7e) return m;
    m.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    size_t header_bytes = 0;
    for (;;) {
        if (!next_line(p, n, &at, &line, &len)) return m;
        if (len == 0) break;
        header_bytes += len;
        if (header_bytes > 16384) return m;
        size_t k = 0;
        while (k < len && is_tchar(line[k]))
            k++;
        if (k == 0 || k == len || line[k] != ':') return m;
        for (size_t i = k + 1; i < len; i++)
            if ((line[i] < 0x20 && line[i] != '\t') || line[i] > 0x7e) return m;
        if (name_is(line, k, "Transfer-Encoding")) return m;
        if (name_is(line, k, "Content-Length")) {
            if (m.has_length) return m;
            size_t i = k + 1, digits = 0, v = 0;
            while (i < len && (line[i] == ' ' || line[i] == '\t'))
                i++;
            for (; i < len && line[i] >= '0' && line[i] <= '9'; i++, digits++)
                v = v * 10 + (size_t)(line[i] - '0');
            while (i < len && (line[i] == ' ' || line[i] == '\t'))
                i++;
            if (digits == 0 || digits > 19 || i != len) return m;
            m.has_length = true;
            m.length = v;
        }
    }
    m.body_at = at;
    m.plain = true;
    return m;
}

/* ---------- the target ---------- */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void check_answer(http_client_err e, const http_client_conn *conn, const http_client_response *resp,
                         const model *m, const uint8_t *ans, size_t n, int mode, size_t max_response)
{
    if (e != HTTP_CLIENT_OK) {
        CHECK(http_client_conn_error(conn)[0] != '\0');
        return;
    }
    CHECK(resp->status >= 100 && resp->status <= 599);
    CHECK(resp->body_len <= max_response);
    CHECK(resp->body_len == 0 || resp->body != NULL);
    if (resp->body) CHECK(resp->body[resp->body_len] == '\0');
    CHECK(resp->body_len <= n);
    if (m->plain) CHECK(resp->status == m->status);
    if (!m->plain || (!m->has_length && mode != MODE_CLOSE && mode != MODE_CLOSE2)) return;
    bool no_body = m->status == 204 || m->status == 304;
    size_t want = no_body ? 0 : m->has_length ? m->length : n - m->body_at;
    CHECK(resp->body_len == want);
    CHECK(want == 0 || memcmp(resp->body, ans + m->body_at, want) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] & 3;
    size_t max_response = (data[0] & 4) ? (size_t)64 << 10 : (size_t)1 << 20;
    size_t n = size - 1;
    uint8_t *ans = fuzz_copy(data + 1, n);
    model m = model_read(ans, n);

    pthread_mutex_lock(&g_lock);
    g_answer = ans;
    g_answer_len = n;
    g_mode = mode;
    g_active = true;
    pthread_mutex_unlock(&g_lock);

    http_client_conn *conn = http_client_conn_new("127.0.0.1", g_port, CLIENT_TIMEOUT_MS, max_response);
    CHECK(conn != NULL);
    http_client_response resp;
    http_client_response_init(&resp);
    int requests = mode == MODE_KEEP_ALIVE ? 2 : 1;
    for (int i = 0; i < requests; i++) {
        long long t0 = now_ns();
        http_client_err e = http_client_request(conn, "GET", "/", NULL, NULL, 0, &resp);
        CHECK(now_ns() - t0 < CALL_BOUND_NS);
        check_answer(e, conn, &resp, &m, ans, n, mode, max_response);
        bool must_succeed = m.plain && ((m.has_length && m.length <= n - m.body_at) ||
                                        (!m.has_length && (mode == MODE_CLOSE || mode == MODE_CLOSE2)));
        if (i == 0 && must_succeed) CHECK(e == HTTP_CLIENT_OK);
    }
    http_client_response_free(&resp);
    http_client_conn_free(conn);

    /* the client's socket is closed: wait until the server is done with it, before the answer is freed */
    pthread_mutex_lock(&g_lock);
    g_active = false;
    while (g_busy > 0)
        pthread_cond_wait(&g_cond, &g_lock);
    g_answer = NULL;
    g_answer_len = 0;
    pthread_mutex_unlock(&g_lock);
    free(ans);
    return 0;
}

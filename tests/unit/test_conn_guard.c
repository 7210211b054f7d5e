/*
 * test_conn_guard.c - the connection watch (src/conn_guard.h) on socket pairs: a connection past its
 * deadline is shut down (its peer reads end-of-stream) and counted, once; one whose deadline keeps
 * moving (progress) or was cleared (being handled) is not; a body trickled below the floor rate is cut
 * once the first timeout has passed, one above it is not; the per-client cap admits the first N of
 * an address, marks the rest, counts each address on its own, and admits again once one closes.
 */
#include "unit.h"

#include "api/conn_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* true if the peer end sees end-of-stream within ms */
static bool peer_closed_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return false;
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

static struct sockaddr_in addr_v4(const char *ip)
{
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

static conn_guard *start_rate(unsigned per_client, double timeout_s, uint64_t min_body_rate)
{
    conn_guard *g = NULL;
    ms_err e;
    conn_guard_options o = {per_client, timeout_s, min_body_rate};
    assert_int_equal(conn_guard_start(&g, &o, &e), MS_OK);
    return g;
}

static conn_guard *start(unsigned per_client, double timeout_s) { return start_rate(per_client, timeout_s, 0); }

/* A body trickled below the floor rate is cut once timeout_s has passed, though each piece came within the
 * stall deadline; one at the floor rate is not. */
static void test_body_min_rate(void **state)
{
    (void)state;
    conn_guard *g = start_rate(8, 0.5, 10000); /* 10,000 bytes a second */
    struct sockaddr_in a = addr_v4("127.0.0.1");
    int slow[2], fast[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, slow), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fast), 0);
    guard_conn *cs = conn_guard_add(g, slow[0], (struct sockaddr *)&a, sizeof a);
    guard_conn *cf = conn_guard_add(g, fast[0], (struct sockaddr *)&a, sizeof a);
    guard_conn_body_start(cs);
    guard_conn_body_start(cf);
    bool slow_cut = false;
    for (int i = 1; i <= 15; i++) { /* 1.5 s: 100 bytes every 0.1 s against 2,000 (twice the floor) */
        sleep_ms(100);
        guard_conn_body_progress(cs, (uint64_t)i * 100);
        guard_conn_body_progress(cf, (uint64_t)i * 2000);
        if (i == 3) assert_false(peer_closed_within(slow[1], 0)); /* 0.3 s: within the first timeout_s */
        if (peer_closed_within(slow[1], 0)) slow_cut = true;
    }
    assert_true(slow_cut || peer_closed_within(slow[1], 500));
    assert_false(peer_closed_within(fast[1], 0));
    assert_int_equal(conn_guard_cut_count(g), 1);
    conn_guard_remove(g, cs);
    conn_guard_remove(g, cf);
    for (int i = 0; i < 2; i++) {
        close(slow[i]);
        close(fast[i]);
    }
    conn_guard_stop(g);
}

static void test_deadlines(void **state)
{
    (void)state;
    conn_guard *g = start(8, 0.5);
    struct sockaddr_in a = addr_v4("127.0.0.1");
    int late[2], moving[2], handled[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, late), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, moving), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, handled), 0);
    guard_conn *cl = conn_guard_add(g, late[0], (struct sockaddr *)&a, sizeof a);
    guard_conn *cm = conn_guard_add(g, moving[0], (struct sockaddr *)&a, sizeof a);
    guard_conn *ch = conn_guard_add(g, handled[0], (struct sockaddr *)&a, sizeof a);
    guard_conn_clear(ch);
    assert_false(peer_closed_within(late[1], 150)); /* not before the deadline */
    for (int i = 0; i < 10; i++) {                  /* 1 s of progress every 0.1 s */
        guard_conn_wait(cm);
        sleep_ms(100);
    }
    assert_true(peer_closed_within(late[1], 1000));
    assert_false(peer_closed_within(moving[1], 0));
    assert_false(peer_closed_within(handled[1], 0));
    assert_int_equal(conn_guard_cut_count(g), 1);
    assert_true(peer_closed_within(moving[1], 1000)); /* progress stopped: cut too */
    sleep_ms(600);
    assert_false(peer_closed_within(handled[1], 0));
    assert_int_equal(conn_guard_cut_count(g), 2); /* each once */
    conn_guard_remove(g, cl);
    conn_guard_remove(g, cm);
    conn_guard_remove(g, ch);
    for (int i = 0; i < 2; i++) {
        close(late[i]);
        close(moving[i]);
        close(handled[i]);
    }
    conn_guard_stop(g);
}

static void test_per_client_cap(void **state)
{
    (void)state;
    conn_guard *g = start(2, 60);
    struct sockaddr_in a = addr_v4("127.0.0.1"), b = addr_v4("127.0.0.2");
    struct sockaddr_in a_other_port = a;
    a_other_port.sin_port = htons(4242);
    guard_conn *c1 = conn_guard_add(g, 100, (struct sockaddr *)&a, sizeof a);
    guard_conn *c2 = conn_guard_add(g, 101, (struct sockaddr *)&a_other_port, sizeof a_other_port);
    guard_conn *c3 = conn_guard_add(g, 102, (struct sockaddr *)&a, sizeof a);
    guard_conn *c4 = conn_guard_add(g, 103, (struct sockaddr *)&a, sizeof a);
    guard_conn *d1 = conn_guard_add(g, 104, (struct sockaddr *)&b, sizeof b);
    assert_false(guard_conn_over_cap(c1));
    assert_false(guard_conn_over_cap(c2)); /* the port is not part of the address */
    assert_true(guard_conn_over_cap(c3));
    assert_true(guard_conn_over_cap(c4));
    assert_false(guard_conn_over_cap(d1)); /* another address has its own count */
    conn_guard_remove(g, c3);              /* one beyond the cap closes: still full */
    guard_conn *c5 = conn_guard_add(g, 105, (struct sockaddr *)&a, sizeof a);
    assert_true(guard_conn_over_cap(c5));
    conn_guard_remove(g, c1); /* an admitted one closes: room for one */
    guard_conn *c6 = conn_guard_add(g, 106, (struct sockaddr *)&a, sizeof a);
    assert_false(guard_conn_over_cap(c6));
    guard_conn *c7 = conn_guard_add(g, 107, (struct sockaddr *)&a, sizeof a);
    assert_true(guard_conn_over_cap(c7));
    conn_guard_remove(g, c2);
    conn_guard_remove(g, c4);
    conn_guard_remove(g, c5);
    conn_guard_remove(g, c6);
    conn_guard_remove(g, c7);
    conn_guard_remove(g, d1);
    assert_int_equal(conn_guard_cut_count(g), 0);
    conn_guard_stop(g);
}

static void test_bad_options(void **state)
{
    (void)state;
    conn_guard *g = NULL;
    ms_err e;
    conn_guard_options zero_cap = {0, 10, 0}, zero_time = {4, 0, 0};
    assert_int_equal(conn_guard_start(&g, &zero_cap, &e), MS_EINVAL);
    assert_int_equal(conn_guard_start(&g, &zero_time, &e), MS_EINVAL);
    assert_null(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_body_min_rate),
        cmocka_unit_test(test_per_client_cap),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

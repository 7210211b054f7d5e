/*
 * test_login_limiter.c - the login limiter: five failures in a window block a name from that client only;
 * thirty from all clients block the name for every client but one that signed in recently; a success
 * clears the client's tally and never the name's; an IPv6 client counts by its /64; attempts in flight
 * count; other names' failures never clear a name's; names longer than an account's never pin a tally.
 *
 * The limiter's table is process-wide, so each test uses its own names and instants.
 */
#include "unit.h"

#include "access/login_limiter.h"

static const int64_t S = 1000000LL;

/* One failed attempt of name from client at t (reserved, then ended); false if it was refused. */
static bool fail_once(const char *name, const char *client, int64_t t)
{
    if (login_begin(name, client, t) != LOGIN_ALLOWED) return false;
    login_end(name, client, LOGIN_FAILED, t);
    return true;
}

static bool allowed_then_ended(const char *name, const char *client, login_outcome outcome, int64_t t)
{
    if (login_begin(name, client, t) != LOGIN_ALLOWED) return false;
    login_end(name, client, outcome, t);
    return true;
}

static void test_five_failures_block_a_name_from_that_client(void **state)
{
    (void)state;
    int64_t t = 1000000000000LL;
    const char *a = "10.0.0.1";
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
        assert_true(fail_once("mallory", a, t));
    assert_int_equal(login_begin("mallory", a, t), LOGIN_LIMIT_CLIENT);
    assert_int_equal(login_begin("mallory", a, t + (LOGIN_WINDOW_S - 1) * S), LOGIN_LIMIT_CLIENT);
    assert_true(allowed_then_ended("trent", a, LOGIN_NOT_TRIED, t));         /* other names are not affected */
    assert_true(allowed_then_ended("mallory", "10.0.0.2", LOGIN_OK, t + S)); /* nor other clients */
    /* other names' failures, hundreds of them, never clear mallory's (a direct-mapped table let one name of
     * the same slot do it) */
    char name[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "u%d", i);
        assert_true(fail_once(name, a, t + S));
    }
    assert_int_equal(login_begin("mallory", a, t + 2 * S), LOGIN_LIMIT_CLIENT);
    assert_true(fail_once("mallory", a, t + (LOGIN_WINDOW_S + 1) * S));                    /* the window ends */
    assert_true(allowed_then_ended("mallory", a, LOGIN_OK, t + (LOGIN_WINDOW_S + 3) * S)); /* success clears */
    for (int i = 0; i < LOGIN_MAX_FAILURES - 1; i++)
        assert_true(fail_once("mallory", a, t + (LOGIN_WINDOW_S + 4) * S));
    assert_true(allowed_then_ended("mallory", a, LOGIN_NOT_TRIED, t + (LOGIN_WINDOW_S + 4) * S)); /* neither way */
    assert_true(allowed_then_ended("mallory", a, LOGIN_FAILED, t + (LOGIN_WINDOW_S + 4) * S));
    assert_int_equal(login_begin("mallory", a, t + (LOGIN_WINDOW_S + 4) * S), LOGIN_LIMIT_CLIENT);
}

/* Before 2026-12-03 the tally was per name only: anyone could keep any account locked out with five wrong
 * passwords a minute. Now it takes failures from six clients in a window, and even then a client that
 * signed in as the name in the last day gets in. */
static void test_the_name_in_all_needs_thirty_failures_and_spares_a_recent_sign_in(void **state)
{
    (void)state;
    int64_t t = 1100000000000LL;
    const char *owner = "192.168.1.10";
    assert_true(allowed_then_ended("carol", owner, LOGIN_OK, t));
    char client[32];
    int clients = LOGIN_NAME_MAX_FAILURES / LOGIN_MAX_FAILURES;
    for (int c = 0; c < clients; c++) {
        snprintf(client, sizeof client, "203.0.113.%d", c + 1);
        for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
            assert_true(fail_once("carol", client, t + S));
        if (c < clients - 1) assert_true(allowed_then_ended("carol", "198.51.100.9", LOGIN_NOT_TRIED, t + S));
    }
    /* thirty failures: every other client is refused the name ... */
    assert_int_equal(login_begin("carol", "198.51.100.9", t + 2 * S), LOGIN_LIMIT_NAME);
    assert_int_equal(login_begin("carol", "203.0.113.1", t + 2 * S), LOGIN_LIMIT_CLIENT);
    /* ... but the owner's client, which signed in a second before, gets in, and its success does not renew
     * the guessers' budget */
    assert_true(allowed_then_ended("carol", owner, LOGIN_OK, t + 2 * S));
    assert_int_equal(login_begin("carol", "198.51.100.9", t + 2 * S), LOGIN_LIMIT_NAME);
    /* a trusted client's failures still count against its own tally */
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
        assert_true(fail_once("carol", owner, t + 3 * S));
    assert_int_equal(login_begin("carol", owner, t + 3 * S), LOGIN_LIMIT_CLIENT);
    /* the window ends for all */
    assert_true(allowed_then_ended("carol", "198.51.100.9", LOGIN_NOT_TRIED, t + (LOGIN_WINDOW_S + 2) * S));
    /* the owner's trust lasts LOGIN_TRUST_S after its sign-in */
    int64_t later = t + 2 * S + (int64_t)LOGIN_TRUST_S * S + S;
    for (int c = 0; c < clients; c++) {
        snprintf(client, sizeof client, "203.0.113.%d", c + 101);
        for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
            assert_true(fail_once("carol", client, later));
    }
    assert_int_equal(login_begin("carol", owner, later), LOGIN_LIMIT_NAME);
}

static void test_ipv6_clients_count_by_their_64(void **state)
{
    (void)state;
    int64_t t = 1200000000000LL;
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++) { /* five addresses of one /64 */
        char client[64];
        snprintf(client, sizeof client, "2001:db8:0:1::%x", i + 1);
        assert_true(fail_once("dave", client, t));
    }
    assert_int_equal(login_begin("dave", "2001:db8:0:1:ffff:ffff:ffff:ffff", t), LOGIN_LIMIT_CLIENT);
    assert_true(allowed_then_ended("dave", "2001:db8:0:2::1", LOGIN_NOT_TRIED, t)); /* another /64 */
    /* an IPv4 address mapped into IPv6 is that IPv4 address */
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
        assert_true(fail_once("erin", "10.9.8.7", t));
    assert_int_equal(login_begin("erin", "::ffff:10.9.8.7", t), LOGIN_LIMIT_CLIENT);
    assert_true(allowed_then_ended("erin", "::ffff:10.9.8.6", LOGIN_NOT_TRIED, t));
}

/* attempts in flight count: checks sent at once get the limit's number, not one each */
static void test_attempts_in_flight_count(void **state)
{
    (void)state;
    int64_t t = 1300000000000LL;
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
        assert_int_equal(login_begin("eve", "10.1.1.1", t), LOGIN_ALLOWED);
    assert_int_equal(login_begin("eve", "10.1.1.1", t), LOGIN_LIMIT_CLIENT);
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++)
        login_end("eve", "10.1.1.1", LOGIN_FAILED, t);
    assert_int_equal(login_begin("eve", "10.1.1.1", t + S), LOGIN_LIMIT_CLIENT);
    /* the same across clients for the name in all */
    char client[32];
    for (int c = 0; c < LOGIN_NAME_MAX_FAILURES; c++) {
        snprintf(client, sizeof client, "10.2.%d.%d", c / 250, c % 250 + 1);
        assert_int_equal(login_begin("frank", client, t), LOGIN_ALLOWED);
    }
    assert_int_equal(login_begin("frank", "10.3.0.1", t), LOGIN_LIMIT_NAME);
    for (int c = 0; c < LOGIN_NAME_MAX_FAILURES; c++) {
        snprintf(client, sizeof client, "10.2.%d.%d", c / 250, c % 250 + 1);
        login_end("frank", client, LOGIN_NOT_TRIED, t);
    }
    assert_true(allowed_then_ended("frank", "10.3.0.1", LOGIN_NOT_TRIED, t));
}

/* Names longer than an account name can be (a login's "user" may be 2,047 bytes) each pinned a slot for
 * good: the slot kept the name cut to fit, so the attempt's end never found it and its attempt stayed in
 * flight; a few thousand of them filled every way of every bucket, and from then on every login, the
 * admin's too, was refused with 429 until a restart. */
static void test_long_names_never_pin_a_tally(void **state)
{
    (void)state;
    int64_t t = 2000000000000LL;
    char name[300];
    for (int i = 0; i < 20000; i++) {
        snprintf(name, sizeof name, "%0250d", i);
        if (login_begin(name, "10.0.0.1", t) == LOGIN_ALLOWED) login_end(name, "10.0.0.1", LOGIN_FAILED, t);
    }
    assert_true(allowed_then_ended("root", "10.0.0.1", LOGIN_OK, t));
    for (int b = 0; b < 64; b++) { /* every bucket still takes a new name */
        snprintf(name, sizeof name, "other%d", b);
        assert_true(allowed_then_ended(name, "10.0.0.1", LOGIN_NOT_TRIED, t));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_five_failures_block_a_name_from_that_client),
        cmocka_unit_test(test_the_name_in_all_needs_thirty_failures_and_spares_a_recent_sign_in),
        cmocka_unit_test(test_ipv6_clients_count_by_their_64),
        cmocka_unit_test(test_attempts_in_flight_count),
        cmocka_unit_test(test_long_names_never_pin_a_tally),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_rule_check.c - the bounded check of a rule's regexes (notify/rule_check.h), the parts that need no
 * medstream binary: the helper's answers over a socketpair (run in this process, without its limits), and the
 * server's side when there is nothing to check (no helper started) or the helper is not one (MS_EIO, never a
 * rule refused for it). The bound itself (a regex over 2 s of CPU refused in seconds, the helper killed) is
 * tests/e2e/test_notify.py test_a_costly_regex_is_refused_in_seconds_and_reads_never_wait.
 */
#include "unit.h"

#include "notify/rule_check.h"

#include <string.h>
#include <sys/socket.h>

static rule_def parse_ok(const char *json)
{
    rule_def r;
    ms_err e = {0};
    if (rule_parse(json, strlen(json), &r, &e) != MS_OK) fail_msg("rule refused: %s (%s)", e.msg, json);
    return r;
}

static void frame(int fd, const char *regex)
{
    size_t len = strlen(regex);
    unsigned char len4[4] = {(unsigned char)len, (unsigned char)(len >> 8), 0, 0};
    assert_int_equal(write(fd, len4, 4), 4);
    assert_int_equal(write(fd, regex, len), (ssize_t)len);
}

static void test_helper_answers_each_regex(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    frame(sv[0], "\\bsep(sis|tic)\\b");
    frame(sv[0], "a(");
    frame(sv[0], "x*");
    shutdown(sv[0], SHUT_WR); /* EOF after the third: the helper's end */
    ms_err e = {0};
    assert_int_equal(rule_check_serve(sv[1], sv[1], false, &e), MS_OK);
    shutdown(sv[1], SHUT_WR); /* the answers end here */
    char got[2048] = "";
    size_t n = 0;
    ssize_t r;
    while ((r = read(sv[0], got + n, sizeof got - 1 - n)) > 0)
        n += (size_t)r;
    got[n] = 0;
    if (strncmp(got, "ok ", 3) != 0) fail_msg("first answer: %s", got);
    char *second = strchr(got, '\n') + 1;
    if (strncmp(second, "no Missing close parenthesis", 28) != 0) fail_msg("second answer: %s", second);
    char *third = strchr(second, '\n') + 1;
    if (strncmp(third, "no ", 3) != 0 || strchr(third, '\n') != got + n - 1) fail_msg("third answer: %s", third);
    close(sv[0]);
    close(sv[1]);
    /* a broken frame (a length over RULE_REGEX_MAX) is an error, not an answer */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    unsigned char len4[4] = {0xff, 0xff, 0, 0};
    assert_int_equal(write(sv[0], len4, 4), 4);
    shutdown(sv[0], SHUT_WR);
    assert_int_equal(rule_check_serve(sv[1], sv[1], false, &e), MS_EIO);
    close(sv[0]);
    close(sv[1]);
}

static void test_no_regex_no_helper_and_a_broken_helper_is_eio(void **state)
{
    (void)state;
    rule_def phrases = parse_ok("{\"name\":\"p\",\"fields\":[\"n\"],\"any\":[\"x\"]}");
    rule_def regex = parse_ok("{\"name\":\"r\",\"fields\":[\"n\"],\"regex\":\"ab+c\"}");
    const rule_def *one[] = {&phrases}, *two[] = {&phrases, &regex};
    rule_check_result res[2];
    ms_err e = {0};
    /* phrases only: nothing to run, so even a program that does not exist is never started */
    assert_int_equal(rule_check("/nonexistent/medstream", one, 1, res, &e), MS_OK);
    assert_true(res[0].ok);
    assert_true(res[0].cpu_s == 0);
    /* a regex, and a helper that cannot start, or ends without answering: MS_EIO, no rule refused for it */
    assert_int_equal(rule_check("/nonexistent/medstream", two, 2, res, &e), MS_EIO);
    assert_non_null(strstr(e.msg, "cannot start the regex check"));
    assert_int_equal(rule_check("/bin/true", two, 2, res, &e), MS_EIO);
    assert_non_null(strstr(e.msg, "the regex check (/bin/true rules-check) failed: exit status 0"));
    rule_def_free(&phrases);
    rule_def_free(&regex);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_helper_answers_each_regex),
        cmocka_unit_test(test_no_regex_no_helper_and_a_broken_helper_is_eio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

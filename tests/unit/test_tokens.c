/*
 * test_tokens.c - bearer tokens (issued, checked, expired, revoked, malformed; stored only hashed) and
 * the login limiter (five failures in the window block the name, success clears it, names are apart).
 */
#include "unit.h"

#include "tokens.h"

#include <openssl/sha.h>
#include <string.h>

typedef struct {
    char dir[128];
    store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    unit_tmpdir(f->dir);
    ms_err e;
    if (store_open(&f->s, f->dir, NULL, &e) != MS_OK) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    unit_rmtree(f->dir);
    free(f);
    return 0;
}

static void test_issue_check_revoke(void **state)
{
    fixture *f = *state;
    principal who = {"alice", "clinician"}, got;
    char tok[TOKEN_TEXT], header[128];
    int64_t expires;
    ms_err e;
    assert_int_equal(token_issue(f->s, &who, 3600, tok, &expires, &e), MS_OK);
    assert_int_equal(strlen(tok), TOKEN_TEXT - 1);
    assert_true(expires > ms_now_us() + 3500LL * 1000000);
    snprintf(header, sizeof header, "Bearer %s", tok);
    assert_int_equal(token_check(f->s, header, &got), TOKEN_OK);
    assert_string_equal(got.user, "alice");
    assert_string_equal(got.role, "clinician");
    /* stored only hashed: the store has the SHA-256, and not under the token itself */
    unsigned char h[32];
    SHA256((const unsigned char *)tok, strlen(tok), h);
    store_read *r;
    assert_int_equal(store_read_begin(f->s, &r, &e), MS_OK);
    int64_t x;
    char u[STORE_USER_MAX], ro[STORE_ROLE_MAX];
    bool found;
    assert_int_equal(store_token_get(r, h, &x, u, ro, &found, &e), MS_OK);
    assert_true(found);
    unsigned char raw[32];
    memcpy(raw, tok + 3, 32);
    assert_int_equal(store_token_get(r, raw, &x, u, ro, &found, &e), MS_OK);
    assert_false(found);
    store_read_end(r);
    /* another token of the same user is independent */
    char tok2[TOKEN_TEXT], header2[128];
    assert_int_equal(token_issue(f->s, &who, 3600, tok2, &expires, &e), MS_OK);
    assert_string_not_equal(tok, tok2);
    snprintf(header2, sizeof header2, "bearer  %s", tok2); /* scheme is case-insensitive */
    assert_int_equal(token_revoke(f->s, header, &e), MS_OK);
    assert_int_equal(token_check(f->s, header, &got), TOKEN_UNKNOWN);
    assert_int_equal(token_check(f->s, header2, &got), TOKEN_OK);
    assert_int_not_equal(token_revoke(f->s, header, &e), MS_OK); /* twice: nothing to revoke */
}

static void test_expired_and_malformed(void **state)
{
    fixture *f = *state;
    principal who = {"bob", "analyst"}, got;
    char tok[TOKEN_TEXT], header[128];
    int64_t expires;
    ms_err e;
    assert_int_equal(token_issue(f->s, &who, 0, tok, &expires, &e), MS_OK); /* expires at once */
    snprintf(header, sizeof header, "Bearer %s", tok);
    assert_int_equal(token_check(f->s, header, &got), TOKEN_EXPIRED);
    assert_int_equal(token_check(f->s, NULL, &got), TOKEN_MISSING);
    assert_int_equal(token_check(f->s, "", &got), TOKEN_MISSING);
    const char *bad[] = {"Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer", "Bearer ms_short",
                         "Bearer xx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "Bearer ms_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(token_check(f->s, bad[i], &got), TOKEN_MALFORMED);
    assert_int_equal(token_check(f->s, "Bearer ms_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &got), TOKEN_UNKNOWN);
}

static void test_login_limiter(void **state)
{
    (void)state;
    int64_t t = 1000000000000LL;
    for (int i = 0; i < LOGIN_MAX_FAILURES; i++) {
        assert_true(login_allowed("mallory", t));
        login_record("mallory", false, t);
    }
    assert_false(login_allowed("mallory", t));
    assert_false(login_allowed("mallory", t + (LOGIN_WINDOW_S - 1) * 1000000LL));
    assert_true(login_allowed("trent", t));                                      /* other names are not affected */
    assert_true(login_allowed("mallory", t + (LOGIN_WINDOW_S + 1) * 1000000LL)); /* the window ends */
    login_record("mallory", false, t + (LOGIN_WINDOW_S + 2) * 1000000LL);
    login_record("mallory", true, t + (LOGIN_WINDOW_S + 3) * 1000000LL); /* success clears */
    for (int i = 0; i < LOGIN_MAX_FAILURES - 1; i++)
        login_record("mallory", false, t + (LOGIN_WINDOW_S + 4) * 1000000LL);
    assert_true(login_allowed("mallory", t + (LOGIN_WINDOW_S + 4) * 1000000LL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_issue_check_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_and_malformed, setup, teardown),
        cmocka_unit_test(test_login_limiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_tokens.c - bearer tokens (issued, checked, expired, revoked, malformed; stored only hashed), the
 * account behind each token (its current role is the one granted; a missing or disabled account's
 * tokens are refused even where their revocation was missed; disabling, deleting and password changes
 * revoke them). The login limiter's tests are in test_login_limiter.c.
 */
#include "unit.h"
#include "unit_store.h"

#include "access/passwords.h"
#include "access/tokens.h"
#include "access/users.h"

#include <openssl/sha.h>
#include <string.h>

typedef unit_store fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    ms_err e;
    if (!unit_store_open(f, NULL)) return -1;
    /* tokens are issued only to accounts that exist (the password does not matter here) */
    const char *accounts[][2] = {{"root", "admin"}, {"alice", "clinician"}, {"bob", "analyst"}};
    for (size_t i = 0; i < sizeof accounts / sizeof accounts[0]; i++) {
        user_change c = {.kind = USER_CREATE,
                         .name = accounts[i][0],
                         .role = accounts[i][1],
                         .hash = "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA",
                         .actor = "local:tester",
                         .client = "cli",
                         .resource = "/v1/users"};
        if (users_apply_local(f->s, &c, &e) != MS_OK || c.refusal.code != MS_OK) return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    unit_store_close(f);
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

/* Write an account entry directly, without the revocations users_apply would do. */
static void put_account(store *s, const store_account *a, bool del)
{
    store_write *w;
    ms_err e;
    assert_int_equal(store_write_begin(s, &w, &e), MS_OK);
    assert_int_equal(del ? store_account_delete(w, a->name, &e) : store_account_put(w, a, &e), MS_OK);
    assert_int_equal(store_write_commit(w, NULL, &e), MS_OK);
}

static store_account get_account(store *s, const char *name)
{
    store_account a;
    bool found = false;
    store_read *r;
    ms_err e;
    assert_int_equal(store_read_begin(s, &r, &e), MS_OK);
    assert_int_equal(store_account_get(r, name, &a, &found, &e), MS_OK);
    store_read_end(r);
    assert_true(found);
    return a;
}

static void issue(store *s, const char *user, const char *role, char header[128])
{
    principal who;
    snprintf(who.user, sizeof who.user, "%s", user);
    snprintf(who.role, sizeof who.role, "%s", role);
    char tok[TOKEN_TEXT];
    int64_t expires;
    ms_err e;
    assert_int_equal(token_issue(s, &who, 3600, tok, &expires, &e), MS_OK);
    snprintf(header, 128, "Bearer %s", tok);
}

/* The account behind a token decides: its current role, and whether it still exists and is enabled
 * (even for a token whose revocation was missed: defence in depth). */
static void test_token_follows_its_account(void **state)
{
    fixture *f = *state;
    char h[128];
    principal got;
    issue(f->s, "alice", "clinician", h);
    assert_int_equal(token_check(f->s, h, &got), TOKEN_OK);
    assert_string_equal(got.role, "clinician");
    store_account a = get_account(f->s, "alice");
    snprintf(a.role, sizeof a.role, "auditor");
    put_account(f->s, &a, false);
    assert_int_equal(token_check(f->s, h, &got), TOKEN_OK);
    assert_string_equal(got.role, "auditor"); /* the account's role now, not the one at login */
    a.disabled = true;
    put_account(f->s, &a, false); /* no revocation: the check itself refuses */
    assert_int_equal(token_check(f->s, h, &got), TOKEN_NO_ACCOUNT);
    assert_string_equal(got.user, "alice"); /* named, for the audit entry of the refusal */
    ms_err e;
    principal who = {"alice", "auditor"};
    char tok[TOKEN_TEXT];
    int64_t expires;
    assert_int_equal(token_issue(f->s, &who, 3600, tok, &expires, &e), MS_ENOTFOUND); /* no new tokens either */
    a.disabled = false;
    put_account(f->s, &a, false);
    assert_int_equal(token_check(f->s, h, &got), TOKEN_OK);
    put_account(f->s, &a, true); /* deleted */
    assert_int_equal(token_check(f->s, h, &got), TOKEN_NO_ACCOUNT);
    principal ghost = {"ghost", "admin"};
    assert_int_equal(token_issue(f->s, &ghost, 3600, tok, &expires, &e), MS_ENOTFOUND);
}

static void change(store *s, user_change *c)
{
    c->actor = "local:tester", c->client = "cli", c->resource = "/v1/users/x";
    ms_err e;
    assert_int_equal(users_apply_local(s, c, &e), MS_OK);
    assert_int_equal(c->refusal.code, MS_OK);
}

/* Disabling, deleting, revoking and password changes revoke through users_apply, in the same commit. */
static void test_changes_revoke_tokens(void **state)
{
    fixture *f = *state;
    char a1[128], a2[128], b1[128];
    principal got;
    issue(f->s, "alice", "clinician", a1);
    issue(f->s, "alice", "clinician", a2);
    issue(f->s, "bob", "analyst", b1);
    /* a password change revokes the user's other tokens, not the one presented */
    unsigned char keep[32];
    assert_true(token_hash(a2, keep));
    unsigned char junk[32];
    assert_false(token_hash("Bearer nonsense", junk));
    user_change pw = {.kind = USER_PASSWORD, .name = "alice", .hash = "$argon2id$other", .keep_token = keep};
    change(f->s, &pw);
    assert_int_equal(pw.revoked, 1);
    assert_int_equal(token_check(f->s, a1, &got), TOKEN_UNKNOWN);
    assert_int_equal(token_check(f->s, a2, &got), TOKEN_OK);
    assert_int_equal(token_check(f->s, b1, &got), TOKEN_OK);
    /* disabling: every token at once */
    user_change off = {.kind = USER_UPDATE, .name = "alice", .disabled = 1};
    change(f->s, &off);
    assert_int_equal(off.revoked, 1);
    assert_int_equal(token_check(f->s, a2, &got), TOKEN_UNKNOWN);
    user_change on = {.kind = USER_UPDATE, .name = "alice", .disabled = 0};
    change(f->s, &on);
    assert_int_equal(token_check(f->s, a2, &got), TOKEN_UNKNOWN); /* enabling brings no token back */
    /* revoking another user's tokens, then deleting */
    issue(f->s, "bob", "analyst", a1);
    user_change rv = {.kind = USER_REVOKE_TOKENS, .name = "bob"};
    change(f->s, &rv);
    assert_int_equal(rv.revoked, 2);
    assert_int_equal(token_check(f->s, b1, &got), TOKEN_UNKNOWN);
    issue(f->s, "bob", "analyst", b1);
    user_change del = {.kind = USER_DELETE, .name = "bob"};
    change(f->s, &del);
    assert_int_equal(del.revoked, 1);
    assert_int_equal(token_check(f->s, b1, &got), TOKEN_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_issue_check_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_and_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_follows_its_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_revoke_tokens, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

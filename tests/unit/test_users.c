/*
 * test_users.c - passwords (Argon2id, per-password salt, the stored form is not the password and
 * differs between users with equal passwords), accounts in the store, init's admin account, and account
 * changes through users_apply: disabled accounts cannot log in, roles and passwords change, refusals
 * write nothing, the last account that can manage accounts cannot be disabled, demoted or deleted,
 * entries written by older versions keep working, every change leaves one audit entry without any
 * password or hash, and through the writer a failed commit stores nothing of a change.
 */
#include "unit.h"
#include "unit_store.h"

#include "access/passwords.h"
#include "access/tokens.h"
#include "access/users.h"
#include "ingest/writer.h"

#include <argon2.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static void test_hash_and_verify(void **state)
{
    (void)state;
    char a[PASSWORD_ENCODED_MAX], b[PASSWORD_ENCODED_MAX];
    ms_err e;
    assert_int_equal(password_hash("correct horse", 13, a, &e), MS_OK);
    assert_int_equal(password_hash("correct horse", 13, b, &e), MS_OK);
    assert_true(strncmp(a, "$argon2id$", 10) == 0);
    assert_null(strstr(a, "correct horse"));
    assert_string_not_equal(a, b); /* salted: equal passwords, different stored forms */
    assert_true(password_verify(a, "correct horse", 13));
    assert_true(password_verify(b, "correct horse", 13));
    assert_false(password_verify(a, "correct horsf", 13));
    assert_false(password_verify(a, "correct hors", 12));
    assert_false(password_verify("$argon2i$garbage", "correct horse", 13));
    assert_false(password_verify(NULL, "correct horse", 13));
    assert_int_equal(password_hash("short", 5, a, &e), MS_EINVAL);
    assert_null(strstr(e.msg, "short"));
}

static void test_generate(void **state)
{
    (void)state;
    char p1[25], p2[25];
    ms_err e;
    assert_int_equal(password_generate(p1, 24, &e), MS_OK);
    assert_int_equal(password_generate(p2, 24, &e), MS_OK);
    assert_int_equal(strlen(p1), 24);
    assert_string_not_equal(p1, p2);
    for (int i = 0; i < 24; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", p1[i]));
}

#define ACTOR "local:tester"

/* Run one change in its own write transaction; returns the refusal code (MS_OK: done). */
static ms_code apply(store *s, user_change *c)
{
    if (!c->actor) c->actor = ACTOR, c->actor_role = "", c->client = "cli", c->resource = "/v1/users/x";
    ms_err e = {0};
    if (users_apply_local(s, c, &e) != MS_OK) fail_msg("users_apply_local: %s", e.msg);
    return c->refusal.code;
}

static ms_code create(store *s, const char *name, const char *role, const char *password)
{
    char hash[PASSWORD_ENCODED_MAX];
    ms_err e;
    if (password_hash(password, strlen(password), hash, &e) != MS_OK) return e.code;
    user_change c = {.kind = USER_CREATE, .name = name, .role = role, .hash = hash};
    return apply(s, &c);
}

static ms_code update(store *s, const char *name, const char *role, int disabled)
{
    user_change c = {.kind = USER_UPDATE, .name = name, .role = role, .disabled = disabled};
    return apply(s, &c);
}

static void test_users_in_store(void **state)
{
    (void)state;
    char dir[128];
    unit_tmpdir(dir);
    store *s;
    ms_err e = {0};
    assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
    assert_int_equal(create(s, "alice", "clinician", "password-1"), MS_OK);
    assert_int_equal(create(s, "bob", "analyst", "password-1"), MS_OK);
    assert_int_equal(create(s, "alice", "analyst", "password-2"), MS_ECONFLICT);
    assert_int_equal(create(s, "carol", "superuser", "password-3"), MS_EINVAL);
    assert_int_equal(create(s, "bad name", "analyst", "password-3"), MS_EINVAL);
    assert_int_equal(create(s, "dave", "analyst", "short"), MS_EINVAL);
    char role[STORE_ROLE_MAX];
    assert_true(users_check(s, "alice", "password-1", 10, role));
    assert_string_equal(role, "clinician");
    assert_false(users_check(s, "alice", "password-2", 10, role));
    assert_false(users_check(s, "nobody", "password-1", 10, role));
    /* the stored forms of equal passwords differ, and neither is the password */
    store_read *r;
    char ha[STORE_HASH_MAX], hb[STORE_HASH_MAX], rr[STORE_ROLE_MAX];
    bool found;
    assert_int_equal(store_read_begin(s, &r, &e), MS_OK);
    assert_int_equal(store_user_get(r, "alice", rr, ha, &found, &e), MS_OK);
    assert_true(found);
    assert_int_equal(store_user_get(r, "bob", rr, hb, &found, &e), MS_OK);
    assert_true(found);
    store_read_end(r);
    assert_string_not_equal(ha, hb);
    assert_null(strstr(ha, "password-1"));
    store_close(s);
    unit_rmtree(dir);
}

static void test_admin_account(void **state)
{
    (void)state;
    char dir[128], path[256];
    unit_tmpdir(dir);
    snprintf(path, sizeof path, "%s/admin.password", dir);
    store *s;
    ms_err e = {0};
    assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
    assert_int_equal(users_create_admin(s, path, ACTOR, &e), MS_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char pw[64] = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(fgets(pw, sizeof pw, f));
    fclose(f);
    size_t n = strcspn(pw, "\n");
    assert_int_equal(n, 24);
    char role[STORE_ROLE_MAX];
    assert_true(users_check(s, "admin", pw, n, role));
    assert_string_equal(role, "admin");
    /* a second init does not overwrite the file or the account */
    assert_int_equal(users_create_admin(s, path, ACTOR, &e), MS_ECONFLICT);
    assert_true(users_check(s, "admin", pw, n, role));
    /* the file goes once asked (the admin's password changed); a second removal is fine */
    assert_int_equal(users_admin_password_remove(dir, &e), MS_OK);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(users_admin_password_remove(dir, &e), MS_OK);
    store_close(s);
    unit_rmtree(dir);
}

typedef unit_store fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!unit_store_open(f, NULL)) return -1;
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

static store_account account(store *s, const char *name, bool *found)
{
    store_account a = {0};
    store_read *r;
    ms_err e;
    *found = false;
    assert_int_equal(store_read_begin(s, &r, &e), MS_OK);
    assert_int_equal(store_account_get(r, name, &a, found, &e), MS_OK);
    store_read_end(r);
    return a;
}

static void test_disable_enable_role(void **state)
{
    fixture *f = *state;
    char role[STORE_ROLE_MAX];
    bool found;
    assert_int_equal(create(f->s, "root", "admin", "root-password"), MS_OK);
    assert_int_equal(create(f->s, "nina", "clinician", "nina-password"), MS_OK);
    store_account before = account(f->s, "nina", &found);
    assert_true(found && !before.disabled && before.created > 0 && before.changed == before.created);
    assert_int_equal(update(f->s, "nina", NULL, 1), MS_OK);
    store_account after = account(f->s, "nina", &found);
    assert_true(after.disabled);
    assert_string_equal(after.role, "clinician");
    assert_int_equal(after.created, before.created);
    assert_true(after.changed > before.changed);
    /* a disabled account cannot log in, even with the right password */
    assert_false(users_check(f->s, "nina", "nina-password", 13, role));
    assert_int_equal(update(f->s, "nina", "auditor", 0), MS_OK);
    assert_true(users_check(f->s, "nina", "nina-password", 13, role));
    assert_string_equal(role, "auditor");
    /* refusals change nothing */
    assert_int_equal(update(f->s, "nina", "superuser", -1), MS_EINVAL);
    assert_int_equal(update(f->s, "nobody", "analyst", -1), MS_ENOTFOUND);
    after = account(f->s, "nina", &found);
    assert_string_equal(after.role, "auditor");
    user_change del = {.kind = USER_DELETE, .name = "nobody"};
    assert_int_equal(apply(f->s, &del), MS_ENOTFOUND);
    user_change d2 = {.kind = USER_DELETE, .name = "nina"};
    assert_int_equal(apply(f->s, &d2), MS_OK);
    account(f->s, "nina", &found);
    assert_false(found);
    assert_false(users_check(f->s, "nina", "nina-password", 13, role));
}

static void test_password_change(void **state)
{
    fixture *f = *state;
    char role[STORE_ROLE_MAX], hash[PASSWORD_ENCODED_MAX];
    ms_err e;
    assert_int_equal(create(f->s, "root", "admin", "root-password"), MS_OK);
    store_account checked;
    assert_true(users_check_account(f->s, "root", "root-password", 13, &checked));
    assert_false(users_check_account(f->s, "root", "wrong-password", 14, &checked));
    assert_int_equal(password_hash("second-password", 15, hash, &e), MS_OK);
    user_change c = {.kind = USER_PASSWORD, .name = "root", .hash = hash, .expect_hash = checked.hash};
    assert_int_equal(apply(f->s, &c), MS_OK);
    assert_false(users_check(f->s, "root", "root-password", 13, role));
    assert_true(users_check(f->s, "root", "second-password", 15, role));
    /* checked against a hash that has changed since: refused, the password stays */
    char third[PASSWORD_ENCODED_MAX];
    assert_int_equal(password_hash("third-password", 14, third, &e), MS_OK);
    user_change stale = {.kind = USER_PASSWORD, .name = "root", .hash = third, .expect_hash = checked.hash};
    assert_int_equal(apply(f->s, &stale), MS_ECONFLICT);
    assert_true(users_check(f->s, "root", "second-password", 15, role));
    user_change none = {.kind = USER_PASSWORD, .name = "ghost", .hash = third};
    assert_int_equal(apply(f->s, &none), MS_ENOTFOUND);
}

/* Some enabled account must keep users:update: the last one cannot be disabled, demoted or deleted. */
static void test_last_manager(void **state)
{
    fixture *f = *state;
    bool found;
    assert_int_equal(create(f->s, "root", "admin", "root-password"), MS_OK);
    assert_int_equal(create(f->s, "ana", "analyst", "ana-password"), MS_OK);
    assert_int_equal(update(f->s, "root", NULL, 1), MS_ECONFLICT);
    assert_int_equal(update(f->s, "root", "analyst", -1), MS_ECONFLICT);
    user_change del = {.kind = USER_DELETE, .name = "root"};
    assert_int_equal(apply(f->s, &del), MS_ECONFLICT);
    assert_non_null(strstr(del.refusal.msg, "last enabled account"));
    store_account r = account(f->s, "root", &found);
    assert_true(found && !r.disabled);
    assert_string_equal(r.role, "admin");
    /* other accounts change freely; a second admin that is disabled does not count */
    assert_int_equal(update(f->s, "ana", NULL, 1), MS_OK);
    assert_int_equal(create(f->s, "root2", "admin", "root2-password"), MS_OK);
    assert_int_equal(update(f->s, "root2", NULL, 1), MS_OK);
    assert_int_equal(update(f->s, "root", NULL, 1), MS_ECONFLICT);
    /* once it is enabled, either admin may go, but not both */
    assert_int_equal(update(f->s, "root2", NULL, 0), MS_OK);
    assert_int_equal(update(f->s, "root", "clinician", -1), MS_OK);
    user_change del2 = {.kind = USER_DELETE, .name = "root2"};
    assert_int_equal(apply(f->s, &del2), MS_ECONFLICT);
    assert_int_equal(update(f->s, "root", "admin", -1), MS_OK);
    assert_int_equal(apply(f->s, &del2), MS_OK);
}

/* An account written by a version before issue 9 ("role NUL hash") logs in, and a change to it keeps
 * its password and gains the new entry's fields. */
static void test_old_format_account(void **state)
{
    fixture *f = *state;
    char hash[PASSWORD_ENCODED_MAX], role[STORE_ROLE_MAX];
    ms_err e;
    bool found;
    assert_int_equal(password_hash("legacy-password", 15, hash, &e), MS_OK);
    store_close(f->s);
    unit_write_old_user_entry(f->dir, "old-admin", "admin", hash);
    assert_int_equal(store_open(&f->s, f->dir, NULL, &e), MS_OK);
    assert_true(users_check(f->s, "old-admin", "legacy-password", 15, role));
    assert_string_equal(role, "admin");
    /* it is the only manager: the rule holds for old entries too */
    assert_int_equal(update(f->s, "old-admin", NULL, 1), MS_ECONFLICT);
    assert_int_equal(create(f->s, "new-admin", "admin", "new-password"), MS_OK);
    assert_int_equal(update(f->s, "old-admin", "auditor", -1), MS_OK);
    store_account a = account(f->s, "old-admin", &found);
    assert_true(found && a.created == 0 && a.changed > 0 && !a.disabled);
    assert_true(users_check(f->s, "old-admin", "legacy-password", 15, role));
    assert_string_equal(role, "auditor");
}

static bool collect_entry(void *ctx, uint64_t seq, const char *entry, size_t len)
{
    (void)seq;
    buf_put(ctx, entry, len);
    buf_putc(ctx, '\n');
    return true;
}

/* Every change, refused or not, leaves exactly one audit entry (action, outcome, who), and none holds a
 * password or a hash. */
static void test_changes_are_audited(void **state)
{
    fixture *f = *state;
    assert_int_equal(create(f->s, "root", "admin", "root-password"), MS_OK);
    assert_int_equal(create(f->s, "ana", "analyst", "ana-secret-pw"), MS_OK);
    assert_int_equal(update(f->s, "ana", "auditor", -1), MS_OK);
    assert_int_equal(update(f->s, "ghost", "auditor", -1), MS_ENOTFOUND);
    assert_int_equal(update(f->s, "root", NULL, 1), MS_ECONFLICT);
    user_change del = {.kind = USER_DELETE, .name = "ana"};
    assert_int_equal(apply(f->s, &del), MS_OK);
    store_read *r;
    ms_err e;
    buf all = {0};
    assert_int_equal(store_read_begin(f->s, &r, &e), MS_OK);
    assert_int_equal(store_audit_scan(r, 0, collect_entry, &all, &e), MS_OK);
    store_read_end(r);
    const char *want[][2] = {{"users:create", "ok"},        {"users:create", "ok"},     {"users:update", "ok"},
                             {"users:update", "not_found"}, {"users:update", "denied"}, {"users:delete", "ok"}};
    const char *at = all.data;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char action[64], outcome[64];
        snprintf(action, sizeof action, "\"action\":\"%s\"", want[i][0]);
        snprintf(outcome, sizeof outcome, "\"outcome\":\"%s\"", want[i][1]);
        const char *end = strchr(at, '\n');
        assert_non_null(end);
        char entry[1024];
        snprintf(entry, sizeof entry, "%.*s", (int)(end - at), at);
        if (!strstr(entry, action) || !strstr(entry, outcome)) fail_msg("entry %zu: %s", i + 1, entry);
        assert_non_null(strstr(entry, "\"user\":\"" ACTOR "\""));
        at = end + 1;
    }
    assert_int_equal(*at, 0); /* one entry per change, no more */
    assert_null(strstr(all.data, "root-password"));
    assert_null(strstr(all.data, "ana-secret-pw"));
    assert_null(strstr(all.data, "argon2"));
    buf_free(&all);
}

/* Through the writer (the server's path): a change is durable with its audit entry; when the commit
 * fails (the disk is full), writer_apply says so and nothing of it is stored: not the change, not the
 * revocations, not the audit entry. */
static void test_writer_commit_failure(void **state)
{
    fixture *f = *state;
    schema sc;
    schema_default(&sc);
    writer *w;
    ms_err e;
    assert_int_equal(writer_start(&w, f->s, &sc, &e), MS_OK);
    char hash[PASSWORD_ENCODED_MAX];
    assert_int_equal(password_hash("root-password", 13, hash, &e), MS_OK);
    user_change c = {.kind = USER_CREATE,
                     .name = "root",
                     .role = "admin",
                     .hash = hash,
                     .actor = "admin",
                     .actor_role = "admin",
                     .client = "127.0.0.1",
                     .resource = "/v1/users"};
    assert_int_equal(writer_apply(w, users_apply, &c, &e), MS_OK);
    assert_int_equal(c.refusal.code, MS_OK);
    user_change n = {.kind = USER_CREATE,
                     .name = "nina",
                     .role = "clinician",
                     .hash = hash,
                     .actor = "admin",
                     .actor_role = "admin",
                     .client = "127.0.0.1",
                     .resource = "/v1/users"};
    assert_int_equal(writer_apply(w, users_apply, &n, &e), MS_OK);
    principal who = {"nina", "clinician"}, got;
    char tok[TOKEN_TEXT], header[128];
    int64_t expires;
    assert_int_equal(token_issue(f->s, &who, 3600, tok, &expires, &e), MS_OK);
    snprintf(header, sizeof header, "Bearer %s", tok);
    uint64_t entries = 0, bad = 0;
    unsigned char head[32];
    char why[256];
    assert_int_equal(store_audit_verify(f->s, &entries, head, &bad, why, sizeof why, &e), MS_OK);
    assert_int_equal(entries, 2);
    store_inject_fault(f->s, ENOSPC);
    user_change d = {.kind = USER_DELETE,
                     .name = "nina",
                     .actor = "admin",
                     .actor_role = "admin",
                     .client = "127.0.0.1",
                     .resource = "/v1/users/nina"};
    assert_int_equal(writer_apply(w, users_apply, &d, &e), MS_EFULL);
    store_inject_fault(f->s, 0);
    bool found;
    account(f->s, "nina", &found);
    assert_true(found);
    assert_int_equal(token_check(f->s, header, &got), TOKEN_OK);
    assert_int_equal(store_audit_verify(f->s, &entries, head, &bad, why, sizeof why, &e), MS_OK);
    assert_int_equal(entries, 2);
    /* room again: the same change goes through, its revocation and entry with it */
    assert_int_equal(writer_apply(w, users_apply, &d, &e), MS_OK);
    assert_int_equal(d.refusal.code, MS_OK);
    assert_int_equal(d.revoked, 1);
    assert_int_equal(token_check(f->s, header, &got), TOKEN_UNKNOWN);
    writer_stop(w);
    schema_free(&sc);
    assert_int_equal(store_audit_verify(f->s, &entries, head, &bad, why, sizeof why, &e), MS_OK);
    assert_int_equal(entries, 3);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_users_in_store),
        cmocka_unit_test(test_admin_account),
        cmocka_unit_test_setup_teardown(test_disable_enable_role, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_manager, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_format_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_are_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_commit_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

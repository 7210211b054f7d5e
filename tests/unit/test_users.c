/*
 * test_users.c - passwords (Argon2id, per-password salt, the stored form is not the password and
 * differs between users with equal passwords), accounts in the store, and init's admin account.
 */
#include "unit.h"

#include "passwords.h"
#include "users.h"

#include <argon2.h>
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

static void test_users_in_store(void **state)
{
    (void)state;
    char dir[128];
    unit_tmpdir(dir);
    store *s;
    ms_err e = {0};
    assert_int_equal(store_open(&s, dir, NULL, &e), MS_OK);
    assert_int_equal(users_create(s, "alice", "clinician", "password-1", 10, &e), MS_OK);
    assert_int_equal(users_create(s, "bob", "analyst", "password-1", 10, &e), MS_OK);
    assert_int_equal(users_create(s, "alice", "analyst", "password-2", 10, &e), MS_ECONFLICT);
    assert_int_equal(users_create(s, "carol", "superuser", "password-3", 10, &e), MS_EINVAL);
    assert_int_equal(users_create(s, "bad name", "analyst", "password-3", 10, &e), MS_EINVAL);
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
    assert_int_equal(users_create_admin(s, path, &e), MS_OK);
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
    assert_int_equal(users_create_admin(s, path, &e), MS_ECONFLICT);
    assert_true(users_check(s, "admin", pw, n, role));
    store_close(s);
    unit_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_verify),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_users_in_store),
        cmocka_unit_test(test_admin_account),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

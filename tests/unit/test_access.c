/*
 * test_access.c - the role table (access.h) holds DESIGN.md's default matrix exactly, refuses what it
 * does not name, and every route of the HTTP route table declares a permission the table knows.
 */
#include "unit.h"

#include "access/access.h"
#include "api/api_routes.h"

#include <string.h>

static const char *const resources[] = {"records", "patients", "public", "audit",         "users",
                                        "exports", "metrics",  "rules",  "notifications", "counters"};
enum { NRES = sizeof resources / sizeof resources[0] };
static const char *const actions[] = {"create", "read", "update", "delete"};

/* DESIGN.md: admin everything (counters:create and :delete too); ingest records:create; clinician patients and
 * records create/read/update, public:read, notifications read/create; analyst public:read and public exports;
 * auditor audit:read. Rules are the admin's alone. */
static bool expected(const char *role, const char *res, const char *act)
{
    if (!strcmp(role, "admin")) return true;
    if (!strcmp(role, "ingest")) return !strcmp(res, "records") && !strcmp(act, "create");
    if (!strcmp(role, "clinician"))
        return ((!strcmp(res, "records") || !strcmp(res, "patients")) && strcmp(act, "delete") != 0) ||
               (!strcmp(res, "public") && !strcmp(act, "read")) ||
               (!strcmp(res, "notifications") && (!strcmp(act, "read") || !strcmp(act, "create")));
    if (!strcmp(role, "analyst"))
        return (!strcmp(res, "public") && !strcmp(act, "read")) ||
               (!strcmp(res, "exports") && (!strcmp(act, "create") || !strcmp(act, "read")));
    if (!strcmp(role, "auditor")) return !strcmp(res, "audit") && !strcmp(act, "read");
    return false;
}

static void test_default_matrix(void **state)
{
    (void)state;
    const char *roles[] = {"admin", "ingest", "clinician", "analyst", "auditor", "nobody", ""};
    for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++)
        for (size_t i = 0; i < NRES; i++)
            for (size_t a = 0; a < 4; a++) {
                char perm[64];
                snprintf(perm, sizeof perm, "%s:%s", resources[i], actions[a]);
                if (access_allows(roles[r], perm) != expected(roles[r], resources[i], actions[a]))
                    fail_msg("role %s, permission %s: table says %d", roles[r], perm, access_allows(roles[r], perm));
            }
    assert_true(access_role_valid("clinician"));
    assert_false(access_role_valid("nobody"));
    assert_false(access_role_valid(NULL));
}

static void test_unknown_permissions_refused(void **state)
{
    (void)state;
    const char *bad[] = {"records", "records:", ":read", "records:write", "record:read", "records:read:x", "", "*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(access_permission_valid(bad[i]));
        assert_false(access_allows("admin", bad[i]));
    }
    assert_false(access_permission_valid(NULL));
    assert_true(access_permission_valid(PERMISSION_NONE));
    assert_true(access_allows("nobody", PERMISSION_NONE));
    assert_true(access_permission_valid(PERMISSION_AUTHENTICATED));
    assert_true(access_allows("auditor", PERMISSION_AUTHENTICATED));
    assert_false(access_allows("nobody", PERMISSION_AUTHENTICATED));
}

static void test_every_route_declares_a_known_permission(void **state)
{
    (void)state;
    assert_true(api_route_count > 0);
    int open_routes = 0;
    for (size_t i = 0; i < api_route_count; i++) {
        const route *r = &api_route_table[i];
        if (!access_permission_valid(r->permission))
            fail_msg("route %s %s: permission '%s' is not in the table", r->method, r->pattern,
                     r->permission ? r->permission : "(null)");
        if (!strcmp(r->permission, PERMISSION_NONE)) {
            open_routes++;
            /* only the health check, the login and the API's own documentation (issue 10: it holds no
             * data, and a client reads it before it has a token) may be called without a token */
            bool allowed = !strcmp(r->pattern, "/healthz") ||
                           (!strcmp(r->pattern, "/v1/auth/token") && !strcmp(r->method, "POST")) ||
                           (!strcmp(r->pattern, "/v1/openapi.json") && !strcmp(r->method, "GET")) ||
                           /* issue 12: an export's archive, whose signed short-lived link is the credential */
                           (!strcmp(r->pattern, "/v1/exports/{export_id}/download") && !strcmp(r->method, "GET")) ||
                           /* issue 14: the console's static files (the same bytes for everyone, no data) */
                           (!strcmp(r->pattern, "/") && !strcmp(r->method, "GET")) ||
                           (!strcmp(r->pattern, "/assets/{asset}") && !strcmp(r->method, "GET"));
            if (!allowed) fail_msg("route %s %s is open to anyone", r->method, r->pattern);
        }
    }
    assert_int_equal(open_routes, 6);
}

/* GET /v1/me lists a role's permissions by enumerating the table: every name is valid, each once, in all
 * resources x actions; the admin holds them all, the auditor only audit:read. */
static void test_permission_enumeration(void **state)
{
    (void)state;
    size_t n = access_permission_count(), admin = 0, auditor = 0;
    assert_int_equal(n, 40);
    char name[64], other[64];
    for (size_t i = 0; i < n; i++) {
        assert_true(access_permission_name(i, name, sizeof name));
        if (!access_permission_valid(name)) fail_msg("permission %zu '%s' is not valid", i, name);
        for (size_t k = 0; k < i; k++) {
            assert_true(access_permission_name(k, other, sizeof other));
            if (!strcmp(name, other)) fail_msg("permission '%s' twice", name);
        }
        admin += access_allows("admin", name);
        if (access_allows("auditor", name)) {
            auditor++;
            assert_string_equal(name, "audit:read");
        }
    }
    assert_false(access_permission_name(n, name, sizeof name));
    assert_int_equal(admin, n);
    assert_int_equal(auditor, 1);
    assert_true(access_permission_name(0, name, sizeof name));
    assert_string_equal(name, "records:create");
}

/* GET /v1/roles lists the roles of the table in force: the default's five, or a role file's own. */
static void test_role_enumeration(void **state)
{
    (void)state;
    static const char *const defaults[] = {"admin", "ingest", "clinician", "analyst", "auditor"};
    assert_int_equal(access_role_count(), 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(access_role_name(i), defaults[i]);
    assert_null(access_role_name(5));
    ms_err e;
    const char *file = "{\"boss\":{\"users\":\"crud\"},\"nurse\":{\"patients\":\"r\"}}";
    assert_int_equal(access_load(file, strlen(file), &e), MS_OK);
    assert_int_equal(access_role_count(), 2);
    assert_string_equal(access_role_name(0), "boss");
    assert_string_equal(access_role_name(1), "nurse");
    assert_null(access_role_name(2));
    access_reset();
    assert_int_equal(access_role_count(), 5);
}

static void test_role_file(void **state)
{
    (void)state;
    ms_err e;
    const char *good =
        "{\"admin\":{\"records\":\"crud\",\"users\":\"c\"},\"nurse\":{\"patients\":\"r\",\"public\":\"r\"}}";
    assert_int_equal(access_load(good, strlen(good), &e), MS_OK);
    assert_true(access_role_valid("nurse"));
    assert_false(access_role_valid("clinician")); /* the file replaces the table */
    assert_true(access_allows("nurse", "patients:read"));
    assert_false(access_allows("nurse", "patients:update"));
    assert_false(access_allows("nurse", "records:read"));
    assert_false(access_allows("admin", "audit:read")); /* not in the file: not granted */
    const char *bad[] = {"[]",
                         "{}",
                         "{\"x\":{\"records\":\"crux\"}}",
                         "{\"x\":{\"recordz\":\"r\"}}",
                         "{\"x\":{\"records\":1}}",
                         "{\"x\":\"r\"}",
                         "{\"x\":{},\"x\":{}}",
                         "{\"\":{}}",
                         "{\"this-role-name-is-far-too-long-to-keep\":{}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (access_load(bad[i], strlen(bad[i]), &e) != MS_EINVAL) fail_msg("role file %s was accepted", bad[i]);
        assert_true(access_role_valid("nurse")); /* a bad file changes nothing */
    }
    access_reset();
    assert_true(access_role_valid("clinician"));
    assert_false(access_role_valid("nurse"));
    /* a UTF-8 byte-order mark at the start of the file is skipped */
    const char *bom = "\xEF\xBB\xBF{\"nurse\":{\"patients\":\"r\"}}";
    if (access_load(bom, strlen(bom), &e) != MS_OK) fail_msg("role file with a BOM: %s", e.msg);
    assert_true(access_allows("nurse", "patients:read"));
    access_reset();
}

static void test_print(void **state)
{
    (void)state;
    char text[4096] = {0};
    FILE *f = fmemopen(text, sizeof text - 1, "w");
    access_print(f);
    fclose(f);
    assert_non_null(strstr(text, "clinician  cru       cru       r"));
    assert_non_null(strstr(text, "auditor    -         -         -         r"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_matrix),
        cmocka_unit_test(test_unknown_permissions_refused),
        cmocka_unit_test(test_every_route_declares_a_known_permission),
        cmocka_unit_test(test_permission_enumeration),
        cmocka_unit_test(test_role_enumeration),
        cmocka_unit_test(test_role_file),
        cmocka_unit_test(test_print),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * access.c - the role x resource x action table (see access.h).
 */
#include "access/access.h"

#include "base/json_scan.h"

#include <stdlib.h>
#include <string.h>

static const char *const resources[] = {"records", "patients", "public", "audit",         "users",
                                        "exports", "metrics",  "rules",  "notifications", "counters"};
enum { NRES = sizeof resources / sizeof resources[0] };
static const char *const actions[] = {"create", "read", "update", "delete"};
enum { C = 1, R = 2, U = 4, D = 8, CRUD = 15 };

typedef struct {
    char role[32];
    unsigned char grants[NRES]; /* per resource, in the order of resources[]: bits C R U D */
} role_row;

/* notifications (issue 13): events carry patient ids and the rule a record's text matched, a fact derived
 * from PHI: clinicians read them and subscribe (DESIGN.md), analysts do not; rules are the admin's.
 * counters: defining (create) and removing (delete) rolling-window counters; reading one needs public:read,
 * or patients:read for one on PHI fields (views/counters.h), so no role needs counters:read.
 *                              records   patients  public  audit  users  exports  metrics rules notifications counters
 */
static const role_row default_table[] = {
    {"admin", {CRUD, CRUD, CRUD, CRUD, CRUD, CRUD, CRUD, CRUD, CRUD, CRUD}},
    {"ingest", {C, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
    {"clinician", {C | R | U, C | R | U, R, 0, 0, 0, 0, 0, C | R, 0}},
    {"analyst", {0, 0, R, 0, 0, C | R, 0, 0, 0, 0}},
    {"auditor", {0, 0, 0, R, 0, 0, 0, 0, 0, 0}},
};
enum { NDEFAULT = sizeof default_table / sizeof default_table[0], MAX_ROLES = 32 };

/* The table in force: the default, or a role file's (loaded once, before any request). */
static const role_row *table = default_table;
static int nroles = NDEFAULT;
static role_row loaded[MAX_ROLES];

/* Split "resource:action" into table indexes; false if either is unknown. */
static bool parse(const char *permission, int *res, int *act)
{
    const char *colon = strchr(permission, ':');
    if (!colon) return false;
    size_t rl = (size_t)(colon - permission);
    *res = *act = -1;
    for (int i = 0; i < NRES; i++)
        if (strlen(resources[i]) == rl && memcmp(resources[i], permission, rl) == 0) *res = i;
    for (int i = 0; i < 4; i++)
        if (strcmp(actions[i], colon + 1) == 0) *act = i;
    return *res >= 0 && *act >= 0;
}

bool access_permission_valid(const char *permission)
{
    int r, a;
    return permission && (strcmp(permission, PERMISSION_NONE) == 0 ||
                          strcmp(permission, PERMISSION_AUTHENTICATED) == 0 || parse(permission, &r, &a));
}

bool access_role_valid(const char *role)
{
    for (int i = 0; i < nroles; i++)
        if (role && strcmp(table[i].role, role) == 0) return true;
    return false;
}

bool access_allows(const char *role, const char *permission)
{
    if (permission && strcmp(permission, PERMISSION_NONE) == 0) return true;
    if (permission && strcmp(permission, PERMISSION_AUTHENTICATED) == 0) return access_role_valid(role);
    int r, a;
    if (!role || !permission || !parse(permission, &r, &a)) return false;
    for (int i = 0; i < nroles; i++)
        if (strcmp(table[i].role, role) == 0) return (table[i].grants[r] >> a) & 1;
    return false;
}

size_t access_permission_count(void) { return (size_t)NRES * 4; }

bool access_permission_name(size_t i, char *out, size_t n)
{
    if (i >= access_permission_count()) return false;
    snprintf(out, n, "%s:%s", resources[i / 4], actions[i % 4]);
    return true;
}

size_t access_role_count(void) { return (size_t)nroles; }

const char *access_role_name(size_t i) { return i < (size_t)nroles ? table[i].role : NULL; }

void access_print(FILE *out)
{
    fprintf(out, "%-10s", "role");
    for (int r = 0; r < NRES; r++)
        fprintf(out, " %-9s", resources[r]);
    fputc('\n', out);
    for (int i = 0; i < nroles; i++) {
        fprintf(out, "%-10s", table[i].role);
        for (int r = 0; r < NRES; r++) {
            char cell[5];
            int n = 0;
            for (int a = 0; a < 4; a++)
                if ((table[i].grants[r] >> a) & 1) cell[n++] = "crud"[a];
            cell[n] = 0;
            fprintf(out, " %-9s", n ? cell : "-");
        }
        fputc('\n', out);
    }
}

/* {"role": {"records": "crud", "public": "r", ...}, ...}: replaces the whole table. */
ms_code access_load(const char *text, size_t len, ms_err *e)
{
    json_member roles[MAX_ROLES + 1], res[NRES + 1];
    json_error je;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) { /* a UTF-8 byte-order mark: skipped */
        text += 3;
        len -= 3;
    }
    int n = json_scan_object(text, len, roles, MAX_ROLES + 1, &je);
    if (n < 0) return ms_fail(e, MS_EINVAL, "role file: %s at byte %zu", je.msg, je.offset);
    if (n == 0 || n > MAX_ROLES) return ms_fail(e, MS_EINVAL, "role file: 1 to %d roles", MAX_ROLES);
    role_row rows[MAX_ROLES];
    memset(rows, 0, sizeof rows);
    for (int i = 0; i < n; i++) {
        if (roles[i].key_len == 0 || roles[i].key_len >= sizeof rows[i].role || roles[i].key_escaped)
            return ms_fail(e, MS_EINVAL, "role file: role %d: a name of 1-31 plain characters", i + 1);
        memcpy(rows[i].role, roles[i].key, roles[i].key_len);
        int k =
            roles[i].type == JSON_OBJECT ? json_scan_object(roles[i].val, roles[i].val_len, res, NRES + 1, &je) : -1;
        if (k < 0 || k > NRES)
            return ms_fail(e, MS_EINVAL, "role file: role \"%s\": expected {\"resource\": \"crud\"}", rows[i].role);
        for (int j = 0; j < k; j++) {
            int r = -1;
            for (int x = 0; x < NRES; x++)
                if (strlen(resources[x]) == res[j].key_len && memcmp(resources[x], res[j].key, res[j].key_len) == 0)
                    r = x;
            if (r < 0 || res[j].type != JSON_STRING)
                return ms_fail(e, MS_EINVAL, "role file: role \"%s\": unknown resource or not a string (member %d)",
                               rows[i].role, j + 1);
            for (size_t c = 1; c + 1 < res[j].val_len; c++) {
                const char *bit = strchr("crud", res[j].val[c]);
                if (!bit || !*bit)
                    return ms_fail(e, MS_EINVAL, "role file: role \"%s\": actions are letters of \"crud\"",
                                   rows[i].role);
                rows[i].grants[r] |= (unsigned char)(1u << (bit - "crud"));
            }
        }
        for (int p = 0; p < i; p++)
            if (strcmp(rows[p].role, rows[i].role) == 0)
                return ms_fail(e, MS_EINVAL, "role file: role \"%s\" twice", rows[i].role);
    }
    memcpy(loaded, rows, sizeof rows);
    table = loaded;
    nroles = n;
    return MS_OK;
}

void access_reset(void)
{
    table = default_table;
    nroles = NDEFAULT;
}

/*
 * access.c - the role x resource x action table (see access.h).
 */
#include "access.h"

#include <string.h>

static const char *const resources[] = {"records", "patients", "public", "audit", "users", "exports", "metrics"};
enum { NRES = sizeof resources / sizeof resources[0] };
static const char *const actions[] = {"create", "read", "update", "delete"};
enum { C = 1, R = 2, U = 4, D = 8, CRUD = 15 };

typedef struct {
    const char *role;
    unsigned char grants[NRES]; /* per resource, in the order of resources[]: bits C R U D */
} role_row;

/*                              records   patients  public  audit  users  exports  metrics */
static const role_row table[] = {
    {"admin", {CRUD, CRUD, CRUD, CRUD, CRUD, CRUD, CRUD}},
    {"ingest", {C, 0, 0, 0, 0, 0, 0}},
    {"clinician", {C | R | U, C | R | U, R, 0, 0, 0, 0}},
    {"analyst", {0, 0, R, 0, 0, C | R, 0}},
    {"auditor", {0, 0, 0, R, 0, 0, 0}},
};
enum { NROLES = sizeof table / sizeof table[0] };

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
    for (int i = 0; i < NROLES; i++)
        if (role && strcmp(table[i].role, role) == 0) return true;
    return false;
}

bool access_allows(const char *role, const char *permission)
{
    if (permission && strcmp(permission, PERMISSION_NONE) == 0) return true;
    if (permission && strcmp(permission, PERMISSION_AUTHENTICATED) == 0) return access_role_valid(role);
    int r, a;
    if (!role || !permission || !parse(permission, &r, &a)) return false;
    for (int i = 0; i < NROLES; i++)
        if (strcmp(table[i].role, role) == 0) return (table[i].grants[r] >> a) & 1;
    return false;
}

void access_print(FILE *out)
{
    fprintf(out, "%-10s", "role");
    for (int r = 0; r < NRES; r++)
        fprintf(out, " %-9s", resources[r]);
    fputc('\n', out);
    for (int i = 0; i < NROLES; i++) {
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

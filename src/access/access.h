/*
 * access.h - who may do what: roles, and their create/read/update/delete permissions per resource.
 *
 * One table (access.c) is the single source of truth: route permissions are checked against it,
 * `medstream roles` prints it, and a test checks that every route's permission names a resource and an
 * action that exist here. The default matrix is DESIGN.md's: admin everything; ingest records:create;
 * clinician patients and records create/read/update, public:read; analyst public:read and
 * exports:create (public exports); auditor audit:read. Issue 13 adds rules (the admin's) and
 * notifications (read and create: clinician too; an event ties a patient id to a rule its record's text
 * matched, a fact derived from PHI, so analysts do not hold it).
 *
 * Contract: lookups are thread-safe; the table changes only through access_load, at start-up
 * (`serve --roles FILE`).
 */
#ifndef MS_ACCESS_H
#define MS_ACCESS_H

#include "base/util.h"

#include <stdbool.h>
#include <stdio.h>

#define PERMISSION_NONE "none"                   /* a route anyone may call (health check, login) */
#define PERMISSION_AUTHENTICATED "authenticated" /* any valid token, whatever its role (logout) */

/* Is "resource:action" a permission the table knows (or PERMISSION_NONE)? */
bool access_permission_valid(const char *permission);
/* Does role hold permission? Unknown roles hold nothing; PERMISSION_NONE is held by everyone. */
bool access_allows(const char *role, const char *permission);
/* Is this one of the roles of the table? */
bool access_role_valid(const char *role);
/* Every permission of the table, "resource:action", by index from 0 to access_permission_count() - 1, in
 * the table's order (resources, then create, read, update, delete); false past the end. GET /v1/me lists
 * those a role holds, so that a client (the console) shows only what would not be refused. */
size_t access_permission_count(void);
bool access_permission_name(size_t i, char *out, size_t n);
/* The roles of the table in force, by index from 0 to access_role_count() - 1 (NULL past the end), in the
 * table's order: GET /v1/roles lists them, so that a client offers the roles a role file defines. */
size_t access_role_count(void);
const char *access_role_name(size_t i);
/* The matrix as text, one line per role (`medstream roles`). */
void access_print(FILE *out);
/* Replace the table with a role file's (JSON: {"role": {"records": "cru", "public": "r"}, ...}; a
 * resource left out grants nothing; a leading UTF-8 byte-order mark is skipped). Call before serving;
 * not thread-safe against lookups. */
ms_code access_load(const char *text, size_t len, ms_err *e);
/* Back to the default table (tests). */
void access_reset(void);

#endif

/*
 * users.h - accounts: a user name, a role of access.c's table, and an Argon2id password hash.
 *
 * Contract: names are 1-64 characters of [A-Za-z0-9._@-]; roles must exist in the access table;
 * passwords are hashed here and never stored, logged or echoed. (Tokens and the HTTP side arrive with
 * the rest of issue 3.)
 */
#ifndef MS_USERS_H
#define MS_USERS_H

#include "store.h"

bool user_name_valid(const char *name);
/* Create a user. MS_EINVAL (bad name, role or password), MS_ECONFLICT (exists), MS_EIO. */
ms_code users_create(store *s, const char *name, const char *role, const char *password, size_t len, ms_err *e);
/* Check a password; on success *role receives the user's role. Unknown users and wrong passwords are
 * the same answer (false), and both cost one Argon2id computation. */
bool users_check(store *s, const char *name, const char *password, size_t len, char role[STORE_ROLE_MAX]);

/* `medstream init`'s account: create "admin" with a generated password written to path (mode 0600,
 * which must not exist yet). */
ms_code users_create_admin(store *s, const char *path, ms_err *e);

#endif

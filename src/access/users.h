/*
 * users.h - accounts: a user name, a role of access.c's table, an Argon2id password hash, a disabled
 * flag and the times it was created and last changed; the changes made to them, and `medstream init`'s
 * admin account.
 *
 * DESIGN: every change (create, role, disable/enable, password, delete, revoking a user's tokens) is one
 * user_change run by users_apply inside a store write transaction: the writer's group commit in the
 * server (writer_apply), or a transaction of its own offline (users_apply_local, `medstream user`).
 * users_apply decides refusals (no such user, exists, the last account that can manage accounts)
 * before it writes anything, writes the change, the token revocations it implies and exactly one audit
 * entry (users:create, users:update or users:delete; ok, not_found, denied or error; its reason says the
 * role a creation gives and the role and disabled flag an update changes, before and after), so that a
 * change and its audit entry are one durable commit. Password hashing (Argon2id: ~0.1-0.2 s) happens before,
 * in the caller's thread, never inside the writer.
 *
 * Rules: names are 1-64 characters of [A-Za-z0-9._@-]; roles must exist in the access table; a
 * disabled account cannot log in (the same answer and cost as a wrong password) and its tokens are
 * refused; disabling or deleting an account revokes its tokens in the same commit; a password change
 * revokes the account's other tokens; no change may leave no enabled account holding users:update
 * (MS_ECONFLICT, audited "denied").
 *
 * Contract: passwords are hashed here and never stored, logged, audited or echoed; hashes never leave
 * the store and this module except for the check of a password. Nothing here prints or exits.
 */
#ifndef MS_USERS_H
#define MS_USERS_H

#include "store/store.h"

#define USERS_ADMIN "admin"                        /* the account `medstream init` creates */
#define USERS_ADMIN_PASSWORD_FILE "admin.password" /* ... with its generated password, in DIR */

bool user_name_valid(const char *name);

typedef enum { USER_CREATE, USER_UPDATE, USER_PASSWORD, USER_DELETE, USER_REVOKE_TOKENS } user_change_kind;

typedef struct {
    /* in */
    user_change_kind kind;
    const char *name;                /* the account */
    const char *role;                /* CREATE: its role; UPDATE: the new role, or NULL to keep it */
    int disabled;                    /* UPDATE: 1 disable, 0 enable, -1 keep */
    const char *hash;                /* CREATE, PASSWORD: the new Argon2id hash (password_hash, made before) */
    const char *expect_hash;         /* PASSWORD: refuse (MS_ECONFLICT) unless the stored hash is still this
                                        one (the one the old password was checked against), or NULL */
    const unsigned char *keep_token; /* PASSWORD: SHA-256 of the token not to revoke (the caller's), or NULL */
    const char *actor, *actor_role;  /* who asks, for the audit entry ("local:root", "" offline) */
    const char *client, *resource;   /* peer address ("cli" offline) and the API path of the change */
    /* out */
    char what[96];         /* the audit entry's reason: the role given, or what the change asked to change
                              ("role analyst -> admin; disabled false -> true"); "" for none */
    ms_err refusal;        /* code MS_OK: done; MS_ENOTFOUND, MS_ECONFLICT, MS_EINVAL: nothing changed */
    store_account account; /* the account after the change (as it was, for a deletion) */
    uint64_t revoked;      /* unexpired tokens revoked */
} user_change;

/* A writer_apply_fn (writer.h) over a user_change: decide, change, revoke, audit, all through w. Returns
 * a store failure only (the commit then fails); a refusal goes back in c->refusal, having written
 * nothing but its audit entry. */
ms_code users_apply(void *c, store_write *w, ms_err *e);
/* The same change in a write transaction of its own (no writer may run on the store: offline only). */
ms_code users_apply_local(store *s, user_change *c, ms_err *e);

/* Check a password; on success *role receives the user's role. Unknown users, disabled accounts and
 * wrong passwords are the same answer (false), and all cost one Argon2id computation. */
bool users_check(store *s, const char *name, const char *password, size_t len, char role[STORE_ROLE_MAX]);
/* The same check, giving the whole account on success (its hash: for user_change.expect_hash). */
bool users_check_account(store *s, const char *name, const char *password, size_t len, store_account *out);

/* `medstream init`'s account: create "admin" with a generated password written to path (mode 0600,
 * which must not exist yet); audited as a users:create by actor from client "cli". */
ms_code users_create_admin(store *s, const char *path, const char *actor, ms_err *e);
/* Remove DIR/admin.password (the admin's password changed, or the account is gone); no file is fine. */
ms_code users_admin_password_remove(const char *data_dir, ms_err *e);

#endif

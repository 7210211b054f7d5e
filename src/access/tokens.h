/*
 * tokens.h - bearer tokens.
 *
 * A token is "ms_" + 43 base64url characters of 256 random bits. The store keeps only its SHA-256
 * (with user, role and expiry), so a copy of the store does not hold usable tokens. Checking a token
 * is one hash and two LMDB reads in one read transaction: the token, then its user's account, which
 * must exist and be enabled and whose current role is the one granted (a role change applies to the
 * next request; a token of a deleted or disabled account is refused even if its revocation were
 * missed). Failed logins are limited in login_limiter.h.
 *
 * Contract: thread-safe; nothing here logs or returns a token or password except token_issue's out.
 */
#ifndef MS_TOKENS_H
#define MS_TOKENS_H

#include "store/store.h"

#define TOKEN_TEXT 47 /* "ms_" + 43 + NUL */

typedef struct {
    char user[STORE_USER_MAX];
    char role[STORE_ROLE_MAX];
} principal;

/* TOKEN_UNAVAILABLE: the store could not be read (an LMDB error, e.g. after a failed write left it unusable
 * until a restart): the token is neither known nor unknown, and the caller answers 503, not 401. */
typedef enum {
    TOKEN_OK,
    TOKEN_MISSING,
    TOKEN_MALFORMED,
    TOKEN_UNKNOWN,
    TOKEN_EXPIRED,
    TOKEN_NO_ACCOUNT,
    TOKEN_UNAVAILABLE
} token_status;
const char *token_status_text(token_status st);

/* A new token for who (MS_ENOTFOUND if the account is missing or disabled by now: a login that raced a
 * deletion or a disabling gets no token). */
ms_code token_issue(store *s, const principal *who, int64_t ttl_s, char out[TOKEN_TEXT], int64_t *expires, ms_err *e);
/* The same for a login whose password was checked against password_hash (users_check_account): also
 * MS_ENOTFOUND if the account's password changed since, so that a login racing a password change (a reset
 * of a stolen password) gets no token that the change's revocation came too early to revoke. */
ms_code token_issue_login(store *s, const principal *who, const char *password_hash, int64_t ttl_s,
                          char out[TOKEN_TEXT], int64_t *expires, ms_err *e);
/* Check an Authorization header value ("Bearer ms_..."; NULL if absent). who receives the token's user
 * (also when the token is expired or its account disabled: for the audit entry of the refusal) and the
 * account's current role. */
token_status token_check(store *s, const char *authorization, principal *who);
/* The SHA-256 under which the token of this Authorization value is stored; false if it is not one. */
bool token_hash(const char *authorization, unsigned char out[32]);
/* Revoke the token of this Authorization header (it must be valid). */
ms_code token_revoke(store *s, const char *authorization, ms_err *e);

#endif

/*
 * passwords.h - password storage: Argon2id (libargon2) with a random 16-byte salt per password, kept
 * only in Argon2's encoded form ("$argon2id$v=19$m=65536,t=3,p=1$salt$hash"); verification recomputes
 * and compares in constant time (libargon2). Also: random passwords for generated accounts.
 *
 * Contract: pure except for the random salt; the plain password never leaves the caller's buffer and
 * never appears in an error message.
 */
#ifndef MS_PASSWORDS_H
#define MS_PASSWORDS_H

#include "base/util.h"

#define PASSWORD_ENCODED_MAX 128
#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024

/* Hash a password (PASSWORD_MIN..PASSWORD_MAX bytes) into out (PASSWORD_ENCODED_MAX bytes). */
ms_code password_hash(const char *password, size_t len, char out[PASSWORD_ENCODED_MAX], ms_err *e);
/* Does password match the encoded hash? */
bool password_verify(const char *encoded, const char *password, size_t len);
/* A random password of n characters from a 62-letter alphabet, NUL-terminated (out holds n + 1). */
ms_code password_generate(char *out, size_t n, ms_err *e);

#endif

/*
 * users.c - accounts over the store's users sub-database (see users.h).
 */
#include "users.h"

#include "access.h"
#include "passwords.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ADMIN_PASSWORD_LEN 24

bool user_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == '@' || c == '-';
        if (!ok) return false;
    }
    return true;
}

ms_code users_create(store *s, const char *name, const char *role, const char *password, size_t len, ms_err *e)
{
    if (!user_name_valid(name))
        return ms_fail(e, MS_EINVAL, "user name must be 1-64 characters of A-Z a-z 0-9 . _ @ -");
    if (!access_role_valid(role)) return ms_fail(e, MS_EINVAL, "unknown role (see medstream roles)");
    char hash[PASSWORD_ENCODED_MAX];
    ms_code rc = password_hash(password, len, hash, e);
    if (rc != MS_OK) return rc;
    return store_user_create(s, name, role, hash, e);
}

/* A hash of a random password, made once with the same parameters as every stored hash: verified for
 * unknown users, so that a wrong name costs exactly what a wrong password costs. */
static char decoy[PASSWORD_ENCODED_MAX];
static pthread_once_t decoy_once = PTHREAD_ONCE_INIT;

static void make_decoy(void)
{
    char pw[33];
    if (password_generate(pw, 32, NULL) != MS_OK || password_hash(pw, 32, decoy, NULL) != MS_OK) decoy[0] = 0;
}

bool users_check(store *s, const char *name, const char *password, size_t len, char role[STORE_ROLE_MAX])
{
    pthread_once(&decoy_once, make_decoy);
    char stored[STORE_HASH_MAX], r[STORE_ROLE_MAX];
    bool found = false;
    store_read *rd;
    if (user_name_valid(name) && store_read_begin(s, &rd, NULL) == MS_OK) {
        if (store_user_get(rd, name, r, stored, &found, NULL) != MS_OK) found = false;
        store_read_end(rd);
    }
    bool ok = password_verify(found ? stored : decoy, password, len) && found;
    if (ok) snprintf(role, STORE_ROLE_MAX, "%s", r);
    return ok;
}

ms_code users_create_admin(store *s, const char *path, ms_err *e)
{
    char password[ADMIN_PASSWORD_LEN + 1];
    ms_code rc = password_generate(password, ADMIN_PASSWORD_LEN, e);
    if (rc != MS_OK) return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return ms_fail(e, errno == EEXIST ? MS_ECONFLICT : MS_EIO, "cannot create %s: %s", path, strerror(errno));
    char line[ADMIN_PASSWORD_LEN + 2];
    int n = snprintf(line, sizeof line, "%s\n", password);
    bool written = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    close(fd);
    if (!written) rc = ms_fail(e, MS_EIO, "cannot write %s", path);
    if (rc == MS_OK) rc = users_create(s, "admin", "admin", password, ADMIN_PASSWORD_LEN, e);
    if (rc != MS_OK) unlink(path);
    memset(password, 0, sizeof password);
    return rc;
}

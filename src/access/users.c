/*
 * users.c - accounts over the store's users sub-database, and their changes (see users.h).
 */
#include "access/users.h"

#include "access/access.h"
#include "access/audit.h"
#include "access/passwords.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ADMIN_PASSWORD_LEN 24
#define MANAGE_PERMISSION "users:update" /* some enabled account must always hold it */

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

/* ---- changes ---- */

static bool manages_accounts(const store_account *a)
{
    return !a->disabled && access_allows(a->role, MANAGE_PERMISSION);
}

typedef struct {
    const char *except;
    bool found;
} manager_search;

static bool find_other_manager(void *ctx, const store_account *a)
{
    manager_search *m = ctx;
    if (strcmp(a->name, m->except) != 0 && manages_accounts(a)) m->found = true;
    return !m->found;
}

/* Would turning `before` into `after` (NULL: deleting it) leave no enabled account holding
 * users:update? Only a change that takes the permission from an account that has it can. */
static ms_code leaves_no_manager(store_write *w, const store_account *before, const store_account *after, bool *leaves,
                                 ms_err *e)
{
    *leaves = false;
    if (!manages_accounts(before) || (after && manages_accounts(after))) return MS_OK;
    manager_search m = {before->name, false};
    ms_code rc = store_write_account_list(w, find_other_manager, &m, e);
    *leaves = rc == MS_OK && !m.found;
    return rc;
}

static void refuse(user_change *c, const char **outcome, const char *why_outcome, ms_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void refuse(user_change *c, const char **outcome, const char *why_outcome, ms_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->refusal.code = code;
    vsnprintf(c->refusal.msg, sizeof c->refusal.msg, fmt, ap);
    va_end(ap);
    *outcome = why_outcome;
}

static const char *action_of(user_change_kind k)
{
    return k == USER_CREATE ? "users:create" : k == USER_DELETE ? "users:delete" : "users:update";
}

/* c->what: the role a creation gives; the role and the disabled flag an update asks for, from what they are
 * (cur; NULL: no such account). Role names and flags only: never a password or a hash. */
static void describe(user_change *c, const store_account *cur)
{
    c->what[0] = 0;
    size_t n = 0;
    if (c->kind == USER_CREATE && c->role) snprintf(c->what, sizeof c->what, "role %s", c->role);
    if (c->kind != USER_UPDATE) return;
    if (c->role)
        n = (size_t)snprintf(c->what, sizeof c->what, "role %s -> %s", cur ? cur->role : "?", c->role);
    if (c->disabled >= 0 && n < sizeof c->what)
        snprintf(c->what + n, sizeof c->what - n, "%sdisabled %s -> %s", n ? "; " : "",
                 !cur ? "?" : cur->disabled ? "true" : "false", c->disabled ? "true" : "false");
}

/* Decide and write the change; a refusal sets c->refusal and *outcome and writes nothing. */
static ms_code change(user_change *c, store_write *w, const char **outcome, ms_err *e)
{
    store_account cur, next;
    bool found = false, leaves = false;
    ms_code rc = user_name_valid(c->name) ? store_write_account_get(w, c->name, &cur, &found, e) : MS_OK;
    if (rc != MS_OK) return rc;
    describe(c, found ? &cur : NULL);
    int64_t now = store_write_time(w);
    if (c->kind == USER_CREATE) {
        if (!user_name_valid(c->name))
            refuse(c, outcome, "error", MS_EINVAL, "user name must be 1-64 characters of A-Z a-z 0-9 . _ @ -");
        else if (!c->role || !access_role_valid(c->role))
            refuse(c, outcome, "error", MS_EINVAL, "unknown role (see medstream roles)");
        else if (!c->hash || strlen(c->hash) >= STORE_HASH_MAX)
            refuse(c, outcome, "error", MS_EINVAL, "no password hash");
        else if (found)
            refuse(c, outcome, "error", MS_ECONFLICT, "user %s already exists", c->name);
        if (c->refusal.code != MS_OK) return MS_OK;
        memset(&next, 0, sizeof next);
        snprintf(next.name, sizeof next.name, "%s", c->name);
        snprintf(next.role, sizeof next.role, "%s", c->role);
        snprintf(next.hash, sizeof next.hash, "%s", c->hash);
        next.created = next.changed = now;
        c->account = next;
        return store_account_put(w, &next, e);
    }
    if (!found) {
        refuse(c, outcome, "not_found", MS_ENOTFOUND, "no such user");
        return MS_OK;
    }
    next = cur;
    next.changed = now;
    switch (c->kind) {
    case USER_CREATE: break; /* above */
    case USER_UPDATE:
        if (c->role && !access_role_valid(c->role)) {
            refuse(c, outcome, "error", MS_EINVAL, "unknown role (see medstream roles)");
            return MS_OK;
        }
        if (c->role) snprintf(next.role, sizeof next.role, "%s", c->role);
        if (c->disabled >= 0) next.disabled = c->disabled != 0;
        if ((rc = leaves_no_manager(w, &cur, &next, &leaves, e)) != MS_OK) return rc;
        break;
    case USER_PASSWORD:
        if (!c->hash || strlen(c->hash) >= STORE_HASH_MAX) {
            refuse(c, outcome, "error", MS_EINVAL, "no password hash");
            return MS_OK;
        }
        if (c->expect_hash && strcmp(cur.hash, c->expect_hash) != 0) {
            refuse(c, outcome, "error", MS_ECONFLICT, "the password was changed meanwhile; try again");
            return MS_OK;
        }
        snprintf(next.hash, sizeof next.hash, "%s", c->hash);
        break;
    case USER_DELETE:
        if ((rc = leaves_no_manager(w, &cur, NULL, &leaves, e)) != MS_OK) return rc;
        break;
    case USER_REVOKE_TOKENS: break;
    }
    if (leaves) {
        refuse(c, outcome, "denied", MS_ECONFLICT,
               "%s is the last enabled account holding %s; enable or create another one first", c->name,
               MANAGE_PERMISSION);
        return MS_OK;
    }
    c->account = c->kind == USER_DELETE || c->kind == USER_REVOKE_TOKENS ? cur : next;
    if (c->kind == USER_DELETE)
        rc = store_account_delete(w, c->name, e);
    else if (c->kind != USER_REVOKE_TOKENS)
        rc = store_account_put(w, &next, e);
    bool revoke_all =
        c->kind == USER_DELETE || c->kind == USER_REVOKE_TOKENS || (c->kind == USER_UPDATE && next.disabled);
    if (rc == MS_OK && (revoke_all || c->kind == USER_PASSWORD))
        rc = store_tokens_revoke_user(w, c->name, c->kind == USER_PASSWORD ? c->keep_token : NULL, &c->revoked, e);
    return rc;
}

ms_code users_apply(void *ctx, store_write *w, ms_err *e)
{
    user_change *c = ctx;
    memset(&c->refusal, 0, sizeof c->refusal);
    memset(&c->account, 0, sizeof c->account);
    c->what[0] = 0;
    c->revoked = 0;
    const char *outcome = "ok";
    ms_code rc = change(c, w, &outcome, e);
    if (rc != MS_OK) return rc;
    audit_event ev = {.time_us = store_write_time(w),
                      .user = c->actor,
                      .role = c->actor_role,
                      .action = action_of(c->kind),
                      .resource = c->resource,
                      .outcome = outcome,
                      .client = c->client,
                      .reason = c->what[0] ? c->what : NULL};
    buf m = {0};
    audit_event_json(&ev, &m);
    rc = store_audit_append(w, m.data, m.len, e);
    buf_free(&m);
    return rc;
}

ms_code users_apply_local(store *s, user_change *c, ms_err *e)
{
    store_write *w;
    ms_code rc = store_write_begin(s, &w, e);
    if (rc != MS_OK) return rc;
    rc = users_apply(c, w, e);
    if (rc != MS_OK) {
        store_write_abort(w);
        return rc;
    }
    return store_write_commit(w, NULL, e);
}

/* ---- checking passwords ---- */

/* A hash of a random password, made once with the same parameters as every stored hash: verified for
 * unknown users, so that a wrong name costs exactly what a wrong password costs. */
static char decoy[PASSWORD_ENCODED_MAX];
static pthread_once_t decoy_once = PTHREAD_ONCE_INIT;

static void make_decoy(void)
{
    char pw[33];
    if (password_generate(pw, 32, NULL) != MS_OK || password_hash(pw, 32, decoy, NULL) != MS_OK) decoy[0] = 0;
}

bool users_check_account(store *s, const char *name, const char *password, size_t len, store_account *out)
{
    pthread_once(&decoy_once, make_decoy);
    store_account a;
    bool found = false;
    store_read *rd;
    if (user_name_valid(name) && store_read_begin(s, &rd, NULL) == MS_OK) {
        if (store_account_get(rd, name, &a, &found, NULL) != MS_OK) found = false;
        store_read_end(rd);
    }
    /* a disabled account's hash is verified all the same: the answer costs what a wrong password costs */
    bool ok = password_verify(found ? a.hash : decoy, password, len) && found && !a.disabled;
    if (ok) *out = a;
    memset(&a, 0, sizeof a);
    return ok;
}

bool users_check(store *s, const char *name, const char *password, size_t len, char role[STORE_ROLE_MAX])
{
    store_account a;
    bool ok = users_check_account(s, name, password, len, &a);
    if (ok) snprintf(role, STORE_ROLE_MAX, "%s", a.role);
    memset(&a, 0, sizeof a);
    return ok;
}

/* ---- the admin account of `medstream init` ---- */

ms_code users_create_admin(store *s, const char *path, const char *actor, ms_err *e)
{
    char password[ADMIN_PASSWORD_LEN + 1], hash[PASSWORD_ENCODED_MAX];
    ms_code rc = password_generate(password, ADMIN_PASSWORD_LEN, e);
    if (rc == MS_OK) rc = password_hash(password, ADMIN_PASSWORD_LEN, hash, e);
    if (rc != MS_OK) return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        memset(password, 0, sizeof password);
        return ms_fail(e, errno == EEXIST ? MS_ECONFLICT : MS_EIO, "cannot create %s: %s", path, strerror(errno));
    }
    char line[ADMIN_PASSWORD_LEN + 2];
    int n = snprintf(line, sizeof line, "%s\n", password);
    bool written = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    close(fd);
    memset(password, 0, sizeof password);
    memset(line, 0, sizeof line);
    if (!written) rc = ms_fail(e, MS_EIO, "cannot write %s", path);
    user_change c = {.kind = USER_CREATE,
                     .name = USERS_ADMIN,
                     .role = "admin",
                     .hash = hash,
                     .actor = actor,
                     .actor_role = "",
                     .client = "cli",
                     .resource = "/v1/users"};
    if (rc == MS_OK) rc = users_apply_local(s, &c, e);
    if (rc == MS_OK && c.refusal.code != MS_OK) rc = ms_fail(e, c.refusal.code, "%s", c.refusal.msg);
    if (rc != MS_OK) unlink(path);
    return rc;
}

ms_code users_admin_password_remove(const char *data_dir, ms_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, USERS_ADMIN_PASSWORD_FILE);
    if (unlink(path) == 0 || errno == ENOENT) return MS_OK;
    return ms_fail(e, MS_EIO, "cannot remove %s: %s", path, strerror(errno));
}

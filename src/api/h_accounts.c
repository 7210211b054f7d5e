/*
 * h_accounts.c - logins, tokens and accounts: POST and DELETE /v1/auth/token, POST and GET /v1/users,
 * GET, PATCH and DELETE /v1/users/{user}, PUT /v1/users/{user}/password and
 * DELETE /v1/users/{user}/tokens (docs/API.md, "Auth").
 *
 * DESIGN: reads are one read transaction. Every change runs through the writer (run_change with
 * users_apply): the change, the token revocations it implies and its audit entry are one durable
 * commit, and the rules (the last account holding users:update, a password changed since it was
 * checked) are decided inside it. Password hashing (Argon2id) is slow and runs here, in the request's
 * thread, never in the writer. Failed logins and wrong old passwords feed the per-user limiter; a login it
 * refuses is audited as a refusal without a known user is (per address and window: api_routes.h).
 *
 * What it must never do: answer with or audit a password or a hash, let a password linger in memory
 * after the request (free_fields wipes it), record a name tried at login that is not a user's (it may
 * be a password typed into the wrong field), or change an account outside a writer commit.
 */
#include "api/handlers.h"
#include "base/log.h"
#include "api/params.h"

#include "access/audit.h"
#include "access/login_limiter.h"
#include "access/passwords.h"
#include "access/tokens.h"
#include "access/users.h"
#include "base/json_scan.h"
#include "base/json_write.h"

#include <stdlib.h>
#include <string.h>

/* The string members of a small JSON object body; false (with a 400) if the body is not one. */
static bool json_fields(http_request *req, http_response *res, const char *const *names, char **values, size_t cap)
{
    json_member m[16];
    json_error je;
    int n = req->body ? json_scan_object(req->body, req->body_len, m, 16, &je) : -1;
    if (n < 0) {
        http_error(res, 400, "body: expected a JSON object");
        return false;
    }
    for (int k = 0; names[k]; k++) {
        values[k] = NULL;
        for (int i = 0; i < n; i++) {
            if (m[i].key_len != strlen(names[k]) || memcmp(m[i].key, names[k], m[i].key_len) != 0) continue;
            if (m[i].type != JSON_STRING || m[i].val_len - 2 >= cap) break;
            values[k] = ms_malloc(m[i].val_len);
            size_t dl = json_string_decode(m[i].val + 1, m[i].val_len - 2, values[k]);
            values[k][dl] = 0;
            if (strlen(values[k]) != dl) {
                free(values[k]);
                values[k] = NULL;
            }
            break;
        }
    }
    return true;
}

static void free_fields(char **values, int n)
{
    for (int i = 0; i < n; i++) {
        if (values[i]) memset(values[i], 0, strlen(values[i])); /* passwords do not linger */
        free(values[i]);
    }
}

void h_login(api *a, http_request *req, http_response *res)
{
    static const char *const names[] = {"user", "password", NULL};
    char *v[2] = {0};
    if (!json_fields(req, res, names, v, 2048)) return;
    if (!v[0] || !v[1]) {
        http_error(res, 400, "body: \"user\" and \"password\" strings are required");
    } else {
        /* the name tried is recorded only if it is a user's: a password typed into the user field must
         * not end up in the audit log; a store that cannot be read is a 503, not a failed login */
        bool exists = false, readable = true;
        store_read *rd;
        if (user_name_valid(v[0])) {
            char r_[STORE_ROLE_MAX], h_[STORE_HASH_MAX];
            readable = store_read_begin(a->store, &rd, NULL) == MS_OK;
            if (readable) {
                readable = store_user_get(rd, v[0], r_, h_, &exists, NULL) == MS_OK;
                store_read_end(rd);
            }
        }
        if (!readable) {
            http_error(res, 503, "the store cannot be read to check the login (try again later)");
            free_fields(v, 2);
            return;
        }
        login_verdict lv = login_begin(v[0], req->client, ms_now_us());
        if (lv != LOGIN_ALLOWED) { /* a denied attempt, which costs its sender nothing */
            api_audit_free_refusal(a, req, exists ? v[0] : "(unknown user)", "auth:login", login_verdict_text(lv));
            http_error(res, 429, "%s; try again in %d s", login_verdict_text(lv), LOGIN_WINDOW_S);
            free_fields(v, 2);
            return;
        }
        principal who;
        store_account acc;
        bool ok = users_check_account(a->store, v[0], v[1], strlen(v[1]), &acc);
        login_end(v[0], req->client, ok ? LOGIN_OK : LOGIN_FAILED, ms_now_us());
        char token[TOKEN_TEXT];
        int64_t expires;
        ms_err e = {0};
        if (ok) {
            snprintf(who.user, sizeof who.user, "%s", v[0]);
            snprintf(who.role, sizeof who.role, "%s", acc.role);
            /* refused if the account was disabled, deleted or given another password since the check */
            e.code = token_issue_login(a->store, &who, acc.hash, a->token_ttl_s, token, &expires, &e);
        }
        memset(&acc, 0, sizeof acc);
        audit_event ev = {.time_us = ms_now_us(),
                          .user = exists ? v[0] : "(unknown user)",
                          .role = ok ? who.role : "",
                          .action = "auth:login",
                          .resource = req->path,
                          .outcome = !ok || e.code == MS_ENOTFOUND ? "denied" : e.code ? "error" : "ok",
                          .client = req->client};
        writer_audit(a->writer, &ev);
        if (!ok) {
            http_error(res, 401, "bad user or password");
        } else {
            if (e.code != MS_OK) {
                if (e.code == MS_ENOTFOUND) /* disabled, deleted or another password since the check above */
                    http_error(res, 401, "bad user or password");
                else
                    http_error(res, status_for(e.code), "%s", e.msg);
            } else {
                res->status = 201;
                res->body.len = 0;
                buf_printf(&res->body, "{\"token\":\"%s\",\"expires_at\":", token);
                jw_time(&res->body, expires);
                buf_puts(&res->body, ",\"role\":");
                jw_cstr(&res->body, who.role);
                buf_putc(&res->body, '}');
                memset(token, 0, sizeof token);
            }
        }
    }
    free_fields(v, 2);
}

void h_logout(api *a, http_request *req, http_response *res)
{
    ms_err e;
    if (token_revoke(a->store, req->authorization, &e) != MS_OK) {
        http_error(res, e.code == MS_ENOTFOUND ? 401 : status_for(e.code), "%s", e.msg);
        return;
    }
    res->status = 200;
    buf_puts(&res->body, "{\"revoked\":true}");
}

/* Who the token is: its user, the account's role and each permission the role holds (access.c's table), so
 * that a client shows only what the server would allow. The same for every role; nothing is audited (no
 * data is read). */
void h_me(api *a, http_request *req, http_response *res)
{
    (void)a;
    res->status = 200;
    buf_puts(&res->body, "{\"user\":");
    jw_cstr(&res->body, req->user);
    buf_puts(&res->body, ",\"role\":");
    jw_cstr(&res->body, req->role);
    buf_puts(&res->body, ",\"permissions\":[");
    bool first = true;
    char name[64];
    for (size_t i = 0; access_permission_name(i, name, sizeof name); i++) {
        if (!access_allows(req->role, name)) continue;
        if (!first) buf_putc(&res->body, ',');
        first = false;
        jw_cstr(&res->body, name);
    }
    buf_puts(&res->body, "]}");
}

/* The roles of the table in force (the default, or serve --roles FILE), each with its permissions, in the
 * table's order: what an account may be given. */
void h_roles(api *a, http_request *req, http_response *res)
{
    (void)a;
    (void)req;
    res->status = 200;
    buf_puts(&res->body, "{\"roles\":[");
    const char *role;
    char name[64];
    for (size_t r = 0; (role = access_role_name(r)); r++) {
        buf_puts(&res->body, r ? ",{\"role\":" : "{\"role\":");
        jw_cstr(&res->body, role);
        buf_puts(&res->body, ",\"permissions\":[");
        bool first = true;
        for (size_t i = 0; access_permission_name(i, name, sizeof name); i++) {
            if (!access_allows(role, name)) continue;
            if (!first) buf_putc(&res->body, ',');
            first = false;
            jw_cstr(&res->body, name);
        }
        buf_puts(&res->body, "]}");
    }
    buf_puts(&res->body, "]}");
}

/* Run an account change through the writer: the change, its token revocations and its audit entry in
 * one durable commit. False (answered) on a refusal or a failed commit. */
static bool run_change(api *a, http_request *req, http_response *res, user_change *c)
{
    c->actor = req->user;
    c->actor_role = req->role;
    c->client = req->client;
    c->resource = req->path;
    ms_err e;
    if (writer_apply(a->writer, users_apply, c, &e) != MS_OK) {
        /* the commit, and the audit entry in it, failed: the queued entry below is kept until stored */
        audit_request(a, req,
                      c->kind == USER_CREATE   ? "users:create"
                      : c->kind == USER_DELETE ? "users:delete"
                                               : "users:update",
                      NULL, "error");
        http_error(res, status_for(e.code), "nothing was changed: %s", e.msg);
        return false;
    }
    if (c->refusal.code == MS_OK) return true;
    http_error(res, status_for(c->refusal.code), "%s", c->refusal.msg);
    return false;
}

/* admin.password (medstream init) holds a password that no longer works once the admin account's
 * password changed or the account is gone. */
static void forget_admin_password(api *a, const char *user)
{
    ms_err e;
    if (strcmp(user, USERS_ADMIN) == 0 && a->data_dir && users_admin_password_remove(a->data_dir, &e) != MS_OK)
        ms_log(LOG_WARN, "api.admin_password", "%s", e.msg);
}

static void account_json(buf *b, const store_account *acc)
{
    buf_puts(b, "{\"user\":");
    jw_cstr(b, acc->name);
    buf_puts(b, ",\"role\":");
    jw_cstr(b, acc->role);
    buf_printf(b, ",\"disabled\":%s,\"created_at\":", acc->disabled ? "true" : "false");
    if (acc->created) /* 0: an account written before these times were kept */
        jw_time(b, acc->created);
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"changed_at\":");
    if (acc->changed)
        jw_time(b, acc->changed);
    else
        buf_puts(b, "null");
    buf_putc(b, '}');
}

void h_user_create(api *a, http_request *req, http_response *res)
{
    static const char *const names[] = {"user", "password", "role", NULL};
    char *v[3] = {0};
    if (!json_fields(req, res, names, v, 2048)) {
        audit_request(a, req, "users:create", NULL, "error");
        return;
    }
    ms_err e;
    char hash[PASSWORD_ENCODED_MAX];
    user_change c = {.kind = USER_CREATE, .name = v[0], .role = v[2], .hash = hash};
    if (!v[0] || !v[1] || !v[2]) {
        http_error(res, 400, "body: \"user\", \"password\" and \"role\" strings are required");
    } else if (!user_name_valid(v[0])) {
        http_error(res, 400, "user name must be 1-64 characters of A-Z a-z 0-9 . _ @ -");
    } else if (!access_role_valid(v[2])) {
        http_error(res, 400, "unknown role (see medstream roles)");
    } else if (password_hash(v[1], strlen(v[1]), hash, &e) != MS_OK) { /* slow: here, never in the writer */
        http_error(res, status_for(e.code), "%s", e.msg);
    } else {
        if (run_change(a, req, res, &c)) {
            res->status = 201;
            res->body.len = 0;
            buf_puts(&res->body, "{\"user\":");
            jw_cstr(&res->body, v[0]);
            buf_puts(&res->body, ",\"role\":");
            jw_cstr(&res->body, v[2]);
            buf_putc(&res->body, '}');
        }
        free_fields(v, 3);
        return;
    }
    audit_request(a, req, "users:create", NULL, "error");
    free_fields(v, 3);
}

typedef struct {
    buf *out;
    size_t n;
} account_list;

static bool on_account(void *ctx, const store_account *acc)
{
    account_list *l = ctx;
    if (l->n++) buf_putc(l->out, ',');
    account_json(l->out, acc);
    return true;
}

void h_user_list(api *a, http_request *req, http_response *res)
{
    (void)req;
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    buf out = {0};
    account_list l = {&out, 0};
    ms_err e;
    buf_puts(&out, "{\"users\":[");
    ms_code rc = store_account_list(r, on_account, &l, &e);
    buf_puts(&out, "]}");
    finish_read(r, rc, &e, &out, res, ms_mono_s());
}

void h_user_get(api *a, http_request *req, http_response *res)
{
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    store_account acc;
    bool found = false;
    ms_err e;
    buf out = {0};
    ms_code rc = store_account_get(r, req->params[0], &acc, &found, &e);
    if (rc == MS_OK && !found) rc = ms_fail(&e, MS_ENOTFOUND, "no such user");
    if (rc == MS_OK) account_json(&out, &acc);
    finish_read(r, rc, &e, &out, res, ms_mono_s());
}

/* PATCH {"role"?, "disabled"?}: every member known and of its type, at least one. */
static bool patch_body(http_request *req, http_response *res, char role[STORE_ROLE_MAX], int *disabled)
{
    json_member m[16];
    json_error je;
    int n = req->body ? json_scan_object(req->body, req->body_len, m, 16, &je) : -1;
    role[0] = 0;
    *disabled = -1;
    if (n < 0) {
        http_error(res, 400, "body: expected a JSON object");
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (m[i].key_len == 4 && memcmp(m[i].key, "role", 4) == 0) {
            if (m[i].type != JSON_STRING || m[i].val_len - 2 >= STORE_ROLE_MAX) {
                http_error(res, 400, "role: unknown role (see medstream roles)");
                return false;
            }
            size_t dl = json_string_decode(m[i].val + 1, m[i].val_len - 2, role);
            role[dl] = 0;
            if (strlen(role) != dl || !access_role_valid(role)) {
                http_error(res, 400, "role: unknown role (see medstream roles)");
                return false;
            }
        } else if (m[i].key_len == 8 && memcmp(m[i].key, "disabled", 8) == 0) {
            if (m[i].type != JSON_TRUE && m[i].type != JSON_FALSE) {
                http_error(res, 400, "disabled: expected true or false");
                return false;
            }
            *disabled = m[i].type == JSON_TRUE;
        } else {
            http_error(res, 400, "body: unknown member (expected \"role\" and/or \"disabled\")");
            return false;
        }
    }
    if (!role[0] && *disabled < 0) {
        http_error(res, 400, "body: expected \"role\" and/or \"disabled\"");
        return false;
    }
    return true;
}

void h_user_patch(api *a, http_request *req, http_response *res)
{
    char role[STORE_ROLE_MAX];
    user_change c = {.kind = USER_UPDATE, .name = req->params[0], .role = role};
    if (!patch_body(req, res, role, &c.disabled)) {
        audit_request(a, req, "users:update", NULL, "error");
        return;
    }
    if (!role[0]) c.role = NULL;
    if (!run_change(a, req, res, &c)) return;
    res->status = 200;
    res->body.len = 0;
    account_json(&res->body, &c.account);
}

void h_user_delete(api *a, http_request *req, http_response *res)
{
    user_change c = {.kind = USER_DELETE, .name = req->params[0]};
    if (!run_change(a, req, res, &c)) return;
    forget_admin_password(a, c.name);
    res->status = 204;
    res->body.len = 0;
}

void h_user_tokens_revoke(api *a, http_request *req, http_response *res)
{
    user_change c = {.kind = USER_REVOKE_TOKENS, .name = req->params[0]};
    if (!run_change(a, req, res, &c)) return;
    res->status = 200;
    res->body.len = 0;
    buf_printf(&res->body, "{\"revoked\":%llu}", (unsigned long long)c.revoked);
}

/* The old password of a change, checked as a login is (an attempt reserved before, ended after). */
static bool old_password_right(api *a, const char *client, const char *name, const char *old, store_account *cur)
{
    bool ok = users_check_account(a->store, name, old, strlen(old), cur);
    login_end(name, client, ok ? LOGIN_OK : LOGIN_FAILED, ms_now_us());
    return ok;
}

/* PUT {"old_password"?, "password"}: your own with the right old password, or anyone's with
 * users:update (an old password given is checked all the same). A wrong old password is a failed login
 * for the limiter. The user's other tokens are revoked. */
void h_user_password(api *a, http_request *req, http_response *res)
{
    const char *name = req->params[0];
    bool self = strcmp(name, req->user) == 0, manager = access_allows(req->role, "users:update");
    if (!self && !manager) {
        audit_request(a, req, "users:update", NULL, "denied");
        http_error(res, 403, "role %s lacks permission users:update (needed to set another user's password)",
                   req->role);
        return;
    }
    static const char *const names[] = {"old_password", "password", NULL};
    char *v[2] = {0};
    if (!json_fields(req, res, names, v, 2048)) {
        audit_request(a, req, "users:update", NULL, "error");
        return;
    }
    const char *outcome = "error";
    store_account cur;
    char hash[PASSWORD_ENCODED_MAX];
    unsigned char presented[32];
    bool have_presented = token_hash(req->authorization, presented);
    user_change c = {
        .kind = USER_PASSWORD, .name = name, .hash = hash, .keep_token = have_presented ? presented : NULL};
    ms_err e;
    login_verdict lv = LOGIN_ALLOWED;
    if (!v[1]) {
        http_error(res, 400, "body: \"password\" string is required");
    } else if (!v[0] && !manager) {
        http_error(res, 400, "body: \"old_password\" is required to change your own password");
    } else if (v[0] && (lv = login_begin(name, req->client, ms_now_us())) != LOGIN_ALLOWED) {
        outcome = "denied";
        http_error(res, 429, "%s; try again in %d s", login_verdict_text(lv), LOGIN_WINDOW_S);
    } else if (v[0] && !old_password_right(a, req->client, name, v[0], &cur)) {
        outcome = "denied";
        http_error(res, 403, "wrong old password");
    } else if (password_hash(v[1], strlen(v[1]), hash, &e) != MS_OK) { /* slow: here, never in the writer */
        http_error(res, status_for(e.code), "%s", e.msg);
    } else {
        if (v[0]) c.expect_hash = cur.hash; /* refused if the password changed since it was checked */
        if (run_change(a, req, res, &c)) {
            forget_admin_password(a, name);
            res->status = 204;
            res->body.len = 0;
        }
        outcome = NULL; /* audited in the commit (or by run_change) */
    }
    if (outcome) audit_request(a, req, "users:update", NULL, outcome);
    memset(&cur, 0, sizeof cur);
    memset(hash, 0, sizeof hash);
    free_fields(v, 2);
}

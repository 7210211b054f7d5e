/*
 * api_routes.c - route table and handlers of the HTTP API (see api_routes.h, docs/API.md).
 *
 * Dispatch (on_headers) is the one place where a route's permission is checked, before the body is
 * read; a refusal (403, or 401 for a token whose user is known) is audited there. PHI reads are also
 * refused there (503) while their audit entries cannot be made durable (writer_audit_ok).
 */
#include "api/api_routes.h"

#include "ingest/ingest.h"
#include "pipeline/prepare.h"

#include "access/audit.h"
#include "base/json_write.h"
#include "base/log.h"
#include "base/metrics.h"
#include "access/passwords.h"
#include "read/query.h"
#include "pipeline/record_scan.h"
#include "base/timefmt.h"
#include "access/tokens.h"
#include "access/users.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void h_ingest(api *a, http_request *req, http_response *res);
static void h_record_get(api *a, http_request *req, http_response *res);
static void h_record_delete(api *a, http_request *req, http_response *res);
static void h_patient_lookup(api *a, http_request *req, http_response *res);
static void h_patient_get(api *a, http_request *req, http_response *res);
static void h_patient_history(api *a, http_request *req, http_response *res);
static void h_patient_records(api *a, http_request *req, http_response *res);
static void h_public_patient(api *a, http_request *req, http_response *res);
static void h_public_records(api *a, http_request *req, http_response *res);
static void h_snapshot(api *a, http_request *req, http_response *res);
static void h_health(api *a, http_request *req, http_response *res);
static void h_login(api *a, http_request *req, http_response *res);
static void h_logout(api *a, http_request *req, http_response *res);
static void h_user_create(api *a, http_request *req, http_response *res);
static void h_user_list(api *a, http_request *req, http_response *res);
static void h_user_get(api *a, http_request *req, http_response *res);
static void h_user_patch(api *a, http_request *req, http_response *res);
static void h_user_delete(api *a, http_request *req, http_response *res);
static void h_user_password(api *a, http_request *req, http_response *res);
static void h_user_tokens_revoke(api *a, http_request *req, http_response *res);
static void h_audit(api *a, http_request *req, http_response *res);
static void h_metrics(api *a, http_request *req, http_response *res);

const route api_route_table[] = {
    {"POST", "/v1/records", "records:create", h_ingest, 0},
    {"GET", "/v1/records/{}", "records:read", h_record_get, ROUTE_PHI_READ},
    {"DELETE", "/v1/records/{}", "records:delete", h_record_delete, 0},
    {"GET", "/v1/patients", "patients:read", h_patient_lookup, ROUTE_PHI_READ},
    {"GET", "/v1/patients/{}", "patients:read", h_patient_get, ROUTE_PHI_READ},
    {"GET", "/v1/patients/{}/history", "patients:read", h_patient_history, ROUTE_PHI_READ},
    {"GET", "/v1/patients/{}/records", "patients:read", h_patient_records, ROUTE_PHI_READ},
    {"GET", "/v1/public/patients/{}", "public:read", h_public_patient, 0},
    {"GET", "/v1/public/records", "public:read", h_public_records, 0},
    {"POST", "/v1/snapshots", "exports:create", h_snapshot, 0},
    {"GET", "/healthz", PERMISSION_NONE, h_health, 0},
    {"POST", "/v1/auth/token", PERMISSION_NONE, h_login, 0},
    {"DELETE", "/v1/auth/token", PERMISSION_AUTHENTICATED, h_logout, 0},
    {"POST", "/v1/users", "users:create", h_user_create, 0},
    {"GET", "/v1/users", "users:read", h_user_list, 0},
    {"GET", "/v1/users/{}", "users:read", h_user_get, 0},
    {"PATCH", "/v1/users/{}", "users:update", h_user_patch, 0},
    {"DELETE", "/v1/users/{}", "users:delete", h_user_delete, 0},
    {"PUT", "/v1/users/{}/password", PERMISSION_AUTHENTICATED, h_user_password, 0}, /* self, or users:update */
    {"DELETE", "/v1/users/{}/tokens", "users:update", h_user_tokens_revoke, 0},
    {"GET", "/v1/audit", "audit:read", h_audit, 0},
    {"GET", "/metrics", "metrics:read", h_metrics, 0},
};
const size_t api_route_count = sizeof api_route_table / sizeof api_route_table[0];

/* ---- dispatch ---- */

/* Match path against pattern; on success copy {} segments into req->params. */
static bool match(const char *pattern, const char *path, http_request *req)
{
    const char *p = pattern, *s = path;
    int np = 0;
    char *caps[HTTP_MAX_PARAMS];
    while (*p && *s) {
        if (p[0] == '{' && p[1] == '}') {
            const char *seg_end = strchr(s, '/');
            size_t n = seg_end ? (size_t)(seg_end - s) : strlen(s);
            if (n == 0 || np == HTTP_MAX_PARAMS) goto no;
            caps[np++] = ms_strndup(s, n);
            s += n;
            p += 2;
            continue;
        }
        if (*p != *s) goto no;
        p++, s++;
    }
    if (*p || *s) goto no;
    for (int i = 0; i < req->nparams; i++)
        free(req->params[i]);
    for (int i = 0; i < np; i++)
        req->params[i] = caps[i];
    req->nparams = np;
    return true;
no:
    for (int i = 0; i < np; i++)
        free(caps[i]);
    return false;
}

static bool content_type_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, want, n) != 0) return false;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == 0 || *ct == ';';
}

/* A refused request whose user is known: audited (who tried what, never the request's data). */
static void audit_denied(api *a, const http_request *req, const char *user, const char *role, const char *action)
{
    audit_event ev = {.time_us = ms_now_us(),
                      .user = user,
                      .role = role,
                      .action = action,
                      .resource = req->path,
                      .outcome = "denied",
                      .client = req->client};
    writer_audit(a->writer, &ev);
}

/* Every route's permission, checked before anything else of the request is read. */
static int authorize(api *a, const route *rt, http_request *req, http_response *res)
{
    if (strcmp(rt->permission, PERMISSION_NONE) == 0) return 0;
    principal who = {0};
    token_status st = token_check(a->store, req->authorization, &who);
    snprintf(req->user, sizeof req->user, "%s", who.user); /* known for a refused role or an expired token */
    snprintf(req->role, sizeof req->role, "%s", who.role);
    if (st != TOKEN_OK) {
        if (who.user[0]) audit_denied(a, req, who.user, who.role, rt->permission); /* e.g. an expired token */
        http_error(res, 401, "%s", token_status_text(st));
        return 401;
    }
    if (!access_allows(who.role, rt->permission)) {
        audit_denied(a, req, who.user, who.role, rt->permission);
        http_error(res, 403, "role %s lacks permission %s", who.role, rt->permission);
        return 403;
    }
    if (rt->flags & ROUTE_PHI_READ) {
        ms_err why;
        if (!writer_audit_ok(a->writer, &why)) {
            http_error(res, 503, "PHI reads are refused while their audit entries cannot be stored: %s", why.msg);
            return 503;
        }
    }
    return 0;
}

static int on_headers(void *ctx, http_request *req, http_response *res)
{
    api *a = ctx;
    bool path_known = false;
    for (size_t i = 0; i < api_route_count; i++) {
        const route *rt = &api_route_table[i];
        if (!match(rt->pattern, req->path, req)) continue;
        path_known = true;
        req->route_pattern = rt->pattern; /* the access log names a request by its route, never its path */
        if (strcmp(rt->method, req->method) != 0) continue;
        req->route = (int)i;
        int denied = authorize(a, rt, req, res);
        if (denied) return denied;
        if (req->too_many_args) {
            http_error(res, 400, "too many query parameters (at most %d)", HTTP_MAX_ARGS);
            return 400;
        }
        if (rt->handler == h_ingest) {
            const char *ct = req->content_type;
            if (!ct || !(content_type_is(ct, "application/x-ndjson") || content_type_is(ct, "application/ndjson") ||
                         content_type_is(ct, "application/jsonl") || content_type_is(ct, "application/json"))) {
                http_error(res, 415,
                           "Content-Type must be application/x-ndjson, application/ndjson, application/jsonl "
                           "or application/json");
                return 415;
            }
            req->bulk = true;
        }
        if ((rt->handler == h_login || rt->handler == h_user_create || rt->handler == h_user_patch ||
             rt->handler == h_user_password) &&
            (!req->content_type || !content_type_is(req->content_type, "application/json"))) {
            http_error(res, 415, "Content-Type must be application/json");
            return 415;
        }
        return 0;
    }
    if (path_known) {
        http_error(res, 405, "method %s not allowed on this path", req->method);
        return 405;
    }
    http_error(res, 404, "no such endpoint");
    return 404;
}

static void handle(void *ctx, http_request *req, http_response *res)
{
    api_route_table[req->route].handler(ctx, req, res);
}

http_handler api_http_handler(api *a)
{
    http_handler h = {on_headers, handle, a};
    return h;
}

/* ---- parameter helpers ---- */

static int status_for(ms_code c)
{
    switch (c) {
    case MS_OK: return 200;
    case MS_EINVAL: return 400;
    case MS_ENOTFOUND: return 404;
    case MS_ECONFLICT: return 409;
    case MS_ECORRUPT: return 500;
    case MS_EFULL:
    case MS_EIO:
    case MS_ESTOPPED: return 503;
    }
    return 500;
}

/* Only the named query parameters are accepted (a typo must not silently widen a query). */
static bool only_args(http_request *req, http_response *res, const char *const *allowed)
{
    for (int i = 0; i < req->nargs; i++) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, req->args[i].key) == 0;
        if (!ok) {
            http_error(res, 400, "unknown query parameter '%.64s'", req->args[i].key);
            return false;
        }
    }
    return true;
}

/* as_of: an RFC 3339 time or a snapshot id; absent means now. Public reads take only a snapshot id: a
 * time would let a caller bisect exact commit times, finer than the year the public copy carries. */
static bool get_as_of(http_request *req, http_response *res, store_read *r, bool snapshot_only, int64_t *as_of)
{
    const char *v = http_arg_get(req, "as_of");
    *as_of = INT64_MAX;
    if (!v) return true;
    if (strncmp(v, "snap_", 5) == 0 && strlen(v) < 64) {
        bool found;
        ms_err e;
        if (store_snapshot_get(r, v, as_of, &found, &e) != MS_OK) {
            http_error(res, status_for(e.code), "%s", e.msg);
            return false;
        }
        if (found) return true;
        http_error(res, 404, "as_of: no such snapshot");
        return false;
    }
    if (snapshot_only) {
        http_error(res, 400, "as_of: public reads take a snapshot id (POST /v1/snapshots), not a time");
        return false;
    }
    if (time_parse_rfc3339(v, strlen(v), as_of)) return true;
    http_error(res, 400, "as_of: expected an RFC 3339 time (e.g. 2026-11-22T15:00:00Z) or a snapshot id");
    return false;
}

static bool get_time(http_request *req, http_response *res, const char *name, int64_t *out)
{
    const char *v = http_arg_get(req, name);
    if (!v) return true;
    if (time_parse_rfc3339(v, strlen(v), out)) return true;
    http_error(res, 400, "%s: expected an RFC 3339 time", name);
    return false;
}

/* Public time filters work on years: the public copy carries only the year, and a finer filter would
 * reveal exact dates by bisection. */
static bool get_year(http_request *req, http_response *res, const char *name, int *out)
{
    const char *v = http_arg_get(req, name);
    if (!v) return true;
    size_t n = strlen(v);
    int64_t us;
    int y, m, d;
    if (n == 4 && v[0] >= '0' && v[0] <= '9' && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9' &&
        v[3] >= '0' && v[3] <= '9') {
        *out = atoi(v);
        return true;
    }
    if (date_parse(v, n, &y, &m, &d)) {
        *out = y;
        return true;
    }
    if (time_parse_rfc3339(v, n, &us)) {
        *out = time_year(us);
        return true;
    }
    http_error(res, 400, "%s: expected a year (YYYY); public time filters are by year", name);
    return false;
}

static bool get_limit(http_request *req, http_response *res, uint32_t *limit)
{
    const char *v = http_arg_get(req, "limit");
    *limit = 100;
    if (!v) return true;
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 1 || x > 1000) {
        http_error(res, 400, "limit: expected an integer from 1 to 1000");
        return false;
    }
    *limit = (uint32_t)x;
    return true;
}

static bool get_pid(const char *text, http_response *res, patient_id *pid)
{
    if (patient_id_parse(text, strlen(text), pid)) return true;
    http_error(res, 400, "patient id: expected a UUID (8-4-4-4-12 hex digits)");
    return false;
}

typedef struct {
    unsigned char key[1024];
    size_t len;
} cursor_buf;

static bool get_cursor(http_request *req, http_response *res, cursor_buf *c)
{
    const char *v = http_arg_get(req, "cursor");
    c->len = 0;
    if (!v) return true;
    if (cursor_decode(v, c->key, sizeof c->key, &c->len)) return true;
    http_error(res, 400, "cursor: not a cursor returned by this endpoint");
    return false;
}

static bool begin_read(api *a, http_response *res, store_read **r)
{
    ms_err e;
    if (store_read_begin(a->store, r, &e) == MS_OK) return true;
    http_error(res, status_for(e.code), "%s", e.msg);
    return false;
}

/* A read transaction and the request's as_of instant; false (already answered) on failure. */
static bool begin_read_at(api *a, http_request *req, http_response *res, bool snapshot_only, store_read **r,
                          int64_t *as_of)
{
    if (!begin_read(a, res, r)) return false;
    if (get_as_of(req, res, *r, snapshot_only, as_of)) return true;
    store_read_end(*r);
    return false;
}

static void finish_read(store_read *r, ms_code rc, ms_err *e, buf *out, http_response *res, double t0)
{
    store_read_end(r);
    if (rc == MS_OK) {
        res->status = 200;
        buf_free(&res->body);
        res->body = *out;
        *out = (buf){0};
    } else {
        buf_free(out);
        http_error(res, status_for(rc), "%s", e->msg);
    }
    histogram_observe(&g_metrics.read_seconds, ms_mono_s() - t0);
}

/* An audit entry for a request that touched (or tried to touch) PHI; committed with the next group. */
static void audit_request(api *a, const http_request *req, const char *action, const patient_id *pid,
                          const char *outcome)
{
    audit_event ev = {.time_us = ms_now_us(),
                      .user = req->user,
                      .role = req->role,
                      .action = action,
                      .resource = req->path,
                      .outcome = outcome,
                      .client = req->client,
                      .patients = pid,
                      .npatients = pid ? 1 : 0};
    writer_audit(a->writer, &ev);
}

static const char *outcome_of(ms_code rc) { return rc == MS_OK ? "ok" : rc == MS_ENOTFOUND ? "not_found" : "error"; }

/* ---- ingest ---- */

static void h_ingest(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {NULL};
    if (!only_args(req, res, allowed)) return;
    ingest_ctx in = {a->store, a->writer, a->schema, a->max_record};
    record_batch batch = {0};
    scan_config cfg = ingest_scan_config(&in);
    ms_err e;
    if (record_prepare_body(&cfg, req->body ? req->body : "", req->body_len, &batch, &e) != MS_OK) {
        http_error(res, 400, "%s", e.msg);
        record_batch_free(&batch);
        return;
    }
    char source[192];
    snprintf(source, sizeof source, "user %s via http %s", req->user, req->client);
    ingest_job job = {.body = req->body,
                      .body_len = req->body_len,
                      .body_write_len = ingest_padded_len(req->body_len), /* http_server zero-pads to 4 KiB */
                      .body_pos = UINT64_MAX,
                      .batch = &batch,
                      .may_update = access_allows(req->role, "records:update"),
                      .source = source,
                      .user = req->user,
                      .role = req->role,
                      .client = req->client,
                      .resource = req->path,
                      .received_at = req->received_at,
                      .results = ms_calloc(batch.n ? batch.n : 1, sizeof(item_result))};
    if (ingest_store(&in, &job, &e) != MS_OK) {
        http_error(res, status_for(e.code), "nothing of this batch was stored: %s", e.msg);
        free(job.results);
        record_batch_free(&batch);
        return;
    }
    buf *o = &res->body;
    o->len = 0;
    buf_reserve(o, (size_t)batch.n * 140 + 32);
    buf_printf(o, "{\"errors\":%s,\"items\":[", batch.rejected ? "true" : "false");
    for (uint32_t i = 0; i < batch.n; i++) {
        const parsed_record *r = &batch.records[i];
        const item_result *it = &job.results[i];
        if (i) buf_putc(o, ',');
        buf_printf(o, "{\"line\":%u,\"status\":\"%s\"", r->line, item_status_name(it->status));
        if (it->status == ITEM_REJECTED) {
            buf_puts(o, ",\"error\":");
            if (r->error)
                jw_cstr(o, r->error);
            else
                buf_printf(o, "\"line %u: %s\"", r->line, it->error ? it->error : "rejected");
        } else {
            char pid[PATIENT_ID_TEXT];
            patient_id_format(&it->pid, pid);
            buf_puts(o, ",\"record_id\":");
            jw_string(o, r->record_id, r->record_id_len);
            buf_printf(o, ",\"patient_id\":\"%s\",\"version\":%u", pid, it->version);
        }
        buf_putc(o, '}');
    }
    buf_puts(o, "]}");
    res->status = 200;
    free(job.results);
    record_batch_free(&batch);
}

/* ---- PHI reads ---- */

static void h_record_get(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {"as_of", NULL};
    if (!only_args(req, res, allowed)) return;
    double t0 = ms_mono_s();
    store_read *r;
    int64_t as_of;
    if (!begin_read_at(a, req, res, false, &r, &as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    patient_id touched;
    memset(&touched, 0, sizeof touched);
    ms_code rc = query_record(&q, r, req->params[0], strlen(req->params[0]), as_of, &out, &touched, &e);
    bool known = rc == MS_OK || (rc == MS_ENOTFOUND && memcmp(&touched, &(patient_id){0}, sizeof touched) != 0);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "records:read", known ? &touched : NULL, outcome_of(rc));
}

static void h_record_delete(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {NULL};
    if (!only_args(req, res, allowed)) return;
    const char *rid = req->params[0];
    char source[192];
    snprintf(source, sizeof source, "user %s via http %s (delete)", req->user, req->client);
    item_result item = {0};
    ingest_job job = {.delete_id = rid,
                      .delete_id_len = strlen(rid),
                      .source = source,
                      .user = req->user,
                      .role = req->role,
                      .client = req->client,
                      .resource = req->path,
                      .received_at = ms_mono_s(),
                      .results = &item};
    writer_submit(a->writer, &job); /* the audit entry (records:delete) is in the same commit */
    if (job.rc != MS_OK) {
        http_error(res, status_for(job.rc), "the record was not deleted: %s", job.err.msg);
        return;
    }
    if (item.status != ITEM_DELETED) {
        http_error(res, 404, "record not found");
        return;
    }
    char pid[PATIENT_ID_TEXT];
    patient_id_format(&item.pid, pid);
    res->status = 200;
    res->body.len = 0;
    buf_puts(&res->body, "{\"record_id\":");
    jw_cstr(&res->body, rid);
    buf_printf(&res->body, ",\"patient_id\":\"%s\",\"version\":%u,\"deleted\":true,\"valid_from\":", pid,
               item.version);
    jw_time(&res->body, job.commit_time);
    buf_putc(&res->body, '}');
}

static void patient_answer(api *a, http_request *req, http_response *res, const patient_id *pid, store_read *r,
                           double t0)
{
    int64_t as_of, event_at = INT64_MAX;
    if (!get_as_of(req, res, r, false, &as_of) || !get_time(req, res, "event_at", &event_at)) {
        store_read_end(r);
        return;
    }
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_patient(&q, r, pid, as_of, event_at, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "patients:read", rc == MS_OK ? pid : NULL, outcome_of(rc));
}

static void h_patient_get(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {"as_of", "event_at", NULL};
    if (!only_args(req, res, allowed)) return;
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid)) return;
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    patient_answer(a, req, res, &pid, r, t0);
}

static void h_patient_lookup(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {"name", "dob", "as_of", "event_at", NULL};
    if (!only_args(req, res, allowed)) return;
    double t0 = ms_mono_s();
    const char *name = http_arg_get(req, "name"), *dob = http_arg_get(req, "dob");
    if (!name || !dob) {
        http_error(res, 400, "name and dob are both required");
        return;
    }
    char norm[IDENTITY_NAME_MAX], key[IDENTITY_KEY_MAX];
    const char *why;
    int nl =
        utf8_check(name, strlen(name)) == strlen(name) ? identity_normalize_name(name, strlen(name), norm, &why) : -1;
    if (nl < 0) {
        http_error(res, 400, "name: not a valid name");
        return;
    }
    int y, m, d;
    if (!date_parse(dob, strlen(dob), &y, &m, &d)) {
        http_error(res, 400, "dob: expected a real date YYYY-MM-DD");
        return;
    }
    size_t kl = identity_key(norm, (size_t)nl, y, m, d, key);
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    patient_id pid;
    bool found;
    ms_err e;
    ms_code rc = store_ident_lookup(r, key, kl, &pid, &found, &e);
    if (rc != MS_OK || !found) {
        store_read_end(r);
        audit_request(a, req, "patients:read", NULL, rc ? "error" : "not_found");
        if (rc) {
            http_error(res, status_for(rc), "%s", e.msg);
            return;
        }
        {
            http_error(res, 404, "no patient with this identity");
            return;
        }
    }
    patient_answer(a, req, res, &pid, r, t0);
}

static void h_patient_history(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {NULL};
    if (!only_args(req, res, allowed)) return;
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid)) return;
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_patient_history(&q, r, &pid, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "patients:read", rc == MS_OK ? &pid : NULL, outcome_of(rc));
}

static void h_patient_records(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {"type", "since", "until", "as_of", "limit", "cursor", NULL};
    if (!only_args(req, res, allowed)) return;
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid)) return;
    list_params p = {.since = INT64_MIN, .until = INT64_MAX, .type = http_arg_get(req, "type")};
    cursor_buf c;
    if (!get_time(req, res, "since", &p.since) || !get_time(req, res, "until", &p.until) ||
        !get_limit(req, res, &p.limit) || !get_cursor(req, res, &c))
        return;
    p.cursor = c.len ? c.key : NULL;
    p.cursor_len = c.len;
    store_read *r;
    if (!begin_read_at(a, req, res, false, &r, &p.as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_patient_records(&q, r, &pid, &p, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "patients:read", rc == MS_OK ? &pid : NULL, outcome_of(rc));
}

/* ---- public reads ---- */

static void h_public_patient(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {"as_of", NULL};
    if (!only_args(req, res, allowed)) return;
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid)) return;
    store_read *r;
    int64_t as_of;
    if (!begin_read_at(a, req, res, true, &r, &as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_public_patient(&q, r, &pid, as_of, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
}

static void h_public_records(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    static const char *const reserved[] = {"type", "patient_id", "since", "until", "as_of", "limit", "cursor", NULL};
    const char *fkeys[HTTP_MAX_ARGS], *fvals[HTTP_MAX_ARGS];
    int nf = 0;
    for (int i = 0; i < req->nargs; i++) {
        bool is_reserved = false;
        for (const char *const *k = reserved; *k && !is_reserved; k++)
            is_reserved = strcmp(*k, req->args[i].key) == 0;
        if (is_reserved) continue;
        const char *k = req->args[i].key;
        if (!schema_public(a->schema, k, strlen(k))) {
            http_error(res, 400, "filter '%.64s': not a public field", k);
            return;
        }
        fkeys[nf] = k;
        fvals[nf] = req->args[i].value;
        nf++;
    }
    list_params p = {.year_from = 0,
                     .year_to = 9999,
                     .type = http_arg_get(req, "type"),
                     .filter_keys = fkeys,
                     .filter_values = fvals,
                     .nfilters = nf};
    if ((http_arg_get(req, "since") || http_arg_get(req, "until")) &&
        !schema_public(a->schema, a->schema->ts_field, strlen(a->schema->ts_field))) {
        http_error(res, 400, "since/until: the event time is not a public field");
        return;
    }
    cursor_buf c;
    if (!get_year(req, res, "since", &p.year_from) || !get_year(req, res, "until", &p.year_to) ||
        !get_limit(req, res, &p.limit) || !get_cursor(req, res, &c))
        return;
    if (p.type && (!*p.type || strlen(p.type) > 64)) {
        http_error(res, 400, "type: expected 1-64 characters");
        return;
    }
    patient_id pid;
    const char *ptext = http_arg_get(req, "patient_id");
    if (ptext && !get_pid(ptext, res, &pid)) return;
    p.pid = ptext ? &pid : NULL;
    if (c.len && !p.pid && (c.key[0] != 'T')) {
        http_error(res, 400, "cursor: not a cursor of this query");
        return;
    }
    p.cursor = c.len ? c.key : NULL;
    p.cursor_len = c.len;
    store_read *r;
    if (!begin_read_at(a, req, res, true, &r, &p.as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_public_records(&q, r, &p, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
}

/* ---- the rest ---- */

static void h_snapshot(api *a, http_request *req, http_response *res)
{
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        http_error(res, 503, "random number generator failed");
        return;
    }
    char id[32];
    snprintf(id, sizeof id, "snap_%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
             rnd[6], rnd[7]);
    int64_t as_of;
    ms_err e;
    ms_code rc = store_snapshot_create(a->store, id, &as_of, &e);
    audit_request(a, req, "exports:create", NULL, rc == MS_OK ? "ok" : "error");
    if (rc) {
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    res->status = 201;
    res->body.len = 0;
    buf_printf(&res->body, "{\"snapshot_id\":\"%s\",\"as_of\":", id);
    jw_time(&res->body, as_of);
    buf_putc(&res->body, '}');
}

static void h_health(api *a, http_request *req, http_response *res)
{
    (void)req;
    res->status = 200; /* alive either way; "degraded" tells a load balancer or an operator to look */
    ms_err store_why;
    bool store_failing = !writer_healthy(a->writer, &store_why);
    bool kafka_down = atomic_load(&g_metrics.kafka_unreachable);
    int pg = atomic_load(&g_metrics.postgres_state);
    /* behind: a commit older than 10 s not yet in PostgreSQL (the requirement is 2 s) is worth a look */
    bool pg_behind = pg == PG_STATE_OK && atomic_load(&g_metrics.postgres_lag_ms) > 10000;
    bool degraded = store_failing || kafka_down || pg == PG_STATE_UNREACHABLE || pg == PG_STATE_FAILING || pg_behind;
    buf_printf(&res->body, "{\"status\":\"%s\"", degraded ? "degraded" : "ok");
    if (store_failing) {
        buf_puts(&res->body, ",\"store\":");
        jw_cstr(&res->body, store_why.msg); /* names the cause (disk full, I/O error), never data */
    }
    if (kafka_down) buf_puts(&res->body, ",\"kafka\":\"brokers unreachable\"");
    if (pg != PG_STATE_OFF)
        buf_printf(&res->body, ",\"postgres\":\"%s\",\"postgres_lag_commits\":%llu,\"postgres_lag_ms\":%llu",
                   pg == PG_STATE_UNREACHABLE ? "unreachable"
                   : pg == PG_STATE_FAILING   ? "failing"
                   : pg_behind                ? "behind"
                                              : "ok",
                   (unsigned long long)atomic_load(&g_metrics.postgres_lag),
                   (unsigned long long)atomic_load(&g_metrics.postgres_lag_ms));
    buf_putc(&res->body, '}');
}

static void h_metrics(api *a, http_request *req, http_response *res)
{
    (void)req;
    store_read *r;
    if (store_read_begin(a->store, &r, NULL) == MS_OK) {
        atomic_store(&g_metrics.patients, store_patient_count(r));
        store_read_end(r);
    }
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4";
    metrics_render(&res->body);
}

/* ---- accounts ---- */

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

static void h_login(api *a, http_request *req, http_response *res)
{
    static const char *const names[] = {"user", "password", NULL};
    char *v[2] = {0};
    if (!json_fields(req, res, names, v, 2048)) return;
    if (!v[0] || !v[1]) {
        http_error(res, 400, "body: \"user\" and \"password\" strings are required");
    } else if (!login_allowed(v[0], ms_now_us())) {
        http_error(res, 429, "too many failed logins for this user; try again in %d s", LOGIN_WINDOW_S);
    } else {
        principal who;
        bool ok = users_check(a->store, v[0], v[1], strlen(v[1]), who.role);
        login_record(v[0], ok, ms_now_us());
        /* the name tried is recorded only if it is a user's: a password typed into the user field must
         * not end up in the audit log */
        bool exists = false;
        store_read *rd;
        if (user_name_valid(v[0]) && store_read_begin(a->store, &rd, NULL) == MS_OK) {
            char r_[STORE_ROLE_MAX], h_[STORE_HASH_MAX];
            if (store_user_get(rd, v[0], r_, h_, &exists, NULL) != MS_OK) exists = false;
            store_read_end(rd);
        }
        audit_event ev = {.time_us = ms_now_us(),
                          .user = exists ? v[0] : "(unknown user)",
                          .role = ok ? who.role : "",
                          .action = "auth:login",
                          .resource = req->path,
                          .outcome = ok ? "ok" : "denied",
                          .client = req->client};
        writer_audit(a->writer, &ev);
        if (!ok) {
            http_error(res, 401, "bad user or password");
        } else {
            snprintf(who.user, sizeof who.user, "%s", v[0]);
            char token[TOKEN_TEXT];
            int64_t expires;
            ms_err e;
            if (token_issue(a->store, &who, a->token_ttl_s, token, &expires, &e) != MS_OK) {
                if (e.code == MS_ENOTFOUND) /* disabled or deleted since the check above */
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

static void h_logout(api *a, http_request *req, http_response *res)
{
    ms_err e;
    if (token_revoke(a->store, req->authorization, &e) != MS_OK) {
        http_error(res, e.code == MS_ENOTFOUND ? 401 : status_for(e.code), "%s", e.msg);
        return;
    }
    res->status = 200;
    buf_puts(&res->body, "{\"revoked\":true}");
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

static void h_user_create(api *a, http_request *req, http_response *res)
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

static void h_user_list(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {NULL};
    if (!only_args(req, res, allowed)) return;
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

static void h_user_get(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {NULL};
    if (!only_args(req, res, allowed)) return;
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

static void h_user_patch(api *a, http_request *req, http_response *res)
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

static void h_user_delete(api *a, http_request *req, http_response *res)
{
    user_change c = {.kind = USER_DELETE, .name = req->params[0]};
    if (!run_change(a, req, res, &c)) return;
    forget_admin_password(a, c.name);
    res->status = 204;
    res->body.len = 0;
}

static void h_user_tokens_revoke(api *a, http_request *req, http_response *res)
{
    user_change c = {.kind = USER_REVOKE_TOKENS, .name = req->params[0]};
    if (!run_change(a, req, res, &c)) return;
    res->status = 200;
    res->body.len = 0;
    buf_printf(&res->body, "{\"revoked\":%llu}", (unsigned long long)c.revoked);
}

/* PUT {"old_password"?, "password"}: your own with the right old password, or anyone's with
 * users:update (an old password given is checked all the same). A wrong old password is a failed login
 * for the limiter. The user's other tokens are revoked. */
static void h_user_password(api *a, http_request *req, http_response *res)
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
    if (!v[1]) {
        http_error(res, 400, "body: \"password\" string is required");
    } else if (!v[0] && !manager) {
        http_error(res, 400, "body: \"old_password\" is required to change your own password");
    } else if (v[0] && !login_allowed(name, ms_now_us())) {
        outcome = "denied";
        http_error(res, 429, "too many failed logins for this user; try again in %d s", LOGIN_WINDOW_S);
    } else if (v[0] && !users_check_account(a->store, name, v[0], strlen(v[0]), &cur)) {
        login_record(name, false, ms_now_us());
        outcome = "denied";
        http_error(res, 403, "wrong old password");
    } else if (password_hash(v[1], strlen(v[1]), hash, &e) != MS_OK) { /* slow: here, never in the writer */
        http_error(res, status_for(e.code), "%s", e.msg);
    } else {
        if (v[0]) {
            login_record(name, true, ms_now_us());
            c.expect_hash = cur.hash; /* refused if the password changed since it was checked */
        }
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

/* ---- the audit trail ---- */

typedef struct {
    int64_t since;
    const char *user;
    char pid[PATIENT_ID_TEXT + 2]; /* "\"<id>\"" or "" */
    uint32_t limit, count;
    uint64_t last;
    bool more;
    buf *out;
} audit_query;

static bool audit_matches(const audit_query *q, const char *entry, size_t len)
{
    json_member m[16];
    json_error je;
    int n = json_scan_object(entry, len, m, 16, &je);
    if (n < 0) return false;
    for (int i = 0; i < n; i++) {
        if (m[i].key_len == 4 && !memcmp(m[i].key, "time", 4) && q->since != INT64_MIN) {
            int64_t t;
            if (m[i].val_len < 2 || !time_parse_rfc3339(m[i].val + 1, m[i].val_len - 2, &t) || t < q->since)
                return false;
        } else if (m[i].key_len == 4 && !memcmp(m[i].key, "user", 4) && q->user) {
            if (m[i].val_len != strlen(q->user) + 2 || memcmp(m[i].val + 1, q->user, m[i].val_len - 2) != 0)
                return false;
        } else if (m[i].key_len == 11 && !memcmp(m[i].key, "patient_ids", 11) && q->pid[0]) {
            if (!memmem(m[i].val, m[i].val_len, q->pid, strlen(q->pid))) return false;
        }
    }
    return true;
}

static bool on_audit_entry(void *ctx, uint64_t seq, const char *entry, size_t len)
{
    audit_query *q = ctx;
    if (!audit_matches(q, entry, len)) return true;
    if (q->count == q->limit) {
        q->more = true;
        return false;
    }
    if (q->count++) buf_putc(q->out, ',');
    buf_put(q->out, entry, len);
    q->last = seq;
    return true;
}

static void h_audit(api *a, http_request *req, http_response *res)
{
    static const char *const allowed[] = {"since", "user", "patient_id", "limit", "cursor", NULL};
    if (!only_args(req, res, allowed)) return;
    audit_query q = {.since = INT64_MIN, .user = http_arg_get(req, "user")};
    if (!get_time(req, res, "since", &q.since) || !get_limit(req, res, &q.limit)) return;
    const char *ptext = http_arg_get(req, "patient_id");
    patient_id pid;
    if (ptext) {
        if (!get_pid(ptext, res, &pid)) return;
        char t[PATIENT_ID_TEXT];
        patient_id_format(&pid, t);
        snprintf(q.pid, sizeof q.pid, "\"%s\"", t);
    }
    uint64_t after = 0;
    const char *c = http_arg_get(req, "cursor");
    if (c) {
        char *end;
        unsigned long long v = strtoull(c, &end, 10);
        if (!*c || *end) {
            http_error(res, 400, "cursor: not a cursor returned by this endpoint");
            return;
        }
        after = v;
    }
    ms_err e;
    if (writer_sync(a->writer, &e) != MS_OK) { /* read your writes: what was answered before is in the log */
        http_error(res, status_for(e.code), "the audit log cannot be brought up to date: %s", e.msg);
        return;
    }
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    buf out = {0};
    q.out = &out;
    buf_puts(&out, "{\"entries\":[");
    ms_code rc = store_audit_scan(r, after, on_audit_entry, &q, &e);
    if (rc == MS_OK) {
        buf_puts(&out, "],\"next_cursor\":");
        if (q.more)
            buf_printf(&out, "\"%llu\"", (unsigned long long)q.last);
        else
            buf_puts(&out, "null");
        buf_putc(&out, '}');
    }
    finish_read(r, rc, &e, &out, res, ms_mono_s());
}

/*
 * h_counters.c - the rolling-window counters (views/counters.h): GET and POST /v1/counters, GET and
 * DELETE /v1/counters/{name}.
 *
 * DESIGN: the route table asks public:read to read and list counters; this file adds the rule the table
 * cannot say: a counter that reads a PHI field (its type or where field is not public in the schema), or
 * any per-parent count (`parent=ID`: one record's children at event-time resolution, finer than the
 * year the public copy allows), also needs patients:read, is refused (503) while audit entries cannot be
 * stored, and is audited as a PHI read (action patients:read, no patient ids: a count names nobody). A
 * refusal is audited like dispatch's. The list shows PHI counters (whose where values may be PHI) only
 * to a caller with patients:read, and is then a PHI read: audited when it holds one, refused (503) while
 * audit entries cannot be stored. Defining and removing are counters:create and counters:delete, audited.
 *
 * What it must never do: echo a query's value (parent ids are record ids chosen by clients) or a
 * definition's where value into an error, a log line or an audit entry.
 */
#include "api/handlers.h"
#include "api/params.h"

#include "access/audit.h"
#include "base/json_write.h"

#include <string.h>

static audit_event event_of(const http_request *req, const char *action, const char *outcome)
{
    return (audit_event){.time_us = ms_now_us(),
                         .user = req->user,
                         .role = req->role,
                         .action = action,
                         .resource = req->path,
                         .outcome = outcome,
                         .client = req->client};
}

static void audit(api *a, const http_request *req, const char *action, const char *outcome)
{
    audit_event ev = event_of(req, action, outcome);
    writer_audit(a->writer, &ev);
}

void h_counter_list(api *a, http_request *req, http_response *res)
{
    buf out = {0};
    bool phi = access_allows(req->role, "patients:read");
    if (counters_list(a->counters, phi, &out)) { /* PHI definitions: a PHI read, audited, refused while that cannot be */
        ms_err why;
        if (!writer_audit_ok(a->writer, &why)) {
            buf_free(&out);
            http_error(res, 503, "PHI reads are refused while their audit entries cannot be stored: %s", why.msg);
            return;
        }
        audit(a, req, "patients:read", "ok");
    }
    res->status = 200;
    buf_free(&res->body);
    res->body = out;
}

void h_counter_create(api *a, http_request *req, http_response *res)
{
    buf def = {0};
    ms_err e;
    audit_event ev = event_of(req, "counters:create", "ok"); /* committed with the definition */
    ms_code rc = counters_define(a->counters, req->body ? req->body : "", req->body_len, &ev, &def, &e);
    if (rc != MS_OK) audit(a, req, "counters:create", "error");
    if (rc != MS_OK) {
        buf_free(&def);
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    res->status = 201;
    res->body.len = 0;
    buf_puts(&res->body, "{\"counter\":");
    buf_put(&res->body, def.data, def.len);
    buf_puts(&res->body, ",\"state\":\"building\"}");
    buf_free(&def);
}

void h_counter_delete(api *a, http_request *req, http_response *res)
{
    ms_err e;
    audit_event ev = event_of(req, "counters:delete", "ok"); /* committed with the removal */
    ms_code rc = counters_remove(a->counters, req->params[0], &ev, &e);
    if (rc != MS_OK) audit(a, req, "counters:delete", outcome_of(rc));
    if (rc != MS_OK) {
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    res->status = 200;
    res->body.len = 0;
    buf_puts(&res->body, "{\"name\":");
    jw_cstr(&res->body, req->params[0]);
    buf_puts(&res->body, ",\"deleted\":true}");
}

void h_counter_get(api *a, http_request *req, http_response *res)
{
    const char *name = req->params[0];
    bool is_public = false, per_parent = false;
    if (!counters_lookup(a->counters, name, &is_public, &per_parent)) {
        http_error(res, 404, "no counter of that name");
        return;
    }
    counter_query q = {.at = INT64_MAX, .parent = http_arg_get(req, "parent")};
    const char *w = http_arg_get(req, "window");
    if (w && (!counter_duration_parse(w, strlen(w), &q.window_us) || q.window_us <= 0)) {
        http_error(res, 400, "window: expected a duration such as 24h, 90m or 30s");
        return;
    }
    if (!get_time(req, res, "at", &q.at)) return;
    const char *fresh = http_arg_get(req, "fresh");
    if (fresh && strcmp(fresh, "true") != 0 && strcmp(fresh, "false") != 0) {
        http_error(res, 400, "fresh: expected true or false");
        return;
    }
    q.at_once = fresh && strcmp(fresh, "false") == 0;
    if (q.parent) {
        q.parent_len = strlen(q.parent);
        if (q.parent_len == 0 || q.parent_len > RECORD_ID_MAX) {
            http_error(res, 400, "parent: expected a record id (1-256 characters)");
            return;
        }
    }
    bool phi = !is_public || q.parent;
    q.public_only = !phi; /* a schema switch may make it PHI before it is counted: then refused */
    if (phi) {
        if (!access_allows(req->role, "patients:read")) {
            audit(a, req, "patients:read", "denied");
            http_error(res, 403, "role %s lacks permission patients:read (this count reads PHI: %s)", req->role,
                       q.parent ? "one record's children" : "the counter's fields are not all public");
            return;
        }
        ms_err why;
        if (!writer_audit_ok(a->writer, &why)) {
            http_error(res, 503, "PHI reads are refused while their audit entries cannot be stored: %s", why.msg);
            return;
        }
    }
    buf out = {0};
    ms_err e;
    ms_code rc = counters_query(a->counters, name, &q, &out, &e);
    if (phi) audit(a, req, "patients:read", outcome_of(rc));
    if (rc != MS_OK) {
        buf_free(&out);
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    res->status = 200;
    buf_free(&res->body);
    res->body = out;
}

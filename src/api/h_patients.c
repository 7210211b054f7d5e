/*
 * h_patients.c - the PHI patient routes: GET /v1/patients?name&dob (lookup by identity),
 * GET /v1/patients/{patient_id}, its /history and its /records; DELETE /v1/patients/{patient_id} (erasure,
 * ingest/erasure.h) and GET .../erasure (its certificate as it stands).
 *
 * DESIGN: each is one read transaction over read/query.c at the request's as_of (an RFC 3339 time or
 * a snapshot id) and, for the state, event_at; the lookup normalizes the name and date of birth into
 * the identity key exactly as ingest does (pipeline/identity.c). Every answer, a refusal by the store
 * included, writes an audit entry naming the patient when one was found.
 *
 * What it must never do: serve a patient's data without its audit entry, or put the name or date of
 * birth of a lookup into an answer or an audit entry (the query carries them; the entry names the path
 * only).
 */
#include "api/handlers.h"
#include "api/params.h"

#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/timefmt.h"
#include "ingest/erasure.h"
#include "pipeline/identity.h"
#include "pipeline/shard.h"

#include <stdatomic.h>
#include <string.h>

/* The read transaction and the instants of a patient read (as_of, event_at: INT64_MAX when absent); false
 * (answered 400) for a bad one. */
static bool begin_patient_read(api *a, http_request *req, http_response *res, store_read **r, int64_t *as_of,
                               int64_t *event_at)
{
    *event_at = INT64_MAX;
    if (!begin_read_at(a, req, res, false, r, as_of)) return false;
    if (get_time(req, res, "event_at", event_at)) return true;
    store_read_end(*r);
    return false;
}

static void patient_answer(api *a, http_request *req, http_response *res, const patient_id *pid, store_read *r,
                           int64_t as_of, int64_t event_at, double t0)
{
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_patient(&q, r, pid, as_of, event_at, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "patients:read", rc == MS_OK ? pid : NULL, outcome_of(rc));
}

void h_patient_get(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid) || redirect_patient(a, req, res, &pid)) return;
    store_read *r;
    int64_t as_of, event_at;
    if (!begin_patient_read(a, req, res, &r, &as_of, &event_at)) return;
    patient_answer(a, req, res, &pid, r, as_of, event_at, t0);
}

void h_patient_lookup(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    const char *name = http_arg_get(req, "name"), *dob = http_arg_get(req, "dob"); /* required: dispatch */
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
    if (redirect_to_owner(a, req, res, shard_of_key(key, kl))) return;
    store_read *r;
    int64_t as_of, event_at; /* checked before the lookup: a bad one is a 400 whether or not the identity is known */
    if (!begin_patient_read(a, req, res, &r, &as_of, &event_at)) return;
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
    patient_answer(a, req, res, &pid, r, as_of, event_at, t0);
}

void h_patient_history(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid) || redirect_patient(a, req, res, &pid)) return;
    uint32_t limit, after = 0;
    cursor_buf c;
    if (!get_limit(req, res, &limit) || !get_cursor(req, res, &c)) return;
    if (c.len && !query_history_cursor(c.key, c.len, &after)) {
        http_error(res, 400, "cursor: not a cursor of this query");
        return;
    }
    store_read *r;
    int64_t as_of;
    if (!begin_read_at(a, req, res, false, &r, &as_of)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_patient_history(&q, r, &pid, as_of, after, limit, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "patients:read", rc == MS_OK ? &pid : NULL, outcome_of(rc));
}

void h_patient_records(api *a, http_request *req, http_response *res)
{
    double t0 = ms_mono_s();
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid) || redirect_patient(a, req, res, &pid)) return;
    list_params p;
    cursor_buf c;
    store_read *r;
    if (!begin_list_read(a, req, res, &p, &c, &r)) return;
    query_ctx q = {a->store, a->schema};
    buf out = {0};
    ms_err e;
    ms_code rc = query_patient_records(&q, r, &pid, &p, &out, &e);
    finish_read(r, rc, &e, &out, res, t0);
    audit_request(a, req, "patients:read", rc == MS_OK ? &pid : NULL, outcome_of(rc));
}

/* ---- erasure: DELETE /v1/patients/{id} and its certificate (ingest/erasure.c) ---- */

/* The views this server keeps that follow an erasure: the counters (exact once built again after it), the
 * notifications' events (deleted by the notifier's follower with its position) and, with an events topic, the
 * topic's tombstone of the patient (owed from that deletion until delivered: events_kafka.c). */
typedef struct {
    const patient_id *pid;
    bool owed;
} owed_search;

static bool find_owed(void *ctx, const patient_id *pid)
{
    owed_search *o = ctx;
    o->owed = !memcmp(pid->b, o->pid->b, 16);
    return !o->owed;
}

static ms_code erasure_views(api *a, store_read *r, const patient_id *pid, erasure_view v[3], size_t *nv, ms_err *e)
{
    size_t n = 0;
    if (a->counters) v[n++] = (erasure_view){.view = "counters", .pos = counters_settled(a->counters)};
    if (a->notifier) v[n++] = (erasure_view){.view = "events", .sink = "notify"};
    if (a->notifier && notifier_has_events_topic(a->notifier)) {
        owed_search o = {.pid = pid};
        ms_code rc = store_events_owed(r, find_owed, &o, e);
        if (rc != MS_OK) return rc;
        v[n++] = o.owed ? (erasure_view){.view = "events_topic", .pos = 0}
                        : (erasure_view){.view = "events_topic", .sink = "notify"};
    }
    *nv = n;
    return MS_OK;
}

void h_patient_erase(api *a, http_request *req, http_response *res)
{
    if (atomic_load(&a->cluster)) { /* the patient's records live on every node that stored one */
        http_error(res, 409, "this node is one of a cluster: erasure across the cluster is not built yet");
        return;
    }
    erasure c = {.user = req->user, .role = req->role, .client = req->client, .resource = req->path};
    if (!get_pid(req->params[0], res, &c.pid)) return;
    json_member m[8];
    json_error je;
    int n = json_scan_object(req->body ? req->body : "", req->body_len, m, 8, &je);
    if (n < 0) {
        http_error(res, 400, "body: %s at byte %zu (expected {\"reason\":\"...\"})", je.msg, je.offset);
        return;
    }
    char reason[ERASURE_REASON_MAX * 4 + 1];
    const char *problem = "is required";
    for (int i = 0; i < n; i++) {
        if (m[i].key_len != 6 || memcmp(m[i].key, "reason", 6) != 0) {
            http_error(res, 400, "body: unknown member (only \"reason\")");
            return;
        }
        size_t len = m[i].val_len;
        problem = "must be a string of 1-500 characters";
        if (m[i].type != JSON_STRING || len < 3 || len - 2 > ERASURE_REASON_MAX * 4) break;
        size_t dl = json_string_decode(m[i].val + 1, len - 2, reason);
        reason[dl] = 0;
        problem = erasure_reason_problem(reason, dl);
    }
    if (problem) {
        http_error(res, 400, "reason: %s", problem);
        return;
    }
    c.reason = reason;
    ms_err e;
    if (writer_apply(a->writer, erasure_apply, &c, &e) != MS_OK) {
        http_error(res, status_for(e.code), "the patient was not erased: %s", e.msg);
        return;
    }
    if (c.not_found) {
        http_error(res, 404, "patient not found");
        return;
    }
    uint32_t withdrawn = a->exports && !c.report.already ? export_jobs_withdraw(a->exports) : 0; /* in the clear */
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    res->body.len = 0;
    buf_putc(&res->body, '{');
    erasure_view v[3];
    size_t nv = 0;
    ms_code rc = erasure_views(a, r, &c.pid, v, &nv, &e);
    if (rc == MS_OK) rc = erasure_certificate(a->store, r, &c.pid, &c.report.mark, v, nv, &res->body, &e);
    store_read_end(r);
    if (rc != MS_OK) {
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    buf_puts(&res->body, ",\"erased_by\":");
    jw_cstr(&res->body, req->user);
    buf_puts(&res->body, ",\"reason\":");
    jw_cstr(&res->body, reason);
    buf_printf(&res->body,
               ",\"already_erased\":%s,\"records\":%llu,\"record_versions\":%llu,\"patient_versions\":%llu,"
               "\"exports_withdrawn\":%u}",
               c.report.already ? "true" : "false", (unsigned long long)c.report.records,
               (unsigned long long)c.report.record_versions, (unsigned long long)c.report.patient_versions, withdrawn);
    res->status = 200;
}

void h_patient_erasure(api *a, http_request *req, http_response *res)
{
    patient_id pid;
    if (!get_pid(req->params[0], res, &pid)) return;
    store_read *r;
    if (!begin_read(a, res, &r)) return;
    erase_mark mark;
    bool erased;
    ms_err e;
    ms_code rc = store_patient_erased(r, &pid, &mark, &erased, &e);
    if (rc == MS_OK && !erased) rc = ms_fail(&e, MS_ENOTFOUND, "no erasure of this patient");
    res->body.len = 0;
    buf_putc(&res->body, '{');
    erasure_view v[3];
    size_t nv = 0;
    if (rc == MS_OK) rc = erasure_views(a, r, &pid, v, &nv, &e);
    if (rc == MS_OK) rc = erasure_certificate(a->store, r, &pid, &mark, v, nv, &res->body, &e);
    store_read_end(r);
    if (rc != MS_OK) {
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    buf_putc(&res->body, '}');
    res->status = 200;
}

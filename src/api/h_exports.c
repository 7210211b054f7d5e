/*
 * h_exports.c - POST /v1/exports, GET /v1/exports/{export_id}, GET /v1/exports/{export_id}/download,
 * and the audit entries of the server's exports (export/export_jobs.h runs them in the background).
 *
 * DESIGN: the request is checked and its instant fixed here, before it is queued: a PHI export needs
 * patients:read besides the route's exports:create (a refusal is 403 and audited); a public export takes
 * as_of only as a snapshot id, and without one gets a new snapshot, so that its instant can be read again
 * over the public API; a PHI export without as_of is as of the last commit at submission. since/until are
 * RFC 3339 times (PHI) or years (public). The download route needs no token: its signed, short-lived
 * link is the credential (export_jobs.h), and each download is audited under the export's owner; a
 * request without a valid link is audited as a refusal without a known user (per address and window). A
 * link works only while its owner's account is enabled and its role may still make the export (a link
 * handed out before the owner was disabled or demoted is 403, audited denied).
 *
 * What it must never do: hand a PHI export's link to a caller without patients:read, queue an export
 * whose audit could not name its patients, or serve a PHI export's download while its audit entry cannot
 * be stored (503, as PHI reads).
 */
#include "api/handlers.h"
#include "api/params.h"

#include "access/audit.h"
#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/timefmt.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ms_code api_export_audit(void *ctx, const char *user, const char *role, const char *client, const char *export_id,
                         export_scope scope, const patient_id *pids, size_t npids, ms_err *e)
{
    api *a = ctx;
    char resource[64];
    snprintf(resource, sizeof resource, "/v1/exports/%s", export_id);
    size_t at = 0;
    do { /* a thousand patient ids an entry */
        size_t n = npids - at > 1000 ? 1000 : npids - at;
        audit_event ev = {.time_us = ms_now_us(),
                          .user = user,
                          .role = role,
                          .action = scope == EXPORT_PHI ? "patients:read" : "exports:create",
                          .resource = resource,
                          .outcome = "ok",
                          .client = client,
                          .patients = pids + at,
                          .npatients = (uint32_t)n};
        writer_audit(a->writer, &ev);
        at += n;
    } while (at < npids);
    return writer_sync(a->writer, e); /* durable before the export is made visible */
}

/* A string member of the body (decoded into out), false if absent; *bad when present but not a string. */
static bool body_string(const json_member *m, int n, const char *key, buf *out, bool *bad)
{
    for (int i = 0; i < n; i++) {
        if (m[i].key_len != strlen(key) || memcmp(m[i].key, key, m[i].key_len) != 0) continue;
        if (m[i].type == JSON_NULL) return false;
        if (m[i].type != JSON_STRING) {
            *bad = true;
            return false;
        }
        out->len = 0;
        buf_reserve(out, m[i].val_len);
        out->len = json_string_decode(m[i].val + 1, m[i].val_len - 2, out->data);
        out->data[out->len] = 0;
        return memchr(out->data, 0, out->len) == NULL || (*bad = true, false);
    }
    return false;
}

static int index_of(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], v) == 0) return i;
    return -1;
}

static bool time_bound(const char *v, bool years, bool upper, int64_t *out)
{
    size_t n = strlen(v);
    int y, m, d;
    if (n == 4 && strspn(v, "0123456789") == 4) {
        *out = days_from_civil(atoi(v) + (upper ? 1 : 0), 1, 1) * 86400000000LL;
        return true;
    }
    if (years) {
        if (!date_parse(v, n, &y, &m, &d)) {
            int64_t us;
            if (!time_parse_rfc3339(v, n, &us)) return false;
            y = time_year(us);
        }
        *out = days_from_civil(y + (upper ? 1 : 0), 1, 1) * 86400000000LL;
        return true;
    }
    return time_parse_rfc3339(v, n, out);
}

void h_export_create(api *a, http_request *req, http_response *res)
{
    if (!a->exports) {
        http_error(res, 503, "exports are not running on this server");
        return;
    }
    json_member m[16];
    json_error je;
    int n = json_scan_object(req->body ? req->body : "", req->body_len, m, 16, &je);
    if (n < 0) {
        http_error(res, 400, "body: %s at byte %zu", je.msg, je.offset);
        return;
    }
    static const char *const known[] = {"scope", "format", "compression", "as_of", "type", "since", "until", NULL};
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(m[i].key_len < 31 ? m[i].key_len : 31), m[i].key);
        if (m[i].key_len > 31 || index_of(known, key) < 0) {
            http_error(res, 400, "body: unknown member '%.31s' (scope, format, compression, as_of, type, since, until)",
                       key);
            return;
        }
    }
    buf scope = {0}, format = {0}, compression = {0}, as_of = {0}, type = {0}, since = {0}, until = {0};
    bool bad = false;
    export_job_spec spec = {.scope = EXPORT_PUBLIC, .since = INT64_MIN, .until = INT64_MAX};
    int si = 0, fi = -1, ci = 0;
    bool has_scope = body_string(m, n, "scope", &scope, &bad);
    bool has_format = body_string(m, n, "format", &format, &bad);
    bool has_compression = body_string(m, n, "compression", &compression, &bad);
    bool has_as_of = body_string(m, n, "as_of", &as_of, &bad);
    bool has_type = body_string(m, n, "type", &type, &bad);
    bool has_since = body_string(m, n, "since", &since, &bad);
    bool has_until = body_string(m, n, "until", &until, &bad);
    char snap[40] = "";
    if (bad) {
        http_error(res, 400, "body: scope, format, compression, as_of, type, since and until are strings");
        goto out;
    }
    if (has_scope && (si = index_of(export_scope_names, scope.data)) < 0) {
        http_error(res, 400, "scope: expected public or phi");
        goto out;
    }
    if (!has_format || (fi = index_of(export_format_names, format.data)) < 0) {
        http_error(res, 400, "format: expected parquet, ndjson or csv");
        goto out;
    }
    if (has_compression && (ci = index_of(export_compression_names, compression.data)) < 0) {
        http_error(res, 400, "compression: expected snappy, zstd or none");
        goto out;
    }
    spec.scope = (export_scope)si;
    spec.format = (export_format)fi;
    spec.compression = ci;
    if (spec.scope == EXPORT_PHI && !access_allows(req->role, "patients:read")) {
        audit_request(a, req, "patients:read", NULL, "denied");
        http_error(res, 403, "role %s lacks permission patients:read (a phi export needs it)", req->role);
        goto out;
    }
    if (spec.scope == EXPORT_PUBLIC && !public_bounds_allowed(a, has_type, has_since || has_until, res)) goto out;
    bool years = spec.scope == EXPORT_PUBLIC;
    if ((has_since && !time_bound(since.data, years, false, &spec.since)) ||
        (has_until && !time_bound(until.data, years, true, &spec.until))) {
        http_error(res, 400,
                   years ? "since/until: a public export takes years (YYYY)"
                         : "since/until: expected RFC 3339 times or years (YYYY)");
        goto out;
    }
    if (spec.since >= spec.until) {
        http_error(res, 400, "since: must be before until");
        goto out;
    }
    if (has_type && (type.len == 0 || type.len > 64)) {
        http_error(res, 400, "type: 1 to 64 bytes");
        goto out;
    }
    ms_err e;
    store_read *r;
    if (!begin_read(a, res, &r)) goto out;
    if (has_as_of && strncmp(as_of.data, "snap_", 5) == 0 && as_of.len < sizeof snap) {
        bool found = false;
        ms_code rc = store_snapshot_get(r, as_of.data, &spec.as_of, &found, &e);
        store_read_end(r);
        if (rc || !found) {
            http_error(res, rc ? status_for(rc) : 404, "%s", rc ? e.msg : "as_of: no such snapshot");
            goto out;
        }
        snprintf(snap, sizeof snap, "%s", as_of.data);
    } else if (has_as_of) {
        if (years) {
            store_read_end(r);
            http_error(res, 400, "as_of: a public export takes a snapshot id (POST /v1/snapshots), not a time");
            goto out;
        }
        if (!parse_time_param(as_of.data, as_of.len, &spec.as_of)) {
            store_read_end(r);
            http_error(res, 400, "as_of: expected an RFC 3339 time in the years 1 to 9999 or a snapshot id");
            goto out;
        }
        /* the export's reads begin later: each sees every commit of that instant once a write in flight is done */
        ms_code rc = store_read_settle(r, spec.as_of, &e);
        store_read_end(r);
        if (rc != MS_OK) {
            http_error(res, status_for(rc), "%s", e.msg);
            goto out;
        }
    } else if (years) { /* a public export of now: a snapshot, so that its instant can be read again */
        store_read_end(r);
        unsigned char rnd[8];
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            http_error(res, 503, "random number generator failed");
            goto out;
        }
        snprintf(snap, sizeof snap, "snap_%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
                 rnd[5], rnd[6], rnd[7]);
        if (store_snapshot_create(a->store, snap, &spec.as_of, &e) != MS_OK) {
            http_error(res, status_for(e.code), "%s", e.msg);
            goto out;
        }
    } else {
        spec.as_of = store_last_commit(r);
        store_read_end(r);
    }
    spec.snapshot_id = snap[0] ? snap : NULL;
    spec.type = has_type ? type.data : NULL;
    spec.user = req->user;
    spec.role = req->role;
    spec.client = req->client;
    char id[24];
    ms_code rc = export_jobs_submit(a->exports, &spec, id, &e);
    audit_request(a, req, "exports:create", NULL, rc == MS_OK ? "ok" : "error");
    if (rc) {
        http_error(res, status_for(rc), "%s", e.msg);
        goto out;
    }
    res->status = 202;
    res->body.len = 0;
    buf_printf(&res->body, "{\"export_id\":\"%s\",\"state\":\"queued\",\"as_of\":", id);
    jw_time(&res->body, spec.as_of);
    buf_puts(&res->body, ",\"snapshot_id\":");
    if (snap[0])
        jw_cstr(&res->body, snap);
    else
        buf_puts(&res->body, "null");
    buf_putc(&res->body, '}');
out:
    buf_free(&scope);
    buf_free(&format);
    buf_free(&compression);
    buf_free(&as_of);
    buf_free(&type);
    buf_free(&since);
    buf_free(&until);
}

void h_export_get(api *a, http_request *req, http_response *res)
{
    if (!a->exports) {
        http_error(res, 404, "no such export");
        return;
    }
    ms_err e;
    export_scope scope;
    buf out = {0};
    /* a PHI export's link and manifest (its files by event day) only for a role that may read patients */
    bool phi_ok = access_allows(req->role, "patients:read");
    ms_code rc = export_jobs_status(a->exports, req->params[0], true, &out, &scope, &e);
    if (rc == MS_OK && scope == EXPORT_PHI && !phi_ok) {
        out.len = 0;
        rc = export_jobs_status(a->exports, req->params[0], false, &out, &scope, &e);
    }
    if (rc) {
        http_error(res, status_for(rc), "%s", e.msg);
    } else {
        res->status = 200;
        res->body.len = 0;
        buf_put(&res->body, out.data, out.len);
    }
    buf_free(&out);
}

/* Whether the export's owner may still have it: an enabled account whose current role may make it. false:
 * *status and why say what to answer (403, or 503 when the store cannot be read). */
static bool owner_may_download(api *a, const char *user, export_scope scope, int *status, ms_err *why)
{
    store_read *r;
    store_account acc;
    bool found = false;
    ms_code rc = store_read_begin(a->store, &r, why);
    if (rc == MS_OK) {
        rc = store_account_get(r, user, &acc, &found, why);
        store_read_end(r);
    }
    *status = rc != MS_OK ? status_for(rc) : 403; /* what to answer if this says no */
    if (rc != MS_OK) return false;
    memset(acc.hash, 0, sizeof acc.hash);
    if (!found || acc.disabled) {
        ms_fail(why, MS_EINVAL, "the export's owner is disabled or deleted: the link no longer works");
        return false;
    }
    const char *lacks = !access_allows(acc.role, "exports:create")                         ? "exports:create"
                        : scope == EXPORT_PHI && !access_allows(acc.role, "patients:read") ? "patients:read"
                                                                                           : NULL;
    if (lacks) {
        ms_fail(why, MS_EINVAL, "the export's owner's role %s lacks permission %s now: the link no longer works",
                acc.role, lacks);
        return false;
    }
    return true;
}

void h_export_download(api *a, http_request *req, http_response *res)
{
    if (!a->exports) {
        http_error(res, 404, "no such export");
        return;
    }
    ms_err e;
    int fd = -1;
    uint64_t size = 0;
    export_scope scope;
    char user[72] = "";
    ms_code rc = export_jobs_download(a->exports, req->params[0], http_arg_get(req, "exp"), http_arg_get(req, "sig"),
                                      &fd, &size, &scope, user, &e);
    if (rc == MS_EINVAL) { /* no valid link: anyone may send that, at no cost, so not an entry each */
        api_audit_free_refusal(a, req, "", "exports:download", e.msg);
        http_error(res, 403, "%s", e.msg);
        return;
    }
    ms_err why;
    if (rc == MS_OK && scope == EXPORT_PHI && !writer_audit_ok(a->writer, &why)) { /* as PHI reads (DESIGN.md) */
        close(fd);
        http_error(res, 503, "PHI reads are refused while their audit entries cannot be stored: %s", why.msg);
        return;
    }
    int refused = 0, status;
    if (rc == MS_OK && !owner_may_download(a, user, scope, &status, &why)) {
        refused = status;
        close(fd);
        fd = -1;
    }
    char resource[80]; /* the link's signature covers the id: one the server made (40 bytes at most) */
    snprintf(resource, sizeof resource, "/v1/exports/%.40s/download", req->params[0]);
    audit_event ev = {.time_us = ms_now_us(),
                      .user = user,
                      .role = "",
                      .action = "exports:download",
                      .resource = resource,
                      .outcome = rc != MS_OK      ? "not_found"
                                 : refused == 403 ? "denied"
                                 : refused        ? "error"
                                                  : "ok",
                      .reason = refused ? why.msg : NULL,
                      .client = req->client};
    writer_audit(a->writer, &ev);
    if (rc) {
        http_error(res, status_for(rc), "%s", e.msg);
        return;
    }
    if (refused) {
        http_error(res, refused, "%s", why.msg);
        return;
    }
    res->status = 200;
    res->content_type = "application/x-tar";
    res->has_file = true;
    res->file_fd = fd;
    res->file_len = size;
    snprintf(res->content_disposition, sizeof res->content_disposition, "attachment; filename=\"%.40s.tar\"",
             req->params[0]);
}

/*
 * params.c - the handlers' shared helpers (see params.h): query parameters, error statuses, read
 * transactions and their answers, audit entries of PHI access.
 *
 * What it must never do: put a parameter's value into a message or an audit entry.
 */
#include "api/params.h"

#include "ingest/cluster.h"
#include "pipeline/shard.h"

#include "access/audit.h"
#include "base/metrics.h"
#include "base/timefmt.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

int status_for(ms_code c)
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
    case MS_EGONE: return 410;
    }
    return 500;
}

/* In the years 1 to 9999 after its offset, as an event time must be (ingest refuses others): an answer shows it
 * again (event_at, a counter's at, an export's as_of), and year 10000 is no RFC 3339 time. */
bool parse_time_param(const char *v, size_t n, int64_t *us)
{
    if (!time_parse_rfc3339(v, n, us)) return false;
    int year = time_year(*us);
    return year >= 1 && year <= 9999;
}

/* as_of: an RFC 3339 time or a snapshot id; absent means now. Public reads take only a snapshot id: a
 * time would let a caller bisect exact commit times, finer than the year the public copy carries. */
bool get_as_of(http_request *req, http_response *res, store_read *r, bool snapshot_only, int64_t *as_of)
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
    if (!parse_time_param(v, strlen(v), as_of)) {
        http_error(
            res, 400,
            "as_of: expected an RFC 3339 time in the years 1 to 9999 (e.g. 2026-11-22T15:00:00Z) or a snapshot id");
        return false;
    }
    /* a commit of valid_from <= as_of may still be in flight: r must hold it, as a later read would */
    ms_err e;
    if (!r || store_read_settle(r, *as_of, &e) == MS_OK) return true;
    http_error(res, status_for(e.code), "%s", e.msg);
    return false;
}

bool get_time(http_request *req, http_response *res, const char *name, int64_t *out)
{
    const char *v = http_arg_get(req, name);
    if (!v) return true;
    if (parse_time_param(v, strlen(v), out)) return true;
    http_error(res, 400, "%s: expected an RFC 3339 time in the years 1 to 9999", name);
    return false;
}

/* Public time filters work on years: the public copy carries only the year, and a finer filter would
 * reveal exact dates by bisection. */
bool get_year(http_request *req, http_response *res, const char *name, int *out)
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

bool get_limit(http_request *req, http_response *res, uint32_t *limit)
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

bool get_pid(const char *text, http_response *res, patient_id *pid)
{
    if (patient_id_parse(text, strlen(text), pid)) return true;
    http_error(res, 400, "patient id: expected a UUID (8-4-4-4-12 hex digits)");
    return false;
}

bool get_cursor(http_request *req, http_response *res, cursor_buf *c)
{
    const char *v = http_arg_get(req, "cursor");
    c->len = 0;
    if (!v) return true;
    if (cursor_decode(v, c->key, sizeof c->key, &c->len)) return true;
    http_error(res, 400, "cursor: not a cursor returned by this endpoint");
    return false;
}

bool begin_read(api *a, http_response *res, store_read **r)
{
    ms_err e;
    if (store_read_begin(a->store, r, &e) == MS_OK) return true;
    http_error(res, status_for(e.code), "%s", e.msg);
    return false;
}

/* A read transaction and the request's as_of instant; false (already answered) on failure. */
bool begin_read_at(api *a, http_request *req, http_response *res, bool snapshot_only, store_read **r, int64_t *as_of)
{
    if (!begin_read(a, res, r)) return false;
    if (get_as_of(req, res, *r, snapshot_only, as_of)) return true;
    store_read_end(*r);
    return false;
}

bool begin_list_read(api *a, http_request *req, http_response *res, list_params *p, cursor_buf *c, store_read **r)
{
    *p = (list_params){.since = INT64_MIN, .until = INT64_MAX, .type = http_arg_get(req, "type")};
    if (!get_time(req, res, "since", &p->since) || !get_time(req, res, "until", &p->until) ||
        !get_limit(req, res, &p->limit) || !get_cursor(req, res, c))
        return false;
    p->cursor = c->len ? c->key : NULL;
    p->cursor_len = c->len;
    return begin_read_at(a, req, res, false, r, &p->as_of);
}

void finish_read(store_read *r, ms_code rc, ms_err *e, buf *out, http_response *res, double t0)
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
void audit_request(api *a, const http_request *req, const char *action, const patient_id *pid, const char *outcome)
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

const char *outcome_of(ms_code rc)
{
    return rc == MS_OK ? "ok" : rc == MS_ENOTFOUND ? "not_found" : rc == MS_EGONE ? "erased" : "error";
}

/* ---- a cluster's reads: redirected to the node that owns the patient's shard ---- */

static void put_escaped(buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
            buf_putc(b, (char)*p);
        } else {
            buf_putc(b, '%');
            buf_putc(b, hex[*p >> 4]);
            buf_putc(b, hex[*p & 15]);
        }
    }
}

bool redirect_to_owner(api *a, http_request *req, http_response *res, uint32_t shard)
{
    struct cluster *cl = atomic_load(&a->cluster);
    if (!cl) return false;
    char url[512];
    switch (cluster_owner_of(cl, shard, url, sizeof url)) {
    case CLUSTER_OWNER_ME: return false;
    case CLUSTER_OWNER_UNKNOWN:
        http_error(res, 503, "no node of the cluster owns this patient's shard right now (a rebalance): try again");
        return true;
    case CLUSTER_OWNER_OTHER: break;
    }
    buf loc = {0};
    buf_puts(&loc, url);
    buf_puts(&loc, req->path);
    for (int i = 0; i < req->nargs; i++) {
        buf_putc(&loc, i ? '&' : '?');
        put_escaped(&loc, req->args[i].key);
        buf_putc(&loc, '=');
        put_escaped(&loc, req->args[i].value ? req->args[i].value : "");
    }
    buf_putc(&loc, '\0');
    res->location = buf_take(&loc);
    http_error(res, 307, "another node of the cluster owns this patient's shard: %s", url);
    return true;
}

bool redirect_patient(api *a, http_request *req, http_response *res, const patient_id *pid)
{
    uint64_t n;
    struct cluster *cl = atomic_load(&a->cluster);
    if (!cl || !store_patient_number(a->store, pid, &n)) return false;     /* an unknown id: 404 here */
    return redirect_to_owner(a, req, res, cluster_shard_of_number(cl, n)); /* a seeding store's: its identity's */
}

bool parse_seq(const char *s, uint64_t *out)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 19) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

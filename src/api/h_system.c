/*
 * h_system.c - the routes about the service rather than its data: GET /healthz, GET /metrics,
 * POST /v1/snapshots, GET /v1/audit and GET /v1/openapi.json.
 *
 * DESIGN: health reports liveness and each reason for degradation (the store cannot take batches,
 * Kafka brokers unreachable, PostgreSQL unreachable, failing or behind) and is 200 either way; metrics
 * render the process's counters in Prometheus's text format; a snapshot names the current commit
 * instant; the audit list scans the hash-chained log after bringing it up to date (a caller reads its
 * own writes); the OpenAPI document is generated from the route table (openapi.c) on each request.
 *
 * What it must never do: put a record's or a patient's value into health, metrics or the OpenAPI
 * document, or answer an audit query without first committing the entries already queued.
 */
#include "api/handlers.h"
#include "api/openapi.h"
#include "api/params.h"

#include "base/json_scan.h"
#include "base/json_write.h"
#include "base/metrics.h"
#include "base/timefmt.h"

#include <openssl/rand.h>
#include <string.h>

void h_snapshot(api *a, http_request *req, http_response *res)
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

void h_health(api *a, http_request *req, http_response *res)
{
    (void)a;
    (void)req;
    res->status = 200; /* alive either way; "degraded" tells a load balancer or an operator to look */
    res->body.len = 0;
    health_render(&res->body); /* each running subsystem says whether it is degraded, and why */
}

void h_metrics(api *a, http_request *req, http_response *res)
{
    (void)req;
    store_read *r;
    if (store_read_begin(a->store, &r, NULL) == MS_OK) {
        atomic_store(&g_metrics.patients, store_patient_count(r));
        store_read_end(r);
    }
    res->status = 200;
    res->content_type = PROMETHEUS_TEXT;
    metrics_render(&res->body);
}

typedef struct {
    int64_t since, until;
    const char *user, *action;
    char pid[PATIENT_ID_TEXT + 2]; /* "\"<id>\"" or "" */
    uint32_t limit, count;
    uint64_t last;
    bool more;
    buf *out;
} audit_query;

/* Is the member's value the JSON string of exactly s (audit entries' user and action are written without
 * escapes: names and permissions)? */
static bool string_is(const json_member *m, const char *s)
{
    return m->val_len == strlen(s) + 2 && memcmp(m->val + 1, s, m->val_len - 2) == 0;
}

static bool audit_matches(const audit_query *q, const char *entry, size_t len)
{
    json_member m[16];
    json_error je;
    int n = json_scan_object(entry, len, m, 16, &je);
    if (n < 0) return false;
    for (int i = 0; i < n; i++) {
        if (m[i].key_len == 4 && !memcmp(m[i].key, "time", 4) && (q->since != INT64_MIN || q->until != INT64_MAX)) {
            int64_t t;
            if (m[i].val_len < 2 || !time_parse_rfc3339(m[i].val + 1, m[i].val_len - 2, &t) || t < q->since ||
                t >= q->until)
                return false;
        } else if (m[i].key_len == 4 && !memcmp(m[i].key, "user", 4) && q->user) {
            if (!string_is(&m[i], q->user)) return false;
        } else if (m[i].key_len == 6 && !memcmp(m[i].key, "action", 6) && q->action) {
            if (!string_is(&m[i], q->action)) return false;
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

void h_audit(api *a, http_request *req, http_response *res)
{
    audit_query q = {.since = INT64_MIN,
                     .until = INT64_MAX,
                     .user = http_arg_get(req, "user"),
                     .action = http_arg_get(req, "action")};
    if (!get_time(req, res, "since", &q.since) || !get_time(req, res, "until", &q.until) ||
        !get_limit(req, res, &q.limit))
        return;
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
    if (c && !parse_seq(c, &after)) { /* strtoull took "-1" (and numbers past 64 bits) as the end */
        http_error(res, 400, "cursor: not a cursor returned by this endpoint");
        return;
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

/* Documentation, like /healthz: no token (api_routes.c states the decision). */
/* The audit chain re-walked now (as `medstream audit verify` does): intact or the first bad entry and why,
 * and the head hash to anchor outside the machine. One read transaction over the whole chain: its cost
 * grows with the log. */
void h_audit_verify(api *a, http_request *req, http_response *res)
{
    (void)req;
    ms_err e;
    if (writer_sync(a->writer, &e) != MS_OK) { /* the entries answered before this request are checked too */
        http_error(res, status_for(e.code), "the audit log cannot be brought up to date: %s", e.msg);
        return;
    }
    uint64_t entries = 0, bad = 0;
    unsigned char head[32];
    char why[256] = "";
    int64_t at = ms_now_us();
    if (store_audit_verify(a->store, &entries, head, &bad, why, sizeof why, &e) != MS_OK) {
        http_error(res, status_for(e.code), "%s", e.msg);
        return;
    }
    res->status = 200;
    buf_printf(&res->body, "{\"intact\":%s,\"entries\":%llu,\"head\":\"", bad ? "false" : "true",
               (unsigned long long)entries);
    for (int i = 0; i < 32; i++)
        buf_printf(&res->body, "%02x", head[i]);
    buf_puts(&res->body, "\",\"bad_entry\":");
    if (bad)
        buf_printf(&res->body, "%llu", (unsigned long long)bad);
    else
        buf_puts(&res->body, "null");
    buf_puts(&res->body, ",\"why\":");
    if (bad)
        jw_cstr(&res->body, why);
    else
        buf_puts(&res->body, "null");
    buf_puts(&res->body, ",\"as_of\":");
    jw_time(&res->body, at);
    buf_putc(&res->body, '}');
}

void h_openapi(api *a, http_request *req, http_response *res)
{
    (void)a;
    (void)req;
    res->status = 200;
    res->body.len = 0;
    openapi_write(&res->body);
}

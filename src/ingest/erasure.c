/*
 * erasure.c - a patient's erasure with its audit entry, and its certificate (see erasure.h).
 */
#include "ingest/erasure.h"

#include "base/json_scan.h"
#include "base/json_write.h"

#include <string.h>

const char *erasure_reason_problem(const char *reason, size_t len)
{
    size_t chars = 0;
    for (size_t k = 0; k < len; k++)
        chars += ((unsigned char)reason[k] & 0xC0) != 0x80;
    if (len == 0 || chars > ERASURE_REASON_MAX) return "must be 1-500 characters";
    if (strlen(reason) != len || utf8_check(reason, len) != len) return "must be UTF-8 text without NUL";
    return NULL;
}

ms_code erasure_apply(void *ctx, store_write *w, ms_err *e)
{
    erasure *c = ctx;
    ms_err pe;
    ms_code rc = store_patient_erase(w, &c->pid, &c->report, &pe);
    c->not_found = rc == MS_ENOTFOUND;
    if (rc != MS_OK && !c->not_found) {
        *e = pe;
        return rc;
    }
    audit_event ev = {.time_us = store_write_time(w),
                      .user = c->user,
                      .role = c->role,
                      .action = "patients:delete",
                      .resource = c->resource,
                      .outcome = c->not_found ? "not_found" : "ok",
                      .client = c->client,
                      .patients = c->not_found ? NULL : &c->pid,
                      .npatients = c->not_found ? 0 : 1,
                      .reason = c->reason};
    buf m = {0};
    audit_event_json(&ev, &m);
    rc = store_audit_append(w, m.data, m.len, e);
    buf_free(&m);
    return rc;
}

typedef struct {
    buf *out;
    uint64_t pos;
    bool first;
} sink_status;

static bool put_sink(void *ctx, const char *sink, uint64_t pos)
{
    sink_status *st = ctx;
    /* not sinks of the commit log: the notifier's position is the "events" view's, and the event
     * deliveries count events, not commits */
    if (!strcmp(sink, "notify") || !strcmp(sink, "kafka-events") || !strncmp(sink, "webhook:", 8)) return true;
    buf_puts(st->out, st->first ? "{\"sink\":" : ",{\"sink\":");
    st->first = false;
    jw_cstr(st->out, sink);
    buf_printf(st->out, ",\"status\":\"%s\"}", pos >= st->pos ? "done" : "pending");
    return true;
}

ms_code erasure_certificate(store *s, store_read *r, const patient_id *pid, const erase_mark *mark,
                            const erasure_view *views, size_t nviews, buf *out, ms_err *e)
{
    char id[PATIENT_ID_TEXT];
    patient_id_format(pid, id);
    buf_printf(out, "\"patient_id\":\"%s\",\"erased_at\":", id);
    jw_time(out, mark->at);
    buf_printf(out,
               ",\"stores\":[{\"store\":\"phi\",\"status\":\"done\"},{\"store\":\"identity_index\",\"status\":"
               "\"done\"},{\"store\":\"public\",\"status\":\"done\"},{\"store\":\"data_key\",\"status\":\"%s\"}]",
               store_patient_key_gone(s, pid) ? "done" : "pending");
    buf_puts(out, ",\"sinks\":[");
    sink_status st = {.out = out, .pos = mark->pos, .first = true};
    ms_code rc = store_sink_positions(r, put_sink, &st, e);
    buf_puts(out, "],\"views\":[");
    for (size_t i = 0; i < nviews && rc == MS_OK; i++) {
        uint64_t pos = views[i].pos;
        if (views[i].sink && (rc = store_sink_position(r, views[i].sink, &pos, e)) != MS_OK) break;
        buf_puts(out, i ? ",{\"view\":" : "{\"view\":");
        jw_cstr(out, views[i].view);
        buf_printf(out, ",\"status\":\"%s\"}", pos >= mark->pos ? "done" : "pending");
    }
    buf_putc(out, ']');
    return rc;
}

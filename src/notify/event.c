/*
 * event.c - an event's JSON and its Server-Sent Events frame (see event.h).
 */
#include "notify/event.h"

#include "base/json_scan.h"
#include "base/json_write.h"

#include <string.h>

void notify_event_json(const notify_event *ev, buf *out)
{
    char pid[PATIENT_ID_TEXT];
    patient_id_format(&ev->pid, pid);
    buf_printf(out, "{\"seq\":%llu,\"rule\":", (unsigned long long)ev->seq);
    jw_cstr(out, ev->rule);
    buf_puts(out, ",\"record_id\":");
    jw_string(out, ev->record_id, ev->record_id_len);
    buf_printf(out, ",\"patient_id\":\"%s\",\"field\":", pid);
    jw_cstr(out, ev->field);
    buf_puts(out, ",\"type\":");
    jw_string(out, ev->type, ev->type_len);
    buf_printf(out, ",\"version\":%u,\"ts\":", ev->version);
    jw_time(out, ev->ts_us);
    buf_puts(out, ",\"committed_at\":");
    jw_time(out, ev->committed_us);
    buf_putc(out, '}');
}

bool notify_event_rule(const char *json, size_t len, const char **rule, size_t *rule_len)
{
    json_member m[12];
    json_error je;
    int n = json_scan_object(json, len, m, 12, &je);
    for (int i = 0; i < n; i++)
        if (m[i].key_len == 4 && !memcmp(m[i].key, "rule", 4) && m[i].type == JSON_STRING) {
            *rule = m[i].val + 1; /* rule names have no escapes (rules.h: [A-Za-z0-9_.-]) */
            *rule_len = m[i].val_len - 2;
            return true;
        }
    return false;
}

bool notify_event_patient(const char *json, size_t len, patient_id *pid)
{
    json_member m[12];
    json_error je;
    int n = json_scan_object(json, len, m, 12, &je);
    for (int i = 0; i < n; i++)
        if (m[i].key_len == 10 && !memcmp(m[i].key, "patient_id", 10) && m[i].type == JSON_STRING)
            return patient_id_parse(m[i].val + 1, m[i].val_len - 2, pid);
    return false;
}

void sse_frame(buf *out, uint64_t seq, const char *json, size_t len)
{
    buf_printf(out, "id: %llu\nevent: match\ndata: ", (unsigned long long)seq);
    buf_put(out, json, len);
    buf_puts(out, "\n\n");
}

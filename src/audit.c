/*
 * audit.c - audit entries as JSON (see audit.h).
 */
#include "audit.h"

#include "json_write.h"

void audit_event_json(const audit_event *ev, buf *out)
{
    buf_puts(out, "\"time\":");
    jw_time(out, ev->time_us);
    buf_puts(out, ",\"user\":");
    jw_cstr(out, ev->user ? ev->user : "");
    buf_puts(out, ",\"role\":");
    jw_cstr(out, ev->role ? ev->role : "");
    buf_puts(out, ",\"action\":");
    jw_cstr(out, ev->action ? ev->action : "");
    buf_puts(out, ",\"resource\":");
    jw_cstr(out, ev->resource ? ev->resource : "");
    buf_puts(out, ",\"outcome\":");
    jw_cstr(out, ev->outcome ? ev->outcome : "");
    buf_puts(out, ",\"client\":");
    jw_cstr(out, ev->client ? ev->client : "");
    buf_puts(out, ",\"patient_ids\":[");
    for (uint32_t i = 0; i < ev->npatients; i++) {
        char t[PATIENT_ID_TEXT];
        patient_id_format(&ev->patients[i], t);
        if (i) buf_putc(out, ',');
        buf_printf(out, "\"%s\"", t);
    }
    buf_putc(out, ']');
}

/*
 * audit.c - audit entries as JSON (see audit.h).
 */
#include "access/audit.h"

#include "base/json_write.h"

void audit_event_json(const audit_event *ev, buf *out)
{
    const char *const members[][2] = {{"user", ev->user},         {"role", ev->role},       {"action", ev->action},
                                      {"resource", ev->resource}, {"outcome", ev->outcome}, {"client", ev->client}};
    buf_puts(out, "\"time\":");
    jw_time(out, ev->time_us);
    bool first = false; /* "time" came first */
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        jw_key(out, &first, members[i][0]);
        jw_cstr(out, members[i][1] ? members[i][1] : "");
    }
    buf_puts(out, ",\"patient_ids\":[");
    for (uint32_t i = 0; i < ev->npatients; i++) {
        char t[PATIENT_ID_TEXT];
        patient_id_format(&ev->patients[i], t);
        if (i) buf_putc(out, ',');
        buf_printf(out, "\"%s\"", t);
    }
    buf_putc(out, ']');
    if (ev->reason) {
        buf_puts(out, ",\"reason\":");
        jw_cstr(out, ev->reason);
    }
}

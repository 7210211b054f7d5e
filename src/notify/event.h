/*
 * event.h - what a match becomes: the event's JSON (as stored in the event log, served by GET /v1/events,
 * streamed and posted to webhooks) and its Server-Sent Events frame. Pure: no I/O.
 *
 * An event is {"seq","rule","record_id","patient_id","field","type","version","ts","committed_at"}: which
 * rule matched which field of which record version (ts: the record's event time; committed_at: the commit
 * that stored the version). It never holds the text that matched, nor any other value of the record (PHI):
 * only ids, the rule's and the field's names, the type, the version and two times.
 *
 * An SSE frame is "id: SEQ\nevent: match\ndata: JSON\n\n" (the JSON is one line); a client that reconnects
 * with Last-Event-ID: SEQ resumes right after it.
 */
#ifndef MS_NOTIFY_EVENT_H
#define MS_NOTIFY_EVENT_H

#include "pipeline/identity.h"
#include "base/util.h"

typedef struct {
    uint64_t seq;
    const char *rule;
    const char *record_id;
    size_t record_id_len;
    patient_id pid;
    const char *field;
    const char *type;
    size_t type_len;
    uint32_t version;
    int64_t ts_us;
    int64_t committed_us;
} notify_event;

void notify_event_json(const notify_event *ev, buf *out);
/* The rule of a stored event (its "rule" member), pointing into json; false if it has none. */
bool notify_event_rule(const char *json, size_t len, const char **rule, size_t *rule_len);
/* The event's patient (erasure deletes a patient's events); false if it names none. */
bool notify_event_patient(const char *json, size_t len, patient_id *pid);
/* Append one SSE frame of event seq (json: one line, as stored). */
void sse_frame(buf *out, uint64_t seq, const char *json, size_t len);

#endif

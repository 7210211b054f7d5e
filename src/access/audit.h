/*
 * audit.h - the audit trail: who touched which patients' PHI, when, how, with what outcome.
 *
 * Entries never carry PHI values: user, role, action (a permission such as "patients:read"), the
 * request path (ids only: identity lookups put the name in the query, which is not recorded), the
 * patient ids touched, the outcome, the client address. The store keeps them append-only and hash-
 * chained (store.h: each entry holds the SHA-256 of the one before), `medstream audit verify` re-walks
 * the chain. Ingest batches are audited in the same commit as the records they write; reads are
 * audited in the next group commit after they are answered (within milliseconds; a crash in between
 * can lose the entries of reads answered in that window, never of writes).
 *
 * Contract: audit_event_json is pure.
 */
#ifndef MS_AUDIT_H
#define MS_AUDIT_H

#include "pipeline/identity.h"
#include "base/util.h"

typedef struct {
    int64_t time_us;
    const char *user, *role; /* "" for an anonymous request (a failed login names the user tried) */
    const char *action;      /* "records:create", "patients:read", "auth:login", ... */
    const char *resource;    /* the request path, without the query */
    const char *outcome;     /* "ok", "not_found", "denied", "error" */
    const char *client;      /* peer address */
    const patient_id *patients;
    uint32_t npatients;
    const char *reason; /* why (an erasure's reason: the requester's words, which must hold no PHI); NULL: none */
} audit_event;

/* The event's fields as JSON members (no braces): "time":…,"user":…,…,"patient_ids":[…]. */
void audit_event_json(const audit_event *ev, buf *out);

#endif

/*
 * erasure.h - one patient's erasure as the API and the command line both run it: the store's erasure and
 * its audit entry in one store_write (so neither is durable without the other), and the certificate that
 * answers it (DESIGN.md "Erasure"; store/erase.c has what the store removes).
 *
 * Contract: erasure_apply runs inside a store_write (the writer's, through writer_apply, or an offline
 * command's own); erasure_certificate reads. Must never: put PHI into the audit entry or the certificate
 * (patient id, times, the requester, the reason as given: the caller tells the requester it must hold no
 * PHI), erase without the audit entry.
 */
#ifndef MS_ERASURE_H
#define MS_ERASURE_H

#include "access/audit.h"
#include "store/store.h"

#define ERASURE_REASON_MAX 500 /* characters */

typedef struct {
    patient_id pid;
    const char *reason;            /* required, 1-ERASURE_REASON_MAX characters of UTF-8 */
    const char *user, *role;       /* who asks */
    const char *client, *resource; /* from where, and what ("/v1/patients/ID", "medstream erase") */
    erase_report report;           /* out */
    bool not_found;                /* out: no such patient (audited as such; nothing erased) */
} erasure;

/* Is this a reason erasure_apply accepts? NULL, or what is wrong with it. */
const char *erasure_reason_problem(const char *reason, size_t len);

/* A writer_apply_fn (ctx: an erasure): the erasure and its audit entry in w. */
ms_code erasure_apply(void *ctx, store_write *w, ms_err *e);

/* A view of the store that follows the commit log in this process and removes an erased patient when it
 * reaches the erasure (the counters, the notifications' events): its name in the certificate, and the
 * commit-log position up to which it has (pos), or the name of the sink position it stores (sink: e.g.
 * "notify"; the position is read from the store then). */
typedef struct {
    const char *view;
    const char *sink; /* NULL: pos */
    uint64_t pos;
} erasure_view;

/* The certificate's members (no braces): "patient_id","erased_at","stores":[...],"sinks":[...],
 * "views":[...]. The store's parts are done with the erasure's commit, the data key once overwritten,
 * each sink and view once its position has reached the erasure's commit (each removes the patient
 * downstream when it gets there, before its position moves past it). Sinks: the followers of the commit
 * log with a stored position (postgres, kafka-public, lake); positions that count events rather than
 * commits (kafka-events, webhook:*) and the views' are not sinks. */
ms_code erasure_certificate(store *s, store_read *r, const patient_id *pid, const erase_mark *mark,
                            const erasure_view *views, size_t nviews, buf *out, ms_err *e);

#endif

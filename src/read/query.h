/*
 * query.h - the read side: answers to the PHI and public queries as JSON, from one read transaction.
 *
 * Contract: every function reads through a store_read (a consistent LMDB snapshot: never blocks the
 * writer) at an explicit instant `as_of` (INT64_MAX for "now"), appends JSON to out, and returns
 * MS_ENOTFOUND when the subject did not exist at that instant. Public queries read only the public
 * store (plus the PHI record index to check which version is current, never emitting PHI).
 */
#ifndef MS_QUERY_H
#define MS_QUERY_H

#include "pipeline/schema.h"
#include "store/store.h"

typedef struct {
    store *store;
    const schema *schema;
} query_ctx;

/* A patient version's fields as one JSON object (the "fields" of GET /v1/patients/{id}). */
ms_code query_patient_fields(store *s, const patient_version *pv, buf *out, ms_err *e);
/* The patient version at as_of; with event_at (INT64_MAX: none) its fields are the merge, in event-time
 * order, of the records known at as_of whose event time is <= event_at (bitemporal: both axes). */
ms_code query_patient(const query_ctx *q, store_read *r, const patient_id *pid, int64_t as_of, int64_t event_at,
                      buf *out, ms_err *e);
/* A patient's versions, oldest first, those committed at or before as_of (INT64_MAX: all), after version `after`
 * (0: from the first), at most limit of them, and next_cursor (null at the end). A version still in force at as_of
 * answers valid_to null, as the store stood then. */
#define HISTORY_CURSOR 'H' /* a history cursor's first byte: the last version answered follows, big-endian */
ms_code query_patient_history(const query_ctx *q, store_read *r, const patient_id *pid, int64_t as_of, uint32_t after,
                              uint32_t limit, buf *out, ms_err *e);
/* A history cursor's last version answered; false when the bytes are not a history cursor. */
bool query_history_cursor(const unsigned char *key, size_t len, uint32_t *after);
/* *touched (if not NULL) receives the record's patient, for the audit trail. */
ms_code query_record(const query_ctx *q, store_read *r, const char *rid, size_t rid_len, int64_t as_of, buf *out,
                     patient_id *touched, ms_err *e);

typedef struct {
    int64_t as_of;
    int64_t since, until;        /* event time range [since, until) (PHI) */
    int year_from, year_to;      /* public: published years, inclusive */
    bool by_id;                  /* public: in record id order, the year neither in the order nor in the cursor (the
                                    schema does not publish the event time's year) */
    const char *type;            /* NULL: any */
    const patient_id *pid;       /* public: NULL for any patient */
    const unsigned char *cursor; /* decoded cursor (an index key) or NULL */
    size_t cursor_len;
    uint32_t limit;
    const char *const *filter_keys; /* public: FIELD=VALUE filters */
    const char *const *filter_values;
    int nfilters;
} list_params;

ms_code query_patient_records(const query_ctx *q, store_read *r, const patient_id *pid, const list_params *p, buf *out,
                              ms_err *e);
/* The children of a parent record id (the schema's parent role) in event-time order, as the patient's
 * records list answers them ({"record_id","children":[record],"next_cursor"}); a parent that does not
 * exist (yet) may have children. *pids (malloc'd, the caller frees it) receives the distinct patients of
 * the children answered, for the audit entry. */
ms_code query_children(const query_ctx *q, store_read *r, const char *parent, size_t parent_len, const list_params *p,
                       buf *out, patient_id **pids, uint32_t *npids, ms_err *e);
ms_code query_public_patient(const query_ctx *q, store_read *r, const patient_id *pid, int64_t as_of, buf *out,
                             ms_err *e);
ms_code query_public_records(const query_ctx *q, store_read *r, const list_params *p, buf *out, ms_err *e);

/* Cursors are index keys rendered as hex. */
void cursor_encode(const void *key, size_t len, buf *out);
bool cursor_decode(const char *text, unsigned char *out, size_t cap, size_t *len);

#endif

/*
 * params.h - what the handlers (h_*.c) share: the parsing of query parameters (as_of, times, years,
 * limit, cursor, patient ids), the HTTP status of an error code, and the steps every read and every
 * PHI access repeat: a read transaction and its answer, an audit entry.
 *
 * Contract: each get_* function either sets its output and returns true, or answers the request (400
 * naming the parameter, or the store's error) and returns false; an absent parameter is not an error
 * (dispatch has already refused unknown and missing required ones, from the route table). Messages
 * name the parameter and the expected form, never the value.
 *
 * What it must never do: echo a parameter's value into an answer or an audit entry (a name or a date
 * of birth in the query is PHI), or keep state between requests.
 */
#ifndef MS_API_PARAMS_H
#define MS_API_PARAMS_H

#include "api/api_routes.h"
#include "read/query.h"

/* A cluster node (a->cluster) asked about a patient of shard: true when another node owns the shard and
 * the request was answered with 307 to the same path and query there (or 503 while no node owns it);
 * false (nothing answered) when this node owns it or is not a cluster node. */
bool redirect_to_owner(api *a, http_request *req, http_response *res, uint32_t shard);
/* The same for a patient id: its shard comes from its number (pipeline/shard.h). */
bool redirect_patient(api *a, http_request *req, http_response *res, const patient_id *pid);

/* The HTTP status for an error code (MS_OK: 200). */
int status_for(ms_code c);

/* as_of: an RFC 3339 time (parse_time_param) or a snapshot id (public reads: a snapshot id only); absent: INT64_MAX.
 * A past time settles r (store_read_settle) so that it holds every commit of that instant; r NULL: the text is
 * only parsed (a snapshot id needs r). */
bool get_as_of(http_request *req, http_response *res, store_read *r, bool snapshot_only, int64_t *as_of);
/* An RFC 3339 time in the years 1 to 9999; *out unchanged when absent. */
bool get_time(http_request *req, http_response *res, const char *name, int64_t *out);
/* A time a client gave (n bytes): RFC 3339, in the years 1 to 9999 after its offset, as event times are. */
bool parse_time_param(const char *v, size_t n, int64_t *us);
/* A sequence number (an event's, an audit entry's): decimal digits, at most 19 of them (no sign, no
 * wrap-around). */
bool parse_seq(const char *s, uint64_t *out);
/* A year (YYYY, or the year of a date or time); *out unchanged when absent. */
bool get_year(http_request *req, http_response *res, const char *name, int *out);
/* limit: 1 to 1000, default 100. */
bool get_limit(http_request *req, http_response *res, uint32_t *limit);
/* A patient id (a path segment or a parameter's value). */
bool get_pid(const char *text, http_response *res, patient_id *pid);

typedef struct {
    unsigned char key[1024];
    size_t len;
} cursor_buf;

/* cursor: as returned by a list; len 0 when absent. */
bool get_cursor(http_request *req, http_response *res, cursor_buf *c);

/* A read transaction; false (answered) on failure. */
bool begin_read(api *a, http_response *res, store_read **r);
/* A read transaction and the request's as_of instant; false (already answered) on failure. */
bool begin_read_at(api *a, http_request *req, http_response *res, bool snapshot_only, store_read **r, int64_t *as_of);
/* A paged event-time list's parameters (type, since, until, limit, cursor into c, as_of) and its read
 * transaction; false (already answered) on a bad one. */
bool begin_list_read(api *a, http_request *req, http_response *res, list_params *p, cursor_buf *c, store_read **r);
/* End the read and answer: out on MS_OK (taken), else the error; observes the read time since t0. */
void finish_read(store_read *r, ms_code rc, ms_err *e, buf *out, http_response *res, double t0);

/* An audit entry for a request that touched (or tried to touch) PHI; committed with the next group. */
void audit_request(api *a, const http_request *req, const char *action, const patient_id *pid, const char *outcome);
/* The audit outcome of a read: ok, not_found or error. */
const char *outcome_of(ms_code rc);

#endif

/*
 * api_routes.h - the HTTP API v1's route table and its dispatch: the one place that says, for each
 * route, its method and path, the permission it needs, whether it reads PHI, the query parameters and
 * request content types it accepts, what it answers, a one-line description, and its handler. From the
 * table come dispatch (api_routes.c), the permission check, the query and Content-Type checks, and the
 * OpenAPI document (openapi.c, served at GET /v1/openapi.json and checked in as docs/openapi.json).
 * Handlers live by resource in h_*.c (declared in handlers.h).
 *
 * Contract: every route declares its permission (PERMISSION_NONE is explicit; a unit test checks that
 * each names a permission of access.c's table) and a description. Dispatch answers, in this order:
 * 404 for an unknown path, 405 for a known path with another method, 401/403 for the token and the
 * permission, 503 for a PHI read while audit entries cannot be stored, 400 for too many, unknown or
 * missing required query parameters, 415 for a body route without one of its content types; only then
 * is the body read (http_server.c: its limits) and the handler run. Error messages never contain PHI.
 *
 * What it must never do: let a route run without its permission checked first, or accept a query
 * parameter the table does not name (a typo must not silently widen a query).
 *
 * (The header keeps the name api_routes.h because main.c includes it for the api context and
 * api_http_handler.)
 */
#ifndef MS_API_ROUTES_H
#define MS_API_ROUTES_H

#include "access/access.h"
#include "access/refusals.h"
#include "api/http_server.h"
#include "pipeline/schema.h"
#include "store/store.h"
#include "ingest/writer.h"
#include "export/export_jobs.h"
#include "notify/notifier.h"
#include "views/counters.h"

typedef struct {
    store *store;
    writer *writer;
    const schema *schema;
    size_t max_record;
    size_t max_body;                 /* the request body limit (--max-body): a CSV body converts to at most twice it */
    int64_t token_ttl_s;             /* lifetime of issued tokens */
    const char *data_dir;            /* the data directory: admin.password goes once the admin's password changes */
    export_jobs *exports;            /* POST /v1/exports runs here (NULL: exports are refused) */
    notifier *notifier;              /* rules, events, subscriptions (NULL: their routes answer 503) */
    counters *counters;              /* the rolling-window counters (/v1/counters) */
    struct cluster *_Atomic cluster; /* a cluster node (ingest/cluster.h), set once its consumer runs: reads of
                                        other nodes' shards redirect (NULL: not a cluster node, or not yet) */
    refusal_tally *refusals;         /* requests refused without a known user, audited per address and window
                                        (NULL: not audited: a context without a server's writer, a unit test's) */
    _Atomic int64_t refusals_swept_us; /* the last look for closed windows (once a second at most) */
} api;

/* Audit the windows of refusals without a known user that have closed (all of them: the server's stop,
 * before the writer's); a request with a permission does it once a second. */
void api_audit_refusals(api *a, bool all);
/* A refusal that costs its sender nothing (no token or an unknown one; a login refused by the limiter,
 * user: the account's name or "(unknown user)"): the first from the request's address in a window is
 * audited as it is, the rest in the window's summary (refusals.h). */
void api_audit_free_refusal(api *a, const http_request *req, const char *user, const char *action, const char *why);

/* The audit entries of a server export (export_jobs_audit_fn; ctx is the api): queued to the writer, a
 * thousand patient ids an entry, and made durable (writer_sync) before the export becomes visible. */
ms_code api_export_audit(void *ctx, const char *user, const char *role, const char *client, const char *export_id,
                         export_scope scope, const patient_id *pids, size_t npids, ms_err *e);

typedef void (*route_handler)(api *a, http_request *req, http_response *res);

/* The shape of a query parameter's value, for the OpenAPI document (each handler parses its own). */
typedef enum {
    PARAM_TEXT,  /* a string */
    PARAM_TIME,  /* an RFC 3339 time */
    PARAM_DATE,  /* YYYY-MM-DD */
    PARAM_UUID,  /* a patient id */
    PARAM_LIMIT, /* an integer from 1 to 1000, default 100 */
} param_kind;

typedef struct {
    const char *name;
    param_kind kind;
    bool required; /* dispatch answers 400 when it is absent */
    const char *description;
} route_param;

#define ROUTE_PHI_READ 1u       /* reads PHI: audited, and refused (503) while audit entries cannot be stored */
#define ROUTE_BULK 2u           /* a bulk request (ingest): served at a lower CPU priority (http_server.c) */
#define ROUTE_PUBLIC_FILTERS 4u /* besides its parameters, FIELD=VALUE for any public field of the schema */
#define ROUTE_QUERY_IGNORED 8u  /* query arguments are ignored, never refused (as these routes always did) */

typedef struct {
    const char *method;
    const char *pattern;    /* "/v1/patients/{patient_id}/history": each {name} captures one path segment */
    const char *permission; /* "resource:action", PERMISSION_NONE or PERMISSION_AUTHENTICATED (access.h) */
    route_handler handler;
    unsigned flags;                  /* ROUTE_* */
    const char *description;         /* one line: what the route does */
    const route_param *const *query; /* the query parameters it accepts, NULL-terminated; NULL: none */
    const char *const *body_types;   /* the request Content-Types it accepts, NULL-terminated; NULL: no body */
    const char *body;                /* the request body, one line (with body_types) */
    int status;                      /* the status of success */
    const char *answer;              /* the answer of success, one line */
    const char *answer_type;         /* its Content-Type; NULL: application/json */
} route;

extern const route api_route_table[];
extern const size_t api_route_count;

/* Does the route name this query parameter? */
bool route_names_param(const route *rt, const char *name);

/* The http_handler that dispatches through the table. */
http_handler api_http_handler(api *a);
/* Run the handler of the route on_headers chose (req->route): the second half of every http_handler
 * built on the table (the metrics listener's too). */
void api_handle(void *ctx, http_request *req, http_response *res);

#endif

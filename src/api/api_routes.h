/*
 * api_routes.h - the HTTP API v1: one route table (method, path pattern, permission, handler) and the
 * handlers, which parse and validate parameters, then call the pipeline (ingest) or query.c (reads).
 *
 * Contract: every route declares its permission in the table (PERMISSION_NONE is explicit); a test walks
 * the table to check that each names a permission of access.c's table. Bad parameters get 400 naming the parameter;
 * unknown paths 404; known paths with another method 405. Error messages never contain PHI values.
 */
#ifndef MS_API_ROUTES_H
#define MS_API_ROUTES_H

#include "access/access.h"
#include "api/http_server.h"
#include "pipeline/schema.h"
#include "store/store.h"
#include "ingest/writer.h"

typedef struct {
    store *store;
    writer *writer;
    const schema *schema;
    size_t max_record;
    int64_t token_ttl_s; /* lifetime of issued tokens */
    const char *data_dir; /* the data directory: admin.password goes once the admin's password changes */
} api;

typedef void (*route_handler)(api *a, http_request *req, http_response *res);

#define ROUTE_PHI_READ 1u /* reads PHI: audited, and refused (503) while audit entries cannot be stored */

typedef struct {
    const char *method;
    const char *pattern;    /* "/v1/patients/{}/history": {} captures one path segment */
    const char *permission; /* "resource:action" or PERMISSION_NONE (access.h) */
    route_handler handler;
    unsigned flags; /* ROUTE_PHI_READ */
} route;

extern const route api_route_table[];
extern const size_t api_route_count;

/* The http_handler that dispatches through the table. */
http_handler api_http_handler(api *a);

#endif

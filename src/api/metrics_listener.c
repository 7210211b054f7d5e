/*
 * metrics_listener.c - GET /metrics alone, without a token (see metrics_listener.h).
 *
 * DESIGN: dispatch is one comparison; the answer comes from the route table's GET /metrics entry, found
 * once, so the main port's /metrics and this one can never say different things. The access log names
 * the request by the same route pattern, with user "-".
 */
#include "api/metrics_listener.h"

#include <string.h>

#define METRICS_PATH "/metrics"

/* The index of GET /metrics in the route table, or -1. */
static int metrics_route(void)
{
    for (size_t i = 0; i < api_route_count; i++)
        if (strcmp(api_route_table[i].method, "GET") == 0 && strcmp(api_route_table[i].pattern, METRICS_PATH) == 0)
            return (int)i;
    return -1;
}

static int on_headers(void *ctx, http_request *req, http_response *res)
{
    (void)ctx;
    int route = metrics_route();
    if (route < 0 || strcmp(req->path, METRICS_PATH) != 0) {
        http_error(res, 404, "this listener serves only GET " METRICS_PATH);
        return 404;
    }
    req->route_pattern = METRICS_PATH;
    if (strcmp(req->method, "GET") != 0) {
        http_error(res, 405, "method %s not allowed on this path", req->method);
        return 405;
    }
    req->route = route;
    return 0;
}

http_handler metrics_listener_handler(api *a)
{
    http_handler h = {on_headers, api_handle, a};
    return h;
}

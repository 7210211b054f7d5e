/*
 * metrics_listener.h - the handler of serve's second listener (--metrics-listen HOST:PORT): GET /metrics
 * without a token, so that Prometheus scrapes with no admin token that expires; nothing else.
 *
 * Contract: answers GET /metrics with the same text as the main port's /metrics (the route table's own
 * handler, so there is one source of what /metrics says); every other path is 404 and another method
 * on /metrics 405. The caller decides where it listens: main.c refuses an address that is not loopback
 * unless --metrics-listen-any says so, since anyone who reaches the port reads the figures.
 *
 * What it must never do: serve any other route of the API (it checks no token at all).
 */
#ifndef MS_METRICS_LISTENER_H
#define MS_METRICS_LISTENER_H

#include "api/api_routes.h"

/* The http_handler of the metrics listener, over the same api as the main port. */
http_handler metrics_listener_handler(api *a);

#endif

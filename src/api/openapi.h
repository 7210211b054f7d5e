/*
 * openapi.h - the OpenAPI 3.1 document of the HTTP API, generated from the route table
 * (api_routes.c): served at GET /v1/openapi.json, checked in as docs/openapi.json (`make openapi`
 * regenerates it; an end-to-end test fails when the two disagree).
 *
 * Contract: the document is a function of the table alone (no time, host, version or configuration in
 * it), so every build with the same table writes the same bytes: 2-space indented JSON ending in a
 * newline. Each route becomes one operation with its description, its permission (x-permission, and a
 * bearer security requirement unless the permission is "none"), x-phi-read when it reads PHI, its path
 * and query parameters, its request content types, its success answer, and the error answers dispatch
 * itself gives from the table (400, 401, 403, 415, 503), each {"error": string}.
 *
 * What it must never do: describe a route, a parameter or a content type that is not in the table.
 */
#ifndef MS_API_OPENAPI_H
#define MS_API_OPENAPI_H

#include "base/util.h"

/* Append the document to out. */
void openapi_write(buf *out);

#endif

/*
 * openapi.c - the OpenAPI 3.1 document, written from the route table (see openapi.h).
 *
 * DESIGN: one pass over the table per distinct path (in the table's order of first appearance), one
 * operation per route of that path. A route's {name} segments become required path parameters
 * (patient ids with format uuid); its query parameters, their kinds and descriptions come from its
 * route_param list, and ROUTE_PUBLIC_FILTERS adds one free-form parameter for FIELD=VALUE. The error
 * answers listed for an operation are those dispatch gives from the table's columns (400 for the query,
 * 401/403 for the permission, 415 for the body types, 503 for a PHI read), plus a default: handlers
 * answer other errors with the same {"error": string} shape. The writer below indents by two spaces,
 * so that docs/openapi.json reads and diffs well.
 *
 * What it must never do: take anything but the table as input (the document must be the same for
 * every server built from the same source).
 */
#include "api/openapi.h"

#include "api/api_routes.h"
#include "base/json_write.h"

#include <ctype.h>
#include <string.h>

/* ---- an indenting JSON writer ---- */

typedef struct {
    buf *out;
    int depth;
    bool first; /* nothing written yet in the current object or array */
} doc;

static void newline(doc *d)
{
    buf_putc(d->out, '\n');
    for (int i = 0; i < d->depth; i++)
        buf_puts(d->out, "  ");
}

/* The separator and indentation before a member or an element; the key, for a member. */
static void next(doc *d, const char *key)
{
    if (!d->first) buf_putc(d->out, ',');
    d->first = false;
    newline(d);
    if (key) {
        jw_cstr(d->out, key);
        buf_puts(d->out, ": ");
    }
}

static void enter(doc *d, const char *key, char bracket)
{
    next(d, key);
    buf_putc(d->out, bracket);
    d->depth++;
    d->first = true;
}

static void leave(doc *d, char bracket)
{
    d->depth--;
    if (!d->first) newline(d);
    buf_putc(d->out, bracket);
    d->first = false;
}

static void str(doc *d, const char *key, const char *value)
{
    next(d, key);
    jw_cstr(d->out, value);
}

static void raw(doc *d, const char *key, const char *json)
{
    next(d, key);
    buf_puts(d->out, json);
}

/* ---- the document ---- */

static void param_schema(doc *d, param_kind kind)
{
    enter(d, "schema", '{');
    switch (kind) {
    case PARAM_TEXT: str(d, "type", "string"); break;
    case PARAM_TIME:
        str(d, "type", "string");
        str(d, "format", "date-time");
        break;
    case PARAM_DATE:
        str(d, "type", "string");
        str(d, "format", "date");
        break;
    case PARAM_UUID:
        str(d, "type", "string");
        str(d, "format", "uuid");
        break;
    case PARAM_LIMIT:
        str(d, "type", "integer");
        raw(d, "minimum", "1");
        raw(d, "maximum", "1000");
        raw(d, "default", "100");
        break;
    }
    leave(d, '}');
}

static void parameters(doc *d, const route *rt)
{
    bool any = strchr(rt->pattern, '{') || (rt->query && rt->query[0]) || (rt->flags & ROUTE_PUBLIC_FILTERS);
    if (!any) return;
    enter(d, "parameters", '[');
    for (const char *p = strchr(rt->pattern, '{'); p; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(end - p - 1), p + 1);
        enter(d, NULL, '{');
        str(d, "name", name);
        str(d, "in", "path");
        raw(d, "required", "true");
        param_schema(d, strcmp(name, "patient_id") == 0 ? PARAM_UUID : PARAM_TEXT);
        leave(d, '}');
    }
    for (const route_param *const *q = rt->query; q && *q; q++) {
        enter(d, NULL, '{');
        str(d, "name", (*q)->name);
        str(d, "in", "query");
        str(d, "description", (*q)->description);
        if ((*q)->required) raw(d, "required", "true");
        param_schema(d, (*q)->kind);
        leave(d, '}');
    }
    if (rt->flags & ROUTE_PUBLIC_FILTERS) {
        enter(d, NULL, '{');
        str(d, "name", "filters");
        str(d, "in", "query");
        str(d, "description",
            "FIELD=VALUE: only items whose public field FIELD is VALUE (a string, or the literal of a number or "
            "boolean); a field the schema does not make public is 400");
        str(d, "style", "form");
        raw(d, "explode", "true");
        enter(d, "schema", '{');
        str(d, "type", "object");
        enter(d, "additionalProperties", '{');
        str(d, "type", "string");
        leave(d, '}');
        leave(d, '}');
        leave(d, '}');
    }
    leave(d, ']');
}

static void request_body(doc *d, const route *rt)
{
    if (!rt->body_types) return;
    enter(d, "requestBody", '{');
    str(d, "description", rt->body);
    raw(d, "required", "true");
    enter(d, "content", '{');
    for (const char *const *t = rt->body_types; *t; t++) {
        enter(d, *t, '{');
        leave(d, '}');
    }
    leave(d, '}');
    leave(d, '}');
}

static void error_ref(doc *d, const char *status, const char *name)
{
    char ref[96];
    snprintf(ref, sizeof ref, "#/components/responses/%s", name);
    enter(d, status, '{');
    str(d, "$ref", ref);
    leave(d, '}');
}

static void responses(doc *d, const route *rt)
{
    char status[8];
    snprintf(status, sizeof status, "%d", rt->status);
    enter(d, "responses", '{');
    enter(d, status, '{');
    str(d, "description", rt->answer);
    if (rt->status != 204) {
        enter(d, "content", '{');
        enter(d, rt->answer_type ? rt->answer_type : "application/json", '{');
        enter(d, "schema", '{');
        str(d, "type", rt->answer_type ? "string" : "object");
        leave(d, '}');
        leave(d, '}');
        leave(d, '}');
    }
    leave(d, '}');
    bool open_route = strcmp(rt->permission, PERMISSION_NONE) == 0;
    if (!(rt->flags & ROUTE_QUERY_IGNORED)) error_ref(d, "400", "BadRequest");
    if (!open_route) error_ref(d, "401", "Unauthorized");
    if (!open_route && strcmp(rt->permission, PERMISSION_AUTHENTICATED) != 0) error_ref(d, "403", "Forbidden");
    if (rt->body_types) error_ref(d, "415", "UnsupportedMediaType");
    if (rt->flags & ROUTE_PHI_READ) error_ref(d, "503", "AuditUnavailable");
    error_ref(d, "default", "Error");
    leave(d, '}');
}

static void operation(doc *d, const route *rt)
{
    char method[8] = ""; /* OpenAPI names operations by the method in lower case */
    for (size_t i = 0; rt->method[i] && i < sizeof method - 1; i++)
        method[i] = (char)tolower((unsigned char)rt->method[i]);
    enter(d, method, '{');
    str(d, "description", rt->description);
    str(d, "x-permission", rt->permission);
    if (rt->flags & ROUTE_PHI_READ) raw(d, "x-phi-read", "true");
    enter(d, "security", '[');
    if (strcmp(rt->permission, PERMISSION_NONE) != 0) {
        enter(d, NULL, '{');
        enter(d, "bearer", '[');
        leave(d, ']');
        leave(d, '}');
    }
    leave(d, ']');
    parameters(d, rt);
    request_body(d, rt);
    responses(d, rt);
    leave(d, '}');
}

static void error_response(doc *d, const char *name, const char *description)
{
    enter(d, name, '{');
    str(d, "description", description);
    enter(d, "content", '{');
    enter(d, "application/json", '{');
    enter(d, "schema", '{');
    str(d, "$ref", "#/components/schemas/Error");
    leave(d, '}');
    leave(d, '}');
    leave(d, '}');
    leave(d, '}');
}

static void components(doc *d)
{
    enter(d, "components", '{');
    enter(d, "securitySchemes", '{');
    enter(d, "bearer", '{');
    str(d, "type", "http");
    str(d, "scheme", "bearer");
    str(d, "description", "a token from POST /v1/auth/token, sent as Authorization: Bearer <token>");
    leave(d, '}');
    leave(d, '}');
    enter(d, "schemas", '{');
    enter(d, "Error", '{');
    str(d, "type", "object");
    enter(d, "required", '[');
    str(d, NULL, "error");
    leave(d, ']');
    enter(d, "properties", '{');
    enter(d, "error", '{');
    str(d, "type", "string");
    str(d, "description", "what went wrong, naming the parameter, field or line; never a PHI value");
    leave(d, '}');
    leave(d, '}');
    raw(d, "additionalProperties", "false");
    leave(d, '}');
    leave(d, '}');
    enter(d, "responses", '{');
    error_response(d, "BadRequest",
                   "a query parameter the route does not name, a required one missing, or a bad value");
    error_response(d, "Unauthorized", "no token, or a malformed, unknown, revoked or expired one");
    error_response(d, "Forbidden", "the token's role lacks the route's permission (x-permission)");
    error_response(d, "UnsupportedMediaType", "the request's Content-Type is not one the route takes");
    error_response(d, "AuditUnavailable", "PHI reads are refused while their audit entries cannot be stored");
    error_response(d, "Error", "any other refusal or failure, with its status");
    leave(d, '}');
    leave(d, '}');
}

void openapi_write(buf *out)
{
    doc d = {out, 0, true};
    buf_putc(out, '{');
    d.depth = 1;
    str(&d, "openapi", "3.1.0");
    enter(&d, "info", '{');
    str(&d, "title", "medstream HTTP API");
    str(&d, "version", "1");
    str(&d, "description",
        "Generated from the route table (src/api/api_routes.c); docs/API.md has the exact answers. Every "
        "error is {\"error\": message}. x-permission names the permission the caller's role must hold "
        "(none: no token; authenticated: any valid token); x-phi-read marks reads of PHI, each audited.");
    leave(&d, '}');
    enter(&d, "paths", '{');
    for (size_t i = 0; i < api_route_count; i++) {
        const char *path = api_route_table[i].pattern;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(api_route_table[k].pattern, path) == 0;
        if (seen) continue;
        enter(&d, path, '{');
        for (size_t k = i; k < api_route_count; k++)
            if (strcmp(api_route_table[k].pattern, path) == 0) operation(&d, &api_route_table[k]);
        leave(&d, '}');
    }
    leave(&d, '}');
    components(&d);
    leave(&d, '}');
    buf_putc(out, '\n');
}

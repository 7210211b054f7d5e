/*
 * test_routes.c - the HTTP route table (api/api_routes.c) is complete and consistent, dispatch takes its
 * answers from the table's columns, and the OpenAPI document (api/openapi.c) describes every route.
 *
 * The table: every route has a known method, a well-formed path, a permission of access.c's table, a
 * one-line description, a success status and answer; no method and path twice; query parameters named
 * once and described; content types for every route with a body, and a body for every POST, PUT and
 * PATCH but POST /v1/snapshots. Dispatch (through api_http_handler, on the routes that need no token,
 * so no store is opened): 404, 405, 415 with the table's content types, 400 for a parameter the route
 * does not name, and query arguments ignored where the table says so. The document: valid JSON,
 * OpenAPI 3.1.0, the same bytes every time, each route's path, method, description and permission.
 */
#include "unit.h"

#include "access/access.h"
#include "api/api_routes.h"
#include "api/openapi.h"
#include "base/json_scan.h"
#include "base/json_write.h"

#include <ctype.h>
#include <string.h>

static bool is_one_line(const char *s) { return s && *s && !strchr(s, '\n'); }

static void test_every_route_is_complete(void **state)
{
    (void)state;
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    assert_true(api_route_count > 0);
    for (size_t i = 0; i < api_route_count; i++) {
        const route *r = &api_route_table[i];
        bool method_known = false;
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
            method_known |= r->method && !strcmp(r->method, methods[m]);
        if (!method_known) fail_msg("route %zu: unknown method", i);
        if (!r->pattern || r->pattern[0] != '/') fail_msg("route %s: the path must begin with /", r->method);
        if (!r->handler) fail_msg("route %s %s: no handler", r->method, r->pattern);
        if (!access_permission_valid(r->permission))
            fail_msg("route %s %s: permission '%s' is not in access.c's table", r->method, r->pattern,
                     r->permission ? r->permission : "(null)");
        if (!is_one_line(r->description)) fail_msg("route %s %s: no one-line description", r->method, r->pattern);
        if (r->status < 200 || r->status > 299 || !is_one_line(r->answer))
            fail_msg("route %s %s: no success status and answer", r->method, r->pattern);

        /* {name} captures: whole segments, named, at most HTTP_MAX_PARAMS */
        int captures = 0;
        for (const char *p = strchr(r->pattern, '{'); p; p = strchr(p + 1, '{')) {
            const char *end = strchr(p, '}');
            if (p[-1] != '/' || !end || end == p + 1 || (end[1] && end[1] != '/') || memchr(p, '/', (size_t)(end - p)))
                fail_msg("route %s %s: a {name} must be a whole path segment", r->method, r->pattern);
            captures++;
        }
        if (captures > HTTP_MAX_PARAMS) fail_msg("route %s %s: too many path parameters", r->method, r->pattern);

        for (size_t k = 0; k < i; k++)
            if (!strcmp(api_route_table[k].method, r->method) && !strcmp(api_route_table[k].pattern, r->pattern))
                fail_msg("route %s %s: in the table twice", r->method, r->pattern);

        for (const route_param *const *q = r->query; q && *q; q++) {
            if (!(*q)->name || !(*q)->name[0] || !is_one_line((*q)->description))
                fail_msg("route %s %s: a query parameter without a name or description", r->method, r->pattern);
            for (const route_param *const *o = r->query; o < q; o++)
                if (!strcmp((*o)->name, (*q)->name))
                    fail_msg("route %s %s: query parameter %s twice", r->method, r->pattern, (*q)->name);
        }
        if ((r->flags & ROUTE_QUERY_IGNORED) && (r->query || (r->flags & ROUTE_PUBLIC_FILTERS)))
            fail_msg("route %s %s: ignores its query, yet names parameters", r->method, r->pattern);

        /* a body comes with its content types; POST, PUT and PATCH take one unless they say they do not */
        bool has_types = r->body_types && r->body_types[0];
        if (has_types != is_one_line(r->body))
            fail_msg("route %s %s: a body needs both content types and a description", r->method, r->pattern);
        bool bodyless_post = !strcmp(r->method, "POST") && !strcmp(r->pattern, "/v1/snapshots");
        bool writes = !strcmp(r->method, "POST") || !strcmp(r->method, "PUT") || !strcmp(r->method, "PATCH");
        if (writes && !bodyless_post && !has_types)
            fail_msg("route %s %s: takes a body but names no content type", r->method, r->pattern);
        /* a DELETE takes no body, but an erasure states its reason (DESIGN.md: DELETE /v1/patients/{id} {"reason"}) */
        bool erasure = !strcmp(r->method, "DELETE") && !strcmp(r->pattern, "/v1/patients/{patient_id}");
        if (erasure && !has_types) fail_msg("route %s %s: the erasure's reason is its body", r->method, r->pattern);
        if (!writes && !erasure && has_types) fail_msg("route %s %s: a body on %s", r->method, r->pattern, r->method);
    }
}

/* ---- dispatch ---- */

typedef struct {
    http_request req;
    http_response res;
    int refused;
} dispatched;

/* Headers-time dispatch of a request that carries no token; the answer's message in res.body. */
static dispatched *dispatch(const char *method, const char *path, const char *content_type, int nargs)
{
    static api a; /* no store or writer: only routes that need no token get past authorization */
    static dispatched d;
    memset(&d, 0, sizeof d);
    d.req.method = method;
    d.req.path = path;
    d.req.content_type = content_type;
    static char keys[HTTP_MAX_ARGS][16];
    for (int i = 0; i < nargs && i < HTTP_MAX_ARGS; i++) {
        snprintf(keys[i], sizeof keys[i], "x%d", i);
        d.req.args[i] = (http_arg){keys[i], "1"};
    }
    d.req.nargs = nargs < HTTP_MAX_ARGS ? nargs : HTTP_MAX_ARGS;
    d.req.too_many_args = nargs > HTTP_MAX_ARGS;
    http_handler h = api_http_handler(&a);
    d.refused = h.on_headers(h.ctx, &d.req, &d.res);
    for (int i = 0; i < d.req.nparams; i++)
        free(d.req.params[i]);
    buf_putc(&d.res.body, 0);
    return &d;
}

static void assert_answer(dispatched *d, int status, const char *message_part)
{
    if (d->refused != status)
        fail_msg("%s %s: expected %d, got %d (%s)", d->req.method, d->req.path, status, d->refused,
                 d->res.body.data ? d->res.body.data : "");
    if (message_part && !strstr(d->res.body.data, message_part))
        fail_msg("%s %s: '%s' not in %s", d->req.method, d->req.path, message_part, d->res.body.data);
    buf_free(&d->res.body);
}

static void test_dispatch_answers_from_the_table(void **state)
{
    (void)state;
    assert_answer(dispatch("GET", "/v1/nowhere", NULL, 0), 404, "no such endpoint");
    assert_answer(dispatch("POST", "/healthz", NULL, 0), 405, "method POST not allowed");
    assert_answer(dispatch("GET", "/healthz", NULL, 0), 0, NULL);
    /* the login's body types: application/json, parameters allowed */
    assert_answer(dispatch("POST", "/v1/auth/token", NULL, 0), 415, "Content-Type must be application/json\"");
    assert_answer(dispatch("POST", "/v1/auth/token", "text/plain", 0), 415, "application/json");
    assert_answer(dispatch("POST", "/v1/auth/token", "application/jsonl", 0), 415, NULL);
    assert_answer(dispatch("POST", "/v1/auth/token", " application/json ; charset=utf-8", 0), 0, NULL);
    assert_answer(dispatch("POST", "/v1/auth/token", "APPLICATION/JSON", 0), 0, NULL);
    /* the query: ignored where the table says so, else only the names it lists */
    assert_answer(dispatch("GET", "/healthz", NULL, 3), 0, NULL);
    assert_answer(dispatch("GET", "/v1/openapi.json", NULL, 0), 0, NULL);
    assert_answer(dispatch("GET", "/v1/openapi.json", NULL, 1), 400, "unknown query parameter 'x0'");
    assert_answer(dispatch("GET", "/healthz", NULL, HTTP_MAX_ARGS + 1), 400, "too many query parameters");
    /* the console's files (issue 14): no token, the query ignored; an unknown asset is the handler's 404 */
    assert_answer(dispatch("GET", "/", NULL, 2), 0, NULL);
    assert_answer(dispatch("GET", "/assets/app.js", NULL, 1), 0, NULL);
    assert_answer(dispatch("POST", "/", NULL, 0), 405, "method POST not allowed");
    assert_answer(dispatch("GET", "/assets/", NULL, 0), 404, "no such endpoint");
    assert_answer(dispatch("GET", "/assets/a/b.js", NULL, 0), 404, "no such endpoint");
    assert_answer(dispatch("GET", "/v1/me", NULL, 0), 401, NULL);
    /* a route that needs a token is refused before anything else of the request is looked at */
    assert_answer(dispatch("GET", "/v1/users/x", "text/plain", 1), 401, NULL);
}

/* ---- the OpenAPI document ---- */

static void test_openapi_describes_every_route(void **state)
{
    (void)state;
    buf doc = {0}, again = {0};
    openapi_write(&doc);
    openapi_write(&again);
    assert_int_equal(doc.len, again.len);
    assert_memory_equal(doc.data, again.data, doc.len);

    json_member top[8];
    json_error je;
    int n = json_scan_object(doc.data, doc.len, top, 8, &je);
    if (n < 0) fail_msg("the document is not a JSON object: %s at byte %zu", je.msg, je.offset);
    assert_true(doc.data[doc.len - 1] == '\n');
    assert_non_null(strstr(doc.data, "\n  \"openapi\": \"3.1.0\",\n"));

    buf_putc(&doc, 0);
    for (size_t i = 0; i < api_route_count; i++) {
        const route *r = &api_route_table[i];
        buf want = {0};
        /* the path, then the operation (its method in lower case) with the route's description */
        buf_puts(&want, "\n    ");
        jw_cstr(&want, r->pattern);
        buf_puts(&want, ": {");
        buf_putc(&want, 0);
        const char *path = strstr(doc.data, want.data);
        if (!path) fail_msg("route %s %s: its path is not in the document", r->method, r->pattern);
        want.len = 0;
        buf_puts(&want, "\n      \"");
        for (const char *m = r->method; *m; m++)
            buf_putc(&want, (char)tolower((unsigned char)*m));
        buf_puts(&want, "\": {\n        \"description\": ");
        jw_cstr(&want, r->description);
        buf_puts(&want, ",\n        \"x-permission\": ");
        jw_cstr(&want, r->permission);
        buf_putc(&want, 0);
        const char *op = strstr(path, want.data);
        const char *next_path = strstr(path + 1, "\n    \"");
        if (!op || (next_path && op > next_path))
            fail_msg("route %s %s: its operation, description or permission is not in the document", r->method,
                     r->pattern);
        for (const route_param *const *q = r->query; q && *q; q++) {
            want.len = 0;
            buf_puts(&want, "\"name\": ");
            jw_cstr(&want, (*q)->name);
            buf_puts(&want, ",\n            \"in\": \"query\"");
            buf_putc(&want, 0);
            const char *p = strstr(op, want.data);
            const char *next_op = strstr(op + 1, "\n      \"");
            if (!p || (next_op && p > next_op))
                fail_msg("route %s %s: query parameter %s is not in the document", r->method, r->pattern, (*q)->name);
        }
        buf_free(&want);
    }
    buf_free(&doc);
    buf_free(&again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_is_complete),
        cmocka_unit_test(test_dispatch_answers_from_the_table),
        cmocka_unit_test(test_openapi_describes_every_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

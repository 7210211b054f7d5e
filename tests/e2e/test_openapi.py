# End-to-end tests of the OpenAPI document over real HTTP (issue 10): GET /v1/openapi.json answers
# without a token, is valid JSON, OpenAPI 3.1.0, with the bearer security scheme and the error schema
# {"error": string}; it is equal to the checked-in docs/openapi.json (`make openapi` regenerates it);
# every route of the C route table (read from src/api/api_routes.c) is in it with a non-empty
# description and its permission, and nothing else is; and it agrees with the running server: each
# path and method answers something other than 404/405, without a token exactly the open routes get
# past 401, each documented query parameter is accepted and an undocumented one refused, required
# parameters are required, and each route with a body refuses other content types naming its own.
#
# Run: /usr/bin/python3 tests/e2e/test_openapi.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import json
import os
import re
import socket
import uuid

import harness as H
from harness import check, eq, short, test

DOC_PATH = os.path.join(H.REPO_ROOT, "docs", "openapi.json")
TABLE_PATH = os.path.join(H.REPO_ROOT, "src", "api", "api_routes.c")
METHODS = ("get", "post", "put", "patch", "delete")
_server = []


def server():
    if not _server:
        s = H.Server(name="openapi")
        s.start()
        _server.append(s)
    return _server[0]


@H.on_exit
def _stop():
    for s in _server:
        s.stop()


def table_routes():
    """(METHOD, pattern, permission) of every route of the C route table, read from its source."""
    with open(TABLE_PATH) as f:
        src = f.read()
    table = src[src.index("const route api_route_table[] = {"):src.index("const size_t api_route_count")]
    rows = re.findall(r'\.method = "(\w+)",\s*\.pattern = "([^"]+)",\s*\.permission = ([^,]+),', table)
    eq(len(rows), table.count(".method ="), "routes read from the table's source")
    named = {"PERMISSION_NONE": "none", "PERMISSION_AUTHENTICATED": "authenticated"}
    return [(m, p, named.get(x.strip(), x.strip().strip('"'))) for m, p, x in rows]


def served():
    r = H.http_request(server().port, "GET", "/v1/openapi.json")  # no token
    eq(r.status, 200, "GET /v1/openapi.json without a token (%s)" % short(r.text))
    check(r.headers.get("content-type", "").startswith("application/json"),
          "Content-Type of the document: %r" % r.headers.get("content-type"))
    return r


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def console_asset():
    """The served name of one of the console's files (issue 14), as its page names it."""
    page = H.http_request(server().port, "GET", "/").text
    m = re.search(r'/assets/([\w.-]+)"', page)
    check(m, "the console's page names no asset: %s" % short(page))
    return m.group(1)


def concrete(path):
    """The path with each {name} replaced by a value of its kind."""
    values = {"patient_id": str(uuid.uuid4()), "user": "admin"}
    if "{asset}" in path:
        values["asset"] = console_asset()
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "openapi-probe"), path)


def sample(param):
    schema = param.get("schema", {})
    if schema.get("type") == "integer":
        return "5"
    return {"date": "1980-01-01", "date-time": "2024-01-01T00:00:00Z",
            "uuid": str(uuid.uuid4())}.get(schema.get("format"), "x")


def streams(op):
    """A route that answers a stream (Server-Sent Events): it never ends, so only its head is read."""
    return "text/event-stream" in op.get("responses", {}).get("200", {}).get("content", {})


def get_head(s, url):
    """GET url on a raw socket: the status and, unless it is 200 (a stream that would never end), the body."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=H.HTTP_TIMEOUT)
    try:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (url, s.token)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            c = sock.recv(65536)
            if not c:
                break
            data += c
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        while status != 200 and length and len(body) < int(length.group(1)):
            body += sock.recv(65536)
        return H.Response(status, {}, body if status != 200 else b"")
    finally:
        sock.close()


@test
def test_served_without_a_token_as_openapi_3_1():
    doc = served().json()
    eq(doc.get("openapi"), "3.1.0", "openapi")
    check(doc.get("info", {}).get("title") and doc["info"].get("version"), "info: %s" % short(doc.get("info")))
    check(doc.get("paths"), "no paths")
    bearer = doc["components"]["securitySchemes"]["bearer"]
    eq((bearer.get("type"), bearer.get("scheme")), ("http", "bearer"), "the bearer security scheme")
    error = doc["components"]["schemas"]["Error"]
    eq(error.get("required"), ["error"], "Error schema: required")
    eq(error["properties"]["error"].get("type"), "string", "Error schema: error")
    for path, method, op in operations(doc):
        for status, answer in op["responses"].items():
            if status[0] != "2":
                ref = answer.get("$ref", "")
                check(ref.startswith("#/components/responses/"), "%s %s %s: not an error response: %s"
                      % (method, path, status, short(answer)))
                shared = doc["components"]["responses"][ref.rsplit("/", 1)[1]]
                eq(shared["content"]["application/json"]["schema"], {"$ref": "#/components/schemas/Error"},
                   "%s %s %s: error schema" % (method, path, status))


@test
def test_checked_in_copy_is_current():
    r = served()
    with open(DOC_PATH, "rb") as f:
        checked_in = f.read()
    check(json.loads(checked_in) == r.json(),
          "docs/openapi.json differs from GET /v1/openapi.json: run `make openapi` and commit it")
    check(checked_in == r.body, "docs/openapi.json is not byte for byte what `make openapi` writes")


@test
def test_every_route_of_the_table_and_nothing_else():
    doc = served().json()
    routes = table_routes()
    check(len(routes) >= 20, "only %d routes read from the table" % len(routes))
    for method, path, permission in routes:
        op = doc["paths"].get(path, {}).get(method.lower())
        check(op is not None, "route %s %s is not in the document" % (method, path))
        check(isinstance(op.get("description"), str) and op["description"].strip(),
              "route %s %s has no description" % (method, path))
        eq(op.get("x-permission"), permission, "x-permission of %s %s" % (method, path))
        eq(op.get("security"), [] if permission == "none" else [{"bearer": []}], "security of %s %s"
           % (method, path))
    documented = {(m.upper(), p) for p, m, _ in operations(doc)}
    eq(documented - {(m, p) for m, p, _ in routes}, set(), "operations that are not routes of the table")
    for _, method, _ in operations(doc):
        check(method in METHODS, "not an operation: %s" % method)


@test
def test_every_operation_answers_on_the_server():
    s = server()
    for path, method, op in operations(served().json()):
        r = H.http_request(s.port, method.upper(), concrete(path))  # no token, no body
        check(r.status not in (404, 405), "%s %s: %d %s" % (method.upper(), path, r.status, short(r.text)))
        if op["security"]:
            eq(r.status, 401, "%s %s without a token (%s)" % (method.upper(), path, short(r.text)))
        else:
            check(r.status != 401, "%s %s needs no token, yet %d" % (method.upper(), path, r.status))


@test
def test_query_parameters_are_the_servers():
    s = server()
    for path, method, op in operations(served().json()):
        if method != "get":
            continue  # reads only: nothing here may change the store
        params = [p for p in op.get("parameters", []) if p["in"] == "query" and p["schema"].get("type") != "object"]
        required = {p["name"]: sample(p) for p in params if p.get("required")}
        url = concrete(path)
        get = (lambda u: get_head(s, u)) if streams(op) else s.get
        for p in params:
            r = get(url + "?" + H.q(dict(required, **{p["name"]: sample(p)})))
            check("unknown query parameter" not in r.text, "GET %s?%s: documented, yet refused: %s"
                  % (path, p["name"], short(r.text)))
        for name in required:
            r = get(url + "?" + H.q({k: v for k, v in required.items() if k != name}))
            eq(r.status, 400, "GET %s without its required %s (%s)" % (path, name, short(r.text)))
            check(name in r.json().get("error", ""), "the error names %s: %s" % (name, short(r.text)))
        if "400" in op["responses"]:  # the route refuses what it does not name
            r = get(url + "?" + H.q(dict(required, no_such_parameter="1")))
            eq(r.status, 400, "GET %s?no_such_parameter (%s)" % (path, short(r.text)))


@test
def test_content_types_are_the_servers():
    s = server()
    for path, method, op in operations(served().json()):
        body = op.get("requestBody")
        if not body:
            check("415" not in op["responses"], "%s %s: 415 without a body" % (method, path))
            continue
        types = list(body["content"])
        check(types, "%s %s: a body without content types" % (method, path))
        # refused at the headers, before the body is read: nothing is changed
        r = s.request(method.upper(), concrete(path), body=b"{}", headers={"Content-Type": "text/plain"})
        eq(r.status, 415, "%s %s as text/plain (%s)" % (method.upper(), path, short(r.text)))
        listed = types[0] if len(types) == 1 else ", ".join(types[:-1]) + " or " + types[-1]
        eq(r.json().get("error"), "Content-Type must be " + listed, "%s %s: the 415 names the table's types"
           % (method.upper(), path))


if __name__ == "__main__":
    H.main()

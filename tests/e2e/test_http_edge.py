# End-to-end tests of the HTTP edge's limits (issue 9), over real sockets:
#   - binding: a second `serve` on a port in use exits 1 saying "address already in use" and the
#     address, while the first goes on answering every request; `--listen :PORT` and `0.0.0.0:PORT`
#     say they bind every interface;
#   - slow clients: 100+ connections from 127.0.0.1 that never finish their headers do not stop a client
#     at 127.0.0.2 from being served; a connection from 127.0.0.1 beyond the per-client cap is answered
#     503 with Retry-After at once; the slow ones are closed by the header deadline, after which
#     127.0.0.1 is served again; one dribbling a header byte a second is closed within
#     --header-timeout + 2 s; a kept-alive connection left idle that long is closed too; at twice the
#     cap, a client's connections are refused when accepted;
#   - memory: with --max-inflight 8MiB, uploads whose declared lengths do not fit beside the ones in
#     flight get 503 + Retry-After without their bodies being read, while a small one succeeds, and an
#     upload after the others finish succeeds; a chunked body that outgrows the budget gets 503; bodies
#     trickled below --body-min-rate are cut once --header-timeout has passed and their budget comes back,
#     while a body above the floor, with a pause, gets through;
#   - framing: two Content-Length headers (different or equal), Content-Length with
#     Transfer-Encoding, and whitespace in a header name are answered 400 and the connection closed (no
#     smuggled second request is answered); a transfer coding other than plain chunked gets 501 and a
#     close; a chunk size of 7fffffffffffffff is answered or closed within --header-timeout + 2 s;
#     plain chunked still works.
# Every raw exchange has a short socket timeout, so a hang fails its test instead of the suite.
#
# Run: /usr/bin/python3 tests/e2e/test_http_edge.py

import json
import re
import select
import socket
import subprocess
import time

import harness as H
from harness import check, eq, short, test

HEADER_TIMEOUT = 3          # --header-timeout of the servers that test deadlines
SLOW_CONNECTIONS = 110      # from 127.0.0.1, beyond the default cap of 64 but below twice it
RAW_TIMEOUT = 5.0           # seconds any raw exchange may take before it counts as a hang


def edge_server(extra=(), name="edge"):
    s = H.Server(extra_args=list(extra), name=name)
    s.start()
    return s


def connect(port, source=None, timeout=RAW_TIMEOUT):
    src = (source, 0) if source else None
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=src)


def read_until_closed(s, limit):
    """All bytes until the server closes (or resets) the connection, and whether it did within limit s."""
    data = b""
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        s.settimeout(left)
        try:
            c = s.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not c:
            return data, True
        data += c


def read_answer(s, limit):
    """One HTTP answer (status, lower-case headers, body) read within limit s, or None."""
    data = b""
    deadline = time.monotonic() + limit
    while b"\r\n\r\n" not in data or not _complete(data):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            c = s.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            break
        if not c:
            break
        data += c
    if b"\r\n\r\n" not in data:
        return None
    return parse_answer(data)


def _complete(data):
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is None or len(body) >= int(m.group(1))


def parse_answer(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        H.fail("bad status line %r" % lines[0])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", len(body)))
    return int(m.group(1)), hdrs, body[:n]


def status_lines(data):
    return re.findall(rb"HTTP/1\.[01] (\d{3})", data)


def exchange(port, raw, limit=RAW_TIMEOUT):
    """Send raw bytes, read until the server closes; (bytes, closed, seconds)."""
    s = connect(port)
    t0 = time.monotonic()
    try:
        s.sendall(raw)
        data, closed = read_until_closed(s, limit)
    finally:
        s.close()
    return data, closed, time.monotonic() - t0


def get_healthz(port, source=None, timeout=RAW_TIMEOUT):
    """GET /healthz on a fresh connection (from source); (status, headers, body, seconds)."""
    t0 = time.monotonic()
    s = connect(port, source, timeout)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        ans = read_answer(s, timeout)
    finally:
        s.close()
    if ans is None:
        H.fail("GET /healthz from %s: no answer within %.0f s" % (source or "127.0.0.1", timeout))
    return ans + (time.monotonic() - t0,)


def ndjson_body(prefix, n, pad):
    """n valid records, each with a filler field of pad bytes."""
    lines = [json.dumps({"record_id": "%s-%d" % (prefix, i), "name": "Edge Person", "dob": "1970-01-01",
                         "note": "x" * pad}) for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def upload_head(s, length=None, chunked=False, content_type="application/x-ndjson"):
    h = "POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\n" % (
        s.token, content_type)
    if chunked:
        h += "Transfer-Encoding: chunked\r\n"
    else:
        h += "Content-Length: %d\r\n" % length
    return (h + "\r\n").encode()


# ---------------------------------------------------------------------------------------------
# item 2: exclusive bind

@test(timeout=60)
def test_second_serve_on_a_port_in_use_exits_1_and_the_first_keeps_answering():
    first = edge_server(name="bind-first")
    other = H.Server(name="bind-second")      # its own data directory: only the port is shared
    other.init()
    for listen, everywhere in (("127.0.0.1:%d" % first.port, False), (":%d" % first.port, True),
                               ("0.0.0.0:%d" % first.port, True)):
        try:
            p = subprocess.run([H.BIN, "serve", "--data", other.data_dir, "--listen", listen],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        except subprocess.TimeoutExpired:
            H.fail("a second serve on %s (port in use) was still running after 20 s" % listen)
        err = p.stderr.decode("utf-8", "replace")
        eq(p.returncode, 1, "exit code of a second serve on %s (stderr: %s)" % (listen, short(err)))
        want = "127.0.0.1:%d" % first.port if not everywhere else "0.0.0.0:%d" % first.port
        check("address already in use" in err and want in err,
              "serve on %s: the message should say 'address already in use' and %s: %s" % (listen, want, short(err)))
        if everywhere:
            check(re.search(r"binds every interface", err),
                  "serve --listen %s did not say that it binds every interface: %s" % (listen, short(err)))
        else:
            check("every interface" not in err, "127.0.0.1 is not every interface: %s" % short(err))
    # the first server alone answers: every login succeeds (two servers on one port split them)
    for i in range(12):
        r = H.http_request(first.port, "POST", "/v1/auth/token", body=json.dumps(
            {"user": "admin", "password": first.admin_password()}), headers={"Content-Type": "application/json"})
        eq(r.status, 201, "login %d on the first server" % (i + 1))
    eq(first.get("/healthz").status, 200, "first server after the attempts")
    check(first.alive(), "the first server died")
    first.stop()


# ---------------------------------------------------------------------------------------------
# item 11: slow clients

def open_slow(port, n, source=None):
    """n connections that send a request line and one header, and never end the headers."""
    socks = []
    for _ in range(n):
        s = connect(port, source)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)
    return socks


@test(timeout=60)
def test_slow_connections_from_one_address_do_not_stop_service():
    # a longer deadline than the other tests: the checks below must run while the slow ones are held
    timeout = 8
    s = edge_server(["--header-timeout", str(timeout)], name="slowloris")
    t_open = time.monotonic()
    slow = open_slow(s.port, SLOW_CONNECTIONS)
    opened = time.monotonic() - t_open
    try:
        st, _, _, took = get_healthz(s.port, source="127.0.0.2")
        eq(st, 200, "GET /healthz from 127.0.0.2 beside %d slow connections" % SLOW_CONNECTIONS)
        check(took < 2.0, "127.0.0.2 waited %.2f s" % took)
        st, hdrs, body, took = get_healthz(s.port, source="127.0.0.1")
        check(time.monotonic() - t_open < timeout, "the checks took longer than the header deadline (opening took "
              "%.2f s): the cap was not tested" % opened)
        eq(st, 503, "a request from 127.0.0.1 beyond its cap of 64 connections (%s)" % short(body))
        check(took < 2.0, "the 503 took %.2f s" % took)
        check(hdrs.get("retry-after", "").isdigit(), "503 without a Retry-After in seconds: %r" % hdrs)
        eq(hdrs.get("connection", "").lower(), "close", "Connection header of the 503")
        check("connections" in json.loads(body)["error"], "503 error message: %s" % short(body))
        # the slow ones are cut by the header deadline
        limit = t_open + timeout + 2 + opened
        for i, c in enumerate(slow):
            _, closed = read_until_closed(c, max(0.1, limit - time.monotonic()))
            check(closed, "slow connection %d still open %.1f s after it opened (--header-timeout %d)"
                  % (i, time.monotonic() - t_open, timeout))
    finally:
        for c in slow:
            c.close()
    st, _, _, _ = get_healthz(s.port, source="127.0.0.1")
    eq(st, 200, "127.0.0.1 after its slow connections were cut")
    check(s.alive(), "server died")
    s.stop()


@test(timeout=60)
def test_dribbled_headers_and_idle_keepalive_are_closed_at_the_deadline():
    s = edge_server(["--header-timeout", str(HEADER_TIMEOUT)], name="dribble")
    c = connect(s.port)
    t0 = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    closed_after = None
    try:
        for i in range(len(request)):
            if time.monotonic() - t0 > HEADER_TIMEOUT + 2:
                break
            try:
                c.sendall(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            r, _, _ = select.select([c], [], [], 1.0)
            if r:
                data, closed = read_until_closed(c, 0.5)
                if closed:
                    closed_after = time.monotonic() - t0
                    check(not data, "the dribbling client got an answer: %r" % data[:200])
                    break
    finally:
        c.close()
    check(closed_after is not None, "a connection dribbling a header byte a second was still open after %.1f s "
          "(--header-timeout %d)" % (time.monotonic() - t0, HEADER_TIMEOUT))
    check(closed_after >= HEADER_TIMEOUT - 0.5, "closed after %.1f s, before the deadline" % closed_after)
    # a kept-alive connection: one answer, then idle; closed once the next headers are overdue
    k = connect(s.port)
    try:
        k.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        ans = read_answer(k, RAW_TIMEOUT)
        check(ans is not None and ans[0] == 200, "keep-alive request: %r" % (ans,))
        t1 = time.monotonic()
        _, closed = read_until_closed(k, HEADER_TIMEOUT + 2)
        check(closed, "an idle kept-alive connection was still open after %.1f s" % (time.monotonic() - t1))
    finally:
        k.close()
    eq(s.get("/healthz").status, 200, "server after the slow clients")
    s.stop()


@test(timeout=60)
def test_twice_the_cap_is_refused_when_accepted():
    s = edge_server(["--max-connections-per-client", "4"], name="hardcap")
    # from an address of their own: the harness's login from 127.0.0.1 may still hold its connection on
    # the server (its answer sent, the connection not yet closed), which would count as one of the eight
    me = "127.0.0.3"
    t0 = time.monotonic()
    held = [connect(s.port, me) for _ in range(8)]   # 4 admitted, 4 beyond the cap
    try:
        time.sleep(0.3)                              # let the server register them
        extra = connect(s.port, me)
        try:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_until_closed(extra, RAW_TIMEOUT)
        extra.close()
        check(closed and not status_lines(data), "the 9th connection with a cap of 4 got %r, %.1f s after the "
              "first; server log: %s" % (data[:120], time.monotonic() - t0, s.log_tail(3000)))
        st, _, _, _ = get_healthz(s.port, source="127.0.0.2")
        eq(st, 200, "another address meanwhile")
        # a connection beyond the cap (the 5th..8th) is answered 503 once its headers arrive
        held[7].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        ans = read_answer(held[7], RAW_TIMEOUT)
        check(ans is not None and ans[0] == 503 and "retry-after" in ans[1], "beyond the cap: %r" % (ans,))
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        ans = read_answer(held[0], RAW_TIMEOUT)
        check(ans is not None and ans[0] == 200, "within the cap: %r" % (ans,))
    finally:
        for c in held:
            c.close()
    s.stop()


# ---------------------------------------------------------------------------------------------
# item 12: bodies in flight

@test(timeout=90)
def test_bodies_beyond_the_inflight_budget_get_503_and_later_succeed():
    s = edge_server(["--max-inflight", "8MiB"], name="inflight")
    body = ndjson_body("inflight", 180, 16 * 1024)       # ~3 MiB: two fit in 8 MiB, a third does not
    eq(len(body) > 2900000 and len(body) < 3200000, True, "body size %d" % len(body))
    open_uploads, refused = [], []
    try:
        for i in range(5):
            c = connect(s.port)
            c.sendall(upload_head(s, len(body)) + body[:65536])
            ans = read_answer(c, 0.7)
            if ans is None:
                open_uploads.append(c)
            else:
                refused.append(ans)
                c.close()
        eq(len(open_uploads), 2, "uploads admitted beside each other (answers to the others: %s)"
           % [(a[0], short(a[2], 100)) for a in refused])
        eq(len(refused), 3, "uploads refused")
        for st, hdrs, b in refused:
            eq(st, 503, "status of an upload beyond the budget (%s)" % short(b))
            eq(hdrs.get("retry-after"), "1", "Retry-After of the 503")
            eq(hdrs.get("connection", "").lower(), "close", "Connection of the 503")
            check("bodies in flight" in json.loads(b)["error"], "503 message: %s" % short(b))
        small = s.ingest_ok([{"record_id": "inflight-small", "name": "Small Person", "dob": "1980-02-02"}])
        eq(small["items"][0]["status"], "created", "a small upload beside the open ones")
        for c in open_uploads:
            c.sendall(body[65536:])
        for c in open_uploads:
            ans = read_answer(c, 30)
            check(ans is not None and ans[0] == 200, "an admitted upload, finished: %r" % (ans and ans[:1],))
            eq(json.loads(ans[2])["errors"], False, "records of an admitted upload")
    finally:
        for c in open_uploads:
            c.close()
    r = s.ingest(ndjson_body("inflight-after", 180, 16 * 1024))
    eq(r.status, 200, "an upload of the same size after the others finished (%s)" % short(r.text))
    s.stop()


@test(timeout=60)
def test_a_body_on_a_route_that_reads_none_is_refused_before_the_budget():
    """/healthz needs no token: a body sent to it (to any route that reads none) is refused from the headers,
    413, so nobody can hold the bodies' budget, and lock out logins and ingest, with bodies no handler reads
    (a trickle of bytes kept them reserved)."""
    s = edge_server(["--max-inflight", "8MiB"], name="no-body")
    held = []
    try:
        for i in range(4):  # 16 MiB declared against a budget of 8
            c = connect(s.port)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (4 << 20)
                      + b"x" * 1000)
            held.append(c)
            ans = read_answer(c, 5)
            check(ans is not None, "GET /healthz with a body %d: answered from its headers" % i)
            eq(ans[0], 413, "status (%s)" % short(ans[2]))
            check("takes no request body" in json.loads(ans[2])["error"], "says why: %s" % short(ans[2]))
        r = s.ingest(ndjson_body("no-body", 100, 16 * 1024))
        eq(r.status, 200, "an ingest of 1.6 MiB beside them (%s)" % short(r.text))
    finally:
        for c in held:
            c.close()
    s.stop()
    check_refused_and_closed(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n", 413, "a chunked body on GET /healthz")


@test(timeout=90)
def test_a_body_trickled_below_the_minimum_rate_is_cut_and_its_budget_freed():
    """A client with a token declared two ~3 MiB bodies and sent them a few bytes a second, each piece within
    the stall deadline: every byte moved the deadline on, so the bodies' budget (8 MiB) stayed 6 MiB full
    for as long as the client liked. With --body-min-rate 4KiB a body must keep up 4 KiB a second once
    --header-timeout has passed: both are cut, their budget comes back, and a body sent faster than the
    floor, with a pause, still gets through."""
    s = edge_server(["--header-timeout", str(HEADER_TIMEOUT), "--max-inflight", "8MiB", "--body-min-rate", "4KiB"],
                    name="min-rate")
    body = ndjson_body("trickle", 180, 16 * 1024)      # ~3 MiB: two fit in 8 MiB, a third does not
    held = []
    try:
        t0 = time.monotonic()
        for _ in range(2):
            c = connect(s.port)
            c.sendall(upload_head(s, len(body)) + body[:1000])
            held.append(c)
        time.sleep(0.3)
        c = connect(s.port)
        c.sendall(upload_head(s, len(body)) + body[:1000])
        third = read_answer(c, RAW_TIMEOUT)
        c.close()
        check(third is not None and third[0] == 503, "a third body beside the two trickled ones: %r" % (third,))
        sent, cut_after = 1000, {}
        while len(cut_after) < len(held) and time.monotonic() - t0 < HEADER_TIMEOUT + 10:
            for i, c in enumerate(held):
                if i in cut_after:
                    continue
                try:
                    c.sendall(body[sent:sent + 100])
                except (BrokenPipeError, ConnectionResetError):
                    cut_after[i] = time.monotonic() - t0
                    continue
                data, closed = read_until_closed(c, 0.01)
                if closed:
                    cut_after[i] = time.monotonic() - t0
                    check(not data, "a cut body got an answer: %r" % data[:200])
            sent += 100
            time.sleep(1.0)                            # a piece a second: well within the 3 s stall deadline
        eq(len(cut_after), 2, "bodies trickled at 100 bytes a second cut within %d s (--body-min-rate 4KiB; cut: %s)"
           % (HEADER_TIMEOUT + 10, cut_after))
        for t in cut_after.values():
            check(HEADER_TIMEOUT - 0.5 <= t <= HEADER_TIMEOUT + 4, "cut %.1f s after the start; the floor allows "
                  "%d s + the bytes sent / 4 KiB" % (t, HEADER_TIMEOUT))
    finally:
        for c in held:
            c.close()
    r = s.ingest(body)
    eq(r.status, 200, "a body of the same size once the trickled ones were cut (%s)" % short(r.text))
    # above the floor, with a pause shorter than the stall deadline: longer than --header-timeout in all
    slow = ndjson_body("above-floor", 2, 16 * 1024)
    c = connect(s.port, timeout=30)
    try:
        c.sendall(upload_head(s, len(slow)))
        t1 = time.monotonic()
        for i, at in enumerate(range(0, len(slow), 5000)):
            c.sendall(slow[at:at + 5000])
            time.sleep(2.0 if i == 2 else 0.5)
        ans = read_answer(c, 30)
        took = time.monotonic() - t1
        check(ans is not None and ans[0] == 200, "a body sent at ~10 KiB/s over %.1f s: %r" % (took, ans and ans[:1]))
        check(took > HEADER_TIMEOUT, "the slow body took %.1f s, not longer than --header-timeout" % took)
        eq(json.loads(ans[2])["errors"], False, "its records")
    finally:
        c.close()
    s.stop()


@test(timeout=90)
def test_chunked_body_outgrowing_the_budget_gets_503():
    s = edge_server(["--max-inflight", "8MiB"], name="inflight-chunked")
    body = ndjson_body("held", 180, 16 * 1024)
    held = []
    try:
        for _ in range(2):                       # ~6 MiB of the 8 in flight
            c = connect(s.port)
            c.sendall(upload_head(s, len(body)) + body[:65536])
            check(read_answer(c, 0.7) is None, "an upload that fits was answered before its body")
            held.append(c)
        c = connect(s.port, timeout=30)
        c.sendall(upload_head(s, chunked=True))
        chunk = ndjson_body("chunked", 16, 16 * 1024)   # ~256 KiB a chunk, 3 MiB in all
        for _ in range(12):
            c.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        c.sendall(b"0\r\n\r\n")
        ans = read_answer(c, 30)
        c.close()
        check(ans is not None, "no answer to a chunked body beyond the budget")
        eq(ans[0], 503, "chunked body beyond the budget (%s)" % short(ans[2]))
        eq(ans[1].get("retry-after"), "1", "Retry-After")
        for c in held:                           # the server lets go of a body before it answers
            c.sendall(body[65536:])
            ans = read_answer(c, 30)
            check(ans is not None and ans[0] == 200, "a held upload, finished: %r" % (ans and ans[:1],))
    finally:
        for c in held:
            c.close()
    # the same chunked body alone fits (growing from 2 to 4 MiB holds both buffers for a moment: 6 MiB)
    c = connect(s.port, timeout=30)
    c.sendall(upload_head(s, chunked=True))
    chunk = ndjson_body("chunked-alone", 16, 16 * 1024)
    for _ in range(12):
        c.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    c.sendall(b"0\r\n\r\n")
    ans = read_answer(c, 30)
    c.close()
    check(ans is not None and ans[0] == 200, "the chunked body alone: %r" % (ans and (ans[0], short(ans[2])),))
    s.stop()


# ---------------------------------------------------------------------------------------------
# item 13: framing

_framing_server = None


def framing_server():
    global _framing_server
    if _framing_server is None:
        _framing_server = edge_server(["--header-timeout", str(HEADER_TIMEOUT)], name="framing")
    return _framing_server


@H.on_exit
def _stop_framing_server():
    if _framing_server is not None:
        _framing_server.stop()


def login_head(extra):
    return ("POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s\r\n"
            % extra).encode()


def check_refused_and_closed(raw, status, what):
    s = framing_server()
    data, closed, took = exchange(s.port, raw)
    got = status_lines(data)
    check(got, "%s: no answer within %.0f s (closed: %s)" % (what, RAW_TIMEOUT, closed))
    eq(int(got[0]), status, "%s: status" % what)
    eq(len(got), 1, "%s: answers on the connection (a smuggled request must not be answered)" % what)
    check(closed, "%s: the connection was not closed after the %d" % (what, status))
    _, hdrs, body = parse_answer(data)
    eq(hdrs.get("connection", "").lower(), "close", "%s: Connection header" % what)
    json.loads(body)["error"]
    check(took < RAW_TIMEOUT, "%s took %.1f s" % (what, took))


@test
def test_two_content_lengths_get_400_and_close():
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b'{"user":"admin","password":"x"}'
    check_refused_and_closed(login_head("Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body) +
                                                                                        len(smuggled)))
                             + body + smuggled, 400, "two different Content-Length headers")
    check_refused_and_closed(login_head("Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body)))
                             + body, 400, "two equal Content-Length headers")


@test
def test_whitespace_in_a_header_name_gets_400_and_close():
    # libmicrohttpd 0.9.75 keeps "Content-Length " as another header: the body would be read as the
    # next request, while a proxy in front may have framed it by that length
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    check_refused_and_closed(login_head("Content-Length : %d\r\n" % len(smuggled)) + smuggled, 400,
                             "whitespace before the colon of Content-Length")


@test
def test_content_length_with_transfer_encoding_gets_400_and_close():
    body = b'{"user":"admin","password":"x"}'
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    check_refused_and_closed(login_head("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(chunked))
                             + chunked, 400, "Content-Length with Transfer-Encoding")
    check_refused_and_closed(login_head("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n") + chunked, 400,
                             "Transfer-Encoding with Content-Length")


@test
def test_transfer_codings_other_than_chunked_get_501_and_close():
    body = b"2\r\n{}\r\n0\r\n\r\n"
    for te in ("gzip, chunked", "gzip", "identity", "chunked, chunked", "chunked;q=1"):
        check_refused_and_closed(login_head("Transfer-Encoding: %s\r\n" % te) + body, 501,
                                 "Transfer-Encoding: %s" % te)
    check_refused_and_closed(login_head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + body, 501,
                             "two Transfer-Encoding headers")


@test
def test_huge_chunk_size_is_answered_or_closed_promptly():
    s = framing_server()
    raw = login_head("Transfer-Encoding: chunked\r\n") + b"7fffffffffffffff\r\n{}\r\n0\r\n\r\n"
    data, closed, took = exchange(s.port, raw, limit=HEADER_TIMEOUT + 2)
    check(closed or status_lines(data), "a chunk size of 7fffffffffffffff: neither answered nor closed in %.1f s"
          % took)
    check(took <= HEADER_TIMEOUT + 2, "took %.1f s" % took)
    eq(s.get("/healthz").status, 200, "server after the huge chunk")


@test
def test_plain_chunked_upload_still_works():
    s = framing_server()
    body = H.ndjson([{"record_id": "chunked-%d" % i, "name": "Chunk Person", "dob": "1975-03-03"} for i in range(3)])
    c = connect(s.port)
    try:
        c.sendall(upload_head(s, chunked=True))
        for i in range(0, len(body), 40):
            piece = body[i:i + 40]
            c.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        c.sendall(b"0\r\n\r\n")
        ans = read_answer(c, RAW_TIMEOUT)
    finally:
        c.close()
    check(ans is not None, "no answer to a chunked upload")
    eq(ans[0], 200, "chunked upload (%s)" % short(ans[2]))
    eq([it["status"] for it in json.loads(ans[2])["items"]], ["created"] * 3, "items of the chunked upload")



@test
def test_a_url_holding_percent_00_is_refused_not_cut_short():
    """%00 decodes to a NUL byte, which cut the path or a query value short: GET /v1/counters/labs%00x answered
    the counter labs, DELETE /v1/counters/kept%00x removed kept, /v1/records/R%00/children read the record R,
    ?parent=a%00b counted the children of a. Such a URL is a 400 now, after a request served on the same
    kept-alive connection too."""
    s = edge_server(name="edge-nul")
    h = {"Content-Type": "application/json"}
    eq(s.request("POST", "/v1/counters", body=json.dumps({"name": "kept", "max_window": "1h", "per_parent": True}),
                 headers=h).status, 201, "POST a counter")
    s.ingest_ok([{"record_id": "nul-parent", "name": "Nul Person", "dob": "1971-01-01"},
                 {"record_id": "nul-child", "name": "Nul Person", "dob": "1971-01-01", "parent_id": "nul-parent"}])
    for method, path in (("GET", "/v1/counters/kept%00x"), ("DELETE", "/v1/counters/kept%00x"),
                         ("GET", "/v1/counters/kept?parent=nul-parent%00b"),
                         ("GET", "/v1/records/nul-parent%00/children"), ("GET", "/v1/records/nul-child%00"),
                         ("GET", "/v1/records/nul-parent/children?since=2026-01-01T00:00:00Z%00x")):
        r = s.request(method, path)
        eq(r.status, 400, "%s %s: %s" % (method, path, short(r.text)))
        check("%00" in r.json()["error"], "the error says why: %s" % r.text)
    eq(s.get("/v1/counters/kept").status, 200, "the counter is still there")
    eq(s.get("/v1/counters/%6Bept").status, 200, "other escapes still decode")
    eq(s.get("/v1/records/nul-parent/children?since=2026-01-01T00%3A00%3A00Z").status, 200, "an escaped query value")
    # each request of a kept-alive connection is looked at on its own
    c = connect(s.port)
    try:
        auth = "Authorization: Bearer %s\r\n" % s.token
        c.sendall(("GET /v1/counters/kept HTTP/1.1\r\nHost: x\r\n%s\r\n" % auth).encode())
        first = read_answer(c, RAW_TIMEOUT)
        c.sendall(("GET /v1/counters/kept%%00x HTTP/1.1\r\nHost: x\r\n%s\r\n" % auth).encode())
        second = read_answer(c, RAW_TIMEOUT)
    finally:
        c.close()
    eq((first and first[0], second and second[0]), (200, 400), "two requests on one connection")


if __name__ == "__main__":
    H.main()

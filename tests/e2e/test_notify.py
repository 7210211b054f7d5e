#!/usr/bin/env python3
# End-to-end tests of the notifications (issue 13, points 4-6) over real HTTP: signal rules (file and API,
# refusals naming the problem; a regex too costly to compile refused in seconds, reads answering meanwhile;
# a stored rule not in force replaced as an update),
# events from committed records (and none from other records), no matched
# text in any event, log line or metric, Server-Sent Events resumed after a dropped connection (nothing
# missed, nothing repeated), webhooks (a receiver that fails its first calls still gets every event in
# order with valid signatures; a hanging receiver stalls neither another subscription nor ingest; https
# with the certificate checked),
# restarts (rules, events and positions survive; kill -9 neither loses nor repeats an event), a stream that
# ends when its account is disabled, the stream
# limit, a quiet stream outliving the edge's header deadline, a client that hangs up noticed at once, a
# stop that ends open streams, and --events-topic on librdkafka's mock cluster (an erased patient's
# tombstone on it after its events, and the certificate's events_topic view).
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import threading
import time

import harness
from harness import check, eq, fail

# the receivers here listen on loopback, which webhooks refuse unless allowed (test_webhooks_refuse_the_servers_network)
SERVE_ARGS = ["--webhook-max-backoff", "2", "--webhook-timeout", "2", "--sse-heartbeat", "1", "--webhook-allow-private"]


def server():
    return harness.shared_server("notify", SERVE_ARGS)


def post_json(s, path, obj, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return s.request("POST", path, body=json.dumps(obj), headers=h)


def put_rule(s, rule, expect=(200, 201)):
    r = post_json(s, "/v1/rules", rule)
    if r.status not in expect:
        fail("POST /v1/rules %s: HTTP %d %s" % (rule.get("name"), r.status, r.text))
    return r


def rec(name, notes, rtype="note", **extra):
    d = {"name": name, "dob": "1980-02-03", "type": rtype, "notes": notes}
    d.update(extra)
    return d


def events_after(s, since, rule=None):
    p = {"since": since}
    if rule:
        p["rule"] = rule
    out, cursor = [], None
    while True:
        q = dict(p, limit=1000)
        if cursor:
            q["cursor"] = cursor
        a = s.get_json("/v1/events?" + harness.q(q))
        out += a["events"]
        cursor = a.get("next_cursor")
        if not cursor:
            return out


def last_seq(s):
    return s.get_json("/v1/events?limit=1")["last_seq"]


def wait_events(s, since, n, rule=None, timeout=15):
    t0 = time.time()
    while True:
        ev = events_after(s, since, rule)
        if len(ev) >= n or time.time() - t0 > timeout:
            return ev
        time.sleep(0.05)


def unique_rule(prefix):
    return prefix + harness.rand_token(6)


# ---------------------------------------------------------------------------------------------
# SSE over a raw socket (chunked transfer decoded by hand)

class SSE:
    def __init__(self, port, token, path="/v1/events/stream", last_event_id=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer %s\r\n" % (
            path, token)
        if last_event_id is not None:
            head += "Last-Event-ID: %s\r\n" % last_event_id
        self.sock.sendall((head + "\r\n").encode())
        self.raw = b""
        while b"\r\n\r\n" not in self.raw:
            c = self.sock.recv(65536)
            if not c:
                fail("stream closed before its headers: %r" % self.raw)
            self.raw += c
        h, _, self.raw = self.raw.partition(b"\r\n\r\n")
        lines = h.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.text = b""
        self.closed = False

    def _more(self):
        c = self.sock.recv(65536)
        if not c:
            self.closed = True
            return False
        self.raw += c
        return True

    def _decode(self):
        if not self.chunked:
            self.text += self.raw
            self.raw = b""
            return
        while True:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.closed = True
                self.raw = b""
                return
            if len(rest) < size + 2:
                return
            self.text += rest[:size]
            self.raw = rest[size + 2:]

    def frames(self, until, timeout=10):
        """Frames (dicts with id/event/data, or {"comment": ...}) until until(list) is true or timeout."""
        out = []
        deadline = time.time() + timeout
        while not until(out):
            self._decode()
            while b"\n\n" in self.text:
                block, _, self.text = self.text.partition(b"\n\n")
                f = {}
                for ln in block.decode("utf-8").split("\n"):
                    if ln.startswith(":"):
                        f.setdefault("comment", ln[1:].strip())
                    else:
                        k, _, v = ln.partition(":")
                        f[k] = v[1:] if v.startswith(" ") else v
                out.append(f)
            if until(out):
                break
            if self.closed or time.time() > deadline:
                break
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                self._more()
            except socket.timeout:
                break
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def events_of(frames):
    return [f for f in frames if f.get("event") == "match"]


# ---------------------------------------------------------------------------------------------
# a webhook receiver inside the test

class Receiver:
    def __init__(self, secret, fail_first=0, hang=False, tls=None):
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.hang = hang
        self.calls = 0
        self.got = []        # (headers, body bytes) of accepted deliveries
        self.bad = []        # what was wrong with a delivery
        self.lock = threading.Lock()
        self.release = threading.Event()
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rcv.lock:
                    rcv.calls += 1
                    n = rcv.calls
                if rcv.hang:
                    rcv.release.wait(30)
                    return
                if n <= rcv.fail_first:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                want = "sha256=" + hmac.new(rcv.secret, body, hashlib.sha256).hexdigest()
                sig = self.headers.get("X-Medstream-Signature", "")
                with rcv.lock:
                    if not hmac.compare_digest(sig, want):
                        rcv.bad.append("bad signature on call %d" % n)
                    ev = json.loads(body)
                    if str(ev["seq"]) != self.headers.get("X-Medstream-Event-Seq"):
                        rcv.bad.append("seq header %s for event %s" % (self.headers.get("X-Medstream-Event-Seq"),
                                                                      ev["seq"]))
                    rcv.got.append(ev)
                self.send_response(204)
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a connection medstream cut (a timeout)
        self.scheme = "http"
        if tls:  # (cert, key): HTTPS
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        harness.on_exit(self.stop)

    def url(self):
        return "%s://127.0.0.1:%d/hook" % (self.scheme, self.port)

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def seqs(self):
        with self.lock:
            return [e["seq"] for e in self.got]


def subscribe(s, url, secret, rule=None, expect=201):
    body = {"url": url, "secret": secret}
    if rule:
        body["rule"] = rule
    r = post_json(s, "/v1/subscriptions", body)
    if r.status != expect:
        fail("POST /v1/subscriptions: expected %d, got %d %s" % (expect, r.status, r.text))
    return r.json() if r.status == 201 else r


# ---------------------------------------------------------------------------------------------
# tests

@harness.test
def test_rules_refused_with_the_problem_named():
    s = server()
    cases = [
        ({"name": "bad1", "fields": ["notes"], "regex": "a("}, 'rule "bad1": regex 1: Missing close parenthesis'),
        ({"name": "bad2", "fields": ["notes"], "any": ["ok"], "regex": ["fine", "(a)\\1"]},
         'rule "bad2": regex 2: Back'),
        ({"name": "bad3", "fields": ["notes"], "regex": "x*"}, 'rule "bad3": regex 1:'),
        ({"name": "bad4", "fields": ["notes"], "regex": "(?<!x)y"}, 'rule "bad4": regex 1:'),
        ({"name": "bad5", "fields": ["notes"], "any": ["x"], "anyy": ["y"]}, 'unknown member "anyy"'),
        ({"name": "bad 6", "fields": ["notes"], "any": ["x"]}, "name: 1-64 characters"),
        ({"name": "..", "fields": ["notes"], "any": ["x"]}, 'name: "." and ".." are not rule names'),
        ({"name": "bad7", "any": ["x"]}, 'rule "bad7": fields'),
        ({"name": "bad8", "fields": ["notes"]}, 'rule "bad8": at least one phrase'),
    ]
    for rule, want in cases:
        r = post_json(s, "/v1/rules", rule)
        eq(r.status, 400, "POST /v1/rules %s" % rule["name"])
        check(want in r.json()["error"], "error %r lacks %r" % (r.json()["error"], want))
    r = s.request("POST", "/v1/rules", body="{not json", headers={"Content-Type": "application/json"})
    eq(r.status, 400, "malformed JSON")
    names = [x["name"] for x in s.get_json("/v1/rules")["rules"]]
    check(not any(n.startswith("bad") for n in names), "a refused rule is listed: %r" % names)
    eq(s.request("DELETE", "/v1/rules/nosuchrule").status, 404, "DELETE an unknown rule")
    eq(s.get("/v1/rules/nosuchrule").status, 404, "GET an unknown rule")


# Hyperscan took ~162 s to compile this one regex (a wide bounded repeat), in the request's thread, under the
# notifier's change lock, and again at every later change and every start.
COSTLY_REGEX = "(?:ab|cd|ef).{0,600}gh.{0,600}ij"


@harness.test(timeout=120)
def test_a_costly_regex_is_refused_in_seconds_and_reads_never_wait():
    """A rule whose regex Hyperscan would take minutes to compile is refused (400, naming the rule and the
    regex) within seconds: each regex is compiled alone first in a helper process under a CPU limit. GET
    /v1/rules answers meanwhile (reads come from the set in force, not from behind the change's lock); a
    normal regex rule still goes in and matches; the rules file is held to the same bound at a start."""
    s = harness.Server(extra_args=SERVE_ARGS, name="notify-costly")
    s.start()
    try:
        put_rule(s, {"name": "cheap", "fields": ["notes"], "regex": "\\bsep(sis|tic)\\b"})
        res = {}

        def post():
            t = time.time()
            try:
                res["r"] = s.request("POST", "/v1/rules", body=json.dumps(
                    {"name": "costly", "fields": ["notes"], "any": ["x"], "regex": ["fine", COSTLY_REGEX]}),
                    headers={"Content-Type": "application/json"}, timeout=40)
            except Exception as e:  # noqa
                res["err"] = repr(e)
            res["s"] = time.time() - t

        th = threading.Thread(target=post, daemon=True)
        th.start()
        time.sleep(0.3)
        reads = []
        while th.is_alive() and len(reads) < 200:
            t = time.time()
            try:
                g = s.request("GET", "/v1/rules", timeout=5)
            except Exception as e:  # noqa
                fail("GET /v1/rules while a rule compiles: no answer within 5 s (%s)" % type(e).__name__)
            reads.append(time.time() - t)
            eq(g.status, 200, "GET /v1/rules while a rule compiles")
            eq(s.request("GET", "/v1/rules/cheap", timeout=5).status, 200, "GET /v1/rules/cheap meanwhile")
            time.sleep(0.2)
        th.join(40)
        check("r" in res, "POST of a costly regex: no answer within 40 s (%s)" % res.get("err"))
        eq(res["r"].status, 400, "POST of a costly regex: %s" % res["r"].text[:300])
        want = 'rule "costly": regex 2: too costly to compile (over 2 s)'
        check(want in res["r"].json()["error"], "error %r lacks %r" % (res["r"].json()["error"], want))
        check(res["s"] < 20, "the refusal took %.1f s" % res["s"])
        check(reads and max(reads) < 2, "GET /v1/rules took up to %.1f s while the rule compiled" % max(reads or [0]))
        names = [x["name"] for x in s.get_json("/v1/rules")["rules"]]
        eq(names, ["cheap"], "rules in force after the refusal")
        # the set in force still works, and a normal regex rule still goes in
        put_rule(s, {"name": "cheap2", "fields": ["notes"], "regex": ["ch[eo]st\\s+pain"]})
        since = last_seq(s)
        who = "Cost " + harness.rand_token(6)
        s.ingest_ok([rec(who, "Patient is Septic, chest  pain", record_id="costly-1"),
                     rec(who, "nothing here", record_id="costly-2")])
        ev = wait_events(s, since, 2)
        eq(sorted((e["rule"], e["record_id"]) for e in ev), [("cheap", "costly-1"), ("cheap2", "costly-1")],
           "events of the regex rules")
        s.stop()
        # the rules file: the same bound at a start, which is refused naming the file, the rule and the regex
        rules_file = os.path.join(harness.tempfile.mkdtemp(prefix="medstream-rules-"), "rules.json")
        harness.on_exit(lambda: shutil.rmtree(os.path.dirname(rules_file), ignore_errors=True))
        with open(rules_file, "w") as f:
            json.dump([{"name": "filecostly", "fields": ["notes"], "regex": COSTLY_REGEX}], f)
        s.extra_args = SERVE_ARGS + ["--rules", rules_file]
        t = time.time()
        try:
            s.start(health_timeout=30)
            fail("serve started with a costly regex in its rules file")
        except harness.TestFailure as e:
            check('rule "filecostly": regex 1: too costly to compile (over 2 s)' in s.log_tail(3000), "log: %s" % e)
        check(time.time() - t < 30, "the refused start took %.1f s" % (time.time() - t))
    finally:
        s.kill9()


def store_definitions(data_dir, kind, defs):
    """Write definitions {name: value} of `kind` into a stopped server's store behind its back, as an older
    medstream stored them (lmdb-utils' mdb_load; values without backslashes)."""
    import subprocess
    lines = ["VERSION=3", "format=print", "type=btree", "HEADER=END"]
    for name, value in defs.items():
        check("\\" not in value, "a value without backslashes")
        lines += [" %s\\00%s" % (kind, name), " " + value]
    lines.append("DATA=END")
    subprocess.run(["mdb_load", "-s", "definitions", os.path.join(data_dir, "lmdb")], input="\n".join(lines) + "\n",
                   text=True, check=True, capture_output=True)


@harness.test(timeout=120)
def test_replacing_a_stored_rule_not_in_force_is_an_update():
    """A stored rule that is not in force (over a bound at the start: a regex too costly to compile now; or not
    parsing under today's checks) is still stored, and DELETE removes it. POST /v1/rules of a rule of its name
    replaced its definition but answered 201 and was audited as "rules:create", as if nothing had been there.
    It is a replacement: 200 and "rules:update", as for a rule in force."""
    s = harness.Server(extra_args=SERVE_ARGS, name="notify-lapsed")
    s.start()
    try:
        put_rule(s, {"name": "kept", "fields": ["notes"], "any": ["kept"]})
        s.stop()
        store_definitions(s.data_dir, "rule", {
            "lapsed-bound": json.dumps({"name": "lapsed-bound", "fields": ["notes"], "regex": COSTLY_REGEX}),
            "lapsed-parse": json.dumps({"name": "lapsed-parse", "fields": ["notes"], "any": []})})
        s.start(health_timeout=30)
        log = s.log_tail(20000)
        for name in ("lapsed-bound", "lapsed-parse"):
            check("stored rule %s " % name in log, "%s skipped at the start: %s" % (name, log[-2000:]))
        eq([x["name"] for x in s.get_json("/v1/rules")["rules"]], ["kept"], "rules in force")
        for name in ("lapsed-bound", "lapsed-parse", "new-one"):
            r = put_rule(s, {"name": name, "fields": ["notes"], "any": [name]})
            eq(r.status, 201 if name == "new-one" else 200, "POST /v1/rules %s: %s" % (name, r.text[:200]))
        actions = {e["resource"]: e["action"] for e in s.audit_entries() if e["action"].startswith("rules:")}
        eq(actions, {"/v1/rules/kept": "rules:create", "/v1/rules/lapsed-bound": "rules:update",
                     "/v1/rules/lapsed-parse": "rules:update", "/v1/rules/new-one": "rules:create"},
           "the rules' audit entries")
        eq(sorted(x["name"] for x in s.get_json("/v1/rules")["rules"]), ["kept", "lapsed-bound", "lapsed-parse", "new-one"],
           "rules in force after the replacements")
        s.stop()
    finally:
        s.kill9()


@harness.test
def test_events_from_matching_records_only_and_never_the_text():
    s = server()
    rname = unique_rule("cp")
    secret_words = "zanzibarquux " + harness.rand_token(8)
    r = put_rule(s, {"name": rname, "fields": ["notes", "summary"], "any": ["chest pain"],
                     "regex": "troponin\\s*[>=]\\s*[0-9]", "types": ["note", "discharge"]})
    eq(r.status, 201, "new rule")
    got = s.get_json("/v1/rules/" + rname)
    eq(got["source"], "api", "source")
    eq(got["whole_words"], True, "whole words by default")
    before = last_seq(s)
    who = "Ann " + harness.rand_token(6)
    recs = [
        rec(who, "Pt has CHEST  PAIN and " + secret_words, record_id="m1-" + rname),          # match: notes
        rec(who, "chest painful " + secret_words, record_id="n1-" + rname),                   # no: not a whole word
        rec(who, secret_words, record_id="n2-" + rname, summary="troponin > 4"),               # match: summary
        rec(who, "chest pain " + secret_words, rtype="lab", record_id="n3-" + rname),          # no: type
        rec(who, secret_words, record_id="n4-" + rname, other="chest pain"),                  # no: field not named
        rec(who, "Chest pain; troponin=9 " + secret_words, rtype="discharge", record_id="m2-" + rname),  # one event
    ]
    a = s.ingest_ok(recs)
    check(not a["errors"], "ingest: %r" % a)
    ev = wait_events(s, before, 3, rule=rname)
    time.sleep(0.5)
    ev = events_after(s, before, rule=rname)
    got = sorted((e["record_id"], e["field"]) for e in ev)
    eq(got, sorted([("m1-" + rname, "notes"), ("m2-" + rname, "notes"), ("n2-" + rname, "summary")]),
       "(record, field) of the events")
    pids = {it["record_id"]: it["patient_id"] for it in a["items"]}
    for e in ev:
        eq(set(e), {"seq", "rule", "record_id", "patient_id", "field", "type", "version", "ts", "committed_at"},
           "event members")
        eq(e["rule"], rname, "rule")
        eq(e["patient_id"], pids[e["record_id"]], "patient id")
        eq(e["version"], 1, "version")
        harness.parse_time(e["ts"])
        harness.parse_time(e["committed_at"])
    seqs = [e["seq"] for e in ev]
    eq(seqs, sorted(seqs), "events in seq order")
    # a new version of a matching record is a new event; a duplicate is none
    s.ingest_ok([rec(who, "still chest pain", record_id="m1-" + rname)])
    s.ingest_ok([rec(who, "still chest pain", record_id="m1-" + rname)])
    ev2 = wait_events(s, seqs[-1], 1, rule=rname)
    time.sleep(0.3)
    ev2 = events_after(s, seqs[-1], rule=rname)
    eq([(e["record_id"], e["version"]) for e in ev2], [("m1-" + rname, 2)], "an event per matching version")
    # no matched text anywhere: events, metrics, the server's log
    every = json.dumps(events_after(s, 0))
    metrics = s.get("/metrics").text
    with open(s.log_path, "rb") as f:
        log = f.read().decode("utf-8", "replace")
    for where, text in (("events", every), ("/metrics", metrics), ("server log", log)):
        for word in ("zanzibarquux", secret_words.split()[1], "CHEST", "troponin > 4", who):
            check(word not in text, "%s holds %r" % (where, word))
    check('medstream_events_total{rule="%s"} 4' % rname in metrics, "events_total of the rule")


@harness.test
def test_roles_and_permissions():
    s = server()
    pw = "pw-" + harness.rand_token(12)
    for user, role in (("clin_n", "clinician"), ("anal_n", "analyst")):
        r = post_json(s, "/v1/users", {"user": user, "password": pw, "role": role})
        check(r.status in (201, 409), "create %s: %d" % (user, r.status))
    clin = {"Authorization": "Bearer " + s.token_for("clin_n", pw)}
    anal = {"Authorization": "Bearer " + s.token_for("anal_n", pw)}
    eq(s.request("GET", "/v1/events", headers=clin).status, 200, "clinician reads events")
    eq(s.request("GET", "/v1/events", headers=anal).status, 403, "analyst may not read events")
    eq(s.request("GET", "/v1/events/stream", headers=anal).status, 403, "analyst may not stream events")
    r = post_json(s, "/v1/rules", {"name": "clinrule", "fields": ["notes"], "any": ["x"]}, headers=clin)
    eq(r.status, 403, "rules are the admin's")
    # a clinician subscribes and deletes its own subscription; not one of the admin's
    rcv = Receiver("0123456789abcdef-secret")
    r = post_json(s, "/v1/subscriptions", {"url": rcv.url(), "secret": "0123456789abcdef-secret"}, headers=clin)
    eq(r.status, 201, "clinician subscribes")
    mine = r.json()["id"]
    theirs = subscribe(s, rcv.url(), "0123456789abcdef-secret")["id"]
    # its URL may hold its receiver's credential: a clinician sees its own subscriptions only, the admin every one
    listed = [x["id"] for x in s.request("GET", "/v1/subscriptions", headers=clin).json()["subscriptions"]]
    eq(listed, [mine], "the clinician's list holds its own subscription only")
    check({mine, theirs} <= {x["id"] for x in s.get_json("/v1/subscriptions")["subscriptions"]}, "the admin's list")
    eq(s.request("GET", "/v1/subscriptions/" + theirs, headers=clin).status, 403, "another's subscription read")
    eq(s.request("GET", "/v1/subscriptions/" + mine, headers=clin).status, 200, "its own, read")
    eq(s.request("DELETE", "/v1/subscriptions/" + theirs, headers=clin).status, 403, "another's subscription")
    eq(s.request("DELETE", "/v1/subscriptions/" + mine, headers=clin).status, 204, "its own")
    eq(s.request("DELETE", "/v1/subscriptions/" + theirs).status, 204, "admin deletes")
    entries = s.audit_entries(user="clin_n")
    check(any(e["action"] == "notifications:create" for e in entries), "subscription audited")
    check(any(e["action"] == "notifications:delete" and e["outcome"] == "ok" for e in entries), "deletion audited")
    check(any(e["action"] == "notifications:delete" and e["outcome"] == "denied" for e in entries),
          "the refused deletion of another's subscription audited")


@harness.test(timeout=60)
def test_sse_resume_misses_nothing_repeats_nothing():
    s = server()
    rname = unique_rule("sse")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["sepsis"]})
    start = last_seq(s)
    first = SSE(s.port, s.token, "/v1/events/stream?" + harness.q({"since": start, "rule": rname}))
    eq(first.status, 200, "stream status")
    check(first.headers.get("content-type", "").startswith("text/event-stream"), "content type")
    eq(first.headers.get("cache-control"), "no-cache", "Cache-Control")
    eq(first.headers.get("x-accel-buffering"), "no", "X-Accel-Buffering")
    hello = first.frames(lambda f: len(f) >= 1)
    check(hello and "comment" in hello[0], "the stream opens with a comment: %r" % hello)
    who = "Sse " + harness.rand_token(6)
    n1, n2 = 25, 30
    for i in range(0, n1, 5):
        s.ingest_ok([rec(who, "sepsis %d" % (i + k), record_id="%s-%d" % (rname, i + k)) for k in range(5)])
    got1 = events_of(first.frames(lambda f: len(events_of(f)) >= 12, timeout=15))[:12]
    eq(len(got1), 12, "events on the first connection")
    first.close()  # dropped mid-stream
    resume_at = got1[-1]["id"]
    for i in range(n1, n1 + n2, 10):
        s.ingest_ok([rec(who, "sepsis %d" % (i + k), record_id="%s-%d" % (rname, i + k)) for k in range(10)])
    second = SSE(s.port, s.token, "/v1/events/stream?" + harness.q({"rule": rname}), last_event_id=resume_at)
    rest = events_of(second.frames(lambda f: len(events_of(f)) >= n1 + n2 - 12, timeout=20))
    second.close()
    ids = [int(f["id"]) for f in got1] + [int(f["id"]) for f in rest]
    eq(len(ids), n1 + n2, "events over both connections")
    eq(len(set(ids)), len(ids), "no event twice")
    eq(ids, sorted(ids), "in seq order")
    for f in got1 + rest:
        d = json.loads(f["data"])
        eq(str(d["seq"]), f["id"], "id is the seq")
        eq(d["rule"], rname, "rule filter")
    eq(sorted(json.loads(f["data"])["record_id"] for f in got1 + rest),
       sorted("%s-%d" % (rname, i) for i in range(n1 + n2)), "every record once")
    # nothing before the resume point came again
    check(min(int(f["id"]) for f in rest) > int(resume_at), "resumed after Last-Event-ID")


@harness.test(timeout=180)
def test_a_filtered_stream_resumed_behind_many_other_events_gets_its_event_at_once():
    # a stream filtered by rule looks at a bounded number of other rules' events per refill; when they
    # were all it saw, it waited for the next wake-up (a new event, or the heartbeat: 15 s by default) before
    # looking further, so a client resuming behind 4,096+ other events got its own a heartbeat later
    s = harness.Server(extra_args=["--sse-heartbeat", "60"], name="notify-filtered")
    s.start()
    put_rule(s, {"name": "noisy", "fields": ["notes"], "any": ["cough"]})
    put_rule(s, {"name": "rare", "fields": ["notes"], "any": ["sepsis"]})
    start = last_seq(s)
    n = 5000
    for k in range(0, n, 1000):
        s.ingest_ok([rec("Noisy %d" % (i % 50), "cough", record_id="noisy-%d" % i) for i in range(k, k + 1000)])
    s.ingest_ok([rec("Rare", "sepsis", record_id="rare-1")])
    logged = wait_events(s, start, n + 1, timeout=60)
    eq(len(logged), n + 1, "events in the log")
    rare = [e["seq"] for e in logged if e["rule"] == "rare"]
    st = SSE(s.port, s.token, "/v1/events/stream?" + harness.q({"rule": "rare"}), last_event_id=start)
    t0 = time.time()
    frames = st.frames(lambda f: len(events_of(f)) >= 1, timeout=20)
    took = time.time() - t0
    st.close()
    got = [int(f["id"]) for f in events_of(frames)]
    eq(got, rare, "the rule's event, sent without waiting for a heartbeat (%.1f s)" % took)
    check(not any(f.get("comment") == "keep-alive" for f in frames), "no heartbeat before it: %r" % frames)
    s.stop()


@harness.test(timeout=240)
def test_an_erasure_while_matching_lags_is_no_failure():
    # the follower reads a commit in a snapshot taken before the patient's erasure, but the data key it opens
    # the body with is gone at once: that was "matching committed records: the patient's data key is gone",
    # an error logged, a failure counted and /healthz degraded, every event held back a second
    s = harness.Server(extra_args=SERVE_ARGS, name="notify-erase-lag")
    s.start()
    put_rule(s, {"name": "lag", "fields": ["notes"], "any": ["sepsis"]})
    start = last_seq(s)
    big = "sepsis " + "word " * 30000
    for round in range(3):
        who = "Erased %d" % round
        a = s.ingest_ok([rec(who, big, record_id="lag-%d-%d" % (round, i)) for i in range(300)])
        pid = a["items"][0]["patient_id"]
        r = s.request("DELETE", "/v1/patients/" + pid, body=json.dumps({"reason": "test"}),
                      headers={"Content-Type": "application/json"})
        eq(r.status, 200, "erasure")
    s.ingest_ok([rec("Kept", "sepsis", record_id="lag-kept")])
    ev = wait_events(s, start, 1, timeout=30)
    eq([e["record_id"] for e in ev], ["lag-kept"], "only the kept patient's event")
    m = s.get("/metrics").text
    check("medstream_notify_failures_total 0" in m, "no failure counted: %s" %
          [ln for ln in m.splitlines() if ln.startswith("medstream_notify_failures_total")])
    log = open(s.log_path, encoding="utf-8", errors="replace").read()
    check("data key is gone" not in log, "no failure logged: %s" %
          [ln for ln in log.splitlines() if "notifications:" in ln][:3])
    s.stop()


@harness.test(timeout=60)
def test_an_open_stream_ends_when_its_account_is_disabled():
    """The token is checked again before a stream hands over bytes: a clinician's open stream, once the account
    is disabled, ends without the next match (it kept delivering: the check when it opened was the only one)."""
    s = server()
    pw = "pw-" + harness.rand_token(12)
    user = "clin_" + harness.rand_token(6).lower()
    eq(post_json(s, "/v1/users", {"user": user, "password": pw, "role": "clinician"}).status, 201, "create")
    rname = unique_rule("dis")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["diswordone", "diswordtwo"]})
    st = SSE(s.port, s.token_for(user, pw), "/v1/events/stream?" + harness.q({"rule": rname}))
    eq(st.status, 200, "the clinician's stream")
    s.ingest_ok([rec("Dis " + harness.rand_token(5), "diswordone", record_id=rname + "-1")])
    eq(len(events_of(st.frames(lambda f: len(events_of(f)) >= 1, timeout=5))), 1, "a match while enabled")
    r = s.request("PATCH", "/v1/users/" + user, body=json.dumps({"disabled": True}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "disable: %s" % r.text[:200])
    s.ingest_ok([rec("Dis " + harness.rand_token(5), "diswordtwo", record_id=rname + "-2")])
    got = st.frames(lambda f: False, timeout=4)
    st.close()
    eq(events_of(got), [], "no match delivered once the account is disabled")
    check(st.closed, "the stream ended")


@harness.test(timeout=90)
def test_a_webhook_holds_while_its_creator_may_not_read_events():
    """A webhook delivers what its creator may read: a clinician's subscription went on posting matches after
    the account was disabled, and after it was deleted (the stream's check did not cover webhooks). Now it
    holds, saying why, and delivers what it held, in order, once the account is enabled again."""
    s = server()
    pw = "pw-" + harness.rand_token(12)
    user = "clin_" + harness.rand_token(6).lower()
    eq(post_json(s, "/v1/users", {"user": user, "password": pw, "role": "clinician"}).status, 201, "create")
    rname = unique_rule("whc")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["whcword"]})
    secret = "s" * 20
    rcv = Receiver(secret)
    r = post_json(s, "/v1/subscriptions", {"url": rcv.url(), "secret": secret, "rule": rname},
                  headers={"Authorization": "Bearer " + s.token_for(user, pw)})
    eq(r.status, 201, "the clinician subscribes: %s" % r.text[:200])
    sid = r.json()["id"]
    who = "Whc " + harness.rand_token(5)

    def posted():
        with rcv.lock:
            return [e["record_id"] for e in rcv.got]

    def wait_posted(n, timeout=10):
        t0 = time.time()
        while len(posted()) < n and time.time() - t0 < timeout:
            time.sleep(0.05)
        return posted()

    s.ingest_ok([rec(who, "whcword", record_id=rname + "-1")])
    eq(wait_posted(1), [rname + "-1"], "a match posted while the account is enabled")
    patch = {"Content-Type": "application/json"}
    eq(s.request("PATCH", "/v1/users/" + user, body=json.dumps({"disabled": True}), headers=patch).status, 200,
       "disable")
    s.ingest_ok([rec(who, "whcword", record_id=rname + "-2")])
    time.sleep(3)
    eq(posted(), [rname + "-1"], "nothing posted while the creator is disabled")
    st = s.get_json("/v1/subscriptions/" + sid)
    check("disabled" in (st.get("last_error") or ""), "the subscription says why it holds: %r" % st)
    eq(s.request("PATCH", "/v1/users/" + user, body=json.dumps({"disabled": False}), headers=patch).status, 200,
       "enable again")
    eq(wait_posted(2), [rname + "-1", rname + "-2"], "the held match posted once the account is enabled")
    eq(s.request("DELETE", "/v1/users/" + user).status, 204, "delete the account")
    s.ingest_ok([rec(who, "whcword", record_id=rname + "-3")])
    time.sleep(3)
    eq(posted(), [rname + "-1", rname + "-2"], "nothing posted once the creator's account is gone")
    check("no longer exists" in (s.get_json("/v1/subscriptions/" + sid).get("last_error") or ""), "says why")
    eq(s.request("DELETE", "/v1/subscriptions/" + sid).status, 204, "the admin deletes it")


@harness.test(timeout=60)
def test_webhooks_refuse_the_servers_network():
    """A subscriber decided where events went, the server's own network included: a webhook to a loopback or
    private address, or the cloud's metadata service, could reach services nobody meant to expose and read what
    answered from last_status and last_error. Without --webhook-allow-private, a literal such address is refused
    (400, naming it) and a name that resolves to one is refused at every connect (nothing posted; last_error
    says why)."""
    s = harness.Server(extra_args=["--webhook-max-backoff", "1", "--webhook-timeout", "2"], name="notify-ssrf")
    s.start()
    secret = "s" * 20
    rcv = Receiver(secret)
    for url in ("http://127.0.0.1:%d/hook" % rcv.port, "http://169.254.169.254/latest/meta-data/",
                "http://10.0.0.1/x", "http://[::1]:%d/hook" % rcv.port):
        r = post_json(s, "/v1/subscriptions", {"url": url, "secret": secret})
        eq(r.status, 400, "a subscription to %s (%s)" % (url, r.text[:200]))
        check("webhook-allow-private" in r.json()["error"], "the 400 names the way out: %s" % r.text)
    rname = unique_rule("ssrf")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["ssrfword"]})
    r = post_json(s, "/v1/subscriptions", {"url": "http://localhost:%d/hook" % rcv.port, "secret": secret,
                                           "rule": rname})
    eq(r.status, 201, "a name is taken; its addresses are checked at connect (%s)" % r.text[:200])
    sid = r.json()["id"]
    s.ingest_ok([rec("Ssrf " + harness.rand_token(5), "ssrfword", record_id=rname + "-1")])
    st = {}
    t0 = time.time()
    while time.time() - t0 < 10 and "loopback" not in (st.get("last_error") or ""):
        time.sleep(0.2)
        st = s.get_json("/v1/subscriptions/" + sid)
    check("loopback address" in (st.get("last_error") or ""), "the delivery refused, saying why: %r" % st)
    eq(rcv.calls, 0, "nothing reached the loopback receiver")
    s.stop()


@harness.test
def test_sse_heartbeat_and_latency():
    s = server()
    rname = unique_rule("hb")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["hbword"]})
    st = SSE(s.port, s.token, "/v1/events/stream?" + harness.q({"rule": rname}))
    fr = st.frames(lambda f: sum(1 for x in f if x.get("comment") == "keep-alive") >= 1, timeout=4)
    check(any(x.get("comment") == "keep-alive" for x in fr), "a heartbeat within 1 s: %r" % fr)
    t0 = time.time()
    s.ingest_ok([rec("Hb " + harness.rand_token(5), "hbword", record_id=rname + "-1")])
    got = events_of(st.frames(lambda f: len(events_of(f)) >= 1, timeout=5))
    took = time.time() - t0
    st.close()
    eq(len(got), 1, "the event arrives")
    check(took < 3.0, "ingest to event on the stream took %.3f s" % took)


@harness.test(timeout=60)
def test_webhook_failing_first_calls_gets_every_event_in_order():
    s = server()
    rname = unique_rule("wh")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["hookword"]})
    secret = "s3cret-" + harness.rand_token(16)
    rcv = Receiver(secret, fail_first=3)
    sub = subscribe(s, rcv.url(), secret, rule=rname)
    check("secret" not in sub, "the secret is never answered: %r" % sub)
    eq(sub["rule"], rname, "rule")
    eq(sub["state"], "idle", "state")
    who = "Wh " + harness.rand_token(6)
    n = 12
    for i in range(0, n, 4):
        s.ingest_ok([rec(who, "hookword %d" % (i + k), record_id="%s-%d" % (rname, i + k)) for k in range(4)])
    # and events of another rule, which this subscription must not get
    s.ingest_ok([rec(who, "nothing here", record_id=rname + "-other")])
    deadline = time.time() + 30
    while len(rcv.seqs()) < n and time.time() < deadline:
        time.sleep(0.1)
    seqs = rcv.seqs()
    eq(rcv.bad, [], "signatures and seq headers")
    eq(len(seqs), n, "every event delivered (got %r)" % seqs)
    eq(seqs, sorted(seqs), "in seq order")
    eq(len(set(seqs)), n, "each once (no failure after a 2xx)")
    eq(sorted(e["record_id"] for e in rcv.got), sorted("%s-%d" % (rname, i) for i in range(n)), "records")
    check(rcv.calls >= n + 3, "the first 3 calls failed and were retried (%d calls)" % rcv.calls)
    # The receiver keeps an event before it answers 204; medstream counts the delivery when the answer
    # arrives, so the state may lag the receiver by the last call's round trip.
    st = s.get_json("/v1/subscriptions/" + sub["id"])
    deadline = time.time() + 10
    while st["deliveries"] < n and time.time() < deadline:
        time.sleep(0.05)
        st = s.get_json("/v1/subscriptions/" + sub["id"])
    eq(st["delivered_seq"], seqs[-1], "delivered_seq")
    eq(st["failures_total"], 3, "failures_total")
    eq(st["failures"], 0, "no failure in a row now")
    eq(st["deliveries"], n, "deliveries")
    check("secret" not in st, "no secret in the state")
    listed = [x["id"] for x in s.get_json("/v1/subscriptions")["subscriptions"]]
    check(sub["id"] in listed, "listed")
    m = s.get("/metrics").text
    check('medstream_webhook_failures_total{subscription="%s"} 3' % sub["id"] in m, "failures metric")
    check('medstream_webhook_deliveries_total{subscription="%s"} %d' % (sub["id"], n) in m, "deliveries metric")
    with open(s.log_path, "rb") as f:
        check(secret.encode() not in f.read(), "the secret is in the log")
    eq(s.request("DELETE", "/v1/subscriptions/" + sub["id"]).status, 204, "delete")
    eq(s.get("/v1/subscriptions/" + sub["id"]).status, 404, "gone")


@harness.test(timeout=60)
def test_hanging_webhook_stalls_neither_others_nor_ingest():
    s = server()
    rname = unique_rule("hang")
    put_rule(s, {"name": rname, "fields": ["notes"], "any": ["hangword"]})
    secret = "hang-secret-" + harness.rand_token(10)
    stuck = Receiver(secret, hang=True)
    ok = Receiver(secret)
    sub_stuck = subscribe(s, stuck.url(), secret, rule=rname)
    subscribe(s, ok.url(), secret, rule=rname)
    who = "Hang " + harness.rand_token(6)
    n = 10
    t0 = time.time()
    for i in range(n):
        a = time.time()
        s.ingest_ok([rec(who, "hangword %d" % i, record_id="%s-%d" % (rname, i))])
        check(time.time() - a < 2.0, "ingest took %.2f s while a webhook hangs" % (time.time() - a))
    while len(ok.seqs()) < n and time.time() - t0 < 10:
        time.sleep(0.05)
    eq(len(ok.seqs()), n, "the other subscription got every event while one target hangs")
    check(time.time() - t0 < 8, "it took %.1f s" % (time.time() - t0))
    eq(ok.bad, [], "signatures")
    time.sleep(2.5)  # past --webhook-timeout 2
    st = s.get_json("/v1/subscriptions/" + sub_stuck["id"])
    check(st["failures_total"] >= 1 and st["state"] == "retrying", "the hanging one is retrying: %r" % st)
    check("timed out" in (st["last_error"] or ""), "last_error: %r" % st["last_error"])
    check(st["next_retry_at"] is not None, "next_retry_at")
    eq(st["delivered_seq"], sub_stuck["delivered_seq"], "nothing delivered to the hanging one")
    stuck.release.set()


@harness.test
def test_bad_subscriptions_are_400():
    s = server()
    good = "a-long-enough-secret"
    cases = [
        ({"url": "ftp://127.0.0.1/x", "secret": good}, "url:"),
        ({"url": "file:///etc/passwd", "secret": good}, "url:"),
        ({"url": "http://127.0.0.1/x?y=1", "secret": good}, "url:"),
        ({"url": "not a url", "secret": good}, "url:"),
        ({"url": "http://127.0.0.1/x"}, "secret: required"),
        ({"url": "http://127.0.0.1/x", "secret": "short"}, "secret:"),
        ({"secret": good}, "url: required"),
        ({"url": "http://127.0.0.1/x", "secret": good, "rule": "no-such-rule"}, 'no rule named "no-such-rule"'),
        ({"url": "http://127.0.0.1/x", "secret": good, "hmm": 1}, 'unknown member "hmm"'),
        ({"url": "http://127.0.0.1/x", "secret": good, "since": -1}, "since:"),
    ]
    for body, want in cases:
        r = post_json(s, "/v1/subscriptions", body)
        eq(r.status, 400, "POST /v1/subscriptions %r" % body)
        check(want in r.json()["error"], "error %r lacks %r" % (r.json()["error"], want))
    # https is accepted (delivery checks the certificate)
    r = post_json(s, "/v1/subscriptions", {"url": "https://127.0.0.1:1/x", "secret": good})
    eq(r.status, 201, "https URL")
    eq(s.request("DELETE", "/v1/subscriptions/" + r.json()["id"]).status, 204, "delete it")


@harness.test(timeout=40)
def test_a_rule_filter_that_is_no_rule_name_is_400():
    # ?rule= (empty) read no event at all from GET /v1/events (after looking at up to 100,000) and every event
    # from the stream, and a name no rule can have read nothing, both answered 200
    s = server()
    for value in ("", "a b", "x" * 65):
        for path in ("/v1/events", "/v1/events/stream"):
            r = s.request("GET", path + "?" + harness.q({"rule": value}))
            eq(r.status, 400, "GET %s?rule=%r" % (path, value))
            check("rule:" in r.json()["error"], "the error names the parameter: %r" % r.text)


@harness.test(timeout=90)
def test_rules_events_and_positions_survive_restart_and_kill9():
    rules_file = os.path.join(harness.tempfile.mkdtemp(prefix="medstream-rules-"), "rules.json")
    with open(rules_file, "w") as f:
        json.dump([{"name": "filerule", "fields": ["notes"], "any": ["fileword"]}], f)
    s = harness.Server(extra_args=SERVE_ARGS + ["--rules", rules_file], name="notify-restart")
    s.start()
    put_rule(s, {"name": "apirule", "fields": ["notes"], "any": ["apiword"]})
    rules = {r["name"]: r["source"] for r in s.get_json("/v1/rules")["rules"]}
    eq(rules, {"filerule": "file", "apirule": "api"}, "rules and their sources")
    eq(s.request("DELETE", "/v1/rules/filerule").status, 409, "a file rule is not deleted over the API")
    eq(post_json(s, "/v1/rules", {"name": "filerule", "fields": ["x"], "any": ["y"]}).status, 409,
       "nor replaced")
    secret = "restart-secret-" + harness.rand_token(8)
    rcv = Receiver(secret)
    sub = subscribe(s, rcv.url(), secret, rule="apirule")
    who = "Rs " + harness.rand_token(6)
    s.ingest_ok([rec(who, "fileword apiword", record_id="r1"), rec(who, "nothing", record_id="r2")])
    ev = wait_events(s, 0, 2)
    eq(sorted(e["rule"] for e in ev), ["apirule", "filerule"], "events")
    deadline = time.time() + 10
    while len(rcv.seqs()) < 1 and time.time() < deadline:
        time.sleep(0.05)
    eq(len(rcv.seqs()), 1, "delivered before the restart")
    time.sleep(1.2)  # the webhook position is saved when it catches up
    s.stop()
    s.start()
    eq({r["name"]: r["source"] for r in s.get_json("/v1/rules")["rules"]}, rules, "rules after a restart")
    eq(events_after(s, 0), ev, "events after a restart")
    eq(s.get_json("/v1/subscriptions/" + sub["id"])["rule"], "apirule", "subscription after a restart")
    # kill -9 with matches in flight: afterwards every matching record has exactly its events
    batches = 6
    for b in range(batches):
        s.ingest_ok([rec(who, "apiword %d" % i, record_id="k%d-%d" % (b, i)) for i in range(20)])
    s.kill9()
    s.start()
    want = 1 + batches * 20
    ev2 = wait_events(s, 0, 2 + batches * 20, timeout=20)
    api_ev = [e for e in ev2 if e["rule"] == "apirule"]
    eq(len(api_ev), want, "apirule events after kill -9")
    eq(len({e["record_id"] for e in api_ev}), want, "one per record: none lost, none twice")
    seqs = [e["seq"] for e in ev2]
    eq(seqs, list(range(1, len(seqs) + 1)), "seqs dense from 1")
    # the webhook goes on from its position: every apirule event, none before its last delivery again
    deadline = time.time() + 20
    while len(set(rcv.seqs())) < want and time.time() < deadline:
        time.sleep(0.1)
    eq(sorted(set(rcv.seqs())), [e["seq"] for e in api_ev], "webhook deliveries across kill -9")
    eq(rcv.seqs().count(api_ev[0]["seq"]), 1, "the event delivered before the clean restart came once")
    s.stop()
    # a bad rules file stops the start with the rule and the problem named
    with open(rules_file, "w") as f:
        json.dump([{"name": "ok", "fields": ["n"], "any": ["x"]}, {"name": "broken", "fields": ["n"], "regex": "a("}],
                  f)
    try:
        s.start(health_timeout=5)
        fail("serve started with a bad rules file")
    except harness.TestFailure as e:
        check('rule "broken": regex 1: Missing close parenthesis' in s.log_tail(3000), "log: %s" % e)


def sse_clients(s):
    m = s.get("/metrics").text
    return int([ln for ln in m.splitlines() if ln.startswith("medstream_sse_clients ")][0].split()[1])


@harness.test(timeout=60)
def test_stream_limit_deadlines_dead_clients_and_stop():
    # the edge's deadline (1 s) must not cut a quiet stream; the heartbeat (15 s) is not what finds a dead client
    s = harness.Server(extra_args=["--sse-max-streams", "2", "--header-timeout", "1"], name="notify-streams")
    s.start()
    put_rule(s, {"name": "quiet", "fields": ["notes"], "any": ["quietword"]})
    a = SSE(s.port, s.token)
    b = SSE(s.port, s.token)
    eq((a.status, b.status), (200, 200), "two streams")
    r = s.get("/v1/events/stream")
    eq(r.status, 503, "a third stream")
    check("too many event streams" in r.json()["error"], "error: %s" % r.text)
    a.frames(lambda f: len(f) >= 1)
    b.frames(lambda f: len(f) >= 1)
    eq(sse_clients(s), 2, "medstream_sse_clients")
    # a client that goes away is noticed at once, not at the next heartbeat or event
    b.close()
    t0 = time.time()
    while sse_clients(s) != 1 and time.time() - t0 < 5:
        time.sleep(0.05)
    eq(sse_clients(s), 1, "streams once a client hung up")
    check(time.time() - t0 < 2, "noticed after %.1f s" % (time.time() - t0))
    b = SSE(s.port, s.token)  # its place is free again
    eq(b.status, 200, "a stream in the freed place")
    b.frames(lambda f: len(f) >= 1)
    time.sleep(2.5)  # quiet for longer than --header-timeout
    s.ingest_ok([rec("Quiet " + harness.rand_token(5), "quietword", record_id="quiet-1")])
    got = events_of(a.frames(lambda f: len(events_of(f)) >= 1, timeout=5))
    eq(len(got), 1, "a stream quiet for longer than the header deadline still delivers")
    check(not a.closed, "the quiet stream is open")
    t0 = time.time()
    rc = s.stop()
    took = time.time() - t0
    eq(rc, 0, "exit code of a stop with streams open")
    check(took < 4.0, "stop took %.1f s with streams open" % took)
    a.frames(lambda f: False, timeout=2)
    check(a.closed, "the stream ended")
    a.close()
    b.close()


def self_signed(d, name):
    import subprocess
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True)
    eq(r.returncode, 0, "openssl made a certificate")
    return cert, key


@harness.test(timeout=60)
def test_https_webhook_checks_the_certificate():
    d = harness.tempfile.mkdtemp(prefix="medstream-hook-tls-")
    trusted, untrusted = self_signed(d, "trusted"), self_signed(d, "untrusted")
    s = harness.Server(extra_args=SERVE_ARGS + ["--webhook-ca", trusted[0]], name="notify-https")
    s.start()
    put_rule(s, {"name": "tlsrule", "fields": ["notes"], "any": ["tlsword"]})
    secret = "tls-secret-" + harness.rand_token(10)
    good, bad = Receiver(secret, tls=trusted), Receiver(secret, tls=untrusted)
    sub_good = subscribe(s, good.url(), secret, rule="tlsrule")
    sub_bad = subscribe(s, bad.url(), secret, rule="tlsrule")
    s.ingest_ok([rec("Tls " + harness.rand_token(5), "tlsword %d" % i, record_id="tls-%d" % i) for i in range(5)])
    deadline = time.time() + 15
    while len(good.seqs()) < 5 and time.time() < deadline:
        time.sleep(0.1)
    eq(len(good.seqs()), 5, "events over https to the trusted receiver")
    eq(good.bad, [], "signatures")
    eq(s.get_json("/v1/subscriptions/" + sub_good["id"])["failures_total"], 0, "no failure")
    st = s.get_json("/v1/subscriptions/" + sub_bad["id"])
    eq(bad.seqs(), [], "nothing reaches a receiver whose certificate does not check out")
    check(st["failures_total"] >= 1 and "certificate" in (st["last_error"] or ""), "state: %r" % st)


@harness.test(timeout=120)
def test_events_topic_on_kafka():
    try:
        from confluent_kafka import Consumer
    except ImportError:
        raise harness.Skip("python3-confluent-kafka is not installed")
    import subprocess
    mock_bin = os.path.join(harness.REPO_ROOT, "build", "kafka_mock")
    if not os.path.exists(mock_bin):
        raise harness.Skip("build/kafka_mock is not built (make build/kafka_mock)")
    mock = subprocess.Popen([mock_bin, "nrec:1", "nrec.dlq:1", "nevents:2"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    bootstrap = mock.stdout.readline().strip()
    harness.on_exit(lambda: (mock.stdin.close(), mock.wait(timeout=10)))
    check(":" in bootstrap, "kafka_mock's bootstrap servers: %r" % bootstrap)
    s = harness.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "nrec", "--events-topic", "nevents"],
                       name="notify-kafka")
    s.start()
    put_rule(s, {"name": "kword", "fields": ["notes"], "any": ["kafkaword"]})
    who = "Kf " + harness.rand_token(6)
    s.ingest_ok([rec(who, "kafkaword %d" % i, record_id="kf-%d" % i) for i in range(15)] +
                [rec(who, "other %d" % i, record_id="ko-%d" % i) for i in range(5)])
    stored = wait_events(s, 0, 15)
    eq(len(stored), 15, "events stored")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "events-reader", "auto.offset.reset": "earliest"})
    c.subscribe(["nevents"])
    got = {}
    deadline = time.time() + 30
    while len(got) < 15 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        ev = json.loads(m.value())
        eq(m.key().decode(), ev["patient_id"], "key is the patient id")
        eq(dict(m.headers() or [])["medstream-event-seq"].decode(), str(ev["seq"]), "seq header")
        got[ev["seq"]] = ev
    c.close()
    eq(sorted(got.values(), key=lambda e: e["seq"]), stored, "the topic holds every stored event, as stored")
    check(who not in json.dumps(list(got.values())), "no PHI in the messages")
    m = s.get("/metrics").text
    check("medstream_notify_kafka_position 15" in m, "position metric")
    # an erasure: the topic gets a tombstone under the patient's key (a compacted topic drops its events),
    # after every event of it, and none for another patient; the certificate's events_topic view says done
    other = "Ko " + harness.rand_token(6)
    s.ingest_ok([rec(other, "kafkaword o%d" % i, record_id="kx-%d" % i) for i in range(2)])
    eq(len(wait_events(s, 15, 2)), 2, "the other patient's events stored")
    pid = stored[0]["patient_id"]
    r = s.request("DELETE", "/v1/patients/" + pid, body=json.dumps({"reason": "events topic test"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "erase (%s)" % r.text[:300])
    views = {}
    deadline = time.time() + 30
    while views.get("events_topic") != "done" and time.time() < deadline:
        cert = s.get_json("/v1/patients/%s/erasure" % pid)
        views = {v["view"]: v["status"] for v in cert["views"]}
        time.sleep(0.1)
    eq(views.get("events_topic"), "done", "the certificate's events_topic view (%s)" % views)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "events-reader-2", "auto.offset.reset": "earliest"})
    c.subscribe(["nevents"])
    msgs = []
    deadline = time.time() + 30
    while not any(x[2] is None for x in msgs) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        msgs.append((m.key().decode(), m.offset(), m.value(), dict(m.headers() or []), m.partition()))
    c.close()
    tombs = [x for x in msgs if x[2] is None]
    eq([x[0] for x in tombs], [pid], "tombstones on the events topic: one, under the erased patient's id")
    eq(tombs[0][3].get("medstream.erased"), b"patient", "its header")
    mine = [x for x in msgs if x[0] == pid and x[2] is not None]
    eq(len(mine), 15, "the patient's events before it")
    check(all(x[4] == tombs[0][4] and x[1] < tombs[0][1] for x in mine),
          "the tombstone comes after every event of the patient, in their partition")
    check("medstream_notify_kafka_tombstones_total 1" in s.get("/metrics").text, "tombstones metric")


if __name__ == "__main__":
    harness.main()

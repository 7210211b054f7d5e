# End-to-end tests of medstream as an operated service (issue 10, item 3): the access log, --log-format
# json, the token-free metrics listener and what the Kafka consumer logs.
#
#   - access log: one line per request with the route pattern (never the path or its query string),
#     status, response bytes, ms, user and a request id that the answer carries as X-Request-Id; no PHI
#     in any line, even for an identity lookup by name and date of birth, a record read by a
#     client-chosen id, an ingest whose rejected line holds marker values, and a method the client made up
#     (logged as -);
#   - --log-format json: every line the server writes in a run, start to stop, is one JSON object;
#   - --access-log off: no request lines (the header stays);
#   - --metrics-listen: GET /metrics without a token on its own loopback port while the main port still
#     wants one; nothing else there; a non-loopback address refused (exit 2) unless
#     --metrics-listen-any; a port in use is exit 1;
#   - Kafka: connects, rebalances and dead letters logged (count and reason class, never the payload),
#     the brokers going away and coming back.
#
# Run: /usr/bin/python3 tests/e2e/test_ops.py [NAME_SUBSTRING...]

import json
import os
import re
import subprocess
import time

import harness as H
from harness import check, eq, short, test

MOCK = os.path.join(H.REPO_ROOT, "build", "kafka_mock")
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{16}$")


def run_log(s):
    """The lines the server wrote in its last run (the harness's own "=== ..." header lines left out)."""
    with open(s.log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    text = text[text.rfind("\n=== ") + 1:] if "\n=== " in text else text
    return [l for l in text.splitlines() if not l.startswith("=== ")]


def json_lines(s):
    """Every line of the last run parsed as JSON; fails naming the first line that is not an object."""
    out = []
    for l in run_log(s):
        try:
            j = json.loads(l)
        except ValueError as e:
            H.fail("a log line is not JSON (%s): %r" % (e, l[:300]))
        check(isinstance(j, dict), "a log line is not a JSON object: %r" % l[:300])
        for k in ("time", "level", "event", "msg"):
            check(k in j, "log line without %r: %r" % (k, l[:300]))
        H.parse_time(j["time"])
        check(j["level"] in ("debug", "info", "warn", "error"), "level %r" % j["level"])
        out.append(j)
    return out


def request_lines(lines):
    return {j["request_id"]: j for j in lines if j["event"] == "http.request"}


def rid_of(r):
    rid = r.headers.get("x-request-id", "")
    check(REQUEST_ID_RE.match(rid), "X-Request-Id of an answer: %r" % rid)
    return rid


@test(timeout=120)
def test_access_log_json_has_route_status_user_and_no_phi():
    s = H.Server(extra_args=["--log-format", "json"], name="ops-json")
    s.start()
    marker = H.rand_token(12)
    name, dob = "Zed %s Quux" % marker.capitalize(), "1971-03-04"
    phi_value = "phi-value-" + H.rand_token(10)
    record_id = "rec-" + H.rand_token(10)       # client-chosen: may be anything, so never logged
    expect = {}                                  # request id -> (method, route, status, user, bytes)

    def note(r, method, route, status, user):
        eq(r.status, status, "%s %s" % (method, route))
        expect[rid_of(r)] = (method, route, status, user, len(r.body))

    r = s.ingest([{"record_id": record_id, "name": name, "dob": dob, "diagnosis": phi_value},
                  # a rejected line holding marker values (a bad dob)
                  {"record_id": "bad-" + marker, "name": name, "dob": "1971-02-30", "diagnosis": phi_value}])
    note(r, "POST", "/v1/records", 200, "admin")
    eq(r.json()["errors"], 1, "one rejected line")
    pid = r.json()["items"][0]["patient_id"]
    # the identity lookup: name and dob only in the query string
    r = s.get("/v1/patients?" + H.q({"name": name, "dob": dob}))
    note(r, "GET", "/v1/patients", 200, "admin")
    eq(r.json()["patient_id"], pid, "lookup by identity")
    r = s.get("/v1/patients?" + H.q({"name": name + " Other", "dob": dob}))
    note(r, "GET", "/v1/patients", 404, "admin")
    note(s.get("/v1/records/" + record_id), "GET", "/v1/records/{record_id}", 200, "admin")
    note(s.get("/v1/patients/%s?%s" % (pid, H.q({"as_of": H.now_rfc3339()}))), "GET", "/v1/patients/{patient_id}", 200, "admin")
    # an ingest refused as a whole, with a marker in its body
    note(s.ingest(phi_value.encode() + b"\n", content_type="text/plain"), "POST", "/v1/records", 415, "admin")
    # refusals: no token, a role without the permission (its user is known), an unknown path
    note(s.get("/v1/records/" + record_id, headers={"Authorization": None}), "GET", "/v1/records/{record_id}", 401, "-")
    note(s.request("POST", "/v1/users", body=json.dumps({"user": "ops-analyst", "password": "analyst-password",
                                                          "role": "analyst"}),
                   headers={"Content-Type": "application/json"}), "POST", "/v1/users", 201, "admin")
    analyst = s.token_for("ops-analyst", "analyst-password")
    note(s.get("/v1/patients?" + H.q({"name": name, "dob": dob}), headers={"Authorization": "Bearer " + analyst}),
         "GET", "/v1/patients", 403, "ops-analyst")
    note(s.get("/v1/no-such/%s?name=%s" % (marker, marker)), "GET", "-", 404, "-")  # no route: no token read
    note(s.request("PUT", "/v1/records/" + record_id), "PUT", "/v1/records/{record_id}", 405, "-")
    # a method the client made up is a token of its choosing (as an X-Request-Id would be): never logged
    note(s.request("Q" + marker.upper(), "/v1/patients"), "-", "/v1/patients", 405, "-")
    note(H.http_request(s.port, "GET", "/healthz"), "GET", "/healthz", 200, "-")
    eq(s.stop(), 0, "exit code after SIGTERM")

    lines = json_lines(s)
    events = [j["event"] for j in lines]
    check("serve.ready" in events and "serve.stopping" in events, "start and stop are logged: %s" % events)
    by_id = request_lines(lines)
    for rid, (method, route, status, user, nbytes) in expect.items():
        check(rid in by_id, "no access-log line with request id %s (%s %s %d)" % (rid, method, route, status))
        j = by_id[rid]
        eq((j["method"], j["route"], j["status"], j["user"], j["bytes"]), (method, route, status, user, nbytes),
           "access-log line %s" % rid)
        check(isinstance(j["ms"], (int, float)) and 0 <= j["ms"] < 60000, "ms of %s: %r" % (rid, j["ms"]))
        eq(j["client"], "127.0.0.1", "client of %s" % rid)
        eq(j["level"], "info", "level of a request line")
        check("end" not in j, "an exchange completed normally has no 'end': %r" % j)
    check(len(by_id) >= len(expect) + 2, "every request has a line (logins too): %d lines" % len(by_id))
    text = "\n".join(run_log(s))
    for secret in (marker, marker.capitalize(), marker.upper(), name, dob, "1971-02-30", phi_value, record_id, pid, "name=", "dob=",
                   "as_of=", "analyst-password", s.admin_password()):
        check(secret not in text, "%r appears in the server log: %s" % (secret, short(text, 2000)))


@test(timeout=60)
def test_no_core_dump_can_hold_phi():
    """A core dump of the server would write PHI in the clear and the store's keys outside the store's
    encryption and erasure: the server runs with RLIMIT_CORE 0, soft and hard, whatever it was started with."""
    s = H.Server(name="ops-core")
    s.start()
    with open("/proc/%d/limits" % s.proc.pid) as f:
        line = [l for l in f if l.startswith("Max core file size")]
    eq(len(line), 1, "the core limit line")
    eq(line[0].split()[4:6], ["0", "0"], "soft and hard core limits: %r" % line[0])
    s.stop()


@test(timeout=60)
def test_access_log_text_lines_and_off():
    s = H.Server(name="ops-text")
    s.start()
    r = s.get("/v1/patients?" + H.q({"name": "Text Person", "dob": "1980-01-01"}))
    eq(r.status, 404, "lookup of an unknown identity")
    rid = rid_of(r)
    s.stop()
    lines = [l for l in run_log(s) if rid in l]
    eq(len(lines), 1, "one text line for the request")
    m = re.match(r"^medstream: GET /v1/patients 404 bytes=(\d+) ms=(\d+\.\d{3}) user=admin client=127\.0\.0\.1 "
                 r"request_id=([0-9a-f]{16})$", lines[0])
    check(m, "the text access line: %r" % lines[0])
    eq(int(m.group(1)), len(r.body), "bytes")
    eq(m.group(3), rid, "request id")
    check(not any(l.startswith("{") for l in run_log(s)), "text mode writes no JSON")
    check(any(l.startswith("medstream: serving ") for l in run_log(s)), "the ready line as before")

    off = H.Server(extra_args=["--access-log", "off"], name="ops-off")
    off.start()
    r = off.get("/healthz")
    rid = rid_of(r)
    off.stop()
    check(not any(rid in l or " bytes=" in l for l in run_log(off)), "no request lines with --access-log off: %s"
          % short(" | ".join(run_log(off))))


def serve_once(args, timeout=20):
    """Run serve with args until it exits (expected to refuse); (exit code, stderr)."""
    try:
        p = subprocess.run([H.BIN, "serve"] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        H.fail("serve %s did not exit within %d s" % (" ".join(args), timeout))
    return p.returncode, p.stderr.decode("utf-8", "replace")


@test(timeout=90)
def test_metrics_listener_needs_no_token_and_serves_nothing_else():
    mport = H.free_port()
    s = H.Server(extra_args=["--metrics-listen", "127.0.0.1:%d" % mport, "--log-format", "json"], name="ops-metrics")
    s.start()
    s.ingest_ok([{"record_id": "m-1", "name": "Metrics Person", "dob": "1990-09-09"}])
    r = H.http_request(mport, "GET", "/metrics")
    eq(r.status, 200, "GET /metrics on the metrics port without a token")
    check(r.headers.get("content-type", "").startswith("text/plain"), "Prometheus text: %s" % r.headers)
    check(re.search(r'^medstream_records_total\{status="created"\} 1$', r.text, re.M), "the figures: %s"
          % short(r.text))
    check(re.search(r"^medstream_patients 1$", r.text, re.M), "the patient gauge is refreshed too")
    rid_of(r)
    # the main port still wants a token for the same figures
    eq(H.http_request(s.port, "GET", "/metrics").status, 401, "GET /metrics on the main port without a token")
    eq(s.get("/metrics").status, 200, "GET /metrics on the main port with a token")
    # nothing else on the metrics port, with or without a token
    for method, path, status in (("GET", "/healthz", 404), ("GET", "/v1/users", 404), ("GET", "/metrics/x", 404),
                                 ("GET", "/", 404), ("POST", "/metrics", 405), ("DELETE", "/metrics", 405)):
        r = H.http_request(mport, method, path, headers={"Authorization": "Bearer " + s.token})
        eq(r.status, status, "%s %s on the metrics port" % (method, path))
    # a query string is ignored, and never logged
    eq(H.http_request(mport, "GET", "/metrics?name=Metrics+Person").status, 200, "a query string on /metrics")
    s.stop()
    lines = json_lines(s)
    check(any(j["event"] == "serve.metrics_listen" for j in lines), "the metrics port is announced")
    scrapes = [j for j in lines if j["event"] == "http.request" and j["route"] == "/metrics" and j["status"] == 200]
    check(len(scrapes) >= 3, "scrapes are in the access log: %d" % len(scrapes))
    check("Metrics Person" not in "\n".join(run_log(s)), "no name in the log")

    # where it may listen
    d = s.data_dir
    rc, err = serve_once(["--data", d, "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:%d" % mport])
    eq(rc, 2, "a metrics address on every interface without --metrics-listen-any (stderr %s)" % short(err))
    check("loopback" in err and "--metrics-listen-any" in err, "the refusal says why and what to do: %s" % err)
    rc, err = serve_once(["--data", d, "--listen", "127.0.0.1:0", "--metrics-listen", "10.1.2.3:9"])
    eq(rc, 2, "another machine's address (stderr %s)" % short(err))
    rc, err = serve_once(["--data", d, "--listen", "127.0.0.1:0", "--metrics-listen-any"])
    eq(rc, 2, "--metrics-listen-any alone (stderr %s)" % short(err))
    rc, err = serve_once(["--data", d, "--listen", "127.0.0.1:0", "--metrics-listen", "nonsense"])
    eq(rc, 2, "an address that is not HOST:PORT (stderr %s)" % short(err))
    busy = H.free_port()
    rc, err = serve_once(["--data", d, "--listen", "127.0.0.1:%d" % busy, "--metrics-listen", "127.0.0.1:%d" % busy])
    eq(rc, 1, "the metrics port taken by the main port (stderr %s)" % short(err))
    check("address already in use" in err, "says the address is in use: %s" % err)
    # allowed everywhere when asked for
    anyport = H.free_port()
    t = H.Server(extra_args=["--metrics-listen", "0.0.0.0:%d" % anyport, "--metrics-listen-any"], name="ops-any")
    t.data_dir, t.initialized = d, True
    t.start()
    eq(H.http_request(anyport, "GET", "/metrics").status, 200, "scrape with --metrics-listen-any")
    t.stop()
    check(any("--metrics-listen" in l and "every interface" in l for l in run_log(t)),
          "the warning names --metrics-listen: %s" % short(" | ".join(run_log(t))))


@test(timeout=120)
def test_kafka_connect_rebalance_dead_letters_outage_and_return_are_logged():
    try:
        from confluent_kafka import Producer
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    mock = subprocess.Popen([MOCK, "opslog:4", "opslog.dlq:1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    bootstrap = mock.stdout.readline().strip()
    check(":" in bootstrap, "kafka_mock printed its bootstrap servers (%r)" % bootstrap)
    H.on_exit(lambda: (mock.stdin.close(), mock.wait(timeout=10)) if mock.poll() is None else None)
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "opslog", "--kafka-group", "g-opslog",
                             "--log-format", "json"], name="ops-kafka")
    s.start()
    marker = H.rand_token(12)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    p.produce("opslog", key=marker.encode(), value=json.dumps({"record_id": "k-good", "name": "Kafka Ops",
                                                                "dob": "1970-07-07"}))
    p.produce("opslog", key=marker.encode(), value=("{not json " + marker).encode())
    p.produce("opslog", key=marker.encode(), value=json.dumps({"record_id": "k-noid", "note": marker}))
    p.produce("opslog", key=marker.encode(), value=json.dumps({"record_id": "k-baddob", "name": "Kafka " + marker,
                                                                "dob": "1970-13-01"}))
    p.flush(10)
    del p  # (its own complaints about the brokers going away would go to this test's output)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30 and "medstream_kafka_dead_letters_total 3" not in s.get("/metrics").text:
        time.sleep(0.2)
    check("medstream_kafka_dead_letters_total 3" in s.get("/metrics").text, "three dead letters")
    # an outage and its end: every broker down, then up again on the same ports
    mock.stdin.write("down\n")
    mock.stdin.flush()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and s.get_json("/healthz")["status"] != "degraded":
        time.sleep(0.25)
    eq(s.get_json("/healthz")["status"], "degraded", "health while the brokers are down")
    mock.stdin.write("up\n")
    mock.stdin.flush()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30 and s.get_json("/healthz")["status"] != "ok":
        time.sleep(0.25)
    eq(s.get_json("/healthz")["status"], "ok", "health once the brokers are back")
    s.stop()
    lines = json_lines(s)   # librdkafka's own complaints about the lost brokers included
    by_event = {}
    for j in lines:
        by_event.setdefault(j["event"], []).append(j)
    check("kafka.connected" in by_event, "the first contact is logged: %s" % sorted(by_event))
    check(by_event["kafka.connected"][0]["brokers"] >= 1, "with the broker count")
    assigned = by_event.get("kafka.assigned", [])
    check(assigned and assigned[0]["partitions"] == 4 and assigned[0]["group"] == "g-opslog",
          "the assignment with its partition count: %s" % assigned)
    dl = by_event.get("kafka.dead_letters", [])
    eq(sum(j["count"] for j in dl), 3, "dead letters counted in the log")
    reasons = ",".join(j["reasons"] for j in dl)
    for cls in ("malformed", "identity_missing", "field_invalid"):
        check(cls in reasons, "reason class %s in %r" % (cls, reasons))
    check(all(j["topic"] == "opslog.dlq" for j in dl), "the dead-letter topic is named")
    check("kafka.unreachable" in by_event, "the brokers going away is logged: %s" % sorted(by_event))
    check("kafka.reachable" in by_event, "their return is logged: %s" % sorted(by_event))
    back = by_event["kafka.reachable"][0]
    check(back["brokers"] >= 1 and back["down_ms"] > 0, "with the broker count and the outage's length: %s" % back)
    text = "\n".join(run_log(s))
    for secret in (marker, "Kafka Ops", "1970-07-07", "1970-13-01", "not json"):
        check(secret not in text, "%r appears in the server log: %s" % (secret, short(text, 1500)))


@test(timeout=90)
def test_sighup_stops_serve_cleanly_as_sigterm_does():
    """SIGHUP (a closed terminal or ssh session; `kill -HUP`, which daemons often take for a reload) killed
    serve at once by its default action: no "stopping" line, followers' positions and counters not saved,
    an exit by signal that systemd's Restart=on-failure counts as a crash. It is a clean stop now."""
    import signal
    s = H.Server(name="sighup")
    s.start()
    rids = [it["record_id"] for it in s.ingest_ok([{"record_id": "hup-%d" % i, "name": "Hang Up", "dob": "1970-02-02"}
                                                   for i in range(20)])["items"]]
    p = s.proc
    p.send_signal(signal.SIGHUP)
    try:
        rc = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        H.fail("serve did not stop within 30 s of SIGHUP")
    s.proc = None
    eq(rc, 0, "serve's exit code after SIGHUP")
    check(any("stopping (signal %d)" % signal.SIGHUP in l for l in run_log(s)), "it logs its stop: %s" % run_log(s)[-3:])
    s.start()
    for rid in rids:
        eq(s.get("/v1/records/" + rid).status, 200, "record %s after the restart" % rid)
    s.stop()


if __name__ == "__main__":
    H.main()

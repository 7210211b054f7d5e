# End-to-end tests of an erasure's followers (issue 15, item 5): after DELETE /v1/patients/{id}, every sink and
# view that follows the commit log removes the patient downstream, and the certificate (GET
# /v1/patients/{id}/erasure) says "done" for each only once it has. One server with all of them at once:
# PostgreSQL (a real PostgreSQL 15, test_postgres.py's cluster), the public Kafka topic (build/kafka_mock,
# librdkafka's mock cluster, as test_kafka.py), the lake (read back with pyarrow from build/venv, as
# test_lake.py), counters (--counters FILE) and notifications (a rule over the API). Two patients are
# ingested, one is erased; then:
#   - PostgreSQL has no row with its id in any table of the medstream schema (current, history, versions,
#     records, public copies, patient_index); the other patient's rows are all there;
#   - the public topic has a tombstone (null value) under its key for each of its record versions (the
#     record id in a header) and one for the patient, and none under the other's key;
#   - no lake file holds a row of it (every Parquet file read), the other's rows are all there, and the
#     commits log still describes every file (a rewrite's new bytes and sha256 in its "rewritten" list);
#   - the counters count exactly the other patient's records (numbers before and after);
#   - its events are gone from GET /v1/events and from an SSE stream read from the start; the other's stay.
# A second test starts the sinks only after the erasure: they read the erased patient's older log entries
# (bodiless tombstones now) without failing and never ship it. A third kills the server in the middle of the
# lake's rewrite (MEDSTREAM_TEST_LAKE_CRASH=erase): the next start finishes it and logs it.
#
# Run: /usr/bin/python3 tests/e2e/test_erasure_sinks.py [NAME_SUBSTRING...]

import datetime
import json
import os
import subprocess
import time

import harness as H
import lake_files as LF
from harness import check, eq, fail, short, test

# the helpers of the sink tests, without registering their tests here
_registered = len(H._tests)
import test_postgres as TP  # noqa: E402
import test_kafka as TK  # noqa: E402
import test_export as TE  # noqa: E402
import test_notify as TN  # noqa: E402
del H._tests[_registered:]

UTC = datetime.timezone.utc
COUNTERS = [
    {"name": "labs", "type": "lab", "max_window": "1h"},
    {"name": "final", "where": {"field": "status", "equals": "final"}, "max_window": "1h"},
    {"name": "navy", "where": {"field": "favorite_color", "equals": "navy"}, "max_window": "1h"},
]
PG_TABLES_WITH_PATIENT = ["patient_index", "phi_patient_versions", "phi_patients", "phi_patients_history",
                          "phi_records", "public_patients", "public_records"]


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def records(tag, who, name, dob, n, t):
    """n records of one patient: labs (status final on even ones, navy on every third) with notes that
    match the rule, and versions: each record sent twice (a second version)."""
    out = []
    for i in range(n):
        r = {"record_id": "%s-%s-%d" % (tag, who, i), "name": name, "dob": dob, "type": "lab",
             "ts": iso(t - datetime.timedelta(minutes=i)), "notes": "suspected sepsis %s %d" % (who, i),
             "favorite_color": "navy" if i % 3 == 0 else "red"}
        if i % 2 == 0:
            r["status"] = "final"
        out.append(r)
    return out


def expected_counts(recs):
    return {"labs": len(recs), "final": sum(1 for r in recs if r.get("status") == "final"),
            "navy": sum(1 for r in recs if r["favorite_color"] == "navy")}


def counts(s, limit=30.0):
    """Every counter's count over its window (retrying through 503 while a counter is being built)."""
    out, deadline = {}, time.monotonic() + limit
    for c in COUNTERS:
        while True:
            r = s.get("/v1/counters/%s?window=1h" % c["name"])
            if r.status == 200:
                out[c["name"]] = r.json()["count"]
                break
            if r.status != 503 or time.monotonic() > deadline:
                fail("GET /v1/counters/%s: HTTP %d %s" % (c["name"], r.status, short(r.text)))
            time.sleep(0.2)
    return out


def new_server(name):
    s = H.Server(name=name)
    path = os.path.join(s.base, "counters.json")
    with open(path, "w") as f:
        json.dump(COUNTERS, f)
    s.extra_args = ["--counters", path]
    return s


def sink_args(db_url, bootstrap, topic, lake):
    return ["--postgres", db_url, "--kafka-brokers", bootstrap, "--kafka-topic", topic + "-in",
            "--kafka-public-topic", topic, "--lake", lake, "--lake-roll-seconds", "1"]


def erase(s, pid):
    r = s.request("DELETE", "/v1/patients/" + pid, body=json.dumps({"reason": "GDPR art. 17 request 4711"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "DELETE /v1/patients/%s: %s" % (pid, short(r.text)))
    return r.json()


def wait_certificate_done(s, pid, sinks, views, limit=60.0):
    deadline, cert = time.monotonic() + limit, None
    while time.monotonic() < deadline:
        cert = s.get_json("/v1/patients/%s/erasure" % pid)
        st = {x["sink"]: x["status"] for x in cert["sinks"]}
        vw = {x["view"]: x["status"] for x in cert["views"]}
        if all(st.get(k) == "done" for k in sinks) and all(vw.get(k) == "done" for k in views):
            return cert
        time.sleep(0.2)
    fail("the certificate did not show %s and %s done within %.0fs: %s" % (sinks, views, limit, short(cert, 800)))


def pg_rows(db, pid):
    out = {}
    for t in PG_TABLES_WITH_PATIENT:
        out[t] = TP.pg().sql(db, "SELECT count(*) FROM medstream.%s WHERE patient_id = %%s" % t, (pid,))[0][0]
    return out


def pg_check_no_other_table_holds(db, pid):
    """Every column of type uuid or text in the medstream schema: no value equal to the patient id."""
    cols = TP.pg().sql(db, "SELECT table_name, column_name, data_type FROM information_schema.columns"
                           " WHERE table_schema = 'medstream' AND data_type IN ('uuid', 'text', 'jsonb')")
    for table, col, typ in cols:
        n = TP.pg().sql(db, "SELECT count(*) FROM medstream.%s WHERE %s::text LIKE %%s" % (table, col),
                        ("%" + pid + "%",))[0][0]
        eq(n, 0, "PostgreSQL medstream.%s.%s rows holding the erased patient id" % (table, col))


def read_lake(lake, strict=True, needle=b""):
    return LF.read(TE.venv_python(), lake, needle, strict)


def lake_rows_of(res, pid):
    return [(f["path"], row) for f in res["files"] for row in f["rows"] if row.get("patient_id") == pid]


def wait_lake_rows(lake, pid, n, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(lake, "_medstream", "commits")):
            got = len(lake_rows_of(read_lake(lake, strict=False), pid))  # (a roll may be between its line and renames)
            if got >= n:
                return
        time.sleep(0.5)
    fail("the lake did not get %d rows of %s within %.0fs" % (n, pid, limit))


def read_topic(bootstrap, topic, group, until, limit=30.0):
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline and not until(got):
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append({"key": m.key().decode() if m.key() else None, "value": m.value(),
                    "headers": {k: v.decode() for k, v in (m.headers() or [])}})
    c.close()
    return got


def need_tools():
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    TP.pg()  # H.Skip without PostgreSQL 15 or psycopg2
    TE.venv_python()


def start_mock(topic):
    p = subprocess.Popen([TK.MOCK, topic + "-in:1", topic + "-in.dlq:1", topic + ":1"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    bootstrap = p.stdout.readline().strip()
    check(bootstrap and ":" in bootstrap, "kafka_mock printed its bootstrap servers (%r)" % bootstrap)
    H.on_exit(lambda: (p.stdin.close(), p.wait(timeout=10)))
    return bootstrap


def ingest_two(s, tag):
    t = datetime.datetime.now(UTC) - datetime.timedelta(minutes=5)
    a = records(tag, "a", "Erasa Gone", "1961-04-05", 6, t)
    b = records(tag, "b", "Bertha Stays", "1972-08-09", 5, t)
    first = s.ingest_ok(a + b)
    pid_a = first["items"][0]["patient_id"]
    pid_b = first["items"][len(a)]["patient_id"]
    check(pid_a != pid_b, "two patients")
    # second versions of every record (so that history tables and older versions are involved)
    for r in a + b:
        r["notes"] += " (amended)"
    s.ingest_ok(a + b)
    return a, b, pid_a, pid_b


def check_after(s, db, bootstrap, topic, lake, a, b, pid_a, pid_b, before_b=None):
    # PostgreSQL: nothing of A anywhere, B whole
    eq(pg_rows(db, pid_a), {t: 0 for t in PG_TABLES_WITH_PATIENT}, "PostgreSQL rows of the erased patient")
    pg_check_no_other_table_holds(db, pid_a)
    rb = pg_rows(db, pid_b)
    eq((rb["phi_records"], rb["public_records"], rb["patient_index"], rb["phi_patients"]),
       (2 * len(b), 2 * len(b), 1, 1), "PostgreSQL rows of the other patient (2 versions of each record)")
    if before_b is not None:
        eq(rb, before_b, "the other patient's PostgreSQL rows, before and after the erasure")
    # Kafka: tombstones under A's key, one per record version, then the patient's; none for B
    want_tomb = {(r["record_id"], str(v)) for r in a for v in (1, 2)}

    def enough(got):
        return any(m["key"] == pid_a and m["value"] is None and m["headers"].get("medstream.erased") == "patient"
                   for m in got)
    msgs = read_topic(bootstrap, topic, "erasure-reader-%d" % time.monotonic_ns(), enough)
    tombs = [m for m in msgs if m["value"] is None]
    check(enough(msgs), "a tombstone for the patient under its key (got %d messages)" % len(msgs))
    eq({(m["headers"].get("record_id"), m["headers"].get("version")) for m in tombs
        if m["headers"].get("medstream.erased") == "record"}, want_tomb,
       "tombstones (record id, version) of the erased patient's record versions")
    eq({m["key"] for m in tombs}, {pid_a}, "tombstones only under the erased patient's key")
    check(tombs[-1]["headers"].get("medstream.erased") == "patient", "the patient's tombstone comes last")
    b_msgs = [m for m in msgs if m["key"] == pid_b]
    eq(len(b_msgs), 2 * len(b), "the other patient's messages (every version)")
    for m in msgs:
        check(m["value"] is None or b"Erasa" not in m["value"], "no PHI on the public topic")
    # the lake: no file holds A; B's rows all there
    files = read_lake(lake, needle=pid_a.encode())
    eq(lake_rows_of(files, pid_a), [], "lake rows of the erased patient")
    eq(files["holding"], [], "lake files holding the erased patient id in their bytes")
    eq(sorted((row["record_id"], row["version"]) for _, row in lake_rows_of(files, pid_b)),
       sorted((r["record_id"], v) for r in b for v in (1, 2)), "the other patient's lake rows")
    # events: A's gone, B's stay
    evs = TN.events_after(s, 0)
    eq([e for e in evs if e["patient_id"] == pid_a], [], "events of the erased patient in GET /v1/events")
    eq(len([e for e in evs if e["patient_id"] == pid_b]), 2 * len(b), "events of the other patient")
    sse = TN.SSE(s.port, s.token, "/v1/events/stream?since=0")
    try:
        frames = TN.events_of(sse.frames(lambda out: len(TN.events_of(out)) >= len(evs), timeout=5))
    finally:
        sse.close()
    datas = [json.loads(f["data"]) for f in frames]
    eq([d for d in datas if d["patient_id"] == pid_a], [], "frames of the erased patient on a stream from the start")
    eq(len(datas), len(evs), "the stream sends the events GET /v1/events lists")


@test(timeout=240)
def test_erasure_reaches_postgres_kafka_lake_counters_and_events():
    need_tools()
    db = "erasure_all"
    TP.pg().create_db(db)
    bootstrap = start_mock("erpub")
    s = new_server("erasure-sinks")
    lake = os.path.join(s.base, "lake")
    s.extra_args += sink_args(TP.pg().url(db), bootstrap, "erpub", lake)
    s.start()
    r = TN.post_json(s, "/v1/rules", {"name": "er-sepsis", "fields": ["notes"], "any": ["sepsis"]})
    check(r.status in (200, 201), "POST /v1/rules: %d %s" % (r.status, short(r.text)))
    a, b, pid_a, pid_b = ingest_two(s, "all")
    # before: everything holds both
    TP.wait_shipped(s, db)
    eq(pg_rows(db, pid_a)["phi_records"], 2 * len(a), "PostgreSQL has the patient's record versions before")
    before_b = pg_rows(db, pid_b)
    wait_lake_rows(lake, pid_a, 2 * len(a))
    TN.wait_events(s, 0, 2 * (len(a) + len(b)))
    eq(counts(s), expected_counts(a + b), "counters before the erasure")
    # the erasure
    cert = erase(s, pid_a)
    eq(sorted(x["view"] for x in cert["views"]), ["counters", "events"], "the certificate's views")
    check({"postgres", "kafka-public", "lake"} <= {x["sink"] for x in cert["sinks"]},
          "the certificate names every sink: %s" % short(cert["sinks"]))
    cert = wait_certificate_done(s, pid_a, ["postgres", "kafka-public", "lake"], ["counters", "events"])
    eq(counts(s), expected_counts(b), "counters after the erasure: only the other patient's records")
    check_after(s, db, bootstrap, "erpub", lake, a, b, pid_a, pid_b, before_b)
    eq(s.get("/v1/patients/" + pid_a).status, 410, "the erased patient reads 410")
    # the counters' saved state holds the erasure across a restart
    s.stop()
    s.start()
    eq(counts(s), expected_counts(b), "counters after a restart")
    eq(counts(s), expected_counts(b), "counters after a restart")
    s.stop()


@test(timeout=240)
def test_sinks_started_after_the_erasure_never_ship_the_patient():
    """The sinks and views read the erased patient's older entries (bodiless tombstones now, patient
    versions gone) without failing, and the patient never reaches them."""
    need_tools()
    db = "erasure_late"
    TP.pg().create_db(db)
    bootstrap = start_mock("erlate")
    s = new_server("erasure-late")
    s.start()
    a, b, pid_a, pid_b = ingest_two(s, "late")
    erase(s, pid_a)
    s.stop()
    lake = os.path.join(s.base, "lake")
    s.extra_args += sink_args(TP.pg().url(db), bootstrap, "erlate", lake)
    s.start()
    wait_certificate_done(s, pid_a, ["postgres", "kafka-public", "lake"], ["counters", "events"])
    TP.wait_shipped(s, db)
    wait_lake_rows(lake, pid_b, 2 * len(b))
    eq(counts(s), expected_counts(b), "counters")
    log = s.log_tail(400000)
    for bad in ("postgres.retrying", "lake.failing", "sink.kafka_public.retry", "counters.retry", "notify.failing"):
        check(bad not in log, "no %s in the log: %s" % (bad, short(log[-3000:], 3000)))
    eq(pg_rows(db, pid_a), {t: 0 for t in PG_TABLES_WITH_PATIENT}, "PostgreSQL rows of the erased patient")
    files = read_lake(lake)
    eq(lake_rows_of(files, pid_a), [], "lake rows of the erased patient")
    s.stop()


@test(timeout=180)
def test_lake_killed_mid_rewrite_finishes_it_at_the_next_start():
    """MEDSTREAM_TEST_LAKE_CRASH=erase: the server SIGKILLs itself once the first file an erasure wrote again
    is renamed over the published one, before the commits-log line that lists it. The next start reads the
    erasure again, writes the same files again and logs them: no row of the patient, every file as the log
    says."""
    TE.venv_python()
    s = new_server("erasure-lake-crash")
    lake = os.path.join(s.base, "lake")
    s.extra_args += ["--lake", lake, "--lake-roll-seconds", "1"]
    os.environ["MEDSTREAM_TEST_LAKE_CRASH"] = "erase"
    try:
        s.start()
    finally:
        del os.environ["MEDSTREAM_TEST_LAKE_CRASH"]
    a, b, pid_a, pid_b = ingest_two(s, "crash")
    wait_lake_rows(lake, pid_a, 2 * len(a))
    r = s.request("DELETE", "/v1/patients/" + pid_a, body=json.dumps({"reason": "test"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "DELETE: %s" % short(r.text))
    t0 = time.time()
    while s.alive() and time.time() - t0 < 20:
        time.sleep(0.05)
    check(not s.alive(), "the server did not kill itself after renaming a rewritten file")
    s.kill9()
    down = read_lake(lake, strict=False)
    eq(lake_rows_of(down, pid_a), [], "the renamed file no longer holds the patient")
    before = [json.loads(x) for x in open(os.path.join(lake, "_medstream", "commits"))]
    check(not any(x.get("rewritten") for x in before), "no line lists the rewrite before the restart")
    s.start()
    wait_certificate_done(s, pid_a, ["lake"], [])
    files = read_lake(lake)
    eq(lake_rows_of(files, pid_a), [], "lake rows of the erased patient after the restart")
    eq(sorted((row["record_id"], row["version"]) for _, row in lake_rows_of(files, pid_b)),
       sorted((r["record_id"], v) for r in b for v in (1, 2)), "the other patient's lake rows")
    lines = [json.loads(x) for x in open(os.path.join(lake, "_medstream", "commits"))]
    check(any(x.get("rewritten") for x in lines), "a commits-log line lists the rewritten files: %s" % short(lines))
    s.stop()


if __name__ == "__main__":
    H.main()

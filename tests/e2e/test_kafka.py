# End-to-end test through Kafka, as the design's reference test describes it: a Kafka cluster
# (build/kafka_mock: librdkafka's mock cluster, the real protocol on loopback, 3 brokers, a topic of 4
# partitions), medstream consuming the topic in a consumer group, a producer (python3-confluent-kafka)
# sending mocked records keyed by patient identity plus a few poison messages; after the send the test
# waits 2 seconds, then queries medstream's API for every record: present once, the same patient id for
# the same identity, a public copy with allow-listed fields only (each version its own, two of one record
# committed together too). Poison messages do not block their
# partitions, and neither does a valid message the writer refuses against the stored patient: both are
# dead letters with their reason. Sending the same records again after a restart stores nothing twice.
# (Two processes in one group across a kill -9 is tested on a real broker: test_cluster_group.py.)
#
# Run: /usr/bin/python3 tests/e2e/test_kafka.py   (needs build/kafka_mock and python3-confluent-kafka)

import json
import os
import subprocess
import time

import harness as H
from harness import check, eq, short, test

MOCK = os.path.join(H.REPO_ROOT, "build", "kafka_mock")


def start_mock(topic):
    p = subprocess.Popen([MOCK, topic + ":4", topic + ".dlq:1", "public:2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline().strip()
    check(line and ":" in line, "kafka_mock printed its bootstrap servers (%r)" % line)
    H.on_exit(lambda: (p.stdin.close(), p.wait(timeout=10)))
    return p, line


def producer(bootstrap):
    from confluent_kafka import Producer
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})


def wait_visible(s, rid, limit=20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if s.get("/v1/records/" + rid).status == 200:
            return True
        time.sleep(0.1)
    return False


@test(timeout=120)
def test_reference_end_to_end_through_kafka():
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    mock, bootstrap = start_mock("records")
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "records", "--kafka-group", "medstream-e2e",
                             "--kafka-public-topic", "public",
                             # pass-through settings, repeatable; the same ones reach the public producer
                             "--kafka-config", "client.id=medstream-e2e", "--kafka-config", "socket.keepalive.enable=true"],
                 name="kafka")
    s.start()
    p = producer(bootstrap)
    # the first group join takes a few seconds: wait until a warm-up record is through
    p.produce("records", key=b"warm", value=json.dumps({"record_id": "kafka-warm", "name": "Warm Up", "dob": "1990-01-01"}))
    p.flush(10)
    check(wait_visible(s, "kafka-warm"), "the consumer joined and stored a warm-up record")
    people = [("Kafka Person %d" % i, "19%02d-0%d-1%d" % (50 + i % 40, 1 + i % 9, i % 10)) for i in range(200)]
    sent = {}
    for i in range(2000):
        name, dob = people[i % len(people)]
        rec = {"record_id": "kafka-%05d" % i, "name": name, "dob": dob, "ssn": "123-45-%04d" % (i % 10000),
               "favorite_color": ["red", "blue", "green"][i % 3], "type": "visit", "ts": "2026-03-04T05:06:07Z",
               "notes": "note %d" % i}
        sent[rec["record_id"]] = (name, dob)
        p.produce("records", key=(name + "|" + dob).encode(), value=json.dumps(rec))
        if i % 400 == 7:  # poison: not JSON, no identity, wrong type
            p.produce("records", key=b"poison", value=b"{not json")
            p.produce("records", key=b"poison", value=json.dumps({"record_id": "no-identity"}))
    p.flush(30)
    time.sleep(2.0)  # the reference test: wait 2 seconds, then every record must be there
    missing, pid_of = [], {}
    for rid, ident in sent.items():
        r = s.get("/v1/records/" + rid)
        if r.status != 200:
            missing.append(rid)
            continue
        j = r.json()
        eq(j["version"], 1, "version of %s" % rid)
        prev = pid_of.setdefault(ident, j["patient_id"])
        eq(j["patient_id"], prev, "one patient id per identity (%s)" % rid)
    check(not missing, "%d of %d records not visible 2 s after the send (first: %s)" % (len(missing), len(sent), missing[:3]))
    eq(len(set(pid_of.values())), len(people), "distinct patients")
    check(s.get("/v1/records/no-identity").status == 404, "the poison record was not stored")
    # the poison messages are in the dead-letter topic, each with the reason in a header
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-reader", "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    c.subscribe(["records.dlq"])
    dead, t0 = [], time.monotonic()
    while len(dead) < 10 and time.monotonic() - t0 < 20:
        m = c.poll(0.5)
        if m is not None and not m.error():
            dead.append(m)
    c.close()
    eq(len(dead), 10, "messages in the dead-letter topic")
    for m in dead:
        h = dict(m.headers() or [])
        check(b"medstream-error" in [k.encode() for k in h], "error header on a dead letter: %s" % h)
        err = h["medstream-error"].decode()
        check("malformed JSON" in err or "missing identity field" in err, "the reason names the problem: %s" % err)
        check("medstream-partition" in h and "medstream-offset" in h, "origin headers")
    check("medstream_kafka_dead_letters_total 10" in s.get("/metrics").text, "dead letters are counted")
    pub = s.get("/v1/public/records?" + H.q({"patient_id": next(iter(pid_of.values())), "limit": 1000})).json()
    check(pub["records"], "public copies exist")
    for rec in pub["records"]:
        check(set(rec["fields"]) <= {"favorite_color", "type", "ts"}, "public fields: %s" % rec["fields"])
        check("Kafka Person" not in json.dumps(rec) and "123-45-" not in json.dumps(rec), "no PHI in the public copy")
    # the de-identified stream: every record version, keyed by patient id, allow-listed fields only
    from confluent_kafka import Consumer as C2
    c = C2({"bootstrap.servers": bootstrap, "group.id": "public-reader", "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    c.subscribe(["public"])
    seen, t0 = {}, time.monotonic()
    dobs = {d.encode() for _, d in people}
    while len(seen) < len(sent) + 1 and time.monotonic() - t0 < 30:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        raw = m.value()
        for phi in (b"Kafka Person", b"123-45-", b"note ", b"Warm Up", b"1990-01-01", b"-03-04", b"ssn", b"dob"):
            check(phi not in raw, "PHI %r in a public message: %s" % (phi, raw[:200]))
        check(not any(dob in raw for dob in dobs), "a date of birth in a public message: %s" % raw[:200])
        j = json.loads(raw)
        eq(set(j), {"patient_id", "record_id", "version", "fields"}, "public message members")
        check(set(j["fields"]) <= {"favorite_color", "type", "ts"}, "public message fields: %s" % j["fields"])
        eq(m.key().decode(), j["patient_id"], "keyed by patient id")
        seen[j["record_id"]] = j
    c.close()
    check(set(sent) <= set(seen), "%d records missing from the public topic" % len(set(sent) - set(seen)))
    for rid, ident in list(sent.items())[:50]:
        eq(seen[rid]["patient_id"], pid_of[ident], "public message patient id of %s" % rid)
    # a restart under another consumer group name (Kafka has no committed offsets for it): the
    # offsets kept in the store resume the topic where the last batch ended, replaying nothing
    s.stop()
    s.extra_args = [a if a != "medstream-e2e" else "medstream-e2e-renamed" for a in s.extra_args]
    s.start()
    p.produce("records", key=b"warm", value=json.dumps({"record_id": "kafka-warm-1", "name": "Warm Up", "dob": "1990-01-01"}))
    p.flush(10)
    check(wait_visible(s, "kafka-warm-1"), "the consumer resumed after the restart")
    dup = [l for l in s.get("/metrics").text.splitlines() if l.startswith('medstream_records_total{status="duplicate"}')]
    eq(dup, ['medstream_records_total{status="duplicate"} 0'], "nothing replayed after the restart")
    # the same records sent again: nothing stored twice
    for i in range(0, 2000, 97):
        name, dob = people[i % len(people)]
        rec = {"record_id": "kafka-%05d" % i, "name": name, "dob": dob, "ssn": "123-45-%04d" % (i % 10000),
               "favorite_color": ["red", "blue", "green"][i % 3], "type": "visit", "ts": "2026-03-04T05:06:07Z",
               "notes": "note %d" % i}
        p.produce("records", key=(name + "|" + dob).encode(), value=json.dumps(rec))
    p.produce("records", key=b"warm", value=json.dumps({"record_id": "kafka-warm-2", "name": "Warm Up", "dob": "1990-01-01"}))
    p.flush(10)
    check(wait_visible(s, "kafka-warm-2"), "the replayed records were consumed")
    for i in range(0, 2000, 97):
        eq(s.get_json("/v1/records/kafka-%05d" % i)["version"], 1, "a replayed record stays version 1")
    m = s.get("/metrics").text
    check('medstream_records_total{status="duplicate"}' in m, "duplicates are counted")
    s.stop()


@test(timeout=90)
def test_a_record_the_writer_refuses_goes_to_the_dead_letter_topic():
    """A valid message the writer refuses against the stored patient (here one past the patient's 4,096
    distinct fields) is a dead letter with the writer's reason, as a malformed one is; it was counted and
    lost before."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    p_mock, bootstrap = start_mock("wide")
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "wide", "--kafka-group", "wide-e2e"],
                 name="kafka-refused")
    s.start()
    p = producer(bootstrap)
    key = b"Wide Patient|1960-06-06"
    for k in range(4):  # 4,000 distinct fields: the patient's state is near its limit
        rec = {"record_id": "wide-%d" % k, "name": "Wide Patient", "dob": "1960-06-06"}
        rec.update({"f%d_%d" % (k, i): i for i in range(1000)})
        p.produce("wide", key=key, value=json.dumps(rec))
    p.flush(10)
    check(wait_visible(s, "wide-3", limit=40), "the four wide records were stored")
    past = {"record_id": "wide-past", "name": "Wide Patient", "dob": "1960-06-06"}
    past.update({"g%d" % i: i for i in range(100)})
    p.produce("wide", key=key, value=json.dumps(past))
    p.produce("wide", key=b"after", value=json.dumps({"record_id": "wide-after", "name": "After It", "dob": "1990-01-01"}))
    p.flush(10)
    check(wait_visible(s, "wide-after"), "the record behind the refused one was stored")
    eq(s.get("/v1/records/wide-past").status, 404, "the refused record is not stored")
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wide-dlq-reader", "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    c.subscribe(["wide.dlq"])
    dead, t0 = [], time.monotonic()
    while not dead and time.monotonic() - t0 < 20:
        m = c.poll(0.5)
        if m is not None and not m.error():
            dead.append(m)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:  # nothing else arrives
        m = c.poll(0.2)
        if m is not None and not m.error():
            dead.append(m)
    c.close()
    eq(len(dead), 1, "dead letters")
    h = dict(dead[0].headers() or [])
    check("4096 distinct fields" in h.get("medstream-error", b"").decode(),
          "the writer's reason in the header: %s" % h.get("medstream-error"))
    eq(json.loads(dead[0].value())["record_id"], "wide-past", "the refused message itself")
    eq(dead[0].key(), key, "its key")
    check("medstream-partition" in h and "medstream-offset" in h, "origin headers")
    check("medstream_kafka_dead_letters_total 1" in s.get("/metrics").text, "the dead letter is counted")
    log = open(s.log_path).read()
    check("patient_state:1" in log, "the log line counts it by class")
    check("Wide Patient" not in log, "no PHI in the log")
    s.stop()


@test(timeout=90)
def test_deleted_record_reaches_the_public_topic_as_a_tombstone():
    try:
        from confluent_kafka import Consumer
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    p = subprocess.Popen([MOCK, "tomb:1", "tomb.dlq:1", "tomb-public:1"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    bootstrap = p.stdout.readline().strip()
    H.on_exit(lambda: (p.stdin.close(), p.wait(timeout=10)))
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "tomb", "--kafka-public-topic",
                             "tomb-public"], name="kafka-tomb")
    s.start()
    pid = s.ingest_ok([{"record_id": "tomb-1", "name": "Tomb Kafka", "dob": "1970-01-01", "favorite_color": "red",
                        "secret": "PHI-value"}])["items"][0]["patient_id"]
    eq(s.request("DELETE", "/v1/records/tomb-1").status, 200, "DELETE")
    # two versions of one record in one commit (one batch), of two patients: each goes out with its own copy
    two = s.ingest_ok([{"record_id": "tomb-2", "name": "Tomb Kafka", "dob": "1970-01-01", "favorite_color": "green"},
                       {"record_id": "tomb-2", "name": "Other Kafka", "dob": "1980-01-01", "favorite_color": "blue"}])
    pid2 = two["items"][1]["patient_id"]
    eq([it["version"] for it in two["items"]], [1, 2], "two versions in one batch")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tomb-reader", "auto.offset.reset": "earliest"})
    c.subscribe(["tomb-public"])
    got, t0 = [], time.monotonic()
    while len(got) < 4 and time.monotonic() - t0 < 30:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        check(b"PHI-value" not in m.value() and b"Tomb Kafka" not in m.value(), "no PHI on the public topic")
        got.append((m.key().decode(), json.loads(m.value())))
    c.close()
    eq(len(got), 4, "messages on the public topic (the record, its tombstone, two versions of another)")
    eq(got[0][1].get("fields"), {"favorite_color": "red"}, "the record's public copy")
    eq(got[1], (pid, {"patient_id": pid, "record_id": "tomb-1", "version": 2, "deleted": True}),
       "the tombstone, keyed by patient id")
    eq(got[2], (pid, {"patient_id": pid, "record_id": "tomb-2", "version": 1, "fields": {"favorite_color": "green"}}),
       "version 1 of a record, committed with its version 2: its own copy and patient")
    eq(got[3], (pid2, {"patient_id": pid2, "record_id": "tomb-2", "version": 2, "fields": {"favorite_color": "blue"}}),
       "version 2")
    s.stop()


@test(timeout=60)
def test_public_stream_never_moves_past_an_undelivered_message():
    """Brokers that never answer: the public stream's messages leave the queue as failed deliveries after
    message.timeout.ms; its position must not move past them (it did: the versions were skipped on the topic,
    and an erasure's certificate said the topic's tombstones were delivered)."""
    import socket
    so = socket.socket()
    so.bind(("127.0.0.1", 0))
    nobody = so.getsockname()[1]  # a port no broker listens on
    so.close()
    s = H.Server(extra_args=["--kafka-brokers", "127.0.0.1:%d" % nobody, "--kafka-topic", "in",
                             "--kafka-public-topic", "pub", "--kafka-config", "message.timeout.ms=1000"],
                 name="kafka-undelivered")
    s.start()
    pid = s.ingest_ok([{"record_id": "und-1", "name": "Undelivered One", "dob": "1970-01-01",
                        "favorite_color": "red"}])["items"][0]["patient_id"]
    time.sleep(2.5)  # past the timeout: the message failed
    r = s.request("DELETE", "/v1/patients/" + pid, body=json.dumps({"reason": "test"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "DELETE /v1/patients: %s" % short(r.text))
    time.sleep(2.5)  # the tombstones too
    sinks = {x["sink"]: x["status"] for x in s.get_json("/v1/patients/%s/erasure" % pid)["sinks"]}
    eq(sinks.get("kafka-public"), "pending", "the public stream's part of the erasure, with nothing delivered")
    check("not delivered; again in 1 s" in open(s.log_path).read(), "the retry is logged")
    s.stop()


@test(timeout=120)
def test_bench_through_kafka_measures_a_real_run():
    """`medstream bench --kafka-brokers` (the README's Kafka figures): it produces every record, the server
    consumes them all, and the bench measures produce-to-visible on them."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    mock, bootstrap = start_mock("benchk")
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "benchk", "--kafka-group", "g-bench"],
                 name="kafka-bench")
    s.start()
    r = subprocess.run([H.BIN, "bench", "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token,
                        "--kafka-brokers", bootstrap, "--kafka-topic", "benchk", "--records", "2000", "--size", "2000",
                        "--batch", "500", "--probe-every", "50", "--read-rate", "50", "--rate", "120000",
                        "--run-id", "kbench", "--json"], capture_output=True, text=True, timeout=100)
    eq(r.returncode, 0, "bench exit code (stderr %s)" % short(r.stderr))
    fig = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    eq((fig["records"], fig["failures"]), (2000, 0), "records and failures")
    check(fig["freshness_samples"] >= 40 and fig["freshness_ms_p99"] is not None, "produce-to-visible probes: %s"
          % fig)
    check(fig["point_reads"] > 0, "point reads in Kafka mode (patient ids from the probes): %s" % fig)
    check(wait_visible(s, "kbench-0000001999"), "the last record produced is in the store")
    s.stop()


@test(timeout=30)
def test_bad_kafka_setting_is_refused_by_name():
    s = H.Server(name="kafka-badconf")
    s.init()
    r = subprocess.run([H.BIN, "serve", "--data", s.data_dir, "--listen", "127.0.0.1:0",
                        "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t",
                        "--kafka-config", "client.id=ok", "--kafka-config", "no.such.setting=1"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=20)
    check(r.returncode != 0, "serve refused an unknown librdkafka setting (exit %d)" % r.returncode)
    check("no.such.setting" in r.stderr and "--kafka-config" in r.stderr,
          "the error names the flag and the setting: %r" % r.stderr[-300:])
    r = subprocess.run([H.BIN, "serve", "--data", s.data_dir, "--listen", "127.0.0.1:0",
                        "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t", "--kafka-config", "novalue"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=20)
    check(r.returncode != 0 and "key=value" in r.stderr, "a setting without '=' is refused: %r" % r.stderr[-300:])


@test(timeout=90)
def test_broker_outage_degrades_health():
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    mock = subprocess.Popen([MOCK, "outage:2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    bootstrap = mock.stdout.readline().strip()
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "outage", "--kafka-group", "g-outage"],
                 name="kafka-outage")
    s.start()
    eq(s.get_json("/healthz")["status"], "ok", "health while the brokers are up")
    check("medstream_kafka_lag" in s.get("/metrics").text, "the lag gauge is exported")
    mock.stdin.close()
    mock.wait(timeout=10)
    status, t0 = None, time.monotonic()
    while time.monotonic() - t0 < 20:
        status = s.get_json("/healthz")["status"]
        if status == "degraded":
            break
        time.sleep(0.25)
    eq(status, "degraded", "health once the brokers are gone")
    r = s.ingest([{"record_id": "outage-http", "name": "Outage Person", "dob": "1980-08-08"}])
    eq(r.status, 200, "HTTP ingest goes on while Kafka is down")
    s.stop()


if __name__ == "__main__":
    H.main()

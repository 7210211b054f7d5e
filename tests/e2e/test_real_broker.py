# End-to-end test on a real Apache Kafka broker (issue 16's ground: cluster.py's Broker, through
# scripts/kafka_broker.sh, starts Kafka 4.1.1 in KRaft mode on loopback from jars fetched from Maven Central
# and cached), not librdkafka's mock:
# a topic of 4 partitions, medstream consuming it in a consumer group, records produced keyed by identity
# by python3-confluent-kafka; medstream is killed with SIGKILL between two halves and restarted: every
# record is stored exactly once (version 1), the same identity has one patient id, and the group's
# position moves on (nothing re-stored after the restart). And a record the writer refuses (past its patient's
# 4,096 fields) gets its dead letter once across a kill -9 between the store and the dead letter's delivery
# (a test hook pauses the node there): the store's offsets had moved past it, so it was lost.
#
# Run: /usr/bin/python3 tests/e2e/test_real_broker.py   (needs Java 17; the first run fetches ~43 MB)

import json
import os
import time

import cluster as CL
import harness as H
from harness import check, eq, test


def rec(i):
    who = i % 150
    return {"record_id": "rb-%d" % i, "name": "Broker Person %d" % who, "dob": "1966-04-%02d" % (1 + who % 28),
            "type": "visit", "ts": "2026-01-01T00:00:00Z", "n": i}


def wait_all(s, ids, limit=90.0):
    t0 = time.monotonic()
    missing = list(ids)
    while missing and time.monotonic() - t0 < limit:
        missing = [i for i in missing if s.get("/v1/records/" + i).status != 200]
        if missing:
            time.sleep(0.5)
    eq(missing[:5], [], "records not stored within %ds" % limit)


@test(timeout=600)
def test_exactly_once_across_a_kill9_on_a_real_broker():
    CL.require_confluent_kafka()
    bootstrap = CL.shared_broker().bootstrap
    CL.create_topic(bootstrap, "records", 4)
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "records", "--kafka-group", "rb"],
                 name="real-broker")
    s.start()
    s.login()
    first = [rec(i) for i in range(1000)]
    CL.produce(bootstrap, "records", first)
    wait_all(s, [r["record_id"] for r in first])
    s.kill9()
    second = [rec(i) for i in range(1000, 2000)]
    CL.produce(bootstrap, "records", second)
    s.start()
    s.login()
    wait_all(s, [r["record_id"] for r in second])
    pids = {}
    for r in first + second:
        got = s.get_json("/v1/records/" + r["record_id"])
        eq(got["version"], 1, "%s stored once" % r["record_id"])
        key = (r["name"], r["dob"])
        check(pids.setdefault(key, got["patient_id"]) == got["patient_id"], "one patient id for %r" % (key,))
    eq(len(pids), 150, "patients")
    # the group's position moved on: the first half is not stored again after the restart
    time.sleep(2)
    for r in first[:50]:
        eq(s.get_json("/v1/records/" + r["record_id"])["version"], 1, "not re-stored")
    s.stop()


@test(timeout=300)
def test_a_refused_records_dead_letter_survives_a_kill9_between_the_store_and_its_delivery():
    """Plain mode: the store's commit moves the store's offsets past the batch, and a restart starts there; the
    dead letter of the record the writer refused in it is kept in that commit (the outbox) and sent by the
    node started again, once."""
    CL.require_confluent_kafka()
    bootstrap = CL.shared_broker().bootstrap
    CL.create_topic(bootstrap, "refused", 1)
    CL.create_topic(bootstrap, "refused.dlq", 1)
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "refused", "--kafka-group", "rf"],
                 name="refused")
    s.start()
    s.login()
    name, dob = "Wide Patient", "1960-06-06"
    wide = []
    for k in range(4):  # 4,000 distinct fields: the patient's state is near its limit
        r = {"record_id": "wide-%d" % k, "name": name, "dob": dob}
        r.update({"f%d_%d" % (k, i): i for i in range(1000)})
        wide.append(r)
    CL.produce(bootstrap, "refused", wide)
    wait_all(s, [r["record_id"] for r in wide])
    s.stop()
    os.environ["MEDSTREAM_TEST_PAUSE_BEFORE_DEAD_LETTERS_MS"] = "60000"
    try:
        s.start()
    finally:
        del os.environ["MEDSTREAM_TEST_PAUSE_BEFORE_DEAD_LETTERS_MS"]
    s.login()
    past = {"record_id": "wide-past", "name": name, "dob": dob}
    past.update({"g%d" % i: i for i in range(100)})
    after = {"record_id": "wide-after", "name": name, "dob": dob, "f0_1": 1}
    CL.produce(bootstrap, "refused", [past, after])
    deadline = time.monotonic() + 60
    while "(test hook)" not in open(s.log_path).read():
        check(time.monotonic() < deadline, "the node paused before the dead letters: %s" % s.log_tail())
        time.sleep(0.05)
    eq(CL.read_topic(bootstrap, "refused.dlq", timeout=30), [], "no dead letter before the kill")
    s.kill9()
    s.start()
    s.login()
    wait_all(s, [after["record_id"]])
    deadline = time.monotonic() + 60
    while not CL.read_topic(bootstrap, "refused.dlq", timeout=30) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # nothing else arrives
    dead = CL.read_topic(bootstrap, "refused.dlq", timeout=30)
    eq(len(dead), 1, "dead letters of the refused record")
    h = dict(dead[0].headers() or [])
    check("4096 distinct fields" in h.get("medstream-error", b"").decode(),
          "the writer's reason in the header: %s" % h.get("medstream-error"))
    eq(json.loads(dead[0].value())["record_id"], "wide-past", "the refused message itself")
    eq(dead[0].key(), CL.identity_key(past), "its key")
    eq(s.get("/v1/records/wide-past").status, 404, "the refused record is not stored")
    for r in wide + [after]:
        eq(s.get_json("/v1/records/" + r["record_id"])["version"], 1, "%s stored once" % r["record_id"])
    check("Wide Patient" not in open(s.log_path).read(), "no PHI in the log")
    s.stop()


if __name__ == "__main__":
    H.main()

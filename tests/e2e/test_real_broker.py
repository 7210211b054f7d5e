# End-to-end test on a real Apache Kafka broker (issue 16's ground: cluster.py's Broker, through
# scripts/kafka_broker.sh, starts Kafka 4.1.1 in KRaft mode on loopback from jars fetched from Maven Central
# and cached), not librdkafka's mock:
# a topic of 4 partitions, medstream consuming it in a consumer group, records produced keyed by identity
# by python3-confluent-kafka; medstream is killed with SIGKILL between two halves and restarted: every
# record is stored exactly once (version 1), the same identity has one patient id, and the group's
# position moves on (nothing re-stored after the restart).
#
# Run: /usr/bin/python3 tests/e2e/test_real_broker.py   (needs Java 17; the first run fetches ~43 MB)

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


if __name__ == "__main__":
    H.main()

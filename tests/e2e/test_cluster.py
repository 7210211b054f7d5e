# End-to-end tests of a medstream cluster on a real Apache Kafka broker (issue 16; ingest/cluster.h):
# records produced with random keys (so most land on a partition that does not own their shard and are
# forwarded through TOPIC.by-shard), identities in several spellings, nodes killed with SIGKILL: every
# record stored once, one patient id per identity, one changelog entry per identity.
#
# Run: /usr/bin/python3 tests/e2e/test_cluster.py   (needs Java 17; scripts/kafka_broker.sh fetches the jars)

import json
import os
import random
import time

import harness as H
from harness import check, eq, test
from test_real_broker import create_topic, start_broker, wait_all



def spelling(name, k):
    """Three spellings of one name that normalize alike: as is, upper case with extra spaces, fullwidth."""
    if k == 0:
        return name
    if k == 1:
        return "  " + name.upper().replace(" ", "   ") + " "
    return "".join(chr(ord(c) + 0xFEE0) if "A" <= c <= "Z" else c for c in name)  # fullwidth capitals: NFKC


def records(n_ids, tag, seed):
    rnd = random.Random(seed)
    out = []
    for i in range(n_ids):
        name, dob = "Cluster Person %s %d" % (tag, i), "19%02d-%02d-%02d" % (40 + i % 60, 1 + i % 12, 1 + i % 28)
        for k in range(3):
            out.append({"record_id": "%s-%d-%d" % (tag, i, k), "name": spelling(name, k), "dob": dob,
                        "type": "visit", "ts": "2026-01-0%dT00:00:00Z" % (1 + k), "who": i})
    rnd.shuffle(out)
    return out


def produce_random_keys(bootstrap, topic, recs, seed):
    from confluent_kafka import Producer
    rnd = random.Random(seed)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for r in recs:
        p.produce(topic, key=("k%d" % rnd.randrange(1 << 30)).encode(), value=json.dumps(r).encode())
        p.poll(0)
    check(p.flush(60) == 0, "every message delivered to the broker")


def changelog_count(bootstrap, topic):
    """Committed identity entries (32-byte keys: identity MACs) in TOPIC.changelog, and their distinct keys
    (read_committed, to the end of every partition); the batch markers (14-byte keys) are left out."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "count-%d" % random.randrange(1 << 30),
                  "isolation.level": "read_committed", "enable.partition.eof": True,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=30)
    parts = list(md.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    open_parts, keys, n = set(parts), set(), 0
    t0 = time.monotonic()
    while open_parts and time.monotonic() - t0 < 60:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                open_parts.discard(m.partition())
            continue
        if len(m.key()) == 32:
            n += 1
            keys.add(m.key())
    c.close()
    return n, len(keys)


def check_ids(nodes, recs, n_ids):
    pids = {}
    for r in recs:
        got = None
        for s in nodes:
            x = s.get("/v1/records/" + r["record_id"])
            if x.status == 200:
                got = x.json()
                break
        check(got is not None, "%s stored" % r["record_id"])
        eq(got["version"], 1, "%s stored once" % r["record_id"])
        check(pids.setdefault(r["who"], got["patient_id"]) == got["patient_id"], "one patient id for identity %d" % r["who"])
    eq(len(pids), n_ids, "patients")
    eq(len(set(pids.values())), n_ids, "distinct identities, distinct ids")


@test(timeout=600)
def test_one_node_forwards_and_mints_per_shard_across_kill9():
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise H.Skip("python3-confluent-kafka is not installed")
    bootstrap = start_broker()
    create_topic(bootstrap, "records", 4)
    s = H.Server(extra_args=["--kafka-brokers", bootstrap, "--kafka-topic", "records", "--kafka-group", "cl1",
                             "--kafka-cluster"],
                 name="cluster-1")
    s.start()
    s.login()
    recs = records(300, "a", 1)
    produce_random_keys(bootstrap, "records", recs[:450], 2)
    wait_all(s, [r["record_id"] for r in recs[:450]])
    s.kill9()
    produce_random_keys(bootstrap, "records", recs[450:], 3)
    s.start()
    s.login()
    wait_all(s, [r["record_id"] for r in recs])
    check_ids([s], recs, 300)
    n, distinct = changelog_count(bootstrap, "records.changelog")
    eq((n, distinct), (300, 300), "one changelog entry per identity")
    s.stop()


H._tests[:] = [t for t in H._tests if t[1].__module__ == __name__]  # not the tests of the modules imported

if __name__ == "__main__":
    H.main()

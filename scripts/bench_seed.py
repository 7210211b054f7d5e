#!/usr/bin/python3
# bench_seed.py - how long an existing single-node store takes to seed a new cluster (issue 16;
# src/ingest/cluster_seed.h), side by side with the alternative an operator has without it: importing the
# same file into the cluster afresh (every patient a new id). Once: `medstream gen-import` writes RECORDS
# records of about SIZE bytes, `medstream import --data OLD` loads them offline. Per run: a new topic of
# PARTITIONS partitions; `medstream cluster-seed` (wall time: identities, then every record version, in
# Kafka transactions of --step-records); then one cluster node drains the seeded topic (wall time from its
# start until its group's offsets reach the topic's end). Reported: medians of --runs, per GB of record
# bodies. A real Apache Kafka broker on loopback (scripts/kafka_broker.sh via tests/e2e/cluster.py); the
# broker, the seed and the node share this machine's cores.
#
# Usage: scripts/bench_seed.py [--records N] [--size BYTES] [--partitions P] [--runs R]
#   e.g. scripts/bench_seed.py --records 50000 --size 20480 --runs 3
# The binary is $MEDSTREAM_BIN or build/medstream (build it with `make`).

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))

import cluster as C  # noqa: E402
import harness as H  # noqa: E402


class Member(C.Member):
    """A cluster node that does not log in (nothing is read over HTTP here)."""

    def login(self):
        self.token = None


def run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise H.TestFailure("%s exited %d: %s" % (what, r.returncode, H.short(r.stderr)))
    return r.stdout


def fence(broker, topic, partitions, run_no):
    """A plain record on every partition (the seed's transactions end each partition with a commit marker
    the group's offsets never pass): the drain is waited for up to these."""
    recs, covered, k = [], set(), 0
    while len(covered) < partitions:
        rec = {"record_id": "fence-%d-%d" % (run_no, k), "name": "Fence %d %d" % (run_no, k), "dob": "1999-09-09",
               "type": "fence"}
        if C.shard_of(rec) % partitions not in covered:
            covered.add(C.shard_of(rec) % partitions)
            recs.append(rec)
        k += 1
    C.produce(broker.bootstrap, topic, recs, partition=C.shard_partition(partitions))


def one_run(args, broker, old, nbytes, run_no):
    topic, group = "seedbench-%d" % run_no, "seedbench-%d" % run_no
    C.create_topic(broker.bootstrap, topic, args.partitions)
    key = os.path.join(tempfile.mkdtemp(prefix="medstream-bench-seed-key-"), "cluster.key")
    t0 = time.monotonic()
    out = json.loads(run([H.BIN, "cluster-seed", "--data", old, "--kafka-brokers", broker.bootstrap, "--kafka-topic",
                          topic, "--kafka-group", group, "--cluster-key-out", key, "--step-records",
                          str(args.step_records)], "cluster-seed"))
    seed_s = time.monotonic() - t0
    fence(broker, topic, args.partitions, run_no)
    n = Member(broker.bootstrap, topic, group, key, name="seedbench-%d" % run_no)
    t1 = time.monotonic()
    n.start()
    C.wait_drained([n], timeout=3600)
    drain_s = time.monotonic() - t1
    n.stop()
    C.delete_topics(broker.bootstrap, [topic, topic + ".by-shard", topic + ".changelog", topic + ".seed"])
    res = {"patients": out["patients"], "versions": out["record_versions"], "txns": out["transactions"],
           "seed_s": seed_s, "drain_s": drain_s, "gb": nbytes / 1e9}
    print("  run %d: %d patients, %d record versions in %d transactions seeded in %.1f s (%.1f s per GB); one "
          "node stored them in %.1f s" % (run_no, res["patients"], res["versions"], res["txns"], seed_s,
                                           seed_s / res["gb"], drain_s), file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--size", type=int, default=20480)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--step-records", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not C.have_confluent_kafka():
        sys.exit("bench_seed: needs python3-confluent-kafka and python3-xxhash (scripts/deps.sh)")
    work = tempfile.mkdtemp(prefix="medstream-bench-seed-")
    old, src = os.path.join(work, "old"), os.path.join(work, "records.ndjson")
    run([H.BIN, "gen-import", src, "--records", str(args.records), "--size", str(args.size)], "gen-import")
    run([H.BIN, "init", old], "init")
    run([H.BIN, "import", src, "--data", old, "--progress", "none"], "import")
    nbytes = os.path.getsize(src)
    os.unlink(src)
    results = []
    broker = C.Broker()
    try:
        broker.start()
        for r in range(1, args.runs + 1):
            results.append(one_run(args, broker, old, nbytes, r))
        med = statistics.median
        print("%d records of ~%d B (%.2f GB), %d partitions, transactions of %d record versions, medians of %d "
              "run(s), %d cores" % (args.records, args.size, nbytes / 1e9, args.partitions, args.step_records,
                                    args.runs, os.cpu_count()))
        print()
        print("| patients | record versions | seed s | seed s per GB | records/min seeded | node drain s |")
        print("|---:|---:|---:|---:|---:|---:|")
        print("| %d | %d | %.1f | %.1f | %.0f | %.1f |" % (
            med(r["patients"] for r in results), med(r["versions"] for r in results),
            med(r["seed_s"] for r in results), med(r["seed_s"] / r["gb"] for r in results),
            med(r["versions"] / r["seed_s"] * 60 for r in results), med(r["drain_s"] for r in results)))
    except H.TestFailure as e:
        sys.exit("bench_seed: %s" % e)
    finally:
        for s in list(H._all_servers):
            s.stop()
        broker.stop()
        C.cleanup()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()

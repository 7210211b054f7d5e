#!/usr/bin/python3
# bench_takeover.py - how long a medstream cluster node takes to take a partition over (issue 16;
# src/ingest/cluster.h): node A, one cluster (--kafka-cluster), consumes RECORDS records of about SIZE bytes
# from a topic of PARTITIONS partitions (each record in its shard's partition); A stops; node B, a fresh
# store of the same cluster key, joins and gets every partition: it reads the changelog (the identities) and
# replays every committed batch from the topic. Reported per run, from B's log lines (cluster.restored,
# cluster.replayed: their ms): the restore of the identities, the replay of the records, the bytes replayed,
# and the takeover time per GB of record bodies; medians of --runs. A real Apache Kafka broker on loopback
# (scripts/kafka_broker.sh via tests/e2e/cluster.py); the broker and the node share this machine's cores.
#
# Usage: scripts/bench_takeover.py [--records N] [--size BYTES] [--partitions P] [--runs R]
#   e.g. scripts/bench_takeover.py --records 50000 --size 20480 --runs 3
# The binary is $MEDSTREAM_BIN or build/medstream (build it with `make`).

import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))

import cluster as C  # noqa: E402
import harness as H  # noqa: E402

RESTORED = re.compile(r"shard state restored .*?entries=(\d+) .*?ms=([\d.]+)")
REPLAYED = re.compile(r"committed batches this store lacked stored again batches=(\d+) messages=(\d+) ms=([\d.]+)")


class Member(C.Member):
    """A cluster node that does not log in (nothing is read over HTTP here)."""

    def login(self):
        self.token = None


def one_run(args, broker, run):
    topic, group = "takeover-%d" % run, "takeover-%d" % run
    C.create_topic(broker.bootstrap, topic, args.partitions)
    p = C.producer(broker.bootstrap, **{"queue.buffering.max.kbytes": 262144})
    nbytes = 0
    for i in range(0, args.records, 5000):
        recs = [C.padded_record(j, args.size, args.identities, prefix="tk%d" % run)
                for j in range(i, min(i + 5000, args.records))]
        nbytes += sum(len(json.dumps(r)) for r in recs)
        C.produce(broker.bootstrap, topic, recs, keys=lambda r: b"%d" % C.shard_of(r),
                  partition=C.shard_partition(args.partitions), p=p, flush=False)
    if p.flush(300) != 0:
        raise H.TestFailure("not every record reached the broker")
    del p
    key = C.cluster_key_file()
    a = Member(broker.bootstrap, topic, group, key, name="takeover-a")
    a.start()
    C.wait_drained([a], timeout=1800)
    a.stop()
    b = Member(broker.bootstrap, topic, group, key, name="takeover-b")
    t0 = time.monotonic()
    b.start()
    b.wait_ready(timeout=1800)
    wall = time.monotonic() - t0
    log = b.log_text_since_start()
    rs, rp = RESTORED.findall(log), REPLAYED.findall(log)
    if not rp:
        raise H.TestFailure("node B replayed nothing: %s" % H.short(log[-2000:]))
    entries, restore_ms = int(rs[-1][0]), float(rs[-1][1])
    batches, messages, replay_ms = int(rp[-1][0]), int(rp[-1][1]), float(rp[-1][2])
    for n in (a, b):
        n.stop()
    C.delete_topics(broker.bootstrap, [topic, topic + ".by-shard", topic + ".changelog"])
    res = {"records": messages, "batches": batches, "identities": entries, "restore_s": restore_ms / 1000,
           "replay_s": replay_ms / 1000, "gb": nbytes / 1e9, "wall_s": wall,
           "s_per_gb": (restore_ms + replay_ms) / 1000 / (nbytes / 1e9)}
    print("  run %d: %d identities restored in %.2f s; %d records (%d batches, %.2f GB) replayed in %.1f s; "
          "%.1f s per GB; node B ready after %.1f s" % (run, entries, res["restore_s"], messages, batches, res["gb"],
                                                        res["replay_s"], res["s_per_gb"], wall),
          file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--size", type=int, default=20480)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--identities", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not C.have_confluent_kafka():
        sys.exit("bench_takeover: needs python3-confluent-kafka and python3-xxhash (scripts/deps.sh)")
    results = []
    broker = C.Broker()
    try:
        broker.start()
        for run in range(1, args.runs + 1):
            results.append(one_run(args, broker, run))
        med = statistics.median
        print("%d records of ~%d B (%d identities), %d partitions, medians of %d run(s), %d cores"
              % (args.records, args.size, args.identities, args.partitions, args.runs, os.cpu_count()))
        print()
        print("| records replayed | GB | identities restored | restore s | replay s | s per GB | records/min replayed |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print("| %d | %.2f | %d | %.2f | %.1f | %.1f | %.0f |" % (
            med(r["records"] for r in results), med(r["gb"] for r in results),
            med(r["identities"] for r in results), med(r["restore_s"] for r in results),
            med(r["replay_s"] for r in results), med(r["s_per_gb"] for r in results),
            med(r["records"] / r["replay_s"] * 60 for r in results)))
    except H.TestFailure as e:
        sys.exit("bench_takeover: %s" % e)
    finally:
        for s in list(H._all_servers):
            s.stop()
        broker.stop()
        C.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# bench_cluster.py - throughput of 1, 2 and 3 medstream nodes in one consumer group on this machine, on a
# real Apache Kafka broker (issue 16; tests/e2e/cluster.py starts the broker from scripts/kafka_broker.sh and
# the nodes). RECORDS records of about SIZE bytes are produced once into a topic of PARTITIONS partitions;
# then, for each node count and each run, that many fresh nodes (new data directories) start in a new
# consumer group and are timed from the first node's spawn until the group's committed offsets reach the
# high watermarks. Reported per node count (medians of --runs): wall seconds and records/min over them, the
# seconds from the first committed offset to the drain (start-up and the group join left out), and the CPU the
# nodes spent (utime + stime from /proc/PID/stat, read at the drain) per record: what predicts a real
# cluster, where each node has its own cores. The broker and the nodes share this machine's cores, so
# records/min here is a ceiling of the machine, not of the design; the broker's own CPU is shown too.
# Prints a markdown table (and, with --json FILE, the raw runs). It never changes the repository.
#
# With --cluster the nodes are one medstream cluster (--kafka-cluster, one cluster key, ingest/cluster.h), and
# every run gets a topic of its own (its changelog would otherwise be another run's); --keys shard sends each
# record to its shard's partition as medstream's producers do (random keys: most records are forwarded).
#
# Usage: scripts/bench_cluster.py [--records N] [--size BYTES] [--nodes 1,2,3] [--runs R] [--partitions P]
#            [--batch N] [--identities N] [--keys identity|random|shard] [--cluster] [--timeout S] [--json FILE]
#            [-- SERVE ARGS...]
#   e.g. scripts/bench_cluster.py --records 50000 --size 200 --runs 1
#        scripts/bench_cluster.py --records 20000 --size 20480 --runs 3 -- --cluster-key-file /path/key
# The binary is $MEDSTREAM_BIN or build/medstream (build it with `make`); the first run fetches Kafka's jars.

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))

import cluster as C  # noqa: E402
import harness as H  # noqa: E402


class BenchNode(C.Member):
    """A node that does not log in at start (argon2 would count in its CPU); it logs in after the drain.
    key: a cluster key file (a cluster node), or None (a plain one)."""

    def login(self):
        self.token = None


def produce_all(args, broker, topic):
    """RECORDS records into topic (made here), not timed."""
    C.create_topic(broker.bootstrap, topic, args.partitions)
    t = time.monotonic()
    p = C.producer(broker.bootstrap, **{"queue.buffering.max.kbytes": 262144})
    step = 10000
    keys, part = args.keys, None
    if keys == "shard":
        keys, part = (lambda r: b"%d" % C.shard_of(r)), C.shard_partition(args.partitions)
    for i in range(0, args.records, step):
        C.produce(broker.bootstrap, topic,
                  [C.padded_record(j, args.size, args.identities, prefix="bench")
                   for j in range(i, min(i + step, args.records))], keys=keys, partition=part, p=p, flush=False)
    if p.flush(300) != 0:
        sys.exit("bench_cluster: not every record reached the broker")
    del p  # its connection would outlive the broker
    print("produced %d records of ~%d B into %s (%d partitions) in %.1f s (bin %s)"
          % (args.records, args.size, topic, args.partitions, time.monotonic() - t, H.BIN), file=sys.stderr, flush=True)


def messages_consumed(node):
    """The node's medstream_kafka_messages_total (its /metrics, after logging in)."""
    H.Server.login(node)
    for ln in node.get("/metrics").text.splitlines():
        if ln.startswith("medstream_kafka_messages_total"):
            return int(float(ln.split()[-1]))
    return None


def warm_up(broker):
    """The broker's first group lookup creates __consumer_offsets and loads its coordinator (seconds, on a
    fresh broker): done before the first timed run, not in it."""
    from confluent_kafka import KafkaException
    deadline = time.monotonic() + 60
    with C.GroupProbe(broker.bootstrap, "bench-warm-up", "bench") as g:
        while True:
            try:
                g.committed()
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def one_run(args, broker, topic, nodes, run):
    group = "bench-%d-%d-%d" % (nodes, run, os.getpid())
    if args.cluster:  # a topic of its own: the cluster's changelog and by-shard topics go with it
        topic = "bench-%d-%d" % (nodes, run)
        produce_all(args, broker, topic)
    ns = [BenchNode(broker.bootstrap, topic, group, args.cluster, ["--kafka-batch", str(args.batch)] + args.serve_args,
                    name="bench-n%d-%d" % (nodes, i)) for i in range(nodes)]
    for n in ns:
        n.init()  # not timed
    broker_cpu0 = C.cpu_seconds(broker.pid())
    t0 = time.monotonic()
    starts = [threading.Thread(target=n.start) for n in ns]  # together: they join the group about at once
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    for n in ns:
        if not n.alive():
            raise H.TestFailure("node %s did not start: %s" % (n.name, n.log_tail()))
    progress = {}
    drained = C.wait_drained(ns, timeout=args.timeout, poll=0.2, progress=progress)
    t1 = time.monotonic()
    wall = t1 - t0
    flowing = t1 - progress.get("first_commit", t0)
    cpu = [n.cpu_seconds() for n in ns]
    broker_cpu = C.cpu_seconds(broker.pid()) - broker_cpu0
    consumed = [messages_consumed(n) for n in ns]
    for n in ns:
        n.stop()
        shutil.rmtree(n.base, ignore_errors=True)
        H._temp_dirs.remove(n.base)
    if args.cluster:
        C.delete_topics(broker.bootstrap, [topic, topic + ".by-shard", topic + ".changelog"])
    res = {"nodes": nodes, "run": run, "records": args.records, "size": args.size, "wall_s": wall,
           "drain_wait_s": drained, "records_per_min": args.records / wall * 60, "first_commit_to_drain_s": flowing, "node_cpu_s": cpu,
           "node_messages": consumed, "cpu_us_per_record": sum(cpu) / args.records * 1e6,
           "broker_cpu_s": broker_cpu}
    print("  nodes %d run %d: %.1f s (first commit to drain %.1f s), %.0f records/min, node CPU %s s, messages %s, broker CPU %.1f s"
          % (nodes, run, wall, flowing, res["records_per_min"], ["%.2f" % c for c in cpu], consumed, broker_cpu),
          file=sys.stderr, flush=True)
    return res


def table(args, results):
    med = statistics.median
    out = ["| nodes | records | ~bytes | wall s | records/min | first commit to drain s | "
           "node CPU µs/record (all nodes) | CPU µs/record per node (its own messages) | broker CPU s |",
           "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for nodes in args.nodes:
        rs = [r for r in results if r["nodes"] == nodes]
        if not rs:
            continue
        per_node = []
        for i in range(nodes):
            v = [r["node_cpu_s"][i] / r["node_messages"][i] * 1e6 for r in rs if r["node_messages"][i]]
            per_node.append("%.0f" % med(v) if v else "-")
        out.append("| %d | %d | %d | %.1f | %.0f | %.1f | %.0f | %s | %.1f |" % (
            nodes, args.records, args.size, med(r["wall_s"] for r in rs), med(r["records_per_min"] for r in rs),
            med(r["first_commit_to_drain_s"] for r in rs),
            med(r["cpu_us_per_record"] for r in rs), " / ".join(per_node), med(r["broker_cpu_s"] for r in rs)))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--size", type=int, default=200, help="bytes of JSON per record (e.g. 200 or 20480)")
    ap.add_argument("--nodes", default="1,2,3", help="node counts, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1000, help="--kafka-batch of every node")
    ap.add_argument("--identities", type=int, default=10000)
    ap.add_argument("--keys", choices=("identity", "random", "shard"), default="identity")
    ap.add_argument("--cluster", action="store_true", help="the nodes are one cluster (--kafka-cluster)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for one drain")
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument("serve_args", nargs=argparse.REMAINDER, help="after --: extra `medstream serve` arguments")
    args = ap.parse_args()
    args.nodes = [int(x) for x in args.nodes.split(",") if x]
    if args.serve_args[:1] == ["--"]:
        args.serve_args = args.serve_args[1:]
    if not C.have_confluent_kafka():
        sys.exit("bench_cluster: needs python3-confluent-kafka (scripts/deps.sh) and /usr/bin/python3")
    if not os.path.exists(H.BIN):
        sys.exit("bench_cluster: %s not found: build it with `make` (or set MEDSTREAM_BIN)" % H.BIN)
    results = []
    try:
        broker = C.Broker()
        broker.start()
        topic = "bench"
        args.cluster = args.cluster or None
        if args.cluster:
            args.cluster = C.cluster_key_file()
        else:
            produce_all(args, broker, topic)
        warm_up(broker)
        for run in range(1, args.runs + 1):
            for nodes in args.nodes:
                results.append(one_run(args, broker, topic, nodes, run))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        print("%d records of ~%d B, %d partitions, --kafka-batch %d, keys %s, %s, medians of %d run(s), %d cores%s"
              % (args.records, args.size, args.partitions, args.batch, args.keys,
                 "one cluster (--kafka-cluster)" if args.cluster else "one consumer group", args.runs, os.cpu_count(),
                 (", serve args: " + " ".join(args.serve_args)) if args.serve_args else ""))
        print()
        print(table(args, results))
    except H.TestFailure as e:
        sys.exit("bench_cluster: %s" % e)
    finally:
        for s in list(H._all_servers):
            s.stop()
        try:
            broker.stop()
        except Exception:
            pass
        C.cleanup()


if __name__ == "__main__":
    main()

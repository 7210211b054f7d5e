# End-to-end tests of `medstream import FILE --kafka BROKERS --topic T` (src/import/to_kafka.c) on a real
# Apache Kafka broker, and of the docs' producer example (docs/examples/produce.py). Checked:
#   - a CSV file (converted with --schema, a column renamed) and an NDJSON file, each with bad rows: every
#     good row is one message of T (8 partitions) on partition shard % 8 with key = the shard (shard.h, as
#     tests/e2e/cluster.py computes it), rows without a record id carry the file's identity and line as
#     headers, bad rows are in the reject file and not in T; a topic of 6 partitions is refused, naming it;
#   - a cluster node (serve --kafka-cluster) consumes them: every row stored once, and nothing was
#     forwarded (T.by-shard is empty: the node keeps no forward counter);
#   - kill -9 of the importer mid-file, then a rerun: it resumes at the checkpoint (reads only the rest),
#     and the node stores every row exactly once, rows without a record id too (two equal rows without one
#     are two records: named by file and line through the headers, not by their content), records with
#     two versions in the file at version 2; the same made exact (the checkpoint file put back behind rows
#     sent): the rows sent again carry the replay header and no version is stored twice; Ctrl-C stops at a
#     batch boundary (the topic holds exactly the rows counted) and a rerun sends the rest;
#   - docs/examples/produce.py, run as a program, sends each record to the partition and with the key the
#     importer gives it (names in several spellings, Latin letters), and a node forwards none of them.
#
# Run: /usr/bin/python3 tests/e2e/test_import_kafka.py [NAME_SUBSTRING...]   (needs Java 17 for the broker)

import json
import os
import random
import re
import signal
import subprocess
import sys

import cluster as CL
import harness as H
from harness import check, eq, fail, short, test

_registered = len(H._tests)
from test_import import wait_progress  # noqa: E402  (its helper, not its tests)
del H._tests[_registered:]

EXAMPLE = os.path.join(H.REPO_ROOT, "docs", "examples", "produce.py")


class Member(CL.Member):
    """A cluster node that logs in once started (its own accounts)."""

    def start(self, health_timeout=H.HEALTH_TIMEOUT):
        super().start(health_timeout)
        self.login()


class Offline(H.Server):
    """A store made with a cluster's key (its id key), for the offline importer (--data) to fill."""

    def __init__(self, key, name):
        self.key = key
        super().__init__(name=name)

    def init(self):
        r = subprocess.run([H.BIN, "init", self.data_dir, "--cluster-key-file", self.key], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            fail("init %s: %s" % (self.name, short(r.stderr)))
        self.initialized = True


def tmpdir(tag):
    d = H.tempfile.mkdtemp(prefix="medstream-import-kafka-%s-" % tag)
    H._temp_dirs.append(d)
    return d


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def person(i, n=40):
    k = i % n
    return "Kafka Person %d" % k, "19%02d-%02d-%02d" % (50 + k, 1 + k % 12, 1 + k % 28)


def a_topic(partitions):
    CL.require_confluent_kafka()
    b = CL.shared_broker()
    topic = "imp%d" % random.randrange(1 << 30)
    CL.create_topic(b.bootstrap, topic, partitions)
    return b, topic


def import_args(path, b, topic, *more):
    return [H.BIN, "import", path, "--kafka", b.bootstrap, "--topic", topic] + list(more)


def run_import(args, timeout=180):
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        fail("`%s` did not end within %ds" % (" ".join(args[1:4]), timeout))
    return r.returncode, r.stdout, r.stderr


def sent_count(out):
    m = re.search(r"sent ([\d,]+) to Kafka topic \S+ \(acknowledged\), rejected ([\d,]+)", out)
    if not m:
        fail("no Kafka summary in: %s" % short(out, 800))
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def read_topic(bootstrap, topic):
    """Every message of topic, to the end of each partition: [(partition, key, value dict or bytes, headers)]."""
    out = []
    for m in CL.read_topic(bootstrap, topic):
        try:
            v = json.loads(m.value())
        except ValueError:
            v = m.value()
        out.append((m.partition(), m.key(), v, dict(m.headers() or [])))
    return out


def check_routed(msgs, partitions):
    """Every message on its shard's partition, keyed by the shard; rows without a record id carry the
    origin headers (32 bytes, a decimal line), rows with one carry none."""
    for part, key, v, hdr in msgs:
        check(isinstance(v, dict), "a message is one JSON record: %s" % short(v))
        shard = CL.shard_of(v)
        eq((part, key), (shard % partitions, str(shard).encode()), "partition and key of %s" % short(v))
        if "record_id" in v:
            eq(hdr, {}, "a row with a record id carries no headers")
        else:
            check(len(hdr.get("medstream-origin", b"")) == 32 and hdr.get("medstream-line", b"").isdigit(),
                  "a row without a record id carries its file and line: %s" % hdr)


def byshard_empty(bootstrap, topic):
    hw = CL.high_watermarks(bootstrap, topic + ".by-shard")
    eq(sum(hw.values()), 0, "nothing forwarded through %s.by-shard: %s" % (topic, hw))


def files(d):
    """A CSV file (a renamed column) and an NDJSON file, each with good rows (with and without record ids,
    two equal rows without one) and bad ones. Returns (csv path, ndjson path, schema path, good rows as
    {record_id or (file, line): record})."""
    schema = os.path.join(d, "schema.json")
    with open(schema, "w") as f:
        json.dump({"identity": {"name": "name", "dob": "dob"}, "columns": {"Patient Name": "name"}}, f)
    lines = ["record_id,Patient Name,dob,type,note"]
    for i in range(60):
        name, dob = person(i)
        lines.append("kc-%03d,%s,%s,visit,csv row %d" % (i, name, dob, i))
    lines.insert(7, "kc-short,Bad Csv Row")                  # too few cells: the CSV reader's
    lines.insert(11, "kc-nodob,Bad Csv Nodob,,visit,x")       # no date of birth: the scan's
    csv = write(os.path.join(d, "rows.csv"), lines)
    rows = []
    for i in range(80):
        name, dob = person(i)
        r = {"name": name, "dob": dob, "type": "lab", "n": i}
        if i % 2 == 0:
            r["record_id"] = "kn-%03d" % i
        rows.append(json.dumps(r))
    same = json.dumps({"name": person(5)[0], "dob": person(5)[1], "type": "same"})
    rows += [same, same]                                     # two equal rows without an id: two records
    rows.insert(3, '{"name": "Bad Json", "dob": ')           # bad JSON
    rows.insert(9, json.dumps({"record_id": "kn-noname", "dob": "1990-01-01"}))  # no identity
    rows.insert(20, json.dumps({"record_id": "kn-big", "name": "Big Row", "dob": "1990-01-01",
                                "pad": "y" * 5000}))          # over --max-record
    nd = write(os.path.join(d, "rows.ndjson"), rows)
    return csv, nd, schema


@test(timeout=600)
def test_import_csv_and_ndjson_to_shard_partitions_and_a_node_forwards_none():
    b, topic = a_topic(8)
    d = tmpdir("route")
    csv, nd, schema = files(d)
    key = CL.cluster_key_file()
    node = Member(b.bootstrap, topic, "imp-route", key, name="imp-route")
    node.start()
    node.wait_ready()
    rc, out, err = run_import(import_args(csv, b, topic, "--schema", schema, "--batch", "7"))
    eq(rc, 0, "CSV import exit code (%s %s)" % (short(out), short(err)))
    eq(sent_count(out), (60, 2), "CSV: sent and rejected")
    rej = [json.loads(x) for x in open(csv + ".rejects.ndjson")]
    eq([e["line"] for e in rej], [8, 12], "the CSV's bad rows in the reject file, by line")
    rc, out, err = run_import(import_args(nd, b, topic, "--schema", schema, "--max-record", "2000", "--batch", "9",
                                          "--parallel", "3"))
    eq(rc, 0, "NDJSON import exit code (%s %s)" % (short(out), short(err)))
    eq(sent_count(out), (82, 3), "NDJSON: sent and rejected")
    rej = [json.loads(x) for x in open(nd + ".rejects.ndjson")]
    eq([e["line"] for e in rej], [4, 10, 21], "the NDJSON's bad rows in the reject file, by line")
    msgs = read_topic(b.bootstrap, topic)
    eq(len(msgs), 142, "one message per good row")
    check_routed(msgs, 8)
    bad = [m for m in msgs if isinstance(m[2], dict) and m[2].get("name", "").startswith(("Bad", "Big"))]
    bad += [m for m in msgs if isinstance(m[2], dict) and m[2].get("record_id") == "kn-noname"]
    eq(bad, [], "no rejected row is in the topic")
    csv_msgs = [m[2] for m in msgs if m[2].get("record_id", "").startswith("kc-")]
    eq(len(csv_msgs), 60, "every CSV row in the topic")
    eq(sorted(csv_msgs[0]), ["dob", "name", "note", "record_id", "type"], "a CSV row as the object it makes")
    # the offline importer, into a store of the same cluster key: the same record ids (rows without one:
    # the keyed hash of file and line, through the headers)
    off = Offline(key, "imp-offline")
    off.init()
    off.extra_args = ["--schema", schema]  # the cluster's schema, as the imports below are given it
    for path, more in ((csv, ["--schema", schema]), (nd, ["--schema", schema, "--max-record", "2000"])):
        r = subprocess.run([H.BIN, "import", path, "--data", off.data_dir, "--rejects", path + ".off"] + more,
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        eq(r.returncode, 0, "offline import of %s (%s)" % (os.path.basename(path), short(r.stderr)))
    off.start()
    off.login()
    CL.wait_drained([node])

    def stored():
        for k in range(40):
            name, dob = person(k)
            _pid, recs = node.records_of(name, dob)
            want = len(range(k, 60, 40)) + len(range(k, 80, 40)) + (2 if k == 5 else 0)
            eq(len(recs), want, "identity %d: every row stored" % k)
            eq({x.get("version", 1) for x in recs}, {1}, "identity %d: each stored once" % k)
            offline = off.get_all("/v1/patients/%s/records" % off.get_json(
                "/v1/patients?" + H.q({"name": name, "dob": dob}))["patient_id"], "records")
            eq(sorted(x["record_id"] for x in recs), sorted(x["record_id"] for x in offline),
               "identity %d: the record ids the offline importer gives" % k)
    CL.eventually(stored)
    byshard_empty(b.bootstrap, topic)
    off.stop()
    node.stop()


@test(timeout=120)
def test_a_topic_whose_partitions_are_not_a_power_of_two_is_refused():
    b, topic = a_topic(6)
    d = tmpdir("six")
    path = write(os.path.join(d, "six.ndjson"), [json.dumps({"name": "Six Parts", "dob": "1990-01-01"})])
    rc, out, err = run_import(import_args(path, b, topic))
    eq(rc, 1, "exit code (%s %s)" % (short(out), short(err)))
    check(topic in err and "6 partitions" in err and "power of two" in err, "the message names topic and count: %s"
          % short(err))
    eq(sum(CL.high_watermarks(b.bootstrap, topic).values()), 0, "nothing sent")
    check(not os.path.exists(path + ".import-checkpoint"), "no checkpoint")


def kill_row(i):
    """Row i of a file: rows 2k and 2k+1 are of one identity and equal when neither has a record id (two
    records); rows 10j and 10j+1 are versions 1 and 2 of record kk-v-j."""
    name, dob = person(i // 2)
    r = {"name": name, "dob": dob, "type": "visit", "seq": i // 2, "note": "z" * 200}
    if i % 10 in (0, 1):
        r["record_id"], r["v"] = "kk-v-%d" % (i // 10), i % 10 + 1
    elif i % 3 == 0:
        r["record_id"] = "kk-%06d" % i
    return r


def check_stored_once(node, n):
    """Every row of a kill_row file of n rows stored once; each kk-v record at version 2 (its two versions
    once each), every other record at version 1 (asked again for a moment after a drain: CL.eventually)."""
    CL.eventually(lambda: stored_once(node, n))


def stored_once(node, n):
    for k in range(40):
        name, dob = person(k)
        _pid, recs = node.records_of(name, dob)
        want = sum(1 for i in range(n) if (i // 2) % 40 == k and i % 10 != 1)
        eq(len(recs), want, "identity %d: every row stored, none twice" % k)
        eq(len({x["record_id"] for x in recs}), len(recs), "identity %d: distinct record ids" % k)
        for x in recs:
            eq(x.get("version", 1), 2 if x["record_id"].startswith("kk-v-") else 1,
               "identity %d: the version of %s" % (k, x["record_id"]))


@test(timeout=900)
def test_kill9_mid_file_then_rerun_stores_every_row_once():
    b, topic = a_topic(8)
    d = tmpdir("kill")
    n = 30000
    rows = []
    for i in range(n):
        rows.append(json.dumps(kill_row(i)))
    path = write(os.path.join(d, "big.ndjson"), rows)
    node = Member(b.bootstrap, topic, "imp-kill", CL.cluster_key_file(), name="imp-kill")
    node.start()
    node.wait_ready()
    args = import_args(path, b, topic, "--batch", "20", "--parallel", "2")
    p = subprocess.Popen(args + ["--progress", "plain", "--progress-interval", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_progress(p, 2000)
    p.kill()
    p.wait(timeout=10)
    ck = json.load(open(path + ".import-checkpoint"))
    check(0 < ck["rows"] < n, "the checkpoint is mid-file: %s" % ck)
    first_sent = sum(CL.high_watermarks(b.bootstrap, topic).values())
    check(first_sent >= ck["rows"], "every checkpointed row is in the topic (%d < %d)" % (first_sent, ck["rows"]))
    rc, out, err = run_import(args, timeout=400)
    eq(rc, 0, "rerun exit code (%s %s)" % (short(out), short(err)))
    check("resuming at line %s" % format(ck["line"], ",") in err, "the rerun resumes at the checkpoint: %s"
          % short(err))
    sent, rejected = sent_count(out)
    eq((sent, rejected), (n - ck["rows"], 0), "the rerun sent the rest only")
    total = sum(CL.high_watermarks(b.bootstrap, topic).values())
    check(n <= total < n + 2000, "messages in the topic: %d for %d rows" % (total, n))
    CL.wait_drained([node], timeout=600)
    check_stored_once(node, n)
    byshard_empty(b.bootstrap, topic)
    node.stop()


@test(timeout=300)
def test_ctrl_c_stops_at_a_batch_boundary_and_rerun_sends_the_rest():
    b, topic = a_topic(4)
    d = tmpdir("int")
    n = 30000
    path = write(os.path.join(d, "int.ndjson"), [json.dumps(kill_row(i)) for i in range(n)])
    args = import_args(path, b, topic, "--batch", "20", "--parallel", "2")
    p = subprocess.Popen(args + ["--progress", "plain", "--progress-interval", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    wait_progress(p, 2000)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    out, err = out.decode(), err.decode()
    eq(p.returncode, 1, "exit code after Ctrl-C (%s %s)" % (short(out), short(err)))
    check("interrupted before line" in out, "the summary says where it stopped: %s" % short(out))
    sent, _ = sent_count(out)
    check(0 < sent < n, "part of the file: %d" % sent)
    eq(sum(CL.high_watermarks(b.bootstrap, topic).values()), sent, "the topic holds exactly the rows counted")
    rc, out2, err2 = run_import(args, timeout=200)
    eq(rc, 0, "rerun (%s %s)" % (short(out2), short(err2)))
    eq(sent_count(out2), (n - sent, 0), "the rerun sent the rest")
    eq(sum(CL.high_watermarks(b.bootstrap, topic).values()), n, "every row once in the topic")


@test(timeout=600)
def test_rows_sent_past_the_checkpoint_are_sent_again_as_a_replay():
    """The state kill -9 leaves, made exactly: every row sent and stored, the checkpoint file back at line
    51 and saying rows up to the end may have been sent. The rerun sends lines 51.. again marked as a
    replay: records with two versions in them keep two versions (none stored again as a third)."""
    b, topic = a_topic(4)
    d = tmpdir("replay")
    n = 400
    path = write(os.path.join(d, "replay.ndjson"), [json.dumps(kill_row(i)) for i in range(n)])
    node = Member(b.bootstrap, topic, "imp-replay", CL.cluster_key_file(), name="imp-replay")
    node.start()
    node.wait_ready()
    args = import_args(path, b, topic, "--batch", "30", "--parallel", "3")
    rc, out, err = run_import(args)
    eq(rc, 0, "first run (%s %s)" % (short(out), short(err)))
    CL.wait_drained([node])
    check_stored_once(node, n)
    ck = json.load(open(path + ".import-checkpoint"))
    eq(ck["done"], 1, "the first run finished")
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    for _ in range(50):
        at = data.index(b"\n", at) + 1
    ck.update({"offset": at, "line": 51, "rows": 50, "rejected": 0, "rejects_bytes": 0, "done": 0,
               "replay_until": len(data)})
    with open(path + ".import-checkpoint", "w") as f:
        json.dump(ck, f)
    rc, out, err = run_import(args)
    eq(rc, 0, "rerun (%s %s)" % (short(out), short(err)))
    check("resuming at line 51" in err, "the rerun resumes at the checkpoint: %s" % short(err))
    eq(sent_count(out), (n - 50, 0), "the rerun sent lines 51.. again")
    msgs = read_topic(b.bootstrap, topic)
    eq(len(msgs), 2 * n - 50, "messages in the topic")
    again = [m for m in msgs if m[3].get("medstream-replay") == b"1"]
    eq(len(again), n - 50, "every row sent again says so")
    CL.wait_drained([node])
    check_stored_once(node, n)
    byshard_empty(b.bootstrap, topic)
    node.stop()


EXAMPLE_NAMES = ["Ana Lopez", "  ANA   LOPEZ ", "José Müller", "JOSÉ MÜLLER", "Strauß Ölund", "STRAUSS ÖLUND",
                 "Zoë O'Brien", "zoë  o'brien", "Ångström Ærø", "Léa-Marie Dupont", "Soft\u00adHyphen Name"]


@test(timeout=600)
def test_docs_example_producer_lands_on_the_importers_partitions():
    check(os.path.exists(EXAMPLE), "docs/examples/produce.py exists")
    b, topic = a_topic(8)
    b2, topic2 = b, topic + "x"
    CL.create_topic(b.bootstrap, topic2, 8)
    d = tmpdir("example")
    recs = []
    for i, name in enumerate(EXAMPLE_NAMES * 3):
        recs.append({"record_id": "ex-%03d" % i, "name": name, "dob": "19%02d-0%d-1%d" % (60 + i % 7, 1 + i % 9,
                                                                                       i % 10),
                     "type": "visit"})
    path = write(os.path.join(d, "ex.ndjson"), [json.dumps(r, ensure_ascii=False) for r in recs])
    node = Member(b.bootstrap, topic, "imp-example", CL.cluster_key_file(), name="imp-example")
    node.start()
    node.wait_ready()
    r = subprocess.run([sys.executable, EXAMPLE, "--brokers", b.bootstrap, "--topic", topic, path],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    eq(r.returncode, 0, "the example's exit code (%s %s)" % (short(r.stdout), short(r.stderr)))
    rc, out, err = run_import(import_args(path, b2, topic2))
    eq(rc, 0, "import exit code (%s %s)" % (short(out), short(err)))
    example = {m[2]["record_id"]: (m[0], m[1]) for m in read_topic(b.bootstrap, topic)}
    imported = {m[2]["record_id"]: (m[0], m[1]) for m in read_topic(b.bootstrap, topic2)}
    eq(len(example), len(recs), "every record sent by the example")
    eq(example, imported, "the example's (partition, key) of each record is the importer's")
    CL.wait_drained([node])
    byshard_empty(b.bootstrap, topic)

    def stored():
        for name in ("Ana Lopez", "José Müller", "Strauß Ölund"):
            for dob in {x["dob"] for x in recs if x["name"] == name}:
                pid, got = node.records_of(name, dob)
                check(pid is not None and got, "the node stored %s's records" % name)
    CL.eventually(stored)
    node.stop()


if __name__ == "__main__":
    H.main()

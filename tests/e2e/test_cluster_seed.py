# End-to-end tests of `medstream cluster-seed` (issue 16: "existing single-node stores keep their ids";
# src/ingest/cluster_seed.h) on a real Apache Kafka broker: a single-node store, made and fed over HTTP
# before any cluster existed, seeds a new cluster; two cluster nodes made with the key the seed wrote then
# answer for every old patient with the id it had, hold every record with the id, version count, event
# time and fields it had (records without a record id and without an event time too), route reads of old
# ids to the owner of the identity's shard, give new records of old identities the old ids and new
# identities new ones; deleted records and erased patients do not come back. The seed is exactly once
# across kill -9 (each step a Kafka transaction with its progress), says so when run again after it
# finished, and refuses a second store, a group with members and a cluster store.
#
# Run: /usr/bin/python3 tests/e2e/test_cluster_seed.py [NAME_SUBSTRING...]   (needs Java 17)

import json
import os
import random
import signal
import subprocess
import time

import cluster as CL
import harness as H
from harness import check, eq, fail, short, test

_registered = len(H._tests)
from test_cluster import Member, owner_get  # noqa: E402  (its helpers, not its tests)
del H._tests[_registered:]


def seed(data, bootstrap, topic, group, key_out, extra=(), expect=0):
    r = subprocess.run([H.BIN, "cluster-seed", "--data", data, "--kafka-brokers", bootstrap, "--kafka-topic", topic,
                        "--kafka-group", group, "--cluster-key-out", key_out] + list(extra),
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if r.returncode != expect:
        fail("cluster-seed exited %d (expected %d): %s %s" % (r.returncode, expect, short(r.stdout), short(r.stderr)))
    return (json.loads(r.stdout) if expect == 0 else None), r.stderr


def old_records(n):
    """n identities; per identity a record with an id and an event time, and one with neither (its id is
    derived, its event time is when it was stored)."""
    out = []
    for i in range(n):
        name, dob = "Seed Person %d" % i, "19%02d-%02d-%02d" % (40 + i % 60, 1 + i % 12, 1 + i % 28)
        out.append({"record_id": "old-%d" % i, "name": name, "dob": dob, "type": "visit",
                    "ts": "2025-0%d-15T08:00:00Z" % (1 + i % 9), "note": "first %d" % i})
        out.append({"name": name.upper(), "dob": dob, "type": "lab", "value": i})
    return out


def old_store(n):
    """A single-node store (no cluster key) fed over HTTP: n identities x 2 records, one record updated,
    one deleted, one patient erased. Returns (server (stopped), {(name, dob): pid}, {pid: {rid: record}},
    the deleted record id, the erased identity)."""
    s = H.Server(name="seed-old")
    s.start()
    s.login()
    recs = old_records(n)
    for i in range(0, len(recs), 2):  # a commit per identity: the seed's steps end at commit boundaries
        s.ingest_ok(recs[i:i + 2])
    upd = dict(recs[0], note="updated")
    s.ingest_ok([upd])  # old-0 version 2
    eq(s.request("DELETE", "/v1/records/old-1").status, 200, "DELETE old-1")
    pids = {}
    for r in recs[::2]:
        pids[(r["name"], r["dob"])] = s.get_json("/v1/patients?" + H.q({"name": r["name"], "dob": r["dob"]}))[
            "patient_id"]
    erased = (recs[4]["name"], recs[4]["dob"])
    r = s.request("DELETE", "/v1/patients/" + pids[erased], body=json.dumps({"reason": "seed test erasure"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "erase a patient of the old store")
    held = {}
    for ident, pid in pids.items():
        if ident == erased:
            continue
        held[pid] = {}
        for x in s.get_all("/v1/patients/%s/records" % pid, "records"):
            held[pid][x["record_id"]] = s.get_json("/v1/records/" + x["record_id"])
    s.stop()
    return s, pids, held, "old-1", erased


def ask(nodes, path, via=None, limit=30.0):
    """owner_get until the group is settled: a 503 (a rebalance) or a 307 not yet followed to its end (a
    membership view a couple of seconds old) is asked again, for up to limit seconds."""
    deadline = time.monotonic() + limit
    while True:
        r, owner = owner_get(nodes, path, via)
        if r.status not in (307, 503) or time.monotonic() > deadline:
            return r, owner
        time.sleep(0.5)


def a_topic(b, partitions=4):
    topic = "seeded%d" % random.randrange(1 << 30)
    CL.create_topic(b.bootstrap, topic, partitions)
    return topic


def fence(b, topic, partitions, tag):
    """A plain record on every partition of topic, at its shard's partition: the seed's transactions end
    each partition with a commit marker the group's offsets never reach, so a drain is waited for up to
    these (CL.wait_drained). Their identities are new patients of their own."""
    recs, covered, k = [], set(), 0
    while len(covered) < partitions:
        rec = {"record_id": "fence-%s-%d" % (tag, k), "name": "Fence Person %s %d" % (tag, k),
               "dob": "1999-09-09", "type": "fence"}
        p = CL.shard_of(rec) % partitions
        if p not in covered:
            covered.add(p)
            recs.append(rec)
        k += 1
    CL.produce(b.bootstrap, topic, recs, partition=CL.shard_partition(partitions))
    return recs


def drained(b, nodes, topic, group, fences):
    """The group drained and every fence record stored at its owner: a node commits a batch's offsets
    before the batch is in its store (CL.eventually), and each fence is its partition's last record."""
    CL.wait_drained(nodes, topic=topic, bootstrap=b.bootstrap, group=group)

    def fenced():
        for rec in fences:
            r, _ = ask(nodes, "/v1/patients?" + H.q({"name": rec["name"], "dob": rec["dob"]}))
            eq(r.status, 200, "fence %s stored" % rec["record_id"])
    CL.eventually(fenced)


def key_path():
    d = H.tempfile.mkdtemp(prefix="medstream-e2e-seed-key-")
    H._temp_dirs.append(d)
    return os.path.join(d, "cluster.key")


@test(timeout=900)
def test_a_single_node_store_seeds_a_cluster_and_keeps_its_ids():
    CL.require_confluent_kafka()
    b = CL.shared_broker()
    old, pids, held, deleted, erased = old_store(120)
    topic, group, key = a_topic(b), "seeded", key_path()

    # kill -9 the seed part-way (a transaction per record version), then run it again: exactly once
    p = subprocess.Popen([H.BIN, "cluster-seed", "--data", old.data_dir, "--kafka-brokers", b.bootstrap,
                          "--kafka-topic", topic, "--kafka-group", group, "--cluster-key-out", key,
                          "--step-records", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, t0 = "", time.monotonic()
    while "commits" not in seen and time.monotonic() - t0 < 120:
        line = p.stderr.readline()
        if not line:
            break
        seen += line
    for _ in range(3):  # a few more steps (of ~120), then SIGKILL mid-stream
        p.stderr.readline()
    p.send_signal(signal.SIGKILL)
    p.wait()
    check("commits" in seen, "the seed reported record steps before it was killed (exit %s): ...%s"
          % (p.returncode, seen[-600:]))
    eq(os.stat(key).st_mode & 0o777, 0o600, "the cluster key file's mode")
    got, _ = seed(old.data_dir, b.bootstrap, topic, group, key)
    eq(got["resumed"], True, "the second run resumed the seed")
    eq(got["patients"], 120, "patients of the old store")
    versions = sum(len(v) for v in held.values()) + 1  # old-0 has two versions
    check(0 < got["record_versions"] < versions, "the resumed run sent only what was left (%d of %d)" %
          (got["record_versions"], versions))
    again, _ = seed(old.data_dir, b.bootstrap, topic, group, key)
    eq((again["already_done"], again["record_versions"], again["transactions"]), (True, 0, 0),
       "a finished seed run again sends nothing")

    # a second store cannot seed the same cluster
    other = H.Server(name="seed-other")
    other.start()
    other.login()
    other.ingest_ok(old_records(1))
    other.stop()
    _, err = seed(other.data_dir, b.bootstrap, topic, group, key_path(), expect=1)
    check("seeded by a store of 120 patients" in err, "a second seed is refused: %s" % short(err))

    # two nodes made with the key the seed wrote
    nodes = [Member(b.bootstrap, topic, group, key, name="seeded-%d" % i) for i in range(2)]
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_ready()
    drained(b, nodes, topic, group, fence(b, topic, 4, "a"))

    # every old patient: the same id, through either node (a 307 to its identity's shard's owner)
    moved = 0
    for (name, dob), pid in pids.items():
        for via in nodes:
            r, owner = ask(nodes, "/v1/patients?" + H.q({"name": name, "dob": dob}), via)
            if (name, dob) == erased:
                eq(r.status, 404, "the erased identity is not in the cluster")
                continue
            eq(r.status, 200, "old identity found through %s" % via.name)
            eq(r.json()["patient_id"], pid, "an old patient keeps its id")
            r2, owner2 = ask(nodes, "/v1/patients/" + pid, via)
            eq(r2.status, 200, "GET /v1/patients/{old id} through %s" % via.name)
            eq(owner2.port, owner.port, "a read of an old id goes to its identity's shard's owner")
        if (name, dob) != erased:
            moved += 1
            have = {x["record_id"]: x for x in owner.get_all("/v1/patients/%s/records" % pid, "records")}
            eq(sorted(have), sorted(held[pid]), "the records of %s" % pid)
            for rid, rec in held[pid].items():
                now = owner.get_json("/v1/records/" + rid)
                eq((now["version"], now["ts"], now["fields"]), (rec["version"], rec["ts"], rec["fields"]),
                   "record %s: version, event time and fields as in the old store" % rid)
    eq(moved, 119, "old patients checked")
    for n in nodes:
        check(n.get("/v1/records/" + deleted).status == 404, "the deleted record is not in the cluster")

    # new records: an old identity keeps its id, a new identity gets an id no old patient has
    (name, dob), pid = next((k, v) for k, v in pids.items() if k != erased)
    CL.produce(b.bootstrap, topic, [{"record_id": "new-old", "name": name, "dob": dob, "type": "visit"},
                                    {"record_id": "new-new", "name": "Brand New Person", "dob": "2001-02-03",
                                     "type": "visit"}], partition=CL.shard_partition(4))
    drained(b, nodes, topic, group, fence(b, topic, 4, "b"))
    r, _ = ask(nodes, "/v1/patients?" + H.q({"name": name, "dob": dob}))
    eq(r.json()["patient_id"], pid, "a new record of an old identity: its old id")
    r, owner = ask(nodes, "/v1/patients?" + H.q({"name": "Brand New Person", "dob": "2001-02-03"}))
    eq(r.status, 200, "the new identity is stored")
    check(r.json()["patient_id"] not in pids.values(), "a new identity's id is none of the old store's")
    have = [x["record_id"] for x in owner.get_all("/v1/patients/%s/records" % r.json()["patient_id"], "records")]
    eq(have, ["new-new"], "the new patient's records")

    # the seed refuses a group with members
    _, err = seed(old.data_dir, b.bootstrap, a_topic(b), group, key_path(), expect=1)
    check("member" in err, "a seed into a group with members is refused: %s" % short(err))
    # and a cluster node's store
    nodes[0].stop()
    _, err = seed(nodes[0].data_dir, b.bootstrap, a_topic(b), "another", key_path(), expect=1)
    check("cluster node's" in err, "a cluster node's store does not seed: %s" % short(err))
    for n in nodes:
        n.stop()


if __name__ == "__main__":
    H.main()

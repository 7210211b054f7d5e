# End-to-end tests of LMDB's own writes failing (issue 17: fault injection SQLite style at random points of
# commit, checkpoint and compaction). The server runs with build/libmsfault.so preloaded
# (tests/fault/ld_fault.c), which fails the N-th pwrite (a page or the meta page) or fdatasync of
# data.mdb once: EIO, or a short write. For random N:
#
# 1. Ingest with the patient log's heads checkpointed every 16 entries (so that most commits write
#    checkpoint chunks too): batches sent one at a time; one answered 200 is acknowledged, one refused is
#    not. Checked: the fault fired; the server did not die; after kill -9 and a start without the fault,
#    every acknowledged record reads back with its content, a refused batch left none of its records
#    (all or nothing), and new batches are taken.
# 2. The compaction of the patient log after a change of schema, faulted: after kill -9 and a start
#    without the fault, it completes, and every patient reads as before (history, as-of, public copy).
#
# Run: /usr/bin/python3 tests/e2e/test_lmdb_faults.py

import json
import os
import random
import time

import harness as H
from harness import check, eq, fail, q, short, test

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "libmsfault.so")


def start_faulted(s, spec):
    """Start s with the fault spec (MS_FAULT) preloaded; returns the fault log's path."""
    if not os.path.exists(SHIM):
        fail("%s is missing: build it with `make build/libmsfault.so`" % SHIM)
    if not s.initialized:
        s.init()  # `medstream init` without the fault
    flog = os.path.join(s.base, "fault.log")
    arm = os.path.join(s.base, "fault.arm")
    env = {"LD_PRELOAD": os.path.abspath(SHIM), "MS_FAULT": spec, "MS_FAULT_LOG": flog, "MS_FAULT_ARM": arm,
           # the sanitizer build's runtime need not come first: the shim only wraps four calls
           "ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s.start()
        open(arm, "w").close()  # the fault counts from here: after the start and the harness's login
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return flog


def batch(tag, n):
    return [{"record_id": "%s-%d" % (tag, i), "name": "Fault Person %d" % (i % 7), "dob": "1971-02-%02d" % (1 + i % 7),
             "type": "lab", "ts": "2024-03-01T10:%02d:00Z" % (i % 60), "value": "%s/%d" % (tag, i)}
            for i in range(n)]


def read_record(s, rid):
    r = s.get("/v1/records/%s" % rid)
    return r.json() if r.status == 200 else None


@test(timeout=300)
def test_lmdb_write_faults_during_ingest_lose_nothing_acknowledged():
    rnd = random.Random(int(os.environ.get("MS_FAULT_SEED", str(os.getpid()))))
    specs = ["pwrite:%d:eio" % rnd.randint(20, 400), "pwrite:%d:short" % rnd.randint(20, 400),
             "fdatasync:%d:eio" % rnd.randint(3, 30), "pwrite:%d:eio" % rnd.randint(1, 20)]
    for k, spec in enumerate(specs):
        s = H.Server(name="lmdbfault%d" % k)
        s.extra_args = ["--checkpoint-lag", "16"]
        flog = start_faulted(s, spec)
        acked, refused = [], []
        for b in range(80):  # (~10 writes of data.mdb a batch)
            recs = batch("f%d-b%d" % (k, b), 25)
            r = s.ingest(recs)
            if r.status == 200 and not r.json().get("errors"):
                acked += recs
            else:
                check(r.status in (503, 507), "a faulted batch: %d %s" % (r.status, short(r.text)))
                refused.append(recs)
            if refused and len(refused) >= 3:
                break
        fired = open(flog).read() if os.path.exists(flog) else ""
        check(fired.startswith("fault "), "%s: the fault never fired (%d batches acknowledged)" % (spec, len(acked) // 25))
        check(s.proc.poll() is None, "%s: the server died: %s" % (spec, s.log_tail()))
        check(refused, "%s: no batch was refused after the fault" % spec)
        s.kill9()
        s.start()  # without the fault
        for rec in acked:
            got = read_record(s, rec["record_id"])
            check(got is not None, "%s: acknowledged record %s lost" % (spec, rec["record_id"]))
            eq(got["fields"].get("value"), rec["value"], "%s: content of %s" % (spec, rec["record_id"]))
        for recs in refused:
            there = [x["record_id"] for x in recs if read_record(s, x["record_id"]) is not None]
            check(there in ([], [x["record_id"] for x in recs]),
                  "%s: a refused batch is partly stored: %s" % (spec, there))
        s.ingest_ok(batch("f%d-after" % k, 10))
        s.stop()


S1 = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type", "event_time": "ts",
      "public": {"value": "copy", "type": "copy"}}
S2 = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type", "event_time": "ts",
      "public": {"type": "copy"}}


def views(s, pids):
    out = {}
    for pid in pids:
        h = s.get_json("/v1/patients/%s/history" % pid)["versions"]
        at = [s.get_json("/v1/patients/%s?%s" % (pid, q({"as_of": v["valid_from"]})))["fields"] for v in h]
        out[pid] = (h, at, s.get_json("/v1/public/patients/%s" % pid)["fields"])
    return out


@test(timeout=300)
def test_lmdb_write_fault_during_compaction_then_restart_completes():
    rnd = random.Random(int(os.environ.get("MS_FAULT_SEED", str(os.getpid()))))
    s = H.Server(name="lmdbfaultcompact")
    paths = []
    for name, schema in (("s1.json", S1), ("s2.json", S2)):
        paths.append(os.path.join(s.base, name))
        with open(paths[-1], "w") as f:
            json.dump(schema, f)
    s.extra_args = ["--schema", paths[0], "--checkpoint-lag", "16"]
    s.start()
    pids = set()
    for b in range(12):
        for item in s.ingest_ok(batch("c-b%d" % b, 40))["items"]:
            pids.add(item["patient_id"])
    pids = sorted(pids)
    before = views(s, pids)
    s.stop()
    # the switch, then the compaction, with a write of data.mdb failing somewhere in them
    s.extra_args = ["--schema", paths[1], "--checkpoint-lag", "16"]
    spec = "pwrite:%d:%s" % (rnd.randint(1, 6), rnd.choice(["eio", "short"]))
    flog = start_faulted(s, spec)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and not os.path.exists(flog):
        time.sleep(0.2)
    check(os.path.exists(flog), "%s: the fault never fired: %s" % (spec, s.log_tail()))
    time.sleep(1)
    check(s.proc.poll() is None, "%s: the server died: %s" % (spec, s.log_tail()))
    s.kill9()
    s.start()
    t0 = time.monotonic()
    while "patient log compacted" not in open(s.log_path, errors="replace").read():
        check(time.monotonic() - t0 < 60, "%s: the compaction did not complete after the restart" % spec)
        time.sleep(0.3)
    h = s.get_json("/healthz")
    eq(h["schema"], {"version": 2, "reprojecting": None}, "%s: the schema after the restart" % spec)
    got = views(s, pids)
    for pid in pids:
        hist, at, pub = got[pid]
        eq(at, before[pid][1], "%s: the reads as of each version's valid_from" % spec)
        eq([v["version"] for v in hist], [v["version"] for v in before[pid][0]], "%s: the versions" % spec)
        eq([v["fields"] for v in hist], [v["fields"] for v in before[pid][0]], "%s: the versions' fields" % spec)
        check("value" not in pub, "%s: a public copy under S2 still has S1's field: %s" % (spec, short(pub)))
    # every record of the 12 batches is there
    for b in range(12):
        for rec in batch("c-b%d" % b, 40):
            got_r = read_record(s, rec["record_id"])
            check(got_r is not None and got_r["fields"].get("value") == rec["value"],
                  "%s: record %s after the restart" % (spec, rec["record_id"]))
    s.stop()


if __name__ == "__main__":
    H.main()

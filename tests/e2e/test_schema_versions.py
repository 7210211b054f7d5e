# End-to-end tests of schema versions (issue 15, item 4): the schema in force is stored with a version;
# serve with a changed schema re-projects every stored record version's and patient version's public copy
# in the background (serve --reproject-rate slows it down here so that it can be watched) while ingest
# goes on; public answers carry "schema_version" and answer under the previous version until the
# re-projection is complete, then under the new one for every old record and patient; /healthz and
# /metrics show the progress; a reformatted schema file is not a new version; a kill -9 in the middle of a
# re-projection is resumed by the next start; the patient log's compaction after the switch (the previous
# version's public copies there become stubs) survives kill -9 at random points and never changes what a
# reader sees: every patient version as of every instant, the history, the public copies.
#
# Run: /usr/bin/python3 tests/e2e/test_schema_versions.py [NAME_SUBSTRING...]

import json
import os
import random
import re
import subprocess
import time

import harness as H
from harness import check, eq, fail, q, short, test

S1 = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type", "event_time": "ts",
      "public": {"favorite_color": "copy", "type": "copy", "ts": "year"}}
# S2: blood_type published, favorite_color no longer
S2 = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type", "event_time": "ts",
      "public": {"blood_type": "copy", "type": "copy", "ts": "year"}}

N_PATIENTS = 60


def write_schema(s, name, schema, pretty=False):
    path = os.path.join(s.base, name)
    with open(path, "w") as f:
        if pretty:  # the same schema, laid out otherwise: keys reordered, indented, an escape
            text = json.dumps(schema, indent=4, sort_keys=False)[::1]
            items = list(schema.items())[::-1]
            text = json.dumps(dict(items), indent=3).replace('"copy"', '"\\u0063opy"')
            f.write("\n\n" + text + "\n")
        else:
            json.dump(schema, f)
    return path


def rec(i, version=1, color="blue", blood="A+"):
    who = i % N_PATIENTS
    return {"record_id": "sv-%d" % i, "name": "Schema Person %d" % who, "dob": "1970-03-%02d" % (1 + who % 28),
            "type": "lab", "ts": "2024-05-%02dT10:00:00Z" % (1 + i % 28), "favorite_color": color,
            "blood_type": blood, "note": "v%d" % version}


def health(s):
    return s.get_json("/healthz")


def metric(s, name):
    text = s.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    fail("/metrics has no %s" % name)


def public_records(s):
    """Every public record, with the schema_version of each page."""
    out, cursor, versions = [], None, set()
    while True:
        p = {"limit": 100}
        if cursor:
            p["cursor"] = cursor
        a = s.get_json("/v1/public/records?" + q(p))
        versions.add(a.get("schema_version"))
        out += a["records"]
        cursor = a.get("next_cursor")
        if not cursor:
            return out, versions


def fill(s, n):
    """n records (first versions), then a second version of every third one; returns the patient ids."""
    pids = set()
    recs = [rec(i) for i in range(n)]
    for k in range(0, n, 100):
        for item in s.ingest_ok(recs[k:k + 100])["items"]:
            pids.add(item["patient_id"])
    upd = [rec(i, version=2, color="green", blood="B-") for i in range(0, n, 3)]
    s.ingest_ok(upd)
    return sorted(pids)


def wait_switched(s, version, timeout=90):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        h = health(s)
        if h["schema"]["version"] == version and h["schema"]["reprojecting"] is None:
            return h
        time.sleep(0.3)
    fail("the re-projection to version %d did not finish within %ds: %s" % (version, timeout, short(health(s))))


def check_all_under_s2(s, pids, n_records):
    recs, versions = public_records(s)
    eq(versions, {2}, "schema_version of every page of /v1/public/records")
    eq(len(recs), n_records, "public records after the re-projection")
    for r in recs:
        f = r["fields"]
        check("favorite_color" not in f, "an old public field is still published: %s" % short(r))
        check(f.get("blood_type") in ("A+", "B-", "O+"), "a record without its S2 field: %s" % short(r))
    for pid in pids:
        p = s.get_json("/v1/public/patients/%s" % pid)
        eq(p["schema_version"], 2, "schema_version of a public patient")
        check("favorite_color" not in p["fields"] and "blood_type" in p["fields"],
              "a patient not re-projected: %s" % short(p))


@test(timeout=150)
def test_changed_schema_reprojects_everything_while_ingest_goes_on():
    s = H.Server(name="schemaver")
    s.extra_args = ["--schema", write_schema(s, "s1.json", S1)]
    s.start()
    n = 240
    pids = fill(s, n)
    h = health(s)
    eq(h["schema"], {"version": 1, "reprojecting": None}, "/healthz schema under S1")
    recs, versions = public_records(s)
    eq(versions, {1}, "schema_version under S1")
    check(all("favorite_color" in r["fields"] and "blood_type" not in r["fields"] for r in recs),
          "S1 copies: %s" % short(recs[:2]))
    p = s.get_json("/v1/public/patients/%s" % pids[0])
    eq(p["schema_version"], 1, "a public patient's schema_version under S1")
    s.stop()

    # S2, slowly: ~240 record versions + 80 updates + their patients' versions
    s.extra_args = ["--schema", write_schema(s, "s2.json", S2), "--reproject-rate", "60"]
    s.start()
    h = health(s)
    eq(h["schema"]["version"], 1, "the version in force while re-projecting")
    rp = h["schema"]["reprojecting"]
    check(rp is not None and rp["to"] == 2 and rp["total"] > 0 and rp["done"] < rp["total"],
          "/healthz shows the re-projection: %s" % short(h))
    eq(metric(s, "medstream_schema_version"), 1, "medstream_schema_version while re-projecting")
    check(metric(s, "medstream_reprojection_total") > 0, "medstream_reprojection_total")
    # public answers stay under S1 meanwhile, complete
    recs, versions = public_records(s)
    eq(versions, {1}, "schema_version while re-projecting")
    eq(len(recs), n, "public records while re-projecting")
    check(all("favorite_color" in r["fields"] and "blood_type" not in r["fields"] for r in recs),
          "public copies while re-projecting are S1's: %s" % short(recs[:2]))
    # ingest goes on: acknowledged, published under S1 now and under S2 after the switch
    t0 = time.monotonic()
    extra = [dict(rec(n + i, color="purple", blood="O+"), ts="2025-01-01T00:00:00Z") for i in range(30)]
    pid_x = s.ingest_ok(extra)["items"][0]["patient_id"]
    took = time.monotonic() - t0
    check(took < 5, "ingest during the re-projection took %.1f s" % took)
    new = s.get_json("/v1/public/records?" + q({"patient_id": pids[0]}))
    eq(new["schema_version"], 1, "schema_version of a patient's public records while re-projecting")
    px = s.get_json("/v1/public/patients/%s" % pid_x)
    eq((px["schema_version"], px["fields"]), (1, {"favorite_color": "purple"}),
       "a patient changed during the re-projection, under S1")
    time.sleep(1.5)
    h2 = health(s)
    check(h2["schema"]["reprojecting"] is None or h2["schema"]["reprojecting"]["done"] > rp["done"],
          "progress: %s then %s" % (short(h), short(h2)))
    wait_switched(s, 2)
    eq(metric(s, "medstream_schema_version"), 2, "medstream_schema_version after the switch")
    check_all_under_s2(s, pids, n + 30)
    px = s.get_json("/v1/public/patients/%s" % pid_x)
    eq((px["schema_version"], px["fields"]), (2, {"blood_type": "O+"}),
       "a patient changed during the re-projection, under S2")
    # a restart with the same schema changes nothing
    s.stop()
    s.extra_args = ["--schema", os.path.join(s.base, "s2.json")]
    s.start()
    eq(health(s)["schema"], {"version": 2, "reprojecting": None}, "/healthz after a restart under S2")
    s.stop()


@test(timeout=60)
def test_reformatted_schema_is_the_same_version():
    s = H.Server(name="schemafmt")
    s.extra_args = ["--schema", write_schema(s, "s1.json", S1)]
    s.start()
    s.ingest_ok([rec(i) for i in range(10)])
    s.stop()
    s.extra_args = ["--schema", write_schema(s, "s1-pretty.json", S1, pretty=True)]
    s.start()
    eq(health(s)["schema"], {"version": 1, "reprojecting": None}, "/healthz with the reformatted schema")
    a = s.get_json("/v1/public/records")
    eq(a["schema_version"], 1, "schema_version with the reformatted schema")
    s.stop()


@test(timeout=60)
def test_default_schema_is_version_1_everywhere():
    s = H.shared_server("schemadefault")
    s.ingest_ok([rec(1000)])
    eq(health(s)["schema"]["version"], 1, "the default schema's version")
    a = s.get_json("/v1/public/records")
    eq(a["schema_version"], 1, "schema_version of the public records")
    p = s.get_json("/v1/public/patients/%s" % a["records"][0]["patient_id"])
    eq(p["schema_version"], 1, "schema_version of a public patient")


@test(timeout=180)
def test_kill9_mid_reprojection_then_restart_completes():
    s = H.Server(name="schemakill")
    s.extra_args = ["--schema", write_schema(s, "s1.json", S1)]
    s.start()
    n = 240
    pids = fill(s, n)
    s.stop()
    s2 = write_schema(s, "s2.json", S2)
    s.extra_args = ["--schema", s2, "--reproject-rate", "40"]
    s.start()
    time.sleep(3)
    rp = health(s)["schema"]["reprojecting"]
    check(rp is not None and 0 < rp["done"] < rp["total"], "mid-way before the kill: %s" % short(rp))
    s.kill9()
    s.extra_args = ["--schema", s2, "--reproject-rate", "60"]
    s.start()
    rp2 = health(s)["schema"]["reprojecting"]
    check(rp2 is not None and rp2["done"] >= rp["done"] // 2, "resumed from its cursor: %s then %s" % (rp, rp2))
    eq(public_records(s)[1], {1}, "schema_version after the restart, before the switch")
    wait_switched(s, 2)
    check_all_under_s2(s, pids, n)
    s.stop()


def patient_views(s, pids):
    """What a reader sees of each patient: its history, the state as of each version's valid_from, and its
    public copy."""
    out = {}
    for pid in pids:
        h = s.get_json("/v1/patients/%s/history" % pid)["versions"]
        at = [s.get_json("/v1/patients/%s?%s" % (pid, q({"as_of": v["valid_from"]}))) for v in h]
        at = [(a["version"], a["valid_from"], a["fields"]) for a in at]
        pub = s.get_json("/v1/public/patients/%s" % pid)
        out[pid] = (h, at, pub["fields"], pub["schema_version"])
    return out


def plog_entries(lmdb_dir, db):
    """The values of sub-database db of the store, read by LMDB's own mdb_dump."""
    out = subprocess.run(["mdb_dump", "-s", db, lmdb_dir], capture_output=True, text=True, check=True).stdout
    lines = out.split("HEADER=END\n", 1)[1].splitlines()
    return [bytes.fromhex(v.strip()) for v in lines[1:-1:2]]


def plog_public_copies(vals):
    """(schema version, bytes of fields) of every public copy ('P' entry) among patient log entries
    (store/plog.c's entry formats: format 2, the tag | 0x80 then varints; format 1, the tag then
    big-endian numbers)."""

    def varint(b, i):
        x = shift = 0
        while True:
            x |= (b[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not b[i - 1] & 0x80:
                return x, i

    copies = []
    for v in vals:
        if v[0] == ord("P") | 0x80:
            i = 1
            for _ in range(4):  # number, the three back-distances
                _, i = varint(v, i)
            sv, i = varint(v, i)
            for _ in range(2):  # valid_from (zigzag), version
                _, i = varint(v, i)
            copies.append((sv, len(v) - i))
        elif v[0] == ord("P"):
            copies.append((int.from_bytes(v[33:37], "big"), len(v) - 49))
    return copies


@test(timeout=240)
def test_log_compaction_after_the_switch_survives_kill9():
    s = H.Server(name="schemacompact")
    s.extra_args = ["--schema", write_schema(s, "s1.json", S1), "--checkpoint-lag", "16"]
    s.start()
    n = 240
    pids = fill(s, n)
    s.stop()
    s2 = write_schema(s, "s2.json", S2)
    # the re-projection, then the compaction of the log, each at 150 entries a second; heads checkpointed
    # every 16 entries, so that the log's floor follows the writes and its old part moves
    s.extra_args = ["--schema", s2, "--reproject-rate", "150", "--checkpoint-lag", "16"]
    s.start()
    wait_switched(s, 2)
    before = patient_views(s, pids)
    check(all(v[3] == 2 and "blood_type" in v[2] for v in before.values()), "public copies under S2 before")
    rnd = random.Random(os.getpid())
    kills = 0
    for _ in range(2):  # kill -9 at a random point of the compaction, twice; each start resumes it
        if metric(s, "medstream_log_compacting") == 0:
            break
        time.sleep(rnd.uniform(0.2, 1.5))
        s.kill9()
        kills += 1
        s.start()
        eq(patient_views(s, pids), before, "what a reader sees after a kill -9 during the compaction")
    t0 = time.monotonic()
    while metric(s, "medstream_log_compacting") == 1:
        check(time.monotonic() - t0 < 60, "the compaction did not finish within 60 s")
        time.sleep(0.3)
    check(kills >= 1, "no kill landed during the compaction")
    eq(patient_views(s, pids), before, "what a reader sees after the compaction")
    check_all_under_s2(s, pids, n)
    # its work, read from the store's file by LMDB's own mdb_dump: the log's old part moved into its
    # compacted part, and of the public copies made under S1 (one per patient version made then) only
    # stubs without fields are left: each patient's newest entry (at most one a patient), and those past
    # the checkpoint floor (at most the lag)
    s.stop()
    lmdb = os.path.join(s.data_dir, "lmdb")
    hot, moved = plog_entries(lmdb, "plog"), plog_entries(lmdb, "plogc")
    check(len(moved) > n, "entries moved into the compacted part: %d of %d" % (len(moved), len(moved) + len(hot)))
    v1 = [c for c in plog_public_copies(hot + moved) if c[0] == 1]
    eq([c for c in v1 if c[1] > 0], [], "version 1 public copies in the log that still have fields")
    check(len(v1) <= N_PATIENTS + 16, "version 1 stubs left: %d" % len(v1))
    resumed = [int(m) for m in re.findall(r"compacting the patient log from entry (\d+)",
                                          open(s.log_path, errors="replace").read())]
    # (a kill can land just after the compaction's end: that start has nothing to resume)
    check(2 <= len(resumed) <= kills + 1 and resumed[0] == 1 and all(r > 1 for r in resumed[1:]),
          "each start after a kill resumed the compaction where it was: %s (%d kills)" % (resumed, kills))
    # a restart with nothing left to compact walks nothing
    s.extra_args = ["--schema", s2, "--checkpoint-lag", "16"]
    s.start()
    eq(metric(s, "medstream_log_compaction_entries"), 0, "entries looked at by a start with nothing to do")
    eq(patient_views(s, pids), before, "what a reader sees after a restart")
    # and the store goes on: new versions of patients whose entries moved
    s.ingest_ok([dict(rec(2000 + i, color="red", blood="AB+"), ts="2025-02-01T00:00:00Z") for i in range(12)])
    after = patient_views(s, pids)
    changed = [pid for pid in pids if after[pid][0] != before[pid][0]]
    eq(len(changed), 12, "patients with a new version after the compaction")
    for pid in changed:
        eq(after[pid][0][:len(before[pid][0]) - 1], before[pid][0][:-1], "the history before the new version")
        eq((after[pid][2].get("blood_type"), after[pid][3]), ("AB+", 2), "the public copy of a new version")
    s.stop()


@test(timeout=90)
def test_serve_without_schema_never_replaces_the_stores_schema():
    """A restart that forgot --schema is refused, naming it and the store's version: without it serve took the
    default schema as a change and re-projected every public copy under the default allow-list, publishing
    favorite_color, which this store's schema keeps private. With the same --schema it starts as before."""
    s = H.Server(name="schema-forgot")
    narrow = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type",
              "event_time": "ts", "public": {"type": "copy", "ts": "year"}}
    s.extra_args = ["--schema", write_schema(s, "narrow.json", narrow)]
    s.start()
    s.ingest_ok([rec(i) for i in range(6)])
    before = sorted((r["record_id"], json.dumps(r["fields"], sort_keys=True))
                    for r in s.get_json("/v1/public/records")["records"])
    check(before and all("favorite_color" not in f for _, f in before), "the narrow schema's copies: %s" % before[:2])
    s.stop()
    out = subprocess.run([H.BIN, "serve", "--data", s.data_dir, "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30)
    eq(out.returncode, 1, "serve without --schema on a store of another schema: %s" % short(out.stderr))
    check("--schema" in out.stderr and "version 1" in out.stderr,
          "the refusal names --schema and the store's version: %s" % short(out.stderr))
    check("Schema Person" not in out.stderr, "no PHI in the refusal")
    s.start()
    eq(health(s)["schema"], {"version": 1, "reprojecting": None}, "the store's schema is unchanged")
    after = sorted((r["record_id"], json.dumps(r["fields"], sort_keys=True))
                   for r in s.get_json("/v1/public/records")["records"])
    eq(after, before, "the public copies under the operator's schema")
    s.stop()


if __name__ == "__main__":
    H.main()

# End-to-end tests of `medstream export` and POST /v1/exports (src/export/): records ingested over HTTP,
# exported offline (--data, the server stopped), through a running server (--url) and with POST
# /v1/exports + the signed download link, at an as_of while more records are ingested. Checked: every
# row equals what the API answers at the same instant (records and patients; NDJSON and CSV read here,
# Parquet with pyarrow from build/venv when the writer is built), the Hive layout (type=/date= for PHI,
# type=/year= for public), manifest rows/bytes/sha256 against the files, no public field outside the
# allow-list (random field names), PHI refused without patients:read and audited with the patient ids,
# a non-empty output directory refused without --overwrite, SIGINT mid-export leaves nothing visible,
# the download link works before it expires and is refused after (and with a bad signature); downloads
# without a valid link are audited per address and window, not an entry each; a typed field named like a
# partition level (year, type) stays in fields, so DuckDB and pyarrow read the export and the lake as Hive tables.
#
# Run: MEDSTREAM_BIN=$PWD/build/san/medstream /usr/bin/python3 tests/e2e/test_export.py [NAME_SUBSTRING...]

import csv
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import tarfile
import threading
import time

import harness as H
from harness import check, eq, fail, short, test

RESERVED = ("record_id", "type", "ts")


def tmpdir(tag):
    d = H.tempfile.mkdtemp(prefix="medstream-export-%s-" % tag)
    H._temp_dirs.append(d)
    return d


def run_export(args, timeout=180):
    try:
        r = subprocess.run([H.BIN, "export"] + args, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        fail("`medstream export %s` did not end within %ds" % (" ".join(args), timeout))
    return r.returncode, r.stdout, r.stderr


def export_ok(args):
    rc, out, err = run_export(args)
    if rc != 0:
        fail("medstream export %s: exit %d: %s %s" % (" ".join(args), rc, short(out), short(err, 800)))
    return out


def records(n, tag, seed=1):
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        k = i % 7
        rows.append({"record_id": "%s-%04d" % (tag, i), "name": "Pat %s %d" % (tag, k),
                     "dob": "19%02d-0%d-1%d" % (50 + k, 1 + k % 9, k % 10),
                     "type": ["lab", "visit", "note/x"][i % 3],
                     "ts": "20%02d-%02d-%02dT%02d:00:00Z" % (24 + i % 3, 1 + i % 12, 1 + i % 28, i % 24),
                     "favorite_color": rnd.choice(["red", "blue"]), "value": rnd.randint(0, 1000),
                     "nested": {"a": [i, "x"]}})
    return rows


def new_server(extra=()):
    s = H.Server(extra_args=list(extra), name="export")
    s.start()
    s.login()
    return s


def read_export(out):
    """{'records': [(partition dict, row)], 'patients': [row], 'manifest': m}; checks the manifest's files."""
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    listed = set()
    for fe in m["files"]:
        p = os.path.join(out, fe["path"])
        data = open(p, "rb").read()
        eq(len(data), fe["bytes"], "bytes of %s" % fe["path"])
        eq(hashlib.sha256(data).hexdigest(), fe["sha256"], "sha256 of %s" % fe["path"])
        listed.add(fe["path"])
    on_disk = set()
    for root, dirs, files in os.walk(out):
        for fn in files:
            rel = os.path.relpath(os.path.join(root, fn), out)
            if rel != "manifest.json":
                on_disk.add(rel)
    eq(on_disk, listed, "files on disk vs the manifest")
    res = {"records": [], "patients": [], "manifest": m}
    for fe in m["files"]:
        parts = fe["path"].split("/")
        rows = read_rows(os.path.join(out, fe["path"]), m["format"], m)
        eq(len(rows), fe["rows"], "rows of %s" % fe["path"])
        if parts[0] == "records":
            part = dict(p.split("=", 1) for p in parts[1:-1])
            res["records"] += [(part, r) for r in rows]
        else:
            res["patients"] += rows
    eq(len(res["records"]), m["rows"]["records"], "record rows in the manifest")
    eq(len(res["patients"]), m["rows"]["patients"], "patient rows in the manifest")
    return res


def read_rows(path, fmt, m):
    if fmt == "ndjson":
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    if fmt == "csv":
        kind = "patients" if "/patients/" in path or path.split(os.sep)[-2] == "patients" else "records"
        types = {c["name"]: c["type"] for c in m["columns"][kind]}
        out = []
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                row = {}
                for k, v in r.items():
                    t = types[k]
                    row[k] = (None if v == "" and t not in ("STRING",) else json.loads(v) if t == "JSON"
                              else int(v) if t == "INT64" else float(v) if t == "DOUBLE"
                              else (v == "true") if t == "BOOLEAN" else v)
                out.append(row)
        return out
    return read_parquet(path)


def venv_python():
    try:
        return H.venv_python(["pyarrow", "duckdb"], ["pyarrow", "duckdb"])
    except RuntimeError as e:
        raise H.Skip(str(e))


def read_parquet(path):
    py = venv_python()
    code = ("import sys,json,pyarrow.parquet as pq,duckdb\n"
            "t=pq.read_table(sys.argv[1]).to_pylist()\n"
            "d=duckdb.sql(\"select count(*) from read_parquet('%s')\" % sys.argv[1]).fetchall()[0][0]\n"
            "assert d==len(t),(d,len(t))\n"
            "def c(v):\n"
            "  import datetime\n"
            "  if isinstance(v,datetime.datetime): return v.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')\n"
            "  return v\n"
            "print(json.dumps([{k:c(v) for k,v in r.items()} for r in t]))\n")
    r = subprocess.run([py, "-c", code, path], capture_output=True, text=True)
    if r.returncode != 0:
        fail("pyarrow/duckdb could not read %s: %s" % (path, short(r.stderr, 800)))
    rows = json.loads(r.stdout)
    for row in rows:
        if isinstance(row.get("fields"), str):
            row["fields"] = json.loads(row["fields"])
    return rows


def check_phi_rows(s, res, as_of, expect_ids):
    got = {}
    for part, row in res["records"]:
        got[row["record_id"]] = (part, row)
    eq(sorted(got), sorted(expect_ids), "record ids exported")
    pids = set()
    for rid, (part, row) in got.items():
        api = s.get_json("/v1/records/%s?%s" % (H.urllib.parse.quote(rid, safe=""), H.q({"as_of": as_of})))
        eq(row["patient_id"], api["patient_id"], "%s patient_id" % rid)
        eq(row["version"], api["version"], "%s version" % rid)
        eq(row["recorded_at"], api["valid_from"], "%s recorded_at" % rid)
        eq(row["ts"], api["ts"], "%s ts" % rid)
        eq(H.urllib.parse.unquote(part["type"]), api["type"], "%s type partition" % rid)
        eq(part["date"], api["ts"][:10], "%s date partition" % rid)
        eq(row["fields"], {k: v for k, v in api["fields"].items() if k not in RESERVED}, "%s fields" % rid)
        check("type" not in row, "the partition column type is repeated inside the file")
        pids.add(row["patient_id"])
    eq(sorted(p["patient_id"] for p in res["patients"]), sorted(pids), "patients exported")
    for p in res["patients"]:
        api = s.get_json("/v1/patients/%s?%s" % (p["patient_id"], H.q({"as_of": as_of})))
        eq(p["version"], api["version"], "patient version")
        eq(p["recorded_at"], api["valid_from"], "patient recorded_at")
        eq(p["name"], api["fields"].get("name"), "patient name")
        eq(p["dob"], api["fields"].get("dob"), "patient dob")
        eq(p["fields"], {k: v for k, v in api["fields"].items() if k not in ("name", "dob")}, "patient fields")
    return pids


def live_ids(rows, deleted=()):
    return sorted(set(r["record_id"] for r in rows) - set(deleted))


@test(timeout=240)
def test_offline_phi_ndjson_and_csv_equal_the_api_at_as_of():
    s = new_server()
    first = records(60, "a")
    s.ingest_ok(first)
    upd = dict(first[0], value=-1)  # a new version
    s.ingest_ok([upd])
    eq(s.request("DELETE", "/v1/records/a-0001").status, 200, "delete a record")
    as_of = H.now_rfc3339()
    time.sleep(0.01)
    s.ingest_ok(records(30, "b"))        # after the instant: not in the export
    s.ingest_ok([dict(first[2], value=-2)])
    s.stop()
    for fmt in ("ndjson", "csv"):
        out = os.path.join(tmpdir(fmt), "out")
        text = export_ok(["--data", s.data_dir, "--out", out, "--format", fmt, "--scope", "phi", "--as-of", as_of])
        check("records" in text and "patients" in text, "no summary: %s" % short(text))
        res = read_export(out)
        eq(res["manifest"]["scope"], "phi", "manifest scope")
        eq(res["manifest"]["as_of"], H.parse_time(as_of).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "manifest as_of")
        check(not os.path.exists(os.path.join(out, ".medstream-export-tmp")), "the temporary directory stayed")
        s.start()
        s.login()
        pids = check_phi_rows(s, res, as_of, live_ids(first, ["a-0001"]))
        # audited: an entry by the OS user naming every patient
        audit = s.audit_entries()
        mine = [a for a in audit if a["user"].startswith("local:") and a["resource"].startswith("export ")]
        check(mine, "no audit entry of the offline export")
        named = set()
        for a in mine:
            named |= set(a["patient_ids"])
        check(pids <= named, "the audit entries do not name every exported patient")
        s.stop()


@test(timeout=240)
def test_url_export_at_as_of_while_ingesting():
    s = new_server()
    rows = records(90, "u")
    s.ingest_ok(rows)
    as_of = H.now_rfc3339()
    time.sleep(0.01)
    stop = threading.Event()

    def more():
        i = 0
        while not stop.is_set():
            s.ingest_ok(records(20, "late%d" % i, seed=i))
            s.ingest_ok([dict(rows[5], value=1000 + i)])
            i += 1

    t = threading.Thread(target=more)
    t.start()
    try:
        out = os.path.join(tmpdir("url"), "out")
        export_ok(["--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--out", out, "--format", "ndjson",
                   "--scope", "phi", "--as-of", as_of])
    finally:
        stop.set()
        t.join()
    res = read_export(out)
    check_phi_rows(s, res, as_of, live_ids(rows))
    # the server's audit entries of the export name every patient
    eid = res["manifest"]["export_id"]
    audit = s.audit_entries()
    named = set()
    for a in audit:
        if a["resource"] == "/v1/exports/%s" % eid and a["action"] == "patients:read":
            named |= set(a["patient_ids"])
    eq(named, set(p["patient_id"] for p in res["patients"]), "patients in the export's audit entries")
    s.stop()


def post_export(s, body, token=None, expect=202):
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = "Bearer " + token
    r = s.request("POST", "/v1/exports", body=json.dumps(body), headers=h)
    if r.status != expect:
        fail("POST /v1/exports: expected %d, got %d: %s" % (expect, r.status, short(r.text)))
    return r.json()


def wait_done(s, eid, token=None, timeout=60):
    h = {"Authorization": "Bearer " + token} if token else None
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = s.request("GET", "/v1/exports/" + eid, headers=h).json()
        if st["state"] in ("done", "failed"):
            return st
        time.sleep(0.1)
    fail("export %s not done within %ds" % (eid, timeout))


@test(timeout=240)
def test_public_export_allow_list_and_link():
    s = new_server(["--export-link-ttl", "2"])
    rnd = random.Random(7)
    rows = records(40, "p")
    secrets = []
    for r in rows:  # random extra field names: none may leave the PHI store
        for _ in range(rnd.randint(1, 4)):
            k = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randint(1, 12)))
            if k in ("name", "dob", "type", "ts", "record_id", "favorite_color", "parent_id"):
                continue
            v = "SECRET%d" % rnd.randint(0, 10 ** 9)
            r[k] = v
            secrets.append(v)
    s.ingest_ok(rows)
    snap = s.request("POST", "/v1/snapshots").json()["snapshot_id"]
    s.ingest_ok(records(10, "q"))
    st = post_export(s, {"scope": "public", "format": "ndjson", "as_of": snap})
    done = wait_done(s, st["export_id"])
    eq(done["state"], "done", "state: %s" % done.get("error"))
    link = done["download"]
    r = H.http_request(s.port, "GET", link)  # no token
    eq(r.status, 200, "download before expiry: %s" % short(r.text))
    d = os.path.join(tmpdir("pub"), "out")
    os.makedirs(d)
    with tarfile.open(fileobj=io.BytesIO(r.body)) as tf:
        tf.extractall(d)
    res = read_export(d)
    eq(res["manifest"].get("schema_version"), 1, "the public copies' schema version in the manifest")
    blob = json.dumps(res)
    for v in secrets:
        check(v not in blob, "a field outside the allow-list is in the public export")
    check("Pat p" not in blob and "1950-01-10" not in blob, "identity values in the public export")
    api = {x["record_id"]: x for x in s.get_all("/v1/public/records", "records", as_of=snap)}
    eq(sorted(row["record_id"] for _, row in res["records"]), sorted(api), "public records")
    for part, row in res["records"]:
        a = api[row["record_id"]]
        eq(set(row), {"patient_id", "record_id", "version", "fields"}, "public columns")
        eq(row["patient_id"], a["patient_id"], "public patient_id")
        eq(row["fields"], {k: v for k, v in a["fields"].items() if k not in ("type", "ts")}, "public fields")
        eq(set(part), {"type", "year"}, "public partition keys")
        eq(H.urllib.parse.unquote(part["type"]), a["fields"]["type"], "public type partition")
        eq(part["year"], a["fields"]["ts"], "public year partition")
        check(set(row["fields"]) <= {"favorite_color"}, "public fields outside the allow-list")
    for p in res["patients"]:
        eq(p["fields"], s.get_json("/v1/public/patients/%s?as_of=%s" % (p["patient_id"], snap))["fields"],
           "public patient")
    # a bad signature, then an expired link
    bad = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    eq(H.http_request(s.port, "GET", bad).status, 403, "a tampered link")
    time.sleep(3.2)
    r = H.http_request(s.port, "GET", link)
    eq(r.status, 403, "an expired link")
    check("expired" in r.text, "the refusal says expired: %s" % short(r.text))
    s.stop()


@test(timeout=120)
def test_download_attempts_without_a_valid_link_are_audited_per_address_and_window():
    """The download route needs no token, so a request without a valid link costs its sender nothing: each
    was an audit entry, and anyone could grow the audit log at will. They are audited as refusals without
    a known user are: the window's first as it is, the rest in its summary."""
    s = new_server()
    s.ingest_ok(records(5, "dl"))
    done = wait_done(s, post_export(s, {"scope": "public", "format": "ndjson"})["export_id"])
    eq(H.http_request(s.port, "GET", done["download"]).status, 200, "download")
    for i in range(30):
        path = (done["download"][:-4] + "%04d" % i) if i % 2 else "/v1/exports/x%d/download?exp=1&sig=%s" % (i, "0" * 64)
        eq(H.http_request(s.port, "GET", path).status, 403, "a download without a valid link")
    entries = [a for a in s.audit_entries() if a["action"] == "exports:download"]
    eq([(a["user"], a["outcome"]) for a in entries], [("admin", "ok"), ("", "denied")],
       "the download, then the window's first refusal only")
    eq(s.stop(), 0, "clean stop")
    s.start()
    summary = [a for a in s.audit_entries() if a["action"] == "auth:refused"]
    eq(len(summary), 1, "the window's summary: %s" % summary)
    check(summary[0]["reason"].startswith("29 more requests"), "it counts the rest: %s" % summary[0]["reason"])
    s.stop()


@test(timeout=120)
def test_phi_needs_patients_read_and_is_audited():
    s = new_server()
    s.ingest_ok(records(10, "r"))
    r = s.request("POST", "/v1/users", body=json.dumps({"user": "ana", "password": "analyst-pass-123",
                                                          "role": "analyst"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "create analyst: %s" % short(r.text))
    tok = s.token_for("ana", "analyst-pass-123")
    r = post_export(s, {"scope": "phi", "format": "ndjson"}, token=tok, expect=403)
    check("patients:read" in r["error"], "the refusal names the permission: %s" % r)
    audit = s.get_json("/v1/audit?user=ana")["entries"]
    check(any(a["outcome"] == "denied" for a in audit), "the refusal is not audited")
    st = post_export(s, {"scope": "public", "format": "csv"}, token=tok)
    done = wait_done(s, st["export_id"], token=tok)
    eq(done["state"], "done", "analyst public export: %s" % done.get("error"))
    check(done["download"], "no link for the analyst's public export")
    check(done["manifest"], "no manifest for the analyst's public export")
    # an admin's PHI export: the analyst may see its progress, never its link nor its manifest (its files
    # by event day: dates finer than the year public data carries)
    st = post_export(s, {"scope": "phi", "format": "ndjson"})
    done = wait_done(s, st["export_id"])
    eq(done["state"], "done", "phi export: %s" % done.get("error"))
    seen = s.request("GET", "/v1/exports/" + st["export_id"], headers={"Authorization": "Bearer " + tok}).json()
    eq(seen["download"], None, "a PHI export's link handed to a role without patients:read")
    eq(seen["manifest"], None, "a PHI export's manifest handed to a role without patients:read")
    check(s.get_json("/v1/exports/" + st["export_id"])["manifest"], "the admin sees the PHI export's manifest")
    pid = s.audit_entries()
    named = [a for a in pid if a["resource"] == "/v1/exports/" + st["export_id"] and a["patient_ids"]]
    check(named, "the PHI export is not audited with its patient ids")
    # its download names the export (whose entries name the patients), not just the route
    eq(H.http_request(s.port, "GET", done["download"]).status, 200, "the PHI export's download")
    got = [(a["user"], a["resource"], a["outcome"]) for a in s.audit_entries(action="exports:download")]
    eq(got, [("admin", "/v1/exports/%s/download" % st["export_id"], "ok")], "the download's audit entry")
    s.stop()


@test(timeout=120)
def test_a_download_link_dies_with_its_owners_access():
    """A download link worked for its whole life (300 s) after its owner was disabled, or demoted to a role that
    may not make the export: someone whose access was taken away could still take a PHI export away. The link
    works only while its owner's account is enabled and may still make the export; a refusal is audited."""
    s = new_server()
    s.ingest_ok(records(5, "own"))
    r = s.request("POST", "/v1/users", body=json.dumps({"user": "cleo", "password": "clinician-pass-1",
                                                          "role": "admin"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "create user: %s" % short(r.text))
    tok = s.token_for("cleo", "clinician-pass-1")
    phi = wait_done(s, post_export(s, {"scope": "phi", "format": "ndjson"}, token=tok)["export_id"], token=tok)
    pub = wait_done(s, post_export(s, {"scope": "public", "format": "ndjson"}, token=tok)["export_id"], token=tok)
    eq(H.http_request(s.port, "GET", phi["download"]).status, 200, "the PHI link while its owner may")
    patch = lambda body: s.request("PATCH", "/v1/users/cleo", body=json.dumps(body),
                                   headers={"Content-Type": "application/json"})
    eq(patch({"role": "analyst"}).status, 200, "demote to analyst (no patients:read)")
    r = H.http_request(s.port, "GET", phi["download"])
    eq(r.status, 403, "the PHI link after its owner lost patients:read")
    check("patients:read" in r.text, "the refusal says why: %s" % short(r.text))
    eq(H.http_request(s.port, "GET", pub["download"]).status, 200, "the public link: an analyst may make it")
    eq(patch({"disabled": True}).status, 200, "disable")
    r = H.http_request(s.port, "GET", pub["download"])
    eq(r.status, 403, "the public link after its owner was disabled")
    check("disabled or deleted" in r.text, "the refusal says why: %s" % short(r.text))
    got = [(a["user"], a["outcome"]) for a in s.audit_entries(action="exports:download")]
    eq(got, [("cleo", "ok"), ("cleo", "denied"), ("cleo", "ok"), ("cleo", "denied")], "each download audited")
    s.stop()


@test(timeout=120)
def test_out_dir_not_empty_is_refused_unless_overwrite():
    s = new_server()
    s.ingest_ok(records(5, "o"))
    s.stop()
    out = tmpdir("full")
    with open(os.path.join(out, "keep.txt"), "w") as f:
        f.write("mine")
    rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", "ndjson"])
    eq(rc, 1, "exit code for a non-empty --out")
    check("not empty" in se and "--overwrite" in se, "message: %s" % short(se))
    eq(os.listdir(out), ["keep.txt"], "the directory was touched")
    export_ok(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--overwrite"])
    check(not os.path.exists(os.path.join(out, "keep.txt")), "--overwrite kept the old entry")
    read_export(out)
    rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--scope", "public",
                             "--as-of", "2026-01-01T00:00:00Z"])
    eq(rc, 2, "a public export at a time is a usage error")


@test(timeout=300)
def test_sigint_mid_export_leaves_nothing_visible():
    s = new_server()
    pad = "z" * 20000
    for b in range(10):
        s.ingest_ok([dict(r, pad=pad) for r in records(300, "big%d" % b, seed=b)])
    s.stop()
    out = os.path.join(tmpdir("cancel"), "out")
    p = subprocess.Popen([H.BIN, "export", "--data", s.data_dir, "--out", out, "--format", "csv", "--scope", "phi",
                          "--chunk-records", "50"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = os.path.join(out, ".medstream-export-tmp")
    t0 = time.time()
    while not os.path.exists(os.path.join(tmp, ".spool")) and time.time() - t0 < 60 and p.poll() is None:
        time.sleep(0.002)
    time.sleep(0.05)
    check(p.poll() is None, "the export ended before it could be interrupted (store too small?)")
    p.send_signal(signal.SIGINT)
    so, se = p.communicate(timeout=60)
    eq(p.returncode, 1, "exit code after SIGINT (%s)" % short(se))
    check("interrupted" in se, "message: %s" % short(se))
    check(not os.path.exists(out) or os.listdir(out) == [], "visible after SIGINT: %s"
          % (os.listdir(out) if os.path.exists(out) else None))


@test(timeout=240)
def test_full_disk_fails_cleanly_and_leaves_nothing_visible():
    """OUT on a 1 MiB tmpfs, an export of ~4 MB: a clean error naming the disk and OUT, exit 1, nothing
    left in OUT (the export made it, so it goes too), offline and over --url (whose download is streamed
    into OUT's file system); once there is room the same export succeeds."""
    if os.geteuid() != 0 or os.environ.get("MEDSTREAM_E2E_NO_MOUNT"):
        raise H.Skip("needs root to mount a small tmpfs")
    s = new_server()
    rows = records(200, "full")
    for r in rows:
        r["notes"] = "n" * 20000
    s.ingest_ok(rows)
    s.stop()
    mnt = tmpdir("full")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]).returncode != 0:
        raise H.Skip("could not mount a tmpfs")
    H.on_exit(lambda: subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL))
    out = os.path.join(mnt, "out")
    for fmt in ("ndjson", "parquet"):
        rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", fmt, "--scope", "phi"] +
                                (["--compression", "none"] if fmt == "parquet" else []))
        eq(rc, 1, "%s export onto a full disk: %s %s" % (fmt, short(so), short(se)))
        check("disk full" in se and out in se, "the error names the full disk and OUT: %s" % short(se))
        check("Pat full" not in se and "nnnn" not in se, "no value in the error: %s" % short(se))
        eq(os.listdir(mnt), [], "nothing left visible after a failed %s export" % fmt)
    # --url: the download streamed into OUT's file system fills it; the same clean error
    s.start()
    s.login()
    rc, so, se = run_export(["--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--out", out, "--format",
                             "ndjson", "--scope", "phi"])
    s.stop()
    eq(rc, 1, "export --url onto a full disk: %s %s" % (short(so), short(se)))
    check("disk full" in se and out in se, "the --url error names the full disk and OUT: %s" % short(se))
    eq(os.listdir(mnt), [], "nothing left visible after a failed export --url")
    subprocess.run(["mount", "-o", "remount,size=64m", "tmpfs", mnt], check=True)
    rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--scope", "phi"])
    eq(rc, 0, "the same export once there is room: %s" % short(se))
    eq(sum(f["rows"] for f in read_export(out)["manifest"]["files"] if f["path"].startswith("records/")), 200,
       "every record once there is room")


@test(timeout=240)
def test_parquet_is_read_by_pyarrow_and_duckdb():
    s = new_server()
    rows = records(50, "pq")
    s.ingest_ok(rows)
    as_of = H.now_rfc3339()
    s.stop()
    out = os.path.join(tmpdir("pq"), "out")
    rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", "parquet", "--scope", "phi",
                             "--as-of", as_of])
    eq(rc, 0, "parquet export: %s" % short(se))
    res = read_export(out)
    check(parquet_codecs(out) == {"SNAPPY"}, "the default compression: %s" % parquet_codecs(out))
    s.start()
    s.login()
    check_phi_rows(s, res, as_of, live_ids(rows))
    s.stop()
    # --compression zstd: the same rows, ZSTD column chunks
    out_z = os.path.join(tmpdir("pqz"), "out")
    rc, so, se = run_export(["--data", s.data_dir, "--out", out_z, "--format", "parquet", "--scope", "phi",
                             "--as-of", as_of, "--compression", "zstd"])
    eq(rc, 0, "zstd export: %s" % short(se))
    eq(parquet_codecs(out_z), {"ZSTD"}, "--compression zstd")
    res_z = read_export(out_z)
    eq((res_z["records"], res_z["patients"]), (res["records"], res["patients"]), "the same rows with zstd")


@test(timeout=240)
def test_long_escaped_type_exports_through_a_pax_header():
    """A record type of 60 '#' (types are 1-64 characters) escapes to 180 bytes: records/type=.../date=...
    fits neither ustar's 100-byte name nor its 155-byte prefix. One such record used to fail every server
    export, PHI and public ("archive: a path of 215 bytes does not fit ustar"). Now a pax extended header
    carries the path: Python's tarfile reads each member under its whole name with the manifest's bytes,
    and `export --url` (the project's own tar reader) publishes it."""
    s = new_server()
    long_type = "#" * 60
    s.ingest_ok([{"record_id": "ok-1", "name": "Ann Paxtest", "dob": "1960-01-01", "type": "lab",
                  "ts": "2025-01-01T00:00:00Z"},
                 {"record_id": "long-1", "name": "Bob Paxtest", "dob": "1961-01-01", "type": long_type,
                  "ts": "2025-01-01T00:00:00Z"}])
    prefix = "records/type=" + "%23" * 60 + "/"
    for scope in ("phi", "public"):
        st = post_export(s, {"scope": scope, "format": "ndjson"})
        done = wait_done(s, st["export_id"])
        eq(done["state"], "done", "%s export with a long type (error: %s)" % (scope, done.get("error")))
        r = H.http_request(s.port, "GET", done["download"])
        eq(r.status, 200, "download: %s" % short(r.text))
        with tarfile.open(fileobj=io.BytesIO(r.body)) as tf:
            members = {m.name: m for m in tf.getmembers()}
            check(all(m.isfile() or m.isdir() for m in members.values()), "a member that is no file: %s"
                  % sorted(members))
            long_files = [n for n, m in members.items() if m.isfile() and n.startswith(prefix)]
            eq(len(long_files), 1, "%s: files under the long partition %s" % (scope, sorted(members)))
            eq(members[long_files[0]].pax_headers.get("path"), long_files[0], "%s: the member's pax path" % scope)
            for fe in done["manifest"]["files"]:
                check(fe["path"] in members, "%s: %s (manifest) is not a member: %s" % (scope, fe["path"],
                                                                                       sorted(members)))
                data = tf.extractfile(members[fe["path"]]).read()
                eq(hashlib.sha256(data).hexdigest(), fe["sha256"], "%s: sha256 of %s" % (scope, fe["path"]))
            text = tf.extractfile(members[long_files[0]]).read().decode()
            check('"long-1"' in text and '"ok-1"' not in text, "%s: the long partition's rows: %s"
                  % (scope, short(text)))
    out = os.path.join(tmpdir("paxurl"), "out")
    export_ok(["--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--out", out, "--format", "ndjson",
               "--scope", "phi"])
    res = read_export(out)
    types = {row["record_id"]: H.urllib.parse.unquote(part["type"]) for part, row in res["records"]}
    eq(types, {"ok-1": "lab", "long-1": long_type}, "record types by partition after export --url")
    s.stop()



@test(timeout=240)
def test_a_typed_field_named_like_a_partition_level_stays_in_fields():
    """A schema that types and publishes a field named `year` (or `type`, or `date`): that name is also a Hive
    partition level (`type=lab/year=2025/`), so a column of that name inside the files made the layout
    unreadable: DuckDB's hive_partitioning answered the partition's 2025 for every row's own year (1999, 2000,
    ...), and pyarrow's hive dataset refused to open it ("Field year has incompatible types: double vs
    int32"). The same files are the lake's. Such a field stays in `fields` now, as a value that does not fit
    its typed column does; a typed field of another name (`date`, in a layout by year) still gets its column."""
    d = tmpdir("partcol")
    sch = os.path.join(d, "schema.json")
    with open(sch, "w") as f:
        json.dump({"identity": {"name": "name", "dob": "dob"}, "type": "kind",
                   "types": {"year": "number", "type": "number", "date": "number"},
                   "public": {"kind": "copy", "ts": "year", "year": "copy", "type": "copy", "date": "copy"}}, f)
    lake = os.path.join(d, "lake")
    s = new_server(["--schema", sch, "--lake", lake, "--lake-roll-seconds", "1"])
    rows = [{"record_id": "yr-%d" % i, "name": "Ann Partcol", "dob": "1970-01-01", "kind": "lab",
             "ts": "2025-01-01T00:00:00Z", "year": 1999 + i, "type": 7 + i, "date": 20 + i}
            for i in range(3)]
    s.ingest_ok(rows)
    snap = s.request("POST", "/v1/snapshots").json()["snapshot_id"]
    api = {x["record_id"]: x["fields"] for x in s.get_all("/v1/public/records", "records", as_of=snap)}
    deadline = time.time() + 30
    while time.time() < deadline and not any(
            fn.endswith(".parquet") for _, _, fns in os.walk(os.path.join(lake, "records")) for fn in fns):
        time.sleep(0.2)
    s.stop()
    out = os.path.join(d, "out")
    export_ok(["--data", s.data_dir, "--out", out, "--format", "parquet", "--scope", "public", "--schema", sch,
               "--as-of", snap])
    py = venv_python()
    code = ("import sys,json,duckdb,pyarrow.dataset as ds\n"
            "out={}\n"
            "for root in sys.argv[1:]:\n"
            "  q=\"select record_id, year, type, fields, date from read_parquet('%s/records/**/*.parquet', \" \\\n"
            "    \"hive_partitioning=true) order by 1\" % root\n"
            "  t=ds.dataset(root+'/records',format='parquet',partitioning='hive').to_table()\n"
            "  out[root]={'duckdb':[list(r) for r in duckdb.sql(q).fetchall()],\n"
            "             'pyarrow':sorted([[r['record_id'],str(r['year']),r['type'],r['fields'],r['date']]\n"
            "                              for r in t.to_pylist()])}\n"
            "print(json.dumps(out))\n")
    r = subprocess.run([py, "-c", code, out, lake], capture_output=True, text=True)
    eq(r.returncode, 0, "DuckDB and pyarrow read the export and the lake as Hive tables: %s" % short(r.stderr, 800))
    got = json.loads(r.stdout)
    for root in (out, lake):
        for reader in ("duckdb", "pyarrow"):
            rows_read = got[root][reader]
            eq([x[0] for x in rows_read], sorted(api), "%s of %s: the records" % (reader, root))
            for rid, year, typ, fields, date in rows_read:
                a = api[rid]
                eq(str(year), a["ts"], "%s of %s: %s's year partition is its event year" % (reader, root, rid))
                eq(typ, a["kind"], "%s of %s: %s's type partition is its kind" % (reader, root, rid))
                fields = json.loads(fields)
                eq({k: fields.get(k) for k in ("year", "type")}, {k: a[k] for k in ("year", "type")},
                   "%s of %s: %s's year and type fields, in fields" % (reader, root, rid))
                eq(date, a["date"], "%s of %s: %s's date column (no partition level of a public layout by year)"
                   % (reader, root, rid))


@test(timeout=120)
def test_offline_export_without_schema_is_refused_on_a_store_of_another_schema():
    """`export --data` without --schema laid out and columned the files by the default schema, whatever schema
    the store's public copies are under (here its type role is `kind`: every public row went to
    type=__HIVE_DEFAULT_PARTITION__). It is refused now, naming --schema; with --schema it exports as before."""
    d = tmpdir("expschema")
    sch = os.path.join(d, "schema.json")
    with open(sch, "w") as f:
        json.dump({"type": "kind", "public": {"kind": "copy", "ts": "year"}}, f)
    s = new_server(["--schema", sch])
    s.ingest_ok([{"record_id": "k-1", "name": "Ann Kind", "dob": "1970-01-01", "kind": "lab",
                  "ts": "2025-01-01T00:00:00Z"}])
    s.stop()
    out = os.path.join(d, "out")
    rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--scope", "public"])
    eq(rc, 1, "exit code without --schema (%s %s)" % (short(so), short(se)))
    check("--schema" in se and "version 1" in se, "the refusal names --schema and the version: %s" % short(se))
    check(not os.path.exists(os.path.join(out, "manifest.json")), "nothing exported")
    export_ok(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--scope", "public", "--schema", sch,
               "--overwrite"])
    res = read_export(out)
    eq([(part, row["record_id"]) for part, row in res["records"]], [({"type": "lab", "year": "2025"}, "k-1")],
       "the layout of the store's schema")


@test(timeout=120)
def test_offline_export_as_of_an_instant_still_to_come_is_refused():
    """`export --data --as-of 2099-...` exported the store as it is now under a manifest saying "as of 2099", an
    instant commits made after the export (once it lets go of the lock) fall before: a read as of it then
    answers otherwise. The server refuses such an as_of (400) and waits for one at most 1 s ahead; the offline
    export now does the same."""
    s = new_server()
    s.ingest_ok(records(5, "fut"))
    s.stop()
    d = tmpdir("future")
    out = os.path.join(d, "out")
    rc, so, se = run_export(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--scope", "phi",
                             "--as-of", "2099-01-01T00:00:00Z"])
    eq(rc, 2, "exit code of --as-of far ahead (%s %s)" % (short(so), short(se)))
    check("ahead" in se and "--as-of" in se, "the refusal says why: %s" % short(se))
    check(not os.path.exists(os.path.join(out, "manifest.json")), "nothing exported")
    soon = (H.datetime.datetime.now(H.datetime.timezone.utc) + H.datetime.timedelta(milliseconds=600))
    soon = soon.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    export_ok(["--data", s.data_dir, "--out", out, "--format", "ndjson", "--scope", "phi", "--as-of", soon])
    res = read_export(out)
    eq(len(res["records"]), 5, "an instant less than a second ahead is waited for")


def peak_rss_mb(args, timeout=300):
    """Runs `medstream ARGS` under /usr/bin/time and answers (exit code, stderr, its peak RSS in MB). Not
    wait4's ru_maxrss nor getrusage(RUSAGE_CHILDREN) from here: Linux keeps a process's high-water RSS
    across exec, so a child forked by this Python (tens of MB after the ingest) would carry Python's peak;
    time is small, and what it forks is measured from there."""
    if not os.access("/usr/bin/time", os.X_OK):
        raise H.Skip("needs /usr/bin/time (GNU time) to measure a child's peak RSS")
    fd, rss_file = H.tempfile.mkstemp(prefix="medstream-export-rss-")
    os.close(fd)
    try:
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file, H.BIN] + args, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        with open(rss_file) as f:
            kb = int(f.read().strip().splitlines()[-1])
    finally:
        os.unlink(rss_file)
    return r.returncode, r.stderr, kb / 1024.0


# The client's bound: its program, a 64 KiB read buffer, a 1 MiB tar chunk and a 1 MiB output buffer, whatever
# the export's size (2026-12-03: 14 MB for 115 MB exported; 37 MB for the sanitizer build, which the suite runs).
URL_EXPORT_RSS_MB = 48


@test(timeout=300)
def test_url_export_streams_the_archive_in_bounded_memory():
    """`medstream export --url` used to read the whole archive into one buffer (the HTTP client allowed 64 GiB)
    and extract it from memory: its peak RSS grew with the export. Now the download streams to an unlinked
    file in OUT/.medstream-export-tmp and is extracted from there a chunk at a time. An export of ~115 MB must
    stay under URL_EXPORT_RSS_MB of peak RSS and leave nothing but the export in OUT."""
    s = new_server()
    for b in range(11):  # 11 x 20 records x 500 KB: ~115 MB of NDJSON
        s.ingest_ok([{"record_id": "big%d-%d" % (b, i), "name": "Mo Rsstest %d" % (i % 9), "dob": "1960-01-01",
                      "type": "note", "ts": "2025-01-0%dT00:00:00Z" % (1 + i % 3),
                      "notes": "%d-%d-" % (b, i) + "x" * 500000} for i in range(20)])
    out = os.path.join(tmpdir("rss"), "out")
    rc, err, peak_mb = peak_rss_mb(["export", "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token,
                                    "--out", out, "--format", "ndjson", "--scope", "phi"])
    eq(rc, 0, "export --url: %s" % short(err))
    size_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs) / 1e6
    print("    export --url: %.0f MB exported, peak RSS %.1f MB" % (size_mb, peak_mb))
    check(size_mb > 100, "the export is too small to tell: %.0f MB" % size_mb)
    check(peak_mb < URL_EXPORT_RSS_MB, "export --url peaked at %.0f MB RSS for an export of %.0f MB (bound %d MB)" %
          (peak_mb, size_mb, URL_EXPORT_RSS_MB))
    eq(sorted(os.listdir(out)), ["manifest.json", "patients", "records"], "what export --url left in OUT")
    res = read_export(out)
    eq(len(res["records"]), 220, "records exported")
    s.stop()


def parquet_codecs(out):
    """The compression codecs of every column chunk of every Parquet file under out, as pyarrow reads them."""
    code = ("import sys,glob,pyarrow.parquet as pq\n"
            "s=set()\n"
            "for f in glob.glob(sys.argv[1]+'/**/*.parquet',recursive=True):\n"
            "  m=pq.ParquetFile(f).metadata\n"
            "  s|={m.row_group(g).column(c).compression for g in range(m.num_row_groups) for c in range(m.num_columns)}\n"
            "print(','.join(sorted(s)))\n")
    r = subprocess.run([venv_python(), "-c", code, out], capture_output=True, text=True)
    if r.returncode != 0:
        fail("pyarrow could not read %s: %s" % (out, short(r.stderr, 800)))
    return set(x for x in r.stdout.strip().split(",") if x)


if __name__ == "__main__":
    H.main()

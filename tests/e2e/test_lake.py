# End-to-end tests of the continuous lake (`serve --lake DIR`, src/sinks/sink_lake.c): records ingested over
# HTTP land as Parquet files of the public copy, laid out as a public export, read here by pyarrow and
# DuckDB (hive_partitioning) from build/venv (test_export.py's helper). Checked:
#   - every public record version exactly once across the lake's files (tombstones in deletions/), values
#     equal to the public API's at snapshots taken between batches; columns equal to a public export's
#     record files (one DuckDB query reads both); no field outside the allow-list (random field names,
#     secret values searched in every byte of the lake); /metrics lag going to 0, /healthz "lake":"ok";
#   - kill -9 of the server while ingesting continuously, several times, then restart: still every
#     version exactly once, every visible file named in the commits log with its bytes and sha256, no
#     temporary file visible to a reader;
#   - the server killed (SIGKILL, by the MEDSTREAM_TEST_LAKE_CRASH hook) at each step of publishing a roll:
#     files synced but unlogged, logged but not renamed, partly renamed: the next start makes it whole;
#   - a crash's leftovers put there by hand (a logged roll whose files were not yet renamed, a torn
#     commits-log line, pending files of an unlogged roll): the next start finishes, cuts and removes;
#   - a lake of another store, or in use, is refused; --lake-scope phi is refused (exit 2);
#   - a full disk under the lake (a small tmpfs; root only, else SKIP): /healthz degraded with the reason,
#     ingest goes on, nothing half-written visible; once space is back the lake catches up, exactly once.
#
# Run: MEDSTREAM_BIN=$PWD/build/san/medstream /usr/bin/python3 tests/e2e/test_lake.py [NAME_SUBSTRING...]

import json
import os
import random
import re
import subprocess
import threading
import time
import urllib.parse

import harness as H
import lake_files as LF
from harness import check, eq, fail, short, test

# test_export.py's venv helper (pyarrow + duckdb in build/venv), without registering its tests here
_registered = len(H._tests)
import test_export as TE  # noqa: E402
del H._tests[_registered:]

ALLOWED = {"favorite_color"}
TYPES = ["lab", "visit", "note/x"]

READER = r'''
import hashlib, json, os, sys
import duckdb, pyarrow.dataset as ds, pyarrow.parquet as pq
lake = sys.argv[1]
problems, listed, entries = [], {}, []
log = os.path.join(lake, "_medstream", "commits")
if os.path.exists(log):
    for line in open(log, encoding="utf-8"):
        if line.endswith("\n"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                pass
for en in entries:
    for f in en["files"]:
        if f["path"] in listed:
            problems.append("listed twice: " + f["path"])
        listed[f["path"]] = f
visible = []
for root, dirs, files in os.walk(lake):
    rel = os.path.relpath(root, lake)
    if rel == "_medstream" or rel.startswith("_medstream" + os.sep):
        continue
    for fn in files:
        visible.append(os.path.relpath(os.path.join(root, fn), lake))
for v in visible:
    if v not in listed:
        problems.append("visible but not in the commits log: " + v)
    if os.path.basename(v).startswith(".") or not v.endswith(".parquet"):
        problems.append("not a part file: " + v)
missing = []
for p, f in listed.items():
    full = os.path.join(lake, p)
    if not os.path.exists(full):
        missing.append(p)
        continue
    data = open(full, "rb").read()
    if len(data) != f["bytes"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
        problems.append("bytes or sha256 differ from the log: " + p)
    elif pq.ParquetFile(full).metadata.num_rows != f["rows"]:
        problems.append("rows differ from the log: " + p)
records, deletions, schema = [], [], None
if any(p.startswith("records/") and p not in missing for p in listed):
    rel = duckdb.sql("select * from read_parquet('%s/records/**/*.parquet', hive_partitioning=true)" % lake)
    cols = rel.columns
    for row in rel.fetchall():
        records.append(dict(zip(cols, row)))
    n = ds.dataset(os.path.join(lake, "records"), format="parquet", partitioning="hive").count_rows()
    if n != len(records):
        problems.append("pyarrow reads %d rows, DuckDB %d" % (n, len(records)))
    first = sorted(p for p in listed if p.startswith("records/") and p not in missing)[0]
    schema = [[f.name, str(f.type)] for f in pq.read_schema(os.path.join(lake, first))]
if any(p.startswith("deletions/") and p not in missing for p in listed):
    rel = duckdb.sql("select patient_id, record_id, version from read_parquet('%s/deletions/*.parquet')" % lake)
    deletions = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
print(json.dumps({"problems": problems, "missing": missing, "records": records, "deletions": deletions,
                  "entries": len(entries), "files": len(listed), "schema": schema,
                  "tmp": sorted(os.listdir(os.path.join(lake, "_medstream", "tmp")))
                  if os.path.isdir(os.path.join(lake, "_medstream", "tmp")) else []}, default=str))
'''


def read_lake(lake, allow_missing=False):
    """The lake as readers see it: {'records': [row...], 'deletions': [...], ...}; fails on any problem."""
    py = TE.venv_python()
    r = subprocess.run([py, "-c", READER, lake], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail("pyarrow/duckdb could not read the lake %s: %s" % (lake, short(r.stderr, 1500)))
    res = json.loads(r.stdout)
    check(not res["problems"], "lake problems: %s" % short(res["problems"], 800))
    if not allow_missing:
        check(not res["missing"], "files named in the commits log are missing: %s" % short(res["missing"]))
    for row in res["records"]:
        if isinstance(row.get("fields"), str):
            row["fields"] = json.loads(row["fields"])
    return res


def lake_dir(tag):
    d = H.tempfile.mkdtemp(prefix="medstream-lake-%s-" % tag)
    H._temp_dirs.append(d)
    return os.path.join(d, "lake")


def new_server(lake, extra=(), name="lake"):
    s = H.Server(extra_args=["--lake", lake, "--lake-roll-seconds", "1"] + list(extra), name=name)
    s.start()
    return s


def metrics(s):
    r = s.get("/metrics")
    eq(r.status, 200, "GET /metrics")
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^(medstream_lake_[a-z_]+|medstream_commit_position) ([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wait_caught_up(s, timeout=60):
    """Poll /metrics until the lake holds every commit made so far; returns the largest lag (seconds) seen."""
    t0, worst = time.time(), 0.0
    target = metrics(s)["medstream_commit_position"]
    while time.time() - t0 < timeout:
        m = metrics(s)
        check("medstream_lake_lag_seconds" in m, "no lake metrics in /metrics")
        worst = max(worst, m["medstream_lake_lag_seconds"])
        if m["medstream_lake_position"] >= target and m["medstream_lake_lag_commits"] == 0:
            return worst
        time.sleep(0.1)
    fail("the lake did not catch up within %ds: %s; healthz %s" % (timeout, metrics(s), s.get("/healthz").text))


def records(n, tag, rnd, secrets=None):
    rows = []
    for i in range(n):
        k = i % 7
        r = {"record_id": "%s-%04d" % (tag, i), "name": "Lake %s %d" % (tag, k),
             "dob": "19%02d-0%d-1%d" % (50 + k, 1 + k % 9, k % 10), "type": TYPES[i % 3],
             "ts": "20%02d-%02d-%02dT%02d:00:00Z" % (24 + i % 3, 1 + i % 12, 1 + i % 28, i % 24),
             "favorite_color": rnd.choice(["red", "blue", "green"]), "value": rnd.randint(0, 1000)}
        if secrets is not None:  # random field names: none may reach the lake
            for _ in range(rnd.randint(1, 3)):
                key = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randint(1, 12)))
                if key in r or key in ("parent_id",):
                    continue
                v = "SECRET%d" % rnd.randint(0, 10 ** 9)
                r[key] = v
                secrets.append(v)
        rows.append(r)
    return rows


def public_records(s, as_of=None):
    params = {"as_of": as_of} if as_of else {}
    return {x["record_id"]: x for x in s.get_all("/v1/public/records", "records", **params)}


def by_version(res):
    """{(record_id, version): row}, failing on any version seen twice (records or deletions)."""
    seen = {}
    for row in res["records"] + [dict(d, deleted=True) for d in res["deletions"]]:
        key = (row["record_id"], int(row["version"]))
        check(key not in seen, "record %s version %d is in the lake twice" % key)
        seen[key] = row
    return seen


def check_row_equals_api(row, api, what):
    eq(row["patient_id"], api["patient_id"], "%s patient_id" % what)
    eq(row["fields"], {k: v for k, v in api["fields"].items() if k not in ("type", "ts")}, "%s fields" % what)
    eq(urllib.parse.unquote(str(row["type"])), api["fields"]["type"], "%s type partition" % what)
    eq(str(row["year"]), api["fields"]["ts"], "%s year partition" % what)
    check(set(row["fields"]) <= ALLOWED, "%s: a field outside the allow-list: %s" % (what, sorted(row["fields"])))


def lake_files(lake):
    """The lake's data files, relative to it (its _medstream directory left out)."""
    return sorted(os.path.relpath(os.path.join(root, fn), lake) for root, dirs, files in os.walk(lake)
                  for fn in files if not os.path.relpath(root, lake).split(os.sep)[0] == "_medstream")


def logged_files(lake):
    """The paths the lake's commits log names (a roll's files, a rewrite's)."""
    named = set()
    for line in open(os.path.join(lake, "_medstream", "commits"), encoding="utf-8"):
        en = json.loads(line)
        named.update(f["path"] for f in en["files"] + en.get("rewritten", []))
    return named


def lake_bytes(lake):
    blob = b""
    for root, dirs, files in os.walk(lake):
        for fn in files:
            with open(os.path.join(root, fn), "rb") as f:
                blob += f.read()
    return blob


@test(timeout=240)
def test_lake_holds_every_public_version_once_equal_to_the_api():
    lake = lake_dir("api")
    s = new_server(lake)
    rnd = random.Random(12)
    secrets = []
    current = {}  # record_id -> version, as the ingest answers say
    expect = {}   # snapshot -> {record_id: version current there}
    snaps = []

    def ingest(rows):
        for it in s.ingest_ok(rows)["items"]:
            check(it["status"] in ("created", "updated"), "ingest: %s" % it)
            current[it["record_id"]] = it["version"]

    def snapshot():
        sid = s.request("POST", "/v1/snapshots").json()["snapshot_id"]
        expect[sid] = dict(current)
        snaps.append(sid)

    first = records(120, "a", rnd, secrets)
    ingest(first)
    snapshot()
    ingest([dict(r, favorite_color="v2-%d" % i) for i, r in enumerate(first[:40])])  # second versions
    snapshot()
    worst_mid = wait_caught_up(s)
    ingest([dict(r, favorite_color="v3-%d" % i) for i, r in enumerate(first[:10])])  # third versions
    deleted = {}
    for r in first[100:110]:
        d = s.request("DELETE", "/v1/records/%s" % r["record_id"])
        eq(d.status, 200, "delete")
        deleted[r["record_id"]] = d.json()["version"]
        current.pop(r["record_id"])
    snapshot()
    ingest(records(60, "b", rnd, secrets))
    snapshot()
    worst = max(worst_mid, wait_caught_up(s))
    check(worst <= 1.0 + 2.0, "lag reached %.3f s with --lake-roll-seconds 1" % worst)
    h = s.get_json("/healthz")
    eq(h.get("lake"), "ok", "healthz lake: %s" % h)
    m = metrics(s)
    eq(m["medstream_lake_lag_commits"], 0, "lag commits")
    eq(m["medstream_lake_lag_seconds"], 0, "lag seconds")
    check(m["medstream_lake_files_total"] >= 6, "files published: %s" % m)

    res = read_lake(lake)
    seen = by_version(res)
    eq(m["medstream_lake_rows_total"], len(seen), "medstream_lake_rows_total vs the rows read")
    want = set()
    for rid, v in list(current.items()) + [(rid, v - 1) for rid, v in deleted.items()]:
        want |= {(rid, k) for k in range(1, v + 1)}
    want |= {(rid, v) for rid, v in deleted.items()}
    eq(sorted(seen), sorted(want), "(record_id, version) in the lake")
    for rid, v in deleted.items():
        check(seen[(rid, v)].get("deleted"), "the tombstone of %s is not in deletions/" % rid)
    # values: each version equals what the public API answered at a snapshot where it was current
    checked = 0
    for sid in snaps:
        api = public_records(s, sid)
        eq(sorted(api), sorted(expect[sid]), "public records at snapshot %s" % sid)
        for rid, a in api.items():
            check_row_equals_api(seen[(rid, expect[sid][rid])], a, "%s v%d" % (rid, expect[sid][rid]))
            checked += 1
    check(checked > 300, "too few comparisons (%d)" % checked)
    # nothing outside the allow-list anywhere in the lake (files and log)
    blob = lake_bytes(lake)
    for v in secrets:
        check(v.encode() not in blob, "a field outside the allow-list reached the lake")
    check(b"Lake a" not in blob and b"1950-01-10" not in blob, "identity values in the lake")
    # the same columns as a public export's record files: one DuckDB query reads both
    out = os.path.join(TE.tmpdir("lake-export"), "out")
    TE.export_ok(["--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--out", out, "--format", "parquet"])
    py = TE.venv_python()
    code = ("import sys,json,duckdb,pyarrow.parquet as pq,glob\n"
            "e=sorted(glob.glob(sys.argv[1]+'/records/**/*.parquet',recursive=True))[0]\n"
            "print(json.dumps([[f.name,str(f.type)] for f in pq.read_schema(e)]))\n"
            "print(duckdb.sql(\"select count(*) from read_parquet(['%s/records/**/*.parquet','%s/records/**/*.parquet'],"
            " hive_partitioning=true)\" % (sys.argv[1], sys.argv[2])).fetchall()[0][0])\n")
    r = subprocess.run([py, "-c", code, out, lake], capture_output=True, text=True, timeout=120)
    eq(r.returncode, 0, "DuckDB over the export and the lake together: %s" % short(r.stderr, 800))
    export_schema, both = r.stdout.splitlines()
    eq(json.loads(export_schema), res["schema"], "columns of the lake's files vs a public export's")
    eq(int(both), len(current) + len(res["records"]), "rows of the export and the lake read together")
    s.stop()
    eq(read_lake(lake)["tmp"], [], "temporary files left after a clean stop")


def ingest_forever(s, stop, sent, rnd, tag):
    """Send batches (new records and new versions of earlier ones) until stop or the server goes away."""
    hdr = {"Authorization": "Bearer " + s.token, "Content-Type": "application/x-ndjson"}
    port, b = s.port, 0
    while not stop.is_set():
        rows = records(30, "%s-%d" % (tag, b), rnd)
        if sent:
            for old in rnd.sample(sorted(sent), min(10, len(sent))):
                rows.append(dict(sent[old], favorite_color="c%d" % rnd.randint(0, 10 ** 6)))
        for r in rows:
            sent[r["record_id"]] = r
        try:
            H.http_request(port, "POST", "/v1/records", body=H.ndjson(rows), headers=hdr, timeout=10)
        except OSError:
            return
        b += 1


def check_exactly_once_against_store(s, res, sent):
    """Every version the store has of every record sent is in the lake once; the latest equals the API."""
    seen = by_version(res)
    client = H.KeepAliveClient(s.port, headers={"Authorization": "Bearer " + s.token})
    want = set()
    try:
        for rid in sorted(sent):
            r = client.request("GET", "/v1/records/%s" % urllib.parse.quote(rid, safe=""))
            if r.status == 404:
                continue
            eq(r.status, 200, "GET record")
            v = r.json()["version"]
            want |= {(rid, k) for k in range(1, v + 1)}
    finally:
        client.close()
    check(want, "no record was stored")
    extra = sorted(set(seen) - want)
    lost = sorted(set(want) - set(seen))
    check(not extra and not lost, "lake vs store: %d versions not in the store (%s), %d missing (%s)"
          % (len(extra), short(extra, 200), len(lost), short(lost, 200)))
    latest = {}
    for (rid, v) in seen:
        latest[rid] = max(v, latest.get(rid, 0))
    api = public_records(s)
    eq(sorted(api), sorted(latest), "records in the public API vs the lake")
    for rid, a in api.items():
        check_row_equals_api(seen[(rid, latest[rid])], a, rid)
    return len(seen)


@test(timeout=420)
def test_kill9_mid_roll_while_ingesting_then_every_version_exactly_once():
    lake = lake_dir("kill")
    s = new_server(lake)
    rnd = random.Random(99)
    sent = {}
    kills = 0
    for cycle in range(5):
        stop = threading.Event()
        t = threading.Thread(target=ingest_forever, args=(s, stop, sent, rnd, "k%d" % cycle))
        t.start()
        time.sleep(rnd.uniform(0.8, 2.6))  # rolls every second: a kill lands anywhere in one
        s.kill9()
        kills += 1
        stop.set()
        t.join(timeout=20)
        check(not t.is_alive(), "the ingest thread hung")
        # while down: every visible file is whole and named in the log (a logged roll may lack its renames)
        read_lake(lake, allow_missing=True)
        s.start()
        res = read_lake(lake)  # the start recovered: every logged file in place
        check(all(n.endswith(".pending") or n.endswith(".tmp") for n in res["tmp"]), "tmp holds %s" % res["tmp"])
    wait_caught_up(s, timeout=90)
    n = check_exactly_once_against_store(s, read_lake(lake), sent)
    check(n > 500, "too few versions for the test to mean much (%d)" % n)
    eq(kills, 5, "kills")
    s.stop()


@test(timeout=240)
def test_start_finishes_a_logged_roll_cuts_a_torn_line_and_removes_leftovers():
    lake = lake_dir("recover")
    s = new_server(lake)
    rnd = random.Random(5)
    rows = records(90, "r", rnd)
    s.ingest_ok(rows)
    wait_caught_up(s)
    s.ingest_ok([dict(r, favorite_color="again") for r in rows[:30]])
    wait_caught_up(s)
    s.stop()
    meta = os.path.join(lake, "_medstream")
    log = os.path.join(meta, "commits")
    lines = open(log).read().splitlines(True)
    check(len(lines) >= 2, "rolls logged: %d" % len(lines))
    last = json.loads(lines[-1])
    # a crash after the log line and before the renames: the last roll's files back to pending
    for f in last["files"]:
        os.rename(os.path.join(lake, f["path"]), os.path.join(meta, "tmp", os.path.basename(f["path"]) + ".pending"))
    # a crash mid-append of a later roll: a torn line, its pending file, and out_file's partial file
    with open(log, "a") as f:
        f.write('{"from":%d,"to":%d,"commit_time_us":1,"rows":3,"files":[{"path":"records/ty' % (last["to"] + 1,
                                                                                                  last["to"] + 2))
    for junk in ("part-%020d-00000.parquet.pending" % (last["to"] + 1),
                 ".part-%020d-00001.parquet.pending.tmp" % (last["to"] + 1)):
        with open(os.path.join(meta, "tmp", junk), "wb") as f:
            f.write(b"PAR1 half a file")
    before = read_lake(lake, allow_missing=True)
    check(before["missing"], "the setup did not hide the last roll")
    s.start()
    res = read_lake(lake)
    eq(res["tmp"], [], "leftovers in tmp after the start")
    eq(open(log).read(), "".join(lines), "the commits log after cutting the torn line")
    sent = {r["record_id"]: r for r in rows}
    check_exactly_once_against_store(s, res, sent)
    # the lake keeps going after its recovery
    more = records(20, "r2", rnd)
    s.ingest_ok(more)
    wait_caught_up(s)
    sent.update({r["record_id"]: r for r in more})
    check_exactly_once_against_store(s, read_lake(lake), sent)
    # a start reads only the log's last 4 MiB: damage further back (here a 5 MiB line) is never read
    s.stop()
    text = open(log).read()
    with open(log, "w") as f:
        f.write("x" * (5 << 20) + "\n" + text)
    s.start()
    more = records(20, "r3", rnd)
    s.ingest_ok(more)
    wait_caught_up(s)
    sent.update({r["record_id"]: r for r in more})
    with open(log) as f:
        f.seek((5 << 20) + 1)
        eq(f.read(len(text)), text, "the log's lines after the damage")
    check_exactly_once_against_store(s, read_lake(lake), sent)
    # the lake in use by a server: refused; the lake of another store: refused
    other = H.Server(extra_args=["--lake", lake], name="lake-other")
    other.init()
    p = subprocess.run(other.serve_args(H.free_port()), capture_output=True, text=True, timeout=60)
    eq(p.returncode, 1, "serve on a lake in use")
    check("is in use by another medstream" in p.stderr, "message: %s" % short(p.stderr))
    s.stop()
    p = subprocess.run(other.serve_args(H.free_port()), capture_output=True, text=True, timeout=60)
    eq(p.returncode, 1, "serve on another store's lake")
    check("belongs to another store" in p.stderr, "message: %s" % short(p.stderr))


@test(timeout=300)
def test_killed_at_each_step_of_publishing_then_exactly_once():
    """MEDSTREAM_TEST_LAKE_CRASH makes the server SIGKILL itself at one step of publishing its first roll:
    files synced in tmp but no log line; the log line synced but no file renamed; one file renamed."""
    for point in ("files", "log", "rename"):
        lake = lake_dir("crash-" + point)
        os.environ["MEDSTREAM_TEST_LAKE_CRASH"] = point
        try:
            s = new_server(lake, name="lake-crash-" + point)
        finally:
            del os.environ["MEDSTREAM_TEST_LAKE_CRASH"]
        rnd = random.Random(len(point))
        rows = records(90, "c" + point, rnd)
        for i, r in enumerate(rows):  # 3 types x 3 years: 9 files in the roll
            r["ts"] = "20%02d%s" % (24 + (i // 3) % 3, r["ts"][4:])
        s.ingest_ok(rows)
        t0 = time.time()
        while s.alive() and time.time() - t0 < 20:
            time.sleep(0.05)
        check(not s.alive(), "%s: the server did not kill itself at the crash point" % point)
        s.kill9()  # reap it
        meta = os.path.join(lake, "_medstream")
        lines = open(os.path.join(meta, "commits")).read().splitlines()
        down = read_lake(lake, allow_missing=True)  # whatever is visible is whole and logged
        pending = [n for n in down["tmp"] if n.endswith(".parquet.pending")]
        if point == "files":
            eq(lines, [], "%s: the commits log" % point)
            eq(down["files"], 0, "%s: files listed" % point)
            eq(len(pending), 9, "%s: pending files" % point)
        else:
            eq(len(lines), 1, "%s: lines in the commits log" % point)
            eq(len(down["missing"]), 9 if point == "log" else 8, "%s: logged files not in place" % point)
            eq(len(pending), len(down["missing"]), "%s: pending files" % point)
        s.start()
        up = read_lake(lake)
        eq(up["missing"], [], "%s: logged files after the start" % point)
        wait_caught_up(s)
        res = read_lake(lake)
        check_exactly_once_against_store(s, res, {r["record_id"]: r for r in rows})
        eq(len(res["records"]), 90, "%s: rows" % point)
        # the names of a roll written again are the same (its first commit position)
        if point == "files":
            eq(sorted(os.path.basename(p) + ".pending" for p in
                      [f["path"] for line in open(os.path.join(meta, "commits")) for f in json.loads(line)["files"]]),
               sorted(pending), "%s: the rewritten roll's names" % point)
        s.stop()


@test(timeout=60)
def test_phi_scope_is_refused():
    lake = lake_dir("phi")
    s = H.Server(extra_args=["--lake", lake, "--lake-scope", "phi"], name="lake-phi")
    s.init()
    p = subprocess.run(s.serve_args(H.free_port()), capture_output=True, text=True, timeout=60)
    eq(p.returncode, 2, "exit code of --lake-scope phi")
    check("public copy only" in p.stderr and "--scope phi" in p.stderr, "message: %s" % short(p.stderr))
    check(not os.path.exists(lake), "a refused lake made its directory")


@test(timeout=300)
def test_full_disk_under_the_lake_degrades_then_catches_up():
    if os.geteuid() != 0 or os.environ.get("MEDSTREAM_E2E_NO_MOUNT"):
        raise H.Skip("needs root to mount a small tmpfs under the lake")
    base = lake_dir("full")
    os.makedirs(base)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", base], capture_output=True, text=True)
    if r.returncode != 0:
        raise H.Skip("cannot mount a tmpfs: %s" % short(r.stderr))
    H.on_exit(lambda: subprocess.run(["umount", "-l", base], stderr=subprocess.DEVNULL))
    lake = os.path.join(base, "lake")
    s = new_server(lake)
    rnd = random.Random(3)
    sent = {}
    big = lambda: "".join(rnd.choice("0123456789abcdef") for _ in range(3000))  # noqa: E731 incompressible
    degraded = None
    for b in range(40):
        rows = [dict(r, favorite_color=big()) for r in records(25, "f%d" % b, rnd)]
        s.ingest_ok(rows)  # ingest goes on whatever the lake does
        sent.update({r["record_id"]: r for r in rows})
        h = s.get("/healthz")
        if h.status != 200 or h.json().get("lake") == "failing":
            degraded = h.json()
            break
        time.sleep(0.2)
    if degraded is None:
        t0 = time.time()
        while time.time() - t0 < 10 and degraded is None:
            h = s.get("/healthz").json()
            degraded = h if h.get("lake") == "failing" else None
            time.sleep(0.2)
    check(degraded, "the lake never reported a full disk")
    eq(degraded["status"], "degraded", "healthz status")
    check("disk full" in degraded.get("lake_error", ""), "the reason: %s" % degraded)
    res = read_lake(lake)  # nothing half-written visible
    during = records(5, "during", rnd)
    s.ingest_ok(during)
    sent.update({r["record_id"]: r for r in during})
    # space comes back: the lake catches up without a restart
    r = subprocess.run(["mount", "-o", "remount,size=256m", base], capture_output=True, text=True)
    eq(r.returncode, 0, "grow the tmpfs: %s" % r.stderr)
    wait_caught_up(s, timeout=90)
    t0 = time.time()
    while s.get("/healthz").json().get("lake") != "ok" and time.time() - t0 < 10:
        time.sleep(0.2)
    eq(s.get("/healthz").json().get("lake"), "ok", "healthz lake after space came back")
    m = metrics(s)
    check(m["medstream_lake_failures_total"] >= 1, "failures counted: %s" % m)
    res = read_lake(lake)
    check_exactly_once_against_store(s, res, sent)
    s.stop()



# ---- an erasure's rewrite after a schema change moved rows to other partitions ----

S1 = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type", "event_time": "ts",
      "public": {"favorite_color": "copy", "type": "copy", "ts": "year"}}
# S2: the event time published whole: its rows go to date= partitions (and a ts column), not year= ones
S2 = dict(S1, public={"favorite_color": "copy", "type": "copy", "ts": "copy"})
# S3: the event time as its year again (year= partitions), a third version after S1 and S2
S3 = dict(S1, public={"favorite_color": "copy", "type": "copy", "ts": "year", "shoe_size": "copy"})

def read_lake_files(lake, needle):
    """lake_files.read's answer, its rows flattened: {"rows": [{path, patient_id, record_id, version, fields,
    ts ("no column" where the file has none)}], "holding": [files with needle's bytes]}."""
    res = LF.read(TE.venv_python(), lake, needle.encode())
    res["rows"] = [{"path": f["path"], "patient_id": r["patient_id"], "record_id": r["record_id"],
                    "version": r["version"], "fields": r.get("fields"), "ts": r.get("ts", "no column")}
                   for f in res["files"] for r in f["rows"]]
    return res


def schema_file(s, name, sc):
    path = os.path.join(s.base, name)
    with open(path, "w") as f:
        json.dump(sc, f)
    return path


def wait_schema(s, version, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        h = s.get_json("/healthz")
        if h["schema"]["version"] == version and h["schema"]["reprojecting"] is None:
            return
        time.sleep(0.2)
    fail("schema version %d not in force within %ds: %s" % (version, timeout, short(s.get_json("/healthz"))))


def wait_lake_erased(s, pid, timeout=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        cert = s.get_json("/v1/patients/%s/erasure" % pid)
        if any(x["sink"] == "lake" and x["status"] == "done" for x in cert["sinks"]):
            return
        time.sleep(0.2)
    fail("the lake did not finish the erasure within %ds: %s" % (timeout, short(cert, 600)))


def lake_status(s, pid):
    cert = s.get_json("/v1/patients/%s/erasure" % pid)
    return [x["status"] for x in cert["sinks"] if x["sink"] == "lake"]


def check_moved_rows(lake, sent, needle, erased):
    """Every version sent of a patient not erased is in the lake exactly once, in the partition of its type
    and event time (year= or date=), with the values sent; no row of an erased one, no file with needle's
    bytes."""
    res = read_lake_files(lake, needle)
    eq(res["holding"], [], "files holding the erased patient's id in their bytes")
    eq([r for r in res["rows"] if r["patient_id"] in erased], [], "rows of the erased patients")
    got = {}
    for r in res["rows"]:
        got.setdefault((r["record_id"], int(r["version"])), []).append(r)
    eq({k: [r["path"] for r in v] for k, v in got.items() if len(v) > 1}, {}, "versions in more than one row")
    want = {k: v for k, v in sent.items() if v[0] not in erased}
    eq(sorted(set(want) - set(got)), [], "versions of the other patients missing from the lake")
    eq(sorted(set(got) - set(want)), [], "rows the lake should not have")
    for key, (row,) in got.items():
        p, r = want[key]
        what = "%s v%d in %s" % (key[0], key[1], row["path"])
        eq(row["patient_id"], p, "patient of " + what)
        if r is None:
            check(row["path"].startswith("deletions/"), "a tombstone outside deletions/: " + what)
            continue
        m = re.match(r"^records/type=([^/]+)/(year|date)=([^/]+)/part-[0-9]{20}-[0-9]{5}\.parquet$", row["path"])
        check(m, "not a record file of a partition: " + what)
        eq(urllib.parse.unquote(m.group(1)), r["type"], "type partition of " + what)
        eq(m.group(3), r["ts"][:4] if m.group(2) == "year" else r["ts"][:10], "event time partition of " + what)
        eq(json.loads(row["fields"]), {"favorite_color": r["favorite_color"]}, "fields of " + what)


def moved_rows_erasure(tag, when):
    """Patients gone, stay and stays share every file of a roll under S1 (3 types x 3 years); the store is
    re-projected under S2, whose rows belong to date= partitions; gone is erased after the switch ("after"),
    while the re-projection is under way ("during": the lake's rewrite waits for the switch), or after it
    with the server killed once it renamed the first file it wrote again ("crash"). Then every version of
    the others is in the lake exactly once, in the partition of its type and event time (year= or date=),
    with the values sent, and no file holds a row or a byte of gone's; "after" erases stay too (the files
    the first rewrite added are found by the second)."""
    lake = lake_dir(tag)
    s = H.Server(name="lake-" + tag)
    s.extra_args = ["--schema", schema_file(s, "s1.json", S1), "--lake", lake, "--lake-roll-seconds", "1"]
    s.start()
    sent = {}  # (record_id, version) -> (patient_id, the record sent, or None for a tombstone)

    def ingest(rows):
        for it, r in zip(s.ingest_ok(rows)["items"], rows):
            check(it["status"] in ("created", "updated"), "ingest: %s" % short(it))
            sent[(it["record_id"], it["version"])] = (it["patient_id"], r)

    people = ("gone", "stay", "stays")

    def rec(who, i, color):  # 3 types x 3 years under S1; under S2 ~90 dates, more files than a pass opens
        return {"record_id": "%s-%s-%02d" % (tag, who, i), "name": "Moved %s" % who, "dob": "1966-0%d-1%d" % (
            1 + len(who) % 9, len(who) % 10), "type": TYPES[i % 3], "ts": "20%02d-%02d-%02dT08:00:00Z" % (
            24 + (i // 3) % 3, 1 + (i + 4 * people.index(who)) % 12, 1 + i % 28), "favorite_color": color}

    ingest([rec(w, i, "red") for i in range(30) for w in people])  # one roll: every file holds all three
    ingest([rec(w, i, "blue") for i in range(0, 30, 2) for w in people])  # second versions
    wait_caught_up(s)
    d = s.request("DELETE", "/v1/records/%s-stay-05" % tag)
    eq(d.status, 200, "DELETE a record: %s" % short(d.text))
    sent[("%s-stay-05" % tag, d.json()["version"])] = (sent[("%s-stay-05" % tag, 1)][0], None)
    wait_caught_up(s)
    pid = {w: sent[("%s-%s-00" % (tag, w), 1)][0] for w in people}
    check(len(set(pid.values())) == 3, "three patients")
    before = read_lake_files(lake, pid["gone"])
    check(any(r["path"].startswith("records/type=lab/year=2024/") and r["patient_id"] == pid["stay"]
              for r in before["rows"]), "S1's partitions hold the others' rows with gone's")
    s.stop()

    s2 = ["--schema", schema_file(s, "s2.json", S2), "--lake", lake, "--lake-roll-seconds", "1"]
    s.extra_args = s2 + (["--reproject-rate", "20"] if when == "during" else [])
    if when in ("crash", "crash3"):
        os.environ["MEDSTREAM_TEST_LAKE_CRASH"] = "erase" if when == "crash" else "erase_added"
    try:
        s.start()
    finally:
        os.environ.pop("MEDSTREAM_TEST_LAKE_CRASH", None)

    def erase():
        r = s.request("DELETE", "/v1/patients/" + pid["gone"], body=json.dumps({"reason": "moved rows"}),
                      headers={"Content-Type": "application/json"})
        eq(r.status, 200, "DELETE /v1/patients: %s" % short(r.text))

    if when == "during":
        check(s.get_json("/healthz")["schema"]["reprojecting"] is not None, "the re-projection is under way")
        ingest([rec(w, i, "green") for i in range(1, 30, 4) for w in people])  # published during it
        erase()
        time.sleep(2)
        if s.get_json("/healthz")["schema"]["reprojecting"] is not None:
            eq(lake_status(s, pid["gone"]), ["pending"], "the lake's erasure while the re-projection is under way")
        wait_schema(s, 2)
        wait_lake_erased(s, pid["gone"])
    else:
        wait_schema(s, 2)
        ingest([rec(w, i, "green") for i in range(1, 30, 4) for w in people])  # after it: date= partitions
        wait_caught_up(s)
        erase()
        if when in ("crash", "crash3"):
            t0 = time.time()
            while s.alive() and time.time() - t0 < 20:
                time.sleep(0.05)
            check(not s.alive(), "the server did not kill itself once it renamed a rewritten file")
            s.kill9()
            s.extra_args = s2
            if when == "crash3":  # yet another schema: the rewrite is done again under S3's layout, year= again
                added = [p for p in lake_files(lake) if p not in logged_files(lake)]
                check(added and all("/date=" in p for p in added),
                      "the crashed rewrite added files named by no line, to date= partitions: %s" % added)
                s.extra_args = ["--schema", schema_file(s, "s3.json", S3), "--lake", lake, "--lake-roll-seconds", "1"]
            s.start()
            if when == "crash3":
                wait_schema(s, 3)
        wait_lake_erased(s, pid["gone"])
    ingest([rec(w, i, "white") for i in range(3, 30, 5) for w in people if w != "gone"])
    wait_caught_up(s)

    check_moved_rows(lake, sent, pid["gone"], [pid["gone"]])
    if when == "after":  # a second erasure finds the files the first one added to the rolls
        r = s.request("DELETE", "/v1/patients/" + pid["stay"], body=json.dumps({"reason": "moved rows"}),
                      headers={"Content-Type": "application/json"})
        eq(r.status, 200, "DELETE /v1/patients: %s" % short(r.text))
        wait_lake_erased(s, pid["stay"])
        check_moved_rows(lake, sent, pid["stay"], [pid["gone"], pid["stay"]])
    if when == "crash3":
        eq([p for p in lake_files(lake) if p in added], [],
           "files the crashed rewrite added under S2's layout, named by no line, still in the lake")
    if when == "crash":
        lines = [json.loads(x) for x in open(os.path.join(lake, "_medstream", "commits"))]
        check(any(x.get("rewritten") for x in lines), "no commits-log line lists the files written again")
    s.stop()


@test(timeout=300)
def test_erasure_after_a_schema_change_moved_partitions_keeps_every_other_row_once():
    moved_rows_erasure("moved", "after")


@test(timeout=300)
def test_erasure_during_a_reprojection_keeps_every_other_row_once():
    moved_rows_erasure("moving", "during")


@test(timeout=300)
def test_erasure_after_a_schema_change_killed_mid_rewrite_keeps_every_other_row_once():
    moved_rows_erasure("moved-crash", "crash")


@test(timeout=300)
def test_erasure_killed_mid_rewrite_then_another_schema_leaves_no_unnamed_file():
    moved_rows_erasure("moved-crash3", "crash3")


@test(timeout=300)
def test_rows_published_during_a_reprojection_are_laid_out_under_the_version_in_force():
    """While a re-projection from S1 (ts published as its year) to S2 (ts whole: date= partitions, a ts column)
    is under way, public reads answer under S1, and so does the lake: a version published then lands in its
    year= partition without a ts column (before the fix: under S2's layout from S1's copy, a null ts in
    date=__HIVE_DEFAULT_PARTITION__); once S2 is in force, new versions land in date= partitions with their ts.
    No erasure here: nothing rewrites the files in between."""
    lake = lake_dir("inforce")
    s = H.Server(name="lake-inforce")
    s.extra_args = ["--schema", schema_file(s, "s1.json", S1), "--lake", lake, "--lake-roll-seconds", "1"]
    s.start()

    def rec(tag, i):
        return {"record_id": "inforce-%s-%03d" % (tag, i), "name": "In Force %d" % (i % 7), "dob": "1970-01-%02d" % (
            1 + i % 7), "type": TYPES[i % 3], "ts": "20%02d-%02d-%02dT08:00:00Z" % (21 + i % 4, 1 + i % 12, 1 + i % 28),
            "favorite_color": tag}

    sent = {}

    def ingest(rows):
        for it, r in zip(s.ingest_ok(rows)["items"], rows):
            check(it["status"] in ("created", "updated"), "ingest: %s" % short(it))
            sent[it["record_id"]] = r

    ingest([rec("seed", i) for i in range(300)])  # ~300 record and patient versions: ~15 s at 20 a second
    wait_caught_up(s)
    s.stop()
    s.extra_args = ["--schema", schema_file(s, "s2.json", S2), "--lake", lake, "--lake-roll-seconds", "1",
                    "--reproject-rate", "20"]
    s.start()
    check(s.get_json("/healthz")["schema"]["reprojecting"] is not None, "the re-projection is under way")
    ingest([rec("during", i) for i in range(12)])
    wait_caught_up(s)
    check(s.get_json("/healthz")["schema"]["reprojecting"] is not None,
          "the re-projection ended before the lake published what came during it: the test shows nothing")

    def rows_of(tag):
        got = [r for r in read_lake_files(lake, "no such bytes")["rows"] if r["record_id"] in sent and
               sent[r["record_id"]]["favorite_color"] == tag]
        eq(sorted(r["record_id"] for r in got), sorted(k for k, v in sent.items() if v["favorite_color"] == tag),
           "the lake's rows of the versions sent " + tag)
        return got

    for r in rows_of("during"):
        want = sent[r["record_id"]]
        eq([urllib.parse.unquote(x) for x in r["path"].split("/")[1:3]], ["type=" + want["type"], "year=" + want["ts"][:4]],
           "partition of %s, published while S1's copies are in force" % r["record_id"])
        eq(r["ts"], "no column", "ts column of %s under S1 (its year is in the partition only)" % r["record_id"])
    wait_schema(s, 2)
    ingest([rec("after", i) for i in range(12)])
    wait_caught_up(s)
    for r in rows_of("after"):
        want = sent[r["record_id"]]
        eq([urllib.parse.unquote(x) for x in r["path"].split("/")[1:3]], ["type=" + want["type"], "date=" + want["ts"][:10]],
           "partition of %s, published once S2 is in force" % r["record_id"])
        check(str(r["ts"]).startswith(want["ts"][:10]), "ts of %s under S2: %s" % (r["record_id"], r["ts"]))
    rows_of("during")  # and those are where they were
    every = read_lake_files(lake, "no such bytes")["rows"]
    eq([r["path"] for r in every if "__HIVE_DEFAULT_PARTITION__" in r["path"]], [], "rows without a partition")
    s.stop()


if __name__ == "__main__":
    H.main()

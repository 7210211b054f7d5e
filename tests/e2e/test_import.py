# End-to-end tests of `medstream import` (src/import/): files made here, imported offline (--data DIR,
# the server stopped) or into a running server (--url), then read back through the API of a server on
# the directory. Checked: NDJSON and CSV (quoted cells, a multi-line cell, broken rows) with and without
# record ids, good rows stored and bad rows in the reject file (line, byte offset, column, reason, raw
# row; mode 0600; counted by reason on the terminal, never a value); a rerun of a finished import finds
# every row a duplicate, also a file holding several versions of one record; rows without a record id
# keep their ids across runs and two equal rows are two records; kill -9 in the middle of an import and
# a rerun store every row exactly once (offline and over --url), and so does a --url batch sent again after
# its answer was lost; Ctrl-C stops at a batch boundary with
# a checkpoint and a rerun goes on from there; --max-rejects stops (checkpointed) and a rerun goes on;
# --dry-run stores nothing; .gz and .zst inputs; --url gives the store the offline import gives; each
# committed batch is one audit entry naming the importing user and the patients; the lock refuses an
# offline import while serve runs on the directory; a progress bar on a terminal, plain lines otherwise.
#
# Run: /usr/bin/python3 tests/e2e/test_import.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import gzip
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import harness as H
from harness import check, eq, fail, short, test

MARKER = "Quetzalcoatlmarker"  # in every name: must never reach the terminal


def tmpdir(tag):
    d = H.tempfile.mkdtemp(prefix="medstream-import-%s-" % tag)
    H._temp_dirs.append(d)
    return d


def run(args, timeout=120, env=None):
    """BIN import ...: (exit code, stdout, stderr)."""
    try:
        r = subprocess.run([H.BIN, "import"] + args, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        fail("`medstream import %s` did not end within %ds" % (" ".join(args), timeout))
    return r.returncode, r.stdout, r.stderr


def no_phi(text, what):
    check(MARKER.lower() not in text.lower(), "%s shows a row's value: %s" % (what, short(text, 500)))


def counts(out):
    """The summary's counts: {'created': n, 'updated': n, 'duplicate': n, 'rejected': n, 'read': n}."""
    m = re.search(r"created ([\d,]+), updated ([\d,]+), duplicate ([\d,]+), rejected ([\d,]+)", out)
    r = re.search(r"rows read +([\d,]+)", out)
    if not m or not r:
        fail("no summary in: %s" % short(out, 800))
    n = [int(x.replace(",", "")) for x in m.groups()]
    return {"created": n[0], "updated": n[1], "duplicate": n[2], "rejected": n[3],
            "read": int(r.group(1).replace(",", ""))}


def person(i):
    """Row i's identity: one of 40."""
    k = i % 40
    return "%s %d" % (MARKER, k), "19%02d-%02d-%02d" % (50 + k, 1 + k % 12, 1 + k % 28)


def ndjson_rows(n, tag, pad=200, with_ids=True):
    rows = []
    for i in range(n):
        name, dob = person(i)
        r = {"name": name, "dob": dob, "type": "visit", "ts": "2025-03-%02dT10:00:00Z" % (1 + i % 28),
             "seq": i, "notes": ("%s-%d " % (tag, i)) + "x" * pad}
        if with_ids:
            r["record_id"] = "%s-%06d" % (tag, i)
        rows.append(json.dumps(r))
    return rows


def write(path, lines, end="\n"):
    with open(path, "w") as f:
        f.write(end.join(lines) + end)
    return path


def fresh_dir(tag):
    s = H.Server(name=tag)
    s.init()
    return s


def records_of(s, name, dob):
    """The records of the patient with this identity: [(record_id, version, fields)] sorted."""
    r = s.get("/v1/patients?" + H.q({"name": name, "dob": dob}))
    if r.status == 404:
        return []
    eq(r.status, 200, "patient lookup: %s" % short(r.text))
    pid = r.json()["patient_id"]
    return sorted((x["record_id"], x["version"], json.dumps(x["fields"], sort_keys=True))
                  for x in s.get_all("/v1/patients/%s/records" % pid, "records"))


def all_records(s, identities):
    return {ident: records_of(s, *ident) for ident in identities}


def os_user():
    import pwd
    return "local:" + pwd.getpwuid(os.geteuid()).pw_name


# ---- NDJSON, rejects, reruns ----------------------------------------------------------------------

@test(timeout=120)
def test_ndjson_rows_rejects_and_rerun_all_duplicate():
    s = fresh_dir("nd")
    d = tmpdir("nd")
    rows = ndjson_rows(300, "nd")
    name, dob = person(7)
    same = json.dumps({"name": name, "dob": dob, "type": "lab", "ts": "2025-01-01T00:00:00Z", "v": "twin"})
    lines = rows[:100] + ["", "   ", same, same,                          # two equal rows without an id
                          "not json " + MARKER,                             # malformed
                          json.dumps({"record_id": "nd-bad", "name": MARKER + " no dob"}),
                          json.dumps({"record_id": "nd-v", "name": name, "dob": dob, "v": 1}),
                          json.dumps({"record_id": "nd-v", "name": name, "dob": dob, "v": 2})] + rows[100:]
    path = write(os.path.join(d, "rows.ndjson"), lines)
    rc, out, err = run([path, "--data", s.data_dir, "--batch", "37"])
    eq(rc, 0, "exit code (%s %s)" % (short(out), short(err)))
    c = counts(out)
    eq((c["read"], c["created"], c["updated"], c["rejected"]), (306, 303, 1, 2), "first run: %s" % short(out))
    no_phi(out + err, "the summary and progress")
    check("missing identity field" in out and "malformed JSON" in out, "reasons counted: %s" % short(out))
    rej = path + ".rejects.ndjson"
    eq(stat.S_IMODE(os.stat(rej).st_mode), 0o600, "the reject file's mode")
    entries = [json.loads(x) for x in open(rej)]
    eq(len(entries), 2, "reject entries")
    eq(entries[0]["line"], 105, "physical line of the malformed row (blank lines counted)")
    raw = "not json " + MARKER
    eq(entries[0]["raw"], raw, "raw row")
    eq(entries[0]["offset"], open(path, "rb").read().index(raw.encode()), "byte offset of the row")
    eq(entries[1]["column"], "dob", "the column the reason names")
    check("missing identity field" in entries[1]["reason"] and MARKER not in entries[1]["reason"],
          "reason: %s" % entries[1])
    # rerun: every row a duplicate, the reject file the same
    rc, out2, err2 = run([path, "--data", s.data_dir, "--batch", "37"])
    eq(rc, 0, "rerun exit code")
    c2 = counts(out2)
    eq((c2["created"], c2["updated"], c2["duplicate"], c2["rejected"]), (0, 0, 304, 2), "rerun: %s" % short(out2))
    eq([json.loads(x) for x in open(rej)], entries, "the reject file after the rerun")
    s.start()
    recs = records_of(s, name, dob)
    twins = [r for r in recs if '"twin"' in r[2]]
    eq(len(twins), 2, "two equal rows without an id are two records")
    check(all(r[1] == 1 for r in twins) and len({r[0] for r in twins}) == 2, "twins: %s" % twins)
    eq(s.get_json("/v1/records/nd-v")["version"], 2, "the record with two versions in the file")
    eq(s.get_json("/v1/records/nd-000299")["version"], 1, "the last row")
    s.stop()


@test(timeout=120)
def test_csv_rows_rejects_and_columns():
    s = fresh_dir("csv")
    d = tmpdir("csv")
    header = "record_id,Patient Name,dob,type,notes"
    lines = [header]
    for i in range(200):
        name, dob = person(i)
        lines.append('csv-%04d,%s,%s,visit,"notes, with a comma %d"' % (i, name, dob, i))
    name, dob = person(3)
    lines.insert(5, 'csv-multi,%s,%s,visit,"two\nlines"' % (name, dob))    # a quoted line break
    lines.insert(9, "csv-short,%s" % MARKER)                                 # too few cells
    lines.insert(12, "csv-nodob,%s,,visit,x" % MARKER)                       # empty dob: absent
    lines.insert(15, "")                                                     # an empty line: no row
    path = write(os.path.join(d, "rows.csv"), lines, end="\r\n")
    schema = os.path.join(d, "schema.json")
    with open(schema, "w") as f:
        json.dump({"identity": {"name": "name", "dob": "dob"}, "columns": {"Patient Name": "name"}}, f)
    rc, out, err = run([path, "--data", s.data_dir, "--schema", schema, "--batch", "50"])
    eq(rc, 0, "exit code (%s %s)" % (short(out), short(err)))
    c = counts(out)
    eq((c["read"], c["created"], c["rejected"]), (203, 201, 2), "counts: %s" % short(out))
    no_phi(out + err, "the summary")
    entries = [json.loads(x) for x in open(path + ".rejects.ndjson")]
    eq([e["line"] for e in entries], [11, 14], "lines of the rejected rows (header and line break counted)")
    check("cells, the header has 5" in entries[0]["reason"] and entries[0]["raw"] == "csv-short," + MARKER,
          "the short row: %s" % entries[0])
    eq(entries[1]["column"], "dob", "the column of the missing date of birth")
    rc, out2, _ = run([path, "--data", s.data_dir, "--schema", schema, "--batch", "50"])
    eq(counts(out2)["duplicate"], 201, "rerun: every row a duplicate: %s" % short(out2))
    s.extra_args = ["--schema", schema]
    s.start()
    rec = s.get_json("/v1/records/csv-multi")
    eq(rec["fields"]["notes"], "two\nlines", "a quoted line break is kept as it is")
    eq(rec["fields"]["name"], name, "the mapped column")
    s.stop()



@test(timeout=180)
def test_reject_entries_of_two_long_csv_rows_hold_their_own_rows():
    """Two CSV rows longer than the record limit (5 MiB each, a few good rows between): the first one's
    extent spans two of the reader's conversions, the second starts in the conversion where the first ends.
    The reader kept the second one's first bytes in the buffer that still held the first one's, before the
    first was handed out: the first row's reject entry showed the second row's bytes, under the first one's
    line and offset, and the second row's entry had none. Each entry holds its own row's head now."""
    s = fresh_dir("longrows")
    d = tmpdir("longrows")
    big = 5 << 20
    lines = ["record_id,name,dob,type,notes"]
    lines += ["ok-a%d,%s A,1970-01-01,lab,x" % (i, MARKER) for i in range(3)]
    lines.append("big-1,%s B,1970-01-01,lab,%s" % (MARKER, "1" * big))
    lines += ["ok-b%d,%s A,1970-01-01,lab,x" % (i, MARKER) for i in range(3)]
    lines.append("big-2,%s B,1970-01-01,lab,%s" % (MARKER, "2" * big))
    lines += ["ok-c%d,%s A,1970-01-01,lab,x" % (i, MARKER) for i in range(3)]
    path = write(os.path.join(d, "long.csv"), lines)
    rc, out, err = run([path, "--data", s.data_dir, "--progress", "none"])
    eq(rc, 0, "exit code: %s" % short(err))
    eq((counts(out)["created"], counts(out)["rejected"]), (9, 2), "9 good rows stored, 2 rejected: %s" % short(out))
    entries = [json.loads(x) for x in open(path + ".rejects.ndjson")]
    got = [(e["line"], e["offset"], e["raw"][:6], e.get("raw_truncated")) for e in entries]
    off1 = len("\n".join(lines[:4])) + 1
    off2 = len("\n".join(lines[:8])) + 1
    eq(got, [(5, off1, "big-1,", True), (9, off2, "big-2,", True)],
       "each long row's entry: its line, its offset and its own first bytes")
    for e in entries:
        want = lines[e["line"] - 1][:len(e["raw"])]
        check(e["raw"] == want, "line %d's entry holds other bytes than its row's head" % e["line"])

CORPUS_SCHEMA = {"columns": {"Patient Name": "name", "Birth Date": "dob", "Wt (kg)": "weight"},
                 "types": {"weight": "number", "smoker": "boolean"}, "dob_format": "%m/%d/%Y"}


def csv_corpus():
    """A CSV file as hospitals send them, as bytes: a BOM, CR LF and LF mixed, columns in another order
    than the schema's fields and under other names, US dates, typed columns, quoting edge cases, a cell
    over two lines, no final line end; and a bad row of every kind among good rows. Returns (bytes,
    {physical line: reason pattern} of the bad rows, [record ids of the good rows])."""
    m = MARKER
    head = "\ufeffBirth Date,record_id,Wt (kg),Patient Name,note,smoker\r\n"
    rows = [
        ('01/31/1990,cp-001,70.5,"Lee, %s",plain,true\r\n' % m, None),                 # 2: a comma in quotes
        ('1/31/1990,cp-002,,"Lee, %s","a ""quoted"" word",0\n' % m, None),             # 3: "" ; empty: absent
        ('02/01/1980,cp-003,80,Bo %s,"two\r\nlines",false\r\n' % m, None),              # 4-5: a line break
        ('02/01/1980,cp-004,80,Bo %s,short\r\n' % m, r"5 cells, the header has 6"),     # 6: a cell missing
        ('13/45/1980,cp-005,1,Cy %s,x,true\r\n' % m, r"is not a real date|does not match"),  # 7: a bad date
        ('02/01/1980,cp-006,1,,x,true\r\n', r"name"),                                   # 8: no name
        ('02/01/1980,cp-007,1,Dee %s\udcff,x,true\r\n' % m, r"not valid UTF-8"),        # 9: invalid UTF-8
        ('02/01/1980,cp-008,1,"Eve %s never closed,x,true\r\n' % m, r"unterminated quote|text after its closing quote"),  # 10
        ('02/01/1980,cp-009,2,Eve %s,after the span,TRUE\r\n' % m, None),               # 11: not swallowed
        ('02/01/1980,cp-010,"3",Eve %s,   ,1\r\n' % m, None),                           # 12: whitespace kept
    ]
    for i in range(200):                                                                # 13-212
        name, dob = person(i)
        y, mo, d = dob.split("-")
        rows.append(('%s/%s/%s,cp-%03d,%d.5,%s,"visit %d, ok",%s\n' % (mo, d, y, 100 + i, i, name, i,
                                                                    "true" if i % 2 else "false"), None))
    rows.append(('02/01/1980,cp-999,9,Fay %s,last row,true' % m, None))                 # 213: no line end
    text, bad, good, line = head, {}, [], 2
    for row, why in rows:
        if why:
            bad[line] = why
        else:
            good.append(re.search(r",(cp-\d+),", row).group(1))
        text += row
        line += row.count("\n")
    return text.encode("utf-8", "surrogateescape"), bad, good


@test(timeout=180)
def test_csv_corpus_offline_and_over_http_as_text_csv_give_the_same_store():
    d = tmpdir("corpus")
    body, bad, good = csv_corpus()
    path = os.path.join(d, "hospital.csv")
    with open(path, "wb") as f:
        f.write(body)
    schema = os.path.join(d, "schema.json")
    with open(schema, "w") as f:
        json.dump(CORPUS_SCHEMA, f)
    off = fresh_dir("corpus-off")
    rc, out, err = run([path, "--data", off.data_dir, "--schema", schema, "--batch", "7"])
    eq(rc, 0, "exit code (%s %s)" % (short(out), short(err)))
    no_phi(out + err, "the terminal")
    c = counts(out)
    eq((c["created"] + c["updated"], c["rejected"]), (len(good), len(bad)), "counts: %s" % short(out))
    rej = [json.loads(x) for x in open(path + ".rejects.ndjson")]
    eq(stat.S_IMODE(os.stat(path + ".rejects.ndjson").st_mode), 0o600, "the reject file's mode")
    eq([e["line"] for e in rej], sorted(bad), "the reject file's lines")
    offsets = {}
    pos, line = 0, 1
    for ln in body.split(b"\n"):
        offsets[line] = pos
        pos += len(ln) + 1
        line += 1
    for e in rej:
        check(re.search(bad[e["line"]], e["reason"]), "line %d: reason %r !~ %r" % (e["line"], e["reason"], bad[e["line"]]))
        eq(e["offset"], offsets[e["line"]], "line %d's byte offset" % e["line"])
        check(MARKER not in e["reason"], "a reason names no value: %r" % e["reason"])
    by_line = {e["line"]: e for e in rej}
    eq(by_line[9].get("raw_base64") is not None, True, "invalid UTF-8 kept as base64: %s" % by_line[9])
    eq(by_line[10]["column"], "Patient Name", "the unterminated quote's column")
    # the same file POSTed as text/csv to a server with the same schema
    srv = H.Server(extra_args=["--schema", schema], name="corpus-http")
    srv.start()
    r = srv.ingest(body, "text/csv")
    eq(r.status, 200, "POST text/csv: %s" % short(r.text))
    items = r.json()["items"]
    eq(sorted(it["line"] for it in items if it["status"] == "rejected"), sorted(bad), "rejected lines over HTTP")
    eq(sum(it["status"] in ("created", "updated") for it in items), len(good), "stored over HTTP")
    off.extra_args = ["--schema", schema]
    off.start()
    for rid in good:
        a, b = off.get_json("/v1/records/" + rid), srv.get_json("/v1/records/" + rid)
        eq((a["version"], a["fields"]), (b["version"], b["fields"]), "record %s offline and over HTTP" % rid)
    for rid in ("cp-004", "cp-005", "cp-006", "cp-007", "cp-008"):
        eq((off.get("/v1/records/" + rid).status, srv.get("/v1/records/" + rid).status), (404, 404), rid)
    eq(off.get_json("/v1/records/cp-001")["fields"],
       {"record_id": "cp-001", "name": "Lee, " + MARKER, "dob": "1990-01-31", "weight": 70.5, "smoker": True,
        "note": "plain"}, "mapped names, the ISO date, a number and a boolean")
    eq(off.get_json("/v1/records/cp-002")["fields"].get("weight", "absent"), "absent", "an empty cell is absent")
    eq(off.get_json("/v1/records/cp-003")["fields"]["note"], "two\r\nlines", "a line break in quotes")
    eq(off.get_json("/v1/records/cp-010")["fields"]["note"], "   ", "whitespace kept")
    p1 = off.get_json("/v1/patients?" + H.q({"name": "Lee, " + MARKER, "dob": "1990-01-31"}))
    eq(off.get_json("/v1/records/cp-002")["patient_id"], p1["patient_id"], "01/31/1990 and 1/31/1990: one patient")
    eq(off.get_json("/v1/patients/%s/records" % p1["patient_id"])["records"].__len__(), 2, "two records of Lee")
    off.stop()
    srv.stop()


# ---- crashes and stops ------------------------------------------------------------------------------

def big_file(d, n, tag, pad=2500, ids=True):
    return write(os.path.join(d, "%s.ndjson" % tag), ndjson_rows(n, tag, pad=pad, with_ids=ids))


def wait_progress(proc, want_rows, timeout=60):
    """Read --progress=plain lines from proc's stderr until one says at least want_rows rows; the lines."""
    seen, deadline, buf = [], time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], 0.2)
        if not r:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            t = line.decode("utf-8", "replace")
            seen.append(t)
            m = re.search(r"%\s+([\d,]+) rows", t)
            if m and int(m.group(1).replace(",", "")) >= want_rows:
                return seen
    fail("no progress past %d rows (exit %s): %s" % (want_rows, proc.poll(), seen[-5:]))


def start_import(args):
    return subprocess.Popen([H.BIN, "import"] + args + ["--progress", "plain", "--progress-interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def check_exactly_once(s, tag, n):
    """Every row tag-000000..n-1 stored once, version 1; every identity's records listed once each."""
    for i in range(0, n, max(1, n // 150)):
        r = s.get("/v1/records/%s-%06d" % (tag, i))
        eq(r.status, 200, "row %d stored" % i)
        eq(r.json()["version"], 1, "row %d stored once (version)" % i)
    for k in (0, 13, 39):
        recs = [x for x in records_of(s, *person(k)) if re.match(r"%s-\d{6}$" % tag, x[0])]
        eq(len(recs), len({x[0] for x in recs}), "identity %d lists each record once" % k)
        eq(len(recs), len(range(k, n, 40)), "identity %d has all its rows" % k)


@test(timeout=240)
def test_kill9_mid_import_then_rerun_stores_every_row_once():
    s = fresh_dir("kill")
    d = tmpdir("kill")
    n = 40000
    path = big_file(d, n, "kill")
    p = start_import([path, "--data", s.data_dir, "--batch", "5"])  # small commits: seconds, not one
    wait_progress(p, 2000)
    p.kill()                                  # kill -9 in the middle
    p.wait(timeout=10)
    rc, out, err = run([path, "--data", s.data_dir], timeout=200)
    eq(rc, 0, "rerun exit code (%s %s)" % (short(out), short(err)))
    check("resuming at line" in err, "the rerun resumes: %s" % short(err))
    c = counts(out)
    check(0 < c["read"] < n, "the rerun read the rest only: %s" % c)
    eq(c["duplicate"] + c["updated"], 0, "nothing committed is read again: %s" % c)
    s.start()
    check_exactly_once(s, "kill", n)
    s.stop()


@test(timeout=240)
def test_ctrl_c_stops_at_a_batch_boundary_and_rerun_continues():
    s = fresh_dir("sigint")
    d = tmpdir("sigint")
    n = 40000
    path = big_file(d, n, "int")
    p = start_import([path, "--data", s.data_dir, "--batch", "5"])
    wait_progress(p, 2000)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    out, err = out.decode(), err.decode()
    eq(p.returncode, 1, "exit code after Ctrl-C (%s)" % short(out))
    check("interrupted before line" in out, "the summary says where it stopped: %s" % short(out))
    first = counts(out)
    check(0 < first["created"] < n, "part of the file: %s" % first)
    eq(first["created"] % 5, 0, "whole batches: %s" % first)
    rc, out2, err2 = run([path, "--data", s.data_dir], timeout=200)
    eq(rc, 0, "rerun: %s" % short(err2))
    second = counts(out2)
    eq((second["created"], second["duplicate"]), (n - first["created"], 0), "the rerun did the rest: %s" % second)
    s.start()
    check_exactly_once(s, "int", n)
    s.stop()


@test(timeout=240)
def test_url_kill9_mid_import_then_rerun_stores_every_row_once():
    s = H.Server(name="urlkill")
    s.start()
    d = tmpdir("urlkill")
    n = 40000
    rows = ndjson_rows(n, "uk", pad=2500)
    name, dob = person(0)
    # a record with two versions in the file
    rows[1000:1000] = [json.dumps({"record_id": "uk-vv", "name": name, "dob": dob, "v": 1}),
                       json.dumps({"record_id": "uk-vv", "name": name, "dob": dob, "v": 2})]
    path = write(os.path.join(d, "uk.ndjson"), rows)
    args = [path, "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--batch", "10", "--parallel", "3"]
    p = start_import(args)
    wait_progress(p, 2000)
    p.kill()
    p.wait(timeout=10)
    ck = json.load(open(path + ".import-checkpoint"))
    check(ck["replay_until"] >= ck["offset"], "the checkpoint knows what may be stored: %s" % ck)
    rc, out, err = run(args, timeout=200)
    eq(rc, 0, "rerun (%s %s)" % (short(out), short(err)))
    check("resuming at line" in err, "resumed: %s" % short(err))
    eq(counts(out)["updated"], 0, "nothing stored again as a new version: %s" % short(out))
    check_exactly_once(s, "uk", n)
    eq(s.get_json("/v1/records/uk-vv")["version"], 2, "the two versions in the file, once each")
    s.stop()


@test(timeout=120)
def test_url_parallel_keeps_the_file_order_of_a_records_versions():
    """README invariant 3: a record's versions in a file are stored in the file's order. The server commits
    batches in the order they reach it, so --url sends each batch once the one before it is answered
    (to_server.c); before, --parallel batches went out at once and their versions were stored shuffled."""
    s = H.Server(name="urlorder")
    s.start()
    d = tmpdir("urlorder")
    n = 120
    name, dob = person(3)
    rows = [json.dumps({"record_id": "uo-1", "name": name, "dob": dob, "type": "visit", "seq": i, "pad": "x" * 2000})
            for i in range(n)]
    path = write(os.path.join(d, "versions.ndjson"), rows)
    rc, out, err = run([path, "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token,
                        "--batch", "1", "--parallel", "8"])
    eq(rc, 0, "import: %s %s" % (short(out), short(err)))
    eq((counts(out)["created"], counts(out)["updated"]), (1, n - 1), "one record, its versions: %s" % short(out))
    rec = s.get_json("/v1/records/uo-1")
    eq((rec["version"], rec["fields"]["seq"]), (n, n - 1), "the current version is the file's last row")
    hist = s.get_json("/v1/patients/%s/history?limit=1000" % rec["patient_id"])["versions"]  # (pages of 100)
    eq([v["fields"].get("seq") for v in hist], list(range(n)), "the record's versions follow the file's rows")
    s.stop()


class DropFirstAnswer:
    """A TCP proxy in front of a server that closes the client's connection instead of passing on the first
    answer the server sends (the request was handled: for an ingest, committed), then relays everything."""

    def __init__(self, port):
        self.target = port
        self.dropped = 0
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c, True), daemon=True).start()

    def pipe(self, src, dst, answers):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if answers:
                    with self.lock:
                        drop = self.dropped == 0
                        self.dropped += drop
                    if drop:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self):
        self.ls.close()


@test(timeout=120)
def test_url_batch_sent_again_after_a_lost_answer_stores_no_version_twice():
    """A batch whose answer was lost on the way (a connection reset after the server committed it, a proxy's
    502-504) is sent again; it went as a first send, so its rows holding a record's older versions were stored
    again as new versions (three versions became six). It goes again as a replay now: nothing stored twice."""
    s = H.Server(name="urlresend")
    s.start()
    proxy = DropFirstAnswer(s.port)
    d = tmpdir("urlresend")
    name, dob = person(4)
    rows = [json.dumps({"record_id": "rs-1", "name": name, "dob": dob, "type": "visit", "seq": i}) for i in range(3)]
    rows.append(json.dumps({"record_id": "rs-2", "name": name, "dob": dob, "type": "visit", "seq": 9}))
    path = write(os.path.join(d, "versions.ndjson"), rows)
    rc, out, err = run([path, "--url", "http://127.0.0.1:%d" % proxy.port, "--token", s.token, "--batch", "10",
                        "--parallel", "1", "--progress", "none"])
    proxy.close()
    eq(proxy.dropped, 1, "the proxy dropped the first answer")
    eq(rc, 0, "import: %s %s" % (short(out), short(err)))
    rec = s.get_json("/v1/records/rs-1")
    eq((rec["version"], rec["fields"]["seq"]), (3, 2), "rs-1: its three versions, the last one current")
    eq(s.get_json("/v1/records/rs-2")["version"], 1, "rs-2: one version")
    s.stop()


@test(timeout=180)
def test_url_ctrl_c_with_batches_waiting_their_turn_stops_at_a_boundary_and_rerun_continues():
    """--url with --parallel 4: batches checked and waiting for the one before them to be answered are not
    sent on Ctrl-C (nor counted); the rerun sends them and the rest, every row once."""
    s = H.Server(name="urlint")
    s.start()
    d = tmpdir("urlint")
    n = 8000
    path = big_file(d, n, "ui", pad=1500)
    args = [path, "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--batch", "5", "--parallel", "4"]
    p = start_import(args)
    wait_progress(p, 500)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    out, err = out.decode(), err.decode()
    eq(p.returncode, 1, "exit code after Ctrl-C (%s %s)" % (short(out), short(err)))
    check("interrupted before line" in out, "the summary says where it stopped: %s" % short(out))
    first = counts(out)
    check(0 < first["created"] < n, "part of the file: %s" % first)
    eq(first["created"] % 5, 0, "whole batches: %s" % first)
    rc, out2, err2 = run(args, timeout=150)
    eq(rc, 0, "rerun: %s %s" % (short(out2), short(err2)))
    check("resuming at line" in err2, "resumed: %s" % short(err2))
    second = counts(out2)
    eq(second["created"] + first["created"], n, "every row created once: %s then %s" % (first, second))
    eq(second["updated"], 0, "nothing stored again as a new version: %s" % second)
    check_exactly_once(s, "ui", n)
    s.stop()


# ---- blank lines ----------------------------------------------------------------------------------------

def measured(args, timeout=120):
    """BIN import ARGS under scripts/run_measured.py (a small process of its own, so that its child's
    getrusage maxrss is the import's, not this test's): (exit code, stdout, peak resident MiB)."""
    d = tmpdir("measured")
    fig = os.path.join(d, "time.json")
    cmd = [sys.executable, os.path.join(H.REPO_ROOT, "scripts", "run_measured.py"), fig, H.BIN, "import"] + args
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        fail("`medstream import %s` did not end within %ds" % (" ".join(args), timeout))
    return r.returncode, r.stdout, json.load(open(fig))["rss_mib"]


@test(timeout=120)
def test_blank_lines_between_rows_start_a_new_batch_not_a_bigger_body():
    """Blank lines are skipped, but a batch's body keeps each row at its file line, so the blank lines between
    two rows were newlines in the body: 70 Mi of them (a 70 KB .gz) made a body of 70 MiB, a POST over the
    server's --max-body (413, the import stuck at line 1 on every rerun) and ~90 MB held offline. A row that
    far from the one before it now starts the next batch (import.c, GAP_LINES_MAX), with the same record id
    (its line): a rerun one row a batch finds every row a duplicate."""
    d = tmpdir("blank")
    path = os.path.join(d, "blank.ndjson.gz")
    name, dob = person(5)
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write((json.dumps({"name": name, "dob": dob, "type": "lab", "n": 1}) + "\n").encode())
        chunk = b"\n" * (1 << 20)
        for _ in range(70):
            f.write(chunk)
        f.write((json.dumps({"name": name, "dob": dob, "type": "lab", "n": 2}) + "\n").encode())
        f.write((json.dumps({"record_id": "blank-3", "name": name, "dob": dob, "n": 3}) + "\n").encode())
    check(os.path.getsize(path) < 200000, "a small file: %d bytes" % os.path.getsize(path))
    s = H.Server(name="blank")
    s.start()
    url = ["--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--progress", "none"]
    rc, out, err = run([path] + url, timeout=90)
    eq(rc, 0, "--url import (%s %s)" % (short(out, 500), short(err, 500)))
    eq((counts(out)["read"], counts(out)["created"]), (3, 3), "--url: every row stored: %s" % short(out))
    rc, out, err = run([path, "--batch", "1"] + url, timeout=90)
    eq(rc, 0, "--url rerun one row a batch (%s)" % short(err))
    eq((counts(out)["created"], counts(out)["duplicate"]), (0, 3), "--url: the same ids: %s" % short(out))
    eq(len(records_of(s, name, dob)), 3, "--url: three records")
    s.stop()
    off = fresh_dir("blank-off")
    rej = ["--rejects", path + ".off-rejects"]
    rc, out, mib = measured([path, "--data", off.data_dir, "--progress", "none"] + rej)
    eq(rc, 0, "offline import: %s" % short(out))
    eq(counts(out)["created"], 3, "offline: every row stored: %s" % short(out))
    check(mib < 48, "offline: the blank lines are not held in a body (peak RSS %d MiB)" % mib)
    rc, out, err = run([path, "--data", off.data_dir, "--batch", "1", "--progress", "none"] + rej, timeout=90)
    eq(rc, 0, "offline rerun one row a batch")
    eq((counts(out)["created"], counts(out)["duplicate"]), (0, 3), "offline: the same ids: %s" % short(out))


@test(timeout=120)
def test_record_ids_from_lines_do_not_depend_on_how_batches_are_cut():
    """A row without a record_id is named by the file's identity and its line. Rows separated by more blank
    lines than a batch keeps (GAP_LINES_MAX, 4096) land in batches of their own, by fewer in one: either way
    the ids are those of an import one row a batch (each row on its batch's body line 1), offline and over
    --url, so a file imported before the batches were cut at blank lines is all duplicates read again."""
    d = tmpdir("gapids")
    gaps = [0, 4095, 4096, 4097, 5000, 1, 20000, 3]
    nd, cs = [], ["name,dob,type,gap"]
    for i, gap in enumerate(gaps):
        nd += [""] * gap
        cs += [""] * gap
        name, dob = person(i)
        nd.append(json.dumps({"name": name, "dob": dob, "type": "lab", "gap": gap}))
        cs.append("%s,%s,lab,%d" % (name, dob, gap))
    nd[3:3] = ["   ", "\t"]  # whitespace-only lines are blank too
    paths = [write(os.path.join(d, "gaps.ndjson"), nd), write(os.path.join(d, "gaps.csv"), cs)]
    off = fresh_dir("gapids-off")
    srv = H.Server(name="gapids-url")
    srv.start()
    n = len(gaps)
    for f in paths:
        for dest in (["--data", off.data_dir], ["--url", "http://127.0.0.1:%d" % srv.port, "--token", srv.token]):
            rc, out, err = run([f] + dest + ["--batch", "1000"])
            eq(rc, 0, "import %s (%s)" % (os.path.basename(f), short(err)))
            eq(counts(out)["created"], n, "every row stored: %s" % short(out))
            for batch in ("1", "7"):
                rc, out, err = run([f] + dest + ["--batch", batch])
                eq(rc, 0, "rerun --batch %s" % batch)
                eq((counts(out)["created"], counts(out)["duplicate"]), (0, n),
                   "%s %s --batch %s: the same ids: %s" % (os.path.basename(f), dest[0], batch, short(out)))
    srv.stop()


# ---- limits ------------------------------------------------------------------------------------------

@test(timeout=120)
def test_max_rejects_stops_checkpointed_and_rerun_goes_on():
    s = fresh_dir("maxrej")
    d = tmpdir("maxrej")
    rows = ndjson_rows(400, "mr", pad=50)
    for k in range(10):                                   # a bad row every 30 rows
        rows.insert(30 * k + 5, "{\"name\": \"%s\"}" % MARKER)
    path = write(os.path.join(d, "mr.ndjson"), rows)
    rc, out, err = run([path, "--data", s.data_dir, "--batch", "20", "--max-rejects", "3"])
    eq(rc, 1, "exit code past --max-rejects (%s)" % short(out))
    check("more than --max-rejects allows" in out, "says why: %s" % short(out))
    first = counts(out)
    check(first["rejected"] == 4, "stopped in the batch of the 4th bad row: %s" % first)
    check(first["created"] < 400, "did not read the whole file: %s" % first)
    eq(len(open(path + ".rejects.ndjson").read().splitlines()), 4, "rejects written so far")
    rc, out2, err2 = run([path, "--data", s.data_dir, "--batch", "20", "--max-rejects", "none"])
    eq(rc, 0, "rerun without a limit: %s" % short(err2))
    check("resuming at line" in err2, "it resumed: %s" % short(err2))
    second = counts(out2)
    eq((first["created"] + second["created"], second["duplicate"], second["rejected"]), (400, 0, 6),
       "the rest: %s" % second)
    eq(len(open(path + ".rejects.ndjson").read().splitlines()), 10, "every bad row once in the reject file")
    rc, out3, _ = run([path, "--data", s.data_dir, "--max-rejects", "0"])
    eq(rc, 1, "--max-rejects 0 stops at the first rejected row")


@test(timeout=120)
def test_dry_run_stores_nothing():
    s = fresh_dir("dry")
    d = tmpdir("dry")
    rows = ndjson_rows(50, "dry", pad=20) + ["{\"name\": \"%s\"}" % MARKER]
    path = write(os.path.join(d, "dry.ndjson"), rows)
    rc, out, err = run([path, "--dry-run"])
    eq(rc, 0, "dry run exit code (%s)" % short(err))
    check("valid 50, rejected 1; nothing stored" in out, "dry run summary: %s" % short(out))
    eq(len(open(path + ".rejects.ndjson").read().splitlines()), 1, "the dry run writes the reject file")
    rc, out, err = run([path, "--dry-run", "--data", s.data_dir])
    eq(rc, 0, "with --data too: %s" % short(err))
    s.start()
    eq(s.get("/v1/records/dry-000001").status, 404, "nothing stored")
    s.stop()


@test(timeout=120)
def test_gzip_and_zstd_inputs():
    s = fresh_dir("comp")
    d = tmpdir("comp")
    plain = big_file(d, 3000, "gz", pad=300)
    gz = plain + ".gz"
    with open(plain, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    rc, out, err = run([gz, "--data", s.data_dir])
    eq(rc, 0, "gzip import: %s" % short(err))
    check("(ndjson, gzip," in out, "told gzip: %s" % short(out))
    eq(counts(out)["created"], 3000, "gzip rows")
    if not shutil.which("zstd"):
        raise H.Skip("no zstd command to make a .zst file")
    zst = write(os.path.join(d, "zs.ndjson"), ndjson_rows(2000, "zs", pad=300))
    subprocess.run(["zstd", "-q", "-f", zst, "-o", zst + ".zst"], check=True)
    rc, out, err = run([zst + ".zst", "--data", s.data_dir])
    eq(rc, 0, "zstd import: %s" % short(err))
    check("(ndjson, zstd," in out, "told zstd: %s" % short(out))
    eq(counts(out)["created"], 2000, "zstd rows")
    # a truncated gzip stream is an error, not a shorter file
    data = open(gz, "rb").read()
    bad = os.path.join(d, "cut.ndjson.gz")
    open(bad, "wb").write(data[: len(data) // 2])
    rc, out, err = run([bad, "--data", s.data_dir])
    eq(rc, 1, "a truncated gzip file fails")
    check("truncated" in out + err, "says so: %s %s" % (short(out), short(err)))
    s.start()
    eq(s.get_json("/v1/records/zs-001999")["version"], 1, "the last zstd row")
    eq(s.get_json("/v1/records/gz-002999")["version"], 1, "the last gzip row")
    s.stop()


# ---- --url, audit, lock, progress ------------------------------------------------------------------

@test(timeout=180)
def test_url_mode_gives_the_store_the_offline_import_gives():
    d = tmpdir("same")
    rows = ndjson_rows(250, "same", pad=100, with_ids=False)     # ids from file and line
    rows += ndjson_rows(50, "same", pad=100)                      # ids of their own
    name, dob = person(1)
    rows += [json.dumps({"record_id": "same-v", "name": name, "dob": dob, "v": v}) for v in (1, 2, 3)]
    rows.insert(17, "{\"name\": \"%s\"}" % MARKER)
    nd = write(os.path.join(d, "same.ndjson"), rows)
    csv_lines = ["name,dob,type,note"] + ['%s,%s,lab,"csv %d, x"' % (person(i) + (i,)) for i in range(120)]
    csv_lines.insert(30, "%s,not-a-date,lab,x" % MARKER)
    cs = write(os.path.join(d, "same.csv"), csv_lines)
    off = fresh_dir("same-off")
    rc, out_nd, _ = run([nd, "--data", off.data_dir, "--batch", "40"])
    eq(rc, 0, "offline NDJSON")
    rc, out_cs, _ = run([cs, "--data", off.data_dir, "--batch", "40"])
    eq(rc, 0, "offline CSV")
    srv = H.Server(name="same-url")
    srv.start()
    url = ["--url", "http://127.0.0.1:%d" % srv.port, "--token", srv.token, "--batch", "40"]
    rc, uout_nd, uerr = run([nd, "--rejects", nd + ".url-rejects"] + url)
    eq(rc, 0, "--url NDJSON: %s" % short(uerr))
    rc, uout_cs, uerr = run([cs, "--rejects", cs + ".url-rejects"] + url)
    eq(rc, 0, "--url CSV: %s" % short(uerr))
    for a, b in ((out_nd, uout_nd), (out_cs, uout_cs)):
        eq(counts(b), counts(a), "the same counts over --url")
    for f in (nd, cs):
        strip = lambda t: [{k: v for k, v in json.loads(x).items()} for x in t.splitlines()]
        eq(strip(open(f + ".url-rejects").read()), strip(open(f + ".rejects.ndjson").read()),
           "the same reject entries for %s" % os.path.basename(f))
    off.start()
    idents = [person(i) for i in range(40)]
    got_off, got_url = all_records(off, idents), all_records(srv, idents)
    for ident in idents:
        a = [(rid if rid.startswith("same-") else "derived", v, f) for rid, v, f in got_off[ident]]
        b = [(rid if rid.startswith("same-") else "derived", v, f) for rid, v, f in got_url[ident]]
        eq(sorted(b), sorted(a), "records of %s" % (ident,))
    eq(srv.get_json("/v1/records/same-v")["version"], 3, "versions over --url")
    # a rerun over --url: every row a duplicate (rows without an id too: named by file and line)
    rc, again, _ = run([nd, "--rejects", nd + ".url-rejects"] + url)
    c = counts(again)
    eq((c["created"], c["updated"]), (0, 0), "rerun over --url: %s" % short(again))
    off.stop()
    srv.stop()


@test(timeout=120)
def test_audit_entries_name_the_importing_user():
    s = fresh_dir("audit")
    d = tmpdir("audit")
    path = write(os.path.join(d, "au.ndjson"), ndjson_rows(100, "au", pad=20))
    rc, out, err = run([path, "--data", s.data_dir, "--batch", "25"])
    eq(rc, 0, "import: %s" % short(err))
    short_id = re.search(r"import id ([0-9a-f]{16})", out).group(1)
    s.start()
    mine = [e for e in s.audit_entries() if e.get("resource") == "import:" + short_id]
    eq(len(mine), 4, "one entry per committed batch: %s" % mine)
    for e in mine:
        eq((e["user"], e["action"], e["client"], e["outcome"]), (os_user(), "records:create", "cli", "ok"),
           "entry %s" % e)
        check(len(e["patient_ids"]) > 0, "names the patients: %s" % e)
        check(all(H.UUID_RE.match(p) for p in e["patient_ids"]), "patient ids: %s" % e)
    pids = {p for e in mine for p in e["patient_ids"]}
    eq(len(pids), 40, "every patient touched is named")
    # over --url the entries name the token's user
    path2 = write(os.path.join(d, "au2.ndjson"), ndjson_rows(30, "au2", pad=20))
    rc, out, err = run([path2, "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token])
    eq(rc, 0, "--url import: %s" % short(err))
    theirs = [e for e in s.audit_entries(user="admin") if e["action"] == "records:create"]
    check(len(theirs) >= 1, "the server's entry names admin: %s" % theirs)
    s.stop()


@test(timeout=120)
def test_lock_refuses_import_while_serve_runs():
    s = H.Server(name="implock")
    s.start()
    d = tmpdir("lock")
    path = write(os.path.join(d, "l.ndjson"), ndjson_rows(5, "lock"))
    rc, out, err = run([path, "--data", s.data_dir])
    eq(rc, 1, "exit code while serve holds the directory")
    check("is in use by medstream pid %d (serve, since " % s.proc.pid in err, "names the holder: %s" % short(err))
    eq(s.get("/healthz").status, 200, "the server goes on")
    s.stop()
    rc, out, err = run([path, "--data", s.data_dir])
    eq(rc, 0, "once it stopped: %s" % short(err))



@test(timeout=180)
def test_offline_import_without_schema_never_replaces_the_stores_schema():
    """`import --data` without --schema took the default schema, and the store's schema was the one serve ran
    with: registering the default as a changed schema re-projected every public copy under it, so a field the
    operator's allow-list kept private (favorite_color here) was published to analysts, for the records of the
    file and every record before it. Now an offline import without --schema on a store whose public copies
    are under another schema than the default is refused before anything is stored; with --schema it goes in
    as before."""
    s = H.Server(name="impschema")
    sch = os.path.join(s.base, "schema.json")
    with open(sch, "w") as f:
        json.dump({"public": {"type": "copy", "ts": "year"}}, f)
    s.extra_args = ["--schema", sch]
    s.start()
    s.ingest_ok([{"record_id": "sch-a", "name": "%s A" % MARKER, "dob": "1970-01-01", "type": "lab",
                  "ts": "2025-01-01T00:00:00Z", "favorite_color": "private-a"}])
    s.stop()
    d = tmpdir("schema")
    path = write(os.path.join(d, "b.ndjson"), [json.dumps(
        {"record_id": "sch-b", "name": "%s B" % MARKER, "dob": "1971-01-01", "type": "lab",
         "ts": "2025-01-01T00:00:00Z", "favorite_color": "private-b"})])
    rc, out, err = run([path, "--data", s.data_dir])
    eq(rc, 1, "exit code of an offline import without --schema (%s %s)" % (short(out), short(err)))
    check("--schema" in err and "version 1" in err, "the refusal names --schema and the store's version: %s"
          % short(err))
    no_phi(out + err, "the refusal")
    s.start()
    eq(s.get("/v1/records/sch-b").status, 404, "nothing of the file is stored")
    eq(s.get_json("/healthz")["schema"], {"version": 1, "reprojecting": None}, "the store's schema is unchanged")
    pub = s.get_json("/v1/public/records")
    eq([(x["record_id"], x["fields"]) for x in pub["records"]], [("sch-a", {"type": "lab", "ts": "2025"})],
       "the public copies under the operator's schema")
    s.stop()
    rc, out, err = run([path, "--data", s.data_dir, "--schema", sch])
    eq(rc, 0, "with --schema: %s" % short(err))
    eq(counts(out)["created"], 1, "with --schema the row is stored: %s" % short(out))
    s.start()
    eq(s.get_json("/healthz")["schema"], {"version": 1, "reprojecting": None}, "the same schema version")
    pub = s.get_json("/v1/public/records")
    eq(sorted((x["record_id"], x["fields"]) for x in pub["records"]),
       [("sch-a", {"type": "lab", "ts": "2025"}), ("sch-b", {"type": "lab", "ts": "2025"})],
       "nothing private published")
    s.stop()


@test(timeout=60)
def test_a_csv_file_without_a_usable_header_is_refused_with_a_readable_message():
    """A CSV file whose header row cannot be read (empty, a BOM alone, a column without a name, a name twice)
    stops the import naming the file once and the problem. The message was formatted into the buffer it was
    read from, so the user got "medstream import: t.csv: t.csv: t.csv:  column 3 has no name" or
    "...: der row (the input is empty)": the file named three times and the reason cut."""
    s = fresh_dir("hdr")
    d = tmpdir("hdr")
    cases = ((b"", "CSV: no header row (the input is empty)"),
             (b"\xef\xbb\xbf", "CSV: no header row (the input is empty)"),
             (b"name,dob,\nA,1970-01-01,\n", "CSV header: column 3 has no name"),
             (b"name,dob,name\n", 'CSV header: column 3 ("name") has the name of column 1'))
    for i, (body, want) in enumerate(cases):
        path = os.path.join(d, "h%d.csv" % i)
        with open(path, "wb") as f:
            f.write(body)
        rc, out, err = run([path, "--data", s.data_dir, "--progress", "none"])
        eq(rc, 1, "exit code of %r (%s)" % (body, short(err)))
        eq(err.strip().splitlines()[-1], "medstream import: %s: %s" % (path, want), "the message of %r" % body)
    missing = os.path.join(d, "missing.ndjson")  # an error of the file's own: it named the file twice
    rc, out, err = run([missing, "--data", s.data_dir, "--progress", "none"])
    eq(rc, 1, "exit code of a missing file (%s)" % short(err))
    eq(err.strip().splitlines()[-1], "medstream import: %s: cannot open it: No such file or directory" % missing,
       "the message of a missing file")

@test(timeout=60)
def test_usage_errors():
    d = tmpdir("usage")
    path = write(os.path.join(d, "u.txt"), ndjson_rows(2, "u"))
    for args, want in (([path, "--data", d], "cannot tell the format"),
                       ([path + ".ndjson"], "give --data DIR"),
                       ([path, "--format", "ndjson", "--url", "http://127.0.0.1:1"], "--url and --token go together"),
                       ([path, "--format", "ndjson", "--data", d, "--url", "http://x", "--token", "t"], "give --data"),
                       ([path, path, "--format", "ndjson", "--data", d, "--rejects", "r"], "--rejects names one")):
        rc, out, err = run(args)
        eq(rc, 2, "exit code of %s (%s)" % (args[1:], short(err)))
        check(want in err, "message for %s: %s" % (args[1:], short(err)))
    rc, out, err = run([os.path.join(d, "missing.ndjson"), "--dry-run"])
    eq(rc, 1, "a missing file")


@test(timeout=120)
def test_progress_bar_on_a_terminal_plain_lines_otherwise():
    s = fresh_dir("prog")
    d = tmpdir("prog")
    path = big_file(d, 4000, "pg", pad=500)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(H.BIN, [H.BIN, "import", path, "--data", s.data_dir, "--batch", "100"])
    out = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    eq(os.WEXITSTATUS(status), 0, "import on a terminal")
    text = out.decode("utf-8", "replace")
    check("\r" in text and "ETA" in text and "rows/s" in text and "\033[K" in text, "a bar: %s" % short(text, 600))
    check(re.search(r"\[=+>? *\] +\d+%", text), "the bar itself: %s" % short(text, 600))
    no_phi(text, "the terminal")
    rc, out, err = run([path, "--data", s.data_dir, "--progress", "plain"])
    check(err.count("import: %s: " % path) >= 1 and "\r" not in err, "plain lines: %s" % short(err))



@test(timeout=120)
def test_progress_rates_of_a_csv_file_count_its_bytes_from_its_start():
    """The byte rate and the ETA count the file's bytes done in this run, from where it started. For a CSV
    file the start was taken after its header was read, which reads a whole chunk (4 MiB) ahead: a file
    smaller than that showed "0 B/s" and no ETA from start to end, a larger one a rate short of 4 MiB."""
    s = fresh_dir("csvrate")
    d = tmpdir("csvrate")
    lines = ["record_id,name,dob,type,notes"]
    lines += ["cr-%05d,%s %d,1970-01-01,lab,%s" % (i, MARKER, i % 30, "n" * 300) for i in range(9000)]
    path = write(os.path.join(d, "rate.csv"), lines)
    check(os.path.getsize(path) < 4 << 20, "the file is smaller than a read chunk")
    rc, out, err = run([path, "--data", s.data_dir, "--progress", "plain", "--batch", "500"])
    eq(rc, 0, "import: %s" % short(err))
    last = [x for x in err.splitlines() if x.startswith("import: %s: " % path)][-1]
    m = re.search(r"rows/s  (\S+ \S*B)/s  ETA (\S+)", last)
    check(m, "the figures of the last line: %s" % last)
    check(not m.group(1).startswith("0 "), "the byte rate of a CSV file read from its start: %s" % last)
    check(m.group(2) != "-", "an ETA once bytes were done: %s" % last)

if __name__ == "__main__":
    H.main()

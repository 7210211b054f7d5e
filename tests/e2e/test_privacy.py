#!/usr/bin/env python3
# End-to-end tests of issue 15's public transforms over real HTTP: a server whose schema composes the
# identity ("given" + "family") and publishes through zip3, age, age_band, date_shift, pseudonym, a
# nested path (address.zip) and array paths (codes[], labs[].code). Records go in over POST /v1/records;
# checked: /v1/public/records and /v1/public/patients carry the transformed values only (the expected
# values worked out in this file: ZIP3 areas, the 90+ collapse, one date offset per patient within the
# range with intervals and time-of-day kept), filters match array elements and nested values, a public
# NDJSON export (POST /v1/exports) holds the same values and none of the PHI, the PHI export's name
# column is the joined name; public reads and exports refuse a type or time bound on a field the schema
# keeps private, a patient's public records page by (year, record id) with nothing finer in the cursor; and
# `serve` refuses a bad schema at start, exiting 1 with the field's name on stderr.
import io
import json
import os
import subprocess
import tarfile
import time
from datetime import date, datetime

import harness as H
from harness import check, eq, fail, short, test

SCHEMA = {
    "identity": {"name": ["given", "family"], "dob": "dob"},
    "public": {
        "type": "copy",
        "ts": "year",
        "address.zip": "zip3",
        "address.state": "copy",
        "dob": {"transform": "age_band", "width": 10},
        "onset": "age",
        "admitted": {"transform": "date_shift", "max_days": 30},
        "discharged": {"transform": "date_shift", "max_days": 30},
        "family": "pseudonym",
        "codes[]": "copy",
        "labs[].code": "copy",
        "notes": "drop",
    },
}

# PHI that must never be in a public answer or a public export
SECRETS = ["Xavier", "Quillfeather", "Yolanda", "1936-06-15", "1980-02-29", "Secret Lane", "Hidden Road", "03601",
           "02139", "SSN-SECRET", "SECRETLAB", "NOTE-SECRET", "2024-03-01T10:30"]
# (the true admission dates are checked record by record: another patient's shifted date may equal one)


def records():
    a = {"given": "Xavier", "family": "Quillfeather", "dob": "1936-06-15"}
    return [
        dict(a, record_id="a1", type="visit", ts="2026-06-15T10:00:00Z",
             address={"street": "1 Secret Lane", "zip": "03601", "state": "NH"},
             admitted="2024-02-28", discharged="2024-03-01T10:30:00-05:00", onset="2016-06-15",
             codes=["A41.9", "I10"], labs=[{"code": "K", "value": "SECRETLAB1"}, {"value": "SECRETLAB2"}],
             ssn="SSN-SECRET-1", notes="NOTE-SECRET-1"),
        # the same patient (the name parts spelled otherwise): the same offset for its other dates
        dict(given=" XAVIER ", family="Quillfeather", dob="1936-06-15", record_id="a2", type="lab",
             ts="2026-06-14T10:00:00Z", admitted="2024-07-04", codes=["R65.20"]),
        {"given": "Yolanda", "family": "Quillfeather", "dob": "1980-02-29", "record_id": "c1", "type": "visit",
         "ts": "2026-02-28T08:00:00Z", "address": {"street": "9 Hidden Road", "zip": "02139-4307", "state": "MA"},
         "admitted": "2024-02-29", "codes": ["E11"], "labs": []},
    ]


def days(s):
    return date.fromisoformat(s[:10]).toordinal()


def server():
    s = H.shared_servers.get("privacy")
    if s is None:
        base = H.tempfile.mkdtemp(prefix="medstream-privacy-")
        H._temp_dirs.append(base)
        path = os.path.join(base, "schema.json")
        with open(path, "w") as f:
            json.dump(SCHEMA, f)
        s = H.shared_server("privacy", ["--schema", path])
        res = s.ingest_ok(records())
        eq([i["status"] for i in res["items"]], ["created"] * 3, "ingest: %s" % short(json.dumps(res)))
        s.pids = {i["record_id"]: i["patient_id"] for i in res["items"]}
    return s


def public_records(s, **params):
    return {r["record_id"]: r for r in s.get_all("/v1/public/records", "records", **params)}


def no_secrets(blob, what):
    for v in SECRETS:
        check(v not in blob, "%s holds PHI %r: %s" % (what, v, short(blob, 600)))


@test(timeout=120)
def test_public_records_carry_transformed_values():
    s = server()
    eq(s.pids["a1"], s.pids["a2"], "the composed identity resolves both spellings to one patient")
    check(s.pids["a1"] != s.pids["c1"], "another person is another patient")
    recs = public_records(s)
    eq(sorted(recs), ["a1", "a2", "c1"], "public records")
    no_secrets(json.dumps(recs), "GET /v1/public/records")
    a1, a2, c1 = recs["a1"]["fields"], recs["a2"]["fields"], recs["c1"]["fields"]
    # the nested path: a 03xxx ZIP of a restricted area is 000, the street is not public
    eq(a1["address"], {"zip": "000", "state": "NH"}, "a1 address")
    eq(c1["address"], {"zip": "021", "state": "MA"}, "c1 address (ZIP+4)")
    # age_band: 90 on the day of the event collapses into 90+; 46 (born 29 Feb 1980) is 40-49
    eq(a1["dob"], "90+", "a1 dob as age_band")
    eq(a2["dob"], "80-89", "a2 dob as age_band (89 the day before the 90th birthday)")
    eq(c1["dob"], "40-49", "c1 dob as age_band")
    eq(a1["onset"], "10", "onset (2016-06-15) as whole years at the event (2026-06-15)")
    # date_shift: one offset per patient, within +-30 days and never 0, time of day and offset kept
    check(a1["admitted"] != "2024-02-28" and a2["admitted"] != "2024-07-04" and c1["admitted"] != "2024-02-29",
          "a shifted date is never the true one")
    d = days(a1["admitted"]) - days("2024-02-28")
    check(1 <= abs(d) <= 30, "a1 offset %d within the range" % d)
    eq(days(a1["discharged"]) - days(a1["admitted"]), days("2024-03-01") - days("2024-02-28"),
       "the interval between admitted and discharged")
    eq(a1["discharged"][10:], "T10:30:00-05:00", "the time of day and offset of a shifted time")
    eq(days(a2["admitted"]) - days("2024-07-04"), d, "the same offset for the patient's other record")
    dc = days(c1["admitted"]) - days("2024-02-29")
    check(1 <= abs(dc) <= 30, "c1 offset %d within the range" % dc)
    # pseudonym: stable, and (store scope) the same family name gives the same pseudonym across patients
    check(len(a1["family"]) == 20 and all(ch in "0123456789abcdef" for ch in a1["family"]),
          "family as a pseudonym: %r" % a1["family"])
    eq(a2["family"], a1["family"], "pseudonym of the same patient's family name")
    eq(c1["family"], a1["family"], "pseudonym of the same value for another patient")
    # arrays: each element; arrays of objects keep only the listed member, empty elements left out
    eq(a1["codes"], ["A41.9", "I10"], "codes[]")
    eq(a1["labs"], [{"code": "K"}], "labs[].code")
    eq(c1["labs"], [], "an empty array")
    for r in (a1, a2, c1):
        check(set(r) <= set(k.split(".")[0].split("[")[0] for k in SCHEMA["public"]) - {"notes"},
              "public keys outside the allow-list: %s" % sorted(r))
        check("notes" not in r and "ssn" not in r and "given" not in r, "dropped / PHI fields: %s" % sorted(r))
    eq(a1["ts"], "2026", "ts as its year")


@test(timeout=120)
def test_public_filters_match_arrays_and_nested_values():
    s = server()
    eq(sorted(public_records(s, codes="A41.9")), ["a1"], "?codes=A41.9 matches an element")
    eq(sorted(public_records(s, codes="R65.20")), ["a2"], "?codes=R65.20")
    eq(sorted(public_records(s, codes="Z99")), [], "?codes=Z99")
    eq(sorted(public_records(s, **{"address.zip": "021"})), ["c1"], "?address.zip=021 matches a nested value")
    eq(sorted(public_records(s, **{"address.zip": "000", "codes": "I10"})), ["a1"], "two filters")
    eq(sorted(public_records(s, **{"labs.code": "K"})), ["a1"], "?labs.code=K (an array of objects)")
    eq(sorted(public_records(s, dob="90+")), ["a1"], "?dob=90+ (a transformed value)")
    for bad in ("ssn", "address", "address.street", "codes[]", "notes", "given"):
        r = s.get("/v1/public/records?" + H.q({bad: "x"}))
        eq(r.status, 400, "filter on %s: %s" % (bad, short(r.text)))
    # a filter on the true value of a transformed field finds nothing
    eq(sorted(public_records(s, **{"address.zip": "03601"})), [], "?address.zip=03601")
    # a1's true admission date: never a1, only a record whose published (shifted) date is that day (c1,
    # whose own offset is -1 one time in 60)
    shifted = sorted(k for k, r in public_records(s).items() if r["fields"].get("admitted") == "2024-02-28")
    check("a1" not in shifted, "a1's shifted date is its true one")
    eq(sorted(public_records(s, admitted="2024-02-28")), shifted, "?admitted=<a1's true date>")


@test(timeout=120)
def test_public_patients_project_nested_paths():
    s = server()
    pa = s.get_json("/v1/public/patients/" + s.pids["a1"])
    no_secrets(json.dumps(pa), "GET /v1/public/patients")
    f = pa["fields"]
    # the merged state: a2 (event 2026-06-14) is older than a1 (2026-06-15): a1's values win
    eq(f["address"], {"zip": "000", "state": "NH"}, "patient address from the merged top-level field")
    eq(f["codes"], ["A41.9", "I10"], "patient codes")
    eq(f["labs"], [{"code": "K"}], "patient labs")
    eq(f["dob"], "90+", "patient age_band at its latest event (2026-06-15)")
    check("type" not in f and "ts" not in f, "record fields are not a patient's: %s" % sorted(f))
    rec = public_records(s)["a1"]["fields"]
    eq(f["admitted"], rec["admitted"], "the patient's shifted date equals its record's")
    eq(f["family"], rec["family"], "the patient's pseudonym equals its record's")
    pc = s.get_json("/v1/public/patients/" + s.pids["c1"])["fields"]
    eq(pc["address"], {"zip": "021", "state": "MA"}, "c1 patient address")
    eq(pc["dob"], "40-49", "c1 patient age band")


def post_export(s, body):
    r = s.request("POST", "/v1/exports", body=json.dumps(body), headers={"Content-Type": "application/json"})
    if r.status != 202:
        fail("POST /v1/exports: expected 202, got %d: %s" % (r.status, short(r.text)))
    eid = r.json()["export_id"]
    t0 = time.time()
    while time.time() - t0 < 60:
        st = s.get_json("/v1/exports/" + eid)
        if st["state"] in ("done", "failed"):
            eq(st["state"], "done", "export state: %s" % st.get("error"))
            r = H.http_request(s.port, "GET", st["download"])
            eq(r.status, 200, "download: %s" % short(r.text))
            rows = {"records": [], "patients": []}
            # what the archive holds: every member's name and content, not the tar headers (whose
            # octal mtime and sizes may spell any digits, e.g. a ZIP code)
            held = []
            with tarfile.open(fileobj=io.BytesIO(r.body)) as tf:
                for m in tf.getmembers():
                    held.append(m.name)
                    if not m.isfile():
                        continue
                    text = tf.extractfile(m).read().decode()
                    held.append(text)
                    if not m.name.endswith(".ndjson"):
                        continue
                    kind = "patients" if "patients/" in m.name else "records"
                    rows[kind] += [json.loads(line) for line in text.splitlines() if line.strip()]
            return rows, "\n".join(held)
        time.sleep(0.1)
    fail("export not done within 60 s")


@test(timeout=180)
def test_public_export_holds_only_transformed_values():
    s = server()
    rows, held = post_export(s, {"scope": "public", "format": "ndjson"})
    no_secrets(held, "the public export")
    api = public_records(s)
    eq(sorted(r["record_id"] for r in rows["records"]), sorted(api), "exported public records")
    for r in rows["records"]:
        want = {k: v for k, v in api[r["record_id"]]["fields"].items() if k not in ("type", "ts")}
        eq(r["fields"], want, "export fields of %s" % r["record_id"])
    pats = {p["patient_id"]: p for p in rows["patients"]}
    eq(pats[s.pids["a1"]]["fields"]["address"], {"zip": "000", "state": "NH"}, "exported patient address")
    # the PHI export's name column is the composed name, joined as the identity joins it
    phi, _ = post_export(s, {"scope": "phi", "format": "ndjson"})
    names = {p["patient_id"]: p.get("name") for p in phi["patients"]}
    eq(names[s.pids["c1"]], "Yolanda Quillfeather", "PHI export name column (composed)")
    eq(names[s.pids["a1"]], "Xavier Quillfeather", "PHI export name column of the merged state")


@test(timeout=120)
def test_patient_reprojected_after_a_record_leaves():
    """Deleting a1 recomputes patient A from a2 alone in the writer, which derives the patient's keys from
    its stored identity (not from a record in hand): the same date offset, the age at a2's event."""
    s = server()
    before = public_records(s)
    r = s.request("DELETE", "/v1/records/a1")
    eq(r.status, 200, "DELETE a1: %s" % short(r.text))
    f = s.get_json("/v1/public/patients/" + s.pids["a1"])["fields"]
    no_secrets(json.dumps(f), "the recomputed public patient")
    eq(f["admitted"], before["a2"]["fields"]["admitted"], "the recomputed patient's shifted date (same offset)")
    eq(f["codes"], ["R65.20"], "codes from a2")
    eq(f["dob"], "80-89", "the age band at the patient's latest event, now a2's (2026-06-14)")
    eq(f["family"], before["a2"]["fields"]["family"], "the pseudonym")
    check("address" not in f and "labs" not in f, "a1's values left the state: %s" % sorted(f))


@test(timeout=120)
def test_public_reads_and_exports_refuse_bounds_on_private_fields():
    """A schema that keeps the record type and the event time private: a public read or a public export bounded by
    either answered by the private value (a public export of type "hiv-test" held exactly the hiv-test records,
    one since/until 2020 only the 2020 ones), leaking it; now both refuse such a bound with 400, naming the field,
    while the PHI export (patients:read) still takes them."""
    base = H.tempfile.mkdtemp(prefix="medstream-privacy-bounds-")
    H._temp_dirs.append(base)
    path = os.path.join(base, "schema.json")
    with open(path, "w") as f:
        json.dump({"public": {"favorite_color": "copy"}}, f)
    s = H.Server(extra_args=["--schema", path], name="private-bounds")
    s.start()
    s.ingest_ok([{"record_id": "pb-1", "name": "Bound Person", "dob": "1970-01-01", "type": "hiv-test",
                  "ts": "2020-05-01T00:00:00Z", "favorite_color": "red"},
                 {"record_id": "pb-2", "name": "Bound Person", "dob": "1970-01-01", "type": "visit",
                  "ts": "2024-05-01T00:00:00Z", "favorite_color": "blue"}])
    for q, field in (({"type": "hiv-test"}, "type"), ({"since": "2020", "until": "2020"}, "since/until")):
        r = s.get("/v1/public/records?" + H.q(q))
        eq(r.status, 400, "GET /v1/public/records?%s (%s)" % (H.q(q), short(r.text)))
        check(r.json()["error"].startswith(field + ": ") and "not a public field" in r.json()["error"],
              "the 400 names the field: %s" % r.text)
        body = dict(q, scope="public", format="ndjson")
        r = s.request("POST", "/v1/exports", body=json.dumps(body), headers={"Content-Type": "application/json"})
        eq(r.status, 400, "a public export bounded by %s (%s)" % (field, short(r.text)))
        check("not a public field" in r.json()["error"], "the 400 says why: %s" % r.text)
    got = public_records(s)
    eq(sorted(got), ["pb-1", "pb-2"], "an unbounded public read still answers")
    r = s.request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "ndjson", "type": "hiv-test"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 202, "a PHI export bounded by type (%s)" % short(r.text))
    s.stop()


@test(timeout=120)
def test_public_reads_and_exports_refuse_bounds_on_transformed_fields():
    """The same for a type published as a pseudonym and an event time published date-shifted: a bound selects by
    the stored value, so type=hiv-test answered exactly the records whose pseudonymized type was hiv-test, and
    since=until=2024 the records of true year 2024 (not those whose shifted time said 2024), which narrows the
    patient's secret offset. Both refuse such a bound now (400); a copied type and an event time copied or
    published as its year still take them (the other tests)."""
    base = H.tempfile.mkdtemp(prefix="medstream-privacy-transformed-")
    H._temp_dirs.append(base)
    path = os.path.join(base, "schema.json")
    with open(path, "w") as f:
        json.dump({"public": {"favorite_color": "copy", "type": "pseudonym",
                              "ts": {"transform": "date_shift", "max_days": 30}}}, f)
    s = H.Server(extra_args=["--schema", path], name="transformed-bounds")
    s.start()
    who = {"name": "Shift Person", "dob": "1970-01-01", "favorite_color": "red"}
    s.ingest_ok([dict(who, record_id="tb-1", type="hiv-test", ts="2024-01-05T00:00:00Z"),
                 dict(who, record_id="tb-2", type="visit", ts="2023-12-30T00:00:00Z")])
    for q, field in (({"type": "hiv-test"}, "type"), ({"since": "2024", "until": "2024"}, "since/until")):
        r = s.get("/v1/public/records?" + H.q(q))
        eq(r.status, 400, "GET /v1/public/records?%s (%s)" % (H.q(q), short(r.text)))
        check(r.json()["error"].startswith(field + ": ") and "transformed" in r.json()["error"],
              "the 400 names the field and why: %s" % r.text)
        body = dict(q, scope="public", format="ndjson")
        r = s.request("POST", "/v1/exports", body=json.dumps(body), headers={"Content-Type": "application/json"})
        eq(r.status, 400, "a public export bounded by %s (%s)" % (field, short(r.text)))
    eq(sorted(public_records(s)), ["tb-1", "tb-2"], "an unbounded public read still answers")
    r = s.request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "ndjson", "type": "hiv-test"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 202, "a PHI export bounded by type (%s)" % short(r.text))
    s.stop()


@test(timeout=120)
def test_a_patients_public_records_page_by_year_and_record_id():
    """GET /v1/public/records?patient_id=P walked the patient's records index in exact event-time order and
    handed out its key as next_cursor: the key holds the exact event time (to the microsecond) and the patient's
    internal number, so an analyst decoded the time the public copy gives only the year of, and read the order
    of the patient's events off the answer. The answer is in (year, record id) order now, its cursor 'Y',
    be16(year), the record id: nothing finer than the public copy."""
    s = H.Server(name="public-pages")
    s.start()
    who = {"name": "Page Person", "dob": "1961-04-05"}
    # record ids in the opposite order of the event times within each year
    recs = [dict(who, record_id="pp-%s" % rid, type="visit", ts=ts) for rid, ts in (
        ("e", "2025-01-02T03:04:05.123456Z"), ("d", "2025-06-07T08:09:10Z"), ("c", "2025-12-31T23:59:59Z"),
        ("b", "2026-03-17T08:41:05.654321Z"), ("a", "2026-09-02T23:10:59Z"))]
    pid = s.ingest_ok(recs)["items"][0]["patient_id"]
    got, cursors, cursor = [], [], None
    for _ in range(10):
        q = {"patient_id": pid, "limit": 2}
        if cursor:
            q["cursor"] = cursor
        ans = s.get_json("/v1/public/records?" + H.q(q))
        got += [(r["fields"]["ts"], r["record_id"]) for r in ans["records"]]
        cursor = ans["next_cursor"]
        if not cursor:
            break
        cursors.append(bytes.fromhex(cursor))
    eq(got, [("2025", "pp-c"), ("2025", "pp-d"), ("2025", "pp-e"), ("2026", "pp-a"), ("2026", "pp-b")],
       "pages in (year, record id) order, each record once")
    eq(cursors, [b"Y" + (2025).to_bytes(2, "big") + b"pp-d", b"Y" + (2026).to_bytes(2, "big") + b"pp-a"],
       "each cursor: the year and record id of its page's last record, nothing else")
    r = s.get("/v1/public/records?" + H.q({"patient_id": pid, "cursor": "72" * 20}))
    eq(r.status, 400, "a cursor of another form (%s)" % short(r.text))
    none = s.get_json("/v1/public/records?" + H.q({"patient_id": "00000000-0000-4000-8000-000000000000"}))
    eq((none["records"], none["next_cursor"]), ([], None), "a patient without records")
    s.stop()


@test(timeout=120)
def test_public_records_page_by_record_id_when_the_year_is_not_published():
    """With the event time private (or published date-shifted), GET /v1/public/records still answered in (true
    event year, record id) order and handed out cursors holding the year ('T*' NUL be16(2019) 'y-b'; with
    patient_id 'Y' be16(2019) 'y-b'): an analyst read each record's year, which the copy withholds, off the order
    and the cursor. Such a listing is in record id order now, all types and one type, each record once, its
    cursors holding year 0."""
    for name, ts_rule in (("private-ts", None), ("shifted-ts", {"transform": "date_shift", "max_days": 30})):
        base = H.tempfile.mkdtemp(prefix="medstream-privacy-%s-" % name)
        H._temp_dirs.append(base)
        path = os.path.join(base, "schema.json")
        public = {"favorite_color": "copy", "type": "copy"}
        if ts_rule:
            public["ts"] = ts_rule
        with open(path, "w") as f:
            json.dump({"public": public}, f)
        s = H.Server(extra_args=["--schema", path], name=name)
        s.start()
        who = {"name": "Year Person", "dob": "1970-01-01", "favorite_color": "red"}
        # record ids in the opposite order of their event years; y-c under two types (its type changed), y-d moved
        # from 2026 to 2018
        recs = [dict(who, record_id="y-%s" % rid, type=t, ts="%d-06-01T00:00:00Z" % y) for rid, t, y in (
            ("a", "visit", 2024), ("b", "lab", 2019), ("c", "lab", 2021), ("d", "visit", 2026), ("e", "visit", 2017))]
        pid = s.ingest_ok(recs)["items"][0]["patient_id"]
        s.ingest_ok([dict(recs[2], type="visit"), dict(recs[3], ts="2018-06-01T00:00:00Z")])
        for q in ({}, {"type": "visit"}, {"patient_id": pid}):
            got, cursors, cursor = [], [], None
            for _ in range(10):
                ans = s.get_json("/v1/public/records?" + H.q(dict(q, limit=2, **({"cursor": cursor} if cursor else {}))))
                got += [r["record_id"] for r in ans["records"]]
                cursor = ans["next_cursor"]
                if not cursor:
                    break
                cursors.append(bytes.fromhex(cursor))
            want = ["y-a", "y-c", "y-d", "y-e"] if q.get("type") else ["y-a", "y-b", "y-c", "y-d", "y-e"]
            eq(got, want, "%s %s: pages in record id order, each record once" % (name, q))
            for c in cursors:
                year = c[1:3] if c[:1] == b"Y" else c[c.index(b"\0") + 1:c.index(b"\0") + 3]
                eq(year, b"\0\0", "%s %s: the year in the cursor %r" % (name, q, c))
        r = s.get("/v1/public/records?" + H.q({"limit": 1, "cursor": (b"T*\0" + (2019).to_bytes(2, "big") + b"y-b").hex()}))
        eq(r.status, 400, "%s: a cursor with a year (%s)" % (name, short(r.text)))
        s.stop()


def serve_with_schema(doc):
    base = H.tempfile.mkdtemp(prefix="medstream-privacy-bad-")
    H._temp_dirs.append(base)
    data = os.path.join(base, "data")
    subprocess.run([H.BIN, "init", data], capture_output=True, timeout=60, check=True)
    path = os.path.join(base, "schema.json")
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    try:
        r = subprocess.run([H.BIN, "serve", "--data", data, "--listen", "127.0.0.1:%d" % H.free_port(), "--schema",
                            path], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        fail("serve with a bad schema did not exit (it must refuse to start)")
    return r


@test(timeout=120)
def test_serve_refuses_a_bad_schema_naming_the_field():
    cases = [
        ({"public": {"ssn_last4": "hash"}}, "ssn_last4", "unknown transform"),
        ({"identity": {"name": ["given", "family"]}, "public": {"given": "copy"}}, "given", "identity field"),
        ({"public": {"dob": "copy"}}, "dob", "identity field"),
        ({"public": {"birth_date": {"transform": "age_band", "width": 0}}}, "birth_date", "width"),
        ({"public": {"addr.zip": "zip3", "addr": "copy"}}, "addr.zip", "overlaps"),
    ]
    for doc, field, why in cases:
        r = serve_with_schema(doc)
        eq(r.returncode, 1, "serve with %s: exit code (stderr %s)" % (json.dumps(doc), short(r.stderr)))
        check('"%s"' % field in r.stderr and why in r.stderr,
              "stderr names the field %s and says %r: %s" % (field, why, short(r.stderr, 600)))


if __name__ == "__main__":
    H.main()

# End-to-end tests of medstream's HTTP API v1 over real HTTP, against the contract in docs/API.md
# (which refines shared DESIGN.md): ingest (NDJSON, JSON array, one object; created / updated /
# duplicate / rejected and version numbers), patient resolution by normalized name + dob, random
# patient ids, field merge and patient history, as-of reads and snapshots, identity lookup, a
# patient's records with filters and cursor paging, record reads, the de-identified public API
# (allow-list only, ts generalized to the year, no PHI in the raw bytes), /healthz and /metrics, and
# bad input: rejected lines with the right line number and an error that names the field without
# echoing the name, garbage bodies, 415 / 400 / 413 / 404 / 405 answers. The server must stay up.
#
# Run: /usr/bin/python3 tests/e2e/test_api.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import datetime
import hashlib
import json
import os
import random
import re
import subprocess
import threading
import time
import unicodedata
import urllib.parse
import uuid

import harness as H
from harness import check, eq, fail, q, short, test

# ---------------------------------------------------------------------------------------------
# servers: one shared server for most tests, special ones for --max-record / --max-body

def srv():
    s = H.shared_server("api")
    if s.note_if_died() is not None:
        # The server died during an earlier test (reported by test_zz_server_stayed_up);
        # restart it on the same data so that the remaining tests still say something useful.
        s.start()
    return s


def special_server(key, args):
    return H.shared_server(key, args)


# ---------------------------------------------------------------------------------------------
# helpers

ALLOW = {"favorite_color", "type", "ts"}
RECORD_LEVEL = {"record_id", "type", "ts"}


def rid(prefix="r"):
    return "%s-%s" % (prefix, H.rand_token(12))


def person(name=None, dob="1980-05-17", **extra):
    d = {"record_id": rid(), "name": name or ("Test Person " + H.rand_token()), "dob": dob}
    d.update(extra)
    return d


def items_by_line(answer):
    check(isinstance(answer, dict) and isinstance(answer.get("items"), list),
          "ingest answer has no items list: %s" % short(answer))
    out = {}
    for it in answer["items"]:
        check(isinstance(it.get("line"), int), "item without integer line: %r" % (it,))
        check(it["line"] not in out, "two items for line %d: %s" % (it["line"], short(answer)))
        out[it["line"]] = it
    return out


def check_item(item, status, record_id=None, version=None, what=""):
    check(item is not None, "%s: no item" % what)
    eq(item.get("status"), status, "%s status (item %s)" % (what, short(item)))
    if record_id is not None:
        eq(item.get("record_id"), record_id, "%s record_id" % what)
    if status != "rejected":
        check(H.UUID_RE.match(str(item.get("patient_id"))),
              "%s: patient_id not a UUID: %r" % (what, item.get("patient_id")))
        if version is not None:
            eq(item.get("version"), version, "%s version" % what)


def ingest_created(records, content_type="application/x-ndjson"):
    """Ingest records (all expected to be created); return the items in order."""
    ans = srv().ingest_ok(records, content_type)
    eq(ans.get("errors"), False, "errors flag (answer %s)" % short(ans))
    by = items_by_line(ans)
    eq(sorted(by), list(range(1, len(records) + 1)), "item lines")
    for i, r in enumerate(records, 1):
        check_item(by[i], "created", r.get("record_id"), 1, "line %d" % i)
    return [by[i] for i in range(1, len(records) + 1)]


def get_record(rec_id, s=None, params=None, expect=200):
    s = s or srv()
    path = "/v1/records/" + rec_id + (("?" + q(params)) if params else "")
    return s.get_json(path, expect)


def get_patient(pid, params=None, expect=200):
    path = "/v1/patients/" + pid + (("?" + q(params)) if params else "")
    return srv().get_json(path, expect)


def expect_error(resp, status, mention=None, what=""):
    if resp.status != status:
        fail("%s: expected HTTP %d, got %d: %s" % (what, status, resp.status, short(resp.text)))
    body = resp.json()
    check(isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"],
          "%s: error body is not {\"error\": \"<message>\"}: %s" % (what, short(resp.text)))
    if mention is not None:
        check(re.search(mention, body["error"], re.I),
              "%s: error message %r does not name %r" % (what, body["error"], mention))
    return body["error"]


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


def same_as_past_read(past, asof, what):
    """An as_of read must equal the read made at that instant, valid_to included: a version closed since was in
    force then (valid_to null; it answered the next version's valid_from, committed after the instant)."""
    eq(asof, past, what)


def list_all(path, params, key="records", page_limit=None, max_pages=200):
    """Follow next_cursor; return (all items, number of pages)."""
    out, pages, cursor = [], 0, None
    while True:
        p = dict(params)
        if page_limit is not None:
            p["limit"] = page_limit
        if cursor is not None:
            p["cursor"] = cursor
        body = srv().get_json(path + "?" + q(p))
        check(isinstance(body.get(key), list), "%s: no %s list: %s" % (path, key, short(body)))
        check("next_cursor" in body, "%s: answer has no next_cursor: %s" % (path, short(body)))
        if page_limit is not None:
            check(len(body[key]) <= page_limit, "page longer than limit %d: %d"
                  % (page_limit, len(body[key])))
        out.extend(body[key])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return out, pages
        check(isinstance(cursor, str) and cursor, "next_cursor neither null nor a string: %r" % cursor)
        check(pages < max_pages, "paging did not end after %d pages" % max_pages)


def fullwidth(s):
    out = []
    for ch in s:
        if ch == " ":
            out.append("\u3000")
        elif "!" <= ch <= "~":
            out.append(chr(ord(ch) + 0xFEE0))
        else:
            out.append(ch)
    return "".join(out)


def metrics_value(text, name, labels=None):
    pat = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(?:\{\})?")
    m = re.search(r"^" + pat + r"\s+([-+0-9.eEinfa]+)\s*(?:\d+)?$", text, re.M)
    return float(m.group(1)) if m else None


def all_strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from all_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_strings(v)


def assert_no_phi(resp, phi_values, what):
    raw = resp.body
    for key in ("ssn", "name", "dob", "phone"):
        check(('"%s"' % key).encode() not in raw, "%s: raw response contains the key %r: %s"
              % (what, key, short(resp.text)))
    decoded = list(all_strings(resp.json()))
    for v in phi_values:
        forms = {v.encode("utf-8"), json.dumps(v).encode("ascii")[1:-1],
                 json.dumps(v, ensure_ascii=False).encode("utf-8")[1:-1]}
        for f in forms:
            check(f not in raw, "%s: raw response contains PHI value %r: %s" % (what, v, short(resp.text)))
        for s in decoded:
            check(v not in s, "%s: response string %r contains PHI value %r" % (what, s, v))


# ---------------------------------------------------------------------------------------------
# health, ingest formats, statuses

@test
def test_healthz():
    r = srv().get("/healthz")
    eq(r.status, 200, "GET /healthz status")
    eq(r.json(), {"status": "ok", "schema": {"version": 1, "reprojecting": None}}, "GET /healthz body")


@test
def test_ingest_ndjson():
    recs = [person(type="visit", ts="2025-01-02T03:04:05Z", note="n%d" % i) for i in range(3)]
    items = ingest_created(recs)
    for rec, it in zip(recs, items):
        got = get_record(rec["record_id"])
        eq(got["record_id"], rec["record_id"], "record_id")
        eq(got["patient_id"], it["patient_id"], "patient_id of stored record")
        eq(got["fields"], rec, "stored fields")


@test
def test_ingest_other_ndjson_content_types():
    for ct in ("application/ndjson", "application/jsonl", "application/json"):
        recs = [person(), person()]
        items = ingest_created(recs, ct)
        for rec in recs:
            eq(get_record(rec["record_id"])["fields"], rec, "stored fields (%s)" % ct)
        check(len(items) == 2, "two items for %s" % ct)


@test
def test_ingest_json_array():
    recs = [person(type="lab"), person(type="visit"), person()]
    body = json.dumps(recs, ensure_ascii=False).encode("utf-8")
    ans = srv().ingest_ok(body, "application/json")
    eq(ans.get("errors"), False, "errors")
    by = items_by_line(ans)
    eq(sorted(by), [1, 2, 3], "array item lines")
    for i, rec in enumerate(recs, 1):
        check_item(by[i], "created", rec["record_id"], 1, "array item %d" % i)
        eq(get_record(rec["record_id"])["fields"], rec, "stored fields")


@test
def test_ingest_single_object():
    rec = person(type="visit", favorite_color="blue")
    ans = srv().ingest_ok(json.dumps(rec, ensure_ascii=False), "application/json")
    eq(ans.get("errors"), False, "errors")
    by = items_by_line(ans)
    eq(sorted(by), [1], "single object lines")
    check_item(by[1], "created", rec["record_id"], 1, "single object")
    eq(get_record(rec["record_id"])["fields"], rec, "stored fields")


@test
def test_ingest_pretty_printed_json_object():
    # application/json with one object spread over several lines is still one object (line 1)
    rec = person(type="visit")
    ans = srv().ingest_ok(json.dumps(rec, indent=2, ensure_ascii=False), "application/json")
    by = items_by_line(ans)
    eq(sorted(by), [1], "lines of a pretty-printed single object")
    check_item(by[1], "created", rec["record_id"], 1, "pretty-printed object")


@test
def test_ndjson_crlf_and_missing_final_newline():
    recs = [person(), person(), person()]
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in recs).encode("utf-8")  # no final newline
    ans = srv().ingest_ok(body)
    by = items_by_line(ans)
    for i, rec in enumerate(recs, 1):
        check_item(by.get(i), "created", rec["record_id"], 1, "CRLF line %d" % i)


@test
def test_statuses_and_versions_in_one_batch():
    r1 = person(phone="555-0100")
    r1b = dict(r1, phone="555-0199")
    ans = srv().ingest_ok([r1, r1, r1b, r1b])
    by = items_by_line(ans)
    check_item(by[1], "created", r1["record_id"], 1, "line 1")
    check_item(by[2], "duplicate", r1["record_id"], 1, "line 2")
    check_item(by[3], "updated", r1["record_id"], 2, "line 3")
    check_item(by[4], "duplicate", r1["record_id"], 2, "line 4")
    eq(ans.get("errors"), False, "errors")
    pids = {by[i]["patient_id"] for i in by}
    eq(len(pids), 1, "one patient for all lines")
    got = get_record(r1["record_id"])
    eq(got["version"], 2, "record version")
    eq(got["fields"], r1b, "record fields after update")


@test
def test_statuses_and_versions_across_batches():
    r = person(type="lab", value=1)
    check_item(items_by_line(srv().ingest_ok([r]))[1], "created", r["record_id"], 1, "first send")
    check_item(items_by_line(srv().ingest_ok([r]))[1], "duplicate", r["record_id"], 1, "resend")
    for v in (2, 3):
        r = dict(r, value=v)
        check_item(items_by_line(srv().ingest_ok([r]))[1], "updated", r["record_id"], v, "update %d" % v)
    check_item(items_by_line(srv().ingest_ok([r]))[1], "duplicate", r["record_id"], 3, "resend v3")
    got = get_record(r["record_id"])
    eq(got["version"], 3, "record version")
    eq(got["fields"]["value"], 3, "record value")


@test
def test_duplicate_is_same_json_content_not_same_bytes():
    r = person(type="lab", a=1, b="x")
    ingest_created([r])
    reordered = "{ " + ", ".join('"%s" : %s' % (k, json.dumps(v, ensure_ascii=False))
                                 for k, v in reversed(list(r.items()))) + " }"
    it = items_by_line(srv().ingest_ok(reordered.encode("utf-8")))[1]
    check_item(it, "duplicate", r["record_id"], 1, "same object with other key order and spacing")


@test
def test_record_id_derived_when_absent():
    r = {"name": "Derived Id " + H.rand_token(), "dob": "1991-02-03", "type": "lab", "v": 7}
    it = items_by_line(srv().ingest_ok([r]))[1]
    check_item(it, "created", None, 1, "record without record_id")
    check(re.match(r"^[0-9a-f]{32}$", str(it.get("record_id"))),
          "derived record_id is not 32 hex chars: %r" % it.get("record_id"))
    it2 = items_by_line(srv().ingest_ok([dict(reversed(list(r.items())))]))[1]
    check_item(it2, "duplicate", it["record_id"], 1, "same content again (other key order)")
    it3 = items_by_line(srv().ingest_ok([dict(r, v=8)]))[1]
    check_item(it3, "created", None, 1, "other content")
    check(it3["record_id"] != it["record_id"], "other content got the same derived record_id")
    eq(get_record(it["record_id"])["fields"], r, "record stored under its derived id")


@test
def test_record_id_rules():
    ok256 = "k" + H.rand_token(255)
    lines = [person(record_id=""), person(record_id="x" * 257), person(record_id="ab\u0001cd"),
             person(record_id=12345), person(record_id=ok256)]
    by = items_by_line(srv().ingest_ok(lines))
    for i in (1, 2, 3, 4):
        check_item(by.get(i), "rejected", what="bad record_id line %d" % i)
        check(re.search(r"record_id", by[i].get("error", "")),
              "line %d: error does not name record_id: %r" % (i, by[i].get("error")))
    check_item(by.get(5), "created", ok256, 1, "256-byte record_id")


@test
def test_record_defaults_type_and_ts():
    r = person()
    before = datetime.datetime.now(datetime.timezone.utc)
    ingest_created([r])
    after = datetime.datetime.now(datetime.timezone.utc)
    got = get_record(r["record_id"])
    eq(got["type"], "record", "default type")
    ts = H.parse_time(got["ts"])
    check(before - datetime.timedelta(seconds=5) <= ts <= after + datetime.timedelta(seconds=5),
          "default ts %s is not the ingest time (%s .. %s)" % (got["ts"], before, after))
    eq(got["fields"], r, "fields are the record as sent (no defaults injected)")


# ---------------------------------------------------------------------------------------------
# identity

@test
def test_identity_normalization_same_patient():
    tok = H.rand_token(8)
    base = "Ana María " + tok
    variants = ["  Ana   MARÍA %s " % tok.upper(), "ana maría " + tok, fullwidth(base),
                unicodedata.normalize("NFD", base), "Ana\tMaría\t" + tok]
    ans = srv().ingest_ok([person(name=base, dob="1985-07-01")] + [person(name=v, dob="1985-07-01")
                                                                  for v in variants[:3]])
    pids = {it["patient_id"] for it in ans["items"]}
    eq(len(pids), 1, "patient ids of %r written 4 ways in one batch" % base)
    pid = pids.pop()
    for v in variants[3:]:
        it = items_by_line(srv().ingest_ok([person(name=v, dob="1985-07-01")]))[1]
        eq(it["patient_id"], pid, "patient id for the variant %r in a later batch" % v)
    for v in variants:
        body = srv().get_json("/v1/patients?" + q({"name": v, "dob": "1985-07-01"}))
        eq(body["patient_id"], pid, "identity lookup of variant %r" % v)


@test
def test_identity_full_case_folding():
    tok = H.rand_token(8)
    a = items_by_line(srv().ingest_ok([person(name="Jürgen Straße " + tok)]))[1]
    b = items_by_line(srv().ingest_ok([person(name="JÜRGEN STRASSE " + tok.upper())]))[1]
    eq(b["patient_id"], a["patient_id"], "case-folded 'Straße' / 'STRASSE' patient id")


@test
def test_identity_different_dob_or_accent_is_other_patient():
    name = "Ana María " + H.rand_token(8)
    ans = srv().ingest_ok([person(name=name, dob="1985-07-01"), person(name=name, dob="1985-07-02"),
                           person(name=name.replace("í", "i"), dob="1985-07-01")])
    by = items_by_line(ans)
    check(by[1]["patient_id"] != by[2]["patient_id"], "a different dob resolved to the same patient")
    check(by[1]["patient_id"] != by[3]["patient_id"],
          "'María' and 'Maria' resolved to the same patient (NFKC + case-fold keeps accents)")
    eq(len({by[i]["patient_id"] for i in by}), 3, "three different patients")


@test
def test_patient_ids_are_random_uuids():
    tok = H.rand_token(8)
    recs = [person(name="Uuid Check %s %d" % (tok, i), dob="1970-01-%02d" % (i + 1)) for i in range(6)]
    items = ingest_created(recs)
    pids = [it["patient_id"] for it in items]
    eq(len(set(pids)), 6, "six identities, six patient ids")
    eq(len({p[:8] for p in pids}), 6, "ids share a prefix (sequential or time-based?): %r" % pids)
    for rec, pid in zip(recs, pids):
        check(H.UUID4_RE.match(pid), "patient id %r is not a random (version 4) UUID" % pid)
        hexid = pid.replace("-", "")
        low = rec["name"].lower()
        for piece in (rec["dob"], rec["dob"].replace("-", ""), tok, low.replace(" ", "")):
            check(piece not in pid and piece not in hexid, "patient id %r contains %r" % (pid, piece))
        norm = " ".join(low.split())
        for s in (norm + rec["dob"], norm + "|" + rec["dob"], norm + "\0" + rec["dob"],
                  rec["name"] + rec["dob"], rec["name"] + "|" + rec["dob"], norm + "\n" + rec["dob"]):
            for h in ("md5", "sha1", "sha256"):
                dig = hashlib.new(h, s.encode()).hexdigest()
                check(hexid[:12] not in dig, "patient id %r looks derived from %s(%r)" % (pid, h, s))


# ---------------------------------------------------------------------------------------------
# patient state, history, as_of

@test
def test_patient_merge_by_event_time():
    name, dob = "Merge Person " + H.rand_token(), "1975-03-04"
    a = {"record_id": rid(), "name": name, "dob": dob, "type": "patient", "ts": "2024-01-01T00:00:00Z",
         "phone": "555-0101", "favorite_color": "red", "allergy": "penicillin"}
    pid = ingest_created([a])[0]["patient_id"]
    b = {"record_id": rid(), "name": name, "dob": dob, "type": "visit", "ts": "2024-02-01T00:00:00Z",
         "phone": "555-0202", "city": "Lisbon"}
    eq(ingest_created([b])[0]["patient_id"], pid, "second record's patient")
    p = get_patient(pid)
    eq(p["patient_id"], pid, "patient_id")
    eq(p["version"], 2, "patient version after two records")
    eq(p["valid_to"], None, "valid_to of the current version")
    eq(p["fields"], {"name": name, "dob": dob, "phone": "555-0202", "favorite_color": "red",
                     "allergy": "penicillin", "city": "Lisbon"}, "merged fields")
    c = {"record_id": rid(), "name": name, "dob": dob, "favorite_color": "blue"}  # no ts: now, the latest
    ingest_created([c])
    p = get_patient(pid)
    eq(p["version"], 3, "patient version after a third record")
    eq(p["fields"]["favorite_color"], "blue", "later favorite_color wins")
    eq(p["fields"]["phone"], "555-0202", "phone kept")
    # a new version of record a, still about 2024: its green is older than c's blue and changes nothing
    a2 = {k: v for k, v in a.items() if k != "phone"}
    a2["favorite_color"] = "green"
    check_item(items_by_line(srv().ingest_ok([a2]))[1], "updated", a["record_id"], 2, "update of record a")
    p = get_patient(pid)
    eq(p["version"], 3, "patient version after an update that is older in event time")
    eq(p["fields"]["favorite_color"], "blue", "an older record does not override a newer value")
    eq(p["fields"]["allergy"], "penicillin", "allergy kept")
    # the same record moved to the future: now it wins
    a3 = dict(a2, ts="2099-01-01T00:00:00Z")
    check_item(items_by_line(srv().ingest_ok([a3]))[1], "updated", a["record_id"], 3, "second update of record a")
    p = get_patient(pid)
    eq(p["version"], 4, "patient version after a record update that is latest in event time")
    eq(p["fields"]["favorite_color"], "green", "favorite_color after the record update")
    eq(p["fields"]["phone"], "555-0202", "phone after the record update")


@test
def test_patient_history_chain():
    name, dob = "History Person " + H.rand_token(), "1966-06-06"
    pid = None
    for i in range(3):
        r = {"record_id": rid(), "name": name, "dob": dob, "step": i, "type": "visit"}
        pid = ingest_created([r])[0]["patient_id"]
        time.sleep(0.002)
    h = srv().get_json("/v1/patients/%s/history" % pid)
    eq(h.get("patient_id"), pid, "history patient_id")
    vs = h.get("versions")
    check(isinstance(vs, list), "history has no versions list: %s" % short(h))
    eq([v.get("version") for v in vs], [1, 2, 3], "history version numbers, oldest first")
    for i, v in enumerate(vs):
        eq(v["fields"].get("step"), i, "version %d step" % (i + 1))
        for k in RECORD_LEVEL:
            check(k not in v["fields"], "patient fields contain record-level field %r" % k)
        H.parse_time(v["valid_from"])
    for a, b in zip(vs, vs[1:]):
        check(H.parse_time(a["valid_from"]) < H.parse_time(b["valid_from"]), "valid_from not increasing")
        eq(a["valid_to"], b["valid_from"], "valid_to of version %d" % a["version"])
    eq(vs[-1]["valid_to"], None, "valid_to of the last version")
    cur = get_patient(pid)
    eq(cur["version"], 3, "current version")
    eq(cur["valid_from"], vs[-1]["valid_from"], "current valid_from")
    eq(cur["fields"], vs[-1]["fields"], "current fields")


@test
def test_patient_history_pages_and_reads_as_of():
    """DESIGN.md: lists page with limit and an opaque cursor, and any read takes as_of. 7 versions in pages of
    3 (3, 3, 1, the cursor null at the end) are the whole history in order; as_of the 4th version's
    valid_from answers versions 1-4, the 4th with valid_to null (in force then), and pages the same way; a
    cursor of another list is a 400, as are a bad limit and as_of."""
    name, dob = "History Pages " + H.rand_token(), "1967-07-07"
    pid = None
    for i in range(7):
        pid = ingest_created([{"record_id": rid(), "name": name, "dob": dob, "step": i, "type": "visit"}])[0][
            "patient_id"]
    whole = srv().get_json("/v1/patients/%s/history" % pid)
    eq([v["version"] for v in whole["versions"]], list(range(1, 8)), "the whole history (under the default limit)")
    eq(whole["next_cursor"], None, "next_cursor of the whole history")

    def pages(extra):
        got, sizes, cursor = [], [], None
        for _ in range(10):
            h = srv().get_json("/v1/patients/%s/history?%s" % (pid, q(dict(extra, limit=3, **(
                {"cursor": cursor} if cursor else {})))))
            got += h["versions"]
            sizes.append(len(h["versions"]))
            cursor = h["next_cursor"]
            if cursor is None:
                return got, sizes
        fail("history pages never ended: %s" % sizes)

    got, sizes = pages({})
    eq(sizes, [3, 3, 1], "page sizes of 7 versions by 3")
    eq(got, whole["versions"], "the pages, put together, are the whole history")
    t = whole["versions"][3]["valid_from"]
    then, sizes = pages({"as_of": t})
    eq(sizes, [3, 1], "page sizes as of the 4th version")
    eq([v["version"] for v in then], [1, 2, 3, 4], "versions as of the 4th version's valid_from")
    eq(then[:3], whole["versions"][:3], "the versions before it, as now")
    eq(then[3]["valid_to"], None, "valid_to of the version in force as of then")
    eq(then[3]["fields"], get_patient(pid, {"as_of": t})["fields"], "its fields, as the patient read as of then")
    recs = srv().get_json("/v1/patients/%s/records?limit=1" % pid)
    check(recs["next_cursor"], "a records page has a next_cursor")
    for bad in ({"cursor": recs["next_cursor"]}, {"cursor": "zz"}, {"limit": "0"}, {"as_of": "yesterday"}):
        r = srv().request("GET", "/v1/patients/%s/history?%s" % (pid, q(bad)))
        eq(r.status, 400, "history with %s: %s" % (bad, short(r.text)))


@test
def test_duplicate_makes_no_new_patient_version():
    r = person(type="lab", x=1)
    pid = ingest_created([r])[0]["patient_id"]
    check_item(items_by_line(srv().ingest_ok([r]))[1], "duplicate", r["record_id"], 1, "resend")
    h = srv().get_json("/v1/patients/%s/history" % pid)
    eq(len(h["versions"]), 1, "patient versions after a duplicate")
    eq(get_patient(pid)["version"], 1, "patient version after a duplicate")


@test
def test_as_of_reads_equal_past_reads():
    name, dob = "AsOf Person " + H.rand_token(), "1990-09-09"
    r1 = {"record_id": rid(), "name": name, "dob": dob, "type": "visit", "ts": "2025-05-05T05:05:05Z",
          "favorite_color": "red", "phone": "555-0001"}
    pid = ingest_created([r1])[0]["patient_id"]
    time.sleep(0.01)
    reads = {
        "patient": "/v1/patients/%s" % pid,
        "lookup": "/v1/patients?" + q({"name": name, "dob": dob}),
        "record": "/v1/records/%s" % r1["record_id"],
        "records": "/v1/patients/%s/records" % pid,
        "public_patient": "/v1/public/patients/%s" % pid,
        "public_records": "/v1/public/records?" + q({"patient_id": pid}),
    }
    past = {k: srv().get_json(p) for k, p in reads.items()}
    time.sleep(0.01)
    t = H.now_rfc3339()
    snap = srv().request("POST", "/v1/snapshots", body=b"").json()["snapshot_id"]  # public reads: by snapshot
    time.sleep(0.01)
    r1b = dict(r1, favorite_color="green", phone="555-0002")
    r2 = {"record_id": rid(), "name": name, "dob": dob, "type": "lab", "ts": "2025-06-06T06:06:06Z",
          "favorite_color": "blue"}
    ans = srv().ingest_ok([r1b, r2])
    check_item(items_by_line(ans)[1], "updated", r1["record_id"], 2, "update")
    hist = srv().get_json("/v1/patients/%s/history" % pid)["versions"]
    check(len(hist) >= 2, "history after update has %d versions" % len(hist))
    rec_now = get_record(r1["record_id"])
    eq(rec_now["version"], 2, "current record version")

    cur = get_patient(pid)
    check(cur["fields"] != past["patient"]["fields"], "current patient did not change after the update")
    for k, p in reads.items():
        sep = "&" if "?" in p else "?"
        got = srv().get_json(p + sep + q({"as_of": snap if k.startswith("public") else t}))
        what = "%s as_of %s" % (k, t)
        if k in ("patient", "lookup"):
            same_as_past_read(past[k], got, what)
        elif k == "record":
            same_as_past_read(past[k], got, what)
        elif k == "records":
            eq(got.get("next_cursor"), None, what + " next_cursor")
            eq(len(got["records"]), len(past[k]["records"]), what + " count")
            for a, b in zip(past[k]["records"], got["records"]):
                same_as_past_read(a, b, what)
        elif k == "public_records":
            eq(sorted(json.dumps(x, sort_keys=True) for x in got["records"]),
               sorted(json.dumps(x, sort_keys=True) for x in past[k]["records"]), what)
        else:
            eq(got, past[k], what)


@test(timeout=120)
def test_as_of_a_past_instant_answers_the_same_while_commits_land():
    """A commit's valid_from is taken when its write transaction begins, and readers see the commit only when it
    ends: an as_of read of an instant in between answered without that commit, and the same read made a moment
    later with it (652 of 1,500 reads of a patient as of 1 ms before each read, taken while batches landed, named
    another version when read again). A read as of a past instant now waits for the write in flight that began
    at or before it."""
    s = H.Server(name="as-of-settle")
    s.start()
    name = "Settle Person " + H.rand_token()
    pid = s.ingest_ok([{"record_id": "settle-0", "name": name, "dob": "1970-01-01", "v": 0}])["items"][0]["patient_id"]
    stop, failures = threading.Event(), []

    def ingest():
        i = 0
        while not stop.is_set():
            i += 1
            recs = [{"record_id": "settle-%d-%d" % (i, j), "name": name, "dob": "1970-01-01", "v": i,
                     "pad": "x" * 5000} for j in range(200)]
            r = s.ingest(recs, timeout=60)
            if r.status != 200:
                failures.append(r.status)
    th = threading.Thread(target=ingest)
    th.start()
    samples, t_end = [], time.time() + 5
    try:
        while time.time() < t_end and len(samples) < 600:
            t = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(milliseconds=1)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
            samples.append((t, s.get_json("/v1/patients/%s?%s" % (pid, q({"as_of": t})))["version"]))
    finally:
        stop.set()
        th.join()
    eq(failures, [], "ingest statuses")
    check(len({v for _t, v in samples}) > 3, "the patient changed while it was read: %s" % samples[-3:])
    changed = [(t, v, s.get_json("/v1/patients/%s?%s" % (pid, q({"as_of": t})))["version"]) for t, v in samples]
    changed = [x for x in changed if x[1] != x[2]]
    eq(changed[:3], [], "as_of reads (instant, version read during the ingest, version read after) that changed, "
       "of %d" % len(samples))
    s.stop()


@test(timeout=60)
def test_as_of_an_instant_still_to_come_waits_for_it_or_is_refused():
    """A read as of an instant not yet past answered as now, and the same read answered differently once a commit
    landed before that instant. An instant at most 1 s ahead of the server's clock (a client's clock a little
    ahead) is now waited for, so its answer never changes; one further ahead is a 400, for reads and exports."""
    s = H.Server(name="as-of-ahead")
    s.start()
    name = "Ahead Person " + H.rand_token()
    rec = lambda i: {"record_id": "ahead-%d" % i, "name": name, "dob": "1971-02-03", "v": i}
    pid = s.ingest_ok([rec(0)])["items"][0]["patient_id"]
    stamp = lambda dt: (datetime.datetime.now(datetime.timezone.utc) + dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    t = stamp(datetime.timedelta(milliseconds=700))
    t0 = time.time()
    first = s.get_json("/v1/patients/%s?%s" % (pid, q({"as_of": t})))
    check(time.time() - t0 >= 0.5, "the read waited for its instant (%.3f s)" % (time.time() - t0))
    s.ingest_ok([rec(1)])  # a new version, committed after the instant
    again = s.get_json("/v1/patients/%s?%s" % (pid, q({"as_of": t})))
    eq(again["version"], first["version"], "the same read as of the same instant")
    eq(again["fields"], first["fields"], "the same fields")
    far = stamp(datetime.timedelta(hours=1))
    for path in ("/v1/patients/%s?%s" % (pid, q({"as_of": far})), "/v1/records/ahead-0?%s" % q({"as_of": far}),
                 "/v1/patients/%s/history?%s" % (pid, q({"as_of": far}))):
        r = s.get(path)
        eq(r.status, 400, "an hour ahead: %s" % path)
        check("ahead of the server's clock" in r.text, "the refusal says why: %s" % short(r.text))
    r = s.request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "ndjson", "as_of": far}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 400, "an export an hour ahead: %s" % short(r.text))
    s.stop()


@test
def test_as_of_before_creation_is_404():
    t0 = H.now_rfc3339()
    snap = srv().request("POST", "/v1/snapshots", body=b"").json()["snapshot_id"]
    time.sleep(0.01)
    r = person(type="visit")
    pid = ingest_created([r])[0]["patient_id"]
    for t in (t0, "2000-01-01T00:00:00Z", "2000-01-01T00:00:00.000000Z", snap):
        for path in ("/v1/patients/%s" % pid, "/v1/records/%s" % r["record_id"],
                     "/v1/patients?" + q({"name": r["name"], "dob": r["dob"]})):
            sep = "&" if "?" in path else "?"
            resp = srv().get(path + sep + q({"as_of": t}))
            expect_error(resp, 404, what="GET %s as_of %s (before creation)" % (path, t))
    expect_error(srv().get("/v1/public/patients/%s?%s" % (pid, q({"as_of": snap}))), 404,
                 what="public patient as_of a snapshot before its creation")
    get_patient(pid, {"as_of": H.now_rfc3339()})


@test
def test_identity_lookup():
    name, dob = "Lookup Person " + H.rand_token(), "1982-12-31"
    r = person(name=name, dob=dob, city="Porto")
    pid = ingest_created([r])[0]["patient_id"]
    by_id = get_patient(pid)
    for n in (name, name.upper(), "  " + name.lower() + "  ", fullwidth(name)):
        got = srv().get_json("/v1/patients?" + q({"name": n, "dob": dob}))
        eq(got, by_id, "lookup by %r equals GET by id" % n)
    expect_error(srv().get("/v1/patients?" + q({"name": name, "dob": "1982-12-30"})), 404,
                 what="lookup with another dob")
    expect_error(srv().get("/v1/patients?" + q({"name": name + "x", "dob": dob})), 404,
                 what="lookup of an unknown name")


# ---------------------------------------------------------------------------------------------
# a patient's records, record reads

def _ingest_dated_records(n=25, same_ts=0):
    name, dob = "Records Person " + H.rand_token(), "1977-07-07"
    recs = []
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    for i in range(n):
        ts = (base + datetime.timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        recs.append({"record_id": "rec-%s-%02d" % (H.rand_token(6), i), "name": name, "dob": dob,
                     "type": "lab" if i % 5 in (0, 3) else "visit", "ts": ts, "i": i})
    for j in range(same_ts):
        recs.append({"record_id": "tie-%s-%02d" % (H.rand_token(6), j), "name": name, "dob": dob,
                     "type": "note", "ts": "2024-03-01T12:00:00Z", "j": j})
    shuffled = recs[:]
    random.shuffle(shuffled)
    items = ingest_created(shuffled)
    eq(len({it["patient_id"] for it in items}), 1, "one patient")
    return items[0]["patient_id"], recs


@test
def test_patient_records_filters():
    pid, recs = _ingest_dated_records(25)
    path = "/v1/patients/%s/records" % pid
    body = srv().get_json(path)
    eq(body.get("patient_id"), pid, "patient_id")
    eq(body.get("next_cursor"), None, "next_cursor with 25 records and the default limit")
    got = body["records"]
    eq([r["record_id"] for r in got], [r["record_id"] for r in recs], "records ordered by ts")
    for g, r in zip(got, recs):
        for k in ("record_id", "patient_id", "type", "ts", "version", "valid_from", "valid_to", "fields"):
            check(k in g, "record in list lacks %r: %s" % (k, short(g)))
        eq(g["fields"], r, "listed record fields")
        eq(g["type"], r["type"], "listed record type")
        eq(H.parse_time(g["ts"]), H.parse_time(r["ts"]), "listed record ts")
    want = [r["record_id"] for r in recs if r["type"] == "lab"]
    eq([r["record_id"] for r in srv().get_json(path + "?type=lab")["records"]], want, "type=lab")
    since, until = "2024-01-05T00:00:00Z", "2024-01-10T00:00:00Z"
    want = [r["record_id"] for r in recs[4:9]]
    eq([r["record_id"] for r in srv().get_json(path + "?" + q({"since": since, "until": until}))["records"]],
       want, "since (inclusive) / until (exclusive)")
    want = [r["record_id"] for r in recs[4:9] if r["type"] == "visit"]
    eq([r["record_id"] for r in srv().get_json(
        path + "?" + q({"type": "visit", "since": since, "until": until}))["records"]],
       want, "type + since + until")
    eq(srv().get_json(path + "?" + q({"type": "nosuchtype"}))["records"], [], "unknown type")


@test
def test_patient_records_paging_exactly_once():
    pid, recs = _ingest_dated_records(25, same_ts=6)
    path = "/v1/patients/%s/records" % pid
    want = sorted(r["record_id"] for r in recs)
    for limit in (1, 4, 7):
        got, pages = list_all(path, {}, page_limit=limit)
        ids = [r["record_id"] for r in got]
        eq(len(ids), len(set(ids)), "no record twice with limit=%d" % limit)
        eq(sorted(ids), want, "all records with limit=%d" % limit)
        check(pages >= -(-len(want) // limit), "only %d pages for %d records at limit %d"
              % (pages, len(want), limit))
        ts = [H.parse_time(r["ts"]) for r in got]
        check(ts == sorted(ts), "pages not in ts order (limit %d)" % limit)
    got, _ = list_all(path, {"type": "lab"}, page_limit=3)
    eq(sorted(r["record_id"] for r in got), sorted(r["record_id"] for r in recs if r["type"] == "lab"),
       "type=lab paged by 3")
    body = srv().get_json(path + "?limit=1000")
    eq(len(body["records"]), len(want), "limit=1000")
    eq(body["next_cursor"], None, "next_cursor at limit=1000")


@test
def test_get_record_and_as_of():
    r = person(type="lab", ts="2023-03-03T03:03:03.500Z", value=1.5, units="mmol/L")
    pid = ingest_created([r])[0]["patient_id"]
    v1 = get_record(r["record_id"])
    eq(v1["record_id"], r["record_id"], "record_id")
    eq(v1["patient_id"], pid, "patient_id")
    eq(v1["type"], "lab", "type")
    eq(H.parse_time(v1["ts"]), H.parse_time(r["ts"]), "ts")
    eq(v1["version"], 1, "version")
    eq(v1["valid_to"], None, "valid_to")
    eq(v1["fields"], r, "fields = the record as sent")
    H.parse_time(v1["valid_from"])
    time.sleep(0.01)
    t = H.now_rfc3339()
    time.sleep(0.01)
    r2 = dict(r, value=2.5)
    check_item(items_by_line(srv().ingest_ok([r2]))[1], "updated", r["record_id"], 2, "update")
    v2 = get_record(r["record_id"])
    eq(v2["version"], 2, "version after update")
    eq(v2["fields"], r2, "fields after update")
    eq(v2["valid_to"], None, "valid_to after update")
    same_as_past_read(v1, get_record(r["record_id"], params={"as_of": t}), "record as_of between versions")
    eq(get_record(r["record_id"], params={"as_of": v2["valid_from"]})["version"], 2,
       "record as_of exactly version 2's valid_from")


# ---------------------------------------------------------------------------------------------
# public (de-identified) API

def _phi_person(**extra):
    tok = H.rand_token(10)
    digits = "%09d" % random.randrange(10 ** 9)
    rec = {"record_id": rid("pub"), "name": "Zoë Phi%s" % tok, "dob": "1971-08-09",
           "ssn": "%s-%s-%s" % (digits[:3], digits[3:5], digits[5:]),
           "phone": "+1-555-%s" % "".join(random.choice("0123456789") for _ in range(7)),
           "diagnosis": "diag %s" % H.rand_token(10), "email": "%s@example.org" % H.rand_token(8)}
    rec.update(extra)
    phi = [rec["name"], tok, rec["dob"], rec["dob"].replace("-", ""), rec["ssn"], rec["phone"],
           rec["diagnosis"], rec["email"]]
    return rec, phi


@test
def test_public_patient_allow_listed_only():
    color = "amber-" + H.rand_token(6)
    rec, phi = _phi_person(type="visit", ts="2026-03-04T05:06:07Z", favorite_color=color)
    pid = ingest_created([rec])[0]["patient_id"]
    r = srv().get("/v1/public/patients/%s" % pid)
    eq(r.status, 200, "public patient status")
    body = r.json()
    assert_no_phi(r, phi + ["2026-03-04", "05:06:07"], "public patient")
    eq(body.get("patient_id"), pid, "public patient_id")
    check(set(body["fields"]) <= ALLOW, "public patient fields not allow-listed: %r" % sorted(body["fields"]))
    eq(body["fields"].get("favorite_color"), color, "public favorite_color")
    check(set(body) <= {"patient_id", "fields", "schema_version"},
          "public patient has keys %r (contract: patient_id, fields, schema_version)"
          % sorted(body))


@test
def test_public_records_allow_listed_only():
    rec1, phi1 = _phi_person(type="visit", ts="2026-03-04T05:06:07Z", favorite_color="teal")
    pid = ingest_created([rec1])[0]["patient_id"]
    rec2 = dict(rec1, record_id=rid("pub"), type="lab", ts="2019-11-12T13:14:15+02:00",
                ssn=rec1["ssn"], notes="free text " + H.rand_token(10))
    rec2.pop("favorite_color")
    rec3 = {"record_id": rid("pub"), "name": rec1["name"], "dob": rec1["dob"]}   # no type, no ts
    ingest_created([rec2, rec3])
    r = srv().get("/v1/public/records?" + q({"patient_id": pid}))
    eq(r.status, 200, "public records status")
    body = r.json()
    assert_no_phi(r, phi1 + [rec2["notes"], "2026-03-04", "2019-11-12", "13:14:15", "05:06:07"],
                  "public records")
    got = {x["record_id"]: x for x in body["records"]}
    eq(sorted(got), sorted([rec1["record_id"], rec2["record_id"], rec3["record_id"]]),
       "public records of the patient")
    for x in body["records"]:
        eq(x["patient_id"], pid, "public record patient_id")
        check(set(x["fields"]) <= ALLOW, "public record fields not allow-listed: %r" % sorted(x["fields"]))
    eq(got[rec1["record_id"]]["fields"], {"type": "visit", "ts": "2026", "favorite_color": "teal"},
       "public fields of record 1 (ts generalized to the year)")
    f2 = got[rec2["record_id"]]["fields"]
    eq(f2.get("type"), "lab", "public type of record 2")
    eq(f2.get("ts"), "2019", "public ts of record 2 (generalized to the year string)")
    check("favorite_color" not in f2, "record 2 has no favorite_color but the public copy has one")
    f3 = got[rec3["record_id"]]["fields"]
    check(f3.get("ts") in (None, str(datetime.datetime.now(datetime.timezone.utc).year)),
          "public ts of a record without ts: %r" % f3.get("ts"))
    for x in body["records"]:   # the exact shape last, after the privacy checks above
        check(set(x) <= {"patient_id", "record_id", "fields"},
              "public record has keys %r (contract: patient_id, record_id, fields)" % sorted(x))


@test
def test_public_records_filters():
    tok = H.rand_token(6)
    t1, t2, c1, c2 = "lab" + tok, "visit" + tok, "red" + tok, "blue" + tok
    pa, pb = "Filter A " + H.rand_token(), "Filter B " + H.rand_token()
    recs = {"A": person(name=pa, type=t1, favorite_color=c1), "B": person(name=pa, type=t1, favorite_color=c2),
            "C": person(name=pb, type=t2, favorite_color=c1), "D": person(name=pb, type=t2)}
    order = ["A", "B", "C", "D"]
    items = ingest_created([recs[k] for k in order])
    pid = {k: it["patient_id"] for k, it in zip(order, items)}
    ids = {k: recs[k]["record_id"] for k in order}

    def find(params):
        got, _ = list_all("/v1/public/records", params)
        return sorted(x["record_id"] for x in got)

    for params, keys in [({"type": t1}, "AB"), ({"favorite_color": c1}, "AC"), ({"patient_id": pid["C"]}, "CD"),
                         ({"type": t2, "favorite_color": c1}, "C"), ({"patient_id": pid["A"], "favorite_color": c2}, "B"),
                         ({"favorite_color": "none" + tok}, ""), ({"type": t1, "patient_id": pid["C"]}, "")]:
        eq(find(params), sorted(ids[k] for k in keys), "public records for %r" % params)
    # paging over a patient's public records covers each exactly once
    pname = "Filter P " + H.rand_token()
    many = [person(name=pname, type=t1, ts="2025-01-%02dT00:00:00Z" % (i + 1)) for i in range(9)]
    ppid = ingest_created(many)[0]["patient_id"]
    got, pages = list_all("/v1/public/records", {"patient_id": ppid}, page_limit=2)
    ids_got = [x["record_id"] for x in got]
    eq(len(ids_got), len(set(ids_got)), "public paging repeated a record")
    eq(sorted(ids_got), sorted(r["record_id"] for r in many), "public paging limit=2")
    check(pages >= 5, "9 records at limit 2 came in %d pages" % pages)


@test
def test_public_filter_number_and_boolean_literals():
    n = random.randrange(10 ** 8, 10 ** 9)
    name = "Literal " + H.rand_token()
    a = person(name=name, favorite_color=n)
    b = person(name=name, favorite_color=True)
    pid = ingest_created([a, b])[0]["patient_id"]
    got = srv().get_json("/v1/public/records?" + q({"favorite_color": str(n)}))["records"]
    eq([x["record_id"] for x in got], [a["record_id"]], "favorite_color=%d (a JSON number)" % n)
    got = srv().get_json("/v1/public/records?" + q({"favorite_color": "true", "patient_id": pid}))["records"]
    eq([x["record_id"] for x in got], [b["record_id"]], "favorite_color=true (a JSON boolean)")


@test
def test_public_filter_not_allow_listed_is_400():
    for field in ("ssn", "name", "dob", "phone", "diagnosis"):
        r = srv().get("/v1/public/records?" + q({field: "x"}))
        expect_error(r, 400, what="public records filtered on %r" % field)


@test
def test_public_unknown_and_bad_patient():
    expect_error(srv().get("/v1/public/patients/%s" % uuid.uuid4()), 404, what="unknown public patient")
    expect_error(srv().get("/v1/public/patients/not-a-uuid"), 400, what="bad public patient id")
    expect_error(srv().get("/v1/public/records?" + q({"patient_id": "not-a-uuid"})), 400,
                 r"patient", what="public records patient_id=not-a-uuid")


# ---------------------------------------------------------------------------------------------
# snapshots

@test
def test_snapshots():
    name, dob = "Snap Person " + H.rand_token(), "1988-08-08"
    r = {"record_id": rid(), "name": name, "dob": dob, "type": "visit", "favorite_color": "blue",
         "phone": "555-1111"}
    pid = ingest_created([r])[0]["patient_id"]
    p1, r1 = get_patient(pid), get_record(r["record_id"])
    pp1 = srv().get_json("/v1/public/patients/%s" % pid)
    resp = srv().request("POST", "/v1/snapshots", body=b"")
    eq(resp.status, 201, "POST /v1/snapshots status (%s)" % short(resp.text))
    snap = resp.json()
    check(isinstance(snap.get("snapshot_id"), str) and snap["snapshot_id"], "snapshot_id: %s" % short(snap))
    H.parse_time(snap.get("as_of"))
    time.sleep(0.01)
    r2 = dict(r, favorite_color="green", phone="555-2222")
    check_item(items_by_line(srv().ingest_ok([r2]))[1], "updated", r["record_id"], 2, "update after snapshot")
    r3 = {"record_id": rid(), "name": name, "dob": dob, "type": "lab", "favorite_color": "black"}
    ingest_created([r3])
    eq(get_patient(pid)["version"], 3, "current patient version")
    for as_of in (snap["snapshot_id"], snap["as_of"]):
        same_as_past_read(p1, get_patient(pid, {"as_of": as_of}), "patient as_of %s" % as_of)
        same_as_past_read(r1, get_record(r["record_id"], params={"as_of": as_of}), "record as_of %s" % as_of)
        recs = srv().get_json("/v1/patients/%s/records?%s" % (pid, q({"as_of": as_of})))["records"]
        eq([x["record_id"] for x in recs], [r["record_id"]], "patient records as_of %s" % as_of)
        eq(recs[0]["fields"], r, "patient record fields as_of %s" % as_of)
    # public reads take only the snapshot id: a time would let a caller bisect exact commit times
    as_of = snap["snapshot_id"]
    eq(srv().get_json("/v1/public/patients/%s?%s" % (pid, q({"as_of": as_of}))), pp1, "public patient as_of snapshot")
    pub = srv().get_json("/v1/public/records?%s" % q({"patient_id": pid, "as_of": as_of}))["records"]
    eq([(x["record_id"], x["fields"].get("favorite_color")) for x in pub], [(r["record_id"], "blue")],
       "public records as_of snapshot")
    for path in ("/v1/public/patients/%s?" % pid, "/v1/public/records?patient_id=%s&" % pid):
        expect_error(srv().get(path + q({"as_of": snap["as_of"]})), 400, "snapshot",
                     what="public read as_of a time")
    snap2 = srv().request("POST", "/v1/snapshots", body=b"").json()
    check(snap2.get("snapshot_id") != snap["snapshot_id"], "two snapshots have the same id")
    eq(get_patient(pid, {"as_of": snap2["snapshot_id"]})["version"], 3, "patient as_of the second snapshot")


# ---------------------------------------------------------------------------------------------
# metrics

METRIC_NAMES = ["medstream_records_total", "medstream_batches_total", "medstream_ingest_bytes_total",
                "medstream_commit_seconds", "medstream_freshness_seconds", "medstream_commit_position",
                "medstream_patients", "medstream_process_disk_write_bytes", "medstream_process_rss_bytes",
                "medstream_process_peak_rss_bytes"]


def get_metrics():
    r = srv().get("/metrics")
    eq(r.status, 200, "GET /metrics status")
    check("text/plain" in r.headers.get("content-type", ""),
          "/metrics content type %r is not Prometheus text" % r.headers.get("content-type"))
    return r.text


@test
def test_metrics_names():
    ingest_created([person()])
    text = get_metrics()
    for name in METRIC_NAMES:
        check(re.search(r"^" + name + r"(\{|_bucket|_sum|_count|\s)", text, re.M),
              "metric %s missing from /metrics" % name)
    for st in ("created", "updated", "duplicate", "rejected"):
        check(re.search(r'^medstream_records_total\{status="%s"\}\s' % st, text, re.M),
              'medstream_records_total{status="%s"} missing' % st)
    for h in ("medstream_commit_seconds", "medstream_freshness_seconds"):
        check(re.search(r"^%s_bucket\{.*le=\"\+Inf\"" % h, text, re.M), "%s is not a histogram" % h)
        check(re.search(r"^%s_count" % h, text, re.M), "%s_count missing" % h)


@test
def test_metrics_counters_follow_ingest():
    def counts():
        text = get_metrics()
        return ({st: metrics_value(text, "medstream_records_total", 'status="%s"' % st) or 0.0
                 for st in ("created", "updated", "duplicate", "rejected")},
                metrics_value(text, "medstream_patients"), metrics_value(text, "medstream_batches_total"),
                metrics_value(text, "medstream_ingest_bytes_total"))
    c0, p0, b0, bytes0 = counts()
    recs = [person(type="lab") for _ in range(5)]
    ingest_created(recs)
    body = H.ndjson([recs[0], dict(recs[1], extra=1), '{"name": "x"}', person(), person()])
    srv().ingest_ok(body)
    c1, p1, b1, bytes1 = counts()
    delta = {k: c1[k] - c0[k] for k in c0}
    eq(delta, {"created": 7, "updated": 1, "duplicate": 1, "rejected": 1}, "records_total deltas")
    check(p0 is not None and p1 is not None, "medstream_patients has no value")
    eq(p1 - p0, 7, "medstream_patients delta (7 new identities)")
    check(b1 is not None and b0 is not None and b1 > b0, "medstream_batches_total did not increase")
    check(bytes1 is not None and bytes0 is not None and bytes1 > bytes0,
          "medstream_ingest_bytes_total did not increase")


# ---------------------------------------------------------------------------------------------
# bad input: one bad line between two good ones; the good ones must be stored

def bad_line_case(bad_line, field_re, secret_tokens=(), s=None, bad_line_no=2):
    """Send good / bad / good; check the rejection and that the good lines are stored."""
    s = s or srv()
    g1, g2 = person(type="visit"), person(type="lab")
    lines = [g1, bad_line, g2] if bad_line_no == 2 else [g1, *bad_line, g2]
    resp = s.ingest(H.ndjson(lines))
    if resp.status != 200:
        fail("expected 200 with a rejected line, got %d: %s" % (resp.status, short(resp.text)))
    ans = resp.json()
    eq(ans.get("errors"), True, "errors flag")
    by = items_by_line(ans)
    last = len(lines)
    check_item(by.get(1), "created", g1["record_id"], 1, "good line 1")
    check_item(by.get(last), "created", g2["record_id"], 1, "good line %d" % last)
    bad_nos = range(2, last)
    for n in bad_nos:
        it = by.get(n)
        check_item(it, "rejected", what="bad line %d" % n)
        err = it.get("error")
        check(isinstance(err, str) and err, "rejected line %d has no error message: %r" % (n, it))
        check(re.search(field_re, err, re.I), "error for line %d does not say %r: %r" % (n, field_re, err))
        for tok in secret_tokens:
            check(tok not in err, "error for line %d echoes PHI %r: %r" % (n, tok, err))
    for tok in secret_tokens:
        check(tok.encode("utf-8") not in resp.body, "ingest answer echoes PHI %r: %s" % (tok, short(resp.text)))
    for g in (g1, g2):
        eq(get_record(g["record_id"], s=s)["fields"], g, "good line stored next to a bad one")
    for n in bad_nos:
        bl = lines[n - 1]
        if isinstance(bl, dict) and isinstance(bl.get("record_id"), str) and bl["record_id"]:
            r = s.get("/v1/records/" + bl["record_id"])
            eq(r.status, 404, "GET of a rejected record")
    return by


def secret_name():
    tok = "Sec" + H.rand_token(10)
    return "Secret %s" % tok, tok


@test
def test_reject_malformed_json_line():
    name, tok = secret_name()
    bad = '{"record_id": "%s", "name": "%s", "dob": "1980-01-01", "x": ' % (rid(), name)
    bad_line_case(bad, r"malformed|json|parse|syntax", [tok])


@test
def test_reject_non_object_lines():
    bad_line_case(["[1,2]", "42", '"just a string"', "null"], r"object", bad_line_no=None)


@test(timeout=60)
def test_a_lone_object_after_blank_lines_is_answered_on_its_own_line():
    """A body whose only record follows blank lines (`medstream import --url` blanks the rows it refused
    itself) was answered, and named, as line 1: the import then stopped on an answer about a line it had not
    sent. Its item is on its own line, and its record id derived from that line."""
    s = H.shared_server("api")
    rec = {"name": "Lone Object", "dob": "1961-06-01", "note": "after blank lines"}
    r = s.ingest("\n\n" + json.dumps(rec) + "\n")
    eq(r.status, 200, "ingest (%s)" % short(r.text))
    items = r.json()["items"]
    eq([(i["line"], i["status"]) for i in items], [(3, "created")], "the item's line and status")
    pretty = "\n" + json.dumps(dict(rec, record_id="lone-pretty"), indent=2) + "\n"
    items = s.ingest_ok(pretty)["items"]
    eq([(i["line"], i["record_id"]) for i in items], [(2, "lone-pretty")], "a pretty-printed object's first line")


@test
def test_reject_a_record_past_the_patients_field_limit():
    """The writer's own rejection (a patient holds at most 4096 distinct fields) is a rejected line as the
    parser's are: errors true, the reason, the batch's good lines stored, the patient as it was."""
    name, tok = secret_name()
    lines = []
    for k in range(4):  # 4,000 distinct fields (a record holds at most 1,024)
        d = person(name=name, dob="1961-02-03")
        d.update({"f%d_%d" % (k, i): i for i in range(1000)})
        lines.append(d)
    ingest_created(lines)
    pid = get_record(lines[0]["record_id"])["patient_id"]
    before = get_patient(pid)["fields"]
    bad = person(name=name, dob="1961-02-03")
    bad.update({"g%d" % i: i for i in range(100)})
    bad_line_case(bad, r"more than 4096 distinct fields", [tok])
    get_record(bad["record_id"], expect=404)
    eq(get_patient(pid)["fields"], before, "the patient's state is the one before the rejected record")


@test
def test_audit_cursor_is_refused_unless_it_is_one():
    """GET /v1/audit?cursor=: a negative number or one past 64 bits is a 400, not the log from its start."""
    s = srv()
    for bad in ("-1", "18446744073709551617", "1x", "", "+5"):
        r = s.get("/v1/audit?" + H.q({"cursor": bad}))
        eq(r.status, 400, "cursor=%r: %s" % (bad, short(r.text)))
        check("not a cursor" in r.text, "cursor=%r: says why: %s" % (bad, short(r.text)))
    eq(s.get("/v1/audit?" + H.q({"cursor": "1", "limit": 1})).status, 200, "a cursor of digits")


@test
def test_reject_missing_name():
    ssn = "078-05-%04d" % random.randrange(10000)
    bad_line_case({"record_id": rid(), "dob": "1980-01-01", "ssn": ssn}, r"\bname\b", [ssn])


@test
def test_reject_empty_name():
    bad_line_case({"record_id": rid(), "name": "", "dob": "1980-01-01"}, r"\bname\b")


@test
def test_reject_name_not_a_string():
    bad_line_case({"record_id": rid(), "name": ["Secret", "Person"], "dob": "1980-01-01"}, r"\bname\b")


@test
def test_reject_missing_dob():
    name, tok = secret_name()
    bad_line_case({"record_id": rid(), "name": name}, r"\bdob\b", [tok])


@test
def test_reject_impossible_dob():
    name, tok = secret_name()
    bad_line_case({"record_id": rid(), "name": name, "dob": "2023-02-30"}, r"\bdob\b", [tok])


@test
def test_reject_dob_wrong_format():
    name, tok = secret_name()
    bad_line_case([{"record_id": rid(), "name": name, "dob": "17/05/1980"},
                   {"record_id": rid(), "name": name, "dob": "1980-5-17"},
                   {"record_id": rid(), "name": name, "dob": "1980-05-17T00:00:00Z"}],
                  r"\bdob\b", [tok], bad_line_no=None)


@test
def test_reject_future_dob():
    name, tok = secret_name()
    future = (datetime.date.today() + datetime.timedelta(days=400)).isoformat()
    bad_line_case({"record_id": rid(), "name": name, "dob": future}, r"\bdob\b", [tok])


@test
def test_reject_dob_not_a_string():
    name, tok = secret_name()
    bad_line_case({"record_id": rid(), "name": name, "dob": 19800101}, r"\bdob\b", [tok])


@test
def test_reject_invalid_utf8():
    name, tok = secret_name()
    bad = ('{"record_id": "%s", "name": "%s' % (rid(), name)).encode() + b"\xff\xfe\xc3\x28" + \
        b'", "dob": "1980-01-01"}'
    bad_line_case(bad, r"utf-?8", [tok])
    bad2 = ('{"record_id": "%s", "name": "%s", "dob": "1980-01-01", "note": "' % (rid(), name)).encode() + \
        b"\xed\xa0\x80 \xc0\xaf" + b'"}'          # an encoded surrogate and an overlong '/'
    bad_line_case(bad2, r"utf-?8", [tok])


@test
def test_reject_ts_not_rfc3339():
    name, tok = secret_name()
    bad_line_case([{"record_id": rid(), "name": name, "dob": "1980-01-01", "ts": "yesterday"},
                   {"record_id": rid(), "name": name, "dob": "1980-01-01", "ts": "2024-13-01T00:00:00Z"},
                   {"record_id": rid(), "name": name, "dob": "1980-01-01", "ts": 1700000000}],
                  r"\bts\b", [tok], bad_line_no=None)


@test
def test_reject_record_too_large():
    s = special_server("maxrecord", ["--max-record", "4096"])
    name, tok = secret_name()
    big = {"record_id": rid(), "name": name, "dob": "1980-01-01", "notes": "x" * 5000}
    bad_line_case(big, r"too large|large|size|exceed|limit|long|big", [tok], s=s)
    fits = person(notes="y" * 3000)
    ans = s.ingest_ok([fits])
    check_item(items_by_line(ans)[1], "created", fits["record_id"], 1, "a 3 KB record under --max-record 4096")
    eq(s.get("/healthz").status, 200, "healthz after an oversized record")


@test
def test_json_array_rejected_items_have_item_numbers():
    name, tok = secret_name()
    g1, g2 = person(), person()
    arr = [g1, 42, {"record_id": rid(), "name": name, "dob": "2023-02-30"}, g2]
    ans = srv().ingest_ok(json.dumps(arr), "application/json")
    by = items_by_line(ans)
    eq(ans.get("errors"), True, "errors flag")
    check_item(by.get(1), "created", g1["record_id"], 1, "array item 1")
    check_item(by.get(2), "rejected", what="array item 2 (42)")
    check(re.search("object", by[2].get("error", ""), re.I), "item 2 error: %r" % by[2].get("error"))
    check_item(by.get(3), "rejected", what="array item 3 (bad dob)")
    check(re.search(r"\bdob\b", by[3].get("error", "")), "item 3 error: %r" % by[3].get("error"))
    check(tok not in by[3]["error"], "item 3 error echoes the name")
    check_item(by.get(4), "created", g2["record_id"], 1, "array item 4")


@test
def test_ndjson_line_numbers_count_blank_lines():
    g1, g2 = person(), person()
    bad = {"record_id": rid(), "name": "Blank Lines " + H.rand_token(), "dob": "2023-02-30"}
    body = H.ndjson([g1]) + b"\n" + H.ndjson([bad, g2])
    by = items_by_line(srv().ingest_ok(body))
    check_item(by.get(1), "created", g1["record_id"], 1, "line 1")
    check_item(by.get(3), "rejected", what="line 3 (after a blank line 2)")
    check_item(by.get(4), "created", g2["record_id"], 1, "line 4")


@test(timeout=120)
def test_bench_measures_a_real_run():
    """`medstream bench` (the tool behind the README's figures) against a real server: every record it sent
    is acknowledged and counted, its probes saw them, its reads answered, and the server agrees."""
    s = srv()
    before = s.get("/metrics").text
    r = subprocess.run([H.BIN, "bench", "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token,
                        "--records", "3000", "--size", "2000", "--batch", "500", "--connections", "2",
                        "--probe-every", "50", "--read-rate", "100", "--run-id", "benchsmoke", "--json"],
                       capture_output=True, text=True, timeout=100)
    eq(r.returncode, 0, "bench exit code (stderr %s)" % short(r.stderr))
    fig = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    eq(fig["records"], 3000, "records in the JSON figures")
    eq(fig["failures"], 0, "failures")
    eq(fig["created"] + fig["updated"] + fig["duplicate"], 3000, "statuses counted for every record")
    eq(fig["batches"], 6, "batches sent")
    check(fig["freshness_samples"] >= 50 and fig["freshness_ms_p99"] is not None, "freshness probes: %s" % fig)
    check(fig["point_reads"] > 0 and fig["point_read_ms_p99"] is not None, "point reads: %s" % fig)
    check(fig["records_per_min"] > 0, "a rate")
    eq(s.get_json("/v1/records/benchsmoke-0000000000").get("record_id"), "benchsmoke-0000000000",
       "the first record the bench sent is in the store")


@test
def test_bench_sends_what_its_generator_writes():
    """Records of 4 KiB or more go out of `medstream bench` as pieces (each one's head, then its text from the
    generator's pool, then the tail): what the server stored is what `medstream gen-import` writes for the same
    options (the same generator, written whole), field for field but "ts" (it counts back from the run's start)."""
    s = srv()
    run_id = "pieces" + H.rand_token(6)
    opts = ["--records", "900", "--size", "6000", "--seed", "23", "--repeat-share", "0.4", "--update-share", "0",
            "--run-id", run_id]
    r = subprocess.run([H.BIN, "bench", "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token, "--batch", "300",
                        "--connections", "2", "--read-rate", "0", "--json"] + opts,
                       capture_output=True, text=True, timeout=100)
    eq(r.returncode, 0, "bench exit code (stderr %s)" % short(r.stderr))
    fig = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    eq((fig["failures"], fig["rejected"], fig["created"] + fig["updated"] + fig["duplicate"]), (0, 0, 900),
       "failures, rejected, and statuses counted for every record")
    path = os.path.join(s.base, "pieces.ndjson")
    g = subprocess.run([H.BIN, "gen-import", path] + opts, capture_output=True, text=True, timeout=60)
    eq(g.returncode, 0, "gen-import exit code (stderr %s)" % short(g.stderr))
    with open(path) as f:
        lines = f.read().splitlines()
    eq(len(lines), 900, "lines gen-import wrote")
    for i in sorted({0, 1, 299, 300, 301, 599, 600, 899} | set(random.Random(5).sample(range(900), 12))):
        want = json.loads(lines[i])
        got = s.get_json("/v1/records/%s-%010d" % (run_id, i))["fields"]
        check(len(want["notes"]) > 4000, "record %d: its text is the most of it" % i)
        eq(sorted(got), sorted(want), "record %d: its field names" % i)
        for k in want:
            if k != "ts" and got[k] != want[k]:
                at = next((j for j, (a, b) in enumerate(zip(str(got[k]), str(want[k]))) if a != b), None)
                fail("record %d: field %s differs (%d against %d characters, first at %s)"
                     % (i, k, len(str(got[k])), len(str(want[k])), at))


@test
def test_garbage_bodies_never_5xx():
    rnd = random.Random(20261122)
    bodies = [rnd.randbytes(rnd.randrange(1, 4000)) for _ in range(24)]
    bodies += [b"[" * 200000, b'{"a":' * 100000, b"\x00" * 1000, b'"' * 5000, b"{" + b" " * 100000,
               b'{"name": "x", "dob": "1980-01-01", "n": 1e99999}',
               b'{"name": "\\ud800", "dob": "1980-01-01"}',
               b'\xef\xbb\xbf{"name": "Bom ' + H.rand_token().encode() + b'", "dob": "1980-01-01"}',
               b'{"name": "x", "name": "y", "dob": "1980-01-01"}',
               b'{"name": "a\\u0000b", "dob": "1980-01-01"}',
               b"[" + b"{}," * 20000 + b"{}]",
               b"\n" * 5000, b"  \t \n \r\n"]
    s = srv()
    for i, body in enumerate(bodies):
        for ct in ("application/x-ndjson", "application/json"):
            try:
                r = s.ingest(body, ct, timeout=20)
            except Exception as e:
                fail("garbage body #%d (%s): no HTTP answer (%s: %s); server alive: %s"
                     % (i, ct, e.__class__.__name__, e, s.alive()))
            what = "garbage body #%d (%s, starts %r)" % (i, ct, body[:20])
            check(r.status in (200, 400), "%s: HTTP %d: %s" % (what, r.status, short(r.text)))
            if r.status == 400:
                expect_error(r, 400, what=what)
            else:
                ans = r.json()
                check(isinstance(ans.get("items"), list), "%s: 200 without items" % what)
                if i < 24:
                    for it in ans["items"]:
                        eq(it.get("status"), "rejected", "%s item status" % what)
                    eq(ans.get("errors"), True if ans["items"] else ans.get("errors"), "%s errors" % what)
            check(s.alive(), "server died after %s" % what)
    eq(s.get("/healthz").status, 200, "healthz after garbage")


@test
def test_content_type_415():
    for ct in ("text/plain", "application/xml", "application/x-www-form-urlencoded", None):
        r = person()
        resp = srv().ingest(H.ndjson([r]), ct)
        expect_error(resp, 415, what="Content-Type %r" % ct)
        eq(srv().get("/v1/records/" + r["record_id"]).status, 404, "record sent with Content-Type %r" % ct)


@test
def test_empty_body_400():
    for ct in ("application/x-ndjson", "application/json"):
        expect_error(srv().ingest(b"", ct), 400, what="empty body (%s)" % ct)


@test
def test_body_over_max_body_413():
    # exactly the documented flag, alone (max-record keeps its default)
    _check_max_body_413(special_server("maxbody", ["--max-body", "100000"]))


@test
def test_body_over_max_body_413_with_max_record():
    # the same with --max-record set below --max-body, in case the server insists on that
    _check_max_body_413(special_server("maxbody2", ["--max-body", "100000", "--max-record", "65536"]))


def _check_max_body_413(s):
    recs = [person(pad="p" * 900) for _ in range(150)]
    body = H.ndjson(recs)
    check(len(body) > 100000, "test body too small")
    r = H.raw_request(s.port, "POST", "/v1/records", s.auth_headers({"Content-Type": "application/x-ndjson"}), body)
    eq(r.status, 413, "POST of %d bytes with --max-body 100000 (%s)" % (len(body), short(r.text)))
    eq(s.get("/v1/records/" + recs[0]["record_id"]).status, 404, "record of a 413 body")
    small = [person(pad="p" * 900) for _ in range(80)]
    sb = H.ndjson(small)
    check(len(sb) < 100000, "small body too big")
    ans = s.ingest_ok(sb)
    eq(ans.get("errors"), False, "errors for a body under the limit")
    eq(len(ans["items"]), 80, "items for a body under the limit")
    eq(s.get("/healthz").status, 200, "healthz after 413")


# ---------------------------------------------------------------------------------------------
# bad requests on the read side, routing

BAD_IDS = ["not-a-uuid", "12345", "0000000-0000-0000-0000-000000000000",
           "gggggggg-gggg-gggg-gggg-gggggggggggg", "%s-extra" % uuid.uuid4()]


@test
def test_bad_patient_id_400():
    for bad in BAD_IDS:
        for path in ("/v1/patients/%s", "/v1/patients/%s/history", "/v1/patients/%s/records",
                     "/v1/public/patients/%s"):
            expect_error(srv().get(path % bad), 400, r"patient|id", what="GET " + path % bad)


@test
def test_unknown_patient_404():
    u = str(uuid.uuid4())
    for path in ("/v1/patients/%s" % u, "/v1/public/patients/%s" % u,
                 "/v1/patients/%s?%s" % (u, q({"as_of": H.now_rfc3339()}))):
        expect_error(srv().get(path), 404, what="GET " + path)


@test
def test_unknown_record_404():
    expect_error(srv().get("/v1/records/" + rid("nosuch")), 404, what="unknown record")
    expect_error(srv().get("/v1/records/%s?%s" % (rid("nosuch"), q({"as_of": H.now_rfc3339()}))), 404,
                 what="unknown record as_of now")


def _a_patient():
    r = person(type="lab")
    return ingest_created([r])[0]["patient_id"], r["record_id"]


@test
def test_bad_as_of_400():
    """(The identity lookup checked as_of and event_at only once it had found the patient: with an unknown identity a
    bad one was a 404, so this test passed only after another had stored a patient "x" born 1980-01-01.)"""
    pid, rec = _a_patient()
    unknown = "/v1/patients?" + q({"name": "Nobody " + H.rand_token(), "dob": "1980-01-01"})
    for bad in ("yesterday", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z", "not a time"):
        for path in ("/v1/patients/%s" % pid, "/v1/records/%s" % rec, "/v1/patients/%s/records" % pid,
                     "/v1/public/patients/%s" % pid, "/v1/public/records?type=lab",
                     "/v1/patients?" + q({"name": "x", "dob": "1980-01-01"}), unknown):
            sep = "&" if "?" in path else "?"
            expect_error(srv().get(path + sep + q({"as_of": bad})), 400, r"as_of",
                         what="GET %s as_of=%r" % (path, bad))
        expect_error(srv().get(unknown + "&" + q({"event_at": bad})), 400, r"event_at",
                     what="GET %s event_at=%r" % (unknown, bad))


@test
def test_times_outside_the_years_1_to_9999_400():
    """A time parameter rolled past 9999 or before the year 1 by its offset was taken: event_at came back as
    "10000-01-01T23:58:59.000000Z" (no RFC 3339 time), as_of and since were used as they were. Such a time is
    a 400 now, as an event time of that kind is a rejected line at ingest; event_at 9999-12-31T23:59:59Z still reads
    (as_of then is a 400: an instant still to come, test_as_of_an_instant_still_to_come_waits_for_it_or_is_refused)."""
    pid, rec = _a_patient()
    for bad in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"):
        for path, param in (("/v1/patients/%s" % pid, "event_at"), ("/v1/patients/%s" % pid, "as_of"),
                            ("/v1/records/%s" % rec, "as_of"), ("/v1/patients/%s/records" % pid, "since"),
                            ("/v1/patients/%s/records" % pid, "until")):
            expect_error(srv().get(path + "?" + q({param: bad})), 400, param, what="GET %s %s=%r" % (path, param, bad))
        r = srv().request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "ndjson", "as_of": bad}),
                          headers={"Content-Type": "application/json"})
        expect_error(r, 400, "as_of", what="a PHI export as_of %r" % bad)
    got = get_patient(pid, {"event_at": "9999-12-31T23:59:59Z"})
    eq(H.parse_time(got["event_at"]), H.parse_time("9999-12-31T23:59:59Z"), "event_at at the last instant")
    check(H.RFC3339_RE.match(got["event_at"]), "event_at is an RFC 3339 time: %r" % got["event_at"])


@test
def test_a_query_parameter_given_twice_400():
    """A named parameter given twice was read as its first: as_of=<before the patient>&as_of=<now> answered 404,
    type=lab&type=visit the labs alone, with nothing to say the second was ignored. It is a 400 now naming the
    parameter; public FIELD=VALUE filters may still repeat (each must hold)."""
    pid, rec = _a_patient()
    now = H.now_rfc3339()
    for path, param, values in (("/v1/patients/%s" % pid, "as_of", ("2000-01-01T00:00:00Z", now)),
                                ("/v1/records/%s" % rec, "as_of", ("2000-01-01T00:00:00Z", now)),
                                ("/v1/patients/%s/records" % pid, "type", ("lab", "visit")),
                                ("/v1/patients/%s" % pid, "event_at", (now, now)),
                                ("/v1/public/records", "limit", ("1", "2"))):
        query = "&".join("%s=%s" % (param, urllib.parse.quote(v)) for v in values)
        expect_error(srv().get(path + "?" + query), 400, param, what="GET %s?%s" % (path, query))
    r = srv().get("/v1/public/records?favorite_color=red&favorite_color=blue")
    eq((r.status, r.json()["records"]), (200, []), "a public filter twice: both must hold")


@test
def test_bad_since_until_400():
    pid, _ = _a_patient()
    for param in ("since", "until"):
        for bad in ("yesterday", "2024-02-30T00:00:00Z"):
            for path in ("/v1/patients/%s/records?" % pid, "/v1/public/records?"):
                expect_error(srv().get(path + q({param: bad})), 400, param, what="%s=%r on %s" % (param, bad, path))


@test
def test_bad_limit_400():
    pid, _ = _a_patient()
    for bad in ("0", "-1", "abc", "1.5"):
        for path in ("/v1/patients/%s/records?" % pid, "/v1/public/records?"):
            expect_error(srv().get(path + q({"limit": bad})), 400, r"limit", what="limit=%r on %s" % (bad, path))
    r = srv().get("/v1/patients/%s/records?limit=5000" % pid)
    check(r.status == 400 or (r.status == 200 and len(r.json()["records"]) <= 1000),
          "limit=5000 (max 1000): HTTP %d" % r.status)


@test
def test_bad_cursor_400():
    pid, _ = _a_patient()
    for path in ("/v1/patients/%s/records?" % pid, "/v1/public/records?"):
        expect_error(srv().get(path + q({"cursor": "!!!not-a-cursor!!!"})), 400, r"cursor",
                     what="bad cursor on %s" % path)


@test
def test_public_cursor_of_another_listing_400():
    """A public records cursor of another listing (another type's, all types' for one type, one type's for all)
    was taken as no cursor: the listing started over, so a client that changed its filter between pages got the
    first page again, silently. It is a 400 now, as a patient's records cursor of another patient is."""
    tok = H.rand_token(6)
    ingest_created([person(type="cur%s%d" % (tok, i % 2)) for i in range(4)])
    listings = [{"type": "cur%s0" % tok}, {"type": "cur%s1" % tok}, {}]
    cursors = [srv().get_json("/v1/public/records?" + q(dict(p, limit=1)))["next_cursor"] for p in listings]
    check(all(cursors), "each listing has a next page: %s" % cursors)
    for i, p in enumerate(listings):
        eq(srv().get("/v1/public/records?" + q(dict(p, limit=1, cursor=cursors[i]))).status, 200,
           "the listing's own cursor %r" % p)
        for j, c in enumerate(cursors):
            if i != j:
                expect_error(srv().get("/v1/public/records?" + q(dict(p, limit=1, cursor=c))), 400, r"cursor",
                             what="listing %r with the cursor of %r" % (p, listings[j]))


@test
def test_unknown_path_404():
    # ("/" is the console's page since issue 14; "/assets/" and a nested asset path are not routes)
    for path in ("/index.html", "/assets/", "/assets/a/b.js", "/v1", "/v1/nothing", "/v2/records", "/healthz/extra",
                 "/v1/patients/%s/nothing" % uuid.uuid4(), "/v1/public/nothing"):
        r = srv().get(path)
        eq(r.status, 404, "GET %s (%s)" % (path, short(r.text)))


@test
def test_wrong_method_405():
    u = str(uuid.uuid4())
    for method, path in (("GET", "/v1/records"), ("PUT", "/v1/records"), ("PUT", "/v1/records/x1"),
                         ("PUT", "/v1/patients/%s" % u), ("PATCH", "/v1/patients/%s" % u),
                         ("POST", "/v1/patients/%s/history" % u), ("POST", "/healthz"), ("POST", "/metrics"),
                         ("GET", "/v1/snapshots"), ("POST", "/v1/public/records"),
                         ("POST", "/v1/public/patients/%s" % u)):
        hdrs = {"Content-Type": "application/json"} if method in ("POST", "PUT") else None
        r = srv().request(method, path, body=b"{}" if hdrs else None, headers=hdrs)
        expect_error(r, 405, what="%s %s" % (method, path))


# must stay the last test of the file
@test
def test_zz_server_stayed_up():
    s = srv()
    eq(s.get("/healthz").status, 200, "GET /healthz after all the bad input")
    check(not s.unexpected_exits, "the shared server died during the run (exit codes %r); log %s"
          % (s.unexpected_exits, s.log_path))
    for key in ("maxrecord", "maxbody", "maxbody2"):
        sp = H.shared_servers.get(key)
        if sp is not None:
            check(sp.alive(), "the %s server died" % key)


if __name__ == "__main__":
    H.main()

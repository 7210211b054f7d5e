# End-to-end tests of issue 9's trust fixes over real HTTP: corrections that correct (a new version of a
# record needs records:update; a record that moves to another patient or is deleted leaves the old
# patient's state, history keeps it; DELETE /v1/records/{id} is a tombstone), bitemporal patient state
# (records merge by event time, event_at reads), audit without gaps (denied attempts audited, a new
# version sent without records:update among them, a failed login never records a non-user name, GET
# /v1/audit reads its own writes, PHI reads and PHI export downloads refused with 503 while the audit log
# cannot be written on a full disk, every served read audited once space is back), and public reads that
# take as_of only as a snapshot id.
#
# Run: /usr/bin/python3 tests/e2e/test_trust.py

import json
import os
import subprocess
import time

import harness as H
from harness import check, eq, short, test

_server = None
_n = [0]


def srv():
    global _server
    if _server is None:
        _server = H.Server(name="trust")
        _server.start()
        for role in ("ingest", "clinician", "analyst", "auditor"):
            add_user(_server, "t-" + role, role)
    return _server


def add_user(s, user, role):
    r = s.request("POST", "/v1/users", body=json.dumps({"user": user, "password": "pw-" + user + "-123",
                                                         "role": role}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "creating %s: %s" % (user, short(r.text)))


def token(s, user):
    return s.token_for(user, "pw-" + user + "-123")


def as_user(s, user, method, path, body=None, ctype=None, tok=None):
    h = {"Authorization": "Bearer " + (tok or token(s, user))}
    if ctype:
        h["Content-Type"] = ctype
    return s.request(method, path, body=body, headers=h)


def rid(tag="t"):
    _n[0] += 1
    return "%s-%s-%d" % (tag, H.rand_token(6), _n[0])


def ingest(s, recs, user=None, tok=None):
    body = H.ndjson(recs)
    if user is None and tok is None:
        r = s.ingest(body)
    else:
        r = as_user(s, user, "POST", "/v1/records", body, "application/x-ndjson", tok=tok)
    eq(r.status, 200, "ingest: %s" % short(r.text))
    return r.json()["items"]


def patient(s, pid, **params):
    path = "/v1/patients/" + pid + (("?" + H.q(params)) if params else "")
    return s.get_json(path)


# ---- corrections ----------------------------------------------------------------------------------

@test
def test_ingest_role_cannot_overwrite_a_record():
    s = srv()
    name = "Overwrite " + H.rand_token()
    r1 = {"record_id": rid(), "name": name, "dob": "1980-02-02", "allergy": "nuts"}
    pid = ingest(s, [r1])[0]["patient_id"]
    tok = token(s, "t-ingest")
    r1b = dict(r1, name="Someone Else " + H.rand_token(), allergy="none")   # would move it and overwrite
    r2 = {"record_id": rid(), "name": name, "dob": "1980-02-02", "weight": 70}
    items = ingest(s, [r1b, dict(r1), r2], tok=tok)
    eq(items[0]["status"], "rejected", "a new version sent by the ingest role")
    eq(items[0]["error"], "line 1: record %s exists; a new version needs records:update" % r1["record_id"],
       "the rejection's message")
    eq(items[1]["status"], "duplicate", "the same content again")
    eq(items[2]["status"], "created", "a new record of the same batch")
    rec = s.get_json("/v1/records/" + r1["record_id"])
    eq((rec["version"], rec["patient_id"], rec["fields"]["allergy"]), (1, pid, "nuts"), "record r1 untouched")
    # a clinician (records:update) may
    items = ingest(s, [r1b], tok=token(s, "t-clinician"))
    eq(items[0]["status"], "updated", "the same line from a clinician")


@test
def test_misfiled_record_moves_and_leaves_the_old_patient():
    s = srv()
    aisha, liam = "Aisha " + H.rand_token(), "Liam " + H.rand_token()
    lab = {"record_id": rid("lab"), "name": aisha, "dob": "1991-01-01", "type": "lab",
           "ts": "2026-01-02T00:00:00Z", "hiv_status": "positive"}
    adm = {"record_id": rid("adm"), "name": aisha, "dob": "1991-01-01", "type": "visit",
           "ts": "2026-01-01T00:00:00Z", "phone": "555-1000"}
    a_pid = ingest(s, [lab, adm])[0]["patient_id"]
    before = patient(s, a_pid)
    eq(before["fields"].get("hiv_status"), "positive", "Aisha's state before the correction")
    t_before = H.now_rfc3339()
    time.sleep(0.01)
    moved = dict(lab, name=liam, dob="1988-08-08")
    it = ingest(s, [moved])[0]
    eq((it["status"], it["version"]), ("updated", 2), "the corrected record")
    l_pid = it["patient_id"]
    check(l_pid != a_pid, "the record moved to another patient")
    after = patient(s, a_pid)
    check("hiv_status" not in after["fields"], "hiv_status left Aisha's state: %s" % after["fields"])
    eq(after["fields"].get("phone"), "555-1000", "Aisha keeps what her other record says")
    eq(after["version"], before["version"] + 1, "a new version of Aisha")
    eq(patient(s, a_pid, as_of=t_before)["fields"].get("hiv_status"), "positive",
       "history keeps what was true before")
    eq(patient(s, l_pid)["fields"].get("hiv_status"), "positive", "Liam has it")
    recs = s.get_json("/v1/patients/%s/records" % a_pid)["records"]
    eq([r["record_id"] for r in recs], [adm["record_id"]], "Aisha's records now")


@test
def test_delete_record():
    s = srv()
    name = "Delete " + H.rand_token()
    keep = {"record_id": rid(), "name": name, "dob": "1970-07-07", "type": "visit", "ts": "2025-01-01T00:00:00Z",
            "favorite_color": "blue"}
    gone = {"record_id": rid(), "name": name, "dob": "1970-07-07", "type": "lab", "ts": "2026-01-01T00:00:00Z",
            "favorite_color": "red", "diagnosis": "flu"}
    pid = ingest(s, [keep, gone])[0]["patient_id"]
    eq(s.get_json("/v1/public/patients/" + pid)["fields"], {"favorite_color": "red"}, "public state before")
    t_before = H.now_rfc3339()
    time.sleep(0.01)
    # roles without records:delete are refused
    r = as_user(s, "t-clinician", "DELETE", "/v1/records/" + gone["record_id"])
    eq(r.status, 403, "clinician deleting: %s" % short(r.text))
    r = s.request("DELETE", "/v1/records/" + gone["record_id"])
    eq(r.status, 200, "DELETE: %s" % short(r.text))
    d = r.json()
    eq((d["record_id"], d["patient_id"], d["version"], d["deleted"]), (gone["record_id"], pid, 2, True),
       "the tombstone version")
    H.parse_time(d["valid_from"])
    eq(s.get("/v1/records/" + gone["record_id"]).status, 404, "a deleted record reads 404")
    old = s.get_json("/v1/records/%s?%s" % (gone["record_id"], H.q({"as_of": t_before})))
    eq((old["version"], old["fields"]["diagnosis"]), (1, "flu"), "its old version as of before the deletion")
    p = patient(s, pid)
    check("diagnosis" not in p["fields"], "the deleted record's values left the state: %s" % p["fields"])
    eq(p["fields"]["favorite_color"], "blue", "the remaining record's value")
    eq(s.get_json("/v1/public/patients/" + pid)["fields"], {"favorite_color": "blue"}, "public state after")
    pub = s.get_json("/v1/public/records?" + H.q({"patient_id": pid}))["records"]
    eq([x["record_id"] for x in pub], [keep["record_id"]], "public records after the deletion")
    recs = s.get_json("/v1/patients/%s/records" % pid)["records"]
    eq([x["record_id"] for x in recs], [keep["record_id"]], "patient records after the deletion")
    eq(s.request("DELETE", "/v1/records/" + gone["record_id"]).status, 404, "deleting twice")
    eq(s.request("DELETE", "/v1/records/" + rid("never")).status, 404, "deleting what never existed")
    acts = [(e["action"], e["outcome"]) for e in s.audit_entries(patient_id=pid)]
    check(("records:delete", "ok") in acts, "the deletion is audited: %s" % acts)


# ---- bitemporal patient state ---------------------------------------------------------------------

@test
def test_late_old_record_fills_but_never_overrides():
    s = srv()
    name = "Bitemporal " + H.rand_token()
    now = {"record_id": rid(), "name": name, "dob": "1960-06-06", "ts": "2026-03-01T00:00:00Z",
           "address": "1 New Street", "phone": "555-2026"}
    pid = ingest(s, [now])[0]["patient_id"]
    old = {"record_id": rid(), "name": name, "dob": "1960-06-06", "ts": "2019-05-01T00:00:00Z",
           "address": "9 Old Road", "phone": "555-2019", "blood_type": "A+"}
    ingest(s, [old])
    f = patient(s, pid)["fields"]
    eq((f["address"], f["phone"], f["blood_type"]), ("1 New Street", "555-2026", "A+"),
       "a 2019 admission loaded later fills what is missing, overrides nothing")
    # event_at: the state from the records about the past only
    p = patient(s, pid, event_at="2020-01-01T00:00:00Z")
    eq((p["fields"]["address"], p["fields"]["phone"]), ("9 Old Road", "555-2019"), "state at event time 2020")
    eq(p["event_at"], "2020-01-01T00:00:00.000000Z", "event_at echoed")
    eq(patient(s, pid, event_at="2010-01-01T00:00:00Z")["fields"], {}, "nothing was known about 2010")
    # event_at combines with as_of: what was known then about the past
    t_known = H.now_rfc3339()
    time.sleep(0.01)
    ingest(s, [{"record_id": rid(), "name": name, "dob": "1960-06-06", "ts": "2019-12-01T00:00:00Z",
                "phone": "555-2019b"}])
    eq(patient(s, pid, event_at="2020-01-01T00:00:00Z")["fields"]["phone"], "555-2019b", "now, about 2020")
    eq(patient(s, pid, event_at="2020-01-01T00:00:00Z", as_of=t_known)["fields"]["phone"], "555-2019",
       "as known before the third record, about 2020")
    eq(patient(s, pid)["fields"]["phone"], "555-2026", "the current state still")
    r = s.get("/v1/patients/%s?event_at=yesterday" % pid)
    eq(r.status, 400, "a bad event_at")


@test
def test_arrival_order_does_not_matter():
    s = srv()
    recs = [{"record_id": rid(), "dob": "1950-01-01", "ts": "20%02d-01-01T00:00:00Z" % (10 + k), "v": k,
             "only_%d" % k: True, "shared": "from %d" % k} for k in range(4)]
    tag = H.rand_token()
    a = [dict(r, name="Order A " + tag) for r in recs]
    b = [dict(r, name="Order B " + tag, record_id=r["record_id"] + "b") for r in recs]
    pa = None
    for r in a:                      # in event-time order
        pa = ingest(s, [r])[0]["patient_id"]
    pb = None
    for r in reversed(b):            # newest first
        pb = ingest(s, [r])[0]["patient_id"]
    fa, fb = patient(s, pa)["fields"], patient(s, pb)["fields"]
    del fa["name"], fb["name"]
    eq(fa, fb, "the same records in opposite arrival orders give the same state")
    eq(fa["v"], 3, "the value of the latest event")


# ---- audit ----------------------------------------------------------------------------------------

@test
def test_denied_attempts_are_audited():
    s = srv()
    pid = ingest(s, [{"record_id": rid(), "name": "Denied " + H.rand_token(), "dob": "1944-04-04"}])[0]["patient_id"]
    r = as_user(s, "t-analyst", "GET", "/v1/patients/" + pid)
    eq(r.status, 403, "analyst reading PHI")
    check(any(e["user"] == "t-analyst" and e["action"] == "patients:read" and e["outcome"] == "denied"
              and e["resource"] == "/v1/patients/" + pid for e in s.audit_entries()), "the 403 is audited")
    short_lived = H.Server(name="ttl", extra_args=["--token-ttl", "1"])
    short_lived.start()
    add_user(short_lived, "t-ingest", "ingest")
    tok = token(short_lived, "t-ingest")
    time.sleep(1.5)
    r = as_user(short_lived, "t-ingest", "POST", "/v1/records", b"{}", "application/x-ndjson", tok=tok)
    eq(r.status, 401, "an expired token")
    short_lived.login()
    check(any(e["user"] == "t-ingest" and e["action"] == "records:create" and e["outcome"] == "denied"
              for e in short_lived.audit_entries()), "the 401 of a known user is audited")
    short_lived.stop()


@test
def test_a_new_version_without_records_update_is_audited_as_denied():
    """An overwrite refused to the ingest role is a denied attempt on the record's patient, not an "ok" batch."""
    s = srv()
    add_user(s, "t-ingest-2", "ingest")   # entries of this test's own
    rec = {"record_id": rid(), "name": "Overwrite Audit " + H.rand_token(), "dob": "1955-05-05", "note": "a"}
    pid = ingest(s, [rec])[0]["patient_id"]
    tok = token(s, "t-ingest-2")
    eq([i["status"] for i in ingest(s, [dict(rec, note="b")], tok=tok)], ["rejected"], "the overwrite alone")
    other = {"record_id": rid(), "name": "Overwrite Audit Other " + H.rand_token(), "dob": "1956-06-06"}
    items = ingest(s, [dict(rec, note="c"), other], tok=tok)
    eq([i["status"] for i in items], ["rejected", "created"], "the overwrite beside a new record")
    check("patient_id" not in items[0], "the refused line does not answer the patient: %s" % items[0])
    got = [(e["action"], e["outcome"], e["patient_ids"]) for e in s.audit_entries(user="t-ingest-2")
           if e["action"].startswith("records:")]
    eq(got, [("records:update", "denied", [pid]),
             ("records:create", "ok", [items[1]["patient_id"]]), ("records:update", "denied", [pid])],
       "the entries of the two batches")


@test
def test_failed_login_never_records_a_non_user_name():
    s = srv()
    secret = "Correct-Horse-" + H.rand_token()
    for user in (secret, "t-auditor"):
        r = s.request("POST", "/v1/auth/token", body=json.dumps({"user": user, "password": "wrong-password"}),
                      headers={"Content-Type": "application/json"})
        eq(r.status, 401, "bad login")
    text = s.get("/v1/audit?limit=1000").text
    check(secret not in text, "a password typed into the user field is not in the audit log")
    logins = [e for e in s.audit_entries() if e["action"] == "auth:login" and e["outcome"] == "denied"]
    check(any(e["user"] == "(unknown user)" for e in logins), "the unknown name is recorded as such")
    check(any(e["user"] == "t-auditor" for e in logins), "a real user's failed login names the user")


@test
def test_audit_reads_its_own_writes():
    s = srv()
    pid = ingest(s, [{"record_id": rid(), "name": "RYW " + H.rand_token(), "dob": "1933-03-03"}])[0]["patient_id"]
    for i in range(40):
        eq(s.get("/v1/patients/" + pid).status, 200, "read")
        n = len(s.audit_entries(patient_id=pid))
        eq(n, i + 2, "entries for the patient right after read %d (ingest + reads)" % (i + 1))


@test
def test_audit_filters_by_action_and_time():
    s = srv()
    pid = ingest(s, [{"record_id": rid(), "name": "Filter " + H.rand_token(), "dob": "1944-04-04"}])[0]["patient_id"]
    t0 = H.now_rfc3339()
    time.sleep(0.01)
    eq(s.get("/v1/patients/" + pid).status, 200, "read")
    time.sleep(0.01)
    t1 = H.now_rfc3339()
    eq(s.get("/v1/patients/%s/history" % pid).status, 200, "history")
    every = s.audit_entries(patient_id=pid)
    check(len({e["action"] for e in every}) >= 2, "more than one action for the patient: %s" % every)
    reads = s.audit_entries(patient_id=pid, action="patients:read")
    eq([e["action"] for e in reads], ["patients:read"] * len(reads), "action=patients:read keeps only those")
    eq(len(reads), sum(e["action"] == "patients:read" for e in every), "and all of them")
    between = s.audit_entries(patient_id=pid, since=t0, until=t1)
    eq([e["resource"] for e in between], ["/v1/patients/" + pid], "since/until keep the one read between them")
    eq(s.get("/v1/audit?" + H.q({"until": "yesterday"})).status, 400, "a bad until")


# ---- privacy --------------------------------------------------------------------------------------

@test
def test_public_reads_take_only_snapshots():
    s = srv()
    pid = ingest(s, [{"record_id": rid(), "name": "Bisect " + H.rand_token(), "dob": "1977-07-07",
                      "favorite_color": "red"}])[0]["patient_id"]
    tok = token(s, "t-analyst")
    for path in ("/v1/public/records?patient_id=%s&" % pid, "/v1/public/patients/%s?" % pid):
        r = as_user(s, None, "GET", path + H.q({"as_of": H.now_rfc3339()}), tok=tok)
        eq(r.status, 400, "public read as_of a time")
        check("snapshot" in r.json()["error"], "the error says to take a snapshot: %s" % r.text)
    snap = as_user(s, None, "POST", "/v1/snapshots", tok=tok).json()["snapshot_id"]
    r = as_user(s, None, "GET", "/v1/public/patients/%s?%s" % (pid, H.q({"as_of": snap})), tok=tok)
    eq((r.status, r.json().get("fields")), (200, {"favorite_color": "red"}), "public read as_of a snapshot")


# ---- audit without gaps on a full disk ---------------------------------------------------------------

FS_BYTES = 96 << 20


@test(timeout=150)
def test_phi_reads_refused_while_audit_cannot_be_written():
    if os.geteuid() != 0 or os.environ.get("MEDSTREAM_E2E_NO_MOUNT"):
        raise H.Skip("needs root to mount a small tmpfs for the data directory")
    s = H.Server(name="auditfull", extra_args=["--segment-size", "8MiB", "--max-body", "2MiB", "--body-cache", "0"])
    os.makedirs(s.data_dir, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % FS_BYTES, "tmpfs", s.data_dir]).returncode != 0:
        raise H.Skip("cannot mount a tmpfs")
    H.on_exit(lambda: subprocess.run(["umount", "-l", s.data_dir], stderr=subprocess.DEVNULL))
    s.start()
    pid = s.ingest_ok([{"record_id": "af-0", "name": "Audit Full", "dob": "1960-01-01"}])["items"][0]["patient_id"]
    # a PHI export made before: its download is a PHI read too
    r = s.request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "ndjson"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 202, "a PHI export: %s" % short(r.text))
    eid = r.json()["export_id"]
    for _ in range(600):
        if s.get_json("/v1/exports/" + eid)["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    eq(s.get_json("/v1/exports/" + eid)["state"], "done", "the PHI export")
    # fill the file system to the last byte with a filler file
    filler = os.path.join(s.data_dir, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    for chunk in (1 << 20, 4096):
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
    os.close(fd)
    served = 0
    refused = 0
    deadline = time.time() + 20
    # batches fail now; reads go on until the writer has failed a commit, then are refused
    while time.time() < deadline and refused == 0:
        r = s.ingest([{"record_id": "af-%d" % i, "name": "Audit Full", "dob": "1960-01-01", "pad": "x" * 50000}
                      for i in range(1, 10)])
        check(r.status in (200, 503), "ingest on a full disk: %s" % short(r.text))
        g = s.get("/v1/patients/" + pid)
        if g.status == 200:
            served += 1
        else:
            eq(g.status, 503, "PHI read while the audit log cannot be written: %s" % short(g.text))
            check("audit" in g.json()["error"], "the 503 says why: %s" % g.text)
            refused += 1
    check(refused > 0, "PHI reads were never refused on a full disk (%d served)" % served)
    h = s.get_json("/healthz")
    eq(h.get("status"), "degraded", "healthz while the store cannot commit: %s" % h)
    check("store" in h, "healthz names the store: %s" % h)
    for _ in range(5):
        eq(s.get("/v1/patients/" + pid).status, 503, "PHI reads stay refused")
    eq(s.get("/v1/public/patients/" + pid).status, 200, "public reads are not audited: still served")
    r = H.http_request(s.port, "GET", s.get_json("/v1/exports/" + eid)["download"])
    eq(r.status, 503, "a PHI export's download while its audit entry cannot be stored: %s" % short(r.text))
    os.unlink(filler)                                   # space is back: the writer's retry commits
    deadline = time.time() + 10
    while time.time() < deadline and s.get("/v1/patients/" + pid).status != 200:
        time.sleep(0.2)
    eq(s.get("/v1/patients/" + pid).status, 200, "PHI reads served again once space is back")
    served += 2
    reads = [e for e in s.audit_entries(patient_id=pid) if e["action"] == "patients:read" and e["outcome"] == "ok"]
    check(len(reads) >= served, "every served PHI read is in the audit log (%d entries, %d served)"
          % (len(reads), served))
    eq(s.get_json("/healthz").get("status"), "ok", "healthz once space is back")
    eq(H.http_request(s.port, "GET", s.get_json("/v1/exports/" + eid)["download"]).status, 200,
       "the PHI export's download once space is back")
    s.stop()
    rc = subprocess.run([H.BIN, "audit", "verify", "--data", s.data_dir], capture_output=True, text=True)
    eq(rc.returncode, 0, "audit verify after the full disk: %s" % rc.stdout + rc.stderr)
    subprocess.run(["umount", s.data_dir], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    H.main()

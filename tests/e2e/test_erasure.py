# End-to-end tests of erasure (issue 15, DESIGN.md "Erasure"): encryption at rest under per-patient data
# keys, and DELETE /v1/patients/{id}: the answer is a certificate; the patient's reads answer 410 (PHI and
# public), its identity finds nothing and comes back as a new patient; the request again is idempotent;
# the audit chain keeps the erasure (with its reason, without PHI) and still verifies; no file of the data
# directory holds the patient's distinctive strings or its wrapped key, while the other patient stays
# readable; a copy of the data directory taken BEFORE the erasure (a backup), opened with the key file
# after it, cannot read the erased patient but reads the other; the server's exports made before are
# withdrawn (their files in DATA/exports held PHI in the clear); an erasure during a re-projection under a
# new schema leaves no copy under either version; erasures committed in one group all take effect;
# `medstream erase` offline; bad requests.
#
# Run: /usr/bin/python3 tests/e2e/test_erasure.py [NAME_SUBSTRING...]

import json
import os
import shutil
import subprocess
import threading
import time

import harness as H
from harness import check, eq, fail, short, test

ERASE_NAME, ERASE_DOB = "Zebulon Quuxley-Marchetti", "1961-07-14"
KEEP_NAME, KEEP_DOB = "Philippa Ostrander-Vale", "1978-03-09"
SECRET_NOTE = "xyzzy-plugh-4172 allergic to penicillamine"
KEEP_NOTE = "frobozz-9931 stable"


def records(tag):
    """Three records of the patient to erase (one with two versions) and one of the patient to keep."""
    return [
        {"record_id": "er-%s-1" % tag, "name": ERASE_NAME, "dob": ERASE_DOB, "type": "visit",
         "ts": "2026-01-02T10:00:00Z", "notes": SECRET_NOTE, "favorite_color": "vermilion"},
        {"record_id": "er-%s-2" % tag, "name": ERASE_NAME, "dob": ERASE_DOB, "type": "lab",
         "ts": "2026-01-03T10:00:00Z", "result": "quuxley-lab-7781"},
        {"record_id": "er-%s-3" % tag, "name": ERASE_NAME, "dob": ERASE_DOB, "type": "lab",
         "ts": "2026-01-04T10:00:00Z", "phone": "+1-555-0199-4417"},
        {"record_id": "kp-%s-1" % tag, "name": KEEP_NAME, "dob": KEEP_DOB, "type": "visit",
         "ts": "2026-01-05T10:00:00Z", "notes": KEEP_NOTE},
    ]


# PHI of the patient to erase (its identity and fields that are not on the public allow-list). Its
# favorite_color ("vermilion") is public (the default schema allow-lists it): the public copy holds it in
# the clear by design, which the first test uses to show that the scan does see LMDB's bytes.
DISTINCTIVE = [b"Zebulon", b"zebulon", b"Quuxley", b"quuxley", b"xyzzy-plugh-4172", b"penicillamine",
               b"quuxley-lab-7781", b"555-0199-4417"]


def files_holding(data_dir, needles):
    """{needle: [files holding it]} over every file of the data directory (LMDB with its free pages,
    segment files, the key file, everything)."""
    found = {}
    for root, _dirs, names in os.walk(data_dir):
        for n in names:
            path = os.path.join(root, n)
            try:
                with open(path, "rb") as f:
                    blob = f.read()
            except OSError:
                continue
            for needle in needles:
                if needle in blob:
                    found.setdefault(needle, []).append(os.path.relpath(path, data_dir))
    return found


def ingest_two(s, tag):
    a = s.ingest_ok(records(tag))
    eq(a["errors"], 0, "errors")
    pid = a["items"][0]["patient_id"]
    keep = a["items"][3]["patient_id"]
    check(pid != keep, "two patients")
    # a second version of the first record (same patient)
    r = dict(records(tag)[0], notes=SECRET_NOTE + " (amended)")
    eq(s.ingest_ok([r])["items"][0]["status"], "updated", "second version")
    return pid, keep


def erase(s, pid, reason="patient request under GDPR art. 17", expect=200, headers=None):
    r = s.request("DELETE", "/v1/patients/" + pid, body=json.dumps({"reason": reason}),
                  headers=dict(headers or {}, **{"Content-Type": "application/json"}))
    if r.status != expect:
        fail("DELETE /v1/patients/%s: expected %d, got %d: %s" % (pid, expect, r.status, short(r.text)))
    return r.json()


def medstream(*args, timeout=120):
    return subprocess.run([H.BIN] + list(args), capture_output=True, text=True, timeout=timeout)


@test
def test_bodies_are_encrypted_at_rest():
    s = H.Server(name="erase-rest")
    s.start()
    s.login()
    pid, _keep = ingest_two(s, "rest")
    # readable through the API ...
    st = s.get_json("/v1/patients/" + pid)
    eq(json.loads(json.dumps(st["fields"]))["notes"], SECRET_NOTE + " (amended)", "the state reads back")
    rec = s.get_json("/v1/records/er-rest-2")
    eq(rec["fields"]["result"], "quuxley-lab-7781", "a record reads back")
    # ... but no file holds a byte of it in the clear (bodies and identities are sealed)
    s.stop()
    found = files_holding(s.data_dir, DISTINCTIVE + [KEEP_NOTE.encode(), b"ostrander", b"vermilion"])
    eq(found, {b"vermilion": ["lmdb/data.mdb"]}, "plaintext in the data directory (only the public value)")
    check(os.path.getsize(os.path.join(s.data_dir, "keys")) >= 64 * 3, "a key file with two patients' slots")


@test
def test_erase_answers_certificate_then_410_and_leaves_nothing():
    s = H.Server(name="erase")
    s.start()
    s.login()
    pid, keep = ingest_two(s, "e1")
    with open(os.path.join(s.data_dir, "keys"), "rb") as f:
        keys_before = f.read()
    # a PHI export held by the server (DATA/exports, in the clear): the erasure withdraws it
    r = s.request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "ndjson"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 202, "export: %s" % short(r.text))
    xid = r.json()["export_id"]
    for _ in range(300):
        st = s.get_json("/v1/exports/" + xid)
        if st["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    eq(st["state"], "done", "the export finished: %s" % st)
    check(files_holding(os.path.join(s.data_dir, "exports"), [b"xyzzy-plugh-4172"]), "the export holds the PHI")
    cert = erase(s, pid)
    eq(cert["exports_withdrawn"], 1, "exports withdrawn")
    st = s.get_json("/v1/exports/" + xid)
    eq(st["state"], "failed", "the export after the erasure")
    check("withdrawn" in (st.get("error") or ""), "says withdrawn: %s" % st)
    eq(cert["patient_id"], pid, "certificate names the patient")
    eq(cert["erased_by"], "admin", "who")
    eq(cert["reason"], "patient request under GDPR art. 17", "reason")
    eq(cert["already_erased"], False, "first erasure")
    eq(cert["records"], 3, "records of the patient")
    eq(cert["record_versions"], 4, "record versions erased (one record had two)")
    check(cert["patient_versions"] >= 3, "patient versions deleted: %s" % cert)
    stores = {x["store"]: x["status"] for x in cert["stores"]}
    eq(stores, {"phi": "done", "identity_index": "done", "public": "done", "data_key": "done"}, "stores")
    check("erased_at" in cert and isinstance(cert["sinks"], list), "certificate shape: %s" % cert)
    # reads of the patient: 410, PHI and public
    for path in ("/v1/patients/" + pid, "/v1/patients/%s/history" % pid, "/v1/patients/%s/records" % pid,
                 "/v1/public/patients/" + pid, "/v1/public/records?patient_id=" + pid):
        r = s.get(path)
        eq(r.status, 410, "GET %s" % path)
        check("erased" in r.text, "410 says erased: %s" % short(r.text))
        # PHI reads say when; a public one must not (the erasure's commit time, to the microsecond, is finer than
        # anything public: DESIGN.md "Public store")
        when = cert["erased_at"][:19]
        check((when in r.text) == (not path.startswith("/v1/public/")), "%s: the erasure's time: %s" % (path, r.text))
    # its records are gone (deleted), the other patient's stay
    eq(s.get("/v1/records/er-e1-1").status, 404, "an erased record")
    eq(s.get_json("/v1/records/kp-e1-1")["fields"]["notes"], KEEP_NOTE, "the other patient's record")
    eq(s.get_json("/v1/patients/" + keep)["fields"]["notes"], KEEP_NOTE, "the other patient")
    pub = [x["record_id"] for x in s.get_all("/v1/public/records", "records")]
    check(not any(r.startswith("er-e1") for r in pub), "public records of the erased patient: %s" % pub)
    # the identity finds nothing; the certificate stands; the request again is a no-op
    eq(s.get("/v1/patients?" + H.q({"name": ERASE_NAME, "dob": ERASE_DOB})).status, 404, "lookup by identity")
    again = erase(s, pid, reason="retry of the same request")
    eq(again["already_erased"], True, "idempotent")
    eq(again["erased_at"], cert["erased_at"], "the first erasure's time")
    eq(s.get_json("/v1/patients/%s/erasure" % pid)["patient_id"], pid, "GET the certificate")
    # audited, with the reason and without PHI; the chain verifies
    entries = s.audit_entries(action="patients:delete")
    eq(len(entries), 2, "two erasure requests audited")
    eq(entries[0]["patient_ids"], [pid], "the erasure names the patient")
    eq(entries[0]["reason"], "patient request under GDPR art. 17", "the reason")
    check(not any(n.decode() in json.dumps(entries) for n in DISTINCTIVE), "no PHI in the audit entries")
    v = s.get_json("/v1/audit/verify")
    check(v.get("intact") is True or v.get("ok") is True, "audit verify: %s" % v)
    # the same identity ingested later is a new patient
    a = s.ingest_ok([dict(records("e1b")[0])])
    check(a["items"][0]["patient_id"] not in (pid, keep), "a new patient for the same identity")
    # on disk: one slot of the key file overwritten with the erasure's mark alone (no key, no identity hash),
    # its old bytes nowhere; no distinctive string anywhere
    s.stop()
    with open(os.path.join(s.data_dir, "keys"), "rb") as f:
        keys_after = f.read()
    erased_mark = b"\0E" + b"\0" * 62
    zeroed = [i for i in range(64, min(len(keys_before), len(keys_after)), 64)
              if keys_before[i:i + 64] != erased_mark and keys_after[i:i + 64] == erased_mark]
    eq(len(zeroed), 1, "key slots overwritten with the erasure's mark")
    old_slot = keys_before[zeroed[0] + 8:zeroed[0] + 56]
    found = files_holding(s.data_dir, DISTINCTIVE + [old_slot])
    eq(found, {}, "traces of the erased patient in the data directory")
    r = medstream("audit", "verify", "--data", s.data_dir)
    eq(r.returncode, 0, "medstream audit verify: %s %s" % (r.stdout, r.stderr))


@test
def test_a_copy_from_before_cannot_read_the_erased_patient():
    s = H.Server(name="erase-copy")
    s.start()
    s.login()
    pid, keep = ingest_two(s, "cp")
    s.stop()
    old = os.path.join(s.base, "before")
    shutil.copytree(s.data_dir, old)          # a backup taken before the erasure
    s.start()
    s.login()
    erase(s, pid, reason="erase, then look at an old copy")
    s.stop()
    # the old copy with today's key file: every byte of the patient is still in it, but its key is not
    shutil.copy(os.path.join(s.data_dir, "keys"), os.path.join(old, "keys"))
    c = H.Server(name="erase-copy-old")
    shutil.rmtree(c.data_dir, ignore_errors=True)
    shutil.copytree(old, c.data_dir)
    c.initialized = True
    c.start()
    with open(os.path.join(s.data_dir, "admin.password")) as f:
        c.token = c.token_for("admin", f.read().strip())
    eq(c.get_json("/v1/patients/" + keep)["fields"]["notes"], KEEP_NOTE, "the other patient reads from the copy")
    r = c.get("/v1/patients/" + pid)
    check(r.status >= 400, "the erased patient cannot be read from the old copy: %d %s" % (r.status, short(r.text)))
    check(SECRET_NOTE not in r.text, "no PHI in the refusal")
    r = c.get("/v1/records/er-cp-2")
    check(r.status >= 400 and "quuxley" not in r.text, "an erased record from the old copy: %d %s" %
          (r.status, short(r.text)))
    c.stop()


@test(timeout=200)
def test_erase_during_a_reprojection():
    """An erasure while the public copies are re-projected under a new schema: no copy of the patient comes
    back under either version, the other patient is re-projected."""
    s = H.Server(name="erase-reproject")
    s.start()
    s.login()
    pid, keep = ingest_two(s, "rp")
    s.ingest_ok([{"record_id": "bg-%d" % i, "name": "Background %d" % i, "dob": "1980-01-01", "type": "visit",
                  "favorite_color": "teal", "blood_type": "O+"} for i in range(400)])
    s.stop()
    schema = os.path.join(s.base, "s2.json")
    with open(schema, "w") as f:
        json.dump({"public": {"favorite_color": "copy", "result": "copy", "type": "copy", "ts": "year"}}, f)
    s.extra_args = ["--schema", schema, "--reproject-rate", "100"]
    s.start()
    s.login()
    check(s.get_json("/healthz")["schema"]["reprojecting"] is not None, "a re-projection under way")
    erase(s, pid, reason="erased while re-projecting")
    for _ in range(600):
        h = s.get_json("/healthz")["schema"]
        if h["version"] == 2 and h["reprojecting"] is None:
            break
        time.sleep(0.2)
    eq(h["version"], 2, "the re-projection finished: %s" % h)
    eq(s.get("/v1/public/patients/" + pid).status, 410, "the erased patient's public copy, under version 2")
    pub = [x["record_id"] for x in s.get_all("/v1/public/records", "records")]
    check(not any(r.startswith("er-rp") for r in pub), "erased records in the public store: %s" %
          [r for r in pub if r.startswith("er-rp")])
    check("kp-rp-1" in pub, "the other patient's record is re-projected")
    eq(s.get_json("/v1/public/patients/" + keep)["schema_version"], 2, "the other patient under version 2")
    s.stop()
    eq(files_holding(s.data_dir, DISTINCTIVE), {}, "traces of the erased patient")


@test(timeout=120)
def test_erasures_side_by_side_all_take_effect():
    """DELETEs that arrive together are committed in one group by the writer: each erased patient's key is
    overwritten (its certificate says so) and each identity comes back as a new patient (only the group's
    last erasure took effect: the others' keys stayed until a restart and their identities' new records were
    rejected)."""
    s = H.Server(name="erase-many")
    s.start()
    s.login()
    n = 12
    people = [("Parallel Erase %d" % i, "1950-01-%02d" % (i + 1)) for i in range(n)]
    ans = s.ingest_ok([{"record_id": "pe-%d" % i, "name": nm, "dob": dob, "notes": "pe secret %d" % i}
                       for i, (nm, dob) in enumerate(people)])
    pids = [it["patient_id"] for it in ans["items"]]
    eq(len(set(pids)), n, "patients")
    go = threading.Barrier(n)
    answers = [None] * n

    def erase_one(i):
        go.wait()
        answers[i] = s.request("DELETE", "/v1/patients/" + pids[i], body=json.dumps({"reason": "side by side"}),
                               headers={"Content-Type": "application/json"})

    threads = [threading.Thread(target=erase_one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, r in enumerate(answers):
        check(r is not None and r.status == 200, "DELETE %d: %s" % (i, r and short(r.text)))
        key = [x["status"] for x in r.json()["stores"] if x["store"] == "data_key"]
        eq(key, ["done"], "erasure %d: the data key is overwritten" % i)
    ans = s.ingest_ok([{"record_id": "pe-new-%d" % i, "name": nm, "dob": dob} for i, (nm, dob) in enumerate(people)])
    for i, it in enumerate(ans["items"]):
        eq(it["status"], "created", "a new record of erased identity %d (%s)" % (i, it.get("error")))
        check(it["patient_id"] != pids[i], "identity %d comes back as a new patient" % i)
    s.stop()


@test
def test_erase_offline_and_bad_requests():
    s = H.Server(name="erase-cli")
    s.start()
    s.login()
    pid, keep = ingest_two(s, "cli")
    # bad requests: no reason, empty reason, unknown member, bad id, unknown patient, no permission
    for body in ("{}", '{"reason":""}', '{"reason":"x","why":"y"}', "not json", '{"reason":7}'):
        r = s.request("DELETE", "/v1/patients/" + pid, body=body, headers={"Content-Type": "application/json"})
        eq(r.status, 400, "DELETE with %s" % body)
    eq(s.request("DELETE", "/v1/patients/nope", body='{"reason":"x"}',
                 headers={"Content-Type": "application/json"}).status, 400, "a bad patient id")
    r = s.request("DELETE", "/v1/patients/3f2504e0-4f89-41d3-9a0c-0305e82c3301", body='{"reason":"x"}',
                  headers={"Content-Type": "application/json"})
    eq(r.status, 404, "an unknown patient")
    s.request("POST", "/v1/users", body=json.dumps({"user": "cl", "password": "pw-cl-123456", "role": "clinician"}),
              headers={"Content-Type": "application/json"})
    tok = s.token_for("cl", "pw-cl-123456")
    r = s.request("DELETE", "/v1/patients/" + pid, body='{"reason":"x"}',
                  headers={"Content-Type": "application/json", "Authorization": "Bearer " + tok})
    eq(r.status, 403, "a clinician cannot erase")
    eq(s.get("/v1/patients/" + pid).status, 200, "still there")
    # offline, while the server holds the directory: refused, naming the way through the server
    r = medstream("erase", "--data", s.data_dir, "--reason", "offline", pid)
    eq(r.returncode, 1, "erase beside a server: %s" % r.stderr)
    check("DELETE /v1/patients" in r.stderr, "names the API: %s" % r.stderr)
    s.stop()
    r = medstream("erase", "--data", s.data_dir, "--reason", "offline request", pid)
    eq(r.returncode, 0, "medstream erase: %s" % r.stderr)
    cert = json.loads(r.stdout)
    eq(cert["patient_id"], pid, "offline certificate")
    eq(cert["record_versions"], 4, "offline: versions erased")
    check(cert["erased_by"].startswith("local:"), "the OS user: %s" % cert["erased_by"])
    r = medstream("erase", "--data", s.data_dir, "--reason", "again", pid)
    eq(r.returncode, 0, "again")
    eq(json.loads(r.stdout)["already_erased"], True, "offline: idempotent")
    eq(medstream("erase", "--data", s.data_dir, pid).returncode, 2, "no --reason: usage")
    s.start()
    s.login()
    eq(s.get("/v1/patients/" + pid).status, 410, "erased offline: 410")
    eq(s.get_json("/v1/patients/" + keep)["fields"]["notes"], KEEP_NOTE, "the other patient")
    s.stop()
    eq(files_holding(s.data_dir, DISTINCTIVE), {}, "traces after an offline erasure")


@test
def test_erase_offline_removes_the_exports_a_killed_server_left():
    """A server killed (kill -9, a crash) leaves its finished exports in DATA/exports, PHI in the clear, until
    the next start removes them; an offline erasure in between must not leave the patient readable there."""
    s = H.Server(name="erase-cli-exports")
    s.start()
    s.login()
    pid, keep = ingest_two(s, "cx")
    r = s.request("POST", "/v1/exports", body=json.dumps({"scope": "phi", "format": "csv"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 202, "export: %s" % short(r.text))
    xid = r.json()["export_id"]
    for _ in range(300):
        st = s.get_json("/v1/exports/" + xid)
        if st["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    eq(st["state"], "done", "the export finished: %s" % st)
    s.kill9()
    check(files_holding(os.path.join(s.data_dir, "exports"), [b"xyzzy-plugh-4172"]), "the killed server's export")
    r = medstream("erase", "--data", s.data_dir, "--reason", "offline request", pid)
    eq(r.returncode, 0, "medstream erase: %s" % r.stderr)
    eq(files_holding(s.data_dir, DISTINCTIVE), {}, "traces after an offline erasure")
    eq(json.loads(r.stdout).get("exports_withdrawn"), 1, "the certificate counts the export withdrawn")
    s.start()
    s.login()
    eq(s.get("/v1/patients/" + pid).status, 410, "erased offline: 410")
    eq(s.get_json("/v1/patients/" + keep)["fields"]["notes"], KEEP_NOTE, "the other patient")
    s.stop()



@test(timeout=120)
def test_a_replay_of_an_erased_patients_records_stores_nothing_again():
    """The same records sent again after their patient's erasure (a Kafka topic consumed again by a new group,
    a monthly file imported again) were stored again as new versions of a new patient: the erasure undone by
    the next replay. A record id erased with its patient is now refused, naming the record, never stored again;
    a record deleted the ordinary way (DELETE /v1/records) may still be sent again, and a new record id of the
    same person is a new patient."""
    s = H.Server(name="erase-replay")
    s.start()
    s.login()
    pid, keep = ingest_two(s, "rp")
    r = s.request("DELETE", "/v1/records/kp-rp-1")
    eq(r.status, 200, "an ordinary deletion: %s" % short(r.text))
    erase(s, pid)
    a = s.ingest(records("rp"))
    eq(a.status, 200, "the replay is answered")
    items = sorted(a.json()["items"], key=lambda i: i["line"])
    eq([i["status"] for i in items], ["rejected", "rejected", "rejected", "updated"], "replay: %s" % short(a.text))
    for i, it in enumerate(items[:3]):
        check("er-rp-%d was erased with its patient" % (i + 1) in it.get("error", ""), "the refusal: %s" % it)
    eq(items[3]["patient_id"], keep, "the deleted record of a live patient is stored again")
    eq(s.get("/v1/patients?" + H.q({"name": ERASE_NAME, "dob": ERASE_DOB})).status, 404,
       "no new patient made of the replayed records")
    for n in (1, 2, 3):
        eq(s.get("/v1/records/er-rp-%d" % n).status, 404, "er-rp-%d still reads as gone" % n)
    fresh = s.ingest_ok([dict(records("rp")[0], record_id="er-rp-new")])["items"][0]
    eq(fresh["status"], "created", "a new record id of the same person")
    check(fresh["patient_id"] != pid, "is a new patient")
    s.stop()


if __name__ == "__main__":
    H.main()

# End-to-end tests of access control over real HTTP: every endpoint x every role x {no token,
# malformed token, expired token, revoked token, valid token} gives exactly 401 / 403 / 2xx; login
# answers 201 with a token and 401 on bad credentials; repeated failed logins for a user from one address are
# refused with 429 (even with the right password) while other users, and the user from other addresses, can
# still log in, thirty from six addresses lock the name except where it signed in lately, logins sent at once count
# together and other names never clear a lockout, password hashes run 4 at a time; POST /v1/users is 201,
# then 409 for the same name; PHI routes answer nothing without a token. (Account management beyond
# this matrix: test_accounts.py.) And the audit trail: every PHI
# access and login leaves an entry (user, action, patient ids, outcome) without PHI values, the
# auditor can filter it, and `medstream audit verify` passes on the untouched log; refusals without a
# known user, and logins refused by the limiter, are audited per address and window (the first, then a
# summary of the rest).
#
# Run: /usr/bin/python3 tests/e2e/test_auth.py

import json
import subprocess
import threading
import time

import harness as H
from harness import check, eq, short, test

ROLES = ["admin", "ingest", "clinician", "analyst", "auditor"]
GRANTS = {  # DESIGN.md's default matrix, as the permissions the routes declare
    "admin": {"records:create", "records:read", "patients:read", "public:read", "exports:create",
              "metrics:read", "users:create", "users:read", "users:update", "users:delete", "audit:read",
              "counters:create", "counters:delete"},
    "ingest": {"records:create"},
    "clinician": {"records:create", "records:read", "patients:read", "public:read"},
    "analyst": {"public:read", "exports:create"},
    "auditor": {"audit:read"},
}
_server = None
_seq = [0]


def server():
    global _server
    if _server is None:
        _server = H.Server(name="auth")
        _server.start()
        for role in ROLES[1:]:
            r = _server.request("POST", "/v1/users", body=json.dumps({"user": "u-" + role, "password": "pw-" + role + "-123",
                                                                       "role": role}),
                                headers={"Content-Type": "application/json"})
            eq(r.status, 201, "creating user with role %s: %s" % (role, short(r.text)))
        rec = {"record_id": "auth-r1", "name": "Auth Person", "dob": "1970-05-05", "favorite_color": "teal"}
        ans = _server.ingest_ok([rec])
        _server.pid = ans["items"][0]["patient_id"]
        r = _server.request("POST", "/v1/counters", body=json.dumps({"name": "auth-c", "max_window": "1h"}),
                            headers={"Content-Type": "application/json"})
        eq(r.status, 201, "defining a counter: %s" % short(r.text))
    return _server


def routes(s):
    """(method, path, permission, body, content type) for every endpoint."""
    _seq[0] += 1
    n = _seq[0]
    rec = json.dumps({"record_id": "auth-new-%d" % n, "name": "Auth New %d" % n, "dob": "1980-01-01"})
    user = json.dumps({"user": "made-%d" % n, "password": "made-password", "role": "analyst"})
    pid = s.pid
    return [
        ("POST", "/v1/records", "records:create", rec, "application/x-ndjson"),
        ("GET", "/v1/records/auth-r1", "records:read", None, None),
        ("GET", "/v1/patients?" + H.q({"name": "Auth Person", "dob": "1970-05-05"}), "patients:read", None, None),
        ("GET", "/v1/patients/" + pid, "patients:read", None, None),
        ("GET", "/v1/patients/%s/history" % pid, "patients:read", None, None),
        ("GET", "/v1/patients/%s/records" % pid, "patients:read", None, None),
        ("GET", "/v1/public/patients/" + pid, "public:read", None, None),
        ("GET", "/v1/public/records", "public:read", None, None),
        ("POST", "/v1/snapshots", "exports:create", None, None),
        ("GET", "/metrics", "metrics:read", None, None),
        ("POST", "/v1/users", "users:create", user, "application/json"),
        # on the account just made (only the admin makes it; every other role is refused before looking)
        ("GET", "/v1/users", "users:read", None, None),
        ("GET", "/v1/users/made-%d" % n, "users:read", None, None),
        ("PATCH", "/v1/users/made-%d" % n, "users:update", '{"role":"auditor"}', "application/json"),
        # another user's password: users:update (a user's own needs only its old password)
        ("PUT", "/v1/users/made-%d/password" % n, "users:update", '{"password":"made-password-2"}',
         "application/json"),
        ("DELETE", "/v1/users/made-%d/tokens" % n, "users:update", None, None),
        ("DELETE", "/v1/users/made-%d" % n, "users:delete", None, None),
        ("GET", "/v1/audit?limit=5", "audit:read", None, None),
        ("GET", "/v1/records/auth-r1/children", "records:read", None, None),
        ("GET", "/v1/counters", "public:read", None, None),
        ("GET", "/v1/counters/auth-c", "public:read", None, None),
        ("POST", "/v1/counters", "counters:create", json.dumps({"name": "auth-made-%d" % n, "max_window": "1h"}),
         "application/json"),
        ("DELETE", "/v1/counters/auth-made-%d" % n, "counters:delete", None, None),
    ]


def call(s, method, path, body, ctype, auth):
    headers = {"Authorization": auth}
    if ctype:
        headers["Content-Type"] = ctype
    return s.request(method, path, body=body, headers=headers)


@test(timeout=120)
def test_matrix_valid_tokens():
    s = server()
    for role in ROLES:
        tok = s.token if role == "admin" else s.token_for("u-" + role, "pw-" + role + "-123")
        for method, path, perm, body, ctype in routes(s):
            r = call(s, method, path, body, ctype, "Bearer " + tok)
            if perm in GRANTS[role]:
                check(200 <= r.status < 300, "%s %s as %s: expected 2xx, got %d: %s"
                      % (method, path, role, r.status, short(r.text)))
            else:
                eq(r.status, 403, "%s %s as %s (lacks %s): %s" % (method, path, role, perm, short(r.text)))
        eq(call(s, "GET", "/healthz", None, None, "Bearer " + tok).status, 200, "healthz as " + role)


@test(timeout=60)
def test_matrix_missing_malformed_revoked_tokens():
    s = server()
    revoked = s.token_for("u-clinician", "pw-clinician-123")
    eq(call(s, "DELETE", "/v1/auth/token", None, None, "Bearer " + revoked).status, 200, "revoking a token")
    eq(call(s, "DELETE", "/v1/auth/token", None, None, "Bearer " + revoked).status, 401, "revoking it again")
    bad = {"no token": None, "malformed": "Bearer not-a-token", "wrong scheme": "Basic YWRtaW46YWRtaW4=",
           "unknown": "Bearer ms_" + "A" * 43, "revoked": "Bearer " + revoked}
    for what, auth in bad.items():
        for method, path, perm, body, ctype in routes(s):
            r = call(s, method, path, body, ctype, auth)
            eq(r.status, 401, "%s %s with %s token: %s" % (method, path, what, short(r.text)))
            check(b"Auth Person" not in r.body, "a 401 answer carries no PHI")
        eq(call(s, "GET", "/healthz", None, None, auth).status, 200, "healthz needs no token (%s)" % what)


@test(timeout=60)
def test_expired_tokens():
    s = H.Server(extra_args=["--token-ttl", "1"], name="auth-ttl")
    s.start()
    tok = s.token
    ok = call(s, "GET", "/v1/public/records", None, None, "Bearer " + tok)
    eq(ok.status, 200, "a fresh token works")
    time.sleep(1.5)
    for method, path, perm, body, ctype in [x for x in routes(server())]:
        path = path.replace(server().pid, "00000000-0000-4000-8000-000000000000")
        r = call(s, method, path, body, ctype, "Bearer " + tok)
        eq(r.status, 401, "%s %s with an expired token: %s" % (method, path, short(r.text)))
        check("expired" in r.text, "the error says the token expired: %s" % short(r.text))
    s.stop()


@test(timeout=60)
def test_login_answers_and_rate_limit():
    s = server()
    r = s.request("POST", "/v1/auth/token", body=json.dumps({"user": "admin", "password": s.admin_password()}),
                  headers={"Content-Type": "application/json", "Authorization": None})
    eq(r.status, 201, "login")
    j = r.json()
    check(j["token"].startswith("ms_") and j["role"] == "admin" and H.parse_time(j["expires_at"]) is not None,
          "login answer %s" % short(r.text))
    bad = lambda user, pw: s.request("POST", "/v1/auth/token", body=json.dumps({"user": user, "password": pw}),
                                     headers={"Content-Type": "application/json", "Authorization": None})
    eq(bad("u-analyst", "wrong-password").status, 401, "wrong password")
    eq(bad("nobody-at-all", "wrong-password").status, 401, "unknown user")
    eq(bad("u-analyst", "").status, 401, "empty password")
    for _ in range(4):
        bad("u-analyst", "wrong-password")
    eq(bad("u-analyst", "pw-analyst-123").status, 429, "right password after 5 failures: still refused")
    eq(bad("u-auditor", "pw-auditor-123").status, 201, "another user is not affected")
    eq(s.request("POST", "/v1/auth/token", body="{", headers={"Content-Type": "application/json"}).status, 400,
       "malformed login body")
    eq(s.request("POST", "/v1/auth/token", body="{}", headers={"Content-Type": "text/plain"}).status, 415,
       "login body of the wrong content type")


@test(timeout=90)
def test_a_client_locks_a_name_out_for_itself_only():
    """Five wrong passwords for a name lock it out from that client (address) only: anyone on the network could
    keep any account locked out, the admin's too, with five tries a minute, when the tally was per name. The
    name in all is locked after 30 failures in the window (from 6 or more addresses), except from an address
    that signed in as it recently. Each loopback address (127.0.0.N) is a client of its own."""
    s = H.Server(name="auth-client")
    s.start()
    login = lambda user, pw, src: s.request("POST", "/v1/auth/token", body=json.dumps({"user": user, "password": pw}),
                                            headers={"Content-Type": "application/json", "Authorization": None},
                                            source=src)
    pw = s.admin_password()
    for _ in range(5):
        eq(login("admin", "wrong-password", "127.0.0.2").status, 401, "a wrong password from 127.0.0.2")
    r = login("admin", pw, "127.0.0.2")
    eq(r.status, 429, "the right password from the same address after five failures")
    check("from this address" in r.text, "the refusal says why: %s" % short(r.text))
    eq(login("admin", pw, "127.0.0.1").status, 201, "the admin signs in from another address")
    for n in range(3, 8):  # five more addresses, five failures each: thirty in all
        for _ in range(5):
            eq(login("admin", "wrong-password", "127.0.0.%d" % n).status, 401, "a wrong password from 127.0.0.%d" % n)
    r = login("admin", pw, "127.0.0.9")
    eq(r.status, 429, "a new address after thirty failures from six")
    check("several addresses" in r.text, "the refusal says why: %s" % short(r.text))
    eq(login("admin", pw, "127.0.0.1").status, 201, "the address the admin signed in from still gets in")
    denied = [e for e in s.audit_entries(user="admin") if e["action"] == "auth:login" and e["outcome"] == "denied"]
    check(any("several addresses" in e.get("reason", "") for e in denied), "the name-wide refusal is audited")


@test(timeout=90)
def test_logins_at_once_and_other_names_do_not_widen_the_limit():
    """Wrong passwords sent at once for one name get LOGIN_MAX_FAILURES (5) checks, the rest 429 (all were
    checked before any was counted); a wrong login for a name that shared the locked name's slot ("u3243"
    did for "admin") does not clear its lockout; and logins side by side hold at most 4 password hashes (64
    MiB each) at a time (12 at once took the server to 782 MiB)."""
    s = H.Server(name="auth-limit")
    s.start()
    login = lambda user, pw: s.request("POST", "/v1/auth/token", body=json.dumps({"user": user, "password": pw}),
                                       headers={"Content-Type": "application/json", "Authorization": None})
    answers = [None] * 12
    go = threading.Barrier(12)

    def one(i):
        go.wait()
        answers[i] = login("admin", "wrong-%d" % i).status

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    eq(sorted(answers), [401] * 5 + [429] * 7, "twelve wrong logins at once for one name")
    eq(login("u3243", "wrong").status, 401, "a wrong login for another name")
    for other in ("x%d" % i for i in range(20)):
        login(other, "wrong")
    eq(login("admin", s.admin_password()).status, 429, "admin is still locked out, right password or not")
    answers = [None] * 12
    go = threading.Barrier(12)

    def stranger(i):
        go.wait()
        answers[i] = login("stranger-%d" % i, "wrong").status

    threads = [threading.Thread(target=stranger, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    eq(answers, [401] * 12, "twelve wrong logins at once for twelve names")
    with open("/proc/%d/status" % s.proc.pid) as f:
        hwm = [int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")][0] // 1024
    print("  (peak memory %d MiB)" % hwm, flush=True)
    check(hwm < 700, "peak memory with 12 logins at once: %d MiB (4 hashes of 64 MiB at a time)" % hwm)
    s.stop()


@test(timeout=60)
def test_user_creation():
    s = server()
    body = json.dumps({"user": "dup-user", "password": "dup-password", "role": "auditor"})
    h = {"Content-Type": "application/json"}
    r = s.request("POST", "/v1/users", body=body, headers=h)
    eq(r.status, 201, "new user: %s" % short(r.text))
    eq(r.json(), {"user": "dup-user", "role": "auditor"}, "answer")
    eq(s.request("POST", "/v1/users", body=body, headers=h).status, 409, "same user again")
    bad_role = json.dumps({"user": "x-user", "password": "x-password", "role": "superuser"})
    eq(s.request("POST", "/v1/users", body=bad_role, headers=h).status, 400, "unknown role")
    short_pw = json.dumps({"user": "y-user", "password": "short", "role": "auditor"})
    r = s.request("POST", "/v1/users", body=short_pw, headers=h)
    eq(r.status, 400, "short password")
    check("short" not in r.text, "the error does not echo the password")
    eq(s.token_for("dup-user", "dup-password") is not None, True, "the new user can log in")


@test(timeout=60)
def test_audit_trail_of_phi_access():
    s = H.Server(name="audit")
    s.start()
    h = {"Content-Type": "application/json"}
    for user, role in (("clin", "clinician"), ("aud", "auditor")):
        eq(s.request("POST", "/v1/users", body=json.dumps({"user": user, "password": "pw-" + user + "-123", "role": role}),
                     headers=h).status, 201, "user " + user)
    clin = "Bearer " + s.token_for("clin", "pw-clin-123")
    aud = "Bearer " + s.token_for("aud", "pw-aud-123")
    secret = {"record_id": "audit-r1", "name": "Audit Secretname", "dob": "1955-03-04", "ssn": "123-45-6789"}
    r = s.request("POST", "/v1/records", body=H.ndjson([secret]),
                  headers={"Content-Type": "application/x-ndjson", "Authorization": clin})
    eq(r.status, 200, "ingest as clinician")
    pid = r.json()["items"][0]["patient_id"]
    eq(s.request("GET", "/v1/records/audit-r1", headers={"Authorization": clin}).status, 200, "record read")
    eq(s.request("GET", "/v1/patients/" + pid, headers={"Authorization": clin}).status, 200, "patient read")
    eq(s.request("GET", "/v1/patients?" + H.q({"name": "Audit Secretname", "dob": "1955-03-04"}),
                 headers={"Authorization": clin}).status, 200, "identity lookup")
    eq(s.request("GET", "/v1/patients/" + pid + "/history", headers={"Authorization": clin}).status, 200, "history")
    bad = s.request("POST", "/v1/auth/token", body=json.dumps({"user": "clin", "password": "wrong-wrong"}), headers=h)
    eq(bad.status, 401, "failed login")
    entries = []
    for _ in range(50):  # read audit entries are committed with the next group, within milliseconds
        r = s.request("GET", "/v1/audit?" + H.q({"user": "clin", "limit": 100}), headers={"Authorization": aud})
        eq(r.status, 200, "audit read by the auditor")
        entries = r.json()["entries"]
        if len([x for x in entries if x["action"] == "patients:read"]) >= 3 and \
                any(x["action"] == "auth:login" and x["outcome"] == "denied" for x in entries):
            break
        time.sleep(0.05)
    actions = [x["action"] for x in entries]
    for want in ("records:create", "records:read", "patients:read", "auth:login"):
        check(want in actions, "an audit entry for %s (have %s)" % (want, actions))
    check(all(x["user"] == "clin" for x in entries), "user filter")
    check(any(x["action"] == "auth:login" and x["outcome"] == "denied" for x in entries), "the failed login is audited")
    for x in entries:
        if x["action"] in ("records:create", "records:read") or x["resource"].startswith("/v1/patients/"):
            eq(x["patient_ids"], [pid], "patient ids of %s %s" % (x["action"], x["resource"]))
    raw = s.request("GET", "/v1/audit?limit=1000", headers={"Authorization": aud}).body
    for value in (b"Secretname", b"1955-03-04", b"123-45-6789", b"pw-clin-123", b"wrong-wrong"):
        check(value not in raw, "audit entries carry no PHI or password (%r found)" % value)
    by_pid = s.request("GET", "/v1/audit?" + H.q({"patient_id": pid}), headers={"Authorization": aud}).json()["entries"]
    check(by_pid and all(pid in x["patient_ids"] for x in by_pid), "patient_id filter")
    seqs = [x["seq"] for x in s.request("GET", "/v1/audit?limit=1000", headers={"Authorization": aud}).json()["entries"]]
    eq(seqs, list(range(1, len(seqs) + 1)), "entries are numbered 1, 2, ... without gaps")
    eq(s.request("GET", "/v1/audit", headers={"Authorization": clin}).status, 403, "a clinician cannot read the audit log")
    s.stop()
    out = subprocess.run([H.BIN, "audit", "verify", "--data", s.data_dir], capture_output=True, text=True, timeout=60)
    eq(out.returncode, 0, "audit verify on the untouched log: %s %s" % (out.stdout, out.stderr))
    check("intact" in out.stdout and len(out.stdout.split("head sha256 ")[1].strip()) == 64,
          "verify prints the head hash: %s" % out.stdout)


@test(timeout=120)
def test_refusals_without_a_user_are_audited_per_address_and_window():
    """A request refused without a known user (no token, an unknown one) left no audit entry, though every
    denied attempt must; one entry each would let anyone grow the audit log at will. The first from an
    address in a window (60 s) is audited as it is (no user, the route's permission, the path, the reason);
    the rest of the window in one summary entry, written once the window has closed or the server stops."""
    s = H.Server(name="anon-audit")
    s.start()
    for i in range(40):
        hdr = {} if i % 2 else {"Authorization": "Bearer not-a-token-%d" % i}
        r = H.http_request(s.port, "GET", "/v1/records/anon-%d" % i, headers=hdr)
        eq(r.status, 401, "request %d without a valid token" % i)
    anon = []
    for _ in range(50):  # entries of refusals are committed with the next group
        anon = [x for x in s.audit_entries(limit=1000) if x["user"] == ""]
        if anon:
            break
        time.sleep(0.05)
    eq(len(anon), 1, "entries of 40 refusals from one address within a window (%s)" % anon)
    first = anon[0]
    eq((first["action"], first["resource"], first["outcome"], first["client"]),
       ("records:read", "/v1/records/anon-0", "denied", "127.0.0.1"), "the window's first refusal")
    check(first.get("reason"), "the first refusal says why: %s" % first)
    eq(s.stop(), 0, "clean stop")
    s.start()
    anon = [x for x in s.audit_entries(limit=1000) if x["user"] == ""]
    eq(len(anon), 2, "entries after the stop (%s)" % anon)
    summary = anon[1]
    eq((summary["action"], summary["outcome"], summary["client"]), ("auth:refused", "denied", "127.0.0.1"),
       "the window's summary")
    check(summary["reason"].startswith("39 more requests without a valid token from this address, "),
          "the summary counts the other 39: %s" % summary["reason"])
    raw = s.request("GET", "/v1/audit?limit=1000").body
    check(b"not-a-token" not in raw, "no token sent reaches the audit log")
    s.stop()
    out = subprocess.run([H.BIN, "audit", "verify", "--data", s.data_dir], capture_output=True, text=True, timeout=60)
    eq(out.returncode, 0, "audit verify: %s %s" % (out.stdout, out.stderr))


@test(timeout=120)
def test_throttled_logins_are_audited_per_address_and_window():
    """A login refused by the limiter (429) is a denied attempt, and left no audit entry; it costs its sender
    nothing, so it is audited as refusals without a known user are: the first from an address in a window as
    it is (the user named only if it exists), the rest in the window's summary."""
    s = H.Server(name="auth-throttle")
    s.start()
    r = s.request("POST", "/v1/users", body=json.dumps({"user": "u-thr", "password": "pw-thr-123", "role": "analyst"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "user")
    login = lambda user, pw: s.request("POST", "/v1/auth/token", body=json.dumps({"user": user, "password": pw}),
                                       headers={"Content-Type": "application/json", "Authorization": None})
    for _ in range(5):
        eq(login("u-thr", "wrong-password").status, 401, "wrong password")
    eq(login("u-thr", "pw-thr-123").status, 429, "throttled")
    logins = [e for e in s.audit_entries(user="u-thr") if e["action"] == "auth:login"]
    eq([e["outcome"] for e in logins], ["denied"] * 6, "five failed logins and the throttled one")
    check("too many failed logins" in logins[-1].get("reason", ""), "the throttled one says why: %s" % logins[-1])
    secret = "Correct-Horse-" + H.rand_token()
    for _ in range(5):
        eq(login(secret, "wrong-password").status, 401, "an unknown name")
    for i in range(10):
        eq(login("u-thr" if i % 2 else secret, "wrong-password").status, 429, "throttled again")
    eq(len([e for e in s.audit_entries(user="u-thr") if e["action"] == "auth:login"]), 6,
       "the window's later 429s are counted, not an entry each")
    eq(s.stop(), 0, "clean stop")
    s.start()
    summary = [e for e in s.audit_entries(action="auth:refused")]
    eq(len(summary), 1, "the window's summary: %s" % summary)
    check(summary[0]["reason"].startswith("10 more requests"), "it counts the 10: %s" % summary[0]["reason"])
    check(secret.encode() not in s.request("GET", "/v1/audit?limit=1000").body, "no name that is not a user's")
    s.stop()


@test(timeout=60)
def test_custom_role_file():
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="medstream-e2e-roles-")
    H._temp_dirs.append(d)
    path = os.path.join(d, "roles.json")
    with open(path, "w") as f:
        json.dump({"admin": {r: "crud" for r in ("records", "patients", "public", "audit", "users", "exports",
                                                  "metrics")},
                   "nurse": {"patients": "r", "public": "r"}}, f)
    s = H.Server(extra_args=["--roles", path], name="roles")
    s.start()
    h = {"Content-Type": "application/json"}
    eq(s.request("POST", "/v1/users", body=json.dumps({"user": "nn", "password": "nurse-pass", "role": "nurse"}),
                 headers=h).status, 201, "a user of the file's role")
    eq(s.request("POST", "/v1/users", body=json.dumps({"user": "cc", "password": "clin-pass1", "role": "clinician"}),
                 headers=h).status, 400, "a role the file does not have")
    ans = s.ingest_ok([{"record_id": "roles-1", "name": "Role Person", "dob": "1977-07-07"}])
    pid = ans["items"][0]["patient_id"]
    nurse = "Bearer " + s.token_for("nn", "nurse-pass")
    eq(s.request("GET", "/v1/patients/" + pid, headers={"Authorization": nurse}).status, 200, "nurse reads a patient")
    eq(s.request("GET", "/v1/records/roles-1", headers={"Authorization": nurse}).status, 403, "nurse may not read records")
    s.stop()


@test(timeout=30)
def test_commands_refuse_a_directory_init_never_made():
    """A mistyped --data must not start an empty store with no users as if it were the real one."""
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="medstream-e2e-nodata-")
    H._temp_dirs.append(d)
    missing = os.path.join(d, "typo")
    for args, stdin in ((["serve", "--data", missing, "--listen", "127.0.0.1:0"], ""),
                        (["audit", "verify", "--data", missing], ""),
                        (["user", "add", "bob", "--role", "analyst", "--data", missing], "a-password\n")):
        r = subprocess.run([H.BIN] + args, input=stdin, capture_output=True, text=True, timeout=20)
        eq(r.returncode, 1, "exit code of medstream %s on a directory init never made" % args[0])
        check("not a medstream data directory" in r.stderr and "medstream init" in r.stderr,
              "medstream %s says what is wrong and what to do: %r" % (args[0], r.stderr))
        check(not os.path.exists(missing), "medstream %s created nothing" % args[0])


if __name__ == "__main__":
    H.main()

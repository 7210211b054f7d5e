# End-to-end tests of account management over real HTTP and the real command line (issue 9): listing and
# reading accounts (never a hash), role changes that apply to the next request of a token already
# issued, disabling (tokens revoked at once, no login: the same 401 as a wrong password, at the same
# cost), enabling, deleting, revoking another user's tokens, the rule that some enabled account must
# keep users:update (409), password changes (your own with the right old password; a wrong one is a 403
# that counts as a failed login; anyone's with users:update; no login racing a reset keeps a token), admin.password removed once the admin's
# password changes (HTTP and CLI), the offline `medstream user` commands on a stopped server's data
# directory (seen by the server started afterwards), and the audit entries of all of it (the role given
# and the role and disabled flag changed, before and after), with no password anywhere in the audit log.
#
# Run: /usr/bin/python3 tests/e2e/test_accounts.py

import json
import os
import subprocess
import time

import harness as H
from harness import check, eq, short, test

JSON = {"Content-Type": "application/json"}
PASSWORDS = []  # every password these tests send: none may appear in an answer or in the audit log
_server = None


def pw(text):
    PASSWORDS.append(text)
    return text


def server():
    global _server
    if _server is None:
        _server = H.Server(name="accounts")
        _server.start()
        PASSWORDS.append(_server.admin_password())
    return _server


def bearer(token):
    return {"Authorization": "Bearer " + token}


def create(s, user, role, password):
    r = s.request("POST", "/v1/users", body=json.dumps({"user": user, "password": pw(password), "role": role}),
                  headers=JSON)
    eq(r.status, 201, "creating %s: %s" % (user, short(r.text)))


def login(s, user, password):
    return s.request("POST", "/v1/auth/token", body=json.dumps({"user": user, "password": password}),
                     headers=dict(JSON, Authorization=None))


def no_secrets(body, what):
    for p in PASSWORDS:
        check(p.encode() not in body, "%s carries no password (%r found)" % (what, p))
    check(b"argon2" not in body, "%s carries no password hash" % what)


def cli(*args, stdin=""):
    return subprocess.run([H.BIN] + list(args), input=stdin, capture_output=True, text=True, timeout=60)


@test(timeout=120)
def test_list_and_get_accounts():
    s = server()
    create(s, "zed-list", "analyst", "zed-list-pw1")
    create(s, "amy-list", "auditor", "amy-list-pw1")
    r = s.get("/v1/users")
    eq(r.status, 200, "GET /v1/users")
    users = r.json()["users"]
    names = [u["user"] for u in users]
    eq(names, sorted(names), "sorted by name")
    check({"admin", "zed-list", "amy-list"} <= set(names), "every account listed: %s" % names)
    for u in users:
        eq(sorted(u.keys()), ["changed_at", "created_at", "disabled", "role", "user"], "members of %s" % u["user"])
    amy = [u for u in users if u["user"] == "amy-list"][0]
    eq((amy["role"], amy["disabled"]), ("auditor", False), "amy-list")
    H.parse_time(amy["created_at"])
    eq(amy["changed_at"], amy["created_at"], "a new account: changed when created")
    no_secrets(r.body, "the account list")
    one = s.get("/v1/users/amy-list")
    eq(one.status, 200, "GET one account")
    eq(one.json(), amy, "the account as listed")
    eq(s.get("/v1/users/nobody-here").status, 404, "no such user")
    analyst = s.token_for("zed-list", "zed-list-pw1")
    eq(s.get("/v1/users", headers=bearer(analyst)).status, 403, "an analyst may not list accounts")
    eq(s.get("/v1/users/amy-list", headers=bearer(analyst)).status, 403, "nor read one")
    eq(s.get("/v1/users", headers={"Authorization": None}).status, 401, "no token")


@test(timeout=120)
def test_role_change_applies_to_the_next_request():
    s = server()
    create(s, "rolly", "clinician", "rolly-pass-1")
    tok = s.token_for("rolly", "rolly-pass-1")
    eq(s.get("/v1/public/records", headers=bearer(tok)).status, 200, "clinician reads public records")
    eq(s.get("/v1/audit?limit=1", headers=bearer(tok)).status, 403, "clinician may not read the audit log")
    r = s.request("PATCH", "/v1/users/rolly", body=json.dumps({"role": "auditor"}), headers=JSON)
    eq(r.status, 200, "PATCH role: %s" % short(r.text))
    j = r.json()
    eq((j["user"], j["role"], j["disabled"]), ("rolly", "auditor", False), "the changed account")
    check(H.parse_time(j["changed_at"]) > H.parse_time(j["created_at"]), "changed_at moved: %s" % j)
    eq(s.get("/v1/audit?limit=1", headers=bearer(tok)).status, 200, "the same token now reads the audit log")
    eq(s.get("/v1/public/records", headers=bearer(tok)).status, 403, "and no longer public records")
    for body, what in (('{"role":"superuser"}', "unknown role"), ('{"role":5}', "role not a string"),
                       ('{"disabled":"yes"}', "disabled not a boolean"), ('{"colour":"red"}', "unknown member"),
                       ("{}", "nothing to change"), ("[1]", "not an object"), ("{", "not JSON")):
        r = s.request("PATCH", "/v1/users/rolly", body=body, headers=JSON)
        eq(r.status, 400, "PATCH %s: %s" % (what, short(r.text)))
    eq(s.request("PATCH", "/v1/users/nobody-here", body='{"role":"analyst"}', headers=JSON).status, 404,
       "PATCH no such user")
    eq(s.request("PATCH", "/v1/users/rolly", body='{"role":"analyst"}', headers={"Content-Type": "text/plain"})
       .status, 415, "PATCH of the wrong content type")
    eq(s.request("PATCH", "/v1/users/rolly", body='{"role":"admin"}', headers=dict(JSON, **bearer(tok))).status,
       403, "an auditor cannot make itself admin")
    eq(s.get("/v1/users/rolly").json()["role"], "auditor", "refusals changed nothing")


@test(timeout=120)
def test_disable_revokes_tokens_and_refuses_login():
    s = server()
    create(s, "dora", "clinician", "dora-pass-12")
    create(s, "enzo", "clinician", "enzo-pass-12")
    t1, t2 = s.token_for("dora", "dora-pass-12"), s.token_for("dora", "dora-pass-12")
    r = s.request("PATCH", "/v1/users/dora", body=json.dumps({"disabled": True}), headers=JSON)
    eq(r.status, 200, "disable: %s" % short(r.text))
    eq(r.json()["disabled"], True, "the answer says disabled")
    for t in (t1, t2):
        eq(s.get("/v1/public/records", headers=bearer(t)).status, 401, "a token of the disabled user, at once")
    dis = login(s, "dora", "dora-pass-12")
    eq(dis.status, 401, "a disabled user cannot log in with the right password")
    wrong = login(s, "enzo", "not-enzos-password")
    eq(dis.json(), wrong.json(), "the same answer as a wrong password")

    def cost(user, password):
        t0 = time.monotonic()
        login(s, user, password)
        return time.monotonic() - t0
    disabled_cost = min(cost("dora", "dora-pass-12") for _ in range(2))
    wrong_cost = min(cost("enzo", "not-enzos-password") for _ in range(2))
    check(0.33 < disabled_cost / wrong_cost < 3, "a disabled account's login costs what a wrong password does "
          "(%.3f s vs %.3f s)" % (disabled_cost, wrong_cost))
    r = s.request("PATCH", "/v1/users/dora", body=json.dumps({"disabled": False}), headers=JSON)
    eq((r.status, r.json()["disabled"]), (200, False), "enable again")
    eq(s.get("/v1/public/records", headers=bearer(t1)).status, 401, "enabling brings no revoked token back")
    t3 = s.token_for("dora", "dora-pass-12")
    eq(s.get("/v1/public/records", headers=bearer(t3)).status, 200, "a new login works")


@test(timeout=120)
def test_delete_user():
    s = server()
    create(s, "dell", "clinician", "dell-pass-12")
    create(s, "dell-analyst", "analyst", "dell-pass-34")
    tok = s.token_for("dell", "dell-pass-12")
    other = s.token_for("dell-analyst", "dell-pass-34")
    eq(s.request("DELETE", "/v1/users/dell", headers=bearer(other)).status, 403, "an analyst may not delete")
    r = s.request("DELETE", "/v1/users/dell")
    eq(r.status, 204, "delete: %s" % short(r.text))
    eq(r.body, b"", "204 has no body")
    eq(s.get("/v1/public/records", headers=bearer(tok)).status, 401, "the deleted user's token, at once")
    eq(s.get("/v1/users/dell").status, 404, "gone")
    check("dell" not in [u["user"] for u in s.get("/v1/users").json()["users"]], "not listed")
    eq(login(s, "dell", "dell-pass-12").status, 401, "no login")
    eq(s.request("DELETE", "/v1/users/dell").status, 404, "deleting again")
    create(s, "dell", "clinician", "dell-pass-56")
    eq(s.get("/v1/public/records", headers=bearer(tok)).status, 401, "a new account of that name: old token dead")
    eq(s.get("/v1/public/records", headers=bearer(other)).status, 200, "other users' tokens unaffected")


@test(timeout=120)
def test_revoke_another_users_tokens():
    s = server()
    create(s, "rev", "clinician", "rev-pass-123")
    create(s, "rev-clin", "clinician", "rev-pass-456")
    toks = [s.token_for("rev", "rev-pass-123") for _ in range(2)]
    clin = s.token_for("rev-clin", "rev-pass-456")
    eq(s.request("DELETE", "/v1/users/rev/tokens", headers=bearer(clin)).status, 403, "a clinician may not")
    r = s.request("DELETE", "/v1/users/rev/tokens")
    eq(r.status, 200, "revoke: %s" % short(r.text))
    eq(r.json(), {"revoked": 2}, "both tokens revoked")
    for t in toks:
        eq(s.get("/v1/public/records", headers=bearer(t)).status, 401, "a revoked token")
    eq(s.get("/v1/public/records", headers=bearer(clin)).status, 200, "another user's token")
    eq(s.request("DELETE", "/v1/users/rev/tokens").json(), {"revoked": 0}, "nothing left to revoke")
    eq(s.request("DELETE", "/v1/users/nobody-here/tokens").status, 404, "no such user")
    t = s.token_for("rev", "rev-pass-123")
    eq(s.get("/v1/public/records", headers=bearer(t)).status, 200, "the user can log in again")


@test(timeout=120)
def test_last_account_that_manages_accounts():
    s = H.Server(name="accounts-last")
    s.start()
    PASSWORDS.append(s.admin_password())
    for method, path, body in (("PATCH", "/v1/users/admin", {"disabled": True}),
                               ("PATCH", "/v1/users/admin", {"role": "analyst"}),
                               ("DELETE", "/v1/users/admin", None)):
        r = s.request(method, path, body=json.dumps(body) if body else None, headers=JSON if body else None)
        eq(r.status, 409, "%s %s %s leaves no account holding users:update: %s" % (method, path, body, short(r.text)))
        check("last enabled account" in r.json()["error"], "the error says why: %s" % short(r.text))
    a = s.get("/v1/users/admin").json()
    eq((a["role"], a["disabled"]), ("admin", False), "admin unchanged")
    create(s, "admin2", "admin", "admin2-pass-1")
    create(s, "not-admin", "clinician", "not-admin-pw")
    eq(s.request("PATCH", "/v1/users/not-admin", body='{"disabled":true}', headers=JSON).status, 200,
       "other accounts change freely")
    eq(s.request("PATCH", "/v1/users/admin", body='{"disabled":true}', headers=JSON).status, 200,
       "with a second admin, the first may be disabled")
    eq(s.get("/v1/users").status, 401, "its own token is gone with it")
    t2 = s.token_for("admin2", "admin2-pass-1")
    eq(s.request("DELETE", "/v1/users/admin2", headers=bearer(t2)).status, 409, "admin2 is the last one now")
    eq(s.request("PATCH", "/v1/users/admin", body='{"disabled":false}', headers=dict(JSON, **bearer(t2))).status,
       200, "admin2 enables admin")
    eq(s.request("DELETE", "/v1/users/admin2", headers=bearer(t2)).status, 204, "now admin2 may go")
    s.stop()


@test(timeout=120)
def test_password_changes():
    s = server()
    create(s, "pat", "analyst", "pat-pass-one")
    create(s, "pat-other", "analyst", "pat-other-pw")
    tok = s.token_for("pat", "pat-pass-one")
    older = s.token_for("pat", "pat-pass-one")
    cur = {"token": tok}

    def put(user, body, headers=None):
        return s.request("PUT", "/v1/users/%s/password" % user, body=json.dumps(body),
                         headers=headers or dict(JSON, **bearer(cur["token"])))
    r = put("pat", {"password": pw("pat-pass-two")})
    eq(r.status, 400, "own password without the old one: %s" % short(r.text))
    r = put("pat", {"old_password": pw("not-the-old-one"), "password": "pat-pass-two"})
    eq(r.status, 403, "a wrong old password")
    no_secrets(r.body, "the refusal")
    eq(put("pat", {"old_password": "pat-pass-one", "password": pw("short")}).status, 400, "a too short password")
    eq(put("pat-other", {"old_password": "pat-other-pw", "password": "pat-other-p2"}).status, 403,
       "another user's password, without users:update")
    eq(put("pat", {"old_password": "pat-pass-one", "password": "pat-pass-two"}, {"Content-Type": "text/plain",
                                                                                "Authorization": "Bearer " + tok})
       .status, 415, "wrong content type")
    r = put("pat", {"old_password": "pat-pass-one", "password": "pat-pass-two"})
    eq(r.status, 204, "own password with the right old one: %s" % short(r.text))
    eq(login(s, "pat", "pat-pass-one").status, 401, "the old password no longer works")
    eq(login(s, "pat", "pat-pass-two").status, 201, "the new one does")
    eq(s.get("/v1/public/records", headers=bearer(tok)).status, 200, "the token that changed it still works")
    eq(s.get("/v1/public/records", headers=bearer(older)).status, 401, "the user's other tokens are revoked")
    # anyone's, with users:update, no old password needed
    r = s.request("PUT", "/v1/users/pat/password", body=json.dumps({"password": pw("pat-pass-three")}), headers=JSON)
    eq(r.status, 204, "admin sets pat's password: %s" % short(r.text))
    eq(s.get("/v1/public/records", headers=bearer(tok)).status, 401, "pat's tokens go with it")
    tok = cur["token"] = s.token_for("pat", "pat-pass-three")
    eq(s.request("PUT", "/v1/users/nobody-here/password", body=json.dumps({"password": "whatever-pw"}),
                 headers=JSON).status, 404, "no such user")
    # a wrong old password is a failed login: 4 of them and one bad login make 5
    for _ in range(4):
        eq(put("pat", {"old_password": "wrong-wrong-1", "password": "pat-pass-four"}).status, 403, "wrong old")
    eq(login(s, "pat", "wrong-wrong-2").status, 401, "a failed login")
    eq(login(s, "pat", "pat-pass-three").status, 429, "the limiter counted the wrong old passwords")
    eq(put("pat", {"old_password": "pat-pass-three", "password": "pat-pass-four"}).status, 429,
       "and refuses the password change too, even with the right old password")
    PASSWORDS.extend(["wrong-wrong-1", "wrong-wrong-2", "pat-pass-four"])


@test(timeout=120)
def test_no_token_outlives_a_password_reset_that_raced_its_login():
    """A login checks the password (Argon2id, ~0.15 s), then stores its token; a reset (of a stolen password)
    committed in between revoked the account's tokens before that one existed, and it worked for its whole
    lifetime: with logins sent in a loop, every one in flight at the reset survived it (3 of 3, every time).
    The token is now stored only if the password is still the one checked."""
    import threading
    s = server()
    alive = []
    for attempt in range(2):
        user = "racer-%d" % attempt
        create(s, user, "clinician", "racer-pass-%d" % attempt)
        tokens, stop = [], [False]

        def loop():
            while not stop[0]:
                r = login(s, user, "racer-pass-%d" % attempt)
                if r.status == 201:
                    tokens.append(r.json()["token"])
                elif r.status != 401:
                    break

        threads = [threading.Thread(target=loop) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.6)
        r = s.request("PUT", "/v1/users/%s/password" % user, body=json.dumps({"password": pw("racer-new-%d" % attempt)}),
                      headers=JSON)
        eq(r.status, 204, "the reset")
        time.sleep(0.8)   # the logins in flight at the reset end
        stop[0] = True
        for t in threads:
            t.join(30)
        check(tokens, "logins before the reset got tokens")
        alive += [t for t in tokens if s.request("GET", "/v1/me", headers=bearer(t)).status == 200]
    eq(len(alive), 0, "tokens of the old password that outlived its reset")


@test(timeout=120)
def test_admin_password_file_removed_on_change_over_http():
    s = H.Server(name="accounts-adminpw")
    s.start()
    path = os.path.join(s.data_dir, "admin.password")
    old = s.admin_password()
    PASSWORDS.append(old)
    create(s, "second-admin", "admin", "second-admin-pw")
    t2 = s.token_for("second-admin", "second-admin-pw")
    r = s.request("PUT", "/v1/users/second-admin/password",
                  body=json.dumps({"old_password": "second-admin-pw", "password": pw("second-admin-pw2")}), headers=JSON)
    eq(r.status, 204, "admin sets another admin's password")
    check(os.path.exists(path), "admin.password stays while the admin account's password is unchanged")
    eq(s.get("/v1/users", headers=bearer(t2)).status, 401, "second-admin's tokens went with its password")
    eq(s.get("/v1/users").status, 200, "the token of the admin who set it stays")
    r = s.request("PUT", "/v1/users/admin/password", body=json.dumps({"old_password": old, "password": pw("admin-new-pw")}),
                  headers=JSON)
    eq(r.status, 204, "admin sets its own password: %s" % short(r.text))
    check(not os.path.exists(path), "admin.password is removed")
    eq(login(s, "admin", old).status, 401, "the generated password no longer works")
    eq(login(s, "admin", "admin-new-pw").status, 201, "the new one does")
    s.stop()


@test(timeout=180)
def test_cli_commands_on_a_stopped_server():
    s = H.Server(name="accounts-cli")
    s.start()
    PASSWORDS.append(s.admin_password())
    for user, role in (("cli-role", "analyst"), ("cli-off", "clinician"), ("cli-pw", "analyst"), ("cli-del", "auditor")):
        create(s, user, role, user + "-pass1")
    toks = {u: s.token_for(u, u + "-pass1") for u in ("cli-role", "cli-off", "cli-pw", "cli-del")}
    s.stop()
    d = s.data_dir
    out = cli("user", "list", "--data", d)
    eq(out.returncode, 0, "user list: %s" % out.stderr)
    lines = out.stdout.splitlines()
    eq(lines[0].split(), ["user", "role", "disabled", "created"], "the table's header")
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    eq(rows["cli-off"][1:3], ["clinician", "no"], "cli-off's row")
    H.parse_time(rows["cli-off"][3])
    check("argon2" not in out.stdout, "no hash in the table")
    for args, stdin in ((["set-role", "cli-role", "auditor"], ""), (["disable", "cli-off"], ""),
                        (["passwd", "cli-pw"], pw("cli-pw-pass2") + "\n"), (["delete", "cli-del"], ""),
                        (["add", "cli-new", "--role", "clinician"], pw("cli-new-pass1") + "\n"),
                        (["disable", "cli-new"], ""), (["enable", "cli-new"], "")):
        r = cli("user", *(args + ["--data", d]), stdin=stdin)
        eq(r.returncode, 0, "medstream user %s: %s %s" % (" ".join(args), r.stdout, r.stderr))
    rows = {ln.split()[0]: ln.split() for ln in cli("user", "list", "--data", d).stdout.splitlines()[1:]}
    eq(rows["cli-role"][1], "auditor", "listed after set-role")
    eq(rows["cli-off"][2], "yes", "listed after disable")
    check("cli-del" not in rows, "gone after delete")
    # refusals: exit 1, saying why, nothing changed
    for args, stdin, why in ((["disable", "admin"], "", "last enabled account"),
                             (["delete", "nobody-here"], "", "no such user"),
                             (["set-role", "cli-role", "superuser"], "", "unknown role"),
                             (["add", "cli-role", "--role", "analyst"], "some-password\n", "already exists"),
                             (["passwd", "cli-role"], "short\n", "password must be")):
        r = cli("user", *(args + ["--data", d]), stdin=stdin)
        eq(r.returncode, 1, "medstream user %s is refused: %s" % (" ".join(args), r.stderr))
        check(why in r.stderr, "it says why (%r): %r" % (why, r.stderr))
        check("short" not in r.stderr or why != "password must be", "the password is not echoed")
    PASSWORDS.append("some-password")
    for args in (["--help"], ["passwd", "--help"]):
        r = cli("user", *args)
        eq(r.returncode, 0, "medstream user %s" % " ".join(args))
    check(all(c in cli("user", "--help").stdout for c in ("add", "list", "set-role", "disable", "enable", "passwd",
                                                          "delete")), "user --help lists every subcommand")
    check("--data" in cli("user", "passwd", "--help").stdout, "a subcommand's --help comes from its option table")
    eq(cli("user", "frobnicate").returncode, 2, "an unknown subcommand is a usage error")
    eq(cli("user", "set-role", "cli-role", "--data", d).returncode, 2, "a missing argument is a usage error")
    # the server started afterwards sees every change
    s.start()
    eq(s.get("/v1/users/cli-role").json()["role"], "auditor", "set-role seen by the server")
    eq(s.get("/v1/audit?limit=1", headers=bearer(toks["cli-role"])).status, 200,
       "a token from before the stop gets the new role")
    eq(s.get("/v1/users/cli-off").json()["disabled"], True, "disable seen by the server")
    eq(s.get("/v1/public/records", headers=bearer(toks["cli-off"])).status, 401, "the disabled user's token")
    eq(login(s, "cli-off", "cli-off-pass1").status, 401, "the disabled user's login")
    eq(s.get("/v1/public/records", headers=bearer(toks["cli-pw"])).status, 401, "tokens revoked by passwd")
    eq(login(s, "cli-pw", "cli-pw-pass1").status, 401, "the old password")
    eq(login(s, "cli-pw", "cli-pw-pass2").status, 201, "the password set offline")
    eq(s.get("/v1/users/cli-del").status, 404, "delete seen by the server")
    eq(s.request("GET", "/v1/audit?limit=1", headers=bearer(toks["cli-del"])).status, 401, "the deleted user's token")
    eq(login(s, "cli-new", "cli-new-pass1").status, 201, "the user added offline (disabled, enabled) logs in")
    # the audit log has the offline changes, by the OS user, from the command line
    entries = s.get("/v1/audit?limit=1000").json()["entries"]
    offline = [(x["action"], x["resource"], x["outcome"]) for x in entries if x["client"] == "cli"]
    for want in (("users:create", "/v1/users", "ok"), ("users:update", "/v1/users/cli-role", "ok"),
                 ("users:update", "/v1/users/cli-off", "ok"), ("users:update", "/v1/users/cli-pw/password", "ok"),
                 ("users:delete", "/v1/users/cli-del", "ok"), ("users:update", "/v1/users/admin", "denied"),
                 ("users:delete", "/v1/users/nobody-here", "not_found")):
        check(want in offline, "an audit entry %s (have %s)" % (want, offline))
    check(all(x["user"].startswith("local:") for x in entries if x["client"] == "cli"), "actor local:<OS user>")
    # passwd admin offline removes admin.password
    s.stop()
    path = os.path.join(d, "admin.password")
    check(os.path.exists(path), "admin.password is there before")
    r = cli("user", "passwd", "admin", "--data", d, stdin=pw("admin-offline-pw") + "\n")
    eq(r.returncode, 0, "passwd admin: %s" % r.stderr)
    check(not os.path.exists(path), "admin.password removed by passwd admin")
    r = cli("audit", "verify", "--data", d)
    eq(r.returncode, 0, "the audit chain with offline entries verifies: %s" % r.stdout)


@test(timeout=60)
def test_init_says_where_the_password_is():
    import tempfile
    base = tempfile.mkdtemp(prefix="medstream-e2e-init-")
    H._temp_dirs.append(base)
    d = os.path.join(base, "data")
    r = cli("init", d)
    eq(r.returncode, 0, "init: %s" % r.stderr)
    for want in (os.path.join(d, "admin.password"), "0600", "medstream user passwd admin --data " + d,
                 "PUT /v1/users/admin/password", "removed"):
        check(want in r.stdout, "init says %r: %r" % (want, r.stdout))
    r = cli("audit", "verify", "--data", d)
    eq(r.returncode, 0, "verify")
    check("1 entries" in r.stdout, "init's admin creation is audited: %r" % r.stdout)


@test(timeout=120)
def test_audit_entries_of_account_changes():
    """Runs last: the shared server's whole audit log has every change above, and no password anywhere."""
    s = server()
    r = s.get("/v1/audit?limit=1000")
    eq(r.status, 200, "audit read")
    entries = r.json()["entries"]
    got = {(x["action"], x["resource"], x["outcome"], x["user"]) for x in entries}
    for want in (("users:create", "/v1/users", "ok", "admin"),
                 ("users:update", "/v1/users/rolly", "ok", "admin"),
                 ("users:update", "/v1/users/rolly", "error", "admin"),
                 ("users:update", "/v1/users/nobody-here", "not_found", "admin"),
                 ("users:update", "/v1/users/dora", "ok", "admin"),
                 ("users:delete", "/v1/users/dell", "ok", "admin"),
                 ("users:delete", "/v1/users/dell", "not_found", "admin"),
                 ("users:delete", "/v1/users/dell", "denied", "dell-analyst"),
                 ("users:update", "/v1/users/rev/tokens", "ok", "admin"),
                 ("users:update", "/v1/users/pat/password", "ok", "pat"),
                 ("users:update", "/v1/users/pat/password", "ok", "admin"),
                 ("users:update", "/v1/users/pat/password", "denied", "pat"),
                 ("users:update", "/v1/users/pat/password", "error", "pat"),
                 ("users:update", "/v1/users/pat-other/password", "denied", "pat")):
        check(want in got, "an audit entry %s" % (want,))
    # what a change changed: a role granted (an analyst made admin) must be visible to an auditor
    why = {(x["action"], x["resource"], x["outcome"], x.get("reason")) for x in entries}
    for want in (("users:create", "/v1/users", "ok", "role clinician"),
                 ("users:update", "/v1/users/rolly", "ok", "role clinician -> auditor"),
                 ("users:update", "/v1/users/dora", "ok", "disabled false -> true"),
                 ("users:update", "/v1/users/dora", "ok", "disabled true -> false")):
        check(want in why, "an audit entry saying what changed %s" % (want,))
    roles = {(x["user"], x["role"]) for x in entries if x["action"].startswith("users:")}
    check(("pat", "analyst") in roles and ("admin", "admin") in roles, "the actor's role is recorded: %s" % roles)
    no_secrets(r.body, "the audit log")
    no_secrets(s.get("/v1/users").body, "the account list")


if __name__ == "__main__":
    H.main()

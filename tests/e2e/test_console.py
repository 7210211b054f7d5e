# End-to-end tests of the console (issue 14): the page and its assets over HTTP (no token needed, the
# Content-Security-Policy, nosniff, no-referrer, cache headers, each asset's name carrying the hash of its
# bytes, every reference and module import resolving), GET /v1/me for each role; then the console in a real
# browser, Debian's Chromium (/usr/bin/chromium) driven by Playwright from PyPI (installed into build/venv
# with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1: no browser is ever downloaded): sign-in with a bad and a good
# password, the token in sessionStorage only (no localStorage, no cookie), each role offered exactly its
# views and the audited-access banner on PHI views, a lapsed session signing in again with the view kept,
# sign-out revoking the token, a clinician's patient found by name and date of birth with its history
# and as-of control showing the right version, an analyst's export done with its rows and a download link,
# an admin creating a user who can then sign in. In every browser test: no request leaves the test
# server (all others are aborted and fail the test), no console error, no Content-Security-Policy
# violation.
#
# Run: /usr/bin/python3 tests/e2e/test_console.py [NAME_SUBSTRING...]   (re-runs itself under build/venv's
# python for Playwright; see harness.py, run.sh)

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import harness as H
from harness import check, eq, short, test

CHROMIUM = "/usr/bin/chromium"
ROLES = ("clinician", "analyst", "auditor")
VIEWS = {  # the views each role of the default table is offered (web/views.js)
    "admin": ["patients", "notifications", "public", "counters", "exports", "audit", "users", "rules", "health"],
    "clinician": ["patients", "notifications", "public", "counters"],
    "analyst": ["public", "counters", "exports"],
    "auditor": ["audit"],
}
PHI_VIEWS = {"patients", "notifications", "audit"}


def _playwright_or_reexec():
    """Playwright's sync API; when this python lacks it, run this file again under build/venv's python
    (made, and Playwright installed into it, on first use). None when it cannot be installed."""
    try:
        from playwright import sync_api
        return sync_api
    except ImportError:
        pass
    if os.environ.get("MEDSTREAM_CONSOLE_VENV"):
        return None
    try:
        py = H.venv_python(["playwright.sync_api"], ["playwright"])
    except RuntimeError as e:
        sys.stderr.write("%s\n" % e)
        os.environ["MEDSTREAM_CONSOLE_VENV"] = "1"
        return None
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", MEDSTREAM_CONSOLE_VENV="1")
    os.execve(py, [py] + sys.argv, env)


PW = _playwright_or_reexec()


def srv():
    s = H.shared_servers.get("console")
    if s is None:
        s = H.shared_server("console")
        for role in ROLES:
            r = s.request("POST", "/v1/users", body=json.dumps({"user": "c-" + role, "password": "pw-" + role + "-1234",
                                                                 "role": role}),
                          headers={"Content-Type": "application/json"})
            eq(r.status, 201, "creating c-%s (%s)" % (role, short(r.text)))
    return s


def password_of(user):
    return srv().admin_password() if user == "admin" else "pw-" + user[2:] + "-1234"


# ---- over HTTP ----

def page():
    r = H.http_request(srv().port, "GET", "/")  # no token
    eq(r.status, 200, "GET / without a token (%s)" % short(r.text))
    return r


def check_console_headers(r, what):
    csp = r.headers.get("content-security-policy", "")
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                      "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"):
        check(directive in csp, "%s: CSP lacks %r: %r" % (what, directive, csp))
    check("unsafe-inline" not in csp and "unsafe-eval" not in csp, "%s: CSP allows inline or eval: %r" % (what, csp))
    eq(r.headers.get("x-content-type-options"), "nosniff", "%s: X-Content-Type-Options" % what)
    eq(r.headers.get("referrer-policy"), "no-referrer", "%s: Referrer-Policy" % what)


@test
def test_page_served_without_a_token_under_a_strict_csp():
    r = page()
    check(r.headers.get("content-type", "").startswith("text/html"), "Content-Type %r" % r.headers.get("content-type"))
    eq(r.headers.get("cache-control"), "no-cache", "the page is revalidated on every load")
    check_console_headers(r, "GET /")
    html = r.text
    check(not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script> in the page")
    check("style=" not in html and "<style" not in html, "inline style in the page")
    check(not re.search(r"(src|href)=\"(https?:)?//", html), "the page names another origin")
    # the API's answers carry the two headers too
    h = H.http_request(srv().port, "GET", "/healthz")
    eq((h.headers.get("x-content-type-options"), h.headers.get("referrer-policy")), ("nosniff", "no-referrer"),
       "headers of /healthz")


@test
def test_every_asset_is_named_by_its_hash_and_resolves():
    s = srv()
    todo = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page().text)
    check(len(todo) >= 3, "the page names only %s" % todo)
    seen = {}
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        r = H.http_request(s.port, "GET", path)
        eq(r.status, 200, "GET %s (%s)" % (path, short(r.text)))
        m = re.fullmatch(r"/assets/[\w-]+\.([0-9a-f]{12})(\.\w+)", path)
        check(m, "%s: not <name>.<12 hex>.<ext>" % path)
        eq(m.group(1), hashlib.sha256(r.body).hexdigest()[:12], "%s: the hash in its name" % path)
        check(r.headers.get("content-type", "").startswith(types[m.group(2)]), "%s: Content-Type %r"
              % (path, r.headers.get("content-type")))
        eq(r.headers.get("cache-control"), "public, max-age=31536000, immutable", "%s: Cache-Control" % path)
        check_console_headers(r, path)
        seen[path] = r.body
        if path.endswith(".js"):
            imports = re.findall(r'^\s*import\b[^;]*?from\s+"([^"]+)"', r.text, re.M)
            for imp in imports:
                check(imp.startswith("/assets/"), "%s imports %r, not a hashed asset" % (path, imp))
            todo += imports
            check("innerHTML" not in r.text and "eval(" not in r.text, "%s: innerHTML or eval" % path)
            check("localStorage" not in r.text.replace("never localStorage", ""), "%s uses localStorage" % path)
    check(any(p.endswith(".js") and "/views." in p for p in seen), "views.js never reached: %s" % list(seen))
    # a name that is not an asset's, or an asset's name with another hash, is a 404
    for bad in ("/assets/app.js", "/assets/app.000000000000.js", "/assets/..%2findex.html", "/assets/nope"):
        r = H.http_request(s.port, "GET", bad)
        eq(r.status, 404, "GET %s (%s)" % (bad, short(r.text)))


@test
def test_me_answers_the_role_and_its_permissions():
    s = srv()
    eq(H.http_request(s.port, "GET", "/v1/me").status, 401, "GET /v1/me without a token")
    everything = set(s.get_json("/v1/me")["permissions"])
    eq(len(everything), 40, "the admin's permissions")
    want = {
        "clinician": {"records:create", "records:read", "records:update", "patients:create", "patients:read",
                      "patients:update", "public:read", "notifications:create", "notifications:read"},
        "analyst": {"public:read", "exports:create", "exports:read"},
        "auditor": {"audit:read"},
    }
    for role in ROLES:
        tok = s.token_for("c-" + role, password_of("c-" + role))
        me = s.get_json_as = H.http_request(s.port, "GET", "/v1/me", headers={"Authorization": "Bearer " + tok}).json()
        eq((me["user"], me["role"]), ("c-" + role, role), "who GET /v1/me answers")
        eq(set(me["permissions"]), want[role], "the permissions of %s" % role)


@test
def test_roles_lists_the_table_in_force():
    s = srv()
    roles = s.get_json("/v1/roles")["roles"]
    eq([r["role"] for r in roles], ["admin", "ingest", "clinician", "analyst", "auditor"], "the default roles")
    for r in roles:
        if r["role"] in ROLES:
            tok = s.token_for("c-" + r["role"], password_of("c-" + r["role"]))
            me = H.http_request(s.port, "GET", "/v1/me", headers={"Authorization": "Bearer " + tok}).json()
            eq(r["permissions"], me["permissions"], "GET /v1/roles and GET /v1/me for %s" % r["role"])
    tok = s.token_for("c-analyst", password_of("c-analyst"))
    eq(H.http_request(s.port, "GET", "/v1/roles", headers={"Authorization": "Bearer " + tok}).status, 403,
       "GET /v1/roles as an analyst")


@test(timeout=90)
def test_browser_user_form_offers_the_role_files_roles():
    path = os.path.join(tempfile.mkdtemp(prefix="medstream-roles-"), "roles.json")
    with open(path, "w") as f:
        json.dump({"admin": {r: "crud" for r in ("records", "patients", "public", "audit", "users", "exports",
                                                 "metrics", "rules", "notifications", "counters")},
                   "nurse": {"patients": "r", "public": "r"}, "reviewer": {"audit": "r"}}, f)
    s = H.shared_server("console-roles", args=["--roles", path])
    eq([r["role"] for r in s.get_json("/v1/roles")["roles"]], ["admin", "nurse", "reviewer"], "the file's roles")
    c = Console()
    c.base = "http://127.0.0.1:%d" % s.port
    c.open()
    c.sign_in("admin", s.admin_password())
    c.page.click('#nav a[data-view="users"]')
    view = '[data-view-body="users"]'
    c.page.wait_for_selector(view + " table")
    offered = c.page.eval_on_selector_all(view + ' form select[name="role"] option', "os => os.map(o => o.value)")
    eq(offered, ["", "admin", "nurse", "reviewer"], "the roles offered for a new user (none chosen)")
    c.done()


@test
def test_audit_verify_answers_the_chain():
    s = srv()
    tok = s.token_for("c-auditor", password_of("c-auditor"))
    r = H.http_request(s.port, "GET", "/v1/audit/verify", headers={"Authorization": "Bearer " + tok})
    eq(r.status, 200, "GET /v1/audit/verify as the auditor (%s)" % short(r.text))
    v = r.json()
    eq((v["intact"], v["bad_entry"], v["why"]), (True, None, None), "an untouched chain")
    check(re.fullmatch(r"[0-9a-f]{64}", v["head"]), "head: %r" % v["head"])
    # the auditor's own login, answered before the request, is among the entries counted
    logins = [e for e in s.audit_entries(user="c-auditor") if e["action"] == "auth:login"]
    check(logins and v["entries"] >= logins[-1]["seq"], "entries %d, the login's seq %s" % (v["entries"], logins[-1:]))
    tok = s.token_for("c-clinician", password_of("c-clinician"))  # an audited login: one more entry
    again = s.get_json("/v1/audit/verify")
    check(again["entries"] > v["entries"] and again["head"] != v["head"], "a later walk covers the later entries")
    r = H.http_request(s.port, "GET", "/v1/audit/verify", headers={"Authorization": "Bearer " + tok})
    eq(r.status, 403, "GET /v1/audit/verify as a clinician (%s)" % short(r.text))


# ---- the generator (tools/console_embed.c) ----

EMBED = os.path.join(H.REPO_ROOT, "build", "console_embed")


def embed(files):
    """Run the generator on files {name: text} in a temporary directory: (exit code, stderr, {name: (path,
    bytes)} read back from the generated C)."""
    check(os.path.exists(EMBED), "%s is missing: `make` builds it" % EMBED)
    d = tempfile.mkdtemp(prefix="medstream-embed-")
    try:
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        out = os.path.join(d, "out.c")
        r = subprocess.run([EMBED, out] + sorted(os.path.join(d, n) for n in files), capture_output=True, text=True)
        got = {}
        if r.returncode == 0:
            src = open(out).read()
            arrays = dict(re.findall(r"static const unsigned char (a\d+)\[\d+\] = \{([^}]*)\}", src))
            for name, path, array, n in re.findall(r'\{"([^"]+)", "([^"]+)", "[^"]+", (a\d+), (\d+), "[0-9a-f]{64}"\}', src):
                data = bytes(int(x) for x in arrays[array].split(",") if x.strip())[:int(n)]
                got[name] = (path, data)
        return r.returncode, r.stderr, got
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test
def test_generator_rewrites_references_and_hashes_after_rewriting():
    files = {"index.html": '<script type="module" src="/assets/a.js"></script><a href="/assets/a.jsx">',
             "a.js": 'import { b } from "./b.js";\nconst s = "./b.js.map"; const t = \'./b.js\';\n',
             "b.js": "export const b = 1;\n", "s.css": "body { background: url(/assets/i.svg); }\n",
             "i.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>"}
    rc, err, got = embed(files)
    eq(rc, 0, "the generator's exit (%s)" % err)
    eq(got["index.html"][0], "/", "index.html's path")
    for name, (path, data) in got.items():
        if name != "index.html":
            base, ext = name.rsplit(".", 1)
            eq(path, "/assets/%s.%s.%s" % (base, hashlib.sha256(data).hexdigest()[:12], ext), "%s's path" % name)
    a, b = got["a.js"][1].decode(), got["b.js"][0]
    check('from "%s"' % b in a and "'%s'" % b in a, "a.js's references to b.js rewritten: %r" % a)
    check('"./b.js.map"' in a, "a longer name was rewritten: %r" % a)
    check(got["a.js"][0] in got["index.html"][1].decode() and "/assets/a.jsx" in got["index.html"][1].decode(),
          "index.html: %r" % got["index.html"][1])
    check("url(%s)" % got["i.svg"][0] in got["s.css"][1].decode(), "s.css: %r" % got["s.css"][1])
    # b changes: so do b's name, a's bytes (the import) and a's name, while the svg's stays
    rc, err, again = embed(dict(files, **{"b.js": "export const b = 2;\n"}))
    eq(rc, 0, "the generator's exit (%s)" % err)
    check(again["b.js"][0] != got["b.js"][0] and again["a.js"][0] != got["a.js"][0], "a.js's name kept")
    eq(again["i.svg"][0], got["i.svg"][0], "i.svg's name")


@test
def test_generator_refuses_a_cycle_an_unknown_type_and_no_index():
    rc, err, _ = embed({"index.html": "", "a.js": 'import "./b.js";', "b.js": 'import "./a.js";'})
    check(rc != 0 and "cycle" in err, "a cycle: exit %d, %r" % (rc, err))
    rc, err, _ = embed({"index.html": "", "a.exe": "x"})
    check(rc != 0 and "unknown extension" in err, "an unknown type: exit %d, %r" % (rc, err))
    rc, err, _ = embed({"a.js": "x"})
    check(rc != 0 and "index.html" in err, "no index.html: exit %d, %r" % (rc, err))


# ---- in the browser ----

class Browser:
    """One Chromium for the file's browser tests; each test gets a fresh context (no storage shared)."""
    inst = None

    @classmethod
    def get(cls):
        if PW is None:
            raise H.Skip("playwright is not installed and could not be (build/venv)")
        check(os.path.exists(CHROMIUM), "%s is missing: scripts/deps.sh installs Debian's chromium" % CHROMIUM)
        if cls.inst is None:
            cls.inst = cls()
        return cls.inst

    def __init__(self):
        self.pw = PW.sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=CHROMIUM,
                                               args=["--no-sandbox", "--disable-dev-shm-usage"])

    def close(self):
        self.browser.close()
        self.pw.stop()


@H.on_exit
def _close_browser():
    if Browser.inst:
        Browser.inst.close()


class Console:
    """A browser context on the test server's console that records what must not happen: a request to
    anything but the server (aborted), a console error, an uncaught error, a CSP violation."""

    def __init__(self, width=1280, height=800):
        self.base = "http://127.0.0.1:%d" % srv().port
        self.ctx = Browser.get().browser.new_context(viewport={"width": width, "height": height},
                                                     accept_downloads=True)
        self.ctx.set_default_timeout(10000)
        self.foreign, self.errors, self.refused, self.requests = [], [], [], []
        self.ctx.route("**/*", self._route)
        self.ctx.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                                 "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
        self.page = self.ctx.new_page()
        self.page.on("console", lambda m: self.errors.append("console.%s: %s" % (m.type, m.text))
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append("uncaught: %s" % e))
        self.page.on("response", lambda r: self.refused.append((r.status, r.request.method, r.url[len(self.base):]))
                     if r.status >= 400 else None)

    def _route(self, route):
        url = route.request.url
        self.requests.append((time.monotonic(), route.request.method, url[len(self.base):]))
        if url.startswith(self.base + "/") or url == self.base:
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def open(self, hash_=""):
        self.page.goto(self.base + "/" + hash_)

    def sign_in(self, user, password=None, expect_ok=True):
        p = self.page
        p.wait_for_selector("#signin:not([hidden])")
        p.fill("#signin-user", user)
        p.fill("#signin-password", password if password is not None else password_of(user))
        p.click("#signin-form button[type=submit]")
        if expect_ok:
            p.wait_for_selector("#signin", state="hidden")
            p.wait_for_selector("#nav a")

    def nav(self):
        return [a.get_attribute("data-view") for a in self.page.query_selector_all("#nav a")]

    def _loads(self):
        return [e for e in self.errors if "Failed to load resource: the server responded with a status of" in e]

    def done(self, refused=()):
        """The checks every browser test ends with. refused: the (status, method, path) answers >= 400 the
        test caused on purpose (Chromium logs each as a console error, which is then not one)."""
        # a view may render one refusal while the answer to its other call is still on its way: wait (a
        # while, not forever) until as many answers and console errors as expected have arrived
        deadline = time.monotonic() + 5.0
        while (len(self.refused) < len(refused) or len(self._loads()) < len(refused)) and time.monotonic() < deadline:
            self.page.wait_for_timeout(50)
        csp = self.page.evaluate("window.__csp")
        self.ctx.close()
        eq(self.foreign, [], "requests to anything but the test server")
        eq(csp, [], "Content-Security-Policy violations")
        eq(sorted(self.refused), sorted(refused), "answers >= 400 (status, method, path)")
        loads = self._loads()
        eq(len(loads), len(self.refused), "console errors of refused loads: %s" % loads)
        eq([e for e in self.errors if e not in loads], [], "console errors")


def browser_test(refused=()):
    """A browser test: its Console checked at the end, with the refusals it causes on purpose."""
    def wrap(fn):
        def run():
            c = Console()
            fn(c)
            c.done(refused)
        run.__name__ = fn.__name__
        return test(timeout=90)(run)
    return wrap


@test(timeout=90)
def test_browser_the_checks_catch_an_inline_script_and_a_foreign_request():
    """The checks every browser test ends with can fail: an inline script is refused by the CSP and
    reported, a request to another origin is aborted and recorded."""
    c = Console()
    c.open()
    c.page.wait_for_selector("#signin:not([hidden])")
    c.page.evaluate("document.body.append(Object.assign(document.createElement('script'), {textContent: 'window.ran = 1'}))")
    c.page.evaluate("fetch('http://198.51.100.7/x').catch(() => null)")
    c.page.wait_for_function("window.__csp.length > 1")
    eq(c.page.evaluate("window.ran"), None, "the inline script ran")
    csp = c.page.evaluate("window.__csp")
    check(any(v.startswith("script-src") for v in csp), "the inline script's violation: %s" % csp)
    check(any(v.startswith("connect-src") and "198.51.100.7" in v for v in csp), "the fetch's violation: %s" % csp)
    check(any("Content Security Policy" in e for e in c.errors), "the console error of the refusal: %s" % c.errors)
    # past the CSP (a navigation), the route aborts it and records it
    other = c.ctx.new_page()
    try:
        other.goto("http://198.51.100.7/x")
        H.fail("the navigation to another origin was not aborted")
    except PW.Error:
        pass
    eq(c.foreign, ["http://198.51.100.7/x"], "the foreign request recorded")
    c.ctx.close()


@browser_test(refused=[(401, "POST", "/v1/auth/token")])
def test_browser_sign_in_bad_then_good_keeps_the_token_in_the_session_only(c):
    c.open()
    c.sign_in("admin", "not-the-password", expect_ok=False)
    c.page.wait_for_selector("#signin-error:not([hidden])")
    check("bad user or password" in c.page.inner_text("#signin-error"), "the error: %r"
          % c.page.inner_text("#signin-error"))
    c.sign_in("admin")
    eq(c.nav(), VIEWS["admin"], "the admin's views")
    check("admin (admin)" in c.page.inner_text("#who"), "who: %r" % c.page.inner_text("#who"))
    stored = c.page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]")
    eq(stored[1:], [0, ""], "localStorage and cookies")
    eq(stored[0], 1, "sessionStorage items")
    eq(c.ctx.cookies(), [], "cookies of the context")



@test(timeout=120)
def test_browser_each_role_sees_its_views_and_the_banner_on_phi():
    for user, role in [("c-clinician", "clinician"), ("c-analyst", "analyst"), ("c-auditor", "auditor"),
                       ("admin", "admin")]:
        c = Console()  # a fresh browser context each: nothing of the last user's session
        c.open()
        c.sign_in(user)
        eq(c.nav(), VIEWS[role], "the views of %s" % role)
        for view in VIEWS[role]:
            c.page.click('#nav a[data-view="%s"]' % view)
            c.page.wait_for_selector('[data-view-body="%s"]' % view)
            banner = c.page.is_visible("#banner")
            eq(banner, view in PHI_VIEWS, "%s: banner on %s" % (role, view))
            if banner:
                check(user in c.page.inner_text("#banner"), "the banner names %s: %r" % (user, c.page.inner_text("#banner")))
        # a view the role is not offered, asked for by its address, is not shown
        other = [v for v in VIEWS["admin"] if v not in VIEWS[role]]
        if other:
            c.page.goto(c.base + "/#/" + other[0])
            c.page.wait_for_function("location.hash !== '#/%s'" % other[0])
            check(not c.page.query_selector('[data-view-body="%s"]' % other[0]), "%s shown %s" % (role, other[0]))
        c.done()


@browser_test(refused=[(401, "GET", "/v1/public/records?type=lapse-probe&limit=50")])
def test_browser_lapsed_session_signs_in_again_and_keeps_the_view(c):
    c.open()
    c.sign_in("c-analyst")
    c.page.click('#nav a[data-view="public"]')
    c.page.fill('[data-view-body="public"] input[name="type"]', "lapse-probe")
    # the session lapses: every token of the account is revoked behind the console's back
    r = srv().request("DELETE", "/v1/users/c-analyst/tokens")
    eq(r.status, 200, "revoking c-analyst's tokens (%s)" % short(r.text))
    c.page.click('[data-view-body="public"] button[type=submit]')
    c.page.wait_for_selector("#signin:not([hidden])")
    check("session ended" in c.page.inner_text("#signin-why"), "why: %r" % c.page.inner_text("#signin-why"))
    eq(c.page.input_value("#signin-user"), "c-analyst", "the user is filled in")
    c.page.fill("#signin-password", password_of("c-analyst"))
    c.page.click("#signin-form button[type=submit]")
    c.page.wait_for_selector('[data-view-body="public"] [data-rows]')
    eq(c.page.input_value('[data-view-body="public"] input[name="type"]'), "lapse-probe", "the form kept its value")
    check("type=lapse-probe" in c.page.inner_text('[data-view-body="public"] [data-curl]'), "the call repeated")



@test(timeout=90)
def test_browser_expired_token_brings_back_the_sign_in():
    short_lived = H.shared_server("console-ttl", args=["--token-ttl", "3"])
    c = Console()
    c.base = "http://127.0.0.1:%d" % short_lived.port
    c.open()
    c.sign_in("admin", short_lived.admin_password())
    c.page.click('#nav a[data-view="users"]')
    c.page.wait_for_selector('[data-view-body="users"] [data-curl]')
    c.page.wait_for_timeout(4000)  # the token expires
    c.page.fill('[data-view-body="users"] input[name="user"]', "after-expiry")
    c.page.fill('[data-view-body="users"] input[name="password"]', "after-expiry-1234")
    c.page.select_option('[data-view-body="users"] select[name="role"]', "clinician")
    c.page.click('[data-view-body="users"] button[type=submit]')
    c.page.wait_for_selector("#signin:not([hidden])")
    check("expired" in c.page.inner_text("#signin-why"), "why: %r" % c.page.inner_text("#signin-why"))
    c.page.fill("#signin-password", short_lived.admin_password())
    c.page.click("#signin-form button[type=submit]")
    c.page.wait_for_selector('[data-view-body="users"] .ok')  # the user was made once signed in again
    short_lived.login()  # the harness's own token expired too
    eq(short_lived.get_json("/v1/users/after-expiry")["role"], "clinician", "the user made after the sign-in")
    c.done(refused=[(401, "POST", "/v1/users")])


@browser_test(refused=[(403, "GET", "/v1/roles"), (403, "GET", "/v1/users")])
def test_browser_a_refusal_shows_the_servers_message(c):
    s = srv()
    s.request("POST", "/v1/users", body=json.dumps({"user": "c-demoted", "password": "pw-demoted-1234",
                                                     "role": "admin"}), headers={"Content-Type": "application/json"})
    c.open()
    c.sign_in("c-demoted", "pw-demoted-1234")
    c.page.click('#nav a[data-view="health"]')
    c.page.wait_for_selector('[data-view-body="health"] [data-health]')
    r = s.request("PATCH", "/v1/users/c-demoted", body='{"role":"auditor"}', headers={"Content-Type": "application/json"})
    eq(r.status, 200, "the role changed (%s)" % short(r.text))
    c.page.click('#nav a[data-view="users"]')
    c.page.wait_for_selector('[data-view-body="users"] [data-status="403"]')
    msg = c.page.inner_text('[data-view-body="users"] [data-status="403"]')
    check("role auditor lacks permission users:read" in msg, "the 403's message: %r" % msg)


@browser_test()
def test_browser_auditor_sees_the_log_and_the_chain(c):
    c.open()
    c.sign_in("c-auditor")
    view = '[data-view-body="audit"]'
    c.page.wait_for_selector(view + ' [data-intact="true"]')
    head = c.page.get_attribute(view + " [data-head]", "data-head")
    check(re.fullmatch(r"[0-9a-f]{64}", head or ""), "the head shown: %r" % head)
    c.page.wait_for_selector(view + ' [data-part="audit"] table')
    c.page.fill(view + ' input[name="user"]', "c-auditor")
    c.page.click(view + " form button[type=submit]")
    c.page.wait_for_selector(view + ' [data-part="audit"] [data-curl]:has-text("user=c-auditor")')
    users = c.page.eval_on_selector_all(view + ' [data-part="audit"] tbody tr td:nth-child(3)', "tds => tds.map(t => t.textContent)")
    check(users and set(users) == {"c-auditor"}, "the entries of user=c-auditor: %s" % users)
    c.page.fill(view + ' input[name="action"]', "auth:login")
    c.page.click(view + " form button[type=submit]")
    c.page.wait_for_selector(view + ' [data-part="audit"] [data-curl]:has-text("action=auth")')
    acts = c.page.eval_on_selector_all(view + ' [data-part="audit"] tbody tr td:nth-child(5)', "tds => tds.map(t => t.textContent)")
    check(acts and set(acts) == {"auth:login"}, "the entries of user=c-auditor, action=auth:login: %s" % acts)
    check(c.page.is_visible("#banner"), "the audited-access banner")


@browser_test()
def test_browser_sign_out_revokes_the_token(c):
    c.open()
    c.sign_in("c-auditor")
    c.page.wait_for_selector('[data-view-body="audit"] [data-curl]')  # its call answered before the sign-out
    token = c.page.evaluate("JSON.parse(sessionStorage.getItem('medstream.session')).token")
    eq(H.http_request(srv().port, "GET", "/v1/me", headers={"Authorization": "Bearer " + token}).status, 200,
       "the console's token before sign-out")
    c.page.click("#signout")
    c.page.wait_for_selector("#signin:not([hidden])")
    eq(c.page.evaluate("sessionStorage.length"), 0, "sessionStorage after sign-out")
    eq(H.http_request(srv().port, "GET", "/v1/me", headers={"Authorization": "Bearer " + token}).status, 401,
       "the console's token after sign-out")


def find_patient(c, name, dob):
    """Sign in as the clinician, open the patients view and look the patient up by name and date of birth;
    the view's selector."""
    c.open()
    c.sign_in("c-clinician")
    c.page.click('#nav a[data-view="patients"]')
    view = '[data-view-body="patients"]'
    c.page.fill(view + ' input[name="name"]', name)
    c.page.fill(view + ' input[name="dob"]', dob)
    c.page.click(view + " form button[type=submit]")
    return view


@browser_test()
def test_browser_clinician_finds_a_patient_and_reads_its_history_as_of(c):
    s = srv()
    name, dob = "Console Person " + H.rand_token(), "1977-03-04"
    base = {"name": name, "dob": dob, "type": "visit", "ts": "2024-02-01T10:00:00Z"}
    s.ingest_ok([dict(base, record_id="cons-" + H.rand_token(), phone="555-0101")])
    s.ingest_ok([dict(base, record_id="cons-" + H.rand_token(), phone="555-0202", ts="2024-03-01T10:00:00Z")])
    want = s.get_json("/v1/patients?" + H.q({"name": name, "dob": dob}))
    history = s.get_json("/v1/patients/%s/history" % want["patient_id"])["versions"]
    check(len(history) >= 2, "the patient has %d versions" % len(history))
    view = find_patient(c, name, dob)
    c.page.wait_for_selector(view + " [data-version]")
    eq(c.page.get_attribute(view + " p[data-version]", "data-version"), str(want["version"]), "the state's version")
    check(c.page.is_visible("#banner"), "the audited-access banner")
    c.page.wait_for_selector(view + " ol.timeline li")
    eq(len(c.page.query_selector_all(view + " ol.timeline li")), len(history), "versions on the timeline")
    curl = c.page.inner_text(view + " [data-curl]")
    check(curl.startswith("curl ") and "/v1/patients?" in curl and "$MEDSTREAM_TOKEN" in curl, "curl: %r" % curl)
    check("ms_" not in c.page.inner_text("body"), "a token is shown in the page")
    # the as-of control: the first version's instant shows the first version
    first = history[0]
    c.page.select_option(view + ' select[name="as_of"]', first["valid_from"])
    c.page.wait_for_selector(view + ' p[data-version="%s"]' % first["version"])
    check(first["valid_from"] in c.page.inner_text(view + " [data-asof]"), "as of: %r"
          % c.page.inner_text(view + " [data-asof]"))
    got = c.page.inner_text(view + " section dl.fields")
    check(first["fields"].get("phone", "") in got, "the first version's fields: %r" % got)
    # the event-time control: only the record of February is merged (phone 555-0101), as the API says
    c.page.select_option(view + ' select[name="as_of"]', "")
    c.page.fill(view + ' input[name="event_at"]', "2024-02-15T00:00:00Z")
    c.page.press(view + ' input[name="event_at"]', "Enter")
    c.page.wait_for_selector(view + ' section [data-curl]:has-text("event_at=")')
    api = s.get_json("/v1/patients/%s?event_at=2024-02-15T00:00:00Z" % want["patient_id"])
    eq(api["fields"].get("phone"), "555-0101", "the API's state up to February 15")
    check("555-0101" in c.page.inner_text(view + " section dl.fields") and
          "555-0202" not in c.page.inner_text(view + " section dl.fields"), "the state up to February 15: %r"
          % c.page.inner_text(view + " section dl.fields"))
    entries = s.audit_entries(user="c-clinician", patient_id=want["patient_id"])
    check(entries, "the console's reads are audited")


@browser_test()
def test_browser_clinician_pages_through_a_long_history(c):
    """The history comes a page at a time (100 versions by default): a patient of 103 versions shows the first
    100 on the timeline, and "Next versions" adds the last 3, each also an instant to pick."""
    s = srv()
    name, dob = "Long History " + H.rand_token(), "1979-09-09"
    s.ingest_ok([{"record_id": "cons-long-%s-%03d" % (dob, i), "name": name, "dob": dob, "type": "visit",
                  "ts": "2024-02-01T10:00:00Z", "step": i} for i in range(103)])
    want = s.get_json("/v1/patients?" + H.q({"name": name, "dob": dob}))
    eq(want["version"], 103, "the patient's versions")
    view = find_patient(c, name, dob)
    c.page.wait_for_selector(view + " ol.timeline li")
    eq(len(c.page.query_selector_all(view + " ol.timeline li")), 100, "versions on the timeline, first page")
    c.page.click(view + ' button:text-is("Next versions")')
    c.page.wait_for_selector(view + ' ol.timeline li[data-version="103"]')
    eq([int(x) for x in c.page.eval_on_selector_all(view + " ol.timeline li", "lis => lis.map(l => l.dataset.version)")],
       list(range(1, 104)), "versions on the timeline after the next page, in order")
    eq(len(c.page.query_selector_all(view + ' select[name="as_of"] option')), 104, "instants to pick: now and each")
    check(not c.page.query_selector(view + ' button:text-is("Next versions")'), "no next page after the last")


@browser_test()
def test_browser_clinician_reads_a_patients_records_and_a_records_children(c):
    s = srv()
    name, dob, parent = "Family Person " + H.rand_token(), "1966-06-06", "cons-p-" + H.rand_token()
    base = {"name": name, "dob": dob, "ts": "2024-05-01T00:00:00Z"}
    s.ingest_ok([dict(base, record_id=parent, type="order")] +
                [dict(base, record_id=parent + "-c%d" % i, type="result", parent_id=parent,
                      ts="2024-05-0%dT00:00:00Z" % (i + 2)) for i in range(2)])
    view = find_patient(c, name, dob)
    c.page.wait_for_selector(view + ' section[aria-labelledby="records-h"] table')
    ids = c.page.eval_on_selector_all(view + ' section[aria-labelledby="records-h"] tbody tr td:first-child',
                                      "tds => tds.map(t => t.textContent)")
    eq(sorted(ids), sorted([parent, parent + "-c0", parent + "-c1"]), "the patient's records")
    c.page.click(view + ' section[aria-labelledby="records-h"] tbody tr:has(td:text-is("%s")) button' % parent)
    c.page.wait_for_selector(view + ' [data-part="children"] table')
    kids = c.page.eval_on_selector_all(view + ' [data-part="children"] tbody tr td:first-child',
                                       "tds => tds.map(t => t.textContent)")
    eq(kids, [parent + "-c0", parent + "-c1"], "the children, in event-time order")
    check("/v1/records/%s/children" % parent in c.page.inner_text(view + ' [data-part="children"] [data-curl]'),
          "the children's curl line")


@browser_test()
def test_browser_public_records_filtered_and_paged(c):
    s = srv()
    rtype = "pub-" + H.rand_token().lower()
    s.ingest_ok([{"record_id": "cons-pub-%d-%s" % (i, H.rand_token()), "name": "Public Person " + H.rand_token(),
                  "dob": "1940-02-0%d" % (i + 1), "type": rtype, "ts": "2023-07-01T00:00:00Z"} for i in range(3)])
    want = s.get_all("/v1/public/records", "records", type=rtype)
    eq(len(want), 3, "the API's public records of the type")
    c.open()
    c.sign_in("c-analyst")
    view = '[data-view-body="public"]'
    c.page.click('#nav a[data-view="public"]')
    c.page.fill(view + ' input[name="type"]', rtype)
    c.page.fill(view + ' input[name="limit"]', "2")
    c.page.click(view + " form button[type=submit]")
    c.page.wait_for_selector(view + ' [data-rows="2"]')
    curl = c.page.inner_text(view + " [data-curl]")
    check("type=" + rtype in curl and "limit=2" in curl, "the curl line: %r" % curl)
    first = c.page.eval_on_selector_all(view + " tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
    c.page.click(view + ' button:text-is("Next page")')
    c.page.wait_for_selector(view + ' [data-rows="1"]')
    second = c.page.eval_on_selector_all(view + " tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
    eq(sorted(first + second), sorted(r["record_id"] for r in want), "the records over both pages")
    text = c.page.inner_text("main")
    check("Public Person" not in text and "1940-02-0" not in text, "PHI in the public view")
    check(not c.page.is_visible("#banner"), "the PHI banner on a public view")


@browser_test()
def test_browser_admin_health_and_metrics_refresh(c):
    c.open()
    c.sign_in("admin")
    c.page.click('#nav a[data-view="health"]')
    view = '[data-view-body="health"]'
    c.page.wait_for_selector(view + " [data-health]")
    eq(c.page.get_attribute(view + " [data-health]", "data-health"), "ok", "health shown")
    rows = c.page.eval_on_selector_all(view + " table tbody tr", "trs => trs.length")
    check(rows > 3, "only %d key metrics shown" % rows)
    first = c.page.inner_text(view + " [data-asof]")
    eq(c.page.inner_text(view + ' [data-figure="ingest-rate"]'), "…", "the ingest rate before a second refresh")
    srv().ingest_ok([{"record_id": "cons-h-%d-%s" % (i, H.rand_token()), "name": "Rate Person " + H.rand_token(),
                      "dob": "1930-03-03", "type": "rate"} for i in range(20)])
    c.page.wait_for_function("sel => { const e = document.querySelector(sel); return e && e.textContent !== %s; }"
                             % json.dumps(first), arg=view + " [data-asof]", timeout=12000)
    c.page.wait_for_selector(view + ' [data-figure="ingest-rate"]')
    rate = c.page.inner_text(view + ' [data-figure="ingest-rate"]')
    check(re.fullmatch(r"\d+\.\d records/s", rate) and float(rate.split()[0]) > 0, "the ingest rate: %r" % rate)
    check(c.page.inner_text(view + ' [data-figure="freshness"]').endswith(" ms"), "freshness: %r"
          % c.page.inner_text(view + ' [data-figure="freshness"]'))


@browser_test()
def test_browser_clinician_sees_a_notification_within_a_second(c):
    s = srv()
    rule = "console-" + H.rand_token().lower()
    word = "zq" + H.rand_token().lower()
    r = s.request("POST", "/v1/rules", body=json.dumps({"name": rule, "fields": ["notes"], "any": [word]}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST /v1/rules (%s)" % short(r.text))
    c.open()
    c.sign_in("c-clinician")
    c.page.click('#nav a[data-view="notifications"]')
    view = '[data-view-body="notifications"]'
    c.page.fill(view + ' input[name="rule"]', rule)
    c.page.click(view + " button[type=submit]")
    c.page.wait_for_selector(view + ' [data-stream="live"]')
    check("curl -sSN" in c.page.inner_text(view + " [data-curl]") and "rule=" + rule in c.page.inner_text(view + " [data-curl]"),
          "the stream's curl line: %r" % c.page.inner_text(view + " [data-curl]"))
    t0 = time.monotonic()
    ans = s.ingest_ok([{"record_id": "cons-n-" + H.rand_token(), "name": "Notified Person " + H.rand_token(),
                        "dob": "1990-09-09", "type": "note", "notes": "suspected " + word + " today"}])
    c.page.wait_for_selector(view + " tr[data-seq]", timeout=5000)
    took = time.monotonic() - t0
    check(took < 1.0, "the notification appeared %.2f s after the ingest was answered" % took)
    row = c.page.inner_text(view + " tr[data-seq]")
    check(rule in row and ans["items"][0]["patient_id"] in row, "the event row: %r" % row)
    check(word not in c.page.inner_text("main"), "the matched text is shown")
    c.page.click('#nav a[data-view="public"]')  # the stream ends with its view


@browser_test()
def test_browser_counter_chart_matches_the_api(c):
    s = srv()
    name = "cons_" + H.rand_token().lower()
    rtype = "chart-" + H.rand_token().lower()
    r = s.request("POST", "/v1/counters", body=json.dumps({"name": name, "type": rtype, "max_window": "7d",
                                                            "resolution": "1m"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST /v1/counters (%s)" % short(r.text))
    now = time.time()
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    s.ingest_ok([{"record_id": "cons-c-%d-%s" % (i, H.rand_token()), "name": "Chart Person " + H.rand_token(),
                  "dob": "1950-01-01", "type": rtype, "ts": stamp(now - off)}
                 for i, off in enumerate([120, 180, 2 * 3600 + 60, 3 * 86400])])
    want_24h = s.get_json("/v1/counters/%s?window=24h" % name)["count"]
    want_7d = s.get_json("/v1/counters/%s?window=7d" % name)["count"]
    eq((want_24h, want_7d), (3, 4), "the API's counts")
    c.open()
    c.sign_in("c-analyst")
    c.page.click('#nav a[data-view="counters"]')
    view = '[data-view-body="counters"]'
    check(not c.page.query_selector(view + ' input[name="max_window"]'), "the analyst is offered to define a counter")
    c.page.click(view + ' [data-chart="%s:24h"]' % name)
    c.page.wait_for_selector(view + " [data-total]")
    bars = c.page.eval_on_selector_all(view + " svg.chart rect.bar", "rs => rs.map(r => +r.getAttribute('data-count'))")
    eq(len(bars), 24, "bars of the 24 h chart")
    # 24 contiguous hours ending at the server's now: together the 24 h window (no record lies near its edges)
    eq(sum(bars), want_24h, "the 24 h bars %s" % bars)
    eq(bars[-1], 2, "the last hour's bar")
    c.page.click(view + ' [data-chart="%s:7d"]' % name)
    c.page.wait_for_selector(view + ' h2:has-text("7 days")')
    bars = c.page.eval_on_selector_all(view + " svg.chart rect.bar", "rs => rs.map(r => +r.getAttribute('data-count'))")
    eq(len(bars), 7, "bars of the 7 d chart")
    eq(sum(bars), want_7d, "the 7 d bars %s" % bars)
    check("at=" in c.page.inner_text(view + ' [data-part="chart"] [data-curl]'), "the chart's curl line")


@browser_test()
def test_browser_analyst_export_done_with_its_rows_and_download(c):
    s = srv()
    s.ingest_ok([{"record_id": "cons-x-" + H.rand_token(), "name": "Export Person " + H.rand_token(),
                  "dob": "1960-01-0%d" % (i + 1), "type": "console-export", "ts": "2024-01-01T00:00:00Z"}
                 for i in range(3)])
    c.open()
    c.sign_in("c-analyst")
    c.page.click('#nav a[data-view="exports"]')
    view = '[data-view-body="exports"]'
    c.page.select_option(view + ' select[name="format"]', "csv")
    c.page.fill(view + ' input[name="type"]', "console-export")
    c.page.click(view + " button[type=submit]")
    c.page.wait_for_selector(view + ' [data-state="done"]', timeout=60000)
    text = c.page.inner_text(view + ' [data-state="done"]')
    export_id = re.search(r"Export (\S+):", text).group(1)
    api = s.get_json("/v1/exports/" + export_id)
    eq(c.page.get_attribute(view + " [data-total-rows]", "data-total-rows"), str(api["rows"]), "rows shown")
    with c.page.expect_download() as dl:
        c.page.click(view + " [data-download]")
    data = open(dl.value.path(), "rb").read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        rows = 0
        for m in tar.getmembers():
            if m.isfile() and m.name.startswith("records/") and m.name.endswith(".csv"):
                rows += max(0, len(tar.extractfile(m).read().decode().strip().split("\n")) - 1)
        digests = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers() if m.isfile()}
    check(names, "the archive is empty")
    eq(rows, api["record_rows"], "record rows in the downloaded archive (%s)" % names)
    shown = c.page.eval_on_selector_all(view + " table tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
    eq(len(shown), len(api["manifest"]["files"]), "files shown")
    for path, nrows, nbytes, sha in shown:
        eq(digests.get(path), sha, "the SHA-256 shown for %s against the downloaded file" % path)


@browser_test()
def test_browser_admin_phi_ndjson_export_rows_and_checksums(c):
    s = srv()
    rtype = "phi-export-" + H.rand_token().lower()
    s.ingest_ok([{"record_id": "cons-px-%d-%s" % (i, H.rand_token()), "name": "Phi Export " + H.rand_token(),
                  "dob": "1961-01-0%d" % (i + 1), "type": rtype, "ts": "2024-01-01T00:00:00Z"} for i in range(2)])
    c.open()
    c.sign_in("admin")
    c.page.click('#nav a[data-view="exports"]')
    view = '[data-view-body="exports"]'
    c.page.select_option(view + ' select[name="scope"]', "phi")
    c.page.select_option(view + ' select[name="format"]', "ndjson")
    c.page.fill(view + ' input[name="type"]', rtype)
    c.page.click(view + " button[type=submit]")
    c.page.wait_for_selector(view + ' [data-state="done"]', timeout=60000)
    export_id = re.search(r"Export (\S+):", c.page.inner_text(view + ' [data-state="done"]')).group(1)
    api = s.get_json("/v1/exports/" + export_id)
    eq((api["scope"], api["format"], api["record_rows"]), ("phi", "ndjson", 2), "the export the console started")
    with c.page.expect_download() as dl:
        c.page.click(view + " [data-download]")
    with tarfile.open(fileobj=io.BytesIO(open(dl.value.path(), "rb").read())) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    lines = sum(len(b.decode().strip().split("\n")) for n, b in files.items() if n.startswith("records/") and b.strip())
    eq(lines, 2, "record lines in the downloaded NDJSON")
    shown = c.page.eval_on_selector_all(view + " table tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
    for path, nrows, nbytes, sha in shown:
        eq(hashlib.sha256(files.get(path, b"")).hexdigest(), sha, "the SHA-256 shown for %s" % path)
    check(any(e["action"] == "exports:download" for e in s.audit_entries(user="admin")), "the download audited")


@browser_test()
def test_browser_admin_creates_a_user_who_can_sign_in(c):
    user = "made-" + H.rand_token().lower()
    c.open()
    c.sign_in("admin")
    c.page.click('#nav a[data-view="users"]')
    view = '[data-view-body="users"]'
    c.page.fill(view + ' input[name="user"]', user)
    c.page.fill(view + ' input[name="password"]', "made-password-1234")
    c.page.select_option(view + ' select[name="role"]', "auditor")
    c.page.click(view + " button[type=submit]")
    c.page.wait_for_selector(view + " .ok")
    c.page.wait_for_selector(view + ' td:text-is("%s")' % user)
    eq(s_user(user)["role"], "auditor", "the user made through the console")
    c.page.click("#signout")
    c.sign_in(user, "made-password-1234")
    eq(c.nav(), VIEWS["auditor"], "the new user's views")


@browser_test()
def test_browser_admin_changes_a_role_resets_a_password_and_defines_a_rule(c):
    s = srv()
    user = "chg-" + H.rand_token().lower()
    r = s.request("POST", "/v1/users", body=json.dumps({"user": user, "password": "first-password-1", "role": "analyst"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST /v1/users (%s)" % short(r.text))
    c.open()
    c.sign_in("admin")
    c.page.click('#nav a[data-view="users"]')
    view = '[data-view-body="users"]'
    c.page.select_option(view + ' select[data-role-of="%s"]' % user, "auditor")
    H_wait(c, lambda: s_user(user)["role"] == "auditor", "the role changed to auditor",
           lambda: "view: %s; refused: %s; errors: %s; requests: %s" % (short(c.page.inner_text(view), 300), c.refused,
                                                                      c.errors, c.requests))
    c.page.click(view + ' [data-reset="%s"]' % user)
    c.page.fill(view + ' input[aria-label="New password for %s"]' % user, "second-password-2")
    c.page.click(view + ' form:has(input[aria-label="New password for %s"]) button' % user)
    c.page.wait_for_selector(view + ' .ok:has-text("Password set")')
    s.token_for(user, "second-password-2")  # fails the test unless the new password works
    c.page.click('#nav a[data-view="rules"]')
    rv = '[data-view-body="rules"]'
    rule = "cons-rule-" + H.rand_token().lower()
    c.page.fill(rv + ' input[name="name"]', rule)
    c.page.fill(rv + ' input[name="fields"]', "notes, comment")
    c.page.fill(rv + ' input[name="any"]', "alpha beta, gamma")
    c.page.click(rv + " form button[type=submit]")
    c.page.wait_for_selector(rv + ' [data-delete-rule="%s"]' % rule)
    got = s.get_json("/v1/rules/" + rule)
    eq((got["fields"], got["any"]), (["notes", "comment"], ["alpha beta", "gamma"]), "the rule made in the console")
    c.page.click(rv + ' [data-delete-rule="%s"]' % rule)
    c.page.wait_for_selector(rv + ' [data-delete-rule="%s"]' % rule, state="detached")
    eq(s.get(("/v1/rules/" + rule)).status, 404, "the rule after its deletion")


@browser_test()
def test_browser_admin_disables_ends_sessions_of_and_deletes_a_user(c):
    s = srv()
    user = "gone-" + H.rand_token().lower()
    r = s.request("POST", "/v1/users", body=json.dumps({"user": user, "password": "gone-password-1", "role": "auditor"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST /v1/users (%s)" % short(r.text))
    tok = s.token_for(user, "gone-password-1")
    me = lambda: H.http_request(s.port, "GET", "/v1/me", headers={"Authorization": "Bearer " + tok}).status
    eq(me(), 200, "the user's token")
    c.open()
    c.sign_in("admin")
    c.page.click('#nav a[data-view="users"]')
    view = '[data-view-body="users"]'
    c.page.click(view + ' [data-revoke="%s"]' % user)
    c.page.wait_for_selector(view + ' .ok:has-text("Ended 1 sessions of %s")' % user)
    eq(me(), 401, "the user's token after its sessions ended")
    c.page.click(view + ' [data-toggle="%s"]' % user)
    c.page.wait_for_selector(view + ' [data-toggle="%s"]:text-is("Enable")' % user)
    eq(s_user(user)["disabled"], True, "disabled through the console")
    c.page.click(view + ' [data-delete="%s"]' % user)
    eq(s.get("/v1/users/" + user).status, 200, "the user after the first click")
    c.page.click(view + ' [data-delete="%s"]' % user)
    c.page.wait_for_selector(view + ' [data-delete="%s"]' % user, state="detached")
    eq(s.get("/v1/users/" + user).status, 404, "the user after the second click")


def H_wait(c, cond, what, detail=lambda: "", timeout=5.0):
    """Wait for cond() while the browser goes on (Playwright's sync API runs the route handlers, which
    pass every request of the page, only inside its own calls: so wait in one, never in time.sleep)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            H.fail("%s: not within %.0f s %s" % (what, timeout, detail()))
        c.page.wait_for_timeout(50)


def s_user(user):
    return srv().get_json("/v1/users/" + user)


@test(timeout=90)
def test_browser_narrow_screen_and_keyboard():
    c = Console(width=390, height=800)
    c.open()
    p = c.page
    p.wait_for_selector("#signin:not([hidden])")
    p.focus("#signin-user")
    p.keyboard.type("c-clinician")
    p.keyboard.press("Tab")
    p.keyboard.type(password_of("c-clinician"))
    p.keyboard.press("Enter")
    p.wait_for_selector("#nav a")
    for sel in ("#signin-user", "#signin-password"):
        check(p.query_selector('label[for="%s"]' % sel[1:]), "a label for %s" % sel)
    # every control of every view offered has a label (its own <label>, or aria-label)
    for view in VIEWS["clinician"]:
        p.click('#nav a[data-view="%s"]' % view)
        p.wait_for_selector('[data-view-body="%s"]' % view)
        if view != VIEWS["clinician"][0]:  # the first is shown at sign-in; choosing another moves the focus
            eq(p.evaluate("document.activeElement.id"), "main", "focus after choosing %s" % view)
        unlabeled = p.evaluate("""[...document.querySelectorAll('main input, main select')]
            .filter(e => !e.closest('label') && !e.getAttribute('aria-label')).map(e => e.name)""")
        eq(unlabeled, [], "controls without a label on %s" % view)
    # the skip link moves the focus to the view and keeps it
    p.click('#nav a[data-view="public"]')
    p.wait_for_selector('[data-view-body="public"]')
    p.focus("#skip")
    p.keyboard.press("Enter")
    eq((p.evaluate("document.activeElement.id"), p.evaluate("location.hash")), ("main", "#/public"), "after the skip link")
    # while the sign-in is up, nothing behind it takes the keyboard
    p.evaluate("window.dispatchEvent(new CustomEvent('medstream:signin', {detail: 'test'}))")
    p.wait_for_selector("#signin:not([hidden])")
    for _ in range(6):
        p.keyboard.press("Tab")
        inside = p.evaluate("!!document.activeElement.closest('#signin') || document.activeElement === document.body")
        check(inside, "Tab reached %s behind the sign-in" % p.evaluate("document.activeElement.outerHTML.slice(0, 80)"))
    width = p.evaluate("document.documentElement.scrollWidth")
    check(width <= 390, "the page is %dpx wide on a 390px screen" % width)
    c.done()


if __name__ == "__main__":
    H.main()

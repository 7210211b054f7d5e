# Screenshots of the console's main view for each role (issue 14), for docs/ and the README: starts a
# server on a fresh data directory (tests/e2e/harness.py), ingests a few made-up records, defines a rule and
# a counter, then signs in as each role in Debian's Chromium (Playwright from build/venv, as
# tests/e2e/test_console.py runs it) at 1280x800 and writes docs/console-<role>.png. Every name and date
# is invented. Run: build/venv/bin/python3 scripts/console_screenshots.py  (after `make build/medstream`)

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness as H  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

DOCS = os.path.join(H.REPO_ROOT, "docs")


def post(s, path, obj):
    r = s.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
    if r.status not in (200, 201, 202):
        H.fail("POST %s: %d %s" % (path, r.status, r.text))
    return r.json()


def main():
    s = H.Server(name="screenshots")
    s.start()
    try:
        for role in ("clinician", "analyst", "auditor"):
            post(s, "/v1/users", {"user": "demo-" + role, "password": "demo-" + role + "-pw", "role": role})
        post(s, "/v1/rules", {"name": "sepsis", "fields": ["notes"], "any": ["sepsis", "septic shock"]})
        post(s, "/v1/counters", {"name": "labs", "type": "lab", "max_window": "7d", "resolution": "1m"})
        now = time.time()
        stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        recs = []
        for i in range(40):
            recs.append({"record_id": "lab-%03d" % i, "name": "Ada Example %d" % (i % 6), "dob": "1970-01-0%d" % (i % 6 + 1),
                         "type": "lab", "ts": stamp(now - i * 4 * 3600 - 600), "test": "CRP", "value": 3 + i % 9,
                         "notes": "routine"})
        s.ingest_ok(recs)
        s.ingest_ok([{"record_id": "visit-1", "name": "Ada Example 0", "dob": "1970-01-01", "type": "visit",
                      "ts": stamp(now - 7200), "phone": "555-0100", "notes": "admitted"}])
        s.ingest_ok([{"record_id": "visit-2", "name": "Ada Example 0", "dob": "1970-01-01", "type": "visit",
                      "ts": stamp(now - 3600), "phone": "555-0199", "notes": "follow-up"}])
        shots = {
            "clinician": ("demo-clinician", "demo-clinician-pw", "patients", lambda p: (
                p.fill('input[name="name"]', "Ada Example 0"), p.fill('input[name="dob"]', "1970-01-01"),
                p.click('[data-view-body="patients"] form button[type=submit]'),
                p.wait_for_selector("ol.timeline li"))),
            "analyst": ("demo-analyst", "demo-analyst-pw", "counters", lambda p: (
                p.click('[data-chart="labs:7d"]'), p.wait_for_selector("[data-total]"))),
            "auditor": ("demo-auditor", "demo-auditor-pw", "audit", lambda p: p.wait_for_selector('[data-intact]')),
            "admin": ("admin", s.admin_password(), "users", lambda p: p.wait_for_selector('[data-view-body="users"] table')),
        }
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-dev-shm-usage"])
            for role, (user, password, view, prepare) in shots.items():
                ctx = b.new_context(viewport={"width": 1280, "height": 800})
                ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith("http://127.0.0.1:%d/" % s.port)
                          else r.abort())
                p = ctx.new_page()
                p.goto("http://127.0.0.1:%d/" % s.port)
                p.fill("#signin-user", user)
                p.fill("#signin-password", password)
                p.click("#signin-form button[type=submit]")
                p.wait_for_selector("#nav a")
                p.click('#nav a[data-view="%s"]' % view)
                p.wait_for_selector('[data-view-body="%s"]' % view)
                prepare(p)
                p.wait_for_timeout(300)
                out = os.path.join(DOCS, "console-%s.png" % role)
                p.screenshot(path=out)
                print("wrote", out)
                ctx.close()
            b.close()
    finally:
        s.stop()


if __name__ == "__main__":
    main()

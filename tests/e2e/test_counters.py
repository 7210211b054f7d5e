# End-to-end tests of the rolling-window counters (issue 13, docs/API.md "Counters") over real HTTP:
# counters from `serve --counters FILE` and from POST /v1/counters (built from the records already
# stored); exact counts after duplicates, updates that move the type, the event time, the condition and
# the parent, deletions, late records (counted in medstream_counter_late_total) and future ones (counted
# when their time comes); a random stream of changes against a model at many windows and instants, per
# parent too; the per-parent memory cap answered from the children index; permissions (a public counter
# with public:read, a PHI one or a per-parent count only with patients:read, 403 and audited otherwise;
# the list hides PHI counters); bad definitions are 400 naming the key; restarts keep the counts (clean
# stop, kill -9 with a replay, a lost state file rebuilt by a scan); no condition value in /metrics or the
# log; a changed schema: public counters answer under the old version while the re-projection runs and are
# built again under the new one at the switch, exact after deletions and restarts.
#
# Run: /usr/bin/python3 tests/e2e/test_counters.py [NAME_SUBSTRING...]

import datetime
import json
import os
import random
import subprocess
import time

import harness as H
from harness import check, eq, fail, q, short, test

UTC = datetime.timezone.utc
FILE_COUNTERS = [
    {"name": "labs", "type": "lab", "max_window": "1h"},
    {"name": "signed", "where": {"field": "status", "equals": "final"}, "max_window": "1h", "per_parent": True},
    {"name": "blue", "where": {"field": "favorite_color", "in": ["blue", "navy"]}, "max_window": "2h",
     "resolution": "1m"},
]


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now():
    return datetime.datetime.now(UTC)


def new_server(name, counters=FILE_COUNTERS, args=()):
    s = H.Server(name=name)
    path = os.path.join(s.base, "counters.json")
    with open(path, "w") as f:
        json.dump(counters, f)
    s.extra_args = ["--counters", path] + list(args)
    s.start()
    return s


def rec(rid, ts, type_="lab", status=None, color=None, parent=None, who=0):
    r = {"record_id": rid, "name": "Counter Person %d" % who, "dob": "1970-01-%02d" % (1 + who % 28),
         "type": type_, "ts": iso(ts)}
    if status is not None:
        r["status"] = status
    if color is not None:
        r["favorite_color"] = color
    if parent is not None:
        r["parent_id"] = parent
    return r


def count(s, name, headers=None, expect=200, **params):
    r = s.request("GET", "/v1/counters/%s?%s" % (name, q(params)), headers=headers)
    if r.status != expect:
        fail("GET /v1/counters/%s?%s: expected %d, got %d: %s" % (name, q(params), expect, r.status, short(r.text)))
    return r.json()


def n(s, name, **params):
    return count(s, name, **params)["count"]


def metric(s, text_name, label=None):
    txt = s.get("/metrics").text
    for line in txt.splitlines():
        if line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        if key == (text_name if label is None else '%s{counter="%s"}' % (text_name, label)):
            return float(val)
    fail("metric %s %s not in /metrics" % (text_name, label))


def user(s, role):
    name = "u-%s-%s" % (role, H.rand_token(6))
    r = s.request("POST", "/v1/users", body=json.dumps({"user": name, "password": "pw-%s-12345" % role, "role": role}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "creating a %s: %s" % (role, short(r.text)))
    return {"Authorization": "Bearer " + s.token_for(name, "pw-%s-12345" % role)}


# ---------------------------------------------------------------------------------------------

@test(timeout=120)
def test_counts_follow_updates_deletes_late_and_future():
    s = new_server("ctr-follow")
    t0 = now().replace(microsecond=0) - datetime.timedelta(minutes=30)
    rows = [rec("f%d" % i, t0 + datetime.timedelta(seconds=i), status="final" if i % 2 else "draft",
                parent="visit-1" if i < 3 else "visit-2") for i in range(6)]
    s.ingest_ok(rows)
    eq(n(s, "labs", window="1h"), 6, "labs after 6 records")
    eq(n(s, "signed", window="1h"), 3, "signed (status final) after 6 records")
    eq(n(s, "signed", window="1h", parent="visit-1"), 1, "signed children of visit-1")
    # the answer's window: (from, to], to = at rounded down to the resolution
    at = t0 + datetime.timedelta(minutes=10, seconds=0.7)
    a = count(s, "labs", window="15m", at=iso(at))
    eq((a["from"], a["to"], a["count"]), (iso(at.replace(microsecond=0) - datetime.timedelta(minutes=15)),
                                          iso(at.replace(microsecond=0)), 6), "labs at a past instant")
    eq(n(s, "labs", window="10m", at=iso(t0 + datetime.timedelta(seconds=2))), 3, "labs up to f2 (the edge counts)")
    # a duplicate counts once
    ans = s.ingest_ok([rows[0]])
    eq(ans["items"][0]["status"], "duplicate", "resent record")
    eq(n(s, "labs", window="1h"), 6, "labs after a duplicate")
    # a new version moving the type, the condition, the event time out of the window, the parent
    s.ingest_ok([rec("f0", t0, type_="visit", status="draft", parent="visit-1")])
    eq(n(s, "labs", window="1h"), 5, "labs after f0 became a visit")
    late0 = metric(s, "medstream_counter_late_total", "labs")
    s.ingest_ok([rec("f1", now() - datetime.timedelta(hours=2), status="final", parent="visit-1")])
    eq(n(s, "labs", window="1h"), 4, "labs after f1 moved 2 h back")
    eq(metric(s, "medstream_counter_late_total", "labs"), late0 + 1, "late_total after a version out of the window")
    eq(n(s, "signed", window="1h"), 2, "signed after f1 left the window")
    s.ingest_ok([rec("f3", t0 + datetime.timedelta(seconds=3), status="draft", parent="visit-2")])
    eq(n(s, "signed", window="1h"), 1, "signed after f3 became draft")
    s.ingest_ok([rec("f5", t0 + datetime.timedelta(seconds=5), status="final", parent="visit-1")])
    eq(n(s, "signed", window="1h", parent="visit-1"), 1, "signed children of visit-1 after f5 moved there")
    eq(n(s, "signed", window="1h", parent="visit-2"), 0, "signed children of visit-2 after f5 left")
    # a deletion
    r = s.request("DELETE", "/v1/records/f2")
    eq(r.status, 200, "DELETE f2: %s" % short(r.text))
    eq(n(s, "labs", window="1h"), 3, "labs after deleting f2")
    # a late record: not counted, counted as late
    s.ingest_ok([rec("late1", now() - datetime.timedelta(hours=3))])
    eq(n(s, "labs", window="1h"), 3, "labs after a late record")
    eq(metric(s, "medstream_counter_late_total", "labs"), late0 + 2, "late_total after a late record")
    # a future record counts when its time comes
    due = now() + datetime.timedelta(seconds=3)
    s.ingest_ok([rec("soon", due)])
    eq(n(s, "labs", window="1h"), 3, "labs before the future record's time")
    r = s.get("/v1/counters/labs?" + q({"at": iso(now() + datetime.timedelta(seconds=30))}))
    eq(r.status, 400, "at in the future")
    check("at" in r.json()["error"], "the error names at: %s" % r.text)
    while now() < due + datetime.timedelta(seconds=1.2):
        time.sleep(0.2)
    eq(n(s, "labs", window="1h"), 4, "labs once the future record's time came")
    # bad windows are 400 naming the parameter
    for params, word in (({"window": "90m"}, "window"), ({"window": "1.5s"}, "window"), ({"window": "0s"}, "window"),
                         ({"window": "1h", "at": iso(now() - datetime.timedelta(minutes=5))}, "at"),
                         ({"at": "yesterday"}, "at"), ({"parent": "x"}, "parent")):
        r = s.get("/v1/counters/labs?" + q(params))
        eq(r.status, 400, "GET labs %r" % params)
        check(word in r.json()["error"], "the error for %r names %s: %s" % (params, word, r.text))
    eq(s.get("/v1/counters/nope").status, 404, "an unknown counter")
    eq(s.get("/v1/counters/labs?colour=1").status, 400, "an unknown parameter")
    # nothing of a condition's value or a record in /metrics or the log
    text = s.get("/metrics").text + open(s.log_path, encoding="utf-8", errors="replace").read()
    for secret in ("draft", "visit-1", "Counter Person"):
        check(secret not in text, "%r appears in /metrics or the log" % secret)


@test(timeout=240)
def test_random_stream_against_a_model():
    s = new_server("ctr-model")
    rnd = random.Random(1303)
    base = now().replace(microsecond=0) - datetime.timedelta(minutes=50)
    model = {}   # record id -> (ts, type, status, color, parent) of the live version
    ids = ["m%03d" % i for i in range(80)]
    for step in range(30):
        batch, deletes = [], []
        for rid in rnd.sample(ids, 12):
            if rid in model and rnd.random() < 0.15:
                deletes.append(rid)
                continue
            old = model.get(rid)
            kind = rnd.random()
            if old and kind < 0.25:
                ts, t, st, col, par = old   # a duplicate
            else:
                when = rnd.random()
                if when < 0.8:
                    ts = base + datetime.timedelta(seconds=rnd.randint(0, 48 * 60), microseconds=rnd.randint(0, 999999))
                elif when < 0.9:
                    ts = now() - datetime.timedelta(hours=rnd.choice([2, 3]), seconds=rnd.randint(0, 100))  # late
                else:
                    ts = now() + datetime.timedelta(hours=1, seconds=rnd.randint(0, 100))  # future
                t = rnd.choice(["lab", "lab", "visit"])
                st = rnd.choice(["final", "draft", None])
                col = rnd.choice(["blue", "navy", "red", None])
                par = rnd.choice(["p1", "p2", "p3", None])
            batch.append(rec(rid, ts, type_=t, status=st, color=col, parent=par, who=rnd.randint(0, 5)))
            model[rid] = (ts, t, st, col, par)
        if batch:
            ans = s.ingest_ok(batch)
            check(not ans["errors"], "batch %d: %s" % (step, short(ans)))
        for rid in deletes:
            eq(s.request("DELETE", "/v1/records/" + rid).status, 200, "DELETE " + rid)
            del model[rid]

    def expected(name, a, parent=None):
        lo, hi = H.parse_time(a["from"]), H.parse_time(a["to"])
        c = 0
        for ts, t, st, col, par in model.values():
            if not (lo < ts <= hi):
                continue
            if parent is not None and par != parent:
                continue
            if name == "labs" and t != "lab":
                continue
            if name == "signed" and st != "final":
                continue
            if name == "blue" and col not in ("blue", "navy"):
                continue
            c += 1
        return c

    checks = 0
    end = now()
    for i in range(60):
        name = rnd.choice(["labs", "signed", "blue"])
        res_s = 60 if name == "blue" else 1
        max_s = 7200 if name == "blue" else 3600
        # the window must start within max_window of the server's now: keep 5 minutes of slack
        window = rnd.randint(1, (max_s - 300) // res_s) * res_s
        back = rnd.randint(0, max_s - window - 180)
        at = end - datetime.timedelta(seconds=back - 0.5 if back else 0)
        params = {"window": "%ds" % window, "at": iso(at)}
        parent = None
        if name == "signed" and rnd.random() < 0.5:
            parent = rnd.choice(["p1", "p2", "p3", "p9"])
            params["parent"] = parent
        a = count(s, name, **params)
        want = expected(name, a, parent)
        if a["count"] != want:
            fail("%s %r: counted %d, the model %d (%s)" % (name, params, a["count"], want, short(a)))
        checks += 1
    # a counter defined now is built from the same records and agrees
    r = s.request("POST", "/v1/counters", body=json.dumps({"name": "labs2", "type": "lab", "max_window": "1h"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST labs2: %s" % short(r.text))
    for w in (60, 600, 1800, 3600):
        a = count(s, "labs2", window="%ds" % w)
        eq(a["count"], expected("labs", a), "labs2 (built by a scan) over %ds" % w)
        if w < 3600:  # at a past instant, the longest window would start before what the counter holds
            eq(a["count"], count(s, "labs", window="%ds" % w, at=a["at"])["count"], "labs2 and labs over %ds" % w)
    check(checks == 60, "checks made")


@test(timeout=120)
def test_defined_over_http_and_bad_definitions():
    s = new_server("ctr-define")
    t = now() - datetime.timedelta(minutes=5)
    s.ingest_ok([rec("d%d" % i, t, color="navy" if i % 3 == 0 else "red") for i in range(9)])
    h = {"Content-Type": "application/json"}
    good = {"name": "navy.5m", "where": {"field": "favorite_color", "equals": "navy"}, "max_window": "90m",
            "resolution": "1m"}
    r = s.request("POST", "/v1/counters", body=json.dumps(good), headers=h)
    eq(r.status, 201, "POST a counter: %s" % short(r.text))
    eq(r.json()["counter"]["max_window"], "90m", "canonical definition")
    eq(n(s, "navy.5m", window="10m"), 3, "a new counter counts the records stored before it")
    s.ingest_ok([rec("d9", t, color="navy")])
    eq(n(s, "navy.5m", window="10m"), 4, "and follows new ones")
    eq(s.request("POST", "/v1/counters", body=json.dumps(good), headers=h).status, 409, "the same name again")
    eq(s.request("POST", "/v1/counters", body=json.dumps(dict(good, name="labs")), headers=h).status, 409,
       "a file counter's name")
    bad = [({"name": "x"}, "max_window"),
           ({"max_window": "1h"}, "name"),
           ({"name": "a b", "max_window": "1h"}, "name"),
           ({"name": "x", "max_window": "soon"}, "max_window"),
           ({"name": "x", "max_window": "90s", "resolution": "1m"}, "multiple"),
           ({"name": "x", "max_window": "60d"}, "resolution"),
           ({"name": "x", "max_window": "1h", "colour": "red"}, "colour"),
           ({"name": "x", "max_window": "1h", "where": {"field": "name", "equals": "Jane Roe", "in": ["Jane Roe"]}},
            "not two"),
           ({"name": "x", "max_window": "1h", "where": {"equals": "Jane Roe"}}, "where.field"),
           ({"name": "x", "max_window": "1h", "where": {"field": "n", "equals": {"Jane Roe": 1}}}, "where.equals"),
           ({"name": "x", "max_window": "1h", "where": {"field": "n", "exists": "yes"}}, "where.exists"),
           ({"name": "x", "max_window": "1h", "max_parent_buckets": 5000}, "per_parent")]
    for body, word in bad:
        r = s.request("POST", "/v1/counters", body=json.dumps(body), headers=h)
        eq(r.status, 400, "POST %s" % json.dumps(body))
        err = r.json()["error"]
        check(word in err, "the error for %s names %s: %s" % (json.dumps(body), word, err))
        check("Jane" not in err, "the error echoes a value: %s" % err)
    eq(s.request("POST", "/v1/counters", body="[1,", headers=h).status, 400, "not JSON")
    eq(s.request("POST", "/v1/counters", body="{}", headers={"Content-Type": "text/plain"}).status, 415, "not JSON")
    listed = {c["name"]: c for c in s.get_json("/v1/counters")["counters"]}
    eq(sorted(listed), ["blue", "labs", "navy.5m", "signed"], "listed counters")
    eq((listed["labs"]["origin"], listed["navy.5m"]["origin"]), ("file", "api"), "origins")
    eq((listed["labs"]["access"], listed["signed"]["access"]), ("public", "phi"), "access")
    check(listed["labs"]["memory_bytes"] > 8 * 3600, "labs holds 3601 buckets: %s" % listed["labs"])
    # removals: a file counter is 409; an HTTP one goes, and stays gone after a restart
    eq(s.request("DELETE", "/v1/counters/labs").status, 409, "DELETE a file counter")
    eq(s.request("DELETE", "/v1/counters/nope").status, 404, "DELETE an unknown counter")
    r = s.request("POST", "/v1/counters", body=json.dumps({"name": "kept", "type": "lab", "max_window": "1h"}),
                  headers=h)
    eq(r.status, 201, "POST kept")
    eq(s.request("DELETE", "/v1/counters/navy.5m").status, 200, "DELETE navy.5m")
    eq(s.get("/v1/counters/navy.5m").status, 404, "a removed counter")
    s.stop()
    s.start()
    eq(s.get("/v1/counters/navy.5m").status, 404, "a removed counter after a restart")
    eq(n(s, "kept", window="10m"), 10, "a counter defined over HTTP after a restart")
    entries = s.audit_entries()
    acts = [(e["action"], e["resource"], e["outcome"]) for e in entries if e["action"].startswith("counters:")]
    check(("counters:create", "/v1/counters", "ok") in acts and ("counters:delete", "/v1/counters/navy.5m", "ok")
          in acts, "definitions and removals are audited: %s" % acts)
    # a file's definition of a name defined over HTTP replaces it at start, and the stored one is gone
    path = os.path.join(s.base, "counters.json")
    with open(path, "w") as f:
        json.dump(FILE_COUNTERS + [{"name": "kept", "type": "visit", "max_window": "2h"}], f)
    s.stop()
    s.start()
    listed = {c["name"]: c for c in s.get_json("/v1/counters")["counters"]}
    eq((listed["kept"]["origin"], listed["kept"]["max_window"]), ("file", "2h"), "the file's kept replaces the API's")
    eq(n(s, "kept", window="10m"), 0, "kept counts visits now")
    with open(path, "w") as f:
        json.dump(FILE_COUNTERS, f)
    s.stop()
    s.start()
    eq(s.get("/v1/counters/kept").status, 404, "the replaced definition was removed from the store")


@test(timeout=120)
def test_permissions_public_and_phi_counters():
    s = new_server("ctr-perm")
    t = now() - datetime.timedelta(minutes=3)
    s.ingest_ok([rec("p%d" % i, t, status="final", parent="pv", color="blue") for i in range(3)])
    analyst, clinician, ingest = user(s, "analyst"), user(s, "clinician"), user(s, "ingest")
    eq(count(s, "labs", headers=analyst)["count"], 3, "a public counter with public:read")
    eq(count(s, "blue", headers=analyst, window="10m")["count"], 3, "a public where with public:read")
    r = s.get("/v1/counters/signed", headers=analyst)
    eq(r.status, 403, "a PHI counter without patients:read")
    check("patients:read" in r.json()["error"], "the 403 names the permission: %s" % r.text)
    eq(s.get("/v1/counters/labs?parent=pv", headers=analyst).status, 403, "a per-parent count without patients:read")
    eq(s.get("/v1/counters/labs", headers=ingest).status, 403, "no public:read")
    eq(count(s, "signed", headers=clinician)["count"], 3, "a PHI counter with patients:read")
    eq(count(s, "signed", headers=clinician, parent="pv")["count"], 3, "a per-parent count with patients:read")
    names = [c["name"] for c in s.get_json("/v1/counters")["counters"]]
    check("signed" in names, "admin lists the PHI counter")
    r = s.get("/v1/counters", headers=analyst)
    eq(r.status, 200, "list with public:read")
    eq(sorted(c["name"] for c in r.json()["counters"]), ["blue", "labs"], "the analyst's list hides PHI counters")
    h = dict(analyst, **{"Content-Type": "application/json"})
    eq(s.request("POST", "/v1/counters", body=json.dumps({"name": "z", "max_window": "1h"}), headers=h).status, 403,
       "defining needs counters:create")
    eq(s.request("DELETE", "/v1/counters/blue", headers=analyst).status, 403, "removing needs counters:delete")
    entries = [e for e in s.audit_entries() if e["action"] == "patients:read"]
    res = [(e["resource"], e["outcome"]) for e in entries]
    check(("/v1/counters/signed", "denied") in res and ("/v1/counters/signed", "ok") in res,
          "PHI counter reads and refusals are audited: %s" % res)
    check(("/v1/counters/labs", "denied") in res, "a refused per-parent count is audited: %s" % res)
    check(not any("pv" in json.dumps(e) for e in entries), "no parent id in the audit entries")
    # the list with a PHI counter's definition is a PHI read too: audited for the clinician, not for the analyst
    def list_reads():
        return [(e["user"].split("-")[1] if e["user"].startswith("u-") else e["user"], e["outcome"])
                for e in s.audit_entries() if e["resource"] == "/v1/counters" and e["action"] == "patients:read"]
    before = len(list_reads())
    eq(s.get("/v1/counters", headers=clinician).status, 200, "list with patients:read")
    eq(s.get("/v1/counters", headers=analyst).status, 200, "list with public:read")
    deadline = time.time() + 5
    while True:
        listed = list_reads()[before:]
        if listed or time.time() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # an entry of the analyst's list, if there were one, has been committed by now
    eq(list_reads()[before:], [("clinician", "ok")], "patients:read entries of the two lists")


@test(timeout=120)
def test_metrics_leave_out_phi_counters():
    """A counter on PHI fields is read with patients:read, audited, and hidden from the list of a role
    without it; /metrics (metrics:read, or --metrics-listen with no token at all) must not hand out its name
    or its figures either: with a condition on one patient's fields, its changes are that patient's records."""
    mport = H.free_port()
    s = new_server("ctr-metrics-phi", args=["--metrics-listen", "127.0.0.1:%d" % mport])
    t = now() - datetime.timedelta(minutes=3)
    s.ingest_ok([rec("mp%d" % i, t, status="final", parent="mpv", color="blue") for i in range(3)] +
                [rec("mq%d" % i, t - datetime.timedelta(hours=3), status="final") for i in range(2)])  # late
    eq(n(s, "signed", window="1h"), 3, "the PHI counter counts")
    for where, txt in (("the API port", s.get("/metrics").text),
                       ("--metrics-listen", H.http_request(mport, "GET", "/metrics").text)):
        check('counter="labs"' in txt, "%s: a public counter's figures are there" % where)
        lines = [ln for ln in txt.splitlines() if "signed" in ln]
        eq(lines, [], "%s: lines naming the PHI counter" % where)


@test(timeout=180)
def test_restart_keeps_counts():
    s = new_server("ctr-restart")
    t = now() - datetime.timedelta(minutes=20)
    s.ingest_ok([rec("s%02d" % i, t + datetime.timedelta(seconds=7 * i), status=["final", "draft"][i % 2],
                     color=["blue", "red"][i % 3 == 0], parent="rp%d" % (i % 3)) for i in range(40)])
    s.request("DELETE", "/v1/records/s05")
    at = iso(now())

    def answers():
        out = {}
        # windows that still start within max_window of now at the end of the test
        for name, params in (("labs", {"window": "30m"}), ("labs", {"window": "5m"}), ("signed", {"window": "30m"}),
                             ("signed", {"window": "30m", "parent": "rp1"}), ("blue", {"window": "1h"})):
            a = count(s, name, at=at, **params)
            out[(name, tuple(sorted(params.items())))] = a["count"]
        return out

    before = answers()
    eq(before[("labs", (("window", "30m"),))], 39, "labs before the restart")
    took = s.stop()
    eq(took, 0, "a clean stop exits 0")
    check(os.path.exists(os.path.join(s.data_dir, "counters.state")), "the state is saved at a clean stop")
    s.start()
    eq(answers(), before, "counts after a clean restart")
    check("counters loaded at commit" in open(s.log_path).read(), "the state was loaded, not rebuilt")
    # kill -9 after more changes: the saved state is older; the commits after it are replayed
    s.ingest_ok([rec("s%02d" % i, t + datetime.timedelta(seconds=3), status="final", parent="rp1")
                 for i in range(40, 50)])
    s.request("DELETE", "/v1/records/s07")
    after = answers()
    eq(after[("labs", (("window", "30m"),))], 48, "labs after more records")
    s.kill9()
    took = s.start()
    check(took < 5, "ready in %.1f s" % took)
    eq(answers(), after, "counts after kill -9 and a replay")
    # a lost state file: every counter is rebuilt by a scan, to the same counts
    s.stop()
    os.remove(os.path.join(s.data_dir, "counters.state"))
    s.start()
    eq(answers(), after, "counts rebuilt from the stored records")


@test(timeout=180)
def test_per_parent_cap_answers_from_the_index():
    s = new_server("ctr-cap", counters=[])
    base = now().replace(microsecond=0) - datetime.timedelta(minutes=40)
    rows = [rec("c%04d" % i, base + datetime.timedelta(seconds=i), parent="cp%04d" % i, who=i % 20)
            for i in range(1100)]
    rows += [rec("c%04d" % (1100 + i), base + datetime.timedelta(seconds=i), parent="cp0000") for i in range(1, 4)]
    ans = s.ingest_ok(rows)
    check(not ans["errors"], "ingest: %s" % short(ans))
    r = s.request("POST", "/v1/counters", body=json.dumps({"name": "kids", "max_window": "1h", "per_parent": True,
                                                          "max_parent_buckets": 1024}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST kids: %s" % short(r.text))
    eq(n(s, "kids", window="1h"), 1103, "the whole count is kept whatever the cap")
    listed = {c["name"]: c for c in s.get_json("/v1/counters")["counters"]}
    check(listed["kids"]["parent_dropped"] > 0 and listed["kids"]["parent_buckets"] <= 1024,
          "the cap held: %s" % listed["kids"])
    a = count(s, "kids", window="1h", parent="cp1099")
    eq((a["count"], a["source"]), (1, "index"), "a parent past the cap, from the index")
    a = count(s, "kids", window="1h", parent="cp0000")
    eq(a["count"], 4, "a parent with 4 children")
    eq(count(s, "kids", window="1h", parent="nobody")["count"], 0, "an unknown parent")
    # a deletion frees a pair; a window after the dropped buckets is then answered from memory
    eq(s.request("DELETE", "/v1/records/c0500").status, 200, "DELETE c0500")
    eq(count(s, "kids", window="1h", parent="cp0500")["count"], 0, "a deleted child")
    later = base + datetime.timedelta(seconds=1200)
    s.ingest_ok([rec("late-kid", later, parent="cp0001")])
    a = count(s, "kids", window="60s", at=iso(later), parent="cp0001")
    eq((a["count"], a["source"]), (1, "memory"), "a window after the gap, from memory")


ZIP_BASE = {"identity": {"name": "name", "dob": "dob"}, "record_id": "record_id", "type": "type", "event_time": "ts"}
ZIP_S1 = dict(ZIP_BASE, public={"type": "copy", "ts": "year", "zip": "copy", "favorite_color": "copy"})
# S2: zip published as its first three digits, favorite_color no longer published
ZIP_S2 = dict(ZIP_BASE, public={"type": "copy", "ts": "year", "zip": "zip3"})
ZIP_COUNTERS = [
    {"name": "boston", "type": "visit", "where": {"field": "zip", "equals": "02139"}, "max_window": "24h",
     "resolution": "1m"},
    {"name": "area021", "type": "visit", "where": {"field": "zip", "equals": "021"}, "max_window": "24h",
     "resolution": "1m"},
    {"name": "blue", "type": "visit", "where": {"field": "favorite_color", "equals": "blue"}, "max_window": "24h",
     "resolution": "1m"},
    {"name": "visits", "type": "visit", "max_window": "24h", "resolution": "1m"},
]


def settled(s, name, timeout=20, **params):
    """The count once the counter answers (503 while it is built again or switching schema versions)."""
    t0 = time.monotonic()
    while True:
        r = s.request("GET", "/v1/counters/%s?%s" % (name, q(dict({"window": "2h"}, **params))))
        if r.status == 200:
            return r.json()["count"]
        if r.status != 503 or time.monotonic() - t0 > timeout:
            fail("GET /v1/counters/%s: %d %s" % (name, r.status, short(r.text)))
        time.sleep(0.1)


def zip_counts(s):
    return {c["name"]: settled(s, c["name"]) for c in ZIP_COUNTERS}


@test(timeout=150)
def test_public_counters_follow_a_schema_change():
    """A public counter is counted from the public copies of the schema version in force. Restarted under a
    schema that publishes zip as zip3, the counts stay those of the old version while the re-projection runs
    (public reads answer under it too), and at the switch every counter on public copies is built again
    under the new one: "zip equals 02139" then counts nothing and "zip equals 021" every visit of 021xx. A
    deletion after the switch takes the record away (it used to leave the old count for ever: the -1 was
    worked out from the re-projected copy, "021", which never matched); a field no longer published is
    counted from the bodies. Restarts keep the counts."""
    s = H.Server(name="ctr-schema")
    paths = {}
    os.makedirs(s.base, exist_ok=True)
    for name, sc in (("s1", ZIP_S1), ("s2", ZIP_S2), ("counters", ZIP_COUNTERS)):
        paths[name] = os.path.join(s.base, name + ".json")
        with open(paths[name], "w") as f:
            json.dump(sc, f)
    s.extra_args = ["--schema", paths["s1"], "--counters", paths["counters"]]
    s.start()
    t = now() - datetime.timedelta(hours=1)

    def visit(rid, zip_, color, who):
        return {"record_id": rid, "name": "Zip Person %d" % who, "dob": "1971-02-%02d" % (1 + who),
                "type": "visit", "ts": iso(t), "zip": zip_, "favorite_color": color}

    s.ingest_ok([visit("z1", "02139", "blue", 1), visit("z2", "02140", "red", 2)])
    # labs elsewhere, so that the re-projection below takes a few seconds
    s.ingest_ok([{"record_id": "zl%02d" % i, "name": "Zip Person %d" % (3 + i % 5), "dob": "1971-03-01",
                  "type": "lab", "ts": iso(t), "zip": "90210"} for i in range(40)])
    eq(zip_counts(s), {"boston": 1, "area021": 0, "blue": 1, "visits": 2}, "counts under S1")
    s.stop()

    # S2, slowly: the counts stay S1's until the switch
    s.extra_args = ["--schema", paths["s2"], "--counters", paths["counters"], "--reproject-rate", "10"]
    s.start()
    rp = s.get_json("/healthz")["schema"]["reprojecting"]
    check(rp is not None and rp["to"] == 2, "the re-projection is under way: %s" % rp)
    eq(zip_counts(s), {"boston": 1, "area021": 0, "blue": 1, "visits": 2}, "counts while re-projecting (S1's)")
    listed = {c["name"]: c["access"] for c in s.get_json("/v1/counters")["counters"]}
    eq(listed["blue"], "public", "blue while re-projecting (favorite_color public under S1, in force)")
    s.ingest_ok([visit("z3", "02139", "blue", 1)])
    eq(zip_counts(s), {"boston": 2, "area021": 0, "blue": 2, "visits": 3}, "a visit during the re-projection")
    check(s.get_json("/healthz")["schema"]["reprojecting"] is not None, "the re-projection still under way")
    t0 = time.monotonic()
    while s.get_json("/healthz")["schema"]["reprojecting"] is not None:
        check(time.monotonic() - t0 < 90, "the re-projection did not finish in 90 s")
        time.sleep(0.2)
    eq(s.get_json("/healthz")["schema"]["version"], 2, "schema version in force after the switch")
    under_s2 = {"boston": 0, "area021": 3, "blue": 2, "visits": 3}
    eq(zip_counts(s), under_s2, "counts right after the switch (S2's public copies; blue from the bodies)")
    listed = {c["name"]: c["access"] for c in s.get_json("/v1/counters")["counters"]}
    eq(listed, {"boston": "public", "area021": "public", "blue": "phi", "visits": "public"}, "access under S2")
    # a deletion after the switch: the old code answered boston 1 for ever here
    eq(s.request("DELETE", "/v1/records/z1").status, 200, "DELETE z1")
    after = {"boston": 0, "area021": 2, "blue": 1, "visits": 2}
    eq(zip_counts(s), after, "counts after deleting z1")
    eq(len(s.get_json("/v1/public/records?" + q({"type": "visit"}))["records"]), 2, "live visits")
    # restarts: a clean stop saves the counts under version 2; kill -9 replays; a lost state rebuilds
    s.extra_args = ["--schema", paths["s2"], "--counters", paths["counters"]]
    s.stop()
    s.start()
    eq(zip_counts(s), after, "counts after a clean restart under S2")
    s.request("DELETE", "/v1/records/z2")
    after = {"boston": 0, "area021": 1, "blue": 1, "visits": 1}
    eq(zip_counts(s), after, "counts after deleting z2")
    s.kill9()
    s.start()
    eq(zip_counts(s), after, "counts after kill -9 under S2")
    # back to S1: another switch (version 3), the counts S1's again
    s.stop()
    s.extra_args = ["--schema", paths["s1"], "--counters", paths["counters"]]
    s.start()
    t0 = time.monotonic()
    while s.get_json("/healthz")["schema"]["reprojecting"] is not None:
        check(time.monotonic() - t0 < 60, "the re-projection back to S1 did not finish in 60 s")
        time.sleep(0.2)
    eq(zip_counts(s), {"boston": 1, "area021": 0, "blue": 1, "visits": 1}, "counts under S1 again")
    s.stop()


@test(timeout=60)
def test_a_bad_counters_file_stops_the_start():
    s = H.Server(name="ctr-badfile")
    s.init()
    cases = [("[{\"name\":\"a\",\"max_window\":\"1h\"},{\"name\":\"b\"}]", "entry 2", "max_window"),
             ("{\"name\":\"a\"}", "JSON array", None),
             ("[{\"name\":\"a\",\"max_window\":\"1h\"},{\"name\":\"a\",\"max_window\":\"2h\"}]", "twice", None),
             ("[{\"name\":\"a\",\"max_window\":\"1h\",\"where\":{\"field\":\"n\",\"equals\":\"Jane Roe\",\"in\":[1]}}]",
              "entry 1", "not two")]
    for i, (text, word, word2) in enumerate(cases):
        path = os.path.join(s.base, "bad%d.json" % i)
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([H.BIN, "serve", "--data", s.data_dir, "--listen", "127.0.0.1:0", "--counters", path],
                             capture_output=True, text=True, timeout=30)
        eq(out.returncode, 1, "serve with %s" % text)
        check(word in out.stderr and (word2 is None or word2 in out.stderr) and path in out.stderr,
              "the refusal names the file, the entry and the problem: %s" % out.stderr)
        check("Jane" not in out.stderr, "the refusal echoes a value: %s" % out.stderr)
    out = subprocess.run([H.BIN, "serve", "--data", s.data_dir, "--listen", "127.0.0.1:0", "--counters",
                          os.path.join(s.base, "missing.json")], capture_output=True, text=True, timeout=30)
    eq(out.returncode, 1, "serve with a missing counters file")



def schema_server(name, public, counters=()):
    """A server whose schema publishes `public` (the default identity), with `counters` in its file."""
    s = H.Server(name=name)
    path = os.path.join(s.base, "schema.json")
    with open(path, "w") as f:
        json.dump({"identity": {"name": "name", "dob": "dob"}, "public": public}, f)
    cpath = os.path.join(s.base, "counters.json")
    with open(cpath, "w") as f:
        json.dump(list(counters), f)
    s.extra_args = ["--schema", path, "--counters", cpath]
    s.start()
    return s


@test(timeout=90)
def test_a_counter_on_a_type_published_transformed_is_phi():
    """A counter's `type` selects by the type as stored. Where the schema publishes the type transformed (a
    pseudonym), a public:read count of type "hiv-test" would tell analysts what the public copies hide (public
    reads refuse type= there for that reason): such a counter reads PHI, and needs patients:read."""
    s = schema_server("ctr-type-pseudonym", {"favorite_color": "copy", "type": "pseudonym", "ts": "year"},
                      [{"name": "hiv", "type": "hiv-test", "max_window": "1h"},
                       {"name": "navy", "where": {"field": "favorite_color", "equals": "navy"}, "max_window": "1h"}])
    t = now() - datetime.timedelta(minutes=5)
    s.ingest_ok([rec("h%d" % i, t, type_="hiv-test", color="navy") for i in range(3)])
    analyst = user(s, "analyst")
    eq(s.get("/v1/public/records?type=hiv-test", headers=analyst).status, 400, "public reads refuse type= here")
    listed = {c["name"]: c["access"] for c in s.get_json("/v1/counters")["counters"]}
    eq(listed, {"hiv": "phi", "navy": "public"}, "the access of each counter")
    eq(n(s, "hiv"), 3, "the count, with patients:read")
    eq(s.get("/v1/counters/hiv", headers=analyst).status, 403, "the count, with public:read only")
    eq(count(s, "navy", headers=analyst)["count"], 3, "a counter on a field published as is")
    r = s.get("/v1/counters", headers=analyst)
    eq([c["name"] for c in r.json()["counters"]], ["navy"], "the analyst's list")
    check("hiv-test" not in r.text, "the private type in the analyst's list: %s" % short(r.text))
    s.stop()


@test(timeout=90)
def test_a_condition_on_a_nested_field_counts_its_value():
    """`where.field` may name a nested field as the schema's paths do ("address.zip"): a public counter compares
    the public copy's value there (zip3: "021"), a PHI one the record's; absent anywhere on the path, it does
    not exist."""
    s = schema_server("ctr-nested", {"favorite_color": "copy", "type": "copy", "ts": "year", "address.zip": "zip3"},
                      [{"name": "zip021", "where": {"field": "address.zip", "equals": "021"}, "max_window": "1h"},
                       {"name": "nozip", "where": {"field": "address.zip", "exists": False}, "max_window": "1h"},
                       {"name": "boston", "where": {"field": "address.city", "in": ["Boston"]}, "max_window": "1h"}])
    t = now() - datetime.timedelta(minutes=5)
    rows = [rec("n%d" % i, t) for i in range(6)]
    for r_ in rows[:3]:
        r_["address"] = {"zip": "02139", "city": "Boston"}
    rows[3]["address"] = {"zip": "10001", "city": "New York"}
    rows[4]["address"] = "02139 Boston"
    s.ingest_ok(rows)
    listed = {c["name"]: c["access"] for c in s.get_json("/v1/counters")["counters"]}
    eq(listed, {"zip021": "public", "nozip": "public", "boston": "phi"}, "the access of each counter")
    eq((n(s, "zip021"), n(s, "nozip"), n(s, "boston")), (3, 2, 3), "counts after 6 records")
    r = s.request("POST", "/v1/counters", body=json.dumps({"name": "zip021b", "where": {"field": "address.zip",
                  "equals": "021"}, "max_window": "1h"}), headers={"Content-Type": "application/json"})
    eq(r.status, 201, "POST a counter on a nested field: %s" % short(r.text))
    eq(n(s, "zip021b"), 3, "the same, built from the stored records")
    eq(s.request("DELETE", "/v1/records/n0").status, 200, "DELETE n0")
    s.ingest_ok([dict(rows[1], address={"zip": "10001", "city": "Boston"})])
    eq((n(s, "zip021"), n(s, "zip021b"), n(s, "nozip"), n(s, "boston")), (1, 1, 2, 2),
       "counts after a deletion and a move to another zip")
    s.stop()


@test(timeout=60)
def test_counter_names_that_urls_rewrite_are_refused():
    """A name is a path segment: "." and ".." are the segments every browser, curl and the console's fetch
    rewrite (GET /v1/counters/.. is sent as GET /v1/), so such a counter could be neither read nor removed."""
    s = new_server("ctr-dots", counters=[])
    h = {"Content-Type": "application/json"}
    for name in (".", ".."):
        r = s.request("POST", "/v1/counters", body=json.dumps({"name": name, "max_window": "1h"}), headers=h)
        eq(r.status, 400, "POST a counter named %r: %s" % (name, short(r.text)))
        check("name" in r.json()["error"], "the error names the key: %s" % r.text)
    for name in ("...", ".a", "a..b", "-"):
        r = s.request("POST", "/v1/counters", body=json.dumps({"name": name, "max_window": "1h"}), headers=h)
        eq(r.status, 201, "POST a counter named %r: %s" % (name, short(r.text)))
    s.stop()


@test(timeout=60)
def test_a_window_reaching_before_the_year_1_is_refused():
    """Times are RFC 3339 in the years 1 to 9999: a window of a long max_window that would begin before the
    year 1 is a 400 naming window, never an answer with a negative year."""
    s = new_server("ctr-ages", counters=[{"name": "ages", "max_window": "1000000d", "resolution": "1d"}])
    t = now() - datetime.timedelta(days=400)
    s.ingest_ok([rec("a0", t), rec("a1", datetime.datetime(1900, 5, 1, tzinfo=UTC))])
    eq(n(s, "ages", window="1000d"), 1, "a window of 1000 days")
    eq(n(s, "ages", window="365000d"), 2, "a window of 1000 years")
    for params in ({}, {"window": "900000d"}):
        r = s.get("/v1/counters/ages?" + q(params))
        eq(r.status, 400, "a window beginning before the year 1 %r: %s" % (params, short(r.text)))
        check("window" in r.json()["error"], "the error names window: %s" % r.text)
    s.stop()


if __name__ == "__main__":
    H.main()

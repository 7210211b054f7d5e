# End-to-end tests of parent/child records (issue 13, docs/API.md "PHI reads"): GET
# /v1/records/{record_id}/children lists the records whose parent_id (the schema's parent role) names
# that id, in event-time order, paged with limit and cursor, filtered by type, since and until, as of
# any instant; children may arrive before their parent; a new version with another parent moves a child
# and a deletion removes it from their commit on (as-of reads before still list them); a parent role
# renamed by the schema; records:read needed (403 and audited otherwise), reads audited with the
# children's patient ids; a bad parent_id is a rejected line naming the field.
#
# Run: /usr/bin/python3 tests/e2e/test_children.py [NAME_SUBSTRING...]

import datetime
import json
import os
import subprocess
import time

import harness as H
from harness import check, eq, fail, q, short, test

UTC = datetime.timezone.utc


def srv():
    return H.shared_server("children")


def rec(rid, parent, ts, type_="lab", who=0, **extra):
    r = {"record_id": rid, "name": "Child Person %d" % who, "dob": "1960-02-%02d" % (1 + who), "type": type_,
         "ts": ts}
    if parent is not None:
        r["parent_id"] = parent
    r.update(extra)
    return r


def kids(s, parent, headers=None, **params):
    r = s.request("GET", "/v1/records/%s/children?%s" % (parent, q(params)), headers=headers)
    if r.status != 200:
        fail("children of %s %r: HTTP %d: %s" % (parent, params, r.status, short(r.text)))
    return r.json()


def ids(answer):
    return [c["record_id"] for c in answer["children"]]


def all_ids(s, parent, **params):
    return [c["record_id"] for c in s.get_all("/v1/records/%s/children" % parent, "children", **params)]


def stamp():
    time.sleep(0.01)
    t = datetime.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.01)
    return t


@test
def test_children_before_parent_paged_in_event_time_order():
    s = srv()
    p = "visit-" + H.rand_token(8)
    rows = [rec("%s-c%d" % (p, i), p, "2026-03-%02dT10:00:00Z" % (9 - i), who=i % 3) for i in range(7)]
    ans = s.ingest_ok(rows)
    check(not ans["errors"], "ingest: %s" % short(ans))
    want = ["%s-c%d" % (p, i) for i in range(6, -1, -1)]   # event-time order: c6 (the 3rd) first
    eq(all_ids(s, p), want, "children of a parent that does not exist yet")
    # pages of 2 follow each other without a gap or a repeat
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        a = kids(s, p, **params)
        check(len(a["children"]) <= 2, "page size")
        seen += ids(a)
        pages += 1
        cursor = a["next_cursor"]
        if not cursor:
            break
    eq((seen, pages), (want, 4), "paged children")
    first = kids(s, p, limit=1)["children"][0]
    eq((first["record_id"], first["type"], first["ts"], first["version"]), (want[0], "lab", "2026-03-03T10:00:00.000000Z", 1),
       "a child as GET /v1/records/{id} answers it")
    eq(first["fields"]["parent_id"], p, "the child's fields as sent")
    # the parent arrives: nothing changes for its children
    s.ingest_ok([rec(p, None, "2026-03-01T08:00:00Z", type_="visit")])
    eq(all_ids(s, p), want, "children once the parent exists")
    eq(kids(s, "no-such-parent")["children"], [], "an id nobody names")
    # filters: type, since (inclusive), until (exclusive)
    s.ingest_ok([rec(p + "-note", p, "2026-03-05T10:00:00Z", type_="note")])
    eq(ids(kids(s, p, type="note")), [p + "-note"], "type filter")
    eq(ids(kids(s, p, since="2026-03-05T10:00:00Z", until="2026-03-07T10:00:00Z", type="lab")),
       ["%s-c4" % p, "%s-c3" % p], "since and until")
    eq(s.get("/v1/records/%s/children?cursor=zz" % p).status, 400, "a bad cursor")
    eq(s.get("/v1/records/%s/children?limit=0" % p).status, 400, "a bad limit")
    eq(s.get("/v1/records/%s/children?since=soon" % p).status, 400, "a bad since")


@test
def test_moves_and_deletions_with_as_of():
    s = srv()
    a, b = "visit-" + H.rand_token(8), "visit-" + H.rand_token(8)
    s.ingest_ok([rec("%s-k%d" % (a, i), a, "2026-04-0%dT00:00:00Z" % (i + 1)) for i in range(4)])
    t_all = stamp()
    s.ingest_ok([rec("%s-k1" % a, b, "2026-04-02T00:00:00Z")])            # moved to b
    t_moved = stamp()
    s.ingest_ok([rec("%s-k2" % a, a, "2026-01-15T00:00:00Z")])            # same parent, earlier event time
    r = s.request("DELETE", "/v1/records/%s-k3" % a)
    eq(r.status, 200, "DELETE: %s" % short(r.text))
    eq(all_ids(s, a), ["%s-k2" % a, "%s-k0" % a], "after a move, a new event time and a deletion")
    eq(all_ids(s, b), ["%s-k1" % a], "the moved child under its new parent")
    eq(all_ids(s, a, as_of=t_all), ["%s-k%d" % (a, i) for i in range(4)], "as of before the move")
    eq(all_ids(s, a, as_of=t_moved), ["%s-k0" % a, "%s-k2" % a, "%s-k3" % a], "as of after the move")
    eq(all_ids(s, b, as_of=t_all), [], "the new parent, as of before the move")
    # a child that drops its parent (null) leaves the list
    s.ingest_ok([rec("%s-k0" % a, None, "2026-04-01T00:00:00Z", parent_id=None)])
    eq(all_ids(s, a), ["%s-k2" % a], "after a child's parent_id became null")


@test
def test_bad_parent_ids_are_rejected_lines():
    s = srv()
    ans = s.ingest([{"record_id": "bp-1", "name": "Bad Parent", "dob": "1970-01-01", "parent_id": 42},
                    {"record_id": "bp-2", "name": "Bad Parent", "dob": "1970-01-01", "parent_id": "a/b"},
                    {"record_id": "bp-3", "name": "Bad Parent", "dob": "1970-01-01", "parent_id": ""},
                    {"record_id": "bp-4", "name": "Bad Parent", "dob": "1970-01-01", "parent_id": "ok"}])
    eq(ans.status, 200, "ingest")
    items = ans.json()["items"]
    eq([i["status"] for i in items], ["rejected", "rejected", "rejected", "created"], "statuses")
    for i in items[:3]:
        check("parent_id" in i["error"], "the error names the field: %s" % i["error"])
        check("a/b" not in i["error"], "the error does not echo the value: %s" % i["error"])


@test
def test_permission_and_audit():
    s = srv()
    p = "visit-" + H.rand_token(8)
    ans = s.ingest_ok([rec(p + "-x", p, "2026-05-01T00:00:00Z", who=7), rec(p + "-y", p, "2026-05-02T00:00:00Z", who=8)])
    pids = sorted({i["patient_id"] for i in ans["items"]})
    hdr = {}
    for role in ("analyst", "clinician"):
        name = "kid-%s-%s" % (role, H.rand_token(5))
        r = s.request("POST", "/v1/users", body=json.dumps({"user": name, "password": "password-" + role, "role": role}),
                      headers={"Content-Type": "application/json"})
        eq(r.status, 201, "user %s" % role)
        hdr[role] = {"Authorization": "Bearer " + s.token_for(name, "password-" + role)}
    r = s.get("/v1/records/%s/children" % p, headers=hdr["analyst"])
    eq(r.status, 403, "children without records:read")
    eq(len(kids(s, p, headers=hdr["clinician"])["children"]), 2, "children with records:read")
    entries = [e for e in s.audit_entries() if e["resource"] == "/v1/records/%s/children" % p]
    outcomes = sorted((e["outcome"], tuple(sorted(e.get("patient_ids") or []))) for e in entries)
    eq(outcomes, [("denied", ()), ("ok", tuple(pids))], "audit entries of the children reads")


@test(timeout=60)
def test_parent_role_named_by_the_schema():
    s = H.Server(name="children-schema")
    path = os.path.join(s.base, "schema.json")
    with open(path, "w") as f:
        json.dump({"parent": "visit_ref", "public": {"type": "copy", "ts": "year"}}, f)
    s.extra_args = ["--schema", path]
    s.start()
    s.ingest_ok([rec("sc-1", None, "2026-06-01T00:00:00Z", visit_ref="V9"),
                 rec("sc-2", "V9", "2026-06-02T00:00:00Z")])
    eq(all_ids(s, "V9"), ["sc-1"], "the schema's parent field, not parent_id")
    bad = os.path.join(s.base, "bad.json")
    with open(bad, "w") as f:
        json.dump({"parent": "record_id"}, f)
    s.stop()
    out = subprocess.run([H.BIN, "serve", "--data", s.data_dir, "--listen", "127.0.0.1:0", "--schema", bad],
                         capture_output=True, text=True, timeout=30)
    eq(out.returncode, 1, "a schema whose parent is the record id")
    check("parent" in out.stderr, "the refusal names the parent role: %s" % out.stderr)


if __name__ == "__main__":
    H.main()

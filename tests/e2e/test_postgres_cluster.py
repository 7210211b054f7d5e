# End-to-end tests of issue 16's "cluster key + one shared PostgreSQL" (README.md, "Cluster key"):
# `medstream init/serve --cluster-key-file FILE` and several medstream nodes shipping into one PostgreSQL
# database (test_postgres.py's throw-away PostgreSQL 15 cluster, one database per test).
# Checked: the key file (mode 0644 refused naming the mode, malformed text refused naming the problem,
# never echoing the key); a data directory opened with another key, or made without one, refused naming
# the directory; two nodes made with one key, each its own data directory, both --postgres to one
# database, fed the same records over HTTP: the same patient ids on both, exactly one patient_index row per
# identity, both nodes' positions (one row per node id) at their stores' positions, /healthz ok, no
# conflict; a store of another key refused by that database (the log names the conflict, nothing written);
# two nodes of one key that numbered different identities alike (a constructed conflict): the second is
# refused LOUDLY (/healthz degraded, "conflict", a metric, a log line without PHI), keeps retrying and never
# moves past it, and nothing in patient_index is overwritten; a sink position written before positions
# per node (node '') is taken over by its store, which resumes there; a lake (--lake) is one node's, not
# the cluster's.
#
# Run: /usr/bin/python3 tests/e2e/test_postgres_cluster.py [NAME_SUBSTRING...]

import os
import re
import subprocess
import tempfile
import threading
import time

import harness as H
from harness import check, eq, fail, short, test

# test_postgres.py's PostgreSQL and sink helpers, without registering its tests here
_registered = len(H._tests)
import test_postgres as TP  # noqa: E402
del H._tests[_registered:]

CATCH_UP = 20.0
NODE_RE = re.compile(r"postgres: connected; .* node ([0-9a-f]{32}) shipped through commit")


def temp_dir(name):
    d = tempfile.mkdtemp(prefix="medstream-e2e-%s-" % name)
    H._temp_dirs.append(d)   # removed at exit (kept when a test failed)
    return d


def key_file(base, name, mode=0o600, text=None):
    """A cluster key file (64 hex characters from os.urandom unless text is given) with mode."""
    path = os.path.join(base, name)
    with open(path, "w") as f:
        f.write(text if text is not None else os.urandom(32).hex() + "\n")
    os.chmod(path, mode)
    return path


class Node(H.Server):
    """A medstream server whose data directory is made by `medstream init --cluster-key-file KEY` and
    served with the same option (key None: a plain store)."""

    def __init__(self, key, extra_args=(), name="node", serve_key=None):
        super().__init__(extra_args=list(extra_args), name=name)
        self.key = key
        self.serve_key = serve_key if serve_key is not None else key

    def init(self):
        args = [H.BIN, "init", self.data_dir] + (["--cluster-key-file", self.key] if self.key else [])
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            fail("%s exited %d: %s" % (" ".join(args), r.returncode, short(r.stderr)))
        self.initialized = True

    def serve_args(self, port):
        return super().serve_args(port) + (["--cluster-key-file", self.serve_key] if self.serve_key else [])


def start_node(key, url, name):
    n = Node(key, ["--postgres", url], name=name)
    n.start()
    return n


def node_id(n):
    """The node id the sink logged at its last connect (it is the node's row of medstream.sink_position)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = NODE_RE.findall(TP.log_since_last_start(n))
        if found:
            return found[-1]
        time.sleep(0.1)
    fail("the sink of %s never logged its node id: %s" % (n.name, short(n.log_tail(), 800)))


def node_position(db, node):
    rows = TP.pg().sql(db, "SELECT commit_pos FROM medstream.sink_position WHERE sink = 'postgres' AND node = %s",
                       (node,))
    return rows[0][0] if rows else None


def wait_node_shipped(n, db, limit=CATCH_UP):
    """Poll until this node's row of medstream.sink_position reaches its store's commit position."""
    node = node_id(n)
    target = TP.store_position(n)
    deadline = time.monotonic() + limit
    while True:
        pos = node_position(db, node)
        if pos is not None and pos >= target:
            return pos
        if time.monotonic() > deadline:
            fail("node %s did not catch up within %.0fs: its position %s, its store %d; /healthz %s; log: %s"
                 % (n.name, limit, pos, target, short(n.get("/healthz").text), n.log_tail(800)))
        time.sleep(0.1)


def ingest_all(n, records):
    j = n.ingest_ok(records)
    check(not j.get("errors"), "every line accepted by %s: %s" % (n.name, short(j)))
    return j


def record_patients(n, rids):
    out = {}
    for rid in rids:
        j = n.get_json("/v1/records/%s" % rid)
        out[rid] = j["patient_id"]
    return out


def run(args):
    return subprocess.run([H.BIN] + args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@test(timeout=120)
def test_cluster_key_file_is_checked_and_a_store_of_another_key_is_refused():
    base = temp_dir("cluster-keys")
    secret = os.urandom(32).hex()
    good = key_file(base, "good", text=secret + "\n")
    # a key file others may read, as ssh does with a private key
    loose = key_file(base, "loose", mode=0o644, text=secret + "\n")
    r = run(["init", os.path.join(base, "d-loose"), "--cluster-key-file", loose])
    eq(r.returncode, 1, "init with a 0644 key file: exit code (%s)" % short(r.stderr))
    check(loose in r.stderr and "0644" in r.stderr and "chmod 600" in r.stderr,
          "the refusal names the file, its mode and the fix: %s" % short(r.stderr))
    check(not os.path.exists(os.path.join(base, "d-loose", "lmdb")), "no store made with a refused key file")
    # malformed: each refused with what is wrong, never the text
    for name, text, want in (("short", secret[:62] + "\n", "found 62 characters"),
                             ("long", secret + "00\n", "found 66 characters"),
                             ("nonhex", "g" + secret[1:] + "\n", "character 1 is not hexadecimal"),
                             ("two-lines", secret[:32] + "\n" + secret[32:] + "\n", "character 33 is a line end"),
                             ("spaced", " " + secret + "\n", "character 1 is a space"),
                             ("zeros", "0" * 64 + "\n", "all zeros"),
                             ("empty", "", "found 0 characters")):
        path = key_file(base, name, text=text)
        r = run(["init", os.path.join(base, "d-" + name), "--cluster-key-file", path])
        eq(r.returncode, 1, "init with the %s key file: exit code (%s)" % (name, short(r.stderr)))
        check(path in r.stderr and want in r.stderr, "the refusal of %s says %r: %s" % (name, want, short(r.stderr)))
        check(secret[:16] not in r.stderr and secret[-16:] not in r.stderr, "the key is not echoed: %s" % r.stderr)
    r = run(["init", os.path.join(base, "d-missing"), "--cluster-key-file", os.path.join(base, "nope")])
    eq(r.returncode, 1, "init with a missing key file")
    check("nope" in r.stderr and "cannot open" in r.stderr, "the refusal names the file: %s" % short(r.stderr))
    # a node made with the key starts with it; with another key (or a store made without one) it is refused
    a = Node(good, name="cluster-key-a")
    a.start()
    ingest_all(a, [{"record_id": "key-1", "name": "Key Person", "dob": "1970-01-01"}])
    a.stop()
    other = key_file(base, "other")
    r = run(["serve", "--data", a.data_dir, "--listen", "127.0.0.1:0", "--cluster-key-file", other])
    eq(r.returncode, 1, "serve with another cluster key: exit code (%s)" % short(r.stderr))
    check(a.data_dir in r.stderr and "was created with another key" in r.stderr,
          "the refusal names the data directory and the cause: %s" % short(r.stderr))
    plain = Node(None, name="cluster-key-plain")
    plain.init()
    r = run(["serve", "--data", plain.data_dir, "--listen", "127.0.0.1:0", "--cluster-key-file", good])
    eq(r.returncode, 1, "serve a store made without a cluster key, with one: exit code (%s)" % short(r.stderr))
    check(plain.data_dir in r.stderr and "was created with another key" in r.stderr,
          "the refusal names the data directory: %s" % short(r.stderr))
    r = run(["init", plain.data_dir, "--cluster-key-file", good])
    eq(r.returncode, 1, "init again over a store of another key (%s)" % short(r.stderr))
    check("was created with another key" in r.stderr, "init says why: %s" % short(r.stderr))
    r = run(["serve", "--data", a.data_dir, "--listen", "127.0.0.1:0", "--cluster-key-file", loose])
    eq(r.returncode, 1, "serve with a 0644 key file")
    check("0644" in r.stderr, "serve names the mode: %s" % short(r.stderr))
    # the right key opens it again, with what it had
    a.start()
    eq(a.get_json("/v1/records/key-1")["record_id"], "key-1", "the record after the restart with the key")
    a.stop()


@test(timeout=180)
def test_two_nodes_of_one_cluster_share_one_database():
    """Same key, own data directories, one database: the same records posted to both give the same patient
    ids; PostgreSQL has one patient_index row per identity, one position row per node, and no error."""
    db = "t_cluster_two"
    url = TP.pg().create_db(db)
    base = temp_dir("cluster-two-keys")
    key = key_file(base, "key")
    a = start_node(key, url, "cluster-a")
    b = start_node(key, url, "cluster-b")
    people = [("Ada Byron King", "1915-12-10"), ("Alan Turing", "1912-06-23"), ("Grace Hopper", "1906-12-09"),
              ("Edsger Dijkstra", "1930-05-11")]
    batches = [[{"record_id": "c2-%d-%d" % (i, v), "name": n if v == 0 else n.upper(), "dob": d,
                 "favorite_color": ["red", "blue"][v], "type": "visit", "ts": "2026-01-0%dT10:00:00Z" % (v + 1)}
                for i, (n, d) in enumerate(people)]
               for v in (0, 1)]
    batches.append([{"record_id": "c2-0-0", "name": people[0][0], "dob": people[0][1], "favorite_color": "green",
                     "type": "visit", "ts": "2026-01-03T10:00:00Z"}])   # a second version of a record
    # (every record carries its ts: one without gets its node's arrival time, and two nodes' would differ)
    for batch in batches:   # A first, B after it has shipped: B meets every row A shipped
        ingest_all(a, batch)
    wait_node_shipped(a, db)
    for batch in batches:
        ingest_all(b, batch)
    wait_node_shipped(b, db)
    # then both at once: the same rows shipped concurrently by the two nodes (one waits on the other's
    # uncommitted row, then finds it equal)
    more = [[{"record_id": "c2-%d-%d" % (i, 2 + k), "name": n, "dob": d, "favorite_color": "navy", "type": "lab",
              "ts": "2026-02-0%dT10:00:00Z" % (k + 1)} for i, (n, d) in enumerate(people)] for k in range(5)]
    threads = [threading.Thread(target=lambda n=n: [ingest_all(n, batch) for batch in more]) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batches += more
    wait_node_shipped(a, db)
    wait_node_shipped(b, db)
    rids = sorted({r["record_id"] for batch in batches for r in batch})
    pa, pb = record_patients(a, rids), record_patients(b, rids)
    eq(pb, pa, "patient ids of the same records on node B and node A")
    eq(len(set(pa.values())), len(people), "one patient per identity")
    rows = TP.pg().sql(db, "SELECT patient_id::text, name_norm, dob::text FROM medstream.patient_index ORDER BY 2")
    eq(sorted((TP.norm_name(n), d) for n, d in people), sorted((r[1], r[2]) for r in rows),
       "patient_index: exactly one row per identity")
    eq(sorted(r[0] for r in rows), sorted(set(pa.values())), "patient_index ids are the nodes' ids")
    eq(sorted(TP.phi_keys(db)), sorted([(rid, 1) for rid in rids] + [("c2-0-0", 2)]),
       "phi_records: each record version once")
    nodes = TP.pg().sql(db, "SELECT node, commit_pos FROM medstream.sink_position WHERE sink = 'postgres'")
    eq(len(nodes), 2, "one position row per node: %s" % nodes)
    na, nb = node_id(a), node_id(b)
    check(na != nb, "the nodes have different node ids (%s, %s)" % (na, nb))
    eq(sorted(n for n, _ in nodes), sorted([na, nb]), "the position rows are the nodes'")
    # both positions go on advancing: a new identity on B only, then more on A
    ingest_all(b, [{"record_id": "c2-b-only", "name": "Barbara Liskov", "dob": "1939-11-07"}])
    before_a = node_position(db, na)
    ingest_all(a, [{"record_id": "c2-0-0", "name": people[0][0], "dob": people[0][1], "favorite_color": "teal",
                  "type": "visit", "ts": "2026-01-04T10:00:00Z"}])
    check(wait_node_shipped(a, db) > before_a, "node A's position advanced")
    wait_node_shipped(b, db)
    for n in (a, b):
        TP.wait_no_lag(n)
        h = n.get_json("/healthz")
        eq((h.get("status"), h.get("postgres")), ("ok", "ok"), "/healthz of %s (%s)" % (n.name, h))
        eq(TP.metrics(n).get("medstream_postgres_conflicts_total"), 0.0, "conflicts on %s" % n.name)
        TP.check_log_clean(n, "of %s" % n.name)
    check(TP.metrics(b).get("medstream_postgres_staged_total", 0) >= 1,
          "node B met node A's rows and shipped them through the staging tables: %s"
          % TP.metrics(b).get("medstream_postgres_staged_total"))
    eq(TP.pg().sql(db, "SELECT count(*) FROM medstream.patient_index"), [(len(people) + 1,)],
       "patient_index rows after the new identity")
    cur = dict(TP.pg().sql(db, "SELECT patient_id::text, version FROM medstream.phi_patients"))
    eq(cur.get(pa["c2-0-0"]), a.get_json("/v1/patients/%s" % pa["c2-0-0"])["version"],
       "phi_patients holds node A's latest version of its patient")
    a.stop()
    b.stop()


@test(timeout=120)
def test_a_store_of_another_cluster_key_is_refused_by_the_database():
    db = "t_cluster_other"
    url = TP.pg().create_db(db)
    base = temp_dir("cluster-other-keys")
    a = start_node(key_file(base, "key-a"), url, "cluster-other-a")
    ingest_all(a, [{"record_id": "other-a-1", "name": "First Cluster", "dob": "1960-06-06"}])
    wait_node_shipped(a, db)
    before = TP.pg().sql(db, "SELECT record_id, version FROM medstream.phi_records ORDER BY 1, 2")
    pos = TP.pg().sql(db, "SELECT node, commit_pos FROM medstream.sink_position ORDER BY 1")
    for key, name in ((key_file(base, "key-b"), "cluster-other-b"), (None, "cluster-other-plain")):
        b = start_node(key, url, name)
        ingest_all(b, [{"record_id": "other-b-1", "name": "Second Cluster", "dob": "1961-07-07"}])
        h = TP.wait_health(b, ("failing",), 15)
        eq(h.get("status"), "degraded", "/healthz of a store of another key (%s)" % h)
        log = TP.log_since_last_start(b)
        check("another medstream store" in log and "one --cluster-key-file" in log,
              "the log names the conflict: %s" % short(log, 600))
        eq(TP.pg().sql(db, "SELECT record_id, version FROM medstream.phi_records ORDER BY 1, 2"), before,
           "the store of another key wrote nothing")
        eq(TP.pg().sql(db, "SELECT node, commit_pos FROM medstream.sink_position ORDER BY 1"), pos,
           "no position row for it")
        b.stop()
    a.stop()


@test(timeout=150)
def test_a_patient_id_numbered_twice_is_a_loud_conflict_never_an_overwrite():
    """Two nodes of one key that gave patient number 0 to different identities (what per-shard numbering
    prevents): the second node's rows are refused as a conflict, loudly, again and again, and nothing it
    shipped lands or overwrites; the first node goes on."""
    db = "t_cluster_conflict"
    url = TP.pg().create_db(db)
    base = temp_dir("cluster-conflict-keys")
    key = key_file(base, "key")
    a = start_node(key, url, "conflict-a")
    pa = ingest_all(a, [{"record_id": "cf-a-1", "name": "Zora Neale", "dob": "1891-01-07"}])
    wait_node_shipped(a, db)
    index = TP.pg().sql(db, "SELECT patient_id::text, name_norm, dob::text FROM medstream.patient_index")
    eq(len(index), 1, "patient_index after node A")
    b = start_node(key, url, "conflict-b")
    eq(b.get("/v1/audit?limit=1").status, 200, "GET /v1/audit (commits the audit entries waiting: the login's)")
    wait_node_shipped(b, db)   # its commits without patients (the admin's login) ship
    b_before = TP.store_position(b)   # the conflicting commit comes after this one
    # B numbers Quentin 0 (A's Zora has that id) and Zora 1 (A gave her 0)
    ingest_all(b, [{"record_id": "cf-b-1", "name": "Quentin Blake", "dob": "1932-12-16"},
                   {"record_id": "cf-b-2", "name": "Zora Neale", "dob": "1891-01-07"}])   # one commit
    pb = record_patients(b, ["cf-b-1", "cf-b-2"])
    eq(pb["cf-b-1"], a.get_json("/v1/records/cf-a-1")["patient_id"],
       "the constructed collision: B's first identity has A's first id")
    h = TP.wait_health(b, ("conflict",), 15)
    eq(h.get("status"), "degraded", "/healthz of the conflicting node (%s)" % h)
    log = TP.log_since_last_start(b)
    check("postgres: conflict in patient_index: 1 patient id(s) already held by another identity, 1 identity(ies) "
          "already holding another patient id" in log, "the log names the conflict: %s" % short(log, 800))
    for phi in ("Zora", "zora", "Quentin", "quentin", "1891-01-07", "1932-12-16"):
        check(phi not in log.split("=== ", 1)[-1].split("\n", 1)[-1], "no PHI (%s) in the log" % phi)
    c1 = TP.metrics(b).get("medstream_postgres_conflicts_total", 0)
    check(c1 >= 1, "medstream_postgres_conflicts_total counts it (%s)" % c1)
    time.sleep(2.5)   # it retries every second and never skips past it
    c2 = TP.metrics(b).get("medstream_postgres_conflicts_total", 0)
    check(c2 > c1, "the sink keeps retrying (conflicts %s then %s)" % (c1, c2))
    p1 = node_position(db, node_id(b))
    check(p1 is not None and p1 <= b_before, "node B's position %s is before the conflicting commit %d"
          % (p1, b_before + 1))
    time.sleep(1.5)
    eq(node_position(db, node_id(b)), p1, "node B's position does not move")
    eq(TP.pg().sql(db, "SELECT patient_id::text, name_norm, dob::text FROM medstream.patient_index"), index,
       "patient_index: nothing overwritten, nothing added")
    eq(TP.pg().sql(db, "SELECT count(*) FROM medstream.phi_records WHERE record_id LIKE 'cf-b-%'"), [(0,)],
       "none of node B's rows landed")
    eq(TP.wait_health(b, ("conflict",), 5).get("postgres"), "conflict", "still refused")
    # node A is not held up by it
    ingest_all(a, [{"record_id": "cf-a-2", "name": "Zora Neale", "dob": "1891-01-07", "favorite_color": "red"}])
    wait_node_shipped(a, db)
    eq(a.get_json("/healthz").get("postgres"), "ok", "node A's sink")
    check(pa is not None, "A acknowledged")
    b.stop()
    a.stop()


@test(timeout=120)
def test_a_position_from_before_positions_per_node_is_taken_over():
    """A database a store fed before positions were kept per node has its row under node '': the store
    takes it over at its next connect and resumes after it, doubling nothing."""
    db = "t_cluster_legacy"
    url = TP.pg().create_db(db)
    s = TP.start_server(url, "cluster-legacy")
    ingest_all(s, [{"record_id": "legacy-%d" % i, "name": "Legacy Person %d" % i, "dob": "1950-01-01"}
                 for i in range(5)])
    shipped = TP.wait_shipped(s, db)
    s.stop()
    TP.pg().sql(db, "UPDATE medstream.sink_position SET node = ''")
    s.start()
    ingest_all(s, [{"record_id": "legacy-new", "name": "Legacy Person 0", "dob": "1950-01-01"}])
    node = node_id(s)
    check(re.search(r"node %s shipped through commit %d" % (node, shipped), TP.log_since_last_start(s)),
          "it resumed after the old position: %s" % short(TP.log_since_last_start(s), 600))
    wait_node_shipped(s, db)
    eq([n for n, in TP.pg().sql(db, "SELECT node FROM medstream.sink_position")], [node],
       "the row is the node's now (no row left under '')")
    eq(sorted(TP.phi_keys(db)), sorted([("legacy-%d" % i, 1) for i in range(5)] + [("legacy-new", 1)]),
       "every record version once")
    TP.check_log_clean(s, "after taking the position over")
    s.stop()


@test(timeout=90)
def test_a_lake_belongs_to_one_node_of_a_cluster():
    """The lake's commits log holds one store's positions: the nodes of one cluster share the id key, so the
    lake's owner is the key's hash AND the node id; another node of the same cluster is refused."""
    base = temp_dir("cluster-lake")
    key = key_file(base, "key")
    lake = os.path.join(base, "lake")
    a = Node(key, ["--lake", lake], name="cluster-lake-a")
    a.start()
    ingest_all(a, [{"record_id": "lake-1", "name": "Lake Person", "dob": "1970-01-01"}])
    a.stop()
    b = Node(key, ["--lake", lake], name="cluster-lake-b")
    b.init()
    p = subprocess.run(b.serve_args(H.free_port()), capture_output=True, text=True, timeout=60)
    eq(p.returncode, 1, "serve of another node of the cluster on node A's lake (%s)" % short(p.stderr))
    check("belongs to another store (or another node of its cluster" in p.stderr, "message: %s" % short(p.stderr))
    a.start()   # its own lake still opens
    eq(a.get_json("/healthz").get("status"), "ok", "node A on its lake")
    a.stop()


if __name__ == "__main__":
    H.main()

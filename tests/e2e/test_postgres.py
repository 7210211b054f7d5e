# End-to-end tests of medstream's PostgreSQL sink (`serve --postgres URL`) against a real PostgreSQL 15:
# one throw-away cluster on loopback for the module (scripts/pg_temp.sh, destroyed at exit), one database
# per test (CREATE DATABASE t_<name>), checked over SQL with psycopg2 against what medstream's HTTP API
# says. Checked: the schema (tables, view, as-of function, migrations applied once across restarts,
# phi_patients system-versioned by the periods extension); every acknowledged record version is in SQL
# exactly once with the right patient, one patient-index row per identity with the normalized name,
# public tables with allow-listed fields only and no PHI, current patient state equal to HTTP's; the SQL
# as-of function equal to GET ?as_of= at and around every version boundary; PostgreSQL stopped during
# ingest (ingest goes on, /healthz degraded, catch-up after the restart, nothing lost or doubled);
# PostgreSQL stopped while the sink is idle (/healthz says unreachable within seconds, not only once
# there is something to ship);
# medstream killed with SIGKILL while shipping (nothing lost or doubled); the analyst role refused on
# every PHI table; a store restored from `medstream backup` over a database with later commits (refused,
# both reasons logged; shipped from the start once the schema is dropped); a schema change that stops
# publishing a field (S1 -> S2): both public tables rewritten to the store's copies under the version in
# force (none keeps the field, each equals the public API's answer and a fresh ship's row, none added or
# lost), also after a SIGKILL in the middle of the rewrite (MEDSTREAM_TEST_PG_REWRITE_CRASH) and after a
# switch made while the sink was not running, and in a database shipped before the version was kept
# (sink_position.public_schema NULL) once the store's schema has ever changed.
#
# Run: /usr/bin/python3 tests/e2e/test_postgres.py [NAME_SUBSTRING...]
#      (needs postgresql-15 in /usr/lib/postgresql/15/bin or $PG_BIN, postgresql-15-periods,
#      python3-psycopg2; as root, PostgreSQL runs as the `postgres` user)

import datetime
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import unicodedata

import harness as H
from harness import check, eq, fail, q, short, test

PG_BIN = os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin"
PG_TEMP = os.path.join(H.REPO_ROOT, "scripts", "pg_temp.sh")
PUBLIC_FIELDS = {"favorite_color", "type", "ts"}    # the default schema's allow-list
CATCH_UP = 20.0                                     # seconds for the sink to reach the store's position
SINK_ERROR_RE = re.compile(r"error|fatal|panic|failed|abort", re.I)


# ---------------------------------------------------------------------------------------------
# the PostgreSQL cluster (one for the module)

class Postgres:
    """A cluster made by scripts/pg_temp.sh in a temp dir, on a free loopback port."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="medstream-e2e-postgres-")
        os.chmod(self.base, 0o755)   # the cluster dir inside is made and owned by the `postgres` user
        self.dir = os.path.join(self.base, "pg")
        self.port = None

    def _script(self, *args, timeout=120):
        env = dict(os.environ, PG_BIN=PG_BIN)
        try:
            return subprocess.run([PG_TEMP] + list(args), capture_output=True, text=True, env=env,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("scripts/pg_temp.sh %s did not finish within %ds" % (" ".join(args), timeout))

    def start(self):
        """Start (initdb the first time; the same port again after a stop). Retries once on a new port
        if the first start fails (the free port may have been taken meanwhile)."""
        for attempt in (1, 2):
            if self.port is None or attempt == 2:
                self.port = H.free_port()
            r = self._script("start", self.dir, str(self.port))
            if r.returncode == 0:
                eq(r.stdout.strip().splitlines(), [self.url("postgres")], "pg_temp.sh start's output")
                return
            if attempt == 2 or os.path.exists(os.path.join(self.dir, "postmaster.pid")):
                break
        fail("scripts/pg_temp.sh start %s %d exited %d: %s"
             % (self.dir, self.port, r.returncode, short((r.stderr or r.stdout).replace("\n", " | "), 1500)))

    def restart(self):
        """Start again on the same directory and port (after stop())."""
        r = self._script("start", self.dir, str(self.port))
        if r.returncode != 0:
            fail("scripts/pg_temp.sh start (restart) exited %d: %s"
                 % (r.returncode, short(r.stderr.replace("\n", " | "), 1500)))

    def stop(self):
        r = self._script("stop", self.dir)
        if r.returncode != 0:
            fail("scripts/pg_temp.sh stop exited %d: %s" % (r.returncode, short(r.stderr.replace("\n", " | "), 1500)))

    def destroy(self):
        self._script("destroy", self.dir)
        try:
            os.rmdir(self.base)
        except OSError:
            pass

    def url(self, db):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, db)

    def connect(self, db, user="postgres"):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=user, dbname=db, connect_timeout=5,
                                options="-c statement_timeout=20000")
        conn.autocommit = True
        return conn

    def sql(self, db, query, args=None, user="postgres"):
        """Run one statement on a fresh connection; the rows (None for a statement without any)."""
        conn = self.connect(db, user)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description is not None else None
        finally:
            conn.close()

    def create_db(self, name):
        self.sql("postgres", "CREATE DATABASE " + name)
        return self.url(name)


_pg = None
_pg_error = None


def pg():
    """The module's cluster, started on first use; H.Skip where PostgreSQL or psycopg2 is missing."""
    global _pg, _pg_error
    for b in ("initdb", "pg_ctl", "pg_isready", "postgres"):
        if not os.access(os.path.join(PG_BIN, b), os.X_OK):
            raise H.Skip("PostgreSQL 15 is not installed (%s/%s missing; install postgresql-15 or set PG_BIN)"
                         % (PG_BIN, b))
    try:
        import psycopg2.errors  # noqa: F401
    except ImportError:
        raise H.Skip("python3-psycopg2 is not installed")
    if _pg_error:
        fail("the test PostgreSQL did not start earlier: " + _pg_error)
    if _pg is None:
        p = Postgres()
        H.on_exit(p.destroy)
        try:
            p.start()
        except H.TestFailure as e:
            _pg_error = str(e)
            raise
        _pg = p
    return _pg


# ---------------------------------------------------------------------------------------------
# medstream with --postgres, and waiting for the sink

def start_server(db_url, name, extra=()):
    s = H.Server(extra_args=["--postgres", db_url] + list(extra), name=name)
    try:
        s.start()
    except H.TestFailure:
        log = s.log_tail()
        if "--postgres" in log and ("unknown option" in log or "unrecognized" in log):
            fail("medstream serve does not support --postgres (the PostgreSQL sink is not built in): %s" % log)
        raise
    return s


def metrics(s):
    """The unlabelled samples of /metrics as {name: float}."""
    r = s.get("/metrics")
    eq(r.status, 200, "GET /metrics status")
    out = {}
    for line in r.text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def store_position(s):
    m = metrics(s)
    check("medstream_commit_position" in m, "/metrics has medstream_commit_position")
    return int(m["medstream_commit_position"])


def shipped_position(db):
    """sink_position.commit_pos of sink 'postgres' in db: None while there is no such row or table."""
    import psycopg2
    try:
        rows = pg().sql(db, "SELECT commit_pos FROM medstream.sink_position WHERE sink = 'postgres'")
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InvalidSchemaName):
        return None
    return rows[0][0] if rows else None


def wait_shipped(s, db, limit=CATCH_UP):
    """Poll until PostgreSQL's sink position has reached the store's commit position (as of the call);
    fails after `limit` seconds naming both positions. Returns the position."""
    import psycopg2
    target = store_position(s)
    deadline = time.monotonic() + limit
    pos, err = None, None
    while True:
        try:
            pos, err = shipped_position(db), None
        except psycopg2.Error as e:
            err = "%s: %s" % (e.__class__.__name__, str(e).strip())
        if pos is not None and pos >= target:
            now = store_position(s)
            check(pos <= now, "PostgreSQL's sink position %d is ahead of the store's commit position %d" % (pos, now))
            return pos
        if time.monotonic() > deadline:
            health = s.get("/healthz")
            fail("the sink did not catch up within %.0fs: medstream.sink_position has %s, the store is at %d%s; "
                 "/healthz: %s; server log: %s"
                 % (limit, pos, target, " (last SQL error: %s)" % err if err else "", short(health.text),
                    s.log_tail(800)))
        time.sleep(0.1)


def wait_no_lag(s, limit=10.0):
    """Poll /metrics until medstream_postgres_lag_commits is 0 (reads add audit-only commits, so call this
    before reading over HTTP); the last sample."""
    deadline = time.monotonic() + limit
    while True:
        m = metrics(s)
        lag = m.get("medstream_postgres_lag_commits")
        if lag == 0 or time.monotonic() > deadline:
            eq(lag, 0.0, "medstream_postgres_lag_commits once caught up")
            return m
        time.sleep(0.1)


def wait_health(s, want_postgres, limit, also=None):
    """Poll /healthz until its "postgres" member is one of want_postgres; the last JSON."""
    deadline = time.monotonic() + limit
    j = None
    while time.monotonic() < deadline:
        r = H.http_request(s.port, "GET", "/healthz", timeout=5)
        j = r.json()
        if j.get("postgres") in want_postgres and (also is None or also(j)):
            return j
        time.sleep(0.2)
    fail("/healthz did not report postgres %s within %.0fs; last: %s" % ("|".join(want_postgres), limit, j))


def log_since_last_start(s):
    with open(s.log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    return text[text.rfind("=== "):]


def check_log_clean(s, what):
    bad = [l for l in log_since_last_start(s).splitlines()[1:] if SINK_ERROR_RE.search(l)]
    check(not bad, "errors in the server log %s: %s" % (what, short(" | ".join(bad), 600)))


def norm_name(name):
    """medstream's identity normalization: NFKC, case-folded, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def rfc3339(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def phi_keys(db):
    """{(record_id, version): patient_id} of medstream.phi_records, failing if any key is there twice."""
    dups = pg().sql(db, "SELECT record_id, version, count(*) FROM medstream.phi_records GROUP BY 1, 2 "
                        "HAVING count(*) > 1 LIMIT 5")
    check(not dups, "record versions in phi_records more than once: %s" % dups)
    rows = pg().sql(db, "SELECT record_id, version, patient_id::text FROM medstream.phi_records")
    return {(rid, v): pid for rid, v, pid in rows}


def diff_keys(got, want, what):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    check(not missing and not extra, "%s: %d missing (first %s), %d not expected (first %s)"
          % (what, len(missing), missing[:5], len(extra), extra[:5]))


# ---------------------------------------------------------------------------------------------
# a paced loader (tests 4 and 5)

class Loader(threading.Thread):
    """POSTs `batches` batches of `size` records (unique ids, version 1 each) with `pause` seconds
    between them; stops at the first transport error (the server was killed). Remembers every record
    sent (answered or not), every acknowledged one (record_id -> patient_id) and every non-200."""

    def __init__(self, s, tag, batches, size=50, pause=0.1):
        super().__init__(daemon=True)
        self.port, self.headers = s.port, s.auth_headers({"Content-Type": "application/x-ndjson"})
        self.tag, self.batches, self.size, self.pause = tag, batches, size, pause
        self.sent, self.acked, self.bad, self.errors = [], {}, [], []
        self.batches_acked = 0
        self.halt = threading.Event()

    def run(self):
        for b in range(self.batches):
            if self.halt.is_set():
                break
            recs = []
            for i in range(self.size):
                n = b * self.size + i
                recs.append({"record_id": "pg-%s-b%02d-%02d" % (self.tag, b, i),
                             "name": "Loader %s Person %d" % (self.tag.capitalize(), n % 40),
                             "dob": "1970-02-%02d" % (1 + n % 40 % 28), "favorite_color": ["red", "blue"][n % 2],
                             "type": "visit", "ts": "2025-06-07T08:09:10Z", "ssn": "555-%02d-%04d" % (b, i),
                             "notes": os.urandom(300).hex()})
            self.sent.extend(r["record_id"] for r in recs)
            try:
                r = H.http_request(self.port, "POST", "/v1/records", body=H.ndjson(recs), headers=self.headers,
                                   timeout=20)
            except (OSError, http.client.HTTPException) as e:
                self.errors.append("batch %d: %s" % (b, e.__class__.__name__))
                break
            if r.status != 200:
                self.bad.append("batch %d: HTTP %d %s" % (b, r.status, short(r.text, 200)))
                continue
            try:
                items = r.json()["items"]
            except (H.TestFailure, KeyError) as e:
                self.bad.append("batch %d: %s" % (b, e))
                continue
            for it in items:
                if it.get("status") == "created":
                    self.acked[it["record_id"]] = it["patient_id"]
                else:
                    self.bad.append("batch %d: item %s" % (b, it))
            self.batches_acked += 1
            time.sleep(self.pause)


def check_sql_equals_store(s, db, sent, acked):
    """The store (HTTP) is the truth: every acknowledged record is in it, and phi_records and
    public_records hold exactly the record versions the store has, each once, with its patient."""
    client = H.KeepAliveClient(s.port, headers=s.auth_headers())
    in_store = {}
    try:
        for rid in sent:
            r = client.request("GET", "/v1/records/" + rid)
            if r.status == 200:
                j = r.json()
                in_store[(rid, j["version"])] = j["patient_id"]
            elif r.status != 404:
                fail("GET /v1/records/%s: HTTP %d %s" % (rid, r.status, short(r.text)))
    finally:
        client.close()
    lost = [rid for rid in acked if (rid, 1) not in in_store]
    check(not lost, "%d acknowledged records not in the store (first %s)" % (len(lost), lost[:3]))
    for (rid, v), pid in in_store.items():
        eq(v, 1, "version of %s" % rid)
        if rid in acked:
            eq(pid, acked[rid], "patient of %s (HTTP vs the ingest answer)" % rid)
    in_sql = phi_keys(db)
    diff_keys(in_sql, in_store, "phi_records vs the store")
    wrong = [(k, in_sql[k], in_store[k]) for k in in_store if in_sql[k] != in_store[k]]
    check(not wrong, "phi_records patient ids differ from HTTP's: %s" % wrong[:3])
    pub = pg().sql(db, "SELECT record_id, version, count(*) FROM medstream.public_records GROUP BY 1, 2")
    check(all(c == 1 for _, _, c in pub), "record versions in public_records more than once")
    diff_keys({(rid, v) for rid, v, _ in pub}, in_store, "public_records vs the store")
    return in_store


# ---------------------------------------------------------------------------------------------
# 1. schema

TABLES = {
    "migrations": {"version": "integer", "description": "text", "applied_at": "timestamp with time zone"},
    "sink_position": {"sink": "text", "node": "text", "commit_pos": "bigint",
                      "shipped_at": "timestamp with time zone", "commit_time_us": "bigint"},
    "patient_index": {"patient_id": "uuid", "name_norm": "text", "dob": "date"},
    "phi_patient_versions": {"patient_id": "uuid", "version": "integer", "fields": "jsonb",
                             "valid_from": "timestamp with time zone"},
    "phi_patients": {"patient_id": "uuid", "version": "integer", "fields": "jsonb",
                     "valid_from": "timestamp with time zone"},
    "phi_patients_history": {"patient_id": "uuid", "version": "integer", "fields": "jsonb"},
    "phi_records": {"record_id": "text", "version": "integer", "patient_id": "uuid", "type": "text",
                    "ts": "timestamp with time zone", "valid_from": "timestamp with time zone", "body": "jsonb"},
    "public_patients": {"patient_id": "uuid", "version": "integer", "fields": "jsonb",
                        "valid_from": "timestamp with time zone"},
    "public_records": {"record_id": "text", "version": "integer", "patient_id": "uuid", "type": "text",
                       "fields": "jsonb", "valid_from": "timestamp with time zone"},
    "info": {"key": None, "value": None},              # (types not specified)
}
PRIMARY_KEYS = {
    "migrations": ["version"], "sink_position": ["sink", "node"], "patient_index": ["patient_id"],
    "phi_patient_versions": ["patient_id", "version"], "phi_patients": ["patient_id"],
    "phi_records": ["record_id", "version"], "public_patients": ["patient_id", "version"],
    "public_records": ["record_id", "version"],
}


def check_schema(db):
    kinds = dict(pg().sql(db, "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname = 'medstream'"))
    for t in TABLES:
        check(kinds.get(t) in ("r", "p"), "table medstream.%s exists (relkind %s)" % (t, kinds.get(t)))
    eq(kinds.get("phi_patient_versions_t"), "v", "relkind of the view medstream.phi_patient_versions_t")
    for t, want in TABLES.items():
        cols = dict(pg().sql(db, "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                                 "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                             ("medstream." + t,)))
        for c, typ in want.items():
            check(c in cols, "column medstream.%s.%s exists (columns: %s)" % (t, c, sorted(cols)))
            if typ is not None:
                eq(cols[c], typ, "type of medstream.%s.%s" % (t, c))
    for t, want in PRIMARY_KEYS.items():
        got = [r[0] for r in pg().sql(
            db, "SELECT a.attname::text FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, o) "
                "ON true JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.o", ("medstream." + t,))]
        eq(got, want, "primary key of medstream.%s" % t)
    uniq = pg().sql(db, "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
                        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                        "WHERE i.indrelid = 'medstream.patient_index'::regclass AND i.indisunique GROUP BY i.indexrelid")
    check(["dob", "name_norm"] in [r[0] for r in uniq], "unique (name_norm, dob) on patient_index: %s" % uniq)
    notnull = pg().sql(db, "SELECT attrelid::regclass::text, attname::text FROM pg_attribute WHERE attnotnull AND "
                           "((attrelid = 'medstream.patient_index'::regclass AND attname IN ('name_norm', 'dob')) OR "
                           "(attrelid = 'medstream.sink_position'::regclass AND attname = 'commit_pos'))")
    eq(len(notnull), 3, "NOT NULL on patient_index.name_norm, patient_index.dob, sink_position.commit_pos (%s)"
       % notnull)
    vcols = [r[0] for r in pg().sql(db, "SELECT attname::text FROM pg_attribute WHERE attrelid = "
                                        "'medstream.phi_patient_versions_t'::regclass AND attnum > 0 ORDER BY attnum")]
    check({"patient_id", "version", "fields", "valid_from", "valid_to"} <= set(vcols),
          "columns of phi_patient_versions_t: %s" % vcols)
    fn = pg().sql(db, "SELECT to_regprocedure('medstream.phi_patient_as_of(uuid, timestamptz)')::text")[0][0]
    check(fn is not None, "function medstream.phi_patient_as_of(uuid, timestamptz) exists")


@test(timeout=60)
def test_schema_is_created_once_and_survives_a_restart():
    db = "t_schema"
    url = pg().create_db(db)
    s = start_server(url, "pg-schema")
    wait_shipped(s, db)
    check_schema(db)
    migrations = pg().sql(db, "SELECT version, description, applied_at FROM medstream.migrations ORDER BY version")
    check(len(migrations) >= 1, "migrations were recorded")
    check(all(d for _, d, _ in migrations), "every migration has a description: %s" % migrations)
    eq(pg().sql(db, "SELECT value FROM medstream.info WHERE key = 'history'"), [("periods",)],
       "medstream.info history (the periods extension is installed)")
    sv = pg().sql(db, "SELECT history_table_name::text FROM periods.system_versioning "
                      "WHERE table_name = 'medstream.phi_patients'::regclass")
    eq(sv, [("medstream.phi_patients_history",)], "phi_patients is system-versioned by periods")
    eq(len(pg().sql(db, "SELECT 1 FROM medstream.sink_position WHERE sink = 'postgres'")), 1, "sink_position row")
    h = s.get_json("/healthz")
    eq((h.get("status"), h.get("postgres")), ("ok", "ok"), "/healthz with PostgreSQL up (%s)" % h)
    m = metrics(s)
    for name in ("medstream_postgres_lag_commits", "medstream_postgres_up", "medstream_postgres_rows_total"):
        check(name in m, "/metrics has %s" % name)
    eq(m["medstream_postgres_up"], 1.0, "medstream_postgres_up")
    wait_no_lag(s)
    check_log_clean(s, "after the first start")

    s.ingest_ok([{"record_id": "schema-1", "name": "Schema Person", "dob": "1980-01-02", "favorite_color": "red"}])
    wait_shipped(s, db)
    eq(s.stop(), 0, "exit code of a SIGTERM stop")
    s.start()
    s.ingest_ok([{"record_id": "schema-2", "name": "Schema Person", "dob": "1980-01-02", "favorite_color": "blue"}])
    wait_shipped(s, db)
    eq(pg().sql(db, "SELECT version, description, applied_at FROM medstream.migrations ORDER BY version"),
       migrations, "migrations after a restart (nothing applied twice)")
    check_schema(db)
    eq(sorted(phi_keys(db)), [("schema-1", 1), ("schema-2", 1)], "record versions in phi_records after the restart")
    eq(s.get_json("/healthz").get("postgres"), "ok", "/healthz postgres after the restart")
    check_log_clean(s, "after the restart")
    s.stop()


@test(timeout=60)
def test_trigger_history_where_periods_is_not_used():
    """--postgres-history trigger: the fallback for clusters without the periods extension keeps the same
    history table, one row per shipped change of the current state, with the PostgreSQL system time."""
    db = "t_trigger"
    url = pg().create_db(db)
    s = start_server(url, "pg-trigger", extra=["--postgres-history", "trigger"])
    wait_shipped(s, db)  # connected and migrated
    eq(pg().sql(db, "SELECT value FROM medstream.info WHERE key = 'history'"), [("trigger",)],
       "medstream.info says which history is in use")
    eq(pg().sql(db, "SELECT count(*) FROM pg_extension WHERE extname = 'periods'"), [(0,)],
       "the periods extension was not created")
    pid = None
    for i, color in enumerate(("red", "green", "blue")):
        ans = s.ingest_ok([{"record_id": "trig-%d" % i, "name": "Trigger Person", "dob": "1971-03-04",
                            "favorite_color": color}])
        pid = ans["items"][0]["patient_id"]
        wait_shipped(s, db)
    eq(pg().sql(db, "SELECT version, fields->>'favorite_color' FROM medstream.phi_patients WHERE patient_id = %s",
                (pid,)), [(3, "blue")], "current state")
    hist = pg().sql(db, "SELECT version, fields->>'favorite_color', system_time_start < system_time_end "
                        "FROM medstream.phi_patients_history WHERE patient_id = %s ORDER BY version", (pid,))
    eq(hist, [(1, "red", True), (2, "green", True)], "history rows kept by the trigger")
    s.stop()


@test(timeout=60)
def test_a_role_without_superuser_ships_with_the_trigger_history():
    """The connecting role needs only CREATEROLE and a database it owns: periods (not a trusted extension)
    cannot be created by it, so auto falls back to the trigger history, says so, and everything ships."""
    db = "t_nonsuper"
    pg().sql("postgres", "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ms_sink') THEN "
                         "CREATE ROLE ms_sink LOGIN CREATEROLE; END IF; END $$")
    pg().sql("postgres", "CREATE DATABASE %s OWNER ms_sink" % db)
    eq(pg().sql("postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = 'ms_sink'"), [(False,)], "not a superuser")
    url = pg().url(db).replace("postgres@", "ms_sink@", 1)
    check("ms_sink@" in url, "connection URL for the role: %s" % url)
    s = start_server(url, "pg-nonsuper")
    ans = s.ingest_ok([{"record_id": "nonsuper-1", "name": "Plain Role", "dob": "1975-05-05", "favorite_color": "red"},
                       {"record_id": "nonsuper-2", "name": "Plain Role", "dob": "1975-05-05", "favorite_color": "tan"}])
    wait_shipped(s, db)
    eq(pg().sql(db, "SELECT value FROM medstream.info WHERE key = 'history'"), [("trigger",)],
       "history kept by the trigger")
    check("keeping history with a trigger" in s.log_tail(), "the log says why: %s" % short(s.log_tail()))
    eq(sorted(phi_keys(db)), [("nonsuper-1", 1), ("nonsuper-2", 1)], "the records are in phi_records")
    pid = ans["items"][0]["patient_id"]
    eq(pg().sql(db, "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'medstream' AND tablename IN "
                    "('phi_records', 'public_records') ORDER BY tablename"), [("medstream_phi",), ("medstream_public",)],
       "owners of the PHI and public tables")
    eq(pg().sql(db, "SELECT fields->>'favorite_color' FROM medstream.phi_patients WHERE patient_id = %s", (pid,)),
       [("tan",)], "current state")
    s.stop()


@test(timeout=90)
def test_a_store_restored_from_an_older_copy_is_not_shipped_over_postgres():
    """PostgreSQL remembers which commit it shipped last (position and commit time). A store put back to
    an older copy of itself reuses commit positions for other contents: the sink must notice and stop,
    not skip or overwrite (it says why; PostgreSQL keeps what it has)."""
    import shutil
    db = "t_restored"
    url = pg().create_db(db)
    s = start_server(url, "pg-restored")
    s.ingest_ok([{"record_id": "restore-a", "name": "Restore Person", "dob": "1966-06-16"}])
    wait_shipped(s, db)
    eq(s.stop(), 0, "stop before the copy")
    backup = s.data_dir + ".copy"
    shutil.copytree(s.data_dir, backup)
    s.start()
    s.ingest_ok([{"record_id": "restore-b-%d" % i, "name": "Restore Person", "dob": "1966-06-16"} for i in range(3)])
    s.ingest_ok([{"record_id": "restore-c", "name": "Other Person", "dob": "1967-07-17"}])
    wait_shipped(s, db)
    eq(s.stop(), 0, "stop before the restore")
    before = sorted(phi_keys(db))
    shutil.rmtree(s.data_dir)
    shutil.copytree(backup, s.data_dir)
    s.start()
    s.ingest_ok([{"record_id": "restore-d", "name": "Restore Person", "dob": "1966-06-16"}])
    h = wait_health(s, ("failing",), 15)
    eq(h.get("status"), "degraded", "/healthz postgres after the store went back to an older copy (%s)" % h)
    check("another history" in s.log_tail(), "the log says why: %s" % short(s.log_tail()))
    eq(sorted(phi_keys(db)), before, "PostgreSQL keeps what it had; nothing of the restored store shipped over it")
    s.stop()


@test(timeout=120)
def test_bench_measures_freshness_in_postgres():
    """`medstream bench --postgres` (the README's PostgreSQL figures): every probe is followed into SQL and
    timed until its row is in phi_records."""
    db = "t_bench"
    url = pg().create_db(db)
    s = start_server(url, "pg-bench")
    r = subprocess.run([H.BIN, "bench", "--url", "http://127.0.0.1:%d" % s.port, "--token", s.token,
                        "--records", "2000", "--size", "2000", "--batch", "500", "--probe-every", "50",
                        "--read-rate", "0", "--postgres", url, "--run-id", "pgbench", "--json"],
                       capture_output=True, text=True, timeout=100)
    eq(r.returncode, 0, "bench exit code (stderr %s)" % short(r.stderr))
    fig = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    eq((fig["records"], fig["failures"]), (2000, 0), "records and failures")
    eq(fig["postgres_freshness_samples"], fig["freshness_samples"], "every probe was seen in SQL too")
    check(fig["postgres_freshness_ms_p50"] >= fig["freshness_ms_p50"],
          "a row is in SQL no sooner than over the API: %s" % fig)
    wait_shipped(s, db)
    eq(pg().sql(db, "SELECT count(*) FROM medstream.phi_records WHERE record_id LIKE 'pgbench-%%'"), [(2000,)],
       "every record the bench sent is in SQL")
    s.stop()


@test(timeout=60)
def test_a_second_store_is_refused_on_the_same_database():
    """Commit positions of two stores are unrelated: a second store must not ship into a database the
    first one feeds (it would skip or double rows). It is refused, says why, and writes nothing."""
    db = "t_two_stores"
    url = pg().create_db(db)
    a = start_server(url, "pg-store-a")
    a.ingest_ok([{"record_id": "store-a-1", "name": "First Store", "dob": "1960-06-06"}])
    wait_shipped(a, db)
    a.stop()
    before = pg().sql(db, "SELECT record_id, version FROM medstream.phi_records ORDER BY 1, 2")
    pos = pg().sql(db, "SELECT commit_pos FROM medstream.sink_position")
    b = start_server(url, "pg-store-b")   # a new data directory: another store
    b.ingest_ok([{"record_id": "store-b-1", "name": "Second Store", "dob": "1961-07-07"}])
    h = wait_health(b, ("failing",), 15)
    eq(h.get("status"), "degraded", "/healthz postgres of the second store (%s)" % h)
    check("another medstream store" in b.log_tail(), "the log says why: %s" % short(b.log_tail()))
    eq(pg().sql(db, "SELECT record_id, version FROM medstream.phi_records ORDER BY 1, 2"), before,
       "the second store wrote nothing")
    eq(pg().sql(db, "SELECT commit_pos FROM medstream.sink_position"), pos, "the position did not move")
    b.stop()


@test(timeout=60)
def test_edge_values_reach_postgres_and_poison_never_wedges_the_sink():
    """What medstream accepts, PostgreSQL can hold: numbers at numeric's limits, times at the year 1,
    backslashes, tabs and newlines in strings, non-BMP characters all arrive with bodies equal to what was
    sent; what PostgreSQL could not hold (a NUL escape, a number past numeric's range, an event time that
    the offset puts before the year 1) is refused at ingest by line, and the sink never stops on it."""
    db = "t_edges"
    url = pg().create_db(db)
    s = start_server(url, "pg-edges")
    good = [
        '{"record_id":"edge-num-max","name":"Edge Person","dob":"1970-01-01","n":1e131071}',
        '{"record_id":"edge-num-min","name":"Edge Person","dob":"1970-01-01","n":-1.5e-16382}',
        '{"record_id":"edge-year-1","name":"Edge Person","dob":"1970-01-01","ts":"0001-01-01T00:00:00Z"}',
        '{"record_id":"edge-escapes","name":"Edge Person","dob":"1970-01-01",'
        '"notes":"tab\\there\\nnew line \\\\ backslash \\"quoted\\" \\u00e9 \\ud83d\\ude00 \\\\N"}',
        '{"record_id":"edge-nested","name":"Edge Person","dob":"1970-01-01","labs":[{"a":[1,[2,[3]]]},null,true]}',
    ]
    bad = [
        '{"record_id":"edge-nul","name":"Edge Person","dob":"1970-01-01","notes":"a\\u0000b"}',
        '{"record_id":"edge-num-over","name":"Edge Person","dob":"1970-01-01","n":1e131072}',
        '{"record_id":"edge-year-0","name":"Edge Person","dob":"1970-01-01","ts":"0001-01-01T00:30:00+01:00"}',
    ]
    ans = s.ingest_ok(("\n".join(good + bad) + "\n").encode())
    statuses = [it.get("status") for it in ans["items"]]
    eq(statuses, ["created"] * len(good) + ["rejected"] * len(bad), "statuses of the edge lines")
    for it in ans["items"][len(good):]:
        check("Edge Person" not in it.get("error", "") and it.get("error"), "a rejection names what, not the value: %s"
              % it)
    wait_shipped(s, db)
    for line in good:
        rid = json.loads(line)["record_id"]
        same = pg().sql(db, "SELECT body = %s::jsonb FROM medstream.phi_records WHERE record_id = %s", (line, rid))
        eq(same, [(True,)], "phi_records.body of %s equals the record sent" % rid)
    eq(pg().sql(db, "SELECT count(*) FROM medstream.phi_records WHERE record_id LIKE 'edge-%%'"), [(len(good),)],
       "only the accepted lines are in SQL")
    eq(pg().sql(db, "SELECT ts FROM medstream.phi_records WHERE record_id = 'edge-year-1'")[0][0].year, 1,
       "the year-1 event time")
    h = wait_health(s, ("ok",), 10)
    eq((h.get("status"), h.get("postgres_lag_commits")), ("ok", 0), "the sink is not stuck: %s" % h)
    s.stop()


@test(timeout=60)
def test_deleted_and_moved_records_reach_postgres():
    """DELETE /v1/records/{id} ships a tombstone row (deleted, no body, no public fields) and the patient's
    recomputed state; a record moved to another patient leaves the old patient's current state in SQL."""
    db = "t_tombstones"
    url = pg().create_db(db)
    s = start_server(url, "pg-tombstones")
    a = {"record_id": "tomb-a", "name": "Tomb Person", "dob": "1970-01-01", "ts": "2026-01-02T00:00:00Z",
         "favorite_color": "red", "diagnosis": "flu"}
    b = {"record_id": "tomb-b", "name": "Tomb Person", "dob": "1970-01-01", "ts": "2026-01-01T00:00:00Z",
         "favorite_color": "blue"}
    lab = {"record_id": "tomb-lab", "name": "Tomb Person", "dob": "1970-01-01", "ts": "2026-01-03T00:00:00Z",
           "hiv_status": "positive"}
    pid = s.ingest_ok([a, b, lab])["items"][0]["patient_id"]
    r = s.request("DELETE", "/v1/records/tomb-a")
    eq(r.status, 200, "DELETE: %s" % short(r.text))
    moved = s.ingest_ok([dict(lab, name="Other Person", dob="1980-01-01")])["items"][0]
    eq(moved["status"], "updated", "the moved record")
    wait_shipped(s, db)
    rows = pg().sql(db, "SELECT version, deleted, body IS NULL FROM medstream.phi_records WHERE record_id = 'tomb-a'"
                        " ORDER BY version")
    eq(rows, [(1, False, False), (2, True, True)], "phi_records of the deleted record")
    rows = pg().sql(db, "SELECT version, deleted, fields IS NULL FROM medstream.public_records"
                        " WHERE record_id = 'tomb-a' ORDER BY version")
    eq(rows, [(1, False, False), (2, True, True)], "public_records of the deleted record")
    cur = pg().sql(db, "SELECT fields FROM medstream.phi_patients WHERE patient_id = %s", (pid,))[0][0]
    eq(cur, s.get_json("/v1/patients/" + pid)["fields"], "phi_patients equals the HTTP state")
    check("diagnosis" not in cur and "hiv_status" not in cur, "deleted and moved values left the state: %s" % cur)
    eq(cur.get("favorite_color"), "blue", "the remaining record's value")
    pub = pg().sql(db, "SELECT fields FROM medstream.public_patients WHERE patient_id = %s ORDER BY version DESC"
                       " LIMIT 1", (pid,))[0][0]
    eq(pub, {"favorite_color": "blue"}, "public_patients after the deletion")
    s.stop()


# ---------------------------------------------------------------------------------------------
# 2. exactly once, with the right patient, public copies without PHI

def fullwidth(s):
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in s)


def spellings(name):
    """Spellings of one name that normalize the same (case, whitespace, NBSP/tab, fullwidth forms)."""
    return [name, name.upper(), "  " + name.lower().replace(" ", "   ") + " ",
            "\t" + name.replace(" ", "\u00a0") + "\n", fullwidth(name)]


@test(timeout=60)
def test_every_acknowledged_record_is_in_sql_exactly_once():
    db = "t_exactly_once"
    url = pg().create_db(db)
    s = start_server(url, "pg-once")
    people = []                                         # (spellings, dob)
    for i in range(48):
        name = "%s %s" % (H.rand_token(7).capitalize(), H.rand_token(9).capitalize())
        people.append((spellings(name), "19%02d-%02d-%02d" % (30 + i, 1 + i % 12, 1 + i % 28)))
    tok = H.rand_token(8)
    people.append((["\u00c9mile %s" % tok.capitalize(), "E\u0301MILE %s" % tok.upper(), "\u00e9mile  %s" % tok],
                   "1941-04-02"))                       # composed, decomposed (NFKC), lower case
    tok = H.rand_token(8)
    people.append((["Stra\u00dfe %s" % tok.capitalize(), "STRASSE %s" % tok.upper()], "1962-07-08"))  # ß folds to ss

    sent_latest = {}                                    # record_id -> the record as last sent
    expected = {}                                       # (record_id, version) -> (patient_id, record)
    person_of = {}                                      # record_id -> index in people
    pid_of_person = {}
    phi_values = set()
    statuses = {"created": 0, "updated": 0, "duplicate": 0}

    def new_record(b, i, k):
        spell, dob = people[k]
        rec = {"record_id": "pg2-b%d-%03d" % (b, i), "name": spell[(b + i) % len(spell)], "dob": dob,
               "favorite_color": ["red", "green", "blue", "teal"][i % 4], "type": ["visit", "lab", "note"][i % 3],
               "ts": "20%02d-%02d-%02dT08:30:00Z" % (20 + i % 7, 1 + i % 9, 10 + i % 10),
               "ssn": "9%02d-%02d-%04d" % (b, i % 100, 1000 + i), "notes": "pgnote %s" % H.rand_token(12)}
        person_of[rec["record_id"]] = k
        return rec

    for b in range(5):
        batch = [new_record(b, i, (b * 90 + i) % len(people)) for i in range(90)]
        if b >= 1:   # a second (and for some a third) version: same id, same person, changed content
            for rid in sorted(r for r in sent_latest if r.startswith("pg2-b%d-" % (b - 1)))[:8] + \
                    sorted(r for r, v in sent_latest.items() if v.get("rev") == b - 1)[:2]:
                rec = dict(sent_latest[rid], favorite_color="violet", notes="pgnote %s" % H.rand_token(12), rev=b)
                batch.append(rec)
            for rid in sorted(sent_latest)[b * 7: b * 7 + 5]:   # exact duplicates of what is stored
                if not any(r["record_id"] == rid for r in batch):
                    batch.append(dict(sent_latest[rid]))
        batch.append(dict(batch[0]))                     # a duplicate within the batch
        answer = s.ingest_ok(batch)
        eq(len(answer["items"]), len(batch), "answer items of batch %d" % b)
        for rec, it in zip(batch, answer["items"]):
            check(it["status"] in statuses, "batch %d: %s" % (b, it))
            statuses[it["status"]] += 1
            eq(it["record_id"], rec["record_id"], "record id in the answer")
            k = person_of[rec["record_id"]]
            eq(pid_of_person.setdefault(k, it["patient_id"]), it["patient_id"],
               "one patient id for every spelling of %r" % (people[k][0][0],))
            if it["status"] != "duplicate":
                expected[(rec["record_id"], it["version"])] = (it["patient_id"], rec)
                sent_latest[rec["record_id"]] = rec
            phi_values.update([rec["name"], rec["dob"], rec["ssn"], rec["notes"]])
    check(statuses["updated"] >= 30 and statuses["duplicate"] >= 20, "the mix of outcomes: %s" % statuses)
    check(any(v == 3 for _, v in expected), "some records reached version 3")
    wait_shipped(s, db)

    # phi_records: each acknowledged version once, with its patient and body; current versions as HTTP has them
    in_sql = phi_keys(db)
    diff_keys(in_sql, expected, "phi_records vs the acknowledged record versions")
    for key, (pid, _) in expected.items():
        eq(in_sql[key], pid, "patient of %s in phi_records" % (key,))
    bodies = {(rid, v): (body, typ, ts, vf) for rid, v, body, typ, ts, vf in pg().sql(
        db, "SELECT record_id, version, body, type, ts, valid_from FROM medstream.phi_records")}
    for key, (pid, rec) in expected.items():
        eq(bodies[key][0], rec, "phi_records.body of %s (the record as sent)" % (key,))
        eq(bodies[key][1], rec["type"], "phi_records.type of %s" % (key,))
        eq(bodies[key][2], H.parse_time(rec["ts"]), "phi_records.ts of %s" % (key,))
    client = H.KeepAliveClient(s.port, headers=s.auth_headers())
    try:
        for rid in sent_latest:
            r = client.request("GET", "/v1/records/" + rid)
            eq(r.status, 200, "GET /v1/records/%s" % rid)
            j = r.json()
            eq(j["version"], max(v for (i, v) in expected if i == rid), "current version of %s" % rid)
            eq(in_sql[(rid, j["version"])], j["patient_id"], "patient of %s (SQL vs HTTP)" % rid)
            body, _, _, vf = bodies[(rid, j["version"])]
            eq(body, j["fields"], "phi_records.body of %s vs HTTP's fields" % rid)
            eq(vf, H.parse_time(j["valid_from"]), "phi_records.valid_from of %s vs HTTP" % rid)
    finally:
        client.close()

    # patient_index: one row per patient, the normalized name and the date of birth
    index = {pid: (name, str(dob)) for pid, name, dob in pg().sql(
        db, "SELECT patient_id::text, name_norm, dob FROM medstream.patient_index")}
    want_index = {pid: (norm_name(people[k][0][0]), people[k][1]) for k, pid in pid_of_person.items()}
    eq(len(want_index), len(people), "distinct patients over HTTP")
    diff_keys(index, want_index, "patient_index vs the patients")
    for pid, want in want_index.items():
        eq(index[pid], want, "patient_index row of %s" % pid)

    # current state and every version, as HTTP has them
    current = {pid: (v, f) for pid, v, f in pg().sql(
        db, "SELECT patient_id::text, version, fields FROM medstream.phi_patients")}
    diff_keys(current, want_index, "phi_patients vs the patients")
    versions = {}
    for pid, v, f, vf in pg().sql(db, "SELECT patient_id::text, version, fields, valid_from "
                                      "FROM medstream.phi_patient_versions ORDER BY 1, 2"):
        versions.setdefault(pid, []).append((v, f, vf))
    public_patients = {}
    for pid, v, f in pg().sql(db, "SELECT patient_id::text, version, fields FROM medstream.public_patients "
                                  "ORDER BY 1, 2"):
        public_patients[pid] = (v, f)     # the latest version wins
    for pid in want_index:
        j = s.get_json("/v1/patients/" + pid)
        eq(current[pid], (j["version"], j["fields"]), "phi_patients (version, fields) of %s vs HTTP" % pid)
        hist = s.get_json("/v1/patients/%s/history" % pid)["versions"]
        eq(versions.get(pid), [(x["version"], x["fields"], H.parse_time(x["valid_from"])) for x in hist],
           "phi_patient_versions of %s vs HTTP's history" % pid)
        pub = s.get_json("/v1/public/patients/" + pid)
        check(pid in public_patients, "public_patients has %s" % pid)
        eq(public_patients[pid][1], pub["fields"], "public_patients fields of %s vs HTTP" % pid)

    # public_records: every record version, allow-listed fields only, equal to HTTP's public copies
    pub_rows = pg().sql(db, "SELECT record_id, version, patient_id::text, type, fields FROM medstream.public_records")
    pub_keys = {(rid, v): (pid, typ, f) for rid, v, pid, typ, f in pub_rows}
    eq(len(pub_keys), len(pub_rows), "public_records rows are distinct")
    diff_keys(pub_keys, expected, "public_records vs the acknowledged record versions")
    for key, (pid, typ, f) in pub_keys.items():
        eq(pid, expected[key][0], "patient of %s in public_records" % (key,))
        check(set(f) <= PUBLIC_FIELDS, "public_records fields of %s are allow-listed: %s" % (key, sorted(f)))
        if "ts" in f:
            eq(f["ts"], expected[key][1]["ts"][:4], "public ts of %s is the year" % (key,))
    for pid in want_index:
        http_pub = s.get_json("/v1/public/records?" + q({"patient_id": pid, "limit": 1000}))["records"]
        check(http_pub, "public records of %s over HTTP" % pid)
        for rec in http_pub:
            cur = max(v for (i, v) in expected if i == rec["record_id"])
            eq(pub_keys[(rec["record_id"], cur)][2], rec["fields"], "public_records fields of %s vs HTTP"
               % rec["record_id"])
    # no PHI key or value anywhere in the public tables
    dump = json.dumps([f for _, _, _, _, f in pub_rows] + [f for _, f in public_patients.values()],
                      ensure_ascii=False)
    for k in ("name", "dob", "ssn", "notes", "record_id"):
        check('"%s"' % k not in dump, "PHI key %r in the public tables" % k)
    leaked = sorted(v for v in phi_values | {norm_name(v) for v in phi_values} if v.strip() and v in dump)
    check(not leaked, "PHI values in the public tables: %s" % leaked[:5])
    for spell, dob in people:
        for token in norm_name(spell[0]).split():
            check(token not in dump.lower(), "part of a name (%r) in the public tables" % token)
    m = metrics(s)
    check(m.get("medstream_postgres_rows_total", 0) >= len(expected), "medstream_postgres_rows_total counts the rows "
          "(%s for %d record versions)" % (m.get("medstream_postgres_rows_total"), len(expected)))
    s.stop()


# ---------------------------------------------------------------------------------------------
# 3. as-of

@test(timeout=60)
def test_sql_as_of_equals_http_as_of():
    db = "t_as_of"
    url = pg().create_db(db)
    s = start_server(url, "pg-asof")
    name, dob = "Asof %s" % H.rand_token(8).capitalize(), "1977-05-06"
    steps = [{"record_id": "asof-1", "name": name, "dob": dob, "favorite_color": "red", "allergy": "none"},
             {"record_id": "asof-2", "name": name, "dob": dob, "favorite_color": "blue", "blood": "0+"},
             {"record_id": "asof-1", "name": name, "dob": dob, "favorite_color": "green", "allergy": "pollen"}]
    pid = None
    for i, rec in enumerate(steps):
        if i:
            time.sleep(1.2)   # versions well apart in time (not an assertion)
        it = s.ingest_ok([rec])["items"][0]
        check(it["status"] in ("created", "updated"), "step %d stored: %s" % (i + 1, it))
        pid = pid or it["patient_id"]
        eq(it["patient_id"], pid, "one patient")
        wait_shipped(s, db)   # each version in its own PostgreSQL transaction
    hist = s.get_json("/v1/patients/%s/history" % pid)["versions"]
    eq([v["version"] for v in hist], [1, 2, 3], "patient versions over HTTP")
    vf = [H.parse_time(v["valid_from"]) for v in hist]
    us, ms = datetime.timedelta(microseconds=1), datetime.timedelta(milliseconds=1)
    instants = [vf[0] - 5 * ms, vf[0] - us, vf[0], vf[0] + 3 * ms, vf[0] + (vf[1] - vf[0]) / 2,
                vf[1] - us, vf[1], vf[1] + 3 * ms, vf[2] - 3 * ms, vf[2] - us, vf[2], vf[2] + 5 * ms,
                datetime.datetime.now(datetime.timezone.utc)]
    seen = []
    for t in instants:
        T = rfc3339(t)
        r = s.get("/v1/patients/%s?%s" % (pid, q({"as_of": T})))
        check(r.status in (200, 404), "GET as_of=%s: HTTP %d %s" % (T, r.status, short(r.text)))
        rows = pg().sql(db, "SELECT version, fields, valid_from, valid_to FROM medstream.phi_patient_as_of(%s, %s)",
                        (pid, T))
        rows = [row for row in rows if row[0] is not None]   # a non-SETOF function gives one all-NULL row
        if r.status == 404:
            eq(rows, [], "phi_patient_as_of at %s (HTTP: 404, no version yet)" % T)
            seen.append(None)
            continue
        j = r.json()
        eq(len(rows), 1, "rows of phi_patient_as_of at %s (HTTP: version %d)" % (T, j["version"]))
        version, fields, valid_from, valid_to = rows[0]
        eq((version, fields), (j["version"], j["fields"]), "phi_patient_as_of at %s (version, fields) vs HTTP" % T)
        eq(valid_from, H.parse_time(j["valid_from"]), "valid_from at %s" % T)
        eq(valid_to, H.parse_time(j["valid_to"]) if j["valid_to"] else None, "valid_to at %s" % T)
        seen.append(version)
    eq(seen, [None, None, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3], "versions at the instants around each boundary")
    view = pg().sql(db, "SELECT version, valid_from, valid_to FROM medstream.phi_patient_versions_t "
                        "WHERE patient_id = %s ORDER BY version", (pid,))
    eq(view, [(v["version"], H.parse_time(v["valid_from"]), H.parse_time(v["valid_to"]) if v["valid_to"] else None)
              for v in hist], "phi_patient_versions_t vs HTTP's history")
    eq(pg().sql(db, "SELECT version FROM medstream.phi_patients WHERE patient_id = %s", (pid,)), [(3,)],
       "phi_patients holds the current version")
    eq(pg().sql(db, "SELECT version FROM medstream.phi_patients_history WHERE patient_id = %s ORDER BY version",
                (pid,)), [(1,), (2,)], "phi_patients_history holds the superseded versions (system time)")
    s.stop()


# ---------------------------------------------------------------------------------------------
# 4. PostgreSQL outage

@test(timeout=60)
def test_postgres_outage_during_ingest_loses_and_doubles_nothing():
    db = "t_outage"
    url = pg().create_db(db)
    s = start_server(url, "pg-outage")
    wait_shipped(s, db)
    eq(s.get_json("/healthz").get("postgres"), "ok", "/healthz postgres before the outage")
    loader = Loader(s, "outage", batches=40, size=50, pause=0.12)
    loader.start()
    stopped = False
    try:
        deadline = time.monotonic() + 10
        while loader.batches_acked < 4 and loader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        check(loader.batches_acked >= 4, "the first batches were acknowledged (%d; %s)"
              % (loader.batches_acked, (loader.bad + loader.errors)[:2]))
        pg().stop()
        stopped = True
        acked_at_stop = loader.batches_acked
        h = wait_health(s, ("unreachable",), 15)
        eq(h.get("status"), "degraded", "/healthz status while PostgreSQL is down (%s)" % h)
        eq(metrics(s).get("medstream_postgres_up"), 0.0, "medstream_postgres_up while PostgreSQL is down")
        s.ingest_ok([{"record_id": "pg-outage-extra", "name": "Outage Extra", "dob": "1990-09-09"}])
        loader.join(20)
        check(not loader.is_alive(), "the loader finished")
        time.sleep(1.1)  # the sink notes the lag at each reconnect attempt (every second)
        h = s.get_json("/healthz")
        check(h.get("postgres_lag_commits", 0) > 0 and h.get("postgres_lag_ms", 0) >= 1000,
              "the lag shows while PostgreSQL is down and keeps growing: %s" % h)
        m = metrics(s)
        check(m.get("medstream_postgres_lag_commits", 0) > 0 and m.get("medstream_postgres_lag_milliseconds", 0) >= 1000,
              "the lag in /metrics while PostgreSQL is down")
        check(loader.batches_acked > acked_at_stop, "batches acknowledged during the outage (%d before the stop, "
              "%d in all)" % (acked_at_stop, loader.batches_acked))
        check(not loader.bad and not loader.errors, "ingest answered 200 throughout the outage: %s"
              % (loader.bad + loader.errors)[:3])
        eq(loader.batches_acked, 40, "batches acknowledged")
        pg().restart()
        stopped = False
        wait_health(s, ("ok",), CATCH_UP, also=lambda j: j.get("status") == "ok")
        wait_shipped(s, db)
        eq(wait_no_lag(s).get("medstream_postgres_up"), 1.0, "medstream_postgres_up after the catch-up")
    finally:
        loader.halt.set()
        if stopped:
            try:
                pg().restart()   # for the tests after this one; a failure here must not hide the first
            except H.TestFailure as e:
                print("  (restarting PostgreSQL after the failure: %s)" % e, flush=True)
    acked = dict(loader.acked)
    acked["pg-outage-extra"] = s.get_json("/v1/records/pg-outage-extra")["patient_id"]
    in_store = check_sql_equals_store(s, db, loader.sent + ["pg-outage-extra"], acked)
    eq(len(in_store), len(acked), "record versions in the store (all acknowledged)")
    s.stop()


@test(timeout=90)
def test_an_erasure_and_the_identity_sent_again_ship_in_one_catch_up():
    """While PostgreSQL is down a patient is erased and the same identity sent again (a new patient): the
    catch-up ships both (the new patient's index row met the erased one's UNIQUE (name, dob) in one group:
    the sink stalled for good, the erased patient's rows left in PostgreSQL)."""
    db = "t_erase_again"
    url = pg().create_db(db)
    s = start_server(url, "pg-erase-again")
    who = {"name": "Erased Again", "dob": "1966-06-16"}
    old = s.ingest_ok([dict(who, record_id="ea-1")])["items"][0]["patient_id"]
    wait_shipped(s, db)
    pg().stop()
    try:
        r = s.request("DELETE", "/v1/patients/" + old, body=json.dumps({"reason": "test"}),
                      headers={"Content-Type": "application/json"})
        eq(r.status, 200, "DELETE /v1/patients: %s" % short(r.text))
        new = s.ingest_ok([dict(who, record_id="ea-2")])["items"][0]["patient_id"]
        check(new != old, "the identity sent again is a new patient")
    finally:
        pg().restart()
    wait_shipped(s, db)
    eq(wait_health(s, ("ok",), CATCH_UP).get("postgres"), "ok", "/healthz postgres after the catch-up")
    for table in ("patient_index", "phi_records", "phi_patients", "public_records"):
        eq(pg().sql(db, "SELECT count(*) FROM medstream.%s WHERE patient_id = %%s" % table, (old,))[0][0], 0,
           "rows of the erased patient in %s" % table)
    eq(pg().sql(db, "SELECT patient_id::text FROM medstream.patient_index")[0][0], new,
       "the index names the new patient")
    eq([tuple(x) for x in pg().sql(db, "SELECT record_id FROM medstream.phi_records WHERE patient_id = %s", (new,))],
       [("ea-2",)],
       "the new patient's record")
    s.stop()


@test(timeout=60)
def test_healthz_says_unreachable_soon_after_postgres_stops_with_nothing_to_ship():
    db = "t_idle_outage"
    url = pg().create_db(db)
    s = start_server(url, "pg-idle-outage")
    s.ingest_ok([{"record_id": "pg-idle-0", "name": "Idle Outage", "dob": "1990-09-09"}])
    wait_shipped(s, db)
    wait_no_lag(s)
    eq(wait_health(s, ("ok",), 10).get("status"), "ok", "/healthz once caught up")
    # from here on nothing is committed (/healthz and /metrics write no audit entries): the sink is idle
    pg().stop()
    try:
        t0 = time.monotonic()
        h = wait_health(s, ("unreachable",), 3.0)
        took = time.monotonic() - t0
        eq(h.get("status"), "degraded", "/healthz status while PostgreSQL is down (%s)" % h)
        eq(metrics(s).get("medstream_postgres_up"), 0.0, "medstream_postgres_up while PostgreSQL is down")
        eq(metrics(s).get("medstream_commit_position"), float(store_position(s)), "nothing committed meanwhile")
        print("  (unreachable %.2f s after PostgreSQL stopped, with nothing to ship)" % took, flush=True)
    finally:
        pg().restart()
    wait_health(s, ("ok",), CATCH_UP, also=lambda j: j.get("status") == "ok")
    s.ingest_ok([{"record_id": "pg-idle-1", "name": "Idle Outage", "dob": "1990-09-09"}])
    wait_shipped(s, db)
    eq(pg().sql(db, "SELECT count(*) FROM medstream.phi_records")[0][0], 2, "rows in phi_records after the outage")
    s.stop()


# ---------------------------------------------------------------------------------------------
# 5. kill -9 of medstream while shipping

@test(timeout=60)
def test_kill9_while_shipping_loses_and_doubles_nothing():
    db = "t_kill9"
    url = pg().create_db(db)
    s = start_server(url, "pg-kill9")
    wait_shipped(s, db)
    sent, acked = [], {}
    for rnd in range(2):
        loader = Loader(s, "kill%d" % rnd, batches=40, size=50, pause=0.03)
        loader.start()
        deadline = time.monotonic() + 15
        first = shipped_position(db)
        # kill once the loader is well under way and the sink has moved since the round began
        while time.monotonic() < deadline and loader.is_alive() and not (
                loader.batches_acked >= 8 + 4 * rnd and (shipped_position(db) or 0) > (first or 0)):
            time.sleep(0.01)
        check(loader.is_alive(), "the loader was still sending at the kill (round %d; %d batches; %s)"
              % (rnd, loader.batches_acked, (loader.bad + loader.errors)[:2]))
        at_kill = (store_position(s), shipped_position(db))
        s.kill9()
        print("  round %d: killed after %d batches, the store at commit %d, PostgreSQL at %s"
              % (rnd, loader.batches_acked, at_kill[0], at_kill[1]), flush=True)
        loader.join(20)
        check(not loader.is_alive(), "the loader stopped after the kill")
        check(not loader.bad, "non-200 answers before the kill: %s" % loader.bad[:3])
        sent += loader.sent
        acked.update(loader.acked)
        s.start()
    tail = Loader(s, "after", batches=3, size=50, pause=0)
    tail.run()
    check(not tail.bad and not tail.errors, "ingest after the restarts: %s" % (tail.bad + tail.errors)[:3])
    sent += tail.sent
    acked.update(tail.acked)
    wait_shipped(s, db)
    check_sql_equals_store(s, db, sent, acked)
    check_log_clean(s, "after the last restart")
    s.stop()


# ---------------------------------------------------------------------------------------------
# 5b. a schema change: the public tables rewritten under the version in force

S1_PUBLIC = {"type": "copy", "ts": "year", "favorite_color": "copy", "mrn": "copy"}
S2_PUBLIC = {"type": "copy", "ts": "year", "favorite_color": "copy"}   # mrn found to identify people


def write_schema(s, public):
    path = os.path.join(s.base, "schema.json")
    with open(path, "w") as f:
        json.dump({"public": public}, f)
    return path


def schema_server(url, name, public):
    """A server with --postgres url (None: without) and --schema publishing `public` (a file in its base)."""
    s = H.Server(name=name)
    s.extra_args = (["--postgres", url] if url else []) + ["--schema", write_schema(s, public)]
    return s


def ingest_mrn_records(s, tag, commits=12, per_commit=3):
    """`commits` POSTs of `per_commit` records (patients of 4 identities, an mrn each, some a second version,
    one deleted): one commit each, so that a rewrite in small steps has many. The record ids."""
    rids = []
    for c in range(commits):
        recs = []
        for i in range(per_commit):
            n = c * per_commit + i
            recs.append({"record_id": "sc-%s-%03d" % (tag, n), "name": "Schema %s Person %d" % (tag.capitalize(), n % 4),
                         "dob": "1961-03-%02d" % (1 + n % 4), "type": ["visit", "lab"][n % 2],
                         "ts": "20%02d-05-06T07:08:09Z" % (20 + n % 5), "mrn": "mrn-%s-%d" % (tag, n),
                         "favorite_color": ["red", "blue", "green"][n % 3], "ssn": "555-12-%04d" % n})
        s.ingest_ok(recs)
        rids += [r["record_id"] for r in recs]
    s.ingest_ok([{"record_id": rids[1], "name": "Schema %s Person 1" % tag.capitalize(), "dob": "1961-03-02",
                  "type": "lab", "ts": "2021-01-01T00:00:00Z", "mrn": "mrn-%s-again" % tag, "favorite_color": "pink"}])
    r = s.request("DELETE", "/v1/records/" + rids[2])
    eq(r.status, 200, "DELETE /v1/records/%s: %s" % (rids[2], short(r.text)))
    return rids


def public_rows(db):
    """Every row of both public tables, as {key: (columns...)} (valid_from left out)."""
    recs = {(rid, v): (pid, typ, year, fields, deleted) for rid, v, pid, typ, year, fields, deleted in pg().sql(
        db, "SELECT record_id, version, patient_id::text, type, year, fields, deleted FROM medstream.public_records")}
    pats = {(pid, v): fields for pid, v, fields in pg().sql(
        db, "SELECT patient_id::text, version, fields FROM medstream.public_patients")}
    return recs, pats


def with_mrn(db):
    return pg().sql(db, "SELECT (SELECT count(*) FROM medstream.public_records WHERE fields ? 'mrn'),"
                        " (SELECT count(*) FROM medstream.public_patients WHERE fields ? 'mrn')")[0]


def rewrite_state(db):
    """sink_position's (public_schema, rewrite_to, rewrite_end, rewrite_done); None where the columns are missing."""
    import psycopg2
    try:
        rows = pg().sql(db, "SELECT public_schema, rewrite_to, rewrite_end, rewrite_done FROM medstream.sink_position"
                            " WHERE sink = 'postgres'")
    except psycopg2.errors.UndefinedColumn:
        return None
    return rows[0] if rows else None


def wait_switched(s, version, limit=60):
    deadline = time.monotonic() + limit
    while True:
        h = s.get_json("/healthz")
        if h["schema"]["version"] == version and not h["schema"]["reprojecting"]:
            return h
        if time.monotonic() > deadline:
            fail("the store did not switch to schema version %d within %ds: %s" % (version, limit, h))
        time.sleep(0.1)


def wait_rewritten(s, db, version, limit=CATCH_UP):
    """Poll until no public row has mrn and sink_position says the public tables are under `version`."""
    deadline = time.monotonic() + limit
    while True:
        left, state = with_mrn(db), rewrite_state(db)
        if left == (0, 0) and state is not None and state[:2] == (version, None):
            return
        if time.monotonic() > deadline:
            fail("%ds after the switch to schema version %d, %d public_records and %d public_patients rows still "
                 "have mrn, which the schema in force no longer publishes; sink_position (public_schema, rewrite_to,"
                 " rewrite_end, rewrite_done): %s; /healthz: %s"
                 % (limit, version, left[0], left[1], state, short(s.get("/healthz").text)))
        time.sleep(0.1)


def check_public_rows_equal_api(s, db):
    """Each record's and patient's latest row in PostgreSQL equals the public API's answer for it."""
    recs, pats = public_rows(db)
    latest = {}
    for (rid, v), row in recs.items():
        if v > latest.get(rid, (0,))[0]:
            latest[rid] = (v, row)
    api = {r["record_id"]: r for r in s.get_all("/v1/public/records", "records")}
    eq(sorted(api), sorted(rid for rid, (v, row) in latest.items() if not row[4]),
       "the live records: the public API vs the latest public_records rows")
    for rid, r in api.items():
        v, (pid, typ, year, fields, deleted) = latest[rid]
        eq(fields, r["fields"], "public_records.fields of %s version %d vs GET /v1/public/records" % (rid, v))
        eq(pid, r["patient_id"], "public_records.patient_id of %s" % rid)
    newest = {}
    for (pid, v), fields in pats.items():
        if v > newest.get(pid, (0,))[0]:
            newest[pid] = (v, fields)
    for pid, (v, fields) in newest.items():
        eq(fields, s.get_json("/v1/public/patients/" + pid)["fields"],
           "public_patients.fields of %s version %d vs GET /v1/public/patients" % (pid, v))


def check_equals_a_fresh_ship(s, db, name):
    """Every public row (every version, tombstones too) equals the row the sink ships from scratch under the
    version in force: the server pointed at a new database, caught up, and back."""
    fresh = "%s_fresh" % db
    url = pg().create_db(fresh)
    args = s.extra_args
    s.stop()
    s.extra_args = ["--postgres", url] + args[2:]
    s.start()
    wait_shipped(s, fresh)
    want, got = public_rows(fresh), public_rows(db)
    for i, table in enumerate(("public_records", "public_patients")):
        diff_keys(got[i], want[i], "%s (%s) vs a fresh ship" % (table, name))
        wrong = [k for k in want[i] if got[i][k] != want[i][k]]
        check(not wrong, "%s: %d rows differ from a fresh ship under the version in force (first %s: %s vs %s)"
              % (table, len(wrong), wrong[:1], [got[i][k] for k in wrong[:1]], [want[i][k] for k in wrong[:1]]))
    s.stop()
    s.extra_args = args


@test(timeout=180)
def test_a_schema_change_rewrites_the_public_tables():
    """S1 publishes mrn, S2 no longer: after the store's switch to version 2 no public row has mrn, every row
    is the store's copy under version 2 (the public API's answer; a fresh ship's row), the count unchanged
    (a patient erased before it stays gone), and sink_position, /healthz and /metrics say version 2."""
    db = "t_schema_change"
    url = pg().create_db(db)
    s = schema_server(url, "pg-schema-change", S1_PUBLIC)
    s.start()
    rids = ingest_mrn_records(s, "a")
    wait_shipped(s, db)
    # a patient erased under S1: the rewrite walks its commits and must not bring any row of it back
    erased = pg().sql(db, "SELECT patient_id::text FROM medstream.public_records WHERE record_id = %s", (rids[3],))[0][0]
    r = s.request("DELETE", "/v1/patients/" + erased, body=json.dumps({"reason": "test"}),
                  headers={"Content-Type": "application/json"})
    eq(r.status, 200, "DELETE /v1/patients/%s: %s" % (erased, short(r.text)))
    wait_shipped(s, db)
    recs, pats = public_rows(db)
    check(with_mrn(db)[0] > 0 and with_mrn(db)[1] > 0, "under S1 the public rows have mrn: %s" % (with_mrn(db),))
    s.stop()
    write_schema(s, S2_PUBLIC)
    s.start()
    wait_switched(s, 2)
    wait_rewritten(s, db, 2)
    after = public_rows(db)
    eq((len(after[0]), len(after[1])), (len(recs), len(pats)), "public rows (records, patients) after the rewrite")
    eq(pg().sql(db, "SELECT (SELECT count(*) FROM medstream.public_records WHERE patient_id = %s),"
                    " (SELECT count(*) FROM medstream.public_patients WHERE patient_id = %s)", (erased, erased)),
       [(0, 0)], "public rows of the patient erased before the switch")
    s.ingest_ok([{"record_id": "sc-a-late", "name": "Schema A Person 0", "dob": "1961-03-01", "mrn": "mrn-late",
                  "favorite_color": "red", "type": "visit", "ts": "2024-01-01T00:00:00Z"}])
    wait_shipped(s, db)
    eq(with_mrn(db), (0, 0), "public rows with mrn after the switch and a new record")
    check_public_rows_equal_api(s, db)
    h = s.get_json("/healthz")
    eq((h.get("postgres_public_schema"), h.get("postgres_rewriting")), (2, None), "/healthz's postgres part")
    m = metrics(s)
    eq(m.get("medstream_postgres_public_schema_version"), 2.0, "medstream_postgres_public_schema_version")
    check(m.get("medstream_postgres_rewritten_rows_total", 0) > 0, "medstream_postgres_rewritten_rows_total counts")
    check_log_clean(s, "after the rewrite")
    check_equals_a_fresh_ship(s, db, "after the rewrite")


@test(timeout=240)
def test_kill9_mid_rewrite_resumes_and_rewrites_every_row_once():
    """MEDSTREAM_TEST_PG_REWRITE_CRASH=3 with steps of 10 rows: the server SIGKILLs itself in the rewrite's
    third step (its rows updated, not committed). PostgreSQL keeps the two steps before with their cursor;
    the next start resumes there (logged), and every row ends right, none twice, none lost."""
    db = "t_schema_kill9"
    url = pg().create_db(db)
    s = schema_server(url, "pg-schema-kill9", S1_PUBLIC)
    s.start()
    ingest_mrn_records(s, "k", commits=20)
    wait_shipped(s, db)
    count = tuple(len(t) for t in public_rows(db))
    s.stop()
    write_schema(s, S2_PUBLIC)
    os.environ["MEDSTREAM_TEST_PG_REWRITE_ROWS"] = "10"
    os.environ["MEDSTREAM_TEST_PG_REWRITE_CRASH"] = "3"
    try:
        s.start()
    finally:
        del os.environ["MEDSTREAM_TEST_PG_REWRITE_ROWS"]
        del os.environ["MEDSTREAM_TEST_PG_REWRITE_CRASH"]
    t0 = time.monotonic()
    while s.alive() and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    check(not s.alive(), "the server did not kill itself in the rewrite's third step")
    s.kill9()
    state = rewrite_state(db)
    check(state is not None and state[0] == 1 and state[1] == 2 and 0 < state[3] < state[2],
          "sink_position after the kill: (public_schema, rewrite_to, rewrite_end, rewrite_done) %s: a rewrite to "
          "version 2 part done" % (state,))
    left = with_mrn(db)
    check(0 < left[0] + left[1] < sum(count), "after the kill some rows are rewritten, some not yet: %s of %s with "
          "mrn" % (left, count))
    s.start()
    check("resuming the rewrite of the public tables to schema version 2 at commit %d of %d" % (state[3], state[2])
          in log_since_last_start(s), "the restart resumes at the cursor: %s" % short(log_since_last_start(s), 800))
    wait_rewritten(s, db, 2)
    wait_shipped(s, db)
    eq(tuple(len(t) for t in public_rows(db)), count, "public rows (records, patients) after the resumed rewrite")
    check_public_rows_equal_api(s, db)
    check_log_clean(s, "after the resumed rewrite")
    check_equals_a_fresh_ship(s, db, "after the resumed rewrite")


@test(timeout=180)
def test_a_schema_change_while_the_sink_is_down_rewrites_at_its_next_start():
    """Rows shipped under S1; the server then runs with S2 without --postgres (the switch while the sink is
    down), and starts again with it: the sink finds the tables under version 1 and rewrites them."""
    db = "t_schema_down"
    url = pg().create_db(db)
    s = schema_server(url, "pg-schema-down", S1_PUBLIC)
    s.start()
    ingest_mrn_records(s, "d")
    wait_shipped(s, db)
    count = tuple(len(t) for t in public_rows(db))
    s.stop()
    args = s.extra_args
    s.extra_args = ["--schema", write_schema(s, S2_PUBLIC)]
    s.start()
    wait_switched(s, 2)
    s.stop()
    s.extra_args = args
    s.start()
    wait_rewritten(s, db, 2)
    wait_shipped(s, db)
    eq(tuple(len(t) for t in public_rows(db)), count, "public rows (records, patients) after the rewrite")
    check_public_rows_equal_api(s, db)
    check_log_clean(s, "after the rewrite")
    check_equals_a_fresh_ship(s, db, "after the rewrite at the next start")


@test(timeout=180)
def test_a_database_shipped_before_the_version_was_kept_is_rewritten_when_the_schema_ever_changed():
    """A database from a medstream before migration 7 (sink_position.public_schema NULL) fed by a store whose
    schema changed since (a deployment that met the defect): the rewrite runs at the next start. One whose
    store never changed schema is taken as version 1, nothing rewritten."""
    db = "t_schema_upgrade"
    url = pg().create_db(db)
    s = schema_server(url, "pg-schema-upgrade", S1_PUBLIC)
    s.start()
    ingest_mrn_records(s, "u", commits=4)
    wait_shipped(s, db)
    s.stop()
    pg().sql(db, "UPDATE medstream.sink_position SET public_schema = NULL")
    s.start()
    wait_shipped(s, db)
    eq(rewrite_state(db), (1, None, None, None), "sink_position after a start on a store whose schema never changed")
    check(with_mrn(db)[0] > 0, "under S1 the public rows keep mrn")
    check("rewriting the public tables" not in log_since_last_start(s), "nothing rewritten under S1")
    s.stop()
    count = tuple(len(t) for t in public_rows(db))
    args = s.extra_args
    s.extra_args = ["--schema", write_schema(s, S2_PUBLIC)]
    s.start()
    wait_switched(s, 2)
    s.stop()
    pg().sql(db, "UPDATE medstream.sink_position SET public_schema = NULL")
    s.extra_args = args
    s.start()
    wait_rewritten(s, db, 2)
    eq(tuple(len(t) for t in public_rows(db)), count, "public rows (records, patients) after the rewrite")
    check_public_rows_equal_api(s, db)
    check_log_clean(s, "after the rewrite")
    s.stop()


# ---------------------------------------------------------------------------------------------
# 6. roles

@test(timeout=60)
def test_analyst_role_is_refused_on_phi_tables():
    import psycopg2
    db = "t_analyst"
    url = pg().create_db(db)
    s = start_server(url, "pg-analyst")
    s.ingest_ok([{"record_id": "analyst-%d" % i, "name": "Analyst Case %d" % (i % 2), "dob": "1985-03-0%d" % (1 + i % 2),
                  "favorite_color": "red", "type": "visit", "ts": "2026-01-02T03:04:05Z", "ssn": "111-22-333%d" % i}
                 for i in range(4)])
    wait_shipped(s, db)
    roles = dict(pg().sql(db, "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname IN "
                              "('medstream_phi', 'medstream_public', 'medstream_analyst')"))
    eq(sorted(roles), ["medstream_analyst", "medstream_phi", "medstream_public"], "the medstream roles exist")
    eq(roles["medstream_analyst"], False, "medstream_analyst is NOLOGIN")
    owners = dict(pg().sql(db, "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c "
                               "JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE n.nspname = 'medstream' AND c.relkind IN ('r', 'p')"))
    for t in ("phi_patients", "phi_patients_history", "phi_records", "phi_patient_versions", "patient_index"):
        eq(owners.get(t), "medstream_phi", "owner of medstream.%s" % t)
    for t in ("public_patients", "public_records"):
        eq(owners.get(t), "medstream_public", "owner of medstream.%s" % t)

    pg().sql(db, "CREATE ROLE alice LOGIN IN ROLE medstream_analyst")
    conn = pg().connect(db, user="alice")
    try:
        def refused(stmt):
            with conn.cursor() as cur:
                try:
                    cur.execute(stmt)
                except psycopg2.errors.InsufficientPrivilege:
                    return
                except psycopg2.Error as e:
                    fail("as alice, %s: expected InsufficientPrivilege, got %s: %s"
                         % (stmt, e.__class__.__name__, str(e).strip()))
                fail("as alice (medstream_analyst), %s was allowed" % stmt)

        with conn.cursor() as cur:
            for t in ("public_patients", "public_records"):
                cur.execute("SELECT count(*) FROM medstream." + t)
                check(cur.fetchone()[0] >= 2, "alice reads medstream.%s" % t)
                cur.execute("SELECT patient_id, version, fields FROM medstream." + t + " LIMIT 1")
                check(cur.fetchone() is not None, "alice reads the columns of medstream.%s" % t)
        for t in ("public_patients", "public_records"):  # the commit time: finer than the public year
            refused("SELECT valid_from FROM medstream.%s LIMIT 1" % t)
        for t in ("phi_patients", "phi_records", "patient_index", "phi_patient_versions",
                  "phi_patients_history", "phi_patient_versions_t"):
            refused("SELECT * FROM medstream.%s LIMIT 1" % t)
        pid = s.get_json("/v1/records/analyst-0")["patient_id"]
        refused("SELECT * FROM medstream.phi_patient_as_of('%s', now())" % pid)
        refused("INSERT INTO medstream.public_records (record_id, version, patient_id, type, fields, valid_from) "
                "VALUES ('x', 1, '%s', 'visit', '{}', now())" % pid)
        refused("UPDATE medstream.public_patients SET fields = '{}'")
    finally:
        conn.close()
    s.stop()



# ---------------------------------------------------------------------------------------------
# 7. a store restored from a backup (README "Backup and restore")

@test(timeout=120)
def test_a_restored_store_is_not_shipped_over_a_later_history():
    """A store put back to a backup taken before commits PostgreSQL already has: the sink ships nothing
    (the store ends before PostgreSQL's position; later, once the restored store has made a commit at
    that position, its commit time differs), /healthz says failing; with the schema dropped, the sink
    ships the restored store's history from the start, without the lost commits."""
    db = "t_restore"
    url = pg().create_db(db)
    s = start_server(url, "pg-restore")
    kept = [{"record_id": "pg-restore-kept-%d" % i, "name": "Restore Kept %d" % i, "dob": "1980-01-01"}
            for i in range(5)]
    s.ingest_ok(kept)
    wait_shipped(s, db)
    copy = os.path.join(s.base, "copy")
    r = subprocess.run([H.BIN, "backup", "--data", s.data_dir, "--out", copy], capture_output=True, text=True,
                       timeout=60)
    eq(r.returncode, 0, "backup (%s)" % short(r.stderr))
    backup_pos = int(re.search(r": commit (\d+) ", r.stdout).group(1))
    for i in range(3):
        s.ingest_ok([{"record_id": "pg-restore-lost-%d" % i, "name": "Restore Lost", "dob": "1980-01-01"}])
    shipped = wait_shipped(s, db)
    check(shipped > backup_pos, "PostgreSQL has commits after the backup (%d > %d)" % (shipped, backup_pos))
    password = s.admin_password()
    s.stop()
    os.rename(s.data_dir, s.data_dir + ".old")
    os.rename(copy, s.data_dir)
    s.admin_password = lambda: password
    s.start()
    wait_health(s, ("failing",), 15)
    log = log_since_last_start(s)
    check("postgres: the database has commit %d of another history than this store's (the store ends before "
          "it); a store restored from an older copy? not shipping over it" % shipped in log,
          "the log says why: %s" % short(log, 800))
    eq(shipped_position(db), shipped, "PostgreSQL's position while refused")
    while store_position(s) < shipped:  # the restored store makes its own commits at those positions
        s.ingest_ok([{"record_id": "pg-restore-new-%d" % store_position(s), "name": "Restore New",
                      "dob": "1980-01-01"}])
    deadline = time.monotonic() + 15
    while "its commit time differs" not in log_since_last_start(s) and time.monotonic() < deadline:
        time.sleep(0.2)
    check("postgres: the database has commit %d of another history than this store's (its commit time differs)"
          % shipped in log_since_last_start(s), "the log says why: %s" % short(log_since_last_start(s), 800))
    eq(s.get_json("/healthz").get("postgres"), "failing", "/healthz postgres while refused")
    eq(pg().sql(db, "SELECT count(*) FROM medstream.phi_records WHERE record_id LIKE 'pg-restore-new-%'"), [(0,)],
       "nothing of the restored store's new commits shipped over the later history")
    pg().sql(db, "DROP SCHEMA medstream CASCADE")
    wait_health(s, ("ok",), CATCH_UP)
    wait_shipped(s, db)
    new = [row[0] for row in pg().sql(db, "SELECT record_id FROM medstream.phi_records")]
    check(not [rid for rid in new if rid.startswith("pg-restore-lost-")], "the lost commits are not in the new schema")
    check(all(r["record_id"] in new for r in kept), "the kept records are shipped again: %s" % sorted(new))
    s.stop()


if __name__ == "__main__":
    H.main()

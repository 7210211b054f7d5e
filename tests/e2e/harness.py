# End-to-end test harness for medstream (Python 3 standard library only).
#
# What it provides:
#   - Server: runs `BIN init DIR` and `BIN serve --data DIR --listen 127.0.0.1:PORT [extra args]`
#     (BIN from $MEDSTREAM_BIN, default <repo>/build/medstream), waits until GET /healthz is 200
#     (10 s timeout), stops it (SIGTERM, then SIGKILL after 5 s) or kills it with SIGKILL (kill -9),
#     and restarts it on the same data directory.
#   - HTTP helpers over http.client; every call has a timeout.
#   - A tiny test registry (@test) and runner (main()) that prints `PASS name (S of T s)` / `FAIL name: reason`
#     per test and ends with exactly the line `N passed, N failed`, exiting 1 if any test failed.
#     Each test also runs under a SIGALRM watchdog so that nothing can hang the suite.
#
# Usage from a test file:
#     import harness
#     @harness.test
#     def test_something(): ...
#     if __name__ == "__main__": harness.main()
# `python3 test_x.py NAME_SUBSTRING...` runs only the matching tests.

import atexit
import datetime
import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.environ.get("MEDSTREAM_BIN") or os.path.join(REPO_ROOT, "build", "medstream")
if not os.path.isabs(BIN):
    BIN = os.path.join(REPO_ROOT, BIN)

HTTP_TIMEOUT = 10.0          # seconds, default for every HTTP call
HEALTH_TIMEOUT = 10.0        # seconds to wait for /healthz after start
STOP_GRACE = 5.0             # seconds between SIGTERM and SIGKILL
INIT_TIMEOUT = 30.0          # seconds for `medstream init`
DEFAULT_TEST_TIMEOUT = 40    # seconds per test (watchdog)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

_all_servers = []
_temp_dirs = []


class TestFailure(AssertionError):
    pass


class Skip(Exception):
    """Raised by a test that cannot run here (e.g. needs root); reported as SKIP, never as a pass."""


class TestTimeout(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# small helpers

def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise TestFailure("%s: expected %r, got %r" % (what, expected, actual))


def short(value, limit=300):
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


VENV = os.path.join(REPO_ROOT, "build", "venv")


def venv_python(imports, packages):
    """build/venv's python, with `packages` installed from PyPI when `imports` (module names) do not import
    there; the venv is made with the system python3 on first use. Test files that need PyPI's readers or
    Playwright call this, and tests/e2e/run.sh runs files side by side, so it holds build/venv.lock while it
    checks and installs: two files never build the venv at once. Raises RuntimeError naming what failed."""
    py = os.path.join(VENV, "bin", "python3")
    os.makedirs(os.path.dirname(VENV), exist_ok=True)
    with open(VENV + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(py):
            system = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
            r = subprocess.run([system, "-m", "venv", VENV], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError("%s -m venv %s failed: %s" % (system, VENV, short(r.stderr)))
        if subprocess.run([py, "-c", "import " + ", ".join(imports)], capture_output=True).returncode != 0:
            print("installing %s into %s" % (" ".join(packages), VENV), flush=True)
            env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")  # the tests use Debian's Chromium
            r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + packages,
                               env=env, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError("%s could not be installed into %s: %s" % (" ".join(packages), VENV,
                                                                               short(r.stderr)))
    return py


def rand_token(n=10):
    """A random lowercase token (letters only, so it survives name normalization unchanged)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[b % 26] for b in os.urandom(n))


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def listens_on(pid, port):
    """Whether process pid holds the listening TCP socket on 127.0.0.1:port (or any address). A server
    started on a port picked by free_port() may lose it to another test's server started meanwhile;
    this tells an answer from ours from an answer from theirs (Linux: /proc/net/tcp and the fd links)."""
    inodes = set()
    want = ":%04X" % port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            f = ln.split()
            if len(f) > 9 and f[3] == "0A" and f[1].endswith(want):
                inodes.add("socket:[%s]" % f[9])
    fds = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for n in names:
        try:
            if os.readlink(os.path.join(fds, n)) in inodes:
                return True
        except OSError:
            pass
    return False


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s):
    """Parse an RFC 3339 time into an aware datetime (fractional seconds truncated to microseconds)."""
    m = RFC3339_RE.match(s or "")
    if not m:
        raise TestFailure("not an RFC 3339 time: %r" % (s,))
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    us = int((frac[1:] + "000000")[:6]) if frac else 0
    if tz in ("Z", "z"):
        tzinfo = datetime.timezone.utc
    else:
        sign = 1 if tz[0] == "+" else -1
        tzinfo = datetime.timezone(sign * datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    return datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), us, tzinfo)


def q(params):
    """URL query string from a dict (values percent-encoded, UTF-8)."""
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


def ndjson(records):
    """NDJSON body (bytes) from a list of dicts or preformatted str/bytes lines."""
    out = []
    for r in records:
        if isinstance(r, bytes):
            out.append(r)
        elif isinstance(r, str):
            out.append(r.encode("utf-8"))
        else:
            out.append(json.dumps(r, ensure_ascii=False).encode("utf-8"))
    return b"\n".join(out) + b"\n"


# ---------------------------------------------------------------------------------------------
# HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers            # dict, lower-case names
        self.body = body                  # bytes
        self._json = None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except Exception as e:
                raise TestFailure("response (HTTP %d) is not JSON (%s): %s"
                                  % (self.status, e, short(self.text)))
        return self._json

    def __repr__(self):
        return "<HTTP %d %s>" % (self.status, short(self.text, 200))


def http_request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT, host="127.0.0.1", ssl_ctx=None,
                 source=None):
    """source: the client's address (another loopback address, e.g. 127.0.0.2, is another client)."""
    src = (source, 0) if source else None
    if ssl_ctx is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_ctx, source_address=src)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=src)
    try:
        hdrs = dict(headers or {})
        if body is not None and isinstance(body, str):
            body = body.encode("utf-8")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


class KeepAliveClient:
    """A persistent HTTP/1.1 connection (reconnects on error); for many small requests."""

    def __init__(self, port, timeout=HTTP_TIMEOUT, headers=None):
        self.port = port
        self.timeout = timeout
        self.conn = None
        self.headers = dict(headers or {})   # sent with every request (e.g. Authorization)

    def request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=dict(self.headers, **(headers or {})))
                r = self.conn.getresponse()
                data = r.read()
                resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
                if r.will_close:
                    self.close()
                return resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.close()
                if attempt == 2:
                    raise

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


def raw_request(port, method, path, headers, body, timeout=HTTP_TIMEOUT):
    """Send a request on a raw socket and read the answer even if the server stops reading the body
    early and closes (as it may for a 413). Returns Response or raises TestFailure."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
        for k, v in headers.items():
            head += "%s: %s\r\n" % (k, v)
        head += "Content-Length: %d\r\n\r\n" % len(body)
        try:
            s.sendall(head.encode("latin-1"))
            for i in range(0, len(body), 65536):
                s.sendall(body[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading all of the body
        chunks = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                break
            if not c:
                break
            chunks.append(c)
        data = b"".join(chunks)
    finally:
        s.close()
    if not data:
        raise TestFailure("no HTTP response received for %s %s" % (method, path))
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise TestFailure("bad HTTP status line: %r" % lines[0])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body_out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                break
            if size == 0:
                break
            body_out += rest[:size]
            rest = rest[size + 2:]
        rest = body_out
    elif "content-length" in hdrs:
        rest = rest[:int(hdrs["content-length"])]
    return Response(int(m.group(1)), hdrs, rest)


# ---------------------------------------------------------------------------------------------
# the server under test

class Server:
    """One medstream process on a data directory. start() inits the directory the first time."""

    def __init__(self, extra_args=(), name="server"):
        if not os.path.exists(BIN):
            fail("medstream binary not found at %s (build it with `make`, or set MEDSTREAM_BIN)" % BIN)
        self.extra_args = list(extra_args)
        self.name = name
        self.base = tempfile.mkdtemp(prefix="medstream-e2e-%s-" % name)
        _temp_dirs.append(self.base)
        self.data_dir = os.path.join(self.base, "data")
        self.log_path = os.path.join(self.base, "server.log")
        self.proc = None
        self.port = None
        self.initialized = False
        self.unexpected_exits = []   # exit codes seen when the server died without being told to
        self.ssl_ctx = None          # an ssl.SSLContext: talk HTTPS (the server runs with --tls-cert/--tls-key)
        _all_servers.append(self)

    # -- lifecycle --------------------------------------------------------------------------

    def init(self):
        if not os.path.exists(BIN):
            fail("medstream binary not found at %s (build it with `make`, or set MEDSTREAM_BIN)" % BIN)
        with open(self.log_path, "ab") as log:
            log.write(b"=== init\n")
            log.flush()
            try:
                rc = subprocess.run([BIN, "init", self.data_dir], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, timeout=INIT_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                fail("`medstream init` did not finish within %ds" % INIT_TIMEOUT)
        if rc != 0:
            fail("`medstream init %s` exited %d: %s" % (self.data_dir, rc, self.log_tail()))
        self.initialized = True

    def start(self, health_timeout=HEALTH_TIMEOUT):
        """Start (init first if needed); return seconds from spawn until /healthz answered 200."""
        if not self.initialized:
            self.init()
        if self.proc is not None and self.proc.poll() is None:
            fail("server %s already running" % self.name)
        last_err = None
        for _attempt in range(3):             # retry only if the picked port was taken meanwhile
            self.port = free_port()
            args = self.serve_args(self.port)
            log = open(self.log_path, "ab")
            log.write(("=== %s\n" % " ".join(args)).encode())
            log.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
            ok, last_err = self._wait_healthy(t0, health_timeout)
            if ok:
                took = time.monotonic() - t0
                self.login()
                return took
            if self.proc.poll() is None:
                self.kill9()
                break
            if "address" not in self.log_tail().lower():
                break
        fail("server did not become healthy (%s; limit %.0fs); log %s: %s"
             % (last_err, health_timeout, self.log_path, self.log_tail()))

    def serve_args(self, port):
        """The command line of `serve` on port; a subclass may start it otherwise (from a config file)."""
        return [BIN, "serve", "--data", self.data_dir, "--listen", "127.0.0.1:%d" % port] + self.extra_args

    def _wait_healthy(self, t0, timeout):
        last_err = "no answer"
        while time.monotonic() - t0 < timeout:
            rc = self.proc.poll()
            if rc is not None:
                return False, "exited with %d" % rc
            try:
                r = http_request(self.port, "GET", "/healthz", timeout=1.0, ssl_ctx=self.ssl_ctx)
                if r.status == 200 and listens_on(self.proc.pid, self.port):
                    return True, None
                if r.status == 200:  # another file's server took the port first: ours exits, we retry
                    last_err = "port %d answered by another process" % self.port
                else:
                    last_err = "healthz HTTP %d" % r.status
            except (OSError, http.client.HTTPException) as e:
                last_err = "%s" % (e.__class__.__name__,)
            time.sleep(0.02)
        return False, last_err

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def note_if_died(self):
        """Record (and return) an unexpected death; used by tests that share a server."""
        if self.proc is not None and self.proc.poll() is not None:
            rc = self.proc.returncode
            self.unexpected_exits.append(rc)
            self.proc = None
            return rc
        return None

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s. Returns the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        return p.returncode

    def kill9(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
        p.wait(timeout=10)

    def log_tail(self, n=1500):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - n))
                return f.read().decode("utf-8", "replace").replace("\n", " | ")
        except OSError:
            return ""

    # -- HTTP -------------------------------------------------------------------------------

    def admin_password(self):
        with open(os.path.join(self.data_dir, "admin.password")) as f:
            return f.read().strip()

    def token_for(self, user, password):
        """POST /v1/auth/token; the token, failing the test on anything but 201."""
        r = http_request(self.port, "POST", "/v1/auth/token", ssl_ctx=self.ssl_ctx,
                         body=json.dumps({"user": user, "password": password}),
                         headers={"Content-Type": "application/json"})
        if r.status != 201:
            fail("login as %s: expected 201, got %d: %s" % (user, r.status, short(r.text)))
        return r.json()["token"]

    def login(self):
        """Log in as admin (init wrote the password to DIR/admin.password); requests then carry it."""
        self.token = self.token_for("admin", self.admin_password())

    def auth_headers(self, headers=None):
        """headers plus the admin token, unless they set Authorization themselves (None: leave it out)."""
        h = dict(headers or {})
        if "Authorization" not in h and getattr(self, "token", None):
            h["Authorization"] = "Bearer " + self.token
        return {k: v for k, v in h.items() if v is not None}

    def request(self, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT, source=None):
        return http_request(self.port, method, path, body=body, headers=self.auth_headers(headers), timeout=timeout,
                            ssl_ctx=self.ssl_ctx, source=source)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def get_json(self, path, expect=200):
        r = self.get(path)
        if r.status != expect:
            fail("GET %s: expected HTTP %d, got %d: %s" % (path, expect, r.status, short(r.text)))
        return r.json()

    def get_all(self, path, key, **params):
        """Every item (answer[key]) of a paged GET path?params, next_cursor followed to the end."""
        out, cursor = [], None
        while True:
            p = dict(params, limit=1000)
            if cursor:
                p["cursor"] = cursor
            a = self.get_json(path + "?" + q(p))
            out += a[key]
            cursor = a.get("next_cursor")
            if not cursor:
                return out

    def audit_entries(self, **params):
        """Every GET /v1/audit entry matching params, all pages followed."""
        return self.get_all("/v1/audit", "entries", **params)

    def ingest(self, body, content_type="application/x-ndjson", timeout=30.0):
        """POST /v1/records; body is a list of dicts (sent as NDJSON) or raw bytes/str."""
        if isinstance(body, list):
            body = ndjson(body)
        headers = {"Content-Type": content_type} if content_type is not None else {}
        return self.request("POST", "/v1/records", body=body, headers=headers, timeout=timeout)

    def ingest_ok(self, body, content_type="application/x-ndjson"):
        """POST and return the parsed 200 answer, failing on any other status."""
        r = self.ingest(body, content_type)
        if r.status != 200:
            fail("POST /v1/records: expected 200, got %d: %s" % (r.status, short(r.text)))
        return r.json()


# ---------------------------------------------------------------------------------------------
# registry and runner

_tests = []
_cleanups = []


def test(fn=None, timeout=DEFAULT_TEST_TIMEOUT):
    """Register a test function. Use as @test or @test(timeout=SECONDS)."""
    def register(f):
        _tests.append((f.__name__, f, timeout))
        return f
    if fn is not None:
        return register(fn)
    return register


shared_servers = {}


def shared_server(key, args=()):
    """The started server named key, started with args on first use and shared by the tests of a file
    that ask for the same key (stopped at exit with every other server)."""
    s = shared_servers.get(key)
    if s is None:
        s = Server(extra_args=list(args), name=key)
        s.start()
        shared_servers[key] = s
    return s


def on_exit(fn):
    """Register a cleanup to run after all tests (e.g. stopping a shared server)."""
    _cleanups.append(fn)
    return fn


def _alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit")


def _cleanup_all(remove_dirs):
    for fn in _cleanups:
        try:
            fn()
        except Exception:
            pass
    for s in _all_servers:
        try:
            s.stop()
        except Exception:
            pass
    if remove_dirs:
        for d in _temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def main():
    selected = sys.argv[1:]
    passed = failed = skipped = 0
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    atexit.register(_cleanup_all, False)
    try:
        for name, fn, timeout in _tests:
            if selected and not any(s in name for s in selected):
                continue
            signal.alarm(timeout)
            t0 = time.monotonic()
            try:
                fn()
                signal.alarm(0)
                passed += 1
                # the seconds against the watchdog's: files run side by side (run.sh), so the margin shows
                print("PASS %s (%.1f of %d s)" % (name, time.monotonic() - t0, timeout), flush=True)
            except Skip as e:
                signal.alarm(0)
                skipped += 1
                print("SKIP %s: %s" % (name, e), flush=True)
            except BaseException as e:  # noqa: B902 - report everything, including timeouts
                signal.alarm(0)
                if isinstance(e, KeyboardInterrupt):
                    raise
                failed += 1
                if isinstance(e, (TestFailure, AssertionError)):
                    reason = str(e) or "assertion failed"
                elif isinstance(e, TestTimeout):
                    reason = "timed out after %ds" % timeout
                else:
                    tb = traceback.extract_tb(e.__traceback__)
                    where = ("%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno)) if tb else "?"
                    reason = "%s: %s (at %s)" % (e.__class__.__name__, e, where)
                print("FAIL %s: %s" % (name, reason.replace("\n", " ")), flush=True)
    finally:
        signal.alarm(0)
        keep = failed > 0 or os.environ.get("MEDSTREAM_E2E_KEEP")
        if keep and _temp_dirs:
            print("(server data and logs kept in: %s)" % " ".join(_temp_dirs), flush=True)
        _cleanup_all(remove_dirs=not keep)
    print("%d passed, %d failed%s" % (passed, failed, ", %d skipped" % skipped if skipped else ""), flush=True)
    sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""What the signal rules cost ingest, and how fast an event reaches a Server-Sent Events client.

RUNS pairs of runs (default 1), each pair one run without rules and one with RULES rules (default 1,000:
997 phrases of made-up terms that never occur, 3 two-word phrases of the generator's narrative that ~2 %
of records hold, plus REGEXES regexes among the 997), in alternating order, each on a fresh data directory,
of `medstream bench` offering RECORDS records (default 20,000) of 20 KB at RATE records/min (default
1,000,000; 0: as fast as answered). With rules, an SSE client (GET /v1/events/stream, its own thread) stamps
every event as it arrives: commit-to-SSE latency = arrival - the event's committed_at (the server's clock,
same machine). Prints each run's records/min and freshness, the ratio with/without per pair, and the
latency p50/p99/max over all events. A benchmark: it prints figures and asserts nothing.

Usage: [RATE=1000000] [CONNECTIONS=3] [RULES=1000] [REGEXES=10] [COUNTERS_FILE=F] scripts/bench_notify.py [RUNS] [RECORDS]
COUNTERS_FILE: the runs with rules also keep these counters (serve --counters F), so that the pair measures
both live views against neither (issue 13's budget: 20 counters and 1,000 rules within 10 % of ingest):
  PRINT_COUNTERS=1 scripts/bench_counters.sh > /tmp/c.json && COUNTERS_FILE=/tmp/c.json scripts/bench_notify.py 3 200000
Needs ~RECORDS x 20 KB free in BENCH_DIR (default /var/tmp/medstream-bench-notify; deleted after each run).
"""
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "medstream")
PORT = int(os.environ.get("PORT", "18194"))
BASE = os.environ.get("BENCH_DIR", "/var/tmp/medstream-bench-notify")


def rules(n, nregex):
    syl = ["ka", "lo", "mir", "zen", "tor", "vas", "pul", "nep", "hex", "dra", "qui", "bel", "sor", "tan", "gri",
           "mo", "rex", "fal", "dun", "ost"]
    s = 42
    out = []

    def term():
        nonlocal s
        w = ""
        for _ in range(3):
            s = (s * 6364136223846793005 + 1442695040888963407) % 2 ** 64
            w += syl[(s >> 33) % 20]
        return w + "q"  # never a word of the generator's text
    matching = [["chest", "radiating"], ["severe", "pain"], ["dizziness", "nausea"]]
    for i, (a, b) in enumerate(matching):
        out.append({"name": "m%d" % i, "fields": ["notes"], "any": ["%s %s" % (a, b)]})
    for i in range(n - len(matching)):
        if i < nregex:
            out.append({"name": "x%d" % i, "fields": ["notes"], "regex": "\\b%s\\s+(level|score)\\s*[>=]\\s*[0-9]{2,3}" % term()})
        else:
            out.append({"name": "r%d" % i, "fields": ["notes"], "any": ["%s %s" % (term(), term()), term()]})
    return out


def http(method, path, token=None, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (PORT, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def parse_time(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


class Listener(threading.Thread):
    """An SSE client: (arrival - committed_at) of every event."""

    def __init__(self, token):
        super().__init__(daemon=True)
        self.token = token
        self.lat = []
        self.stop = False
        self.ready = threading.Event()

    def run(self):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(("GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % self.token).encode())
        s.settimeout(0.5)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        raw = raw.partition(b"\r\n\r\n")[2]
        self.ready.set()
        text = b""
        while not self.stop:
            try:
                c = s.recv(1 << 20)
            except socket.timeout:
                continue
            if not c:
                break
            now = time.time()
            raw += c
            while True:  # chunked framing
                line, sep, rest = raw.partition(b"\r\n")
                if not sep:
                    break
                size = int(line.split(b";")[0], 16)
                if len(rest) < size + 2:
                    break
                text += rest[:size]
                raw = rest[size + 2:]
            while b"\n\n" in text:
                block, _, text = text.partition(b"\n\n")
                for ln in block.split(b"\n"):
                    if ln.startswith(b"data: "):
                        ev = json.loads(ln[6:])
                        self.lat.append(now - parse_time(ev["committed_at"]))
        s.close()


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))] if v else float("nan")


def one_run(i, mode, records, rate, rules_file):
    data = os.path.join(BASE, "data")
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([BIN, "init", data], check=True, stdout=subprocess.DEVNULL)
    args = [BIN, "serve", "--data", data, "--listen", "127.0.0.1:%d" % PORT, "--access-log", "off"]
    if mode == "on":
        args += ["--rules", rules_file]
        if os.environ.get("COUNTERS_FILE"):
            args += ["--counters", os.environ["COUNTERS_FILE"]]
    log = open(os.path.join(BASE, "serve.log"), "ab")
    srv = subprocess.Popen(args, stderr=log, stdout=log)
    try:
        for _ in range(100):
            try:
                http("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        pw = open(os.path.join(data, "admin.password")).read().strip()
        token = json.loads(http("POST", "/v1/auth/token", body={"user": "admin", "password": pw}))["token"]
        lis = None
        if mode == "on":
            lis = Listener(token)
            lis.start()
            lis.ready.wait(10)
        print("== run %d, rules %s" % (i, mode), file=sys.stderr)
        out = subprocess.run([BIN, "bench", "--url", "http://127.0.0.1:%d" % PORT, "--records", str(records),
                              "--rate", str(rate), "--connections", os.environ.get("CONNECTIONS", "3"),
                              "--run-id", "notify%d%s" % (i, mode), "--token", token, "--json"],
                             check=True, capture_output=True, text=True).stdout
        fig = json.loads(out.strip().splitlines()[-1])
        extra = {}
        if lis:
            want = None
            for _ in range(100):  # until the notifier has caught up and the stream has everything
                m = http("GET", "/metrics", token).decode()
                seq = [ln for ln in m.splitlines() if ln.startswith("medstream_notify_event_seq ")]
                lagc = [ln for ln in m.splitlines() if ln.startswith("medstream_notify_lag_commits ")]
                want = int(seq[0].split()[1])
                if int(lagc[0].split()[1]) == 0 and len(lis.lat) >= want:
                    break
                time.sleep(0.1)
            lis.stop = True
            lis.join(2)
            extra = {"events": len(lis.lat), "events_stored": want,
                     "sse_ms_p50": pct(lis.lat, 50) * 1000, "sse_ms_p99": pct(lis.lat, 99) * 1000,
                     "sse_ms_max": max(lis.lat) * 1000 if lis.lat else float("nan")}
            lis_lat = lis.lat
        else:
            lis_lat = []
        print("   records/min %.0f  freshness p50/p99 %.0f/%.0f ms%s" % (
            fig["records_per_min"], fig["freshness_ms_p50"], fig["freshness_ms_p99"],
            ("  events %d (stored %d)  commit->SSE p50/p99/max %.1f/%.1f/%.1f ms" % (
                extra["events"], extra["events_stored"], extra["sse_ms_p50"], extra["sse_ms_p99"],
                extra["sse_ms_max"])) if extra else ""), file=sys.stderr)
        return fig["records_per_min"], lis_lat
    finally:
        srv.terminate()
        srv.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rate = int(os.environ.get("RATE", "1000000"))
    subprocess.run(["make", "-s", "-C", ROOT, "all"], check=True)
    os.makedirs(BASE, exist_ok=True)
    rules_file = os.path.join(BASE, "rules.json")
    with open(rules_file, "w") as f:
        json.dump(rules(int(os.environ.get("RULES", "1000")), int(os.environ.get("REGEXES", "10"))), f)
    try:
        ratios, lat, on_rates, off_rates = [], [], [], []
        for i in range(runs):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            got = {}
            for mode in order:
                got[mode], l = one_run(i, mode, records, rate, rules_file)
                lat += l
            ratios.append(got["on"] / got["off"])
            on_rates.append(got["on"])
            off_rates.append(got["off"])
        print("records/min without rules: %s; with %s rules%s: %s; on/off per pair: %s" % (
            ", ".join("%.0f" % x for x in off_rates), os.environ.get("RULES", "1000"),
            " and the counters of " + os.environ["COUNTERS_FILE"] if os.environ.get("COUNTERS_FILE") else "",
            ", ".join("%.0f" % x for x in on_rates), ", ".join("%.3f" % r for r in ratios)))
        print("commit -> SSE over %d events: p50 %.1f ms, p99 %.1f ms, max %.1f ms (target p99 <= 100 ms)" % (
            len(lat), pct(lat, 50) * 1000, pct(lat, 99) * 1000, (max(lat) if lat else float("nan")) * 1000))
    finally:
        shutil.rmtree(BASE, ignore_errors=True)


if __name__ == "__main__":
    main()

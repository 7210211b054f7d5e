#!/usr/bin/env python3
"""How long an erasure takes (issue 15's target: a patient with 1,000 record versions in <= 1 s, sinks
excluded): RUNS runs (default 3), each on a fresh data directory with BACKGROUND other patients' records
(default 20,000, ~2 KB each, so that the patient is not alone in the trees), then VERSIONS record versions
of one patient (default 1,000: RECORDS records (default 250) sent in rounds, each round a new version of
every one), then DELETE /v1/patients/{id} timed from the request to the certificate; then a second erasure
of another such patient while `medstream bench` ingests (how long ingest waits: the erasure is one commit of
the writer). Prints each run and the medians. A benchmark: it prints figures and asserts nothing.

Usage: scripts/bench_erase.py [RUNS] [VERSIONS] [RECORDS] [BACKGROUND]
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "build", "medstream")
PORT = int(os.environ.get("PORT", "18196"))
BASE = os.environ.get("BENCH_DIR", "/var/tmp/medstream-bench-erase")


def call(method, path, token=None, body=None, ctype="application/json"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (PORT, path), method=method,
                                 data=body.encode() if isinstance(body, str) else body)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if body is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def note(i):
    return ("visit %d: " % i) + "patient reports intermittent symptoms, reviewed history and medication; " * 25


def patient_records(tag, rnd, n):
    return "".join(json.dumps({"record_id": "%s-%d" % (tag, i), "name": "Erase Bench %s" % tag, "dob": "1950-05-05",
                               "type": "visit", "ts": "2026-01-01T00:00:%02dZ" % (i % 60), "round": rnd,
                               "notes": note(i)}) + "\n" for i in range(n))


def run(versions, records, background):
    shutil.rmtree(BASE, ignore_errors=True)
    subprocess.run([BIN, "init", BASE], check=True, capture_output=True)
    srv = subprocess.Popen([BIN, "serve", "--data", BASE, "--listen", "127.0.0.1:%d" % PORT],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                call("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        with open(os.path.join(BASE, "admin.password")) as f:
            tok = call("POST", "/v1/auth/token", body=json.dumps({"user": "admin", "password": f.read().strip()}))["token"]
        for b in range(0, background, 1000):
            body = "".join(json.dumps({"record_id": "bg-%d" % i, "name": "Background %d" % (i % 5000),
                                       "dob": "1970-01-01", "notes": note(i)[:2000]}) + "\n"
                           for i in range(b, min(background, b + 1000)))
            call("POST", "/v1/records", tok, body, "application/x-ndjson")
        out = {}
        for tag in ("a", "b"):
            for rnd in range(versions // records):
                a = call("POST", "/v1/records", tok, patient_records(tag, rnd, records), "application/x-ndjson")
            out[tag] = a["items"][0]["patient_id"]
        t0 = time.monotonic()
        cert = call("DELETE", "/v1/patients/" + out["a"], tok, json.dumps({"reason": "benchmark"}))
        quiet = time.monotonic() - t0
        assert cert["record_versions"] == versions, cert
        # the second one while ingest runs
        load = subprocess.Popen([BIN, "bench", "--url", "http://127.0.0.1:%d" % PORT, "--records", "100000",
                                 "--connections", "2", "--rate", "1000000", "--token", tok, "--run-id", "er"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        t0 = time.monotonic()
        call("DELETE", "/v1/patients/" + out["b"], tok, json.dumps({"reason": "benchmark under load"}))
        loaded = time.monotonic() - t0
        load.kill()
        load.wait()
        return quiet, loaded
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(BASE, ignore_errors=True)


def main():
    a = sys.argv[1:]
    runs = int(a[0]) if a else 3
    versions = int(a[1]) if len(a) > 1 else 1000
    records = int(a[2]) if len(a) > 2 else 250
    background = int(a[3]) if len(a) > 3 else 20000
    subprocess.run(["make", "-s", "all"], cwd=ROOT, check=True)
    q, l = [], []
    for i in range(runs):
        quiet, loaded = run(versions, records, background)
        print("run %d: erasure of %d record versions (%d records): %.0f ms; under 1,000,000 records/min of "
              "ingest: %.0f ms" % (i + 1, versions, records, quiet * 1000, loaded * 1000), flush=True)
        q.append(quiet)
        l.append(loaded)
    print("median: %.0f ms quiet, %.0f ms under ingest" % (statistics.median(q) * 1000, statistics.median(l) * 1000))


if __name__ == "__main__":
    main()

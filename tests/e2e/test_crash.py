# End-to-end crash-safety tests of medstream: while 4 client threads POST batches of 50 records
# (~2 KB each, unique record ids) in a loop, the server is killed with SIGKILL (kill -9), then
# restarted on the same data directory. Checked: /healthz answers within 5 s of the restart; every
# record whose batch got a 200 answer is present (GET /v1/records/{id}: 200, version 1, same
# patient); re-sending acknowledged batches gives "duplicate" on every line; nothing is stored twice
# (a patient's records list has each record once, its history has no repeated versions); one identity
# keeps one patient id across crashes. Also: three kills in a row on the same directory, six kills at
# random moments while nearly every commit also checkpoints the patient log's heads (--checkpoint-lag 50:
# every patient still reads as of each instant of its history), and a SIGTERM during ingest.
#
# Run: /usr/bin/python3 tests/e2e/test_crash.py [NAME_SUBSTRING...]   (see harness.py, run.sh)

import http.client
import json
import os
import random
import threading
import time

import harness as H
from harness import check, eq, fail, q, short, test

THREADS = 4
BATCH = 50
IDENTITIES = 16
MAX_RESTART_SECONDS = 5.0


class Loader:
    """THREADS client threads that POST batches until stopped or the server goes away, remembering
    every acknowledged (HTTP 200) record."""

    def __init__(self, server, tag, round_no, identities, allow_503=False):
        self.allow_503 = allow_503            # a server shutting down may answer 503 (not acked)
        self.server = server
        self.port = server.port
        self.tag = tag
        self.round_no = round_no
        self.identities = identities          # list of (name, dob)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}                       # record_id -> patient_id
        self.acked_identity = {}              # record_id -> identity index
        self.identity_pids = {}               # identity index -> set of patient ids
        self.last_batch = {}                  # thread -> (body, [record ids])
        self.batches_acked = 0
        self.problems = []
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(THREADS)]

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self, timeout=15.0):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.1, deadline - time.monotonic()))
        hung = [th.name for th in self.threads if th.is_alive()]
        check(not hung, "client threads did not end after the server went away: %r" % hung)

    def _batch(self, t, b):
        recs, idents = [], []
        for i in range(BATCH):
            k = (t * 7 + b * BATCH + i) % len(self.identities)
            name, dob = self.identities[k]
            rec_id = "crash-%s-r%d-t%d-b%d-%d" % (self.tag, self.round_no, t, b, i)
            recs.append({"record_id": rec_id, "name": name, "dob": dob, "type": "visit",
                         "ts": "2025-%02d-%02dT10:00:00Z" % (1 + b % 12, 1 + i % 28),
                         "seq": rec_id, "notes": os.urandom(950).hex()})
            idents.append(k)
        return recs, idents

    def _run(self, t):
        conn = None
        b = 0
        try:
            while not self.stop.is_set():
                recs, idents = self._batch(t, b)
                body = H.ndjson(recs)
                status, data, failures = None, None, 0
                while not self.stop.is_set():
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                        conn.request("POST", "/v1/records", body=body,
                                     headers=self.server.auth_headers({"Content-Type": "application/x-ndjson"}))
                        r = conn.getresponse()
                        data = r.read()
                        status = r.status
                        if r.will_close:
                            conn.close()
                            conn = None
                        break
                    except (OSError, http.client.HTTPException):
                        if conn is not None:
                            conn.close()
                            conn = None
                        failures += 1
                        if failures >= 3 or not self.server.alive():
                            return          # the server is gone: this batch is not acknowledged
                        time.sleep(0.01)    # a closed keep-alive connection: send again
                if status is None:
                    return
                if status == 503 and self.allow_503:
                    b += 1
                    continue
                if status != 200:
                    with self.lock:
                        self.problems.append("batch t%d b%d: HTTP %d %s" % (t, b, status, short(data, 200)))
                    b += 1
                    continue
                try:
                    ans = json.loads(data)
                    by = {it["line"]: it for it in ans["items"]}
                except Exception as e:
                    with self.lock:
                        self.problems.append("batch t%d b%d: bad answer %s: %s" % (t, b, e, short(data, 200)))
                    return
                ok = {"created"} if failures == 0 else {"created", "duplicate"}
                with self.lock:
                    for i, rec in enumerate(recs, 1):
                        it = by.get(i) or {}
                        if it.get("status") not in ok or it.get("record_id") != rec["record_id"]:
                            self.problems.append("batch t%d b%d line %d: %s" % (t, b, i, short(it, 200)))
                            continue
                        self.acked[rec["record_id"]] = it.get("patient_id")
                        self.acked_identity[rec["record_id"]] = idents[i - 1]
                        self.identity_pids.setdefault(idents[i - 1], set()).add(it.get("patient_id"))
                    self.last_batch[t] = (body, [r["record_id"] for r in recs])
                    self.batches_acked += 1
                b += 1
        finally:
            if conn is not None:
                conn.close()


def make_identities(tag):
    return [("Crash Patient %s %s" % (tag, H.rand_token(6)), "19%02d-%02d-%02d" % (50 + k, 1 + k % 12, 1 + k))
            for k in range(IDENTITIES)]


def load_then_kill(server, tag, round_no, identities, seconds):
    loader = Loader(server, tag, round_no, identities)
    loader.start()
    time.sleep(seconds)
    alive_threads = sum(th.is_alive() for th in loader.threads)
    server.kill9()                               # kill -9 while the clients are sending
    loader.finish()
    check(alive_threads == THREADS, "only %d of %d client threads were still sending at the kill: %s"
          % (alive_threads, THREADS, "; ".join(loader.problems[:3])))
    check(not loader.problems, "%d bad answers during ingest, e.g. %s"
          % (len(loader.problems), "; ".join(loader.problems[:3])))
    check(loader.acked, "no batch was acknowledged in %.1fs of ingest" % seconds)
    return loader


def restart_timed(server, what):
    elapsed = server.start()
    print("  %s: /healthz answered %.2fs after the restart" % (what, elapsed), flush=True)
    check(elapsed <= MAX_RESTART_SECONDS, "%s: ready after %.2fs (limit %.1fs)"
          % (what, elapsed, MAX_RESTART_SECONDS))
    return elapsed


def kill_rounds(server, tag, identities, durations):
    """A kill -9 after each duration of load, a timed restart after each; then every acknowledged record is
    checked. Returns the loaders and each identity's patient id (one per identity)."""
    loaders = []
    for round_no, seconds in enumerate(durations, 1):
        if round_no > 1:
            restart_timed(server, "restart %d" % (round_no - 1))
        loaders.append(load_then_kill(server, tag, round_no, identities, seconds))
    restart_timed(server, "restart after kill -9 number %d" % len(durations))
    acked = {}
    for ld in loaders:
        acked.update(ld.acked)
    print("  %d records acknowledged over %d rounds" % (len(acked), len(durations)), flush=True)
    verify_acked(server, acked)
    return loaders, verify_one_patient_id_per_identity(loaders)


def verify_acked(server, acked, n_workers=4):
    """GET every acknowledged record: 200, version 1, same patient, same content."""
    ids = sorted(acked)
    missing, wrong = [], []
    lock = threading.Lock()

    def work(part):
        client = H.KeepAliveClient(server.port, headers=server.auth_headers())
        try:
            for rec_id in part:
                r = client.request("GET", "/v1/records/" + rec_id)
                if r.status != 200:
                    with lock:
                        missing.append("%s (HTTP %d)" % (rec_id, r.status))
                    continue
                body = r.json()
                if (body.get("version") != 1 or body.get("patient_id") != acked[rec_id]
                        or body.get("fields", {}).get("seq") != rec_id):
                    with lock:
                        wrong.append("%s: version %r patient %r" % (rec_id, body.get("version"),
                                                                   body.get("patient_id")))
        except Exception as e:
            with lock:
                missing.append("checker failed: %s: %s" % (e.__class__.__name__, e))
        finally:
            client.close()

    parts = [ids[i::n_workers] for i in range(n_workers)]
    ths = [threading.Thread(target=work, args=(p,), daemon=True) for p in parts]
    t0 = time.monotonic()
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    check(not any(th.is_alive() for th in ths), "checking the acknowledged records did not finish in 60 s")
    print("  checked %d acknowledged records in %.2fs" % (len(ids), time.monotonic() - t0), flush=True)
    check(not missing, "%d of %d acknowledged records missing after kill -9, e.g. %s"
          % (len(missing), len(ids), ", ".join(missing[:5])))
    check(not wrong, "%d acknowledged records differ after kill -9, e.g. %s"
          % (len(wrong), ", ".join(wrong[:5])))


def verify_one_patient_id_per_identity(loaders):
    pids = {}
    for ld in loaders:
        for k, s in ld.identity_pids.items():
            pids.setdefault(k, set()).update(s)
    bad = {k: sorted(s) for k, s in pids.items() if len(s) != 1}
    check(not bad, "one identity got several patient ids across crashes: %r" % bad)
    return {k: next(iter(s)) for k, s in pids.items()}


def verify_resend_is_duplicate(server, loader):
    check(loader.last_batch, "no acknowledged batch to resend")
    for t, (body, ids) in sorted(loader.last_batch.items()):
        ans = server.ingest_ok(body)
        by = {it.get("line"): it for it in ans["items"]}
        for i, rec_id in enumerate(ids, 1):
            it = by.get(i) or {}
            if it.get("status") != "duplicate" or it.get("record_id") != rec_id or it.get("version") != 1:
                fail("resending acknowledged batch of thread %d: line %d is %s, expected duplicate "
                     "version 1" % (t, i, short(it)))


def verify_patient_not_doubled(server, pid, acked_ids):
    # the patient's records: each record once, every acknowledged one present
    ids, cursor, pages = [], None, 0
    while True:
        params = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        body = server.get_json("/v1/patients/%s/records?%s" % (pid, q(params)))
        ids.extend(r["record_id"] for r in body["records"])
        cursor = body.get("next_cursor")
        pages += 1
        if not cursor:
            break
        check(pages < 1000, "records paging does not end")
    eq(len(ids), len(set(ids)), "records of patient %s listed more than once" % pid)
    lost = set(acked_ids) - set(ids)
    check(not lost, "%d acknowledged records missing from the patient's records, e.g. %r"
          % (len(lost), sorted(lost)[:3]))
    # its history: versions 1..n, each once, in commit order, never the same state twice in a row
    vs = server.get_json("/v1/patients/%s/history" % pid, 200)["versions"]
    nums = [v["version"] for v in vs]
    eq(nums, list(range(1, len(vs) + 1)), "version numbers of patient %s history" % pid)
    check(len(vs) <= len(ids), "patient has %d versions but only %d records" % (len(vs), len(ids)))
    seqs = [v["fields"].get("seq") for v in vs]
    check(len(seqs) == len(set(seqs)), "a record's state appears in two patient versions (stored twice?)")
    for a, b in zip(vs, vs[1:]):
        # several records of one patient in one batch share a commit time, hence <= not <
        check(H.parse_time(a["valid_from"]) <= H.parse_time(b["valid_from"]),
              "valid_from goes back in time at version %d" % b["version"])
        eq(a["valid_to"], b["valid_from"], "valid_to of version %d" % a["version"])
    print("  sample patient: %d records, %d versions" % (len(ids), len(vs)), flush=True)


# ---------------------------------------------------------------------------------------------

@test(timeout=90)
def test_kill9_during_ingest_loses_nothing_acknowledged():
    tag = H.rand_token(6)
    identities = make_identities(tag)
    s = H.Server(name="crash")
    try:
        s.start()
        loader = load_then_kill(s, tag, 1, identities, 3.0)
        print("  %d batches (%d records) acknowledged before kill -9"
              % (loader.batches_acked, len(loader.acked)), flush=True)
        restart_timed(s, "restart after kill -9")
        verify_acked(s, loader.acked)
        pids = verify_one_patient_id_per_identity([loader])
        verify_resend_is_duplicate(s, loader)
        k = loader.acked_identity[sorted(loader.acked)[0]]
        verify_patient_not_doubled(s, pids[k], [r for r, i in loader.acked_identity.items() if i == k])
        eq(s.get("/healthz").status, 200, "healthz at the end")
    finally:
        s.stop()


@test(timeout=120)
def test_three_kills_in_a_row():
    tag = H.rand_token(6)
    identities = make_identities(tag)
    s = H.Server(name="crash3")
    try:
        s.start()
        loaders, pids = kill_rounds(s, tag, identities, (1.5, 1.5, 1.5))
        verify_resend_is_duplicate(s, loaders[0])
        verify_resend_is_duplicate(s, loaders[-1])
        k = 3
        ids = [r for ld in loaders for r, i in ld.acked_identity.items() if i == k]
        verify_patient_not_doubled(s, pids[k], ids)
    finally:
        s.stop()


@test(timeout=180)
def test_kill9_at_random_points_of_commits_and_checkpoints():
    # --checkpoint-lag 50: nearly every commit also writes chunks of the patient log's heads, so the kills
    # land in commits, in checkpoints, and in the replay of a start after one
    tag = H.rand_token(6)
    identities = make_identities(tag)
    s = H.Server(extra_args=["--checkpoint-lag", "50"], name="crashckpt")
    rng = random.Random()
    try:
        s.start()
        loaders, pids = kill_rounds(s, tag, identities, [rng.uniform(0.3, 1.5) for _ in range(6)])
        verify_resend_is_duplicate(s, loaders[-1])
        for k in sorted(pids)[::5]:
            ids = [r for ld in loaders for r, i in ld.acked_identity.items() if i == k]
            verify_patient_not_doubled(s, pids[k], ids)
            # as of each instant of its history: the newest version of that commit
            vs = s.get_json("/v1/patients/%s/history" % pids[k], 200)["versions"]
            newest = {}
            for v in vs:
                newest[v["valid_from"]] = v["version"]
            for vf, version in newest.items():
                got = s.get_json("/v1/patients/%s?%s" % (pids[k], q({"as_of": vf})), 200)
                eq(got.get("version"), version, "patient %s as of %s" % (pids[k], vf))
                eq(got.get("valid_from"), vf, "valid_from of patient %s as of %s" % (pids[k], vf))
    finally:
        s.stop()


@test(timeout=60)
def test_sigterm_during_ingest_loses_nothing_acknowledged():
    tag = H.rand_token(6)
    identities = make_identities(tag)
    s = H.Server(name="term")
    try:
        s.start()
        loader = Loader(s, tag, 1, identities, allow_503=True)
        loader.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        rc = s.stop()                           # SIGTERM (SIGKILL after 5 s)
        took = time.monotonic() - t0
        loader.finish()
        check(rc != -9, "server did not exit within 5 s of SIGTERM (needed SIGKILL)")
        print("  stopped by SIGTERM in %.2fs (exit %r), %d records acknowledged"
              % (took, rc, len(loader.acked)), flush=True)
        check(not loader.problems, "bad answers during ingest: %s" % "; ".join(loader.problems[:3]))
        restart_timed(s, "restart after SIGTERM")
        verify_acked(s, loader.acked)
        verify_resend_is_duplicate(s, loader)
    finally:
        s.stop()


if __name__ == "__main__":
    H.main()

#!/usr/bin/env python3
# bench_erase_followers.py - how long an erasure takes to reach every follower of the commit log: the time
# from DELETE /v1/patients/{id} to each sink and view showing "done" in the certificate, for a patient with N
# record versions beside M records of other patients, on one server with PostgreSQL, the public Kafka topic
# (kafka_mock), the lake (1 s rolls), three counters and a notification rule (tests/e2e/test_erasure_sinks.py's
# set-up). Prints one JSON line and the followers' own log lines (rewrite and rebuild times).
# Run: MEDSTREAM_BIN=$PWD/build/medstream /usr/bin/python3 scripts/bench_erase_followers.py [N [M]]
import datetime, json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness as H
import test_erasure_sinks as T

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
M = int(sys.argv[2]) if len(sys.argv) > 2 else 20000


def main():
    T.need_tools()
    db = "erasure_measure_%d" % os.getpid()
    T.TP.pg().create_db(db)
    boot = T.start_mock("ermeas")
    s = T.new_server("erasure-measure")
    lake = os.path.join(s.base, "lake")
    s.extra_args += T.sink_args(T.TP.pg().url(db), boot, "ermeas", lake)
    s.start()
    T.TN.post_json(s, "/v1/rules", {"name": "m-sepsis", "fields": ["notes"], "any": ["sepsis"]})
    t = datetime.datetime.now(T.UTC) - datetime.timedelta(minutes=5)
    a = T.records("m", "a", "Erasa Measure", "1961-04-05", N, t)
    others = []
    for i in range(M):
        others.append({"record_id": "m-o-%d" % i, "name": "Other %d" % (i % 2000), "dob": "1970-01-01", "type": "lab",
                       "ts": T.iso(t), "notes": "sepsis %d" % i, "favorite_color": "red"})
    for k in range(0, len(others), 2000):
        s.ingest_ok(others[k:k + 2000])
    pid = s.ingest_ok(a)["items"][0]["patient_id"]
    for k in range(0, len(others), 2000):
        s.ingest_ok(others[k:k + 2000])  # rolls after the patient's
    T.TP.wait_shipped(s, db, limit=300)
    T.wait_lake_rows(lake, pid, N, limit=120)
    time.sleep(2)
    t0 = time.monotonic()
    cert = T.erase(s, pid)
    t_delete = time.monotonic() - t0
    done = {}
    while len(done) < 5 and time.monotonic() - t0 < 300:
        c = s.get_json("/v1/patients/%s/erasure" % pid)
        for x in c["sinks"]:
            if x["status"] == "done" and x["sink"] not in done:
                done[x["sink"]] = time.monotonic() - t0
        for x in c["views"]:
            if x["status"] == "done" and x["view"] not in done:
                done[x["view"]] = time.monotonic() - t0
        time.sleep(0.02)
    print(json.dumps({"record_versions": cert["record_versions"], "other_records": M, "delete_s": round(t_delete, 3),
                      "done_s": {k: round(v, 3) for k, v in done.items()}}))
    log = open(s.log_path, encoding="utf-8", errors="replace").read()
    for ln in log.splitlines():
        if ("lake:" in ln or "counters:" in ln or "notifications:" in ln) and "GET" not in ln:
            print(ln[:400])
    s.stop()


try:
    main()
finally:
    H._cleanup_all(True)

#!/usr/bin/env bash
# What 20 rolling-window counters (serve --counters) cost ingest, how far behind they run, and how fast a
# counter query is answered. RUNS pairs of runs (default 3), each pair one run without counters and one with
# them, in alternating order (off/on, then on/off, ...), each on a fresh data directory, of `medstream bench`
# offering RECORDS records (default 200,000) of 20 KB in batches of 1000 at RATE records/min (default
# 1,000,000; 0: as fast as answered); /metrics is sampled every 0.25 s in both modes (the counters' lag).
# Then one more run with the counters, during which a client GETs /v1/counters/NAME over one keep-alive
# connection (QPS a second, a random counter and window each time, half with fresh=false) during the load
# and for 5 s after it. Prints the medians of records/min both ways and the median of the pairs' on/off
# ratios (target: within 10 %), the counters' lag, the query latency as the client saw it (p50, p99, under
# load and idle; target p99 <= 1 ms) and as the server measured it (medstream_counter_query_seconds), and
# the follower's time per commit (medstream_counter_apply_seconds).
# Usage: [RATE=1000000] [QPS=50] [COUNTERS=mixed|public] [CONNECTIONS=3] scripts/bench_counters.sh [RUNS] [RECORDS]
#   PRINT_COUNTERS=1: print the 20 definitions (JSON) and stop, e.g. for bench_notify.py's COUNTERS_FILE.
#   COUNTERS=mixed (default): 16 counters on public fields (type, favorite_color) and 4 on PHI fields (each
#   record's body read back and scanned: ssn, address, phone, notes); public: all 20 on public fields.
#   Needs ~RECORDS x 20 KB free in BENCH_DIR (deleted after each run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
runs=${1:-3}; records=${2:-200000}; rate=${RATE:-1000000}; qps=${QPS:-50}; kind=${COUNTERS:-mixed}
port=${PORT:-18194}
base=${BENCH_DIR:-/var/tmp/medstream-bench-counters}
dir=$base/data; srv=; sampler=
cleanup() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
  rm -rf "$base"
}
trap cleanup EXIT
make -s all
mkdir -p "$base"
figures=$base/figures.jsonl
python3 - "$kind" > "$base/counters.json" <<'PY'
import json, sys
c = []
for t in ("patient", "visit", "lab", "note"):
    c.append({"name": "type_" + t, "type": t, "max_window": "72h", "resolution": "1m"})
for col in ("red", "blue", "green", "purple"):
    c.append({"name": "color_" + col, "where": {"field": "favorite_color", "equals": col}, "max_window": "72h",
              "resolution": "1m"})
c.append({"name": "warm", "where": {"field": "favorite_color", "in": ["red", "orange", "yellow"]}, "max_window": "72h"})
c.append({"name": "cool", "where": {"field": "favorite_color", "in": ["blue", "green", "purple"]}, "max_window": "72h"})
c.append({"name": "lab_blue", "type": "lab", "where": {"field": "favorite_color", "equals": "blue"},
          "max_window": "72h", "resolution": "1m", "per_parent": True})
c.append({"name": "visit_red", "type": "visit", "where": {"field": "favorite_color", "equals": "red"},
          "max_window": "72h", "resolution": "1m", "per_parent": True})
c.append({"name": "all_1s", "max_window": "72h"})
c.append({"name": "all_24h", "max_window": "24h", "resolution": "1m"})
c.append({"name": "colored", "where": {"field": "favorite_color", "exists": True}, "max_window": "72h",
          "resolution": "1m"})
c.append({"name": "not_red", "where": {"field": "favorite_color", "in": ["blue", "green", "purple", "orange"]},
          "max_window": "72h", "resolution": "1m"})
if sys.argv[1] == "mixed":
    c.append({"name": "phi_ssn", "where": {"field": "ssn", "exists": True}, "max_window": "72h", "resolution": "1m"})
    c.append({"name": "phi_address", "where": {"field": "address", "contains": "Springfield"}, "max_window": "72h",
              "resolution": "1m"})
    c.append({"name": "phi_phone", "type": "lab", "where": {"field": "phone", "contains": "+1-2"},
              "max_window": "72h", "resolution": "1m"})
    c.append({"name": "phi_notes", "where": {"field": "notes", "contains": "chest pain"}, "max_window": "72h",
              "resolution": "1m"})
else:
    for t in ("patient", "visit", "lab", "note"):
        c.append({"name": "type_%s_24h" % t, "type": t, "max_window": "24h", "resolution": "1m"})
assert len(c) == 20, len(c)
print(json.dumps(c))
PY
if [ "${PRINT_COUNTERS:-0}" = 1 ]; then cat "$base/counters.json"; exit 0; fi # for bench_notify.py COUNTERS_FILE
names=$(python3 -c 'import json,sys; print(" ".join(c["name"] for c in json.load(open(sys.argv[1]))))' "$base/counters.json")
# sample /metrics every 0.25 s into FILE (medstream_counter_lag_seconds when there are counters), until killed:
# in both modes, so that the sampling costs both the same
sample_metrics() {
  local token=$1 file=$2
  while :; do
    curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" |
      awk '/^medstream_counter_lag_seconds /{print "lag", $2}' >> "$file" || true
    sleep 0.25
  done
}
# query counters over one keep-alive connection (QPS a second, a random counter and window each time, half
# with fresh=false) until FILE.done appears, then 5 s more; "load-fresh|load-at-once|idle-... seconds" lines
query_counters() {
  local token=$1 file=$2
  python3 - "$port" "$token" "$qps" "$file" "$file.done" $names <<'PY'
import http.client, os, random, sys, time
port, token, qps, out, done, names = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6:]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
hdr = {"Authorization": "Bearer " + token}
rnd = random.Random(7)
f = open(out, "w")
idle_until = None
while True:
    phase = "load"
    if os.path.exists(done):
        idle_until = idle_until or time.monotonic() + 5
        phase = "idle"
        if time.monotonic() > idle_until:
            break
    name = rnd.choice(names)
    w = rnd.choice(["1h", "6h", "24h"])
    fresh = rnd.random() < 0.5
    t0 = time.perf_counter()
    conn.request("GET", "/v1/counters/%s?window=%s%s" % (name, w, "" if fresh else "&fresh=false"), headers=hdr)
    r = conn.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    if r.status == 200:
        f.write("%s-%s %.6f\n" % (phase, "fresh" if fresh else "at-once", dt))
    else:
        f.write("error %d %s\n" % (r.status, body[:100]))
    f.flush()
    time.sleep(max(0.0, 1.0 / qps - dt))
PY
}
start_server() { # start_server MODE(off|on): a fresh data directory; sets srv and token
  local args=()
  rm -rf "$dir"; build/medstream init "$dir" >/dev/null
  [ "$1" = on ] && args=(--counters "$base/counters.json")
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" "${args[@]}" 2>>"$base/serve.log" & srv=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  token=$(admin_token "$dir" "$port")
}
load() { # load RUN-ID: medstream bench against the server, its JSON figures on stdout
  build/medstream bench --url "http://127.0.0.1:$port" --records "$records" --rate "$rate" \
    --connections "${CONNECTIONS:-3}" --run-id "$1" --token "$token" --json
}
one_run() { # one_run RUN MODE(off|on): ingest figures, counters' lag sampled
  local i=$1 mode=$2 out
  start_server "$mode"
  sample_metrics "$token" "$base/lag.$i.$mode" & sampler=$!
  echo "== run $i, counters $mode" >&2
  out=$(load "ctr$i$mode")
  echo "$out" | grep -E "records/min|freshness" >&2 || true
  kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=
  echo "$out" | grep '^{' | python3 -c 'import sys,json; d=json.load(sys.stdin); d["run"]=int(sys.argv[1]); d["counters"]=sys.argv[2]; print(json.dumps(d))' "$i" "$mode" >> "$figures"
  kill "$srv"; wait "$srv" || true; srv=
}
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then one_run "$i" off; one_run "$i" on; else one_run "$i" on; one_run "$i" off; fi
done
# query latency: one more run with counters, queried during the load and for 5 s after it
start_server on
echo "== query latency run" >&2
query_counters "$token" "$base/queries" & sampler=$!
load ctrq | grep -E "records/min" >&2 || true
touch "$base/queries.done"
wait "$sampler" 2>/dev/null || true; sampler=
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" | grep -E \
  '^medstream_counter_(query|apply)_seconds_(bucket|count|sum)|^medstream_counter_(commits|versions)_total' \
  > "$base/queries.metrics" || true
kill "$srv"; wait "$srv" || true; srv=
python3 - "$figures" "$base" "$rate" "$kind" <<'PY'
import glob, json, statistics, sys
figures, base, rate, kind = sys.argv[1:5]
rows = [json.loads(l) for l in open(figures)]
key = next(k for k in rows[0] if "records_per_min" in k or k in ("records_min", "rate_records_min"))
def med(v): return statistics.median(v) if v else float("nan")
def pct(v, p): return v[min(len(v) - 1, int(p * (len(v) - 1)))] if v else float("nan")
off = {r["run"]: r[key] for r in rows if r["counters"] == "off"}
on = {r["run"]: r[key] for r in rows if r["counters"] == "on"}
ratios = [on[i] / off[i] for i in sorted(on) if i in off and off[i]]
print("ingest (%s, offered %s records/min, 20 counters %s): off median %.0f, on median %.0f records/min; "
      "median on/off ratio of the pairs %.3f (%s; runs: %s)"
      % (key, rate, kind, med(list(off.values())), med(list(on.values())), med(ratios),
         "within 10 %" if med(ratios) >= 0.9 else "MORE than 10 % below", 
         ", ".join("%.0f/%.0f" % (on[i], off[i]) for i in sorted(on) if i in off)))
def lag_of(run):
    v = sorted(float(l.split()[1]) for l in open(base + "/lag.%s.on" % run) if len(l.split()) == 2) \
        if glob.glob(base + "/lag.%s.on" % run) else []
    return v
for run in sorted(on):
    v = lag_of(run)
    if v:
        print("counters lag, run %s: max %.3f s, p99 %.3f s over %d samples of /metrics" % (run, v[-1], pct(v, 0.99), len(v)))
lines = [l.split() for l in open(base + "/queries")]
for phase in ("load-fresh", "load-at-once", "idle-fresh", "idle-at-once"):
    v = sorted(float(l[1]) * 1000 for l in lines if l[0] == phase)
    if v:
        print("counter query, %s (client: Python http.client, keep-alive): p50 %.3f ms, p99 %.3f ms, max %.3f ms over %d"
              % (phase, pct(v, 0.5), pct(v, 0.99), v[-1], len(v)))
errors = [l for l in lines if l[0] == "error"]
if errors:
    print("counter query: %d errors, e.g. %s" % (len(errors), " ".join(errors[0])))
try:
    m = {}
    for l in open(base + "/queries.metrics"):
        k, v = l.rsplit(" ", 1)
        m[k] = float(v)
    total = m["medstream_counter_query_seconds_count"]
    le1 = m['medstream_counter_query_seconds_bucket{le="0.001"}']
    le05 = m['medstream_counter_query_seconds_bucket{le="0.0005"}']
    print("counter query (server: medstream_counter_query_seconds, waits included): %.1f %% <= 0.5 ms, %.1f %% <= 1 ms, "
          "mean %.3f ms over %d" % (100 * le05 / total, 100 * le1 / total,
                                    1000 * m["medstream_counter_query_seconds_sum"] / total, total))
    ac, asum = m["medstream_counter_apply_seconds_count"], m["medstream_counter_apply_seconds_sum"]
    nv = m.get("medstream_counter_versions_total", 0)
    print("follower: %d commits, %d record versions, %.2f ms per commit on average (%.2f us per record version), "
          "%.1f %% of commits applied within 10 ms"
          % (ac, nv, 1000 * asum / ac, 1e6 * asum / max(1, nv), 100 * m['medstream_counter_apply_seconds_bucket{le="0.01"}'] / ac))
except (OSError, KeyError, ZeroDivisionError) as e:
    print("server figures unavailable: %s" % e)
PY

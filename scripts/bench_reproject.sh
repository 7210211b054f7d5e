#!/usr/bin/env bash
# Re-projection of the public copies after a schema change (issue 15, item 4), and what it costs ingest.
# Fills a fresh data directory with RECORDS small records (default 1,000,000 of ~SIZE=200 bytes, `medstream
# bench` over HTTP, 5 % of them updates of earlier ones) under schema S1 (the default's public fields); then,
# on the same store, LOAD more records (default 500,000) are sent twice: once by a server started again
# under S1 (nothing to re-project: the baseline), once by a server started under S2 (favorite_color no
# longer public), which re-projects every stored record version and patient version meanwhile. Prints the
# re-projection's rate (entries of the record and patient sub-databases walked a second, and its time), the
# ingest rate of both loads and their ratio (target: within 20 %), and how long the re-projection ran
# alone after the load. The machine may be shared: the figures are indicative.
# Usage: [RECORDS=1000000] [SIZE=200] [LOAD=500000] [RATE=0] [BENCH_DIR=...] scripts/bench_reproject.sh
#   RATE: the loads' offered records/min (0: as fast as answered); a fixed offered rate shows the effect as
#   added latency instead of lost throughput. Needs ~RECORDS x 1.5 KB free in BENCH_DIR (deleted at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
records=${RECORDS:-1000000}; size=${SIZE:-200}; load_n=${LOAD:-500000}; rate=${RATE:-0}
port=${PORT:-18196}
base=${BENCH_DIR:-/var/tmp/medstream-bench-reproject}
dir=$base/data; srv=
cleanup() {
  if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
  rm -rf "$base"
}
trap cleanup EXIT
make -s all
rm -rf "$base"; mkdir -p "$base"
cat > "$base/s1.json" <<'EOF'
{"identity":{"name":"name","dob":"dob"},"record_id":"record_id","type":"type","event_time":"ts",
 "public":{"favorite_color":"copy","type":"copy","ts":"year"}}
EOF
cat > "$base/s2.json" <<'EOF'
{"identity":{"name":"name","dob":"dob"},"record_id":"record_id","type":"type","event_time":"ts",
 "public":{"type":"copy","ts":"year"}}
EOF
start_server() { # start_server SCHEMA: sets srv and token
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" --schema "$1" 2>>"$base/serve.log" & srv=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  token=$(admin_token "$dir" "$port")
}
stop_server() { kill "$srv"; wait "$srv" || true; srv=; }
load() { # load RUN-ID N RATE: medstream bench, its JSON figures on stdout
  build/medstream bench --url "http://127.0.0.1:$port" --records "$2" --size "$size" --batch 1000 --rate "$3" \
    --connections 3 --read-rate 0 --probe-every 0 --run-id "$1" --token "$token" --json | grep '^{'
}
reprojecting() { # prints "to done total" while a re-projection runs, nothing once it is done
  curl -sf "http://127.0.0.1:$port/healthz" |
    python3 -c 'import sys,json; r=json.load(sys.stdin)["schema"]["reprojecting"]; r and print(r["to"], r["done"], r["total"])'
}
build/medstream init "$dir" >/dev/null
echo "== filling: $records records of ~$size bytes under S1" >&2
start_server "$base/s1.json"
t0=$(date +%s.%N)
load fill "$records" 0 > "$base/fill.json"
echo "   filled in $(python3 -c "import sys; print('%.0f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)") s" >&2
stop_server
echo "== baseline: $load_n records, a restart under S1 (nothing to re-project)" >&2
start_server "$base/s1.json"
[ -z "$(reprojecting)" ] || { echo "a re-projection under S1?" >&2; exit 1; }
load base "$load_n" "$rate" > "$base/base.json"
stop_server
echo "== under S2: $load_n records while the store is re-projected" >&2
start_server "$base/s2.json"
t0=$(date +%s.%N)
r0=$(reprojecting)
[ -n "$r0" ] || { echo "no re-projection started under S2" >&2; exit 1; }
load during "$load_n" "$rate" > "$base/during.json"
t_load=$(date +%s.%N)
still=$(reprojecting)
while [ -n "$(reprojecting)" ]; do sleep 0.2; done
t1=$(date +%s.%N)
stop_server
python3 - "$base" "$t0" "$t_load" "$t1" "$records" "$size" "$load_n" "$rate" "$still" <<'PY'
import json, re, sys
base, t0, t_load, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
records, size, load_n, rate, still = sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9]
b, d = json.load(open(base + "/base.json")), json.load(open(base + "/during.json"))
key = next(k for k in b if "records_per_min" in k or k in ("records_min", "rate_records_min"))
log = open(base + "/serve.log").read()
m = re.findall(r"public copies re-projected: schema version (\d+) in force \((\d+) entries in ([0-9.]+) s\)", log)
if not m:
    sys.exit("no re-projection line in the server's log")
entries, secs = int(m[-1][1]), float(m[-1][2])
print("re-projection of %s records (~%s B, 5 %% updates) and their patients: %d entries (record and patient "
      "sub-databases) in %.1f s, %.0f entries/s (wall clock from start to switch %.1f s)"
      % (records, size, entries, secs, entries / secs if secs else 0, t1 - t0))
ratio = d[key] / b[key] if b[key] else float("nan")
print("ingest of %s records (offered %s records/min): %.0f records/min without a re-projection, %.0f during it: "
      "ratio %.3f (%s)" % (load_n, rate or "unlimited", b[key], d[key], ratio,
                            "within 20 %" if ratio >= 0.8 else "MORE than 20 % below"))
if still:
    print("the load ended %.1f s after the start; the re-projection went on %.1f s alone (at the load's end: %s)"
          % (t_load - t0, t1 - t_load, still))
else:
    print("the re-projection ended before the load did (the load took %.1f s)" % (t_load - t0))
PY

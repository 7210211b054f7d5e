#!/usr/bin/env bash
# The reference benchmark: RUNS runs (default 3), each on a fresh data directory, of `medstream bench`
# with RECORDS records (default 1,000,000) of 20 KB in batches of 1000 over HTTP, then the medians.
# Also: restart time after kill -9 under full load. Needs ~21 GB free per run (deleted after each).
# Usage: [CONNECTIONS=3] [RATE=records/min] [SERVE_LOG=FILE] scripts/bench_reference.sh [RUNS] [RECORDS]
#   RATE unset: closed loop, as fast as the server answers (throughput);
#   RATE=1000000: open loop at the reference load (freshness and read latency at that load);
#   SERVE_LOG: where the servers' log (standard error: the access log too) goes, default /dev/null.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
runs=${1:-3}; records=${2:-1000000}; port=${PORT:-18199}
dir=${BENCH_DIR:-/var/tmp/medstream-bench}
make -s all
out=$(mktemp)
for i in $(seq "$runs"); do
  rm -rf "$dir"; build/medstream init "$dir" >/dev/null
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" 2>>"${SERVE_LOG:-/dev/null}" & srv=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "== run $i" >&2
  build/medstream bench --url "http://127.0.0.1:$port" --records "$records" --connections "${CONNECTIONS:-3}" \
    --rate "${RATE:-0}" --run-id "ref$i" --token "$(admin_token "$dir" "$port")" --json > "$out.run"
  grep -v '^{' "$out.run" >&2; grep '^{' "$out.run" >> "$out"; rm -f "$out.run"
  kill "$srv"; wait "$srv" || true
done
# restart after kill -9 at full load: load for 10 s, kill -9, time until /healthz answers
rm -rf "$dir"; build/medstream init "$dir" >/dev/null
build/medstream serve --data "$dir" --listen "127.0.0.1:$port" 2>>"${SERVE_LOG:-/dev/null}" & srv=$!
sleep 0.5
build/medstream bench --url "http://127.0.0.1:$port" --records 400000 --connections 3 --run-id kill \
  --token "$(admin_token "$dir" "$port")" --probe-every 0 --read-rate 0 >/dev/null 2>&1 & load=$!
sleep 10; kill -9 "$srv"; wait "$srv" 2>/dev/null || true; wait "$load" 2>/dev/null || true
t0=$(date +%s.%N)
build/medstream serve --data "$dir" --listen "127.0.0.1:$port" 2>>"${SERVE_LOG:-/dev/null}" & srv=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.01; done
t1=$(date +%s.%N)
kill "$srv"; wait "$srv" || true
rm -rf "$dir"
python3 scripts/medians.py "$out"
python3 -c 'import sys; print("  %-28s %.3f s" % ("restart_after_kill9", float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
rm -f "$out"

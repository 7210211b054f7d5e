#!/usr/bin/env bash
# What the continuous lake (serve --lake) costs ingest, and how far behind it runs: RUNS pairs of runs
# (default 3), each pair one run without the lake and one with it, in alternating order (off/on, then
# on/off, ...), each on a fresh data directory, of `medstream bench` offering RECORDS records (default
# 200,000) of 20 KB in batches of 1000 at RATE records/min (default 1,000,000; 0: as fast as answered).
# With the lake, a sampler reads /metrics every 0.25 s from the start of the load until the lake holds
# every commit: medstream_lake_lag_seconds (age of the oldest commit not yet in a published file), max and
# p99 over the samples. Prints per run the ingest figures, then the medians of records/min both ways,
# the median of the pairs' on/off ratios, and the lag against the target (lag <= roll interval, ingest
# within 10 % of lake-off).
# Usage: [RATE=1000000] [ROLL=5] [CONNECTIONS=3] scripts/bench_lake.sh [RUNS] [RECORDS]
#   ROLL: --lake-roll-seconds (default 5, so that a 200,000-record run at 1,000,000/min, ~12 s, holds
#   several rolls; the server's default is 60). Needs ~RECORDS x 20 KB free in BENCH_DIR (deleted after
#   each run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
runs=${1:-3}; records=${2:-200000}; rate=${RATE:-1000000}; roll=${ROLL:-5}
port=${PORT:-18193}
base=${BENCH_DIR:-/var/tmp/medstream-bench-lake}
dir=$base/data; lake=$base/lake; srv=; sampler=
cleanup() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
  rm -rf "$base"
}
trap cleanup EXIT
make -s all
mkdir -p "$base"
figures=$base/figures.jsonl
# sample medstream_lake_lag_seconds, position and the commit position into FILE until killed
sample() {
  local token=$1 file=$2
  while :; do
    curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" |
      awk -v t="$(date +%s.%N)" '/^medstream_lake_lag_seconds /{l=$2} /^medstream_lake_position /{p=$2}
        /^medstream_commit_position /{c=$2} END{if (l != "") print t, l, p, c}' >> "$file" || true
    sleep 0.25
  done
}
one_run() { # one_run RUN MODE(off|on)
  local i=$1 mode=$2 args=() token out lagfile=$base/lag.$1.$2
  rm -rf "$dir" "$lake"; build/medstream init "$dir" >/dev/null
  [ "$mode" = on ] && args=(--lake "$lake" --lake-roll-seconds "$roll")
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" "${args[@]}" 2>>"$base/serve.log" & srv=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  token=$(admin_token "$dir" "$port")
  if [ "$mode" = on ]; then : > "$lagfile"; sample "$token" "$lagfile" & sampler=$!; fi
  echo "== run $i, lake $mode" >&2
  out=$(build/medstream bench --url "http://127.0.0.1:$port" --records "$records" --rate "$rate" \
    --connections "${CONNECTIONS:-3}" --run-id "lake$i$mode" --token "$token" --json)
  echo "$out" | grep -E "records/min|freshness" >&2 || true
  if [ "$mode" = on ]; then # until the lake holds every commit of the run
    for _ in $(seq 600); do
      last=$(tail -n 1 "$lagfile" 2>/dev/null || true)
      set -- $last
      [ $# -eq 4 ] && [ "${3%.*}" -ge "${4%.*}" ] && break
      sleep 0.25
    done
    kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=
    echo "   lake: $(find "$lake/records" -name '*.parquet' | wc -l) files, $(du -sh "$lake" | cut -f1)," \
      "$(wc -l < "$lake/_medstream/commits") rolls" >&2
  fi
  echo "$out" | grep '^{' | python3 -c 'import sys,json; d=json.load(sys.stdin); d["run"]=int(sys.argv[1]); d["lake"]=sys.argv[2]; print(json.dumps(d))' "$i" "$mode" >> "$figures"
  kill "$srv"; wait "$srv" || true; srv=
}
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then one_run "$i" off; one_run "$i" on; else one_run "$i" on; one_run "$i" off; fi
done
python3 - "$figures" "$base" "$roll" "$rate" <<'PY'
import glob, json, statistics, sys
figures, base, roll, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(figures)]
key = next(k for k in rows[0] if "records_per_min" in k or k in ("records_min", "rate_records_min"))
def med(v): return statistics.median(v) if v else float("nan")
off = {r["run"]: r[key] for r in rows if r["lake"] == "off"}
on = {r["run"]: r[key] for r in rows if r["lake"] == "on"}
ratios = [on[i] / off[i] for i in sorted(on) if i in off and off[i]]
print("ingest (%s, offered %s records/min): lake off median %.0f, lake on median %.0f records/min; "
      "median on/off ratio of the pairs %.3f (runs: %s)"
      % (key, rate, med(list(off.values())), med(list(on.values())), med(ratios),
         ", ".join("%.0f/%.0f" % (on[i], off[i]) for i in sorted(on) if i in off)))
lags = []
for f in sorted(glob.glob(base + "/lag.*.on")):
    v = sorted(float(line.split()[1]) for line in open(f) if len(line.split()) == 4)
    if v:
        p99 = v[min(len(v) - 1, int(0.99 * len(v)))]
        lags.append((max(v), p99))
        print("lake lag, run %s: max %.3f s, p99 %.3f s over %d samples" % (f.split(".")[-2], max(v), p99, len(v)))
if lags:
    worst = max(m for m, _ in lags)
    print("lake lag: max %.3f s, median p99 %.3f s (roll interval %.0f s: %s); ingest %s"
          % (worst, med([p for _, p in lags]), roll, "within" if worst <= roll else "OVER",
             "within 10 % of lake-off" if med(ratios) >= 0.9 else "MORE than 10 % below lake-off"))
PY

#!/usr/bin/env bash
# This checkout's server against another checkout's (BASE: e.g. a `git worktree add` of an earlier commit,
# built with `make`), in alternating pairs, each run on a fresh data directory: `medstream bench` with
# RECORDS records (default 200,000) of 20 KB in batches of 1000 over HTTP, 3 connections, closed loop (as
# fast as answered) unless RATE is set. Prints each run's records/min, freshness p99, point read p99,
# bytes written to the disk per body byte and the block device's read requests per 1000 records sent
# (everyone's, while the load ran: /sys/dev/block/M:m/stat), the ratio of records/min this/base per pair,
# and the medians.
# SIZE and REPEAT pass --size and --repeat-share to the generator (e.g. SIZE=200 REPEAT=0.82: the 200 B load of
# scripts/bench_flat.sh). Each run also prints the server's CPU time per record (user + system, from
# /proc/PID/stat around the load): where the closed loop is bound by the two cores, the steadier figure; and the
# writer thread's alone (/proc/PID/task/TID/stat of ms-writer): the single thread that bounds it at 200 B.
# Both servers are driven by this checkout's load generator (`medstream bench`), so that a change of the
# generator does not pass for a change of the server; BASE_BENCH=BINARY drives the base side with another
# (e.g. BASE=. BASE_BENCH=/tmp/base/build/medstream: one server, two load generators). Each run also prints the
# load generator's own CPU time a record (/usr/bin/time).
# Used for the cost of encryption at rest (issue 15) and the step of the patient log (issue 17):
#   git worktree add /tmp/base a0dde2d && make -C /tmp/base all && BASE=/tmp/base scripts/bench_versus.sh 3 200000
# SERVE_ARGS / BASE_SERVE_ARGS: extra `serve` options for this side / the base side (BASE=. compares two
# settings of one build, e.g. BASE=. SERVE_ARGS="--body-cache 1GiB" scripts/bench_versus.sh).
# WRITER_NICE / BASE_WRITER_NICE: renice this side's / the base side's ingest writer thread (ms-writer) to that
# nice value once the server is up (e.g. WRITER_NICE=5 BASE=. : the writer below the point reads' nice 0).
# Needs ~RECORDS x 20 KB free in BENCH_DIR (default /var/tmp/medstream-bench-versus; deleted after each run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
pairs=${1:-3}; records=${2:-200000}; port=${PORT:-18197}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-versus}
base=${BASE:?BASE: the other checkout, built}
make -s all
out=$(mktemp)
run() { # $1: checkout, $2: extra serve options, $3: the load generator's binary, $4: the writer's nice;
       #   prints "records_per_min freshness_p99_ms point_read_p99_ms disk_ratio device_reads_per_1000_records
       #   server_cpu_us_per_record writer_cpu_us_per_record generator_cpu_us_per_record"
  local co=$1 extra=$2 gen=$3 nice=${4:-0}
  rm -rf "$dir"; "$co/build/medstream" init "$dir" >/dev/null
  "$co/build/medstream" serve --data "$dir" --listen "127.0.0.1:$port" $extra 2>/dev/null & local srv=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  local tok
  tok=$(admin_token "$dir" "$port")
  local devstat reads0
  devstat=/sys/dev/block/$(stat -c '%Hd:%Ld' "$dir")/stat
  reads0=$(awk '{print $1}' "$devstat")
  local cpu0 cpu1 wtask w0 w1
  cpu0=$(awk '{print $14 + $15}' "/proc/$srv/stat")
  wtask=$(grep -lx ms-writer /proc/"$srv"/task/*/comm | head -1); wtask=${wtask%/comm}
  if [ "$nice" != 0 ]; then renice -n "$nice" -p "${wtask##*/}" >/dev/null; fi
  w0=$(awk '{print $14 + $15}' "$wtask/stat")
  /usr/bin/time -f '%U %S' -o "$out.time" "$gen" bench --url "http://127.0.0.1:$port" --records "$records" \
    --connections "${CONNECTIONS:-3}" --rate "${RATE:-0}" ${SIZE:+--size "$SIZE"} ${REPEAT:+--repeat-share "$REPEAT"} \
    --run-id "vs$RANDOM" --token "$tok" --json 2>/dev/null | grep '^{' > "$out"
  cpu1=$(awk '{print $14 + $15}' "/proc/$srv/stat")
  w1=$(awk '{print $14 + $15}' "$wtask/stat")
  local reads=$(($(awk '{print $1}' "$devstat") - reads0))
  kill "$srv"; wait "$srv" || true
  rm -rf "$dir"
  python3 - "$out" "$reads" "$records" "$((cpu1 - cpu0))" "$((w1 - w0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
gen = sum(map(float, open(sys.argv[1] + ".time").read().split()[-2:]))
reads, records, ticks, wticks, hz = map(int, sys.argv[2:])
print(round(j["records_per_min"]), j["freshness_ms_p99"], j.get("point_read_ms_p99", "nan"),
      j.get("disk_write_ratio", "nan"), round(reads * 1000 / records, 1), round(ticks / hz * 1e6 / records, 2),
      round(wticks / hz * 1e6 / records, 2), round(gen * 1e6 / records, 2))
PY
}
ratios=(); cratios=(); wratios=(); this=(); that=()
for i in $(seq "$pairs"); do
  gen=./build/medstream; bgen=${BASE_BENCH:-$gen}
  an=${WRITER_NICE:-0}; bn=${BASE_WRITER_NICE:-0}
  if [ $((i % 2)) = 1 ]; then
    a=$(run . "${SERVE_ARGS:-}" "$gen" "$an"); b=$(run "$base" "${BASE_SERVE_ARGS:-}" "$bgen" "$bn")
  else
    b=$(run "$base" "${BASE_SERVE_ARGS:-}" "$bgen" "$bn"); a=$(run . "${SERVE_ARGS:-}" "$gen" "$an")
  fi
  read -r a1 a2 a3 a4 a5 a6 a7 a8 <<< "$a"; read -r b1 b2 b3 b4 b5 b6 b7 b8 <<< "$b"
  r=$(python3 -c "print(round($a1/$b1, 3))"); c=$(python3 -c "print(round($a6/$b6, 3))")
  w=$(python3 -c "print(round($a7/$b7, 3))")
  ratios+=("$r"); cratios+=("$c"); wratios+=("$w"); this+=("$a"); that+=("$b")
  echo "pair $i: this $a1 records/min (freshness p99 $a2 ms, read p99 $a3 ms, disk $a4 x," \
    "$a5 device reads per 1000 records, $a6 us CPU a record, writer $a7 us; load generator $a8 us), base $b1" \
    "(p99 $b2 ms, read p99 $b3 ms, disk $b4 x, $b5 reads, $b6 us CPU, writer $b7 us; load generator $b8 us):" \
    "ratio $r, CPU ratio $c, writer CPU ratio $w"
done
median() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
echo "median ratio this/base: $(median "${ratios[@]}")"
echo "median server CPU a record, ratio this/base: $(median "${cratios[@]}")"
echo "median writer CPU a record, ratio this/base: $(median "${wratios[@]}")"
python3 - "${this[@]}" -- "${that[@]}" <<'PY'
import statistics, sys
args = sys.argv[1:]; cut = args.index("--")
for name, runs in (("this", args[:cut]), ("base", args[cut + 1:])):
    cols = list(zip(*(map(float, r.split()) for r in runs)))
    print("%s medians: %.0f records/min, freshness p99 %.1f ms, point read p99 %.2f ms, disk %.3f x, "
          "%.1f device reads per 1000 records, %.2f us server CPU a record, %.2f us of it the writer's, "
          "%.2f us the load generator's"
          % (name, *(statistics.median(c) for c in cols)))
PY
rm -f "$out" "$out.time"

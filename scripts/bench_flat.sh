#!/usr/bin/env bash
# Does ingest stay flat as the store grows? (issue 17's target: throughput within 10 % from an empty store
# to 100 M records of 200 B and 10 M patients; restart <= 5 s at that size.) One server, one data directory,
# SLICES slices of SLICE records of 200 B each sent by `medstream bench` (closed loop, 3 connections; each
# slice its own seed, REPEAT (default 0.9) of its records of identities it sent before, so about
# SLICES x SLICE x (1 - REPEAT) patients in all), and per slice: records/min, freshness p99 and point read
# p99 (the server's store growing); at the end the bytes the data directory holds per byte of record sent,
# the server's peak RSS, and the restart time after kill -9 (until /healthz answers: opening the store,
# rebuilding the identity index and the patient log's heads), with the server's own account of its parts.
# STAT=1 also prints, before the restart, each LMDB sub-database's bytes per record sent (`mdb_stat -a`,
# Debian's lmdb-utils) and the segment log's. CHECKOUT=DIR runs the server of another checkout (built), with
# this one's load generator, as scripts/bench_versus.sh does, so that two commits compare slice by slice.
# Usage: [SLICES=10] [SLICE=2000000] [SIZE=200] [REPEAT=0.9] [STAT=1] [CHECKOUT=DIR] scripts/bench_flat.sh
#   e.g. SLICES=10 SLICE=10000000 scripts/bench_flat.sh        # the target's 100 M records (~1 h here)
# Needs ~SLICES x SLICE x SIZE x 6 bytes free in BENCH_DIR (default /var/tmp/medstream-bench-flat; deleted).
set -euo pipefail
cd "$(dirname "$0")/.."
slices=${SLICES:-10}; slice=${SLICE:-2000000}; size=${SIZE:-200}; port=${PORT:-18195}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-flat}
make -s all
server=${CHECKOUT:-.}/build/medstream
rm -rf "$dir"; "$server" init "$dir" >/dev/null
start() { # $1: where the server's log goes (default: nowhere)
  "$server" serve --data "$dir" --listen "127.0.0.1:$port" 2>"${1:-/dev/null}" & srv=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.01; done
}
start
tok=$(curl -sf -H 'Content-Type: application/json' \
  -d "{\"user\":\"admin\",\"password\":\"$(cat "$dir/admin.password")\"}" "http://127.0.0.1:$port/v1/auth/token" |
  python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
printf '%-6s %14s %14s %16s %16s %12s\n' slice records_total records_per_min freshness_p99_ms point_read_p99_ms data_GB
sent=0
for i in $(seq "$slices"); do
  line=$(build/medstream bench --url "http://127.0.0.1:$port" --records "$slice" --size "$size" --connections 3 \
    --seed "$i" --run-id "flat$i" --repeat-share "${REPEAT:-0.9}" --token "$tok" --json 2>/dev/null | grep '^{')
  sent=$((sent + slice))
  gb=$(du -sb "$dir" | awk '{printf "%.2f", $1 / 1e9}')
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-6s %14d %14.0f %16.1f %16.2f %12s" % (sys.argv[2], int(sys.argv[3]), r["records_per_min"], r.get("freshness_ms_p99", float("nan")), r.get("point_read_ms_p99", float("nan")), sys.argv[4]))' \
    "$line" "$i" "$sent" "$gb"
done
if [ -n "${STAT:-}" ]; then # bytes per record sent: each sub-database's pages (leaf, branch, overflow), the bodies
  mdb_stat -a "$dir/lmdb" | awk -v n="$sent" '/^Status of/ {name = $3} /(Branch|Leaf|Overflow) pages/ {p[name] += $3}
    END {for (d in p) if (p[d]) printf "  %-12s %7.1f bytes/record\n", d, p[d] * 4096 / n}' | sort -k2 -n -r
  du -sb "$dir/segments" | awk -v n="$sent" '{printf "  %-12s %7.1f bytes/record\n", "segments", $1 / n}'
fi
rss=$(awk '/VmHWM/ {printf "%.2f", $2 / 1048576}' "/proc/$srv/status")
kill -9 "$srv"; wait "$srv" 2>/dev/null || true
log=$(mktemp)
t0=$(date +%s.%N); start "$log"; t1=$(date +%s.%N)
kill "$srv"; wait "$srv" || true
grep -o 'store opened in .*' "$log" || true # the parts of the restart: the patient log, the keys, the identity index
rm -f "$log"
bytes=$(du -sb "$dir" | awk '{print $1}')
python3 -c 'import sys; print("data directory / records sent: %.2f x; peak RSS %s GiB; restart after kill -9: %.2f s" % (int(sys.argv[1]) / (int(sys.argv[2]) * int(sys.argv[3])), sys.argv[4], float(sys.argv[6]) - float(sys.argv[5])))' \
  "$bytes" "$sent" "$size" "$rss" "$t0" "$t1"
rm -rf "$dir"

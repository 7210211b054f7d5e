#!/usr/bin/env bash
# Does ingest stay flat as the store grows? (issue 17's target: throughput within 10 % from an empty store
# to 100 M records of 200 B and 10 M patients; restart <= 5 s at that size.) One server, one data directory,
# SLICES slices of SLICE records of SIZE (200) bytes asked of the generator (its fixed fields make them
# ~267 bytes each; the ratio at the end divides by the bytes actually sent) sent by `medstream bench`
# (closed loop, 3 connections; each slice its own seed, REPEAT (default 0.9) of its records of identities
# it sent before, so about SLICES x SLICE x (1 - REPEAT) patients in all), and per slice: records/min,
# freshness p99 and point read p99 (the server's store growing); at the end the bytes the data directory
# holds per byte of record sent, the server's peak RSS, and the restart time after kill -9 (until /healthz
# answers: opening the store, rebuilding the identity index and the patient log's heads), with the server's
# own account of its parts.
# STAT=1 also prints, before the restart, each LMDB sub-database's bytes per record sent (`mdb_stat -a`,
# Debian's lmdb-utils) and the segment log's. CHECKOUT=DIR runs the server of another checkout (built), with
# this one's load generator, as scripts/bench_versus.sh does, so that two commits compare slice by slice.
# Per slice it also prints where the writer's group commits spent their time (the server's
# medstream_commit_phase_seconds_total, per commit: applying the records, waiting for the bodies' writes,
# the segment log's fdatasync, LMDB's commit; "nan" from a server without it) and what reached the block
# device (/sys/dev/block/M:m/stat: bytes and write requests per record, everyone's), and per 1,000 records the
# device's read requests and the record bodies the writer read back to recompute patients (their metric).
# SERVE_ARGS: extra `serve` options (e.g. SERVE_ARGS="--state-cache 0": the same build without the state cache).
# Usage: [SLICES=10] [SLICE=2000000] [SIZE=200] [REPEAT=0.9] [STAT=1] [CHECKOUT=DIR] [SERVE_ARGS=...] scripts/bench_flat.sh
#   e.g. SLICES=40 SLICE=2000000 scripts/bench_flat.sh     # 80 M records (~27 min here; 78 GiB free holds ~88 M)
# Needs ~SLICES x SLICE x ((SIZE + 67) x 1.15 + 640) bytes free in BENCH_DIR (default
# /var/tmp/medstream-bench-flat; deleted): 942 bytes a record of 200 B at 89 M records. It refuses to start
# with less (df's "available": a root without CAP_SYS_RESOURCE cannot write ext4's reserved blocks either; a
# full disk stops more than the server).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
slices=${SLICES:-10}; slice=${SLICE:-2000000}; size=${SIZE:-200}; port=${PORT:-18195}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-flat}
need=$(( slices * slice * ((size + 67) * 115 / 100 + 640) ))
free=$(df --output=avail -B1 "$(dirname "$dir")" | tail -1)
if [ "$need" -gt "$free" ]; then
  echo "bench_flat: ~$((need / 1000000000)) GB needed in $(dirname "$dir"), $((free / 1000000000)) GB free" >&2
  exit 1
fi
make -s all
server=${CHECKOUT:-.}/build/medstream
rm -rf "$dir"; "$server" init "$dir" >/dev/null
start() { # $1: where the server's log goes (default: nowhere)
  # shellcheck disable=SC2086
  "$server" serve --data "$dir" --listen "127.0.0.1:$port" ${SERVE_ARGS:-} 2>"${1:-/dev/null}" & srv=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.01; done
}
start
tok=$(admin_token "$dir" "$port")
devstat=/sys/dev/block/$(stat -c '%Hd:%Ld' "$dir")/stat
snap() { # one line: commits, the phases' seconds (apply bodies sync lmdb), device sectors and write requests written,
  # device read requests, record bodies read back for recomputes
  curl -sf -H "Authorization: Bearer $tok" "http://127.0.0.1:$port/metrics" | python3 -c '
import sys
v = {"commits": 0.0}; ph = dict.fromkeys(("apply", "bodies", "sync", "lmdb"), float("nan"))
for l in sys.stdin:
    if l.startswith("medstream_commits_total "): v["commits"] = float(l.split()[1])
    if l.startswith("medstream_state_recompute_records_total "): v["bodies"] = float(l.split()[1])
    if l.startswith("medstream_commit_phase_seconds_total{"): ph[l.split("\"")[1]] = float(l.split()[1])
d = open(sys.argv[1]).read().split()
print(v["commits"], ph["apply"], ph["bodies"], ph["sync"], ph["lmdb"], d[6], d[4], d[0], v.get("bodies", 0))' "$devstat"
}
printf '%-6s %14s %14s %16s %16s %12s   %s\n' slice records_total records_per_min freshness_p99_ms point_read_p99_ms \
  data_GB 'per commit: records, ms of apply/bodies/sync/lmdb; device bytes, writes a record; per 1000: reads, bodies'
# records sent, and their bytes (the bench's body_bytes: at --size 200 a record is ~267 bytes, its fixed fields)
sent=0; body_bytes=0
for i in $(seq "$slices"); do
  before=$(snap)
  line=$(build/medstream bench --url "http://127.0.0.1:$port" --records "$slice" --size "$size" --connections 3 \
    --seed "$i" --run-id "flat$i" --repeat-share "${REPEAT:-0.9}" --token "$tok" --json 2>/dev/null | grep '^{')
  after=$(snap)
  sent=$((sent + slice))
  body_bytes=$((body_bytes + $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["body_bytes"])' "$line")))
  gb=$(du -sb "$dir" | awk '{printf "%.2f", $1 / 1e9}')
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); n = int(sys.argv[5])
d = [float(a) - float(b) for a, b in zip(sys.argv[7].split(), sys.argv[6].split())]
c = d[0] or float("nan")
print("%-6s %14d %14.0f %16.1f %16.2f %12s   %6.0f %5.1f %5.1f %5.1f %5.1f; %6.0f %5.3f; %5.1f %5.1f" % (
      sys.argv[2], int(sys.argv[3]),
      r["records_per_min"], r.get("freshness_ms_p99", float("nan")), r.get("point_read_ms_p99", float("nan")),
      sys.argv[4], n / c, d[1] / c * 1e3, d[2] / c * 1e3, d[3] / c * 1e3, d[4] / c * 1e3, d[5] * 512 / n, d[6] / n,
      d[7] * 1000 / n, d[8] * 1000 / n))' \
    "$line" "$i" "$sent" "$gb" "$slice" "$before" "$after"
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
python3 -c '
import sys
stored, records, sent = (int(a) for a in sys.argv[1:4])
print("data directory / bytes of records sent: %.2f x (%.0f bytes a record sent, %.0f stored); peak RSS %s GiB; "
      "restart after kill -9: %.2f s" % (stored / sent, sent / records, stored / records, sys.argv[4],
                                         float(sys.argv[6]) - float(sys.argv[5])))' \
  "$bytes" "$sent" "$body_bytes" "$rss" "$t0" "$t1"
rm -rf "$dir"

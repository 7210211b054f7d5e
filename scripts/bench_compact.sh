#!/usr/bin/env bash
# The patient log's compaction after a change of schema (issue 17, item 4), measured on one store:
#   1. RECORDS records of SIZE bytes (default 2,000,000 of 200 B; 90 % of known patients) sent in a closed
#      loop under the default schema;
#   2. serve with a changed schema (favorite_color no longer published): the re-projection, then the
#      compaction of the log; from the compaction's start, a load of LOAD records offered at RATE a minute
#      (default 150,000 at 1,000,000/min: 9 s, within the compaction's ~11 s at 2 M records): its freshness
#      and point reads while the compaction runs;
#   3. the same load again once the compaction is over, on the same store: the figures without them;
#   4. the log's pages before and after (mdb_stat: plog, its compacted part plogc, LMDB's free pages).
# Needs lmdb-utils (mdb_stat) and ~RECORDS x SIZE x 7 bytes free in BENCH_DIR.
# Usage: [RECORDS=N] [SIZE=B] [LOAD=N] [RATE=N] scripts/bench_compact.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
records=${RECORDS:-2000000}; size=${SIZE:-200}; load=${LOAD:-150000}; rate=${RATE:-1000000}
port=${PORT:-18193}; dir=${BENCH_DIR:-/var/tmp/medstream-bench-compact}
make -s all
rm -rf "$dir"; build/medstream init "$dir" >/dev/null
log=$(mktemp); s2=$(mktemp --suffix=.json)
cat > "$s2" <<'JSON'
{"default_type":"record","event_time":"ts","identity":{"dob":"dob","name":"name"},"parent":"parent_id",
 "public":{"ts":"year","type":"copy"},"record_id":"record_id","type":"type"}
JSON
start() { # serve with extra arguments; the log to $log
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" "$@" 2>>"$log" & srv=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.01; done
  tok=$(admin_token "$dir" "$port")
}
stop() { kill "$srv"; wait "$srv" || true; }
pages() { # "plog_pages plogc_pages free_pages" of the stopped store
  python3 - "$dir/lmdb" <<'PY'
import re, subprocess, sys
def stat(*a):
    return subprocess.run(["mdb_stat", *a, sys.argv[1]], capture_output=True, text=True).stdout
def db_pages(name):
    t = stat("-s", name)
    if "Status of" not in t: return 0
    return sum(int(re.search(r"%s pages: (\d+)" % k, t).group(1)) for k in ("Branch", "Leaf", "Overflow"))
free = re.search(r"Free pages: (\d+)", stat("-f"))
print(db_pages("plog"), db_pages("plogc"), free.group(1) if free else 0)
PY
}
bench() { # $1: run id; prints records/min, freshness p99, point read p99
  build/medstream bench --url "http://127.0.0.1:$port" --records "$2" --size "$size" --connections "${3:-2}" \
    --rate "${4:-0}" --seed 7 --run-id "$1" --repeat-share 0.9 --token "$tok" --json 2>/dev/null | grep '^{' |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f records/min, freshness p99 %.1f ms, point read p99 %.2f ms" % (r["records_per_min"], r["freshness_ms_p99"], r.get("point_read_ms_p99", float("nan"))))'
}
start
echo "fill: $(bench fill "$records" 3 0)"
stop
read -r p0 c0 f0 <<< "$(pages)"
echo "before: plog $p0 pages, plogc $c0, free $f0 ($(du -sb "$dir/lmdb/data.mdb" | awk '{printf "%.2f GB", $1/1e9}'))"
t0=$(date +%s.%N)
start --schema "$s2"
until grep -q "compacting the patient log from" "$log"; do sleep 0.05; done
echo "during the compaction: $(bench during "$load" 2 "$rate")"
until grep -q "patient log compacted" "$log"; do sleep 0.5; done
t1=$(date +%s.%N)
read -r p1 c1 f1 <<< "$(pages)" # (read beside the live server: LMDB readers need no lock)
echo "compacted: plog $p1 pages, plogc $c1, free $f1"
echo "after: $(bench after "$load" 2 "$rate")"
stop
read -r p2 c2 f2 <<< "$(pages)"
echo "after the second load: plog $p2 pages, plogc $c2, free $f2 ($(du -sb "$dir/lmdb/data.mdb" | awk '{printf "%.2f GB", $1/1e9}'))"
grep -E "re-projected|copies of old schema|compacted" "$log" | sed 's/^medstream: /  /'
python3 -c 'import sys; print("  from the start with the new schema to the compaction'"'"'s end: %.1f s" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
# the log's pages without the first load's own (taken equal to the second's: the same records, sent alike)
python3 - "$p0" "$c0" "$p1" "$c1" "$p2" "$c2" "$f1" "$f2" <<'PY'
import sys
p0, c0, p1, c1, p2, c2, f1, f2 = map(int, sys.argv[1:])
before, compacted, after = p0 + c0, p1 + c1, p2 + c2
load = after - compacted
print("  the log's pages: %d before, %d after the compaction, of which ~%d the load sent meanwhile: %.1f %% of "
      "the log's pages before; LMDB's free pages %d, then %d after the second load (reused)"
      % (before, compacted, load, 100.0 * (compacted - load - before) / before, f1, f2))
PY
rm -rf "$dir" "$log" "$s2"

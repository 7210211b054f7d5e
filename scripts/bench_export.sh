#!/usr/bin/env bash
# bench_export.sh - issue 12's export targets, measured: a store of ROWS generated records of ~20 KB
# (`medstream gen-import` NDJSON, loaded with `medstream import`), then RUNS rounds in which, in turn:
#   medstream export --scope phi    --format parquet   pinned to one core (taskset -c 0)
#   medstream export --scope phi    --format parquet --compression zstd   one core
#   medstream export --scope public --format parquet   one core
#   medstream export --scope phi    --format ndjson    one core (the JSON the Parquet files hold)
#   DuckDB COPY (SELECT * FROM read_json(the NDJSON)) TO … (FORMAT parquet), threads=1 and default threads
# each into a fresh directory with the page cache dropped first (when this user may). Then the medians
# of seconds and MB/s of source records (the NDJSON's bytes / seconds), and the size of the record files
# (OUT/records; the patients file is left out, DuckDB writes none) against the JSON they hold: the
# source NDJSON, and the PHI NDJSON export's record files (the same rows as JSON).
#
# Usage: [BENCH_DIR=/var/tmp/medstream-bench-export] [BENCH_REUSE=1] [BENCH_CACHE=warm] \
#          scripts/bench_export.sh [ROWS] [RUNS]
#   ROWS default 200,000 (~4 GB of records); RUNS default 3. Disk: about 4 x ROWS x 20 KB.
#   BENCH_REUSE=1 keeps BENCH_DIR's store and NDJSON when an earlier run made them with the same ROWS
#   (BENCH_DIR/stamp). BENCH_CACHE=warm reads
#   everything once first and drops no cache: the store as a server that has just written it holds it.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}; runs=${2:-3}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-export}
make -s all
src="$dir/records.ndjson"; out="$dir/figures.ndjson"
. scripts/bench_lib.sh

if [ "${BENCH_REUSE:-0}" = 1 ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$rows" ] && [ -d "$dir/store" ]; then
  echo "== reusing the store of $rows records in $dir" >&2
else
  rm -rf "$dir"; mkdir -p "$dir"; chmod 755 "$dir"
  echo "== $rows records into a fresh store" >&2
  build/medstream gen-import "$src" --records "$rows" --format ndjson >&2
  build/medstream init "$dir/store" > /dev/null
  build/medstream import "$src" --data "$dir/store" --progress none >&2
  echo "$rows" > "$dir/stamp"
fi
: > "$out"
srcbytes=$(stat -c %s "$src")
if [ "${BENCH_CACHE:-cold}" = warm ]; then
  echo "== warm: reading the store and the NDJSON into the page cache" >&2
  cat "$dir"/store/segments/* "$dir"/store/lmdb/* "$src" > /dev/null
fi

duck=$(duckdb_python)
[ -n "$duck" ] || echo "bench_export: DuckDB is not available (pip install duckdb failed): left out" >&2

# timed LABEL OUTDIR CMD...: CMD run cold (bench_lib.sh); appends seconds, MB/s of source, out size
timed() {
  local label=$1 o=$2; shift 2
  rm -rf "$o"
  run_cold bench_export "$label" "$dir" "$@"
  local size; size=$(du -sb "$o" | cut -f1); [ -d "$o/records" ] && size=$(du -sb "$o/records" | cut -f1)
  python3 - "$label" "$srcbytes" "$size" "$dir/time.json" >> "$out" <<'PY'
import json, sys
label, src, size, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
print(json.dumps({"tool": label, "seconds": t["seconds"], "mb_per_s": round(src / 1e6 / t["seconds"], 1),
                  "out_mb": round(size / 1e6, 1), "rss_mib": t["rss_mib"]}))
PY
  tail -1 "$out" >&2
}

cat > "$dir/duck_copy.py" <<'PY'
import sys
import duckdb
src, dst, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = duckdb.connect()
if threads:
    c.execute("SET threads = %d" % threads)
c.execute("COPY (SELECT * FROM read_json('%s', format = 'newline_delimited')) TO '%s' (FORMAT parquet)" % (src, dst))
PY
for i in $(seq "$runs"); do
  echo "== round $i of $runs" >&2
  timed export_phi_parquet "$dir/o1" taskset -c 0 build/medstream export --data "$dir/store" --out "$dir/o1" --format parquet --scope phi
  timed export_phi_parquet_zstd "$dir/o5" taskset -c 0 build/medstream export --data "$dir/store" --out "$dir/o5" --format parquet --scope phi --compression zstd
  timed export_public_parquet "$dir/o2" taskset -c 0 build/medstream export --data "$dir/store" --out "$dir/o2" --format parquet --scope public
  timed export_phi_ndjson "$dir/o3" taskset -c 0 build/medstream export --data "$dir/store" --out "$dir/o3" --format ndjson --scope phi
  if [ -n "$duck" ]; then
    for th in 1 0; do
      timed "duckdb_copy_parquet_threads_${th/0/default}" "$dir/o4.parquet" "$duck" "$dir/duck_copy.py" "$src" "$dir/o4.parquet" "$th"
    done
  fi
done
python3 - "$out" "$srcbytes" "${BENCH_CACHE:-cold}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
src = int(sys.argv[2]) / 1e6
med = {}
for r in rows:
    med.setdefault(r["tool"], []).append(r)
m = {t: {f: statistics.median(x[f] for x in g) for f in ("seconds", "mb_per_s", "out_mb", "rss_mib")} for t, g in med.items()}
nd = m.get("export_phi_ndjson", {}).get("out_mb")
print("medians, %s page cache (source: %.0f MB of records as NDJSON; out MB: the record files; JSON/out: the PHI NDJSON"
      " export's record files over these, the same rows as JSON):" % (sys.argv[3], src))
print("  %-34s %5s %9s %9s %9s %8s %9s %9s" % ("what", "runs", "seconds", "MB/s src", "out MB", "src/out", "JSON/out", "peak RSS"))
for t, g in med.items():
    x = m[t]
    ratio = "%9.2f" % (nd / x["out_mb"]) if nd and t.startswith("export_phi") else "%9s" % "-"
    print("  %-34s %5d %9.1f %9.1f %9.1f %8.2f %s %9d" % (t, len(g), x["seconds"], x["mb_per_s"], x["out_mb"],
                                                        src / x["out_mb"], ratio, x["rss_mib"]))
PY
rm -rf "$dir/o1" "$dir/o2" "$dir/o3" "$dir/o4.parquet" "$dir/o5"

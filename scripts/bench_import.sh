#!/usr/bin/env bash
# bench_import.sh - issue 11's target, measured: `medstream import` of a generated CSV of ROWS rows of
# ~20 KB (`medstream gen-import --format csv`) into a fresh data directory, side by side with the loaders
# a user would otherwise pick on the same file: `psql \copy` into a plain table of text columns (no key,
# no index; a PostgreSQL 15 from scripts/pg_temp.sh, fsync on) and DuckDB `read_csv` into a table of a
# database file. RUNS rounds; in each round the three run in turn, each on a fresh target and with the
# page cache dropped first (when this user may) so that every one reads the file from disk. Then the
# medians of elapsed seconds, rows/min, MB/s of CSV and peak memory (scripts/run_measured.py: resident,
# and anonymous).
# Before the rounds, one import of the first ~1 GB of the same rows (50,000) shows that peak memory does
# not grow with the file's size.
#
# Usage: [BENCH_DIR=/var/tmp/medstream-bench-import] scripts/bench_import.sh [ROWS] [RUNS]
#   ROWS default 1,000,000 (a ~20 GB file); RUNS default 3.
# Disk: the CSV (ROWS x ~20 KB) plus one target at a time (about as much again); all removed at the end
# but the CSV, which is kept (and reused) as BENCH_DIR/rows-ROWS.csv until KEEP_CSV=0.
# DuckDB comes from PyPI into a virtual environment kept between runs (scripts/bench_lib.sh); without
# network it is left out, and said so.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}; runs=${2:-3}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-import}
pgport=${BENCH_PG_PORT:-18433}
make -s all
mkdir -p "$dir"; chmod 755 "$dir"
csv="$dir/rows-$rows.csv"; small="$dir/rows-50000.csv"; out="$dir/figures.ndjson"; : > "$out"

. scripts/bench_lib.sh
# timed LABEL ROWS FILE CMD...: runs CMD cold (bench_lib.sh), appends its figures to $out
timed() {
  local label=$1 n=$2 file=$3; shift 3
  run_cold bench_import "$label" "$dir" "$@"
  python3 - "$label" "$n" "$(stat -c %s "$file")" "$dir/time.json" >> "$out" <<'EOF'
import json, sys
label, n, size, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
print(json.dumps({"tool": label, "rows": n, "seconds": t["seconds"], "rows_per_min": round(n / t["seconds"] * 60),
                  "mb_per_s": round(size / 1e6 / t["seconds"], 1), "rss_mib": t["rss_mib"], "anon_mib": t["anon_mib"]}))
EOF
  tail -1 "$out" >&2
}

for f in "$csv" "$small"; do
  n=$rows; [ "$f" = "$small" ] && n=50000
  [ -s "$f" ] || { echo "== generating $f ($n rows)" >&2; build/medstream gen-import "$f" --records "$n" --format csv; }
done
cols=$(head -1 "$csv" | tr -d '\r' | sed 's/\([^,]*\)/"\1" text/g')

duck=$(duckdb_python)
[ -n "$duck" ] || echo "bench_import: DuckDB is not available (pip install duckdb failed): left out" >&2

# PostgreSQL, once
pg=$(scripts/pg_temp.sh start "$dir/pg" "$pgport")
trap 'scripts/pg_temp.sh destroy "$dir/pg" >/dev/null 2>&1 || true' EXIT

import_into() { # FILE ROWS: medstream import into a fresh data directory; every row stored (created or updated)
  rm -rf "$dir/store"; build/medstream init "$dir/store" > /dev/null
  timed medstream_import "$2" "$1" build/medstream import "$1" --data "$dir/store" --progress plain \
    --rejects "$dir/rejects.ndjson"
  python3 - "$2" "$dir/stdout" <<'EOF' ||
import re, sys
m = re.search(r"created ([\d,]+), updated ([\d,]+), duplicate ([\d,]+), rejected ([\d,]+)", open(sys.argv[2]).read())
c, u, d, r = (int(x.replace(",", "")) for x in m.groups())
sys.exit(not (c + u == int(sys.argv[1]) and d == r == 0))
EOF
    { echo "bench_import: the import did not store every row:" >&2; cat "$dir/stdout" >&2; exit 1; }
  rm -rf "$dir/store"
}

echo "== ~1 GB: medstream import of 50,000 rows" >&2
import_into "$small" 50000
for i in $(seq "$runs"); do
  echo "== round $i of $runs: $rows rows, $(($(stat -c %s "$csv") / 1000000)) MB" >&2
  import_into "$csv" "$rows"
  psql -q "$pg" -c "DROP TABLE IF EXISTS rows" -c "CREATE TABLE rows ($cols)"
  timed psql_copy "$rows" "$csv" psql -q "$pg" -c "\\copy rows FROM '$csv' WITH (FORMAT csv, HEADER true)"
  psql -q "$pg" -c "DROP TABLE rows" -c "CHECKPOINT"
  if [ -n "$duck" ]; then
    rm -f "$dir/duck.db" "$dir/duck.db.wal"
    timed duckdb_read_csv "$rows" "$csv" "$duck" -c 'import duckdb, sys
c = duckdb.connect(sys.argv[1])
c.execute("CREATE TABLE rows AS SELECT * FROM read_csv(?, header = true, all_varchar = true)", [sys.argv[2]])
c.close()' "$dir/duck.db" "$csv"
    rm -f "$dir/duck.db" "$dir/duck.db.wal"
  fi
done
[ "${KEEP_CSV:-1}" = 1 ] || rm -f "$csv" "$small"

python3 - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("medians:")
print("  %-18s %10s %5s %9s %12s %8s %9s %9s" % ("tool", "rows", "runs", "seconds", "rows/min", "MB/s", "peak RSS", "peak anon"))
seen = []
for r in rows:
    k = (r["tool"], r["rows"])
    if k in seen:
        continue
    seen.append(k)
    g = [x for x in rows if (x["tool"], x["rows"]) == k]
    m = lambda f: statistics.median(x[f] for x in g)
    print("  %-18s %10d %5d %9.1f %12d %8.1f %9d %9d" % (k[0], k[1], len(g), m("seconds"), m("rows_per_min"), m("mb_per_s"),
                                                       m("rss_mib"), m("anon_mib")))
print("(MiB. peak RSS counts mapped file pages too, LMDB's for medstream; peak anon is the process's own\n"
      " memory, sampled every 0.1 s. psql's figures are the client's: the server's are not counted.)")
EOF

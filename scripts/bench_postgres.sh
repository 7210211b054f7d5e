#!/usr/bin/env bash
# The benchmark into PostgreSQL: a throw-away PostgreSQL 15 (scripts/pg_temp.sh) on this machine,
# `medstream serve --postgres`, and `medstream bench --postgres` offering RECORDS records (default
# 30,000) of 20 KB at each RATE given (records/min, default "30000 60000 120000") over HTTP. For each
# rate: ingest figures, and freshness in SQL (send to row visible in phi_records). Then "PostgreSQL
# alone": the rows the sink wrote (phi_records + phi_patient_versions of the last run) COPYed again
# into empty tables of the same definition, timed: the ceiling of this PostgreSQL for these rows.
# Usage: scripts/bench_postgres.sh [RECORDS] [RATE...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
records=${1:-30000}; shift || true
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(30000 60000 120000)
port=${PORT:-18197}; pgport=${PGPORT:-25499}
base=$(mktemp -d /var/tmp/medstream-bench-pg.XXXXXX); chmod 755 "$base"
dir=$base/data; srv=
cleanup() {
  if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
  scripts/pg_temp.sh destroy "$base/pg" >/dev/null 2>&1 || true
  rm -rf "$base"
}
trap cleanup EXIT
make -s all
url=$(scripts/pg_temp.sh start "$base/pg" "$pgport")
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
for rate in "${rates[@]}"; do
  db=bench_$rate
  psql "$url" -c "CREATE DATABASE $db"
  dburl=${url%/*}/$db
  rm -rf "$dir"; build/medstream init "$dir" >/dev/null
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" --postgres "$dburl" 2>"$base/serve.log" & srv=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  token=$(admin_token "$dir" "$port")
  echo "== $records records offered at $rate records/min" >&2
  build/medstream bench --url "http://127.0.0.1:$port" --token "$token" --records "$records" --rate "$rate" \
    --connections 2 --probe-every 100 --postgres "$dburl" | grep -E "records/min|freshness|PostgreSQL|failures"
  kill "$srv"; wait "$srv" || true; srv=
done
echo "== PostgreSQL alone: the same rows COPYed again into empty tables" >&2
psql "$dburl" -c "\\copy medstream.phi_records TO '$base/records.copy'" \
  -c "\\copy medstream.phi_patient_versions TO '$base/versions.copy'" \
  -c "CREATE TABLE alone_records (LIKE medstream.phi_records INCLUDING ALL)" \
  -c "CREATE TABLE alone_versions (LIKE medstream.phi_patient_versions INCLUDING ALL)"
chmod 644 "$base"/*.copy
n=$(psql -At "$dburl" -c "SELECT count(*) FROM medstream.phi_records")
t0=$(date +%s.%N)
psql "$dburl" -c "\\copy alone_records FROM '$base/records.copy'"
t1=$(date +%s.%N)
psql "$dburl" -c "\\copy alone_versions FROM '$base/versions.copy'"
t2=$(date +%s.%N)
python3 - "$n" "$t0" "$t1" "$t2" <<'PY'
import sys
n, t0, t1, t2 = int(sys.argv[1]), *map(float, sys.argv[2:])
print("PostgreSQL alone, %d rows of 20 KB: phi_records %.0f rows/min; with phi_patient_versions too %.0f records/min"
      % (n, n * 60 / (t1 - t0), n * 60 / (t2 - t0)))
PY

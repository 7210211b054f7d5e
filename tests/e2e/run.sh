#!/usr/bin/env bash
# Runs medstream's end-to-end tests, each file against real servers (build/medstream, or
# $MEDSTREAM_BIN): the API contract, CSV over HTTP, the OpenAPI document, auth and accounts, the command line (--help,
# --config, the option reference), issue 9's trust fixes, TLS, the HTTP edge's limits, Kafka, PostgreSQL,
# kill -9 crash safety, a full disk, the data directory lock, operations (access log, JSON log lines, the
# metrics listener), backup, import, the Parquet writer (files read back by pyarrow and DuckDB), exports and the
# continuous lake (serve --lake), the rolling-window counters and parent/child records, the public transforms
# (issue 15: test_privacy.py), a real Kafka broker (test_real_broker.py; several nodes in one group:
# test_cluster_group.py; `import --kafka`: test_import_kafka.py), the console (in Debian's
# Chromium through Playwright, from build/venv). Prints each file's summary and a final combined `N passed, N failed` line;
# exits non-zero if any test failed.
# Usage: tests/e2e/run.sh
set -u
here="$(cd "$(dirname "$0")" && pwd)"
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi

total_pass=0
total_fail=0
total_skip=0
rc=0
summaries=()
for t in test_api.py test_csv.py test_openapi.py test_auth.py test_accounts.py test_cli.py test_trust.py test_tls.py \
         test_http_edge.py test_kafka.py test_postgres.py test_postgres_cluster.py test_crash.py test_disk_full.py test_data_dir.py test_lmdb_faults.py test_ops.py \
         test_backup.py test_import.py test_parquet.py test_export.py test_lake.py test_notify.py test_counters.py \
         test_children.py test_schema_versions.py test_console.py test_erasure.py test_privacy.py test_erasure_sinks.py test_real_broker.py \
         test_cluster_group.py test_cluster.py test_import_kafka.py test_cluster_seed.py; do
    echo "== $t"
    log="$(mktemp)"
    timeout 300 "$PY" "$here/$t" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    summary="$(grep -aE '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" | tail -n 1)"
    rm -f "$log"
    if [ -z "$summary" ]; then
        summary="0 passed, 1 failed"
        echo "$t ended without a summary (exit $status)"
    fi
    p="${summary%% passed*}"
    f="${summary#*passed, }"; f="${f%% failed*}"
    case "$summary" in *skipped) sk="${summary##*failed, }"; total_skip=$((total_skip + ${sk%% skipped})) ;; esac
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    [ "$status" -ne 0 ] && rc=1
    summaries+=("$t: $summary")
done
echo "=="
for s in "${summaries[@]}"; do echo "$s"; done
if [ "$total_skip" -gt 0 ]; then echo "$total_pass passed, $total_fail failed, $total_skip skipped"; else echo "$total_pass passed, $total_fail failed"; fi
[ "$total_fail" -ne 0 ] && rc=1
exit $rc

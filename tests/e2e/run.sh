#!/usr/bin/env bash
# Runs medstream's end-to-end tests, each file against real servers (build/medstream, or
# $MEDSTREAM_BIN): the API contract, CSV over HTTP, the OpenAPI document, auth and accounts, the command line (--help,
# --config, the option reference), issue 9's trust fixes, TLS, the HTTP edge's limits, Kafka, PostgreSQL,
# kill -9 crash safety, a full disk, the data directory lock, operations (access log, JSON log lines, the
# metrics listener), backup, import, the Parquet writer (files read back by pyarrow and DuckDB), exports and the
# continuous lake (serve --lake), the rolling-window counters and parent/child records, the public transforms
# (issue 15: test_privacy.py), a real Kafka broker (test_real_broker.py; several nodes in one group:
# test_cluster_group.py; `import --kafka`: test_import_kafka.py), the console (in Debian's
# Chromium through Playwright, from build/venv).
#
# Files run E2E_JOBS at a time, default 2 (this machine's cores): 9.5-10.5 min against 16.3 one after the
# other (2026-12-02). Side by side, every file starts its own servers on free ports in its own temporary
# directories (the harness checks the server that answers holds the port), and what files share on disk is
# built under a lock (build/venv: harness.venv_python; the Kafka jars: scripts/kafka_broker.sh fetch). A file
# named in `alone` below runs with nothing beside it: test_cluster.py's chaos test waits up to 300 s for
# three nodes to converge and is the one most sensitive to a neighbour's load. The longest files start first
# (the order below: their serial times, longest first), so the short ones fill in behind. Each file's output
# is printed whole when it ends; then each file's summary, in this order, and a final combined
# `N passed, N failed` line; exits non-zero if any test failed. A file is stopped after 600 s (its tests' own
# watchdogs are the first guard; the longest file, test_cluster.py, took 130 s alone). E2E_JOBS=1 runs them
# one after the other.
# Usage: tests/e2e/run.sh
set -u
here="$(cd "$(dirname "$0")" && pwd)"
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
jobs=${E2E_JOBS:-2}
[[ "$jobs" =~ ^[1-9][0-9]?$ ]] || { echo "E2E_JOBS must be 1-99, got '$jobs'" >&2; exit 2; }

files=(test_cluster.py test_crash.py test_export.py test_lake.py test_console.py test_cluster_group.py
       test_schema_versions.py test_postgres.py test_import_kafka.py test_http_edge.py test_kafka.py test_import.py
       test_erasure.py test_notify.py test_accounts.py test_cluster_seed.py test_postgres_cluster.py
       test_real_broker.py test_parquet.py test_counters.py test_erasure_sinks.py test_lmdb_faults.py test_auth.py
       test_ops.py test_backup.py test_trust.py test_data_dir.py test_api.py test_cli.py test_disk_full.py
       test_csv.py test_children.py test_privacy.py test_openapi.py test_tls.py)

for f in "$here"/test_*.py; do  # a new file left out of the list would never run: refuse
    case " ${files[*]} " in *" ${f##*/} "*) ;; *) echo "tests/e2e/run.sh: ${f##*/} is not in its list" >&2; exit 2 ;; esac
done

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

run_file() {  # FILE: its output into $logs/FILE, then "STATUS SECONDS" into $logs/FILE.end
    local t0=$SECONDS status
    timeout 600 "$PY" "$here/$1" > "$logs/$1" 2>&1
    status=$?
    echo "$status $((SECONDS - t0))" > "$logs/$1.end.tmp" && mv "$logs/$1.end.tmp" "$logs/$1.end"
}

total_pass=0; total_fail=0; total_skip=0; rc=0
declare -A summary=() running=()
report() {  # FILE: print its output and add its summary to the totals
    local t=$1 status secs line p f sk
    read -r status secs < "$logs/$t.end"
    echo "== $t (${secs} s)"
    cat "$logs/$t"
    line="$(grep -aE '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$logs/$t" | tail -n 1)"
    if [ -z "$line" ]; then
        line="0 passed, 1 failed"
        echo "$t ended without a summary (exit $status)"
    fi
    p="${line%% passed*}"
    f="${line#*passed, }"; f="${f%% failed*}"
    case "$line" in *skipped) sk="${line##*failed, }"; total_skip=$((total_skip + ${sk%% skipped})) ;; esac
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    [ "$status" -ne 0 ] && rc=1
    summary[$t]="$t: $line (${secs} s)"
}

# Files that run with nothing beside them. test_cluster.py's chaos test (three nodes, one PostgreSQL, kill -9,
# SIGSTOP, a join and a leave) left 33 of 5,000 identities without their records at their owner once,
# beside another file (2026-12-02). The likely cause, a restore that ended at the changelog's last stable
# offset while the frozen node's last transaction could still commit, is fixed in ca29f07 (with a test that
# fails without it); the file still runs alone: its waits were written for a machine of its own.
alone=" test_cluster.py "
next=0
alone_now=""
while [ $next -lt ${#files[@]} ] || [ ${#running[@]} -gt 0 ]; do
    for t in "${!running[@]}"; do
        if [ -f "$logs/$t.end" ]; then report "$t"; unset "running[$t]"; [ "$t" = "$alone_now" ] && alone_now=""; fi
    done
    if [ $next -lt ${#files[@]} ] && [ -z "$alone_now" ]; then
        t=${files[$next]}
        case "$alone" in *" $t "*) solo=1 ;; *) solo=0 ;; esac
        if { [ $solo -eq 1 ] && [ ${#running[@]} -eq 0 ]; } || { [ $solo -eq 0 ] && [ ${#running[@]} -lt "$jobs" ]; }; then
            next=$((next + 1))
            run_file "$t" &
            running[$t]=1
            [ $solo -eq 1 ] && alone_now=$t
            continue
        fi
    fi
    sleep 0.2
done
wait

echo "=="
for t in "${files[@]}"; do echo "${summary[$t]:-$t: did not run}"; done
if [ "$total_skip" -gt 0 ]; then echo "$total_pass passed, $total_fail failed, $total_skip skipped"; else echo "$total_pass passed, $total_fail failed"; fi
[ "$total_fail" -ne 0 ] && rc=1
exit $rc

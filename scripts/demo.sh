#!/usr/bin/env bash
# The main job on the embedded default: a fresh data directory, a server, a short benchmark
# (DEMO_RECORDS records of ~20 KB over HTTP), the figures, and a few example queries. Cleans up after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
make -s all
records=${DEMO_RECORDS:-100000}
port=${DEMO_PORT:-18080}
bin=build/medstream
dir=$(mktemp -d /tmp/medstream-demo.XXXXXX)
cleanup() { [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
$bin init "$dir/data" >/dev/null
$bin serve --data "$dir/data" --listen "127.0.0.1:$port" 2>"$dir/server.log" &
srv=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
# log in as the admin that init created (its password is in DATA/admin.password)
token=$(curl -sf -H 'Content-Type: application/json' \
  -d "{\"user\":\"admin\",\"password\":\"$(cat "$dir/data/admin.password")\"}" \
  "http://127.0.0.1:$port/v1/auth/token" | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
echo "== medstream demo: $records records of ~20 KB over HTTP (data in $dir/data)"
$bin bench --url "http://127.0.0.1:$port" --records "$records" --run-id demo --token "$token"
echo
echo "== a few queries"
auth="Authorization: Bearer $token"
q() { echo "\$ curl -H 'Authorization: Bearer …' $1"; curl -s -H "$auth" "http://127.0.0.1:$port$1" | cut -c1-400; echo; }
rec=$(curl -s -H "$auth" "http://127.0.0.1:$port/v1/public/records?limit=1" | python3 -c 'import sys,json; print(json.load(sys.stdin)["records"][0]["record_id"])')
pid=$(curl -s -H "$auth" "http://127.0.0.1:$port/v1/records/$rec" | python3 -c 'import sys,json; print(json.load(sys.stdin)["patient_id"])')
q "/v1/records/$rec"
q "/v1/patients/$pid"
q "/v1/patients/$pid/history"
q "/v1/public/patients/$pid"
q "/v1/public/records?type=lab&limit=2"
echo "\$ curl /metrics (excerpt)"
curl -s -H "$auth" "http://127.0.0.1:$port/metrics" | grep -E '^medstream_(records_total|patients|process_peak_rss_bytes|commit_seconds_(sum|count))'

#!/usr/bin/env bash
# What one patient with many records costs (README.md, "A merge reads the newest records it needs"). One server,
# a new data directory, RECORDS (default 1,000,000) records of 200 B sent by `medstream bench` (--repeat-share 0.9
# --seed 1: identities drawn from the records sent before, so the first identity gathers ~1 in 5 of them), then,
# for that identity's patient (the one of record e1-0000000000):
#   - READS reads of its state up to an event time 15 days back (GET /v1/patients/{id}?event_at=...), each one's
#     seconds;
#   - READS first pages of its records (GET /v1/patients/{id}/records?limit=100), each one's seconds;
#   - one new version of its newest record with an event time in 2020 (POST /v1/records), which makes the writer
#     recompute the patient from its other records: the request's seconds and the record bodies the writer read
#     back for recomputes until then (medstream_state_recompute_records_total; the load's own recomputes are in it).
# CHECKOUT=DIR runs another checkout's server (built), with this one's load generator.
# Usage: [RECORDS=1000000] [READS=7] [CHECKOUT=DIR] scripts/bench_big_patient.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
records=${RECORDS:-1000000}; reads=${READS:-7}; port=${PORT:-18196}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-big-patient}
make -s all
server=${CHECKOUT:-.}/build/medstream
rm -rf "$dir"; "$server" init "$dir" >/dev/null
"$server" serve --data "$dir" --listen "127.0.0.1:$port" 2>/dev/null & srv=$!
trap 'kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.05; done
tok=$(admin_token "$dir" "$port")
url=http://127.0.0.1:$port
H="Authorization: Bearer $tok"
build/medstream bench --url "$url" --records "$records" --size 200 --repeat-share 0.9 --seed 1 --connections 3 \
  --run-id e1 --token "$tok" --json 2>/dev/null | grep '^{' | python3 -c \
  'import json, sys; print("loaded: %d records/min" % json.load(sys.stdin)["records_per_min"])'
pid=$(curl -sf -H "$H" "$url/v1/records/e1-0000000000" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["patient_id"])')
at=$(date -u -d '-15 days' +%Y-%m-%dT%H:%M:%SZ) # halfway through the bench's event times
timed() { # $1: label, $2: path; READS GETs, each one's seconds
  echo -n "$1, s:"
  for _ in $(seq "$reads"); do curl -sf -o /dev/null -w " %{time_total}" -H "$H" "$url$2"; done
  echo
}
timed "event_at reads" "/v1/patients/$pid?event_at=$at"
timed "records pages" "/v1/patients/$pid/records?limit=100"
# its newest record: among those of the last two hours (the bench's event times are up to 30 days before it started)
since=$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M:%SZ)
newest=$(curl -sf -H "$H" "$url/v1/patients/$pid/records?since=$since&limit=1000" | python3 -c '
import json, sys
r = max(json.load(sys.stdin)["records"], key=lambda r: r["ts"])
print(r["record_id"])')
curl -sf -H "$H" "$url/v1/records/$newest" | python3 -c '
import json, sys
r = json.load(sys.stdin)
body = dict(r["fields"], record_id=r["record_id"], type=r["type"], ts="2020-01-01T00:00:00Z")
print(json.dumps(body))' > "$dir/update.ndjson"
curl -sf -o "$dir/update.out" -w "recomputing update, s: %{time_total}\n" -H "$H" \
  -H 'Content-Type: application/x-ndjson' --data-binary "@$dir/update.ndjson" "$url/v1/records"
if ! grep -q '"status":"updated"' "$dir/update.out"; then
  echo "the update was not stored: $(cat "$dir/update.out")" >&2
  exit 1
fi
curl -sf -H "$H" "$url/metrics" | grep -E '^medstream_state_recompute'

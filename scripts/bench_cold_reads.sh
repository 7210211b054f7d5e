#!/usr/bin/env bash
# Point reads of patients whose data is on the disk only (issue 17, item 2: a patient's short values held
# inline in its version, so that a read of them touches no record body). Fills a fresh store with RECORDS
# (default 1,000,000) records of SIZE (default 200) bytes asked of the generator (`medstream bench`, closed
# loop, REPEAT (default 0.82) of them of patients it sent before), collects READS (default 3000) patient ids
# from the public listing, restarts the server (its caches empty) with the page cache dropped (as after a
# reboot: needs root), then reads each patient once (GET /v1/patients/ID, one connection, one read at a
# time, in random order) and prints: the reads' p50, p90 and p99 in ms, and the block device's read requests
# and KiB read per point read (everyone's, while they ran: /sys/dev/block/M:m/stat).
# SPREAD=1 fills instead with records that each carry one field of their patient's (ssn, phone, address,
# favorite_color or a short note, in turn; RECORDS / 5 patients, written by python3 here, in batches of 1,000),
# so that a patient's state holds values from five records, as registration, visits and labs leave it (the
# load generator's records all carry every field, so its patients' states come from one record).
# CHECKOUT=DIR runs another checkout's server (built) with this one's load generator, as bench_flat.sh does,
# so that two commits compare on stores each wrote itself:
#   git worktree add /tmp/base REV && make -C /tmp/base all
#   scripts/bench_cold_reads.sh; CHECKOUT=/tmp/base scripts/bench_cold_reads.sh
# Usage: [RECORDS=1000000] [SIZE=200] [REPEAT=0.82] [READS=3000] [SPREAD=1] [CHECKOUT=DIR] scripts/bench_cold_reads.sh
# Needs ~RECORDS x SIZE x 5 bytes free in BENCH_DIR (default /var/tmp/medstream-bench-cold; deleted).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
records=${RECORDS:-1000000}; size=${SIZE:-200}; reads=${READS:-3000}; port=${PORT:-18196}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-cold}
make -s all
server=${CHECKOUT:-.}/build/medstream
rm -rf "$dir"; "$server" init "$dir" >/dev/null
start() {
  "$server" serve --data "$dir" --listen "127.0.0.1:$port" 2>/dev/null & srv=$!
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.01; done
}
start
tok=$(admin_token "$dir" "$port")
if [ -n "${SPREAD:-}" ]; then
  python3 - "$port" "$tok" "$records" <<'PY'
import http.client, json, sys, time
port, tok, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
kinds = ("ssn", "phone", "address", "favorite_color", "notes")
def value(kind, p, i):
    return {"ssn": "%03d-%02d-%04d" % (p % 899 + 1, p % 99 + 1, p % 9999),
            "phone": "+1-555-%03d-%04d" % (p % 1000, i % 10000),
            "address": "%d Elm Street, Springfield, IL %05d" % (p % 9000 + 1, 60000 + p % 1000),
            "favorite_color": ("red", "blue", "green", "gray")[p % 4],
            "notes": "seen %d, stable" % i}[kind]
t0, patients = time.time(), max(1, n // 5)
for start in range(0, n, 1000):
    lines = []
    for i in range(start, min(n, start + 1000)):
        p, kind = i % patients, kinds[(i // patients) % 5]
        lines.append(json.dumps({"record_id": "spread-%d" % i, "name": "Pat Spread %d" % p, "dob": "1970-01-01",
                                 "type": "visit", "ts": "2026-01-01T00:00:%02dZ" % (i // patients % 60),
                                 kind: value(kind, p, i)}))
    c.request("POST", "/v1/records", body="\n".join(lines),
              headers={"Authorization": "Bearer " + tok, "Content-Type": "application/x-ndjson"})
    r = c.getresponse(); body = r.read()
    if r.status != 200 or json.loads(body)["errors"]: sys.exit("fill: %d %s" % (r.status, body[:200]))
print("filled: %d records of one field each, %d patients, %.0f records/min" % (n, patients, n / (time.time() - t0) * 60))
PY
else
  build/medstream bench --url "http://127.0.0.1:$port" --records "$records" --size "$size" --connections 3 \
    --repeat-share "${REPEAT:-0.82}" --read-rate 0 --run-id cold --token "$tok" --json 2>/dev/null | grep '^{' |
    python3 -c 'import sys,json; j=json.load(sys.stdin); print("filled: %d records, %.0f records/min" % (j["records_sent"], j["records_per_min"]))'
fi
ids=$(mktemp)
python3 - "$port" "$tok" "$reads" > "$ids" <<'PY'
import http.client, json, random, sys, urllib.parse
port, tok, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
seen, cursor = set(), None
while True:  # every patient id of the public listing, then a random sample of them
    q = {"limit": "1000"}
    if cursor: q["cursor"] = cursor
    c.request("GET", "/v1/public/records?" + urllib.parse.urlencode(q), headers={"Authorization": "Bearer " + tok})
    j = json.loads(c.getresponse().read())
    seen.update(r["patient_id"] for r in j["records"])
    cursor = j.get("next_cursor")
    if not cursor or not j["records"]: break
ids = sorted(seen)
random.Random(7).shuffle(ids)
print("\n".join(ids[:want]))
PY
kill "$srv"; wait "$srv" || true
[ -w /proc/sys/vm/drop_caches ] || { echo "bench_cold_reads.sh: dropping the page cache needs root" >&2; exit 1; }
drop_cache
start
tok=$(admin_token "$dir" "$port")
devstat=/sys/dev/block/$(stat -c '%Hd:%Ld' "$dir")/stat
python3 - "$port" "$tok" "$ids" "$devstat" <<'PY'
import http.client, sys, time
port, tok, path, devstat = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ids = open(path).read().split()
c = http.client.HTTPConnection("127.0.0.1", port)
dev = lambda: [int(x) for x in open(devstat).read().split()]
d0, ms = dev(), []
for pid in ids:
    t = time.perf_counter()
    c.request("GET", "/v1/patients/" + pid, headers={"Authorization": "Bearer " + tok})
    r = c.getresponse(); r.read()
    ms.append((time.perf_counter() - t) * 1e3)
    if r.status != 200: sys.exit("GET /v1/patients/%s: %d" % (pid, r.status))
d1 = dev()
ms.sort()
q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
n = len(ms)
print("cold point reads: %d, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms; device reads %.2f and %.1f KiB a point read"
      % (n, q(0.5), q(0.9), q(0.99), (d1[0] - d0[0]) / n, (d1[2] - d0[2]) * 512 / 1024 / n))
PY
rm -f "$ids"
kill "$srv"; wait "$srv" || true
rm -rf "$dir"

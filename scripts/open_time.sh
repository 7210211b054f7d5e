#!/bin/bash
# Time a store's open: `serve` started on DIR until /healthz answers, and the server's own breakdown of the
# open (its serve.store_open line: the patient log's heads and replay, the keys file, the identity index).
# cold drops the page cache first (as after a reboot; needs root), warm does not.
# Usage: scripts/open_time.sh BINARY DIR cold|warm [PORT]
#   e.g. build/medstream preload /var/tmp/p10m --patients 10000000
#        for m in cold warm; do scripts/open_time.sh build/medstream /var/tmp/p10m $m; done
set -euo pipefail
bin=$1 dir=$2 mode=$3 port=${4:-18499}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ "$mode" = cold ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
fi
t0=$(date +%s.%N)
"$bin" serve --data "$dir" --listen "127.0.0.1:$port" 2>"$log" &
pid=$!
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "serve exited: $(tail -3 "$log")" >&2; exit 1; }
    sleep 0.01
done
t1=$(date +%s.%N)
kill "$pid"
wait "$pid" || true
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
echo "$mode until /healthz $secs s; $(grep -o 'store opened in .*' "$log")"

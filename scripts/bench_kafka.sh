#!/usr/bin/env bash
# The benchmark through Kafka: RUNS runs (default 3), each on a fresh data directory and a fresh mock
# cluster (build/kafka_mock: librdkafka's mock brokers, the real protocol on loopback, on the same
# machine) with a topic of PARTITIONS partitions (default 64); `medstream serve` consumes it and
# `medstream bench --kafka-brokers` produces RECORDS records (default 200,000) of SIZE bytes (default
# 20480) at RATE records/min (default 1,000,000; 0 = as fast as the producer goes). Then the medians.
# The mock keeps only ~5 MiB per partition: a consumer that falls further behind than that loses
# messages *in the mock*, which the script reports as "lost in the mock" (produced - stored).
# Usage: [PARTITIONS=64] [RATE=1000000] [SIZE=20480] [BATCH=1000] [READ_RATE=200] scripts/bench_kafka.sh [RUNS] [RECORDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
runs=${1:-3}; records=${2:-200000}; port=${PORT:-18198}
dir=${BENCH_DIR:-/var/tmp/medstream-bench-kafka}
make -s all build/kafka_mock
out=$(mktemp)
srv=
cleanup() { if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; fi; rm -f "$out" "$out.run"; }
trap cleanup EXIT
for i in $(seq "$runs"); do
  rm -rf "$dir"; build/medstream init "$dir" >/dev/null
  coproc MOCK { exec build/kafka_mock "records:${PARTITIONS:-64}" records.dlq:1; }
  read -r bootstrap <&"${MOCK[0]}"
  build/medstream serve --data "$dir" --listen "127.0.0.1:$port" --kafka-brokers "$bootstrap" \
    --kafka-topic records --kafka-group bench --kafka-batch "${BATCH:-1000}" ${SERVE_ARGS:-} 2>${SERVE_LOG:-/dev/null} & srv=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "== run $i (bootstrap $bootstrap)" >&2
  token=$(admin_token "$dir" "$port")
  build/medstream bench --url "http://127.0.0.1:$port" --kafka-brokers "$bootstrap" --kafka-topic records \
    --records "$records" --size "${SIZE:-20480}" --rate "${RATE:-1000000}" --run-id "kafka$i" \
    --read-rate "${READ_RATE:-200}" \
    --token "$token" --json > "$out.run" || true
  grep -v '^{' "$out.run" >&2; grep '^{' "$out.run" >> "$out" || true; rm -f "$out.run"
  sleep 5 # let the consumer drain what it still can
  consumed=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" |
    awk '/^medstream_kafka_messages_total/ {s+=$2} END {print s+0}')
  echo "  consumed from Kafka: $consumed of $((records + 1)) produced (with the warm-up records)" >&2
  kill "$srv"; wait "$srv" || true; srv=
  exec {MOCK[1]}>&-; wait "$MOCK_PID" 2>/dev/null || true
done
rm -rf "$dir"
python3 scripts/medians.py "$out"
rm -f "$out"

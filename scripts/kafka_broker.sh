#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft mode: one JVM that is both broker and controller) on 127.0.0.1, for the
# tests and benchmarks of issue 16. Its jars come from Maven Central (tools/kafka/pom.xml: kafka_2.13
# KAFKA_VERSION and what it needs, fetched by Maven into KAFKA_CACHE and kept between runs); Java 17.
#   scripts/kafka_broker.sh fetch                 the jars, once (apt-get installs maven when missing)
#   scripts/kafka_broker.sh start DIR PORT [CPORT] format DIR (a fresh log directory) and start a broker on
#                                                 PORT (its controller on CPORT, default PORT+1); prints its
#                                                 pid; waits until the port accepts connections (at most 60 s)
#   scripts/kafka_broker.sh stop DIR              stop the broker started on DIR (SIGTERM, then SIGKILL)
# Env: KAFKA_CACHE (default ~/.cache/medstream/kafka-$KAFKA_VERSION), KAFKA_HEAP (default 384m).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=${KAFKA_VERSION:-4.1.1}
cache=${KAFKA_CACHE:-$HOME/.cache/medstream/kafka-$version}
cmd=${1:-}

fetch() {
  if [ -f "$cache/.complete" ]; then return; fi
  mkdir -p "$(dirname "$cache")"
  exec 9> "$cache.lock"  # tests/e2e/run.sh runs test files side by side: one fetch at a time
  flock 9
  if [ -f "$cache/.complete" ]; then exec 9>&-; return; fi
  command -v mvn >/dev/null || { apt-get update -qq && apt-get install -y -qq maven >/dev/null; }
  command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
  mkdir -p "$cache"
  sed "s/@KAFKA_VERSION@/$version/" "$here/tools/kafka/pom.xml" > "$cache/pom.xml"
  (cd "$cache" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory="$cache/libs" -DincludeScope=runtime)
  touch "$cache/.complete"
  exec 9>&-
}

# Whether process $1 holds the listening socket on port $2: /proc/net/tcp{,6} give the socket's inode
# (state 0A is LISTEN), the process's fd links name it.
listens() {
  local pid=$1 hex inode
  hex=$(printf ':%04X' "$2")
  for inode in $(awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
                   /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    for fd in /proc/"$pid"/fd/*; do
      [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
    done
  done
  return 1
}

case "$cmd" in
fetch) fetch ;;
start)
  dir=${2:?DIR}; port=${3:?PORT}; cport=${4:-$((port + 1))}
  fetch
  rm -rf "$dir"; mkdir -p "$dir/log"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/log
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  cp="$cache/libs/*"
  id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
  java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" > "$dir/format.out" 2>&1
  java -Xmx"${KAFKA_HEAP:-384m}" -Xms128m -cp "$cp" kafka.Kafka "$dir/server.properties" > "$dir/broker.out" 2>&1 &
  echo $! > "$dir/broker.pid"
  for _ in $(seq 600); do
    # the port answers, and it is this broker's (another test's server may have taken the port first)
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && listens "$(cat "$dir/broker.pid")" "$port"; then
      cat "$dir/broker.pid"; exit 0
    fi
    kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null || { echo "kafka_broker: the broker exited" >&2; tail -20 "$dir/broker.out" >&2; exit 1; }
    sleep 0.1
  done
  echo "kafka_broker: port $port did not open within 60 s" >&2; exit 1 ;;
stop)
  dir=${2:?DIR}; pid=$(cat "$dir/broker.pid" 2>/dev/null || true)
  [ -n "$pid" ] || exit 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true ;;
*) sed -n '2,12p' "$0"; exit 2 ;;
esac

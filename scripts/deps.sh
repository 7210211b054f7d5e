#!/usr/bin/env bash
# Installs the Debian packages medstream needs to build, test and demo, when any is missing.
# Used by `make demo`, `make test` (via the README's commands) and .ci/run.
set -eu
pkgs=(build-essential pkg-config liblmdb-dev lmdb-utils libmicrohttpd-dev libssl-dev libutf8proc-dev libxxhash-dev
      zlib1g-dev libzstd-dev libsnappy-dev libargon2-dev libcmocka-dev clang libclang-rt-14-dev python3 curl openssl
      python3-venv librdkafka-dev python3-confluent-kafka python3-xxhash kcat
      libpq-dev postgresql-15 postgresql-15-periods postgresql-15-pgaudit python3-psycopg2
      libhyperscan-dev chromium
      openjdk-17-jre-headless maven time)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

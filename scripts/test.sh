#!/usr/bin/env bash
# All the tests from a fresh Debian machine: installs what is missing, builds with ASan+UBSan, runs the
# unit tests and the end-to-end tests over real HTTP. The last line is "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
make -j2 test

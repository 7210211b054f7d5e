# bench_lib.sh - what the benchmark scripts (scripts/bench_*.sh) share; sourced, not run.
#   drop_cache                      write back and drop the page cache (when this user may), so that the
#                                   next command reads its input from disk
#   admin_token DIR PORT            prints a token of DIR's admin (its admin.password) from the server on PORT
#   duckdb_python                   prints the python of a virtual environment holding DuckDB from PyPI
#                                   (BENCH_VENV, default /var/tmp/medstream-bench-venv, kept between
#                                   runs), or nothing when it cannot be installed
#   run_cold NAME LABEL DIR CMD...  drop_cache (unless BENCH_CACHE=warm: then the inputs stay in the page
#                                   cache, as a server's freshly written store would be), then CMD under
#                                   scripts/run_measured.py: its figures in DIR/time.json, its output in
#                                   DIR/stdout and DIR/stderr; on failure says "NAME: LABEL failed" with
#                                   the end of its stderr, and exits 1

drop_cache() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }

admin_token() {
  curl -sf -H 'Content-Type: application/json' \
    -d "{\"user\":\"admin\",\"password\":\"$(cat "$1/admin.password")\"}" "http://127.0.0.1:$2/v1/auth/token" |
    python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])'
}

duckdb_python() {
  local v=${BENCH_VENV:-/var/tmp/medstream-bench-venv}
  if [ -x "$v/bin/python" ] || python3 -m venv "$v" >/dev/null 2>&1; then
    if "$v/bin/python" -c 'import duckdb' 2>/dev/null || "$v/bin/pip" install -q duckdb >/dev/null 2>&1; then
      echo "$v/bin/python"
    fi
  fi
}

run_cold() {
  local name=$1 label=$2 d=$3; shift 3
  [ "${BENCH_CACHE:-cold}" = warm ] || drop_cache
  python3 scripts/run_measured.py "$d/time.json" "$@" > "$d/stdout" 2> "$d/stderr" ||
    { echo "$name: $label failed:" >&2; tail -5 "$d/stderr" >&2; exit 1; }
}

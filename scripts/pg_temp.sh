#!/usr/bin/env bash
# pg_temp.sh - a throw-away PostgreSQL 15 on loopback, for tests of medstream's PostgreSQL sink
# (tests/e2e/test_postgres.py) and for trying `medstream serve --postgres URL` by hand.
#
# Usage:
#   scripts/pg_temp.sh start DIR PORT   initdb into DIR if it holds no cluster yet (superuser postgres,
#                                       trust auth on 127.0.0.1 only, no other access), then start the
#                                       server (listen 127.0.0.1:PORT, unix socket in DIR) and wait until
#                                       it answers; prints postgresql://postgres@127.0.0.1:PORT/postgres
#                                       as the only line on stdout. On an existing cluster (after a
#                                       stop) it just starts it again, on PORT.
#   scripts/pg_temp.sh stop DIR         pg_ctl stop -m fast (an outage; the data stays).
#   scripts/pg_temp.sh destroy DIR      stop -m immediate if running, then rm -rf DIR.
#
# PostgreSQL refuses to run as root: when run as root, initdb/pg_ctl run as the `postgres` user (DIR's
# parent must then be reachable by it); otherwise as the current user. The server's log is
# DIR/postgresql.log. Binaries from $PG_BIN (default /usr/lib/postgresql/15/bin). Exits non-zero with a
# message on stderr on any failure, and a failed start never leaves a server running.
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
START_TIMEOUT=60     # seconds for pg_ctl -w start, and again for pg_isready
SERVER_USER=""

die() {
    echo "pg_temp.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '5,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Run a command as the user that owns and runs the server (from /, which that user can always enter).
as_server() {
    if [ -n "$SERVER_USER" ]; then
        (cd / && runuser -u "$SERVER_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

need_bins() {
    local b
    for b in initdb pg_ctl pg_isready postgres; do
        [ -x "$PG_BIN/$b" ] || die "$PG_BIN/$b not found (install postgresql-15, or set PG_BIN)"
    done
}

abs_dir() {
    [ -n "$1" ] || die "DIR must not be empty"
    realpath -m -- "$1"
}

is_cluster() { [ -f "$1/PG_VERSION" ]; }

# 0 if a postmaster is running on the cluster in $1.
is_running() { as_server "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

log_tail() {
    if [ -f "$1/postgresql.log" ]; then
        echo "--- last lines of $1/postgresql.log:" >&2
        tail -n 20 "$1/postgresql.log" >&2 || true
    fi
}

sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

cmd_start() {
    local dir port out
    [ $# -eq 2 ] || usage
    dir="$(abs_dir "$1")"
    port="$2"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "PORT must be 1-65535, got '$port'"
    need_bins

    if ! is_cluster "$dir"; then
        local created=""
        if [ -e "$dir" ]; then
            [ -d "$dir" ] || die "$dir exists and is not a directory"
            [ -z "$(ls -A "$dir")" ] || die "$dir is neither empty nor a PostgreSQL cluster; refusing to initdb into it"
        else
            mkdir -p -- "$dir" || die "cannot create $dir"
            created=1
        fi
        if [ -n "$SERVER_USER" ]; then
            chown "$SERVER_USER:" "$dir" || die "cannot chown $dir to $SERVER_USER"
        fi
        chmod 700 "$dir"
        if ! as_server test -w "$dir" -a -x "$dir"; then
            [ -z "$created" ] || rmdir -- "$dir" 2>/dev/null || true
            die "user ${SERVER_USER:-$(id -un)} cannot use $dir (are its parent directories searchable by it?)"
        fi
        if ! out="$(as_server "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 \
                    --locale=C.UTF-8 2>&1)"; then
            echo "$out" >&2
            [ -z "$created" ] || rm -rf -- "$dir"
            die "initdb into $dir failed"
        fi
        # trust on 127.0.0.1 only: no unix-socket, no ::1, no other hosts
        as_server sh -c 'cat > "$1/pg_hba.conf"' sh "$dir" <<'EOF'
# pg_temp.sh: a throw-away test cluster; trust on 127.0.0.1 only, nothing else.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   trust
EOF
        printf "\n# pg_temp.sh: the settings (port included) are in pg_temp.conf, rewritten on every start\ninclude 'pg_temp.conf'\n" |
            as_server sh -c 'cat >> "$1/postgresql.conf"' sh "$dir"
    fi

    if is_running "$dir"; then
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5; then
            echo "postgresql://postgres@127.0.0.1:$port/postgres"
            return 0
        fi
        die "a server is already running on $dir but not answering on 127.0.0.1:$port; stop it first"
    fi

    # (re)written on every start, so a restart may move the server to another port
    as_server sh -c 'cat > "$1/pg_temp.conf"' sh "$dir" <<EOF
# written by scripts/pg_temp.sh start
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = $(sql_quote "$dir")
fsync = on
shared_buffers = 256MB
max_wal_size = 4GB
EOF

    if ! out="$(as_server "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/postgresql.log" -w -t "$START_TIMEOUT" start 2>&1)"; then
        echo "$out" >&2
        log_tail "$dir"
        as_server "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
        die "the server on $dir did not start (port $port)"
    fi
    local t0=$SECONDS
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; do
        if [ $((SECONDS - t0)) -ge "$START_TIMEOUT" ] || ! is_running "$dir"; then
            log_tail "$dir"
            as_server "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
            die "the server on $dir does not answer on 127.0.0.1:$port"
        fi
        sleep 0.2
    done
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
}

cmd_stop() {
    local dir out
    [ $# -eq 1 ] || usage
    dir="$(abs_dir "$1")"
    need_bins
    is_cluster "$dir" || die "$dir holds no PostgreSQL cluster"
    if ! is_running "$dir"; then
        echo "pg_temp.sh: the server on $dir is not running" >&2
        return 0
    fi
    if ! out="$(as_server "$PG_BIN/pg_ctl" -D "$dir" -m fast -w -t "$START_TIMEOUT" stop 2>&1)"; then
        echo "$out" >&2
        log_tail "$dir"
        die "the server on $dir did not stop"
    fi
}

cmd_destroy() {
    local dir pid
    [ $# -eq 1 ] || usage
    dir="$(abs_dir "$1")"
    [ "$dir" != "/" ] || die "refusing to destroy /"
    [ -e "$dir" ] || return 0
    if ! is_cluster "$dir" && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        die "$dir is not a PostgreSQL cluster; refusing to remove it"
    fi
    if [ -f "$dir/postmaster.pid" ]; then
        as_server "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        # still there (pg_ctl missing or stuck)? the postmaster's pid is the pid file's first line
        pid="$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)"
        if [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] &&
           tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$dir"; then
            kill -9 "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -rf -- "$dir" || die "cannot remove $dir"
}

[ $# -ge 1 ] || usage
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to run the server as"
    SERVER_USER=postgres
fi
cmd="$1"
shift
case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    destroy) cmd_destroy "$@" ;;
    -h | --help | help) usage ;;
    *) echo "pg_temp.sh: unknown command '$cmd'" >&2; usage ;;
esac

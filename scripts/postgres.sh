#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suites and the benchmark.
#
#   eval "$(scripts/postgres.sh start)"   # prints the export line on stdout
#   scripts/postgres.sh stop              # stops it and deletes its data
#   scripts/postgres.sh status
#
# The server listens on a free loopback port with trust authentication and
# fsync off: it holds nothing worth keeping. Its data lives in a temporary
# directory owned by the `postgres` OS user when run as root, because the
# server refuses to run as root. Everything but the export line goes to
# stderr so that `eval` sees only what it should.
set -euo pipefail

STATE_FILE="${NEUROSTASH_PG_STATE:-${TMPDIR:-/tmp}/neurostash-postgres.state}"

log() { echo "postgres.sh: $*" >&2; }

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Runs a server binary as the unprivileged owner of the data directory.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

find_bindir() {
    local major
    if [ -d /usr/lib/postgresql ]; then
        major="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
        if [ -n "$major" ] && [ -x "/usr/lib/postgresql/$major/bin/initdb" ]; then
            echo "/usr/lib/postgresql/$major/bin"
            return 0
        fi
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

install_postgres() {
    if [ "$(id -u)" -ne 0 ]; then
        log "initdb not found and not running as root: install postgresql first"
        exit 1
    fi
    log "initdb not found: installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y postgresql >&2; then
        apt-get update >&2
        apt-get install -y postgresql >&2
    fi
}

print_export() {
    echo "export NEUROSTASH_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$1/postgres"
}

is_running() {
    [ -f "$STATE_FILE" ] || return 1
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    [ -n "${PG_DATA:-}" ] && [ -d "$PG_DATA" ] || return 1
    as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

start() {
    if is_running; then
        log "already running on port $PG_PORT (data in $PG_DATA)"
        print_export "$PG_PORT"
        return 0
    fi

    local bindir
    if ! bindir="$(find_bindir)"; then
        install_postgres
        bindir="$(find_bindir)" || { log "initdb still missing after installing postgresql"; exit 1; }
    fi

    local base data
    base="$(mktemp -d "${TMPDIR:-/tmp}/neurostash-pg.XXXXXX")"
    data="$base/data"
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$base"
    fi
    chmod 700 "$base" "$data"

    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 \
        || as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 >"$base/initdb.log" 2>&1 \
        || { log "initdb failed, see $base/initdb.log"; cat "$base/initdb.log" >&2; exit 1; }

    # A port can be taken between the check and the start: try a few.
    local attempt port started=""
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        if as_owner "$bindir/pg_ctl" -D "$data" -l "$base/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $base -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >&2; then
            started=yes
            break
        fi
        log "start on port $port failed (attempt $attempt)"
    done
    if [ -z "$started" ]; then
        log "could not start postgres, see $base/server.log"
        tail -n 30 "$base/server.log" >&2 || true
        exit 1
    fi

    cat >"$STATE_FILE" <<EOF
PG_BIN='$bindir'
PG_BASE='$base'
PG_DATA='$data'
PG_PORT='$port'
EOF
    log "postgres running on 127.0.0.1:$port (data in $data)"
    print_export "$port"
}

stop() {
    if [ ! -f "$STATE_FILE" ]; then
        log "no state file at $STATE_FILE: nothing to stop"
        return 0
    fi
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    if [ -d "${PG_DATA:-}" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >&2 || log "pg_ctl stop failed for $PG_DATA"
    fi
    case "${PG_BASE:-}" in
        */neurostash-pg.*) rm -rf "$PG_BASE" ;;
        *) log "refusing to delete unexpected directory ${PG_BASE:-<unset>}" ;;
    esac
    rm -f "$STATE_FILE"
    log "stopped"
}

status() {
    if is_running; then
        log "running on port $PG_PORT (data in $PG_DATA)"
        print_export "$PG_PORT"
    else
        log "not running"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac

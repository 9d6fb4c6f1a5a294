#!/usr/bin/env bash
# Runs every test of NeuroStash: installs and starts what the tests need
# (a throwaway PostgreSQL, a Kafka-protocol broker and an S3 server on
# loopback, the Python client the outside-consumer test uses), then the
# whole workspace suite.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -p domain  # extra arguments go to the test runner
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test.sh: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: install a Rust toolchain (1.85 or newer) first"
    exit 1
fi
# the C toolchain builds SQLite (bundled by sqlx) and librdkafka (bundled by
# rdkafka, which links zlib)
if { ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1 || [ ! -f /usr/include/zlib.h ]; } \
    && [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    packages="build-essential pkg-config zlib1g-dev"
    # shellcheck disable=SC2086
    apt-get install -y $packages >&2 || { apt-get update >&2 && apt-get install -y $packages >&2; }
fi

export NEUROSTASH_PG_STATE="${TMPDIR:-/tmp}/neurostash-test-postgres.$$.state"
export NEUROSTASH_KAFKA_STATE="${TMPDIR:-/tmp}/neurostash-test-kafka.$$.state"
export NEUROSTASH_S3_STATE="${TMPDIR:-/tmp}/neurostash-test-s3.$$.state"
trap 'bash scripts/s3.sh stop || true; bash scripts/kafka.sh stop || true; bash scripts/postgres.sh stop || true' EXIT
eval "$(bash scripts/postgres.sh start)"
log "postgres for tests at ${NEUROSTASH_TEST_POSTGRES_URL}"
eval "$(bash scripts/kafka.sh start)"
log "kafka broker for tests at ${NEUROSTASH_TEST_KAFKA_BROKERS}"
eval "$(bash scripts/s3.sh start)"
log "s3 server for tests at ${NEUROSTASH_TEST_S3_ENDPOINT}"
eval "$(bash scripts/python-tools.sh)"

export RUST_BACKTRACE=1
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi

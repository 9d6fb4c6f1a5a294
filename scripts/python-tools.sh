#!/usr/bin/env bash
# Installs the Python packages the test suite's outside consumers use
# (confluent-kafka, which bundles librdkafka, and jsonschema) into a cache
# folder and prints the line that puts them on the path:
#
#   eval "$(bash scripts/python-tools.sh)"   # exports NEUROSTASH_TEST_PYTHONPATH
#
# pip --target keeps the system interpreter untouched (Debian marks it
# "externally managed"); a second run finds the folder and installs nothing.
set -euo pipefail

TOOLS_DIR="${NEUROSTASH_TOOLS_DIR:-${HOME:-/root}/.cache/neurostash-tools}"
PACKAGES=("confluent-kafka==2.16.1" "jsonschema==4.26.0")
TARGET="$TOOLS_DIR/python-$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-12)"

log() { echo "python-tools.sh: $*" >&2; }

if [ ! -d "$TARGET" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            log "python3 with pip not found and not running as root: install python3-pip first"
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y python3 python3-pip >&2 || { apt-get update >&2 && apt-get install -y python3 python3-pip >&2; }
    fi
    mkdir -p "$TOOLS_DIR"
    tmp="$(mktemp -d "$TOOLS_DIR/.python.XXXXXX")"
    log "installing ${PACKAGES[*]} into $TARGET"
    if ! PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
        --disable-pip-version-check --no-input --only-binary=:all: --target "$tmp" "${PACKAGES[@]}" >&2; then
        rm -rf "$tmp"
        log "pip install failed"
        exit 1
    fi
    mv -T "$tmp" "$TARGET" 2>/dev/null || rm -rf "$tmp"
fi
echo "export NEUROSTASH_TEST_PYTHONPATH=$TARGET"

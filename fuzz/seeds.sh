#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds: the sample files of
# scripts/make_fixtures.py, one per format (the corpus is not committed).
#
#   eval "$(bash scripts/python-tools.sh)"; bash fuzz/seeds.sh
#   cargo +nightly fuzz run extract_pdf -- -max_total_time=60
set -euo pipefail
cd "$(dirname "$0")"
samples="$(mktemp -d)"
trap 'rm -rf "$samples"' EXIT
PYTHONPATH="${NEUROSTASH_FIXTURES_PYTHONPATH:?run eval \"\$(bash scripts/python-tools.sh)\" first}" \
    python3 ../scripts/make_fixtures.py "$samples" --pdf-pages 2 >/dev/null
for pair in pdf:pdf docx:docx xlsx:xlsx pptx:pptx html:html csv:csv tsv:csv json:json markdown:md text:md; do
    target="extract_${pair%%:*}"
    mkdir -p "corpus/$target"
    cp "$samples/sample.${pair##*:}" "corpus/$target/sample"
done
printf 'a\tb\n1\t2\n' > corpus/extract_tsv/tabs

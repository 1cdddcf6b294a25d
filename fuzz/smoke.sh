#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bounded-time fuzz run of the decoder (cargo-fuzz on nightly): `fuzz/smoke.sh [SECONDS]`.
# The budget is split between the two targets: `decode` (raw bytes, seeded from tests/data, with a
# dictionary) gets the larger half, `decode_structured` (documents built from a typed tree, checked
# against it) the rest. Fails on any crash, hang (> 5 s per input) or RSS above 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-60}}"
structured=$((seconds / 2))
raw=$((seconds - structured))
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
limits=(-rss_limit_mb=1024 -timeout=5 -print_final_stats=1)

corpus=fuzz/corpus/decode
mkdir -p "$corpus"
cp tests/data/*.xml "$corpus/"
cargo +nightly fuzz run decode "$corpus" -- \
    -dict=fuzz/decode.dict -max_total_time="$raw" -max_len=262144 "${limits[@]}"

# the input is a recipe, not a document: a few KiB already build large trees; no length ramp-up
corpus=fuzz/corpus/decode_structured
mkdir -p "$corpus"
exec cargo +nightly fuzz run decode_structured "$corpus" -- \
    -max_total_time="$structured" -max_len=4096 -len_control=0 "${limits[@]}"

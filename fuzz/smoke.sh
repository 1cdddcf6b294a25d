#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bounded-time fuzz run of the decoder (cargo-fuzz on nightly): `fuzz/smoke.sh [SECONDS]`.
# Seeds from tests/data; fails on any crash, hang (> 5 s per input) or RSS above 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-60}}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
corpus=fuzz/corpus/decode
mkdir -p "$corpus"
cp tests/data/*.xml "$corpus/"
exec cargo +nightly fuzz run decode "$corpus" -- \
    -dict=fuzz/decode.dict -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=1024 -timeout=5 \
    -print_final_stats=1

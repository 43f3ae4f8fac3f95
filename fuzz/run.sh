#!/usr/bin/env bash
# Runs each fuzz target of torsion's framers, endpoint string parser and HTTP parsers for N seconds
# (default 10), on the stable toolchain: libFuzzer's coverage instrumentation works without
# nightly, only the sanitizers need it, hence `--sanitizer none`. Needs cargo-fuzz (`cargo install --locked cargo-fuzz`).
# A target's corpus grows in fuzz/corpus/<target> (not committed), starting from the
# committed seeds in fuzz/seeds/<target>; a crash is saved in fuzz/artifacts/<target> and
# fails the run.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-10}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

cargo fuzz build --sanitizer none
for target in line netstring prefixed endpoint_string http_request_head http_chunked; do
    echo "== fuzzing $target for ${seconds}s =="
    mkdir -p "corpus/$target"
    if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $target failed: the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E '^(Done|#[0-9]+[[:space:]]+DONE)' "$log"
done

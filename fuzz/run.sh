#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time, failing on the first crash, panic,
# timeout or out-of-memory report (libFuzzer exits non-zero; the reproducer is left in
# fuzz/artifacts/<target>/).
#
#   bash fuzz/run.sh [SECONDS]      # seconds per target, default 15
#
# Needs cargo; installs cargo-fuzz from crates.io when it is missing. cargo-fuzz needs nightly
# features, which RUSTC_BOOTSTRAP=1 enables on the stable toolchain. Targets are built with
# debug assertions (integer overflow panics) and AddressSanitizer, cargo-fuzz's default.
set -euo pipefail

SECONDS_EACH=${1:-15}
[[ $SECONDS_EACH =~ ^[0-9]+$ && $SECONDS_EACH -gt 0 ]] || { echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2; }
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

started=$(date +%s)
echo "== cargo fuzz build (all targets)" >&2
cargo fuzz build --debug-assertions
built=$(date +%s)

failed=()
mkdir -p artifacts
for target in $(cargo fuzz list); do
    echo "== $target: ${SECONDS_EACH}s" >&2
    log=artifacts/$target.log
    # -rss_limit_mb: a decoder whose memory grows with a claimed size fails here, not later.
    if cargo fuzz run --debug-assertions "$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -print_final_stats=1 2>"$log"; then
        grep -E "^Done|stat::number_of_executed_units" "$log" >&2 || true
        rm -f "$log"
    else
        tail -n 40 "$log" >&2
        echo "== $target FAILED (full output: fuzz/$log)" >&2
        failed+=("$target")
    fi
done
finished=$(date +%s)
echo "fuzz: build $((built - started))s, runs $((finished - built))s, failed: ${failed[*]:-none}" >&2
[[ ${#failed[@]} -eq 0 ]]

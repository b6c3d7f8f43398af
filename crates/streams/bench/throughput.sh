#!/usr/bin/env bash
# Throughput of sluice-streams (word_count at_least_once and exactly_once_v2, and a stateless map)
# side by side with Quix Streams doing the same against the same `sluice serve`, in one run.
#
#   bash crates/streams/bench/throughput.sh [LINES]     (default 200000 lines of five words)
#
# The broker listens on a free port unless BENCH_LISTEN / BENCH_ADMIN_LISTEN give addresses
# (HOST:PORT); its data goes to a new directory under ${TMPDIR:-/tmp} named streams-bench.*.
#
# Installs quixstreams (pinned) into crates/streams/bench/.venv on first use, builds the release
# broker and examples, starts a broker on a free port with a temporary data dir, and removes
# everything it started when it ends. Commit intervals are the same for both libraries:
# 5 s at-least-once, 1 s exactly-once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
lines="${1:-200000}"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import quixstreams' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'quixstreams==3.28.1'
fi
cd "$root"
cargo build --release -p sluice --bin sluice -p sluice-streams --example word_count --example stateless_map
work="$(mktemp -d -t streams-bench.XXXXXX)"
broker_pid=""
cleanup() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS=0 target/release/sluice serve \
    --listen "${BENCH_LISTEN:-127.0.0.1:0}" --admin-listen "${BENCH_ADMIN_LISTEN:-127.0.0.1:0}" \
    --data-dir "$work/data" > "$work/broker.out" 2> "$work/broker.err" &
broker_pid=$!
for _ in $(seq 1 300); do
    grep -q "listening on" "$work/broker.out" 2>/dev/null && break
    sleep 0.1
done
bootstrap="$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$work/broker.out" | head -1)"
[ -n "$bootstrap" ] || { echo "broker did not start"; cat "$work/broker.err"; exit 1; }
echo "broker at $bootstrap; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$venv/bin/python" "$here/bench.py" "$bootstrap" "$root/target/release/examples" "$venv/bin/python" "$work" "$lines"

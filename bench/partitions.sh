#!/usr/bin/env bash
# Start-up and shutdown of one `sluice serve` hosting many partitions: for each partition count,
# a fresh data dir gets that many partitions (topics of BENCH_PARTITIONS_PER_TOPIC), a few
# records in a few of them, and then the broker is timed through
#   stop (clean)      SIGTERM after the writes, until the process exits
#   start (clean)     spawn until /ready answers 200, after that clean stop
#   stop (idle)       SIGTERM with nothing written since the start
#   start (kill -9)   spawn until /ready, after a kill -9
# and the recovery a start after kill -9 needs is in the broker's "partition logs open" line.
#
# Usage: bash bench/partitions.sh [PARTITIONS...]      (default: 2000 10000)
# Environment: SLUICE_BIN (default target/release/sluice, built if missing), BENCH_PORT (first of
# two ports, default 19292), BENCH_PARTITIONS_PER_TOPIC (100), BENCH_DIR (a temp dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
PORT=${BENCH_PORT:-19292}
ADMIN=$((PORT + 1))
PER_TOPIC=${BENCH_PARTITIONS_PER_TOPIC:-100}
WORK=${BENCH_DIR:-$(mktemp -d -t sluice-partitions.XXXXXX)}
mkdir -p "$WORK"
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(2000 10000)

if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release -p sluice)
fi

PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
    [ -n "${BENCH_DIR:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.2f'; }

# Starts the broker on $1 and waits for /ready; the seconds it took go to $TOOK. (Not run in a
# $(...) subshell: the broker must be this shell's child, for `wait`.)
start() {
    local data=$1 t0
    t0=$(now)
    # The broker reads SLUICE_* variables as configs: this script's own is not one.
    env -u SLUICE_BIN \
        "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --data-dir "$data" \
        >>"$data.stdout" 2>>"$data.log" &
    PID=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/ready"; do
        kill -0 "$PID" 2>/dev/null || { echo "the broker exited; see $data.log" >&2; exit 1; }
        sleep 0.02
    done
    TOOK=$(since "$t0")
}

# SIGTERM and wait for the exit; the seconds it took go to $TOOK.
stop() {
    local t0
    t0=$(now)
    kill -TERM "$PID"
    wait "$PID" || { echo "unclean exit; see the log" >&2; exit 1; }
    PID=""
    TOOK=$(since "$t0")
}

cli() { "$BIN" "$@" --bootstrap-server "127.0.0.1:$PORT" --timeout-ms 120000; }

printf '%-11s %-11s %-12s %-11s %-12s %-14s %s\n' partitions topics "stop clean" "start clean" "stop idle" "start kill -9" "(kill -9 start: partition logs open)"
for n in "${COUNTS[@]}"; do
    data="$WORK/data-$n"
    rm -rf "$data" "$data.log" "$data.stdout"
    topics=$(((n + PER_TOPIC - 1) / PER_TOPIC))
    start "$data"
    for i in $(seq 1 "$topics"); do
        cli topic create "bench-$i" --partitions "$PER_TOPIC" >/dev/null
    done
    # A few partitions get records; most stay as they were created.
    for i in 1 2 3; do
        seq 1 1000 | cli produce "bench-$i" >/dev/null 2>&1
    done
    stop
    stop_clean=$TOOK
    start "$data"
    start_clean=$TOOK
    stop
    stop_idle=$TOOK
    start "$data"
    kill -KILL "$PID"
    wait "$PID" 2>/dev/null || true
    PID=""
    start "$data"
    start_crash=$TOOK
    opened=$(grep -a "partition logs open" "$data.log" | tail -n 1 | sed -E 's/.*(partitions=[0-9]+).*(elapsed_ms=[0-9]+).*/\1 \2/')
    stop
    printf '%-11s %-11s %-12s %-11s %-12s %-14s %s\n' "$n" "$topics" "${stop_clean} s" "${start_clean} s" "${stop_idle} s" "${start_crash} s" "$opened"
done

#!/usr/bin/env bash
# Does a consumer catching up on a large backlog hurt the readers at the tail? Writes a backlog
# topic (5 GB by default), drops the page cache when allowed (root), measures end-to-end latency
# of a tail producer/consumer pair alone, then again while `sluice perf consume` reads the whole
# backlog from its start, and prints both with the backlog's read rate as a markdown table.
#
#   bash bench/catchup.sh [--gb N] [--no-build] [--warm]
#
#   --warm   keep the page cache: the backlog is read from memory (separates the cost of the
#            reader's CPU from that of its disk reads)
#
# The broker is killed on every exit path. Broker and clients share the machine's cores, so the
# figures compare the two phases of one run.
set -euo pipefail

GB=5
BUILD=1
WARM=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gb) GB=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --warm) WARM=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
for tool in jq cargo; do
    command -v "$tool" >/dev/null || { echo "bench/catchup.sh needs $tool" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=$TARGET/release/sluice
log() { echo "[catchup $(date -u +%H:%M:%S)] $*" >&2; }

if [[ $BUILD == 1 ]]; then
    log "building the release binary"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p sluice --bin sluice >&2)
fi

DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluice-catchup.XXXXXX")
BROKER_PID=""
READER_PID=""
cleanup() {
    [[ -n $READER_PID ]] && kill "$READER_PID" 2>/dev/null || true
    [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null || true
    [[ -n $BROKER_PID ]] && wait "$BROKER_PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

"$SLUICE" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$DATA/data" \
    >"$DATA/broker.out" 2>"$DATA/broker.err" &
BROKER_PID=$!
for _ in $(seq 100); do
    grep -q "listening on" "$DATA/broker.out" 2>/dev/null && break
    sleep 0.1
done
BOOTSTRAP=$(grep -o "listening on [0-9.:]*" "$DATA/broker.out" | head -1 | cut -d' ' -f3)
[[ -n $BOOTSTRAP ]] || { echo "broker did not start" >&2; cat "$DATA/broker.err" >&2; exit 1; }
log "broker at $BOOTSTRAP"

RECORDS=$((GB * 1024 * 1024))   # 1 KiB records
log "writing the backlog: $RECORDS records of 1 KiB"
"$SLUICE" perf produce --bootstrap "$BOOTSTRAP" --topic backlog --num-records "$RECORDS" \
    --record-size 1024 --acks 1 --partitions 4 --json >"$DATA/produce.json" 2>/dev/null
sync
if [[ $WARM == 1 ]]; then
    CACHE="kept (--warm: the backlog is read from memory)"
elif echo 1 >/proc/sys/vm/drop_caches 2>/dev/null; then
    CACHE="dropped (the backlog is read from disk)"
else
    CACHE="not dropped (not root: the backlog may still be in the page cache)"
fi
log "page cache $CACHE"

e2e() {
    "$SLUICE" perf end-to-end --bootstrap "$BOOTSTRAP" --topic tail --partitions 1 \
        --throughput 20000 --duration-secs 10 --record-size 100 --linger-ms 0 --json 2>/dev/null
}
log "tail latency alone"
ALONE=$(e2e)
log "tail latency while a consumer reads the backlog from its start"
"$SLUICE" perf consume --bootstrap "$BOOTSTRAP" --topic backlog --messages "$RECORDS" \
    --consumer-property queued.min.messages=1000000 --json >"$DATA/backlog.json" 2>/dev/null &
READER_PID=$!
sleep 1
DURING=$(e2e)
wait "$READER_PID" || true
READER_PID=""

row() {
    echo "$1" | jq -r --arg what "$2" \
        '"| \($what) | \(.p50_latency_ms) | \(.p99_latency_ms) | \(.p999_latency_ms) | \(.max_latency_ms) |"'
}
echo "Backlog: ${GB} GB of 1 KiB records in 4 partitions; page cache $CACHE."
echo "Backlog read: $(jq -r '"\(.mb_per_sec | floor) MB/s (\(.records) records)"' "$DATA/backlog.json" 2>/dev/null || echo 'n/a')."
echo
echo "| tail end-to-end latency, 20 000 records/s of 100 B, ms | p50 | p99 | p99.9 | max |"
echo "| --- | --- | --- | --- | --- |"
row "$ALONE" "alone"
row "$DURING" "while the backlog is read"

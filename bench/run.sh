#!/usr/bin/env bash
# Sluice benchmark matrix: builds the release binary, starts one release broker on free loopback
# ports with a fresh data dir, runs `sluice perf` over a matrix of workloads plus the disk's own
# sequential write bandwidth, and prints a markdown table on stdout (progress goes to stderr).
#
#   bash bench/run.sh [--quick] [--no-build] [--keep-data]
#
#   --quick      fewer records per run (about a minute instead of several)
#   --no-build   use the binary already in $CARGO_TARGET_DIR/release (default target/)
#   --keep-data  leave the temp data dir (its path is printed) instead of deleting it
#
# Needs bash, jq, dd and cargo. The broker is killed on every exit path (trap on EXIT, INT, TERM).
# Broker and clients share the machine's cores, so compare ratios within one run, not absolutes
# across machines (or across runs while something else is compiling).
set -euo pipefail

QUICK=0
BUILD=1
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --keep-data) KEEP=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg" >&2; exit 2 ;;
    esac
done

for tool in jq dd cargo; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=$TARGET/release/sluice

if [[ $QUICK == 1 ]]; then
    SMALL_RECORDS=300000   # 100 B records per matrix cell (split over the producers)
    LARGE_RECORDS=60000    # 1 KiB records per matrix cell
    E2E_SECS=5
    DISCARD_RECORDS=2000000
    DD_MIB=256
else
    SMALL_RECORDS=2000000
    LARGE_RECORDS=500000
    E2E_SECS=15
    DISCARD_RECORDS=10000000
    DD_MIB=1024
fi
E2E_RATE=50000

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }

if [[ $BUILD == 1 ]]; then
    log "building the release binary"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p sluice --bin sluice >&2)
fi
[[ -x $SLUICE ]] || { echo "no binary at $SLUICE (build it or drop --no-build)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
DATA=$WORK/data
OUT=$WORK/out
mkdir -p "$DATA" "$OUT"
BROKER_PID=
PRODUCER_PIDS=()

cleanup() {
    local status=$?
    for pid in "${PRODUCER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -n $BROKER_PID ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        # Bounded wait for a clean exit, then SIGKILL.
        for _ in $(seq 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then
        log "data and outputs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the disk, measured first so the broker's writes do not overlap it -----------------------
# Two ways: O_DIRECT (no page cache, what the device sustains) and through the page cache with
# one fdatasync at the end (what the broker's write + fsync path can hope for).
dd_mib_per_sec() {
    local seconds
    seconds=$(LC_ALL=C dd "$@" 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) print $(i - 1) }')
    rm -f "$DATA/ddtest"
    awk -v mib="$DD_MIB" -v s="$seconds" 'BEGIN { if (s > 0) printf "%.0f", mib / s; else print "?" }'
}
log "disk: dd ${DD_MIB} MiB, oflag=direct"
DD_DIRECT=$(dd_mib_per_sec if=/dev/zero of="$DATA/ddtest" bs=1M count="$DD_MIB" oflag=direct)
log "disk: dd ${DD_MIB} MiB, conv=fdatasync"
DD_FDATASYNC=$(dd_mib_per_sec if=/dev/zero of="$DATA/ddtest" bs=1M count="$DD_MIB" conv=fdatasync)

# --- the broker --------------------------------------------------------------------------------
log "starting the broker on $DATA"
"$SLUICE" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$DATA" \
    >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER_PID=$!
BOOTSTRAP=
for _ in $(seq 300); do
    BOOTSTRAP=$(sed -n 's/.* listening on \([0-9.]*:[0-9]*\) (advertised.*/\1/p' "$WORK/broker.out" | head -n 1)
    [[ -n $BOOTSTRAP ]] && break
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/broker.err" >&2; echo "broker exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n $BOOTSTRAP ]] || { echo "broker did not start within 30 s" >&2; exit 1; }
log "broker $BROKER_PID on $BOOTSTRAP"

perf() { "$SLUICE" perf "$@" --bootstrap-server "$BOOTSTRAP" --json; }

ROWS=()
row() { ROWS+=("| $(IFS='|'; echo "$*" | sed 's/|/ | /g') |"); }
fmt() { jq -r "$1" "$2"; }

# --- produce matrix ----------------------------------------------------------------------------
for size in 100 1024; do
    if [[ $size == 100 ]]; then total=$SMALL_RECORDS; else total=$LARGE_RECORDS; fi
    for partitions in 1 8; do
        for acks in 1 all; do
            for producers in 1 4; do
                topic=bench-s$size-p$partitions-a$acks-n$producers
                "$SLUICE" topic create "$topic" --partitions "$partitions" \
                    --bootstrap-server "$BOOTSTRAP" >/dev/null
                each=$((total / producers))
                log "produce $topic: $producers x $each records"
                PRODUCER_PIDS=()
                for i in $(seq "$producers"); do
                    # The binary itself, not the `perf` function: `$!` must be the client's pid
                    # (a backgrounded function is a subshell, and killing it would orphan the client).
                    "$SLUICE" perf produce --topic "$topic" --num-records "$each" \
                        --record-size "$size" --acks "$acks" --bootstrap-server "$BOOTSTRAP" \
                        --json >"$OUT/$topic.$i.json" 2>"$OUT/$topic.$i.err" &
                    PRODUCER_PIDS+=($!)
                done
                for pid in "${PRODUCER_PIDS[@]}"; do
                    wait "$pid" || { cat "$OUT/$topic".*.err >&2; echo "produce $topic failed" >&2; exit 1; }
                done
                PRODUCER_PIDS=()
                # Records/s and MB/s summed over the concurrent producers; latency of the worst one.
                sum=$(jq -s -r '[ (map(.records_per_sec) | add), (map(.mb_per_sec) | add),
                                  (map(.p50_latency_ms) | max), (map(.p99_latency_ms) | max) ]
                                | "\(.[0] | round)|\(.[1] * 10 | round / 10)|\(.[2])|\(.[3])"' \
                      "$OUT/$topic".*.json)
                IFS='|' read -r rps mbps p50 p99 <<<"$sum"
                row "produce" "$size B" "$partitions" "$acks" "$producers" "$rps" "$mbps" "$p50" "$p99"
            done
        done
    done
done

# --- consume of data already written (acks=1, one producer, so exactly $total records) --------
# librdkafka stops fetching while its local queue holds queued.min.messages (100,000) records or
# queued.max.messages.kbytes (64 MiB), and then waits fetch.queue.backoff.ms (1 s in 2.x) before
# the next fetch: with small records the consumer idles, measuring the client's queue, not the
# broker. So the rows read with a queue large enough for the whole run; one row shows the
# defaults for comparison.
CONSUME_PROPS=(--consumer-property queued.min.messages=10000000
               --consumer-property queued.max.messages.kbytes=2097151)
consume_row() {
    local label=$1 size=$2 partitions=$3 total=$4 file=$5
    shift 5
    local topic=bench-s$size-p$partitions-a1-n1
    log "consume $topic: $total records ($label)"
    perf consume --topic "$topic" --messages "$total" "$@" >"$file" 2>/dev/null
    row "$label" "$size B" "$partitions" "-" "1 consumer" \
        "$(fmt '.records_per_sec | round' "$file")" "$(fmt '.mb_per_sec * 10 | round / 10' "$file")" "-" "-"
}
for size in 100 1024; do
    if [[ $size == 100 ]]; then total=$SMALL_RECORDS; else total=$LARGE_RECORDS; fi
    for partitions in 1 8; do
        consume_row "consume" "$size" "$partitions" "$total" "$OUT/consume-$size-$partitions.json" \
            "${CONSUME_PROPS[@]}"
    done
done
consume_row "consume, librdkafka queue defaults" 100 1 "$SMALL_RECORDS" "$OUT/consume-defaults.json"

# --- end-to-end latency at a fixed rate ----------------------------------------------------------
# librdkafka's default linger.ms (5 ms) first, on 1 and 8 partitions; then linger.ms=0, where the
# broker's own part shows, with acks=1 and acks=all (fsync before the answer).
e2e_row() {
    local partitions=$1 acks=$2 linger=$3
    local name=e2e-p$partitions-a$acks-l$linger file=$OUT/e2e-p$partitions-a$acks-l$linger.json
    local extra=()
    local label="end-to-end at $E2E_RATE/s"
    if [[ $linger != default ]]; then
        extra=(--linger-ms "$linger")
        label="$label, linger.ms=$linger"
    fi
    log "end-to-end: $E2E_RATE records/s for $E2E_SECS s, 100 B, acks=$acks, $partitions partitions, linger $linger"
    perf end-to-end --topic "$name" --partitions "$partitions" --throughput "$E2E_RATE" \
        --duration-secs "$E2E_SECS" --record-size 100 --acks "$acks" "${extra[@]}" >"$file" 2>/dev/null
    row "$label" "100 B" "$partitions" "$acks" "1" \
        "$(fmt '.records_per_sec | round' "$file")" "$(fmt '.mb_per_sec * 10 | round / 10' "$file")" \
        "$(fmt '.p50_latency_ms' "$file")" "$(fmt '.p99_latency_ms' "$file")"
}
e2e_row 1 1 default
e2e_row 8 1 default
e2e_row 1 1 0
e2e_row 1 all 0

# --- the tool's ceiling: the produce loop without a producer -----------------------------------
log "produce --discard: $DISCARD_RECORDS records"
perf produce --discard --topic discard --num-records "$DISCARD_RECORDS" --record-size 100 \
    >"$OUT/discard.json" 2>/dev/null
row "produce --discard (tool ceiling)" "100 B" "-" "-" "1" \
    "$(fmt '.records_per_sec | round' "$OUT/discard.json")" \
    "$(fmt '.mb_per_sec * 10 | round / 10' "$OUT/discard.json")" "-" "-"

row "disk: dd bs=1M count=$DD_MIB oflag=direct" "-" "-" "-" "-" "-" "$DD_DIRECT" "-" "-"
row "disk: dd bs=1M count=$DD_MIB conv=fdatasync" "-" "-" "-" "-" "-" "$DD_FDATASYNC" "-" "-"

# --- the table ---------------------------------------------------------------------------------
mode=full
[[ $QUICK == 1 ]] && mode=quick
echo "Sluice bench ($mode), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "100 B: $SMALL_RECORDS records per produce row, 1 KiB: $LARGE_RECORDS (split over the producers);"
echo "records/s and MB/s (2^20 bytes of values) are summed over concurrent producers, latencies (send to"
echo "delivery report; for end-to-end, send to the consumer receiving it) are the worst producer's."
echo
echo "| workload | record | partitions | acks | producers | records/s | MB/s | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"

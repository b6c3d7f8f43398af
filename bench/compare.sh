#!/usr/bin/env bash
# Compares the produce throughput of two broker binaries in one run: for each round, each broker
# in turn is started on a fresh data dir and `sluice perf produce` (always the client of the
# second binary, so only the broker differs) sends 100 B and 1 KiB records, uncompressed and with
# each codec, acks=1, one partition. Prints a markdown table of records/s: one column per round
# and broker, then the medians and their ratio; then the broker's CPU time per million records
# (from /proc, user + system), which a busy shared machine disturbs far less than records/s.
#
#   bash bench/compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS (2)] [RECORDS_100B (1000000)]
#
# 1 KiB rows send a fifth as many records. Needs jq. Brokers are killed on every exit path.
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n '2,9p' "$0" >&2; exit 2; }
BINARIES=("$1" "$2")
ROUNDS=${3:-2}
SMALL=${4:-1000000}
LARGE=$((SMALL / 5))
CLIENT=$2
command -v jq >/dev/null || { echo "bench/compare.sh needs jq" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-compare.XXXXXX")
BROKER_PID=
cleanup() {
    local status=$?
    if [[ -n $BROKER_PID ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }

start_broker() {
    local bin=$1 data=$WORK/data-$RANDOM
    mkdir -p "$data"
    "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$data" \
        >"$WORK/broker.out" 2>"$WORK/broker.err" &
    BROKER_PID=$!
    BOOTSTRAP=
    for _ in $(seq 300); do
        BOOTSTRAP=$(sed -n 's/.* listening on \([0-9.]*:[0-9]*\) (advertised.*/\1/p' "$WORK/broker.out" | head -n 1)
        [[ -n $BOOTSTRAP ]] && return 0
        sleep 0.1
    done
    cat "$WORK/broker.err" >&2
    echo "broker $bin did not start" >&2
    exit 1
}

# CPU seconds (user + system) the broker process has used so far.
broker_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$BROKER_PID/stat"
}

stop_broker() {
    kill "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    rm -rf "$WORK"/data-*
}

declare -A RESULT CPU
for round in $(seq "$ROUNDS"); do
    for which in 0 1; do
        start_broker "${BINARIES[$which]}"
        log "round $round, broker $which (${BINARIES[$which]}) on $BOOTSTRAP"
        for size in 100 1024; do
            if [[ $size == 100 ]]; then n=$SMALL; else n=$LARGE; fi
            for codec in none gzip snappy lz4 zstd; do
                topic=c-$size-$codec
                cpu_before=$(broker_cpu)
                "$CLIENT" perf produce --topic "$topic" --num-records "$n" --record-size "$size" \
                    --acks 1 --partitions 1 --compression "$codec" --bootstrap-server "$BOOTSTRAP" \
                    --json >"$WORK/out.json" 2>/dev/null
                RESULT[$size-$codec-$which-$round]=$(jq -r '.records_per_sec | round' "$WORK/out.json")
                # Broker CPU per million records: steadier than records/s on a shared machine.
                CPU[$size-$codec-$which-$round]=$(awk -v a="$cpu_before" -v b="$(broker_cpu)" -v n="$n" \
                    'BEGIN { printf "%.2f", (b - a) / n * 1e6 }')
                log "$size B $codec: ${RESULT[$size-$codec-$which-$round]} records/s, broker CPU ${CPU[$size-$codec-$which-$round]} s per million records"
            done
        done
        stop_broker
    done
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
header="| record | codec |"
rule="| --- | --- |"
for which in before after; do
    for round in $(seq "$ROUNDS"); do
        header+=" $which #$round |"
        rule+=" --- |"
    done
done
echo "$header median before | median after | after / before |"
echo "$rule --- | --- | --- |"
for size in 100 1024; do
    for codec in none gzip snappy lz4 zstd; do
        line="| $size B | $codec |"
        medians=()
        for which in 0 1; do
            runs=()
            for round in $(seq "$ROUNDS"); do
                line+=" ${RESULT[$size-$codec-$which-$round]} |"
                runs+=("${RESULT[$size-$codec-$which-$round]}")
            done
            medians+=("$(median "${runs[@]}")")
        done
        ratio=$(awk -v a="${medians[1]}" -v b="${medians[0]}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        echo "$line ${medians[0]} | ${medians[1]} | $ratio |"
    done
done

echo
echo "Broker CPU seconds (user + system) per million records:"
echo
echo "| record | codec | median before | median after | after / before |"
echo "| --- | --- | --- | --- | --- |"
for size in 100 1024; do
    for codec in none gzip snappy lz4 zstd; do
        medians=()
        for which in 0 1; do
            runs=()
            for round in $(seq "$ROUNDS"); do
                runs+=("${CPU[$size-$codec-$which-$round]}")
            done
            medians+=("$(median "${runs[@]}")")
        done
        ratio=$(awk -v a="${medians[1]}" -v b="${medians[0]}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        echo "| $size B | $codec | ${medians[0]} | ${medians[1]} | $ratio |"
    done
done

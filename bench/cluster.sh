#!/usr/bin/env bash
# Replicated acks=all throughput: the same `sluice perf produce` run against one node and against
# a three-node cluster (rf=3, min.insync.replicas=2), all release builds on loopback, fresh data
# dirs. Prints a markdown table on stdout (progress on stderr).
#
#   bash bench/cluster.sh [--no-build] [--records N] [--record-size B]
#
# Every node is killed on every exit path. Nodes and the client share the machine's cores, so
# compare the two rows of one run, not absolutes across machines.
set -euo pipefail

BUILD=1
RECORDS=1000000
SIZE=100
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --records) RECORDS=$2; shift ;;
        --record-size) SIZE=$2; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=$TARGET/release/sluice
log() { echo "[cluster-bench] $*" >&2; }
if [[ $BUILD == 1 ]]; then
    log "building the release binary"
    (cd "$ROOT" && cargo build --release -p sluice >&2)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-cluster-bench.XXXXXX")
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_nodes N: N nodes; sets BOOTSTRAP.
start_nodes() {
    local n=$1 voters="" i
    local -a kafka controller admin
    for i in $(seq "$n"); do
        kafka[i]=$(free_port); controller[i]=$(free_port); admin[i]=$(free_port)
        voters+="${voters:+,}$i@127.0.0.1:${controller[i]}"
    done
    BOOTSTRAP=""
    # Every node of a cluster proves membership with the same secret.
    local secret="$WORK/n$n.secret"
    if [[ $n -gt 1 ]]; then
        "$SLUICE" cluster secret --file "$secret"
    fi
    for i in $(seq "$n"); do
        local args=(serve --listen "127.0.0.1:${kafka[i]}" --admin-listen "127.0.0.1:${admin[i]}"
            --data-dir "$WORK/n$n-$i")
        if [[ $n -gt 1 ]]; then
            args+=(--node-id "$i" --voters "$voters" --controller-listen "127.0.0.1:${controller[i]}"
                --cluster-secret-file "$secret")
        fi
        RUST_LOG=warn "$SLUICE" "${args[@]}" >"$WORK/n$n-$i.out" 2>"$WORK/n$n-$i.err" &
        PIDS+=($!)
        BOOTSTRAP+="${BOOTSTRAP:+,}127.0.0.1:${kafka[i]}"
    done
    for i in $(seq "$n"); do
        for _ in $(seq 300); do
            [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${admin[i]}/ready") == 200 ]] && break
            sleep 0.1
        done
    done
}

stop_nodes() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# run LABEL RF: creates topic `bench` (1 partition, replication factor RF, min.insync.replicas
# min(2, RF)) and produces with acks=all.
run() {
    local label=$1 rf=$2 min=$(( $2 < 2 ? $2 : 2 ))
    "$SLUICE" topic create bench --partitions 1 --replication-factor "$rf" \
        --config "min.insync.replicas=$min" --bootstrap-server "${BOOTSTRAP%%,*}" >&2
    log "$label: $RECORDS records of $SIZE B, acks=all"
    "$SLUICE" perf produce --topic bench --num-records "$RECORDS" --record-size "$SIZE" \
        --acks all --bootstrap-server "$BOOTSTRAP" --json >"$WORK/$rf.json"
    printf '| %s | %s | %s | %s | %s |\n' "$label" \
        "$(jq '.records_per_sec | round' "$WORK/$rf.json")" \
        "$(jq '.mb_per_sec * 10 | round / 10' "$WORK/$rf.json")" \
        "$(jq '.p50_latency_ms * 100 | round / 100' "$WORK/$rf.json")" \
        "$(jq '.p99_latency_ms * 100 | round / 100' "$WORK/$rf.json")"
}

echo "| setup | records/s | MB/s | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- | --- |"
start_nodes 1
run "1 node, rf=1" 1
stop_nodes
start_nodes 3
run "3 nodes, rf=3, min.insync.replicas=2" 3
stop_nodes

#!/usr/bin/env bash
# Clients that never read their responses (issue 13, finding 6): the broker's RSS while 8
# connections pipeline 0.9 MB acks=all produce requests without reading a byte back, and the
# produce and consume throughput of a well-behaved client (`sluice perf`) on the same broker
# without and during the attack, in one run. Prints a markdown table on stdout (progress on
# stderr).
#
#   bash bench/never_reading.sh [--sluice PATH] [--no-build] [--connections N] [--value-bytes B]
#       [--seconds S] [--perf-secs S] [--listen HOST:PORT] [--admin-listen HOST:PORT]
#       [--config FILE] [--read-responses] [--keep-data]
#
#   --sluice PATH        the binary to run (default: $CARGO_TARGET_DIR/release/sluice, built first
#                        unless --no-build); pass an older build to compare before and after
#   --connections N      attacking connections (8)
#   --value-bytes B      record value of each attack request (900000: a 0.9 MB request)
#   --seconds S          how long the attack runs (25)
#   --perf-secs S        how long each `sluice perf produce` runs (8)
#   --listen, --admin-listen   the broker's addresses (127.0.0.1:0 and 127.0.0.1:0: free ports)
#   --config FILE        a broker config file (TOML of Kafka names) to run with, e.g. to compare
#                        `"queued.max.request.bytes" = -1` with the default
#   --read-responses     the control: the same load from clients that read their responses
#   --keep-data          leave the temp dir (broker logs, every tool's JSON output)
#
# Needs bash, jq, python3 (bench/never_reading.py, standard library only) and, unless
# --no-build or --sluice, cargo. The broker and every client are killed on every exit path.
# Broker and clients share the machine's cores: compare the ratios within one run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=
BUILD=1
CONNECTIONS=8
VALUE_BYTES=900000
SECONDS_ATTACK=25
PERF_SECS=8
LISTEN=127.0.0.1:0
ADMIN_LISTEN=127.0.0.1:0
CONFIG=
READ_RESPONSES=
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sluice) SLUICE=$2; BUILD=0; shift ;;
        --no-build) BUILD=0 ;;
        --connections) CONNECTIONS=$2; shift ;;
        --value-bytes) VALUE_BYTES=$2; shift ;;
        --seconds) SECONDS_ATTACK=$2; shift ;;
        --perf-secs) PERF_SECS=$2; shift ;;
        --listen) LISTEN=$2; shift ;;
        --admin-listen) ADMIN_LISTEN=$2; shift ;;
        --config) CONFIG=$2; shift ;;
        --read-responses) READ_RESPONSES=--read-responses ;;
        --keep-data) KEEP=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
SLUICE=${SLUICE:-$TARGET/release/sluice}

for tool in jq python3; do
    command -v "$tool" >/dev/null || { echo "bench/never_reading.sh needs $tool" >&2; exit 2; }
done
log() { echo "[never_reading] $*" >&2; }

if [[ $BUILD == 1 ]]; then
    log "cargo build --release -p sluice --bin sluice"
    (cd "$ROOT" && cargo build --release -p sluice --bin sluice >&2)
fi
[[ -x $SLUICE ]] || { echo "no binary at $SLUICE" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-never-reading.XXXXXX")
BROKER_PID=
ATTACK_PID=
SAMPLER_PID=
cleanup() {
    local status=$?
    for pid in $ATTACK_PID $SAMPLER_PID; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -n $BROKER_PID ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rss_mib() { awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$BROKER_PID/status"; }

log "starting $SLUICE on $WORK/data"
"$SLUICE" serve --listen "$LISTEN" --admin-listen "$ADMIN_LISTEN" --data-dir "$WORK/data" \
    ${CONFIG:+--config "$CONFIG"} >"$WORK/broker.out" 2>"$WORK/broker.err" &
BROKER_PID=$!
BOOTSTRAP=
ADMIN=
for _ in $(seq 300); do
    BOOTSTRAP=$(sed -n 's/.* listening on \([0-9.]*:[0-9]*\) (advertised.*/\1/p' "$WORK/broker.out" | head -n 1)
    ADMIN=$(sed -n 's/^admin listening on \([0-9.]*:[0-9]*\) .*/\1/p' "$WORK/broker.out" | head -n 1)
    [[ -n $BOOTSTRAP && -n $ADMIN ]] && break
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/broker.err" >&2; echo "broker exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n $BOOTSTRAP ]] || { echo "broker did not start within 30 s" >&2; exit 1; }
log "broker $BROKER_PID on $BOOTSTRAP, admin $ADMIN"
for topic in attack perf-before perf-during; do
    "$SLUICE" topic create "$topic" --partitions 1 --bootstrap-server "$BOOTSTRAP" >/dev/null
done
metric() {
    python3 - "$ADMIN" "$1" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
for line in body.splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(line.split()[-1]); break
else:
    print("n/a")
EOF
}

produce() {
    "$SLUICE" perf produce --topic "$1" --record-size 1024 --duration-secs "$PERF_SECS" \
        --acks all --bootstrap-server "$BOOTSTRAP" --json 2>/dev/null >"$WORK/$1.produce.json"
}
consume() {
    local records
    records=$(jq -r .records "$WORK/$1.produce.json")
    "$SLUICE" perf consume --topic "$1" --messages "$records" --bootstrap-server "$BOOTSTRAP" \
        --json 2>/dev/null >"$WORK/$1.consume.json"
}

sleep 2
RSS_IDLE=$(rss_mib)
log "idle RSS ${RSS_IDLE} MiB; produce and consume without the attack"
produce perf-before
consume perf-before
RSS_WORKED=$(rss_mib)

log "attack: $CONNECTIONS connections, ${VALUE_BYTES}-byte acks=all produce requests, never read, ${SECONDS_ATTACK}s"
(while kill -0 "$BROKER_PID" 2>/dev/null; do rss_mib; echo; sleep 0.2; done) >"$WORK/rss.txt" &
SAMPLER_PID=$!
python3 "$ROOT/bench/never_reading.py" "$BOOTSTRAP" attack --connections "$CONNECTIONS" \
    --value-bytes "$VALUE_BYTES" --seconds "$SECONDS_ATTACK" $READ_RESPONSES >"$WORK/attack.json" &
ATTACK_PID=$!
sleep 3
log "produce and consume during the attack"
produce perf-during
consume perf-during
RSS_DURING_CLIENTS=$(rss_mib)
wait "$ATTACK_PID" || true
ATTACK_PID=
RSS_AT_END=$(rss_mib)
sleep 5
RSS_AFTER=$(rss_mib)
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
RSS_PEAK=$(awk 'NF && $1 > max { max = $1 } END { print max + 0 }' "$WORK/rss.txt")
POOL_PEAK=$(metric sluice_request_pool_used_max_bytes)
ATTACK_APPENDED=$(metric 'sluice_log_size_bytes{topic="attack",partition="0"}')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9.e+]+$/) printf "%.0f", b / 1048576; else print b }'; }
P_BEFORE=$(jq -r .mb_per_sec "$WORK/perf-before.produce.json")
P_DURING=$(jq -r .mb_per_sec "$WORK/perf-during.produce.json")
C_BEFORE=$(jq -r .mb_per_sec "$WORK/perf-before.consume.json")
C_DURING=$(jq -r .mb_per_sec "$WORK/perf-during.consume.json")

cat <<EOF
| measure | value |
| --- | --- |
| binary | \`$SLUICE\`${CONFIG:+ with \`$CONFIG\`} |
| attack | $CONNECTIONS connections x $(jq -r .request_bytes "$WORK/attack.json")-byte Produce v3 acks=all requests, ${READ_RESPONSES:-never reading}, ${SECONDS_ATTACK} s |
| attack bytes written into the sockets by the attackers | $(mib "$(jq -r .bytes_written "$WORK/attack.json")") MiB |
| attack bytes appended to the log | $(mib "$ATTACK_APPENDED") MiB |
| RSS idle (topics created) | ${RSS_IDLE} MiB |
| RSS after the produce/consume run without attack | ${RSS_WORKED} MiB |
| RSS peak during the attack (0.2 s samples) | ${RSS_PEAK} MiB |
| RSS at the attack's end / 5 s after it closed | ${RSS_AT_END} / ${RSS_AFTER} MiB |
| request pool peak (\`sluice_request_pool_used_max_bytes\`) | $(mib "$POOL_PEAK") MiB |
| \`perf produce\` 1 KiB acks=all, ${PERF_SECS} s: without / during attack | $(printf '%.1f' "$P_BEFORE") / $(printf '%.1f' "$P_DURING") MB/s (ratio $(ratio "$P_DURING" "$P_BEFORE")) |
| \`perf consume\` of what it produced: without / during attack | $(printf '%.1f' "$C_BEFORE") / $(printf '%.1f' "$C_DURING") MB/s (ratio $(ratio "$C_DURING" "$C_BEFORE")) |
EOF

#!/usr/bin/env bash
# Browser test of the web console: a real `sluice serve` on free loopback ports, seeded with the
# `sluice` CLI (a topic, text/JSON/binary records, a group with committed offsets and lag), then
# headless Chromium driven by playwright-core (tests/console/console.test.mjs).
# Usage: bash tests/console/run.sh
#
# Installs what is missing: Chromium with apt-get (the system browser is used; playwright never
# downloads one) and playwright-core from the npm registry into tests/console/node_modules (pinned
# in package.json). Builds the debug broker (SLUICE_CONSOLE_PROFILE=release for a release one),
# unless SLUICE_CONSOLE_BIN names a sluice binary already built: .ci/run passes the one
# `cargo test --workspace` built, because `cargo build -p sluice` resolves features for one package
# rather than the workspace and would recompile much of the tree.
# Screenshots go to target/console-artifacts/*.png. Ends with `console: N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROFILE=${SLUICE_CONSOLE_PROFILE:-debug}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN=${SLUICE_CONSOLE_BIN:-"$TARGET_DIR/$PROFILE/sluice"}
ARTIFACTS="$ROOT/target/console-artifacts"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
TOPIC=console-demo
GROUP=console-demo-readers
MESSAGE="hello from the console test"

BROKER_PID=""
TRAFFIC_PID=""
WORK=$(mktemp -d -t sluice-console.XXXXXX)

cleanup() {
    local rc=$?
    if [[ -n "$TRAFFIC_PID" ]]; then
        kill -TERM "$TRAFFIC_PID" 2>/dev/null || true
        wait "$TRAFFIC_PID" 2>/dev/null || true
    fi
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { printf '\n=== %s\n' "$*"; }
# Setup failures count as one failed check, so the summary line is always printed.
die() {
    echo "FAIL $1"
    if [[ -s "$WORK/broker.stderr" ]]; then
        echo "--- last 30 lines of broker stderr:"
        tail -n 30 "$WORK/broker.stderr"
    fi
    echo "console: 0 passed, 1 failed"
    exit 1
}

section "chromium"
if [[ ! -x "$CHROMIUM" ]]; then
    [[ $(id -u) -eq 0 ]] || die "chromium is missing and installing it needs root"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y chromium >/dev/null 2>&1 \
        || { timeout 300 apt-get update >/dev/null && timeout 600 apt-get install -y chromium >/dev/null; } \
        || die "apt-get install chromium failed"
fi
"$CHROMIUM" --version 2>/dev/null | head -n 1

section "playwright-core (npm, $HERE/node_modules)"
command -v node >/dev/null 2>&1 || die "node is not installed"
WANT=$(node -e 'console.log(require(process.argv[1]).dependencies["playwright-core"])' "$HERE/package.json")
HAVE=$(node -e 'try { console.log(require(process.argv[1]).version) } catch (_) { console.log("") }' \
    "$HERE/node_modules/playwright-core/package.json")
if [[ "$HAVE" != "$WANT" ]]; then
    # Keeps playwright from fetching browsers on install, whatever the environment says.
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 npm install --no-audit --no-fund \
        --no-package-lock --registry=https://registry.npmjs.org/ >/dev/null) \
        || die "npm install playwright-core@$WANT failed"
fi
echo "playwright-core $WANT"

if [[ -n "${SLUICE_CONSOLE_BIN:-}" ]]; then
    section "build: none, using $BIN"
    [[ -x "$BIN" ]] || die "SLUICE_CONSOLE_BIN=$BIN is not an executable"
else
    section "build: cargo build -p sluice ($PROFILE, target dir $TARGET_DIR)"
    BUILD_FLAGS=()
    [[ "$PROFILE" == release ]] && BUILD_FLAGS=(--release)
    (cd "$ROOT" && timeout 1200 cargo build -p sluice "${BUILD_FLAGS[@]}") || die "cargo build failed"
fi

section "broker"
mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS"/*.png
# This script's own SLUICE_CONSOLE_* variables are not broker configs (serve refuses those).
env -u SLUICE_CONSOLE_BIN -u SLUICE_CONSOLE_PROFILE \
    "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$WORK/data" \
    >"$WORK/broker.stdout" 2>"$WORK/broker.stderr" &
BROKER_PID=$!
KAFKA="" ADMIN=""
for _ in $(seq 1 300); do
    KAFKA=$(sed -nE 's/^sluice [^ ]+ listening on ([0-9.]+:[0-9]+) .*/\1/p' "$WORK/broker.stdout")
    ADMIN=$(sed -nE 's/^admin listening on ([0-9.]+:[0-9]+) .*/\1/p' "$WORK/broker.stdout")
    [[ -n "$KAFKA" && -n "$ADMIN" ]] && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$KAFKA" && -n "$ADMIN" ]] || die "broker start: no 'listening on' lines within 30 s"
echo "kafka $KAFKA, admin http://$ADMIN/"

section "seed: topic, records, group"
cli() { timeout 30 "$BIN" "$@" --bootstrap-server "$KAFKA"; }
{
    cli topic create "$TOPIC" --partitions 3 --config retention.ms=86400000 \
        && cli topic create orders --partitions 6 \
        && printf '%s\n' "$MESSAGE" 'plain text line' '{"order":17,"items":[{"sku":"A-1","qty":2}],"paid":true}' \
            'second text line' '{"event":"signup","user":"ada"}' | cli produce "$TOPIC" --partition 0 \
            --header source=run.sh \
        && printf 'bin\xff\xfe\x00\x01\n' | cli produce "$TOPIC" --partition 0 \
        && printf 'k%s:{"n":%s}\n' 1 1 2 2 3 3 4 4 5 5 6 6 | cli produce "$TOPIC" --key-separator : \
        && seq 1 40 | sed 's/.*/{"order":&,"status":"new"}/' | cli produce orders \
        && cli consume "$TOPIC" --partition 0 --from beginning --count 2 --group "$GROUP" >/dev/null \
        && cli consume orders --from beginning --count 25 --group billing >/dev/null
} >"$WORK/seed.log" 2>&1 || { cat "$WORK/seed.log"; die "seeding data with the sluice CLI failed"; }
# Partition 0 of $TOPIC holds 6 records plus the keyed ones murmur2 put there; the group read 2.
LAG=$(curl -sf --max-time 10 "http://$ADMIN/api/groups/$GROUP" \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).total_lag))') \
    || die "cannot read the group's lag from the API"
[[ "$LAG" =~ ^[0-9]+$ && "$LAG" -ge 4 ]] || die "unexpected lag '$LAG' of group $GROUP"
echo "group $GROUP lag $LAG"

# Light traffic while the browser looks, so the throughput sparkline has something to draw;
# bounded (about 40 s) and stopped on exit.
(
    for i in $(seq 1 80); do
        seq 1 $((20 + (i * 7) % 60)) | sed "s/.*/{\"order\":&,\"batch\":$i}/" | cli produce orders >/dev/null 2>&1 || true
        if ((i % 3 == 0)); then cli consume orders --from beginning --exit-at-end >/dev/null 2>&1 || true; fi
        sleep 0.4
    done
) &
TRAFFIC_PID=$!

section "browser checks"
rc=0
CONSOLE_URL="http://$ADMIN" TOPIC="$TOPIC" MESSAGE="$MESSAGE" GROUP="$GROUP" LAG="$LAG" \
    ARTIFACTS="$ARTIFACTS" CHROMIUM="$CHROMIUM" \
    timeout -k 10 150 node "$HERE/console.test.mjs" || rc=$?
if ((rc == 124 || rc == 137)); then
    echo "FAIL browser checks timed out after 150 s"
    echo "console: 0 passed, 1 failed"
fi
if ((rc != 0)) && [[ -s "$WORK/broker.stderr" ]]; then
    echo "--- last 30 lines of broker stderr:"
    tail -n 30 "$WORK/broker.stderr"
fi
exit "$rc"

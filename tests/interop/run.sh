#!/usr/bin/env bash
# Cross-client interoperability checks: kafka-python, confluent-kafka, aiokafka and kcat against a
# real `sluice serve` on a free loopback port, plus consumer-group and transaction checks for the
# three Python clients. Usage: bash tests/interop/run.sh
#
# Installs the Python clients into tests/interop/.venv (pinned in requirements.txt) and kcat via
# apt-get if missing, builds the broker in release mode, starts it on 127.0.0.1:0 with a temporary
# data dir, runs every check with a timeout, and ends with the line `interop: N passed, M failed`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV="$HERE/.venv"
export PYTHONDONTWRITEBYTECODE=1
PYTHON=${PYTHON:-python3}
CHECK_TIMEOUT=${INTEROP_CHECK_TIMEOUT:-120}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR" # cargo runs from $ROOT below
BIN="$TARGET_DIR/release/sluice"

PASSED=0
FAILED=0
RESULTS=()
BROKER_PID=""
DATA_DIR=""
LOG_DIR=$(mktemp -d -t sluice-interop-logs.XXXXXX)

cleanup() {
    local rc=$?
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
    rm -rf "$LOG_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { printf '\n=== %s\n' "$*"; }

broker_stderr_tail() {
    if [[ -s "$LOG_DIR/broker.stderr" ]]; then
        echo "--- last 50 lines of broker stderr:"
        tail -n 50 "$LOG_DIR/broker.stderr"
        echo "---"
    else
        echo "--- broker stderr is empty"
    fi
}

pass() {
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS $1")
    echo "PASS $1"
}

fail() {
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL $1")
    echo "FAIL $1${2:+: $2}"
    broker_stderr_tail
}

summary_and_exit() {
    section "summary"
    for r in "${RESULTS[@]}"; do echo "$r"; done
    echo "interop: $PASSED passed, $FAILED failed"
    if ((FAILED > 0)); then exit 1; fi
    exit 0
}

# Runs one check under `timeout`, counting it as passed or failed.
run_check() {
    local name=$1
    shift
    section "$name"
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        fail "$name" "not run: the broker is no longer running"
        return 0
    fi
    local rc=0
    timeout -k 10 "$CHECK_TIMEOUT" "$@" || rc=$?
    if ((rc == 0)); then
        pass "$name"
    elif ((rc == 124 || rc == 137)); then
        fail "$name" "timed out after ${CHECK_TIMEOUT}s"
    else
        fail "$name" "exit code $rc"
    fi
}

run_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "not root and no sudo: cannot run $*" >&2
        return 1
    fi
}

# --- Python clients -----------------------------------------------------------------------------
setup_venv() {
    section "python venv ($VENV)"
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" || return 1
    fi
    local stamp="$VENV/.requirements.sha256" want
    want=$( (sha256sum "$HERE/requirements.txt"; "$VENV/bin/python" -V) | sha256sum | cut -d' ' -f1)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$VENV/bin/python" -c 'import kafka, confluent_kafka, aiokafka, snappy, lz4, zstandard' 2>/dev/null; then
        echo "requirements already installed"
        return 0
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --prefer-binary \
        -r "$HERE/requirements.txt" || return 1
    "$VENV/bin/python" -c 'import kafka, confluent_kafka, aiokafka, snappy, lz4, zstandard' || return 1
    echo "$want" >"$stamp"
    "$VENV/bin/python" -m pip freeze 2>/dev/null | grep -Ei '^(kafka-python|confluent-kafka|aiokafka)=='
}

VENV_OK=1
setup_venv || { VENV_OK=0; echo "python venv setup failed"; }

# --- kcat ---------------------------------------------------------------------------------------
install_kcat() {
    section "kcat"
    if command -v kcat >/dev/null 2>&1; then
        echo "kcat already installed: $(command -v kcat)"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! run_as_root apt-get install -y -q kcat; then
        run_as_root apt-get update -q && run_as_root apt-get install -y -q kcat || return 1
    fi
    command -v kcat >/dev/null 2>&1
}

KCAT_OK=1
install_kcat || { KCAT_OK=0; echo "could not install kcat"; }

# --- broker -------------------------------------------------------------------------------------
section "build: cargo build --release -p sluice (target dir $TARGET_DIR)"
if ! (cd "$ROOT" && cargo build --release -p sluice); then
    fail "build"
    summary_and_exit
fi
[[ -x "$BIN" ]] || { fail "build" "no binary at $BIN"; summary_and_exit; }

section "start broker"
DATA_DIR=$(mktemp -d -t sluice-interop-data.XXXXXX)
# The broker's own SLUICE_* variables from the caller's environment would change its config.
UNSET_ARGS=()
while IFS= read -r var; do UNSET_ARGS+=(-u "$var"); done < <(compgen -e | grep '^SLUICE_' || true)
env "${UNSET_ARGS[@]}" NO_COLOR=1 "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
    >"$LOG_DIR/broker.stdout" 2>"$LOG_DIR/broker.stderr" &
BROKER_PID=$!
PORT=""
for _ in $(seq 1 300); do # 30 s
    PORT=$(sed -nE 's/^sluice [^ ]+ listening on 127\.0\.0\.1:([0-9]+) \(advertised 127\.0\.0\.1:([0-9]+)\), data dir .*/\1/p' \
        "$LOG_DIR/broker.stdout" | head -n 1)
    [[ -n "$PORT" ]] && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$PORT" ]]; then
    echo "broker stdout:"
    cat "$LOG_DIR/broker.stdout"
    fail "broker start" "no 'listening on' line within 30 s (pid $BROKER_PID)"
    summary_and_exit
fi
BOOTSTRAP="127.0.0.1:$PORT"
echo "$(head -n 1 "$LOG_DIR/broker.stdout")"
echo "broker pid $BROKER_PID at $BOOTSTRAP"

# --- checks -------------------------------------------------------------------------------------
if ((VENV_OK)); then
    run_check "kafka-python" "$VENV/bin/python" -u "$HERE/check_kafka_python.py" "$BOOTSTRAP"
    run_check "confluent-kafka" "$VENV/bin/python" -u "$HERE/check_confluent.py" "$BOOTSTRAP"
    run_check "aiokafka" "$VENV/bin/python" -u "$HERE/check_aiokafka.py" "$BOOTSTRAP"
    # Consumer groups (subscribe, rebalance, commit, resume): 13-22 s each, mostly waiting out
    # group.initial.rebalance.delay.ms (3 s) every time a group forms from empty.
    run_check "kafka-python groups" "$VENV/bin/python" -u "$HERE/check_groups_kafka_python.py" "$BOOTSTRAP"
    run_check "confluent-kafka groups" "$VENV/bin/python" -u "$HERE/check_groups_confluent.py" "$BOOTSTRAP"
    run_check "aiokafka groups" "$VENV/bin/python" -u "$HERE/check_groups_aiokafka.py" "$BOOTSTRAP"
    # Transactions (commit/abort, read_committed vs read_uncommitted, consume-transform-produce,
    # fencing): 5-15 s each, mostly one group's initial rebalance delay.
    run_check "kafka-python txn" "$VENV/bin/python" -u "$HERE/check_txn_kafka_python.py" "$BOOTSTRAP"
    run_check "confluent-kafka txn" "$VENV/bin/python" -u "$HERE/check_txn_confluent.py" "$BOOTSTRAP"
    run_check "aiokafka txn" "$VENV/bin/python" -u "$HERE/check_txn_aiokafka.py" "$BOOTSTRAP"
    # AddOffsetsToTxn + AddPartitionsToTxn pipelined on one connection, as librdkafka sends them.
    run_check "txn pipelined adds" "$VENV/bin/python" -u "$HERE/check_txn_pipelined.py" "$BOOTSTRAP"
else
    for name in kafka-python confluent-kafka aiokafka "kafka-python groups" "confluent-kafka groups" \
        "aiokafka groups" "kafka-python txn" "confluent-kafka txn" "aiokafka txn" "txn pipelined adds"; do
        section "$name"
        fail "$name" "python venv setup failed"
    done
fi

if ((KCAT_OK)); then
    run_check "kcat" bash "$HERE/check_kcat.sh" "$BOOTSTRAP"
else
    section "kcat"
    fail "kcat" "kcat is not installed and 'apt-get install -y kcat' failed"
fi

# The broker survived every client and shuts down cleanly on SIGTERM.
section "broker clean shutdown"
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    wait "$BROKER_PID" && rc=0 || rc=$?
    BROKER_PID=""
    fail "broker clean shutdown" "broker died during the checks (exit code $rc)"
else
    kill -TERM "$BROKER_PID"
    rc=""
    for _ in $(seq 1 150); do # 15 s
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID" && rc=0 || rc=$?
            break
        fi
        sleep 0.1
    done
    if [[ -z "$rc" ]]; then
        fail "broker clean shutdown" "still running 15 s after SIGTERM"
    elif ((rc != 0)); then
        BROKER_PID=""
        fail "broker clean shutdown" "exit code $rc after SIGTERM"
    else
        BROKER_PID=""
        pass "broker clean shutdown"
    fi
fi

summary_and_exit

#!/usr/bin/env bash
# librdkafka's own regression tests against `sluice serve`: one node, then a three-node cluster.
#
#   bash tests/conformance/librdkafka/run.sh            # the full list (tests.txt)
#   bash tests/conformance/librdkafka/run.sh --quick    # the CI subset (status `quick`)
#   bash tests/conformance/librdkafka/run.sh --help     # every option
#
# Builds librdkafka's test runner from the librdkafka source tree that the rdkafka-sys crate
# carries in cargo's registry (after `cargo fetch`; nothing is downloaded from elsewhere), in a
# build directory outside the repository. It reuses the librdkafka libraries rdkafka-sys already
# built under target/ when they match (else it builds them from the same tree). It installs
# missing C build dependencies with apt-get, builds the release `sluice` binary, starts each
# setup on fresh data dirs, runs every listed test with a bound on its time, and ends with
# `librdkafka conformance: N passed, M failed`. The exit code is non-zero when M > 0. Every
# process it starts is stopped on every exit path. See README.md next to this script.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
LIST="$HERE/tests.txt"

# The Kafka version the runner is told it talks to: Sluice's API ranges are Kafka 4.0's (Produce
# v3+, Fetch v4+, no message format v0/v1), and librdkafka 2.12's own CI runs against 4.0.0.
KAFKA_VERSION_CLAIM=4.0.0
# rdkafka-sys's build flags for this workspace's rdkafka features (libz, ssl, zstd): the
# configure of our copy must match for the reused libraries to fit the test objects.
CONFIGURE_FLAGS=(--enable-ssl --disable-gssapi --disable-curl --enable-zstd --disable-lz4-ext)
APT_PACKAGES=(gcc g++ make pkg-config python3 libssl-dev zlib1g-dev libzstd-dev rapidjson-dev)
ALL_SETUPS=(single single-noautocreate cluster cluster-noautocreate)

usage() {
    cat <<'EOF'
Usage: bash tests/conformance/librdkafka/run.sh [options]

  --quick              run only the tests marked `quick`, with the runner's -Q (the CI subset)
  --gaps               also run tests listed as known Sluice gaps (gap:N); they count like others
  --tests N,N,...      only these test numbers (of those the list runs)
  --setups S,S,...     only these setups: single, single-noautocreate, cluster, cluster-noautocreate
  --timeout S          default bound on one test's run, seconds (900; a list entry may set its own)
  --multiplier X       the runner's test.timeout.multiplier (3: a loaded 2-core machine)
  --lib MODE           librdkafka libraries: auto (reuse rdkafka-sys's from target/ if they match,
                       else build), cargo (reuse or fail), source (always build)
  --rebuild            delete the runner's build dir and build it again
  --no-build           do not run cargo; use the existing release binary (or $SLUICE_BIN)
  --build-dir DIR      where the runner is built (env SLUICE_CONFORMANCE_BUILD_DIR;
                       default ${XDG_CACHE_HOME:-~/.cache}/sluice-conformance)
  --work-dir DIR       data dirs and logs (default: a new temp dir); removed after a run without
                       failures unless --keep
  --keep               keep the work dir
  --port-base N        use ports N..N+8 (default: free ports picked by the kernel)
  --debug CONTEXTS     the runner's TEST_DEBUG (librdkafka debug contexts, e.g. protocol,cgrp)
  --subtests STR       the runner's SUBTESTS: only subtests whose name contains STR (e.g.
                       do_test_DescribeTopics); for triage, with --tests
EOF
}

QUICK=0
GAPS=0
ONLY_TESTS=""
ONLY_SETUPS=""
DEFAULT_TIMEOUT=900
MULTIPLIER=3
LIB_MODE=auto
REBUILD=0
BUILD_SLUICE=1
BUILD_DIR=${SLUICE_CONFORMANCE_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-conformance}
WORK=""
KEEP=0
PORT_BASE=""
TEST_DEBUG_CONTEXTS=""
SUBTESTS_FILTER=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --gaps) GAPS=1 ;;
        --tests) ONLY_TESTS=$2; shift ;;
        --setups) ONLY_SETUPS=$2; shift ;;
        --timeout) DEFAULT_TIMEOUT=$2; shift ;;
        --multiplier) MULTIPLIER=$2; shift ;;
        --lib) LIB_MODE=$2; shift ;;
        --rebuild) REBUILD=1 ;;
        --no-build) BUILD_SLUICE=0 ;;
        --build-dir) BUILD_DIR=$2; shift ;;
        --work-dir) WORK=$2; shift ;;
        --keep) KEEP=1 ;;
        --port-base) PORT_BASE=$2; shift ;;
        --debug) TEST_DEBUG_CONTEXTS=$2; shift ;;
        --subtests) SUBTESTS_FILTER=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$LIB_MODE" in auto | cargo | source) ;; *) echo "--lib: auto, cargo or source" >&2; exit 2 ;; esac
[[ "$DEFAULT_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "--timeout: seconds" >&2; exit 2; }
[[ -z "$PORT_BASE" || "$PORT_BASE" =~ ^[0-9]+$ ]] || { echo "--port-base: a port number" >&2; exit 2; }
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$PWD/$BUILD_DIR"
case "$BUILD_DIR/" in "$ROOT"/*) echo "--build-dir must be outside the repository" >&2; exit 2 ;; esac

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
SLUICE=${SLUICE_BIN:-$TARGET_DIR/release/sluice}

if [[ -z "$WORK" ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-conformance.XXXXXX")
else
    mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
    rm -rf "${WORK:?}/data" "$WORK/logs" "$WORK/runner" "$WORK"/*.conf "$WORK"/*.toml "$WORK/cluster.secret"
fi
LOGS="$WORK/logs"
mkdir -p "$LOGS" "$WORK/runner/tests"

PASSED=0
FAILED=0
RESULTS=()
BROKER_PIDS=()
BROKER_LOGS=()
RUNNER_PID=""

log() { printf '%s\n' "$*"; }
section() { printf '\n=== %s\n' "$*"; }

stop_brokers() {
    local pid
    for pid in "${BROKER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BROKER_PIDS[@]}"; do
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BROKER_PIDS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$RUNNER_PID" ]]; then
        kill -TERM "$RUNNER_PID" 2>/dev/null || true
        wait "$RUNNER_PID" 2>/dev/null || true
    fi
    stop_brokers
    if ((KEEP == 0 && FAILED == 0 && rc == 0)); then
        rm -rf "$WORK"
    else
        echo "logs kept in $LOGS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

record() { # record STATE NAME DETAIL
    if [[ $1 == PASS ]]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
    RESULTS+=("$1 $2${3:+  $3}")
    echo "$1 $2${3:+  $3}"
}

trim() {
    local v=${1#"${1%%[![:space:]]*}"}
    printf '%s' "${v%"${v##*[![:space:]]}"}"
}

# --- the list ---------------------------------------------------------------------------------
# Fields of every line: test, setups, status, options, reason (trimmed).
LIST_TEST=() LIST_SETUPS=() LIST_STATUS=() LIST_OPTIONS=() LIST_REASON=()
read_list() {
    local line n=0 t s st o r
    while IFS= read -r line || [[ -n "$line" ]]; do
        n=$((n + 1))
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        IFS='|' read -r t s st o r <<<"$line"
        t=$(trim "$t") s=$(trim "$s") st=$(trim "$st") o=$(trim "$o") r=$(trim "$r")
        if ! [[ "$t" =~ ^[0-9]{4}$ ]]; then
            echo "$LIST:$n: bad test number '$t'" >&2
            return 1
        fi
        case "$st" in
            quick | run | gap:?* | n/a:?*) ;;
            *) echo "$LIST:$n: bad status '$st'" >&2; return 1 ;;
        esac
        if [[ "$st" == gap:* || "$st" == n/a:* ]] && [[ -z "$r" ]]; then
            echo "$LIST:$n: test $t is left out ($st) without a reason" >&2
            return 1
        fi
        local one
        for one in ${s//,/ }; do
            [[ "$one" == - ]] && continue
            if [[ " ${ALL_SETUPS[*]} " != *" $one "* ]]; then
                echo "$LIST:$n: unknown setup '$one'" >&2
                return 1
            fi
        done
        LIST_TEST+=("$t") LIST_SETUPS+=("$s") LIST_STATUS+=("$st") LIST_OPTIONS+=("$o") LIST_REASON+=("$r")
    done <"$LIST"
}

# Test numbers in the runner's table (tests[] of test.c), manual tests included.
runner_table_numbers() {
    awk '/^struct test tests\[\] = \{/,/^ *\{NULL\}\};/' "$1" |
        grep -oE '_TEST\([0-9]{4}_' | grep -oE '[0-9]{4}' | sort -u
}

# --- the test runner ----------------------------------------------------------------------------
rdkafka_sys_version() {
    awk '$0 == "name = \"rdkafka-sys\"" { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

# The librdkafka source tree of the rdkafka-sys crate in cargo's registry.
find_source() {
    local ver=$1 dir
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$ver"/librdkafka; do
        [[ -f "$dir/tests/test.c" ]] && { echo "$dir"; return 0; }
    done
    return 1
}

install_build_deps() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    echo "installing with apt-get: ${missing[*]}"
    local as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "not root and no sudo: cannot install ${missing[*]}" >&2; return 1; }
        as_root=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! "${as_root[@]}" apt-get install -y -q "${missing[@]}"; then
        "${as_root[@]}" apt-get update -q && "${as_root[@]}" apt-get install -y -q "${missing[@]}"
    fi
}

# A build of rdkafka-sys under target/ whose libraries match our source version and flags.
find_cargo_libs() {
    local want_ver=$1 dir ver gen
    for dir in $(ls -dt "$TARGET_DIR"/{release,debug}/build/rdkafka-sys-*/out 2>/dev/null); do
        [[ -f "$dir/src/librdkafka.so.1" && -f "$dir/src-cpp/librdkafka++.so.1" ]] || continue
        [[ -f "$dir/src/librdkafka.a" && -f "$dir/src-cpp/librdkafka++.a" ]] || continue
        ver=$(grep -oE '^#define RD_KAFKA_VERSION +0x[0-9a-f]+' "$dir/src/rdkafka.h" | awk '{print $3}')
        [[ "$ver" == "$want_ver" ]] || continue
        # Makefile.config records the configure command on the line after "# Generated by:".
        gen=$(grep -A1 -m1 '^# Generated by:' "$dir/Makefile.config" | tail -n 1 | sed -E 's/^# [^ ]*configure//')
        [[ "$(echo $gen)" == "${CONFIGURE_FLAGS[*]}" ]] || continue
        echo "$dir"
        return 0
    done
    return 1
}

RUNNER=""
RUNNER_LIBS=""
LIBRDKAFKA_VERSION=""
build_runner() {
    local sys_ver src tree stamp want lib_from="" cargo_libs="" want_hex started
    sys_ver=$(rdkafka_sys_version)
    [[ -n "$sys_ver" ]] || { echo "no rdkafka-sys in Cargo.lock" >&2; return 1; }
    LIBRDKAFKA_VERSION=${sys_ver#*+}
    if ! src=$(find_source "$sys_ver"); then
        echo "rdkafka-sys $sys_ver is not in cargo's registry: cargo fetch"
        (cd "$ROOT" && cargo fetch) || return 1
        src=$(find_source "$sys_ver") || { echo "no librdkafka tree in rdkafka-sys-$sys_ver" >&2; return 1; }
    fi
    echo "librdkafka $LIBRDKAFKA_VERSION from $src"
    install_build_deps || { echo "could not install ${APT_PACKAGES[*]}" >&2; return 1; }

    want_hex=$(grep -oE '^#define RD_KAFKA_VERSION +0x[0-9a-f]+' "$src/src/rdkafka.h" | awk '{print $3}')
    if [[ "$LIB_MODE" != source ]] && cargo_libs=$(find_cargo_libs "$want_hex"); then
        lib_from="cargo:$cargo_libs:$(stat -c %Y "$cargo_libs/src/librdkafka.so.1")"
    elif [[ "$LIB_MODE" == cargo ]]; then
        echo "--lib cargo: no rdkafka-sys build of $LIBRDKAFKA_VERSION with flags '${CONFIGURE_FLAGS[*]}' under $TARGET_DIR" >&2
        return 1
    else
        lib_from=source
    fi

    tree="$BUILD_DIR/librdkafka-$LIBRDKAFKA_VERSION"
    stamp="$tree/.sluice-conformance-stamp"
    want=$(printf '%s\n' "source=$src" "flags=${CONFIGURE_FLAGS[*]}" "libs=$lib_from" \
        "script=$(sed -n '/^build_runner()/,/^}/p' "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)")
    RUNNER="$tree/tests/test-runner"
    RUNNER_LIBS="$tree/src:$tree/src-cpp"
    if ((REBUILD == 0)) && [[ -x "$RUNNER" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "test runner up to date: $RUNNER"
        return 0
    fi

    started=$(date +%s)
    rm -rf "$tree"
    mkdir -p "$BUILD_DIR"
    cp -a "$src" "$tree" && chmod -R u+w "$tree" || return 1
    echo "configure ${CONFIGURE_FLAGS[*]} (log: $tree/build-configure.log)"
    # mklove reads every ./configure.* file as a module: keep the log name clear of that.
    (cd "$tree" && ./configure "${CONFIGURE_FLAGS[@]}" >"$tree/build-configure.log" 2>&1) || {
        tail -n 30 "$tree/build-configure.log"
        return 1
    }
    if [[ "$lib_from" == cargo:* ]]; then
        echo "librdkafka libraries: reusing rdkafka-sys's build in $cargo_libs"
        cp "$cargo_libs/src/librdkafka.so.1" "$cargo_libs/src/librdkafka.a" "$tree/src/" &&
            ln -sf librdkafka.so.1 "$tree/src/librdkafka.so" &&
            cp "$cargo_libs/src-cpp/librdkafka++.so.1" "$cargo_libs/src-cpp/librdkafka++.a" "$tree/src-cpp/" &&
            ln -sf librdkafka++.so.1 "$tree/src-cpp/librdkafka++.so" || return 1
    else
        echo "librdkafka libraries: make libs (log: $tree/build-libs.log)"
        (cd "$tree" && make -j"$(nproc)" libs >"$tree/build-libs.log" 2>&1) || {
            tail -n 30 "$tree/build-libs.log"
            return 1
        }
    fi
    # The tests themselves need no optimisation: -O0 builds them in about a third of the time.
    echo "test runner: make -C tests build, -O0 (log: $tree/build-tests.log)"
    (cd "$tree/tests" && CFLAGS="-O0 -g0" CXXFLAGS="-O0 -g0" make -j"$(nproc)" build \
        >"$tree/build-tests.log" 2>&1) || {
        tail -n 30 "$tree/build-tests.log"
        return 1
    }
    [[ -x "$RUNNER" ]] || { echo "no $RUNNER after the build" >&2; return 1; }
    echo "$want" >"$stamp"
    echo "test runner built in $(($(date +%s) - started)) s"
}

# --- the brokers --------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# alloc_port: the next port in REPLY (from --port-base, else a free one).
NEXT_PORT=""
alloc_port() {
    if [[ -n "$PORT_BASE" ]]; then
        REPLY=$NEXT_PORT
        NEXT_PORT=$((NEXT_PORT + 1))
    else
        REPLY=$(free_port)
    fi
}

admin_ready() { [[ $(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ready") == 200 ]]; }

BOOTSTRAP=""
SETUP_NODES=0
# start_setup SETUP: fresh data dirs; sets BOOTSTRAP, BROKER_PIDS, BROKER_LOGS.
start_setup() {
    local setup=$1 nodes=1 autocreate=true i voters="" secret=""
    local -a kafka controller admin
    [[ "$setup" == cluster* ]] && nodes=3
    [[ "$setup" == *-noautocreate ]] && autocreate=false
    SETUP_NODES=$nodes
    NEXT_PORT=$PORT_BASE
    for i in $(seq "$nodes"); do
        alloc_port; kafka[i]=$REPLY
        alloc_port; admin[i]=$REPLY
        if ((nodes > 1)); then
            alloc_port; controller[i]=$REPLY
            voters+="${voters:+,}$i@127.0.0.1:${controller[i]}"
        fi
    done
    rm -rf "$WORK/data/$setup"
    mkdir -p "$WORK/data/$setup" "$LOGS/$setup"
    if ((nodes > 1)); then
        secret="$WORK/data/$setup/cluster.secret"
        local out
        out=$("$SLUICE" cluster secret --file "$secret" 2>&1) || { echo "$out"; return 1; }
    fi
    BOOTSTRAP=""
    BROKER_LOGS=()
    for i in $(seq "$nodes"); do
        # librdkafka's trivup clusters: num.partitions 4, replication factor min(brokers, 3),
        # broker.rack RACK<id> (the rack-aware replica selector is issue 19 item 7).
        local conf="$WORK/data/$setup/node$i.toml"
        {
            echo '"num.partitions" = 4'
            echo "\"default.replication.factor\" = $nodes"
            echo "\"auto.create.topics.enable\" = $autocreate"
            ((nodes > 1)) && echo "\"broker.rack\" = \"RACK$i\""
        } >"$conf"
        local args=(serve --listen "127.0.0.1:${kafka[i]}" --admin-listen "127.0.0.1:${admin[i]}"
            --data-dir "$WORK/data/$setup/node$i" --config "$conf")
        if ((nodes > 1)); then
            args+=(--node-id "$i" --voters "$voters" --controller-listen "127.0.0.1:${controller[i]}"
                --cluster-secret-file "$secret")
        fi
        local blog="$LOGS/$setup/broker$i.log"
        # A restart after a crash keeps the crashed node's log.
        [[ -e "$blog" ]] && mv "$blog" "$blog.$(date +%s)"
        env "${UNSET_SLUICE_ENV[@]}" NO_COLOR=1 "$SLUICE" "${args[@]}" >"$blog" 2>&1 &
        BROKER_PIDS+=($!)
        BROKER_LOGS+=("$blog")
        BOOTSTRAP+="${BOOTSTRAP:+,}127.0.0.1:${kafka[i]}"
    done
    local deadline=$((SECONDS + 120)) waiting
    while :; do
        waiting=""
        for i in $(seq "$nodes"); do
            kill -0 "${BROKER_PIDS[i - 1]}" 2>/dev/null || { echo "node $i exited at start:"; tail -n 30 "${BROKER_LOGS[i - 1]}"; return 1; }
            admin_ready "${admin[i]}" || waiting+=" $i"
        done
        [[ -z "$waiting" ]] && break
        ((SECONDS < deadline)) || { echo "not ready after 120 s:$waiting"; return 1; }
        sleep 0.2
    done
    if ((nodes > 1)); then
        # Every broker registered and unfenced, as seen through the first node's Metadata.
        while :; do
            local live
            live=$("$SLUICE" cluster status --bootstrap-server "127.0.0.1:${kafka[1]}" --output json 2>/dev/null |
                python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for b in d.get("brokers", []) if not b.get("fenced")))' 2>/dev/null)
            [[ "$live" == "$nodes" ]] && break
            ((SECONDS < deadline)) || { echo "only ${live:-?} of $nodes brokers live after 120 s"; return 1; }
            sleep 0.5
        done
    fi
    echo "$setup: $nodes node(s) at $BOOTSTRAP (pids ${BROKER_PIDS[*]})"
}

# Stops the setup; the check is that every node is still alive and stops cleanly on SIGTERM.
stop_setup() {
    local setup=$1 i pid rc bad=""
    for i in "${!BROKER_PIDS[@]}"; do
        pid=${BROKER_PIDS[i]}
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"; rc=$?
            bad+=" node $((i + 1)) had exited (code $rc);"
            continue
        fi
        kill -TERM "$pid"
        rc=""
        for _ in $(seq 1 600); do # 60 s: a clean stop with many topics is slow (issue 19 item 9)
            if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; rc=$?; break; fi
            sleep 0.1
        done
        if [[ -z "$rc" ]]; then
            kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
            bad+=" node $((i + 1)) still running 60 s after SIGTERM;"
        elif ((rc != 0)); then
            bad+=" node $((i + 1)) exited with code $rc after SIGTERM;"
        fi
    done
    BROKER_PIDS=()
    # Counted only when it fails: the counts are of tests, and a broker that died or did not
    # stop cleanly must fail the run.
    if [[ -n "$bad" ]]; then
        record FAIL "$setup: clean shutdown" "${bad%;}"
    else
        echo "ok $setup: every node stopped cleanly on SIGTERM"
    fi
}

# A node of the running setup that has died, or a panic in a node's log since line $1s.
broker_trouble() {
    local i
    for i in "${!BROKER_PIDS[@]}"; do
        kill -0 "${BROKER_PIDS[i]}" 2>/dev/null || { echo "node $((i + 1)) died"; return 0; }
        if grep -q 'panicked at' "${BROKER_LOGS[i]}"; then echo "node $((i + 1)) panicked"; return 0; fi
    done
    return 1
}

# --- one test -----------------------------------------------------------------------------------
# Reads the runner's summary table (the last one printed) for entries of test $1. Prints one line
# per entry: NAME STATE DETAIL.
summary_entries() {
    sed -E 's/\x1b\[[0-9;]*m//g' "$2" | awk -v num="$1" -F'|' '
        NF >= 4 {
            name = $2; gsub(/^ +| +$/, "", name)
            if (index(name, num "_") != 1) next
            state = $3; gsub(/ /, "", state)
            detail = $5; for (i = 6; i <= NF; i++) detail = detail "|" $i
            gsub(/^ +| +$/, "", detail)
            last[name] = state "\t" detail
            if (!(name in seen)) { seen[name] = 1; order[++n] = name }
        }
        END { for (i = 1; i <= n; i++) print order[i] "\t" last[order[i]] }'
}

run_test() { # run_test TEST SETUP OPTIONS SUBTESTS
    local t=$1 setup=$2 opts=$3 sub=$4 scenario=default limit=$DEFAULT_TIMEOUT qflag=()
    local unit="$t${sub:+/$sub}"
    [[ "$setup" == *-noautocreate ]] && scenario=noautocreate
    [[ "$opts" =~ timeout=([0-9]+) ]] && limit=${BASH_REMATCH[1]}
    ((QUICK)) || [[ "$opts" == *quick-mode* ]] && qflag=(-Q)
    local tlog="$LOGS/$setup/$t${sub:+-${sub//[^A-Za-z0-9_]/_}}.log" started rc=0
    local trouble
    if trouble=$(broker_trouble); then
        record FAIL "$unit $setup" "not run: $trouble"
        return
    fi
    started=$SECONDS
    # -L: no local (broker-less) entries; -K: not librdkafka's known issues; -p1: one at a time.
    (
        cd "$WORK/runner/tests" &&
            exec env -u CI LD_LIBRARY_PATH="$RUNNER_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
                TESTS="$t" TEST_KAFKA_VERSION="$KAFKA_VERSION_CLAIM" TEST_SCENARIO="$scenario" \
                RDKAFKA_TEST_CONF="$WORK/$setup.conf" BROKERS="$BOOTSTRAP" \
                ${TEST_DEBUG_CONTEXTS:+TEST_DEBUG="$TEST_DEBUG_CONTEXTS"} \
                ${sub:+SUBTESTS="$sub"} \
                timeout -k 20 "$limit" "$RUNNER" -p1 -L -K "${qflag[@]}"
    ) >"$tlog" 2>&1 &
    RUNNER_PID=$!
    wait "$RUNNER_PID" || rc=$?
    RUNNER_PID=""
    local took=$((SECONDS - started)) entries passed=0 bad="" name state detail
    entries=$(summary_entries "$t" "$tlog")
    while IFS=$'\t' read -r name state detail; do
        [[ -z "$name" ]] && continue
        case "$state" in
            PASSED) passed=$((passed + 1)) ;;
            SKIPPED)
                # Entries the flags (local, known issue) or the scenario leave out are not this
                # test's result; a test that skips itself at run time is.
                [[ -z "$detail" || "$detail" == *"negative test flags"* ]] || bad+="; $name skipped: $detail" ;;
            *) bad+="; $name $state${detail:+: $detail}" ;;
        esac
    done <<<"$entries"
    if [[ -z "$entries" ]]; then
        # No summary table: the runner aborted (a failed assertion ends the process). Its
        # "### Test ... failed at ... ###" lines and the message under each say why.
        bad+=$(sed -E 's/\x1b\[[0-9;]*m//g' "$tlog" | awk '
            /^### Test "/ {
                head = $0; sub(/^### Test "/, "", head); sub(/ at [A-Z][a-z][a-z] [A-Z][a-z][a-z] .*$/, "", head)
                sub(/" failed at /, " failed at ", head)
                if ((getline msg) > 0) printf "; %s: %s", head, msg
            }')
    fi
    if ((rc == 124 || rc == 137)); then
        bad="timed out after ${limit} s (run.sh bound)$bad"
    elif ((rc != 0)) && [[ -z "$bad" ]]; then
        bad="test-runner exit code $rc"
    elif ((passed == 0)) && [[ -z "$bad" ]]; then
        bad="no entry of $t ran (is it in this librdkafka's table?)"
    elif [[ -n "$sub" && -z "$bad" ]] &&
        (($(sed -E 's/\x1b\[[0-9;]*m//g' "$tlog" | grep -cF "] [ $sub") == 0)); then
        # A filter that matches no subtest would pass without testing anything.
        bad="no subtest name starts with '$sub'"
    fi
    if trouble=$(broker_trouble); then
        bad="${bad:+${bad#; }; }$trouble during the test"
    fi
    if [[ -z "$bad" ]]; then
        record PASS "$unit $setup" "(${took} s)"
    else
        record FAIL "$unit $setup" "(${took} s) ${bad#; }"
        echo "--- last lines of $tlog:"
        sed -E 's/\x1b\[[0-9;]*m//g' "$tlog" | grep -v '^|' | tail -n 12
        echo "---"
    fi
    if trouble=$(broker_trouble); then
        echo "restarting $setup after: $trouble"
        stop_brokers
        start_setup "$setup" || { record FAIL "$setup: restart" "the setup did not come back"; return 1; }
        write_test_conf "$setup"
    fi
}

write_test_conf() {
    {
        echo "bootstrap.servers=$BOOTSTRAP"
        echo "broker.address.family=v4"
        echo "test.timeout.multiplier=$MULTIPLIER"
    } >"$WORK/$1.conf"
}

# --- main ---------------------------------------------------------------------------------------
UNSET_SLUICE_ENV=()
while IFS= read -r var; do UNSET_SLUICE_ENV+=(-u "$var"); done < <(compgen -e | grep '^SLUICE_' || true)

section "the list ($LIST)"
read_list || { record FAIL "list" "$LIST is malformed"; exit 1; }

section "librdkafka test runner (build dir $BUILD_DIR)"
if ! build_runner; then
    record FAIL "build: librdkafka test runner"
    exit 1
fi
# The runner writes its scratch files (stats, offsets) into its working directory and reads
# ../src/statistics_schema.json (0053): a scratch tests/ next to a link to the tree's src/.
ln -sfn "$(dirname "$(dirname "$RUNNER")")/src" "$WORK/runner/src"
missing=$(comm -23 <(runner_table_numbers "$(dirname "$RUNNER")/test.c") <(printf '%s\n' "${LIST_TEST[@]}" | sort -u))
if [[ -n "$missing" ]]; then
    record FAIL "list" "tests of librdkafka $LIBRDKAFKA_VERSION not in $LIST: $(echo $missing)"
    exit 1
fi

if ((BUILD_SLUICE)); then
    section "cargo build --release -p sluice"
    (cd "$ROOT" && cargo build --release -p sluice) || { record FAIL "build: sluice"; exit 1; }
fi
[[ -x "$SLUICE" ]] || { record FAIL "build: sluice" "no binary at $SLUICE"; exit 1; }

# What runs: one unit per (setup, test, subtests filter) of a runnable line.
declare -A SEEN_UNIT=()
# Fields joined by US (0x1f), not a tab: `read` collapses runs of whitespace IFS characters, so
# an empty subtests field would shift the options into it.
US=$'\x1f'
declare -a PLAN=() # setup, test, subtests, options
NOT_RUN_GAP=0
NOT_APPLICABLE=0
for idx in "${!LIST_TEST[@]}"; do
    t=${LIST_TEST[idx]} st=${LIST_STATUS[idx]} opts=${LIST_OPTIONS[idx]}
    if [[ -n "$ONLY_TESTS" && ",$ONLY_TESTS," != *",$t,"* ]]; then continue; fi
    if [[ "$st" == n/a:* ]]; then
        NOT_APPLICABLE=$((NOT_APPLICABLE + 1))
        continue
    fi
    sub=""
    [[ "$opts" =~ (^|[[:space:]])subtests=([^[:space:]]+) ]] && sub=${BASH_REMATCH[2]}
    [[ -n "$SUBTESTS_FILTER" ]] && sub=$SUBTESTS_FILTER
    for s in ${LIST_SETUPS[idx]//,/ }; do
        [[ "$s" == - ]] && continue
        if [[ -n "$ONLY_SETUPS" && ",$ONLY_SETUPS," != *",$s,"* ]]; then continue; fi
        case "$st" in
            quick) ;;
            run) ((QUICK)) && continue ;;
            gap:*) if ((GAPS == 0 || QUICK)); then NOT_RUN_GAP=$((NOT_RUN_GAP + 1)); continue; fi ;;
        esac
        # With --subtests, lines that differ only in their own filter become one run.
        [[ -n "${SEEN_UNIT["$s $t $sub"]:-}" ]] && continue
        SEEN_UNIT["$s $t $sub"]=1
        PLAN+=("$s$US$t$US$sub$US$opts")
    done
done

for setup in "${ALL_SETUPS[@]}"; do
    units=()
    for p in "${PLAN[@]}"; do [[ "${p%%"$US"*}" == "$setup" ]] && units+=("$p"); done
    ((${#units[@]} == 0)) && continue
    section "$setup: ${#units[@]} runs"
    if ! start_setup "$setup"; then
        stop_brokers
        for u in "${units[@]}"; do
            IFS=$US read -r _ t sub _ <<<"$u"
            record FAIL "$t${sub:+/$sub} $setup" "not run: the setup did not start"
        done
        continue
    fi
    write_test_conf "$setup"
    for i in "${!units[@]}"; do
        IFS=$US read -r _ t sub opts <<<"${units[i]}"
        if ! run_test "$t" "$setup" "$opts" "$sub"; then
            for u in "${units[@]:i+1}"; do
                IFS=$US read -r _ t sub _ <<<"$u"
                record FAIL "$t${sub:+/$sub} $setup" "not run: the setup did not come back"
            done
            break
        fi
    done
    if ((${#BROKER_PIDS[@]})); then stop_setup "$setup"; fi
    errors=$(cat "$LOGS/$setup"/broker*.log 2>/dev/null | grep -c ' ERROR ' || true)
    echo "$setup: $errors ERROR lines in the broker logs ($LOGS/$setup)"
done

section "summary (librdkafka $LIBRDKAFKA_VERSION, told Kafka $KAFKA_VERSION_CLAIM)"
for r in "${RESULTS[@]}"; do echo "$r"; done
echo "left out: $NOT_RUN_GAP (test, setup) pairs of known Sluice gaps$( ((GAPS)) || echo ' (run them with --gaps)'), $NOT_APPLICABLE list lines not applicable (see $LIST)"
echo "librdkafka conformance: $PASSED passed, $FAILED failed"
((FAILED == 0))

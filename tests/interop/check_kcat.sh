#!/usr/bin/env bash
# kcat against Sluice: metadata listing, produce keyed lines with lz4 (topic auto-created),
# consume them back exactly, query offsets. Usage: check_kcat.sh HOST:PORT
# Every step runs even when an earlier one failed; the exit code is 1 if any failed.
set -euo pipefail

BOOTSTRAP=${1:?usage: check_kcat.sh HOST:PORT}
SUFFIX="$$-$(date +%s%N | tail -c 10)"
TOPIC="interop-kcat-lz4-$SUFFIX"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILURES=()

log() { echo "[kcat] $*"; }
bad() {
    FAILURES+=("$*")
    echo "[kcat] FAILED: $*" >&2
}
# show FILE: a file's first lines on stderr, for a failure's context.
show() { sed -n '1,20p' "$1" | sed 's/^/    /' >&2; }

log "$(kcat -V 2>&1 | head -n 1)"

# 1. Metadata: one broker, at the address we connected to.
if kcat -b "$BOOTSTRAP" -m 10 -L >"$WORK/meta0" 2>&1; then
    if ! grep -q ' 1 brokers:' "$WORK/meta0"; then
        show "$WORK/meta0"; bad "kcat -L does not list exactly 1 broker"
    elif ! grep -Eq "broker [0-9]+ at $BOOTSTRAP" "$WORK/meta0"; then
        show "$WORK/meta0"; bad "kcat -L does not list the broker at $BOOTSTRAP"
    else
        log "kcat -L: 1 broker at $BOOTSTRAP"
    fi
else
    show "$WORK/meta0"; bad "kcat -L exited non-zero"
fi

# 2. Produce keyed lines with lz4 into a topic that does not exist yet (auto-created).
{
    for i in $(seq 1 300); do
        printf 'key-%04d:value %d %s\n' "$i" "$i" "$(printf 'x%.0s' $(seq 1 $((i % 17))))"
    done
    printf 'colon-key:value:with:colons\n'
    printf 'unicode:caf\xc3\xa9 \xe2\x98\x83\n'
    printf 'last:the end\n'
} >"$WORK/input"
N=$(wc -l <"$WORK/input")
if kcat -b "$BOOTSTRAP" -P -K: -t "$TOPIC" -z lz4 -X acks=all <"$WORK/input" >"$WORK/produce.out" 2>&1; then
    if grep -qi 'error' "$WORK/produce.out"; then
        show "$WORK/produce.out"; bad "kcat -P reported errors"
    else
        log "produced $N keyed lines with lz4 to $TOPIC"
    fi
else
    show "$WORK/produce.out"; bad "kcat -P -K: -z lz4 exited non-zero"
fi

# 3. The auto-created topic is in the metadata with 1 partition.
if kcat -b "$BOOTSTRAP" -m 10 -L -t "$TOPIC" >"$WORK/meta1" 2>&1 \
    && grep -q "topic \"$TOPIC\" with 1 partitions" "$WORK/meta1"; then
    log "kcat -L -t: $TOPIC auto-created with 1 partition"
else
    show "$WORK/meta1"; bad "auto-created topic $TOPIC not listed with 1 partition by kcat -L -t"
fi

# consume OFFSET FORMAT OUT: kcat -C from OFFSET to the end.
consume() {
    kcat -b "$BOOTSTRAP" -C -t "$TOPIC" -o "$1" -e -q -f "$2" >"$3" 2>"$3.err"
}

# 4. Consume everything back and compare byte for byte: first from the absolute offset 0 (Fetch
#    only), then from `beginning` (a ListOffsets EARLIEST first), as asked of kcat usually.
for start in 0 beginning; do
    if ! consume "$start" '%k:%s\n' "$WORK/out-$start"; then
        show "$WORK/out-$start.err"; bad "kcat -C -o $start exited non-zero"
    elif ! cmp -s "$WORK/input" "$WORK/out-$start"; then
        diff "$WORK/input" "$WORK/out-$start" | head -n 20 >&2 || true
        bad "kcat -C -o $start: consumed lines differ from produced ($(wc -l <"$WORK/out-$start") vs $N lines)"
    else
        log "kcat -C -o $start -f '%k:%s\\n': $N lines back, identical"
    fi
done

# 5. Offsets 0..N-1 on partition 0.
if consume 0 '%p %o\n' "$WORK/offsets" && seq 0 $((N - 1)) | sed 's/^/0 /' | cmp -s - "$WORK/offsets"; then
    log "offsets are 0..$((N - 1)) on partition 0"
else
    show "$WORK/offsets"; bad "offsets read back are not 0..$((N - 1)) on partition 0"
fi

# 6. -Q: ListOffsets by timestamp (0 = before everything -> offset 0).
if kcat -b "$BOOTSTRAP" -Q -t "$TOPIC:0:0" >"$WORK/query" 2>&1 && grep -Eq 'offset 0( |$)' "$WORK/query"; then
    log "kcat -Q $TOPIC:0:0 -> offset 0"
else
    show "$WORK/query"; bad "kcat -Q -t $TOPIC:0:0 did not answer offset 0"
fi

# 7. -o -3: the last three records (a ListOffsets LATEST first).
if consume -3 '%k:%s\n' "$WORK/tail" && tail -n 3 "$WORK/input" | cmp -s - "$WORK/tail"; then
    log "kcat -C -o -3: the last 3 lines"
else
    show "$WORK/tail"; show "$WORK/tail.err"; bad "kcat -C -o -3 did not return the last 3 lines"
fi

if ((${#FAILURES[@]})); then
    echo "[kcat] ${#FAILURES[@]} failure(s):" >&2
    for f in "${FAILURES[@]}"; do echo "[kcat]   - $f" >&2; done
    exit 1
fi
log "ok"

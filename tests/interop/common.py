"""Shared record generator and checks for the interop clients.

Every check produces the same deterministic set of records (keys, values, headers, explicit
timestamps, an explicit partition per record) and compares what it reads back exactly: per
partition, offsets 0..n-1 in produce order, with key, value, headers and timestamp equal.
"""

import contextlib
import logging
import os
import random
import sys
import threading
import time
import traceback

PARTITIONS = 3
RECORDS = int(os.environ.get("INTEROP_RECORDS", "1000"))
# Explicit CreateTime timestamps: strictly increasing, so offsets_for_times has one right answer.
BASE_TS = 1_700_000_000_000
TS_STEP = 7
BIG_INDEX = 500  # one record with a ~100 KB incompressible value
BIG_SIZE = 100_000


CONSUME_TIMEOUT = 20  # seconds to read one topic back (it takes well under a second normally)


class CheckFailed(Exception):
    pass


class Abort(Exception):
    """A failure after which the remaining steps of a check cannot say anything new."""


def log(name, msg):
    print(f"[{name}] {msg}", flush=True)


def unique_suffix():
    return f"{os.getpid()}-{int(time.time() * 1000) % 10**9}-{random.randrange(10**6)}"


class Rec:
    __slots__ = ("index", "partition", "key", "value", "headers", "timestamp")

    def __init__(self, index, partition, key, value, headers, timestamp):
        self.index = index
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp

    def describe(self):
        v = self.value
        if v is not None and len(v) > 60:
            v = v[:60] + b"...(%d bytes)" % len(self.value)
        return (f"key={self.key!r} value={v!r} headers={self.headers!r} ts={self.timestamp}")


def expected_records(tag, n=RECORDS, partitions=PARTITIONS):
    """The records to produce, in produce order. `tag` makes values topic-specific."""
    out = []
    for i in range(n):
        p = i % partitions
        key = None if i % 100 == 7 else f"key-{i:05d}".encode()
        if i == BIG_INDEX:
            value = random.Random(f"{tag}-{i}").randbytes(BIG_SIZE)
        elif i % 100 == 13:
            value = b""
        else:
            value = (f"{tag}|{i}|" + "abcdefghij" * (i % 20) + "\u00e9\u2603").encode()
        if i % 50 == 0:
            headers = []
        else:
            headers = [("idx", str(i).encode()), ("tag", tag.encode()), ("empty", b"")]
            if i % 3 == 0:
                headers.append(("idx", b"dup-" + str(i).encode()))  # duplicate header key
        out.append(Rec(i, p, key, value, headers, BASE_TS + i * TS_STEP))
    return out


def by_partition(records, partitions=PARTITIONS):
    parts = {p: [] for p in range(partitions)}
    for r in records:
        parts[r.partition].append(r)
    return parts


def norm_headers(h):
    if h is None:
        return []
    return [(k if isinstance(k, str) else k.decode(), None if v is None else bytes(v)) for k, v in h]


def compare(name, topic, expected, got):
    """expected: list of Rec in produce order; got: {partition: [(offset, key, value, headers, ts)]}.

    Raises CheckFailed with the first mismatch."""
    exp = by_partition(expected)
    for p in range(PARTITIONS):
        e = exp[p]
        g = sorted(got.get(p, []), key=lambda t: t[0])
        if len(g) != len(e):
            raise CheckFailed(f"{topic}[{p}]: expected {len(e)} records, consumed {len(g)}")
        for j, (er, gr) in enumerate(zip(e, g)):
            off, key, value, headers, ts = gr
            where = f"{topic}[{p}] offset {off} (record #{er.index})"
            if off != j:
                raise CheckFailed(f"{where}: expected offset {j}: offsets not contiguous from 0")
            if key != er.key:
                raise CheckFailed(f"{where}: key {key!r} != expected {er.key!r}")
            if value != er.value:
                gv = value if value is None or len(value) < 80 else value[:80] + b"..."
                raise CheckFailed(f"{where}: value {gv!r} ({None if value is None else len(value)} bytes)"
                                  f" != expected {er.describe()}")
            if norm_headers(headers) != er.headers:
                raise CheckFailed(f"{where}: headers {norm_headers(headers)!r} != expected {er.headers!r}")
            if ts != er.timestamp:
                raise CheckFailed(f"{where}: timestamp {ts} != expected {er.timestamp}")
    total = sum(len(v) for v in got.values())
    log(name, f"{topic}: {total} records match (keys, values, headers, timestamps, order)")


def expected_end_offsets(expected):
    return {p: len(rs) for p, rs in by_partition(expected).items()}


OFFSETS_FOR_TIMES_RULE = ("Kafka answers the first record with timestamp >= target and that record's own"
                          " timestamp, also inside compressed batches")


def offsets_for_times_cases(expected):
    """[(partition, target_ts, expected_offset or None)] for offsets_for_times."""
    cases = []
    for p, rs in by_partition(expected).items():
        cases.append((p, 0, 0))                                   # before everything -> first
        cases.append((p, rs[0].timestamp, 0))                     # exact first
        mid = len(rs) // 2
        cases.append((p, rs[mid].timestamp, mid))                 # exact middle
        cases.append((p, rs[mid].timestamp - 1, mid))             # just before a record -> that record
        cases.append((p, rs[-1].timestamp, len(rs) - 1))          # exact last
        cases.append((p, rs[-1].timestamp + 1, None))             # after everything -> none
    return cases


FAILURES = []


def _report(name, what, e):
    if isinstance(e, CheckFailed):
        msg = f"{what}: {e}"
    else:  # a client exception is a failure too, with its traceback
        traceback.print_exc()
        msg = f"{what}: {type(e).__name__}: {e or '(no message; traceback above)'}"
    FAILURES.append(msg)
    print(f"[{name}] FAILED {msg}", file=sys.stderr, flush=True)


# Step groups that timed out once; callers skip the group's later steps (each would only wait for
# the same timeout again and push the whole check past its time limit).
TIMED_OUT = set()


@contextlib.contextmanager
def soft(name, what, group=None):
    """Records a failure inside the block and carries on with the next step, so one run reports
    every mismatch rather than only the first."""
    try:
        yield
    except Abort:
        raise
    except Exception as e:
        _report(name, what, e)
        if group is not None and "timeout" in f"{type(e).__name__} {e}".lower():
            TIMED_OUT.add(group)


def skip_timed_out(name, group, what):
    if group in TIMED_OUT:
        log(name, f"{what}: skipped, an earlier '{group}' step timed out")
        return True
    return False


class _RepeatFilter(logging.Filter):
    """Client libraries log the same warning in a retry loop; keep the first few of each."""

    def __init__(self, keep=3):
        super().__init__()
        self.keep = keep
        self.seen = {}

    def filter(self, record):
        key = (record.name, record.levelno, str(record.msg))
        n = self.seen.get(key, 0) + 1
        self.seen[key] = n
        if n == self.keep + 1:
            record.msg = f"{record.msg} (repeats from here on are not shown)"
        return n <= self.keep + 1


def setup_logging():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  client log %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RepeatFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def run_main(name, fn):
    """Runs fn(bootstrap); exits 1 with every recorded failure listed if anything went wrong."""
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} HOST:PORT", file=sys.stderr)
        sys.exit(2)
    setup_logging()
    started = time.monotonic()
    try:
        fn(sys.argv[1])
    except Abort as e:
        _report(name, "aborted", CheckFailed(str(e)))
    except Exception as e:
        _report(name, "aborted", e)
    took = time.monotonic() - started
    if FAILURES:
        print(f"[{name}] {len(FAILURES)} failure(s) in {took:.1f}s:", file=sys.stderr)
        for f in FAILURES:
            print(f"[{name}]   - {f}", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(1)
    log(name, f"ok in {took:.1f}s")


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def consume_timed_out(topic, got, ends):
    counts = {p: len(v) for p, v in got.items()}
    msg = f"{topic}: timed out after {CONSUME_TIMEOUT}s consuming; have {counts}, want {ends}"
    if not any(counts.values()):
        raise Abort(msg + " (nothing consumed at all: not trying the remaining topics)")
    raise CheckFailed(msg)


def check_ack(topic, record, partition, offset, next_offset):
    """Checks that a produce ack put `record` where expected and advances `next_offset`."""
    check(partition == record.partition,
          f"{topic}: record #{record.index} acked on partition {partition}, sent to {record.partition}")
    check(offset == next_offset[record.partition],
          f"{topic}[{record.partition}]: record #{record.index} acked at offset {offset},"
          f" expected {next_offset[record.partition]}")
    next_offset[record.partition] += 1


def round_trip_topics(name, bootstrap, topics, produce, consume, list_offsets):
    """For each topic (name -> (codec, idempotent)): produce, consume back, list offsets."""
    for t, (codec, idem) in topics.items():
        expected = expected_records(t)
        with soft(name, f"{t}: produce"):
            produce(bootstrap, t, expected, codec, idem)
        with soft(name, f"{t}: consume"):
            consume(bootstrap, t, expected)
        if not skip_timed_out(name, "list offsets", t):
            with soft(name, f"{t}: list offsets", group="list offsets"):
                list_offsets(bootstrap, t, expected)


# --- consumer groups (check_groups_*.py) ---------------------------------------------------------
#
# Each group check produces GROUP_RECORDS keyed records (the client's partitioner picks the
# partition) to a fresh GROUP_PARTITIONS-partition topic, then consumes them with subscribe() in
# consumer groups. Where every record landed comes from the produce acks (`Produced`); what the
# consumers got is tallied per (partition, offset) (`Tally`), so a record delivered twice, to the
# wrong consumer group or not at all is reported by position.

GROUP_PARTITIONS = 4
GROUP_RECORDS = 400
GROUP_MORE = 40  # produced after the first commit; a resumed consumer must get exactly these
GROUP_SESSION_TIMEOUT_MS = 10000
GROUP_HEARTBEAT_MS = 1000
# A new group's first generation waits group.initial.rebalance.delay.ms (3 s by default) for more
# members, so forming a group and reading a few hundred records takes 3-5 s; this bounds it.
GROUP_WAIT = 40
GROUP_SETTLE = 1.0  # seconds of polling after the last expected record that must bring nothing


def group_records(tag, start, n):
    """[(index, key, value)] for records start..start+n-1; keys are distinct, values carry `tag`."""
    return [(i, f"key-{i:05d}".encode(), f"{tag}|{i}".encode()) for i in range(start, start + n)]


class Produced:
    """Where each produced record landed, from the produce acks: (partition, offset) -> record."""

    def __init__(self, topic, partitions=GROUP_PARTITIONS):
        self.topic = topic
        self.partitions = partitions
        self.at = {}  # (partition, offset) -> (index, key, value)

    def ack(self, index, key, value, partition, offset):
        check(0 <= partition < self.partitions,
              f"{self.topic}: record #{index} acked on partition {partition}, topic has {self.partitions}")
        check(offset >= 0, f"{self.topic}: record #{index} acked with offset {offset}")
        pos = (partition, offset)
        check(pos not in self.at, f"{self.topic}[{partition}]: offset {offset} acked for record #{index}"
                                  f" and for record #{self.at.get(pos, (None,))[0]}")
        self.at[pos] = (index, key, value)

    def ends(self):
        """Per partition: the next offset, after checking the acked offsets are 0..n-1."""
        out = {}
        for p in range(self.partitions):
            offs = sorted(o for (q, o) in self.at if q == p)
            check(offs == list(range(len(offs))),
                  f"{self.topic}[{p}]: acked offsets are not contiguous from 0: {offs[:10]}...")
            out[p] = len(offs)
        return out

    def positions(self, indexes):
        """The (partition, offset) of every record whose index is in `indexes`."""
        want = set(indexes)
        return {pos for pos, (i, _, _) in self.at.items() if i in want}

    def check_spread(self):
        """Every partition got records (otherwise "each consumer owns a share" says little)."""
        ends = self.ends()
        check(all(ends.values()), f"{self.topic}: keyed records reached only some partitions: {ends}")
        return ends


class Tally:
    """What consumers of one group read, by position, with the consumer that read it. `lock` is
    for callers that poll from several threads."""

    def __init__(self, produced, group):
        self.produced = produced
        self.group = group
        self.lock = threading.RLock()
        self.seen = {}  # (partition, offset) -> consumer label
        self.dups = []  # (position, first label, second label)
        self.wrong = []  # descriptions of records that differ from what was acked there
        # label -> {partition: offset after the last record it read}; a commit-on-revoke listener
        # commits these and drops them.
        self.next = {}

    def add(self, who, partition, offset, key, value):
        pos = (partition, offset)
        exp = self.produced.at.get(pos)
        if exp is None:
            self.wrong.append(f"{who} read {self.produced.topic}[{partition}]@{offset} key={key!r}:"
                              f" nothing was acked there")
        elif (key, value) != exp[1:]:
            self.wrong.append(f"{who} read {self.produced.topic}[{partition}]@{offset} key={key!r}"
                              f" value={value!r}; acked there: record #{exp[0]} key={exp[1]!r} value={exp[2]!r}")
        if pos in self.seen:
            self.dups.append((pos, self.seen[pos], who))
        else:
            self.seen[pos] = who
        nxt = self.next.setdefault(who, {})
        nxt[partition] = max(nxt.get(partition, 0), offset + 1)

    def has_all(self, want):
        return want <= self.seen.keys()

    def by_consumer(self):
        out = {}
        for (p, _), who in self.seen.items():
            out.setdefault(who, {}).setdefault(p, 0)
            out[who][p] += 1
        return out

    def verify(self, want, what):
        """Exactly the positions in `want`, each once, each equal to what was produced there."""
        g, t = self.group, self.produced.topic
        check(not self.wrong, f"group {g}: {len(self.wrong)} records differ from the acked ones, first: {self.wrong[:3]}")
        if self.dups:
            (p, o), a, b = self.dups[0]
            raise CheckFailed(f"group {g}: {len(self.dups)} records delivered more than once, first"
                              f" {t}[{p}]@{o} to {a} and then to {b}; {what}")
        missing = sorted(want - self.seen.keys())
        extra = sorted(self.seen.keys() - want)
        if extra:
            idx = sorted(self.produced.at[pos][0] for pos in extra if pos in self.produced.at)
            raise CheckFailed(f"group {g}: read {len(extra)} records it should not have, first positions"
                              f" {extra[:5]} (record #{idx[:5]}); {what}")
        check(not missing, f"group {g}: {len(missing)} of {len(want)} records never delivered, first"
                           f" positions {missing[:5]}; {what}")


def split_problem(owned, partitions=GROUP_PARTITIONS):
    """None when the consumers' assignments ({label: set of partitions}) are non-empty, disjoint
    and cover every partition; otherwise what is wrong."""
    empty = [who for who, ps in owned.items() if not ps]
    if empty:
        return f"{', '.join(empty)} own(s) no partitions"
    labels = list(owned)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            both = owned[a] & owned[b]
            if both:
                return f"{a} and {b} both own partitions {sorted(both)}"
    union = set().union(*owned.values())
    if union != set(range(partitions)):
        return f"partitions {sorted(set(range(partitions)) - union)} are owned by nobody"
    return None


def describe_owned(owned):
    return ", ".join(f"{who}: {sorted(ps)}" for who, ps in owned.items())


def check_committed(group, topic, committed, want):
    """committed: {partition: offset or None} as the client reports it; want: {partition: offset}."""
    bad = {p: committed.get(p) for p in want if committed.get(p) != want[p]}
    check(not bad, f"group {group}: committed offsets of {topic} {dict(sorted(committed.items()))},"
                   f" expected {want} (differ on {sorted(bad)})")


def group_wait_failed(group, tally, want, owned, waited):
    have = len(want & tally.seen.keys())
    problem = split_problem(owned)
    raise CheckFailed(f"group {group}: after {waited:.0f}s {have} of {len(want)} records consumed"
                      f" (per consumer: {tally.by_consumer()}); assignments {describe_owned(owned)}"
                      + (f" ({problem})" if problem else ""))

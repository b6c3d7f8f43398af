"""Shared bookkeeping for the transaction checks (check_txn_*.py).

Each transaction writes TXN_RECORDS records, record i to partition i % TXN_PARTITIONS, with a key
and a value naming the transaction. Where every record landed comes from the produce acks; from
that `Txns` derives what a read_committed and a read_uncommitted reader must see (by partition,
offset, key and value) and the log end offsets: Kafka writes one control record (the commit or
abort marker) per partition a transaction touched, so on a fresh topic transaction k's records on
a partition follow the previous transaction's last record after a gap of exactly one offset, and
the end offset is the last record's offset + 2.
"""

import time

from common import CheckFailed, check, log

TXN_PARTITIONS = 3
TXN_RECORDS = 60  # per transaction, 20 per partition


def txn_records(topic, label, n=TXN_RECORDS, partitions=TXN_PARTITIONS):
    """[(index, partition, key, value)] for one transaction."""
    return [(i, i % partitions, f"{label}-{i:03d}".encode(), f"{topic}|{label}|{i}".encode())
            for i in range(n)]


class Txns:
    """The transactions written to one topic, in order, with where each record was acked."""

    def __init__(self, topic, partitions=TXN_PARTITIONS):
        self.topic = topic
        self.partitions = partitions
        self.order = []  # labels in the order the transactions ended
        self.outcome = {}  # label -> "commit" | "abort" | "open"
        self.acked = {}  # label -> {(partition, offset): (key, value)}

    def add(self, label, outcome, acked):
        """acked: [(partition, offset, key, value)] from the produce acks of one transaction."""
        check(label not in self.acked, f"transaction {label} recorded twice")
        at = {}
        for p, o, k, v in acked:
            check(0 <= p < self.partitions and o >= 0, f"{self.topic}: {label}: record acked at [{p}]@{o}")
            check((p, o) not in at, f"{self.topic}[{p}]: offset {o} acked twice in {label}")
            at[(p, o)] = (k, v)
        self.order.append(label)
        self.outcome[label] = outcome
        self.acked[label] = at

    def set_outcome(self, label, outcome):
        self.outcome[label] = outcome

    def where(self, p, o):
        for label, at in self.acked.items():
            if (p, o) in at:
                return label
        return None

    def visible(self, labels, starts=None):
        """{partition: [(offset, key, value)]} of the records of the transactions in `labels`
        (at or after starts[partition] when given)."""
        out = {p: [] for p in range(self.partitions)}
        for label in labels:
            for (p, o), (k, v) in self.acked[label].items():
                if starts is None or o >= starts[p]:
                    out[p].append((o, k, v))
        for p in out:
            out[p].sort()
        return out

    def committed_labels(self):
        return [label for label in self.order if self.outcome[label] == "commit"]

    def layout(self):
        """Checks the acked offsets: per partition, each transaction's records are contiguous and
        the next transaction starts two offsets after the previous one's last record (one marker
        in between), starting at 0. Returns the end offsets {partition: last record + 2} once
        every transaction has ended (an open transaction has no marker yet: its last + 1)."""
        ends = {}
        for p in range(self.partitions):
            nxt = 0
            for label in self.order:
                offs = sorted(o for (q, o) in self.acked[label] if q == p)
                if not offs:
                    continue
                check(offs == list(range(offs[0], offs[0] + len(offs))),
                      f"{self.topic}[{p}]: {label}'s records were acked at non-contiguous offsets {offs}")
                check(offs[0] == nxt,
                      f"{self.topic}[{p}]: {label}'s first record acked at offset {offs[0]}, expected {nxt}"
                      f" (0 on a fresh topic, else the previous transaction's last record + 2: one"
                      f" control record between transactions)")
                nxt = offs[-1] + (1 if self.outcome[label] == "open" else 2)
            ends[p] = nxt
        return ends

    def compare(self, what, got, labels, starts=None):
        """got: {partition: [(offset, key, value)]} as read; must be exactly the records of the
        transactions in `labels` (from starts[partition] on, when given), in offset order, each
        once."""
        want = self.visible(labels, starts)
        for p in range(self.partitions):
            g = got.get(p, [])
            w = want[p]
            if g == w:
                continue
            gpos = [o for o, _, _ in g]
            dup = sorted({o for o in gpos if gpos.count(o) > 1})
            gset, wset = set(g), set(w)
            extra = sorted(gset - wset)
            missing = sorted(wset - gset)
            parts = [f"{what}: {self.topic}[{p}]: read {len(g)} records, expected {len(w)}"
                     f" (the records of {', '.join(labels) or 'no transaction'})"]
            if dup:
                parts.append(f"offsets read more than once: {dup[:5]}")
            if extra:
                parts.append(f"{len(extra)} unexpected, first " + ", ".join(
                    f"@{o} key={k!r} (acked in {self.where(p, o) or 'no transaction'})" for o, k, _ in extra[:3]))
            if missing:
                parts.append(f"{len(missing)} missing, first " + ", ".join(
                    f"@{o} key={k!r} ({self.where(p, o)})" for o, k, _ in missing[:3]))
            if not (dup or extra or missing):
                parts.append(f"same records in a different order: {gpos[:10]}...")
            raise CheckFailed("; ".join(parts))
        n = sum(len(v) for v in want.values())
        return n


def check_ends(what, topic, got, want):
    bad = {p: got.get(p) for p in want if got.get(p) != want[p]}
    if bad:
        raise CheckFailed(f"{what}: {topic}: end offsets {dict(sorted(got.items()))}, expected {want}"
                          f" (differ on partitions {sorted(bad)})")


def check_read(name, txns, isolation, got, ends, want_txns, want_ends, when, ends_what="end_offsets()"):
    """One reader of `txns.topic` at `isolation` got exactly the records of the transactions in
    `want_txns`, and its client reported `want_ends` as the end offsets (for read_committed, the
    last stable offsets)."""
    check_ends(f"{when}: {isolation} {ends_what}", txns.topic, ends, want_ends)
    n = txns.compare(f"{when}: {isolation}", got, want_txns)
    log(name, f"{when}: {isolation} read exactly {n} records ({'+'.join(want_txns) or 'none'}),"
              f" {ends_what} {ends}")


def check_ctp_input(txns, seen, want_in):
    """The consume-transform-produce loop's read_committed group consumer read exactly the
    committed input records."""
    missing = sorted(set(want_in) - set(seen))
    extra = sorted(set(seen) - set(want_in))
    check(not missing and not extra, f"ctp: the read_committed group consumer missed {len(missing)}"
          f" committed records (first {missing[:3]}) and read {len(extra)} others (first {extra[:3]},"
          f" acked in {[txns.where(*pos) for pos in extra[:3]]})")


CTP_SECONDS = 40  # the consume-transform-produce rounds must finish within this


def check_ctp_progress(started, seen, want_in, positions, in_ends, extra=""):
    """Fails the consume-transform-produce loop once it has run too long."""
    if time.monotonic() - started > CTP_SECONDS:
        raise CheckFailed(f"ctp: after {CTP_SECONDS}s read {len(seen)} of {len(want_in)} committed input"
                          f" records; positions {positions}, input end offsets {in_ends}{extra}")


def log_ctp_done(name, seen, n_txns, started):
    log(name, f"ctp: {len(seen)} input records in {n_txns} transactions"
              f" ({time.monotonic() - started:.1f}s incl. joining the group)")

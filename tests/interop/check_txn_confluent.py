"""confluent-kafka (librdkafka) transactions against Sluice.

1. A transactional Producer commits a transaction of 60 records to a 3-partition topic, writes a
   second one and flushes it (the records are in the log), then aborts it, and commits a third.
   While the second is still open, a read_committed consumer must stop before it (at the last
   stable offset: watermark high and partition EOF there) and a read_uncommitted one must see it.
   Afterwards read_committed reads exactly the first and third transactions' records and
   read_uncommitted all three, at the acked offsets (one marker offset between transactions).
2. Consume-transform-produce: a subscribed read_committed consumer (auto-commit off) reads the
   committed records; a second transactional producer writes a transformed copy of each batch to
   an output topic and commits the consumer's positions in the same transaction
   (send_offsets_to_transaction with the consumer group metadata). The output must hold every
   transformed record exactly once, and committed() must be the input's end offsets.
3. Zombie fencing: producer A begins a transaction and writes (flushed); producer B with the same
   transactional.id calls init_transactions; A's commit_transaction must fail as fenced (fatal),
   B commits its own transaction, and read_committed sees only B's records.
"""

import time

from common import CheckFailed, check, log, run_main, soft, unique_suffix
from txn_common import TXN_PARTITIONS, TXN_RECORDS, Txns, check_ctp_input, check_ctp_progress, log_ctp_done, check_ends, check_read, txn_records

from confluent_kafka import (OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka import version as ck_version, libversion
from confluent_kafka.admin import AdminClient, NewTopic

NAME = "confluent-kafka txn"
P = TXN_PARTITIONS
READ_TIMEOUT = 20  # seconds to read a topic to its end
TXN_TIMEOUT = 30  # seconds for init/commit/abort/send_offsets


def create_topics(bootstrap, topics):
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "interop-ck-txn-admin"})
    futures = admin.create_topics([NewTopic(t, num_partitions=P, replication_factor=1) for t in topics],
                                  operation_timeout=30)
    for t, f in futures.items():
        f.result(30)
    deadline = time.monotonic() + 15
    for t in topics:
        while True:
            md = admin.list_topics(t, timeout=10).topics.get(t)
            if md is not None and md.error is None and len(md.partitions) == P:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{t}: not in metadata with {P} partitions after create: {md}")
            time.sleep(0.2)
    log(NAME, f"created {', '.join(topics)} with {P} partitions each")


def txn_producer(bootstrap, txn_id, label, codec="none"):
    p = Producer({
        "compression.type": codec,
        "bootstrap.servers": bootstrap,
        "client.id": f"interop-ck-txn-{label}",
        "transactional.id": txn_id,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "transaction.timeout.ms": 30000,
    })
    p.init_transactions(TXN_TIMEOUT)
    return p


def produce_txn(producer, topic, records, acked, errors):
    """Produces `records` [(index, partition, key, value)] inside the current transaction; each
    ack appends (partition, offset, key, value) to `acked`, each failure to `errors`."""

    def on_delivery(err, msg, rec):
        if err is not None:
            errors.append(f"record #{rec[0]}: {err}")
        else:
            acked.append((msg.partition(), msg.offset(), rec[2], rec[3]))

    for r in records:
        while True:
            try:
                producer.produce(topic, key=r[2], value=r[3], partition=r[1],
                                 on_delivery=lambda err, msg, r=r: on_delivery(err, msg, r))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)


def flush(producer, topic, records, acked, errors, what):
    left = producer.flush(30)
    check(left == 0, f"{what}: {left} records unacknowledged after flush(30)")
    check(not errors, f"{what}: {len(errors)} delivery errors, first: {errors[:3]}")
    check(len(acked) == len(records), f"{what}: {len(acked)} of {len(records)} records acked")


def new_consumer(bootstrap, isolation, group=None, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "client.id": f"interop-ck-txn-{isolation}",
        "group.id": group or f"interop-ck-txn-unused-{unique_suffix()}",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return Consumer(conf)


def read_to_end(bootstrap, topic, isolation, starts=None, **extra):
    """assign() every partition from the beginning (or starts[partition]) and read until partition
    EOF on each (for read_committed librdkafka signals EOF at the last stable offset). Returns
    ({partition: [(offset, key, value)]}, {partition: high watermark as ListOffsets reports it to a
    consumer of this isolation level})."""
    c = new_consumer(bootstrap, isolation, **extra)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING if starts is None else starts[p]) for p in range(P)])
        got = {p: [] for p in range(P)}
        eof = set()
        deadline = time.monotonic() + READ_TIMEOUT
        while len(eof) < P:
            if time.monotonic() > deadline:
                raise CheckFailed(f"{isolation}: {topic}: no end of partition after {READ_TIMEOUT}s on"
                                  f" {sorted(set(range(P)) - eof)}; read {({p: len(v) for p, v in got.items()})}")
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise CheckFailed(f"{isolation}: {topic}: consumer error {m.error()}")
                eof.discard(m.partition())
                got[m.partition()].append((m.offset(), m.key(), m.value()))
        highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                 for p in range(P)}
        return got, highs
    finally:
        c.close()


def check_reads(bootstrap, txns, committed, uncommitted, ends_committed, ends_uncommitted, when):
    """read_committed must see exactly the transactions in `committed`, read_uncommitted those in
    `uncommitted`; the consumers' watermarks must be the given end offsets."""
    for isolation, want, want_ends in (("read_committed", committed, ends_committed),
                                       ("read_uncommitted", uncommitted, ends_uncommitted)):
        with soft(NAME, f"{when}: {isolation}"):
            got, highs = read_to_end(bootstrap, txns.topic, isolation)
            check_read(NAME, txns, isolation, got, highs, want, want_ends, when,
                       ends_what="consumer's high watermark")


def commit_abort_commit(bootstrap, topic, txn_id):
    txns = Txns(topic)
    producer = txn_producer(bootstrap, txn_id, "main")
    log(NAME, f"init_transactions ok for transactional.id {txn_id}")

    for label, outcome in (("t1", "commit"), ("t2", "abort"), ("t3", "commit")):
        records = txn_records(topic, label)
        acked, errors = [], []
        producer.begin_transaction()
        produce_txn(producer, topic, records, acked, errors)
        flush(producer, topic, records, acked, errors, f"{topic}: transaction {label}")
        txns.add(label, "open", acked)
        if label == "t2":
            # The second transaction is written but still open: read_committed stops at its first
            # offset (the last stable offset), read_uncommitted sees it.
            lso = {p: min(o for (q, o) in txns.acked["t2"] if q == p) for p in range(P)}
            hw = txns.layout()
            check_reads(bootstrap, txns, ["t1"], ["t1", "t2"], lso, hw, "t2 open")
        if outcome == "commit":
            producer.commit_transaction(TXN_TIMEOUT)
        else:
            producer.abort_transaction(TXN_TIMEOUT)
        txns.set_outcome(label, outcome)
        log(NAME, f"{topic}: transaction {label}: {len(records)} records at"
                  f" {sorted(txns.acked[label])[:1]}..{sorted(txns.acked[label])[-1:]}, {'committed' if outcome == 'commit' else 'aborted'}")
    producer.flush(10)
    ends = txns.layout()
    check_reads(bootstrap, txns, ["t1", "t3"], ["t1", "t2", "t3"], ends, ends, "after t1 commit, t2 abort, t3 commit")
    with soft(NAME, "read_committed from the middle of the aborted transaction, one batch per fetch"):
        # The fetch starts inside t2, so its answer must list t2 as aborted although t2 began
        # before the fetch offset; max.partition.fetch.bytes=1 makes every fetch return one batch.
        starts = {p: min(o for (q, o) in txns.acked["t2"] if q == p) + 7 for p in range(P)}
        small = {"max.partition.fetch.bytes": 1}
        for iso, labels in (("read_committed", ["t1", "t3"]), ("read_uncommitted", ["t1", "t2", "t3"])):
            got, _ = read_to_end(bootstrap, topic, iso, starts, **small)
            n = txns.compare(f"{iso} from offsets {starts} (inside t2)", got, labels, starts)
            log(NAME, f"{iso} from offsets {starts} (inside t2), one batch per fetch: exactly {n} records"
                      f" ({'+'.join(labels)} from there)")
    return txns, ends


def consume_transform_produce(bootstrap, txns, in_ends, out_topic, group, txn_id):
    """Reads the committed input in a group and writes b"T|" + value to out_topic, committing the
    consumed offsets in the same transactions."""
    want_in = {(p, o): kv for label in txns.committed_labels() for (p, o), kv in txns.acked[label].items()}
    producer = txn_producer(bootstrap, txn_id, "ctp", codec="lz4")
    consumer = new_consumer(bootstrap, "read_committed", group=group, **{
        "client.id": "interop-ck-txn-ctp", "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 30000, "enable.partition.eof": False})
    out = Txns(out_topic)
    seen = {}
    n_txns = 0
    sent = {}  # partition -> offset sent with the last transaction
    try:
        consumer.subscribe([txns.topic])
        started = time.monotonic()
        while True:
            msgs = consumer.consume(num_messages=25, timeout=0.5)  # a few transactions, not one
            for m in msgs:
                if m.error():
                    raise CheckFailed(f"ctp consumer error {m.error()}")
            positions = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())
                         if tp.offset >= 0}
            done = len(seen) + len(msgs) >= len(want_in) and positions == in_ends
            if msgs or (done and positions != sent):
                label = f"ctp{n_txns}"
                records = []
                for m in msgs:
                    pos = (m.partition(), m.offset())
                    check(pos not in seen, f"ctp: input {txns.topic}[{pos[0]}]@{pos[1]} delivered twice"
                                           f" (first in {seen.get(pos)}, again in {label})")
                    seen[pos] = label
                    records.append((len(records), m.partition(), m.key(), b"T|" + m.value()))
                acked, errors = [], []
                producer.begin_transaction()
                produce_txn(producer, out_topic, records, acked, errors)
                producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                     consumer.consumer_group_metadata(), TXN_TIMEOUT)
                producer.commit_transaction(TXN_TIMEOUT)
                check(not errors, f"ctp: {label}: {len(errors)} delivery errors, first {errors[:3]}")
                check(len(acked) == len(records), f"ctp: {label}: {len(acked)} of {len(records)} acked")
                out.add(label, "commit", acked)
                sent = positions
                n_txns += 1
            if done and positions == sent:
                break
            check_ctp_progress(started, seen, want_in, positions, in_ends,
                               f", assignment {[tp.partition for tp in consumer.assignment()]}")
        log_ctp_done(NAME, seen, n_txns, started)
        check_ctp_input(txns, seen, want_in)
        committed = {tp.partition: (None if tp.offset == OFFSET_INVALID else tp.offset)
                     for tp in consumer.committed([TopicPartition(txns.topic, p) for p in range(P)], timeout=10)}
        check_ends(f"ctp: group {group}: committed() (TxnOffsetCommit)", txns.topic, committed, in_ends)
        log(NAME, f"ctp: group {group}: committed() = input end offsets {in_ends}")
        with soft(NAME, "ctp: an aborted transaction's offsets are never committed"):
            aborted_offsets(bootstrap, producer, consumer, txns.topic, out, group, in_ends)
    finally:
        consumer.close()
    return out, want_in


def committed_of(consumer, topic, timeout=10):
    res = consumer.committed([TopicPartition(topic, p) for p in range(P)], timeout=timeout)
    bad = [(tp.partition, str(tp.error)) for tp in res if tp.error is not None]
    check(not bad, f"committed() errors {bad}")
    return {tp.partition: (None if tp.offset == OFFSET_INVALID else tp.offset) for tp in res}


def aborted_offsets(bootstrap, producer, consumer, in_topic, out, group, in_ends):
    """A transaction writes one record and rewinds the group's offsets to 1 (TxnOffsetCommit),
    then aborts. While it is open the pending offsets must not be visible: a read_uncommitted
    OffsetFetch returns the committed ones, a read_committed one (require_stable) either waits
    (UNSTABLE_OFFSET_COMMIT, a timeout here) or returns the committed ones. After the abort the
    committed offsets are unchanged and the record is not visible to read_committed."""
    rewind = [TopicPartition(in_topic, p, 1) for p in range(P)]
    acked, errors = [], []
    producer.begin_transaction()
    rec = [(0, 0, b"junk", b"T|aborted-with-offsets")]
    produce_txn(producer, out.topic, rec, acked, errors)
    flush(producer, out.topic, rec, acked, errors, "ctp: aborted transaction with offsets")
    producer.send_offsets_to_transaction(rewind, consumer.consumer_group_metadata(), TXN_TIMEOUT)
    out.add("junk", "open", acked)
    readers = {iso: new_consumer(bootstrap, iso, group=group) for iso in ("read_uncommitted", "read_committed")}
    try:
        got = committed_of(readers["read_uncommitted"], in_topic)
        check_ends(f"group {group}: read_uncommitted committed() while a transaction with offsets is open",
                   in_topic, got, in_ends)
        try:
            got = committed_of(readers["read_committed"], in_topic, timeout=3)
            check_ends(f"group {group}: read_committed committed() while a transaction with offsets is open",
                       in_topic, got, in_ends)
            how = f"returned the committed offsets {got}"
        except KafkaException as e:
            check(e.args[0].code() == KafkaError._TIMED_OUT,
                  f"group {group}: read_committed committed() while offsets are pending: {e}")
            how = "waited (UNSTABLE_OFFSET_COMMIT) until its 3 s timeout"
        log(NAME, f"ctp: pending offsets {[(tp.partition, tp.offset) for tp in rewind]} not visible: read_uncommitted"
                  f" committed() = {in_ends}, read_committed committed() {how}")
    finally:
        producer.abort_transaction(TXN_TIMEOUT)
        out.set_outcome("junk", "abort")
        for c in readers.values():
            c.close()
    got = committed_of(consumer, in_topic)
    check_ends(f"group {group}: committed() after aborting a transaction that rewound the offsets to 1",
               in_topic, got, in_ends)
    log(NAME, f"ctp: aborted transaction with offsets: committed() still {got}")


def check_output(bootstrap, out, want_in):
    got, highs = read_to_end(bootstrap, out.topic, "read_committed")
    values = [v for recs in got.values() for _, _, v in recs]
    want = sorted(b"T|" + v for _, v in want_in.values())
    dups = sorted({v for v in values if values.count(v) > 1})
    check(not dups, f"ctp output {out.topic}: {len(dups)} transformed records appear more than once,"
                    f" first {dups[:3]}")
    check(sorted(values) == want, f"ctp output {out.topic}: read_committed has {len(values)} records,"
                                  f" expected each of the {len(want)} transformed inputs once;"
                                  f" missing {sorted(set(want) - set(values))[:3]}, extra {sorted(set(values) - set(want))[:3]}")
    out.compare("ctp output read_committed", got, out.committed_labels())
    check_ends("ctp output read_committed high watermark", out.topic, highs, out.layout())
    log(NAME, f"ctp output {out.topic}: each of the {len(want)} transformed records exactly once, at the acked"
              f" offsets; end offsets {highs}")


def zombie_fencing(bootstrap, topic, txn_id):
    txns = Txns(topic)
    a = txn_producer(bootstrap, txn_id, "zombie-a")
    a.begin_transaction()
    recs_a = txn_records(topic, "A")
    acked_a, errors_a = [], []
    produce_txn(a, topic, recs_a, acked_a, errors_a)
    flush(a, topic, recs_a, acked_a, errors_a, f"{topic}: producer A")
    txns.add("A", "open", acked_a)
    log(NAME, f"fencing: producer A wrote {len(acked_a)} records in an open transaction")

    b = txn_producer(bootstrap, txn_id, "zombie-b")  # bumps the epoch, aborts A's transaction
    txns.set_outcome("A", "abort")
    log(NAME, "fencing: producer B init_transactions ok with the same transactional.id")

    err = None
    try:
        a.commit_transaction(TXN_TIMEOUT)
    except KafkaException as e:
        err = e.args[0]
    check(err is not None, "fencing: producer A's commit_transaction succeeded after B's init_transactions")
    fenced = err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    check(err.fatal() or fenced, f"fencing: A's commit_transaction failed, but not fatal/fenced: {err}"
                                 f" (code {err.name()}, fatal={err.fatal()}, abortable={err.txn_requires_abort()})")
    log(NAME, f"fencing: A's commit_transaction failed: {err.name()} (fatal={err.fatal()}): {err.str()}")

    b.begin_transaction()
    recs_b = txn_records(topic, "B")
    acked_b, errors_b = [], []
    produce_txn(b, topic, recs_b, acked_b, errors_b)
    b.commit_transaction(TXN_TIMEOUT)
    check(not errors_b and len(acked_b) == len(recs_b),
          f"fencing: B: {len(acked_b)} of {len(recs_b)} acked, errors {errors_b[:3]}")
    txns.add("B", "commit", acked_b)
    log(NAME, f"fencing: producer B committed {len(acked_b)} records")
    ends = txns.layout()
    check_reads(bootstrap, txns, ["B"], ["A", "B"], ends, ends, "fencing")


def interleaved(bootstrap, topic, suffix):
    """Two transactional producers and a plain one on the same partition, interleaved: X writes,
    Y writes, X writes again, the plain producer writes, X aborts. Y's open transaction now holds
    the last stable offset at its first record, so read_committed must return nothing (X's first
    records, below the LSO, are aborted even though X's abort marker is above it: the fetch's
    aborted-transaction list must include X) and stop at Y's first offset. Then Y writes more and
    commits: read_committed sees Y's records and the plain ones, never X's."""
    txns = Txns(topic)
    x = txn_producer(bootstrap, f"interop-ckt-x-{suffix}", "x")
    y = txn_producer(bootstrap, f"interop-ckt-y-{suffix}", "y")
    plain = Producer({"bootstrap.servers": bootstrap, "client.id": "interop-ck-txn-plain", "acks": "all",
                      "linger.ms": 5, "message.timeout.ms": 30000})
    k = 10

    def write(producer, label, outcome="open"):
        records = [(i, 0, f"{label}-{i:03d}".encode(), f"{topic}|{label}|{i}".encode()) for i in range(k)]
        acked, errors = [], []
        produce_txn(producer, topic, records, acked, errors)
        flush(producer, topic, records, acked, errors, f"{topic}: {label}")
        txns.add(label, outcome, acked)
        return min(o for _, o, _, _ in acked), max(o for _, o, _, _ in acked)

    x.begin_transaction()
    write(x, "X1")
    y.begin_transaction()
    y_first, _ = write(y, "Y1")
    write(x, "X2")
    _, last = write(plain, "N1", "commit")
    x.abort_transaction(TXN_TIMEOUT)
    txns.set_outcome("X1", "abort")
    txns.set_outcome("X2", "abort")
    hw = {0: last + 2, 1: 0, 2: 0}
    lso = {0: y_first, 1: 0, 2: 0}
    log(NAME, f"interleaved: X {sorted(o for _, o in txns.acked['X1'])[0]}.. and"
              f" {sorted(o for _, o in txns.acked['X2'])[0]}.. (aborted), Y from {y_first} (open),"
              f" plain from {sorted(o for _, o in txns.acked['N1'])[0]}; abort marker at {last + 1}")
    check_reads(bootstrap, txns, [], ["X1", "Y1", "X2", "N1"], lso, hw, "interleaved, Y open")
    _, y_last = write(y, "Y2")
    y.commit_transaction(TXN_TIMEOUT)
    txns.set_outcome("Y1", "commit")
    txns.set_outcome("Y2", "commit")
    ends = {0: y_last + 2, 1: 0, 2: 0}
    check_reads(bootstrap, txns, ["Y1", "N1", "Y2"], ["X1", "Y1", "X2", "N1", "Y2"], ends, ends,
                "interleaved, X aborted, Y committed")
    plain.flush(10)


def two_producers_one_group(bootstrap, topic, suffix):
    """Two transactional producers commit offsets of the same group (offsets-only transactions,
    from a consumer's group metadata without a subscription): P1 rewinds to 5 and P2 to 10, both
    pending at once; P1 aborts and P2 commits, so the group's offsets are 10; then P1 commits 3
    and they are 3. Each producer's pending offsets must be applied or dropped by its own marker."""
    group = f"interop-ckt-2p-{suffix}"
    p1 = txn_producer(bootstrap, f"interop-ckt-2p-a-{suffix}", "2p-a")
    p2 = txn_producer(bootstrap, f"interop-ckt-2p-b-{suffix}", "2p-b")
    c = new_consumer(bootstrap, "read_uncommitted", group=group)
    try:
        meta = c.consumer_group_metadata()

        def offsets(o):
            return [TopicPartition(topic, p, o) for p in range(P)]

        p1.begin_transaction()
        p1.send_offsets_to_transaction(offsets(5), meta, TXN_TIMEOUT)
        p2.begin_transaction()
        p2.send_offsets_to_transaction(offsets(10), meta, TXN_TIMEOUT)
        got = committed_of(c, topic)
        check_ends(f"group {group}: committed() with P1 (5) and P2 (10) pending", topic, got, {p: None for p in range(P)})
        p1.abort_transaction(TXN_TIMEOUT)
        got = committed_of(c, topic)
        check_ends(f"group {group}: committed() after P1 aborted (P2 still pending)", topic, got, {p: None for p in range(P)})
        p2.commit_transaction(TXN_TIMEOUT)
        got = committed_of(c, topic)
        check_ends(f"group {group}: committed() after P1 aborted 5 and P2 committed 10", topic, got, {p: 10 for p in range(P)})
        p1.begin_transaction()
        p1.send_offsets_to_transaction(offsets(3), meta, TXN_TIMEOUT)
        p1.commit_transaction(TXN_TIMEOUT)
        got = committed_of(c, topic)
        check_ends(f"group {group}: committed() after P1 then committed 3", topic, got, {p: 3 for p in range(P)})
        log(NAME, f"two producers, one group: P1's aborted offsets dropped, P2's committed (10), then P1's (3)")
    finally:
        c.close()


def main(bootstrap):
    log(NAME, f"confluent-kafka {ck_version()[0]}, librdkafka {libversion()[0]}")
    suffix = unique_suffix()
    t_in = f"interop-ckt-in-{suffix}"
    t_out = f"interop-ckt-out-{suffix}"
    t_fence = f"interop-ckt-fence-{suffix}"
    t_mixed = f"interop-ckt-mixed-{suffix}"
    create_topics(bootstrap, [t_in, t_out, t_fence, t_mixed])

    txns = None
    with soft(NAME, "commit, abort, commit; read_committed vs read_uncommitted"):
        txns, in_ends = commit_abort_commit(bootstrap, t_in, f"interop-ckt-main-{suffix}")

    with soft(NAME, "consume-transform-produce"):
        if txns is None or len(txns.committed_labels()) != 2:
            raise CheckFailed("skipped: the first step did not commit the input transactions")
        out, want_in = consume_transform_produce(bootstrap, txns, in_ends, t_out, f"interop-ckt-ctp-{suffix}",
                                                 f"interop-ckt-ctp-{suffix}")
        check_output(bootstrap, out, want_in)

    with soft(NAME, "zombie fencing"):
        zombie_fencing(bootstrap, t_fence, f"interop-ckt-fence-{suffix}")

    with soft(NAME, "interleaved transactional and plain producers on one partition"):
        interleaved(bootstrap, t_mixed, suffix)

    with soft(NAME, "two producers' pending offsets for one group"):
        two_producers_one_group(bootstrap, t_mixed, suffix)


if __name__ == "__main__":
    run_main(NAME, main)

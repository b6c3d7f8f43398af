"""kafka-python transactions against Sluice.

KafkaProducer(transactional_id=...): init_transactions, then a committed transaction of 60 records
to a 3-partition topic, a second one flushed (the records are in the log) and then aborted, and a
third committed. While the second is open, a KafkaConsumer(isolation_level='read_committed') must
get the last stable offset (the first offset of the open transaction) from end_offsets() and read
only the first transaction; read_uncommitted reads it too. Afterwards read_committed reads exactly
the first and third transactions' records and read_uncommitted all three, at the acked offsets
(one marker offset between transactions).

kafka-python's commit_transaction/abort_transaction/send_offsets_to_transaction wait without a
timeout, so every transactional call here runs in a helper thread bounded by TXN_TIMEOUT.
"""

import threading
import time

from common import CheckFailed, check, log, run_main, soft, unique_suffix
from txn_common import TXN_PARTITIONS, Txns, check_ctp_input, check_ctp_progress, log_ctp_done, check_ends, check_read, txn_records

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka import __version__ as kp_version
from kafka.admin import NewTopic

NAME = "kafka-python txn"
P = TXN_PARTITIONS
READ_TIMEOUT = 20  # seconds to read a topic to its end
TXN_TIMEOUT = 30  # seconds for init/commit/abort


def bounded(what, fn, timeout=TXN_TIMEOUT):
    """Runs fn() in a daemon thread; raises CheckFailed if it does not return within `timeout`."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            result["error"] = e

    t = threading.Thread(target=run, name=what, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise CheckFailed(f"{what}: no answer within {timeout}s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def create_topic(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-kp-txn-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=P, replication_factor=1)], wait_for_metadata=True)
        n = len(admin.describe_topics([topic])[0]["partitions"])
        check(n == P, f"{topic}: {n} partitions in metadata, expected {P}")
    finally:
        admin.close()
    log(NAME, f"created {topic} with {P} partitions")


def send_all(producer, topic, records):
    """Sends (index, partition, key, value) records in the current transaction, flushes, and
    returns [(partition, offset, key, value)] from the acks."""
    futures = [producer.send(topic, key=k, value=v, partition=p) for _, p, k, v in records]
    producer.flush(timeout=30)
    acked = []
    for (_, _, k, v), fut in zip(records, futures):
        md = fut.get(timeout=30)
        acked.append((md.partition, md.offset, k, v))
    return acked


def read_to_end(bootstrap, topic, isolation):
    """assign() every partition from the beginning and poll until the position reaches
    end_offsets() (for read_committed: the last stable offset). Returns
    ({partition: [(offset, key, value)]}, {partition: end offset})."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, client_id=f"interop-kp-txn-{isolation}", group_id=None,
                      enable_auto_commit=False, isolation_level=isolation, fetch_max_wait_ms=100,
                      request_timeout_ms=30000)
    try:
        tps = [TopicPartition(topic, p) for p in range(P)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = {tp.partition: o for tp, o in c.end_offsets(tps).items()}
        got = {p: [] for p in range(P)}
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            positions = {tp.partition: c.position(tp, timeout_ms=10000) for tp in tps}
            if all(positions[p] >= ends[p] for p in range(P)):
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{isolation}: {topic}: after {READ_TIMEOUT}s positions {positions},"
                                  f" end offsets {ends}; read {({p: len(v) for p, v in got.items()})}")
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    got[tp.partition].append((m.offset, m.key, m.value))
        for tp, msgs in c.poll(timeout_ms=300).items():  # nothing past the end offsets either
            for m in msgs:
                got[tp.partition].append((m.offset, m.key, m.value))
        return got, ends
    finally:
        c.close()


def check_reads(bootstrap, txns, committed, uncommitted, ends_committed, ends_uncommitted, when):
    for isolation, want, want_ends in (("read_committed", committed, ends_committed),
                                       ("read_uncommitted", uncommitted, ends_uncommitted)):
        with soft(NAME, f"{when}: {isolation}"):
            got, ends = read_to_end(bootstrap, txns.topic, isolation)
            check_read(NAME, txns, isolation, got, ends, want, want_ends, when)


def admin_checks(bootstrap, txn_id, topic, state, start_offsets, when):
    """DescribeTransactions, ListTransactions (all, and filtered by state) and DescribeProducers
    for the transactional id: its state, its partitions while ongoing (none once complete), its
    timeout, and each partition's active producer with the open transaction's first offset (-1
    when none is open)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-kp-txn-admin", request_timeout_ms=10000)
    try:
        d = admin.describe_transactions([txn_id]).get(txn_id)
        check(d is not None, f"{when}: describe_transactions has no entry for {txn_id}")
        want_tps = {TopicPartition(topic, p) for p in range(P)} if state == "Ongoing" else set()
        check(d.state == state and set(d.topic_partitions) == want_tps and d.transaction_timeout_ms == 30000,
              f"{when}: describe_transactions({txn_id}) = state {d.state}, partitions"
              f" {sorted(d.topic_partitions)}, timeout {d.transaction_timeout_ms} ms; expected state {state},"
              f" partitions {sorted(want_tps)}, timeout 30000 ms")
        pid = d.producer_id
        listed = [t for ts in admin.list_transactions().values() for t in ts if t.transactional_id == txn_id]
        check([(t.state, t.producer_id) for t in listed] == [(state, pid)],
              f"{when}: list_transactions() has {txn_id} as {listed}, expected once with state {state} and"
              f" producer id {pid}")
        other = "CompleteCommit" if state == "Ongoing" else "Ongoing"
        for filt, present in ((state, True), (other, False)):
            ids = {t.transactional_id for ts in admin.list_transactions(state_filters=[filt]).values() for t in ts}
            check((txn_id in ids) == present, f"{when}: list_transactions(state_filters=[{filt!r}])"
                                              f" {'lacks' if present else 'includes'} {txn_id} (state {state})")
        tps = [TopicPartition(topic, p) for p in range(P)]
        producers = admin.describe_producers(tps)
        for tp in tps:
            mine = [a for a in producers[tp].active_producers if a.producer_id == pid]
            check(len(mine) == 1, f"{when}: describe_producers: {topic}[{tp.partition}] lists producer {pid}"
                                  f" {len(mine)} times: {producers[tp].active_producers}")
            want = start_offsets.get(tp.partition, -1)
            check(mine[0].current_transaction_start_offset == want and mine[0].producer_epoch == d.producer_epoch,
                  f"{when}: describe_producers: {topic}[{tp.partition}] producer {pid}: current transaction"
                  f" start offset {mine[0].current_transaction_start_offset}, epoch {mine[0].producer_epoch};"
                  f" expected {want}, epoch {d.producer_epoch}")
        log(NAME, f"{when}: describe_transactions: {state}, producer {pid} epoch {d.producer_epoch}, partitions"
                  f" {sorted(tp.partition for tp in d.topic_partitions)}; list_transactions agrees;"
                  f" describe_producers: current transaction start offsets"
                  f" {({tp.partition: start_offsets.get(tp.partition, -1) for tp in tps})}")
    finally:
        admin.close()


def commit_abort_commit(bootstrap, topic, txn_id):
    txns = Txns(topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="interop-kp-txn", transactional_id=txn_id,
                             linger_ms=5, request_timeout_ms=30000, max_block_ms=30000,
                             transaction_timeout_ms=30000)
    try:
        bounded("init_transactions", producer.init_transactions)
        log(NAME, f"init_transactions ok for transactional_id {txn_id}")
        for label, outcome in (("t1", "commit"), ("t2", "abort"), ("t3", "commit")):
            producer.begin_transaction()
            acked = send_all(producer, topic, txn_records(topic, label))
            txns.add(label, "open", acked)
            if label == "t2":
                lso = {p: min(o for (q, o) in txns.acked["t2"] if q == p) for p in range(P)}
                check_reads(bootstrap, txns, ["t1"], ["t1", "t2"], lso, txns.layout(), "t2 open")
                with soft(NAME, "t2 open: DescribeTransactions, ListTransactions, DescribeProducers"):
                    admin_checks(bootstrap, txn_id, topic, "Ongoing", lso, "t2 open")
            if outcome == "commit":
                bounded(f"{label}: commit_transaction", producer.commit_transaction)
            else:
                bounded(f"{label}: abort_transaction", producer.abort_transaction)
            txns.set_outcome(label, outcome)
            log(NAME, f"{topic}: {label}: {len(acked)} records acked, {'committed' if outcome == 'commit' else 'aborted'}")
    finally:
        producer.close(timeout=10)
    ends = txns.layout()
    check_reads(bootstrap, txns, ["t1", "t3"], ["t1", "t2", "t3"], ends, ends, "after t1 commit, t2 abort, t3 commit")
    with soft(NAME, "after t3: DescribeTransactions, ListTransactions, DescribeProducers"):
        admin_checks(bootstrap, txn_id, topic, "CompleteCommit", {}, "after t3")
    return txns, ends


def consume_transform_produce(bootstrap, txns, in_ends, out_topic, group, txn_id):
    """A subscribed read_committed KafkaConsumer (auto-commit off) reads the committed input; each
    polled batch is written transformed (b"T|" + value) to out_topic by a transactional producer,
    with the consumer's positions committed in the same transaction
    (send_offsets_to_transaction with consumer.group_metadata())."""
    want_in = {(p, o): kv for label in txns.committed_labels() for (p, o), kv in txns.acked[label].items()}
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="interop-kp-txn-ctp", transactional_id=txn_id,
                             linger_ms=5, request_timeout_ms=30000, max_block_ms=30000,
                             transaction_timeout_ms=30000, compression_type="gzip")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="interop-kp-txn-ctp", group_id=group,
                             isolation_level="read_committed", enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=1000,
                             max_poll_interval_ms=30000, fetch_max_wait_ms=100, request_timeout_ms=30000)
    out = Txns(out_topic)
    seen, sent, n_txns = {}, {}, 0
    try:
        bounded("ctp: init_transactions", producer.init_transactions)
        consumer.subscribe([txns.topic])
        started = time.monotonic()
        while True:
            batches = consumer.poll(timeout_ms=500, max_records=25)
            msgs = [m for ms in batches.values() for m in ms]
            positions = {tp.partition: consumer.position(tp, timeout_ms=10000) for tp in consumer.assignment()}
            done = len(seen) + len(msgs) >= len(want_in) and positions == in_ends
            if msgs or (done and positions != sent):
                label = f"ctp{n_txns}"
                records = []
                for m in msgs:
                    pos = (m.partition, m.offset)
                    check(pos not in seen, f"ctp: input {txns.topic}[{pos[0]}]@{pos[1]} delivered twice"
                                           f" (first in {seen.get(pos)}, again in {label})")
                    seen[pos] = label
                    records.append((len(records), m.partition, m.key, b"T|" + m.value))
                producer.begin_transaction()
                acked = send_all(producer, out_topic, records)
                offsets = {TopicPartition(txns.topic, p): OffsetAndMetadata(o, "", -1) for p, o in positions.items()}
                bounded(f"ctp: {label}: send_offsets_to_transaction",
                        lambda: producer.send_offsets_to_transaction(offsets, consumer.group_metadata()))
                bounded(f"ctp: {label}: commit_transaction", producer.commit_transaction)
                out.add(label, "commit", acked)
                sent = positions
                n_txns += 1
            if done and positions == sent:
                break
            check_ctp_progress(started, seen, want_in, positions, in_ends)
        log_ctp_done(NAME, seen, n_txns, started)
        check_ctp_input(txns, seen, want_in)
        committed = {p: consumer.committed(TopicPartition(txns.topic, p)) for p in range(P)}
        check_ends(f"ctp: group {group}: committed() (TxnOffsetCommit)", txns.topic, committed, in_ends)
        log(NAME, f"ctp: group {group}: committed() = input end offsets {in_ends}")
    finally:
        consumer.close()
        producer.close(timeout=10)

    got, ends = read_to_end(bootstrap, out_topic, "read_committed")
    values = [v for recs in got.values() for _, _, v in recs]
    want = sorted(b"T|" + v for _, v in want_in.values())
    dups = sorted({v for v in values if values.count(v) > 1})
    check(not dups, f"ctp output {out_topic}: {len(dups)} transformed records appear more than once, first {dups[:3]}")
    check(sorted(values) == want, f"ctp output {out_topic}: read_committed has {len(values)} records, expected"
                                  f" each of the {len(want)} transformed inputs once; missing"
                                  f" {sorted(set(want) - set(values))[:3]}, extra {sorted(set(values) - set(want))[:3]}")
    out.compare("ctp output read_committed", got, out.committed_labels())
    check_ends("ctp output read_committed end_offsets()", out_topic, ends, out.layout())
    log(NAME, f"ctp output {out_topic}: each of the {len(want)} transformed records exactly once; end offsets {ends}")


def main(bootstrap):
    log(NAME, f"kafka-python {kp_version}")
    suffix = unique_suffix()
    topic = f"interop-kpt-{suffix}"
    t_out = f"interop-kpt-out-{suffix}"
    create_topic(bootstrap, topic)
    create_topic(bootstrap, t_out)
    txns = None
    with soft(NAME, "commit, abort, commit; read_committed vs read_uncommitted"):
        txns, in_ends = commit_abort_commit(bootstrap, topic, f"interop-kpt-main-{suffix}")
    with soft(NAME, "consume-transform-produce"):
        if txns is None or len(txns.committed_labels()) != 2:
            raise CheckFailed("skipped: the first step did not commit the input transactions")
        consume_transform_produce(bootstrap, txns, in_ends, t_out, f"interop-kpt-ctp-{suffix}",
                                  f"interop-kpt-ctp-{suffix}")


if __name__ == "__main__":
    run_main(NAME, main)

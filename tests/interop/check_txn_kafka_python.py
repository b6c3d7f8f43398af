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
from txn_common import TXN_PARTITIONS, Txns, check_ends, txn_records

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
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
    with soft(NAME, f"{when}: read_committed"):
        got, ends = read_to_end(bootstrap, txns.topic, "read_committed")
        check_ends(f"{when}: read_committed end_offsets() (last stable offset)", txns.topic, ends, ends_committed)
        n = txns.compare(f"{when}: read_committed", got, committed)
        log(NAME, f"{when}: read_committed read exactly {n} records ({'+'.join(committed) or 'none'}),"
                  f" end_offsets {ends}")
    with soft(NAME, f"{when}: read_uncommitted"):
        got, ends = read_to_end(bootstrap, txns.topic, "read_uncommitted")
        check_ends(f"{when}: read_uncommitted end_offsets()", txns.topic, ends, ends_uncommitted)
        n = txns.compare(f"{when}: read_uncommitted", got, uncommitted)
        log(NAME, f"{when}: read_uncommitted read all {n} records ({'+'.join(uncommitted)}), end_offsets {ends}")


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


def main(bootstrap):
    log(NAME, f"kafka-python {kp_version}")
    suffix = unique_suffix()
    topic = f"interop-kpt-{suffix}"
    create_topic(bootstrap, topic)
    with soft(NAME, "commit, abort, commit; read_committed vs read_uncommitted"):
        commit_abort_commit(bootstrap, topic, f"interop-kpt-main-{suffix}")


if __name__ == "__main__":
    run_main(NAME, main)

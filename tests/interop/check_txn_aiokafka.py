"""aiokafka transactions against Sluice.

1. AIOKafkaProducer(transactional_id=...) commits a transaction of 60 records to a 3-partition
   topic (`async with producer.transaction()`), writes a second one and waits for its acks, then
   aborts it (abort_transaction), and commits a third. While the second is open, a read_committed
   consumer's end_offsets() must be the last stable offset (the first offset of the open
   transaction) and it must read only the first transaction; read_uncommitted reads it too.
   Afterwards read_committed reads exactly the first and third transactions' records and
   read_uncommitted all three, at the acked offsets (one marker offset between transactions).
2. Consume-transform-produce: a subscribed AIOKafkaConsumer(isolation_level="read_committed",
   enable_auto_commit=False) reads the committed records; a second transactional producer writes
   a transformed copy of each batch to an output topic and commits the consumer's positions in
   the same transaction (send_offsets_to_transaction(offsets, group_id)). The output must hold
   every transformed record exactly once, and committed() must be the input's end offsets.
"""

import asyncio
import time

from common import CheckFailed, check, log, run_main, soft, unique_suffix
from txn_common import TXN_PARTITIONS, Txns, check_ctp_input, check_ctp_progress, log_ctp_done, check_ends, check_read, txn_records

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

NAME = "aiokafka txn"
P = TXN_PARTITIONS
READ_TIMEOUT = 20  # seconds to read a topic to its end
TXN_TIMEOUT = 30  # seconds for start (init)/commit/abort/send_offsets


async def create_topics(bootstrap, topics):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-aio-txn-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=P, replication_factor=1) for t in topics])
        deadline = time.monotonic() + 15
        for t in topics:
            while True:
                d = (await admin.describe_topics([t]))[0]
                if d["error_code"] == 0 and len(d["partitions"]) == P:
                    break
                if time.monotonic() > deadline:
                    raise CheckFailed(f"{t}: not in metadata with {P} partitions after create: {d}")
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    log(NAME, f"created {', '.join(topics)} with {P} partitions each")


async def txn_producer(bootstrap, txn_id, label):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=f"interop-aio-txn-{label}",
                         transactional_id=txn_id, linger_ms=5, request_timeout_ms=30000,
                         transaction_timeout_ms=30000)
    await asyncio.wait_for(p.start(), TXN_TIMEOUT)  # start() runs InitProducerId
    return p


async def send_all(producer, topic, records):
    """Sends (index, partition, key, value) records in the current transaction and waits for every
    ack; returns [(partition, offset, key, value)]."""
    futures = [await producer.send(topic, key=k, value=v, partition=p) for _, p, k, v in records]
    acked = []
    for (_, _, k, v), fut in zip(records, futures):
        md = await asyncio.wait_for(fut, 30)
        acked.append((md.partition, md.offset, k, v))
    return acked


async def read_to_end(bootstrap, topic, isolation):
    """assign() every partition from the beginning and read until the position reaches
    end_offsets() (for read_committed: the last stable offset). Returns
    ({partition: [(offset, key, value)]}, {partition: end offset})."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=f"interop-aio-txn-{isolation}",
                         group_id=None, enable_auto_commit=False, isolation_level=isolation,
                         fetch_max_wait_ms=100)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(P)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = {tp.partition: o for tp, o in (await asyncio.wait_for(c.end_offsets(tps), 10)).items()}
        got = {p: [] for p in range(P)}
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            positions = {tp.partition: await c.position(tp) for tp in tps}
            if all(positions[p] >= ends[p] for p in range(P)):
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{isolation}: {topic}: after {READ_TIMEOUT}s positions {positions},"
                                  f" end offsets {ends}; read {({p: len(v) for p, v in got.items()})}")
            for tp, msgs in (await c.getmany(timeout_ms=200)).items():
                for m in msgs:
                    got[tp.partition].append((m.offset, m.key, m.value))
        # Nothing past the end offsets either.
        for tp, msgs in (await c.getmany(timeout_ms=300)).items():
            for m in msgs:
                got[tp.partition].append((m.offset, m.key, m.value))
        return got, ends
    finally:
        await c.stop()


async def check_reads(bootstrap, txns, committed, uncommitted, ends_committed, ends_uncommitted, when):
    for isolation, want, want_ends in (("read_committed", committed, ends_committed),
                                       ("read_uncommitted", uncommitted, ends_uncommitted)):
        with soft(NAME, f"{when}: {isolation}"):
            got, ends = await read_to_end(bootstrap, txns.topic, isolation)
            check_read(NAME, txns, isolation, got, ends, want, want_ends, when)


async def commit_abort_commit(bootstrap, topic, txn_id):
    txns = Txns(topic)
    producer = await txn_producer(bootstrap, txn_id, "main")
    log(NAME, f"start() (InitProducerId) ok for transactional_id {txn_id}")
    try:
        async with producer.transaction():
            acked = await send_all(producer, topic, txn_records(topic, "t1"))
        txns.add("t1", "commit", acked)
        log(NAME, f"{topic}: t1: {len(acked)} records committed")

        await producer.begin_transaction()
        acked = await send_all(producer, topic, txn_records(topic, "t2"))
        txns.add("t2", "open", acked)
        lso = {p: min(o for (q, o) in txns.acked["t2"] if q == p) for p in range(P)}
        await check_reads(bootstrap, txns, ["t1"], ["t1", "t2"], lso, txns.layout(), "t2 open")
        await asyncio.wait_for(producer.abort_transaction(), TXN_TIMEOUT)
        txns.set_outcome("t2", "abort")
        log(NAME, f"{topic}: t2: {len(acked)} records acked, then aborted")

        async with producer.transaction():
            acked = await send_all(producer, topic, txn_records(topic, "t3"))
        txns.add("t3", "commit", acked)
        log(NAME, f"{topic}: t3: {len(acked)} records committed")
    finally:
        await producer.stop()
    ends = txns.layout()
    await check_reads(bootstrap, txns, ["t1", "t3"], ["t1", "t2", "t3"], ends, ends,
                      "after t1 commit, t2 abort, t3 commit")
    return txns, ends


async def consume_transform_produce(bootstrap, txns, in_ends, out_topic, group, txn_id):
    want_in = {(p, o): kv for label in txns.committed_labels() for (p, o), kv in txns.acked[label].items()}
    producer = await txn_producer(bootstrap, txn_id, "ctp")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="interop-aio-txn-ctp", group_id=group,
                                isolation_level="read_committed", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=10000,
                                heartbeat_interval_ms=1000, max_poll_interval_ms=30000, fetch_max_wait_ms=100)
    out = Txns(out_topic)
    seen = {}
    sent = {}
    n_txns = 0
    try:
        consumer.subscribe([txns.topic])
        started = time.monotonic()
        await asyncio.wait_for(consumer.start(), 30)  # waits for the first assignment
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=25)
            msgs = [m for ms in batches.values() for m in ms]
            positions = {tp.partition: await consumer.position(tp) for tp in consumer.assignment()}
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
                async with producer.transaction():
                    acked = await send_all(producer, out_topic, records)
                    offsets = {TopicPartition(txns.topic, p): o for p, o in positions.items()}
                    await asyncio.wait_for(producer.send_offsets_to_transaction(offsets, group), TXN_TIMEOUT)
                out.add(label, "commit", acked)
                sent = positions
                n_txns += 1
            if done and positions == sent:
                break
            check_ctp_progress(started, seen, want_in, positions, in_ends)
        log_ctp_done(NAME, seen, n_txns, started)
        check_ctp_input(txns, seen, want_in)
        committed = {p: await asyncio.wait_for(consumer.committed(TopicPartition(txns.topic, p)), 10)
                     for p in range(P)}
        check_ends(f"ctp: group {group}: committed() (TxnOffsetCommit)", txns.topic, committed, in_ends)
        log(NAME, f"ctp: group {group}: committed() = input end offsets {in_ends}")
    finally:
        await consumer.stop()
        await producer.stop()

    got, ends = await read_to_end(bootstrap, out_topic, "read_committed")
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


async def amain(bootstrap):
    log(NAME, f"aiokafka {aiokafka.__version__}")
    suffix = unique_suffix()
    t_in = f"interop-aiot-in-{suffix}"
    t_out = f"interop-aiot-out-{suffix}"
    await create_topics(bootstrap, [t_in, t_out])

    txns = None
    with soft(NAME, "commit, abort, commit; read_committed vs read_uncommitted"):
        txns, in_ends = await commit_abort_commit(bootstrap, t_in, f"interop-aiot-main-{suffix}")

    with soft(NAME, "consume-transform-produce"):
        if txns is None or len(txns.committed_labels()) != 2:
            raise CheckFailed("skipped: the first step did not commit the input transactions")
        await consume_transform_produce(bootstrap, txns, in_ends, t_out, f"interop-aiot-ctp-{suffix}",
                                        f"interop-aiot-ctp-{suffix}")


def main(bootstrap):
    asyncio.run(amain(bootstrap))


if __name__ == "__main__":
    run_main(NAME, main)

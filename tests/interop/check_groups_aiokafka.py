"""aiokafka consumer groups against Sluice: two subscribe() consumers, polled concurrently, split a
4-partition topic and read every record exactly once; commit(), committed(), a new member resuming
at the committed offsets, and an independent second group reading from the beginning."""

import asyncio
import time

from common import (GROUP_HEARTBEAT_MS, GROUP_MORE, GROUP_PARTITIONS, GROUP_RECORDS,
                    GROUP_SESSION_TIMEOUT_MS, GROUP_SETTLE, GROUP_WAIT, Abort, CheckFailed, Produced,
                    Tally, check, check_committed, describe_owned, group_records, group_wait_failed,
                    log, run_main, soft, split_problem, unique_suffix)

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

NAME = "aiokafka groups"
P = GROUP_PARTITIONS


async def create_topic(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-aio-groups-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=P, replication_factor=1)])
        deadline = time.monotonic() + 15
        while True:
            d = (await admin.describe_topics([topic]))[0]
            if d["error_code"] == 0 and len(d["partitions"]) == P:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{topic}: not in metadata with {P} partitions after create: {d}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    log(NAME, f"created {topic} with {P} partitions")


async def produce(bootstrap, produced, records):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="interop-aio-groups", acks="all",
                                linger_ms=5, request_timeout_ms=30000)
    await producer.start()
    try:
        futures = [(r, await producer.send(produced.topic, key=r[1], value=r[2])) for r in records]
        await producer.flush()
        for (i, k, v), fut in futures:
            md = await asyncio.wait_for(fut, 30)
            produced.ack(i, k, v, md.partition, md.offset)
    finally:
        await producer.stop()
    log(NAME, f"{produced.topic}: produced {len(records)} keyed records (acks=all); ends {produced.ends()}")


class CommitOnRevoke(ConsumerRebalanceListener):
    """Commits what this member read from the partitions it gives up, so a rebalance in the middle
    of the read (a member joining late) does not hand the new owner already-read records."""

    def __init__(self, label, tally):
        self.label = label
        self.tally = tally
        self.consumer = None
        self.active = True
        self.assignments = []
        self.errors = []

    async def on_partitions_revoked(self, revoked):
        if not self.active or not revoked:
            return
        pending = self.tally.next.get(self.label, {})
        offsets = {tp: pending[tp.partition] for tp in revoked if tp.partition in pending}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
            for tp, o in offsets.items():
                if pending.get(tp.partition) == o:
                    del pending[tp.partition]
            log(NAME, f"{self.label}: committed {sorted((tp.partition, o) for tp, o in offsets.items())}"
                      f" on revoke")
        except Exception as e:  # noqa: BLE001 - reported as a failure of the step
            self.errors.append(f"{self.label}: commit on revoke of {sorted(tp.partition for tp in offsets)}:"
                               f" {type(e).__name__}: {e}")

    async def on_partitions_assigned(self, assigned):
        self.assignments.append(sorted(tp.partition for tp in assigned))


def new_consumer(bootstrap, group, label):
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=f"interop-aio-{label}",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=GROUP_HEARTBEAT_MS,
        max_poll_interval_ms=20000,  # also the rebalance timeout the members send
        fetch_max_wait_ms=200,
    )


async def poll_group(group, members, tally, want, need_split, started=None):
    """Polls every member concurrently (one task each) until all of `want` was read (and, with
    need_split, the members split the partitions), then GROUP_SETTLE more seconds to catch late
    duplicates. Returns (seconds taken since `started` or now, {label: partitions owned})."""
    stop = asyncio.Event()

    async def run(label, c):
        while not stop.is_set():
            batches = await c.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                for m in msgs:
                    tally.add(label, tp.partition, m.offset, m.key, m.value)

    def owned():
        return {label: {tp.partition for tp in c.assignment()} for label, c in members}

    tasks = [asyncio.create_task(run(label, c), name=f"poll-{label}") for label, c in members]
    started = started or time.monotonic()
    try:
        while True:
            await asyncio.sleep(0.05)
            for t in tasks:
                if t.done():
                    t.result()  # raises the poll error
                    raise CheckFailed(f"group {group}: {t.get_name()} stopped polling")
            if tally.has_all(want) and (not need_split or split_problem(owned()) is None):
                break
            if time.monotonic() - started > GROUP_WAIT:
                group_wait_failed(group, tally, want, owned(), time.monotonic() - started)
        took = time.monotonic() - started
        await asyncio.sleep(GROUP_SETTLE)
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for t in pending:
            t.cancel()
    for t in done:
        t.result()
    check(not pending, f"group {group}: a getmany() did not return within 10 s")
    return took, owned()


async def committed_all(consumer, topic):
    return {p: await asyncio.wait_for(consumer.committed(TopicPartition(topic, p)), 10) for p in range(P)}


async def amain(bootstrap):
    log(NAME, f"aiokafka {aiokafka.__version__}")
    suffix = unique_suffix()
    topic = f"interop-aiog-{suffix}"
    g1 = f"interop-aiog-split-{suffix}"
    g2 = f"interop-aiog-other-{suffix}"
    produced = Produced(topic)

    await create_topic(bootstrap, topic)
    with soft(NAME, "produce"):
        await produce(bootstrap, produced, group_records(topic, 0, GROUP_RECORDS))
        produced.check_spread()
    if len(produced.at) != GROUP_RECORDS:
        raise Abort(f"{topic}: only {len(produced.at)} of {GROUP_RECORDS} records acked")
    ends = produced.ends()

    # 1. Two members of one group, polled concurrently, split the partitions and read every record once.
    tally = Tally(produced, g1)
    want = produced.positions(range(GROUP_RECORDS))
    members, listeners = [], []
    try:
        for label in ("c1", "c2"):
            c = new_consumer(bootstrap, g1, label)
            lst = CommitOnRevoke(label, tally)
            lst.consumer = c
            c.subscribe([topic], listener=lst)
            members.append((label, c))
            listeners.append(lst)
        started = time.monotonic()
        # start() of a subscribed consumer waits for its first assignment: start both at once.
        await asyncio.gather(*(c.start() for _, c in members))
        split_ok = False
        with soft(NAME, f"group {g1}: two members read {GROUP_RECORDS} records exactly once"):
            took, owned = await poll_group(g1, members, tally, want, need_split=True, started=started)
            tally.verify(want, "two members of one group, auto-commit off")
            problem = split_problem(owned)
            check(problem is None, f"group {g1}: after the read: {problem} ({describe_owned(owned)})")
            errors = [e for lst in listeners for e in lst.errors]
            check(not errors, f"group {g1}: {errors}")
            split_ok = True
            log(NAME, f"group {g1}: {describe_owned(owned)}; records per member and partition"
                      f" {tally.by_consumer()}; all {GROUP_RECORDS} once in {took:.1f}s"
                      f" (assignments seen: {[(lst.label, lst.assignments) for lst in listeners]})")

        # 2. commit() from both; committed() reads them back.
        for lst in listeners:
            lst.active = False
        with soft(NAME, f"group {g1}: commit() from both members"):
            check(split_ok, "skipped: the members did not read the topic")
            await asyncio.gather(*(asyncio.wait_for(c.commit(), 30) for _, c in members))
            for label, c in members:
                check_committed(g1, topic, await committed_all(c, topic), ends)
            log(NAME, f"group {g1}: commit() from both; committed() on each member = end offsets {ends}")
    finally:
        await asyncio.gather(*(c.stop() for _, c in members), return_exceptions=True)

    # 3. A new member resumes at the committed offsets: only the records produced since.
    with soft(NAME, f"produce {GROUP_MORE} more"):
        await produce(bootstrap, produced, group_records(topic, GROUP_RECORDS, GROUP_MORE))
    new_ends = produced.ends()
    with soft(NAME, f"group {g1}: a new member resumes at the committed offsets"):
        c3 = new_consumer(bootstrap, g1, "c3")
        await c3.start()
        try:
            check_committed(g1, topic, await committed_all(c3, topic), ends)
            c3.subscribe([topic])
            tally3 = Tally(produced, g1)
            want3 = produced.positions(range(GROUP_RECORDS, GROUP_RECORDS + GROUP_MORE))
            took, owned = await poll_group(g1, [("c3", c3)], tally3, want3, need_split=False)
            tally3.verify(want3, f"a new member must start at the committed offsets {ends}")
            check(owned["c3"] == set(range(P)), f"group {g1}: the only member owns {sorted(owned['c3'])}")
            await asyncio.wait_for(c3.commit(), 30)
            check_committed(g1, topic, await committed_all(c3, topic), new_ends)
            log(NAME, f"group {g1}: new member read exactly the {GROUP_MORE} new records in {took:.1f}s;"
                      f" committed {new_ends}")
        finally:
            await c3.stop()

    # 4. Another group has no commits and reads everything from the beginning.
    with soft(NAME, f"group {g2}: independent group reads all from the beginning"):
        c4 = new_consumer(bootstrap, g2, "c4")
        await c4.start()
        try:
            check_committed(g2, topic, await committed_all(c4, topic), {p: None for p in range(P)})
            c4.subscribe([topic])
            tally4 = Tally(produced, g2)
            want4 = set(produced.at)
            took, _ = await poll_group(g2, [("c4", c4)], tally4, want4, need_split=False)
            tally4.verify(want4, f"a second group must not see {g1}'s commits")
            log(NAME, f"group {g2}: read all {len(want4)} records from offset 0 in {took:.1f}s")
        finally:
            await c4.stop()


def main(bootstrap):
    asyncio.run(amain(bootstrap))


if __name__ == "__main__":
    run_main(NAME, main)

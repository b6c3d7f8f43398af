"""kafka-python consumer groups against Sluice: two subscribe() consumers split a 4-partition topic
and read every record exactly once; synchronous commits, committed(), a new member resuming at the
committed offsets, and an independent second group reading from the beginning."""

import threading
import time

from common import (GROUP_HEARTBEAT_MS, GROUP_MORE, GROUP_PARTITIONS, GROUP_RECORDS,
                    GROUP_SESSION_TIMEOUT_MS, GROUP_SETTLE, GROUP_WAIT, Abort, Produced,
                    Tally, check, check_committed, describe_owned, group_records, group_wait_failed,
                    log, run_main, soft, split_problem, unique_suffix)

from kafka import (AsyncConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer,
                   OffsetAndMetadata, TopicPartition)
from kafka import __version__ as kp_version
from kafka.admin import NewTopic

NAME = "kafka-python groups"
P = GROUP_PARTITIONS


def create_topic(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-kp-groups-admin")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=P, replication_factor=1)],
                            wait_for_metadata=True)
        n = len(admin.describe_topics([topic])[0]["partitions"])
        check(n == P, f"{topic}: {n} partitions in metadata, expected {P}")
    finally:
        admin.close()
    log(NAME, f"created {topic} with {P} partitions")


def produce(bootstrap, produced, records):
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="interop-kp-groups", acks="all",
                             linger_ms=5, request_timeout_ms=30000)
    try:
        futures = [(r, producer.send(produced.topic, key=r[1], value=r[2])) for r in records]
        producer.flush(timeout=30)
        for (i, k, v), fut in futures:
            md = fut.get(timeout=30)
            produced.ack(i, k, v, md.partition, md.offset)
    finally:
        producer.close(timeout=10)
    log(NAME, f"{produced.topic}: produced {len(records)} keyed records (acks=all); ends {produced.ends()}")


class CommitOnRevoke(AsyncConsumerRebalanceListener):
    """Commits what this member read from the partitions it gives up, so a rebalance in the middle
    of the read (a member joining late) does not hand the new owner already-read records.

    kafka-python 3 runs listeners on its IO thread, where only the async commit may be awaited."""

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
        with self.tally.lock:
            pending = self.tally.next.get(self.label, {})
            offsets = {tp: OffsetAndMetadata(pending[tp.partition], "", -1)
                       for tp in revoked if tp.partition in pending}
        if not offsets:
            return
        try:
            await self.consumer.commit_async(offsets)
            with self.tally.lock:
                for tp, o in offsets.items():
                    if pending.get(tp.partition) == o.offset:
                        del pending[tp.partition]
            log(NAME, f"{self.label}: committed {sorted((tp.partition, o.offset) for tp, o in offsets.items())}"
                      f" on revoke")
        except Exception as e:  # noqa: BLE001 - reported as a failure of the step
            self.errors.append(f"{self.label}: commit on revoke of {sorted(tp.partition for tp in offsets)}:"
                               f" {type(e).__name__}: {e}")

    async def on_partitions_assigned(self, assigned):
        self.assignments.append(sorted(tp.partition for tp in assigned))


def new_consumer(bootstrap, group, label):
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=f"interop-kp-{label}",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=GROUP_HEARTBEAT_MS,
        max_poll_interval_ms=20000,  # also the rebalance timeout the members send
        fetch_max_wait_ms=200,
    )


def poll_group(group, members, tally, want, need_split):
    """Polls every member from its own thread until all of `want` was read (and, with need_split,
    the members split the partitions), then GROUP_SETTLE more seconds to catch late duplicates.
    Returns (seconds taken, {label: partitions owned}).

    One thread per member, each with a long poll timeout: kafka-python 3.0.12 drops a finished
    JoinGroup/SyncGroup round trip whose result arrives between two poll() calls and joins again
    (BaseCoordinator.join_group_async replaces a done join task with a new one), so alternating
    short polls of two consumers from one thread makes the group rebalance every heartbeat."""
    stop = threading.Event()
    owned = {label: set() for label, _ in members}
    errors = []

    def run(label, c):
        try:
            while not stop.is_set():
                records = c.poll(timeout_ms=500)
                with tally.lock:
                    for tp, msgs in records.items():
                        for m in msgs:
                            tally.add(label, tp.partition, m.offset, m.key, m.value)
                    owned[label] = {tp.partition for tp in c.assignment()}
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{label}: poll: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=m, name=f"poll-{m[0]}", daemon=True) for m in members]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        while True:
            time.sleep(0.05)
            check(not errors, f"group {group}: {errors}")
            with tally.lock:
                if tally.has_all(want) and (not need_split or split_problem(owned) is None):
                    break
                if time.monotonic() - started > GROUP_WAIT:
                    group_wait_failed(group, tally, want, owned, time.monotonic() - started)
        took = time.monotonic() - started
        time.sleep(GROUP_SETTLE)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    check(not errors, f"group {group}: {errors}")
    check(not any(t.is_alive() for t in threads), f"group {group}: a poll() did not return within 10 s")
    with tally.lock:
        return took, {label: set(ps) for label, ps in owned.items()}


def committed_all(consumer, topic):
    return {p: consumer.committed(TopicPartition(topic, p), timeout_ms=10000) for p in range(P)}


def main(bootstrap):
    log(NAME, f"kafka-python {kp_version}")
    suffix = unique_suffix()
    topic = f"interop-kpg-{suffix}"
    g1 = f"interop-kpg-split-{suffix}"
    g2 = f"interop-kpg-other-{suffix}"
    produced = Produced(topic)
    first = group_records(topic, 0, GROUP_RECORDS)
    more = group_records(topic, GROUP_RECORDS, GROUP_MORE)

    create_topic(bootstrap, topic)
    with soft(NAME, "produce"):
        produce(bootstrap, produced, first)
        produced.check_spread()
    if len(produced.at) != GROUP_RECORDS:
        raise Abort(f"{topic}: only {len(produced.at)} of {GROUP_RECORDS} records acked")
    ends = produced.ends()

    # 1. Two members of one group split the partitions and read every record once.
    tally = Tally(produced, g1)
    want = produced.positions(range(GROUP_RECORDS))
    members, listeners = [], []
    split_ok = False
    try:
        for label in ("c1", "c2"):
            c = new_consumer(bootstrap, g1, label)
            lst = CommitOnRevoke(label, tally)
            lst.consumer = c
            c.subscribe([topic], listener=lst)
            members.append((label, c))
            listeners.append(lst)
        with soft(NAME, f"group {g1}: two members read {GROUP_RECORDS} records exactly once"):
            took, owned = poll_group(g1, members, tally, want, need_split=True)
            tally.verify(want, "two members of one group, auto-commit off")
            problem = split_problem(owned)
            check(problem is None, f"group {g1}: after the read: {problem} ({describe_owned(owned)})")
            errors = [e for lst in listeners for e in lst.errors]
            check(not errors, f"group {g1}: {errors}")
            split_ok = True
            log(NAME, f"group {g1}: {describe_owned(owned)}; records per member and partition"
                      f" {tally.by_consumer()}; all {GROUP_RECORDS} once in {took:.1f}s"
                      f" (assignments seen: {[(lst.label, lst.assignments) for lst in listeners]})")

        # 2. Synchronous commits from both; committed() reads them back.
        for lst in listeners:
            lst.active = False
        with soft(NAME, f"group {g1}: commit() from both members"):
            check(split_ok, "skipped: the members did not read the topic")
            for label, c in members:
                c.commit()
            for label, c in members:
                check_committed(g1, topic, committed_all(c, topic), ends)
            log(NAME, f"group {g1}: commit() from both; committed() on each member = end offsets {ends}")
    finally:
        for _, c in members:
            c.close(autocommit=False)

    # 3. A new member resumes at the committed offsets: only the records produced since.
    with soft(NAME, f"produce {GROUP_MORE} more"):
        produce(bootstrap, produced, more)
    new_ends = produced.ends()
    with soft(NAME, f"group {g1}: a new member resumes at the committed offsets"):
        c3 = new_consumer(bootstrap, g1, "c3")
        try:
            check_committed(g1, topic, committed_all(c3, topic), ends)
            c3.subscribe([topic])
            tally3 = Tally(produced, g1)
            want3 = produced.positions(range(GROUP_RECORDS, GROUP_RECORDS + GROUP_MORE))
            took, owned = poll_group(g1, [("c3", c3)], tally3, want3, need_split=False)
            tally3.verify(want3, f"a new member must start at the committed offsets {ends}")
            owned = owned["c3"]
            check(owned == set(range(P)), f"group {g1}: the only member owns {sorted(owned)}")
            c3.commit()
            check_committed(g1, topic, committed_all(c3, topic), new_ends)
            log(NAME, f"group {g1}: new member read exactly the {GROUP_MORE} new records in {took:.1f}s;"
                      f" committed {new_ends}")
        finally:
            c3.close(autocommit=False)

    # 4. Another group has no commits and reads everything from the beginning.
    with soft(NAME, f"group {g2}: independent group reads all from the beginning"):
        c4 = new_consumer(bootstrap, g2, "c4")
        try:
            check_committed(g2, topic, committed_all(c4, topic), {p: None for p in range(P)})
            c4.subscribe([topic])
            tally4 = Tally(produced, g2)
            want4 = set(produced.at)
            took, _ = poll_group(g2, [("c4", c4)], tally4, want4, need_split=False)
            tally4.verify(want4, f"a second group must not see {g1}'s commits")
            log(NAME, f"group {g2}: read all {len(want4)} records from offset 0 in {took:.1f}s")
        finally:
            c4.close(autocommit=False)

    with soft(NAME, f"group {g1}: commits unchanged by {g2}"):
        c5 = KafkaConsumer(bootstrap_servers=bootstrap, client_id="interop-kp-c5", group_id=g1,
                           enable_auto_commit=False)
        try:
            check_committed(g1, topic, committed_all(c5, topic), new_ends)
        finally:
            c5.close(autocommit=False)


if __name__ == "__main__":
    run_main(NAME, main)

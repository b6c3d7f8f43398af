"""confluent-kafka (librdkafka) consumer groups against Sluice: two subscribe() consumers split a
4-partition topic and read every record exactly once, with the default (eager) assignors and with
cooperative-sticky; synchronous commits, committed(), a new member resuming at the committed
offsets, and an independent second group reading from the beginning."""

import time

from common import (GROUP_HEARTBEAT_MS, GROUP_MORE, GROUP_PARTITIONS, GROUP_RECORDS,
                    GROUP_SESSION_TIMEOUT_MS, GROUP_SETTLE, GROUP_WAIT, Abort, CheckFailed, Produced,
                    Tally, check, check_committed, describe_owned, group_records, group_wait_failed,
                    log, run_main, soft, split_problem, unique_suffix)

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import version as ck_version, libversion
from confluent_kafka.admin import AdminClient, NewTopic

NAME = "confluent-kafka groups"
P = GROUP_PARTITIONS


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": "interop-ck-groups-admin"})
    admin.create_topics([NewTopic(topic, num_partitions=P, replication_factor=1)],
                        operation_timeout=30)[topic].result(30)
    deadline = time.monotonic() + 15
    while True:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == P:
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"{topic}: not in metadata with {P} partitions after create: {md}")
        time.sleep(0.2)
    log(NAME, f"created {topic} with {P} partitions")


def produce(bootstrap, produced, records):
    producer = Producer({"bootstrap.servers": bootstrap, "client.id": "interop-ck-groups", "acks": "all",
                         "linger.ms": 5, "message.timeout.ms": 30000})
    errors = []

    def on_delivery(err, msg, rec):
        if err is not None:
            errors.append(f"record #{rec[0]}: {err}")
        else:
            try:
                produced.ack(rec[0], rec[1], rec[2], msg.partition(), msg.offset())
            except CheckFailed as e:
                errors.append(str(e))

    for r in records:
        while True:
            try:
                producer.produce(produced.topic, key=r[1], value=r[2],
                                 on_delivery=lambda err, msg, r=r: on_delivery(err, msg, r))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(30)
    check(left == 0, f"{produced.topic}: {left} records unacknowledged after flush(30)")
    check(not errors, f"{produced.topic}: {len(errors)} delivery errors, first: {errors[:3]}")
    log(NAME, f"{produced.topic}: produced {len(records)} keyed records (acks=all); ends {produced.ends()}")


class Member:
    """One consumer of a group, with rebalance callbacks that commit what it read from the
    partitions it gives up (so a rebalance in the middle of the read hands over no re-reads)."""

    def __init__(self, bootstrap, group, label, tally, strategy=None):
        conf = {
            "bootstrap.servers": bootstrap,
            "client.id": f"interop-ck-{label}",
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": GROUP_SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": GROUP_HEARTBEAT_MS,
            "max.poll.interval.ms": 20000,  # also the rebalance timeout the member sends
            "fetch.wait.max.ms": 100,
        }
        if strategy:
            conf["partition.assignment.strategy"] = strategy
        self.label = label
        self.group = group
        self.tally = tally
        self.consumer = Consumer(conf)
        self.active = True
        self.events = []  # ("+" or "-", [partitions]) per callback
        self.errors = []

    def subscribe(self, topic):
        self.topic = topic
        self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_lost)

    def on_assign(self, consumer, partitions):
        self.events.append(("+", sorted(tp.partition for tp in partitions)))

    def on_lost(self, consumer, partitions):
        self.events.append(("lost", sorted(tp.partition for tp in partitions)))
        if self.active:
            self.errors.append(f"{self.label}: partitions {sorted(tp.partition for tp in partitions)} lost")

    def on_revoke(self, consumer, partitions):
        self.events.append(("-", sorted(tp.partition for tp in partitions)))
        if not self.active:
            return
        mine = self.tally.next.get(self.label, {})
        offsets = [TopicPartition(tp.topic, tp.partition, mine[tp.partition])
                   for tp in partitions if tp.partition in mine]
        if not offsets:
            return
        try:
            self.commit(offsets)
            log(NAME, f"{self.label}: committed {[(tp.partition, tp.offset) for tp in offsets]} on revoke")
        except Exception as e:  # noqa: BLE001 - reported as a failure of the step
            self.errors.append(f"{self.label}: commit on revoke: {type(e).__name__}: {e}")

    def commit(self, offsets=None):
        """Synchronous commit (of `offsets`, or of the offsets librdkafka stored for what it
        returned); per-partition errors raise. Committed partitions leave tally.next."""
        if offsets is None:
            res = self.consumer.commit(asynchronous=False)
        else:
            res = self.consumer.commit(offsets=offsets, asynchronous=False)
        bad = [(tp.partition, str(tp.error)) for tp in res or [] if tp.error is not None]
        check(not bad, f"group {self.group}: {self.label}: commit errors {bad}")
        mine = self.tally.next.get(self.label, {})
        for tp in res or []:
            if mine.get(tp.partition) == tp.offset:
                del mine[tp.partition]
        return {tp.partition: tp.offset for tp in res or []}

    def commit_read(self):
        """Commits the next offset of every partition it owns and read from."""
        mine = self.tally.next.get(self.label, {})
        owned = self.owned()
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(mine.items()) if p in owned]
        return self.commit(offsets) if offsets else {}

    def owned(self):
        return {tp.partition for tp in self.consumer.assignment()}

    def committed(self, topic):
        res = self.consumer.committed([TopicPartition(topic, p) for p in range(P)], timeout=10)
        bad = [(tp.partition, str(tp.error)) for tp in res if tp.error is not None]
        check(not bad, f"group {self.group}: committed() errors {bad}")
        return {tp.partition: None if tp.offset == OFFSET_INVALID else tp.offset for tp in res}

    def poll_into(self, timeout):
        for m in self.consumer.consume(num_messages=500, timeout=timeout):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise CheckFailed(f"group {self.group}: {self.label}: consumer error {m.error()}")
            self.tally.add(self.label, m.partition(), m.offset(), m.key(), m.value())

    def close(self):
        self.active = False
        self.consumer.close()


def poll_group(group, members, tally, want, need_split):
    """Polls the members in turn until all of `want` was read (and, with need_split, the members
    split the partitions), then GROUP_SETTLE more seconds to catch late duplicates. librdkafka runs
    the group protocol on its own threads; consume() serves the rebalance callbacks."""
    started = time.monotonic()
    while True:
        for m in members:
            m.poll_into(0.1)
        owned = {m.label: m.owned() for m in members}
        errors = [e for m in members for e in m.errors]
        check(not errors, f"group {group}: {errors}")
        if tally.has_all(want) and (not need_split or split_problem(owned) is None):
            break
        if time.monotonic() - started > GROUP_WAIT:
            group_wait_failed(group, tally, want, owned, time.monotonic() - started)
    took = time.monotonic() - started
    settle = time.monotonic() + GROUP_SETTLE
    while time.monotonic() < settle:
        for m in members:
            m.poll_into(0.1)
    errors = [e for m in members for e in m.errors]
    check(not errors, f"group {group}: {errors}")
    return took, {m.label: m.owned() for m in members}


def two_members_read(bootstrap, group, topic, produced, want, what):
    """Two members subscribe together, split the partitions, read `want` exactly once and commit
    what they read synchronously; committed() on each must then be the end offsets."""
    tally = Tally(produced, group)
    members = []
    try:
        for label in ("c1", "c2"):
            m = Member(bootstrap, group, label, tally)
            m.subscribe(topic)
            members.append(m)
        took, owned = poll_group(group, members, tally, want, need_split=True)
        tally.verify(want, what)
        log(NAME, f"group {group}: {describe_owned(owned)}; records per member and partition"
                  f" {tally.by_consumer()}; all {len(want)} once in {took:.1f}s"
                  f" (callbacks: {[(m.label, m.events) for m in members]})")
        commit_both(group, topic, members, want)
    finally:
        for m in members:
            m.close()


def commit_both(group, topic, members, want):
    for m in members:
        m.active = False
    for m in members:
        m.commit_read()
    ends = {p: max(o for (q, o) in want if q == p) + 1 for p in range(P)}
    for m in members:
        check_committed(group, topic, m.committed(topic), ends)
    log(NAME, f"group {group}: synchronous commit from both; committed() on each = {ends}")


def cooperative_handoff(bootstrap, group, topic, produced):
    """cooperative-sticky: c1 starts alone, gets every partition and reads everything; when c2
    joins, c1 gives up half of the partitions incrementally (keeping the rest), committing its
    offsets there from the revoke callback; c2 must go on from those commits (re-reading none),
    and both then read their share of records produced after the split."""
    tally = Tally(produced, group)
    members = []
    try:
        c1 = Member(bootstrap, group, "c1", tally, "cooperative-sticky")
        c1.subscribe(topic)
        members.append(c1)
        took, owned = poll_group(group, [c1], tally, set(produced.at), need_split=False)
        check(owned["c1"] == set(range(P)), f"group {group}: c1 alone owns {sorted(owned['c1'])}")
        log(NAME, f"group {group}: c1 alone owns all {P} partitions and read all {len(produced.at)}"
                  f" records in {took:.1f}s; c2 joins")

        c2 = Member(bootstrap, group, "c2", tally, "cooperative-sticky")
        c2.subscribe(topic)
        members.append(c2)
        took, owned = poll_group(group, members, tally, set(produced.at), need_split=True)
        revoked = {p for kind, ps in c1.events if kind == "-" for p in ps}
        check(revoked == owned["c2"] and not owned["c1"] & revoked,
              f"group {group}: cooperative-sticky: c1 revoked {sorted(revoked)} (callbacks {c1.events}),"
              f" c2 owns {sorted(owned['c2'])}, c1 owns {sorted(owned['c1'])}: c1 should give up exactly"
              f" c2's partitions and keep its others")
        log(NAME, f"group {group}: split after {took:.1f}s: {describe_owned(owned)}"
                  f" (callbacks: {[(m.label, m.events) for m in members]})")

        base = len(produced.at)
        produce(bootstrap, produced, group_records(topic, base, GROUP_MORE))
        want = set(produced.at)
        took, owned = poll_group(group, members, tally, want, need_split=True)
        tally.verify(want, "c2 must go on from c1's commits on the partitions it was given")
        per = tally.by_consumer()
        check(per.get("c2"), f"group {group}: c2 read nothing of the {GROUP_MORE} records produced"
                              f" after the split ({per})")
        log(NAME, f"group {group}: {describe_owned(owned)}; records per member and partition {per};"
                  f" all {len(want)} once")
        commit_both(group, topic, members, want)
    finally:
        for m in members:
            m.close()


def one_member_read(bootstrap, group, label, topic, produced, want, what, committed_before):
    """One member: committed() before subscribing must be `committed_before`; it must then read
    exactly `want`. Commits (librdkafka's stored offsets) and returns committed()."""
    tally = Tally(produced, group)
    m = Member(bootstrap, group, label, tally)
    try:
        check_committed(group, topic, m.committed(topic), committed_before)
        m.subscribe(topic)
        took, owned = poll_group(group, [m], tally, want, need_split=False)
        tally.verify(want, what)
        check(owned[label] == set(range(P)), f"group {group}: the only member owns {sorted(owned[label])}")
        m.active = False
        m.commit()
        log(NAME, f"group {group}: one member read exactly the {len(want)} expected records in {took:.1f}s")
        return m.committed(topic)
    finally:
        m.close()


def main(bootstrap):
    log(NAME, f"confluent-kafka {ck_version()[0]}, librdkafka {libversion()[0]}")
    suffix = unique_suffix()
    topic = f"interop-ckg-{suffix}"
    g1 = f"interop-ckg-split-{suffix}"
    g2 = f"interop-ckg-other-{suffix}"
    g3 = f"interop-ckg-coop-{suffix}"
    produced = Produced(topic)

    create_topic(bootstrap, topic)
    with soft(NAME, "produce"):
        produce(bootstrap, produced, group_records(topic, 0, GROUP_RECORDS))
        produced.check_spread()
    if len(produced.at) != GROUP_RECORDS:
        raise Abort(f"{topic}: only {len(produced.at)} of {GROUP_RECORDS} records acked")
    ends = produced.ends()

    # 1-2. Two members (default assignors: range,roundrobin) read everything once and commit.
    with soft(NAME, f"group {g1}: two members read {GROUP_RECORDS} records once and commit"):
        two_members_read(bootstrap, g1, topic, produced, produced.positions(range(GROUP_RECORDS)),
                         "two members of one group, auto-commit off")

    # 3. A new member resumes at the committed offsets: only the records produced since.
    with soft(NAME, f"produce {GROUP_MORE} more"):
        produce(bootstrap, produced, group_records(topic, GROUP_RECORDS, GROUP_MORE))
    new_ends = produced.ends()
    with soft(NAME, f"group {g1}: a new member resumes at the committed offsets"):
        want = produced.positions(range(GROUP_RECORDS, GROUP_RECORDS + GROUP_MORE))
        after = one_member_read(bootstrap, g1, "c3", topic, produced, want,
                                f"a new member must start at the committed offsets {ends}", ends)
        check_committed(g1, topic, after, new_ends)

    # 4. Another group has no commits and reads everything from the beginning.
    with soft(NAME, f"group {g2}: independent group reads all from the beginning"):
        one_member_read(bootstrap, g2, "c4", topic, produced, set(produced.at),
                        f"a second group must not see {g1}'s commits", {p: None for p in range(P)})

    # 5. cooperative-sticky: incremental handoff from a lone member to a second one.
    with soft(NAME, f"group {g3}: cooperative-sticky members split the partitions"):
        cooperative_handoff(bootstrap, g3, topic, produced)

if __name__ == "__main__":
    run_main(NAME, main)

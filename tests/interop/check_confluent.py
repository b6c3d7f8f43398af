"""confluent-kafka (librdkafka) against Sluice: admin create/delete/list_offsets/describe_cluster,
produce every codec (plain and idempotent), consume by assign(), watermarks and offsets_for_times.

The consumer has a group.id only because the client requires one to construct a Consumer; it never
subscribes or commits (enable.auto.commit=false, enable.auto.offset.store=false), so no group
coordinator is needed."""

import time

from common import (check_ack, round_trip_topics, CONSUME_TIMEOUT, OFFSETS_FOR_TIMES_RULE, PARTITIONS, CheckFailed, by_partition,
                    check, compare, consume_timed_out, expected_end_offsets, expected_records,
                    log, offsets_for_times_cases, run_main, skip_timed_out, soft, unique_suffix)

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition, TIMESTAMP_CREATE_TIME)
from confluent_kafka import version as ck_version, libversion
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

NAME = "confluent-kafka"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def produce(bootstrap, topic, records, codec, idempotent):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": f"interop-{NAME}",
        "acks": "all",
        "compression.type": codec,
        "enable.idempotence": idempotent,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    })
    acked = {}
    errors = []

    def on_delivery(err, msg, index):
        if err is not None:
            errors.append(f"record #{index}: {err}")
        else:
            acked[index] = (msg.partition(), msg.offset())

    for r in records:
        kwargs = dict(value=r.value, partition=r.partition, timestamp=r.timestamp,
                      on_delivery=lambda err, msg, i=r.index: on_delivery(err, msg, i))
        if r.key is not None:
            kwargs["key"] = r.key
        if r.headers:
            kwargs["headers"] = r.headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    check(left == 0, f"{topic}: {left} records still unacknowledged after flush(60)")
    check(not errors, f"{topic}: {len(errors)} delivery errors, first: {errors[:3]}")
    next_offset = {p: 0 for p in range(PARTITIONS)}
    for r in records:
        p, off = acked[r.index]
        check_ack(topic, r, p, off, next_offset)
    log(NAME, f"{topic}: produced {len(records)} records (codec={codec}, idempotent={idempotent})")


def new_consumer(bootstrap, topic):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "client.id": f"interop-{NAME}",
        "group.id": f"interop-unused-{topic}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
    })


def consume(bootstrap, topic, expected):
    """Fetch only: assign() at explicit offset 0 (no ListOffsets involved)."""
    ends = expected_end_offsets(expected)
    consumer = new_consumer(bootstrap, topic)
    got = {p: [] for p in range(PARTITIONS)}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + CONSUME_TIMEOUT
        while any(len(got[p]) < ends[p] for p in got):
            if time.monotonic() > deadline:
                consume_timed_out(topic, got, ends)
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error():
                    raise CheckFailed(f"{topic}: consumer error {m.error()}")
                ts_type, ts = m.timestamp()
                check(ts_type == TIMESTAMP_CREATE_TIME,
                      f"{topic}[{m.partition()}]@{m.offset()}: timestamp type {ts_type} != CreateTime")
                got[m.partition()].append((m.offset(), m.key(), m.value(), m.headers(), ts))
        extra = consumer.consume(num_messages=10, timeout=0.5)
        check(not extra, f"{topic}: consumed past the end: {[(m.partition(), m.offset(), m.error()) for m in extra]}")
    finally:
        consumer.close()
    compare(NAME, topic, expected, got)


def list_offsets(bootstrap, topic, expected):
    """ListOffsets through the consumer: OFFSET_BEGINNING, watermarks, offsets_for_times."""
    ends = expected_end_offsets(expected)
    consumer = new_consumer(bootstrap, topic)
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        first = {}
        deadline = time.monotonic() + CONSUME_TIMEOUT
        while len(first) < PARTITIONS and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=100, timeout=0.5):
                check(not m.error(), f"{topic}: consumer error {m.error()} from OFFSET_BEGINNING")
                first.setdefault(m.partition(), m.offset())
        check(first == {p: 0 for p in range(PARTITIONS)},
              f"{topic}: first offsets read from OFFSET_BEGINNING {first}, expected 0 on each partition")
        for p in range(PARTITIONS):
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            check((lo, hi) == (0, ends[p]), f"{topic}[{p}]: watermarks {(lo, hi)} != {(0, ends[p])}")
        for p, ts, want in offsets_for_times_cases(expected):
            res = consumer.offsets_for_times([TopicPartition(topic, p, ts)], timeout=10)[0]
            check(res.error is None, f"{topic}[{p}]: offsets_for_times({ts}) error {res.error}")
            want_off = -1 if want is None else want  # librdkafka reports "none" as OFFSET_END (-1)
            check(res.offset == want_off,
                  f"{topic}[{p}]: offsets_for_times({ts}) = {res.offset}, expected {want_off}"
                  f" ({OFFSETS_FOR_TIMES_RULE})")
    finally:
        consumer.close()
    log(NAME, f"{topic}: OFFSET_BEGINNING, watermarks and offsets_for_times match")


def admin_list_offsets(admin, topic, expected):
    ends = expected_end_offsets(expected)
    parts = by_partition(expected)

    def ask(spec_for):
        specs = {TopicPartition(topic, p): spec_for(p) for p in range(PARTITIONS)}
        return {tp.partition: f.result(30) for tp, f in admin.list_offsets(specs).items()}

    res = ask(lambda p: OffsetSpec.earliest())
    for p in range(PARTITIONS):
        check(res[p].offset == 0, f"{topic}[{p}]: admin list_offsets earliest = {res[p].offset}")
    res = ask(lambda p: OffsetSpec.latest())
    for p in range(PARTITIONS):
        check(res[p].offset == ends[p], f"{topic}[{p}]: admin list_offsets latest = {res[p].offset}, want {ends[p]}")
    mid = {p: len(parts[p]) // 2 for p in range(PARTITIONS)}
    res = ask(lambda p: OffsetSpec.for_timestamp(parts[p][mid[p]].timestamp))
    for p in range(PARTITIONS):
        want = (mid[p], parts[p][mid[p]].timestamp)
        check((res[p].offset, res[p].timestamp) == want,
              f"{topic}[{p}]: admin list_offsets for_timestamp({want[1]}) = offset {res[p].offset}"
              f" timestamp {res[p].timestamp}, expected offset {want[0]} timestamp {want[1]}"
              f" ({OFFSETS_FOR_TIMES_RULE})")
    log(NAME, f"{topic}: admin list_offsets earliest/latest/for_timestamp match")


def topic_names(admin):
    return set(admin.list_topics(timeout=10).topics)


def main(bootstrap):
    log(NAME, f"confluent-kafka {ck_version()[0]}, librdkafka {libversion()[0]}")
    suffix = unique_suffix()
    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": f"interop-{NAME}-admin"})

    md = admin.list_topics(timeout=10)
    check(len(md.brokers) == 1, f"metadata brokers: {md.brokers}")
    with soft(NAME, "describe_cluster"):
        desc = admin.describe_cluster(request_timeout=10).result(30)
        check(len(desc.nodes) == 1, f"describe_cluster nodes: {desc.nodes}")
        log(NAME, f"describe_cluster ok (cluster id {desc.cluster_id})")

    runs = [(c, False) for c in CODECS] + [("none", True), ("zstd", True)]
    topics = {f"interop-ck-{c}-{'idem' if i else 'plain'}-{suffix}": (c, i) for c, i in runs}
    futs = admin.create_topics([NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in topics],
                               operation_timeout=30)
    for t, f in futs.items():
        f.result(30)
    deadline = time.monotonic() + 15
    while True:
        md = admin.list_topics(timeout=10)
        missing = [t for t in topics if t not in md.topics or md.topics[t].error is not None
                   or len(md.topics[t].partitions) != PARTITIONS]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"created topics missing or wrong in metadata: {missing}")
        time.sleep(0.2)
    log(NAME, f"created {len(topics)} topics with {PARTITIONS} partitions")

    first = next(iter(topics))
    with soft(NAME, "create existing topic"):
        try:
            admin.create_topics([NewTopic(first, num_partitions=1, replication_factor=1)])[first].result(30)
            raise CheckFailed(f"re-creating {first} succeeded; expected TOPIC_ALREADY_EXISTS")
        except KafkaException as e:
            check(e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS,
                  f"re-creating {first}: {e}, expected TOPIC_ALREADY_EXISTS")

    round_trip_topics(NAME, bootstrap, topics, produce, consume, list_offsets)
    with soft(NAME, f"{first}: admin list_offsets"):
        admin_list_offsets(admin, first, expected_records(first))

    for t, f in admin.delete_topics(list(topics), operation_timeout=30).items():
        f.result(30)
    deadline = time.monotonic() + 15
    while set(topics) & topic_names(admin):
        if time.monotonic() > deadline:
            raise CheckFailed(f"topics still in metadata after delete: {sorted(set(topics) & topic_names(admin))}")
        time.sleep(0.2)
    log(NAME, f"deleted {len(topics)} topics; gone from metadata")


if __name__ == "__main__":
    run_main(NAME, main)

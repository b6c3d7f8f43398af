"""kafka-python against Sluice: admin create/delete, produce every codec, consume by assign(),
list offsets. No consumer group: group_id=None, no commits."""

import time

from common import (check_ack, round_trip_topics, CONSUME_TIMEOUT, OFFSETS_FOR_TIMES_RULE, PARTITIONS, CheckFailed, by_partition,
                    check, compare, consume_timed_out, expected_end_offsets, expected_records,
                    log, offsets_for_times_cases, run_main, skip_timed_out, soft, unique_suffix)

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import __version__ as kp_version
from kafka.admin import OffsetSpec

NAME = "kafka-python"
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def produce(bootstrap, topic, records, codec, idempotent):
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=f"interop-{NAME}",
        acks="all",
        compression_type=codec,
        enable_idempotence=idempotent,
        linger_ms=5,
        request_timeout_ms=30000,
    )
    try:
        futures = [
            (r, producer.send(topic, value=r.value, key=r.key, headers=r.headers,
                              partition=r.partition, timestamp_ms=r.timestamp))
            for r in records
        ]
        producer.flush(timeout=60)
        next_offset = {p: 0 for p in range(PARTITIONS)}
        for r, fut in futures:
            md = fut.get(timeout=30)
            check_ack(topic, r, md.partition, md.offset, next_offset)
    finally:
        producer.close(timeout=10)
    log(NAME, f"{topic}: produced {len(records)} records (codec={codec}, idempotent={idempotent})")


def new_consumer(bootstrap):
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=f"interop-{NAME}",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
    )


def consume(bootstrap, topic, expected):
    """Fetch only: assign() and seek to offset 0 explicitly (no ListOffsets involved)."""
    ends = expected_end_offsets(expected)
    consumer = new_consumer(bootstrap)
    got = {p: [] for p in range(PARTITIONS)}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + CONSUME_TIMEOUT
        while any(len(got[p]) < ends[p] for p in got):
            if time.monotonic() > deadline:
                consume_timed_out(topic, got, ends)
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    check(m.timestamp_type == 0,
                          f"{topic}[{tp.partition}]@{m.offset}: timestamp_type {m.timestamp_type} != 0 (CreateTime)")
                    got[tp.partition].append((m.offset, m.key, m.value, m.headers, m.timestamp))
        extra = consumer.poll(timeout_ms=500)
        check(not any(extra.values()), f"{topic}: consumed records past the end: {extra}")
    finally:
        consumer.close()
    compare(NAME, topic, expected, got)


def list_offsets(bootstrap, topic, expected):
    """ListOffsets through the consumer: seek_to_beginning, beginning/end offsets, offsets_for_times."""
    ends = expected_end_offsets(expected)
    by_p = by_partition(expected)
    consumer = new_consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for tp in tps:
            pos = consumer.position(tp, timeout_ms=10000)
            check(pos == 0, f"{topic}[{tp.partition}]: position after seek_to_beginning {pos} != 0")
        beg = consumer.beginning_offsets(tps, timeout_ms=10000)
        end = consumer.end_offsets(tps, timeout_ms=10000)
        for tp in tps:
            check(beg[tp] == 0, f"{topic}[{tp.partition}]: beginning offset {beg[tp]} != 0")
            check(end[tp] == ends[tp.partition],
                  f"{topic}[{tp.partition}]: end offset {end[tp]} != {ends[tp.partition]}")
        for p, ts, want in offsets_for_times_cases(expected):
            tp = TopicPartition(topic, p)
            res = consumer.offsets_for_times({tp: ts}, timeout_ms=10000)[tp]
            if want is None:
                check(res is None, f"{topic}[{p}]: offsets_for_times({ts}) = {res}, expected None")
            else:
                exp = by_p[p][want].timestamp
                check(res is not None and (res.offset, res.timestamp) == (want, exp),
                      f"{topic}[{p}]: offsets_for_times({ts}) = {res}, expected offset {want} timestamp {exp}"
                      f" ({OFFSETS_FOR_TIMES_RULE})")
    finally:
        consumer.close()
    log(NAME, f"{topic}: seek_to_beginning, beginning/end offsets and offsets_for_times match")


def admin_list_offsets(admin, topic, expected):
    ends = expected_end_offsets(expected)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    for tp in tps:
        check(earliest[tp].offset == 0, f"admin list_partition_offsets EARLIEST {tp}: {earliest[tp]}")
        check(latest[tp].offset == ends[tp.partition],
              f"admin list_partition_offsets LATEST {tp}: {latest[tp]}, expected {ends[tp.partition]}")
    log(NAME, f"{topic}: admin list_partition_offsets earliest/latest match")


def main(bootstrap):
    log(NAME, f"kafka-python {kp_version}")
    suffix = unique_suffix()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"interop-{NAME}-admin")
    try:
        log(NAME, f"connected, broker version inferred as {admin._manager.broker_version}")
        with soft(NAME, "describe_cluster"):
            cluster = admin.describe_cluster()
            check(len(cluster["brokers"]) == 1, f"describe_cluster brokers: {cluster['brokers']}")
        # kafka-python's producer is idempotent by default; one run without.
        runs = [(c, True) for c in CODECS] + [("lz4", False)]
        topics = {f"interop-kp-{c or 'none'}-{'idem' if i else 'plain'}-{suffix}": (c, i) for c, i in runs}
        admin.create_topics({t: {"num_partitions": PARTITIONS, "replication_factor": 1} for t in topics},
                            wait_for_metadata=True)
        described = {d["name"]: d for d in admin.describe_topics(list(topics))}
        for t in topics:
            check(t in described, f"created topic {t} missing from metadata")
            n = len(described[t]["partitions"])
            check(n == PARTITIONS, f"{t}: {n} partitions in metadata, expected {PARTITIONS}")
        log(NAME, f"created {len(topics)} topics with {PARTITIONS} partitions")

        first = next(iter(topics))
        with soft(NAME, "create existing topic"):
            res = admin.create_topics({first: {"num_partitions": 1, "replication_factor": 1}},
                                      raise_errors=False)
            code = res["topics"][0]["error_code"]
            check(code == 36, f"re-creating {first}: error_code {code}, expected 36 TOPIC_ALREADY_EXISTS")

        round_trip_topics(NAME, bootstrap, topics, produce, consume, list_offsets)
        with soft(NAME, f"{first}: admin list offsets"):
            admin_list_offsets(admin, first, expected_records(first))

        admin.delete_topics(list(topics))
        deadline = time.monotonic() + 15
        while True:
            left = set(topics) & set(admin.list_topics())
            if not left:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"topics still in metadata after delete: {sorted(left)}")
            time.sleep(0.2)
        log(NAME, f"deleted {len(topics)} topics; gone from metadata")
    finally:
        admin.close()


if __name__ == "__main__":
    run_main(NAME, main)

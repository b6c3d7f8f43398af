"""aiokafka against Sluice: admin create/delete, produce every codec (plain and idempotent),
consume by assign(), beginning/end offsets and offsets_for_times. No consumer group:
group_id=None, no commits."""

import asyncio
import time

from common import (check_ack, round_trip_topics, CONSUME_TIMEOUT, OFFSETS_FOR_TIMES_RULE, PARTITIONS, CheckFailed, by_partition,
                    check, compare, consume_timed_out, expected_end_offsets, expected_records,
                    log, offsets_for_times_cases, run_main, skip_timed_out, soft, unique_suffix)

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

NAME = "aiokafka"
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


async def produce(bootstrap, topic, records, codec, idempotent):
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=f"interop-{NAME}",
        acks="all",
        compression_type=codec,
        enable_idempotence=idempotent,
        linger_ms=5,
        request_timeout_ms=30000,
    )
    await producer.start()
    try:
        futures = []
        for r in records:
            fut = await producer.send(topic, value=r.value, key=r.key, partition=r.partition,
                                      timestamp_ms=r.timestamp, headers=r.headers or None)
            futures.append((r, fut))
        await producer.flush()
        next_offset = {p: 0 for p in range(PARTITIONS)}
        for r, fut in futures:
            md = await asyncio.wait_for(fut, 30)
            check_ack(topic, r, md.partition, md.offset, next_offset)
    finally:
        await producer.stop()
    log(NAME, f"{topic}: produced {len(records)} records (codec={codec}, idempotent={idempotent})")


def new_consumer(bootstrap):
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=f"interop-{NAME}",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
    )


async def consume(bootstrap, topic, expected):
    """Fetch only: assign() and seek to offset 0 explicitly (no ListOffsets involved)."""
    ends = expected_end_offsets(expected)
    consumer = new_consumer(bootstrap)
    await consumer.start()
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
            batches = await consumer.getmany(timeout_ms=500)
            for tp, msgs in batches.items():
                for m in msgs:
                    check(m.timestamp_type == 0,
                          f"{topic}[{tp.partition}]@{m.offset}: timestamp_type {m.timestamp_type} != 0 (CreateTime)")
                    got[tp.partition].append((m.offset, m.key, m.value, m.headers, m.timestamp))
        extra = await consumer.getmany(timeout_ms=500)
        check(not any(extra.values()), f"{topic}: consumed records past the end: {extra}")
    finally:
        await consumer.stop()
    compare(NAME, topic, expected, got)


async def list_offsets(bootstrap, topic, expected):
    """ListOffsets through the consumer: seek_to_beginning, beginning/end offsets, offsets_for_times."""
    ends = expected_end_offsets(expected)
    by_p = by_partition(expected)
    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await asyncio.wait_for(consumer.seek_to_beginning(*tps), 10)
        for tp in tps:
            pos = await asyncio.wait_for(consumer.position(tp), 10)
            check(pos == 0, f"{topic}[{tp.partition}]: position after seek_to_beginning {pos} != 0")
        beg = await asyncio.wait_for(consumer.beginning_offsets(tps), 10)
        end = await asyncio.wait_for(consumer.end_offsets(tps), 10)
        for tp in tps:
            check(beg[tp] == 0, f"{topic}[{tp.partition}]: beginning offset {beg[tp]} != 0")
            check(end[tp] == ends[tp.partition],
                  f"{topic}[{tp.partition}]: end offset {end[tp]} != {ends[tp.partition]}")
        for p, ts, want in offsets_for_times_cases(expected):
            tp = TopicPartition(topic, p)
            res = (await asyncio.wait_for(consumer.offsets_for_times({tp: ts}), 10))[tp]
            if want is None:
                check(res is None, f"{topic}[{p}]: offsets_for_times({ts}) = {res}, expected None")
            else:
                exp = by_p[p][want].timestamp
                check(res is not None and (res.offset, res.timestamp) == (want, exp),
                      f"{topic}[{p}]: offsets_for_times({ts}) = {res}, expected offset {want} timestamp {exp}"
                      f" ({OFFSETS_FOR_TIMES_RULE})")
    finally:
        await consumer.stop()
    log(NAME, f"{topic}: seek_to_beginning, beginning/end offsets and offsets_for_times match")


def topic_errors(response):
    """(name, error_code) pairs of a CreateTopics/DeleteTopics response of any version."""
    obj = response.to_object()
    key = "topic_errors" if "topic_errors" in obj else "topic_error_codes"
    out = []
    for t in obj[key]:
        out.append((t.get("topic") or t.get("name"), t["error_code"]))
    return out


async def amain(bootstrap):
    log(NAME, f"aiokafka {aiokafka.__version__}")
    suffix = unique_suffix()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"interop-{NAME}-admin")
    await admin.start()
    try:
        with soft(NAME, "describe_cluster"):
            cluster = await admin.describe_cluster()
            check(len(cluster["brokers"]) == 1, f"describe_cluster brokers: {cluster['brokers']}")
        runs = [(c, False) for c in CODECS] + [("gzip", True), ("lz4", True)]
        topics = {f"interop-aio-{c or 'none'}-{'idem' if i else 'plain'}-{suffix}": (c, i) for c, i in runs}
        resp = await admin.create_topics([NewTopic(t, num_partitions=PARTITIONS, replication_factor=1)
                                          for t in topics])
        bad = [(t, e) for t, e in topic_errors(resp) if e != 0]
        check(not bad, f"create_topics errors: {bad}")
        deadline = time.monotonic() + 15
        while True:
            described = {d["topic"]: d for d in await admin.describe_topics(list(topics))}
            missing = [t for t in topics if t not in described or described[t]["error_code"] != 0
                       or len(described[t]["partitions"]) != PARTITIONS]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"created topics missing or wrong in metadata: {missing}: {described}")
            await asyncio.sleep(0.2)
        log(NAME, f"created {len(topics)} topics with {PARTITIONS} partitions")

        first = next(iter(topics))
        with soft(NAME, "create existing topic"):
            resp = await admin.create_topics([NewTopic(first, num_partitions=1, replication_factor=1)])
            check(topic_errors(resp) == [(first, 36)],
                  f"re-creating {first}: {topic_errors(resp)}, expected error 36 TOPIC_ALREADY_EXISTS")

        for t, (codec, idem) in topics.items():
            expected = expected_records(t)
            with soft(NAME, f"{t}: produce"):
                await produce(bootstrap, t, expected, codec, idem)
            with soft(NAME, f"{t}: consume"):
                await consume(bootstrap, t, expected)
            if not skip_timed_out(NAME, "list offsets", t):
                with soft(NAME, f"{t}: list offsets", group="list offsets"):
                    await list_offsets(bootstrap, t, expected)

        resp = await admin.delete_topics(list(topics))
        bad = [(t, e) for t, e in topic_errors(resp) if e != 0]
        check(not bad, f"delete_topics errors: {bad}")
        deadline = time.monotonic() + 15
        while True:
            left = set(topics) & set(await admin.list_topics())
            if not left:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"topics still in metadata after delete: {sorted(left)}")
            await asyncio.sleep(0.2)
        log(NAME, f"deleted {len(topics)} topics; gone from metadata")
    finally:
        await admin.close()


def main(bootstrap):
    asyncio.run(amain(bootstrap))


if __name__ == "__main__":
    run_main(NAME, main)

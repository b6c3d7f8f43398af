"""Throughput of sluice-streams against Quix Streams in one run, same broker, same input.

Loads INPUT_LINES lines of five words into a fresh topic, then runs each application in turn
on it (its own consumer group and output topic) and times how long it takes from its launch
until the output holds every expected record (word count: one update per word; map: one record
per line). Prints input lines/s per scenario, and when the first output record appeared (the
start-up: process start, joining the group). Timing from launch, not from the first output, is
what is fair between the two: an application can process much of its input before its first
output appears. An exactly-once output also holds one transaction marker per partition and
commit, counted in the high watermark: those runs stop that many records early (4 partitions x
1 commit/s, under 0.1% of 1,000,000 records).

usage: bench.py BOOTSTRAP EXAMPLES_DIR PYTHON WORKDIR LINES
"""

import os
import signal
import subprocess
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 4
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]


def line(i):
    return " ".join(WORDS[(i * 7 + j * 13 + i // 3) % len(WORDS)] for j in range(5))


def create(admin, name):
    for f in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        f.result()


def output_size(consumer, topic):
    md = consumer.list_topics(topic, timeout=10)
    total = 0
    for p in md.topics[topic].partitions:
        from confluent_kafka import TopicPartition
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        total += high
    return total


def run(name, cmd, admin, consumer, output, expected, lines, workdir):
    create(admin, output)
    log = open(os.path.join(workdir, name + ".log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    started = time.time()
    first = None
    deadline = started + 900
    try:
        while True:
            size = output_size(consumer, output)
            now = time.time()
            if size > 0 and first is None:
                first = now
            if size >= expected:
                break
            if now > deadline or proc.poll() is not None:
                print(f"{name}: gave up at {size}/{expected} output records (see {name}.log)")
                return None
            time.sleep(0.05)
        elapsed = time.time() - started
        rate = lines / elapsed
        print(f"{name:42s} {lines:>9d} lines in {elapsed:7.2f} s = {rate:>8.0f} lines/s"
              f"  (first output after {first - started:5.2f} s)", flush=True)
        return rate
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    bootstrap, examples, python, workdir, lines = sys.argv[1:6]
    lines = int(lines)
    here = os.path.dirname(os.path.abspath(__file__))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    create(admin, "bench-lines")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    words = 0
    for i in range(lines):
        text = line(i)
        words += len(text.split())
        while True:
            try:
                producer.produce("bench-lines", text.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    print(f"input: {lines} lines, {words} words, {PARTITIONS} partitions", flush=True)

    def rust(example, app_id, output, guarantee, commit_ms):
        return [os.path.join(examples, example), "--bootstrap-servers", bootstrap, "--application-id", app_id,
                "--input", "bench-lines", "--output", output, "--processing-guarantee", guarantee,
                "--state-dir", os.path.join(workdir, app_id), "--commit-interval-ms", str(commit_ms)]

    def quix(kind, group, output, guarantee, commit_s):
        return [python, os.path.join(here, "quix_app.py"), kind, bootstrap, "bench-lines", output, group,
                guarantee, os.path.join(workdir, group), str(commit_s)]

    scenarios = [
        ("sluice-streams map at_least_once", rust("stateless_map", "rs-map", "rs-map-out", "at_least_once", 5000), "rs-map-out", lines),
        ("quix map at-least-once", quix("map", "qx-map", "qx-map-out", "at-least-once", 5), "qx-map-out", lines),
        ("sluice-streams word_count at_least_once", rust("word_count", "rs-wc-alos", "rs-wc-alos-out", "at_least_once", 5000), "rs-wc-alos-out", words),
        ("quix word_count at-least-once", quix("word_count", "qx-wc-alos", "qx-wc-alos-out", "at-least-once", 5), "qx-wc-alos-out", words),
        ("sluice-streams word_count exactly_once_v2", rust("word_count", "rs-wc-eos", "rs-wc-eos-out", "exactly_once_v2", 1000), "rs-wc-eos-out", words),
        ("quix word_count exactly-once", quix("word_count", "qx-wc-eos", "qx-wc-eos-out", "exactly-once", 1), "qx-wc-eos-out", words),
    ]
    results = {}
    for name, cmd, output, expected in scenarios:
        results[name] = run(name, cmd, admin, consumer, output, expected, lines, workdir)
    print()
    for (a, b) in [(0, 1), (2, 3), (4, 5)]:
        ra, rb = results[scenarios[a][0]], results[scenarios[b][0]]
        if ra and rb:
            print(f"{scenarios[a][0]} / {scenarios[b][0]}: {ra / rb:.1f}x")
    consumer.close()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Clients that never read their responses, on raw sockets (bench/never_reading.sh drives it).

    python3 bench/never_reading.py HOST:PORT TOPIC [--connections 8] [--value-bytes 943718]
        [--seconds 25] [--acks -1] [--fetch-first TOPIC] [--read-responses]

Each connection sends Produce v3 requests (one record batch of one record of --value-bytes,
acks=--acks) to partition 0 of TOPIC as fast as the broker reads them, and never reads a byte of
what the broker sends back. With --fetch-first, each connection first asks for everything in
partition 0 of that topic (a response larger than the sockets' buffers, so nothing after it can
be written either). --read-responses is the control: the same load from clients that do read
(and discard) their responses, to tell the cost of the load from the cost of not reading. After --seconds it prints one JSON line (requests and bytes written per
connection) and exits, closing the sockets.

Only the standard library: the record batch (magic 2, CRC32C) is encoded here.
"""

import argparse
import json
import socket
import struct
import threading
import time


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(n):
    """Zigzag varint, as Kafka's record fields use."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def kstring(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def record_batch(value, timestamp_ms):
    record = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(len(value)) + value + varint(0)
    record = varint(len(record)) + record
    after_crc = (
        struct.pack(">hiqqqhii", 0, 0, timestamp_ms, timestamp_ms, -1, -1, -1, 1) + record
    )
    crc = crc32c(after_crc)
    # partitionLeaderEpoch, magic, crc, then the rest
    body = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


def request(api_key, version, correlation_id, body):
    header = struct.pack(">hhi", api_key, version, correlation_id) + kstring("never-reading")
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def produce(topic, acks, batch):
    body = struct.pack(">hhi", -1, acks, 30000)  # null transactional id, acks, timeout
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(batch)) + batch
    return request(0, 3, 1, body)


def fetch_everything(topic):
    body = struct.pack(">iiiib", -1, 0, 1, 0x7FFFFFFF, 0)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 0x7FFFFFFF)
    return request(1, 4, 2, body)


def drain(sock):
    try:
        while sock.recv(1 << 20):
            pass
    except OSError:
        pass


def attacker(address, frame, first, stop_at, stats, index, read_responses):
    sock = socket.create_connection(address)
    sock.settimeout(0.5)
    if read_responses:
        threading.Thread(target=drain, args=(sock,), daemon=True).start()
    sent = 0
    requests = 0
    try:
        if first:
            sock.sendall(first)
        view = memoryview(frame)
        while time.monotonic() < stop_at:
            at = 0
            while at < len(view) and time.monotonic() < stop_at:
                try:
                    n = sock.send(view[at:])
                except socket.timeout:
                    continue
                at += n
                sent += n
            if at == len(view):
                requests += 1
    except OSError as e:
        stats[index] = {"requests": requests, "bytes": sent, "error": str(e)}
        return
    stats[index] = {"requests": requests, "bytes": sent, "sock": sock}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("topic")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--value-bytes", type=int, default=943718)  # 0.9 MiB
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--acks", type=int, default=-1)
    parser.add_argument("--fetch-first")
    parser.add_argument("--read-responses", action="store_true")
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    address = (host, int(port))
    batch = record_batch(b"x" * args.value_bytes, int(time.time() * 1000))
    frame = produce(args.topic, args.acks, batch)
    first = fetch_everything(args.fetch_first) if args.fetch_first else None
    stop_at = time.monotonic() + args.seconds
    stats = [None] * args.connections
    threads = [
        threading.Thread(
            target=attacker,
            args=(address, frame, first, stop_at, stats, i, args.read_responses),
        )
        for i in range(args.connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    socks = [s.pop("sock", None) for s in stats if s]
    print(
        json.dumps(
            {
                "connections": args.connections,
                "request_bytes": len(frame),
                "requests_written": sum(s["requests"] for s in stats if s),
                "bytes_written": sum(s["bytes"] for s in stats if s),
                "per_connection": stats,
            }
        ),
        flush=True,
    )
    for s in socks:
        if s:
            s.close()


if __name__ == "__main__":
    main()

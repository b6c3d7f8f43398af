"""Transaction coordinator requests pipelined on one connection, at the wire level (kafka-python's
protocol classes over a plain socket), as librdkafka sends them in a consume-transform-produce
loop: AddOffsetsToTxn and AddPartitionsToTxn are written back to back before either answer is
read, then TxnOffsetCommit and EndTxn follow.

Kafka handles a connection's requests one at a time, so both adds must be in the transaction: the
TxnOffsetCommit must succeed and DescribeTransactions must list the group's __consumer_offsets
partition and the data partition. The same sequence is run first without pipelining (each answer
read before the next request), so a failure of only the pipelined round points at concurrent
handling of the two adds. Each round: TXN_ROUNDS transactions, each committed.
"""

import socket
import struct
import time

from common import CheckFailed, check, log, run_main, soft, unique_suffix

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.protocol.producer.transaction import (AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
                                                 AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
                                                 EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
                                                 InitProducerIdResponse, TxnOffsetCommitRequest,
                                                 TxnOffsetCommitResponse)

NAME = "txn pipelined adds"
P = 3
TXN_ROUNDS = 5
OFFSETS_TOPIC = "__consumer_offsets"


class Conn:
    """One broker connection: framed requests out, framed responses in, 10 s socket timeout."""

    def __init__(self, bootstrap):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.corr = 0

    def frame(self, request, version):
        self.corr += 1
        request.with_header(self.corr, "interop-txn-pipelined")
        return request.encode(version=version, header=True, framed=True)

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def recv(self, cls, version):
        size = struct.unpack(">i", self._read(4))[0]
        return cls.decode(self._read(size), version=version, header=True)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise CheckFailed("the broker closed the connection")
            data += chunk
        return data

    def close(self):
        self.sock.close()


def run_round(bootstrap, admin, topic, suffix, pipelined):
    how = "pipelined" if pipelined else "sequential"
    tid = f"interop-txnpipe-{how}-{suffix}"
    group = f"interop-txnpipe-{how}-{suffix}"
    conn = Conn(bootstrap)
    try:
        conn.send(conn.frame(InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=30000,
                                                   producer_id=-1, producer_epoch=-1), 1))
        r = conn.recv(InitProducerIdResponse, 1)
        check(r.error_code == 0, f"{how}: InitProducerId v1 error {r.error_code}")
        pid, epoch = r.producer_id, r.producer_epoch
        problems = []
        for i in range(TXN_ROUNDS):
            add_offsets = conn.frame(AddOffsetsToTxnRequest(transactional_id=tid, producer_id=pid,
                                                            producer_epoch=epoch, group_id=group), 0)
            T = AddPartitionsToTxnRequest.AddPartitionsToTxnTopic
            add_parts = conn.frame(AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=tid, v3_and_below_producer_id=pid,
                v3_and_below_producer_epoch=epoch, v3_and_below_topics=[T(name=topic, partitions=[i % P])]), 0)
            if pipelined:
                conn.send(add_offsets, add_parts)
                r1 = conn.recv(AddOffsetsToTxnResponse, 0)
                r2 = conn.recv(AddPartitionsToTxnResponse, 0)
            else:
                conn.send(add_offsets)
                r1 = conn.recv(AddOffsetsToTxnResponse, 0)
                conn.send(add_parts)
                r2 = conn.recv(AddPartitionsToTxnResponse, 0)
            add_errs = [p.partition_error_code for t in r2.results_by_topic_v3_and_below for p in t.results_by_partition]
            check(r1.error_code == 0 and add_errs == [0],
                  f"{how}: txn {i}: AddOffsetsToTxn v0 error {r1.error_code}, AddPartitionsToTxn v0 errors {add_errs}")
            d = admin.describe_transactions([tid])[tid]
            in_txn = sorted((tp.topic, tp.partition) for tp in d.topic_partitions)

            PT = TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic
            PP = PT.TxnOffsetCommitRequestPartition
            conn.send(conn.frame(TxnOffsetCommitRequest(
                transactional_id=tid, group_id=group, producer_id=pid, producer_epoch=epoch,
                topics=[PT(name=topic, partitions=[PP(partition_index=0, committed_offset=i, committed_metadata="")])]), 0))
            r3 = conn.recv(TxnOffsetCommitResponse, 0)
            commit_errs = [p.error_code for t in r3.topics for p in t.partitions]
            conn.send(conn.frame(EndTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                                               committed=True), 0))
            r4 = conn.recv(EndTxnResponse, 0)
            has_offsets = any(t == OFFSETS_TOPIC for t, _ in in_txn)
            if commit_errs != [0] or not has_offsets or r4.error_code:
                problems.append(f"txn {i}: after AddOffsetsToTxn (error 0) and AddPartitionsToTxn (error 0)"
                                f" DescribeTransactions lists {in_txn}"
                                f"{'' if has_offsets else ' (no __consumer_offsets partition)'};"
                                f" TxnOffsetCommit v0 errors {commit_errs}, EndTxn(commit) error {r4.error_code}")
                if r4.error_code:
                    break
        if problems:
            raise CheckFailed(f"{len(problems)} of {TXN_ROUNDS} transactions: {problems[0]}"
                              + (f" (and {len(problems) - 1} more like it)" if len(problems) > 1 else ""))
        log(NAME, f"{how}: {TXN_ROUNDS} transactions, AddOffsetsToTxn + AddPartitionsToTxn {how}: both"
                  f" partitions in the transaction, TxnOffsetCommit and EndTxn ok")
    finally:
        conn.close()


def main(bootstrap):
    suffix = unique_suffix()
    topic = f"interop-txnpipe-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interop-txnpipe-admin", request_timeout_ms=10000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=P, replication_factor=1)], wait_for_metadata=True)
        log(NAME, f"created {topic} with {P} partitions")
        for pipelined in (False, True):
            with soft(NAME, "pipelined" if pipelined else "sequential"):
                run_round(bootstrap, admin, topic, suffix, pipelined)
    finally:
        admin.close()


if __name__ == "__main__":
    run_main(NAME, main)

//! Fetch: reads whole batches from each requested partition within the request's byte limits, and
//! long-polls (woken by appends, not timers) until `min_bytes` are available or `max_wait_ms` passes.
//!
//! `read_committed` fetches (isolation level 1) stop at the last stable offset and carry the
//! aborted transactions among the returned records, which consumers drop.
//!
//! Records are not read: each partition's answer is a list of segment file ranges that the
//! connection sends with sendfile(2) (see `crate::frame`), cut at the byte limits as Kafka does
//! (the last batch may be partial; clients fetch it again whole).
//!
//! Followers fetch with their broker id as `replica_id`: they read up to the log end (not the
//! high watermark), and each fetch reports the follower's log end offset to the leader, which
//! advances the high watermark and may return the follower to the ISR. So a follower fetch is
//! taken only from a connection authenticated as that very node (`crate::auth`); any other
//! gets TOPIC_AUTHORIZATION_FAILED for every partition, as Kafka answers a follower fetch
//! without CLUSTER_ACTION, and changes nothing: no follower progress, high watermark or ISR.
//! Consumers and followers alike must fetch from the leader (NOT_LEADER_OR_FOLLOWER otherwise),
//! at its leader epoch when they send one (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH
//! otherwise).
//!
//! Sessions (KIP-227) are not kept: every fetch is answered in full with session id 0, which clients
//! treat as "sessions unsupported".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use sluice_log::{Offset, ReadError};
use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use sluice_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::errors;
use crate::frame::{fetch_frame, FetchRecords};
use crate::metrics::PurgatoryOperation;
use crate::partition::Partition;
use crate::request::{Ctx, Reply};
use sluice_log::FileRange;

/// Longest long poll honoured, whatever a client asks for.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

/// One requested partition, resolved.
struct Wanted {
    index: i32,
    fetch_offset: i64,
    /// The leader epoch the fetcher believes current; -1: not checked.
    current_leader_epoch: i32,
    partition_max_bytes: usize,
    partition: Result<Arc<Partition>, ResponseError>,
}

struct Plan {
    topics: Vec<(TopicName, Vec<Wanted>)>,
    /// isolation_level 1: read below the last stable offset and list aborted transactions.
    read_committed: bool,
    /// The fetching follower's broker id; None for consumers.
    replica_id: Option<i32>,
    max_bytes: usize,
    min_bytes: usize,
    deadline: Instant,
}

pub(crate) fn handle(broker: &Arc<Broker>, ctx: Ctx, request: FetchRequest) -> Reply {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let replica_id = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
    let forged = replica_id.is_some_and(|replica| !ctx.principal.may_act_as_replica(replica));
    if forged {
        crate::auth::warn_refused(
            &format!("a follower fetch as replica {}", request.replica_id.0),
            &ctx.principal,
            ctx.client_host,
        );
    }
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let wanted = topic
                .partitions
                .into_iter()
                .map(|p| Wanted {
                    index: p.partition,
                    fetch_offset: p.fetch_offset,
                    current_leader_epoch: p.current_leader_epoch,
                    partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                    partition: if forged {
                        Err(ResponseError::TopicAuthorizationFailed)
                    } else {
                        broker
                            .replicas
                            .partition(&topic.topic.0, p.partition)
                            .ok_or_else(|| broker.not_hosted_error(&topic.topic.0, p.partition))
                    },
                })
                .collect();
            (topic.topic, wanted)
        })
        .collect::<Vec<(TopicName, Vec<Wanted>)>>();
    // A refused fetch resolved no partition, so it reports no progress and reads nothing.
    let replica_id = replica_id.filter(|_| !forged);
    if let Some(replica) = replica_id {
        let now_ms = crate::broker::now().0;
        for (_, wanted) in &topics {
            for want in wanted.iter() {
                let Ok(partition) = &want.partition else {
                    continue;
                };
                if check_leader(partition, want.current_leader_epoch).is_ok() {
                    if let Some((isr, epoch)) =
                        partition.on_follower_fetch(replica, want.fetch_offset, now_ms)
                    {
                        broker.request_isr_change(partition, isr, epoch);
                    }
                }
            }
        }
    }
    let plan = Plan {
        topics,
        read_committed: request.isolation_level == 1,
        replica_id,
        // Fetch v3+ has a response limit; a zero or negative one still lets one batch through.
        max_bytes: request.max_bytes.max(0) as usize,
        min_bytes: request.min_bytes.max(0) as usize,
        deadline: Instant::now() + wait,
    };
    let shutdown = broker.shutdown_signal();
    let (correlation_id, version) = (ctx.correlation_id, ctx.version);
    let poll = long_poll(broker.clone(), plan, shutdown);
    Reply::LaterFrame(Box::pin(async move {
        let (response, records) = poll.await;
        let ranges: Vec<FileRange> = records
            .iter()
            .flatten()
            .filter_map(|r| match r {
                FetchRecords::Files(ranges) => Some(ranges.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        // sendfile on the connection's task must not wait for the disk (that would stall every
        // connection on this worker thread): ranges not in the page cache are read in first, on
        // the blocking pool. Cached ones (the usual tail reads) skip that hop.
        if !ranges.iter().all(cached) {
            let _ = tokio::task::spawn_blocking(move || prefetch(&ranges)).await;
        }
        match fetch_frame(correlation_id, version, &response, records) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a fetch response; dropping connection");
                None
            }
        }
    }))
}

/// Whether `range` looks cached: one-byte reads that may not wait for the disk
/// (`preadv2(RWF_NOWAIT)`) at its start, every MiB and its end all succeed. A kernel without
/// RWF_NOWAIT for files answers an error, which sends every range through the prefetch.
fn cached(range: &FileRange) -> bool {
    const STEP: u64 = 1 << 20;
    let mut byte = [0u8; 1];
    let last = range.pos + range.len.saturating_sub(1);
    let mut at = range.pos;
    loop {
        let mut bufs = [std::io::IoSliceMut::new(&mut byte)];
        let read = rustix::io::preadv2(
            &*range.file,
            &mut bufs,
            at,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        if !matches!(read, Ok(1)) {
            return false;
        }
        if at >= last {
            return true;
        }
        at = (at + STEP).min(last);
    }
}

/// Brings `ranges` into the page cache: asks the kernel to read each whole range ahead, then
/// touches one byte every 64 KiB so the call returns once the data is (mostly) there.
fn prefetch(ranges: &[FileRange]) {
    use std::os::unix::fs::FileExt;
    const STEP: u64 = 64 * 1024;
    let mut byte = [0u8; 1];
    for range in ranges {
        let len = std::num::NonZeroU64::new(range.len);
        let _ = rustix::fs::fadvise(&*range.file, range.pos, len, rustix::fs::Advice::WillNeed);
        let mut at = range.pos;
        while at < range.pos + range.len {
            if range.file.read_at(&mut byte, at).is_err() {
                break;
            }
            at += STEP;
        }
    }
}

/// Reads every partition once; returns the response, each partition's records (file ranges,
/// sent with sendfile) and the bytes they hold.
///
/// Partitions answered with an error carry empty (not null) records, as Kafka's do: librdkafka
/// refuses null records in a flexible Fetch response.
fn read_all(plan: &Plan) -> (Vec<FetchableTopicResponse>, Vec<Vec<FetchRecords>>, usize) {
    let mut total = 0usize;
    let mut responses = Vec::with_capacity(plan.topics.len());
    let mut all_records = Vec::with_capacity(plan.topics.len());
    for (name, wanted) in &plan.topics {
        let mut partitions = Vec::with_capacity(wanted.len());
        let mut records = Vec::with_capacity(wanted.len());
        for want in wanted {
            let data = PartitionData::default()
                .with_partition_index(want.index)
                .with_preferred_read_replica(BrokerId(-1));
            let partition = match &want.partition {
                Ok(p) if !p.is_deleted() => p,
                Ok(_) => {
                    partitions
                        .push(data.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                    records.push(FetchRecords::Bytes(Bytes::new()));
                    continue;
                }
                Err(e) => {
                    partitions.push(data.with_error_code(e.code()));
                    records.push(FetchRecords::Bytes(Bytes::new()));
                    continue;
                }
            };
            if let Err(e) = check_leader(partition, want.current_leader_epoch) {
                partitions.push(data.with_error_code(e.code()));
                records.push(FetchRecords::Bytes(Bytes::new()));
                continue;
            }
            let high_watermark = partition.high_watermark().0;
            let data = data
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(partition.last_stable_offset().0.min(high_watermark))
                .with_log_start_offset(partition.log_start_offset().0);
            let budget = want
                .partition_max_bytes
                .min(plan.max_bytes.saturating_sub(total));
            // KIP-74: the first partition with data returns at least one whole batch.
            let min_one_batch = total == 0;
            if budget == 0 && !min_one_batch {
                partitions.push(data);
                records.push(FetchRecords::Bytes(Bytes::new()));
                continue;
            }
            let start = Offset(want.fetch_offset);
            let read = if plan.replica_id.is_some() {
                partition
                    .read_ranges_for_follower(start, budget)
                    .map(|ranges| (ranges, None))
            } else {
                partition.read_ranges(start, budget, min_one_batch, plan.read_committed)
            };
            match read {
                Ok((ranges, aborted)) => {
                    let read = FetchRecords::Files(ranges);
                    total += read.len() as usize;
                    let aborted = aborted.map(|list| {
                        list.into_iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect()
                    });
                    partitions.push(data.with_aborted_transactions(aborted));
                    records.push(read);
                }
                Err(e @ ReadError::OffsetOutOfRange { .. }) => {
                    partitions.push(data.with_error_code(errors::read_error(&e).code()));
                    records.push(FetchRecords::Bytes(Bytes::new()));
                }
                Err(e) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "fetch read failed");
                    partitions.push(data.with_error_code(errors::read_error(&e).code()));
                    records.push(FetchRecords::Bytes(Bytes::new()));
                }
            }
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions),
        );
        all_records.push(records);
    }
    (responses, all_records, total)
}

/// Whether this broker may serve `partition` to a fetcher that believes the leader epoch is
/// `current_leader_epoch` (-1: it does not say).
pub(crate) fn check_leader(
    partition: &Partition,
    current_leader_epoch: i32,
) -> Result<(), ResponseError> {
    if !partition.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let mine = partition.leader_epoch().0;
    match current_leader_epoch {
        e if e < 0 || e == mine => Ok(()),
        e if e < mine => Err(ResponseError::FencedLeaderEpoch),
        _ => Err(ResponseError::UnknownLeaderEpoch),
    }
}

/// Counts the record bytes of the response being sent, one label lookup per topic with data.
fn count_bytes_out(
    broker: &Broker,
    responses: &[FetchableTopicResponse],
    records: &[Vec<FetchRecords>],
) {
    for (topic, records) in responses.iter().zip(records) {
        let bytes: u64 = records.iter().map(FetchRecords::len).sum();
        if bytes > 0 {
            broker.metrics.topic(&topic.topic.0).bytes_out.inc_by(bytes);
            broker.metrics.count_out(bytes);
        }
    }
}

async fn long_poll(
    broker: Arc<Broker>,
    plan: Plan,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (FetchResponse, Vec<Vec<FetchRecords>>) {
    let partitions: Vec<Arc<Partition>> = plan
        .topics
        .iter()
        .flat_map(|(_, wanted)| {
            wanted
                .iter()
                .filter_map(|w| w.partition.as_ref().ok().cloned())
        })
        .collect();
    // Set once the fetch has to wait: it stays in purgatory until answered.
    let mut waiting = None;
    loop {
        // Register for wake-ups before reading, so an append between the read and the wait is seen.
        let mut notified: Vec<_> = partitions.iter().map(|p| Box::pin(p.appended())).collect();
        for n in notified.iter_mut() {
            n.as_mut().enable();
        }
        let (responses, records, total) = read_all(&plan);
        let has_error = responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .any(|p| p.error_code != errors::NONE);
        if total >= plan.min_bytes.max(1)
            || has_error
            || partitions.is_empty()
            || Instant::now() >= plan.deadline
            || *shutdown.borrow()
        {
            count_bytes_out(&broker, &responses, &records);
            return (FetchResponse::default().with_responses(responses), records);
        }
        if waiting.is_none() {
            waiting = Some(broker.metrics.enter_purgatory(PurgatoryOperation::Fetch));
        }
        tokio::select! {
            _ = select_all(notified) => {}
            _ = tokio::time::sleep_until(plan.deadline) => {}
            _ = crate::broker::stopped(&mut shutdown) => {}
        }
    }
}

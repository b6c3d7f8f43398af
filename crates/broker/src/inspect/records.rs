//! Records for the console's message browser: a page of decoded records from one partition,
//! starting at an offset, a timestamp, or the last few; and one test record appended as a
//! producer's would be.
//!
//! Reads go through [`Partition::read`] (whole batches, never past the high watermark) and
//! batches are decoded with kafka-protocol, so compressed topics are shown too. Control records
//! (transaction markers) are skipped.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_log::{Offset, Timestamp};

use super::{is_internal, InspectError};
use crate::broker::{now, Broker};
use crate::partition::Partition;

/// Bytes read from the log per step while filling a page.
const READ_STEP_BYTES: usize = 1024 * 1024;
/// Bytes of batches decoded for one page at most, whatever the record count asked for.
const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Where a page of records starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this offset (it must lie within the log start offset and the high watermark).
    Offset(Offset),
    /// At the first record whose timestamp is at or after this one.
    Timestamp(Timestamp),
    /// The last records before the high watermark (as many as the page holds).
    Latest,
}

/// One record, its payloads as raw bytes (the caller decides how to show them).
#[derive(Debug, Clone)]
pub struct RecordView {
    pub offset: i64,
    pub timestamp: i64,
    /// `LogAppendTime` rather than `CreateTime`.
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A page of records of one partition.
#[derive(Debug, Clone)]
pub struct RecordsPage {
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Where the page starts (the resolved offset of a timestamp or `Latest` start).
    pub start_offset: i64,
    /// The offset to ask for next to continue after this page.
    pub next_offset: i64,
    pub records: Vec<RecordView>,
}

fn partition(
    broker: &Broker,
    topic: &str,
    index: i32,
) -> Result<std::sync::Arc<Partition>, InspectError> {
    if broker.metadata.topic(topic).is_none() {
        return Err(InspectError::UnknownTopic(topic.to_owned()));
    }
    broker
        .replicas
        .partition(topic, index)
        .filter(|p| !p.is_deleted())
        .ok_or_else(|| InspectError::UnknownPartition {
            topic: topic.to_owned(),
            partition: index,
        })
}

/// Up to `max_records` records of `topic`-`index` from `start`. Blocking: it reads the log (call
/// it off the async workers).
pub fn read_records(
    broker: &Broker,
    topic: &str,
    index: i32,
    start: Start,
    max_records: usize,
) -> Result<RecordsPage, InspectError> {
    let partition = partition(broker, topic, index)?;
    let log_start_offset = partition.log_start_offset().0;
    let high_watermark = partition.high_watermark().0;
    let wanted = i64::try_from(max_records).unwrap_or(i64::MAX);
    let start_offset = match start {
        Start::Offset(offset) => {
            if offset.0 < log_start_offset || offset.0 > high_watermark {
                return Err(InspectError::OffsetOutOfRange {
                    partition: index,
                    requested: offset.0,
                    log_start_offset,
                    high_watermark,
                });
            }
            offset.0
        }
        Start::Timestamp(ts) => partition
            .offset_for_timestamp(ts)
            .map_err(InspectError::Read)?
            .map_or(high_watermark, |(offset, _)| offset.0),
        Start::Latest => high_watermark.saturating_sub(wanted).max(log_start_offset),
    };
    let mut records = Vec::new();
    let mut next = start_offset;
    let mut decoded_bytes = 0usize;
    while records.len() < max_records && next < high_watermark && decoded_bytes < PAGE_BYTES_MAX {
        let read = match partition.read(Offset(next), READ_STEP_BYTES, true) {
            Ok(read) => read,
            // Retention may move the log start past `next` between steps: the page ends there.
            Err(sluice_log::ReadError::OffsetOutOfRange { .. }) if !records.is_empty() => break,
            Err(e) => return Err(InspectError::Read(e)),
        };
        if read.records.is_empty() {
            break;
        }
        decoded_bytes += read.records.len();
        let before = next;
        for batch in split_batches(read.records) {
            next = next.max(batch.next_offset);
            let Some(set) = batch.decoded else { continue };
            for record in set {
                if record.control || record.offset < start_offset || records.len() >= max_records {
                    continue;
                }
                records.push(view(record));
            }
        }
        if next == before {
            break;
        }
    }
    let next_offset = records.last().map_or(next, |r| r.offset + 1);
    Ok(RecordsPage {
        partition: index,
        log_start_offset,
        high_watermark,
        start_offset,
        next_offset,
        records,
    })
}

fn view(record: Record) -> RecordView {
    RecordView {
        offset: record.offset,
        timestamp: record.timestamp,
        log_append_time: record.timestamp_type == TimestampType::LogAppend,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
    }
}

/// One stored batch: where the next one starts, and its records when it could be decoded.
struct Batch {
    next_offset: i64,
    decoded: Option<Vec<Record>>,
}

/// Splits a read into its batches by their length fields; an undecodable batch is skipped (its
/// offsets still advance the page), a cut-off tail is ignored.
fn split_batches(mut bytes: Bytes) -> Vec<Batch> {
    /// Base offset (8), length (4), partition leader epoch (4), magic (1), CRC (4),
    /// attributes (2), last offset delta (4).
    const PREFIX_BYTES: usize = 27;
    let mut batches = Vec::new();
    while bytes.len() >= PREFIX_BYTES {
        let base = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let last_delta = i32::from_be_bytes(bytes[23..27].try_into().expect("4 bytes"));
        let Some(size) = usize::try_from(length).ok().and_then(|l| l.checked_add(12)) else {
            break;
        };
        if size > bytes.len() {
            break;
        }
        let mut batch = bytes.split_to(size);
        let decoded = RecordBatchDecoder::decode(&mut batch)
            .ok()
            .map(|set| set.records);
        batches.push(Batch {
            next_offset: base.saturating_add(i64::from(last_delta)).saturating_add(1),
            decoded,
        });
    }
    batches
}

/// A test record for [`append_record`].
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

/// Appends one record to `topic`-`index` as an acks=all producer would (waiting for the fsync
/// when `log.flush.on.ack` is on) and counts it in the traffic metrics. Returns its offset.
pub async fn append_record(
    broker: &Broker,
    topic: &str,
    index: i32,
    record: NewRecord,
) -> Result<Offset, InspectError> {
    if is_internal(topic) {
        return Err(InspectError::InternalTopic(topic.to_owned()));
    }
    if broker.is_shutting_down() {
        return Err(InspectError::ShuttingDown);
    }
    let partition = partition(broker, topic, index)?;
    let now = now();
    let batch = encode(record, now.0)?;
    let bytes = batch.len() as u64;
    let info = partition
        .append(batch, now)
        .map_err(InspectError::Refused)?;
    let counters = broker.metrics.topic(topic);
    counters.bytes_in.inc_by(bytes);
    counters.records_in.inc();
    broker.metrics.count_in(bytes, 1);
    if broker.config.flush_on_ack {
        partition
            .wait_durable(info.last_offset)
            .await
            .map_err(InspectError::Sync)?;
    }
    Ok(info.first_offset)
}

fn encode(record: NewRecord, now_ms: i64) -> Result<Bytes, InspectError> {
    let headers: IndexMap<StrBytes, Option<Bytes>> = record
        .headers
        .into_iter()
        .map(|(name, value)| (StrBytes::from_string(name), Some(value)))
        .collect();
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms,
        key: record.key,
        value: record.value,
        headers,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::iter::once(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| InspectError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_records_split_and_decode_back() {
        let record = NewRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"{\"a\":1}")),
            headers: vec![("h".to_owned(), Bytes::from_static(b"v"))],
        };
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&encode(record.clone(), 5).unwrap());
        bytes.extend_from_slice(&encode(record, 6).unwrap());
        let whole = bytes.freeze();
        let batches = split_batches(whole.clone());
        assert_eq!(batches.len(), 2);
        let records = batches[0].decoded.as_ref().expect("decodes");
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].timestamp, 5);
        // A cut-off second batch is left out, not an error.
        assert_eq!(split_batches(whole.slice(..whole.len() - 1)).len(), 1);
        assert!(split_batches(Bytes::from_static(&[0xff; 30])).is_empty());
    }
}

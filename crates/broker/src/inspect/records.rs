//! Records for the console's message browser: a page of decoded records from one partition,
//! starting at an offset, a timestamp, or the last few; and one test record appended as a
//! producer's would be.
//!
//! Reads go through [`Partition::read`] (whole batches, never past the high watermark) and
//! batches are decoded with the bounded record codec, so compressed topics are shown too. A
//! batch whose records do not read (a count that disagrees with its bytes, a payload its codec
//! refuses) is listed as damaged with the reason, never skipped silently. Control records
//! (transaction markers) are skipped.

use bytes::Bytes;
use sluice_log::{Offset, Timestamp};
use sluice_protocol::records::{Batches, Record, RecordsError, TimestampType};

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
    /// Batches in the page's range whose records could not be read.
    pub damaged: Vec<DamagedBatch>,
}

/// A stored batch the page could not show: its offsets and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub reason: String,
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
    let mut damaged = Vec::new();
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
        let wanted = max_records - records.len();
        let mut page = PageBatches {
            from: start_offset,
            next,
            records: Vec::new(),
            damaged: Vec::new(),
        };
        page.add(&read.records, wanted);
        next = page.next;
        records.append(&mut page.records);
        damaged.append(&mut page.damaged);
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
        damaged,
    })
}

/// Records and damaged batches decoded from one read.
struct PageBatches {
    /// Records below this offset are not shown (a batch may start before the page).
    from: i64,
    /// Where the next batch starts.
    next: i64,
    records: Vec<RecordView>,
    damaged: Vec<DamagedBatch>,
}

impl PageBatches {
    /// Decodes the whole batches of `bytes` (a cut-off tail is left for the next read) until
    /// `wanted` records are there. A batch whose records do not read contributes none of them.
    fn add(&mut self, bytes: &Bytes, wanted: usize) {
        for batch in Batches::new(bytes) {
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    // No length to step over: the rest of the read cannot be split.
                    self.damaged.push(DamagedBatch {
                        base_offset: self.next,
                        last_offset: self.next,
                        reason: format!("unreadable batch header: {e}"),
                    });
                    return;
                }
            };
            let header = *batch.header();
            self.next = self.next.max(header.last_offset().saturating_add(1));
            if header.is_control() || self.records.len() >= wanted {
                continue;
            }
            let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
            let mut views = Vec::new();
            let walked = batch.for_each_record(sluice_log::DECOMPRESSED_LIMIT, |r| {
                if r.offset >= self.from {
                    views.push(view(&r, log_append_time, bytes));
                }
                Ok::<_, RecordsError>(())
            });
            match walked {
                Ok(()) => {
                    views.truncate(wanted - self.records.len());
                    self.records.append(&mut views);
                }
                Err(e) => self.damaged.push(DamagedBatch {
                    base_offset: header.base_offset,
                    last_offset: header.last_offset(),
                    reason: e.to_string(),
                }),
            }
        }
    }
}

/// A record's view; payloads of uncompressed batches are slices of the read (no copy).
fn view(record: &Record<'_>, log_append_time: bool, read: &Bytes) -> RecordView {
    let payload = |b: &[u8]| {
        if read.as_ptr_range().contains(&b.as_ptr()) {
            read.slice_ref(b)
        } else {
            Bytes::copy_from_slice(b)
        }
    };
    RecordView {
        offset: record.offset,
        timestamp: record.timestamp,
        log_append_time,
        key: record.key.map(payload),
        value: record.value.map(payload),
        headers: record
            .headers()
            .map(|h| {
                (
                    String::from_utf8_lossy(h.key).into_owned(),
                    h.value.map(payload),
                )
            })
            .collect(),
    }
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
    use sluice_protocol::records::{BatchBuilder, Compression, Header, NewRecord as Wire};
    let headers: Vec<Header<'_>> = record
        .headers
        .iter()
        .map(|(name, value)| Header {
            key: name.as_bytes(),
            value: Some(value),
        })
        .collect();
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(Wire {
        timestamp: now_ms,
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers: &headers,
    });
    let batch = builder
        .build()
        .map_err(|e| InspectError::Encode(e.to_string()))?;
    Ok(Bytes::from(batch))
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
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode(record.clone(), 5).unwrap());
        bytes.extend_from_slice(&encode(record, 6).unwrap());
        let whole = Bytes::from(bytes);
        let page = |bytes: &Bytes| {
            let mut page = PageBatches {
                from: 0,
                next: 0,
                records: Vec::new(),
                damaged: Vec::new(),
            };
            page.add(bytes, 10);
            page
        };
        let read = page(&whole);
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(read.records[0].timestamp, 5);
        assert_eq!(read.records[0].headers[0].0, "h");
        // A cut-off second batch is left out, not an error.
        assert_eq!(page(&whole.slice(..whole.len() - 1)).records.len(), 1);
        assert_eq!(page(&Bytes::from_static(&[0xff; 30])).records.len(), 0);
    }

    #[test]
    fn a_batch_claiming_more_records_than_it_holds_is_listed_as_damaged() {
        let mut batch = encode(NewRecord::default(), 5).unwrap().to_vec();
        // Claim 2^31-1 records (last offset delta to match) under a valid CRC.
        sluice_protocol::records::testing::claim_count(&mut batch, i32::MAX);
        let mut page = PageBatches {
            from: 0,
            next: 0,
            records: Vec::new(),
            damaged: Vec::new(),
        };
        page.add(&Bytes::from(batch), 10);
        assert!(page.records.is_empty());
        assert_eq!(page.damaged.len(), 1);
        assert_eq!(page.damaged[0].last_offset, i64::from(i32::MAX - 1));
        assert!(
            page.damaged[0].reason.contains("2147483647"),
            "{:?}",
            page.damaged
        );
        assert_eq!(page.next, i64::from(i32::MAX), "the page moves past it");
    }
}

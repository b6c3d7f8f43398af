//! Response frames made of pieces: encoded bytes and byte ranges of segment files. The
//! connection writes bytes with `write` and file ranges with `sendfile(2)`, so fetched records go
//! from the page cache to the socket without passing through user space.
//!
//! A Fetch response is encoded by sluice-protocol except for each partition's `records` field: the
//! partition is encoded with empty records, and the empty field is replaced by the real length
//! prefix followed by the ranges. The test at the bottom checks the result byte for byte against
//! sluice-protocol's encoding of the whole response for every supported version.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_log::FileRange;
use sluice_protocol::codec::Struct;
use sluice_protocol::messages::fetch_response::PartitionData;
use sluice_protocol::messages::{FetchResponse, ResponseHeader};
use sluice_protocol::Encodable;

/// One piece of a frame.
#[derive(Debug, Clone)]
pub enum FramePart {
    Bytes(Bytes),
    File(FileRange),
}

/// A response frame, length prefix included, in pieces.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub parts: Vec<FramePart>,
}

impl Frame {
    /// Total bytes of the frame.
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                FramePart::Bytes(b) => b.len() as u64,
                FramePart::File(r) => r.len,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the frame held in memory (file ranges are sent from the page cache and take
    /// none).
    pub fn memory_len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                FramePart::Bytes(b) => b.len() as u64,
                FramePart::File(_) => 0,
            })
            .sum()
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Frame {
            parts: vec![FramePart::Bytes(bytes)],
        }
    }
}

/// The records of one partition of a Fetch response.
#[derive(Debug, Clone, Default)]
pub enum FetchRecords {
    /// Null records (an error answer).
    #[default]
    None,
    /// Ranges of segment files, sent as they are.
    Files(Vec<FileRange>),
    /// Bytes already in memory.
    Bytes(Bytes),
}

impl FetchRecords {
    pub fn len(&self) -> u64 {
        match self {
            FetchRecords::None => 0,
            FetchRecords::Files(ranges) => ranges.iter().map(|r| r.len).sum(),
            FetchRecords::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pieces being assembled: encoded bytes go to `buf` until a file range interrupts them.
struct Builder {
    parts: Vec<FramePart>,
    buf: BytesMut,
}

impl Builder {
    fn cut(&mut self) {
        if !self.buf.is_empty() {
            self.parts.push(FramePart::Bytes(self.buf.split().freeze()));
        }
    }

    fn put_file(&mut self, range: FileRange) {
        self.cut();
        self.parts.push(FramePart::File(range));
    }
}

fn put_uvarint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn encode_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Encodes a Fetch response (versions 4 to 12) whose partitions' records are given separately,
/// topic by topic and partition by partition in `records` (the response's own `records` fields
/// are ignored).
pub fn fetch_frame(
    correlation_id: i32,
    version: i16,
    response: &FetchResponse,
    records: Vec<Vec<FetchRecords>>,
) -> io::Result<Frame> {
    assert!(
        (4..=12).contains(&version),
        "Fetch v{version} is not framed here"
    );
    let flexible = version >= 12;
    let mut b = Builder {
        parts: Vec::new(),
        buf: BytesMut::with_capacity(256),
    };
    b.buf.put_i32(0); // frame length, patched below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut b.buf, if flexible { 1 } else { 0 })
        .map_err(encode_err)?;
    b.buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        b.buf.put_i16(response.error_code);
        b.buf.put_i32(response.session_id);
    }
    let put_len = |buf: &mut BytesMut, n: usize| {
        if flexible {
            put_uvarint(buf, n as u64 + 1);
        } else {
            buf.put_i32(n as i32);
        }
    };
    put_len(&mut b.buf, response.responses.len());
    if records.len() != response.responses.len() {
        return Err(encode_err("records do not match the response's topics"));
    }
    for (topic, topic_records) in response.responses.iter().zip(records) {
        let name = topic.topic.0.as_bytes();
        if flexible {
            put_uvarint(&mut b.buf, name.len() as u64 + 1);
        } else {
            b.buf
                .put_i16(i16::try_from(name.len()).map_err(encode_err)?);
        }
        b.buf.put_slice(name);
        put_len(&mut b.buf, topic.partitions.len());
        if topic_records.len() != topic.partitions.len() {
            return Err(encode_err("records do not match the response's partitions"));
        }
        for (partition, recs) in topic.partitions.iter().zip(topic_records) {
            put_partition(&mut b, version, partition, recs)?;
        }
        if flexible {
            b.buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        b.buf.put_u8(0); // response tagged fields
    }
    b.cut();
    let mut frame = Frame { parts: b.parts };
    let body = frame.len() - 4;
    let length = i32::try_from(body).map_err(encode_err)?;
    if let Some(FramePart::Bytes(first)) = frame.parts.first_mut() {
        let mut patched = BytesMut::from(&first[..]);
        patched[..4].copy_from_slice(&length.to_be_bytes());
        *first = patched.freeze();
    }
    Ok(frame)
}

/// One partition: sluice-protocol's encoding with empty records, whose empty `records` field is
/// replaced by the real one.
fn put_partition(
    b: &mut Builder,
    version: i16,
    partition: &PartitionData,
    records: FetchRecords,
) -> io::Result<()> {
    let flexible = version >= 12;
    let null = matches!(records, FetchRecords::None);
    let mut encoded = BytesMut::new();
    // A partition is a struct inside the message, written (not encoded) on its own.
    partition
        .clone()
        .with_records(if null { None } else { Some(Bytes::new()) })
        .write(&mut encoded, version)
        .map_err(encode_err)?;
    // What empty (or null) records encode to, and what follows them: nothing before v12; the
    // partition's tagged fields (none are set here) from v12.
    let tail: &[u8] = match (flexible, null) {
        (false, false) => &[0, 0, 0, 0],
        (false, true) => &[0xff, 0xff, 0xff, 0xff],
        (true, false) => &[1, 0],
        (true, true) => &[0, 0],
    };
    if !encoded.ends_with(tail) {
        return Err(encode_err(
            "unexpected partition encoding (tagged fields set?)",
        ));
    }
    encoded.truncate(encoded.len() - tail.len());
    b.buf.extend_from_slice(&encoded);
    if null {
        b.buf.extend_from_slice(tail);
        return Ok(());
    }
    let len = records.len();
    if flexible {
        put_uvarint(&mut b.buf, len + 1);
    } else {
        b.buf.put_i32(i32::try_from(len).map_err(encode_err)?);
    }
    match records {
        FetchRecords::None => {}
        FetchRecords::Bytes(bytes) => b.buf.extend_from_slice(&bytes),
        FetchRecords::Files(ranges) => {
            for range in ranges {
                b.put_file(range);
            }
        }
    }
    if flexible {
        b.buf.put_u8(0); // partition tagged fields
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use sluice_protocol::messages::{BrokerId, ProducerId, TopicName};
    use sluice_protocol::StrBytes;

    fn response(records: &[Vec<Option<Bytes>>]) -> FetchResponse {
        let topics = records
            .iter()
            .enumerate()
            .map(|(t, parts)| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(format!("topic-{t}"))))
                    .with_partitions(
                        parts
                            .iter()
                            .enumerate()
                            .map(|(p, recs)| {
                                PartitionData::default()
                                    .with_partition_index(p as i32)
                                    .with_error_code(if recs.is_none() { 3 } else { 0 })
                                    .with_high_watermark(100 + p as i64)
                                    .with_last_stable_offset(90)
                                    .with_log_start_offset(1)
                                    .with_aborted_transactions((p % 2 == 1).then(|| {
                                        vec![AbortedTransaction::default()
                                            .with_producer_id(ProducerId(7))
                                            .with_first_offset(12)]
                                    }))
                                    .with_preferred_read_replica(BrokerId(-1))
                                    .with_records(recs.clone())
                            })
                            .collect(),
                    )
            })
            .collect();
        FetchResponse::default()
            .with_throttle_time_ms(3)
            .with_session_id(0)
            .with_responses(topics)
    }

    fn flatten(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &frame.parts {
            match part {
                FramePart::Bytes(b) => out.extend_from_slice(b),
                FramePart::File(_) => panic!("no files in this test"),
            }
        }
        out
    }

    #[test]
    fn framed_fetch_responses_match_the_whole_encoding_byte_for_byte() {
        let records = vec![
            vec![
                Some(Bytes::from(vec![7u8; 300])),
                None,
                Some(Bytes::new()),
                Some(Bytes::from(vec![1u8; 20_000])),
            ],
            vec![],
            vec![Some(Bytes::from_static(b"abc"))],
        ];
        let full = response(&records);
        for version in 4..=12i16 {
            let mut expected = BytesMut::new();
            expected.put_i32(0);
            ResponseHeader::default()
                .with_correlation_id(42)
                .encode(&mut expected, if version >= 12 { 1 } else { 0 })
                .unwrap();
            full.encode(&mut expected, version).unwrap();
            let len = (expected.len() - 4) as i32;
            expected[..4].copy_from_slice(&len.to_be_bytes());
            let separate = records
                .iter()
                .map(|t| {
                    t.iter()
                        .map(|r| match r {
                            None => FetchRecords::None,
                            Some(b) => FetchRecords::Bytes(b.clone()),
                        })
                        .collect()
                })
                .collect();
            let frame = fetch_frame(42, version, &full, separate).unwrap();
            assert_eq!(flatten(&frame), expected.to_vec(), "Fetch v{version}");
            assert_eq!(frame.len(), expected.len() as u64);
        }
    }
}

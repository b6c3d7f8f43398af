//! Builds valid v2 record batches (any codec), for tests and benchmarks of this crate and its
//! users; [`recovery`] holds the segment-recovery property its tests and fuzz target check.

pub mod recovery;

use bytes::Bytes;

/// One record to put in a batch.
#[derive(Debug, Clone)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Vec<u8>)>,
}

/// A builder for one magic-2 record batch with a correct CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    records: Vec<Record>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        BatchBuilder {
            base_offset: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            records: Vec::new(),
        }
    }

    /// The base offset written into the batch (producers send 0; the log overwrites it).
    pub fn base_offset(mut self, offset: i64) -> Self {
        self.base_offset = offset;
        self
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Batch attributes: the codec in the low three bits (the records are compressed with it),
    /// LogAppendTime (0x08), transactional (0x10), control (0x20).
    pub fn attributes(mut self, attributes: i16) -> Self {
        self.attributes = attributes;
        self
    }

    pub fn record(mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) -> Self {
        self.records.push(Record {
            key: key.map(<[u8]>::to_vec),
            value: Some(value.to_vec()),
            timestamp,
            headers: Vec::new(),
        });
        self
    }

    /// Adds a tombstone (a record with a key and a null value) for compacted topics.
    pub fn tombstone(mut self, key: &[u8], timestamp: i64) -> Self {
        self.records.push(Record {
            key: Some(key.to_vec()),
            value: None,
            timestamp,
            headers: Vec::new(),
        });
        self
    }

    /// Adds a record with headers.
    pub fn record_with_headers(
        mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Self {
        self.records.push(Record {
            key: key.map(<[u8]>::to_vec),
            value: Some(value.to_vec()),
            timestamp,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
        });
        self
    }

    /// Encodes the batch with the codec its attributes name (`attributes(1)` is gzip, …).
    ///
    /// # Panics
    /// If no record was added, or the attributes name no codec.
    pub fn build(&self) -> Bytes {
        use sluice_protocol::records::{self, Compression, Header, NewRecord};
        assert!(
            !self.records.is_empty(),
            "a batch needs at least one record"
        );
        let codec = Compression::from_id((self.attributes & 0x07) as u8).expect("a known codec");
        let mut builder = records::BatchBuilder::new(codec)
            .base_offset(self.base_offset)
            .partition_leader_epoch(0)
            .producer(self.producer_id, self.producer_epoch, self.base_sequence)
            .transactional(self.attributes & 0x10 != 0)
            .control(self.attributes & 0x20 != 0);
        if self.attributes & 0x08 != 0 {
            let max = self.records.iter().map(|r| r.timestamp).max();
            builder = builder.log_append_time(max.unwrap_or(-1));
        }
        for record in &self.records {
            let headers: Vec<Header<'_>> = record
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.as_bytes(),
                    value: Some(v),
                })
                .collect();
            builder.append(NewRecord {
                timestamp: record.timestamp,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                headers: &headers,
            });
        }
        Bytes::from(builder.build().expect("the batch encodes"))
    }
}

/// Splits stored log bytes into `(base_offset, last_offset, batch bytes)` triples.
///
/// # Panics
/// If the bytes are not whole batches.
pub fn split_batches(mut bytes: &[u8]) -> Vec<(i64, i64, Bytes)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = crate::batch::check_batch(bytes).expect("stored batches are valid");
        out.push((
            header.base_offset,
            header.last_offset(),
            Bytes::copy_from_slice(&bytes[..header.size]),
        ));
        bytes = &bytes[header.size..];
    }
    out
}

//! Builds valid uncompressed v2 record batches, for tests and benchmarks of this crate and its users;
//! [`recovery`] holds the segment-recovery property its tests and fuzz target check.

pub mod recovery;

use bytes::Bytes;

use crate::batch::{HEADER_LEN, OFF_ATTRIBUTES, OFF_CRC};

/// One record to put in a batch.
#[derive(Debug, Clone)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Vec<u8>)>,
}

/// A builder for one magic-2 record batch, uncompressed, with a correct CRC.
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

    /// Raw batch attributes (compression bits are only a label here: the records stay uncompressed).
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

    /// Encodes the batch.
    ///
    /// # Panics
    /// If no record was added.
    pub fn build(&self) -> Bytes {
        assert!(
            !self.records.is_empty(),
            "a batch needs at least one record"
        );
        let base_timestamp = self.records[0].timestamp;
        let max_timestamp = self
            .records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(base_timestamp);
        let mut body = Vec::new();
        for (i, record) in self.records.iter().enumerate() {
            let mut r = Vec::new();
            r.push(0u8);
            put_varint(&mut r, record.timestamp - base_timestamp);
            put_varint(&mut r, i as i64);
            match &record.key {
                Some(k) => {
                    put_varint(&mut r, k.len() as i64);
                    r.extend_from_slice(k);
                }
                None => put_varint(&mut r, -1),
            }
            match &record.value {
                Some(v) => {
                    put_varint(&mut r, v.len() as i64);
                    r.extend_from_slice(v);
                }
                None => put_varint(&mut r, -1),
            }
            put_varint(&mut r, record.headers.len() as i64);
            for (k, v) in &record.headers {
                put_varint(&mut r, k.len() as i64);
                r.extend_from_slice(k.as_bytes());
                put_varint(&mut r, v.len() as i64);
                r.extend_from_slice(v);
            }
            put_varint(&mut body, r.len() as i64);
            body.extend_from_slice(&r);
        }
        let count = self.records.len() as i32;
        let mut b = Vec::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&self.base_offset.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - 12 + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        b.extend_from_slice(&self.attributes.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&max_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
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

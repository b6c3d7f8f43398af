//! Idempotent-producer state of one partition: per producer id, its epoch and the last five batches'
//! sequence ranges and offsets, enough to recognise retries and gaps. Persisted as snapshot files
//! `<offset>.snapshot` (state after every batch below that offset) and rebuilt by replaying batch
//! headers written after the latest snapshot.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;

use crate::batch::{be_i16, be_i32, be_i64, be_u32, BatchHeader};
use crate::index::write_synced;
use crate::{AppendError, ProducerEpoch, ProducerId};

/// How many recent batches per producer are remembered for duplicate detection (Kafka's value; a
/// producer has at most five requests in flight).
pub(crate) const BATCHES_KEPT: usize = 5;

const SNAPSHOT_VERSION: u16 = 1;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
}

/// What an idempotent batch is, relative to the producer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Next in sequence (or unknown producer): append it.
    Append,
    /// A retry of a batch already in the log.
    Duplicate(BatchMeta),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerState {
    /// Classifies an idempotent batch (`header.producer_id >= 0`) without changing state.
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<Check, AppendError> {
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(Check::Append);
        };
        let pid = ProducerId(header.producer_id);
        if header.producer_epoch < entry.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id: pid,
                current: ProducerEpoch(entry.epoch),
                got: ProducerEpoch(header.producer_epoch),
            });
        }
        if header.producer_epoch > entry.epoch {
            if header.base_sequence != 0 {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id: pid,
                    expected: 0,
                    got: header.base_sequence,
                });
            }
            return Ok(Check::Append);
        }
        let last_seq = header.last_sequence();
        if let Some(meta) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == header.base_sequence && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate(*meta));
        }
        match entry.batches.back() {
            Some(last) if header.base_sequence != next_seq(last.last_seq) => {
                Err(AppendError::OutOfOrderSequence {
                    producer_id: pid,
                    expected: next_seq(last.last_seq),
                    got: header.base_sequence,
                })
            }
            _ => Ok(Check::Append),
        }
    }

    /// Records a batch stored at `base_offset` (its header carries the producer fields).
    pub(crate) fn update(&mut self, header: &BatchHeader, base_offset: i64) {
        if !header.has_producer_id() {
            return;
        }
        let meta = BatchMeta {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            first_offset: base_offset,
            last_offset: base_offset + i64::from(header.last_offset_delta),
        };
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
    }

    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Encodes the state: version u16, crc32c u32 of the rest, count u32, then per producer
    /// `pid i64, epoch i16, n u8, n × (first_seq i32, last_seq i32, first_offset i64, last_offset i64)`.
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<_> = self.producers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[&pid];
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 6);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a snapshot; `None` when it is damaged (the caller then replays from further back).
    fn decode(b: &[u8]) -> Option<ProducerState> {
        if b.len() < 10 || be_i16(b, 0) as u16 != SNAPSHOT_VERSION {
            return None;
        }
        let body = &b[6..];
        if crc32c::crc32c(body) != be_u32(b, 2) {
            return None;
        }
        let count = be_u32(body, 0) as usize;
        let mut pos = 4;
        let mut state = ProducerState::default();
        for _ in 0..count {
            if body.len() < pos + 11 {
                return None;
            }
            let pid = be_i64(body, pos);
            let epoch = be_i16(body, pos + 8);
            let n = body[pos + 10] as usize;
            pos += 11;
            if n > BATCHES_KEPT || body.len() < pos + n * 24 {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: be_i32(body, pos),
                    last_seq: be_i32(body, pos + 4),
                    first_offset: be_i64(body, pos + 8),
                    last_offset: be_i64(body, pos + 16),
                });
                pos += 24;
            }
            state
                .producers
                .insert(pid, ProducerEntry { epoch, batches });
        }
        (pos == body.len()).then_some(state)
    }

    /// Writes `<dir>/<offset>.snapshot`.
    pub(crate) fn write_snapshot(&self, dir: &Path, offset: i64) -> io::Result<()> {
        write_synced(&snapshot_path(dir, offset), &self.encode())
    }

    /// Reads a snapshot file; `None` when missing or damaged.
    pub(crate) fn read_snapshot(path: &Path) -> Option<ProducerState> {
        std::fs::read(path).ok().and_then(|b| Self::decode(&b))
    }
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> std::path::PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;

    fn header(pid: i64, epoch: i16, seq: i32, records: usize) -> BatchHeader {
        let mut b = BatchBuilder::new().producer(pid, epoch, seq);
        for _ in 0..records {
            b = b.record(None, b"x", 1);
        }
        BatchHeader::parse(&b.build())
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut s = ProducerState::default();
        let h = header(1, 0, 0, 3);
        assert_eq!(s.check(&h).unwrap(), Check::Append);
        s.update(&h, 100);
        assert!(
            matches!(s.check(&h).unwrap(), Check::Duplicate(m) if m.first_offset == 100 && m.last_offset == 102)
        );
        assert_eq!(s.check(&header(1, 0, 3, 1)).unwrap(), Check::Append);
        assert!(matches!(
            s.check(&header(1, 0, 5, 1)),
            Err(AppendError::OutOfOrderSequence {
                expected: 3,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            s.check(&header(1, 1, 4, 1)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        assert_eq!(s.check(&header(1, 1, 0, 1)).unwrap(), Check::Append);
        s.update(&header(1, 1, 0, 1), 103);
        assert!(matches!(
            s.check(&header(1, 0, 3, 1)),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            s.update(&header(9, 0, i, 1), i64::from(i));
        }
        assert!(matches!(
            s.check(&header(9, 0, 6, 1)).unwrap(),
            Check::Duplicate(_)
        ));
        assert!(matches!(
            s.check(&header(9, 0, 2, 1)).unwrap(),
            Check::Duplicate(_)
        ));
        // Sequence 1 fell out of the window: it is neither a known duplicate nor next in line.
        assert!(s.check(&header(9, 0, 1, 1)).is_err());
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut s = ProducerState::default();
        s.update(&header(1, 2, 0, 2), 0);
        s.update(&header(7, 0, 10, 1), 2);
        let bytes = s.encode();
        assert_eq!(ProducerState::decode(&bytes), Some(s));
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(ProducerState::decode(&bad), None);
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
    }
}

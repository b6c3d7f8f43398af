//! Idempotent and transactional producer state of one partition: per producer id, its epoch, the
//! last five batches' sequence ranges and offsets (enough to recognise retries and gaps), and the
//! first offset of its open transaction; plus the open transactions by first offset, which give
//! the last stable offset. Persisted as snapshot files `<offset>.snapshot` (state after every
//! batch below that offset) and rebuilt by replaying batches written after the latest snapshot.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::Path;

use crate::batch::{be_i16, be_i32, be_i64, be_u32, BatchHeader, MarkerKind};
use crate::index::write_synced;
use crate::txn_index::AbortedTxn;
use crate::{AppendError, ProducerEpoch, ProducerId};

/// How many recent batches per producer are remembered for duplicate detection (Kafka's value; a
/// producer has at most five requests in flight).
pub(crate) const BATCHES_KEPT: usize = 5;

/// Version 2 added the open transaction, last timestamp and coordinator epoch per producer; a
/// version 1 snapshot is not read (the state is replayed from the log instead).
const SNAPSHOT_VERSION: u16 = 2;
/// Fixed bytes per producer in a snapshot before its batches.
const PRODUCER_FIXED: usize = 8 + 2 + 8 + 8 + 4 + 1;

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
    /// First offset of the producer's open transaction in this partition.
    pub txn_first_offset: Option<i64>,
    /// Max timestamp of its latest batch.
    pub last_timestamp: i64,
    /// Epoch of the transaction coordinator that wrote its latest marker (-1: none yet).
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            last_timestamp: -1,
            coordinator_epoch: -1,
        }
    }
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence of its last record (-1: none, e.g. only markers).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of its open transaction (-1: none).
    pub current_txn_start_offset: i64,
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
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
}

/// The base sequence of batches without one.
const NO_SEQUENCE: i32 = -1;

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
        // Batches the broker writes for a transaction (offset commits) carry no sequence.
        if header.base_sequence == NO_SEQUENCE {
            return Ok(Check::Append);
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

    /// Records a data batch stored at `base_offset` (its header carries the producer fields).
    /// Control batches are recorded with [`Self::complete_txn`].
    pub(crate) fn update(&mut self, header: &BatchHeader, base_offset: i64) {
        if !header.has_producer_id() || header.is_control() {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch));
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = header.max_timestamp;
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
            self.ongoing.insert(base_offset, header.producer_id);
        }
        if header.base_sequence == NO_SEQUENCE {
            return;
        }
        let meta = BatchMeta {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            first_offset: base_offset,
            last_offset: base_offset + i64::from(header.last_offset_delta),
        };
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
    }

    /// Whether a marker of `epoch` may be written for `producer_id`: not older than the epoch the
    /// partition knows.
    pub(crate) fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), AppendError> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => Err(AppendError::InvalidProducerEpoch {
                producer_id: ProducerId(producer_id),
                current: ProducerEpoch(entry.epoch),
                got: ProducerEpoch(epoch),
            }),
            _ => Ok(()),
        }
    }

    /// Records a commit or abort marker at `offset`: the producer's open transaction ends (a
    /// bumped epoch also resets its sequences). Returns the aborted transaction's index entry when
    /// an abort ended one. `log_end` is the log end after the marker.
    pub(crate) fn complete_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        kind: MarkerKind,
        coordinator_epoch: i32,
        offset: i64,
        log_end: i64,
    ) -> Option<AbortedTxn> {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        let first = entry.txn_first_offset.take()?;
        self.ongoing.remove(&first);
        (kind == MarkerKind::Abort).then(|| AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(log_end),
        })
    }

    /// First offset of the oldest open transaction: the last stable offset when there is one.
    pub(crate) fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// First offset of `producer_id`'s open transaction at `epoch`, if it has one.
    pub(crate) fn open_txn(&self, producer_id: i64, epoch: i16) -> Option<i64> {
        self.producers
            .get(&producer_id)
            .filter(|e| e.epoch == epoch)
            .and_then(|e| e.txn_first_offset)
    }

    /// Every producer, for DescribeProducers.
    pub(crate) fn describe(&self) -> Vec<ProducerInfo> {
        let mut out: Vec<ProducerInfo> = self
            .producers
            .iter()
            .map(|(&pid, e)| ProducerInfo {
                producer_id: pid,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Encodes the state: version u16, crc32c u32 of the rest, count u32, then per producer
    /// `pid i64, epoch i16, txn_first_offset i64 (-1: none), last_timestamp i64,
    /// coordinator_epoch i32, n u8, n × (first_seq i32, last_seq i32, first_offset i64,
    /// last_offset i64)`.
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<_> = self.producers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[&pid];
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
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
            if body.len() < pos + PRODUCER_FIXED {
                return None;
            }
            let pid = be_i64(body, pos);
            let epoch = be_i16(body, pos + 8);
            let txn_first = be_i64(body, pos + 10);
            let last_timestamp = be_i64(body, pos + 18);
            let coordinator_epoch = be_i32(body, pos + 26);
            let n = body[pos + 30] as usize;
            pos += PRODUCER_FIXED;
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
            let txn_first_offset = (txn_first >= 0).then_some(txn_first);
            if let Some(first) = txn_first_offset {
                state.ongoing.insert(first, pid);
            }
            state.producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    txn_first_offset,
                    last_timestamp,
                    coordinator_epoch,
                },
            );
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

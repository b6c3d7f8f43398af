//! The records of `__transaction_state`, in Kafka's format: which partition a transactional id
//! lives in, and how a transaction's metadata is encoded as record key and value.
//!
//! Key (version 0): `version i16, transactional id string`. Value (version 0): `version i16,
//! producer id i64, producer epoch i16, timeout ms i32, state i8, partitions [topic string,
//! partitions [i32]] (nullable, i32 count), last update ms i64, start ms i64`. A record with a
//! null value removes the transactional id.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::group::offsets_topic::{get_i32, get_string, put_string};

/// Name of the internal topic holding transaction state.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// A transaction's state, with Kafka's names and on-disk codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    fn code(self) -> i8 {
        TxnState::ALL
            .iter()
            .position(|s| *s == self)
            .expect("every state is listed") as i8
    }

    fn from_code(code: i8) -> Option<TxnState> {
        TxnState::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What `__transaction_state` keeps per transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

pub fn key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + transactional_id.len());
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, transactional_id);
    buf.freeze()
}

pub fn value(r: &TxnRecord) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(r.producer_id);
    buf.put_i16(r.producer_epoch);
    buf.put_i32(r.timeout_ms);
    buf.put_i8(r.state.code());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &r.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic => ps.push(*partition),
            _ => topics.push((topic, vec![*partition])),
        }
    }
    buf.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_string(&mut buf, topic);
        buf.put_i32(partitions.len() as i32);
        for p in partitions {
            buf.put_i32(p);
        }
    }
    buf.put_i64(r.last_update_ms);
    buf.put_i64(r.start_ms);
    buf.freeze()
}

/// Decodes a record; `None` for a record this broker does not know (other versions, damage).
/// `Some((id, None))` is a tombstone.
pub fn decode(key: Option<Bytes>, value: Option<Bytes>) -> Option<(String, Option<TxnRecord>)> {
    let mut k = key?;
    if k.remaining() < 2 || k.get_i16() != KEY_VERSION {
        return None;
    }
    let id = get_string(&mut k)?;
    let Some(mut v) = value else {
        return Some((id, None));
    };
    if v.remaining() < 2 + 8 + 2 + 4 + 1 || v.get_i16() != VALUE_VERSION {
        return None;
    }
    let producer_id = v.get_i64();
    let producer_epoch = v.get_i16();
    let timeout_ms = v.get_i32();
    let state = TxnState::from_code(v.get_i8())?;
    let mut partitions = BTreeSet::new();
    let topics = get_i32(&mut v)?;
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut v)?;
        let count = get_i32(&mut v)?;
        if count < 0 || v.remaining() < count as usize * 4 {
            return None;
        }
        for _ in 0..count {
            partitions.insert((topic.clone(), v.get_i32()));
        }
    }
    if v.remaining() < 16 {
        return None;
    }
    let last_update_ms = v.get_i64();
    let start_ms = v.get_i64();
    Some((
        id,
        Some(TxnRecord {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = TxnRecord {
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("a".to_owned(), 0),
                ("a".to_owned(), 2),
                ("b".to_owned(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 10,
            start_ms: 5,
        };
        let decoded = decode(Some(key("t1")), Some(value(&record)));
        assert_eq!(decoded, Some(("t1".to_owned(), Some(record.clone()))));
        assert_eq!(decode(Some(key("t1")), None), Some(("t1".to_owned(), None)));
        let full = value(&record);
        for cut in 0..full.len() {
            assert_eq!(decode(Some(key("t1")), Some(full.slice(..cut))), None);
        }
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_code(state.code()), Some(state));
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
    }
}

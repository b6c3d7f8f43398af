//! Window and session layouts over a key-value store, the time segments that let expired
//! windows go by range, and the fetches windowed operators and joins need.
//!
//! Window entry key: `segment | key length | key | window start | sequence`; session entry key:
//! `segment | key length | key | session end | session start`. Integers are big-endian with the
//! sign bit flipped, so byte order is numeric order. The segment (window start, or session end,
//! divided by the segment interval) comes first so a whole segment expires as one key range, as
//! Kafka Streams' segmented stores drop whole segments; the length prefix keeps one key's entries
//! contiguous whatever the other keys are.

use std::ops::Bound;

use super::{StateStore, StoreKind};
use crate::error::StoreError;

/// Windows of every key: (key, start, value).
pub(crate) type WindowEntries = Vec<(Vec<u8>, i64, Vec<u8>)>;
/// Sessions of every key: (key, start, end, value).
pub(crate) type SessionEntries = Vec<(Vec<u8>, i64, i64, Vec<u8>)>;

/// At least this much time per segment, so short windows do not make many tiny segments.
const SEGMENT_MIN_MS: i64 = 60_000;

fn segment_interval(retention_ms: i64) -> i64 {
    (retention_ms / 2).max(SEGMENT_MIN_MS)
}

fn flip(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1u64 << 63)).to_be_bytes()
}

fn unflip(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1u64 << 63)) as i64)
}

fn retention(kind: StoreKind) -> i64 {
    match kind {
        StoreKind::Window { retention_ms, .. } | StoreKind::Session { retention_ms } => {
            retention_ms
        }
        StoreKind::KeyValue => i64::MAX,
    }
}

fn prefix(segment: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.len() + 12);
    out.extend_from_slice(&flip(segment));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits an entry key into (segment, key, first time, trailing bytes).
fn split(entry: &[u8]) -> Option<(i64, &[u8], i64, &[u8])> {
    let segment = unflip(entry.get(0..8)?)?;
    let len = u32::from_be_bytes(entry.get(8..12)?.try_into().ok()?) as usize;
    let key = entry.get(12..12usize.checked_add(len)?)?;
    let time = unflip(entry.get(12 + len..20 + len)?)?;
    Some((segment, key, time, &entry[20 + len..]))
}

/// The time an entry key carries (window start, session end), for a store's observed time.
pub(crate) fn entry_time(kind: StoreKind, entry: &[u8]) -> Option<i64> {
    match kind {
        StoreKind::KeyValue => None,
        _ => split(entry).map(|(_, _, time, _)| time),
    }
}

fn corrupt(store: &StateStore, entry: &[u8]) -> StoreError {
    StoreError::Corrupt {
        store: store.name.to_string(),
        detail: format!("window entry of {} bytes", entry.len()),
    }
}

/// Moves the store's observed time to `time`, dropping segments that fell out of retention.
fn observe(store: &mut StateStore, time: i64) -> Result<(), StoreError> {
    let before = store.observed_ms;
    if time <= before {
        return Ok(());
    }
    store.observed_ms = time;
    let interval = segment_interval(retention(store.kind));
    let live_from = time.saturating_sub(retention(store.kind));
    let first_live = live_from.div_euclid(interval);
    let was_first_live = before
        .saturating_sub(retention(store.kind))
        .div_euclid(interval);
    if before == i64::MIN || first_live > was_first_live {
        let end = flip(first_live);
        store.expire_range(Bound::Unbounded, Bound::Excluded(&end[..]))?;
    }
    Ok(())
}

/// The oldest time still inside retention.
fn live_from(store: &StateStore) -> i64 {
    store
        .observed_ms
        .saturating_sub(retention(store.kind))
        .saturating_add(1)
}

/// Puts (or with `None` deletes) the window of `key` starting at `start`.
pub(crate) fn window_put(
    store: &mut StateStore,
    key: &[u8],
    start: i64,
    seq: u32,
    value: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    observe(store, start)?;
    if start < live_from(store) {
        return Ok(());
    }
    let interval = segment_interval(retention(store.kind));
    let mut entry = prefix(start.div_euclid(interval), key);
    entry.extend_from_slice(&flip(start));
    entry.extend_from_slice(&seq.to_be_bytes());
    match value {
        Some(v) => store.put(entry, v),
        None => store.delete(&entry),
    }
}

/// The windows of `key` starting in `[from, to]`: (start, sequence, value), by start.
pub(crate) fn window_fetch(
    store: &StateStore,
    key: &[u8],
    from: i64,
    to: i64,
) -> Result<Vec<(i64, u32, Vec<u8>)>, StoreError> {
    let from = from.max(live_from(store));
    let to = to.min(store.observed_ms);
    let mut out = Vec::new();
    if from > to {
        return Ok(out);
    }
    let interval = segment_interval(retention(store.kind));
    for segment in from.div_euclid(interval)..=to.div_euclid(interval) {
        let base = prefix(segment, key);
        let mut lo = base.clone();
        lo.extend_from_slice(&flip(from));
        let mut hi = base;
        hi.extend_from_slice(&flip(to));
        hi.extend_from_slice(&[0xff; 4]);
        for (entry, value) in store.range(Bound::Included(&lo), Bound::Included(&hi))? {
            let (_, _, start, rest) = split(&entry).ok_or_else(|| corrupt(store, &entry))?;
            let seq = u32::from_be_bytes(rest.try_into().map_err(|_| corrupt(store, &entry))?);
            out.push((start, seq, value));
        }
    }
    Ok(out)
}

/// Every window starting in `[from, to]`: (key, start, value), for interactive queries.
pub(crate) fn window_fetch_all(
    store: &StateStore,
    from: i64,
    to: i64,
) -> Result<WindowEntries, StoreError> {
    let mut out = Vec::new();
    for (entry, value) in store.range(Bound::Unbounded, Bound::Unbounded)? {
        let (_, key, start, _) = split(&entry).ok_or_else(|| corrupt(store, &entry))?;
        if start >= from.max(live_from(store)) && start <= to {
            out.push((key.to_vec(), start, value));
        }
    }
    Ok(out)
}

fn session_entry(segment: i64, key: &[u8], start: i64, end: i64) -> Vec<u8> {
    let mut entry = prefix(segment, key);
    entry.extend_from_slice(&flip(end));
    entry.extend_from_slice(&flip(start));
    entry
}

/// Puts (or with `None` deletes) the session `[start, end]` of `key`.
pub(crate) fn session_put(
    store: &mut StateStore,
    key: &[u8],
    start: i64,
    end: i64,
    value: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    observe(store, end)?;
    let interval = segment_interval(retention(store.kind));
    let entry = session_entry(end.div_euclid(interval), key, start, end);
    match value {
        Some(v) => store.put(entry, v),
        None => store.delete(&entry),
    }
}

/// The sessions of `key` that end at or after `earliest_end` and start at or before
/// `latest_start`: (start, end, value), by end.
pub(crate) fn session_find(
    store: &StateStore,
    key: &[u8],
    earliest_end: i64,
    latest_start: i64,
) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
    let from = earliest_end.max(live_from(store));
    let mut out = Vec::new();
    if from > store.observed_ms {
        return Ok(out);
    }
    let interval = segment_interval(retention(store.kind));
    for segment in from.div_euclid(interval)..=store.observed_ms.div_euclid(interval) {
        let base = prefix(segment, key);
        let mut lo = base.clone();
        lo.extend_from_slice(&flip(from));
        let mut hi = base;
        hi.extend_from_slice(&[0xff; 16]);
        for (entry, value) in store.range(Bound::Included(&lo), Bound::Included(&hi))? {
            let (_, _, end, rest) = split(&entry).ok_or_else(|| corrupt(store, &entry))?;
            let start = unflip(rest).ok_or_else(|| corrupt(store, &entry))?;
            if start <= latest_start {
                out.push((start, end, value));
            }
        }
    }
    Ok(out)
}

/// Every live session: (key, start, end, value), for interactive queries.
pub(crate) fn session_fetch_all(store: &StateStore) -> Result<SessionEntries, StoreError> {
    let mut out = Vec::new();
    for (entry, value) in store.range(Bound::Unbounded, Bound::Unbounded)? {
        let (_, key, end, rest) = split(&entry).ok_or_else(|| corrupt(store, &entry))?;
        let start = unflip(rest).ok_or_else(|| corrupt(store, &entry))?;
        if end >= live_from(store) {
            out.push((key.to_vec(), start, end, value));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{memory::MemoryStore, StoreBackend, StoreSpec};

    fn store(kind: StoreKind) -> StateStore {
        let spec = StoreSpec {
            name: "w".into(),
            kind,
            backend: StoreBackend::InMemory,
            logged: false,
        };
        StateStore::new(&spec, Box::new(MemoryStore::default()), None)
    }

    #[test]
    fn windows_of_one_key_do_not_mix_with_a_longer_key() {
        let mut s = store(StoreKind::Window {
            retention_ms: 1_000_000,
            retain_duplicates: false,
        });
        window_put(&mut s, b"a", 100, 0, Some(b"1".to_vec())).unwrap();
        window_put(&mut s, b"ab", 100, 0, Some(b"2".to_vec())).unwrap();
        window_put(&mut s, b"a", 200, 0, Some(b"3".to_vec())).unwrap();
        window_put(&mut s, b"a", -50, 0, Some(b"4".to_vec())).unwrap();
        let got = window_fetch(&s, b"a", -100, 1000).unwrap();
        assert_eq!(
            got.iter()
                .map(|(t, _, v)| (*t, v.clone()))
                .collect::<Vec<_>>(),
            vec![
                (-50, b"4".to_vec()),
                (100, b"1".to_vec()),
                (200, b"3".to_vec())
            ]
        );
    }

    #[test]
    fn expired_segments_are_dropped() {
        let mut s = store(StoreKind::Window {
            retention_ms: 120_000,
            retain_duplicates: false,
        });
        window_put(&mut s, b"k", 0, 0, Some(b"old".to_vec())).unwrap();
        window_put(&mut s, b"k", 1_000_000, 0, Some(b"new".to_vec())).unwrap();
        assert_eq!(s.approximate_len(), 1);
        assert_eq!(window_fetch(&s, b"k", 0, 2_000_000).unwrap().len(), 1);
        // Too old to be stored at all.
        window_put(&mut s, b"k", 5, 0, Some(b"late".to_vec())).unwrap();
        assert_eq!(s.approximate_len(), 1);
    }

    #[test]
    fn sessions_are_found_by_overlap() {
        let mut s = store(StoreKind::Session {
            retention_ms: 1_000_000,
        });
        session_put(&mut s, b"u", 10, 20, Some(b"a".to_vec())).unwrap();
        session_put(&mut s, b"u", 100, 150, Some(b"b".to_vec())).unwrap();
        session_put(&mut s, b"v", 15, 18, Some(b"c".to_vec())).unwrap();
        let found = session_find(&s, b"u", 18, 120).unwrap();
        assert_eq!(found.len(), 2);
        let found = session_find(&s, b"u", 21, 99).unwrap();
        assert!(found.is_empty());
        session_put(&mut s, b"u", 10, 20, None).unwrap();
        assert_eq!(session_fetch_all(&s).unwrap().len(), 2);
    }
}

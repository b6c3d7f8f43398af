//! Joins: stream-stream (windowed; inner, left, outer), stream-table and stream-global-table
//! (lookups; inner, left), and table-table (inner, left, outer).
//!
//! Left and outer stream-stream joins emit a record without a match only once its join window
//! has closed (its time plus the window's far side plus grace, in stream time), as Kafka Streams
//! does since 3.1, instead of emitting it eagerly and then again when a match arrives. Those
//! records wait in a shared "outer" store; entry key: record time (sign-flipped big-endian),
//! side (0 left, 1 right), sequence, the key's bytes; value: the record's value bytes.

use std::ops::Bound;
use std::sync::Arc;

use crate::error::{Result, StoreError};
use crate::ops::{Change, KeyMapper, LookupJoiner};
use crate::processor::{Data, Processor, ProcessorContext, StoreRef};
use crate::record::Record;
use crate::serde::{to_bytes, SerdeRef};
use crate::store_api::{KeyValueStore, WindowStore};
use crate::windows::JoinWindows;

/// Which records a join emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinKind {
    /// Only matches.
    Inner,
    /// Every left record, with a match or without.
    Left,
    /// Every record of either side.
    Outer,
}

pub(crate) type Joiner<K, VL, VR, VO> =
    Arc<dyn Fn(&K, Option<&VL>, Option<&VR>) -> VO + Send + Sync>;

fn flip(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1u64 << 63)).to_be_bytes()
}

fn unflip(bytes: &[u8]) -> i64 {
    (u64::from_be_bytes(bytes.try_into().expect("8 bytes")) ^ (1u64 << 63)) as i64
}

/// What both sides of a stream-stream join share.
pub(crate) struct StreamJoinCore<K, VL, VR, VO> {
    pub(crate) kind: JoinKind,
    pub(crate) windows: JoinWindows,
    pub(crate) left_store_name: Arc<str>,
    pub(crate) right_store_name: Arc<str>,
    pub(crate) outer_store_name: Option<Arc<str>>,
    pub(crate) key: SerdeRef<K>,
    pub(crate) left_value: SerdeRef<VL>,
    pub(crate) right_value: SerdeRef<VR>,
    pub(crate) joiner: Joiner<K, VL, VR, VO>,
    pub(crate) left_store: Option<WindowStore<K, VL>>,
    pub(crate) right_store: Option<WindowStore<K, VR>>,
    pub(crate) outer_store: Option<StoreRef>,
}

impl<K, VL, VR, VO> Clone for StreamJoinCore<K, VL, VR, VO> {
    fn clone(&self) -> Self {
        StreamJoinCore {
            kind: self.kind,
            windows: self.windows,
            left_store_name: self.left_store_name.clone(),
            right_store_name: self.right_store_name.clone(),
            outer_store_name: self.outer_store_name.clone(),
            key: self.key.clone(),
            left_value: self.left_value.clone(),
            right_value: self.right_value.clone(),
            joiner: self.joiner.clone(),
            left_store: None,
            right_store: None,
            outer_store: None,
        }
    }
}

impl<K: Data, VL: Data, VR: Data, VO: Data> StreamJoinCore<K, VL, VR, VO> {
    fn init<KO, VOut>(&mut self, ctx: &mut ProcessorContext<'_, '_, KO, VOut>) -> Result<()>
    where
        KO: Data,
        VOut: Data,
    {
        self.left_store = Some(ctx.window_store(&self.left_store_name)?);
        self.right_store = Some(ctx.window_store(&self.right_store_name)?);
        if let Some(name) = &self.outer_store_name {
            self.outer_store = Some(ctx.ctx.store(name)?.store.clone());
        }
        Ok(())
    }

    fn corrupt(&self, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            store: self
                .outer_store_name
                .as_deref()
                .unwrap_or("join")
                .to_string(),
            detail: detail.to_string(),
        }
    }

    fn outer_entry(&self, time: i64, left: bool, seq: u32, key: &K) -> Result<Vec<u8>> {
        let mut entry = flip(time).to_vec();
        entry.push(if left { 0 } else { 1 });
        entry.extend_from_slice(&seq.to_be_bytes());
        let topic = self.outer_store_name.as_deref().unwrap_or("join");
        entry.extend_from_slice(&to_bytes(&*self.key, topic, key).map_err(|e| self.corrupt(e))?);
        Ok(entry)
    }

    /// Processes a record of one side: `this_left` says which.
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, VO>,
        key: K,
        left: Option<VL>,
        right: Option<VR>,
        timestamp: i64,
    ) -> Result<()> {
        let this_left = left.is_some();
        let w = self.windows;
        let stream_time = ctx.stream_time();
        let far = if this_left { w.after_ms } else { w.before_ms };
        if timestamp.saturating_add(far).saturating_add(w.grace_ms) < stream_time {
            ctx.ctx.state.dropped_late += 1;
            return self.emit_expired(ctx);
        }
        let seq = ctx.record_metadata().offset as u32;
        let topic = self
            .outer_store_name
            .as_deref()
            .unwrap_or("join")
            .to_string();
        let mut matched = false;
        if let Some(l) = &left {
            self.left_store.as_ref().expect("initialized").put_seq(
                &key,
                timestamp,
                seq,
                Some(l),
            )?;
            let others = self.right_store.as_ref().expect("initialized").fetch_seq(
                &key,
                timestamp.saturating_sub(w.before_ms),
                timestamp.saturating_add(w.after_ms),
            )?;
            for (t, other_seq, r) in others {
                matched = true;
                if self.kind == JoinKind::Outer {
                    let entry = self.outer_entry(t, false, other_seq, &key)?;
                    self.outer_store
                        .as_ref()
                        .expect("outer joins have an outer store")
                        .lock()
                        .delete(&entry)?;
                }
                let value = (self.joiner)(&key, Some(l), Some(&r));
                ctx.forward(Record::new(key.clone(), value, timestamp.max(t)))?;
            }
        }
        if let Some(r) = &right {
            self.right_store.as_ref().expect("initialized").put_seq(
                &key,
                timestamp,
                seq,
                Some(r),
            )?;
            let others = self.left_store.as_ref().expect("initialized").fetch_seq(
                &key,
                timestamp.saturating_sub(w.after_ms),
                timestamp.saturating_add(w.before_ms),
            )?;
            for (t, other_seq, l) in others {
                matched = true;
                if self.kind != JoinKind::Inner {
                    let entry = self.outer_entry(t, true, other_seq, &key)?;
                    self.outer_store
                        .as_ref()
                        .expect("outer joins have an outer store")
                        .lock()
                        .delete(&entry)?;
                }
                let value = (self.joiner)(&key, Some(&l), Some(r));
                ctx.forward(Record::new(key.clone(), value, timestamp.max(t)))?;
            }
        }
        let tracked = match self.kind {
            JoinKind::Inner => false,
            JoinKind::Left => this_left,
            JoinKind::Outer => true,
        };
        if !matched && tracked {
            let entry = self.outer_entry(timestamp, this_left, seq, &key)?;
            let value = match (&left, &right) {
                (Some(l), _) => to_bytes(&*self.left_value, &topic, l),
                (_, Some(r)) => to_bytes(&*self.right_value, &topic, r),
                _ => unreachable!("a record has one side"),
            }
            .map_err(|e| self.corrupt(e))?;
            self.outer_store
                .as_ref()
                .expect("outer joins have an outer store")
                .lock()
                .put(entry, value)?;
        }
        self.emit_expired(ctx)
    }

    /// Emits the unmatched records whose join window has closed.
    fn emit_expired(&mut self, ctx: &mut ProcessorContext<'_, '_, K, VO>) -> Result<()> {
        let Some(store) = self.outer_store.clone() else {
            return Ok(());
        };
        let w = self.windows;
        let stream_time = ctx.stream_time();
        let horizon = stream_time
            .saturating_sub(w.grace_ms)
            .saturating_sub(w.before_ms.min(w.after_ms));
        let bound = flip(horizon);
        let candidates = store
            .lock()
            .range(Bound::Unbounded, Bound::Excluded(&bound[..]))?;
        let topic = self
            .outer_store_name
            .as_deref()
            .unwrap_or("join")
            .to_string();
        for (entry, value) in candidates {
            if entry.len() < 13 {
                return Err(self.corrupt("short outer-join entry").into());
            }
            let time = unflip(&entry[..8]);
            let left = entry[8] == 0;
            let far = if left { w.after_ms } else { w.before_ms };
            if time.saturating_add(far).saturating_add(w.grace_ms) >= stream_time {
                continue;
            }
            let key = self
                .key
                .deserialize(&topic, Some(&entry[13..]))
                .map_err(|e| self.corrupt(e))?;
            store.lock().delete(&entry)?;
            let joined = if left {
                let l = self
                    .left_value
                    .deserialize(&topic, Some(&value))
                    .map_err(|e| self.corrupt(e))?;
                (self.joiner)(&key, Some(&l), None)
            } else {
                let r = self
                    .right_value
                    .deserialize(&topic, Some(&value))
                    .map_err(|e| self.corrupt(e))?;
                (self.joiner)(&key, None, Some(&r))
            };
            ctx.forward(Record::new(key, joined, time))?;
        }
        Ok(())
    }
}

/// The left input of a stream-stream join.
pub(crate) struct StreamJoinLeft<K, VL, VR, VO>(pub(crate) StreamJoinCore<K, VL, VR, VO>);
/// The right input of a stream-stream join.
pub(crate) struct StreamJoinRight<K, VL, VR, VO>(pub(crate) StreamJoinCore<K, VL, VR, VO>);

impl<K: Data, VL: Data, VR: Data, VO: Data> Processor<K, VL, K, VO>
    for StreamJoinLeft<K, VL, VR, VO>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, VO>) -> Result<()> {
        self.0.init(ctx)
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, VO>,
        record: Record<K, VL>,
    ) -> Result<()> {
        self.0
            .process(ctx, record.key, Some(record.value), None, record.timestamp)
    }
}

impl<K: Data, VL: Data, VR: Data, VO: Data> Processor<K, VR, K, VO>
    for StreamJoinRight<K, VL, VR, VO>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, VO>) -> Result<()> {
        self.0.init(ctx)
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, VO>,
        record: Record<K, VR>,
    ) -> Result<()> {
        self.0
            .process(ctx, record.key, None, Some(record.value), record.timestamp)
    }
}

/// Joins each stream record with the table's current value for its key (`left`: also without).
pub(crate) struct StreamTableJoin<K, V, VT, VO> {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<KeyValueStore<K, VT>>,
    pub(crate) left: bool,
    pub(crate) joiner: LookupJoiner<K, V, VT, VO>,
}

impl<K: Data, V: Data, VT: Data, VO: Data> Processor<K, V, K, VO>
    for StreamTableJoin<K, V, VT, VO>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, VO>) -> Result<()> {
        self.store = Some(ctx.key_value_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, VO>,
        record: Record<K, V>,
    ) -> Result<()> {
        let other = self.store.as_ref().expect("initialized").get(&record.key)?;
        if other.is_none() && !self.left {
            return Ok(());
        }
        let value = (self.joiner)(&record.key, &record.value, other.as_ref());
        ctx.forward(record.with_value(value))
    }
}

/// Joins each stream record with a global table's value for a key computed from the record.
pub(crate) struct GlobalTableJoin<K, V, GK, GV, VO> {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<KeyValueStore<GK, GV>>,
    pub(crate) left: bool,
    pub(crate) mapper: KeyMapper<K, V, GK>,
    pub(crate) joiner: LookupJoiner<K, V, GV, VO>,
}

impl<K: Data, V: Data, GK: Data, GV: Data, VO: Data> Processor<K, V, K, VO>
    for GlobalTableJoin<K, V, GK, GV, VO>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, VO>) -> Result<()> {
        self.store = Some(ctx.key_value_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, VO>,
        record: Record<K, V>,
    ) -> Result<()> {
        let global_key = (self.mapper)(&record.key, &record.value);
        let other = self.store.as_ref().expect("initialized").get(&global_key)?;
        if other.is_none() && !self.left {
            return Ok(());
        }
        let value = (self.joiner)(&record.key, &record.value, other.as_ref());
        ctx.forward(record.with_value(value))
    }
}

/// What both sides of a table-table join share.
pub(crate) struct TableJoinCore<K, VL, VR, VO> {
    pub(crate) kind: JoinKind,
    pub(crate) left_store_name: Arc<str>,
    pub(crate) right_store_name: Arc<str>,
    pub(crate) joiner: Joiner<K, VL, VR, VO>,
    pub(crate) left_store: Option<KeyValueStore<K, VL>>,
    pub(crate) right_store: Option<KeyValueStore<K, VR>>,
}

impl<K, VL, VR, VO> Clone for TableJoinCore<K, VL, VR, VO> {
    fn clone(&self) -> Self {
        TableJoinCore {
            kind: self.kind,
            left_store_name: self.left_store_name.clone(),
            right_store_name: self.right_store_name.clone(),
            joiner: self.joiner.clone(),
            left_store: None,
            right_store: None,
        }
    }
}

impl<K: Data, VL: Data, VR: Data, VO: Data> TableJoinCore<K, VL, VR, VO> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>) -> Result<()> {
        self.left_store = Some(ctx.key_value_store(&self.left_store_name)?);
        self.right_store = Some(ctx.key_value_store(&self.right_store_name)?);
        Ok(())
    }

    fn join(&self, key: &K, left: Option<&VL>, right: Option<&VR>) -> Option<VO> {
        let emit = match self.kind {
            JoinKind::Inner => left.is_some() && right.is_some(),
            JoinKind::Left => left.is_some(),
            JoinKind::Outer => left.is_some() || right.is_some(),
        };
        emit.then(|| (self.joiner)(key, left, right))
    }
}

/// Forwards a joined table update unless both sides of it are absent.
fn forward_change<K: Data, V, VO: Data>(
    ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>,
    record: Record<K, Change<V>>,
    new: Option<VO>,
    old: Option<VO>,
) -> Result<()> {
    if new.is_none() && old.is_none() {
        return Ok(());
    }
    ctx.forward(record.with_value(Change { new, old }))
}

/// The left input of a table-table join.
pub(crate) struct TableJoinLeft<K, VL, VR, VO>(pub(crate) TableJoinCore<K, VL, VR, VO>);
/// The right input of a table-table join.
pub(crate) struct TableJoinRight<K, VL, VR, VO>(pub(crate) TableJoinCore<K, VL, VR, VO>);

impl<K: Data, VL: Data, VR: Data, VO: Data> Processor<K, Change<VL>, K, Change<VO>>
    for TableJoinLeft<K, VL, VR, VO>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>) -> Result<()> {
        self.0.init(ctx)
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>,
        record: Record<K, Change<VL>>,
    ) -> Result<()> {
        let right = self
            .0
            .right_store
            .as_ref()
            .expect("initialized")
            .get(&record.key)?;
        let new = self
            .0
            .join(&record.key, record.value.new.as_ref(), right.as_ref());
        let old = self
            .0
            .join(&record.key, record.value.old.as_ref(), right.as_ref());
        forward_change(ctx, record, new, old)
    }
}

impl<K: Data, VL: Data, VR: Data, VO: Data> Processor<K, Change<VR>, K, Change<VO>>
    for TableJoinRight<K, VL, VR, VO>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>) -> Result<()> {
        self.0.init(ctx)
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>,
        record: Record<K, Change<VR>>,
    ) -> Result<()> {
        let left = self
            .0
            .left_store
            .as_ref()
            .expect("initialized")
            .get(&record.key)?;
        let new = self
            .0
            .join(&record.key, left.as_ref(), record.value.new.as_ref());
        let old = self
            .0
            .join(&record.key, left.as_ref(), record.value.old.as_ref());
        forward_change(ctx, record, new, old)
    }
}

//! Windowed aggregations: time windows (tumbling and hopping), sliding windows and session
//! windows, each dropping records that arrive after their window closed (end plus grace, in
//! stream time).

use std::sync::Arc;

use crate::error::Result;
use crate::ops::aggregate::{Aggregator, Fold, Initializer};
use crate::ops::{Change, Merger};
use crate::processor::{Data, Processor, ProcessorContext};
use crate::record::Record;
use crate::store_api::{SessionStore, WindowStore};
use crate::windows::{SessionWindows, SlidingWindows, TimeWindows, Window, Windowed};

/// Aggregates each record into every time window containing it.
pub(crate) struct TimeWindowAggregate<K, V, A> {
    pub(crate) windows: TimeWindows,
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<WindowStore<K, A>>,
    pub(crate) fold: Fold<K, V, A>,
}

impl<K: Data, V: Data, A: Data> Processor<K, V, Windowed<K>, Change<A>>
    for TimeWindowAggregate<K, V, A>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<A>>) -> Result<()> {
        self.store = Some(ctx.window_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<A>>,
        record: Record<K, V>,
    ) -> Result<()> {
        let store = self.store.clone().expect("initialized");
        let stream_time = ctx.stream_time();
        for window in self.windows.windows_for(record.timestamp) {
            if window.end.saturating_add(self.windows.grace_ms) <= stream_time {
                ctx.ctx.state.dropped_late += 1;
                continue;
            }
            let old = store
                .fetch(&record.key, window.start, window.start)?
                .pop()
                .map(|(_, a)| a);
            let new = self.fold.apply(&record.key, &record.value, old.as_ref());
            store.put(&record.key, window.start, Some(&new))?;
            ctx.forward(Record {
                key: Windowed {
                    key: record.key.clone(),
                    window,
                },
                value: Change {
                    new: Some(new),
                    old,
                },
                timestamp: record.timestamp,
                headers: record.headers.clone(),
            })?;
        }
        Ok(())
    }
}

/// Aggregates sliding windows: the records of a key within `difference` of each other. Records
/// are kept (per key and time) and each affected window is folded again from them, so no
/// subtractor is needed.
pub(crate) struct SlidingWindowAggregate<K, V, A> {
    pub(crate) windows: SlidingWindows,
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<WindowStore<K, V>>,
    pub(crate) init: Initializer<A>,
    pub(crate) aggregator: Aggregator<K, V, A>,
}

impl<K: Data, V: Data, A: Data> Processor<K, V, Windowed<K>, Change<A>>
    for SlidingWindowAggregate<K, V, A>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<A>>) -> Result<()> {
        self.store = Some(ctx.window_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<A>>,
        record: Record<K, V>,
    ) -> Result<()> {
        let store = self.store.clone().expect("initialized");
        let d = self.windows.difference_ms;
        let grace = self.windows.grace_ms;
        let ts = record.timestamp;
        let stream_time = ctx.stream_time();
        // Every window holding this record ends by ts + d.
        if ts.saturating_add(d).saturating_add(grace) < stream_time {
            ctx.ctx.state.dropped_late += 1;
            return Ok(());
        }
        let seq = ctx.record_metadata().offset as u32;
        store.put_seq(&record.key, ts, seq, Some(&record.value))?;
        let records = store.fetch(&record.key, ts - 2 * d - 1, ts + 2 * d + 1)?;
        // Windows are named by their end e: [e - d, e]. Those that change: the left windows of
        // records at [ts, ts + d], the right windows (starting just after a record) of records
        // at [ts - d - 1, ts - 1], and this record's own right window if it holds records.
        let mut ends: Vec<i64> = Vec::new();
        for &(t, _) in &records {
            if t >= ts && t <= ts + d {
                ends.push(t);
            }
            if t >= ts - d - 1 && t < ts {
                ends.push(t + 1 + d);
            }
        }
        if records.iter().any(|&(t, _)| t > ts && t <= ts + 1 + d) {
            ends.push(ts + 1 + d);
        }
        ends.sort_unstable();
        ends.dedup();
        for end in ends {
            if end.saturating_add(grace) < stream_time {
                continue;
            }
            let start = end - d;
            let mut agg = (self.init)();
            let mut latest = i64::MIN;
            for (t, v) in records.iter().filter(|(t, _)| *t >= start && *t <= end) {
                agg = (self.aggregator)(&record.key, v.clone(), agg);
                latest = latest.max(*t);
            }
            if latest == i64::MIN {
                continue;
            }
            ctx.forward(Record {
                key: Windowed {
                    key: record.key.clone(),
                    window: Window::new(start, end),
                },
                value: Change {
                    new: Some(agg),
                    old: None,
                },
                timestamp: latest,
                headers: record.headers.clone(),
            })?;
        }
        Ok(())
    }
}

/// Aggregates session windows: a record merges every session of its key within the inactivity
/// gap into one; merged-away sessions are forwarded as deletions.
pub(crate) struct SessionWindowAggregate<K, V, A> {
    pub(crate) windows: SessionWindows,
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<SessionStore<K, A>>,
    pub(crate) init: Initializer<A>,
    pub(crate) aggregator: Aggregator<K, V, A>,
    pub(crate) merger: Merger<K, A>,
}

impl<K: Data, V: Data, A: Data> Processor<K, V, Windowed<K>, Change<A>>
    for SessionWindowAggregate<K, V, A>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<A>>) -> Result<()> {
        self.store = Some(ctx.session_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<A>>,
        record: Record<K, V>,
    ) -> Result<()> {
        let store = self.store.clone().expect("initialized");
        let gap = self.windows.gap_ms;
        let ts = record.timestamp;
        let overlapping = store.find_sessions(&record.key, ts - gap, ts + gap)?;
        let mut window = Window::new(ts, ts);
        for (session, _) in &overlapping {
            window.start = window.start.min(session.window.start);
            window.end = window.end.max(session.window.end);
        }
        // A session closes once stream time passes its end + gap + grace. The record is late
        // only when the session it would make (merged with those it touches) has closed, as in
        // Kafka Streams: an out-of-order record that joins an open session is accepted.
        let close_delay = gap.saturating_add(self.windows.grace_ms);
        if window.end < ctx.stream_time().saturating_sub(close_delay) {
            ctx.ctx.state.dropped_late += 1;
            return Ok(());
        }
        let mut agg = (self.init)();
        for (_, value) in &overlapping {
            agg = (self.merger)(&record.key, agg, value.clone());
        }
        agg = (self.aggregator)(&record.key, record.value.clone(), agg);
        let mut replaced = None;
        for (session, value) in overlapping {
            if session.window == window {
                replaced = Some(value);
                continue;
            }
            store.put(&session, None)?;
            ctx.forward(Record {
                key: session,
                value: Change {
                    new: None,
                    old: Some(value),
                },
                timestamp: ts,
                headers: record.headers.clone(),
            })?;
        }
        let session = Windowed {
            key: record.key.clone(),
            window,
        };
        store.put(&session, Some(&agg))?;
        ctx.forward(Record {
            key: session,
            value: Change {
                new: Some(agg),
                old: replaced,
            },
            timestamp: ts,
            headers: record.headers,
        })
    }
}

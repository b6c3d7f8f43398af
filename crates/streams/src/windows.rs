//! Window specifications (tumbling, hopping, sliding, session, join windows), their grace
//! periods, and the windowed keys windowed operations produce.

use std::sync::Arc;
use std::time::Duration;

use crate::error::SerdeError;
use crate::serde::{Serde, SerdeRef};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A time interval. For time windows `end` is exclusive; for sliding and session windows both
/// ends are inclusive (a session's end is its last record's time), as in Kafka Streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// The first millisecond.
    pub start: i64,
    /// The end (see the type's docs).
    pub end: i64,
}

impl Window {
    /// A window from `start` to `end`.
    pub fn new(start: i64, end: i64) -> Window {
        Window { start, end }
    }
}

/// A key and the window an aggregate belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Windowed<K> {
    /// The grouping key.
    pub key: K,
    /// The window.
    pub window: Window,
}

/// Tumbling (`advance == size`) or hopping (`advance < size`) time windows, aligned to the epoch.
#[derive(Clone, Copy, Debug)]
pub struct TimeWindows {
    pub(crate) size_ms: i64,
    pub(crate) advance_ms: i64,
    pub(crate) grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size`: each record is in exactly one. No grace: a record later than
    /// its window's end (in stream time) is dropped.
    pub fn tumbling(size: Duration) -> TimeWindows {
        let size_ms = ms(size).max(1);
        TimeWindows {
            size_ms,
            advance_ms: size_ms,
            grace_ms: 0,
        }
    }

    /// Hopping windows of `size` starting every `advance` (clamped to `1..=size`).
    pub fn hopping(size: Duration, advance: Duration) -> TimeWindows {
        let size_ms = ms(size).max(1);
        TimeWindows {
            size_ms,
            advance_ms: ms(advance).clamp(1, size_ms),
            grace_ms: 0,
        }
    }

    /// How long after a window's end records for it are still accepted.
    pub fn grace(mut self, grace: Duration) -> TimeWindows {
        self.grace_ms = ms(grace);
        self
    }

    /// The windows containing `timestamp`, earliest first (windows start at 0 or later).
    pub(crate) fn windows_for(&self, timestamp: i64) -> Vec<Window> {
        let mut start = (timestamp - self.size_ms + self.advance_ms).max(0);
        start -= start % self.advance_ms;
        let mut out = Vec::new();
        while start <= timestamp {
            out.push(Window::new(start, start.saturating_add(self.size_ms)));
            start += self.advance_ms;
        }
        out
    }
}

/// Sliding windows: a window `[t - difference, t]` for each record time `t` (and the windows that
/// begin just after each record), aggregating exactly the records within `difference` of each
/// other.
#[derive(Clone, Copy, Debug)]
pub struct SlidingWindows {
    pub(crate) difference_ms: i64,
    pub(crate) grace_ms: i64,
}

impl SlidingWindows {
    /// Windows spanning `difference` (both ends inclusive), no grace.
    pub fn with_time_difference(difference: Duration) -> SlidingWindows {
        SlidingWindows {
            difference_ms: ms(difference).max(1),
            grace_ms: 0,
        }
    }

    /// How long after a window's end records for it are still accepted.
    pub fn grace(mut self, grace: Duration) -> SlidingWindows {
        self.grace_ms = ms(grace);
        self
    }
}

/// Session windows: records of a key closer than the inactivity gap belong to one session.
#[derive(Clone, Copy, Debug)]
pub struct SessionWindows {
    pub(crate) gap_ms: i64,
    pub(crate) grace_ms: i64,
}

impl SessionWindows {
    /// Sessions that close after `gap` without records, no grace.
    pub fn with_inactivity_gap(gap: Duration) -> SessionWindows {
        SessionWindows {
            gap_ms: ms(gap).max(1),
            grace_ms: 0,
        }
    }

    /// How long records that would change a session are still accepted after it could have closed.
    pub fn grace(mut self, grace: Duration) -> SessionWindows {
        self.grace_ms = ms(grace);
        self
    }
}

/// The time bounds of a stream-stream join: a left record at `t` joins right records in
/// `[t - before, t + after]`.
#[derive(Clone, Copy, Debug)]
pub struct JoinWindows {
    pub(crate) before_ms: i64,
    pub(crate) after_ms: i64,
    pub(crate) grace_ms: i64,
}

impl JoinWindows {
    /// Records within `difference` of each other join (before = after = difference), no grace.
    pub fn of(difference: Duration) -> JoinWindows {
        let d = ms(difference);
        JoinWindows {
            before_ms: d,
            after_ms: d,
            grace_ms: 0,
        }
    }

    /// How far back from a left record right records join.
    pub fn before(mut self, before: Duration) -> JoinWindows {
        self.before_ms = ms(before);
        self
    }

    /// How far ahead of a left record right records join.
    pub fn after(mut self, after: Duration) -> JoinWindows {
        self.after_ms = ms(after);
        self
    }

    /// How long late records still join, and how long unmatched records of outer joins wait.
    pub fn grace(mut self, grace: Duration) -> JoinWindows {
        self.grace_ms = ms(grace);
        self
    }
}

/// Serializes a windowed key as the inner key's bytes, then the window's start and end as
/// 8-byte big-endian integers.
pub(crate) struct WindowedSerde<K>(pub(crate) SerdeRef<K>);

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, topic: &str, value: &Windowed<K>) -> Result<Option<Vec<u8>>, SerdeError> {
        let mut out = self
            .0
            .serialize(topic, &value.key)?
            .ok_or(SerdeError::Null)?;
        out.extend_from_slice(&value.window.start.to_be_bytes());
        out.extend_from_slice(&value.window.end.to_be_bytes());
        Ok(Some(out))
    }
    fn deserialize(&self, topic: &str, data: Option<&[u8]>) -> Result<Windowed<K>, SerdeError> {
        let data = data.ok_or(SerdeError::Null)?;
        if data.len() < 16 {
            return Err(SerdeError::invalid(
                "windowed key",
                format!("{} bytes, need at least 16", data.len()),
            ));
        }
        let (key, times) = data.split_at(data.len() - 16);
        let start = i64::from_be_bytes(times[..8].try_into().expect("8 bytes"));
        let end = i64::from_be_bytes(times[8..].try_into().expect("8 bytes"));
        Ok(Windowed {
            key: self.0.deserialize(topic, Some(key))?,
            window: Window::new(start, end),
        })
    }
}

impl crate::serde::Serdes {
    /// Windowed keys: the inner key's bytes, then the window's start and end (8 bytes each).
    pub fn windowed<K: 'static>(inner: SerdeRef<K>) -> SerdeRef<Windowed<K>> {
        Arc::new(WindowedSerde(inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopping_windows_cover_a_timestamp_size_over_advance_times() {
        let w = TimeWindows::hopping(Duration::from_millis(100), Duration::from_millis(25));
        let starts: Vec<i64> = w.windows_for(130).iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![50, 75, 100, 125]);
        let t = TimeWindows::tumbling(Duration::from_millis(100));
        assert_eq!(t.windows_for(130), vec![Window::new(100, 200)]);
        assert_eq!(t.windows_for(5), vec![Window::new(0, 100)]);
    }
}

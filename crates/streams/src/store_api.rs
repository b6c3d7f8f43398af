//! Typed state store handles: what processors (and interactive queries) use, serializing keys and
//! values with the store's serdes over the byte-level stores of [`crate::state`].

use std::ops::Bound;
use std::sync::Arc;

use crate::error::{Result, StoreError, StreamsError};
use crate::processor::StoreRef;
use crate::serde::{to_bytes, SerdeRef};
use crate::state::window;
use crate::windows::{Window, Windowed};

/// A store's serdes, and the name passed to them as the "topic" (its changelog's name).
pub(crate) struct StoreSerdes<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
    pub(crate) topic: Arc<str>,
}

impl<K, V> Clone for StoreSerdes<K, V> {
    fn clone(&self) -> Self {
        StoreSerdes {
            key: self.key.clone(),
            value: self.value.clone(),
            topic: self.topic.clone(),
        }
    }
}

impl<K: 'static, V: 'static> StoreSerdes<K, V> {
    pub(crate) fn key_bytes(&self, key: &K) -> Result<Vec<u8>> {
        to_bytes(&*self.key, &self.topic, key).map_err(|source| StreamsError::Serialization {
            topic: self.topic.to_string(),
            part: "key",
            source,
        })
    }
    pub(crate) fn value_bytes(&self, value: &V) -> Result<Vec<u8>> {
        to_bytes(&*self.value, &self.topic, value).map_err(|source| StreamsError::Serialization {
            topic: self.topic.to_string(),
            part: "value",
            source,
        })
    }
    pub(crate) fn key_of(&self, bytes: &[u8]) -> Result<K> {
        self.key
            .deserialize(&self.topic, Some(bytes))
            .map_err(|e| self.corrupt(e))
    }
    pub(crate) fn value_of(&self, bytes: &[u8]) -> Result<V> {
        self.value
            .deserialize(&self.topic, Some(bytes))
            .map_err(|e| self.corrupt(e))
    }
    fn corrupt(&self, e: crate::error::SerdeError) -> StreamsError {
        StoreError::Corrupt {
            store: self.topic.to_string(),
            detail: e.to_string(),
        }
        .into()
    }
}

/// A typed key-value store.
pub struct KeyValueStore<K, V> {
    store: StoreRef,
    serdes: StoreSerdes<K, V>,
}

impl<K, V> Clone for KeyValueStore<K, V> {
    fn clone(&self) -> Self {
        KeyValueStore {
            store: self.store.clone(),
            serdes: self.serdes.clone(),
        }
    }
}

impl<K: 'static, V: 'static> KeyValueStore<K, V> {
    pub(crate) fn new(store: StoreRef, serdes: StoreSerdes<K, V>) -> Self {
        KeyValueStore { store, serdes }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let key = self.serdes.key_bytes(key)?;
        let bytes = self.store.lock().get(&key)?;
        bytes.map(|b| self.serdes.value_of(&b)).transpose()
    }

    /// Sets `key` to `value` (logged to the changelog).
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        let key = self.serdes.key_bytes(key)?;
        let value = self.serdes.value_bytes(value)?;
        Ok(self.store.lock().put(key, value)?)
    }

    /// Deletes `key` (a tombstone in the changelog).
    pub fn delete(&self, key: &K) -> Result<()> {
        let key = self.serdes.key_bytes(key)?;
        Ok(self.store.lock().delete(&key)?)
    }

    /// Every entry, in the order of the serialized keys.
    pub fn all(&self) -> Result<Vec<(K, V)>> {
        self.range_bytes(Bound::Unbounded, Bound::Unbounded)
    }

    /// Entries with serialized keys from `from` to `to` inclusive.
    pub fn range(&self, from: &K, to: &K) -> Result<Vec<(K, V)>> {
        let (from, to) = (self.serdes.key_bytes(from)?, self.serdes.key_bytes(to)?);
        self.range_bytes(Bound::Included(&from), Bound::Included(&to))
    }

    fn range_bytes(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Vec<(K, V)>> {
        let entries = self.store.lock().range(from, to)?;
        entries
            .into_iter()
            .map(|(k, v)| Ok((self.serdes.key_of(&k)?, self.serdes.value_of(&v)?)))
            .collect()
    }

    /// How many entries the store holds.
    pub fn approximate_len(&self) -> u64 {
        self.store.lock().approximate_len()
    }
}

/// A typed window store: values per key and window start.
pub struct WindowStore<K, V> {
    store: StoreRef,
    serdes: StoreSerdes<K, V>,
}

impl<K, V> Clone for WindowStore<K, V> {
    fn clone(&self) -> Self {
        WindowStore {
            store: self.store.clone(),
            serdes: self.serdes.clone(),
        }
    }
}

impl<K: 'static, V: 'static> WindowStore<K, V> {
    pub(crate) fn new(store: StoreRef, serdes: StoreSerdes<K, V>) -> Self {
        WindowStore { store, serdes }
    }

    /// Sets (or with `None` deletes) the value of `key` in the window starting at `start`.
    pub fn put(&self, key: &K, start: i64, value: Option<&V>) -> Result<()> {
        self.put_seq(key, start, 0, value)
    }

    /// [`put`](Self::put) with a sequence number, to keep several values per key and start.
    pub fn put_seq(&self, key: &K, start: i64, seq: u32, value: Option<&V>) -> Result<()> {
        let key = self.serdes.key_bytes(key)?;
        let value = value.map(|v| self.serdes.value_bytes(v)).transpose()?;
        Ok(window::window_put(
            &mut self.store.lock(),
            &key,
            start,
            seq,
            value,
        )?)
    }

    /// The values of `key` in windows starting from `from` to `to` inclusive: (start, value).
    pub fn fetch(&self, key: &K, from: i64, to: i64) -> Result<Vec<(i64, V)>> {
        let key = self.serdes.key_bytes(key)?;
        let entries = window::window_fetch(&self.store.lock(), &key, from, to)?;
        entries
            .into_iter()
            .map(|(start, _, v)| Ok((start, self.serdes.value_of(&v)?)))
            .collect()
    }

    /// Like [`fetch`](Self::fetch) with each value's sequence number.
    pub(crate) fn fetch_seq(&self, key: &K, from: i64, to: i64) -> Result<Vec<(i64, u32, V)>> {
        let key = self.serdes.key_bytes(key)?;
        let entries = window::window_fetch(&self.store.lock(), &key, from, to)?;
        entries
            .into_iter()
            .map(|(start, seq, v)| Ok((start, seq, self.serdes.value_of(&v)?)))
            .collect()
    }

    /// Every key's windows starting from `from` to `to`; `size_ms` gives the windows' ends.
    pub fn fetch_all(&self, from: i64, to: i64, size_ms: i64) -> Result<Vec<(Windowed<K>, V)>> {
        let entries = window::window_fetch_all(&self.store.lock(), from, to)?;
        entries
            .into_iter()
            .map(|(k, start, v)| {
                Ok((
                    Windowed {
                        key: self.serdes.key_of(&k)?,
                        window: Window::new(start, start.saturating_add(size_ms)),
                    },
                    self.serdes.value_of(&v)?,
                ))
            })
            .collect()
    }
}

/// A typed session store: values per key and session window.
pub struct SessionStore<K, V> {
    store: StoreRef,
    serdes: StoreSerdes<K, V>,
}

impl<K, V> Clone for SessionStore<K, V> {
    fn clone(&self) -> Self {
        SessionStore {
            store: self.store.clone(),
            serdes: self.serdes.clone(),
        }
    }
}

impl<K: Clone + 'static, V: 'static> SessionStore<K, V> {
    pub(crate) fn new(store: StoreRef, serdes: StoreSerdes<K, V>) -> Self {
        SessionStore { store, serdes }
    }

    /// Sets (or with `None` deletes) the value of a session.
    pub fn put(&self, session: &Windowed<K>, value: Option<&V>) -> Result<()> {
        let key = self.serdes.key_bytes(&session.key)?;
        let value = value.map(|v| self.serdes.value_bytes(v)).transpose()?;
        Ok(window::session_put(
            &mut self.store.lock(),
            &key,
            session.window.start,
            session.window.end,
            value,
        )?)
    }

    /// The sessions of `key` ending at or after `earliest_end` and starting at or before
    /// `latest_start`.
    pub fn find_sessions(
        &self,
        key: &K,
        earliest_end: i64,
        latest_start: i64,
    ) -> Result<Vec<(Windowed<K>, V)>> {
        let bytes = self.serdes.key_bytes(key)?;
        let entries = window::session_find(&self.store.lock(), &bytes, earliest_end, latest_start)?;
        entries
            .into_iter()
            .map(|(start, end, v)| {
                Ok((
                    Windowed {
                        key: key.clone(),
                        window: Window::new(start, end),
                    },
                    self.serdes.value_of(&v)?,
                ))
            })
            .collect()
    }

    /// Every live session.
    pub fn fetch_all(&self) -> Result<Vec<(Windowed<K>, V)>> {
        let entries = window::session_fetch_all(&self.store.lock())?;
        entries
            .into_iter()
            .map(|(k, start, end, v)| {
                Ok((
                    Windowed {
                        key: self.serdes.key_of(&k)?,
                        window: Window::new(start, end),
                    },
                    self.serdes.value_of(&v)?,
                ))
            })
            .collect()
    }
}

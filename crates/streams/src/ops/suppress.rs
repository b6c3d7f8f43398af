//! `suppress(until_window_closes)`: holds a windowed table's updates in a (changelogged) buffer
//! store and forwards only each window's final value, once stream time passes the window's close
//! (its end plus the grace period, and for sessions the inactivity gap too).
//!
//! Buffer entry key: window end | window start (sign-flipped big-endian, so a range scan from
//! the start finds the windows that closed) | the windowed key's bytes. Value: the update's timestamp,
//! then the value's bytes.

use std::ops::Bound;
use std::sync::Arc;

use crate::error::{Result, StoreError};
use crate::ops::Change;
use crate::processor::{Data, Processor, ProcessorContext, StoreRef};
use crate::record::Record;
use crate::serde::{to_bytes, SerdeRef};
use crate::windows::Windowed;

fn flip(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1u64 << 63)).to_be_bytes()
}

pub(crate) struct SuppressFinal<K, V> {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<StoreRef>,
    /// A window is final once stream time reaches its end plus this.
    pub(crate) close_delay_ms: i64,
    pub(crate) key: SerdeRef<Windowed<K>>,
    pub(crate) value: SerdeRef<V>,
}

impl<K: Data, V: Data> SuppressFinal<K, V> {
    fn corrupt(&self, detail: impl ToString) -> StoreError {
        StoreError::Corrupt {
            store: self.store_name.to_string(),
            detail: detail.to_string(),
        }
    }
}

impl<K: Data, V: Data> Processor<Windowed<K>, Change<V>, Windowed<K>, Change<V>>
    for SuppressFinal<K, V>
{
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<V>>) -> Result<()> {
        self.store = Some(ctx.ctx.store(&self.store_name)?.store.clone());
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, Windowed<K>, Change<V>>,
        record: Record<Windowed<K>, Change<V>>,
    ) -> Result<()> {
        let store = self.store.clone().expect("initialized");
        let topic = &*self.store_name;
        let window = record.key.window;
        let mut entry = Vec::new();
        entry.extend_from_slice(&flip(window.end));
        entry.extend_from_slice(&flip(window.start));
        entry.extend_from_slice(
            &to_bytes(&*self.key, topic, &record.key).map_err(|e| self.corrupt(e))?,
        );
        match &record.value.new {
            Some(v) => {
                let mut value = record.timestamp.to_be_bytes().to_vec();
                value.extend_from_slice(
                    &to_bytes(&*self.value, topic, v).map_err(|e| self.corrupt(e))?,
                );
                store.lock().put(entry, value)?;
            }
            None => store.lock().delete(&entry)?,
        }
        // Forward every window that is now closed, oldest first.
        let closed_until = ctx.stream_time().saturating_sub(self.close_delay_ms);
        let mut bound = flip(closed_until).to_vec();
        bound.extend_from_slice(&[0xff; 8]);
        let closed = store
            .lock()
            .range(Bound::Unbounded, Bound::Excluded(&bound))?;
        for (entry, value) in closed {
            if entry.len() < 16 || value.len() < 8 {
                return Err(self.corrupt("short suppression buffer entry").into());
            }
            let key = self
                .key
                .deserialize(topic, Some(&entry[16..]))
                .map_err(|e| self.corrupt(e))?;
            let timestamp = i64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
            let v = self
                .value
                .deserialize(topic, Some(&value[8..]))
                .map_err(|e| self.corrupt(e))?;
            store.lock().delete(&entry)?;
            ctx.forward(Record::new(
                key,
                Change {
                    new: Some(v),
                    old: None,
                },
                timestamp,
            ))?;
        }
        Ok(())
    }
}

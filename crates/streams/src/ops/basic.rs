//! Sources (bytes to typed records), sinks (typed records to bytes for a topic), table sources
//! that materialize a topic, and the updater of global stores.

use std::any::Any;
use std::sync::Arc;

use crate::error::{Result, StreamsError};
use crate::ops::Change;
use crate::processor::{Ctx, Data, Node, Processor, ProcessorContext, PunctuatorId};
use crate::record::{OutRecord, RawRecord, Record};
use crate::serde::SerdeRef;
use crate::store_api::KeyValueStore;
use crate::topology::TopicRef;

/// Deserializes raw records of a topic into typed ones.
pub(crate) struct SourceNode<K, V> {
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

pub(crate) fn deserialize<K: 'static, V: 'static>(
    key: &SerdeRef<K>,
    value: &SerdeRef<V>,
    raw: RawRecord,
) -> Result<Record<K, V>> {
    let error = |part, source| StreamsError::Deserialization {
        topic: raw.topic.to_string(),
        partition: raw.partition,
        offset: raw.offset,
        part,
        source,
    };
    let k = key
        .deserialize(&raw.topic, raw.key.as_deref())
        .map_err(|e| error("key", e))?;
    let v = value
        .deserialize(&raw.topic, raw.value.as_deref())
        .map_err(|e| error("value", e))?;
    Ok(Record {
        key: k,
        value: v,
        timestamp: raw.timestamp,
        headers: raw.headers,
    })
}

impl<K: Data, V: Data> Node for SourceNode<K, V> {
    fn init(&mut self, _: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
    fn process(&mut self, ctx: &mut Ctx<'_>, input: &mut dyn Any) -> Result<()> {
        let raw = input
            .downcast_mut::<Option<RawRecord>>()
            .and_then(Option::take)
            .expect("sources get raw records");
        let record = deserialize(&self.key, &self.value, raw)?;
        ctx.forward(record)
    }
    fn punctuate(&mut self, _: &mut Ctx<'_>, _: PunctuatorId, _: i64) -> Result<()> {
        Ok(())
    }
    fn close(&mut self) {}
}

/// Serializes records for a topic.
pub(crate) struct SinkProcessor<K, V> {
    pub(crate) topic: TopicRef,
    pub(crate) resolved: Option<Arc<str>>,
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

impl<K: Data, V: Data> Processor<K, V, (), ()> for SinkProcessor<K, V> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, (), ()>) -> Result<()> {
        self.resolved = Some(Arc::from(self.topic.resolve(ctx.application_id())));
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, (), ()>,
        record: Record<K, V>,
    ) -> Result<()> {
        let topic = self.resolved.clone().expect("initialized");
        let error = |part, source| StreamsError::Serialization {
            topic: topic.to_string(),
            part,
            source,
        };
        let key = self
            .key
            .serialize(&topic, &record.key)
            .map_err(|e| error("key", e))?;
        let value = self
            .value
            .serialize(&topic, &record.value)
            .map_err(|e| error("value", e))?;
        ctx.ctx.produce(OutRecord {
            topic: topic.clone(),
            partition: None,
            key,
            value,
            timestamp: record.timestamp,
            headers: record.headers,
            changelog_of: None,
        });
        Ok(())
    }
}

/// Keeps a table's current values in its store and forwards each update with the value it
/// replaced. Input values are `None` for tombstones.
pub(crate) struct TableMaterializer<K, V> {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<KeyValueStore<K, V>>,
}

impl<K: Data, V: Data> Processor<K, Option<V>, K, Change<V>> for TableMaterializer<K, V> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, Change<V>>) -> Result<()> {
        self.store = Some(ctx.key_value_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, Change<V>>,
        record: Record<K, Option<V>>,
    ) -> Result<()> {
        let store = self.store.as_ref().expect("initialized");
        let old = store.get(&record.key)?;
        match &record.value {
            Some(v) => store.put(&record.key, v)?,
            None if old.is_none() => return Ok(()),
            None => store.delete(&record.key)?,
        }
        let new = record.value.clone();
        ctx.forward(record.with_value(Change { new, old }))
    }
}

//! Aggregations of grouped streams and tables into a key-value store: `aggregate`, `reduce` and
//! `count` are all this one processor with different functions.

use std::sync::Arc;

use crate::error::Result;
use crate::ops::{Change, FirstValue, Selector};
use crate::processor::{Data, Processor, ProcessorContext};
use crate::record::Record;
use crate::store_api::KeyValueStore;

pub(crate) type Initializer<A> = Arc<dyn Fn() -> A + Send + Sync>;
pub(crate) type Aggregator<K, V, A> = Arc<dyn Fn(&K, V, A) -> A + Send + Sync>;

/// Folds each record into its key's aggregate and forwards the new and old aggregate.
pub(crate) struct StreamAggregate<K, V, A> {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<KeyValueStore<K, A>>,
    pub(crate) fold: Fold<K, V, A>,
}

/// How an aggregate grows: `aggregator` folds a value into it, starting from `init()` or, for
/// `reduce` (no initializer), from `first(value)`.
pub(crate) struct Fold<K, V, A> {
    pub(crate) init: Option<Initializer<A>>,
    pub(crate) first: Option<FirstValue<V, A>>,
    pub(crate) aggregator: Aggregator<K, V, A>,
}

impl<K, V, A> Clone for Fold<K, V, A> {
    fn clone(&self) -> Self {
        Fold {
            init: self.init.clone(),
            first: self.first.clone(),
            aggregator: self.aggregator.clone(),
        }
    }
}

impl<K: 'static, V: 'static, A: 'static> Fold<K, V, A> {
    /// Starts from `init()`.
    pub(crate) fn with_init(
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
    ) -> Self {
        Fold {
            init: Some(Arc::new(init)),
            first: None,
            aggregator: Arc::new(aggregator),
        }
    }
}

impl<K: 'static, V: 'static> Fold<K, V, i64> {
    /// Counts values.
    pub(crate) fn counting() -> Self {
        Fold::with_init(|| 0, |_, _, count| count + 1)
    }
}

impl<K: 'static, V: 'static> Fold<K, V, V> {
    /// Starts from the first value and combines later ones with `reducer(aggregate, value)`.
    pub(crate) fn reducing(reducer: impl Fn(V, V) -> V + Send + Sync + 'static) -> Self {
        Fold {
            init: None,
            first: Some(Arc::new(|v| v)),
            aggregator: Arc::new(move |_, v, agg| reducer(agg, v)),
        }
    }
}

impl<K, V: Clone, A: Clone> Fold<K, V, A> {
    /// The aggregate after `value` joins `old` (`None`: the first value of its key or window).
    pub(crate) fn apply(&self, key: &K, value: &V, old: Option<&A>) -> A {
        match (old, &self.init, &self.first) {
            (Some(agg), _, _) => (self.aggregator)(key, value.clone(), agg.clone()),
            (None, Some(init), _) => (self.aggregator)(key, value.clone(), init()),
            (None, None, Some(first)) => first(value.clone()),
            (None, None, None) => {
                unreachable!("an aggregate has an initializer or a first-value function")
            }
        }
    }
}

impl<K: Data, V: Data, A: Data> Processor<K, V, K, Change<A>> for StreamAggregate<K, V, A> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, Change<A>>) -> Result<()> {
        self.store = Some(ctx.key_value_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, Change<A>>,
        record: Record<K, V>,
    ) -> Result<()> {
        let store = self.store.as_ref().expect("initialized");
        let old = store.get(&record.key)?;
        let new = self.fold.apply(&record.key, &record.value, old.as_ref());
        store.put(&record.key, &new)?;
        ctx.forward(record.with_value(Change {
            new: Some(new),
            old,
        }))
    }
}

/// Aggregates a re-grouped table: each update arrives as a subtraction of the old value
/// (`false`) and an addition of the new one (`true`).
pub(crate) struct TableAggregate<K, V, A> {
    pub(crate) store_name: Arc<str>,
    pub(crate) store: Option<KeyValueStore<K, A>>,
    pub(crate) init: Initializer<A>,
    pub(crate) adder: Aggregator<K, V, A>,
    pub(crate) subtractor: Aggregator<K, V, A>,
}

impl<K: Data, V: Data, A: Data> Processor<K, (bool, V), K, Change<A>> for TableAggregate<K, V, A> {
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, K, Change<A>>) -> Result<()> {
        self.store = Some(ctx.key_value_store(&self.store_name)?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K, Change<A>>,
        record: Record<K, (bool, V)>,
    ) -> Result<()> {
        let store = self.store.as_ref().expect("initialized");
        let old = store.get(&record.key)?;
        let current = old.clone().unwrap_or_else(|| (self.init)());
        let (add, value) = record.value.clone();
        let new = if add {
            (self.adder)(&record.key, value, current)
        } else {
            (self.subtractor)(&record.key, value, current)
        };
        store.put(&record.key, &new)?;
        ctx.forward(record.with_value(Change {
            new: Some(new),
            old,
        }))
    }
}

/// Re-keys a table's updates for `KTable::group_by`: the old value is sent as a subtraction from
/// its group, the new one as an addition to its (maybe different) group.
pub(crate) struct TableRegroup<K, V, K2, V2> {
    pub(crate) selector: Selector<K, V, K2, V2>,
}

impl<K: Data, V: Data, K2: Data, V2: Data> Processor<K, Change<V>, K2, (bool, V2)>
    for TableRegroup<K, V, K2, V2>
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, K2, (bool, V2)>,
        record: Record<K, Change<V>>,
    ) -> Result<()> {
        if let Some(old) = &record.value.old {
            let (k2, v2) = (self.selector)(&record.key, old);
            ctx.forward(Record {
                key: k2,
                value: (false, v2),
                timestamp: record.timestamp,
                headers: record.headers.clone(),
            })?;
        }
        if let Some(new) = &record.value.new {
            let (k2, v2) = (self.selector)(&record.key, new);
            ctx.forward(Record {
                key: k2,
                value: (true, v2),
                timestamp: record.timestamp,
                headers: record.headers.clone(),
            })?;
        }
        Ok(())
    }
}

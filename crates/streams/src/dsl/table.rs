//! `KTable` (a changelog stream: the latest value per key) and `GlobalKTable` (a table every
//! instance holds whole), with their operators.

use std::sync::Arc;

use super::{fn_factory, processor_factory, require, KGroupedTable, KStream, Materialized, Shared};
use crate::ops::aggregate::TableRegroup;
use crate::ops::join::{JoinKind, Joiner, TableJoinCore, TableJoinLeft, TableJoinRight};
use crate::ops::suppress::SuppressFinal;
use crate::ops::{Change, Selector};
use crate::processor::{Data, ProcessorContext};
use crate::record::Record;
use crate::serde::{Serde, SerdeRef, Serdes};
use crate::state::{StoreBackend, StoreKind, StoreSpec};
use crate::topology::{NodeFactory, TopicRef};
use crate::windows::Windowed;

/// A table: for each key, its latest value. Operators see each update with the value it replaced.
pub struct KTable<K, V> {
    pub(crate) b: Shared,
    pub(crate) node: usize,
    pub(crate) key: Option<SerdeRef<K>>,
    pub(crate) value: Option<SerdeRef<V>>,
    /// The store holding the current values, if the table is materialized.
    pub(crate) store: Option<Arc<str>>,
    pub(crate) sources: Vec<TopicRef>,
    /// For windowed tables: a window is final once stream time reaches its end plus this.
    pub(crate) close_delay_ms: Option<i64>,
}

impl<K, V> Clone for KTable<K, V> {
    fn clone(&self) -> Self {
        KTable {
            b: self.b.clone(),
            node: self.node,
            key: self.key.clone(),
            value: self.value.clone(),
            store: self.store.clone(),
            sources: self.sources.clone(),
            close_delay_ms: self.close_delay_ms,
        }
    }
}

impl<K: Data, V: Data> KTable<K, V> {
    pub(crate) fn new(
        b: Shared,
        node: usize,
        key: Option<SerdeRef<K>>,
        value: Option<SerdeRef<V>>,
        store: Option<Arc<str>>,
        sources: Vec<TopicRef>,
        close_delay_ms: Option<i64>,
    ) -> Self {
        KTable {
            b,
            node,
            key,
            value,
            store,
            sources,
            close_delay_ms,
        }
    }

    fn child(&self, prefix: &str, factory: NodeFactory, stores: Vec<Arc<str>>) -> usize {
        self.b
            .borrow_mut()
            .add_processor(prefix, vec![self.node], factory, stores)
    }

    /// The name of the store holding this table's values, for interactive queries (`None` when
    /// the table is not materialized: see [`materialize`](Self::materialize)).
    pub fn store_name(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// Sets the serdes later operators use.
    pub fn with_serdes(mut self, key: SerdeRef<K>, value: SerdeRef<V>) -> Self {
        self.key = Some(key);
        self.value = Some(value);
        self
    }

    /// A table of the entries for which `predicate` holds (others read as deleted).
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KTable<K, V> {
        let predicate = Arc::new(predicate);
        let node = self.child(
            "KTABLE-FILTER",
            fn_factory(move || {
                let predicate = predicate.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, Change<V>>, r: Record<K, Change<V>>| {
                    let keep = |v: Option<V>| v.filter(|v| predicate(&r.key, v));
                    let change = Change {
                        new: keep(r.value.new.clone()),
                        old: keep(r.value.old.clone()),
                    };
                    if change.new.is_none() && change.old.is_none() {
                        return Ok(());
                    }
                    ctx.forward(r.with_value(change))
                }
            }),
            Vec::new(),
        );
        KTable::new(
            self.b.clone(),
            node,
            self.key.clone(),
            self.value.clone(),
            None,
            self.sources.clone(),
            self.close_delay_ms,
        )
    }

    /// A table of transformed values.
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(&K, &V) -> V2 + Send + Sync + 'static,
    ) -> KTable<K, V2> {
        let f = Arc::new(f);
        let node = self.child(
            "KTABLE-MAPVALUES",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, Change<V2>>, r: Record<K, Change<V>>| {
                    let change = Change {
                        new: r.value.new.as_ref().map(|v| f(&r.key, v)),
                        old: r.value.old.as_ref().map(|v| f(&r.key, v)),
                    };
                    ctx.forward(r.with_value(change))
                }
            }),
            Vec::new(),
        );
        KTable::new(
            self.b.clone(),
            node,
            self.key.clone(),
            None,
            None,
            self.sources.clone(),
            self.close_delay_ms,
        )
    }

    /// The stream of updates: each new value (deletions are left out; see
    /// [`to_stream_with_tombstones`](Self::to_stream_with_tombstones)).
    pub fn to_stream(&self) -> KStream<K, V> {
        let node = self.child(
            "KTABLE-TOSTREAM",
            fn_factory(|| {
                |ctx: &mut ProcessorContext<'_, '_, K, V>, r: Record<K, Change<V>>| match r
                    .value
                    .new
                    .clone()
                {
                    Some(v) => ctx.forward(r.with_value(v)),
                    None => Ok(()),
                }
            }),
            Vec::new(),
        );
        KStream::new(
            self.b.clone(),
            node,
            self.key.clone(),
            self.value.clone(),
            false,
            self.sources.clone(),
        )
    }

    /// The stream of updates with deletions as `None` values (written as Kafka tombstones).
    pub fn to_stream_with_tombstones(&self) -> KStream<K, Option<V>> {
        let node = self.child(
            "KTABLE-TOSTREAM",
            fn_factory(|| {
                |ctx: &mut ProcessorContext<'_, '_, K, Option<V>>, r: Record<K, Change<V>>| {
                    let v = r.value.new.clone();
                    ctx.forward(r.with_value(v))
                }
            }),
            Vec::new(),
        );
        let value = self.value.clone().map(Serdes::optional);
        KStream::new(
            self.b.clone(),
            node,
            self.key.clone(),
            value,
            false,
            self.sources.clone(),
        )
    }

    /// The same table kept in a (queryable, changelogged) store.
    pub fn materialize(&self, materialized: Materialized<K, V>) -> KTable<K, V> {
        let (store, key, value) = materialized.declare(
            &self.b,
            "KTABLE-STATE-STORE",
            StoreKind::KeyValue,
            (&self.key, &self.value),
            "materialize",
        );
        // The current values are those of the update stream (tombstones delete).
        let node = self
            .to_stream_with_tombstones()
            .materialize_into(store.clone());
        KTable::new(
            self.b.clone(),
            node,
            Some(key),
            Some(value),
            Some(store),
            self.sources.clone(),
            self.close_delay_ms,
        )
    }

    /// The table's store, materializing it (beside the table's other children) if needed.
    pub(crate) fn materialized_store(&self) -> Arc<str> {
        if let Some(store) = &self.store {
            return store.clone();
        }
        self.materialize(Materialized::new())
            .store
            .expect("materialized")
    }

    fn table_join<V2: Data, VO: Data>(
        &self,
        other: &KTable<K, V2>,
        kind: JoinKind,
        joiner: Joiner<K, V, V2, VO>,
    ) -> KTable<K, VO> {
        let left_store = self.materialized_store();
        let right_store = other.materialized_store();
        let core = TableJoinCore {
            kind,
            left_store_name: left_store.clone(),
            right_store_name: right_store.clone(),
            joiner,
            left_store: None,
            right_store: None,
        };
        let stores = vec![left_store, right_store];
        let left_core = core.clone();
        let left_node = self.child(
            "KTABLE-JOINTHIS",
            processor_factory::<_, K, Change<V>, K, Change<VO>>(move || {
                TableJoinLeft(left_core.clone())
            }),
            stores.clone(),
        );
        let right_node = other.child(
            "KTABLE-JOINOTHER",
            processor_factory::<_, K, Change<V2>, K, Change<VO>>(move || {
                TableJoinRight(core.clone())
            }),
            stores,
        );
        let mut sources = self.sources.clone();
        sources.extend(other.sources.iter().cloned());
        self.b.borrow_mut().copartition(
            sources.clone(),
            "a table-table join reads partition p of both tables in one task".to_string(),
        );
        let factory = fn_factory(|| {
            |ctx: &mut ProcessorContext<'_, '_, K, Change<VO>>, r: Record<K, Change<VO>>| {
                ctx.forward(r)
            }
        });
        let node = self.b.borrow_mut().add_processor(
            "KTABLE-MERGE",
            vec![left_node, right_node],
            factory,
            Vec::new(),
        );
        KTable::new(
            self.b.clone(),
            node,
            self.key.clone(),
            None,
            None,
            sources,
            None,
        )
    }

    /// Joins two tables on their keys: a value while both have one.
    pub fn join<V2: Data, VO: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, &V2) -> VO + Send + Sync + 'static,
    ) -> KTable<K, VO> {
        self.table_join(
            other,
            JoinKind::Inner,
            Arc::new(move |_, l: Option<&V>, r: Option<&V2>| {
                joiner(l.expect("both sides"), r.expect("both sides"))
            }),
        )
    }

    /// Joins two tables on their keys: a value while this table has one.
    pub fn left_join<V2: Data, VO: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VO + Send + Sync + 'static,
    ) -> KTable<K, VO> {
        self.table_join(
            other,
            JoinKind::Left,
            Arc::new(move |_, l: Option<&V>, r| joiner(l.expect("left side"), r)),
        )
    }

    /// Joins two tables on their keys: a value while either has one.
    pub fn outer_join<V2: Data, VO: Data>(
        &self,
        other: &KTable<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VO + Send + Sync + 'static,
    ) -> KTable<K, VO> {
        self.table_join(
            other,
            JoinKind::Outer,
            Arc::new(move |_, l, r| joiner(l, r)),
        )
    }

    /// Re-groups the table by a new key for aggregation (through a repartition topic): an
    /// update subtracts the old value from its old group and adds the new one to its new group.
    pub fn group_by<K2: Data, V2: Data>(
        &self,
        selector: impl Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
        key: SerdeRef<K2>,
        value: SerdeRef<V2>,
    ) -> KGroupedTable<K2, V2> {
        let selector: Selector<K, V, K2, V2> = Arc::new(selector);
        let node = self.child(
            "KTABLE-SELECT",
            processor_factory::<_, K, Change<V>, K2, (bool, V2)>(move || TableRegroup {
                selector: selector.clone(),
            }),
            Vec::new(),
        );
        let flagged: SerdeRef<(bool, V2)> = Arc::new(FlaggedSerde(value.clone()));
        let regrouped = KStream::new(
            self.b.clone(),
            node,
            Some(key.clone()),
            Some(flagged),
            false,
            self.sources.clone(),
        );
        let name = self.b.borrow_mut().name("KTABLE-AGGREGATE");
        KGroupedTable {
            stream: regrouped.repartition(Some(&name), None),
            key,
        }
    }
}

impl<K: Data, V: Data> KTable<Windowed<K>, V> {
    /// Emits only each window's final result, once the window closed (stream time past its end
    /// plus grace); earlier updates wait in a changelogged buffer store.
    pub fn suppress_until_window_closes(&self) -> KTable<Windowed<K>, V> {
        let key = require(&self.b, &self.key, "windowed key", "suppress");
        let value = require(&self.b, &self.value, "value", "suppress");
        let Some(close_delay_ms) = self.close_delay_ms else {
            self.b.borrow_mut().error(
                "suppress_until_window_closes needs a windowed aggregation's table".to_string(),
            );
            return self.clone();
        };
        let store: Arc<str> = {
            let mut b = self.b.borrow_mut();
            let name: Arc<str> = Arc::from(b.name("KTABLE-SUPPRESS-STATE-STORE"));
            b.add_store(
                StoreSpec {
                    name: name.clone(),
                    kind: StoreKind::KeyValue,
                    backend: StoreBackend::InMemory,
                    logged: true,
                },
                Serdes::bytes(),
                Serdes::bytes(),
                None,
            );
            name
        };
        let store_name = store.clone();
        let (k, v) = (key.clone(), value.clone());
        let node = self.child(
            "KTABLE-SUPPRESS",
            processor_factory::<_, Windowed<K>, Change<V>, Windowed<K>, Change<V>>(move || {
                SuppressFinal {
                    store_name: store_name.clone(),
                    store: None,
                    close_delay_ms,
                    key: k.clone(),
                    value: v.clone(),
                }
            }),
            vec![store],
        );
        KTable::new(
            self.b.clone(),
            node,
            Some(key),
            Some(value),
            None,
            self.sources.clone(),
            Some(close_delay_ms),
        )
    }
}

/// A table replicated whole on every instance: joined by any key, from any task.
pub struct GlobalKTable<K, V> {
    pub(crate) store: Arc<str>,
    pub(crate) key: SerdeRef<K>,
    pub(crate) value: SerdeRef<V>,
}

impl<K, V> GlobalKTable<K, V> {
    /// The global store's name, for interactive queries.
    pub fn store_name(&self) -> &str {
        &self.store
    }
    /// The key and value serdes.
    pub fn serdes(&self) -> (SerdeRef<K>, SerdeRef<V>) {
        (self.key.clone(), self.value.clone())
    }
}

/// A value with an add (`true`) or subtract (`false`) flag, through a repartition topic: one
/// flag byte, then the value's bytes.
struct FlaggedSerde<V>(SerdeRef<V>);

impl<V: 'static> Serde<(bool, V)> for FlaggedSerde<V> {
    fn serialize(
        &self,
        topic: &str,
        value: &(bool, V),
    ) -> Result<Option<Vec<u8>>, crate::error::SerdeError> {
        let inner = crate::serde::to_bytes(&*self.0, topic, &value.1)?;
        let mut out = Vec::with_capacity(inner.len() + 1);
        out.push(value.0 as u8);
        out.extend_from_slice(&inner);
        Ok(Some(out))
    }
    fn deserialize(
        &self,
        topic: &str,
        data: Option<&[u8]>,
    ) -> Result<(bool, V), crate::error::SerdeError> {
        let data = data.ok_or(crate::error::SerdeError::Null)?;
        match data.split_first() {
            Some((&flag @ (0 | 1), rest)) => {
                Ok((flag == 1, self.0.deserialize(topic, Some(rest))?))
            }
            _ => Err(crate::error::SerdeError::invalid(
                "table regroup",
                "missing or bad add/subtract flag",
            )),
        }
    }
}

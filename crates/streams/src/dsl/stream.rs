//! `KStream`: a stream of records, and its stateless operators, repartitioning, joins, the
//! processor API hook and sinks.

use std::sync::Arc;

use super::{
    fn_factory, processor_factory, require, GlobalKTable, KGroupedStream, KTable, Materialized,
    Shared,
};
use crate::ops::basic::{SinkProcessor, SourceNode, TableMaterializer};
use crate::ops::join::{
    GlobalTableJoin, JoinKind, StreamJoinCore, StreamJoinLeft, StreamJoinRight, StreamTableJoin,
};
use crate::ops::{Change, KeyMapper, LookupJoiner};
use crate::processor::{Data, Processor, ProcessorContext};
use crate::record::Record;
use crate::serde::SerdeRef;
use crate::state::{StoreBackend, StoreKind, StoreSpec};
use crate::topology::{NodeFactory, TopicRef};
use crate::windows::JoinWindows;

/// A predicate of [`KStream::branch`].
pub type Predicate<K, V> = Box<dyn Fn(&K, &V) -> bool + Send + Sync>;

/// A record stream with keys `K` and values `V`.
pub struct KStream<K, V> {
    pub(crate) b: Shared,
    pub(crate) node: usize,
    pub(crate) key: Option<SerdeRef<K>>,
    pub(crate) value: Option<SerdeRef<V>>,
    /// Whether an operator may have changed the key since the last topic: grouping or joining
    /// then goes through a repartition topic first.
    pub(crate) key_changed: bool,
    /// The topics this stream's records come from within its subtopology (for co-partitioning).
    pub(crate) sources: Vec<TopicRef>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            b: self.b.clone(),
            node: self.node,
            key: self.key.clone(),
            value: self.value.clone(),
            key_changed: self.key_changed,
            sources: self.sources.clone(),
        }
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn new(
        b: Shared,
        node: usize,
        key: Option<SerdeRef<K>>,
        value: Option<SerdeRef<V>>,
        key_changed: bool,
        sources: Vec<TopicRef>,
    ) -> Self {
        KStream {
            b,
            node,
            key,
            value,
            key_changed,
            sources,
        }
    }

    fn child(&self, prefix: &str, factory: NodeFactory, stores: Vec<Arc<str>>) -> usize {
        self.b
            .borrow_mut()
            .add_processor(prefix, vec![self.node], factory, stores)
    }

    fn derive<K2: Data, V2: Data>(
        &self,
        node: usize,
        key: Option<SerdeRef<K2>>,
        value: Option<SerdeRef<V2>>,
        key_changed: bool,
    ) -> KStream<K2, V2> {
        KStream::new(
            self.b.clone(),
            node,
            key,
            value,
            self.key_changed || key_changed,
            self.sources.clone(),
        )
    }

    /// Sets the serdes that grouping, joining, repartitioning and sinks use from here on.
    pub fn with_serdes(mut self, key: SerdeRef<K>, value: SerdeRef<V>) -> Self {
        self.key = Some(key);
        self.value = Some(value);
        self
    }

    /// Keeps the records for which `predicate` holds.
    pub fn filter(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        let predicate = Arc::new(predicate);
        let node = self.child(
            "KSTREAM-FILTER",
            fn_factory(move || {
                let predicate = predicate.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, V>, r: Record<K, V>| {
                    if predicate(&r.key, &r.value) {
                        ctx.forward(r)
                    } else {
                        Ok(())
                    }
                }
            }),
            Vec::new(),
        );
        self.derive(node, self.key.clone(), self.value.clone(), false)
    }

    /// Drops the records for which `predicate` holds.
    pub fn filter_not(
        &self,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> KStream<K, V> {
        self.filter(move |k, v| !predicate(k, v))
    }

    /// Replaces each record's key and value (the key may change: a later grouping or join
    /// repartitions).
    pub fn map<K2: Data, V2: Data>(
        &self,
        f: impl Fn(K, V) -> (K2, V2) + Send + Sync + 'static,
    ) -> KStream<K2, V2> {
        let f = Arc::new(f);
        let node = self.child(
            "KSTREAM-MAP",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K2, V2>, r: Record<K, V>| {
                    let (k, v) = f(r.key, r.value);
                    ctx.forward(Record {
                        key: k,
                        value: v,
                        timestamp: r.timestamp,
                        headers: r.headers,
                    })
                }
            }),
            Vec::new(),
        );
        self.derive(node, None, None, true)
    }

    /// Replaces each record's value.
    pub fn map_values<V2: Data>(
        &self,
        f: impl Fn(V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        self.map_values_with_key(move |_, v| f(v))
    }

    /// Replaces each record's value, seeing the key.
    pub fn map_values_with_key<V2: Data>(
        &self,
        f: impl Fn(&K, V) -> V2 + Send + Sync + 'static,
    ) -> KStream<K, V2> {
        let f = Arc::new(f);
        let node = self.child(
            "KSTREAM-MAPVALUES",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, V2>, r: Record<K, V>| {
                    let v = f(&r.key, r.value.clone());
                    ctx.forward(r.with_value(v))
                }
            }),
            Vec::new(),
        );
        self.derive(node, self.key.clone(), None, false)
    }

    /// Replaces each record's key.
    pub fn select_key<K2: Data>(
        &self,
        f: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
    ) -> KStream<K2, V> {
        let f = Arc::new(f);
        let node = self.child(
            "KSTREAM-KEY-SELECT",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K2, V>, r: Record<K, V>| {
                    let k = f(&r.key, &r.value);
                    let (v, timestamp, headers) = (r.value, r.timestamp, r.headers);
                    ctx.forward(Record {
                        key: k,
                        value: v,
                        timestamp,
                        headers,
                    })
                }
            }),
            Vec::new(),
        );
        self.derive(node, None, self.value.clone(), true)
    }

    /// Replaces each record by zero or more records.
    pub fn flat_map<K2: Data, V2: Data, I>(
        &self,
        f: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<K2, V2>
    where
        I: IntoIterator<Item = (K2, V2)>,
    {
        let f = Arc::new(f);
        let node = self.child(
            "KSTREAM-FLATMAP",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K2, V2>, r: Record<K, V>| {
                    for (k, v) in f(r.key, r.value) {
                        ctx.forward(Record {
                            key: k,
                            value: v,
                            timestamp: r.timestamp,
                            headers: r.headers.clone(),
                        })?;
                    }
                    Ok(())
                }
            }),
            Vec::new(),
        );
        self.derive(node, None, None, true)
    }

    /// Replaces each record's value by zero or more values under the same key.
    pub fn flat_map_values<V2: Data, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, V2>
    where
        I: IntoIterator<Item = V2>,
    {
        let f = Arc::new(f);
        let node = self.child(
            "KSTREAM-FLATMAPVALUES",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, V2>, r: Record<K, V>| {
                    for v in f(r.value.clone()) {
                        ctx.forward(Record {
                            key: r.key.clone(),
                            value: v,
                            timestamp: r.timestamp,
                            headers: r.headers.clone(),
                        })?;
                    }
                    Ok(())
                }
            }),
            Vec::new(),
        );
        self.derive(node, self.key.clone(), None, false)
    }

    /// Calls `f` for each record and passes it on unchanged.
    pub fn peek(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) -> KStream<K, V> {
        let f = Arc::new(f);
        let node = self.child(
            "KSTREAM-PEEK",
            fn_factory(move || {
                let f = f.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, V>, r: Record<K, V>| {
                    f(&r.key, &r.value);
                    ctx.forward(r)
                }
            }),
            Vec::new(),
        );
        self.derive(node, self.key.clone(), self.value.clone(), false)
    }

    /// Calls `f` for each record (a terminal operation).
    pub fn foreach(&self, f: impl Fn(&K, &V) + Send + Sync + 'static) {
        let f = Arc::new(f);
        self.child(
            "KSTREAM-FOREACH",
            fn_factory(move || {
                let f = f.clone();
                move |_: &mut ProcessorContext<'_, '_, (), ()>, r: Record<K, V>| {
                    f(&r.key, &r.value);
                    Ok(())
                }
            }),
            Vec::new(),
        );
    }

    /// Splits the stream: each record goes to the branch of the first predicate it satisfies
    /// (records matching none are dropped).
    pub fn branch(&self, predicates: Vec<Predicate<K, V>>) -> Vec<KStream<K, V>> {
        let count = predicates.len();
        let predicates = Arc::new(predicates);
        let branch = self.child(
            "KSTREAM-BRANCH",
            fn_factory(move || {
                let predicates = predicates.clone();
                move |ctx: &mut ProcessorContext<'_, '_, K, V>, r: Record<K, V>| match predicates
                    .iter()
                    .position(|p| p(&r.key, &r.value))
                {
                    Some(i) => ctx.forward_to(i, r),
                    None => Ok(()),
                }
            }),
            Vec::new(),
        );
        let parent = KStream {
            node: branch,
            ..self.clone()
        };
        (0..count)
            .map(|_| parent.pass_through("KSTREAM-BRANCHCHILD", vec![branch]))
            .collect()
    }

    fn pass_through(&self, prefix: &str, parents: Vec<usize>) -> KStream<K, V> {
        let factory = fn_factory(|| {
            |ctx: &mut ProcessorContext<'_, '_, K, V>, r: Record<K, V>| ctx.forward(r)
        });
        let node = self
            .b
            .borrow_mut()
            .add_processor(prefix, parents, factory, Vec::new());
        self.derive(node, self.key.clone(), self.value.clone(), false)
    }

    /// The records of both streams, interleaved.
    pub fn merge(&self, other: &KStream<K, V>) -> KStream<K, V> {
        let mut merged = self.pass_through("KSTREAM-MERGE", vec![self.node, other.node]);
        merged.key_changed |= other.key_changed;
        for s in &other.sources {
            if !merged.sources.contains(s) {
                merged.sources.push(s.clone());
            }
        }
        merged
    }

    /// Writes the stream to `topic` with the stream's serdes.
    pub fn to(&self, topic: &str) {
        let key = require(&self.b, &self.key, "key", &format!("to({topic})"));
        let value = require(&self.b, &self.value, "value", &format!("to({topic})"));
        self.to_with(topic, key, value);
    }

    /// Writes the stream to `topic` with these serdes.
    pub fn to_with(&self, topic: &str, key: SerdeRef<K>, value: SerdeRef<V>) {
        self.sink(TopicRef::external(topic), key, value);
    }

    fn sink(&self, topic: TopicRef, key: SerdeRef<K>, value: SerdeRef<V>) -> usize {
        let factory = {
            let topic = topic.clone();
            processor_factory::<_, K, V, (), ()>(move || SinkProcessor {
                topic: topic.clone(),
                resolved: None,
                key: key.clone(),
                value: value.clone(),
            })
        };
        let mut b = self.b.borrow_mut();
        let name = b.name("KSTREAM-SINK");
        b.add_node(
            name,
            vec![self.node],
            factory,
            Vec::new(),
            None,
            Some(topic),
        )
    }

    /// Sends the stream through the internal topic `<application.id>-<name>-repartition`
    /// (created with `partitions`, or as many as the input has), so records are partitioned by
    /// their current key.
    pub fn repartition(&self, name: Option<&str>, partitions: Option<i32>) -> KStream<K, V> {
        let key = require(&self.b, &self.key, "key", "repartition");
        let value = require(&self.b, &self.value, "value", "repartition");
        let base = match name {
            Some(n) => n.to_string(),
            None => self.b.borrow_mut().name("KSTREAM-REPARTITION"),
        };
        let topic = TopicRef {
            name: format!("{base}-repartition"),
            internal: true,
        };
        if partitions.is_some_and(|p| p < 1) {
            self.b.borrow_mut().error(format!(
                "repartition topic {} needs at least one partition",
                topic.name
            ));
        }
        self.b.borrow_mut().repartition(topic.clone(), partitions);
        self.sink(topic.clone(), key.clone(), value.clone());
        let factory: NodeFactory = {
            let (key, value) = (key.clone(), value.clone());
            Arc::new(move || {
                Box::new(SourceNode {
                    key: key.clone(),
                    value: value.clone(),
                })
            })
        };
        let mut b = self.b.borrow_mut();
        let source_name = b.name("KSTREAM-SOURCE");
        let node = b.add_node(
            source_name,
            Vec::new(),
            factory,
            Vec::new(),
            Some(topic.clone()),
            None,
        );
        drop(b);
        KStream::new(
            self.b.clone(),
            node,
            Some(key),
            Some(value),
            false,
            vec![topic],
        )
    }

    /// Repartitions only if an operator may have changed the key.
    pub(crate) fn repartition_if_needed(&self, operation: &str) -> KStream<K, V> {
        if self.key_changed {
            let name = self.b.borrow_mut().name(operation);
            self.repartition(Some(&name), None)
        } else {
            self.clone()
        }
    }

    /// Groups records by their key for aggregation.
    pub fn group_by_key(&self) -> KGroupedStream<K, V> {
        let stream = self.repartition_if_needed("KSTREAM-AGGREGATE");
        let key = require(&self.b, &stream.key, "key", "group_by_key");
        KGroupedStream { stream, key }
    }

    /// Groups records by a new key (through a repartition topic, written with these serdes).
    pub fn group_by<K2: Data>(
        &self,
        selector: impl Fn(&K, &V) -> K2 + Send + Sync + 'static,
        key: SerdeRef<K2>,
        value: SerdeRef<V>,
    ) -> KGroupedStream<K2, V> {
        let mut rekeyed = self.select_key(selector);
        rekeyed.key = Some(key);
        rekeyed.value = Some(value);
        rekeyed.group_by_key()
    }

    /// A table of the latest value per key of this stream.
    pub fn to_table(&self, materialized: Materialized<K, V>) -> KTable<K, V> {
        let stream = self.repartition_if_needed("KSTREAM-TOTABLE");
        let (store, key, value) = materialized.declare(
            &self.b,
            "KSTREAM-TOTABLE-STATE-STORE",
            StoreKind::KeyValue,
            (&stream.key, &stream.value),
            "to_table",
        );
        // The materializer takes optional values (tombstones): wrap them first.
        let node = stream.map_values(Some).materialize_into(store.clone());
        KTable::new(
            self.b.clone(),
            node,
            Some(key),
            Some(value),
            Some(store),
            stream.sources,
            None,
        )
    }

    /// Runs a processor of the processor API on each record, with the named stores (added with
    /// [`crate::StreamsBuilder::add_state_store`]) connected.
    pub fn process<K2: Data, V2: Data, P>(
        &self,
        supplier: impl Fn() -> P + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<K2, V2>
    where
        P: Processor<K, V, K2, V2>,
    {
        let stores = stores.iter().map(|s| Arc::from(*s)).collect();
        let node = self.child(
            "KSTREAM-PROCESSOR",
            processor_factory::<P, K, V, K2, V2>(supplier),
            stores,
        );
        self.derive(node, None, None, true)
    }

    fn window_store<VX: Data>(
        &self,
        prefix: &str,
        retention_ms: i64,
        key: SerdeRef<K>,
        value: SerdeRef<VX>,
    ) -> Arc<str> {
        let mut b = self.b.borrow_mut();
        let name: Arc<str> = Arc::from(b.name(prefix));
        b.add_store(
            StoreSpec {
                name: name.clone(),
                kind: StoreKind::Window {
                    retention_ms,
                    retain_duplicates: true,
                },
                backend: StoreBackend::Persistent,
                logged: true,
            },
            key,
            value,
            None,
        );
        name
    }

    fn stream_join<V2: Data, VO: Data>(
        &self,
        other: &KStream<K, V2>,
        windows: JoinWindows,
        kind: JoinKind,
        joiner: crate::ops::join::Joiner<K, V, V2, VO>,
    ) -> KStream<K, VO> {
        let left = self.repartition_if_needed("KSTREAM-JOINTHIS");
        let right = other.repartition_if_needed("KSTREAM-JOINOTHER");
        let key = require(&self.b, &left.key, "key", "join");
        let left_value = require(&self.b, &left.value, "value", "join");
        let right_value = require(&self.b, &right.value, "value", "join (other side)");
        let retention = windows
            .before_ms
            .saturating_add(windows.after_ms)
            .saturating_add(windows.grace_ms)
            .saturating_add(1);
        let left_store = left.window_store(
            "KSTREAM-JOINTHIS-STORE",
            retention,
            key.clone(),
            left_value.clone(),
        );
        let right_store = left.window_store(
            "KSTREAM-JOINOTHER-STORE",
            retention,
            key.clone(),
            right_value.clone(),
        );
        let outer_store: Option<Arc<str>> = (kind != JoinKind::Inner).then(|| {
            let mut b = self.b.borrow_mut();
            let name: Arc<str> = Arc::from(b.name("KSTREAM-OUTERSHARED-STORE"));
            b.add_store(
                StoreSpec {
                    name: name.clone(),
                    kind: StoreKind::KeyValue,
                    backend: StoreBackend::Persistent,
                    logged: true,
                },
                key.clone(),
                left_value.clone(),
                None,
            );
            name
        });
        let core = StreamJoinCore {
            kind,
            windows,
            left_store_name: left_store.clone(),
            right_store_name: right_store.clone(),
            outer_store_name: outer_store.clone(),
            key: key.clone(),
            left_value,
            right_value,
            joiner,
            left_store: None,
            right_store: None,
            outer_store: None,
        };
        let mut stores = vec![left_store, right_store];
        stores.extend(outer_store);
        let left_core = core.clone();
        let left_node = left.child(
            "KSTREAM-JOINTHIS",
            processor_factory::<_, K, V, K, VO>(move || StreamJoinLeft(left_core.clone())),
            stores.clone(),
        );
        let right_node = right.child(
            "KSTREAM-JOINOTHER",
            processor_factory::<_, K, V2, K, VO>(move || StreamJoinRight(core.clone())),
            stores,
        );
        let mut sources = left.sources.clone();
        sources.extend(right.sources.iter().cloned());
        self.b.borrow_mut().copartition(
            sources.clone(),
            "a stream-stream join reads partition p of both sides in one task".to_string(),
        );
        let merged = KStream::<K, VO> {
            b: self.b.clone(),
            node: left_node,
            key: Some(key),
            value: None,
            key_changed: false,
            sources,
        };
        merged.pass_through("KSTREAM-MERGE", vec![left_node, right_node])
    }

    /// Joins records of both streams with equal keys whose timestamps are within `windows`.
    pub fn join<V2: Data, VO: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, &V2) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VO> {
        let joiner = Arc::new(move |_: &K, l: Option<&V>, r: Option<&V2>| {
            joiner(
                l.expect("inner join has both sides"),
                r.expect("inner join has both sides"),
            )
        });
        self.stream_join(other, windows, JoinKind::Inner, joiner)
    }

    /// Like [`join`](Self::join), and every left record without a match is emitted (with
    /// `None`) once its window closed.
    pub fn left_join<V2: Data, VO: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(&V, Option<&V2>) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VO> {
        let joiner = Arc::new(move |_: &K, l: Option<&V>, r: Option<&V2>| {
            joiner(l.expect("left join has a left side"), r)
        });
        self.stream_join(other, windows, JoinKind::Left, joiner)
    }

    /// Like [`join`](Self::join), and every record of either side without a match is emitted
    /// once its window closed.
    pub fn outer_join<V2: Data, VO: Data>(
        &self,
        other: &KStream<K, V2>,
        joiner: impl Fn(Option<&V>, Option<&V2>) -> VO + Send + Sync + 'static,
        windows: JoinWindows,
    ) -> KStream<K, VO> {
        let joiner = Arc::new(move |_: &K, l: Option<&V>, r: Option<&V2>| joiner(l, r));
        self.stream_join(other, windows, JoinKind::Outer, joiner)
    }

    fn table_join<VT: Data, VO: Data>(
        &self,
        table: &KTable<K, VT>,
        left: bool,
        joiner: LookupJoiner<K, V, VT, VO>,
    ) -> KStream<K, VO> {
        let stream = self.repartition_if_needed("KSTREAM-JOINTABLE");
        let store = table.materialized_store();
        let store_name = store.clone();
        let node = stream.child(
            "KSTREAM-JOIN-TABLE",
            processor_factory::<_, K, V, K, VO>(move || StreamTableJoin {
                store_name: store_name.clone(),
                store: None,
                left,
                joiner: joiner.clone(),
            }),
            vec![store],
        );
        let mut sources = stream.sources.clone();
        sources.extend(table.sources.iter().cloned());
        self.b.borrow_mut().copartition(
            sources.clone(),
            "a stream-table join looks up partition p of the table for partition p of the stream"
                .to_string(),
        );
        KStream::new(
            self.b.clone(),
            node,
            stream.key.clone(),
            None,
            false,
            sources,
        )
    }

    /// Joins each record with the table's current value for its key (records without one are
    /// dropped).
    pub fn join_table<VT: Data, VO: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, &VT) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.table_join(
            table,
            false,
            Arc::new(move |_, v, t| joiner(v, t.expect("inner join found a value"))),
        )
    }

    /// Joins each record with the table's current value for its key, `None` when there is none.
    pub fn left_join_table<VT: Data, VO: Data>(
        &self,
        table: &KTable<K, VT>,
        joiner: impl Fn(&V, Option<&VT>) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.table_join(table, true, Arc::new(move |_, v, t| joiner(v, t)))
    }

    fn global_join<GK: Data, GV: Data, VO: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        mapper: KeyMapper<K, V, GK>,
        left: bool,
        joiner: LookupJoiner<K, V, GV, VO>,
    ) -> KStream<K, VO> {
        let store_name = table.store.clone();
        let node = self.child(
            "KSTREAM-JOIN-GLOBALTABLE",
            processor_factory::<_, K, V, K, VO>(move || GlobalTableJoin {
                store_name: store_name.clone(),
                store: None,
                left,
                mapper: mapper.clone(),
                joiner: joiner.clone(),
            }),
            vec![table.store.clone()],
        );
        self.derive(node, self.key.clone(), None, false)
    }

    /// Joins each record with the global table's value for `mapper(key, value)` (records
    /// without one are dropped). No co-partitioning needed: every instance has the whole table.
    pub fn join_global<GK: Data, GV: Data, VO: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, &GV) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.global_join(
            table,
            Arc::new(mapper),
            false,
            Arc::new(move |_, v, g| joiner(v, g.expect("inner join found a value"))),
        )
    }

    /// Like [`join_global`](Self::join_global), `None` when the global table has no value.
    pub fn left_join_global<GK: Data, GV: Data, VO: Data>(
        &self,
        table: &GlobalKTable<GK, GV>,
        mapper: impl Fn(&K, &V) -> GK + Send + Sync + 'static,
        joiner: impl Fn(&V, Option<&GV>) -> VO + Send + Sync + 'static,
    ) -> KStream<K, VO> {
        self.global_join(
            table,
            Arc::new(mapper),
            true,
            Arc::new(move |_, v, g| joiner(v, g)),
        )
    }
}

impl<K: Data, V: Data> KStream<K, Option<V>> {
    /// Adds the node keeping a table's current values in `store` (a `None` value deletes) and
    /// forwarding each update with the value it replaced.
    pub(crate) fn materialize_into(&self, store: Arc<str>) -> usize {
        let store_name = store.clone();
        self.child(
            "KTABLE-MATERIALIZE",
            processor_factory::<_, K, Option<V>, K, Change<V>>(move || TableMaterializer {
                store_name: store_name.clone(),
                store: None,
            }),
            vec![store],
        )
    }
}

//! Grouped streams and tables and their aggregations: `count`, `reduce`, `aggregate`, plain or
//! over time, sliding or session windows.

use std::sync::Arc;

use super::{processor_factory, require, KStream, KTable, Materialized};
use crate::ops::aggregate::{Aggregator, Initializer, StreamAggregate, TableAggregate};
use crate::ops::windowed::{SessionWindowAggregate, SlidingWindowAggregate, TimeWindowAggregate};
use crate::ops::{Change, FirstValue, Merger};
use crate::processor::Data;
use crate::serde::{SerdeRef, Serdes};
use crate::state::StoreKind;
use crate::windows::{SessionWindows, SlidingWindows, TimeWindows, Windowed};

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) key: SerdeRef<K>,
}

/// Builds an aggregation's store and processor node; returns (node, store, key serde, value serde).
fn aggregate_node<K: Data, V: Data, A: Data>(
    stream: &KStream<K, V>,
    key: &SerdeRef<K>,
    materialized: &Materialized<K, A>,
    default_value: Option<SerdeRef<A>>,
    init: Option<Initializer<A>>,
    first: Option<FirstValue<V, A>>,
    aggregator: Aggregator<K, V, A>,
) -> (usize, Arc<str>, SerdeRef<K>, SerdeRef<A>) {
    let b = &stream.b;
    let key = materialized.key.clone().unwrap_or_else(|| key.clone());
    let value = materialized
        .value
        .clone()
        .or(default_value)
        .unwrap_or_else(|| require(b, &None, "aggregate value", "aggregate"));
    let store = materialized.store_name(b, "KSTREAM-AGGREGATE-STATE-STORE");
    b.borrow_mut().add_store(
        materialized.spec(store.clone(), StoreKind::KeyValue),
        key.clone(),
        value.clone(),
        None,
    );
    let store_name = store.clone();
    let factory = processor_factory::<_, K, V, K, Change<A>>(move || StreamAggregate {
        store_name: store_name.clone(),
        store: None,
        init: init.clone(),
        first: first.clone(),
        aggregator: aggregator.clone(),
    });
    let mut s = b.borrow_mut();
    let name = s.name("KSTREAM-AGGREGATE");
    let node = s.add_node(
        name,
        vec![stream.node],
        factory,
        vec![store.clone()],
        None,
        None,
    );
    (node, store, key, value)
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    fn table<A: Data>(
        &self,
        node: usize,
        store: Arc<str>,
        key: SerdeRef<K>,
        value: SerdeRef<A>,
    ) -> KTable<K, A> {
        KTable::new(
            self.stream.b.clone(),
            node,
            Some(key),
            Some(value),
            Some(store),
            self.stream.sources.clone(),
            None,
        )
    }

    /// The number of records per key.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        let (node, store, key, value) = aggregate_node(
            &self.stream,
            &self.key,
            &materialized,
            Some(Serdes::i64()),
            Some(Arc::new(|| 0i64)),
            None,
            Arc::new(|_: &K, _: V, count: i64| count + 1),
        );
        self.table(node, store, key, value)
    }

    /// Combines the values of each key with `reducer` (the first value is the start).
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let (node, store, key, value) = aggregate_node(
            &self.stream,
            &self.key,
            &materialized,
            self.stream.value.clone(),
            None,
            Some(Arc::new(|v| v)),
            Arc::new(move |_: &K, v: V, agg: V| reducer(agg, v)),
        );
        self.table(node, store, key, value)
    }

    /// Folds the values of each key into an aggregate (`materialized` must give the aggregate's
    /// serde).
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<K, A> {
        let (node, store, key, value) = aggregate_node(
            &self.stream,
            &self.key,
            &materialized,
            None,
            Some(Arc::new(init)),
            None,
            Arc::new(aggregator),
        );
        self.table(node, store, key, value)
    }

    /// Aggregates per time window (tumbling or hopping).
    pub fn windowed_by(&self, windows: TimeWindows) -> TimeWindowedKStream<K, V> {
        TimeWindowedKStream {
            grouped: KGroupedStream {
                stream: self.stream.clone(),
                key: self.key.clone(),
            },
            windows,
        }
    }

    /// Aggregates per sliding window.
    pub fn windowed_by_sliding(&self, windows: SlidingWindows) -> SlidingWindowedKStream<K, V> {
        SlidingWindowedKStream {
            grouped: KGroupedStream {
                stream: self.stream.clone(),
                key: self.key.clone(),
            },
            windows,
        }
    }

    /// Aggregates per session.
    pub fn windowed_by_session(&self, windows: SessionWindows) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped: KGroupedStream {
                stream: self.stream.clone(),
                key: self.key.clone(),
            },
            windows,
        }
    }

    fn windowed_table<A: Data>(
        &self,
        node: usize,
        store: Option<Arc<str>>,
        value: SerdeRef<A>,
        close_delay_ms: i64,
    ) -> KTable<Windowed<K>, A> {
        KTable::new(
            self.stream.b.clone(),
            node,
            Some(Serdes::windowed(self.key.clone())),
            Some(value),
            store,
            self.stream.sources.clone(),
            Some(close_delay_ms),
        )
    }
}

/// A grouped stream to aggregate per time window.
pub struct TimeWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: TimeWindows,
}

impl<K: Data, V: Data> TimeWindowedKStream<K, V> {
    fn build<A: Data>(
        &self,
        materialized: Materialized<K, A>,
        default_value: Option<SerdeRef<A>>,
        init: Option<Initializer<A>>,
        first: Option<FirstValue<V, A>>,
        aggregator: Aggregator<K, V, A>,
    ) -> KTable<Windowed<K>, A> {
        let stream = &self.grouped.stream;
        let b = &stream.b;
        let key = materialized
            .key
            .clone()
            .unwrap_or_else(|| self.grouped.key.clone());
        let value = materialized
            .value
            .clone()
            .or(default_value)
            .unwrap_or_else(|| require(b, &None, "aggregate value", "windowed aggregate"));
        let store = materialized.store_name(b, "KSTREAM-AGGREGATE-STATE-STORE");
        let retention_ms = self.windows.size_ms.saturating_add(self.windows.grace_ms);
        b.borrow_mut().add_store(
            materialized.spec(
                store.clone(),
                StoreKind::Window {
                    retention_ms,
                    retain_duplicates: false,
                },
            ),
            key,
            value.clone(),
            None,
        );
        let (windows, store_name) = (self.windows, store.clone());
        let factory =
            processor_factory::<_, K, V, Windowed<K>, Change<A>>(move || TimeWindowAggregate {
                windows,
                store_name: store_name.clone(),
                store: None,
                init: init.clone(),
                first: first.clone(),
                aggregator: aggregator.clone(),
            });
        let mut s = b.borrow_mut();
        let name = s.name("KSTREAM-WINDOWED-AGGREGATE");
        let node = s.add_node(
            name,
            vec![stream.node],
            factory,
            vec![store.clone()],
            None,
            None,
        );
        drop(s);
        self.grouped
            .windowed_table(node, Some(store), value, self.windows.grace_ms)
    }

    /// The number of records per key and window.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        self.build(
            materialized,
            Some(Serdes::i64()),
            Some(Arc::new(|| 0)),
            None,
            Arc::new(|_, _, c| c + 1),
        )
    }

    /// Combines the values per key and window.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<Windowed<K>, V> {
        let value = self.grouped.stream.value.clone();
        self.build(
            materialized,
            value,
            None,
            Some(Arc::new(|v| v)),
            Arc::new(move |_, v, agg| reducer(agg, v)),
        )
    }

    /// Folds the values per key and window.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<Windowed<K>, A> {
        self.build(
            materialized,
            None,
            Some(Arc::new(init)),
            None,
            Arc::new(aggregator),
        )
    }
}

/// A grouped stream to aggregate per sliding window.
pub struct SlidingWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SlidingWindows,
}

impl<K: Data, V: Data> SlidingWindowedKStream<K, V> {
    /// Folds the values per key and sliding window. The records themselves are kept (in a store
    /// with the stream's value serde) for the window's span.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        value: SerdeRef<A>,
    ) -> KTable<Windowed<K>, A> {
        let stream = &self.grouped.stream;
        let b = &stream.b;
        let record_value = require(b, &stream.value, "value", "sliding-window aggregate");
        let store = Arc::<str>::from(b.borrow_mut().name("KSTREAM-SLIDING-RECORDS-STORE"));
        let retention_ms = self
            .windows
            .difference_ms
            .saturating_mul(2)
            .saturating_add(self.windows.grace_ms)
            .saturating_add(2);
        let materialized = Materialized::<K, V>::new();
        b.borrow_mut().add_store(
            materialized.spec(
                store.clone(),
                StoreKind::Window {
                    retention_ms,
                    retain_duplicates: true,
                },
            ),
            self.grouped.key.clone(),
            record_value,
            None,
        );
        let (windows, store_name) = (self.windows, store.clone());
        let init: Initializer<A> = Arc::new(init);
        let aggregator: Aggregator<K, V, A> = Arc::new(aggregator);
        let factory =
            processor_factory::<_, K, V, Windowed<K>, Change<A>>(move || SlidingWindowAggregate {
                windows,
                store_name: store_name.clone(),
                store: None,
                init: init.clone(),
                aggregator: aggregator.clone(),
            });
        let mut s = b.borrow_mut();
        let name = s.name("KSTREAM-SLIDINGWINDOWAGGREGATE");
        let node = s.add_node(name, vec![stream.node], factory, vec![store], None, None);
        drop(s);
        self.grouped
            .windowed_table(node, None, value, self.windows.grace_ms + 1)
    }

    /// The number of records per key and sliding window.
    pub fn count(&self) -> KTable<Windowed<K>, i64> {
        self.aggregate(|| 0, |_, _, c| c + 1, Serdes::i64())
    }
}

/// A grouped stream to aggregate per session.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
}

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    /// Folds the values per session; `merger` combines two sessions' aggregates when a record
    /// bridges them.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        merger: impl Fn(&K, A, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<Windowed<K>, A> {
        let stream = &self.grouped.stream;
        let b = &stream.b;
        let key = materialized
            .key
            .clone()
            .unwrap_or_else(|| self.grouped.key.clone());
        let value = materialized
            .value
            .clone()
            .unwrap_or_else(|| require(b, &None, "aggregate value", "session aggregate"));
        let store = materialized.store_name(b, "KSTREAM-SESSION-STATE-STORE");
        // A record accepted at stream time t has ts >= t - grace - gap and merges sessions ending
        // at ts - gap or later: keep that far back.
        let retention_ms = self
            .windows
            .gap_ms
            .saturating_mul(2)
            .saturating_add(self.windows.grace_ms)
            .saturating_add(1);
        b.borrow_mut().add_store(
            materialized.spec(store.clone(), StoreKind::Session { retention_ms }),
            key,
            value.clone(),
            None,
        );
        let (windows, store_name) = (self.windows, store.clone());
        let init: Initializer<A> = Arc::new(init);
        let aggregator: Aggregator<K, V, A> = Arc::new(aggregator);
        let merger: Merger<K, A> = Arc::new(merger);
        let factory =
            processor_factory::<_, K, V, Windowed<K>, Change<A>>(move || SessionWindowAggregate {
                windows,
                store_name: store_name.clone(),
                store: None,
                init: init.clone(),
                aggregator: aggregator.clone(),
                merger: merger.clone(),
            });
        let mut s = b.borrow_mut();
        let name = s.name("KSTREAM-SESSIONWINDOWAGGREGATE");
        let node = s.add_node(
            name,
            vec![stream.node],
            factory,
            vec![store.clone()],
            None,
            None,
        );
        drop(s);
        let close = self
            .windows
            .gap_ms
            .saturating_add(self.windows.grace_ms)
            .saturating_add(1);
        self.grouped.windowed_table(node, Some(store), value, close)
    }

    /// The number of records per session.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        self.aggregate(
            || 0,
            |_, _, c| c + 1,
            |_, a, b| a + b,
            materialized.with_value_serde(Serdes::i64()),
        )
    }
}

/// A table re-grouped by a new key, ready to aggregate with an adder and a subtractor.
pub struct KGroupedTable<K, V> {
    pub(crate) stream: KStream<K, (bool, V)>,
    pub(crate) key: SerdeRef<K>,
}

impl<K: Data, V: Data> KGroupedTable<K, V> {
    /// Folds each group: `adder` for values joining it, `subtractor` for values leaving it.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        adder: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        subtractor: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<K, A> {
        let b = &self.stream.b;
        let key = materialized.key.clone().unwrap_or_else(|| self.key.clone());
        let value = materialized
            .value
            .clone()
            .unwrap_or_else(|| require(b, &None, "aggregate value", "table aggregate"));
        let store = materialized.store_name(b, "KTABLE-AGGREGATE-STATE-STORE");
        b.borrow_mut().add_store(
            materialized.spec(store.clone(), StoreKind::KeyValue),
            key.clone(),
            value.clone(),
            None,
        );
        let store_name = store.clone();
        let init: Initializer<A> = Arc::new(init);
        let adder: Aggregator<K, V, A> = Arc::new(adder);
        let subtractor: Aggregator<K, V, A> = Arc::new(subtractor);
        let factory = processor_factory::<_, K, (bool, V), K, Change<A>>(move || TableAggregate {
            store_name: store_name.clone(),
            store: None,
            init: init.clone(),
            adder: adder.clone(),
            subtractor: subtractor.clone(),
        });
        let mut s = b.borrow_mut();
        let name = s.name("KTABLE-AGGREGATE");
        let node = s.add_node(
            name,
            vec![self.stream.node],
            factory,
            vec![store.clone()],
            None,
            None,
        );
        drop(s);
        KTable::new(
            b.clone(),
            node,
            Some(key),
            Some(value),
            Some(store),
            self.stream.sources.clone(),
            None,
        )
    }

    /// The number of entries per group.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<K, i64> {
        self.aggregate(
            || 0,
            |_, _, c| c + 1,
            |_, _, c| c - 1,
            materialized.with_value_serde(Serdes::i64()),
        )
    }
}

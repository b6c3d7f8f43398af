//! Grouped streams and tables and their aggregations: `count`, `reduce`, `aggregate`, plain or
//! over time, sliding or session windows.

use std::sync::Arc;

use super::{processor_factory, require, KStream, KTable, Materialized};
use crate::ops::aggregate::{Aggregator, Fold, Initializer, StreamAggregate, TableAggregate};
use crate::ops::windowed::{SessionWindowAggregate, SlidingWindowAggregate, TimeWindowAggregate};
use crate::ops::{Change, Merger};
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
    fold: Fold<K, V, A>,
) -> (usize, Arc<str>, SerdeRef<K>, SerdeRef<A>) {
    let b = &stream.b;
    let (store, key, value) = materialized.declare(
        b,
        "KSTREAM-AGGREGATE-STATE-STORE",
        StoreKind::KeyValue,
        (&Some(key.clone()), &default_value),
        "aggregate",
    );
    let store_name = store.clone();
    let factory = processor_factory::<_, K, V, K, Change<A>>(move || StreamAggregate {
        store_name: store_name.clone(),
        store: None,
        fold: fold.clone(),
    });
    let node = b.borrow_mut().add_processor(
        "KSTREAM-AGGREGATE",
        vec![stream.node],
        factory,
        vec![store.clone()],
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
            Fold::counting(),
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
            Fold::reducing(reducer),
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
            Fold::with_init(init, aggregator),
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
        fold: Fold<K, V, A>,
    ) -> KTable<Windowed<K>, A> {
        let stream = &self.grouped.stream;
        let b = &stream.b;
        let retention_ms = self.windows.size_ms.saturating_add(self.windows.grace_ms);
        let kind = StoreKind::Window {
            retention_ms,
            retain_duplicates: false,
        };
        let serdes = (&Some(self.grouped.key.clone()), &default_value);
        let (store, _, value) = materialized.declare(
            b,
            "KSTREAM-AGGREGATE-STATE-STORE",
            kind,
            serdes,
            "windowed aggregate",
        );
        let (windows, store_name) = (self.windows, store.clone());
        let factory =
            processor_factory::<_, K, V, Windowed<K>, Change<A>>(move || TimeWindowAggregate {
                windows,
                store_name: store_name.clone(),
                store: None,
                fold: fold.clone(),
            });
        let node = b.borrow_mut().add_processor(
            "KSTREAM-WINDOWED-AGGREGATE",
            vec![stream.node],
            factory,
            vec![store.clone()],
        );
        self.grouped
            .windowed_table(node, Some(store), value, self.windows.grace_ms)
    }

    /// The number of records per key and window.
    pub fn count(&self, materialized: Materialized<K, i64>) -> KTable<Windowed<K>, i64> {
        self.build(materialized, Some(Serdes::i64()), Fold::counting())
    }

    /// Combines the values per key and window.
    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized<K, V>,
    ) -> KTable<Windowed<K>, V> {
        let value = self.grouped.stream.value.clone();
        self.build(materialized, value, Fold::reducing(reducer))
    }

    /// Folds the values per key and window.
    pub fn aggregate<A: Data>(
        &self,
        init: impl Fn() -> A + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
        materialized: Materialized<K, A>,
    ) -> KTable<Windowed<K>, A> {
        self.build(materialized, None, Fold::with_init(init, aggregator))
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
        let node = b.borrow_mut().add_processor(
            "KSTREAM-SLIDINGWINDOWAGGREGATE",
            vec![stream.node],
            factory,
            vec![store],
        );
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
        // A record accepted at stream time t has ts >= t - grace - gap and merges sessions ending
        // at ts - gap or later: keep that far back.
        let retention_ms = self
            .windows
            .gap_ms
            .saturating_mul(2)
            .saturating_add(self.windows.grace_ms)
            .saturating_add(1);
        let (store, _, value) = materialized.declare(
            b,
            "KSTREAM-SESSION-STATE-STORE",
            StoreKind::Session { retention_ms },
            (&Some(self.grouped.key.clone()), &None),
            "session aggregate",
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
        let node = b.borrow_mut().add_processor(
            "KSTREAM-SESSIONWINDOWAGGREGATE",
            vec![stream.node],
            factory,
            vec![store.clone()],
        );
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
        let (store, key, value) = materialized.declare(
            b,
            "KTABLE-AGGREGATE-STATE-STORE",
            StoreKind::KeyValue,
            (&Some(self.key.clone()), &None),
            "table aggregate",
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
        let node = b.borrow_mut().add_processor(
            "KTABLE-AGGREGATE",
            vec![self.stream.node],
            factory,
            vec![store.clone()],
        );
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

//! The typed DSL: [`StreamsBuilder`] creates streams and tables from topics; their operators add
//! processor nodes, state stores and repartition topics to the topology it builds.

mod grouped;
mod stream;
mod table;

pub use grouped::{
    KGroupedStream, KGroupedTable, SessionWindowedKStream, SlidingWindowedKStream,
    TimeWindowedKStream,
};
pub use stream::{KStream, Predicate};
pub use table::{GlobalKTable, KTable};

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{SerdeError, TopologyError};
use crate::ops::basic::{SourceNode, TableMaterializer};
use crate::processor::{Data, FnProcessor, Processor, ProcessorContext, ProcessorNode};
use crate::record::Record;
use crate::serde::{Serde, SerdeRef, Serdes};
use crate::state::{StoreBackend, StoreKind, StoreSpec};
use crate::store_api::StoreSerdes;
use crate::topology::{
    CopartitionGroup, NodeFactory, NodeSpec, RepartitionDecl, StoreDecl, TopicRef, Topology,
};

pub(crate) type Shared = Rc<RefCell<BuilderState>>;

/// Everything the DSL has added so far.
#[derive(Default)]
pub(crate) struct BuilderState {
    nodes: Vec<NodeSpec>,
    stores: Vec<StoreDecl>,
    repartitions: Vec<RepartitionDecl>,
    copartition: Vec<CopartitionGroup>,
    errors: Vec<String>,
    counter: u32,
}

impl BuilderState {
    /// A generated name, unique and stable across runs of the same program (Kafka Streams'
    /// `KSTREAM-FILTER-0000000003` style).
    pub(crate) fn name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{:010}", self.counter);
        self.counter += 1;
        name
    }

    pub(crate) fn add_node(
        &mut self,
        name: String,
        parents: Vec<usize>,
        factory: NodeFactory,
        stores: Vec<Arc<str>>,
        source: Option<TopicRef>,
        sink: Option<TopicRef>,
    ) -> usize {
        self.nodes.push(NodeSpec {
            name,
            factory,
            parents,
            stores,
            source,
            sink,
        });
        self.nodes.len() - 1
    }

    /// Adds a processor node named after `prefix`.
    pub(crate) fn add_processor(
        &mut self,
        prefix: &str,
        parents: Vec<usize>,
        factory: NodeFactory,
        stores: Vec<Arc<str>>,
    ) -> usize {
        let name = self.name(prefix);
        self.add_node(name, parents, factory, stores, None, None)
    }

    pub(crate) fn add_store<K: 'static, V: 'static>(
        &mut self,
        spec: StoreSpec,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
        global_source: Option<TopicRef>,
    ) {
        if self.stores.iter().any(|s| s.spec.name == spec.name) {
            self.errors.push(format!(
                "state store {} is declared twice; give stores unique names",
                spec.name
            ));
            return;
        }
        let serdes: Arc<dyn Any + Send + Sync> = Arc::new(StoreSerdes {
            key,
            value,
            topic: spec.name.clone(),
        });
        self.stores.push(StoreDecl {
            spec,
            serdes: Some(serdes),
            global_source,
        });
    }

    pub(crate) fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    pub(crate) fn copartition(&mut self, topics: Vec<TopicRef>, reason: String) {
        self.copartition.push(CopartitionGroup { topics, reason });
    }

    pub(crate) fn repartition(&mut self, topic: TopicRef, partitions: Option<i32>) {
        self.repartitions.push(RepartitionDecl {
            topic,
            partitions,
            writer: None,
        });
    }
}

/// A factory for a typed processor node.
pub(crate) fn processor_factory<P, KIn, VIn, KOut, VOut>(
    make: impl Fn() -> P + Send + Sync + 'static,
) -> NodeFactory
where
    P: Processor<KIn, VIn, KOut, VOut>,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    Arc::new(move || ProcessorNode::<P, KIn, VIn, KOut, VOut>::boxed(make()))
}

/// A factory for a processor made of a closure.
pub(crate) fn fn_factory<KIn, VIn, KOut, VOut, F>(
    make: impl Fn() -> F + Send + Sync + 'static,
) -> NodeFactory
where
    F: FnMut(&mut ProcessorContext<'_, '_, KOut, VOut>, Record<KIn, VIn>) -> crate::Result<()>
        + Send
        + 'static,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    processor_factory::<FnProcessor<F>, KIn, VIn, KOut, VOut>(move || FnProcessor(make()))
}

/// A serde that is missing: the DSL records a build error, so it never runs.
struct MissingSerde;
impl<T> Serde<T> for MissingSerde {
    fn serialize(&self, _: &str, _: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        Err(SerdeError::invalid(
            "missing serde",
            "the topology failed to build",
        ))
    }
    fn deserialize(&self, _: &str, _: Option<&[u8]>) -> Result<T, SerdeError> {
        Err(SerdeError::invalid(
            "missing serde",
            "the topology failed to build",
        ))
    }
}

pub(crate) fn require<T: 'static>(
    b: &Shared,
    serde: &Option<SerdeRef<T>>,
    what: &str,
    operation: &str,
) -> SerdeRef<T> {
    match serde {
        Some(s) => s.clone(),
        None => {
            b.borrow_mut().error(format!(
                "{operation} needs a {what} serde, which is unknown after an operation that changed the type; \
                 call with_serdes(..) (or pass one in Materialized) before it"
            ));
            Arc::new(MissingSerde)
        }
    }
}

/// How a DSL state store is kept: its name (also its changelog's `<application.id>-<name>-changelog`),
/// serdes, backend and logging.
pub struct Materialized<K, V> {
    pub(crate) name: Option<String>,
    pub(crate) key: Option<SerdeRef<K>>,
    pub(crate) value: Option<SerdeRef<V>>,
    pub(crate) backend: StoreBackend,
    pub(crate) logged: bool,
}

impl<K, V> Default for Materialized<K, V> {
    fn default() -> Self {
        Materialized {
            name: None,
            key: None,
            value: None,
            backend: StoreBackend::Persistent,
            logged: true,
        }
    }
}

impl<K, V> Materialized<K, V> {
    /// A persistent, changelogged store with a generated name and the stream's serdes.
    pub fn new() -> Self {
        Self::default()
    }
    /// A store with this name: queryable under it, changelog `<application.id>-<name>-changelog`.
    pub fn named(name: &str) -> Self {
        Materialized {
            name: Some(name.to_string()),
            ..Self::default()
        }
    }
    /// The key serde.
    pub fn with_key_serde(mut self, serde: SerdeRef<K>) -> Self {
        self.key = Some(serde);
        self
    }
    /// The value serde.
    pub fn with_value_serde(mut self, serde: SerdeRef<V>) -> Self {
        self.value = Some(serde);
        self
    }
    /// Keep the store in memory (restored from the changelog's beginning on every start).
    pub fn in_memory(mut self) -> Self {
        self.backend = StoreBackend::InMemory;
        self
    }
    /// No changelog: the state is lost with the local files (not fault-tolerant).
    pub fn without_logging(mut self) -> Self {
        self.logged = false;
        self
    }

    pub(crate) fn store_name(&self, b: &Shared, prefix: &str) -> Arc<str> {
        match &self.name {
            Some(n) => Arc::from(n.as_str()),
            None => Arc::from(b.borrow_mut().name(prefix)),
        }
    }

    /// Declares this store in the builder: its name (given, or generated from `prefix`) and
    /// serdes (given, else `key`/`value`; a missing one is a build error naming `operation`).
    pub(crate) fn declare(
        &self,
        b: &Shared,
        prefix: &str,
        kind: StoreKind,
        (key, value): (&Option<SerdeRef<K>>, &Option<SerdeRef<V>>),
        operation: &str,
    ) -> (Arc<str>, SerdeRef<K>, SerdeRef<V>)
    where
        K: 'static,
        V: 'static,
    {
        let key = self
            .key
            .clone()
            .unwrap_or_else(|| require(b, key, "key", operation));
        let value = self
            .value
            .clone()
            .unwrap_or_else(|| require(b, value, "value", operation));
        let store = self.store_name(b, prefix);
        b.borrow_mut().add_store(
            self.spec(store.clone(), kind),
            key.clone(),
            value.clone(),
            None,
        );
        (store, key, value)
    }

    pub(crate) fn spec(&self, name: Arc<str>, kind: StoreKind) -> StoreSpec {
        StoreSpec {
            name,
            kind,
            backend: self.backend,
            logged: self.logged,
        }
    }
}

/// A store for the processor API, added with [`StreamsBuilder::add_state_store`].
pub struct StoreBuilder<K, V> {
    spec: StoreSpec,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
}

/// Constructors of [`StoreBuilder`]s.
pub struct Stores;

impl Stores {
    /// A persistent, changelogged key-value store.
    pub fn key_value<K, V>(name: &str, key: SerdeRef<K>, value: SerdeRef<V>) -> StoreBuilder<K, V> {
        StoreBuilder {
            spec: StoreSpec {
                name: Arc::from(name),
                kind: StoreKind::KeyValue,
                backend: StoreBackend::Persistent,
                logged: true,
            },
            key,
            value,
        }
    }
    /// A persistent, changelogged window store keeping windows for `retention` of stream time.
    pub fn window<K, V>(
        name: &str,
        retention: Duration,
        retain_duplicates: bool,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> StoreBuilder<K, V> {
        StoreBuilder {
            spec: StoreSpec {
                name: Arc::from(name),
                kind: StoreKind::Window {
                    retention_ms: retention.as_millis() as i64,
                    retain_duplicates,
                },
                backend: StoreBackend::Persistent,
                logged: true,
            },
            key,
            value,
        }
    }
    /// A persistent, changelogged session store keeping sessions for `retention` after their end.
    pub fn session<K, V>(
        name: &str,
        retention: Duration,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> StoreBuilder<K, V> {
        StoreBuilder {
            spec: StoreSpec {
                name: Arc::from(name),
                kind: StoreKind::Session {
                    retention_ms: retention.as_millis() as i64,
                },
                backend: StoreBackend::Persistent,
                logged: true,
            },
            key,
            value,
        }
    }
}

impl<K, V> StoreBuilder<K, V> {
    /// Keep it in memory.
    pub fn in_memory(mut self) -> Self {
        self.spec.backend = StoreBackend::InMemory;
        self
    }
    /// No changelog.
    pub fn without_logging(mut self) -> Self {
        self.spec.logged = false;
        self
    }
}

/// Builds a topology with the typed DSL.
pub struct StreamsBuilder {
    pub(crate) b: Shared,
}

impl Default for StreamsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        StreamsBuilder {
            b: Rc::new(RefCell::new(BuilderState::default())),
        }
    }

    /// A stream of the records of `topic`.
    pub fn stream<K: Data, V: Data>(
        &self,
        topic: &str,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> KStream<K, V> {
        let topic = TopicRef::external(topic);
        let node = self.source_node(&topic, key.clone(), value.clone());
        KStream::new(
            self.b.clone(),
            node,
            Some(key),
            Some(value),
            false,
            vec![topic],
        )
    }

    fn source_node<K: Data, V: Data>(
        &self,
        topic: &TopicRef,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> usize {
        let mut b = self.b.borrow_mut();
        let name = b.name("KSTREAM-SOURCE");
        let factory: NodeFactory = Arc::new(move || {
            Box::new(SourceNode {
                key: key.clone(),
                value: value.clone(),
            })
        });
        b.add_node(
            name,
            Vec::new(),
            factory,
            Vec::new(),
            Some(topic.clone()),
            None,
        )
    }

    /// A table of the latest value per key of `topic` (null values delete), kept in a store.
    pub fn table<K: Data, V: Data>(
        &self,
        topic: &str,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
        materialized: Materialized<K, V>,
    ) -> KTable<K, V> {
        let topic_ref = TopicRef::external(topic);
        let source = self.source_node(&topic_ref, key.clone(), Serdes::optional(value.clone()));
        let store = materialized.store_name(&self.b, "KTABLE-SOURCE-STATE-STORE");
        let mut b = self.b.borrow_mut();
        b.add_store(
            materialized.spec(store.clone(), StoreKind::KeyValue),
            key.clone(),
            value.clone(),
            None,
        );
        let name = b.name("KTABLE-SOURCE");
        let store_name = store.clone();
        let factory = processor_factory::<_, K, Option<V>, K, crate::ops::Change<V>>(move || {
            TableMaterializer {
                store_name: store_name.clone(),
                store: None,
            }
        });
        let node = b.add_node(name, vec![source], factory, vec![store.clone()], None, None);
        drop(b);
        KTable::new(
            self.b.clone(),
            node,
            Some(key),
            Some(value),
            Some(store),
            vec![topic_ref],
            None,
        )
    }

    /// A table of `topic` replicated whole on every instance (every partition), for lookups by
    /// any key from any task. The topic itself is the store's changelog.
    pub fn global_table<K: Data, V: Data>(
        &self,
        topic: &str,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
        store_name: &str,
    ) -> GlobalKTable<K, V> {
        let spec = StoreSpec {
            name: Arc::from(store_name),
            kind: StoreKind::KeyValue,
            backend: StoreBackend::InMemory,
            logged: false,
        };
        self.b.borrow_mut().add_store(
            spec,
            key.clone(),
            value.clone(),
            Some(TopicRef::external(topic)),
        );
        GlobalKTable {
            store: Arc::from(store_name),
            key,
            value,
        }
    }

    /// Adds a store for processors of the processor API (connect it by name in
    /// [`KStream::process`]).
    pub fn add_state_store<K: 'static, V: 'static>(&self, store: StoreBuilder<K, V>) {
        self.b
            .borrow_mut()
            .add_store(store.spec, store.key, store.value, None);
    }

    /// The topology, or what is wrong with it.
    pub fn build(self) -> Result<Topology, TopologyError> {
        let state = std::mem::take(&mut *self.b.borrow_mut());
        if !state.errors.is_empty() {
            return Err(TopologyError(state.errors.join("; ")));
        }
        Topology::new(
            state.nodes,
            state.stores,
            state.repartitions,
            state.copartition,
        )
    }
}

//! The processor API: the [`Processor`] trait users implement for what the DSL cannot say, the
//! [`ProcessorContext`] it works through (forwarding, state stores, punctuators, record metadata),
//! and the erased node machinery the DSL's own operators run on.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::{Result, StoreError, StreamsError};
use crate::record::{Headers, OutRecord, Record};
use crate::state::StateStore;
use crate::store_api::{KeyValueStore, SessionStore, StoreSerdes, WindowStore};
use crate::topology::TaskId;

/// Data that can flow through a topology: cloned when one processor feeds several.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// When a punctuator fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunctuationType {
    /// When the task's stream time (the largest record timestamp it has seen) passes the next
    /// multiple of the interval: driven by data, deterministic on replay.
    StreamTime,
    /// Every interval of wall-clock time, data or not.
    WallClockTime,
}

/// Names a punctuator a processor scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PunctuatorId(pub(crate) u32);

/// A processor of records with keys `KIn` and values `VIn`, forwarding `KOut`/`VOut`.
///
/// One instance exists per task (per input partition); the runtime calls it from one thread at a
/// time. State belongs in state stores (connected by name when the processor is added), so it is
/// changelogged and restored.
pub trait Processor<KIn, VIn, KOut, VOut>: Send + 'static {
    /// Called once before the first record: look up stores, schedule punctuators.
    fn init(&mut self, ctx: &mut ProcessorContext<'_, '_, KOut, VOut>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// Called for each record.
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, KOut, VOut>,
        record: Record<KIn, VIn>,
    ) -> Result<()>;
    /// Called when punctuator `id` fires, with the stream time or wall-clock time that fired it.
    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, KOut, VOut>,
        id: PunctuatorId,
        time: i64,
    ) -> Result<()> {
        let _ = (ctx, id, time);
        Ok(())
    }
    /// Called when the task closes.
    fn close(&mut self) {}
}

/// Where the record being processed came from.
#[derive(Clone, Debug, Default)]
pub struct RecordMetadata {
    /// The source topic (`None` during a punctuation).
    pub topic: Option<Arc<str>>,
    /// The source partition.
    pub partition: i32,
    /// The source offset.
    pub offset: i64,
    /// The source record's timestamp.
    pub timestamp: i64,
    /// The source record's headers.
    pub headers: Headers,
}

pub(crate) struct Punctuator {
    pub(crate) node: usize,
    pub(crate) id: PunctuatorId,
    pub(crate) kind: PunctuationType,
    pub(crate) interval_ms: i64,
    pub(crate) next: Option<i64>,
}

/// A shared handle on a store: tasks write through it, interactive queries read through it.
pub(crate) type StoreRef = Arc<Mutex<StateStore>>;

/// A store with the serdes it was declared with (erased to `Any`), as a task holds it.
#[derive(Clone)]
pub(crate) struct TaskStore {
    pub(crate) store: StoreRef,
    pub(crate) serdes: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) global: bool,
}

/// Everything of a task except its processor instances.
pub(crate) struct TaskState {
    pub(crate) task: TaskId,
    pub(crate) app_id: Arc<str>,
    pub(crate) stores: HashMap<Arc<str>, TaskStore>,
    pub(crate) out: Vec<OutRecord>,
    pub(crate) meta: RecordMetadata,
    pub(crate) stream_time: i64,
    pub(crate) wall_clock_ms: i64,
    pub(crate) punctuators: Vec<Punctuator>,
    /// Records dropped because they were too late for their window (Kafka's dropped-records).
    pub(crate) dropped_late: u64,
}

/// The processor instances of one task, by node id (nodes of other subtopologies are `None`).
pub(crate) struct Graph {
    pub(crate) nodes: Vec<Option<RefCell<Box<dyn Node>>>>,
    pub(crate) children: Arc<Vec<Vec<usize>>>,
    pub(crate) names: Arc<Vec<String>>,
}

/// An erased processor: the input is an `Option<Record<K, V>>` (or a raw record for sources)
/// behind `dyn Any`, taken by the node.
pub(crate) trait Node: Send {
    fn init(&mut self, ctx: &mut Ctx<'_>) -> Result<()>;
    fn process(&mut self, ctx: &mut Ctx<'_>, input: &mut dyn Any) -> Result<()>;
    fn punctuate(&mut self, ctx: &mut Ctx<'_>, id: PunctuatorId, time: i64) -> Result<()>;
    fn close(&mut self);
}

/// A processor's view of its task while it runs.
pub(crate) struct Ctx<'a> {
    pub(crate) graph: &'a Graph,
    pub(crate) state: &'a mut TaskState,
    pub(crate) current: usize,
}

impl Ctx<'_> {
    /// Sends `record` to every child of the current node, depth first.
    pub(crate) fn forward<K: Data, V: Data>(&mut self, record: Record<K, V>) -> Result<()> {
        let graph = self.graph;
        let me = self.current;
        let children = &graph.children[me];
        let mut record = Some(record);
        for (i, &child) in children.iter().enumerate() {
            let mut slot = if i + 1 == children.len() {
                record.take()
            } else {
                record.clone()
            };
            self.dispatch(child, &mut slot)?;
        }
        Ok(())
    }

    /// Sends `record` to the `index`-th child only (branches).
    pub(crate) fn forward_to<K: Data, V: Data>(
        &mut self,
        index: usize,
        record: Record<K, V>,
    ) -> Result<()> {
        let graph = self.graph;
        let Some(&child) = graph.children[self.current].get(index) else {
            return Ok(());
        };
        self.dispatch(child, &mut Some(record))
    }

    fn dispatch(&mut self, child: usize, slot: &mut dyn Any) -> Result<()> {
        let graph = self.graph;
        let me = self.current;
        let node = graph.nodes[child]
            .as_ref()
            .expect("a child node is in its parent's subtopology");
        self.current = child;
        let result = node.borrow_mut().process(self, slot);
        self.current = me;
        result
    }

    pub(crate) fn node_name(&self) -> &str {
        &self.graph.names[self.current]
    }

    pub(crate) fn store(&self, name: &str) -> Result<&TaskStore> {
        self.state
            .stores
            .get(name)
            .ok_or_else(|| StoreError::NotConnected(name.to_string()).into())
    }

    pub(crate) fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> PunctuatorId {
        let id = PunctuatorId(self.state.punctuators.len() as u32);
        let interval_ms = (interval.as_millis() as i64).max(1);
        let next = match kind {
            PunctuationType::WallClockTime => Some(self.state.wall_clock_ms + interval_ms),
            PunctuationType::StreamTime => None,
        };
        self.state.punctuators.push(Punctuator {
            node: self.current,
            id,
            kind,
            interval_ms,
            next,
        });
        id
    }

    pub(crate) fn produce(&mut self, record: OutRecord) {
        self.state.out.push(record);
    }
}

/// The context a [`Processor`] works through: typed by what it forwards.
pub struct ProcessorContext<'c, 'a, KOut, VOut> {
    pub(crate) ctx: &'c mut Ctx<'a>,
    pub(crate) _out: PhantomData<fn(KOut, VOut)>,
}

impl<KOut: Data, VOut: Data> ProcessorContext<'_, '_, KOut, VOut> {
    /// Sends a record to every downstream processor.
    pub fn forward(&mut self, record: Record<KOut, VOut>) -> Result<()> {
        self.ctx.forward(record)
    }

    /// Sends a record to the `index`-th downstream processor only, in the order they were added.
    pub fn forward_to(&mut self, index: usize, record: Record<KOut, VOut>) -> Result<()> {
        self.ctx.forward_to(index, record)
    }

    /// Where the record being processed came from.
    pub fn record_metadata(&self) -> &RecordMetadata {
        &self.ctx.state.meta
    }

    /// The task's stream time: the largest record timestamp it has processed.
    pub fn stream_time(&self) -> i64 {
        self.ctx.state.stream_time
    }

    /// Wall-clock time in ms (the driver's mocked time under the test driver).
    pub fn wall_clock_ms(&self) -> i64 {
        self.ctx.state.wall_clock_ms
    }

    /// The task this processor instance belongs to.
    pub fn task_id(&self) -> TaskId {
        self.ctx.state.task
    }

    /// The application id (the prefix of internal topics).
    pub fn application_id(&self) -> &str {
        &self.ctx.state.app_id
    }

    /// Schedules a punctuator; [`Processor::punctuate`] receives its id.
    pub fn schedule(&mut self, interval: Duration, kind: PunctuationType) -> PunctuatorId {
        self.ctx.schedule(interval, kind)
    }

    /// A key-value store connected to this processor.
    pub fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<KeyValueStore<K, V>> {
        let (store, serdes) = self.typed::<K, V>(name)?;
        Ok(KeyValueStore::new(store, serdes))
    }

    /// A window store connected to this processor.
    pub fn window_store<K: 'static, V: 'static>(&self, name: &str) -> Result<WindowStore<K, V>> {
        let (store, serdes) = self.typed::<K, V>(name)?;
        Ok(WindowStore::new(store, serdes))
    }

    /// A session store connected to this processor.
    pub fn session_store<K: Clone + 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<SessionStore<K, V>> {
        let (store, serdes) = self.typed::<K, V>(name)?;
        Ok(SessionStore::new(store, serdes))
    }

    fn typed<K: 'static, V: 'static>(&self, name: &str) -> Result<(StoreRef, StoreSerdes<K, V>)> {
        let handle = self.ctx.store(name)?;
        let serdes = handle
            .serdes
            .as_ref()
            .and_then(|s| s.downcast_ref::<StoreSerdes<K, V>>())
            .cloned()
            .ok_or_else(|| StreamsError::Processor {
                processor: self.ctx.node_name().to_string(),
                message: format!(
                    "state store {name} holds other key/value types than {} / {}",
                    std::any::type_name::<K>(),
                    std::any::type_name::<V>()
                ),
            })?;
        Ok((handle.store.clone(), serdes))
    }
}

/// Runs a typed [`Processor`] as a node.
pub(crate) struct ProcessorNode<P, KIn, VIn, KOut, VOut> {
    pub(crate) processor: P,
    pub(crate) _types: PhantomData<fn(KIn, VIn, KOut, VOut)>,
}

impl<P, KIn, VIn, KOut, VOut> ProcessorNode<P, KIn, VIn, KOut, VOut> {
    pub(crate) fn boxed(processor: P) -> Box<dyn Node>
    where
        P: Processor<KIn, VIn, KOut, VOut>,
        KIn: Data,
        VIn: Data,
        KOut: Data,
        VOut: Data,
    {
        Box::new(ProcessorNode {
            processor,
            _types: PhantomData,
        })
    }
}

impl<P, KIn, VIn, KOut, VOut> Node for ProcessorNode<P, KIn, VIn, KOut, VOut>
where
    P: Processor<KIn, VIn, KOut, VOut>,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    fn init(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.processor.init(&mut ProcessorContext {
            ctx,
            _out: PhantomData,
        })
    }

    fn process(&mut self, ctx: &mut Ctx<'_>, input: &mut dyn Any) -> Result<()> {
        let record = input
            .downcast_mut::<Option<Record<KIn, VIn>>>()
            .and_then(Option::take)
            .expect("the typed DSL connects nodes of matching types");
        self.processor.process(
            &mut ProcessorContext {
                ctx,
                _out: PhantomData,
            },
            record,
        )
    }

    fn punctuate(&mut self, ctx: &mut Ctx<'_>, id: PunctuatorId, time: i64) -> Result<()> {
        self.processor.punctuate(
            &mut ProcessorContext {
                ctx,
                _out: PhantomData,
            },
            id,
            time,
        )
    }

    fn close(&mut self) {
        self.processor.close();
    }
}

/// A processor made of a closure: `FnMut(ctx, record)`.
pub(crate) struct FnProcessor<F>(pub(crate) F);

impl<F, KIn, VIn, KOut, VOut> Processor<KIn, VIn, KOut, VOut> for FnProcessor<F>
where
    F: FnMut(&mut ProcessorContext<'_, '_, KOut, VOut>, Record<KIn, VIn>) -> Result<()>
        + Send
        + 'static,
    KIn: Data,
    VIn: Data,
    KOut: Data,
    VOut: Data,
{
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, KOut, VOut>,
        record: Record<KIn, VIn>,
    ) -> Result<()> {
        (self.0)(ctx, record)
    }
}

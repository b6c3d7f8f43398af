//! A stream thread: one group consumer, one producer (transactional under exactly-once), the
//! tasks of the partitions assigned to it, and the loop that restores, processes, punctuates and
//! commits them.
//!
//! The tasks live behind a mutex shared with the consumer's rebalance callbacks, which librdkafka
//! calls from inside `poll` on this same thread: the loop never holds the mutex while polling, so
//! a revocation can commit and close the tasks it takes away before the partitions move.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{
    BorrowedMessage, Header as KafkaHeader, Headers as _, Message, OwnedHeaders,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::Shared;
use crate::error::{Result, StreamsError};
use crate::processor::{PunctuationType, StoreRef};
use crate::record::{Header, OutRecord, RawRecord};
use crate::task::Task;
use crate::topology::TaskId;

/// A task queue past this many records pauses its partition; below half it resumes. A pause
/// makes librdkafka drop what it prefetched for the partition, to fetch and parse it again after
/// the resume: the consumer's prefetch (`queued.min.messages`) is kept to the same bound so a
/// pause wastes at most that much, once per QUEUE_HIGH / 2 records processed.
const QUEUE_HIGH: usize = 10_000;
/// A task whose queues hold more than this many bytes of keys and values pauses the partition
/// that pushed it over, whatever the record count (records may be up to the broker's size
/// limit); below half it resumes.
const QUEUE_HIGH_BYTES: usize = 64 << 20;
/// Records one poll round takes from the consumer at most.
const POLL_BATCH: usize = 2_000;
/// Records a task processes before the next task's turn.
const TASK_TURN: usize = 200;
/// Redb commits between checkpoints are not fsynced; one in this interval is.
const DURABLE_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where the producer's delivery reports go: errors, and the last offset written to each
/// changelog partition (a store's checkpoint).
#[derive(Default)]
pub(crate) struct Deliveries {
    index: HashMap<(Arc<str>, i32), usize>,
    last_offset: Vec<Option<i64>>,
    error: Option<KafkaError>,
}

impl Deliveries {
    fn slot(&mut self, topic: &Arc<str>, partition: i32) -> usize {
        if let Some(&i) = self.index.get(&(topic.clone(), partition)) {
            return i;
        }
        self.last_offset.push(None);
        self.index
            .insert((topic.clone(), partition), self.last_offset.len() - 1);
        self.last_offset.len() - 1
    }
    fn last(&self, topic: &Arc<str>, partition: i32) -> Option<i64> {
        self.index
            .get(&(topic.clone(), partition))
            .and_then(|&i| self.last_offset[i])
    }
}

pub(crate) struct ProducerCtx {
    deliveries: Arc<Mutex<Deliveries>>,
}

impl ClientContext for ProducerCtx {}

impl ProducerContext for ProducerCtx {
    /// 0 for output records; `i + 1` for changelog slot `i`.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, opaque: usize) {
        let mut d = self.deliveries.lock();
        match result {
            Ok(m) if opaque > 0 => {
                let slot = &mut d.last_offset[opaque - 1];
                *slot = Some(slot.map_or(m.offset(), |o| o.max(m.offset())));
            }
            Ok(_) => {}
            Err((e, _)) => {
                d.error.get_or_insert(e.clone());
            }
        }
    }
}

pub(crate) struct ConsumerCtx {
    inner: Arc<Mutex<Inner>>,
    shared: Arc<Shared>,
    index: usize,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, statistics: Statistics) {
        let mut lag = self.shared.metrics.lag.lock();
        lag.retain(|(thread, _, _), _| *thread != self.index);
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    lag.insert((self.index, topic.clone(), partition), p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut inner = self.inner.lock();
            if let Err(e) = inner.on_revoke(consumer, tpl) {
                inner.fail(e);
            }
        }
    }
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut inner = self.inner.lock();
                if let Err(e) = inner.on_assign(consumer, tpl) {
                    inner.fail(e);
                }
            }
            Rebalance::Error(e) => tracing::warn!(thread = self.index, "rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

type GroupConsumer = BaseConsumer<ConsumerCtx>;

/// A changelog partition a task is replaying into a store.
struct Restoring {
    store: StoreRef,
    topic: Arc<str>,
    partition: i32,
    end: i64,
}

struct ActiveTask {
    task: Task,
    /// Input partitions: topic -> queued records and the next offset to commit.
    queues: HashMap<Arc<str>, VecDeque<RawRecord>>,
    next_offsets: HashMap<Arc<str>, i64>,
    partition: i32,
    restoring: Vec<Restoring>,
    paused: HashSet<Arc<str>>,
    /// Bytes of keys and values in `queues`.
    queued_bytes: usize,
}

impl ActiveTask {
    /// The queue whose head record has the smallest timestamp (Kafka Streams' choice among a
    /// task's partitions).
    fn next_queue(&self) -> Option<Arc<str>> {
        self.queues
            .iter()
            .filter_map(|(t, q)| q.front().map(|r| (r.timestamp, t)))
            .min()
            .map(|(_, t)| t.clone())
    }
}

/// The thread's state, shared with the rebalance callbacks.
pub(crate) struct Inner {
    shared: Arc<Shared>,
    index: usize,
    transactional_id: String,
    producer: BaseProducer<ProducerCtx>,
    deliveries: Arc<Mutex<Deliveries>>,
    restore: BaseConsumer,
    tasks: BTreeMap<TaskId, ActiveTask>,
    in_transaction: bool,
    dirty: bool,
    last_commit: Instant,
    last_durable: Instant,
    assigned_once: bool,
    failure: Option<StreamsError>,
    /// The error of a send the producer refused because it is in a fatal state (fenced when
    /// its transaction timed out while this process was stopped, say): the next step rewinds
    /// to the last commit with a new producer, so what was not sent is processed again.
    broken_producer: Option<KafkaError>,
}

fn kafka(context: &str) -> impl FnOnce(KafkaError) -> StreamsError + '_ {
    move |e| StreamsError::kafka(context, e)
}

impl Inner {
    fn new(shared: Arc<Shared>, index: usize) -> Result<Inner> {
        let config = &shared.config;
        let transactional_id = format!("{}-{}-{}", config.application_id, shared.process_id, index);
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let producer = Self::make_producer(&shared, &transactional_id, deliveries.clone())?;
        let restore: BaseConsumer = config
            .assigned_consumer("restore")
            .create()
            .map_err(kafka("creating the restore consumer"))?;
        Ok(Inner {
            shared,
            index,
            transactional_id,
            producer,
            deliveries,
            restore,
            tasks: BTreeMap::new(),
            in_transaction: false,
            dirty: false,
            last_commit: Instant::now(),
            last_durable: Instant::now(),
            assigned_once: false,
            failure: None,
            broken_producer: None,
        })
    }

    fn make_producer(
        shared: &Shared,
        transactional_id: &str,
        deliveries: Arc<Mutex<Deliveries>>,
    ) -> Result<BaseProducer<ProducerCtx>> {
        let config = &shared.config;
        let mut c = config.base_client();
        c.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .set(
                "message.timeout.ms",
                (config.request_timeout.as_millis() as u64).to_string(),
            );
        if config.exactly_once() {
            // librdkafka requires a message to time out before its transaction does.
            let timeout = config.request_timeout.min(config.transaction_timeout);
            c.set(
                "message.timeout.ms",
                (timeout.as_millis() as u64).to_string(),
            );
        }
        if config.exactly_once() {
            c.set("transactional.id", transactional_id).set(
                "transaction.timeout.ms",
                (config.transaction_timeout.as_millis() as u64).to_string(),
            );
        }
        let producer: BaseProducer<ProducerCtx> = c
            .create_with_context(ProducerCtx { deliveries })
            .map_err(kafka("creating the producer"))?;
        if config.exactly_once() {
            producer
                .init_transactions(config.request_timeout)
                .map_err(kafka("initializing transactions"))?;
        }
        Ok(producer)
    }

    fn fail(&mut self, e: StreamsError) {
        tracing::error!(thread = self.index, "stream thread failing: {e}");
        self.failure.get_or_insert(e);
    }

    fn timeout(&self) -> Duration {
        self.shared.config.request_timeout
    }

    /// Whether there is work that should not wait for a poll timeout.
    fn busy(&self) -> bool {
        self.tasks
            .values()
            .any(|t| !t.restoring.is_empty() || t.queues.values().any(|q| !q.is_empty()))
    }

    fn ready(&self) -> bool {
        self.assigned_once && self.tasks.values().all(|t| t.restoring.is_empty())
    }

    fn task_of(&self, topic: &str, partition: i32) -> Option<TaskId> {
        let (sub, _) = self
            .shared
            .topology
            .subtopology_of(&self.shared.config.application_id, topic)?;
        Some(TaskId {
            subtopology: sub,
            partition,
        })
    }

    fn on_assign(&mut self, consumer: &GroupConsumer, tpl: &TopicPartitionList) -> Result<()> {
        self.assigned_once = true;
        let mut new: BTreeMap<TaskId, Vec<Arc<str>>> = BTreeMap::new();
        for e in tpl.elements() {
            if let Some(id) = self.task_of(e.topic(), e.partition()) {
                new.entry(id).or_default().push(Arc::from(e.topic()));
            }
        }
        for (id, topics) in new {
            if let Some(task) = self.tasks.get_mut(&id) {
                for t in topics {
                    task.queues.entry(t).or_default();
                }
                continue;
            }
            tracing::info!(thread = self.index, task = %id, "task assigned");
            self.create_task(consumer, id, topics)?;
        }
        Ok(())
    }

    fn on_revoke(&mut self, consumer: &GroupConsumer, tpl: &TopicPartitionList) -> Result<()> {
        let revoked: HashSet<TaskId> = tpl
            .elements()
            .iter()
            .filter_map(|e| self.task_of(e.topic(), e.partition()))
            .collect();
        if revoked.is_empty() {
            return Ok(());
        }
        let committed = if consumer.assignment_lost() {
            tracing::warn!(
                thread = self.index,
                "assignment lost: closing tasks without committing"
            );
            self.abort_transaction();
            false
        } else {
            self.commit(consumer)?
        };
        for id in revoked {
            if let Some(task) = self.tasks.remove(&id) {
                tracing::info!(thread = self.index, task = %id, "task revoked");
                self.close_task(task, committed);
            }
        }
        Ok(())
    }

    fn task_dir(&self, id: TaskId) -> std::path::PathBuf {
        let c = &self.shared.config;
        c.state_dir.join(&c.application_id).join(id.to_string())
    }

    fn create_task(
        &mut self,
        consumer: &GroupConsumer,
        id: TaskId,
        topics: Vec<Arc<str>>,
    ) -> Result<()> {
        let shared = self.shared.clone();
        shared.claim(id);
        let app = &shared.config.application_id;
        let dir = self.task_dir(id);
        let mut stores = shared.topology.open_task_stores(id, app, Some(&dir))?;
        for (name, store) in &shared.globals {
            stores.insert(name.clone(), store.clone());
        }
        let mut restoring = Vec::new();
        for handle in stores.values().filter(|s| !s.global) {
            let mut store = handle.store.lock();
            let Some((topic, partition)) = store
                .changelog
                .as_ref()
                .map(|c| (c.topic.clone(), c.partition))
            else {
                continue;
            };
            let (low, high) = self
                .restore
                .fetch_watermarks(&topic, partition, self.timeout())
                .map_err(kafka("reading a changelog's offsets"))?;
            let mut from = store.inner.checkpoint();
            if from.is_some_and(|c| c > high || c < low) {
                tracing::warn!(task = %id, store = %store.name, "checkpoint outside the changelog: restoring from scratch");
                store.inner.wipe()?;
                from = None;
            }
            if from.unwrap_or(low) >= high {
                continue;
            }
            tracing::info!(task = %id, store = %store.name, records = high - from.unwrap_or(low), "restoring");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                &topic,
                partition,
                from.map_or(Offset::Beginning, Offset::Offset),
            )
            .map_err(kafka("restoring"))?;
            self.restore
                .incremental_assign(&tpl)
                .map_err(kafka("assigning a changelog"))?;
            self.shared
                .metrics
                .restore_remaining
                .fetch_add(high - from.unwrap_or(low), Ordering::Relaxed);
            restoring.push(Restoring {
                store: handle.store.clone(),
                topic,
                partition,
                end: high,
            });
        }
        let task = Task::new(
            &shared.topology,
            id,
            Arc::from(app.as_str()),
            stores,
            shared.config.deserialization_policy.clone(),
            now_ms(),
        )?;
        let mut active = ActiveTask {
            task,
            queues: topics.into_iter().map(|t| (t, VecDeque::new())).collect(),
            next_offsets: HashMap::new(),
            partition: id.partition,
            restoring,
            paused: HashSet::new(),
            queued_bytes: 0,
        };
        if active.restoring.is_empty() {
            self.shared.register(id, &active.task);
        } else {
            let topics: Vec<Arc<str>> = active.queues.keys().cloned().collect();
            let tpl = tpl_of(&topics, id.partition);
            consumer
                .pause(&tpl)
                .map_err(kafka("pausing a restoring task's input"))?;
            active.paused.extend(topics);
        }
        self.tasks.insert(id, active);
        Ok(())
    }

    /// Closes a task; `clean` when its state was just committed (stores flushed durably).
    fn close_task(&mut self, mut task: ActiveTask, clean: bool) {
        self.shared.unregister(task.task.id);
        if !task.restoring.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for r in &task.restoring {
                let _ = tpl.add_partition(&r.topic, r.partition);
            }
            let _ = self.restore.incremental_unassign(&tpl);
        }
        if clean {
            for handle in task.task.state.stores.values().filter(|s| !s.global) {
                let mut store = handle.store.lock();
                let checkpoint = store.inner.checkpoint();
                if let Err(e) = store.inner.commit(checkpoint, true) {
                    tracing::warn!(task = %task.task.id, "closing store {}: {e}", store.name);
                }
            }
        }
        task.task.close();
        let id = task.task.id;
        drop(task);
        // Only now are the store files closed: a standby may open them.
        self.shared.unclaim(id);
    }

    /// Routes polled records to their tasks' queues, pausing partitions whose queue is full.
    fn enqueue(&mut self, consumer: &GroupConsumer, records: Vec<RawRecord>) -> Result<()> {
        let mut pause = Vec::new();
        for r in records {
            let Some(id) = self.task_of(&r.topic, r.partition) else {
                continue;
            };
            let Some(task) = self.tasks.get_mut(&id) else {
                // A record of a partition revoked since it was fetched: the new owner reads it.
                continue;
            };
            let Some(queue) = task.queues.get_mut(&r.topic) else {
                continue;
            };
            let topic = r.topic.clone();
            task.queued_bytes += r.payload_len();
            queue.push_back(r);
            let full = queue.len() > QUEUE_HIGH || task.queued_bytes > QUEUE_HIGH_BYTES;
            if full && task.paused.insert(topic.clone()) {
                pause.push((topic, task.partition));
            }
        }
        if !pause.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &pause {
                tpl.add_partition(t, *p);
            }
            consumer.pause(&tpl).map_err(kafka("pausing input"))?;
        }
        Ok(())
    }

    fn ensure_transaction(&mut self) -> Result<()> {
        if self.shared.config.exactly_once() && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(kafka("beginning a transaction"))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn send(&mut self, record: OutRecord) -> Result<()> {
        self.ensure_transaction()?;
        self.dirty = true;
        let opaque = match &record.changelog_of {
            Some(_) => {
                let partition = record
                    .partition
                    .expect("changelog records name their partition");
                self.deliveries.lock().slot(&record.topic, partition) + 1
            }
            None => 0,
        };
        let mut r: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&record.topic, opaque).timestamp(record.timestamp);
        if let Some(k) = &record.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &record.value {
            r = r.payload(v.as_slice());
        }
        if let Some(p) = record.partition {
            r = r.partition(p);
        }
        if !record.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(record.headers.len());
            for header in &record.headers {
                h = h.insert(KafkaHeader {
                    key: &header.key,
                    value: header.value.as_deref(),
                });
            }
            r = r.headers(h);
        }
        let deadline = Instant::now() + self.timeout();
        loop {
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    self.producer.poll(Duration::from_millis(5));
                    r = back;
                }
                Err((e, _)) if self.producer.client().fatal_error().is_some() => {
                    self.broken_producer.get_or_insert(e);
                    return Ok(());
                }
                Err((e, _)) => {
                    return Err(StreamsError::kafka(
                        format!("producing to {}", record.topic),
                        e,
                    ))
                }
            }
        }
    }

    /// Restores, processes up to a round of records, punctuates, and commits when due.
    fn step(&mut self, consumer: &GroupConsumer) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        if let Some(e) = self.broken_producer.take() {
            tracing::warn!(
                thread = self.index,
                "the producer failed, rewinding to the last commit: {e}"
            );
            self.shared.metrics.aborted.fetch_add(1, Ordering::Relaxed);
            self.recover(consumer, &e)?;
        }
        self.restore_step(consumer)?;
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        let mut processed = 0u64;
        let mut resume = TopicPartitionList::new();
        let mut outputs = Vec::new();
        for id in ids {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            if !task.restoring.is_empty() {
                continue;
            }
            for _ in 0..TASK_TURN {
                let Some(topic) = task.next_queue() else {
                    break;
                };
                let record = task
                    .queues
                    .get_mut(&topic)
                    .and_then(VecDeque::pop_front)
                    .expect("non-empty queue");
                task.queued_bytes -= record.payload_len();
                let offset = record.offset;
                task.task.process(record)?;
                task.next_offsets.insert(topic, offset + 1);
                processed += 1;
                outputs.append(&mut task.task.take_output());
                outputs.append(&mut task.task.take_changelog(false));
            }
            task.task
                .punctuate(PunctuationType::WallClockTime, now_ms())?;
            outputs.append(&mut task.task.take_output());
            let partition = task.partition;
            let bytes_low = task.queued_bytes <= QUEUE_HIGH_BYTES / 2;
            task.paused.retain(|topic| {
                let low = bytes_low
                    && task
                        .queues
                        .get(topic)
                        .is_none_or(|q| q.len() <= QUEUE_HIGH / 2);
                if low {
                    let _ = resume.add_partition(topic, partition);
                }
                !low
            });
            for r in outputs.drain(..) {
                self.send(r)?;
            }
        }
        if resume.count() > 0 {
            consumer.resume(&resume).map_err(kafka("resuming input"))?;
        }
        if processed > 0 {
            self.dirty = true;
            self.shared
                .metrics
                .processed
                .fetch_add(processed, Ordering::Relaxed);
        }
        self.producer.poll(Duration::ZERO);
        if self.last_commit.elapsed() >= self.shared.config.commit_interval {
            self.commit(consumer)?;
        }
        Ok(())
    }

    fn restore_step(&mut self, consumer: &GroupConsumer) -> Result<()> {
        if self.tasks.values().all(|t| t.restoring.is_empty()) {
            return Ok(());
        }
        let mut applied = 0u64;
        let deadline = Instant::now() + Duration::from_millis(50);
        while Instant::now() < deadline {
            let Some(result) = self.restore.poll(Duration::from_millis(10)) else {
                break;
            };
            let m = match result {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => return Err(StreamsError::kafka("restoring from a changelog", e)),
            };
            let Some(target) = self
                .tasks
                .values()
                .flat_map(|t| t.restoring.iter())
                .find(|r| &*r.topic == m.topic() && r.partition == m.partition())
            else {
                continue;
            };
            if let Some(key) = m.key() {
                target
                    .store
                    .lock()
                    .restore(key.to_vec(), m.payload().map(<[u8]>::to_vec))?;
            }
            applied += 1;
        }
        self.shared
            .metrics
            .restored
            .fetch_add(applied, Ordering::Relaxed);
        self.shared
            .metrics
            .restore_remaining
            .fetch_sub(applied as i64, Ordering::Relaxed);
        let positions = self
            .restore
            .position()
            .map_err(kafka("reading restore positions"))?;
        let mut finished = TopicPartitionList::new();
        let mut ready = Vec::new();
        for (id, task) in self.tasks.iter_mut() {
            if task.restoring.is_empty() {
                continue;
            }
            let mut done_any = false;
            task.restoring.retain(|r| {
                let position = positions
                    .find_partition(&r.topic, r.partition)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(-1);
                if position >= r.end {
                    let mut store = r.store.lock();
                    if let Err(e) = store.inner.commit(Some(position), true) {
                        tracing::warn!("checkpointing restored store {}: {e}", store.name);
                    }
                    let _ = finished.add_partition(&r.topic, r.partition);
                    done_any = true;
                    false
                } else {
                    true
                }
            });
            if done_any && task.restoring.is_empty() {
                ready.push(*id);
            }
        }
        if finished.count() > 0 {
            self.restore
                .incremental_unassign(&finished)
                .map_err(kafka("unassigning restored changelogs"))?;
        }
        for id in ready {
            let task = self.tasks.get_mut(&id).expect("listed");
            tracing::info!(thread = self.index, task = %id, "task restored");
            let topics: Vec<Arc<str>> = task.paused.drain().collect();
            consumer
                .resume(&tpl_of(&topics, id.partition))
                .map_err(kafka("resuming a restored task"))?;
            let task = &self.tasks[&id];
            self.shared.register(id, &task.task);
        }
        Ok(())
    }

    /// Commits output, changelogs and input offsets; on failure rewinds every task to the last
    /// commit. Returns whether the commit succeeded.
    fn commit(&mut self, consumer: &GroupConsumer) -> Result<bool> {
        self.last_commit = Instant::now();
        let mut changelogs = Vec::new();
        for task in self.tasks.values_mut() {
            changelogs.append(&mut task.task.take_changelog(true));
        }
        for r in changelogs {
            self.send(r)?;
        }
        if !self.dirty {
            return Ok(true);
        }
        let started = Instant::now();
        match self.try_commit(consumer) {
            Ok(()) => {
                self.dirty = false;
                self.checkpoint_stores()?;
                self.shared
                    .metrics
                    .commit_took(started.elapsed().as_micros() as u64);
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(
                    thread = self.index,
                    "commit failed, rewinding to the last commit: {e}"
                );
                self.shared.metrics.aborted.fetch_add(1, Ordering::Relaxed);
                self.recover(consumer, &e)?;
                Ok(false)
            }
        }
    }

    fn offsets(&self) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for task in self.tasks.values() {
            for (topic, offset) in &task.next_offsets {
                tpl.add_partition_offset(topic, task.partition, Offset::Offset(*offset))
                    .map_err(kafka("building offsets"))?;
            }
        }
        Ok(tpl)
    }

    fn try_commit(&mut self, consumer: &GroupConsumer) -> std::result::Result<(), KafkaError> {
        let timeout = self.timeout();
        let offsets = self.offsets().map_err(|_| KafkaError::Canceled)?;
        self.producer.flush(timeout)?;
        if let Some(e) = self.deliveries.lock().error.take() {
            return Err(e);
        }
        if self.shared.config.exactly_once() {
            if !self.in_transaction {
                self.producer.begin_transaction()?;
                self.in_transaction = true;
            }
            if offsets.count() > 0 {
                let metadata = consumer.group_metadata().ok_or(KafkaError::Canceled)?;
                self.producer
                    .send_offsets_to_transaction(&offsets, &metadata, timeout)?;
            }
            self.producer.commit_transaction(timeout)?;
            self.in_transaction = false;
        } else if offsets.count() > 0 {
            consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
        }
        Ok(())
    }

    /// After a commit: each store's state is durable up to its changelog's last written offset.
    fn checkpoint_stores(&mut self) -> Result<()> {
        let durable = self.last_durable.elapsed() >= DURABLE_INTERVAL;
        if durable {
            self.last_durable = Instant::now();
        }
        let deliveries = self.deliveries.lock();
        for task in self.tasks.values().filter(|t| t.restoring.is_empty()) {
            for handle in task.task.state.stores.values().filter(|s| !s.global) {
                let mut store = handle.store.lock();
                let written = store
                    .changelog
                    .as_ref()
                    .and_then(|c| deliveries.last(&c.topic, c.partition));
                let checkpoint = written.map(|o| o + 1).or(store.inner.checkpoint());
                store.inner.commit(checkpoint, durable)?;
            }
        }
        Ok(())
    }

    fn abort_transaction(&mut self) {
        if self.in_transaction {
            if let Err(e) = self.producer.abort_transaction(self.timeout()) {
                tracing::warn!(thread = self.index, "aborting a transaction: {e}");
            }
            self.in_transaction = false;
        }
    }

    /// Rewinds after a failed commit: aborts the transaction (or, when the producer is fenced or
    /// broken, replaces it), then rebuilds every task from its changelog and seeks its input back
    /// to the committed offsets.
    fn recover(&mut self, consumer: &GroupConsumer, error: &KafkaError) -> Result<()> {
        // A failed delivery (InvalidProducerEpoch) can leave the producer fatally fenced without
        // the commit's own error saying so: ask the producer too.
        let mut fatal = matches!(error, KafkaError::Transaction(e) if e.is_fatal())
            || self.producer.client().fatal_error().is_some();
        if self.shared.config.exactly_once() && !fatal {
            self.abort_transaction();
            fatal = self.producer.client().fatal_error().is_some();
        }
        if fatal {
            self.in_transaction = false;
            self.producer = Self::make_producer(
                &self.shared,
                &self.transactional_id,
                self.deliveries.clone(),
            )?;
        }
        self.broken_producer = None;
        self.dirty = false;
        // Serve the delivery reports of what the abort purged before forgetting errors, so they
        // do not fail the next commit.
        let _ = self.producer.flush(Duration::from_secs(1));
        {
            let mut d = self.deliveries.lock();
            d.error = None;
            d.last_offset.iter_mut().for_each(|o| *o = None);
        }
        let ids: Vec<(TaskId, Vec<Arc<str>>)> = self
            .tasks
            .iter()
            .map(|(id, t)| (*id, t.queues.keys().cloned().collect()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for (id, topics) in &ids {
            for t in topics {
                tpl.add_partition(t, id.partition);
            }
        }
        for (id, _) in &ids {
            let task = self.tasks.remove(id).expect("listed");
            self.close_task(task, false);
        }
        for (id, topics) in ids {
            self.create_task(consumer, id, topics)?;
        }
        if tpl.count() > 0 {
            let committed = consumer
                .committed_offsets(tpl, self.timeout())
                .map_err(kafka("reading committed offsets"))?;
            let mut seek = TopicPartitionList::new();
            for e in committed.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                seek.add_partition_offset(e.topic(), e.partition(), offset)
                    .map_err(kafka("seeking"))?;
            }
            consumer
                .seek_partitions(seek, self.timeout())
                .map_err(kafka("seeking back to committed offsets"))?;
        }
        Ok(())
    }

    fn shutdown(&mut self, consumer: &GroupConsumer) {
        if let Err(e) = self.commit(consumer) {
            tracing::warn!(thread = self.index, "final commit: {e}");
        }
        let tasks = std::mem::take(&mut self.tasks);
        for (_, task) in tasks {
            self.close_task(task, true);
        }
        let _ = self.producer.flush(self.timeout());
    }
}

fn tpl_of(topics: &[Arc<str>], partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        tpl.add_partition(t, partition);
    }
    tpl
}

fn raw_record(m: &BorrowedMessage<'_>) -> RawRecord {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    RawRecord {
        topic: Arc::from(m.topic()),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis().unwrap_or(-1),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Runs stream thread `index` until shutdown or a fatal error.
pub(crate) fn run(shared: Arc<Shared>, index: usize) -> Result<()> {
    let inner = Arc::new(Mutex::new(Inner::new(shared.clone(), index)?));
    let config = &shared.config;
    let mut c = config.base_client();
    c.set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            (config.session_timeout.as_millis() as u64).to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            ((config.session_timeout.as_millis() as u64) / 5)
                .max(100)
                .to_string(),
        )
        .set("statistics.interval.ms", "1000")
        .set("queued.min.messages", QUEUE_HIGH.to_string())
        .set(
            "partition.assignment.strategy",
            // Partition p of every topic of a multi-topic subtopology must land on one member:
            // the range assignor guarantees it for equal partition counts; cooperative-sticky
            // does not, so it is used only when every subtopology reads one topic.
            if shared.topology.has_multi_source_subtopology() {
                "range"
            } else {
                "cooperative-sticky"
            },
        )
        .set("isolation.level", config.isolation_level());
    let consumer: GroupConsumer = c
        .create_with_context(ConsumerCtx {
            inner: inner.clone(),
            shared: shared.clone(),
            index,
        })
        .map_err(kafka("creating the consumer"))?;
    let topics: Vec<&str> = shared
        .plan
        .source_topics
        .iter()
        .map(String::as_str)
        .collect();
    consumer.subscribe(&topics).map_err(kafka("subscribing"))?;
    let result = (|| -> Result<()> {
        while !shared.shutdown.load(Ordering::Acquire) {
            let busy = inner.lock().busy();
            let mut records = Vec::new();
            let mut timeout = if busy {
                Duration::ZERO
            } else {
                Duration::from_millis(50)
            };
            while records.len() < POLL_BATCH {
                match consumer.poll(timeout) {
                    Some(Ok(m)) => records.push(raw_record(&m)),
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => {
                        tracing::warn!(thread = index, "consumer: {e}");
                        break;
                    }
                    None => break,
                }
                timeout = Duration::ZERO;
            }
            let mut g = inner.lock();
            g.enqueue(&consumer, records)?;
            g.step(&consumer)?;
            shared.set_ready(index, g.ready());
        }
        Ok(())
    })();
    inner.lock().shutdown(&consumer);
    // Leave the group now (revocation commits nothing more: the tasks are closed).
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && consumer.poll(Duration::from_millis(50)).is_some() {}
    drop(consumer);
    shared.set_ready(index, false);
    result
}

//! A deterministic, in-process driver for unit-testing topologies without a broker (Kafka's
//! `TopologyTestDriver`): records piped into input topics run through every task synchronously,
//! repartition topics feed their readers at once, outputs are collected per topic, and
//! wall-clock time only moves when the test moves it.
//!
//! Every topic has one partition, so there is one task per subtopology; stores are in memory.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Result, StreamsError};
use crate::processor::{PunctuationType, TaskStore};
use crate::record::{Headers, OutRecord, RawRecord, Record};
use crate::serde::{to_bytes, SerdeRef};
use crate::store_api::{KeyValueStore, SessionStore, StoreSerdes, WindowStore};
use crate::task::{DeserializationPolicy, Task, TaskCounters};
use crate::topology::{TaskId, Topology};

/// How the driver runs the topology.
#[derive(Clone, Debug)]
pub struct TestDriverConfig {
    /// The application id (the prefix of internal topic names).
    pub application_id: String,
    /// What to do with records that do not deserialize.
    pub deserialization_policy: DeserializationPolicy,
    /// The wall-clock time the driver starts at, in ms.
    pub initial_wall_clock_ms: i64,
}

impl Default for TestDriverConfig {
    fn default() -> Self {
        TestDriverConfig {
            application_id: "test-driver".to_string(),
            deserialization_policy: DeserializationPolicy::Fail,
            initial_wall_clock_ms: 0,
        }
    }
}

struct DriverInner {
    topology: Topology,
    app_id: Arc<str>,
    tasks: BTreeMap<u32, Task>,
    globals: HashMap<Arc<str>, TaskStore>,
    /// Global topic -> its store.
    global_topics: HashMap<String, Arc<str>>,
    outputs: HashMap<String, VecDeque<OutRecord>>,
    next_offset: HashMap<String, i64>,
    wall_clock_ms: i64,
}

impl DriverInner {
    fn pipe(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        headers: Headers,
    ) -> Result<()> {
        if let Some(store) = self.global_topics.get(topic) {
            let Some(key) = key else {
                return Ok(());
            };
            let mut store = self.globals[store].store.lock();
            match value {
                Some(v) => store.put(key, v)?,
                None => store.delete(&key)?,
            }
            return Ok(());
        }
        let mut queue = VecDeque::new();
        queue.push_back(self.raw(topic, key, value, timestamp, headers));
        while let Some(raw) = queue.pop_front() {
            let Some((sub, _)) = self.topology.subtopology_of(&self.app_id, &raw.topic) else {
                return Err(StreamsError::Config(format!(
                    "no source reads topic {}",
                    raw.topic
                )));
            };
            let task = self.tasks.get_mut(&sub).expect("a task per subtopology");
            task.process(raw)?;
            let out = task.take_output();
            self.route(out, &mut queue);
        }
        self.collect_changelogs();
        Ok(())
    }

    fn raw(
        &mut self,
        topic: &str,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        headers: Headers,
    ) -> RawRecord {
        let offset = self.next_offset.entry(topic.to_string()).or_insert(0);
        let raw = RawRecord {
            topic: Arc::from(topic),
            partition: 0,
            offset: *offset,
            timestamp,
            key,
            value,
            headers,
        };
        *offset += 1;
        raw
    }

    fn route(&mut self, out: Vec<OutRecord>, queue: &mut VecDeque<RawRecord>) {
        for record in out {
            if self
                .topology
                .subtopology_of(&self.app_id, &record.topic)
                .is_some()
            {
                let raw = self.raw(
                    &record.topic.clone(),
                    record.key.clone(),
                    record.value.clone(),
                    record.timestamp,
                    record.headers.clone(),
                );
                queue.push_back(raw);
            }
            self.outputs
                .entry(record.topic.to_string())
                .or_default()
                .push_back(record);
        }
    }

    fn collect_changelogs(&mut self) {
        for task in self.tasks.values_mut() {
            for record in task.take_changelog(true) {
                self.outputs
                    .entry(record.topic.to_string())
                    .or_default()
                    .push_back(record);
            }
        }
    }

    fn advance_wall_clock(&mut self, by: Duration) -> Result<()> {
        self.wall_clock_ms += by.as_millis() as i64;
        let now = self.wall_clock_ms;
        let mut queue = VecDeque::new();
        let subs: Vec<u32> = self.tasks.keys().copied().collect();
        for sub in subs {
            let task = self.tasks.get_mut(&sub).expect("listed");
            task.punctuate(PunctuationType::WallClockTime, now)?;
            let out = task.take_output();
            self.route(out, &mut queue);
        }
        while let Some(raw) = queue.pop_front() {
            let (sub, _) = self
                .topology
                .subtopology_of(&self.app_id, &raw.topic)
                .expect("routed only when read");
            let task = self.tasks.get_mut(&sub).expect("a task per subtopology");
            task.process(raw)?;
            let out = task.take_output();
            self.route(out, &mut queue);
        }
        self.collect_changelogs();
        Ok(())
    }

    fn store(&self, name: &str) -> Option<TaskStore> {
        self.tasks
            .values()
            .find_map(|t| t.state.stores.get(name).filter(|s| !s.global).cloned())
            .or_else(|| self.globals.get(name).cloned())
    }
}

/// Runs a topology in-process for tests.
pub struct TopologyTestDriver {
    inner: Rc<RefCell<DriverInner>>,
}

impl TopologyTestDriver {
    /// A driver with the default configuration.
    pub fn new(topology: Topology) -> Result<TopologyTestDriver> {
        Self::with_config(topology, TestDriverConfig::default())
    }

    /// A driver with `config`.
    pub fn with_config(topology: Topology, config: TestDriverConfig) -> Result<TopologyTestDriver> {
        let app_id: Arc<str> = Arc::from(config.application_id.as_str());
        let globals = topology.open_global_stores(None)?;
        let global_topics = topology
            .inner
            .stores
            .iter()
            .filter_map(|s| {
                s.global_source
                    .as_ref()
                    .map(|t| (t.resolve(&app_id), s.spec.name.clone()))
            })
            .collect();
        let mut tasks = BTreeMap::new();
        for sub in &topology.inner.subtopologies {
            let id = TaskId {
                subtopology: sub.id,
                partition: 0,
            };
            let mut stores = topology.open_task_stores(id, &app_id, None)?;
            for (name, store) in &globals {
                stores.insert(name.clone(), store.clone());
            }
            let task = Task::new(
                &topology,
                id,
                app_id.clone(),
                stores,
                config.deserialization_policy.clone(),
                config.initial_wall_clock_ms,
            )?;
            tasks.insert(sub.id, task);
        }
        Ok(TopologyTestDriver {
            inner: Rc::new(RefCell::new(DriverInner {
                topology,
                app_id,
                tasks,
                globals,
                global_topics,
                outputs: HashMap::new(),
                next_offset: HashMap::new(),
                wall_clock_ms: config.initial_wall_clock_ms,
            })),
        })
    }

    /// A handle to pipe records into `topic`.
    pub fn input_topic<K, V>(
        &self,
        topic: &str,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> TestInputTopic<K, V> {
        TestInputTopic {
            driver: self.inner.clone(),
            topic: topic.to_string(),
            key,
            value,
            time_ms: 0,
        }
    }

    /// A handle to read what the topology wrote to `topic` (internal topics by their full name:
    /// `<application.id>-<name>-repartition` or `-changelog`).
    pub fn output_topic<K, V>(
        &self,
        topic: &str,
        key: SerdeRef<K>,
        value: SerdeRef<V>,
    ) -> TestOutputTopic<K, V> {
        TestOutputTopic {
            driver: self.inner.clone(),
            topic: topic.to_string(),
            key,
            value,
        }
    }

    /// Moves wall-clock time forward, firing wall-clock punctuators that fall due.
    pub fn advance_wall_clock(&self, by: Duration) -> Result<()> {
        self.inner.borrow_mut().advance_wall_clock(by)
    }

    /// A key-value store of the topology (task or global).
    pub fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Option<KeyValueStore<K, V>> {
        let (store, serdes) = self.typed::<K, V>(name)?;
        Some(KeyValueStore::new(store, serdes))
    }

    /// A window store of the topology.
    pub fn window_store<K: 'static, V: 'static>(&self, name: &str) -> Option<WindowStore<K, V>> {
        let (store, serdes) = self.typed::<K, V>(name)?;
        Some(WindowStore::new(store, serdes))
    }

    /// A session store of the topology.
    pub fn session_store<K: Clone + 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Option<SessionStore<K, V>> {
        let (store, serdes) = self.typed::<K, V>(name)?;
        Some(SessionStore::new(store, serdes))
    }

    fn typed<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Option<(crate::processor::StoreRef, StoreSerdes<K, V>)> {
        let handle = self.inner.borrow().store(name)?;
        let serdes = handle
            .serdes
            .as_ref()?
            .downcast_ref::<StoreSerdes<K, V>>()?
            .clone();
        Some((handle.store, serdes))
    }

    /// What the tasks skipped and dropped, summed.
    pub fn counters(&self) -> TaskCounters {
        let inner = self.inner.borrow();
        let mut sum = TaskCounters::default();
        for t in inner.tasks.values() {
            sum.processed += t.counters.processed;
            sum.skipped_deserialization += t.counters.skipped_deserialization;
            sum.skipped_invalid_timestamp += t.counters.skipped_invalid_timestamp;
            sum.dropped_late += t.counters.dropped_late;
        }
        sum
    }
}

impl Drop for TopologyTestDriver {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            for task in inner.tasks.values_mut() {
                task.close();
            }
        }
    }
}

/// Pipes typed records into a topic of a [`TopologyTestDriver`].
pub struct TestInputTopic<K, V> {
    driver: Rc<RefCell<DriverInner>>,
    topic: String,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
    time_ms: i64,
}

impl<K: 'static, V: 'static> TestInputTopic<K, V> {
    /// Pipes a record stamped with this topic's current time.
    pub fn pipe_input(&mut self, key: K, value: V) -> Result<()> {
        self.pipe_input_at(key, value, self.time_ms)
    }

    /// Pipes a record with timestamp `timestamp_ms` (and moves this topic's time there).
    pub fn pipe_input_at(&mut self, key: K, value: V, timestamp_ms: i64) -> Result<()> {
        let error = |part, source| StreamsError::Serialization {
            topic: self.topic.clone(),
            part,
            source,
        };
        let k = self
            .key
            .serialize(&self.topic, &key)
            .map_err(|e| error("key", e))?;
        let v = self
            .value
            .serialize(&self.topic, &value)
            .map_err(|e| error("value", e))?;
        self.time_ms = self.time_ms.max(timestamp_ms);
        self.driver
            .borrow_mut()
            .pipe(&self.topic, k, v, timestamp_ms, Vec::new())
    }

    /// Pipes a null value for `key` (a tombstone for tables).
    pub fn pipe_tombstone_at(&mut self, key: K, timestamp_ms: i64) -> Result<()> {
        let k = to_bytes(&*self.key, &self.topic, &key).map_err(|source| {
            StreamsError::Serialization {
                topic: self.topic.clone(),
                part: "key",
                source,
            }
        })?;
        self.driver
            .borrow_mut()
            .pipe(&self.topic, Some(k), None, timestamp_ms, Vec::new())
    }

    /// Pipes raw bytes (e.g. a value no serde accepts).
    pub fn pipe_raw(
        &mut self,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp_ms: i64,
    ) -> Result<()> {
        self.driver
            .borrow_mut()
            .pipe(&self.topic, key, value, timestamp_ms, Vec::new())
    }

    /// Moves this topic's time forward for later records.
    pub fn advance_time(&mut self, by: Duration) {
        self.time_ms += by.as_millis() as i64;
    }
}

/// Reads typed records a topology wrote to a topic.
pub struct TestOutputTopic<K, V> {
    driver: Rc<RefCell<DriverInner>>,
    topic: String,
    key: SerdeRef<K>,
    value: SerdeRef<V>,
}

impl<K: 'static, V: 'static> TestOutputTopic<K, V> {
    /// The next record, or `None` when everything was read. Panics when it does not deserialize
    /// with this topic's serdes (a test failure).
    pub fn read_record(&self) -> Option<Record<K, V>> {
        let out = self
            .driver
            .borrow_mut()
            .outputs
            .get_mut(&self.topic)?
            .pop_front()?;
        let key = self
            .key
            .deserialize(&self.topic, out.key.as_deref())
            .unwrap_or_else(|e| panic!("key written to {} does not deserialize: {e}", self.topic));
        let value = self
            .value
            .deserialize(&self.topic, out.value.as_deref())
            .unwrap_or_else(|e| {
                panic!("value written to {} does not deserialize: {e}", self.topic)
            });
        Some(Record {
            key,
            value,
            timestamp: out.timestamp,
            headers: out.headers,
        })
    }

    /// The next key and value.
    pub fn read_key_value(&self) -> Option<(K, V)> {
        self.read_record().map(|r| (r.key, r.value))
    }

    /// Every remaining key and value, in order.
    pub fn read_key_values(&self) -> Vec<(K, V)> {
        std::iter::from_fn(|| self.read_key_value()).collect()
    }

    /// Every remaining record, in order.
    pub fn read_records(&self) -> Vec<Record<K, V>> {
        std::iter::from_fn(|| self.read_record()).collect()
    }

    /// The latest value per key among the remaining records.
    pub fn read_key_values_to_map(&self) -> std::collections::HashMap<K, V>
    where
        K: std::hash::Hash + Eq,
    {
        self.read_key_values().into_iter().collect()
    }

    /// Whether everything written was read.
    pub fn is_empty(&self) -> bool {
        self.driver
            .borrow()
            .outputs
            .get(&self.topic)
            .is_none_or(|q| q.is_empty())
    }

    /// The headers of the next record without reading it.
    pub fn peek_headers(&self) -> Option<Headers> {
        self.driver
            .borrow()
            .outputs
            .get(&self.topic)?
            .front()
            .map(|r| r.headers.clone())
    }
}

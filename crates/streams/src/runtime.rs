//! The runtime: [`KafkaStreams`] runs a topology against a Kafka-compatible broker with several
//! stream threads, keeps global stores current, exposes metrics and interactive queries, and
//! shuts down cleanly.

pub(crate) mod config;
mod global;
pub(crate) mod metrics;
mod setup;
mod standby;
mod thread;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Result, StreamsError};
use crate::processor::TaskStore;
use crate::store_api::{KeyValueStore, SessionStore, StoreSerdes, WindowStore};
use crate::task::Task;
use crate::topology::{TaskId, Topology};
use crate::windows::Windowed;
use config::StreamsConfig;
use metrics::{Metrics, MetricsSnapshot};

/// An application's state, as Kafka Streams names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Created,
    /// Threads are joining the group, being assigned partitions, or restoring state.
    Rebalancing,
    /// Every thread is processing.
    Running,
    /// `close` was called.
    PendingShutdown,
    /// Closed.
    NotRunning,
    /// A thread failed; the message says why.
    Error(String),
}

/// What the threads share.
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) config: StreamsConfig,
    pub(crate) plan: setup::Plan,
    pub(crate) process_id: String,
    pub(crate) shutdown: AtomicBool,
    pub(crate) metrics: Metrics,
    /// The stores of running tasks, for interactive queries.
    registry: Mutex<HashMap<TaskId, HashMap<Arc<str>, TaskStore>>>,
    pub(crate) globals: HashMap<Arc<str>, TaskStore>,
    ready: Mutex<Vec<bool>>,
    error: Mutex<Option<String>>,
    /// Tasks a stream thread of this instance owns (running or restoring).
    pub(crate) owned: Mutex<HashSet<TaskId>>,
    pub(crate) standbys: Option<standby::Standbys>,
}

impl Shared {
    pub(crate) fn register(&self, id: TaskId, task: &Task) {
        let stores = task
            .state
            .stores
            .iter()
            .filter(|(_, s)| !s.global)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.registry.lock().insert(id, stores);
    }
    pub(crate) fn unregister(&self, id: TaskId) {
        self.registry.lock().remove(&id);
    }
    /// Marks a task owned by a stream thread, taking its stores from the standby if any.
    pub(crate) fn claim(&self, id: TaskId) {
        self.owned.lock().insert(id);
        if let Some(standbys) = &self.standbys {
            standbys.release(id);
        }
    }
    pub(crate) fn unclaim(&self, id: TaskId) {
        self.owned.lock().remove(&id);
    }
    pub(crate) fn set_ready(&self, thread: usize, ready: bool) {
        self.ready.lock()[thread] = ready;
    }
}

/// The process id, kept in the state directory so a restarted instance reuses its
/// transactional ids (and so fences and aborts what its previous incarnation left open).
fn process_id(config: &StreamsConfig) -> Result<String> {
    let dir = config.state_dir.join(&config.application_id);
    let io =
        |e: std::io::Error| StreamsError::Config(format!("state directory {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let path = dir.join("process-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if uuid::Uuid::parse_str(id.trim()).is_ok() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id).map_err(io)?;
            Ok(id)
        }
    }
}

/// A running stream processing application.
pub struct KafkaStreams {
    topology: Topology,
    config: StreamsConfig,
    shared: Option<Arc<Shared>>,
    threads: Vec<JoinHandle<Result<()>>>,
    global: Option<JoinHandle<Result<()>>>,
    standby: Option<JoinHandle<Result<()>>>,
    closed: bool,
}

impl KafkaStreams {
    /// An application for `topology`; nothing runs until [`start`](Self::start).
    pub fn new(topology: Topology, config: StreamsConfig) -> KafkaStreams {
        KafkaStreams {
            topology,
            config,
            shared: None,
            threads: Vec::new(),
            global: None,
            standby: None,
            closed: false,
        }
    }

    /// Checks the topics (creating internal ones), fills the global stores, and starts the
    /// stream threads. Returns once the threads run; state restoration continues in them.
    pub fn start(&mut self) -> Result<()> {
        if self.shared.is_some() {
            return Err(StreamsError::Config(
                "the application was already started".into(),
            ));
        }
        let plan = setup::prepare(&self.topology, &self.config)?;
        let process_id = process_id(&self.config)?;
        let globals = self.topology.open_global_stores(None)?;
        let mut shared = Shared {
            topology: self.topology.clone(),
            config: self.config.clone(),
            plan,
            process_id,
            shutdown: AtomicBool::new(false),
            metrics: Metrics::default(),
            registry: Mutex::new(HashMap::new()),
            globals,
            ready: Mutex::new(vec![false; self.config.num_stream_threads]),
            error: Mutex::new(None),
            owned: Mutex::new(HashSet::new()),
            standbys: None,
        };
        if self.config.num_standby_replicas > 0 {
            shared.standbys = Some(standby::Standbys::new(&shared)?);
        }
        let shared = Arc::new(shared);
        if shared.standbys.is_some() {
            let s = shared.clone();
            self.standby = Some(
                std::thread::Builder::new()
                    .name("streams-standby".into())
                    .spawn(move || s.standbys.as_ref().expect("checked").run(&s))
                    .map_err(|e| {
                        StreamsError::Fatal(format!("spawning the standby thread: {e}"))
                    })?,
            );
        }
        if !shared.plan.global_topics.is_empty() {
            let updater = global::GlobalUpdater::start(&shared)?;
            let s = shared.clone();
            self.global = Some(
                std::thread::Builder::new()
                    .name("streams-global".into())
                    .spawn(move || updater.run(&s))
                    .map_err(|e| StreamsError::Fatal(format!("spawning the global thread: {e}")))?,
            );
        }
        for index in 0..self.config.num_stream_threads {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("streams-{index}"))
                .spawn(move || {
                    let result = thread::run(s.clone(), index);
                    if let Err(e) = &result {
                        s.error.lock().get_or_insert(e.to_string());
                    }
                    result
                })
                .map_err(|e| StreamsError::Fatal(format!("spawning a stream thread: {e}")))?;
            self.threads.push(handle);
        }
        self.shared = Some(shared);
        Ok(())
    }

    /// The application's state.
    pub fn state(&self) -> State {
        let Some(shared) = &self.shared else {
            return State::Created;
        };
        if let Some(e) = shared.error.lock().clone() {
            return State::Error(e);
        }
        if self.closed {
            return State::NotRunning;
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return State::PendingShutdown;
        }
        if shared.ready.lock().iter().all(|r| *r) {
            State::Running
        } else {
            State::Rebalancing
        }
    }

    /// Waits until the state is `Running` (or an error, or the timeout): whether it runs.
    pub fn wait_until_running(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.state() {
                State::Running => return true,
                State::Error(_) | State::NotRunning => return false,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    /// Current metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared
            .as_ref()
            .map(|s| s.metrics.snapshot())
            .unwrap_or_default()
    }

    /// The tasks running on this instance.
    pub fn local_tasks(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .shared
            .as_ref()
            .map(|s| s.registry.lock().keys().copied().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Queries a key-value store across this instance's running tasks (and global stores).
    pub fn key_value_store<K: 'static, V: 'static>(
        &self,
        name: &str,
    ) -> Result<QueryableStore<K, V>> {
        self.queryable(name)
    }

    fn queryable<K: 'static, V: 'static>(&self, name: &str) -> Result<QueryableStore<K, V>> {
        let shared = self
            .shared
            .clone()
            .ok_or_else(|| StreamsError::Config("the application is not started".into()))?;
        let decl = self.topology.store_decl(name).ok_or_else(|| {
            StreamsError::Config(format!("no state store named {name} in the topology"))
        })?;
        let serdes = decl
            .serdes
            .as_ref()
            .and_then(|s| s.downcast_ref::<StoreSerdes<K, V>>())
            .cloned()
            .ok_or_else(|| {
                StreamsError::Config(format!("state store {name} holds other key/value types"))
            })?;
        Ok(QueryableStore {
            shared,
            name: Arc::from(name),
            serdes,
        })
    }

    /// Stops every thread (committing and closing its tasks) and waits up to `timeout`.
    /// Returns an error when a thread failed or did not stop in time.
    pub fn close(&mut self, timeout: Duration) -> Result<()> {
        let Some(shared) = self.shared.clone() else {
            return Ok(());
        };
        shared.shutdown.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut first_error = None;
        for handle in self
            .threads
            .drain(..)
            .chain(self.global.take())
            .chain(self.standby.take())
        {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !handle.is_finished() {
                first_error.get_or_insert(StreamsError::Fatal(
                    "a stream thread did not stop in time".into(),
                ));
                continue;
            }
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error
                        .get_or_insert(StreamsError::Fatal("a stream thread panicked".into()));
                }
            }
        }
        self.closed = true;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for KafkaStreams {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.close(Duration::from_secs(30));
        }
    }
}

/// Read access to one store across the tasks running on this instance (interactive queries).
/// Each call looks the tasks up again, so it follows rebalances.
pub struct QueryableStore<K, V> {
    shared: Arc<Shared>,
    name: Arc<str>,
    serdes: StoreSerdes<K, V>,
}

impl<K: Clone + 'static, V: 'static> QueryableStore<K, V> {
    fn handles(&self) -> Vec<TaskStore> {
        if let Some(global) = self.shared.globals.get(&self.name) {
            return vec![global.clone()];
        }
        self.shared
            .registry
            .lock()
            .values()
            .filter_map(|stores| stores.get(&self.name).cloned())
            .collect()
    }

    /// The value of `key` in whichever local task holds it.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        for h in self.handles() {
            if let Some(v) = KeyValueStore::new(h.store, self.serdes.clone()).get(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Every entry of every local task.
    pub fn all(&self) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        for h in self.handles() {
            out.extend(KeyValueStore::new(h.store, self.serdes.clone()).all()?);
        }
        Ok(out)
    }

    /// Windows of `key` starting from `from` to `to` (a window store).
    pub fn fetch_windows(&self, key: &K, from: i64, to: i64) -> Result<Vec<(i64, V)>> {
        let mut out = Vec::new();
        for h in self.handles() {
            out.extend(WindowStore::new(h.store, self.serdes.clone()).fetch(key, from, to)?);
        }
        Ok(out)
    }

    /// Every live session (a session store).
    pub fn sessions(&self) -> Result<Vec<(Windowed<K>, V)>> {
        let mut out = Vec::new();
        for h in self.handles() {
            out.extend(SessionStore::new(h.store, self.serdes.clone()).fetch_all()?);
        }
        Ok(out)
    }
}

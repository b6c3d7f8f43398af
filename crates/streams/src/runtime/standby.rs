//! Standby replicas (`num.standby.replicas` >= 1): a thread keeps warm copies of the persistent
//! stores of every task this instance does not run, by following their changelogs, and
//! checkpoints them. When a task moves here, its stream thread takes the store files over from
//! the standby (which commits and closes them first), so restoration replays only the tail.
//!
//! Kafka Streams places a configured number of standbys on other instances through its own
//! partition assignor; librdkafka's assignors cannot, so every instance keeps a standby of every
//! task it does not own (at least as many copies as asked, more with more than two instances).
//! In-memory stores have no standbys.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use super::Shared;
use crate::error::{Result, StreamsError};
use crate::processor::StoreRef;
use crate::state::StoreBackend;
use crate::topology::TaskId;

struct StandbyStore {
    store: StoreRef,
    topic: Arc<str>,
    partition: i32,
    position: Option<i64>,
}

struct State {
    consumer: BaseConsumer,
    tasks: HashMap<TaskId, Vec<StandbyStore>>,
}

/// The standby copies of one instance.
pub(crate) struct Standbys {
    state: Mutex<State>,
}

const REFRESH: Duration = Duration::from_secs(1);

impl Standbys {
    pub(crate) fn new(shared: &Shared) -> Result<Standbys> {
        let config = &shared.config;
        let c = config.assigned_consumer("standby");
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| StreamsError::kafka("creating the standby consumer", e))?;
        Ok(Standbys {
            state: Mutex::new(State {
                consumer,
                tasks: HashMap::new(),
            }),
        })
    }

    /// Hands task `id`'s stores over to a stream thread: checkpoints and closes them.
    pub(crate) fn release(&self, id: TaskId) {
        let mut state = self.state.lock();
        if let Some(stores) = state.tasks.remove(&id) {
            let mut tpl = TopicPartitionList::new();
            for s in stores {
                let _ = tpl.add_partition(&s.topic, s.partition);
                let mut store = s.store.lock();
                let checkpoint = s.position.or(store.inner.checkpoint());
                if let Err(e) = store.inner.commit(checkpoint, true) {
                    tracing::warn!(task = %id, "checkpointing standby store {}: {e}", store.name);
                }
            }
            let _ = state.consumer.incremental_unassign(&tpl);
            tracing::info!(task = %id, "standby handed over");
        }
    }

    fn refresh(&self, shared: &Shared) -> Result<()> {
        let app = &shared.config.application_id;
        let mut state = self.state.lock();
        let owned: HashSet<TaskId> = shared.owned.lock().clone();
        for sub in &shared.topology.inner.subtopologies {
            let persistent = sub.stores.iter().any(|s| {
                shared.topology.store_decl(s).is_some_and(|d| {
                    d.spec.backend == StoreBackend::Persistent
                        && d.spec.logged
                        && d.global_source.is_none()
                })
            });
            if !persistent {
                continue;
            }
            for partition in 0..shared.plan.partitions[&sub.id] {
                let id = TaskId {
                    subtopology: sub.id,
                    partition,
                };
                if owned.contains(&id) || state.tasks.contains_key(&id) {
                    continue;
                }
                let dir = shared.config.state_dir.join(app).join(id.to_string());
                let stores = shared.topology.open_task_stores(id, app, Some(&dir))?;
                let mut standby = Vec::new();
                let mut tpl = TopicPartitionList::new();
                for (name, handle) in stores {
                    let decl = shared.topology.store_decl(&name).expect("declared");
                    if decl.spec.backend != StoreBackend::Persistent {
                        continue;
                    }
                    let (topic, partition, checkpoint) = {
                        let store = handle.store.lock();
                        let Some(c) = &store.changelog else { continue };
                        (c.topic.clone(), c.partition, store.inner.checkpoint())
                    };
                    tpl.add_partition_offset(
                        &topic,
                        partition,
                        checkpoint.map_or(Offset::Beginning, Offset::Offset),
                    )
                    .map_err(|e| StreamsError::kafka("assigning a standby changelog", e))?;
                    standby.push(StandbyStore {
                        store: handle.store,
                        topic,
                        partition,
                        position: checkpoint,
                    });
                }
                state
                    .consumer
                    .incremental_assign(&tpl)
                    .map_err(|e| StreamsError::kafka("assigning standby changelogs", e))?;
                tracing::info!(task = %id, "standby started");
                state.tasks.insert(id, standby);
            }
        }
        // Checkpoint what was applied, and measure how far behind the copies are.
        let mut behind = 0i64;
        let timeout = shared.config.request_timeout;
        for stores in state.tasks.values() {
            for s in stores {
                let mut store = s.store.lock();
                let checkpoint = s.position.or(store.inner.checkpoint());
                store.inner.commit(checkpoint, false)?;
                if let Ok((_, high)) =
                    state
                        .consumer
                        .fetch_watermarks(&s.topic, s.partition, timeout)
                {
                    behind += (high - s.position.unwrap_or(0)).max(0);
                }
            }
        }
        shared
            .metrics
            .standby_behind
            .store(behind, Ordering::Relaxed);
        shared
            .metrics
            .standby_tasks
            .store(state.tasks.len() as i64, Ordering::Relaxed);
        Ok(())
    }

    fn apply(&self, shared: &Shared) -> Result<()> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut timeout = Duration::from_millis(50);
        for _ in 0..1000 {
            let m = match state.consumer.poll(timeout) {
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => return Err(StreamsError::kafka("following a changelog", e)),
                None => break,
            };
            timeout = Duration::ZERO;
            let target = state
                .tasks
                .values_mut()
                .flat_map(|t| t.iter_mut())
                .find(|s| &*s.topic == m.topic() && s.partition == m.partition());
            if let Some(s) = target {
                if let Some(key) = m.key() {
                    s.store
                        .lock()
                        .restore(key.to_vec(), m.payload().map(<[u8]>::to_vec))?;
                }
                s.position = Some(m.offset() + 1);
            }
        }
        // Control records (transaction markers) move positions without delivering anything.
        if let Ok(positions) = state.consumer.position() {
            for s in state.tasks.values_mut().flat_map(|t| t.iter_mut()) {
                if let Some(p) = positions
                    .find_partition(&s.topic, s.partition)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                {
                    s.position = Some(s.position.map_or(p, |q| q.max(p)));
                }
            }
        }
        let _ = shared;
        Ok(())
    }

    /// Follows the changelogs until shutdown.
    pub(crate) fn run(&self, shared: &Arc<Shared>) -> Result<()> {
        let mut last_refresh = Instant::now() - REFRESH;
        while !shared.shutdown.load(Ordering::Acquire) {
            if last_refresh.elapsed() >= REFRESH {
                self.refresh(shared)?;
                last_refresh = Instant::now();
            }
            self.apply(shared)?;
        }
        let ids: Vec<TaskId> = self.state.lock().tasks.keys().copied().collect();
        for id in ids {
            self.release(id);
        }
        Ok(())
    }
}

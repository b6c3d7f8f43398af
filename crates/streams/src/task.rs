//! A task: the processor instances of one subtopology for one input partition, its stores, stream
//! time and punctuators. The runtime and the test driver both feed records through this.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Result, StreamsError};
use crate::processor::{Ctx, Graph, PunctuationType, RecordMetadata, TaskState, TaskStore};
use crate::record::{Header, OutRecord, RawRecord};
use crate::topology::{TaskId, Topology};

/// What to do with a record whose key or value does not deserialize (Kafka Streams'
/// `default.deserialization.exception.handler`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeserializationPolicy {
    /// Stop processing with an error (Kafka's `LogAndFailExceptionHandler`, the default).
    Fail,
    /// Log it, count it, skip it (`LogAndContinueExceptionHandler`).
    LogAndContinue,
    /// Write the raw record to this topic with headers saying why, then skip it.
    DeadLetter(String),
}

/// How many records a task skipped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounters {
    /// Records whose key or value did not deserialize.
    pub skipped_deserialization: u64,
    /// Records with a negative timestamp.
    pub skipped_invalid_timestamp: u64,
    /// Records too late for their window (past the grace period).
    pub dropped_late: u64,
    /// Records processed.
    pub processed: u64,
}

pub(crate) struct Task {
    pub(crate) id: TaskId,
    graph: Graph,
    pub(crate) state: TaskState,
    sources: HashMap<Arc<str>, usize>,
    node_order: Vec<usize>,
    policy: DeserializationPolicy,
    pub(crate) counters: TaskCounters,
}

impl Task {
    /// Instantiates the processors of `id`'s subtopology over `stores` (task and global ones) and
    /// initializes them.
    pub(crate) fn new(
        topology: &Topology,
        id: TaskId,
        app_id: Arc<str>,
        stores: HashMap<Arc<str>, TaskStore>,
        policy: DeserializationPolicy,
        wall_clock_ms: i64,
    ) -> Result<Task> {
        let t = &topology.inner;
        let sub = &t.subtopologies[id.subtopology as usize];
        let mut nodes: Vec<Option<RefCell<Box<dyn crate::processor::Node>>>> =
            (0..t.nodes.len()).map(|_| None).collect();
        for &i in &sub.nodes {
            nodes[i] = Some(RefCell::new((t.nodes[i].factory)()));
        }
        let sources = sub
            .sources
            .iter()
            .map(|(topic, node)| (Arc::from(topic.resolve(&app_id)), *node))
            .collect();
        let mut task = Task {
            id,
            graph: Graph {
                nodes,
                children: t.children.clone(),
                names: t.names.clone(),
            },
            state: TaskState {
                task: id,
                app_id,
                stores,
                out: Vec::new(),
                meta: RecordMetadata::default(),
                stream_time: i64::MIN,
                wall_clock_ms,
                punctuators: Vec::new(),
                dropped_late: 0,
            },
            sources,
            node_order: sub.nodes.clone(),
            policy,
            counters: TaskCounters::default(),
        };
        for &i in &task.node_order {
            let node = task.graph.nodes[i]
                .as_ref()
                .expect("node of this subtopology");
            let mut ctx = Ctx {
                graph: &task.graph,
                state: &mut task.state,
                current: i,
            };
            node.borrow_mut().init(&mut ctx)?;
        }
        Ok(task)
    }

    /// Processes one input record, then any stream-time punctuation it made due.
    pub(crate) fn process(&mut self, raw: RawRecord) -> Result<()> {
        let Some(&node) = self.sources.get(&raw.topic) else {
            return Err(StreamsError::Fatal(format!(
                "task {} has no source for topic {}",
                self.id, raw.topic
            )));
        };
        if raw.timestamp < 0 {
            tracing::warn!(topic = %raw.topic, partition = raw.partition, offset = raw.offset,
                "skipping a record with a negative timestamp");
            self.counters.skipped_invalid_timestamp += 1;
            return Ok(());
        }
        self.state.stream_time = self.state.stream_time.max(raw.timestamp);
        self.state.meta = RecordMetadata {
            topic: Some(raw.topic.clone()),
            partition: raw.partition,
            offset: raw.offset,
            timestamp: raw.timestamp,
            headers: raw.headers.clone(),
        };
        let dead_letter = match &self.policy {
            DeserializationPolicy::DeadLetter(_) => Some(raw.clone()),
            _ => None,
        };
        let mut slot = Some(raw);
        let result = {
            let entry = self.graph.nodes[node]
                .as_ref()
                .expect("source node in its subtopology");
            let mut ctx = Ctx {
                graph: &self.graph,
                state: &mut self.state,
                current: node,
            };
            let r = entry.borrow_mut().process(&mut ctx, &mut slot);
            r
        };
        match result {
            Ok(()) => self.counters.processed += 1,
            Err(e @ StreamsError::Deserialization { .. }) => match &self.policy {
                DeserializationPolicy::Fail => return Err(e),
                DeserializationPolicy::LogAndContinue => {
                    tracing::warn!(task = %self.id, "skipping record: {e}");
                    self.counters.skipped_deserialization += 1;
                }
                DeserializationPolicy::DeadLetter(topic) => {
                    tracing::warn!(task = %self.id, dead_letter_topic = %topic, "skipping record: {e}");
                    self.counters.skipped_deserialization += 1;
                    let raw = dead_letter.expect("kept for the dead-letter policy");
                    let mut headers = raw.headers.clone();
                    for (key, value) in [
                        ("__streams.error", e.to_string()),
                        ("__streams.topic", raw.topic.to_string()),
                        ("__streams.partition", raw.partition.to_string()),
                        ("__streams.offset", raw.offset.to_string()),
                    ] {
                        headers.push(Header {
                            key: key.to_string(),
                            value: Some(value.into_bytes()),
                        });
                    }
                    self.state.out.push(OutRecord {
                        topic: Arc::from(topic.as_str()),
                        partition: None,
                        key: raw.key,
                        value: raw.value,
                        timestamp: raw.timestamp,
                        headers,
                        changelog_of: None,
                    });
                }
            },
            Err(e) => return Err(e),
        }
        self.counters.dropped_late = self.state.dropped_late;
        self.punctuate(PunctuationType::StreamTime, self.state.stream_time)?;
        Ok(())
    }

    /// Fires the punctuators of `kind` due at `now` (stream time or wall-clock time).
    pub(crate) fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<()> {
        if kind == PunctuationType::WallClockTime {
            self.state.wall_clock_ms = now;
        }
        if now == i64::MIN {
            return Ok(());
        }
        for p in 0..self.state.punctuators.len() {
            let punctuator = &mut self.state.punctuators[p];
            if punctuator.kind != kind {
                continue;
            }
            let due = match punctuator.next {
                None => {
                    // Stream-time punctuators align to multiples of their interval.
                    punctuator.next =
                        Some(now - now.rem_euclid(punctuator.interval_ms) + punctuator.interval_ms);
                    false
                }
                Some(next) => now >= next,
            };
            if !due {
                continue;
            }
            let interval = punctuator.interval_ms;
            let next = punctuator.next.expect("set above");
            // Fire once even if several intervals passed (as Kafka Streams does), then schedule
            // the next interval boundary after `now`.
            punctuator.next = Some(next + ((now - next) / interval + 1) * interval);
            let (node, id) = (punctuator.node, punctuator.id);
            self.state.meta = RecordMetadata {
                timestamp: now,
                ..RecordMetadata::default()
            };
            let entry = self.graph.nodes[node].as_ref().expect("punctuating node");
            let mut ctx = Ctx {
                graph: &self.graph,
                state: &mut self.state,
                current: node,
            };
            entry.borrow_mut().punctuate(&mut ctx, id, now)?;
        }
        Ok(())
    }

    /// Takes the records produced so far (sinks, repartition topics, dead letters).
    pub(crate) fn take_output(&mut self) -> Vec<OutRecord> {
        std::mem::take(&mut self.state.out)
    }

    /// Takes the pending changelog writes of this task's stores (`force`: all, else only stores
    /// whose buffer is full).
    pub(crate) fn take_changelog(&mut self, force: bool) -> Vec<OutRecord> {
        let mut out = Vec::new();
        let timestamp = self.state.stream_time.max(0);
        for handle in self.state.stores.values().filter(|s| !s.global) {
            let mut store = handle.store.lock();
            if !force && !store.changelog_full() {
                continue;
            }
            let name = store.name.clone();
            if let Some((topic, partition, writes)) = store.take_changelog() {
                out.extend(writes.into_iter().map(|(key, value)| OutRecord {
                    topic: topic.clone(),
                    partition: Some(partition),
                    key: Some(key),
                    value,
                    timestamp,
                    headers: Vec::new(),
                    changelog_of: Some(name.clone()),
                }));
            }
        }
        out
    }

    /// Closes every processor.
    pub(crate) fn close(&mut self) {
        for &i in &self.node_order {
            if let Some(node) = &self.graph.nodes[i] {
                node.borrow_mut().close();
            }
        }
    }
}

//! Global stores: every partition of each global table's topic, read by one consumer per
//! instance, restored to the end before the stream threads start and kept current after.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use super::Shared;
use crate::error::{Result, StreamsError};
use crate::processor::StoreRef;

pub(crate) struct GlobalUpdater {
    consumer: BaseConsumer,
    stores: HashMap<String, StoreRef>,
}

impl GlobalUpdater {
    /// Assigns every partition of the global topics from the beginning and applies them up to
    /// their current end.
    pub(crate) fn start(shared: &Arc<Shared>) -> Result<GlobalUpdater> {
        let config = &shared.config;
        let c = config.assigned_consumer("global");
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| StreamsError::kafka("creating the global consumer", e))?;
        let metadata = consumer
            .fetch_metadata(None, config.request_timeout)
            .map_err(|e| StreamsError::kafka("global topic metadata", e))?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        let mut stores = HashMap::new();
        for (topic, store) in &shared.plan.global_topics {
            stores.insert(topic.clone(), shared.globals[store].store.clone());
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                continue;
            };
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .map_err(|e| StreamsError::kafka("assigning a global topic", e))?;
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), config.request_timeout)
                    .map_err(|e| StreamsError::kafka("global topic offsets", e))?;
                ends.push((topic.clone(), p.id(), high));
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| StreamsError::kafka("assigning global topics", e))?;
        let updater = GlobalUpdater { consumer, stores };
        let deadline = Instant::now() + config.request_timeout.max(Duration::from_secs(60));
        loop {
            updater.poll_once(shared)?;
            let positions = updater
                .consumer
                .position()
                .map_err(|e| StreamsError::kafka("global positions", e))?;
            let done = ends.iter().all(|(t, p, end)| {
                *end == 0
                    || positions
                        .find_partition(t, *p)
                        .and_then(|e| match e.offset() {
                            rdkafka::Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .is_some_and(|pos| pos >= *end)
            });
            if done {
                return Ok(updater);
            }
            if Instant::now() > deadline {
                return Err(StreamsError::Fatal(
                    "global stores did not finish restoring in time".into(),
                ));
            }
        }
    }

    fn poll_once(&self, shared: &Shared) -> Result<()> {
        let mut timeout = Duration::from_millis(50);
        for _ in 0..1000 {
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => {
                    if let (Some(store), Some(key)) = (self.stores.get(m.topic()), m.key()) {
                        store
                            .lock()
                            .restore(key.to_vec(), m.payload().map(<[u8]>::to_vec))?;
                        shared.metrics.restored.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(StreamsError::kafka("reading a global topic", e)),
                None => break,
            }
            timeout = Duration::ZERO;
        }
        Ok(())
    }

    /// Keeps the global stores current until shutdown.
    pub(crate) fn run(self, shared: &Arc<Shared>) -> Result<()> {
        while !shared.shutdown.load(Ordering::Acquire) {
            self.poll_once(shared)?;
        }
        Ok(())
    }
}

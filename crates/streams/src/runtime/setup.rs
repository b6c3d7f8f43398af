//! Before the threads start: checks the source topics, works out every subtopology's partition
//! count (repartition topics inherit their writer's, co-partitioned topics must agree), and
//! creates the internal topics (repartition topics and changelogs) that are missing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::config::StreamsConfig;
use crate::error::{Result, StreamsError, TopologyError};
use crate::topology::{changelog_topic, TopicRef, Topology};

/// A topic to exist: name, partitions, configs.
type TopicSpec = (String, i32, Vec<(String, String)>);

/// What the threads need to know about the topics.
pub(crate) struct Plan {
    /// Tasks per subtopology.
    pub(crate) partitions: HashMap<u32, i32>,
    /// Every topic the stream threads subscribe to.
    pub(crate) source_topics: Vec<String>,
    /// Global topics and the store each fills.
    pub(crate) global_topics: Vec<(String, Arc<str>)>,
}

fn partition_counts(consumer: &BaseConsumer, timeout: Duration) -> Result<HashMap<String, i32>> {
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| StreamsError::kafka("fetching topic metadata", e))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Checks and creates topics; returns the partition plan.
pub(crate) fn prepare(topology: &Topology, config: &StreamsConfig) -> Result<Plan> {
    let app = &config.application_id;
    let t = &topology.inner;
    let consumer: BaseConsumer = config
        .base_client()
        .create()
        .map_err(|e| StreamsError::kafka("creating the metadata client", e))?;
    let existing = partition_counts(&consumer, config.request_timeout)?;
    let mut counts: HashMap<TopicRef, i32> = HashMap::new();
    let mut explicit: HashMap<TopicRef, bool> = HashMap::new();
    for sub in &t.subtopologies {
        for (topic, _) in &sub.sources {
            if topic.internal {
                continue;
            }
            match existing.get(&topic.name) {
                Some(&n) if n > 0 => {
                    counts.insert(topic.clone(), n);
                }
                _ => {
                    return Err(StreamsError::Config(format!(
                        "source topic {} does not exist; create it before starting the application",
                        topic.name
                    )))
                }
            }
        }
    }
    let mut global_topics = Vec::new();
    for store in &t.stores {
        if let Some(topic) = &store.global_source {
            if !existing.contains_key(&topic.name) {
                return Err(StreamsError::Config(format!(
                    "global table topic {} does not exist; create it before starting the application",
                    topic.name
                )));
            }
            global_topics.push((topic.name.clone(), store.spec.name.clone()));
        }
    }
    for r in &t.repartitions {
        if let Some(n) = r.partitions {
            counts.insert(r.topic.clone(), n);
            explicit.insert(r.topic.clone(), true);
        }
    }
    // Repartition topics without a count take the largest of their writer's inputs; a writer
    // may read another repartition topic, so repeat until nothing changes.
    for _ in 0..=t.repartitions.len() {
        let mut changed = false;
        for r in &t.repartitions {
            if counts.contains_key(&r.topic) {
                continue;
            }
            let Some(writer) = r.writer else { continue };
            let inputs: Vec<Option<i32>> = t.subtopologies[writer as usize]
                .sources
                .iter()
                .map(|(s, _)| counts.get(s).copied())
                .collect();
            if inputs.iter().all(Option::is_some) {
                counts.insert(
                    r.topic.clone(),
                    inputs.into_iter().flatten().max().unwrap_or(1),
                );
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // A repartition topic joined with others follows them.
    for group in &t.copartition_groups {
        let fixed: Vec<i32> = group
            .topics
            .iter()
            .filter(|topic| !topic.internal || explicit.contains_key(*topic))
            .filter_map(|topic| counts.get(topic).copied())
            .collect();
        if let Some(&n) = fixed.first() {
            for topic in group
                .topics
                .iter()
                .filter(|t| t.internal && !explicit.contains_key(*t))
            {
                counts.insert(topic.clone(), n);
            }
        }
        let mut seen: Vec<(String, i32)> = Vec::new();
        for topic in &group.topics {
            let n = counts.get(topic).copied().unwrap_or(0);
            if let Some((other, m)) = seen.iter().find(|(_, m)| *m != n) {
                return Err(TopologyError(format!(
                    "topics {other} ({m} partitions) and {} ({n} partitions) are not co-partitioned, but {}; \
                     give them the same number of partitions, or call repartition(None, Some({m})) on the side reading {}",
                    topic.resolve(app),
                    group.reason,
                    topic.resolve(app)
                ))
                .into());
            }
            seen.push((topic.resolve(app), n));
        }
    }
    let mut partitions = HashMap::new();
    for sub in &t.subtopologies {
        let mut n = None;
        for (topic, _) in &sub.sources {
            let m = *counts.get(topic).ok_or_else(|| {
                StreamsError::Fatal(format!("no partition count for {}", topic.resolve(app)))
            })?;
            match n {
                None => n = Some((topic.resolve(app), m)),
                Some((ref other, k)) if k != m => {
                    return Err(TopologyError(format!(
                        "subtopology {} reads {other} ({k} partitions) and {} ({m} partitions); topics read by one \
                         subtopology must have the same number of partitions (partition p of each is one task)",
                        sub.id,
                        topic.resolve(app)
                    ))
                    .into())
                }
                _ => {}
            }
        }
        partitions.insert(sub.id, n.map(|(_, k)| k).unwrap_or(1));
    }
    // The internal topics to exist.
    let mut wanted: Vec<TopicSpec> = Vec::new();
    for r in &t.repartitions {
        let n = counts.get(&r.topic).copied().unwrap_or(1);
        wanted.push((
            r.topic.resolve(app),
            n,
            vec![
                ("cleanup.policy".into(), "delete".into()),
                ("retention.ms".into(), "-1".into()),
            ],
        ));
    }
    for sub in &t.subtopologies {
        for store in &sub.stores {
            let decl = topology.store_decl(store).expect("checked at build");
            if decl.global_source.is_some() || !decl.spec.logged {
                continue;
            }
            wanted.push((
                changelog_topic(app, store),
                partitions[&sub.id],
                decl.spec.changelog_configs(),
            ));
        }
    }
    let admin: AdminClient<DefaultClientContext> = config
        .base_client()
        .create()
        .map_err(|e| StreamsError::kafka("creating the admin client", e))?;
    let mut to_create = Vec::new();
    for (name, n, configs) in &wanted {
        match existing.get(name) {
            Some(&m) if m != *n => {
                return Err(StreamsError::Config(format!(
                    "internal topic {name} has {m} partitions but the topology needs {n}; delete it (and reset the \
                     application) or keep the input topics' partition counts"
                )))
            }
            Some(_) => {}
            None => to_create.push((name.clone(), *n, configs.clone())),
        }
    }
    if !to_create.is_empty() {
        let topics: Vec<NewTopic<'_>> = to_create
            .iter()
            .map(|(name, n, configs)| {
                let mut topic =
                    NewTopic::new(name, *n, TopicReplication::Fixed(config.replication_factor));
                for (k, v) in configs {
                    topic = topic.set(k, v);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(config.request_timeout));
        let results = futures::executor::block_on(admin.create_topics(&topics, &options))
            .map_err(|e| StreamsError::kafka("creating internal topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(StreamsError::Config(format!(
                        "cannot create internal topic {topic}: {code}"
                    )))
                }
            }
        }
        // Wait until the new topics show in metadata with their partitions.
        let deadline = std::time::Instant::now() + config.request_timeout;
        loop {
            let now = partition_counts(&consumer, config.request_timeout)?;
            if to_create
                .iter()
                .all(|(name, n, _)| now.get(name) == Some(n))
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(StreamsError::Config(
                    "internal topics did not appear in metadata in time".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Plan {
        partitions,
        source_topics: topology.source_topics(app),
        global_topics,
    })
}

//! The built topology: processor nodes and their wiring, state stores, internal topics, and the
//! split into subtopologies (the parts connected without going through a topic), each run as one
//! task per input partition.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Result, TopologyError};
use crate::processor::{Node, TaskStore};
use crate::state::{open_physical, StateStore, StoreSpec};

/// A task: subtopology `subtopology` over partition `partition` of its input topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    /// The subtopology.
    pub subtopology: u32,
    /// The input partition.
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.subtopology, self.partition)
    }
}

/// A topic as the topology names it: internal topics get the application id as a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicRef {
    pub(crate) name: String,
    pub(crate) internal: bool,
}

impl TopicRef {
    pub(crate) fn external(name: &str) -> TopicRef {
        TopicRef {
            name: name.to_string(),
            internal: false,
        }
    }
    pub(crate) fn resolve(&self, app_id: &str) -> String {
        if self.internal {
            format!("{app_id}-{}", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// The name of a store's changelog topic: `<application.id>-<store>-changelog`.
pub(crate) fn changelog_topic(app_id: &str, store: &str) -> String {
    format!("{app_id}-{store}-changelog")
}

pub(crate) type NodeFactory = Arc<dyn Fn() -> Box<dyn Node> + Send + Sync>;

pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) factory: NodeFactory,
    pub(crate) parents: Vec<usize>,
    pub(crate) stores: Vec<Arc<str>>,
    pub(crate) source: Option<TopicRef>,
    pub(crate) sink: Option<TopicRef>,
}

pub(crate) struct StoreDecl {
    pub(crate) spec: StoreSpec,
    pub(crate) serdes: Option<Arc<dyn Any + Send + Sync>>,
    /// For global stores: the topic they are filled from (also their changelog).
    pub(crate) global_source: Option<TopicRef>,
}

/// A repartition topic and the partition count asked for (`None`: as many as its input).
#[derive(Clone, Debug)]
pub(crate) struct RepartitionDecl {
    pub(crate) topic: TopicRef,
    pub(crate) partitions: Option<i32>,
    /// The subtopology that writes it.
    pub(crate) writer: Option<u32>,
}

/// A set of topics joined with each other: they must have the same number of partitions.
#[derive(Clone, Debug)]
pub(crate) struct CopartitionGroup {
    pub(crate) topics: Vec<TopicRef>,
    /// The operation that needs it ("join of ... and ..."), for the error message.
    pub(crate) reason: String,
}

/// The parts of a topology connected without going through a topic.
#[derive(Clone, Debug)]
pub(crate) struct Subtopology {
    pub(crate) id: u32,
    pub(crate) nodes: Vec<usize>,
    pub(crate) sources: Vec<(TopicRef, usize)>,
    pub(crate) stores: Vec<Arc<str>>,
}

/// A runnable topology: what [`crate::StreamsBuilder::build`] produces.
#[derive(Clone)]
pub struct Topology {
    pub(crate) inner: Arc<TopologyInner>,
}

pub(crate) struct TopologyInner {
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) children: Arc<Vec<Vec<usize>>>,
    pub(crate) names: Arc<Vec<String>>,
    pub(crate) stores: Vec<StoreDecl>,
    pub(crate) subtopologies: Vec<Subtopology>,
    pub(crate) repartitions: Vec<RepartitionDecl>,
    pub(crate) copartition_groups: Vec<CopartitionGroup>,
}

impl Topology {
    pub(crate) fn new(
        nodes: Vec<NodeSpec>,
        stores: Vec<StoreDecl>,
        mut repartitions: Vec<RepartitionDecl>,
        copartition_groups: Vec<CopartitionGroup>,
    ) -> Result<Topology, TopologyError> {
        let mut children = vec![Vec::new(); nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            for &p in &node.parents {
                children[p].push(i);
            }
        }
        // Union-find: nodes joined by an edge or by a (non-global) store share a subtopology.
        let mut parent: Vec<usize> = (0..nodes.len()).collect();
        fn find(parent: &mut [usize], i: usize) -> usize {
            let mut root = i;
            while parent[root] != root {
                root = parent[root];
            }
            let mut i = i;
            while parent[i] != root {
                let next = parent[i];
                parent[i] = root;
                i = next;
            }
            root
        }
        fn union(parent: &mut [usize], a: usize, b: usize) {
            let (ra, rb) = (find(parent, a), find(parent, b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            for &p in &node.parents {
                union(&mut parent, i, p);
            }
        }
        let mut store_users: HashMap<&str, usize> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for store in &node.stores {
                if stores
                    .iter()
                    .any(|s| &s.spec.name == store && s.global_source.is_some())
                {
                    continue;
                }
                if let Some(&other) = store_users.get(&**store) {
                    union(&mut parent, i, other);
                } else {
                    store_users.insert(store, i);
                }
            }
        }
        for (name, node) in nodes.iter().enumerate() {
            for store in &node.stores {
                if !stores.iter().any(|s| &s.spec.name == store) {
                    return Err(TopologyError(format!(
                        "processor {} uses state store {store}, which was never added; add it with StreamsBuilder::add_state_store",
                        nodes[name].name
                    )));
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..nodes.len() {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        let mut subtopologies = Vec::new();
        for (id, (_, members)) in groups.into_iter().enumerate() {
            let id = id as u32;
            let sources: Vec<(TopicRef, usize)> = members
                .iter()
                .filter_map(|&i| nodes[i].source.clone().map(|t| (t, i)))
                .collect();
            if sources.is_empty() {
                return Err(TopologyError(format!(
                    "processor {} is not connected to any source topic",
                    nodes[members[0]].name
                )));
            }
            let mut sub_stores: Vec<Arc<str>> = Vec::new();
            for &i in &members {
                for s in &nodes[i].stores {
                    if !sub_stores.contains(s) {
                        sub_stores.push(s.clone());
                    }
                }
            }
            for r in repartitions.iter_mut() {
                if members
                    .iter()
                    .any(|&i| nodes[i].sink.as_ref() == Some(&r.topic))
                {
                    r.writer = Some(id);
                }
            }
            subtopologies.push(Subtopology {
                id,
                nodes: members,
                sources,
                stores: sub_stores,
            });
        }
        let mut seen: HashMap<&TopicRef, &str> = HashMap::new();
        for node in &nodes {
            if let Some(topic) = &node.source {
                if let Some(other) = seen.insert(topic, &node.name) {
                    return Err(TopologyError(format!(
                        "topic {} is read by two sources ({other} and {}); read it once and share the stream",
                        topic.name, node.name
                    )));
                }
            }
        }
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        Ok(Topology {
            inner: Arc::new(TopologyInner {
                nodes,
                children: Arc::new(children),
                names: Arc::new(names),
                stores,
                subtopologies,
                repartitions,
                copartition_groups,
            }),
        })
    }

    /// A human-readable description: subtopologies, their sources, processors, stores and sinks.
    pub fn describe(&self) -> String {
        let t = &self.inner;
        let mut out = String::new();
        for sub in &t.subtopologies {
            out.push_str(&format!("Sub-topology: {}\n", sub.id));
            for &i in &sub.nodes {
                let node = &t.nodes[i];
                let kind = if let Some(s) = &node.source {
                    format!("Source (topic: {})", s.name)
                } else if let Some(s) = &node.sink {
                    format!("Sink (topic: {})", s.name)
                } else {
                    "Processor".to_string()
                };
                out.push_str(&format!("  {kind}: {}", node.name));
                if !node.stores.is_empty() {
                    let stores: Vec<&str> = node.stores.iter().map(|s| &**s).collect();
                    out.push_str(&format!(" (stores: {})", stores.join(", ")));
                }
                let kids: Vec<&str> = t.children[i]
                    .iter()
                    .map(|&c| t.nodes[c].name.as_str())
                    .collect();
                if !kids.is_empty() {
                    out.push_str(&format!(" --> {}", kids.join(", ")));
                }
                out.push('\n');
            }
        }
        for store in &t.stores {
            if let Some(src) = &store.global_source {
                out.push_str(&format!(
                    "Global store: {} (topic: {})\n",
                    store.spec.name, src.name
                ));
            }
        }
        out
    }

    pub(crate) fn store_decl(&self, name: &str) -> Option<&StoreDecl> {
        self.inner.stores.iter().find(|s| &*s.spec.name == name)
    }

    /// Opens the stores of a task. `task_dir` is where persistent stores live (`None`: memory).
    pub(crate) fn open_task_stores(
        &self,
        task: TaskId,
        app_id: &str,
        task_dir: Option<&PathBuf>,
    ) -> Result<HashMap<Arc<str>, TaskStore>> {
        let mut out = HashMap::new();
        for name in &self.inner.subtopologies[task.subtopology as usize].stores {
            let decl = self.store_decl(name).expect("stores are checked at build");
            if decl.global_source.is_some() {
                continue;
            }
            let physical = open_physical(&decl.spec, task_dir)?;
            let changelog = decl
                .spec
                .logged
                .then(|| (Arc::from(changelog_topic(app_id, name)), task.partition));
            out.insert(
                name.clone(),
                TaskStore {
                    store: Arc::new(Mutex::new(StateStore::new(&decl.spec, physical, changelog))),
                    serdes: decl.serdes.clone(),
                    global: false,
                },
            );
        }
        Ok(out)
    }

    /// Opens the global stores (shared by every task). `dir` is where persistent ones live.
    pub(crate) fn open_global_stores(
        &self,
        dir: Option<&PathBuf>,
    ) -> Result<HashMap<Arc<str>, TaskStore>> {
        let mut out = HashMap::new();
        for decl in self
            .inner
            .stores
            .iter()
            .filter(|s| s.global_source.is_some())
        {
            let physical = open_physical(&decl.spec, dir)?;
            out.insert(
                decl.spec.name.clone(),
                TaskStore {
                    store: Arc::new(Mutex::new(StateStore::new(&decl.spec, physical, None))),
                    serdes: decl.serdes.clone(),
                    global: true,
                },
            );
        }
        Ok(out)
    }

    /// Names of the source topics as the runtime reads them.
    pub(crate) fn source_topics(&self, app_id: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .inner
            .subtopologies
            .iter()
            .flat_map(|s| s.sources.iter().map(|(t, _)| t.resolve(app_id)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The subtopology reading `topic`, and the source node.
    pub(crate) fn subtopology_of(&self, app_id: &str, topic: &str) -> Option<(u32, usize)> {
        self.inner.subtopologies.iter().find_map(|s| {
            s.sources
                .iter()
                .find(|(t, _)| t.resolve(app_id) == topic)
                .map(|(_, node)| (s.id, *node))
        })
    }

    /// Whether any subtopology reads several topics (so partition p of each must be processed
    /// together).
    pub(crate) fn has_multi_source_subtopology(&self) -> bool {
        self.inner.subtopologies.iter().any(|s| s.sources.len() > 1)
    }
}

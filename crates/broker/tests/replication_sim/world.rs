//! One simulated run: the brokers, the controller, the metadata log, the client and the
//! network, stepped in virtual time under the faults the seed chooses, then healed.

use std::collections::BTreeMap;

use sluice_log::LogConfig;
use sluice_meta::controller::place_replicas;
use sluice_meta::{Listener, MetadataRecord, MetadataState, NodeId, Outcome, PartitionState};

use crate::checker::{Acked, Checker};
use crate::controller::{Controller, MetaLog};
use crate::net::{Addr, Envelope, Msg, NetStats, Network};
use crate::node::{Env, Node, PRODUCE_TIMEOUT_MS, TOPIC};
use crate::records;
use crate::rng::Rng;
use crate::STEP_MS;

/// The controller pushes "committed up to here" to every broker and the client this often.
const METADATA_PUSH_MS: u64 = 30;
/// The client gives up on a produce after this long (longer than the broker's own timeout).
const CLIENT_TIMEOUT_MS: u64 = PRODUCE_TIMEOUT_MS + 200;
const REPLICATION_FACTOR: i32 = 3;
const MIN_INSYNC_REPLICAS: i32 = 2;

/// The shape of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimConfig {
    pub(crate) brokers: i32,
    /// Steps with faults, then steps healed (the client stops producing before the end).
    pub(crate) fault_steps: u64,
    pub(crate) heal_steps: u64,
}

/// Faults injected, summed over runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Faults {
    pub(crate) crashes: u64,
    pub(crate) pauses: u64,
    pub(crate) isolations: u64,
    pub(crate) link_cuts: u64,
    pub(crate) failovers: u64,
}

/// What one run did, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunStats {
    pub(crate) acked: u64,
    pub(crate) produced: u64,
    pub(crate) faults: Faults,
    pub(crate) net: NetStats,
    pub(crate) leaderships: u64,
    pub(crate) metadata_records: u64,
    /// A digest of the final leader's log (offsets, epochs, values), to compare replays.
    pub(crate) final_log_digest: u64,
}

/// Per-seed fault rates (probabilities per step).
#[derive(Debug, Clone, Copy)]
struct Rates {
    crash: f64,
    pause: f64,
    isolate: f64,
    cut: f64,
    failover: f64,
}

/// The producing client: one acks=all produce at a time, values 0, 1, 2, ... never retried,
/// sent to the leader of its (possibly stale) metadata view.
#[derive(Debug, Default)]
struct Client {
    applied: usize,
    next_value: u64,
    next_id: u64,
    /// (request id, value, give up at).
    outstanding: Option<(u64, u64, u64)>,
    acked: Vec<Acked>,
    producing: bool,
}

pub(crate) struct World {
    now: u64,
    rng: Rng,
    net: Network,
    meta: MetaLog,
    controller: Controller,
    nodes: BTreeMap<i32, Node>,
    client: Client,
    checker: Checker,
    rates: Rates,
    faults: Faults,
    next_metadata_push: u64,
    _dir: tempfile::TempDir,
}

/// The run's directory: under `SIM_DIR`, else in memory (`/dev/shm`) when there is one (the
/// logs fsync their checkpoints; on a busy disk that, not the simulation, would set the pace),
/// else the system temp dir. A simulated crash loses no written bytes either way: it models a
/// process crash, not a power loss.
fn sim_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SIM_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let shm = std::path::Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_path_buf())
        });
    let mut builder = tempfile::Builder::new();
    builder.prefix("sluice-replication-sim-");
    match base {
        Some(base) => builder.tempdir_in(base),
        None => builder.tempdir(),
    }
    .expect("a temp dir for the simulated brokers")
}

fn setup_state(brokers: i32) -> MetadataState {
    let mut state = MetadataState::default();
    for id in 1..=brokers {
        state.apply(&MetadataRecord::RegisterBroker {
            id: NodeId(id as u64),
            listeners: vec![Listener {
                name: "PLAINTEXT".into(),
                host: format!("node{id}"),
                port: 9092,
            }],
            rack: None,
        });
    }
    let replicas = place_replicas(&state, 0, 1, REPLICATION_FACTOR)
        .expect("enough brokers")
        .remove(0);
    let created = state.apply(&MetadataRecord::Batch(vec![
        MetadataRecord::Topic {
            name: TOPIC.into(),
            id: "00000000-0000-0000-0000-000000000001".into(),
            partitions: 1,
            configs: BTreeMap::new(),
        },
        MetadataRecord::Partition {
            topic: TOPIC.into(),
            partition: 0,
            state: PartitionState::new(replicas),
        },
    ]));
    assert_eq!(created, Outcome::Applied);
    state
}

impl World {
    pub(crate) fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = Rng::new(seed);
        let drop_p = rng.pick(&[0.0, 0.01, 0.03, 0.08]);
        let delay_p = rng.pick(&[0.0, 0.05, 0.2]);
        let scale = rng.pick(&[0.5, 1.0, 2.0]);
        let rates = Rates {
            crash: 0.004 * scale,
            pause: 0.004 * scale,
            isolate: 0.004 * scale,
            cut: 0.006 * scale,
            failover: 0.002 * scale,
        };
        let fetch_bytes_max = rng.between(80, 800) as usize;
        let rebalance = rng.chance(0.5);
        let dir = sim_dir();
        let log_config = LogConfig {
            min_insync_replicas: MIN_INSYNC_REPLICAS,
            // Small segments, so recovery and truncation cross segment boundaries.
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let ids: Vec<i32> = (1..=config.brokers).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let path = dir.path().join(format!("node{id}"));
                (
                    id,
                    Node::open(id, path, log_config.clone(), fetch_bytes_max),
                )
            })
            .collect();
        let label = format!(
            "seed {seed} with {} brokers (replay: SIM_SEED={seed} cargo test -p sluice-broker --test replication_sim)",
            config.brokers
        );
        let mut checker = Checker::new(label);
        checker.note(
            0,
            format!(
                "drop {drop_p}, delay {delay_p}, fault scale {scale}, fetch bytes {fetch_bytes_max}, rebalance {rebalance}"
            ),
        );
        World {
            now: 0,
            rng,
            net: Network::new(drop_p, delay_p),
            meta: MetaLog::new(setup_state(config.brokers)),
            controller: Controller::new(&ids, rebalance),
            nodes,
            client: Client {
                producing: true,
                ..Client::default()
            },
            checker,
            rates,
            faults: Faults::default(),
            next_metadata_push: 0,
            _dir: dir,
        }
    }

    /// Runs the faulty phase, heals, lets the cluster settle and checks the end state.
    pub(crate) fn run(mut self, config: SimConfig) -> RunStats {
        let ids: Vec<i32> = self.nodes.keys().copied().collect();
        for id in &ids {
            let node = self.nodes.get_mut(id).expect("node");
            let mut env = Env {
                now: 0,
                rng: &mut self.rng,
                net: &mut self.net,
                meta: &self.meta,
                checker: &mut self.checker,
            };
            node.apply_metadata(&mut env);
        }
        let total = config.fault_steps + config.heal_steps;
        for step in 0..total {
            self.now += STEP_MS;
            if step < config.fault_steps {
                self.inject_faults();
            } else if step == config.fault_steps {
                self.heal();
            }
            if step + config.heal_steps / 2 >= total {
                // Let replication quiesce before the final check.
                self.client.producing = false;
            }
            self.step();
        }
        let final_log_digest = self.check_final();
        RunStats {
            final_log_digest,
            acked: self.client.acked.len() as u64,
            produced: self.client.next_value,
            faults: self.faults,
            net: self.net.stats,
            leaderships: self.checker.leaderships,
            metadata_records: self.meta.records.len() as u64,
        }
    }

    fn step(&mut self) {
        let now = self.now;
        let ids: Vec<i32> = self.nodes.keys().copied().collect();
        for id in &ids {
            let node = self.nodes.get_mut(id).expect("node");
            if node.down_until.is_some_and(|t| t <= now) {
                let mut env = Env {
                    now,
                    rng: &mut self.rng,
                    net: &mut self.net,
                    meta: &self.meta,
                    checker: &mut self.checker,
                };
                node.restart(&mut env);
            }
            if node.paused_until.is_some_and(|t| t <= now) {
                node.paused_until = None;
                self.checker.note(now, format!("node {id} resumes"));
            }
        }
        while let Some(envelope) = self.net.next_due(now) {
            self.deliver(envelope);
        }
        let checker = &mut self.checker;
        self.controller.tick(now, &mut self.meta, checker);
        if now >= self.next_metadata_push {
            self.next_metadata_push = now + METADATA_PUSH_MS;
            let upto = self.meta.last_index();
            let targets: Vec<Addr> = ids
                .iter()
                .map(|id| Addr::Node(*id))
                .chain([Addr::Client])
                .collect();
            for to in targets {
                self.net.send(
                    &mut self.rng,
                    now,
                    Addr::Controller,
                    to,
                    Msg::Metadata { upto },
                );
            }
        }
        for id in &ids {
            let node = self.nodes.get_mut(id).expect("node");
            let mut env = Env {
                now,
                rng: &mut self.rng,
                net: &mut self.net,
                meta: &self.meta,
                checker: &mut self.checker,
            };
            node.tick(&mut env);
        }
        self.client_tick();
    }

    fn deliver(&mut self, envelope: Envelope) {
        let now = self.now;
        match envelope.to {
            Addr::Controller => match envelope.msg {
                Msg::Heartbeat => {
                    let Addr::Node(from) = envelope.from else {
                        unreachable!("heartbeats come from brokers")
                    };
                    self.controller.heartbeat(from, now);
                }
                Msg::AlterIsr { record } => {
                    let text = record.to_string();
                    let outcome = self.meta.commit(record);
                    let index = self.meta.last_index();
                    self.checker.note(
                        now,
                        format!(
                            "metadata {index}: {text} from {:?} -> {outcome:?}",
                            envelope.from
                        ),
                    );
                    let from = envelope.from;
                    self.net.send(
                        &mut self.rng,
                        now,
                        Addr::Controller,
                        from,
                        Msg::AlterIsrDone { upto: index },
                    );
                }
                other => unreachable!("controller got {other:?}"),
            },
            Addr::Node(id) => {
                let node = self.nodes.get_mut(&id).expect("node");
                if node.partition.is_none() {
                    return;
                }
                if let Some(until) = node.paused_until {
                    // A stopped process does not read its sockets; the bytes wait.
                    self.net.enqueue(until, envelope);
                    return;
                }
                let mut env = Env {
                    now,
                    rng: &mut self.rng,
                    net: &mut self.net,
                    meta: &self.meta,
                    checker: &mut self.checker,
                };
                node.receive(&mut env, envelope.from, envelope.msg);
            }
            Addr::Client => match envelope.msg {
                Msg::Metadata { upto } => {
                    self.client.applied = self.client.applied.max(upto);
                }
                Msg::ProduceAnswer { id, result } => {
                    let Some((want, value, _)) = self.client.outstanding else {
                        return;
                    };
                    if want != id {
                        return;
                    }
                    self.client.outstanding = None;
                    match result {
                        Ok((offset, epoch)) => {
                            self.checker.note(
                                now,
                                format!(
                                    "client: value {value} acknowledged at offset {offset} epoch {epoch} by {:?}",
                                    envelope.from
                                ),
                            );
                            self.client.acked.push(Acked {
                                value,
                                offset,
                                epoch,
                            });
                        }
                        Err(refusal) => self
                            .checker
                            .note(now, format!("client: value {value} refused: {refusal:?}")),
                    }
                }
                other => unreachable!("client got {other:?}"),
            },
        }
    }

    fn client_tick(&mut self) {
        let now = self.now;
        if self
            .client
            .outstanding
            .is_some_and(|(_, _, give_up)| now >= give_up)
        {
            self.client.outstanding = None;
        }
        if self.client.outstanding.is_some() || !self.client.producing {
            return;
        }
        let leader = self.meta.states[self.client.applied]
            .partition(TOPIC, 0)
            .and_then(|p| p.leader);
        let Some(leader) = leader else { return };
        self.client.next_id += 1;
        let (id, value) = (self.client.next_id, self.client.next_value);
        self.client.next_value += 1;
        self.client.outstanding = Some((id, value, now + CLIENT_TIMEOUT_MS));
        self.net.send(
            &mut self.rng,
            now,
            Addr::Client,
            Addr::Node(leader.0 as i32),
            Msg::Produce { id, value },
        );
    }

    fn inject_faults(&mut self) {
        let now = self.now;
        let ids: Vec<i32> = self.nodes.keys().copied().collect();
        let running: Vec<i32> = ids
            .iter()
            .copied()
            .filter(|id| self.nodes[id].running())
            .collect();
        // At most a minority of brokers crashed or stopped at once.
        let out = ids.len() - running.len();
        let may_stop = out < (ids.len() - 1) / 2 && !running.is_empty();
        if may_stop && self.rng.chance(self.rates.crash) {
            let id = self.rng.pick(&running);
            let until = now + self.rng.between(10, 80) * STEP_MS;
            self.nodes.get_mut(&id).expect("node").crash(until);
            self.faults.crashes += 1;
            self.checker
                .note(now, format!("FAULT: node {id} crashes until {until}"));
        } else if may_stop && self.rng.chance(self.rates.pause) {
            let id = self.rng.pick(&running);
            let until = now + self.rng.between(10, 80) * STEP_MS;
            self.nodes.get_mut(&id).expect("node").paused_until = Some(until);
            self.faults.pauses += 1;
            self.checker
                .note(now, format!("FAULT: node {id} paused until {until}"));
        }
        if self.rng.chance(self.rates.isolate) {
            let id = self.rng.pick(&ids);
            let until = now + self.rng.between(10, 100) * STEP_MS;
            self.net.isolate(Addr::Node(id), until);
            self.faults.isolations += 1;
            self.checker
                .note(now, format!("FAULT: node {id} isolated until {until}"));
        }
        if self.rng.chance(self.rates.cut) {
            let mut addrs: Vec<Addr> = ids.iter().map(|id| Addr::Node(*id)).collect();
            addrs.extend([Addr::Controller, Addr::Client]);
            let a = self.rng.pick(&addrs);
            addrs.retain(|x| *x != a);
            let b = self.rng.pick(&addrs);
            let until = now + self.rng.between(10, 100) * STEP_MS;
            self.net.cut_link(a, b, until);
            self.faults.link_cuts += 1;
            self.checker
                .note(now, format!("FAULT: link {a:?} - {b:?} cut until {until}"));
        }
        if self.rng.chance(self.rates.failover) {
            self.controller.fail_over(now);
            self.faults.failovers += 1;
            self.checker
                .note(now, "FAULT: controller fails over".to_string());
        }
    }

    /// Ends every fault: partitions and loss stop, crashed brokers restart, paused ones resume.
    fn heal(&mut self) {
        self.net.heal();
        self.checker.note(self.now, "HEAL".to_string());
        for node in self.nodes.values_mut() {
            if node.down_until.is_some() {
                node.down_until = Some(self.now);
            }
            if node.paused_until.is_some() {
                node.paused_until = Some(self.now);
            }
        }
    }

    /// Runs the final checks; returns a digest of the final leader's log.
    fn check_final(&mut self) -> u64 {
        let latest = self
            .meta
            .latest()
            .partition(TOPIC, 0)
            .expect("partition")
            .clone();
        let Some(leader) = latest.leader.map(|n| n.0 as i32) else {
            self.checker
                .fail(format!("no leader after healing: {latest:?}"))
        };
        for node in self.nodes.values() {
            if node.applied != self.meta.last_index() {
                self.checker.fail(format!(
                    "node {} has applied metadata {} of {} after healing",
                    node.id,
                    node.applied,
                    self.meta.last_index()
                ));
            }
        }
        let partition = self.nodes[&leader]
            .partition
            .as_ref()
            .expect("the leader runs");
        let high_watermark = partition.high_watermark().0;
        let leader_log = records::entries(partition, 0, partition.log_end_offset().0);
        let in_sync: Vec<(i32, Vec<crate::records::Entry>)> = partition
            .isr()
            .into_iter()
            .filter(|r| *r != leader)
            .map(|r| {
                let p = self.nodes[&r].partition.as_ref().expect("running");
                (r, records::entries(p, 0, high_watermark))
            })
            .collect();
        self.checker.check_final(
            leader,
            &leader_log,
            high_watermark,
            &in_sync,
            &self.client.acked,
        );
        // FNV-1a over the entries.
        leader_log.iter().fold(0xcbf2_9ce4_8422_2325, |h, e| {
            [e.offset as u64, e.epoch as u64, e.value]
                .iter()
                .fold(h, |h, x| (h ^ x).wrapping_mul(0x0100_0000_01b3))
        })
    }
}

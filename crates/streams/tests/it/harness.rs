//! End-to-end harness: a real `sluice serve` (the workspace's built binary, found next to this
//! test binary's directory) on a free port, the crate's examples run as processes, rdkafka
//! clients to feed and read topics, and a watchdog that kills every child process and fails the
//! test when it runs past its deadline. Every child is also killed when its handle drops.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

/// Every child process started, so the watchdog can kill them all.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
}

/// Runs `body` on its own thread; if it has not finished after `deadline`, kills every child
/// process and fails.
pub(crate) fn with_watchdog(deadline: Duration, body: impl FnOnce() + Send + 'static) {
    let handle = std::thread::spawn(body);
    let start = Instant::now();
    while !handle.is_finished() {
        if start.elapsed() > deadline {
            for pid in CHILDREN.lock().unwrap().drain(..) {
                kill_pid(pid);
            }
            panic!("end-to-end test did not finish within {deadline:?}; killed its processes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Waits for `condition` to hold, polling; fails with `what` after `timeout`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `target/<profile>/`, from this test binary's path (`target/<profile>/deps/it-...`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

fn binary(path: PathBuf, build_hint: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing; build it first: {build_hint}",
        path.display()
    );
    path
}

/// A child process whose output is collected; killed on drop.
pub(crate) struct Process {
    child: Option<Child>,
    pid: u32,
    stdout_lines: Mutex<std::sync::mpsc::Receiver<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let pid = child.id();
        CHILDREN.lock().unwrap().push(pid);
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().expect("stderr piped");
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Process {
            child: Some(child),
            pid,
            stdout_lines: Mutex::new(rx),
            stderr,
        }
    }

    fn first_line(&self, timeout: Duration) -> String {
        self.stdout_lines
            .lock()
            .unwrap()
            .recv_timeout(timeout)
            .unwrap_or_else(|_| {
                panic!(
                    "process printed nothing in {timeout:?}; stderr:\n{}",
                    self.stderr()
                )
            })
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            CHILDREN.lock().unwrap().retain(|p| *p != self.pid);
        }
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub(crate) fn signal(&self, name: &str) {
        if self.child.is_some() {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(self.pid.to_string())
                .status();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit; whether it exited with status 0.
    pub(crate) fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ok = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
            }
        };
        CHILDREN.lock().unwrap().retain(|p| *p != self.pid);
        ok
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A stopped process would not die of SIGKILL's cleanup otherwise waiting forever.
        self.signal("CONT");
        self.kill9();
    }
}

/// A running broker.
pub(crate) struct Broker {
    /// Kept so the broker dies with the handle.
    _process: Process,
    pub(crate) port: u16,
}

impl Broker {
    pub(crate) fn start(data_dir: &Path) -> Broker {
        let mut command =
            Command::new(binary(target_dir().join("sluice"), "cargo build -p sluice"));
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            // A new consumer group starts at once (not after Kafka's 3 s delay).
            .env("SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
            .env("RUST_LOG", "warn");
        let process = Process::spawn(command);
        let line = process.first_line(Duration::from_secs(60));
        let port = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Broker {
            _process: process,
            port,
        }
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("broker.address.family", "v4")
            .set("log_level", "3");
        c
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .expect("create_topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
        }
    }

    /// How many partitions `topic` has.
    pub(crate) fn partition_count(&self, topic: &str) -> usize {
        let consumer: BaseConsumer = self.client_config().create().expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        metadata.topics()[0].partitions().len()
    }

    /// The value of config `name` of `topic`, as the broker describes it.
    pub(crate) fn topic_config(&self, topic: &str, name: &str) -> Option<String> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = futures::executor::block_on(
            admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )
        .expect("describe_configs");
        let resource = results
            .into_iter()
            .next()
            .expect("one resource")
            .unwrap_or_else(|e| panic!("describing {topic}: {e}"));
        resource.get(name).and_then(|entry| entry.value.clone())
    }

    /// Produces records (key, value, timestamp) and waits until all are acknowledged; fails
    /// when the broker rejects any (a timestamp too far in the future, say), so a test never
    /// waits for input that was never written.
    pub(crate) fn produce(&self, topic: &str, records: &[(Option<String>, String, Option<i64>)]) {
        let producer: BaseProducer<FailedDeliveries> = self
            .client_config()
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .create_with_context(FailedDeliveries::default())
            .expect("producer");
        for (key, value, ts) in records {
            let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic).payload(value.as_str());
            if let Some(k) = key {
                r = r.key(k.as_str());
            }
            if let Some(ts) = ts {
                r = r.timestamp(*ts);
            }
            let mut r = r;
            loop {
                match producer.send(r) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        producer.poll(Duration::from_millis(10));
                        r = back;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        let failed = producer.context().0.lock().unwrap();
        assert!(failed.is_empty(), "producing to {topic} failed: {failed:?}");
    }

    /// Every record of `topic` (read_committed), as (key, value) strings, in offset order per
    /// partition.
    pub(crate) fn read_all(&self, topic: &str) -> Vec<(String, String)> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", "e2e-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut ends = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            ends.push((p, high));
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let mut out: Vec<Vec<(String, String)>> = vec![Vec::new(); partitions.len()];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let positions = consumer.position().expect("position");
            let done = ends.iter().all(|(p, end)| {
                *end == 0
                    || positions
                        .find_partition(topic, *p)
                        .and_then(|e| match e.offset() {
                            rdkafka::Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .is_some_and(|pos| pos >= *end)
            });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reading {topic} to its end timed out"
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let value = m
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let idx = partitions
                    .iter()
                    .position(|p| *p == m.partition())
                    .expect("known partition");
                out[idx].push((key, value));
            }
        }
        consumer.unassign().ok();
        out.into_iter().flatten().collect()
    }
}

/// A producer context that keeps the errors of failed deliveries.
#[derive(Default)]
struct FailedDeliveries(Mutex<Vec<String>>);

impl ClientContext for FailedDeliveries {}

impl ProducerContext for FailedDeliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

/// An example application run as a process: `target/<profile>/examples/NAME`.
pub(crate) struct Example {
    pub(crate) process: Process,
}

impl Example {
    /// Starts example `name` with `args` and waits for its `running` line.
    pub(crate) fn start(name: &str, broker: &Broker, args: &[&str]) -> Example {
        let path = binary(
            target_dir().join("examples").join(name),
            &format!("cargo build -p sluice-streams --example {name}"),
        );
        let mut command = Command::new(path);
        command
            .arg("--bootstrap-servers")
            .arg(broker.bootstrap())
            .args(args)
            .env("RUST_LOG", "sluice_streams=info,warn");
        let process = Process::spawn(command);
        let line = process.first_line(Duration::from_secs(120));
        assert!(
            line.starts_with("running"),
            "unexpected first line {line:?}; stderr:\n{}",
            process.stderr()
        );
        Example { process }
    }
}

/// The latest value per key.
pub(crate) fn latest(records: &[(String, String)]) -> std::collections::HashMap<String, String> {
    records.iter().cloned().collect()
}

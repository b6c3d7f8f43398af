//! `word_count` against a real broker: end to end, exactly-once through repeated kill -9,
//! restoration from the changelog after the local store is deleted, and two instances sharing
//! the partitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{latest, wait_for, with_watchdog, Broker, Example};

const WORDS: [&str; 24] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray",
];

/// Line `i`: five words picked deterministically, mixed case (the example lower-cases).
fn line(i: usize) -> String {
    (0..5)
        .map(|j| {
            let w = WORDS[(i * 7 + j * 13 + i / 3) % WORDS.len()];
            if (i + j).is_multiple_of(4) {
                w.to_uppercase()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn count_words(lines: &[String]) -> HashMap<String, i64> {
    let mut counts = HashMap::new();
    for l in lines {
        for w in l.split_whitespace() {
            *counts.entry(w.to_lowercase()).or_insert(0) += 1;
        }
    }
    counts
}

fn produce_lines(broker: &Broker, range: std::ops::Range<usize>) -> Vec<String> {
    let lines: Vec<String> = range.map(line).collect();
    let records: Vec<_> = lines.iter().map(|l| (None, l.clone(), None)).collect();
    broker.produce("text-lines", &records);
    lines
}

fn as_counts(records: &[(String, String)]) -> HashMap<String, i64> {
    latest(records)
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                v.parse()
                    .unwrap_or_else(|_| panic!("count {v:?} is not a decimal")),
            )
        })
        .collect()
}

/// Waits until the latest count per word equals `truth`.
fn wait_for_counts(
    broker: &Broker,
    truth: &HashMap<String, i64>,
    timeout: Duration,
    apps: &[&Example],
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = as_counts(&broker.read_all("word-counts"));
        if &got == truth {
            return;
        }
        if Instant::now() > deadline {
            let stderr: Vec<String> = apps.iter().map(|a| a.process.stderr()).collect();
            panic!(
                "counts did not converge in {timeout:?}\nwant {truth:?}\ngot  {got:?}\napps:\n{}",
                stderr.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Lines produced in small batches from a thread, while a test kills and restarts things.
struct Feeder {
    produced: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Feeder {
    fn start(broker: &Arc<Broker>) -> Feeder {
        let produced = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (broker, produced, stop) = (broker.clone(), produced.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next = 0;
                while !stop.load(Ordering::Acquire) {
                    let lines = produce_lines(&broker, next..next + 10);
                    next += 10;
                    produced.lock().unwrap().extend(lines);
                    // Pacing, not waiting: input keeps flowing at about 100 lines/s.
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Feeder {
            produced,
            stop,
            thread,
        }
    }

    /// Stops feeding; every line produced.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap();
        let lines = self.produced.lock().unwrap().clone();
        lines
    }
}

/// The output's size (sum of high watermarks; transaction markers included).
fn output_size(broker: &Broker) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = broker.client_config().create().unwrap();
    let metadata = c
        .fetch_metadata(Some("word-counts"), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            c.fetch_watermarks("word-counts", p.id(), Duration::from_secs(10))
                .map_or(0, |w| w.1)
        })
        .sum()
}

/// Every committed update of a word is its previous count plus one: no repeats, no going
/// backwards, nothing lost.
fn assert_updates_count_up_by_one(broker: &Broker, truth: &HashMap<String, i64>) {
    let mut sequences: HashMap<String, Vec<i64>> = HashMap::new();
    for (word, count) in broker.read_all("word-counts") {
        sequences
            .entry(word)
            .or_default()
            .push(count.parse().unwrap());
    }
    for (word, seq) in &sequences {
        let expected: Vec<i64> = (1..=truth[word]).collect();
        assert_eq!(
            seq, &expected,
            "committed counts of {word:?} are not 1..={}",
            truth[word]
        );
    }
}

/// How many tasks an example instance runs now, from its log.
fn owned_tasks(app: &Example) -> usize {
    let log = app.process.stderr();
    log.matches("task assigned").count() - log.matches("task revoked").count()
}

fn setup(dir: &tempfile::TempDir, partitions: i32) -> Broker {
    let broker = Broker::start(&dir.path().join("broker"));
    broker.create_topic("text-lines", partitions, &[]);
    broker.create_topic("word-counts", partitions, &[]);
    broker
}

fn start(broker: &Broker, state: &std::path::Path, guarantee: &str) -> Example {
    start_with_threads(broker, state, guarantee, 1)
}

fn start_with_threads(
    broker: &Broker,
    state: &std::path::Path,
    guarantee: &str,
    threads: usize,
) -> Example {
    let threads = threads.to_string();
    Example::start(
        "word_count",
        broker,
        &[
            "--application-id",
            "wc",
            "--processing-guarantee",
            guarantee,
            "--state-dir",
            state.to_str().unwrap(),
            "--commit-interval-ms",
            "200",
            "--num-stream-threads",
            &threads,
        ],
    )
}

#[test]
fn word_count_counts_words_end_to_end_and_stops_cleanly() {
    with_watchdog(Duration::from_secs(240), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = setup(&dir, 3);
        let lines = produce_lines(&broker, 0..200);
        let mut app = start(&broker, &dir.path().join("state"), "at_least_once");
        let truth = count_words(&lines);
        wait_for_counts(&broker, &truth, Duration::from_secs(120), &[&app]);
        assert!(
            app.process.stop(),
            "word_count did not exit cleanly on SIGTERM:\n{}",
            app.process.stderr()
        );
        // The example's internal topics follow Kafka Streams' names, have as many partitions as
        // the input, and the changelog is compacted.
        let repartition_topic = "wc-KSTREAM-AGGREGATE-0000000003-repartition";
        assert_eq!(broker.partition_count(repartition_topic), 3);
        assert_eq!(broker.partition_count("wc-counts-changelog"), 3);
        assert_eq!(
            broker
                .topic_config("wc-counts-changelog", "cleanup.policy")
                .as_deref(),
            Some("compact")
        );
        let repartition = broker.read_all(repartition_topic);
        assert_eq!(repartition.len() as i64, truth.values().sum::<i64>());
        // One key per word in the store's changelog (values are 8-byte counts).
        let changelog = latest(&broker.read_all("wc-counts-changelog"));
        assert_eq!(changelog.len(), truth.len());
    });
}

#[test]
fn word_count_exactly_once_survives_repeated_kill_9() {
    with_watchdog(Duration::from_secs(420), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(setup(&dir, 3));
        let state = dir.path().join("state");
        // Input keeps flowing while the application is killed and restarted. Two stream threads:
        // two transactional producers, each committing its own tasks' output and offsets.
        let feeder = Feeder::start(&broker);
        let eos = |broker: &Broker| start_with_threads(broker, &state, "exactly_once_v2", 2);
        let mut app = eos(&broker);
        for round in 0..3 {
            // Kill only once this incarnation has written output of its own.
            let before = output_size(&broker);
            wait_for(
                &format!("output growth in round {round}"),
                Duration::from_secs(120),
                || output_size(&broker) > before + 50,
            );
            app.process.kill9();
            app = eos(&broker);
        }
        let truth = count_words(&feeder.stop());
        wait_for_counts(&broker, &truth, Duration::from_secs(180), &[&app]);
        assert_updates_count_up_by_one(&broker, &truth);
        assert!(app.process.stop(), "{}", app.process.stderr());
    });
}

#[test]
fn word_count_exactly_once_fences_a_paused_instance() {
    with_watchdog(Duration::from_secs(420), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(setup(&dir, 2));
        let feeder = Feeder::start(&broker);
        let mut a = start(&broker, &dir.path().join("state-a"), "exactly_once_v2");
        let mut b = start(&broker, &dir.path().join("state-b"), "exactly_once_v2");
        wait_for(
            "both instances to own tasks",
            Duration::from_secs(60),
            || owned_tasks(&a) > 0 && owned_tasks(&b) > 0,
        );
        let before = output_size(&broker);
        wait_for("output growth", Duration::from_secs(120), || {
            output_size(&broker) > before + 50
        });
        // b stops mid-flight past its session timeout: a takes its tasks over, and when b wakes up
        // it is a zombie whose transaction and offsets must be fenced.
        b.process.signal("STOP");
        wait_for("a to take over b's tasks", Duration::from_secs(120), || {
            owned_tasks(&a) == 4
        });
        let before = output_size(&broker);
        wait_for("output growth without b", Duration::from_secs(120), || {
            output_size(&broker) > before + 50
        });
        b.process.signal("CONT");
        let before = output_size(&broker);
        wait_for(
            "output growth after b woke up",
            Duration::from_secs(120),
            || output_size(&broker) > before + 50,
        );
        let truth = count_words(&feeder.stop());
        wait_for_counts(&broker, &truth, Duration::from_secs(180), &[&a, &b]);
        assert_updates_count_up_by_one(&broker, &truth);
        // b did wake up as a zombie: librdkafka told it its assignment was lost.
        wait_for(
            "b to notice it lost its assignment",
            Duration::from_secs(60),
            || b.process.stderr().contains("assignment lost"),
        );
        assert!(a.process.stop(), "{}", a.process.stderr());
        assert!(b.process.stop(), "{}", b.process.stderr());
    });
}

#[test]
fn word_count_restores_state_from_the_changelog_after_the_local_store_is_deleted() {
    with_watchdog(Duration::from_secs(240), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = setup(&dir, 2);
        let state = dir.path().join("state");
        let mut lines = produce_lines(&broker, 0..100);
        let mut app = start(&broker, &state, "at_least_once");
        wait_for_counts(
            &broker,
            &count_words(&lines),
            Duration::from_secs(120),
            &[&app],
        );
        assert!(app.process.stop(), "{}", app.process.stderr());
        std::fs::remove_dir_all(&state).unwrap();
        lines.extend(produce_lines(&broker, 100..150));
        let mut app = start(&broker, &state, "at_least_once");
        // Counts continue from the restored state, not from zero.
        wait_for_counts(
            &broker,
            &count_words(&lines),
            Duration::from_secs(120),
            &[&app],
        );
        assert!(
            app.process.stderr().contains("task restored"),
            "{}",
            app.process.stderr()
        );
        assert!(app.process.stop(), "{}", app.process.stderr());
    });
}

#[test]
fn two_instances_share_partitions_and_survive_one_leaving() {
    with_watchdog(Duration::from_secs(300), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = setup(&dir, 4);
        let mut a = start(&broker, &dir.path().join("state-a"), "exactly_once_v2");
        let mut b = start(&broker, &dir.path().join("state-b"), "exactly_once_v2");
        let mut lines = produce_lines(&broker, 0..120);
        wait_for_counts(
            &broker,
            &count_words(&lines),
            Duration::from_secs(120),
            &[&a, &b],
        );
        wait_for(
            "both instances to own tasks",
            Duration::from_secs(60),
            || {
                a.process.stderr().contains("task assigned")
                    && b.process.stderr().contains("task assigned")
            },
        );
        let a_tasks_before = a.process.stderr().matches("task assigned").count();
        assert!(b.process.stop(), "{}", b.process.stderr());
        lines.extend(produce_lines(&broker, 120..240));
        wait_for_counts(
            &broker,
            &count_words(&lines),
            Duration::from_secs(120),
            &[&a],
        );
        assert!(
            a.process.stderr().matches("task assigned").count() > a_tasks_before,
            "the remaining instance took over no task:\n{}",
            a.process.stderr()
        );
        assert!(a.process.stop(), "{}", a.process.stderr());
    });
}

//! Every DSL operator, window kind and join, and the processor API, through the test driver.

use std::collections::HashMap;
use std::time::Duration;

use sluice_streams::{
    DeserializationPolicy, JoinWindows, Materialized, Processor, ProcessorContext, PunctuationType,
    PunctuatorId, Record, Serdes, SessionWindows, SlidingWindows, Stores, StreamsBuilder,
    TestDriverConfig, TimeWindows, TopologyTestDriver, Window, Windowed,
};

fn s(x: &str) -> String {
    x.to_string()
}

fn driver(builder: StreamsBuilder) -> TopologyTestDriver {
    TopologyTestDriver::new(builder.build().expect("valid topology")).expect("driver")
}

#[test]
fn stateless_operators() {
    let b = StreamsBuilder::new();
    let input = b.stream("in", Serdes::string(), Serdes::string());
    input.filter(|_, v| v.len() > 2).to("filtered");
    input.filter_not(|_, v| v.len() > 2).to("short");
    input
        .map(|k, v| (v, k))
        .with_serdes(Serdes::string(), Serdes::string())
        .to("swapped");
    input
        .map_values(|v| v.len() as i64)
        .to_with("lengths", Serdes::string(), Serdes::i64());
    input
        .flat_map(|k, v| {
            v.split(' ')
                .map(|w| (w.to_string(), k.clone()))
                .collect::<Vec<_>>()
        })
        .with_serdes(Serdes::string(), Serdes::string())
        .to("flat");
    input
        .flat_map_values(|v| v.chars().map(|c| c.to_string()).collect::<Vec<_>>())
        .with_serdes(Serdes::string(), Serdes::string())
        .to("chars");
    input
        .select_key(|_, v| v.to_uppercase())
        .with_serdes(Serdes::string(), Serdes::string())
        .to("rekeyed");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    input
        .peek(move |k, _| seen2.lock().unwrap().push(k.clone()))
        .to("peeked");
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    i.pipe_input(s("k1"), s("a b")).unwrap();
    i.pipe_input(s("k2"), s("xy")).unwrap();
    let str2 = || (Serdes::string(), Serdes::string());
    let (k, v) = str2();
    assert_eq!(
        d.output_topic("filtered", k, v).read_key_values(),
        vec![(s("k1"), s("a b"))]
    );
    let (k, v) = str2();
    assert_eq!(
        d.output_topic("short", k, v).read_key_values(),
        vec![(s("k2"), s("xy"))]
    );
    let (k, v) = str2();
    assert_eq!(
        d.output_topic("swapped", k, v).read_key_values(),
        vec![(s("a b"), s("k1")), (s("xy"), s("k2"))]
    );
    assert_eq!(
        d.output_topic("lengths", Serdes::string(), Serdes::i64())
            .read_key_values(),
        vec![(s("k1"), 3), (s("k2"), 2)]
    );
    let (k, v) = str2();
    assert_eq!(
        d.output_topic("flat", k, v).read_key_values(),
        vec![(s("a"), s("k1")), (s("b"), s("k1")), (s("xy"), s("k2"))]
    );
    let (k, v) = str2();
    assert_eq!(d.output_topic("chars", k, v).read_key_values().len(), 5);
    let (k, v) = str2();
    assert_eq!(
        d.output_topic("rekeyed", k, v).read_key_values()[0].0,
        "A B"
    );
    assert_eq!(*seen.lock().unwrap(), vec![s("k1"), s("k2")]);
    let (k, v) = str2();
    assert_eq!(d.output_topic("peeked", k, v).read_key_values().len(), 2);
}

#[test]
fn branch_merge_and_foreach() {
    let b = StreamsBuilder::new();
    let input = b.stream("in", Serdes::string(), Serdes::i64());
    let branches = input.branch(vec![Box::new(|_, v| *v < 0), Box::new(|_, v| *v % 2 == 0)]);
    branches[0].to("negative");
    branches[1].to("even");
    let other = b.stream("in2", Serdes::string(), Serdes::i64());
    branches[1].merge(&other).to("merged");
    let total = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let t = total.clone();
    input.foreach(move |_, v| {
        t.fetch_add(*v, std::sync::atomic::Ordering::SeqCst);
    });
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    for v in [-1, 2, 3, 4] {
        i.pipe_input(s("k"), v).unwrap();
    }
    d.input_topic("in2", Serdes::string(), Serdes::i64())
        .pipe_input(s("o"), 7)
        .unwrap();
    let out = |t: &str| {
        d.output_topic(t, Serdes::string(), Serdes::i64())
            .read_key_values()
    };
    assert_eq!(out("negative"), vec![(s("k"), -1)]);
    // 3 matches no predicate and is dropped.
    assert_eq!(out("even"), vec![(s("k"), 2), (s("k"), 4)]);
    assert_eq!(out("merged"), vec![(s("k"), 2), (s("k"), 4), (s("o"), 7)]);
    assert_eq!(total.load(std::sync::atomic::Ordering::SeqCst), 8);
}

#[test]
fn word_count_repartitions_counts_and_changelogs() {
    let b = StreamsBuilder::new();
    b.stream("lines", Serdes::unit(), Serdes::string())
        .flat_map_values(|line| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Serdes::string(), Serdes::string())
        .count(Materialized::named("counts"))
        .to_stream()
        .to_with("counts-out", Serdes::string(), Serdes::i64_decimal());
    let topology = b.build().unwrap();
    assert!(
        topology.describe().contains("Sub-topology: 1"),
        "{}",
        topology.describe()
    );
    let d = TopologyTestDriver::new(topology).unwrap();
    let mut lines = d.input_topic("lines", Serdes::unit(), Serdes::string());
    lines.pipe_input((), s("the quick The")).unwrap();
    lines.pipe_input((), s("quick")).unwrap();
    let out = d.output_topic("counts-out", Serdes::string(), Serdes::i64_decimal());
    assert_eq!(
        out.read_key_values(),
        vec![
            (s("the"), 1),
            (s("quick"), 1),
            (s("the"), 2),
            (s("quick"), 2)
        ]
    );
    // The grouping went through a repartition topic named after the application id.
    let repartition = d.output_topic(
        "test-driver-KSTREAM-AGGREGATE-0000000003-repartition",
        Serdes::string(),
        Serdes::string(),
    );
    assert_eq!(repartition.read_key_values().len(), 4);
    // The store is changelogged, latest value per key per commit.
    let changelog = d.output_topic(
        "test-driver-counts-changelog",
        Serdes::string(),
        Serdes::i64(),
    );
    let latest = changelog.read_key_values_to_map();
    assert_eq!(latest, HashMap::from([(s("the"), 2), (s("quick"), 2)]));
    let store = d.key_value_store::<String, i64>("counts").unwrap();
    assert_eq!(store.get(&s("the")).unwrap(), Some(2));
    assert_eq!(store.all().unwrap().len(), 2);
}

#[test]
fn reduce_and_aggregate() {
    let b = StreamsBuilder::new();
    let grouped = b
        .stream("in", Serdes::string(), Serdes::i64())
        .group_by_key();
    grouped
        .reduce(|a, b| a.max(b), Materialized::named("max"))
        .to_stream()
        .to("max-out");
    grouped
        .aggregate(
            || s(""),
            |_, v, acc: String| format!("{acc}{v}"),
            Materialized::named("concat").with_value_serde(Serdes::string()),
        )
        .to_stream()
        .to("concat-out");
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    for (k, v) in [("a", 3), ("a", 1), ("b", 5), ("a", 7)] {
        i.pipe_input(s(k), v).unwrap();
    }
    let max = d
        .output_topic("max-out", Serdes::string(), Serdes::i64())
        .read_key_values();
    assert_eq!(
        max,
        vec![(s("a"), 3), (s("a"), 3), (s("b"), 5), (s("a"), 7)]
    );
    let concat = d
        .output_topic("concat-out", Serdes::string(), Serdes::string())
        .read_key_values_to_map();
    assert_eq!(concat[&s("a")], "317");
}

#[test]
fn missing_serde_is_a_build_error_that_says_what_to_do() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::string())
        .map(|k, v| (v, k))
        .group_by_key()
        .count(Materialized::new());
    let err = b.build().err().expect("should not build").to_string();
    assert!(err.contains("with_serdes"), "{err}");
}

#[test]
fn processor_using_an_unknown_store_is_a_build_error() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::string())
        .process::<String, String, _>(
            || Dedupe {
                store: None,
                emitted: 0,
                stream_punctuator: None,
            },
            &["nope"],
        );
    let err = b.build().err().expect("should not build").to_string();
    assert!(
        err.contains("nope") && err.contains("add_state_store"),
        "{err}"
    );
}

fn tumbling_counts(grace_ms: u64) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::string())
        .group_by_key()
        .windowed_by(
            TimeWindows::tumbling(Duration::from_millis(100))
                .grace(Duration::from_millis(grace_ms)),
        )
        .count(Materialized::named("windowed"))
        .to_stream()
        .map(|w: Windowed<String>, c| (format!("{}@{}", w.key, w.window.start), c))
        .to_with("out", Serdes::string(), Serdes::i64());
    driver(b)
}

#[test]
fn tumbling_windows_with_grace_drop_late_records() {
    let d = tumbling_counts(50);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    i.pipe_input_at(s("k"), s("a"), 10).unwrap();
    i.pipe_input_at(s("k"), s("b"), 99).unwrap();
    i.pipe_input_at(s("k"), s("c"), 100).unwrap();
    i.pipe_input_at(s("k"), s("d"), 149).unwrap();
    // Stream time 149: window [0,100) closes at 100 + 50 = 150, so this is still in grace.
    i.pipe_input_at(s("k"), s("late-ok"), 50).unwrap();
    i.pipe_input_at(s("k"), s("e"), 150).unwrap();
    // Now window [0,100) is closed: dropped.
    i.pipe_input_at(s("k"), s("too-late"), 60).unwrap();
    let out = d
        .output_topic("out", Serdes::string(), Serdes::i64())
        .read_key_values();
    assert_eq!(
        out,
        vec![
            (s("k@0"), 1),
            (s("k@0"), 2),
            (s("k@100"), 1),
            (s("k@100"), 2),
            (s("k@0"), 3),
            (s("k@100"), 3)
        ]
    );
    assert_eq!(d.counters().dropped_late, 1);
    let store = d.window_store::<String, i64>("windowed").unwrap();
    assert_eq!(
        store.fetch(&s("k"), 0, 200).unwrap(),
        vec![(0, 3), (100, 3)]
    );
}

#[test]
fn hopping_windows_count_a_record_in_each_window() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::string())
        .group_by_key()
        .windowed_by(TimeWindows::hopping(
            Duration::from_millis(100),
            Duration::from_millis(50),
        ))
        .count(Materialized::new())
        .to_stream()
        .map(|w: Windowed<String>, c| (format!("{}-{}", w.window.start, w.window.end), c))
        .to_with("out", Serdes::string(), Serdes::i64());
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    i.pipe_input_at(s("k"), s("a"), 60).unwrap();
    i.pipe_input_at(s("k"), s("b"), 120).unwrap();
    let out = d
        .output_topic("out", Serdes::string(), Serdes::i64())
        .read_key_values();
    assert_eq!(
        out,
        vec![
            (s("0-100"), 1),
            (s("50-150"), 1),
            (s("50-150"), 2),
            (s("100-200"), 1)
        ]
    );
}

#[test]
fn sliding_windows_aggregate_records_within_the_difference() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::i64())
        .group_by_key()
        .windowed_by_sliding(
            SlidingWindows::with_time_difference(Duration::from_millis(10))
                .grace(Duration::from_millis(100)),
        )
        .aggregate(|| 0i64, |_, v, sum| sum + v, Serdes::i64())
        .to_stream()
        .map(|w: Windowed<String>, c| (format!("{}-{}", w.window.start, w.window.end), c))
        .to_with("out", Serdes::string(), Serdes::i64());
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    i.pipe_input_at(s("k"), 1, 10).unwrap();
    i.pipe_input_at(s("k"), 2, 15).unwrap();
    i.pipe_input_at(s("k"), 4, 30).unwrap();
    let out: HashMap<String, i64> = d
        .output_topic("out", Serdes::string(), Serdes::i64())
        .read_key_values_to_map();
    // Windows ending at each record, and the windows just after each record.
    assert_eq!(out["0-10"], 1);
    assert_eq!(out["5-15"], 3);
    assert_eq!(out["11-21"], 2);
    assert_eq!(out["20-30"], 4);
    // A window after 15 would hold no record: it does not exist.
    assert!(!out.contains_key("16-26"), "{out:?}");
}

#[test]
fn session_windows_merge_and_suppress_emits_final_sessions_only() {
    let b = StreamsBuilder::new();
    let sessions = b
        .stream("views", Serdes::string(), Serdes::string())
        .group_by_key()
        .windowed_by_session(
            SessionWindows::with_inactivity_gap(Duration::from_millis(30))
                .grace(Duration::from_millis(30)),
        )
        .count(Materialized::named("sessions"));
    sessions
        .to_stream_with_tombstones()
        .map(|w: Windowed<String>, c: Option<i64>| {
            (
                format!("{}:{}-{}", w.key, w.window.start, w.window.end),
                c.unwrap_or(-1),
            )
        })
        .to_with("all-updates", Serdes::string(), Serdes::i64());
    sessions
        .suppress_until_window_closes()
        .to_stream()
        .map(|w: Windowed<String>, c| (format!("{}:{}-{}", w.key, w.window.start, w.window.end), c))
        .to_with("final", Serdes::string(), Serdes::i64());
    let d = driver(b);
    let mut i = d.input_topic("views", Serdes::string(), Serdes::string());
    i.pipe_input_at(s("u"), s("/a"), 0).unwrap();
    i.pipe_input_at(s("u"), s("/b"), 50).unwrap();
    // Bridges the two sessions into one [0, 50].
    i.pipe_input_at(s("u"), s("/c"), 25).unwrap();
    i.pipe_input_at(s("v"), s("/a"), 60).unwrap();
    let updates = d
        .output_topic("all-updates", Serdes::string(), Serdes::i64())
        .read_key_values();
    assert!(
        updates.contains(&(s("u:0-0"), -1)) && updates.contains(&(s("u:50-50"), -1)),
        "{updates:?}"
    );
    assert!(updates.contains(&(s("u:0-50"), 3)), "{updates:?}");
    let store = d.session_store::<String, i64>("sessions").unwrap();
    let found = store.find_sessions(&s("u"), 0, 100).unwrap();
    assert_eq!(
        found,
        vec![(
            Windowed {
                key: s("u"),
                window: Window::new(0, 50)
            },
            3
        )]
    );
    let fin = d.output_topic("final", Serdes::string(), Serdes::i64());
    assert!(
        fin.is_empty(),
        "nothing is final while sessions may still grow"
    );
    // Stream time 111 > 50 + gap + grace: u's session is closed; v's (60) is not.
    i.pipe_input_at(s("w"), s("/x"), 111).unwrap();
    assert_eq!(fin.read_key_values(), vec![(s("u:0-50"), 3)]);
    // Too late: its session would be u's [0, 50], closed (50 + gap + grace < 111). Dropped.
    i.pipe_input_at(s("u"), s("/late"), 20).unwrap();
    assert_eq!(d.counters().dropped_late, 1);
    i.pipe_input_at(s("w"), s("/y"), 300).unwrap();
    assert_eq!(
        fin.read_key_values(),
        vec![(s("v:60-60"), 1), (s("w:111-111"), 1)]
    );
}

#[test]
fn suppress_emits_each_tumbling_window_once_after_grace() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::f64())
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
        .aggregate(
            || 0.0,
            |_, v, sum: f64| sum + v,
            Materialized::new().with_value_serde(Serdes::f64()),
        )
        .suppress_until_window_closes()
        .to_stream()
        .map(|w: Windowed<String>, v| (format!("{}@{}", w.key, w.window.start), v))
        .to_with("out", Serdes::string(), Serdes::f64());
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::f64());
    i.pipe_input_at(s("cpu"), 1.0, 1_000).unwrap();
    i.pipe_input_at(s("cpu"), 2.0, 59_000).unwrap();
    i.pipe_input_at(s("cpu"), 4.0, 62_000).unwrap();
    let out = d.output_topic("out", Serdes::string(), Serdes::f64());
    assert!(out.is_empty());
    i.pipe_input_at(s("cpu"), 8.0, 65_000).unwrap();
    assert_eq!(out.read_key_values(), vec![(s("cpu@0"), 3.0)]);
    i.pipe_input_at(s("mem"), 1.0, 200_000).unwrap();
    assert_eq!(out.read_key_values(), vec![(s("cpu@60000"), 12.0)]);
}

fn stream_join(kind: &str) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    let left = b.stream("left", Serdes::string(), Serdes::string());
    let right = b.stream("right", Serdes::string(), Serdes::string());
    let w = JoinWindows::of(Duration::from_millis(10));
    let joined = match kind {
        "inner" => left.join(&right, |l, r| format!("{l}+{r}"), w),
        "left" => left.left_join(
            &right,
            |l, r| format!("{l}+{}", r.map_or("null", |r| r.as_str())),
            w,
        ),
        _ => left.outer_join(
            &right,
            |l, r| {
                format!(
                    "{}+{}",
                    l.map_or("null", |l| l.as_str()),
                    r.map_or("null", |r| r.as_str())
                )
            },
            w,
        ),
    };
    joined.to_with("out", Serdes::string(), Serdes::string());
    driver(b)
}

fn pipe_join_inputs(d: &TopologyTestDriver) -> Vec<(String, String)> {
    let mut l = d.input_topic("left", Serdes::string(), Serdes::string());
    let mut r = d.input_topic("right", Serdes::string(), Serdes::string());
    l.pipe_input_at(s("a"), s("L1"), 100).unwrap();
    r.pipe_input_at(s("a"), s("R1"), 105).unwrap();
    r.pipe_input_at(s("b"), s("R2"), 106).unwrap();
    l.pipe_input_at(s("c"), s("L2"), 107).unwrap();
    // Far outside every window: closes the windows of everything above.
    l.pipe_input_at(s("z"), s("L3"), 200).unwrap();
    d.output_topic("out", Serdes::string(), Serdes::string())
        .read_key_values()
}

#[test]
fn stream_stream_inner_join_matches_within_the_window() {
    let out = pipe_join_inputs(&stream_join("inner"));
    assert_eq!(out, vec![(s("a"), s("L1+R1"))]);
}

#[test]
fn stream_stream_left_join_emits_unmatched_left_records_when_their_window_closes() {
    let out = pipe_join_inputs(&stream_join("left"));
    assert_eq!(out, vec![(s("a"), s("L1+R1")), (s("c"), s("L2+null"))]);
}

#[test]
fn stream_stream_outer_join_emits_unmatched_records_of_both_sides() {
    let out = pipe_join_inputs(&stream_join("outer"));
    assert_eq!(
        out,
        vec![
            (s("a"), s("L1+R1")),
            (s("b"), s("null+R2")),
            (s("c"), s("L2+null"))
        ]
    );
}

#[test]
fn stream_table_joins_look_up_the_current_value() {
    let b = StreamsBuilder::new();
    let users = b.table(
        "users",
        Serdes::string(),
        Serdes::string(),
        Materialized::named("users").in_memory(),
    );
    let clicks = b.stream("clicks", Serdes::string(), Serdes::string());
    clicks
        .join_table(&users, |c, u| format!("{u} clicked {c}"))
        .to_with("inner", Serdes::string(), Serdes::string());
    clicks
        .left_join_table(&users, |c, u| {
            format!("{} clicked {c}", u.map_or("someone", |u| u.as_str()))
        })
        .to_with("left", Serdes::string(), Serdes::string());
    let d = driver(b);
    let mut u = d.input_topic("users", Serdes::string(), Serdes::string());
    let mut c = d.input_topic("clicks", Serdes::string(), Serdes::string());
    c.pipe_input(s("1"), s("/early")).unwrap();
    u.pipe_input(s("1"), s("ann")).unwrap();
    c.pipe_input(s("1"), s("/home")).unwrap();
    u.pipe_tombstone_at(s("1"), 0).unwrap();
    c.pipe_input(s("1"), s("/gone")).unwrap();
    let out = |t| {
        d.output_topic(t, Serdes::string(), Serdes::string())
            .read_key_values()
    };
    assert_eq!(out("inner"), vec![(s("1"), s("ann clicked /home"))]);
    assert_eq!(
        out("left"),
        vec![
            (s("1"), s("someone clicked /early")),
            (s("1"), s("ann clicked /home")),
            (s("1"), s("someone clicked /gone"))
        ]
    );
}

#[test]
fn table_table_joins_follow_both_sides() {
    let b = StreamsBuilder::new();
    let l = b.table("l", Serdes::string(), Serdes::string(), Materialized::new());
    let r = b.table("r", Serdes::string(), Serdes::string(), Materialized::new());
    let show = |x: Option<&String>| x.cloned().unwrap_or_else(|| s("-"));
    l.join(&r, |a, b| format!("{a}{b}"))
        .to_stream_with_tombstones()
        .to_with(
            "inner",
            Serdes::string(),
            Serdes::optional(Serdes::string()),
        );
    l.left_join(&r, move |a, b| format!("{a}{}", show(b)))
        .to_stream()
        .to_with("left", Serdes::string(), Serdes::string());
    l.outer_join(&r, move |a, b| format!("{}{}", show(a), show(b)))
        .to_stream()
        .to_with("outer", Serdes::string(), Serdes::string());
    let d = driver(b);
    let mut li = d.input_topic("l", Serdes::string(), Serdes::string());
    let mut ri = d.input_topic("r", Serdes::string(), Serdes::string());
    li.pipe_input(s("k"), s("A")).unwrap();
    ri.pipe_input(s("k"), s("1")).unwrap();
    li.pipe_input(s("k"), s("B")).unwrap();
    ri.pipe_input(s("j"), s("2")).unwrap();
    li.pipe_tombstone_at(s("k"), 0).unwrap();
    let inner = d
        .output_topic(
            "inner",
            Serdes::string(),
            Serdes::optional(Serdes::string()),
        )
        .read_key_values();
    assert_eq!(
        inner,
        vec![
            (s("k"), Some(s("A1"))),
            (s("k"), Some(s("B1"))),
            (s("k"), None)
        ]
    );
    let left = d
        .output_topic("left", Serdes::string(), Serdes::string())
        .read_key_values();
    assert_eq!(
        left,
        vec![(s("k"), s("A-")), (s("k"), s("A1")), (s("k"), s("B1"))]
    );
    let outer = d
        .output_topic("outer", Serdes::string(), Serdes::string())
        .read_key_values();
    assert_eq!(
        outer,
        vec![
            (s("k"), s("A-")),
            (s("k"), s("A1")),
            (s("k"), s("B1")),
            (s("j"), s("-2")),
            (s("k"), s("-1"))
        ]
    );
}

#[test]
fn stream_global_table_join_uses_a_key_from_the_record() {
    let b = StreamsBuilder::new();
    let products = b.global_table("products", Serdes::string(), Serdes::string(), "products");
    let orders = b.stream("orders", Serdes::string(), Serdes::string());
    orders
        .join_global(
            &products,
            |_, product_id| product_id.clone(),
            |pid, name| format!("{pid}={name}"),
        )
        .to_with("inner", Serdes::string(), Serdes::string());
    orders
        .left_join_global(
            &products,
            |_, pid| pid.clone(),
            |pid, name| format!("{pid}={}", name.map_or("?", |n| n.as_str())),
        )
        .to_with("left", Serdes::string(), Serdes::string());
    let d = driver(b);
    d.input_topic("products", Serdes::string(), Serdes::string())
        .pipe_input(s("p1"), s("lamp"))
        .unwrap();
    let mut o = d.input_topic("orders", Serdes::string(), Serdes::string());
    o.pipe_input(s("order-1"), s("p1")).unwrap();
    o.pipe_input(s("order-2"), s("p9")).unwrap();
    let out = |t| {
        d.output_topic(t, Serdes::string(), Serdes::string())
            .read_key_values()
    };
    assert_eq!(out("inner"), vec![(s("order-1"), s("p1=lamp"))]);
    assert_eq!(
        out("left"),
        vec![(s("order-1"), s("p1=lamp")), (s("order-2"), s("p9=?"))]
    );
    assert_eq!(
        d.key_value_store::<String, String>("products")
            .unwrap()
            .get(&s("p1"))
            .unwrap(),
        Some(s("lamp"))
    );
}

#[test]
fn table_operators_and_regrouping_with_subtraction() {
    let b = StreamsBuilder::new();
    let users = b.table(
        "user-regions",
        Serdes::string(),
        Serdes::string(),
        Materialized::new(),
    );
    users
        .filter(|_, region| region != "moon")
        .map_values(|_, region| region.to_uppercase())
        .to_stream()
        .to_with("upper", Serdes::string(), Serdes::string());
    users
        .group_by(
            |_, region| (region.clone(), 1i64),
            Serdes::string(),
            Serdes::i64(),
        )
        .count(Materialized::named("per-region"))
        .to_stream()
        .to_with("per-region", Serdes::string(), Serdes::i64());
    let d = driver(b);
    let mut i = d.input_topic("user-regions", Serdes::string(), Serdes::string());
    i.pipe_input(s("ann"), s("eu")).unwrap();
    i.pipe_input(s("bob"), s("eu")).unwrap();
    i.pipe_input(s("ann"), s("us")).unwrap();
    i.pipe_input(s("cat"), s("moon")).unwrap();
    let upper = d
        .output_topic("upper", Serdes::string(), Serdes::string())
        .read_key_values();
    assert_eq!(
        upper,
        vec![
            (s("ann"), s("EU")),
            (s("bob"), s("EU")),
            (s("ann"), s("US"))
        ]
    );
    let counts = d.key_value_store::<String, i64>("per-region").unwrap();
    assert_eq!(counts.get(&s("eu")).unwrap(), Some(1));
    assert_eq!(counts.get(&s("us")).unwrap(), Some(1));
    assert_eq!(counts.get(&s("moon")).unwrap(), Some(1));
}

#[test]
fn stream_to_table_and_explicit_repartition() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::string())
        .repartition(Some("by-key"), Some(3))
        .to_table(Materialized::named("latest"))
        .to_stream()
        .to("out");
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    i.pipe_input(s("a"), s("1")).unwrap();
    i.pipe_input(s("a"), s("2")).unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string())
            .read_key_values()
            .len(),
        2
    );
    assert_eq!(
        d.output_topic(
            "test-driver-by-key-repartition",
            Serdes::string(),
            Serdes::string()
        )
        .read_key_values()
        .len(),
        2
    );
    assert_eq!(
        d.key_value_store::<String, String>("latest")
            .unwrap()
            .get(&s("a"))
            .unwrap(),
        Some(s("2"))
    );
}

/// Forwards each key once, remembering keys in a store; a stream-time punctuator forwards a
/// count of keys seen, and a wall-clock one counts its firings.
struct Dedupe {
    store: Option<sluice_streams::KeyValueStore<String, i64>>,
    emitted: i64,
    stream_punctuator: Option<PunctuatorId>,
}

impl Processor<String, String, String, String> for Dedupe {
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
    ) -> sluice_streams::Result<()> {
        self.store = Some(ctx.key_value_store("seen")?);
        self.stream_punctuator =
            Some(ctx.schedule(Duration::from_millis(100), PunctuationType::StreamTime));
        ctx.schedule(Duration::from_secs(1), PunctuationType::WallClockTime);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
        record: Record<String, String>,
    ) -> sluice_streams::Result<()> {
        let store = self.store.as_ref().unwrap();
        if store.get(&record.key)?.is_none() {
            store.put(&record.key, &record.timestamp)?;
            self.emitted += 1;
            ctx.forward(record)?;
        }
        Ok(())
    }
    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
        id: PunctuatorId,
        time: i64,
    ) -> sluice_streams::Result<()> {
        assert!(
            ctx.record_metadata().topic.is_none(),
            "a punctuation has no source record"
        );
        let kind = if Some(id) == self.stream_punctuator {
            "stream"
        } else {
            "wall"
        };
        ctx.forward(Record::new(
            format!("{kind}@{time}"),
            self.emitted.to_string(),
            time,
        ))
    }
}

#[test]
fn processor_api_with_store_and_both_punctuation_types() {
    let b = StreamsBuilder::new();
    b.add_state_store(Stores::key_value("seen", Serdes::string(), Serdes::i64()).in_memory());
    b.stream("in", Serdes::string(), Serdes::string())
        .process(
            || Dedupe {
                store: None,
                emitted: 0,
                stream_punctuator: None,
            },
            &["seen"],
        )
        .with_serdes(Serdes::string(), Serdes::string())
        .to("out");
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    let out = d.output_topic("out", Serdes::string(), Serdes::string());
    i.pipe_input_at(s("a"), s("x"), 10).unwrap();
    i.pipe_input_at(s("a"), s("y"), 20).unwrap();
    i.pipe_input_at(s("b"), s("z"), 30).unwrap();
    assert_eq!(
        out.read_key_values(),
        vec![(s("a"), s("x")), (s("b"), s("z"))]
    );
    // Stream time reaches 100: the stream-time punctuator fires once.
    i.pipe_input_at(s("a"), s("w"), 150).unwrap();
    assert_eq!(out.read_key_values(), vec![(s("stream@150"), s("2"))]);
    assert!(out.is_empty());
    d.advance_wall_clock(Duration::from_millis(999)).unwrap();
    assert!(out.is_empty());
    d.advance_wall_clock(Duration::from_millis(1)).unwrap();
    assert_eq!(out.read_key_values(), vec![(s("wall@1000"), s("2"))]);
    assert_eq!(
        d.key_value_store::<String, i64>("seen")
            .unwrap()
            .get(&s("b"))
            .unwrap(),
        Some(30)
    );
}

fn bad_input_driver(policy: DeserializationPolicy) -> TopologyTestDriver {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::i64()).to("out");
    let config = TestDriverConfig {
        deserialization_policy: policy,
        ..TestDriverConfig::default()
    };
    TopologyTestDriver::with_config(b.build().unwrap(), config).unwrap()
}

#[test]
fn undeserializable_records_fail_by_default() {
    let d = bad_input_driver(DeserializationPolicy::Fail);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    let err = i
        .pipe_raw(Some(b"k".to_vec()), Some(b"xyz".to_vec()), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot deserialize the value") && err.contains("in-0@0"),
        "{err}"
    );
}

#[test]
fn undeserializable_records_can_be_skipped_or_dead_lettered() {
    let d = bad_input_driver(DeserializationPolicy::LogAndContinue);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    i.pipe_raw(Some(b"k".to_vec()), Some(b"xyz".to_vec()), 0)
        .unwrap();
    i.pipe_input(s("k"), 5).unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::i64())
            .read_key_values(),
        vec![(s("k"), 5)]
    );
    assert_eq!(d.counters().skipped_deserialization, 1);

    let d = bad_input_driver(DeserializationPolicy::DeadLetter(s("dlq")));
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    i.pipe_raw(Some(b"k".to_vec()), Some(b"xyz".to_vec()), 0)
        .unwrap();
    let dlq = d.output_topic("dlq", Serdes::bytes(), Serdes::bytes());
    let headers = dlq.peek_headers().unwrap();
    assert!(
        headers.iter().any(|h| h.key == "__streams.error"),
        "{headers:?}"
    );
    assert_eq!(dlq.read_key_value(), Some((b"k".to_vec(), b"xyz".to_vec())));
}

#[test]
fn windowed_reduce_and_aggregate_per_tumbling_window() {
    let b = StreamsBuilder::new();
    let windowed = b
        .stream("in", Serdes::string(), Serdes::i64())
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(Duration::from_millis(100)));
    let show = |w: Windowed<String>, v: String| (format!("{}@{}", w.key, w.window.start), v);
    windowed
        .reduce(|a, b| a.max(b), Materialized::named("max-per-window"))
        .to_stream()
        .map(move |w, v: i64| show(w, v.to_string()))
        .to_with("max", Serdes::string(), Serdes::string());
    windowed
        .aggregate(
            String::new,
            |_, v, acc: String| format!("{acc}{v}"),
            Materialized::named("concat-per-window").with_value_serde(Serdes::string()),
        )
        .to_stream()
        .map(show)
        .to_with("concat", Serdes::string(), Serdes::string());
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::i64());
    for (v, at) in [(3, 10), (1, 20), (7, 120), (2, 130)] {
        i.pipe_input_at(s("k"), v, at).unwrap();
    }
    let out = |t| {
        d.output_topic(t, Serdes::string(), Serdes::string())
            .read_key_values()
    };
    let pairs = |xs: &[(&str, &str)]| -> Vec<(String, String)> {
        xs.iter().map(|(a, b)| (s(a), s(b))).collect()
    };
    assert_eq!(
        out("max"),
        pairs(&[("k@0", "3"), ("k@0", "3"), ("k@100", "7"), ("k@100", "7")])
    );
    assert_eq!(
        out("concat"),
        pairs(&[("k@0", "3"), ("k@0", "31"), ("k@100", "7"), ("k@100", "72")])
    );
    // The store keeps windows for size + grace (100 ms) of stream time: at 130, only [100, 200).
    let store = d.window_store::<String, i64>("max-per-window").unwrap();
    assert_eq!(store.fetch(&s("k"), 0, 100).unwrap(), vec![(100, 7)]);
}

#[test]
fn sliding_window_count() {
    let b = StreamsBuilder::new();
    b.stream("in", Serdes::string(), Serdes::string())
        .group_by_key()
        .windowed_by_sliding(SlidingWindows::with_time_difference(Duration::from_millis(
            10,
        )))
        .count()
        .to_stream()
        .map(|w: Windowed<String>, c| (format!("{}-{}", w.window.start, w.window.end), c))
        .to_with("out", Serdes::string(), Serdes::i64());
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    for at in [10, 15, 30] {
        i.pipe_input_at(s("k"), s("x"), at).unwrap();
    }
    let out = d
        .output_topic("out", Serdes::string(), Serdes::i64())
        .read_key_values_to_map();
    assert_eq!(
        (out["0-10"], out["5-15"], out["11-21"], out["20-30"]),
        (1, 2, 1, 1)
    );
}

#[test]
fn session_aggregate_merges_the_aggregates_of_bridged_sessions() {
    let b = StreamsBuilder::new();
    b.stream("views", Serdes::string(), Serdes::string())
        .group_by_key()
        .windowed_by_session(SessionWindows::with_inactivity_gap(Duration::from_millis(
            30,
        )))
        .aggregate(
            Vec::new,
            |_, page, mut pages: Vec<String>| {
                pages.push(page);
                pages
            },
            |_, mut a, b| {
                a.extend(b);
                a
            },
            Materialized::named("pages").with_value_serde(Serdes::json::<Vec<String>>()),
        )
        .to_stream()
        .map(|w: Windowed<String>, pages| {
            (
                format!("{}:{}-{}", w.key, w.window.start, w.window.end),
                pages,
            )
        })
        .to_with("out", Serdes::string(), Serdes::json::<Vec<String>>());
    let d = driver(b);
    let mut i = d.input_topic("views", Serdes::string(), Serdes::string());
    i.pipe_input_at(s("u"), s("/a"), 0).unwrap();
    i.pipe_input_at(s("u"), s("/b"), 50).unwrap();
    i.pipe_input_at(s("u"), s("/c"), 25).unwrap();
    let out = d
        .output_topic("out", Serdes::string(), Serdes::json::<Vec<String>>())
        .read_key_values();
    let mut merged = out.last().cloned().unwrap();
    merged.1.sort();
    assert_eq!(merged, (s("u:0-50"), vec![s("/a"), s("/b"), s("/c")]));
    let store = d.session_store::<String, Vec<String>>("pages").unwrap();
    let sessions = store.fetch_all().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].0.window, Window::new(0, 50));
}

#[test]
fn table_group_by_aggregate_adds_and_subtracts() {
    let b = StreamsBuilder::new();
    b.table(
        "salaries",
        Serdes::string(),
        Serdes::i64(),
        Materialized::new(),
    )
    .group_by(
        |name, salary| (name[..1].to_string(), *salary),
        Serdes::string(),
        Serdes::i64(),
    )
    .aggregate(
        || 0i64,
        |_, v, sum| sum + v,
        |_, v, sum| sum - v,
        Materialized::named("payroll").with_value_serde(Serdes::i64()),
    )
    .to_stream()
    .to_with("payroll", Serdes::string(), Serdes::i64());
    let d = driver(b);
    let mut i = d.input_topic("salaries", Serdes::string(), Serdes::i64());
    i.pipe_input(s("ann"), 10).unwrap();
    i.pipe_input(s("amy"), 5).unwrap();
    // ann's raise replaces her old salary in the sum.
    i.pipe_input(s("ann"), 12).unwrap();
    i.pipe_input(s("bob"), 7).unwrap();
    i.pipe_tombstone_at(s("amy"), 0).unwrap();
    let store = d.key_value_store::<String, i64>("payroll").unwrap();
    assert_eq!(store.get(&s("a")).unwrap(), Some(12));
    assert_eq!(store.get(&s("b")).unwrap(), Some(7));
    let latest = d
        .output_topic("payroll", Serdes::string(), Serdes::i64())
        .read_key_values_to_map();
    assert_eq!(latest, HashMap::from([(s("a"), 12), (s("b"), 7)]));
}

#[test]
fn map_values_with_key_materialize_and_stores_without_changelog() {
    let b = StreamsBuilder::new();
    let table = b
        .stream("in", Serdes::string(), Serdes::string())
        .map_values_with_key(|k, v| format!("{k}={v}"))
        .with_serdes(Serdes::string(), Serdes::string())
        .to_table(Materialized::named("logged").in_memory());
    table.materialize(Materialized::named("unlogged").without_logging());
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    i.pipe_input(s("a"), s("1")).unwrap();
    for name in ["logged", "unlogged"] {
        let store = d.key_value_store::<String, String>(name).unwrap();
        assert_eq!(store.get(&s("a")).unwrap(), Some(s("a=1")), "{name}");
    }
    let changelog = |name: &str| {
        d.output_topic(
            &format!("test-driver-{name}-changelog"),
            Serdes::string(),
            Serdes::string(),
        )
    };
    assert_eq!(
        changelog("logged").read_key_values(),
        vec![(s("a"), s("a=1"))]
    );
    assert!(changelog("unlogged").is_empty());
}

/// Keeps each record in a window store by its 100 ms window and a session store per key (a
/// session per record, gap 0), then forwards what each store holds for the key.
struct WindowAndSessionWriter {
    windows: Option<sluice_streams::WindowStore<String, String>>,
    sessions: Option<sluice_streams::SessionStore<String, i64>>,
}

impl Processor<String, String, String, String> for WindowAndSessionWriter {
    fn init(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
    ) -> sluice_streams::Result<()> {
        self.windows = Some(ctx.window_store("by-window")?);
        self.sessions = Some(ctx.session_store("by-session")?);
        Ok(())
    }
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
        record: Record<String, String>,
    ) -> sluice_streams::Result<()> {
        let (windows, sessions) = (
            self.windows.as_ref().unwrap(),
            self.sessions.as_ref().unwrap(),
        );
        let start = record.timestamp / 100 * 100;
        windows.put(&record.key, start, Some(&record.value))?;
        let session = Windowed {
            key: record.key.clone(),
            window: Window::new(record.timestamp, record.timestamp),
        };
        sessions.put(&session, Some(&record.timestamp))?;
        let in_windows = windows.fetch(&record.key, 0, i64::MAX)?.len();
        let in_sessions = sessions.find_sessions(&record.key, 0, i64::MAX)?.len();
        let value = format!("{in_windows} windows, {in_sessions} sessions");
        ctx.forward(record.with_value(value))
    }
}

#[test]
fn processor_api_with_window_and_session_stores() {
    let b = StreamsBuilder::new();
    let hour = Duration::from_secs(3600);
    b.add_state_store(Stores::window(
        "by-window",
        hour,
        false,
        Serdes::string(),
        Serdes::string(),
    ));
    b.add_state_store(
        Stores::session("by-session", hour, Serdes::string(), Serdes::i64()).in_memory(),
    );
    b.stream("in", Serdes::string(), Serdes::string())
        .process(
            || WindowAndSessionWriter {
                windows: None,
                sessions: None,
            },
            &["by-window", "by-session"],
        )
        .with_serdes(Serdes::string(), Serdes::string())
        .to("out");
    let d = driver(b);
    let mut i = d.input_topic("in", Serdes::string(), Serdes::string());
    i.pipe_input_at(s("k"), s("a"), 10).unwrap();
    i.pipe_input_at(s("k"), s("b"), 50).unwrap();
    i.pipe_input_at(s("k"), s("c"), 150).unwrap();
    assert_eq!(
        d.output_topic("out", Serdes::string(), Serdes::string())
            .read_key_values(),
        vec![
            (s("k"), s("1 windows, 1 sessions")),
            (s("k"), s("1 windows, 2 sessions")),
            (s("k"), s("2 windows, 3 sessions")),
        ]
    );
    let windows = d.window_store::<String, String>("by-window").unwrap();
    assert_eq!(
        windows.fetch(&s("k"), 0, 200).unwrap(),
        vec![(0, s("b")), (100, s("c"))]
    );
    // Both stores are changelogged (the window store is persistent, the session one in memory).
    for store in ["by-window", "by-session"] {
        let changelog = d.output_topic(
            &format!("test-driver-{store}-changelog"),
            Serdes::bytes(),
            Serdes::bytes(),
        );
        assert!(!changelog.is_empty(), "{store} has no changelog records");
    }
}

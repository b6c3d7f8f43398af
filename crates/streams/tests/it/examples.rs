//! The `articles`, `page_view_sessions`, `metrics_rollup` and `stateless_map` examples end to
//! end against a real broker.

use std::time::{Duration, Instant};

use crate::harness::{with_watchdog, Broker, Example};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads `topic` until it holds at least `n` records (bounded), returns them.
fn read_at_least(broker: &Broker, topic: &str, n: usize, app: &Example) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let records = broker.read_all(topic);
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} has {} of {n} records: {records:?}\n{}",
            records.len(),
            app.process.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{s:?} is not JSON: {e}"))
}

#[test]
fn articles_are_normalized_deduplicated_and_recommended() {
    with_watchdog(Duration::from_secs(240), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(&dir.path().join("broker"));
        // One partition each: outputs are ordered, so a marker's output proves what came before.
        for (topic, partitions) in [
            ("articles", 1),
            ("subscriptions", 1),
            ("articles-normalized", 1),
            ("recommendations", 1),
            ("articles-dlq", 1),
        ] {
            broker.create_topic(topic, partitions, &[]);
        }
        let s = |x: &str| Some(x.to_string());
        broker.produce(
            "subscriptions",
            &[
                (s("rust"), r#"["ann","bob"]"#.to_string(), None),
                (s("kafka"), r#"["bob"]"#.to_string(), None),
                (s("cooking"), r#"["cat"]"#.to_string(), None),
            ],
        );
        let mut app = Example::start(
            "articles",
            &broker,
            &[
                "--application-id",
                "articles",
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
                "--commit-interval-ms",
                "200",
            ],
        );
        // One feed: all in one partition, so "first per URL" is well defined.
        let feed = s("feed-1");
        broker.produce(
            "articles",
            &[
                (feed.clone(), r#"{"url":"HTTPS://Example.COM/a/?utm_source=x#top","title":"  Rust   streams ","tags":["Rust","Kafka"]}"#.into(), None),
                (feed.clone(), r#"{"url":"https://example.com/a","title":"Rust streams (repost)","tags":["rust"]}"#.into(), None),
                (feed.clone(), "not json".into(), None),
                (feed.clone(), r#"{"url":"https://food.example/b?utm_medium=rss&id=7","title":"Soup","tags":["cooking"]}"#.into(), None),
            ],
        );
        let recs = read_at_least(&broker, "recommendations", 3, &app);
        let mut got: Vec<(String, String, String)> = recs
            .iter()
            .map(|(user, v)| {
                let v = json(v);
                (
                    user.clone(),
                    v["url"].as_str().unwrap().to_string(),
                    v["title"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (
                    "ann".into(),
                    "https://example.com/a".into(),
                    "Rust streams".into()
                ),
                (
                    "bob".into(),
                    "https://example.com/a".into(),
                    "Rust streams".into()
                ),
                (
                    "cat".into(),
                    "https://food.example/b?id=7".into(),
                    "Soup".into()
                ),
            ]
        );
        let normalized = broker.read_all("articles-normalized");
        assert_eq!(normalized.len(), 2, "{normalized:?}");
        let dlq = read_at_least(&broker, "articles-dlq", 1, &app);
        assert_eq!(dlq[0].1, "not json");
        // A marker article: once its recommendation is out, everything before it is too, and bob
        // was recommended the first article once, for both of his tags.
        broker.produce(
            "articles",
            &[(
                feed,
                r#"{"url":"https://food.example/c","title":"Bread","tags":["cooking"]}"#.into(),
                None,
            )],
        );
        let recs = read_at_least(&broker, "recommendations", 4, &app);
        assert_eq!(recs.len(), 4, "{recs:?}");
        assert!(
            json(&recs[3].1)["url"] == "https://food.example/c",
            "{recs:?}"
        );
        assert!(app.process.stop(), "{}", app.process.stderr());
    });
}

#[test]
fn page_view_sessions_emit_one_summary_per_closed_session() {
    with_watchdog(Duration::from_secs(240), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(&dir.path().join("broker"));
        broker.create_topic("page-views", 1, &[]);
        broker.create_topic("page-view-sessions", 1, &[]);
        let mut app = Example::start(
            "page_view_sessions",
            &broker,
            &[
                "--application-id",
                "sessions",
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
                "--commit-interval-ms",
                "200",
            ],
        );
        // Every view is in the past: brokers reject timestamps more than an hour ahead
        // (`message.timestamp.after.max.ms`).
        let t0 = now_ms() - 12 * 3_600_000;
        let min = 60_000;
        let view =
            |user: &str, page: &str, at: i64| (Some(user.to_string()), page.to_string(), Some(at));
        broker.produce(
            "page-views",
            &[
                view("u", "/a", t0),
                view("v", "/home", t0 + 5 * min),
                view("u", "/b", t0 + 10 * min),
                view("u", "/a", t0 + 20 * min),
                view("u", "/c", t0 + 120 * min),
                // Moves stream time far enough that every session above has closed.
                view("z", "/", t0 + 300 * min),
            ],
        );
        let out = read_at_least(&broker, "page-view-sessions", 3, &app);
        let mut got: Vec<(String, i64, i64, i64, i64)> = out
            .iter()
            .map(|(user, v)| {
                let v = json(v);
                (
                    user.clone(),
                    v["start"].as_i64().unwrap() - t0,
                    v["end"].as_i64().unwrap() - t0,
                    v["views"].as_i64().unwrap(),
                    v["distinct_pages"].as_i64().unwrap(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("u".into(), 0, 20 * min, 3, 2),
                ("u".into(), 120 * min, 120 * min, 1, 1),
                ("v".into(), 5 * min, 5 * min, 1, 1),
            ]
        );
        // z's session was still open: it comes out only once a later view closes it.
        broker.produce("page-views", &[view("y", "/", t0 + 600 * min)]);
        let out = read_at_least(&broker, "page-view-sessions", 4, &app);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[3].0, "z");
        assert!(app.process.stop(), "{}", app.process.stderr());
    });
}

#[test]
fn metrics_rollup_emits_final_minutes_and_skips_bad_samples() {
    with_watchdog(Duration::from_secs(240), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(&dir.path().join("broker"));
        broker.create_topic("metrics", 1, &[]);
        broker.create_topic("metrics-rollup", 1, &[]);
        let mut app = Example::start(
            "metrics_rollup",
            &broker,
            &[
                "--application-id",
                "rollup",
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
                "--commit-interval-ms",
                "200",
            ],
        );
        let base = (now_ms() - 3_600_000) / 60_000 * 60_000;
        let sample =
            |name: &str, v: &str, at: i64| (Some(name.to_string()), v.to_string(), Some(base + at));
        broker.produce(
            "metrics",
            &[
                sample("cpu", "1.0", 1_000),
                sample("mem", "100", 10_000),
                sample("cpu", "abc", 20_000),
                sample("cpu", "3", 30_000),
                sample("cpu", "5", 61_000),
                sample("tick", "0", 300_000),
            ],
        );
        let out = read_at_least(&broker, "metrics-rollup", 3, &app);
        let mut got: Vec<(String, i64, i64, f64, f64, f64, f64)> = out
            .iter()
            .map(|(name, v)| {
                let v = json(v);
                (
                    name.clone(),
                    v["window_start"].as_i64().unwrap() - base,
                    v["count"].as_i64().unwrap(),
                    v["sum"].as_f64().unwrap(),
                    v["min"].as_f64().unwrap(),
                    v["max"].as_f64().unwrap(),
                    v["mean"].as_f64().unwrap(),
                )
            })
            .collect();
        got.sort_by_key(|g| (g.0.clone(), g.1));
        assert_eq!(
            got,
            vec![
                ("cpu".into(), 0, 2, 4.0, 1.0, 3.0, 2.0),
                ("cpu".into(), 60_000, 1, 5.0, 5.0, 5.0, 5.0),
                ("mem".into(), 0, 1, 100.0, 100.0, 100.0, 100.0),
            ]
        );
        // The tick's minute was still open: it comes out only once a later sample closes it.
        broker.produce("metrics", &[sample("tick", "1", 600_000)]);
        let out = read_at_least(&broker, "metrics-rollup", 4, &app);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[3].0, "tick");
        assert!(
            app.process.stderr().contains("skipping record"),
            "{}",
            app.process.stderr()
        );
        assert!(app.process.stop(), "{}", app.process.stderr());
    });
}

#[test]
fn stateless_map_upper_cases_every_value_and_keeps_keys() {
    with_watchdog(Duration::from_secs(240), || {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(&dir.path().join("broker"));
        broker.create_topic("text-lines", 2, &[]);
        broker.create_topic("text-lines-upper", 2, &[]);
        let lines: Vec<_> = (0..50)
            .map(|i| (Some(format!("k{i}")), format!("line {i} of Text"), None))
            .collect();
        broker.produce("text-lines", &lines);
        let mut app = Example::start(
            "stateless_map",
            &broker,
            &[
                "--application-id",
                "upper",
                "--processing-guarantee",
                "exactly_once_v2",
                "--state-dir",
                dir.path().join("state").to_str().unwrap(),
            ],
        );
        let mut out = read_at_least(&broker, "text-lines-upper", lines.len(), &app);
        out.sort();
        let mut want: Vec<(String, String)> = lines
            .iter()
            .map(|(k, v, _)| (k.clone().unwrap(), v.to_uppercase()))
            .collect();
        want.sort();
        assert_eq!(out, want);
        assert!(app.process.stop(), "{}", app.process.stderr());
    });
}

//! Page-view sessions (website activity tracking): page views keyed by user (`--input`, default
//! `page-views`; the value is the page), grouped into session windows with a 30-minute inactivity
//! gap, and one JSON summary per finished session to `--output` (default `page-view-sessions`),
//! keyed by user. Summaries are final: a session is emitted once stream time passes its end plus
//! the gap and a one-minute grace period, never updated afterwards.

#[path = "shared/cli.rs"]
mod cli;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_streams::{Materialized, Serdes, SessionWindows, StreamsBuilder, Windowed};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Activity {
    views: i64,
    pages: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SessionSummary {
    user: String,
    start: i64,
    end: i64,
    duration_ms: i64,
    views: i64,
    distinct_pages: usize,
    pages: Vec<String>,
}

fn main() {
    let args = cli::parse("page-views", "page-view-sessions", &[]);
    let builder = StreamsBuilder::new();
    builder
        .stream(&args.input, Serdes::string(), Serdes::string())
        .group_by_key()
        .windowed_by_session(
            SessionWindows::with_inactivity_gap(Duration::from_secs(30 * 60))
                .grace(Duration::from_secs(60)),
        )
        .aggregate(
            Activity::default,
            |_, page: String, mut a: Activity| {
                a.views += 1;
                if !a.pages.contains(&page) {
                    a.pages.push(page);
                }
                a
            },
            |_, mut a: Activity, b: Activity| {
                a.views += b.views;
                for p in b.pages {
                    if !a.pages.contains(&p) {
                        a.pages.push(p);
                    }
                }
                a
            },
            Materialized::named("sessions").with_value_serde(Serdes::json()),
        )
        .suppress_until_window_closes()
        .to_stream()
        .map(|w: Windowed<String>, a: Activity| {
            let summary = SessionSummary {
                user: w.key.clone(),
                start: w.window.start,
                end: w.window.end,
                duration_ms: w.window.end - w.window.start,
                views: a.views,
                distinct_pages: a.pages.len(),
                pages: a.pages,
            };
            (w.key, summary)
        })
        .with_serdes(Serdes::string(), Serdes::json())
        .to(&args.output);
    cli::run(builder, args.config())
}

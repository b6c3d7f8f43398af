//! Metrics roll-up: numeric samples keyed by metric name (`--input`, default `metrics`; the value
//! is a decimal number) rolled up into one-minute tumbling windows (count, sum, min, max, mean),
//! final results only: one JSON record per metric and minute to `--output` (default
//! `metrics-rollup`) once the minute and a 10-second grace period have passed in stream time.
//! Samples that are not numbers are logged and skipped.

#[path = "shared/cli.rs"]
mod cli;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_streams::{
    DeserializationPolicy, Materialized, Serde, SerdeError, Serdes, StreamsBuilder, TimeWindows,
    Windowed,
};

/// A number written as decimal text.
struct DecimalF64;

impl Serde<f64> for DecimalF64 {
    fn serialize(&self, _: &str, value: &f64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_string().into_bytes()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<f64, SerdeError> {
        let data = data.ok_or(SerdeError::Null)?;
        std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .ok_or_else(|| SerdeError::invalid("decimal number", String::from_utf8_lossy(data)))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stats {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Rollup {
    name: String,
    window_start: i64,
    window_end: i64,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
}

fn main() {
    let args = cli::parse("metrics", "metrics-rollup", &[]);
    let builder = StreamsBuilder::new();
    builder
        .stream(
            &args.input,
            Serdes::string(),
            std::sync::Arc::new(DecimalF64),
        )
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10)))
        .aggregate(
            || Stats {
                count: 0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            },
            |_, v: f64, s: Stats| Stats {
                count: s.count + 1,
                sum: s.sum + v,
                min: s.min.min(v),
                max: s.max.max(v),
            },
            Materialized::named("rollups").with_value_serde(Serdes::json()),
        )
        .suppress_until_window_closes()
        .to_stream()
        .map(|w: Windowed<String>, s: Stats| {
            let rollup = Rollup {
                name: w.key.clone(),
                window_start: w.window.start,
                window_end: w.window.end,
                count: s.count,
                sum: s.sum,
                min: s.min,
                max: s.max,
                mean: s.sum / s.count as f64,
            };
            (w.key, rollup)
        })
        .with_serdes(Serdes::string(), Serdes::json())
        .to(&args.output);
    cli::run(
        builder,
        args.config()
            .deserialization_policy(DeserializationPolicy::LogAndContinue),
    )
}

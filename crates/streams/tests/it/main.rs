//! sluice-streams tests: `driver` runs topologies in the in-process test driver (every operator,
//! window kind and join); `word_count` and `examples` run the examples as processes against a
//! real `sluice serve` (the workspace's `sluice` binary must be built: `cargo test --workspace`
//! does that).

mod driver;
mod examples;
mod harness;
mod runtime;
mod word_count;

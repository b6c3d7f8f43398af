//! Word count: lines of text in, each word lower-cased, the running count per word out (the word
//! as key, the count as a decimal string).
//!
//! ```sh
//! cargo run --release -p sluice-streams --example word_count -- \
//!     --bootstrap-servers 127.0.0.1:9092 --application-id word-count \
//!     [--input text-lines] [--output word-counts] [--processing-guarantee exactly_once_v2]
//! ```

#[path = "shared/cli.rs"]
mod cli;

use sluice_streams::{Materialized, Serdes, StreamsBuilder};

fn main() {
    let args = cli::parse("text-lines", "word-counts", &[]);
    let builder = StreamsBuilder::new();
    builder
        .stream(
            &args.input,
            Serdes::optional(Serdes::bytes()),
            Serdes::string(),
        )
        .flat_map_values(|line: String| {
            line.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone(), Serdes::string(), Serdes::string())
        .count(Materialized::named("counts"))
        .to_stream()
        .to_with(&args.output, Serdes::string(), Serdes::i64_decimal());
    cli::run(builder, args.config())
}

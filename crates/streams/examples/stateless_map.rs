//! A stateless map: every record of `--input` (default `text-lines`) written to `--output`
//! (default `text-lines-upper`) with its value upper-cased and its key kept. The baseline for
//! throughput: no state, no repartitioning.

#[path = "shared/cli.rs"]
mod cli;

use sluice_streams::{Serdes, StreamsBuilder};

fn main() {
    let args = cli::parse("text-lines", "text-lines-upper", &[]);
    let builder = StreamsBuilder::new();
    builder
        .stream(
            &args.input,
            Serdes::optional(Serdes::bytes()),
            Serdes::string(),
        )
        .map_values(|line: String| line.to_uppercase())
        .to_with(
            &args.output,
            Serdes::optional(Serdes::bytes()),
            Serdes::string(),
        );
    cli::run(builder, args.config())
}

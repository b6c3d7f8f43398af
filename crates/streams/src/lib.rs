//! # sluice-streams
//!
//! A Kafka Streams-style stream processing library for Rust, over any Kafka-compatible broker
//! (through librdkafka): a typed DSL of streams and tables, windows, joins and aggregations; a
//! processor API with punctuators; state stores (in memory or persistent on redb) backed by
//! compacted changelog topics; a multi-threaded runtime with `at_least_once` and
//! `exactly_once_v2` processing; and a deterministic test driver.
//!
//! See the crate's README for a tutorial and how the pieces map to Kafka Streams.

mod dsl;
mod error;
mod ops;
mod processor;
mod record;
mod runtime;
mod serde;
mod state;
mod store_api;
mod task;
mod test_driver;
mod topology;
mod windows;

pub use dsl::{
    GlobalKTable, KGroupedStream, KGroupedTable, KStream, KTable, Materialized, Predicate,
    SessionWindowedKStream, SlidingWindowedKStream, StoreBuilder, Stores, StreamsBuilder,
    TimeWindowedKStream,
};
pub use error::{Result, SerdeError, StoreError, StreamsError, TopologyError};
pub use processor::{
    Data, Processor, ProcessorContext, PunctuationType, PunctuatorId, RecordMetadata,
};
pub use record::{Header, Headers, Record};
pub use runtime::config::{ProcessingGuarantee, StreamsConfig};
pub use runtime::metrics::MetricsSnapshot;
pub use runtime::{KafkaStreams, QueryableStore, State};
pub use serde::{Serde, SerdeRef, Serdes};
pub use state::{StoreBackend, StoreKind};
pub use store_api::{KeyValueStore, SessionStore, WindowStore};
pub use task::{DeserializationPolicy, TaskCounters};
pub use test_driver::{TestDriverConfig, TestInputTopic, TestOutputTopic, TopologyTestDriver};
pub use topology::{TaskId, Topology};
pub use windows::{JoinWindows, SessionWindows, SlidingWindows, TimeWindows, Window, Windowed};

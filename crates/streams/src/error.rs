//! The library's error types: what went wrong building a topology, (de)serializing a record,
//! touching a state store, or talking to the broker.

use std::fmt;

/// Why a value could not be turned into bytes or back.
#[derive(Debug, thiserror::Error)]
pub enum SerdeError {
    /// The record had no key or value bytes (a Kafka null) but the serde needs some.
    #[error("null data where a value was expected; use Serdes::optional(..) if nulls are allowed")]
    Null,
    /// The bytes are not what the serde expects.
    #[error("{what}: {detail}")]
    Invalid {
        /// The serde that failed ("utf-8 string", "json", ...).
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl SerdeError {
    /// An `Invalid` error for serde `what`.
    pub fn invalid(what: &'static str, detail: impl fmt::Display) -> SerdeError {
        SerdeError::Invalid {
            what,
            detail: detail.to_string(),
        }
    }
}

/// A topology that cannot be run: the message says what to change.
#[derive(Debug, thiserror::Error)]
#[error("invalid topology: {0}")]
pub struct TopologyError(pub String);

/// A state store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The persistent store's files failed.
    #[error("state store {store}: {source}")]
    Persistent {
        /// The store's name.
        store: String,
        /// What redb reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store's directory could not be used.
    #[error("state store {store}: {source}")]
    Io {
        /// The store's name.
        store: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A processor asked for a store that is not connected to it.
    #[error("no state store named {0} is connected to this processor; pass its name when adding the processor")]
    NotConnected(String),
    /// Bytes read from a store do not decode (a corrupt or foreign store).
    #[error("state store {store}: undecodable entry: {detail}")]
    Corrupt {
        /// The store's name.
        store: String,
        /// What was wrong.
        detail: String,
    },
}

/// Any failure while running or testing a topology.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// The topology is invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A record from `topic` could not be deserialized.
    #[error(
        "cannot deserialize the {part} of the record at {topic}-{partition}@{offset}: {source}"
    )]
    Deserialization {
        /// The source topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// "key" or "value".
        part: &'static str,
        /// Why.
        #[source]
        source: SerdeError,
    },
    /// A record could not be serialized for `topic`.
    #[error("cannot serialize the {part} of a record for topic {topic}: {source}")]
    Serialization {
        /// The target topic.
        topic: String,
        /// "key" or "value".
        part: &'static str,
        /// Why.
        #[source]
        source: SerdeError,
    },
    /// A state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Kafka client failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What the library was doing.
        context: String,
        /// What librdkafka said.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A user processor failed.
    #[error("processor {processor}: {message}")]
    Processor {
        /// The processor's name.
        processor: String,
        /// What it said.
        message: String,
    },
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Anything else the runtime refuses to continue with.
    #[error("{0}")]
    Fatal(String),
}

impl StreamsError {
    /// Wraps a librdkafka error with what the library was doing.
    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        StreamsError::Kafka {
            context: context.into(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = StreamsError> = std::result::Result<T, E>;

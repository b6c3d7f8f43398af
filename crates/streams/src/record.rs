//! Records as processors see them: a typed key and value with a timestamp and headers, and the
//! serialized form that crosses the wire.

/// A record header: a name and an optional value, as in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// Its value (`None` is a null value).
    pub value: Option<Vec<u8>>,
}

/// A record's headers (empty for most records, so cloning one costs nothing).
pub type Headers = Vec<Header>;

/// A typed record flowing between processors.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// Event time in milliseconds since the Unix epoch: the source record's timestamp unless a
    /// processor set another.
    pub timestamp: i64,
    /// Headers carried from the source record.
    pub headers: Headers,
}

impl<K, V> Record<K, V> {
    /// A record without headers.
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Record {
            key,
            value,
            timestamp,
            headers: Vec::new(),
        }
    }

    /// The same record with another key and value (timestamp and headers kept).
    pub fn with<K2, V2>(self, key: K2, value: V2) -> Record<K2, V2> {
        Record {
            key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }

    /// The same record with another value.
    pub fn with_value<V2>(self, value: V2) -> Record<K, V2> {
        Record {
            key: self.key,
            value,
            timestamp: self.timestamp,
            headers: self.headers,
        }
    }
}

/// A serialized record read from a topic: what a source node deserializes.
#[derive(Clone, Debug)]
pub(crate) struct RawRecord {
    pub(crate) topic: std::sync::Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Headers,
}

impl RawRecord {
    /// Bytes of its key and value, what a queue of it holds on to.
    pub(crate) fn payload_len(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// A serialized record a task wants written: to a sink topic, a repartition topic or a changelog.
#[derive(Clone, Debug)]
pub(crate) struct OutRecord {
    pub(crate) topic: std::sync::Arc<str>,
    /// `None` lets the producer's partitioner (murmur2 of the key, as Java's) choose.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) timestamp: i64,
    pub(crate) headers: Headers,
    /// Which changelog this record belongs to (store name), so the runtime can checkpoint.
    pub(crate) changelog_of: Option<std::sync::Arc<str>>,
}

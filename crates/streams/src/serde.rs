//! Serdes: how typed keys and values become bytes and back. A trait object per type, built-ins for
//! bytes, strings, integers and JSON, and the seam for schema-registry formats (a serde sees the
//! topic, as Confluent's subject naming needs).

use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::SerdeError;

/// Turns a `T` into bytes and back. `None` bytes are Kafka's null key or value.
///
/// A schema-registry format implements this trait: `topic` gives the subject, and the
/// implementation can prepend (and check) a schema id.
pub trait Serde<T>: Send + Sync + 'static {
    /// The bytes for `value` when written to `topic`; `Ok(None)` writes a null.
    fn serialize(&self, topic: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError>;
    /// The value for `data` read from `topic`; `None` is a null.
    fn deserialize(&self, topic: &str, data: Option<&[u8]>) -> Result<T, SerdeError>;
}

/// A shared serde for `T`.
pub type SerdeRef<T> = Arc<dyn Serde<T>>;

/// Constructors for the built-in serdes.
pub struct Serdes;

impl Serdes {
    /// Raw bytes, unchanged.
    pub fn bytes() -> SerdeRef<Vec<u8>> {
        Arc::new(BytesSerde)
    }
    /// UTF-8 strings.
    pub fn string() -> SerdeRef<String> {
        Arc::new(StringSerde)
    }
    /// 64-bit signed integers, 8 bytes big-endian (Kafka's `LongSerializer`).
    pub fn i64() -> SerdeRef<i64> {
        Arc::new(I64Serde)
    }
    /// 32-bit signed integers, 4 bytes big-endian (Kafka's `IntegerSerializer`).
    pub fn i32() -> SerdeRef<i32> {
        Arc::new(I32Serde)
    }
    /// 64-bit floats, 8 bytes big-endian (Kafka's `DoubleSerializer`).
    pub fn f64() -> SerdeRef<f64> {
        Arc::new(F64Serde)
    }
    /// 64-bit signed integers as decimal text (`"42"`), readable by any consumer.
    pub fn i64_decimal() -> SerdeRef<i64> {
        Arc::new(DecimalSerde)
    }
    /// The unit type: ignores whatever bytes are there and writes a null. For keyless topics.
    pub fn unit() -> SerdeRef<()> {
        Arc::new(UnitSerde)
    }
    /// JSON through serde.
    pub fn json<T>() -> SerdeRef<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        Arc::new(JsonSerde(PhantomData))
    }
    /// `Option<T>` where a Kafka null is `None`, and anything else goes through `inner`.
    pub fn optional<T: 'static>(inner: SerdeRef<T>) -> SerdeRef<Option<T>> {
        Arc::new(OptionalSerde(inner))
    }
}

fn need(data: Option<&[u8]>) -> Result<&[u8], SerdeError> {
    data.ok_or(SerdeError::Null)
}

fn fixed<const N: usize>(what: &'static str, data: Option<&[u8]>) -> Result<[u8; N], SerdeError> {
    let bytes = need(data)?;
    bytes
        .try_into()
        .map_err(|_| SerdeError::invalid(what, format!("{} bytes, expected {N}", bytes.len())))
}

struct BytesSerde;
impl Serde<Vec<u8>> for BytesSerde {
    fn serialize(&self, _: &str, value: &Vec<u8>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.clone()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<Vec<u8>, SerdeError> {
        Ok(need(data)?.to_vec())
    }
}

struct StringSerde;
impl Serde<String> for StringSerde {
    fn serialize(&self, _: &str, value: &String) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.as_bytes().to_vec()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<String, SerdeError> {
        String::from_utf8(need(data)?.to_vec()).map_err(|e| SerdeError::invalid("utf-8 string", e))
    }
}

struct I64Serde;
impl Serde<i64> for I64Serde {
    fn serialize(&self, _: &str, value: &i64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<i64, SerdeError> {
        Ok(i64::from_be_bytes(fixed("i64", data)?))
    }
}

struct I32Serde;
impl Serde<i32> for I32Serde {
    fn serialize(&self, _: &str, value: &i32) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<i32, SerdeError> {
        Ok(i32::from_be_bytes(fixed("i32", data)?))
    }
}

struct F64Serde;
impl Serde<f64> for F64Serde {
    fn serialize(&self, _: &str, value: &f64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<f64, SerdeError> {
        Ok(f64::from_be_bytes(fixed("f64", data)?))
    }
}

struct DecimalSerde;
impl Serde<i64> for DecimalSerde {
    fn serialize(&self, _: &str, value: &i64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_string().into_bytes()))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<i64, SerdeError> {
        let bytes = need(data)?;
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                SerdeError::invalid(
                    "decimal i64",
                    format!("{:?}", String::from_utf8_lossy(bytes)),
                )
            })
    }
}

struct UnitSerde;
impl Serde<()> for UnitSerde {
    fn serialize(&self, _: &str, _: &()) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(None)
    }
    fn deserialize(&self, _: &str, _: Option<&[u8]>) -> Result<(), SerdeError> {
        Ok(())
    }
}

struct JsonSerde<T>(PhantomData<fn() -> T>);
impl<T> Serde<T> for JsonSerde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn serialize(&self, _: &str, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        serde_json::to_vec(value)
            .map(Some)
            .map_err(|e| SerdeError::invalid("json", e))
    }
    fn deserialize(&self, _: &str, data: Option<&[u8]>) -> Result<T, SerdeError> {
        serde_json::from_slice(need(data)?).map_err(|e| SerdeError::invalid("json", e))
    }
}

struct OptionalSerde<T>(SerdeRef<T>);
impl<T: 'static> Serde<Option<T>> for OptionalSerde<T> {
    fn serialize(&self, topic: &str, value: &Option<T>) -> Result<Option<Vec<u8>>, SerdeError> {
        match value {
            Some(v) => self.0.serialize(topic, v),
            None => Ok(None),
        }
    }
    fn deserialize(&self, topic: &str, data: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        match data {
            Some(_) => self.0.deserialize(topic, data).map(Some),
            None => Ok(None),
        }
    }
}

/// Serializes with `serde` where a null is not allowed (store keys and values).
pub(crate) fn to_bytes<T: 'static>(
    serde: &dyn Serde<T>,
    topic: &str,
    value: &T,
) -> Result<Vec<u8>, SerdeError> {
    serde.serialize(topic, value)?.ok_or(SerdeError::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_round_trip() {
        let s = Serdes::string();
        assert_eq!(
            s.deserialize(
                "t",
                s.serialize("t", &"héllo".to_string()).unwrap().as_deref()
            )
            .unwrap(),
            "héllo"
        );
        let n = Serdes::i64();
        assert_eq!(
            n.serialize("t", &-2).unwrap().unwrap(),
            (-2i64).to_be_bytes()
        );
        assert_eq!(
            n.deserialize("t", Some(&(-2i64).to_be_bytes())).unwrap(),
            -2
        );
        let d = Serdes::i64_decimal();
        assert_eq!(d.serialize("t", &42).unwrap().unwrap(), b"42");
        assert_eq!(d.deserialize("t", Some(b"42")).unwrap(), 42);
        let o = Serdes::optional(Serdes::string());
        assert_eq!(o.serialize("t", &None).unwrap(), None);
        assert_eq!(o.deserialize("t", None).unwrap(), None);
        let u = Serdes::unit();
        assert_eq!(u.deserialize("t", Some(b"anything")).unwrap(), ());
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        assert!(matches!(
            Serdes::string().deserialize("t", Some(&[0xff, 0xfe])),
            Err(SerdeError::Invalid { .. })
        ));
        assert!(matches!(
            Serdes::i64().deserialize("t", Some(&[1, 2, 3])),
            Err(SerdeError::Invalid { .. })
        ));
        assert!(matches!(
            Serdes::i64().deserialize("t", None),
            Err(SerdeError::Null)
        ));
        assert!(Serdes::i64_decimal()
            .deserialize("t", Some(b"12x"))
            .is_err());
        let json = Serdes::json::<std::collections::BTreeMap<String, i64>>();
        assert!(json.deserialize("t", Some(b"{\"a\":")).is_err());
    }
}

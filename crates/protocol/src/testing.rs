//! Test support for the generated messages: random values valid for a version, the round-trip
//! property every message is checked with, and the byte-for-byte comparison with the crates.io
//! `kafka-protocol` codecs.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use uuid::Uuid;

use crate::codec::{Decodable, Encodable, Message};
use crate::str_bytes::StrBytes;

/// A small deterministic generator (xorshift64*), seeded by proptest.
pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64) -> Gen {
        Gen(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly small values, sometimes extremes: both are where codecs break.
    fn int(&mut self) -> i64 {
        match self.next() % 8 {
            0 => 0,
            1 => -1,
            2 => i64::MAX,
            3 => i64::MIN,
            4 | 5 => (self.next() % 300) as i64,
            _ => self.next() as i64,
        }
    }

    pub(crate) fn bool(&mut self) -> bool {
        self.next().is_multiple_of(2)
    }
    pub(crate) fn i8(&mut self) -> i8 {
        self.int() as i8
    }
    pub(crate) fn i16(&mut self) -> i16 {
        self.int() as i16
    }
    pub(crate) fn u16(&mut self) -> u16 {
        self.int() as u16
    }
    pub(crate) fn i32(&mut self) -> i32 {
        self.int() as i32
    }
    #[allow(dead_code)] // Kafka 4.2 has no uint32 field; the generator supports the type.
    pub(crate) fn u32(&mut self) -> u32 {
        self.int() as u32
    }
    pub(crate) fn i64(&mut self) -> i64 {
        self.int()
    }
    pub(crate) fn f64(&mut self) -> f64 {
        // Finite values only: NaN is not equal to itself.
        self.int() as f64 / 7.0
    }
    pub(crate) fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next(), self.next())
    }
    pub(crate) fn string(&mut self) -> StrBytes {
        const PIECES: &[&str] = &["a", "topic", "-", "_", "0", "é", "日本", "\u{1f980}", " "];
        let n = self.next() % 6;
        let s: String = (0..n)
            .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
            .collect();
        StrBytes::from_string(s)
    }
    pub(crate) fn bytes(&mut self) -> Bytes {
        let n = self.next() % 24;
        (0..n)
            .map(|_| self.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
    /// True a quarter of the time: a nullable value is null.
    pub(crate) fn null(&mut self) -> bool {
        self.next().is_multiple_of(4)
    }
    pub(crate) fn vec<T>(&mut self, mut item: impl FnMut(&mut Gen) -> T) -> Vec<T> {
        let n = self.next() % 4;
        (0..n).map(|_| item(self)).collect()
    }
}

/// A random value that `version` can carry (fields the version lacks keep their defaults).
pub(crate) trait Random {
    fn random(g: &mut Gen, version: i16) -> Self;
}

fn versions<T: Message>() -> impl Iterator<Item = i16> {
    T::VERSIONS.min..=T::VERSIONS.max
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn encode<T: Encodable + Debug>(value: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    value
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("v{version}: {e}: {value:?}"));
    buf.freeze()
}

/// Every version: decode(encode(x)) == x, the decoder consumes exactly what was written,
/// re-encoding gives the same bytes, and every strict prefix of the bytes is an error.
pub(crate) fn round_trip<T>()
where
    T: Random + Message + Encodable + Decodable + PartialEq + Debug,
{
    runner(48)
        .run(&any::<u64>(), |seed| {
            let mut g = Gen::new(seed);
            for version in versions::<T>() {
                let value = T::random(&mut g, version);
                let bytes = encode(&value, version);
                let mut rest = bytes.clone();
                let back = T::decode(&mut rest, version)
                    .map_err(|e| TestCaseError::fail(format!("v{version}: {e}")))?;
                prop_assert_eq!(&back, &value, "v{}", version);
                prop_assert!(rest.is_empty(), "v{version}: {} bytes unread", rest.len());
                prop_assert_eq!(encode(&back, version), bytes.clone());
                for cut in 0..bytes.len() {
                    let mut prefix = bytes.slice(..cut);
                    prop_assert!(
                        T::decode(&mut prefix, version).is_err(),
                        "v{version}: {cut} of {} bytes decoded",
                        bytes.len()
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Every version both know: our bytes decode with kafka-protocol and re-encode to the same
/// bytes, and those decode with ours to the value we started from.
pub(crate) fn same_bytes<T, K>()
where
    T: Random + Message + Encodable + Decodable + PartialEq + Debug,
    K: kafka_protocol::protocol::Message
        + kafka_protocol::protocol::Encodable
        + kafka_protocol::protocol::Decodable
        + Debug,
{
    let theirs = K::VERSIONS;
    let both: Vec<i16> = versions::<T>()
        .filter(|v| (theirs.min..=theirs.max).contains(v))
        .collect();
    assert!(!both.is_empty(), "no version in common");
    runner(48)
        .run(&any::<u64>(), |seed| {
            let mut g = Gen::new(seed);
            for &version in &both {
                let value = T::random(&mut g, version);
                let ours = encode(&value, version);
                let mut rest = ours.clone();
                let decoded = K::decode(&mut rest, version).map_err(|e| {
                    TestCaseError::fail(format!("v{version}: kafka-protocol cannot decode: {e}"))
                })?;
                prop_assert!(rest.is_empty(), "v{version}: kafka-protocol left bytes");
                let mut again = BytesMut::new();
                decoded
                    .encode(&mut again, version)
                    .map_err(|e| TestCaseError::fail(format!("v{version}: {e}")))?;
                prop_assert_eq!(&again[..], &ours[..], "v{}: {:?}", version, decoded);
                let back = T::decode(&mut again.freeze(), version)
                    .map_err(|e| TestCaseError::fail(format!("v{version}: {e}")))?;
                prop_assert_eq!(back, value);
            }
            Ok(())
        })
        .unwrap();
}

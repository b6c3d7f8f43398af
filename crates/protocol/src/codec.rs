//! The primitives the generated messages are made of: a bounded reader over a received buffer,
//! the writers for Kafka's types, the typed errors of both, and the traits every message
//! implements.
//!
//! Decoding is bounded by construction: the [`Reader`] never hands out more bytes than remain,
//! every length and count is checked against what is left before anything is reserved or sliced,
//! and strings and byte fields are slices of the received [`Bytes`] (a reference count, no copy).

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::str_bytes::StrBytes;
use crate::varint::{self, VarintError};

/// Why bytes could not be decoded as a message, and which field they broke in.
///
/// Boxed: every field read returns a `Result`, and a pointer-sized error keeps those results in
/// registers on the hot path; the box is only allocated when decoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", .0.field, .0.kind)]
pub struct DecodeError(Box<DecodeErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodeErrorInner {
    field: &'static str,
    kind: DecodeErrorKind,
}

impl DecodeError {
    /// `Struct.field` of the field being read (`Struct` alone for the message framing).
    pub fn field(&self) -> &'static str {
        self.0.field
    }

    /// What was wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.0.kind
    }
}

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("needs {needed} bytes, {remaining} left")]
    Truncated { needed: usize, remaining: usize },
    #[error("length or count {length} is larger than the {remaining} bytes left")]
    TooLong { length: u64, remaining: usize },
    #[error("invalid length {0}")]
    InvalidLength(i64),
    #[error("null is not allowed in this version")]
    UnexpectedNull,
    #[error("{0}")]
    Varint(#[from] VarintError),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("tagged field {tag} declares {declared} bytes but its value takes {used}")]
    TaggedFieldSize {
        tag: u32,
        declared: usize,
        used: usize,
    },
    #[error("version {0} is not supported by this message")]
    UnsupportedVersion(i16),
}

/// Why a message could not be encoded at the requested version (boxed like [`DecodeError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", .0.field, .0.kind)]
pub struct EncodeError(Box<EncodeErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct EncodeErrorInner {
    field: &'static str,
    kind: EncodeErrorKind,
}

impl EncodeError {
    /// `Struct.field` of the field being written.
    pub fn field(&self) -> &'static str {
        self.0.field
    }

    /// What could not be encoded.
    pub fn kind(&self) -> &EncodeErrorKind {
        &self.0.kind
    }
}

/// What could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeErrorKind {
    #[error("{0} is too long for its length prefix")]
    TooLong(usize),
    #[error("null is not allowed in version {0}")]
    UnexpectedNull(i16),
    #[error("version {0} cannot carry a value other than the default")]
    NotInVersion(i16),
    #[error("version {0} is not supported by this message")]
    UnsupportedVersion(i16),
}

#[cold]
fn decode_error(field: &'static str, kind: DecodeErrorKind) -> DecodeError {
    DecodeError(Box::new(DecodeErrorInner { field, kind }))
}

#[cold]
fn encode_error(field: &'static str, kind: EncodeErrorKind) -> EncodeError {
    EncodeError(Box::new(EncodeErrorInner { field, kind }))
}

/// A cursor over a received buffer that cannot read past its end.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader of all of `bytes`.
    pub fn new(bytes: &'a Bytes) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            end: bytes.len(),
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(decode_error(
                field,
                DecodeErrorKind::Truncated {
                    needed: n,
                    remaining: self.remaining(),
                },
            ));
        }
        let bytes: &'a Bytes = self.bytes;
        let slice = &bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn slice(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n, field)?;
        Ok(self.bytes.slice(start..start + n))
    }

    pub fn i8(&mut self, field: &'static str) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.fixed(field)?))
    }

    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        // Kafka reads any non-zero byte as true.
        Ok(self.i8(field)? != 0)
    }

    pub fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.fixed(field)?))
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.fixed(field)?))
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.fixed(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.fixed(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.fixed(field)?))
    }

    pub fn f64(&mut self, field: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_be_bytes(self.fixed(field)?))
    }

    pub fn uuid(&mut self, field: &'static str) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.fixed(field)?))
    }

    pub fn unsigned_varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let input = &self.bytes[self.pos..self.end];
        let (value, len) =
            varint::read_unsigned_varint(input).map_err(|e| decode_error(field, e.into()))?;
        self.pos += len;
        Ok(value)
    }

    /// A length prefix: `None` for null. Compact lengths are an unsigned varint of length + 1,
    /// the others a signed `i16` (strings) or `i32` (bytes, arrays) with -1 for null. The length
    /// is checked against the bytes left, so the caller may reserve or slice that much.
    fn length(
        &mut self,
        field: &'static str,
        compact: bool,
        short: bool,
    ) -> Result<Option<usize>, DecodeError> {
        let length: i64 = if compact {
            i64::from(self.unsigned_varint(field)?) - 1
        } else if short {
            i64::from(self.i16(field)?)
        } else {
            i64::from(self.i32(field)?)
        };
        if length == -1 {
            return Ok(None);
        }
        if length < 0 {
            return Err(decode_error(field, DecodeErrorKind::InvalidLength(length)));
        }
        if length as u64 > self.remaining() as u64 {
            return Err(decode_error(
                field,
                DecodeErrorKind::TooLong {
                    length: length as u64,
                    remaining: self.remaining(),
                },
            ));
        }
        Ok(Some(length as usize))
    }

    pub fn nullable_string(
        &mut self,
        field: &'static str,
        compact: bool,
    ) -> Result<Option<StrBytes>, DecodeError> {
        match self.length(field, compact, true)? {
            None => Ok(None),
            Some(n) => {
                let bytes = self.slice(n, field)?;
                StrBytes::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| decode_error(field, DecodeErrorKind::NotUtf8))
            }
        }
    }

    pub fn string(&mut self, field: &'static str, compact: bool) -> Result<StrBytes, DecodeError> {
        self.nullable_string(field, compact)?
            .ok_or_else(|| decode_error(field, DecodeErrorKind::UnexpectedNull))
    }

    pub fn nullable_bytes(
        &mut self,
        field: &'static str,
        compact: bool,
    ) -> Result<Option<Bytes>, DecodeError> {
        match self.length(field, compact, false)? {
            None => Ok(None),
            Some(n) => self.slice(n, field).map(Some),
        }
    }

    pub fn bytes(&mut self, field: &'static str, compact: bool) -> Result<Bytes, DecodeError> {
        self.nullable_bytes(field, compact)?
            .ok_or_else(|| decode_error(field, DecodeErrorKind::UnexpectedNull))
    }

    /// An array whose elements `read` decodes; `None` for null. The count is checked against the
    /// bytes left, and no more is reserved up front than those bytes could hold elements.
    pub fn nullable_array<T>(
        &mut self,
        field: &'static str,
        compact: bool,
        mut read: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let Some(count) = self.length(field, compact, false)? else {
            return Ok(None);
        };
        let fits = self.remaining() / std::mem::size_of::<T>().max(1);
        let mut items = Vec::with_capacity(count.min(fits));
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(Some(items))
    }

    pub fn array<T>(
        &mut self,
        field: &'static str,
        compact: bool,
        read: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        self.nullable_array(field, compact, read)?
            .ok_or_else(|| decode_error(field, DecodeErrorKind::UnexpectedNull))
    }

    /// The presence byte of a nullable struct field: false for null.
    pub fn present(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        Ok(self.i8(field)? >= 0)
    }

    /// Reads the tagged-field section of a flexible struct. `known` decodes a tag it knows from a
    /// reader limited to the tag's declared size and returns true; false means the tag is
    /// unknown and its bytes are skipped.
    pub fn tagged_fields(
        &mut self,
        field: &'static str,
        mut known: impl FnMut(u32, &mut Reader<'a>) -> Result<bool, DecodeError>,
    ) -> Result<(), DecodeError> {
        let count = self.unsigned_varint(field)?;
        for _ in 0..count {
            let tag = self.unsigned_varint(field)?;
            let size = self.unsigned_varint(field)? as usize;
            if size > self.remaining() {
                return Err(decode_error(
                    field,
                    DecodeErrorKind::TooLong {
                        length: size as u64,
                        remaining: self.remaining(),
                    },
                ));
            }
            let mut value = Reader {
                bytes: self.bytes,
                pos: self.pos,
                end: self.pos + size,
            };
            self.pos += size;
            if known(tag, &mut value)? && value.remaining() != 0 {
                return Err(decode_error(
                    field,
                    DecodeErrorKind::TaggedFieldSize {
                        tag,
                        declared: size,
                        used: size - value.remaining(),
                    },
                ));
            }
        }
        Ok(())
    }
}

/// Appends an unsigned varint.
pub fn put_unsigned_varint(buf: &mut BytesMut, value: u32) {
    varint::write_unsigned_varint(buf, value);
}

fn put_length(
    buf: &mut BytesMut,
    field: &'static str,
    length: Option<usize>,
    compact: bool,
    short: bool,
) -> Result<(), EncodeError> {
    let too_long = |n: usize| encode_error(field, EncodeErrorKind::TooLong(n));
    match (length, compact) {
        (None, true) => buf.put_u8(0),
        (None, false) if short => buf.put_i16(-1),
        (None, false) => buf.put_i32(-1),
        (Some(n), true) => {
            let prefixed = u32::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or_else(|| too_long(n))?;
            put_unsigned_varint(buf, prefixed);
        }
        (Some(n), false) if short => buf.put_i16(i16::try_from(n).map_err(|_| too_long(n))?),
        (Some(n), false) => buf.put_i32(i32::try_from(n).map_err(|_| too_long(n))?),
    }
    Ok(())
}

fn null_check(
    field: &'static str,
    nullable: bool,
    version: i16,
    is_null: bool,
) -> Result<(), EncodeError> {
    if is_null && !nullable {
        return Err(encode_error(
            field,
            EncodeErrorKind::UnexpectedNull(version),
        ));
    }
    Ok(())
}

pub fn put_string(
    buf: &mut BytesMut,
    field: &'static str,
    value: &str,
    compact: bool,
) -> Result<(), EncodeError> {
    put_length(buf, field, Some(value.len()), compact, true)?;
    buf.put_slice(value.as_bytes());
    Ok(())
}

/// A nullable string; `nullable` says whether this version may carry null.
pub fn put_nullable_string(
    buf: &mut BytesMut,
    field: &'static str,
    value: Option<&str>,
    compact: bool,
    nullable: bool,
    version: i16,
) -> Result<(), EncodeError> {
    null_check(field, nullable, version, value.is_none())?;
    match value {
        None => put_length(buf, field, None, compact, true),
        Some(s) => put_string(buf, field, s, compact),
    }
}

pub fn put_bytes(
    buf: &mut BytesMut,
    field: &'static str,
    value: &[u8],
    compact: bool,
) -> Result<(), EncodeError> {
    put_length(buf, field, Some(value.len()), compact, false)?;
    buf.put_slice(value);
    Ok(())
}

pub fn put_nullable_bytes(
    buf: &mut BytesMut,
    field: &'static str,
    value: Option<&[u8]>,
    compact: bool,
    nullable: bool,
    version: i16,
) -> Result<(), EncodeError> {
    null_check(field, nullable, version, value.is_none())?;
    match value {
        None => put_length(buf, field, None, compact, false),
        Some(b) => put_bytes(buf, field, b, compact),
    }
}

/// An array whose elements `write` encodes.
pub fn put_array<T>(
    buf: &mut BytesMut,
    field: &'static str,
    items: &[T],
    compact: bool,
    mut write: impl FnMut(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    put_length(buf, field, Some(items.len()), compact, false)?;
    for item in items {
        write(buf, item)?;
    }
    Ok(())
}

pub fn put_nullable_array<T>(
    buf: &mut BytesMut,
    field: &'static str,
    items: Option<&[T]>,
    compact: bool,
    nullable: bool,
    version: i16,
    write: impl FnMut(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    null_check(field, nullable, version, items.is_none())?;
    match items {
        None => put_length(buf, field, None, compact, false),
        Some(items) => put_array(buf, field, items, compact, write),
    }
}

/// A nullable struct: a presence byte (-1 for null, 1 before the struct).
pub fn put_nullable_struct<T>(
    buf: &mut BytesMut,
    field: &'static str,
    value: Option<&T>,
    nullable: bool,
    version: i16,
    write: impl FnOnce(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    null_check(field, nullable, version, value.is_none())?;
    match value {
        None => {
            buf.put_i8(-1);
            Ok(())
        }
        Some(value) => {
            buf.put_i8(1);
            write(buf, value)
        }
    }
}

/// One tagged field: its tag, its size and its value as `write` encodes it.
pub fn put_tagged(
    buf: &mut BytesMut,
    field: &'static str,
    tag: u32,
    write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    // Tagged fields are rare and small: encode aside to learn the size prefix.
    let mut value = BytesMut::new();
    write(&mut value)?;
    let size = u32::try_from(value.len())
        .map_err(|_| encode_error(field, EncodeErrorKind::TooLong(value.len())))?;
    put_unsigned_varint(buf, tag);
    put_unsigned_varint(buf, size);
    buf.put_slice(&value);
    Ok(())
}

/// The error for a field that holds a non-default value in a version that does not have it.
pub fn not_in_version(field: &'static str, version: i16) -> EncodeError {
    encode_error(field, EncodeErrorKind::NotInVersion(version))
}

/// The error for a null value in a version where the field is not nullable.
pub fn unexpected_null(field: &'static str, version: i16) -> EncodeError {
    encode_error(field, EncodeErrorKind::UnexpectedNull(version))
}

/// The range of versions a message or API has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    pub fn contains(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }

    pub fn is_empty(&self) -> bool {
        self.min > self.max
    }

    /// The versions both ranges have.
    pub fn intersect(&self, other: &VersionRange) -> VersionRange {
        VersionRange {
            min: self.min.max(other.min),
            max: self.max.min(other.max),
        }
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// A message with a version range (requests, responses, headers and data messages).
pub trait Message {
    const VERSIONS: VersionRange;
    /// Versions Kafka marks deprecated, if any.
    const DEPRECATED_VERSIONS: Option<VersionRange>;
}

/// A message that can be written at any of its versions.
pub trait Encodable {
    /// Appends the message as `version` to `buf`.
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;
}

/// A message that can be read at any of its versions.
pub trait Decodable: Sized {
    /// Reads the message as `version` from the front of `buf` and advances `buf` past it. String
    /// and byte fields share `buf`'s memory.
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// The header version that goes with each version of a request or response.
pub trait HeaderVersion {
    fn header_version(version: i16) -> i16;
}

/// A request, its API key and the response it is answered with.
pub trait Request: Message + Encodable + Decodable + HeaderVersion {
    /// The API key as the wire carries it.
    const KEY: i16;
    /// The API key as an enum.
    const API_KEY: crate::messages::ApiKey;
    type Response: Message + Encodable + Decodable + HeaderVersion;
}

/// Reads and writes of a struct inside a message (what the generated code implements).
pub trait Struct: Sized {
    fn read(r: &mut Reader<'_>, version: i16) -> Result<Self, DecodeError>;
    fn write(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;
}

/// Decodes a whole message of type `T` from the front of `buf`.
pub fn decode_message<T: Struct + Message>(
    buf: &mut Bytes,
    version: i16,
    name: &'static str,
) -> Result<T, DecodeError> {
    if !T::VERSIONS.contains(version) {
        return Err(decode_error(
            name,
            DecodeErrorKind::UnsupportedVersion(version),
        ));
    }
    let mut r = Reader::new(buf);
    let value = T::read(&mut r, version)?;
    let used = r.position();
    bytes::Buf::advance(buf, used);
    Ok(value)
}

/// Encodes a whole message of type `T`.
pub fn encode_message<T: Struct + Message>(
    value: &T,
    buf: &mut BytesMut,
    version: i16,
    name: &'static str,
) -> Result<(), EncodeError> {
    if !T::VERSIONS.contains(version) {
        return Err(encode_error(
            name,
            EncodeErrorKind::UnsupportedVersion(version),
        ));
    }
    value.write(buf, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_are_refused_before_reserving() {
        // An array claiming i32::MAX elements in five bytes.
        let bytes = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0x00]);
        let mut r = Reader::new(&bytes);
        let err = r.array("T.items", false, |r| r.i8("T.item")).unwrap_err();
        assert_eq!(err.field(), "T.items");
        assert!(matches!(err.kind(), DecodeErrorKind::TooLong { .. }));
        // A compact string one byte longer than what is left.
        let bytes = Bytes::from_static(&[0x04, b'a', b'b']);
        let err = Reader::new(&bytes).string("T.name", true).unwrap_err();
        assert!(matches!(
            err.kind(),
            DecodeErrorKind::TooLong { length: 3, .. }
        ));
        // Lengths below -1 are malformed, -1 is null.
        let bytes = Bytes::from_static(&[0xff, 0xfe]);
        let err = Reader::new(&bytes)
            .nullable_string("T.s", false)
            .unwrap_err();
        assert_eq!(*err.kind(), DecodeErrorKind::InvalidLength(-2));
        let bytes = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(Reader::new(&bytes).nullable_string("T.s", false), Ok(None));
        let err = Reader::new(&bytes).string("T.s", false).unwrap_err();
        assert_eq!(*err.kind(), DecodeErrorKind::UnexpectedNull);
    }

    #[test]
    fn strings_share_the_buffer_and_must_be_utf8() {
        let bytes = Bytes::from_static(&[0x00, 0x02, b'h', b'i', 0x00, 0x01, 0xff]);
        let mut r = Reader::new(&bytes);
        let s = r.string("T.a", false).unwrap();
        assert_eq!(s, "hi");
        assert_eq!(s.as_bytes().as_ptr(), bytes[2..].as_ptr());
        let err = r.string("T.b", false).unwrap_err();
        assert_eq!(*err.kind(), DecodeErrorKind::NotUtf8);
    }

    #[test]
    fn tagged_fields_are_bounded_and_unknown_ones_skipped() {
        // Two tags: 5 (unknown, 2 bytes) and 0 (known int16).
        let bytes = Bytes::from_static(&[0x02, 0x05, 0x02, 0xaa, 0xbb, 0x00, 0x02, 0x01, 0x02]);
        let mut seen = None;
        Reader::new(&bytes)
            .tagged_fields("T", |tag, r| {
                if tag == 0 {
                    seen = Some(r.i16("T.x")?);
                    return Ok(true);
                }
                Ok(false)
            })
            .unwrap();
        assert_eq!(seen, Some(0x0102));
        // A known tag whose value is shorter than its declared size.
        let bytes = Bytes::from_static(&[0x01, 0x00, 0x03, 0x01, 0x02, 0x03]);
        let err = Reader::new(&bytes)
            .tagged_fields("T", |_, r| r.i16("T.x").map(|_| true))
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            DecodeErrorKind::TaggedFieldSize { .. }
        ));
        // A value cannot be read past its declared size.
        let bytes = Bytes::from_static(&[0x01, 0x00, 0x01, 0x01, 0x02]);
        let err = Reader::new(&bytes)
            .tagged_fields("T", |_, r| r.i16("T.x").map(|_| true))
            .unwrap_err();
        assert!(matches!(err.kind(), DecodeErrorKind::Truncated { .. }));
    }

    #[test]
    fn lengths_encode_as_kafka_does() {
        let mut buf = BytesMut::new();
        put_nullable_string(&mut buf, "T.a", None, false, true, 0).unwrap();
        put_nullable_string(&mut buf, "T.a", None, true, true, 0).unwrap();
        put_string(&mut buf, "T.b", "x", true).unwrap();
        put_bytes(&mut buf, "T.c", b"yz", false).unwrap();
        assert_eq!(
            &buf[..],
            &[0xff, 0xff, 0x00, 0x02, b'x', 0, 0, 0, 2, b'y', b'z']
        );
        let err = put_nullable_string(&mut buf, "T.a", None, false, false, 3).unwrap_err();
        assert_eq!(*err.kind(), EncodeErrorKind::UnexpectedNull(3));
        let long = "x".repeat(40_000);
        let err = put_string(&mut buf, "T.a", &long, false).unwrap_err();
        assert_eq!(*err.kind(), EncodeErrorKind::TooLong(40_000));
    }
}

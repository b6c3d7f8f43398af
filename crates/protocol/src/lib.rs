//! Sluice's own implementation of the Kafka wire protocol.
//!
//! Everything here decodes bytes that may be hostile, so every decoder is bounded by
//! construction: a length, a count or a varint is checked against the bytes that remain before
//! anything is allocated or sliced, and malformed input is a typed error, never a panic.
//!
//! - [`varint`] — the variable-length integers shared by record batches and flexible messages.
//! - [`codec`] — the reader, writers, errors and traits the generated messages are built on.
//! - [`messages`] — every request, response, header and data message of Kafka 4.2, generated
//!   from `schema/` by `sluice-protocol-gen`, and the API table ([`messages::ApiKey`]).
//! - [`records`] — record batches (magic v2): header view, record iterator, codecs, builder.
//! - [`error`] — Kafka's error codes ([`error::ResponseError`]), generated likewise.
//! - [`request`] — a request frame to its header and body, for any API and version.
//! - [`str_bytes`] — [`StrBytes`], strings that share the buffer they were decoded from.

pub mod codec;
pub mod error;
pub mod messages;
pub mod records;
pub mod request;
pub mod str_bytes;
#[cfg(test)]
mod testing;
pub mod varint;

pub use codec::{
    Decodable, DecodeError, Encodable, EncodeError, HeaderVersion, Message, Request, VersionRange,
};
pub use str_bytes::StrBytes;

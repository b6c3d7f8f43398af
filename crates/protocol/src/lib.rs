//! Sluice's own implementation of the Kafka wire protocol.
//!
//! Everything here decodes bytes that may be hostile, so every decoder is bounded by
//! construction: a length, a count or a varint is checked against the bytes that remain before
//! anything is allocated or sliced, and malformed input is a typed error, never a panic.
//!
//! - [`varint`] — the variable-length integers shared by record batches and flexible messages.
//! - [`records`] — record batches (magic v2): header view, record iterator, codecs, builder.

pub mod records;
pub mod varint;

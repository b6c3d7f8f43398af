//! Kafka's variable-length integers: unsigned varints (flexible-version lengths and tags) and
//! zig-zag signed varints and varlongs (record fields), decoded from a byte slice without panics.
//!
//! Kafka encodes them as protobuf does: seven bits per byte, least significant group first, the
//! high bit set on every byte but the last. An `int32` takes at most 5 bytes and an `int64` at most
//! 10; a longer encoding, or one whose last byte carries bits that do not fit, is malformed.

use bytes::BufMut;

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    /// The input ended in the middle of the varint.
    #[error("varint runs past the end of the input")]
    Truncated,
    /// More bytes than the type allows, or bits that do not fit in it.
    #[error("varint is too long for its type")]
    Overflow,
}

/// Decodes an unsigned varint of at most 32 bits from the front of `input`.
/// Returns the value and the number of bytes it took.
#[inline]
pub fn read_unsigned_varint(input: &[u8]) -> Result<(u32, usize), VarintError> {
    let (value, len) = read_raw(input, 5)?;
    let value = u32::try_from(value).map_err(|_| VarintError::Overflow)?;
    Ok((value, len))
}

/// Decodes an unsigned varint of at most 64 bits from the front of `input`.
#[inline]
pub fn read_unsigned_varlong(input: &[u8]) -> Result<(u64, usize), VarintError> {
    read_raw(input, 10)
}

/// Decodes a zig-zag signed varint (`int32`) from the front of `input`.
#[inline]
pub fn read_varint(input: &[u8]) -> Result<(i32, usize), VarintError> {
    let (raw, len) = read_unsigned_varint(input)?;
    Ok((((raw >> 1) as i32) ^ -((raw & 1) as i32), len))
}

/// Decodes a zig-zag signed varlong (`int64`) from the front of `input`.
#[inline]
pub fn read_varlong(input: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, len) = read_unsigned_varlong(input)?;
    Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), len))
}

/// Appends `value` as an unsigned varint (to a `Vec<u8>`, a `BytesMut` or any other buffer).
pub fn write_unsigned_varint(out: &mut impl BufMut, value: u32) {
    write_raw(out, u64::from(value));
}

/// Appends `value` as an unsigned varlong.
pub fn write_unsigned_varlong(out: &mut impl BufMut, value: u64) {
    write_raw(out, value);
}

/// Appends `value` as a zig-zag signed varint.
pub fn write_varint(out: &mut impl BufMut, value: i32) {
    write_raw(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

/// Appends `value` as a zig-zag signed varlong.
pub fn write_varlong(out: &mut impl BufMut, value: i64) {
    write_raw(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Bytes that [`write_unsigned_varint`] would append for `value`.
pub fn unsigned_varint_len(value: u32) -> usize {
    raw_len(u64::from(value))
}

/// Bytes that [`write_varint`] would append for `value`.
pub fn varint_len(value: i32) -> usize {
    raw_len(u64::from(((value << 1) ^ (value >> 31)) as u32))
}

/// Bytes that [`write_varlong`] would append for `value`.
pub fn varlong_len(value: i64) -> usize {
    raw_len(((value << 1) ^ (value >> 63)) as u64)
}

#[inline]
fn read_raw(input: &[u8], max_len: usize) -> Result<(u64, usize), VarintError> {
    // Most record fields (deltas, short lengths) fit one byte.
    if let Some(&byte) = input.first() {
        if byte & 0x80 == 0 {
            return Ok((u64::from(byte), 1));
        }
    }
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(max_len) {
        let group = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        // The tenth byte of a 64-bit varint may carry only the top bit.
        if shift == 63 && group > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if input.len() < max_len {
        Err(VarintError::Truncated)
    } else {
        Err(VarintError::Overflow)
    }
}

fn write_raw(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn raw_len(value: u64) -> usize {
    // One byte per started group of seven bits; zero still takes one byte.
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        write_varint(&mut out, 0);
        write_varint(&mut out, -1);
        write_varint(&mut out, 1);
        write_varint(&mut out, 300);
        assert_eq!(out, [0x00, 0x01, 0x02, 0xd8, 0x04]);
        assert_eq!(read_varint(&[0xd8, 0x04]), Ok((300, 2)));
        assert_eq!(read_varint(&[0x01]), Ok((-1, 1)));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated));
        assert_eq!(read_varint(&[0x80, 0x80]), Err(VarintError::Truncated));
        // Six bytes for an int32, and a fifth byte with bits past 32.
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(VarintError::Overflow)
        );
        assert_eq!(
            read_unsigned_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overflow)
        );
        assert_eq!(
            read_unsigned_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Ok((u32::MAX, 5))
        );
        let mut eleven = [0xffu8; 11];
        eleven[10] = 0;
        assert_eq!(read_varlong(&eleven), Err(VarintError::Overflow));
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(read_unsigned_varlong(&ten), Err(VarintError::Overflow));
        ten[9] = 0x01;
        assert_eq!(read_unsigned_varlong(&ten), Ok((u64::MAX, 10)));
    }

    proptest! {
        #[test]
        fn round_trips(a: i32, b: i64, c: u32, d: u64) {
            let mut out = Vec::new();
            write_varint(&mut out, a);
            prop_assert_eq!(out.len(), varint_len(a));
            write_varlong(&mut out, b);
            write_unsigned_varint(&mut out, c);
            prop_assert_eq!(out.len(), varint_len(a) + varlong_len(b) + unsigned_varint_len(c));
            write_unsigned_varlong(&mut out, d);
            let (ra, n1) = read_varint(&out).unwrap();
            let (rb, n2) = read_varlong(&out[n1..]).unwrap();
            let (rc, n3) = read_unsigned_varint(&out[n1 + n2..]).unwrap();
            let (rd, n4) = read_unsigned_varlong(&out[n1 + n2 + n3..]).unwrap();
            prop_assert_eq!((ra, rb, rc, rd), (a, b, c, d));
            prop_assert_eq!(n1 + n2 + n3 + n4, out.len());
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = read_varint(&bytes);
            let _ = read_varlong(&bytes);
            let _ = read_unsigned_varint(&bytes);
            let _ = read_unsigned_varlong(&bytes);
        }
    }
}

//! One record ([`Record`], [`Headers`]) and the zero-allocation iterator over an uncompressed
//! records section ([`Records`]). The record parser here is the only one: the streaming reader of
//! compressed batches feeds it one whole record at a time.

use super::{BatchHeader, RecordsError};
use crate::varint::{read_varint, read_varlong};

/// Bytes of the smallest possible record: length, attributes, timestamp delta, offset delta,
/// key length, value length and header count, one byte each. Bounds a claimed record count.
pub const MIN_RECORD_LEN: usize = 7;

/// The record body's smallest length (all of [`MIN_RECORD_LEN`] but the length itself).
const MIN_BODY_LEN: i32 = 6;

/// What a record needs from its batch header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Base {
    pub(crate) offset: i64,
    pub(crate) timestamp: i64,
    /// The batch's max timestamp when it uses LogAppendTime: every record's timestamp.
    pub(crate) log_append_time: Option<i64>,
}

/// One record, borrowing its key, value and headers from the bytes it was read from.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Base offset plus offset delta.
    pub offset: i64,
    /// Base timestamp plus timestamp delta (CreateTime), or the batch's max timestamp
    /// (LogAppendTime).
    pub timestamp: i64,
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// Unused by Kafka so far; kept as sent.
    pub attributes: i8,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers: Headers<'a>,
    raw: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's headers, in order (already checked when the record was read).
    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }

    /// The record's encoding, length prefix included: what a filtering writer copies as it is
    /// ([`super::BatchBuilder::append_raw`]).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// One record header. Kafka's header keys are strings; they are given here as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// The headers of one record. Their bytes were checked when the record was read, so iterating
/// cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    rest: &'a [u8],
    left: u32,
}

impl Headers<'_> {
    /// How many headers are left to iterate.
    pub fn count(&self) -> u32 {
        self.left
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.left == 0 {
            return None;
        }
        let mut cursor = Cursor {
            bytes: self.rest,
            pos: 0,
            index: 0,
        };
        let header = read_header(&mut cursor).ok()?;
        self.rest = &self.rest[cursor.pos..];
        self.left -= 1;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// A position in one record's bytes; every read is checked against what is left.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The record's index in its batch, for errors.
    index: u32,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn malformed(&self, what: &'static str) -> RecordsError {
        RecordsError::MalformedRecord {
            index: self.index,
            what,
        }
    }

    #[inline]
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    #[inline(always)]
    fn byte(&mut self, what: &'static str) -> Result<u8, RecordsError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.malformed(what))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn varint(&mut self, what: &'static str) -> Result<i32, RecordsError> {
        let (value, len) =
            read_varint(&self.bytes[self.pos..]).map_err(|_| self.malformed(what))?;
        self.pos += len;
        Ok(value)
    }

    #[inline]
    fn varlong(&mut self, what: &'static str) -> Result<i64, RecordsError> {
        let (value, len) =
            read_varlong(&self.bytes[self.pos..]).map_err(|_| self.malformed(what))?;
        self.pos += len;
        Ok(value)
    }

    #[inline(always)]
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], RecordsError> {
        if len > self.left() {
            return Err(self.malformed(what));
        }
        let bytes = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    /// A varint length (-1 for null) and that many bytes.
    #[inline(always)]
    fn nullable(
        &mut self,
        length: &'static str,
        past_end: &'static str,
    ) -> Result<Option<&'a [u8]>, RecordsError> {
        match self.varint(length)? {
            -1 => Ok(None),
            len if len < 0 => Err(self.malformed(length)),
            len => self.take(len as usize, past_end).map(Some),
        }
    }
}

#[inline]
fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<Header<'a>, RecordsError> {
    let key_len = cursor.varint("a header key length is not a valid varint")?;
    if key_len < 0 {
        return Err(cursor.malformed("a header key length is negative"));
    }
    let key = cursor.take(key_len as usize, "a header key runs past the record")?;
    let value = cursor.nullable(
        "a header value length is not a valid varint or below -1",
        "a header value runs past the record",
    )?;
    Ok(Header { key, value })
}

/// The total length (length prefix included) of the record at the front of `input`, or None
/// when `input` ends inside its length prefix (the streaming reader then reads more).
pub(crate) fn record_extent(input: &[u8], index: u32) -> Result<Option<usize>, RecordsError> {
    Ok(length_prefix(input, index)?.map(|(prefix, body)| prefix + body))
}

/// The record's length prefix: its size and the body length it gives.
#[inline]
fn length_prefix(input: &[u8], index: u32) -> Result<Option<(usize, usize)>, RecordsError> {
    use crate::varint::VarintError;
    match read_varint(input) {
        Ok((length, _)) if length < MIN_BODY_LEN => Err(RecordsError::MalformedRecord {
            index,
            what: "the record length is smaller than a record's fixed fields",
        }),
        Ok((length, prefix)) => Ok(Some((prefix, length as usize))),
        Err(VarintError::Truncated) => Ok(None),
        Err(VarintError::Overflow) => Err(RecordsError::MalformedRecord {
            index,
            what: "the record length is not a valid varint",
        }),
    }
}

/// Parses the record at the front of `input` (which may hold more after it); its total length is
/// `record.raw().len()`. Every length is checked against the record's own length, and the fields
/// must fill it exactly.
#[inline]
pub(crate) fn parse_record<'a>(
    input: &'a [u8],
    index: u32,
    base: &Base,
) -> Result<Record<'a>, RecordsError> {
    let (prefix, body) = length_prefix(input, index)?.ok_or(RecordsError::MalformedRecord {
        index,
        what: "the record length is cut off",
    })?;
    let total = prefix + body;
    if total > input.len() {
        return Err(RecordsError::MalformedRecord {
            index,
            what: "the record runs past the end of the records",
        });
    }
    let raw = &input[..total];
    let mut cursor = Cursor {
        bytes: raw,
        pos: prefix,
        index,
    };
    let attributes = cursor.byte("the attributes are missing")? as i8;
    let timestamp_delta = cursor.varlong("the timestamp delta is not a valid varlong")?;
    let offset_delta = cursor.varint("the offset delta is not a valid varint")?;
    let key = cursor.nullable(
        "the key length is not a valid varint or below -1",
        "the key runs past the record",
    )?;
    let value = cursor.nullable(
        "the value length is not a valid varint or below -1",
        "the value runs past the record",
    )?;
    let header_count = cursor.varint("the header count is not a valid varint")?;
    // Each header takes at least two bytes (key length and value length).
    let header_count = u32::try_from(header_count)
        .ok()
        .filter(|&n| n as usize <= cursor.left() / 2)
        .ok_or_else(|| cursor.malformed("the header count is negative or past the record"))?;
    let headers_at = cursor.pos;
    for _ in 0..header_count {
        read_header(&mut cursor)?;
    }
    if cursor.left() != 0 {
        return Err(cursor.malformed("the record length disagrees with its fields"));
    }
    Ok(Record {
        offset: base.offset.wrapping_add(i64::from(offset_delta)),
        timestamp: base
            .log_append_time
            .unwrap_or_else(|| base.timestamp.wrapping_add(timestamp_delta)),
        offset_delta,
        timestamp_delta,
        attributes,
        key,
        value,
        headers: Headers {
            rest: &raw[headers_at..],
            left: header_count,
        },
        raw,
    })
}

/// The count and order rules of a batch's records: exactly the claimed count, offset deltas
/// rising and never past the header's last offset delta. Shared by [`Records`] and the
/// streaming reader.
#[derive(Debug, Clone)]
pub(crate) struct Sequence {
    claimed: u32,
    read: u32,
    previous: i32,
    last: i32,
}

impl Sequence {
    pub(crate) fn new(claimed: u32, last_offset_delta: i32) -> Self {
        Sequence {
            claimed,
            read: 0,
            previous: -1,
            last: last_offset_delta,
        }
    }

    /// Index of the next record.
    pub(crate) fn index(&self) -> u32 {
        self.read
    }

    pub(crate) fn claimed(&self) -> u32 {
        self.claimed
    }

    /// True once the claimed count was read.
    pub(crate) fn done(&self) -> bool {
        self.read == self.claimed
    }

    /// Accepts the next record's offset delta.
    #[inline]
    pub(crate) fn accept(&mut self, delta: i32) -> Result<(), RecordsError> {
        let index = self.read;
        if delta <= self.previous {
            return Err(RecordsError::OffsetDeltaOrder {
                index,
                delta,
                previous: self.previous,
            });
        }
        if delta > self.last {
            return Err(RecordsError::OffsetDeltaPastLast {
                index,
                delta,
                last: self.last,
            });
        }
        self.previous = delta;
        self.read += 1;
        Ok(())
    }
}

/// The records of an uncompressed records section (or of decompressed bytes), in order,
/// borrowed from those bytes; nothing is allocated. Yields an error, and then nothing, when a
/// record is malformed, offset deltas do not rise, the bytes end before the claimed count, or
/// bytes are left after it.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    base: Base,
    sequence: Sequence,
    finished: bool,
}

impl<'a> Records<'a> {
    /// Records of `bytes` (a records section, not compressed) under `header`. A claimed count
    /// that the bytes cannot hold (negative, or above one record per [`MIN_RECORD_LEN`] bytes)
    /// is refused now, before any record is read.
    pub fn new(bytes: &'a [u8], header: &BatchHeader) -> Result<Self, RecordsError> {
        let claimed = header.count_within(bytes.len())?;
        Ok(Records {
            rest: bytes,
            base: header.base(),
            sequence: Sequence::new(claimed, header.last_offset_delta),
            finished: false,
        })
    }

    /// Reads the next record, which must be there (the count is not reached yet).
    #[inline]
    fn step(&mut self) -> Result<Record<'a>, RecordsError> {
        let record = parse_record(self.rest, self.sequence.index(), &self.base)?;
        self.sequence.accept(record.offset_delta)?;
        self.rest = &self.rest[record.raw.len()..];
        Ok(record)
    }

    /// Calls `f` with each record: what the iterator yields, without wrapping each record in an
    /// `Option<Result<..>>` (the produce path walks every record this way).
    #[inline]
    pub(crate) fn for_each<E: From<RecordsError>>(
        mut self,
        f: &mut impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !self.sequence.done() {
            if self.rest.is_empty() {
                return Err(RecordsError::CountMismatch {
                    claimed: self.sequence.claimed(),
                    found: self.sequence.index(),
                }
                .into());
            }
            f(self.step()?)?;
        }
        if !self.rest.is_empty() {
            return Err(RecordsError::TrailingBytes {
                bytes: self.rest.len(),
                count: self.sequence.claimed(),
            }
            .into());
        }
        Ok(())
    }

    fn fail(&mut self, error: RecordsError) -> Option<Result<Record<'a>, RecordsError>> {
        self.finished = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordsError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        if self.sequence.done() {
            self.finished = true;
            if !self.rest.is_empty() {
                return Some(Err(RecordsError::TrailingBytes {
                    bytes: self.rest.len(),
                    count: self.sequence.claimed(),
                }));
            }
            return None;
        }
        if self.rest.is_empty() {
            return self.fail(RecordsError::CountMismatch {
                claimed: self.sequence.claimed(),
                found: self.sequence.index(),
            });
        }
        match self.step() {
            Ok(record) => Some(Ok(record)),
            Err(e) => self.fail(e),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.sequence.claimed() - self.sequence.index()) as usize;
        (0, Some(left + 1))
    }
}

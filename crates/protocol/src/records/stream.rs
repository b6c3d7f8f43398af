//! The records of a compressed batch, streamed: decompressed a buffer at a time and handed one
//! whole record at a time to the same parser [`super::Records`] uses. Memory stays at one buffer
//! (grown only to hold the largest record) whatever the batch decompresses to.

use super::compression::Decompressor;
use super::record::{parse_record, record_extent, Sequence};
use super::{BatchHeader, Compression, Record, RecordsError};

/// Bytes decompressed per read.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// A [`CHUNK`]-sized buffer per thread, zeroed once: allocating and zeroing 64 KiB per batch
    /// would cost more than decompressing a small batch. Taken out while a walk runs (a nested
    /// walk gets a fresh one); a buffer grown for a large record is not kept.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The thread's scratch buffer (or a new one), [`CHUNK`] bytes long.
fn take_scratch() -> Vec<u8> {
    let mut buf = SCRATCH.with(std::cell::Cell::take);
    buf.resize(CHUNK, 0);
    buf
}

fn return_scratch(mut buf: Vec<u8>) {
    if buf.capacity() <= CHUNK {
        buf.truncate(CHUNK);
        SCRATCH.with(|cell| cell.set(buf));
    }
}

/// Calls `f` with each record of `payload` (compressed with `codec`) under `header`, with the
/// checks of [`super::Records`]: the claimed count exactly, rising offset deltas, no trailing
/// bytes. At most `limit` bytes are decompressed.
pub(crate) fn walk<E: From<RecordsError>>(
    codec: Compression,
    payload: &[u8],
    header: &BatchHeader,
    limit: usize,
    f: &mut impl FnMut(Record<'_>) -> Result<(), E>,
) -> Result<(), E> {
    // More records than the limit could hold can never be there: refuse before decompressing.
    let claimed = header.count_within(limit)?;
    let mut buf = take_scratch();
    let result = walk_with(codec, payload, header, limit, claimed, &mut buf, f);
    return_scratch(buf);
    result
}

fn walk_with<E: From<RecordsError>>(
    codec: Compression,
    payload: &[u8],
    header: &BatchHeader,
    limit: usize,
    claimed: u32,
    buf: &mut Vec<u8>,
    f: &mut impl FnMut(Record<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let base = header.base();
    let mut sequence = Sequence::new(claimed, header.last_offset_delta);
    let mut source = Decompressor::new(codec, payload, limit)?;
    // Unparsed bytes are buf[start..end].
    let (mut start, mut end, mut eof) = (0, 0, false);
    loop {
        if sequence.done() {
            let mut left = end - start;
            if left == 0 && !eof {
                left = source.read(buf)?;
            }
            if left > 0 {
                return Err(RecordsError::TrailingBytes {
                    bytes: left,
                    count: claimed,
                }
                .into());
            }
            return Ok(());
        }
        let extent = record_extent(&buf[start..end], sequence.index())?;
        if let Some(len) = extent.filter(|&len| len <= end - start) {
            let record = parse_record(&buf[start..start + len], sequence.index(), &base)?;
            sequence.accept(record.offset_delta)?;
            f(record)?;
            start += len;
            continue;
        }
        if eof {
            let error = if start == end {
                RecordsError::CountMismatch {
                    claimed,
                    found: sequence.index(),
                }
            } else {
                RecordsError::MalformedRecord {
                    index: sequence.index(),
                    what: "the record runs past the end of the records",
                }
            };
            return Err(error.into());
        }
        // Keep the unparsed tail, make room for the whole next record, read more.
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        if let Some(len) = extent {
            if len > limit {
                return Err(RecordsError::DecompressedTooLarge { limit }.into());
            }
            if len > buf.len() {
                buf.resize(len, 0);
            }
        }
        let n = source.read(&mut buf[end..])?;
        if n == 0 {
            eof = true;
        }
        end += n;
    }
}

//! The four codecs Kafka defines for a batch's records: [`Compression`], bounded streaming
//! decompression ([`Decompressor`], [`decompress`]) and [`compress`].
//!
//! Kafka's framing for each: gzip is RFC 1952 (several members allowed, as Java's
//! `GZIPInputStream` reads them); snappy is snappy-java's "xerial" framing (a 16-byte header,
//! then blocks of `u32 length | raw snappy`), with raw snappy (no header) accepted as snappy-java
//! does; lz4 is the LZ4 frame format; zstd is a zstd frame. Compression uses Kafka's default
//! levels (gzip 6, lz4 9, zstd 3) and block sizes (snappy 32 KiB, lz4 64 KiB).
//!
//! Decompression never produces more than the caller's limit: the decoders are read a buffer at
//! a time and stop with [`RecordsError::DecompressedTooLarge`] once the limit is passed; a snappy
//! block's stated length is checked against the limit before its buffer is allocated. zstd keeps
//! its default window limit (2^27 bytes, as Kafka's zstd-jni does); its window buffer is only
//! touched as data is written, so what it uses follows the bytes produced.

use std::io::Read;

use super::RecordsError;

/// A batch's codec: the low three bits of its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec with this id; 5 to 7 (and anything larger) are unknown.
    pub fn from_id(id: u8) -> Result<Compression, RecordsError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            id => return Err(RecordsError::UnknownCompression { id }),
        })
    }

    /// The id in a batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// snappy-java's stream header: magic, then version and compatible version (both 1).
const SNAPPY_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const SNAPPY_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size, which Kafka's producer uses.
const SNAPPY_BLOCK: usize = 32 * 1024;
/// Kafka's default `compression.lz4.level` and `compression.zstd.level`.
const LZ4_LEVEL: u32 = 9;
const ZSTD_LEVEL: i32 = 3;

/// Decompressed bytes of one records section, read a buffer at a time, never more than `limit`
/// in total.
pub(crate) struct Decompressor<'a> {
    codec: Compression,
    inner: Inner<'a>,
    produced: usize,
    limit: usize,
}

enum Inner<'a> {
    Plain(&'a [u8]),
    // Boxed: the decoder's own state is several hundred bytes (it allocates its window per batch
    // anyway, so one more allocation per gzip batch costs nothing measurable).
    Gzip(Box<flate2::read::MultiGzDecoder<&'a [u8]>>),
    Snappy(SnappyBlocks<'a>),
    Lz4(lz4::Decoder<&'a [u8]>),
    Zstd(zstd::stream::read::Decoder<'static, &'a [u8]>),
}

impl<'a> Decompressor<'a> {
    pub(crate) fn new(
        codec: Compression,
        payload: &'a [u8],
        limit: usize,
    ) -> Result<Self, RecordsError> {
        let failed = |e: std::io::Error| RecordsError::Decompress {
            codec,
            reason: e.to_string(),
        };
        let inner = match codec {
            Compression::None => Inner::Plain(payload),
            Compression::Gzip => Inner::Gzip(Box::new(flate2::read::MultiGzDecoder::new(payload))),
            Compression::Snappy => Inner::Snappy(SnappyBlocks::new(payload)),
            Compression::Lz4 => Inner::Lz4(lz4::Decoder::new(payload).map_err(failed)?),
            Compression::Zstd => {
                Inner::Zstd(zstd::stream::read::Decoder::with_buffer(payload).map_err(failed)?)
            }
        };
        Ok(Decompressor {
            codec,
            inner,
            produced: 0,
            limit,
        })
    }

    /// Fills the front of `out` with the next decompressed bytes; 0 means the end.
    pub(crate) fn read(&mut self, out: &mut [u8]) -> Result<usize, RecordsError> {
        // Ask for at most one byte past the limit: getting it proves the limit is passed.
        let allowed = (self.limit - self.produced).saturating_add(1);
        let out_len = out.len().min(allowed);
        let out = &mut out[..out_len];
        let codec = self.codec;
        let io = |e: std::io::Error| RecordsError::Decompress {
            codec,
            reason: e.to_string(),
        };
        let limit = self.limit;
        let n = match &mut self.inner {
            Inner::Plain(rest) => rest.read(out).map_err(io)?,
            Inner::Gzip(d) => read_retrying(d, out).map_err(io)?,
            Inner::Snappy(d) => d.read(out, limit - self.produced).map_err(|e| match e {
                RecordsError::DecompressedTooLarge { .. } => {
                    RecordsError::DecompressedTooLarge { limit }
                }
                e => e,
            })?,
            Inner::Lz4(d) => read_retrying(d, out).map_err(io)?,
            Inner::Zstd(d) => read_retrying(d, out).map_err(io)?,
        };
        self.produced += n;
        if self.produced > self.limit {
            return Err(RecordsError::DecompressedTooLarge { limit: self.limit });
        }
        Ok(n)
    }
}

/// `Read::read`, retried when interrupted (no decoder here waits on I/O, but the trait allows it).
fn read_retrying(reader: &mut impl Read, out: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match reader.read(out) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// snappy-java's framing, one block decompressed at a time.
struct SnappyBlocks<'a> {
    /// Compressed bytes not yet decompressed.
    rest: &'a [u8],
    /// None until the first read decides between framed and raw.
    framed: Option<bool>,
    block: Vec<u8>,
    pos: usize,
}

impl<'a> SnappyBlocks<'a> {
    fn new(payload: &'a [u8]) -> Self {
        SnappyBlocks {
            rest: payload,
            framed: None,
            block: Vec::new(),
            pos: 0,
        }
    }

    fn failed(reason: impl Into<String>) -> RecordsError {
        RecordsError::Decompress {
            codec: Compression::Snappy,
            reason: reason.into(),
        }
    }

    /// Decompresses `compressed` into the block buffer, refusing a stated length past `allowed`
    /// before allocating for it (the caller puts its own limit in the error).
    fn load(&mut self, compressed: &[u8], allowed: usize) -> Result<(), RecordsError> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| Self::failed(e.to_string()))?;
        if len > allowed {
            return Err(RecordsError::DecompressedTooLarge { limit: allowed });
        }
        self.block.clear();
        self.block.resize(len, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| Self::failed(e.to_string()))?;
        self.pos = 0;
        Ok(())
    }

    /// Copies decompressed bytes into `out`; `allowed` is what the caller's limit leaves.
    fn read(&mut self, out: &mut [u8], allowed: usize) -> Result<usize, RecordsError> {
        while self.pos == self.block.len() {
            match self.framed {
                None => {
                    let framed = self.rest.starts_with(SNAPPY_MAGIC);
                    self.framed = Some(framed);
                    if framed {
                        if self.rest.len() < SNAPPY_HEADER.len() {
                            return Err(Self::failed("the snappy-java header is cut off"));
                        }
                        self.rest = &self.rest[SNAPPY_HEADER.len()..];
                    } else {
                        // Raw snappy, as snappy-java reads a stream without its header.
                        let all = std::mem::take(&mut self.rest);
                        self.load(all, allowed)?;
                    }
                }
                Some(false) => return Ok(0),
                Some(true) => {
                    if self.rest.is_empty() {
                        return Ok(0);
                    }
                    if self.rest.len() < 4 {
                        return Err(Self::failed("a snappy block length is cut off"));
                    }
                    let len = u32::from_be_bytes([
                        self.rest[0],
                        self.rest[1],
                        self.rest[2],
                        self.rest[3],
                    ]) as usize;
                    let Some(compressed) = self.rest.get(4..4 + len) else {
                        return Err(Self::failed("a snappy block runs past the records"));
                    };
                    self.rest = &self.rest[4 + len..];
                    self.load(compressed, allowed)?;
                }
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decompresses a whole records section into `out` (appended), at most `limit` bytes.
/// `Compression::None` copies.
pub fn decompress(
    codec: Compression,
    payload: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), RecordsError> {
    /// Bytes read per step; `out` grows by at most this much beyond what was produced.
    const STEP: usize = 64 * 1024;
    let mut decompressor = Decompressor::new(codec, payload, limit)?;
    loop {
        let filled = out.len();
        out.resize(filled + STEP, 0);
        let result = decompressor.read(&mut out[filled..]);
        out.truncate(filled + *result.as_ref().unwrap_or(&0));
        if result? == 0 {
            return Ok(());
        }
    }
}

/// Compresses an uncompressed records section with `codec`, Kafka's framing and default level.
pub fn compress(codec: Compression, records: &[u8]) -> Result<Vec<u8>, RecordsError> {
    use std::io::Write;
    let failed = |e: std::io::Error| RecordsError::Compress {
        codec,
        reason: e.to_string(),
    };
    Ok(match codec {
        Compression::None => records.to_vec(),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(records.len() / 2),
                flate2::Compression::default(),
            );
            encoder.write_all(records).map_err(failed)?;
            encoder.finish().map_err(failed)?
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(SNAPPY_HEADER.len() + records.len() / 2);
            out.extend_from_slice(SNAPPY_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(SNAPPY_BLOCK) {
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let written = encoder.compress(block, &mut out[at + 4..]).map_err(|e| {
                    RecordsError::Compress {
                        codec,
                        reason: e.to_string(),
                    }
                })?;
                out.truncate(at + 4 + written);
                out[at..at + 4].copy_from_slice(&(written as u32).to_be_bytes());
            }
            out
        }
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(LZ4_LEVEL)
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::with_capacity(records.len() / 2))
                .map_err(failed)?;
            encoder.write_all(records).map_err(failed)?;
            let (out, result) = encoder.finish();
            result.map_err(failed)?;
            out
        }
        Compression::Zstd => zstd::bulk::compress(records, ZSTD_LEVEL).map_err(failed)?,
    })
}

//! Tests of the record batch codec: round trips (unit and property), wire compatibility with
//! the crates.io `kafka-protocol` codec in both directions, and every hostile case an error.

use proptest::prelude::*;

use super::*;

const ALL_CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// An owned record, to compare what was written with what is read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Owned {
    fn of(record: &Record<'_>) -> Owned {
        Owned {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record
                .headers()
                .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

fn build(codec: Compression, base_offset: i64, records: &[Owned]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(codec).base_offset(base_offset);
    for r in records {
        let headers: Vec<Header<'_>> = r
            .headers
            .iter()
            .map(|(k, v)| Header {
                key: k,
                value: v.as_deref(),
            })
            .collect();
        builder.append(NewRecord {
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &headers,
        });
    }
    builder.build().expect("builds")
}

fn read_all(bytes: &[u8]) -> Result<Vec<Owned>, RecordsError> {
    let (batch, _) = Batch::parse(bytes)?;
    batch.check_crc()?;
    let mut out = Vec::new();
    batch.for_each_record(DEFAULT_DECOMPRESSED_LIMIT, |r| {
        out.push(Owned::of(&r));
        Ok::<_, RecordsError>(())
    })?;
    Ok(out)
}

fn sample(n: usize) -> Vec<Owned> {
    (0..n)
        .map(|i| Owned {
            offset: 100 + i as i64,
            timestamp: 1_700_000_000_000 + i as i64 * 7,
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: (i % 5 != 4).then(|| vec![b'v'; i * 13 % 300]),
            headers: if i % 2 == 0 {
                vec![(b"h".to_vec(), Some(b"1".to_vec())), (b"n".to_vec(), None)]
            } else {
                Vec::new()
            },
        })
        .collect()
}

use super::testing::claim_count;

/// A batch around `records` as given, with codec id `codec_id`, claiming `count`, correct CRC.
fn raw_batch(codec_id: u8, count: i32, records: &[u8]) -> Vec<u8> {
    super::testing::batch_around(i16::from(codec_id), count, records)
}

/// The records section (uncompressed) of a built batch.
fn records_of(codec: Compression, records: &[Owned]) -> Vec<u8> {
    build(codec, 0, records)[BATCH_HEADER_LEN..].to_vec()
}

#[test]
fn every_codec_round_trips() {
    let records = sample(40);
    for codec in ALL_CODECS {
        let bytes = build(codec, 100, &records);
        let header = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.compression(), Ok(codec));
        assert_eq!(header.record_count, 40);
        assert_eq!(header.last_offset_delta, 39);
        assert_eq!(header.base_timestamp, records[0].timestamp);
        assert_eq!(header.max_timestamp, records[39].timestamp);
        assert_eq!(header.size(), bytes.len());
        assert_eq!(read_all(&bytes).unwrap(), records, "{codec}");
        // The materializing path gives the same records.
        let (batch, _) = Batch::parse(&bytes).unwrap();
        let mut plain = Vec::new();
        batch.decompress_into(1 << 20, &mut plain).unwrap();
        let again: Vec<Owned> = Records::new(&plain, &header)
            .unwrap()
            .map(|r| Owned::of(&r.unwrap()))
            .collect();
        assert_eq!(again, records, "{codec}");
    }
}

#[test]
fn uncompressed_records_borrow_from_the_batch() {
    let bytes = build(Compression::None, 0, &sample(3));
    let (batch, _) = Batch::parse(&bytes).unwrap();
    let record = batch.records().unwrap().nth(1).unwrap().unwrap();
    let key = record.key.unwrap();
    let range = bytes.as_ptr_range();
    assert!(
        range.contains(&key.as_ptr()),
        "the key is a slice of the batch"
    );
    // A compressed batch's records cannot be borrowed without decompressing.
    let gzip = build(Compression::Gzip, 0, &sample(3));
    let (batch, _) = Batch::parse(&gzip).unwrap();
    assert_eq!(
        batch.records().err(),
        Some(RecordsError::Compressed {
            codec: Compression::Gzip
        })
    );
}

#[test]
fn batches_split_a_buffer_and_stop_at_a_cut_tail() {
    let mut bytes = build(Compression::None, 0, &sample(2));
    let second = build(Compression::Lz4, 2, &sample(3));
    bytes.extend_from_slice(&second);
    let whole: Vec<_> = Batches::new(&bytes).map(Result::unwrap).collect();
    assert_eq!(whole.len(), 2);
    assert_eq!(whole[1].header().base_offset, 2);
    let mut cut = Batches::new(&bytes[..bytes.len() - 1]);
    assert!(cut.next().unwrap().is_ok());
    assert!(cut.next().is_none());
    assert_eq!(cut.remainder().len(), second.len() - 1);
    // A header that is no batch is an error, then the end.
    let mut garbage = bytes.clone();
    garbage[16] = 7;
    let mut it = Batches::new(&garbage);
    assert_eq!(
        it.next().unwrap().err(),
        Some(RecordsError::UnsupportedMagic { magic: 7 })
    );
    assert!(it.next().is_none());
}

#[test]
fn retaining_builder_keeps_offsets_and_copies_records() {
    let records = sample(6);
    for codec in ALL_CODECS {
        let bytes = build(codec, 100, &records);
        let (batch, _) = Batch::parse(&bytes).unwrap();
        let mut kept = BatchBuilder::retaining(batch.header(), codec);
        batch
            .for_each_record(1 << 20, |r| {
                if r.offset_delta % 2 == 1 {
                    kept.append_raw(&r);
                }
                Ok::<_, RecordsError>(())
            })
            .unwrap();
        let filtered = kept.build().unwrap();
        let header = BatchHeader::parse(&filtered).unwrap();
        assert_eq!(header.base_offset, 100);
        assert_eq!(header.last_offset_delta, 5, "the last offset is kept");
        assert_eq!(header.record_count, 3);
        assert_eq!(header.max_timestamp, records[5].timestamp);
        let expected: Vec<Owned> = records.iter().skip(1).step_by(2).cloned().collect();
        assert_eq!(read_all(&filtered).unwrap(), expected, "{codec}");
    }
}

#[test]
fn log_append_time_gives_every_record_the_batch_time() {
    let mut builder = BatchBuilder::new(Compression::None).log_append_time(5_000);
    builder.append(NewRecord {
        timestamp: 1,
        value: Some(b"a"),
        ..NewRecord::default()
    });
    let bytes = builder.build().unwrap();
    let header = BatchHeader::parse(&bytes).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(read_all(&bytes).unwrap()[0].timestamp, 5_000);
}

// Wire compatibility with the crates.io codec, both ways, for every codec.

fn theirs(codec: Compression) -> kafka_protocol::records::Compression {
    use kafka_protocol::records::Compression as K;
    match codec {
        Compression::None => K::None,
        Compression::Gzip => K::Gzip,
        Compression::Snappy => K::Snappy,
        Compression::Lz4 => K::Lz4,
        Compression::Zstd => K::Zstd,
    }
}

#[test]
fn kafka_protocol_decodes_what_we_encode() {
    let records = sample(25);
    for codec in ALL_CODECS {
        let mut bytes = bytes::Bytes::from(build(codec, 0, &records));
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.compression, theirs(codec));
        let decoded: Vec<Owned> = set
            .records
            .iter()
            .map(|r| Owned {
                offset: r.offset + 100,
                timestamp: r.timestamp,
                key: r.key.as_ref().map(|b| b.to_vec()),
                value: r.value.as_ref().map(|b| b.to_vec()),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|b| b.to_vec())))
                    .collect(),
            })
            .collect();
        assert_eq!(decoded, records, "{codec}");
    }
}

#[test]
fn we_decode_what_kafka_protocol_encodes() {
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KType,
    };
    let records = sample(25);
    for codec in ALL_CODECS {
        let encoded: Vec<KRecord> = records
            .iter()
            .enumerate()
            .map(|(i, r)| KRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: KType::Creation,
                offset: r.offset,
                sequence: i as i32 - 1,
                timestamp: r.timestamp,
                key: r.key.clone().map(bytes::Bytes::from),
                value: r.value.clone().map(bytes::Bytes::from),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            StrBytes::from_string(String::from_utf8(k.clone()).unwrap()),
                            v.clone().map(bytes::Bytes::from),
                        )
                    })
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            encoded.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: theirs(codec),
            },
        )
        .unwrap();
        assert_eq!(read_all(&buf).unwrap(), records, "{codec}");
    }
}

// Every hostile case is an error, never a panic or an allocation of the claimed size.

#[test]
fn a_count_of_2_pow_31_minus_1_with_one_record_is_refused_before_reading() {
    for codec in ALL_CODECS {
        let mut bytes = build(codec, 0, &sample(1));
        claim_count(&mut bytes, i32::MAX);
        let (batch, _) = Batch::parse(&bytes).unwrap();
        batch.check_crc().expect("the CRC is valid");
        let err = batch
            .for_each_record(DEFAULT_DECOMPRESSED_LIMIT, |_| Ok::<_, RecordsError>(()))
            .unwrap_err();
        assert!(
            matches!(err, RecordsError::ImpossibleCount { claimed, .. } if claimed == i32::MAX),
            "{codec}: {err}"
        );
    }
}

#[test]
fn a_count_above_the_records_present_is_a_mismatch() {
    for codec in ALL_CODECS {
        let mut bytes = build(codec, 0, &sample(8));
        claim_count(&mut bytes, 9);
        let err = read_all(&bytes).unwrap_err();
        assert_eq!(
            err,
            RecordsError::CountMismatch {
                claimed: 9,
                found: 8
            },
            "{codec}"
        );
        let mut fewer = build(codec, 0, &sample(8));
        claim_count(&mut fewer, 7);
        assert!(
            matches!(
                read_all(&fewer),
                Err(RecordsError::TrailingBytes { count: 7, .. })
            ),
            "{codec}"
        );
        let mut negative = build(codec, 0, &sample(2));
        claim_count(&mut negative, -3);
        assert!(
            matches!(
                read_all(&negative),
                Err(RecordsError::ImpossibleCount { .. })
            ),
            "{codec}"
        );
    }
}

#[test]
fn lengths_past_the_end_are_malformed() {
    let records = records_of(Compression::None, &sample(1));
    // Record length 1000 (zig-zag varint 0xd0 0x0f) where a few bytes follow.
    let mut long = records.clone();
    long.splice(0..1, [0xd0, 0x0f]);
    assert!(matches!(
        read_all(&raw_batch(0, 1, &long)),
        Err(RecordsError::MalformedRecord { index: 0, .. })
    ));
    // The key length says 100 inside a short record.
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(NewRecord {
        key: Some(b"k"),
        value: Some(b"value"),
        ..NewRecord::default()
    });
    let mut bytes = builder.build().unwrap();
    let key_len_at = BATCH_HEADER_LEN + 4; // length, attributes, timestamp and offset deltas
    assert_eq!(bytes[key_len_at], 2, "zig-zag 1");
    bytes[key_len_at] = 200; // zig-zag 100
    super::testing::fix_crc(&mut bytes);
    assert_eq!(
        read_all(&bytes).unwrap_err(),
        RecordsError::MalformedRecord {
            index: 0,
            what: "the key runs past the record"
        }
    );
    // A header count of 2^30 in a small record.
    let mut builder = BatchBuilder::new(Compression::None);
    builder.append(NewRecord {
        value: Some(b"v"),
        ..NewRecord::default()
    });
    let mut bytes = builder.build().unwrap();
    let last = bytes.len() - 1;
    assert_eq!(bytes[last], 0, "header count 0");
    bytes.truncate(last);
    bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
    let length = (bytes.len() - LOG_OVERHEAD) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    bytes[BATCH_HEADER_LEN] += 8; // the record's length grows by 4 (zig-zag)
    super::testing::fix_crc(&mut bytes);
    assert!(matches!(
        read_all(&bytes),
        Err(RecordsError::MalformedRecord { index: 0, .. })
    ));
    // Batch length beyond the bytes, or below the header.
    let good = build(Compression::None, 0, &sample(2));
    assert!(matches!(
        Batch::parse(&good[..good.len() - 1]),
        Err(RecordsError::Truncated { .. })
    ));
    let mut small = good.clone();
    small[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert_eq!(
        Batch::parse(&small).unwrap_err(),
        RecordsError::LengthTooSmall { length: 10 }
    );
    assert_eq!(
        Batch::parse(&good[..30]).unwrap_err(),
        RecordsError::ShortHeader { available: 30 }
    );
}

#[test]
fn garbage_compressed_payloads_are_errors() {
    let mut garbage = vec![0u8; 200];
    let mut x = 0x9e37_79b9u32;
    for b in &mut garbage {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = raw_batch(codec.id(), 1, &garbage);
        let err = read_all(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                RecordsError::Decompress { .. } | RecordsError::DecompressedTooLarge { .. }
            ),
            "{codec}: {err}"
        );
    }
    // A valid stream of the wrong bytes is a malformed record, not a decompression error.
    let gzip = compress(Compression::Gzip, &garbage).unwrap();
    assert!(matches!(
        read_all(&raw_batch(1, 1, &gzip)),
        Err(RecordsError::MalformedRecord { .. })
    ));
    // Random record bytes in an uncompressed batch.
    assert!(matches!(
        read_all(&raw_batch(0, 3, &garbage)),
        Err(RecordsError::MalformedRecord { .. }
            | RecordsError::OffsetDeltaOrder { .. }
            | RecordsError::OffsetDeltaPastLast { .. })
    ));
}

#[test]
fn unknown_codec_ids_are_refused() {
    for id in 5..=7u8 {
        let bytes = raw_batch(id, 1, &records_of(Compression::None, &sample(1)));
        assert_eq!(
            read_all(&bytes).unwrap_err(),
            RecordsError::UnknownCompression { id }
        );
        let header = BatchHeader::parse(&bytes).unwrap();
        assert!(header.compression().is_err());
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut records = records_of(Compression::None, &sample(2));
    records.push(0);
    assert_eq!(
        read_all(&raw_batch(0, 2, &records)).unwrap_err(),
        RecordsError::TrailingBytes { bytes: 1, count: 2 }
    );
    for codec in [Compression::Gzip, Compression::Zstd, Compression::Snappy] {
        let compressed = compress(codec, &records).unwrap();
        assert_eq!(
            read_all(&raw_batch(codec.id(), 2, &compressed)).unwrap_err(),
            RecordsError::TrailingBytes { bytes: 1, count: 2 },
            "{codec}"
        );
    }
}

/// Records with the given offset deltas, uncompressed.
fn with_deltas(deltas: &[i32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &delta in deltas {
        // length 6: attributes, timestamp delta 0, offset delta, null key, null value, 0 headers
        let mut body = vec![0u8, 0];
        crate::varint::write_varint(&mut body, delta);
        body.extend_from_slice(&[1, 1, 0]);
        crate::varint::write_varint(&mut out, body.len() as i32);
        out.extend_from_slice(&body);
    }
    out
}

#[test]
fn offset_deltas_out_of_order_are_refused() {
    assert_eq!(
        read_all(&raw_batch(0, 2, &with_deltas(&[0, 0]))).unwrap_err(),
        RecordsError::OffsetDeltaOrder {
            index: 1,
            delta: 0,
            previous: 0
        }
    );
    assert_eq!(
        read_all(&raw_batch(0, 2, &with_deltas(&[1, 0]))).unwrap_err(),
        RecordsError::OffsetDeltaOrder {
            index: 1,
            delta: 0,
            previous: 1
        }
    );
    assert_eq!(
        read_all(&raw_batch(0, 2, &with_deltas(&[0, 2]))).unwrap_err(),
        RecordsError::OffsetDeltaPastLast {
            index: 1,
            delta: 2,
            last: 1
        }
    );
    assert_eq!(
        read_all(&raw_batch(0, 1, &with_deltas(&[-1]))).unwrap_err(),
        RecordsError::OffsetDeltaOrder {
            index: 0,
            delta: -1,
            previous: -1
        }
    );
    // Gaps below the last offset delta are what compaction leaves: valid.
    let mut compacted = raw_batch(0, 2, &with_deltas(&[1, 4]));
    compacted[23..27].copy_from_slice(&6i32.to_be_bytes());
    super::testing::fix_crc(&mut compacted);
    let offsets: Vec<i64> = read_all(&compacted)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, [1, 4]);
    // The same rules hold in a compressed batch.
    let zstd = compress(Compression::Zstd, &with_deltas(&[0, 0])).unwrap();
    assert!(matches!(
        read_all(&raw_batch(4, 2, &zstd)),
        Err(RecordsError::OffsetDeltaOrder { .. })
    ));
}

#[test]
fn other_header_problems() {
    let mut bytes = build(Compression::None, 0, &sample(2));
    bytes[16] = 1;
    assert_eq!(
        Batch::parse(&bytes).unwrap_err(),
        RecordsError::UnsupportedMagic { magic: 1 }
    );
    let mut bytes = build(Compression::None, 0, &sample(2));
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let (batch, _) = Batch::parse(&bytes).unwrap();
    assert!(matches!(
        batch.check_crc(),
        Err(RecordsError::CrcMismatch { .. })
    ));
    assert!(BatchBuilder::new(Compression::None).build().is_err());
}

/// zstd frames of `total` zero bytes, compressed without holding them.
fn zstd_zeros(total: usize) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.finish().unwrap()
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    // 256 MiB of zeros compress to a few KiB. As records, zeros are a 0-length record... that
    // parse as malformed; what matters is that the reader gives up at the limit.
    let bomb = zstd_zeros(256 << 20);
    assert!(bomb.len() < 64 * 1024);
    let limit = 4 << 20;
    let mut out = Vec::new();
    assert_eq!(
        decompress(Compression::Zstd, &bomb, limit, &mut out).unwrap_err(),
        RecordsError::DecompressedTooLarge { limit }
    );
    assert!(out.len() <= limit + 1, "produced {} bytes", out.len());
    // One huge record of zeros: its value is 200 MiB, more than the limit: refused while
    // streaming, with no 200 MiB buffer.
    let mut record = Vec::new();
    let value_len = 200i32 << 20;
    let mut body = vec![0u8, 0, 0, 1];
    crate::varint::write_varint(&mut body, value_len);
    crate::varint::write_varint(&mut record, body.len() as i32 + value_len + 1);
    record.extend_from_slice(&body);
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    std::io::Write::write_all(&mut encoder, &record).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..200 {
        std::io::Write::write_all(&mut encoder, &chunk).unwrap();
    }
    std::io::Write::write_all(&mut encoder, &[0]).unwrap();
    let payload = encoder.finish().unwrap();
    let bytes = raw_batch(4, 1, &payload);
    let (batch, _) = Batch::parse(&bytes).unwrap();
    assert_eq!(
        batch
            .for_each_record(limit, |_| Ok::<_, RecordsError>(()))
            .unwrap_err(),
        RecordsError::DecompressedTooLarge { limit }
    );
    // With a limit that allows it, the same record reads back.
    let mut seen = 0;
    batch
        .for_each_record(256 << 20, |r| {
            seen = r.value.unwrap().len();
            Ok::<_, RecordsError>(())
        })
        .unwrap();
    assert_eq!(seen, 200 << 20);
}

#[test]
fn a_snappy_block_claiming_gigabytes_is_refused_before_allocating() {
    let mut payload = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    // One block: its raw snappy preamble says 2^32-1 bytes.
    payload.extend_from_slice(&5u32.to_be_bytes());
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut out = Vec::new();
    assert_eq!(
        decompress(Compression::Snappy, &payload, 1 << 20, &mut out).unwrap_err(),
        RecordsError::DecompressedTooLarge { limit: 1 << 20 }
    );
    // Raw snappy (no header) is bounded the same way.
    let raw = [0xff, 0xff, 0xff, 0xff, 0x0f, 0];
    assert_eq!(
        decompress(Compression::Snappy, &raw, 1 << 20, &mut out).unwrap_err(),
        RecordsError::DecompressedTooLarge { limit: 1 << 20 }
    );
    // A raw snappy stream is read as snappy-java does.
    let records = records_of(Compression::None, &sample(3));
    let raw = snap::raw::Encoder::new().compress_vec(&records).unwrap();
    assert_eq!(read_all(&raw_batch(2, 3, &raw)).unwrap().len(), 3);
}

fn arb_record() -> impl Strategy<Value = Owned> {
    let payload = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64));
    let header = (
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
    );
    (
        any::<i64>(),
        payload.clone(),
        payload,
        proptest::collection::vec(header, 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| Owned {
            offset: 0,
            timestamp,
            key,
            value,
            headers,
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(ALL_CODECS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn built_batches_read_back(
        codec in arb_codec(),
        base in any::<i64>(),
        mut records in proptest::collection::vec(arb_record(), 1..20),
    ) {
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = base.wrapping_add(i as i64);
        }
        let bytes = build(codec, base, &records);
        prop_assert_eq!(read_all(&bytes).unwrap(), records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = read_all(&bytes);
        for id in 0..8u8 {
            let batch = raw_batch(id, (bytes.first().copied().unwrap_or(1) % 9) as i32, &bytes);
            let _ = read_all(&batch);
        }
    }

    #[test]
    fn mutated_batches_never_panic(
        codec in arb_codec(),
        records in proptest::collection::vec(arb_record(), 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        fix_crc in any::<bool>(),
    ) {
        let mut bytes = build(codec, 0, &records);
        for (at, xor) in flips {
            let at = at % bytes.len();
            bytes[at] ^= xor;
        }
        if fix_crc && bytes.len() >= BATCH_HEADER_LEN {
            super::testing::fix_crc(&mut bytes);
        }
        let _ = read_all(&bytes);
        let _ = Batch::parse(&bytes).map(|(b, _)| b.decompress_into(1 << 16, &mut Vec::new()));
    }
}

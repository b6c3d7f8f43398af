//! `sluice produce TOPIC`: reads records from stdin, one per line, and produces them in record
//! batches (Produce v9), like `kcat -P`. Keyed records go where Kafka's default partitioner would
//! put them (murmur2 of the key); keyless ones go round-robin, one batch at a time.

use std::collections::BTreeMap;
use std::io::BufRead as _;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use sluice_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_protocol::messages::ProduceRequest;
use sluice_protocol::records::{BatchBuilder, Compression, Header, NewRecord};
use tokio::sync::mpsc;

use crate::cli_common::{kafka_error, topic_name, CommonArgs};
use crate::client::Client;

/// A flush sends at most this many records...
const BATCH_RECORDS_MAX: usize = 10_000;
/// ...and at most about this many key, value and header bytes (before compression).
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Lines read ahead of the producer; bounds memory when stdin is faster than the broker.
const LINES_QUEUED_MAX: usize = 4 * BATCH_RECORDS_MAX;
/// The Produce version sent (the oldest with flexible encoding, v9).
const PRODUCE_VERSION: i16 = 9;

/// `sluice produce` flags.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The topic to produce to (it must exist).
    topic: String,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long, value_name = "P")]
    partition: Option<i32>,
    /// Split each line at the first SEP into key and value; lines without SEP have no key.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header for every record (repeatable).
    #[arg(long = "header", value_name = "K=V", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Compression codec of the record batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Acknowledgements to wait for: 0 (none, no answer), 1 (the leader) or all (in-sync replicas).
    #[arg(long, default_value = "all", value_parser = parse_acks, value_name = "0|1|all")]
    acks: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

fn parse_header(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{value}` is not KEY=VALUE")),
    }
}

fn parse_acks(value: &str) -> Result<i16, String> {
    match value {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("`{value}` is not 0, 1 or all")),
    }
}

/// Kafka's `Utils.murmur2`: MurmurHash2, seed 0x9747b28c, little-endian 4-byte blocks.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's int arithmetic wraps; so does this. The length is mixed in as Java's int would be.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partition for a key: `toPositive(murmur2(key)) % partitions`.
pub(crate) fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// One stdin line split into key and value.
fn split_line(line: &[u8], separator: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(separator) = separator.filter(|s| !s.is_empty()) {
        if let Some(at) = line.windows(separator.len()).position(|w| w == separator) {
            return (
                Some(Bytes::copy_from_slice(&line[..at])),
                Bytes::copy_from_slice(&line[at + separator.len()..]),
            );
        }
    }
    (None, Bytes::copy_from_slice(line))
}

/// Reads stdin on a thread, line by line (without the `\n`), into a bounded queue.
fn spawn_stdin_reader() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel(LINES_QUEUED_MAX);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let sent = match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    sender.blocking_send(Ok(line))
                }
                Err(e) => sender.blocking_send(Err(e)),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    receiver
}

/// What was produced, for the summary.
#[derive(Debug, Default)]
struct Produced {
    records_by_partition: BTreeMap<i32, u64>,
    requests: u64,
}

/// Runs `sluice produce` to completion (end of stdin).
pub(crate) fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let args = &args;
    crate::cli_common::run(&args.common, |mut client| async move {
        let produced = produce(&mut client, args).await?;
        let total: u64 = produced.records_by_partition.values().sum();
        let partitions: Vec<String> = produced
            .records_by_partition
            .iter()
            .map(|(p, n)| format!("{p} ({n})"))
            .collect();
        eprintln!(
            "produced {total} record{} to {} in {} request{}{}",
            if total == 1 { "" } else { "s" },
            args.topic,
            produced.requests,
            if produced.requests == 1 { "" } else { "s" },
            if partitions.is_empty() {
                String::new()
            } else {
                format!("; partitions: {}", partitions.join(", "))
            }
        );
        Ok(String::new())
    })
}

async fn produce(client: &mut Client, args: &ProduceArgs) -> anyhow::Result<Produced> {
    let metadata = crate::topic_cli::topic_metadata(client, "produce to", &args.topic).await?;
    let partition_count = i32::try_from(metadata.partitions.len()).unwrap_or(i32::MAX);
    if partition_count == 0 {
        bail!(
            "cannot produce to topic {}: it has no partitions",
            args.topic
        );
    }
    if let Some(p) = args.partition {
        if !(0..partition_count).contains(&p) {
            bail!(
                "cannot produce to partition {p} of topic {}: it has partitions 0 to {}",
                args.topic,
                partition_count - 1
            );
        }
    }
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut lines = spawn_stdin_reader();
    let mut produced = Produced::default();
    let mut next_keyless: i32 = 0;
    loop {
        // Take what stdin has ready (at least one line), up to the batch limits.
        let Some(first) = lines.recv().await else {
            break;
        };
        let mut pending = vec![first.context("cannot read stdin")?];
        let mut bytes = pending[0].len();
        while pending.len() < BATCH_RECORDS_MAX && bytes < BATCH_BYTES_MAX {
            match lines.try_recv() {
                Ok(line) => {
                    let line = line.context("cannot read stdin")?;
                    bytes += line.len();
                    pending.push(line);
                }
                Err(_) => break,
            }
        }
        let keyless_partition = next_keyless % partition_count;
        next_keyless = next_keyless.wrapping_add(1) & i32::MAX;
        let mut by_partition: BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>> = BTreeMap::new();
        for line in &pending {
            let (key, value) = split_line(line, separator);
            let partition = match (args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, partition_count),
                (None, None) => keyless_partition,
            };
            by_partition
                .entry(partition)
                .or_default()
                .push((key, value));
        }
        send(client, args, &by_partition).await?;
        produced.requests += 1;
        for (partition, records) in &by_partition {
            *produced.records_by_partition.entry(*partition).or_default() += records.len() as u64;
        }
    }
    Ok(produced)
}

/// One Produce request: a record batch per partition.
async fn send(
    client: &mut Client,
    args: &ProduceArgs,
    by_partition: &BTreeMap<i32, Vec<(Option<Bytes>, Bytes)>>,
) -> anyhow::Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut partition_data = Vec::with_capacity(by_partition.len());
    for (partition, records) in by_partition {
        let batch = encode_batch(records, &args.headers, now_ms, args.compression.codec())?;
        partition_data.push(
            PartitionProduceData::default()
                .with_index(*partition)
                .with_records(Some(batch)),
        );
    }
    let request = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(args.acks)
        .with_timeout_ms(args.common.request_timeout_ms())
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(&args.topic))
            .with_partition_data(partition_data)]);
    if args.acks == 0 {
        return client
            .send_without_response(PRODUCE_VERSION, &request)
            .await;
    }
    let response = client.send(PRODUCE_VERSION, &request).await?;
    for topic in response.responses {
        for p in topic.partition_responses {
            if let Some(error) = kafka_error(p.error_code, p.error_message.as_ref()) {
                bail!(
                    "cannot produce to {}-{}: {error}",
                    topic.name.0.as_str(),
                    p.index
                );
            }
        }
    }
    Ok(())
}

/// Encodes records as one v2 record batch, every record with the same headers.
fn encode_batch(
    records: &[(Option<Bytes>, Bytes)],
    headers: &[(String, String)],
    now_ms: i64,
    compression: Compression,
) -> anyhow::Result<Bytes> {
    let headers: Vec<Header<'_>> = headers
        .iter()
        .map(|(k, v)| Header {
            key: k.as_bytes(),
            value: Some(v.as_bytes()),
        })
        .collect();
    let mut builder = BatchBuilder::new(compression);
    for (key, value) in records {
        builder.append(NewRecord {
            timestamp: now_ms,
            key: key.as_deref(),
            value: Some(value),
            headers: &headers,
        });
    }
    let batch = builder
        .build()
        .with_context(|| format!("cannot encode a {compression} record batch"))?;
    Ok(Bytes::from(batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_kafkas() {
        // Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
        // librdkafka's rdmurmur2 unit test (every tail length, and the empty key).
        assert_eq!(murmur2(b"kafka") as u32, 0xd067_cf64);
        assert_eq!(murmur2(b"giberish123456789") as u32, 0x8f55_2b0c);
        assert_eq!(murmur2(b"1234") as u32, 0x9fc9_7b14);
        assert_eq!(murmur2(b"234") as u32, 0xe7c0_09ca);
        assert_eq!(murmur2(b"34") as u32, 0x8739_30da);
        assert_eq!(murmur2(b"4") as u32, 0x5a4b_5ca1);
        assert_eq!(murmur2(b"") as u32, 0x106e_08d9);
    }

    #[test]
    fn keys_partition_like_kafka() {
        // toPositive(-973932308) = 1173551340.
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        assert_eq!(partition_for_key(b"", 4), 0x106e_08d9 % 4);
        for n in 1..10 {
            assert!((0..n).contains(&partition_for_key(b"foobar", n)));
        }
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(
            split_line(b"k::v::w", Some(b"::")),
            (Some(Bytes::from_static(b"k")), Bytes::from_static(b"v::w"))
        );
        assert_eq!(
            split_line(b"no key", Some(b":")),
            (None, Bytes::from_static(b"no key"))
        );
        assert_eq!(split_line(b"a:b", None), (None, Bytes::from_static(b"a:b")));
        assert_eq!(
            split_line(b":v", Some(b":")),
            (Some(Bytes::new()), Bytes::from_static(b"v"))
        );
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
        assert_eq!(
            parse_header("trace=a=b"),
            Ok(("trace".to_owned(), "a=b".to_owned()))
        );
        assert!(parse_header("=v").is_err());
        assert!(parse_header("novalue").is_err());
    }

    #[test]
    fn batches_are_one_per_call_and_decode() {
        use sluice_protocol::records::{Batches, RecordsError};
        let headers = vec![("h".to_owned(), "1".to_owned())];
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records = vec![
                (Some(Bytes::from_static(b"k")), Bytes::from_static(b"v1")),
                (None, Bytes::from_static(b"v2")),
                (None, Bytes::from_static(b"v3")),
            ];
            let batch = encode_batch(&records, &headers, 1_000, codec).unwrap();
            let batches: Vec<_> = Batches::new(&batch).map(Result::unwrap).collect();
            assert_eq!(batches.len(), 1, "{codec}");
            let header = batches[0].header();
            assert_eq!(header.compression(), Ok(codec));
            assert_eq!((header.producer_id, header.base_sequence), (-1, -1));
            let mut decoded = Vec::new();
            batches[0]
                .for_each_record(1 << 20, |r| {
                    let header = r.headers().next().unwrap();
                    assert_eq!((header.key, header.value), (&b"h"[..], Some(&b"1"[..])));
                    decoded.push((
                        r.offset,
                        r.key.map(<[u8]>::to_vec),
                        r.value.unwrap().to_vec(),
                    ));
                    Ok::<_, RecordsError>(())
                })
                .unwrap();
            assert_eq!(decoded.len(), 3);
            assert_eq!(decoded[0].1.as_deref(), Some(&b"k"[..]));
            assert_eq!(decoded[2].2, b"v3");
            assert_eq!(decoded[1].0, 1);
        }
    }
}

//! `sluice consume TOPIC`: fetches records (Fetch v12) from a topic's partitions and prints each
//! through a kcat-style format string, like `kcat -C`. With `--group` it starts from the group's
//! committed offsets and commits its position at exit, without joining the group.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use sluice_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_protocol::messages::{BrokerId, FetchRequest, OffsetCommitRequest};
use sluice_protocol::records::{Batches, Record, RecordsError, DEFAULT_DECOMPRESSED_LIMIT};
use sluice_protocol::StrBytes;

use crate::cli_common::{
    kafka_error, list_offsets_isolated, topic_name, CommonArgs, TopicPartition, EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
};
use crate::client::{error_name, Client};

/// The Fetch version sent.
const FETCH_VERSION: i16 = 12;
/// How long the broker may hold a fetch that has nothing to return.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Bytes asked for per fetch, and per partition within it.
const FETCH_BYTES_MAX: i32 = 50 * 1024 * 1024;
const FETCH_PARTITION_BYTES_MAX: i32 = 1024 * 1024;
/// OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// `sluice consume` flags.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The topic to read.
    topic: String,
    /// Read only this partition (default: all of them).
    #[arg(long, value_name = "P")]
    partition: Option<i32>,
    /// Where to start: beginning, end, an offset, or @TIMESTAMP_MS (the first record at or after).
    #[arg(long, default_value = "end", value_parser = parse_start, value_name = "beginning|end|OFFSET|@TIMESTAMP_MS")]
    from: Start,
    /// Exit after printing N records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit once every partition is read up to its high watermark as it was at start.
    #[arg(long)]
    exit_at_end: bool,
    /// How to print each record: %t topic, %p partition, %o offset, %k key, %s value,
    /// %T timestamp (ms), %h headers (k=v,k=v), %S value size (-1 for null), %% a percent sign;
    /// \n, \t and \\ escapes.
    #[arg(long, default_value = "%s\\n", value_parser = parse_format, value_name = "FMT")]
    format: Format,
    /// Start from this group's committed offsets (else --from), and commit the position at exit.
    /// The tool does not join the group: its members, if any, must be stopped.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// read_committed: only records of committed transactions, up to the last stable offset
    /// (records of aborted transactions are dropped); read_uncommitted (the default, as in
    /// Kafka's console consumer): everything.
    #[arg(long, value_enum, default_value_t = Isolation::ReadUncommitted)]
    isolation_level: Isolation,
}

/// `--isolation-level`, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Isolation {
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    #[value(name = "read_committed")]
    ReadCommitted,
}

impl Isolation {
    fn level(self) -> i8 {
        match self {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }
}

/// Where reading starts when no committed offset applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

fn parse_start(value: &str) -> Result<Start, String> {
    let invalid = || format!("`{value}` is not beginning, end, an offset or @TIMESTAMP_MS");
    match value {
        "beginning" => Ok(Start::Beginning),
        "end" => Ok(Start::End),
        _ => match value.strip_prefix('@') {
            Some(ms) => ms
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .map(Start::Timestamp)
                .ok_or_else(invalid),
            None => value
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(Start::Offset)
                .ok_or_else(invalid),
        },
    }
}

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    ValueSize,
}

/// A parsed `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Format(Vec<Piece>);

fn parse_format(value: &str) -> Result<Format, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('s') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('S') => Piece::ValueSize,
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some(other) => return Err(format!("unknown format token %{other}")),
                None => return Err("the format ends with a lone %".to_owned()),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('\\') => text.push('\\'),
                    Some(other) => {
                        text.push('\\');
                        text.push(other);
                    }
                    None => text.push('\\'),
                }
                continue;
            }
            c => {
                text.push(c);
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Format(pieces))
}

impl Format {
    /// Appends `record` of `topic`/`partition` as formatted; null keys and values print nothing.
    fn write(&self, out: &mut Vec<u8>, topic: &str, partition: i32, record: &Record<'_>) {
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Topic => out.extend_from_slice(topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(record.key.unwrap_or_default()),
                Piece::Value => out.extend_from_slice(record.value.unwrap_or_default()),
                Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
                Piece::Headers => {
                    for (i, header) in record.headers().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(header.key);
                        out.push(b'=');
                        out.extend_from_slice(header.value.unwrap_or_default());
                    }
                }
                Piece::ValueSize => {
                    let size = record.value.map_or(-1, |v| v.len() as i64);
                    out.extend_from_slice(size.to_string().as_bytes());
                }
            }
        }
    }
}

/// Per partition: the next offset to print, and (with --exit-at-end) where to stop.
#[derive(Debug)]
struct Position {
    next_offset: i64,
    end_offset: Option<i64>,
    /// read_committed: the aborted transactions still to skip.
    aborted: AbortedFilter,
}

/// Drops the records of aborted transactions, as Kafka's consumers do: the fetch response lists
/// each aborted transaction overlapping it as (producer, first offset); a producer's
/// transactional batches are skipped from that offset until its abort marker.
#[derive(Debug, Default)]
struct AbortedFilter {
    /// Listed aborts not reached yet: (first offset, producer id).
    upcoming: std::collections::BTreeSet<(i64, i64)>,
    /// Producers whose batches are being skipped.
    skipping: std::collections::HashSet<i64>,
}

impl AbortedFilter {
    fn add(&mut self, producer_id: i64, first_offset: i64) {
        self.upcoming.insert((first_offset, producer_id));
    }

    /// Whether a data batch is part of an aborted transaction.
    fn skips(&mut self, producer_id: i64, transactional: bool, last_offset: i64) -> bool {
        while let Some(&(first, pid)) = self.upcoming.first() {
            if first > last_offset {
                break;
            }
            self.upcoming.pop_first();
            self.skipping.insert(pid);
        }
        transactional && self.skipping.contains(&producer_id)
    }

    /// An abort marker of `producer_id` ends its aborted transaction.
    fn aborted(&mut self, producer_id: i64) {
        self.skipping.remove(&producer_id);
    }
}

impl Position {
    fn at_end(&self) -> bool {
        self.end_offset.is_some_and(|end| self.next_offset >= end)
    }
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// --count or --exit-at-end was satisfied.
    Done,
    /// stdout was closed (`| head`).
    ClosedOutput,
}

/// Runs `sluice consume` until --count, --exit-at-end or Ctrl-C.
pub(crate) fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let args = &args;
    crate::cli_common::run(&args.common, |mut client| async move {
        let mut positions = start_positions(&mut client, args).await?;
        let mut printed: u64 = 0;
        let interrupted = {
            let reading = read(&mut client, args, &mut positions, &mut printed);
            tokio::select! {
                stop = reading => { stop?; false }
                signal = tokio::signal::ctrl_c() => {
                    signal.context("cannot listen for Ctrl-C")?;
                    true
                }
            }
        };
        if let Some(group) = &args.group {
            // An interrupted fetch may have left its answer unread on the connection.
            if interrupted {
                client = Client::connect(
                    &args.common.bootstrap_server(),
                    Duration::from_millis(args.common.timeout_ms),
                )
                .await?;
            }
            commit(&mut client, group, &args.topic, &positions).await?;
        }
        eprintln!(
            "consumed {printed} record{} from {}",
            if printed == 1 { "" } else { "s" },
            args.topic
        );
        Ok(String::new())
    })
}

/// The partitions to read and where each starts (and, with --exit-at-end, ends).
async fn start_positions(
    client: &mut Client,
    args: &ConsumeArgs,
) -> anyhow::Result<BTreeMap<i32, Position>> {
    let metadata = crate::topic_cli::topic_metadata(client, "consume from", &args.topic).await?;
    let mut partitions: Vec<i32> = metadata
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect();
    partitions.sort_unstable();
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            bail!(
                "cannot consume from partition {p} of topic {}: it has {} partitions",
                args.topic,
                partitions.len()
            );
        }
        partitions = vec![p];
    }
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(args.topic.as_str(), *p))
        .collect();
    let committed = match &args.group {
        Some(group) => crate::group_cli::committed_offsets(client, group, Some(&tps)).await?,
        None => BTreeMap::new(),
    };
    let needs_latest = args.exit_at_end
        || matches!(
            args.from,
            Start::End | Start::Timestamp(_) | Start::Offset(_)
        );
    let latest = if needs_latest {
        offsets_at(client, &tps, LATEST_TIMESTAMP, args.isolation_level.level()).await?
    } else {
        BTreeMap::new()
    };
    let from = match args.from {
        Start::Beginning => offsets(client, &tps, EARLIEST_TIMESTAMP).await?,
        Start::End => latest.clone(),
        Start::Timestamp(ms) => {
            // -1: no record at or after the time; start at the end.
            let mut found = offsets(client, &tps, ms).await?;
            for (p, offset) in &mut found {
                if *offset < 0 {
                    *offset = latest.get(p).copied().unwrap_or(0);
                }
            }
            found
        }
        Start::Offset(offset) => {
            // Checked here, not by the first fetch, so --exit-at-end cannot skip a partition
            // whose offset lies past its end.
            let earliest = offsets(client, &tps, EARLIEST_TIMESTAMP).await?;
            for (p, log_start) in &earliest {
                let log_end = latest.get(p).copied().unwrap_or(*log_start);
                if !(*log_start..=log_end).contains(&offset)
                    && !committed_partition(&committed, &args.topic, *p)
                {
                    bail!(
                        "offset {offset} is out of range for {}-{p}: it holds offsets {log_start} to {log_end} (OFFSET_OUT_OF_RANGE)",
                        args.topic
                    );
                }
            }
            partitions.iter().map(|p| (*p, offset)).collect()
        }
    };
    let mut positions = BTreeMap::new();
    for (tp, p) in tps.iter().zip(&partitions) {
        let next_offset = match committed.get(tp) {
            Some(offset) => *offset,
            None => *from
                .get(p)
                .with_context(|| format!("the broker returned no start offset for {tp}"))?,
        };
        let end_offset = if args.exit_at_end {
            latest.get(p).copied()
        } else {
            None
        };
        positions.insert(
            *p,
            Position {
                next_offset,
                end_offset,
                aborted: AbortedFilter::default(),
            },
        );
    }
    Ok(positions)
}

/// Whether the group has a committed offset for the partition (which then overrides --from).
fn committed_partition(
    committed: &BTreeMap<TopicPartition, i64>,
    topic: &str,
    partition: i32,
) -> bool {
    committed.contains_key(&TopicPartition::new(topic, partition))
}

/// ListOffsets for one topic's partitions, failing on any partition's error.
async fn offsets(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    offsets_at(client, partitions, timestamp, 0).await
}

/// [`offsets`] at an isolation level (1: the latest is the last stable offset).
async fn offsets_at(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
    isolation_level: i8,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for (tp, result) in
        list_offsets_isolated(client, partitions, timestamp, isolation_level).await?
    {
        match result {
            Ok(offset) => out.insert(tp.partition, offset),
            Err(error) => bail!("cannot list offsets of {tp}: {error}"),
        };
    }
    Ok(out)
}

/// The fetch loop: prints records until --count or --exit-at-end is satisfied (or forever).
async fn read(
    client: &mut Client,
    args: &ConsumeArgs,
    positions: &mut BTreeMap<i32, Position>,
    printed: &mut u64,
) -> anyhow::Result<Stop> {
    let mut out = Vec::new();
    loop {
        if args.count.is_some_and(|count| *printed >= count) {
            return Ok(Stop::Done);
        }
        let wanted: Vec<FetchPartition> = positions
            .iter()
            .filter(|(_, position)| !position.at_end())
            .map(|(p, position)| {
                FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(position.next_offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Stop::Done);
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_isolation_level(args.isolation_level.level())
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&args.topic))
                .with_partitions(wanted)])
            .with_rack_id(StrBytes::default());
        let response = client.send(FETCH_VERSION, &request).await?;
        if let Some(error) = error_name(response.error_code) {
            bail!("cannot fetch from topic {}: {error}", args.topic);
        }
        for topic in response.responses {
            for data in topic.partitions {
                let partition = data.partition_index;
                let Some(position) = positions.get_mut(&partition) else {
                    continue;
                };
                if data.error_code == OFFSET_OUT_OF_RANGE {
                    bail!(
                        "offset {} is out of range for {}-{partition}: it holds offsets {} to {} (OFFSET_OUT_OF_RANGE)",
                        position.next_offset,
                        args.topic,
                        data.log_start_offset,
                        data.high_watermark
                    );
                }
                if let Some(error) = kafka_error(data.error_code, None) {
                    bail!("cannot fetch from {}-{partition}: {error}", args.topic);
                }
                for aborted in data.aborted_transactions.iter().flatten() {
                    position
                        .aborted
                        .add(aborted.producer_id.0, aborted.first_offset);
                }
                let stopped = print_records(
                    &mut out,
                    args,
                    partition,
                    position,
                    data.records.unwrap_or_default(),
                    printed,
                )?;
                if write_stdout(&mut out)? == Stop::ClosedOutput {
                    return Ok(Stop::ClosedOutput);
                }
                if stopped {
                    return Ok(Stop::Done);
                }
            }
        }
    }
}

/// Formats the complete batches of a fetched partition into `out`, advancing the position;
/// returns true when --count was reached. A batch whose records do not read (its count disagrees
/// with its bytes, its codec refuses it, …) stops the command with its offsets and the reason;
/// none of its records is printed.
fn print_records(
    out: &mut Vec<u8>,
    args: &ConsumeArgs,
    partition: i32,
    position: &mut Position,
    records: Bytes,
    printed: &mut u64,
) -> anyhow::Result<bool> {
    // A fetch may end with a partial batch; it is fetched again whole next time.
    for batch in Batches::new(&records) {
        let batch = batch.with_context(|| {
            format!(
                "the record batch at offset {} of {}-{partition} is unreadable",
                position.next_offset, args.topic
            )
        })?;
        let header = *batch.header();
        let last_offset = header.last_offset();
        let damaged = |e: RecordsError| {
            anyhow::anyhow!(
                "the record batch at offsets {}..={last_offset} of {}-{partition} is damaged: {e}",
                header.base_offset,
                args.topic
            )
        };
        let skip = if header.is_control() {
            // An abort marker: control record key (version i16, type i16 = 0).
            let mut abort = false;
            batch
                .for_each_record(DEFAULT_DECOMPRESSED_LIMIT, |r| {
                    abort |= matches!(r.key, Some([_, _, 0, 0, ..]));
                    Ok::<_, RecordsError>(())
                })
                .map_err(damaged)?;
            if abort {
                position.aborted.aborted(header.producer_id);
            }
            true
        } else {
            position
                .aborted
                .skips(header.producer_id, header.is_transactional(), last_offset)
        };
        if !skip {
            let (start, printed_before) = (out.len(), *printed);
            let mut reached = None;
            let walked = batch.for_each_record(DEFAULT_DECOMPRESSED_LIMIT, |record| {
                // A batch may start before the fetch offset.
                if reached.is_some() || record.offset < position.next_offset {
                    return Ok::<_, RecordsError>(());
                }
                args.format.write(out, &args.topic, partition, &record);
                *printed += 1;
                if args.count.is_some_and(|count| *printed >= count) {
                    reached = Some(record.offset + 1);
                }
                Ok(())
            });
            if let Err(e) = walked {
                out.truncate(start);
                *printed = printed_before;
                return Err(damaged(e));
            }
            if let Some(next) = reached {
                position.next_offset = next;
                return Ok(true);
            }
        }
        position.next_offset = position.next_offset.max(last_offset.saturating_add(1));
    }
    Ok(false)
}

/// Writes and clears `out`; a closed pipe ends reading without an error.
fn write_stdout(out: &mut Vec<u8>) -> anyhow::Result<Stop> {
    if out.is_empty() {
        return Ok(Stop::Done);
    }
    let mut stdout = std::io::stdout().lock();
    let result = stdout.write_all(out).and_then(|()| stdout.flush());
    out.clear();
    match result {
        Ok(()) => Ok(Stop::Done),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Stop::ClosedOutput),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// Commits every partition's position for `group` (OffsetCommit v8 without a member).
async fn commit(
    client: &mut Client,
    group: &str,
    topic: &str,
    positions: &BTreeMap<i32, Position>,
) -> anyhow::Result<()> {
    let request = OffsetCommitRequest::default()
        .with_group_id(crate::group_cli::group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_group_instance_id(None)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                positions
                    .iter()
                    .map(|(p, position)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(position.next_offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(StrBytes::default()))
                    })
                    .collect(),
            )]);
    let response = client.send(8, &request).await?;
    for t in response.topics {
        for p in t.partitions {
            if let Some(error) = error_name(p.error_code) {
                bail!(
                    "cannot commit the offset of {}-{} for group {group}: {error}",
                    t.name.0.as_str(),
                    p.partition_index
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::records::{Batch, BatchBuilder, Compression, Header, NewRecord};

    /// A batch holding one record at offset 42 with headers `a=1` and `b` (null).
    fn record_batch(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Vec<u8> {
        let headers = [
            Header {
                key: b"a",
                value: Some(b"1"),
            },
            Header {
                key: b"b",
                value: None,
            },
        ];
        let mut builder = BatchBuilder::new(Compression::None).base_offset(42);
        builder.append(NewRecord {
            timestamp: 1_700_000_000_000,
            key,
            value,
            headers: &headers,
        });
        builder.build().unwrap()
    }

    fn formatted(format: &str, batch: &[u8]) -> String {
        let (batch, _) = Batch::parse(batch).unwrap();
        let record = batch.records().unwrap().next().unwrap().unwrap();
        let mut out = Vec::new();
        parse_format(format)
            .unwrap()
            .write(&mut out, "orders", 3, &record);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_like_kcat() {
        let r = record_batch(Some(b"k"), Some(b"value"));
        assert_eq!(formatted("%s\\n", &r), "value\n");
        assert_eq!(
            formatted("%t/%p@%o %k=%s (%S bytes, %T) [%h]\\t100%%", &r),
            "orders/3@42 k=value (5 bytes, 1700000000000) [a=1,b=]\t100%"
        );
        let null = record_batch(None, None);
        assert_eq!(formatted("[%k][%s][%S]", &null), "[][][-1]");
        assert_eq!(formatted("a\\\\b\\x", &null), "a\\b\\x");
    }

    #[test]
    fn bad_formats_are_refused() {
        assert!(parse_format("%x").unwrap_err().contains("%x"));
        assert!(parse_format("50%").is_err());
    }

    #[test]
    fn starts_parse() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("17"), Ok(Start::Offset(17)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        for bad in ["", "-1", "@", "@x", "start", "1.5"] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }
}

//! The records of `__consumer_offsets`, in Kafka's format: which partition a group lives in, how
//! committed offsets and group deletions are encoded as record keys and values, and the batch that
//! carries them.
//!
//! Key of an offset commit (version 1): `version i16, group string, topic string, partition i32`.
//! Value (version 3): `version i16, offset i64, leader epoch i32, metadata string, commit timestamp
//! i64`. Key of group metadata (version 2): `version i16, group string`; value (version 3):
//! `version i16, protocol type string, generation i32, protocol nullable string, leader nullable
//! string, state timestamp i64, members [member id, instance id nullable, client id, client host,
//! rebalance timeout i32, session timeout i32, subscription bytes, assignment bytes]`. A record
//! with a null value is a tombstone (the offset or group was deleted). Strings are an i16 length
//! (-1 for null) and UTF-8 bytes; bytes an i32 length.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Name of the internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode`, made non-negative, modulo
/// the partition count, exactly as Kafka places groups.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let positive = if h == i32::MIN { 0 } else { h.abs() };
    positive % partitions.max(1)
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A commit (`Some`) or its deletion (`None`).
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    /// A group's membership (`Some`) or its deletion (`None`).
    Group {
        group: String,
        value: Option<GroupSnapshot>,
    },
}

/// A group's persisted membership: what a restarted coordinator needs so members carry on
/// without rejoining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

pub(crate) fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("names are bounded well below 32 KiB by the protocol");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

pub(crate) fn put_nullable(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(i32::try_from(b.len()).expect("member metadata is bounded by the request size"));
    buf.put_slice(b);
}

fn get_nullable(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() < 2 {
        return None;
    }
    if i16::from_be_bytes([buf[0], buf[1]]) == -1 {
        buf.advance(2);
        return Some(None);
    }
    get_string(buf).map(Some)
}

pub(crate) fn get_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    let len = usize::try_from(get_i32(buf)?).ok()?;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

pub fn group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_i16(GROUP_KEY_VERSION);
    put_string(&mut buf, group);
    buf.freeze()
}

pub fn group_value(g: &GroupSnapshot) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut buf, &g.protocol_type);
    buf.put_i32(g.generation);
    put_nullable(&mut buf, g.protocol.as_deref());
    put_nullable(&mut buf, g.leader.as_deref());
    buf.put_i64(g.state_timestamp);
    buf.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_string(&mut buf, &m.member_id);
        put_nullable(&mut buf, m.instance_id.as_deref());
        put_string(&mut buf, &m.client_id);
        put_string(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

fn decode_group_value(mut v: Bytes) -> Option<GroupSnapshot> {
    if v.remaining() < 2 || v.get_i16() != GROUP_VALUE_VERSION {
        return None;
    }
    let protocol_type = get_string(&mut v)?;
    let generation = get_i32(&mut v)?;
    let protocol = get_nullable(&mut v)?;
    let leader = get_nullable(&mut v)?;
    if v.remaining() < 8 {
        return None;
    }
    let state_timestamp = v.get_i64();
    let count = usize::try_from(get_i32(&mut v)?).ok()?;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        members.push(MemberSnapshot {
            member_id: get_string(&mut v)?,
            instance_id: get_nullable(&mut v)?,
            client_id: get_string(&mut v)?,
            client_host: get_string(&mut v)?,
            rebalance_timeout_ms: get_i32(&mut v)?,
            session_timeout_ms: get_i32(&mut v)?,
            subscription: get_bytes(&mut v)?,
            assignment: get_bytes(&mut v)?,
        });
    }
    Some(GroupSnapshot {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

pub(crate) fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(buf.get_i16()).ok()?;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len() + topic.len());
    buf.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

pub fn offset_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(24 + value.metadata.len());
    buf.put_i16(OFFSET_VALUE_VERSION);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp);
    buf.freeze()
}

/// Decodes one record; `None` for anything unrecognised (skipped on load).
pub fn decode(key: Option<Bytes>, value: Option<Bytes>) -> Option<OffsetsRecord> {
    let mut key = key?;
    if key.remaining() < 2 {
        return None;
    }
    match key.get_i16() {
        0 | OFFSET_KEY_VERSION => {
            let group = get_string(&mut key)?;
            let topic = get_string(&mut key)?;
            if key.remaining() < 4 {
                return None;
            }
            let partition = key.get_i32();
            let value = match value {
                None => None,
                Some(mut v) => {
                    if v.remaining() < 10 {
                        return None;
                    }
                    let version = v.get_i16();
                    let offset = v.get_i64();
                    let leader_epoch = if version >= 3 {
                        if v.remaining() < 4 {
                            return None;
                        }
                        v.get_i32()
                    } else {
                        -1
                    };
                    let metadata = get_string(&mut v)?;
                    if v.remaining() < 8 {
                        return None;
                    }
                    let commit_timestamp = v.get_i64();
                    Some(CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp,
                    })
                }
            };
            Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        GROUP_KEY_VERSION => {
            let group = get_string(&mut key)?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(OffsetsRecord::Group { group, value })
        }
        _ => None,
    }
}

/// The (key, value) records of committed offsets of `group`.
pub fn offset_records(
    group: &str,
    offsets: &[((String, i32), CommittedOffset)],
) -> Vec<(Bytes, Option<Bytes>)> {
    offsets
        .iter()
        .map(|((topic, p), value)| (offset_key(group, topic, *p), Some(offset_value(value))))
        .collect()
}

/// Encodes key/value pairs as one uncompressed v2 batch, ready to append.
pub fn batch(records: Vec<(Bytes, Option<Bytes>)>, now_ms: i64) -> Bytes {
    producer_batch(records, now_ms, None)
}

/// [`batch`] written for a transactional producer `(producer id, epoch)`: the transactional
/// attribute set and no sequence (Kafka's TxnOffsetCommit records; the log checks only the epoch).
pub fn producer_batch(
    records: Vec<(Bytes, Option<Bytes>)>,
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Bytes {
    use sluice_protocol::records::{BatchBuilder, Compression, NewRecord};
    let mut builder = BatchBuilder::new(Compression::None).partition_leader_epoch(0);
    if let Some((producer_id, producer_epoch)) = producer {
        builder = builder
            .producer(producer_id, producer_epoch, -1)
            .transactional(true);
    }
    for (key, value) in &records {
        builder.append(NewRecord {
            timestamp: now_ms,
            key: Some(key),
            value: value.as_deref(),
            headers: &[],
        });
    }
    Bytes::from(
        builder
            .build()
            .expect("a batch of offset records always encodes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java: "my-group".hashCode() == 1038437306? Checked with the definition instead.
        let java_hash = |s: &str| {
            s.encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
        };
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("ab"), 97 * 31 + 98);
        assert_eq!(partition_for("a", 50), 97 % 50);
        for g in ["", "group", "consumer-group-1", "ünïcode"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p));
        }
    }

    #[test]
    fn records_round_trip() {
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 1000,
        };
        let key = offset_key("g", "t", 7);
        assert_eq!(
            decode(Some(key.clone()), Some(offset_value(&value))),
            Some(OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: Some(value)
            })
        );
        assert!(matches!(
            decode(Some(key), None),
            Some(OffsetsRecord::Offset { value: None, .. })
        ));
        assert_eq!(decode(Some(Bytes::from_static(&[0, 1, 0])), None), None);
        let group = GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: None,
            state_timestamp: 9,
            members: vec![MemberSnapshot {
                member_id: "m".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/h".into(),
                rebalance_timeout_ms: 1,
                session_timeout_ms: 2,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::from_static(b"a"),
            }],
        };
        let value = group_value(&group);
        assert_eq!(
            decode(Some(group_key("g")), Some(value.clone())),
            Some(OffsetsRecord::Group {
                group: "g".into(),
                value: Some(group)
            })
        );
        // Truncated values are not misread.
        assert_eq!(
            decode(Some(group_key("g")), Some(value.slice(..value.len() - 1))),
            None
        );
        assert_eq!(decode(None, None), None);
    }
}

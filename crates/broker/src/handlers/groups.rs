//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and DeleteGroups. Membership logic lives in [`crate::group`]; this module maps wire
//! messages to it and persists commits in `__consumer_offsets`.

use std::sync::Arc;
use std::time::Instant;

use sluice_protocol::error::ResponseError;
use sluice_protocol::messages::delete_groups_response::DeletableGroupResult;
use sluice_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use sluice_protocol::messages::find_coordinator_response::Coordinator;
use sluice_protocol::messages::join_group_response::JoinGroupResponseMember;
use sluice_protocol::messages::leave_group_response::MemberResponse;
use sluice_protocol::messages::list_groups_response::ListedGroup;
use sluice_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use sluice_protocol::StrBytes;
use tokio::sync::oneshot;

use crate::broker::{now, stopped, Broker};
use crate::errors;
use crate::group::offsets_topic::OFFSETS_TOPIC;
use crate::group::{
    CommitAuth, CommittedOffset, JoinRequest, JoinResult, Pending, SyncPending, SyncResult,
};
use crate::request::{Ctx, Reply};

const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Per topic, per partition: the commit's error, if any.
pub(crate) type CommitResults = Vec<(TopicName, Vec<(i32, Option<ResponseError>)>)>;

/// The topics of an OffsetCommit or TxnOffsetCommit request as (name, [`CommitPartition`]): the
/// two requests have different types with the same fields.
macro_rules! commit_request_topics {
    ($topics:expr) => {
        $topics.into_iter().map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    (
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.committed_metadata,
                    )
                })
                .collect();
            (t.name, partitions)
        })
    };
}
pub(crate) use commit_request_topics;

/// The response topics of an OffsetCommit or TxnOffsetCommit from [`CommitResults`]; `failed`
/// answers every partition without an error of its own.
macro_rules! commit_response_topics {
    ($results:expr, $failed:expr, $topic:ident, $partition:ident) => {
        $results
            .into_iter()
            .map(|(name, partitions)| {
                $topic::default().with_name(name).with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            $partition::default()
                                .with_partition_index(index)
                                .with_error_code(error.or($failed).map_or(0, |e| e.code()))
                        })
                        .collect(),
                )
            })
            .collect()
    };
}
pub(crate) use commit_response_topics;

/// Offsets to store, by (topic, partition).
pub(crate) type ToStore = Vec<((String, i32), CommittedOffset)>;

/// One partition of a commit request: index, offset, leader epoch, metadata.
pub(crate) type CommitPartition = (i32, i64, i32, Option<StrBytes>);

/// Checks the partitions of an OffsetCommit or TxnOffsetCommit: the group's error (if any)
/// applies to all; otherwise unknown partitions and oversized metadata are refused. Returns the
/// per-partition outcome and the offsets to store.
pub(crate) fn validate_commits(
    broker: &Broker,
    group_error: Option<ResponseError>,
    topics: impl Iterator<Item = (TopicName, Vec<CommitPartition>)>,
) -> (CommitResults, ToStore) {
    let commit_time = now().0;
    let max_metadata = broker.config.offset_metadata_max_bytes;
    let mut results: CommitResults = Vec::new();
    let mut to_store = Vec::new();
    for (name, requested) in topics {
        let known = broker.metadata.topic(&name.0);
        let mut partitions = Vec::with_capacity(requested.len());
        for (index, offset, leader_epoch, metadata) in requested {
            let metadata = metadata.map(|m| m.to_string()).unwrap_or_default();
            let error = group_error.or_else(|| {
                if !known
                    .as_ref()
                    .is_some_and(|t| (0..t.partitions).contains(&index))
                {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if metadata.len() > max_metadata {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    None
                }
            });
            if error.is_none() {
                to_store.push((
                    (name.0.to_string(), index),
                    CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp: commit_time,
                    },
                ));
            }
            partitions.push((index, error));
        }
        results.push((name, partitions));
    }
    (results, to_store)
}

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, errors::code)
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Why this broker cannot coordinate `group` now: NOT_COORDINATOR when another broker leads
/// the group's `__consumer_offsets` partition (the client finds the coordinator again),
/// COORDINATOR_LOAD_IN_PROGRESS while this one is taking it over (the client retries here).
fn not_coordinating(broker: &Broker, group: &str) -> Option<ResponseError> {
    broker.coordinator_error(OFFSETS_TOPIC, group)
}

/// Creates the internal topic a FindCoordinator needs, as Kafka does on first use.
pub(crate) async fn ensure_coordinator_topic(broker: &Broker, request: &FindCoordinatorRequest) {
    let created = if request.key_type == KEY_TYPE_TRANSACTION {
        crate::txn::driver::ensure_state_topic(broker).await
    } else {
        broker.ensure_offsets_topic().await
    };
    if let Err(e) = created {
        tracing::warn!(error = %e, "cannot create the coordinator's internal topic");
    }
}

/// The broker leading the internal-topic partition that `key` hashes to: its id, host and
/// port; None while the topic or a leader is missing.
fn coordinator_for(broker: &Broker, topic: &str, key: &str) -> Option<(i32, String, i32)> {
    let state = broker.metadata.state();
    let meta = state.topics.get(topic)?;
    let index = crate::group::offsets_topic::partition_for(key, meta.partitions);
    let leader = meta.partition_states.get(&index)?.leader?;
    let registration = state.brokers.get(&leader)?;
    let listener = registration.listeners.first()?;
    Some((
        leader.0 as i32,
        listener.host.clone(),
        i32::from(listener.port),
    ))
}

pub(crate) fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    type Answer = Result<(i32, String, i32), (ResponseError, Option<StrBytes>)>;
    let answer = |key: &StrBytes| -> Answer {
        let topic = match request.key_type {
            KEY_TYPE_TRANSACTION => crate::txn::TXN_STATE_TOPIC,
            KEY_TYPE_GROUP => OFFSETS_TOPIC,
            _ => {
                return Err((
                    ResponseError::InvalidRequest,
                    Some(str_bytes("key type must be 0 (group) or 1 (transaction)")),
                ))
            }
        };
        if key.is_empty() {
            return Err(match request.key_type {
                KEY_TYPE_TRANSACTION => (ResponseError::InvalidRequest, None),
                _ => (ResponseError::InvalidGroupId, None),
            });
        }
        coordinator_for(broker, topic, key.as_str())
            .ok_or((ResponseError::CoordinatorNotAvailable, None))
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let coordinator = Coordinator::default().with_key(key.clone());
                match answer(key) {
                    Ok((node, host, port)) => coordinator
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err((error, message)) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_host(str_bytes(""))
                        .with_port(-1)
                        .with_error_code(errors::code(error))
                        .with_error_message(message),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match answer(&request.key) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port),
        Err((error, message)) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(errors::code(error))
                .with_node_id(BrokerId(-1))
                .with_host(str_bytes(""))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(message)
            } else {
                response
            }
        }
    }
}

/// Waits for a group answer, or answers `fallback` when the broker stops first.
async fn wait<T>(broker: Arc<Broker>, rx: oneshot::Receiver<T>, fallback: T) -> T {
    let mut shutdown = broker.shutdown_signal();
    tokio::select! {
        answer = rx => answer.unwrap_or(fallback),
        _ = stopped(&mut shutdown) => fallback,
    }
}

fn join_response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(id))
                .with_group_instance_id(if version >= 5 {
                    instance.map(str_bytes)
                } else {
                    None
                })
                .with_metadata(metadata)
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(code(result.error))
        .with_generation_id(result.generation_id)
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(members);
    if version >= 7 {
        response
            .with_protocol_type(result.protocol_type.map(str_bytes))
            .with_protocol_name(result.protocol_name.map(str_bytes))
    } else {
        // Before v7 the protocol name is a non-null string.
        response.with_protocol_name(Some(str_bytes(result.protocol_name.unwrap_or_default())))
    }
}

pub(crate) fn join_group(broker: &Arc<Broker>, ctx: Ctx, request: JoinGroupRequest) -> Reply {
    let version = ctx.version;
    let member_id = request.member_id.to_string();
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id: if ctx.client_id.is_empty() {
            "consumer".to_owned()
        } else {
            ctx.client_id.clone()
        },
        client_host: ctx
            .client_host
            .map(|ip| format!("/{ip}"))
            .unwrap_or_default(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let refused = not_coordinating(broker, &join.group_id).or_else(|| {
        broker
            .metadata
            .topic(OFFSETS_TOPIC)
            .is_none()
            .then_some(ResponseError::CoordinatorNotAvailable)
    });
    if let Some(error) = refused {
        return ctx
            .reply(&join_response(error_join(error, &member_id), version))
            .unwrap_or(Reply::Nothing);
    }
    match broker.groups.join(join, Instant::now()) {
        Pending::Now(result) => ctx
            .reply(&join_response(result, version))
            .unwrap_or(Reply::Nothing),
        Pending::Wait(rx) => {
            let broker = broker.clone();
            ctx.reply_later(async move {
                let fallback = error_join(ResponseError::NotCoordinator, &member_id);
                join_response(wait(broker, rx, fallback).await, version)
            })
        }
    }
}

fn error_join(error: ResponseError, member_id: &str) -> JoinResult {
    JoinResult {
        error: Some(error),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id: member_id.to_owned(),
        members: Vec::new(),
    }
}

fn sync_response(result: SyncResult, version: i16) -> SyncGroupResponse {
    let response = SyncGroupResponse::default()
        .with_error_code(code(result.error))
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(str_bytes))
            .with_protocol_name(result.protocol_name.map(str_bytes))
    } else {
        response
    }
}

pub(crate) fn sync_group(broker: &Arc<Broker>, ctx: Ctx, request: SyncGroupRequest) -> Reply {
    let version = ctx.version;
    if let Some(error) = not_coordinating(broker, &request.group_id.0) {
        let result = SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: bytes::Bytes::new(),
        };
        return ctx
            .reply(&sync_response(result, version))
            .unwrap_or(Reply::Nothing);
    }
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let pending = broker.groups.sync(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        (
            request.protocol_type.map(|s| s.to_string()),
            request.protocol_name.map(|s| s.to_string()),
        ),
        assignments,
    );
    let fallback = || SyncResult {
        error: Some(ResponseError::NotCoordinator),
        protocol_type: None,
        protocol_name: None,
        assignment: bytes::Bytes::new(),
    };
    match pending {
        SyncPending::Now(result) => ctx
            .reply(&sync_response(result, version))
            .unwrap_or(Reply::Nothing),
        SyncPending::Wait(rx) => {
            let broker = broker.clone();
            ctx.reply_later(
                async move { sync_response(wait(broker, rx, fallback()).await, version) },
            )
        }
        SyncPending::Store { generation, answer } => {
            let broker = broker.clone();
            let group = request.group_id.0.to_string();
            ctx.reply_later(async move {
                broker.store_group_assignment(&group, generation).await;
                sync_response(wait(broker, answer, fallback()).await, version)
            })
        }
    }
}

pub(crate) fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    if let Some(error) = not_coordinating(broker, &request.group_id.0) {
        return HeartbeatResponse::default().with_error_code(code(Some(error)));
    }
    let error = broker.groups.heartbeat(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        Instant::now(),
    );
    HeartbeatResponse::default().with_error_code(code(error))
}

pub(crate) fn leave_group(
    broker: &Arc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    let now = Instant::now();
    if let Some(error) = not_coordinating(broker, &group) {
        return LeaveGroupResponse::default().with_error_code(code(Some(error)));
    }
    if version < 3 {
        let error = broker.groups.leave(&group, &request.member_id, None, now);
        return LeaveGroupResponse::default().with_error_code(code(error));
    }
    let members = request
        .members
        .into_iter()
        .map(|m| {
            let error =
                broker
                    .groups
                    .leave(&group, &m.member_id, m.group_instance_id.as_deref(), now);
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code(error))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub(crate) fn offset_commit(broker: &Arc<Broker>, ctx: Ctx, request: OffsetCommitRequest) -> Reply {
    let group = request.group_id.0.to_string();
    let auth = CommitAuth {
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
    };
    let group_error =
        not_coordinating(broker, &group).or_else(|| broker.groups.authorize_commit(&group, &auth));
    let (results, to_store) =
        validate_commits(broker, group_error, commit_request_topics!(request.topics));
    let respond = |results: CommitResults, failed: Option<ResponseError>| {
        OffsetCommitResponse::default().with_topics(commit_response_topics!(
            results,
            failed,
            OffsetCommitResponseTopic,
            OffsetCommitResponsePartition
        ))
    };
    if to_store.is_empty() {
        return ctx.reply(&respond(results, None)).unwrap_or(Reply::Nothing);
    }
    let broker = broker.clone();
    ctx.reply_later(async move {
        match broker.persist_offsets(&group, &to_store).await {
            Ok(appended_at) => {
                broker.groups.store_offsets(&group, appended_at.0, to_store);
                respond(results, None)
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "persisting committed offsets failed");
                respond(results, Some(ResponseError::CoordinatorNotAvailable))
            }
        }
    })
}

/// (topic, partitions) pairs of a request as one list of (topic, partition).
fn flatten(topics: impl Iterator<Item = (TopicName, Vec<i32>)>) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, partitions)| {
            let name = name.0.to_string();
            partitions.into_iter().map(move |p| (name.clone(), p))
        })
        .collect()
}

/// Committed offsets of `group`. With `require_stable` (v7+), a partition whose offset an open
/// transaction is committing answers UNSTABLE_OFFSET_COMMIT, and the client retries.
fn fetched_partitions(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(String, i32)>>,
    require_stable: bool,
) -> Vec<(String, Vec<OffsetFetchResponsePartition>)> {
    let found = broker.groups.fetch_offsets(group, wanted.as_deref());
    let mut topics: Vec<(String, Vec<OffsetFetchResponsePartition>)> = Vec::new();
    for (key, value) in found {
        if require_stable && broker.groups.has_pending_txn_offset(group, &key) {
            let (topic, partition) = key;
            let entry = OffsetFetchResponsePartition::default()
                .with_partition_index(partition)
                .with_committed_offset(-1)
                .with_error_code(ResponseError::UnstableOffsetCommit.code());
            match topics.iter_mut().find(|(name, _)| *name == topic) {
                Some((_, partitions)) => partitions.push(entry),
                None => topics.push((topic, vec![entry])),
            }
            continue;
        }
        let (topic, partition) = key;
        let entry = OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(value.as_ref().map_or(-1, |v| v.offset))
            .with_committed_leader_epoch(value.as_ref().map_or(-1, |v| v.leader_epoch))
            .with_metadata(Some(str_bytes(
                value.map(|v| v.metadata).unwrap_or_default(),
            )));
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push(entry),
            None => topics.push((topic, vec![entry])),
        }
    }
    topics
}

pub(crate) fn offset_fetch(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        // Several groups per request.
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|topics| {
                    flatten(topics.into_iter().map(|t| (t.name, t.partition_indexes)))
                });
                let topics =
                    fetched_partitions(broker, &g.group_id.0, wanted, request.require_stable)
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(name)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|p| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p.partition_index)
                                                .with_committed_offset(p.committed_offset)
                                                .with_committed_leader_epoch(
                                                    p.committed_leader_epoch,
                                                )
                                                .with_metadata(p.metadata)
                                                .with_error_code(p.error_code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                let group = OffsetFetchResponseGroup::default();
                if let Some(error) = not_coordinating(broker, &g.group_id.0) {
                    return group
                        .with_group_id(g.group_id)
                        .with_error_code(code(Some(error)));
                }
                group.with_group_id(g.group_id).with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Some(error) = not_coordinating(broker, &request.group_id.0) {
        return OffsetFetchResponse::default().with_error_code(code(Some(error)));
    }
    let wanted = request
        .topics
        .map(|topics| flatten(topics.into_iter().map(|t| (t.name, t.partition_indexes))));
    let topics = fetched_partitions(broker, &request.group_id.0, wanted, request.require_stable)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub(crate) fn list_groups(broker: &Arc<Broker>, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_ascii_lowercase()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type))
                .with_group_state(str_bytes(g.state.name()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(crate) fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| match broker.groups.describe(&id.0) {
            // Kafka describes an unknown group as Dead with no members.
            None => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes("Dead")),
            Some(g) => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes(g.state.name()))
                .with_protocol_type(str_bytes(g.protocol_type))
                .with_protocol_data(str_bytes(g.protocol))
                .with_members(
                    g.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.instance_id.map(str_bytes)
                                } else {
                                    None
                                })
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(crate) fn delete_groups(broker: &Arc<Broker>, ctx: Ctx, request: DeleteGroupsRequest) -> Reply {
    let broker = broker.clone();
    ctx.reply_later(async move {
        let mut results = Vec::new();
        for id in request.groups_names {
            let error = match broker.groups.delete_group(&id.0) {
                Err(e) => Some(e),
                Ok(keys) => match broker.persist_group_deletion(&id.0, &keys).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(group = %id.0.as_str(), error = %e, "writing group tombstones failed");
                        Some(ResponseError::CoordinatorNotAvailable)
                    }
                },
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code(error)),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    })
}

pub(crate) fn offset_delete(broker: &Arc<Broker>, ctx: Ctx, request: OffsetDeleteRequest) -> Reply {
    let group = request.group_id.0.to_string();
    let keys: Vec<(TopicName, i32)> = request
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name;
            t.partitions
                .into_iter()
                .map(move |p| (name.clone(), p.partition_index))
        })
        .collect();
    let plain: Vec<(String, i32)> = keys.iter().map(|(t, p)| (t.0.to_string(), *p)).collect();
    let outcome = broker.groups.delete_offsets(&group, &plain);
    let broker = broker.clone();
    ctx.reply_later(async move {
        let errors = match outcome {
            Err(e) => return OffsetDeleteResponse::default().with_error_code(errors::code(e)),
            Ok(errors) => errors,
        };
        let deleted: Vec<(String, i32)> = plain
            .iter()
            .zip(&errors)
            .filter(|(_, e)| e.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if let Err(e) = broker.persist_offset_deletions(&group, &deleted).await {
            tracing::warn!(group = %group, error = %e, "writing offset tombstones failed");
            return OffsetDeleteResponse::default()
                .with_error_code(errors::code(ResponseError::CoordinatorNotAvailable));
        }
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for ((topic, partition), error) in keys.into_iter().zip(errors) {
            let entry = OffsetDeleteResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code(error));
            match topics.iter_mut().find(|t| t.name == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic)
                        .with_partitions(vec![entry]),
                ),
            }
        }
        OffsetDeleteResponse::default().with_topics(topics)
    })
}

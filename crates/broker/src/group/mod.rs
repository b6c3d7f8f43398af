//! The group coordinator for Kafka's classic consumer-group protocol: membership (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) with Kafka's state machine, and committed offsets kept in
//! memory and persisted in `__consumer_offsets`.
//!
//! States: `Empty` (no members, maybe offsets) → `PreparingRebalance` (waiting for members to
//! (re)join) → `CompletingRebalance` (joined; waiting for the leader's assignment) → `Stable`.
//! Any membership change in `CompletingRebalance` or `Stable` goes back to `PreparingRebalance`.
//! Join and sync requests that must wait hold a oneshot receiver; whoever completes the phase
//! answers every waiter. A ticker ([`GroupCoordinator::tick`]) expires sessions and ends rebalances
//! whose deadline passed.

pub mod offsets_topic;
mod txn_offsets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use sluice_protocol::error::ResponseError;
use tokio::sync::oneshot;
use tracing::{debug, info};

pub use offsets_topic::{CommittedOffset, GroupSnapshot, MemberSnapshot};

/// Kafka's classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup asks.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    /// The member's address as DescribeGroups shows it (`/<ip>`).
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join without a member id gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> Self {
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
}

/// What a SyncGroup is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> Self {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Either an answer now or one to wait for.
pub enum Pending<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

/// What a SyncGroup waits for.
pub enum SyncPending {
    Now(SyncResult),
    Wait(oneshot::Receiver<SyncResult>),
    /// The leader's assignment completes the rebalance once it is stored, as Kafka does: write
    /// the group's membership ([`GroupCoordinator::assignment_to_store`]) to
    /// `__consumer_offsets`, report the outcome with [`GroupCoordinator::complete_sync`], then
    /// wait for the answer.
    Store {
        generation: i32,
        answer: oneshot::Receiver<SyncResult>,
    },
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashSet<String>,
    /// Static members: instance id → member id.
    static_members: HashMap<String, String>,
    /// When the current rebalance completes even if members are missing.
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    initial_delay_until: Option<Instant>,
    offsets: HashMap<(String, i32), CommittedOffset>,
    /// Where in `__consumer_offsets` the write of each cached commit ended. Pipelined commits'
    /// writes complete in any order; a completion older than what the cache holds is dropped,
    /// so the cache follows the log's order as Kafka's does (and as a restart would replay it).
    offsets_appended_at: HashMap<(String, i32), i64>,
    /// The membership changed in a way a restarted broker must know (a new stable generation,
    /// the group emptied, a static member's new id): persist it.
    persist_pending: bool,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashSet::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            offsets: HashMap::new(),
            offsets_appended_at: HashMap::new(),
            persist_pending: false,
        }
    }

    /// Forgets the committed offset of `key` (deleted, expired or tombstoned).
    fn remove_offset(&mut self, key: &(String, i32)) {
        self.offsets.remove(key);
        self.offsets_appended_at.remove(key);
    }

    fn snapshot(&self, now_ms: i64) -> GroupSnapshot {
        let protocol = self.protocol.clone();
        GroupSnapshot {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: now_ms,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberSnapshot {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == protocol.as_ref())
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// Settings the coordinator takes from the broker config.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

/// One member, as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's selected protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Summary of a group for ListGroups/DescribeGroups and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

/// All groups this broker coordinates.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    /// Commits of open transactions (taken after `groups` when both are held).
    pending_txn: Mutex<txn_offsets::PendingTxnOffsets>,
}

/// The member-id check of OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAuth {
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            pending_txn: Mutex::new(txn_offsets::PendingTxnOffsets::default()),
        }
    }

    /// Holds offsets a transaction committed (written to `offsets_partition` of
    /// `__consumer_offsets`) until its marker.
    pub fn add_txn_offsets(
        &self,
        producer_id: i64,
        offsets_partition: i32,
        group_id: &str,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) {
        let pending = offsets
            .into_iter()
            .map(|(key, value)| (group_id.to_owned(), key, value))
            .collect();
        self.pending_txn
            .lock()
            .add(producer_id, offsets_partition, pending);
    }

    /// Takes back pending offsets whose write was refused.
    pub fn remove_txn_offsets(
        &self,
        producer_id: i64,
        offsets_partition: i32,
        group_id: &str,
        keys: &[(String, i32)],
    ) {
        self.pending_txn
            .lock()
            .remove(producer_id, offsets_partition, group_id, keys);
    }

    /// Applies (commit) or drops (abort) what `producer_id`'s transaction committed through
    /// `offsets_partition`, once the marker is written there.
    pub fn complete_txn_offsets(&self, producer_id: i64, offsets_partition: i32, commit: bool) {
        let pending = self.pending_txn.lock().take(producer_id, offsets_partition);
        if !commit {
            return;
        }
        let mut groups = self.groups.lock();
        for (group_id, key, value) in pending {
            groups
                .entry(group_id)
                .or_insert_with(Group::new)
                .offsets
                .insert(key, value);
        }
    }

    /// Whether an open transaction holds a commit for `group_id`'s `key`.
    pub fn has_pending_txn_offset(&self, group_id: &str, key: &(String, i32)) -> bool {
        self.pending_txn.lock().has(group_id, key)
    }

    /// Handles a JoinGroup: validation, member ids, and entering or joining a rebalance.
    pub fn join(&self, req: JoinRequest, now: Instant) -> Pending<JoinResult> {
        if req.group_id.is_empty() {
            return Pending::Now(JoinResult::error(
                ResponseError::InvalidGroupId,
                &req.member_id,
            ));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Pending::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Pending::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        let mut groups = self.groups.lock();
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        if !group.members.is_empty() {
            let type_differs = group.protocol_type.as_deref() != Some(req.protocol_type.as_str());
            let shares_protocol = req.protocols.iter().any(|(name, _)| {
                group
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
            if type_differs || !shares_protocol {
                return Pending::Now(JoinResult::error(
                    ResponseError::InconsistentGroupProtocol,
                    &req.member_id,
                ));
            }
        }

        // Static members keep their identity across restarts by instance id.
        if let Some(instance) = &req.group_instance_id {
            if let Some(old_id) = group.static_members.get(instance).cloned() {
                if !req.member_id.is_empty() && req.member_id != old_id {
                    return Pending::Now(JoinResult::error(
                        ResponseError::FencedInstanceId,
                        &req.member_id,
                    ));
                }
                if req.member_id.is_empty() {
                    return Self::static_rejoin(group, &req, old_id, now, &self.config);
                }
            }
        }

        let member_id = if req.member_id.is_empty() {
            let id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if req.require_known_member_id && req.group_instance_id.is_none() {
                group.pending.insert(id.clone());
                return Pending::Now(JoinResult::error(ResponseError::MemberIdRequired, &id));
            }
            id
        } else {
            req.member_id.clone()
        };
        let known = group.members.contains_key(&member_id);
        if !known && !group.pending.remove(&member_id) && !req.member_id.is_empty() {
            return Pending::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            ));
        }

        let (tx, rx) = oneshot::channel();
        if known {
            let member = group.members.get_mut(&member_id).expect("known member");
            let unchanged = member.protocols == req.protocols;
            member.protocols = req.protocols.clone();
            member.session_timeout = timeout(req.session_timeout_ms);
            member.rebalance_timeout = timeout(req.rebalance_timeout_ms);
            member.last_heartbeat = now;
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            match group.state {
                GroupState::Stable | GroupState::CompletingRebalance if unchanged && !is_leader => {
                    // Nothing changed: answer with the current generation.
                    return Pending::Now(current_generation(group, &member_id));
                }
                GroupState::PreparingRebalance => {}
                _ => prepare_rebalance(group, now, "member rejoined with new metadata"),
            }
            group
                .members
                .get_mut(&member_id)
                .expect("known member")
                .join_waiter = Some(tx);
        } else {
            add_member(group, &member_id, &req, now, Some(tx));
            let reason = "new member joined";
            if group.state == GroupState::Empty {
                group.initial_delay_until = Some(now + self.config.initial_rebalance_delay);
            }
            if group.state != GroupState::PreparingRebalance {
                prepare_rebalance(group, now, reason);
            } else if let Some(until) = group.initial_delay_until {
                // Each new member during the initial delay extends it (bounded by the deadline).
                group.initial_delay_until =
                    Some(until.max(now + self.config.initial_rebalance_delay));
            }
        }
        maybe_complete_join(&req.group_id, group, now);
        Pending::Wait(rx)
    }

    fn static_rejoin(
        group: &mut Group,
        req: &JoinRequest,
        old_id: String,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinResult> {
        let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
        let Some(mut member) = group.members.remove(&old_id) else {
            group
                .static_members
                .remove(req.group_instance_id.as_deref().unwrap_or_default());
            let (tx, rx) = oneshot::channel();
            add_member(group, &new_id, req, now, Some(tx));
            prepare_rebalance(group, now, "static member joined");
            let _ = config;
            return Pending::Wait(rx);
        };
        let unchanged = member.protocols == req.protocols;
        member.last_heartbeat = now;
        member.session_timeout = timeout(req.session_timeout_ms);
        member.rebalance_timeout = timeout(req.rebalance_timeout_ms);
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        member.protocols = req.protocols.clone();
        group.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        if group.leader.as_deref() == Some(old_id.as_str()) {
            group.leader = Some(new_id.clone());
        }
        if group.state == GroupState::Stable && unchanged {
            // KIP-345: a static member coming back with the same metadata takes its old place
            // without a rebalance.
            info!(member = %new_id, "static member rejoined without a rebalance");
            group.persist_pending = true;
            return Pending::Now(current_generation(group, &new_id));
        }
        let (tx, rx) = oneshot::channel();
        group
            .members
            .get_mut(&new_id)
            .expect("inserted")
            .join_waiter = Some(tx);
        if group.state != GroupState::PreparingRebalance {
            prepare_rebalance(group, now, "static member rejoined with new metadata");
        }
        maybe_complete_join(&req.group_id, group, now);
        Pending::Wait(rx)
    }

    /// Handles a SyncGroup. The leader's assignments complete the rebalance once they are
    /// stored ([`SyncPending::Store`]): a broker that answered SyncGroup knows the membership
    /// after a crash, so members carry on without a rebalance.
    pub fn sync(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        protocol: (Option<String>, Option<String>),
        assignments: Vec<(String, Bytes)>,
    ) -> SyncPending {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return SyncPending::Now(SyncResult::error(ResponseError::UnknownMemberId));
        };
        if !group.members.contains_key(member_id) {
            return SyncPending::Now(SyncResult::error(ResponseError::UnknownMemberId));
        }
        if generation_id != group.generation {
            return SyncPending::Now(SyncResult::error(ResponseError::IllegalGeneration));
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != group.protocol_type)
            || pname.is_some_and(|n| Some(n) != group.protocol)
        {
            return SyncPending::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty => {
                SyncPending::Now(SyncResult::error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                SyncPending::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => SyncPending::Now(assignment_of(group, member_id)),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                group
                    .members
                    .get_mut(member_id)
                    .expect("checked")
                    .sync_waiter = Some(tx);
                if group.leader.as_deref() != Some(member_id) {
                    return SyncPending::Wait(rx);
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, member) in group.members.iter_mut() {
                    member.assignment = given.remove(id).unwrap_or_default();
                }
                SyncPending::Store {
                    generation: group.generation,
                    answer: rx,
                }
            }
        }
    }

    /// The membership to store for [`SyncPending::Store`]: None when the group has moved on
    /// since (a member left or joined; its waiters were answered then).
    pub fn assignment_to_store(
        &self,
        group_id: &str,
        generation: i32,
        now_ms: i64,
    ) -> Option<GroupSnapshot> {
        let groups = self.groups.lock();
        let group = groups.get(group_id)?;
        (group.state == GroupState::CompletingRebalance && group.generation == generation)
            .then(|| group.snapshot(now_ms))
    }

    /// Completes a rebalance whose assignment was stored (`error` None: the group is Stable and
    /// every member gets its assignment) or could not be (every member gets `error` and the
    /// group rebalances, as Kafka does). Nothing happens when the group has moved on.
    pub fn complete_sync(
        &self,
        group_id: &str,
        generation: i32,
        error: Option<ResponseError>,
        now: Instant,
    ) {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return;
        };
        if group.state != GroupState::CompletingRebalance || group.generation != generation {
            return;
        }
        if let Some(error) = error {
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResult::error(error));
                }
            }
            prepare_rebalance(group, now, "storing the group's assignment failed");
            return;
        }
        group.state = GroupState::Stable;
        info!(
            group = group_id,
            generation = group.generation,
            members = group.members.len(),
            "group is stable"
        );
        let answers: Vec<_> = group
            .members
            .keys()
            .map(|id| (id.clone(), assignment_of(group, id)))
            .collect();
        for (id, answer) in answers {
            if let Some(waiter) = group
                .members
                .get_mut(&id)
                .and_then(|m| m.sync_waiter.take())
            {
                let _ = waiter.send(answer);
            }
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        now: Instant,
    ) -> Option<ResponseError> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        member.last_heartbeat = now;
        if generation_id != group.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        match group.state {
            // Members may heartbeat between their join answer and their sync, as in Kafka.
            GroupState::Stable | GroupState::CompletingRebalance => None,
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
        }
    }

    /// Handles one member of a LeaveGroup (by member id, or by instance id for static members).
    pub fn leave(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Option<ResponseError> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let id = match instance_id {
            Some(instance) => match group.static_members.get(instance) {
                Some(id) if member_id.is_empty() || member_id == id => id.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_owned(),
        };
        if group.pending.remove(&id) {
            return None;
        }
        if !group.members.contains_key(&id) {
            return Some(ResponseError::UnknownMemberId);
        }
        remove_member(group_id, group, &id, now, "member left");
        None
    }

    /// Expires members whose session ran out and finishes rebalances whose time is up.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.groups.lock();
        for (group_id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    // Members waiting in a join are kept by the rebalance deadline instead.
                    m.join_waiter.is_none()
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                remove_member(group_id, group, &id, now, "session timed out");
            }
            if group.state == GroupState::PreparingRebalance {
                maybe_complete_join(group_id, group, now);
            }
        }
    }

    /// Checks an OffsetCommit's member and generation (Kafka's rules for the classic protocol).
    pub fn authorize_commit(&self, group_id: &str, auth: &CommitAuth) -> Option<ResponseError> {
        if group_id.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            // Standalone consumers (no membership) commit with generation -1.
            return (auth.generation_id >= 0).then_some(ResponseError::IllegalGeneration);
        };
        if auth.generation_id < 0 && auth.member_id.is_empty() {
            return (group.state != GroupState::Empty).then_some(ResponseError::UnknownMemberId);
        }
        if group.state == GroupState::CompletingRebalance {
            return Some(ResponseError::RebalanceInProgress);
        }
        if let Some(instance) = &auth.group_instance_id {
            if group.static_members.get(instance) != Some(&auth.member_id) {
                return Some(ResponseError::FencedInstanceId);
            }
        }
        if !group.members.contains_key(&auth.member_id) {
            return Some(ResponseError::UnknownMemberId);
        }
        (auth.generation_id != group.generation).then_some(ResponseError::IllegalGeneration)
    }

    /// Records committed offsets once their write, which ended at `appended_at` in
    /// `__consumer_offsets`, is committed. A partition whose cached commit was written later
    /// keeps it: concurrent writes complete in any order, and the log's order decides.
    pub fn store_offsets(
        &self,
        group_id: &str,
        appended_at: i64,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) {
        let mut groups = self.groups.lock();
        let group = groups.entry(group_id.to_owned()).or_insert_with(Group::new);
        for (key, value) in offsets {
            if group
                .offsets_appended_at
                .get(&key)
                .is_some_and(|&cached| cached > appended_at)
            {
                continue;
            }
            group.offsets_appended_at.insert(key.clone(), appended_at);
            group.offsets.insert(key, value);
        }
    }

    /// Applies a record replayed from `__consumer_offsets` at start.
    pub fn load_offset(&self, group_id: &str, key: (String, i32), value: Option<CommittedOffset>) {
        let mut groups = self.groups.lock();
        match value {
            Some(v) => {
                groups
                    .entry(group_id.to_owned())
                    .or_insert_with(Group::new)
                    .offsets
                    .insert(key, v);
            }
            None => {
                if let Some(group) = groups.get_mut(group_id) {
                    group.remove_offset(&key);
                    if group.offsets.is_empty() && group.members.is_empty() {
                        groups.remove(group_id);
                    }
                }
            }
        }
    }

    /// Committed offsets of a group: the requested partitions, or all when `wanted` is None.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Vec<((String, i32), Option<CommittedOffset>)> {
        let groups = self.groups.lock();
        let offsets = groups.get(group_id).map(|g| &g.offsets);
        match wanted {
            Some(keys) => keys
                .iter()
                .map(|k| (k.clone(), offsets.and_then(|o| o.get(k)).cloned()))
                .collect(),
            None => {
                let mut all: Vec<_> = offsets
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        }
    }

    /// Every group, summarised.
    pub fn list(&self) -> Vec<GroupSummary> {
        let groups = self.groups.lock();
        let mut out: Vec<_> = groups.iter().map(|(id, g)| summarise(id, g)).collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// One group, summarised; None when unknown.
    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.groups
            .lock()
            .get(group_id)
            .map(|g| summarise(group_id, g))
    }

    /// Deletes an empty group; returns its committed offsets' keys (to tombstone).
    pub fn delete_group(&self, group_id: &str) -> Result<Vec<(String, i32)>, ResponseError> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if group.state != GroupState::Empty {
            return Err(ResponseError::NonEmptyGroup);
        }
        let group = groups.remove(group_id).expect("checked");
        let mut keys: Vec<_> = group.offsets.into_keys().collect();
        keys.sort();
        info!(group = group_id, offsets = keys.len(), "group deleted");
        Ok(keys)
    }

    /// OffsetDelete: removes committed offsets of partitions the group is not consuming. Returns
    /// per partition the error, if any; `Err` for group-level errors.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        keys: &[(String, i32)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        let subscribed = subscribed_topics(group);
        Ok(keys
            .iter()
            .map(|key| {
                if subscribed.contains(&key.0) {
                    Some(ResponseError::GroupSubscribedToTopic)
                } else {
                    group.remove_offset(key);
                    None
                }
            })
            .collect())
    }

    /// Removes committed offsets of empty groups older than `retention_ms`
    /// (`offsets.retention.minutes`); returns them per group, for tombstones.
    pub fn expire_offsets(
        &self,
        now_ms: i64,
        retention_ms: i64,
    ) -> Vec<(String, Vec<(String, i32)>)> {
        let mut groups = self.groups.lock();
        let mut expired = Vec::new();
        for (id, group) in groups.iter_mut() {
            if group.state != GroupState::Empty {
                continue;
            }
            let mut keys: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, v)| now_ms.saturating_sub(v.commit_timestamp) > retention_ms)
                .map(|(k, _)| k.clone())
                .collect();
            if keys.is_empty() {
                continue;
            }
            keys.sort();
            for key in &keys {
                group.remove_offset(key);
            }
            expired.push((id.clone(), keys));
        }
        groups.retain(|_, g| {
            !(g.state == GroupState::Empty && g.offsets.is_empty() && g.members.is_empty())
        });
        expired
    }

    /// Groups whose membership changed since it was last persisted ([`Self::take_snapshot`]).
    pub fn changed_memberships(&self) -> Vec<String> {
        let groups = self.groups.lock();
        groups
            .iter()
            .filter(|(_, g)| g.persist_pending)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The membership of `group_id` to persist in `__consumer_offsets`, if it changed since the
    /// last call.
    pub fn take_snapshot(&self, group_id: &str, now_ms: i64) -> Option<GroupSnapshot> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).filter(|g| g.persist_pending)?;
        group.persist_pending = false;
        Some(group.snapshot(now_ms))
    }

    /// Applies a group record replayed from `__consumer_offsets` at start: members come back
    /// with their generation and assignment and a fresh session, so they carry on without
    /// rejoining; a tombstone forgets the membership.
    pub fn load_group(&self, group_id: &str, snapshot: Option<GroupSnapshot>, now: Instant) {
        let mut groups = self.groups.lock();
        let Some(snapshot) = snapshot else {
            if let Some(group) = groups.get_mut(group_id) {
                *group = Group {
                    offsets: std::mem::take(&mut group.offsets),
                    offsets_appended_at: std::mem::take(&mut group.offsets_appended_at),
                    ..Group::new()
                };
                if group.offsets.is_empty() {
                    groups.remove(group_id);
                }
            }
            return;
        };
        let group = groups.entry(group_id.to_owned()).or_insert_with(Group::new);
        group.generation = snapshot.generation;
        group.protocol_type =
            (!snapshot.protocol_type.is_empty()).then_some(snapshot.protocol_type);
        group.protocol = snapshot.protocol.clone();
        group.leader = snapshot.leader;
        group.members.clear();
        group.static_members.clear();
        for m in snapshot.members {
            if let Some(instance) = &m.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            group.members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: timeout(m.session_timeout_ms),
                    rebalance_timeout: timeout(m.rebalance_timeout_ms),
                    protocols: vec![(
                        snapshot.protocol.clone().unwrap_or_default(),
                        m.subscription,
                    )],
                    assignment: m.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// Answers every waiting join and sync with `error` (the broker is stopping).
    pub fn shutdown(&self) {
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            for (id, member) in group.members.iter_mut() {
                if let Some(w) = member.join_waiter.take() {
                    let _ = w.send(JoinResult::error(ResponseError::NotCoordinator, id));
                }
                if let Some(w) = member.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(ResponseError::NotCoordinator));
                }
            }
        }
    }
}

fn summarise(id: &str, g: &Group) -> GroupSummary {
    let protocol = g.protocol.clone().unwrap_or_default();
    GroupSummary {
        group_id: id.to_owned(),
        state: g.state,
        protocol_type: g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
        protocol: protocol.clone(),
        members: g
            .members
            .iter()
            .map(|(mid, m)| MemberSummary {
                member_id: mid.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// Topics the members of a consumer group subscribe to (from their subscription metadata).
fn subscribed_topics(group: &Group) -> HashSet<String> {
    use sluice_protocol::messages::ConsumerProtocolSubscription;
    use sluice_protocol::Decodable;
    let mut topics = HashSet::new();
    if group.protocol_type.as_deref() != Some("consumer") {
        return topics;
    }
    for member in group.members.values() {
        for (_, metadata) in &member.protocols {
            let mut buf = metadata.clone();
            if buf.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            bytes::Buf::advance(&mut buf, 2);
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
                topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
            }
        }
    }
    topics
}

fn timeout(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn add_member(
    group: &mut Group,
    member_id: &str,
    req: &JoinRequest,
    now: Instant,
    waiter: Option<oneshot::Sender<JoinResult>>,
) {
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    group.members.insert(
        member_id.to_owned(),
        Member {
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: timeout(req.session_timeout_ms),
            rebalance_timeout: timeout(req.rebalance_timeout_ms),
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            last_heartbeat: now,
            join_waiter: waiter,
            sync_waiter: None,
        },
    );
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), member_id.to_owned());
    }
}

/// Enters PreparingRebalance: pending syncs are told to rejoin, members get until the largest
/// rebalance timeout to join again.
fn prepare_rebalance(group: &mut Group, now: Instant, reason: &str) {
    for member in group.members.values_mut() {
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::RebalanceInProgress));
        }
    }
    let longest = group
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or_default();
    group.rebalance_deadline = Some(now + longest);
    debug!(reason, generation = group.generation, "preparing rebalance");
    group.state = GroupState::PreparingRebalance;
}

fn remove_member(group_id: &str, group: &mut Group, member_id: &str, now: Instant, reason: &str) {
    let Some(member) = group.members.remove(member_id) else {
        return;
    };
    info!(
        group = group_id,
        member = member_id,
        reason,
        "member removed"
    );
    if let Some(instance) = &member.instance_id {
        if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
            group.static_members.remove(instance);
        }
    }
    if let Some(waiter) = member.join_waiter {
        let _ = waiter.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
    }
    if let Some(waiter) = member.sync_waiter {
        let _ = waiter.send(SyncResult::error(ResponseError::UnknownMemberId));
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now, reason);
            maybe_complete_join(group_id, group, now);
        }
        GroupState::PreparingRebalance => maybe_complete_join(group_id, group, now),
        GroupState::Empty => {}
    }
}

/// Completes the join phase when every member has rejoined (and a new group's initial delay is
/// over), or when the deadline passed (members that did not rejoin are removed).
fn maybe_complete_join(group_id: &str, group: &mut Group, now: Instant) {
    if group.state != GroupState::PreparingRebalance {
        return;
    }
    let all_joined = group.members.values().all(|m| m.join_waiter.is_some());
    let deadline_passed = group.rebalance_deadline.is_none_or(|d| now >= d);
    let delay_over = group.initial_delay_until.is_none_or(|d| now >= d);
    if !(deadline_passed || (all_joined && delay_over)) {
        return;
    }
    group.initial_delay_until = None;
    let missing: Vec<String> = group
        .members
        .iter()
        .filter(|(_, m)| m.join_waiter.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    for id in missing {
        if let Some(member) = group.members.remove(&id) {
            if let Some(instance) = &member.instance_id {
                group.static_members.remove(instance);
            }
            info!(group = group_id, member = %id, "member did not rejoin in time; removed");
        }
    }
    group.generation += 1;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.protocol = None;
        group.leader = None;
        group.rebalance_deadline = None;
        group.persist_pending = true;
        info!(
            group = group_id,
            generation = group.generation,
            "group is empty"
        );
        return;
    }
    group.protocol = Some(select_protocol(group));
    if group
        .leader
        .as_ref()
        .is_none_or(|l| !group.members.contains_key(l))
    {
        group.leader = group.members.keys().next().cloned();
    }
    group.state = GroupState::CompletingRebalance;
    group.rebalance_deadline = None;
    let protocol = group.protocol.clone().unwrap_or_default();
    let leader = group.leader.clone().unwrap_or_default();
    let everyone: Vec<(String, Option<String>, Bytes)> = group
        .members
        .iter()
        .map(|(id, m)| {
            let metadata = m
                .protocols
                .iter()
                .find(|(n, _)| *n == protocol)
                .map(|(_, md)| md.clone())
                .unwrap_or_default();
            (id.clone(), m.instance_id.clone(), metadata)
        })
        .collect();
    debug!(group = group_id, generation = group.generation, protocol = %protocol, members = everyone.len(), "rebalance joined");
    let (generation, protocol_type) = (group.generation, group.protocol_type.clone());
    for (id, member) in group.members.iter_mut() {
        // A member's session restarts when its join is answered.
        member.last_heartbeat = now;
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult {
                error: None,
                generation_id: generation,
                protocol_type: protocol_type.clone(),
                protocol_name: Some(protocol.clone()),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
            });
        }
    }
}

/// The protocol every member supports that most members list first among those.
fn select_protocol(group: &Group) -> String {
    let candidates: Vec<&String> = group
        .members
        .values()
        .next()
        .map(|m| m.protocols.iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let common: Vec<&String> = candidates
        .into_iter()
        .filter(|name| {
            group
                .members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
        })
        .collect();
    let mut votes: Vec<(usize, &String)> = common.iter().map(|n| (0, *n)).collect();
    for member in group.members.values() {
        if let Some((first, _)) = member.protocols.iter().find(|(n, _)| common.contains(&n)) {
            if let Some(v) = votes.iter_mut().find(|(_, n)| *n == first) {
                v.0 += 1;
            }
        }
    }
    // Most votes wins; ties go to the protocol listed first by the first member.
    let best = votes.iter().map(|(c, _)| *c).max().unwrap_or(0);
    votes
        .iter()
        .find(|(c, _)| *c == best)
        .map(|(_, n)| (*n).clone())
        .unwrap_or_default()
}

fn current_generation(group: &Group, member_id: &str) -> JoinResult {
    JoinResult {
        error: None,
        generation_id: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_owned(),
        members: Vec::new(),
    }
}

fn assignment_of(group: &Group, member_id: &str) -> SyncResult {
    SyncResult {
        error: None,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        assignment: group
            .members
            .get(member_id)
            .map(|m| m.assignment.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(delay_ms: u64) -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig {
            initial_rebalance_delay: Duration::from_millis(delay_ms),
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 300_000,
        })
    }

    fn request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_owned),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![
                ("cooperative-sticky".into(), Bytes::from_static(b"md")),
                ("range".into(), Bytes::new()),
            ],
            require_known_member_id: true,
        }
    }

    fn now_answer<T>(p: Pending<T>) -> T {
        match p {
            Pending::Now(t) => t,
            Pending::Wait(_) => panic!("expected an immediate answer"),
        }
    }

    fn waited<T>(p: Pending<T>) -> oneshot::Receiver<T> {
        match p {
            Pending::Wait(rx) => rx,
            Pending::Now(_) => panic!("expected to wait"),
        }
    }

    /// A follower's SyncGroup during CompletingRebalance: it waits for the leader's.
    fn sync_waits(p: SyncPending) -> oneshot::Receiver<SyncResult> {
        match p {
            SyncPending::Wait(rx) => rx,
            _ => panic!("expected to wait for the leader"),
        }
    }

    fn sync_now(p: SyncPending) -> SyncResult {
        match p {
            SyncPending::Now(result) => result,
            _ => panic!("expected an immediate answer"),
        }
    }

    /// The leader's SyncGroup whose assignment is then stored successfully.
    fn leader_sync(
        c: &GroupCoordinator,
        leader: &str,
        assignments: Vec<(String, Bytes)>,
        t: Instant,
    ) -> oneshot::Receiver<SyncResult> {
        match c.sync("g", 1, leader, (None, None), assignments) {
            SyncPending::Store { generation, answer } => {
                assert!(c.assignment_to_store("g", generation, 0).is_some());
                c.complete_sync("g", generation, None, t);
                answer
            }
            _ => panic!("the leader's assignment is stored first"),
        }
    }

    /// Joins a new dynamic member through MEMBER_ID_REQUIRED; returns its id and join receiver.
    fn join_new(c: &GroupCoordinator, t: Instant) -> (String, oneshot::Receiver<JoinResult>) {
        let first = now_answer(c.join(request("", None), t));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let rx = waited(c.join(request(&first.member_id, None), t));
        (first.member_id, rx)
    }

    #[test]
    fn two_members_join_sync_and_become_stable() {
        let c = coordinator(100);
        let t = Instant::now();
        let (a, mut ra) = join_new(&c, t);
        let (b, mut rb) = join_new(&c, t);
        // The initial delay holds the first generation back.
        c.tick(t + Duration::from_millis(50));
        assert!(ra.try_recv().is_err());
        c.tick(t + Duration::from_millis(150));
        let (ja, jb) = (ra.try_recv().unwrap(), rb.try_recv().unwrap());
        assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
        assert_eq!(ja.protocol_name.as_deref(), Some("cooperative-sticky"));
        let leader = ja.leader.clone();
        let (leader_rx, follower) = if leader == a { (ja, &b) } else { (jb, &a) };
        assert_eq!(
            leader_rx.members.len(),
            2,
            "the leader gets everyone's metadata"
        );
        let mut follower_sync = sync_waits(c.sync("g", 1, follower, (None, None), vec![]));
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ];
        let mine = leader_sync(&c, &leader, assignments, t).try_recv().unwrap();
        let theirs = follower_sync.try_recv().unwrap();
        assert_eq!(mine.error, None);
        assert_eq!(theirs.assignment.len(), 1);
        assert_eq!(c.heartbeat("g", 1, &a, t), None);
        assert_eq!(
            c.heartbeat("g", 0, &a, t),
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.heartbeat("g", 1, "nobody", t),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(c.list()[0].state, GroupState::Stable);
    }

    #[test]
    fn an_expired_session_triggers_a_rebalance_without_the_member() {
        let c = coordinator(0);
        let t = Instant::now();
        let (a, mut ra) = join_new(&c, t);
        c.tick(t);
        let ja = ra.try_recv().unwrap();
        assert_eq!(ja.leader, a);
        leader_sync(&c, &a, vec![(a.clone(), Bytes::new())], t);
        let (b, mut rb) = join_new(&c, t);
        // a is told to rejoin by its heartbeat, but never does; its session ends.
        assert_eq!(
            c.heartbeat("g", 1, &a, t),
            Some(ResponseError::RebalanceInProgress)
        );
        c.tick(t + Duration::from_secs(11));
        let jb = rb.try_recv().unwrap();
        assert_eq!((jb.generation_id, jb.leader.as_str()), (2, b.as_str()));
        assert_eq!(
            c.heartbeat("g", 2, &a, t),
            Some(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_static_member_rejoins_without_a_rebalance() {
        let c = coordinator(0);
        let t = Instant::now();
        let mut r = waited(c.join(request("", Some("host-1")), t));
        c.tick(t);
        let j = r.try_recv().unwrap();
        leader_sync(
            &c,
            &j.member_id,
            vec![(j.member_id.clone(), Bytes::from_static(b"x"))],
            t,
        );
        // Restarted: no member id, same instance id and metadata.
        let again = now_answer(c.join(request("", Some("host-1")), t));
        assert_eq!(again.error, None);
        assert_eq!(again.generation_id, 1);
        assert_ne!(again.member_id, j.member_id);
        let sync = sync_now(c.sync("g", 1, &again.member_id, (None, None), vec![]));
        assert_eq!(sync.assignment, Bytes::from_static(b"x"));
        assert_eq!(
            c.heartbeat("g", 1, &j.member_id, t),
            Some(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn commits_check_membership_and_generation() {
        let c = coordinator(0);
        let simple = CommitAuth {
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        };
        assert_eq!(c.authorize_commit("free", &simple), None);
        let t = Instant::now();
        let (a, _ra) = join_new(&c, t);
        c.tick(t);
        assert_eq!(
            c.authorize_commit("g", &simple),
            Some(ResponseError::UnknownMemberId)
        );
        let stale = CommitAuth {
            generation_id: 0,
            member_id: a.clone(),
            group_instance_id: None,
        };
        assert_eq!(
            c.authorize_commit("g", &stale),
            Some(ResponseError::RebalanceInProgress)
        );
        leader_sync(&c, &a, vec![], t);
        assert_eq!(
            c.authorize_commit("g", &stale),
            Some(ResponseError::IllegalGeneration)
        );
        let good = CommitAuth {
            generation_id: 1,
            ..stale
        };
        assert_eq!(c.authorize_commit("g", &good), None);
        assert_eq!(c.leave("g", &a, None, t), None);
        assert_eq!(c.list()[0].state, GroupState::Empty);
    }

    #[test]
    fn commits_are_cached_in_the_order_they_were_written() {
        let c = coordinator(0);
        let key = ("t".to_owned(), 0);
        let offset = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        };
        // Written at log offsets 10 then 11; the later write's completion comes first.
        c.store_offsets("g", 11, vec![(key.clone(), offset(2))]);
        c.store_offsets("g", 10, vec![(key.clone(), offset(1))]);
        let cached = |c: &GroupCoordinator| c.fetch_offsets("g", None)[0].1.clone();
        assert_eq!(cached(&c).map(|v| v.offset), Some(2));
        c.store_offsets("g", 12, vec![(key.clone(), offset(3))]);
        assert_eq!(cached(&c).map(|v| v.offset), Some(3));
        // A deleted offset takes any later commit again.
        assert_eq!(
            c.delete_offsets("g", std::slice::from_ref(&key)),
            Ok(vec![None])
        );
        c.store_offsets("g", 5, vec![(key, offset(4))]);
        assert_eq!(cached(&c).map(|v| v.offset), Some(4));
    }

    #[test]
    fn empty_groups_lose_old_offsets_and_can_be_deleted() {
        let c = coordinator(0);
        let offset = |ts| CommittedOffset {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: ts,
        };
        c.store_offsets(
            "old",
            0,
            vec![
                (("t".into(), 0), offset(1_000)),
                (("t".into(), 1), offset(9_000)),
            ],
        );
        let expired = c.expire_offsets(10_000, 5_000);
        assert_eq!(expired, vec![("old".to_owned(), vec![("t".to_owned(), 0)])]);
        assert_eq!(c.fetch_offsets("old", None).len(), 1);
        assert_eq!(c.delete_group("old"), Ok(vec![("t".to_owned(), 1)]));
        assert_eq!(c.delete_group("old"), Err(ResponseError::GroupIdNotFound));
        let t = Instant::now();
        let (_a, _ra) = join_new(&c, t);
        assert_eq!(c.delete_group("g"), Err(ResponseError::NonEmptyGroup));
    }

    /// Two members joined and synced up to the leader's SyncGroup: (leader, follower, the
    /// follower's sync answer, the leader's pending sync).
    fn rebalance_awaiting_store(
        c: &GroupCoordinator,
        t: Instant,
    ) -> (String, String, oneshot::Receiver<SyncResult>, SyncPending) {
        let (a, mut ra) = join_new(c, t);
        let (b, _rb) = join_new(c, t);
        c.tick(t + Duration::from_millis(150));
        let leader = ra.try_recv().unwrap().leader;
        let follower = if leader == a { b } else { a };
        let follower_sync = sync_waits(c.sync("g", 1, &follower, (None, None), vec![]));
        let assignments = vec![
            (leader.clone(), Bytes::from_static(b"L")),
            (follower.clone(), Bytes::from_static(b"F")),
        ];
        let pending = c.sync("g", 1, &leader, (None, None), assignments);
        (leader, follower, follower_sync, pending)
    }

    #[test]
    fn a_rebalance_completes_only_once_its_assignment_is_stored() {
        let c = coordinator(100);
        let t = Instant::now();
        let (leader, follower, mut follower_sync, pending) = rebalance_awaiting_store(&c, t);
        let SyncPending::Store {
            generation,
            mut answer,
        } = pending
        else {
            panic!("the leader's assignment is stored before anyone is answered");
        };
        // Nobody is answered while the assignment is being written.
        assert!(answer.try_recv().is_err());
        assert!(follower_sync.try_recv().is_err());
        assert_eq!(
            c.describe("g").unwrap().state,
            GroupState::CompletingRebalance
        );
        let stored = c.assignment_to_store("g", generation, 7).unwrap();
        assert_eq!(stored.generation, 1);
        let mut assigned: Vec<(String, Bytes)> = stored
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect();
        assigned.sort();
        let mut expected = vec![
            (leader.clone(), Bytes::from_static(b"L")),
            (follower.clone(), Bytes::from_static(b"F")),
        ];
        expected.sort();
        assert_eq!(assigned, expected);
        // Stored: Stable, and each member gets its own assignment.
        c.complete_sync("g", generation, None, t);
        assert_eq!(c.describe("g").unwrap().state, GroupState::Stable);
        assert_eq!(
            answer.try_recv().unwrap().assignment,
            Bytes::from_static(b"L")
        );
        assert_eq!(
            follower_sync.try_recv().unwrap().assignment,
            Bytes::from_static(b"F")
        );
        // Nothing new to persist on the timer: the write happened before the answer.
        assert!(c.changed_memberships().is_empty());
    }

    #[test]
    fn a_failed_store_answers_everyone_with_the_error_and_rebalances() {
        let c = coordinator(100);
        let t = Instant::now();
        let (_, follower, mut follower_sync, pending) = rebalance_awaiting_store(&c, t);
        let SyncPending::Store {
            generation,
            mut answer,
        } = pending
        else {
            panic!("expected a store");
        };
        c.complete_sync(
            "g",
            generation,
            Some(ResponseError::CoordinatorNotAvailable),
            t,
        );
        assert_eq!(
            answer.try_recv().unwrap().error,
            Some(ResponseError::CoordinatorNotAvailable)
        );
        assert_eq!(
            follower_sync.try_recv().unwrap().error,
            Some(ResponseError::CoordinatorNotAvailable)
        );
        assert_eq!(
            c.describe("g").unwrap().state,
            GroupState::PreparingRebalance
        );
        assert_eq!(
            c.heartbeat("g", 1, &follower, t),
            Some(ResponseError::RebalanceInProgress)
        );
    }

    #[test]
    fn a_group_that_moved_on_during_the_store_is_left_alone() {
        let c = coordinator(100);
        let t = Instant::now();
        let (_, follower, mut follower_sync, pending) = rebalance_awaiting_store(&c, t);
        let SyncPending::Store { generation, .. } = pending else {
            panic!("expected a store");
        };
        // The follower leaves before the write: the group rebalances without it.
        assert_eq!(c.leave("g", &follower, None, t), None);
        assert_eq!(
            follower_sync.try_recv().unwrap().error,
            Some(ResponseError::UnknownMemberId)
        );
        assert!(c.assignment_to_store("g", generation, 0).is_none());
        let state = c.describe("g").unwrap().state;
        c.complete_sync("g", generation, None, t);
        assert_eq!(c.describe("g").unwrap().state, state);
        assert_ne!(state, GroupState::Stable);
    }
}

//! The transaction coordinator's state machine (Kafka's classic protocol, with KIP-890's
//! partition verification): per transactional id its producer id and epoch, state, timeout and
//! partitions. Pure state and checks live here, under one mutex that is never held across I/O;
//! [`driver`] persists records to `__transaction_state` and writes the markers.
//!
//! Lock order: a partition's log lock may be held while this mutex is taken (verification during
//! an append), never the other way round.

pub mod driver;
pub(crate) mod marker_channel;
pub mod state_topic;

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use sluice_protocol::error::ResponseError;

pub use state_topic::{TxnRecord, TxnState, TXN_STATE_TOPIC};

/// Settings of the coordinator (Kafka's broker configs).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the largest timeout a producer may ask for (15 minutes).
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: idle transactional ids are forgotten after this long.
    pub id_expiration_ms: i64,
}

#[derive(Debug, Clone)]
struct TxnMeta {
    record: TxnRecord,
    /// Markers of a prepared commit or abort are being written.
    completing: bool,
    /// Partitions of AddPartitionsToTxn requests still being persisted. Every record persisted
    /// includes them, so concurrent adds never persist a smaller set than an earlier one; writes
    /// are verified against `record.partitions` only (persisted and installed).
    adding: BTreeSet<(String, i32)>,
}

impl TxnMeta {
    fn new(record: TxnRecord) -> Self {
        TxnMeta {
            record,
            completing: false,
            adding: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    txns: HashMap<String, TxnMeta>,
    by_producer: HashMap<i64, String>,
}

/// What InitProducerId must do after the state check.
#[derive(Debug)]
pub enum InitStep {
    /// Persist this record and answer with its producer id and epoch.
    Ready(TxnRecord),
    /// An ongoing transaction is aborted first, with the bumped epoch (fencing the old producer):
    /// persist the prepared record, write the markers, then answer with its id and epoch.
    Fence(TxnRecord),
}

/// What EndTxn must do after the state check.
#[derive(Debug)]
pub enum EndStep {
    /// A retry of a finished EndTxn: answer success.
    AlreadyDone,
    /// Persist this prepared record, write its markers, then complete.
    Complete(TxnRecord),
}

/// The largest epoch handed out before a producer gets a new id (Kafka's rule).
const MAX_EPOCH: i16 = i16::MAX - 1;

/// The transaction coordinator of this broker.
#[derive(Debug)]
pub struct TxnCoordinator {
    config: TxnConfig,
    inner: Mutex<Inner>,
}

fn busy(meta: &TxnMeta) -> bool {
    meta.completing
        || matches!(
            meta.record.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
}

/// The producer id and epoch a request carries must be the transaction's current ones.
fn check_producer(meta: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
    if meta.record.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if meta.record.producer_epoch != epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(())
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        TxnCoordinator {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Applies a record replayed from `__transaction_state` at start.
    pub fn load(&self, id: &str, record: Option<TxnRecord>) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.txns.remove(id) {
            inner.by_producer.remove(&old.record.producer_id);
        }
        if let Some(record) = record {
            inner.by_producer.insert(record.producer_id, id.to_owned());
            inner.txns.insert(id.to_owned(), TxnMeta::new(record));
        }
    }

    /// KIP-890 verification: is (`topic`, `partition`) part of the ongoing transaction of
    /// `producer_id` at `epoch`? Asked by a partition before the first transactional write of a
    /// transaction.
    pub fn verify(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), String> {
        let inner = self.inner.lock();
        let meta = inner
            .by_producer
            .get(&producer_id)
            .and_then(|id| inner.txns.get(id))
            .ok_or_else(|| format!("producer {producer_id} has no transaction"))?;
        let r = &meta.record;
        if r.producer_epoch != epoch {
            return Err(format!(
                "producer {producer_id} epoch {epoch} is not the transaction's epoch {}",
                r.producer_epoch
            ));
        }
        if r.state != TxnState::Ongoing || meta.completing {
            return Err(format!(
                "the transaction of producer {producer_id} is {}, not ongoing",
                r.state.name()
            ));
        }
        if !r.partitions.contains(&(topic.to_owned(), partition)) {
            return Err(format!(
                "{topic}-{partition} was not added to the transaction of producer {producer_id}"
            ));
        }
        Ok(())
    }

    /// InitProducerId for a transactional id: a new producer id, or the next epoch of the
    /// existing one; an ongoing transaction is aborted (fenced) first. `expected` is the
    /// (producer id, epoch) a KIP-360 client sends to bump its own epoch.
    pub fn init_producer(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        allocate: impl FnOnce() -> Result<i64, ResponseError>,
        now_ms: i64,
    ) -> Result<InitStep, ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let mut inner = self.inner.lock();
        let Some(meta) = inner.txns.get(id) else {
            if expected.is_some() {
                return Err(ResponseError::InvalidProducerIdMapping);
            }
            let record = TxnRecord {
                producer_id: allocate()?,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now_ms,
                start_ms: -1,
            };
            return Ok(InitStep::Ready(record));
        };
        if let Some((pid, epoch)) = expected {
            if pid != meta.record.producer_id || epoch != meta.record.producer_epoch {
                return Err(ResponseError::ProducerFenced);
            }
        }
        if busy(meta) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let mut record = meta.record.clone();
        record.timeout_ms = timeout_ms;
        record.last_update_ms = now_ms;
        if record.producer_epoch >= MAX_EPOCH {
            inner.by_producer.remove(&record.producer_id);
            record.producer_id = allocate()?;
            record.producer_epoch = 0;
        } else {
            record.producer_epoch += 1;
        }
        if record.state == TxnState::Ongoing {
            record.state = TxnState::PrepareAbort;
            let meta = TxnMeta {
                completing: true,
                ..TxnMeta::new(record.clone())
            };
            inner.by_producer.insert(record.producer_id, id.to_owned());
            inner.txns.insert(id.to_owned(), meta);
            return Ok(InitStep::Fence(record));
        }
        record.state = TxnState::Empty;
        record.partitions.clear();
        record.start_ms = -1;
        Ok(InitStep::Ready(record))
    }

    /// Installs a record once it is persisted (a new producer, a bumped epoch, a completed
    /// transaction).
    pub fn install(&self, id: &str, record: TxnRecord) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.txns.get(id) {
            if old.record.producer_id != record.producer_id {
                let old_pid = old.record.producer_id;
                inner.by_producer.remove(&old_pid);
            }
        }
        inner.by_producer.insert(record.producer_id, id.to_owned());
        inner.txns.insert(id.to_owned(), TxnMeta::new(record));
    }

    /// Installs a persisted [`Self::add_partitions`] record: its partitions now accept the
    /// transaction's writes. Adds that finished out of order merge; a record made stale by an
    /// epoch bump or an EndTxn meanwhile is ignored.
    pub fn install_added(&self, id: &str, record: TxnRecord) {
        let mut inner = self.inner.lock();
        let Some(meta) = inner.txns.get_mut(id) else {
            return;
        };
        if meta.record.producer_id != record.producer_id
            || meta.record.producer_epoch != record.producer_epoch
            || busy(meta)
        {
            return;
        }
        for p in &record.partitions {
            meta.adding.remove(p);
        }
        let current = &mut meta.record;
        if current.state == TxnState::Ongoing {
            current.partitions.extend(record.partitions);
            current.last_update_ms = current.last_update_ms.max(record.last_update_ms);
        } else {
            *current = record;
        }
    }

    /// Forgets in-flight adds whose record could not be persisted.
    pub fn add_failed(&self, id: &str, partitions: &[(String, i32)]) {
        if let Some(meta) = self.inner.lock().txns.get_mut(id) {
            for p in partitions {
                meta.adding.remove(p);
            }
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the record with `partitions` added (and those of
    /// adds still in flight), to persist and then [`Self::install_added`]; `None` when they are
    /// all in the transaction already.
    pub fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnRecord>, ResponseError> {
        let mut inner = self.inner.lock();
        let meta = inner
            .txns
            .get_mut(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(meta, producer_id, epoch)?;
        if busy(meta) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let mut record = meta.record.clone();
        if record.state != TxnState::Ongoing {
            record.state = TxnState::Ongoing;
            record.partitions.clear();
            record.start_ms = now_ms;
        } else if partitions.iter().all(|p| record.partitions.contains(p)) {
            return Ok(None);
        }
        meta.adding.extend(partitions.iter().cloned());
        record.partitions.extend(meta.adding.iter().cloned());
        record.last_update_ms = now_ms;
        Ok(Some(record))
    }

    /// Checks a TxnOffsetCommit's producer against the transaction.
    pub fn check_offset_commit(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<(), ResponseError> {
        let inner = self.inner.lock();
        let meta = inner
            .txns
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(meta, producer_id, epoch)
    }

    /// EndTxn: moves an ongoing transaction to PrepareCommit or PrepareAbort (from now on its
    /// partitions refuse further writes of it).
    pub fn end(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndStep, ResponseError> {
        let mut inner = self.inner.lock();
        let meta = inner
            .txns
            .get_mut(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(meta, producer_id, epoch)?;
        if busy(meta) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        match (meta.record.state, commit) {
            (TxnState::Ongoing, _) => {
                meta.record.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                meta.record.last_update_ms = now_ms;
                meta.completing = true;
                Ok(EndStep::Complete(meta.record.clone()))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndStep::AlreadyDone)
            }
            // An abort of a transaction that never added a partition is a no-op (librdkafka
            // and the Java client send it after some errors).
            (TxnState::Empty, false) => Ok(EndStep::AlreadyDone),
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Marks a prepared transaction whose markers failed to be written as waiting for a retry.
    pub fn completion_failed(&self, id: &str) {
        if let Some(meta) = self.inner.lock().txns.get_mut(id) {
            meta.completing = false;
        }
    }

    /// The completed form of a prepared record: CompleteCommit/CompleteAbort, no partitions.
    pub fn completed(prepared: &TxnRecord, now_ms: i64) -> TxnRecord {
        let mut record = prepared.clone();
        record.state = if prepared.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        record.partitions.clear();
        record.last_update_ms = now_ms;
        record
    }

    /// Transactions to finish now: ongoing ones past their timeout (aborted with a bumped epoch,
    /// so the producer is fenced, as Kafka does) and prepared ones nobody is completing (after
    /// a restart or a failed marker write). Each is marked as being completed.
    pub fn due(&self, now_ms: i64) -> Vec<(String, TxnRecord)> {
        let mut inner = self.inner.lock();
        let mut due = Vec::new();
        for (id, meta) in inner.txns.iter_mut() {
            if meta.completing {
                continue;
            }
            let r = &mut meta.record;
            match r.state {
                TxnState::Ongoing
                    if now_ms.saturating_sub(r.start_ms) > i64::from(r.timeout_ms) =>
                {
                    tracing::info!(transactional_id = %id, producer_id = r.producer_id, "transaction timed out; aborting it");
                    if r.producer_epoch < MAX_EPOCH {
                        r.producer_epoch += 1;
                    }
                    r.state = TxnState::PrepareAbort;
                    r.last_update_ms = now_ms;
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {}
                _ => continue,
            }
            meta.completing = true;
            due.push((id.clone(), meta.record.clone()));
        }
        due
    }

    /// Forgets transactional ids idle for `transactional.id.expiration.ms`: no transaction open
    /// or being completed, last changed that long ago. Returns them, to write their tombstones.
    pub fn expire(&self, now_ms: i64) -> Vec<String> {
        let mut inner = self.inner.lock();
        let expiration = self.config.id_expiration_ms;
        let expired: Vec<(String, i64)> = inner
            .txns
            .iter()
            .filter(|(_, m)| {
                !busy(m)
                    && matches!(
                        m.record.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    )
                    && now_ms.saturating_sub(m.record.last_update_ms) > expiration
            })
            .map(|(id, m)| (id.clone(), m.record.producer_id))
            .collect();
        for (id, producer_id) in &expired {
            inner.txns.remove(id);
            inner.by_producer.remove(producer_id);
        }
        expired.into_iter().map(|(id, _)| id).collect()
    }

    /// One transactional id's metadata.
    pub fn describe(&self, id: &str) -> Option<TxnRecord> {
        self.inner.lock().txns.get(id).map(|m| m.record.clone())
    }

    /// Every transactional id, sorted.
    pub fn list(&self) -> Vec<(String, TxnRecord)> {
        let inner = self.inner.lock();
        let mut all: Vec<_> = inner
            .txns
            .iter()
            .map(|(id, m)| (id.clone(), m.record.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> TxnCoordinator {
        TxnCoordinator::new(TxnConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 1_000_000,
        })
    }

    fn init(c: &TxnCoordinator, id: &str) -> TxnRecord {
        match c.init_producer(id, 60_000, None, || Ok(7), 0).unwrap() {
            InitStep::Ready(r) => {
                c.install(id, r.clone());
                r
            }
            InitStep::Fence(r) => panic!("unexpected fence {r:?}"),
        }
    }

    /// Adds partition 0 of `topic` to transaction "t" of producer 7 epoch 0, persisted.
    fn add(c: &TxnCoordinator, topic: &str, now_ms: i64) {
        let added = c
            .add_partitions("t", 7, 0, &[(topic.to_owned(), 0)], now_ms)
            .unwrap()
            .expect("a new partition");
        c.install_added("t", added);
    }

    #[test]
    fn a_transaction_goes_through_its_states() {
        let c = coordinator();
        let r = init(&c, "t");
        assert_eq!((r.producer_id, r.producer_epoch), (7, 0));
        assert!(c.verify(7, 0, "a", 0).is_err(), "nothing added yet");
        let added = c
            .add_partitions("t", 7, 0, &[("a".into(), 0)], 10)
            .unwrap()
            .unwrap();
        assert_eq!(added.state, TxnState::Ongoing);
        c.install_added("t", added);
        assert!(c.verify(7, 0, "a", 0).is_ok());
        assert!(c.verify(7, 0, "a", 1).is_err());
        assert!(c.verify(7, 1, "a", 0).is_err());
        assert!(c
            .add_partitions("t", 7, 0, &[("a".into(), 0)], 11)
            .unwrap()
            .is_none());
        let EndStep::Complete(prepared) = c.end("t", 7, 0, true, 12).unwrap() else {
            panic!("expected a completion");
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert!(c.verify(7, 0, "a", 0).is_err(), "no writes once prepared");
        assert_eq!(
            c.end("t", 7, 0, true, 12).unwrap_err(),
            ResponseError::ConcurrentTransactions
        );
        c.install("t", TxnCoordinator::completed(&prepared, 13));
        assert!(matches!(
            c.end("t", 7, 0, true, 14),
            Ok(EndStep::AlreadyDone)
        ));
        assert_eq!(
            c.end("t", 7, 0, false, 14).unwrap_err(),
            ResponseError::InvalidTxnState
        );
    }

    #[test]
    fn concurrent_adds_persist_and_install_every_partition() {
        let c = coordinator();
        init(&c, "t");
        let first = c
            .add_partitions("t", 7, 0, &[("a".into(), 0)], 10)
            .unwrap()
            .unwrap();
        let second = c
            .add_partitions("t", 7, 0, &[("b".into(), 0)], 11)
            .unwrap()
            .unwrap();
        assert_eq!(
            second.partitions.len(),
            2,
            "the later record includes the earlier add"
        );
        assert!(c.verify(7, 0, "a", 0).is_err(), "not persisted yet");
        c.install_added("t", second);
        c.install_added("t", first);
        assert!(c.verify(7, 0, "a", 0).is_ok());
        assert!(c.verify(7, 0, "b", 0).is_ok());
        assert_eq!(c.describe("t").unwrap().partitions.len(), 2);
    }

    #[test]
    fn idle_ids_expire_but_open_transactions_do_not() {
        let c = coordinator();
        let r = init(&c, "idle");
        assert!(
            c.expire(r.last_update_ms + 1_000_000).is_empty(),
            "not idle long enough"
        );
        assert_eq!(
            c.expire(r.last_update_ms + 1_000_001),
            vec!["idle".to_owned()]
        );
        assert!(c.describe("idle").is_none());
        init(&c, "t");
        add(&c, "a", 10);
        assert!(
            c.expire(i64::MAX).is_empty(),
            "an ongoing transaction is never expired"
        );
    }

    #[test]
    fn a_new_instance_fences_the_old_one() {
        let c = coordinator();
        init(&c, "t");
        add(&c, "a", 10);
        let InitStep::Fence(fenced) = c.init_producer("t", 60_000, None, || Ok(8), 20).unwrap()
        else {
            panic!("an ongoing transaction is aborted first");
        };
        assert_eq!((fenced.producer_id, fenced.producer_epoch), (7, 1));
        assert_eq!(fenced.state, TxnState::PrepareAbort);
        // The old instance is fenced at once, even while the abort is being written.
        assert_eq!(
            c.add_partitions("t", 7, 0, &[("a".into(), 1)], 21)
                .unwrap_err(),
            ResponseError::ProducerFenced
        );
        assert_eq!(
            c.add_partitions("t", 7, 1, &[("a".into(), 1)], 21)
                .unwrap_err(),
            ResponseError::ConcurrentTransactions
        );
        c.install("t", TxnCoordinator::completed(&fenced, 22));
        assert_eq!(
            c.add_partitions("t", 7, 0, &[("a".into(), 1)], 23)
                .unwrap_err(),
            ResponseError::ProducerFenced
        );
        assert_eq!(
            c.end("t", 8, 1, true, 23).unwrap_err(),
            ResponseError::InvalidProducerIdMapping
        );
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch_and_bad_timeouts_are_refused() {
        let c = coordinator();
        assert_eq!(
            c.init_producer("t", 900_001, None, || Ok(1), 0)
                .unwrap_err(),
            ResponseError::InvalidTransactionTimeout
        );
        init(&c, "t");
        add(&c, "a", 1_000);
        assert!(c.due(2_000).is_empty());
        let due = c.due(1_000 + 60_001);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.state, TxnState::PrepareAbort);
        assert_eq!(due[0].1.producer_epoch, 1);
        assert!(c.due(1_000_000).is_empty(), "already being completed");
        c.completion_failed("t");
        assert_eq!(c.due(1_000_000).len(), 1, "retried after a failure");
    }
}

//! Offsets committed inside transactions (TxnOffsetCommit): held per producer and
//! `__consumer_offsets` partition until the transaction's marker lands there, then applied to the
//! groups (commit) or dropped (abort).

use std::collections::HashMap;

use super::CommittedOffset;

/// One pending commit: group, (topic, partition), value.
pub(crate) type PendingOffset = (String, (String, i32), CommittedOffset);

/// Pending transactional offset commits by (producer id, `__consumer_offsets` partition).
#[derive(Debug, Default)]
pub(crate) struct PendingTxnOffsets {
    by_txn: HashMap<(i64, i32), Vec<PendingOffset>>,
}

impl PendingTxnOffsets {
    pub(crate) fn add(
        &mut self,
        producer_id: i64,
        offsets_partition: i32,
        offsets: Vec<PendingOffset>,
    ) {
        self.by_txn
            .entry((producer_id, offsets_partition))
            .or_default()
            .extend(offsets);
    }

    /// Removes and returns what `producer_id` committed through `offsets_partition`.
    pub(crate) fn take(&mut self, producer_id: i64, offsets_partition: i32) -> Vec<PendingOffset> {
        self.by_txn
            .remove(&(producer_id, offsets_partition))
            .unwrap_or_default()
    }

    /// Whether an open transaction holds a commit for this group's partition (OffsetFetch with
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub(crate) fn has(&self, group: &str, key: &(String, i32)) -> bool {
        self.by_txn
            .values()
            .flatten()
            .any(|(g, k, _)| g == group && k == key)
    }
}

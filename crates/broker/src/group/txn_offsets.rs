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

    /// Removes the last pending commit of each of `keys` by `producer_id` for `group` (those of a
    /// refused write; earlier commits of the same keys in the transaction stay).
    pub(crate) fn remove(
        &mut self,
        producer_id: i64,
        offsets_partition: i32,
        group: &str,
        keys: &[(String, i32)],
    ) {
        let Some(pending) = self.by_txn.get_mut(&(producer_id, offsets_partition)) else {
            return;
        };
        for key in keys {
            if let Some(at) = pending.iter().rposition(|(g, k, _)| g == group && k == key) {
                pending.remove(at);
            }
        }
        if pending.is_empty() {
            self.by_txn.remove(&(producer_id, offsets_partition));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        }
    }

    #[test]
    fn pending_commits_are_held_per_transaction_and_taken_back_on_refusal() {
        let mut pending = PendingTxnOffsets::default();
        let key = ("t".to_owned(), 0);
        pending.add(7, 3, vec![("g".into(), key.clone(), offset(5))]);
        pending.add(7, 3, vec![("g".into(), key.clone(), offset(9))]);
        assert!(pending.has("g", &key));
        assert!(!pending.has("other", &key));
        // A refused second write takes back only its own commit.
        pending.remove(7, 3, "g", std::slice::from_ref(&key));
        let taken = pending.take(7, 3);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].2.offset, 5);
        assert!(!pending.has("g", &key));
        assert!(pending.take(7, 3).is_empty());
    }
}

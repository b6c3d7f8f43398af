//! A partition leader's view of its followers (Kafka's ISR protocol, DESIGN.md section 5): each
//! follower's log end offset as its fetches report it, when it was last caught up, the high
//! watermark (the smallest log end offset in the ISR) and the ISR changes to ask the controller
//! for. Pure: no I/O, no clock (times are passed in), so the simulation tests drive this code.

use std::collections::BTreeMap;

/// One follower's progress as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end offset (its last fetch offset); -1 until it fetches.
    pub log_end_offset: i64,
    /// When the follower last had everything the leader had (ms); Kafka's lastCaughtUpTimeMs.
    pub last_caught_up_ms: i64,
    /// The leader's log end offset and the time at the follower's previous fetch.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

/// The leader's replication state for one partition at one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    pub me: i32,
    pub leader_epoch: i32,
    /// The ISR as committed in the metadata.
    pub isr: Vec<i32>,
    pub replicas: Vec<i32>,
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// Never moves backwards while this node leads.
    pub high_watermark: i64,
    /// The log offset where this leader epoch began: a follower rejoins the ISR only once it
    /// has reached it (it then holds everything of earlier epochs the leader kept).
    pub epoch_start_offset: i64,
    /// The ISR this leader has proposed and not heard back about (one proposal at a time, as
    /// Kafka's AlterPartition). Its members already count for the high watermark (Kafka's
    /// "maximal ISR", KIP-497/841): otherwise the HW could pass a follower the metadata is about
    /// to call in sync, and that follower, once elected, would lead without records already
    /// acknowledged.
    pub in_flight: Option<Vec<i32>>,
}

impl LeaderState {
    /// Leadership at `leader_epoch` starts: followers count as caught up now (Kafka resets them
    /// likewise, so a new leader does not shrink the ISR before anyone could fetch).
    pub fn new(
        me: i32,
        leader_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        high_watermark: i64,
        epoch_start_offset: i64,
        now_ms: i64,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                (
                    *r,
                    FollowerProgress {
                        log_end_offset: -1,
                        last_caught_up_ms: now_ms,
                        last_fetch_leader_leo: -1,
                        last_fetch_ms: now_ms,
                    },
                )
            })
            .collect();
        LeaderState {
            me,
            leader_epoch,
            isr,
            replicas,
            followers,
            high_watermark,
            epoch_start_offset,
            in_flight: None,
        }
    }

    /// The metadata's ISR or replicas changed (at the same leader epoch).
    pub fn update_assignment(&mut self, replicas: Vec<i32>, isr: Vec<i32>, now_ms: i64) {
        for r in &replicas {
            if *r != self.me {
                self.followers.entry(*r).or_insert(FollowerProgress {
                    log_end_offset: -1,
                    last_caught_up_ms: now_ms,
                    last_fetch_leader_leo: -1,
                    last_fetch_ms: now_ms,
                });
            }
        }
        self.followers.retain(|r, _| replicas.contains(r));
        self.replicas = replicas;
        self.isr = isr;
    }

    /// The ISR change this leader proposed has been answered (committed or refused) and the
    /// metadata applied: the ISR alone counts again, and the next change may be proposed.
    pub fn isr_change_settled(&mut self) {
        self.in_flight = None;
    }

    /// A follower fetched from `fetch_offset` while the leader's log ended at `leader_leo`.
    /// Returns the ISR to propose when the follower should rejoin it.
    pub fn on_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
    ) -> Option<Vec<i32>> {
        let progress = self.followers.get_mut(&replica)?;
        if fetch_offset >= leader_leo {
            progress.last_caught_up_ms = now_ms;
        } else if fetch_offset >= progress.last_fetch_leader_leo
            && progress.last_fetch_leader_leo >= 0
        {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_leader_leo = leader_leo;
        progress.last_fetch_ms = now_ms;
        progress.log_end_offset = fetch_offset;
        if self.in_flight.is_none()
            && !self.isr.contains(&replica)
            && fetch_offset >= self.high_watermark
            && fetch_offset >= self.epoch_start_offset
        {
            let mut isr = self.isr.clone();
            isr.push(replica);
            self.in_flight = Some(isr.clone());
            return Some(isr);
        }
        None
    }

    /// Recomputes the high watermark from the ISR's log end offsets (the leader's is
    /// `leader_leo`); returns it. It never decreases, and never passes the leader's log end.
    pub fn advance_high_watermark(&mut self, leader_leo: i64) -> i64 {
        let mut hw = leader_leo;
        for r in self.isr.iter().chain(self.in_flight.iter().flatten()) {
            if *r == self.me {
                continue;
            }
            let leo = self.followers.get(r).map_or(-1, |p| p.log_end_offset);
            hw = hw.min(leo);
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
        }
        debug_assert!(self.high_watermark <= leader_leo.max(self.high_watermark));
        self.high_watermark
    }

    /// The ISR without followers that have not caught up for `lag_max_ms`, when any must go
    /// (the leader itself never leaves) and no other change is in flight; it is then in flight.
    pub fn shrink(&mut self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        if self.in_flight.is_some() {
            return None;
        }
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| *r != self.me)
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_none_or(|p| now_ms - p.last_caught_up_ms > lag_max_ms)
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        self.in_flight = Some(isr.clone());
        Some(isr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_is_the_isr_minimum_and_never_decreases() {
        let mut s = LeaderState::new(1, 0, vec![1, 2, 3], vec![1, 2, 3], 0, 0, 0);
        assert_eq!(s.advance_high_watermark(10), 0, "followers unknown");
        s.on_fetch(2, 10, 10, 1);
        assert_eq!(s.advance_high_watermark(10), 0);
        s.on_fetch(3, 7, 10, 1);
        assert_eq!(s.advance_high_watermark(10), 7);
        // Shrinking the ISR to leader + 2 lets the HW reach 2's offset.
        s.update_assignment(vec![1, 2, 3], vec![1, 2], 2);
        assert_eq!(s.advance_high_watermark(10), 10);
        // A follower reporting less (it truncated) never moves the HW back.
        s.update_assignment(vec![1, 2, 3], vec![1, 2, 3], 3);
        assert_eq!(s.advance_high_watermark(12), 10);
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_return() {
        let mut s = LeaderState::new(1, 0, vec![1, 2, 3], vec![1, 2, 3], 0, 0, 0);
        // 2 keeps up with every fetch, 3 stops fetching.
        for t in 1..=40 {
            s.on_fetch(2, t * 10 - 5, t * 10, t * 1000);
            s.on_fetch(2, t * 10, t * 10, t * 1000 + 1);
        }
        assert_eq!(s.shrink(40_001, 30_000), Some(vec![1, 2]));
        s.update_assignment(vec![1, 2, 3], vec![1, 2], 40_002);
        s.isr_change_settled();
        assert_eq!(s.advance_high_watermark(400), 400);
        // 3 comes back behind the HW: not yet; at the HW: rejoin.
        assert_eq!(s.on_fetch(3, 100, 400, 41_000), None);
        assert_eq!(s.on_fetch(3, 400, 400, 41_001), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_always_slightly_behind_under_load_stays_in_sync() {
        let mut s = LeaderState::new(1, 0, vec![1, 2], vec![1, 2], 0, 0, 0);
        // Each fetch reaches what the leader had at the previous fetch, never the current end.
        for t in 1..100 {
            s.on_fetch(2, (t - 1) * 10, t * 10, t * 1000);
        }
        assert_eq!(s.shrink(100_000, 30_000), None);
    }

    #[test]
    fn a_follower_being_added_holds_the_high_watermark() {
        let mut s = LeaderState::new(1, 0, vec![1, 2, 3], vec![1, 2], 10, 0, 0);
        s.on_fetch(2, 20, 20, 1);
        assert_eq!(s.advance_high_watermark(20), 20);
        // 3 reaches the HW and is proposed; until the answer, it holds the HW back.
        assert_eq!(s.on_fetch(3, 20, 25, 2), Some(vec![1, 2, 3]));
        s.on_fetch(2, 25, 25, 3);
        assert_eq!(s.advance_high_watermark(25), 20);
        // Refused (or not yet applied) and settled: the ISR alone decides again.
        s.isr_change_settled();
        assert_eq!(s.advance_high_watermark(25), 25);
        // Proposed again and committed: 3 is in the ISR and counts as a member.
        assert_eq!(s.on_fetch(3, 25, 30, 4), Some(vec![1, 2, 3]));
        // Only one change at a time: nothing else is proposed meanwhile.
        assert_eq!(s.shrink(1_000_000, 10), None);
        s.update_assignment(vec![1, 2, 3], vec![1, 2, 3], 5);
        s.isr_change_settled();
        assert!(s.in_flight.is_none());
    }

    #[test]
    fn rejoin_waits_for_the_epoch_start() {
        let mut s = LeaderState::new(1, 4, vec![1, 2], vec![1], 50, 80, 0);
        assert_eq!(s.on_fetch(2, 60, 90, 1), None);
        assert_eq!(s.on_fetch(2, 80, 90, 2), Some(vec![1, 2]));
    }
}

//! A follower's decision of where to cut its log before fetching from a (new) leader
//! (KIP-101/279), as a pure function so the simulation tests drive the same rule as the fetcher.

/// What the leader answered to OffsetForLeaderEpoch for the follower's latest epoch: the
/// largest epoch it has at or below that one, and where that epoch ends in its log (-1/-1 when
/// it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderAnswer {
    pub epoch: i32,
    pub end_offset: i64,
}

/// The offset to truncate the follower's log to (its log end when nothing diverges).
///
/// - The leader knows the follower's latest epoch `asked`: the logs agree up to where that epoch
///   ends on the leader (or the follower's own end, if shorter).
/// - The leader's history has a smaller epoch there: the follower keeps what it has of that
///   epoch (`own_end_of(epoch)`), no more than the leader has.
/// - The leader knows no epoch that early: only the committed part (`own_high_watermark`) is
///   known to be shared.
pub fn truncation_offset(
    asked: i32,
    answer: LeaderAnswer,
    own_log_end: i64,
    own_high_watermark: i64,
    own_end_of: impl Fn(i32) -> i64,
) -> i64 {
    let target = if answer.epoch < 0 || answer.end_offset < 0 {
        own_high_watermark
    } else if answer.epoch == asked {
        answer.end_offset
    } else {
        answer.end_offset.min(own_end_of(answer.epoch))
    };
    target.min(own_log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreeing_logs_are_not_cut() {
        let answer = LeaderAnswer {
            epoch: 3,
            end_offset: 100,
        };
        assert_eq!(truncation_offset(3, answer, 80, 50, |_| 80), 80);
    }

    #[test]
    fn a_longer_tail_of_the_same_epoch_is_cut() {
        let answer = LeaderAnswer {
            epoch: 3,
            end_offset: 90,
        };
        assert_eq!(truncation_offset(3, answer, 100, 50, |_| 100), 90);
    }

    #[test]
    fn an_epoch_the_leader_never_had_is_cut_back_to_the_shared_one() {
        // The follower wrote epoch 5 as a leader that lost; the leader went from 4 to 6.
        let answer = LeaderAnswer {
            epoch: 4,
            end_offset: 70,
        };
        let own_end_of = |e: i32| if e == 4 { 60 } else { 100 };
        assert_eq!(truncation_offset(5, answer, 100, 40, own_end_of), 60);
    }

    #[test]
    fn no_common_epoch_keeps_only_the_committed_part() {
        let answer = LeaderAnswer {
            epoch: -1,
            end_offset: -1,
        };
        assert_eq!(truncation_offset(2, answer, 100, 40, |_| 100), 40);
    }
}

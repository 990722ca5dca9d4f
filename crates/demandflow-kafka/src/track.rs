//! Which offsets of each assigned partition are in flight, and how far the
//! acknowledged prefix reaches: the bookkeeping behind every commit.
//!
//! Pure data, no client: the poller thread and the acknowledger share it
//! under one mutex, and the unit tests below drive it directly.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use demandflow_messages::Failure;

/// A partition: its topic and number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PartitionId {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
}

/// How a settled message counts for the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done,
}

/// One assigned partition.
#[derive(Debug)]
struct Partition {
    /// Told apart from an earlier assignment of the same partition, so that a
    /// late acknowledgement of a revoked assignment changes nothing.
    epoch: u64,
    /// Emitted messages in offset order, from the first one not yet known
    /// done. Empty once the partition is held at a failed message: nothing
    /// after it can be committed in this assignment.
    in_flight: VecDeque<(i64, Outcome)>,
    /// Messages emitted and not yet acknowledged (ok or failed).
    unacked: usize,
    /// The offset of a failed message the commit must not pass.
    held_at: Option<i64>,
}

/// What a failed message does to the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnFailure {
    Hold,
    CommitPast,
}

/// The in-flight messages of one consumer, by partition.
#[derive(Debug, Default)]
pub(crate) struct Tracks {
    partitions: HashMap<PartitionId, Partition>,
    /// Token → (partition, epoch, offset) of every emitted, unacknowledged message.
    tokens: HashMap<u64, (PartitionId, u64, i64)>,
    next_token: u64,
    next_epoch: u64,
    /// Offsets to commit (the next offset to read, Kafka's convention), by
    /// partition, not yet handed to the client.
    to_commit: HashMap<PartitionId, i64>,
}

/// What settling a group of acknowledgements did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Failed messages that now hold their partition's commit.
    pub(crate) held: u64,
    /// Acknowledgements of partitions no longer (or differently) assigned.
    pub(crate) stale: u64,
}

impl Tracks {
    /// Starts tracking `id` for a new assignment; returns its epoch.
    pub(crate) fn assign(&mut self, id: PartitionId) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.partitions.insert(
            id,
            Partition {
                epoch,
                in_flight: VecDeque::new(),
                unacked: 0,
                held_at: None,
            },
        );
        epoch
    }

    /// The epoch of `id`'s current assignment.
    pub(crate) fn epoch(&self, id: &PartitionId) -> Option<u64> {
        self.partitions.get(id).map(|p| p.epoch)
    }

    /// Records that the message at `offset` of `id` (assignment `epoch`) is
    /// emitted; returns its token, or `None` if that assignment is gone.
    pub(crate) fn emit(&mut self, id: &PartitionId, epoch: u64, offset: i64) -> Option<u64> {
        let partition = self.partitions.get_mut(id).filter(|p| p.epoch == epoch)?;
        if partition.held_at.is_none() {
            partition.in_flight.push_back((offset, Outcome::Pending));
        }
        partition.unacked += 1;
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(token, (id.clone(), epoch, offset));
        Some(token)
    }

    /// Settles acknowledged tokens and moves each partition's commit to the
    /// end of its contiguous done prefix.
    pub(crate) fn settle(
        &mut self,
        successful: &[u64],
        failed: &[(u64, Failure)],
        policy: OnFailure,
    ) -> Settled {
        let mut settled = Settled::default();
        let outcomes = successful
            .iter()
            .map(|t| (*t, None))
            .chain(failed.iter().map(|(t, f)| (*t, Some(f))));
        for (token, failure) in outcomes {
            let Some((id, epoch, offset)) = self.tokens.remove(&token) else {
                continue;
            };
            let Some(partition) = self.partitions.get_mut(&id).filter(|p| p.epoch == epoch) else {
                settled.stale += 1;
                continue;
            };
            partition.unacked -= 1;
            // A message the topology lost to a shutdown was not handled: it
            // holds the commit whatever the policy says.
            let holds = match failure {
                None => false,
                Some(Failure::Shutdown | Failure::Dropped) => true,
                Some(_) => policy == OnFailure::Hold,
            };
            if failure.is_some() {
                settled.failed += 1;
            } else {
                settled.ok += 1;
            }
            if partition.held_at.is_some_and(|h| h <= offset) {
                continue;
            }
            if holds {
                settled.held += 1;
                partition.held_at = Some(offset);
                // Nothing at or after the failed offset can be committed now.
                while partition
                    .in_flight
                    .back()
                    .is_some_and(|(o, _)| *o >= offset)
                {
                    partition.in_flight.pop_back();
                }
            } else if let Some(slot) = partition.in_flight.iter_mut().find(|(o, _)| *o == offset) {
                slot.1 = Outcome::Done;
            }
            let mut next = None;
            while let Some((offset, Outcome::Done)) = partition.in_flight.front().copied() {
                partition.in_flight.pop_front();
                next = Some(offset + 1);
            }
            if let Some(next) = next {
                self.to_commit.insert(id, next);
            }
        }
        settled
    }

    /// The offsets to commit since the last call.
    pub(crate) fn take_commits(&mut self) -> Vec<(PartitionId, i64)> {
        let mut commits: Vec<_> = self.to_commit.drain().collect();
        commits.sort();
        commits
    }

    /// Messages of `ids` emitted and not yet acknowledged.
    pub(crate) fn unacked(&self, ids: &[PartitionId]) -> usize {
        ids.iter()
            .filter_map(|id| self.partitions.get(id))
            .map(|p| p.unacked)
            .sum()
    }

    /// Stops tracking `ids`; their later acknowledgements are stale. Returns
    /// the commits still owed for them.
    pub(crate) fn revoke(&mut self, ids: &[PartitionId]) -> Vec<(PartitionId, i64)> {
        let mut owed = Vec::new();
        for id in ids {
            self.partitions.remove(id);
            if let Some(offset) = self.to_commit.remove(id) {
                owed.push((id.clone(), offset));
            }
        }
        owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> PartitionId {
        PartitionId {
            topic: "t".into(),
            partition: n,
        }
    }

    fn emit_range(
        tracks: &mut Tracks,
        id: &PartitionId,
        offsets: std::ops::Range<i64>,
    ) -> Vec<u64> {
        let epoch = tracks.epoch(id).unwrap();
        offsets
            .map(|o| tracks.emit(id, epoch, o).unwrap())
            .collect()
    }

    #[test]
    fn commits_only_the_contiguous_done_prefix() {
        let mut tracks = Tracks::default();
        tracks.assign(p(0));
        let t = emit_range(&mut tracks, &p(0), 10..15);
        // 11 and 12 finish before 10: nothing can be committed yet.
        tracks.settle(&[t[1], t[2]], &[], OnFailure::Hold);
        assert!(tracks.take_commits().is_empty());
        // 10 finishes: the prefix 10..=12 is done, the next to read is 13.
        tracks.settle(&[t[0]], &[], OnFailure::Hold);
        assert_eq!(tracks.take_commits(), vec![(p(0), 13)]);
        tracks.settle(&[t[4], t[3]], &[], OnFailure::Hold);
        assert_eq!(tracks.take_commits(), vec![(p(0), 15)]);
        assert_eq!(tracks.unacked(&[p(0)]), 0);
    }

    #[test]
    fn a_held_failure_stops_the_commit_for_good() {
        let mut tracks = Tracks::default();
        tracks.assign(p(0));
        let t = emit_range(&mut tracks, &p(0), 0..6);
        let failed = [(t[2], Failure::Failed("bad".into()))];
        let settled = tracks.settle(&[t[0], t[1], t[3], t[5]], &failed, OnFailure::Hold);
        assert_eq!((settled.ok, settled.failed, settled.held), (4, 1, 1));
        assert_eq!(tracks.take_commits(), vec![(p(0), 2)]);
        // Later messages finish; the commit stays before the failed one.
        tracks.settle(&[t[4]], &[], OnFailure::Hold);
        let more = emit_range(&mut tracks, &p(0), 6..8);
        tracks.settle(&more, &[], OnFailure::Hold);
        assert!(tracks.take_commits().is_empty());
        assert_eq!(tracks.unacked(&[p(0)]), 0);
    }

    #[test]
    fn commit_past_moves_over_handled_failures_but_not_shutdowns() {
        let mut tracks = Tracks::default();
        tracks.assign(p(0));
        let t = emit_range(&mut tracks, &p(0), 0..4);
        let failed = [(t[1], Failure::Failed("bad".into()))];
        tracks.settle(&[t[0]], &failed, OnFailure::CommitPast);
        assert_eq!(tracks.take_commits(), vec![(p(0), 2)]);
        let failed = [(t[2], Failure::Shutdown)];
        tracks.settle(&[t[3]], &failed, OnFailure::CommitPast);
        assert!(tracks.take_commits().is_empty());
    }

    #[test]
    fn acknowledgements_of_a_revoked_assignment_are_stale() {
        let mut tracks = Tracks::default();
        tracks.assign(p(0));
        tracks.assign(p(1));
        let old = emit_range(&mut tracks, &p(0), 0..2);
        let other = emit_range(&mut tracks, &p(1), 0..1);
        tracks.settle(&other, &[], OnFailure::Hold);
        assert_eq!(tracks.revoke(&[p(0), p(1)]), vec![(p(1), 1)]);
        // Assigned again: the old tokens must not advance the new assignment.
        tracks.assign(p(0));
        let new = emit_range(&mut tracks, &p(0), 0..2);
        let settled = tracks.settle(&old, &[], OnFailure::Hold);
        assert_eq!(settled.stale, 2);
        assert!(tracks.take_commits().is_empty());
        assert_eq!(tracks.unacked(&[p(0)]), 2);
        tracks.settle(&new, &[], OnFailure::Hold);
        assert_eq!(tracks.take_commits(), vec![(p(0), 2)]);
    }
}

//! Counters of a source, for a metrics backend to poll.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of a [`KafkaSource`](crate::KafkaSource), shared by its copies.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_errors: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) revoke_timeouts: AtomicU64,
    pub(crate) client_errors: AtomicU64,
    pub(crate) pauses: AtomicU64,
    pub(crate) closed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SourceMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SourceMetrics {
            received: get(&self.received),
            acked: get(&self.acked),
            failed: get(&self.failed),
            held: get(&self.held),
            stale: get(&self.stale),
            malformed: get(&self.malformed),
            commits: get(&self.commits),
            commit_errors: get(&self.commit_errors),
            revoked: get(&self.revoked),
            revoke_timeouts: get(&self.revoke_timeouts),
            client_errors: get(&self.client_errors),
            pauses: get(&self.pauses),
            closed: get(&self.closed),
        }
    }
}

/// A snapshot of a source's counters ([`KafkaSource::metrics`](crate::KafkaSource::metrics)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceMetrics {
    /// Records fetched from the brokers.
    pub received: u64,
    /// Messages acknowledged as successful.
    pub acked: u64,
    /// Messages acknowledged as failed (malformed ones included).
    pub failed: u64,
    /// Failed messages that stopped their partition's commit (see
    /// [`FailurePolicy`](crate::FailurePolicy)).
    pub held: u64,
    /// Acknowledgements that arrived after their partition was revoked (their
    /// records are delivered again to the partition's next owner).
    pub stale: u64,
    /// Records the decoder rejected.
    pub malformed: u64,
    /// Offset commits handed to the client (one per partition and commit).
    pub commits: u64,
    /// Commits the group coordinator refused or that failed.
    pub commit_errors: u64,
    /// Partitions given up in a rebalance or at close.
    pub revoked: u64,
    /// Revocations that stopped waiting for in-flight messages at the timeout.
    pub revoke_timeouts: u64,
    /// Errors the client reported while fetching (it retries on its own).
    pub client_errors: u64,
    /// Times a copy paused its partitions because it was full and its
    /// demand stalled.
    pub pauses: u64,
    /// Copies whose consumer has left the group and closed.
    pub closed: u64,
}

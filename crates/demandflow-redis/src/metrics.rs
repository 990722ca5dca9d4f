//! Counters of a source, for a metrics backend to poll.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of a [`RedisSource`](crate::RedisSource), shared by its copies.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) read: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) left_pending: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) connection_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SourceMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SourceMetrics {
            read: get(&self.read),
            claimed: get(&self.claimed),
            acked: get(&self.acked),
            left_pending: get(&self.left_pending),
            dead_lettered: get(&self.dead_lettered),
            malformed: get(&self.malformed),
            connection_errors: get(&self.connection_errors),
            reconnects: get(&self.reconnects),
        }
    }
}

/// A snapshot of a source's counters ([`RedisSource::metrics`](crate::RedisSource::metrics)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceMetrics {
    /// New entries read with XREADGROUP.
    pub read: u64,
    /// Entries claimed from other (or earlier) consumers with XAUTOCLAIM.
    pub claimed: u64,
    /// Entries acknowledged with XACK (the count Redis confirmed).
    pub acked: u64,
    /// Failed entries left in the pending list for redelivery.
    pub left_pending: u64,
    /// Failed entries moved to the dead-letter stream and acknowledged.
    pub dead_lettered: u64,
    /// Entries the decoder rejected (then handled as failed).
    pub malformed: u64,
    /// Commands that failed for want of a connection (each is retried).
    pub connection_errors: u64,
    /// Connections opened again after an error.
    pub reconnects: u64,
}

//! The sender's counters, for a metrics backend to poll.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters, shared by every pipeline of one sender.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) pipelines: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) records_sent: AtomicU64,
    pub(crate) send_retries: AtomicU64,
    pub(crate) batches_failed: AtomicU64,
    pub(crate) records_failed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            pipelines: get(&self.pipelines),
            batches_sent: get(&self.batches_sent),
            records_sent: get(&self.records_sent),
            send_retries: get(&self.send_retries),
            batches_failed: get(&self.batches_failed),
            records_failed: get(&self.records_failed),
        }
    }
}

/// A snapshot of a sender's counters, all event types together
/// ([`Analytics::metrics`](crate::Analytics::metrics)).
///
/// Every record accepted by `record` or `try_record` ends in exactly one of
/// `records_sent` and `records_failed` once its pipeline is done with it
/// (after [`Analytics::shutdown`](crate::Analytics::shutdown), all are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Pipelines started: one per event type recorded.
    pub pipelines: u64,
    /// Batches the sink stored.
    pub batches_sent: u64,
    /// Records the sink stored.
    pub records_sent: u64,
    /// Sends that failed and were tried again.
    pub send_retries: u64,
    /// Batches given up after the last retry.
    pub batches_failed: u64,
    /// Records not delivered: their batch was given up after the last retry
    /// (the sink failed or panicked each time, or encoding panicked), or the
    /// shutdown timeout cut them off. Each batch given up is logged at ERROR.
    pub records_failed: u64,
}

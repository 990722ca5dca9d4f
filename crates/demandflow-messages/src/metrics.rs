//! Counters a metrics backend can read.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::ack::AckSet;
use crate::handler::BatchTrigger;

/// The live counters of one topology, shared by its stages.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    ok: AtomicU64,
    failed: AtomicU64,
    shutdown: AtomicU64,
    by_size: AtomicU64,
    by_timeout: AtomicU64,
    by_flush: AtomicU64,
    /// Messages a processor has received and the layer has not acknowledged yet.
    in_flight: AtomicI64,
}

impl Metrics {
    pub(crate) fn entered(&self, n: usize) {
        self.in_flight.fetch_add(n as i64, Relaxed);
    }

    /// Sends `acks` and counts them.
    pub(crate) fn ack(&self, acks: &mut AckSet) {
        if acks.is_empty() {
            return;
        }
        acks.send();
        if acks.ok > 0 {
            self.ok.fetch_add(acks.ok, Relaxed);
        }
        if acks.failed > 0 {
            self.failed.fetch_add(acks.failed, Relaxed);
        }
        if acks.shutdown > 0 {
            self.shutdown.fetch_add(acks.shutdown, Relaxed);
        }
        self.in_flight
            .fetch_sub((acks.ok + acks.failed) as i64, Relaxed);
        acks.ok = 0;
        acks.failed = 0;
        acks.shutdown = 0;
    }

    pub(crate) fn batch(&self, trigger: BatchTrigger) {
        match trigger {
            BatchTrigger::Size => &self.by_size,
            BatchTrigger::Timeout => &self.by_timeout,
            BatchTrigger::Flush => &self.by_flush,
        }
        .fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            messages_ok: self.ok.load(Relaxed),
            messages_failed: self.failed.load(Relaxed),
            messages_failed_on_shutdown: self.shutdown.load(Relaxed),
            batches_by_size: self.by_size.load(Relaxed),
            batches_by_timeout: self.by_timeout.load(Relaxed),
            batches_by_flush: self.by_flush.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed).max(0) as u64,
        }
    }
}

/// A snapshot of a topology's counters ([`Topology::metrics`](crate::Topology::metrics)).
///
/// Messages counted here were acknowledged by the layer; a message lost outside
/// its hands (dropped in a stopped stage's mailbox) is acknowledged by its
/// [`AckRef`](crate::AckRef) and shows up as `in_flight` never coming down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Messages acknowledged as successful.
    pub messages_ok: u64,
    /// Messages acknowledged as failed, for any reason.
    pub messages_failed: u64,
    /// Of `messages_failed`, those failed because the topology stopped first.
    pub messages_failed_on_shutdown: u64,
    /// Batches emitted because they were full.
    pub batches_by_size: u64,
    /// Batches emitted by their timeout.
    pub batches_by_timeout: u64,
    /// Batches emitted by a flush (a message's request, a drain, the end of the sources).
    pub batches_by_flush: u64,
    /// Messages received by processors and not yet acknowledged.
    pub in_flight: u64,
}

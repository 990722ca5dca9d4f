//! Where batches go: the sink trait, and the null sink of the example.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::event::Record;

/// A destination for batches of records: one call per batch.
///
/// What the sender guarantees to you:
/// - `records` is a non-empty batch of at most `batch_size` records of one
///   event type, in the order they were recorded;
/// - at most `max_in_flight` calls for one stream run at once (calls for
///   different streams are independent);
/// - a call that fails is retried with the same records after a back-off, up
///   to the retry limit, then reported (see [`Metrics`](crate::Metrics)).
///
/// What you guarantee back: return `Ok` only once the whole batch is stored,
/// and write a batch in as few round trips as the store allows. A retried
/// batch may be written twice if a failed call had in fact stored part of it:
/// make what reads the stream tolerate duplicates, or the store reject them.
pub trait Sink: Send + Sync + 'static {
    /// Writes `records` to `stream`.
    fn send(
        &self,
        stream: &str,
        records: &[Record],
    ) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// A [`Sink::send`] failed; the message says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("send failed: {0}")]
pub struct SendError(pub String);

/// A sink that stores nothing and takes 100–250 ms per send (uniformly drawn),
/// like a remote API: for the example and for trying the sender without a
/// service. It counts what it was given.
#[derive(Debug)]
pub struct NullSink {
    latency: (Duration, Duration),
    batches: AtomicU64,
    records: AtomicU64,
}

impl Default for NullSink {
    fn default() -> Self {
        NullSink::new()
    }
}

impl NullSink {
    /// A null sink with 100–250 ms of latency per send.
    pub fn new() -> Self {
        NullSink::with_latency(Duration::from_millis(100), Duration::from_millis(250))
    }

    /// A null sink whose sends take between `min` and `max` (both included).
    pub fn with_latency(min: Duration, max: Duration) -> Self {
        NullSink {
            latency: (min, max.max(min)),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
        }
    }

    /// Batches sent so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Records sent so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

impl Sink for NullSink {
    async fn send(&self, _stream: &str, records: &[Record]) -> Result<(), SendError> {
        let (min, max) = self.latency;
        let latency = rand::rng().random_range(min..=max);
        tokio::time::sleep(latency).await;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A shared sink is a sink: keep an `Arc` to read a sink's counts while the
/// sender uses it.
impl<S: Sink> Sink for std::sync::Arc<S> {
    fn send(
        &self,
        stream: &str,
        records: &[Record],
    ) -> impl Future<Output = Result<(), SendError>> + Send {
        (**self).send(stream, records)
    }
}

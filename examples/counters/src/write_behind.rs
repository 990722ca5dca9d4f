//! The write-behind pipeline: a demandflow messages topology whose messages
//! are the keys that changed, batched by count or time, each batch written as
//! one upsert of the keys' latest values.
//!
//! ```text
//! increment ──(first change since the key's last write)──> push key
//!   DummySource ──> processor ──> batcher ──────────────> batch handler
//!                                 max_updates + 1 keys,   take each key's value from
//!                                 or `interval` after     memory, upsert them all,
//!                                 the batch's first key   retry with back-off
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow::messages::{
    AckRef, BatchInfo, BatchTrigger, Batcher, DummySource, Message, MessageHandler, Processors,
    StartTopologyError, Topology, TopologyDrain,
};

use crate::counters::Counters;
use crate::store::Store;

/// The first wait after a failed flush; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts of one flush.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The share of the interval kept for the write: a batch is cut at
/// `interval - interval / WRITE_SHARE` after its first key.
pub const WRITE_SHARE: u32 = 10;

/// What the write-behind pipeline has done so far.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Keys changed and not yet written (a key counts once per change after
    /// its last write).
    pub pending: AtomicU64,
    /// Flushes written because `max_updates + 1` keys were pending.
    pub by_size: AtomicU64,
    /// Flushes written because `interval` passed since the batch's first key.
    pub by_interval: AtomicU64,
    /// Flushes written at shutdown.
    pub by_shutdown: AtomicU64,
    /// Rows written by flushes.
    pub rows: AtomicU64,
    /// Flush attempts that failed (and were retried).
    pub failures: AtomicU64,
    /// The longest successful write so far, in microseconds.
    pub max_write_us: AtomicU64,
}

impl FlushStats {
    /// Waits until every changed key has been written, checking every 2 ms for
    /// at most `limit`; how long that took, or `None` if it had not caught up.
    pub async fn caught_up(&self, limit: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        loop {
            let waited = started.elapsed();
            if self.pending.load(Ordering::Relaxed) == 0 {
                return Some(waited);
            }
            if waited > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The batch handler: takes the batch's keys from memory and writes them.
struct Flusher {
    counters: Arc<Counters>,
    store: Store,
    stats: Arc<FlushStats>,
}

impl MessageHandler<Box<str>> for Flusher {
    async fn handle_message(&self, _key: &mut Message<Box<str>>) {
        // Every key goes to the default batcher, under the default batch key.
    }

    async fn handle_batch(
        &self,
        keys: Vec<Message<Box<str>>>,
        info: &BatchInfo,
    ) -> Vec<Message<Box<str>>> {
        // The values are read now, not when the keys were pushed: each is the
        // latest, and marking the key clean means its next change is pushed
        // again and lands in a later batch. One batch handler writes batches
        // one after another, so a later value is never overwritten by an
        // earlier one.
        let rows: Arc<[(String, i64)]> = keys
            .iter()
            .filter_map(|key| Some((key.data.to_string(), self.counters.take(&key.data)?)))
            .collect();
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = std::time::Instant::now();
            match self.store.upsert(rows.clone()).await {
                Ok(()) => {
                    let took = started.elapsed().as_micros() as u64;
                    self.stats.max_write_us.fetch_max(took, Ordering::Relaxed);
                    break;
                }
                Err(error) => {
                    // Keep the values and try again: nothing is lost, and a
                    // newer value of these keys waits behind this batch.
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, rows = rows.len(), retry_in = ?backoff, "flush failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let counter = match info.trigger {
            BatchTrigger::Size => &self.stats.by_size,
            BatchTrigger::Timeout => &self.stats.by_interval,
            BatchTrigger::Flush => &self.stats.by_shutdown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats
            .rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.stats
            .pending
            .fetch_sub(keys.len() as u64, Ordering::Relaxed);
        keys
    }
}

/// The running write-behind pipeline.
#[derive(Clone)]
pub struct WriteBehind {
    topology: Topology<Box<str>>,
    stats: Arc<FlushStats>,
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBehind")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl WriteBehind {
    /// Starts the pipeline: batches of `max_updates + 1` keys, or whatever is
    /// pending shortly before `interval` has passed since a batch's first key,
    /// written to `store`.
    ///
    /// `interval` bounds how long a change waits to be written: the batcher
    /// cuts a batch at [`WRITE_SHARE`] short of it, leaving the rest for the
    /// write itself, so a change made just as a batch opened is in the
    /// database within `interval` (as long as a write takes less than a tenth
    /// of it; `counters-bench` reports the longest write).
    ///
    /// # Errors
    ///
    /// The topology's, if it cannot start.
    pub async fn start(
        counters: Arc<Counters>,
        store: Store,
        max_updates: usize,
        interval: Duration,
    ) -> Result<WriteBehind, StartTopologyError> {
        let stats = Arc::new(FlushStats::default());
        let flusher = Flusher {
            counters,
            store,
            stats: stats.clone(),
        };
        let topology = Topology::builder("counters-write-behind", flusher)
            .source(1, |_| DummySource::new())
            .processors(Processors::new(1).max_demand(1_000))
            .batcher(
                Batcher::new("default")
                    .batch_size(max_updates.saturating_add(1))
                    .batch_timeout(interval - interval / WRITE_SHARE),
            )
            .start()
            .await?;
        Ok(WriteBehind { topology, stats })
    }

    /// Hands a key that has just become dirty to the pipeline. Call it once
    /// per [`Added::newly_dirty`](crate::Added::newly_dirty).
    pub fn push(&self, key: &str) {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let message = Message::new(Box::<str>::from(key), AckRef::noop());
        if self.topology.push_messages(vec![message]).is_err() {
            // Only once shutdown has begun, when no request is served any more.
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(key, "write-behind pipeline stopped: change not written");
        }
    }

    /// What the pipeline has done so far.
    pub fn stats(&self) -> &FlushStats {
        &self.stats
    }

    /// Writes everything pending and stops (a flush in progress finishes,
    /// retries included, until `deadline`).
    pub async fn drain(&self, deadline: Duration) -> TopologyDrain {
        self.topology.drain(deadline).await
    }
}

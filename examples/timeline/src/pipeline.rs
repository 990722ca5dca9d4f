//! The ingest pipeline: a demandflow messages topology from the collectors to
//! the store consumers, behind a bounded push handle.
//!
//! ```text
//! HTTP / gRPC ──try_push──> collectors ──> aggregators ──> window ──> store consumers
//!  (refused when            (source        (processors,    (batcher:  (batch handlers: group by
//!   `capacity` events        copies)        partitioned     ≤ N events message, one upsert per
//!   are not yet stored)                     by message)     or ≤ 1 s)  message, one transaction
//!                                                                      per window, then publish)
//!      ▲                                                                        │
//!      └────────── acknowledgements: stored (or lost), the backlog shrinks ─────┘
//! ```
//!
//! The backlog (events accepted and not yet stored) is counted at the door and
//! given back by the acknowledger, so it bounds everything inside: the
//! sources' buffers, the processors' mailboxes, the open window and the
//! batches being written. When it is full, a push is refused at once and the
//! client is told to retry, instead of the service queueing without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow::messages::{
    AckRef, Acknowledger, BatchInfo, BatchTrigger, Batcher, DummySource, Failure, Message,
    MessageHandler, Processors, StartTopologyError, Topology, TopologyDrain,
};

use crate::event::{Event, now_ms};
use crate::live::Live;
use crate::store::{Store, Upsert};

/// The first wait after a failed write; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts of one write.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The pipeline's shape.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Copies of the collector (the topology's source); a message's events all go
    /// to the one its id picks, which keeps them in order.
    pub collectors: usize,
    /// Aggregators (processors), each owning the messages whose id hashes to it.
    pub aggregators: usize,
    /// A window closes at most this long after its first event…
    pub window: Duration,
    /// …or when it holds this many events.
    pub window_events: usize,
    /// Store consumers writing windows concurrently.
    pub store_consumers: usize,
    /// At most this many events accepted and not yet stored.
    pub capacity: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            collectors: 2,
            aggregators: 2,
            window: Duration::from_secs(1),
            window_events: 10_000,
            store_consumers: 2,
            capacity: 200_000,
        }
    }
}

/// Why a push was refused. Nothing of it entered the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushRefused {
    /// `capacity` events are waiting to be stored: retry shortly.
    #[error("the pipeline is full")]
    Full,
    /// More events than the whole capacity: split them.
    #[error("more events than the pipeline holds ({capacity})")]
    TooMany {
        /// The pipeline's capacity.
        capacity: u64,
    },
    /// The pipeline is draining or stopped.
    #[error("the pipeline is shutting down")]
    Stopped,
}

/// The pipeline's counters. Each only grows; the differences are the stages'
/// backlogs ([`Pipeline::stats`]).
#[derive(Debug, Default)]
struct Counts {
    /// Events admitted by a push.
    accepted: AtomicU64,
    /// Events an aggregator has handled.
    aggregated: AtomicU64,
    /// Events whose window reached a store consumer.
    storing: AtomicU64,
    /// Events acknowledged as stored.
    stored: AtomicU64,
    /// Events acknowledged as failed (a drain's deadline cut them off).
    lost: AtomicU64,
    /// Events accepted and not acknowledged: what admission checks.
    backlog: AtomicU64,
    /// Rows upserted (one per message per window).
    upserts: AtomicU64,
    /// Windows closed because they were full, timed out, or drained.
    windows_full: AtomicU64,
    windows_timed_out: AtomicU64,
    windows_flushed: AtomicU64,
    /// Failed write attempts (retried).
    write_failures: AtomicU64,
}

/// Where the pipeline stands: events accepted and not yet stored, per stage,
/// and what it has done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Waiting in the collectors (pushed, not yet taken by an aggregator).
    pub collectors: u64,
    /// In the aggregators and the open window.
    pub aggregators: u64,
    /// In store consumers, being written.
    pub store: u64,
    /// All of them: accepted and not yet acknowledged.
    pub backlog: u64,
    /// The most the backlog may hold.
    pub capacity: u64,
    /// Events accepted so far.
    pub accepted: u64,
    /// Events stored so far.
    pub stored: u64,
    /// Events accepted and then lost (only a drain cut short loses any).
    pub lost: u64,
    /// Rows upserted so far (one per message per window).
    pub upserts: u64,
    /// Windows closed by size, by time, and by a drain.
    pub windows: [u64; 3],
    /// Write attempts that failed and were retried.
    pub write_failures: u64,
}

impl Stats {
    /// The stats as the JSON `GET /api/q/stats` answers.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pending": {
                "collectors": self.collectors,
                "aggregators": self.aggregators,
                "store": self.store,
                "total": self.backlog,
            },
            "capacity": self.capacity,
            "accepted": self.accepted,
            "stored": self.stored,
            "lost": self.lost,
            "upserts": self.upserts,
            "windows": {
                "full": self.windows[0],
                "timed_out": self.windows[1],
                "flushed": self.windows[2],
            },
            "write_failures": self.write_failures,
        })
    }
}

/// Hears which events were stored and gives their room back.
struct Ledger(Arc<Counts>);

impl Acknowledger for Ledger {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        let counts = &self.0;
        counts
            .stored
            .fetch_add(successful.len() as u64, Ordering::Relaxed);
        if !failed.is_empty() {
            tracing::error!(events = failed.len(), reason = %failed[0].1, "events not stored");
            counts
                .lost
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
        }
        counts
            .backlog
            .fetch_sub((successful.len() + failed.len()) as u64, Ordering::Release);
    }
}

/// The aggregators' and the store consumers' code.
struct Handler {
    store: Store,
    live: Arc<Live>,
    counts: Arc<Counts>,
}

/// Groups a window's events by (app, message): one upsert each, holding each
/// step once, the latest report of it winning.
pub fn group(events: impl IntoIterator<Item = Event>) -> Vec<Upsert> {
    let mut rows: Vec<Upsert> = Vec::new();
    let mut index: HashMap<(i64, i64), usize> = HashMap::new();
    for event in events {
        let i = *index
            .entry((event.app_id, event.message_id))
            .or_insert_with(|| {
                rows.push(Upsert {
                    app_id: event.app_id,
                    message_id: event.message_id,
                    events: Vec::new(),
                });
                rows.len() - 1
            });
        let steps = &mut rows[i].events;
        match steps.iter_mut().find(|(step, _)| *step == event.event) {
            Some(step) => step.1 = event.created_at,
            None => steps.push((event.event, event.created_at)),
        }
    }
    rows
}

impl MessageHandler<Event> for Handler {
    async fn handle_message(&self, _event: &mut Message<Event>) {
        // Every event goes to the one window; the aggregator's job is to hand
        // it over in its message's order.
        self.counts.aggregated.fetch_add(1, Ordering::Relaxed);
    }

    async fn handle_batch(
        &self,
        mut events: Vec<Message<Event>>,
        info: &BatchInfo,
    ) -> Vec<Message<Event>> {
        let n = events.len() as u64;
        self.counts.storing.fetch_add(n, Ordering::Relaxed);
        // The data moves into the rows; the messages go back for their
        // acknowledgements with an empty event in its place.
        let rows: Arc<[Upsert]> = group(events.iter_mut().map(|m| take_event(&mut m.data))).into();
        let mut backoff = MIN_BACKOFF;
        while let Err(error) = self.store.upsert(rows.clone(), now_ms()).await {
            // Keep the window and try again: nothing accepted is dropped,
            // and the backlog fills up meanwhile, so clients get 503s.
            self.counts.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, rows = rows.len(), retry_in = ?backoff, "write failed");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.live.publish(&rows);
        self.counts
            .upserts
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let closed = match info.trigger {
            BatchTrigger::Size => &self.counts.windows_full,
            BatchTrigger::Timeout => &self.counts.windows_timed_out,
            BatchTrigger::Flush => &self.counts.windows_flushed,
        };
        closed.fetch_add(1, Ordering::Relaxed);
        events
    }
}

fn take_event(event: &mut Event) -> Event {
    Event {
        app_id: event.app_id,
        message_id: event.message_id,
        event: std::mem::take(&mut event.event),
        created_at: std::mem::take(&mut event.created_at),
    }
}

/// The running pipeline and its bounded push handle.
#[derive(Clone)]
pub struct Pipeline {
    topology: Topology<Event>,
    counts: Arc<Counts>,
    ledger: Arc<dyn Acknowledger>,
    capacity: u64,
    collectors: usize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the pipeline, writing to `store` and publishing to `live`.
    ///
    /// # Errors
    ///
    /// The topology's, if it cannot start (a count of 0, for one).
    pub async fn start(
        config: &PipelineConfig,
        store: Store,
        live: Arc<Live>,
    ) -> Result<Pipeline, StartTopologyError> {
        let counts = Arc::new(Counts::default());
        let handler = Handler {
            store,
            live,
            counts: counts.clone(),
        };
        let topology = Topology::builder("timeline", handler)
            .source(config.collectors, |_| DummySource::new())
            // Pushed events wait in the collectors' buffers until the
            // aggregators ask for them. The backlog admission already bounds
            // them by `capacity`; a smaller buffer (the default is 10,000)
            // would drop admitted events under a burst, acknowledged as
            // failed, so the backlog would still read 0 while they were lost.
            .source_buffer(usize::try_from(config.capacity).unwrap_or(usize::MAX))
            .processors(
                Processors::new(config.aggregators)
                    .max_demand(1_000)
                    .partition_by(|m: &Message<Event>| m.data.message_id as u64),
            )
            .batcher(
                Batcher::new("default")
                    .batch_size(config.window_events)
                    .batch_timeout(config.window)
                    .concurrency(config.store_consumers),
            )
            .start()
            .await?;
        Ok(Pipeline {
            topology,
            ledger: Arc::new(Ledger(counts.clone())),
            counts,
            capacity: config.capacity,
            collectors: config.collectors,
        })
    }

    /// Pushes `events` into the pipeline if the backlog has room for all of
    /// them; otherwise none enters.
    ///
    /// # Errors
    ///
    /// [`PushRefused`]: full (retry later), too many for the capacity, or
    /// shutting down.
    pub fn try_push(&self, events: Vec<Event>) -> Result<(), PushRefused> {
        let n = events.len() as u64;
        if n == 0 {
            return Ok(());
        }
        if n > self.capacity {
            return Err(PushRefused::TooMany {
                capacity: self.capacity,
            });
        }
        let capacity = self.capacity;
        self.counts
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |backlog| {
                (backlog + n <= capacity).then_some(backlog + n)
            })
            .map_err(|_| PushRefused::Full)?;
        self.counts.accepted.fetch_add(n, Ordering::Relaxed);
        // Each message's events go to the collector its id picks, so the
        // events of one message keep the order they were pushed in all the
        // way to the store: the latest report of a step wins. (Spread round
        // robin, two pushes could overtake each other between collectors.)
        let collectors = self.collectors as u64;
        let mut groups: Vec<Vec<Message<Event>>> = (0..collectors).map(|_| Vec::new()).collect();
        for event in events {
            let collector = event.message_id as u64 % collectors;
            groups[collector as usize]
                .push(Message::new(event, AckRef::new(self.ledger.clone(), 0)));
        }
        let mut refused = 0;
        for (collector, group) in (0..collectors).zip(groups) {
            let k = group.len() as u64;
            if self
                .topology
                .push_messages_by_key(collector, group)
                .is_err()
            {
                refused += k;
            }
        }
        if refused > 0 {
            // The refused messages were acknowledged as failed as they were
            // dropped, which gave their room back; they were never accepted.
            // (Only a drain refuses a push, and then it refuses every group
            // pushed after it started.)
            self.counts.accepted.fetch_sub(refused, Ordering::Relaxed);
            self.counts.lost.fetch_sub(refused, Ordering::Relaxed);
            return Err(PushRefused::Stopped);
        }
        Ok(())
    }

    /// Where the pipeline stands.
    pub fn stats(&self) -> Stats {
        let c = &self.counts;
        // Read downstream first: each counter only grows and an event passes
        // them in order, so every difference below is the stage's true count
        // at some instant during the read, never negative.
        let lost = c.lost.load(Ordering::Acquire);
        let stored = c.stored.load(Ordering::Acquire);
        let storing = c.storing.load(Ordering::Acquire);
        let aggregated = c.aggregated.load(Ordering::Acquire);
        let accepted = c.accepted.load(Ordering::Acquire);
        let done = stored + lost;
        Stats {
            collectors: accepted.saturating_sub(aggregated.max(done)),
            aggregators: aggregated.saturating_sub(storing.max(done)),
            store: storing.saturating_sub(done),
            backlog: accepted.saturating_sub(done),
            capacity: self.capacity,
            accepted,
            stored,
            lost,
            upserts: c.upserts.load(Ordering::Relaxed),
            windows: [
                c.windows_full.load(Ordering::Relaxed),
                c.windows_timed_out.load(Ordering::Relaxed),
                c.windows_flushed.load(Ordering::Relaxed),
            ],
            write_failures: c.write_failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until every accepted event is stored (or lost), checking every
    /// 2 ms for at most `limit`; how long that took, or `None` if it had not.
    pub async fn caught_up(&self, limit: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        loop {
            let waited = started.elapsed();
            if self.stats().backlog == 0 {
                return Some(waited);
            }
            if waited > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops taking events and stores everything accepted: the open window is
    /// flushed and every write finishes (retrying until `deadline`).
    pub async fn drain(&self, deadline: Duration) -> TopologyDrain {
        self.topology.drain(deadline).await
    }
}

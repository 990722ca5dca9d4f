//! The sender: configuration, the per-type registry, record and shutdown.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::event::Event;
use crate::metrics::{Counters, Metrics};
use crate::pipeline::{Pipeline, Running, StreamShutdown};
use crate::sink::Sink;

/// The sender's settings, checked by [`AnalyticsBuilder::build`].
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) batch_size: usize,
    pub(crate) interval: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) capacity: NonZeroUsize,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) stream_prefix: String,
    pub(crate) shutdown_timeout: Duration,
}

/// Configures an [`Analytics`] sender. Create one with [`Analytics::builder`].
///
/// | option | default |
/// |---|---|
/// | `batch_size` | 100 records |
/// | `interval` | 1 s: the longest a record waits for its batch to fill |
/// | `max_in_flight` | 50 sends at once, per event type |
/// | `capacity` | 10,000 records waiting to be batched, per event type |
/// | `retries` | 5, after the first attempt |
/// | `backoff` | 100 ms before the first retry, doubling up to `max_backoff` (5 s) |
/// | `stream_prefix` | none |
/// | `shutdown_timeout` | 30 s |
#[derive(Clone, Debug)]
pub struct AnalyticsBuilder {
    batch_size: usize,
    interval: Duration,
    max_in_flight: usize,
    capacity: usize,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    stream_prefix: String,
    shutdown_timeout: Duration,
}

/// An [`AnalyticsBuilder`] setting is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid analytics configuration: {0}")]
pub struct BuildError(&'static str);

impl AnalyticsBuilder {
    /// Sends a batch once it holds `records` records (at least 1).
    #[must_use]
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records;
        self
    }

    /// Sends a batch `interval` after its first record at the latest, full or
    /// not (more than zero).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Lets at most `sends` sends of one event type run at once (at least 1).
    #[must_use]
    pub fn max_in_flight(mut self, sends: usize) -> Self {
        self.max_in_flight = sends;
        self
    }

    /// Lets at most `records` records of one event type wait to be batched
    /// (at least 1); past that, [`Analytics::record`] waits and
    /// [`Analytics::try_record`] refuses.
    #[must_use]
    pub fn capacity(mut self, records: usize) -> Self {
        self.capacity = records;
        self
    }

    /// Retries a failed send `retries` times before giving its batch up.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Waits `first` before the first retry, then twice as long before each
    /// next one, never more than `max`.
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    /// Puts `prefix` before every stream name (an environment, a test run).
    #[must_use]
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = prefix.into();
        self
    }

    /// How long [`Analytics::shutdown`] may take to flush before it gives up
    /// on what is left.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// A sender writing to `sink`.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `batch_size`, `max_in_flight` or `capacity` is 0,
    /// or `interval` is zero.
    pub fn build<S: Sink>(self, sink: S) -> Result<Analytics<S>, BuildError> {
        if self.batch_size == 0 {
            return Err(BuildError("batch_size must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(BuildError("max_in_flight must be at least 1"));
        }
        if self.interval.is_zero() {
            return Err(BuildError("interval must be more than zero"));
        }
        let capacity =
            NonZeroUsize::new(self.capacity).ok_or(BuildError("capacity must be at least 1"))?;
        let config = Config {
            batch_size: self.batch_size,
            interval: self.interval,
            max_in_flight: self.max_in_flight,
            capacity,
            retries: self.retries,
            backoff: self.backoff,
            max_backoff: self.max_backoff.max(self.backoff),
            stream_prefix: self.stream_prefix,
            shutdown_timeout: self.shutdown_timeout,
        };
        Ok(Analytics {
            inner: Arc::new(Inner {
                config,
                sink: Arc::new(sink),
                counters: Arc::new(Counters::default()),
                registry: Mutex::new(Registry {
                    open: true,
                    pipelines: HashMap::new(),
                }),
            }),
        })
    }
}

/// A batching analytics sender: record events of any [`Event`] type from any
/// task; each type is batched and sent to its own stream.
///
/// Cheap to clone; every clone records into the same pipelines. Call
/// [`shutdown`](Self::shutdown) before the program ends: dropping the last
/// clone stops the pipelines without flushing them.
pub struct Analytics<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Analytics<S> {
    fn clone(&self) -> Self {
        Analytics {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for Analytics<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Analytics")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner<S> {
    config: Config,
    sink: Arc<S>,
    counters: Arc<Counters>,
    registry: Mutex<Registry>,
}

/// One pipeline per event type, started by the type's first record.
struct Registry {
    /// `false` once shutdown began: no pipeline starts after that.
    open: bool,
    pipelines: HashMap<TypeId, Arc<dyn Running>>,
}

/// The sender is shut down; the event is handed back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("analytics sender is shut down")]
pub struct RecordError<E>(pub E);

impl<E> fmt::Debug for RecordError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordError(..)")
    }
}

/// Why [`Analytics::try_record`] refused an event; the event is handed back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryRecordError<E> {
    /// `capacity` records of this type are waiting to be batched.
    #[error("analytics pipeline is full")]
    Full(E),
    /// The sender is shut down.
    #[error("analytics sender is shut down")]
    Closed(E),
}

impl<E> TryRecordError<E> {
    /// The event that was refused.
    pub fn into_inner(self) -> E {
        match self {
            TryRecordError::Full(e) | TryRecordError::Closed(e) => e,
        }
    }
}

impl<E> fmt::Debug for TryRecordError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecordError::Full(_) => f.write_str("Full(..)"),
            TryRecordError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// What [`Analytics::shutdown`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One entry per pipeline, in no particular order.
    pub streams: Vec<StreamShutdown>,
    /// The counters once every pipeline stopped.
    pub metrics: Metrics,
}

impl ShutdownReport {
    /// `true` when every pipeline ran and flushed everything it held, and no
    /// record failed.
    pub fn is_complete(&self) -> bool {
        self.metrics.records_failed == 0
            && self
                .streams
                .iter()
                .all(|s| s.unfinished == 0 && s.start_error.is_none())
    }
}

impl Analytics<()> {
    /// Starts configuring a sender.
    pub fn builder() -> AnalyticsBuilder {
        AnalyticsBuilder {
            batch_size: 100,
            interval: Duration::from_secs(1),
            max_in_flight: 50,
            capacity: 10_000,
            retries: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            stream_prefix: String::new(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl<S: Sink> Analytics<S> {
    /// A sender with the default settings (see [`AnalyticsBuilder`]).
    pub fn new(sink: S) -> Self {
        Analytics::builder()
            .build(sink)
            .expect("the defaults are valid")
    }

    /// The pipeline of `E`, started if this is the type's first use. The
    /// registry lock makes concurrent first calls start exactly one; starting
    /// only spawns a task, so the lock is held for microseconds.
    fn pipeline<E: Event>(&self) -> Option<Arc<Pipeline<E>>> {
        let inner = &*self.inner;
        let mut registry = inner.registry.lock();
        if !registry.open {
            return None;
        }
        let running = registry
            .pipelines
            .entry(TypeId::of::<E>())
            .or_insert_with(|| {
                Counters::add(&inner.counters.pipelines, 1);
                Arc::new(Pipeline::<E>::start(
                    &inner.config,
                    inner.sink.clone(),
                    inner.counters.clone(),
                ))
            })
            .clone();
        drop(registry);
        Some(
            running
                .as_any()
                .downcast::<Pipeline<E>>()
                .unwrap_or_else(|_| unreachable!("the registry is keyed by type")),
        )
    }

    /// Records `event`: queues it for its type's pipeline, starting the
    /// pipeline if this is the type's first record. Returns as soon as the
    /// event is queued; while `capacity` records of the type are already
    /// waiting, it waits for room (back-pressure instead of unbounded memory).
    ///
    /// # Errors
    ///
    /// [`RecordError`] with the event when the sender is shutting down or shut
    /// down, or the type's pipeline failed to start.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, on a type's first record.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the event
    /// was not recorded.
    pub async fn record<E: Event>(&self, event: E) -> Result<(), RecordError<E>> {
        match self.pipeline::<E>() {
            Some(pipeline) => pipeline.record(event).await,
            None => Err(RecordError(event)),
        }
    }

    /// Records `event` if there is room, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecordError::Full`] when `capacity` records of the type are
    /// waiting, [`TryRecordError::Closed`] when the sender is shut down; both
    /// hand the event back.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, on a type's first record.
    pub fn try_record<E: Event>(&self, event: E) -> Result<(), TryRecordError<E>> {
        match self.pipeline::<E>() {
            Some(pipeline) => pipeline.try_record(event),
            None => Err(TryRecordError::Closed(event)),
        }
    }

    /// A handle recording events of type `E` only, without the registry
    /// look-up of [`record`](Self::record): for a task that records one type
    /// in a hot loop. Starts the type's pipeline if needed.
    ///
    /// # Errors
    ///
    /// [`RecordError`] (holding `()`) when the sender is shut down.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, on a type's first use.
    pub fn recorder<E: Event>(&self) -> Result<Recorder<E>, RecordError<()>> {
        let pipeline = self.pipeline::<E>().ok_or(RecordError(()))?;
        Ok(Recorder { pipeline })
    }

    /// The counters, all event types together.
    pub fn metrics(&self) -> Metrics {
        self.inner.counters.snapshot()
    }

    /// Shuts the sender down: refuses new records, then sends every record
    /// already accepted — queued, in an open batch, or in a send being
    /// retried — and waits for the sends, for at most the shutdown timeout.
    /// Pipelines shut down side by side.
    ///
    /// Records whose `record` returned `Ok` before the shutdown began are
    /// sent; a `record` still waiting for room gets its event back.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future leaves pipelines draining.
    pub async fn shutdown(&self) -> ShutdownReport {
        let pipelines: Vec<Arc<dyn Running>> = {
            let mut registry = self.inner.registry.lock();
            registry.open = false;
            registry.pipelines.drain().map(|(_, p)| p).collect()
        };
        let deadline = self.inner.config.shutdown_timeout;
        let drains: Vec<_> = pipelines
            .into_iter()
            .map(|p| tokio::spawn(p.shutdown(deadline)))
            .collect();
        let mut streams = Vec::with_capacity(drains.len());
        for drain in drains {
            match drain.await {
                Ok(report) => streams.push(report),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        ShutdownReport {
            streams,
            metrics: self.metrics(),
        }
    }
}

/// Records events of one type into a sender; see [`Analytics::recorder`].
pub struct Recorder<E: Event> {
    pipeline: Arc<Pipeline<E>>,
}

impl<E: Event> Clone for Recorder<E> {
    fn clone(&self) -> Self {
        Recorder {
            pipeline: self.pipeline.clone(),
        }
    }
}

impl<E: Event> fmt::Debug for Recorder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("stream", &self.pipeline.stream)
            .finish()
    }
}

impl<E: Event> Recorder<E> {
    /// Like [`Analytics::record`].
    ///
    /// # Errors
    ///
    /// [`RecordError`] with the event once the sender is shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn record(&self, event: E) -> Result<(), RecordError<E>> {
        self.pipeline.record(event).await
    }

    /// Like [`Analytics::try_record`].
    ///
    /// # Errors
    ///
    /// As [`Analytics::try_record`].
    pub fn try_record(&self, event: E) -> Result<(), TryRecordError<E>> {
        self.pipeline.try_record(event)
    }

    /// The stream this recorder's events go to.
    pub fn stream(&self) -> &str {
        &self.pipeline.stream
    }
}

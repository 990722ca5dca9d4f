//! Building, running and draining a topology: sources → processors → batchers
//! → batch handlers, under one supervisor.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use demandflow_core::{CancelMode, PartitionDispatcher, SubscribeOptions, key_partition};
use demandflow_runtime::{
    ConsumerRef, DemandFlow, DrainOutcome, DrainReport, Producer, ProducerConsumerRef, ProducerRef,
    StageHandle, consumer, producer, producer_consumer,
};
use demandflow_supervisor::{Children, Restart, StartChildError, Strategy, Supervisor};
use tokio_util::sync::CancellationToken;

use crate::ack::{AckRef, ChannelAcknowledger};
use crate::batch_handler::BatchHandler;
use crate::batcher::{BatchSize, BatcherStage};
use crate::handler::{Batch, MessageHandler};
use crate::message::Message;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::processor::{Processor, Shared};
use crate::rate::{RateLimit, RateLimiter};
use crate::source::{Inbox, Pushed, SourceStage};
use crate::testing::TestAcks;

/// A source: its copies, how to start one, and each copy's inbox.
type SourceSpec<T> = (usize, StartSource<T>, Vec<Arc<Inbox<T>>>);
/// Switches every source of a topology to forward, once the stages after them are up.
type Release = Arc<dyn Fn(&Children) + Send + Sync>;
type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;
type StartSource<T> = Arc<
    dyn Fn(usize, Option<(usize, KeyFn<T>)>, DemandFlow) -> Result<ProducerRef<Message<T>>, String>
        + Send
        + Sync,
>;

/// The processors of a topology: how many, how they ask, how they split work.
///
/// | option | default |
/// |---|---|
/// | `concurrency` | 1 |
/// | `max_demand` | 10 |
/// | `min_demand` | `max_demand / 2` |
/// | `partition_by` | none: any processor takes any message |
pub struct Processors<T> {
    concurrency: usize,
    max_demand: u64,
    min_demand: Option<u64>,
    partition_by: Option<KeyFn<T>>,
}

impl<T> Processors<T> {
    /// `concurrency` processors.
    pub fn new(concurrency: usize) -> Self {
        Processors {
            concurrency,
            max_demand: 10,
            min_demand: None,
            partition_by: None,
        }
    }

    /// The `max_demand` of each processor's subscription to each source.
    #[must_use]
    pub fn max_demand(mut self, max_demand: u64) -> Self {
        self.max_demand = max_demand;
        self
    }

    /// The `min_demand` of each processor's subscription to each source.
    #[must_use]
    pub fn min_demand(mut self, min_demand: u64) -> Self {
        self.min_demand = Some(min_demand);
        self
    }

    /// Routes every message by `key`: messages with equal keys go to the same
    /// processor, so they are handled one at a time and in the order their
    /// source emitted them.
    #[must_use]
    pub fn partition_by(
        mut self,
        key: impl Fn(&Message<T>) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.partition_by = Some(Arc::new(key));
        self
    }
}

impl<T> Default for Processors<T> {
    fn default() -> Self {
        Self::new(1)
    }
}

impl<T> fmt::Debug for Processors<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processors")
            .field("concurrency", &self.concurrency)
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .field("partitioned", &self.partition_by.is_some())
            .finish()
    }
}

/// One batcher of a topology and its batch handlers.
///
/// | option | default |
/// |---|---|
/// | `batch_size` | 100 messages |
/// | `batch_timeout` | 1 s, from the batch's first message |
/// | `concurrency` | 1 batch handler |
/// | `partition_by_key` | off: any handler takes any batch |
pub struct Batcher<T> {
    name: Arc<str>,
    size: BatchSize<T>,
    timeout: Duration,
    concurrency: usize,
    partition_by_key: bool,
}

impl<T> Batcher<T> {
    /// A batcher named `name`; messages choose it with [`Message::put_batcher`].
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Batcher {
            name: name.into(),
            size: BatchSize::Count(100),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            partition_by_key: false,
        }
    }

    /// Emits a batch when it holds `messages` messages (trigger
    /// [`Size`](crate::BatchTrigger::Size)).
    #[must_use]
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.size = BatchSize::Count(messages);
        self
    }

    /// Emits a batch when `full` returns `true` for the message just added;
    /// `full` gets an accumulator that starts at 0 in every batch (count bytes
    /// in it, for example).
    #[must_use]
    pub fn batch_size_by(
        mut self,
        full: impl Fn(&Message<T>, &mut u64) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.size = BatchSize::Custom(Arc::new(full));
        self
    }

    /// Emits a batch `timeout` after its first message arrived (trigger
    /// [`Timeout`](crate::BatchTrigger::Timeout)). Later messages do not reset it.
    #[must_use]
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `concurrency` batch handlers for this batcher.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sends all batches of one key to the same batch handler, so they are
    /// handled in order (by default any free handler takes the next batch).
    #[must_use]
    pub fn partition_by_key(mut self) -> Self {
        self.partition_by_key = true;
        self
    }
}

impl<T> fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("partition_by_key", &self.partition_by_key)
            .finish()
    }
}

/// A topology could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartTopologyError {
    /// The configuration is invalid.
    #[error("invalid topology: {0}")]
    Config(String),
    /// A stage failed to start.
    #[error(transparent)]
    Stage(#[from] StartChildError),
}

/// Configures a [`Topology`]. Create one with [`Topology::builder`].
///
/// | option | default |
/// |---|---|
/// | `source` | required |
/// | `processors` | [`Processors::new(1)`](Processors::new) |
/// | `batcher` | none: processors acknowledge messages themselves |
/// | `rate_limit` | none |
/// | `max_restarts` / `max_seconds` | 3 restarts in 5 s |
#[must_use = "a builder does nothing until `start` is called"]
pub struct TopologyBuilder<T, H> {
    name: Arc<str>,
    handler: Arc<H>,
    source: Option<SourceSpec<T>>,
    processors: Processors<T>,
    batchers: Vec<Batcher<T>>,
    rate_limit: Option<RateLimit>,
    max_restarts: usize,
    max_seconds: Duration,
}

impl<T, H> TopologyBuilder<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    /// Runs `copies` copies of a source made by `source` (called with the
    /// copy's index, at start and at every restart of that copy).
    pub fn source<P, F>(mut self, copies: usize, source: F) -> Self
    where
        P: Producer<Event = Message<T>>,
        F: Fn(usize) -> P + Send + Sync + 'static,
    {
        let topology = self.name.clone();
        let inboxes: Vec<Arc<Inbox<T>>> = (0..copies).map(|_| Arc::new(Inbox::new())).collect();
        let stage_inboxes = inboxes.clone();
        let start: StartSource<T> = Arc::new(move |i, partition, flow| {
            let stage = producer(SourceStage {
                inner: source(i),
                inbox: stage_inboxes[i].clone(),
            })
            .name(format!("{topology}.source.{i}"))
            .demand_flow(flow);
            match partition {
                None => stage.start().map_err(|e| e.to_string()),
                Some((n, key)) => {
                    let dispatcher = PartitionDispatcher::numbered(n, move |m: Message<T>| {
                        Some((key_partition(&key(&m), n), m))
                    })
                    .build()
                    .map_err(|e| e.to_string())?;
                    stage
                        .dispatcher(dispatcher)
                        .start()
                        .map_err(|e| e.to_string())
                }
            }
        });
        self.source = Some((copies, start, inboxes));
        self
    }

    /// Sets the processors.
    pub fn processors(mut self, processors: Processors<T>) -> Self {
        self.processors = processors;
        self
    }

    /// Adds a batcher. Messages go to the batcher they name
    /// ([`DEFAULT_BATCHER`](crate::DEFAULT_BATCHER) unless changed); with no batcher at all, processors
    /// acknowledge messages as soon as their handler returns.
    pub fn batcher(mut self, batcher: Batcher<T>) -> Self {
        self.batchers.push(batcher);
        self
    }

    /// Lets at most `rate.limit` messages per `rate.interval` be asked of the
    /// source, all copies together (see [`RateLimiter`]).
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.rate_limit = Some(rate);
        self
    }

    /// More than `max_restarts` stage restarts within `max_seconds` stops the topology.
    pub fn max_restarts(mut self, max_restarts: usize, max_seconds: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.max_seconds = max_seconds;
        self
    }

    fn validate(&self) -> Result<(), String> {
        let Some((copies, ..)) = &self.source else {
            return Err("no source".into());
        };
        if *copies == 0 {
            return Err("the source needs at least one copy".into());
        }
        let p = &self.processors;
        if p.concurrency == 0 {
            return Err("processor concurrency must be at least 1".into());
        }
        if p.max_demand == 0 {
            return Err("processor max_demand must be at least 1".into());
        }
        if p.min_demand.is_some_and(|min| min >= p.max_demand) {
            return Err("processor min_demand must be below max_demand".into());
        }
        for (i, b) in self.batchers.iter().enumerate() {
            if self.batchers[..i].iter().any(|o| o.name == b.name) {
                return Err(format!("two batchers are named {:?}", b.name));
            }
            if matches!(b.size, BatchSize::Count(0)) {
                return Err(format!(
                    "batcher {:?}: batch_size must be at least 1",
                    b.name
                ));
            }
            if b.concurrency == 0 {
                return Err(format!(
                    "batcher {:?}: concurrency must be at least 1",
                    b.name
                ));
            }
            if b.timeout.is_zero() {
                return Err(format!(
                    "batcher {:?}: batch_timeout must be above 0",
                    b.name
                ));
            }
        }
        Ok(())
    }

    /// Starts every stage under one supervisor, sources first.
    ///
    /// # Errors
    ///
    /// [`StartTopologyError::Config`] for an invalid configuration,
    /// [`StartTopologyError::Stage`] when a stage fails to start (the ones
    /// started are stopped).
    pub async fn start(self) -> Result<Topology<T>, StartTopologyError> {
        self.validate().map_err(StartTopologyError::Config)?;
        let name = self.name.clone();
        let metrics = Arc::new(Metrics::default());
        let abort = CancellationToken::new();
        let limiter = self.rate_limit.map(|r| Arc::new(RateLimiter::new(r)));
        let shared = Arc::new(Shared {
            topology: name.clone(),
            handler: self.handler,
            metrics: metrics.clone(),
            batchers: self.batchers.iter().map(|b| b.name.clone()).collect(),
            limiter: limiter.clone(),
            abort: abort.clone(),
        });
        let (copies, start_source, inboxes) = self.source.expect("validated");
        let procs = self.processors;
        let n_procs = procs.concurrency;
        let mut supervisor = Supervisor::builder(Strategy::RestForOne)
            .max_restarts(self.max_restarts)
            .max_seconds(self.max_seconds);

        // Sources start accumulating demand, so that a finite source cannot run
        // dry before every stage after it has subscribed: the last stage to
        // start switches them to forward. Under rest-for-one, a restarted
        // source restarts every stage after it, so the same holds at restarts.
        let source_names: Vec<String> = (0..copies).map(|i| format!("{name}.source.{i}")).collect();
        for (i, child) in source_names.iter().enumerate() {
            let start = start_source.clone();
            let partition = procs.partition_by.clone().map(|key| (n_procs, key));
            supervisor = supervisor.child(child, Restart::Transient, move |_| {
                let result = start(i, partition.clone(), DemandFlow::Accumulate);
                async move { result }
            });
        }
        let release: Release = {
            let sources = source_names.clone();
            Arc::new(move |children: &Children| {
                for source in &sources {
                    if let Some(source) = children.get::<ProducerRef<Message<T>>>(source) {
                        // Forwarding already, or stopped: nothing to do.
                        let _ = source.set_demand_flow(DemandFlow::Forward);
                    }
                }
            })
        };

        let proc_names: Vec<String> = (0..n_procs)
            .map(|i| format!("{name}.processor.{i}"))
            .collect();
        let min = procs.min_demand.unwrap_or(procs.max_demand / 2);
        let proc_options = move |i: usize| {
            let options = SubscribeOptions::new()
                .max_demand(procs.max_demand)
                .min_demand(min)
                .cancel(CancelMode::Temporary);
            if procs.partition_by.is_some() {
                options.partition(i)
            } else {
                options
            }
        };
        let proc_options = Arc::new(proc_options);
        for (i, child) in proc_names.iter().enumerate() {
            let shared = shared.clone();
            let sources = source_names.clone();
            let options = proc_options.clone();
            let stage_name = child.clone();
            if shared.batchers.is_empty() {
                // The last processor is the topology's last stage.
                let release = (i + 1 == n_procs).then(|| release.clone());
                supervisor = supervisor.child(child, Restart::Transient, move |children| {
                    let stage = consumer(Processor::new(shared.clone(), i))
                        .name(stage_name.clone())
                        .start();
                    let (sources, options) = (sources.clone(), options.clone());
                    let release = release.clone();
                    async move {
                        let stage: ConsumerRef<Message<T>> = stage.map_err(|e| e.to_string())?;
                        for source in &sources {
                            let source = get_child::<ProducerRef<Message<T>>>(&children, source)?;
                            stage
                                .subscribe_to(&source, options(i))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        if let Some(release) = release {
                            release(&children);
                        }
                        Ok::<_, String>(stage)
                    }
                });
            } else {
                let n_batchers = shared.batchers.len();
                supervisor = supervisor.child(child, Restart::Transient, move |children| {
                    let stage = producer_consumer(Processor::new(shared.clone(), i))
                        .name(stage_name.clone());
                    let stage = if n_batchers == 1 {
                        stage.start()
                    } else {
                        let dispatcher =
                            PartitionDispatcher::numbered(n_batchers, |m: Message<T>| {
                                Some((m.slot as usize, m))
                            })
                            .build()
                            .expect("at least one batcher");
                        stage.dispatcher(dispatcher).start()
                    };
                    let (sources, options) = (sources.clone(), options.clone());
                    async move {
                        let stage: ProducerConsumerRef<Message<T>, Message<T>> =
                            stage.map_err(|e| e.to_string())?;
                        for source in &sources {
                            let source = get_child::<ProducerRef<Message<T>>>(&children, source)?;
                            stage
                                .subscribe_to(&source, options(i))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        Ok::<_, String>(stage)
                    }
                });
            }
        }

        let n_batchers = self.batchers.len();
        for (b, batcher) in self.batchers.into_iter().enumerate() {
            let child = format!("{name}.batcher.{}", batcher.name);
            let max_demand = match batcher.size {
                BatchSize::Count(n) => n.clamp(1, 10_000) as u64,
                BatchSize::Custom(_) => 1000,
            };
            let options = move || {
                let options = SubscribeOptions::new()
                    .max_demand(max_demand)
                    .cancel(CancelMode::Temporary);
                if n_batchers > 1 {
                    options.partition(b)
                } else {
                    options
                }
            };
            let processors = proc_names.clone();
            let (topology, metrics) = (name.clone(), metrics.clone());
            let (batcher_name, size, timeout) =
                (batcher.name.clone(), batcher.size.clone(), batcher.timeout);
            let (concurrency, by_key) = (batcher.concurrency, batcher.partition_by_key);
            let stage_name = child.clone();
            supervisor = supervisor.child(&child, Restart::Transient, move |children| {
                let stage = BatcherStage::new(
                    batcher_name.clone(),
                    topology.clone(),
                    size.clone(),
                    timeout,
                    metrics.clone(),
                );
                let stage = producer_consumer(stage).name(stage_name.clone());
                let stage = if by_key && concurrency > 1 {
                    let dispatcher =
                        PartitionDispatcher::numbered(concurrency, move |b: Batch<T>| {
                            Some((key_partition(&b.info.batch_key, concurrency), b))
                        })
                        .build()
                        .expect("concurrency is at least 1");
                    stage.dispatcher(dispatcher).start()
                } else {
                    stage.start()
                };
                let processors = processors.clone();
                async move {
                    let stage: ProducerConsumerRef<Message<T>, Batch<T>> =
                        stage.map_err(|e| e.to_string())?;
                    for processor in &processors {
                        let processor = get_child::<ProducerConsumerRef<Message<T>, Message<T>>>(
                            &children, processor,
                        )?;
                        stage
                            .subscribe_to(&processor, options())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(stage)
                }
            });
            for k in 0..concurrency {
                let handler_child = format!("{name}.batch_handler.{}.{k}", batcher.name);
                let (shared, batcher_child) = (shared.clone(), child.clone());
                let stage_name = handler_child.clone();
                // The last batch handler of the last batcher is the topology's last stage.
                let release =
                    (b + 1 == n_batchers && k + 1 == concurrency).then(|| release.clone());
                supervisor =
                    supervisor.child(&handler_child, Restart::Transient, move |children| {
                        let stage = consumer(BatchHandler::new(shared.clone(), k))
                            .name(stage_name.clone())
                            .start();
                        let batcher_child = batcher_child.clone();
                        let release = release.clone();
                        async move {
                            let stage: ConsumerRef<Batch<T>> = stage.map_err(|e| e.to_string())?;
                            let batcher = get_child::<ProducerConsumerRef<Message<T>, Batch<T>>>(
                                &children,
                                &batcher_child,
                            )?;
                            let options = SubscribeOptions::new()
                                .max_demand(1)
                                .min_demand(0)
                                .cancel(CancelMode::Temporary);
                            let options = if by_key && concurrency > 1 {
                                options.partition(k)
                            } else {
                                options
                            };
                            stage
                                .subscribe_to(&batcher, options)
                                .await
                                .map_err(|e| e.to_string())?;
                            if let Some(release) = release {
                                release(&children);
                            }
                            Ok::<_, String>(stage)
                        }
                    });
            }
        }

        let supervisor = supervisor.start().await?;
        Ok(Topology {
            inboxes,
            inner: Arc::new(Inner {
                name,
                supervisor,
                metrics,
                limiter,
                sources: source_names,
                processors: proc_names,
                next_source: AtomicUsize::new(0),
                next_token: std::sync::atomic::AtomicU64::new(0),
                abort,
            }),
            _messages: PhantomData,
        })
    }
}

fn get_child<H: Clone + 'static>(children: &Children, name: &str) -> Result<H, String> {
    children
        .get::<H>(name)
        .ok_or_else(|| format!("stage {name:?} is not running"))
}

struct Inner {
    name: Arc<str>,
    supervisor: Supervisor,
    metrics: Arc<Metrics>,
    limiter: Option<Arc<RateLimiter>>,
    sources: Vec<String>,
    processors: Vec<String>,
    next_source: AtomicUsize,
    next_token: std::sync::atomic::AtomicU64,
    abort: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Release handlers blocked in user code so the stages can stop.
        self.abort.cancel();
    }
}

/// A running topology of sources, processors, batchers and batch handlers.
///
/// Cheap to clone. When the last clone is dropped, the topology stops: the
/// messages inside are acknowledged as failed ([`Failure::Shutdown`](crate::Failure::Shutdown)
/// or [`Failure::Dropped`](crate::Failure::Dropped)). Use [`drain`](Self::drain)
/// to finish them instead.
pub struct Topology<T> {
    inner: Arc<Inner>,
    inboxes: Vec<Arc<Inbox<T>>>,
    _messages: PhantomData<fn(T)>,
}

impl<T> Clone for Topology<T> {
    fn clone(&self) -> Self {
        Topology {
            inner: self.inner.clone(),
            inboxes: self.inboxes.clone(),
            _messages: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Topology<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("name", &self.inner.name)
            .field("supervisor", &self.inner.supervisor)
            .finish_non_exhaustive()
    }
}

/// What [`Topology::drain`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopologyDrain {
    /// What happened to each stage, sources first (empty when the topology had
    /// already stopped).
    pub stages: Option<DrainReport>,
    /// Messages that could not be finished before the deadline; each was
    /// acknowledged as failed.
    pub unfinished: u64,
    /// The topology's counters once it stopped.
    pub metrics: MetricsSnapshot,
}

impl TopologyDrain {
    /// `true` when every stage drained in time and every message was finished.
    pub fn is_complete(&self) -> bool {
        self.unfinished == 0 && self.stages.as_ref().is_none_or(DrainReport::is_complete)
    }
}

/// The topology has stopped: nothing can be pushed into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("topology is not running")]
pub struct PushError;

impl<T: Send + 'static> Topology<T> {
    /// Starts configuring a topology named `name` whose stages run `handler`.
    pub fn builder<H: MessageHandler<T>>(
        name: impl Into<Arc<str>>,
        handler: H,
    ) -> TopologyBuilder<T, H> {
        TopologyBuilder {
            name: name.into(),
            handler: Arc::new(handler),
            source: None,
            processors: Processors::new(1),
            batchers: Vec::new(),
            rate_limit: None,
            max_restarts: 3,
            max_seconds: Duration::from_secs(5),
        }
    }

    /// The topology's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The shared rate limiter, when the topology has one; change its limit at
    /// run time with [`RateLimiter::set_limit`].
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_deref()
    }

    /// Changes the rate limit; does nothing on a topology without one.
    pub fn set_rate_limit(&self, limit: NonZeroU64) {
        if let Some(limiter) = &self.inner.limiter {
            limiter.set_limit(limit);
        }
    }

    /// How many stages have been restarted.
    pub fn restarts(&self) -> u64 {
        self.inner.supervisor.restarts()
    }

    /// Pushes `messages` into a copy of the source (round robin), as if it had
    /// emitted them. They take their place behind the events it has buffered.
    ///
    /// A push that returns `Ok` before a drain starts is finished by the
    /// drain; one made once the drain has started fails.
    ///
    /// # Errors
    ///
    /// [`PushError`] when the source is draining or has stopped; the messages
    /// are then acknowledged as failed ([`Failure::Dropped`](crate::Failure::Dropped)).
    pub fn push_messages(&self, messages: Vec<Message<T>>) -> Result<(), PushError> {
        if messages.is_empty() {
            return Ok(());
        }
        let i = self.inner.next_source.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        // Dropped on failure, which acknowledges them as failed.
        self.inboxes[i].push(messages).map_err(|_| PushError)?;
        if let Some(source) = self
            .inner
            .supervisor
            .child::<ProducerRef<Message<T>>>(&self.inner.sources[i])
        {
            // A source that stopped meanwhile dropped its inbox in `terminate`,
            // or a restarted one takes it over in `init`.
            let _ = source.send_info(Pushed);
        }
        Ok(())
    }

    /// Pushes one message per item of `data`, with a fresh channel
    /// acknowledger, and returns where their acknowledgements arrive. Tokens
    /// are numbered from 0 in the order of `data`.
    ///
    /// If the topology has stopped, every message is acknowledged as failed.
    pub fn test_messages(&self, data: impl IntoIterator<Item = T>) -> TestAcks {
        self.push_test(data, |m, _| m)
    }

    /// Like [`test_messages`](Self::test_messages), for messages meant to form
    /// one batch: they share a batch key of their own, and the last asks to
    /// flush the batch. With partitioned or concurrent processors they may
    /// still be split; use one processor to get exactly one batch.
    pub fn test_batch(&self, data: impl IntoIterator<Item = T>) -> TestAcks {
        let key = format!(
            "test-batch-{}",
            self.inner.next_token.fetch_add(1, Ordering::Relaxed)
        );
        let data: Vec<T> = data.into_iter().collect();
        let last = data.len().saturating_sub(1);
        self.push_test(data, move |mut m, i| {
            m.put_batch_key(key.as_str());
            if i == last {
                m.flush_batch();
            }
            m
        })
    }

    fn push_test(
        &self,
        data: impl IntoIterator<Item = T>,
        mut shape: impl FnMut(Message<T>, usize) -> Message<T>,
    ) -> TestAcks {
        let (acknowledger, rx) = ChannelAcknowledger::new();
        let messages: Vec<Message<T>> = data
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                shape(
                    Message::new(data, AckRef::new(acknowledger.clone(), i as u64)),
                    i,
                )
            })
            .collect();
        let expected = messages.len();
        // On failure the messages were dropped, which acknowledged them as failed.
        let _ = self.push_messages(messages);
        TestAcks::new(rx, expected)
    }

    /// Waits until every stage has stopped on its own: the sources ran out and
    /// everything after them finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self) {
        loop {
            let children = self.inner.supervisor.children();
            let handles: Vec<StageHandle> = children
                .names()
                .filter_map(|name| self.stage(&children, name))
                .collect();
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                handle.wait().await;
            }
            // Let the supervisor see the exits before looking again.
            tokio::task::yield_now().await;
        }
    }

    fn stage(&self, children: &Children, name: &str) -> Option<StageHandle> {
        children
            .get::<ProducerRef<Message<T>>>(name)
            .map(Into::into)
            .or_else(|| {
                children
                    .get::<ProducerConsumerRef<Message<T>, Message<T>>>(name)
                    .map(Into::into)
            })
            .or_else(|| {
                children
                    .get::<ConsumerRef<Message<T>>>(name)
                    .map(Into::into)
            })
            .or_else(|| {
                children
                    .get::<ProducerConsumerRef<Message<T>, Batch<T>>>(name)
                    .map(Into::into)
            })
            .or_else(|| children.get::<ConsumerRef<Batch<T>>>(name).map(Into::into))
    }

    /// Drains the topology: the sources stop taking input, every processor
    /// finishes what it holds, every open batch is flushed (trigger
    /// [`Flush`](crate::BatchTrigger::Flush)) and handled, everything is
    /// acknowledged, and the stages stop. Whatever is not finished by
    /// `deadline` is acknowledged as failed and counted in
    /// [`TopologyDrain::unfinished`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future leaves the topology draining.
    pub async fn drain(&self, deadline: Duration) -> TopologyDrain {
        let before = self.inner.metrics.snapshot();
        // At the deadline, handlers still running are abandoned (their
        // messages fail) so that their stages can stop.
        let abort = self.inner.abort.clone();
        let at_deadline = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            abort.cancel();
        });
        let stages = self.inner.supervisor.drain(deadline).await;
        at_deadline.abort();
        // Let stopped stages finish dropping what they held.
        tokio::task::yield_now().await;
        let after = self.inner.metrics.snapshot();
        let mut unfinished = after.messages_failed_on_shutdown - before.messages_failed_on_shutdown
            + after.in_flight;
        if let Some(report) = &stages {
            for stage in &report.stages {
                if let DrainOutcome::Stopped { buffered, queued } = stage.outcome {
                    if self.inner.sources.contains(&stage.name) {
                        unfinished += buffered as u64;
                    } else if self.inner.processors.contains(&stage.name) {
                        unfinished += queued as u64;
                    }
                }
            }
        }
        if unfinished > 0 {
            tracing::warn!(topology = %self.inner.name, unfinished, "drain left messages unfinished");
        }
        TopologyDrain {
            stages,
            unfinished,
            metrics: after,
        }
    }

    /// Drains the topology with [`drain`](Self::drain) once `token` is
    /// cancelled, on a spawned task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn drain_on(
        &self,
        token: CancellationToken,
        deadline: Duration,
    ) -> tokio::task::JoinHandle<TopologyDrain> {
        let topology = self.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            topology.drain(deadline).await
        })
    }

    /// Stops every stage now; messages inside are acknowledged as failed.
    pub async fn stop(&self) {
        self.inner.abort.cancel();
        self.inner
            .supervisor
            .stop(demandflow_runtime::Reason::Shutdown)
            .await;
    }
}

//! Configuring and starting a topology: sources → processors → batchers →
//! batch handlers, as children of one rest-for-one supervisor.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use demandflow_core::{
    CancelMode, DEFAULT_BUFFER_SIZE, PartitionDispatcher, SubscribeOptions, key_partition,
};
use demandflow_runtime::{
    ConsumerRef, DemandFlow, Producer, ProducerConsumerRef, ProducerRef, consumer, producer,
    producer_consumer,
};
use demandflow_supervisor::{BuildError, Children, Restart, StartChildError, Strategy, Supervisor};
use tokio_util::sync::CancellationToken;

use crate::batch_handler::BatchHandler;
use crate::batcher::{BatchSize, BatcherStage};
use crate::handler::{Batch, MessageHandler};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::processor::{Processor, Shared};
use crate::rate::{RateLimit, RateLimiter};
use crate::source::{Inbox, SourceStage};
use crate::topology::{Inner, Topology};

/// A source copy's buffer unless [`TopologyBuilder::source_buffer`] says
/// otherwise: the runtime's producer default.
const DEFAULT_SOURCE_BUFFER: usize = DEFAULT_BUFFER_SIZE;

/// A source: its copies, how to start one, and each copy's inbox.
type SourceSpec<T> = (usize, StartSource<T>, Vec<Arc<Inbox<T>>>);
/// Switches every source of a topology to forward, once the stages after them are up.
type Release = Arc<dyn Fn(&Children) + Send + Sync>;
type KeyFn<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;
/// Starts source copy `i` with its partitioning, demand flow and buffer size.
type StartSource<T> = Arc<
    dyn Fn(
            usize,
            Option<(usize, KeyFn<T>)>,
            DemandFlow,
            usize,
        ) -> Result<ProducerRef<Message<T>>, String>
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
    /// Each processor's subscription to each source (demand bounds, a
    /// temporary cancel), checked like any subscription's.
    subscription: SubscribeOptions<Message<T>>,
    partition_by: Option<KeyFn<T>>,
}

impl<T> Processors<T> {
    /// `concurrency` processors.
    pub fn new(concurrency: usize) -> Self {
        Processors {
            concurrency,
            subscription: SubscribeOptions::new()
                .max_demand(10)
                .cancel(CancelMode::Temporary),
            partition_by: None,
        }
    }

    /// The `max_demand` of each processor's subscription to each source.
    #[must_use]
    pub fn max_demand(mut self, max_demand: u64) -> Self {
        self.subscription = self.subscription.max_demand(max_demand);
        self
    }

    /// The `min_demand` of each processor's subscription to each source.
    #[must_use]
    pub fn min_demand(mut self, min_demand: u64) -> Self {
        self.subscription = self.subscription.min_demand(min_demand);
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
            .field("subscription", &self.subscription)
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartTopologyError {
    /// The configuration is invalid.
    #[error("invalid topology: {0}")]
    Config(String),
    /// A stage failed to start.
    #[error(transparent)]
    Stage(#[from] StartChildError),
    /// The supervisor of the topology's stages could not start.
    #[error(transparent)]
    Supervisor(BuildError),
}

impl From<BuildError> for StartTopologyError {
    fn from(error: BuildError) -> Self {
        match error {
            BuildError::Child(child) => StartTopologyError::Stage(child),
            other => StartTopologyError::Supervisor(other),
        }
    }
}

/// Configures a [`Topology`]. Create one with [`Topology::builder`].
///
/// | option | default |
/// |---|---|
/// | `source` | required |
/// | `processors` | [`Processors::new(1)`](Processors::new) |
/// | `batcher` | none: processors acknowledge messages themselves |
/// | `rate_limit` | none |
/// | `source_buffer` | 10 000 messages per source copy |
/// | `max_restarts` / `max_seconds` | 3 restarts in 5 s |
#[must_use = "a builder does nothing until `start` is called"]
pub struct TopologyBuilder<T, H> {
    name: Arc<str>,
    handler: Arc<H>,
    source: Option<SourceSpec<T>>,
    processors: Processors<T>,
    batchers: Vec<Batcher<T>>,
    rate_limit: Option<RateLimit>,
    source_buffer: usize,
    max_restarts: usize,
    max_seconds: Duration,
}

impl<T, H> TopologyBuilder<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    pub(crate) fn new(name: Arc<str>, handler: H) -> Self {
        TopologyBuilder {
            name,
            handler: Arc::new(handler),
            source: None,
            processors: Processors::new(1),
            batchers: Vec::new(),
            rate_limit: None,
            source_buffer: DEFAULT_SOURCE_BUFFER,
            max_restarts: 3,
            max_seconds: Duration::from_secs(5),
        }
    }

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
        let start: StartSource<T> = Arc::new(move |i, partition, flow, buffer| {
            let stage = producer(SourceStage {
                inner: source(i),
                inbox: stage_inboxes[i].clone(),
            })
            .name(format!("{topology}.source.{i}"))
            .buffer_size(buffer)
            .demand_flow(flow);
            match partition {
                None => stage.start().map_err(|e| e.to_string()),
                Some((n, key)) => {
                    let partitions = NonZeroUsize::new(n).ok_or("a source partitioned into 0")?;
                    let dispatcher =
                        PartitionDispatcher::numbered(partitions, move |m: Message<T>| {
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

    /// How many messages each source copy may hold beyond what the processors
    /// asked for before its buffer drops the oldest, which are acknowledged as
    /// failed ([`Failure::Dropped`](crate::Failure::Dropped)); `usize::MAX` for
    /// no bound. Default 10,000.
    ///
    /// Messages pushed with [`Topology::push_messages`] wait in this buffer
    /// too, so a push faster than the processors drain it overflows it. A
    /// caller that bounds what it pushes by admission control of its own (at
    /// most N messages not yet acknowledged) sets this to at least N, so that
    /// nothing it admitted is dropped.
    pub fn source_buffer(mut self, messages: usize) -> Self {
        self.source_buffer = messages;
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
        p.subscription
            .validate()
            .map_err(|e| format!("processor {e}"))?;
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
            let buffer = self.source_buffer;
            supervisor = supervisor.child(child, Restart::Transient, move |_| {
                let result = start(i, partition.clone(), DemandFlow::Accumulate, buffer);
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
        let proc_options = move |i: usize| {
            let options = procs.subscription.clone();
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
                        for source in running_sources::<T>(&children, &sources)? {
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
                            PartitionDispatcher::numbered(nonzero(n_batchers), |m: Message<T>| {
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
                        for source in running_sources::<T>(&children, &sources)? {
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
                        PartitionDispatcher::numbered(nonzero(concurrency), move |b: Batch<T>| {
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
        Ok(Topology::new(
            Inner {
                name,
                supervisor,
                metrics,
                limiter,
                sources: source_names,
                processors: proc_names,
                next_source: AtomicUsize::new(0),
                next_token: AtomicU64::new(0),
                abort,
            },
            inboxes,
        ))
    }
}

/// The handles of the running sources named `names`, in order, for a
/// processor to subscribe to.
fn running_sources<T: Send + 'static>(
    children: &Children,
    names: &[String],
) -> Result<Vec<ProducerRef<Message<T>>>, String> {
    names.iter().map(|name| get_child(children, name)).collect()
}

fn get_child<H: Clone + 'static>(children: &Children, name: &str) -> Result<H, String> {
    children
        .get::<H>(name)
        .ok_or_else(|| format!("stage {name:?} is not running"))
}

/// A count the builder has already checked to be at least 1 (here: more than
/// one batcher, or a concurrency above 1).
fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("checked by the builder to be at least 1")
}

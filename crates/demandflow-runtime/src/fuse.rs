//! Fused chains: a producer, producer-consumers and a consumer in a row, run
//! in one task (see [`fuse`]).

use std::time::Duration;

use std::sync::Arc;

use demandflow_core::{CancelMode, Dispatcher, Reason, SubscribeOptions, SubscriptionId};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::port::{Control, ControlPort};

use crate::engine::StageTask;
use crate::{
    AsProducer, Consumer, ConsumerBuilder, ConsumerRef, DrainReport, NotRunning, Pipeline,
    Producer, ProducerBuilder, ProducerConsumer, ProducerConsumerBuilder, ProducerRef, StageHandle,
    StartError, SubscribeError,
};

mod task;

/// What starting the links built so far leaves: the stages' tasks, not yet
/// spawned, and their handles in chain order.
#[derive(Default)]
struct Parts {
    tasks: Vec<StageTask>,
    stages: Vec<StageHandle>,
}

impl Parts {
    /// Watches a link's subscription. Nobody awaits it, so when the producer
    /// goes away before accepting it (a head that stops in `init`), the
    /// consumer would wait forever for a producer it never had; it stops
    /// instead, as it would had the producer accepted and then stopped: with
    /// the producer's exit reason, if its cancel mode says so.
    fn watch_link<T: Send + 'static>(
        &mut self,
        answer: oneshot::Receiver<Result<SubscriptionId, SubscribeError>>,
        producer: &ProducerRef<T>,
        consumer: Arc<dyn ControlPort>,
        cancel: CancelMode,
    ) {
        // Neither holds a handle: the watch does not keep the chain attached.
        let producer = producer.monitor();
        self.tasks.push(Box::pin(async move {
            if let Ok(Err(SubscribeError::ProducerNotRunning)) = answer.await {
                let reason = producer.exit_reason().unwrap_or(Reason::Shutdown);
                if cancel.stops_consumer(&reason) {
                    let _ = consumer.control(Control::Stop(reason));
                }
            }
        }));
    }
}

/// Starts the links built so far; returns the head's and the last stage's
/// producing handles.
type Build<H, T> =
    Box<dyn FnOnce(&mut Parts) -> Result<(ProducerRef<H>, ProducerRef<T>), StartError> + Send>;

/// Starts a fused chain at `head`: a linear pipeline whose stages all run in
/// **one** tokio task.
///
/// Add producer-consumers with [`via`](Fuse::via), end with a consumer
/// ([`to`](Fuse::to)) and [`start`](Fused::start). Each stage is configured with
/// its ordinary builder and runs the ordinary stage engine, so everything
/// behaves as in the same pipeline started stage by stage and subscribed with
/// the same options: the same demand reaches the producer (`max_demand` at
/// once, then re-asks as the consumer's batches are handled, SEMANTICS.md §2),
/// events arrive in the same order, a finite source's end and every stop
/// reason travel down the chain, a panicking callback stops its stage with
/// [`Reason::Panic`] and its neighbours as their cancel modes say, drains and
/// stats work, and every stage shows in the registry under its own name.
///
/// What changes is only where the stages run. Unfused, each stage is a task of
/// its own, and every ask and every batch is a message that wakes another task,
/// often on another worker thread. Fused, the messages between the chain's
/// stages are handled in the same poll of the one task: at small `max_demand`,
/// where an event costs about two such messages, that is several times the
/// throughput (see `benches/README.md`).
///
/// # When to fuse
///
/// Fuse a chain when its callbacks are short and the per-event cost of the
/// stages is what limits it — small `max_demand`, cheap transformations. Do
/// not fuse when:
///
/// - a callback blocks or takes long (a slow `.await`, heavy CPU work): while
///   it runs, no other stage of the chain runs, since they share one task;
///   unfused, the other stages would go on working on other threads;
/// - the stages should run in parallel on several cores: a fused chain uses
///   at most one at a time.
///
/// Unfused stays the default: `start` each builder and subscribe as usual.
///
/// The stages remain ordinary stages: other consumers may subscribe to the
/// head ([`FusedChain::head`]), the tail may subscribe to other producers
/// ([`FusedChain::tail`]), and those stages run in their own tasks.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{consumer, from_iter, fuse, map, producer, Consumer, ConsumerContext, Reason, SubscribeOptions, SubscriptionId};
///
/// struct Sum(tokio::sync::mpsc::UnboundedSender<u64>, u64);
/// impl Consumer for Sum {
///     type Event = u64;
///     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut ConsumerContext) {
///         self.1 += events.iter().sum::<u64>();
///     }
///     async fn terminate(&mut self, _: &Reason) {
///         let _ = self.0.send(self.1);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let chain = fuse(producer(from_iter(1..=100_u64)))
///     .via(map(|n: u64| n * 2), SubscribeOptions::new().max_demand(1))
///     .to(consumer(Sum(tx, 0)), SubscribeOptions::new().max_demand(1))
///     .start()
///     .unwrap();
/// assert_eq!(chain.wait().await, Reason::Normal);
/// assert_eq!(rx.recv().await, Some(10_100));
/// # }
/// ```
pub fn fuse<P, D>(head: ProducerBuilder<P, D>) -> Fuse<P::Event, P::Event>
where
    P: Producer,
    D: Dispatcher<P::Event> + Send + 'static,
{
    Fuse {
        build: Box::new(move |parts: &mut Parts| {
            let head = head.start_in(Some(&mut parts.tasks))?;
            parts.stages.push(StageHandle::from(&head));
            Ok((head.clone(), head))
        }),
    }
}

/// A fused chain being built: its head produces `H`, its last stage `T`.
/// Create one with [`fuse`].
#[must_use = "a fused chain does nothing until it ends with `to` and is started"]
pub struct Fuse<H, T> {
    build: Build<H, T>,
}

impl<H: Send + 'static, T: Send + 'static> Fuse<H, T> {
    /// Appends a producer-consumer, subscribed to the chain's last stage with
    /// `options` (its `max_demand`, `min_demand` and cancel mode apply as to
    /// any subscription).
    pub fn via<S, D>(
        self,
        stage: ProducerConsumerBuilder<S, D>,
        options: SubscribeOptions<T>,
    ) -> Fuse<H, S::Out>
    where
        S: ProducerConsumer<In = T>,
        D: Dispatcher<S::Out> + Send + 'static,
    {
        let build = self.build;
        Fuse {
            build: Box::new(move |parts: &mut Parts| {
                let (head, last) = build(parts)?;
                let stage = stage.start_in(Some(&mut parts.tasks))?;
                let cancel = options.cancel_mode();
                let (tx, rx) = oneshot::channel();
                link(stage.send_subscribe(&last, options, None, Some(tx)))?;
                parts.watch_link(rx, &last, stage.control.clone(), cancel);
                parts.stages.push(StageHandle::from(&stage));
                Ok((head, stage.as_producer()))
            }),
        }
    }

    /// Ends the chain with a consumer, subscribed to the last stage with
    /// `options`.
    pub fn to<C>(self, stage: ConsumerBuilder<C>, options: SubscribeOptions<T>) -> Fused<H, T>
    where
        C: Consumer<Event = T>,
    {
        let build = self.build;
        Fused {
            build: Box::new(move |parts: &mut Parts| {
                let (head, last) = build(parts)?;
                let tail = stage.start_in(Some(&mut parts.tasks))?;
                let cancel = options.cancel_mode();
                let (tx, rx) = oneshot::channel();
                link(tail.send_subscribe(&last, options, None, Some(tx)))?;
                parts.watch_link(rx, &last, tail.control.clone(), cancel);
                parts.stages.push(StageHandle::from(&tail));
                Ok((head, tail))
            }),
        }
    }
}

/// Starts the links; returns the head's and the tail's handles.
type BuildAll<H, T> =
    Box<dyn FnOnce(&mut Parts) -> Result<(ProducerRef<H>, ConsumerRef<T>), StartError> + Send>;

/// A complete fused chain, ready to [`start`](Fused::start).
#[must_use = "a fused chain does nothing until `start` is called"]
pub struct Fused<H, T> {
    build: BuildAll<H, T>,
}

impl<H: Send + 'static, T: Send + 'static> Fused<H, T> {
    /// Starts every stage of the chain in one new task on the current tokio
    /// runtime, each subscribed to the one before it as in
    /// [`subscribe_to_nowait`](ConsumerRef::subscribe_to_nowait): the first
    /// demand reaches the head once the task runs.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime,
    /// [`StartError::Config`] for a link's invalid subscribe options. Nothing
    /// is started then.
    pub fn start(self) -> Result<FusedChain<H, T>, StartError> {
        let mut parts = Parts::default();
        let (head, tail) = (self.build)(&mut parts)?;
        let span = tracing::debug_span!("fused", stages = parts.stages.len());
        tokio::spawn(task::Together::new(parts.tasks).instrument(span));
        Ok(FusedChain {
            head,
            tail,
            stages: parts.stages,
        })
    }
}

/// A link's subscription, sent before the chain's task runs: only invalid
/// options can fail it here.
fn link(
    subscribed: Result<demandflow_core::SubscriptionId, SubscribeError>,
) -> Result<(), StartError> {
    match subscribed {
        Ok(_) => Ok(()),
        Err(SubscribeError::Config(e)) => Err(StartError::Config(e)),
        Err(e) => Err(StartError::Subscribe(e)),
    }
}

/// A running fused chain (see [`fuse`]): its head produces `H`, its tail
/// consumes `T`.
///
/// Like any handle, it keeps the chain's pipeline attached; dropped, the chain
/// runs on while it has work and ends with it (see the crate docs, "Stage
/// lifetime"). Cloning is cheap.
pub struct FusedChain<H, T> {
    head: ProducerRef<H>,
    tail: ConsumerRef<T>,
    stages: Vec<StageHandle>,
}

impl<H, T> Clone for FusedChain<H, T> {
    fn clone(&self) -> Self {
        FusedChain {
            head: self.head.clone(),
            tail: self.tail.clone(),
            stages: self.stages.clone(),
        }
    }
}

impl<H, T> std::fmt::Debug for FusedChain<H, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedChain")
            .field("stages", &self.stages)
            .finish()
    }
}

impl<H: Send + 'static, T: Send + 'static> FusedChain<H, T> {
    /// The head producer's handle (to switch its demand flow, send it infos,
    /// or subscribe other consumers to it).
    pub fn head(&self) -> &ProducerRef<H> {
        &self.head
    }

    /// The tail consumer's handle.
    pub fn tail(&self) -> &ConsumerRef<T> {
        &self.tail
    }

    /// Every stage, head first.
    pub fn stages(&self) -> &[StageHandle] {
        &self.stages
    }

    /// The chain as a [`Pipeline`], head first.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::from(self)
    }

    /// Waits until the tail consumer stops and returns why: the chain's result,
    /// as a consumer's exit is an unfused pipeline's. A finite head's end
    /// reaches it as [`Reason::Normal`]; a stage that failed reaches it with
    /// its reason (under the default cancel mode).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self) -> Reason {
        self.tail.wait().await
    }

    /// `true` while any stage of the chain runs.
    pub fn is_running(&self) -> bool {
        self.stages.iter().any(StageHandle::is_running)
    }

    /// Stops every stage with `reason` and waits until all have stopped.
    ///
    /// # Errors
    ///
    /// [`NotRunning`] when every stage had already stopped.
    pub async fn stop(&self, reason: Reason) -> Result<(), NotRunning> {
        if !self.is_running() {
            return Err(NotRunning);
        }
        for stage in &self.stages {
            // A stage that has stopped already refuses it: nothing to do.
            let _ = stage.control.control(Control::Stop(reason.clone()));
        }
        for stage in &self.stages {
            stage.wait().await;
        }
        Ok(())
    }

    /// Drains the chain as [`Pipeline::drain`] does: the head takes no new
    /// input, what is in flight flows to the tail, every stage stops; stages
    /// still running at `deadline` are stopped and reported.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future leaves stages draining.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        self.pipeline().drain(deadline).await
    }
}

impl<H, T> From<&FusedChain<H, T>> for Pipeline {
    fn from(chain: &FusedChain<H, T>) -> Pipeline {
        chain
            .stages
            .iter()
            .fold(Pipeline::new(), |pipeline, stage| {
                pipeline.with(stage.clone())
            })
    }
}

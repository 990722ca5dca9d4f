//! Typed, cloneable handles to running stages.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use demandflow_core::{Reason, StageId, SubscribeOptions, SubscriptionId};
use tokio::sync::oneshot;

use crate::call::{Call, CallError, Request, typed_reply};
use crate::exit::ExitWatch;
use crate::group::{self, HandleGuard};
use crate::port::{Control, ControlPort, ProducerPort, SubscriberPort};
use crate::{DemandFlow, Info, NotRunning, StageStats, SubscribeError};

/// Waits for a stage's exit reason.
async fn wait_exit(exit: ExitWatch) -> Reason {
    exit.wait().await
}

/// Watches a stage without counting as a handle to its pipeline.
///
/// Get one from any handle's `monitor()`; use it to await the stage's exit after
/// dropping the handles (the pipeline is then detached and ends with its work).
#[derive(Clone)]
pub struct StageMonitor {
    id: StageId,
    exit: ExitWatch,
}

impl StageMonitor {
    /// The stage's id.
    pub fn id(&self) -> StageId {
        self.id
    }

    /// The exit reason, if the stage has stopped.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.exit.reason()
    }

    /// Waits until the stage stops and returns why.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self) -> Reason {
        wait_exit(self.exit.clone()).await
    }
}

impl fmt::Debug for StageMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageMonitor")
            .field("id", &self.id)
            .field("exit", &self.exit.reason())
            .finish()
    }
}

/// Stage operations every handle has.
macro_rules! control_methods {
    () => {
        /// The stage's id.
        pub fn id(&self) -> StageId {
            self.control.id()
        }

        /// The stage's name (given to the builder, or made from its kind and id).
        pub fn name(&self) -> &str {
            self.control.name()
        }

        /// Queues `message` for the stage's `handle_info` and returns at once
        /// (GenStage's `async_info`). On a producer it is handled after the events
        /// buffered before it have been dispatched.
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub fn send_info<M: Any + Send>(&self, message: M) -> Result<(), NotRunning> {
            self.control.info(Info::new(message), None)
        }

        /// Queues `message` like [`send_info`](Self::send_info) and waits until the
        /// stage has received it (GenStage's `sync_info`).
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub async fn sync_info<M: Any + Send>(&self, message: M) -> Result<(), NotRunning> {
            let (tx, rx) = oneshot::channel();
            self.control.info(Info::new(message), Some(tx))?;
            rx.await.map_err(|_| NotRunning)
        }

        /// Sends `request` to the stage's [`HandleCall<R, _>`](crate::HandleCall)
        /// and waits up to `timeout` for the reply (GenStage's `call`).
        ///
        /// The request is handled in its place: on a producer or
        /// producer-consumer, after every event the stage emitted before it
        /// arrived has been dispatched to consumers (so a call sent after events
        /// were emitted is answered after those events went out), exactly like
        /// [`send_info`](Self::send_info); a consumer handles it between two
        /// batches.
        ///
        /// # Errors
        ///
        /// - [`CallError::Timeout`] when no reply came within `timeout`: the
        ///   request stays queued, the stage handles it in its turn and keeps
        ///   running, and the reply is dropped;
        /// - [`CallError::Stopped`] when the stage had stopped or stopped before
        ///   answering;
        /// - [`CallError::Unhandled`] when the stage did not register `R` with
        ///   its builder's `answers`.
        ///
        /// # Cancel safety
        ///
        /// Cancel safe in the sense that dropping the future only drops the reply:
        /// the request, once sent, is still handled.
        pub async fn call<R: Request>(
            &self,
            request: R,
            timeout: std::time::Duration,
        ) -> Result<R::Reply, CallError> {
            let (tx, rx) = oneshot::channel();
            self.control
                .control(Control::Call(Call::new(request, Some(tx))))
                .map_err(|_| CallError::Stopped)?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => typed_reply::<R>(reply),
                Ok(Err(_)) => Err(CallError::Stopped),
                Err(_) => Err(CallError::Timeout),
            }
        }

        /// Sends `request` to the stage's [`HandleCall<R, _>`](crate::HandleCall)
        /// and returns at once; the reply is dropped (GenStage's `cast`). It is
        /// ordered like [`call`](Self::call). A stage that did not register `R`
        /// drops the message with a warning naming the stage.
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub fn cast<R: Request>(&self, request: R) -> Result<(), NotRunning> {
            self.control
                .control(Control::Call(Call::new(request, None)))
        }

        /// Stops the stage with `reason` and waits until it has stopped.
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage had already stopped.
        pub async fn stop(&self, reason: Reason) -> Result<(), NotRunning> {
            self.control.control(Control::Stop(reason))?;
            wait_exit(self.control.exit()).await;
            Ok(())
        }

        /// Waits until the stage stops and returns why.
        ///
        /// # Cancel safety
        ///
        /// Cancel safe.
        pub async fn wait(&self) -> Reason {
            wait_exit(self.control.exit()).await
        }

        /// The exit reason, if the stage has stopped.
        ///
        /// A stage publishes its exit before its consumers hear that it is
        /// down and before it refuses subscriptions, so whoever learns of a
        /// consequence of its stop (a consumer that stopped with it, a
        /// subscription refused with `ProducerNotRunning`) finds it stopped here.
        pub fn exit_reason(&self) -> Option<Reason> {
            self.control.exit().reason()
        }

        /// `true` until the stage has stopped.
        pub fn is_running(&self) -> bool {
            !self.control.exit().is_set()
        }

        /// A watcher for the stage's exit that does not keep the pipeline alive.
        pub fn monitor(&self) -> StageMonitor {
            StageMonitor {
                id: self.control.id(),
                exit: self.control.exit(),
            }
        }

        /// How many events the stage holds undelivered: its buffer plus the
        /// dispatcher's queues (0 for a consumer).
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub async fn estimate_buffered_count(&self) -> Result<usize, NotRunning> {
            let (tx, rx) = oneshot::channel();
            self.control.control(Control::BufferedCount(tx))?;
            rx.await.map_err(|_| NotRunning)
        }

        /// Starts draining the stage: a producer takes no new input, delivers what
        /// it holds and stops; a consumer or producer-consumer stops once its
        /// producers are gone and its input is handled (a producer-consumer after
        /// delivering its buffer). Returns at once; [`wait`](Self::wait) for the end.
        /// To drain a whole pipeline with a deadline, use
        /// [`Pipeline::drain`](crate::Pipeline::drain).
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub fn drain(&self) -> Result<(), NotRunning> {
            self.control.control(Control::Drain)
        }

        /// A snapshot of the stage's counters and subscriptions.
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub async fn stats(&self) -> Result<StageStats, NotRunning> {
            let (tx, rx) = oneshot::channel();
            self.control.control(Control::Stats(tx))?;
            rx.await.map_err(|_| NotRunning)
        }
    };
}

/// Operations of stages that consume.
macro_rules! consumer_methods {
    ($in:ty) => {
        /// Subscribes this stage to `producer` and waits until the producer accepts.
        ///
        /// # Errors
        ///
        /// [`SubscribeError::Config`] for invalid options,
        /// [`SubscribeError::SelfSubscription`] when `producer` is this stage,
        /// [`SubscribeError::Refused`] when the producer's dispatcher refuses, and
        /// `ProducerNotRunning` / `ConsumerNotRunning` when either side has stopped.
        /// A refused subscription does not stop this stage.
        pub async fn subscribe_to(
            &self,
            producer: &impl AsProducer<$in>,
            options: SubscribeOptions<$in>,
        ) -> Result<SubscriptionId, SubscribeError> {
            let (tx, rx) = oneshot::channel();
            self.send_subscribe(producer, options, None, Some(tx))?;
            rx.await.unwrap_or(Err(SubscribeError::ConsumerNotRunning))
        }

        /// Subscribes this stage to `producer` without waiting for the producer to
        /// accept (GenStage's `async_subscribe`); a refusal is logged.
        ///
        /// # Errors
        ///
        /// Invalid options, subscribing to itself, or a stopped consumer.
        pub fn subscribe_to_nowait(
            &self,
            producer: &impl AsProducer<$in>,
            options: SubscribeOptions<$in>,
        ) -> Result<SubscriptionId, SubscribeError> {
            self.send_subscribe(producer, options, None, None)
        }

        /// Cancels subscription `old` with `reason` and subscribes to `producer`
        /// with `options`, waiting for the producer to accept. The cancel mode of
        /// `old` is not applied, so the stage keeps running.
        ///
        /// # Errors
        ///
        /// As [`subscribe_to`](Self::subscribe_to).
        pub async fn resubscribe(
            &self,
            old: SubscriptionId,
            reason: Reason,
            producer: &impl AsProducer<$in>,
            options: SubscribeOptions<$in>,
        ) -> Result<SubscriptionId, SubscribeError> {
            let (tx, rx) = oneshot::channel();
            self.send_subscribe(producer, options, Some((old, reason)), Some(tx))?;
            rx.await.unwrap_or(Err(SubscribeError::ConsumerNotRunning))
        }

        /// Cancels subscription `sub` with `reason`. The producer confirms and the
        /// stage's cancel handler and cancel mode then apply. Cancelling twice, or
        /// an ended subscription, does nothing.
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub fn cancel(&self, sub: SubscriptionId, reason: Reason) -> Result<(), NotRunning> {
            self.control.control(Control::Cancel(sub, reason))
        }

        /// Asks the producer of `sub` for `demand` more events (manual demand).
        /// Asking 0, or on an ended subscription, does nothing.
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub fn ask(&self, sub: SubscriptionId, demand: u64) -> Result<(), NotRunning> {
            self.control.control(Control::Ask(sub, demand))
        }

        pub(crate) fn send_subscribe(
            &self,
            producer: &impl AsProducer<$in>,
            options: SubscribeOptions<$in>,
            replaces: Option<(SubscriptionId, Reason)>,
            reply: Option<oneshot::Sender<Result<SubscriptionId, SubscribeError>>>,
        ) -> Result<SubscriptionId, SubscribeError> {
            options.validate()?;
            let producer = producer.as_producer();
            if producer.control.id() == self.control.id() {
                return Err(SubscribeError::SelfSubscription);
            }
            group::join(self.guard.node(), producer.guard.node());
            let sub = SubscriptionId::next();
            self.subscriber
                .subscribe_to(
                    producer.port.clone(),
                    options,
                    sub,
                    replaces,
                    reply,
                    self.guard.clone(),
                )
                .map_err(|_| SubscribeError::ConsumerNotRunning)?;
            Ok(sub)
        }
    };
}

/// Operations of stages that produce.
macro_rules! producer_methods {
    () => {
        /// Switches between forwarding demand to the stage and accumulating it
        /// (see [`DemandFlow`]).
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub fn set_demand_flow(&self, flow: DemandFlow) -> Result<(), NotRunning> {
            self.control.control(Control::Demand(flow))
        }

        /// Whether the stage currently forwards demand or accumulates it (also in
        /// [`StageStats::demand_flow`]).
        ///
        /// # Errors
        ///
        /// [`NotRunning`] when the stage has stopped.
        pub async fn demand_flow(&self) -> Result<DemandFlow, NotRunning> {
            Ok(self.stats().await?.demand_flow.unwrap_or_default())
        }
    };
}

/// Anything consumers can subscribe to: a producer or a producer-consumer.
pub trait AsProducer<T> {
    /// The producing side as a [`ProducerRef`].
    fn as_producer(&self) -> ProducerRef<T>;
}

/// A handle to a running producer.
///
/// Handles are cheap to clone. Dropping the last handle to a pipeline does not
/// stop it: it keeps running while it has work, and each stage stops by itself
/// once it cannot do more (see the crate docs, "Stage lifetime").
pub struct ProducerRef<T> {
    pub(crate) port: Arc<dyn ProducerPort<T>>,
    pub(crate) control: Arc<dyn ControlPort>,
    pub(crate) guard: Arc<HandleGuard>,
}

impl<T: Send + 'static> ProducerRef<T> {
    control_methods!();
    producer_methods!();
}

impl<T> AsProducer<T> for ProducerRef<T> {
    fn as_producer(&self) -> ProducerRef<T> {
        self.clone()
    }
}

impl<T> Clone for ProducerRef<T> {
    fn clone(&self) -> Self {
        ProducerRef {
            port: self.port.clone(),
            control: self.control.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<T> fmt::Debug for ProducerRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerRef")
            .field("id", &self.control.id())
            .field("name", &self.control.name())
            .finish()
    }
}

/// A handle to a running consumer.
pub struct ConsumerRef<T> {
    pub(crate) subscriber: Arc<dyn SubscriberPort<T>>,
    pub(crate) control: Arc<dyn ControlPort>,
    pub(crate) guard: Arc<HandleGuard>,
}

impl<T: Send + 'static> ConsumerRef<T> {
    control_methods!();
    consumer_methods!(T);
}

impl<T> Clone for ConsumerRef<T> {
    fn clone(&self) -> Self {
        ConsumerRef {
            subscriber: self.subscriber.clone(),
            control: self.control.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<T> fmt::Debug for ConsumerRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRef")
            .field("id", &self.control.id())
            .field("name", &self.control.name())
            .finish()
    }
}

/// A handle to a running producer-consumer: it can subscribe to producers and be
/// subscribed to.
pub struct ProducerConsumerRef<I, O> {
    pub(crate) port: Arc<dyn ProducerPort<O>>,
    pub(crate) subscriber: Arc<dyn SubscriberPort<I>>,
    pub(crate) control: Arc<dyn ControlPort>,
    pub(crate) guard: Arc<HandleGuard>,
}

impl<I: Send + 'static, O: Send + 'static> ProducerConsumerRef<I, O> {
    control_methods!();
    producer_methods!();
    consumer_methods!(I);

    /// This stage seen as a producer.
    pub fn producer(&self) -> ProducerRef<O> {
        self.as_producer()
    }
}

impl<I, O> AsProducer<O> for ProducerConsumerRef<I, O> {
    fn as_producer(&self) -> ProducerRef<O> {
        ProducerRef {
            port: self.port.clone(),
            control: self.control.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<I, O> Clone for ProducerConsumerRef<I, O> {
    fn clone(&self) -> Self {
        ProducerConsumerRef {
            port: self.port.clone(),
            subscriber: self.subscriber.clone(),
            control: self.control.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<I, O> fmt::Debug for ProducerConsumerRef<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerConsumerRef")
            .field("id", &self.control.id())
            .field("name", &self.control.name())
            .finish()
    }
}

/// A handle to any stage, whatever its event types: for code that manages
/// stages without touching their events (draining, supervising, monitoring).
///
/// Every typed handle converts into one with `From`/`Into`; while it exists the
/// pipeline is not detached, like with the typed handle.
#[derive(Clone)]
pub struct StageHandle {
    pub(crate) control: Arc<dyn ControlPort>,
    #[expect(
        dead_code,
        reason = "held for its Drop: it keeps the pipeline attached"
    )]
    pub(crate) guard: Arc<HandleGuard>,
}

impl StageHandle {
    control_methods!();
}

impl fmt::Debug for StageHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageHandle")
            .field("id", &self.control.id())
            .field("name", &self.control.name())
            .finish()
    }
}

macro_rules! into_stage_handle {
    ($($ty:ident<$($p:ident),+>),+) => {$(
        impl<$($p),+> From<&$ty<$($p),+>> for StageHandle {
            fn from(handle: &$ty<$($p),+>) -> Self {
                StageHandle {
                    control: handle.control.clone(),
                    guard: handle.guard.clone(),
                }
            }
        }

        impl<$($p),+> From<$ty<$($p),+>> for StageHandle {
            fn from(handle: $ty<$($p),+>) -> Self {
                StageHandle {
                    control: handle.control,
                    guard: handle.guard,
                }
            }
        }
    )+};
}

into_stage_handle!(ProducerRef<T>, ConsumerRef<T>, ProducerConsumerRef<I, O>);

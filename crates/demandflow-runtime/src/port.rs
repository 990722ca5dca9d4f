//! The typed doors into a stage's mailbox, as its peers and handles see them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use demandflow_core::{
    CancelReason, Reason, StageId, SubscribeOptions, SubscribeRefused, SubscriptionId,
};
use tokio::sync::oneshot;

use crate::call::Call;
use crate::exit::ExitWatch;
use crate::group::HandleGuard;
use crate::queue;
use crate::{DemandFlow, Info, NotRunning, StageStats, SubscribeError};

/// What a producer sees of a consumer.
pub(crate) trait ConsumerPort<T>: Send + Sync + 'static {
    fn id(&self) -> StageId;
    /// Delivers a batch; hands it back when the consumer has stopped.
    fn events(&self, sub: SubscriptionId, events: Vec<T>) -> Result<(), Vec<T>>;
    fn cancelled(&self, sub: SubscriptionId, reason: CancelReason);
    fn subscribed(&self, sub: SubscriptionId, result: Result<(), SubscribeRefused>);
}

/// What a consumer sees of a producer.
pub(crate) trait ProducerPort<T>: Send + Sync + 'static {
    fn id(&self) -> StageId;
    fn subscribe(
        &self,
        sub: SubscriptionId,
        consumer: Arc<dyn ConsumerPort<T>>,
        options: SubscribeOptions<T>,
    ) -> bool;
    fn ask(&self, sub: SubscriptionId, demand: u64) -> bool;
    /// `echo`: the consumer waits for the producer's confirmation.
    fn cancel(&self, sub: SubscriptionId, reason: CancelReason, echo: bool) -> bool;
    /// The producer's name, for a consumer's stall report.
    fn name(&self) -> &str;
    /// Whether the producer is making progress, for a consumer's stall report.
    fn pulse(&self) -> PulseReading;
}

/// A producer's sign of life, written by its own task and read by a consumer
/// that waits for events from it (see the engine's `watchdog`). Written only
/// when the producer's mailbox runs empty, so a busy stage does not pay for it
/// per message.
#[derive(Default)]
pub(crate) struct Pulse {
    /// How many times the stage has turned to its mailbox for more, shifted
    /// left by one; the low bit is set while it waits there.
    turns: AtomicU64,
    /// Events in its own buffer at that time (0 while it accumulates on
    /// purpose).
    held: AtomicUsize,
}

/// What [`Pulse`] read at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PulseReading {
    pub(crate) turns: u64,
    pub(crate) waiting: bool,
    pub(crate) held: usize,
}

impl Pulse {
    /// The stage turns to its mailbox (for the `turns`-th time) and may wait there.
    pub(crate) fn waiting(&self, turns: u64, held: usize) {
        self.held.store(held, Ordering::Relaxed);
        self.turns.store(turns << 1 | 1, Ordering::Relaxed);
    }

    /// The stage took a message and is at work.
    pub(crate) fn working(&self, turns: u64) {
        self.turns.store(turns << 1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> PulseReading {
        let turns = self.turns.load(Ordering::Relaxed);
        PulseReading {
            turns: turns >> 1,
            waiting: turns & 1 == 1,
            held: self.held.load(Ordering::Relaxed),
        }
    }
}

/// Requests a handle makes to the consumer side of a stage.
pub(crate) trait SubscriberPort<T>: Send + Sync + 'static {
    fn subscribe_to(
        &self,
        producer: Arc<dyn ProducerPort<T>>,
        options: SubscribeOptions<T>,
        sub: SubscriptionId,
        replaces: Option<(SubscriptionId, Reason)>,
        reply: Option<oneshot::Sender<Result<SubscriptionId, SubscribeError>>>,
        hold: Arc<HandleGuard>,
    ) -> Result<(), NotRunning>;
}

/// Type-independent requests to any stage.
pub(crate) trait ControlPort: Send + Sync + 'static {
    fn id(&self) -> StageId;
    fn name(&self) -> &str;
    fn control(&self, control: Control) -> Result<(), NotRunning>;
    fn exit(&self) -> ExitWatch;

    fn info(&self, info: Info, ack: Option<oneshot::Sender<()>>) -> Result<(), NotRunning> {
        self.control(Control::Info(info, ack))
    }
}

pub(crate) enum Control {
    Info(Info, Option<oneshot::Sender<()>>),
    /// A typed request: a call (with a reply channel) or a cast.
    Call(Call),
    Ask(SubscriptionId, u64),
    Cancel(SubscriptionId, Reason),
    Demand(DemandFlow),
    BufferedCount(oneshot::Sender<usize>),
    Stats(oneshot::Sender<StageStats>),
    /// Publish subscriptions, demand and buffer to the registry.
    Publish(oneshot::Sender<()>),
    Drain,
    Stop(Reason),
    /// The last user handle of the stage's pipeline was dropped (see `lifetime`).
    Detach,
}

pub(crate) enum Msg<I, O> {
    // From consumers: this stage is their producer. Rare messages are boxed to
    // keep the hot ones (events, asks) small.
    Subscribe(Box<SubscribeMsg<O>>),
    Ask {
        sub: SubscriptionId,
        demand: u64,
    },
    Cancel {
        sub: SubscriptionId,
        reason: CancelReason,
        echo: bool,
    },
    // From producers: this stage is their consumer.
    Events {
        sub: SubscriptionId,
        events: Vec<I>,
    },
    Cancelled {
        sub: SubscriptionId,
        reason: CancelReason,
    },
    Subscribed {
        sub: SubscriptionId,
        result: Result<(), SubscribeRefused>,
    },
    // From handles.
    SubscribeTo(Box<SubscribeToMsg<I>>),
    Control(Box<Control>),
}

pub(crate) struct SubscribeMsg<O> {
    pub(crate) sub: SubscriptionId,
    pub(crate) consumer: Arc<dyn ConsumerPort<O>>,
    pub(crate) options: SubscribeOptions<O>,
}

pub(crate) struct SubscribeToMsg<I> {
    pub(crate) producer: Arc<dyn ProducerPort<I>>,
    pub(crate) options: SubscribeOptions<I>,
    pub(crate) sub: SubscriptionId,
    pub(crate) replaces: Option<(SubscriptionId, Reason)>,
    pub(crate) reply: Option<oneshot::Sender<Result<SubscriptionId, SubscribeError>>>,
    /// Keeps the pipeline handled until the producer has answered, so that it
    /// does not detach with a subscription on its way (see `lifetime`).
    pub(crate) hold: Arc<HandleGuard>,
}

/// The sending side of a stage's mailbox; implements every port.
pub(crate) struct Mailbox<I, O> {
    pub(crate) tx: queue::Sender<Msg<I, O>>,
    pub(crate) id: StageId,
    pub(crate) name: Arc<str>,
    pub(crate) exit: ExitWatch,
    pub(crate) pulse: Pulse,
}

impl<I: Send + 'static, O: Send + 'static> ConsumerPort<I> for Mailbox<I, O> {
    fn id(&self) -> StageId {
        self.id
    }

    fn events(&self, sub: SubscriptionId, events: Vec<I>) -> Result<(), Vec<I>> {
        self.tx
            .send(Msg::Events { sub, events })
            .map_err(|msg| match msg {
                Msg::Events { events, .. } => events,
                _ => Vec::new(),
            })
    }

    fn cancelled(&self, sub: SubscriptionId, reason: CancelReason) {
        let _ = self.tx.send(Msg::Cancelled { sub, reason });
    }

    fn subscribed(&self, sub: SubscriptionId, result: Result<(), SubscribeRefused>) {
        let _ = self.tx.send(Msg::Subscribed { sub, result });
    }
}

impl<I: Send + 'static, O: Send + 'static> ProducerPort<O> for Mailbox<I, O> {
    fn id(&self) -> StageId {
        self.id
    }

    fn subscribe(
        &self,
        sub: SubscriptionId,
        consumer: Arc<dyn ConsumerPort<O>>,
        options: SubscribeOptions<O>,
    ) -> bool {
        self.tx
            .send(Msg::Subscribe(Box::new(SubscribeMsg {
                sub,
                consumer,
                options,
            })))
            .is_ok()
    }

    fn ask(&self, sub: SubscriptionId, demand: u64) -> bool {
        self.tx.send(Msg::Ask { sub, demand }).is_ok()
    }

    fn cancel(&self, sub: SubscriptionId, reason: CancelReason, echo: bool) -> bool {
        self.tx.send(Msg::Cancel { sub, reason, echo }).is_ok()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn pulse(&self) -> PulseReading {
        self.pulse.read()
    }
}

impl<I: Send + 'static, O: Send + 'static> SubscriberPort<I> for Mailbox<I, O> {
    fn subscribe_to(
        &self,
        producer: Arc<dyn ProducerPort<I>>,
        options: SubscribeOptions<I>,
        sub: SubscriptionId,
        replaces: Option<(SubscriptionId, Reason)>,
        reply: Option<oneshot::Sender<Result<SubscriptionId, SubscribeError>>>,
        hold: Arc<HandleGuard>,
    ) -> Result<(), NotRunning> {
        self.tx
            .send(Msg::SubscribeTo(Box::new(SubscribeToMsg {
                producer,
                options,
                sub,
                replaces,
                reply,
                hold,
            })))
            .map_err(|_| NotRunning)
    }
}

impl<I: Send + 'static, O: Send + 'static> ControlPort for Mailbox<I, O> {
    fn id(&self) -> StageId {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn control(&self, control: Control) -> Result<(), NotRunning> {
        self.tx
            .send(Msg::Control(Box::new(control)))
            .map_err(|_| NotRunning)
    }

    fn exit(&self) -> ExitWatch {
        self.exit.clone()
    }
}

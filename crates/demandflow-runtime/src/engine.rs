//! The task that runs one stage: its mailbox loop, both sides of its
//! subscriptions, its buffer and its dispatcher.
//!
//! This file holds the stage's state ([`Engine`]), how it starts and its main
//! loop, which takes one message at a time and then settles what the message
//! set in motion. The rest is split by what it is about, each module adding
//! methods to [`Engine`]:
//!
//! - `producer`: consumers subscribing and asking, demand to serve, the buffer
//!   and the dispatcher; `markers`: infos, calls and deferred stops ordered
//!   behind the events emitted before them;
//! - `consumer`: subscriptions to producers, their events and the demand asked
//!   of them;
//! - `effects`: applying what callbacks asked for and serving demand until
//!   nothing is left (`flush`, `settle`);
//! - `shutdown`: finishing a drain and ending the stage; `lifetime`: running on
//!   once no handle is left;
//! - `stats`, `diagnostics`, `watchdog`: what the stage shows of itself, its
//!   warnings and its stall reports; `ids`: maps keyed by subscription id.

use std::collections::VecDeque;
use std::sync::Arc;

use demandflow_core::{
    AutoDemand, Buffer, BufferKeep, CancelMode, CancelReason, Dispatcher, Reason, StageId,
    SubscriptionId,
};
use tokio::sync::oneshot;
use tracing::Instrument;

mod consumer;
mod diagnostics;
mod effects;
mod ids;
mod lifetime;
mod markers;
mod producer;
mod shutdown;
mod stats;
mod watchdog;

pub(crate) use ids::IdMap;

pub(crate) use watchdog::DEFAULT_STALL_REPORT;

use crate::behaviour::Behaviour;
use crate::call::Message;
use crate::catch::{CatchUnwind, panic_reason};
use crate::exit;
use crate::group::{HandleGuard, Node};
use crate::port::{
    ConsumerPort, Control, ControlPort, Mailbox, Msg, ProducerPort, Pulse, SubscribeMsg,
    SubscribeToMsg,
};
use crate::queue;
use crate::registry;
use crate::{Context, DemandFlow, StageKind, StartError, SubscribeError};

/// Stage options the builders collect.
pub(crate) struct EngineOptions {
    pub(crate) name: Option<String>,
    pub(crate) buffer_size: usize,
    pub(crate) buffer_keep: BufferKeep,
    pub(crate) flow: DemandFlow,
    pub(crate) stall_report: Option<std::time::Duration>,
}

impl EngineOptions {
    /// A stage's options before its builder changes any: unnamed, a buffer of
    /// `buffer_size` events that drops the oldest, forwarding demand, the
    /// default stall report.
    pub(crate) fn new(buffer_size: usize) -> Self {
        EngineOptions {
            name: None,
            buffer_size,
            buffer_keep: BufferKeep::Last,
            flow: DemandFlow::Forward,
            stall_report: Some(DEFAULT_STALL_REPORT),
        }
    }
}

/// What starting a stage hands to the builder that wraps it in a handle.
pub(crate) struct Started<I, O> {
    pub(crate) mailbox: Arc<Mailbox<I, O>>,
    pub(crate) guard: Arc<HandleGuard>,
}

/// A stage's task not spawned yet: a fused chain runs several in one task.
pub(crate) type StageTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Spawns the stage's task on the current tokio runtime or, with `fused`,
/// appends it there for a fused chain to run in its own task.
pub(crate) fn start<B, D>(
    behaviour: B,
    dispatcher: D,
    options: EngineOptions,
    fused: Option<&mut Vec<StageTask>>,
) -> Result<Started<B::In, B::Out>, StartError>
where
    B: Behaviour,
    D: Dispatcher<B::Out>,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
    let (tx, rx) = queue::channel();
    let (exit_tx, exit_rx) = exit::exit_channel();
    let id = StageId::next();
    let kind = match B::KIND {
        StageKind::Producer => "producer",
        StageKind::ProducerConsumer => "producer_consumer",
        StageKind::Consumer => "consumer",
    };
    let name: Arc<str> = options
        .name
        .unwrap_or_else(|| format!("{kind}-{}", id.as_u64()))
        .into();
    let mailbox = Arc::new(Mailbox {
        tx,
        id,
        name: name.clone(),
        exit: exit_rx,
        pulse: Pulse::default(),
    });
    let control: Arc<dyn ControlPort> = mailbox.clone();
    let guard = HandleGuard::new(Node::new(&control));
    let probe = Arc::new(registry::Probe {
        id,
        name: name.clone(),
        kind: B::KIND,
        buffer_limit: (B::KIND != StageKind::Consumer && options.buffer_size != usize::MAX)
            .then_some(options.buffer_size),
        events_in: registry::Counter::default(),
        events_out: registry::Counter::default(),
        events_dropped: registry::Counter::default(),
        published: std::sync::Mutex::default(),
        control: Arc::downgrade(&control),
    });
    let observed: Arc<dyn registry::Observed> = probe.clone();
    let registration = Some(registry::register(&observed));
    let engine = Engine {
        ctx: Context::new(id, control),
        behaviour,
        dispatcher,
        rx,
        me: mailbox.clone(),
        exit: exit_tx,
        consumers: IdMap::default(),
        buffer: Buffer::new(options.buffer_size, options.buffer_keep),
        flow: options.flow,
        accumulated: VecDeque::new(),
        replay: VecDeque::new(),
        owed: 0,
        redispatch: false,
        from_buffer: 0,
        held_infos: VecDeque::new(),
        to_serve: 0,
        pc_demand: 0,
        dropped_unclaimed: 0,
        pending_stop: None,
        draining: false,
        drain_finishing: false,
        producers: IdMap::default(),
        input: VecDeque::new(),
        #[cfg(feature = "metrics")]
        histograms: registry::metrics::Histograms::new(&name),
        probe,
        registration,
        stop: None,
        life: lifetime::Lifetime::default(),
        warnings: diagnostics::Warnings::new(name.clone()),
        watch: watchdog::Watch::new(options.stall_report),
    };
    let span = tracing::debug_span!("stage", id = id.as_u64(), name = %name, kind);
    let task = engine.run().instrument(span);
    match fused {
        Some(tasks) => tasks.push(Box::pin(task)),
        None => {
            runtime.spawn(task);
        }
    }
    Ok(Started { mailbox, guard })
}

enum Marker {
    Message(Message),
    Stop(Reason),
}

/// What an accumulating producer records, replayed in order on forward. (The
/// events it emits meanwhile wait in its buffer.)
enum Accumulated {
    /// A consumer's ask, replayed through the dispatcher: so with a broadcast
    /// dispatcher every consumer that subscribed while accumulating is counted
    /// before any demand goes upstream.
    Ask(SubscriptionId, u64),
    /// Demand the dispatcher forwarded upstream on its own.
    Demand(u64),
    /// A stop after everything recorded before it (a finite source ran dry).
    StopAfter(Reason),
}

/// Work a producer-consumer received and handles once it has downstream demand.
enum Input<I> {
    Events(SubscriptionId, Vec<I>),
    Cancelled(SubscriptionId, CancelReason),
    Message(Message),
}

type SubscribeReply = oneshot::Sender<Result<SubscriptionId, SubscribeError>>;

enum UpState {
    /// Waiting for the producer to accept.
    Pending(Option<SubscribeReply>),
    Active,
    /// Cancel sent, waiting for the producer's confirmation. `apply_mode` is false
    /// when the subscription is being replaced (resubscribe).
    Cancelling {
        apply_mode: bool,
    },
}

/// This stage's subscription to a producer.
struct Upstream<I> {
    producer: Arc<dyn ProducerPort<I>>,
    /// Automatic demand's accounting; `None` when the stage asks by hand.
    demand: Option<AutoDemand>,
    /// Events asked of the producer and not received yet, in either mode:
    /// what the stall watchdog sees a stage wait for.
    outstanding: u64,
    /// The producer's pulse when the watchdog last looked (see `watchdog`).
    turns_seen: u64,
    cancel: CancelMode,
    state: UpState,
}

struct Engine<B: Behaviour, D> {
    behaviour: B,
    dispatcher: D,
    ctx: Context<B::Out>,
    rx: queue::Receiver<Msg<B::In, B::Out>>,
    me: Arc<Mailbox<B::In, B::Out>>,
    exit: exit::ExitSender,
    // Producer side.
    consumers: IdMap<Arc<dyn ConsumerPort<B::Out>>>,
    buffer: Buffer<B::Out, Marker>,
    flow: DemandFlow,
    accumulated: VecDeque<Accumulated>,
    replay: VecDeque<Accumulated>,
    /// Demand recorded in `accumulated` and `replay` and not yet replayed: the
    /// buffer holds that many events on top of its capacity, so that what was
    /// asked for is served before anything is dropped.
    owed: u64,
    /// Set on switching to forward: buffered events may meet demand the
    /// dispatcher already had, so they are offered to it again.
    redispatch: bool,
    /// Demand already asked of the stage, to serve from buffered events that
    /// wait behind a marker.
    from_buffer: u64,
    /// Infos and calls out of the buffer, waiting behind events queued in the
    /// dispatcher.
    held_infos: VecDeque<Message>,
    /// Demand from the dispatcher waiting to be served from the buffer or by the stage.
    to_serve: u64,
    /// Producer-consumers: downstream demand not yet met by emitted events.
    pc_demand: u64,
    /// Events the buffer dropped that no ask has re-requested yet (see `on_ask`).
    dropped_unclaimed: u64,
    /// A deferred stop whose buffered events have gone, waiting for the
    /// dispatcher's own queues to empty.
    pending_stop: Option<Reason>,
    /// Draining: producers take no new input; other stages stop once their
    /// producers are gone and their input is handled.
    draining: bool,
    drain_finishing: bool,
    // Consumer side.
    producers: IdMap<Upstream<B::In>>,
    input: VecDeque<Input<B::In>>,
    /// The counters (events in, out, dropped), which the registry reads.
    probe: Arc<registry::Probe>,
    /// Lists the stage in the registry until it ends.
    registration: Option<registry::Registration>,
    #[cfg(feature = "metrics")]
    histograms: registry::metrics::Histograms,
    stop: Option<Reason>,
    life: lifetime::Lifetime,
    warnings: diagnostics::Warnings,
    watch: watchdog::Watch,
}

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    /// The stage's task: the main loop, then the shutdown.
    ///
    /// Written as an `async move` block rather than an `async fn run(self)`:
    /// an async fn moves its arguments into locals of its future and keeps the
    /// argument's own slot as well, so the engine would be stored twice in every
    /// stage's task (and twice more inside a by-value `shutdown`). The block
    /// keeps the engine once, where it was captured. The main loop and the
    /// shutdown are boxed, so that the task holds the engine and two pointers:
    /// each is sized for its largest await, and only one of them runs at a time.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store the engine twice (see above)"
    )]
    fn run(mut self) -> impl Future<Output = ()> + Send
    where
        Self: Send,
    {
        async move {
            let reason = match CatchUnwind::new(self.main_loop()).await {
                Ok(reason) => reason,
                Err(payload) => panic_reason(&*payload),
            };
            Box::pin(self.shutdown(reason)).await;
        }
    }

    async fn main_loop(&mut self) -> Reason {
        // Boxed: it runs once, and a user's `init` future may be large.
        Box::pin(self.behaviour.init(&mut self.ctx)).await;
        self.settle().await;
        loop {
            if let Some(reason) = self.stop.take() {
                return reason;
            }
            let msg = self.next_msg().await;
            // The hot messages are handled here, without building the future of
            // `handle`, which is as large as its largest branch; the rare ones
            // are boxed so that this loop's own future stays small.
            match msg {
                Msg::Ask { sub, demand } => {
                    self.on_ask(sub, demand);
                    if self.can_serve_directly() {
                        // What `settle` would do, without its layers of futures:
                        // nothing is buffered, so the whole demand goes to the stage.
                        let demand = std::mem::take(&mut self.to_serve);
                        self.behaviour.demand(demand, &mut self.ctx).await;
                        if self.ctx.actions.is_empty() {
                            let out = std::mem::take(&mut self.ctx.out);
                            self.emit(out);
                        }
                    }
                }
                Msg::Events { sub, events } => {
                    if let Some(events) = self.receive(sub, events) {
                        self.consume(sub, events).await;
                    }
                }
                msg => Box::pin(self.handle(msg)).await,
            }
            if self.life.detached {
                self.wind_down_if_idle();
            }
            if !self.is_settled() {
                self.settle().await;
            }
        }
    }

    /// `true` when a producer's demand can go straight to `handle_demand`:
    /// `settle` would do exactly that, since nothing is buffered, replayed,
    /// waiting to be applied or waiting behind events (a marker).
    fn can_serve_directly(&self) -> bool {
        B::KIND == StageKind::Producer
            && self.to_serve > 0
            && self.flow == DemandFlow::Forward
            && self.buffer.is_empty()
            && self.replay.is_empty()
            && !self.draining
            && self.nothing_to_apply()
    }

    /// `true` when `settle` would have nothing to do: checked first because
    /// building its future costs more than this test.
    fn is_settled(&self) -> bool {
        self.is_flushed()
            && (self.flow != DemandFlow::Forward || self.replay.is_empty())
            && (B::KIND != StageKind::ProducerConsumer || self.input.is_empty())
            && !self.draining
    }

    /// `true` when `flush` would have nothing to do (the same shortcut).
    fn is_flushed(&self) -> bool {
        self.nothing_to_apply() && (self.flow != DemandFlow::Forward || self.to_serve == 0)
    }

    /// `true` when no emitted event, action, stop or marker waits to be applied.
    fn nothing_to_apply(&self) -> bool {
        self.ctx.out.is_empty()
            && self.ctx.actions.is_empty()
            && self.stop.is_none()
            && self.pending_stop.is_none()
            && self.buffer.markers_len() == 0
            && self.held_infos.is_empty()
            && !self.redispatch
    }

    async fn handle(&mut self, msg: Msg<B::In, B::Out>) {
        match msg {
            Msg::Subscribe(msg) => {
                let SubscribeMsg {
                    sub,
                    consumer,
                    options,
                } = *msg;
                self.on_subscribe(sub, consumer, options).await;
            }
            Msg::Ask { sub, demand } => self.on_ask(sub, demand),
            Msg::Cancel { sub, reason, echo } => {
                if let Some(port) = self.consumers.remove(&sub) {
                    self.remove_consumer(sub, port, reason, echo).await;
                }
            }
            Msg::Events { sub, events } => {
                if let Some(events) = self.receive(sub, events) {
                    self.consume(sub, events).await;
                }
            }
            Msg::Cancelled { sub, reason } => {
                // Behind the queued input, so that the events of the subscription
                // are handled before it ends; but a subscription the producer never
                // accepted has no events queued, and someone may be waiting in
                // `subscribe_to` to hear that it failed.
                let pending = self
                    .producers
                    .get(&sub)
                    .is_some_and(|up| matches!(up.state, UpState::Pending(_)));
                if !self.input.is_empty() && !pending {
                    self.input.push_back(Input::Cancelled(sub, reason));
                } else {
                    self.on_upstream_ended(sub, reason).await;
                }
            }
            Msg::Subscribed { sub, result } => self.on_subscribed(sub, result).await,
            Msg::SubscribeTo(msg) => {
                let msg: SubscribeToMsg<B::In> = *msg;
                if let Some((old, reason)) = msg.replaces {
                    self.cancel_upstream(old, reason, false);
                }
                self.subscribe_to(msg.producer, msg.options, msg.sub, msg.reply)
                    .await;
                self.hold_until_answered(msg.sub, msg.hold);
            }
            Msg::Control(control) => self.on_control(*control).await,
        }
    }

    async fn on_control(&mut self, control: Control) {
        match control {
            Control::Info(info, ack) => {
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                self.on_message(Message::Info(info)).await;
            }
            Control::Call(call) => {
                if self.behaviour.answers(&call) {
                    self.on_message(Message::Call(call)).await;
                } else if let Some(request) = call.refuse() {
                    self.warnings.unanswered(request);
                }
            }
            Control::Ask(sub, demand) => self.ask_upstream(sub, demand),
            Control::Cancel(sub, reason) => self.cancel(sub, reason).await,
            Control::Demand(flow) => self.set_flow(flow),
            Control::BufferedCount(reply) => {
                let _ = reply.send(self.held());
            }
            Control::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Control::Publish(reply) => {
                self.publish();
                let _ = reply.send(());
            }
            Control::Drain => {
                if !self.draining {
                    self.draining = true;
                    tracing::debug!("draining");
                    if B::KIND == StageKind::Producer {
                        self.behaviour.drain(&mut self.ctx).await;
                    }
                }
            }
            Control::Stop(reason) => {
                self.stop.get_or_insert(reason);
            }
            Control::Detach => self.detach(),
        }
    }
}

//! What a callback can do: the [`Context`] it records effects on (emit, ask,
//! cancel, stop), carried out by the runtime when the callback returns, and
//! the demand modes a subscription or stage runs in.

use std::sync::Arc;

use demandflow_core::{Reason, StageId, SubscriptionId};

use crate::Info;
use crate::port::ControlPort;

/// Whether a producer hands demand to `handle_demand` as it arrives or records it.
///
/// A producer that *accumulates* records incoming demand in order instead of
/// acting on it, and holds the events it emits in its buffer instead of
/// dispatching them; switching to *forward* replays the demand in order, each
/// demand separately, served from the held events first (SEMANTICS.md §3). Start
/// a broadcasting producer in accumulate mode to let all its consumers subscribe
/// before the first event flows.
///
/// What an accumulating producer holds is bounded by its `buffer_size` plus the
/// demand recorded meanwhile (events already asked for are never dropped);
/// beyond that its `buffer_keep` applies and drops are reported as usual. Read
/// the current mode with the handle's `demand_flow()` or in
/// [`StageStats::demand_flow`](crate::StageStats::demand_flow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DemandFlow {
    /// Demand is acted on as it arrives (the default).
    #[default]
    Forward,
    /// Demand is recorded, and emitted events held, until the producer switches
    /// to forward.
    Accumulate,
}

/// How a consumer asks for events on one subscription, chosen in `handle_subscribe`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DemandMode {
    /// The runtime asks `max_demand` at once and re-asks as batches are handled
    /// (SEMANTICS.md §2).
    #[default]
    Automatic,
    /// Nothing is asked automatically; every batch is one `handle_events` call and
    /// the stage asks itself with [`Context::ask`] or the handle's `ask`.
    Manual,
}

/// Which side of a subscription the *other* stage is, for producer-consumers'
/// `handle_subscribe` and `handle_cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The other stage is a producer this stage consumes from.
    Producer,
    /// The other stage is a consumer of this stage.
    Consumer,
}

#[derive(Debug)]
pub(crate) enum Action {
    Ask(SubscriptionId, u64),
    Cancel(SubscriptionId, Reason),
    Stop(Reason),
    StopAfterBuffered(Reason),
    Demand(DemandFlow),
}

/// What a callback can do besides returning: emit events, ask, cancel, stop.
///
/// Every callback gets the stage's context. Effects are applied by the runtime in
/// order once the callback returns: emitted events are dispatched first, then asks,
/// cancels and stops.
///
/// `O` is the type of events the stage emits; consumers get a
/// `Context<Infallible>`, on which [`emit`](Context::emit) cannot be called.
pub struct Context<O> {
    pub(crate) out: Vec<O>,
    pub(crate) actions: Vec<Action>,
    pub(crate) id: StageId,
    pub(crate) me: Arc<dyn ControlPort>,
    /// `(sub, max_demand, min_demand)` of each subscription to a producer.
    pub(crate) bounds: Vec<(SubscriptionId, u64, u64)>,
}

impl<O> Context<O> {
    pub(crate) fn new(id: StageId, me: Arc<dyn ControlPort>) -> Self {
        Context {
            out: Vec::new(),
            actions: Vec::new(),
            id,
            me,
            bounds: Vec::new(),
        }
    }

    /// Emits one event. Producers may emit from any callback; events beyond the
    /// current demand are buffered.
    pub fn emit(&mut self, event: O) {
        self.out.push(event);
    }

    /// Emits a batch of events, in order.
    pub fn emit_all(&mut self, events: impl IntoIterator<Item = O>) {
        self.out.extend(events);
    }

    /// Emits `events`, taking over the vector when nothing else was emitted yet.
    pub fn emit_vec(&mut self, mut events: Vec<O>) {
        if self.out.is_empty() {
            std::mem::swap(&mut self.out, &mut events);
        } else {
            self.out.append(&mut events);
        }
    }

    /// Asks the producer of `sub` for `demand` more events (manual demand).
    ///
    /// Asking 0, or on a subscription that has ended, does nothing.
    pub fn ask(&mut self, sub: SubscriptionId, demand: u64) {
        if demand > 0 {
            self.actions.push(Action::Ask(sub, demand));
        }
    }

    /// Cancels subscription `sub` (upstream or downstream) with `reason`.
    ///
    /// Cancelling twice, or a subscription that has ended, does nothing.
    pub fn cancel(&mut self, sub: SubscriptionId, reason: Reason) {
        self.actions.push(Action::Cancel(sub, reason));
    }

    /// Stops the stage with `reason` once this callback returns.
    ///
    /// In a producer or producer-consumer, a normal reason ([`Reason::Normal`],
    /// [`Reason::Shutdown`]) first delivers every event emitted or buffered so
    /// far, as consumers ask for them, exactly like
    /// [`stop_after_buffered`](Self::stop_after_buffered); with no consumer
    /// subscribed to take them, they are lost and the exit reason is an error
    /// saying how many. An abnormal reason stops the stage at once, dropping its
    /// buffer. In a consumer, the stage stops once this callback returns.
    pub fn stop(&mut self, reason: Reason) {
        self.actions.push(Action::Stop(reason));
    }

    /// Stops the stage with `reason` once every event emitted or buffered so far
    /// has been dispatched (how a finite source ends).
    pub fn stop_after_buffered(&mut self, reason: Reason) {
        self.actions.push(Action::StopAfterBuffered(reason));
    }

    /// Switches a producer between forwarding and accumulating demand.
    pub fn set_demand_flow(&mut self, flow: DemandFlow) {
        self.actions.push(Action::Demand(flow));
    }

    /// The `(max_demand, min_demand)` of subscription `sub` to a producer, after
    /// defaults, from `handle_subscribe` until the subscription's cancel handler
    /// has run; `None` for any other subscription.
    ///
    /// A consumer in manual demand mode uses it to ask as the subscriber
    /// configured (the consumer supervisor asks `max_demand` on subscribe).
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_runtime::{
    ///     Consumer, ConsumerContext, DemandMode, SubscribeOptions, SubscriptionId, consumer,
    ///     from_iter, producer,
    /// };
    ///
    /// /// Asks max_demand once, by hand, and keeps what it gets.
    /// struct AskOnce(tokio::sync::mpsc::UnboundedSender<Vec<u32>>);
    ///
    /// impl Consumer for AskOnce {
    ///     type Event = u32;
    ///
    ///     async fn handle_subscribe(&mut self, sub: SubscriptionId, ctx: &mut ConsumerContext) -> DemandMode {
    ///         let (max, min) = ctx.demand_bounds(sub).unwrap();
    ///         assert_eq!((max, min), (4, 2)); // min_demand defaulted to max / 2
    ///         ctx.ask(sub, max);
    ///         DemandMode::Manual
    ///     }
    ///
    ///     async fn handle_events(&mut self, events: Vec<u32>, _: SubscriptionId, _: &mut ConsumerContext) {
    ///         let _ = self.0.send(events);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let numbers = producer(from_iter(0..100)).start().unwrap();
    /// let c = consumer(AskOnce(tx)).start().unwrap();
    /// c.subscribe_to(&numbers, SubscribeOptions::new().max_demand(4)).await.unwrap();
    /// assert_eq!(rx.recv().await, Some(vec![0, 1, 2, 3]));
    /// # }
    /// ```
    pub fn demand_bounds(&self, sub: SubscriptionId) -> Option<(u64, u64)> {
        self.bounds
            .iter()
            .find(|(s, ..)| *s == sub)
            .map(|&(_, max, min)| (max, min))
    }

    /// This stage's id.
    pub fn stage_id(&self) -> StageId {
        self.id
    }

    /// A sender for info messages to this stage, for timers and spawned tasks.
    ///
    /// It does not keep the stage's pipeline alive.
    pub fn info_sender(&self) -> InfoSender {
        InfoSender(self.me.clone())
    }
}

/// Sends info messages to a stage, from a timer or any task.
///
/// Unlike a stage handle it does not keep the pipeline alive, so a stage can hold
/// one to itself.
#[derive(Clone)]
pub struct InfoSender(pub(crate) Arc<dyn ControlPort>);

impl InfoSender {
    /// Queues `message` for the stage's `handle_info` (behind buffered events, for
    /// a producer).
    ///
    /// # Errors
    ///
    /// [`NotRunning`](crate::NotRunning) when the stage has stopped.
    pub fn send<T: std::any::Any + Send>(&self, message: T) -> Result<(), crate::NotRunning> {
        self.0.info(Info::new(message), None)
    }

    /// Queues `request` for the stage's [`HandleCall<R, _>`](crate::HandleCall),
    /// ordered like an info message, dropping the reply (a typed message, as a
    /// handle's `cast`).
    ///
    /// # Errors
    ///
    /// [`NotRunning`](crate::NotRunning) when the stage has stopped.
    pub fn cast<R: crate::Request>(&self, request: R) -> Result<(), crate::NotRunning> {
        self.0
            .control(crate::port::Control::Call(crate::call::Call::new(
                request, None,
            )))
    }

    /// The stage's id.
    pub fn stage_id(&self) -> StageId {
        self.0.id()
    }
}

impl std::fmt::Debug for InfoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("InfoSender").field(&self.0.id()).finish()
    }
}

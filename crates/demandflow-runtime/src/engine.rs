//! The task that runs one stage: its mailbox loop, both sides of its
//! subscriptions, its buffer and its dispatcher.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use demandflow_core::{
    AutoDemand, Buffer, BufferKeep, CancelMode, CancelReason, Deliver, Dispatched, Dispatcher,
    Reason, StageId, SubscribeOptions, SubscribeRefused, SubscriptionId, split_chunks,
};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

mod diagnostics;
mod lifetime;
mod watchdog;

pub(crate) use watchdog::DEFAULT_STALL_REPORT;

use crate::behaviour::Behaviour;
use crate::call::Message;
use crate::catch::{CatchUnwind, panic_reason};
use crate::context::Action;
use crate::group::{HandleGuard, Node};
use crate::port::{
    ConsumerPort, Control, ControlPort, Mailbox, Msg, ProducerPort, SubscribeMsg, SubscribeToMsg,
};
use crate::queue;
use crate::registry;
use crate::{
    Context, DemandFlow, DemandMode, Peer, StageKind, StageStats, StartError, SubscribeError,
    SubscriptionStats,
};

/// Stage options the builders collect.
pub(crate) struct EngineOptions {
    pub(crate) name: Option<String>,
    pub(crate) buffer_size: usize,
    pub(crate) buffer_keep: BufferKeep,
    pub(crate) flow: DemandFlow,
    pub(crate) stall_report: Option<std::time::Duration>,
}

/// What starting a stage hands to the builder that wraps it in a handle.
pub(crate) struct Started<I, O> {
    pub(crate) mailbox: Arc<Mailbox<I, O>>,
    pub(crate) guard: Arc<HandleGuard>,
}

/// Spawns the stage's task on the current tokio runtime.
pub(crate) fn start<B, D>(
    behaviour: B,
    dispatcher: D,
    options: EngineOptions,
) -> Result<Started<B::In, B::Out>, StartError>
where
    B: Behaviour,
    D: Dispatcher<B::Out>,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
    let (tx, rx) = queue::channel();
    let (exit_tx, exit_rx) = watch::channel(None);
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
    runtime.spawn(engine.run().instrument(span));
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
    demand: Option<AutoDemand>,
    cancel: CancelMode,
    state: UpState,
}

struct Engine<B: Behaviour, D> {
    behaviour: B,
    dispatcher: D,
    ctx: Context<B::Out>,
    rx: queue::Receiver<Msg<B::In, B::Out>>,
    me: Arc<Mailbox<B::In, B::Out>>,
    exit: watch::Sender<Option<Reason>>,
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

/// Sends a dispatcher's deliveries to the subscribed consumers.
struct Outbox<'a, T> {
    consumers: &'a IdMap<Arc<dyn ConsumerPort<T>>>,
    delivered: &'a registry::Counter,
    lost: &'a registry::Counter,
    warnings: &'a mut diagnostics::Warnings,
}

impl<T: 'static> Deliver<T> for Outbox<'_, T> {
    fn deliver(&mut self, sub: SubscriptionId, batch: Vec<T>) {
        let n = batch.len() as u64;
        let sent = match self.consumers.get(&sub) {
            Some(port) => port.events(sub, batch).is_ok(),
            None => false,
        };
        if sent {
            self.delivered.add(n);
        } else {
            // The consumer stopped; its down notice is on its way. Like a message to
            // a dead process, the batch is lost, but never silently.
            self.lost.add(n);
            self.warnings.lost(sub, n);
        }
    }
}

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    async fn run(mut self) {
        let reason = match CatchUnwind::new(self.main_loop()).await {
            Ok(reason) => reason,
            Err(payload) => panic_reason(&*payload),
        };
        self.shutdown(reason).await;
    }

    async fn main_loop(&mut self) -> Reason {
        self.behaviour.init(&mut self.ctx).await;
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
                    self.probe.events_in.add(events.len() as u64);
                    if B::KIND == StageKind::ProducerConsumer {
                        self.input.push_back(Input::Events(sub, events));
                    } else {
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
                self.probe.events_in.add(events.len() as u64);
                if B::KIND == StageKind::ProducerConsumer {
                    self.input.push_back(Input::Events(sub, events));
                } else {
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
                let SubscribeToMsg {
                    producer,
                    options,
                    sub,
                    replaces,
                    reply,
                    hold,
                } = *msg;
                if let Some((old, reason)) = replaces {
                    self.cancel_upstream(old, reason, false);
                }
                self.subscribe_to(producer, options, sub, reply).await;
                self.hold_until_answered(sub, hold);
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
                let _ = reply.send(self.buffer.len() + self.dispatcher.buffered());
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

    /// A draining consumer or producer-consumer whose producers are all gone and
    /// whose input is handled stops (a producer-consumer after delivering its buffer).
    /// Returns true when it started stopping.
    fn finish_drain(&mut self) -> bool {
        if self.drain_finishing
            || !self.draining
            || B::KIND == StageKind::Producer
            || !self.producers.is_empty()
            || !self.input.is_empty()
        {
            return false;
        }
        self.drain_finishing = true;
        match B::KIND {
            StageKind::ProducerConsumer => self.stop_after_buffered(Reason::Shutdown),
            _ => {
                self.stop.get_or_insert(Reason::Shutdown);
            }
        }
        true
    }

    // ----- producer side -------------------------------------------------------

    async fn on_subscribe(
        &mut self,
        sub: SubscriptionId,
        consumer: Arc<dyn ConsumerPort<B::Out>>,
        options: SubscribeOptions<B::Out>,
    ) {
        if B::KIND == StageKind::Consumer {
            consumer.subscribed(
                sub,
                Err(SubscribeRefused::Other(
                    "a consumer cannot be subscribed to".into(),
                )),
            );
            return;
        }
        match self.dispatcher.subscribe(sub, consumer.id(), &options) {
            Err(refused) => {
                tracing::debug!(%sub, consumer = %consumer.id(), %refused, "subscription refused");
                consumer.subscribed(sub, Err(refused));
            }
            Ok(demand) => {
                tracing::debug!(%sub, consumer = %consumer.id(), "consumer subscribed");
                consumer.subscribed(sub, Ok(()));
                self.consumers.insert(sub, consumer);
                self.behaviour
                    .subscribe(Peer::Consumer, sub, &mut self.ctx)
                    .await;
                self.add_demand(demand);
            }
        }
    }

    fn on_ask(&mut self, sub: SubscriptionId, demand: u64) {
        if demand == 0 || !self.consumers.contains_key(&sub) {
            return;
        }
        if self.flow == DemandFlow::Accumulate {
            self.accumulated.push_back(Accumulated::Ask(sub, demand));
            self.owe(demand);
            return;
        }
        let mut outbox = Outbox {
            consumers: &self.consumers,
            delivered: &self.probe.events_out,
            lost: &self.probe.events_dropped,
            warnings: &mut self.warnings,
        };
        let upstream = self.dispatcher.ask(sub, demand, &mut outbox);
        // Demand the dispatcher did not forward had already been asked of the
        // stage (the demand dispatcher serves it from a cancelled subscription's
        // unmet demand). The stage may have emitted those events while nobody had
        // demand, so they can be waiting in the buffer: serve it from there, or
        // they would stay buffered while this consumer waits for them.
        // If they are not there because the buffer overflowed and dropped them,
        // they will never come: ask for them again, or this consumer would stall.
        let absorbed = demand.saturating_sub(upstream);
        self.from_buffer = self.from_buffer.saturating_add(absorbed);
        let refill = self.serve_from_buffer();
        self.add_demand(upstream.saturating_add(refill));
    }

    /// Serves `from_buffer` from buffered events up to the next marker. Once the
    /// buffer is empty, what it could not serve was dropped: returns how much of
    /// it to ask of the stage again.
    fn serve_from_buffer(&mut self) -> u64 {
        if self.from_buffer == 0 {
            return 0;
        }
        let (taken, all_dispatched) = self.serve_buffered(self.from_buffer);
        self.from_buffer -= taken as u64;
        if all_dispatched && !self.buffer.is_empty() && self.from_buffer > 0 {
            // Stopped at a marker: the rest is served once it is released.
            return 0;
        }
        let missing = std::mem::take(&mut self.from_buffer);
        let refill = missing.min(self.dropped_unclaimed);
        self.dropped_unclaimed -= refill;
        refill
    }

    async fn remove_consumer(
        &mut self,
        sub: SubscriptionId,
        port: Arc<dyn ConsumerPort<B::Out>>,
        reason: CancelReason,
        echo: bool,
    ) {
        tracing::debug!(%sub, %reason, "consumer subscription cancelled");
        let demand = self.dispatcher.cancel(sub);
        if echo {
            port.cancelled(sub, reason.clone());
        }
        self.behaviour
            .cancel(Peer::Consumer, sub, &reason, &mut self.ctx)
            .await;
        self.add_demand(demand);
    }

    /// Demand the dispatcher forwarded upstream: served in `settle`, or recorded
    /// while accumulating.
    fn add_demand(&mut self, demand: u64) {
        if demand == 0 {
            return;
        }
        match self.flow {
            DemandFlow::Accumulate => {
                self.accumulated.push_back(Accumulated::Demand(demand));
                self.owe(demand);
            }
            DemandFlow::Forward => self.to_serve = self.to_serve.saturating_add(demand),
        }
    }

    /// Records demand that events emitted while accumulating will meet: the
    /// buffer makes room for them on top of its capacity.
    fn owe(&mut self, demand: u64) {
        self.owed = self.owed.saturating_add(demand);
        self.buffer
            .set_reserve(usize::try_from(self.owed).unwrap_or(usize::MAX));
    }

    /// Brings the buffer's reserve down to the demand still to replay, dropping
    /// (and reporting) what no longer fits.
    fn settle_reserve(&mut self) {
        let owed = usize::try_from(self.owed).unwrap_or(usize::MAX);
        if self.buffer.reserve() > owed {
            let dropped = self.buffer.set_reserve(owed);
            self.report_dropped(dropped);
        }
    }

    fn set_flow(&mut self, flow: DemandFlow) {
        if self.flow == flow {
            return;
        }
        self.flow = flow;
        // Forward: buffered events may meet demand the dispatcher had already.
        self.redispatch = flow == DemandFlow::Forward && !self.buffer.is_empty();
        if flow == DemandFlow::Forward {
            self.replay.append(&mut self.accumulated);
        }
    }

    /// Offers buffered events, up to the next marker, to demand the dispatcher
    /// already has. Returns true when it took them all and more wait behind the
    /// marker.
    fn redispatch_buffered(&mut self) -> bool {
        let events = self.buffer.take(self.buffer.len());
        if events.is_empty() {
            return false;
        }
        let Dispatched { leftover, demand } = self.dispatch_raw(events);
        let all_taken = leftover.is_empty();
        if !all_taken {
            self.buffer.push_front(leftover);
        }
        self.add_demand(demand);
        all_taken && !self.buffer.is_empty()
    }

    /// Dispatches up to `demand` buffered events, stopping at the next marker
    /// (a batch never spans one). Returns how many it took, and whether the
    /// dispatcher took them all (else the rest went back to the buffer).
    fn serve_buffered(&mut self, demand: u64) -> (usize, bool) {
        let events = self
            .buffer
            .take(usize::try_from(demand).unwrap_or(usize::MAX));
        let take = events.len();
        let mut all_dispatched = true;
        if take > 0 {
            let Dispatched { leftover, demand } = self.dispatch_raw(events);
            if !leftover.is_empty() {
                all_dispatched = false;
                self.buffer.push_front(leftover);
            }
            self.add_demand(demand);
        }
        (take, all_dispatched)
    }

    /// Serves `demand`: first from the buffer, then from the stage itself.
    /// Infos buffered among the events are handled at their place.
    async fn serve(&mut self, demand: u64) {
        let mut rest = demand;
        loop {
            let (taken, all_dispatched) = self.serve_buffered(rest);
            rest -= taken as u64;
            if !self.release_markers().await {
                return;
            }
            // Go on past a marker; not over events the dispatcher just handed back.
            if rest == 0 || self.buffer.is_empty() || !all_dispatched {
                break;
            }
        }
        if rest == 0 {
            return;
        }
        match B::KIND {
            StageKind::Producer => self.behaviour.demand(rest, &mut self.ctx).await,
            StageKind::ProducerConsumer => self.pc_demand = self.pc_demand.saturating_add(rest),
            StageKind::Consumer => {}
        }
    }

    /// Delivers info messages and deferred stops whose events have left the
    /// buffer, and infos whose events have left the dispatcher's queues too.
    /// Returns false when a deferred stop was reached.
    async fn release_markers(&mut self) -> bool {
        loop {
            if !self.held_infos.is_empty() && self.dispatcher.release_info() {
                if let Some(message) = self.held_infos.pop_front() {
                    self.handle_message(message).await;
                }
                continue;
            }
            match self.buffer.pop_ready_marker() {
                Some(Marker::Message(message)) => self.info_after_dispatcher(message).await,
                Some(Marker::Stop(reason)) => {
                    self.stop_when_dispatched(reason);
                    return false;
                }
                None => return true,
            }
        }
    }

    /// Handles an info whose buffered events have gone, or holds it while the
    /// dispatcher still queues events from before it.
    ///
    /// Every held info gets a marker of its own in the dispatcher, even behind
    /// another held info: `release_markers` releases one info per marker, so an
    /// info held without one would wait forever.
    async fn info_after_dispatcher(&mut self, message: Message) {
        if self.dispatcher.hold_info() || !self.held_infos.is_empty() {
            self.held_infos.push_back(message);
        } else {
            self.handle_message(message).await;
        }
    }

    /// Hands an info or a call to the stage.
    async fn handle_message(&mut self, message: Message) {
        match message {
            Message::Info(info) => self.behaviour.info(info, &mut self.ctx).await,
            Message::Call(call) => self.behaviour.call(call, &mut self.ctx).await,
        }
    }

    fn dispatch_raw(&mut self, events: Vec<B::Out>) -> Dispatched<B::Out> {
        let mut outbox = Outbox {
            consumers: &self.consumers,
            delivered: &self.probe.events_out,
            lost: &self.probe.events_dropped,
            warnings: &mut self.warnings,
        };
        self.dispatcher.dispatch(events, &mut outbox)
    }

    /// Handles events the stage emitted.
    fn emit(&mut self, events: Vec<B::Out>) {
        if events.is_empty() {
            return;
        }
        if self.flow == DemandFlow::Accumulate {
            // Held in the buffer until the producer forwards: bounded by its
            // capacity plus the demand recorded meanwhile.
            if B::KIND == StageKind::ProducerConsumer {
                self.pc_demand = self.pc_demand.saturating_sub(events.len() as u64);
            }
            self.buffer_events(events);
            return;
        }
        self.dispatch_emitted(events);
    }

    /// Dispatches emitted events, or buffers them behind those already buffered.
    fn dispatch_emitted(&mut self, events: Vec<B::Out>) {
        if B::KIND == StageKind::ProducerConsumer {
            self.pc_demand = self.pc_demand.saturating_sub(events.len() as u64);
        }
        if !self.buffer.is_empty() {
            // Behind buffered events, to keep emission order.
            self.buffer_events(events);
            return;
        }
        let Dispatched { leftover, demand } = self.dispatch_raw(events);
        if !leftover.is_empty() {
            self.buffer_events(leftover);
        }
        self.add_demand(demand);
    }

    fn buffer_events(&mut self, events: Vec<B::Out>) {
        let dropped = self.buffer.push(events);
        self.report_dropped(dropped);
    }

    fn report_dropped(&mut self, dropped: usize) {
        if dropped > 0 {
            self.probe.events_dropped.add(dropped as u64);
            self.dropped_unclaimed += dropped as u64;
            self.warnings.dropped(dropped as u64);
            self.behaviour.dropped(dropped);
        }
    }

    /// Stops once every buffered event has been dispatched.
    fn stop_after_buffered(&mut self, reason: Reason) {
        // Recorded or replayed events come first.
        if self.flow == DemandFlow::Accumulate {
            self.accumulated.push_back(Accumulated::StopAfter(reason));
            return;
        }
        if !self.replay.is_empty() {
            self.replay.push_back(Accumulated::StopAfter(reason));
            return;
        }
        self.stop_after_recorded(reason);
    }

    /// The stop of `stop_after_buffered` once everything recorded before it
    /// has been replayed: also how a replayed stop is applied, which must not be
    /// queued behind the rest of the replay again (two of them would swap
    /// places forever).
    fn stop_after_recorded(&mut self, reason: Reason) {
        if self.consumers.is_empty() && !self.buffer.is_empty() {
            tracing::warn!(
                stage = %self.me.name,
                lost = self.buffer.len(),
                "stopping with buffered events and no consumer to take them"
            );
            self.stop.get_or_insert(reason);
            return;
        }
        if let Some(Marker::Stop(reason)) = self.buffer.push_marker(Marker::Stop(reason)) {
            self.stop_when_dispatched(reason);
        }
    }

    /// Stops once the dispatcher's own queues are empty too (at once if they are,
    /// or if no consumer is left to empty them).
    fn stop_when_dispatched(&mut self, reason: Reason) {
        if (self.dispatcher.buffered() > 0 || !self.held_infos.is_empty())
            && !self.consumers.is_empty()
        {
            self.pending_stop = Some(reason);
        } else {
            self.stop.get_or_insert(reason);
        }
    }

    /// An info or a call: handled at once by a consumer, behind the queued
    /// input of a producer-consumer, and behind the buffered events of both
    /// kinds of producer.
    async fn on_message(&mut self, message: Message) {
        match B::KIND {
            StageKind::Consumer => self.handle_message(message).await,
            StageKind::ProducerConsumer if !self.input.is_empty() => {
                self.input.push_back(Input::Message(message));
            }
            _ => self.info_behind_buffer(message).await,
        }
    }

    /// Handles a producer's info after the events buffered before it.
    async fn info_behind_buffer(&mut self, info: Message) {
        if self.flow == DemandFlow::Accumulate && self.buffer.markers_len() == 0 {
            // Nothing is dispatched while accumulating, so the events held then
            // do not delay infos (many producers emit from them); events queued
            // in the dispatcher still do.
            self.info_after_dispatcher(info).await;
        } else if let Some(Marker::Message(info)) = self.buffer.push_marker(Marker::Message(info)) {
            self.info_after_dispatcher(info).await;
        }
    }

    // ----- consumer side -------------------------------------------------------

    async fn subscribe_to(
        &mut self,
        producer: Arc<dyn ProducerPort<B::In>>,
        options: SubscribeOptions<B::In>,
        sub: SubscriptionId,
        reply: Option<SubscribeReply>,
    ) {
        let (max, min) = match options.demand_bounds() {
            Ok(bounds) => bounds,
            Err(e) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e.into()));
                }
                return;
            }
        };
        let cancel = options.cancel_mode();
        let me: Arc<dyn ConsumerPort<B::In>> = self.me.clone();
        if !producer.subscribe(sub, me, options) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(SubscribeError::ProducerNotRunning));
            }
            return;
        }
        tracing::debug!(%sub, producer = %producer.id(), max_demand = max, min_demand = min, "subscribing");
        self.producers.insert(
            sub,
            Upstream {
                producer,
                demand: None,
                cancel,
                state: UpState::Pending(reply),
            },
        );
        self.ctx.bounds.push((sub, max, min));
        let mode = self
            .behaviour
            .subscribe(Peer::Producer, sub, &mut self.ctx)
            .await;
        if let Some(up) = self.producers.get_mut(&sub)
            && mode == DemandMode::Automatic
        {
            let mut demand = AutoDemand::new(max, min);
            up.producer.ask(sub, demand.subscribe());
            up.demand = Some(demand);
        }
    }

    async fn on_subscribed(&mut self, sub: SubscriptionId, result: Result<(), SubscribeRefused>) {
        self.release_hold(sub);
        let Some(up) = self.producers.get_mut(&sub) else {
            return;
        };
        match result {
            Ok(()) => {
                if let UpState::Pending(reply) = &mut up.state {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Ok(sub));
                    }
                    up.state = UpState::Active;
                }
            }
            Err(refused) => {
                let Some(up) = self.producers.remove(&sub) else {
                    return;
                };
                let reason = CancelReason::Cancel(Reason::error(refused.to_string()));
                match up.state {
                    UpState::Pending(Some(reply)) => {
                        let _ = reply.send(Err(SubscribeError::Refused(refused)));
                    }
                    _ => {
                        tracing::warn!(stage = %self.me.name, %sub, %refused, "subscription refused");
                    }
                }
                // A refused subscription never existed: the cancel mode does not apply.
                self.behaviour
                    .cancel(Peer::Producer, sub, &reason, &mut self.ctx)
                    .await;
                self.ctx.bounds.retain(|b| b.0 != sub);
            }
        }
    }

    fn ask_upstream(&mut self, sub: SubscriptionId, demand: u64) {
        if demand == 0 {
            return;
        }
        if let Some(up) = self.producers.get(&sub)
            && !matches!(up.state, UpState::Cancelling { .. })
        {
            up.producer.ask(sub, demand);
        }
    }

    /// Cancels an upstream subscription; the producer confirms and the
    /// subscription ends when the confirmation arrives.
    fn cancel_upstream(&mut self, sub: SubscriptionId, reason: Reason, apply_mode: bool) {
        let Some(up) = self.producers.get_mut(&sub) else {
            return;
        };
        if matches!(up.state, UpState::Cancelling { .. }) {
            return;
        }
        if let UpState::Pending(reply) = &mut up.state
            && let Some(reply) = reply.take()
        {
            let _ = reply.send(Ok(sub));
        }
        up.state = UpState::Cancelling { apply_mode };
        // If the producer has stopped, its down notice is already in our mailbox.
        up.producer.cancel(sub, CancelReason::Cancel(reason), true);
    }

    async fn cancel(&mut self, sub: SubscriptionId, reason: Reason) {
        if self.producers.contains_key(&sub) {
            self.cancel_upstream(sub, reason, true);
        } else if let Some(port) = self.consumers.remove(&sub) {
            self.remove_consumer(sub, port, CancelReason::Cancel(reason), true)
                .await;
        }
    }

    async fn on_upstream_ended(&mut self, sub: SubscriptionId, reason: CancelReason) {
        self.release_hold(sub);
        let Some(up) = self.producers.remove(&sub) else {
            return;
        };
        tracing::debug!(%sub, %reason, "subscription ended");
        let apply_mode = match up.state {
            UpState::Pending(reply) => {
                // The producer went away before accepting: like a refusal.
                if let Some(reply) = reply {
                    let _ = reply.send(Err(SubscribeError::ProducerNotRunning));
                }
                false
            }
            UpState::Active => true,
            UpState::Cancelling { apply_mode } => apply_mode,
        };
        self.behaviour
            .cancel(Peer::Producer, sub, &reason, &mut self.ctx)
            .await;
        self.ctx.bounds.retain(|b| b.0 != sub);
        if apply_mode && up.cancel.stops_consumer(reason.reason()) {
            let reason = reason.reason().clone();
            if B::KIND == StageKind::ProducerConsumer {
                // Deliver what is already buffered before stopping.
                self.stop_after_buffered(reason);
            } else {
                self.stop.get_or_insert(reason);
            }
        }
    }

    /// Runs the handler on a batch from `sub`, in chunks when demand is automatic.
    /// Runs `handle_events` on one batch; with the `metrics` feature, records the
    /// batch's size and the handler's time.
    #[inline]
    async fn handle_batch(&mut self, events: Vec<B::In>, sub: SubscriptionId) {
        #[cfg(feature = "metrics")]
        let (len, started) = (events.len(), std::time::Instant::now());
        self.behaviour.events(events, sub, &mut self.ctx).await;
        #[cfg(feature = "metrics")]
        self.histograms.record(len, started.elapsed());
    }

    async fn consume(&mut self, sub: SubscriptionId, events: Vec<B::In>) {
        let Some(up) = self.producers.get(&sub) else {
            self.warnings.unknown(sub, events.len() as u64);
            return;
        };
        let Some(chunk_len) = up.demand.as_ref().map(AutoDemand::chunk_len) else {
            self.handle_batch(events, sub).await;
            self.flush().await;
            return;
        };
        for chunk in split_chunks(events, chunk_len) {
            let ask = match self.producers.get_mut(&sub) {
                Some(Upstream {
                    demand: Some(demand),
                    ..
                }) => demand.consume(chunk.len() as u64),
                _ => 0,
            };
            self.handle_batch(chunk, sub).await;
            if !self.is_flushed() {
                self.flush().await;
            }
            if ask > 0 {
                self.ask_upstream(sub, ask);
            }
            if self.stop.is_some() {
                break;
            }
        }
    }

    // ----- effects -------------------------------------------------------------

    async fn perform(&mut self, action: Action) {
        match action {
            Action::Ask(sub, demand) => self.ask_upstream(sub, demand),
            Action::Cancel(sub, reason) => self.cancel(sub, reason).await,
            // A producer stopping normally delivers what it buffered first.
            Action::Stop(reason) if B::KIND != StageKind::Consumer && reason.is_normal() => {
                self.stop_normally(reason);
            }
            Action::Stop(reason) => {
                self.stop.get_or_insert(reason);
            }
            Action::StopAfterBuffered(reason) => self.stop_after_buffered(reason),
            Action::Demand(flow) => self.set_flow(flow),
        }
    }

    /// Applies the effects of callbacks and serves demand, until nothing is left.
    async fn flush(&mut self) {
        loop {
            if !self.ctx.out.is_empty() {
                let out = std::mem::take(&mut self.ctx.out);
                self.emit(out);
                continue;
            }
            if !self.ctx.actions.is_empty() {
                let action = self.ctx.actions.remove(0);
                self.perform(action).await;
                continue;
            }
            if self.stop.is_some() {
                return;
            }
            if self.pending_stop.is_some()
                && ((self.dispatcher.buffered() == 0 && self.held_infos.is_empty())
                    || self.consumers.is_empty())
            {
                self.stop = self.pending_stop.take();
                return;
            }
            if !self.release_markers().await {
                continue;
            }
            if self.redispatch && self.flow == DemandFlow::Forward {
                // Done unless it stopped at a marker, released on the next turn.
                self.redispatch = self.redispatch_buffered();
                continue;
            }
            if self.from_buffer > 0 {
                let before = self.from_buffer;
                let refill = self.serve_from_buffer();
                self.add_demand(refill);
                if self.from_buffer != before || refill > 0 {
                    continue;
                }
            }
            if self.to_serve > 0 && self.flow == DemandFlow::Forward {
                let demand = std::mem::take(&mut self.to_serve);
                self.serve(demand).await;
                continue;
            }
            return;
        }
    }

    /// `flush`, then replays accumulated demand and feeds a producer-consumer's
    /// queued input while it has downstream demand.
    async fn settle(&mut self) {
        loop {
            self.flush().await;
            if self.stop.is_some() {
                return;
            }
            if self.flow == DemandFlow::Forward
                && let Some(entry) = self.replay.pop_front()
            {
                match entry {
                    Accumulated::Ask(sub, demand) => {
                        self.owed = self.owed.saturating_sub(demand);
                        self.on_ask(sub, demand);
                    }
                    Accumulated::Demand(demand) => {
                        self.owed = self.owed.saturating_sub(demand);
                        self.serve(demand).await;
                    }
                    Accumulated::StopAfter(reason) => self.stop_after_recorded(reason),
                }
                continue;
            }
            self.settle_reserve();
            if B::KIND == StageKind::ProducerConsumer {
                let ready = match self.input.front() {
                    Some(Input::Events(..)) => self.pc_demand > 0,
                    Some(Input::Cancelled(..) | Input::Message(_)) => true,
                    None => false,
                };
                if ready {
                    match self.input.pop_front() {
                        Some(Input::Events(sub, events)) => self.consume(sub, events).await,
                        Some(Input::Cancelled(sub, reason)) => {
                            self.on_upstream_ended(sub, reason).await;
                        }
                        Some(Input::Message(message)) => self.info_behind_buffer(message).await,
                        None => {}
                    }
                    continue;
                }
            }
            if self.finish_drain() {
                continue;
            }
            return;
        }
    }

    fn stats(&self) -> StageStats {
        let mut subscriptions: Vec<SubscriptionStats> = self
            .producers
            .iter()
            .map(|(sub, up)| SubscriptionStats {
                sub: *sub,
                peer: Peer::Producer,
                pending_demand: up.demand.as_ref().map(AutoDemand::pending),
            })
            .chain(self.consumers.keys().map(|sub| SubscriptionStats {
                sub: *sub,
                peer: Peer::Consumer,
                pending_demand: self.dispatcher.pending_demand(*sub),
            }))
            .collect();
        subscriptions.sort_by_key(|s| s.sub);
        StageStats {
            id: self.me.id,
            name: self.me.name.to_string(),
            kind: B::KIND,
            events_in: self.probe.events_in.get(),
            events_out: self.probe.events_out.get(),
            events_dropped: self.probe.events_dropped.get(),
            events_misrouted: self.dispatcher.misrouted(),
            buffered: self.buffer.len() + self.dispatcher.buffered(),
            demand_flow: (B::KIND != StageKind::Consumer).then_some(self.flow),
            queued_in: self.queued_in(),
            subscriptions,
            stall: self.stall(),
        }
    }

    /// Publishes to the registry what only this task can read: subscriptions,
    /// demand and buffer.
    fn publish(&self) {
        let mut subscriptions: Vec<registry::SubscriptionEntry> = self
            .producers
            .iter()
            .map(|(sub, up)| registry::SubscriptionEntry {
                sub: *sub,
                peer: Peer::Producer,
                peer_id: up.producer.id(),
                peer_name: None,
                pending_demand: up.demand.as_ref().map(AutoDemand::pending),
                cancel: Some(up.cancel),
            })
            .chain(
                self.consumers
                    .iter()
                    .map(|(sub, port)| registry::SubscriptionEntry {
                        sub: *sub,
                        peer: Peer::Consumer,
                        peer_id: port.id(),
                        peer_name: None,
                        pending_demand: self.dispatcher.pending_demand(*sub),
                        cancel: None,
                    }),
            )
            .collect();
        subscriptions.sort_by_key(|s| s.sub);
        self.probe.publish(registry::Published {
            buffered: self.buffer.len() + self.dispatcher.buffered(),
            queued_in: self.queued_in(),
            subscriptions,
        });
    }

    fn queued_in(&self) -> usize {
        self.input
            .iter()
            .map(|i| match i {
                Input::Events(_, e) => e.len(),
                _ => 0,
            })
            .sum()
    }

    // ----- termination ---------------------------------------------------------

    async fn shutdown(mut self, reason: Reason) {
        // Producers first, so none keeps sending events while `terminate` runs
        // (a consumer supervisor waiting for its workers, say): those would be lost.
        for (sub, up) in self.producers.drain() {
            up.producer
                .cancel(sub, CancelReason::Down(reason.clone()), false);
            if let UpState::Pending(Some(reply)) = up.state {
                let _ = reply.send(Err(SubscribeError::ConsumerNotRunning));
            }
        }
        if let Err(payload) = CatchUnwind::new(self.behaviour.terminate(&reason)).await {
            tracing::error!(
                stage = %self.me.name,
                reason = %panic_reason(&*payload),
                "terminate callback panicked"
            );
        }
        // Consumers hear that this stage is down only after its exit is
        // published (below), so that whoever watches the exits of a pipeline
        // (a supervisor) never sees a consumer's exit this one caused, nor a
        // subscription refused because this one stopped, while this stage
        // still looks alive.
        let mut down: Vec<_> = self.consumers.drain().collect();
        let lost_in = self.answer_queued(&mut down);
        let buffered = self.buffer.len() + self.dispatcher.buffered();
        let queued: usize = self
            .input
            .iter()
            .map(|i| match i {
                Input::Events(_, e) => e.len(),
                _ => 0,
            })
            .sum::<usize>()
            + lost_in;
        if reason.is_normal() {
            tracing::debug!(%reason, "stage stopped");
        } else {
            tracing::warn!(stage = %self.me.name, %reason, "stage stopped");
        }
        self.warnings.flush();
        if buffered > 0 || queued > 0 {
            tracing::warn!(
                stage = %self.me.name,
                buffered,
                unhandled = queued,
                "stage stopped with events it had not delivered or handled"
            );
        }
        // Unlisted before anyone watching the exit hears of it.
        self.registration.take();
        let _ = self.exit.send(Some(reason.clone()));
        // The mailbox closes only now: a subscription refused because it is
        // closed is likewise heard after the exit.
        self.rx.close();
        self.answer_queued(&mut down);
        for (sub, port) in down {
            port.cancelled(sub, CancelReason::Down(reason.clone()));
        }
    }

    /// Answers what is queued in the mailbox so nobody waits on a stopped
    /// stage: subscriptions join `down`, to hear that this stage is down;
    /// returns how many events were queued, now lost.
    fn answer_queued(&mut self, down: &mut Vec<Downstream<B::Out>>) -> usize {
        let mut lost = 0;
        while let Some(msg) = self.rx.try_recv() {
            match msg {
                Msg::Subscribe(msg) => down.push((msg.sub, msg.consumer)),
                Msg::Events { events, .. } => lost += events.len(),
                Msg::SubscribeTo(msg) => {
                    if let Some(reply) = msg.reply {
                        let _ = reply.send(Err(SubscribeError::ConsumerNotRunning));
                    }
                }
                _ => {}
            }
        }
        lost
    }
}

/// A consumer to tell that this stage is down, and its subscription.
type Downstream<T> = (SubscriptionId, Arc<dyn ConsumerPort<T>>);

/// A fast hasher for maps keyed by [`SubscriptionId`]: ids are unique counters,
/// so one multiplication spreads them well, and SipHash's flood resistance buys
/// nothing here.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<SubscriptionId, V, std::hash::BuildHasherDefault<IdHasher>>;

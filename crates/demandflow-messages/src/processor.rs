//! Processors: run the user's handler on every message, then send each on to
//! its batcher or acknowledge it.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use demandflow_core::AutoDemand;
use demandflow_runtime::{
    CancelReason, Consumer, Context, DemandMode, Info, Peer, ProducerConsumer, Reason,
    SubscriptionId, catch_call,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::abort::catch_panic_or_abort;
use crate::ack::AckSet;
use crate::handler::MessageHandler;
use crate::message::{DEFAULT_BATCHER, Failure, Message, Status};
use crate::metrics::Metrics;
use crate::rate::RateLimiter;
use crate::upstream::Upstream;

/// What every stage of one topology shares.
pub(crate) struct Shared<H> {
    pub(crate) topology: Arc<str>,
    pub(crate) handler: Arc<H>,
    pub(crate) metrics: Arc<Metrics>,
    /// Batcher names, in the order of the processors' output partitions.
    pub(crate) batchers: Vec<Arc<str>>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Cancelled when a drain's deadline passes or the topology stops: handlers
    /// still running are abandoned and their messages fail with
    /// [`Failure::Shutdown`].
    pub(crate) abort: CancellationToken,
}

/// A timer's note to a rate-limited processor: a new interval has started.
struct Refill;

/// Demand of one rate-limited subscription: asked by hand, through the limiter.
struct Limited {
    sub: SubscriptionId,
    demand: AutoDemand,
    /// Asks the limiter has held back, to be made in a later interval.
    held: u64,
}

/// One processor. It is a producer-consumer when the topology has batchers and
/// a consumer when it has none.
pub(crate) struct Processor<T, H> {
    shared: Arc<Shared<H>>,
    _messages: PhantomData<fn(T)>,
    index: usize,
    upstream: Upstream,
    limited: Vec<Limited>,
    timer_armed: bool,
}

impl<T, H> Processor<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    pub(crate) fn new(shared: Arc<Shared<H>>, index: usize) -> Self {
        Processor {
            shared,
            _messages: PhantomData,
            index,
            upstream: Upstream::default(),
            limited: Vec::new(),
            timer_armed: false,
        }
    }

    /// Runs the handler on each message; returns the messages bound for a
    /// batcher and acknowledges the others.
    ///
    /// Messages stay in `events` while their handler runs, and when none fails
    /// the same vector goes on to the batchers: no message is moved on its own.
    async fn process(&self, mut events: Vec<Message<T>>) -> Vec<Message<T>> {
        let shared = &*self.shared;
        shared.metrics.entered(events.len());
        self.handle_all(&mut events).await;
        let mut acks = if shared.batchers.is_empty() {
            AckSet::expecting(events.len())
        } else {
            AckSet::default()
        };
        let mut failures = false;
        let default_slot = shared.batchers.iter().position(|b| **b == *DEFAULT_BATCHER);
        // With no batcher, or only the default one (whose processors have no
        // partitioned output, so a slot is never read), a message that is ok,
        // names no batcher and wants nothing special needs nothing here: the
        // common case costs one test per message.
        let plain_goes_as_is =
            shared.batchers.is_empty() || (shared.batchers.len() == 1 && default_slot.is_some());
        for message in &mut events {
            if plain_goes_as_is && message.is_plain() {
                continue;
            }
            if message.wants_ack_now() {
                let status = message.status();
                acks.add(&mut message.ack, status);
            }
            if message.is_ok() && !shared.batchers.is_empty() {
                let slot = if message.has_default_batcher() {
                    default_slot
                } else {
                    shared
                        .batchers
                        .iter()
                        .position(|b| **b == *message.batcher())
                };
                match slot {
                    Some(slot) => message.slot = slot as u32,
                    None => {
                        let name = message.batcher().to_owned();
                        message.set_status(Status::Failed(Failure::UnknownBatcher(name)));
                    }
                }
            }
            failures |= !message.is_ok();
        }
        if failures {
            let (ok, mut failed): (Vec<_>, Vec<_>) = std::mem::take(&mut events)
                .into_iter()
                .partition(Message::is_ok);
            events = ok;
            fail_messages(shared, &mut failed, &mut acks);
        }
        if shared.batchers.is_empty() {
            for message in &mut events {
                acks.add_ok(&mut message.ack);
            }
            events.clear();
        }
        shared.metrics.ack(&mut acks);
        events
    }

    /// Runs `handle_message` on every message, in order, inside one span and
    /// one panic catcher for the whole chunk: a panic fails the message in
    /// hand ([`Failure::Panicked`]) and the rest of the chunk goes on after it;
    /// a handler still waiting when the topology gives up (a drain's deadline,
    /// a stop) fails its message with [`Failure::Shutdown`].
    async fn handle_all(&self, events: &mut [Message<T>]) {
        let shared = &*self.shared;
        let span = tracing::trace_span!(
            "handle_message",
            topology = %shared.topology,
            stage = "processor",
            processor = self.index,
            messages = events.len(),
        );
        let mut next = 0;
        while next < events.len() {
            // Which message is in the handler's hands when it panics (an
            // atomic only because the future must be `Send`; nothing contends).
            let current = AtomicUsize::new(next);
            let rest = &mut events[next..];
            let run = async {
                for (i, message) in rest.iter_mut().enumerate() {
                    current.store(next + i, Ordering::Relaxed);
                    shared.handler.handle_message(message).await;
                }
            };
            let outcome = if span.is_disabled() {
                catch_panic_or_abort(run, &shared.abort).await
            } else {
                catch_panic_or_abort(run.instrument(span.clone()), &shared.abort).await
            };
            let at = current.load(Ordering::Relaxed);
            match outcome {
                Some(Ok(())) => return,
                Some(Err(panic)) => {
                    events[at].set_status(Status::Failed(Failure::Panicked(panic)));
                }
                None => events[at].set_status(Status::Failed(Failure::Shutdown)),
            }
            next = at + 1;
        }
    }

    fn subscribed<O>(&mut self, sub: SubscriptionId, ctx: &mut Context<O>) -> DemandMode {
        self.upstream.subscribed();
        if self.shared.limiter.is_none() {
            return DemandMode::Automatic;
        }
        let (max, min) = ctx.demand_bounds(sub).unwrap_or((1000, 500));
        let mut demand = AutoDemand::new(max, min);
        let first = demand.subscribe();
        self.limited.push(Limited {
            sub,
            demand,
            held: first,
        });
        self.pump(ctx);
        DemandMode::Manual
    }

    /// A rate-limited subscription delivered `n` messages and they are handled.
    fn received<O>(&mut self, sub: SubscriptionId, n: usize, ctx: &mut Context<O>) {
        if let Some(limited) = self.limited.iter_mut().find(|l| l.sub == sub) {
            limited.held += limited.demand.consume(n as u64);
            self.pump(ctx);
        }
    }

    /// Asks what the limiter allows now and arms the timer for the rest.
    fn pump<O>(&mut self, ctx: &mut Context<O>) {
        let Some(limiter) = &self.shared.limiter else {
            return;
        };
        let mut next = None;
        for limited in self.limited.iter_mut().filter(|l| l.held > 0) {
            let (taken, next_window) = limiter.take(limited.held);
            ctx.ask(limited.sub, taken);
            limited.held -= taken;
            if limited.held > 0 {
                next = Some(next_window);
            }
        }
        if let Some(at) = next
            && !self.timer_armed
        {
            self.timer_armed = true;
            let me = ctx.info_sender();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let _ = me.send(Refill);
            });
        }
    }

    /// The subscription ended; `true` when the stage should stop: it was the
    /// last one and every producer ended normally.
    fn cancelled(&mut self, sub: SubscriptionId, reason: &CancelReason) -> bool {
        self.limited.retain(|l| l.sub != sub);
        self.upstream.cancelled(reason)
    }

    fn info<O>(&mut self, info: Info, ctx: &mut Context<O>) {
        if info.is::<Refill>() {
            self.timer_armed = false;
            self.pump(ctx);
        }
    }
}

/// Shows `failed` to the handler's `handle_failed`, then acknowledges them by
/// the status they have afterwards.
pub(crate) fn fail_messages<T: Send + 'static, H: MessageHandler<T>>(
    shared: &Shared<H>,
    failed: &mut Vec<Message<T>>,
    acks: &mut AckSet,
) {
    if let Err(panic) = catch_call(|| shared.handler.handle_failed(failed)) {
        tracing::error!(topology = %shared.topology, %panic, "handle_failed panicked");
    }
    for mut message in failed.drain(..) {
        let status = message.take_status();
        acks.add(&mut message.ack, status);
    }
}

impl<T, H> ProducerConsumer for Processor<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    type In = Message<T>;
    type Out = Message<T>;

    async fn handle_events(
        &mut self,
        events: Vec<Message<T>>,
        from: SubscriptionId,
        ctx: &mut Context<Message<T>>,
    ) {
        let n = events.len();
        let out = self.process(events).await;
        ctx.emit_vec(out);
        self.received(from, n, ctx);
    }

    async fn handle_subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        ctx: &mut Context<Message<T>>,
    ) -> DemandMode {
        match peer {
            Peer::Producer => self.subscribed(sub, ctx),
            Peer::Consumer => DemandMode::Automatic,
        }
    }

    async fn handle_cancel(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Message<T>>,
    ) {
        if peer == Peer::Producer && self.cancelled(sub, reason) {
            ctx.stop_after_buffered(Reason::Normal);
        }
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Message<T>>) {
        self.info(info, ctx);
    }
}

impl<T, H> Consumer for Processor<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    type Event = Message<T>;

    async fn handle_events(
        &mut self,
        events: Vec<Message<T>>,
        from: SubscriptionId,
        ctx: &mut Context<Infallible>,
    ) {
        let n = events.len();
        self.process(events).await;
        self.received(from, n, ctx);
    }

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        ctx: &mut Context<Infallible>,
    ) -> DemandMode {
        self.subscribed(sub, ctx)
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Infallible>,
    ) {
        if self.cancelled(sub, reason) {
            ctx.stop(Reason::Normal);
        }
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Infallible>) {
        self.info(info, ctx);
    }
}

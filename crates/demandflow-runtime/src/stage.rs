//! The three stage traits pipeline authors implement.

use std::convert::Infallible;
use std::future::{Future, Ready};

use demandflow_core::{CancelReason, Reason, SubscriptionId};

use crate::{Context, DemandMode, Info, Peer};

/// The context a consumer's callbacks get: it can ask, cancel and stop, not emit.
pub type ConsumerContext = Context<Infallible>;

/// A stage that emits events when consumers ask for them.
///
/// The runtime calls [`handle_demand`](Producer::handle_demand) only with demand
/// its buffer could not satisfy. The producer may emit fewer events than asked
/// (and must then remember the rest itself: demand is never sent again) or more
/// (the excess is buffered). It may also emit from any other callback, for
/// example when an info message arrives.
///
/// State is owned by the stage's task: callbacks take `&mut self` and run one at
/// a time, so no locks are needed.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{Context, Producer};
///
/// /// Emits 0, 1, 2, … forever, exactly as fast as it is asked.
/// struct Counter(u64);
///
/// impl Producer for Counter {
///     type Event = u64;
///
///     async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
///         ctx.emit_all(self.0..self.0 + demand);
///         self.0 += demand;
///     }
/// }
/// ```
pub trait Producer: Send + 'static {
    /// The events this producer emits.
    type Event: Send + 'static;

    /// Consumers asked for `demand` (> 0) events the buffer could not supply.
    fn handle_demand(
        &mut self,
        demand: u64,
        ctx: &mut Context<Self::Event>,
    ) -> impl Future<Output = ()> + Send;

    /// Called once when the stage starts, before any other callback.
    fn init(&mut self, ctx: &mut Context<Self::Event>) -> impl Future<Output = ()> + Send {
        nothing(ctx)
    }

    /// A consumer subscribed.
    fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        ctx: &mut Context<Self::Event>,
    ) -> impl Future<Output = ()> + Send {
        nothing((sub, ctx))
    }

    /// A consumer's subscription ended.
    fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Self::Event>,
    ) -> impl Future<Output = ()> + Send {
        nothing((sub, reason, ctx))
    }

    /// An info message arrived (after the events buffered before it were dispatched).
    fn handle_info(
        &mut self,
        info: Info,
        ctx: &mut Context<Self::Event>,
    ) -> impl Future<Output = ()> + Send {
        unhandled_info(info, ctx)
    }

    /// The buffer overflowed and `dropped` events were discarded.
    ///
    /// The runtime has already logged a warning naming the stage (rate-limited,
    /// with a count); the default does nothing more.
    fn handle_dropped(&mut self, dropped: usize) {
        let _ = dropped;
    }

    /// The pipeline is draining ([`Pipeline::drain`](crate::Pipeline::drain)): take
    /// no new input, emit what is already in hand, then stop.
    ///
    /// The default stops the stage with [`Reason::Shutdown`] once its buffered
    /// events are dispatched, so `handle_demand` is not called again. A producer
    /// holding events of its own (a queue fed from outside) overrides this: it
    /// refuses new input, keeps answering `handle_demand` from what it holds, and
    /// calls [`Context::stop_after_buffered`] once that is empty.
    fn handle_drain(&mut self, ctx: &mut Context<Self::Event>) -> impl Future<Output = ()> + Send {
        ctx.stop_after_buffered(Reason::Shutdown);
        async {}
    }

    /// The stage is stopping with `reason`; the last callback it gets.
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        nothing(reason)
    }
}

/// A stage that receives events from producers and asks for more.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{Consumer, ConsumerContext, SubscriptionId};
///
/// /// Adds up everything it receives.
/// struct Sum(u64);
///
/// impl Consumer for Sum {
///     type Event = u64;
///
///     async fn handle_events(&mut self, events: Vec<u64>, _from: SubscriptionId, _ctx: &mut ConsumerContext) {
///         self.0 += events.iter().sum::<u64>();
///     }
/// }
/// ```
pub trait Consumer: Send + 'static {
    /// The events this consumer receives.
    type Event: Send + 'static;

    /// A batch (never empty, never more than asked) arrived on subscription `from`.
    fn handle_events(
        &mut self,
        events: Vec<Self::Event>,
        from: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> impl Future<Output = ()> + Send;

    /// Called once when the stage starts, before any other callback.
    fn init(&mut self, ctx: &mut ConsumerContext) -> impl Future<Output = ()> + Send {
        nothing(ctx)
    }

    /// This consumer subscribed to a producer; choose how it asks. Default: automatic.
    fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> impl Future<Output = DemandMode> + Send {
        let _ = (sub, ctx);
        async { DemandMode::Automatic }
    }

    /// A subscription ended; runs before the cancel mode is applied.
    fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut ConsumerContext,
    ) -> impl Future<Output = ()> + Send {
        nothing((sub, reason, ctx))
    }

    /// An info message arrived.
    fn handle_info(
        &mut self,
        info: Info,
        ctx: &mut ConsumerContext,
    ) -> impl Future<Output = ()> + Send {
        unhandled_info(info, ctx)
    }

    /// The stage is stopping with `reason`; the last callback it gets.
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        nothing(reason)
    }
}

/// A stage that consumes events, transforms them, and emits the results.
///
/// It only asks upstream while its own consumers have unmet demand, so
/// back-pressure propagates through it; a handler that emits nothing for a batch
/// (a filter) does not stall the pipeline.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{Context, ProducerConsumer, SubscriptionId};
///
/// /// Doubles every event.
/// struct Doubler;
///
/// impl ProducerConsumer for Doubler {
///     type In = u64;
///     type Out = u64;
///
///     async fn handle_events(&mut self, events: Vec<u64>, _from: SubscriptionId, ctx: &mut Context<u64>) {
///         ctx.emit_all(events.into_iter().map(|e| e * 2));
///     }
/// }
/// ```
pub trait ProducerConsumer: Send + 'static {
    /// The events this stage receives.
    type In: Send + 'static;
    /// The events this stage emits.
    type Out: Send + 'static;

    /// A batch arrived on subscription `from`; emit the results with `ctx`.
    fn handle_events(
        &mut self,
        events: Vec<Self::In>,
        from: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;

    /// Called once when the stage starts, before any other callback.
    fn init(&mut self, ctx: &mut Context<Self::Out>) -> impl Future<Output = ()> + Send {
        nothing(ctx)
    }

    /// A subscription was made: to a producer (`peer` is [`Peer::Producer`]; the
    /// returned mode applies) or by a consumer ([`Peer::Consumer`]; the returned
    /// mode is ignored).
    fn handle_subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = DemandMode> + Send {
        let _ = (peer, sub, ctx);
        async { DemandMode::Automatic }
    }

    /// A subscription on either side ended.
    fn handle_cancel(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        nothing((peer, sub, reason, ctx))
    }

    /// An info message arrived (after the events buffered before it were dispatched).
    fn handle_info(
        &mut self,
        info: Info,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        unhandled_info(info, ctx)
    }

    /// The output buffer overflowed and `dropped` events were discarded.
    ///
    /// The runtime has already logged a warning naming the stage (rate-limited,
    /// with a count); the default does nothing more.
    fn handle_dropped(&mut self, dropped: usize) {
        let _ = dropped;
    }

    /// The stage is stopping with `reason`; the last callback it gets.
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        nothing(reason)
    }
}

/// The default of a callback with nothing to do: it ignores its arguments and
/// is ready at once.
fn nothing<A>(ignored: A) -> Ready<()> {
    let _ = ignored;
    std::future::ready(())
}

/// The default `handle_info`: logs the message it drops.
fn unhandled_info<C>(info: Info, ctx: C) -> Ready<()> {
    tracing::debug!(?info, "info message not handled by the stage");
    nothing(ctx)
}

//! One internal interface over the three stage traits, so one engine runs them all.

use std::convert::Infallible;
use std::future::Future;

use demandflow_core::{CancelReason, Reason, SubscriptionId};

use crate::call::{Call, Calls};
use crate::{
    Consumer, ConsumerContext, Context, DemandMode, Info, Peer, Producer, ProducerConsumer,
    StageKind,
};

pub(crate) trait Behaviour: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    const KIND: StageKind;

    fn init(&mut self, ctx: &mut Context<Self::Out>) -> impl Future<Output = ()> + Send;
    fn demand(
        &mut self,
        demand: u64,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    fn events(
        &mut self,
        events: Vec<Self::In>,
        from: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    fn subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = DemandMode> + Send;
    fn cancel(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    fn info(&mut self, info: Info, ctx: &mut Context<Self::Out>)
    -> impl Future<Output = ()> + Send;
    /// `true` when the stage registered the request type of `call`.
    fn answers(&self, call: &Call) -> bool;
    fn call(&mut self, call: Call, ctx: &mut Context<Self::Out>)
    -> impl Future<Output = ()> + Send;
    fn dropped(&mut self, dropped: usize);
    /// Producers only: stop taking new input (see `Producer::handle_drain`).
    fn drain(&mut self, ctx: &mut Context<Self::Out>) -> impl Future<Output = ()> + Send;
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send;
}

/// A stage of each kind, with the requests it answers.
pub(crate) struct AsProducer<P: Producer>(pub(crate) P, pub(crate) Calls<P, P::Event>);
pub(crate) struct AsConsumer<C>(pub(crate) C, pub(crate) Calls<C, Infallible>);
pub(crate) struct AsProducerConsumer<S: ProducerConsumer>(
    pub(crate) S,
    pub(crate) Calls<S, S::Out>,
);

impl<P: Producer> Behaviour for AsProducer<P> {
    type In = Infallible;
    type Out = P::Event;
    const KIND: StageKind = StageKind::Producer;

    fn init(&mut self, ctx: &mut Context<P::Event>) -> impl Future<Output = ()> + Send {
        self.0.init(ctx)
    }
    fn demand(
        &mut self,
        demand: u64,
        ctx: &mut Context<P::Event>,
    ) -> impl Future<Output = ()> + Send {
        self.0.handle_demand(demand, ctx)
    }
    async fn events(
        &mut self,
        events: Vec<Infallible>,
        _: SubscriptionId,
        _: &mut Context<P::Event>,
    ) {
        match events.into_iter().next() {
            None => {}
            Some(never) => match never {},
        }
    }
    async fn subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        ctx: &mut Context<P::Event>,
    ) -> DemandMode {
        if peer == Peer::Consumer {
            self.0.handle_subscribe(sub, ctx).await;
        }
        DemandMode::Automatic
    }
    fn cancel(
        &mut self,
        _: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<P::Event>,
    ) -> impl Future<Output = ()> + Send {
        self.0.handle_cancel(sub, reason, ctx)
    }
    fn info(&mut self, info: Info, ctx: &mut Context<P::Event>) -> impl Future<Output = ()> + Send {
        self.0.handle_info(info, ctx)
    }
    fn answers(&self, call: &Call) -> bool {
        self.1.answers(call)
    }
    async fn call(&mut self, call: Call, ctx: &mut Context<P::Event>) {
        self.1.answer(&mut self.0, call, ctx).await;
    }
    fn dropped(&mut self, dropped: usize) {
        self.0.handle_dropped(dropped);
    }
    fn drain(&mut self, ctx: &mut Context<P::Event>) -> impl Future<Output = ()> + Send {
        self.0.handle_drain(ctx)
    }
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        self.0.terminate(reason)
    }
}

impl<C: Consumer> Behaviour for AsConsumer<C> {
    type In = C::Event;
    type Out = Infallible;
    const KIND: StageKind = StageKind::Consumer;

    fn init(&mut self, ctx: &mut ConsumerContext) -> impl Future<Output = ()> + Send {
        self.0.init(ctx)
    }
    async fn demand(&mut self, _: u64, _: &mut ConsumerContext) {}
    fn events(
        &mut self,
        events: Vec<C::Event>,
        from: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> impl Future<Output = ()> + Send {
        self.0.handle_events(events, from, ctx)
    }
    async fn subscribe(
        &mut self,
        _: Peer,
        sub: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> DemandMode {
        self.0.handle_subscribe(sub, ctx).await
    }
    fn cancel(
        &mut self,
        _: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut ConsumerContext,
    ) -> impl Future<Output = ()> + Send {
        self.0.handle_cancel(sub, reason, ctx)
    }
    fn info(&mut self, info: Info, ctx: &mut ConsumerContext) -> impl Future<Output = ()> + Send {
        self.0.handle_info(info, ctx)
    }
    fn answers(&self, call: &Call) -> bool {
        self.1.answers(call)
    }
    async fn call(&mut self, call: Call, ctx: &mut ConsumerContext) {
        self.1.answer(&mut self.0, call, ctx).await;
    }
    fn dropped(&mut self, _: usize) {}
    async fn drain(&mut self, _: &mut ConsumerContext) {}
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        self.0.terminate(reason)
    }
}

impl<S: ProducerConsumer> Behaviour for AsProducerConsumer<S> {
    type In = S::In;
    type Out = S::Out;
    const KIND: StageKind = StageKind::ProducerConsumer;

    fn init(&mut self, ctx: &mut Context<S::Out>) -> impl Future<Output = ()> + Send {
        self.0.init(ctx)
    }
    async fn demand(&mut self, _: u64, _: &mut Context<S::Out>) {}
    fn events(
        &mut self,
        events: Vec<S::In>,
        from: SubscriptionId,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = ()> + Send {
        self.0.handle_events(events, from, ctx)
    }
    fn subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = DemandMode> + Send {
        self.0.handle_subscribe(peer, sub, ctx)
    }
    fn cancel(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = ()> + Send {
        self.0.handle_cancel(peer, sub, reason, ctx)
    }
    fn info(&mut self, info: Info, ctx: &mut Context<S::Out>) -> impl Future<Output = ()> + Send {
        self.0.handle_info(info, ctx)
    }
    fn answers(&self, call: &Call) -> bool {
        self.1.answers(call)
    }
    async fn call(&mut self, call: Call, ctx: &mut Context<S::Out>) {
        self.1.answer(&mut self.0, call, ctx).await;
    }
    fn dropped(&mut self, dropped: usize) {
        self.0.handle_dropped(dropped);
    }
    async fn drain(&mut self, _: &mut Context<S::Out>) {}
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        self.0.terminate(reason)
    }
}

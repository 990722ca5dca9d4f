//! Sources: the wrapper every source runs in, and a source that emits nothing.

use std::marker::PhantomData;

use demandflow_runtime::{CancelReason, Context, Info, Producer, Reason, SubscriptionId};

use crate::message::Message;

/// Messages pushed into a running source (the test helpers' way in).
pub(crate) struct Push<T>(pub(crate) Vec<Message<T>>);

/// Runs a user's source and also emits messages pushed into it from outside.
pub(crate) struct SourceStage<P>(pub(crate) P);

impl<T, P> Producer for SourceStage<P>
where
    T: Send + 'static,
    P: Producer<Event = Message<T>>,
{
    type Event = Message<T>;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<Message<T>>) {
        self.0.handle_demand(demand, ctx).await;
    }

    async fn init(&mut self, ctx: &mut Context<Message<T>>) {
        self.0.init(ctx).await;
    }

    async fn handle_subscribe(&mut self, sub: SubscriptionId, ctx: &mut Context<Message<T>>) {
        self.0.handle_subscribe(sub, ctx).await;
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Message<T>>,
    ) {
        self.0.handle_cancel(sub, reason, ctx).await;
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Message<T>>) {
        match info.downcast::<Push<T>>() {
            Ok(Push(messages)) => ctx.emit_vec(messages),
            Err(info) => self.0.handle_info(info, ctx).await,
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.0.handle_dropped(dropped);
    }

    async fn handle_drain(&mut self, ctx: &mut Context<Message<T>>) {
        self.0.handle_drain(ctx).await;
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.0.terminate(reason).await;
    }
}

/// A source that emits nothing of its own: messages reach the topology only
/// through the test helpers ([`Topology::test_messages`](crate::Topology::test_messages)
/// and friends). Its buffer is the only place messages wait.
#[derive(Debug)]
pub struct DummySource<T>(PhantomData<fn() -> T>);

impl<T> DummySource<T> {
    /// A dummy source.
    pub fn new() -> Self {
        DummySource(PhantomData)
    }
}

impl<T> Default for DummySource<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Producer for DummySource<T> {
    type Event = Message<T>;

    async fn handle_demand(&mut self, _demand: u64, _ctx: &mut Context<Message<T>>) {}
}

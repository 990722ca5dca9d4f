//! Sources: the wrapper every source runs in, and a source that emits nothing.

use std::marker::PhantomData;
use std::sync::Arc;

use demandflow_runtime::{CancelReason, Context, Info, Producer, Reason, SubscriptionId};
use parking_lot::Mutex;

use crate::message::Message;

/// Messages pushed into one source copy from outside (the test helpers' way
/// in), waiting for the source to emit them.
///
/// Pushing and draining take the same lock: a push either lands before the
/// drain, and is emitted ahead of the source's stop, or finds the inbox closed
/// and fails. No pushed message can slip in behind the stop.
pub(crate) struct Inbox<T> {
    state: Mutex<InboxState<T>>,
}

struct InboxState<T> {
    open: bool,
    messages: Vec<Message<T>>,
}

impl<T> Inbox<T> {
    pub(crate) fn new() -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                open: true,
                messages: Vec::new(),
            }),
        }
    }

    /// Queues `messages`; gives them back when the source is draining or stopped.
    pub(crate) fn push(&self, mut messages: Vec<Message<T>>) -> Result<(), Vec<Message<T>>> {
        let mut state = self.state.lock();
        if !state.open {
            return Err(messages);
        }
        state.messages.append(&mut messages);
        Ok(())
    }

    fn take(&self) -> Vec<Message<T>> {
        std::mem::take(&mut self.state.lock().messages)
    }

    /// Closes the inbox and returns what it held.
    fn close(&self) -> Vec<Message<T>> {
        let mut state = self.state.lock();
        state.open = false;
        std::mem::take(&mut state.messages)
    }

    fn reopen(&self) {
        self.state.lock().open = true;
    }
}

/// The note that messages are waiting in the inbox.
pub(crate) struct Pushed;

/// Runs a user's source and also emits messages pushed into its inbox.
pub(crate) struct SourceStage<T, P> {
    pub(crate) inner: P,
    pub(crate) inbox: Arc<Inbox<T>>,
}

impl<T, P> Producer for SourceStage<T, P>
where
    T: Send + 'static,
    P: Producer<Event = Message<T>>,
{
    type Event = Message<T>;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<Message<T>>) {
        self.inner.handle_demand(demand, ctx).await;
    }

    async fn init(&mut self, ctx: &mut Context<Message<T>>) {
        // A restarted copy takes over what was pushed to its predecessor.
        self.inbox.reopen();
        ctx.emit_vec(self.inbox.take());
        self.inner.init(ctx).await;
    }

    async fn handle_subscribe(&mut self, sub: SubscriptionId, ctx: &mut Context<Message<T>>) {
        self.inner.handle_subscribe(sub, ctx).await;
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Message<T>>,
    ) {
        self.inner.handle_cancel(sub, reason, ctx).await;
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Message<T>>) {
        if info.is::<Pushed>() {
            ctx.emit_vec(self.inbox.take());
        } else {
            self.inner.handle_info(info, ctx).await;
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.inner.handle_dropped(dropped);
    }

    async fn handle_drain(&mut self, ctx: &mut Context<Message<T>>) {
        // Emitted before the source's own drain asks to stop, so they are
        // dispatched ahead of the stop.
        ctx.emit_vec(self.inbox.close());
        self.inner.handle_drain(ctx).await;
    }

    async fn terminate(&mut self, reason: &Reason) {
        // Dropping them acknowledges them as failed.
        drop(self.inbox.close());
        self.inner.terminate(reason).await;
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

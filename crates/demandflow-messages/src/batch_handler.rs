//! Batch handlers: run the user's batch handler and acknowledge the batch.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;

use demandflow_runtime::{CancelReason, Consumer, Context, Reason, SubscriptionId};
use tracing::Instrument;

use crate::abort::catch_panic_or_abort;
use crate::ack::{AckRef, HeldAcks};
use crate::handler::{Batch, MessageHandler};
use crate::message::Failure;
use crate::processor::{Shared, fail_messages};
use crate::upstream::Upstream;

/// One batch handler of a batcher: a consumer of batches.
pub(crate) struct BatchHandler<T, H> {
    shared: Arc<Shared<H>>,
    _messages: PhantomData<fn(T)>,
    index: usize,
    upstream: Upstream,
}

impl<T, H> BatchHandler<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    pub(crate) fn new(shared: Arc<Shared<H>>, index: usize) -> Self {
        BatchHandler {
            shared,
            _messages: PhantomData,
            index,
            upstream: Upstream::default(),
        }
    }

    async fn handle(&self, mut batch: Batch<T>) {
        let shared = &*self.shared;
        let mut messages = std::mem::take(&mut batch.messages);
        // The acknowledgements stay here while the handler has the messages, so
        // a message it drops, or a panic, cannot lose one. A message's slot is
        // its place among them, to match returned messages to their acks.
        let mut held = HeldAcks::new(messages.len());
        for message in &mut messages {
            message.slot = held.hold(&mut message.ack);
        }
        let span = tracing::debug_span!(
            "handle_batch",
            topology = %shared.topology,
            stage = "batch_handler",
            batcher = %batch.info.batcher,
            handler = self.index,
            size = batch.info.size,
            trigger = ?batch.info.trigger,
        );
        let handled = shared
            .handler
            .handle_batch(messages, &batch.info)
            .instrument(span);
        let Some(handled) = catch_panic_or_abort(handled, &shared.abort).await else {
            // Abandoned at a drain's deadline or a stop.
            held.fail_rest(|| Failure::Shutdown);
            shared.metrics.ack(held.acks());
            return;
        };
        match handled {
            Ok(mut returned) => {
                let mut failures = false;
                for message in &mut returned {
                    if message.is_ok() {
                        if held.ok(message.slot) {
                            continue;
                        }
                    } else if let Some(ack) = held.release(message.slot) {
                        // Shown to handle_failed with its acknowledgement.
                        message.ack = ack;
                        failures = true;
                        continue;
                    }
                    // Not a message of this batch, or returned twice: its
                    // acknowledgement is not ours to send.
                    message.ack = AckRef::done();
                }
                if failures {
                    let mut failed: Vec<_> = returned
                        .into_iter()
                        .filter(|m| m.ack.is_pending())
                        .collect();
                    fail_messages(shared, &mut failed, held.acks());
                }
                held.fail_rest(|| Failure::Dropped);
            }
            Err(panic) => {
                tracing::error!(
                    topology = %shared.topology,
                    batcher = %batch.info.batcher,
                    %panic,
                    "batch handler panicked; its messages fail"
                );
                held.fail_rest(|| Failure::Panicked(panic.clone()));
            }
        }
        shared.metrics.ack(held.acks());
    }
}

impl<T, H> Consumer for BatchHandler<T, H>
where
    T: Send + 'static,
    H: MessageHandler<T>,
{
    type Event = Batch<T>;

    async fn handle_events(
        &mut self,
        batches: Vec<Batch<T>>,
        _from: SubscriptionId,
        _ctx: &mut Context<Infallible>,
    ) {
        for batch in batches {
            self.handle(batch).await;
        }
    }

    async fn handle_subscribe(
        &mut self,
        _sub: SubscriptionId,
        _ctx: &mut Context<Infallible>,
    ) -> demandflow_runtime::DemandMode {
        self.upstream.subscribed();
        demandflow_runtime::DemandMode::Automatic
    }

    async fn handle_cancel(
        &mut self,
        _sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Infallible>,
    ) {
        if self.upstream.cancelled(reason) {
            ctx.stop(Reason::Normal);
        }
    }
}

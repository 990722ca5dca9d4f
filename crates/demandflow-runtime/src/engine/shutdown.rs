//! How a stage ends: finishing a drain, then shutting down, telling its
//! producers and consumers and answering what is left in its mailbox.

use std::sync::Arc;

use demandflow_core::{CancelReason, Dispatcher, Reason, SubscriptionId};

use super::{Engine, UpState};
use crate::behaviour::Behaviour;
use crate::catch::{CatchUnwind, panic_reason};
use crate::port::{ConsumerPort, Msg};
use crate::{StageKind, SubscribeError};

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    /// A draining consumer or producer-consumer whose producers are all gone and
    /// whose input is handled stops (a producer-consumer after delivering its buffer).
    /// Returns true when it started stopping.
    pub(super) fn finish_drain(&mut self) -> bool {
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

    pub(super) async fn shutdown(&mut self, reason: Reason) {
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
        let buffered = self.held();
        let queued = self.queued_in() + lost_in;
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
        self.exit.send(reason.clone());
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
    pub(super) fn answer_queued(&mut self, down: &mut Vec<Downstream<B::Out>>) -> usize {
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

//! The consumer side of a stage: its subscriptions to producers, the events
//! they send and the demand it asks of them.

use std::sync::Arc;

use demandflow_core::{
    AutoDemand, CancelReason, Dispatcher, Reason, SubscribeOptions, SubscribeRefused,
    SubscriptionId, split_chunks,
};

use super::{Engine, Input, SubscribeReply, UpState, Upstream};
use crate::behaviour::Behaviour;
use crate::port::{ConsumerPort, ProducerPort};
use crate::{DemandMode, Peer, StageKind, SubscribeError};

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    pub(super) async fn subscribe_to(
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
                outstanding: 0,
                turns_seen: 0,
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
            let ask = demand.subscribe();
            up.producer.ask(sub, ask);
            up.outstanding = ask;
            up.demand = Some(demand);
        }
    }

    pub(super) async fn on_subscribed(
        &mut self,
        sub: SubscriptionId,
        result: Result<(), SubscribeRefused>,
    ) {
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

    pub(super) fn ask_upstream(&mut self, sub: SubscriptionId, demand: u64) {
        if demand == 0 {
            return;
        }
        if let Some(up) = self.producers.get_mut(&sub)
            && !matches!(up.state, UpState::Cancelling { .. })
        {
            up.producer.ask(sub, demand);
            up.outstanding = up.outstanding.saturating_add(demand);
        }
    }

    /// Cancels an upstream subscription; the producer confirms and the
    /// subscription ends when the confirmation arrives.
    pub(super) fn cancel_upstream(
        &mut self,
        sub: SubscriptionId,
        reason: Reason,
        apply_mode: bool,
    ) {
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

    pub(super) async fn cancel(&mut self, sub: SubscriptionId, reason: Reason) {
        if self.producers.contains_key(&sub) {
            self.cancel_upstream(sub, reason, true);
        } else if let Some(port) = self.consumers.remove(&sub) {
            self.remove_consumer(sub, port, CancelReason::Cancel(reason), true)
                .await;
        }
    }

    pub(super) async fn on_upstream_ended(&mut self, sub: SubscriptionId, reason: CancelReason) {
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

    /// Counts a batch that arrived from `sub`: a producer-consumer queues it
    /// until it has downstream demand (`None`); other stages handle it now.
    pub(super) fn receive(
        &mut self,
        sub: SubscriptionId,
        events: Vec<B::In>,
    ) -> Option<Vec<B::In>> {
        self.probe.events_in.add(events.len() as u64);
        if B::KIND == StageKind::ProducerConsumer {
            self.input.push_back(Input::Events(sub, events));
            None
        } else {
            Some(events)
        }
    }

    /// Runs the handler on a batch from `sub`, in chunks when demand is automatic.
    /// Runs `handle_events` on one batch; with the `metrics` feature, records the
    /// batch's size and the handler's time.
    #[inline]
    pub(super) async fn handle_batch(&mut self, events: Vec<B::In>, sub: SubscriptionId) {
        #[cfg(feature = "metrics")]
        let (len, started) = (events.len(), std::time::Instant::now());
        self.behaviour.events(events, sub, &mut self.ctx).await;
        #[cfg(feature = "metrics")]
        self.histograms.record(len, started.elapsed());
    }

    pub(super) async fn consume(&mut self, sub: SubscriptionId, events: Vec<B::In>) {
        let Some(up) = self.producers.get_mut(&sub) else {
            self.warnings.unknown(sub, events.len() as u64);
            return;
        };
        up.outstanding = up.outstanding.saturating_sub(events.len() as u64);
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
}

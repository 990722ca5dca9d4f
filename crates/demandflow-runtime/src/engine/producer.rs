//! The producer side of a stage: subscriptions from consumers, their asks,
//! the demand the stage is asked to serve, its buffer and its dispatcher.

use std::sync::Arc;

use demandflow_core::{
    CancelReason, Deliver, Dispatched, Dispatcher, SubscribeOptions, SubscribeRefused,
    SubscriptionId,
};

use super::{Accumulated, Engine, IdMap, diagnostics};
use crate::behaviour::Behaviour;
use crate::port::ConsumerPort;
use crate::registry;
use crate::{DemandFlow, Peer, StageKind};

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
    pub(super) async fn on_subscribe(
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

    pub(super) fn on_ask(&mut self, sub: SubscriptionId, demand: u64) {
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
    pub(super) fn serve_from_buffer(&mut self) -> u64 {
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

    pub(super) async fn remove_consumer(
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
    pub(super) fn add_demand(&mut self, demand: u64) {
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
    pub(super) fn owe(&mut self, demand: u64) {
        self.owed = self.owed.saturating_add(demand);
        self.buffer
            .set_reserve(usize::try_from(self.owed).unwrap_or(usize::MAX));
    }

    /// Brings the buffer's reserve down to the demand still to replay, dropping
    /// (and reporting) what no longer fits.
    pub(super) fn settle_reserve(&mut self) {
        let owed = usize::try_from(self.owed).unwrap_or(usize::MAX);
        if self.buffer.reserve() > owed {
            let dropped = self.buffer.set_reserve(owed);
            self.report_dropped(dropped);
        }
    }

    pub(super) fn set_flow(&mut self, flow: DemandFlow) {
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
    pub(super) fn redispatch_buffered(&mut self) -> bool {
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
    pub(super) fn serve_buffered(&mut self, demand: u64) -> (usize, bool) {
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
    pub(super) async fn serve(&mut self, demand: u64) {
        let mut rest = demand;
        loop {
            let (taken, all_dispatched) = self.serve_buffered(rest);
            rest -= taken as u64;
            if self.markers_waiting() && !Box::pin(self.release_markers()).await {
                return;
            }
            if !all_dispatched {
                // The dispatcher handed buffered events back (a partition
                // dispatcher's full queue): it holds back the demand it was
                // awaiting, this included, and asks for it again once those
                // events can go. Asking the stage for it now would pile events up
                // behind them until the buffer overflowed and dropped events a
                // consumer had asked for.
                return;
            }
            // Go on past a marker.
            if rest == 0 || self.buffer.is_empty() {
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

    pub(super) fn dispatch_raw(&mut self, events: Vec<B::Out>) -> Dispatched<B::Out> {
        let mut outbox = Outbox {
            consumers: &self.consumers,
            delivered: &self.probe.events_out,
            lost: &self.probe.events_dropped,
            warnings: &mut self.warnings,
        };
        self.dispatcher.dispatch(events, &mut outbox)
    }

    /// Handles events the stage emitted.
    pub(super) fn emit(&mut self, events: Vec<B::Out>) {
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
    pub(super) fn dispatch_emitted(&mut self, events: Vec<B::Out>) {
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

    pub(super) fn buffer_events(&mut self, events: Vec<B::Out>) {
        let dropped = self.buffer.push(events);
        self.report_dropped(dropped);
    }

    pub(super) fn report_dropped(&mut self, dropped: usize) {
        if dropped > 0 {
            self.probe.events_dropped.add(dropped as u64);
            self.dropped_unclaimed += dropped as u64;
            self.warnings.dropped(dropped as u64);
            self.behaviour.dropped(dropped);
        }
    }
}

//! What a stage shows of itself: its stats on request and the figures it
//! publishes to the registry.

use demandflow_core::{AutoDemand, Dispatcher};

use super::{Engine, Input};
use crate::behaviour::Behaviour;
use crate::registry;
use crate::{Peer, StageKind, StageStats, SubscriptionStats};

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    pub(super) fn stats(&self) -> StageStats {
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
            buffered: self.held(),
            demand_flow: (B::KIND != StageKind::Consumer).then_some(self.flow),
            queued_in: self.queued_in(),
            subscriptions,
            stall: self.stall(),
        }
    }

    /// Publishes to the registry what only this task can read: subscriptions,
    /// demand and buffer.
    pub(super) fn publish(&self) {
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
            buffered: self.held(),
            queued_in: self.queued_in(),
            subscriptions,
        });
    }

    /// Events buffered by the stage or queued in its dispatcher.
    pub(super) fn held(&self) -> usize {
        self.buffer.len() + self.dispatcher.buffered()
    }

    /// Events a producer-consumer received and has not handled yet.
    pub(super) fn queued_in(&self) -> usize {
        self.input
            .iter()
            .map(|i| match i {
                Input::Events(_, e) => e.len(),
                _ => 0,
            })
            .sum()
    }
}

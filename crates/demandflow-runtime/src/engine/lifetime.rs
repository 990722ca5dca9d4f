//! How long a stage runs once nobody holds a handle to its pipeline.
//!
//! The rule (documented for users in the crate docs): a started stage runs until
//! its work ends, it is stopped or drained, or it fails. Dropping the last user
//! handle of a pipeline does not stop it: the pipeline's stages become
//! *detached*, like a task from `tokio::spawn` whose `JoinHandle` was dropped.
//! A detached stage keeps running while it can still do work and stops by
//! itself once it cannot:
//!
//! - a producer stops when no consumer is subscribed to it;
//! - a consumer stops when no producer is left to feed it;
//! - a producer-consumer stops when no consumer is left, or, once no producer
//!   is left, after delivering what it holds.
//!
//! A detached stage that stops holding events it can no longer deliver says so
//! in its exit reason (see [`with_loss`]).

use std::sync::Arc;

use demandflow_core::{Dispatcher, Reason, SubscriptionId};

use super::Engine;
use crate::StageKind;
use crate::behaviour::Behaviour;
use crate::group::HandleGuard;

/// A stage's lifetime state.
#[derive(Default)]
pub(super) struct Lifetime {
    /// No user handle to the pipeline is left.
    pub(super) detached: bool,
    /// Started stopping on its own (a producer-consumer delivering its buffer).
    winding_down: bool,
    /// Handles carried by subscriptions whose producer has not answered yet.
    holds: Vec<(SubscriptionId, Arc<HandleGuard>)>,
}

/// `reason`, or an error naming the loss when a normal stop leaves `lost` events
/// undelivered: a stop that loses events must not look like a clean one.
pub(super) fn with_loss(reason: Reason, lost: usize) -> Reason {
    if lost == 0 || !reason.is_normal() {
        return reason;
    }
    Reason::error(format!("{reason} with {lost} events undelivered"))
}

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    pub(super) fn detach(&mut self) {
        if !self.life.detached {
            tracing::debug!("detached: no handle to the pipeline is left");
            self.life.detached = true;
        }
    }

    /// Keeps the pipeline handled until the producer of `sub` answers.
    pub(super) fn hold_until_answered(&mut self, sub: SubscriptionId, hold: Arc<HandleGuard>) {
        if self.producers.contains_key(&sub) {
            self.life.holds.push((sub, hold));
        }
    }

    /// The producer of `sub` answered (or went away).
    pub(super) fn release_hold(&mut self, sub: SubscriptionId) {
        if !self.life.holds.is_empty() {
            self.life.holds.retain(|(s, _)| *s != sub);
        }
    }

    /// `ctx.stop` with a normal reason in a producer or producer-consumer: it
    /// delivers what it buffered first. With no consumer to take them, those
    /// events are lost, and the exit reason says so.
    pub(super) fn stop_normally(&mut self, reason: Reason) {
        let held = self.held();
        if self.consumers.is_empty() && held > 0 {
            tracing::warn!(
                stage = %self.me.name,
                lost = held,
                "stopping with buffered events and no consumer to take them"
            );
            self.stop.get_or_insert(with_loss(reason, held));
        } else {
            self.stop_after_buffered(reason);
        }
    }

    /// Stops a detached stage that can do no more work. Called after every
    /// message while detached.
    pub(super) fn wind_down_if_idle(&mut self) {
        // A deferred stop already in progress ends the stage by itself, even if
        // its consumers leave (see `flush`).
        if self.stop.is_some() || self.pending_stop.is_some() {
            return;
        }
        let fed = !self.producers.is_empty() || !self.input.is_empty();
        match B::KIND {
            // Also while winding down: a producer-consumer delivering its buffer
            // whose last consumer leaves can deliver nothing more.
            StageKind::Producer | StageKind::ProducerConsumer if self.consumers.is_empty() => {
                let lost = self.held() + self.queued_in();
                if lost > 0 {
                    tracing::warn!(
                        stage = %self.me.name,
                        lost,
                        "detached stage stopped: no consumer is left to take its events"
                    );
                }
                self.stop = Some(with_loss(Reason::Shutdown, lost));
            }
            _ if self.life.winding_down => {}
            StageKind::ProducerConsumer if !fed => {
                self.life.winding_down = true;
                self.stop_after_buffered(Reason::Shutdown);
            }
            StageKind::Consumer if !fed => self.stop = Some(Reason::Shutdown),
            _ => {}
        }
    }
}

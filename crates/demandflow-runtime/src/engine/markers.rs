//! Infos, calls and deferred stops that a producer orders behind the events
//! it emitted before them: markers in its buffer, then in its dispatcher.

use demandflow_core::{Dispatcher, Reason};

use super::{Accumulated, Engine, Input, Marker};
use crate::behaviour::Behaviour;
use crate::call::Message;
use crate::{DemandFlow, StageKind};

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    /// `true` when `release_markers` may have something to do: an info held
    /// behind the dispatcher's queues, or a marker in the buffer. Most turns
    /// have neither, and skip building its future (which holds the stage's
    /// `handle_info` and `handle_call` futures) and the box it is kept in.
    pub(super) fn markers_waiting(&self) -> bool {
        !self.held_infos.is_empty() || self.buffer.markers_len() > 0
    }

    /// Delivers info messages and deferred stops whose events have left the
    /// buffer, and infos whose events have left the dispatcher's queues too.
    /// Returns false when a deferred stop was reached.
    pub(super) async fn release_markers(&mut self) -> bool {
        loop {
            if !self.held_infos.is_empty() && self.dispatcher.release_info() {
                if let Some(message) = self.held_infos.pop_front() {
                    self.handle_message(message).await;
                }
                continue;
            }
            match self.buffer.pop_ready_marker() {
                Some(Marker::Message(message)) => self.info_after_dispatcher(message).await,
                Some(Marker::Stop(reason)) => {
                    self.stop_when_dispatched(reason);
                    return false;
                }
                None => return true,
            }
        }
    }

    /// Handles an info whose buffered events have gone, or holds it while the
    /// dispatcher still queues events from before it.
    ///
    /// Every held info gets a marker of its own in the dispatcher, even behind
    /// another held info: `release_markers` releases one info per marker, so an
    /// info held without one would wait forever.
    pub(super) async fn info_after_dispatcher(&mut self, message: Message) {
        if self.dispatcher.hold_info() || !self.held_infos.is_empty() {
            self.held_infos.push_back(message);
        } else {
            self.handle_message(message).await;
        }
    }

    /// Hands an info or a call to the stage.
    pub(super) async fn handle_message(&mut self, message: Message) {
        match message {
            Message::Info(info) => self.behaviour.info(info, &mut self.ctx).await,
            Message::Call(call) => self.behaviour.call(call, &mut self.ctx).await,
        }
    }

    /// Stops once every buffered event has been dispatched.
    pub(super) fn stop_after_buffered(&mut self, reason: Reason) {
        // Recorded or replayed events come first.
        if self.flow == DemandFlow::Accumulate {
            self.accumulated.push_back(Accumulated::StopAfter(reason));
            return;
        }
        if !self.replay.is_empty() {
            self.replay.push_back(Accumulated::StopAfter(reason));
            return;
        }
        self.stop_after_recorded(reason);
    }

    /// The stop of `stop_after_buffered` once everything recorded before it
    /// has been replayed: also how a replayed stop is applied, which must not be
    /// queued behind the rest of the replay again (two of them would swap
    /// places forever).
    pub(super) fn stop_after_recorded(&mut self, reason: Reason) {
        if self.consumers.is_empty() && !self.buffer.is_empty() {
            tracing::warn!(
                stage = %self.me.name,
                lost = self.buffer.len(),
                "stopping with buffered events and no consumer to take them"
            );
            self.stop.get_or_insert(reason);
            return;
        }
        if let Some(Marker::Stop(reason)) = self.buffer.push_marker(Marker::Stop(reason)) {
            self.stop_when_dispatched(reason);
        }
    }

    /// Stops once the dispatcher's own queues are empty too (at once if they are,
    /// or if no consumer is left to empty them).
    pub(super) fn stop_when_dispatched(&mut self, reason: Reason) {
        if (self.dispatcher.buffered() > 0 || !self.held_infos.is_empty())
            && !self.consumers.is_empty()
        {
            self.pending_stop = Some(reason);
        } else {
            self.stop.get_or_insert(reason);
        }
    }

    /// An info or a call: handled at once by a consumer, behind the queued
    /// input of a producer-consumer, and behind the buffered events of both
    /// kinds of producer.
    pub(super) async fn on_message(&mut self, message: Message) {
        match B::KIND {
            StageKind::Consumer => self.handle_message(message).await,
            StageKind::ProducerConsumer if !self.input.is_empty() => {
                self.input.push_back(Input::Message(message));
            }
            _ => self.info_behind_buffer(message).await,
        }
    }

    /// Handles a producer's info after the events buffered before it.
    pub(super) async fn info_behind_buffer(&mut self, info: Message) {
        if self.flow == DemandFlow::Accumulate && self.buffer.markers_len() == 0 {
            // Nothing is dispatched while accumulating, so the events held then
            // do not delay infos (many producers emit from them); events queued
            // in the dispatcher still do.
            self.info_after_dispatcher(info).await;
        } else if let Some(Marker::Message(info)) = self.buffer.push_marker(Marker::Message(info)) {
            self.info_after_dispatcher(info).await;
        }
    }
}

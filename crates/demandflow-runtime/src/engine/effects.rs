//! Applying what callbacks asked for (emitted events, actions, stops) and
//! serving demand, until nothing is left to do before the next message.

use demandflow_core::Dispatcher;

use super::{Accumulated, Engine, Input};
use crate::behaviour::Behaviour;
use crate::context::Action;
use crate::{DemandFlow, StageKind};

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    pub(super) async fn perform(&mut self, action: Action) {
        match action {
            Action::Ask(sub, demand) => self.ask_upstream(sub, demand),
            // Boxed, like the other rare paths, to keep the future of every
            // loop that flushes small (see `Engine::run`).
            Action::Cancel(sub, reason) => Box::pin(self.cancel(sub, reason)).await,
            // A producer stopping normally delivers what it buffered first.
            Action::Stop(reason) if B::KIND != StageKind::Consumer && reason.is_normal() => {
                self.stop_normally(reason);
            }
            Action::Stop(reason) => {
                self.stop.get_or_insert(reason);
            }
            Action::StopAfterBuffered(reason) => self.stop_after_buffered(reason),
            Action::Demand(flow) => self.set_flow(flow),
        }
    }

    /// Applies the effects of callbacks and serves demand, until nothing is left.
    pub(super) async fn flush(&mut self) {
        loop {
            if !self.ctx.out.is_empty() {
                let out = std::mem::take(&mut self.ctx.out);
                self.emit(out);
                continue;
            }
            if !self.ctx.actions.is_empty() {
                let action = self.ctx.actions.remove(0);
                self.perform(action).await;
                continue;
            }
            if self.stop.is_some() {
                return;
            }
            if self.pending_stop.is_some()
                && ((self.dispatcher.buffered() == 0 && self.held_infos.is_empty())
                    || self.consumers.is_empty())
            {
                self.stop = self.pending_stop.take();
                return;
            }
            if self.markers_waiting() && !Box::pin(self.release_markers()).await {
                continue;
            }
            if self.redispatch && self.flow == DemandFlow::Forward {
                // Done unless it stopped at a marker, released on the next turn.
                self.redispatch = self.redispatch_buffered();
                continue;
            }
            if self.from_buffer > 0 {
                let before = self.from_buffer;
                let refill = self.serve_from_buffer();
                self.add_demand(refill);
                if self.from_buffer != before || refill > 0 {
                    continue;
                }
            }
            if self.to_serve > 0 && self.flow == DemandFlow::Forward {
                let demand = std::mem::take(&mut self.to_serve);
                self.serve(demand).await;
                continue;
            }
            return;
        }
    }

    /// `flush`, then replays accumulated demand and feeds a producer-consumer's
    /// queued input while it has downstream demand.
    pub(super) async fn settle(&mut self) {
        loop {
            self.flush().await;
            if self.stop.is_some() {
                return;
            }
            if self.flow == DemandFlow::Forward
                && let Some(entry) = self.replay.pop_front()
            {
                match entry {
                    Accumulated::Ask(sub, demand) => {
                        self.owed = self.owed.saturating_sub(demand);
                        self.on_ask(sub, demand);
                    }
                    Accumulated::Demand(demand) => {
                        self.owed = self.owed.saturating_sub(demand);
                        self.serve(demand).await;
                    }
                    Accumulated::StopAfter(reason) => self.stop_after_recorded(reason),
                }
                continue;
            }
            self.settle_reserve();
            if B::KIND == StageKind::ProducerConsumer {
                let ready = match self.input.front() {
                    Some(Input::Events(..)) => self.pc_demand > 0,
                    Some(Input::Cancelled(..) | Input::Message(_)) => true,
                    None => false,
                };
                if ready {
                    match self.input.pop_front() {
                        Some(Input::Events(sub, events)) => self.consume(sub, events).await,
                        Some(Input::Cancelled(sub, reason)) => {
                            Box::pin(self.on_upstream_ended(sub, reason)).await;
                        }
                        Some(Input::Message(message)) => {
                            Box::pin(self.info_behind_buffer(message)).await;
                        }
                        None => {}
                    }
                    continue;
                }
            }
            if self.finish_drain() {
                continue;
            }
            return;
        }
    }
}

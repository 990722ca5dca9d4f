//! Stall reports: a stage that waits for something that may never come (a
//! consumer to subscribe, a consumer for one partition, a producer) says so once,
//! at WARN, after its stall report time, and shows it in its stats.
//!
//! Nothing here runs per event. The stage checks what it waits for only when its
//! mailbox runs empty, with a few field reads; a timer exists only while it
//! waits for one of those things, which a healthy pipeline does not.

use std::mem::discriminant;
use std::time::Duration;

use demandflow_core::Dispatcher;
use tokio::time::Instant;

use super::Engine;
use crate::behaviour::Behaviour;
use crate::port::Msg;
use crate::{StageKind, Stall};

/// The stall report time when the builder sets none.
pub(crate) const DEFAULT_STALL_REPORT: Duration = Duration::from_secs(5);

/// A stage's stall state.
pub(super) struct Watch {
    after: Option<Duration>,
    /// What it waits for and since when.
    since: Option<(Stall, Instant)>,
    reported: bool,
    /// A consumer that has had a producer is never reported as unsubscribed.
    subscribed: bool,
}

impl Watch {
    pub(super) fn new(after: Option<Duration>) -> Self {
        Watch {
            after,
            since: None,
            reported: false,
            subscribed: false,
        }
    }
}

impl<B: Behaviour, D: Dispatcher<B::Out>> Engine<B, D> {
    /// The next message; while the stage waits for something that may never
    /// come, reports it once its stall report time has passed.
    pub(super) async fn next_msg(&mut self) -> Msg<B::In, B::Out> {
        if let Some(msg) = self.rx.try_local() {
            return msg;
        }
        let Some(deadline) = self.stall_deadline() else {
            return self.rx.recv().await;
        };
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(msg) => msg,
            Err(_) => {
                self.report_stall();
                self.rx.recv().await
            }
        }
    }

    /// What the stage waits for right now, if it may never come.
    fn waiting_for(&mut self) -> Option<Stall> {
        if B::KIND != StageKind::Consumer {
            if self.consumers.is_empty() {
                let buffered = self.held();
                if buffered > 0 {
                    return Some(Stall::NoConsumer { buffered });
                }
            } else if let Some((partition, buffered)) = self.dispatcher.unserved() {
                return Some(Stall::PartitionWithoutConsumer {
                    partition,
                    buffered,
                });
            }
        }
        if B::KIND != StageKind::Producer && !self.watch.subscribed {
            if self.producers.is_empty() {
                return Some(Stall::NoProducer);
            }
            self.watch.subscribed = true;
        }
        None
    }

    /// When to report the current wait, or `None` when there is nothing to
    /// report (not waiting, already reported, or reports are off).
    fn stall_deadline(&mut self) -> Option<Instant> {
        let after = self.watch.after?;
        let Some(wait) = self.waiting_for() else {
            self.watch.since = None;
            self.watch.reported = false;
            return None;
        };
        match &self.watch.since {
            Some((current, since)) if discriminant(current) == discriminant(&wait) => {
                let since = *since;
                self.watch.since = Some((wait, since));
                (!self.watch.reported).then(|| since + after)
            }
            _ => {
                let now = Instant::now();
                self.watch.since = Some((wait, now));
                self.watch.reported = false;
                Some(now + after)
            }
        }
    }

    fn report_stall(&mut self) {
        let Some(wait) = self.waiting_for() else {
            return;
        };
        let waited = self
            .watch
            .since
            .as_ref()
            .map(|(_, since)| since.elapsed())
            .unwrap_or_default();
        self.watch.reported = true;
        tracing::warn!(
            stage = %self.me.name,
            waiting_for = %wait,
            ?waited,
            "stage stalled: {wait}"
        );
    }

    /// The stall to show in the stage's stats.
    pub(super) fn stall(&self) -> Option<Stall> {
        if !self.watch.reported {
            return None;
        }
        self.watch.since.as_ref().map(|(wait, _)| wait.clone())
    }
}

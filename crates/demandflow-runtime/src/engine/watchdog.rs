//! Stall reports: a stage that waits for something that may never come says
//! so once, at WARN, after its stall report time, and shows it in its stats.
//!
//! What it may wait for:
//!
//! - a consumer to subscribe, while it holds events (a producer);
//! - a consumer for one partition, while that partition holds events;
//! - a producer, when it was never subscribed to one (a consumer);
//! - events it asked a producer for, when none has arrived for a whole stall
//!   report time **and** the producer is not simply idle: it holds events in
//!   its own buffer (a broadcast held back by a slower consumer, a partition
//!   queue that is full), or it has not taken a message all that time (it is
//!   stuck in a callback). A producer with nothing to send is idle: waiting on
//!   it is what a consumer of a quiet source does all day, so it is never
//!   reported, and neither is a producer told to accumulate demand.
//!
//! Nothing here runs per event. The stage looks at what it waits for only when
//! its mailbox runs empty, with a few field reads; a producer then also writes
//! its pulse (two relaxed stores) for its consumers to read. One timer per
//! stage, kept across turns, exists only while it waits: for a consumer with
//! demand outstanding (most of the time, in a busy pipeline) it fires once per
//! stall report time, to see whether any event arrived meanwhile. So a stall of
//! that last kind is reported between one and two stall report times after the
//! last event arrived.

use std::future::Future;
use std::mem::discriminant;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use demandflow_core::Dispatcher;
use tokio::time::{Instant, Sleep};

use super::{Engine, UpState};
use crate::behaviour::Behaviour;
use crate::port::Msg;
use crate::{DemandFlow, StageKind, Stall};

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
    /// Waiting for events asked of a producer: since when, with the count of
    /// events received then, and the report once made.
    upstream: Option<UpstreamWait>,
    /// The one timer, created when first needed and moved, not rebuilt.
    timer: Option<Pin<Box<Sleep>>>,
    /// How many times this stage turned to its mailbox (its pulse).
    turns: u64,
}

struct UpstreamWait {
    since: Instant,
    events_in: u64,
    reported: Option<Stall>,
}

impl Watch {
    pub(super) fn new(after: Option<Duration>) -> Self {
        Watch {
            after,
            since: None,
            reported: false,
            subscribed: false,
            upstream: None,
            timer: None,
            turns: 0,
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
        let producing = B::KIND != StageKind::Consumer;
        if producing {
            self.watch.turns += 1;
            // Held on purpose while accumulating: not a stall of its consumers.
            let held = if self.flow == DemandFlow::Forward {
                self.buffer.len()
            } else {
                0
            };
            self.me.pulse.waiting(self.watch.turns, held);
        }
        let msg = loop {
            let Some(deadline) = self.next_check() else {
                break self.rx.recv().await;
            };
            let timer = match &mut self.watch.timer {
                Some(timer) => {
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => self
                    .watch
                    .timer
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            let rx = &mut self.rx;
            let msg = std::future::poll_fn(|cx| {
                if let Poll::Ready(msg) = rx.poll_recv(cx) {
                    return Poll::Ready(Some(msg));
                }
                timer.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match msg {
                Some(msg) => break msg,
                None => self.on_check(),
            }
        };
        if producing {
            self.me.pulse.working(self.watch.turns);
        }
        msg
    }

    /// When to look again: the earlier of the two kinds of wait, or `None`
    /// when there is nothing to look at.
    fn next_check(&mut self) -> Option<Instant> {
        let local = self.stall_deadline();
        let upstream = self.upstream_deadline();
        match (local, upstream) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer fired: report what has waited long enough.
    fn on_check(&mut self) {
        let now = Instant::now();
        if self.stall_deadline().is_some_and(|d| d <= now) {
            self.report_stall();
        }
        if self.upstream_deadline().is_some_and(|d| d <= now) {
            self.check_upstream();
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
        self.log_stall(&wait, waited);
    }

    fn log_stall(&self, wait: &Stall, waited: Duration) {
        tracing::warn!(
            stage = %self.me.name,
            waiting_for = %wait,
            ?waited,
            "stage stalled: {wait}"
        );
    }

    /// When to look at the producers this stage waits on, or `None` when it
    /// waits on none (or has reported it already).
    fn upstream_deadline(&mut self) -> Option<Instant> {
        let after = self.watch.after?;
        if B::KIND == StageKind::Producer {
            return None;
        }
        let waits = self
            .producers
            .values()
            .any(|up| up.outstanding > 0 && matches!(up.state, UpState::Active));
        if !waits {
            self.watch.upstream = None;
            return None;
        }
        match &self.watch.upstream {
            // Reported: quiet until an event arrives, which starts a new wait.
            Some(wait) if wait.reported.is_some() => {
                if self.probe.events_in.get() == wait.events_in {
                    return None;
                }
                Some(self.start_upstream_wait() + after)
            }
            Some(wait) => Some(wait.since + after),
            None => Some(self.start_upstream_wait() + after),
        }
    }

    /// Starts watching the producers from now; returns now.
    fn start_upstream_wait(&mut self) -> Instant {
        let since = Instant::now();
        for up in self.producers.values_mut() {
            up.turns_seen = up.producer.pulse().turns;
        }
        self.watch.upstream = Some(UpstreamWait {
            since,
            events_in: self.probe.events_in.get(),
            reported: None,
        });
        since
    }

    /// A stall report time has passed since the wait started: reports it when
    /// nothing arrived meanwhile and a producer asked for events holds some or
    /// is stuck; otherwise watches on from now.
    fn check_upstream(&mut self) {
        let Some(wait) = &self.watch.upstream else {
            return;
        };
        if self.probe.events_in.get() != wait.events_in {
            self.start_upstream_wait();
            return;
        }
        let waited = wait.since.elapsed();
        let stall = self.producers.values().find_map(|up| {
            if up.outstanding == 0 || !matches!(up.state, UpState::Active) {
                return None;
            }
            let pulse = up.producer.pulse();
            let stuck = !pulse.waiting && pulse.turns == up.turns_seen;
            (stuck || pulse.held > 0).then(|| Stall::NoEvents {
                producer: up.producer.name().to_owned(),
                asked: up.outstanding,
                producer_buffered: pulse.held,
            })
        });
        let Some(stall) = stall else {
            // Every producer waited on is idle: nothing to report.
            self.start_upstream_wait();
            return;
        };
        self.log_stall(&stall, waited);
        if let Some(wait) = &mut self.watch.upstream {
            wait.reported = Some(stall);
        }
    }

    /// The stall to show in the stage's stats.
    pub(super) fn stall(&self) -> Option<Stall> {
        if self.watch.reported
            && let Some((wait, _)) = &self.watch.since
        {
            return Some(wait.clone());
        }
        self.watch.upstream.as_ref()?.reported.clone()
    }
}

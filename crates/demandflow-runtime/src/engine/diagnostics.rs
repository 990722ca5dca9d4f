//! The warnings a stage logs: each names the stage (a `stage` field at the
//! warning's own level, so it shows without debug spans), and a warning that
//! repeats is logged at most once per [`WINDOW`] with a count of the
//! occurrences folded into it.

use std::sync::Arc;
use std::time::Duration;

use demandflow_core::SubscriptionId;
use tokio::time::Instant;

/// The shortest time between two logs of one kind of warning from one stage.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Warnings that can repeat many times in a run.
#[derive(Clone, Copy)]
enum Kind {
    /// Events delivered to a consumer that had stopped.
    Lost = 0,
    /// Events the buffer dropped on overflow.
    Dropped = 1,
    /// Events for a subscription this stage no longer has.
    Unknown = 2,
    /// Casts of a request type the stage does not answer.
    Unanswered = 3,
}

const KINDS: usize = 4;

#[derive(Default)]
struct Slot {
    last: Option<Instant>,
    /// Occurrences since the last log, not logged yet.
    folded: u64,
    /// Events those occurrences carried.
    folded_events: u64,
}

/// One stage's warnings.
pub(super) struct Warnings {
    stage: Arc<str>,
    /// Allocated at the first warning: most stages never warn, and every
    /// stage, idle ones included, would otherwise carry the slots in its task.
    slots: Option<Box<[Slot; KINDS]>>,
}

impl Warnings {
    pub(super) fn new(stage: Arc<str>) -> Self {
        Warnings { stage, slots: None }
    }

    /// `Some((occurrences, events))` to log now, with what was folded since the
    /// last log; `None` to fold this one into the next.
    fn admit(&mut self, kind: Kind, events: u64) -> Option<(u64, u64)> {
        let slot = &mut self.slots.get_or_insert_with(Box::default)[kind as usize];
        let now = Instant::now();
        if slot
            .last
            .is_some_and(|last| now.duration_since(last) < WINDOW)
        {
            slot.folded += 1;
            slot.folded_events += events;
            return None;
        }
        slot.last = Some(now);
        let out = (slot.folded + 1, slot.folded_events + events);
        slot.folded = 0;
        slot.folded_events = 0;
        Some(out)
    }

    pub(super) fn lost(&mut self, sub: SubscriptionId, events: u64) {
        if let Some((times, lost)) = self.admit(Kind::Lost, events) {
            tracing::warn!(
                stage = %self.stage,
                %sub,
                lost,
                times,
                "events delivered to a stopped consumer were lost"
            );
        }
    }

    pub(super) fn dropped(&mut self, events: u64) {
        if let Some((times, dropped)) = self.admit(Kind::Dropped, events) {
            tracing::warn!(
                stage = %self.stage,
                dropped,
                times,
                "buffer full: events dropped"
            );
        }
    }

    pub(super) fn unknown(&mut self, sub: SubscriptionId, events: u64) {
        if let Some((times, dropped)) = self.admit(Kind::Unknown, events) {
            tracing::warn!(
                stage = %self.stage,
                %sub,
                dropped,
                times,
                "events for an unknown subscription"
            );
        }
    }

    /// A cast of `request`, a type the stage did not register, was dropped.
    pub(super) fn unanswered(&mut self, request: &'static str) {
        if let Some((times, _)) = self.admit(Kind::Unanswered, 0) {
            tracing::warn!(
                stage = %self.stage,
                request,
                times,
                "message dropped: the stage does not answer this request type"
            );
        }
    }

    /// Logs what is still folded: called when the stage stops.
    pub(super) fn flush(&mut self) {
        let Some(slots) = &mut self.slots else {
            return;
        };
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.folded == 0 {
                continue;
            }
            let (times, events) = (slot.folded, slot.folded_events);
            slot.folded = 0;
            slot.folded_events = 0;
            let what = match i {
                0 => "events delivered to a stopped consumer were lost",
                1 => "buffer full: events dropped",
                2 => "events for an unknown subscription",
                _ => "messages dropped: the stage does not answer their request type",
            };
            tracing::warn!(stage = %self.stage, events, times, "{what} (repeats)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_repeated_warning_is_logged_once_per_window_with_a_count() {
        let mut w = Warnings::new("s".into());
        assert_eq!(w.admit(Kind::Lost, 3), Some((1, 3)));
        assert_eq!(w.admit(Kind::Lost, 2), None);
        assert_eq!(w.admit(Kind::Lost, 5), None);
        // Another kind has its own window.
        assert_eq!(w.admit(Kind::Dropped, 1), Some((1, 1)));
        tokio::time::advance(WINDOW).await;
        assert_eq!(w.admit(Kind::Lost, 1), Some((3, 8)));
        assert_eq!(w.admit(Kind::Lost, 1), None);
    }
}

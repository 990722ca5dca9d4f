//! When a stage of a topology has heard the last of its producers.
//!
//! Processors, batchers and batch handlers all end the same way: once every
//! producer they subscribed to has gone *normally* (the sources ended, or the
//! topology is draining), nothing more will come and they stop. A producer
//! that ended abnormally is about to be restarted by the supervisor
//! (rest-for-one restarts this stage with it), so running out of producers
//! is then not the end.

use demandflow_runtime::CancelReason;

/// Counts a stage's live producer subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    producers: usize,
    /// A producer ended abnormally.
    failed: bool,
}

impl Upstream {
    /// A subscription to a producer was made.
    pub(crate) fn subscribed(&mut self) {
        self.producers += 1;
    }

    /// A subscription to a producer ended with `reason`; `true` when it was
    /// the last one and none ended abnormally, so the stage should stop.
    pub(crate) fn cancelled(&mut self, reason: &CancelReason) -> bool {
        self.producers = self.producers.saturating_sub(1);
        self.failed |= !reason.reason().is_normal();
        self.producers == 0 && !self.failed
    }
}

#[cfg(test)]
mod tests {
    use demandflow_runtime::Reason;

    use super::*;

    #[test]
    fn the_last_normal_end_stops_the_stage_and_an_abnormal_one_never_does() {
        let normal = CancelReason::Down(Reason::Normal);
        let mut up = Upstream::default();
        up.subscribed();
        up.subscribed();
        assert!(!up.cancelled(&normal));
        assert!(up.cancelled(&normal));

        let mut up = Upstream::default();
        up.subscribed();
        up.subscribed();
        assert!(!up.cancelled(&CancelReason::Down(Reason::Error("boom".into()))));
        assert!(!up.cancelled(&normal));
    }
}

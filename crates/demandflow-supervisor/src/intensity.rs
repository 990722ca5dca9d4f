//! Restart intensity: how many restarts a supervisor allows in a sliding window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Counts restarts in a sliding window of `period`; more than `max_restarts` in
/// the window means the supervisor must give up (Erlang's restart intensity).
#[derive(Debug)]
pub(crate) struct Intensity {
    max_restarts: usize,
    period: Duration,
    /// Times of the restarts still in the window, oldest first.
    times: VecDeque<Instant>,
}

impl Intensity {
    pub(crate) fn new(max_restarts: usize, period: Duration) -> Self {
        Intensity {
            max_restarts,
            period,
            times: VecDeque::new(),
        }
    }

    /// Records a restart at `now`. Returns `false` when it is one too many: more
    /// than `max_restarts` restarts, this one included, less than `period` apart.
    pub(crate) fn add(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.times.front() {
            if now.saturating_duration_since(oldest) >= self.period {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() <= self.max_restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn the_fourth_restart_within_five_seconds_is_one_too_many() {
        let t0 = Instant::now();
        let mut intensity = Intensity::new(3, Duration::from_secs(5));
        assert!(intensity.add(at(t0, 0)));
        assert!(intensity.add(at(t0, 1_000)));
        assert!(intensity.add(at(t0, 2_000)));
        assert!(!intensity.add(at(t0, 4_999)));
    }

    #[test]
    fn restarts_older_than_the_period_leave_the_window() {
        let t0 = Instant::now();
        let mut intensity = Intensity::new(3, Duration::from_secs(5));
        assert!(intensity.add(at(t0, 0)));
        assert!(intensity.add(at(t0, 1_000)));
        assert!(intensity.add(at(t0, 2_000)));
        // Exactly 5 s after the first: the first has left the window.
        assert!(intensity.add(at(t0, 5_000)));
        assert!(!intensity.add(at(t0, 5_999)));
    }

    #[test]
    fn zero_max_restarts_refuses_the_first_restart() {
        let mut intensity = Intensity::new(0, Duration::from_secs(5));
        assert!(!intensity.add(Instant::now()));
    }
}

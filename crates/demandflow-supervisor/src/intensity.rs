//! Restart intensity: how many restarts a supervisor allows in a sliding
//! window, shared by the three supervisors so they cannot disagree.
//!
//! Every supervisor builder keeps an [`IntensityLimit`] (set with the
//! `max_restarts` / `max_seconds` setters that [`intensity_setters!`] writes
//! into each builder), checks it with [`IntensityLimit::check`] when it is built,
//! and counts restarts with the [`Intensity`] window it makes.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use demandflow_core::ConfigError;

/// How many restarts a supervisor allows (`max_restarts`) within a sliding
/// window (`max_seconds`): Erlang's restart intensity. The defaults are 3
/// restarts in 5 s, as in OTP and GenStage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IntensityLimit {
    pub(crate) max_restarts: usize,
    pub(crate) max_seconds: Duration,
}

impl Default for IntensityLimit {
    fn default() -> Self {
        IntensityLimit {
            max_restarts: 3,
            max_seconds: Duration::from_secs(5),
        }
    }
}

impl IntensityLimit {
    /// Refuses a zero window: no restart could ever be counted against the
    /// limit, so a crash-looping child would be restarted forever.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_seconds.is_zero() {
            return Err(ConfigError::Zero {
                option: "max_seconds",
            });
        }
        Ok(())
    }

    /// An empty sliding window for this limit.
    pub(crate) fn window(self) -> Intensity {
        Intensity {
            limit: self,
            times: VecDeque::new(),
        }
    }
}

/// Says what the limit is, for the error reason of a supervisor that gave up:
/// "more than 3 restarts within 5s".
impl fmt::Display for IntensityLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "more than {} restarts within {:?}",
            self.max_restarts, self.max_seconds
        )
    }
}

/// Writes the `max_restarts` and `max_seconds` setters into a builder that has
/// an `intensity: IntensityLimit` field, with the same names, types and docs in
/// every supervisor.
macro_rules! intensity_setters {
    () => {
        /// Sets how many restarts are allowed within
        /// [`max_seconds`](Self::max_seconds); one more stops the supervisor
        /// with an error reason that says so. 0 stops it at the first restart
        /// it would make. The default is 3.
        pub fn max_restarts(mut self, max_restarts: usize) -> Self {
            self.intensity.max_restarts = max_restarts;
            self
        }

        /// Sets the sliding window in which restarts are counted (GenStage's
        /// `max_seconds`, as a [`Duration`](std::time::Duration)). The default
        /// is 5 s. Zero is refused when the supervisor is built or started
        /// ([`ConfigError::Zero`](demandflow_core::ConfigError::Zero) inside
        /// [`BuildError::Start`](crate::BuildError::Start)).
        pub fn max_seconds(mut self, window: std::time::Duration) -> Self {
            self.intensity.max_seconds = window;
            self
        }
    };
}
pub(crate) use intensity_setters;

/// Counts restarts in a sliding window of `max_seconds`; more than
/// `max_restarts` in the window means the supervisor must give up.
#[derive(Debug)]
pub(crate) struct Intensity {
    limit: IntensityLimit,
    /// Times of the restarts still in the window, oldest first.
    times: VecDeque<Instant>,
}

impl Intensity {
    /// The limit this window enforces.
    pub(crate) fn limit(&self) -> IntensityLimit {
        self.limit
    }

    /// Records a restart at `now`. Returns `false` when it is one too many: more
    /// than `max_restarts` restarts, this one included, less than `max_seconds` apart.
    pub(crate) fn add(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.times.front() {
            if now.saturating_duration_since(oldest) >= self.limit.max_seconds {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() <= self.limit.max_restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    fn window(max_restarts: usize, seconds: u64) -> Intensity {
        IntensityLimit {
            max_restarts,
            max_seconds: Duration::from_secs(seconds),
        }
        .window()
    }

    #[test]
    fn the_fourth_restart_within_five_seconds_is_one_too_many() {
        let t0 = Instant::now();
        let mut intensity = window(3, 5);
        assert!(intensity.add(at(t0, 0)));
        assert!(intensity.add(at(t0, 1_000)));
        assert!(intensity.add(at(t0, 2_000)));
        assert!(!intensity.add(at(t0, 4_999)));
    }

    #[test]
    fn restarts_older_than_the_period_leave_the_window() {
        let t0 = Instant::now();
        let mut intensity = window(3, 5);
        assert!(intensity.add(at(t0, 0)));
        assert!(intensity.add(at(t0, 1_000)));
        assert!(intensity.add(at(t0, 2_000)));
        // Exactly 5 s after the first: the first has left the window.
        assert!(intensity.add(at(t0, 5_000)));
        assert!(!intensity.add(at(t0, 5_999)));
    }

    #[test]
    fn zero_max_restarts_refuses_the_first_restart() {
        let mut intensity = window(0, 5);
        assert!(!intensity.add(Instant::now()));
    }

    #[test]
    fn a_zero_window_is_refused_and_the_default_is_three_in_five_seconds() {
        let zero = IntensityLimit {
            max_restarts: 3,
            max_seconds: Duration::ZERO,
        };
        assert_eq!(
            zero.check(),
            Err(ConfigError::Zero {
                option: "max_seconds"
            })
        );
        let default = IntensityLimit::default();
        assert_eq!(default.check(), Ok(()));
        assert_eq!(default.to_string(), "more than 3 restarts within 5s");
    }
}

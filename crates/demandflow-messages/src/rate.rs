//! Rate limiting of sources: at most N messages per interval.

use std::num::NonZeroU64;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// At most `limit` messages per `interval`, for
/// [`TopologyBuilder::rate_limit`](crate::TopologyBuilder::rate_limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed per interval.
    pub limit: NonZeroU64,
    /// The length of an interval.
    pub interval: Duration,
}

impl RateLimit {
    /// At most `limit` messages every `interval`.
    pub fn new(limit: NonZeroU64, interval: Duration) -> Self {
        RateLimit { limit, interval }
    }
}

/// The shared allowance of a topology's sources: how many messages may still
/// be asked of them in the current interval.
///
/// Intervals are consecutive windows of fixed length starting when the
/// topology starts; each window allows `limit` messages, and allowance left
/// over at the end of a window is not carried into the next. Every copy of the
/// source draws from the same allowance.
///
/// What is limited is the demand the processors ask of the sources: a source
/// never sends more than it was asked, so a source that answers demand as it
/// comes (an iterator, a queue with messages waiting) delivers at most `limit`
/// messages per interval. A source that answers late (nothing ready yet)
/// delivers demand of earlier intervals when its messages come, so it can
/// exceed the limit in the interval they arrive in, by at most the
/// processors' `max_demand` each.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: u64,
    interval: Duration,
    window_start: Instant,
    remaining: u64,
}

impl RateLimiter {
    pub(crate) fn new(rate: RateLimit) -> Self {
        RateLimiter {
            state: Mutex::new(State {
                limit: rate.limit.get(),
                interval: rate.interval,
                window_start: Instant::now(),
                remaining: rate.limit.get(),
            }),
        }
    }

    /// Takes up to `want` from the current window's allowance; returns what was
    /// taken and when the next window starts.
    pub(crate) fn take(&self, want: u64) -> (u64, Instant) {
        let mut state = self.state.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.window_start);
        if elapsed >= state.interval {
            let windows = elapsed.as_nanos() / state.interval.as_nanos().max(1);
            let step = state
                .interval
                .saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
            state.window_start += step;
            state.remaining = state.limit;
        }
        let taken = want.min(state.remaining);
        state.remaining -= taken;
        (taken, state.window_start + state.interval)
    }

    /// Changes the number of messages allowed per interval, from the next
    /// interval on (the current one keeps what it has left, capped at the new limit).
    pub fn set_limit(&self, limit: NonZeroU64) {
        let mut state = self.state.lock();
        state.limit = limit.get();
        state.remaining = state.remaining.min(limit.get());
    }

    /// The number of messages allowed per interval.
    pub fn limit(&self) -> u64 {
        self.state.lock().limit
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.state.lock().interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u64, interval_ms: u64) -> RateLimiter {
        RateLimiter::new(RateLimit::new(
            NonZeroU64::new(limit).unwrap(),
            Duration::from_millis(interval_ms),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_allows_its_limit_and_the_next_starts_full() {
        let start = Instant::now();
        let limiter = limiter(10, 100);
        assert_eq!(limiter.take(4), (4, start + Duration::from_millis(100)));
        assert_eq!(limiter.take(8).0, 6);
        assert_eq!(limiter.take(1).0, 0);
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_eq!(limiter.take(1).0, 0, "still the first window");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limiter.take(25), (10, start + Duration::from_millis(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_windows_do_not_accumulate_allowance() {
        let start = Instant::now();
        let limiter = limiter(10, 100);
        tokio::time::advance(Duration::from_millis(1_050)).await;
        // Window 10 (1,000..1,100 ms): 10, not 110.
        assert_eq!(
            limiter.take(100),
            (10, start + Duration::from_millis(1_100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_limit_caps_the_current_window_at_once() {
        let limiter = limiter(10, 100);
        assert_eq!(limiter.take(3).0, 3);
        limiter.set_limit(NonZeroU64::new(5).unwrap());
        assert_eq!(limiter.take(10).0, 5);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(limiter.take(10).0, 5);
        assert_eq!(limiter.limit(), 5);
    }
}

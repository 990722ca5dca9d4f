//! Calibrating, warming up and repeating one scenario, and reporting the median.

use std::time::Duration;

/// What one run of a scenario did: how many events it moved, in how much wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Events the scenario moved (for `consumer_supervisor`: workers started and finished).
    pub events: u64,
    /// Wall-clock time the scenario measured around moving them.
    pub elapsed: Duration,
}

impl Sample {
    /// A run that moved `events` in `elapsed`.
    pub fn new(events: u64, elapsed: Duration) -> Sample {
        Sample { events, elapsed }
    }

    /// Events per second of this run. A run too short for the clock counts as 1 ns.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// How long and how often each scenario is measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Runs at full length before the measured ones, whose figures are discarded.
    pub warmups: usize,
    /// Measured runs; the reported figure is their median. At least 1.
    pub reps: usize,
    /// Wall-clock time one run should take; the event count is calibrated to reach it.
    pub run_time: Duration,
    /// Events of the first calibration run; calibration grows the count from there.
    pub min_events: u64,
}

/// The whole `--quick` run is planned to take about this long (plus compiling), well under
/// the 60 seconds BENCH.md allows.
pub const QUICK_BUDGET: Duration = Duration::from_secs(30);

/// The largest event count one run is asked for.
const MAX_EVENTS: u64 = 1 << 40;

impl Config {
    /// `--quick`: 1 warm-up and 3 measured runs per scenario, each run as long as the
    /// [`QUICK_BUDGET`] allows for `measurements` scenario measurements, between 50 and 300 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use demandflow_benches::{Config, QUICK_BUDGET};
    ///
    /// // Two baselines: the longest quick runs.
    /// assert_eq!(Config::quick(2).run_time, Duration::from_millis(300));
    /// // Thirty-four measurements still fit the budget.
    /// assert!(Config::quick(34).estimated_time(34) <= QUICK_BUDGET);
    /// ```
    pub fn quick(measurements: usize) -> Config {
        let mut config = Config {
            warmups: 1,
            reps: 3,
            run_time: Duration::from_millis(300),
            min_events: 1_000,
        };
        let per_run = QUICK_BUDGET.as_secs_f64() / config.runs_per_measurement();
        let per_run = per_run / measurements.max(1) as f64;
        // Whole microseconds, rounded down, so that the estimate stays within the budget.
        config.run_time = Duration::from_micros((per_run.clamp(0.05, 0.3) * 1e6) as u64);
        config
    }

    /// A full run: 1 warm-up and 9 measured runs of 0.5 s per scenario (about 5 s each).
    pub fn full() -> Config {
        Config {
            warmups: 1,
            reps: 9,
            run_time: Duration::from_millis(500),
            min_events: 1_000,
        }
    }

    /// About how long measuring `measurements` scenarios takes, not counting the time the
    /// scenarios spend outside their measured part (building runtimes, spawning threads).
    pub fn estimated_time(&self, measurements: usize) -> Duration {
        self.run_time
            .mul_f64(self.runs_per_measurement() * measurements as f64)
    }

    /// Runs of `run_time` one measurement takes: calibration (about a fifth of one run, see
    /// [`measure`]), warm-ups and measured runs.
    fn runs_per_measurement(&self) -> f64 {
        0.2 + self.warmups as f64 + self.reps.max(1) as f64
    }
}

/// The figures of one measured scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Median events per second of the measured runs: the figure that is reported.
    pub events_per_sec: f64,
    /// Events per second of each measured run, in the order they ran.
    pub rates: Vec<f64>,
    /// Events each measured run was asked to move.
    pub events_per_run: u64,
}

impl Measurement {
    /// A measurement made of `rates`, the events per second of the measured runs.
    ///
    /// # Panics
    ///
    /// If `rates` is empty.
    pub fn from_rates(rates: Vec<f64>, events_per_run: u64) -> Measurement {
        Measurement {
            events_per_sec: median(&rates),
            rates,
            events_per_run,
        }
    }

    /// Slowest to fastest run, as a fraction of the median: how noisy this figure is.
    pub fn range(&self) -> f64 {
        let min = self.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (max - min) / self.events_per_sec
    }
}

/// The median of `values`: the middle one, or the mean of the two middle ones.
///
/// # Panics
///
/// If `values` is empty.
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "the median of nothing");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Measures `scenario`: the median events per second over `config.reps` runs.
///
/// `scenario` is called with the number of events to move and returns what it moved in how
/// long ([`Sample`]); it times only the part it means to measure (set-up such as building a
/// runtime stays outside). The harness never fixes the event count in advance:
///
/// 1. Calibration: runs on `config.min_events`, growing the count (2× to 100× per step) until
///    one run takes a tenth of `run_time`.
/// 2. Warm-ups: `config.warmups` runs sized to last `run_time` at the calibrated speed; each one
///    re-estimates the speed. Their figures are discarded.
/// 3. `config.reps` measured runs, all asked for the same count, sized from the last estimate.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use demandflow_benches::{Config, Sample, measure};
///
/// let config = Config { warmups: 0, reps: 3, run_time: Duration::from_millis(5), min_events: 100 };
/// let measurement = measure(&config, |events| {
///     let start = Instant::now();
///     let sum: u64 = (0..events).map(std::hint::black_box).sum();
///     let elapsed = start.elapsed();
///     assert_eq!(sum, events * (events - 1) / 2);
///     Sample::new(events, elapsed)
/// });
/// assert_eq!(measurement.rates.len(), 3);
/// assert!(measurement.events_per_sec > 0.0);
/// ```
pub fn measure(config: &Config, mut scenario: impl FnMut(u64) -> Sample) -> Measurement {
    let mut rate = calibrate(config, &mut scenario);
    for _ in 0..config.warmups {
        rate = scenario(events_for(rate, config.run_time)).events_per_sec();
    }
    let events = events_for(rate, config.run_time);
    let rates = (0..config.reps.max(1))
        .map(|_| scenario(events).events_per_sec())
        .collect();
    Measurement::from_rates(rates, events)
}

/// Measures `a` and `b` as [`measure`] does, but alternately, run by run, so that a change of
/// the machine's speed during the measurement reaches both alike: the way to compare two
/// scenarios that differ by a few percent on a shared machine.
///
/// Both are calibrated, then warmed up (`a`, `b`, `a`, …), then measured in the order
/// `a b`, `b a`, `a b`, … (each pair swapped, so that neither always runs second).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use demandflow_benches::{Config, Sample, measure_pair};
///
/// let sum = |events: u64| {
///     let start = Instant::now();
///     let sum: u64 = (0..events).map(std::hint::black_box).sum();
///     assert_eq!(sum, events * (events - 1) / 2);
///     Sample::new(events, start.elapsed())
/// };
/// let config = Config { warmups: 1, reps: 4, run_time: Duration::from_millis(5), min_events: 100 };
/// let (a, b) = measure_pair(&config, sum, sum);
/// assert_eq!((a.rates.len(), b.rates.len()), (4, 4));
/// ```
pub fn measure_pair(
    config: &Config,
    mut a: impl FnMut(u64) -> Sample,
    mut b: impl FnMut(u64) -> Sample,
) -> (Measurement, Measurement) {
    let mut rate_a = calibrate(config, &mut a);
    let mut rate_b = calibrate(config, &mut b);
    for _ in 0..config.warmups {
        rate_a = a(events_for(rate_a, config.run_time)).events_per_sec();
        rate_b = b(events_for(rate_b, config.run_time)).events_per_sec();
    }
    let (events_a, events_b) = (
        events_for(rate_a, config.run_time),
        events_for(rate_b, config.run_time),
    );
    let (mut rates_a, mut rates_b) = (Vec::new(), Vec::new());
    for rep in 0..config.reps.max(1) {
        if rep % 2 == 0 {
            rates_a.push(a(events_a).events_per_sec());
            rates_b.push(b(events_b).events_per_sec());
        } else {
            rates_b.push(b(events_b).events_per_sec());
            rates_a.push(a(events_a).events_per_sec());
        }
    }
    (
        Measurement::from_rates(rates_a, events_a),
        Measurement::from_rates(rates_b, events_b),
    )
}

/// Runs `scenario` on `config.min_events`, growing the count (2× to 100× per step) until one
/// run takes a tenth of `run_time`; returns the speed of that run, events per second.
fn calibrate(config: &Config, scenario: &mut impl FnMut(u64) -> Sample) -> f64 {
    let threshold = config.run_time / 10;
    let mut events = config.min_events.max(1);
    loop {
        let sample = scenario(events);
        if sample.elapsed >= threshold || events >= MAX_EVENTS {
            return sample.events_per_sec();
        }
        let seconds = sample.elapsed.as_secs_f64().max(1e-6);
        let grow = (2.0 * threshold.as_secs_f64() / seconds).clamp(2.0, 100.0);
        events = scale(events, grow);
    }
}

/// `events * factor`, within `1..=MAX_EVENTS`.
fn scale(events: u64, factor: f64) -> u64 {
    (events as f64 * factor)
        .round()
        .clamp(1.0, MAX_EVENTS as f64) as u64
}

/// The event count a run at `rate` events per second moves in `time`.
fn events_for(rate: f64, time: Duration) -> u64 {
    if rate.is_finite() {
        scale(1, rate * time.as_secs_f64())
    } else {
        MAX_EVENTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn range_is_relative_to_the_median() {
        let m = Measurement::from_rates(vec![90.0, 100.0, 110.0], 10);
        assert_eq!(m.events_per_sec, 100.0);
        assert!((m.range() - 0.2).abs() < 1e-12);
    }

    #[test]
    fn quick_runs_shrink_to_fit_the_budget_and_stay_above_50_ms() {
        assert_eq!(Config::quick(1).run_time, Duration::from_millis(300));
        let thirty = Config::quick(32);
        assert!(thirty.run_time < Duration::from_millis(300));
        assert!(thirty.estimated_time(32) <= QUICK_BUDGET);
        assert_eq!(Config::quick(10_000).run_time, Duration::from_millis(50));
    }

    /// A scenario with a fake clock: `nanos_per_event` per event, plus what it was asked.
    fn fake(nanos_per_event: u64, asked: &mut Vec<u64>) -> impl FnMut(u64) -> Sample + '_ {
        move |events| {
            asked.push(events);
            Sample::new(events, Duration::from_nanos(events * nanos_per_event))
        }
    }

    #[test]
    fn calibration_grows_the_count_until_a_run_lasts_run_time() {
        let config = Config {
            warmups: 1,
            reps: 3,
            run_time: Duration::from_millis(100),
            min_events: 1_000,
        };
        let mut asked = Vec::new();
        let m = measure(&config, fake(10, &mut asked));
        assert!((m.events_per_sec - 1e8).abs() < 1.0);
        // 100 ms at 10 ns per event.
        assert_eq!(m.events_per_run, 10_000_000);
        // Calibration: 10 µs, then ×100 = 1 ms, then ×20 = 20 ms ≥ 10 ms.
        assert_eq!(asked[..3], [1_000, 100_000, 2_000_000]);
        // One warm-up and three measured runs of the calibrated length.
        assert_eq!(asked[3..], [10_000_000; 4]);
    }

    #[test]
    fn a_pair_is_measured_alternately_each_pair_of_runs_swapped() {
        let config = Config {
            warmups: 1,
            reps: 4,
            run_time: Duration::from_millis(100),
            min_events: 1_000_000,
        };
        // Each scenario logs its name in a shared order of calls.
        let order = std::cell::RefCell::new(Vec::new());
        let run = |name: char, nanos_per_event: u64| {
            let order = &order;
            move |events: u64| {
                order.borrow_mut().push(name);
                Sample::new(events, Duration::from_nanos(events * nanos_per_event))
            }
        };
        let (a, b) = measure_pair(&config, run('a', 10), run('b', 20));
        assert!((a.events_per_sec - 1e8).abs() < 1.0);
        assert!((b.events_per_sec - 5e7).abs() < 1.0);
        // Calibration (one run each: 10 ms and 20 ms reach the 10 ms threshold), one warm-up
        // each, then a b, b a, a b, b a.
        let order: String = order.into_inner().into_iter().collect();
        assert_eq!(order, "abab".to_owned() + "abbaabba");
    }
}

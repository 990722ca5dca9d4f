//! The latency bench: how long an event waits between being handed to a pipeline
//! and being handled, under a steady offered load.
//!
//! A pacing task offers events at a fixed rate (it wakes every millisecond and
//! hands over every event that became due since its last wake-up), stamping each
//! with the instant it was handed over. The consumer records, for every event,
//! the time from that stamp to the moment its batch reached the handler, in an
//! HdrHistogram (3 significant digits). The baseline is what a user would write
//! with plain tokio: the same pacing task sending into an unbounded mpsc channel
//! and one task receiving batches (`recv_many`) and recording them the same way.
//! The hop baselines put one or two forwarding tasks between them, so that a
//! pipeline can be compared with plain tokio making as many task hops as it does
//! (`P->C` makes two: pacer to producer, producer to consumer; `P->PC->C` three).
//!
//! Rows and baselines are measured alike: the same pacer, which hands an event
//! over without waiting whenever there is room (`try_send` for the push source,
//! which only waits when its bounded queue is full, where the unbounded channel
//! would not wait at all), the same stamping and recording points, and the same
//! 2-worker tokio runtime, built afresh for every run.
//!
//! A run *keeps up* when the pacer was never more than a tenth of the run (at
//! least 10 ms) behind its schedule and the last event was handled within that
//! slack after the end of the schedule; a run that does not keep up measures
//! queueing, not the pipeline, and is marked so.
//!
//! Each run also counts the involuntary context switches of the process's
//! threads while it ran: on a machine shared with other work, a worker thread
//! taken off its core for a scheduler time slice (milliseconds) delays every
//! event in flight meanwhile, which is what the millisecond tails of a loaded
//! machine are made of.

use std::sync::Arc;
use std::time::{Duration, Instant};

use demandflow::dispatcher::PartitionDispatcher;
use demandflow::{
    Consumer, ConsumerContext, Context, ProducerConsumer, Reason, SubscribeOptions, SubscriptionId,
    consumer, producer, producer_consumer, push,
};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Events a push source holds while its consumers catch up.
const PUSH_CAPACITY: usize = 65_536;

/// An event of the latency bench: a sequence number (the partition key) and when
/// it was handed to the pipeline.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    seq: u64,
    at: Instant,
}

/// The pipelines measured, one row each per offered load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyTopology {
    /// A push source and a consumer.
    Direct,
    /// A push source, a pass-through producer-consumer and a consumer.
    ThroughStage,
    /// A push source with the partition dispatcher (2 partitions) and a consumer per partition.
    Partition,
}

impl LatencyTopology {
    /// Every topology, in table order.
    pub const ALL: [LatencyTopology; 3] = [
        LatencyTopology::Direct,
        LatencyTopology::ThroughStage,
        LatencyTopology::Partition,
    ];

    /// The `"topology"` of its rows in the RESULT line (as in the throughput bench).
    pub fn label(self) -> &'static str {
        match self {
            LatencyTopology::Direct => "P->C",
            LatencyTopology::ThroughStage => "P->PC->C",
            LatencyTopology::Partition => "P->partition->C",
        }
    }
}

/// What one run at one offered load measured.
#[derive(Debug, Clone)]
pub struct LatencyFigures {
    /// Events offered per second.
    pub offered_per_sec: u64,
    /// Events offered (and handled: a run checks that every event arrived).
    pub events: u64,
    /// Enqueue-to-handled time, nanoseconds.
    pub histogram: Histogram<u64>,
    /// Whether the pipeline kept up with the offered load (see the module docs).
    pub kept_up: bool,
    /// Involuntary context switches of this process's threads during the run: how
    /// often the operating system took a thread off its core for other work.
    pub preemptions: u64,
}

/// Several rounds of one row (or baseline) at one load, summed up: each
/// percentile is the median of the rounds' percentiles, so that one round a busy
/// machine stalled does not decide the figure, and the rounds' own p99s are kept
/// to show how far they spread.
#[derive(Debug, Clone)]
pub struct LatencySummary {
    /// Events offered per second.
    pub offered_per_sec: u64,
    /// The rounds' figures, in the order they ran.
    pub rounds: Vec<LatencyFigures>,
}

impl LatencySummary {
    /// The median over the rounds of the value at `quantile`, nanoseconds.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        median_u64(
            self.rounds
                .iter()
                .map(|f| f.histogram.value_at_quantile(quantile)),
        )
    }

    /// The median over the rounds of the maximum, nanoseconds.
    pub fn max_ns(&self) -> u64 {
        median_u64(self.rounds.iter().map(|f| f.histogram.max()))
    }

    /// `true` when every round kept up with the load.
    pub fn kept_up(&self) -> bool {
        self.rounds.iter().all(|f| f.kept_up)
    }

    /// The median over the rounds of this p99 divided by `baseline`'s p99 in the
    /// same round (round `i` of both ran seconds apart).
    pub fn p99_ratio_to(&self, baseline: &LatencySummary) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .zip(&baseline.rounds)
            .map(|(row, base)| {
                row.histogram.value_at_quantile(0.99) as f64
                    / base.histogram.value_at_quantile(0.99).max(1) as f64
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// The summary as a RESULT row, with `key` (`"topology"` or `"name"`) set to
    /// `label`: the keys (medians over the rounds), then each round's p99
    /// and involuntary context switches.
    pub fn to_json(&self, key: &str, label: &str) -> Value {
        let us = |ns: u64| (ns as f64 / 1_000.0 * 10.0).round() / 10.0;
        json!({
            key: label,
            "offered_per_sec": self.offered_per_sec,
            "events": self.rounds.first().map_or(0, |f| f.events),
            "p50_us": us(self.quantile_ns(0.5)),
            "p99_us": us(self.quantile_ns(0.99)),
            "p999_us": us(self.quantile_ns(0.999)),
            "max_us": us(self.max_ns()),
            "kept_up": self.kept_up(),
            "rounds": self.rounds.len(),
            "p99_us_rounds": self.rounds.iter().map(|f| us(f.histogram.value_at_quantile(0.99))).collect::<Vec<_>>(),
            "preemptions_rounds": self.rounds.iter().map(|f| f.preemptions).collect::<Vec<_>>(),
        })
    }
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, stamp: Instant, now: Instant) {
    let ns = u64::try_from(now.saturating_duration_since(stamp).as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(ns.max(1));
}

/// Where the pacer hands its events.
enum Offer {
    Push(demandflow::Pusher<Stamp>),
    Tokio(tokio::sync::mpsc::UnboundedSender<Stamp>),
}

/// Offers `rate × duration` events at `rate` per second; returns how far behind
/// its schedule it fell at worst.
async fn pace(rate: u64, duration: Duration, offer: Offer) -> Duration {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0_u64;
    let mut worst_lag = Duration::ZERO;
    while sent < total {
        ticks.tick().await;
        let now = Instant::now();
        let due = ((rate as f64 * (now - start).as_secs_f64()) as u64).min(total);
        if due > sent {
            // How late the oldest event of this wake-up is handed over.
            let scheduled = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            worst_lag = worst_lag.max(now.saturating_duration_since(scheduled));
        }
        while sent < due {
            let stamp = Stamp {
                seq: sent,
                at: Instant::now(),
            };
            // Handed over without waiting while there is room, like the
            // unbounded channel: an awaited send would let tokio's cooperative
            // budget suspend the pacer between stamping and handing over.
            let delivered = match &offer {
                Offer::Push(pusher) => match pusher.try_send(stamp) {
                    Ok(()) => true,
                    Err(demandflow::TrySendError::Full(stamp)) => pusher.send(stamp).await.is_ok(),
                    Err(demandflow::TrySendError::Closed(_)) => false,
                },
                Offer::Tokio(tx) => tx.send(stamp).is_ok(),
            };
            assert!(delivered, "the pipeline stopped while the load was offered");
            sent += 1;
        }
    }
    // Dropping the sender ends the source (and the baseline's receiver).
    drop(offer);
    worst_lag
}

/// What the recorders of one run add up to: latencies, events, when the last one ended.
type Totals = Arc<Mutex<(Histogram<u64>, u64, Option<Instant>)>>;

/// Records the latency of every event it receives.
struct Recorder {
    histogram: Histogram<u64>,
    count: u64,
    out: Totals,
}

impl Consumer for Recorder {
    type Event = Stamp;

    async fn handle_events(
        &mut self,
        events: Vec<Stamp>,
        _: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        let now = Instant::now();
        for event in &events {
            record(&mut self.histogram, event.at, now);
        }
        self.count += events.len() as u64;
    }

    async fn terminate(&mut self, _: &Reason) {
        let mut out = self.out.lock();
        out.0.add(&self.histogram).expect("same bounds");
        out.1 += self.count;
        let now = Instant::now();
        out.2 = Some(out.2.map_or(now, |t| t.max(now)));
    }
}

/// Passes events on unchanged.
struct Pass;

impl ProducerConsumer for Pass {
    type In = Stamp;
    type Out = Stamp;

    async fn handle_events(
        &mut self,
        events: Vec<Stamp>,
        _: SubscriptionId,
        ctx: &mut Context<Stamp>,
    ) {
        ctx.emit_vec(events);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

fn slack(duration: Duration) -> Duration {
    (duration / 10).max(Duration::from_millis(10))
}

/// Offers `rate` events per second for `duration` to `topology` and measures it.
pub fn measure_pipeline(
    topology: LatencyTopology,
    rate: u64,
    duration: Duration,
) -> LatencyFigures {
    runtime().block_on(async move {
        let out: Totals = Arc::new(Mutex::new((new_histogram(), 0_u64, None)));
        let recorder = || Recorder {
            histogram: new_histogram(),
            count: 0,
            out: out.clone(),
        };
        let (source, pusher) = push::<Stamp>(nz(PUSH_CAPACITY));
        let mut sinks = Vec::new();
        match topology {
            LatencyTopology::Direct => {
                let source = producer(source).start().expect("start");
                let sink = consumer(recorder()).start().expect("start");
                sink.subscribe_to(&source, SubscribeOptions::new())
                    .await
                    .expect("subscribe");
                sinks.push(sink);
            }
            LatencyTopology::ThroughStage => {
                let source = producer(source).start().expect("start");
                let pass = producer_consumer(Pass).start().expect("start");
                let sink = consumer(recorder()).start().expect("start");
                sink.subscribe_to(&pass, SubscribeOptions::new())
                    .await
                    .expect("subscribe");
                pass.subscribe_to(&source, SubscribeOptions::new())
                    .await
                    .expect("subscribe");
                sinks.push(sink);
            }
            LatencyTopology::Partition => {
                let dispatcher = PartitionDispatcher::numbered(nz(2), |e: Stamp| {
                    Some(((e.seq % 2) as usize, e))
                })
                .build()
                .expect("building the partition dispatcher");
                let source = producer(source)
                    .dispatcher(dispatcher)
                    .start()
                    .expect("start");
                for partition in 0..2 {
                    let sink = consumer(recorder()).start().expect("start");
                    sink.subscribe_to(&source, SubscribeOptions::new().partition(partition))
                        .await
                        .expect("subscribe");
                    sinks.push(sink);
                }
            }
        }
        let switches = involuntary_switches();
        let start = Instant::now();
        let lag = pace(rate, duration, Offer::Push(pusher)).await;
        for sink in &sinks {
            assert_eq!(
                sink.wait().await,
                Reason::Normal,
                "a consumer stopped abnormally"
            );
        }
        let preemptions = involuntary_switches().saturating_sub(switches);
        let (histogram, count, last) = {
            let out = out.lock();
            (out.0.clone(), out.1, out.2)
        };
        let events = (rate as f64 * duration.as_secs_f64()).round() as u64;
        assert_eq!(count, events, "every offered event is handled");
        let late = last.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(start + duration)
        });
        LatencyFigures {
            offered_per_sec: rate,
            events,
            histogram,
            kept_up: lag <= slack(duration) && late <= slack(duration),
            preemptions,
        }
    })
}

/// The baseline: the same pacer into a plain tokio unbounded mpsc channel, one
/// task receiving and recording.
pub fn measure_tokio_mpsc(rate: u64, duration: Duration) -> LatencyFigures {
    measure_tokio_hops(0, rate, duration)
}

/// The hop baselines: the same pacer into a plain tokio unbounded mpsc channel,
/// through `forwarders` tasks that each receive and send every event on to the
/// next channel, to a task that receives and records. With `forwarders` 0 this is
/// the `tokio_mpsc` baseline; with 1 it makes the two task hops of `P->C`, with 2
/// the three of `P->PC->C`.
pub fn measure_tokio_hops(forwarders: usize, rate: u64, duration: Duration) -> LatencyFigures {
    runtime().block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Stamp>();
        for _ in 0..forwarders {
            let (next_tx, next_rx) = tokio::sync::mpsc::unbounded_channel::<Stamp>();
            let mut from = std::mem::replace(&mut rx, next_rx);
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(BATCH);
                while from.recv_many(&mut batch, BATCH).await > 0 {
                    for stamp in batch.drain(..) {
                        if next_tx.send(stamp).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        let receiver = tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut count = 0_u64;
            let mut batch = Vec::with_capacity(BATCH);
            // One instant per batch, as the pipelines' recorder takes it.
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let now = Instant::now();
                for stamp in batch.drain(..) {
                    record(&mut histogram, stamp.at, now);
                    count += 1;
                }
            }
            (histogram, count, Instant::now())
        });
        let switches = involuntary_switches();
        let start = Instant::now();
        let lag = pace(rate, duration, Offer::Tokio(tx)).await;
        let (histogram, count, last) = receiver.await.expect("the receiver task");
        let preemptions = involuntary_switches().saturating_sub(switches);
        let events = (rate as f64 * duration.as_secs_f64()).round() as u64;
        assert_eq!(count, events, "every offered event is received");
        let late = last.saturating_duration_since(start + duration);
        LatencyFigures {
            offered_per_sec: rate,
            events,
            histogram,
            kept_up: lag <= slack(duration) && late <= slack(duration),
            preemptions,
        }
    })
}

/// The most events a baseline task takes from its channel at once.
const BATCH: usize = 1024;

/// Involuntary context switches of this process's threads so far, as Linux
/// counts them in `/proc/self/task/*/status`; 0 where that is not readable.
fn involuntary_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One round whose every event waited `us` microseconds.
    fn round(us: u64) -> LatencyFigures {
        let mut histogram = new_histogram();
        for _ in 0..100 {
            histogram.record(us * 1_000).unwrap();
        }
        LatencyFigures {
            offered_per_sec: 10_000,
            events: 100,
            histogram,
            kept_up: true,
            preemptions: 0,
        }
    }

    fn summary(rounds: &[u64]) -> LatencySummary {
        LatencySummary {
            offered_per_sec: 10_000,
            rounds: rounds.iter().map(|&us| round(us)).collect(),
        }
    }

    #[test]
    fn a_percentile_is_the_median_of_the_rounds_so_one_stalled_round_does_not_decide_it() {
        let row = summary(&[40, 4_000, 50]);
        let p99 = row.quantile_ns(0.99);
        // 3 significant digits: 50 µs is recorded within 0.1%.
        assert!((49_950..=50_050).contains(&p99), "{p99}");
        assert_eq!(row.max_ns(), row.quantile_ns(1.0));
    }

    #[test]
    fn the_ratio_pairs_each_round_with_the_baseline_of_the_same_round() {
        // Round ratios 2, 0.75 and 3: their median is 2, while the ratio of the
        // medians (90 / 40) would be 2.25.
        let row = summary(&[100, 30, 90]);
        let base = summary(&[50, 40, 30]);
        let ratio = row.p99_ratio_to(&base);
        assert!((ratio - 2.0).abs() < 0.01, "{ratio}");
        let json = row.to_json("topology", "P->C");
        assert_eq!(json["rounds"], 3);
        assert_eq!(json["p99_us_rounds"].as_array().map(Vec::len), Some(3));
        assert_eq!(json["kept_up"], true);
    }
}

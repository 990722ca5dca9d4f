//! The latency bench: how long an event waits between being handed to a pipeline
//! and being handled, under a steady offered load.
//!
//! A pacing task offers events at a fixed rate (it wakes every millisecond and
//! hands over every event that became due since its last wake-up), stamping each
//! with the instant it was handed over. The consumer records, for every event,
//! the time from that stamp to the moment its batch reached the handler, in an
//! HdrHistogram (3 significant digits). The baseline is what a user would write
//! with plain tokio: the same pacing task sending into an unbounded mpsc channel
//! and one task receiving and recording.
//!
//! A run *keeps up* when the pacer was never more than a tenth of the run (at
//! least 10 ms) behind its schedule and the last event was handled within that
//! slack after the end of the schedule; a run that does not keep up measures
//! queueing, not the pipeline, and is marked so.

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
}

impl LatencyFigures {
    /// The figures as a RESULT row, with `key` (`"topology"` or `"name"`) set to `label`.
    pub fn to_json(&self, key: &str, label: &str) -> Value {
        let us = |ns: u64| (ns as f64 / 1_000.0 * 10.0).round() / 10.0;
        let h = &self.histogram;
        json!({
            key: label,
            "offered_per_sec": self.offered_per_sec,
            "events": self.events,
            "p50_us": us(h.value_at_quantile(0.5)),
            "p99_us": us(h.value_at_quantile(0.99)),
            "p999_us": us(h.value_at_quantile(0.999)),
            "max_us": us(h.max()),
            "kept_up": self.kept_up,
        })
    }
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
            let delivered = match &offer {
                Offer::Push(pusher) => pusher.send(stamp).await.is_ok(),
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
        let start = Instant::now();
        let lag = pace(rate, duration, Offer::Push(pusher)).await;
        for sink in &sinks {
            assert_eq!(
                sink.wait().await,
                Reason::Normal,
                "a consumer stopped abnormally"
            );
        }
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
        }
    })
}

/// The baseline: the same pacer into a plain tokio unbounded mpsc channel, one
/// task receiving and recording.
pub fn measure_tokio_mpsc(rate: u64, duration: Duration) -> LatencyFigures {
    runtime().block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Stamp>();
        let receiver = tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut count = 0_u64;
            while let Some(stamp) = rx.recv().await {
                record(&mut histogram, stamp.at, Instant::now());
                count += 1;
            }
            (histogram, count, Instant::now())
        });
        let start = Instant::now();
        let lag = pace(rate, duration, Offer::Tokio(tx)).await;
        let (histogram, count, last) = receiver.await.expect("the receiver task");
        let events = (rate as f64 * duration.as_secs_f64()).round() as u64;
        assert_eq!(count, events, "every offered event is received");
        let late = last.saturating_duration_since(start + duration);
        LatencyFigures {
            offered_per_sec: rate,
            events,
            histogram,
            kept_up: lag <= slack(duration) && late <= slack(duration),
        }
    })
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

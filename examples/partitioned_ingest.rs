//! Partitioned ingest: count user events per id on keyed partition workers, and
//! flush the counts every second.
//!
//! What it teaches:
//!
//! - a [`PartitionSupervisor`] of 3 ingestors, keyed by event id, so every
//!   event with the same id is counted by the same worker, with no locks;
//! - calling a partition and awaiting its answer: each generator worker calls
//!   its event's partition, so it knows when the event was counted, and each
//!   flusher calls its partition every second to swap out the counts (`cast`
//!   is the fire-and-forget alternative);
//! - a [`ConsumerSupervisor`] as a load generator with a bound: one worker task
//!   per event, never more than `max_demand` (2,000) in flight, each waiting
//!   until its event has been counted;
//! - checking that nothing was lost: the counts of all flushes add up to the
//!   events sent, and each id shows up in its own partition's flushes only.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example partitioned_ingest
//! # fewer events, faster flushes:
//! cargo run --release --example partitioned_ingest -- --events 20000 --flush-ms 100
//! INGEST_EVENTS=20000 INGEST_FLUSH_MS=100 cargo run --release --example partitioned_ingest
//! ```
//!
//! It logs each non-empty flush, prints the throughput and, as its last line,
//! `RESULT {json}` with the events sent, the events counted over all flushes and
//! the split per partition. It exits with a non-zero status if the check fails.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow::supervisor::{CallError, ConsumerSupervisor, PartitionSupervisor, PartitionWorker};
use demandflow::{Reason, SubscribeOptions, consumer, from_iter, producer};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Ingestor partitions, and flusher tasks (one per partition).
pub(crate) const PARTITIONS: usize = 3;

/// What the example runs, from `--events`, `--flush-ms`, `--max-in-flight` and
/// `--seed` or the `INGEST_*` environment variables of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    /// Events the load generator sends.
    pub(crate) events: u64,
    /// How often each flusher swaps out its partition's counts.
    pub(crate) flush_every: Duration,
    /// Events sent and not yet counted, at most.
    pub(crate) max_in_flight: u64,
    /// Seed of the generator's random picks.
    pub(crate) seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            events: 100_000,
            flush_every: Duration::from_secs(1),
            max_in_flight: 2_000,
            seed: 42,
        }
    }
}

impl Config {
    /// The defaults, overridden by the environment, then by the arguments.
    pub(crate) fn from_env_and_args(
        args: impl IntoIterator<Item = String>,
    ) -> Result<Config, String> {
        let mut config = Config::default();
        let mut set = |name: &str, value: &str| -> Result<(), String> {
            let n: u64 = value
                .parse()
                .map_err(|_| format!("{name}: not a whole number: {value:?}"))?;
            match name {
                "events" => config.events = n,
                "flush-ms" if n > 0 => config.flush_every = Duration::from_millis(n),
                "max-in-flight" if n > 0 => config.max_in_flight = n,
                "seed" => config.seed = n,
                "flush-ms" | "max-in-flight" => return Err(format!("{name} must be at least 1")),
                _ => return Err(format!("unknown option --{name}")),
            }
            Ok(())
        };
        for name in ["events", "flush-ms", "max-in-flight", "seed"] {
            let var = format!("INGEST_{}", name.replace('-', "_").to_uppercase());
            if let Ok(value) = std::env::var(&var) {
                set(name, &value)?;
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            set(name, &value)?;
        }
        Ok(config)
    }
}

/// A user event, as the load generator sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserEvent {
    pub(crate) id: String,
    pub(crate) user_id: u64,
    pub(crate) action_data: String,
}

/// The six events the generator picks from, ids "1" to "6".
pub(crate) fn fixtures() -> Vec<UserEvent> {
    let actions = [
        "login",
        "view",
        "search",
        "add_to_cart",
        "checkout",
        "logout",
    ];
    actions
        .iter()
        .enumerate()
        .map(|(i, action)| UserEvent {
            id: (i + 1).to_string(),
            user_id: 1_000 + i as u64,
            action_data: format!("{{\"action\":\"{action}\"}}"),
        })
        .collect()
}

/// SplitMix64: a small, fast, deterministic generator (no `rand` needed).
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, uniform up to a bias of n / 2^64.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // The high half of a 128-bit product: no modulo bias worth the name.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// `events` events picked uniformly from the fixtures, deterministically from `seed`.
pub(crate) fn generate(events: u64, seed: u64) -> impl Iterator<Item = UserEvent> + Send {
    let fixtures = fixtures();
    let mut rng = SplitMix64::new(seed);
    (0..events).map(move |_| fixtures[rng.below(fixtures.len() as u64) as usize].clone())
}

/// Counts per event id.
pub(crate) type Counts = BTreeMap<String, u64>;

/// What an ingestor partition receives.
#[derive(Debug)]
pub(crate) enum IngestMsg {
    /// Count one event.
    Count(UserEvent),
    /// Hand over the counts and start again from zero.
    Swap,
}

/// One partition's worker: counts the events of the ids that route to it.
pub(crate) struct Ingestor {
    counts: Counts,
}

impl PartitionWorker for Ingestor {
    type Message = IngestMsg;
    type Reply = Option<Counts>;

    async fn handle(&mut self, message: IngestMsg) -> Option<Counts> {
        match message {
            IngestMsg::Count(event) => {
                *self.counts.entry(event.id).or_insert(0) += 1;
                None
            }
            IngestMsg::Swap => Some(std::mem::take(&mut self.counts)),
        }
    }
}

/// One non-empty flush of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flush {
    pub(crate) partition: usize,
    /// Time since the flushers started, on tokio's clock.
    pub(crate) at: Duration,
    pub(crate) counts: Counts,
}

/// The ingestors and their flushers.
pub(crate) struct Ingest {
    pub(crate) partitions: PartitionSupervisor<IngestMsg, Option<Counts>>,
    flushes: Arc<Mutex<Vec<Flush>>>,
    stop: watch::Sender<bool>,
    flushers: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Starts the ingestors and one flusher per partition, flushing every `flush_every`.
    pub(crate) fn start(flush_every: Duration) -> Ingest {
        let partitions = PartitionSupervisor::start(PARTITIONS, |_partition| Ingestor {
            counts: Counts::new(),
        })
        .expect("3 partitions on the current runtime");
        let flushes = Arc::new(Mutex::new(Vec::new()));
        let (stop, _) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let flushers = (0..PARTITIONS)
            .map(|partition| {
                let (partitions, flushes) = (partitions.clone(), flushes.clone());
                let mut stopping = stop.subscribe();
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(flush_every);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticks.tick().await; // the first tick is immediate
                    loop {
                        let last = tokio::select! {
                            _ = ticks.tick() => false,
                            _ = stopping.wait_for(|stop| *stop) => true,
                        };
                        flush(&partitions, partition, started.elapsed(), &flushes).await;
                        if last {
                            break;
                        }
                    }
                })
            })
            .collect();
        Ingest {
            partitions,
            flushes,
            stop,
            flushers,
        }
    }

    /// The flushes so far.
    pub(crate) fn flushes(&self) -> Vec<Flush> {
        self.flushes.lock().clone()
    }

    /// Flushes every partition one last time, stops, and returns all flushes.
    pub(crate) async fn finish(mut self) -> Vec<Flush> {
        self.stop.send_replace(true);
        for flusher in std::mem::take(&mut self.flushers) {
            flusher.await.expect("a flusher panicked");
        }
        self.partitions.stop().await;
        self.flushes()
    }
}

/// Swaps out `partition`'s counts and logs them, unless there are none.
async fn flush(
    partitions: &PartitionSupervisor<IngestMsg, Option<Counts>>,
    partition: usize,
    at: Duration,
    flushes: &Mutex<Vec<Flush>>,
) {
    // The key `partition` (an integer below 3) routes to partition `partition`.
    let Ok(Some(counts)) = partitions.call(partition, IngestMsg::Swap).await else {
        return;
    };
    if counts.is_empty() {
        return;
    }
    let total: u64 = counts.values().sum();
    println!(
        "flush partition {partition} at {:>7.3}s: {total:>6} events {counts:?}",
        at.as_secs_f64()
    );
    flushes.lock().push(Flush {
        partition,
        at,
        counts,
    });
}

/// What a run did, and the check of it.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    pub(crate) config: Config,
    /// Events the generator sent and saw counted.
    pub(crate) sent: u64,
    /// The most events in flight at once.
    pub(crate) max_in_flight: u64,
    pub(crate) flushes: Vec<Flush>,
    /// Wall-clock time from the first event to the last count.
    pub(crate) elapsed: std::time::Duration,
}

impl Report {
    /// Events counted over all flushes.
    pub(crate) fn counted(&self) -> u64 {
        self.flushes.iter().flat_map(|f| f.counts.values()).sum()
    }

    /// Events counted per partition.
    pub(crate) fn per_partition(&self) -> [u64; PARTITIONS] {
        let mut split = [0; PARTITIONS];
        for flush in &self.flushes {
            split[flush.partition] += flush.counts.values().sum::<u64>();
        }
        split
    }

    /// The ids each partition flushed.
    pub(crate) fn ids_per_partition(&self) -> [Vec<String>; PARTITIONS] {
        let mut ids: [Vec<String>; PARTITIONS] = Default::default();
        for flush in &self.flushes {
            for id in flush.counts.keys() {
                if !ids[flush.partition].contains(id) {
                    ids[flush.partition].push(id.clone());
                }
            }
        }
        for list in &mut ids {
            list.sort();
        }
        ids
    }

    /// Everything the run must satisfy, or what it did not.
    pub(crate) fn check(&self) -> Result<(), String> {
        let expected = self.config.events;
        if self.sent != expected {
            return Err(format!("sent {} events, not {expected}", self.sent));
        }
        if self.counted() != expected {
            return Err(format!("counted {} events, not {expected}", self.counted()));
        }
        if self.max_in_flight > self.config.max_in_flight {
            return Err(format!(
                "{} events in flight, more than {}",
                self.max_in_flight, self.config.max_in_flight
            ));
        }
        if let Some(empty) = self.flushes.iter().find(|f| f.counts.is_empty()) {
            return Err(format!(
                "partition {} logged an empty flush",
                empty.partition
            ));
        }
        let owners = self.ids_per_partition();
        for (partition, ids) in owners.iter().enumerate() {
            for id in ids {
                if let Some(other) =
                    (0..PARTITIONS).find(|&p| p != partition && owners[p].contains(id))
                {
                    return Err(format!(
                        "id {id} counted by partitions {partition} and {other}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `RESULT` line's JSON object.
    pub(crate) fn result_json(&self) -> String {
        let split = self.per_partition();
        let owners = self.ids_per_partition();
        let partitions: Vec<String> = (0..PARTITIONS)
            .map(|p| {
                let ids: Vec<String> = owners[p].iter().map(|id| format!("\"{id}\"")).collect();
                format!(
                    "{{\"partition\":{p},\"events\":{},\"ids\":[{}]}}",
                    split[p],
                    ids.join(",")
                )
            })
            .collect();
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            format!("{:.1}", self.sent as f64 / secs)
        } else {
            "null".to_owned()
        };
        format!(
            "{{\"example\":\"partitioned_ingest\",\"ok\":{},\"events_sent\":{},\"events_counted\":{},\"max_in_flight\":{},\"flushes\":{},\"partitions\":[{}],\"events_per_sec\":{rate}}}",
            self.check().is_ok(),
            self.sent,
            self.counted(),
            self.max_in_flight,
            self.flushes.len(),
            partitions.join(",")
        )
    }
}

/// Runs the example: starts the ingestors and flushers, sends `config.events`
/// events through a consumer supervisor with at most `config.max_in_flight` in
/// flight, flushes one last time and reports.
pub(crate) async fn run(config: Config) -> Report {
    let ingest = Ingest::start(config.flush_every);
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));

    // The load generator: a worker task per event, at most max_demand at once,
    // each waiting until its event has been counted.
    let (partitions, now, max) = (
        ingest.partitions.clone(),
        in_flight.clone(),
        max_in_flight.clone(),
    );
    let sender = ConsumerSupervisor::builder(move |event: UserEvent| {
        let (partitions, now, max) = (partitions.clone(), now.clone(), max.clone());
        async move {
            max.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let partition = partitions.partition_of(event.id.as_str());
            let counted = partitions.call(partition, IngestMsg::Count(event)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            counted
                .map(|_| ())
                .map_err(|e: CallError<IngestMsg>| e.to_string())
        }
    })
    .shutdown(Duration::from_secs(3_600))
    .build()
    .expect("valid consumer supervisor options");
    let workers = sender.monitor();

    let started = std::time::Instant::now();
    let source = producer(from_iter(generate(config.events, config.seed)))
        .start()
        .expect("inside a tokio runtime");
    let generator = consumer(sender).start().expect("inside a tokio runtime");
    generator
        .subscribe_to(
            &source,
            SubscribeOptions::new().max_demand(config.max_in_flight),
        )
        .await
        .expect("subscribing the load generator");
    let reason = generator.wait().await;
    let elapsed = started.elapsed();
    assert_eq!(
        reason,
        Reason::Normal,
        "the load generator stopped abnormally"
    );

    let flushes = ingest.finish().await;
    let stats = workers.stats();
    Report {
        sent: stats.succeeded,
        max_in_flight: max_in_flight.load(Ordering::SeqCst),
        flushes,
        elapsed,
        config,
    }
}

#[cfg_attr(
    test,
    expect(
        dead_code,
        reason = "the tests include this file and call `run`, not `main`"
    )
)]
#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env_and_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("partitioned_ingest: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "sending {} events, at most {} in flight, to {PARTITIONS} partitions flushed every {:?}, picked from:",
        config.events, config.max_in_flight, config.flush_every
    );
    for event in fixtures() {
        println!(
            "  id {} (user {}): {}",
            event.id, event.user_id, event.action_data
        );
    }
    let report = run(config).await;
    let split = report.per_partition();
    println!(
        "sent {} events in {:.3} s: {:.0} events/s; counted {} over {} flushes, per partition {split:?}",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.sent as f64 / report.elapsed.as_secs_f64(),
        report.counted(),
        report.flushes.len(),
    );
    let ok = match report.check() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("partitioned_ingest: check failed: {e}");
            false
        }
    };
    println!("RESULT {}", report.result_json());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

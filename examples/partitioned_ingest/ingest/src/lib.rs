//! The pipeline of the `partitioned_ingest` example: user events counted per id
//! on partition workers, flushed on a timer, and the report that checks nothing
//! was lost.
//!
//! The example (`examples/partitioned_ingest/main.rs`) runs it and prints the
//! report; `tests/example_partitioned_ingest.rs` runs it on the paused clock.
//! It is a package of its own so both can use it without including the
//! example's source file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow::supervisor::{CallError, ConsumerSupervisor, PartitionSupervisor, PartitionWorker};
use demandflow::{Reason, SubscribeOptions, consumer, from_iter, producer};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Ingestor partitions, and flusher tasks (one per partition).
pub const PARTITIONS: usize = 3;

/// What the example runs, from `--events`, `--flush-ms`, `--max-in-flight` and
/// `--seed` or the `INGEST_*` environment variables of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Events the load generator sends.
    pub events: u64,
    /// How often each flusher swaps out its partition's counts.
    pub flush_every: Duration,
    /// Events sent and not yet counted, at most.
    pub max_in_flight: u64,
    /// Seed of the generator's random picks.
    pub seed: u64,
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
    pub fn from_env_and_args(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
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
pub struct UserEvent {
    /// The id events are counted and partitioned by.
    pub id: String,
    /// The user the event is about.
    pub user_id: u64,
    /// What the user did.
    pub action_data: String,
}

/// The six events the generator picks from, ids "1" to "6".
pub fn fixtures() -> Vec<UserEvent> {
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
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, uniform up to a bias of n / 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        // The high half of a 128-bit product: no modulo bias worth the name.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// `events` events picked uniformly from the fixtures, deterministically from `seed`.
pub fn generate(events: u64, seed: u64) -> impl Iterator<Item = UserEvent> + Send {
    let fixtures = fixtures();
    let mut rng = SplitMix64::new(seed);
    (0..events).map(move |_| fixtures[rng.below(fixtures.len() as u64) as usize].clone())
}

/// Counts per event id.
pub type Counts = BTreeMap<String, u64>;

/// What an ingestor partition receives.
#[derive(Debug)]
pub enum IngestMsg {
    /// Count one event.
    Count(UserEvent),
    /// Hand over the counts and start again from zero.
    Swap,
}

/// One partition's worker: counts the events of the ids that route to it.
pub struct Ingestor {
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
pub struct Flush {
    /// The partition flushed.
    pub partition: usize,
    /// Time since the flushers started, on tokio's clock.
    pub at: Duration,
    /// The counts it swapped out, per id.
    pub counts: Counts,
}

/// The ingestors and their flushers.
pub struct Ingest {
    /// The ingestors, one per partition.
    pub partitions: PartitionSupervisor<IngestMsg, Option<Counts>>,
    flushes: Arc<Mutex<Vec<Flush>>>,
    stop: watch::Sender<bool>,
    flushers: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Starts the ingestors and one flusher per partition, flushing every `flush_every`.
    pub fn start(flush_every: Duration) -> Ingest {
        let count = std::num::NonZeroUsize::new(PARTITIONS).expect("PARTITIONS > 0");
        let partitions = PartitionSupervisor::builder(count, |_partition| Ingestor {
            counts: Counts::new(),
        })
        .name("ingestors")
        .start()
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
    pub fn flushes(&self) -> Vec<Flush> {
        self.flushes.lock().clone()
    }

    /// Flushes every partition one last time, stops, and returns all flushes.
    pub async fn finish(mut self) -> Vec<Flush> {
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
pub struct Report {
    /// What was run.
    pub config: Config,
    /// Events the generator sent and saw counted.
    pub sent: u64,
    /// The most events in flight at once.
    pub max_in_flight: u64,
    /// Every non-empty flush, in the order they happened.
    pub flushes: Vec<Flush>,
    /// Wall-clock time from the first event to the last count.
    pub elapsed: std::time::Duration,
}

impl Report {
    /// Events counted over all flushes.
    pub fn counted(&self) -> u64 {
        self.flushes.iter().flat_map(|f| f.counts.values()).sum()
    }

    /// Events counted per partition.
    pub fn per_partition(&self) -> [u64; PARTITIONS] {
        let mut split = [0; PARTITIONS];
        for flush in &self.flushes {
            split[flush.partition] += flush.counts.values().sum::<u64>();
        }
        split
    }

    /// The ids each partition flushed.
    pub fn ids_per_partition(&self) -> [Vec<String>; PARTITIONS] {
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
    pub fn check(&self) -> Result<(), String> {
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
    pub fn result_json(&self) -> String {
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
pub async fn run(config: Config) -> Report {
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
    // Named, as the ingestors are, so a dashboard shows which is which.
    let source = producer(from_iter(generate(config.events, config.seed)))
        .name("events")
        .start()
        .expect("inside a tokio runtime");
    let generator = consumer(sender)
        .name("generator")
        .start()
        .expect("inside a tokio runtime");
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

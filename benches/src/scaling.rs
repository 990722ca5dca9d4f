//! The scenarios of the `scaling` bench: how the cost of moving events grows with the size of
//! the topology (chain length, consumers, partitions, keys), and what an idle stage weighs.
//!
//! Every throughput scenario is measured like the `throughput` rows (see `topologies.rs`): the
//! stages are built before the clock starts, the source accumulates demand until every
//! consumer is subscribed, the clock stops when every consumer has stopped, and the count and
//! sum of what arrived are checked afterwards.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use demandflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, PartitionDispatcher};
use demandflow::keyed::{KeyedBatch, KeyedBuilder, KeyedHandler};
use demandflow::{Consumer, ConsumerContext, SubscriptionId, consumer, producer_consumer};

use crate::Sample;
use crate::topologies::{Pass, Scenario, at, fan_out, nz, scenario, source, sum_below};

/// Events and batches the consumers of a scenario received, over all its runs: how full the
/// batches a dispatcher delivers are.
#[derive(Debug, Default)]
pub struct BatchSizes {
    events: AtomicU64,
    batches: AtomicU64,
}

impl BatchSizes {
    /// Events per batch received so far; NaN before any.
    pub fn average(&self) -> f64 {
        self.events.load(Ordering::Relaxed) as f64 / self.batches.load(Ordering::Relaxed) as f64
    }

    fn add(&self, events: u64, batches: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.batches.fetch_add(batches, Ordering::Relaxed);
    }
}

/// A chain: a source, `stages` pass-through producer-consumers in a row, and a consumer, every
/// subscription at `max_demand`. The figure is events/s out of the end of the chain.
///
/// # Panics
///
/// When run, if events are lost, duplicated or changed on the way.
pub fn chain(stages: usize, max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = source(events, DemandDispatcher::new());
        let mut last = producer_consumer(Pass).start().expect("starting a stage");
        last.subscribe_to(&source, at(max_demand))
            .await
            .expect("subscribing");
        for _ in 1..stages {
            let next = producer_consumer(Pass).start().expect("starting a stage");
            next.subscribe_to(&last, at(max_demand))
                .await
                .expect("subscribing");
            last = next;
        }
        fan_out(events, &source, &last, 1, 1, |_| at(max_demand))
            .await
            .0
    })
}

/// A source with the demand dispatcher and `consumers` consumers, each event going to one of
/// them. The figure is events/s out of the source (the total over the consumers); `sizes`
/// counts the batches they receive.
pub fn fan_out_demand(consumers: usize, max_demand: u64, sizes: Arc<BatchSizes>) -> Scenario {
    scenario(move |events| {
        let sizes = sizes.clone();
        async move {
            let source = source(events, DemandDispatcher::new());
            let (sample, batches) =
                fan_out(events, &source, &source, consumers, 1, |_| at(max_demand)).await;
            sizes.add(events, batches);
            sample
        }
    })
}

/// A source with the broadcast dispatcher and `consumers` consumers, each event going to every
/// one of them. The figure is events/s out of the source (each delivered `consumers` times).
pub fn fan_out_broadcast(consumers: usize, max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = source(events, BroadcastDispatcher::new());
        let copies = consumers as u64;
        fan_out(events, &source, &source, consumers, copies, |_| {
            at(max_demand)
        })
        .await
        .0
    })
}

/// A source with the partition dispatcher (`event mod partitions`) and one consumer per
/// partition. The figure is events/s out of the source; `sizes` counts the batches the
/// consumers receive.
pub fn partitions(partitions: usize, max_demand: u64, sizes: Arc<BatchSizes>) -> Scenario {
    partitioned(partitions, max_demand, false, sizes)
}

/// [`partitions`] with the dispatcher filling its queues ahead of demand
/// (`PartitionDispatcherBuilder::fill_ahead`): each ask is forwarded times the partitions, so
/// the other partitions' asks are served from their queues in whole batches.
pub fn partitions_fill_ahead(
    partitions: usize,
    max_demand: u64,
    sizes: Arc<BatchSizes>,
) -> Scenario {
    partitioned(partitions, max_demand, true, sizes)
}

fn partitioned(
    partitions: usize,
    max_demand: u64,
    fill_ahead: bool,
    sizes: Arc<BatchSizes>,
) -> Scenario {
    scenario(move |events| {
        let sizes = sizes.clone();
        async move {
            let n = partitions as u64;
            let dispatcher = PartitionDispatcher::numbered(nz(partitions), move |e: u64| {
                Some(((e % n) as usize, e))
            })
            .fill_ahead(fill_ahead)
            .build()
            .expect("building the partition dispatcher");
            let source = source(events, dispatcher);
            let (sample, batches) = fan_out(events, &source, &source, partitions, 1, |i| {
                at(max_demand).partition(i)
            })
            .await;
            sizes.add(events, batches);
            sample
        }
    })
}

/// Counts and sums the events of every batch.
#[derive(Default)]
struct Count {
    handled: AtomicU64,
    sum: AtomicU64,
}

impl KeyedHandler for Count {
    type Key = u64;
    type Event = u64;

    async fn handle(&self, batch: &mut KeyedBatch<u64, u64>) {
        let (mut handled, mut sum) = (0_u64, 0_u64);
        for (_, events) in batch.iter() {
            handled += events.len() as u64;
            sum = sum.wrapping_add(events.iter().fold(0_u64, |a, e| a.wrapping_add(*e)));
        }
        self.handled.fetch_add(handled, Ordering::Relaxed);
        self.sum.fetch_add(sum, Ordering::Relaxed);
    }
}

/// A keyed scheduler (hashed keys, the general path, default partitions and workers) sent
/// events `0..n` for keys `event mod keys` with `send_all`; the clock stops when every event
/// has been handled. The figure is events/s handled. A run should be asked for at least `keys`
/// events, so that every key is used.
pub fn keyed(keys: u64) -> Scenario {
    scenario(move |events| async move {
        let scheduler = KeyedBuilder::hashed(Count::default())
            .start()
            .expect("starting the keyed scheduler");
        let start = Instant::now();
        let sent = scheduler
            .send_all((0..events).map(|e| (e % keys, e)))
            .await
            .expect("the scheduler is open");
        scheduler.shutdown().await;
        let elapsed = start.elapsed();
        assert_eq!(sent as u64, events, "every event is sent");
        let handler = scheduler.handler();
        assert_eq!(
            handler.handled.load(Ordering::Relaxed),
            events,
            "events lost or duplicated"
        );
        assert_eq!(
            handler.sum.load(Ordering::Relaxed),
            sum_below(events),
            "wrong events handled"
        );
        Sample::new(events, elapsed)
    })
}

/// A consumer with nothing to consume: an idle stage.
struct Idle;

impl Consumer for Idle {
    type Event = u64;

    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut ConsumerContext) {}
}

/// Resident memory of this process, bytes (`/proc/self/statm`, Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The page size of every Linux target this bench runs on; statm counts in pages.
    Some(pages * 4096)
}

/// What `count` idle stages weigh: starts that many consumers with no subscription on a fresh
/// 2-worker runtime, lets every one of them run to its first wait, and returns the growth of the
/// process's resident memory divided by `count` (the handles, which a user keeps, included).
/// `None` where resident memory cannot be read.
pub fn idle_stage_bytes(count: usize) -> Option<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    runtime.block_on(async {
        // One stage first, so that what every stage shares (the registry, the runtime's
        // first allocations) is not counted.
        let first = consumer(Idle).start().expect("starting a stage");
        let mut handles = Vec::with_capacity(count);
        tokio::task::yield_now().await;
        let before = resident_bytes()?;
        for _ in 0..count {
            handles.push(consumer(Idle).start().expect("starting a stage"));
        }
        // Every stage's task has run to its first wait once its stats can be answered.
        for handle in handles.iter().step_by((count / 16).max(1)) {
            handle.stats().await.expect("an idle stage answers");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let after = resident_bytes()?;
        drop(first);
        drop(handles);
        Some(after.saturating_sub(before) as f64 / count as f64)
    })
}

//! The demandflow rows of the throughput bench: one scenario per topology.
//!
//! Every scenario moves `0..events` (u64) from a finite source to its consumers,
//! which count and sum what they receive. Stages are built before the clock
//! starts, with the source accumulating demand; the clock starts when the
//! source switches to forward (so every consumer starts at once) and stops when
//! every consumer has stopped, which happens after the source ran dry and its
//! end flowed down the pipeline. The sums are checked after the clock stops.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use demandflow::{
    BroadcastDispatcher, Consumer, ConsumerContext, ConsumerRef, Context, DemandFlow,
    PartitionDispatcher, ProducerConsumer, Reason, SubscribeOptions, SubscriptionId, consumer,
    from_iter, producer, producer_consumer,
};

use crate::Sample;

/// A scenario: moves the events it is asked for, returns what it moved in how long.
pub type Scenario = Box<dyn FnMut(u64) -> Sample>;

/// Counts and sums what it receives, into shared totals when it stops.
struct Tally {
    count: u64,
    sum: u64,
    totals: Arc<(AtomicU64, AtomicU64)>,
}

impl Consumer for Tally {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        self.count += events.len() as u64;
        self.sum = self
            .sum
            .wrapping_add(black_box(&events).iter().sum::<u64>());
    }

    async fn terminate(&mut self, _: &Reason) {
        self.totals.0.fetch_add(self.count, Ordering::Relaxed);
        self.totals.1.fetch_add(self.sum, Ordering::Relaxed);
    }
}

/// Passes events through unchanged (the producer-consumer of `P->PC->C`).
struct Pass;

impl ProducerConsumer for Pass {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        ctx.emit_vec(events);
    }
}

/// Wraps a per-run async body in a scenario that owns a 2-worker runtime.
fn scenario<F, Fut>(mut run: F) -> Scenario
where
    F: FnMut(u64) -> Fut + 'static,
    Fut: Future<Output = Sample>,
{
    let mut runtime = None;
    Box::new(move |events| {
        runtime
            .get_or_insert_with(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("building the tokio runtime")
            })
            .block_on(run(events))
    })
}

fn tally() -> (Tally, Arc<(AtomicU64, AtomicU64)>) {
    let totals = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    (
        Tally {
            count: 0,
            sum: 0,
            totals: totals.clone(),
        },
        totals,
    )
}

fn sum_below(events: u64) -> u64 {
    (0..events).fold(0_u64, |acc, e| acc.wrapping_add(e))
}

async fn wait_all(consumers: &[ConsumerRef<u64>]) {
    for c in consumers {
        let reason = c.wait().await;
        assert_eq!(reason, Reason::Normal, "a consumer stopped abnormally");
    }
}

fn check(totals: &(AtomicU64, AtomicU64), count: u64, sum: u64) {
    assert_eq!(
        totals.0.load(Ordering::Relaxed),
        count,
        "events lost or duplicated"
    );
    assert_eq!(
        totals.1.load(Ordering::Relaxed),
        sum,
        "wrong events delivered"
    );
}

/// `P->C`: a producer and one consumer.
pub fn p_to_c(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = producer(from_iter(0..events))
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .expect("starting the producer");
        let (sink, totals) = tally();
        let sink = consumer(sink).start().expect("starting the consumer");
        sink.subscribe_to(&source, SubscribeOptions::new().max_demand(max_demand))
            .await
            .expect("subscribing");
        let start = Instant::now();
        source
            .set_demand_flow(DemandFlow::Forward)
            .expect("forward");
        wait_all(std::slice::from_ref(&sink)).await;
        let elapsed = start.elapsed();
        check(&totals, events, sum_below(events));
        Sample::new(events, elapsed)
    })
}

/// `P->PC->C`: a producer, a pass-through producer-consumer and a consumer.
pub fn p_pc_c(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = producer(from_iter(0..events))
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .expect("starting the producer");
        let middle = producer_consumer(Pass).start().expect("starting the stage");
        let (sink, totals) = tally();
        let sink = consumer(sink).start().expect("starting the consumer");
        let options = || SubscribeOptions::new().max_demand(max_demand);
        middle
            .subscribe_to(&source, options())
            .await
            .expect("subscribing");
        sink.subscribe_to(&middle, options())
            .await
            .expect("subscribing");
        let start = Instant::now();
        source
            .set_demand_flow(DemandFlow::Forward)
            .expect("forward");
        wait_all(std::slice::from_ref(&sink)).await;
        let elapsed = start.elapsed();
        check(&totals, events, sum_below(events));
        Sample::new(events, elapsed)
    })
}

/// `P->4C demand`: a producer with the demand dispatcher and 4 consumers; the
/// figure is the total over the consumers.
pub fn p_4c_demand(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = producer(from_iter(0..events))
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .expect("starting the producer");
        let (_, totals) = tally();
        let mut sinks = Vec::new();
        for _ in 0..4 {
            let sink = Tally {
                count: 0,
                sum: 0,
                totals: totals.clone(),
            };
            let sink = consumer(sink).start().expect("starting a consumer");
            sink.subscribe_to(&source, SubscribeOptions::new().max_demand(max_demand))
                .await
                .expect("subscribing");
            sinks.push(sink);
        }
        let start = Instant::now();
        source
            .set_demand_flow(DemandFlow::Forward)
            .expect("forward");
        wait_all(&sinks).await;
        let elapsed = start.elapsed();
        check(&totals, events, sum_below(events));
        Sample::new(events, elapsed)
    })
}

/// `P->2C broadcast`: a producer with the broadcast dispatcher and 2 consumers,
/// each receiving every event; the figure is events per second per consumer.
pub fn p_2c_broadcast(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = producer(from_iter(0..events))
            .dispatcher(BroadcastDispatcher::new())
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .expect("starting the producer");
        let (_, totals) = tally();
        let mut sinks = Vec::new();
        for _ in 0..2 {
            let sink = Tally {
                count: 0,
                sum: 0,
                totals: totals.clone(),
            };
            let sink = consumer(sink).start().expect("starting a consumer");
            sink.subscribe_to(&source, SubscribeOptions::new().max_demand(max_demand))
                .await
                .expect("subscribing");
            sinks.push(sink);
        }
        let start = Instant::now();
        source
            .set_demand_flow(DemandFlow::Forward)
            .expect("forward");
        wait_all(&sinks).await;
        let elapsed = start.elapsed();
        check(&totals, 2 * events, sum_below(events).wrapping_mul(2));
        Sample::new(events, elapsed)
    })
}

/// `P->partition->C`: a producer with the partition dispatcher (`event mod n`),
/// one partition and one consumer per core; the figure is the total.
pub fn p_partition_c(max_demand: u64) -> Scenario {
    let partitions = num_cpus::get().max(1);
    scenario(move |events| async move {
        let n = partitions as u64;
        let dispatcher =
            PartitionDispatcher::numbered(partitions, move |e: u64| Some(((e % n) as usize, e)))
                .build()
                .expect("building the partition dispatcher");
        let source = producer(from_iter(0..events))
            .dispatcher(dispatcher)
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .expect("starting the producer");
        let (_, totals) = tally();
        let mut sinks = Vec::new();
        for partition in 0..partitions {
            let sink = Tally {
                count: 0,
                sum: 0,
                totals: totals.clone(),
            };
            let sink = consumer(sink).start().expect("starting a consumer");
            sink.subscribe_to(
                &source,
                SubscribeOptions::new()
                    .max_demand(max_demand)
                    .partition(partition),
            )
            .await
            .expect("subscribing");
            sinks.push(sink);
        }
        let start = Instant::now();
        source
            .set_demand_flow(DemandFlow::Forward)
            .expect("forward");
        wait_all(&sinks).await;
        let elapsed = start.elapsed();
        check(&totals, events, sum_below(events));
        Sample::new(events, elapsed)
    })
}

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

use demandflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, Dispatcher};
use demandflow::{
    AsProducer, Consumer, ConsumerContext, Context, DemandFlow, Peer, ProducerConsumer,
    ProducerRef, Reason, SubscribeOptions, SubscriptionId, consumer, from_iter, fuse, producer,
    producer_consumer,
};

use crate::Sample;

/// A scenario: moves the events it is asked for, returns what it moved in how long.
pub type Scenario = Box<dyn FnMut(u64) -> Sample>;

/// Counts and sums what it receives, and counts the batches, into shared totals when it stops.
struct Tally {
    count: u64,
    sum: u64,
    batches: u64,
    totals: Arc<[AtomicU64; 3]>,
}

impl Tally {
    fn new(totals: &Arc<[AtomicU64; 3]>) -> Tally {
        Tally {
            count: 0,
            sum: 0,
            batches: 0,
            totals: totals.clone(),
        }
    }
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
        self.batches += 1;
        self.sum = self
            .sum
            .wrapping_add(black_box(&events).iter().sum::<u64>());
    }

    async fn terminate(&mut self, _: &Reason) {
        self.totals[0].fetch_add(self.count, Ordering::Relaxed);
        self.totals[1].fetch_add(self.sum, Ordering::Relaxed);
        self.totals[2].fetch_add(self.batches, Ordering::Relaxed);
    }
}

/// Passes events through unchanged (the producer-consumer of `P->PC->C`).
pub(crate) struct Pass;

impl ProducerConsumer for Pass {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        ctx.emit_vec(events);
    }
}

/// Wraps a per-run async body in a scenario that owns a 2-worker runtime.
pub(crate) fn scenario<F, Fut>(mut run: F) -> Scenario
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

pub(crate) fn sum_below(events: u64) -> u64 {
    (0..events).fold(0_u64, |acc, e| acc.wrapping_add(e))
}

/// Subscribes `consumers` tallies to `upstream` with `options(i)`, starts the
/// clock, switches `source` (accumulating until now) to forward, and stops the
/// clock when every consumer has stopped; then checks the count and the sum
/// over all consumers against `copies` copies of `0..events`. Returns the
/// sample and how many batches the consumers received together.
pub(crate) async fn fan_out(
    events: u64,
    source: &ProducerRef<u64>,
    upstream: &impl AsProducer<u64>,
    consumers: usize,
    copies: u64,
    options: impl Fn(usize) -> SubscribeOptions<u64>,
) -> (Sample, u64) {
    let totals: Arc<[AtomicU64; 3]> = Arc::default();
    let mut sinks = Vec::with_capacity(consumers);
    for i in 0..consumers {
        let sink = consumer(Tally::new(&totals))
            .start()
            .expect("starting a consumer");
        sink.subscribe_to(upstream, options(i))
            .await
            .expect("subscribing");
        sinks.push(sink);
    }
    let start = Instant::now();
    source
        .set_demand_flow(DemandFlow::Forward)
        .expect("forward");
    for sink in &sinks {
        assert_eq!(
            sink.wait().await,
            Reason::Normal,
            "a consumer stopped abnormally"
        );
    }
    let elapsed = start.elapsed();
    let batches = check_totals(&totals, events, copies);
    (Sample::new(events, elapsed), batches)
}

/// Checks the consumers' count and sum against `copies` copies of `0..events`;
/// returns how many batches they received together.
fn check_totals(totals: &[AtomicU64; 3], events: u64, copies: u64) -> u64 {
    assert_eq!(
        totals[0].load(Ordering::Relaxed),
        copies * events,
        "events lost or duplicated"
    );
    assert_eq!(
        totals[1].load(Ordering::Relaxed),
        sum_below(events).wrapping_mul(copies),
        "wrong events delivered"
    );
    totals[2].load(Ordering::Relaxed)
}

/// A finite source of `0..events`, accumulating demand until the clock starts.
pub(crate) fn source<D: Dispatcher<u64>>(events: u64, dispatcher: D) -> ProducerRef<u64> {
    producer(from_iter(0..events))
        .dispatcher(dispatcher)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .expect("starting the producer")
}

pub(crate) fn at(max_demand: u64) -> SubscribeOptions<u64> {
    SubscribeOptions::new().max_demand(max_demand)
}

/// `P->C`: a producer and one consumer.
pub fn p_to_c(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = source(events, DemandDispatcher::new());
        fan_out(events, &source, &source, 1, 1, |_| at(max_demand))
            .await
            .0
    })
}

/// `P->PC->C`: a producer, a pass-through producer-consumer and a consumer.
pub fn p_pc_c(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = source(events, DemandDispatcher::new());
        let middle = producer_consumer(Pass).start().expect("starting the stage");
        middle
            .subscribe_to(&source, at(max_demand))
            .await
            .expect("subscribing");
        fan_out(events, &source, &middle, 1, 1, |_| at(max_demand))
            .await
            .0
    })
}

/// `P->PC->C`, with a task reading the whole registry (`refresh`, then
/// `snapshot`) every 10 ms while the events flow: a hundred times the rate of
/// a dashboard, to show what being observed costs the stages.
pub fn p_pc_c_observed(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let watcher = tokio::spawn({
            let (stop, reads) = (stop.clone(), reads.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    demandflow::registry::refresh().await;
                    std::hint::black_box(demandflow::registry::snapshot());
                    reads.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        });
        let source = source(events, DemandDispatcher::new());
        let middle = producer_consumer(Pass).start().expect("starting the stage");
        middle
            .subscribe_to(&source, at(max_demand))
            .await
            .expect("subscribing");
        let sample = fan_out(events, &source, &middle, 1, 1, |_| at(max_demand))
            .await
            .0;
        stop.store(true, Ordering::Relaxed);
        watcher.await.expect("the registry reader");
        assert!(
            reads.load(Ordering::Relaxed) > 0,
            "the registry was never read"
        );
        sample
    })
}

/// `P->C fused` and `P->PC->C fused` (`through_stage`): the stages of `P->C` and
/// `P->PC->C`, subscribed with the same options, run as one fused chain
/// (`demandflow::fuse`): one task instead of one per stage.
pub fn fused(max_demand: u64, through_stage: bool) -> Scenario {
    scenario(move |events| async move {
        let totals: Arc<[AtomicU64; 3]> = Arc::default();
        let head = fuse(producer(from_iter(0..events)).demand_flow(DemandFlow::Accumulate));
        let chain = if through_stage {
            head.via(producer_consumer(Pass), at(max_demand))
                .to(consumer(Tally::new(&totals)), at(max_demand))
                .start()
        } else {
            head.to(consumer(Tally::new(&totals)), at(max_demand))
                .start()
        }
        .expect("starting the fused chain");
        // Every link is made before the clock starts, as in the unfused rows.
        let producing = &chain.stages()[..chain.stages().len() - 1];
        for stage in producing {
            while !stage
                .stats()
                .await
                .expect("a stage of the chain")
                .subscriptions
                .iter()
                .any(|s| s.peer == Peer::Consumer)
            {
                tokio::task::yield_now().await;
            }
        }
        let start = Instant::now();
        chain
            .head()
            .set_demand_flow(DemandFlow::Forward)
            .expect("forward");
        assert_eq!(
            chain.wait().await,
            Reason::Normal,
            "the chain stopped abnormally"
        );
        let elapsed = start.elapsed();
        check_totals(&totals, events, 1);
        Sample::new(events, elapsed)
    })
}

/// `P->4C demand`: a producer with the demand dispatcher and 4 consumers; the
/// figure is the total over the consumers.
pub fn p_4c_demand(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = source(events, DemandDispatcher::new());
        fan_out(events, &source, &source, 4, 1, |_| at(max_demand))
            .await
            .0
    })
}

/// `P->2C broadcast`: a producer with the broadcast dispatcher and 2 consumers,
/// each receiving every event; the figure is events per second per consumer.
pub fn p_2c_broadcast(max_demand: u64) -> Scenario {
    scenario(move |events| async move {
        let source = source(events, BroadcastDispatcher::new());
        fan_out(events, &source, &source, 2, 2, |_| at(max_demand))
            .await
            .0
    })
}

/// `P->partition->C`: a producer with the partition dispatcher (`event mod n`),
/// one partition and one consumer per core; the figure is the total.
pub fn p_partition_c(max_demand: u64) -> Scenario {
    crate::partitions(num_cpus::get().max(1), max_demand, Arc::default())
}

/// `P->partition->C fill-ahead`: [`p_partition_c`] with the dispatcher filling its queues
/// ahead of demand; `sizes` counts the batches the consumers receive.
pub fn p_partition_c_fill_ahead(max_demand: u64, sizes: Arc<crate::BatchSizes>) -> Scenario {
    crate::partitions_fill_ahead(num_cpus::get().max(1), max_demand, sizes)
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
pub(crate) fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

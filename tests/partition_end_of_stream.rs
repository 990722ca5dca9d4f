//! A finite source behind the partition dispatcher delivers every event it
//! emits, even while a slow partition's queue is full (SEMANTICS.md §4: the
//! dispatcher "never drops an event silently"; §8: produced = delivered +
//! buffered + dropped-and-reported, and a source that emits only what was asked
//! has nothing to drop).
//!
//! Found by the `scaling` bench's `partitions` curve, which lost events now and
//! then at 16 or more partitions: when a lagging consumer's partition queue was
//! full, the events for it went back to the source's buffer, the other
//! partitions' asks kept the source emitting into that buffer behind them, and
//! once past its capacity the buffer dropped events a consumer had asked for.
//! Here one consumer is slow and the queues are small, so a queue fills in every
//! round instead of now and then.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow::dispatcher::PartitionDispatcher;
use demandflow::{
    Consumer, ConsumerContext, DemandFlow, Reason, SubscribeOptions, SubscriptionId, consumer,
    from_iter, producer,
};

/// Counts and sums what it receives into shared totals; the slow one sleeps a
/// little per batch, so its partition's queue fills while the others run.
struct Tally {
    totals: Arc<[AtomicU64; 2]>,
    slow: bool,
}

impl Consumer for Tally {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        if self.slow {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        self.totals[0].fetch_add(events.len() as u64, Ordering::Relaxed);
        self.totals[1].fetch_add(events.iter().sum::<u64>(), Ordering::Relaxed);
    }
}

/// One round: `0..events` from an accumulating `from_iter` source (default
/// buffer of 10 000 events), partitioned by `event mod partitions` with queues
/// of `queue` events, one permanent consumer per partition at max demand 1000
/// (partition 0's is slow), the dispatcher filling ahead or not. Returns how many
/// events arrived, and their sum, once every consumer has stopped.
async fn round(events: u64, partitions: usize, queue: usize, fill_ahead: bool) -> (u64, u64) {
    let n = partitions as u64;
    let dispatcher = PartitionDispatcher::numbered(
        NonZeroUsize::new(partitions).expect("at least one partition"),
        move |e: u64| Some(((e % n) as usize, e)),
    )
    .queue_capacity(NonZeroUsize::new(queue).expect("a queue of at least one event"))
    .fill_ahead(fill_ahead)
    .build()
    .expect("building the partition dispatcher");
    let source = producer(from_iter(0..events))
        .dispatcher(dispatcher)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .expect("starting the source");
    let totals: Arc<[AtomicU64; 2]> = Arc::default();
    let mut sinks = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let sink = consumer(Tally {
            totals: totals.clone(),
            slow: i == 0,
        })
        .start()
        .expect("starting a consumer");
        sink.subscribe_to(
            &source,
            SubscribeOptions::new().max_demand(1000).partition(i),
        )
        .await
        .expect("subscribing");
        sinks.push(sink);
    }
    // Every consumer is subscribed: let the demand flow, all at once.
    source
        .set_demand_flow(DemandFlow::Forward)
        .expect("the source runs");
    for sink in &sinks {
        assert_eq!(sink.wait().await, Reason::Normal, "a consumer failed");
    }
    (
        totals[0].load(Ordering::Relaxed),
        totals[1].load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_partition_queue_loses_no_event_of_a_finite_source() {
    rounds(false).await;
}

/// Filling ahead, the source is asked for more than the consumers lack, and the
/// slow partition's queue is full most of the time: still nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_ahead_a_full_partition_queue_loses_no_event_of_a_finite_source() {
    rounds(true).await;
}

async fn rounds(fill_ahead: bool) {
    let events = 100_000_u64;
    for r in 0..9 {
        let partitions = [16, 32, 64][r % 3];
        // Small queues, and at the default capacity with 64 partitions the
        // demand outstanding (64 000) is above the source's buffer size too.
        let queue = [100, 1000, 10_000][r / 3];
        assert_eq!(
            round(events, partitions, queue, fill_ahead).await,
            (events, (0..events).sum::<u64>()),
            "round {r}: {partitions} partitions, queues of {queue}: events lost or duplicated"
        );
    }
}

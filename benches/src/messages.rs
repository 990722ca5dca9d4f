//! The `messages` row: messages acknowledged per second through a Broadway-style
//! topology (source → 2 processors → batcher of 1,000 / 50 ms → batch handler → acks).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use demandflow::from_iter;
use demandflow::messages::{
    AckRef, Acknowledger, Batcher, Failure, Message, MessageHandler, Processors, Topology,
};

use crate::Sample;
use crate::topologies::{Scenario, scenario};

/// Counts acknowledgements, one pair of atomic adds per group.
#[derive(Default)]
struct Counted {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Acknowledger for Counted {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        self.ok
            .fetch_add(successful.len() as u64, Ordering::Relaxed);
        self.failed
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
    }
}

/// Lets every message through; batches are returned as they came.
struct PassThrough;

impl MessageHandler<u64> for PassThrough {
    async fn handle_message(&self, message: &mut Message<u64>) {
        std::hint::black_box(&message.data);
    }
}

/// The scenario of the `messages` row at `max_demand` (the processors'): a finite source of
/// `0..events` messages, each with an acknowledgement to a counting acknowledger, through 2
/// processors and a batcher of 1,000 / 50 ms with one batch handler. The clock runs from the
/// topology's start (its sources start forwarding at the end of it) until every stage has
/// stopped, after the last acknowledgement.
///
/// # Panics
///
/// If the topology does not start, or a message is not acknowledged exactly once as successful.
pub fn messages(max_demand: u64) -> Scenario {
    scenario(move |events| run(events, max_demand))
}

async fn run(events: u64, max_demand: u64) -> Sample {
    let acks = Arc::new(Counted::default());
    let to = acks.clone();
    let start = Instant::now();
    let topology = Topology::builder("bench", PassThrough)
        .source(1, move |_| {
            let to: Arc<dyn Acknowledger> = to.clone();
            from_iter((0..events).map(move |i| Message::new(i, AckRef::new(to.clone(), i))))
        })
        .processors(Processors::new(2).max_demand(max_demand))
        .batcher(
            Batcher::new("default")
                .batch_size(1_000)
                .batch_timeout(Duration::from_millis(50)),
        )
        .start()
        .await
        .expect("starting the topology");
    topology.wait().await;
    let elapsed = start.elapsed();
    assert_eq!(
        (
            acks.ok.load(Ordering::Relaxed),
            acks.failed.load(Ordering::Relaxed)
        ),
        (events, 0),
        "every message acknowledged once, as successful"
    );
    Sample::new(events, elapsed)
}

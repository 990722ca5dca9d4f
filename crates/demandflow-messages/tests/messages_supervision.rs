//! Supervision: a crashing source is restarted with the stages after it, and
//! every message, before and after the crash, is acknowledged exactly once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use demandflow_messages::{AckRef, Message, Processors, Topology};
use demandflow_runtime::{Context, Producer};
use support::{Recorder, Tally};

const TOTAL: u64 = 200;

/// Emits messages numbered from a shared counter up to `TOTAL`; panics once,
/// in the first `handle_demand` after message 50.
struct Flaky {
    next: Arc<AtomicU64>,
    crashed: Arc<AtomicBool>,
    to: Arc<Tally>,
}

impl Producer for Flaky {
    type Event = Message<u64>;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<Message<u64>>) {
        if self.next.load(Ordering::Relaxed) > 50 && !self.crashed.swap(true, Ordering::Relaxed) {
            panic!("source boom");
        }
        for _ in 0..demand {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= TOTAL {
                ctx.stop_after_buffered(demandflow_runtime::Reason::Normal);
                return;
            }
            ctx.emit(Message::new(n, AckRef::new(self.to.clone(), n)));
        }
    }
}

/// A topology over one [`Flaky`] source, acknowledging to `tally`, which
/// sets `crashed` when it crashes.
async fn start_flaky(tally: &Arc<Tally>, crashed: &Arc<AtomicBool>) -> Topology<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let (to, flag) = (tally.clone(), crashed.clone());
    support::started(
        Topology::builder("flaky", Recorder::default())
            .source(1, move |_| Flaky {
                next: next.clone(),
                crashed: flag.clone(),
                to: to.clone(),
            })
            .processors(Processors::new(2).max_demand(10))
            .batcher(support::batcher(20, Duration::from_millis(100))),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_crashed_source_restarts_with_the_stages_after_it_and_no_message_is_lost_twice() {
    let tally = Arc::new(Tally::default());
    let crashed = Arc::new(AtomicBool::new(false));
    let topology = start_flaky(&tally, &crashed).await;
    topology.wait().await;
    assert!(crashed.load(Ordering::Relaxed));
    assert_eq!(topology.restarts(), 1);
    tally.assert_exactly_once(TOTAL);
    let t = tally.inner.lock();
    // Messages caught inside the stopped stages failed; everything after the
    // restart succeeded.
    assert!(t.ok.len() >= (TOTAL - 60) as usize, "{} ok", t.ok.len());
}

/// The same crash, with real threads: whichever stage's exit the supervisor
/// sees first, it restarts the topology rather than giving up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_source_restarts_whatever_order_the_exits_arrive_in() {
    for _ in 0..10 {
        let tally = Arc::new(Tally::default());
        let crashed = Arc::new(AtomicBool::new(false));
        let topology = start_flaky(&tally, &crashed).await;
        topology.wait().await;
        assert_eq!(topology.restarts(), 1);
        drop(topology);
        // Messages dropped with a stopped stage's mailbox are acknowledged as
        // the mailbox goes, which may be just after the stages stopped.
        tokio::time::timeout(Duration::from_secs(30), async {
            while tally.total() < TOTAL as usize {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("every message is acknowledged");
        tally.assert_exactly_once(TOTAL);
    }
}

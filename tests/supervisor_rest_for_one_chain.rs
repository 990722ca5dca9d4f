//! Rest-for-one over a three-stage chain whose middle stage fails: the stage
//! after it stops too (its subscription is permanent), and the supervisor may
//! hear of that exit before the middle stage's own. Either order must end in
//! one restart of the middle stage and the sink, each subscribing to the fresh
//! instance before it, never in a factory that finds a stopped stage.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use demandflow::supervisor::{Restart, Strategy, Supervisor};
use demandflow::{
    Consumer, ConsumerContext, ConsumerRef, Context, ProducerConsumer, ProducerConsumerRef,
    ProducerRef, Reason, SubscribeOptions, SubscriptionId, consumer, producer, producer_consumer,
};
use support::{Counter, eventually};

/// Squares events; stops itself with an error on a batch when `fail` is set,
/// clearing it (the flag outlives restarts).
struct Square {
    fail: Arc<AtomicBool>,
}

impl ProducerConsumer for Square {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        if self.fail.swap(false, Ordering::SeqCst) {
            ctx.stop(Reason::error("square failed"));
            return;
        }
        ctx.emit_all(events.into_iter().map(|e| e * e));
    }
}

/// Counts the events it handles.
struct Sink(Arc<AtomicU64>);

impl Consumer for Sink {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        self.0.fetch_add(events.len() as u64, Ordering::SeqCst);
    }
}

fn options() -> SubscribeOptions<u64> {
    SubscribeOptions::new().max_demand(10)
}

/// How the chain's stages behave, shared by every instance across restarts.
#[derive(Clone, Default)]
struct Knobs {
    /// Events the sink handled.
    seen: Arc<AtomicU64>,
    /// Set: `square` stops itself with an error on its next batch.
    fail_square: Arc<AtomicBool>,
    /// Set: the next `square` factory stops `numbers` with an error before
    /// subscribing to it.
    kill_numbers_on_start: Arc<AtomicBool>,
}

async fn chain(knobs: Knobs) -> Supervisor {
    let Knobs {
        seen,
        fail_square,
        kill_numbers_on_start,
    } = knobs;
    Supervisor::builder(Strategy::RestForOne)
        .max_restarts(10)
        .child("numbers", Restart::Permanent, |_| async {
            producer(Counter::new().0).start()
        })
        .child("square", Restart::Permanent, move |children| {
            let fail = fail_square.clone();
            let kill_numbers = kill_numbers_on_start.swap(false, Ordering::SeqCst);
            async move {
                let numbers: ProducerRef<u64> = children.get("numbers").ok_or("no numbers")?;
                if kill_numbers {
                    numbers.stop(Reason::error("numbers failed")).await.unwrap();
                }
                let square = producer_consumer(Square { fail })
                    .start()
                    .map_err(|e| e.to_string())?;
                square
                    .subscribe_to(&numbers, options())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(square)
            }
        })
        .child("sink", Restart::Permanent, move |children| {
            let seen = seen.clone();
            async move {
                let square: ProducerConsumerRef<u64, u64> =
                    children.get("square").ok_or("no square")?;
                let sink = consumer(Sink(seen)).start().map_err(|e| e.to_string())?;
                sink.subscribe_to(&square, options())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(sink)
            }
        })
        .start()
        .await
        .unwrap()
}

/// How the middle stage fails.
#[derive(Clone, Copy)]
enum Failure {
    /// Stopped through its handle with an error.
    Stopped,
    /// Stops itself with an error from its callback.
    StopsItself,
    /// Stopped through its handle; its restart finds `numbers` stopped by then.
    ProducerDiesDuringTheRestart,
}

async fn fail_the_middle_stage_once(failure: Failure) {
    let knobs = Knobs::default();
    let seen = knobs.seen.clone();
    let sup = chain(knobs.clone()).await;
    let numbers: ProducerRef<u64> = sup.child("numbers").unwrap();
    let square: ProducerConsumerRef<u64, u64> = sup.child("square").unwrap();
    let sink: ConsumerRef<u64> = sup.child("sink").unwrap();
    eventually(|| seen.load(Ordering::SeqCst) > 0).await;

    match failure {
        Failure::Stopped => square.stop(Reason::error("square failed")).await.unwrap(),
        Failure::StopsItself => {
            knobs.fail_square.store(true, Ordering::SeqCst);
            assert_eq!(square.wait().await, Reason::error("square failed"));
        }
        Failure::ProducerDiesDuringTheRestart => {
            knobs.kill_numbers_on_start.store(true, Ordering::SeqCst);
            square.stop(Reason::error("square failed")).await.unwrap();
        }
    }
    let numbers_restarts = matches!(failure, Failure::ProducerDiesDuringTheRestart);
    eventually(|| {
        sup.exit_reason().is_some()
            || (sup
                .child::<ProducerRef<u64>>("numbers")
                .is_some_and(|n| (n.id() != numbers.id()) == numbers_restarts)
                && sup
                    .child::<ProducerConsumerRef<u64, u64>>("square")
                    .is_some_and(|s| s.id() != square.id())
                && sup
                    .child::<ConsumerRef<u64>>("sink")
                    .is_some_and(|s| s.id() != sink.id()))
    })
    .await;
    assert_eq!(sup.exit_reason(), None, "the supervisor itself stopped");
    assert!(!sink.is_running());
    assert_eq!(numbers.is_running(), !numbers_restarts);
    // One failure, one restart: the sink's exit that the failure caused is
    // part of it, not a second failure. A producer that fails while the
    // restart runs is a second one.
    assert_eq!(sup.restarts(), if numbers_restarts { 2 } else { 1 });
    // The new sink reads through the new square.
    let before = seen.load(Ordering::SeqCst);
    eventually(|| seen.load(Ordering::SeqCst) > before + 100).await;
    assert_eq!(sup.stop(Reason::Shutdown).await, Reason::Shutdown);
}

async fn fifty_times(failure: Failure) {
    for _ in 0..50 {
        fail_the_middle_stage_once(failure).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_stage_stopped_with_an_error_restarts_with_the_sink() {
    fifty_times(Failure::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_stage_that_stops_itself_with_an_error_restarts_with_the_sink() {
    fifty_times(Failure::StopsItself).await;
}

#[tokio::test]
async fn a_failed_middle_stage_restarts_with_the_sink_on_one_thread() {
    fifty_times(Failure::Stopped).await;
    fifty_times(Failure::StopsItself).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_finds_an_earlier_child_stopped_restarts_from_that_child() {
    fifty_times(Failure::ProducerDiesDuringTheRestart).await;
}

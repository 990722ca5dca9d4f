//! Fused chains through the public API: the same demand, order, ends, failures
//! and drains as the same stages unfused (SEMANTICS.md §1–3, §8).

mod support;

use std::time::Duration;

use demandflow::{
    Context, DrainOutcome, ProducerConsumer, Reason, StartError, SubscribeOptions, SubscriptionId,
    consumer, from_iter, fuse, map, producer, producer_consumer,
};
use proptest::prelude::*;
use support::{Counter, Doubler, Recorder, batches, eventually};

fn opts(max: u64, min: u64) -> SubscribeOptions<u64> {
    SubscribeOptions::new().max_demand(max).min_demand(min)
}

/// The demands a fused `Counter -> Recorder` producer sees, and the batches.
async fn fused_demands(max: u64, min: u64, n_batches: usize) -> (Vec<Vec<u64>>, Vec<u64>) {
    let (counter, demands) = Counter::new();
    let (rec, log) = Recorder::new();
    let chain = fuse(producer(counter))
        .to(consumer(rec), opts(max, min))
        .start()
        .unwrap();
    eventually(|| batches(&log).len() >= n_batches).await;
    chain.stop(Reason::Shutdown).await.unwrap();
    let d = demands.lock().clone();
    (batches(&log), d)
}

#[tokio::test]
async fn fused_max_100_min_80_asks_100_then_20s() {
    let (b, d) = fused_demands(100, 80, 12).await;
    for (i, chunk) in b.iter().take(12).enumerate() {
        let start = i as u64 * 20;
        assert_eq!(*chunk, (start..start + 20).collect::<Vec<_>>());
    }
    assert_eq!(&d[..5], &[100, 20, 20, 20, 20]);
}

#[tokio::test]
async fn fused_max_100_min_20_alternates_eighty_and_twenty() {
    let (_, d) = fused_demands(100, 20, 5).await;
    assert_eq!(&d[..4], &[100, 80, 100, 80]);
}

#[tokio::test]
async fn fused_max_1_asks_one_at_a_time() {
    let (b, d) = fused_demands(1, 0, 50).await;
    assert_eq!(&b[..5], &[vec![0], vec![1], vec![2], vec![3], vec![4]]);
    assert!(d.len() >= 50);
    assert!(d.iter().all(|&x| x == 1), "demands: {d:?}");
}

/// Through a producer-consumer the head sees the middle stage's demand: its
/// max_demand at once, then what its handled chunks free.
#[tokio::test]
async fn fused_head_sees_the_middle_stages_demand() {
    let (counter, demands) = Counter::new();
    let (rec, log) = Recorder::new();
    let chain = fuse(producer(counter))
        .via(producer_consumer(Doubler), opts(100, 80))
        .to(consumer(rec), opts(10, 5))
        .start()
        .unwrap();
    eventually(|| batches(&log).concat().len() >= 1_000).await;
    chain.stop(Reason::Shutdown).await.unwrap();
    let d = demands.lock().clone();
    assert_eq!(d[0], 100);
    assert!(d[1..].iter().all(|&x| x == 20), "demands: {d:?}");
    // Never more asked than the middle stage's max_demand beyond what it took.
    let received = batches(&log).concat();
    assert_eq!(
        received[..1_000],
        (0..1_000).map(|n| n * 2).collect::<Vec<_>>()
    );
    assert!(batches(&log).iter().all(|b| b.len() <= 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_chain_delivers_in_order_exactly_once_and_ends_normally() {
    for max in [1, 10, 1_000] {
        let (rec, log) = Recorder::new();
        let chain = fuse(producer(from_iter(0..20_000_u64)))
            .via(producer_consumer(Doubler), opts(max, max / 2))
            .via(map(|n: u64| n + 1), opts(max, max / 2))
            .to(consumer(rec), opts(max, max / 2))
            .start()
            .unwrap();
        assert_eq!(chain.wait().await, Reason::Normal);
        let got = batches(&log).concat();
        assert_eq!(got, (0..20_000).map(|n| n * 2 + 1).collect::<Vec<_>>());
        for stage in chain.stages() {
            assert_eq!(stage.wait().await, Reason::Normal, "{}", stage.name());
        }
        assert!(!chain.is_running());
        assert_eq!(
            chain.stop(Reason::Shutdown).await,
            Err(demandflow::NotRunning)
        );
    }
}

/// Panics on the event `at`.
struct PanicAt(u64);

impl ProducerConsumer for PanicAt {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        for e in events {
            assert!(e != self.0, "boom at {e}");
            ctx.emit(e);
        }
    }
}

/// A panic in the middle stage stops it with `Reason::Panic` and reaches the
/// tail, exactly as unfused; the other stages run on (the head is held).
#[tokio::test]
async fn panic_in_the_middle_stage_is_reported_as_unfused() {
    // Unfused, for the reference.
    let head = producer(from_iter(0..1_000_u64)).start().unwrap();
    let middle = producer_consumer(PanicAt(500)).start().unwrap();
    let (rec, unfused_log) = Recorder::new();
    let tail = consumer(rec).start().unwrap();
    middle.subscribe_to(&head, opts(10, 5)).await.unwrap();
    tail.subscribe_to(&middle, opts(10, 5)).await.unwrap();
    let unfused_tail = tail.wait().await;
    let unfused_middle = middle.wait().await;

    let (rec, log) = Recorder::new();
    let chain = fuse(producer(from_iter(0..1_000_u64)))
        .via(producer_consumer(PanicAt(500)), opts(10, 5))
        .to(consumer(rec), opts(10, 5))
        .start()
        .unwrap();
    let reason = chain.wait().await;
    assert_eq!(reason, Reason::Panic("boom at 500".into()));
    assert_eq!(reason, unfused_tail);
    assert_eq!(chain.stages()[1].wait().await, unfused_middle);
    assert_eq!(batches(&log).concat(), batches(&unfused_log).concat());
    assert_eq!(batches(&log).concat(), (0..500).collect::<Vec<_>>());
    // The head is not part of the failure: it waits for a consumer.
    assert!(chain.head().is_running());
    chain.stop(Reason::Shutdown).await.unwrap();
    assert!(!chain.is_running());
}

#[tokio::test]
async fn stop_ends_an_endless_chain() {
    let (counter, _) = Counter::new();
    let (rec, log) = Recorder::new();
    let chain = fuse(producer(counter))
        .via(producer_consumer(Doubler), opts(10, 5))
        .to(consumer(rec), opts(10, 5))
        .start()
        .unwrap();
    eventually(|| batches(&log).len() >= 10).await;
    chain.stop(Reason::Shutdown).await.unwrap();
    for stage in chain.stages() {
        assert!(stage.exit_reason().is_some());
    }
    let got = batches(&log).concat();
    assert_eq!(
        got,
        (0..got.len() as u64).map(|n| n * 2).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn drain_delivers_what_is_in_flight_and_stops_every_stage() {
    let (counter, _) = Counter::new();
    let (rec, log) = Recorder::new();
    let chain = fuse(producer(counter))
        .via(producer_consumer(Doubler), opts(100, 50))
        .to(consumer(rec), opts(10, 5))
        .start()
        .unwrap();
    eventually(|| batches(&log).len() >= 10).await;
    let report = chain.drain(Duration::from_secs(10)).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.stages.len(), 3);
    assert!(matches!(report.stages[2].outcome, DrainOutcome::Drained(_)));
    assert!(!chain.is_running());
    // Nothing lost or repeated on the way out.
    let got = batches(&log).concat();
    assert_eq!(
        got,
        (0..got.len() as u64).map(|n| n * 2).collect::<Vec<_>>()
    );
}

/// An endless chain shares a single-threaded runtime: its task yields.
#[tokio::test(flavor = "current_thread")]
async fn an_endless_fused_chain_lets_other_tasks_run() {
    let (counter, _) = Counter::new();
    let chain = fuse(producer(counter))
        .via(producer_consumer(Doubler), opts(1, 0))
        .to(demandflow::for_each(|_: u64| {}), opts(1, 0))
        .start()
        .unwrap();
    let other = tokio::spawn(async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        7
    });
    assert_eq!(other.await.unwrap(), 7);
    assert!(chain.is_running());
    chain.stop(Reason::Shutdown).await.unwrap();
}

#[tokio::test]
async fn stages_keep_their_names_and_stats() {
    let chain = fuse(producer(from_iter(0..100_u64)).name("numbers"))
        .via(producer_consumer(Doubler).name("double"), opts(10, 5))
        .to(demandflow::for_each(|_: u64| {}).name("sink"), opts(10, 5))
        .start()
        .unwrap();
    let names: Vec<_> = chain.stages().iter().map(|s| s.name().to_owned()).collect();
    assert_eq!(names, ["numbers", "double", "sink"]);
    assert_eq!(chain.wait().await, Reason::Normal);
}

#[test]
fn start_outside_a_runtime_fails() {
    let err = fuse(producer(from_iter(0..10_u64)))
        .to(demandflow::for_each(|_: u64| {}), SubscribeOptions::new())
        .start()
        .unwrap_err();
    assert_eq!(err, StartError::NoRuntime);
}

#[tokio::test]
async fn invalid_link_options_start_nothing() {
    let err = fuse(producer(from_iter(0..10_u64)))
        .to(demandflow::for_each(|_: u64| {}), opts(0, 0))
        .start()
        .unwrap_err();
    assert!(matches!(err, StartError::Config(_)), "{err:?}");
}

/// One transformation of a generated chain.
#[derive(Clone, Copy, Debug)]
enum Op {
    Add(u64),
    /// Keeps events divisible by it.
    KeepMultiples(u64),
    /// Emits each event this many times (0 drops it).
    Repeat(u8),
}

impl Op {
    fn apply(self, e: u64, out: &mut Vec<u64>) {
        match self {
            Op::Add(k) => out.push(e + k),
            Op::KeepMultiples(m) => {
                if e % m == 0 {
                    out.push(e);
                }
            }
            Op::Repeat(n) => out.extend(std::iter::repeat_n(e, n as usize)),
        }
    }
}

struct Step(Op);

impl ProducerConsumer for Step {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        let mut out = Vec::new();
        for e in events {
            self.0.apply(e, &mut out);
        }
        ctx.emit_vec(out);
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..100_u64).prop_map(Op::Add),
        (1..5_u64).prop_map(Op::KeepMultiples),
        (0..4_u8).prop_map(Op::Repeat),
    ]
}

/// `(max_demand, min_demand)` of one link.
fn bounds() -> impl Strategy<Value = (u64, u64)> {
    (1..40_u64).prop_flat_map(|max| (Just(max), 0..max))
}

/// Runs the chain unfused or fused; returns every batch the tail saw.
async fn run_chain(
    events: u64,
    ops: &[(Op, (u64, u64))],
    tail: (u64, u64),
    fused: bool,
) -> (Vec<Vec<u64>>, Reason) {
    let (rec, log) = Recorder::new();
    let reason = if fused {
        let mut chain = fuse(producer(from_iter(0..events)));
        for &(op, (max, min)) in ops {
            chain = chain.via(producer_consumer(Step(op)), opts(max, min));
        }
        let chain = chain
            .to(consumer(rec), opts(tail.0, tail.1))
            .start()
            .unwrap();
        chain.wait().await
    } else {
        // Linked from the tail up, so that the head has no consumer (and emits
        // nothing) until every link below it is made.
        let head = producer(from_iter(0..events)).start().unwrap();
        let stages: Vec<_> = ops
            .iter()
            .map(|&(op, _)| producer_consumer(Step(op)).start().unwrap())
            .collect();
        let sink = consumer(rec).start().unwrap();
        match stages.last() {
            Some(last) => sink.subscribe_to(last, opts(tail.0, tail.1)).await.unwrap(),
            None => sink
                .subscribe_to(&head, opts(tail.0, tail.1))
                .await
                .unwrap(),
        };
        for (i, stage) in stages.iter().enumerate().rev() {
            let (max, min) = ops[i].1;
            match i {
                0 => stage.subscribe_to(&head, opts(max, min)).await.unwrap(),
                _ => stage
                    .subscribe_to(&stages[i - 1], opts(max, min))
                    .await
                    .unwrap(),
            };
        }
        sink.wait().await
    };
    (batches(&log), reason)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A fused chain hands its tail the very batches the same chain unfused does.
    #[test]
    fn fused_chains_deliver_what_unfused_chains_deliver(
        events in 0..600_u64,
        ops in prop::collection::vec((op(), bounds()), 0..4),
        tail in bounds(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let within = |fused| {
            runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(60), run_chain(events, &ops, tail, fused)).await
                })
                .unwrap_or_else(|_| panic!("fused {fused}: the chain never ended"))
        };
        let (unfused, unfused_reason) = within(false);
        let (fused, fused_reason) = within(true);
        prop_assert_eq!(fused_reason, Reason::Normal);
        prop_assert_eq!(unfused_reason, Reason::Normal);
        let mut expected: Vec<u64> = (0..events).collect();
        for &(op, _) in &ops {
            let mut next = Vec::new();
            for e in expected {
                op.apply(e, &mut next);
            }
            expected = next;
        }
        prop_assert_eq!(fused.concat(), expected.clone());
        prop_assert_eq!(unfused.concat(), expected);
        // Batches never exceed the tail's chunk (automatic demand, §2).
        let chunk = (tail.0 - tail.1).max(1) as usize;
        prop_assert!(fused.iter().all(|b| !b.is_empty() && b.len() <= chunk.max(tail.0 as usize)));
    }
}

/// Stops in `init`, before any consumer could subscribe.
struct StopsAtOnce;

impl demandflow::Producer for StopsAtOnce {
    type Event = u64;

    async fn init(&mut self, ctx: &mut Context<u64>) {
        ctx.stop(Reason::Normal);
    }

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {
        unreachable!("stopped in init");
    }
}

/// A head with nothing to give, or one that stops before anything subscribed,
/// still ends the chain: its end reaches the tail.
#[tokio::test]
async fn a_head_that_ends_at_once_ends_the_chain() {
    let chain = fuse(producer(from_iter(0..0_u64)))
        .via(producer_consumer(Doubler), opts(5, 2))
        .to(demandflow::for_each(|_: u64| {}), opts(5, 2))
        .start()
        .unwrap();
    assert_eq!(chain.wait().await, Reason::Normal);

    let chain = fuse(producer(StopsAtOnce))
        .via(producer_consumer(Doubler), opts(5, 2))
        .to(demandflow::for_each(|_: u64| {}), opts(5, 2))
        .start()
        .unwrap();
    assert_eq!(chain.wait().await, Reason::Normal);
    assert!(!chain.is_running());
}

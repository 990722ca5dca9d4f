//! Properties of SEMANTICS.md §8 over random schedules, through the public API.
//!
//! Every case builds a small random pipeline on a fresh tokio runtime (one
//! thread with the paused clock, or two worker threads): 1–3 producers, some
//! emitting exactly what they are asked, some less (remembering the rest), some
//! more, some only from info messages, some behind a partition dispatcher; 0–2
//! producer-consumers (doubling, filtering, emitting two per event); 1–4
//! consumers with automatic or manual demand. It then runs a random program:
//! subscribes (waiting for the answer or not, with random max/min demand and
//! cancel mode), cancels from either side (sometimes twice), resubscribes, asks
//! through the handle or from a callback (0 and `u64::MAX` included), emits from
//! info messages, switches demand between accumulate and forward, stops stages
//! with a reason and panics in callbacks, interleaved with yields and
//! paused-clock advances.
//!
//! Every stage records its callbacks. Once the pipeline is quiescent (two
//! identical rounds of `stats()` round trips through every stage) the records
//! and stats are checked:
//!
//! - on every subscription, never more events than asked (manual asks as made,
//!   automatic ones replayed with the arithmetic of §2), no empty batch, no chunk
//!   over `max - min`, events in emission order, nothing before it began or after
//!   it ended, one cancel callback at most; through a partition dispatcher, every
//!   event in its partition and each key in order across successive consumers
//!   (within each consumer, when a partition had several at once);
//! - no event delivered twice or never emitted; for every running producing
//!   stage, emitted = delivered + buffered + dropped (+ discarded by a partition
//!   dispatcher), every drop reported, buffers within their bounds, and what it
//!   delivered handled or queued downstream;
//! - no event waits in a buffer while one of the stage's consumers has demand;
//! - both ends of a subscription agree on whether it is live;
//! - every stopped stage stopped for a reason the program explains (a stop, an
//!   injected panic, a cancel mode of §6), and every cancel mode that stops a
//!   consumer did.
//!
//! Then every handle is dropped: every stage must stop and no task may be left on
//! the runtime. A focused property checks that a panic stops its stage and only
//! the stages that depend on it under §6, while an unrelated pipeline keeps
//! working. The minimal reproductions of the bugs these properties found close
//! the file.
//!
//! Events are `(emitting stage, sequence number)`: each producing stage numbers
//! what it emits 0, 1, 2, …, so order and duplication are checked by value.
//!
//! `PROPTEST_CASES` overrides the number of cases of every property.
//!
//! The files of this test: `fixtures.rs` (the recording stages), `handles.rs`
//! (one handle over them), `program.rs` (programs and their generator),
//! `world.rs` (running a program), `checks.rs` (the §8 checks), and this file
//! (the properties, and the regressions found by them; proptest replays the
//! seeds in `main.proptest-regressions` first).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use demandflow::dispatcher::{DEFAULT_PARTITION_QUEUE_CAPACITY, PartitionDispatcher};
use demandflow::{
    AsProducer, BufferKeep, CancelMode, CancelReason, Consumer, ConsumerContext, ConsumerRef,
    Context, DEFAULT_BUFFER_SIZE, DemandFlow, DemandMode, Info, NotRunning, Peer, Producer,
    ProducerConsumer, ProducerConsumerRef, ProducerRef, Reason, StageMonitor, StageStats,
    SubscribeError, SubscribeOptions, SubscriptionId, consumer, producer, producer_consumer,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Runs the same expression on whichever handle it is.
macro_rules! each {
    ($handle:expr, $h:ident => $body:expr) => {
        match $handle {
            Handle::Source($h) => $body,
            Handle::Relay($h) => $body,
            Handle::Sink($h) => $body,
        }
    };
}

/// Records a violation instead of panicking, so one case reports all it broke.
macro_rules! check {
    ($world:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $world.violations.push(format!($($arg)+));
        }
    };
}

mod checks;
mod fixtures;
mod handles;
mod program;
mod world;

use fixtures::*;
use handles::*;
use program::*;
use world::*;

// ----- properties -------------------------------------------------------------

/// The number of cases: `PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh runtime: one thread with the paused clock, or `threads` workers.
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_time()
            .build()
    }
    .unwrap()
}

/// Runs `program` on a fresh runtime: one thread with the paused clock, or
/// `threads` worker threads.
fn run(program: &Program, threads: usize) -> Result<(), TestCaseError> {
    quiet_injected_panics();
    let paused = threads == 1;
    let runtime = runtime(threads);
    let violations = runtime.block_on(async {
        let mut world = World::start(program, paused);
        for op in &program.ops {
            world.apply(op).await;
        }
        world.forward_all();
        let running = world.check().await;
        world.teardown(&running).await;
        world.violations
    });
    drop(runtime);
    prop_assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn random_schedules_on_one_thread_keep_every_invariant(program in program()) {
        run(&program, 1)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn random_schedules_on_two_worker_threads_keep_every_invariant(program in program()) {
        run(&program, 2)?;
    }
}

// ----- a panic stops only its stage -------------------------------------------

/// Where the panic of [`a_panic_stops_its_stage_and_only_what_depends_on_it`]
/// happens, and how the stages around it are subscribed.
#[derive(Clone, Debug)]
struct PanicCase {
    /// 0: the producer, 1: the producer-consumer, 2: the first consumer of chain A.
    target: usize,
    /// Armed before chain A is wired (panics at its first batch or demand), or
    /// an info message after it has run (`None`).
    at_first_work: bool,
    relay_mode: CancelMode,
    sink_modes: [CancelMode; 2],
    asks: [u64; 2],
    threads: usize,
}

fn panic_case() -> impl Strategy<Value = PanicCase> {
    (
        0..3_usize,
        any::<bool>(),
        cancel_mode(),
        [cancel_mode(), cancel_mode()],
        [0..20_u64, 0..20_u64],
        prop_oneof![3 => Just(1_usize), 1 => Just(2_usize)],
    )
        .prop_map(
            |(target, at_first_work, relay_mode, sink_modes, asks, threads)| PanicCase {
                target,
                at_first_work,
                relay_mode,
                sink_modes,
                asks,
                threads,
            },
        )
}

/// Chain A (producer → producer-consumer → two consumers) and chain B
/// (producer → manual consumer) share a runtime; one stage of chain A panics.
/// Returns the violations.
async fn run_panic_case(case: &PanicCase, paused: bool) -> Vec<String> {
    let program = Program {
        sources: vec![
            SourceSpec {
                kind: SourceKind::Exact,
                budget: 40,
                buffer: None,
                parts: None,
            },
            SourceSpec {
                kind: SourceKind::Exact,
                budget: 1000,
                buffer: None,
                parts: None,
            },
        ],
        relays: vec![RelaySpec {
            kind: RelayKind::Double,
            buffer: None,
        }],
        sinks: vec![false, false, true],
        ops: Vec::new(),
    };
    // Stages: 0 source A, 1 source B, 2 relay A, 3 and 4 consumers of A, 5 consumer of B.
    let mut world = World::start(&program, paused);
    let target = [0, 2, 3][case.target];
    if case.at_first_work {
        world.stages[target].probe.arm(Trap::Work);
    }
    let sub = |consumer, producer, cancel| Op::Subscribe {
        consumer,
        producer,
        partition: 0,
        max: 4,
        min: None,
        cancel,
        wait: true,
    };
    // Consumer and producer numbers index the consuming (2, 3, 4, 5) and
    // producing (0, 1, 2) stages.
    world.apply(&sub(3, 1, CancelMode::Permanent)).await;
    let b = world.subs[0].clone();
    world.apply(&sub(1, 2, case.sink_modes[0])).await;
    world.apply(&sub(2, 2, case.sink_modes[1])).await;
    world.apply(&sub(0, 0, case.relay_mode)).await;
    let ask = |demand| Op::Ask {
        sub: 0,
        demand,
        via_info: false,
    };
    world.apply(&Op::Settle).await;
    world.apply(&ask(case.asks[0])).await;
    if !case.at_first_work {
        world
            .apply(&Op::Panic {
                stage: target,
                trap: None,
            })
            .await;
    }
    world.apply(&ask(case.asks[1])).await;
    let running = world.check().await;

    // The panicking stage stopped with the panic; §6 decides who follows it.
    let abnormal = Reason::Panic(PANIC.into());
    let relay_follows = target == 0 && case.relay_mode != CancelMode::Temporary;
    let mut expected = [true; 6];
    expected[target] = false;
    if relay_follows {
        expected[2] = false;
    }
    if !expected[2] {
        for (i, mode) in case.sink_modes.iter().enumerate() {
            expected[3 + i] = *mode == CancelMode::Temporary;
        }
    }
    for (i, &runs) in expected.iter().enumerate() {
        if running[i] != runs {
            world
                .violations
                .push(format!("stage {i} running {}, expected {runs}", running[i]));
        }
        if !runs && world.stages[i].monitor.exit_reason() != Some(abnormal.clone()) {
            world.violations.push(format!(
                "stage {i} exited with {:?}, expected {abnormal}",
                world.stages[i].monitor.exit_reason()
            ));
        }
    }
    // Chain B kept working all along: it got exactly what it asked, in order.
    let got: Vec<u64> = world.stages[5]
        .probe
        .log
        .lock()
        .iter()
        .filter_map(|e| match e {
            Entry::Events(s, events) if *s == b.sub => Some(events.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect();
    let asked = case.asks[0] + case.asks[1];
    if got != (0..asked).collect::<Vec<u64>>() {
        world
            .violations
            .push(format!("chain B asked {asked} and got {got:?}"));
    }
    world.teardown(&running).await;
    world.violations
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn a_panic_stops_its_stage_and_only_what_depends_on_it(case in panic_case()) {
        quiet_injected_panics();
        let runtime = runtime(case.threads);
        let violations = runtime.block_on(run_panic_case(&case, case.threads == 1));
        drop(runtime);
        prop_assert!(violations.is_empty(), "{}", violations.join("\n"));
    }
}

// ----- minimal reproductions of what the properties found ---------------------

fn source(kind: SourceKind, budget: u64) -> Source {
    Source {
        me: 0,
        kind,
        budget,
        next: 0,
        owed: 0,
        probe: Arc::default(),
    }
}

fn sink(manual: bool) -> (Sink, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    (
        Sink {
            manual,
            probe: probe.clone(),
        },
        probe,
    )
}

/// The sequence numbers `probe` received on `sub`, in order.
fn seqs(probe: &Probe, sub: SubscriptionId) -> Vec<u64> {
    probe
        .log
        .lock()
        .iter()
        .filter_map(|e| match e {
            Entry::Events(s, events) if *s == sub => Some(events.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Long enough for anything; on the paused clock it only elapses once every task
/// waits, so a hang fails at once.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn events_owed_to_a_cancelled_subscription_reach_the_next_consumer_that_asks() {
    // The producer emits only when told, and owes what it was asked.
    let p = producer(source(SourceKind::Silent, 100)).start().unwrap();
    let a = consumer(sink(true).0).start().unwrap();
    let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let sa = a.subscribe_to(&p, options).await.unwrap();
    a.ask(sa, 3).unwrap();
    a.cancel(sa, Reason::Normal).unwrap();
    a.stats().await.unwrap();
    p.stats().await.unwrap();
    // The producer emits the 3 events it owes; nobody has demand: buffered.
    p.send_info(Cmd::EmitOwed).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    let (second, log) = sink(true);
    let b = consumer(second).start().unwrap();
    let sb = b.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // The dispatcher serves this ask from the cancelled subscription's demand.
    b.ask(sb, 3).unwrap();
    b.stats().await.unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert_eq!(seqs(&log, sb), vec![0, 1, 2]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn events_owed_to_a_cancelled_subscription_reach_a_consumer_that_asked_while_accumulating() {
    let p = producer(source(SourceKind::Silent, 100)).start().unwrap();
    let a = consumer(sink(true).0).start().unwrap();
    let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let sa = a.subscribe_to(&p, options).await.unwrap();
    a.ask(sa, 3).unwrap();
    a.cancel(sa, Reason::Normal).unwrap();
    a.stats().await.unwrap();
    p.stats().await.unwrap();
    p.send_info(Cmd::EmitOwed).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    let (second, log) = sink(true);
    let b = consumer(second).start().unwrap();
    let sb = b.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    p.set_demand_flow(DemandFlow::Accumulate).unwrap();
    b.ask(sb, 3).unwrap();
    b.stats().await.unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert!(
        seqs(&log, sb).is_empty(),
        "accumulating: nothing is dispatched"
    );
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert_eq!(seqs(&log, sb), vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn events_emitted_while_accumulated_demand_is_replayed_keep_their_order() {
    let p = producer(source(SourceKind::Exact, 100))
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let (snk, log) = sink(true);
    let c = consumer(snk).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // Recorded in this order: a demand of 2, then events 0 and 1.
    c.ask(sub, 2).unwrap();
    c.stats().await.unwrap();
    p.send_info(Cmd::Emit(2)).unwrap();
    p.stats().await.unwrap();
    // Replaying the demand calls `handle_demand(2)`, which emits 2 and 3.
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    p.stats().await.unwrap();
    c.stats().await.unwrap();
    c.ask(sub, 2).unwrap();
    c.stats().await.unwrap();
    p.stats().await.unwrap();
    c.stats().await.unwrap();
    assert_eq!(seqs(&log, sub), vec![0, 1, 2, 3]);
}

/// Stops at its first info message, after pausing a second in the callback.
struct Doomed;

impl Producer for Doomed {
    type Event = Ev;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<Ev>) {}

    async fn handle_info(&mut self, _: Info, ctx: &mut Context<Ev>) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.stop(Reason::error("doomed"));
    }
}

#[tokio::test(start_paused = true)]
async fn subscribe_to_a_producer_that_stops_before_accepting_fails_while_input_is_queued() {
    // A producer-consumer whose input waits for downstream demand.
    let p = producer(source(SourceKind::Exact, 10)).start().unwrap();
    let relay = producer_consumer(Relay {
        me: 1,
        kind: RelayKind::Double,
        next: 0,
        probe: Arc::default(),
    })
    .start()
    .unwrap();
    let options = SubscribeOptions::new().max_demand(4);
    relay.subscribe_to(&p, options).await.unwrap();
    p.stats().await.unwrap();
    assert_eq!(relay.stats().await.unwrap().queued_in, 4);
    // This producer stops with the subscribe request in its mailbox: it answers
    // with a down notice instead of accepting.
    let doomed = producer(Doomed).start().unwrap();
    doomed.send_info(()).unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let subscribed = relay.subscribe_to(&doomed, SubscribeOptions::new());
    let result = tokio::time::timeout(LIMIT, subscribed).await;
    assert_eq!(result, Ok(Err(SubscribeError::ProducerNotRunning)));
}

#[tokio::test(start_paused = true)]
async fn demand_left_by_a_cancel_is_forgotten_once_its_events_are_dropped() {
    // The producer emits only when told, and keeps no events nobody asked for.
    let p = producer(source(SourceKind::Silent, 100))
        .buffer_size(0)
        .start()
        .unwrap();
    let a = consumer(sink(true).0).start().unwrap();
    let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let sa = a.subscribe_to(&p, options).await.unwrap();
    a.ask(sa, 2).unwrap();
    a.cancel(sa, Reason::Normal).unwrap();
    a.stats().await.unwrap();
    p.stats().await.unwrap();
    // The producer emits the 2 events it owes; nobody has demand: dropped.
    p.send_info(Cmd::EmitOwed).unwrap();
    assert_eq!(p.stats().await.unwrap().events_dropped, 2);
    // It owes nothing now, so this ask must reach it.
    let (second, log) = sink(true);
    let b = consumer(second).start().unwrap();
    let sb = b.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    b.ask(sb, 2).unwrap();
    b.stats().await.unwrap();
    p.send_info(Cmd::EmitOwed).unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert_eq!(
        seqs(&log, sb),
        vec![2, 3],
        "the ask was absorbed by stale demand"
    );
}

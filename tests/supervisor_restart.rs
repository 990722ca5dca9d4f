//! Stage supervision: strategies, re-subscription after restarts, intensity.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use demandflow::supervisor::{
    BuildError, ConsumerSupervisor, PartitionSupervisor, PartitionWorker, Restart, Strategy,
    Supervisor,
};
use demandflow::{
    CancelMode, ConfigError, Consumer, ConsumerContext, ConsumerRef, Context, Producer,
    ProducerConsumer, ProducerConsumerRef, ProducerRef, Reason, StartError, SubscribeOptions,
    SubscriptionId, consumer, from_iter, producer, producer_consumer,
};
use support::{Counter, Recorder, batches, eventually};

/// Passes events through, panicking once on `bad` (the flag is shared across
/// restarts, like state that survives in the outside world).
struct PanicOnce {
    bad: u64,
    panicked: Arc<AtomicBool>,
}

impl ProducerConsumer for PanicOnce {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        if events.contains(&self.bad) && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("event {} is bad", self.bad);
        }
        ctx.emit_vec(events);
    }
}

fn one() -> SubscribeOptions<u64> {
    SubscribeOptions::new().max_demand(1).min_demand(0)
}

#[tokio::test]
async fn a_crashed_middle_stage_restarts_and_only_its_in_flight_event_is_lost() {
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = panicked.clone();
    let (_, log) = Recorder::<u64>::new();
    let log_for_restarts = log.clone();
    let sup = Supervisor::builder(Strategy::RestForOne)
        .child("source", Restart::Transient, |_| async {
            producer(from_iter(0..200_u64)).start()
        })
        .child("middle", Restart::Transient, move |children| {
            let flag = flag.clone();
            async move {
                let source: ProducerRef<u64> = children.get("source").ok_or("no source")?;
                let pc = producer_consumer(PanicOnce {
                    bad: 50,
                    panicked: flag,
                })
                .start()
                .map_err(|e| e.to_string())?;
                pc.subscribe_to(&source, one())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(pc)
            }
        })
        .child("sink", Restart::Transient, move |children| {
            let mut rec = Recorder::new().0;
            rec.log = log_for_restarts.clone();
            async move {
                let middle: ProducerConsumerRef<u64, u64> =
                    children.get("middle").ok_or("no middle")?;
                let c = consumer(rec).start().map_err(|e| e.to_string())?;
                c.subscribe_to(&middle, one().cancel(CancelMode::Temporary))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            }
        })
        .start()
        .await
        .unwrap();
    eventually(|| batches(&log).concat().last() == Some(&199)).await;
    assert!(panicked.load(Ordering::SeqCst));
    assert_eq!(sup.restarts(), 1);
    let expected: Vec<u64> = (0..200).filter(|&e| e != 50).collect();
    assert_eq!(batches(&log).concat(), expected);
    sup.stop(Reason::Shutdown).await;
}

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

async fn two_stage(strategy: Strategy) -> (Supervisor, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    let sup = Supervisor::builder(strategy)
        .child("source", Restart::Permanent, |_| async {
            producer(Counter::new().0).start()
        })
        .child("sink", Restart::Permanent, move |children| {
            let counted = counted.clone();
            async move {
                let source: ProducerRef<u64> = children.get("source").ok_or("no source")?;
                let c = consumer(Sink(counted)).start().map_err(|e| e.to_string())?;
                c.subscribe_to(&source, SubscribeOptions::new().max_demand(10))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            }
        })
        .start()
        .await
        .unwrap();
    (sup, seen)
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (sup, seen) = two_stage(Strategy::OneForOne).await;
    let source: ProducerRef<u64> = sup.child("source").unwrap();
    let sink: ConsumerRef<u64> = sup.child("sink").unwrap();
    sink.stop(Reason::error("crash")).await.unwrap();
    eventually(|| sup.restarts() == 1 && sup.child::<ConsumerRef<u64>>("sink").is_some()).await;
    let new_sink: ConsumerRef<u64> = sup.child("sink").unwrap();
    assert_ne!(new_sink.id(), sink.id());
    assert_eq!(
        sup.child::<ProducerRef<u64>>("source").unwrap().id(),
        source.id()
    );
    let before = seen.load(Ordering::SeqCst);
    eventually(|| seen.load(Ordering::SeqCst) > before + 100).await;
    sup.stop(Reason::Shutdown).await;
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    let (sup, seen) = two_stage(Strategy::OneForAll).await;
    let source: ProducerRef<u64> = sup.child("source").unwrap();
    let sink: ConsumerRef<u64> = sup.child("sink").unwrap();
    sink.stop(Reason::error("crash")).await.unwrap();
    eventually(|| {
        sup.child::<ProducerRef<u64>>("source")
            .is_some_and(|s| s.id() != source.id())
            && sup.child::<ConsumerRef<u64>>("sink").is_some()
    })
    .await;
    assert!(!source.is_running());
    let before = seen.load(Ordering::SeqCst);
    eventually(|| seen.load(Ordering::SeqCst) > before + 100).await;
    sup.stop(Reason::Shutdown).await;
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let (sup, _) = two_stage(Strategy::RestForOne).await;
    let source: ProducerRef<u64> = sup.child("source").unwrap();
    let sink: ConsumerRef<u64> = sup.child("sink").unwrap();
    source.stop(Reason::error("crash")).await.unwrap();
    eventually(|| {
        sup.child::<ProducerRef<u64>>("source")
            .is_some_and(|s| s.id() != source.id())
            && sup
                .child::<ConsumerRef<u64>>("sink")
                .is_some_and(|s| s.id() != sink.id())
    })
    .await;
    sup.stop(Reason::Shutdown).await;
}

struct AlwaysPanics;

impl demandflow::Producer for AlwaysPanics {
    type Event = u64;

    async fn init(&mut self, _: &mut Context<u64>) {
        panic!("cannot start");
    }

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_stop_the_supervisor_with_a_clear_reason() {
    let sup = Supervisor::builder(Strategy::OneForOne)
        .max_restarts(3)
        .max_seconds(Duration::from_secs(5))
        .child("doomed", Restart::Permanent, |_| async {
            producer(AlwaysPanics).start()
        })
        .start()
        .await
        .unwrap();
    let reason = sup.wait().await;
    assert_eq!(sup.restarts(), 3);
    let Reason::Error(message) = reason else {
        panic!("expected an error reason, got {reason}");
    };
    assert!(
        message.contains("\"doomed\" needed more than 3 restarts"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_factory_fails_start_and_stops_earlier_children() {
    let monitor = Arc::new(parking_lot::Mutex::new(None));
    let keep = monitor.clone();
    let result = Supervisor::builder(Strategy::OneForOne)
        .child("source", Restart::Permanent, move |_| {
            let keep = keep.clone();
            async move {
                let p = producer(Counter::new().0).start()?;
                *keep.lock() = Some(p.monitor());
                Ok::<_, demandflow::StartError>(p)
            }
        })
        .child("broken", Restart::Permanent, |_| async {
            Err::<ProducerRef<u64>, _>("no database")
        })
        .start()
        .await;
    let Err(BuildError::Child(err)) = result else {
        panic!("expected a child error");
    };
    assert_eq!(err.child(), "broken");
    assert_eq!(err.to_string(), "child \"broken\" failed to start");
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "no database");
    let source = monitor.lock().clone().unwrap();
    assert_eq!(source.wait().await, Reason::Shutdown);
}

#[tokio::test]
async fn a_transient_child_that_ends_normally_is_not_restarted() {
    let sup = Supervisor::builder(Strategy::OneForOne)
        .child("finite", Restart::Transient, |_| async {
            producer(from_iter(0..3_u64)).start()
        })
        .start()
        .await
        .unwrap();
    let finite: ProducerRef<u64> = sup.child("finite").unwrap();
    finite.stop(Reason::Normal).await.unwrap();
    eventually(|| sup.child::<ProducerRef<u64>>("finite").is_none()).await;
    assert_eq!(sup.restarts(), 0);
    assert!(sup.exit_reason().is_none());
}

/// Emits 0..200, ending normally; the first instance panics at 50 (the flag
/// is shared across restarts).
struct CrashOnce {
    next: u64,
    crashed: Arc<AtomicBool>,
}

impl Producer for CrashOnce {
    type Event = u64;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
        if self.next >= 50 && !self.crashed.swap(true, Ordering::SeqCst) {
            panic!("source crashed");
        }
        let end = (self.next + demand).min(200);
        ctx.emit_all(self.next..end);
        self.next = end;
        if end == 200 {
            ctx.stop(Reason::Normal);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn wait_children_waits_through_a_restart_until_every_child_has_ended() {
    let crashed = Arc::new(AtomicBool::new(false));
    let flag = crashed.clone();
    let (_, log) = Recorder::<u64>::new();
    let log_for_restarts = log.clone();
    let sup = Supervisor::builder(Strategy::RestForOne)
        .child("source", Restart::Transient, move |_| {
            let crashed = flag.clone();
            async move {
                if crashed.load(Ordering::SeqCst) {
                    // A slow restart: until it ends, no child of either
                    // generation runs.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                producer(CrashOnce { next: 0, crashed }).start()
            }
        })
        .child("sink", Restart::Transient, move |children| {
            let mut rec = Recorder::new().0;
            rec.log = log_for_restarts.clone();
            async move {
                let source: ProducerRef<u64> = children.get("source").ok_or("no source")?;
                let c = consumer(rec).start().map_err(|e| e.to_string())?;
                c.subscribe_to(&source, SubscribeOptions::new().max_demand(10))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            }
        })
        .start()
        .await
        .unwrap();
    sup.wait_children().await;
    // Every child ended normally after the restart: the source ran out and
    // its end flowed down.
    assert!(crashed.load(Ordering::SeqCst));
    assert!(sup.restarts() >= 1);
    assert_eq!(batches(&log).concat().last(), Some(&199));
    assert_eq!(sup.children().names().count(), 0);
    assert!(sup.exit_reason().is_none());
}

#[tokio::test]
async fn draining_a_supervisor_delivers_in_flight_events_and_restarts_nothing() {
    let (sup, seen) = two_stage(Strategy::RestForOne).await;
    eventually(|| seen.load(Ordering::SeqCst) > 100).await;
    let report = sup.drain(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(sup.wait().await, Reason::Shutdown);
    assert_eq!(sup.restarts(), 0);
}

/// A child whose factory works the first time and panics at every later call
/// (at the call itself, or inside its future), like a factory whose
/// configuration went away while the first instance ran.
fn panics_on_restart(in_future: bool) -> demandflow::supervisor::SupervisorBuilder {
    let calls = Arc::new(AtomicU64::new(0));
    Supervisor::builder(Strategy::OneForOne).child("flaky", Restart::Permanent, move |_| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        if !first && !in_future {
            panic!("factory lost its configuration");
        }
        async move {
            if !first {
                panic!("factory lost its configuration");
            }
            producer(Counter::new().0).start()
        }
    })
}

async fn crash_and_wait_for_the_restart(sup: &Supervisor) -> Reason {
    let flaky: ProducerRef<u64> = sup.child("flaky").unwrap();
    flaky.stop(Reason::error("crashed")).await.unwrap();
    let reason = sup.wait().await;
    assert_eq!(sup.exit_reason(), Some(reason.clone()));
    reason
}

#[tokio::test]
async fn a_factory_that_panics_while_restarting_ends_the_supervisor_with_the_panic() {
    let sup = panics_on_restart(false).start().await.unwrap();
    let reason = crash_and_wait_for_the_restart(&sup).await;
    assert_eq!(
        reason,
        Reason::Panic("factory lost its configuration".into())
    );
    assert!(!reason.is_normal());
}

#[tokio::test]
async fn a_factory_future_that_panics_while_restarting_ends_the_supervisor_with_the_panic() {
    let sup = panics_on_restart(true).start().await.unwrap();
    let reason = crash_and_wait_for_the_restart(&sup).await;
    assert_eq!(
        reason,
        Reason::Panic("factory lost its configuration".into())
    );
}

#[tokio::test]
async fn a_factory_that_panics_at_start_is_a_start_error_not_a_panic() {
    let result = Supervisor::builder(Strategy::OneForOne)
        .child("broken", Restart::Permanent, |_| async {
            if true {
                panic!("no configuration");
            }
            producer(Counter::new().0).start()
        })
        .start()
        .await;
    let Err(BuildError::Child(err)) = result else {
        panic!("expected a child error");
    };
    assert_eq!(
        err.to_string(),
        "child \"broken\" failed to start: its factory panicked: no configuration"
    );
}

#[tokio::test]
async fn a_zero_restart_window_is_refused_when_the_supervisor_starts() {
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let result = Supervisor::builder(Strategy::OneForOne)
        .max_seconds(Duration::ZERO)
        .child("source", Restart::Permanent, move |_| {
            flag.store(true, Ordering::SeqCst);
            async { producer(Counter::new().0).start() }
        })
        .start()
        .await;
    assert!(matches!(
        result,
        Err(BuildError::Start(StartError::Config(ConfigError::Zero {
            option: "max_seconds"
        })))
    ));
    assert!(!started.load(Ordering::SeqCst), "no child starts");
}

/// A partition worker that panics on every message.
struct Fragile;

impl PartitionWorker for Fragile {
    type Message = ();
    type Reply = ();

    async fn handle(&mut self, (): ()) {
        panic!("fragile");
    }
}

fn one_partition() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::MIN
}

/// A consumer supervisor worker that always fails.
async fn always_fails(_: u64) -> Result<(), &'static str> {
    Err("always fails")
}

#[tokio::test]
async fn every_supervisor_refuses_a_zero_restart_window_with_the_same_error() {
    let stages = Supervisor::builder(Strategy::OneForOne)
        .max_seconds(Duration::ZERO)
        .start()
        .await;
    assert!(matches!(
        stages,
        Err(BuildError::Start(StartError::Config(ConfigError::Zero {
            option: "max_seconds"
        })))
    ));
    let workers = ConsumerSupervisor::builder(always_fails)
        .max_seconds(Duration::ZERO)
        .build();
    assert!(matches!(
        workers,
        Err(BuildError::Start(StartError::Config(ConfigError::Zero {
            option: "max_seconds"
        })))
    ));
    let partitions = PartitionSupervisor::builder(one_partition(), |_| Fragile)
        .max_seconds(Duration::ZERO)
        .start();
    assert!(matches!(
        partitions,
        Err(BuildError::Start(StartError::Config(ConfigError::Zero {
            option: "max_seconds"
        })))
    ));
}

#[tokio::test(start_paused = true)]
async fn every_supervisor_states_its_restart_limit_in_the_same_words() {
    let limit = "more than 0 restarts within 2s";

    let stages = Supervisor::builder(Strategy::OneForOne)
        .max_restarts(0)
        .max_seconds(Duration::from_secs(2))
        .child("doomed", Restart::Permanent, |_| async {
            producer(AlwaysPanics).start()
        })
        .start()
        .await
        .unwrap();
    let reason = stages.wait().await.to_string();
    assert!(reason.contains(limit), "{reason}");

    let workers = ConsumerSupervisor::builder(always_fails)
        .restart(Restart::Transient)
        .max_restarts(0)
        .max_seconds(Duration::from_secs(2))
        .build()
        .unwrap();
    let source = producer(Counter::new().0).start().unwrap();
    let stage = consumer(workers).start().unwrap();
    stage
        .subscribe_to(&source, SubscribeOptions::new())
        .await
        .unwrap();
    let reason = stage.wait().await.to_string();
    assert!(reason.contains(limit), "{reason}");

    let partitions = PartitionSupervisor::builder(one_partition(), |_| Fragile)
        .max_restarts(0)
        .max_seconds(Duration::from_secs(2))
        .start()
        .unwrap();
    partitions.cast(0_u64, ()).await.unwrap();
    let reason = partitions.wait().await.to_string();
    assert!(reason.contains(limit), "{reason}");
}

//! The consumer supervisor: demand, restarts, producers leaving and shutdown
//! (SEMANTICS.md §5). Every test runs on the paused clock; workers sleep.
//!
//! Every scenario runs twice, once per [`WorkerMode`]: inline workers must keep
//! the exact numbers that task workers do (`in_both_modes!`).

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use demandflow::supervisor::{
    BuildError, ConsumerSupervisor, Restart, Worker, WorkerCounts, WorkerMode, WorkerState,
};
use demandflow::{
    CancelMode, ConfigError, NotRunning, Reason, StartError, SubscribeOptions, consumer, from_iter,
    producer,
};
use parking_lot::Mutex;
use support::Counter;
use tokio::time::{Instant, sleep};

/// Declares the tests of the scenario `$name(mode)`: `$name::task` and
/// `$name::inline`, each on the paused clock.
macro_rules! in_both_modes {
    ($name:ident) => {
        mod $name {
            use super::WorkerMode;

            #[tokio::test(start_paused = true)]
            async fn task() {
                super::$name(WorkerMode::Task).await;
            }

            #[tokio::test(start_paused = true)]
            async fn inline() {
                super::$name(WorkerMode::Inline).await;
            }
        }
    };
}

/// A supervisor of `worker` with the default options, its workers run in `mode`.
fn new_in<W: Worker<u64>>(mode: WorkerMode, worker: W) -> ConsumerSupervisor<u64, W> {
    ConsumerSupervisor::builder(worker)
        .worker_mode(mode)
        .build()
        .unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Waits on the paused clock, 1 ms at a time, until `cond` holds (at most a
/// virtual minute).
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..60_000 {
        if cond() {
            return;
        }
        sleep(ms(1)).await;
    }
    panic!("condition never became true");
}

/// Running workers as the workers themselves count them, with the highest and
/// the lowest count seen (the lowest only after a worker finished).
#[derive(Default)]
struct Gauge {
    now: i64,
    high: i64,
    low: Option<i64>,
}

impl Gauge {
    fn enter(gauge: &Mutex<Gauge>) {
        let mut g = gauge.lock();
        g.now += 1;
        g.high = g.high.max(g.now);
    }

    fn leave(gauge: &Mutex<Gauge>) {
        let mut g = gauge.lock();
        g.now -= 1;
        let now = g.now;
        g.low = Some(g.low.map_or(now, |low| low.min(now)));
    }
}

in_both_modes!(max_3_min_2_asks_2_when_2_finish_so_running_workers_move_between_1_and_3);
async fn max_3_min_2_asks_2_when_2_finish_so_running_workers_move_between_1_and_3(
    mode: WorkerMode,
) {
    let t0 = Instant::now();
    let gauge = Arc::new(Mutex::new(Gauge::default()));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let (g, s) = (gauge.clone(), starts.clone());
    // Event e runs for 100 + e ms, so no two workers finish at the same instant.
    let supervisor = new_in(mode, move |event: u64| {
        let (gauge, starts) = (g.clone(), s.clone());
        async move {
            Gauge::enter(&gauge);
            starts.lock().push((event, t0.elapsed().as_millis() as u64));
            sleep(ms(100 + event)).await;
            Gauge::leave(&gauge);
            Ok::<(), Infallible>(())
        }
    });
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(3).min_demand(2))
        .await
        .unwrap();
    until(|| demands.lock().len() >= 10).await;

    assert_eq!(&demands.lock()[..10], &[3, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    let g = gauge.lock();
    assert_eq!((g.high, g.low), (3, Some(1)));
    // Each pair starts the instant the second of the two workers before it finishes:
    // events 0..=2 at 0 ms finish at 100, 101, 102; 3 and 4 start at 101, and so on.
    let starts = starts.lock();
    assert_eq!(
        &starts[..13],
        &[
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 101),
            (4, 101),
            (5, 204),
            (6, 204),
            (7, 309),
            (8, 309),
            (9, 416),
            (10, 416),
            (11, 525),
            (12, 525),
        ]
    );
}

in_both_modes!(min_demand_0_asks_1_per_finished_worker_and_never_0);
async fn min_demand_0_asks_1_per_finished_worker_and_never_0(mode: WorkerMode) {
    let supervisor = new_in(mode, |event: u64| async move {
        sleep(ms(10 + event)).await;
        Ok::<(), Infallible>(())
    });
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(2).min_demand(0))
        .await
        .unwrap();
    until(|| demands.lock().len() >= 6).await;
    assert_eq!(&demands.lock()[..6], &[2, 1, 1, 1, 1, 1]);
}

in_both_modes!(each_producer_gets_its_own_demand_and_cap);
async fn each_producer_gets_its_own_demand_and_cap(mode: WorkerMode) {
    let gauge = Arc::new(Mutex::new(Gauge::default()));
    let g = gauge.clone();
    let supervisor = new_in(mode, move |event: u64| {
        let gauge = g.clone();
        async move {
            Gauge::enter(&gauge);
            sleep(ms(50 + event)).await;
            Gauge::leave(&gauge);
            Ok::<(), Infallible>(())
        }
    });
    let (a, demands_a) = Counter::new();
    let (b, demands_b) = Counter::new();
    let pa = producer(a).start().unwrap();
    let pb = producer(b).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&pa, SubscribeOptions::new().max_demand(2).min_demand(1))
        .await
        .unwrap();
    c.subscribe_to(&pb, SubscribeOptions::new().max_demand(4).min_demand(2))
        .await
        .unwrap();
    until(|| demands_a.lock().len() >= 5 && demands_b.lock().len() >= 5).await;
    assert_eq!(&demands_a.lock()[..5], &[2, 1, 1, 1, 1]);
    assert_eq!(&demands_b.lock()[..5], &[4, 2, 2, 2, 2]);
    assert_eq!(gauge.lock().high, 6);
}

in_both_modes!(temporary_workers_that_fail_are_not_restarted_and_free_their_slot);
async fn temporary_workers_that_fail_are_not_restarted_and_free_their_slot(mode: WorkerMode) {
    // Event 1 panics, even events return an error, the rest succeed.
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a = attempts.clone();
    let supervisor = new_in(mode, move |event: u64| {
        a.lock().push(event);
        async move {
            sleep(ms(10)).await;
            match event {
                1 => panic!("worker 1 panics"),
                e if e % 2 == 0 => Err(format!("event {e} failed")),
                _ => Ok(()),
            }
        }
    });
    let workers = supervisor.monitor();
    let c = support::fed_by(
        from_iter(0..10_u64),
        supervisor,
        SubscribeOptions::new().max_demand(2).min_demand(1),
    )
    .await;
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(*attempts.lock(), (0..10).collect::<Vec<_>>());
    let stats = workers.stats();
    assert_eq!(
        (
            stats.started,
            stats.succeeded,
            stats.failed,
            stats.restarted
        ),
        (10, 4, 6, 0)
    );
    assert_eq!((stats.running, stats.aborted), (0, 0));
}

in_both_modes!(a_failed_transient_worker_restarts_with_the_same_event_and_generates_no_demand);
async fn a_failed_transient_worker_restarts_with_the_same_event_and_generates_no_demand(
    mode: WorkerMode,
) {
    // Event 5 fails twice (an error, then a panic) and succeeds the third time.
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let tries: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let (a, t) = (attempts.clone(), tries.clone());
    let supervisor = ConsumerSupervisor::builder(move |event: u64| {
        a.lock().push(event);
        let n = {
            let mut tries = t.lock();
            let n = tries.entry(event).or_insert(0);
            *n += 1;
            *n
        };
        async move {
            sleep(ms(10)).await;
            match (event, n) {
                (5, 1) => Err("first try fails"),
                (5, 2) => panic!("second try panics"),
                _ => Ok(()),
            }
        }
    })
    .restart(Restart::Transient)
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(1).min_demand(0))
        .await
        .unwrap();
    until(|| attempts.lock().len() >= 10).await;
    // One worker at a time: the restarts of 5 come before 6 is even asked for.
    assert_eq!(&attempts.lock()[..10], &[0, 1, 2, 3, 4, 5, 5, 5, 6, 7]);
    // 8 asks for events 0..=7: none for the two restarts.
    assert_eq!(&demands.lock()[..8], &[1; 8]);
    let stats = workers.stats();
    assert_eq!((stats.started, stats.restarted, stats.failed), (8, 2, 2));
    assert!(c.is_running());
}

in_both_modes!(a_fourth_restart_within_five_seconds_stops_the_supervisor_with_a_clear_reason);
async fn a_fourth_restart_within_five_seconds_stops_the_supervisor_with_a_clear_reason(
    mode: WorkerMode,
) {
    let supervisor = ConsumerSupervisor::builder(|_: u64| async {
        sleep(ms(100)).await;
        Err("always fails")
    })
    .restart(Restart::Transient)
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(1))
        .await
        .unwrap();
    let reason = c.wait().await;
    assert_eq!(
        reason,
        Reason::error(
            "consumer supervisor reached its restart limit: more than 3 restarts within 5s"
        )
    );
    let stats = workers.stats();
    assert_eq!(
        (stats.started, stats.restarted, stats.failed, stats.running),
        (1, 3, 4, 0)
    );
    assert_eq!(*demands.lock(), vec![1]);
}

in_both_modes!(restarts_spread_wider_than_max_seconds_do_not_stop_the_supervisor);
async fn restarts_spread_wider_than_max_seconds_do_not_stop_the_supervisor(mode: WorkerMode) {
    // Event 0 fails five times, 2 s apart: never more than 3 restarts in any 5 s.
    let tries = Arc::new(Mutex::new(0_u32));
    let t = tries.clone();
    let supervisor = ConsumerSupervisor::builder(move |_: u64| {
        let n = {
            let mut tries = t.lock();
            *tries += 1;
            *tries
        };
        async move {
            sleep(Duration::from_secs(2)).await;
            if n <= 5 { Err("not yet") } else { Ok(()) }
        }
    })
    .restart(Restart::Transient)
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let c = support::fed_by(
        from_iter([0_u64]),
        supervisor,
        SubscribeOptions::new().cancel(CancelMode::Temporary),
    )
    .await;
    until(|| workers.stats().succeeded == 1).await;
    let stats = workers.stats();
    assert_eq!((stats.restarted, stats.failed, stats.running), (5, 5, 0));
    assert!(c.is_running());
}

in_both_modes!(max_restarts_0_stops_at_the_first_failure_of_a_transient_worker);
async fn max_restarts_0_stops_at_the_first_failure_of_a_transient_worker(mode: WorkerMode) {
    let supervisor = ConsumerSupervisor::builder(|_: u64| async { Err("no") })
        .restart(Restart::Transient)
        .max_restarts(0)
        .max_seconds(Duration::from_secs(1))
        .worker_mode(mode)
        .build()
        .unwrap();
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(1))
        .await
        .unwrap();
    assert_eq!(
        c.wait().await,
        Reason::error(
            "consumer supervisor reached its restart limit: more than 0 restarts within 1s"
        )
    );
}

in_both_modes!(workers_keep_running_when_their_producer_goes_away);
async fn workers_keep_running_when_their_producer_goes_away(mode: WorkerMode) {
    let finished = Arc::new(Mutex::new(Vec::new()));
    let f = finished.clone();
    let supervisor = new_in(mode, move |event: u64| {
        let finished = f.clone();
        async move {
            sleep(Duration::from_secs(1)).await;
            finished.lock().push(event);
            Ok::<(), Infallible>(())
        }
    });
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(
        &p,
        SubscribeOptions::new()
            .max_demand(3)
            .min_demand(1)
            .cancel(CancelMode::Temporary),
    )
    .await
    .unwrap();
    until(|| workers.running() == 3).await;
    p.stop(Reason::error("producer crashed")).await.unwrap();

    until(|| finished.lock().len() == 3).await;
    assert_eq!(*finished.lock(), vec![0, 1, 2]);
    assert_eq!(*demands.lock(), vec![3]);
    assert!(c.is_running());
    assert_eq!(workers.stats().succeeded, 3);
}

/// Sets its flag when dropped: proves an aborted worker's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

in_both_modes!(stopping_waits_for_workers_until_the_deadline_then_aborts_the_rest);
async fn stopping_waits_for_workers_until_the_deadline_then_aborts_the_rest(mode: WorkerMode) {
    // Workers run 1 s, 3 s and 10 s; the supervisor waits 2 s.
    let finished = Arc::new(Mutex::new(Vec::new()));
    let dropped: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let (f, d) = (finished.clone(), dropped.clone());
    let supervisor = ConsumerSupervisor::builder(move |event: u64| {
        let finished = f.clone();
        let flag = DropFlag(d[event as usize].clone());
        async move {
            let _flag = flag;
            sleep(Duration::from_secs([1, 3, 10][event as usize])).await;
            finished.lock().push(event);
            Ok::<(), Infallible>(())
        }
    })
    .shutdown(Duration::from_secs(2))
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let c = support::fed_by(
        from_iter(0..3_u64),
        supervisor,
        SubscribeOptions::new().cancel(CancelMode::Temporary),
    )
    .await;
    until(|| workers.running() == 3).await;

    let stopping = Instant::now();
    c.stop(Reason::Shutdown).await.unwrap();
    assert_eq!(stopping.elapsed(), Duration::from_secs(2));
    assert_eq!(*finished.lock(), vec![0]);
    assert!(dropped.iter().all(|d| d.load(Ordering::SeqCst)));
    let stats = workers.stats();
    assert_eq!(
        (stats.started, stats.succeeded, stats.aborted, stats.running),
        (3, 1, 2, 0)
    );
}

in_both_modes!(stopping_with_no_worker_left_past_the_deadline_aborts_none);
async fn stopping_with_no_worker_left_past_the_deadline_aborts_none(mode: WorkerMode) {
    let supervisor = new_in(mode, |_: u64| async {
        sleep(Duration::from_secs(1)).await;
        Ok::<(), Infallible>(())
    });
    let workers = supervisor.monitor();
    let c = support::fed_by(
        from_iter(0..4_u64),
        supervisor,
        SubscribeOptions::new().cancel(CancelMode::Temporary),
    )
    .await;
    until(|| workers.running() == 4).await;
    let stopping = Instant::now();
    c.stop(Reason::Shutdown).await.unwrap();
    assert!(stopping.elapsed() <= Duration::from_secs(1));
    let stats = workers.stats();
    assert_eq!((stats.succeeded, stats.aborted), (4, 0));
}

/// A worker whose start panics for odd events: those fail to start.
struct PicksEven(Arc<Mutex<Vec<u64>>>);

impl Worker<u64> for PicksEven {
    type Error = Infallible;

    fn start(&self, event: u64) -> impl Future<Output = Result<(), Infallible>> + Send + 'static {
        assert!(event % 2 == 0, "odd event {event}");
        let done = self.0.clone();
        async move {
            sleep(Duration::from_secs(1)).await;
            done.lock().push(event);
            Ok(())
        }
    }
}

in_both_modes!(a_worker_that_fails_to_start_frees_its_slot_at_once);
async fn a_worker_that_fails_to_start_frees_its_slot_at_once(mode: WorkerMode) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let supervisor = new_in(mode, PicksEven(done.clone()));
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(2).min_demand(1))
        .await
        .unwrap();
    // 0 starts, 1 fails to start and is asked again at once: 2 starts.
    until(|| workers.running() == 2).await;
    assert_eq!(*demands.lock(), vec![2, 1]);
    let stats = workers.stats();
    assert_eq!(
        (stats.running, stats.started, stats.failed_to_start),
        (2, 2, 1)
    );
    assert_eq!((stats.succeeded, stats.failed, stats.restarted), (0, 0, 0));
}

#[test]
fn permanent_workers_are_a_build_error() {
    let err = ConsumerSupervisor::builder(|_: u64| async { Ok::<(), Infallible>(()) })
        .restart(Restart::Permanent)
        .build()
        .unwrap_err();
    let BuildError::Start(StartError::Config(ConfigError::Invalid { option, message })) = &err
    else {
        panic!("expected a configuration error, got {err:?}");
    };
    assert_eq!(*option, "restart");
    assert!(message.starts_with("consumer supervisor workers cannot be permanent"));
    assert_eq!(err.to_string(), "invalid configuration");
}

#[test]
fn zero_max_seconds_is_a_build_error() {
    let err = ConsumerSupervisor::builder(|_: u64| async { Ok::<(), Infallible>(()) })
        .max_seconds(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Start(StartError::Config(ConfigError::Zero {
                option: "max_seconds"
            }))
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "invalid configuration");
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), "max_seconds must be at least 1");
}

/// A transient worker whose every event fails on its first try (a panic for
/// event 1, an error for the others) after `delay(event)`, and is done on the
/// second; `done` records the events processed.
fn fails_once(
    delay: impl Fn(u64) -> Duration + Send + Sync + 'static,
    done: Arc<Mutex<Vec<u64>>>,
) -> impl Worker<u64> {
    let tries: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    move |event: u64| {
        let first = {
            let mut tries = tries.lock();
            let n = tries.entry(event).or_insert(0);
            *n += 1;
            *n == 1
        };
        let (wait, done) = (delay(event), done.clone());
        async move {
            sleep(wait).await;
            match (first, event) {
                (true, 1) => panic!("first try panics"),
                (true, _) => Err("first try fails"),
                (false, _) => {
                    done.lock().push(event);
                    Ok(())
                }
            }
        }
    }
}

in_both_modes!(transient_workers_that_fail_while_a_finite_source_stops_the_stage_lose_no_event);
async fn transient_workers_that_fail_while_a_finite_source_stops_the_stage_lose_no_event(
    mode: WorkerMode,
) {
    // A finite source on a permanent subscription: the stage stops as soon as
    // the source has ended, and the workers' first tries fail after that, while
    // the stage is stopping. Every schedule below, from one worker at a time to
    // every event at once, must still process every event exactly once.
    const EVENTS: u64 = 20;
    for max_demand in [1, 2, 3, 5, 8, 30] {
        for spread in [0, 1, 3, 7] {
            let done = Arc::new(Mutex::new(Vec::new()));
            let delay = move |event: u64| ms(10 + (event * spread) % 11);
            let supervisor = ConsumerSupervisor::builder(fails_once(delay, done.clone()))
                .restart(Restart::Transient)
                .max_restarts(1_000)
                .worker_mode(mode)
                .build()
                .unwrap();
            let workers = supervisor.monitor();
            let c = support::fed_by(
                from_iter(0..EVENTS),
                supervisor,
                SubscribeOptions::new().max_demand(max_demand),
            )
            .await;
            assert_eq!(c.wait().await, Reason::Normal);

            let mut done = done.lock().clone();
            done.sort_unstable();
            let schedule = format!("max_demand {max_demand}, spread {spread}");
            assert_eq!(done, (0..EVENTS).collect::<Vec<_>>(), "{schedule}");
            let stats = workers.stats();
            assert_eq!(
                (
                    stats.started,
                    stats.restarted,
                    stats.failed,
                    stats.succeeded
                ),
                (EVENTS, EVENTS, EVENTS, EVENTS),
                "{schedule}"
            );
            assert_eq!(
                (stats.abandoned, stats.aborted, stats.running),
                (0, 0, 0),
                "{schedule}"
            );
        }
    }
}

in_both_modes!(failures_past_the_restart_limit_while_stopping_are_counted_as_abandoned);
async fn failures_past_the_restart_limit_while_stopping_are_counted_as_abandoned(mode: WorkerMode) {
    // Every try fails; the stage is stopping when the first ones do. Two
    // restarts are allowed, so those two run again and fail again: all five
    // events are given up on, and every one of them is counted.
    let supervisor = ConsumerSupervisor::builder(|_: u64| async {
        sleep(ms(10)).await;
        Err("always fails")
    })
    .restart(Restart::Transient)
    .max_restarts(2)
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let c = support::fed_by(
        from_iter(0..5_u64),
        supervisor,
        SubscribeOptions::new().max_demand(10),
    )
    .await;
    c.wait().await;
    let stats = workers.stats();
    assert_eq!(
        (
            stats.started,
            stats.restarted,
            stats.failed,
            stats.abandoned
        ),
        (5, 2, 7, 5)
    );
    // Each event ended exactly once, and each run too.
    assert_eq!(
        stats.started,
        stats.succeeded + stats.abandoned + stats.aborted
    );
    assert_eq!(
        stats.started + stats.restarted,
        stats.succeeded + stats.failed + stats.aborted
    );
}

in_both_modes!(a_transient_worker_keeps_restarting_while_stopping_until_the_deadline_aborts_it);
async fn a_transient_worker_keeps_restarting_while_stopping_until_the_deadline_aborts_it(
    mode: WorkerMode,
) {
    // Each try fails after 1 s; the stage waits 2.5 s: tries at 0 s, 1 s and
    // 2 s, the last one aborted at the deadline.
    let supervisor = ConsumerSupervisor::builder(|_: u64| async {
        sleep(Duration::from_secs(1)).await;
        Err("not yet")
    })
    .restart(Restart::Transient)
    .shutdown(Duration::from_millis(2_500))
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let c = support::fed_by(from_iter([0_u64]), supervisor, SubscribeOptions::new()).await;
    c.wait().await;
    let stats = workers.stats();
    assert_eq!(
        (
            stats.restarted,
            stats.failed,
            stats.aborted,
            stats.abandoned
        ),
        (2, 2, 1, 0)
    );
    assert_eq!(
        stats.started,
        stats.succeeded + stats.abandoned + stats.aborted
    );
}

/// A transient worker that runs until aborted; event 1 fails once first.
fn long_runs(dropped: Arc<Mutex<Vec<u64>>>) -> impl Worker<u64> {
    let failed_once = Arc::new(AtomicBool::new(false));
    move |event: u64| {
        let fail = event == 1 && !failed_once.swap(true, Ordering::SeqCst);
        let dropped = dropped.clone();
        async move {
            let _flag = PushOnDrop(event, dropped);
            if fail {
                return Err("fails once");
            }
            sleep(Duration::from_secs(3_600)).await;
            Ok(())
        }
    }
}

/// Records its event when dropped: when the worker's run ends or is aborted.
struct PushOnDrop(u64, Arc<Mutex<Vec<u64>>>);

impl Drop for PushOnDrop {
    fn drop(&mut self) {
        self.1.lock().push(self.0);
    }
}

in_both_modes!(the_worker_view_lists_and_counts_workers_with_their_restarts);
async fn the_worker_view_lists_and_counts_workers_with_their_restarts(mode: WorkerMode) {
    let supervisor = ConsumerSupervisor::builder(long_runs(Arc::default()))
        .restart(Restart::Transient)
        .worker_mode(mode)
        .build()
        .unwrap();
    let workers = supervisor.monitor();
    assert_eq!(workers.workers().await, Err(NotRunning));
    let c = support::fed_by(
        from_iter(0..3_u64),
        supervisor,
        SubscribeOptions::new().cancel(CancelMode::Temporary),
    )
    .await;
    until(|| workers.stats().restarted == 1 && workers.running() == 3).await;

    let list = workers.workers().await.unwrap();
    let ids: Vec<_> = list.iter().map(|w| w.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    assert_eq!(
        list.iter()
            .map(|w| (w.state, w.restarts))
            .collect::<Vec<_>>(),
        vec![
            (WorkerState::Running, 0),
            (WorkerState::Running, 1),
            (WorkerState::Running, 0)
        ]
    );
    let counts = workers.count_workers().await.unwrap();
    assert_eq!((counts.running, counts.exited, counts.total()), (3, 0, 3));

    c.stop(Reason::Shutdown).await.unwrap();
    assert_eq!(workers.count_workers().await, Err(NotRunning));
    assert_eq!(WorkerCounts::default().total(), 0);
}

in_both_modes!(terminating_a_worker_aborts_its_run_and_adds_one_to_pending_demand);
async fn terminating_a_worker_aborts_its_run_and_adds_one_to_pending_demand(mode: WorkerMode) {
    let dropped = Arc::new(Mutex::new(Vec::new()));
    // Transient, yet a terminated worker is not restarted.
    let supervisor = ConsumerSupervisor::builder(long_runs(dropped.clone()))
        .restart(Restart::Transient)
        .worker_mode(mode)
        .build()
        .unwrap();
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    // max 4, min 2: one ended worker is pending, a second makes an ask of 2.
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(4).min_demand(2))
        .await
        .unwrap();
    until(|| workers.stats().restarted == 1 && workers.running() == 4).await;
    let list = workers.workers().await.unwrap();
    let (first, second) = (list[0].id, list[2].id);

    assert_eq!(workers.terminate_worker(first).await, Ok(true));
    assert_eq!(*dropped.lock(), vec![1, 0], "event 1's failed try, then 0");
    assert_eq!(workers.running(), 3);
    assert_eq!(*demands.lock(), vec![4], "1 pending: below min_demand 2");
    // Gone: a second request finds nothing.
    assert_eq!(workers.terminate_worker(first).await, Ok(false));

    assert_eq!(workers.terminate_worker(second).await, Ok(true));
    until(|| workers.running() == 4).await;
    assert_eq!(*demands.lock(), vec![4, 2]);
    let stats = workers.stats();
    assert_eq!(
        (
            stats.started,
            stats.aborted,
            stats.restarted,
            stats.succeeded
        ),
        (6, 2, 1, 0)
    );
    let ids: Vec<_> = workers
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert!(!ids.contains(&first) && !ids.contains(&second), "{ids:?}");
    assert!(c.is_running());
}

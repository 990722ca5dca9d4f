//! The consumer supervisor's inline workers ([`WorkerMode::Inline`]): where they
//! run, the exact demand of workers that end in their first poll, panics caught
//! at any poll, a worker that keeps waking itself, and a property test that
//! both modes end every schedule with the same outcome. The scenarios shared
//! with task workers run in both modes in `supervisor_consumer.rs`.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use demandflow::supervisor::{ConsumerSupervisor, Restart, Worker, WorkerMode, WorkerStats};
use demandflow::{
    CancelMode, Context, Producer, Reason, SubscribeOptions, consumer, from_iter, producer,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use support::{Counter, eventually};
use tokio::time::sleep;

fn inline<W: Worker<u64>>(worker: W) -> ConsumerSupervisor<u64, W> {
    ConsumerSupervisor::builder(worker)
        .worker_mode(WorkerMode::Inline)
        .build()
        .unwrap()
}

/// The ids of the tasks the workers of `mode` ran on, for 0..20 at max_demand 5.
async fn task_ids(mode: WorkerMode) -> (BTreeSet<tokio::task::Id>, WorkerStats) {
    let ids = Arc::new(Mutex::new(BTreeSet::new()));
    let seen = ids.clone();
    let supervisor = ConsumerSupervisor::builder(move |_: u64| {
        let seen = seen.clone();
        async move {
            seen.lock().insert(tokio::task::id());
            sleep(Duration::from_millis(1)).await;
            Ok::<(), Infallible>(())
        }
    })
    .worker_mode(mode)
    .build()
    .unwrap();
    let workers = supervisor.monitor();
    let c = support::fed_by(
        from_iter(0..20_u64),
        supervisor,
        SubscribeOptions::new().max_demand(5),
    )
    .await;
    assert_eq!(c.wait().await, Reason::Normal);
    let ids = ids.lock().clone();
    (ids, workers.stats())
}

#[tokio::test(start_paused = true)]
async fn inline_workers_all_run_on_the_supervisors_task_and_task_workers_each_on_their_own() {
    let (inline_ids, inline_stats) = task_ids(WorkerMode::Inline).await;
    let (task_ids, task_stats) = task_ids(WorkerMode::Task).await;
    assert_eq!(inline_ids.len(), 1, "one task: the supervisor's");
    assert_eq!(task_ids.len(), 20, "a task per worker");
    assert_eq!(inline_stats, task_stats);
    assert_eq!((inline_stats.started, inline_stats.succeeded), (20, 20));
}

#[tokio::test(start_paused = true)]
async fn workers_that_end_in_their_first_poll_ask_exactly_as_finished_workers_do() {
    // No await at all: every worker ends the moment it is polled, in the same
    // callback that started it. The asks are still max 3 then min 2 at a time.
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = ran.clone();
    let supervisor = inline(move |event: u64| {
        r.lock().push(event);
        async { Ok::<(), Infallible>(()) }
    });
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(3).min_demand(2))
        .await
        .unwrap();
    eventually(|| demands.lock().len() >= 20).await;
    c.stop(Reason::Shutdown).await.unwrap();

    let demands = demands.lock().clone();
    assert_eq!(demands[0], 3);
    assert!(demands[1..].iter().all(|&n| n == 2), "{demands:?}");
    // Every event asked for and delivered ran once, in order, and nothing
    // runs past the stop.
    let stats = workers.stats();
    let ran = ran.lock().clone();
    assert_eq!(ran, (0..stats.started).collect::<Vec<_>>());
    assert_eq!(
        (stats.succeeded, stats.running, stats.aborted),
        (stats.started, 0, 0)
    );
    // The supervisor asks only for slots that came free: what it asked and was
    // not started yet is max_demand 3 less the ended workers pending below
    // min_demand 2 (0 or 1).
    let asked: u64 = demands.iter().sum();
    let outstanding = asked - stats.started;
    assert!(
        outstanding == 3 || outstanding == 2,
        "{asked} asked, {stats:?}"
    );
}

/// Panics in its first poll for event 1, after an await for event 3; errors
/// for event 5; succeeds otherwise.
async fn panics_at_any_poll(event: u64) -> Result<(), String> {
    match event {
        1 => panic!("planned panic in the first poll"),
        3 => {
            sleep(Duration::from_millis(5)).await;
            panic!("planned panic after an await")
        }
        5 => Err(format!("event {event} failed")),
        _ => {
            tokio::task::yield_now().await;
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_inline_worker_that_panics_in_any_poll_fails_alone_and_frees_its_slot() {
    silence_planned_panics();
    let supervisor = inline(panics_at_any_poll);
    let workers = supervisor.monitor();
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(2).min_demand(1))
        .await
        .unwrap();
    eventually(|| workers.stats().started >= 10).await;
    assert!(c.is_running(), "a worker's panic is not the supervisor's");
    c.stop(Reason::Shutdown).await.unwrap();
    let stats = workers.stats();
    assert_eq!(stats.failed, 3, "{stats:?}");
    assert_eq!(stats.succeeded + stats.failed, stats.started);
    // Every ended worker, failed or not, gave its slot back: one ask of 1 each.
    assert_eq!(demands.lock()[0], 2);
    assert!(demands.lock()[1..].iter().all(|&n| n == 1));
}

#[tokio::test]
async fn an_inline_worker_that_keeps_waking_itself_does_not_hold_up_the_others() {
    // Worker 0 yields until told to stop; the others, and the supervisor's own
    // messages, still get their turns: FuturesUnordered hands control back
    // after one pass over the runs, and the doorbell brings the supervisor back.
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let supervisor = inline(move |event: u64| {
        let release = r.clone();
        async move {
            while event == 0 && !release.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            Ok::<(), Infallible>(())
        }
    });
    let workers = supervisor.monitor();
    let p = producer(from_iter(0..50_u64)).start().unwrap();
    let c = consumer(supervisor).start().unwrap();
    c.subscribe_to(
        &p,
        SubscribeOptions::new()
            .max_demand(4)
            .min_demand(1)
            .cancel(CancelMode::Temporary),
    )
    .await
    .unwrap();
    eventually(|| workers.stats().succeeded == 49).await;
    let listed = workers.workers().await.unwrap();
    assert_eq!(listed.len(), 1, "only the yielding worker is left");
    release.store(true, Ordering::SeqCst);
    eventually(|| workers.stats().succeeded == 50).await;
    assert!(c.is_running());
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_does_not_await_runs_to_its_end_before_its_sibling_starts() {
    // The trade-off of inline workers: they take turns on one task. A worker
    // that computes without awaiting holds its siblings until it ends.
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let supervisor = inline(move |event: u64| {
        let log = l.clone();
        async move {
            log.lock().push((event, "begins"));
            let mut x = event;
            for i in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            log.lock().push((event, "ends"));
            Ok::<(), Infallible>(())
        }
    });
    let c = support::fed_by(
        from_iter(0..3_u64),
        supervisor,
        SubscribeOptions::new().max_demand(3),
    )
    .await;
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(
        *log.lock(),
        vec![
            (0, "begins"),
            (0, "ends"),
            (1, "begins"),
            (1, "ends"),
            (2, "begins"),
            (2, "ends")
        ]
    );
}

/// Keeps the planned panics of these tests off stderr, and every other panic
/// (a failed assertion) on it.
fn silence_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("planned panic"));
            if !planned {
                default(info);
            }
        }));
    });
}

/// What one event's worker does on each try.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Succeeds,
    ReturnsErr,
    Panics,
    /// Its `start` panics: it fails to start.
    PanicsInStart,
    /// Fails (an error) on its first try, succeeds on the next.
    FailsOnce,
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        4 => Just(Plan::Succeeds),
        1 => Just(Plan::ReturnsErr),
        1 => Just(Plan::Panics),
        1 => Just(Plan::PanicsInStart),
        2 => Just(Plan::FailsOnce),
    ]
}

/// A worker following each event's plan after `delay` ms (0: no await at all).
/// Unless `fail_always`, a failing plan fails only its first try.
struct Planned {
    plans: Arc<Vec<(Plan, u64)>>,
    fail_always: bool,
    tries: Arc<Mutex<HashMap<u64, u32>>>,
    done: Arc<Mutex<Vec<u64>>>,
}

impl Worker<u64> for Planned {
    type Error = &'static str;

    fn start(&self, event: u64) -> impl Future<Output = Result<(), &'static str>> + Send + 'static {
        let (plan, delay) = self.plans[event as usize];
        let try_ = {
            let mut tries = self.tries.lock();
            let n = tries.entry(event).or_insert(0);
            *n += 1;
            *n
        };
        if let Plan::PanicsInStart = plan {
            panic!("planned panic in start");
        }
        let (done, fail_always) = (self.done.clone(), self.fail_always);
        async move {
            if delay > 0 {
                sleep(Duration::from_millis(delay)).await;
            }
            let fails = try_ == 1 || fail_always;
            match plan {
                Plan::ReturnsErr if fails => Err("planned error"),
                Plan::FailsOnce if try_ == 1 => Err("planned error"),
                Plan::Panics if fails => panic!("planned panic in the run"),
                _ => {
                    done.lock().push(event);
                    Ok(())
                }
            }
        }
    }
}

/// What a schedule ended with: the reason, the counts, the asks, and the
/// events processed and tried.
type Outcome = (Reason, WorkerStats, Vec<u64>, Vec<u64>, Vec<(u64, u32)>);

/// Emits `0..end` as asked, records every ask, and ends after its last event.
struct Finite {
    next: u64,
    end: u64,
    demands: Arc<Mutex<Vec<u64>>>,
}

impl Producer for Finite {
    type Event = u64;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
        self.demands.lock().push(demand);
        let to = (self.next + demand).min(self.end);
        ctx.emit_all(self.next..to);
        self.next = to;
        if self.next == self.end {
            ctx.stop_after_buffered(Reason::Normal);
        }
    }
}

fn run_schedule(
    mode: WorkerMode,
    plans: &[(Plan, u64)],
    max_demand: u64,
    min_demand: u64,
    restart: Restart,
    max_restarts: usize,
) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let done = Arc::new(Mutex::new(Vec::new()));
        let tries = Arc::new(Mutex::new(HashMap::new()));
        let worker = Planned {
            plans: Arc::new(plans.to_vec()),
            tries: tries.clone(),
            done: done.clone(),
            // Workers that always fail reach the restart limit; which events
            // it abandons is then a matter of order unless one runs at a time.
            fail_always: restart == Restart::Temporary || max_demand == 1,
        };
        let supervisor = ConsumerSupervisor::builder(worker)
            .worker_mode(mode)
            .restart(restart)
            .max_restarts(max_restarts)
            .build()
            .unwrap();
        let workers = supervisor.monitor();
        let demands = Arc::new(Mutex::new(Vec::new()));
        let source = Finite {
            next: 0,
            end: plans.len() as u64,
            demands: demands.clone(),
        };
        let p = producer(source).start().unwrap();
        let c = consumer(supervisor).start().unwrap();
        // Temporary: the source ending does not stop the supervisor. A
        // failure and the source's end may reach the supervisor in either
        // order, and the mode changes how soon it sees a failure; whether the
        // restart limit then stops it (an error) or it is already stopping
        // (normal) must not depend on that race.
        c.subscribe_to(
            &p,
            SubscribeOptions::new()
                .max_demand(max_demand)
                .min_demand(min_demand)
                .cancel(CancelMode::Temporary),
        )
        .await
        .unwrap();
        let events = plans.len() as u64;
        loop {
            let stats = workers.stats();
            let settled = stats.started + stats.failed_to_start >= events && stats.running == 0;
            if settled || !c.is_running() {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        // Gone already if the restart limit stopped it.
        let _ = c.stop(Reason::Shutdown).await;
        let reason = c.wait().await;
        let mut done = done.lock().clone();
        done.sort_unstable();
        let mut tries: Vec<(u64, u32)> = tries.lock().iter().map(|(&e, &n)| (e, n)).collect();
        tries.sort_unstable();
        let demands = demands.lock().clone();
        (reason, workers.stats(), demands, done, tries)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every schedule ends the same in both modes: the same reason, counts,
    /// asks, events processed and tries per event. With one worker at a time
    /// the restart limit is in play too; with more, transient workers fail only
    /// once (several workers failing at one instant may be restarted in another
    /// order, which changes which events a limit abandons).
    #[test]
    fn inline_and_task_workers_end_every_schedule_alike(
        plans in proptest::collection::vec((plan(), 0_u64..4), 1..25),
        max_demand in 1_u64..6,
        min_share in 0_u64..6,
        transient in any::<bool>(),
        limit in 0_usize..4,
    ) {
        silence_planned_panics();
        let min_demand = min_share % max_demand;
        let restart = if transient { Restart::Transient } else { Restart::Temporary };
        let max_restarts = if max_demand == 1 { limit } else { 1_000 };
        let task = run_schedule(WorkerMode::Task, &plans, max_demand, min_demand, restart, max_restarts);
        let inline = run_schedule(WorkerMode::Inline, &plans, max_demand, min_demand, restart, max_restarts);
        prop_assert_eq!(&inline, &task);
        // And the schedule itself is sound: every run ended once.
        let stats = inline.1;
        prop_assert_eq!(
            stats.started + stats.restarted,
            stats.succeeded + stats.failed + stats.aborted
        );
    }
}

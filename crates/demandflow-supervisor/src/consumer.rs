//! The consumer supervisor: one worker task per event (SEMANTICS.md §5).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use demandflow_core::{
    AutoDemand, CancelReason, ConfigError, DEFAULT_MAX_DEMAND, Reason, SubscriptionId,
};
use demandflow_runtime::{
    Consumer, ConsumerContext, DemandMode, Info, InfoSender, catch_call, catch_panic,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::intensity::{Intensity, IntensityLimit, intensity_setters};
use crate::worker_monitor::{Counters, Request, WorkerId, WorkerInfo, WorkerMonitor, WorkerState};
use crate::{BuildError, Restart};

const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Workers started before the supervisor yields to let them run: a large batch
/// started in one go overflows the tokio worker's local run queue (256 tasks)
/// into the shared one, which costs about 7% at max_demand 1000.
const SPAWN_CHUNK: usize = 64;

/// The work a [`ConsumerSupervisor`] starts for each event.
///
/// Any `Fn(T) -> impl Future<Output = Result<(), E>>` closure is a worker, so
/// most code never names this trait; implement it for a type when the worker
/// carries state such as a client or a pool.
///
/// What the supervisor guarantees you:
///
/// - [`start`](Worker::start) is called once per event, on the supervisor's
///   task, and the future it returns runs on a task of its own (so workers run
///   concurrently, up to the subscription's `max_demand` per producer), or, in
///   [`WorkerMode::Inline`], is polled by the supervisor's task among the other
///   workers.
/// - Under [`Restart::Transient`], a run that returns `Err` or panics is started
///   again with a clone of the same event.
///
/// What you guarantee back:
///
/// - `start` returns quickly: it runs on the supervisor's task, and the
///   supervisor handles nothing else meanwhile. Do the work in the future.
/// - A panic in `start` (before the future exists) means the worker *failed to
///   start*: it is logged and counted, never restarted, and its slot is freed at
///   once, so it counts towards the next ask like a finished worker.
///
/// # Examples
///
/// ```
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use demandflow_supervisor::Worker;
///
/// /// Adds every event to a shared total.
/// struct Adder(Arc<AtomicU64>);
///
/// impl Worker<u64> for Adder {
///     type Error = std::convert::Infallible;
///
///     fn start(&self, event: u64) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
///         let total = self.0.clone(); // the future outlives `&self`: take what it needs
///         async move {
///             total.fetch_add(event, Ordering::Relaxed);
///             Ok(())
///         }
///     }
/// }
/// # let total = Arc::new(AtomicU64::new(0));
/// # let _ = Adder(total).start(1);
/// ```
pub trait Worker<T>: Send + Sync + 'static {
    /// What a failed run returns; logged with `Debug`.
    type Error: fmt::Debug + Send + 'static;

    /// Starts the work for `event`; the returned future is the worker's run.
    fn start(&self, event: T) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static;
}

impl<T, F, Fut, E> Worker<T> for F
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Debug + Send + 'static,
{
    type Error = E;

    fn start(&self, event: T) -> impl Future<Output = Result<(), E>> + Send + 'static {
        self(event)
    }
}

/// Configures a [`ConsumerSupervisor`]; create one with [`ConsumerSupervisor::builder`].
///
/// | option | default |
/// |---|---|
/// | [`restart`](Self::restart) | [`Restart::Temporary`] |
/// | [`max_restarts`](Self::max_restarts) | 3 |
/// | [`max_seconds`](Self::max_seconds) | 5 s |
/// | [`shutdown`](Self::shutdown) | 5 s |
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConsumerSupervisorBuilder<T, W> {
    worker: W,
    restart: Restart,
    intensity: IntensityLimit,
    shutdown: Duration,
    mode: WorkerMode,
    _event: PhantomData<fn(T)>,
}

/// Where a [`ConsumerSupervisor`]'s workers run; set with
/// [`ConsumerSupervisorBuilder::worker_mode`].
///
/// Both modes keep SEMANTICS.md §5 exactly: the same demand (asks as workers
/// finish), restarts, restart limit, panic handling, shutdown deadline and
/// counts in [`WorkerStats`](crate::WorkerStats). They differ in what a worker
/// costs and in who waits for whom:
///
/// | | [`Task`](Self::Task) (default) | [`Inline`](Self::Inline) |
/// |---|---|---|
/// | a worker is | a tokio task | a future in the supervisor's own set |
/// | cost per worker | a spawn, a wake-up of another thread, a report back | two allocations and a poll |
/// | workers run | in parallel, on every runtime thread | one at a time, on the supervisor's task |
/// | a worker that blocks or computes for long | delays nobody else | delays its siblings *and* the supervisor |
///
/// Choose [`Inline`](Self::Inline) when workers are short or mostly wait
/// (I/O, timers, channels): a run that awaits costs the others nothing, and
/// starting one is several times cheaper than spawning a task (see the
/// `consumer_supervisor inline` row of the throughput bench). Keep
/// [`Task`](Self::Task) when a worker computes for more than a few
/// microseconds between awaits or calls blocking code, or when the workers
/// should use more than one core: inline, such a worker holds up every other
/// worker and the supervisor's demand until it awaits. A worker that needs a
/// thread of its own can still spawn it from its future in either mode.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use demandflow_runtime::{Reason, SubscribeOptions, consumer, from_iter, producer};
/// use demandflow_supervisor::{ConsumerSupervisor, WorkerMode};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Workers that mostly wait (here a timer, in life a request): inline, up to
/// // 100 of them wait at once on the supervisor's task, and none is a task.
/// let supervisor = ConsumerSupervisor::builder(|n: u64| async move {
///     tokio::time::sleep(Duration::from_millis(n % 3)).await;
///     Ok::<(), Infallible>(())
/// })
/// .worker_mode(WorkerMode::Inline)
/// .build()
/// .unwrap();
/// let workers = supervisor.monitor();
///
/// let requests = producer(from_iter(0..1_000_u64)).start().unwrap();
/// let stage = consumer(supervisor).start().unwrap();
/// stage.subscribe_to(&requests, SubscribeOptions::new().max_demand(100)).await.unwrap();
/// assert_eq!(stage.wait().await, Reason::Normal);
/// let stats = workers.stats();
/// assert_eq!((stats.started, stats.succeeded, stats.aborted), (1_000, 1_000, 0));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerMode {
    /// Each run is spawned as a tokio task of its own (the default).
    #[default]
    Task,
    /// Each run is a future polled by the supervisor's own task, in a
    /// `FuturesUnordered` set; a panic in any poll is caught and handled like a
    /// panicking task's. Runs take turns: see the table above.
    Inline,
}

impl<T: Clone + Send + 'static, W: Worker<T>> ConsumerSupervisorBuilder<T, W> {
    /// Sets whether failed runs are restarted: [`Restart::Temporary`] (never,
    /// the default here) or [`Restart::Transient`] (with a clone of the same
    /// event, keeping the worker's slot, so a restarting worker generates no
    /// demand). A run fails when its future returns `Err` or panics; a worker
    /// that fails to start is never restarted. [`Restart::Permanent`] is refused
    /// by [`build`](Self::build): a worker that finished its event has nothing
    /// left to do.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    intensity_setters!();

    /// Sets how long a stopping supervisor waits for running workers (and
    /// restarts failed transient ones) before it aborts them. Zero aborts at once.
    pub fn shutdown(mut self, deadline: Duration) -> Self {
        self.shutdown = deadline;
        self
    }

    /// Sets where workers run: each on a task of its own ([`WorkerMode::Task`],
    /// the default) or polled by the supervisor's task ([`WorkerMode::Inline`],
    /// cheaper per worker, but a worker that blocks delays its siblings).
    pub fn worker_mode(mut self, mode: WorkerMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks the options and returns the supervisor, ready to be started with
    /// [`demandflow_runtime::consumer`].
    ///
    /// # Errors
    ///
    /// [`BuildError::Start`] with a [`ConfigError::Invalid`] for option
    /// `"restart"` when it is [`Restart::Permanent`], and with a
    /// [`ConfigError::Zero`] for option `"max_seconds"` when that is zero.
    pub fn build(self) -> Result<ConsumerSupervisor<T, W>, BuildError> {
        if self.restart == Restart::Permanent {
            return Err(ConfigError::Invalid {
                option: "restart",
                message: "consumer supervisor workers cannot be permanent: a worker that \
                          finished its event has nothing left to do"
                    .into(),
            }
            .into());
        }
        self.intensity.check()?;
        Ok(self.assemble())
    }

    /// The supervisor, without checking the options.
    fn assemble(self) -> ConsumerSupervisor<T, W> {
        ConsumerSupervisor {
            worker: self.worker,
            restart: self.restart,
            intensity: self.intensity.window(),
            shutdown: self.shutdown,
            mode: self.mode,
            inline: Inline::default(),
            producers: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            shared: None,
            finished: Vec::new(),
            counters: Arc::default(),
            next_id: 0,
            stopping: false,
            _event: PhantomData,
        }
    }
}

impl<T, W> fmt::Debug for ConsumerSupervisorBuilder<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSupervisorBuilder")
            .field("restart", &self.restart)
            .field("intensity", &self.intensity)
            .field("shutdown", &self.shutdown)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// A consumer stage that starts one worker task per event (GenStage's
/// `ConsumerSupervisor`, SEMANTICS.md §5).
///
/// Start it like any consumer, with [`demandflow_runtime::consumer`], and
/// subscribe it to one or more producers. Per producer it asks `max_demand`
/// events on subscribe, so at most `max_demand` workers run for that producer.
/// Each worker that finishes (or fails to start) adds 1 to that producer's
/// pending count; when the count reaches `min_demand` the supervisor asks that
/// many events and the count goes back to 0 (it never asks 0). With
/// `max_demand` 3 and `min_demand` 2 and a producer that always has events, 3
/// workers start; when 2 have finished it asks 2, so the number running moves
/// between 1 and 3.
///
/// - **Failures**: a run fails when its future returns `Err` or panics; it is
///   logged. [`Restart::Temporary`] workers (the default) are not restarted;
///   [`Restart::Transient`] ones are restarted with a clone of the same event
///   and keep their slot, so a restarting worker generates no demand.
/// - **Restart intensity**: more than `max_restarts` restarts within
///   `max_seconds` stop the supervisor with an error [`Reason`] that says so.
///   The event whose restart was refused, and those of transient workers that
///   fail after it, are counted in [`WorkerStats::abandoned`](crate::WorkerStats::abandoned).
/// - **Producers leaving**: a worker keeps running when its producer cancels
///   or stops; it just asks for nothing when it finishes. Whether the
///   supervisor itself keeps running is the subscription's cancel mode
///   (SEMANTICS.md §6).
/// - **Shutdown**: when the stage stops, for any reason, it waits up to the
///   `shutdown` deadline for running workers, then aborts the rest. It logs how
///   many it aborted and counts them in [`WorkerStats::aborted`](crate::WorkerStats::aborted).
///   Until the deadline a failed transient worker is still restarted (the
///   restart limit still applies), so a finite source ending does not lose the
///   events of workers that fail meanwhile; an event given up on is counted in
///   [`WorkerStats::abandoned`](crate::WorkerStats::abandoned) and logged as an
///   error. It asks for nothing more while it stops.
/// - **Per-worker view**: [`WorkerMonitor`] lists the workers, counts them by
///   state and stops one ([`WorkerMonitor::terminate_worker`]).
/// - **Where workers run**: each on a tokio task of its own by default, or
///   polled by the supervisor's own task with [`WorkerMode::Inline`], which is
///   cheaper per worker but lets a worker that blocks or computes for long
///   delay its siblings (see [`WorkerMode`]).
///
/// The runtime must have its timer enabled (`#[tokio::main]` and
/// `#[tokio::test]` do): restarts are timed and the shutdown deadline is a timer.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use demandflow_runtime::{Reason, SubscribeOptions, consumer, from_iter, producer};
/// use demandflow_supervisor::ConsumerSupervisor;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let total = Arc::new(AtomicU64::new(0));
/// let sum = total.clone();
/// let supervisor = ConsumerSupervisor::new(move |n: u64| {
///     let sum = sum.clone();
///     async move {
///         sum.fetch_add(n, Ordering::Relaxed);
///         Ok::<(), std::convert::Infallible>(())
///     }
/// });
/// let workers = supervisor.monitor();
///
/// let numbers = producer(from_iter(1..=100)).start().unwrap();
/// let stage = consumer(supervisor).start().unwrap();
/// stage.subscribe_to(&numbers, SubscribeOptions::new().max_demand(10)).await.unwrap();
///
/// // The source ends, the (permanent) subscription stops the supervisor, and
/// // the supervisor waits for its workers before it stops.
/// assert_eq!(stage.wait().await, Reason::Normal);
/// assert_eq!(total.load(Ordering::Relaxed), 5050);
/// let stats = workers.stats();
/// assert_eq!((stats.started, stats.succeeded, stats.running), (100, 100, 0));
/// # }
/// ```
pub struct ConsumerSupervisor<T, W> {
    worker: W,
    restart: Restart,
    intensity: Intensity,
    shutdown: Duration,
    mode: WorkerMode,
    /// The runs of [`WorkerMode::Inline`] workers.
    inline: Inline,
    /// Demand bookkeeping per producer, in subscription order (usually one).
    producers: Vec<ProducerDemand>,
    /// Running workers by slot; a slot is reused once its worker is gone.
    slots: Vec<Option<Running<T>>>,
    free: Vec<usize>,
    /// Created in `init`, when the stage's info sender exists.
    shared: Option<Arc<Shared>>,
    /// Reused buffer for reports drained from `shared`.
    finished: Vec<Done>,
    counters: Arc<Counters>,
    /// The id of the next worker started.
    next_id: u64,
    /// The restart limit was reached, or the shutdown deadline passed: no more
    /// restarts or asks.
    stopping: bool,
    _event: PhantomData<fn(T)>,
}

/// A producer's subscription and its demand: pending from the ask until the
/// event's worker is done, so at most `max_demand` run per producer.
struct ProducerDemand {
    sub: SubscriptionId,
    demand: AutoDemand,
}

struct Running<T> {
    id: WorkerId,
    producer: SubscriptionId,
    /// Restarts so far.
    restarts: u32,
    /// A copy of the event, kept for restarts (transient workers only).
    event: Option<T>,
    /// `None` once `terminate` saw the run end, or while a restart is refused.
    run: Option<Run>,
}

/// Where a worker's current run is.
enum Run {
    /// On a task of its own ([`WorkerMode::Task`]).
    Task(JoinHandle<()>),
    /// In [`Inline::runs`] ([`WorkerMode::Inline`]).
    Inline,
}

/// The runs of inline workers and the waker that brings the supervisor back to
/// poll them.
#[derive(Default)]
struct Inline {
    /// Behind a mutex only so that the supervisor stays `Sync` (the runs are
    /// only `Send`); it is always reached through `get_mut`, never locked.
    runs: Mutex<FuturesUnordered<InlineRun>>,
    /// Created in `init`, when the stage's info sender exists.
    bell: Option<(Arc<InlineBell>, Waker)>,
}

/// One inline worker's run, reporting its [`Done`] when it ends.
struct InlineRun {
    /// To find the run that `terminate_worker` stops.
    id: WorkerId,
    run: Pin<Box<dyn Future<Output = Done> + Send>>,
}

impl Future for InlineRun {
    type Output = Done;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        self.run.as_mut().poll(cx)
    }
}

/// The waker of the inline runs: an inline worker that becomes ready while the
/// supervisor waits for messages rings with a [`Doorbell`], once until the
/// supervisor polls again.
struct InlineBell {
    rung: AtomicBool,
    bell: InfoSender,
}

impl Wake for InlineBell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            // Fails only when the supervisor has stopped; nobody is left to poll.
            let _ = self.bell.send(Doorbell);
        }
    }
}

/// What workers share with the supervisor: the reports of finished runs, and
/// the doorbell that tells the supervisor to collect them.
struct Shared {
    done: CacheLine<Mutex<Vec<Done>>>,
    bell: InfoSender,
}

/// Keeps the report queue off the cache line of the `Arc`'s counts, which every
/// worker task touches when it starts and ends.
#[repr(align(128))]
struct CacheLine<T>(T);

/// The info message that says reports are waiting in [`Shared::done`].
struct Doorbell;

struct Done {
    slot: usize,
    /// The worker that ran: a worker stopped by `terminate_worker` may report
    /// after its slot went to another.
    id: WorkerId,
    outcome: Outcome,
}

enum Outcome {
    Succeeded,
    Failed { panicked: bool, message: String },
}

impl Outcome {
    /// The outcome of a run that ended with `result` ([`catch_panic`]'s).
    fn of<E: fmt::Debug>(result: Result<Result<(), E>, String>) -> Self {
        match result {
            Ok(Ok(())) => Outcome::Succeeded,
            Ok(Err(error)) => Outcome::Failed {
                panicked: false,
                message: format!("{error:?}"),
            },
            Err(message) => Outcome::Failed {
                panicked: true,
                message,
            },
        }
    }
}

impl Shared {
    /// Queues a report; only the report that finds the queue empty rings, so a
    /// burst of finishing workers costs the supervisor one message.
    fn report(&self, done: Done) {
        let ring = {
            let mut queue = self.done.0.lock();
            queue.push(done);
            queue.len() == 1
        };
        if ring {
            // Fails only when the supervisor has stopped; nobody is left to tell.
            let _ = self.bell.send(Doorbell);
        }
    }
}

impl<T, W> ConsumerSupervisor<T, W>
where
    T: Clone + Send + 'static,
    W: Worker<T>,
{
    /// A supervisor of `worker` with the default options (temporary workers).
    pub fn new(worker: W) -> Self {
        // The defaults are valid.
        Self::builder(worker).assemble()
    }

    /// Starts configuring a supervisor of `worker`.
    pub fn builder(worker: W) -> ConsumerSupervisorBuilder<T, W> {
        ConsumerSupervisorBuilder {
            worker,
            restart: Restart::Temporary,
            intensity: IntensityLimit::default(),
            shutdown: DEFAULT_SHUTDOWN,
            mode: WorkerMode::Task,
            _event: PhantomData,
        }
    }

    /// A watcher of this supervisor's worker counts, valid after it is started
    /// and after it stops.
    pub fn monitor(&self) -> WorkerMonitor {
        WorkerMonitor(self.counters.clone())
    }

    fn shared(&mut self, ctx: &ConsumerContext) -> Arc<Shared> {
        self.shared
            .get_or_insert_with(|| {
                Arc::new(Shared {
                    done: CacheLine(Mutex::new(Vec::new())),
                    bell: ctx.info_sender(),
                })
            })
            .clone()
    }

    /// Calls the worker's `start` and runs its future, reporting to `slot` as
    /// worker `id`: spawned on a task of its own, or added to the inline runs
    /// (which the caller polls). `Err` carries the panic message of a failed
    /// start.
    fn launch(
        &mut self,
        slot: usize,
        id: WorkerId,
        event: T,
        shared: &Arc<Shared>,
    ) -> Result<Run, String> {
        let run = catch_call(|| self.worker.start(event))?;
        let run = async move {
            let outcome = Outcome::of(catch_panic(run).await);
            Done { slot, id, outcome }
        };
        Ok(match self.mode {
            WorkerMode::Task => {
                let shared = shared.clone();
                Run::Task(tokio::spawn(async move { shared.report(run.await) }))
            }
            WorkerMode::Inline => {
                let run = InlineRun {
                    id,
                    run: Box::pin(run),
                };
                self.inline.runs.get_mut().push(run);
                Run::Inline
            }
        })
    }

    /// Polls the inline runs that are ready and handles those that end, until
    /// none is ready. A run that becomes ready later rings the doorbell.
    /// Restarts and asks happen as in [`collect`](Self::collect).
    fn poll_inline(&mut self, shared: &Arc<Shared>, ctx: &mut ConsumerContext) {
        let Some((bell, waker)) = &self.inline.bell else {
            return;
        };
        // Cleared before polling: a run woken from now on rings again.
        bell.rung.store(false, Ordering::Release);
        let waker = waker.clone();
        let mut cx = Context::from_waker(&waker);
        // `FuturesUnordered` returns `Pending` (after waking us) once it has
        // polled every run, so runs that keep waking themselves cannot hold the
        // supervisor here.
        while let Poll::Ready(Some(done)) = self.inline.runs.get_mut().poll_next_unpin(&mut cx) {
            self.on_done(done, shared, Some(ctx));
        }
    }

    /// Runs the inline runs until every one has ended, handling each as it
    /// ends: failed transient workers are restarted while the limit allows.
    async fn finish_inline(&mut self, shared: &Arc<Shared>) {
        while let Some(done) = self.inline.runs.get_mut().next().await {
            self.on_done(done, shared, None);
        }
    }

    /// Drops worker `id`'s inline run, if it is there; `true` if it was.
    fn drop_inline(&mut self, id: WorkerId) -> bool {
        // The set has no removal by key: rebuild it without that run. Rare
        // (an operator's request), so a pass over the runs is fine.
        let runs = std::mem::take(self.inline.runs.get_mut());
        let mut found = false;
        for run in runs {
            if run.id == id {
                found = true;
            } else {
                self.inline.runs.get_mut().push(run);
            }
        }
        found
    }

    fn start_worker(
        &mut self,
        producer: SubscriptionId,
        event: T,
        shared: &Arc<Shared>,
        ctx: &mut ConsumerContext,
    ) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        let keep = (self.restart == Restart::Transient).then(|| event.clone());
        match self.launch(slot, id, event, shared) {
            Ok(run) => {
                self.slots[slot] = Some(Running {
                    id,
                    producer,
                    restarts: 0,
                    event: keep,
                    run: Some(run),
                });
                Counters::add(&self.counters.started, 1);
                Counters::add(&self.counters.running, 1);
            }
            Err(message) => {
                tracing::warn!(%message, "worker failed to start (its start panicked)");
                Counters::add(&self.counters.failed_to_start, 1);
                self.free.push(slot);
                self.release(producer, ctx);
            }
        }
    }

    /// Handles the reports waiting in `shared`. `ctx` is `None` while the stage
    /// stops: then nothing is asked, but failed transient workers are still
    /// restarted until `stopping` is set.
    fn collect(&mut self, shared: &Arc<Shared>, mut ctx: Option<&mut ConsumerContext>) {
        let mut finished = std::mem::take(&mut self.finished);
        std::mem::swap(&mut *shared.done.0.lock(), &mut finished);
        for done in finished.drain(..) {
            self.on_done(done, shared, ctx.as_deref_mut());
        }
        self.finished = finished;
    }

    fn on_done(&mut self, done: Done, shared: &Arc<Shared>, ctx: Option<&mut ConsumerContext>) {
        let Done { slot, id, outcome } = done;
        // Not current when the worker was stopped with `terminate_worker`: its
        // slot is already free, maybe held by another worker.
        let current = self
            .slots
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|running| running.id == id);
        match outcome {
            Outcome::Succeeded => {
                Counters::add(&self.counters.succeeded, 1);
                if current {
                    self.free_slot(slot, ctx);
                }
            }
            Outcome::Failed { panicked, message } => {
                Counters::add(&self.counters.failed, 1);
                let how = if panicked {
                    "panicked"
                } else {
                    "returned an error"
                };
                if !current {
                    tracing::debug!(%message, %id, "terminated worker {how}");
                    return;
                }
                let event = self.slots[slot].as_ref().and_then(|r| r.event.clone());
                match event {
                    Some(event) if !self.stopping => {
                        tracing::warn!(%message, %id, "transient worker {how}; restarting it");
                        self.restart(slot, event, shared, ctx);
                    }
                    Some(_) => {
                        tracing::error!(
                            %message,
                            %id,
                            "transient worker {how} after the restart limit or the shutdown deadline; its event is abandoned"
                        );
                        Counters::add(&self.counters.abandoned, 1);
                        self.free_slot(slot, ctx);
                    }
                    None => {
                        tracing::warn!(%message, %id, "worker {how}");
                        self.free_slot(slot, ctx);
                    }
                }
            }
        }
    }

    /// Restarts the worker in `slot` with `event`, unless that is one restart too
    /// many. A restart whose start panics is tried again, each try counting as a
    /// restart, as in GenStage.
    ///
    /// One too many stops the stage with an error reason (and so its event is
    /// abandoned); while the stage is already stopping (`ctx` is `None`) its
    /// reason stays, and the event is abandoned all the same.
    fn restart(
        &mut self,
        slot: usize,
        event: T,
        shared: &Arc<Shared>,
        ctx: Option<&mut ConsumerContext>,
    ) {
        let Some(id) = self.slots[slot].as_ref().map(|r| r.id) else {
            return;
        };
        loop {
            if !self.intensity.add(Instant::now()) {
                let message = format!(
                    "consumer supervisor reached its restart limit: {}",
                    self.intensity.limit()
                );
                self.stopping = true;
                Counters::add(&self.counters.abandoned, 1);
                self.free_slot(slot, None);
                match ctx {
                    Some(ctx) => {
                        tracing::error!(%id, "{message}; its event is abandoned; stopping");
                        ctx.stop(Reason::error(message));
                    }
                    None => tracing::error!(
                        %id,
                        "{message} while stopping; its event is abandoned, and so are those of transient workers that fail from now on"
                    ),
                }
                return;
            }
            match self.launch(slot, id, event.clone(), shared) {
                Ok(run) => {
                    Counters::add(&self.counters.restarted, 1);
                    if let Some(Some(running)) = self.slots.get_mut(slot) {
                        running.run = Some(run);
                        running.restarts += 1;
                    }
                    return;
                }
                Err(message) => {
                    tracing::warn!(%message, %id, "transient worker failed to restart (its start panicked)");
                    Counters::add(&self.counters.failed_to_start, 1);
                }
            }
        }
    }

    /// The worker in `slot` is gone: free the slot and, unless the stage is
    /// stopping (`ctx` is `None`), count it towards demand.
    fn free_slot(&mut self, slot: usize, ctx: Option<&mut ConsumerContext>) {
        let Some(running) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        self.counters.running.fetch_sub(1, Ordering::Relaxed);
        if let Some(ctx) = ctx {
            self.release(running.producer, ctx);
        }
    }

    /// One of `producer`'s slots came free: ask once `min_demand` have.
    fn release(&mut self, producer: SubscriptionId, ctx: &mut ConsumerContext) {
        if self.stopping {
            return;
        }
        // Absent when the producer has gone: its workers ask for nothing.
        if let Some(p) = self.producers.iter_mut().find(|p| p.sub == producer) {
            let ask = p.demand.complete(1);
            if ask > 0 {
                ctx.ask(producer, ask);
            }
        }
    }

    /// Answers a [`WorkerMonitor`]'s request.
    async fn answer(&mut self, request: Request, ctx: &mut ConsumerContext) {
        match request {
            Request::Workers(reply) => {
                let mut workers: Vec<WorkerInfo> = self
                    .slots
                    .iter()
                    .flatten()
                    .map(|running| WorkerInfo {
                        id: running.id,
                        producer: running.producer,
                        state: match &running.run {
                            Some(Run::Task(task)) if !task.is_finished() => WorkerState::Running,
                            // An inline run that ended has been handled: its
                            // slot is free or it runs again.
                            Some(Run::Inline) => WorkerState::Running,
                            _ => WorkerState::Exited,
                        },
                        restarts: running.restarts,
                    })
                    .collect();
                workers.sort_unstable_by_key(|worker| worker.id);
                // The asker may have given up waiting.
                let _ = reply.send(workers);
            }
            Request::Terminate(id, reply) => {
                let found = self.terminate_worker(id, ctx).await;
                let _ = reply.send(found);
            }
        }
    }

    /// Stops worker `id`: frees its slot (adding 1 to pending demand, like any
    /// worker that ends) and aborts its run, which is never restarted.
    async fn terminate_worker(&mut self, id: WorkerId, ctx: &mut ConsumerContext) -> bool {
        let Some(slot) = self
            .slots
            .iter()
            .position(|r| r.as_ref().is_some_and(|running| running.id == id))
        else {
            return false;
        };
        let run = self.slots[slot].as_mut().and_then(|r| r.run.take());
        self.free_slot(slot, Some(ctx));
        match run {
            Some(Run::Task(task)) => {
                task.abort();
                // A run that ended before the abort has reported; that report,
                // about a worker now gone, counts it as succeeded or failed.
                if let Err(error) = task.await
                    && error.is_cancelled()
                {
                    Counters::add(&self.counters.aborted, 1);
                }
            }
            // An inline run in the set has not ended (its end would have
            // been handled already): dropping it aborts it.
            Some(Run::Inline) if self.drop_inline(id) => {
                Counters::add(&self.counters.aborted, 1);
            }
            Some(Run::Inline) | None => {}
        }
        tracing::debug!(%id, "worker terminated on request");
        true
    }

    /// Waits until every worker has ended, handling their reports as they
    /// come: failed transient workers are restarted while the limit allows.
    async fn finish_workers(&mut self, shared: &Arc<Shared>) {
        loop {
            self.collect(shared, None);
            if !self.slots.iter().flatten().any(|r| r.run.is_some()) {
                return;
            }
            self.next_ended().await;
        }
    }

    /// Waits until some workers' runs end and takes their tasks: each run has
    /// queued its report by then. One pass takes every run that has ended, so
    /// a stop with many finished workers costs one pass, not one per worker.
    async fn next_ended(&mut self) {
        std::future::poll_fn(|cx| {
            let mut ended = false;
            for running in self.slots.iter_mut().flatten() {
                if let Some(Run::Task(task)) = &mut running.run
                    && Pin::new(task).poll(cx).is_ready()
                {
                    running.run = None;
                    ended = true;
                }
            }
            if ended {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl<T, W> Consumer for ConsumerSupervisor<T, W>
where
    T: Clone + Send + 'static,
    W: Worker<T>,
{
    type Event = T;

    async fn init(&mut self, ctx: &mut ConsumerContext) {
        self.shared(ctx);
        if self.mode == WorkerMode::Inline {
            let bell = Arc::new(InlineBell {
                rung: AtomicBool::new(false),
                bell: ctx.info_sender(),
            });
            self.inline.bell = Some((bell.clone(), Waker::from(bell)));
        }
        // Set once: a supervisor value runs as one stage.
        let _ = self.counters.stage.set(ctx.info_sender());
    }

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> DemandMode {
        let (max_demand, min_demand) = ctx
            .demand_bounds(sub)
            .unwrap_or((DEFAULT_MAX_DEMAND, DEFAULT_MAX_DEMAND / 2));
        let mut demand = AutoDemand::new(max_demand, min_demand);
        ctx.ask(sub, demand.subscribe());
        self.producers.push(ProducerDemand { sub, demand });
        DemandMode::Manual
    }

    async fn handle_events(
        &mut self,
        events: Vec<T>,
        from: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) {
        let shared = self.shared(ctx);
        if self.mode == WorkerMode::Inline {
            // Start them all, then run them until each has ended or waits.
            for event in events {
                self.start_worker(from, event, &shared, ctx);
            }
            self.poll_inline(&shared, ctx);
            return;
        }
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 && i % SPAWN_CHUNK == 0 {
                tokio::task::yield_now().await;
            }
            self.start_worker(from, event, &shared, ctx);
        }
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        _ctx: &mut ConsumerContext,
    ) {
        self.producers.retain(|p| p.sub != sub);
        let workers = self
            .slots
            .iter()
            .flatten()
            .filter(|r| r.producer == sub)
            .count();
        tracing::debug!(%sub, %reason, workers, "producer gone; its workers keep running");
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut ConsumerContext) {
        let info = match info.downcast::<Request>() {
            Ok(request) => return self.answer(request, ctx).await,
            Err(info) => info,
        };
        if !info.is::<Doorbell>() {
            tracing::debug!(?info, "consumer supervisor ignores an unknown info message");
            return;
        }
        let shared = self.shared(ctx);
        if self.mode == WorkerMode::Inline {
            // Rung by the inline runs' waker: some are ready to be polled.
            self.poll_inline(&shared, ctx);
            return;
        }
        // Let the workers that are ready run first, so their reports join this
        // batch instead of ringing again one by one.
        if self.counters.running.load(Ordering::Relaxed) > 1 {
            tokio::task::yield_now().await;
        }
        self.collect(&shared, Some(ctx));
    }

    /// Waits for the workers until the shutdown deadline, restarting failed
    /// transient ones meanwhile (SEMANTICS.md §5), then aborts the rest.
    async fn terminate(&mut self, reason: &Reason) {
        let waited = self.slots.iter().flatten().count();
        let mut aborted = 0_u64;
        if let Some(shared) = self.shared.clone() {
            let deadline = Instant::now() + self.shutdown;
            let all_ended = match self.mode {
                WorkerMode::Task => {
                    tokio::time::timeout_at(deadline, self.finish_workers(&shared)).await
                }
                WorkerMode::Inline => {
                    tokio::time::timeout_at(deadline, self.finish_inline(&shared)).await
                }
            }
            .is_ok();
            if !all_ended && self.mode == WorkerMode::Inline {
                // Past the deadline nothing is restarted any more. The runs
                // still in the set have not ended: dropping them aborts them.
                self.stopping = true;
                let runs = self.inline.runs.get_mut();
                aborted = runs.len() as u64;
                runs.clear();
            } else if !all_ended {
                // Past the deadline nothing is restarted any more.
                self.stopping = true;
                let tasks: Vec<JoinHandle<()>> = self
                    .slots
                    .iter_mut()
                    .flatten()
                    .filter_map(|r| match r.run.take() {
                        Some(Run::Task(task)) => Some(task),
                        _ => None,
                    })
                    .collect();
                for task in &tasks {
                    task.abort();
                }
                for task in tasks {
                    if let Err(error) = task.await
                        && error.is_cancelled()
                    {
                        aborted += 1;
                    }
                }
            }
            // Runs that ended before they could be aborted have reported.
            self.collect(&shared, None);
        }
        Counters::add(&self.counters.aborted, aborted);
        self.counters.running.store(0, Ordering::Relaxed);
        self.slots.clear();
        self.free.clear();
        if aborted > 0 {
            tracing::warn!(
                %reason,
                aborted,
                deadline = ?self.shutdown,
                "consumer supervisor stopped; aborted the workers still running at its shutdown deadline"
            );
        } else {
            tracing::debug!(%reason, waited, "consumer supervisor stopped; every worker finished");
        }
    }
}

impl<T, W> fmt::Debug for ConsumerSupervisor<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSupervisor")
            .field("restart", &self.restart)
            .field("intensity", &self.intensity.limit())
            .field("shutdown", &self.shutdown)
            .field("mode", &self.mode)
            .field("running", &self.counters.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

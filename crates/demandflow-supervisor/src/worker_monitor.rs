//! Watching and steering a running consumer supervisor from outside: its
//! worker counts, its per-worker view and stopping one worker (Elixir's
//! `ConsumerSupervisor.count_children`, `which_children` and `terminate_child`).
//!
//! Reach for [`WorkerMonitor`] when a consumer supervisor is already moved into
//! its stage and you need to see or stop its workers.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use demandflow_runtime::{InfoSender, NotRunning, SubscriptionId};
use tokio::sync::oneshot;

/// A snapshot of a consumer supervisor's workers, from [`WorkerMonitor::stats`].
///
/// Every run (a start or a restart) ends in exactly one of `succeeded`,
/// `failed` and `aborted`, so once the supervisor has stopped
/// `started + restarted == succeeded + failed + aborted`. With
/// [`Restart::Transient`](crate::Restart::Transient) workers every event also
/// ends exactly once, so then `started == succeeded + abandoned + aborted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Workers holding a slot: running, or between a failed run and its restart.
    pub running: u64,
    /// Workers started for events (restarts not included).
    pub started: u64,
    /// Runs whose future returned `Ok`.
    pub succeeded: u64,
    /// Runs whose future returned `Err` or panicked, restarted or not.
    pub failed: u64,
    /// Starts and restarts whose [`Worker::start`](crate::Worker::start) panicked.
    pub failed_to_start: u64,
    /// Restarts of transient workers (restarts whose start panicked are in
    /// `failed_to_start` instead).
    pub restarted: u64,
    /// Runs cut short: still going at the shutdown deadline, or stopped with
    /// [`WorkerMonitor::terminate_worker`]. Their events were not processed.
    pub aborted: u64,
    /// Events of transient workers that failed and were not restarted, because
    /// the restart limit had been reached (also while the stage was stopping).
    /// Their events were not processed.
    pub abandoned: u64,
}

/// The counters behind [`WorkerStats`], and the way in to the running stage.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) running: AtomicU64,
    pub(crate) started: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) failed_to_start: AtomicU64,
    pub(crate) restarted: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    /// Set when the stage starts: where [`Request`]s go.
    pub(crate) stage: OnceLock<InfoSender>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Identifies one worker of a consumer supervisor: the run for one event,
/// kept across its restarts. Ids are not reused within a supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub(crate) u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

/// What a worker is doing, in [`WorkerInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerState {
    /// Its run is going.
    Running,
    /// Its run has ended and the supervisor has not handled that yet: it will
    /// free the worker's slot, or restart a failed transient worker.
    Exited,
}

/// One worker in [`WorkerMonitor::workers`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id, for [`WorkerMonitor::terminate_worker`].
    pub id: WorkerId,
    /// The subscription its event came from.
    pub producer: SubscriptionId,
    /// What it is doing.
    pub state: WorkerState,
    /// How many times it has been restarted (transient workers only).
    pub restarts: u32,
}

/// Workers by state, from [`WorkerMonitor::count_workers`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Workers whose run is going.
    pub running: usize,
    /// Workers whose run has ended, not yet handled by the supervisor.
    pub exited: usize,
}

impl WorkerCounts {
    /// Every worker holding a slot.
    pub fn total(&self) -> usize {
        self.running + self.exited
    }
}

/// What a [`WorkerMonitor`] asks the running stage, as an info message.
pub(crate) enum Request {
    Workers(oneshot::Sender<Vec<WorkerInfo>>),
    Terminate(WorkerId, oneshot::Sender<bool>),
}

/// Watches a consumer supervisor's workers from outside, and stops one when
/// asked; cheap to clone.
///
/// Get one from [`ConsumerSupervisor::monitor`](crate::ConsumerSupervisor::monitor)
/// before starting the stage. The counts stay readable after the supervisor
/// has stopped. The per-worker calls ([`workers`](Self::workers),
/// [`count_workers`](Self::count_workers),
/// [`terminate_worker`](Self::terminate_worker)) are answered by the stage
/// itself, in turn with its other messages, so they see a consistent view.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use demandflow_runtime::{CancelMode, SubscribeOptions, consumer, from_iter, producer};
/// use demandflow_supervisor::{ConsumerSupervisor, WorkerState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Workers that run until they are stopped.
/// let supervisor =
///     ConsumerSupervisor::new(|_: u64| std::future::pending::<Result<(), Infallible>>());
/// let workers = supervisor.monitor();
/// let numbers = producer(from_iter(0..3_u64)).start().unwrap();
/// let stage = consumer(supervisor).start().unwrap();
/// let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
/// stage.subscribe_to(&numbers, options).await.unwrap();
/// while workers.running() < 3 {
///     tokio::task::yield_now().await;
/// }
///
/// let list = workers.workers().await.unwrap();
/// assert_eq!(list.len(), 3);
/// assert!(list.iter().all(|w| w.state == WorkerState::Running && w.restarts == 0));
/// assert_eq!(workers.terminate_worker(list[0].id).await, Ok(true));
/// assert_eq!(workers.count_workers().await.unwrap().running, 2);
/// assert_eq!(workers.stats().aborted, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct WorkerMonitor(pub(crate) Arc<Counters>);

impl WorkerMonitor {
    /// The current counts.
    pub fn stats(&self) -> WorkerStats {
        let c = &*self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            running: get(&c.running),
            started: get(&c.started),
            succeeded: get(&c.succeeded),
            failed: get(&c.failed),
            failed_to_start: get(&c.failed_to_start),
            restarted: get(&c.restarted),
            aborted: get(&c.aborted),
            abandoned: get(&c.abandoned),
        }
    }

    /// Workers holding a slot now.
    pub fn running(&self) -> u64 {
        self.0.running.load(Ordering::Relaxed)
    }

    /// Every worker holding a slot, oldest first (Elixir's `which_children`).
    ///
    /// # Errors
    ///
    /// [`NotRunning`] before the stage has started and after it stopped. A
    /// stage that is stopping no longer answers: the call returns
    /// [`NotRunning`] once it has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only drops the answer.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, NotRunning> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Workers(reply))?;
        answer.await.map_err(|_| NotRunning)
    }

    /// The workers holding a slot, counted by state (Elixir's `count_children`).
    ///
    /// # Errors
    ///
    /// As [`workers`](Self::workers).
    pub async fn count_workers(&self) -> Result<WorkerCounts, NotRunning> {
        let mut counts = WorkerCounts::default();
        for worker in self.workers().await? {
            match worker.state {
                WorkerState::Running => counts.running += 1,
                WorkerState::Exited => counts.exited += 1,
            }
        }
        Ok(counts)
    }

    /// Stops worker `id` (Elixir's `terminate_child`): its run is aborted and
    /// never restarted, even under [`Restart::Transient`](crate::Restart::Transient),
    /// so its event is not processed (unless the run had just finished on its
    /// own); an aborted run counts in [`WorkerStats::aborted`]. Like any worker
    /// that ends, it frees its slot and adds 1 to its producer's pending demand
    /// (SEMANTICS.md §5).
    ///
    /// The stage waits for the aborted run to stop, which it does at its next
    /// `.await`. Returns `false` when the supervisor has no worker `id` (it had
    /// already ended).
    ///
    /// # Errors
    ///
    /// As [`workers`](Self::workers).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the request is carried out even if the
    /// future is dropped.
    pub async fn terminate_worker(&self, id: WorkerId) -> Result<bool, NotRunning> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Terminate(id, reply))?;
        answer.await.map_err(|_| NotRunning)
    }

    fn ask(&self, request: Request) -> Result<(), NotRunning> {
        self.0.stage.get().ok_or(NotRunning)?.send(request)
    }
}

impl fmt::Debug for WorkerMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WorkerMonitor").field(&self.stats()).finish()
    }
}

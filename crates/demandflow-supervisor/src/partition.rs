//! The partition supervisor: N long-lived keyed workers with bounded mailboxes.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use demandflow_core::{Key, Reason, StageId};
use demandflow_runtime::registry::{
    self, Entry, EntryKind, Observed, PartitionEntry, Registration,
};
use demandflow_runtime::{SendError, StartError, TrySendError, catch_call, catch_panic};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::BuildError;
use crate::intensity::{Intensity, IntensityLimit, intensity_setters};

const DEFAULT_MAILBOX_CAPACITY: NonZeroUsize = NonZeroUsize::new(1024).expect("1024 > 0");

/// One partition's worker: it owns its state and handles the messages sent to
/// its partition, one at a time, in the order they were queued.
///
/// What the supervisor guarantees you:
///
/// - Your factory is called with the partition's index (`0..partitions`) before
///   the worker handles anything, and again, with the same index, after a panic.
/// - Messages for one partition are handled one at a time, in mailbox order;
///   [`handle`](Self::handle) gets `&mut self`, so no locks are needed.
///
/// What you guarantee back: `handle` does not block the thread (it is polled on
/// a tokio task; use `spawn_blocking` for blocking work).
///
/// # Examples
///
/// ```
/// use demandflow_supervisor::PartitionWorker;
///
/// /// Counts the messages its partition received; a call returns the count.
/// struct Tally(u64);
///
/// impl PartitionWorker for Tally {
///     type Message = &'static str;
///     type Reply = u64;
///
///     async fn handle(&mut self, _message: &'static str) -> u64 {
///         self.0 += 1;
///         self.0
///     }
/// }
/// ```
pub trait PartitionWorker: Send + 'static {
    /// What the partition receives, by [`cast`](PartitionSupervisor::cast) or
    /// [`call`](PartitionSupervisor::call).
    type Message: Send + 'static;
    /// What handling a message returns: the answer to a call, dropped for a cast.
    type Reply: Send + 'static;

    /// Handles one message. A panic here restarts the worker: the message being
    /// handled is lost (a call gets [`CallError::NoReply`]), and the messages
    /// queued behind it are handled by the new worker.
    fn handle(&mut self, message: Self::Message) -> impl Future<Output = Self::Reply> + Send;
}

/// Why [`PartitionSupervisor::call`] got no reply.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<M> {
    /// The supervisor had stopped; the message is handed back.
    #[error("partition supervisor is not running")]
    NotRunning(M),
    /// The message was queued but never answered: the worker panicked while
    /// handling it, or the supervisor stopped before reaching it.
    #[error("partition worker did not reply")]
    NoReply,
}

impl<M> fmt::Debug for CallError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotRunning(_) => f.write_str("NotRunning(..)"),
            CallError::NoReply => f.write_str("NoReply"),
        }
    }
}

/// A message in a partition's mailbox, with where to send the reply of a call.
struct Envelope<M, R> {
    message: M,
    reply: Option<oneshot::Sender<R>>,
}

/// What the partitions are told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Run,
    /// Handle what is queued, accept nothing new, then end.
    Drain,
    /// End after the message being handled.
    Abort,
}

/// What every partition task and handle shares.
struct Core {
    intensity: Mutex<Intensity>,
    restarts: AtomicU64,
    /// Set by `stop`: new messages are refused at once, even while a partition
    /// is busy with a long message and has not closed its mailbox yet.
    closing: AtomicBool,
    command: watch::Sender<Command>,
    /// Partition tasks still running; the last to end publishes the exit reason.
    alive: AtomicUsize,
    /// Set when the restart limit stopped the supervisor.
    failure: Mutex<Option<Reason>>,
    exit: watch::Sender<Option<Reason>>,
    /// Per partition: what the registry shows of its worker.
    load: Box<[PartitionLoad]>,
    /// The registry listing, dropped when the last partition ends.
    listing: Mutex<Option<(Arc<dyn Observed>, Registration)>>,
}

/// What one partition's task counts for the registry. Only that task writes
/// (a load and a store, no read-modify-write), so counting costs next to
/// nothing beside receiving the message.
#[derive(Default)]
struct PartitionLoad {
    /// Messages taken from the mailbox.
    taken: AtomicU64,
    /// Messages handled (answered, for a call).
    handled: AtomicU64,
    /// While the worker handles a message.
    busy: AtomicBool,
}

impl PartitionLoad {
    fn count(counter: &AtomicU64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

impl Core {
    /// Records a restart; false when it is one too many, after stopping everything.
    fn allow_restart(&self, partition: usize) -> bool {
        if self.intensity.lock().add(Instant::now()) {
            self.restarts.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let limit = self.intensity.lock().limit();
        let message = format!("partition supervisor reached its restart limit: {limit}");
        tracing::error!(partition, "{message}; stopping every partition");
        self.failure.lock().get_or_insert(Reason::error(message));
        self.command.send_replace(Command::Abort);
        false
    }

    fn partition_ended(&self) {
        if self.alive.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.listing.lock().take();
            let reason = self.failure.lock().take().unwrap_or(Reason::Shutdown);
            self.exit.send_replace(Some(reason));
        }
    }
}

/// Configures a [`PartitionSupervisor`]; create one with
/// [`PartitionSupervisor::builder`].
///
/// | option | default |
/// |---|---|
/// | [`mailbox_capacity`](Self::mailbox_capacity) | 1024 messages per partition |
/// | [`max_restarts`](Self::max_restarts) | 3 |
/// | [`max_seconds`](Self::max_seconds) | 5 s |
#[must_use = "a builder does nothing until `start` is called"]
pub struct PartitionSupervisorBuilder<F> {
    partitions: NonZeroUsize,
    factory: F,
    mailbox_capacity: NonZeroUsize,
    intensity: IntensityLimit,
    name: Option<String>,
}

impl<F> PartitionSupervisorBuilder<F> {
    /// Names the supervisor in the [registry](demandflow_runtime::registry)
    /// (default: `partition-supervisor-ID`), where it is listed with each
    /// partition's backlog (messages queued in its mailbox), whether its
    /// worker is busy, the messages handled and the restarts.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets how many messages each partition's mailbox holds; a full mailbox
    /// makes [`cast`](PartitionSupervisor::cast) and
    /// [`call`](PartitionSupervisor::call) wait.
    pub fn mailbox_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.mailbox_capacity = capacity;
        self
    }

    // Restarts are counted over all partitions together.
    intensity_setters!();

    /// Checks the options and spawns one task per partition on the current
    /// tokio runtime; each calls the factory with its partition index.
    ///
    /// # Errors
    ///
    /// [`StartError::Config`] for option `"max_seconds"`, and
    /// [`StartError::NoRuntime`] outside a tokio runtime, both inside
    /// [`BuildError::Start`].
    pub fn start<W>(self) -> Result<PartitionSupervisor<W::Message, W::Reply>, BuildError>
    where
        W: PartitionWorker,
        F: Fn(usize) -> W + Send + Sync + 'static,
    {
        self.intensity.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let (command, _) = watch::channel(Command::Run);
        let (exit, _) = watch::channel(None);
        let core = Arc::new(Core {
            intensity: Mutex::new(self.intensity.window()),
            restarts: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            command,
            alive: AtomicUsize::new(self.partitions.get()),
            failure: Mutex::new(None),
            exit,
            load: (0..self.partitions.get())
                .map(|_| PartitionLoad::default())
                .collect(),
            listing: Mutex::new(None),
        });
        let factory = Arc::new(self.factory);
        let mailboxes: Box<[_]> = (0..self.partitions.get())
            .map(|index| {
                let (tx, rx) = mpsc::channel(self.mailbox_capacity.get());
                // Subscribed here, not in the task, so a stop before the task
                // first runs is still seen as a change.
                let commands = core.command.subscribe();
                let task = run_partition(index, rx, commands, factory.clone(), core.clone());
                let span = tracing::debug_span!("partition", index);
                runtime.spawn(tracing::Instrument::instrument(task, span));
                tx
            })
            .collect();
        let id = StageId::next();
        let observed: Arc<dyn Observed> = Arc::new(Listed {
            id,
            name: self
                .name
                .unwrap_or_else(|| format!("partition-supervisor-{}", id.as_u64())),
            capacity: self.mailbox_capacity.get(),
            // Weak: the listing must not keep the mailboxes open, or the
            // partitions would never see their last handle go.
            mailboxes: mailboxes.iter().map(mpsc::Sender::downgrade).collect(),
            core: Arc::downgrade(&core),
        });
        let registration = registry::register(&observed);
        *core.listing.lock() = Some((observed, registration));
        Ok(PartitionSupervisor {
            inner: Arc::new(Inner { mailboxes, core }),
        })
    }
}

impl<F> fmt::Debug for PartitionSupervisorBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionSupervisorBuilder")
            .field("partitions", &self.partitions)
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("intensity", &self.intensity)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A partition supervisor as the registry lists it.
struct Listed<M, R> {
    id: StageId,
    name: String,
    capacity: usize,
    mailboxes: Box<[mpsc::WeakSender<Envelope<M, R>>]>,
    core: std::sync::Weak<Core>,
}

impl<M: Send + 'static, R: Send + 'static> Observed for Listed<M, R> {
    fn entry(&self) -> Entry {
        let mut entry = Entry::new(self.id, EntryKind::PartitionSupervisor, &*self.name);
        let Some(core) = self.core.upgrade() else {
            return entry;
        };
        entry.partitions = self
            .mailboxes
            .iter()
            .zip(&core.load)
            .map(|(mailbox, load)| {
                // Queued messages: the mailbox's bound less its free room.
                let backlog = mailbox
                    .upgrade()
                    .map_or(0, |tx| tx.max_capacity() - tx.capacity());
                PartitionEntry::new(backlog, usize::from(load.busy.load(Ordering::Relaxed)))
            })
            .collect();
        entry.buffered = entry.partitions.iter().map(|p| p.backlog).sum();
        entry.buffer_limit = Some(self.capacity * self.mailboxes.len());
        entry.events_in = core
            .load
            .iter()
            .map(|l| l.taken.load(Ordering::Relaxed))
            .sum();
        entry.events_out = core
            .load
            .iter()
            .map(|l| l.handled.load(Ordering::Relaxed))
            .sum();
        entry.restarts = Some(core.restarts.load(Ordering::Relaxed));
        entry
    }
}

/// One partition's task: builds its worker, hands it the mailbox's messages,
/// and builds a new one (same index, same mailbox) after a panic.
async fn run_partition<W, F>(
    index: usize,
    mut mailbox: mpsc::Receiver<Envelope<W::Message, W::Reply>>,
    mut commands: watch::Receiver<Command>,
    factory: Arc<F>,
    core: Arc<Core>,
) where
    W: PartitionWorker,
    F: Fn(usize) -> W + Send + Sync + 'static,
{
    let mut worker: Option<W> = None;
    loop {
        let current = match worker.as_mut() {
            Some(worker) => worker,
            None => match catch_call(|| factory(index)) {
                Ok(started) => worker.insert(started),
                Err(message) => {
                    tracing::error!(%message, "partition worker failed to start (its factory panicked)");
                    if core.allow_restart(index) {
                        continue;
                    }
                    break;
                }
            },
        };
        let envelope = tokio::select! {
            biased;
            changed = commands.changed() => {
                match (changed, *commands.borrow_and_update()) {
                    (Err(_), _) | (Ok(()), Command::Abort) => break,
                    (Ok(()), Command::Drain) => mailbox.close(),
                    (Ok(()), Command::Run) => {}
                }
                continue;
            }
            envelope = mailbox.recv() => match envelope {
                Some(envelope) => envelope,
                // Every handle is gone, or the mailbox was closed and drained.
                None => break,
            },
        };
        let Envelope { message, reply } = envelope;
        let load = &core.load[index];
        PartitionLoad::count(&load.taken);
        load.busy.store(true, Ordering::Relaxed);
        let handled = catch_panic(current.handle(message)).await;
        load.busy.store(false, Ordering::Relaxed);
        match handled {
            Ok(answer) => {
                PartitionLoad::count(&load.handled);
                if let Some(reply) = reply {
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(answer);
                }
            }
            Err(message) => {
                tracing::error!(%message, "partition worker panicked; the message it was handling is lost; restarting it");
                worker = None;
                if !core.allow_restart(index) {
                    break;
                }
            }
        }
    }
    // Queued calls get `NoReply` when their envelopes drop with the mailbox.
    drop(mailbox);
    core.partition_ended();
}

struct Inner<M, R> {
    mailboxes: Box<[mpsc::Sender<Envelope<M, R>>]>,
    core: Arc<Core>,
}

/// N long-lived workers, one per partition, each with a bounded mailbox;
/// messages are routed to a partition by key (Elixir's `PartitionSupervisor`).
///
/// Use it to spread stateful work over a fixed number of tasks while keeping
/// all the work for one key on one task, in order: per-user counters, per-account
/// sequencing, sharded caches.
///
/// - **Routing**: [`cast`](Self::cast) and [`call`](Self::call) send to
///   partition `key.partition(n)` (see [`Key`]: integers go to
///   `key mod n`, strings through the stable key hash), the same partition
///   the partition dispatcher and the keyed scheduler pick for that key.
/// - **Messages**: a cast is fire and forget; a call waits for the reply the
///   worker's [`handle`](PartitionWorker::handle) returns. Each partition handles
///   its messages one at a time, in the order they were queued.
/// - **Back-pressure**: each mailbox holds `mailbox_capacity` messages; `cast`
///   and `call` wait while it is full, [`try_cast`](Self::try_cast) returns
///   [`TrySendError::Full`] instead.
/// - **Restarts**: a worker that panics is replaced by a new one from the
///   factory, with the same partition index. Its mailbox is kept, so the
///   messages queued behind the failed one are handled by the new worker;
///   **exactly one message is lost: the one being handled when it panicked** (a
///   call waiting on it gets [`CallError::NoReply`]). The worker's state is lost
///   with it. More than `max_restarts` restarts within `max_seconds`, over all
///   partitions, stop the supervisor with an error [`Reason`] that says so.
/// - **Stopping**: [`stop`](Self::stop) lets each partition handle what is
///   already queued, then ends them. Dropping every handle does the same.
/// - **Observing**: while it runs it is listed in the
///   [registry](demandflow_runtime::registry) under its
///   [name](PartitionSupervisorBuilder::name), with each partition's mailbox
///   backlog and whether its worker is busy, the messages taken and handled,
///   and the restarts, so a dashboard shows which partition is hot.
///
/// Handles are cheap to clone.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_supervisor::{PartitionSupervisor, PartitionWorker};
///
/// /// Sums the numbers sent to its partition; a call returns the partition and its sum.
/// struct Sum {
///     partition: usize,
///     total: u64,
/// }
///
/// impl PartitionWorker for Sum {
///     type Message = u64;
///     type Reply = (usize, u64);
///
///     async fn handle(&mut self, n: u64) -> (usize, u64) {
///         self.total += n;
///         (self.partition, self.total)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let three = NonZeroUsize::new(3).unwrap();
/// let sums = PartitionSupervisor::start(three, |partition| Sum { partition, total: 0 }).unwrap();
/// for key in 0..9_u64 {
///     sums.cast(key, key).await.unwrap(); // key k goes to partition k mod 3
/// }
/// // Partition 1 got 1 + 4 + 7; the call's 0 is queued behind them.
/// assert_eq!(sums.call(1_u64, 0).await.unwrap(), (1, 12));
/// # }
/// ```
pub struct PartitionSupervisor<M, R = ()> {
    inner: Arc<Inner<M, R>>,
}

impl<M: Send + 'static, R: Send + 'static> PartitionSupervisor<M, R> {
    /// Starts `partitions` workers with the default options; `factory` makes
    /// the worker of partition `i` (`0..partitions`).
    ///
    /// # Errors
    ///
    /// As [`PartitionSupervisorBuilder::start`].
    pub fn start<W, F>(partitions: NonZeroUsize, factory: F) -> Result<Self, BuildError>
    where
        W: PartitionWorker<Message = M, Reply = R>,
        F: Fn(usize) -> W + Send + Sync + 'static,
    {
        Self::builder(partitions, factory).start()
    }

    /// Starts configuring `partitions` workers made by `factory`.
    pub fn builder<W, F>(partitions: NonZeroUsize, factory: F) -> PartitionSupervisorBuilder<F>
    where
        W: PartitionWorker<Message = M, Reply = R>,
        F: Fn(usize) -> W + Send + Sync + 'static,
    {
        PartitionSupervisorBuilder {
            partitions,
            factory,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            intensity: IntensityLimit::default(),
            name: None,
        }
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.inner.mailboxes.len()
    }

    /// The partition `key` routes to.
    pub fn partition_of<K: Key + ?Sized>(&self, key: &K) -> usize {
        key.partition(self.partitions())
    }

    /// The mailbox of `key`'s partition, or `None` once `stop` was called.
    fn mailbox<K: Key + ?Sized>(&self, key: &K) -> Option<&mpsc::Sender<Envelope<M, R>>> {
        if self.inner.core.closing.load(Ordering::Acquire) {
            return None;
        }
        Some(&self.inner.mailboxes[self.partition_of(key)])
    }

    /// Queues `message` for the partition of `key`, waiting while its mailbox
    /// is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the message when the supervisor has stopped.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the message was queued, the message is
    /// dropped with it and nothing was queued.
    pub async fn cast<K: Key>(&self, key: K, message: M) -> Result<(), SendError<M>> {
        let Some(mailbox) = self.mailbox(&key) else {
            return Err(SendError(message));
        };
        mailbox
            .send(Envelope {
                message,
                reply: None,
            })
            .await
            .map_err(|e| SendError(e.0.message))
    }

    /// Queues `message` for the partition of `key` if its mailbox has room.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the mailbox is full and
    /// [`TrySendError::Closed`] when the supervisor has stopped; both hand
    /// the message back.
    pub fn try_cast<K: Key>(&self, key: K, message: M) -> Result<(), TrySendError<M>> {
        let Some(mailbox) = self.mailbox(&key) else {
            return Err(TrySendError::Closed(message));
        };
        mailbox
            .try_send(Envelope {
                message,
                reply: None,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(e) => TrySendError::Full(e.message),
                mpsc::error::TrySendError::Closed(e) => TrySendError::Closed(e.message),
            })
    }

    /// Sends `message` to the partition of `key` and waits for the reply its
    /// worker returns. Waits while the mailbox is full.
    ///
    /// # Errors
    ///
    /// [`CallError::NotRunning`] with the message when the supervisor has
    /// stopped, and [`CallError::NoReply`] when the worker panicked while
    /// handling it (or the supervisor stopped before reaching it).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the message was queued, nothing was
    /// queued; if it is dropped later, the worker still handles the message and
    /// its reply is discarded.
    pub async fn call<K: Key>(&self, key: K, message: M) -> Result<R, CallError<M>> {
        let Some(mailbox) = self.mailbox(&key) else {
            return Err(CallError::NotRunning(message));
        };
        let (tx, rx) = oneshot::channel();
        mailbox
            .send(Envelope {
                message,
                reply: Some(tx),
            })
            .await
            .map_err(|e| CallError::NotRunning(e.0.message))?;
        rx.await.map_err(|_| CallError::NoReply)
    }

    /// Worker restarts so far, over all partitions.
    pub fn restarts(&self) -> u64 {
        self.inner.core.restarts.load(Ordering::Relaxed)
    }

    /// Lets every partition handle the messages already queued, refuses new
    /// ones, and waits until all have ended; returns the exit reason
    /// ([`Reason::Shutdown`], or the restart-limit error if that came first).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the partitions stop whether or not the future is awaited to
    /// the end.
    pub async fn stop(&self) -> Reason {
        self.inner.core.closing.store(true, Ordering::Release);
        self.inner.core.command.send_if_modified(|command| {
            let run = *command == Command::Run;
            if run {
                *command = Command::Drain;
            }
            run
        });
        self.wait().await
    }

    /// Waits until every partition has ended and returns why.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self) -> Reason {
        let mut exit = self.inner.core.exit.subscribe();
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(Reason::Shutdown),
            Err(_) => Reason::Shutdown,
        }
    }

    /// The exit reason, once every partition has ended.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.inner.core.exit.borrow().clone()
    }
}

impl<M, R> Clone for PartitionSupervisor<M, R> {
    fn clone(&self) -> Self {
        PartitionSupervisor {
            inner: self.inner.clone(),
        }
    }
}

impl<M, R> fmt::Debug for PartitionSupervisor<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionSupervisor")
            .field("partitions", &self.inner.mailboxes.len())
            .field(
                "restarts",
                &self.inner.core.restarts.load(Ordering::Relaxed),
            )
            .field("exit", &*self.inner.core.exit.borrow())
            .finish()
    }
}

//! The tokio part of keyed scheduling: partitions behind locks, workers started
//! on demand, back-pressure on senders.

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use demandflow_core::StageId;
use demandflow_runtime::registry::{
    self, Entry, EntryKind, Observed, PartitionEntry, Registration,
};
use demandflow_runtime::{
    InfoSender, SendError, StartError, TrySendError, catch_call, catch_panic,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::index::{DenseKeys, HashedKeys, KeyIndex};
use super::queue::{KeyedBatch, KeyedQueue, ReleaseHeld};

/// The code a [`Keyed`] scheduler runs on each batch: what a worker does.
///
/// The scheduler guarantees you that, while `handle` runs, no other call holds
/// any key of its batch, and that a key's events reach you in the order they
/// were sent, each exactly once. Calls for different keys run concurrently (up
/// to the scheduler's worker cap), so `handle` takes `&self`: keep shared state
/// behind locks or atomics, or split it by [`KeyedBatch::partition`].
///
/// The keys of a batch stay busy until `handle` returns. A handler that has to
/// wait on one key (a timer, a reply) should not wait inside `handle`, which
/// would hold up that key's batch-mates too: it takes the key out with
/// [`KeyedBatch::hold`], moves the waiting into a task of its own, and
/// returns; the key stays busy until the hold is dropped.
///
/// A panic in `handle` is caught: it is reported (see
/// [`KeyedBuilder::on_panic`]), the batch's keys are released, and the worker
/// goes on with the next batch. The events of the batch count as failed.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use demandflow_keyed::{KeyedBatch, KeyedHandler};
///
/// /// Adds up every event, whatever its key.
/// struct Total(AtomicU64);
///
/// impl KeyedHandler for Total {
///     type Key = u64;
///     type Event = u64;
///
///     async fn handle(&self, batch: &mut KeyedBatch<u64, u64>) {
///         let sum: u64 = batch.iter().flat_map(|(_, events)| events).sum();
///         self.0.fetch_add(sum, Ordering::Relaxed);
///     }
/// }
/// ```
pub trait KeyedHandler: Send + Sync + 'static {
    /// The key events are ordered and serialised by.
    type Key: Clone + Send + Sync + 'static;
    /// The events.
    type Event: Send + 'static;

    /// Handles one batch: each key with its events, oldest first.
    fn handle(
        &self,
        batch: &mut KeyedBatch<Self::Key, Self::Event>,
    ) -> impl Future<Output = ()> + Send;
}

/// A worker's handler panicked on a batch; what [`KeyedBuilder::on_panic`] is told.
///
/// The batch's keys were released and the worker went on; which of its events
/// had been handled before the panic is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerPanic<K> {
    /// The partition of the batch.
    pub partition: usize,
    /// The keys of the batch.
    pub keys: Vec<K>,
    /// How many events the batch held.
    pub events: usize,
    /// The panic message.
    pub message: String,
}

/// A snapshot of a [`Keyed`] scheduler's counters, from [`Keyed::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of partitions.
    pub partitions: usize,
    /// Events sent and not yet taken by a worker, over all partitions.
    pub queued: usize,
    /// Events in batches that workers hold.
    pub in_flight_events: usize,
    /// Keys in batches that workers hold (busy keys).
    pub in_flight_keys: usize,
    /// Workers running.
    pub workers: usize,
    /// The most events ever queued in one partition.
    pub peak_queued: usize,
    /// Events sent.
    pub sent: u64,
    /// Events in batches whose handler returned.
    pub handled: u64,
    /// Batches whose handler returned.
    pub batches: u64,
    /// Batches whose handler panicked.
    pub panicked_batches: u64,
    /// Events in batches whose handler panicked.
    pub failed: u64,
}

type PanicHook<K> = Box<dyn Fn(&HandlerPanic<K>) + Send + Sync>;

/// Configures and starts a [`Keyed`] scheduler.
///
/// | option | default |
/// |---|---|
/// | `partitions` | one per core (`num_cpus::get()`) |
/// | `max_workers` | 4 per partition |
/// | `max_batch` | 1 024 events per batch |
/// | `capacity` | 65 536 queued events per partition |
/// | `on_panic` | an error event through `tracing` |
#[must_use = "a builder does nothing until `start` is called"]
pub struct KeyedBuilder<X: KeyIndex, H> {
    name: Option<String>,
    handler: H,
    partitions: NonZeroUsize,
    max_workers: NonZeroUsize,
    max_batch: NonZeroUsize,
    capacity: NonZeroUsize,
    on_panic: Option<PanicHook<X::Key>>,
}

impl<H: KeyedHandler<Key = u64>> KeyedBuilder<DenseKeys, H> {
    /// A scheduler for small dense integer keys ([`DenseKeys`]): no hashing,
    /// no allocation per key.
    pub fn dense(handler: H) -> Self {
        Self::with_index(handler)
    }
}

impl<H> KeyedBuilder<HashedKeys<H::Key>, H>
where
    H: KeyedHandler,
    H::Key: demandflow_core::Key + std::hash::Hash + Eq,
{
    /// A scheduler for any [`Key`](demandflow_core::Key) that is also
    /// `Hash + Eq` ([`HashedKeys`]): strings, integers, or any hashable type
    /// wrapped in [`Hashed`](demandflow_core::Hashed).
    pub fn hashed(handler: H) -> Self {
        Self::with_index(handler)
    }
}

impl<X, H> KeyedBuilder<X, H>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
{
    /// A scheduler that maps keys to partitions and slots with `X`.
    pub fn with_index(handler: H) -> Self {
        KeyedBuilder {
            name: None,
            handler,
            partitions: NonZeroUsize::new(num_cpus::get()).unwrap_or(NonZeroUsize::MIN),
            max_workers: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            max_batch: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            capacity: NonZeroUsize::new(65_536).unwrap_or(NonZeroUsize::MIN),
            on_panic: None,
        }
    }

    /// Names the scheduler in the [registry](demandflow_runtime::registry)
    /// (default: `keyed-ID`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many partitions keys are spread over; each has its own lock, queue
    /// and workers.
    pub fn partitions(mut self, partitions: NonZeroUsize) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many workers may run at once in each partition, so at most
    /// `partitions × max_workers` in all. More workers let more keys of a
    /// partition wait (on I/O, timers) at once.
    pub fn max_workers(mut self, workers: NonZeroUsize) -> Self {
        self.max_workers = workers;
        self
    }

    /// How many events a worker takes at once: keys are added to a batch until
    /// it holds at least this many (a key's run is never split).
    pub fn max_batch(mut self, events: NonZeroUsize) -> Self {
        self.max_batch = events;
        self
    }

    /// How many events may be queued (sent, not yet taken by a worker) in one
    /// partition before senders wait.
    pub fn capacity(mut self, events: NonZeroUsize) -> Self {
        self.capacity = events;
        self
    }

    /// Called when a handler panics, instead of logging an error.
    pub fn on_panic(
        mut self,
        hook: impl Fn(&HandlerPanic<X::Key>) + Send + Sync + 'static,
    ) -> Self {
        self.on_panic = Some(Box::new(hook));
        self
    }

    /// Starts the scheduler on the current tokio runtime, where it will spawn
    /// its workers.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub fn start(self) -> Result<Keyed<X, H>, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let partitions = (0..self.partitions.get())
            .map(|p| Partition {
                state: Mutex::new(PartitionState {
                    queue: KeyedQueue::with_partition(X::new(p, self.partitions), p),
                    workers: 0,
                    starting: 0,
                    senders_waiting: false,
                    peak_queued: 0,
                    spare: Vec::new(),
                }),
                space: Notify::new(),
            })
            .collect();
        let id = StageId::next();
        let keyed = Keyed {
            inner: Arc::new(Inner {
                id,
                name: self
                    .name
                    .unwrap_or_else(|| format!("keyed-{}", id.as_u64())),
                registration: OnceLock::new(),
                handler: self.handler,
                router: X::new(0, self.partitions),
                partitions,
                max_workers: self.max_workers.get(),
                max_batch: self.max_batch.get(),
                chunk: self.max_batch.get().min(self.capacity.get()),
                low_water: (self.capacity.get() / 2)
                    .min(self.capacity.get() - self.max_batch.get().min(self.capacity.get())),
                capacity: self.capacity.get(),
                runtime,
                closed: AtomicBool::new(false),
                idle: Notify::new(),
                listeners: Mutex::new(Vec::new()),
                listener_count: AtomicUsize::new(0),
                on_panic: self.on_panic,
                sent: AtomicU64::new(0),
                handled: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                panicked_batches: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        };
        let observed: Arc<dyn Observed> = keyed.inner.clone();
        let _ = keyed.inner.registration.set(registry::register(&observed));
        Ok(keyed)
    }
}

struct PartitionState<X: KeyIndex, E> {
    queue: KeyedQueue<X, E>,
    /// Workers running, counting those spawned and not started yet.
    workers: usize,
    /// Workers spawned that have not taken their first batch yet.
    starting: usize,
    /// A sender found the partition full and waits for room: wake it once
    /// the queue is down to the low-water mark.
    senders_waiting: bool,
    peak_queued: usize,
    /// Batches of workers that stopped, kept for their allocations.
    spare: Vec<KeyedBatch<X::Key, E>>,
}

struct Partition<X: KeyIndex, E> {
    state: Mutex<PartitionState<X, E>>,
    /// Woken when a full partition gets room again.
    space: Notify,
}

/// A stage (or anyone) to tell when queued events are taken, so it can ask for
/// more: see `KeyedConsumer`.
pub(super) struct Listener {
    pub(super) stage: InfoSender,
    /// An unhandled wake-up is on its way; no need to send another.
    pub(super) pending: Arc<AtomicBool>,
}

/// The info message a listener gets when room was made.
pub(super) struct SpaceFreed;

pub(super) struct Inner<X: KeyIndex, H: KeyedHandler> {
    id: StageId,
    name: String,
    /// Lists the scheduler in the registry until it is dropped.
    registration: OnceLock<Registration>,
    handler: H,
    /// Used only for `partition_of`.
    router: X,
    partitions: Box<[Partition<X, H::Event>]>,
    max_workers: usize,
    max_batch: usize,
    /// Events `send_all` queues at once: `max_batch`, within the capacity.
    chunk: usize,
    /// Waiting senders are woken when the queue is down to this: room for a
    /// chunk and at least half the capacity, so that a sender does not wake
    /// for every batch a worker takes.
    low_water: usize,
    pub(super) capacity: usize,
    runtime: tokio::runtime::Handle,
    closed: AtomicBool,
    /// Woken whenever a partition becomes idle.
    idle: Notify,
    listeners: Mutex<Vec<Listener>>,
    listener_count: AtomicUsize,
    on_panic: Option<PanicHook<X::Key>>,
    sent: AtomicU64,
    handled: AtomicU64,
    batches: AtomicU64,
    panicked_batches: AtomicU64,
    failed: AtomicU64,
}

impl<X: KeyIndex, H: KeyedHandler> Observed for Inner<X, H> {
    fn entry(&self) -> Entry {
        let mut entry = Entry::new(self.id, EntryKind::Keyed, &*self.name);
        entry.events_in = self.sent.load(Ordering::Relaxed);
        entry.events_out = self.handled.load(Ordering::Relaxed);
        entry.events_dropped = self.failed.load(Ordering::Relaxed);
        entry.buffer_limit = Some(self.capacity * self.partitions.len());
        // One partition lock at a time, held for two reads: as cheap as a send.
        entry.partitions = self
            .partitions
            .iter()
            .map(|p| {
                let state = p.state.lock();
                PartitionEntry::new(state.queue.queued(), state.queue.in_flight_keys())
            })
            .collect();
        entry.buffered = entry.partitions.iter().map(|p| p.backlog).sum();
        entry
    }
}

/// A chunk being filled for one partition: keys, and their events.
type ChunkBuffer<X, H> = (Vec<<X as KeyIndex>::Key>, Vec<<H as KeyedHandler>::Event>);

/// A key and its event, as the send methods hand them back.
type Pair<X, H> = (<X as KeyIndex>::Key, <H as KeyedHandler>::Event);

/// A running scheduler of per-key ordered work: a cloneable handle.
///
/// Events are sent with a key. Each key belongs to one of several partitions;
/// a partition queues events by key, and hands out *batches* of ready keys,
/// each key with all its queued events (a run), to workers that it starts on
/// demand, up to a cap, on the tokio runtime the scheduler was started on.
/// A key in a batch is *busy*: events sent for it meanwhile wait behind it, and
/// are released when the worker has handled the batch (or panicked on it). So:
///
/// - **per-key FIFO**: a key's events are handled in the order they were sent
///   (by one sender; sends from several tasks interleave);
/// - **per-key mutual exclusion**: a key is handled by one worker at a time;
/// - **cross-key concurrency**: keys are handled by up to `max_workers`
///   workers per partition at once, so a batch whose handler is slow or
///   waiting holds up only its own keys, never other keys of its partition;
///   and a handler that [`hold`](KeyedBatch::hold)s its slow key releases the
///   rest of its batch at once, so a blocked key holds up only itself;
/// - **nothing lost or duplicated**: every event sent is handled once, or
///   reported as failed when its handler panicked.
///
/// Memory is bounded: a partition queues at most `capacity` events, and
/// [`send`](Keyed::send) waits (back-pressure) while the key's partition is
/// full; waiting senders are woken once the partition is down to half its
/// capacity, not for every batch taken. To feed it from a pipeline, use
/// [`Keyed::consumer`], a consumer stage that asks its producers for events
/// only as room frees up.
///
/// To send many events, use [`send_all`](Keyed::send_all): it groups them by
/// partition into chunks of `max_batch` events and queues each chunk with one
/// lock, in O(1); a worker that finds the chunk's keys idle takes its event
/// vector as its batch, without copying. Workers are tasks: a worker whose
/// partition has nothing ready finishes, and sending starts new ones.
///
/// The per-key bookkeeping is [`KeyedQueue`], one per partition; with
/// [`DenseKeys`] it costs a byte per key and no hashing, so a million keys per
/// frame are cheap (the `million_objects` bench: 1 000 000 objects, an event
/// each per frame, about 80 frames per second on 2 cores).
///
/// Dropping every handle does not stop the workers: they handle what was sent,
/// then finish. [`shutdown`](Keyed::shutdown) closes the scheduler and waits
/// for that.
///
/// # Examples
///
/// ```
/// use std::sync::Mutex;
/// use std::num::NonZeroUsize;
/// use demandflow_keyed::{KeyedBatch, KeyedBuilder, KeyedHandler};
///
/// /// Records, per key, the events in the order they were handled.
/// #[derive(Default)]
/// struct Log(Mutex<Vec<Vec<u32>>>);
///
/// impl KeyedHandler for Log {
///     type Key = u64;
///     type Event = u32;
///
///     async fn handle(&self, batch: &mut KeyedBatch<u64, u32>) {
///         let mut log = self.0.lock().unwrap();
///         for (key, events) in batch.iter() {
///             log[*key as usize].extend_from_slice(events);
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let log = Log(Mutex::new(vec![Vec::new(); 3]));
/// let keyed = KeyedBuilder::dense(log)
///     .partitions(NonZeroUsize::new(2).unwrap())
///     .start()
///     .unwrap();
/// let sent = keyed.send_all((0..30).map(|n| (u64::from(n % 3), n))).await.unwrap();
/// assert_eq!(sent, 30);
/// keyed.shutdown().await;
///
/// let stats = keyed.stats();
/// assert_eq!((stats.sent, stats.handled, stats.queued), (30, 30, 0));
/// let log = keyed.handler().0.lock().unwrap();
/// assert_eq!(log[1], [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
/// # }
/// ```
pub struct Keyed<X: KeyIndex, H: KeyedHandler> {
    pub(super) inner: Arc<Inner<X, H>>,
}

impl<X: KeyIndex, H: KeyedHandler> Clone for Keyed<X, H> {
    fn clone(&self) -> Self {
        Keyed {
            inner: self.inner.clone(),
        }
    }
}

impl<X: KeyIndex, H: KeyedHandler> fmt::Debug for Keyed<X, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("partitions", &self.inner.partitions.len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<X, H> Keyed<X, H>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
{
    /// The handler the workers run, e.g. to read what it collected.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// How many partitions keys are spread over.
    pub fn partitions(&self) -> usize {
        self.inner.partitions.len()
    }

    /// The partition `key` belongs to.
    pub fn partition_of(&self, key: &X::Key) -> usize {
        self.inner.router.partition_of(key)
    }

    /// Queues `event` behind the events already sent for `key`, waiting while
    /// the key's partition is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the key and event when the scheduler is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the event was
    /// not sent.
    pub async fn send(&self, key: X::Key, event: H::Event) -> Result<(), SendError<Pair<X, H>>> {
        let p = self.partition_of(&key);
        let mut pair = Some((key, event));
        let partition = &self.inner.partitions[p];
        loop {
            let mut room = pin!(partition.space.notified());
            room.as_mut().enable();
            if self.is_closed() {
                return Err(SendError(pair.take().expect("not sent yet")));
            }
            let started = {
                let mut state = partition.state.lock();
                if state.queue.queued() < self.inner.capacity {
                    let (key, event) = pair.take().expect("not sent yet");
                    state.queue.push(&key, event);
                    let queued = state.queue.queued();
                    state.peak_queued = state.peak_queued.max(queued);
                    Some(self.inner.start_workers(&mut state))
                } else {
                    state.senders_waiting = true;
                    None
                }
            };
            if let Some(started) = started {
                self.inner.sent.fetch_add(1, Ordering::Relaxed);
                self.inner.spawn_all(p, started);
                return Ok(());
            }
            room.await;
        }
    }

    /// Queues `event` for `key` if its partition has room, without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the partition is full,
    /// [`TrySendError::Closed`] when the scheduler is closed; both hand
    /// the key and event back.
    pub fn try_send(&self, key: X::Key, event: H::Event) -> Result<(), TrySendError<Pair<X, H>>> {
        if self.is_closed() {
            return Err(TrySendError::Closed((key, event)));
        }
        let p = self.partition_of(&key);
        let partition = &self.inner.partitions[p];
        let started = {
            let mut state = partition.state.lock();
            if state.queue.queued() >= self.inner.capacity {
                return Err(TrySendError::Full((key, event)));
            }
            state.queue.push(&key, event);
            let queued = state.queue.queued();
            state.peak_queued = state.peak_queued.max(queued);
            self.inner.start_workers(&mut state)
        };
        self.inner.sent.fetch_add(1, Ordering::Relaxed);
        self.inner.spawn_all(p, started);
        Ok(())
    }

    /// Sends every `(key, event)` pair, in order, waiting while a partition is
    /// full, and returns how many were sent. Pairs are grouped by partition and
    /// queued a chunk (`max_batch` events) at a time, one lock per chunk: the
    /// way to send many events (a frame) cheaply.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the number of pairs that were sent, when the
    /// scheduler is closed; the rest of the iterator is not consumed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, a prefix of the pairs (per
    /// partition) has been sent and the rest is lost.
    pub async fn send_all(
        &self,
        pairs: impl IntoIterator<Item = (X::Key, H::Event)>,
    ) -> Result<usize, SendError<usize>> {
        let chunk = self.inner.chunk;
        let mut buffers: Vec<ChunkBuffer<X, H>> = (0..self.partitions())
            .map(|_| (Vec::with_capacity(chunk), Vec::with_capacity(chunk)))
            .collect();
        let mut pairs = pairs.into_iter();
        let mut sent = 0;
        // The per-event work happens in `fill`, a plain function, so that the
        // pairs stay in registers instead of passing through this future.
        while let Some(p) = self.fill(&mut pairs, &mut buffers) {
            let (keys, events) = &mut buffers[p];
            sent += self
                .flush(p, keys, events)
                .await
                .map_err(|e| SendError(sent + e.0))?;
        }
        for (p, (keys, events)) in buffers.iter_mut().enumerate() {
            if !keys.is_empty() {
                sent += self
                    .flush(p, keys, events)
                    .await
                    .map_err(|e| SendError(sent + e.0))?;
            }
        }
        Ok(sent)
    }

    /// Routes pairs into the partitions' buffers until one holds a chunk
    /// (returns its partition) or the pairs run out (`None`).
    #[inline]
    fn fill(
        &self,
        pairs: &mut impl Iterator<Item = (X::Key, H::Event)>,
        buffers: &mut [ChunkBuffer<X, H>],
    ) -> Option<usize> {
        let chunk = self.inner.chunk;
        for (key, event) in pairs {
            let p = self.inner.router.partition_of(&key);
            let (keys, events) = &mut buffers[p];
            keys.push(key);
            events.push(event);
            if keys.len() >= chunk {
                return Some(p);
            }
        }
        None
    }

    /// Queues a chunk for partition `p` once it has room for all of it;
    /// returns how many events were sent. The buffers come back empty.
    async fn flush(
        &self,
        p: usize,
        keys: &mut Vec<X::Key>,
        events: &mut Vec<H::Event>,
    ) -> Result<usize, SendError<usize>> {
        let partition = &self.inner.partitions[p];
        let n = keys.len();
        loop {
            let mut room = pin!(partition.space.notified());
            room.as_mut().enable();
            if self.is_closed() {
                keys.clear();
                events.clear();
                return Err(SendError(0));
            }
            let started = {
                let mut state = partition.state.lock();
                let queued = state.queue.queued();
                if queued == 0 || queued + n <= self.inner.capacity {
                    state.queue.push_chunk(keys, events);
                    state.peak_queued = state.peak_queued.max(queued + n);
                    Some(self.inner.start_workers(&mut state))
                } else {
                    state.senders_waiting = true;
                    None
                }
            };
            if let Some(started) = started {
                self.inner.sent.fetch_add(n as u64, Ordering::Relaxed);
                self.inner.spawn_all(p, started);
                return Ok(n);
            }
            // Full when checked, after `room` was enabled: a worker wakes us
            // once the queue is down to the low-water mark.
            room.await;
        }
    }

    /// Stops accepting events: later sends fail. What was sent is still handled.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for partition in &self.inner.partitions {
            partition.space.notify_waiters();
        }
    }

    /// `true` once [`close`](Self::close) (or [`shutdown`](Self::shutdown)) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Waits until every event sent so far has been handled: nothing queued,
    /// nothing in flight, in every partition.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_idle(&self) {
        loop {
            let mut idle = pin!(self.inner.idle.notified());
            idle.as_mut().enable();
            if self
                .inner
                .partitions
                .iter()
                .all(|p| p.state.lock().queue.is_idle())
            {
                return;
            }
            idle.await;
        }
    }

    /// Closes the scheduler and waits until everything sent has been handled.
    pub async fn shutdown(&self) {
        self.close();
        self.wait_idle().await;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            partitions: self.inner.partitions.len(),
            sent: self.inner.sent.load(Ordering::Relaxed),
            handled: self.inner.handled.load(Ordering::Relaxed),
            batches: self.inner.batches.load(Ordering::Relaxed),
            panicked_batches: self.inner.panicked_batches.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for partition in &self.inner.partitions {
            let state = partition.state.lock();
            stats.queued += state.queue.queued();
            stats.in_flight_events += state.queue.in_flight_events();
            stats.in_flight_keys += state.queue.in_flight_keys();
            stats.workers += state.workers;
            stats.peak_queued = stats.peak_queued.max(state.peak_queued);
        }
        stats
    }

    /// Room left in the fullest partition: how many events can be sent with no
    /// wait whichever partitions they go to.
    pub fn min_room(&self) -> usize {
        self.inner
            .partitions
            .iter()
            .map(|p| {
                self.inner
                    .capacity
                    .saturating_sub(p.state.lock().queue.queued())
            })
            .min()
            .unwrap_or(0)
    }

    pub(super) fn add_listener(&self, listener: Listener) {
        let mut listeners = self.inner.listeners.lock();
        listeners.push(listener);
        self.inner
            .listener_count
            .store(listeners.len(), Ordering::Release);
    }

    pub(super) fn remove_listener(&self, pending: &Arc<AtomicBool>) {
        let mut listeners = self.inner.listeners.lock();
        listeners.retain(|l| !Arc::ptr_eq(&l.pending, pending));
        self.inner
            .listener_count
            .store(listeners.len(), Ordering::Release);
    }
}

impl<X, H> Inner<X, H>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
{
    /// How many workers to start: one per unit of work (a chunk, or
    /// `max_batch` ready keys) that no worker is about to take, within the cap.
    /// They are counted as running; spawn them once the lock is released.
    fn start_workers(&self, state: &mut PartitionState<X, H::Event>) -> usize {
        let ready = state.queue.ready_keys().div_ceil(self.max_batch);
        let units = state.queue.chunks() + ready;
        let wanted = units
            .saturating_sub(state.starting)
            .min(self.max_workers.saturating_sub(state.workers));
        state.workers += wanted;
        state.starting += wanted;
        wanted
    }

    /// Spawns `count` workers for partition `partition`.
    fn spawn_all(self: &Arc<Self>, partition: usize, count: usize) {
        for _ in 0..count {
            let inner = self.clone();
            self.runtime
                .spawn(async move { inner.work(partition).await });
        }
    }

    /// Tells listening stages that room was made.
    fn made_room(&self) {
        if self.listener_count.load(Ordering::Acquire) == 0 {
            return;
        }
        for listener in self.listeners.lock().iter() {
            if !listener.pending.swap(true, Ordering::AcqRel) {
                let _ = listener.stage.send(SpaceFreed);
            }
        }
    }

    /// A worker: takes a batch, handles it, acknowledges it, and again, until
    /// its partition has nothing ready.
    async fn work(self: Arc<Self>, p: usize) {
        let partition = &self.partitions[p];
        let mut batch = partition.state.lock().spare.pop().unwrap_or_default();
        batch.releaser = Some(Arc::new(Releaser(self.clone())));
        partition.state.lock().starting -= 1;
        loop {
            let (took, wake_senders, idle) = {
                let mut state = partition.state.lock();
                let took = state.queue.take_into(&mut batch, self.max_batch);
                let wake_senders = state.senders_waiting && state.queue.queued() <= self.low_water;
                if wake_senders {
                    state.senders_waiting = false;
                }
                if took == 0 {
                    state.workers -= 1;
                    batch.releaser = None;
                    state.spare.push(std::mem::take(&mut batch));
                }
                (took, wake_senders, state.queue.is_idle())
            };
            if wake_senders {
                partition.space.notify_waiters();
            }
            if took > 0 {
                self.made_room();
            }
            if idle {
                self.idle.notify_waiters();
            }
            if took == 0 {
                return;
            }
            let events = batch.len();
            let outcome = catch_panic(self.handler.handle(&mut batch)).await;
            match outcome {
                Ok(()) => {
                    self.handled.fetch_add(events as u64, Ordering::Relaxed);
                    self.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(message) => self.report_panic(&batch, events, message),
            }
            // Release the keys at once, then let the other tasks of this
            // thread (senders, stages) run before the next batch.
            let idle = {
                let mut state = partition.state.lock();
                state.queue.ack(&mut batch);
                state.queue.is_idle()
            };
            if idle {
                self.idle.notify_waiters();
            }
            tokio::task::yield_now().await;
        }
    }

    fn report_panic(&self, batch: &KeyedBatch<X::Key, H::Event>, events: usize, message: String) {
        self.panicked_batches.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(events as u64, Ordering::Relaxed);
        match &self.on_panic {
            Some(hook) => {
                let report = HandlerPanic {
                    partition: batch.partition(),
                    keys: batch.keys().cloned().collect(),
                    events,
                    message,
                };
                if catch_call(|| hook(&report)).is_err() {
                    tracing::error!("keyed on_panic hook panicked");
                }
            }
            None => tracing::error!(
                partition = batch.partition(),
                keys = batch.run_count(),
                events,
                %message,
                "keyed handler panicked; its keys were released"
            ),
        }
    }
}

/// Releases held keys of a scheduler (what its batches hand to their holds).
struct Releaser<X: KeyIndex, H: KeyedHandler>(Arc<Inner<X, H>>);

impl<X, H> ReleaseHeld for Releaser<X, H>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
{
    fn release_held(&self, partition: usize, queue: u64, slot: u32, events: usize) {
        let inner = &self.0;
        let (starts, idle) = {
            let mut state = inner.partitions[partition].state.lock();
            state.queue.release_held(queue, slot, events);
            (inner.start_workers(&mut state), state.queue.is_idle())
        };
        inner.spawn_all(partition, starts);
        if idle {
            inner.idle.notify_waiters();
        }
    }
}

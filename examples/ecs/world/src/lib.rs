//! A small entity-component world on demandflow's keyed scheduler.
//!
//! Objects are `u64` ids. Behaviours are registered in order, each declaring
//! the events it handles and the component state it keeps per object; they are
//! attached to and detached from objects at run time. An event (a name, a
//! target object, mutable arguments) goes through the target's attached
//! behaviours that handle its name, in registration order, until one halts.
//! Events for one object are handled one at a time, in the order they were
//! sent; different objects are handled concurrently.
//!
//! An unpublished package of its own so that the `ecs` example
//! (`examples/ecs/main.rs`), its tests (`tests/ecs_world.rs`) and the
//! `million_objects` bench share it as a dependency instead of including its
//! source file.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use demandflow::StartError;
use demandflow::keyed::{
    DenseKeys, HashedKeys, KeyIndex, Keyed, KeyedBatch, KeyedBuilder, KeyedConsumer, KeyedHandler,
};
use parking_lot::Mutex;

/// An object of the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u64);

/// An event name, interned by [`WorldBuilder::event`]: comparing two is
/// comparing two integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventName(u16);

/// Something that happens to an object: a name, the target, and arguments that
/// each behaviour may change before the next one sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<A> {
    /// What happened.
    pub name: EventName,
    /// The object it happened to.
    pub target: ObjectId,
    /// Its arguments, changed by each behaviour in turn.
    pub args: A,
}

/// Whether later behaviours see an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Hand the event on to the next behaviour.
    Continue,
    /// Stop here: later behaviours do not see the event.
    Halt,
}

/// What a behaviour's handler returns.
pub enum Handled {
    /// Done; the next behaviour sees the event.
    Continue,
    /// Done; no later behaviour sees the event.
    Halt,
    /// Not done yet: the object's later behaviours and events wait for this
    /// future (a timer, a reply), while other objects go on.
    Wait(Pin<Box<dyn Future<Output = Flow> + Send>>),
}

impl Handled {
    /// Waits for `future` before deciding whether the event goes on.
    pub fn wait(future: impl Future<Output = Flow> + Send + 'static) -> Handled {
        Handled::Wait(Box::pin(future))
    }
}

/// A behaviour: handles some events for the objects it is attached to, with
/// component state of its own for each of them.
///
/// `handle` runs with the object's state borrowed and must not block; to wait,
/// change what there is to change and return [`Handled::Wait`].
pub trait Behaviour<A>: Send + Sync + 'static {
    /// The state the behaviour keeps for each object it is attached to, stored
    /// densely (a vector per partition, indexed by object).
    type State: Default + Send + 'static;

    /// A name for logs.
    fn name(&self) -> &str;

    /// The events it handles.
    fn handles(&self) -> Vec<EventName>;

    /// Handles `event` for `object`, whose state is `state`.
    fn handle(&self, object: ObjectId, state: &mut Self::State, event: &mut Event<A>) -> Handled;
}

/// A registered behaviour, typed so that attaching it takes its state type.
pub struct BehaviourId<B>(u8, PhantomData<fn() -> B>);

impl<B> Clone for BehaviourId<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for BehaviourId<B> {}

impl<B> fmt::Debug for BehaviourId<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BehaviourId({})", self.0)
    }
}

/// Why an event was not sent; it is handed back.
#[derive(Debug, PartialEq)]
pub enum SendError<A> {
    /// No behaviour attached to the target handles the event's name, so it was
    /// not queued.
    NoHandler(Event<A>),
    /// The world was shut down.
    Closed(Event<A>),
}

/// What [`World::send_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Events queued.
    pub sent: u64,
    /// Events refused because no attached behaviour handles them.
    pub no_handler: u64,
}

/// The world's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Events that went through every behaviour they were meant to (or were halted).
    pub handled: u64,
    /// Events a behaviour halted.
    pub halted: u64,
    /// Times an event waited on a behaviour's future.
    pub waited: u64,
    /// Events refused at send time: no handler.
    pub no_handler: u64,
    /// Events whose target had no interested behaviour left when they were
    /// handled (detached after sending).
    pub orphaned: u64,
    /// Most events queued in one partition at once.
    pub peak_queued: usize,
    /// Events in batches whose handler panicked.
    pub failed: u64,
}

/// One behaviour's state for the objects of one partition, with the behaviour:
/// handling an event is one virtual call.
trait Column<A>: Send {
    fn handle(&mut self, slot: usize, object: ObjectId, event: &mut Event<A>) -> Handled;
    /// Runs the behaviour over a whole batch of single events (one per
    /// object): `events[i]` for the object in `slots[i]`, when `masks[i]` has
    /// `bit`. One virtual call per batch instead of one per event. A halted
    /// or waiting event's mask is cleared, so later behaviours skip it; a
    /// waiting event is pushed to `waits` with its index.
    fn handle_column(&mut self, column: ColumnPass<'_, A>);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The states of behaviour `B`, densely, by slot.
struct States<B: Behaviour<A>, A> {
    behaviour: Arc<B>,
    states: Vec<B::State>,
    args: PhantomData<fn(A)>,
}

impl<A: 'static, B: Behaviour<A>> Column<A> for States<B, A> {
    #[inline]
    fn handle(&mut self, slot: usize, object: ObjectId, event: &mut Event<A>) -> Handled {
        self.behaviour.handle(object, &mut self.states[slot], event)
    }

    fn handle_column(&mut self, column: ColumnPass<'_, A>) {
        let ColumnPass {
            bit,
            slots,
            events,
            masks,
            halted,
            waits,
        } = column;
        for (i, ((&slot, event), mask)) in slots.iter().zip(events).zip(masks).enumerate() {
            if *mask & bit == 0 {
                continue;
            }
            match self
                .behaviour
                .handle(event.target, &mut self.states[slot as usize], event)
            {
                Handled::Continue => {}
                Handled::Halt => {
                    *mask = 0;
                    *halted += 1;
                }
                Handled::Wait(future) => {
                    *mask = 0;
                    waits.push((i, future));
                }
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// What a behaviour returned to wait on: the rest of the event's way waits for it.
type Pending = Pin<Box<dyn Future<Output = Flow> + Send>>;

/// One behaviour's pass over a batch of single events (see
/// [`Column::handle_column`]).
struct ColumnPass<'a, A> {
    /// The behaviour's bit in the masks.
    bit: u64,
    slots: &'a [u32],
    events: &'a mut [Event<A>],
    /// Per event: the behaviours still to run it (attached and handling its name).
    masks: &'a mut [u64],
    halted: &'a mut u64,
    waits: &'a mut Vec<(usize, Pending)>,
}

/// Makes a behaviour's empty column, for each partition.
type NewColumn<A> = Box<dyn Fn() -> Box<dyn Column<A>> + Send + Sync>;

/// The component state of one partition's objects: a column per behaviour.
struct Shard<A> {
    columns: Vec<Box<dyn Column<A>>>,
    /// Scratch space of a column-wise batch: per event, its slot and the
    /// behaviours still to run it.
    slots: Vec<u32>,
    masks: Vec<u64>,
}

impl<A: 'static> Shard<A> {
    fn states<B: Behaviour<A>>(&mut self, id: BehaviourId<B>) -> &mut Vec<B::State> {
        &mut self.columns[id.0 as usize]
            .as_any_mut()
            .downcast_mut::<States<B, A>>()
            .expect("each behaviour has a column of its state")
            .states
    }
}

struct Shared<A> {
    names: Vec<String>,
    /// Per event name: the behaviours that handle it, in registration order.
    handlers: Vec<Vec<u8>>,
    /// Per event name: the same, as a bit mask.
    handler_masks: Vec<u64>,
    /// Per object: the behaviours attached to it, as a bit mask, at the
    /// object's [`Placement::attached_index`].
    attached: Box<[AtomicU64]>,
    objects: AtomicU64,
    capacity: u64,
    shards: Box<[Mutex<Shard<A>>]>,
    /// Where objects' state lives.
    placement: Placement,
    handled: AtomicU64,
    halted: AtomicU64,
    waited: AtomicU64,
    no_handler: AtomicU64,
    orphaned: AtomicU64,
}

/// Where each object's state lives: its partition (the keyed scheduler's, so
/// that a worker finds its batch's objects in its own shard) and its slot in
/// that partition's columns.
enum Placement {
    /// [`DenseKeys`]: object `o` is in partition `o % P`, slot `o / P`, the
    /// same slot the scheduler's batches carry. The attached masks are laid out
    /// partition after partition (`p * per_partition + slot`), so a worker
    /// reads only its own partition's masks, one after the other.
    Dense {
        indexes: Vec<DenseKeys>,
        per_partition: usize,
    },
    /// [`HashedKeys`]: the partition comes from the key hash; the scheduler's
    /// slots are recycled when a key goes idle, so each object gets a state
    /// slot of its own in its partition when it is spawned.
    Hashed {
        router: HashedKeys<u64>,
        /// Per object: its slot.
        slots: Box<[AtomicU32]>,
        /// Per partition: the next free slot.
        next: Box<[AtomicU32]>,
    },
}

impl Placement {
    fn new<X: WorldKeys>(partitions: NonZeroUsize, capacity: usize) -> Placement {
        if X::HASHED {
            Placement::Hashed {
                router: HashedKeys::new(0, partitions),
                slots: (0..capacity).map(|_| AtomicU32::new(u32::MAX)).collect(),
                next: (0..partitions.get()).map(|_| AtomicU32::new(0)).collect(),
            }
        } else {
            Placement::Dense {
                indexes: (0..partitions.get())
                    .map(|p| DenseKeys::new(p, partitions))
                    .collect(),
                per_partition: capacity.div_ceil(partitions.get()),
            }
        }
    }

    /// Masks to allocate.
    fn attached_len(&self, capacity: usize) -> usize {
        match self {
            Placement::Dense {
                indexes,
                per_partition,
            } => per_partition * indexes.len(),
            Placement::Hashed { .. } => capacity,
        }
    }

    /// Gives objects `range` their slots (hashed placement only).
    fn spawned(&self, range: std::ops::Range<u64>) {
        if let Placement::Hashed {
            router,
            slots,
            next,
        } = self
        {
            for o in range {
                let slot = next[router.partition_of(&o)].fetch_add(1, Ordering::Relaxed);
                slots[o as usize].store(slot, Ordering::Relaxed);
            }
        }
    }

    /// The partition and slot of `object`.
    #[inline]
    fn place(&self, object: u64) -> (usize, usize) {
        match self {
            Placement::Dense { indexes, .. } => {
                let p = indexes[0].partition_of(&object);
                (p, indexes[p].clone().slot(&object))
            }
            Placement::Hashed { router, slots, .. } => (
                router.partition_of(&object),
                slots[object as usize].load(Ordering::Relaxed) as usize,
            ),
        }
    }

    /// Where `object`'s attached mask is.
    #[inline]
    fn attached_index(&self, object: u64) -> usize {
        match self {
            Placement::Dense { per_partition, .. } => {
                let (p, slot) = self.place(object);
                p * per_partition + slot
            }
            Placement::Hashed { .. } => object as usize,
        }
    }
}

/// The key indexes a world can run on: [`DenseKeys`] (the default, state
/// found by arithmetic) and [`HashedKeys<u64>`] (objects spread by key hash,
/// as the partition dispatcher would, state found through a per-object slot).
pub trait WorldKeys: KeyIndex<Key = u64> {
    /// Whether partitions come from the key hash.
    const HASHED: bool;
}

impl WorldKeys for DenseKeys {
    const HASHED: bool = false;
}

impl WorldKeys for HashedKeys<u64> {
    const HASHED: bool = true;
}

/// Where a dispatch stopped.
enum Step {
    /// The event went through (or was halted).
    Done,
    /// A behaviour returned a future: the event goes on at behaviour `next`
    /// once it is ready.
    Wait(usize, Pin<Box<dyn Future<Output = Flow> + Send>>),
}

impl<A: Send + 'static> Shared<A> {
    /// `true` when some behaviour attached to the event's target handles it.
    #[inline]
    fn has_handler(&self, event: &Event<A>) -> bool {
        let at = self.placement.attached_index(event.target.0);
        let attached = self.attached[at].load(Ordering::Acquire);
        attached & self.handler_masks[event.name.0 as usize] != 0
    }

    /// Runs `event` through its handlers from position `from`.
    #[inline]
    fn dispatch(
        &self,
        shard: &mut Shard<A>,
        slot: usize,
        event: &mut Event<A>,
        from: usize,
    ) -> Step {
        let at = self.placement.attached_index(event.target.0);
        let mask = self.attached[at].load(Ordering::Relaxed);
        let handlers = &self.handlers[event.name.0 as usize];
        if mask & self.handler_masks[event.name.0 as usize] == 0 {
            self.orphaned.fetch_add(1, Ordering::Relaxed);
            return Step::Done;
        }
        for (pos, &b) in handlers.iter().enumerate().skip(from) {
            if mask & (1 << b) == 0 {
                continue;
            }
            match shard.columns[b as usize].handle(slot, event.target, event) {
                Handled::Continue => {}
                Handled::Halt => {
                    self.halted.fetch_add(1, Ordering::Relaxed);
                    return Step::Done;
                }
                Handled::Wait(future) => return Step::Wait(pos + 1, future),
            }
        }
        Step::Done
    }

    /// Finishes a held object's events: the one that waits (from behaviour
    /// `next` once `future` is ready), then the rest. The object stays busy
    /// until `hold` is dropped.
    async fn resume(
        self: Arc<Self>,
        hold: demandflow::keyed::KeyHold<u64>,
        mut events: Vec<Event<A>>,
        mut next: usize,
        mut future: Pin<Box<dyn Future<Output = Flow> + Send>>,
    ) {
        let slot = self.placement.place(*hold.key()).1;
        let shard = &self.shards[hold.partition()];
        let mut handled = 0;
        for event in &mut events {
            let mut flow = Flow::Continue;
            loop {
                if next > 0 {
                    self.waited.fetch_add(1, Ordering::Relaxed);
                    flow = future.as_mut().await;
                }
                if flow == Flow::Halt {
                    self.halted.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                let step = self.dispatch(&mut shard.lock(), slot, event, next);
                match step {
                    Step::Done => break,
                    Step::Wait(at, wait) => {
                        next = at;
                        future = wait;
                    }
                }
            }
            next = 0;
            handled += 1;
        }
        self.handled.fetch_add(handled, Ordering::Relaxed);
        drop(hold);
    }
}

impl<A: Send + 'static> Shared<A> {
    /// Handles a batch whose objects have one event each, behaviour by
    /// behaviour: each behaviour runs over the whole batch in one call, its
    /// handler inlined in the loop. Each event still meets its behaviours in
    /// registration order, stops at a halt and waits at a future, exactly as
    /// [`dispatch`](Self::dispatch) would; only the order *between objects*
    /// differs, which the world leaves open (different objects are handled
    /// concurrently).
    fn handle_columns(self: &Arc<Self>, batch: &mut KeyedBatch<u64, Event<A>>) {
        let mut waits = Vec::new();
        // (run, next behaviour, future) of the events that wait.
        let mut resumes = Vec::new();
        let mut halted = 0;
        let events_in = batch.len();
        {
            let mut guard = self.shards[batch.partition()].lock();
            let shard = &mut *guard;
            shard.slots.clear();
            let first = match &self.placement {
                Placement::Dense { per_partition, .. } => {
                    shard.slots.extend(batch.slots().map(|slot| slot as u32));
                    Some(batch.partition() * per_partition)
                }
                Placement::Hashed { slots, .. } => {
                    shard.slots.extend(
                        batch
                            .keys()
                            .map(|&o| slots[o as usize].load(Ordering::Relaxed)),
                    );
                    None
                }
            };
            shard.masks.clear();
            let mut orphaned = 0;
            let mut any = 0;
            let events = batch.events_mut();
            let attached = &self.attached;
            shard
                .masks
                .extend(events.iter().zip(&shard.slots).map(|(event, &slot)| {
                    // Dense: the partition's masks, by slot; hashed: by object.
                    let at = first.map_or(event.target.0 as usize, |first| first + slot as usize);
                    let mask = attached[at].load(Ordering::Relaxed)
                        & self.handler_masks[event.name.0 as usize];
                    orphaned += u64::from(mask == 0);
                    any |= mask;
                    mask
                }));
            if orphaned > 0 {
                self.orphaned.fetch_add(orphaned, Ordering::Relaxed);
            }
            for (b, column) in shard.columns.iter_mut().enumerate() {
                let bit = 1 << b;
                if any & bit == 0 {
                    continue;
                }
                column.handle_column(ColumnPass {
                    bit,
                    slots: &shard.slots,
                    events: &mut *events,
                    masks: &mut shard.masks,
                    halted: &mut halted,
                    waits: &mut waits,
                });
                for (i, future) in waits.drain(..) {
                    // The event goes on after behaviour `b` in its name's list.
                    let name = events[i].name.0 as usize;
                    let next = self.handlers[name]
                        .iter()
                        .position(|&h| h as usize == b)
                        .expect("a behaviour waits only on names it handles")
                        + 1;
                    resumes.push((i, next, future));
                }
            }
        }
        if halted > 0 {
            self.halted.fetch_add(halted, Ordering::Relaxed);
        }
        self.handled
            .fetch_add((events_in - resumes.len()) as u64, Ordering::Relaxed);
        // Waiting objects go on in tasks of their own, taken out of the
        // batch last run first so that run numbers stay right.
        resumes.sort_unstable_by_key(|(run, _, _)| *run);
        for (run, next, future) in resumes.into_iter().rev() {
            let (hold, events) = batch.hold(run);
            tokio::spawn(self.clone().resume(hold, events, next, future));
        }
    }
}

/// The keyed handler: runs each batch of objects through their behaviours.
pub struct Dispatch<A>(Arc<Shared<A>>);

impl<A: Send + 'static> KeyedHandler for Dispatch<A> {
    type Key = u64;
    type Event = Event<A>;

    async fn handle(&self, batch: &mut KeyedBatch<u64, Event<A>>) {
        let shared = &self.0;
        if batch.len() == batch.run_count() {
            // One event per object (a frame): behaviour after behaviour.
            shared.handle_columns(batch);
            return;
        }
        // (run, event, next behaviour, future) of objects that have to wait.
        let mut waiting = Vec::new();
        let mut handled = 0;
        {
            let mut shard = shared.shards[batch.partition()].lock();
            for (run, (&object, slot, events)) in batch.iter_mut_with_slots().enumerate() {
                let slot = match &shared.placement {
                    Placement::Dense { .. } => slot,
                    Placement::Hashed { .. } => shared.placement.place(object).1,
                };
                for (i, event) in events.iter_mut().enumerate() {
                    match shared.dispatch(&mut shard, slot, event, 0) {
                        Step::Done => handled += 1,
                        Step::Wait(next, future) => {
                            waiting.push((run, i, next, future));
                            break;
                        }
                    }
                }
            }
        }
        shared.handled.fetch_add(handled, Ordering::Relaxed);
        // Take waiting objects out of the batch (last first, so run numbers
        // stay right) and finish them in tasks of their own: the rest of the
        // batch is released when this returns.
        for (run, i, next, future) in waiting.into_iter().rev() {
            let (hold, mut events) = batch.hold(run);
            events.drain(..i);
            tokio::spawn(shared.clone().resume(hold, events, next, future));
        }
    }
}

/// Registers event names and behaviours, then starts a [`World`].
pub struct WorldBuilder<A> {
    behaviours: Vec<(String, NewColumn<A>)>,
    handles: Vec<Vec<EventName>>,
    names: HashMap<String, EventName>,
    capacity: usize,
    partitions: NonZeroUsize,
    max_workers: NonZeroUsize,
    max_batch: NonZeroUsize,
    queue_capacity: NonZeroUsize,
    name: Option<String>,
}

impl<A: Send + 'static> WorldBuilder<A> {
    /// A world for up to `capacity` objects.
    pub fn new(capacity: usize) -> Self {
        WorldBuilder {
            behaviours: Vec::new(),
            handles: Vec::new(),
            names: HashMap::new(),
            capacity,
            partitions: NonZeroUsize::new(num_cpus()).unwrap_or(NonZeroUsize::MIN),
            max_workers: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
            max_batch: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            queue_capacity: NonZeroUsize::new(65_536).unwrap_or(NonZeroUsize::MIN),
            name: None,
        }
    }

    /// Names the world's keyed scheduler in the registry, so a dashboard or
    /// the metrics label it (default: `keyed-ID`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Partitions of the keyed scheduler (default: one per core).
    pub fn partitions(mut self, n: NonZeroUsize) -> Self {
        self.partitions = n;
        self
    }

    /// Workers per partition (default 4).
    pub fn max_workers(mut self, n: NonZeroUsize) -> Self {
        self.max_workers = n;
        self
    }

    /// Events a worker takes at once (default 1024).
    pub fn max_batch(mut self, n: NonZeroUsize) -> Self {
        self.max_batch = n;
        self
    }

    /// Events queued per partition before senders wait (default 65 536).
    pub fn queue_capacity(mut self, n: NonZeroUsize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// The name `name`, interned.
    ///
    /// # Panics
    ///
    /// Beyond 65 536 names.
    pub fn event(&mut self, name: &str) -> EventName {
        let next = EventName(u16::try_from(self.names.len()).expect("at most 65 536 event names"));
        *self.names.entry(name.to_owned()).or_insert(next)
    }

    /// Registers `behaviour` after those registered before it: for an event
    /// both handle, it runs later.
    ///
    /// # Panics
    ///
    /// Beyond 64 behaviours.
    pub fn register<B: Behaviour<A>>(&mut self, behaviour: B) -> BehaviourId<B> {
        let id = u8::try_from(self.behaviours.len())
            .ok()
            .filter(|&id| id < 64)
            .expect("at most 64 behaviours");
        self.handles.push(behaviour.handles());
        let name = behaviour.name().to_owned();
        let behaviour = Arc::new(behaviour);
        let new_column: NewColumn<A> = Box::new(move || {
            Box::new(States {
                behaviour: behaviour.clone(),
                states: Vec::new(),
                args: PhantomData,
            })
        });
        self.behaviours.push((name, new_column));
        BehaviourId(id, PhantomData)
    }

    /// Starts the world on the current tokio runtime, on [`DenseKeys`]:
    /// object ids are spread over partitions by arithmetic, and their state
    /// is found the same way (the fast path for ids allocated from 0).
    pub fn start(self) -> Result<World<A>, StartError> {
        self.start_on()
    }

    /// Starts the world on the current tokio runtime, on [`HashedKeys`]:
    /// objects are spread over partitions by the shared key hash (where the
    /// partition dispatcher would send them), each object's state slot is
    /// looked up per event, and the scheduler keeps a hash map entry per
    /// object with events queued. The same contract as [`start`](Self::start),
    /// at the cost of the hashing: the path for worlds whose ids are not dense.
    pub fn start_hashed(self) -> Result<World<A, HashedKeys<u64>>, StartError> {
        self.start_on()
    }

    fn start_on<X: WorldKeys>(self) -> Result<World<A, X>, StartError> {
        let mut names = vec![String::new(); self.names.len()];
        for (name, id) in &self.names {
            names[id.0 as usize] = name.clone();
        }
        let mut handlers = vec![Vec::new(); names.len()];
        let mut handler_masks = vec![0_u64; names.len()];
        for (b, handles) in self.handles.iter().enumerate() {
            for name in handles {
                handlers[name.0 as usize].push(b as u8);
                handler_masks[name.0 as usize] |= 1 << b;
            }
        }
        let shards = (0..self.partitions.get())
            .map(|_| {
                Mutex::new(Shard {
                    columns: self.behaviours.iter().map(|(_, new)| new()).collect(),
                    slots: Vec::new(),
                    masks: Vec::new(),
                })
            })
            .collect();
        let placement = Placement::new::<X>(self.partitions, self.capacity);
        let shared = Arc::new(Shared {
            names,
            handlers,
            handler_masks,
            attached: (0..placement.attached_len(self.capacity))
                .map(|_| AtomicU64::new(0))
                .collect(),
            objects: AtomicU64::new(0),
            capacity: self.capacity as u64,
            shards,
            placement,
            handled: AtomicU64::new(0),
            halted: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            no_handler: AtomicU64::new(0),
            orphaned: AtomicU64::new(0),
        });
        let mut keyed = KeyedBuilder::<X, _>::with_index(Dispatch(shared.clone()));
        if let Some(name) = self.name {
            keyed = keyed.name(name);
        }
        let keyed = keyed
            .partitions(self.partitions)
            .max_workers(self.max_workers)
            .max_batch(self.max_batch)
            .capacity(self.queue_capacity)
            .start()?;
        Ok(World { keyed, shared })
    }
}

/// The consumer stage [`World::consumer`] makes.
pub type WorldConsumer<A, X = DenseKeys> = KeyedConsumer<X, Dispatch<A>, fn(&Event<A>) -> u64>;

/// The key of an event: its target.
fn target_of<A>(event: &Event<A>) -> u64 {
    event.target.0
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// A running world: objects, their behaviours and state, and the keyed
/// scheduler that handles their events. Cloning gives another handle.
///
/// `X` is the scheduler's key index: [`DenseKeys`] from
/// [`WorldBuilder::start`], [`HashedKeys<u64>`] from
/// [`WorldBuilder::start_hashed`].
pub struct World<A: Send + 'static, X: WorldKeys = DenseKeys> {
    keyed: Keyed<X, Dispatch<A>>,
    shared: Arc<Shared<A>>,
}

impl<A: Send + 'static, X: WorldKeys> Clone for World<A, X> {
    fn clone(&self) -> Self {
        World {
            keyed: self.keyed.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<A: Send + 'static, X: WorldKeys> World<A, X> {
    /// Creates an object.
    ///
    /// # Panics
    ///
    /// Beyond the world's capacity.
    pub fn spawn(&self) -> ObjectId {
        self.spawn_many(1).start
    }

    /// Creates `n` objects with consecutive ids.
    ///
    /// # Panics
    ///
    /// Beyond the world's capacity.
    pub fn spawn_many(&self, n: u64) -> std::ops::Range<ObjectId> {
        let first = self.shared.objects.fetch_add(n, Ordering::Relaxed);
        assert!(
            first + n <= self.shared.capacity,
            "the world holds at most {} objects",
            self.shared.capacity
        );
        self.shared.placement.spawned(first..first + n);
        ObjectId(first)..ObjectId(first + n)
    }

    /// Where `object`'s state lives: its partition and slot.
    fn place(&self, object: ObjectId) -> (usize, usize) {
        self.shared.placement.place(object.0)
    }

    /// Attaches behaviour `id` to `object`, with `state` as its component state.
    pub fn attach<B: Behaviour<A>>(&self, object: ObjectId, id: BehaviourId<B>, state: B::State) {
        let (p, slot) = self.place(object);
        {
            let mut shard = self.shared.shards[p].lock();
            let column = shard.states(id);
            if column.len() <= slot {
                column.resize_with(slot + 1, B::State::default);
            }
            column[slot] = state;
        }
        let at = self.shared.placement.attached_index(object.0);
        self.shared.attached[at].fetch_or(1 << id.0, Ordering::Release);
    }

    /// Attaches behaviour `id` to every object of `objects`, each with the
    /// state `state` makes for it.
    pub fn attach_many<B: Behaviour<A>>(
        &self,
        objects: std::ops::Range<ObjectId>,
        id: BehaviourId<B>,
        mut state: impl FnMut(ObjectId) -> B::State,
    ) {
        for p in 0..self.shared.shards.len() {
            let mut shard = self.shared.shards[p].lock();
            let column = shard.states(id);
            for o in objects.start.0..objects.end.0 {
                let (op, slot) = self.place(ObjectId(o));
                if op != p {
                    continue;
                }
                if column.len() <= slot {
                    column.resize_with(slot + 1, B::State::default);
                }
                column[slot] = state(ObjectId(o));
                let at = self.shared.placement.attached_index(o);
                self.shared.attached[at].fetch_or(1 << id.0, Ordering::Release);
            }
        }
    }

    /// Detaches behaviour `id` from `object` and returns its state; `None` if
    /// it was not attached. Events already queued for the object no longer go
    /// through it.
    pub fn detach<B: Behaviour<A>>(
        &self,
        object: ObjectId,
        id: BehaviourId<B>,
    ) -> Option<B::State> {
        let at = self.shared.placement.attached_index(object.0);
        let before = self.shared.attached[at].fetch_and(!(1 << id.0), Ordering::AcqRel);
        if before & (1 << id.0) == 0 {
            return None;
        }
        let (p, slot) = self.place(object);
        let mut shard = self.shared.shards[p].lock();
        Some(std::mem::take(&mut shard.states(id)[slot]))
    }

    /// A copy of `object`'s state for behaviour `id`, if attached.
    pub fn state<B: Behaviour<A>>(&self, object: ObjectId, id: BehaviourId<B>) -> Option<B::State>
    where
        B::State: Clone,
    {
        let at = self.shared.placement.attached_index(object.0);
        if self.shared.attached[at].load(Ordering::Acquire) & (1 << id.0) == 0 {
            return None;
        }
        let (p, slot) = self.place(object);
        let shard = self.shared.shards[p].lock();
        let states = &shard.columns[id.0 as usize]
            .as_any()
            .downcast_ref::<States<B, A>>()
            .expect("each behaviour has a column of its state")
            .states;
        states.get(slot).cloned()
    }

    /// The text of `name`.
    pub fn name_of(&self, name: EventName) -> &str {
        &self.shared.names[name.0 as usize]
    }

    /// `true` when some behaviour attached to the event's target handles it.
    pub fn has_handler(&self, event: &Event<A>) -> bool {
        self.shared.has_handler(event)
    }

    /// Queues `event` behind the target's earlier events, waiting while its
    /// partition is full.
    ///
    /// # Errors
    ///
    /// [`SendError::NoHandler`] when no behaviour attached to the target
    /// handles the event (nothing is queued), [`SendError::Closed`] after
    /// shutdown.
    pub async fn send(&self, event: Event<A>) -> Result<(), SendError<A>> {
        if !self.has_handler(&event) {
            self.shared.no_handler.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::NoHandler(event));
        }
        self.keyed
            .send(event.target.0, event)
            .await
            .map_err(|e| SendError::Closed(e.0.1))
    }

    /// Sends many events; those without a handler are refused and counted.
    ///
    /// # Errors
    ///
    /// The number of events sent, after shutdown.
    pub async fn send_all(
        &self,
        events: impl IntoIterator<Item = Event<A>>,
    ) -> Result<Sent, usize> {
        let shared = &*self.shared;
        let mut refused = 0;
        let accepted = events.into_iter().filter_map(|event| {
            if shared.has_handler(&event) {
                Some((event.target.0, event))
            } else {
                refused += 1;
                None
            }
        });
        let result = self.keyed.send_all(accepted).await;
        self.shared.no_handler.fetch_add(refused, Ordering::Relaxed);
        match result {
            Ok(sent) => Ok(Sent {
                sent: sent as u64,
                no_handler: refused,
            }),
            Err(e) => Err(e.0),
        }
    }

    /// A consumer stage that feeds this world from a pipeline, keyed by target,
    /// asking its producers only for as many events as there is room for.
    /// Events reach the world unchecked: one without a handler is counted as
    /// orphaned when handled, not refused.
    pub fn consumer(&self) -> WorldConsumer<A, X> {
        self.keyed.consumer(target_of::<A>)
    }

    /// Waits until every event sent so far has been handled.
    pub async fn idle(&self) {
        self.keyed.wait_idle().await;
    }

    /// Stops taking events and waits for those sent to be handled.
    pub async fn shutdown(&self) {
        self.keyed.shutdown().await;
    }

    /// The keyed scheduler's counters.
    pub fn keyed_stats(&self) -> demandflow::keyed::Stats {
        self.keyed.stats()
    }

    /// The counters.
    pub fn stats(&self) -> WorldStats {
        let keyed = self.keyed.stats();
        WorldStats {
            handled: self.shared.handled.load(Ordering::Relaxed),
            halted: self.shared.halted.load(Ordering::Relaxed),
            waited: self.shared.waited.load(Ordering::Relaxed),
            no_handler: self.shared.no_handler.load(Ordering::Relaxed),
            orphaned: self.shared.orphaned.load(Ordering::Relaxed),
            peak_queued: keyed.peak_queued,
            failed: keyed.failed,
        }
    }
}

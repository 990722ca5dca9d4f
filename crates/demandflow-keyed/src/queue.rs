//! The per-key scheduling state of one partition: a pure state machine.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::KeyIndex;

/// The key has nothing queued and nothing in flight.
const IDLE: u8 = 0;
/// The key is in the ready list with one event.
const READY: u8 = 1;
/// The key is in the ready list, and more of its events wait in its list.
const READY_MORE: u8 = 2;
/// The key is in flight (a worker holds a batch with it) and has nothing queued.
const BUSY: u8 = 3;
/// The key is in flight and events wait in its list behind it.
const BUSY_MORE: u8 = 4;

/// End of a list of queued events.
const NIL: u32 = u32::MAX;

/// One event waiting behind its key, in a singly linked list through `nodes`.
struct Node<E> {
    event: Option<E>,
    next: u32,
}

/// A list of queued events of one key: the first and last node.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// Emptied vectors a queue keeps for senders to refill, at most.
const SPARE_VECS: usize = 64;

/// Events pushed together with [`KeyedQueue::push_chunk`], `events[i]` for `keys[i]`.
struct Chunk<K, E> {
    keys: Vec<K>,
    events: Vec<E>,
}

/// Gives every queue a distinct id, so a batch can only be acknowledged where
/// it was taken.
static NEXT_QUEUE: AtomicU64 = AtomicU64::new(1);

/// The per-key scheduling state of one partition, without any runtime: which
/// keys are busy, what waits behind them, and which keys are ready.
///
/// Events are [`push`](KeyedQueue::push)ed with their key. A key that is idle
/// becomes *ready*; [`take`](KeyedQueue::take) hands ready keys out in
/// [`KeyedBatch`]es of *runs* — a key with all its queued events, in the order
/// they were pushed — and marks those keys *busy*. Events pushed for a busy key
/// wait behind it; [`ack`](KeyedQueue::ack) (called once the batch has been
/// handled) makes every key of the batch idle again, or ready at once when
/// events waited behind it. So:
///
/// - per key, events come out in the order they went in (FIFO);
/// - a key is in at most one batch at a time (mutual exclusion);
/// - a busy key never holds up other keys: they stay ready and are taken by
///   the next [`take`](KeyedQueue::take);
/// - every event pushed comes out in exactly one batch.
///
/// Per-key state is a byte in a vector indexed by the key's slot (see
/// [`KeyIndex`]); events wait in a ready list or, behind a busy key, in an arena
/// of linked nodes that is reused. Pushing, taking and acknowledging cost O(1)
/// per event and allocate nothing once the vectors have grown.
///
/// Many events are best pushed as a chunk ([`push_chunk`](KeyedQueue::push_chunk)):
/// that costs O(1) for the pusher, and the chunk is looked at by the next
/// [`take`](KeyedQueue::take); when its keys are idle, which is the common case,
/// its event vector becomes the batch as it is.
///
/// The runtime scheduler ([`Keyed`](crate::Keyed)) runs one queue per partition
/// behind a lock and starts workers for the batches it takes; this type is the
/// part of it that can be tested, and reused, without tokio.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_keyed::{DenseKeys, KeyIndex, KeyedBatch, KeyedQueue};
///
/// let mut queue = KeyedQueue::new(DenseKeys::new(0, NonZeroUsize::MIN));
/// queue.push(&7, "a");
/// queue.push(&8, "b");
/// queue.push(&7, "c");
///
/// // Both keys are ready; key 7 comes out with both of its events.
/// let mut batch = queue.take(100).unwrap();
/// let runs: Vec<(u64, Vec<&str>)> = batch.iter().map(|(k, e)| (*k, e.to_vec())).collect();
/// assert_eq!(runs, [(7, vec!["a", "c"]), (8, vec!["b"])]);
///
/// // Key 7 is busy until the batch is acknowledged: its new event waits.
/// queue.push(&7, "d");
/// assert!(queue.take(100).is_none());
/// queue.ack(&mut batch);
/// let batch = queue.take(100).unwrap();
/// assert_eq!(batch.iter().map(|(k, e)| (*k, e.to_vec())).collect::<Vec<_>>(), [(7, vec!["d"])]);
/// ```
pub struct KeyedQueue<X: KeyIndex, E> {
    index: X,
    id: u64,
    partition: usize,
    /// Per slot: IDLE, READY, READY_MORE, BUSY or BUSY_MORE.
    state: Vec<u8>,
    /// Per slot, meaningful in the *_MORE states: events waiting behind the
    /// key's first. Grown only as far as the largest slot that needed one.
    lists: Vec<List>,
    nodes: Vec<Node<E>>,
    free_nodes: u32,
    /// Ready keys, each with its first event (its others are in its list).
    ready: VecDeque<(u32, E)>,
    /// Chunks pushed whole, oldest first, not looked at yet.
    inbox: VecDeque<Chunk<X::Key, E>>,
    /// Emptied vectors, handed back to senders (see `push_chunk`).
    spare_keys: Vec<Vec<X::Key>>,
    spare_events: Vec<Vec<E>>,
    /// Scratch space of `ingest`: per event of a chunk, its slot and whether it
    /// was claimed.
    scratch_slots: Vec<u32>,
    scratch_claims: Vec<bool>,
    queued: usize,
    in_flight_events: usize,
    in_flight_keys: usize,
    batches_out: usize,
}

impl<X: KeyIndex, E> KeyedQueue<X, E> {
    /// An empty queue using `index` to find keys' slots.
    pub fn new(index: X) -> Self {
        Self::with_partition(index, 0)
    }

    /// An empty queue for partition `partition` (reported by its batches).
    pub fn with_partition(index: X, partition: usize) -> Self {
        KeyedQueue {
            index,
            id: NEXT_QUEUE.fetch_add(1, Ordering::Relaxed),
            partition,
            state: Vec::new(),
            lists: Vec::new(),
            nodes: Vec::new(),
            free_nodes: NIL,
            ready: VecDeque::new(),
            inbox: VecDeque::new(),
            spare_keys: Vec::new(),
            spare_events: Vec::new(),
            scratch_slots: Vec::new(),
            scratch_claims: Vec::new(),
            queued: 0,
            in_flight_events: 0,
            in_flight_keys: 0,
            batches_out: 0,
        }
    }

    /// The partition this queue serves.
    pub fn partition(&self) -> usize {
        self.partition
    }

    /// The index that maps keys to slots.
    pub fn index(&self) -> &X {
        &self.index
    }

    /// Events pushed and not yet taken.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Events taken and not yet acknowledged.
    pub fn in_flight_events(&self) -> usize {
        self.in_flight_events
    }

    /// Keys taken and not yet acknowledged (busy keys).
    pub fn in_flight_keys(&self) -> usize {
        self.in_flight_keys
    }

    /// Batches taken and not yet acknowledged.
    pub fn batches_out(&self) -> usize {
        self.batches_out
    }

    /// Keys known to be ready: [`take`](Self::take) hands them out first.
    /// Chunks not looked at yet are not counted (see [`has_work`](Self::has_work)).
    pub fn ready_keys(&self) -> usize {
        self.ready.len()
    }

    /// Chunks pushed with [`push_chunk`](Self::push_chunk) and not looked at yet.
    pub fn chunks(&self) -> usize {
        self.inbox.len()
    }

    /// `true` when [`take`](Self::take) may find something: a ready key or a
    /// chunk not looked at yet (whose keys may all turn out to be busy).
    pub fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.inbox.is_empty()
    }

    /// `true` when no event is queued, no batch is out and no key is held.
    pub fn is_idle(&self) -> bool {
        self.queued == 0 && self.in_flight_keys == 0 && self.batches_out == 0
    }

    /// Adds `event` behind the events already pushed for `key`.
    ///
    /// # Panics
    ///
    /// If the index hands out a slot of 2^32 - 1 or more (more than four
    /// billion keys in one partition).
    #[inline]
    pub fn push(&mut self, key: &X::Key, event: E) {
        if let Some(tail) = self.inbox.back_mut() {
            // Behind chunks not looked at yet: keep the order.
            tail.keys.push(key.clone());
            tail.events.push(event);
            self.queued += 1;
            return;
        }
        let slot = self.slot_of(key);
        self.push_slot(slot, event);
    }

    /// Adds a chunk of events, `events[i]` for `keys[i]`, behind everything
    /// pushed before, in O(1): the keys are looked at when a
    /// [`take`](Self::take) reaches the chunk. `keys` and `events` are left
    /// empty, with the capacity of vectors the queue no longer needs, so a
    /// sender can fill them again without allocating.
    ///
    /// When every key of the chunk is idle at that point (the common case), the
    /// chunk's event vector becomes the batch, without copying an event.
    ///
    /// # Panics
    ///
    /// If `keys` and `events` differ in length.
    pub fn push_chunk(&mut self, keys: &mut Vec<X::Key>, events: &mut Vec<E>) {
        assert_eq!(keys.len(), events.len(), "one key per event");
        if keys.is_empty() {
            return;
        }
        self.queued += keys.len();
        let keys = std::mem::replace(keys, self.spare_keys.pop().unwrap_or_default());
        let events = std::mem::replace(events, self.spare_events.pop().unwrap_or_default());
        self.inbox.push_back(Chunk { keys, events });
    }

    /// The slot of `key`, with room for its state.
    #[inline]
    fn slot_of(&mut self, key: &X::Key) -> u32 {
        let slot = self.index.slot(key);
        let slot = u32::try_from(slot)
            .ok()
            .filter(|&s| s != NIL)
            .expect("more than 2^32 - 1 keys in one partition");
        if slot as usize >= self.state.len() {
            self.state.resize(slot as usize + 1, IDLE);
        }
        slot
    }

    #[inline]
    fn push_slot(&mut self, slot: u32, event: E) {
        let s = slot as usize;
        self.queued += 1;
        match self.state[s] {
            IDLE => {
                self.state[s] = READY;
                self.ready.push_back((slot, event));
            }
            READY => {
                self.state[s] = READY_MORE;
                self.start_list(s, event);
            }
            BUSY => {
                self.state[s] = BUSY_MORE;
                self.start_list(s, event);
            }
            _ => self.append(s, event),
        }
    }

    fn new_node(&mut self, event: E) -> u32 {
        if self.free_nodes != NIL {
            let n = self.free_nodes;
            let node = &mut self.nodes[n as usize];
            self.free_nodes = node.next;
            node.event = Some(event);
            node.next = NIL;
            n
        } else {
            let n = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&n| n != NIL)
                .expect("more than 2^32 - 1 events waiting behind busy keys");
            self.nodes.push(Node {
                event: Some(event),
                next: NIL,
            });
            n
        }
    }

    fn start_list(&mut self, s: usize, event: E) {
        if s >= self.lists.len() {
            self.lists.resize(s + 1, EMPTY);
        }
        let n = self.new_node(event);
        self.lists[s] = List { head: n, tail: n };
    }

    fn append(&mut self, s: usize, event: E) {
        let n = self.new_node(event);
        let tail = self.lists[s].tail;
        self.nodes[tail as usize].next = n;
        self.lists[s].tail = n;
    }

    /// Takes the first event of the list of slot `s`; returns it and whether
    /// more follow.
    fn pop_list(&mut self, s: usize) -> (E, bool) {
        let n = self.lists[s].head;
        let node = &mut self.nodes[n as usize];
        let event = node.event.take().expect("a listed node holds an event");
        let next = node.next;
        node.next = self.free_nodes;
        self.free_nodes = n;
        self.lists[s].head = next;
        if next == NIL {
            self.lists[s] = EMPTY;
        }
        (event, next != NIL)
    }

    /// Takes ready keys, each with all of its queued events, until the batch
    /// holds at least `max_events` events or no key is ready. `None` when no key
    /// is ready. The keys taken are busy until the batch is
    /// [`ack`](Self::ack)ed.
    ///
    /// A key's run is never split, so a batch can exceed `max_events` by the
    /// length of its last run. A `max_events` of 0 takes one key.
    pub fn take(&mut self, max_events: usize) -> Option<KeyedBatch<X::Key, E>> {
        let mut batch = KeyedBatch::new();
        self.take_into(&mut batch, max_events);
        (!batch.is_empty()).then_some(batch)
    }

    /// Like [`take`](Self::take), into `batch`, reusing its allocations; returns
    /// how many events were taken (0 when no key is ready).
    ///
    /// # Panics
    ///
    /// If `batch` was taken and not acknowledged yet ([`ack`](Self::ack)
    /// empties it).
    pub fn take_into(&mut self, batch: &mut KeyedBatch<X::Key, E>, max_events: usize) -> usize {
        assert!(
            batch.queue == 0 && batch.is_empty(),
            "take_into needs an empty batch: acknowledge it first"
        );
        let mut from_ready = 0;
        while let Some((slot, event)) = self.ready.pop_front() {
            let s = slot as usize;
            batch.events.push(event);
            if self.state[s] == READY_MORE {
                let mut more = true;
                while more {
                    let (event, next) = self.pop_list(s);
                    batch.events.push(event);
                    more = next;
                }
            }
            self.state[s] = BUSY;
            batch.runs.push(Run {
                key: self.index.key(s),
                slot,
                end: batch.events.len() as u32,
            });
            from_ready = batch.events.len();
            if from_ready >= max_events {
                break;
            }
        }
        self.queued -= from_ready;
        while (batch.events.is_empty() || batch.events.len() < max_events)
            && let Some(chunk) = self.inbox.pop_front()
        {
            self.ingest(chunk, batch);
        }
        let taken = batch.events.len();
        if taken > 0 {
            batch.queue = self.id;
            batch.partition = self.partition;
            self.in_flight_events += taken;
            self.in_flight_keys += batch.runs.len();
            self.batches_out += 1;
        }
        taken
    }

    /// Looks at a chunk: events whose key is idle (the first of each key) join
    /// `batch`, the others wait behind their keys.
    fn ingest(&mut self, chunk: Chunk<X::Key, E>, batch: &mut KeyedBatch<X::Key, E>) {
        let Chunk {
            mut keys,
            mut events,
        } = chunk;
        self.queued -= keys.len();
        let mut claims = std::mem::take(&mut self.scratch_claims);
        let mut waiting = std::mem::take(&mut self.scratch_slots);
        claims.clear();
        waiting.clear();
        let mut end = batch.events.len() as u32;
        batch.runs.reserve(keys.len());
        for (i, key) in keys.drain(..).enumerate() {
            let slot = self.slot_of(&key);
            let state = &mut self.state[slot as usize];
            if *state == IDLE {
                *state = BUSY;
                end += 1;
                batch.runs.push(Run { key, slot, end });
                if !waiting.is_empty() {
                    claims.push(true);
                }
            } else {
                // `claims` is only kept from the first event that waits on:
                // every event before it was claimed.
                if waiting.is_empty() {
                    claims.resize(i, true);
                }
                waiting.push(slot);
                claims.push(false);
            }
        }
        if !waiting.is_empty() {
            // The rare path: split the chunk, copying the events that go on.
            let mut going = self.spare_events.pop().unwrap_or_default();
            let mut slots = waiting.iter();
            for (event, &claimed) in events.drain(..).zip(&claims) {
                if claimed {
                    going.push(event);
                } else {
                    let slot = *slots.next().expect("a slot for each waiting event");
                    self.push_slot(slot, event);
                }
            }
            let drained = std::mem::replace(&mut events, going);
            self.recycle_events(drained);
        }
        if batch.events.is_empty() {
            std::mem::swap(&mut batch.events, &mut events);
        } else {
            batch.events.append(&mut events);
        }
        self.recycle_events(events);
        if self.spare_keys.len() < SPARE_VECS {
            self.spare_keys.push(keys);
        }
        self.scratch_slots = waiting;
        self.scratch_claims = claims;
    }

    fn recycle_events(&mut self, events: Vec<E>) {
        debug_assert!(events.is_empty());
        if self.spare_events.len() < SPARE_VECS && events.capacity() > 0 {
            self.spare_events.push(events);
        }
    }

    /// The batch has been handled: its keys are no longer busy. A key with
    /// events waiting behind it becomes ready again; the others go idle. The
    /// batch is emptied (its allocations kept) so it can be passed to
    /// [`take_into`](Self::take_into) again; its events, if the handler left
    /// them there, are dropped. Returns how many events the batch held.
    ///
    /// Keys taken out of the batch with [`KeyedBatch::hold`] stay busy until
    /// their hold is [`release`](Self::release)d. Acknowledging a batch twice,
    /// or one that was never taken, does nothing.
    ///
    /// # Panics
    ///
    /// If the batch was taken from another queue.
    pub fn ack(&mut self, batch: &mut KeyedBatch<X::Key, E>) -> usize {
        if batch.queue == 0 {
            return 0;
        }
        assert_eq!(
            batch.queue, self.id,
            "a batch must be acknowledged by the queue it was taken from"
        );
        let events = batch.events.len();
        for run in &batch.runs {
            self.release_slot(run.slot);
        }
        self.in_flight_events -= events;
        self.in_flight_keys -= batch.runs.len();
        self.batches_out -= 1;
        batch.clear();
        events
    }

    /// The work on a key taken out of its batch with [`KeyedBatch::hold`] is
    /// done: the key is no longer busy (ready again if events wait behind it).
    ///
    /// # Panics
    ///
    /// If the hold comes from another queue.
    pub fn release(&mut self, mut hold: KeyHold<X::Key>) {
        hold.release = None;
        self.release_held(hold.queue, hold.slot, hold.events);
    }

    /// Releases a held key from its parts (what a [`KeyHold`] carries).
    pub(crate) fn release_held(&mut self, queue: u64, slot: u32, events: usize) {
        assert_eq!(
            queue, self.id,
            "a hold must be released by the queue it was taken from"
        );
        self.release_slot(slot);
        self.in_flight_events -= events;
        self.in_flight_keys -= 1;
    }

    /// A busy key is done: ready again with its first waiting event, or idle.
    #[inline]
    fn release_slot(&mut self, slot: u32) {
        let s = slot as usize;
        if self.state[s] == BUSY_MORE {
            let (event, more) = self.pop_list(s);
            self.ready.push_back((slot, event));
            self.state[s] = if more { READY_MORE } else { READY };
        } else {
            debug_assert_eq!(self.state[s], BUSY);
            self.state[s] = IDLE;
            self.index.release(s);
        }
    }
}

impl<X: KeyIndex + fmt::Debug, E> fmt::Debug for KeyedQueue<X, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedQueue")
            .field("partition", &self.partition)
            .field("index", &self.index)
            .field("queued", &self.queued)
            .field("ready_keys", &self.ready.len())
            .field("in_flight_keys", &self.in_flight_keys)
            .field("in_flight_events", &self.in_flight_events)
            .finish()
    }
}

/// One key's events in a batch: `events[previous end..end]`.
#[derive(Clone)]
struct Run<K> {
    key: K,
    slot: u32,
    end: u32,
}

/// The work one worker does at a time: several keys, each with its events in
/// the order they were sent (a *run*).
///
/// Every key appears once in a batch, and while a worker holds the batch no
/// other worker gets that key. Handlers read the runs with
/// [`iter`](KeyedBatch::iter) or change events in place with
/// [`iter_mut`](KeyedBatch::iter_mut).
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_keyed::{DenseKeys, KeyIndex, KeyedQueue};
///
/// let mut queue = KeyedQueue::new(DenseKeys::new(0, NonZeroUsize::MIN));
/// for (key, n) in [(1, 10), (2, 20), (1, 11)] {
///     queue.push(&key, n);
/// }
/// let mut batch = queue.take(10).unwrap();
/// assert_eq!((batch.len(), batch.run_count()), (3, 2));
/// for (_key, events) in batch.iter_mut() {
///     for n in events {
///         *n += 1;
///     }
/// }
/// assert_eq!(batch.iter().map(|(k, e)| (*k, e.to_vec())).collect::<Vec<_>>(), [(1, vec![11, 12]), (2, vec![21])]);
/// assert_eq!(batch.keys().copied().collect::<Vec<_>>(), [1, 2]);
/// // With dense keys and one partition, a key's slot is the key itself.
/// assert_eq!(batch.iter_mut_with_slots().map(|(_, slot, _)| slot).collect::<Vec<_>>(), [1, 2]);
/// ```
pub struct KeyedBatch<K, E> {
    runs: Vec<Run<K>>,
    events: Vec<E>,
    partition: usize,
    /// The queue the batch was taken from; 0 when it is not out.
    queue: u64,
    /// Set by the runtime: how a hold releases its key when dropped.
    pub(crate) releaser: Option<Arc<dyn ReleaseHeld>>,
}

impl<K, E> KeyedBatch<K, E> {
    /// An empty batch, to be filled by [`KeyedQueue::take_into`].
    pub fn new() -> Self {
        KeyedBatch {
            runs: Vec::new(),
            events: Vec::new(),
            partition: 0,
            queue: 0,
            releaser: None,
        }
    }

    /// The partition the batch was taken from.
    pub fn partition(&self) -> usize {
        self.partition
    }

    /// How many events the batch holds, over all its keys.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many keys (runs) the batch holds.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The keys of the batch, in the order their runs were taken.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + '_ {
        self.runs.iter().map(|r| &r.key)
    }

    /// Each key with its events, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &[E])> + '_ {
        let mut start = 0;
        self.runs.iter().map(move |run| {
            let end = run.end as usize;
            let events = &self.events[start..end];
            start = end;
            (&run.key, events)
        })
    }

    /// Each key with its events, oldest first, which the handler may change.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&K, &mut [E])> + '_ {
        self.iter_mut_with_slots()
            .map(|(key, _, events)| (key, events))
    }

    /// Like [`iter_mut`](Self::iter_mut), with each key's slot in its
    /// partition (see [`KeyIndex`]): with [`DenseKeys`](crate::DenseKeys),
    /// `key / partitions`, a dense index for state kept per partition.
    pub fn iter_mut_with_slots(
        &mut self,
    ) -> impl ExactSizeIterator<Item = (&K, usize, &mut [E])> + '_ {
        let mut rest: &mut [E] = &mut self.events;
        let mut start = 0;
        self.runs.iter().map(move |run| {
            let end = run.end as usize;
            let (events, tail) = std::mem::take(&mut rest).split_at_mut(end - start);
            rest = tail;
            start = end;
            (&run.key, run.slot as usize, events)
        })
    }

    /// The slot of each key (see [`iter_mut_with_slots`](Self::iter_mut_with_slots)),
    /// in the order of the runs.
    pub fn slots(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.runs.iter().map(|run| run.slot as usize)
    }

    /// Every event of the batch, run after run, each run's events oldest
    /// first: one slice to work on when the runs do not matter. When each key
    /// has one event (`len() == run_count()`), event `i` is run `i`'s, so it
    /// lines up with the `i`-th of [`keys`](Self::keys) and [`slots`](Self::slots);
    /// a handler can then work behaviour by behaviour over the whole batch
    /// instead of key by key.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_keyed::{DenseKeys, KeyIndex, KeyedQueue};
    ///
    /// let mut queue = KeyedQueue::new(DenseKeys::new(0, NonZeroUsize::MIN));
    /// for (key, n) in [(4, 40), (2, 20), (9, 90)] {
    ///     queue.push(&key, n);
    /// }
    /// let mut batch = queue.take(10).unwrap();
    /// assert_eq!(batch.len(), batch.run_count());
    /// for n in batch.events_mut() {
    ///     *n += 1;
    /// }
    /// let slots: Vec<usize> = batch.slots().collect();
    /// assert_eq!(slots, [4, 2, 9]);
    /// assert_eq!(batch.events_mut(), [41, 21, 91]);
    /// ```
    pub fn events_mut(&mut self) -> &mut [E] {
        &mut self.events
    }

    /// Takes run `run` (a key and its events) out of the batch, so that the
    /// rest of the batch can be acknowledged while this key's work goes on —
    /// say, in a task of its own while it waits for a timer or a reply. The key
    /// stays busy, its later events waiting behind it, until the hold is
    /// released.
    ///
    /// With the [`Keyed`](crate::Keyed) scheduler the key is released when the
    /// hold is dropped (also when the task holding it panics). With a bare
    /// [`KeyedQueue`], hand it back to [`KeyedQueue::release`]; a hold dropped
    /// otherwise leaves its key busy for good.
    ///
    /// Runs after `run` move up by one. Costs O(events in the batch).
    ///
    /// # Panics
    ///
    /// If `run >= self.run_count()`.
    pub fn hold(&mut self, run: usize) -> (KeyHold<K>, Vec<E>) {
        let start = match run {
            0 => 0,
            _ => self.runs[run - 1].end as usize,
        };
        let Run { key, slot, end } = self.runs.remove(run);
        let end = end as usize;
        let events: Vec<E> = self.events.drain(start..end).collect();
        let shift = (end - start) as u32;
        for later in &mut self.runs[run..] {
            later.end -= shift;
        }
        let hold = KeyHold {
            key,
            slot,
            queue: self.queue,
            partition: self.partition,
            events: events.len(),
            release: self.releaser.clone(),
        };
        (hold, events)
    }

    fn clear(&mut self) {
        self.runs.clear();
        self.events.clear();
        self.queue = 0;
    }
}

/// How the runtime releases a held key when its [`KeyHold`] is dropped.
pub(crate) trait ReleaseHeld: Send + Sync {
    fn release_held(&self, partition: usize, queue: u64, slot: u32, events: usize);
}

/// A key taken out of its batch with [`KeyedBatch::hold`]: the key stays busy
/// (no other worker gets it, its later events wait) until the hold is released.
///
/// Taken from a [`Keyed`](crate::Keyed) scheduler's batch, dropping the hold
/// releases the key. Taken from a bare [`KeyedQueue`], give it back with
/// [`KeyedQueue::release`].
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_keyed::{DenseKeys, KeyIndex, KeyedQueue};
///
/// let mut queue = KeyedQueue::new(DenseKeys::new(0, NonZeroUsize::MIN));
/// queue.push(&1, "slow");
/// queue.push(&2, "fast");
/// let mut batch = queue.take(10).unwrap();
/// let (hold, events) = batch.hold(0); // key 1 goes on elsewhere
/// assert_eq!((*hold.key(), events), (1, vec!["slow"]));
/// queue.ack(&mut batch); // key 2 is free again, key 1 is not
/// queue.push(&1, "later");
/// queue.push(&2, "again");
/// let mut batch = queue.take(10).unwrap();
/// assert_eq!(batch.keys().copied().collect::<Vec<_>>(), [2]);
/// queue.release(hold);
/// queue.ack(&mut batch);
/// let batch = queue.take(10).unwrap();
/// assert_eq!(batch.keys().copied().collect::<Vec<_>>(), [1]);
/// ```
#[must_use = "the key stays busy until the hold is released"]
pub struct KeyHold<K> {
    key: K,
    slot: u32,
    queue: u64,
    partition: usize,
    events: usize,
    release: Option<Arc<dyn ReleaseHeld>>,
}

impl<K> KeyHold<K> {
    /// The key held.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The partition of the key.
    pub fn partition(&self) -> usize {
        self.partition
    }
}

impl<K> Drop for KeyHold<K> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release.release_held(self.partition, self.queue, self.slot, self.events);
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for KeyHold<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHold")
            .field("key", &self.key)
            .field("partition", &self.partition)
            .finish()
    }
}

impl<K, E> Default for KeyedBatch<K, E> {
    fn default() -> Self {
        KeyedBatch::new()
    }
}

impl<K: fmt::Debug, E: fmt::Debug> fmt::Debug for KeyedBatch<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests;

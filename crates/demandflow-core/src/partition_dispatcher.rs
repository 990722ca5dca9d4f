//! The partition dispatcher: each event to its partition, chosen by a hash
//! function or by key, and there to one of the partition's subscriptions. Use it
//! when all events of a key must reach the same consumer, in order.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::{
    ConfigError, Deliver, Dispatched, Dispatcher, Key, Partition, StageId, SubscribeOptions,
    SubscribeRefused, SubscriptionId, key_partition,
};

/// The default bound of each partition's queue, in events.
pub const DEFAULT_PARTITION_QUEUE_CAPACITY: NonZeroUsize =
    NonZeroUsize::new(10_000).expect("10 000 is not zero");

/// The hash function of a partition dispatcher: the partition index of an event
/// and the event to send (possibly transformed), or `None` to discard it.
type HashFn<T> = Box<dyn Fn(T) -> Option<(usize, T)> + Send>;

/// Sends each event to exactly one partition, chosen by a hash function, and
/// there to one of the partition's consumers (SEMANTICS.md §4).
///
/// Choose it when events with the same key must be handled by the same consumer,
/// in order (per-user state, per-account balances, per-file writers). When any
/// free consumer may handle any event, the default
/// [`DemandDispatcher`](crate::DemandDispatcher) balances load better; when every
/// consumer must see every event, use [`BroadcastDispatcher`](crate::BroadcastDispatcher).
///
/// # Partitions and the hash function
///
/// There are `n` partitions, numbered `0..n` ([`numbered`](Self::numbered),
/// [`by_key`](Self::by_key)) or named ([`named`](Self::named)); either way the hash
/// function returns the partition's *index*, its position in `0..n` or in the list
/// of names. It receives each event by value and returns `Some((index, event))`,
/// the event possibly transformed, or `None` to discard the event. An index out of
/// range is a bug in the hash function: the event is discarded, counted in
/// [`misrouted`](Self::misrouted) and logged with `tracing::error!`; the producer
/// keeps running.
///
/// A subscription names its partition with [`SubscribeOptions::partition`]: a
/// [`Partition::Index`] for numbered partitions, a [`Partition::Name`] or a
/// [`Partition::Index`] (its position in the list) for named ones.
///
/// # Several consumers of one partition
///
/// A partition usually has one consumer, and then all events of a key reach it in
/// order. It may have several (as in GenStage): the partition's events are then
/// shared among them by demand, as the [`DemandDispatcher`](crate::DemandDispatcher)
/// shares a producer's: each batch goes to the partition's subscription with the
/// largest demand (on a tie, the one that subscribed first), up to that demand.
/// The partition's demand is the sum of its subscriptions'; each consumer
/// receives the partition's events in order, but the events of one key may then
/// be split between consumers, so per-key order across them is no longer kept.
/// Use it to spread a heavy partition over several workers when order does not
/// matter, or to replace a consumer without a gap (subscribe the new one, then
/// cancel the old). When one of them cancels, the others keep receiving; events
/// queued for the partition stay queued for them.
///
/// # Demand
///
/// Each partition gets up to its own demand. Events for a partition without demand
/// wait in that partition's queue and are flushed, in order, when it asks: an ask
/// is served from the queue first, and only the rest is forwarded upstream
/// (upstream demand is the sum of the partitions' asks, minus what queued events
/// satisfy).
///
/// Like GenStage's, the dispatcher remembers how many events it has asked for
/// upstream and not yet received, its *window*. A batch is routed event by event
/// until as many events have been delivered as the window holds; the rest of the
/// batch was not asked for and is returned as leftover, without being hashed, for
/// the producer to buffer.
///
/// **Only delivered events use demand up.** An event that is discarded, or queued
/// for a partition without demand, does not count against the window, so routing
/// goes on with the next event of the batch. If the batch runs out first, the
/// dispatcher asks upstream for replacements, in [`Dispatched::demand`], so that
/// what it awaits again matches what the partitions still lack. So discarding
/// never stalls the pipeline, and a partition whose consumer is slow does not starve
/// the others while its queue has room. (GenStage stalls: with one partition
/// discarding odd events and a consumer at max 2/min 0, it delivers `[0]` and then
/// nothing, forever.)
///
/// # Queues
///
/// Events routed to a partition without demand are queued, up to
/// [`queue_capacity`](PartitionDispatcherBuilder::queue_capacity) events per
/// partition (default [`DEFAULT_PARTITION_QUEUE_CAPACITY`]); queued events are
/// counted by [`buffered`](Dispatcher::buffered). Events for a partition whose
/// queue is full are returned as leftover, in order, for the producer to buffer;
/// the producer must keep them ahead of events it emits later. Until that
/// partition asks again they block the producer's buffer, and any event sent for
/// the other partitions would wait behind them: so the dispatcher holds back the
/// demand it was still awaiting, and forwards it again when that partition asks
/// (the producer then takes the blocked events first). A partition nobody
/// consumes fills its queue and then holds the whole producer back: subscribe
/// every partition.
///
/// # Info messages
///
/// An info message sent to the producer is handled only once every event queued
/// before it has been delivered, in every partition
/// ([`hold_info`](Dispatcher::hold_info)): partition queues count as buffered
/// events (SEMANTICS.md §3). Events queued for a partition nobody consumes hold
/// the info back until a consumer takes them.
///
/// # Cancel
///
/// When a subscription is cancelled, the partition's other subscriptions carry on.
/// Events already queued for the partition stay queued, in order, for them or, if
/// it was the last, for the next subscriber (GenStage drops them). Its unmet demand was already forwarded upstream, so it becomes
/// *pending*: asked-for events that arrive and meet no demand use it up, and later
/// asks of any partition are served from it instead of being forwarded again, as
/// with the [`DemandDispatcher`](crate::DemandDispatcher).
///
/// # Errors
///
/// [`subscribe`](Dispatcher::subscribe) refuses a subscription without a partition
/// option ([`SubscribeRefused::MissingPartition`]), naming a partition that does
/// not exist ([`SubscribeRefused::UnknownPartition`]), a reused
/// [`SubscriptionId`] ([`SubscribeRefused::AlreadySubscribed`]), and one with a
/// `selector` option, which only the broadcast dispatcher understands
/// ([`SubscribeRefused::UnsupportedOption`]).
///
/// # Examples
///
/// The worked example of SEMANTICS.md §4: multiples of 3 are discarded, other
/// events go to "even" or "odd".
///
/// ```
/// use demandflow_core::{Dispatched, Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
///
/// let mut d = PartitionDispatcher::named(["even", "odd"], |e: u32| match e {
///     e if e % 3 == 0 => None,
///     e => Some(((e % 2) as usize, e)),
/// })
/// .build()
/// .unwrap();
/// let (even, odd) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// d.subscribe(even, StageId::from_raw(1), &SubscribeOptions::new().partition("even")).unwrap();
/// d.subscribe(odd, StageId::from_raw(2), &SubscribeOptions::new().partition("odd")).unwrap();
///
/// let mut out = Vec::new();
/// assert_eq!(d.ask(even, 4, &mut out), 4);
/// assert_eq!(d.ask(odd, 4, &mut out), 4);
/// let got = d.dispatch((1..=12).collect(), &mut out);
/// assert_eq!(out, vec![(even, vec![2, 4, 8, 10]), (odd, vec![1, 5, 7, 11])]);
/// // 3, 6 and 9 were discarded without using demand up, so routing went on to 11,
/// // which met the last of the 8 asked for: 12 goes back to the producer, and
/// // nothing more is asked for upstream.
/// assert_eq!(got, Dispatched { leftover: vec![12], demand: 0 });
/// assert_eq!(d.discarded(), 3);
/// ```
///
/// Had the producer sent only the 8 events it was asked for, the two discarded
/// among them would be asked for again:
///
/// ```
/// # use demandflow_core::{Dispatched, Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
/// # let mut d = PartitionDispatcher::named(["even", "odd"], |e: u32| match e {
/// #     e if e % 3 == 0 => None,
/// #     e => Some(((e % 2) as usize, e)),
/// # })
/// # .build()
/// # .unwrap();
/// # let (even, odd) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// # d.subscribe(even, StageId::from_raw(1), &SubscribeOptions::new().partition("even")).unwrap();
/// # d.subscribe(odd, StageId::from_raw(2), &SubscribeOptions::new().partition("odd")).unwrap();
/// # let mut out = Vec::new();
/// # d.ask(even, 4, &mut out);
/// # d.ask(odd, 4, &mut out);
/// let got = d.dispatch((1..=8).collect(), &mut out);
/// assert_eq!(got, Dispatched { leftover: vec![], demand: 2 });
/// assert_eq!(out, vec![(even, vec![2, 4, 8]), (odd, vec![1, 5, 7])]);
/// ```
pub struct PartitionDispatcher<T> {
    hash: HashFn<T>,
    /// The names of named partitions, by index; `None` for numbered ones.
    names: Option<Box<[Arc<str>]>>,
    slots: Box<[Slot<T>]>,
    /// One batch per partition, filled during `dispatch` and always left empty.
    batches: Box<[Vec<T>]>,
    capacity: usize,
    /// Fill-ahead mode: queued events close the window, and asks are forwarded
    /// ahead for the other partitions (see [`PartitionDispatcherBuilder::fill_ahead`]).
    fill_ahead: bool,
    /// The window: events asked for upstream and still awaited (GenStage's `waiting`).
    waiting: u64,
    /// Unmet demand of cancelled subscriptions, already forwarded upstream.
    pending: u64,
    discarded: u64,
    misrouted: u64,
    /// Info markers, oldest first: each waits until every listed partition has
    /// taken its queue up to the listed position (`(index, dequeued)`).
    infos: VecDeque<Vec<(usize, u64)>>,
}

struct Slot<T> {
    /// The partition's subscriptions in the order they subscribed, each with its
    /// demand: asked for and not yet delivered.
    subs: Vec<(SubscriptionId, u64)>,
    /// The sum of the subscriptions' demands. Positive only while `queue` is empty.
    demand: u64,
    queue: VecDeque<T>,
    /// Events ever taken from `queue`: where info markers wait.
    dequeued: u64,
    /// Demand held back while events of this partition that overflowed its full
    /// queue block the producer's buffer; forwarded again on this partition's next ask.
    withheld: u64,
}

impl<T> Slot<T> {
    /// Shares `batch`, routed to this partition within its demand, among the
    /// partition's subscriptions like the demand dispatcher does: each part goes
    /// to the subscription with the largest demand (on a tie, the one that
    /// subscribed first), up to that demand, until the batch is gone.
    fn share(&mut self, mut batch: Vec<T>, out: &mut dyn Deliver<T>) {
        if let [(sub, demand)] = &mut self.subs[..] {
            // One consumer, the common case: the whole batch is its own.
            *demand -= batch.len() as u64;
            out.deliver(*sub, batch);
            return;
        }
        while !batch.is_empty() {
            // The largest demand, the first subscribed on a tie. The batch fits
            // in the sum of the demands, so that largest one is positive.
            let Some(member) = (0..self.subs.len()).reduce(|best, m| {
                if self.subs[m].1 > self.subs[best].1 {
                    m
                } else {
                    best
                }
            }) else {
                return;
            };
            let (sub, demand) = &mut self.subs[member];
            let mut take = usize::try_from(*demand)
                .unwrap_or(usize::MAX)
                .min(batch.len());
            if take == 0 {
                // Cannot happen (see above); were it to, the events go to a
                // consumer rather than being lost or looping.
                take = batch.len();
            }
            let rest = batch.split_off(take);
            *demand = demand.saturating_sub(take as u64);
            out.deliver(*sub, std::mem::replace(&mut batch, rest));
        }
    }
}

/// Builds a [`PartitionDispatcher`]; start with
/// [`PartitionDispatcher::numbered`], [`PartitionDispatcher::named`] or
/// [`PartitionDispatcher::by_key`].
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_core::{Dispatcher, PartitionDispatcher};
///
/// let d = PartitionDispatcher::numbered(NonZeroUsize::new(4).unwrap(), |e: u64| Some(((e % 4) as usize, e)))
///     .queue_capacity(NonZeroUsize::new(100).unwrap())
///     .build()
///     .unwrap();
/// assert_eq!(d.partitions(), 4);
/// assert_eq!(d.buffered(), 0);
/// ```
pub struct PartitionDispatcherBuilder<T> {
    partitions: Partitions,
    hash: HashFn<T>,
    queue_capacity: NonZeroUsize,
    fill_ahead: bool,
}

enum Partitions {
    Numbered(NonZeroUsize),
    Named(Vec<Arc<str>>),
}

impl<T> PartitionDispatcher<T> {
    /// Starts building a dispatcher with `partitions` partitions numbered
    /// `0..partitions`.
    ///
    /// `hash` returns `Some((index, event))` to send the event (possibly
    /// transformed) to partition `index`, or `None` to discard it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// // Negative numbers are discarded, the others split by parity.
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(2).unwrap(), |e: i32| (e >= 0).then(|| ((e % 2) as usize, e)))
    ///     .build()
    ///     .unwrap();
    /// let sub = SubscriptionId::from_raw(1);
    /// d.subscribe(sub, StageId::from_raw(1), &SubscribeOptions::new().partition(1)).unwrap();
    /// let mut out = Vec::new();
    /// assert_eq!(d.ask(sub, 2, &mut out), 2);
    /// d.dispatch(vec![-1, 1, 2, 3], &mut out);
    /// assert_eq!(out, vec![(sub, vec![1, 3])]);
    /// assert_eq!(d.buffered(), 1); // 2 waits for partition 0
    /// ```
    pub fn numbered(
        partitions: NonZeroUsize,
        hash: impl Fn(T) -> Option<(usize, T)> + Send + 'static,
    ) -> PartitionDispatcherBuilder<T> {
        PartitionDispatcherBuilder {
            partitions: Partitions::Numbered(partitions),
            hash: Box::new(hash),
            queue_capacity: DEFAULT_PARTITION_QUEUE_CAPACITY,
            fill_ahead: false,
        }
    }

    /// Starts building a dispatcher with one partition per name, in order.
    ///
    /// `hash` returns `Some((index, event))` where `index` is the position of the
    /// partition's name in `names`, or `None` to discard the event. Subscriptions
    /// name their partition with [`Partition::Name`] or, equivalently, with its
    /// index as a [`Partition::Index`].
    ///
    /// # Errors
    ///
    /// [`build`](PartitionDispatcherBuilder::build) returns [`ConfigError::Zero`]
    /// when `names` is empty and [`ConfigError::Invalid`] when a name appears twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::named(["small", "large"], |e: u32| Some(((e >= 100) as usize, e)))
    ///     .build()
    ///     .unwrap();
    /// let (small, large) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
    /// d.subscribe(small, StageId::from_raw(1), &SubscribeOptions::new().partition("small")).unwrap();
    /// // Index 1 is "large".
    /// d.subscribe(large, StageId::from_raw(2), &SubscribeOptions::new().partition(1)).unwrap();
    /// let mut out = Vec::new();
    /// d.ask(small, 5, &mut out);
    /// d.ask(large, 5, &mut out);
    /// d.dispatch(vec![7, 700, 8], &mut out);
    /// assert_eq!(out, vec![(small, vec![7, 8]), (large, vec![700])]);
    ///
    /// let twice = PartitionDispatcher::named(["a", "a"], |e: u32| Some((0, e))).build();
    /// assert!(twice.is_err());
    /// ```
    pub fn named<I, S>(
        names: I,
        hash: impl Fn(T) -> Option<(usize, T)> + Send + 'static,
    ) -> PartitionDispatcherBuilder<T>
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        PartitionDispatcherBuilder {
            partitions: Partitions::Named(names.into_iter().map(Into::into).collect()),
            hash: Box::new(hash),
            queue_capacity: DEFAULT_PARTITION_QUEUE_CAPACITY,
            fill_ahead: false,
        }
    }

    /// Starts building a dispatcher with `partitions` numbered partitions, where
    /// each event goes to the partition of its key, [`key_partition`]`(&key(&event), partitions)`.
    ///
    /// Events with equal keys always go to the same partition, so (with one
    /// consumer per partition) the events of one key reach one consumer, in
    /// order. The partition is the key's own
    /// ([`Key`]: integers `key mod n`, strings and [`Hashed`](crate::Hashed)
    /// keys through the stable key hash), the same one the partition supervisor
    /// and the keyed scheduler use, so a key maps to the same partition in
    /// every part of a pipeline, every run and every platform. Nothing is
    /// discarded; use [`numbered`](Self::numbered) to discard events.
    ///
    /// # Errors
    ///
    /// [`build`](PartitionDispatcherBuilder::build) returns
    /// [`ConfigError::Zero`] when `partitions` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{key_partition, Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Order { customer: String, amount: u32 }
    ///
    /// let mut d = PartitionDispatcher::by_key(NonZeroUsize::new(4).unwrap(), |o: &Order| o.customer.clone()).build().unwrap();
    /// let p = key_partition("alice", 4);
    /// let sub = SubscriptionId::from_raw(1);
    /// d.subscribe(sub, StageId::from_raw(1), &SubscribeOptions::new().partition(p)).unwrap();
    /// let mut out = Vec::new();
    /// d.ask(sub, 10, &mut out);
    /// let orders = vec![
    ///     Order { customer: "alice".into(), amount: 1 },
    ///     Order { customer: "alice".into(), amount: 2 },
    /// ];
    /// d.dispatch(orders.clone(), &mut out);
    /// assert_eq!(out, vec![(sub, orders)]);
    /// ```
    pub fn by_key<K: Key>(
        partitions: NonZeroUsize,
        key: impl Fn(&T) -> K + Send + 'static,
    ) -> PartitionDispatcherBuilder<T> {
        let n = partitions.get();
        Self::numbered(partitions, move |event| {
            Some((key_partition(&key(&event), n), event))
        })
    }

    /// The number of partitions.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::PartitionDispatcher;
    ///
    /// let d = PartitionDispatcher::named(["a", "b", "c"], |e: u8| Some((0, e))).build().unwrap();
    /// assert_eq!(d.partitions(), 3);
    /// ```
    pub fn partitions(&self) -> usize {
        self.slots.len()
    }

    /// How many events were discarded so far: the hash function returned `None`
    /// for them, or an index out of range (those are also counted by
    /// [`misrouted`](Self::misrouted)).
    ///
    /// Discarded events do not use demand up: the dispatcher asks upstream for
    /// replacements.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(1).unwrap(), |e: u32| (e % 2 == 0).then_some((0, e)))
    ///     .build()
    ///     .unwrap();
    /// let sub = SubscriptionId::from_raw(1);
    /// d.subscribe(sub, StageId::from_raw(1), &SubscribeOptions::new().partition(0)).unwrap();
    /// let mut out = Vec::new();
    /// assert_eq!(d.ask(sub, 3, &mut out), 3);
    /// let got = d.dispatch(vec![1, 2, 3], &mut out);
    /// assert_eq!(d.discarded(), 2);
    /// assert_eq!(got.demand, 2); // replacements for 1 and 3
    /// ```
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// How many events were discarded because the hash function returned a
    /// partition index out of range (a bug in the hash function, logged with
    /// `tracing::error!`). Included in [`discarded`](Self::discarded).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// // Wrong: there are 2 partitions but the hash can return 2.
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(2).unwrap(), |e: u32| Some(((e % 3) as usize, e)))
    ///     .build()
    ///     .unwrap();
    /// let sub = SubscriptionId::from_raw(1);
    /// d.subscribe(sub, StageId::from_raw(1), &SubscribeOptions::new().partition(0)).unwrap();
    /// let mut out = Vec::new();
    /// d.ask(sub, 3, &mut out);
    /// d.dispatch(vec![1, 2, 3], &mut out);
    /// assert_eq!(out, vec![(sub, vec![3])]);
    /// assert_eq!(d.misrouted(), 1); // 2
    /// assert_eq!(d.discarded(), 1);
    /// assert_eq!(d.buffered(), 1); // 1 waits for partition 1
    /// ```
    pub fn misrouted(&self) -> u64 {
        self.misrouted
    }

    /// Unmet demand of cancelled subscriptions, already forwarded upstream, that
    /// later asks are served from.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(2).unwrap(), |e: u32| Some(((e % 2) as usize, e))).build().unwrap();
    /// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
    /// d.subscribe(a, StageId::from_raw(1), &SubscribeOptions::new().partition(0)).unwrap();
    /// d.subscribe(b, StageId::from_raw(2), &SubscribeOptions::new().partition(1)).unwrap();
    /// let mut out = Vec::new();
    /// assert_eq!(d.ask(a, 5, &mut out), 5);
    /// assert_eq!(d.cancel(a), 0);
    /// assert_eq!(d.pending(), 5);
    /// assert_eq!(d.ask(b, 3, &mut out), 0); // served from the 5 already asked for
    /// assert_eq!(d.pending(), 2);
    /// ```
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Fill-ahead mode: what to ask upstream so that the window covers the
    /// partitions' unmet demand and, ahead of it, `n ×` the largest unmet demand
    /// of a partition (or the ask being served, `ask`, if larger), no more than
    /// the fullest queue can take.
    fn top_up(&mut self, ask: u64) -> u64 {
        let (mut need, mut largest, mut room) = (0u64, 0u64, u64::MAX);
        for slot in &self.slots {
            need = need.saturating_add(slot.demand);
            largest = largest.max(slot.demand);
            // What may arrive for this partition without overflowing its queue:
            // its demand (positive only while its queue is empty) and its room.
            let free = (self.capacity - slot.queue.len()) as u64;
            room = room.min(slot.demand.saturating_add(free));
        }
        if need == 0 {
            // Nobody lacks anything: fill ahead only on an ask, never on its own.
            return 0;
        }
        let ahead = largest
            .max(ask)
            .saturating_mul(self.slots.len() as u64)
            .min(room);
        let forward = need.max(ahead).saturating_sub(self.waiting);
        self.waiting += forward;
        forward
    }

    /// Events asked for upstream and not yet received: the window (GenStage's
    /// `waiting`). Without [fill-ahead](PartitionDispatcherBuilder::fill_ahead)
    /// it is what the partitions still lack; with it, up to `n` times the largest
    /// unmet demand of a partition.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(4).unwrap(), |e: u32| Some(((e % 4) as usize, e)))
    ///     .fill_ahead(true)
    ///     .build()
    ///     .unwrap();
    /// let sub = SubscriptionId::from_raw(1);
    /// d.subscribe(sub, StageId::from_raw(1), &SubscribeOptions::new().partition(0)).unwrap();
    /// d.ask(sub, 10, &mut Vec::new());
    /// assert_eq!(d.awaited(), 40);
    /// d.dispatch((0..25).collect(), &mut Vec::new());
    /// assert_eq!(d.awaited(), 15);
    /// ```
    pub fn awaited(&self) -> u64 {
        self.waiting
    }

    fn label(&self, index: usize) -> Partition {
        match &self.names {
            Some(names) => Partition::Name(names[index].clone()),
            None => Partition::Index(index),
        }
    }

    fn available(&self) -> String {
        match &self.names {
            Some(names) => names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => format!("0..{}", self.slots.len()),
        }
    }

    fn index_of(&self, partition: &Partition) -> Option<usize> {
        match (partition, &self.names) {
            (Partition::Index(i), _) => (*i < self.slots.len()).then_some(*i),
            (Partition::Name(name), Some(names)) => names.iter().position(|n| n == name),
            (Partition::Name(_), None) => None,
        }
    }

    /// The partition of `sub` and its place among the partition's subscriptions.
    fn find(&self, sub: SubscriptionId) -> Option<(usize, usize)> {
        self.slots.iter().enumerate().find_map(|(index, slot)| {
            slot.subs
                .iter()
                .position(|&(s, _)| s == sub)
                .map(|member| (index, member))
        })
    }
}

impl<T> PartitionDispatcherBuilder<T> {
    /// Sets the most events each partition's queue holds (default
    /// [`DEFAULT_PARTITION_QUEUE_CAPACITY`]).
    ///
    /// Events for a partition whose queue is full are returned from
    /// [`dispatch`](Dispatcher::dispatch) as leftover, for the producer to buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(2).unwrap(), |e: u32| Some(((e % 2) as usize, e)))
    ///     .queue_capacity(NonZeroUsize::new(2).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let odd = SubscriptionId::from_raw(1);
    /// d.subscribe(odd, StageId::from_raw(1), &SubscribeOptions::new().partition(1)).unwrap();
    /// let mut out = Vec::new();
    /// d.ask(odd, 1, &mut out);
    /// // Partition 0 has no demand: 0 and 2 are queued, its queue is then full and 4
    /// // goes back to the producer.
    /// assert_eq!(d.dispatch(vec![0, 2, 4, 1], &mut out).leftover, vec![4]);
    /// assert_eq!(out, vec![(odd, vec![1])]);
    /// assert_eq!(d.buffered(), 2);
    /// ```
    #[must_use]
    pub fn queue_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Fills the partitions' queues ahead of their demand (default `false`): a
    /// partition's ask is forwarded upstream multiplied by the number of
    /// partitions, so that the other partitions' share of the events the producer
    /// sends is queued before they ask, and their next asks are served from their
    /// queues in whole batches.
    ///
    /// Why: without it, a consumer's ask of 500 to one of `n` partitions is
    /// forwarded as 500; the producer's 500 events are spread over all the
    /// partitions, the asking one gets about `500 / n`, the rest is queued, and
    /// the dispatcher asks again for what is still missing. The 500 arrive as a
    /// geometric series of ever smaller batches (250, 125, 63, … with 2
    /// partitions), each a message to the consumer. With fill-ahead they arrive
    /// in one batch, or a few when the hash spreads the events unevenly.
    ///
    /// What the producer sees: the dispatcher keeps the events it has asked for
    /// and not yet received (its window, [`awaited`](PartitionDispatcher::awaited))
    /// at `n ×` the largest unmet demand of a partition (or `n ×` the whole ask
    /// of a consumer its queue could not serve whole, so that every queue is
    /// refilled by a whole ask rather than by that shortfall, which would split
    /// the next asks in two batches as well), but no larger than what
    /// the fullest queue can still take (the smallest, over the partitions, of
    /// a partition's free room plus its own unmet demand), so that no queue
    /// overflows whatever the hash does with those events; and never smaller than
    /// the sum of the partitions' unmet demand, as without fill-ahead. So the
    /// producer is asked for up to `n` times what one consumer asked, and for at
    /// most [`queue_capacity`](Self::queue_capacity) events beyond what the
    /// consumers lack, and only when a consumer asks. Every event it sends for
    /// the window closes it, delivered or queued; discarded events are replaced
    /// as without fill-ahead. No event is lost, duplicated or reordered within a
    /// partition: the queues are the same, only filled earlier.
    ///
    /// The cost: events wait in queues (memory within the queues' bound, as
    /// always) and the producer works ahead of its consumers. A cancelled
    /// subscription's unmet demand does not become
    /// [`pending`](PartitionDispatcher::pending): the events asked for it are
    /// queued for the partition when they come.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use demandflow_core::{Dispatched, Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(NonZeroUsize::new(2).unwrap(), |e: u32| Some(((e % 2) as usize, e)))
    ///     .fill_ahead(true)
    ///     .build()
    ///     .unwrap();
    /// let (even, odd) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
    /// d.subscribe(even, StageId::from_raw(1), &SubscribeOptions::new().partition(0)).unwrap();
    /// d.subscribe(odd, StageId::from_raw(2), &SubscribeOptions::new().partition(1)).unwrap();
    /// let mut out = Vec::new();
    /// // Partition 0 asks for 3: 2 × 3 are asked upstream.
    /// assert_eq!(d.ask(even, 3, &mut out), 6);
    /// // Its 3 arrive in one batch; the odd ones are queued and close the window.
    /// assert_eq!(d.dispatch((0..6).collect(), &mut out), Dispatched { leftover: vec![], demand: 0 });
    /// assert_eq!(out, vec![(even, vec![0, 2, 4])]);
    /// assert_eq!(d.buffered(), 3);
    /// // Partition 1's ask is served from its queue, whole, and asks nothing upstream.
    /// assert_eq!(d.ask(odd, 3, &mut out), 0);
    /// assert_eq!(out[1], (odd, vec![1, 3, 5]));
    /// ```
    #[must_use]
    pub fn fill_ahead(mut self, fill_ahead: bool) -> Self {
        self.fill_ahead = fill_ahead;
        self
    }

    /// Checks the configuration and builds the dispatcher.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] with option `"partitions"` when
    ///   [`named`](PartitionDispatcher::named) was given no names.
    /// - [`ConfigError::Invalid`] with option `"partitions"` when a partition name
    ///   appears twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{ConfigError, PartitionDispatcher};
    ///
    /// let no_names: [&str; 0] = [];
    /// let err = PartitionDispatcher::named(no_names, |e: u32| Some((0, e))).build().unwrap_err();
    /// assert_eq!(err, ConfigError::Zero { option: "partitions" });
    /// ```
    pub fn build(self) -> Result<PartitionDispatcher<T>, ConfigError> {
        let (count, names) = match self.partitions {
            Partitions::Numbered(n) => (n.get(), None),
            Partitions::Named(names) => {
                if names.is_empty() {
                    return Err(ConfigError::Zero {
                        option: "partitions",
                    });
                }
                for (i, name) in names.iter().enumerate() {
                    if names[..i].contains(name) {
                        return Err(ConfigError::Invalid {
                            option: "partitions",
                            message: format!(
                                "the partition name {name:?} appears twice; names must be unique"
                            ),
                        });
                    }
                }
                (names.len(), Some(names.into_boxed_slice()))
            }
        };
        Ok(PartitionDispatcher {
            hash: self.hash,
            names,
            slots: (0..count)
                .map(|_| Slot {
                    subs: Vec::new(),
                    demand: 0,
                    queue: VecDeque::new(),
                    dequeued: 0,
                    withheld: 0,
                })
                .collect(),
            batches: (0..count).map(|_| Vec::new()).collect(),
            capacity: self.queue_capacity.get(),
            fill_ahead: self.fill_ahead,
            waiting: 0,
            pending: 0,
            discarded: 0,
            misrouted: 0,
            infos: VecDeque::new(),
        })
    }
}

impl<T> fmt::Debug for PartitionDispatcherBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partitions: &dyn fmt::Debug = match &self.partitions {
            Partitions::Numbered(n) => n,
            Partitions::Named(names) => names,
        };
        f.debug_struct("PartitionDispatcherBuilder")
            .field("partitions", partitions)
            .field("queue_capacity", &self.queue_capacity)
            .field("fill_ahead", &self.fill_ahead)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for PartitionDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partitions: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (self.label(i), &s.subs, s.queue.len()))
            .collect();
        f.debug_struct("PartitionDispatcher")
            .field("partitions (name, [(sub, demand)], queued)", &partitions)
            .field("queue_capacity", &self.capacity)
            .field("fill_ahead", &self.fill_ahead)
            .field("waiting", &self.waiting)
            .field("pending", &self.pending)
            .field("discarded", &self.discarded)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Dispatcher<T> for PartitionDispatcher<T> {
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        _consumer: StageId,
        options: &SubscribeOptions<T>,
    ) -> Result<u64, SubscribeRefused> {
        options.refuse_unsupported("partition", &["partition"])?;
        let Some(partition) = options.partition_name() else {
            return Err(SubscribeRefused::MissingPartition {
                available: self.available(),
            });
        };
        let Some(index) = self.index_of(partition) else {
            return Err(SubscribeRefused::UnknownPartition {
                partition: partition.clone(),
                available: self.available(),
            });
        };
        if self.find(sub).is_some() {
            return Err(SubscribeRefused::AlreadySubscribed);
        }
        self.slots[index].subs.push((sub, 0));
        Ok(0)
    }

    fn cancel(&mut self, sub: SubscriptionId) -> u64 {
        let Some((index, member)) = self.find(sub) else {
            return 0;
        };
        let slot = &mut self.slots[index];
        let (_, unmet) = slot.subs.remove(member);
        // The partition's demand saturates at `u64::MAX` while each subscription
        // keeps its own: with an unbounded ask among them, the sum of the
        // subscriptions' unmet demand can exceed the partition's.
        slot.demand = slot.demand.saturating_sub(unmet);
        // Its queue stays for the other subscriptions of the partition, or the
        // next one; its unmet demand was forwarded already and serves later asks.
        // Filling ahead, the window is not tied to anyone's demand: the events
        // asked for it are queued when they come, and later asks top it up from
        // what is then missing.
        if !self.fill_ahead {
            self.pending = self.pending.saturating_add(unmet);
        }
        0
    }

    fn ask(&mut self, sub: SubscriptionId, demand: u64, out: &mut dyn Deliver<T>) -> u64 {
        let Some((index, member)) = self.find(sub) else {
            return 0;
        };
        let slot = &mut self.slots[index];
        let served = usize::try_from(demand)
            .unwrap_or(usize::MAX)
            .min(slot.queue.len());
        if served > 0 {
            let batch = if served == slot.queue.len() {
                Vec::from(std::mem::take(&mut slot.queue))
            } else {
                slot.queue.drain(..served).collect()
            };
            slot.dequeued += served as u64;
            out.deliver(sub, batch);
        }
        let rest = demand - served as u64;
        slot.demand = slot.demand.saturating_add(rest);
        let own = &mut slot.subs[member].1;
        *own = own.saturating_add(rest);
        if self.fill_ahead {
            // An ask its queue could not serve whole: fill ahead for a whole ask
            // of every partition, not just for what this one still lacks, or the
            // others' queues would be refilled by that shortfall and their next
            // asks split in two batches as well.
            return self.top_up(if rest > 0 { demand } else { 0 });
        }
        let reused = rest.min(self.pending);
        self.pending -= reused;
        let forward = (rest - reused).saturating_add(std::mem::take(&mut slot.withheld));
        self.waiting = self.waiting.saturating_add(forward);
        forward
    }

    fn dispatch(&mut self, events: Vec<T>, out: &mut dyn Deliver<T>) -> Dispatched<T> {
        let total = events.len();
        // The producer counts the first `asked` events against the demand it was
        // sent; any more came unasked (a producer may emit more than its demand).
        let asked = usize::try_from(self.waiting)
            .unwrap_or(usize::MAX)
            .min(total);
        // Events are routed until `target` of them have been delivered; the rest
        // was not asked for and goes back to the producer unhashed.
        let mut target = self.waiting;
        // Filling ahead, every asked-for event closes the window, delivered or
        // queued; unasked ones are routed only while a partition still lacks events.
        let mut lacking = if self.fill_ahead {
            self.slots
                .iter()
                .fold(0u64, |sum, slot| sum.saturating_add(slot.demand))
        } else {
            0
        };

        let mut leftover = Vec::new();
        let mut delivered = 0u64;
        // The partition of the first event that overflowed its queue.
        let mut blocked: Option<usize> = None;
        let mut misrouted: Option<(usize, u64)> = None;
        let mut events = events.into_iter();
        for (position, event) in events.by_ref().enumerate() {
            let done = if self.fill_ahead {
                position >= asked && lacking == 0
            } else {
                delivered == target
            };
            if done {
                leftover.push(event);
                break;
            }
            match (self.hash)(event) {
                None => self.discarded += 1,
                Some((index, event)) => match self.slots.get_mut(index) {
                    None => {
                        self.discarded += 1;
                        self.misrouted += 1;
                        misrouted.get_or_insert((index, 0)).1 += 1;
                    }
                    Some(slot) if slot.demand > 0 => {
                        let batch = &mut self.batches[index];
                        if batch.is_empty() {
                            let fits = usize::try_from(slot.demand).unwrap_or(usize::MAX);
                            batch.reserve(fits.min(total - position));
                        }
                        batch.push(event);
                        slot.demand -= 1;
                        delivered += 1;
                        lacking = lacking.saturating_sub(1);
                        continue;
                    }
                    Some(slot) if slot.queue.len() < self.capacity => slot.queue.push_back(event),
                    Some(_) => {
                        leftover.push(event);
                        blocked.get_or_insert(index);
                    }
                },
            }
            // Not delivered. If it was asked for a cancelled subscription, nobody
            // misses it: it uses that pending demand up.
            if !self.fill_ahead && position < asked && self.pending > 0 {
                self.pending -= 1;
                target -= 1;
            }
        }
        leftover.extend(events);
        if let Some((index, count)) = misrouted {
            tracing::error!(
                index,
                partitions = self.slots.len(),
                count,
                "the partition dispatcher's hash function returned a partition index out of \
                 range; the events were discarded"
            );
        }
        for (slot, batch) in self.slots.iter_mut().zip(self.batches.iter_mut()) {
            if !batch.is_empty() {
                slot.share(std::mem::take(batch), out);
            }
        }

        if self.fill_ahead {
            // The producer counted `asked` events against the window. If some
            // overflowed a full queue, hold back as below until a partition asks.
            self.waiting -= asked as u64;
            if blocked.is_some() {
                self.waiting = 0;
                return Dispatched {
                    leftover,
                    demand: 0,
                };
            }
            let demand = self.top_up(0);
            return Dispatched { leftover, demand };
        }
        // Only deliveries (and pending demand used up) close the window: what it
        // still awaits is `target - delivered`. The producer counted `asked`
        // events against it, so that many minus the deliveries are asked again.
        let awaited = target - delivered;
        let demand = match blocked {
            None => {
                let forward = awaited - (self.waiting - asked as u64);
                self.waiting = awaited;
                forward
            }
            Some(index) => {
                // The producer's buffer now starts with events that cannot be taken
                // until partition `index` asks: anything it sends for this window
                // would queue up behind them. Hold the window back until then.
                let slot = &mut self.slots[index];
                slot.withheld = slot.withheld.saturating_add(awaited);
                self.waiting = 0;
                0
            }
        };
        Dispatched { leftover, demand }
    }

    fn buffered(&self) -> usize {
        self.slots.iter().map(|s| s.queue.len()).sum()
    }

    fn pending_demand(&self, sub: SubscriptionId) -> Option<u64> {
        self.find(sub)
            .map(|(index, member)| self.slots[index].subs[member].1)
    }

    fn unserved(&self) -> Option<(Partition, usize)> {
        let index = self
            .slots
            .iter()
            .position(|s| s.subs.is_empty() && !s.queue.is_empty())?;
        Some((self.label(index), self.slots[index].queue.len()))
    }

    fn misrouted(&self) -> u64 {
        self.misrouted
    }

    fn hold_info(&mut self) -> bool {
        let waits: Vec<(usize, u64)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.queue.is_empty())
            .map(|(index, slot)| (index, slot.dequeued + slot.queue.len() as u64))
            .collect();
        if waits.is_empty() && self.infos.is_empty() {
            return false;
        }
        self.infos.push_back(waits);
        true
    }

    fn release_info(&mut self) -> bool {
        let Some(waits) = self.infos.front() else {
            return false;
        };
        if waits
            .iter()
            .all(|&(index, position)| self.slots[index].dequeued >= position)
        {
            self.infos.pop_front();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::{
    ConfigError, Deliver, Dispatched, Dispatcher, Partition, StageId, SubscribeOptions,
    SubscribeRefused, SubscriptionId,
};

/// The default bound of each partition's queue, in events.
pub const DEFAULT_PARTITION_QUEUE_CAPACITY: usize = 10_000;

/// The hash function of a partition dispatcher: the partition index of an event
/// and the event to send (possibly transformed), or `None` to discard it.
type HashFn<T> = Box<dyn Fn(T) -> Option<(usize, T)> + Send>;

/// Sends each event to exactly one partition, chosen by a hash function, with one
/// consumer per partition (SEMANTICS.md §4).
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
/// Each partition has at most one subscription, which names it with
/// [`SubscribeOptions::partition`]: a [`Partition::Index`] for numbered partitions,
/// a [`Partition::Name`] or a [`Partition::Index`] (its position in the list) for
/// named ones.
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
/// # Cancel
///
/// When a subscription is cancelled its partition becomes free again. Events
/// already queued for it stay queued, in order, for the next subscriber (GenStage
/// drops them). Its unmet demand was already forwarded upstream, so it becomes
/// *pending*: asked-for events that arrive and meet no demand use it up, and later
/// asks of any partition are served from it instead of being forwarded again, as
/// with the [`DemandDispatcher`](crate::DemandDispatcher).
///
/// # Errors
///
/// [`subscribe`](Dispatcher::subscribe) refuses a subscription without a partition
/// option ([`SubscribeRefused::MissingPartition`]), naming a partition that does
/// not exist ([`SubscribeRefused::UnknownPartition`]) or one that already has a
/// subscription ([`SubscribeRefused::PartitionTaken`]), and a reused
/// [`SubscriptionId`] ([`SubscribeRefused::AlreadySubscribed`]).
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
    /// The window: events asked for upstream and still awaited (GenStage's `waiting`).
    waiting: u64,
    /// Unmet demand of cancelled subscriptions, already forwarded upstream.
    pending: u64,
    discarded: u64,
    misrouted: u64,
}

struct Slot<T> {
    sub: Option<SubscriptionId>,
    /// Asked for and not yet delivered. Positive only while `queue` is empty.
    demand: u64,
    queue: VecDeque<T>,
    /// Demand held back while events of this partition that overflowed its full
    /// queue block the producer's buffer; forwarded again on this partition's next ask.
    withheld: u64,
}

/// Builds a [`PartitionDispatcher`]; start with
/// [`PartitionDispatcher::numbered`], [`PartitionDispatcher::named`] or
/// [`PartitionDispatcher::by_key`].
///
/// # Examples
///
/// ```
/// use demandflow_core::{Dispatcher, PartitionDispatcher};
///
/// let d = PartitionDispatcher::numbered(4, |e: u64| Some(((e % 4) as usize, e)))
///     .queue_capacity(100)
///     .build()
///     .unwrap();
/// assert_eq!(d.partitions(), 4);
/// assert_eq!(d.buffered(), 0);
/// ```
pub struct PartitionDispatcherBuilder<T> {
    partitions: Partitions,
    hash: HashFn<T>,
    queue_capacity: usize,
}

enum Partitions {
    Numbered(usize),
    Named(Vec<Arc<str>>),
}

impl<T> PartitionDispatcher<T> {
    /// Starts building a dispatcher with `partitions` partitions numbered
    /// `0..partitions`.
    ///
    /// `hash` returns `Some((index, event))` to send the event (possibly
    /// transformed) to partition `index`, or `None` to discard it.
    ///
    /// # Errors
    ///
    /// [`build`](PartitionDispatcherBuilder::build) returns
    /// [`ConfigError::Zero`] when `partitions` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// // Negative numbers are discarded, the others split by parity.
    /// let mut d = PartitionDispatcher::numbered(2, |e: i32| (e >= 0).then(|| ((e % 2) as usize, e)))
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
        partitions: usize,
        hash: impl Fn(T) -> Option<(usize, T)> + Send + 'static,
    ) -> PartitionDispatcherBuilder<T> {
        PartitionDispatcherBuilder {
            partitions: Partitions::Numbered(partitions),
            hash: Box::new(hash),
            queue_capacity: DEFAULT_PARTITION_QUEUE_CAPACITY,
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
        }
    }

    /// Starts building a dispatcher with `partitions` numbered partitions, where
    /// each event goes to the partition of its key, [`key_partition`]`(&key(&event), partitions)`.
    ///
    /// Events with equal keys always go to the same partition, so the events of one
    /// key reach one consumer, in order. The hash is stable (64-bit FNV-1a over
    /// the bytes the key's [`Hash`] implementation writes, see [`key_partition`]),
    /// so a key maps to the same partition in every run and on every platform.
    /// Nothing is discarded; use [`numbered`](Self::numbered) to discard events or
    /// to spread integer keys with `key % n`.
    ///
    /// # Errors
    ///
    /// [`build`](PartitionDispatcherBuilder::build) returns
    /// [`ConfigError::Zero`] when `partitions` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{key_partition, Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// struct Order { customer: String, amount: u32 }
    ///
    /// let mut d = PartitionDispatcher::by_key(4, |o: &Order| o.customer.clone()).build().unwrap();
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
    pub fn by_key<K: Hash>(
        partitions: usize,
        key: impl Fn(&T) -> K + Send + 'static,
    ) -> PartitionDispatcherBuilder<T> {
        let n = partitions.max(1);
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
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(1, |e: u32| (e % 2 == 0).then_some((0, e)))
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
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// // Wrong: there are 2 partitions but the hash can return 2.
    /// let mut d = PartitionDispatcher::numbered(2, |e: u32| Some(((e % 3) as usize, e)))
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
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(2, |e: u32| Some(((e % 2) as usize, e))).build().unwrap();
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

    fn slot_of(&self, sub: SubscriptionId) -> Option<usize> {
        self.slots.iter().position(|s| s.sub == Some(sub))
    }
}

impl<T> PartitionDispatcherBuilder<T> {
    /// Sets the most events each partition's queue holds (default
    /// [`DEFAULT_PARTITION_QUEUE_CAPACITY`], at least 1).
    ///
    /// Events for a partition whose queue is full are returned from
    /// [`dispatch`](Dispatcher::dispatch) as leftover, for the producer to buffer.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) returns [`ConfigError::Zero`] when `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{Dispatcher, PartitionDispatcher, StageId, SubscribeOptions, SubscriptionId};
    ///
    /// let mut d = PartitionDispatcher::numbered(2, |e: u32| Some(((e % 2) as usize, e)))
    ///     .queue_capacity(2)
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
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Checks the configuration and builds the dispatcher.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] with option `"partitions"` when there are no
    ///   partitions, or `"queue_capacity"` when the capacity is 0.
    /// - [`ConfigError::Invalid`] with option `"partitions"` when a partition name
    ///   appears twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{ConfigError, PartitionDispatcher};
    ///
    /// let err = PartitionDispatcher::numbered(0, |e: u32| Some((0, e))).build().unwrap_err();
    /// assert_eq!(err, ConfigError::Zero { option: "partitions" });
    /// ```
    pub fn build(self) -> Result<PartitionDispatcher<T>, ConfigError> {
        if self.queue_capacity == 0 {
            return Err(ConfigError::Zero {
                option: "queue_capacity",
            });
        }
        let (count, names) = match self.partitions {
            Partitions::Numbered(0) => {
                return Err(ConfigError::Zero {
                    option: "partitions",
                });
            }
            Partitions::Numbered(n) => (n, None),
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
                    sub: None,
                    demand: 0,
                    queue: VecDeque::new(),
                    withheld: 0,
                })
                .collect(),
            batches: (0..count).map(|_| Vec::new()).collect(),
            capacity: self.queue_capacity,
            waiting: 0,
            pending: 0,
            discarded: 0,
            misrouted: 0,
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
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for PartitionDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partitions: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (self.label(i), s.sub, s.demand, s.queue.len()))
            .collect();
        f.debug_struct("PartitionDispatcher")
            .field("partitions (name, sub, demand, queued)", &partitions)
            .field("queue_capacity", &self.capacity)
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
        if self.slot_of(sub).is_some() {
            return Err(SubscribeRefused::AlreadySubscribed);
        }
        if self.slots[index].sub.is_some() {
            return Err(SubscribeRefused::PartitionTaken(self.label(index)));
        }
        self.slots[index].sub = Some(sub);
        Ok(0)
    }

    fn cancel(&mut self, sub: SubscriptionId) -> u64 {
        let Some(index) = self.slot_of(sub) else {
            return 0;
        };
        let slot = &mut self.slots[index];
        slot.sub = None;
        // Its queue stays for the next subscriber; its unmet demand was forwarded
        // already and serves later asks.
        self.pending = self
            .pending
            .saturating_add(std::mem::take(&mut slot.demand));
        0
    }

    fn ask(&mut self, sub: SubscriptionId, demand: u64, out: &mut dyn Deliver<T>) -> u64 {
        let Some(index) = self.slot_of(sub) else {
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
            out.deliver(sub, batch);
        }
        let rest = demand - served as u64;
        slot.demand = slot.demand.saturating_add(rest);
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

        let mut leftover = Vec::new();
        let mut delivered = 0u64;
        // The partition of the first event that overflowed its queue.
        let mut blocked: Option<usize> = None;
        let mut misrouted: Option<(usize, u64)> = None;
        let mut events = events.into_iter();
        for (position, event) in events.by_ref().enumerate() {
            if delivered == target {
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
            if position < asked && self.pending > 0 {
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
        for (slot, batch) in self.slots.iter().zip(self.batches.iter_mut()) {
            if let (Some(sub), false) = (slot.sub, batch.is_empty()) {
                out.deliver(sub, std::mem::take(batch));
            }
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
        self.slot_of(sub).map(|index| self.slots[index].demand)
    }

    fn unserved(&self) -> Option<(Partition, usize)> {
        let index = self
            .slots
            .iter()
            .position(|s| s.sub.is_none() && !s.queue.is_empty())?;
        Some((self.label(index), self.slots[index].queue.len()))
    }
}

/// The partition `key` belongs to among `partitions`, as
/// [`PartitionDispatcher::by_key`] computes it.
///
/// The hash is 64-bit FNV-1a over the bytes `key`'s [`Hash`] implementation
/// writes (integers as little-endian bytes, `usize` and `isize` as 64 bits),
/// reduced modulo `partitions`. It uses no random keys, so it is the same in every
/// run, process and platform, as long as the key type's `Hash` implementation
/// does not change.
///
/// # Panics
///
/// When `partitions` is 0.
///
/// # Examples
///
/// ```
/// use demandflow_core::key_partition;
///
/// assert_eq!(key_partition("alice", 4), 0);
/// assert_eq!(key_partition("bob", 4), 1);
/// assert_eq!(key_partition(&42_u64, 4), 3);
/// assert_eq!(key_partition(&42_u64, 1), 0);
/// ```
pub fn key_partition<K: Hash + ?Sized>(key: &K, partitions: usize) -> usize {
    assert!(partitions > 0, "key_partition needs at least one partition");
    let mut hasher = Fnv1a::default();
    key.hash(&mut hasher);
    // The remainder is below `partitions`, so it fits in a usize.
    (hasher.finish() % partitions as u64) as usize
}

/// 64-bit FNV-1a, with integers written in a platform-independent way.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }

    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }

    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }

    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }

    fn write_isize(&mut self, i: isize) {
        self.write_i64(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::AutoDemand;

    type Out = Vec<(SubscriptionId, Vec<u32>)>;

    fn sub(n: u64) -> SubscriptionId {
        SubscriptionId::from_raw(n)
    }

    fn subscribe(d: &mut PartitionDispatcher<u32>, n: u64, partition: impl Into<Partition>) {
        let opts = SubscribeOptions::new().partition(partition);
        assert_eq!(d.subscribe(sub(n), StageId::from_raw(n), &opts), Ok(0));
    }

    /// The dispatcher of SEMANTICS.md §4: multiples of 3 are discarded, the others
    /// go to "even" (sub 1) or "odd" (sub 2).
    fn even_odd() -> PartitionDispatcher<u32> {
        let mut d = PartitionDispatcher::named(["even", "odd"], |e: u32| {
            (e % 3 != 0).then_some(((e % 2) as usize, e))
        })
        .build()
        .unwrap();
        subscribe(&mut d, 1, "even");
        subscribe(&mut d, 2, "odd");
        d
    }

    /// Two numbered partitions by parity, with a queue capacity.
    fn parity(capacity: usize) -> PartitionDispatcher<u32> {
        PartitionDispatcher::numbered(2, |e: u32| Some(((e % 2) as usize, e)))
            .queue_capacity(capacity)
            .build()
            .unwrap()
    }

    #[test]
    fn the_worked_example_of_the_spec_is_exact() {
        let mut d = even_odd();
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 4, &mut out), 4);
        assert_eq!(d.ask(sub(2), 4, &mut out), 4);
        let got = d.dispatch((1..=12).collect(), &mut out);
        assert_eq!(
            out,
            vec![(sub(1), vec![2, 4, 8, 10]), (sub(2), vec![1, 5, 7, 11])]
        );
        // 9, 10 and 11 made up for the discarded 3 and 6 (and 9 itself): 12 was
        // not asked for and nothing more is asked upstream.
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![12],
                demand: 0
            }
        );
        assert_eq!(d.discarded(), 3);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.pending_demand(sub(1)), Some(0));
        assert_eq!(d.pending_demand(sub(2)), Some(0));
        assert_eq!(d.waiting, 0);
    }

    #[test]
    fn a_producer_sending_exactly_what_was_asked_gets_discards_replaced() {
        let mut d = even_odd();
        let mut out: Out = Vec::new();
        d.ask(sub(1), 4, &mut out);
        d.ask(sub(2), 4, &mut out);
        // 3 and 6 are discarded: 2 replacements.
        let got = d.dispatch((1..=8).collect(), &mut out);
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![],
                demand: 2
            }
        );
        // 9 is discarded: 1 replacement.
        let got = d.dispatch(vec![9, 10], &mut out);
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![],
                demand: 1
            }
        );
        let got = d.dispatch(vec![11], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(
            out,
            vec![
                (sub(1), vec![2, 4, 8]),
                (sub(2), vec![1, 5, 7]),
                (sub(1), vec![10]),
                (sub(2), vec![11]),
            ]
        );
        // 11 events asked for in all (8 + 2 + 1), 11 sent: nothing more is awaited.
        assert_eq!(d.waiting, 0);
    }

    #[test]
    fn discarded_events_never_stall_a_max_2_min_0_consumer() {
        // GenStage delivers [0] and then nothing: 1 is discarded but used up the
        // demand, the consumer waits for a second event that is never asked for.
        let mut d = PartitionDispatcher::numbered(1, |e: u32| (e % 2 == 0).then_some((0, e)))
            .build()
            .unwrap();
        subscribe(&mut d, 1, 0);
        let mut consumer = AutoDemand::new(2, 0);
        let mut out: Out = Vec::new();
        let mut upstream = d.ask(sub(1), consumer.subscribe(), &mut out);
        let mut next = 0;
        let mut received = Vec::new();
        while received.len() < 10 {
            assert!(upstream > 0, "stalled after {received:?}");
            // A saturating producer: exactly what it is asked for.
            let batch: Vec<u32> = (next..next + upstream as u32).collect();
            next += upstream as u32;
            let got = d.dispatch(batch, &mut out);
            assert!(got.leftover.is_empty());
            upstream = got.demand;
            for (_, batch) in out.drain(..) {
                for chunk in crate::split_chunks(batch, consumer.chunk_len()) {
                    let ask = consumer.consume(chunk.len() as u64);
                    received.extend(chunk);
                    if ask > 0 {
                        upstream += d.ask(sub(1), ask, &mut Vec::new());
                    }
                }
            }
        }
        assert_eq!(received, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
    }

    #[test]
    fn events_without_demand_wait_in_their_partition_queue() {
        let mut d = parity(10);
        subscribe(&mut d, 1, 0);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 2, &mut out), 2);
        let got = d.dispatch(vec![1, 3, 5, 0, 2], &mut out);
        // 1, 3 and 5 were queued without using demand up; 0 and 2 made up for them.
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(out, vec![(sub(1), vec![0, 2])]);
        assert_eq!(d.buffered(), 3);
        out.clear();

        // Partition 1 is served from its queue first; only the rest goes upstream.
        subscribe(&mut d, 2, 1);
        assert_eq!(d.ask(sub(2), 2, &mut out), 0);
        assert_eq!(out, vec![(sub(2), vec![1, 3])]);
        assert_eq!(d.pending_demand(sub(2)), Some(0));
        assert_eq!(d.buffered(), 1);
        assert_eq!(d.ask(sub(2), 5, &mut out), 4);
        assert_eq!(out[1], (sub(2), vec![5]));
        assert_eq!(d.pending_demand(sub(2)), Some(4));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_partition_without_demand_does_not_starve_the_others() {
        let mut d = parity(10);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(2), 2, &mut out), 2);
        // Both events are for partition 0, which asked for nothing: they are queued
        // and asked for again.
        assert_eq!(d.dispatch(vec![0, 2], &mut out).demand, 2);
        assert_eq!(d.dispatch(vec![4, 1], &mut out).demand, 1);
        assert_eq!(d.dispatch(vec![3], &mut out).demand, 0);
        assert_eq!(out, vec![(sub(2), vec![1]), (sub(2), vec![3])]);
        assert_eq!(d.buffered(), 3);
        assert_eq!(d.waiting, 0);
    }

    #[test]
    fn events_beyond_the_demand_asked_upstream_are_not_hashed() {
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut d = PartitionDispatcher::numbered(1, move |e: u32| {
            counted.fetch_add(1, Ordering::Relaxed);
            Some((0, e))
        })
        .build()
        .unwrap();
        let mut out: Out = Vec::new();
        assert_eq!(d.dispatch(vec![1, 2], &mut out).leftover, vec![1, 2]);
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        subscribe(&mut d, 1, 0);
        d.ask(sub(1), 1, &mut out);
        assert_eq!(d.dispatch(vec![1, 2], &mut out).leftover, vec![2]);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_queue_returns_events_and_holds_demand_back_until_its_partition_asks() {
        let mut d = parity(2);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(2), 2, &mut out), 2);
        // 0 and 2 fill partition 0's queue; 4 and 6 go back to the producer. Its
        // buffer now starts with 4, so partition 1's 2 events would be stuck
        // behind it: the 2 are held back instead of being asked for.
        let got = d.dispatch(vec![0, 2, 4, 6], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![4, 6]));
        assert!(out.is_empty());
        assert_eq!((d.waiting, d.slots[0].withheld), (0, 2));

        // Partition 1 asks again: the producer takes 4 from its buffer, which
        // still has no room. Held back again, so this does not loop.
        assert_eq!(d.ask(sub(2), 1, &mut out), 1);
        assert_eq!(d.dispatch(vec![4], &mut out), Dispatched::leftover(vec![4]));
        assert_eq!((d.waiting, d.slots[0].withheld), (0, 3));

        // Partition 0 asks: served from its queue, and the held demand is released.
        assert_eq!(d.ask(sub(1), 3, &mut out), 1 + 3);
        assert_eq!(out, vec![(sub(1), vec![0, 2])]);
        out.clear();
        // The producer takes 4 and 6 from its buffer and emits 1 and 3.
        let got = d.dispatch(vec![4, 6, 1, 3], &mut out);
        assert_eq!(out, vec![(sub(1), vec![4]), (sub(2), vec![1, 3])]);
        // 6 was queued without using demand up: one replacement, for partition 1.
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![],
                demand: 1
            }
        );
        assert_eq!(d.pending_demand(sub(1)), Some(0));
        assert_eq!(d.pending_demand(sub(2)), Some(1));
        assert_eq!((d.waiting, d.slots[0].withheld), (1, 0));
        assert_eq!(d.buffered(), 1);
    }

    #[test]
    fn cancel_frees_the_partition_and_keeps_its_queue_for_the_next_subscriber() {
        let mut d = parity(10);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        let mut out: Out = Vec::new();
        d.ask(sub(1), 1, &mut out);
        d.ask(sub(2), 1, &mut out);
        let got = d.dispatch(vec![0, 2, 4, 1], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(d.buffered(), 2);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        // Cancel is idempotent, ask after cancel is ignored.
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        assert_eq!(d.ask(sub(1), 5, &mut out), 0);
        assert_eq!(d.buffered(), 2);
        // The freed partition can be taken again and gets the queue, in order.
        subscribe(&mut d, 3, 0);
        assert_eq!(d.ask(sub(3), 5, &mut out), 3);
        assert_eq!(
            out,
            vec![(sub(1), vec![0]), (sub(2), vec![1]), (sub(3), vec![2, 4])]
        );
    }

    #[test]
    fn demand_of_a_cancelled_subscription_serves_later_asks() {
        let mut d = parity(10);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 5, &mut out), 5);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        assert_eq!(d.pending(), 5);
        assert_eq!(d.ask(sub(2), 3, &mut out), 0);
        assert_eq!(d.ask(sub(2), 4, &mut out), 2);
        assert_eq!(d.pending(), 0);
        // The 5 events asked for partition 0 arrive: odd ones go to partition 1,
        // even ones are queued for partition 0 (demand of the cancelled, no replacement).
        let got = d.dispatch(vec![0, 1, 2, 3, 5, 7, 9, 11, 13], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(out, vec![(sub(2), vec![1, 3, 5, 7, 9, 11, 13])]);
        assert_eq!(d.buffered(), 2);
    }

    #[test]
    fn undelivered_events_first_use_up_pending_demand() {
        let mut d = parity(10);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        let mut out: Out = Vec::new();
        d.ask(sub(1), 2, &mut out);
        d.ask(sub(2), 2, &mut out);
        Dispatcher::<u32>::cancel(&mut d, sub(1));
        // The cancelled subscription's 2 were already asked for: the two events
        // for the free partition 0 use them up, no replacement is asked.
        let got = d.dispatch(vec![0, 2, 1, 3], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(d.pending(), 0);
        assert_eq!(out, vec![(sub(2), vec![1, 3])]);
    }

    #[test]
    fn demand_of_a_cancelled_subscription_does_not_pull_unasked_events_into_queues() {
        let mut d = parity(100);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 5, &mut out), 5);
        Dispatcher::<u32>::cancel(&mut d, sub(1));
        // The 5 asked for are queued (partition 1 asked for nothing) and use the
        // pending demand up; the 15 unasked events go back to the producer.
        let got = d.dispatch((0..20).collect(), &mut out);
        assert_eq!(got, Dispatched::leftover((5..20).collect()));
        assert_eq!(d.buffered(), 5);
        assert_eq!(d.pending(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn subscribing_needs_a_partition_option() {
        let mut d = parity(10);
        assert_eq!(
            d.subscribe(sub(1), StageId::from_raw(1), &SubscribeOptions::new()),
            Err(SubscribeRefused::MissingPartition {
                available: "0..2".into()
            })
        );
    }

    #[test]
    fn subscribing_to_an_unknown_partition_is_refused() {
        let mut d = parity(10);
        for partition in [Partition::Index(2), Partition::from("even")] {
            let opts = SubscribeOptions::new().partition(partition.clone());
            assert_eq!(
                d.subscribe(sub(1), StageId::from_raw(1), &opts),
                Err(SubscribeRefused::UnknownPartition {
                    partition,
                    available: "0..2".into()
                })
            );
        }
        let mut d = even_odd();
        let opts = SubscribeOptions::new().partition("three");
        let refused = d.subscribe(sub(3), StageId::from_raw(3), &opts);
        assert_eq!(
            refused,
            Err(SubscribeRefused::UnknownPartition {
                partition: Partition::from("three"),
                available: r#""even", "odd""#.into()
            })
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            r#"unknown partition "three" (partitions: "even", "odd")"#
        );
    }

    #[test]
    fn a_taken_partition_is_refused_until_it_is_cancelled() {
        let mut d = even_odd();
        let opts = SubscribeOptions::new().partition("odd");
        assert_eq!(
            d.subscribe(sub(3), StageId::from_raw(3), &opts),
            Err(SubscribeRefused::PartitionTaken(Partition::from("odd")))
        );
        // Named partitions may also be named by index, to the same effect.
        let opts = SubscribeOptions::new().partition(1);
        assert_eq!(
            d.subscribe(sub(3), StageId::from_raw(3), &opts),
            Err(SubscribeRefused::PartitionTaken(Partition::from("odd")))
        );
        Dispatcher::<u32>::cancel(&mut d, sub(2));
        assert_eq!(d.subscribe(sub(3), StageId::from_raw(3), &opts), Ok(0));
    }

    #[test]
    fn a_subscription_id_is_accepted_once() {
        let mut d = parity(10);
        subscribe(&mut d, 1, 0);
        let opts = SubscribeOptions::new().partition(1);
        assert_eq!(
            d.subscribe(sub(1), StageId::from_raw(1), &opts),
            Err(SubscribeRefused::AlreadySubscribed)
        );
        // One consumer may hold several partitions, with one subscription each.
        assert_eq!(d.subscribe(sub(2), StageId::from_raw(1), &opts), Ok(0));
    }

    #[test]
    fn an_index_out_of_range_is_discarded_and_replaced() {
        let mut d = PartitionDispatcher::numbered(2, |e: u32| Some((e as usize, e)))
            .build()
            .unwrap();
        subscribe(&mut d, 1, 1);
        let mut out: Out = Vec::new();
        d.ask(sub(1), 2, &mut out);
        let got = d.dispatch(vec![7, 1], &mut out);
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![],
                demand: 1
            }
        );
        assert_eq!(out, vec![(sub(1), vec![1])]);
        assert_eq!((d.misrouted(), d.discarded()), (1, 1));
    }

    #[test]
    fn the_hash_may_transform_events() {
        let mut d = PartitionDispatcher::numbered(1, |e: u32| Some((0, e * 10)))
            .build()
            .unwrap();
        subscribe(&mut d, 1, 0);
        let mut out: Out = Vec::new();
        d.ask(sub(1), 2, &mut out);
        d.dispatch(vec![1, 2], &mut out);
        assert_eq!(out, vec![(sub(1), vec![10, 20])]);
    }

    #[test]
    fn build_rejects_bad_configurations() {
        let hash = |e: u32| Some((0, e));
        let zero = ConfigError::Zero {
            option: "partitions",
        };
        assert_eq!(
            PartitionDispatcher::numbered(0, hash).build().unwrap_err(),
            zero
        );
        let no_names: [&str; 0] = [];
        assert_eq!(
            PartitionDispatcher::named(no_names, hash)
                .build()
                .unwrap_err(),
            zero
        );
        assert_eq!(
            PartitionDispatcher::by_key(0, |e: &u32| *e)
                .build()
                .unwrap_err(),
            zero
        );
        assert_eq!(
            PartitionDispatcher::named(["a", "b", "a"], hash)
                .build()
                .unwrap_err()
                .to_string(),
            r#"invalid option partitions: the partition name "a" appears twice; names must be unique"#
        );
        assert_eq!(
            PartitionDispatcher::numbered(1, hash)
                .queue_capacity(0)
                .build()
                .unwrap_err(),
            ConfigError::Zero {
                option: "queue_capacity"
            }
        );
        let d = PartitionDispatcher::numbered(3, hash).build().unwrap();
        assert_eq!(d.capacity, DEFAULT_PARTITION_QUEUE_CAPACITY);
        assert_eq!(d.partitions(), 3);
    }

    #[test]
    fn unknown_subscriptions_are_ignored() {
        let mut d = parity(10);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(9), 5, &mut out), 0);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(9)), 0);
        assert_eq!(d.pending_demand(sub(9)), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn fnv1a_matches_the_reference_test_vectors() {
        let fnv = |bytes: &[u8]| {
            let mut h = Fnv1a::default();
            h.write(bytes);
            h.finish()
        };
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn key_partition_is_stable_and_platform_independent() {
        assert_eq!(key_partition("alice", 4), 0);
        assert_eq!(key_partition("bob", 4), 1);
        assert_eq!(key_partition(&42_u64, 8), 7);
        // usize is hashed as 64 bits on every platform.
        assert_eq!(key_partition(&42_usize, 8), key_partition(&42_u64, 8));
    }

    #[test]
    fn by_key_sends_equal_keys_to_one_partition_in_order() {
        let mut d = PartitionDispatcher::by_key(3, |e: &(u32, u32)| e.0)
            .build()
            .unwrap();
        let mut out = Vec::new();
        for p in 0..3 {
            let opts = SubscribeOptions::new().partition(p);
            d.subscribe(sub(p as u64), StageId::from_raw(p as u64), &opts)
                .unwrap();
            d.ask(sub(p as u64), 100, &mut out);
        }
        let events: Vec<(u32, u32)> = (0..60).map(|i| (i % 7, i)).collect();
        d.dispatch(events, &mut out);
        for (s, batch) in &out {
            for (key, _) in batch {
                assert_eq!(key_partition(key, 3) as u64, s.as_u64());
            }
            assert!(batch.windows(2).all(|w| w[0].1 < w[1].1));
        }
        assert_eq!(out.iter().map(|(_, b)| b.len()).sum::<usize>(), 60);
    }

    #[test]
    fn the_dispatcher_and_its_builder_are_send() {
        // Not Sync: the hash function is only required to be Send.
        fn assert_send<T: Send>() {}
        assert_send::<PartitionDispatcher<u32>>();
        assert_send::<PartitionDispatcherBuilder<u32>>();
    }

    #[test]
    fn debug_needs_no_bound_on_the_event_type() {
        struct Opaque;
        let d = PartitionDispatcher::numbered(1, |e: Opaque| Some((0, e)))
            .build()
            .unwrap();
        assert!(format!("{d:?}").starts_with("PartitionDispatcher"));
    }
}

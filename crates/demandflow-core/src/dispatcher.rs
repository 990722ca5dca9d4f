//! The dispatcher contract: the [`Dispatcher`] trait a producer routes events
//! through, what the runtime guarantees to an implementation and what it must
//! guarantee back. Read it before writing a dispatcher of your own.

use crate::{Partition, StageId, SubscribeOptions, SubscribeRefused, SubscriptionId};

/// Where a dispatcher sends the batches it decides to deliver.
///
/// The runtime implements it by sending each batch to the subscription's consumer;
/// tests use the implementation for `Vec<(SubscriptionId, Vec<T>)>`, which records
/// the deliveries in order.
pub trait Deliver<T> {
    /// Delivers `batch` (never empty) to subscription `sub`.
    fn deliver(&mut self, sub: SubscriptionId, batch: Vec<T>);
}

impl<T> Deliver<T> for Vec<(SubscriptionId, Vec<T>)> {
    fn deliver(&mut self, sub: SubscriptionId, batch: Vec<T>) {
        self.push((sub, batch));
    }
}

/// What [`Dispatcher::dispatch`] hands back to the producer.
#[derive(Debug, PartialEq, Eq)]
pub struct Dispatched<T> {
    /// Events that could not be delivered or kept, in order; the producer buffers them.
    pub leftover: Vec<T>,
    /// Demand to forward upstream.
    pub demand: u64,
}

impl<T> Dispatched<T> {
    /// Only leftover events, no new upstream demand.
    pub fn leftover(leftover: Vec<T>) -> Self {
        Dispatched {
            leftover,
            demand: 0,
        }
    }
}

/// Decides which subscriptions get which events (SEMANTICS.md §4).
///
/// A producer owns exactly one dispatcher. It is a pure state machine: it never
/// talks to tasks or clocks, it only records demand and hands batches to a
/// [`Deliver`] sink. That makes dispatchers easy to write and to test with exact
/// numbers.
///
/// # What the framework guarantees to you
///
/// - `subscribe` is called once per subscription, before any `ask` or `cancel` for it.
/// - `ask` is only called with `demand > 0`, for a subscription you accepted and
///   that is not cancelled.
/// - `cancel` is called at most once per accepted subscription.
/// - `dispatch` is only called with a non-empty batch, in the order the producer
///   emitted the events.
/// - The counts you return from `subscribe`, `ask` and `cancel` are forwarded to
///   the producer as demand (`handle_demand`, after taking what is buffered).
///
/// # What you must guarantee back
///
/// - Never deliver more events to a subscription than it has asked for, and never
///   an empty batch.
/// - Never drop an event silently: every event you are handed is delivered, kept
///   in your own queue (and counted by [`buffered`](Dispatcher::buffered)), or
///   returned from `dispatch` so the producer buffers it.
/// - Deliver the events of one subscription in the order you received them.
/// - Do not panic on an unknown subscription id; ignore it.
///
/// # Examples
///
/// A round-robin dispatcher that serves subscriptions in turn, one event each:
///
/// ```
/// use demandflow_core::{Deliver, Dispatched, Dispatcher, StageId, SubscribeOptions, SubscribeRefused, SubscriptionId};
///
/// #[derive(Default)]
/// struct RoundRobin {
///     subs: Vec<(SubscriptionId, u64)>,
///     next: usize,
/// }
///
/// impl<T: Send + 'static> Dispatcher<T> for RoundRobin {
///     fn subscribe(&mut self, sub: SubscriptionId, _: StageId, _: &SubscribeOptions<T>)
///         -> Result<u64, SubscribeRefused> {
///         self.subs.push((sub, 0));
///         Ok(0)
///     }
///     fn cancel(&mut self, sub: SubscriptionId) -> u64 {
///         self.subs.retain(|(s, _)| *s != sub);
///         0
///     }
///     fn ask(&mut self, sub: SubscriptionId, demand: u64, _: &mut dyn Deliver<T>) -> u64 {
///         if let Some(entry) = self.subs.iter_mut().find(|(s, _)| *s == sub) {
///             entry.1 += demand;
///             demand
///         } else {
///             0
///         }
///     }
///     fn dispatch(&mut self, events: Vec<T>, out: &mut dyn Deliver<T>) -> Dispatched<T> {
///         let mut events = events.into_iter();
///         let mut left = Vec::new();
///         'next: for event in events.by_ref() {
///             for _ in 0..self.subs.len() {
///                 self.next = (self.next + 1) % self.subs.len();
///                 let (sub, demand) = &mut self.subs[self.next];
///                 if *demand > 0 {
///                     *demand -= 1;
///                     out.deliver(*sub, vec![event]);
///                     continue 'next;
///                 }
///             }
///             left.push(event);
///             break;
///         }
///         left.extend(events);
///         Dispatched::leftover(left)
///     }
/// }
///
/// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// let mut rr = RoundRobin::default();
/// let opts = SubscribeOptions::new();
/// Dispatcher::<u32>::subscribe(&mut rr, a, StageId::from_raw(1), &opts).unwrap();
/// Dispatcher::<u32>::subscribe(&mut rr, b, StageId::from_raw(2), &opts).unwrap();
/// let mut out: Vec<(SubscriptionId, Vec<u32>)> = Vec::new();
/// assert_eq!(rr.ask(a, 2, &mut out), 2);
/// assert_eq!(rr.ask(b, 1, &mut out), 1);
/// let left = rr.dispatch(vec![10, 11, 12, 13], &mut out);
/// assert_eq!(left, Dispatched { leftover: vec![13], demand: 0 });
/// assert_eq!(out, vec![(b, vec![10]), (a, vec![11]), (a, vec![12])]);
/// ```
pub trait Dispatcher<T>: Send + 'static {
    /// A consumer subscribed. Returns demand to forward upstream (usually 0).
    ///
    /// # Errors
    ///
    /// A [`SubscribeRefused`] reason when this subscription cannot be accepted; the
    /// runtime reports it to the subscriber and forgets the subscription.
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        consumer: StageId,
        options: &SubscribeOptions<T>,
    ) -> Result<u64, SubscribeRefused>;

    /// A subscription ended. Returns demand to forward upstream (usually 0).
    fn cancel(&mut self, sub: SubscriptionId) -> u64;

    /// A subscription asked for `demand` (> 0) more events. Returns demand to
    /// forward upstream. Events the dispatcher had queued for `sub` may be
    /// delivered through `out` right away.
    fn ask(&mut self, sub: SubscriptionId, demand: u64, out: &mut dyn Deliver<T>) -> u64;

    /// Hands `events` (non-empty, in emission order) to subscriptions with demand.
    ///
    /// Returns the events it could neither deliver nor keep, which the producer
    /// buffers, and any demand to forward upstream that arose while dispatching
    /// (for example for events that were discarded or that a selector rejected, so
    /// that they do not use up demand).
    fn dispatch(&mut self, events: Vec<T>, out: &mut dyn Deliver<T>) -> Dispatched<T>;

    /// Events the dispatcher holds in its own queues (reported by
    /// `estimate_buffered_count`). Default: 0.
    fn buffered(&self) -> usize {
        0
    }

    /// The demand `sub` has asked for and not yet received, for stats.
    fn pending_demand(&self, sub: SubscriptionId) -> Option<u64> {
        let _ = sub;
        None
    }

    /// Events discarded because they were routed to a destination that does not
    /// exist (a partition index out of range), reported in the producer's stats.
    /// Default: 0.
    fn misrouted(&self) -> u64 {
        0
    }

    /// The producer has an info message whose events have all left its buffer:
    /// it must still wait for the events queued in *your* queues before it
    /// (SEMANTICS.md §3).
    ///
    /// Return `false` when it need not wait: nothing is queued and no earlier
    /// info is waiting (the default, for dispatchers without queues). Otherwise
    /// remember a marker behind everything queued now and return `true`; the
    /// producer then asks [`release_info`](Dispatcher::release_info) after each
    /// operation. Markers are released in the order they were placed.
    fn hold_info(&mut self) -> bool {
        false
    }

    /// `true`, and the marker is forgotten, when the oldest marker placed by
    /// [`hold_info`](Dispatcher::hold_info) has every event queued before it
    /// delivered. Only called while a marker is held. Default: `true`.
    fn release_info(&mut self) -> bool {
        true
    }

    /// A partition holding events while no consumer is subscribed to it, and how
    /// many it holds: those events wait until one subscribes (for stall reports).
    /// Default: none.
    fn unserved(&self) -> Option<(Partition, usize)> {
        None
    }
}

//! The broadcast dispatcher: every event to every subscription, at the pace of
//! the slowest. Use it when each consumer needs the whole stream; a
//! subscription's selector filters what it receives.

use std::fmt;

use crate::{
    Deliver, Dispatched, Dispatcher, Selector, StageId, SubscribeOptions, SubscribeRefused,
    SubscriptionId,
};

/// Sends every event to every subscription, at the pace of the slowest one
/// (SEMANTICS.md §4).
///
/// Choose it when every consumer must see the whole stream (fan-out: a logger and
/// an indexer reading the same events). When each event should be handled once,
/// by whichever consumer is free, use the default
/// [`DemandDispatcher`](crate::DemandDispatcher); when each event belongs to one
/// consumer chosen by a key, use [`PartitionDispatcher`](crate::PartitionDispatcher).
///
/// # Demand
///
/// Upstream demand is the growth of the *minimum* demand over subscriptions: a
/// consumer that asks for more than the slowest one is not forwarded anything
/// until the slowest catches up, and each event is then sent to every
/// subscription. The dispatcher remembers how many events it has asked for and
/// not yet received (GenStage's `waiting`); only that many events of a batch are
/// sent, and the rest is returned as leftover for the producer to buffer.
///
/// A new subscription starts with no demand, so while it has not asked the
/// minimum is 0 and nothing more is forwarded upstream. When the slowest
/// subscription cancels, the new minimum may be higher than what was forwarded,
/// and [`cancel`](Dispatcher::cancel) returns the difference.
///
/// # Selectors
///
/// A subscription with a [`selector`](SubscribeOptions::selector) is only sent the
/// events its selector accepts. A rejected event does not use up its demand, so a
/// selective consumer never holds the others back; [`dispatch`](Dispatcher::dispatch)
/// returns the demand this frees in [`Dispatched::demand`]. A batch with no
/// accepted event is not sent at all: batches are never empty.
///
/// # Differences from GenStage
///
/// - **A late subscriber is never sent events it did not ask for.** Events already
///   asked for upstream when a subscription is accepted (in flight) are not sent
///   to it; it receives every event after them. GenStage sends it those in-flight
///   events before it has asked for any, which breaks "never more than asked".
///   To have every consumer see the stream from its first event, subscribe them
///   all before the first event flows (accumulate mode, SEMANTICS.md §3).
/// - **In-flight events nobody would receive go back to the producer.** When
///   the last subscriptions that were to receive in-flight events cancel, the
///   events are no longer awaited: they are returned as leftover when they
///   arrive, and the producer buffers them for the consumers that ask next.
///   GenStage sends them to nobody.
///
/// # Errors
///
/// [`subscribe`](Dispatcher::subscribe) refuses a consumer ([`StageId`]) that is
/// already subscribed, and a reused [`SubscriptionId`], with
/// [`SubscribeRefused::AlreadySubscribed`].
///
/// # Examples
///
/// ```
/// use demandflow_core::{BroadcastDispatcher, Dispatched, Dispatcher, StageId, SubscribeOptions, SubscriptionId};
///
/// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// let mut d = BroadcastDispatcher::new();
/// d.subscribe(a, StageId::from_raw(1), &SubscribeOptions::new()).unwrap();
/// // `b` only wants even events.
/// let evens = SubscribeOptions::new().selector(|e: &u32| e % 2 == 0);
/// d.subscribe(b, StageId::from_raw(2), &evens).unwrap();
///
/// let mut out = Vec::new();
/// assert_eq!(d.ask(a, 3, &mut out), 0); // `b` has not asked: the minimum is 0
/// assert_eq!(d.ask(b, 2, &mut out), 2); // the minimum grew to 2
///
/// let got = d.dispatch(vec![1, 2, 3], &mut out);
/// // Only 2 events were asked for upstream: 3 goes back to the producer.
/// assert_eq!(got.leftover, vec![3]);
/// assert_eq!(out, vec![(a, vec![1, 2]), (b, vec![2])]);
/// // `b` rejected 1, so it still wants 1 event, as `a` does: 1 more upstream.
/// assert_eq!(got.demand, 1);
/// assert_eq!(d.pending_demand(a), Some(1));
/// assert_eq!(d.pending_demand(b), Some(1));
/// ```
pub struct BroadcastDispatcher<T> {
    /// In subscription order, which is also the delivery order.
    subs: Vec<Subscriber<T>>,
    /// Events asked for upstream and not yet dispatched (GenStage's `waiting`).
    waiting: u64,
}

struct Subscriber<T> {
    sub: SubscriptionId,
    consumer: StageId,
    /// Asked for and not yet received. Rejected events do not lower it.
    demand: u64,
    /// How many of the next `waiting` events are not for this subscription:
    /// they were asked for upstream before it subscribed. Never above `waiting`.
    skip: u64,
    selector: Option<Selector<T>>,
}

impl<T> Subscriber<T> {
    /// How far this subscription's demand reaches beyond the events already
    /// asked for upstream. The minimum over subscriptions is what can be forwarded.
    ///
    /// Never negative: a subscription is never expected to receive more in-flight
    /// events than it asked for.
    fn headroom(&self, waiting: u64) -> u64 {
        self.demand.saturating_sub(waiting - self.skip)
    }
}

impl<T> BroadcastDispatcher<T> {
    /// A broadcast dispatcher with no subscriptions.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{BroadcastDispatcher, Dispatcher};
    ///
    /// let d = BroadcastDispatcher::<u32>::new();
    /// assert_eq!(d.buffered(), 0);
    /// ```
    pub fn new() -> Self {
        BroadcastDispatcher {
            subs: Vec::new(),
            waiting: 0,
        }
    }

    /// Forwards the growth of the minimum demand: after this the slowest
    /// subscription has no demand beyond what is already asked for upstream.
    fn forward(&mut self) -> u64 {
        let waiting = self.waiting;
        let Some(min) = self.subs.iter().map(|s| s.headroom(waiting)).min() else {
            return 0;
        };
        self.waiting = self.waiting.saturating_add(min);
        min
    }

    fn find(&self, sub: SubscriptionId) -> Option<&Subscriber<T>> {
        self.subs.iter().find(|s| s.sub == sub)
    }
}

impl<T> Default for BroadcastDispatcher<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for BroadcastDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subs: Vec<_> = self.subs.iter().map(|s| (s.sub, s.demand)).collect();
        f.debug_struct("BroadcastDispatcher")
            .field("demands", &subs)
            .field("waiting", &self.waiting)
            .finish()
    }
}

impl<T: Clone + Send + 'static> Dispatcher<T> for BroadcastDispatcher<T> {
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        consumer: StageId,
        options: &SubscribeOptions<T>,
    ) -> Result<u64, SubscribeRefused> {
        options.refuse_unsupported("broadcast", &["selector"])?;
        if self
            .subs
            .iter()
            .any(|s| s.consumer == consumer || s.sub == sub)
        {
            return Err(SubscribeRefused::AlreadySubscribed);
        }
        // The events in flight were asked for the subscriptions already here: the
        // newcomer skips them, which keeps its headroom at 0 and the minimum unchanged.
        self.subs.push(Subscriber {
            sub,
            consumer,
            demand: 0,
            skip: self.waiting,
            selector: options.selector_fn().cloned(),
        });
        Ok(0)
    }

    fn cancel(&mut self, sub: SubscriptionId) -> u64 {
        let Some(index) = self.subs.iter().position(|s| s.sub == sub) else {
            return 0;
        };
        self.subs.remove(index);
        // The first `unwanted` in-flight events would now reach nobody: stop
        // awaiting them, so they come back as leftover and stay buffered.
        let unwanted = self
            .subs
            .iter()
            .map(|s| s.skip)
            .min()
            .unwrap_or(self.waiting);
        self.waiting -= unwanted;
        for s in &mut self.subs {
            s.skip -= unwanted;
        }
        // The subscription we were waiting on may be gone: the minimum can grow.
        // Events the producer still owes for the window just dropped serve that
        // growth first, and only the rest is forwarded.
        let grown = self.forward();
        let reused = grown.min(unwanted);
        grown - reused
    }

    fn ask(&mut self, sub: SubscriptionId, demand: u64, _out: &mut dyn Deliver<T>) -> u64 {
        let Some(entry) = self.subs.iter_mut().find(|s| s.sub == sub) else {
            return 0;
        };
        entry.demand = entry.demand.saturating_add(demand);
        self.forward()
    }

    fn dispatch(&mut self, mut events: Vec<T>, out: &mut dyn Deliver<T>) -> Dispatched<T> {
        let now = usize::try_from(self.waiting)
            .unwrap_or(usize::MAX)
            .min(events.len());
        let leftover = if now < events.len() {
            events.split_off(now)
        } else {
            Vec::new()
        };
        if now == 0 {
            return Dispatched::leftover(leftover);
        }
        self.waiting -= now as u64;

        // The last subscription that receives anything takes `events` itself; the
        // others get clones.
        let last = self.subs.iter().rposition(|s| s.skip < now as u64);
        for (index, s) in self.subs.iter_mut().enumerate() {
            let skipped = usize::try_from(s.skip).unwrap_or(usize::MAX).min(now);
            s.skip -= skipped as u64;
            if skipped == now {
                continue;
            }
            let batch: Vec<T> = if Some(index) == last {
                let mut batch = std::mem::take(&mut events);
                batch.drain(..skipped);
                if let Some(selector) = &s.selector {
                    batch.retain(|e| selector(e));
                }
                batch
            } else {
                match &s.selector {
                    Some(selector) => events[skipped..]
                        .iter()
                        .filter(|e| selector(e))
                        .cloned()
                        .collect(),
                    None => events[skipped..].to_vec(),
                }
            };
            // Rejected events leave the demand untouched: they are replenished.
            s.demand = s.demand.saturating_sub(batch.len() as u64);
            if !batch.is_empty() {
                out.deliver(s.sub, batch);
            }
        }
        Dispatched {
            leftover,
            demand: self.forward(),
        }
    }

    fn pending_demand(&self, sub: SubscriptionId) -> Option<u64> {
        self.find(sub).map(|s| s.demand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        Out, ask_each, asks, assert_unknown_subscription_ignored, sub, subscribe_with,
    };

    fn subscribe(d: &mut BroadcastDispatcher<u32>, n: u64) {
        subscribe_with(d, n, &SubscribeOptions::new());
    }

    fn setup(n: u64) -> BroadcastDispatcher<u32> {
        let mut d = BroadcastDispatcher::new();
        for i in 1..=n {
            subscribe(&mut d, i);
        }
        d
    }

    #[test]
    fn subscribe_and_cancel_forward_no_demand() {
        let mut d = setup(1);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        assert_eq!(d.subs.len(), 0);
        assert_eq!(d.waiting, 0);
    }

    #[test]
    fn upstream_demand_is_the_growth_of_the_minimum() {
        let mut d = setup(2);
        let (mut out, up) = asks(&mut d, &[(1, 3), (2, 2)]);
        assert_eq!(up, [0, 2]);

        // One batch fits all.
        let got = d.dispatch(vec![1, 2], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(out, vec![(sub(1), vec![1, 2]), (sub(2), vec![1, 2])]);
        out.clear();

        // A batch with leftover: sub 1 has 1 left, sub 2 now 2: the minimum grew by 1.
        assert_eq!(d.ask(sub(2), 2, &mut out), 1);
        let got = d.dispatch(vec![3, 4], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![4]));
        assert_eq!(out, vec![(sub(1), vec![3]), (sub(2), vec![3])]);
        out.clear();

        // A batch with no demand at all.
        assert_eq!(d.dispatch(vec![4], &mut out).leftover, vec![4]);
        assert!(out.is_empty());
        assert_eq!(d.pending_demand(sub(1)), Some(0));
        assert_eq!(d.pending_demand(sub(2)), Some(1));
    }

    #[test]
    fn a_late_subscriber_does_not_receive_events_in_flight() {
        // GenStage's "subscribes, asks and dispatches to multiple consumers", with
        // the one deliberate difference: sub 3 is not sent [4] before it asked.
        let mut d = setup(2);
        let mut out = ask_each(&mut d, &[(1, 3), (2, 2)]);
        d.dispatch(vec![1, 2], &mut out);
        d.ask(sub(2), 2, &mut out);
        d.dispatch(vec![3, 4], &mut out);
        out.clear();

        assert_eq!(d.ask(sub(1), 1, &mut out), 1); // 4 is now in flight
        subscribe(&mut d, 3);
        let got = d.dispatch(vec![4, 5], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![5]));
        assert_eq!(out, vec![(sub(1), vec![4]), (sub(2), vec![4])]);
        assert_eq!(d.pending_demand(sub(3)), Some(0));
        out.clear();

        // Even out: everybody asks, the slowest (sub 3) decides.
        assert_eq!(d.ask(sub(1), 2, &mut out), 0);
        assert_eq!(d.ask(sub(2), 2, &mut out), 0);
        assert_eq!(d.ask(sub(3), 3, &mut out), 2);
        let got = d.dispatch(vec![5, 6], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![]));
        assert_eq!(
            out,
            vec![
                (sub(1), vec![5, 6]),
                (sub(2), vec![5, 6]),
                (sub(3), vec![5, 6])
            ]
        );
        assert_eq!(d.pending_demand(sub(3)), Some(1));
    }

    #[test]
    fn a_new_subscription_holds_demand_back_until_it_asks() {
        let mut d = setup(1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 10, &mut out), 10);
        subscribe(&mut d, 2);
        // The minimum is now sub 2's 0: sub 1 asking more forwards nothing.
        assert_eq!(d.ask(sub(1), 5, &mut out), 0);
        assert_eq!(d.ask(sub(2), 4, &mut out), 4);
        assert_eq!(d.ask(sub(2), 20, &mut out), 1);
    }

    #[test]
    fn cancelling_the_slowest_subscription_forwards_the_new_minimum() {
        let mut d = setup(2);
        let (mut out, up) = asks(&mut d, &[(1, 10), (2, 4)]);
        assert_eq!(up, [0, 4]);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(2)), 6);
        let got = d.dispatch((1..=12).collect(), &mut out);
        assert_eq!(got.leftover, vec![11, 12]);
        assert_eq!(out, vec![(sub(1), (1..=10).collect())]);
    }

    #[test]
    fn cancelling_a_subscription_that_never_asked_forwards_the_others_demand() {
        let mut d = setup(2);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 10, &mut out), 0);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(2)), 10);
        assert_eq!(d.ask(sub(1), 10, &mut out), 10);
    }

    #[test]
    fn cancel_is_idempotent_and_ask_after_cancel_is_ignored() {
        let mut d = setup(2);
        let mut out = ask_each(&mut d, &[(1, 3)]);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(2)), 3);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(2)), 0);
        assert_eq!(d.ask(sub(2), 5, &mut out), 0);
        assert_eq!(d.pending_demand(sub(2)), None);
        d.dispatch(vec![1, 2, 3], &mut out);
        assert_eq!(out, vec![(sub(1), vec![1, 2, 3])]);
    }

    #[test]
    fn in_flight_events_nobody_would_receive_come_back_as_leftover() {
        let mut d = setup(1);
        let (mut out, up) = asks(&mut d, &[(1, 10)]);
        assert_eq!(up, [10]);
        subscribe(&mut d, 2); // skips the 10 in flight
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        // GenStage would send these to sub 2, which asked for nothing.
        assert_eq!(d.dispatch(vec![1, 2, 3], &mut out).leftover, vec![1, 2, 3]);
        assert!(out.is_empty());
        assert_eq!(d.ask(sub(2), 2, &mut out), 2);
        assert_eq!(d.dispatch(vec![1, 2, 3], &mut out).leftover, vec![3]);
        assert_eq!(out, vec![(sub(2), vec![1, 2])]);
    }

    #[test]
    fn a_late_subscriber_left_alone_is_served_from_events_in_flight() {
        let mut d = setup(1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 5, &mut out), 5);
        subscribe(&mut d, 2);
        assert_eq!(d.ask(sub(2), 3, &mut out), 0);
        // The producer still owes 5 events: they serve sub 2's 3, nothing more is asked.
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        let got = d.dispatch(vec![1, 2, 3, 4, 5], &mut out);
        assert_eq!(got, Dispatched::leftover(vec![4, 5]));
        assert_eq!(out, vec![(sub(2), vec![1, 2, 3])]);
    }

    #[test]
    fn the_last_subscription_leaving_drops_the_window() {
        let mut d = setup(1);
        let mut out = ask_each(&mut d, &[(1, 4)]);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        assert_eq!(d.waiting, 0);
        assert_eq!(d.dispatch(vec![1, 2], &mut out).leftover, vec![1, 2]);
        assert!(out.is_empty());
    }

    #[test]
    fn rejected_events_replenish_the_selective_subscription() {
        let mut d = setup(1);
        subscribe_with(
            &mut d,
            2,
            &SubscribeOptions::new().selector(|e: &u32| e % 3 == 0),
        );
        let (mut out, up) = asks(&mut d, &[(1, 6), (2, 2)]);
        assert_eq!(up, [0, 2]);
        // 1 and 2 are rejected by sub 2: it still wants 2, sub 1 wants 4.
        let got = d.dispatch(vec![1, 2], &mut out);
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![],
                demand: 2
            }
        );
        assert_eq!(out, vec![(sub(1), vec![1, 2])]);
        out.clear();
        let got = d.dispatch(vec![3, 4, 5], &mut out);
        // Only 3 and 4 were asked for; 3 is accepted, 4 rejected.
        assert_eq!(
            got,
            Dispatched {
                leftover: vec![5],
                demand: 1
            }
        );
        assert_eq!(out, vec![(sub(1), vec![3, 4]), (sub(2), vec![3])]);
        assert_eq!(d.pending_demand(sub(1)), Some(2));
        assert_eq!(d.pending_demand(sub(2)), Some(1));
    }

    #[test]
    fn a_selector_rejecting_everything_never_holds_the_others_back() {
        let mut d = setup(1);
        subscribe_with(
            &mut d,
            2,
            &SubscribeOptions::new().selector(|_: &u32| false),
        );
        let mut out = ask_each(&mut d, &[(2, 1)]);
        assert_eq!(d.ask(sub(1), 100, &mut out), 1);
        let mut next = 0;
        let mut demand = 1;
        while demand > 0 {
            let batch: Vec<u32> = (next..next + demand as u32).collect();
            next += demand as u32;
            let got = d.dispatch(batch, &mut out);
            assert!(got.leftover.is_empty());
            demand = got.demand;
        }
        assert_eq!(next, 100);
        assert!(out.iter().all(|(s, _)| *s == sub(1)));
        assert_eq!(out.iter().map(|(_, b)| b.len()).sum::<usize>(), 100);
        assert_eq!(d.pending_demand(sub(2)), Some(1));
    }

    #[test]
    fn the_same_consumer_subscribing_twice_is_refused() {
        let mut d = setup(1);
        let opts = SubscribeOptions::new();
        assert_eq!(
            d.subscribe(sub(2), StageId::from_raw(1), &opts),
            Err(SubscribeRefused::AlreadySubscribed)
        );
        assert_eq!(
            d.subscribe(sub(1), StageId::from_raw(2), &opts),
            Err(SubscribeRefused::AlreadySubscribed)
        );
        assert_eq!(d.subs.len(), 1);
        // Once cancelled, the consumer may subscribe again.
        Dispatcher::<u32>::cancel(&mut d, sub(1));
        assert_eq!(d.subscribe(sub(3), StageId::from_raw(1), &opts), Ok(0));
    }

    #[test]
    fn unknown_subscriptions_are_ignored() {
        let mut d = setup(1);
        assert_unknown_subscription_ignored(&mut d);
        assert_eq!(d.pending_demand(sub(9)), None);
    }

    #[test]
    fn without_subscriptions_every_event_is_left_over() {
        let mut d = BroadcastDispatcher::new();
        let mut out: Out = Vec::new();
        assert_eq!(d.dispatch(vec![1, 2], &mut out).leftover, vec![1, 2]);
        assert!(out.is_empty());
    }

    #[test]
    fn the_last_recipient_gets_the_batch_allocation() {
        let mut d = setup(3);
        let mut out: Out = Vec::new();
        for i in 1..=3 {
            d.ask(sub(i), 4, &mut out);
        }
        let events = vec![1, 2, 3, 4];
        let ptr = events.as_ptr();
        d.dispatch(events, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|(_, b)| *b == vec![1, 2, 3, 4]));
        assert_eq!(out[2].1.as_ptr(), ptr);
    }

    #[test]
    fn the_dispatcher_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BroadcastDispatcher<u32>>();
        assert_send_sync::<BroadcastDispatcher<std::cell::Cell<u8>>>();
    }

    #[test]
    fn demand_saturates_instead_of_overflowing() {
        let mut d = setup(1);
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), u64::MAX, &mut out), u64::MAX);
        assert_eq!(d.ask(sub(1), 5, &mut out), 0);
        assert_eq!(d.pending_demand(sub(1)), Some(u64::MAX));
    }

    #[test]
    fn subscribe_refuses_a_partition_option() {
        let mut d = BroadcastDispatcher::<u32>::new();
        let opts = SubscribeOptions::new().partition(0);
        assert_eq!(
            d.subscribe(SubscriptionId::from_raw(1), StageId::from_raw(1), &opts),
            Err(SubscribeRefused::UnsupportedOption {
                option: "partition",
                dispatcher: "broadcast",
            })
        );
    }
}

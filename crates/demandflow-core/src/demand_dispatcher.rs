//! The default dispatcher: work sharing. Each batch goes to the subscription
//! with the most outstanding demand. Use it for a pool of interchangeable
//! consumers.

use crate::{
    Deliver, Dispatched, Dispatcher, StageId, SubscribeOptions, SubscribeRefused, SubscriptionId,
};

/// The default dispatcher: each batch goes to the subscription with the largest
/// current demand (SEMANTICS.md §4).
///
/// Subscriptions are kept ordered by demand, largest first; among equal demands
/// the one that reached that demand first comes first. A batch goes to the head
/// subscription, up to its demand, in one delivery; this repeats until events or
/// demand run out. Events left over are returned for the producer to buffer.
///
/// When a subscription is cancelled its unmet demand becomes *pending*: the
/// producer was already asked for those events, so later asks are served from the
/// pending count instead of being forwarded upstream again.
///
/// # Errors
///
/// [`subscribe`](Dispatcher::subscribe) refuses a subscription with a
/// `partition` or a `selector` option ([`SubscribeRefused::UnsupportedOption`]):
/// this dispatcher has no use for them, and ignoring them would hide a mistake.
///
/// # Examples
///
/// ```
/// use demandflow_core::{DemandDispatcher, Dispatcher, StageId, SubscribeOptions, SubscriptionId};
///
/// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// let opts = SubscribeOptions::<u32>::new();
/// let mut d = DemandDispatcher::new();
/// d.subscribe(a, StageId::from_raw(1), &opts).unwrap();
/// d.subscribe(b, StageId::from_raw(2), &opts).unwrap();
/// let mut out = Vec::new();
/// assert_eq!(d.ask(a, 3, &mut out), 3);
/// assert_eq!(d.ask(b, 2, &mut out), 2);
/// let left = d.dispatch(vec![1, 2, 3, 4, 5, 6], &mut out).leftover;
/// assert_eq!(out, vec![(a, vec![1, 2, 3]), (b, vec![4, 5])]);
/// assert_eq!(left, vec![6]);
/// ```
#[derive(Debug, Default)]
pub struct DemandDispatcher {
    /// `(demand, sub)`, ordered by demand descending, ties in arrival order.
    demands: Vec<(u64, SubscriptionId)>,
    /// Demand of cancelled subscriptions already forwarded upstream.
    pending: u64,
    /// The first demand ever asked, the expected `max_demand`.
    max: Option<u64>,
}

impl DemandDispatcher {
    /// A dispatcher with no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&mut self, sub: SubscriptionId) -> Option<u64> {
        let index = self.demands.iter().position(|(_, s)| *s == sub)?;
        Some(self.demands.remove(index).0)
    }

    fn insert(&mut self, demand: u64, sub: SubscriptionId) {
        let index = self
            .demands
            .iter()
            .position(|(d, _)| demand > *d)
            .unwrap_or(self.demands.len());
        self.demands.insert(index, (demand, sub));
    }

    /// Demand of cancelled subscriptions that later asks are served from.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

impl<T: Send + 'static> Dispatcher<T> for DemandDispatcher {
    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        _consumer: StageId,
        options: &SubscribeOptions<T>,
    ) -> Result<u64, SubscribeRefused> {
        options.refuse_unsupported("demand", &[])?;
        self.demands.push((0, sub));
        Ok(0)
    }

    fn cancel(&mut self, sub: SubscriptionId) -> u64 {
        if let Some(current) = self.take(sub) {
            self.pending = self.pending.saturating_add(current);
        }
        0
    }

    fn ask(&mut self, sub: SubscriptionId, demand: u64, _out: &mut dyn Deliver<T>) -> u64 {
        let Some(current) = self.take(sub) else {
            return 0;
        };
        let max = *self.max.get_or_insert(demand);
        if demand > max {
            tracing::warn!(
                demand,
                max_demand = max,
                "a consumer asked for more than the first max_demand seen by this demand \
                 dispatcher; consumers of one producer should share one max_demand"
            );
        }
        self.insert(current.saturating_add(demand), sub);
        let already_sent = self.pending.min(demand);
        self.pending -= already_sent;
        demand - already_sent
    }

    fn dispatch(&mut self, mut events: Vec<T>, out: &mut dyn Deliver<T>) -> Dispatched<T> {
        while !events.is_empty() {
            let Some(&(demand, sub)) = self.demands.first() else {
                break;
            };
            if demand == 0 {
                break;
            }
            self.demands.remove(0);
            let n = usize::try_from(demand).unwrap_or(usize::MAX);
            let now = if n >= events.len() {
                std::mem::take(&mut events)
            } else {
                let rest = events.split_off(n);
                std::mem::replace(&mut events, rest)
            };
            let sent = now.len() as u64;
            out.deliver(sub, now);
            self.insert(demand - sent, sub);
        }
        Dispatched::leftover(events)
    }

    fn pending_demand(&self, sub: SubscriptionId) -> Option<u64> {
        self.demands
            .iter()
            .find(|(_, s)| *s == sub)
            .map(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        Out, ask_each, asks, assert_unknown_subscription_ignored, sub, subscribe_with,
    };

    fn setup(n: u64) -> DemandDispatcher {
        let mut d = DemandDispatcher::new();
        for i in 1..=n {
            subscribe_with(&mut d, i, &SubscribeOptions::new());
        }
        d
    }

    #[test]
    fn subscribe_forwards_no_demand() {
        let mut d = DemandDispatcher::new();
        let got = Dispatcher::<u32>::subscribe(
            &mut d,
            sub(1),
            StageId::from_raw(1),
            &SubscribeOptions::new(),
        );
        assert_eq!(got, Ok(0));
    }

    #[test]
    fn subscribe_refuses_partition_and_selector_options() {
        let mut d = DemandDispatcher::new();
        let partition = SubscribeOptions::<u32>::new().partition(0);
        assert_eq!(
            d.subscribe(sub(1), StageId::from_raw(1), &partition),
            Err(SubscribeRefused::UnsupportedOption {
                option: "partition",
                dispatcher: "demand",
            })
        );
        let selector = SubscribeOptions::<u32>::new().selector(|e| *e > 2);
        assert_eq!(
            d.subscribe(sub(1), StageId::from_raw(1), &selector),
            Err(SubscribeRefused::UnsupportedOption {
                option: "selector",
                dispatcher: "demand",
            })
        );
        // Nothing was recorded: the same id subscribes fine without them.
        assert_eq!(
            Dispatcher::<u32>::subscribe(
                &mut d,
                sub(1),
                StageId::from_raw(1),
                &SubscribeOptions::new()
            ),
            Ok(0)
        );
        let mut out: Out = Vec::new();
        assert_eq!(d.ask(sub(1), 4, &mut out), 4);
    }

    #[test]
    fn ask_forwards_the_demand_upstream() {
        let mut d = setup(2);
        let (out, up) = asks(&mut d, &[(1, 10), (2, 10), (1, 5)]);
        assert_eq!(up, [10, 10, 5]);
        assert_eq!(Dispatcher::<u32>::pending_demand(&d, sub(1)), Some(15));
        assert!(out.is_empty());
    }

    #[test]
    fn batches_go_to_the_largest_demand_first() {
        let mut d = setup(3);
        let mut out = ask_each(&mut d, &[(1, 2), (2, 4), (3, 3)]);
        let left = d.dispatch((1..=8).collect(), &mut out).leftover;
        assert!(left.is_empty());
        assert_eq!(
            out,
            vec![
                (sub(2), vec![1, 2, 3, 4]),
                (sub(3), vec![5, 6, 7]),
                (sub(1), vec![8])
            ]
        );
        assert_eq!(Dispatcher::<u32>::pending_demand(&d, sub(1)), Some(1));
    }

    #[test]
    fn ties_go_to_the_first_subscribed() {
        let mut d = setup(2);
        let mut out = ask_each(&mut d, &[(1, 3), (2, 3)]);
        d.dispatch(vec![1, 2], &mut out);
        assert_eq!(out, vec![(sub(1), vec![1, 2])]);
        // sub 1 now has 1 left, sub 2 has 3: sub 2 is served next.
        d.dispatch(vec![3], &mut out);
        assert_eq!(out[1], (sub(2), vec![3]));
    }

    #[test]
    fn events_without_demand_are_returned() {
        let mut d = setup(1);
        let mut out: Out = Vec::new();
        assert_eq!(d.dispatch(vec![1, 2, 3], &mut out).leftover, vec![1, 2, 3]);
        d.ask(sub(1), 2, &mut out);
        assert_eq!(d.dispatch(vec![1, 2, 3], &mut out).leftover, vec![3]);
        assert_eq!(out, vec![(sub(1), vec![1, 2])]);
    }

    #[test]
    fn cancelled_demand_serves_later_asks() {
        let mut d = setup(2);
        let (mut out, up) = asks(&mut d, &[(1, 10)]);
        assert_eq!(up, [10]);
        assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
        assert_eq!(d.pending(), 10);
        assert_eq!(Dispatcher::<u32>::ask(&mut d, sub(2), 4, &mut out), 0);
        assert_eq!(d.pending(), 6);
        assert_eq!(Dispatcher::<u32>::ask(&mut d, sub(2), 10, &mut out), 4);
        assert_eq!(d.pending(), 0);
        let left = d.dispatch((0..20).collect(), &mut out).leftover;
        assert_eq!(out, vec![(sub(2), (0..14).collect())]);
        assert_eq!(left.len(), 6);
    }

    #[test]
    fn unknown_subscriptions_are_ignored() {
        let mut d = setup(1);
        assert_unknown_subscription_ignored(&mut d);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_larger_ask_than_the_first_is_honoured() {
        let mut d = setup(1);
        let (mut out, up) = asks(&mut d, &[(1, 2), (1, 50)]);
        assert_eq!(up, [2, 50]);
        d.dispatch((0..60).collect(), &mut out);
        assert_eq!(out[0].1.len(), 52);
    }
}

//! What the dispatchers' unit tests share: short subscription ids, the output
//! type, subscribing, the opening move of most dispatcher scenarios (consumers
//! ask), and what every dispatcher does with a subscription it does not know.

use crate::{Dispatcher, StageId, SubscribeOptions, SubscriptionId};

/// What a dispatcher delivers: `(subscription, batch)` pairs, in order.
pub(crate) type Out = Vec<(SubscriptionId, Vec<u32>)>;

/// Subscription `n`.
pub(crate) fn sub(n: u64) -> SubscriptionId {
    SubscriptionId::from_raw(n)
}

/// Each `(subscription, demand)` asks in turn; returns what the asks delivered,
/// to be extended by the rest of the test.
pub(crate) fn ask_each<D: Dispatcher<u32>>(d: &mut D, asks: &[(u64, u64)]) -> Out {
    let mut out = Out::new();
    for &(n, demand) in asks {
        d.ask(sub(n), demand, &mut out);
    }
    out
}

/// Each `(subscription, demand)` asks in turn; returns what the asks delivered
/// and the demand each one forwarded upstream, to check the numbers at once.
pub(crate) fn asks<D: Dispatcher<u32>>(d: &mut D, asks: &[(u64, u64)]) -> (Out, Vec<u64>) {
    let mut out = Out::new();
    let upstream = asks
        .iter()
        .map(|&(n, demand)| d.ask(sub(n), demand, &mut out))
        .collect();
    (out, upstream)
}

/// Subscription `n` of consumer `n` subscribes with `options`; a built-in
/// dispatcher accepts it and forwards no demand yet.
pub(crate) fn subscribe_with<D: Dispatcher<u32>>(
    d: &mut D,
    n: u64,
    options: &SubscribeOptions<u32>,
) {
    assert_eq!(d.subscribe(sub(n), StageId::from_raw(n), options), Ok(0));
}

/// A subscription the dispatcher does not know (9) asks and cancels: nothing
/// is delivered and no demand is forwarded.
pub(crate) fn assert_unknown_subscription_ignored<D: Dispatcher<u32>>(d: &mut D) {
    let mut out = Out::new();
    assert_eq!(d.ask(sub(9), 5, &mut out), 0);
    assert_eq!(d.cancel(sub(9)), 0);
    assert!(out.is_empty());
}

//! What the dispatchers' unit tests share: short subscription ids, the output
//! type, and the opening move of most dispatcher scenarios (consumers ask).

use crate::{Dispatcher, SubscriptionId};

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

//! Consumer-side demand arithmetic (SEMANTICS.md §2 and §5): when to ask and
//! how much ([`AutoDemand`]), and how batches are cut into chunks
//! ([`split_chunks`]). The one place these numbers are computed: the runtime's
//! stages and event streams, the keyed scheduler's consumer stage and the
//! consumer supervisor all count their demand with it.

/// Consumer-side demand accounting for one subscription (SEMANTICS.md §2).
///
/// It counts the demand *pending* on the subscription: asked for and not yet
/// received (or, for a consumer supervisor, not yet finished with). How the
/// count moves depends on how the consumer asks:
///
/// - **Automatic demand** (a stage subscribed in automatic mode, an event
///   stream): [`subscribe`](Self::subscribe), then
///   [`consume`](Self::consume) per chunk, as described below.
/// - **Asking as room frees up** (the keyed scheduler's consumer stage):
///   [`receive`](Self::receive) as events arrive and
///   [`ask_within`](Self::ask_within) whenever room may have freed.
/// - **Holding each event until it is done** (the consumer supervisor, one
///   worker per event, SEMANTICS.md §5): [`subscribe`](Self::subscribe), then
///   [`complete`](Self::complete) as workers finish.
///
/// The bounds hold in every mode: never more than `max_demand` pending, and
/// nothing asked while more than `min_demand` is pending.
///
/// A consumer in automatic mode asks `max_demand` when it subscribes. Every batch
/// that arrives is split into chunks of at most `max_demand - min_demand` events;
/// each chunk lowers the pending demand, and once it falls to `min_demand` or below
/// the consumer asks for enough to bring it back up to `max_demand`. The ask is
/// sent after the handler has run on that chunk.
///
/// # Examples
///
/// With max 100 / min 20 and a saturating producer the chunks are 80, 20, 80, 80, …
/// and the producer sees asks of 100, 80, 100, 80, …:
///
/// ```
/// use demandflow_core::AutoDemand;
///
/// let mut demand = AutoDemand::new(100, 20);
/// assert_eq!(demand.subscribe(), 100);
/// assert_eq!(demand.chunk_len(), 80);
/// assert_eq!(demand.consume(80), 80); // pending 20 ≤ 20: ask 80
/// assert_eq!(demand.consume(20), 0); // pending 80
/// assert_eq!(demand.consume(80), 100); // pending 0: ask 100
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoDemand {
    max: u64,
    min: u64,
    pending: u64,
}

impl AutoDemand {
    /// Accounting for a subscription with these bounds; call
    /// [`subscribe`](Self::subscribe) for the first ask.
    ///
    /// The bounds are expected to be valid (`1 ≤ max`, `min < max`), as
    /// [`SubscribeOptions::demand_bounds`](crate::SubscribeOptions::demand_bounds) returns them.
    pub fn new(max_demand: u64, min_demand: u64) -> Self {
        debug_assert!(max_demand >= 1 && min_demand < max_demand);
        AutoDemand {
            max: max_demand,
            min: min_demand,
            pending: 0,
        }
    }

    /// The first ask: `max_demand`.
    pub fn subscribe(&mut self) -> u64 {
        self.pending = self.max;
        self.max
    }

    /// The largest chunk a batch is split into: `max_demand - min_demand`.
    pub fn chunk_len(&self) -> usize {
        usize::try_from(self.max - self.min).unwrap_or(usize::MAX)
    }

    /// Records a chunk of `k` events and returns how much to ask once the handler
    /// has run on it (0 for nothing).
    pub fn consume(&mut self, k: u64) -> u64 {
        self.pending = self.pending.saturating_sub(k);
        if self.pending <= self.min {
            let ask = self.max - self.pending;
            self.pending = self.max;
            ask
        } else {
            0
        }
    }

    /// Demand asked for but not yet received.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// The configured `max_demand`.
    pub fn max_demand(&self) -> u64 {
        self.max
    }

    /// The configured `min_demand`.
    pub fn min_demand(&self) -> u64 {
        self.min
    }

    /// Records `k` events received on a subscription whose consumer decides
    /// itself when to ask (with [`ask_within`](Self::ask_within)).
    pub fn receive(&mut self, k: u64) {
        self.pending = self.pending.saturating_sub(k);
    }

    /// How much to ask now when the consumer has room for only `room` more
    /// events (0 for nothing), and records it as pending.
    ///
    /// As with automatic demand, it asks once pending demand has fallen to
    /// `min_demand` or below, back up to `max_demand`. When `room` cuts that
    /// ask short it waits for room for a whole chunk (`max_demand -
    /// min_demand`) rather than asking in dribbles, unless nothing is pending
    /// at all, so the subscription never starves.
    ///
    /// ```
    /// use demandflow_core::AutoDemand;
    ///
    /// let mut demand = AutoDemand::new(10, 4); // chunks of 6
    /// assert_eq!(demand.ask_within(100), 10); // nothing pending: up to max
    /// demand.receive(5);
    /// assert_eq!(demand.ask_within(100), 0); // 5 pending > min 4
    /// demand.receive(1);
    /// assert_eq!(demand.ask_within(3), 0); // 3 < a chunk, and 4 still pending
    /// assert_eq!(demand.ask_within(100), 6); // back up to 10
    /// demand.receive(10);
    /// assert_eq!(demand.ask_within(3), 3); // nothing pending: take what fits
    /// ```
    pub fn ask_within(&mut self, room: u64) -> u64 {
        if self.pending > self.min {
            return 0;
        }
        let ask = (self.max - self.pending).min(room);
        if ask > 0 && (ask >= self.max - self.min || self.pending == 0) {
            self.pending += ask;
            ask
        } else {
            0
        }
    }

    /// Records that the consumer is done with `k` events it received (a
    /// consumer supervisor's workers finished) and returns how much to ask
    /// now (0 for nothing): once `min_demand` events or more are done and not
    /// yet asked again, all of them, and at least one (SEMANTICS.md §5).
    ///
    /// Events count as pending from the ask until they are done with, so at
    /// most `max_demand` are on their way or being worked on at once.
    ///
    /// ```
    /// use demandflow_core::AutoDemand;
    ///
    /// let mut demand = AutoDemand::new(3, 2);
    /// assert_eq!(demand.subscribe(), 3); // three workers may run
    /// assert_eq!(demand.complete(1), 0); // one done: fewer than 2
    /// assert_eq!(demand.complete(1), 2); // two done: ask for both
    /// assert_eq!(demand.pending(), 3);
    /// ```
    pub fn complete(&mut self, k: u64) -> u64 {
        self.pending = self.pending.saturating_sub(k);
        let done = self.max - self.pending;
        if done > 0 && done >= self.min {
            self.pending = self.max;
            done
        } else {
            0
        }
    }
}

/// Splits `batch` into the chunks automatic demand hands to the handler, in order.
///
/// The first chunk reuses the batch's allocation when the batch fits in one chunk.
///
/// ```
/// use demandflow_core::split_chunks;
///
/// let chunks: Vec<Vec<u32>> = split_chunks((0..7).collect(), 3).collect();
/// assert_eq!(chunks, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
/// ```
pub fn split_chunks<T>(batch: Vec<T>, chunk_len: usize) -> impl Iterator<Item = Vec<T>> {
    let chunk_len = chunk_len.max(1);
    // A batch that fits is handed on as it is; a larger one is cut front to back
    // in one pass (cutting with `split_off` would copy the tail at every cut).
    let (whole, mut rest) = if batch.len() <= chunk_len {
        (Some(batch), None)
    } else {
        (None, Some(batch.into_iter()))
    };
    whole
        .into_iter()
        .filter(|b| !b.is_empty())
        .chain(std::iter::from_fn(move || {
            let events = rest.as_mut()?;
            let chunk: Vec<T> = events.by_ref().take(chunk_len).collect();
            (!chunk.is_empty()).then_some(chunk)
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays a saturating producer: each ask is answered by one batch of exactly
    /// that many events, and returns the chunks and the asks the producer saw.
    fn saturate(max: u64, min: u64, events: u64) -> (Vec<(u64, u64)>, Vec<u64>) {
        let mut demand = AutoDemand::new(max, min);
        let mut asks = vec![demand.subscribe()];
        let mut outstanding = asks[0];
        let mut next = 0;
        let mut chunks = Vec::new();
        while next < events {
            let batch: Vec<u64> = (next..next + outstanding).collect();
            next += outstanding;
            outstanding = 0;
            for chunk in split_chunks(batch, demand.chunk_len()) {
                chunks.push((chunk[0], *chunk.last().unwrap()));
                let ask = demand.consume(chunk.len() as u64);
                if ask > 0 {
                    asks.push(ask);
                    outstanding += ask;
                }
            }
        }
        (chunks, asks)
    }

    #[test]
    fn default_bounds_give_chunks_of_five_hundred() {
        let (chunks, asks) = saturate(1000, 500, 2000);
        assert_eq!(chunks[0], (0, 499));
        assert_eq!(chunks[1], (500, 999));
        assert_eq!(&asks[..3], &[1000, 500, 500]);
    }

    #[test]
    fn max_100_min_80_asks_twenty_at_a_time() {
        let (chunks, asks) = saturate(100, 80, 200);
        assert!(chunks.iter().all(|(a, b)| b - a == 19));
        assert_eq!(chunks[0], (0, 19));
        assert_eq!(&asks[..5], &[100, 20, 20, 20, 20]);
    }

    #[test]
    fn max_100_min_20_alternates_eighty_and_one_hundred() {
        let (chunks, asks) = saturate(100, 20, 400);
        assert_eq!(
            &chunks[..5],
            &[(0, 79), (80, 99), (100, 179), (180, 259), (260, 279)]
        );
        assert_eq!(&asks[..5], &[100, 80, 100, 80, 100]);
    }

    #[test]
    fn max_1_min_0_asks_one_after_every_event() {
        let (chunks, asks) = saturate(1, 0, 5);
        assert_eq!(chunks, vec![(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]);
        assert_eq!(asks, vec![1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn a_chunk_never_spans_batches() {
        let mut demand = AutoDemand::new(10, 5);
        demand.subscribe();
        let chunks: Vec<_> = split_chunks(vec![1, 2, 3], demand.chunk_len()).collect();
        assert_eq!(chunks, vec![vec![1, 2, 3]]);
        assert_eq!(demand.consume(3), 0);
        assert_eq!(demand.pending(), 7);
        assert_eq!(demand.consume(2), 5);
        assert_eq!(demand.pending(), 10);
    }

    #[test]
    fn oversized_batches_do_not_underflow_pending() {
        let mut demand = AutoDemand::new(4, 2);
        demand.subscribe();
        assert_eq!(demand.consume(9), 4);
        assert_eq!(demand.pending(), 4);
    }

    #[test]
    fn split_chunks_keeps_order_and_sizes_of_a_large_batch() {
        let chunks: Vec<Vec<u32>> = split_chunks((0..100_000).collect(), 1).collect();
        assert_eq!(chunks.len(), 100_000);
        assert!(chunks.iter().enumerate().all(|(i, c)| c == &[i as u32]));
        let chunks: Vec<Vec<u32>> = split_chunks((0..10).collect(), 4).collect();
        assert_eq!(chunks, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    }

    #[test]
    fn asking_within_room_honours_max_and_min() {
        // max 4 / min 1 with room to spare: asks 4, then 3 once pending is 1.
        let mut demand = AutoDemand::new(4, 1);
        assert_eq!(demand.ask_within(1000), 4);
        assert_eq!(demand.ask_within(1000), 0);
        demand.receive(2);
        assert_eq!(demand.ask_within(1000), 0); // 2 pending > min 1
        demand.receive(1);
        assert_eq!(demand.ask_within(1000), 3);
        assert_eq!(demand.pending(), 4);
        demand.receive(4);
        assert_eq!(demand.ask_within(1000), 4);
    }

    #[test]
    fn asking_within_short_room_waits_for_a_whole_chunk_unless_starving() {
        let mut demand = AutoDemand::new(100, 20); // chunks of 80
        assert_eq!(demand.ask_within(30), 30); // nothing pending: what fits
        demand.receive(15);
        assert_eq!(demand.ask_within(79), 0); // 15 pending, 79 < 80
        assert_eq!(demand.ask_within(80), 80);
        assert_eq!(demand.pending(), 95);
        demand.receive(95);
        assert_eq!(demand.ask_within(0), 0); // no room at all: nothing
        assert_eq!(demand.ask_within(1), 1);
    }

    #[test]
    fn asking_within_room_never_exceeds_max_demand() {
        let mut demand = AutoDemand::new(7, 0);
        assert_eq!(demand.ask_within(u64::MAX), 7);
        demand.receive(u64::MAX); // more than pending does not underflow
        assert_eq!(demand.pending(), 0);
        assert_eq!(demand.ask_within(u64::MAX), 7);
    }

    #[test]
    fn completing_asks_once_min_demand_are_done() {
        // The consumer supervisor's numbers: max 3 / min 2.
        let mut demand = AutoDemand::new(3, 2);
        assert_eq!(demand.subscribe(), 3);
        let asks: Vec<u64> = (0..6).map(|_| demand.complete(1)).collect();
        assert_eq!(asks, vec![0, 2, 0, 2, 0, 2]);
        // Defaults 1000 / 500: every 500 finished workers ask 500.
        let mut demand = AutoDemand::new(1000, 500);
        demand.subscribe();
        assert_eq!(demand.complete(499), 0);
        assert_eq!(demand.complete(1), 500);
        assert_eq!(demand.complete(700), 700);
    }

    #[test]
    fn completing_with_min_0_asks_after_every_worker() {
        let mut demand = AutoDemand::new(5, 0);
        demand.subscribe();
        assert_eq!(demand.complete(1), 1);
        assert_eq!(demand.complete(1), 1);
        assert_eq!(demand.complete(0), 0); // nothing done: never asks 0
        assert_eq!(demand.pending(), 5);
    }

    #[test]
    fn split_chunks_of_empty_batch_is_empty() {
        assert_eq!(split_chunks(Vec::<u8>::new(), 4).count(), 0);
    }
}

//! Properties of the broadcast and partition dispatchers over random schedules of
//! subscribe, ask, cancel and dispatch (SEMANTICS.md §8).
//!
//! Each schedule drives a dispatcher from a model producer that behaves as the
//! runtime does: demand is served from its buffer first and the rest is owed,
//! leftover events go back to the front of its buffer, and events it emits while
//! its buffer is not empty are appended behind it. Events are consecutive
//! integers, so order can be checked by value.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use demandflow_core::{
    AutoDemand, BroadcastDispatcher, Dispatcher, PartitionDispatcher, StageId, SubscribeOptions,
    SubscribeRefused, SubscriptionId, split_chunks,
};
use proptest::prelude::*;

type Out = Vec<(SubscriptionId, Vec<u32>)>;

/// One step of a schedule.
#[derive(Clone, Debug)]
enum Op {
    /// Broadcast: consumer `who` (0..4) with selector kind `how` (0..3).
    /// Partition: partition `who` (0..=2 exist, 3 does not, 4 names none).
    Subscribe { who: u8, how: u8 },
    /// The `pick`-th live subscription asks for `n` (≥ 1).
    Ask { pick: usize, n: u64 },
    /// The `pick`-th live subscription (or an already cancelled one) cancels.
    Cancel { pick: usize },
    /// The producer emits up to `n` of the events it owes.
    Emit { n: u32 },
    /// The producer emits `n` events nobody asked for (a timer, a push).
    Push { n: u32 },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        2 => (0u8..5, 0u8..3).prop_map(|(who, how)| Op::Subscribe { who, how }),
        4 => (any::<usize>(), 1u64..8).prop_map(|(pick, n)| Op::Ask { pick, n }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        4 => (1u32..12).prop_map(|n| Op::Emit { n }),
        1 => (1u32..6).prop_map(|n| Op::Push { n }),
    ];
    prop::collection::vec(op, 1..80)
}

/// The producer side of a schedule, and everything the dispatcher handed out.
struct Producer {
    next: u32,
    buffer: VecDeque<u32>,
    owed: u64,
    /// All demand ever forwarded upstream.
    forwarded: u64,
    out: Out,
    /// Every dispatch: the events handed in, and the leftover handed back.
    dispatches: Vec<(Vec<u32>, Vec<u32>)>,
}

impl Producer {
    fn new() -> Self {
        Producer {
            next: 0,
            buffer: VecDeque::new(),
            owed: 0,
            forwarded: 0,
            out: Vec::new(),
            dispatches: Vec::new(),
        }
    }

    fn fresh(&mut self, n: u32) -> Vec<u32> {
        let events = (self.next..self.next + n).collect();
        self.next += n;
        events
    }

    /// Demand forwarded upstream: served from the buffer first, the rest is owed.
    fn demand(&mut self, d: &mut dyn Dispatcher<u32>, mut demand: u64) {
        let mut rounds = 0;
        while demand > 0 {
            rounds += 1;
            assert!(rounds < 100_000, "the dispatcher and the producer livelock");
            self.forwarded += demand;
            let take = usize::try_from(demand)
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            self.owed += demand - take as u64;
            demand = 0;
            if take > 0 {
                let batch = self.buffer.drain(..take).collect();
                demand = self.dispatch(d, batch);
            }
        }
    }

    fn dispatch(&mut self, d: &mut dyn Dispatcher<u32>, batch: Vec<u32>) -> u64 {
        let got = d.dispatch(batch.clone(), &mut self.out);
        for &event in got.leftover.iter().rev() {
            self.buffer.push_front(event);
        }
        self.dispatches.push((batch, got.leftover));
        got.demand
    }

    /// New events: dispatched at once, or behind the buffer if it is not empty.
    fn emit(&mut self, d: &mut dyn Dispatcher<u32>, events: Vec<u32>) {
        if self.buffer.is_empty() {
            let demand = self.dispatch(d, events);
            self.demand(d, demand);
        } else {
            self.buffer.extend(events);
        }
    }

    fn emit_owed(&mut self, d: &mut dyn Dispatcher<u32>, n: u32) {
        let n = n.min(u32::try_from(self.owed).unwrap_or(u32::MAX));
        if n > 0 {
            self.owed -= u64::from(n);
            let events = self.fresh(n);
            self.emit(d, events);
        }
    }

    fn push(&mut self, d: &mut dyn Dispatcher<u32>, n: u32) {
        let events = self.fresh(n);
        self.emit(d, events);
    }
}

/// What the test knows about one subscription.
struct Sub {
    id: SubscriptionId,
    /// Broadcast: the consumer. Partition: the partition.
    who: u8,
    selector: Option<fn(&u32) -> bool>,
    asked: u64,
    received: Vec<u32>,
    live: bool,
    /// Broadcast: length of the broadcast stream when it subscribed.
    stream_at_subscribe: usize,
    /// Broadcast: whether no demand had been forwarded upstream yet.
    subscribed_before_demand: bool,
}

impl Sub {
    fn received_count(&self) -> u64 {
        self.received.len() as u64
    }
}

fn selector(how: u8) -> Option<fn(&u32) -> bool> {
    match how {
        1 => Some(|e| e % 2 == 0),
        2 => Some(|e| e % 3 != 0),
        _ => None,
    }
}

/// Checks the batches delivered since the last call, and files them.
fn take_deliveries(producer: &mut Producer, subs: &mut [Sub]) -> Result<(), TestCaseError> {
    for (id, batch) in producer.out.drain(..) {
        prop_assert!(
            !batch.is_empty(),
            "an empty batch was delivered to {:?}",
            id
        );
        let sub = subs.iter_mut().find(|s| s.id == id);
        let sub = sub.ok_or_else(|| TestCaseError::fail(format!("unknown {id:?}")))?;
        prop_assert!(
            sub.live,
            "{:?} received {:?} after it was cancelled",
            id,
            batch
        );
        sub.received.extend(batch);
        prop_assert!(
            sub.received_count() <= sub.asked,
            "{:?} received {} events but asked for {}",
            id,
            sub.received_count(),
            sub.asked
        );
        prop_assert!(
            sub.received.windows(2).all(|w| w[0] < w[1]),
            "{:?} received events out of order: {:?}",
            id,
            sub.received
        );
    }
    Ok(())
}

fn check_pending_demand(d: &dyn Dispatcher<u32>, subs: &[Sub]) -> Result<(), TestCaseError> {
    for sub in subs {
        let expected = sub.live.then(|| sub.asked - sub.received_count());
        prop_assert_eq!(
            d.pending_demand(sub.id),
            expected,
            "pending demand of {:?}",
            sub.id
        );
    }
    Ok(())
}

/// Cancels the `pick`-th subscription, now and then one already cancelled.
fn cancel(d: &mut dyn Dispatcher<u32>, producer: &mut Producer, subs: &mut [Sub], pick: usize) {
    let index = if pick % 5 == 0 && !subs.is_empty() {
        Some(pick % subs.len())
    } else {
        let live: Vec<usize> = (0..subs.len()).filter(|&i| subs[i].live).collect();
        (!live.is_empty()).then(|| live[pick % live.len()])
    };
    if let Some(index) = index {
        let was_live = subs[index].live;
        let demand = d.cancel(subs[index].id);
        subs[index].live = false;
        if !was_live {
            assert_eq!(demand, 0, "cancel is idempotent");
        }
        producer.demand(d, demand);
    }
}

/// Asks on the `pick`-th live subscription.
fn ask(
    d: &mut dyn Dispatcher<u32>,
    producer: &mut Producer,
    subs: &mut [Sub],
    pick: usize,
    n: u64,
) {
    let live: Vec<usize> = (0..subs.len()).filter(|&i| subs[i].live).collect();
    if let Some(&index) = live.get(pick % live.len().max(1)) {
        subs[index].asked += n;
        let demand = d.ask(subs[index].id, n, &mut producer.out);
        producer.demand(d, demand);
    }
}

// ---------------------------------------------------------------------------
// Broadcast
// ---------------------------------------------------------------------------

/// Runs a schedule against a broadcast dispatcher, checking the invariants after
/// every step; returns the subscriptions and the broadcast stream.
fn run_broadcast(ops: &[Op]) -> Result<(Vec<Sub>, Vec<u32>), TestCaseError> {
    let mut d = BroadcastDispatcher::<u32>::new();
    let mut producer = Producer::new();
    let mut subs: Vec<Sub> = Vec::new();
    let mut stream: Vec<u32> = Vec::new();
    let mut seen_dispatches = 0;
    for op in ops {
        match *op {
            Op::Subscribe { who, how } => {
                let who = who % 4;
                let id = SubscriptionId::from_raw(subs.len() as u64 + 1);
                let mut opts = SubscribeOptions::new();
                if let Some(selector) = selector(how) {
                    opts = opts.selector(selector);
                }
                let got = d.subscribe(id, StageId::from_raw(u64::from(who)), &opts);
                let taken = subs.iter().any(|s| s.live && s.who == who);
                if taken {
                    prop_assert_eq!(got, Err(SubscribeRefused::AlreadySubscribed));
                } else {
                    prop_assert_eq!(got, Ok(0));
                    subs.push(Sub {
                        id,
                        who,
                        selector: selector(how),
                        asked: 0,
                        received: Vec::new(),
                        live: true,
                        stream_at_subscribe: stream.len(),
                        subscribed_before_demand: producer.forwarded == 0,
                    });
                }
            }
            Op::Ask { pick, n } => ask(&mut d, &mut producer, &mut subs, pick, n),
            Op::Cancel { pick } => cancel(&mut d, &mut producer, &mut subs, pick),
            Op::Emit { n } => producer.emit_owed(&mut d, n),
            Op::Push { n } => producer.push(&mut d, n),
        }
        for (input, leftover) in &producer.dispatches[seen_dispatches..] {
            prop_assert!(
                input.ends_with(leftover),
                "broadcast leftover {:?} is not the tail of {:?}",
                leftover,
                input
            );
            stream.extend_from_slice(&input[..input.len() - leftover.len()]);
        }
        seen_dispatches = producer.dispatches.len();
        take_deliveries(&mut producer, &mut subs)?;
        check_pending_demand(&d, &subs)?;
        prop_assert_eq!(d.buffered(), 0);

        // Conservation: every event emitted was broadcast or is buffered, in order.
        let mut all = stream.clone();
        all.extend(producer.buffer.iter());
        prop_assert_eq!(all, (0..producer.next).collect::<Vec<_>>());

        // Exact upstream demand: with nothing owed or buffered, the slowest
        // subscription has no demand left that was not forwarded.
        if producer.owed == 0 && producer.buffer.is_empty() {
            let slowest = subs
                .iter()
                .filter(|s| s.live)
                .map(|s| s.asked - s.received_count())
                .min();
            prop_assert!(
                slowest.is_none_or(|demand| demand == 0),
                "nothing is owed upstream but every subscription still wants events"
            );
        }
    }
    Ok((subs, stream))
}

/// Checks what each subscription received against the broadcast stream.
fn check_broadcast_sequences(subs: &[Sub], stream: &[u32]) -> Result<(), TestCaseError> {
    for sub in subs {
        let Some(&first) = sub.received.first() else {
            continue;
        };
        let last = *sub.received.last().unwrap();
        let start = stream.iter().position(|&e| e == first).unwrap();
        let end = stream.iter().position(|&e| e == last).unwrap();
        prop_assert!(
            start >= sub.stream_at_subscribe,
            "{:?} received an event broadcast before it subscribed",
            sub.id
        );
        let accepts = |e: &u32| sub.selector.is_none_or(|f| f(e));
        let expected: Vec<u32> = stream[start..=end]
            .iter()
            .copied()
            .filter(accepts)
            .collect();
        prop_assert_eq!(&sub.received, &expected, "{:?} missed events", sub.id);
        if sub.live {
            // A live subscription missed nothing broadcast after its first event.
            prop_assert!(
                !stream[end + 1..].iter().any(accepts),
                "{:?} missed events at the end of the stream",
                sub.id
            );
        }
        if sub.live && sub.subscribed_before_demand {
            let all: Vec<u32> = stream.iter().copied().filter(accepts).collect();
            prop_assert_eq!(
                &sub.received,
                &all,
                "{:?} did not see the whole stream",
                sub.id
            );
        }
    }
    Ok(())
}

/// Nothing is lost silently: every event that left the producer reached a
/// subscription, or a selector turned it down.
fn check_broadcast_reached_someone(subs: &[Sub], stream: &[u32]) -> Result<(), TestCaseError> {
    for e in stream {
        let reached = subs.iter().any(|s| s.received.contains(e));
        let rejected = subs.iter().any(|s| s.selector.is_some_and(|f| !f(e)));
        prop_assert!(reached || rejected, "event {} was broadcast to nobody", e);
    }
    Ok(())
}

proptest! {
    #[test]
    fn broadcast_never_delivers_more_than_asked_nor_empty_batches(ops in ops()) {
        // Checked after every step by `take_deliveries` and `check_pending_demand`.
        let (subs, stream) = run_broadcast(&ops)?;
        check_broadcast_reached_someone(&subs, &stream)?;
    }

    #[test]
    fn broadcast_subscriptions_without_selector_see_the_same_sequence(ops in ops()) {
        let (subs, stream) = run_broadcast(&ops)?;
        check_broadcast_sequences(&subs, &stream)?;
        // Subscriptions without selector that were there before the first demand
        // and are still there saw exactly the same events.
        let mut sequences = subs
            .iter()
            .filter(|s| s.live && s.subscribed_before_demand && s.selector.is_none())
            .map(|s| &s.received);
        if let Some(first) = sequences.next() {
            for other in sequences {
                prop_assert_eq!(first, other);
            }
        }
    }

    /// Also checks, after every step: never more than asked and no empty batch per
    /// subscription, exact pending demand, and that with nothing owed or buffered
    /// upstream every partition got all it asked for.
    #[test]
    fn partition_routes_each_event_once_in_order_and_loses_none(
        ops in ops(),
        capacity in 1usize..6,
    ) {
        run_partition(&ops, capacity, false)?;
    }

    /// The same in fill-ahead mode, which also keeps the events it awaits within
    /// what the subscriptions lack plus one queue's capacity.
    #[test]
    fn partition_filling_ahead_routes_each_event_once_in_order_and_loses_none(
        ops in ops(),
        capacity in 1usize..6,
    ) {
        run_partition(&ops, capacity, true)?;
    }
}

// ---------------------------------------------------------------------------
// Partition
// ---------------------------------------------------------------------------

/// The key of an event is `e % 8`: key 7 is discarded, key 6 is routed to a
/// partition that does not exist (a bug: discarded), keys 0..=5 go to `key % 3`.
fn route(e: u32) -> Option<(usize, u32)> {
    match e % 8 {
        7 => None,
        6 => Some((3, e)),
        key => Some(((key % 3) as usize, e)),
    }
}

fn is_discarded(e: u32) -> bool {
    e % 8 >= 6
}

fn run_partition(ops: &[Op], capacity: usize, fill_ahead: bool) -> Result<(), TestCaseError> {
    let mut d = PartitionDispatcher::numbered(nz(3), route)
        .queue_capacity(nz(capacity))
        .fill_ahead(fill_ahead)
        .build()
        .unwrap();
    let mut producer = Producer::new();
    let mut subs: Vec<Sub> = Vec::new();
    // Partitions that had two subscriptions at once: their events were shared.
    let mut shared: BTreeSet<u8> = BTreeSet::new();
    for op in ops {
        match *op {
            Op::Subscribe { who, .. } => {
                let id = SubscriptionId::from_raw(subs.len() as u64 + 1);
                let mut opts = SubscribeOptions::new();
                if subs.iter().any(|s| s.live && s.who == who) {
                    shared.insert(who);
                }
                if who < 4 {
                    opts = opts.partition(usize::from(who));
                }
                let got = d.subscribe(id, StageId::from_raw(id.as_u64()), &opts);
                match who {
                    4 => prop_assert!(
                        matches!(got, Err(SubscribeRefused::MissingPartition { .. })),
                        "{:?}",
                        got
                    ),
                    3 => prop_assert!(
                        matches!(got, Err(SubscribeRefused::UnknownPartition { .. })),
                        "{:?}",
                        got
                    ),
                    // A partition may have several consumers.
                    _ => {
                        prop_assert_eq!(got, Ok(0));
                        subs.push(Sub {
                            id,
                            who,
                            selector: None,
                            asked: 0,
                            received: Vec::new(),
                            live: true,
                            stream_at_subscribe: 0,
                            subscribed_before_demand: false,
                        });
                    }
                }
            }
            Op::Ask { pick, n } => ask(&mut d, &mut producer, &mut subs, pick, n),
            Op::Cancel { pick } => cancel(&mut d, &mut producer, &mut subs, pick),
            Op::Emit { n } => producer.emit_owed(&mut d, n),
            Op::Push { n } => producer.push(&mut d, n),
        }
        take_deliveries(&mut producer, &mut subs)?;
        check_pending_demand(&d, &subs)?;

        // Each delivered event went to a subscription of its own partition, each
        // subscription received its events in order, and no event was delivered
        // twice. With one subscription at a time per partition, the partition's
        // events are in order across its successive subscribers (so per key).
        let mut per_partition: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
        for sub in &subs {
            for &e in &sub.received {
                prop_assert_eq!(route(e).map(|(p, _)| p), Some(usize::from(sub.who)));
            }
            prop_assert!(
                sub.received.windows(2).all(|w| w[0] < w[1]),
                "{:?} received events out of order: {:?}",
                sub.id,
                sub.received
            );
            per_partition
                .entry(sub.who)
                .or_default()
                .extend(&sub.received);
        }
        for (partition, events) in &mut per_partition {
            if !shared.contains(partition) {
                prop_assert!(
                    events.windows(2).all(|w| w[0] < w[1]),
                    "partition {} received events out of order: {:?}",
                    partition,
                    events
                );
            }
            let all = events.len();
            events.sort_unstable();
            events.dedup();
            prop_assert_eq!(
                events.len(),
                all,
                "partition {} got an event twice",
                partition
            );
        }
        let delivered: usize = per_partition.values().map(Vec::len).sum();

        // Leftover events come back in order, as a subsequence of what was handed in.
        for (input, leftover) in &producer.dispatches {
            let mut rest = input.iter();
            prop_assert!(
                leftover.iter().all(|e| rest.any(|x| x == e)),
                "leftover {:?} is not in the order of {:?}",
                leftover,
                input
            );
        }

        // Conservation: dispatched = delivered + queued + leftover + discarded.
        let discarded = (0..producer.next)
            .filter(|&e| is_discarded(e) && !producer.buffer.contains(&e))
            .count() as u64;
        prop_assert_eq!(d.discarded(), discarded);
        prop_assert_eq!(
            d.misrouted(),
            (0..producer.next)
                .filter(|&e| e % 8 == 6 && !producer.buffer.contains(&e))
                .count() as u64
        );
        prop_assert_eq!(
            producer.next as usize,
            delivered + d.buffered() + producer.buffer.len() + d.discarded() as usize
        );
        prop_assert!(d.buffered() <= 3 * capacity, "queues exceed their capacity");
        if fill_ahead {
            // What the producer is asked for ahead of the consumers is bounded.
            let lacking: u64 = subs.iter().map(|s| s.asked - s.received_count()).sum();
            prop_assert!(
                d.awaited() <= lacking + capacity as u64,
                "awaits {} events, the subscriptions lack {}",
                d.awaited(),
                lacking
            );
        }

        // Exact upstream demand: with nothing owed or buffered upstream, every
        // partition got all it asked for (discarded events never stall it).
        if producer.owed == 0 && producer.buffer.is_empty() {
            for sub in subs.iter().filter(|s| s.live) {
                prop_assert_eq!(
                    sub.asked,
                    sub.received_count(),
                    "{:?} still waits for events nobody was asked for",
                    sub.id
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Liveness: consumers in automatic demand behind a saturating producer
// ---------------------------------------------------------------------------

/// A consumer in automatic demand (SEMANTICS.md §2).
struct AutoConsumer {
    id: SubscriptionId,
    demand: AutoDemand,
    received: Vec<u32>,
}

/// Runs a producer that emits exactly what it is asked for, at once, until it has
/// emitted `target` events; returns how many it emitted before nothing more was
/// asked for.
fn saturate(d: &mut dyn Dispatcher<u32>, consumers: &mut [AutoConsumer], target: u32) -> u32 {
    let mut out: Out = Vec::new();
    let mut upstream = 0;
    for c in consumers.iter_mut() {
        upstream += d.ask(c.id, c.demand.subscribe(), &mut out);
    }
    let mut next = 0u32;
    loop {
        while !out.is_empty() {
            let (id, batch) = out.remove(0);
            let c = consumers.iter_mut().find(|c| c.id == id).unwrap();
            for chunk in split_chunks(batch, c.demand.chunk_len()) {
                let ask = c.demand.consume(chunk.len() as u64);
                c.received.extend(chunk);
                if ask > 0 {
                    upstream += d.ask(id, ask, &mut out);
                }
            }
        }
        if next >= target || upstream == 0 {
            return next;
        }
        let n = u32::try_from(upstream).unwrap();
        let got = d.dispatch((next..next + n).collect(), &mut out);
        // It emitted exactly what was asked: nothing is left over.
        assert!(got.leftover.is_empty(), "leftover {:?}", got.leftover);
        next += n;
        upstream = got.demand;
    }
}

/// `(max_demand, min_demand)` pairs.
fn bounds() -> impl Strategy<Value = (u64, u64)> {
    (1u64..12).prop_flat_map(|max| (Just(max), 0..max))
}

proptest! {
    #[test]
    fn broadcast_never_stalls_whatever_the_selectors_reject(
        consumers in prop::collection::vec((bounds(), any::<u16>()), 1..4),
    ) {
        let mut d = BroadcastDispatcher::new();
        let mut autos = Vec::new();
        for (i, ((max, min), mask)) in consumers.iter().copied().enumerate() {
            let id = SubscriptionId::from_raw(i as u64 + 1);
            // Accepts the events whose value mod 16 is set in `mask` (maybe none).
            let opts = SubscribeOptions::new().selector(move |e: &u32| mask & (1 << (e % 16)) != 0);
            prop_assert_eq!(d.subscribe(id, StageId::from_raw(i as u64), &opts), Ok(0));
            autos.push(AutoConsumer { id, demand: AutoDemand::new(max, min), received: Vec::new() });
        }
        let emitted = saturate(&mut d, &mut autos, 300);
        prop_assert!(emitted >= 300, "stalled after {} events", emitted);
        for (c, (_, mask)) in autos.iter().zip(&consumers) {
            // Each consumer saw every event its selector accepts, up to what the
            // slowest let through.
            let accepted: Vec<u32> =
                (0..emitted).filter(|e| mask & (1 << (e % 16)) != 0).collect();
            prop_assert_eq!(&c.received[..], &accepted[..c.received.len()]);
        }
    }

    #[test]
    fn partition_never_stalls_whatever_the_hash_discards(
        consumers in prop::collection::vec(bounds(), 1..4),
        discard in any::<u16>(),
        fill_ahead in any::<bool>(),
    ) {
        let partitions = consumers.len();
        let mut d = PartitionDispatcher::numbered(nz(partitions), move |e: u32| {
            (discard & (1 << (e % 16)) == 0).then_some(((e / 16) as usize % partitions, e))
        })
        .fill_ahead(fill_ahead)
        .build()
        .unwrap();
        let mut autos = Vec::new();
        for (i, (max, min)) in consumers.iter().copied().enumerate() {
            let id = SubscriptionId::from_raw(i as u64 + 1);
            let opts = SubscribeOptions::new().partition(i);
            prop_assert_eq!(d.subscribe(id, StageId::from_raw(i as u64), &opts), Ok(0));
            autos.push(AutoConsumer { id, demand: AutoDemand::new(max, min), received: Vec::new() });
        }
        let emitted = saturate(&mut d, &mut autos, 300);
        prop_assert!(emitted >= 300, "stalled after {} events", emitted);
        // Nothing lost: each kept event was delivered to its partition, in order,
        // or waits in its queue.
        let mut delivered = 0;
        for (i, c) in autos.iter().enumerate() {
            let mine: Vec<u32> = (0..emitted)
                .filter(|e| discard & (1 << (e % 16)) == 0 && (e / 16) as usize % partitions == i)
                .collect();
            prop_assert_eq!(&c.received[..], &mine[..c.received.len()]);
            delivered += c.received.len();
        }
        let kept = (0..emitted).filter(|e| discard & (1 << (e % 16)) == 0).count();
        prop_assert_eq!(kept, delivered + d.buffered());
        prop_assert_eq!(u64::from(emitted) - kept as u64, d.discarded());
    }
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

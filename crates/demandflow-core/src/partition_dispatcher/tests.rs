//! Exact-number tests of the partition dispatcher's state machine.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::AutoDemand;
use crate::test_support::{
    Out, ask_each, assert_unknown_subscription_ignored, sub, subscribe_with,
};

fn subscribe(d: &mut PartitionDispatcher<u32>, n: u64, partition: impl Into<Partition>) {
    subscribe_with(d, n, &SubscribeOptions::new().partition(partition));
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
    PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 2) as usize, e)))
        .queue_capacity(nz(capacity))
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
    let mut out = ask_each(&mut d, &[(1, 4), (2, 4)]);
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
    let mut d = PartitionDispatcher::numbered(nz(1), |e: u32| (e % 2 == 0).then_some((0, e)))
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
    let mut d = PartitionDispatcher::numbered(nz(1), move |e: u32| {
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
    let mut out = ask_each(&mut d, &[(1, 1), (2, 1)]);
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
fn cancelling_after_an_unbounded_ask_on_a_shared_partition_does_not_underflow() {
    // Found by the runtime property test: two subscriptions share partition 0,
    // one asks `u64::MAX`, so the partition's demand saturates below the sum
    // of the two; cancelling both must leave it at 0, not panic.
    let mut d = parity(10);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 0);
    let mut out = ask_each(&mut d, &[(1, 1), (2, u64::MAX)]);
    assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(2)), 0);
    assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
    // With nobody subscribed, events wait in the partition's queue.
    let got = d.dispatch(vec![0, 2], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(d.buffered(), 2);
    assert!(out.is_empty());
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
    let mut out = ask_each(&mut d, &[(1, 2), (2, 2)]);
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
fn a_partition_shares_its_events_among_its_consumers_by_demand() {
    let mut d = parity(10);
    // Two consumers of partition 0, one of partition 1.
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 0);
    subscribe(&mut d, 3, 1);
    let mut out: Out = Vec::new();
    // The partition's demand is the sum of its consumers': each ask goes upstream.
    assert_eq!(d.ask(sub(1), 3, &mut out), 3);
    assert_eq!(d.ask(sub(2), 5, &mut out), 5);
    assert_eq!(d.ask(sub(3), 2, &mut out), 2);
    let got = d.dispatch((0..20).collect(), &mut out);
    // Partition 0 took 8 events (0..=14 even): the largest demand first, 5 to
    // sub 2, then 3 to sub 1; partition 1 took 1 and 3 and queued 5..=13 odd.
    assert_eq!(
        out,
        vec![
            (sub(2), vec![0, 2, 4, 6, 8]),
            (sub(1), vec![10, 12, 14]),
            (sub(3), vec![1, 3]),
        ]
    );
    assert_eq!(
        got,
        Dispatched {
            leftover: (15..20).collect(),
            demand: 0
        }
    );
    assert_eq!(d.buffered(), 5);
    for n in 1..=3 {
        assert_eq!(d.pending_demand(sub(n)), Some(0));
    }
    assert_eq!(d.waiting, 0);
}

#[test]
fn consumers_of_a_partition_with_equal_demand_are_served_in_subscription_order() {
    let mut d = parity(10);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 0);
    let mut out = ask_each(&mut d, &[(1, 2), (2, 2)]);
    assert_eq!(
        d.dispatch(vec![0, 2, 4, 6], &mut out),
        Dispatched::leftover(vec![])
    );
    assert_eq!(out, vec![(sub(1), vec![0, 2]), (sub(2), vec![4, 6])]);
    // A queued event goes to whichever consumer of the partition asks.
    let mut out = ask_each(&mut d, &[(2, 1)]);
    d.dispatch(vec![8], &mut out);
    assert_eq!(out, vec![(sub(2), vec![8])]);
}

#[test]
fn when_one_of_two_consumers_of_a_partition_cancels_the_other_gets_its_queue() {
    let mut d = parity(10);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 0);
    subscribe(&mut d, 3, 1);
    let mut out = ask_each(&mut d, &[(1, 2), (3, 4)]);
    // Sub 1 takes 0 and 2; 4 and 6 were asked for (the window is 6) but
    // partition 0 has no demand left: they are queued.
    let got = d.dispatch(vec![0, 2, 4, 6, 1, 3, 5, 7], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(out, vec![(sub(1), vec![0, 2]), (sub(3), vec![1, 3, 5, 7])]);
    assert_eq!(d.buffered(), 2);

    assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
    assert_eq!(d.pending_demand(sub(1)), None);
    // The partition still has a consumer: nothing is lost, nothing unserved.
    assert_eq!(d.buffered(), 2);
    assert_eq!(Dispatcher::<u32>::unserved(&d), None);
    // Sub 2 gets the queue first; only the rest of its ask goes upstream.
    let mut out: Out = Vec::new();
    assert_eq!(d.ask(sub(2), 3, &mut out), 1);
    assert_eq!(out, vec![(sub(2), vec![4, 6])]);
    assert_eq!(
        d.dispatch(vec![8, 9], &mut out),
        Dispatched::leftover(vec![9])
    );
    assert_eq!(out.last(), Some(&(sub(2), vec![8])));
    assert_eq!(d.pending_demand(sub(2)), Some(0));

    // Once its last consumer is gone, events for the partition wait in its queue
    // and the partition is reported as unserved.
    assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(2)), 0);
    let mut out = ask_each(&mut d, &[(3, 2)]);
    assert_eq!(
        d.dispatch(vec![10, 11, 13], &mut out),
        Dispatched::leftover(vec![])
    );
    assert_eq!(out, vec![(sub(3), vec![11, 13])]);
    assert_eq!(
        Dispatcher::<u32>::unserved(&d),
        Some((Partition::Index(0), 1))
    );
    // A new consumer takes over the queue.
    subscribe(&mut d, 4, 0);
    assert_eq!(Dispatcher::<u32>::unserved(&d), None);
    let mut out: Out = Vec::new();
    assert_eq!(d.ask(sub(4), 1, &mut out), 0);
    assert_eq!(out, vec![(sub(4), vec![10])]);
}

#[test]
fn a_cancelled_consumer_s_unmet_demand_becomes_pending_and_its_partner_keeps_its_own() {
    let mut d = parity(10);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 0);
    let mut out = ask_each(&mut d, &[(1, 3), (2, 2)]);
    assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
    assert_eq!(d.pending(), 3);
    assert_eq!(d.pending_demand(sub(2)), Some(2));
    // The 5 asked for arrive: sub 2 takes its 2, the other 3 meet no demand and
    // are queued, using the cancelled consumer's pending demand up: nothing more
    // is asked for.
    let got = d.dispatch(vec![0, 2, 4, 6, 8], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(out, vec![(sub(2), vec![0, 2])]);
    assert_eq!((d.buffered(), d.pending(), d.waiting), (3, 0, 0));
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
    let mut d = PartitionDispatcher::numbered(nz(2), |e: u32| Some((e as usize, e)))
        .build()
        .unwrap();
    subscribe(&mut d, 1, 1);
    let mut out = ask_each(&mut d, &[(1, 2)]);
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
    let mut d = PartitionDispatcher::numbered(nz(1), |e: u32| Some((0, e * 10)))
        .build()
        .unwrap();
    subscribe(&mut d, 1, 0);
    let mut out = ask_each(&mut d, &[(1, 2)]);
    d.dispatch(vec![1, 2], &mut out);
    assert_eq!(out, vec![(sub(1), vec![10, 20])]);
}

#[test]
fn build_rejects_bad_configurations() {
    // Zero partitions and a zero queue capacity cannot be written: both
    // counts are `NonZeroUsize`. What is left to refuse is a list of names.
    let hash = |e: u32| Some((0, e));
    let no_names: [&str; 0] = [];
    assert_eq!(
        PartitionDispatcher::named(no_names, hash)
            .build()
            .unwrap_err(),
        ConfigError::Zero {
            option: "partitions",
        }
    );
    assert_eq!(
        PartitionDispatcher::named(["a", "b", "a"], hash)
            .build()
            .unwrap_err()
            .to_string(),
        r#"invalid option partitions: the partition name "a" appears twice; names must be unique"#
    );
    let d = PartitionDispatcher::numbered(nz(3), hash).build().unwrap();
    assert_eq!(d.capacity, DEFAULT_PARTITION_QUEUE_CAPACITY.get());
    assert_eq!(d.partitions(), 3);
}

#[test]
fn unknown_subscriptions_are_ignored() {
    let mut d = parity(10);
    assert_unknown_subscription_ignored(&mut d);
    assert_eq!(d.pending_demand(sub(9)), None);
    assert_eq!(d.pending(), 0);
}

#[test]
fn by_key_sends_equal_keys_to_one_partition_in_order() {
    let mut d = PartitionDispatcher::by_key(nz(3), |e: &(u32, u32)| e.0)
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
    let d = PartitionDispatcher::numbered(nz(1), |e: Opaque| Some((0, e)))
        .build()
        .unwrap();
    assert!(format!("{d:?}").starts_with("PartitionDispatcher"));
}

#[test]
fn an_info_waits_for_the_events_queued_before_it_in_every_partition() {
    let mut d = PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 2) as usize, e)))
        .build()
        .unwrap();
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 1);
    let mut out: Out = Vec::new();
    // Nothing queued: the info need not wait.
    assert!(!d.hold_info());
    assert_eq!(d.ask(sub(2), 10, &mut out), 10);
    // 5 events wait in partition 0's queue, the odd ones are delivered.
    d.dispatch(vec![0, 1, 2, 4, 6, 8], &mut out);
    assert_eq!(d.buffered(), 5);
    assert!(d.hold_info());
    assert!(!d.release_info());
    // Events queued after the marker do not hold it back.
    assert_eq!(d.ask(sub(1), 4, &mut out), 0);
    assert_eq!(out.last(), Some(&(sub(1), vec![0, 2, 4, 6])));
    assert!(!d.release_info());
    d.dispatch(vec![10, 12], &mut out);
    // A second info waits behind the first.
    assert!(d.hold_info());
    assert_eq!(d.ask(sub(1), 1, &mut out), 0);
    assert_eq!(out.last(), Some(&(sub(1), vec![8])));
    assert!(d.release_info());
    assert!(!d.release_info());
    assert_eq!(d.ask(sub(1), 2, &mut out), 0);
    assert_eq!(out.last(), Some(&(sub(1), vec![10, 12])));
    assert!(d.release_info());
    assert!(!d.hold_info());
}

#[test]
fn misrouted_events_are_reported_through_the_dispatcher_trait() {
    let mut d = PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 3) as usize, e)))
        .build()
        .unwrap();
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 1);
    let mut out = ask_each(&mut d, &[(1, 10), (2, 10)]);
    d.dispatch((0..=8).collect(), &mut out);
    assert_eq!(Dispatcher::<u32>::misrouted(&d), 3);
    assert_eq!(out, vec![(sub(1), vec![0, 3, 6]), (sub(2), vec![1, 4, 7])]);
}

#[test]
fn subscribe_refuses_a_selector_option() {
    let mut d = PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 2) as usize, e)))
        .build()
        .unwrap();
    let opts = SubscribeOptions::new()
        .partition(0)
        .selector(|e: &u32| *e > 1);
    assert_eq!(
        d.subscribe(sub(1), StageId::from_raw(1), &opts),
        Err(SubscribeRefused::UnsupportedOption {
            option: "selector",
            dispatcher: "partition",
        })
    );
    // The partition is still free.
    subscribe(&mut d, 1, 0);
}

// ---------------------------------------------------------------------------
// Fill-ahead mode
// ---------------------------------------------------------------------------

/// Two numbered partitions by parity, filling ahead, with a queue capacity.
fn parity_ahead(capacity: usize) -> PartitionDispatcher<u32> {
    PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 2) as usize, e)))
        .queue_capacity(nz(capacity))
        .fill_ahead(true)
        .build()
        .unwrap()
}

/// Consumers in automatic demand (max 1000, min 500), one per partition of
/// `d`, behind a producer that emits what it is asked for at once. The
/// consumers take turns: each handles its oldest undelivered chunk and asks
/// again, and the producer answers that ask before the next consumer's turn,
/// as a fast source does. Returns the sizes of the batches each consumer
/// received until `events` were emitted, and checks it got its partition's
/// events in order.
fn batch_sizes(mut d: PartitionDispatcher<u32>, events: u32) -> Vec<Vec<usize>> {
    /// Its demand, the chunks it has yet to handle, the sizes of the batches
    /// it received, and how many events it handled.
    struct Consumer(AutoDemand, VecDeque<Vec<u32>>, Vec<usize>, u32);
    let n = d.partitions();
    let mut consumers: Vec<Consumer> = (0..n)
        .map(|_| Consumer(AutoDemand::new(1000, 500), VecDeque::new(), Vec::new(), 0))
        .collect();
    let mut out: Out = Vec::new();
    let mut next = 0u32;
    let mut emit = |d: &mut PartitionDispatcher<u32>, mut upstream: u64, out: &mut Out| {
        while upstream > 0 {
            let batch: Vec<u32> = (next..next + upstream as u32).collect();
            next += upstream as u32;
            let got = d.dispatch(batch, out);
            assert!(got.leftover.is_empty());
            upstream = got.demand;
        }
        next
    };
    for (i, c) in consumers.iter_mut().enumerate() {
        subscribe(&mut d, i as u64, i);
        let upstream = d.ask(sub(i as u64), c.0.subscribe(), &mut out);
        emit(&mut d, upstream, &mut out);
    }
    let mut turn = 0;
    loop {
        for (s, batch) in out.drain(..) {
            let c = &mut consumers[s.as_u64() as usize];
            c.2.push(batch.len());
            for chunk in crate::split_chunks(batch, c.0.chunk_len()) {
                c.1.push_back(chunk);
            }
        }
        let i = turn % n;
        turn += 1;
        let c = &mut consumers[i];
        let Some(chunk) = c.1.pop_front() else {
            continue;
        };
        for e in &chunk {
            assert_eq!((*e % n as u32, *e / n as u32), (i as u32, c.3));
            c.3 += 1;
        }
        let ask = c.0.consume(chunk.len() as u64);
        if ask > 0 {
            let upstream = d.ask(sub(i as u64), ask, &mut out);
            if emit(&mut d, upstream, &mut out) >= events {
                return consumers.into_iter().map(|c| c.2).collect();
            }
        }
    }
}

#[test]
fn without_fill_ahead_an_ask_arrives_in_a_geometric_series_of_batches() {
    // The problem fill-ahead solves (benches/README.md): partition 0's first
    // ask of 1000 comes as 500, 250, 125, … while the odd half is queued.
    let d = PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 2) as usize, e)))
        .build()
        .unwrap();
    let sizes = batch_sizes(d, 20_000);
    assert_eq!(sizes[0][..10], [500, 250, 125, 63, 31, 15, 8, 4, 2, 1]);
    let average = |s: &[usize]| s.iter().sum::<usize>() / s.len();
    assert!(average(&sizes[0]) < 250, "{:?}", sizes[0]);
}

#[test]
fn filling_ahead_an_ask_arrives_in_one_batch_and_the_other_partition_s_from_its_queue() {
    let d = PartitionDispatcher::numbered(nz(2), |e: u32| Some(((e % 2) as usize, e)))
        .fill_ahead(true)
        .build()
        .unwrap();
    let sizes = batch_sizes(d, 20_000);
    // Partition 0's first ask of 1000 is forwarded as 2000: its 1000 arrive in
    // one batch, partition 1's 1000 are queued and serve its first ask whole.
    // From then on each ask of 500 arrives as one batch of 500.
    for consumer in &sizes {
        assert_eq!(consumer[0], 1000);
        assert!(consumer[1..].iter().all(|&s| s == 500), "{consumer:?}");
        assert!(consumer.len() >= 18, "{consumer:?}");
    }
}

#[test]
fn filling_ahead_forwards_an_ask_times_the_partitions_and_queues_closes_the_window() {
    let mut d = parity_ahead(100);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 1);
    let mut out: Out = Vec::new();
    assert_eq!(d.ask(sub(1), 4, &mut out), 8);
    // Partition 1 lacks 3 of the 8 already asked for (4 × 2): nothing more.
    assert_eq!(d.ask(sub(2), 3, &mut out), 0);
    assert_eq!(d.awaited(), 8);
    // The first 5 close 5 of the window: 0, 2, 4 delivered to partition 0,
    // 1 and 3 to partition 1. Each lacks 1 more; 3 are still awaited, more
    // than 2 × 1: no top-up.
    let got = d.dispatch(vec![0, 1, 2, 3, 4], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(out, vec![(sub(1), vec![0, 2, 4]), (sub(2), vec![1, 3])]);
    assert_eq!(d.awaited(), 3);
    // 5 and 6 meet the last demand; 7, beyond it, is queued for partition 1
    // and closes the window like a delivery.
    out.clear();
    let got = d.dispatch(vec![5, 6, 7], &mut out);
    assert_eq!(out, vec![(sub(1), vec![6]), (sub(2), vec![5])]);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!((d.awaited(), d.buffered()), (0, 1));
    // Partition 1's next ask takes 7 from its queue. The queue could not serve
    // it whole, so the dispatcher fills ahead for a whole ask of each partition,
    // 2 × 2, which covers partition 0's ask of 2 as well.
    out.clear();
    assert_eq!(d.ask(sub(2), 2, &mut out), 4);
    assert_eq!(out, vec![(sub(2), vec![7])]);
    assert_eq!(d.ask(sub(1), 2, &mut out), 0);
    assert_eq!(d.awaited(), 4);
    assert_eq!(d.pending_demand(sub(1)), Some(2));
    assert_eq!(d.pending_demand(sub(2)), Some(1));
}

#[test]
fn filling_ahead_asks_for_no_more_than_the_fullest_queue_can_take() {
    let mut d = PartitionDispatcher::numbered(nz(3), |e: u32| Some(((e % 3) as usize, e)))
        .queue_capacity(nz(5))
        .fill_ahead(true)
        .build()
        .unwrap();
    subscribe(&mut d, 1, 0);
    let mut out: Out = Vec::new();
    // 3 × 1 = 3 fits.
    assert_eq!(d.ask(sub(1), 1, &mut out), 3);
    // 3 × 2 = 6 would not fit an idle partition's 5 free places if the hash sent
    // all of them there: 5.
    let mut d2 = PartitionDispatcher::numbered(nz(3), |e: u32| Some(((e % 3) as usize, e)))
        .queue_capacity(nz(5))
        .fill_ahead(true)
        .build()
        .unwrap();
    subscribe(&mut d2, 1, 0);
    assert_eq!(d2.ask(sub(1), 2, &mut out), 5);
    // When the partition lacks more than any queue takes, the window grows to
    // what it lacks, 10, as without fill-ahead.
    assert_eq!(d2.ask(sub(1), 8, &mut out), 5);
    assert_eq!(d2.awaited(), 10);

    // As queues fill, the bound falls: 1 and 2 are queued, so partitions 1 and
    // 2 have 4 free places each.
    out.clear();
    let got = d.dispatch(vec![0, 1, 2], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(out, vec![(sub(1), vec![0])]);
    assert_eq!((d.awaited(), d.buffered()), (0, 2));
    // An ask of 2: 3 × 2 = 6, bounded by the 4 places.
    assert_eq!(d.ask(sub(1), 2, &mut out), 4);
}

#[test]
fn filling_ahead_replaces_discarded_events() {
    let mut d = PartitionDispatcher::named(["even", "odd"], |e: u32| {
        (e % 3 != 0).then_some(((e % 2) as usize, e))
    })
    .fill_ahead(true)
    .build()
    .unwrap();
    subscribe(&mut d, 1, "even");
    subscribe(&mut d, 2, "odd");
    let mut out: Out = Vec::new();
    assert_eq!(d.ask(sub(1), 2, &mut out), 4);
    assert_eq!(d.ask(sub(2), 2, &mut out), 0);
    // 3 is discarded, so the window closes with "odd" lacking 1.
    let got = d.dispatch(vec![1, 2, 3, 4], &mut out);
    assert_eq!(
        got,
        Dispatched {
            leftover: vec![],
            demand: 2
        }
    );
    // 2 and 4 to "even", 1 to "odd", which lacks 1: the window (0 left) is
    // topped up to 2 × 1.
    assert_eq!(out, vec![(sub(1), vec![2, 4]), (sub(2), vec![1])]);
    assert_eq!(d.discarded(), 1);
    let got = d.dispatch(vec![5, 6], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(out[2], (sub(2), vec![5]));
    assert_eq!((d.awaited(), d.buffered(), d.discarded()), (0, 0, 2));
}

#[test]
fn filling_ahead_a_full_queue_holds_the_window_back_until_a_partition_asks() {
    // Partition 0 has a subscriber that asked for nothing; its queue holds 2.
    let mut d = parity_ahead(2);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 1);
    let mut out: Out = Vec::new();
    // Room: min(0 + 2, 4 + 2) = 2, less than partition 1 lacks: 4 as asked.
    assert_eq!(d.ask(sub(2), 4, &mut out), 4);
    // The producer sends more even events than the queue holds.
    let got = d.dispatch(vec![0, 2, 4, 1], &mut out);
    assert_eq!(
        got,
        Dispatched {
            leftover: vec![4],
            demand: 0
        }
    );
    assert_eq!(out, vec![(sub(2), vec![1])]);
    assert_eq!((d.awaited(), d.buffered()), (0, 2));
    // Partition 0 takes one event from its queue; room is now min(0 + 1, 3 + 2):
    // the 3 partition 1 lacks are asked for again.
    out.clear();
    assert_eq!(d.ask(sub(1), 1, &mut out), 3);
    assert_eq!(out, vec![(sub(1), vec![0])]);
    // The producer sends its buffer first: 4 is queued now, 3 and 5 close the
    // window, and 7, beyond it, is routed too, because partition 1 lacked it.
    let got = d.dispatch(vec![4, 3, 5, 7], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    assert_eq!(out[1], (sub(2), vec![3, 5, 7]));
    assert_eq!((d.awaited(), d.buffered()), (0, 2));
    assert_eq!(d.pending_demand(sub(2)), Some(0));
}

#[test]
fn filling_ahead_a_cancelled_subscription_leaves_no_pending_demand() {
    let mut d = parity_ahead(100);
    subscribe(&mut d, 1, 0);
    subscribe(&mut d, 2, 1);
    let mut out: Out = Vec::new();
    assert_eq!(d.ask(sub(1), 5, &mut out), 10);
    assert_eq!(Dispatcher::<u32>::cancel(&mut d, sub(1)), 0);
    assert_eq!((d.pending(), d.awaited()), (0, 10));
    // Partition 1's ask is covered by the 10 already asked for.
    assert_eq!(d.ask(sub(2), 3, &mut out), 0);
    let got = d.dispatch((0..10).collect(), &mut out);
    assert_eq!(got, Dispatched::leftover(vec![]));
    // The even ones, asked for the cancelled subscription, are queued for the
    // partition's next subscriber; 7 and 9 wait in partition 1's queue.
    assert_eq!(out, vec![(sub(2), vec![1, 3, 5])]);
    assert_eq!((d.buffered(), d.awaited()), (7, 0));
}

#[test]
fn filling_ahead_unasked_events_are_routed_only_while_a_partition_lacks_events() {
    let mut d = parity_ahead(100);
    subscribe(&mut d, 1, 0);
    let mut out: Out = Vec::new();
    // Nobody asked: all of a push goes back unhashed.
    assert_eq!(d.dispatch(vec![0, 1], &mut out).leftover, vec![0, 1]);
    assert_eq!(d.ask(sub(1), 2, &mut out), 4);
    // Six events against a window of 4: the first 4 close it (0 and 2
    // delivered, 1 and 3 queued), then 4 and 5 are left over.
    let got = d.dispatch((0..6).collect(), &mut out);
    assert_eq!(got, Dispatched::leftover(vec![4, 5]));
    // With a partition lacking events, unasked events are routed on until it has them.
    assert_eq!(d.ask(sub(1), 1, &mut out), 2);
    let got = d.dispatch(vec![5, 7, 9, 4, 6], &mut out);
    assert_eq!(got, Dispatched::leftover(vec![6]));
    assert_eq!(out, vec![(sub(1), vec![0, 2]), (sub(1), vec![4])]);
    assert_eq!((d.buffered(), d.awaited()), (5, 0));
}

#[test]
fn fill_ahead_is_off_by_default_and_shown_in_debug() {
    let d = parity(10);
    assert!(!d.fill_ahead);
    assert!(format!("{d:?}").contains("fill_ahead: false"));
    let b = PartitionDispatcher::numbered(nz(2), |e: u32| Some((0, e))).fill_ahead(true);
    assert!(format!("{b:?}").contains("fill_ahead: true"));
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

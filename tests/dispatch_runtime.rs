//! Broadcast and partition dispatchers driven through running stages (SEMANTICS.md §4).

mod support;

use std::sync::Arc;

use demandflow::dispatcher::{BroadcastDispatcher, PartitionDispatcher, SubscribeRefused};
use demandflow::{
    Context, DemandFlow, Info, Producer, SubscribeError, SubscribeOptions, consumer, producer,
};
use parking_lot::Mutex;
use support::{Counter, Recorder, batches, eventually, manual_partition_consumer};

/// Emits the `Vec<u64>` it receives as info.
struct Emitter;

impl Producer for Emitter {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<u64>) {
        if let Ok(events) = info.downcast::<Vec<u64>>() {
            ctx.emit_vec(events);
        }
    }
}

#[tokio::test]
async fn broadcast_moves_at_the_pace_of_the_slowest_consumer() {
    let (counter, demands) = Counter::new();
    let p = producer(counter)
        .dispatcher(BroadcastDispatcher::new())
        .start()
        .unwrap();
    let (fast, fast_log) = Recorder::manual();
    let (slow, slow_log) = Recorder::manual();
    let fast = consumer(fast).start().unwrap();
    let slow = consumer(slow).start().unwrap();
    let fs = fast
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    let ss = slow
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    fast.ask(fs, 10).unwrap();
    let _ = fast.stats().await;
    let _ = p.stats().await;
    assert!(
        demands.lock().is_empty(),
        "nothing flows until every consumer asks"
    );
    slow.ask(ss, 4).unwrap();
    eventually(|| batches(&slow_log).concat().len() == 4).await;
    assert_eq!(batches(&fast_log).concat(), vec![0, 1, 2, 3]);
    assert_eq!(batches(&slow_log).concat(), vec![0, 1, 2, 3]);
    assert_eq!(*demands.lock(), vec![4]);
}

#[tokio::test]
async fn broadcast_selectors_pick_events_without_stalling() {
    let (counter, _) = Counter::new();
    let p = producer(counter)
        .dispatcher(BroadcastDispatcher::new())
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let (even, even_log) = Recorder::new();
    let (odd, odd_log) = Recorder::new();
    let (all, all_log) = Recorder::new();
    let even = consumer(even).start().unwrap();
    let odd = consumer(odd).start().unwrap();
    let all = consumer(all).start().unwrap();
    let opts = || SubscribeOptions::<u64>::new().max_demand(4).min_demand(2);
    even.subscribe_to(&p, opts().selector(|e| e % 2 == 0))
        .await
        .unwrap();
    odd.subscribe_to(&p, opts().selector(|e| e % 2 == 1))
        .await
        .unwrap();
    all.subscribe_to(&p, opts()).await.unwrap();
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&all_log).concat().len() >= 40).await;
    eventually(|| batches(&even_log).concat().len() >= 20).await;
    let all: Vec<u64> = batches(&all_log).concat();
    assert_eq!(all[..40], (0..40).collect::<Vec<_>>()[..]);
    let even: Vec<u64> = batches(&even_log).concat();
    assert_eq!(even[..20], (0..40).step_by(2).collect::<Vec<_>>()[..]);
    let odd: Vec<u64> = batches(&odd_log).concat();
    assert!(odd.iter().all(|e| e % 2 == 1));
    assert!(odd.windows(2).all(|w| w[1] == w[0] + 2));
    for batch in batches(&even_log) {
        assert!(!batch.is_empty() && batch.len() <= 4);
    }
}

#[tokio::test]
async fn broadcast_refuses_the_same_consumer_twice() {
    let (counter, _) = Counter::new();
    let p = producer(counter)
        .dispatcher(BroadcastDispatcher::new())
        .start()
        .unwrap();
    let (rec, _) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    let err = c
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SubscribeError::Refused(SubscribeRefused::AlreadySubscribed)
    );
    let _ = c.stats().await;
    assert!(
        c.is_running(),
        "a refused subscription does not stop the consumer"
    );
}

fn even_odd() -> PartitionDispatcher<u64> {
    PartitionDispatcher::named(["even", "odd"], |e: u64| {
        if e % 3 == 0 {
            None
        } else {
            Some((usize::from(e % 2 == 1), e))
        }
    })
    .build()
    .unwrap()
}

#[tokio::test]
async fn partition_worked_example_routes_discards_and_buffers_exactly() {
    let p = producer(Emitter).dispatcher(even_odd()).start().unwrap();
    p.send_info((1..=12).collect::<Vec<u64>>()).unwrap();
    let (even, even_log) = Recorder::manual();
    let (odd, odd_log) = Recorder::manual();
    let even = consumer(even).start().unwrap();
    let odd = consumer(odd).start().unwrap();
    let es = even
        .subscribe_to(&p, SubscribeOptions::new().partition("even"))
        .await
        .unwrap();
    let os = odd
        .subscribe_to(&p, SubscribeOptions::new().partition("odd"))
        .await
        .unwrap();
    even.ask(es, 4).unwrap();
    odd.ask(os, 4).unwrap();
    eventually(|| batches(&even_log).concat().len() == 4 && batches(&odd_log).concat().len() == 4)
        .await;
    assert_eq!(batches(&even_log).concat(), vec![2, 4, 8, 10]);
    assert_eq!(batches(&odd_log).concat(), vec![1, 5, 7, 11]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 1);
}

#[tokio::test]
async fn discarded_events_never_stall_a_partition() {
    // GenStage delivers [0] and then nothing, forever, in this setup.
    let (counter, _) = Counter::new();
    let only_even = PartitionDispatcher::numbered(nz(1), |e: u64| (e % 2 == 0).then_some((0, e)))
        .build()
        .unwrap();
    let p = producer(counter).dispatcher(only_even).start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(
        &p,
        SubscribeOptions::new()
            .partition(0)
            .max_demand(2)
            .min_demand(0),
    )
    .await
    .unwrap();
    eventually(|| batches(&log).concat().len() >= 20).await;
    let seen = batches(&log).concat();
    assert!(seen[..20].iter().copied().eq((0..40).step_by(2)));
    assert!(batches(&log).iter().all(|b| !b.is_empty() && b.len() <= 2));
}

#[tokio::test]
async fn filling_ahead_the_producer_is_asked_for_every_partition_s_share() {
    let (counter, demands) = Counter::new();
    let parity = PartitionDispatcher::numbered(nz(2), |e: u64| Some(((e % 2) as usize, e)))
        .fill_ahead(true)
        .build()
        .unwrap();
    let p = producer(counter).dispatcher(parity).start().unwrap();
    let (even, es, even_log) = manual_partition_consumer(&p, 0).await;
    let (odd, os, odd_log) = manual_partition_consumer(&p, 1).await;
    // An ask of 4 to one of 2 partitions asks the producer for 8: the even
    // half arrives in one batch, the odd half waits in its queue.
    even.ask(es, 4).unwrap();
    eventually(|| batches(&even_log).concat().len() == 4).await;
    assert_eq!(batches(&even_log), vec![vec![0, 2, 4, 6]]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 4);
    assert_eq!(*demands.lock(), vec![8]);
    // The odd partition's ask is served from its queue, whole; the producer is
    // asked for nothing more.
    odd.ask(os, 4).unwrap();
    eventually(|| batches(&odd_log).concat().len() == 4).await;
    assert_eq!(batches(&odd_log), vec![vec![1, 3, 5, 7]]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
    assert_eq!(*demands.lock(), vec![8]);
    // Nothing is queued for the odd partition now: its ask of 2 asks the
    // producer for 2 × 2, and the even half of those is queued.
    odd.ask(os, 2).unwrap();
    eventually(|| batches(&odd_log).concat().len() == 6).await;
    assert_eq!(batches(&odd_log)[1], vec![9, 11]);
    assert_eq!(*demands.lock(), vec![8, 4]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 2);
}

#[tokio::test]
async fn filling_ahead_automatic_demand_delivers_every_event_in_order() {
    let (counter, demands) = Counter::new();
    let by_three = PartitionDispatcher::numbered(nz(3), |e: u64| Some(((e % 3) as usize, e)))
        .fill_ahead(true)
        .build()
        .unwrap();
    let p = producer(counter).dispatcher(by_three).start().unwrap();
    let mut logs = Vec::new();
    for partition in 0..3 {
        let (rec, log) = Recorder::new();
        let c = consumer(rec).start().unwrap();
        c.subscribe_to(
            &p,
            SubscribeOptions::new()
                .partition(partition)
                .max_demand(10)
                .min_demand(5),
        )
        .await
        .unwrap();
        logs.push((c, log));
    }
    eventually(|| {
        logs.iter()
            .all(|(_, log)| batches(log).concat().len() >= 300)
    })
    .await;
    for (partition, (_, log)) in logs.iter().enumerate() {
        let seen = batches(log).concat();
        // Each partition's events, in order, none missing or twice.
        assert!(
            seen[..300]
                .iter()
                .copied()
                .eq((partition as u64..).step_by(3).take(300))
        );
        assert!(batches(log).iter().all(|b| !b.is_empty() && b.len() <= 10));
    }
    // The producer is asked for at most 3 × a consumer's max demand at once.
    assert!(
        demands.lock().iter().all(|&d| d <= 30),
        "{:?}",
        demands.lock()
    );
}

#[tokio::test]
async fn partition_subscriptions_must_name_an_existing_partition() {
    let p = producer(Emitter).dispatcher(even_odd()).start().unwrap();
    let (rec, _) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let missing = c
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(
        missing,
        SubscribeError::Refused(SubscribeRefused::MissingPartition { .. })
    ));
    let unknown = c
        .subscribe_to(&p, SubscribeOptions::new().partition("prime"))
        .await
        .unwrap_err();
    assert!(matches!(
        unknown,
        SubscribeError::Refused(SubscribeRefused::UnknownPartition { .. })
    ));
    c.subscribe_to(&p, SubscribeOptions::new().partition("odd"))
        .await
        .unwrap();
    // A partition may have several consumers.
    let (rec2, _) = Recorder::<u64>::manual();
    let c2 = consumer(rec2).start().unwrap();
    c2.subscribe_to(&p, SubscribeOptions::new().partition("odd"))
        .await
        .unwrap();
    assert!(c.is_running() && c2.is_running());
}

#[tokio::test]
async fn consumers_of_one_partition_share_its_events_and_one_may_leave() {
    // Even events to partition 0, consumed by `a` and `b`; odd ones to `c`.
    let dispatcher = PartitionDispatcher::numbered(nz(2), |e: u64| Some(((e % 2) as usize, e)))
        .build()
        .unwrap();
    let p = producer(demandflow::from_iter(0..12_u64))
        .dispatcher(dispatcher)
        .start()
        .unwrap();
    let monitor = p.monitor();
    let mut logs = Vec::new();
    let mut subs = Vec::new();
    let mut stages = Vec::new();
    for partition in [0, 0, 1] {
        let (rec, log) = Recorder::manual();
        let stage = consumer(rec).start().unwrap();
        let sub = stage
            .subscribe_to(&p, SubscribeOptions::new().partition(partition))
            .await
            .unwrap();
        logs.push(log);
        subs.push(sub);
        stages.push(stage);
    }
    drop(p);
    let got = |i: usize| batches(&logs[i]).concat();

    // Each ask of a partition-0 consumer is served with even events, in order;
    // the odd events pulled meanwhile wait in partition 1's queue.
    stages[0].ask(subs[0], 2).unwrap();
    eventually(|| got(0) == [0, 2]).await;
    stages[1].ask(subs[1], 2).unwrap();
    eventually(|| got(1) == [4, 6]).await;
    // `c` gets the queued 1, 3, 5 first; 8 is pulled meanwhile and queued for
    // partition 0.
    stages[2].ask(subs[2], 5).unwrap();
    eventually(|| got(2) == [1, 3, 5, 7, 9]).await;

    // `a` leaves: `b` still receives, starting with the queued 8.
    stages[0].stop(demandflow::Reason::Shutdown).await.unwrap();
    stages[1].ask(subs[1], 3).unwrap();
    eventually(|| got(1) == [4, 6, 8, 10]).await;
    stages[2].ask(subs[2], 1).unwrap();
    eventually(|| got(2) == [1, 3, 5, 7, 9, 11]).await;

    // The source ran dry and everything was delivered, once.
    assert_eq!(monitor.wait().await, demandflow::Reason::Normal);
    assert_eq!(got(0), [0, 2]);
    let mut all: Vec<u64> = (0..3).flat_map(got).collect();
    all.sort_unstable();
    assert_eq!(all, (0..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn partitions_keep_per_key_order_and_lose_nothing() {
    const N: u64 = 3000;
    let dispatcher = PartitionDispatcher::by_key(nz(3), |e: &u64| e % 7)
        .build()
        .unwrap();
    let p = producer(demandflow::from_iter(0..N))
        .dispatcher(dispatcher)
        .start()
        .unwrap();
    let logs: Vec<_> = (0..3).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let mut consumers = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let (mut rec, _) = Recorder::new();
        rec.log = log.clone();
        let c = consumer(rec).start().unwrap();
        c.subscribe_to(&p, SubscribeOptions::new().partition(i).max_demand(8))
            .await
            .unwrap();
        consumers.push(c);
    }
    // The source ends normally once every event has left its buffer and the
    // dispatcher's queues; termination then reaches every consumer.
    for c in &consumers {
        assert_eq!(c.wait().await, demandflow::Reason::Normal);
    }
    let mut seen: Vec<u64> = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let events = batches(log).concat();
        assert!(
            events.windows(2).all(|w| w[0] < w[1]),
            "order kept in partition {i}"
        );
        for e in &events {
            assert_eq!(
                demandflow::key_partition(&(e % 7), 3),
                i,
                "event {e} in its key's partition"
            );
        }
        seen.extend(events);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<u64>>(),
        "no event lost or duplicated"
    );
}

#[tokio::test]
async fn the_demand_dispatcher_refuses_options_it_does_not_understand() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let err = c
        .subscribe_to(&p, SubscribeOptions::new().partition(0))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SubscribeError::Refused(SubscribeRefused::UnsupportedOption {
            option: "partition",
            dispatcher: "demand",
        })
    );
    assert_eq!(err.to_string(), "subscription refused");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "the demand dispatcher does not support the partition option"
    );
    let err = c
        .subscribe_to(&p, SubscribeOptions::new().selector(|e: &u64| e % 2 == 0))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SubscribeError::Refused(SubscribeRefused::UnsupportedOption {
            option: "selector",
            dispatcher: "demand",
        })
    );
    assert!(c.is_running());
    assert!(p.stats().await.unwrap().subscriptions.is_empty());
    // Without them the same consumer subscribes fine.
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 3).unwrap();
    eventually(|| batches(&log).concat() == vec![0, 1, 2]).await;
}

#[tokio::test]
async fn events_routed_to_a_missing_partition_are_counted_in_the_producer_stats() {
    // Wrong on purpose: 2 partitions, but `e % 3` can be 2.
    let misrouting = PartitionDispatcher::numbered(nz(2), |e: u64| Some(((e % 3) as usize, e)))
        .build()
        .unwrap();
    let p = producer(Emitter).dispatcher(misrouting).start().unwrap();
    let (zero, zs, zero_log) = manual_partition_consumer(&p, 0).await;
    let (one, os, one_log) = manual_partition_consumer(&p, 1).await;
    zero.ask(zs, 10).unwrap();
    one.ask(os, 10).unwrap();
    zero.stats().await.unwrap();
    one.stats().await.unwrap();
    assert_eq!(p.stats().await.unwrap().events_misrouted, 0);
    // 2, 5 and 8 go to partition 2, which does not exist.
    p.send_info((0..=8).collect::<Vec<u64>>()).unwrap();
    let stats = p.stats().await.unwrap();
    assert_eq!(stats.events_misrouted, 3);
    assert_eq!(stats.events_out, 6);
    eventually(|| batches(&zero_log).concat().len() == 3 && batches(&one_log).concat().len() == 3)
        .await;
    assert_eq!(batches(&zero_log).concat(), vec![0, 3, 6]);
    assert_eq!(batches(&one_log).concat(), vec![1, 4, 7]);
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

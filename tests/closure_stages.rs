//! Stages made from closures: `map`, `filter`, `filter_map`, `flat_map`,
//! `inspect` and `for_each` are real stages with the usual options and demand.

mod support;

use std::sync::Arc;

use demandflow::{
    Reason, SubscribeOptions, filter, filter_map, flat_map, for_each, from_iter, inspect, map,
    producer,
};
use parking_lot::Mutex;
use support::Counter;

#[tokio::test]
async fn a_chain_of_closure_stages_delivers_every_event_in_order() {
    let source = producer(from_iter(0..10_000_u64)).start().unwrap();
    let doubled = map(|n: u64| n * 2).name("double").start().unwrap();
    let small = filter(|n: &u64| n % 3 == 0).start().unwrap();
    let pairs = flat_map(|n: u64| [n, n + 1]).start().unwrap();
    let odd = filter_map(|n: u64| (n % 2 == 1).then_some(n))
        .start()
        .unwrap();
    let inspected = Arc::new(Mutex::new(0_u64));
    let count = inspected.clone();
    let tap = inspect(move |_: &u64| *count.lock() += 1).start().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let collect = for_each(move |n: u64| sink.lock().push(n)).start().unwrap();

    doubled
        .subscribe_to(&source, SubscribeOptions::new())
        .await
        .unwrap();
    small
        .subscribe_to(&doubled, SubscribeOptions::new())
        .await
        .unwrap();
    pairs
        .subscribe_to(&small, SubscribeOptions::new())
        .await
        .unwrap();
    odd.subscribe_to(&pairs, SubscribeOptions::new())
        .await
        .unwrap();
    tap.subscribe_to(&odd, SubscribeOptions::new())
        .await
        .unwrap();
    collect
        .subscribe_to(&tap, SubscribeOptions::new())
        .await
        .unwrap();

    assert_eq!(collect.wait().await, Reason::Normal);
    let expected: Vec<u64> = (0..10_000_u64)
        .map(|n| n * 2)
        .filter(|n| n % 3 == 0)
        .map(|n| n + 1)
        .collect();
    assert_eq!(expected.len(), 3_334);
    assert_eq!(*out.lock(), expected);
    assert_eq!(*inspected.lock(), 3_334);
    assert_eq!(doubled.name(), "double");
}

/// A filter that rejects whole chunks keeps asking (SEMANTICS.md §2: filters
/// never stall the pipeline), and its producer sees the demands of §2.
#[tokio::test]
async fn a_filter_that_drops_whole_chunks_keeps_asking() {
    let (counter, demands) = Counter::new();
    let source = producer(counter).start().unwrap();
    // Only one event in 1,000 passes: most 20-event chunks are dropped whole.
    let rare = filter(|n: &u64| n % 1_000 == 999).start().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let collect = for_each(move |n: u64| sink.lock().push(n)).start().unwrap();
    rare.subscribe_to(
        &source,
        SubscribeOptions::new().max_demand(100).min_demand(80),
    )
    .await
    .unwrap();
    collect
        .subscribe_to(&rare, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();

    support::eventually(|| out.lock().len() >= 5).await;
    assert_eq!(out.lock()[..5], [999, 1_999, 2_999, 3_999, 4_999]);
    let demands = demands.lock().clone();
    assert_eq!(demands[0], 100);
    assert!(demands[1..].iter().all(|&d| d == 20), "{demands:?}");
}

#[tokio::test]
async fn a_panicking_closure_stops_its_stage_with_the_panic_message() {
    let source = producer(from_iter(0..10_u64)).start().unwrap();
    let boom = map(|n: u64| {
        assert!(n < 5, "five is too many");
        n
    })
    .start()
    .unwrap();
    // A producer-consumer asks upstream only for demand from downstream.
    let sink = for_each(|_: u64| {}).start().unwrap();
    sink.subscribe_to(&boom, SubscribeOptions::new())
        .await
        .unwrap();
    boom.subscribe_to(&source, SubscribeOptions::new())
        .await
        .unwrap();
    match boom.wait().await {
        Reason::Panic(message) => assert!(message.contains("five is too many"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
}

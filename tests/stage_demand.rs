//! Automatic and manual demand through the public API (SEMANTICS.md §2).

mod support;

use demandflow::{SubscribeOptions, consumer, producer};
use support::{Counter, Recorder, batches, eventually};

async fn chunks_and_demands(max: u64, min: u64, n_batches: usize) -> (Vec<Vec<u64>>, Vec<u64>) {
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(max).min_demand(min))
        .await
        .unwrap();
    eventually(|| batches(&log).len() >= n_batches).await;
    let b = batches(&log);
    let d = demands.lock().clone();
    (b, d)
}

#[tokio::test]
async fn default_demand_chunks_are_five_hundred_events() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    eventually(|| batches(&log).len() >= 2).await;
    let b = batches(&log);
    assert_eq!(b[0], (0..=499).collect::<Vec<_>>());
    assert_eq!(b[1], (500..=999).collect::<Vec<_>>());
}

#[tokio::test]
async fn max_100_min_80_gives_chunks_of_twenty() {
    let (b, d) = chunks_and_demands(100, 80, 12).await;
    for (i, chunk) in b.iter().take(12).enumerate() {
        let start = i as u64 * 20;
        assert_eq!(*chunk, (start..start + 20).collect::<Vec<_>>());
    }
    assert_eq!(&d[..5], &[100, 20, 20, 20, 20]);
}

#[tokio::test]
async fn max_100_min_20_alternates_eighty_and_twenty() {
    let (b, d) = chunks_and_demands(100, 20, 5).await;
    let ranges: Vec<(u64, u64)> = b
        .iter()
        .take(5)
        .map(|c| (c[0], *c.last().unwrap()))
        .collect();
    assert_eq!(
        ranges,
        vec![(0, 79), (80, 99), (100, 179), (180, 259), (260, 279)]
    );
    assert_eq!(&d[..4], &[100, 80, 100, 80]);
}

#[tokio::test]
async fn max_1_min_0_asks_one_at_a_time() {
    let (b, d) = chunks_and_demands(1, 0, 5).await;
    assert_eq!(&b[..5], &[vec![0], vec![1], vec![2], vec![3], vec![4]]);
    assert!(d.iter().all(|&x| x == 1));
}

#[tokio::test]
async fn manual_demand_asks_nothing_until_told() {
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    tokio::task::yield_now().await;
    assert!(demands.lock().is_empty());
    c.ask(sub, 0).unwrap();
    c.ask(sub, 3).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(batches(&log), vec![vec![0, 1, 2]]);
    c.ask(sub, 5).unwrap();
    eventually(|| batches(&log).len() == 2).await;
    assert_eq!(batches(&log)[1], vec![3, 4, 5, 6, 7]);
    assert_eq!(*demands.lock(), vec![3, 5]);
}

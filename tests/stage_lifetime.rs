//! What happens to a pipeline when its handles are dropped, and how a producer
//! stops (the lifetime rule in the crate docs).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use demandflow::keyed::{KeyedBatch, KeyedBuilder, KeyedHandler};
use demandflow::{
    Consumer, ConsumerContext, Context, Producer, Reason, SubscribeOptions, SubscriptionId,
    consumer, from_iter, map, producer,
};
use support::{Counter, Recorder, Seen, eventually};
use tokio::sync::mpsc;

/// Forwards every event into a channel; stops when the channel's receiver is gone.
struct Forward(mpsc::Sender<u64>);

impl Consumer for Forward {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) {
        for event in events {
            if self.0.send(event).await.is_err() {
                ctx.stop(Reason::Normal);
                return;
            }
        }
    }
}

/// Builds a pipeline and returns only its output: every handle is dropped here.
async fn numbers(source: impl Producer<Event = u64>) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel(1024);
    let p = producer(source).start().unwrap();
    let c = consumer(Forward(tx)).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    rx
}

#[tokio::test]
async fn a_pipeline_built_in_a_helper_delivers_every_event_after_its_handles_are_dropped() {
    let mut rx = numbers(from_iter(0..1_000_000_u64)).await;
    let mut expected = 0;
    while let Some(n) = rx.recv().await {
        assert_eq!(n, expected);
        expected += 1;
    }
    assert_eq!(expected, 1_000_000);
}

#[tokio::test]
async fn an_endless_producer_whose_consumer_stops_winds_down_with_no_task_left() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let (counter, _) = Counter::new();
    let mut rx = numbers(counter).await;
    for expected in 0..100 {
        assert_eq!(rx.recv().await, Some(expected));
    }
    assert_eq!(metrics.num_alive_tasks(), 2);
    drop(rx);
    eventually(|| metrics.num_alive_tasks() == 0).await;
}

/// A three-stage pipeline whose handles are all dropped before it returns.
async fn doubled(source: impl Producer<Event = u64>) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel(16);
    let p = producer(source).start().unwrap();
    let double = map(|n: u64| n * 2).start().unwrap();
    let c = consumer(Forward(tx)).start().unwrap();
    double
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    c.subscribe_to(&double, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    rx
}

#[tokio::test]
async fn a_detached_producer_consumer_delivers_everything_and_ends_with_its_input() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut rx = doubled(from_iter(0..10_000_u64)).await;
    let mut expected = 0;
    while let Some(n) = rx.recv().await {
        assert_eq!(n, expected * 2);
        expected += 1;
    }
    assert_eq!(expected, 10_000);
    eventually(|| metrics.num_alive_tasks() == 0).await;
}

#[tokio::test]
async fn a_detached_producer_consumer_whose_consumer_stops_winds_down_with_its_producer() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let (counter, _) = Counter::new();
    let mut rx = doubled(counter).await;
    assert_eq!(rx.recv().await, Some(0));
    assert_eq!(rx.recv().await, Some(2));
    drop(rx);
    eventually(|| metrics.num_alive_tasks() == 0).await;
}

#[tokio::test]
async fn a_subscription_on_its_way_keeps_a_detached_producer_running() {
    let (tx, mut rx) = mpsc::channel(16);
    let p = producer(from_iter(0..1000_u64)).start().unwrap();
    let c = consumer(Forward(tx)).start().unwrap();
    c.subscribe_to_nowait(&p, SubscribeOptions::new()).unwrap();
    drop((p, c));
    let mut got = Vec::new();
    while let Some(n) = rx.recv().await {
        got.push(n);
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_detached_consumer_with_no_producer_left_stops() {
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    let m = c.monitor();
    drop(c);
    assert_eq!(m.wait().await, Reason::Shutdown);
}

/// Emits `n` events at start, before anyone asks: they wait in its buffer.
struct EmitsAtStart(u64);

impl Producer for EmitsAtStart {
    type Event = u64;

    async fn init(&mut self, ctx: &mut Context<u64>) {
        ctx.emit_all(0..self.0);
    }

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
}

#[tokio::test]
async fn a_detached_producer_that_stops_holding_events_says_so_in_its_exit_reason() {
    let p = producer(EmitsAtStart(10)).start().unwrap();
    assert_eq!(p.estimate_buffered_count().await, Ok(10));
    let m = p.monitor();
    drop(p);
    assert_eq!(
        m.wait().await,
        Reason::error("shutdown with 10 events undelivered")
    );
}

/// Emits 20 events on the first demand, then stops normally.
struct TwentyThenStop;

impl Producer for TwentyThenStop {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, ctx: &mut Context<u64>) {
        ctx.emit_all(0..20);
        ctx.stop(Reason::Normal);
    }
}

#[tokio::test]
async fn a_producer_that_stops_normally_delivers_what_it_buffered_first() {
    let p = producer(TwentyThenStop).start().unwrap();
    let (rec, log) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(5).min_demand(0))
        .await
        .unwrap();
    assert_eq!(p.wait().await, Reason::Normal);
    assert_eq!(c.wait().await, Reason::Normal);
    let events: Vec<u64> = log
        .lock()
        .iter()
        .filter_map(|s| match s {
            Seen::Events(_, e) => Some(e.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(events, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_producer_that_stops_with_an_error_stops_at_once() {
    struct Fails;
    impl Producer for Fails {
        type Event = u64;
        async fn handle_demand(&mut self, _: u64, ctx: &mut Context<u64>) {
            ctx.emit_all(0..20);
            ctx.stop(Reason::error("broken"));
        }
    }
    let p = producer(Fails).start().unwrap();
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(5).min_demand(0))
        .await
        .unwrap();
    assert_eq!(p.wait().await, Reason::error("broken"));
}

/// Counts events; the count is shared so the test can read it once every
/// handle is gone.
struct Count(Arc<AtomicU64>);

impl KeyedHandler for Count {
    type Key = u64;
    type Event = u64;

    async fn handle(&self, batch: &mut KeyedBatch<u64, u64>) {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

// The keyed scheduler follows the same rule: with every handle dropped, its
// workers handle what was sent to them and end.
#[tokio::test]
async fn a_keyed_pipeline_whose_handles_are_dropped_handles_every_event_and_ends() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let count = Arc::new(AtomicU64::new(0));
    {
        let keyed = KeyedBuilder::dense(Count(count.clone())).start().unwrap();
        let numbers = producer(from_iter(0..10_000_u64)).start().unwrap();
        let feed = consumer(keyed.consumer(|n: &u64| n % 100)).start().unwrap();
        feed.subscribe_to(&numbers, SubscribeOptions::new())
            .await
            .unwrap();
    }
    eventually(|| count.load(Ordering::Relaxed) == 10_000 && metrics.num_alive_tasks() == 0).await;
}

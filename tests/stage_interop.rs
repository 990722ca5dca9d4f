//! Sources, streams and push handles (SEMANTICS.md §7).

mod support;

use std::future::poll_fn;
use std::pin::Pin;

use demandflow::{
    EventStream, Reason, SubscribeOptions, TrySendError, consumer, from_iter, from_stream,
    producer, push,
};
use futures_core::Stream;
use support::{Counter, Recorder, Seen, batches, eventually};

async fn next<T: Send + 'static>(stream: &mut EventStream<T>) -> Option<T> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

#[tokio::test]
async fn a_finite_source_ends_normally_after_its_last_events() {
    let p = producer(from_iter(1..=7_u64)).start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    let sub = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(batches(&log), vec![vec![1, 2, 3, 4, 5], vec![6, 7]]);
    assert_eq!(
        log.lock().last(),
        Some(&Seen::Cancelled(
            sub,
            demandflow::CancelReason::Down(Reason::Normal)
        ))
    );
    assert_eq!(p.wait().await, Reason::Normal);
}

#[tokio::test]
async fn a_source_can_stop_when_its_last_consumer_cancels() {
    let p = producer(from_iter(0..u64::MAX).stop_on_last_cancel(true))
        .start()
        .unwrap();
    let (rec, _log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c
        .subscribe_to(
            &p,
            SubscribeOptions::new().cancel(demandflow::CancelMode::Temporary),
        )
        .await
        .unwrap();
    c.cancel(sub, Reason::Normal).unwrap();
    assert_eq!(p.wait().await, Reason::Normal);
    assert!(c.is_running());
}

#[tokio::test]
async fn a_producer_as_a_stream_asks_like_a_consumer() {
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let mut stream = p.stream(SubscribeOptions::new().max_demand(3)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(next(&mut stream).await.unwrap());
    }
    assert_eq!(seen, (0..=6).collect::<Vec<u64>>());
    drop(stream);
    p.stats().await.unwrap();
    assert_eq!(*demands.lock(), vec![3, 2, 3]);
}

#[tokio::test]
async fn dropping_a_stream_cancels_its_subscription() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let mut stream = p.stream(SubscribeOptions::new().max_demand(3)).unwrap();
    assert_eq!(next(&mut stream).await, Some(0));
    assert_eq!(p.stats().await.unwrap().subscriptions.len(), 1);
    drop(stream);
    assert!(p.stats().await.unwrap().subscriptions.is_empty());
    assert!(p.is_running());
}

#[tokio::test]
async fn a_stream_ends_when_its_producer_stops() {
    let p = producer(from_iter(0..4_u64)).start().unwrap();
    let mut stream = p.stream(SubscribeOptions::new().max_demand(10)).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = next(&mut stream).await {
        seen.push(e);
    }
    assert_eq!(seen, vec![0, 1, 2, 3]);
    assert_eq!(stream.exit_reason(), Some(&Reason::Normal));
}

#[tokio::test]
async fn a_stream_source_is_pulled_only_on_demand() {
    let pulled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = pulled.clone();
    let source = tokio_stream_from_iter((0..100_u64).inspect(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let p = producer(from_stream(source)).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 5).unwrap();
    eventually(|| batches(&log).concat().len() == 5).await;
    assert_eq!(batches(&log).concat(), vec![0, 1, 2, 3, 4]);
    assert_eq!(pulled.load(std::sync::atomic::Ordering::SeqCst), 5);
    c.ask(sub, 200).unwrap();
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(batches(&log).concat(), (0..100).collect::<Vec<u64>>());
}

/// A minimal `Stream` over an iterator, so the test needs no stream crate.
fn tokio_stream_from_iter<I: Iterator + Unpin>(iter: I) -> impl Stream<Item = I::Item> {
    struct IterStream<I>(I);
    impl<I: Iterator + Unpin> Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    IterStream(iter)
}

#[tokio::test]
async fn pushed_events_are_bounded_by_capacity_until_consumers_ask() {
    let (source, pusher) = push::<u32>(nz(2));
    let p = producer(source).start().unwrap();
    pusher.send(1).await.unwrap();
    pusher.send(2).await.unwrap();
    assert!(matches!(pusher.try_send(3), Err(TrySendError::Full(3))));
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 1).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(batches(&log), vec![vec![1]]);
    // One slot freed: one more fits, then it is full again.
    pusher.try_send(3).unwrap();
    assert!(matches!(pusher.try_send(4), Err(TrySendError::Full(4))));
    c.ask(sub, 10).unwrap();
    eventually(|| batches(&log).concat() == vec![1, 2, 3]).await;
}

#[tokio::test]
async fn dropping_every_pusher_ends_the_source_normally() {
    let (source, pusher) = push::<u32>(nz(8));
    let p = producer(source).start().unwrap();
    let second = pusher.clone();
    pusher.send(1).await.unwrap();
    second.send(2).await.unwrap();
    drop(pusher);
    drop(second);
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(batches(&log).concat(), vec![1, 2]);
}

#[tokio::test]
async fn sending_to_a_stopped_push_source_hands_the_event_back() {
    let (source, pusher) = push::<u32>(nz(1));
    let p = producer(source).start().unwrap();
    p.stop(Reason::Shutdown).await.unwrap();
    assert_eq!(pusher.send(7).await.unwrap_err().0, 7);
    assert!(pusher.is_closed());
}

#[tokio::test]
async fn a_pusher_is_a_sink_with_back_pressure() {
    use futures_sink::Sink;
    let (source, mut pusher) = push::<u32>(nz(1));
    let p = producer(source).start().unwrap();
    poll_fn(|cx| Pin::new(&mut pusher).poll_ready(cx))
        .await
        .unwrap();
    Pin::new(&mut pusher).start_send(5).unwrap();
    // Capacity 1 is used: the sink is not ready until a consumer takes the event.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(Pin::new(&mut pusher).poll_ready(&mut cx).is_pending());
    let mut stream = p.stream(SubscribeOptions::new().max_demand(4)).unwrap();
    assert_eq!(next(&mut stream).await, Some(5));
    poll_fn(|cx| Pin::new(&mut pusher).poll_ready(cx))
        .await
        .unwrap();
}

#[test]
fn a_pusher_whose_source_never_ran_hands_every_event_back() {
    let (source, pusher) = push::<u32>(nz(2));
    // No runtime: starting fails and the source is gone without ever running.
    assert_eq!(
        producer(source).start().unwrap_err(),
        demandflow::StartError::NoRuntime
    );
    assert!(pusher.is_closed());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Capacity 2: before the fix the first two vanished and the third hung.
        for event in [1, 2, 3] {
            assert_eq!(pusher.send(event).await.unwrap_err().0, event);
        }
    });
    assert!(matches!(pusher.try_send(4), Err(TrySendError::Closed(4))));
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

//! Cancellation, cancel modes and termination (SEMANTICS.md §6).

mod support;

use demandflow::{
    CancelMode, CancelReason, Reason, SubscribeOptions, consumer, from_iter, producer,
    producer_consumer,
};
use support::{Counter, Doubler, Recorder, Seen, batches, eventually};

/// Stops a producer with `reason` and reports whether a consumer with `mode`
/// stopped (and with which reason) after its cancel handler ran.
async fn consumer_after_producer_stops(mode: CancelMode, reason: Reason) -> Option<Reason> {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c
        .subscribe_to(&p, SubscribeOptions::new().cancel(mode))
        .await
        .unwrap();
    p.stop(reason.clone()).await.unwrap();
    eventually(|| log.lock().iter().any(|s| matches!(s, Seen::Cancelled(..)))).await;
    assert!(
        log.lock()
            .contains(&Seen::Cancelled(sub, CancelReason::Down(reason)))
    );
    // The cancel mode is applied right after the handler: a round trip settles it.
    let _ = c.stats().await;
    if c.is_running() {
        None
    } else {
        Some(c.wait().await)
    }
}

#[tokio::test]
async fn permanent_consumers_stop_with_the_producers_reason() {
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Permanent, Reason::Normal).await,
        Some(Reason::Normal)
    );
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Permanent, Reason::Shutdown).await,
        Some(Reason::Shutdown)
    );
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Permanent, Reason::error("boom")).await,
        Some(Reason::error("boom"))
    );
}

#[tokio::test]
async fn transient_consumers_stop_only_on_abnormal_reasons() {
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Transient, Reason::Normal).await,
        None
    );
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Transient, Reason::Shutdown).await,
        None
    );
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Transient, Reason::error("boom")).await,
        Some(Reason::error("boom"))
    );
}

#[tokio::test]
async fn temporary_consumers_keep_running() {
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Temporary, Reason::Normal).await,
        None
    );
    assert_eq!(
        consumer_after_producer_stops(CancelMode::Temporary, Reason::error("boom")).await,
        None
    );
}

#[tokio::test]
async fn a_consumer_cancel_is_confirmed_and_the_mode_applies() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Transient))
        .await
        .unwrap();
    c.cancel(sub, Reason::Normal).unwrap();
    c.cancel(sub, Reason::Normal).unwrap();
    eventually(|| log.lock().iter().any(|s| matches!(s, Seen::Cancelled(..)))).await;
    let _ = c.stats().await;
    let cancels = log
        .lock()
        .iter()
        .filter(|s| matches!(s, Seen::Cancelled(..)))
        .count();
    assert_eq!(cancels, 1, "cancel is idempotent");
    assert!(c.is_running(), "transient + normal keeps the consumer");
    assert!(
        p.is_running(),
        "producers never stop because consumers leave"
    );
    assert!(p.stats().await.unwrap().subscriptions.is_empty());
    // Asking on the cancelled subscription is a no-op.
    c.ask(sub, 10).unwrap();
    let _ = c.stats().await;
    assert_eq!(p.stats().await.unwrap().events_out, 0);
}

#[tokio::test]
async fn cancelling_a_permanent_subscription_stops_the_consumer() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, _log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.cancel(sub, Reason::error("done with it")).unwrap();
    assert_eq!(c.wait().await, Reason::error("done with it"));
    assert!(p.is_running());
}

#[tokio::test]
async fn a_stopping_consumer_cancels_its_subscriptions() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, _log) = Recorder::<u64>::manual();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    assert_eq!(p.stats().await.unwrap().subscriptions.len(), 1);
    c.stop(Reason::Shutdown).await.unwrap();
    // The consumer told the producer before it finished stopping.
    let stats = p.stats().await.unwrap();
    assert!(stats.subscriptions.is_empty());
    assert!(p.is_running());
}

#[tokio::test]
async fn termination_flows_downstream_through_a_producer_consumer() {
    let p = producer(from_iter(1..=7_u64)).start().unwrap();
    let pc = producer_consumer(Doubler).start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    pc.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.subscribe_to(&pc, SubscribeOptions::new()).await.unwrap();
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(pc.wait().await, Reason::Normal);
    assert_eq!(p.wait().await, Reason::Normal);
    assert_eq!(batches(&log).concat(), vec![2, 4, 6, 8, 10, 12, 14]);
}

#[tokio::test]
async fn a_producer_consumer_delivers_queued_events_before_it_stops() {
    let p = producer(from_iter(0..10_u64)).start().unwrap();
    let pc = producer_consumer(Doubler).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&pc, SubscribeOptions::new()).await.unwrap();
    // max_demand above the source's 10 events, so the source sees it ran dry.
    pc.subscribe_to(&p, SubscribeOptions::new().max_demand(20))
        .await
        .unwrap();
    // The source has emitted everything and stopped; the producer-consumer holds
    // the events because its consumer has not asked yet.
    assert_eq!(p.wait().await, Reason::Normal);
    let _ = pc.stats().await;
    assert!(pc.is_running());
    assert_eq!(pc.stats().await.unwrap().queued_in, 10);
    c.ask(sub, 100).unwrap();
    assert_eq!(pc.wait().await, Reason::Normal);
    assert_eq!(c.wait().await, Reason::Normal);
    assert_eq!(
        batches(&log).concat(),
        (0..10).map(|e| e * 2).collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn resubscribing_swaps_producers_without_stopping_a_permanent_consumer() {
    let (first, _) = Counter::new();
    let (second, _) = Counter::new();
    let p1 = producer(first).start().unwrap();
    let p2 = producer(second).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let old = c.subscribe_to(&p1, SubscribeOptions::new()).await.unwrap();
    let new = c
        .resubscribe(old, Reason::Normal, &p2, SubscribeOptions::new())
        .await
        .unwrap();
    assert_ne!(old, new);
    eventually(|| log.lock().iter().any(|s| matches!(s, Seen::Cancelled(..)))).await;
    let _ = c.stats().await;
    assert!(
        c.is_running(),
        "the replaced subscription's cancel mode is not applied"
    );
    assert!(p1.stats().await.unwrap().subscriptions.is_empty());
    c.ask(new, 2).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(log.lock().last(), Some(&Seen::Events(new, vec![0, 1])));
}

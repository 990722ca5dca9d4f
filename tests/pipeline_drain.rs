//! Graceful drain of a whole pipeline, on the paused clock.

mod support;

use std::time::Duration;

use demandflow::{
    CancelMode, DrainOutcome, Pipeline, Reason, SubscribeOptions, consumer, from_iter, producer,
    producer_consumer, push,
};
use support::{Doubler, Recorder, batches};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn draining_delivers_everything_pushed_and_stops_every_stage() {
    let (source, pusher) = push::<u64>(nz(100));
    let p = producer(source).start().unwrap();
    let pc = producer_consumer(Doubler).start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    pc.subscribe_to(&p, SubscribeOptions::new().max_demand(4))
        .await
        .unwrap();
    // Transient: the producer's normal end alone would not stop this consumer.
    c.subscribe_to(
        &pc,
        SubscribeOptions::new()
            .max_demand(4)
            .cancel(CancelMode::Transient),
    )
    .await
    .unwrap();
    for n in 0..50 {
        pusher.send(n).await.unwrap();
    }
    let report = Pipeline::new()
        .with(&p)
        .with(&pc)
        .with(&c)
        .drain(Duration::from_secs(5))
        .await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.undrained_events(), 0);
    assert_eq!(
        batches(&log).concat(),
        (0..50).map(|n| n * 2).collect::<Vec<u64>>()
    );
    for stage in &report.stages {
        assert_eq!(stage.outcome, DrainOutcome::Drained(Reason::Shutdown));
    }
    // New input is refused once draining began.
    assert!(pusher.send(99).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_stage_that_cannot_drain_is_stopped_at_the_deadline_and_reported() {
    let p = producer(from_iter(0..10_u64)).start().unwrap();
    let pc = producer_consumer(Doubler).start().unwrap();
    let (rec, _log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    pc.subscribe_to(&p, SubscribeOptions::new().max_demand(20))
        .await
        .unwrap();
    // A manual consumer that never asks: the producer-consumer cannot deliver.
    c.subscribe_to(&pc, SubscribeOptions::new()).await.unwrap();
    let _ = p.wait().await;
    let report = Pipeline::new()
        .with(&p)
        .with(&pc)
        .with(&c)
        .drain(Duration::from_secs(2))
        .await;
    assert!(!report.is_complete());
    assert_eq!(
        report.stages[0].outcome,
        DrainOutcome::AlreadyStopped(Reason::Normal)
    );
    assert_eq!(
        report.stages[1].outcome,
        DrainOutcome::Stopped {
            buffered: 0,
            queued: 10
        }
    );
    assert_eq!(report.undrained_events(), 10);
    assert!(report.elapsed >= Duration::from_secs(2));
    assert!(!pc.is_running() && !c.is_running());
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_token_starts_the_drain() {
    let p = producer(from_iter(0..u64::MAX)).start().unwrap();
    let (rec, _log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    let token = CancellationToken::new();
    let task = Pipeline::new()
        .with(&p)
        .with(&c)
        .drain_on(token.clone(), Duration::from_secs(1));
    tokio::task::yield_now().await;
    assert!(p.is_running());
    token.cancel();
    let report = task.await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert!(!p.is_running() && !c.is_running());
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

//! Draining: stop the sources, finish and flush everything, acknowledge it,
//! report what a deadline cut off; races between pushes and the drain.

mod support;

use std::sync::Arc;
use std::time::Duration;

use demandflow_messages::{BatchTrigger, Batcher, DummySource, Failure, Processors, Topology};
use support::{Recorder, Tally};
use tokio_util::sync::CancellationToken;

async fn start(handler: Recorder, processors: usize) -> Topology<u64> {
    Topology::builder("drained", handler)
        .source(2, |_| DummySource::new())
        .processors(Processors::new(processors))
        .batcher(support::batcher(100, Duration::from_secs(3600)))
        .start()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_drain_flushes_open_batches_and_acks_everything() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology = start(handler, 2).await;
    let tally = Arc::new(Tally::default());
    // Pushed and drained at once, with no chance to run in between.
    topology
        .push_messages(support::messages(130, &tally))
        .unwrap();
    let report = topology.drain(Duration::from_secs(5)).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.unfinished, 0);
    tally.assert_exactly_once(130);
    assert_eq!(tally.inner.lock().ok.len(), 130);
    let log = log.0.lock();
    let total: usize = log.batches.iter().map(|b| b.0.size).sum();
    assert_eq!(total, 130);
    assert!(
        log.batches
            .iter()
            .any(|b| b.0.trigger == BatchTrigger::Flush)
    );
    assert_eq!(report.metrics.messages_ok, 130);
    assert_eq!(report.metrics.batches_by_timeout, 0);
}

#[tokio::test(start_paused = true)]
async fn pushes_racing_a_drain_are_acked_exactly_once_whatever_the_interleaving() {
    let (mut landed, mut refused) = (0, 0);
    for yields in 0..12 {
        let topology = start(Recorder::default(), 2).await;
        let before = Arc::new(Tally::default());
        let racing = Arc::new(Tally::default());
        topology
            .push_messages(support::messages(50, &before))
            .unwrap();
        let drain = tokio::spawn({
            let topology = topology.clone();
            async move { topology.drain(Duration::from_secs(5)).await }
        });
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        let pushed = topology.push_messages(support::messages(50, &racing));
        let report = drain.await.unwrap();
        // Let stopped stages drop what they held.
        tokio::time::sleep(Duration::from_millis(1)).await;
        before.assert_exactly_once(50);
        assert_eq!(before.inner.lock().ok.len(), 50, "yields {yields}");
        racing.assert_exactly_once(50);
        let racing = racing.inner.lock();
        if pushed.is_ok() {
            // In before the drain: finished by it.
            landed += 1;
            assert_eq!(racing.ok.len(), 50, "yields {yields}");
        } else {
            refused += 1;
            assert_eq!(racing.failed.len(), 50, "yields {yields}");
            assert!(racing.failed.values().all(|f| f.1 == Failure::Dropped));
        }
        assert!(report.stages.is_some());
    }
    // Both sides of the race were taken.
    assert!(
        landed > 0 && refused > 0,
        "{landed} landed, {refused} refused"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_deadline_reports_and_fails_what_could_not_finish() {
    let handler = Recorder {
        batch_delay: Some(Duration::from_secs(10)),
        ..Recorder::default()
    };
    let topology = support::started(
        Topology::builder("slow", handler)
            .source(1, |_| DummySource::new())
            .batcher(Batcher::new("default").batch_size(10)),
    )
    .await;
    let tally = Arc::new(Tally::default());
    topology
        .push_messages(support::messages(35, &tally))
        .unwrap();
    let report = topology.drain(Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(!report.is_complete());
    tally.assert_exactly_once(35);
    let t = tally.inner.lock();
    assert!(t.ok.is_empty(), "the slow handler finished nothing in time");
    assert_eq!(t.failed.len(), 35);
    assert_eq!(report.unfinished, 35, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_token_starts_the_drain() {
    let topology = start(Recorder::default(), 1).await;
    let tally = Arc::new(Tally::default());
    let token = CancellationToken::new();
    let drained = topology.drain_on(token.clone(), Duration::from_secs(5));
    topology
        .push_messages(support::messages(10, &tally))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        tally.inner.lock().ok.is_empty(),
        "the batch waits for its timeout"
    );
    token.cancel();
    let report = drained.await.unwrap();
    assert!(report.is_complete());
    tally.assert_exactly_once(10);
    assert_eq!(tally.inner.lock().ok.len(), 10);
    assert_eq!(report.metrics.batches_by_flush, 1);
}

/// Pushes `n` messages into one source copy whose buffer holds `buffer`, with
/// no chance for any stage to run before the drain, and returns how many
/// were acknowledged as successful and as dropped.
async fn burst(n: u64, buffer: Option<usize>) -> (usize, usize) {
    let mut builder = Topology::builder("burst", Recorder::default())
        .source(1, |_| DummySource::new())
        .processors(Processors::new(1))
        .batcher(support::batcher(1_000, Duration::from_secs(3600)));
    if let Some(buffer) = buffer {
        builder = builder.source_buffer(buffer);
    }
    let topology = builder.start().await.unwrap();
    let tally = Arc::new(Tally::default());
    topology
        .push_messages(support::messages(n, &tally))
        .unwrap();
    let report = topology.drain(Duration::from_secs(5)).await;
    assert!(report.is_complete(), "{report:?}");
    tally.assert_exactly_once(n);
    let t = tally.inner.lock();
    let dropped = t
        .failed
        .values()
        .filter(|(_, why)| matches!(why, Failure::Dropped))
        .count();
    (t.ok.len(), dropped)
}

#[tokio::test(start_paused = true)]
async fn a_source_buffer_as_large_as_the_burst_drops_nothing_the_default_drops_the_excess() {
    // The default buffer (10,000) keeps the newest and drops the rest,
    // acknowledged as failed: a caller bounding pushes by its own admission
    // count must size the buffer to that count.
    let (ok, dropped) = burst(25_000, None).await;
    assert!(dropped > 0, "{ok} ok, {dropped} dropped");
    assert_eq!(ok + dropped, 25_000);
    assert_eq!(burst(25_000, Some(25_000)).await, (25_000, 0));
}

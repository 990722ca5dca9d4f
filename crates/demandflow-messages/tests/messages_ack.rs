//! Acknowledgement: every message exactly once, failures, panics, drops,
//! immediate acks and `handle_failed`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use demandflow_messages::{
    AckRef, Batcher, ChannelAcknowledger, DummySource, Failure, Message, Processors, Topology,
};
use demandflow_runtime::from_iter;
use support::{Recorder, Tally};

fn recorder() -> Recorder {
    Recorder::default()
}

#[tokio::test(start_paused = true)]
async fn a_message_failed_in_a_processor_never_reaches_a_batcher_and_is_acked_failed_once() {
    let handler = Recorder {
        fail: Some(Box::new(|n| n % 3 == 0)),
        ..recorder()
    };
    let log = handler.log.clone();
    let topology = support::started(
        support::dummy(handler)
            .processors(Processors::new(2))
            .batcher(Batcher::new("default").batch_size(10)),
    )
    .await;
    let mut acks = topology.test_messages(0..30);
    let outcome = acks.all().await;
    let mut failed: Vec<u64> = outcome.failed.iter().map(|f| f.0).collect();
    failed.sort_unstable();
    assert_eq!(failed, (0..30).filter(|n| n % 3 == 0).collect::<Vec<_>>());
    for (n, failure) in &outcome.failed {
        assert_eq!(failure, &Failure::Failed(format!("no {n}")));
    }
    assert_eq!(outcome.successful.len(), 20);
    {
        let log = log.0.lock();
        let batched: Vec<u64> = log.batches.iter().flat_map(|b| b.1.clone()).collect();
        assert_eq!(batched.len(), 20);
        assert!(batched.iter().all(|n| n % 3 != 0));
        let mut seen = log.failed_seen.clone();
        seen.sort_unstable();
        assert_eq!(seen, failed, "handle_failed saw each failed message");
    }
    // Nothing more arrives: each message was acknowledged once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(acks.so_far().len(), 30);
}

#[tokio::test(start_paused = true)]
async fn acknowledgements_come_in_groups_not_one_call_per_message() {
    let topology = support::with_batcher(recorder(), Batcher::new("default").batch_size(50)).await;
    let mut acks = topology.test_messages(0..100);
    let outcome = acks.all().await;
    assert_eq!(outcome.successful, (0..100).collect::<Vec<_>>());
    assert_eq!(outcome.calls, 2, "one call per batch");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_processor_fails_its_message_with_the_panic_and_the_topology_keeps_running() {
    let handler = Recorder {
        panic: Some(Box::new(|n| n == 3)),
        ..recorder()
    };
    let topology = support::with_batcher(handler, Batcher::new("default").batch_size(5)).await;
    let mut acks = topology.test_messages(0..10);
    let outcome = acks.all().await;
    assert_eq!(
        outcome.failed,
        vec![(3, Failure::Panicked("boom 3".into()))]
    );
    assert_eq!(outcome.successful.len(), 9);
    let mut more = topology.test_messages(10..15);
    assert_eq!(more.all().await.successful.len(), 5);
    assert_eq!(topology.restarts(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_batch_handler_fails_the_whole_batch_once() {
    let handler = Recorder {
        batch_panic: Some(Box::new(|n| n == 7)),
        ..recorder()
    };
    let topology = support::with_batcher(handler, Batcher::new("default").batch_size(5)).await;
    let mut acks = topology.test_messages(0..15);
    let outcome = acks.all().await;
    let mut failed: Vec<u64> = outcome.failed.iter().map(|f| f.0).collect();
    failed.sort_unstable();
    assert_eq!(failed, vec![5, 6, 7, 8, 9]);
    assert!(
        outcome
            .failed
            .iter()
            .all(|f| f.1 == Failure::Panicked("batch boom".into()))
    );
    assert_eq!(outcome.successful.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn messages_a_batch_handler_drops_are_acked_failed_and_failed_ones_go_through_handle_failed()
{
    let handler = Recorder {
        batch_drop: Some(Box::new(|n| n == 1)),
        batch_fail: Some(Box::new(|n| n == 2 || n == 3)),
        rescue: Some(Box::new(|n| n == 3)),
        ..recorder()
    };
    let log = handler.log.clone();
    let topology = support::with_batcher(handler, Batcher::new("default").batch_size(5)).await;
    let mut acks = topology.test_messages(0..5);
    let outcome = acks.all().await;
    let mut ok = outcome.successful.clone();
    ok.sort_unstable();
    // 3 failed in the batch handler and handle_failed turned it back to ok.
    assert_eq!(ok, vec![0, 3, 4]);
    let mut failed = outcome.failed.clone();
    failed.sort_by_key(|f| f.0);
    assert_eq!(
        failed,
        vec![
            (1, Failure::Dropped),
            (2, Failure::Failed("batch said no".into()))
        ]
    );
    assert_eq!(outcome.calls, 1);
    let mut seen = log.0.lock().failed_seen.clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![2, 3]);
}

#[tokio::test(start_paused = true)]
async fn an_immediately_acked_message_is_acked_once_before_its_batch() {
    let handler = Recorder {
        ack_now: Some(Box::new(|n| n == 0)),
        batch_fail: Some(Box::new(|n| n == 0)),
        ..recorder()
    };
    let log = handler.log.clone();
    let topology =
        support::with_batcher(handler, support::batcher(100, Duration::from_secs(10))).await;
    let mut acks = topology.test_messages(0..3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = acks.so_far();
    assert_eq!(early.successful, vec![0]);
    assert!(log.0.lock().batches.is_empty(), "the batch is still open");
    let outcome = acks.all().await;
    // The batch handler failed 0 later, but 0 had opted out of later acks.
    assert_eq!(outcome.successful, vec![0, 1, 2]);
    assert!(outcome.failed.is_empty());
    assert_eq!(log.0.lock().batches[0].1, vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn without_batchers_processors_ack_and_a_finite_source_runs_to_the_end() {
    let tally = Arc::new(Tally::default());
    let messages = support::messages(1_000, &tally);
    let messages = parking_lot::Mutex::new(Some(messages));
    let topology = support::started(
        Topology::builder("t", recorder())
            .source(1, move |_| {
                from_iter(messages.lock().take().unwrap_or_default())
            })
            .processors(Processors::new(3).max_demand(50)),
    )
    .await;
    topology.wait().await;
    tally.assert_exactly_once(1_000);
    assert_eq!(tally.inner.lock().ok.len(), 1_000);
    assert_eq!(topology.metrics().messages_ok, 1_000);
}

#[tokio::test(start_paused = true)]
async fn a_finite_source_with_two_copies_flushes_its_last_batches_at_the_end() {
    let tally = Arc::new(Tally::default());
    let halves = support::halves(250, &tally);
    let handler = recorder();
    let log = handler.log.clone();
    let topology = support::started(
        Topology::builder("t", handler)
            .source(2, move |i| from_iter(std::mem::take(&mut halves.lock()[i])))
            .processors(Processors::new(2))
            .batcher(support::batcher(100, Duration::from_secs(3600))),
    )
    .await;
    topology.wait().await;
    tally.assert_exactly_once(250);
    let log = log.0.lock();
    let sizes: Vec<usize> = log.batches.iter().map(|b| b.0.size).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let m = topology.metrics();
    assert_eq!((m.batches_by_size, m.batches_by_flush), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn stopping_a_topology_acks_what_it_held_as_failed() {
    let tally = Arc::new(Tally::default());
    let topology =
        support::with_batcher(recorder(), support::batcher(100, Duration::from_secs(60))).await;
    topology
        .push_messages(support::messages(30, &tally))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    topology.stop().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    tally.assert_exactly_once(30);
    let t = tally.inner.lock();
    assert!(t.ok.is_empty());
    assert!(t.failed.values().all(|f| f.1 == Failure::Shutdown));
    assert_eq!(t.calls, 1, "the open batch is acknowledged as one group");
    drop(t);
    assert!(
        topology
            .push_messages(support::messages(1, &tally))
            .is_err()
    );
}

#[test]
fn a_dropped_ack_ref_acks_failed_and_a_noop_one_does_nothing() {
    let (acknowledger, mut rx) = ChannelAcknowledger::new();
    drop(Message::new(1_u8, AckRef::new(acknowledger, 9)));
    let ack = rx.try_recv().unwrap();
    assert_eq!(ack.failed, vec![(9, Failure::Dropped)]);
    assert!(ack.successful.is_empty());
    drop(Message::new(1_u8, AckRef::noop()));
}

#[tokio::test(start_paused = true)]
async fn pushes_with_one_key_keep_their_order_across_source_copies() {
    let tally = Arc::new(Tally::default());
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology = support::started(
        Topology::builder("t", handler)
            .source(2, |_| DummySource::new())
            .processors(Processors::new(1).max_demand(10)),
    )
    .await;
    // A long push, then a short one with the same key: the short one waits
    // behind the long one in the same copy. (Round robin, it would go to the
    // other copy and reach the processor after the first 10.)
    let mut all = support::messages(1_001, &tally);
    let last = all.split_off(1_000);
    topology.push_messages_by_key(7, all).unwrap();
    topology.push_messages_by_key(7, last).unwrap();
    topology.drain(Duration::from_secs(5)).await;
    tally.assert_exactly_once(1_001);
    let handled: Vec<u64> = log.0.lock().handled.iter().map(|h| h.0).collect();
    assert_eq!(handled, (0..1_001).collect::<Vec<_>>());
}

//! The sender against the recording sink, under tokio's paused clock: batch
//! sizes and order, the in-flight bound, the registry, back-pressure, retries
//! and shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use analytics::{
    Analytics, BuildError, Event, Numbered, Record, RecordError, Recorder, RecordingSink,
    TryRecordError, record_numbered,
};

fn decode(records: &[Record]) -> Vec<Numbered> {
    records
        .iter()
        .map(|r| Numbered::decode(&r.data).expect("a Numbered record"))
        .collect()
}

fn n(n: u64) -> Numbered {
    Numbered { source: 0, n }
}

/// Lets every task that can run, run, without moving the paused clock far.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn five_records_with_batch_size_five_make_exactly_one_batch() {
    let sink = Arc::new(RecordingSink::new());
    let analytics = Analytics::builder()
        .batch_size(5)
        .build(sink.clone())
        .unwrap();
    for i in 1..=5 {
        analytics.record(n(i)).await.unwrap();
    }
    settle().await; // well within the 1 s interval: the batch went because it was full
    let batches = sink.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, "numbered");
    assert_eq!(decode(&batches[0].1), (1..=5).map(n).collect::<Vec<_>>());
    assert!(analytics.shutdown().await.is_complete());
    assert_eq!(sink.batches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn five_tasks_of_ten_thousand_deliver_fifty_thousand_within_the_bounds() {
    const TASKS: u32 = 5;
    const EACH: u64 = 10_000;
    let sink = Arc::new(RecordingSink::new().latency(Duration::from_millis(10)));
    let analytics = Analytics::builder()
        .batch_size(100)
        .max_in_flight(8)
        .build(sink.clone())
        .unwrap();
    record_numbered(&analytics, TASKS, EACH).await;
    let report = analytics.shutdown().await;
    assert!(report.is_complete(), "{report:?}");

    let batches = sink.batches();
    let mut seen = HashSet::new();
    for (_, batch) in &batches {
        assert!(
            !batch.is_empty() && batch.len() <= 100,
            "batch of {}",
            batch.len()
        );
        let batch = decode(batch);
        for record in &batch {
            assert!(seen.insert(*record), "{record:?} delivered twice");
        }
        // FIFO within a batch: each task's records in the order it recorded them.
        for source in 0..TASKS {
            let ns: Vec<u64> = batch
                .iter()
                .filter(|r| r.source == source)
                .map(|r| r.n)
                .collect();
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "out of order: {ns:?}");
        }
    }
    assert_eq!(seen.len(), (TASKS as u64 * EACH) as usize);
    // The sink saw sends overlap, and never more than the bound.
    assert_eq!(sink.max_in_flight(), 8);
    assert_eq!(report.metrics.records_sent, TASKS as u64 * EACH);
    assert_eq!(report.metrics.batches_sent, batches.len() as u64);
    assert_eq!(report.metrics.records_failed, 0);
}

#[tokio::test(start_paused = true)]
async fn one_send_in_flight_delivers_batches_in_the_order_records_were_made() {
    let sink = Arc::new(RecordingSink::new().latency(Duration::from_millis(5)));
    let analytics = Analytics::builder()
        .batch_size(100)
        .max_in_flight(1)
        .build(sink.clone())
        .unwrap();
    for i in 0..1_000 {
        analytics.record(n(i)).await.unwrap();
    }
    analytics.shutdown().await;
    assert!(sink.batches().iter().all(|(_, b)| b.len() == 100));
    assert_eq!(
        decode(&sink.records()),
        (0..1_000).map(n).collect::<Vec<_>>()
    );
    assert_eq!(sink.max_in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_does_not_fill_goes_one_interval_after_its_first_record() {
    let sink = Arc::new(RecordingSink::new());
    let analytics = Analytics::builder()
        .interval(Duration::from_secs(1))
        .build(sink.clone())
        .unwrap();
    for i in 0..3 {
        analytics.record(n(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(990)).await;
    assert!(sink.batches().is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(decode(&sink.records()), (0..3).map(n).collect::<Vec<_>>());
    analytics.shutdown().await;
}

/// A second event type, with a stream of its own.
#[derive(Debug, PartialEq)]
struct Signup(u32);

impl Event for Signup {
    const STREAM: &'static str = "signups";
    fn partition_key(&self) -> String {
        String::new()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn records_buffered_at_shutdown_are_delivered() {
    let sink = Arc::new(RecordingSink::new());
    let analytics = Analytics::builder()
        .interval(Duration::from_secs(3600))
        .stream_prefix("test:")
        .build(sink.clone())
        .unwrap();
    for i in 0..42 {
        analytics.record(n(i)).await.unwrap();
    }
    for i in 0..7 {
        analytics.record(Signup(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        sink.batches().is_empty(),
        "nothing is due before the interval"
    );

    let report = analytics.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.streams.len(), 2);
    assert_eq!(report.metrics.records_sent, 49);
    let mut batches = sink.batches();
    batches.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].0, "test:numbered");
    assert_eq!(decode(&batches[0].1), (0..42).map(n).collect::<Vec<_>>());
    assert_eq!(batches[1].0, "test:signups");
    assert_eq!(batches[1].1.len(), 7);

    // Shut down: new records are refused and handed back.
    assert_eq!(
        analytics.record(Signup(8)).await,
        Err(RecordError(Signup(8)))
    );
    assert!(matches!(
        analytics.try_record(Signup(9)),
        Err(TryRecordError::Closed(Signup(9)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_records_start_exactly_one_pipeline() {
    let sink = Arc::new(RecordingSink::new());
    let analytics = Analytics::new(sink.clone());
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (analytics, start) = (analytics.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                analytics.record(Signup(i)).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(analytics.metrics().pipelines, 1);
    let report = analytics.shutdown().await;
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.metrics.records_sent, 16);
    assert_eq!(sink.batches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_pipeline_makes_record_wait_and_try_record_refuse() {
    let sink = Arc::new(RecordingSink::new().closed());
    let analytics = Analytics::builder()
        .batch_size(1)
        .max_in_flight(1)
        .capacity(10)
        .build(sink.clone())
        .unwrap();
    let recorder: Recorder<Numbered> = analytics.recorder().unwrap();
    // The stages take what they have demand for; then the queue fills.
    let mut accepted = 0;
    let refused = loop {
        match recorder.try_record(n(accepted)) {
            Ok(()) => accepted += 1,
            Err(TryRecordError::Full(event)) => break event,
            Err(e) => panic!("{e:?}"),
        }
        settle().await;
        assert!(accepted < 1_000, "memory is not bounded");
    };
    assert_eq!(refused, n(accepted));
    assert!(accepted >= 10, "the queue alone holds 10");
    // `record` waits for room rather than refusing.
    let waiting = tokio::time::timeout(Duration::from_secs(5), recorder.record(n(accepted)));
    assert!(
        waiting.await.is_err(),
        "record returned while the pipeline was full"
    );

    sink.open();
    recorder.record(n(accepted)).await.unwrap();
    let report = analytics.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        decode(&sink.records()),
        (0..=accepted).map(n).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_send_is_retried_with_the_same_records() {
    let sink = Arc::new(RecordingSink::new().fail_first(2));
    let analytics = Analytics::builder()
        .batch_size(5)
        .retries(5)
        .build(sink.clone())
        .unwrap();
    for i in 0..5 {
        analytics.record(n(i)).await.unwrap();
    }
    let report = analytics.shutdown().await;
    assert!(report.is_complete());
    assert_eq!(sink.attempts(), 3);
    assert_eq!(report.metrics.send_retries, 2);
    assert_eq!(decode(&sink.records()), (0..5).map(n).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_send_that_keeps_failing_is_given_up_and_counted() {
    let sink = Arc::new(RecordingSink::new().fail_first(u64::MAX));
    let analytics = Analytics::builder()
        .batch_size(5)
        .retries(2)
        .build(sink.clone())
        .unwrap();
    for i in 0..5 {
        analytics.record(n(i)).await.unwrap();
    }
    let report = analytics.shutdown().await;
    assert!(!report.is_complete());
    assert_eq!(sink.attempts(), 3, "the first attempt and 2 retries");
    assert_eq!(report.metrics.batches_failed, 1);
    assert_eq!(report.metrics.records_failed, 5);
    assert_eq!(report.metrics.records_sent, 0);
}

#[test]
fn the_builder_refuses_settings_that_cannot_work() {
    let build = |b: analytics::AnalyticsBuilder| b.build(RecordingSink::new()).map(drop);
    assert!(build(Analytics::builder()).is_ok());
    for bad in [
        Analytics::builder().batch_size(0),
        Analytics::builder().max_in_flight(0),
        Analytics::builder().capacity(0),
        Analytics::builder().interval(Duration::ZERO),
    ] {
        assert!(matches!(build(bad), Err(BuildError { .. })));
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Analytics<RecordingSink>>();
    send_sync::<Analytics<analytics::RedisStreamsSink>>();
    send_sync::<Analytics<analytics::NullSink>>();
    send_sync::<Recorder<Numbered>>();
    send_sync::<RecordError<Numbered>>();
    send_sync::<TryRecordError<Numbered>>();
    send_sync::<analytics::ShutdownReport>();
}

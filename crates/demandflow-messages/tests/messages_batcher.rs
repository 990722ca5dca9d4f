//! Batchers: size, timeout and flush triggers, exact numbers on the paused clock.

mod support;

use std::time::Duration;

use demandflow_messages::{BatchKey, BatchTrigger, Batcher, Processors};
use support::Recorder;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn two_hundred_fifty_messages_make_two_full_batches_and_one_timed_out() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology = support::started(
        support::dummy(handler)
            .processors(Processors::new(2))
            .batcher(support::batcher(100, Duration::from_secs(1))),
    )
    .await;
    let t0 = Instant::now();
    let mut acks = topology.test_messages(0..250);
    let outcome = acks.all().await;
    assert_eq!(outcome.successful.len(), 250);
    assert!(outcome.failed.is_empty());

    let log = log.0.lock();
    let batches: Vec<(usize, BatchTrigger, Duration)> = log
        .batches
        .iter()
        .map(|(info, data, at)| {
            assert_eq!(info.size, data.len());
            assert_eq!(&*info.batcher, "default");
            assert_eq!(info.batch_key, BatchKey::Default);
            (info.size, info.trigger, *at - t0)
        })
        .collect();
    assert_eq!(
        batches,
        vec![
            (100, BatchTrigger::Size, Duration::ZERO),
            (100, BatchTrigger::Size, Duration::ZERO),
            (50, BatchTrigger::Timeout, Duration::from_secs(1)),
        ]
    );
    let m = topology.metrics();
    assert_eq!(
        (m.batches_by_size, m.batches_by_timeout, m.batches_by_flush),
        (2, 1, 0)
    );
    assert_eq!((m.messages_ok, m.messages_failed, m.in_flight), (250, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_timeout_runs_from_the_first_message_and_later_ones_do_not_reset_it() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology =
        support::with_batcher(handler, support::batcher(100, Duration::from_secs(1))).await;
    let t0 = Instant::now();
    let mut first = topology.test_messages(0..40);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = topology.test_messages(40..50);
    assert_eq!(first.all().await.successful.len(), 40);
    assert_eq!(second.all().await.successful.len(), 10);
    let log = log.0.lock();
    assert_eq!(log.batches.len(), 1);
    let (info, data, at) = &log.batches[0];
    assert_eq!((info.size, info.trigger), (50, BatchTrigger::Timeout));
    assert_eq!(data, &(0..50).collect::<Vec<_>>());
    assert_eq!(*at - t0, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn batches_are_per_key_and_each_key_has_its_own_timer() {
    let handler = Recorder {
        key: Some(Box::new(|n| n % 3)),
        ..Recorder::default()
    };
    let log = handler.log.clone();
    let topology =
        support::with_batcher(handler, support::batcher(4, Duration::from_secs(1))).await;
    let t0 = Instant::now();
    // Keys 0, 1, 2 get 4, 3 and 3 messages: key 0 fills up, the others time out.
    let mut acks = topology.test_messages(0..10);
    assert_eq!(acks.all().await.successful.len(), 10);
    let log = log.0.lock();
    let mut seen: Vec<(u64, Vec<u64>, BatchTrigger, Duration)> = log
        .batches
        .iter()
        .map(|(info, data, at)| (support::key_of(info), data.clone(), info.trigger, *at - t0))
        .collect();
    seen.sort_by_key(|b| b.0);
    assert_eq!(
        seen,
        vec![
            (0, vec![0, 3, 6, 9], BatchTrigger::Size, Duration::ZERO),
            (
                1,
                vec![1, 4, 7],
                BatchTrigger::Timeout,
                Duration::from_secs(1)
            ),
            (
                2,
                vec![2, 5, 8],
                BatchTrigger::Timeout,
                Duration::from_secs(1)
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_size_function_can_count_bytes() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology = support::dummy(handler)
        .batcher(
            Batcher::new("default")
                // Full at 10 "bytes", a message of data n weighing n.
                .batch_size_by(|m, bytes| {
                    *bytes += m.data;
                    *bytes >= 10
                })
                .batch_timeout(Duration::from_secs(1)),
        )
        .start()
        .await
        .unwrap();
    let mut acks = topology.test_messages([4, 5, 1, 9, 2, 3]);
    assert_eq!(acks.all().await.successful.len(), 6);
    let log = log.0.lock();
    let seen: Vec<(Vec<u64>, BatchTrigger)> = log
        .batches
        .iter()
        .map(|(info, data, _)| (data.clone(), info.trigger))
        .collect();
    assert_eq!(
        seen,
        vec![
            (vec![4, 5, 1], BatchTrigger::Size),
            (vec![9, 2], BatchTrigger::Size),
            (vec![3], BatchTrigger::Timeout),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_message_can_flush_its_batch_and_a_test_batch_is_one_batch() {
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology =
        support::with_batcher(handler, support::batcher(100, Duration::from_secs(60))).await;
    let t0 = Instant::now();
    let mut acks = topology.test_batch([7, 8, 9]);
    let outcome = acks.all().await;
    assert_eq!(outcome.successful, vec![0, 1, 2]);
    assert_eq!(outcome.calls, 1, "one acknowledgement call for the batch");
    let log = log.0.lock();
    assert_eq!(log.batches.len(), 1);
    let (info, data, at) = &log.batches[0];
    assert_eq!((info.size, info.trigger), (3, BatchTrigger::Flush));
    assert_eq!(data, &vec![7, 8, 9]);
    assert_eq!(*at, t0);
}

#[tokio::test(start_paused = true)]
async fn messages_go_to_the_batcher_they_name() {
    struct Route(support::Log);
    impl demandflow_messages::MessageHandler<u64> for Route {
        async fn handle_message(&self, message: &mut demandflow_messages::Message<u64>) {
            match message.data % 3 {
                0 => message.put_batcher("even"),
                1 => message.put_batcher("odd"),
                _ => message.put_batcher("nowhere"),
            }
        }
        async fn handle_batch(
            &self,
            messages: Vec<demandflow_messages::Message<u64>>,
            info: &demandflow_messages::BatchInfo,
        ) -> Vec<demandflow_messages::Message<u64>> {
            let data = messages.iter().map(|m| m.data).collect();
            self.0
                .0
                .lock()
                .batches
                .push((info.clone(), data, Instant::now()));
            messages
        }
    }
    let log = support::Log::default();
    let topology = support::started(
        support::dummy(Route(log.clone()))
            .batcher(Batcher::new("even").batch_size(2))
            .batcher(Batcher::new("odd").batch_size(2)),
    )
    .await;
    let mut acks = topology.test_messages(0..6);
    let outcome = acks.all().await;
    assert_eq!(outcome.successful.len(), 4);
    let failed: Vec<u64> = outcome.failed.iter().map(|f| f.0).collect();
    assert_eq!(failed, vec![2, 5]);
    assert!(
        outcome
            .failed
            .iter()
            .all(|f| f.1 == demandflow_messages::Failure::UnknownBatcher("nowhere".into()))
    );
    let log = log.0.lock();
    let mut seen: Vec<(String, Vec<u64>)> = log
        .batches
        .iter()
        .map(|(info, data, _)| (info.batcher.to_string(), data.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("even".to_owned(), vec![0, 3]),
            ("odd".to_owned(), vec![1, 4])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_open_keys_share_one_timer_task() {
    let handler = Recorder {
        key: Some(Box::new(|n| n)),
        ..Recorder::default()
    };
    let log = handler.log.clone();
    let topology = support::started(
        support::dummy(handler)
            .processors(Processors::new(1).max_demand(1_000))
            .batcher(support::batcher(100, Duration::from_secs(1))),
    )
    .await;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let t0 = Instant::now();
    let mut acks = topology.test_messages(0..10_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        acks.so_far().is_empty(),
        "every batch is open, waiting for its timeout"
    );
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tasks,
        "no task per open batch"
    );
    assert_eq!(acks.all().await.successful.len(), 10_000);
    let log = log.0.lock();
    assert_eq!(log.batches.len(), 10_000);
    assert!(log.batches.iter().all(|(info, _, at)| info.size == 1
        && info.trigger == BatchTrigger::Timeout
        && *at - t0 == Duration::from_secs(1)));
}

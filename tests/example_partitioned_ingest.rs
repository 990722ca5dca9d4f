//! The `partitioned_ingest` example, run on the paused clock: every event is
//! counted exactly once, by the partition of its id, and empty partitions log
//! nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use demandflow::key_partition;
use partitioned_ingest::{
    Config, Counts, Flush, Ingest, IngestMsg, PARTITIONS, fixtures, generate, run,
};
use tokio::time::sleep;

/// The partition an id routes to.
fn owner(id: &str) -> usize {
    key_partition(id, PARTITIONS)
}

fn counts(pairs: &[(&str, u64)]) -> Counts {
    pairs.iter().map(|&(id, n)| (id.to_owned(), n)).collect()
}

#[tokio::test(start_paused = true)]
async fn all_100_000_events_are_counted_once_each_id_by_its_own_partition() {
    let report = run(Config::default()).await;

    assert_eq!(report.sent, 100_000);
    assert_eq!(report.counted(), 100_000);
    assert!(report.max_in_flight <= 2_000);
    assert!(report.flushes.iter().all(|f| !f.counts.is_empty()));
    for flush in &report.flushes {
        for id in flush.counts.keys() {
            assert_eq!(
                owner(id),
                flush.partition,
                "id {id} flushed by the wrong partition"
            );
        }
    }
    // The counts per id are exactly what the seeded generator sent.
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for event in generate(100_000, 42) {
        *sent.entry(event.id).or_insert(0) += 1;
    }
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for flush in &report.flushes {
        for (id, n) in &flush.counts {
            *counted.entry(id.clone()).or_insert(0) += n;
        }
    }
    assert_eq!(counted, sent);
    assert_eq!(report.check(), Ok(()));
    let json = report.result_json();
    assert!(json.starts_with("{\"example\":\"partitioned_ingest\",\"ok\":true,\"events_sent\":100000,\"events_counted\":100000,"));
}

#[tokio::test(start_paused = true)]
async fn each_second_every_partition_with_counts_flushes_them_and_empty_ones_log_nothing() {
    let ingest = Ingest::start(Duration::from_secs(1));
    let send = |id: &str| {
        let event = fixtures()
            .into_iter()
            .find(|e| e.id == id)
            .expect("a fixture id");
        let partitions = ingest.partitions.clone();
        async move {
            let partition = partitions.partition_of(event.id.as_str());
            partitions
                .call(partition, IngestMsg::Count(event))
                .await
                .unwrap();
        }
    };
    for id in ["1", "1", "6", "1"] {
        send(id).await;
    }
    sleep(Duration::from_millis(1_500)).await;
    let mut first = ingest.flushes();
    first.sort_by_key(|f| f.partition);
    let mut expected = vec![
        Flush {
            partition: owner("1"),
            at: Duration::from_secs(1),
            counts: counts(&[("1", 3)]),
        },
        Flush {
            partition: owner("6"),
            at: Duration::from_secs(1),
            counts: counts(&[("6", 1)]),
        },
    ];
    expected.sort_by_key(|f| f.partition);
    assert_ne!(owner("1"), owner("6"));
    assert_eq!(first, expected);

    // A second with nothing sent: nothing logged.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(ingest.flushes().len(), 2);

    send("3").await;
    sleep(Duration::from_secs(1)).await;
    let flushes = ingest.flushes();
    assert_eq!(flushes.len(), 3);
    assert_eq!(
        flushes[2],
        Flush {
            partition: owner("3"),
            at: Duration::from_secs(3),
            counts: counts(&[("3", 1)]),
        }
    );
    // The last flush on finishing finds every partition empty.
    assert_eq!(ingest.finish().await.len(), 3);
}

#[test]
fn the_generator_is_deterministic_and_picks_every_fixture() {
    let a: Vec<String> = generate(1_000, 7).map(|e| e.id).collect();
    let b: Vec<String> = generate(1_000, 7).map(|e| e.id).collect();
    assert_eq!(a, b);
    for id in ["1", "2", "3", "4", "5", "6"] {
        assert!(a.iter().any(|x| x == id), "id {id} never picked");
    }
}

#[test]
fn options_come_from_the_arguments() {
    let config = Config::from_env_and_args(
        [
            "--events",
            "500",
            "--flush-ms",
            "10",
            "--max-in-flight",
            "50",
        ]
        .map(String::from),
    )
    .unwrap();
    assert_eq!(
        (config.events, config.flush_every, config.max_in_flight),
        (500, Duration::from_millis(10), 50)
    );
    let err = Config::from_env_and_args(["--flush-ms", "0"].map(String::from)).unwrap_err();
    assert_eq!(err, "flush-ms must be at least 1");
}

//! The Kafka source and sink on librdkafka's in-process mock cluster:
//! consumer groups, commits and rebalances without a broker to install.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use demandflow_kafka::{
    BuildSourceError, FailurePolicy, KafkaRecord, KafkaSink, KafkaSource, KafkaSourceBuilder,
    partition_of,
};
use demandflow_messages::{BatchInfo, Batcher, Message, MessageHandler, Processors, Topology};
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use support::{Cluster, cluster, committed, eventually, produce};
use tokio::sync::Semaphore;

/// A record's place: (partition, offset).
type At = (i32, i64);

/// Records every record it handles, in order; fails `fail`; holds `gate`
/// until the semaphore gives a permit; takes a permit of `permits` (if set)
/// before each record.
#[derive(Clone, Default)]
struct Record {
    seen: Arc<Mutex<Vec<At>>>,
    fail: Option<At>,
    gate: Option<(At, Arc<Semaphore>)>,
    permits: Option<Arc<Semaphore>>,
}

impl Record {
    fn seen(&self) -> Vec<At> {
        self.seen.lock().clone()
    }
}

impl MessageHandler<KafkaRecord> for Record {
    async fn handle_message(&self, message: &mut Message<KafkaRecord>) {
        let at = (message.data.partition, message.data.offset);
        if let Some(permits) = &self.permits {
            if let Ok(permit) = permits.acquire().await {
                permit.forget();
            }
        }
        if let Some((gated, gate)) = &self.gate {
            if *gated == at {
                let _ = gate.acquire().await;
            }
        }
        self.seen.lock().push(at);
        if self.fail == Some(at) {
            message.fail("told to fail");
        }
    }
}

const TOPIC: &str = "jobs";

/// A source on [`TOPIC`] in `group`, quick to rebalance, with `tune` applied.
async fn source(
    cluster: &Cluster,
    group: &str,
    name: &str,
    tune: impl FnOnce(KafkaSourceBuilder<KafkaRecord>) -> KafkaSourceBuilder<KafkaRecord>,
) -> KafkaSource<KafkaRecord> {
    let builder = KafkaSource::builder(&cluster.brokers, [TOPIC], group)
        .consumer(name)
        .max_batch(100.try_into().unwrap())
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "500");
    tune(builder).build().await.unwrap()
}

/// A mock cluster whose [`TOPIC`] has `partitions` partitions holding
/// records `0..count`, and a source on it in consumer group `group`.
async fn filled(partitions: i32, count: u64, group: &str) -> (Cluster, KafkaSource<KafkaRecord>) {
    let cluster = cluster(TOPIC, partitions);
    produce(&cluster.brokers, TOPIC, partitions, count);
    let source = source(&cluster, group, group, |b| b).await;
    (cluster, source)
}

/// Runs `handler` over `copies` copies of `source`, a partition per processor.
async fn run(
    name: &str,
    handler: Record,
    source: &KafkaSource<KafkaRecord>,
    copies: usize,
    processors: Processors<KafkaRecord>,
) -> Topology<KafkaRecord> {
    let s = source.clone();
    Topology::builder(name, handler)
        .source(copies, move |i| s.copy(i))
        .processors(processors)
        .start()
        .await
        .unwrap()
}

/// Waits until `group`'s commits are `expected`, checking on the way that no
/// commit is ever beyond it.
async fn committed_reaches(cluster: &Cluster, group: &str, partitions: i32, expected: &[i64]) {
    eventually("the commits to reach their end", || {
        let now = committed(&cluster.brokers, group, TOPIC, partitions);
        for (p, (&c, &e)) in now.iter().zip(expected).enumerate() {
            assert!(c <= e, "partition {p} committed {c}, beyond {e}");
        }
        now == expected
    })
    .await;
}

/// Drains `topology` and waits until every copy of `source` has left the group.
async fn leave(topology: Topology<KafkaRecord>, source: &KafkaSource<KafkaRecord>, copies: u64) {
    topology.drain(Duration::from_secs(1)).await;
    eventually("the consumers to close", || {
        source.metrics().closed == copies
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_handled_in_partition_order_and_committed() {
    let (cluster, source) = filled(3, 3000, "all").await;
    let handler = Record::default();
    let topology = run(
        "all",
        handler.clone(),
        &source,
        2,
        Processors::new(3).partition_by(partition_of),
    )
    .await;
    eventually("every record acknowledged", || {
        source.metrics().acked == 3000
    })
    .await;
    committed_reaches(&cluster, "all", 3, &[1000, 1000, 1000]).await;

    let seen = handler.seen();
    let mut by_partition: HashMap<i32, Vec<i64>> = HashMap::new();
    for (p, o) in &seen {
        by_partition.entry(*p).or_default().push(*o);
    }
    for p in 0..3 {
        let offsets = &by_partition[&p];
        // No rebalance happened, so nothing was delivered twice, and the
        // processor of a partition saw its records in offset order.
        assert_eq!(offsets, &(0..1000).collect::<Vec<_>>(), "partition {p}");
    }
    let metrics = source.metrics();
    assert_eq!((metrics.failed, metrics.held, metrics.stale), (0, 0, 0));
    leave(topology, &source, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_bounded_by_demand_plus_max_batch() {
    let (cluster, source) = filled(1, 3000, "bound").await;
    // Every record waits at the gate, so demand stops at the processor's first ask.
    let gate = Arc::new(Semaphore::new(0));
    let handler = Record {
        permits: Some(gate.clone()),
        ..Record::default()
    };
    let topology = run(
        "bound",
        handler.clone(),
        &source,
        1,
        Processors::new(1).max_demand(10),
    )
    .await;
    eventually("the copy to pause, full", || source.metrics().pauses > 0).await;
    // max_batch (100) held beyond a demand of at most two asks of 10: not
    // the 3,000 records the partition has.
    let received = source.metrics().received;
    assert!((100..=120).contains(&received), "received {received}");
    assert_eq!(committed(&cluster.brokers, "bound", TOPIC, 1), vec![-1]);

    // Demand comes back: the copy resumes and finishes.
    gate.add_permits(3000);
    committed_reaches(&cluster, "bound", 1, &[3000]).await;
    assert_eq!(handler.seen().len(), 3000);
    leave(topology, &source, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_is_not_committed_past_and_is_delivered_again() {
    let cluster = cluster(TOPIC, 2);
    produce(&cluster.brokers, TOPIC, 2, 200);
    let source1 = source(&cluster, "fail", "first", |b| b).await;
    let handler = Record {
        fail: Some((0, 50)),
        ..Record::default()
    };
    let topology = run("fail", handler, &source1, 1, Processors::new(2)).await;
    eventually("every record settled", || {
        let m = source1.metrics();
        m.acked + m.failed == 200
    })
    .await;
    // Partition 1 is done; partition 0 stops right before its failed record,
    // though the 49 records after it succeeded.
    committed_reaches(&cluster, "fail", 2, &[50, 100]).await;
    assert_eq!(source1.metrics().held, 1);
    leave(topology, &source1, 1).await;
    assert_eq!(committed(&cluster.brokers, "fail", TOPIC, 2), vec![50, 100]);

    // The next member of the group starts at the failed record.
    let source2 = source(&cluster, "fail", "second", |b| b).await;
    let again = Record::default();
    let topology = run("fail-again", again.clone(), &source2, 1, Processors::new(1)).await;
    committed_reaches(&cluster, "fail", 2, &[100, 100]).await;
    let seen = again.seen();
    assert_eq!(seen.first(), Some(&(0, 50)));
    assert_eq!(seen, (50..100).map(|o| (0, o)).collect::<Vec<_>>());
    leave(topology, &source2, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_past_moves_over_handled_failures_and_malformed_records() {
    let cluster = cluster(TOPIC, 1);
    produce(&cluster.brokers, TOPIC, 1, 100);
    // Every tenth number is "malformed"; the handler fails record 55.
    let source = KafkaSource::builder(&cluster.brokers, [TOPIC], "past")
        .decode(|record| {
            let n: u64 = record.text()?.parse().map_err(|e| format!("{e}"))?;
            if n % 10 == 0 {
                return Err(format!("{n} is a multiple of ten"));
            }
            Ok(record)
        })
        .on_failure(FailurePolicy::CommitPast)
        .build()
        .await
        .unwrap();
    let handler = Record {
        fail: Some((0, 55)),
        ..Record::default()
    };
    let topology = run("past", handler.clone(), &source, 1, Processors::new(2)).await;
    committed_reaches(&cluster, "past", 1, &[100]).await;
    let metrics = source.metrics();
    assert_eq!(
        (metrics.malformed, metrics.failed, metrics.acked),
        (10, 11, 89)
    );
    assert_eq!(metrics.held, 0);
    // The malformed records never reached the handler.
    assert_eq!(handler.seen().len(), 90);
    leave(topology, &source, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_never_runs_ahead_of_an_unacknowledged_record() {
    let (cluster, source) = filled(1, 100, "gate").await;
    let gate = Arc::new(Semaphore::new(0));
    let handler = Record {
        gate: Some(((0, 30), gate.clone())),
        ..Record::default()
    };
    // One record per processor at a time, so the others go past the gated one.
    let topology = run(
        "gate",
        handler.clone(),
        &source,
        1,
        Processors::new(4).max_demand(1),
    )
    .await;
    eventually("every record but the gated one acknowledged", || {
        source.metrics().acked == 99
    })
    .await;
    // The commit reaches the gated record and, checked at every look, never
    // goes past it while it is unacknowledged.
    committed_reaches(&cluster, "gate", 1, &[30]).await;
    assert_eq!(source.metrics().acked, 99);
    assert_eq!(committed(&cluster.brokers, "gate", TOPIC, 1), vec![30]);

    gate.add_permits(1);
    committed_reaches(&cluster, "gate", 1, &[100]).await;
    assert_eq!(handler.seen().len(), 100);
    leave(topology, &source, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_mid_stream_has_its_partitions_finished_by_another() {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: i64 = 1000;
    let cluster = cluster(TOPIC, PARTITIONS);
    produce(&cluster.brokers, TOPIC, PARTITIONS, 4000);

    // Member A may handle 500 records, then blocks with more in flight.
    let permits = Arc::new(Semaphore::new(500));
    let a_handler = Record {
        permits: Some(permits.clone()),
        ..Record::default()
    };
    let quick_revoke =
        |b: KafkaSourceBuilder<KafkaRecord>| b.revoke_timeout(Duration::from_secs(2));
    let a = source(&cluster, "share", "a", quick_revoke).await;
    let a_topology = run("a", a_handler.clone(), &a, 1, Processors::new(2)).await;
    eventually("member A to use its 500 permits", || {
        a_handler.seen.lock().len() == 500
    })
    .await;

    // Member B joins: the partitions are shared out (A's revocation gives up
    // waiting for its blocked records after 2 s).
    let b_handler = Record::default();
    let b = source(&cluster, "share", "b", |b| b).await;
    let b_topology = run("b", b_handler.clone(), &b, 1, Processors::new(2)).await;
    eventually("member B to get records", || b.metrics().received > 0).await;

    // A leaves with records in flight: B must finish every partition.
    leave(a_topology, &a, 1).await;
    permits.close();
    committed_reaches(
        &cluster,
        "share",
        PARTITIONS,
        &[PER_PARTITION; PARTITIONS as usize],
    )
    .await;

    let a_seen: HashSet<At> = a_handler.seen().into_iter().collect();
    let b_seen = b_handler.seen();
    let b_set: HashSet<At> = b_seen.iter().copied().collect();
    for p in 0..PARTITIONS {
        for o in 0..PER_PARTITION {
            assert!(
                a_seen.contains(&(p, o)) || b_set.contains(&(p, o)),
                "record {p}/{o} was never handled"
            );
        }
        // A handled at most 500 records, so each partition's last record
        // was B's work.
        assert!(b_set.contains(&(p, PER_PARTITION - 1)));
    }
    assert_eq!(a.metrics().closed, 1);
    leave(b_topology, &b, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_a_clear_error_from_build() {
    let result = KafkaSource::builder("127.0.0.1:1", [TOPIC], "nobody")
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await;
    match result {
        Err(BuildSourceError::Unreachable { brokers, .. }) => assert_eq!(brokers, "127.0.0.1:1"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// Writes each batch with the sink.
struct Forward(Arc<KafkaSink>);

impl MessageHandler<KafkaRecord> for Forward {
    async fn handle_message(&self, _message: &mut Message<KafkaRecord>) {}

    async fn handle_batch(
        &self,
        messages: Vec<Message<KafkaRecord>>,
        _info: &BatchInfo,
    ) -> Vec<Message<KafkaRecord>> {
        self.0
            .write(messages, |record| {
                (
                    record.key.clone(),
                    record.payload.clone().unwrap_or_default(),
                )
            })
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_acknowledges_records_once_they_are_delivered() {
    let (cluster, source) = filled(2, 500, "copy").await;
    cluster.mock.create_topic("copied", 1, 1).unwrap();
    let sink = Arc::new(
        KafkaSink::connect(&cluster.brokers, "copied", &[])
            .await
            .unwrap(),
    );
    let s = source.clone();
    let topology = Topology::builder("copy", Forward(sink))
        .source(1, move |i| s.copy(i))
        .batcher(Batcher::new("default").batch_size(100))
        .start()
        .await
        .unwrap();
    committed_reaches(&cluster, "copy", 2, &[250, 250]).await;
    // Every source record was acknowledged only after its copy was delivered.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .create()
        .unwrap();
    let (_, high) = reader
        .fetch_watermarks("copied", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high, 500);
    assert_eq!(source.metrics().acked, 500);
    leave(topology, &source, 1).await;
}

//! Shared by the Kafka tests and the connectors bench: a mock cluster with a
//! topic, records produced to it, and what the group has committed.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// librdkafka's in-process mock cluster (one broker) and its bootstrap list.
pub struct Cluster {
    pub mock: MockCluster<'static, DefaultProducerContext>,
    pub brokers: String,
}

/// A mock cluster with `topic` of `partitions` partitions.
pub fn cluster(topic: &str, partitions: i32) -> Cluster {
    let mock = MockCluster::new(1).expect("starting the mock cluster");
    mock.create_topic(topic, partitions, 1)
        .expect("creating the topic");
    let brokers = mock.bootstrap_servers();
    Cluster { mock, brokers }
}

/// Produces records `0..count` (the payload is the number as text) to
/// `topic`; record `n` goes to partition `n % partitions`, so partition `p`
/// holds `p, p + partitions, …` at offsets `0, 1, …`.
pub fn produce(brokers: &str, topic: &str, partitions: i32, count: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Large batches: the mock cluster answers a fetch with one batch per
        // partition, so small batches would make the consumer's reads, not
        // the source, the bottleneck of the bench.
        .set("linger.ms", "100")
        .create()
        .expect("creating the producer");
    for n in 0..count {
        let payload = n.to_string();
        let mut record = BaseRecord::<(), str>::to(topic)
            .payload(&payload)
            .partition((n % partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    // Queue full: let deliveries drain it.
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flushing the producer");
}

/// The offsets `group` has committed for `topic`'s partitions (-1: none).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("creating the offsets reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let tpl = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("reading committed offsets");
    (0..partitions)
        .map(|p| match tpl.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Waits (up to 60 s, then panics naming `what`) until `check` is true.
pub async fn eventually<F>(what: &str, mut check: F)
where
    F: FnMut() -> bool,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Kafka for demandflow's messages layer: a source that reads topics as a
//! member of a consumer group, and a sink that produces to a topic. With them,
//! several processes — on one machine or many — share a topic's partitions,
//! and the partitions of a process that leaves are finished by the others.
//!
//! ```text
//!  topic partitions ──fetch (bounded queues: demand + max_batch)──> KafkaSource copy ──> processors ──> batchers
//!        ▲      ▲                                                                                    │
//!        │      └───── commit: per partition, the contiguous acknowledged prefix ◄──────────────────┘
//!        └──── KafkaSink (idempotent producer; a message is ok once its delivery report is)
//! ```
//!
//! - [`KafkaSource`] runs one group member per copy. It emits each
//!   partition's records in order with `"<topic>/<partition>"` as their batch
//!   key, holds at most `max_batch` records beyond its demand (bounded
//!   queues: it stops taking records, librdkafka's queue fills and it stops
//!   fetching; a copy whose demand stalls pauses its partitions), and commits a
//!   partition's offset only up to its first message not yet acknowledged as
//!   done. On a rebalance it stops emitting the revoked partitions and waits,
//!   up to a timeout, for their in-flight messages before it lets them go.
//! - [`KafkaSink`] produces with idempotence on and returns a message ok only
//!   once its delivery report says the brokers have it.
//!
//! Delivery is **at least once**: a record whose work was done but whose
//! commit did not happen (its process died, or the revocation's wait timed
//! out) is delivered again to the partition's next owner. The guide chapter
//! "Running on more than one machine" explains when to pick Kafka over Redis
//! Streams and how to make a sink idempotent.
//!
//! librdkafka is built from the sources bundled with `rdkafka` (its own
//! `configure` and `make`; a C compiler is all it needs), so no system
//! library is involved. The tests run on librdkafka's in-process mock
//! cluster.
//!
//! ```no_run
//! use demandflow_kafka::{FailurePolicy, KafkaSource, partition_of};
//! use demandflow_messages::{Message, MessageHandler, Processors, Topology};
//!
//! struct Work;
//!
//! impl MessageHandler<u64> for Work {
//!     async fn handle_message(&self, message: &mut Message<u64>) {
//!         // … the work …
//!         let _ = message.data;
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let source = KafkaSource::builder("localhost:9092", ["jobs"], "workers")
//!     .consumer("host-a")
//!     .decode(|record| record.text()?.parse::<u64>().map_err(|e| e.to_string()))
//!     .on_failure(FailurePolicy::HoldCommit)
//!     .build()
//!     .await?;
//! let topology = Topology::builder("jobs", Work)
//!     .source(2, move |i| source.copy(i))
//!     // One partition's messages stay on one processor, in order.
//!     .processors(Processors::new(4).partition_by(partition_of))
//!     .start()
//!     .await?;
//! # drop(topology);
//! # Ok(())
//! # }
//! ```

mod metrics;
mod sink;
mod source;
mod track;

pub use metrics::SourceMetrics;
pub use sink::{ConnectSinkError, KafkaSink, Record};
pub use source::{
    BuildSourceError, FailurePolicy, KafkaRecord, KafkaSource, KafkaSourceBuilder, KafkaStage,
    partition_of,
};

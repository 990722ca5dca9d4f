//! Redis Streams for demandflow's messages layer: a source that reads a stream
//! through a consumer group, and a sink that writes to one. With them, several
//! processes — on one machine or many — share a stream's work, and the work of
//! a process that dies is finished by the others.
//!
//! ```text
//!  XADD ──> stream ──XREADGROUP COUNT=demand──> RedisSource copy ──> processors ──> batchers
//!             ▲  │                                                                     │
//!             │  └──XAUTOCLAIM (entries idle > min_idle, e.g. of a dead process)       │
//!             └──────────────────── XACK (in groups, when a message is ok) ◄───────────┘
//! ```
//!
//! - [`RedisSource`] is a consumer of a consumer group. It asks Redis for no
//!   more entries than its stage was asked for, acknowledges (`XACK`) a message
//!   only when the layer says it succeeded, handles failures by a
//!   [`FailurePolicy`] (leave pending for redelivery, or a dead-letter stream
//!   after N deliveries), claims entries left pending by dead consumers, and
//!   reconnects after errors, counting them in [`SourceMetrics`].
//! - [`RedisSink`] writes a batch of messages with one pipelined round trip of
//!   `XADD`s and returns them ok only once Redis confirmed the write.
//!
//! Delivery is **at least once**: a message whose work was done but whose
//! `XACK` did not reach Redis (its process was killed) is delivered again. The
//! duplicates are bounded by what the process had in flight, and an idempotent
//! sink makes them harmless. The guide chapter "Running on more than one
//! machine" explains the choices; `examples/redis_workers` kills a worker
//! process mid-stream and checks that nothing is lost.
//!
//! ```no_run
//! use demandflow_messages::{BatchInfo, Message, MessageHandler, Processors, Topology};
//! use demandflow_redis::{FailurePolicy, RedisSource};
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
//! let source = RedisSource::builder("redis://127.0.0.1:6379/", "jobs", "workers")
//!     .consumer("host-a")
//!     .decode(|entry| entry.parse::<u64>("n"))
//!     .on_failure(FailurePolicy::dead_letter("jobs:dead", 3))
//!     .build()
//!     .await?;
//! let topology = Topology::builder("jobs", Work)
//!     .source(1, move |i| source.copy(i))
//!     .processors(Processors::new(2).max_demand(500))
//!     .start()
//!     .await?;
//! # drop(topology);
//! # Ok(())
//! # }
//! ```

mod ack;
mod conn;
mod entry;
mod metrics;
mod sink;
mod source;

pub use ack::FailurePolicy;
pub use entry::StreamEntry;
pub use metrics::SourceMetrics;
pub use sink::{ConnectSinkError, RedisSink};
pub use source::{BuildSourceError, RedisSource, RedisSourceBuilder, StartFrom, StreamProducer};

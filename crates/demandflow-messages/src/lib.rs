//! Messages with acknowledgement, batchers and rate limiting, on demandflow stages.

mod ack;
mod batch_handler;
mod batcher;
mod catch;
mod handler;
mod message;
mod metrics;
mod processor;
mod rate;
mod source;
mod testing;
mod topology;

pub use ack::{Ack, AckRef, Acknowledger, ChannelAcknowledger, NoopAcknowledger};
pub use batcher::{BatchFull, BatchSize};
pub use handler::{Batch, BatchInfo, BatchTrigger, MessageHandler};
pub use message::{BatchKey, DEFAULT_BATCHER, Failure, Message, Status};
pub use metrics::MetricsSnapshot;
pub use rate::{RateLimit, RateLimiter};
pub use source::DummySource;
pub use testing::{TestAcks, TestOutcome};
pub use topology::{
    Batcher, Processors, PushError, StartTopologyError, Topology, TopologyBuilder, TopologyDrain,
};

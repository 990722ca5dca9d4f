//! The runtime-free core of [demandflow]: demand accounting, the producer buffer
//! and dispatchers, each a small pure state machine.
//!
//! Nothing here spawns a task or reads a clock, so every rule of the demand
//! protocol (SEMANTICS.md) can be tested with exact numbers, and a custom
//! [`Dispatcher`] can be written and tested without a runtime. The tokio runtime
//! in `demandflow-runtime` drives these machines; most users should depend on the
//! `demandflow` facade instead of this crate.
//!
//! - [`AutoDemand`] and [`split_chunks`]: how a consumer in automatic mode splits
//!   batches and when it asks again.
//! - [`Buffer`]: the bounded FIFO a producer keeps undelivered events in, with info
//!   markers behind them.
//! - [`Dispatcher`]: the interface of dispatchers, and [`DemandDispatcher`], the default.
//! - [`BroadcastDispatcher`]: every event to every consumer, at the pace of the slowest.
//! - [`PartitionDispatcher`]: each event to the one consumer of its partition.
//! - [`Key`] and [`key_partition`]: the one stable key hash that every part
//!   routing by key (dispatcher, partition supervisor, keyed scheduler) uses.
//!
//! [demandflow]: https://docs.rs/demandflow

mod broadcast_dispatcher;
mod buffer;
mod demand;
mod demand_dispatcher;
mod dispatcher;
mod error;
mod id;
mod key;
mod options;
mod partition_dispatcher;
mod reason;
#[cfg(test)]
mod test_support;

pub use broadcast_dispatcher::BroadcastDispatcher;
pub use buffer::Buffer;
pub use demand::{AutoDemand, split_chunks};
pub use demand_dispatcher::DemandDispatcher;
pub use dispatcher::{Deliver, Dispatched, Dispatcher};
pub use error::{ConfigError, SubscribeRefused};
pub use id::{StageId, SubscriptionId};
pub use key::{Hashed, Key, KeyHasher, key_partition};
pub use options::{
    BufferKeep, CancelMode, DEFAULT_BUFFER_SIZE, DEFAULT_MAX_DEMAND, Partition, Selector,
    SubscribeOptions,
};
pub use partition_dispatcher::{
    DEFAULT_PARTITION_QUEUE_CAPACITY, PartitionDispatcher, PartitionDispatcherBuilder,
};
pub use reason::{CancelReason, Reason};

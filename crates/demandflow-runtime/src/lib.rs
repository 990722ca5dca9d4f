//! The tokio runtime of demandflow: stage tasks, handles and subscriptions.
//!
//! Most users depend on the `demandflow` facade, which re-exports this crate and
//! teaches it in its documentation.

mod behaviour;
mod builder;
mod catch;
mod closure;
mod context;
mod engine;
mod error;
mod group;
mod handle;
mod info;
mod pipeline;
mod port;
mod queue;
mod source;
mod stage;
mod stats;
mod stream;

pub use builder::{
    ConsumerBuilder, ProducerBuilder, ProducerConsumerBuilder, consumer, producer,
    producer_consumer,
};
pub use catch::{catch_call, catch_panic, panic_message};
pub use closure::{
    Filter, FilterMap, FlatMap, ForEach, Inspect, Map, filter, filter_map, flat_map, for_each,
    inspect, map,
};
pub use context::{Context, DemandFlow, DemandMode, InfoSender, Peer};
pub use demandflow_core::{
    BroadcastDispatcher, BufferKeep, CancelMode, CancelReason, DemandDispatcher, Dispatcher,
    Partition, PartitionDispatcher, Reason, StageId, SubscribeOptions, SubscriptionId,
};
pub use error::{NotRunning, SendError, StartError, SubscribeError, TrySendError};
pub use handle::{
    AsProducer, ConsumerRef, ProducerConsumerRef, ProducerRef, StageHandle, StageMonitor,
};
pub use info::Info;
pub use pipeline::{DrainOutcome, DrainReport, Pipeline, StageDrain};
pub use source::{IterSource, PushSource, Pusher, StreamSource, from_iter, from_stream, push};
pub use stage::{Consumer, ConsumerContext, Producer, ProducerConsumer};
pub use stats::{StageKind, StageStats, SubscriptionStats};
pub use stream::EventStream;

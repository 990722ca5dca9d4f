//! demandflow: demand-driven, back-pressured dataflow stages for tokio.
//!
//! (The tutorial is being written; see the README.)

pub use demandflow_core::{
    AutoDemand, BroadcastDispatcher, Buffer, BufferKeep, CancelMode, CancelReason, ConfigError,
    DEFAULT_BUFFER_SIZE, DEFAULT_MAX_DEMAND, DEFAULT_PARTITION_QUEUE_CAPACITY, Deliver,
    DemandDispatcher, Dispatched, Dispatcher, Partition, PartitionDispatcher,
    PartitionDispatcherBuilder, Reason, Selector, StageId, SubscribeOptions, SubscribeRefused,
    SubscriptionId, key_partition, split_chunks,
};
pub use demandflow_runtime::{
    AsProducer, Consumer, ConsumerBuilder, ConsumerContext, ConsumerRef, Context, DemandFlow,
    DemandMode, DrainOutcome, DrainReport, EventStream, Info, InfoSender, IterSource, NotRunning,
    Peer, Pipeline, Producer, ProducerBuilder, ProducerConsumer, ProducerConsumerBuilder,
    ProducerConsumerRef, ProducerRef, PushSource, Pusher, SendError, StageDrain, StageHandle,
    StageKind, StageMonitor, StageStats, StartError, StreamSource, SubscribeError,
    SubscriptionStats, TrySendError, consumer, from_iter, from_stream, producer, producer_consumer,
    push,
};
pub use demandflow_supervisor::{
    Children, Restart, StartChildError, Strategy, Supervisor, SupervisorBuilder,
};

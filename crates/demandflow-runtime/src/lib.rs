//! The tokio runtime of demandflow: stage tasks, handles and subscriptions.
//!
//! Most users depend on the `demandflow` facade, which re-exports this crate and
//! teaches it in its documentation. Depend on this crate directly only to build
//! on the runtime alone — a library of stages that should not pull in
//! supervision, the keyed scheduler or the messages layer; its stage traits,
//! builders and handles are the very types the facade re-exports.
//!
//! # Stage lifetime
//!
//! One rule covers every stage, whatever its kind: **a started stage runs until
//! its work ends, it is stopped ([`stop`](ProducerRef::stop), a callback's
//! `ctx.stop`), it is drained ([`Pipeline::drain`]), or it fails.** Dropping
//! handles is none of these. As with `tokio::spawn`, whose task keeps running
//! when its `JoinHandle` is dropped, a pipeline whose last handle is dropped
//! (handles of all its stages and its [`EventStream`]s) is *detached*: it keeps
//! running while it can still do work, and each stage stops by itself once it
//! cannot:
//!
//! - a producer stops (with [`Reason::Shutdown`]) when no consumer is
//!   subscribed to it, since nobody could ever receive its events;
//! - a consumer stops when no producer is left to feed it;
//! - a producer-consumer stops when no consumer is left, or, once no producer is
//!   left, after delivering what it holds.
//!
//! So a pipeline built in a helper function that returns only its output
//! channel delivers everything: a finite source ends normally and that end flows
//! downstream as usual. An endless producer whose consumer stops (say, because
//! the receiver of its output channel was dropped) winds down, stage by stage,
//! and no task is left behind. A pipeline that can still do work forever (an
//! endless source feeding a consumer that never stops) keeps running, like an
//! endless spawned task: stop or drain it through a handle you keep.
//!
//! Nothing is lost silently on the way: a stage that stops with a normal reason
//! while holding events it can no longer deliver (a detached producer left with
//! a full buffer and no consumer, a producer stopped with no consumer to take its
//! buffer) stops with an error reason saying how many, and
//! [`Pipeline::drain`] reports what a stage stopped at its deadline still held.
//! A stage that stops normally through `ctx.stop` delivers its buffered events
//! first (see [`Context::stop`]).
//!
//! ```
//! use demandflow_runtime::{consumer, from_iter, producer, Consumer, ConsumerContext, Reason, SubscribeOptions, SubscriptionId};
//! use tokio::sync::mpsc;
//!
//! struct Forward(mpsc::Sender<u64>);
//! impl Consumer for Forward {
//!     type Event = u64;
//!     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut ConsumerContext) {
//!         for n in events {
//!             if self.0.send(n).await.is_err() {
//!                 ctx.stop(Reason::Normal);
//!                 return;
//!             }
//!         }
//!     }
//! }
//!
//! /// Returns only the output: the handles are dropped here.
//! async fn squares(n: u64) -> mpsc::Receiver<u64> {
//!     let (tx, rx) = mpsc::channel(16);
//!     let source = producer(from_iter((0..n).map(|i| i * i))).start().unwrap();
//!     let sink = consumer(Forward(tx)).start().unwrap();
//!     sink.subscribe_to(&source, SubscribeOptions::new()).await.unwrap();
//!     rx
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut rx = squares(10_000).await;
//! let mut count = 0;
//! while rx.recv().await.is_some() {
//!     count += 1;
//! }
//! assert_eq!(count, 10_000);
//! # }
//! ```
//!
//! The supervisors follow the same rule: the keyed scheduler's and the
//! partition supervisor's workers handle what was sent to them and then end
//! once every handle is gone; a consumer supervisor is a consumer stage like any
//! other.
//!
//! # Diagnostics
//!
//! Every warning the runtime logs names its stage in a `stage` field (the name
//! given to the builder, else its kind and id, like `producer-3`), so it shows
//! with a subscriber filtering at WARN. A warning that can repeat (events lost to
//! a stopped consumer, a full buffer dropping events) is logged at most once a
//! second per stage, with `times` saying how many occurrences it stands for.
//! Dropping an [`EventStream`] early (`take(n)`) is a choice, not a loss, and is
//! not reported.
//!
//! A stage that waits for something that may never come — a producer holding
//! events no consumer is subscribed to take, a partition holding events without a
//! consumer, a consumer never subscribed to any producer, a stage that asked a
//! producer for events and got none — logs one warning after
//! its stall report time (5 seconds unless set with the builder's
//! `stall_report`) and shows the wait in [`StageStats::stall`]. A producer
//! with nothing to do is idle, not stalled, and is never reported; nor is a
//! stage waiting on one, since that is what a consumer of a quiet source does.
//! A stage that asked for events is reported ([`Stall::NoEvents`]) only when
//! the producer it waits on holds events in its buffer and sends none (say, a
//! broadcast held back by a consumer that asks nothing) or has taken no message
//! for the whole stall report time (it is stuck in a callback); as it checks
//! once per stall report time, the report comes between one and two stall
//! report times after the last event arrived.

mod behaviour;
mod builder;
mod call;
mod catch;
mod closure;
mod context;
mod engine;
mod error;
mod exit;
mod fuse;
mod group;
mod handle;
mod info;
mod pipeline;
mod port;
mod queue;
pub mod registry;
mod source;
mod stage;
mod stats;
mod stream;

pub use builder::{
    ConsumerBuilder, ProducerBuilder, ProducerConsumerBuilder, consumer, producer,
    producer_consumer,
};
pub use call::{CallError, HandleCall, Request};
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
pub use fuse::{Fuse, Fused, FusedChain, fuse};
pub use handle::{
    AsProducer, ConsumerRef, ProducerConsumerRef, ProducerRef, StageHandle, StageMonitor,
};
pub use info::Info;
pub use pipeline::{DrainOutcome, DrainReport, Pipeline, StageDrain};
pub use source::{IterSource, PushSource, Pusher, StreamSource, from_iter, from_stream, push};
pub use stage::{Consumer, ConsumerContext, Producer, ProducerConsumer};
pub use stats::{StageKind, StageStats, Stall, SubscriptionStats};
pub use stream::EventStream;

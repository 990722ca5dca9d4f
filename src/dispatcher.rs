//! Dispatchers: how a producer shares its events among its subscriptions.
//!
//! Every producer (and producer-consumer) owns one [`Dispatcher`]; choose it
//! with [`ProducerBuilder::dispatcher`](crate::ProducerBuilder::dispatcher).
//! Which one to reach for:
//!
//! - [`DemandDispatcher`] (the default): **share work**. Each batch goes to the
//!   subscription with the most outstanding demand, so consumers that keep up
//!   get more. Use it for a pool of interchangeable workers.
//! - [`BroadcastDispatcher`]: **every event to every consumer**, at the pace of
//!   the slowest; a subscription may filter what it gets with a `selector`
//!   ([`SubscribeOptions::selector`](crate::SubscribeOptions::selector)). Use
//!   it when several consumers each need the whole stream (a writer and an
//!   indexer, say).
//! - [`PartitionDispatcher`]: **each event to the consumer of its
//!   partition**, chosen by a hash function or by key
//!   ([`by_key`](PartitionDispatcher::by_key), using the crate's stable
//!   [`Key`](crate::Key) hash). Use it when all events of one key must reach
//!   the same consumer, in order. Each consumer subscribes with
//!   [`SubscribeOptions::partition`](crate::SubscribeOptions::partition); a
//!   partition may have several consumers, which then share its events by
//!   demand (and per-key order holds only within each of them).
//!
//! [`Dispatcher`] is a public trait, a pure state machine with four operations
//! (subscribe, ask, cancel, dispatch): its documentation lists what the runtime
//! guarantees to a dispatcher and what a dispatcher must guarantee back, so you
//! can write and test your own without a runtime.
//!
//! # Examples
//!
//! ```
//! use demandflow::dispatcher::{BroadcastDispatcher, Dispatcher};
//! use demandflow::{StageId, SubscribeOptions, SubscriptionId};
//!
//! let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
//! let mut broadcast = BroadcastDispatcher::new();
//! let options = SubscribeOptions::<u32>::new();
//! broadcast.subscribe(a, StageId::from_raw(1), &options)?;
//! broadcast.subscribe(b, StageId::from_raw(2), &options)?;
//!
//! let mut out = Vec::new();
//! broadcast.ask(a, 2, &mut out);
//! broadcast.ask(b, 2, &mut out);
//! broadcast.dispatch(vec![7, 8], &mut out);
//! out.sort_by_key(|(sub, _)| *sub);
//! assert_eq!(out, [(a, vec![7, 8]), (b, vec![7, 8])]);
//! # Ok::<(), demandflow::dispatcher::SubscribeRefused>(())
//! ```

pub use demandflow_core::{
    BroadcastDispatcher, DEFAULT_PARTITION_QUEUE_CAPACITY, Deliver, DemandDispatcher, Dispatched,
    Dispatcher, Partition, PartitionDispatcher, PartitionDispatcherBuilder, Selector,
    SubscribeRefused,
};

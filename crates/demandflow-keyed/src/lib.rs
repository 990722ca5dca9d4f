//! Per-key ordered concurrency for demandflow: events partitioned by key, each
//! key handled by one worker at a time, in order, while other keys run
//! concurrently.
//!
//! Reach for this crate when work arrives as `(key, event)` pairs, events of one
//! key must be handled in order and never two at once (an account, an entity,
//! a device), and there are far more keys than cores. A dispatcher that routes
//! by key (the core's `PartitionDispatcher`) gives each key one consumer, but a
//! slow key then stalls every key of its partition; a `PartitionSupervisor`
//! (in `demandflow-supervisor`) gives each partition one long-lived task, with
//! the same trade-off. Here a partition instead hands *batches of ready keys* to
//! as many workers as it needs, up to a cap, so a slow key holds up only
//! itself.
//!
//! The parts, from the bottom up:
//!
//! - [`KeyedQueue`] is the bookkeeping of one partition as a pure state
//!   machine (busy keys, events waiting behind them, ready keys), with no
//!   runtime: test it, or drive it yourself, without tokio.
//! - [`Keyed`] runs one queue per partition on tokio: it starts workers on
//!   demand under a cap, runs your [`KeyedHandler`] on [`KeyedBatch`]es of
//!   ready keys, releases keys when a batch is handled (or its handler
//!   panicked), and makes senders wait while a partition is full. Configure it
//!   with a [`KeyedBuilder`].
//! - [`KeyedConsumer`] feeds a [`Keyed`] scheduler from a pipeline: a consumer
//!   stage that asks its producers only for as many events as there is room,
//!   within each subscription's `max_demand` / `min_demand`.
//! - [`DenseKeys`] and [`HashedKeys`] are the two ways keys become slots
//!   ([`KeyIndex`]): by arithmetic for small dense integer ids, by the shared
//!   key hash of `demandflow-core` for anything else, so a key lands on the same
//!   partition here as in the partition dispatcher and the partition supervisor.
//!
//! The names that only make sense next to a scheduler drop the `Keyed` prefix
//! and are read through the module path: [`Stats`], [`HandlerPanic`]. Through
//! the facade they are `demandflow::keyed::Stats` and so on. A failed send
//! hands the key and event back in the runtime's
//! [`SendError`](demandflow_runtime::SendError) and
//! [`TrySendError`](demandflow_runtime::TrySendError), the same errors a
//! [`Pusher`](demandflow_runtime::Pusher) returns.
//!
//! # Example
//!
//! Ten events for three keys; each key's events come out in the order they
//! went in.
//!
//! ```
//! use std::sync::Mutex;
//! use demandflow_keyed::{KeyedBatch, KeyedBuilder, KeyedHandler};
//!
//! /// Appends every event to its key's list.
//! struct Log(Mutex<Vec<Vec<u32>>>);
//!
//! impl KeyedHandler for Log {
//!     type Key = u64;
//!     type Event = u32;
//!
//!     async fn handle(&self, batch: &mut KeyedBatch<u64, u32>) {
//!         let mut log = self.0.lock().unwrap();
//!         for (key, events) in batch.iter() {
//!             log[*key as usize].extend_from_slice(events);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keyed = KeyedBuilder::dense(Log(Mutex::new(vec![Vec::new(); 3])))
//!     .start()
//!     .unwrap();
//! for n in 0..10 {
//!     keyed.send(u64::from(n % 3), n).await.unwrap();
//! }
//! keyed.shutdown().await;
//! assert_eq!(keyed.stats().handled, 10);
//! let log = keyed.handler().0.lock().unwrap();
//! assert_eq!(log[0], [0, 3, 6, 9]);
//! assert_eq!(log[2], [2, 5, 8]);
//! # }
//! ```

mod consumer;
mod index;
mod queue;
mod scheduler;

pub use consumer::KeyedConsumer;
pub use index::{DenseKeys, HashedKeys, KeyIndex};
pub use queue::{KeyHold, KeyedBatch, KeyedQueue};
pub use scheduler::{HandlerPanic, Keyed, KeyedBuilder, KeyedHandler, Stats};

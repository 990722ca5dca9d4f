//! Per-key ordered concurrency: events partitioned by key, each key handled by
//! one worker at a time, in order, while other keys run concurrently.
//!
//! - [`KeyedQueue`] is the bookkeeping of one partition as a pure state
//!   machine (busy keys, events waiting behind them, ready keys), with no
//!   runtime: test it, or drive it yourself, without tokio.
//! - [`Keyed`] runs one queue per partition on tokio: it starts workers on
//!   demand under a cap, runs your [`KeyedHandler`] on [`KeyedBatch`]es of
//!   ready keys, releases keys when a batch is handled (or its handler
//!   panicked), and makes senders wait while a partition is full.
//! - [`KeyedConsumer`] feeds a [`Keyed`] scheduler from a pipeline: a consumer
//!   stage that asks its producers only for as many events as there is room.
//! - [`DenseKeys`] and [`HashedKeys`] are the two ways keys become slots: by
//!   arithmetic for small dense integer ids, by hashing for anything else.

mod consumer;
mod index;
mod queue;
mod scheduler;

pub use consumer::KeyedConsumer;
pub use index::{DenseKeys, HashedKeys, KeyIndex};
pub use queue::{KeyHold, KeyedBatch, KeyedQueue};
pub use scheduler::{
    Keyed, KeyedBuilder, KeyedHandler, KeyedPanic, KeyedSendError, KeyedStats, KeyedTrySendError,
};

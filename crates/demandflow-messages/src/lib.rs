//! Messages with acknowledgement, batchers and rate limiting: the layer services
//! are built on, on top of demandflow's stages (in the style of Elixir's Broadway
//! on GenStage).
//!
//! A real pipeline needs three things stages alone do not give it: **knowing
//! when a message is done**, so its broker can be told and a crash loses
//! nothing; **grouping messages into batches** by size or time, for a bulk
//! insert or a bulk HTTP call; and **capping the rate** at which a source is
//! drained. This crate provides them as a [`Topology`]: one call builds and
//! supervises
//!
//! ```text
//! source (n copies) ──> processors ──> batchers ──> batch handlers
//!        ▲             handle_message   by key,     handle_batch
//!        │                              size, time
//!        └──────────── acknowledgements, in groups ───────────────┘
//! ```
//!
//! The demand rules between the stages are demandflow's own (SEMANTICS.md);
//! this crate only decides what flows and when a message is finished.
//!
//! # Message → processor → batcher → acknowledgement
//!
//! A source emits [`Message`]s. Each carries the user's data, string metadata,
//! a [`Status`], the batcher and [`BatchKey`] it goes to, and an [`AckRef`]:
//! the source's [`Acknowledger`] and a `u64` token the source chose (an offset,
//! a delivery tag). Any demandflow [`Producer`](demandflow_runtime::Producer) of
//! messages is a source; [`DummySource`] emits nothing and is fed by the test
//! helpers.
//!
//! A **processor** runs [`MessageHandler::handle_message`] on each message. It
//! may change the data, choose the batcher and the key, or
//! [`fail`](Message::fail) the message. A failed message goes no further: it is
//! shown to [`MessageHandler::handle_failed`], then acknowledged as failed.
//! With no batcher, a processor acknowledges successful messages itself.
//!
//! A **batcher** collects the messages of each key into a batch and emits it
//! when it is full ([`BatchTrigger::Size`]: a count, or a function of your
//! own), when `batch_timeout` has passed since the batch's *first* message
//! ([`BatchTrigger::Timeout`]; later messages do not reset it), or when a
//! message asks for it or the topology drains ([`BatchTrigger::Flush`]).
//!
//! A **batch handler** runs [`MessageHandler::handle_batch`] and returns the
//! messages, failing those that failed. Then the whole batch is acknowledged:
//! one [`Acknowledger::ack`] call per acknowledger per batch, not one per
//! message.
//!
//! Worked numbers: with `batch_size` 100 and `batch_timeout` 1 s, 250
//! messages arriving at once, of which every 50th fails in the processor
//! (5 of them): the 245 others make batches of 100 (size), 100 (size) and,
//! one second after its first message arrived, 45 (timeout). The acknowledger
//! hears 5 failures from the processors and 245 successes in 3 calls, one per
//! batch.
//!
//! ```
//! use std::time::Duration;
//! use demandflow_messages::{
//!     BatchInfo, BatchTrigger, Batcher, DummySource, Message, MessageHandler, Topology,
//! };
//! use tokio::sync::mpsc;
//!
//! /// Fails every 50th row; "upserts" each batch and reports it.
//! struct Upsert(mpsc::UnboundedSender<(usize, BatchTrigger)>);
//!
//! impl MessageHandler<u32> for Upsert {
//!     async fn handle_message(&self, message: &mut Message<u32>) {
//!         if message.data % 50 == 49 {
//!             message.fail("malformed row");
//!         }
//!     }
//!
//!     async fn handle_batch(&self, rows: Vec<Message<u32>>, info: &BatchInfo) -> Vec<Message<u32>> {
//!         let _ = self.0.send((info.size, info.trigger));
//!         rows
//!     }
//! }
//!
//! # fn main() {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
//! # rt.block_on(async {
//! let (batches, mut seen) = mpsc::unbounded_channel();
//! let topology = Topology::builder("upsert", Upsert(batches))
//!     .source(1, |_| DummySource::new())
//!     .batcher(Batcher::new("default").batch_size(100).batch_timeout(Duration::from_secs(1)))
//!     .start()
//!     .await
//!     .unwrap();
//!
//! let start = tokio::time::Instant::now();
//! let mut acks = topology.test_messages(0..250);
//! let outcome = acks.all().await;
//! assert_eq!((outcome.successful.len(), outcome.failed.len()), (245, 5));
//! assert_eq!(start.elapsed(), Duration::from_secs(1)); // the third batch waited for its timeout
//! for expected in [(100, BatchTrigger::Size), (100, BatchTrigger::Size), (45, BatchTrigger::Timeout)] {
//!     assert_eq!(seen.recv().await, Some(expected));
//! }
//! # });
//! # }
//! ```
//!
//! # Exactly once
//!
//! Every message that enters a topology is acknowledged exactly once, in
//! `successful` or in `failed`, never both:
//!
//! - a panic in any handler is caught; the messages in hand fail with
//!   [`Failure::Panicked`] and the panic's message, and the topology goes on;
//! - a message a batch handler does not return fails with [`Failure::Dropped`];
//! - when the topology stops, or a drain's deadline passes, what is still
//!   inside fails with [`Failure::Shutdown`] (or [`Failure::Dropped`] for a
//!   message lost in a stopped stage's mailbox, which its [`AckRef`] reports
//!   when it is dropped);
//! - [`Message::ack_immediately`] acknowledges a message as soon as its
//!   processor is done, and later stages acknowledge nothing more for it.
//!
//! Processors, batchers and batch handlers run under one demandflow
//! [`Supervisor`](demandflow_supervisor::Supervisor) (rest-for-one), so a stage
//! that stops abnormally is restarted with the ones after it.
//!
//! # Order
//!
//! With [`Processors::partition_by`], messages of one key go to one processor,
//! which handles them one at a time, in the order the source emitted them.
//! A batcher keeps that order within a batch; [`Batcher::partition_by_key`]
//! sends all batches of a key to the same batch handler, so they are handled
//! in order too.
//!
//! # Rate limiting
//!
//! [`TopologyBuilder::rate_limit`] lets at most N messages per interval be
//! asked of the source, all copies together; [`RateLimiter::set_limit`]
//! changes N while running. The limiter sits on the processors' subscriptions
//! to the source: while the interval's allowance is spent, processors hold
//! back their demand and the source keeps its events, and both resume at the
//! next interval. Nothing is dropped. With 10 per 100 ms, 1,000 messages take
//! 100 intervals, about 10 s, and no 100 ms window sees more than 10.
//!
//! # Draining
//!
//! [`Topology::drain`] stops the sources, lets processors finish, flushes every
//! open batch (trigger [`BatchTrigger::Flush`]), waits for the batch handlers
//! and the acknowledgements, and stops. What the deadline cuts off is
//! acknowledged as failed and counted in [`TopologyDrain::unfinished`].
//! [`Topology::drain_on`] does the same when a `CancellationToken` is cancelled.
//! A push that returned before the drain began is finished by it.
//!
//! # Timers and memory of batchers
//!
//! A batcher has one timer task and one deadline queue, however many keys are
//! open: all its batches share one timeout and start it when they are created,
//! so deadlines are in creation order and a FIFO queue holds them. An open
//! batch costs one hash-map entry (about 80 bytes plus its messages) and one
//! queue entry (about 40 bytes); the queue holds at most one entry per batch
//! created within one timeout.
//!
//! # Telemetry
//!
//! Handlers run in `tracing` spans with the topology's name, the stage, and the
//! batcher: one `handle_message` span (trace level) per chunk of messages a
//! processor handles, with their number, rather than one per message, and one
//! `handle_batch` span (debug level) per batch; [`Topology::metrics`] returns
//! counters a metrics backend can poll: messages ok and failed, batches by
//! trigger, messages in flight.
//!
//! # Testing
//!
//! [`Topology::test_messages`] pushes messages into a running topology and
//! returns [`TestAcks`], where their acknowledgements arrive;
//! [`Topology::test_batch`] pushes messages meant to form one batch;
//! [`Topology::push_messages`] pushes messages of your own. They work with any
//! source, and [`DummySource`] is a source that emits nothing else.
//!
//! # Writing a source
//!
//! The [`connector`] module holds what the Redis and Kafka sources share and a
//! source of your own can use: [`FeedStage`](connector::FeedStage), the stage
//! of a copy that reads on a task or thread of its own, and
//! [`source_counters!`], a source's counters and their snapshot.
//!
//! # When not to use it
//!
//! If nobody needs to hear when an item is done, and you need neither batches
//! nor a rate limit, plain stages are lighter: a message is 112 bytes of
//! bookkeeping around its data and costs a handler call and a share of an
//! acknowledgement. The guide's chapter on messages
//! (`docs/guide/07-messages.md` in the repository, part of the book built from
//! `docs/guide/`) walks through a service.

mod abort;
mod ack;
mod batch_handler;
mod batcher;
mod builder;
pub mod connector;
mod handler;
mod message;
mod metrics;
mod processor;
mod rate;
mod source;
mod testing;
mod topology;
mod upstream;

pub use ack::{Ack, AckRef, Acknowledger, ChannelAcknowledger, NoopAcknowledger};
pub use batcher::{BatchFull, BatchSize};
pub use builder::{Batcher, Processors, StartTopologyError, TopologyBuilder};
pub use handler::{BatchInfo, BatchTrigger, MessageHandler};
pub use message::{BatchKey, DEFAULT_BATCHER, Failure, Message, Status};
pub use metrics::MetricsSnapshot;
pub use rate::{RateLimit, RateLimiter};
pub use source::DummySource;
pub use testing::{TestAcks, TestOutcome};
pub use topology::{PushError, Topology, TopologyDrain};

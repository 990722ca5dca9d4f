//! Demand-driven, back-pressured dataflow stages for [tokio], in the style of
//! Elixir's GenStage.
//!
//! A pipeline is built from *stages*: small state machines, each running in its
//! own task, that pass events to one another. No stage ever sends more events than
//! the stage after it asked for, so a slow stage slows down everything upstream of
//! it instead of letting queues grow without bound.
//!
//! This page is a tutorial. It walks through the pieces in the order you will meet
//! them; every example on it is a test that runs and checks its result.
//!
//! - [Stages](#stages) and [a first pipeline](#a-first-pipeline)
//! - [When not to use stages](#when-not-to-use-stages)
//! - [Demand](#demand), [manual demand](#manual-demand) and [buffering](#buffering)
//! - [How pipelines stop](#how-pipelines-stop): cancel modes, finite sources, handles
//! - [Streams and push handles](#streams-and-push-handles)
//! - [Calls and messages](#calls-and-messages): asking a stage a typed question
//! - [Dispatchers](#dispatchers) and [choosing one](#choosing-a-dispatcher)
//! - [Supervisors](#supervisors) and [the keyed scheduler](#the-keyed-scheduler)
//! - [Where things are](#where-things-are): the facade's modules
//! - [The guide](#the-guide): the book that teaches demandflow chapter by chapter
//!
//! # Stages
//!
//! There are three kinds of stage, one trait each:
//!
//! - A [`Producer`] is a source. It emits events when it is asked for them, in
//!   [`handle_demand`](Producer::handle_demand).
//! - A [`Consumer`] is a sink. It receives events in
//!   [`handle_events`](Consumer::handle_events) and asks its producers for more.
//! - A [`ProducerConsumer`] sits in between: it receives events from upstream,
//!   turns them into other events (or none), and emits those downstream.
//!
//! A consumer (or producer-consumer) *subscribes* to a producer (or
//! producer-consumer). Over that subscription two things travel in opposite
//! directions:
//!
//! ```text
//!               asks for 1000               asks for 1000
//!   Counter   <---------------   Doubler   <---------------   Forward
//!             --------------->             --------------->
//!                0, 1, 2, …                   0, 2, 4, …
//!
//!  producer                 producer-consumer                consumer
//! ```
//!
//! **Demand flows upstream, events flow downstream.** A consumer asks for a number
//! of events; the producer may send up to that many, never more, in batches (a
//! `Vec` of one or more events). That rule is the whole of back-pressure: after
//! its first ask, a producer-consumer asks upstream again only while its own
//! consumers want something, so the slowest stage sets the pace of the pipeline.
//!
//! Each stage owns its state. Callbacks take `&mut self` and run one at a time in
//! the stage's task, so a stage needs no locks. Callbacks are plain `async fn`s in
//! the trait (no macro, no boxing); whatever a callback wants to *do* — emit
//! events, ask, cancel, stop — it records on its [`Context`], and the runtime
//! carries it out when the callback returns.
//!
//! Most code only needs the [`prelude`]:
//!
//! ```
//! use demandflow::prelude::*;
//! ```
//!
//! # A first pipeline
//!
//! Three stages: `Counter` emits 0, 1, 2, …; `Doubler` multiplies each event by
//! two; `Forward` hands what it receives to a channel, so the test can look at it.
//!
//! ```
//! use demandflow::prelude::*;
//! use tokio::sync::mpsc;
//!
//! /// Emits 0, 1, 2, … exactly as many as it is asked for.
//! struct Counter {
//!     next: u64,
//! }
//!
//! impl Producer for Counter {
//!     type Event = u64;
//!
//!     async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
//!         ctx.emit_all(self.next..self.next + demand);
//!         self.next += demand;
//!     }
//! }
//!
//! /// Doubles every event.
//! struct Doubler;
//!
//! impl ProducerConsumer for Doubler {
//!     type In = u64;
//!     type Out = u64;
//!
//!     async fn handle_events(
//!         &mut self,
//!         events: Vec<u64>,
//!         _from: SubscriptionId,
//!         ctx: &mut Context<u64>,
//!     ) {
//!         ctx.emit_all(events.into_iter().map(|n| n * 2));
//!     }
//! }
//!
//! /// Sends every event into a bounded channel, waiting while the channel is full.
//! struct Forward {
//!     tx: mpsc::Sender<u64>,
//! }
//!
//! impl Consumer for Forward {
//!     type Event = u64;
//!
//!     async fn handle_events(
//!         &mut self,
//!         events: Vec<u64>,
//!         _from: SubscriptionId,
//!         ctx: &mut ConsumerContext,
//!     ) {
//!         for event in events {
//!             if self.tx.send(event).await.is_err() {
//!                 // The receiver is gone: nobody needs more events.
//!                 ctx.stop(Reason::Normal);
//!                 return;
//!             }
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Start each stage on the current tokio runtime…
//! let counter = producer(Counter { next: 0 }).start()?;
//! let doubler = producer_consumer(Doubler).start()?;
//! let (tx, mut rx) = mpsc::channel(8);
//! let sink = consumer(Forward { tx }).start()?;
//!
//! // …then connect them. `subscribe_to` returns once the producer has accepted.
//! doubler
//!     .subscribe_to(&counter, SubscribeOptions::new())
//!     .await?;
//! sink.subscribe_to(&doubler, SubscribeOptions::new()).await?;
//!
//! let mut received = Vec::new();
//! while received.len() < 6 {
//!     received.push(rx.recv().await.expect("the pipeline is running"));
//! }
//! assert_eq!(received, [0, 2, 4, 6, 8, 10]);
//! # Ok(())
//! # }
//! ```
//!
//! A few things to notice:
//!
//! - [`producer`], [`producer_consumer`] and [`consumer`] return builders; `start`
//!   spawns the stage on the current tokio runtime and returns a typed handle
//!   ([`ProducerRef`], [`ProducerConsumerRef`], [`ConsumerRef`]). The types make
//!   sure a consumer of `u64` can only subscribe to a producer of `u64`.
//! - `Counter` is infinite, yet nothing runs away. `Forward` awaits inside
//!   `handle_events` while the channel is full; until that call returns it asks for
//!   nothing, so `Doubler` soon has no demand to serve and stops asking `Counter`.
//! - A producer never sees events, only numbers. A consumer does not ask for
//!   events itself by default: the runtime asks on its behalf ([Demand](#demand)
//!   explains when).
//! - At the end of `main` the receiver is dropped: `Forward` stops, and the
//!   stages it leaves without consumers stop after it. Dropping handles never
//!   stops a pipeline that still has work ([How pipelines stop](#how-pipelines-stop)).
//!
//! # When not to use stages
//!
//! Stages are for work that flows between concurrent parts at different speeds and
//! needs back-pressure between them. Reach for something smaller when that is not
//! the case:
//!
//! - **All the data is already at hand, and you only want it processed (maybe in
//!   parallel).** Use an iterator, or rayon's parallel iterators for CPU-bound work.
//!   Stages cost a message and a task switch per batch, and for data already in
//!   memory rayon spreads the work over the cores with far less ceremony.
//! - **One async task does the whole job.** A `loop` with `.await`s in it, or a
//!   bounded `tokio::sync::mpsc` channel between two tasks, already has
//!   back-pressure and is easier to read.
//! - **You want to organise code, not concurrency.** Stages are a runtime
//!   structure; for modules and layers, use functions and types.
//!
//! Stages pay off when several producers or consumers share work, when a slow sink
//! must hold back a fast source across several steps, or when events must be
//! routed (one consumer each, to all of them, or by key; see
//! [Dispatchers](#dispatchers)).
//!
//! # Demand
//!
//! By default a consumer manages demand itself, per subscription, from two
//! [`SubscribeOptions`]: `max_demand` (default [1000](DEFAULT_MAX_DEMAND)) and
//! `min_demand` (default: half of `max_demand`, rounded down).
//!
//! 1. When it subscribes, the consumer asks for `max_demand` events.
//! 2. Every batch that arrives is cut into chunks of at most
//!    `max_demand - min_demand` events (a chunk never spans two batches), and
//!    `handle_events` is called once per chunk.
//! 3. Each chunk lowers the *pending* demand (asked for, not yet received). When it
//!    falls to `min_demand` or below, the consumer asks for enough to bring it back
//!    to `max_demand`. That ask is sent after `handle_events` has returned for the
//!    chunk (for a producer-consumer: after its output has been handed on).
//!
//! With a producer that always has events ready, that gives:
//!
//! | max / min | chunks `handle_events` sees | asks the producer sees |
//! |---|---|---|
//! | 1000 / 500 (default) | `0..=499`, `500..=999`, … | 1000, 500, 500, … |
//! | 100 / 80 | 20 events each: `0..=19`, `20..=39`, … | 100, 20, 20, 20, … |
//! | 100 / 20 | `0..=79`, `80..=99`, `100..=179`, `180..=259`, `260..=279`, … | 100, 80, 100, 80, … |
//! | 1 / 0 | `[0]`, `[1]`, `[2]`, … | 1, 1, 1, … |
//!
//! A small `max_demand` keeps little in flight and makes each batch cheap to lose;
//! a large one amortises the per-message cost over more events. `min_demand`
//! decides how early a consumer asks again: close to `max_demand`, it asks often
//! and keeps the producer busy; at 0, it empties its demand before asking again.
//!
//! The accounting is a pure state machine,
//! [`AutoDemand`](low_level::AutoDemand), with
//! [`split_chunks`](low_level::split_chunks) doing the cutting (both in the
//! [`low_level`] module); the runtime uses exactly these, so the numbers above
//! can be checked without starting a task:
//!
//! ```
//! use demandflow::low_level::{AutoDemand, split_chunks};
//! use std::ops::RangeInclusive;
//!
//! /// Plays a producer that answers every ask at once with one batch of exactly
//! /// that many events. Returns the first `n` chunks the consumer's handler gets,
//! /// and every ask the producer got.
//! fn replay(max_demand: u64, min_demand: u64, n: usize) -> (Vec<RangeInclusive<u64>>, Vec<u64>) {
//!     let mut demand = AutoDemand::new(max_demand, min_demand);
//!     let mut asks = vec![demand.subscribe()];
//!     let (mut answered, mut next_event, mut chunks) = (0, 0, Vec::new());
//!     while chunks.len() < n {
//!         let size = asks[answered];
//!         answered += 1;
//!         let batch: Vec<u64> = (next_event..next_event + size).collect();
//!         next_event += size;
//!         for chunk in split_chunks(batch, demand.chunk_len()) {
//!             chunks.push(chunk[0]..=chunk[chunk.len() - 1]);
//!             match demand.consume(chunk.len() as u64) {
//!                 0 => {}
//!                 ask => asks.push(ask),
//!             }
//!         }
//!     }
//!     chunks.truncate(n);
//!     (chunks, asks)
//! }
//!
//! let (chunks, asks) = replay(1000, 500, 2);
//! assert_eq!(chunks, [0..=499, 500..=999]);
//! assert_eq!(asks, [1000, 500, 500]);
//!
//! let (chunks, asks) = replay(100, 80, 6);
//! assert_eq!(
//!     chunks,
//!     [0..=19, 20..=39, 40..=59, 60..=79, 80..=99, 100..=119]
//! );
//! assert_eq!(asks[..5], [100, 20, 20, 20, 20]);
//!
//! let (chunks, asks) = replay(100, 20, 5);
//! assert_eq!(chunks, [0..=79, 80..=99, 100..=179, 180..=259, 260..=279]);
//! assert_eq!(asks[..4], [100, 80, 100, 80]);
//!
//! let (chunks, asks) = replay(1, 0, 3);
//! assert_eq!(chunks, [0..=0, 1..=1, 2..=2]);
//! assert_eq!(asks, [1, 1, 1, 1]);
//! ```
//!
//! On the producer side, [`handle_demand`](Producer::handle_demand) is only called
//! for demand the producer's buffer could not serve. A producer may emit fewer
//! events than it was asked for — then it must remember the difference itself, as
//! the same demand is never sent twice — or more, and the excess is buffered.
//! Demand adds up across asks and saturates at `u64::MAX` rather than overflowing.
//!
//! Options are checked when you subscribe; an invalid combination is an error, not
//! a panic:
//!
//! ```
//! use demandflow::{ConfigError, SubscribeOptions};
//!
//! assert_eq!(
//!     SubscribeOptions::<u64>::new().demand_bounds(),
//!     Ok((1000, 500))
//! );
//! assert_eq!(
//!     SubscribeOptions::<u64>::new().max_demand(0).validate(),
//!     Err(ConfigError::MaxDemandZero)
//! );
//! assert!(
//!     SubscribeOptions::<u64>::new()
//!         .max_demand(10)
//!         .min_demand(10)
//!         .validate()
//!         .is_err()
//! );
//! ```
//!
//! # Manual demand
//!
//! Sometimes the consumer knows better when to ask: it waits for an external
//! resource, or for a rate limiter, or it wants exactly one event at a time. Return
//! [`DemandMode::Manual`] from [`Consumer::handle_subscribe`] and the runtime asks
//! for nothing on that subscription. Each batch that arrives is then one
//! `handle_events` call, however large, and the stage asks itself: with
//! [`Context::ask`] from any callback, or with [`ConsumerRef::ask`] from outside
//! the stage. Asking for 0 does nothing.
//!
//! ```
//! use demandflow::prelude::*;
//! use tokio::sync::mpsc;
//! # struct Counter { next: u64 }
//! # impl Producer for Counter {
//! #     type Event = u64;
//! #     async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
//! #         ctx.emit_all(self.next..self.next + demand);
//! #         self.next += demand;
//! #     }
//! # }
//!
//! /// Asks for two events when it subscribes, then only when told to.
//! struct Patient {
//!     batches: mpsc::UnboundedSender<Vec<u64>>,
//! }
//!
//! impl Consumer for Patient {
//!     type Event = u64;
//!
//!     async fn handle_subscribe(
//!         &mut self,
//!         sub: SubscriptionId,
//!         ctx: &mut ConsumerContext,
//!     ) -> DemandMode {
//!         ctx.ask(sub, 2);
//!         DemandMode::Manual
//!     }
//!
//!     async fn handle_events(
//!         &mut self,
//!         events: Vec<u64>,
//!         _from: SubscriptionId,
//!         _ctx: &mut ConsumerContext,
//!     ) {
//!         let _ = self.batches.send(events);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let counter = producer(Counter { next: 0 }).start()?;
//! let (tx, mut batches) = mpsc::unbounded_channel();
//! let patient = consumer(Patient { batches: tx }).start()?;
//! let sub = patient
//!     .subscribe_to(&counter, SubscribeOptions::new())
//!     .await?;
//! assert_eq!(batches.recv().await, Some(vec![0, 1]));
//!
//! patient.ask(sub, 0)?; // nothing
//! patient.ask(sub, 3)?;
//! assert_eq!(batches.recv().await, Some(vec![2, 3, 4]));
//! # Ok(())
//! # }
//! ```
//!
//! A manual subscription still never receives more than it asked for; the
//! `max_demand` and `min_demand` options simply go unused.
//!
//! # Buffering
//!
//! Events a producer emits that no consumer has asked for yet wait in the
//! producer's buffer, first in, first out, and are sent as soon as demand arrives.
//! The buffer is bounded so memory stays bounded when consumers fall behind:
//!
//! - [`buffer_size`](ProducerBuilder::buffer_size) is [10 000](DEFAULT_BUFFER_SIZE)
//!   events for a producer. A producer-consumer's buffer is unbounded by default:
//!   it only takes input while its consumers have demand, so its buffer only holds
//!   what a handler emits beyond that demand.
//! - [`buffer_keep`](ProducerBuilder::buffer_keep) decides what goes on overflow:
//!   [`BufferKeep::Last`] (the default) drops the oldest buffered events,
//!   [`BufferKeep::First`] drops the incoming ones.
//! - Nothing is dropped silently: the stage's
//!   [`handle_dropped`](Producer::handle_dropped) is called with how many (the
//!   runtime logs a warning naming the stage), and they are counted in
//!   [`StageStats`].
//! - [`estimate_buffered_count`](ProducerRef::estimate_buffered_count) says how
//!   many events are waiting, including any a dispatcher holds in its own queues.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! use demandflow::BufferKeep;
//! use demandflow::prelude::*;
//! # use std::pin::Pin;
//! # use futures_core::Stream;
//! # async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
//! #     std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
//! # }
//!
//! /// Emits 1..=8 as soon as it starts, before anyone asks.
//! struct Eager {
//!     dropped: Arc<AtomicUsize>,
//! }
//!
//! impl Producer for Eager {
//!     type Event = u32;
//!
//!     async fn init(&mut self, ctx: &mut Context<u32>) {
//!         ctx.emit_all(1..=8);
//!     }
//!
//!     async fn handle_demand(&mut self, _demand: u64, _ctx: &mut Context<u32>) {}
//!
//!     fn handle_dropped(&mut self, dropped: usize) {
//!         self.dropped.fetch_add(dropped, Ordering::Relaxed);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dropped = Arc::new(AtomicUsize::new(0));
//! let eager = producer(Eager {
//!     dropped: dropped.clone(),
//! })
//! .buffer_size(5)
//! .buffer_keep(BufferKeep::Last)
//! .start()?;
//!
//! // Nobody has subscribed: five events wait, the three oldest were dropped.
//! assert_eq!(eager.estimate_buffered_count().await?, 5);
//! assert_eq!(dropped.load(Ordering::Relaxed), 3);
//!
//! // The first consumer to ask is served from the buffer.
//! let mut events = eager.stream(SubscribeOptions::new().max_demand(10))?;
//! for expected in 4..=8 {
//!     assert_eq!(next(&mut events).await, Some(expected));
//! }
//! assert_eq!(eager.estimate_buffered_count().await?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! With `BufferKeep::First` the same producer would keep `1..=5` and drop `6..=8`.
//! The buffer on its own is [`Buffer`](low_level::Buffer), a pure type you can try out directly.
//!
//! # How pipelines stop
//!
//! A stage stops with a [`Reason`]: [`Normal`](Reason::Normal) when it finished its
//! work, [`Shutdown`](Reason::Shutdown) when it was told to stop, and an abnormal
//! reason otherwise — [`Panic`](Reason::Panic) when a callback panicked (the panic
//! is caught and stops only that stage), [`Error`](Reason::Error) for any other
//! failure. A handle's [`wait`](ConsumerRef::wait) returns the reason once the
//! stage has stopped.
//!
//! ## Cancel modes
//!
//! When a producer stops, every subscription to it ends and its consumers are
//! told: their [`handle_cancel`](Consumer::handle_cancel) runs first, then the
//! subscription's [`CancelMode`] decides whether the consumer stops too.
//! Termination therefore flows downstream, like events. A producer never stops just
//! because its consumers left.
//!
//! | [`CancelMode`] | producer ended normally (`Normal`, `Shutdown`) | producer ended abnormally |
//! |---|---|---|
//! | [`Permanent`](CancelMode::Permanent) (default) | consumer stops with the same reason | consumer stops with the same reason |
//! | [`Transient`](CancelMode::Transient) | consumer keeps running | consumer stops with the same reason |
//! | [`Temporary`](CancelMode::Temporary) | consumer keeps running | consumer keeps running |
//!
//! A producer-consumer that stops this way first delivers the events it still
//! holds.
//!
//! ```
//! use demandflow::prelude::*;
//! use tokio::sync::mpsc;
//!
//! /// Emits nothing, and panics when it gets an info message.
//! struct Fragile;
//!
//! impl Producer for Fragile {
//!     type Event = u64;
//!
//!     async fn handle_demand(&mut self, _demand: u64, _ctx: &mut Context<u64>) {}
//!
//!     async fn handle_info(&mut self, _info: Info, _ctx: &mut Context<u64>) {
//!         panic!("fragile producer broke");
//!     }
//! }
//!
//! /// Reports how its subscriptions end.
//! struct Watcher {
//!     ended: mpsc::UnboundedSender<CancelReason>,
//! }
//!
//! impl Consumer for Watcher {
//!     type Event = u64;
//!
//!     async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut ConsumerContext) {}
//!
//!     async fn handle_cancel(
//!         &mut self,
//!         _sub: SubscriptionId,
//!         reason: &CancelReason,
//!         _: &mut ConsumerContext,
//!     ) {
//!         let _ = self.ended.send(reason.clone());
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fragile = producer(Fragile).start()?;
//! let (tx, mut ended) = mpsc::unbounded_channel();
//! let permanent = consumer(Watcher { ended: tx.clone() }).start()?;
//! let temporary = consumer(Watcher { ended: tx }).start()?;
//! permanent
//!     .subscribe_to(&fragile, SubscribeOptions::new())
//!     .await?;
//! temporary
//!     .subscribe_to(
//!         &fragile,
//!         SubscribeOptions::new().cancel(CancelMode::Temporary),
//!     )
//!     .await?;
//!
//! fragile.send_info("break")?;
//! let broke = Reason::Panic("fragile producer broke".into());
//! assert_eq!(fragile.wait().await, broke);
//!
//! // Both consumers are told; the permanent one stops with the same reason…
//! assert_eq!(ended.recv().await, Some(CancelReason::Down(broke.clone())));
//! assert_eq!(ended.recv().await, Some(CancelReason::Down(broke.clone())));
//! assert_eq!(permanent.wait().await, broke);
//! // …and the temporary one is still there.
//! assert!(temporary.sync_info(()).await.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! ## Finite sources
//!
//! [`from_iter`] turns any iterator into a producer that pulls items only on
//! demand. When the iterator runs out, the producer sends its last events and
//! stops with `Normal`; with the default permanent mode its consumers then stop
//! normally too. [`from_stream`] does the same for a `futures` `Stream`.
//!
//! Here, `from_iter(1..=7)` and a consumer with `max_demand` 10 and `min_demand` 5:
//! the consumer asks for 10, gets all seven events in one batch, handles them in
//! chunks of at most 10 − 5 = 5, and then stops.
//!
//! ```
//! use demandflow::prelude::*;
//! use tokio::sync::mpsc;
//!
//! struct Batches(mpsc::UnboundedSender<Vec<u32>>);
//!
//! impl Consumer for Batches {
//!     type Event = u32;
//!
//!     async fn handle_events(
//!         &mut self,
//!         events: Vec<u32>,
//!         _: SubscriptionId,
//!         _: &mut ConsumerContext,
//!     ) {
//!         let _ = self.0.send(events);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let numbers = producer(from_iter(1..=7)).start()?;
//! let (tx, mut batches) = mpsc::unbounded_channel();
//! let sink = consumer(Batches(tx)).start()?;
//! sink.subscribe_to(
//!     &numbers,
//!     SubscribeOptions::new().max_demand(10).min_demand(5),
//! )
//! .await?;
//!
//! assert_eq!(sink.wait().await, Reason::Normal);
//! assert_eq!(numbers.wait().await, Reason::Normal);
//! assert_eq!(batches.recv().await, Some(vec![1, 2, 3, 4, 5]));
//! assert_eq!(batches.recv().await, Some(vec![6, 7]));
//! assert_eq!(batches.recv().await, None); // the stopped consumer dropped its sender
//! # Ok(())
//! # }
//! ```
//!
//! ## Dropping handles detaches a pipeline
//!
//! Subscribing joins two stages into one pipeline. Dropping handles never stops
//! it, as dropping a `JoinHandle` does not stop a spawned task: when the last
//! handle to any of its stages (and the last [`EventStream`] reading from it) is
//! gone, the pipeline is *detached*. It runs while it can still do work, and each
//! stage stops by itself once it cannot: a producer with no consumer left, a
//! consumer with no producer left, a producer-consumer with either side gone
//! (after delivering what it holds). So nothing is lost when a function returns
//! only a pipeline's output, and nothing is left running once the work is over
//! or its reader has gone. The runtime crate's docs state the rule in full. To
//! wait for a stage without holding a handle, take a [`StageMonitor`] first.
//!
//! ```
//! use demandflow::prelude::*;
//!
//! struct TakeThree(u32);
//!
//! impl Consumer for TakeThree {
//!     type Event = u32;
//!
//!     async fn handle_events(&mut self, e: Vec<u32>, _: SubscriptionId, ctx: &mut ConsumerContext) {
//!         self.0 += e.len() as u32;
//!         if self.0 >= 3 {
//!             ctx.stop(Reason::Normal);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let numbers = producer(from_iter(0..)).start()?; // endless
//! let sink = consumer(TakeThree(0)).start()?;
//! sink.subscribe_to(&numbers, SubscribeOptions::new().max_demand(1))
//!     .await?;
//!
//! let (numbers_exit, sink_exit) = (numbers.monitor(), sink.monitor());
//! drop(sink);
//! drop(numbers); // the last handle: the pipeline is detached and keeps working
//! assert_eq!(sink_exit.wait().await, Reason::Normal); // it took three events
//! // and the endless producer, left without consumers, stops.
//! assert_eq!(numbers_exit.wait().await, Reason::Shutdown);
//! # Ok(())
//! # }
//! ```
//!
//! A stage can also stop itself ([`Context::stop`]) or be stopped through a handle
//! ([`ProducerRef::stop`]).
//!
//! # Streams and push handles
//!
//! Two bridges connect stages to ordinary async code.
//!
//! **Reading a producer as a `Stream`.** [`ProducerRef::stream`] subscribes an
//! [`EventStream`] to a producer. It asks exactly like an automatic consumer: with
//! `max_demand` 3 (so `min_demand` 1, chunks of 2) it asks for 3, then for 2 after
//! the first chunk has been read, then for 3, … Dropping the stream cancels the
//! subscription. With `futures::StreamExt` you would write `stream.next().await`;
//! this example uses only the standard library:
//!
//! ```
//! use std::future::poll_fn;
//! use std::pin::Pin;
//! use std::sync::{Arc, Mutex};
//!
//! use demandflow::prelude::*;
//! use futures_core::Stream;
//!
//! /// Counts up from 0 and records every demand it gets.
//! struct Counter {
//!     next: u64,
//!     demands: Arc<Mutex<Vec<u64>>>,
//! }
//!
//! impl Producer for Counter {
//!     type Event = u64;
//!
//!     async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
//!         self.demands.lock().unwrap().push(demand);
//!         ctx.emit_all(self.next..self.next + demand);
//!         self.next += demand;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let demands = Arc::new(Mutex::new(Vec::new()));
//! let counter = producer(Counter {
//!     next: 0,
//!     demands: demands.clone(),
//! })
//! .start()?;
//!
//! let mut stream = counter.stream(SubscribeOptions::new().max_demand(3))?;
//! let mut taken = Vec::new();
//! while taken.len() < 7 {
//!     let next = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
//!     taken.push(next.expect("a counter never ends"));
//! }
//! assert_eq!(taken, [0, 1, 2, 3, 4, 5, 6]);
//! assert_eq!(*demands.lock().unwrap(), [3, 2, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! **Pushing events in from outside.** [`push`]`(capacity)` returns a
//! [`PushSource`], a producer to start like any other, and a [`Pusher`] to feed it
//! from any task. At most `capacity` pushed events wait for demand:
//! [`Pusher::send`] waits while that many are waiting, and [`Pusher::try_send`]
//! hands the event back instead. When every `Pusher` (they are `Clone`) has been
//! dropped, the source delivers what is left and stops normally. A `Pusher` does
//! not keep the pipeline alive: once the last stage handle is gone the source
//! shuts down, and `send` hands the event back in a [`SendError`]. `Pusher` is
//! also a `futures` `Sink`.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use demandflow::TrySendError;
//! use demandflow::prelude::*;
//! use tokio::sync::mpsc;
//!
//! struct Collect(mpsc::UnboundedSender<Vec<u32>>);
//!
//! impl Consumer for Collect {
//!     type Event = u32;
//!
//!     async fn handle_events(
//!         &mut self,
//!         events: Vec<u32>,
//!         _: SubscriptionId,
//!         _: &mut ConsumerContext,
//!     ) {
//!         let _ = self.0.send(events);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (source, pusher) = push::<u32>(NonZeroUsize::new(2).unwrap());
//! pusher.try_send(1)?;
//! pusher.try_send(2)?;
//! // Two events wait and nobody has asked yet: the queue is full.
//! assert!(matches!(pusher.try_send(3), Err(TrySendError::Full(3))));
//!
//! let events = producer(source).start()?;
//! let (tx, mut batches) = mpsc::unbounded_channel();
//! let sink = consumer(Collect(tx)).start()?;
//! sink.subscribe_to(&events, SubscribeOptions::new()).await?;
//!
//! tokio::spawn(async move {
//!     for n in 3..=5 {
//!         pusher.send(n).await.expect("the source is running");
//!     }
//!     // `pusher` is dropped here, which ends the source.
//! });
//!
//! assert_eq!(sink.wait().await, Reason::Normal);
//! let mut received = Vec::new();
//! while let Some(batch) = batches.recv().await {
//!     received.extend(batch);
//! }
//! assert_eq!(received, [1, 2, 3, 4, 5]);
//! # Ok(())
//! # }
//! ```
//!
//! # Calls and messages
//!
//! Besides events, a stage can be sent messages and asked questions, as a
//! GenStage process answers `call`s and `info`s. A question is a type that
//! implements [`Request`], naming its reply type; a stage answers it by
//! implementing [`HandleCall`] for that type and registering it on its builder
//! with `answers::<R>()`. Then any handle can:
//!
//! - [`call`](ProducerRef::call) it: send the request and wait for the reply,
//!   up to a timeout. The result is `Result<R::Reply, CallError>`:
//!   [`CallError::Timeout`] when the reply did not come in time (the stage keeps
//!   running and still handles the request in its turn; the late reply is
//!   dropped), [`CallError::Stopped`] when the stage had stopped or stopped
//!   before answering, [`CallError::Unhandled`] when it never registered the type.
//! - [`cast`](ProducerRef::cast) it: send it without waiting; the reply, if any,
//!   is dropped. A message is simply a request whose reply is `()`. A stage's
//!   timers and spawned tasks cast to it through [`Context::info_sender`].
//!
//! The stage gets the request as its own type, with `&mut self` and its
//! [`Context`] (so it may emit events, ask, cancel or stop while answering), and
//! a reply type the compiler checks: nothing is downcast by hand. A stage answers
//! as many request types as it implements and registers.
//!
//! **Ordering.** A request is handled in its place, exactly like an info
//! message: on a producer or producer-consumer, after every event emitted before
//! the request arrived has been dispatched to consumers; on a consumer, between
//! two batches. So a call sent after events were emitted is answered after those
//! events went out, and a reply describes the stage as of that point. (GenStage
//! answers a `call` at once, without waiting for buffered events; demandflow
//! orders calls like infos so that "everything before this call has left the
//! stage" holds for every kind of stage. When the buffer cannot drain — no
//! consumer, no demand — the call waits, which is what its timeout is for.)
//!
//! ```
//! use std::time::Duration;
//!
//! use demandflow::prelude::*;
//! use demandflow::CallError;
//!
//! /// Emits what it is told to, and counts what it emitted.
//! struct Announcer {
//!     emitted: u64,
//! }
//!
//! impl Producer for Announcer {
//!     type Event = String;
//!
//!     async fn handle_demand(&mut self, _demand: u64, _ctx: &mut Context<String>) {}
//! }
//!
//! /// A message: emit this text.
//! struct Say(String);
//!
//! impl Request for Say {
//!     type Reply = ();
//! }
//!
//! /// A question: how many events have you emitted?
//! struct HowMany;
//!
//! impl Request for HowMany {
//!     type Reply = u64;
//! }
//!
//! impl HandleCall<Say, String> for Announcer {
//!     async fn handle_call(&mut self, Say(text): Say, ctx: &mut Context<String>) {
//!         self.emitted += 1;
//!         ctx.emit(text);
//!     }
//! }
//!
//! impl HandleCall<HowMany, String> for Announcer {
//!     async fn handle_call(&mut self, _: HowMany, _: &mut Context<String>) -> u64 {
//!         self.emitted
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let announcer = producer(Announcer { emitted: 0 })
//!     .answers::<Say>()
//!     .answers::<HowMany>()
//!     .start()?;
//! let second = Duration::from_secs(1);
//!
//! announcer.cast(Say("hello".into()))?;
//! // No consumer takes "hello": the question waits behind it, and times out.
//! assert_eq!(announcer.call(HowMany, second).await, Err(CallError::Timeout));
//!
//! let mut said = announcer.stream(SubscribeOptions::new())?;
//! # use std::pin::Pin;
//! # use futures_core::Stream;
//! # async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
//! #     std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
//! # }
//! assert_eq!(next(&mut said).await.as_deref(), Some("hello"));
//! // "hello" has gone out: now the stage answers, and it is still running.
//! assert_eq!(announcer.call(HowMany, second).await, Ok(1));
//!
//! announcer.stop(Reason::Shutdown).await?;
//! assert_eq!(announcer.call(HowMany, second).await, Err(CallError::Stopped));
//! # Ok(())
//! # }
//! ```
//!
//! Info messages ([`send_info`](ProducerRef::send_info), handled by
//! `handle_info`) remain for values of any type a stage sorts out itself; they
//! are ordered the same way.
//!
//! # Dispatchers
//!
//! Every producer (and producer-consumer) owns one dispatcher, which decides which
//! of its subscriptions gets which events. The default, [`DemandDispatcher`](dispatcher::DemandDispatcher),
//! shares work: each batch goes to the subscription with the most outstanding
//! demand (on a tie, the one that subscribed first), up to that demand, and this
//! repeats until the events or the demand run out. Events nobody has demand for go
//! back to the producer's buffer. Several consumers of one producer should use the
//! same `max_demand`.
//!
//! Other routing — every event to every consumer, or events split by key — is a
//! matter of choosing another dispatcher with
//! [`ProducerBuilder::dispatcher`] (see [Choosing a
//! dispatcher](#choosing-a-dispatcher)).
//! [`Dispatcher`](dispatcher::Dispatcher) is a public trait, so you can also
//! write your own: it is a pure state machine with four operations (subscribe,
//! ask, cancel, dispatch), so it can be tested with exact numbers and no
//! runtime. Its documentation lists what the runtime guarantees to a
//! dispatcher and what a dispatcher must guarantee back (above all: never
//! deliver more than was asked, never lose an event silently).
//!
//! Here is the default dispatcher on its own, driven by hand:
//!
//! ```
//! use demandflow::{StageId, SubscribeOptions, SubscriptionId};
//! use demandflow::dispatcher::{DemandDispatcher, Dispatched, Dispatcher};
//!
//! let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
//! let options = SubscribeOptions::<u32>::new();
//! let mut dispatcher = DemandDispatcher::new();
//! dispatcher.subscribe(a, StageId::from_raw(10), &options)?;
//! dispatcher.subscribe(b, StageId::from_raw(11), &options)?;
//!
//! // Deliveries are recorded in a Vec of (subscription, batch).
//! let mut out = Vec::new();
//! // Each ask returns the demand the producer should now be asked for.
//! assert_eq!(dispatcher.ask(a, 2, &mut out), 2);
//! assert_eq!(dispatcher.ask(b, 3, &mut out), 3);
//!
//! let Dispatched { leftover, .. } = dispatcher.dispatch(vec![1, 2, 3, 4, 5, 6], &mut out);
//! assert_eq!(out, [(b, vec![1, 2, 3]), (a, vec![4, 5])]);
//! assert_eq!(leftover, [6]); // no demand left: the producer buffers it
//! # Ok::<(), demandflow::dispatcher::SubscribeRefused>(())
//! ```
//!
//! And the same dispatcher chosen explicitly for a running producer (this is what
//! the builder does when you say nothing):
//!
//! ```
//! use demandflow::dispatcher::DemandDispatcher;
//! use demandflow::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let numbers = producer(from_iter(0..10_u32))
//!     .dispatcher(DemandDispatcher::new())
//!     .start()?;
//! assert_eq!(numbers.estimate_buffered_count().await?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! ## Choosing a dispatcher
//!
//! Ask what each consumer needs to see:
//!
//! - **Any event, as long as the work gets done** (a pool of interchangeable
//!   workers): [`DemandDispatcher`](dispatcher::DemandDispatcher), the default.
//!   Faster consumers get more.
//! - **Every event** (a writer and an indexer of the same stream):
//!   [`BroadcastDispatcher`](dispatcher::BroadcastDispatcher). The slowest
//!   consumer sets the pace; a subscription can filter with
//!   [`SubscribeOptions::selector`].
//! - **All the events of one key, in order** (per account, per device):
//!   [`PartitionDispatcher`](dispatcher::PartitionDispatcher), each consumer
//!   subscribing to one partition with [`SubscribeOptions::partition`] (a
//!   partition may have several consumers sharing its events by demand, at the
//!   cost of per-key order across them). With
//!   [`by_key`](dispatcher::PartitionDispatcher::by_key), a key goes to
//!   [`key_partition`]`(key, n)`: integers to `key mod n`, strings and other
//!   keys by the crate's stable [`Key`] hash, the same partition the partition
//!   supervisor and the keyed scheduler pick.
//! - **Per-key order, but far more keys than consumers, and a slow key must not
//!   hold up the others**: not a dispatcher; feed a [keyed
//!   scheduler](#the-keyed-scheduler).
//!
//! Here integer keys split the numbers by parity between two consumers:
//!
//! ```
//! use std::num::NonZeroUsize;
//! use demandflow::dispatcher::PartitionDispatcher;
//! use demandflow::prelude::*;
//! use tokio::sync::mpsc;
//!
//! struct Collect(mpsc::UnboundedSender<u64>);
//!
//! impl Consumer for Collect {
//!     type Event = u64;
//!
//!     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut ConsumerContext) {
//!         for event in events {
//!             let _ = self.0.send(event);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let numbers = producer(from_iter(0..10_u64))
//!     .dispatcher(PartitionDispatcher::by_key(NonZeroUsize::new(2).unwrap(), |n: &u64| *n).build()?)
//!     .start()?;
//! let (even_tx, mut evens) = mpsc::unbounded_channel();
//! let (odd_tx, mut odds) = mpsc::unbounded_channel();
//! let even = consumer(Collect(even_tx)).start()?;
//! let odd = consumer(Collect(odd_tx)).start()?;
//! even.subscribe_to(&numbers, SubscribeOptions::new().partition(0)).await?;
//! odd.subscribe_to(&numbers, SubscribeOptions::new().partition(1)).await?;
//!
//! let (mut got_even, mut got_odd) = (Vec::new(), Vec::new());
//! while got_even.len() + got_odd.len() < 10 {
//!     tokio::select! {
//!         Some(n) = evens.recv() => got_even.push(n),
//!         Some(n) = odds.recv() => got_odd.push(n),
//!     }
//! }
//! assert_eq!(got_even, [0, 2, 4, 6, 8]);
//! assert_eq!(got_odd, [1, 3, 5, 7, 9]);
//! # Ok(())
//! # }
//! ```
//!
//! # Supervisors
//!
//! A stage whose callback panics stops, with [`Reason::Panic`]. To have it
//! started again, start it under a supervisor from the [`supervisor`] module,
//! as in Erlang/OTP:
//!
//! - a [`Supervisor`](supervisor::Supervisor) starts named children from
//!   factories and restarts them by a strategy (one for one, rest for one, one
//!   for all) within a restart intensity. A factory receives the handles of the
//!   children started before it, so a restarted consumer subscribes to the
//!   current instance of its producer;
//! - a [`ConsumerSupervisor`](supervisor::ConsumerSupervisor) is a consumer
//!   that runs one task per event, never more at a time than its demand allows:
//!   independent slow jobs (requests, files) done concurrently, with
//!   back-pressure intact;
//! - a [`PartitionSupervisor`](supervisor::PartitionSupervisor) runs a fixed
//!   number of long-lived workers with bounded mailboxes and routes messages
//!   to them by [`Key`]: stateful work spread over tasks, each key's work on one
//!   task, in order.
//!
//! Here a supervised source is stopped with an error and comes back:
//!
//! ```
//! use demandflow::prelude::*;
//! use demandflow::ProducerRef;
//! use demandflow::supervisor::{Restart, Strategy, Supervisor};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sup = Supervisor::builder(Strategy::OneForOne)
//!     .child("numbers", Restart::Permanent, |_children| async {
//!         producer(from_iter(0_u64..)).start()
//!     })
//!     .start()
//!     .await?;
//! let first: ProducerRef<u64> = sup.child("numbers").expect("started");
//! first.stop(Reason::error("crashed")).await?;
//! assert_eq!(first.wait().await, Reason::error("crashed"));
//!
//! while sup.restarts() == 0 {
//!     tokio::task::yield_now().await;
//! }
//! let second: ProducerRef<u64> = sup.child("numbers").expect("restarted");
//! assert!(second.is_running());
//! assert_eq!(sup.stop(Reason::Shutdown).await, Reason::Shutdown);
//! # Ok(())
//! # }
//! ```
//!
//! # The keyed scheduler
//!
//! When events carry a key, each key's events must be handled in order and one
//! at a time, and there are many more keys than you want tasks, use a
//! [`Keyed`](keyed::Keyed) scheduler from the [`keyed`] module. It keeps a
//! queue per key inside a few partitions and hands batches of ready keys to
//! workers it starts as needed; a key whose handler is slow holds up only
//! itself. Your code is a [`KeyedHandler`](keyed::KeyedHandler); a
//! [`KeyedConsumer`](keyed::KeyedConsumer) feeds the scheduler from a
//! pipeline, asking its producers only for what the scheduler has room for.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//!
//! use demandflow::keyed::{KeyedBatch, KeyedBuilder, KeyedHandler};
//! use demandflow::prelude::*;
//!
//! /// Records each account's amounts in the order they were handled.
//! #[derive(Default)]
//! struct Ledger(Mutex<HashMap<u32, Vec<i64>>>);
//!
//! impl KeyedHandler for Ledger {
//!     type Key = u32;
//!     type Event = (u32, i64);
//!
//!     async fn handle(&self, batch: &mut KeyedBatch<u32, (u32, i64)>) {
//!         let mut ledger = self.0.lock().unwrap();
//!         for (account, events) in batch.iter() {
//!             let amounts = events.iter().map(|&(_, amount)| amount);
//!             ledger.entry(*account).or_default().extend(amounts);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keyed = KeyedBuilder::hashed(Ledger::default()).start()?;
//! // 30 transfers over 3 accounts: account n % 3 gets amount n.
//! let transfers = producer(from_iter((0..30).map(|n| (n % 3, i64::from(n))))).start()?;
//! let feed = consumer(keyed.consumer(|&(account, _): &(u32, i64)| account)).start()?;
//! feed.subscribe_to(&transfers, SubscribeOptions::new()).await?;
//!
//! assert_eq!(feed.wait().await, Reason::Normal); // the source ran out
//! keyed.shutdown().await; // every event sent has been handled
//! let ledger = keyed.handler().0.lock().unwrap();
//! assert_eq!(ledger[&1], [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
//! assert_eq!(ledger.values().map(Vec::len).sum::<usize>(), 30);
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! The crate root holds the stage vocabulary: the stage traits, contexts,
//! builders, handles, sources, options, reasons, the errors you handle every
//! day, and [`Pipeline`]; [`Key`] and [`key_partition`] are here too, as they
//! are shared by everything that routes by key. The specialised parts are
//! modules named after them:
//!
//! - [`dispatcher`]: the dispatchers and the trait to write your own;
//! - [`supervisor`]: restartable stages, the consumer supervisor and the
//!   partition supervisor (the `demandflow-supervisor` crate);
//! - [`keyed`]: per-key ordered scheduling (the `demandflow-keyed` crate);
//! - [`messages`]: acknowledged messages, batchers and rate limits for
//!   services in front of a queue or broker (the `demandflow-messages` crate);
//! - [`low_level`]: the pure state machines the runtime drives, for checking
//!   numbers by hand.
//!
//! Behind the facade, `demandflow-core` holds the runtime-free parts (demand
//! accounting, the buffer, keys, the dispatcher trait and dispatchers) and
//! `demandflow-runtime` the tokio runtime (stage tasks, handles, sources,
//! streams, draining). Depend on this crate rather than on them.
//!
//! # The guide
//!
//! The guide is a book under `docs/guide/` in the repository, one concept a
//! chapter, each ending in a program that runs as a test. Open it with
//! `mdbook build docs/guide --open` from the repository root, or read the
//! markdown files directly:
//!
//! - Introduction, a map of the book — `docs/guide/introduction.md`
//! - Your first pipeline — `docs/guide/01-first-pipeline.md`
//! - Demand by numbers — `docs/guide/02-demand.md`
//! - Producers that wait for input — `docs/guide/03-waiting-producers.md`
//! - Dispatchers: who gets which events — `docs/guide/04-dispatchers.md`
//! - Failure and restarts — `docs/guide/05-failure.md`
//! - One task per event — `docs/guide/06-one-task-per-event.md`
//! - Messages: acknowledgements, batches, rate limits — `docs/guide/07-messages.md`
//! - Keyed workers and per-key order — `docs/guide/08-keyed-workers.md`
//! - Shutting down cleanly — `docs/guide/09-shutting-down.md`
//! - Testing pipelines — `docs/guide/10-testing.md`
//! - Performance — `docs/guide/11-performance.md`
//! - An event-timeline service — `docs/guide/12-timeline.md`
//! - Write-behind to a database — `docs/guide/13-write-behind.md`
//! - More than one machine — `docs/guide/14-more-than-one-machine.md`
//! - Observing a pipeline — `docs/guide/15-observing.md`
//! - A batching analytics sender — `docs/guide/16-analytics.md`
//! - Coming from GenStage — `docs/guide/20-coming-from-genstage.md`
//!
//! [tokio]: https://docs.rs/tokio

pub mod dispatcher;
pub mod low_level;
pub mod prelude;

// The stage vocabulary: stages, contexts, builders, handles, sources, options,
// reasons and the errors a pipeline's code handles every day.
pub use demandflow_core::{
    BufferKeep, CancelMode, CancelReason, ConfigError, DEFAULT_BUFFER_SIZE, DEFAULT_MAX_DEMAND,
    Reason, StageId, SubscribeOptions, SubscriptionId,
};
pub use demandflow_runtime::{
    AsProducer, CallError, Consumer, ConsumerBuilder, ConsumerContext, ConsumerRef, Context,
    DemandFlow, DemandMode, DrainOutcome, DrainReport, EventStream, Fuse, Fused, FusedChain,
    HandleCall, Info, InfoSender, IterSource, NotRunning, Peer, Pipeline, Producer,
    ProducerBuilder, ProducerConsumer, ProducerConsumerBuilder, ProducerConsumerRef, ProducerRef,
    PushSource, Pusher, Request, SendError, StageDrain, StageHandle, StageKind, StageMonitor,
    StageStats, Stall, StartError, StreamSource, SubscribeError, SubscriptionStats, TrySendError,
    consumer, from_iter, from_stream, fuse, producer, producer_consumer, push,
};
// Stages made from a closure.
pub use demandflow_runtime::{
    Filter, FilterMap, FlatMap, ForEach, Inspect, Map, filter, filter_map, flat_map, for_each,
    inspect, map,
};

// Keys, shared by everything that routes by key: the partition dispatcher,
// the partition supervisor and the keyed scheduler.
pub use demandflow_core::{Hashed, Key, KeyHasher, key_partition};

// Parts with a crate of their own, each a module of the facade named after it.
// A new crate joins here with one line.
pub use demandflow_keyed as keyed;
pub use demandflow_messages as messages;
/// The process-wide registry of live stages, supervisors and keyed schedulers,
/// for dashboards and metrics (see `docs/guide/15-observing.md`).
pub use demandflow_runtime::registry;
pub use demandflow_supervisor as supervisor;

//! What connector crates (a Redis Streams source, a Kafka source, one of your
//! own) share: the stage of one source copy, and the counters a source reports.
//!
//! A broker's client blocks or waits on the network, so a source copy reads on
//! a task or a thread of its own and hands what it read to its stage. The
//! stage side of that arrangement is the same for every broker: pass the
//! demand on, emit what arrives, stop the reader when the stage drains, stops
//! or is dropped. [`FeedStage`] is that stage; a connector writes only its
//! [`Feed`], the reading side. [`source_counters!`](crate::source_counters)
//! declares a source's live counters and the snapshot its `metrics()` returns
//! from one list of names.
//!
//! Reach for this module when you write a source for a broker that is not
//! covered; a pipeline that only uses sources needs none of it.
//!
//! # Examples
//!
//! A feed that emits numbers on a task of its own, only as many as asked:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
//! use demandflow_messages::connector::{Deliver, Feed, FeedStage};
//! use demandflow_messages::{AckRef, Message};
//! use demandflow_runtime::{consumer, producer, Consumer, ConsumerContext, SubscriptionId};
//! use tokio::sync::{mpsc, Notify};
//!
//! #[derive(Default)]
//! struct Numbers {
//!     wanted: Arc<(AtomicU64, AtomicBool, Notify)>,
//! }
//!
//! impl Feed for Numbers {
//!     type Data = u64;
//!
//!     fn start(&mut self, deliver: Deliver<u64>) {
//!         let wanted = self.wanted.clone();
//!         tokio::spawn(async move {
//!             let mut next = 0;
//!             while !wanted.1.load(Ordering::Acquire) {
//!                 let n = wanted.0.swap(0, Ordering::AcqRel);
//!                 if n == 0 {
//!                     wanted.2.notified().await;
//!                     continue;
//!                 }
//!                 let messages = (next..next + n).map(|i| Message::new(i, AckRef::noop()));
//!                 next += n;
//!                 if !deliver.send(messages.collect()) {
//!                     return; // the stage has stopped
//!                 }
//!             }
//!         });
//!     }
//!
//!     fn demand(&mut self, demand: u64) {
//!         self.wanted.0.fetch_add(demand, Ordering::AcqRel);
//!         self.wanted.2.notify_one();
//!     }
//!
//!     fn stop(&mut self) {
//!         self.wanted.1.store(true, Ordering::Release);
//!         self.wanted.2.notify_one();
//!     }
//! }
//!
//! struct Collect(mpsc::UnboundedSender<u64>);
//!
//! impl Consumer for Collect {
//!     type Event = Message<u64>;
//!
//!     async fn handle_events(&mut self, events: Vec<Message<u64>>, _: SubscriptionId, _: &mut ConsumerContext) {
//!         for m in events {
//!             let _ = self.0.send(m.data);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, mut rx) = mpsc::unbounded_channel();
//! let source = producer(FeedStage::new(Numbers::default())).start().unwrap();
//! let sink = consumer(Collect(tx)).start().unwrap();
//! sink.subscribe_to(&source, Default::default()).await.unwrap();
//! for expected in 0..5 {
//!     assert_eq!(rx.recv().await, Some(expected));
//! }
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;

use demandflow_runtime::{Context, Info, InfoSender, Producer, Reason};

use crate::message::Message;

/// The reading side of a source copy: a task or thread that fetches from a
/// broker only as much as its stage was asked, and hands it over with
/// [`Deliver::send`].
///
/// [`FeedStage`] calls these methods from its stage's task, one at a time.
/// What the stage guarantees to you: `start` is called once, before any
/// `demand`; `demand` is called with every demand the stage's consumers
/// make (> 0) and never with more than they asked; `stop` is called when
/// the stage drains, terminates or is dropped, possibly more than once.
/// What you guarantee back: never deliver more messages than the demand
/// you were given, and let the reader end soon after `stop` (what it has in
/// flight then may be delivered or dropped: the stage no longer emits it,
/// and a dropped message is acknowledged as failed by its
/// [`AckRef`](crate::AckRef)).
pub trait Feed: Send + 'static {
    /// The data of the messages this feed reads.
    type Data: Send + 'static;

    /// Starts reading; messages go to the stage through `deliver`.
    fn start(&mut self, deliver: Deliver<Self::Data>);

    /// The stage's consumers asked for `demand` more messages.
    fn demand(&mut self, demand: u64);

    /// Stops reading. Called again after the first time, it does nothing.
    fn stop(&mut self);
}

/// Hands messages from a [`Feed`]'s reader to its stage; cheap to clone and
/// usable from any thread.
pub struct Deliver<T> {
    to: InfoSender,
    data: PhantomData<fn(T)>,
}

impl<T: Send + 'static> Deliver<T> {
    /// Queues `messages` for the stage to emit, behind what it already
    /// buffered. Returns `false` when the stage has stopped: the messages are
    /// dropped (and so acknowledged as failed), and the reader should end.
    pub fn send(&self, messages: Vec<Message<T>>) -> bool {
        self.to.send(Delivered(messages)).is_ok()
    }
}

impl<T> Clone for Deliver<T> {
    fn clone(&self) -> Self {
        Deliver {
            to: self.to.clone(),
            data: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Deliver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deliver").finish_non_exhaustive()
    }
}

/// Messages a feed read, on their way to its stage.
struct Delivered<T>(Vec<Message<T>>);

/// The producer stage of one source copy: passes demand to its [`Feed`] and
/// emits what the feed delivers.
///
/// When the stage drains, it stops the feed and then stops itself once what
/// it buffered has been dispatched; messages the feed delivers after that
/// are dropped with the stage's mailbox (and acknowledged as failed), so a
/// broker that redelivers unacknowledged messages delivers them again.
pub struct FeedStage<F: Feed> {
    feed: F,
}

impl<F: Feed> FeedStage<F> {
    /// The stage of a copy reading with `feed`.
    pub fn new(feed: F) -> Self {
        FeedStage { feed }
    }

    /// The feed.
    pub fn feed(&self) -> &F {
        &self.feed
    }
}

impl<F: Feed> Producer for FeedStage<F> {
    type Event = Message<F::Data>;

    async fn init(&mut self, ctx: &mut Context<Self::Event>) {
        self.feed.start(Deliver {
            to: ctx.info_sender(),
            data: PhantomData,
        });
    }

    async fn handle_demand(&mut self, demand: u64, _ctx: &mut Context<Self::Event>) {
        self.feed.demand(demand);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Self::Event>) {
        match info.downcast::<Delivered<F::Data>>() {
            Ok(Delivered(messages)) => ctx.emit_vec(messages),
            Err(other) => tracing::debug!(?other, "source copy: unexpected info message"),
        }
    }

    async fn handle_drain(&mut self, ctx: &mut Context<Self::Event>) {
        self.feed.stop();
        ctx.stop_after_buffered(Reason::Shutdown);
    }

    async fn terminate(&mut self, _reason: &Reason) {
        self.feed.stop();
    }
}

impl<F: Feed> Drop for FeedStage<F> {
    fn drop(&mut self) {
        self.feed.stop();
    }
}

impl<F: Feed + fmt::Debug> fmt::Debug for FeedStage<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.feed.fmt(f)
    }
}

/// Declares the counters of a source from one list of names: the live
/// counters its copies add to (atomics, shared behind an `Arc`), and the
/// snapshot its `metrics()` method returns.
///
/// The first struct is the live one: it gets every name as an `AtomicU64`
/// field, `add(&counter, n)` and `snapshot()`. The second is the public
/// snapshot: every name as a `u64` field, with its docs and attributes as
/// written, deriving `Clone`, `Copy`, `Debug`, `Default`, `PartialEq` and
/// `Eq`. Counts use relaxed atomics: each is exact, but a snapshot taken while
/// copies run is not one instant across counters.
///
/// # Examples
///
/// ```
/// demandflow_messages::source_counters! {
///     /// The live counters.
///     pub(crate) struct Counters;
///
///     /// What `metrics()` returns.
///     #[non_exhaustive]
///     pub struct SourceMetrics {
///         /// Entries read.
///         pub read: u64,
///         /// Entries acknowledged.
///         pub acked: u64,
///     }
/// }
///
/// let live = Counters::default();
/// Counters::add(&live.read, 3);
/// Counters::add(&live.acked, 2);
/// Counters::add(&live.read, 1);
/// let seen = live.snapshot();
/// assert_eq!((seen.read, seen.acked), (4, 2));
/// ```
#[macro_export]
macro_rules! source_counters {
    (
        $(#[$live_meta:meta])*
        $live_vis:vis struct $live:ident;

        $(#[$snapshot_meta:meta])*
        $snapshot_vis:vis struct $snapshot:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident: u64, )*
        }
    ) => {
        $(#[$live_meta])*
        #[derive(Debug, Default)]
        $live_vis struct $live {
            $( $live_vis $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $live {
            /// Adds `n` to `counter`.
            $live_vis fn add(counter: &::std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Reads every counter.
            $live_vis fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $( $field: self.$field.load(::std::sync::atomic::Ordering::Relaxed), )*
                }
            }
        }

        $(#[$snapshot_meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $snapshot_vis struct $snapshot {
            $( $(#[$field_meta])* $field_vis $field: u64, )*
        }
    };
}

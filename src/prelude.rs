//! The names nearly every pipeline uses, in one import.
//!
//! ```
//! use demandflow::prelude::*;
//! ```
//!
//! brings in the three stage traits and the types their callbacks take
//! ([`Context`], [`ConsumerContext`], [`SubscriptionId`], [`CancelReason`],
//! [`Info`], [`Peer`]), the traits of typed calls ([`Request`], [`HandleCall`]),
//! the builders that
//! start stages ([`producer`], [`producer_consumer`], [`consumer`]), the
//! ready-made sources ([`from_iter`], [`from_stream`], [`push`]) and the options
//! and reasons a pipeline is wired and stopped with ([`SubscribeOptions`],
//! [`CancelMode`], [`DemandMode`], [`Reason`]).
//!
//! Import it in every module that writes or starts stages. Everything else is
//! imported by name when it is needed: handles, buffer options,
//! statistics and errors from the crate root, and the specialised parts from
//! their modules ([`dispatcher`](crate::dispatcher),
//! [`supervisor`](crate::supervisor), [`keyed`](crate::keyed),
//! [`low_level`](crate::low_level)).
//!
//! # Examples
//!
//! ```
//! use demandflow::prelude::*;
//!
//! struct Numbers(u64);
//!
//! impl Producer for Numbers {
//!     type Event = u64;
//!
//!     async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
//!         ctx.emit_all(self.0..self.0 + demand);
//!         self.0 += demand;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let numbers = producer(Numbers(0)).start().unwrap();
//! assert!(numbers.is_running());
//! # }
//! ```

pub use crate::{
    CancelMode, CancelReason, Consumer, ConsumerContext, Context, DemandMode, HandleCall, Info,
    Peer, Producer, ProducerConsumer, Reason, Request, SubscribeOptions, SubscriptionId, consumer,
    from_iter, from_stream, producer, producer_consumer, push,
};

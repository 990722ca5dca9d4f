//! The pure state machines the runtime drives, for checking numbers by hand.
//!
//! Nothing here is needed to build a pipeline. Reach for these types to see
//! exactly what the runtime will do without starting a task — how a consumer
//! cuts batches and when it asks again ([`AutoDemand`], [`split_chunks`]),
//! what a producer keeps when its buffer overflows ([`Buffer`]) — or to test a
//! stage or dispatcher of your own against the same arithmetic. The keyed
//! scheduler's per-partition state machine is
//! [`keyed::KeyedQueue`](crate::keyed::KeyedQueue).
//!
//! # Examples
//!
//! ```
//! use demandflow::low_level::{AutoDemand, split_chunks};
//!
//! // max_demand 10, min_demand 5: chunks of 5, ask again once 5 are pending.
//! let mut demand = AutoDemand::new(10, 5);
//! assert_eq!(demand.subscribe(), 10);
//! let chunks: Vec<Vec<u32>> = split_chunks((0..10).collect(), demand.chunk_len()).collect();
//! assert_eq!(chunks, [vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]);
//! assert_eq!(demand.consume(5), 5);
//! ```

pub use demandflow_core::{AutoDemand, Buffer, split_chunks};

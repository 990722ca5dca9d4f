//! Supervision for demandflow: stages that restart when they fail, and
//! per-key ordered concurrency.
//!
//! A [`Supervisor`] starts stages from factories, watches them, and restarts
//! them with OTP's strategies (one for one, rest for one, one for all) and
//! restart intensity. A [`Keyed`] scheduler runs a handler on events
//! partitioned by key: one worker per key at a time, in order, many keys at
//! once (see [`KeyedQueue`] for its rules). Most users reach both through the
//! `demandflow` facade.

mod keyed;
mod stage_supervisor;

pub use keyed::{
    DenseKeys, HashedKeys, KeyHold, KeyIndex, Keyed, KeyedBatch, KeyedBuilder, KeyedConsumer,
    KeyedHandler, KeyedPanic, KeyedQueue, KeyedSendError, KeyedStats, KeyedTrySendError,
};
pub use stage_supervisor::{
    Children, Restart, StartChildError, Strategy, Supervisor, SupervisorBuilder,
};

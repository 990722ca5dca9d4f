//! Supervision for demandflow: stages that restart when they fail, a consumer
//! that runs a worker per event, and long-lived partition workers.
//!
//! A [`Supervisor`] starts stages from factories, watches them, and restarts
//! them with OTP's strategies (one for one, rest for one, one for all) and
//! restart intensity. Most users reach it through the `demandflow` facade.
//!
//! A [`ConsumerSupervisor`] is a consumer stage that starts one worker task
//! per event, never more at a time than the subscription's `max_demand` per
//! producer, and asks for more events as workers finish (GenStage's
//! `ConsumerSupervisor`; SEMANTICS.md §5). Use it when each event is an
//! independent piece of slow work, such as a request or a file, and you want
//! them done concurrently with the producer's back-pressure intact. When the
//! workers are short or mostly wait, [`WorkerMode::Inline`] runs them as
//! futures polled by the supervisor's own task instead of tasks of their own:
//! several times cheaper per worker, at the price of workers taking turns.
//!
//! A [`PartitionSupervisor`] runs N long-lived workers, one per partition, each
//! with a bounded mailbox, and routes messages to them by key (Elixir's
//! `PartitionSupervisor`). Use it to spread stateful work over a fixed number of
//! tasks while all the work for one key stays on one task, in order.
//!
//! Per-key ordered scheduling (`Keyed`) is not supervision and lives in its
//! own crate, `demandflow-keyed`.

mod consumer;
mod error;
mod intensity;
mod partition;
mod stage_supervisor;
mod worker_monitor;

pub use consumer::{ConsumerSupervisor, ConsumerSupervisorBuilder, Worker, WorkerMode};
pub use error::{BuildError, StartChildError};
pub use partition::{CallError, PartitionSupervisor, PartitionSupervisorBuilder, PartitionWorker};
pub use stage_supervisor::{Children, Restart, Strategy, Supervisor, SupervisorBuilder};
pub use worker_monitor::{
    WorkerCounts, WorkerId, WorkerInfo, WorkerMonitor, WorkerState, WorkerStats,
};

//! Every public type of the supervisor crate is `Send` (and `Sync` where shared).

use std::convert::Infallible;
use std::future::Ready;

use demandflow_core::Hashed;
use demandflow_supervisor::*;

fn send<T: Send>() {}
fn sync<T: Sync>() {}

type Job = fn(u64) -> Ready<Result<(), Infallible>>;

#[test]
fn consumer_supervisor_types_are_send_and_sync() {
    send::<ConsumerSupervisor<u64, Job>>();
    sync::<ConsumerSupervisor<u64, Job>>();
    send::<ConsumerSupervisorBuilder<u64, Job>>();
    sync::<ConsumerSupervisorBuilder<u64, Job>>();
    send::<WorkerMonitor>();
    sync::<WorkerMonitor>();
    send::<WorkerStats>();
    sync::<WorkerStats>();
    send::<WorkerId>();
    sync::<WorkerId>();
    send::<WorkerInfo>();
    sync::<WorkerInfo>();
    send::<WorkerState>();
    sync::<WorkerState>();
    send::<WorkerCounts>();
    sync::<WorkerCounts>();
    send::<Restart>();
    sync::<Restart>();
    send::<BuildError>();
    sync::<BuildError>();
}

#[test]
fn partition_supervisor_types_are_send_and_sync() {
    send::<PartitionSupervisor<String, u64>>();
    sync::<PartitionSupervisor<String, u64>>();
    send::<PartitionSupervisorBuilder<fn(usize) -> ()>>();
    sync::<PartitionSupervisorBuilder<fn(usize) -> ()>>();
    send::<CallError<String>>();
    sync::<CallError<String>>();
    send::<Hashed<String>>();
    sync::<Hashed<String>>();
}

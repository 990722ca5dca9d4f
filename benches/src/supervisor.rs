//! The `consumer_supervisor` rows: workers started and finished per second, with workers on
//! tasks of their own and polled inline by the supervisor (`consumer_supervisor inline`).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use demandflow::supervisor::{ConsumerSupervisor, WorkerMode};
use demandflow::{Reason, SubscribeOptions, consumer, from_iter, producer};

use crate::Sample;

/// The scenario of the `consumer_supervisor` row at `max_demand`: a producer of `0..events`
/// feeding a consumer supervisor whose worker does nothing but look at its event, so the figure
/// is the supervisor's own cost per worker (start a task, learn it finished, ask again).
///
/// The scenario owns a multi-thread tokio runtime with 2 workers, like the tokio baseline, built
/// at its first run, outside the timing. Each run starts fresh stages, starts the clock, subscribes (the
/// supervisor asks `max_demand`, so up to `max_demand` workers run at once), and stops the clock
/// when the supervisor has stopped: the source ends after its last event, and the supervisor
/// (subscribed as permanent) waits for its last workers before it stops.
///
/// # Panics
///
/// If the runtime cannot be built, or a run did not start and finish exactly `events` workers.
pub fn consumer_supervisor(max_demand: u64) -> Box<dyn FnMut(u64) -> Sample> {
    crate::topologies::scenario(move |events| run(events, max_demand, WorkerMode::Task))
}

/// The scenario of the `consumer_supervisor inline` row at `max_demand`: the
/// [`consumer_supervisor`] scenario with [`WorkerMode::Inline`], so the workers are futures
/// polled by the supervisor's own task instead of tasks of their own.
///
/// # Panics
///
/// As [`consumer_supervisor`].
pub fn consumer_supervisor_inline(max_demand: u64) -> Box<dyn FnMut(u64) -> Sample> {
    crate::topologies::scenario(move |events| run(events, max_demand, WorkerMode::Inline))
}

async fn run(events: u64, max_demand: u64, mode: WorkerMode) -> Sample {
    let supervisor = ConsumerSupervisor::builder(|event: u64| async move {
        black_box(event);
        Ok::<(), Infallible>(())
    })
    .worker_mode(mode)
    .build()
    .expect("the default options are valid");
    let workers = supervisor.monitor();
    let source = producer(from_iter(0..events))
        .start()
        .expect("starting the producer");
    let stage = consumer(supervisor)
        .start()
        .expect("starting the consumer supervisor");
    let start = Instant::now();
    stage
        .subscribe_to(&source, SubscribeOptions::new().max_demand(max_demand))
        .await
        .expect("subscribing the consumer supervisor");
    let reason = stage.wait().await;
    let elapsed = start.elapsed();
    assert_eq!(reason, Reason::Normal, "the supervisor stopped abnormally");
    let stats = workers.stats();
    assert_eq!(
        (stats.started, stats.succeeded, stats.aborted),
        (events, events, 0),
        "every event must start one worker that finishes"
    );
    Sample::new(events, elapsed)
}

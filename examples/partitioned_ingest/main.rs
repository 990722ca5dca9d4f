//! Partitioned ingest: count user events per id on keyed partition workers, and
//! flush the counts every second.
//!
//! What it teaches:
//!
//! - a [`PartitionSupervisor`] of 3 ingestors, keyed by event id, so every
//!   event with the same id is counted by the same worker, with no locks;
//! - calling a partition and awaiting its answer: each generator worker calls
//!   its event's partition, so it knows when the event was counted, and each
//!   flusher calls its partition every second to swap out the counts (`cast`
//!   is the fire-and-forget alternative);
//! - a [`ConsumerSupervisor`] as a load generator with a bound: one worker task
//!   per event, never more than `max_demand` (2,000) in flight, each waiting
//!   until its event has been counted;
//! - checking that nothing was lost: the counts of all flushes add up to the
//!   events sent, and each id shows up in its own partition's flushes only.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example partitioned_ingest
//! # fewer events, faster flushes:
//! cargo run --release --example partitioned_ingest -- --events 20000 --flush-ms 100
//! INGEST_EVENTS=20000 INGEST_FLUSH_MS=100 cargo run --release --example partitioned_ingest
//! # watch it on the dashboard (http://127.0.0.1:4040/) for a longer run:
//! cargo run --release --example partitioned_ingest -- --dashboard 127.0.0.1:4040 --events 20000000
//! ```
//!
//! With `--dashboard ADDR`, the [dashboard](demandflow_dashboard) serves the
//! live topology on `ADDR` for the whole run: the `events` source, the
//! `generator` consumer supervisor subscribed to it with its demand, and the
//! `ingestors` partition supervisor with each partition's mailbox backlog.
//!
//! It logs each non-empty flush, prints the throughput and, as its last line,
//! `RESULT {json}` with the events sent, the events counted over all flushes and
//! the split per partition. It exits with a non-zero status if the check fails.

use std::process::ExitCode;

use partitioned_ingest::{Config, PARTITIONS, fixtures, run};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let dashboard = match demandflow_dashboard::start_from_args(&mut args).await {
        Ok(dashboard) => dashboard,
        Err(e) => {
            eprintln!("partitioned_ingest: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dashboard) = &dashboard {
        println!("dashboard on {}", dashboard.url());
    }
    let config = match Config::from_env_and_args(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("partitioned_ingest: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "sending {} events, at most {} in flight, to {PARTITIONS} partitions flushed every {:?}, picked from:",
        config.events, config.max_in_flight, config.flush_every
    );
    for event in fixtures() {
        println!(
            "  id {} (user {}): {}",
            event.id, event.user_id, event.action_data
        );
    }
    let report = run(config).await;
    drop(dashboard);
    let split = report.per_partition();
    println!(
        "sent {} events in {:.3} s: {:.0} events/s; counted {} over {} flushes, per partition {split:?}",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.sent as f64 / report.elapsed.as_secs_f64(),
        report.counted(),
        report.flushes.len(),
    );
    let ok = match report.check() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("partitioned_ingest: check failed: {e}");
            false
        }
    };
    println!("RESULT {}", report.result_json());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

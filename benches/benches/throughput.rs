//! Throughput of demandflow topologies at each max_demand, measured next to the channel
//! pipelines a user would write instead.
//!
//! ```text
//! cargo bench -p demandflow-benches --bench throughput -- --quick
//! ```
//!
//! See `benches/README.md` for the options, what each figure measures and how to compare runs.

use std::process::ExitCode;
use std::sync::Arc;

use demandflow_benches::{
    BatchSizes, Scenario, ThroughputSuite, crossbeam_batched, tokio_mpsc_batched,
    tokio_mpsc_round_trip, tokio_spawn,
};

/// Events per batch in the baselines (the `_1000` of their names).
const BATCH: usize = 1_000;

/// Batches a baseline's channel holds before the producer waits: 16 batches, 16 000 events.
const CHANNEL_CAPACITY: usize = 16;

/// The max_demand of every row, as BENCH.md lists them.
const MAX_DEMANDS: [u64; 5] = [1, 10, 100, 1_000, 10_000];

/// The max_demand of the `P->partition->C fill-ahead` rows (issue 19 item 4).
const FILL_AHEAD_MAX_DEMANDS: [u64; 3] = [1, 10, 1_000];
/// The max_demands of the fused rows: small demand, where fusing matters, and 1000 to show
/// what it does where batches are large.
const FUSED_MAX_DEMANDS: [u64; 3] = [1, 10, 1_000];

/// The topologies of BENCH.md, one line of the plot each.
#[derive(Debug, Clone, Copy)]
enum Topology {
    /// A producer and a consumer.
    Direct,
    /// A producer, a producer-consumer and a consumer in a row.
    ThroughStage,
    /// A producer with the demand dispatcher and 4 consumers.
    DemandFanOut,
    /// A producer with the broadcast dispatcher and 2 consumers, each receiving every event.
    Broadcast,
    /// A producer with the partition dispatcher and one consumer per core.
    Partition,
    /// A consumer supervisor starting a worker per event: workers started and finished per second.
    ConsumerSupervisor,
}

impl Topology {
    /// Every topology, in the order of the table.
    const ALL: [Topology; 6] = [
        Topology::Direct,
        Topology::ThroughStage,
        Topology::DemandFanOut,
        Topology::Broadcast,
        Topology::Partition,
        Topology::ConsumerSupervisor,
    ];

    /// The `"topology"` of its rows in the RESULT line.
    fn label(self) -> &'static str {
        match self {
            Topology::Direct => "P->C",
            Topology::ThroughStage => "P->PC->C",
            Topology::DemandFanOut => "P->4C demand",
            Topology::Broadcast => "P->2C broadcast",
            Topology::Partition => "P->partition->C",
            Topology::ConsumerSupervisor => "consumer_supervisor",
        }
    }

    /// The scenario measuring this topology with consumers subscribed at `max_demand`.
    fn scenario(self, max_demand: u64) -> Option<Scenario> {
        Some(match self {
            Topology::Direct => demandflow_benches::p_to_c(max_demand),
            Topology::ThroughStage => demandflow_benches::p_pc_c(max_demand),
            Topology::DemandFanOut => demandflow_benches::p_4c_demand(max_demand),
            Topology::Broadcast => demandflow_benches::p_2c_broadcast(max_demand),
            Topology::Partition => demandflow_benches::p_partition_c(max_demand),
            Topology::ConsumerSupervisor => demandflow_benches::consumer_supervisor(max_demand),
        })
    }
}

fn main() -> ExitCode {
    let mut suite = ThroughputSuite::new();
    suite
        .baseline("crossbeam_batched_1000", |events| {
            crossbeam_batched(events, BATCH, CHANNEL_CAPACITY)
        })
        .baseline("tokio_mpsc_batched_1000", |events| {
            tokio_mpsc_batched(events, BATCH, CHANNEL_CAPACITY)
        })
        // Floors rather than alternatives: what tokio itself costs for one event at
        // max_demand 1 (a round trip) and for one worker (a spawned task).
        .baseline("tokio_mpsc_round_trip_1", tokio_mpsc_round_trip)
        .baseline("tokio_spawn_1000", |workers| tokio_spawn(workers, BATCH));

    // Rows without a scenario yet, named in one line: `P->C` when all its max_demands are missing.
    let mut pending = Vec::new();
    // Events per batch the partitions' consumers received, by row, printed after the table.
    let mut per_batch: Vec<(String, u64, Arc<BatchSizes>)> = Vec::new();
    let partitions = num_cpus::get().max(1);
    for topology in Topology::ALL {
        let mut missing = Vec::new();
        for max_demand in MAX_DEMANDS {
            let run = match topology {
                Topology::Partition => {
                    let sizes = Arc::new(BatchSizes::default());
                    per_batch.push((topology.label().to_owned(), max_demand, sizes.clone()));
                    Some(demandflow_benches::partitions(
                        partitions, max_demand, sizes,
                    ))
                }
                _ => topology.scenario(max_demand),
            };
            match run {
                Some(run) => {
                    suite.row(topology.label(), max_demand, run);
                }
                None => missing.push(max_demand.to_string()),
            }
        }
        match missing.len() {
            0 => {}
            n if n == MAX_DEMANDS.len() => pending.push(topology.label().to_owned()),
            _ => pending.push(format!(
                "{} at max_demand {}",
                topology.label(),
                missing.join(", ")
            )),
        }
    }
    // Fused chains (`demandflow::fuse`): the stages of `P->C` and `P->PC->C` in one task, at
    // the small max_demands where the messages between stage tasks bound the unfused rows.
    for max_demand in FUSED_MAX_DEMANDS {
        suite.row(
            "P->C fused",
            max_demand,
            demandflow_benches::fused(max_demand, false),
        );
        suite.row(
            "P->PC->C fused",
            max_demand,
            demandflow_benches::fused(max_demand, true),
        );
    }
    // What the registry costs the stages: `P->PC->C` with nobody reading the registry (off)
    // and with a task reading all of it every 10 ms (on: a hundred times a dashboard's rate),
    // measured alternately run by run so that the machine's drift cannot hide or fake a few
    // percent. Registration itself cannot be switched off (see benches/README.md).
    for max_demand in [1, 100, 1_000] {
        suite.paired_rows(
            max_demand,
            (
                "P->PC->C registry off",
                demandflow_benches::p_pc_c(max_demand),
            ),
            (
                "P->PC->C registry read",
                demandflow_benches::p_pc_c_observed(max_demand),
            ),
        );
    }
    // The consumer supervisor with its workers polled inline by its own task (WorkerMode::Inline),
    // read next to `consumer_supervisor` (a task per worker) and `tokio_spawn_1000`.
    for max_demand in [1, 10, 100, 1_000] {
        suite.row(
            "consumer_supervisor inline",
            max_demand,
            demandflow_benches::consumer_supervisor_inline(max_demand),
        );
    }
    // Broadway-style messages (demandflow-messages): read next to `P->PC->C` at max_demand 1000.
    suite.row("messages", 1_000, demandflow_benches::messages(1_000));
    // The partition dispatcher filling its queues ahead of demand, measured alternately with
    // `P->C` (its target is a ratio to `P->C` at the same max_demand, and two rows measured
    // apart drift by more than that on a loaded machine); `P->partition->C` is the row above.
    for max_demand in FILL_AHEAD_MAX_DEMANDS {
        let label = "P->partition->C fill-ahead";
        let sizes = Arc::new(BatchSizes::default());
        per_batch.push((label.to_owned(), max_demand, sizes.clone()));
        suite.paired_rows(
            max_demand,
            ("P->C paired", demandflow_benches::p_to_c(max_demand)),
            (
                label,
                demandflow_benches::p_partition_c_fill_ahead(max_demand, sizes),
            ),
        );
    }

    if !pending.is_empty() {
        eprintln!(
            "throughput: no scenario yet for {} (see Topology::scenario)",
            pending.join("; ")
        );
    }

    let code = suite.run_cli();
    // On stderr: stdout ends with the RESULT line.
    let measured: Vec<String> = per_batch
        .iter()
        .filter(|(_, _, sizes)| sizes.average().is_finite())
        .map(|(label, max_demand, sizes)| {
            format!("{label} max_demand={max_demand}: {:.1}", sizes.average())
        })
        .collect();
    if !measured.is_empty() {
        eprintln!(
            "events per batch the partitions' consumers received ({partitions} partitions, every run): {}",
            measured.join("; ")
        );
    }
    code
}

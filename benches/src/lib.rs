//! The harness shared by demandflow's bench targets (see `benches/README.md`, and the project's
//! shared `BENCH.md` for the conventions every benchmark follows).
//!
//! A bench target is a plain `main` (`harness = false`) that describes its scenarios and hands
//! them to the harness, which
//!
//! - reads the command line ([`Args`]): `--quick`, `--compare FILE`, filters, and whether cargo
//!   runs it as a benchmark (`--bench`) or as a smoke test under `cargo test`;
//! - measures each scenario ([`measure`]): calibrates the event count to a run length, warms up,
//!   repeats, and reports the median events per second;
//! - prints progress to stderr ([`Progress`], a bar on full runs), a table to stdout and, as
//!   the very last line of stdout, `RESULT {json}` with the keys BENCH.md fixes
//!   ([`result_line`], with `serde_json`);
//! - provides the baselines a user would write instead ([`crossbeam_batched`],
//!   [`tokio_mpsc_batched`]), to be measured in the same run as the figures they frame;
//! - on a full run, draws the figures next to the baselines as an SVG under
//!   `target/bench-report/` ([`LogLogPlot`], drawn by `plotters`, and [`report_dir`]).
//!
//! A scenario is a closure that is given a number of events, moves them, and returns what it
//! moved in how long:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use demandflow_benches::{Config, Sample, measure};
//!
//! let config = Config { warmups: 1, reps: 3, run_time: Duration::from_millis(5), min_events: 100 };
//! let measurement = measure(&config, |events| {
//!     let start = Instant::now();
//!     let sum: u64 = (0..events).map(std::hint::black_box).sum();
//!     let elapsed = start.elapsed();
//!     assert_eq!(sum, events * (events - 1) / 2, "check the work so it cannot be optimised away");
//!     Sample::new(events, elapsed)
//! });
//! assert_eq!(measurement.rates.len(), 3);
//! ```

mod args;
mod baselines;
mod latency;
mod measure;
mod messages;
mod paths;
mod plot;
mod progress;
mod result;
mod scaling;
mod supervisor;
mod throughput;
mod topologies;

pub use args::{Args, ArgsError, Mode, USAGE};
pub use baselines::{crossbeam_batched, tokio_mpsc_batched, tokio_mpsc_round_trip, tokio_spawn};
pub use latency::{
    LatencyFigures, LatencySummary, LatencyTopology, measure_pipeline, measure_tokio_hops,
    measure_tokio_mpsc,
};
pub use measure::{Config, Measurement, QUICK_BUDGET, Sample, measure, measure_pair, median};
pub use messages::messages;
pub use paths::{report_dir, target_dir};
pub use plot::{LogLogPlot, Reference, Series};
pub use progress::Progress;
pub use result::{last_result, result_line, rounded};
pub use scaling::{
    BatchSizes, chain, fan_out_broadcast, fan_out_demand, idle_stage_bytes, keyed, partitions,
    partitions_fill_ahead,
};
pub use supervisor::{consumer_supervisor, consumer_supervisor_inline};
pub use throughput::{
    BaselineFigure, MeasuredBaseline, MeasuredRow, ReadResultError, RowFigure, ThroughputFigures,
    ThroughputReport, ThroughputSuite,
};
pub use topologies::{
    Scenario, fused, p_2c_broadcast, p_4c_demand, p_partition_c, p_partition_c_fill_ahead, p_pc_c,
    p_pc_c_observed, p_to_c,
};

//! How the cost of moving events grows with the size of the topology, measured in one run:
//! a chain of 1 to 16 producer-consumers, fan-out to 1 to 64 consumers (demand and broadcast
//! dispatchers), 1 to 64 partitions, a keyed scheduler over 1 k to 1 M keys, and the memory of
//! an idle stage.
//!
//! ```text
//! cargo bench -p demandflow-benches --bench scaling -- --quick
//! ```
//!
//! Every curve is read against its own first point (1 stage, 1 consumer, 1 partition, 1 k
//! keys) and against a plain tokio mpsc pipeline measured in the same run. See
//! `benches/README.md` for the figures and what bounds them.

use std::fmt::Write as _;
use std::fs;
use std::process::ExitCode;
use std::sync::Arc;

use demandflow_benches::{
    Args, BatchSizes, Config, LogLogPlot, Measurement, Mode, Progress, Reference, Sample, Series,
    chain, fan_out_broadcast, fan_out_demand, idle_stage_bytes, keyed, measure, partitions,
    partitions_fill_ahead, report_dir, result_line, rounded, tokio_mpsc_batched,
};
use serde_json::{Value, json};

/// max_demand of every subscription (the default of `SubscribeOptions`).
const MAX_DEMAND: u64 = 1_000;
/// Producer-consumers in the chain.
const CHAIN: [u64; 5] = [1, 2, 4, 8, 16];
/// Consumers of a fan-out, partitions of a partition dispatcher.
const WIDTHS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];
/// Events a scenario moves in a smoke run (`cargo test --benches`).
const SMOKE_EVENTS: u64 = 1_000;
/// The targets of the issue: throughput per stage flat within 2× over the chain, at most
/// 2 KB per idle stage (a GenStage process is about 2.7 KB).
const CHAIN_FLATNESS: f64 = 2.0;
const IDLE_BYTES: f64 = 2_048.0;

/// Which curve a point belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    Chain,
    FanOutDemand,
    FanOutBroadcast,
    Partitions,
    /// The partition dispatcher filling its queues ahead of demand.
    PartitionsFillAhead,
    Keyed,
}

impl Curve {
    /// Label of a point of this curve at `n`, for progress lines, the table and filters.
    fn label(self, n: u64) -> String {
        match self {
            Curve::Chain => format!("chain stages={n}"),
            Curve::FanOutDemand => format!("fan_out demand consumers={n}"),
            Curve::FanOutBroadcast => format!("fan_out broadcast consumers={n}"),
            Curve::Partitions => format!("partitions={n}"),
            Curve::PartitionsFillAhead => format!("partitions fill-ahead={n}"),
            Curve::Keyed => format!("keyed keys={n}"),
        }
    }

    /// Name of its line in the plot.
    fn series(self) -> &'static str {
        match self {
            Curve::Chain => "chain (x: producer-consumers)",
            Curve::FanOutDemand => "fan-out, demand (x: consumers)",
            Curve::FanOutBroadcast => "fan-out, broadcast (x: consumers)",
            Curve::Partitions => "partitions (x: partitions)",
            Curve::PartitionsFillAhead => "partitions, fill-ahead (x: partitions)",
            Curve::Keyed => "keyed scheduler (x: distinct keys)",
        }
    }
}

/// One point of a curve, measured or not yet.
struct Point {
    curve: Curve,
    n: u64,
    run: Box<dyn FnMut(u64) -> Sample>,
    /// A run moves at least this many events (the keyed curve: every key once).
    min_events: u64,
    measurement: Option<Measurement>,
    /// Batches the consumers received (fan-out by demand and partitions only).
    sizes: Option<Arc<BatchSizes>>,
}

impl Point {
    fn rate(&self) -> f64 {
        self.measurement
            .as_ref()
            .map_or(f64::NAN, |m| m.events_per_sec)
    }
}

fn main() -> ExitCode {
    let args = match Args::from_env_or_exit("scaling") {
        Ok(args) => args,
        Err(code) => return code,
    };
    // A full run uses the sizes of the issue; --quick smaller ones, to stay within a minute.
    let (keys, idle) = match args.mode {
        Mode::Full => ([1_000, 100_000, 1_000_000], 100_000),
        Mode::Quick => ([1_000, 10_000, 100_000], 20_000),
        Mode::Smoke => ([10, 100, 1_000], 1_000),
    };

    let mut points: Vec<Point> = Vec::new();
    let mut add = |curve: Curve, n: u64, run, min_events, sizes: Option<Arc<BatchSizes>>| {
        if args.selects(&curve.label(n)) {
            points.push(Point {
                curve,
                n,
                run,
                min_events,
                measurement: None,
                sizes,
            });
        }
    };
    for n in CHAIN {
        add(Curve::Chain, n, chain(n as usize, MAX_DEMAND), 0, None);
    }
    for n in WIDTHS {
        let sizes = Arc::new(BatchSizes::default());
        let run = fan_out_demand(n as usize, MAX_DEMAND, sizes.clone());
        add(Curve::FanOutDemand, n, run, 0, Some(sizes));
    }
    for n in WIDTHS {
        let run = fan_out_broadcast(n as usize, MAX_DEMAND);
        add(Curve::FanOutBroadcast, n, run, 0, None);
    }
    for n in WIDTHS {
        let sizes = Arc::new(BatchSizes::default());
        let run = partitions(n as usize, MAX_DEMAND, sizes.clone());
        add(Curve::Partitions, n, run, 0, Some(sizes));
    }
    for n in WIDTHS {
        let sizes = Arc::new(BatchSizes::default());
        let run = partitions_fill_ahead(n as usize, MAX_DEMAND, sizes.clone());
        add(Curve::PartitionsFillAhead, n, run, 0, Some(sizes));
    }
    for n in keys {
        add(Curve::Keyed, n, keyed(n), n, None);
    }
    let mut baseline = |events| tokio_mpsc_batched(events, 1_000, 16);

    // The baseline, before and after the curves; the idle stages.
    let measurements = points.len() + 2;
    let config = match args.mode {
        Mode::Quick => Config::quick(measurements),
        Mode::Full | Mode::Smoke => Config::full(),
    };
    let mut progress = Progress::new("scaling", args.mode, measurements as u64 + 1);
    let smoke = args.mode == Mode::Smoke;

    // Memory first, while the heap is fresh: later scenarios would leave freed memory behind
    // that new stages reuse without growing the resident set.
    progress.start(&format!("{idle} idle stages"));
    let bytes_per_idle_stage = idle_stage_bytes(idle);
    progress.finish(&bytes_per_idle_stage.map_or_else(
        || "resident memory unreadable".to_owned(),
        |b| format!("{b:.0} bytes per stage"),
    ));

    let mut measure_one = |label: &str, min_events: u64, run: &mut dyn FnMut(u64) -> Sample| {
        progress.start(label);
        let measurement = if smoke {
            let sample = run(SMOKE_EVENTS.max(min_events));
            Measurement::from_rates(vec![sample.events_per_sec()], sample.events)
        } else {
            let config = Config {
                min_events: config.min_events.max(min_events),
                ..config.clone()
            };
            measure(&config, run)
        };
        progress.finish(&format!("{:.3} M ev/s", measurement.events_per_sec / 1e6));
        measurement
    };
    let before = measure_one("tokio_mpsc_batched_1000", 0, &mut baseline);
    for point in &mut points {
        let label = point.curve.label(point.n);
        point.measurement = Some(measure_one(&label, point.min_events, &mut point.run));
    }
    let after = measure_one("tokio_mpsc_batched_1000 (after)", 0, &mut baseline);
    drop(progress);
    let base = Measurement::from_rates(
        [before.rates.as_slice(), after.rates.as_slice()].concat(),
        after.events_per_run,
    );

    print!(
        "{}",
        table(
            &points,
            &base,
            &before,
            &after,
            bytes_per_idle_stage,
            &config,
            args.mode
        )
    );
    if args.mode == Mode::Full {
        match write_plots(&points, &base, &config) {
            Ok(paths) => println!("\nplots: {}", paths.join(", ")),
            Err(err) => eprintln!("scaling: the plots were not written: {err}"),
        }
    }

    let rows = |curve: Curve, key: &str| -> Vec<Value> {
        points
            .iter()
            .filter(|p| p.curve == curve)
            .map(|p| {
                let mut row = serde_json::Map::new();
                row.insert(key.to_owned(), json!(p.n));
                if curve == Curve::FanOutDemand || curve == Curve::FanOutBroadcast {
                    let dispatcher = if curve == Curve::FanOutDemand {
                        "demand"
                    } else {
                        "broadcast"
                    };
                    row.insert("dispatcher".to_owned(), json!(dispatcher));
                }
                row.insert("events_per_sec".to_owned(), rounded(p.rate(), 1));
                Value::Object(row)
            })
            .collect()
    };
    let mut fan_out = rows(Curve::FanOutDemand, "consumers");
    fan_out.extend(rows(Curve::FanOutBroadcast, "consumers"));
    let result = json!({
        "bench": "scaling",
        "chain": rows(Curve::Chain, "stages"),
        "fan_out": fan_out,
        "partitions": rows(Curve::Partitions, "partitions"),
        "partitions_fill_ahead": rows(Curve::PartitionsFillAhead, "partitions"),
        "keyed": rows(Curve::Keyed, "keys"),
        "bytes_per_idle_stage": rounded(bytes_per_idle_stage.unwrap_or(f64::NAN), 0),
        "baselines": [{"name": "tokio_mpsc_batched_1000", "events_per_sec": rounded(base.events_per_sec, 1)}],
    });
    println!("{}", result_line(&result));
    ExitCode::SUCCESS
}

/// The human-readable table: each curve with its figures relative to its first point and to
/// the baseline, then the idle stages and the targets.
fn table(
    points: &[Point],
    base: &Measurement,
    before: &Measurement,
    after: &Measurement,
    bytes_per_idle_stage: Option<f64>,
    config: &Config,
    mode: Mode,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scaling ({}): median events/s of {} runs of {:.2} s after {} warm-up, max_demand {MAX_DEMAND}, {} CPUs",
        match mode {
            Mode::Quick => "quick",
            Mode::Full => "full",
            Mode::Smoke => "smoke: nothing measured, one run each",
        },
        config.reps,
        config.run_time.as_secs_f64(),
        config.warmups,
        num_cpus::get()
    );
    let _ = writeln!(
        out,
        "baseline tokio_mpsc_batched_1000: {:.1} M ev/s (before the curves {:.1} M, after {:.1} M)",
        base.events_per_sec / 1e6,
        before.events_per_sec / 1e6,
        after.events_per_sec / 1e6
    );
    let _ = writeln!(
        out,
        "vs first: ratio to the curve's first point; per hop: events/s × the hops an event makes \
         (chain: stages + 1), the work done per second; per batch: events per batch the \
         consumers received, averaged over every run\n"
    );
    let _ = writeln!(
        out,
        "{:<34} {:>12} {:>9} {:>14} {:>12} {:>10}",
        "scenario", "events/s", "vs first", "per hop/s", "vs baseline", "per batch"
    );
    let mut chain_per_hop = Vec::new();
    for curve in [
        Curve::Chain,
        Curve::FanOutDemand,
        Curve::FanOutBroadcast,
        Curve::Partitions,
        Curve::PartitionsFillAhead,
        Curve::Keyed,
    ] {
        let curve_points: Vec<&Point> = points.iter().filter(|p| p.curve == curve).collect();
        let Some(first) = curve_points.first().map(|p| p.rate()) else {
            continue;
        };
        for p in curve_points {
            let hops = if curve == Curve::Chain { p.n + 1 } else { 1 };
            let per_hop = p.rate() * hops as f64;
            if curve == Curve::Chain {
                chain_per_hop.push(per_hop);
            }
            let per_batch = p
                .sizes
                .as_ref()
                .map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s.average()));
            let _ = writeln!(
                out,
                "{:<34} {:>10.3} M {:>8.3}x {:>12.3} M {:>11.4}x {per_batch:>10}",
                p.curve.label(p.n),
                p.rate() / 1e6,
                p.rate() / first,
                per_hop / 1e6,
                p.rate() / base.events_per_sec
            );
        }
    }
    let _ = writeln!(out);
    if chain_per_hop.len() > 1 {
        let lo = chain_per_hop.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = chain_per_hop.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "chain, events/s per hop from 1 to 16 stages: highest/lowest {:.2}x (target: within {CHAIN_FLATNESS}x): {}",
            hi / lo,
            if hi / lo <= CHAIN_FLATNESS {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    match bytes_per_idle_stage {
        Some(bytes) => {
            let _ = writeln!(
                out,
                "idle stage: {bytes:.0} bytes of resident memory each (target: at most {IDLE_BYTES:.0}; a GenStage process is about 2.7 KB): {}",
                if bytes <= IDLE_BYTES {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        None => {
            let _ = writeln!(out, "idle stage: not measured (no /proc/self/statm)");
        }
    }
    out
}

/// Writes `scaling.svg` (chain, fan-out and partitions over their width) and
/// `scaling_keyed.svg` (the keyed scheduler over its keys) under `target/bench-report/`, the
/// baseline as a dashed line on both.
fn write_plots(
    points: &[Point],
    base: &Measurement,
    config: &Config,
) -> std::io::Result<Vec<String>> {
    let series = |curves: &[Curve]| -> Vec<Series> {
        curves
            .iter()
            .map(|&curve| Series {
                name: curve.series().to_owned(),
                points: points
                    .iter()
                    .filter(|p| p.curve == curve)
                    .map(|p| (p.n as f64, p.rate()))
                    .collect(),
            })
            .collect()
    };
    let subtitle = format!(
        "median of {} runs of {:.2} s per point, max_demand {MAX_DEMAND}, {} CPUs; dashed: baseline in the same run",
        config.reps,
        config.run_time.as_secs_f64(),
        num_cpus::get()
    );
    let reference = vec![Reference {
        name: format!(
            "tokio_mpsc_batched_1000 ({:.0} M ev/s)",
            base.events_per_sec / 1e6
        ),
        value: base.events_per_sec,
    }];
    let plots = [
        (
            "scaling.svg",
            LogLogPlot {
                title: "demandflow scaling: events/s by the width of the topology".to_owned(),
                subtitle: subtitle.clone(),
                x_label: "producer-consumers in the chain, consumers, partitions (log scale)"
                    .to_owned(),
                y_label: "events/s out of the source (log scale)".to_owned(),
                x_span: (1.0, 100.0),
                series: series(&[
                    Curve::Chain,
                    Curve::FanOutDemand,
                    Curve::FanOutBroadcast,
                    Curve::Partitions,
                    Curve::PartitionsFillAhead,
                ]),
                references: reference.clone(),
            },
        ),
        (
            "scaling_keyed.svg",
            LogLogPlot {
                title: "demandflow scaling: keyed scheduler, events/s by distinct keys".to_owned(),
                subtitle,
                x_label: "distinct keys (log scale)".to_owned(),
                y_label: "events/s handled (log scale)".to_owned(),
                x_span: (1_000.0, 1_000_000.0),
                series: series(&[Curve::Keyed]),
                references: reference,
            },
        ),
    ];
    let dir = report_dir();
    fs::create_dir_all(&dir)?;
    let mut paths = Vec::new();
    for (name, plot) in plots {
        let path = dir.join(name);
        fs::write(&path, plot.to_svg()?)?;
        paths.push(path.display().to_string());
    }
    Ok(paths)
}

//! Latency of demandflow pipelines under a steady offered load, next to plain tokio mpsc
//! pipelines under the same load.
//!
//! ```text
//! cargo bench -p demandflow-benches --bench latency -- --quick
//! ```
//!
//! For each offered load (10 k, 100 k and 1 M events/s) it measures `P->C`, `P->PC->C` and
//! `P->partition->C` fed by a push source, the `tokio_mpsc` baseline, and the hop baselines
//! `tokio_mpsc_via_1_task` and `tokio_mpsc_via_2_tasks` (plain tokio making as many task hops as
//! `P->C` and `P->PC->C` do), reporting p50, p99, p99.9 and the maximum of the time from handing
//! an event over to handling it (see `benches/src/latency.rs` for how load is paced and what
//! "kept up" means). Everything runs in several interleaved rounds; each figure is the median
//! over the rounds, and each ratio the median of the rounds' ratios to the baseline of the same
//! round. The target: each row's p99 at most 2× `tokio_mpsc`'s at the same load, wherever both
//! keep up.

use std::process::ExitCode;
use std::time::Duration;

use demandflow_benches::{
    Args, LatencySummary, LatencyTopology, LogLogPlot, Mode, Progress, Series, measure_pipeline,
    measure_tokio_hops, report_dir, result_line,
};
use serde_json::json;

/// Offered loads, events per second.
const LOADS: [u64; 3] = [10_000, 100_000, 1_000_000];

/// The baselines: a name and how many forwarding tasks sit between the pacer and the recorder.
const BASELINES: [(&str, usize); 3] = [
    ("tokio_mpsc", 0),
    ("tokio_mpsc_via_1_task", 1),
    ("tokio_mpsc_via_2_tasks", 2),
];

/// The hop baseline a topology is compared with: the one making as many task hops.
fn hop_baseline(topology: LatencyTopology) -> usize {
    match topology {
        LatencyTopology::Direct | LatencyTopology::Partition => 1,
        LatencyTopology::ThroughStage => 2,
    }
}

fn main() -> ExitCode {
    let args = match Args::from_env_or_exit("latency") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let (duration, rounds) = match args.mode {
        Mode::Smoke => (Duration::from_millis(20), 1),
        Mode::Quick => (Duration::from_millis(250), 5),
        Mode::Full => (Duration::from_secs(2), 7),
    };
    let selected: Vec<LatencyTopology> = LatencyTopology::ALL
        .into_iter()
        .filter(|t| args.selects(t.label()))
        .collect();

    // Warm up the allocator, the timer wheel and the code paths once.
    let _ = measure_tokio_hops(0, 10_000, Duration::from_millis(20));

    let summary = |load| LatencySummary {
        offered_per_sec: load,
        rounds: Vec::new(),
    };
    // [load][baseline] and [load][topology], filled round by round.
    let mut baselines: Vec<Vec<LatencySummary>> = LOADS
        .iter()
        .map(|&load| BASELINES.iter().map(|_| summary(load)).collect())
        .collect();
    let mut rows: Vec<Vec<LatencySummary>> = LOADS
        .iter()
        .map(|&load| selected.iter().map(|_| summary(load)).collect())
        .collect();

    let steps = rounds * LOADS.len() * (selected.len() + BASELINES.len());
    let mut progress = Progress::new("latency", args.mode, steps as u64);
    let p99_us = |f: &demandflow_benches::LatencyFigures| {
        f.histogram.value_at_quantile(0.99) as f64 / 1_000.0
    };
    for round in 1..=rounds {
        for (l, &load) in LOADS.iter().enumerate() {
            // Baselines and rows alternate, so that a busy second hits both alike.
            for (b, &(name, forwarders)) in BASELINES.iter().enumerate() {
                progress.start(&format!("round {round}: {name} at {load}/s"));
                let figures = measure_tokio_hops(forwarders, load, duration);
                progress.finish(&format!("p99 {:.1} µs", p99_us(&figures)));
                baselines[l][b].rounds.push(figures);
                if let Some(t) = selected.get(b) {
                    progress.start(&format!("round {round}: {} at {load}/s", t.label()));
                    let figures = measure_pipeline(*t, load, duration);
                    progress.finish(&format!("p99 {:.1} µs", p99_us(&figures)));
                    rows[l][b].rounds.push(figures);
                }
            }
        }
    }
    drop(progress);

    println!(
        "medians of {rounds} rounds of {} ms; ratios: median of the rounds' p99 ratios",
        duration.as_millis()
    );
    println!(
        "{:<23} {:>9} {:>8} {:>8} {:>9} {:>9} {:>5} {:>9} {:>8} {:>16}",
        "pipeline",
        "offered/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "kept",
        "p99/tokio",
        "p99/hops",
        "preempted/round"
    );
    let mut misses = Vec::new();
    for (l, &load) in LOADS.iter().enumerate() {
        let base = &baselines[l][0];
        for (b, &(name, _)) in BASELINES.iter().enumerate() {
            print_row(name, &baselines[l][b], None, None);
        }
        for (t, topology) in selected.iter().enumerate() {
            let row = &rows[l][t];
            let ratio = row.p99_ratio_to(base);
            let hops = row.p99_ratio_to(&baselines[l][hop_baseline(*topology)]);
            print_row(topology.label(), row, Some(ratio), Some(hops));
            if ratio > 2.0 && row.kept_up() && base.kept_up() {
                misses.push(format!("{} at {load}/s ({ratio:.2}×)", topology.label()));
            }
        }
    }
    if args.mode != Mode::Smoke {
        if misses.is_empty() {
            eprintln!("latency: every row's p99 is within 2× of tokio_mpsc's at its load");
        } else {
            eprintln!("latency: p99 above 2× tokio_mpsc's: {}", misses.join(", "));
        }
    }
    if args.mode == Mode::Full {
        match write_plots(&selected, &rows, &baselines, rounds, duration) {
            Ok(paths) => eprintln!("latency: plots written to {}", paths.join(", ")),
            Err(e) => eprintln!("latency: could not write the plots: {e}"),
        }
    }
    let rows_json: Vec<_> = rows
        .iter()
        .flat_map(|at_load| {
            at_load
                .iter()
                .zip(&selected)
                .map(|(row, t)| row.to_json("topology", t.label()))
        })
        .collect();
    let baselines_json: Vec<_> = baselines
        .iter()
        .flat_map(|at_load| {
            at_load
                .iter()
                .zip(BASELINES)
                .map(|(base, (name, _))| base.to_json("name", name))
        })
        .collect();
    println!(
        "{}",
        result_line(&json!({"bench": "latency", "rows": rows_json, "baselines": baselines_json}))
    );
    ExitCode::SUCCESS
}

fn print_row(label: &str, s: &LatencySummary, ratio: Option<f64>, hops: Option<f64>) {
    let us = |ns: u64| ns as f64 / 1_000.0;
    let fmt = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×"));
    let preempted: Vec<String> = s.rounds.iter().map(|f| f.preemptions.to_string()).collect();
    println!(
        "{:<23} {:>9} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>5} {:>9} {:>8} {:>16}",
        label,
        s.offered_per_sec,
        us(s.quantile_ns(0.5)),
        us(s.quantile_ns(0.99)),
        us(s.quantile_ns(0.999)),
        us(s.max_ns()),
        if s.kept_up() { "yes" } else { "no" },
        fmt(ratio),
        fmt(hops),
        preempted.join("/"),
    );
}

/// Writes the p50 and p99 of every row and baseline against the offered load, as SVG under
/// `target/bench-report/`; returns the paths written.
fn write_plots(
    selected: &[LatencyTopology],
    rows: &[Vec<LatencySummary>],
    baselines: &[Vec<LatencySummary>],
    rounds: usize,
    duration: Duration,
) -> std::io::Result<Vec<String>> {
    let series =
        |quantile: f64| {
            // One summary per load, in the order of LOADS.
            let line = |name: &str, at: Vec<&LatencySummary>| Series {
                name: name.to_owned(),
                points: at
                    .iter()
                    .map(|s| {
                        (
                            s.offered_per_sec as f64,
                            s.quantile_ns(quantile) as f64 / 1_000.0,
                        )
                    })
                    .collect(),
            };
            let mut lines: Vec<Series> = BASELINES
                .iter()
                .enumerate()
                .map(|(b, (name, _))| line(name, baselines.iter().map(|at| &at[b]).collect()))
                .collect();
            lines.extend(selected.iter().enumerate().map(|(t, topology)| {
                line(topology.label(), rows.iter().map(|at| &at[t]).collect())
            }));
            lines
        };
    let subtitle = format!(
        "medians of {rounds} interleaved rounds of {} s, 2 worker threads",
        duration.as_secs_f64()
    );
    let dir = report_dir();
    std::fs::create_dir_all(&dir)?;
    let mut paths = Vec::new();
    for (file, name, quantile) in [
        ("latency_p99.svg", "p99", 0.99),
        ("latency_p50.svg", "p50", 0.5),
    ] {
        let plot = LogLogPlot {
            title: format!("demandflow latency: {name} of enqueue-to-handled time by offered load"),
            subtitle: subtitle.clone(),
            x_label: "offered events/s (log scale)".to_owned(),
            y_label: format!("{name}, µs (log scale)"),
            x_span: (10_000.0, 1_000_000.0),
            series: series(quantile),
            references: Vec::new(),
        };
        let path = dir.join(file);
        std::fs::write(&path, plot.to_svg()?)?;
        paths.push(path.display().to_string());
    }
    Ok(paths)
}

//! Latency of demandflow pipelines under a steady offered load, next to a plain tokio
//! mpsc pipeline under the same load.
//!
//! ```text
//! cargo bench -p demandflow-benches --bench latency -- --quick
//! ```
//!
//! For each offered load (10 k, 100 k and 1 M events/s) it measures `P->C`, `P->PC->C` and
//! `P->partition->C` fed by a push source, and the `tokio_mpsc` baseline, reporting p50, p99,
//! p99.9 and the maximum of the time from handing an event over to handling it (see
//! `benches/src/latency.rs` for how load is paced and what "kept up" means). The target: each
//! row's p99 at most 2× the baseline's p99 at the same load, wherever both keep up.

use std::process::ExitCode;
use std::time::Duration;

use demandflow_benches::{
    Args, LatencyFigures, LatencyTopology, Mode, Progress, measure_pipeline, measure_tokio_mpsc,
    result_line,
};
use serde_json::json;

/// Offered loads, events per second.
const LOADS: [u64; 3] = [10_000, 100_000, 1_000_000];

fn main() -> ExitCode {
    let args = match Args::from_env_or_exit("latency") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let duration = match args.mode {
        Mode::Smoke => Duration::from_millis(20),
        Mode::Quick => Duration::from_millis(500),
        Mode::Full => Duration::from_secs(3),
    };
    let selected: Vec<LatencyTopology> = LatencyTopology::ALL
        .into_iter()
        .filter(|t| args.selects(t.label()))
        .collect();

    // Warm up the allocator, the timer wheel and the code paths once.
    let _ = measure_tokio_mpsc(10_000, Duration::from_millis(20));

    let steps = LOADS.len() * (selected.len() + 1);
    let mut progress = Progress::new("latency", args.mode, steps as u64);
    let p99_us = |f: &LatencyFigures| f.histogram.value_at_quantile(0.99) as f64 / 1_000.0;
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    let mut table = Vec::new();
    for load in LOADS {
        progress.start(&format!("tokio_mpsc at {load}/s"));
        let baseline = measure_tokio_mpsc(load, duration);
        progress.finish(&format!("p99 {:.1} µs", p99_us(&baseline)));
        table.push(("tokio_mpsc".to_owned(), baseline.clone(), None));
        baselines.push(baseline.to_json("name", "tokio_mpsc"));
        let base_p99 = baseline.histogram.value_at_quantile(0.99);
        for &topology in &selected {
            progress.start(&format!("{} at {load}/s", topology.label()));
            let figures = measure_pipeline(topology, load, duration);
            progress.finish(&format!("p99 {:.1} µs", p99_us(&figures)));
            let ratio = figures.histogram.value_at_quantile(0.99) as f64 / base_p99.max(1) as f64;
            rows.push(figures.to_json("topology", topology.label()));
            table.push((topology.label().to_owned(), figures, Some(ratio)));
        }
    }

    drop(progress);

    println!(
        "{:<18} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>12}",
        "pipeline",
        "offered/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "kept up",
        "p99/baseline"
    );
    for (label, f, ratio) in &table {
        print_row(label, f, *ratio);
    }
    if args.mode != Mode::Smoke {
        let misses: Vec<String> = table
            .iter()
            .filter(|(_, f, ratio)| ratio.is_some_and(|r| r > 2.0) && f.kept_up)
            .map(|(label, f, ratio)| {
                format!(
                    "{label} at {}/s ({:.2}×)",
                    f.offered_per_sec,
                    ratio.unwrap_or(0.0)
                )
            })
            .collect();
        if misses.is_empty() {
            eprintln!("latency: every row's p99 is within 2× of tokio_mpsc's at its load");
        } else {
            eprintln!("latency: p99 above 2× tokio_mpsc's: {}", misses.join(", "));
        }
    }
    println!(
        "{}",
        result_line(&json!({"bench": "latency", "rows": rows, "baselines": baselines}))
    );
    ExitCode::SUCCESS
}

fn print_row(label: &str, f: &LatencyFigures, ratio: Option<f64>) {
    let us = |q: f64| f.histogram.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "{:<18} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>8} {:>12}",
        label,
        f.offered_per_sec,
        us(0.5),
        us(0.99),
        us(0.999),
        f.histogram.max() as f64 / 1_000.0,
        if f.kept_up { "yes" } else { "no" },
        ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×")),
    );
}

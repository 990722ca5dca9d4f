//! The `throughput` bench: events per second of topologies × max_demand, next to baselines.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::result::{deserialize_rate, serialize_rate};
use crate::{
    Args, Config, LogLogPlot, Measurement, Mode, Progress, Reference, Sample, Series, last_result,
    measure, measure_pair, report_dir, result_line,
};

/// The `"bench"` key of the `RESULT` line and the name of the plot.
const BENCH: &str = "throughput";

/// Events a scenario moves in a smoke test.
const SMOKE_EVENTS: u64 = 1_000;

/// How far apart two figures of a baseline may be before the report warns that the machine
/// changed state: 15%, three times the usual range of the steadier baseline.
const UNSTEADY: f64 = 0.15;

/// A scenario: moves the events it is asked for and says what it moved in how long.
type Run = Box<dyn FnMut(u64) -> Sample>;

/// A scenario and the topology of its row.
type Named = (String, Run);

/// The scenarios of the `throughput` bench, to be measured together.
///
/// Baselines are measured first and, when there are rows, once more after them; every figure
/// of the report is the median of its runs (see [`measure`]).
///
/// # Examples
///
/// ```no_run
/// use demandflow_benches::{ThroughputSuite, crossbeam_batched};
///
/// fn main() -> std::process::ExitCode {
///     let mut suite = ThroughputSuite::new();
///     suite.baseline("crossbeam_batched_1000", |events| crossbeam_batched(events, 1000, 16));
///     // suite.row("P->C", 100, move |events| p_to_c(events, 100));
///     suite.run_cli()
/// }
/// ```
#[derive(Default)]
pub struct ThroughputSuite {
    baselines: Vec<(String, Run)>,
    rows: Vec<(String, u64, Run)>,
    /// max_demand and the two rows of each pair.
    pairs: Vec<(u64, Named, Named)>,
}

impl ThroughputSuite {
    /// A suite without scenarios.
    pub fn new() -> ThroughputSuite {
        ThroughputSuite::default()
    }

    /// Adds the baseline `name`, measured by `run`.
    pub fn baseline(
        &mut self,
        name: impl Into<String>,
        run: impl FnMut(u64) -> Sample + 'static,
    ) -> &mut ThroughputSuite {
        self.baselines.push((name.into(), Box::new(run)));
        self
    }

    /// Adds the row of `topology` at `max_demand`, measured by `run`.
    pub fn row(
        &mut self,
        topology: impl Into<String>,
        max_demand: u64,
        run: impl FnMut(u64) -> Sample + 'static,
    ) -> &mut ThroughputSuite {
        self.rows.push((topology.into(), max_demand, Box::new(run)));
        self
    }

    /// Adds two rows at `max_demand` that are measured alternately, run by run (see
    /// [`measure_pair`](crate::measure_pair)), after the other rows: for two scenarios that
    /// differ by a few percent, where the machine's drift between two separate measurements
    /// would be larger than the difference. The table prints `b / a`; the `RESULT` line has both
    /// as ordinary rows. Selected when a filter selects either.
    pub fn paired_rows(
        &mut self,
        max_demand: u64,
        a: (impl Into<String>, impl FnMut(u64) -> Sample + 'static),
        b: (impl Into<String>, impl FnMut(u64) -> Sample + 'static),
    ) -> &mut ThroughputSuite {
        self.pairs.push((
            max_demand,
            (a.0.into(), Box::new(a.1)),
            (b.0.into(), Box::new(b.1)),
        ));
        self
    }

    /// The `main` of a bench target: reads the command line, then runs the suite as it asks
    /// (see [`Args`]) and prints the table, the comparison with `--compare FILE`, the plot's
    /// path on full runs, and the `RESULT` line last. Progress goes to stderr.
    ///
    /// Returns failure (2) for a bad command line or an unreadable `--compare` file, before
    /// measuring anything.
    pub fn run_cli(self) -> ExitCode {
        let args = match Args::from_env_or_exit(BENCH) {
            Ok(args) => args,
            Err(code) => return code,
        };
        let saved = match &args.compare {
            Some(path) => match ThroughputFigures::read(path) {
                Ok(saved) => Some((path.clone(), saved)),
                Err(err) => {
                    eprintln!("error: --compare {}: {err}", path.display());
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        if args.mode == Mode::Smoke {
            let ran = self.smoke(&args);
            println!(
                "{BENCH}: smoke test, {ran} scenarios ran once on {SMOKE_EVENTS} events; \
                 nothing was measured (cargo bench passes --bench to measure)"
            );
            return ExitCode::SUCCESS;
        }

        let started = Instant::now();
        let report = self.run(&args);
        let figures = report.figures();
        print!("{}", report.table());
        if let Some((path, saved)) = saved {
            println!();
            println!("compared with {}:", path.display());
            print!("{}", figures.compare(&saved));
        }
        if report.mode == Mode::Full {
            match report.write_plot() {
                Ok(path) => println!("\nplot: {}", path.display()),
                Err(err) => eprintln!("warning: the plot was not written: {err}"),
            }
        }
        eprintln!("{BENCH}: done in {:.1} s", started.elapsed().as_secs_f64());
        println!("{}", figures.result_line());
        ExitCode::SUCCESS
    }

    /// Runs every selected scenario once on a few events, without measuring: proves under
    /// `cargo test` that they work. Returns how many ran.
    ///
    /// # Panics
    ///
    /// If a scenario panics, such as a baseline whose consumer saw wrong events.
    pub fn smoke(mut self, args: &Args) -> usize {
        let mut runs: Vec<(String, &mut Run)> = Vec::new();
        for (name, run) in &mut self.baselines {
            runs.push((name.clone(), run));
        }
        for (topology, max_demand, run) in &mut self.rows {
            let label = row_label(topology, *max_demand);
            if args.selects(&label) {
                runs.push((label, run));
            }
        }
        for (max_demand, (a, run_a), (b, run_b)) in &mut self.pairs {
            let (a, b) = (row_label(a, *max_demand), row_label(b, *max_demand));
            if args.selects(&a) || args.selects(&b) {
                runs.push((a, run_a));
                runs.push((b, run_b));
            }
        }
        let total = runs.len();
        for (i, (label, run)) in runs.into_iter().enumerate() {
            let sample = run(SMOKE_EVENTS);
            eprintln!(
                "[{}/{total}] {label} ... ok ({} events)",
                i + 1,
                sample.events
            );
        }
        total
    }

    /// Measures the baselines, the rows `args` selects, and the baselines once more when there
    /// were rows (so that a drift of the machine's speed during the run shows). The run length is
    /// [`Config::quick`] or [`Config::full`] after `args.mode`.
    pub fn run(mut self, args: &Args) -> ThroughputReport {
        self.rows
            .retain(|(topology, max_demand, _)| args.selects(&row_label(topology, *max_demand)));
        self.pairs.retain(|(max_demand, (a, _), (b, _))| {
            args.selects(&row_label(a, *max_demand)) || args.selects(&row_label(b, *max_demand))
        });
        let twice = !self.rows.is_empty() || !self.pairs.is_empty();
        let measurements = self.baselines.len() * if twice { 2 } else { 1 }
            + self.rows.len()
            + 2 * self.pairs.len();
        let config = match args.mode {
            Mode::Quick => Config::quick(measurements),
            Mode::Full | Mode::Smoke => Config::full(),
        };
        eprintln!(
            "{BENCH}: {measurements} measurements of {} warm-up + {} runs of {:.2} s each, \
             {} CPUs; about {:.0} s",
            config.warmups,
            config.reps,
            config.run_time.as_secs_f64(),
            num_cpus::get(),
            config.estimated_time(measurements).as_secs_f64()
        );

        // A pair is one step of the progress (two measurements).
        let steps = measurements - self.pairs.len();
        let mut progress = Progress::new(BENCH, args.mode, steps as u64);
        let mut baselines: Vec<MeasuredBaseline> = self
            .baselines
            .iter_mut()
            .map(|(name, run)| MeasuredBaseline {
                name: name.clone(),
                measurement: measure_one(&mut progress, &config, name, run),
                drift: None,
            })
            .collect();
        let mut rows: Vec<MeasuredRow> = self
            .rows
            .iter_mut()
            .map(|(topology, max_demand, run)| MeasuredRow {
                topology: topology.clone(),
                max_demand: *max_demand,
                measurement: measure_one(
                    &mut progress,
                    &config,
                    &row_label(topology, *max_demand),
                    run,
                ),
            })
            .collect();
        let mut pairs = Vec::new();
        for (max_demand, (a, run_a), (b, run_b)) in &mut self.pairs {
            progress.start(&format!("{a} and {b} alternately, max_demand={max_demand}"));
            let (ma, mb) = measure_pair(&config, run_a, run_b);
            progress.finish(&format!(
                "{} and {} ev/s: {}",
                si(ma.events_per_sec),
                si(mb.events_per_sec),
                ratio(mb.events_per_sec / ma.events_per_sec)
            ));
            pairs.push((rows.len(), rows.len() + 1));
            for (topology, measurement) in [(a, ma), (b, mb)] {
                rows.push(MeasuredRow {
                    topology: topology.clone(),
                    max_demand: *max_demand,
                    measurement,
                });
            }
        }
        if twice {
            for (baseline, (name, run)) in baselines.iter_mut().zip(&mut self.baselines) {
                let label = format!("{name} (after the rows)");
                let after = measure_one(&mut progress, &config, &label, run);
                let before = &baseline.measurement;
                baseline.drift = Some(after.events_per_sec / before.events_per_sec - 1.0);
                let rates = [before.rates.as_slice(), after.rates.as_slice()].concat();
                baseline.measurement = Measurement::from_rates(rates, after.events_per_run);
            }
        }
        ThroughputReport {
            mode: args.mode,
            config,
            baselines,
            rows,
            pairs,
        }
    }
}

/// Measures one scenario, as a step of `progress`.
fn measure_one(
    progress: &mut Progress,
    config: &Config,
    label: &str,
    run: &mut Run,
) -> Measurement {
    progress.start(label);
    let measurement = measure(config, run);
    progress.finish(&format!(
        "{} ev/s (range {:.1}%, {} runs of {} events)",
        si(measurement.events_per_sec),
        measurement.range() * 100.0,
        measurement.rates.len(),
        si(measurement.events_per_run as f64),
    ));
    measurement
}

/// How rows are labelled in progress lines, tables and filters: `P->C max_demand=100`.
fn row_label(topology: &str, max_demand: u64) -> String {
    format!("{topology} max_demand={max_demand}")
}

/// `x` to three significant digits with a unit: `512 M`, `12.3 k`, `7.50`.
fn si(x: f64) -> String {
    let (value, unit) = match x {
        x if x >= 1e12 => (x / 1e12, " T"),
        x if x >= 1e9 => (x / 1e9, " G"),
        x if x >= 1e6 => (x / 1e6, " M"),
        x if x >= 1e3 => (x / 1e3, " k"),
        x => (x, ""),
    };
    let decimals = match value {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    format!("{value:.decimals$}{unit}")
}

/// A ratio to three significant digits: `1.00x`, `0.123x`, `12.5x`, `0.000233x`.
fn ratio(r: f64) -> String {
    let decimals = if r.is_finite() && r > 0.0 {
        (2.0 - r.log10().floor()).clamp(1.0, 9.0) as usize
    } else {
        2
    };
    format!("{r:.decimals$}x")
}

/// A baseline as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredBaseline {
    /// Name of the baseline, such as `crossbeam_batched_1000`.
    pub name: String,
    /// Its runs, before and after the rows together.
    pub measurement: Measurement,
    /// Median after the rows relative to the median before them, minus 1 (`-0.05`: 5% slower
    /// after); `None` when it was measured once.
    pub drift: Option<f64>,
}

/// A row as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredRow {
    /// Topology, such as `P->C`.
    pub topology: String,
    /// The max_demand its consumers subscribed with.
    pub max_demand: u64,
    /// Its runs.
    pub measurement: Measurement,
}

/// Everything one run of the `throughput` bench measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputReport {
    /// The mode it ran in.
    pub mode: Mode,
    /// How each scenario was measured.
    pub config: Config,
    /// The baselines, in the order they were added.
    pub baselines: Vec<MeasuredBaseline>,
    /// The rows, in the order they were added; then the paired rows, each pair's two in a row.
    pub rows: Vec<MeasuredRow>,
    /// Indices `(a, b)` in [`rows`](Self::rows) of the rows measured alternately as a pair.
    pub pairs: Vec<(usize, usize)>,
}

impl ThroughputReport {
    /// The figures of the `RESULT` line.
    pub fn figures(&self) -> ThroughputFigures {
        ThroughputFigures {
            rows: self
                .rows
                .iter()
                .map(|row| RowFigure {
                    topology: row.topology.clone(),
                    max_demand: row.max_demand,
                    events_per_sec: row.measurement.events_per_sec,
                })
                .collect(),
            baselines: self
                .baselines
                .iter()
                .map(|baseline| BaselineFigure {
                    name: baseline.name.clone(),
                    events_per_sec: baseline.measurement.events_per_sec,
                })
                .collect(),
        }
    }

    /// The human-readable table: every scenario's median, the range of its runs, and its ratio
    /// to each baseline; then the drift of the baselines during the run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mode = match self.mode {
            Mode::Quick => "quick",
            Mode::Full => "full",
            Mode::Smoke => "smoke",
        };
        let _ = writeln!(
            out,
            "{BENCH} ({mode}): median events/s of {} runs of {:.2} s after {} warm-up, {} CPUs",
            self.config.reps,
            self.config.run_time.as_secs_f64(),
            self.config.warmups,
            num_cpus::get()
        );
        let _ = writeln!(
            out,
            "range: slowest to fastest run, relative to the median; vs: ratio to the baseline\n"
        );

        let labels: Vec<String> = self
            .baselines
            .iter()
            .map(|b| b.name.clone())
            .chain(self.rows.iter().map(|r| r.topology.clone()))
            .collect();
        let width = labels.iter().map(String::len).chain([8]).max().unwrap_or(8);
        let mut header = format!(
            "{:<width$}  {:>10}  {:>10}  {:>6}",
            "scenario", "max_demand", "events/s", "range"
        );
        for baseline in &self.baselines {
            let _ = write!(header, "  vs {}", baseline.name);
        }
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.len()));

        let mut line = |label: &str, max_demand: Option<u64>, m: &Measurement| {
            let max_demand = max_demand.map_or_else(|| "-".to_owned(), |d| d.to_string());
            let _ = write!(
                out,
                "{label:<width$}  {max_demand:>10}  {:>10}  {:>5.1}%",
                si(m.events_per_sec),
                m.range() * 100.0
            );
            for baseline in &self.baselines {
                let w = baseline.name.len() + 3;
                let r = ratio(m.events_per_sec / baseline.measurement.events_per_sec);
                let _ = write!(out, "  {r:>w$}");
            }
            let _ = writeln!(out);
        };
        for baseline in &self.baselines {
            line(&baseline.name, None, &baseline.measurement);
        }
        for row in &self.rows {
            line(&row.topology, Some(row.max_demand), &row.measurement);
        }

        if !self.pairs.is_empty() {
            let _ = writeln!(
                out,
                "\npairs measured alternately, run by run (b/a: ratio of the medians; \
                 runs: the slowest and fastest ratio of two neighbouring runs):"
            );
        }
        for &(a, b) in &self.pairs {
            let (a, b) = (&self.rows[a], &self.rows[b]);
            let per_run: Vec<f64> = a
                .measurement
                .rates
                .iter()
                .zip(&b.measurement.rates)
                .map(|(ra, rb)| rb / ra)
                .collect();
            let lo = per_run.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_run.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                out,
                "  {} / {} at max_demand={}: {} (runs {}..{})",
                b.topology,
                a.topology,
                a.max_demand,
                ratio(b.measurement.events_per_sec / a.measurement.events_per_sec),
                ratio(lo),
                ratio(hi)
            );
        }

        let drifts: Vec<String> = self
            .baselines
            .iter()
            .filter_map(|b| Some(format!("{} {:+.1}%", b.name, b.drift? * 100.0)))
            .collect();
        if !drifts.is_empty() {
            let _ = writeln!(
                out,
                "\nbaselines after the rows vs before (their figures pool both): {}",
                drifts.join(", ")
            );
        }
        if self
            .baselines
            .iter()
            .any(|b| b.drift.is_some_and(|d| d.abs() > UNSTEADY))
        {
            let _ = writeln!(
                out,
                "warning: a baseline changed by more than {:.0}% during the run: the machine's \
                 state changed (see benches/README.md); ratios to it are unreliable, run again",
                UNSTEADY * 100.0
            );
        }
        out
    }

    /// The chart of the rows (one line per topology over max_demand) with the baselines as
    /// dashed reference lines.
    pub fn plot(&self) -> LogLogPlot {
        let mut series: Vec<Series> = Vec::new();
        for row in &self.rows {
            let point = (row.max_demand as f64, row.measurement.events_per_sec);
            match series.iter_mut().find(|s| s.name == row.topology) {
                Some(s) => s.points.push(point),
                None => series.push(Series {
                    name: row.topology.clone(),
                    points: vec![point],
                }),
            }
        }
        LogLogPlot {
            title: "demandflow throughput: events/s by max_demand".to_owned(),
            subtitle: format!(
                "median of {} runs of {:.2} s per point, {} CPUs; dashed: baselines measured in the same run",
                self.config.reps,
                self.config.run_time.as_secs_f64(),
                num_cpus::get()
            ),
            x_label: "max_demand (log scale)".to_owned(),
            y_label: "events/s (log scale)".to_owned(),
            x_span: (1.0, 10_000.0),
            series,
            references: self
                .baselines
                .iter()
                .map(|b| Reference {
                    name: format!("{} ({} ev/s)", b.name, si(b.measurement.events_per_sec)),
                    value: b.measurement.events_per_sec,
                })
                .collect(),
        }
    }

    /// Writes [`plot`](Self::plot) to `target/bench-report/throughput.svg` (see
    /// [`report_dir`]) and returns its path.
    ///
    /// # Errors
    ///
    /// If the directory cannot be created or the file cannot be written.
    pub fn write_plot(&self) -> io::Result<PathBuf> {
        let dir = report_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{BENCH}.svg"));
        fs::write(&path, self.plot().to_svg()?)?;
        Ok(path)
    }
}

/// The figures of a `throughput` `RESULT` line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ThroughputFigures {
    /// One per topology and max_demand.
    pub rows: Vec<RowFigure>,
    /// One per baseline.
    pub baselines: Vec<BaselineFigure>,
}

/// The figure of one topology at one max_demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowFigure {
    /// Topology, such as `P->C`.
    pub topology: String,
    /// The max_demand its consumers subscribed with.
    pub max_demand: u64,
    /// Median events per second.
    #[serde(
        serialize_with = "serialize_rate",
        deserialize_with = "deserialize_rate"
    )]
    pub events_per_sec: f64,
}

/// The figure of one baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineFigure {
    /// Name, such as `crossbeam_batched_1000`.
    pub name: String,
    /// Median events per second.
    #[serde(
        serialize_with = "serialize_rate",
        deserialize_with = "deserialize_rate"
    )]
    pub events_per_sec: f64,
}

/// The `RESULT` object as written: `bench` first, as BENCH.md lays it out.
#[derive(Serialize)]
struct ResultObject<'a> {
    bench: &'static str,
    rows: &'a [RowFigure],
    baselines: &'a [BaselineFigure],
}

/// A saved `RESULT` object, whatever its bench, to check that it is a throughput one.
#[derive(Deserialize)]
struct SavedObject {
    bench: String,
    #[serde(flatten)]
    figures: Value,
}

/// Why a saved `RESULT` could not be read.
#[derive(Debug)]
pub struct ReadResultError(String);

impl std::fmt::Display for ReadResultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadResultError {}

impl ThroughputFigures {
    /// The `RESULT` object, with the key layout BENCH.md fixes; rates rounded to 0.1 event/s
    /// (the line claims no more precision than that), `null` when not finite.
    pub fn to_json(&self) -> Value {
        // Plain strings and numbers: serializing them into a value cannot fail.
        serde_json::to_value(ResultObject {
            bench: BENCH,
            rows: &self.rows,
            baselines: &self.baselines,
        })
        .expect("the throughput figures serialize")
    }

    /// `RESULT ` and the JSON object, on one line.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_benches::{BaselineFigure, RowFigure, ThroughputFigures};
    ///
    /// let figures = ThroughputFigures {
    ///     rows: vec![RowFigure { topology: "P->C".into(), max_demand: 100, events_per_sec: 1.5e6 }],
    ///     baselines: vec![BaselineFigure { name: "crossbeam_batched_1000".into(), events_per_sec: 4.25e8 }],
    /// };
    /// assert_eq!(
    ///     figures.result_line(),
    ///     r#"RESULT {"bench":"throughput","rows":[{"topology":"P->C","max_demand":100,"events_per_sec":1500000}],"baselines":[{"name":"crossbeam_batched_1000","events_per_sec":425000000}]}"#
    /// );
    /// assert_eq!(ThroughputFigures::parse_output(&figures.result_line()).unwrap(), figures);
    /// ```
    pub fn result_line(&self) -> String {
        result_line(&self.to_json())
    }

    /// The figures of a `throughput` RESULT object.
    ///
    /// # Errors
    ///
    /// If `json` is not such an object.
    pub fn from_json(json: &Value) -> Result<ThroughputFigures, ReadResultError> {
        let error = |what: String| ReadResultError(format!("not a throughput RESULT: {what}"));
        let saved = SavedObject::deserialize(json).map_err(|err| error(err.to_string()))?;
        if saved.bench != BENCH {
            return Err(error(format!("\"bench\" is {:?}", saved.bench)));
        }
        ThroughputFigures::deserialize(saved.figures).map_err(|err| error(err.to_string()))
    }

    /// The figures of the last `RESULT ` line of `output` (a saved run, or just its last line),
    /// or of `output` itself when it is a bare JSON object.
    ///
    /// # Errors
    ///
    /// If there is no such line, or it is not a throughput RESULT.
    pub fn parse_output(output: &str) -> Result<ThroughputFigures, ReadResultError> {
        let json: Value = serde_json::from_str(last_result(output))
            .map_err(|err| ReadResultError(format!("no RESULT line, or {err}")))?;
        ThroughputFigures::from_json(&json)
    }

    /// [`parse_output`](Self::parse_output) of the file at `path`.
    ///
    /// # Errors
    ///
    /// If the file cannot be read or holds no throughput RESULT.
    pub fn read(path: &Path) -> Result<ThroughputFigures, ReadResultError> {
        let text = fs::read_to_string(path).map_err(|err| ReadResultError(err.to_string()))?;
        ThroughputFigures::parse_output(&text)
    }

    /// How these figures compare with `saved` ones, as a table.
    ///
    /// Besides `now/saved`, rows get a `normalized` ratio: `now/saved` divided by the speed-up of
    /// the machine between the two runs, the geometric mean of `now/saved` of the baselines
    /// both runs measured. On a shared machine this is the ratio to trust: it compares each
    /// row with the baselines measured beside it.
    pub fn compare(&self, saved: &ThroughputFigures) -> String {
        let mut out = String::new();
        let speedups: Vec<(String, f64)> = self
            .baselines
            .iter()
            .filter_map(|now| {
                let before = saved.baselines.iter().find(|b| b.name == now.name)?;
                Some((now.name.clone(), now.events_per_sec / before.events_per_sec))
            })
            .filter(|(_, r)| r.is_finite() && *r > 0.0)
            .collect();
        let machine = if speedups.is_empty() {
            None
        } else {
            let log_sum: f64 = speedups.iter().map(|(_, r)| r.ln()).sum();
            Some((log_sum / speedups.len() as f64).exp())
        };
        match machine {
            Some(m) => {
                let each: Vec<String> = speedups
                    .iter()
                    .map(|(name, r)| format!("{name} {}", ratio(*r)))
                    .collect();
                let _ = writeln!(
                    out,
                    "machine now/saved, from the baselines: {} ({})",
                    ratio(m),
                    each.join(", ")
                );
            }
            None => {
                let _ = writeln!(out, "no baseline in common: nothing to normalize with");
            }
        }
        let lowest = speedups
            .iter()
            .map(|(_, r)| *r)
            .fold(f64::INFINITY, f64::min);
        let highest = speedups.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        if highest > lowest * (1.0 + UNSTEADY) {
            let _ = writeln!(
                out,
                "warning: the baselines moved apart by more than {:.0}%: the machine was in another \
                 state (see benches/README.md); `normalized` is unreliable, run again",
                UNSTEADY * 100.0
            );
        }

        let now_rows = self
            .rows
            .iter()
            .map(|r| (row_label(&r.topology, r.max_demand), r.events_per_sec));
        let saved_rows = saved
            .rows
            .iter()
            .map(|r| (row_label(&r.topology, r.max_demand), r.events_per_sec));
        let now_baselines = self
            .baselines
            .iter()
            .map(|b| (b.name.clone(), b.events_per_sec));
        let saved_baselines = saved
            .baselines
            .iter()
            .map(|b| (b.name.clone(), b.events_per_sec));
        let now: Vec<(String, f64, bool)> = now_baselines
            .map(|(l, x)| (l, x, true))
            .chain(now_rows.map(|(l, x)| (l, x, false)))
            .collect();
        let saved: Vec<(String, f64)> = saved_baselines.chain(saved_rows).collect();

        let width = now
            .iter()
            .map(|(l, ..)| l.len())
            .chain([8])
            .max()
            .unwrap_or(8);
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>10}  {:>9}  {:>10}",
            "scenario", "saved ev/s", "now ev/s", "now/saved", "normalized"
        );
        for (label, now_rate, is_baseline) in &now {
            let Some((_, saved_rate)) = saved.iter().find(|(l, _)| l == label) else {
                continue;
            };
            let r = now_rate / saved_rate;
            let normalized = match machine {
                Some(m) if !is_baseline => ratio(r / m),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{label:<width$}  {:>10}  {:>10}  {:>9}  {normalized:>10}",
                si(*saved_rate),
                si(*now_rate),
                ratio(r),
            );
        }
        let only_now: Vec<&str> = now
            .iter()
            .filter(|(l, ..)| !saved.iter().any(|(s, _)| s == l))
            .map(|(l, ..)| l.as_str())
            .collect();
        let only_saved: Vec<&str> = saved
            .iter()
            .filter(|(s, _)| !now.iter().any(|(l, ..)| l == s))
            .map(|(s, _)| s.as_str())
            .collect();
        if !only_now.is_empty() {
            let _ = writeln!(out, "only in this run: {}", only_now.join(", "));
        }
        if !only_saved.is_empty() {
            let _ = writeln!(out, "only in the saved run: {}", only_saved.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    fn figures(rows: &[(&str, u64, f64)], baselines: &[(&str, f64)]) -> ThroughputFigures {
        ThroughputFigures {
            rows: rows
                .iter()
                .map(|&(topology, max_demand, events_per_sec)| RowFigure {
                    topology: topology.into(),
                    max_demand,
                    events_per_sec,
                })
                .collect(),
            baselines: baselines
                .iter()
                .map(|&(name, events_per_sec)| BaselineFigure {
                    name: name.into(),
                    events_per_sec,
                })
                .collect(),
        }
    }

    #[test]
    fn result_line_has_the_key_layout_of_bench_md() {
        let f = figures(
            &[("P->C", 1, 123_456.789), ("P->2C broadcast", 10_000, 2.5e8)],
            &[
                ("crossbeam_batched_1000", 4e8),
                ("tokio_mpsc_batched_1000", f64::NAN),
            ],
        );
        assert_eq!(
            f.result_line(),
            "RESULT {\"bench\":\"throughput\",\"rows\":[\
             {\"topology\":\"P->C\",\"max_demand\":1,\"events_per_sec\":123456.8},\
             {\"topology\":\"P->2C broadcast\",\"max_demand\":10000,\"events_per_sec\":250000000}],\
             \"baselines\":[{\"name\":\"crossbeam_batched_1000\",\"events_per_sec\":400000000},\
             {\"name\":\"tokio_mpsc_batched_1000\",\"events_per_sec\":null}]}"
        );
        assert_eq!(
            figures(&[], &[]).result_line(),
            r#"RESULT {"bench":"throughput","rows":[],"baselines":[]}"#
        );
    }

    #[test]
    fn parse_output_reads_the_last_result_line_of_a_saved_run() {
        let old = figures(&[("P->C", 1, 1.0)], &[("a", 2.0)]);
        let new = figures(&[("P->C", 1, 3.0)], &[("a", 4.0)]);
        let output = format!(
            "table\n{}\nmore\n{}\n",
            old.result_line(),
            new.result_line()
        );
        assert_eq!(ThroughputFigures::parse_output(&output).unwrap(), new);
        let bare = new.to_json().to_string();
        assert_eq!(ThroughputFigures::parse_output(&bare).unwrap(), new);
        assert!(ThroughputFigures::parse_output("no result here").is_err());
        assert!(ThroughputFigures::parse_output(r#"RESULT {"bench":"other"}"#).is_err());
    }

    #[test]
    fn compare_divides_out_the_speed_of_the_machine() {
        let saved = figures(
            &[("P->C", 100, 1e6), ("P->C", 1000, 2e6)],
            &[("a", 100.0), ("b", 400.0)],
        );
        // The machine is twice as fast for both baselines; P->C 100 is four times as fast.
        let now = figures(
            &[("P->C", 100, 4e6), ("P->PC->C", 100, 1e6)],
            &[("a", 200.0), ("b", 800.0)],
        );
        let text = now.compare(&saved);
        assert!(
            text.contains("machine now/saved, from the baselines: 2.00x"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("P->C max_demand=100 "))
            .unwrap();
        assert!(row.ends_with("4.00x       2.00x"), "{row}");
        assert!(text.contains("only in this run: P->PC->C max_demand=100"));
        assert!(text.contains("only in the saved run: P->C max_demand=1000"));
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn compare_warns_when_the_baselines_disagree() {
        let saved = figures(&[], &[("a", 100.0), ("b", 100.0)]);
        let now = figures(&[], &[("a", 100.0), ("b", 400.0)]);
        assert!(
            now.compare(&saved)
                .contains("warning: the baselines moved apart")
        );
        let steady = figures(&[], &[("a", 110.0), ("b", 100.0)]);
        assert!(!steady.compare(&saved).contains("warning"));
    }

    #[test]
    fn units_and_ratios_keep_three_significant_digits() {
        assert_eq!(si(512_345_678.0), "512 M");
        assert_eq!(si(12_345.0), "12.3 k");
        assert_eq!(si(7.5), "7.50");
        assert_eq!(si(1.5e9), "1.50 G");
        assert_eq!(ratio(1.0), "1.00x");
        assert_eq!(ratio(0.1234), "0.123x");
        assert_eq!(ratio(0.000_233_4), "0.000233x");
        assert_eq!(ratio(12.34), "12.3x");
        assert_eq!(ratio(123.4), "123.4x");
    }

    fn fixed_rate(events_per_sec: u64) -> impl FnMut(u64) -> Sample {
        move |events| {
            Sample::new(
                events,
                Duration::from_secs_f64(events as f64 / events_per_sec as f64),
            )
        }
    }

    #[test]
    fn a_run_measures_baselines_before_and_after_the_selected_rows() {
        let mut suite = ThroughputSuite::new();
        suite
            .baseline("base", fixed_rate(1_000_000))
            .row("P->C", 10, fixed_rate(500_000))
            .row("P->PC->C", 10, fixed_rate(250_000));
        let args = Args::parse(["--bench", "--quick", "P->C max"]).unwrap();
        let report = suite.run(&args);
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].topology, "P->C");
        let base = &report.baselines[0];
        // Three runs before the rows and three after, pooled.
        assert_eq!(base.measurement.rates.len(), 6);
        assert!(base.drift.unwrap().abs() < 1e-6);
        let table = report.table();
        assert!(table.contains("0.500x"), "{table}");
        let svg = report.plot().to_svg().unwrap();
        // One series, P->C, with its one point and its legend marker.
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("base (1.00 M ev/s)"));
    }

    #[test]
    fn paired_rows_are_rows_of_the_result_and_their_ratio_is_in_the_table() {
        let mut suite = ThroughputSuite::new();
        suite
            .baseline("base", fixed_rate(1_000_000))
            .paired_rows(
                100,
                ("P->PC->C off", fixed_rate(400_000)),
                ("P->PC->C on", fixed_rate(380_000)),
            )
            .paired_rows(
                1,
                ("P->PC->C off", fixed_rate(100_000)),
                ("P->PC->C on", fixed_rate(100_000)),
            );
        // A filter that names only one of a pair selects both.
        let report = suite.run(&Args::parse(["--quick", "on max_demand=100"]).unwrap());
        let figures = report.figures();
        let rows: Vec<(&str, u64)> = figures
            .rows
            .iter()
            .map(|r| (r.topology.as_str(), r.max_demand))
            .collect();
        assert_eq!(rows, [("P->PC->C off", 100), ("P->PC->C on", 100)]);
        assert_eq!(report.pairs, [(0, 1)]);
        // With no other rows, the pair still has the baselines measured before and after it.
        assert!(report.baselines[0].drift.is_some());
        let table = report.table();
        assert!(
            table.contains("P->PC->C on / P->PC->C off at max_demand=100: 0.950x"),
            "{table}"
        );
    }

    #[test]
    fn without_rows_baselines_are_measured_once() {
        let mut suite = ThroughputSuite::new();
        suite.baseline("base", fixed_rate(1_000_000));
        let report = suite.run(&Args::parse(["--quick"]).unwrap());
        assert_eq!(report.baselines[0].measurement.rates.len(), 3);
        assert_eq!(report.baselines[0].drift, None);
        assert!(report.rows.is_empty());
        assert!(!report.table().contains("after the rows"));
    }

    #[test]
    fn the_table_warns_when_a_baseline_drifted_during_the_run() {
        let mut suite = ThroughputSuite::new();
        // Four times faster once the rows have run, as crossbeam's threads on one core instead
        // of two.
        let rows_ran = Rc::new(Cell::new(false));
        let flag = Rc::clone(&rows_ran);
        suite
            .baseline("flip", move |events| {
                let rate = if flag.get() { 4e6 } else { 1e6 };
                Sample::new(events, Duration::from_secs_f64(events as f64 / rate))
            })
            .row("P->C", 1, move |events| {
                rows_ran.set(true);
                Sample::new(events, Duration::from_millis(events))
            });
        let report = suite.run(&Args::parse(["--quick"]).unwrap());
        assert!((report.baselines[0].drift.unwrap() - 3.0).abs() < 1e-9);
        assert!(report.table().contains("warning: a baseline changed"));
    }
}

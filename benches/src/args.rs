//! The command line of a bench binary.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

/// How much measuring a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cargo test --benches` (or `--all-targets`) runs bench binaries without `--bench`: each
    /// scenario runs once on a few events to prove that it works, and nothing is measured.
    Smoke,
    /// `--quick`: short measurements that finish in under 60 seconds on a 2-core machine.
    Quick,
    /// `cargo bench` without `--quick`: longer and more repetitions, and a plot is written.
    Full,
}

/// The options of a bench binary, as `cargo bench -p demandflow-benches --bench NAME -- …`
/// passes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// How much measuring this run does.
    pub mode: Mode,
    /// `--compare FILE`: a saved output of an earlier run; the figures of this run are compared
    /// with its `RESULT` line.
    pub compare: Option<PathBuf>,
    /// Positional arguments: only scenarios whose label contains one of them are measured.
    /// Baselines are always measured. Empty: every scenario.
    pub filters: Vec<String>,
}

/// What `--help` prints.
pub const USAGE: &str = "\
usage: cargo bench -p demandflow-benches --bench NAME -- [OPTIONS] [FILTER]...

options:
  --quick           short measurements (under a minute in total), no plot
  --compare FILE    compare with the RESULT line saved in FILE (the last one in it)
  --help            print this help

FILTER: measure only the scenarios whose label contains it (baselines always run).
Without --bench (which `cargo bench` passes, `cargo test` does not) every scenario
runs once as a smoke test and nothing is measured.";

impl Args {
    /// Parses the arguments of this process.
    ///
    /// # Errors
    ///
    /// See [`Args::parse`].
    pub fn from_env() -> Result<Args, ArgsError> {
        Args::parse(std::env::args().skip(1))
    }

    /// The arguments of this process for the bench `bench`'s `main`: `Err` with the exit code
    /// to return after `--help` (usage printed, success) or a bad command line (error and
    /// usage printed on stderr, failure 2).
    pub fn from_env_or_exit(bench: &str) -> Result<Args, ExitCode> {
        match Args::from_env() {
            Ok(args) => Ok(args),
            Err(ArgsError::Help) => {
                println!("{USAGE}");
                Err(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("{bench}: {err}\n\n{USAGE}");
                Err(ExitCode::from(2))
            }
        }
    }

    /// Parses `args`, the arguments after the program name.
    ///
    /// `--bench`, which `cargo bench` passes to every bench binary, selects measuring; without it
    /// (as under `cargo test`) the mode is [`Mode::Smoke`] unless `--quick` is given.
    ///
    /// # Errors
    ///
    /// [`ArgsError::Help`] for `--help`, [`ArgsError::UnknownOption`] for an option this harness
    /// does not know, [`ArgsError::MissingValue`] for `--compare` without a file.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_benches::{Args, Mode};
    ///
    /// let args = Args::parse(["--quick", "--bench", "P->C"]).unwrap();
    /// assert_eq!(args.mode, Mode::Quick);
    /// assert_eq!(args.filters, ["P->C"]);
    /// assert_eq!(Args::parse(["--bench"]).unwrap().mode, Mode::Full);
    /// assert_eq!(Args::parse::<_, &str>([]).unwrap().mode, Mode::Smoke);
    /// ```
    pub fn parse<I, S>(args: I) -> Result<Args, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut quick = false;
        let mut bench = false;
        let mut compare = None;
        let mut filters = Vec::new();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--bench" => bench = true,
                "--help" | "-h" => return Err(ArgsError::Help),
                "--compare" => {
                    let file = args.next().ok_or(ArgsError::MissingValue("--compare"))?;
                    compare = Some(PathBuf::from(file));
                }
                _ => {
                    if let Some(file) = arg.strip_prefix("--compare=") {
                        compare = Some(PathBuf::from(file));
                    } else if arg.starts_with('-') {
                        return Err(ArgsError::UnknownOption(arg));
                    } else {
                        filters.push(arg);
                    }
                }
            }
        }
        let mode = match (quick, bench) {
            (true, _) => Mode::Quick,
            (false, true) => Mode::Full,
            (false, false) => Mode::Smoke,
        };
        Ok(Args {
            mode,
            compare,
            filters,
        })
    }

    /// Whether the scenario labelled `label` is selected by the filters.
    pub fn selects(&self, label: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| label.contains(f.as_str()))
    }
}

/// Why the command line was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    /// `--help` was given: print [`USAGE`] and stop.
    Help,
    /// An option this harness does not know.
    UnknownOption(String),
    /// An option that takes a value came last.
    MissingValue(&'static str),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgsError::Help => f.write_str("help requested"),
            ArgsError::UnknownOption(option) => write!(f, "unknown option {option}"),
            ArgsError::MissingValue(option) => write!(f, "{option} needs a value"),
        }
    }
}

impl std::error::Error for ArgsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_bench_without_quick_is_a_full_run() {
        let args = Args::parse(["--bench"]).unwrap();
        assert_eq!(args.mode, Mode::Full);
        assert!(args.filters.is_empty());
        assert_eq!(args.compare, None);
    }

    #[test]
    fn quick_wins_with_or_without_bench() {
        assert_eq!(
            Args::parse(["--quick", "--bench"]).unwrap().mode,
            Mode::Quick
        );
        assert_eq!(
            Args::parse(["--bench", "--quick"]).unwrap().mode,
            Mode::Quick
        );
        assert_eq!(Args::parse(["--quick"]).unwrap().mode, Mode::Quick);
    }

    #[test]
    fn compare_takes_a_file_in_either_spelling() {
        let a = Args::parse(["--compare", "main.txt", "--bench"]).unwrap();
        let b = Args::parse(["--bench", "--compare=main.txt"]).unwrap();
        assert_eq!(a.compare, Some(PathBuf::from("main.txt")));
        assert_eq!(a, b);
        assert_eq!(
            Args::parse(["--compare"]),
            Err(ArgsError::MissingValue("--compare"))
        );
    }

    #[test]
    fn unknown_options_are_refused_and_words_are_filters() {
        assert_eq!(
            Args::parse(["--bench", "--fast"]),
            Err(ArgsError::UnknownOption("--fast".into()))
        );
        let args = Args::parse(["--bench", "P->C", "broadcast"]).unwrap();
        assert!(args.selects("P->C max_demand=1"));
        assert!(args.selects("P->2C broadcast max_demand=10"));
        assert!(!args.selects("consumer_supervisor max_demand=10"));
        assert!(Args::parse(["--bench"]).unwrap().selects("anything"));
    }
}

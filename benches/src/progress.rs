//! Progress of a bench run on stderr: a line per finished step, and on full runs an
//! `indicatif` bar below them with the current step and the time left.

use indicatif::{ProgressBar, ProgressStyle};

use crate::Mode;

/// Progress through the `total` steps of one bench run.
///
/// Each step is announced with [`start`](Progress::start) and closed with
/// [`finish`](Progress::finish); together they print `[i/n] label ... outcome` on stderr. A full
/// run on a terminal also shows a bar below those lines, with the current step, the elapsed
/// time and an estimate of what is left (when stderr is not a terminal, only the lines).
///
/// # Examples
///
/// ```
/// use demandflow_benches::{Mode, Progress};
///
/// let mut progress = Progress::new("example", Mode::Quick, 2);
/// progress.start("first");
/// progress.finish("ok");
/// progress.start("second");
/// progress.finish("ok");
/// assert_eq!(progress.done(), 2);
/// ```
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    label: String,
}

impl Progress {
    /// Progress of `total` steps of the bench `bench`; with a bar when `mode` is [`Mode::Full`].
    pub fn new(bench: &str, mode: Mode, total: u64) -> Progress {
        let bar = (mode == Mode::Full).then(|| {
            let bar = ProgressBar::new(total).with_prefix(bench.to_owned());
            // The template is a constant, so it always parses.
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed}, about {eta} left: {wide_msg}",
            )
            .expect("a valid progress template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        // indicatif hides a bar when stderr is not a terminal, and then prints nothing at all:
        // fall back to plain lines.
        let bar = bar.filter(|bar| !bar.is_hidden());
        Progress {
            bar,
            total,
            done: 0,
            label: String::new(),
        }
    }

    /// Announces the next step, `label`.
    pub fn start(&mut self, label: &str) {
        self.label = label.to_owned();
        match &self.bar {
            Some(bar) => bar.set_message(label.to_owned()),
            // Without a bar the outcome ends this line (see `finish`).
            None => eprint!("[{}/{}] {label} ... ", self.done + 1, self.total),
        }
    }

    /// Closes the step started last, with what it found (`1.2 M ev/s`, `ok`).
    pub fn finish(&mut self, outcome: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.println(format!(
                    "[{}/{}] {} ... {outcome}",
                    self.done, self.total, self.label
                ));
                bar.inc(1);
            }
            None => eprintln!("{outcome}"),
        }
    }

    /// Prints `line` on stderr, above the bar if there is one (a plain `eprintln!` would be
    /// drawn over by it).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Steps finished so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

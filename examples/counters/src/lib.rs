//! A counter service: clients increment named counters over HTTP; the
//! counters live in memory and are written behind to SQLite or PostgreSQL,
//! coalesced per key and batched, by a demandflow messages topology.
//!
//! Three modes behind one flag, to compare designs on the same requests:
//!
//! - [`Mode::Noop`] parses and validates each request, answers 202 and does
//!   nothing else: the ceiling.
//! - [`Mode::Sync`] reads, adds and writes each increment in a database
//!   transaction before answering.
//! - [`Mode::Batched`] adds to the counter in memory ([`Counters`]) and answers;
//!   a key's first change after its last write pushes the key (not the
//!   value) into the [`WriteBehind`] pipeline, whose batcher emits a batch
//!   when `max_updates + 1` keys are pending or, at the latest, soon enough
//!   after the batch's first key for its write to land within `interval`;
//!   the batch handler reads the keys' latest values and writes
//!   them in one upsert, retrying with back-off while the database is down.
//!
//! The HTTP routes are in [`router`]; `src/main.rs` runs the service and
//! `src/bin/counters-bench.rs` measures the three modes side by side. The
//! guide's chapter 13, *Write-behind*, walks through the design.

mod counters;
mod http;
mod store;
mod write_behind;

use std::sync::Arc;
use std::time::Duration;

pub use counters::{Added, Counters, Overflow};
pub use http::{Increment, MAX_KEY_BYTES, parse_increment, request, router};
pub use store::{Store, StoreError};
pub use write_behind::{FlushStats, WRITE_SHARE, WriteBehind};

/// Which design serves the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Parse and validate, answer 202, do nothing else.
    Noop,
    /// Read, add and write in a database transaction per request.
    Sync,
    /// Counters in memory, written behind in batches.
    Batched,
}

impl Mode {
    /// The three modes, in the order the benchmark runs them.
    pub const ALL: [Mode; 3] = [Mode::Noop, Mode::Sync, Mode::Batched];

    /// `"noop"`, `"sync"` or `"batched"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Noop => "noop",
            Mode::Sync => "sync",
            Mode::Batched => "batched",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "noop" => Ok(Mode::Noop),
            "sync" => Ok(Mode::Sync),
            "batched" => Ok(Mode::Batched),
            other => Err(format!(
                "unknown mode {other:?} (want noop, sync or batched)"
            )),
        }
    }
}

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The design (default [`Mode::Batched`]).
    pub mode: Mode,
    /// A flush is written when more than this many keys are pending (default 10,000).
    pub max_updates: usize,
    /// …and no change waits longer than this to be written (default 5 s).
    pub interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Batched,
            max_updates: 10_000,
            interval: Duration::from_secs(5),
        }
    }
}

/// Why an increment was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncrementError {
    /// The counter would leave `i64`'s range.
    #[error("counter would overflow")]
    Overflow,
    /// The database failed (synchronous mode only).
    #[error(transparent)]
    Store(StoreError),
}

/// Starting the service failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The counters could not be loaded.
    #[error("loading the counters: {0}")]
    Load(#[from] StoreError),
    /// The write-behind pipeline did not start.
    #[error("starting the write-behind pipeline: {0}")]
    WriteBehind(#[from] demandflow::messages::StartTopologyError),
}

/// The service: its mode, its store, and in batched mode the counters and the
/// write-behind pipeline.
#[derive(Debug)]
pub struct Service {
    mode: Mode,
    store: Store,
    counters: Arc<Counters>,
    write_behind: Option<WriteBehind>,
}

impl Service {
    /// Starts the service on `store`. In batched mode it loads every counter
    /// from the store first, then starts the write-behind pipeline.
    ///
    /// # Errors
    ///
    /// [`StartError`] if loading or the pipeline fails.
    pub async fn start(store: Store, config: &Config) -> Result<Arc<Service>, StartError> {
        let counters = Arc::new(Counters::new());
        let write_behind = if config.mode == Mode::Batched {
            counters.load(store.load().await?);
            Some(
                WriteBehind::start(
                    counters.clone(),
                    store.clone(),
                    config.max_updates,
                    config.interval,
                )
                .await?,
            )
        } else {
            None
        };
        Ok(Arc::new(Service {
            mode: config.mode,
            store,
            counters,
            write_behind,
        }))
    }

    /// The service's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The counters in memory (empty unless batched).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The write-behind pipeline's statistics (batched mode only).
    pub fn flush_stats(&self) -> Option<&FlushStats> {
        self.write_behind.as_ref().map(WriteBehind::stats)
    }

    /// Applies an increment the way the mode says.
    ///
    /// # Errors
    ///
    /// [`IncrementError::Overflow`], or in synchronous mode the store's error.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<(), IncrementError> {
        match self.mode {
            Mode::Noop => Ok(()),
            Mode::Sync => match self.store.increment(key, delta).await {
                Ok(_) => Ok(()),
                Err(StoreError::Overflow) => Err(IncrementError::Overflow),
                Err(error) => Err(IncrementError::Store(error)),
            },
            Mode::Batched => {
                let added = self
                    .counters
                    .add(key, delta)
                    .map_err(|Overflow| IncrementError::Overflow)?;
                if added.newly_dirty
                    && let Some(write_behind) = &self.write_behind
                {
                    write_behind.push(key);
                }
                Ok(())
            }
        }
    }

    /// A counter's current value (0 if unknown; always 0 in noop mode).
    ///
    /// # Errors
    ///
    /// In synchronous mode, the store's error.
    pub async fn get(&self, key: &str) -> Result<i64, StoreError> {
        match self.mode {
            Mode::Noop => Ok(0),
            Mode::Sync => self.store.get(key).await,
            Mode::Batched => Ok(self.counters.get(key)),
        }
    }

    /// Stops writing behind: everything pending is written (retrying while
    /// the database is down, until `deadline`). Call it once no request is
    /// served any more; returns how many changes could not be written.
    pub async fn shutdown(&self, deadline: Duration) -> u64 {
        let Some(write_behind) = &self.write_behind else {
            return 0;
        };
        write_behind.drain(deadline).await;
        write_behind
            .stats()
            .pending
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

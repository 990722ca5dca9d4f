//! For tests and benchmarks: a sink that keeps every batch, one that
//! measures another, a numbered event, its load, and reading a stream back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use crate::analytics::Analytics;
use crate::event::{Event, Record};
use crate::sink::{SendError, Sink};

/// A sink that keeps every batch it stored, in the order the sends finished,
/// and measures the most sends it ever had running at once.
///
/// It can also take time ([`latency`](Self::latency), so that sends overlap),
/// fail its first sends ([`fail_first`](Self::fail_first)), or hold every send
/// until [`open`](Self::open) is called ([`closed`](Self::closed)). Use it
/// under tokio's paused clock: the latency then costs no real time.
///
/// ```
/// use analytics::{Record, RecordingSink, Sink};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = RecordingSink::new();
/// let record = Record { partition_key: "k".into(), data: b"1".to_vec() };
/// sink.send("clicks", &[record.clone()]).await.unwrap();
/// assert_eq!(sink.batches(), vec![("clicks".to_string(), vec![record])]);
/// assert_eq!(sink.max_in_flight(), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct RecordingSink {
    batches: Mutex<Vec<(String, Vec<Record>)>>,
    latency: Duration,
    failures_left: AtomicU64,
    attempts: AtomicU64,
    in_flight: Gauge,
    open: watch::Sender<bool>,
}

impl Default for RecordingSink {
    fn default() -> Self {
        RecordingSink::new()
    }
}

impl RecordingSink {
    /// A sink whose sends succeed at once.
    pub fn new() -> Self {
        RecordingSink {
            batches: Mutex::new(Vec::new()),
            latency: Duration::ZERO,
            failures_left: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            in_flight: Gauge::default(),
            open: watch::Sender::new(true),
        }
    }

    /// Every send takes `latency`.
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The first `sends` sends fail (and store nothing).
    #[must_use]
    pub fn fail_first(self, sends: u64) -> Self {
        self.failures_left.store(sends, Ordering::Relaxed);
        self
    }

    /// Sends wait until [`open`](Self::open) is called.
    #[must_use]
    pub fn closed(self) -> Self {
        self.open.send_replace(false);
        self
    }

    /// Lets held sends, and every later one, go through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// The batches stored so far: stream and records, in the order the sends
    /// finished.
    pub fn batches(&self) -> Vec<(String, Vec<Record>)> {
        self.batches.lock().clone()
    }

    /// The records stored so far, in the order their sends finished.
    pub fn records(&self) -> Vec<Record> {
        self.batches
            .lock()
            .iter()
            .flat_map(|(_, records)| records.iter().cloned())
            .collect()
    }

    /// How many sends were made, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The most sends that were ever running at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.max()
    }
}

/// How many sends are running, and the most that ever were.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    /// Counts a send in until the guard is dropped, so a cancelled send is
    /// counted out too.
    fn enter(&self) -> impl Drop + '_ {
        let now = self.now.fetch_add(1, Ordering::AcqRel) + 1;
        self.max.fetch_max(now, Ordering::AcqRel);
        Leave(&self.now)
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Wraps a sink and measures what the sender gives it: the most sends running
/// at once, the largest batch, and records identical to one already stored
/// (duplicates, when every record is unique, as [`Numbered`] ones are). The
/// example measures its null and Redis runs with it.
///
/// It keeps a copy of every record it stored, to find the duplicates: a tool
/// for tests and benchmarks, not for production.
///
/// ```
/// use analytics::{Measured, Numbered, NullSink, Record, Sink};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = Measured::new(NullSink::with_latency(Duration::ZERO, Duration::ZERO));
/// let batch = [Record::of(&Numbered { source: 0, n: 1 })];
/// sink.send("numbered", &batch).await.unwrap();
/// sink.send("numbered", &batch).await.unwrap();
/// assert_eq!((sink.records(), sink.duplicates(), sink.max_batch()), (2, 1, 1));
/// # }
/// ```
#[derive(Debug)]
pub struct Measured<S> {
    inner: S,
    in_flight: Gauge,
    max_batch: AtomicUsize,
    records: AtomicU64,
    seen: Mutex<HashSet<Record>>,
    duplicates: AtomicU64,
}

impl<S: Sink> Measured<S> {
    /// Measures `inner`.
    pub fn new(inner: S) -> Self {
        Measured {
            inner,
            in_flight: Gauge::default(),
            max_batch: AtomicUsize::new(0),
            records: AtomicU64::new(0),
            seen: Mutex::new(HashSet::new()),
            duplicates: AtomicU64::new(0),
        }
    }

    /// The sink measured.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The most sends that were ever running at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.max()
    }

    /// The largest batch stored.
    pub fn max_batch(&self) -> usize {
        self.max_batch.load(Ordering::Relaxed)
    }

    /// Records stored, duplicates included.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Records stored that were identical to one stored before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}

impl<S: Sink> Sink for Measured<S> {
    async fn send(&self, stream: &str, records: &[Record]) -> Result<(), SendError> {
        let _running = self.in_flight.enter();
        self.inner.send(stream, records).await?;
        self.max_batch.fetch_max(records.len(), Ordering::Relaxed);
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut seen = self.seen.lock();
        let repeated = records
            .iter()
            .filter(|r| !seen.insert((*r).clone()))
            .count();
        self.duplicates
            .fetch_add(repeated as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Sink for RecordingSink {
    async fn send(&self, stream: &str, records: &[Record]) -> Result<(), SendError> {
        let _running = self.in_flight.enter();
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.subscribe();
        // The sender never drops while `self` lives, so this cannot fail.
        let _ = open.wait_for(|open| *open).await;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let failing = self
            .failures_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(SendError("recording sink told to fail".into()));
        }
        self.batches
            .lock()
            .push((stream.to_string(), records.to_vec()));
        Ok(())
    }
}

/// An event for tests and the example: record `n` of a numbered source (a
/// task, say), encoded as the text `source:n` and keyed by its source, so
/// whoever reads the stream back can find missing, duplicated or reordered
/// records.
///
/// ```
/// use analytics::{Numbered, Record};
///
/// let record = Record::of(&Numbered { source: 3, n: 42 });
/// assert_eq!(record.data, b"3:42");
/// assert_eq!(Numbered::decode(&record.data), Some(Numbered { source: 3, n: 42 }));
/// assert_eq!(Numbered::decode(b"3-42"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Numbered {
    /// Which source recorded it.
    pub source: u32,
    /// Its number within its source.
    pub n: u64,
}

impl Numbered {
    /// Reads an encoded `Numbered` back; `None` when `data` is not one.
    pub fn decode(data: &[u8]) -> Option<Numbered> {
        let (source, n) = std::str::from_utf8(data).ok()?.split_once(':')?;
        Some(Numbered {
            source: source.parse().ok()?,
            n: n.parse().ok()?,
        })
    }
}

impl Event for Numbered {
    const STREAM: &'static str = "numbered";

    fn partition_key(&self) -> String {
        self.source.to_string()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{}:{}", self.source, self.n);
    }
}

/// Records `each` [`Numbered`] events from each of `tasks` spawned tasks at
/// once (source `i` records `0..each` in order) and waits for them all: the
/// load of the tests and the example.
///
/// # Panics
///
/// When a record is refused (the sender was shut down) or a task panics.
pub async fn record_numbered<S: Sink>(analytics: &Analytics<S>, tasks: u32, each: u64) {
    let tasks: Vec<_> = (0..tasks)
        .map(|source| {
            let analytics = analytics.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    analytics
                        .record(Numbered { source, n })
                        .await
                        .expect("the sender is running");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a recording task panicked");
    }
}

/// Opens a connection to the Redis server at `url` for reading streams back
/// (2 s to connect, 30 s per reply).
///
/// # Errors
///
/// When the URL is invalid or the server does not answer.
pub async fn redis_connection(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Reads every entry of `stream` (its `key` and `data` fields, in stream
/// order) and deletes the stream.
///
/// # Errors
///
/// When Redis fails the read or the delete.
pub async fn take_stream(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<Vec<Record>> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    let _: () = redis::cmd("DEL").arg(stream).query_async(conn).await?;
    Ok(entries
        .ids
        .iter()
        .map(|entry| Record {
            partition_key: entry.get("key").unwrap_or_default(),
            data: entry.get("data").unwrap_or_default(),
        })
        .collect())
}

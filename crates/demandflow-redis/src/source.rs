//! The source: a consumer of a consumer group, reading as much as is asked.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use demandflow_messages::connector::{Deliver, Feed, FeedStage};
use demandflow_messages::{AckRef, Acknowledger, Failure, Message};
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ack::{self, FailurePolicy, StreamAcknowledger, Target};
use crate::conn::{Backoff, connect};
use crate::entry::{StreamEntry, autoclaim_reply, read_reply};
use crate::metrics::{Counters, SourceMetrics};

type Decode<T> = Arc<dyn Fn(&StreamEntry) -> Result<T, String> + Send + Sync>;

/// Why [`RedisSourceBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildSourceError {
    /// The URL is not a Redis URL.
    #[error("invalid redis url: {0}")]
    Url(#[source] RedisError),
    /// The server could not be reached (or did not answer in time).
    #[error("redis at {url} is unreachable: {source}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// Creating the consumer group failed (other than because it exists).
    #[error("creating consumer group {group:?} on {stream:?} failed: {source}")]
    Group {
        /// The stream's key.
        stream: String,
        /// The group's name.
        group: String,
        /// Why.
        #[source]
        source: RedisError,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// Where a new consumer group starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// At the stream's first entry (`XGROUP CREATE … 0`).
    #[default]
    Beginning,
    /// At entries added after the group is created (`XGROUP CREATE … $`).
    NewEntries,
}

/// Configures a [`RedisSource`]. Made by [`RedisSource::builder`].
///
/// | option | default |
/// |---|---|
/// | `consumer` | `"consumer-<pid>"` |
/// | `decode` | none: the data is the [`StreamEntry`] |
/// | `max_batch` | 1,000 (the largest `COUNT` of one read) |
/// | `block` | 1 s (how long one read waits for new entries) |
/// | `claim_min_idle` | 30 s |
/// | `claim_interval` | 5 s |
/// | `on_failure` | [`FailurePolicy::LeavePending`] |
/// | `start_from` | [`StartFrom::Beginning`] |
pub struct RedisSourceBuilder<T> {
    options: Options,
    decode: Decode<T>,
}

/// Everything a source is configured with but its decoder (which alone
/// depends on the data type), kept by the builder and then by the source.
#[derive(Debug)]
struct Options {
    url: String,
    stream: String,
    group: String,
    consumer: String,
    max_batch: NonZeroUsize,
    block: Duration,
    claim_min_idle: Duration,
    claim_interval: Duration,
    policy: FailurePolicy,
    start_from: StartFrom,
}

impl<T: Send + 'static> RedisSourceBuilder<T> {
    /// The consumer's name in the group; copy `i` of the source reads as
    /// `"<name>-<i>"`. Give every process its own name: two live processes
    /// with one name share a pending list.
    #[must_use]
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.options.consumer = name.into();
        self
    }

    /// Turns entries into the messages' data. An entry it rejects fails with
    /// `"malformed entry: <reason>"` and is handled by the failure policy
    /// without reaching the processors.
    #[must_use]
    pub fn decode<U, F>(self, decode: F) -> RedisSourceBuilder<U>
    where
        F: Fn(&StreamEntry) -> Result<U, String> + Send + Sync + 'static,
    {
        RedisSourceBuilder {
            options: self.options,
            decode: Arc::new(decode),
        }
    }

    /// The largest `COUNT` of one read; a read never asks more than the
    /// demand the source has, either.
    #[must_use]
    pub fn max_batch(mut self, max_batch: NonZeroUsize) -> Self {
        self.options.max_batch = max_batch;
        self
    }

    /// How long one `XREADGROUP … BLOCK` waits for new entries before the
    /// source looks again (and claims, if a claim is due).
    #[must_use]
    pub fn block(mut self, block: Duration) -> Self {
        self.options.block = block;
        self
    }

    /// How long an entry must have been pending before this source claims it
    /// from another consumer. Longer than the slowest message takes to
    /// finish, or live consumers' entries are claimed and processed twice.
    #[must_use]
    pub fn claim_min_idle(mut self, min_idle: Duration) -> Self {
        self.options.claim_min_idle = min_idle;
        self
    }

    /// How often the source looks for entries to claim (it also looks once
    /// at start).
    #[must_use]
    pub fn claim_interval(mut self, interval: Duration) -> Self {
        self.options.claim_interval = interval;
        self
    }

    /// What happens to entries whose messages failed.
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.options.policy = policy;
        self
    }

    /// Where the group starts if this source creates it.
    #[must_use]
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.options.start_from = start;
        self
    }

    /// Connects, creates the consumer group if it does not exist (and the
    /// stream with it), and starts the task that acknowledges.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`BuildSourceError`] when the URL is invalid, the server does not
    /// answer within 3 seconds, the group cannot be created, or the block
    /// time is zero or over an hour.
    pub async fn build(self) -> Result<RedisSource<T>, BuildSourceError> {
        let options = self.options;
        if options.block.is_zero() || options.block > Duration::from_secs(3600) {
            return Err(BuildSourceError::Invalid(
                "block must be between 1 ms and 1 hour",
            ));
        }
        if options.claim_interval.is_zero() {
            return Err(BuildSourceError::Invalid("claim_interval must not be zero"));
        }
        let client = Client::open(options.url.as_str()).map_err(BuildSourceError::Url)?;
        let unreachable = |source| BuildSourceError::Unreachable {
            url: options.url.clone(),
            source,
        };
        let mut conn = connect(&client, Duration::from_secs(10))
            .await
            .map_err(unreachable)?;
        let start = match options.start_from {
            StartFrom::Beginning => "0",
            StartFrom::NewEntries => "$",
        };
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&options.stream)
            .arg(&options.group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() => {
                return Err(unreachable(e));
            }
            Err(source) => {
                return Err(BuildSourceError::Group {
                    stream: options.stream,
                    group: options.group,
                    source,
                });
            }
        }
        let counters = Arc::new(Counters::default());
        let acknowledger = ack::start(
            Target {
                client: client.clone(),
                stream: options.stream.clone(),
                group: options.group.clone(),
                policy: options.policy.clone(),
                counters: counters.clone(),
            },
            conn,
        );
        Ok(RedisSource {
            shared: Arc::new(Shared {
                client,
                options,
                decode: self.decode,
                acknowledger,
                counters,
            }),
        })
    }
}

impl<T> fmt::Debug for RedisSourceBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSourceBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Shared<T> {
    client: Client,
    options: Options,
    decode: Decode<T>,
    acknowledger: Arc<StreamAcknowledger>,
    counters: Arc<Counters>,
}

/// A Redis stream read through a consumer group, as a source of messages
/// for a [`Topology`](demandflow_messages::Topology).
///
/// Build it once with [`RedisSource::builder`], then give the topology its
/// copies: `.source(n, move |i| source.copy(i))`. Each copy is a consumer of
/// the group (`"<consumer>-<i>"`) with a dedicated connection for its
/// blocking reads.
///
/// # What a copy does
///
/// - It reads with `XREADGROUP … COUNT c BLOCK b STREAMS key >`, where `c` is
///   the demand it has not yet met (at most `max_batch`): it never holds more
///   entries than were asked of it.
/// - At start, then every `claim_interval`, it claims entries pending longer
///   than `claim_min_idle` (`XAUTOCLAIM`, again at most the demand): the
///   work of a consumer that died is finished by the others.
/// - A message that succeeds is acknowledged with `XACK`, in groups, on a
///   task shared by the copies. A message that fails is handled by the
///   [`FailurePolicy`].
/// - A command that fails for want of a connection is retried after a
///   back-off (50 ms doubling to 5 s) on a new connection, logged at warn
///   level and counted in [`metrics`](Self::metrics). Entries whose reply was
///   lost stay pending and are claimed later: nothing is lost, and as XACK
///   only counts pending ids, nothing is acknowledged twice.
///
/// Delivery is at least once: an entry whose message finished but whose XACK
/// was lost with its process is delivered again to another consumer.
pub struct RedisSource<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for RedisSource<T> {
    fn clone(&self) -> Self {
        RedisSource {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for RedisSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        let options = &self.shared.options;
        f.debug_struct("RedisSource")
            .field("stream", &options.stream)
            .field("group", &options.group)
            .field("consumer", &options.consumer)
            .finish_non_exhaustive()
    }
}

impl RedisSource<StreamEntry> {
    /// Configures a source reading `stream` as a member of consumer group
    /// `group` on the server at `url` (`"redis://127.0.0.1:6379/"`).
    pub fn builder(
        url: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> RedisSourceBuilder<StreamEntry> {
        RedisSourceBuilder {
            options: Options {
                url: url.into(),
                stream: stream.into(),
                group: group.into(),
                consumer: format!("consumer-{}", std::process::id()),
                max_batch: NonZeroUsize::new(1000).expect("not zero"),
                block: Duration::from_secs(1),
                claim_min_idle: Duration::from_secs(30),
                claim_interval: Duration::from_secs(5),
                policy: FailurePolicy::LeavePending,
                start_from: StartFrom::Beginning,
            },
            decode: Arc::new(|entry: &StreamEntry| Ok(entry.clone())),
        }
    }
}

impl<T: Send + 'static> RedisSource<T> {
    /// Copy `index` of the source: a producer stage reading as consumer
    /// `"<consumer>-<index>"`.
    pub fn copy(&self, index: usize) -> StreamProducer<T> {
        FeedStage::new(StreamFeed {
            shared: self.shared.clone(),
            name: format!("{}-{index}", self.shared.options.consumer),
            reader: None,
        })
    }

    /// The source's counters, all copies together.
    pub fn metrics(&self) -> SourceMetrics {
        self.shared.counters.snapshot()
    }
}

/// Demand handed from the stage to its reader task.
struct Demand {
    wanted: AtomicU64,
    stop: AtomicBool,
    wake: Notify,
}

/// One copy of a [`RedisSource`]: a producer of messages (see
/// [`RedisSource::copy`]).
pub type StreamProducer<T> = FeedStage<StreamFeed<T>>;

/// The reading side of one copy: a task reading on a connection of its own.
pub struct StreamFeed<T> {
    shared: Arc<Shared<T>>,
    name: String,
    reader: Option<Arc<Demand>>,
}

impl<T> fmt::Debug for StreamFeed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("stream", &self.shared.options.stream)
            .field("consumer", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Feed for StreamFeed<T> {
    type Data = T;

    fn start(&mut self, deliver: Deliver<T>) {
        let demand = Arc::new(Demand {
            wanted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.reader = Some(demand.clone());
        let reader = Reader {
            shared: self.shared.clone(),
            name: self.name.clone(),
            demand,
            to: deliver,
        };
        tokio::spawn(reader.run());
    }

    fn demand(&mut self, demand: u64) {
        if let Some(reader) = &self.reader {
            reader.wanted.fetch_add(demand, Ordering::AcqRel);
            reader.wake.notify_one();
        }
    }

    /// What the reader has in flight arrives after the stop and is dropped,
    /// which leaves its entries pending for another consumer.
    fn stop(&mut self) {
        if let Some(demand) = self.reader.take() {
            demand.stop.store(true, Ordering::Release);
            demand.wake.notify_one();
        }
    }
}

/// Opens the reader's connection and names it `df-<consumer>` (seen in
/// `CLIENT LIST`, so an operator knows whose connection it is).
async fn connect_named(
    client: &Client,
    response: Duration,
    consumer: &str,
) -> redis::RedisResult<MultiplexedConnection> {
    let mut conn = connect(client, response).await?;
    let name: String = format!("df-{consumer}")
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
}

/// The task that reads for one copy, on its own connection.
struct Reader<T> {
    shared: Arc<Shared<T>>,
    name: String,
    demand: Arc<Demand>,
    to: Deliver<T>,
}

impl<T: Send + 'static> Reader<T> {
    async fn run(self) {
        let shared = &*self.shared;
        let response = shared.options.block + Duration::from_secs(5);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut backoff = Backoff::new();
        // Claim once at start, then every `claim_interval`.
        let mut next_claim = Instant::now();
        let mut cursor: Option<String> = None;
        let mut entries = Vec::new();
        loop {
            let wanted = loop {
                if self.demand.stop.load(Ordering::Acquire) {
                    return;
                }
                let wanted = self.demand.wanted.load(Ordering::Acquire);
                if wanted > 0 {
                    break wanted;
                }
                self.demand.wake.notified().await;
            };
            let count = (wanted as usize).min(shared.options.max_batch.get());
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match connect_named(&shared.client, response, &self.name).await {
                    Ok(c) => {
                        if backoff.retrying() {
                            Counters::add(&shared.counters.reconnects, 1);
                        }
                        conn.insert(c)
                    }
                    Err(e) => {
                        self.failed(&e, &mut backoff).await;
                        continue;
                    }
                },
            };
            let claiming = cursor.is_some() || Instant::now() >= next_claim;
            let result = if claiming {
                let from = cursor.take().unwrap_or_else(|| "0-0".to_owned());
                redis::cmd("XAUTOCLAIM")
                    .arg(&shared.options.stream)
                    .arg(&shared.options.group)
                    .arg(&self.name)
                    .arg(shared.options.claim_min_idle.as_millis() as u64)
                    .arg(&from)
                    .arg("COUNT")
                    .arg(count)
                    .query_async::<Value>(c)
                    .await
                    .map(|reply| {
                        let next = autoclaim_reply(reply, &mut entries);
                        match next.as_deref() {
                            Some("0-0") | None => {
                                next_claim = Instant::now() + shared.options.claim_interval;
                            }
                            Some(_) => cursor = next,
                        }
                        Counters::add(&shared.counters.claimed, entries.len() as u64);
                    })
            } else {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(&shared.options.group)
                    .arg(&self.name)
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(shared.options.block.as_millis().max(1) as u64)
                    .arg("STREAMS")
                    .arg(&shared.options.stream)
                    .arg(">")
                    .query_async::<Value>(c)
                    .await
                    .map(|reply| {
                        read_reply(reply, &mut entries);
                        Counters::add(&shared.counters.read, entries.len() as u64);
                    })
            };
            if let Err(e) = result {
                if claiming {
                    // Start the sweep again after the reconnect.
                    next_claim = Instant::now();
                }
                conn = None;
                self.failed(&e, &mut backoff).await;
                continue;
            }
            backoff.reset();
            if entries.is_empty() {
                continue;
            }
            let messages = self.messages(&mut entries);
            self.demand
                .wanted
                .fetch_sub(messages.len() as u64, Ordering::AcqRel);
            if !messages.is_empty() && !self.to.send(messages) {
                // The stage stopped; the messages were dropped with the
                // send, which left their entries pending.
                return;
            }
        }
    }

    /// Decodes `entries` (draining it) into messages; rejected entries are
    /// acknowledged as failed at once.
    fn messages(&self, entries: &mut Vec<StreamEntry>) -> Vec<Message<T>> {
        let shared = &*self.shared;
        let first = shared
            .acknowledger
            .register(entries.iter().map(|e| e.id.clone()));
        let to: Arc<dyn Acknowledger> = shared.acknowledger.clone();
        let mut messages = Vec::with_capacity(entries.len());
        let mut malformed = Vec::new();
        for (i, entry) in entries.drain(..).enumerate() {
            let token = first + i as u64;
            match (shared.decode)(&entry) {
                Ok(data) => messages.push(Message::new(data, AckRef::new(to.clone(), token))),
                Err(reason) => {
                    tracing::warn!(stream = %shared.options.stream, id = %entry.id, %reason, "redis: malformed entry");
                    malformed.push((token, Failure::Failed(format!("malformed entry: {reason}"))));
                }
            }
        }
        if !malformed.is_empty() {
            Counters::add(&shared.counters.malformed, malformed.len() as u64);
            to.ack(Vec::new(), malformed);
        }
        messages
    }

    async fn failed(&self, error: &RedisError, backoff: &mut Backoff) {
        Counters::add(&self.shared.counters.connection_errors, 1);
        let delay = backoff.next_delay();
        tracing::warn!(stream = %self.shared.options.stream, consumer = %self.name, %error,
            retry_in_ms = delay.as_millis() as u64, "redis: reading failed; reconnecting");
        let stop = self.demand.stop.load(Ordering::Acquire);
        if !stop {
            tokio::time::sleep(delay).await;
        }
    }
}

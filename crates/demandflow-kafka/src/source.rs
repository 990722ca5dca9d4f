//! The source: consumer-group members that fetch only what was asked and
//! commit only what is finished.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use demandflow_messages::connector::{Deliver, Feed, FeedStage};
use demandflow_messages::{AckRef, Acknowledger, BatchKey, Failure, Message};
use parking_lot::{Condvar, Mutex};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::metrics::{Counters, SourceMetrics};
use crate::track::{OnFailure, PartitionId, Tracks};

type Decode<T> = Arc<dyn Fn(KafkaRecord) -> Result<T, String> + Send + Sync>;

/// A record as fetched: where it came from and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's key, if it has one.
    pub key: Option<Vec<u8>>,
    /// The record's value, if it has one.
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
}

impl KafkaRecord {
    /// The payload as UTF-8 text, or why it is not.
    ///
    /// # Errors
    ///
    /// When there is no payload or it is not UTF-8.
    pub fn text(&self) -> Result<&str, String> {
        let bytes = self.payload.as_deref().ok_or("no payload")?;
        std::str::from_utf8(bytes).map_err(|e| format!("payload is not UTF-8: {e}"))
    }
}

/// What a failed message does to its partition's commit.
///
/// Whatever the policy, a message that failed because the topology stopped
/// with it unfinished ([`Failure::Shutdown`], [`Failure::Dropped`]) holds the
/// commit: it was never handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// The commit of the failed message's partition stops before it: the
    /// message, and everything after it, is delivered again to the
    /// partition's next owner (after a rebalance or a restart). The partition
    /// goes on being consumed meanwhile; only its commit waits.
    #[default]
    HoldCommit,
    /// The failure counts as handled (say
    /// [`handle_failed`](demandflow_messages::MessageHandler::handle_failed)
    /// wrote it to a dead-letter topic), and the commit moves past it.
    CommitPast,
}

/// Why [`KafkaSourceBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildSourceError {
    /// librdkafka rejected the configuration.
    #[error("invalid kafka configuration: {0}")]
    Config(#[source] KafkaError),
    /// No broker answered a metadata request in time.
    #[error("kafka at {brokers} is unreachable: {source}")]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// Why.
        #[source]
        source: KafkaError,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

/// Configures a [`KafkaSource`]. Made by [`KafkaSource::builder`].
///
/// | option | default |
/// |---|---|
/// | `consumer` | `"consumer-<pid>"` (the `client.id` prefix) |
/// | `decode` | none: the data is the [`KafkaRecord`] |
/// | `max_batch` | 1,000 (records held beyond the demand, and librdkafka's queue per partition) |
/// | `on_failure` | [`FailurePolicy::HoldCommit`] |
/// | `revoke_timeout` | 30 s |
/// | `connect_timeout` | 10 s (for `build`'s check that a broker answers) |
/// | `set` | `auto.offset.reset=earliest`; commits are the source's own |
pub struct KafkaSourceBuilder<T> {
    options: Options,
    decode: Decode<T>,
}

/// Everything a source is configured with but its decoder (which alone
/// depends on the data type), kept by the builder and then by the source.
#[derive(Clone)]
struct Options {
    brokers: String,
    topics: Vec<String>,
    group: String,
    consumer: String,
    max_batch: NonZeroUsize,
    policy: FailurePolicy,
    revoke_timeout: Duration,
    connect_timeout: Duration,
    /// librdkafka properties set with [`KafkaSourceBuilder::set`].
    settings: Vec<(String, String)>,
}

impl<T: Send + 'static> KafkaSourceBuilder<T> {
    /// The consumers' `client.id`; copy `i` is `"<name>-<i>"`.
    #[must_use]
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.options.consumer = name.into();
        self
    }

    /// Turns records into the messages' data. A record it rejects fails with
    /// `"malformed record: <reason>"` without reaching the processors, and
    /// is handled by the [`FailurePolicy`].
    #[must_use]
    pub fn decode<U, F>(self, decode: F) -> KafkaSourceBuilder<U>
    where
        F: Fn(KafkaRecord) -> Result<U, String> + Send + Sync + 'static,
    {
        KafkaSourceBuilder {
            options: self.options,
            decode: Arc::new(decode),
        }
    }

    /// How many records a copy may hold beyond the demand it was given
    /// before it stops taking records from librdkafka (also librdkafka's
    /// `queued.min.messages`, its queue per partition).
    #[must_use]
    pub fn max_batch(mut self, max_batch: NonZeroUsize) -> Self {
        self.options.max_batch = max_batch;
        self
    }

    /// What failed messages do to the commit.
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.options.policy = policy;
        self
    }

    /// How long a rebalance (or the close of a copy) waits for the in-flight
    /// messages of the partitions it gives up. What is still unfinished then
    /// is not committed, so the next owner delivers it again.
    #[must_use]
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.options.revoke_timeout = timeout;
        self
    }

    /// How long [`build`](Self::build) waits for a broker to answer.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Sets a librdkafka consumer property (`session.timeout.ms`,
    /// `security.protocol`, …). `enable.auto.commit`,
    /// `enable.auto.offset.store`, `group.id` and `client.id` are the
    /// source's own and are overridden.
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.settings.push((key.into(), value.into()));
        self
    }

    /// Checks the configuration and that a broker answers (within
    /// `connect_timeout`). The copies join the group when their stages start.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`BuildSourceError`] when librdkafka rejects the configuration, no
    /// broker answers, there are no topics, or the revoke timeout is zero.
    pub async fn build(self) -> Result<KafkaSource<T>, BuildSourceError> {
        let options = self.options;
        if options.topics.is_empty() {
            return Err(BuildSourceError::Invalid("at least one topic is needed"));
        }
        if options.revoke_timeout.is_zero() {
            return Err(BuildSourceError::Invalid("revoke_timeout must not be zero"));
        }
        let config = options.config(&format!("{}-probe", options.consumer));
        let probe: BaseConsumer = config.create().map_err(BuildSourceError::Config)?;
        let brokers = options.brokers.clone();
        let timeout = options.connect_timeout;
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, timeout).map(drop))
            .await
            .expect("the metadata probe does not panic")
            .map_err(|source| BuildSourceError::Unreachable { brokers, source })?;
        Ok(KafkaSource {
            shared: Arc::new(Shared {
                options,
                decode: self.decode,
                counters: Arc::default(),
            }),
        })
    }
}

impl Options {
    /// The consumer's librdkafka configuration.
    fn config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("auto.offset.reset", "earliest")
            .set("queued.min.messages", self.max_batch.to_string());
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        // Commits are made from acknowledgements only; the partition end is not
        // an event the source needs.
        config
            .set("group.id", &self.group)
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        config
    }
}

/// The settings stay out: they may hold credentials.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("max_batch", &self.max_batch)
            .field("policy", &self.policy)
            .field("revoke_timeout", &self.revoke_timeout)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for KafkaSourceBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSourceBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Shared<T> {
    options: Options,
    decode: Decode<T>,
    counters: Arc<Counters>,
}

/// Kafka topics read through a consumer group, as a source of messages for
/// a [`Topology`](demandflow_messages::Topology).
///
/// Build it once with [`KafkaSource::builder`], then give the topology its
/// copies: `.source(n, move |i| source.copy(i))`. Each copy is a member of
/// the group with a consumer of its own, polled on a thread of its own
/// (librdkafka's calls block, and a rebalance waits in them).
///
/// # What a copy does
///
/// - **Order.** Each message's batch key is `"<topic>/<partition>"`, and a
///   copy emits a partition's records in offset order; with
///   [`Processors::partition_by`](demandflow_messages::Processors::partition_by)
///   on the batch key, a partition's messages are handled in order.
/// - **Prefetch bounded by demand, by bounded queues (and a pause when
///   demand stalls).** A copy takes records out of librdkafka only while it
///   holds fewer than `max_batch` beyond the demand it was given. Once it
///   holds that many it stops taking, librdkafka's queue fills up to
///   `queued.min.messages = max_batch` records per partition, and
///   librdkafka stops fetching. So a copy holds at most demand + `max_batch`
///   records, plus librdkafka's `max_batch` per partition (and one fetch in
///   flight). If no demand comes for 0.5 s, the copy also pauses its
///   partitions (librdkafka then drops its queue) and keeps polling, so
///   that rebalances are served; it resumes them when demand comes. It does
///   not pause at once because librdkafka fetches a resumed partition up to
///   a second later: pausing at every full buffer cut the mock cluster's
///   throughput to about a fifth.
/// - **Commits of the contiguous acknowledged prefix.** A partition's
///   offset is committed up to, not past, its first message that is not
///   acknowledged as done, however many later messages finished first.
///   Commits are asynchronous, made by the copy's thread as
///   acknowledgements arrive.
/// - **Rebalances.** When partitions are revoked (another member joined or
///   left, or this copy closes), the copy stops emitting them, waits up to
///   `revoke_timeout` for their in-flight messages, commits their prefix
///   synchronously, and only then lets them go. Acknowledgements arriving
///   later change nothing: the next owner delivers those records again.
///
/// Delivery is at least once: duplicates are bounded by what a member had in
/// flight when it died (or by what outlived `revoke_timeout`).
pub struct KafkaSource<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        KafkaSource {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl KafkaSource<KafkaRecord> {
    /// Configures a source reading `topics` as a member of consumer group
    /// `group`, bootstrapping from `brokers` (`"host1:9092,host2:9092"`).
    pub fn builder<S: Into<String>>(
        brokers: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
        group: impl Into<String>,
    ) -> KafkaSourceBuilder<KafkaRecord> {
        KafkaSourceBuilder {
            options: Options {
                brokers: brokers.into(),
                topics: topics.into_iter().map(Into::into).collect(),
                group: group.into(),
                consumer: format!("consumer-{}", std::process::id()),
                max_batch: NonZeroUsize::new(1000).expect("not zero"),
                policy: FailurePolicy::HoldCommit,
                revoke_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                settings: Vec::new(),
            },
            decode: Arc::new(Ok),
        }
    }
}

impl<T: Send + 'static> KafkaSource<T> {
    /// Copy `index` of the source: a producer stage whose consumer is
    /// `"<consumer>-<index>"`.
    pub fn copy(&self, index: usize) -> KafkaStage<T> {
        FeedStage::new(KafkaFeed {
            shared: self.shared.clone(),
            name: format!("{}-{index}", self.shared.options.consumer),
            member: None,
        })
    }

    /// The source's counters, all copies together.
    pub fn metrics(&self) -> SourceMetrics {
        self.shared.counters.snapshot()
    }
}

/// What a copy's stage, its acknowledger, its rebalance callbacks and its
/// thread share.
struct Member {
    tracks: Mutex<Tracks>,
    /// Signalled when acknowledgements settle (a revocation waits on it).
    settled: Condvar,
    /// Demand given and not yet met.
    wanted: Mutex<u64>,
    /// Signalled when demand arrives or the copy stops.
    demand: Condvar,
    stop: AtomicBool,
    paused: AtomicBool,
    policy: OnFailure,
    revoke_timeout: Duration,
    counters: Arc<Counters>,
}

impl Acknowledger for Member {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        let settled = self.tracks.lock().settle(&successful, &failed, self.policy);
        self.settled.notify_all();
        let c = &self.counters;
        Counters::add(&c.acked, settled.ok);
        Counters::add(&c.failed, settled.failed);
        Counters::add(&c.held, settled.held);
        Counters::add(&c.stale, settled.stale);
    }
}

/// The consumer's callbacks; they run on the copy's thread, inside `poll`.
struct MemberContext(Arc<Member>);

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut tracks = self.0.tracks.lock();
                for id in ids(tpl) {
                    tracks.assign(id);
                }
            }
            Rebalance::Revoke(tpl) => self.revoke(consumer, &ids(tpl)),
            Rebalance::Error(e) => {
                Counters::add(&self.0.counters.client_errors, 1);
                tracing::warn!(error = %e, "kafka: rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // New partitions start fetching; a copy that has all it may hold
        // pauses them at once.
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        if self.0.paused.load(Ordering::Acquire) {
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "kafka: pausing new partitions failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            Counters::add(&self.0.counters.commit_errors, 1);
            tracing::warn!(error = %e, "kafka: commit failed");
        }
    }
}

impl MemberContext {
    /// Waits (bounded) for the in-flight messages of `revoked`, commits their
    /// prefix and stops tracking them.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &[PartitionId]) {
        let member = &*self.0;
        let deadline = Instant::now() + member.revoke_timeout;
        let mut tracks = member.tracks.lock();
        let mut timed_out = false;
        while tracks.unacked(revoked) > 0 {
            if member.settled.wait_until(&mut tracks, deadline).timed_out() {
                timed_out = tracks.unacked(revoked) > 0;
                break;
            }
        }
        if timed_out {
            Counters::add(&member.counters.revoke_timeouts, 1);
            tracing::warn!(
                unfinished = tracks.unacked(revoked),
                timeout_ms = member.revoke_timeout.as_millis() as u64,
                "kafka: revoked partitions still had messages in flight; their records will be delivered again"
            );
        }
        let owed = tracks.revoke(revoked);
        drop(tracks);
        Counters::add(&member.counters.revoked, revoked.len() as u64);
        if !owed.is_empty() {
            commit(consumer, &owed, CommitMode::Sync, &member.counters);
        }
    }
}

fn ids(tpl: &TopicPartitionList) -> Vec<PartitionId> {
    tpl.elements()
        .iter()
        .map(|e| PartitionId {
            topic: e.topic().into(),
            partition: e.partition(),
        })
        .collect()
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &[(PartitionId, i64)],
    mode: CommitMode,
    counters: &Counters,
) {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (id, offset) in offsets {
        if let Err(e) = tpl.add_partition_offset(&id.topic, id.partition, Offset::Offset(*offset)) {
            tracing::warn!(error = %e, "kafka: bad commit offset");
        }
    }
    Counters::add(&counters.commits, offsets.len() as u64);
    if let Err(e) = consumer.commit(&tpl, mode) {
        Counters::add(&counters.commit_errors, 1);
        tracing::warn!(error = %e, "kafka: commit failed");
    }
}

/// The key that keeps a partition's messages on one processor:
/// `Processors::new(n).partition_by(partition_of)`.
///
/// It hashes the message's batch key, which a [`KafkaSource`] sets to
/// `"<topic>/<partition>"`; a handler that changes the batch key changes it.
pub fn partition_of<T>(message: &Message<T>) -> u64 {
    demandflow_core::Key::key_hash(message.batch_key())
}

/// One copy of a [`KafkaSource`]: a producer of messages (see
/// [`KafkaSource::copy`]).
pub type KafkaStage<T> = FeedStage<KafkaFeed<T>>;

/// The reading side of one copy: a group member polled on a thread of its own.
pub struct KafkaFeed<T> {
    shared: Arc<Shared<T>>,
    name: String,
    member: Option<(Arc<Member>, JoinHandle<()>)>,
}

impl<T> fmt::Debug for KafkaFeed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaStage")
            .field("topics", &self.shared.options.topics)
            .field("consumer", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Feed for KafkaFeed<T> {
    type Data = T;

    fn start(&mut self, deliver: Deliver<T>) {
        let shared = &self.shared;
        let member = Arc::new(Member {
            tracks: Mutex::default(),
            settled: Condvar::new(),
            wanted: Mutex::new(0),
            demand: Condvar::new(),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            policy: match shared.options.policy {
                FailurePolicy::HoldCommit => OnFailure::Hold,
                FailurePolicy::CommitPast => OnFailure::CommitPast,
            },
            revoke_timeout: shared.options.revoke_timeout,
            counters: shared.counters.clone(),
        });
        let poller = Poller {
            shared: shared.clone(),
            member: member.clone(),
            name: self.name.clone(),
            to: deliver,
        };
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{}", self.name))
            .spawn(move || poller.run())
            .expect("spawning the consumer thread");
        self.member = Some((member, thread));
    }

    fn demand(&mut self, demand: u64) {
        if let Some((member, _)) = &self.member {
            *member.wanted.lock() += demand;
            member.demand.notify_all();
        }
    }

    /// Tells the thread to stop; it closes the consumer (leaving the group
    /// after the revocation's wait) on its own. Records fetched but not
    /// emitted are simply not committed: the partitions' next owner reads
    /// them again.
    fn stop(&mut self) {
        if let Some((member, _thread)) = self.member.take() {
            member.stop.store(true, Ordering::Release);
            let _guard = member.wanted.lock();
            member.demand.notify_all();
        }
    }
}

/// The thread of one copy: polls its consumer, holds what exceeds the
/// demand, pauses and resumes, and hands commits to the client.
struct Poller<T> {
    shared: Arc<Shared<T>>,
    member: Arc<Member>,
    name: String,
    to: Deliver<T>,
}

/// How long a full copy waits for demand before it pauses its partitions.
const STALL: Duration = Duration::from_millis(500);

/// A fetched record not yet emitted, with the assignment it belongs to.
struct Held {
    id: PartitionId,
    epoch: u64,
    record: KafkaRecord,
}

impl<T: Send + 'static> Poller<T> {
    fn run(self) {
        let shared = &*self.shared;
        let counters = &shared.counters;
        let config = shared.options.config(&self.name);
        let consumer: BaseConsumer<MemberContext> = match config
            .create_with_context(MemberContext(self.member.clone()))
        {
            Ok(c) => c,
            Err(e) => {
                // `build` created a consumer from the same settings, so
                // this is a resource failure, not a configuration one.
                Counters::add(&counters.client_errors, 1);
                tracing::error!(consumer = %self.name, error = %e, "kafka: creating the consumer failed");
                return;
            }
        };
        let topics: Vec<&str> = shared.options.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            Counters::add(&counters.client_errors, 1);
            tracing::error!(consumer = %self.name, error = %e, "kafka: subscribing failed");
            return;
        }
        let acknowledger: Arc<dyn Acknowledger> = self.member.clone();
        let mut held: VecDeque<Held> = VecDeque::new();
        let mut keys: HashMap<PartitionId, BatchKey> = HashMap::new();
        // How long the copy has been full with no demand.
        let mut stalled = Duration::ZERO;
        while !self.member.stop.load(Ordering::Acquire) {
            let commits = self.member.tracks.lock().take_commits();
            if !commits.is_empty() {
                commit(&consumer, &commits, CommitMode::Async, counters);
            }
            if !held.is_empty() && !self.emit(&mut held, &mut keys, &acknowledger) {
                break;
            }
            let mut timeout = if held.len() < shared.options.max_batch.get() {
                stalled = Duration::ZERO;
                self.pause(&consumer, false);
                if held.is_empty() {
                    Duration::from_millis(100)
                } else {
                    // Records are waiting for demand: look again soon.
                    Duration::from_millis(5)
                }
            } else {
                // Full: stop polling, so librdkafka's queue fills up to
                // `queued.min.messages` and it stops fetching; wait for
                // demand. A copy whose demand stalls pauses its partitions
                // and goes on polling without blocking, to serve rebalances.
                // (Not at once: librdkafka drops what it had queued for a
                // paused partition and fetches again, up to a second later,
                // on resume.)
                let mut wanted = self.member.wanted.lock();
                if *wanted == 0 && !self.member.stop.load(Ordering::Acquire) {
                    let waited = Instant::now();
                    self.member
                        .demand
                        .wait_for(&mut wanted, Duration::from_millis(100));
                    stalled += waited.elapsed();
                }
                if *wanted > 0 || stalled < STALL {
                    continue;
                }
                drop(wanted);
                self.pause(&consumer, true);
                Duration::ZERO
            };
            while let Some(result) = consumer.poll(timeout) {
                timeout = Duration::ZERO;
                match result {
                    Ok(m) => {
                        let id = PartitionId {
                            topic: m.topic().into(),
                            partition: m.partition(),
                        };
                        // Fetched records belong to the current assignment.
                        let Some(epoch) = self.member.tracks.lock().epoch(&id) else {
                            continue;
                        };
                        held.push_back(Held {
                            record: KafkaRecord {
                                topic: id.topic.clone(),
                                partition: id.partition,
                                offset: m.offset(),
                                key: m.key().map(<[u8]>::to_vec),
                                payload: m.payload().map(<[u8]>::to_vec),
                                timestamp: m.timestamp().to_millis(),
                            },
                            id,
                            epoch,
                        });
                        Counters::add(&counters.received, 1);
                    }
                    Err(e) => {
                        Counters::add(&counters.client_errors, 1);
                        tracing::warn!(consumer = %self.name, error = %e, "kafka: fetch error");
                    }
                }
                if held.len() >= shared.options.max_batch.get() + self.wanted() as usize {
                    break;
                }
            }
        }
        // Closing the consumer revokes its partitions: the revocation waits
        // for what is in flight and commits it, then the member leaves.
        drop(held);
        drop(consumer);
        Counters::add(&counters.closed, 1);
        tracing::debug!(consumer = %self.name, "kafka: consumer closed");
    }

    fn wanted(&self) -> u64 {
        *self.member.wanted.lock()
    }

    /// Pauses every assigned partition (`pause`) or resumes them.
    fn pause(&self, consumer: &BaseConsumer<MemberContext>, pause: bool) {
        if self.member.paused.load(Ordering::Acquire) == pause {
            return;
        }
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let result = if pause {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.member.paused.store(pause, Ordering::Release);
                if pause {
                    Counters::add(&self.shared.counters.pauses, 1);
                }
            }
            Err(e) => {
                tracing::warn!(consumer = %self.name, error = %e, "kafka: pause/resume failed")
            }
        }
    }

    /// Emits as many held records as there is demand for. `false` when the
    /// stage has stopped.
    fn emit(
        &self,
        held: &mut VecDeque<Held>,
        keys: &mut HashMap<PartitionId, BatchKey>,
        acknowledger: &Arc<dyn Acknowledger>,
    ) -> bool {
        let mut wanted = self.member.wanted.lock();
        let n = (*wanted as usize).min(held.len());
        if n == 0 {
            return true;
        }
        *wanted -= n as u64;
        drop(wanted);
        let shared = &*self.shared;
        let mut messages = Vec::with_capacity(n);
        let mut malformed = Vec::new();
        {
            let mut tracks = self.member.tracks.lock();
            for Held { id, epoch, record } in held.drain(..n) {
                // A record of a revoked assignment is dropped: it was never
                // emitted, and its partition's next owner reads it.
                let Some(token) = tracks.emit(&id, epoch, record.offset) else {
                    continue;
                };
                let key = keys
                    .entry(id)
                    .or_insert_with_key(|id| {
                        BatchKey::from(format!("{}/{}", id.topic, id.partition))
                    })
                    .clone();
                let offset = record.offset;
                match (shared.decode)(record) {
                    Ok(data) => messages.push(
                        Message::new(data, AckRef::new(acknowledger.clone(), token))
                            .with_batch_key(key),
                    ),
                    Err(reason) => {
                        tracing::warn!(partition = ?key, offset, %reason, "kafka: malformed record");
                        malformed.push((
                            token,
                            Failure::Failed(format!("malformed record: {reason}")),
                        ));
                    }
                }
            }
        }
        // Records dropped or rejected never reach the stage: the demand
        // they took is given back.
        let short = n - messages.len();
        if short > 0 {
            *self.member.wanted.lock() += short as u64;
        }
        if !malformed.is_empty() {
            Counters::add(&shared.counters.malformed, malformed.len() as u64);
            acknowledger.ack(Vec::new(), malformed);
        }
        messages.is_empty() || self.to.send(messages)
    }
}

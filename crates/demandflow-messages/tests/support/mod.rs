//! Shared fixtures for the messages layer's tests: a recording handler and
//! message factories.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::Arc;

use std::num::NonZeroU64;
use std::time::Duration;

use demandflow_messages::{
    AckRef, Acknowledger, BatchInfo, BatchKey, Batcher, DummySource, Failure, Message,
    MessageHandler, RateLimit, Status, Topology, TopologyBuilder,
};
use parking_lot::Mutex;
use tokio::time::Instant;

type Pred = Box<dyn Fn(u64) -> bool + Send + Sync>;

/// A handler whose behaviour per message is set by predicates on the data, and
/// which records what it saw.
#[derive(Default)]
pub struct Recorder {
    /// Fail the message in the processor.
    pub fail: Option<Pred>,
    /// Panic in the processor.
    pub panic: Option<Pred>,
    /// Ask for immediate acknowledgement.
    pub ack_now: Option<Pred>,
    /// Panic in the batch handler when the batch holds such a message.
    pub batch_panic: Option<Pred>,
    /// The batch handler fails such messages.
    pub batch_fail: Option<Pred>,
    /// The batch handler does not return such messages.
    pub batch_drop: Option<Pred>,
    /// `handle_failed` marks such messages successful again.
    pub rescue: Option<Pred>,
    /// The batch key of a message.
    pub key: Option<Box<dyn Fn(u64) -> u64 + Send + Sync>>,
    /// How long a batch handler takes (on the tokio clock).
    pub batch_delay: Option<std::time::Duration>,
    pub log: Log,
}

#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Record>>);

#[derive(Default)]
pub struct Record {
    /// Messages as a processor handled them, with when.
    pub handled: Vec<(u64, Instant)>,
    /// Batches as batch handlers got them: info, data, when.
    pub batches: Vec<(BatchInfo, Vec<u64>, Instant)>,
    /// Messages `handle_failed` saw.
    pub failed_seen: Vec<u64>,
}

fn check(p: &Option<Pred>, n: u64) -> bool {
    p.as_ref().is_some_and(|p| p(n))
}

impl MessageHandler<u64> for Recorder {
    async fn handle_message(&self, message: &mut Message<u64>) {
        let n = message.data;
        self.log.0.lock().handled.push((n, Instant::now()));
        if let Some(key) = &self.key {
            message.put_batch_key(key(n));
        }
        if check(&self.ack_now, n) {
            message.ack_immediately();
        }
        if check(&self.panic, n) {
            panic!("boom {n}");
        }
        if check(&self.fail, n) {
            message.fail(format!("no {n}"));
        }
    }

    async fn handle_batch(
        &self,
        messages: Vec<Message<u64>>,
        info: &BatchInfo,
    ) -> Vec<Message<u64>> {
        let data: Vec<u64> = messages.iter().map(|m| m.data).collect();
        self.log
            .0
            .lock()
            .batches
            .push((info.clone(), data.clone(), Instant::now()));
        if let Some(delay) = self.batch_delay {
            tokio::time::sleep(delay).await;
        }
        if data.iter().any(|&n| check(&self.batch_panic, n)) {
            panic!("batch boom");
        }
        messages
            .into_iter()
            .filter(|m| !check(&self.batch_drop, m.data))
            .map(|mut m| {
                if check(&self.batch_fail, m.data) {
                    m.fail("batch said no");
                }
                m
            })
            .collect()
    }

    fn handle_failed(&self, messages: &mut [Message<u64>]) {
        let mut log = self.log.0.lock();
        for m in messages {
            log.failed_seen.push(m.data);
            if check(&self.rescue, m.data) {
                m.set_status(Status::Ok);
            }
        }
    }
}

/// Counts acknowledgements per token, to check exactly-once.
#[derive(Default)]
pub struct Tally {
    pub inner: Mutex<TallyInner>,
}

#[derive(Default)]
pub struct TallyInner {
    pub ok: HashMap<u64, u32>,
    pub failed: HashMap<u64, (u32, Failure)>,
    pub calls: usize,
}

impl Acknowledger for Tally {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        assert!(
            !successful.is_empty() || !failed.is_empty(),
            "empty ack call"
        );
        let mut t = self.inner.lock();
        t.calls += 1;
        for s in successful {
            *t.ok.entry(s).or_default() += 1;
        }
        for (s, f) in failed {
            t.failed.entry(s).or_insert((0, f)).0 += 1;
        }
    }
}

impl Tally {
    /// Asserts tokens `0..n` were each acknowledged exactly once, never both ways.
    pub fn assert_exactly_once(&self, n: u64) {
        let t = self.inner.lock();
        for token in 0..n {
            let ok = t.ok.get(&token).copied().unwrap_or(0);
            let failed = t.failed.get(&token).map_or(0, |f| f.0);
            assert_eq!(ok + failed, 1, "token {token}: {ok} ok, {failed} failed");
        }
        assert!(t.ok.keys().chain(t.failed.keys()).all(|&k| k < n));
    }

    pub fn total(&self) -> usize {
        let t = self.inner.lock();
        t.ok.values().sum::<u32>() as usize + t.failed.values().map(|f| f.0).sum::<u32>() as usize
    }
}

/// Messages `0..n` whose token is their data, acknowledged to `to`.
pub fn messages(n: u64, to: &Arc<Tally>) -> Vec<Message<u64>> {
    (0..n)
        .map(|i| Message::new(i, AckRef::new(to.clone(), i)))
        .collect()
}

pub fn key_of(info: &BatchInfo) -> u64 {
    match info.batch_key {
        BatchKey::Int(k) => k,
        _ => u64::MAX,
    }
}

/// Messages `0..n` (as [`messages`]) split by parity, for a source of two
/// copies where copy `i` takes `halves[i]`.
pub fn halves(n: u64, to: &Arc<Tally>) -> Mutex<Vec<Vec<Message<u64>>>> {
    let mut halves = vec![Vec::new(), Vec::new()];
    for m in messages(n, to) {
        halves[(m.data % 2) as usize].push(m);
    }
    Mutex::new(halves)
}

/// The instants at which the processors handled messages, in log order.
pub fn handled_times(log: &Log) -> Vec<Instant> {
    log.0.lock().handled.iter().map(|h| h.1).collect()
}

/// The `default` batcher with `size` and `timeout`.
pub fn batcher(size: usize, timeout: Duration) -> Batcher<u64> {
    Batcher::new("default")
        .batch_size(size)
        .batch_timeout(timeout)
}

/// At most `limit` messages per `interval`.
pub fn rate(limit: u64, interval: Duration) -> RateLimit {
    RateLimit::new(NonZeroU64::new(limit).unwrap(), interval)
}

/// A topology `t` running `handler` over one [`DummySource`].
pub fn dummy<H: MessageHandler<u64>>(handler: H) -> TopologyBuilder<u64, H> {
    Topology::builder("t", handler).source(1, |_| DummySource::new())
}

/// Starts `builder`, which must start.
pub async fn started<H: MessageHandler<u64>>(builder: TopologyBuilder<u64, H>) -> Topology<u64> {
    builder.start().await.unwrap()
}

/// A started [`dummy`] topology with the one `batcher`.
pub async fn with_batcher<H: MessageHandler<u64>>(
    handler: H,
    batcher: Batcher<u64>,
) -> Topology<u64> {
    started(dummy(handler).batcher(batcher)).await
}

//! The process-wide registry of live stages, for dashboards, metrics and
//! debugging: every running stage (and every supervisor and keyed scheduler,
//! which register themselves) is listed while it is alive, with its kind, its
//! name, its subscriptions and its counters.
//!
//! # What reading costs the stages
//!
//! Nothing on the data path. The event counters are the ones a stage keeps
//! anyway, held in atomics that only the stage writes (a plain store) and that
//! [`snapshot`] reads without a lock. What changes only inside a stage's task —
//! its subscriptions and the demand outstanding on each, its buffer — is
//! *published* by the stage when [`refresh`] asks for it: one control message
//! per stage per refresh, handled between batches. So [`snapshot`] shows live
//! counters and the subscriptions, demand and buffer as of the last refresh; a
//! dashboard calls [`refresh`] then [`snapshot`] about once a second. A stage
//! stuck in a callback cannot answer a refresh: its entry keeps its last
//! published figures while its counters (read directly) show it is not moving.
//!
//! An entry disappears when its stage ends.
//!
//! ```
//! use demandflow_runtime::registry::{self, EntryKind};
//! use demandflow_runtime::{for_each, from_iter, producer, SubscribeOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let source = producer(from_iter(0..100_u64)).name("doc-source").start().unwrap();
//! let sink = for_each(|_: u64| {}).name("doc-sink").start().unwrap();
//! sink.subscribe_to(&source, SubscribeOptions::new()).await.unwrap();
//! sink.wait().await; // the finite source ends, then the sink
//!
//! // Both stages ended, so neither is listed any more.
//! registry::refresh().await;
//! assert!(registry::snapshot().iter().all(|e| !e.name.starts_with("doc-")));
//!
//! let live = producer(from_iter(0..10_u64)).name("doc-live").start().unwrap();
//! registry::refresh().await;
//! let entry = registry::find("doc-live").unwrap();
//! assert_eq!(entry.kind, EntryKind::Producer);
//! assert_eq!(entry.id, live.id());
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use demandflow_core::{CancelMode, StageId, SubscriptionId};
use tokio::sync::oneshot;

use crate::port::{Control, ControlPort};
use crate::{Peer, StageKind};

#[cfg(feature = "metrics")]
pub mod metrics;

/// How long [`refresh`] waits for the stages to publish.
const REFRESH_WAIT: Duration = Duration::from_millis(250);

/// What a registry entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A producer stage.
    Producer,
    /// A producer-consumer stage.
    ProducerConsumer,
    /// A consumer stage (a consumer supervisor is one too).
    Consumer,
    /// A supervisor of restartable stages; see [`Entry::children`].
    Supervisor,
    /// A partition supervisor's worker pool; see [`Entry::partitions`].
    PartitionSupervisor,
    /// A keyed scheduler; see [`Entry::partitions`].
    Keyed,
}

impl EntryKind {
    /// A short lowercase name: `producer`, `producer_consumer`, `consumer`,
    /// `supervisor`, `partition_supervisor` or `keyed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Producer => "producer",
            EntryKind::ProducerConsumer => "producer_consumer",
            EntryKind::Consumer => "consumer",
            EntryKind::Supervisor => "supervisor",
            EntryKind::PartitionSupervisor => "partition_supervisor",
            EntryKind::Keyed => "keyed",
        }
    }
}

impl From<StageKind> for EntryKind {
    fn from(kind: StageKind) -> Self {
        match kind {
            StageKind::Producer => EntryKind::Producer,
            StageKind::ProducerConsumer => EntryKind::ProducerConsumer,
            StageKind::Consumer => EntryKind::Consumer,
        }
    }
}

/// One live stage, supervisor or scheduler, as [`snapshot`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// Its id (supervisors and schedulers take one from the same sequence as stages).
    pub id: StageId,
    /// What it is.
    pub kind: EntryKind,
    /// Its name (for a stage: the name given to its builder, else its kind and id).
    pub name: String,
    /// Events received (for a keyed scheduler: events sent to it).
    pub events_in: u64,
    /// Events delivered to consumers (for a keyed scheduler: events handled).
    pub events_out: u64,
    /// Events dropped: by a full buffer, or delivered to a consumer that had
    /// stopped (for a keyed scheduler: events in batches whose handler panicked).
    pub events_dropped: u64,
    /// Events held in the buffer and the dispatcher, as last published.
    pub buffered: usize,
    /// The buffer's bound; `None` when unbounded or when there is no buffer (a consumer).
    pub buffer_limit: Option<usize>,
    /// Events received but not yet handled (a producer-consumer waiting for
    /// demand), as last published.
    pub queued_in: usize,
    /// Live subscriptions on both sides, as last published, by subscription id.
    pub subscriptions: Vec<SubscriptionEntry>,
    /// Restarts made, for supervisors (over all children).
    pub restarts: Option<u64>,
    /// A supervisor's children.
    pub children: Vec<ChildEntry>,
    /// A keyed scheduler's or partition supervisor's partitions, in order.
    pub partitions: Vec<PartitionEntry>,
}

impl Entry {
    /// An entry with zero counters and no subscriptions, children or
    /// partitions, for crates that register something of their own with [`register`].
    pub fn new(id: StageId, kind: EntryKind, name: impl Into<String>) -> Self {
        Entry {
            id,
            kind,
            name: name.into(),
            events_in: 0,
            events_out: 0,
            events_dropped: 0,
            buffered: 0,
            buffer_limit: None,
            queued_in: 0,
            subscriptions: Vec::new(),
            restarts: None,
            children: Vec::new(),
            partitions: Vec::new(),
        }
    }
}

/// One subscription of an [`Entry`], seen from that entry's stage.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionEntry {
    /// The subscription.
    pub sub: SubscriptionId,
    /// Which side the other stage is on.
    pub peer: Peer,
    /// The other stage.
    pub peer_id: StageId,
    /// The other stage's name, when it is still registered.
    pub peer_name: Option<String>,
    /// Demand asked and not yet met: for a subscription to a producer, as this
    /// consumer counts it (automatic demand only); for a consumer's
    /// subscription, as the dispatcher counts it (when it tracks it).
    pub pending_demand: Option<u64>,
    /// The cancel mode, known on the consumer's side only.
    pub cancel: Option<CancelMode>,
}

/// One child of a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildEntry {
    /// The child's name in the supervisor.
    pub name: String,
    /// How many times this child was restarted.
    pub restarts: u64,
}

impl ChildEntry {
    /// A child entry.
    pub fn new(name: impl Into<String>, restarts: u64) -> Self {
        ChildEntry {
            name: name.into(),
            restarts,
        }
    }
}

/// The load of one partition of a keyed scheduler or partition supervisor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionEntry {
    /// Events queued and not yet taken by a worker.
    pub backlog: usize,
    /// Keys whose batch a worker holds right now (for a partition supervisor:
    /// 1 while its worker handles a message).
    pub busy_keys: usize,
}

impl PartitionEntry {
    /// A partition entry.
    pub fn new(backlog: usize, busy_keys: usize) -> Self {
        PartitionEntry { backlog, busy_keys }
    }
}

/// Something that can list itself in the registry: implemented by the
/// supervisor and keyed crates for their own entries; stages register by themselves.
pub trait Observed: Send + Sync + 'static {
    /// The current entry, for [`snapshot`] (called outside the registry's
    /// lock; it should be quick: a dashboard calls it about once a second).
    fn entry(&self) -> Entry;

    /// Asks for fresh figures before the next [`snapshot`]; the receiver
    /// completes once they are published. `None` (the default) when
    /// [`entry`](Self::entry) is always current.
    fn refresh(&self) -> Option<oneshot::Receiver<()>> {
        None
    }
}

/// Keeps an entry listed; dropping it removes the entry.
#[must_use = "the entry is removed when the registration is dropped"]
#[derive(Debug)]
pub struct Registration {
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock().remove(&self.key);
    }
}

/// Registered entries by a key of their own (several registrations may share a
/// stage id, e.g. a stage restarted under the same name keeps its new id).
static ENTRIES: Mutex<BTreeMap<u64, Weak<dyn Observed>>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u64, Weak<dyn Observed>>> {
    // A panic inside `entry` poisons nothing we rely on: the map stays consistent.
    ENTRIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lists `observed` until the returned [`Registration`] is dropped (or
/// `observed` itself is, since the registry holds it weakly).
pub fn register(observed: &Arc<dyn Observed>) -> Registration {
    let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    lock().insert(key, Arc::downgrade(observed));
    Registration { key }
}

fn live() -> Vec<Arc<dyn Observed>> {
    let mut map = lock();
    let mut live = Vec::with_capacity(map.len());
    // An entry whose owner was dropped without its registration goes here.
    map.retain(|_, weak| match weak.upgrade() {
        Some(observed) => {
            live.push(observed);
            true
        }
        None => false,
    });
    live
}

/// Every live entry, by id, with peers' names filled in.
pub fn snapshot() -> Vec<Entry> {
    let mut entries: Vec<Entry> = live().iter().map(|o| o.entry()).collect();
    entries.sort_by_key(|e| e.id);
    let names: BTreeMap<StageId, String> = entries.iter().map(|e| (e.id, e.name.clone())).collect();
    for entry in &mut entries {
        for sub in &mut entry.subscriptions {
            sub.peer_name = names.get(&sub.peer_id).cloned();
        }
    }
    entries
}

/// The first live entry named `name`, from a fresh [`snapshot`].
pub fn find(name: &str) -> Option<Entry> {
    snapshot().into_iter().find(|e| e.name == name)
}

/// Asks every live stage to publish its subscriptions, demand and buffer, and
/// waits until they have (a stage busy in a callback for longer than 250 ms
/// keeps its previous figures).
pub async fn refresh() {
    let waits: Vec<oneshot::Receiver<()>> = live().iter().filter_map(|o| o.refresh()).collect();
    let all = async {
        for wait in waits {
            let _ = wait.await;
        }
    };
    let _ = tokio::time::timeout(REFRESH_WAIT, all).await;
}

/// A counter only its stage writes: adding is a load and a store, with no
/// read-modify-write instruction, so it costs what a plain `u64` does.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a stage publishes when asked (see [`refresh`]).
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub(crate) buffered: usize,
    pub(crate) queued_in: usize,
    pub(crate) subscriptions: Vec<SubscriptionEntry>,
}

/// A stage's part of the registry: its counters, which its engine updates,
/// and what it published last.
pub(crate) struct Probe {
    pub(crate) id: StageId,
    pub(crate) name: Arc<str>,
    pub(crate) kind: StageKind,
    pub(crate) buffer_limit: Option<usize>,
    pub(crate) events_in: Counter,
    pub(crate) events_out: Counter,
    pub(crate) events_dropped: Counter,
    pub(crate) published: Mutex<Published>,
    pub(crate) control: Weak<dyn ControlPort>,
}

impl Probe {
    pub(crate) fn publish(&self, published: Published) {
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = published;
    }
}

impl Observed for Probe {
    fn entry(&self) -> Entry {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let mut entry = Entry::new(self.id, self.kind.into(), &*self.name);
        entry.events_in = self.events_in.get();
        entry.events_out = self.events_out.get();
        entry.events_dropped = self.events_dropped.get();
        entry.buffer_limit = self.buffer_limit;
        entry.buffered = published.buffered;
        entry.queued_in = published.queued_in;
        entry.subscriptions = published.subscriptions.clone();
        entry
    }

    fn refresh(&self) -> Option<oneshot::Receiver<()>> {
        let control = self.control.upgrade()?;
        let (tx, rx) = oneshot::channel();
        control.control(Control::Publish(tx)).ok()?;
        Some(rx)
    }
}

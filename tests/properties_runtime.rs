//! Properties of SEMANTICS.md §8 over random schedules, through the public API.
//!
//! Every case builds a small random pipeline on a fresh tokio runtime (one
//! thread with the paused clock, or two worker threads): 1–3 producers, some
//! emitting exactly what they are asked, some less (remembering the rest), some
//! more, some only from info messages, some behind a partition dispatcher; 0–2
//! producer-consumers (doubling, filtering, emitting two per event); 1–4
//! consumers with automatic or manual demand. It then runs a random program:
//! subscribes (waiting for the answer or not, with random max/min demand and
//! cancel mode), cancels from either side (sometimes twice), resubscribes, asks
//! through the handle or from a callback (0 and `u64::MAX` included), emits from
//! info messages, switches demand between accumulate and forward, stops stages
//! with a reason and panics in callbacks, interleaved with yields and
//! paused-clock advances.
//!
//! Every stage records its callbacks. Once the pipeline is quiescent (two
//! identical rounds of `stats()` round trips through every stage) the records
//! and stats are checked:
//!
//! - on every subscription, never more events than asked (manual asks as made,
//!   automatic ones replayed with the arithmetic of §2), no empty batch, no chunk
//!   over `max - min`, events in emission order, nothing before it began or after
//!   it ended, one cancel callback at most; through a partition dispatcher, every
//!   event in its partition and each key in order across successive consumers;
//! - no event delivered twice or never emitted; for every running producing
//!   stage, emitted = delivered + buffered + dropped (+ discarded by a partition
//!   dispatcher), every drop reported, buffers within their bounds, and what it
//!   delivered handled or queued downstream;
//! - no event waits in a buffer while one of the stage's consumers has demand;
//! - both ends of a subscription agree on whether it is live;
//! - every stopped stage stopped for a reason the program explains (a stop, an
//!   injected panic, a cancel mode of §6), and every cancel mode that stops a
//!   consumer did.
//!
//! Then every handle is dropped: every stage must stop and no task may be left on
//! the runtime. A focused property checks that a panic stops its stage and only
//! the stages that depend on it under §6, while an unrelated pipeline keeps
//! working. The minimal reproductions of the bugs these properties found close
//! the file.
//!
//! Events are `(emitting stage, sequence number)`: each producing stage numbers
//! what it emits 0, 1, 2, …, so order and duplication are checked by value.
//!
//! `PROPTEST_CASES` overrides the number of cases of every property.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use demandflow::{
    AsProducer, BufferKeep, CancelMode, CancelReason, Consumer, ConsumerContext, ConsumerRef,
    Context, DEFAULT_BUFFER_SIZE, DEFAULT_PARTITION_QUEUE_CAPACITY, DemandFlow, DemandMode, Info,
    NotRunning, PartitionDispatcher, Peer, Producer, ProducerConsumer, ProducerConsumerRef,
    ProducerRef, Reason, StageMonitor, StageStats, SubscribeError, SubscribeOptions,
    SubscriptionId, consumer, producer, producer_consumer,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ----- fixtures ---------------------------------------------------------------

/// An event: the index of the stage that emitted it and its place in that
/// stage's emission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ev {
    src: usize,
    seq: u64,
}

/// The most events a producer emits from one callback.
const CAP: u64 = 64;

/// The message of every panic the tests inject.
const PANIC: &str = "injected panic";

/// Info messages the fixture stages understand.
#[derive(Debug)]
enum Cmd {
    /// Emit this many events now, whatever the demand.
    Emit(u64),
    /// Emit what is owed (producers only).
    EmitOwed,
    /// Ask on an upstream subscription from inside the stage (`Context::ask`).
    Ask(SubscriptionId, u64),
    /// Panic in `handle_info`.
    Panic,
}

/// A callback that panics the next time it runs once armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trap {
    /// `handle_demand` or `handle_events`.
    Work,
    /// `handle_subscribe`, on either side.
    Subscribe,
    /// `handle_cancel`, on either side.
    Cancel,
    /// `terminate` (the panic is caught and the exit reason stays).
    Terminate,
}

/// One callback, as a stage recorded it.
#[derive(Clone, Debug)]
enum Entry {
    /// This stage subscribed to a producer (consumer side).
    Subscribed(SubscriptionId),
    /// A batch (automatic demand: a chunk) arrived.
    Events(SubscriptionId, Vec<Ev>),
    /// Demand was asked on an upstream subscription: by the test through the
    /// handle (recorded before the call) or by the stage from a callback.
    Asked {
        sub: SubscriptionId,
        demand: u64,
        by_handle: bool,
    },
    /// An upstream subscription ended.
    Cancelled(SubscriptionId, CancelReason),
    /// A consumer subscribed to this stage (producer side).
    Accepted(SubscriptionId),
    /// A downstream subscription ended.
    Released(SubscriptionId),
    /// `handle_demand` ran.
    Demand(u64),
    /// `handle_dropped` ran.
    Dropped(usize),
    /// An injected panic is about to happen.
    Panicking,
    /// `terminate` ran.
    Terminated(Reason),
}

/// What a stage shares with the test: its record, its emission count and its trap.
#[derive(Default)]
struct Probe {
    log: Mutex<Vec<Entry>>,
    emitted: AtomicU64,
    armed: Mutex<Option<Trap>>,
}

impl Probe {
    fn push(&self, entry: Entry) {
        self.log.lock().push(entry);
    }

    fn arm(&self, trap: Trap) {
        *self.armed.lock() = Some(trap);
    }

    fn sprung(&self, trap: Trap) -> bool {
        let mut armed = self.armed.lock();
        let hit = *armed == Some(trap);
        if hit {
            *armed = None;
        }
        hit
    }

    fn trip(&self, trap: Trap) {
        if self.sprung(trap) {
            self.panic();
        }
    }

    fn panic(&self) -> ! {
        self.push(Entry::Panicking);
        panic!("{PANIC}");
    }

    /// Emits the next `n` events of stage `src`.
    fn emit(&self, src: usize, next: &mut u64, n: u64, ctx: &mut Context<Ev>) {
        ctx.emit_all((*next..*next + n).map(|seq| Ev { src, seq }));
        *next += n;
        self.emitted.fetch_add(n, Ordering::SeqCst);
    }
}

/// How a producer answers demand.
#[derive(Clone, Copy, Debug)]
enum SourceKind {
    /// Exactly what is owed.
    Exact,
    /// Half of what is owed; the rest waits for `Cmd::EmitOwed`.
    Lazy,
    /// What is owed and this many more.
    Eager(u64),
    /// Nothing; only `Cmd::EmitOwed` and `Cmd::Emit` emit.
    Silent,
}

/// A counter-like producer with a budget of demand-driven events, so every
/// pipeline goes quiet eventually.
struct Source {
    me: usize,
    kind: SourceKind,
    budget: u64,
    next: u64,
    owed: u64,
    probe: Arc<Probe>,
}

impl Source {
    fn emit_owed(&mut self, n: u64, ctx: &mut Context<Ev>) {
        let n = n.min(CAP).min(self.budget);
        self.owed -= n.min(self.owed);
        self.budget -= n;
        self.probe.emit(self.me, &mut self.next, n, ctx);
    }
}

impl Producer for Source {
    type Event = Ev;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<Ev>) {
        self.probe.push(Entry::Demand(demand));
        self.probe.trip(Trap::Work);
        self.owed = self.owed.saturating_add(demand);
        let n = match self.kind {
            SourceKind::Exact => self.owed,
            SourceKind::Lazy => self.owed / 2,
            SourceKind::Eager(extra) => self.owed.saturating_add(extra),
            SourceKind::Silent => 0,
        };
        self.emit_owed(n, ctx);
    }

    async fn handle_subscribe(&mut self, sub: SubscriptionId, _: &mut Context<Ev>) {
        self.probe.push(Entry::Accepted(sub));
        self.probe.trip(Trap::Subscribe);
    }

    async fn handle_cancel(&mut self, sub: SubscriptionId, _: &CancelReason, _: &mut Context<Ev>) {
        self.probe.push(Entry::Released(sub));
        self.probe.trip(Trap::Cancel);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Ev>) {
        match info.downcast::<Cmd>() {
            Ok(Cmd::Emit(n)) => self.probe.emit(self.me, &mut self.next, n, ctx),
            Ok(Cmd::EmitOwed) => self.emit_owed(self.owed, ctx),
            Ok(Cmd::Panic) => self.probe.panic(),
            Ok(Cmd::Ask(..)) | Err(_) => {}
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.probe.push(Entry::Dropped(dropped));
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.probe.push(Entry::Terminated(reason.clone()));
        if self.probe.sprung(Trap::Terminate) {
            panic!("{PANIC}");
        }
    }
}

/// What a producer-consumer makes of each batch.
#[derive(Clone, Copy, Debug)]
enum RelayKind {
    /// One event out per event in.
    Double,
    /// Drops the events whose sequence number is a multiple of 3.
    Filter,
    /// Two events out per event in.
    FlatMap,
}

/// A producer-consumer with automatic demand upstream; it numbers its own output.
struct Relay {
    me: usize,
    kind: RelayKind,
    next: u64,
    probe: Arc<Probe>,
}

impl ProducerConsumer for Relay {
    type In = Ev;
    type Out = Ev;

    async fn handle_events(
        &mut self,
        events: Vec<Ev>,
        from: SubscriptionId,
        ctx: &mut Context<Ev>,
    ) {
        let n = match self.kind {
            RelayKind::Double => events.len() as u64,
            RelayKind::Filter => events.iter().filter(|e| e.seq % 3 != 0).count() as u64,
            RelayKind::FlatMap => 2 * events.len() as u64,
        };
        self.probe.push(Entry::Events(from, events));
        self.probe.trip(Trap::Work);
        self.probe.emit(self.me, &mut self.next, n, ctx);
    }

    async fn handle_subscribe(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        _: &mut Context<Ev>,
    ) -> DemandMode {
        self.probe.push(match peer {
            Peer::Producer => Entry::Subscribed(sub),
            Peer::Consumer => Entry::Accepted(sub),
        });
        self.probe.trip(Trap::Subscribe);
        DemandMode::Automatic
    }

    async fn handle_cancel(
        &mut self,
        peer: Peer,
        sub: SubscriptionId,
        reason: &CancelReason,
        _: &mut Context<Ev>,
    ) {
        self.probe.push(match peer {
            Peer::Producer => Entry::Cancelled(sub, reason.clone()),
            Peer::Consumer => Entry::Released(sub),
        });
        self.probe.trip(Trap::Cancel);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Ev>) {
        match info.downcast::<Cmd>() {
            Ok(Cmd::Emit(n)) => self.probe.emit(self.me, &mut self.next, n, ctx),
            Ok(Cmd::Ask(sub, demand)) => {
                self.probe.push(Entry::Asked {
                    sub,
                    demand,
                    by_handle: false,
                });
                ctx.ask(sub, demand);
            }
            Ok(Cmd::Panic) => self.probe.panic(),
            Ok(Cmd::EmitOwed) | Err(_) => {}
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.probe.push(Entry::Dropped(dropped));
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.probe.push(Entry::Terminated(reason.clone()));
        if self.probe.sprung(Trap::Terminate) {
            panic!("{PANIC}");
        }
    }
}

/// A consumer that records everything, with automatic or manual demand.
struct Sink {
    manual: bool,
    probe: Arc<Probe>,
}

impl Consumer for Sink {
    type Event = Ev;

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        _: &mut ConsumerContext,
    ) -> DemandMode {
        self.probe.push(Entry::Subscribed(sub));
        self.probe.trip(Trap::Subscribe);
        if self.manual {
            DemandMode::Manual
        } else {
            DemandMode::Automatic
        }
    }

    async fn handle_events(
        &mut self,
        events: Vec<Ev>,
        from: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        self.probe.push(Entry::Events(from, events));
        self.probe.trip(Trap::Work);
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        _: &mut ConsumerContext,
    ) {
        self.probe.push(Entry::Cancelled(sub, reason.clone()));
        self.probe.trip(Trap::Cancel);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut ConsumerContext) {
        match info.downcast::<Cmd>() {
            Ok(Cmd::Ask(sub, demand)) => {
                self.probe.push(Entry::Asked {
                    sub,
                    demand,
                    by_handle: false,
                });
                ctx.ask(sub, demand);
            }
            Ok(Cmd::Panic) => self.probe.panic(),
            Ok(_) | Err(_) => {}
        }
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.probe.push(Entry::Terminated(reason.clone()));
        if self.probe.sprung(Trap::Terminate) {
            panic!("{PANIC}");
        }
    }
}

/// Keeps the injected panics out of the test output; other panics print as usual.
fn quiet_injected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if message != Some(PANIC) {
                default(info);
            }
        }));
    });
}

// ----- handles ----------------------------------------------------------------

/// A handle to any of the three fixture stages.
enum Handle {
    Source(ProducerRef<Ev>),
    Relay(ProducerConsumerRef<Ev, Ev>),
    Sink(ConsumerRef<Ev>),
}

/// Runs the same expression on whichever handle it is.
macro_rules! each {
    ($handle:expr, $h:ident => $body:expr) => {
        match $handle {
            Handle::Source($h) => $body,
            Handle::Relay($h) => $body,
            Handle::Sink($h) => $body,
        }
    };
}

impl Handle {
    fn producer(&self) -> Option<ProducerRef<Ev>> {
        match self {
            Handle::Source(h) => Some(h.as_producer()),
            Handle::Relay(h) => Some(h.as_producer()),
            Handle::Sink(_) => None,
        }
    }

    async fn stats(&self) -> Result<StageStats, NotRunning> {
        each!(self, h => h.stats().await)
    }

    fn send(&self, cmd: Cmd) -> Result<(), NotRunning> {
        each!(self, h => h.send_info(cmd))
    }

    async fn stop(&self, reason: Reason) -> Result<(), NotRunning> {
        each!(self, h => h.stop(reason).await)
    }

    fn monitor(&self) -> StageMonitor {
        each!(self, h => h.monitor())
    }

    async fn subscribe(
        &self,
        to: &ProducerRef<Ev>,
        options: SubscribeOptions<Ev>,
        wait: bool,
    ) -> Result<SubscriptionId, SubscribeError> {
        match (self, wait) {
            (Handle::Relay(h), true) => h.subscribe_to(to, options).await,
            (Handle::Relay(h), false) => h.subscribe_to_nowait(to, options),
            (Handle::Sink(h), true) => h.subscribe_to(to, options).await,
            (Handle::Sink(h), false) => h.subscribe_to_nowait(to, options),
            (Handle::Source(_), _) => unreachable!("a producer does not subscribe"),
        }
    }

    async fn resubscribe(
        &self,
        old: SubscriptionId,
        reason: Reason,
        to: &ProducerRef<Ev>,
        options: SubscribeOptions<Ev>,
    ) -> Result<SubscriptionId, SubscribeError> {
        match self {
            Handle::Relay(h) => h.resubscribe(old, reason, to, options).await,
            Handle::Sink(h) => h.resubscribe(old, reason, to, options).await,
            Handle::Source(_) => unreachable!("a producer does not subscribe"),
        }
    }

    fn set_demand_flow(&self, flow: DemandFlow) -> Result<(), NotRunning> {
        match self {
            Handle::Source(h) => h.set_demand_flow(flow),
            Handle::Relay(h) => h.set_demand_flow(flow),
            Handle::Sink(_) => Ok(()),
        }
    }

    fn cancel(&self, sub: SubscriptionId, reason: Reason) -> Result<(), NotRunning> {
        match self {
            Handle::Relay(h) => h.cancel(sub, reason),
            Handle::Sink(h) => h.cancel(sub, reason),
            Handle::Source(_) => unreachable!("a producer handle cannot cancel"),
        }
    }

    fn ask(&self, sub: SubscriptionId, demand: u64) -> Result<(), NotRunning> {
        match self {
            Handle::Relay(h) => h.ask(sub, demand),
            Handle::Sink(h) => h.ask(sub, demand),
            Handle::Source(_) => unreachable!("a producer handle cannot ask"),
        }
    }
}

// ----- programs ---------------------------------------------------------------

#[derive(Clone, Debug)]
struct SourceSpec {
    kind: SourceKind,
    budget: u64,
    buffer: Option<(usize, BufferKeep)>,
    /// A partition dispatcher instead of the demand dispatcher.
    parts: Option<Parts>,
}

/// A partition dispatcher: `n` partitions, events keyed by `seq % KEYS`, key
/// `k` to partition `k % n`, key 0 discarded when `discard`.
#[derive(Clone, Copy, Debug)]
struct Parts {
    n: usize,
    discard: bool,
    queue_capacity: Option<usize>,
}

/// How many keys the events of a partitioned producer have.
const KEYS: u64 = 5;

impl Parts {
    fn key(e: &Ev) -> u64 {
        e.seq % KEYS
    }

    /// The partition of `e`, `None` when it is discarded.
    fn route(self, e: &Ev) -> Option<usize> {
        let key = Self::key(e);
        (!(self.discard && key == 0)).then_some(key as usize % self.n)
    }

    fn dispatcher(self) -> PartitionDispatcher<Ev> {
        let mut builder =
            PartitionDispatcher::numbered(self.n, move |e: Ev| self.route(&e).map(|p| (p, e)));
        if let Some(capacity) = self.queue_capacity {
            builder = builder.queue_capacity(capacity);
        }
        builder.build().unwrap()
    }
}

#[derive(Clone, Debug)]
struct RelaySpec {
    kind: RelayKind,
    buffer: Option<(usize, BufferKeep)>,
}

/// One step of a program. Stage and subscription numbers are taken modulo what
/// exists when the step runs.
#[derive(Clone, Debug)]
enum Op {
    /// A consuming stage subscribes to a producing stage (never to itself or to a
    /// later producer-consumer, so pipelines stay acyclic).
    Subscribe {
        consumer: usize,
        producer: usize,
        /// Taken modulo one more than the partitions of a partitioned producer,
        /// so some subscriptions name a partition that does not exist.
        partition: usize,
        max: u64,
        min: Option<u64>,
        cancel: CancelMode,
        wait: bool,
    },
    /// A subscription is cancelled by its consumer (or, when its producer is a
    /// producer-consumer and `from_producer`, by its producer), maybe twice.
    Cancel {
        sub: usize,
        reason: Reason,
        from_producer: bool,
        twice: bool,
    },
    /// The consumer of a subscription replaces it with a new subscription to the
    /// same producer (`resubscribe`: the old one's cancel mode does not apply).
    Resubscribe {
        sub: usize,
        reason: Reason,
        max: u64,
        cancel: CancelMode,
    },
    /// A producing stage switches between accumulating and forwarding demand.
    Flow {
        stage: usize,
        accumulate: bool,
    },
    /// The consumer of a subscription asks on it, through its handle or from its
    /// info callback.
    Ask {
        sub: usize,
        demand: u64,
        via_info: bool,
    },
    /// A producing stage emits from its info callback.
    Emit {
        stage: usize,
        events: u64,
    },
    /// A producer emits what it owes from its info callback.
    EmitOwed {
        stage: usize,
    },
    /// A stage is stopped through its handle.
    Stop {
        stage: usize,
        reason: Reason,
    },
    /// A stage panics in `handle_info`, or the next time `trap` runs.
    Panic {
        stage: usize,
        trap: Option<Trap>,
    },
    Yield(u8),
    Advance(u16),
    /// Waits until the pipeline is quiescent.
    Settle,
}

#[derive(Clone, Debug)]
struct Program {
    sources: Vec<SourceSpec>,
    relays: Vec<RelaySpec>,
    /// One entry per consumer: manual demand or not.
    sinks: Vec<bool>,
    ops: Vec<Op>,
}

fn reason() -> impl Strategy<Value = Reason> {
    prop_oneof![
        Just(Reason::Normal),
        Just(Reason::Shutdown),
        Just(Reason::error("stopped by the test")),
    ]
}

fn cancel_mode() -> impl Strategy<Value = CancelMode> {
    prop_oneof![
        Just(CancelMode::Permanent),
        Just(CancelMode::Transient),
        Just(CancelMode::Temporary),
    ]
}

fn buffer() -> impl Strategy<Value = Option<(usize, BufferKeep)>> {
    proptest::option::weighted(
        0.4,
        (
            0..8_usize,
            prop_oneof![Just(BufferKeep::Last), Just(BufferKeep::First)],
        ),
    )
}

fn demand() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0), 16 => 1..=12_u64, 1 => Just(u64::MAX)]
}

fn source_spec() -> impl Strategy<Value = SourceSpec> {
    let kind = prop_oneof![
        Just(SourceKind::Exact),
        Just(SourceKind::Lazy),
        (1..4_u64).prop_map(SourceKind::Eager),
        Just(SourceKind::Silent),
    ];
    let parts = proptest::option::weighted(
        0.3,
        (1..=3_usize, any::<bool>(), proptest::option::of(1..6_usize)).prop_map(
            |(n, discard, queue_capacity)| Parts {
                n,
                discard,
                queue_capacity,
            },
        ),
    );
    (kind, 0..200_u64, buffer(), parts).prop_map(|(kind, budget, buffer, parts)| SourceSpec {
        kind,
        budget,
        buffer,
        parts,
    })
}

fn relay_spec() -> impl Strategy<Value = RelaySpec> {
    let kind = prop_oneof![
        Just(RelayKind::Double),
        Just(RelayKind::Filter),
        Just(RelayKind::FlatMap),
    ];
    (kind, buffer()).prop_map(|(kind, buffer)| RelaySpec { kind, buffer })
}

fn trap() -> impl Strategy<Value = Option<Trap>> {
    prop_oneof![
        Just(None),
        Just(Some(Trap::Work)),
        Just(Some(Trap::Subscribe)),
        Just(Some(Trap::Cancel)),
        Just(Some(Trap::Terminate)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..8_usize, 0..8_usize, 0..8_usize, 1..=12_u64, proptest::option::of(0..12_u64), cancel_mode(), proptest::bool::weighted(0.8))
            .prop_map(|(consumer, producer, partition, max, min, cancel, wait)| Op::Subscribe {
                consumer,
                producer,
                partition,
                max,
                min: min.map(|m| m % max),
                cancel,
                wait,
            }),
        2 => (0..16_usize, reason(), any::<bool>(), proptest::bool::weighted(0.3))
            .prop_map(|(sub, reason, from_producer, twice)| Op::Cancel { sub, reason, from_producer, twice }),
        1 => (0..16_usize, reason(), 1..=12_u64, cancel_mode())
            .prop_map(|(sub, reason, max, cancel)| Op::Resubscribe { sub, reason, max, cancel }),
        1 => (0..8_usize, any::<bool>()).prop_map(|(stage, accumulate)| Op::Flow { stage, accumulate }),
        5 => (0..16_usize, demand(), any::<bool>())
            .prop_map(|(sub, demand, via_info)| Op::Ask { sub, demand, via_info }),
        2 => (0..8_usize, 0..20_u64).prop_map(|(stage, events)| Op::Emit { stage, events }),
        1 => (0..8_usize).prop_map(|stage| Op::EmitOwed { stage }),
        1 => (0..16_usize, reason()).prop_map(|(stage, reason)| Op::Stop { stage, reason }),
        1 => (0..16_usize, trap()).prop_map(|(stage, trap)| Op::Panic { stage, trap }),
        3 => (1..6_u8).prop_map(Op::Yield),
        1 => (1..50_u16).prop_map(Op::Advance),
        1 => Just(Op::Settle),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    (
        proptest::collection::vec(source_spec(), 1..=3),
        proptest::collection::vec(relay_spec(), 0..=2),
        proptest::collection::vec(any::<bool>(), 1..=4),
        proptest::collection::vec(op(), 1..48),
    )
        .prop_map(|(sources, relays, sinks, ops)| Program {
            sources,
            relays,
            sinks,
            ops,
        })
}

// ----- running a program ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Source,
    Relay,
    Sink,
}

struct StageRec {
    kind: Kind,
    handle: Option<Handle>,
    probe: Arc<Probe>,
    monitor: StageMonitor,
    capacity: Option<usize>,
    /// The partitions of a partitioned producer.
    parts: Option<Parts>,
    /// A consumer with manual demand.
    manual: bool,
    /// Reasons the test stopped it with.
    stops: Vec<Reason>,
}

/// A subscription the test made: stage indices, options, demand mode.
#[derive(Clone, Debug)]
struct SubRec {
    sub: SubscriptionId,
    consumer: usize,
    producer: usize,
    max: u64,
    min: u64,
    cancel: CancelMode,
    auto: bool,
    /// The partition it asked for, on a partitioned producer.
    partition: Option<usize>,
    /// A `resubscribe` replaced it: its cancel mode may not apply.
    replaced: bool,
}

/// Awaits `f`, failing the case when it never completes: with the paused clock
/// the timeout only fires once every task is idle, so a hang fails at once.
async fn bounded<F: Future>(paused: bool, what: impl fmt::Display, f: F) -> F::Output {
    let limit = Duration::from_secs(if paused { 3600 } else { 60 });
    match tokio::time::timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} never completed"),
    }
}

/// Waits until `cond` holds, or gives up after a bound: yielding on the paused
/// clock, sleeping a millisecond at a time on the real one.
async fn eventually(paused: bool, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
        if !paused {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

struct World {
    paused: bool,
    stages: Vec<StageRec>,
    subs: Vec<SubRec>,
    violations: Vec<String>,
}

/// Records a violation instead of panicking, so one case reports all it broke.
macro_rules! check {
    ($world:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $world.violations.push(format!($($arg)+));
        }
    };
}

impl World {
    fn start(program: &Program, paused: bool) -> World {
        let mut stages = Vec::new();
        for (me, spec) in program.sources.iter().enumerate() {
            let probe = Arc::new(Probe::default());
            let mut builder = producer(Source {
                me,
                kind: spec.kind,
                budget: spec.budget,
                next: 0,
                owed: 0,
                probe: probe.clone(),
            });
            if let Some((size, keep)) = spec.buffer {
                builder = builder.buffer_size(size).buffer_keep(keep);
            }
            let started = match spec.parts {
                Some(parts) => builder.dispatcher(parts.dispatcher()).start(),
                None => builder.start(),
            };
            let handle = Handle::Source(started.unwrap());
            let queues = spec.parts.map_or(0, |p| {
                p.n * p.queue_capacity.unwrap_or(DEFAULT_PARTITION_QUEUE_CAPACITY)
            });
            stages.push(StageRec {
                kind: Kind::Source,
                parts: spec.parts,
                monitor: handle.monitor(),
                handle: Some(handle),
                probe,
                capacity: Some(spec.buffer.map_or(DEFAULT_BUFFER_SIZE, |b| b.0) + queues),
                manual: false,
                stops: Vec::new(),
            });
        }
        for spec in &program.relays {
            let probe = Arc::new(Probe::default());
            let mut builder = producer_consumer(Relay {
                me: stages.len(),
                kind: spec.kind,
                next: 0,
                probe: probe.clone(),
            });
            if let Some((size, keep)) = spec.buffer {
                builder = builder.buffer_size(size).buffer_keep(keep);
            }
            let handle = Handle::Relay(builder.start().unwrap());
            stages.push(StageRec {
                kind: Kind::Relay,
                monitor: handle.monitor(),
                handle: Some(handle),
                probe,
                capacity: spec.buffer.map(|b| b.0),
                parts: None,
                manual: false,
                stops: Vec::new(),
            });
        }
        for &manual in &program.sinks {
            let probe = Arc::new(Probe::default());
            let sink = Sink {
                manual,
                probe: probe.clone(),
            };
            let handle = Handle::Sink(consumer(sink).start().unwrap());
            stages.push(StageRec {
                kind: Kind::Sink,
                monitor: handle.monitor(),
                handle: Some(handle),
                probe,
                capacity: None,
                parts: None,
                manual,
                stops: Vec::new(),
            });
        }
        World {
            paused,
            stages,
            subs: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn indices(&self, kinds: &[Kind]) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&i| kinds.contains(&self.stages[i].kind))
            .collect()
    }

    fn handle(&self, stage: usize) -> &Handle {
        self.stages[stage]
            .handle
            .as_ref()
            .expect("handles live until teardown")
    }

    /// Waits until stage `stage` has stopped: a handle said it was not running.
    async fn expect_stopped(&self, stage: usize, why: &str) {
        let monitor = self.stages[stage].monitor.clone();
        bounded(
            self.paused,
            format_args!("stage {stage} said {why} but never stopped"),
            monitor.wait(),
        )
        .await;
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Subscribe {
                consumer,
                producer,
                partition,
                max,
                min,
                cancel,
                wait,
            } => {
                let consumers = self.indices(&[Kind::Relay, Kind::Sink]);
                let producers = self.indices(&[Kind::Source, Kind::Relay]);
                let sources = self.indices(&[Kind::Source]);
                let c = consumers[consumer % consumers.len()];
                let mut p = producers[producer % producers.len()];
                if self.stages[c].kind == Kind::Relay && p >= c {
                    p = sources[producer % sources.len()];
                }
                let mut options = SubscribeOptions::new().max_demand(*max).cancel(*cancel);
                if let Some(min) = min {
                    options = options.min_demand(*min);
                }
                let partition = self.stages[p].parts.map(|parts| partition % (parts.n + 1));
                if let Some(partition) = partition {
                    options = options.partition(partition);
                }
                let to = self.handle(p).producer().unwrap();
                let result = bounded(
                    self.paused,
                    "subscribe_to",
                    self.handle(c).subscribe(&to, options, *wait),
                )
                .await;
                let auto = !self.stages[c].manual;
                let rec = move |sub| SubRec {
                    sub,
                    consumer: c,
                    producer: p,
                    max: *max,
                    min: min.unwrap_or(max / 2),
                    cancel: *cancel,
                    auto,
                    partition,
                    replaced: false,
                };
                let failed = result.is_err();
                match result {
                    Ok(sub) => self.subs.push(rec(sub)),
                    Err(SubscribeError::ProducerNotRunning) => {
                        self.expect_stopped(p, "ProducerNotRunning").await;
                    }
                    Err(SubscribeError::ConsumerNotRunning) => {
                        self.expect_stopped(c, "ConsumerNotRunning").await;
                    }
                    // A partition dispatcher refuses partitions that do not exist
                    // or are taken.
                    Err(SubscribeError::Refused(_)) if partition.is_some() => {}
                    Err(other) => {
                        check!(self, false, "subscribe {c} -> {p} failed: {other}");
                    }
                }
                // A failed subscribe may still have run the consumer's
                // `handle_subscribe` (and the producer may have accepted) before
                // the consumer stopped: its id is in the consumer's record.
                if failed {
                    self.register_unknown_subs(c, rec);
                }
            }
            Op::Cancel {
                sub,
                reason,
                from_producer,
                twice,
            } => {
                let Some(rec) = self.pick(*sub) else { return };
                let by = if *from_producer && self.stages[rec.producer].kind == Kind::Relay {
                    rec.producer
                } else {
                    rec.consumer
                };
                for _ in 0..if *twice { 2 } else { 1 } {
                    if self.handle(by).cancel(rec.sub, reason.clone()).is_err() {
                        self.expect_stopped(by, "NotRunning to cancel").await;
                    }
                }
            }
            Op::Resubscribe {
                sub,
                reason,
                max,
                cancel,
            } => {
                let Some(old) = self.pick(*sub) else { return };
                if let Some(r) = self.subs.iter_mut().find(|r| r.sub == old.sub) {
                    r.replaced = true;
                }
                let options = SubscribeOptions::new().max_demand(*max).cancel(*cancel);
                let options = match old.partition {
                    Some(partition) => options.partition(partition),
                    None => options,
                };
                let to = self.handle(old.producer).producer().unwrap();
                let c = old.consumer;
                let resubscribed =
                    self.handle(c)
                        .resubscribe(old.sub, reason.clone(), &to, options);
                let result = bounded(self.paused, "resubscribe", resubscribed).await;
                let rec = |sub| SubRec {
                    sub,
                    max: *max,
                    min: max / 2,
                    cancel: *cancel,
                    replaced: false,
                    ..old.clone()
                };
                match result {
                    Ok(sub) => self.subs.push(rec(sub)),
                    Err(SubscribeError::ProducerNotRunning) => {
                        self.expect_stopped(old.producer, "ProducerNotRunning")
                            .await;
                    }
                    Err(SubscribeError::ConsumerNotRunning) => {
                        self.expect_stopped(c, "ConsumerNotRunning").await;
                    }
                    Err(SubscribeError::Refused(_)) if old.partition.is_some() => {}
                    Err(ref other) => {
                        check!(self, false, "resubscribe {} failed: {other}", old.sub);
                    }
                }
                if result.is_err() {
                    self.register_unknown_subs(c, rec);
                }
            }
            Op::Flow { stage, accumulate } => {
                let producers = self.indices(&[Kind::Source, Kind::Relay]);
                let p = producers[stage % producers.len()];
                let flow = if *accumulate {
                    DemandFlow::Accumulate
                } else {
                    DemandFlow::Forward
                };
                if self.handle(p).set_demand_flow(flow).is_err() {
                    self.expect_stopped(p, "NotRunning to switch its demand flow")
                        .await;
                }
            }
            Op::Ask {
                sub,
                demand,
                via_info,
            } => {
                let Some(rec) = self.pick(*sub) else { return };
                let sent = if *via_info {
                    self.handle(rec.consumer).send(Cmd::Ask(rec.sub, *demand))
                } else {
                    self.stages[rec.consumer].probe.push(Entry::Asked {
                        sub: rec.sub,
                        demand: *demand,
                        by_handle: true,
                    });
                    self.handle(rec.consumer).ask(rec.sub, *demand)
                };
                if sent.is_err() {
                    self.expect_stopped(rec.consumer, "NotRunning to ask").await;
                }
            }
            Op::Emit { stage, events } => {
                let producers = self.indices(&[Kind::Source, Kind::Relay]);
                let p = producers[stage % producers.len()];
                if self.handle(p).send(Cmd::Emit(*events)).is_err() {
                    self.expect_stopped(p, "NotRunning to emit").await;
                }
            }
            Op::EmitOwed { stage } => {
                let sources = self.indices(&[Kind::Source]);
                let p = sources[stage % sources.len()];
                if self.handle(p).send(Cmd::EmitOwed).is_err() {
                    self.expect_stopped(p, "NotRunning to emit").await;
                }
            }
            Op::Stop { stage, reason } => {
                let s = stage % self.stages.len();
                self.stages[s].stops.push(reason.clone());
                let stopped =
                    bounded(self.paused, "stop", self.handle(s).stop(reason.clone())).await;
                if stopped.is_err() {
                    self.expect_stopped(s, "NotRunning to stop").await;
                }
                check!(
                    self,
                    self.stages[s].monitor.exit_reason().is_some(),
                    "stage {s} is running after stop() returned"
                );
            }
            Op::Panic { stage, trap } => {
                let s = stage % self.stages.len();
                match trap {
                    Some(trap) => self.stages[s].probe.arm(*trap),
                    None => {
                        if self.handle(s).send(Cmd::Panic).is_err() {
                            self.expect_stopped(s, "NotRunning to panic").await;
                        }
                    }
                }
            }
            Op::Yield(n) => {
                for _ in 0..*n {
                    tokio::task::yield_now().await;
                }
            }
            Op::Advance(ms) => {
                if self.paused {
                    tokio::time::advance(Duration::from_millis(u64::from(*ms))).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            Op::Settle => {
                self.quiesce().await;
            }
        }
    }

    /// Registers the subscriptions in stage `c`'s record that the test does not
    /// know: a failed subscribe may still have run the consumer's
    /// `handle_subscribe` (and the producer may have accepted) before the
    /// consumer stopped.
    fn register_unknown_subs(&mut self, c: usize, rec: impl Fn(SubscriptionId) -> SubRec) {
        let known: HashSet<SubscriptionId> = self.subs.iter().map(|r| r.sub).collect();
        let unknown: Vec<SubscriptionId> = self.stages[c]
            .probe
            .log
            .lock()
            .iter()
            .filter_map(|e| match e {
                Entry::Subscribed(sub) if !known.contains(sub) => Some(*sub),
                _ => None,
            })
            .collect();
        self.subs.extend(unknown.into_iter().map(rec));
    }

    fn pick(&self, n: usize) -> Option<SubRec> {
        if self.subs.is_empty() {
            None
        } else {
            Some(self.subs[n % self.subs.len()].clone())
        }
    }
}

// ----- checking ---------------------------------------------------------------

/// One subscription as its consumer's record tells it.
#[derive(Default)]
struct Flow {
    subscribed: bool,
    ended: bool,
    /// Every ask made on it so far: by the handle, from callbacks, and the
    /// automatic asks of SEMANTICS.md §2.
    asked: u128,
    got: u64,
    /// Automatic demand as §2 counts it: `(max, min, pending)`.
    auto: Option<(u64, u64, u64)>,
    last: Option<u64>,
}

impl World {
    /// Switches every producing stage back to forwarding demand, so what it
    /// accumulated is replayed before the checks.
    fn forward_all(&self) {
        for s in &self.stages {
            if let Some(h) = &s.handle {
                let _ = h.set_demand_flow(DemandFlow::Forward);
            }
        }
    }

    /// Waits until two rounds of `stats()` round trips through every stage see
    /// the same stats, records and emission counts, and returns those stats
    /// (`None` for a stopped stage).
    async fn quiesce(&self) -> Vec<Option<StageStats>> {
        let mut previous = None;
        for _ in 0..1000 {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let mut stats = Vec::new();
            for s in &self.stages {
                let h = s.handle.as_ref().expect("handles live until teardown");
                stats.push(bounded(self.paused, "stats", h.stats()).await.ok());
            }
            let marks: Vec<(usize, u64)> = self
                .stages
                .iter()
                .map(|s| {
                    (
                        s.probe.log.lock().len(),
                        s.probe.emitted.load(Ordering::SeqCst),
                    )
                })
                .collect();
            let now = (stats, marks);
            if previous.as_ref() == Some(&now) {
                return now.0;
            }
            previous = Some(now);
        }
        panic!("the pipeline never became quiescent");
    }

    /// Checks every invariant on a quiescent pipeline; returns which stages run.
    async fn check(&mut self) -> Vec<bool> {
        let stats = self.quiesce().await;
        let n = self.stages.len();
        let logs: Vec<Vec<Entry>> = self
            .stages
            .iter()
            .map(|s| s.probe.log.lock().clone())
            .collect();
        let emitted: Vec<u64> = self
            .stages
            .iter()
            .map(|s| s.probe.emitted.load(Ordering::SeqCst))
            .collect();
        let by_sub: HashMap<SubscriptionId, SubRec> =
            self.subs.iter().map(|r| (r.sub, r.clone())).collect();
        let running: Vec<bool> = stats.iter().map(Option::is_some).collect();
        let mut exits = vec![None; n];
        for i in 0..n {
            if running[i] {
                check!(
                    self,
                    self.stages[i].monitor.exit_reason().is_none(),
                    "stage {i} answers stats but has an exit reason"
                );
            } else {
                let monitor = self.stages[i].monitor.clone();
                exits[i] = Some(bounded(self.paused, "exit", monitor.wait()).await);
            }
        }

        // Records, consumer side: demand, batches, order, ends.
        let mut flows: HashMap<SubscriptionId, Flow> = HashMap::new();
        let mut seen: HashMap<usize, HashSet<u64>> = HashMap::new();
        let mut delivered: HashMap<SubscriptionId, Vec<u64>> = HashMap::new();
        for (i, log) in logs.iter().enumerate() {
            let mut terminated = false;
            for entry in log {
                check!(
                    self,
                    !terminated
                        || matches!(
                            entry,
                            Entry::Asked {
                                by_handle: true,
                                ..
                            }
                        ),
                    "stage {i}: callback after terminate: {entry:?}"
                );
                match entry {
                    Entry::Subscribed(sub) => {
                        let Some(rec) = by_sub.get(sub) else {
                            check!(self, false, "stage {i}: unknown subscription {sub}");
                            continue;
                        };
                        check!(
                            self,
                            rec.consumer == i,
                            "stage {i}: {sub} belongs to {}",
                            rec.consumer
                        );
                        let flow = flows.entry(*sub).or_default();
                        check!(self, !flow.subscribed, "{sub}: subscribed twice");
                        flow.subscribed = true;
                        if rec.auto {
                            flow.asked += u128::from(rec.max);
                            flow.auto = Some((rec.max, rec.min, rec.max));
                        }
                    }
                    Entry::Asked { sub, demand, .. } => {
                        flows.entry(*sub).or_default().asked += u128::from(*demand);
                    }
                    Entry::Events(sub, events) => {
                        let Some(rec) = by_sub.get(sub) else {
                            check!(self, false, "stage {i}: events on unknown {sub}");
                            continue;
                        };
                        let flow = flows.entry(*sub).or_default();
                        check!(
                            self,
                            flow.subscribed && !flow.ended,
                            "{sub}: batch {events:?} outside the subscription (subscribed {}, ended {})",
                            flow.subscribed,
                            flow.ended
                        );
                        check!(self, !events.is_empty(), "{sub}: empty batch");
                        for e in events {
                            check!(
                                self,
                                e.src == rec.producer,
                                "{sub}: {e:?} is not from stage {}",
                                rec.producer
                            );
                            check!(
                                self,
                                flow.last.is_none_or(|last| e.seq > last),
                                "{sub}: {e:?} after seq {:?}",
                                flow.last
                            );
                            flow.last = Some(e.seq);
                            check!(
                                self,
                                seen.entry(e.src).or_default().insert(e.seq),
                                "{e:?} delivered twice"
                            );
                            check!(self, e.seq < emitted[e.src], "{e:?} was never emitted");
                            if let Some(parts) = self.stages[rec.producer].parts {
                                check!(
                                    self,
                                    parts.route(e) == rec.partition,
                                    "{sub}: {e:?} is not for partition {:?}",
                                    rec.partition
                                );
                            }
                            delivered.entry(*sub).or_default().push(e.seq);
                        }
                        let len = events.len() as u64;
                        flow.got += len;
                        check!(
                            self,
                            u128::from(flow.got) <= flow.asked,
                            "{sub}: {} events delivered, {} asked",
                            flow.got,
                            flow.asked
                        );
                        if let Some((max, min, pending)) = &mut flow.auto {
                            check!(
                                self,
                                len <= *max - *min,
                                "{sub}: chunk of {len} with max {max} min {min}"
                            );
                            *pending = pending.saturating_sub(len);
                            if *pending <= *min {
                                flow.asked += u128::from(*max - *pending);
                                *pending = *max;
                            }
                        }
                    }
                    Entry::Cancelled(sub, reason) => {
                        let flow = flows.entry(*sub).or_default();
                        check!(
                            self,
                            flow.subscribed,
                            "{sub}: cancelled ({reason}) but never subscribed"
                        );
                        check!(self, !flow.ended, "{sub}: cancel callback ran twice");
                        flow.ended = true;
                    }
                    Entry::Terminated(_) => terminated = true,
                    _ => {}
                }
            }
        }

        // Records, producer side.
        let mut accepted = vec![HashSet::new(); n];
        let mut released = vec![HashSet::new(); n];
        let mut reported = vec![0_u64; n];
        for j in 0..n {
            for entry in &logs[j] {
                match entry {
                    Entry::Accepted(sub) => {
                        check!(
                            self,
                            by_sub.get(sub).is_some_and(|r| r.producer == j),
                            "stage {j} accepted {sub}, not its subscription"
                        );
                        check!(
                            self,
                            accepted[j].insert(*sub),
                            "stage {j} accepted {sub} twice"
                        );
                    }
                    Entry::Released(sub) => {
                        check!(
                            self,
                            accepted[j].contains(sub),
                            "stage {j} released {sub} it never accepted"
                        );
                        check!(
                            self,
                            released[j].insert(*sub),
                            "stage {j} released {sub} twice"
                        );
                    }
                    Entry::Demand(d) => check!(self, *d > 0, "stage {j}: handle_demand(0)"),
                    Entry::Dropped(d) => {
                        check!(self, *d > 0, "stage {j}: handle_dropped(0)");
                        reported[j] += *d as u64;
                    }
                    _ => {}
                }
            }
        }
        // Per key, through a partition dispatcher, events arrive in emission
        // order, across the successive subscriptions of a partition too.
        for (j, log) in logs.iter().enumerate() {
            let Some(parts) = self.stages[j].parts else {
                continue;
            };
            let accepted_in_order: Vec<&SubRec> = log
                .iter()
                .filter_map(|e| match e {
                    Entry::Accepted(sub) => by_sub.get(sub),
                    _ => None,
                })
                .collect();
            for partition in 0..parts.n {
                let mut last: HashMap<u64, u64> = HashMap::new();
                for r in accepted_in_order
                    .iter()
                    .filter(|r| r.partition == Some(partition))
                {
                    for &seq in delivered.get(&r.sub).into_iter().flatten() {
                        let key = seq % KEYS;
                        if let Some(&before) = last.get(&key) {
                            check!(
                                self,
                                seq > before,
                                "stage {j} partition {partition}: key {key} got {seq} on {} after {before}",
                                r.sub
                            );
                        }
                        last.insert(key, seq);
                    }
                }
            }
        }

        let subscribers = |j: usize| -> Vec<usize> {
            self.subs
                .iter()
                .filter(|r| r.producer == j && accepted[j].contains(&r.sub))
                .map(|r| r.consumer)
                .collect()
        };
        let flow_sum = |pick: &dyn Fn(&SubRec) -> bool, f: &dyn Fn(&Flow) -> u128| -> u128 {
            self.subs
                .iter()
                .filter(|r| pick(r))
                .filter_map(|r| flows.get(&r.sub))
                .map(f)
                .sum()
        };

        // Stats of running stages against the records.
        let mut found = Vec::new();
        for i in 0..n {
            let Some(s) = &stats[i] else { continue };
            let kind = self.stages[i].kind;
            let up: HashSet<SubscriptionId> = s
                .subscriptions
                .iter()
                .filter(|x| x.peer == Peer::Producer)
                .map(|x| x.sub)
                .collect();
            let down: HashSet<SubscriptionId> = s
                .subscriptions
                .iter()
                .filter(|x| x.peer == Peer::Consumer)
                .map(|x| x.sub)
                .collect();
            let live_up: HashSet<SubscriptionId> = self
                .subs
                .iter()
                .filter(|r| r.consumer == i)
                .filter(|r| flows.get(&r.sub).is_some_and(|f| f.subscribed && !f.ended))
                .map(|r| r.sub)
                .collect();
            if up != live_up {
                found.push(format!(
                    "stage {i}: upstream subscriptions {up:?}, records say {live_up:?}"
                ));
            }
            let live_down: HashSet<SubscriptionId> =
                accepted[i].difference(&released[i]).copied().collect();
            if down != live_down {
                found.push(format!(
                    "stage {i}: downstream subscriptions {down:?}, records say {live_down:?}"
                ));
            }
            let got_in = flow_sum(&|r| r.consumer == i, &|f| u128::from(f.got));
            if kind != Kind::Source {
                let handled = u64::try_from(got_in).unwrap();
                if s.events_in != handled + s.queued_in as u64 {
                    found.push(format!(
                        "stage {i}: events_in {} but {handled} handled and {} queued",
                        s.events_in, s.queued_in
                    ));
                }
                let unmet = flow_sum(&|r| r.consumer == i, &|f| {
                    f.asked.saturating_sub(u128::from(f.got))
                });
                if s.queued_in as u128 > unmet {
                    found.push(format!(
                        "stage {i}: {} queued, only {unmet} asked and not received",
                        s.queued_in
                    ));
                }
            }
            if kind == Kind::Sink {
                continue;
            }
            // Conservation: emitted = delivered + buffered + dropped (+ discarded
            // by a partition dispatcher: at most the events of the discarded key,
            // as events still in the producer's buffer are not routed yet).
            let accounted = s.events_out + s.buffered as u64 + s.events_dropped;
            let discardable = match self.stages[i].parts {
                Some(parts) if parts.discard => emitted[i].div_ceil(KEYS),
                _ => 0,
            };
            if accounted > emitted[i] || emitted[i] - accounted > discardable {
                found.push(format!(
                    "stage {i}: emitted {} but out {} + buffered {} + dropped {} = {accounted} ({discardable} discardable)",
                    emitted[i], s.events_out, s.buffered, s.events_dropped
                ));
            }
            if let Some(cap) = self.stages[i].capacity
                && s.buffered > cap
            {
                found.push(format!(
                    "stage {i}: {} buffered over a capacity of {cap}",
                    s.buffered
                ));
            }
            let all_subscribers_run = subscribers(i).iter().all(|&c| running[c]);
            if s.events_dropped < reported[i]
                || (all_subscribers_run && s.events_dropped != reported[i])
            {
                found.push(format!(
                    "stage {i}: events_dropped {} but handle_dropped reported {}",
                    s.events_dropped, reported[i]
                ));
            }
            let got_out =
                u64::try_from(flow_sum(&|r| r.producer == i, &|f| u128::from(f.got))).unwrap();
            if got_out > s.events_out {
                found.push(format!(
                    "stage {i}: {got_out} handled downstream, only {} delivered",
                    s.events_out
                ));
            }
            if all_subscribers_run {
                let queued: u64 = subscribers(i)
                    .iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter(|&&c| self.stages[c].kind == Kind::Relay)
                    .filter_map(|&c| stats[c].as_ref())
                    .map(|x| x.queued_in as u64)
                    .sum();
                if s.events_out > got_out + queued {
                    found.push(format!(
                        "stage {i}: delivered {} but consumers handled {got_out} and queue {queued}",
                        s.events_out
                    ));
                }
            }
            // Nothing waits in a buffer while a consumer has unmet demand (§3).
            // A partition's queue rightly waits while other partitions have demand.
            let waiting = self.stages[i].parts.is_none()
                && (s.buffered > 0 || (kind == Kind::Relay && s.queued_in > 0));
            for x in s.subscriptions.iter().filter(|x| x.peer == Peer::Consumer) {
                if waiting && x.pending_demand.unwrap_or(0) > 0 {
                    found.push(format!(
                        "stage {i}: {} buffered and {} queued while {} has demand {:?}",
                        s.buffered, s.queued_in, x.sub, x.pending_demand
                    ));
                }
            }
        }

        // Both ends of every live subscription agree.
        for r in &self.subs {
            let (Some(p), Some(c)) = (&stats[r.producer], &stats[r.consumer]) else {
                continue;
            };
            if !accepted[r.producer].contains(&r.sub) || c.queued_in > 0 {
                continue;
            }
            let at_p = p.subscriptions.iter().any(|x| x.sub == r.sub);
            let at_c = c.subscriptions.iter().any(|x| x.sub == r.sub);
            if at_p != at_c {
                found.push(format!(
                    "{}: live at the producer {at_p}, at the consumer {at_c}",
                    r.sub
                ));
            }
        }

        // Every stop is explained by the test, an injected panic or a cancel mode
        // (§6); every stopping cancel mode was applied.
        for i in 0..n {
            let panicked = logs[i].iter().any(|e| matches!(e, Entry::Panicking));
            let stopping_cancels: Vec<(SubscriptionId, Reason)> = logs[i]
                .iter()
                .filter_map(|e| match e {
                    Entry::Cancelled(sub, reason) => Some((*sub, reason.reason().clone())),
                    _ => None,
                })
                .filter(|(sub, reason)| {
                    by_sub
                        .get(sub)
                        .is_some_and(|r| r.cancel.stops_consumer(reason))
                })
                .collect();
            let terminations: Vec<&Reason> = logs[i]
                .iter()
                .filter_map(|e| match e {
                    Entry::Terminated(r) => Some(r),
                    _ => None,
                })
                .collect();
            match &exits[i] {
                Some(exit) => {
                    let explained = self.stages[i].stops.contains(exit)
                        || (panicked && *exit == Reason::Panic(PANIC.into()))
                        || stopping_cancels.iter().any(|(_, r)| r == exit);
                    if !explained {
                        found.push(format!(
                            "stage {i} stopped with {exit}: not stopped with it ({:?}), panicked {panicked}, stopping cancels {stopping_cancels:?}",
                            self.stages[i].stops
                        ));
                    }
                    if terminations != [exit] {
                        found.push(format!(
                            "stage {i} exited with {exit}, terminate saw {terminations:?}"
                        ));
                    }
                }
                None => {
                    if panicked || !terminations.is_empty() {
                        found.push(format!("stage {i} runs after panicking or terminating"));
                    }
                    let holding = stats[i].as_ref().is_some_and(|s| s.buffered > 0);
                    for (sub, reason) in &stopping_cancels {
                        let rec = &by_sub[sub];
                        let applies = accepted[rec.producer].contains(sub) && !rec.replaced;
                        if applies && !(self.stages[i].kind == Kind::Relay && holding) {
                            found.push(format!(
                                "stage {i} runs after {sub} ({:?}) ended with {reason}",
                                rec.cancel
                            ));
                        }
                    }
                }
            }
        }
        self.violations.extend(found);
        running
    }

    /// Stops every stage through its handle and drops the handles: every stage
    /// stops, with `Shutdown` for those still running, and no task or stage
    /// state is left. (Dropping the handles alone would only detach the
    /// pipeline, which keeps running while it has work.)
    async fn teardown(&mut self, running: &[bool]) {
        for s in &mut self.stages {
            // A trap still armed would fire as the pipeline shuts down (a cancel
            // callback runs when a consumer leaves); a panicking `terminate`
            // changes no exit reason, so that one stays.
            let mut armed = s.probe.armed.lock();
            if *armed != Some(Trap::Terminate) {
                *armed = None;
            }
        }
        for i in 0..self.stages.len() {
            if let Some(handle) = self.stages[i].handle.take() {
                let stop = async { each!(&handle, h => h.stop(Reason::Shutdown).await) };
                let _ = bounded(self.paused, format_args!("stopping stage {i}"), stop).await;
            }
        }
        for (i, &ran) in running.iter().enumerate() {
            let monitor = self.stages[i].monitor.clone();
            let exit = bounded(
                self.paused,
                format_args!("stage {i} after its handles were dropped"),
                monitor.wait(),
            )
            .await;
            if ran {
                check!(
                    self,
                    exit == Reason::Shutdown,
                    "stage {i} stopped with {exit} when its handles were dropped"
                );
            }
        }
        // A stage's task finishes (and drops its state) just after its exit is
        // published; on worker threads that can take a moment.
        let metrics = tokio::runtime::Handle::current().metrics();
        let probes: Vec<Arc<Probe>> = self.stages.iter().map(|s| s.probe.clone()).collect();
        eventually(self.paused, || {
            metrics.num_alive_tasks() == 0 && probes.iter().all(|p| Arc::strong_count(p) == 2)
        })
        .await;
        drop(probes);
        check!(
            self,
            metrics.num_alive_tasks() == 0,
            "{} tasks alive after every stage stopped",
            metrics.num_alive_tasks()
        );
        for (i, s) in self.stages.iter().enumerate() {
            let holders = Arc::strong_count(&s.probe);
            if holders != 1 {
                self.violations.push(format!(
                    "stage {i}: its state is still held ({holders} references)"
                ));
            }
        }
    }
}

// ----- properties -------------------------------------------------------------

/// The number of cases: `PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh runtime: one thread with the paused clock, or `threads` workers.
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_time()
            .build()
    }
    .unwrap()
}

/// Runs `program` on a fresh runtime: one thread with the paused clock, or
/// `threads` worker threads.
fn run(program: &Program, threads: usize) -> Result<(), TestCaseError> {
    quiet_injected_panics();
    let paused = threads == 1;
    let runtime = runtime(threads);
    let violations = runtime.block_on(async {
        let mut world = World::start(program, paused);
        for op in &program.ops {
            world.apply(op).await;
        }
        world.forward_all();
        let running = world.check().await;
        world.teardown(&running).await;
        world.violations
    });
    drop(runtime);
    prop_assert!(
        violations.is_empty(),
        "{} violation(s):\n{}",
        violations.len(),
        violations.join("\n")
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn random_schedules_on_one_thread_keep_every_invariant(program in program()) {
        run(&program, 1)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn random_schedules_on_two_worker_threads_keep_every_invariant(program in program()) {
        run(&program, 2)?;
    }
}

// ----- a panic stops only its stage -------------------------------------------

/// Where the panic of [`a_panic_stops_its_stage_and_only_what_depends_on_it`]
/// happens, and how the stages around it are subscribed.
#[derive(Clone, Debug)]
struct PanicCase {
    /// 0: the producer, 1: the producer-consumer, 2: the first consumer of chain A.
    target: usize,
    /// Armed before chain A is wired (panics at its first batch or demand), or
    /// an info message after it has run (`None`).
    at_first_work: bool,
    relay_mode: CancelMode,
    sink_modes: [CancelMode; 2],
    asks: [u64; 2],
    threads: usize,
}

fn panic_case() -> impl Strategy<Value = PanicCase> {
    (
        0..3_usize,
        any::<bool>(),
        cancel_mode(),
        [cancel_mode(), cancel_mode()],
        [0..20_u64, 0..20_u64],
        prop_oneof![3 => Just(1_usize), 1 => Just(2_usize)],
    )
        .prop_map(
            |(target, at_first_work, relay_mode, sink_modes, asks, threads)| PanicCase {
                target,
                at_first_work,
                relay_mode,
                sink_modes,
                asks,
                threads,
            },
        )
}

/// Chain A (producer → producer-consumer → two consumers) and chain B
/// (producer → manual consumer) share a runtime; one stage of chain A panics.
/// Returns the violations.
async fn run_panic_case(case: &PanicCase, paused: bool) -> Vec<String> {
    let program = Program {
        sources: vec![
            SourceSpec {
                kind: SourceKind::Exact,
                budget: 40,
                buffer: None,
                parts: None,
            },
            SourceSpec {
                kind: SourceKind::Exact,
                budget: 1000,
                buffer: None,
                parts: None,
            },
        ],
        relays: vec![RelaySpec {
            kind: RelayKind::Double,
            buffer: None,
        }],
        sinks: vec![false, false, true],
        ops: Vec::new(),
    };
    // Stages: 0 source A, 1 source B, 2 relay A, 3 and 4 consumers of A, 5 consumer of B.
    let mut world = World::start(&program, paused);
    let target = [0, 2, 3][case.target];
    if case.at_first_work {
        world.stages[target].probe.arm(Trap::Work);
    }
    let sub = |consumer, producer, cancel| Op::Subscribe {
        consumer,
        producer,
        partition: 0,
        max: 4,
        min: None,
        cancel,
        wait: true,
    };
    // Consumer and producer numbers index the consuming (2, 3, 4, 5) and
    // producing (0, 1, 2) stages.
    world.apply(&sub(3, 1, CancelMode::Permanent)).await;
    let b = world.subs[0].clone();
    world.apply(&sub(1, 2, case.sink_modes[0])).await;
    world.apply(&sub(2, 2, case.sink_modes[1])).await;
    world.apply(&sub(0, 0, case.relay_mode)).await;
    let ask = |demand| Op::Ask {
        sub: 0,
        demand,
        via_info: false,
    };
    world.apply(&Op::Settle).await;
    world.apply(&ask(case.asks[0])).await;
    if !case.at_first_work {
        world
            .apply(&Op::Panic {
                stage: target,
                trap: None,
            })
            .await;
    }
    world.apply(&ask(case.asks[1])).await;
    let running = world.check().await;

    // The panicking stage stopped with the panic; §6 decides who follows it.
    let abnormal = Reason::Panic(PANIC.into());
    let relay_follows = target == 0 && case.relay_mode != CancelMode::Temporary;
    let mut expected = [true; 6];
    expected[target] = false;
    if relay_follows {
        expected[2] = false;
    }
    if !expected[2] {
        for (i, mode) in case.sink_modes.iter().enumerate() {
            expected[3 + i] = *mode == CancelMode::Temporary;
        }
    }
    for (i, &runs) in expected.iter().enumerate() {
        if running[i] != runs {
            world
                .violations
                .push(format!("stage {i} running {}, expected {runs}", running[i]));
        }
        if !runs && world.stages[i].monitor.exit_reason() != Some(abnormal.clone()) {
            world.violations.push(format!(
                "stage {i} exited with {:?}, expected {abnormal}",
                world.stages[i].monitor.exit_reason()
            ));
        }
    }
    // Chain B kept working all along: it got exactly what it asked, in order.
    let got: Vec<u64> = world.stages[5]
        .probe
        .log
        .lock()
        .iter()
        .filter_map(|e| match e {
            Entry::Events(s, events) if *s == b.sub => Some(events.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect();
    let asked = case.asks[0] + case.asks[1];
    if got != (0..asked).collect::<Vec<u64>>() {
        world
            .violations
            .push(format!("chain B asked {asked} and got {got:?}"));
    }
    world.teardown(&running).await;
    world.violations
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn a_panic_stops_its_stage_and_only_what_depends_on_it(case in panic_case()) {
        quiet_injected_panics();
        let runtime = runtime(case.threads);
        let violations = runtime.block_on(run_panic_case(&case, case.threads == 1));
        drop(runtime);
        prop_assert!(violations.is_empty(), "{}", violations.join("\n"));
    }
}

// ----- minimal reproductions of what the properties found ---------------------

fn source(kind: SourceKind, budget: u64) -> Source {
    Source {
        me: 0,
        kind,
        budget,
        next: 0,
        owed: 0,
        probe: Arc::default(),
    }
}

fn sink(manual: bool) -> (Sink, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    (
        Sink {
            manual,
            probe: probe.clone(),
        },
        probe,
    )
}

/// The sequence numbers `probe` received on `sub`, in order.
fn seqs(probe: &Probe, sub: SubscriptionId) -> Vec<u64> {
    probe
        .log
        .lock()
        .iter()
        .filter_map(|e| match e {
            Entry::Events(s, events) if *s == sub => Some(events.iter().map(|e| e.seq)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Long enough for anything; on the paused clock it only elapses once every task
/// waits, so a hang fails at once.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn events_owed_to_a_cancelled_subscription_reach_the_next_consumer_that_asks() {
    // The producer emits only when told, and owes what it was asked.
    let p = producer(source(SourceKind::Silent, 100)).start().unwrap();
    let a = consumer(sink(true).0).start().unwrap();
    let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let sa = a.subscribe_to(&p, options).await.unwrap();
    a.ask(sa, 3).unwrap();
    a.cancel(sa, Reason::Normal).unwrap();
    a.stats().await.unwrap();
    p.stats().await.unwrap();
    // The producer emits the 3 events it owes; nobody has demand: buffered.
    p.send_info(Cmd::EmitOwed).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    let (second, log) = sink(true);
    let b = consumer(second).start().unwrap();
    let sb = b.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // The dispatcher serves this ask from the cancelled subscription's demand.
    b.ask(sb, 3).unwrap();
    b.stats().await.unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert_eq!(seqs(&log, sb), vec![0, 1, 2]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn events_owed_to_a_cancelled_subscription_reach_a_consumer_that_asked_while_accumulating() {
    let p = producer(source(SourceKind::Silent, 100)).start().unwrap();
    let a = consumer(sink(true).0).start().unwrap();
    let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let sa = a.subscribe_to(&p, options).await.unwrap();
    a.ask(sa, 3).unwrap();
    a.cancel(sa, Reason::Normal).unwrap();
    a.stats().await.unwrap();
    p.stats().await.unwrap();
    p.send_info(Cmd::EmitOwed).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    let (second, log) = sink(true);
    let b = consumer(second).start().unwrap();
    let sb = b.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    p.set_demand_flow(DemandFlow::Accumulate).unwrap();
    b.ask(sb, 3).unwrap();
    b.stats().await.unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert!(
        seqs(&log, sb).is_empty(),
        "accumulating: nothing is dispatched"
    );
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert_eq!(seqs(&log, sb), vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn events_emitted_while_accumulated_demand_is_replayed_keep_their_order() {
    let p = producer(source(SourceKind::Exact, 100))
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let (snk, log) = sink(true);
    let c = consumer(snk).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // Recorded in this order: a demand of 2, then events 0 and 1.
    c.ask(sub, 2).unwrap();
    c.stats().await.unwrap();
    p.send_info(Cmd::Emit(2)).unwrap();
    p.stats().await.unwrap();
    // Replaying the demand calls `handle_demand(2)`, which emits 2 and 3.
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    p.stats().await.unwrap();
    c.stats().await.unwrap();
    c.ask(sub, 2).unwrap();
    c.stats().await.unwrap();
    p.stats().await.unwrap();
    c.stats().await.unwrap();
    assert_eq!(seqs(&log, sub), vec![0, 1, 2, 3]);
}

/// Stops at its first info message, after pausing a second in the callback.
struct Doomed;

impl Producer for Doomed {
    type Event = Ev;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<Ev>) {}

    async fn handle_info(&mut self, _: Info, ctx: &mut Context<Ev>) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctx.stop(Reason::error("doomed"));
    }
}

#[tokio::test(start_paused = true)]
async fn subscribe_to_a_producer_that_stops_before_accepting_fails_while_input_is_queued() {
    // A producer-consumer whose input waits for downstream demand.
    let p = producer(source(SourceKind::Exact, 10)).start().unwrap();
    let relay = producer_consumer(Relay {
        me: 1,
        kind: RelayKind::Double,
        next: 0,
        probe: Arc::default(),
    })
    .start()
    .unwrap();
    let options = SubscribeOptions::new().max_demand(4);
    relay.subscribe_to(&p, options).await.unwrap();
    p.stats().await.unwrap();
    assert_eq!(relay.stats().await.unwrap().queued_in, 4);
    // This producer stops with the subscribe request in its mailbox: it answers
    // with a down notice instead of accepting.
    let doomed = producer(Doomed).start().unwrap();
    doomed.send_info(()).unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let subscribed = relay.subscribe_to(&doomed, SubscribeOptions::new());
    let result = tokio::time::timeout(LIMIT, subscribed).await;
    assert_eq!(result, Ok(Err(SubscribeError::ProducerNotRunning)));
}

#[tokio::test(start_paused = true)]
async fn demand_left_by_a_cancel_is_forgotten_once_its_events_are_dropped() {
    // The producer emits only when told, and keeps no events nobody asked for.
    let p = producer(source(SourceKind::Silent, 100))
        .buffer_size(0)
        .start()
        .unwrap();
    let a = consumer(sink(true).0).start().unwrap();
    let options = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let sa = a.subscribe_to(&p, options).await.unwrap();
    a.ask(sa, 2).unwrap();
    a.cancel(sa, Reason::Normal).unwrap();
    a.stats().await.unwrap();
    p.stats().await.unwrap();
    // The producer emits the 2 events it owes; nobody has demand: dropped.
    p.send_info(Cmd::EmitOwed).unwrap();
    assert_eq!(p.stats().await.unwrap().events_dropped, 2);
    // It owes nothing now, so this ask must reach it.
    let (second, log) = sink(true);
    let b = consumer(second).start().unwrap();
    let sb = b.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    b.ask(sb, 2).unwrap();
    b.stats().await.unwrap();
    p.send_info(Cmd::EmitOwed).unwrap();
    p.stats().await.unwrap();
    b.stats().await.unwrap();
    assert_eq!(
        seqs(&log, sb),
        vec![2, 3],
        "the ask was absorbed by stale demand"
    );
}

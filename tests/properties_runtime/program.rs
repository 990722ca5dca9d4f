//! Programs and their generator: the random pipelines and the steps run on
//! them, as proptest strategies.

use super::*;

#[derive(Clone, Debug)]
pub(crate) struct SourceSpec {
    pub(crate) kind: SourceKind,
    pub(crate) budget: u64,
    pub(crate) buffer: Option<(usize, BufferKeep)>,
    /// A partition dispatcher instead of the demand dispatcher.
    pub(crate) parts: Option<Parts>,
}

/// A partition dispatcher: `n` partitions, events keyed by `seq % KEYS`, key
/// `k` to partition `k % n`, key 0 discarded when `discard`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts {
    pub(crate) n: usize,
    pub(crate) discard: bool,
    pub(crate) queue_capacity: Option<usize>,
}

/// How many keys the events of a partitioned producer have.
pub(crate) const KEYS: u64 = 5;

impl Parts {
    pub(crate) fn key(e: &Ev) -> u64 {
        e.seq % KEYS
    }

    /// The partition of `e`, `None` when it is discarded.
    pub(crate) fn route(self, e: &Ev) -> Option<usize> {
        let key = Self::key(e);
        (!(self.discard && key == 0)).then_some(key as usize % self.n)
    }

    pub(crate) fn dispatcher(self) -> PartitionDispatcher<Ev> {
        let mut builder =
            PartitionDispatcher::numbered(nz(self.n), move |e: Ev| self.route(&e).map(|p| (p, e)));
        if let Some(capacity) = self.queue_capacity {
            builder = builder.queue_capacity(nz(capacity));
        }
        builder.build().unwrap()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RelaySpec {
    pub(crate) kind: RelayKind,
    pub(crate) buffer: Option<(usize, BufferKeep)>,
}

/// One step of a program. Stage and subscription numbers are taken modulo what
/// exists when the step runs.
#[derive(Clone, Debug)]
pub(crate) enum Op {
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
pub(crate) struct Program {
    pub(crate) sources: Vec<SourceSpec>,
    pub(crate) relays: Vec<RelaySpec>,
    /// One entry per consumer: manual demand or not.
    pub(crate) sinks: Vec<bool>,
    pub(crate) ops: Vec<Op>,
}

pub(crate) fn reason() -> impl Strategy<Value = Reason> {
    prop_oneof![
        Just(Reason::Normal),
        Just(Reason::Shutdown),
        Just(Reason::error("stopped by the test")),
    ]
}

pub(crate) fn cancel_mode() -> impl Strategy<Value = CancelMode> {
    prop_oneof![
        Just(CancelMode::Permanent),
        Just(CancelMode::Transient),
        Just(CancelMode::Temporary),
    ]
}

pub(crate) fn buffer() -> impl Strategy<Value = Option<(usize, BufferKeep)>> {
    proptest::option::weighted(
        0.4,
        (
            0..8_usize,
            prop_oneof![Just(BufferKeep::Last), Just(BufferKeep::First)],
        ),
    )
}

pub(crate) fn demand() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0), 16 => 1..=12_u64, 1 => Just(u64::MAX)]
}

pub(crate) fn source_spec() -> impl Strategy<Value = SourceSpec> {
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

pub(crate) fn relay_spec() -> impl Strategy<Value = RelaySpec> {
    let kind = prop_oneof![
        Just(RelayKind::Double),
        Just(RelayKind::Filter),
        Just(RelayKind::FlatMap),
    ];
    (kind, buffer()).prop_map(|(kind, buffer)| RelaySpec { kind, buffer })
}

pub(crate) fn trap() -> impl Strategy<Value = Option<Trap>> {
    prop_oneof![
        Just(None),
        Just(Some(Trap::Work)),
        Just(Some(Trap::Subscribe)),
        Just(Some(Trap::Cancel)),
        Just(Some(Trap::Terminate)),
    ]
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
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

pub(crate) fn program() -> impl Strategy<Value = Program> {
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

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}

//! Statistics a running stage reports through its handle: what it emitted,
//! buffered, dropped and delivered, per stage and per subscription.

use std::fmt;

use demandflow_core::{Partition, StageId, SubscriptionId};

use crate::{DemandFlow, Peer};

/// What kind of stage a handle points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// Emits events.
    Producer,
    /// Receives events and emits others.
    ProducerConsumer,
    /// Receives events.
    Consumer,
}

/// A snapshot of one stage's counters, from `stats()` on its handle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageStats {
    /// The stage's id.
    pub id: StageId,
    /// The stage's name (its id when none was given).
    pub name: String,
    /// The stage's kind.
    pub kind: StageKind,
    /// Events received from producers.
    pub events_in: u64,
    /// Events delivered to consumers.
    pub events_out: u64,
    /// Events dropped because the buffer was full (each drop was also reported).
    pub events_dropped: u64,
    /// Events the dispatcher discarded because they were routed to a
    /// destination that does not exist (a partition dispatcher's hash function
    /// returning an index out of range); each batch was also logged.
    pub events_misrouted: u64,
    /// Events buffered, in the producer buffer (including what an accumulating
    /// producer holds) and inside the dispatcher.
    pub buffered: usize,
    /// Whether a producer or producer-consumer forwards demand or accumulates
    /// it; `None` for a consumer.
    pub demand_flow: Option<DemandFlow>,
    /// Events received but not yet handled (producer-consumers wait for demand).
    pub queued_in: usize,
    /// One entry per live subscription, on either side.
    pub subscriptions: Vec<SubscriptionStats>,
    /// What the stage has been waiting for, without progress, for longer than its
    /// stall report time (set with the builders' `stall_report`); `None` while it
    /// is not stalled.
    pub stall: Option<Stall>,
}

/// What a stalled stage waits for: reported once at WARN when the wait has
/// lasted the stage's stall report time, and shown in [`StageStats::stall`].
///
/// A producer with nothing buffered is idle, not stalled: it is never reported.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stall {
    /// The stage holds events and no consumer is subscribed to take them.
    NoConsumer {
        /// Events it holds.
        buffered: usize,
    },
    /// A partition holds events and no consumer is subscribed to it; the other
    /// partitions may flow.
    PartitionWithoutConsumer {
        /// The partition.
        partition: Partition,
        /// Events the partition holds.
        buffered: usize,
    },
    /// The consumer has not been subscribed to any producer, so it will never
    /// receive an event.
    NoProducer,
    /// The stage asked a producer for events and none has arrived for its
    /// stall report time, while that producer holds events in its buffer or
    /// has not taken a message all that time (it is stuck in a callback).
    ///
    /// A producer that simply has nothing to send is idle, and a stage waiting
    /// on it is not reported.
    NoEvents {
        /// The producer's name.
        producer: String,
        /// Events asked of it and not received.
        asked: u64,
        /// Events the producer held in its buffer when last seen; 0 when it is
        /// reported because it is stuck.
        producer_buffered: usize,
    },
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::NoConsumer { buffered } => {
                write!(
                    f,
                    "no consumer subscribed to take {buffered} buffered events"
                )
            }
            Stall::PartitionWithoutConsumer {
                partition,
                buffered,
            } => write!(
                f,
                "no consumer subscribed to partition {partition}, which holds {buffered} events"
            ),
            Stall::NoProducer => f.write_str("not subscribed to any producer"),
            Stall::NoEvents {
                producer,
                asked,
                producer_buffered: 0,
            } => write!(
                f,
                "{asked} events asked of producer {producer}, which has taken no message since: it is stuck"
            ),
            Stall::NoEvents {
                producer,
                asked,
                producer_buffered,
            } => write!(
                f,
                "{asked} events asked of producer {producer}, which holds {producer_buffered} buffered events but sends none"
            ),
        }
    }
}

/// One subscription in a [`StageStats`] snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// The subscription.
    pub sub: SubscriptionId,
    /// The other side of the subscription.
    pub peer: Peer,
    /// Demand asked and not yet received: for an upstream subscription in
    /// automatic mode, as this consumer counts it; for a downstream one, as the
    /// dispatcher counts it (when it tracks per-subscription demand).
    pub pending_demand: Option<u64>,
}

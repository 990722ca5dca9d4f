//! The registry of live stages, through the facade: entries appear while their
//! stage runs and go when it ends, with exact counters, subscriptions and demand.
//! Every test names its stages uniquely: the registry is process-wide and the
//! tests of this file run in parallel.

mod support;

use std::num::NonZeroUsize;

use demandflow::registry::{self, Entry, EntryKind};
use demandflow::{
    CancelMode, Context, Peer, Producer, Reason, SubscribeOptions, consumer, producer, push,
};
use support::{Recorder, Seen, eventually};

fn entry(name: &str) -> Entry {
    registry::find(name).unwrap_or_else(|| panic!("{name} is not registered"))
}

fn events_seen(log: &parking_lot::Mutex<Vec<Seen<u64>>>) -> usize {
    log.lock()
        .iter()
        .map(|s| match s {
            Seen::Events(_, e) => e.len(),
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn stages_list_their_counters_subscriptions_and_demand() {
    let (source, pusher) = push::<u64>(NonZeroUsize::new(100).unwrap());
    let src = producer(source).name("reg-a-src").start().unwrap();
    let (rec, log) = Recorder::new();
    let sink = consumer(rec).name("reg-a-sink").start().unwrap();
    let sub = sink
        .subscribe_to(
            &src,
            SubscribeOptions::new()
                .max_demand(10)
                .min_demand(5)
                .cancel(CancelMode::Transient),
        )
        .await
        .unwrap();

    registry::refresh().await;
    let s = entry("reg-a-src");
    assert_eq!(s.id, src.id());
    assert_eq!(s.kind, EntryKind::Producer);
    assert_eq!(s.buffer_limit, Some(demandflow::DEFAULT_BUFFER_SIZE));
    assert_eq!((s.events_in, s.events_out, s.events_dropped), (0, 0, 0));
    assert_eq!(s.subscriptions.len(), 1);
    let down = &s.subscriptions[0];
    assert_eq!(down.sub, sub);
    assert_eq!(down.peer, Peer::Consumer);
    assert_eq!(down.peer_id, sink.id());
    assert_eq!(down.peer_name.as_deref(), Some("reg-a-sink"));
    assert_eq!(down.pending_demand, Some(10));
    assert_eq!(down.cancel, None);

    let c = entry("reg-a-sink");
    assert_eq!(c.kind, EntryKind::Consumer);
    assert_eq!(c.buffer_limit, None);
    let up = &c.subscriptions[0];
    assert_eq!(up.sub, sub);
    assert_eq!(up.peer, Peer::Producer);
    assert_eq!(up.peer_id, src.id());
    assert_eq!(up.peer_name.as_deref(), Some("reg-a-src"));
    assert_eq!(up.pending_demand, Some(10));
    assert_eq!(up.cancel, Some(CancelMode::Transient));

    for n in 0..3 {
        pusher.send(n).await.unwrap();
    }
    eventually(|| events_seen(&log) == 3).await;
    // The counters are read directly, without a refresh.
    assert_eq!(entry("reg-a-src").events_out, 3);
    assert_eq!(entry("reg-a-sink").events_in, 3);
    registry::refresh().await;
    assert_eq!(entry("reg-a-src").subscriptions[0].pending_demand, Some(7));
    assert_eq!(entry("reg-a-sink").subscriptions[0].pending_demand, Some(7));

    // Four more: 7 received, at least max - min, so the consumer asks for 7 again.
    for n in 3..7 {
        pusher.send(n).await.unwrap();
    }
    eventually(|| events_seen(&log) == 7).await;
    registry::refresh().await;
    assert_eq!(entry("reg-a-sink").events_in, 7);
    assert_eq!(entry("reg-a-src").subscriptions[0].pending_demand, Some(10));
    assert_eq!(
        entry("reg-a-sink").subscriptions[0].pending_demand,
        Some(10)
    );

    // A transient subscription outlives its producer's normal stop.
    src.stop(Reason::Normal).await.unwrap();
    assert_eq!(src.wait().await, Reason::Normal);
    assert!(registry::find("reg-a-src").is_none());
    registry::refresh().await;
    assert!(entry("reg-a-sink").subscriptions.is_empty());
    sink.stop(Reason::Normal).await.unwrap();
    assert_eq!(sink.wait().await, Reason::Normal);
    assert!(registry::find("reg-a-sink").is_none());
}

/// Emits `n` events as it starts, whatever the demand.
struct Burst(u64);

impl Producer for Burst {
    type Event = u64;

    async fn init(&mut self, ctx: &mut Context<u64>) {
        ctx.emit_all(0..self.0);
    }

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
}

#[tokio::test]
async fn a_full_buffer_shows_its_length_limit_and_drops() {
    let stage = producer(Burst(8))
        .name("reg-b-burst")
        .buffer_size(5)
        .stall_report(None)
        .start()
        .unwrap();
    eventually(|| registry::find("reg-b-burst").is_some_and(|e| e.events_dropped == 3)).await;
    registry::refresh().await;
    let e = entry("reg-b-burst");
    assert_eq!((e.buffered, e.buffer_limit), (5, Some(5)));
    assert!(e.subscriptions.is_empty());
    assert_eq!(e.id, stage.id());
    stage.stop(Reason::Shutdown).await.unwrap();
    stage.wait().await;
    assert!(registry::find("reg-b-burst").is_none());
}

#[tokio::test]
async fn unnamed_stages_are_listed_by_kind_and_id() {
    let stage = producer(Burst(0)).stall_report(None).start().unwrap();
    let name = format!("producer-{}", stage.id().as_u64());
    assert_eq!(entry(&name).id, stage.id());
    assert!(registry::snapshot().iter().any(|e| e.id == stage.id()));
    stage.stop(Reason::Shutdown).await.unwrap();
    stage.wait().await;
    assert!(registry::snapshot().iter().all(|e| e.id != stage.id()));
}

#[tokio::test]
async fn a_supervisor_lists_its_restarts_and_the_restarted_stage_comes_back() {
    use demandflow::supervisor::{Restart, Strategy, Supervisor};
    use demandflow::{ConsumerRef, for_each};

    let sup = Supervisor::builder(Strategy::OneForOne)
        .name("reg-c-sup")
        .child("reg-c-worker", Restart::Permanent, |_| async {
            for_each(|_: u64| {})
                .name("reg-c-worker")
                .stall_report(None)
                .start()
        })
        .start()
        .await
        .unwrap();
    let e = entry("reg-c-sup");
    assert_eq!(
        (e.id, e.kind, e.restarts),
        (sup.id(), EntryKind::Supervisor, Some(0))
    );
    assert_eq!(e.children.len(), 1);
    assert_eq!(
        (e.children[0].name.as_str(), e.children[0].restarts),
        ("reg-c-worker", 0)
    );

    let first: ConsumerRef<u64> = sup.child("reg-c-worker").unwrap();
    assert_eq!(entry("reg-c-worker").id, first.id());
    first
        .stop(Reason::error("killed on purpose"))
        .await
        .unwrap();
    eventually(|| registry::find("reg-c-sup").is_some_and(|e| e.restarts == Some(1))).await;
    eventually(|| registry::find("reg-c-worker").is_some_and(|e| e.id != first.id())).await;
    let e = entry("reg-c-sup");
    assert_eq!(e.children[0].restarts, 1);
    let second: ConsumerRef<u64> = sup.child("reg-c-worker").unwrap();
    assert_eq!(entry("reg-c-worker").id, second.id());

    sup.stop(Reason::Shutdown).await;
    assert!(registry::find("reg-c-sup").is_none());
    assert!(registry::find("reg-c-worker").is_none());
}

/// Handles a batch once a permit is given.
struct Gated(tokio::sync::Semaphore);

impl demandflow::keyed::KeyedHandler for Gated {
    type Key = u64;
    type Event = u64;

    async fn handle(&self, _: &mut demandflow::keyed::KeyedBatch<u64, u64>) {
        self.0.acquire().await.unwrap().forget();
    }
}

#[tokio::test]
async fn a_keyed_scheduler_lists_backlog_and_busy_keys_per_partition() {
    use demandflow::keyed::KeyedBuilder;

    let keyed = KeyedBuilder::dense(Gated(tokio::sync::Semaphore::new(0)))
        .name("reg-d-keyed")
        .partitions(NonZeroUsize::new(2).unwrap())
        .max_workers(NonZeroUsize::new(1).unwrap())
        .start()
        .unwrap();
    let p = keyed.partition_of(&0);
    keyed.send(0, 0).await.unwrap();
    eventually(|| entry("reg-d-keyed").partitions[p].busy_keys == 1).await;
    for n in 1..4 {
        keyed.send(0, n).await.unwrap();
    }
    let e = entry("reg-d-keyed");
    assert_eq!(e.kind, EntryKind::Keyed);
    assert_eq!(e.partitions.len(), 2);
    assert_eq!((e.partitions[p].backlog, e.partitions[p].busy_keys), (3, 1));
    assert_eq!(
        (e.partitions[1 - p].backlog, e.partitions[1 - p].busy_keys),
        (0, 0)
    );
    assert_eq!((e.events_in, e.events_out, e.buffered), (4, 0, 3));

    keyed.handler().0.add_permits(100);
    keyed.shutdown().await;
    let e = entry("reg-d-keyed");
    assert_eq!((e.events_in, e.events_out, e.buffered), (4, 4, 0));
    drop(keyed);
    eventually(|| registry::find("reg-d-keyed").is_none()).await;
}

/// Handles a message once a permit is given; panics on `u64::MAX`.
struct GatedWorker(std::sync::Arc<tokio::sync::Semaphore>);

impl demandflow::supervisor::PartitionWorker for GatedWorker {
    type Message = u64;
    type Reply = ();

    async fn handle(&mut self, n: u64) {
        self.0.acquire().await.unwrap().forget();
        assert_ne!(n, u64::MAX, "a message that fails on purpose");
    }
}

#[tokio::test]
async fn a_partition_supervisor_lists_mailbox_backlog_busy_workers_and_restarts() {
    use demandflow::supervisor::PartitionSupervisor;

    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let sup = PartitionSupervisor::builder(NonZeroUsize::new(2).unwrap(), move |_| {
        GatedWorker(g.clone())
    })
    .name("reg-e-parts")
    .mailbox_capacity(NonZeroUsize::new(10).unwrap())
    .start()
    .unwrap();
    // Key 0 goes to partition 0: its worker takes one message and waits, three queue.
    sup.cast(0_u64, 0).await.unwrap();
    eventually(|| entry("reg-e-parts").partitions[0].busy_keys == 1).await;
    for n in 1..4 {
        sup.cast(0_u64, n).await.unwrap();
    }
    let e = entry("reg-e-parts");
    assert_eq!(e.kind, EntryKind::PartitionSupervisor);
    assert_eq!(e.partitions.len(), 2);
    assert_eq!((e.partitions[0].backlog, e.partitions[0].busy_keys), (3, 1));
    assert_eq!((e.partitions[1].backlog, e.partitions[1].busy_keys), (0, 0));
    assert_eq!(
        (e.events_in, e.events_out, e.buffered, e.buffer_limit),
        (1, 0, 3, Some(20))
    );
    assert_eq!(e.restarts, Some(0));

    // Everything handled, then a message that panics on partition 1: one restart.
    gate.add_permits(4);
    eventually(|| entry("reg-e-parts").events_out == 4).await;
    sup.cast(1_u64, u64::MAX).await.unwrap();
    gate.add_permits(1);
    eventually(|| entry("reg-e-parts").restarts == Some(1)).await;
    let e = entry("reg-e-parts");
    assert_eq!((e.events_in, e.events_out, e.buffered), (5, 4, 0));
    assert_eq!(e.partitions[1].busy_keys, 0);

    sup.stop().await;
    assert!(registry::find("reg-e-parts").is_none());
}

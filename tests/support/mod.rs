//! Fixture stages shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use demandflow::{
    CancelReason, Consumer, ConsumerContext, Context, DemandMode, Info, Peer, Producer,
    ProducerConsumer, SubscriptionId,
};
use parking_lot::Mutex;

/// Emits 0, 1, 2, … exactly as asked, and records every demand it sees.
pub struct Counter {
    pub next: u64,
    pub demands: Arc<Mutex<Vec<u64>>>,
}

impl Counter {
    pub fn new() -> (Self, Arc<Mutex<Vec<u64>>>) {
        let demands = Arc::new(Mutex::new(Vec::new()));
        (
            Counter {
                next: 0,
                demands: demands.clone(),
            },
            demands,
        )
    }
}

impl Producer for Counter {
    type Event = u64;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
        self.demands.lock().push(demand);
        ctx.emit_all(self.next..self.next + demand);
        self.next += demand;
    }
}

/// What a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<T> {
    Subscribed(SubscriptionId),
    Events(SubscriptionId, Vec<T>),
    Cancelled(SubscriptionId, CancelReason),
    Info(String),
}

/// Records every callback; manual demand when `manual` is set.
pub struct Recorder<T> {
    pub log: Arc<Mutex<Vec<Seen<T>>>>,
    pub manual: bool,
    pub notify: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl<T> Recorder<T> {
    pub fn new() -> (Self, Arc<Mutex<Vec<Seen<T>>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (
            Recorder {
                log: log.clone(),
                manual: false,
                notify: None,
            },
            log,
        )
    }

    pub fn manual() -> (Self, Arc<Mutex<Vec<Seen<T>>>>) {
        let (mut r, log) = Self::new();
        r.manual = true;
        (r, log)
    }
}

impl<T: Send + Clone + 'static> Consumer for Recorder<T> {
    type Event = T;

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        _: &mut ConsumerContext,
    ) -> DemandMode {
        self.log.lock().push(Seen::Subscribed(sub));
        if self.manual {
            DemandMode::Manual
        } else {
            DemandMode::Automatic
        }
    }

    async fn handle_events(
        &mut self,
        events: Vec<T>,
        from: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        self.log.lock().push(Seen::Events(from, events));
        if let Some(n) = &self.notify {
            let _ = n.send(());
        }
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        reason: &CancelReason,
        _: &mut ConsumerContext,
    ) {
        self.log.lock().push(Seen::Cancelled(sub, reason.clone()));
    }

    async fn handle_info(&mut self, info: Info, _: &mut ConsumerContext) {
        if let Some(s) = info.downcast_ref::<&str>() {
            self.log.lock().push(Seen::Info((*s).to_owned()));
        }
    }
}

/// The batches in a recorder log, in order.
pub fn batches<T: Clone>(log: &Mutex<Vec<Seen<T>>>) -> Vec<Vec<T>> {
    log.lock()
        .iter()
        .filter_map(|s| match s {
            Seen::Events(_, e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Doubles every event.
pub struct Doubler;

impl ProducerConsumer for Doubler {
    type In = u64;
    type Out = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, ctx: &mut Context<u64>) {
        ctx.emit_all(events.into_iter().map(|e| e * 2));
    }

    async fn handle_subscribe(
        &mut self,
        _: Peer,
        _: SubscriptionId,
        _: &mut Context<u64>,
    ) -> DemandMode {
        DemandMode::Automatic
    }
}

/// Waits until `cond` holds, yielding to the runtime between checks (no clock
/// involved: stages make progress whenever this task yields).
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..5_000_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never became true");
}

/// A consumer in manual demand subscribed to partition `partition` of
/// `producer`: the consumer, its subscription and what it saw.
pub async fn manual_partition_consumer<T: Send + Clone + 'static>(
    producer: &impl demandflow::AsProducer<T>,
    partition: usize,
) -> (
    demandflow::ConsumerRef<T>,
    SubscriptionId,
    Arc<Mutex<Vec<Seen<T>>>>,
) {
    let (recorder, log) = Recorder::manual();
    let c = demandflow::consumer(recorder)
        .start()
        .expect("starting a consumer");
    let sub = c
        .subscribe_to(
            producer,
            demandflow::SubscribeOptions::new().partition(partition),
        )
        .await
        .expect("subscribing to a partition");
    (c, sub, log)
}

/// Starts `source` and `stage` as a consumer subscribed to it with `options`:
/// the consumer's handle, for the tests that feed a consumer (a supervisor,
/// say) from a source they do not touch again.
pub async fn fed_by<T, P, C>(
    source: P,
    stage: C,
    options: demandflow::SubscribeOptions<T>,
) -> demandflow::ConsumerRef<T>
where
    T: Send + 'static,
    P: Producer<Event = T>,
    C: Consumer<Event = T>,
{
    let p = demandflow::producer(source)
        .start()
        .expect("starting the source");
    let c = demandflow::consumer(stage)
        .start()
        .expect("starting the consumer");
    c.subscribe_to(&p, options)
        .await
        .expect("subscribing to the source");
    c
}
